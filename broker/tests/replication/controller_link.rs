//! The broker's controller link against a real (in-process, one-node) controller: ids assigned
//! once and kept on disk, an interrupted apply resumed with the same check code, registration
//! and the first election.

use std::collections::BTreeMap;
use std::time::Duration;

use rocketraft_broker::controller_link::{BrokerIdentity, ControllerLink, LinkError};
use rocketraft_controller::client::ControllerClient;
use rocketraft_controller::heartbeat::Heartbeat;
use rocketraft_controller::{BrokerLiveInfo, Controller, ControllerConfig};
use rocketraft_remoting::{ClientConfig, RemotingClient};

fn free_port() -> u16 {
    rocketraft_common::net::free_loopback_port().expect("a free loopback port")
}

fn client() -> ControllerClient {
    ControllerClient::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(5),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_is_assigned_once_kept_on_disk_and_registration_elects_the_first_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raft_port = free_port();
    let mut config = ControllerConfig::default();
    config.raft.node_id = 1;
    config.raft.listen = format!("127.0.0.1:{raft_port}").parse().expect("addr");
    config.raft.data_dir = dir.path().join("controller");
    config.raft.initial_members = BTreeMap::from([(1, format!("127.0.0.1:{raft_port}"))]);
    config.raft.election_timeout_min_ms = 300;
    config.raft.election_timeout_max_ms = 600;
    config.raft.heartbeat_interval_ms = 100;
    config.listen = "127.0.0.1:0".parse().expect("addr");
    let controller = Controller::start(config).await.expect("controller");
    let addr = controller
        .serve_remoting()
        .await
        .expect("serve")
        .to_string();
    // A dead address first: the link moves on to the next controller.
    let link = ControllerLink::new(&format!("127.0.0.1:1;{addr}"), client());

    let b1 = dir.path().join("b1");
    let b2 = dir.path().join("b2");
    let id1 = link
        .obtain_identity(&b1, "c", "set-a", "127.0.0.1:20001")
        .await
        .expect("id for b1");
    assert_eq!(id1.broker_id, 1);
    // Broker 2 crashed after its apply, before writing its identity file: it resumes with the
    // same id and check code.
    let pending = BrokerIdentity {
        cluster_name: "c".into(),
        broker_name: "set-a".into(),
        broker_id: 2,
        register_check_code: "127.0.0.1:20002;77".into(),
    };
    client()
        .apply_broker_id(&addr, "c", "set-a", 2, &pending.register_check_code)
        .await
        .expect("apply before the crash");
    std::fs::create_dir_all(&b2).expect("dir");
    std::fs::write(
        b2.join("broker_identity.applying.json"),
        serde_json::to_vec(&pending).expect("json"),
    )
    .expect("temp identity");
    let id2 = link
        .obtain_identity(&b2, "c", "set-a", "127.0.0.1:20002")
        .await
        .expect("resumed");
    assert_eq!(id2, pending);
    assert!(!b2.join("broker_identity.applying.json").exists());

    // Registration: broker 1 becomes the first master; broker 2 sees it.
    for (id, port) in [(&id1, 20001), (&id2, 20002)] {
        let delivered = link
            .heartbeat_all(
                &Heartbeat {
                    cluster: "c".into(),
                    broker_name: "set-a".into(),
                    broker_id: id.broker_id,
                    broker_addr: format!("127.0.0.1:{port}"),
                    timeout_ms: 30_000,
                    info: BrokerLiveInfo::new(0, 0, 0),
                },
                Duration::from_secs(2),
            )
            .await;
        assert_eq!(
            delivered.delivered, 1,
            "one live controller of two addresses"
        );
        assert!(
            delivered.leader_confirmed,
            "the single controller is the leader and confirms it"
        );
        assert_eq!(
            delivered.controller_timeout_ms,
            Some(ControllerConfig::default().heartbeat_timeout_ms),
            "the controller reports its own heartbeat timeout"
        );
    }
    let master = link
        .register(&id1, "127.0.0.1:20001")
        .await
        .expect("register 1");
    assert_eq!((master.master_broker_id, master.master_epoch), (Some(1), 1));
    let seen = link
        .register(&id2, "127.0.0.1:20002")
        .await
        .expect("register 2");
    assert_eq!(seen.master_broker_id, Some(1));

    // Restart: the identity comes from disk, even with the controller gone.
    controller.shutdown().await;
    let again = link
        .obtain_identity(&b1, "c", "set-a", "127.0.0.1:20001")
        .await
        .expect("from disk");
    assert_eq!(again, id1);
    // Another broker set's store is refused.
    let err = link
        .obtain_identity(&b1, "c", "set-b", "127.0.0.1:20001")
        .await
        .expect_err("foreign");
    assert!(matches!(err, LinkError::Foreign { .. }), "{err}");
    // No controller at all: a clear error.
    let err = link
        .obtain_identity(&dir.path().join("b3"), "c", "set-a", "127.0.0.1:20003")
        .await
        .expect_err("no controller");
    assert!(matches!(err, LinkError::NoController { .. }), "{err}");
}
