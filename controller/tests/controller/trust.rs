//! Cluster trust (issue 16, item 2) on three real controllers (a Raft quorum on loopback ports,
//! RocksDB in a temporary directory) sharing a cluster secret:
//! - a broker holding the secret registers, heartbeats and gets elected through any member;
//! - the same state-changing requests without the secret are answered NO_PERMISSION, and with
//!   another secret the handshake fails (`RemotingError::Untrusted`); the read-only codes stay
//!   open; the controllers' state is the same afterwards;
//! - Raft RPCs to a member's port without the secret or with another one (a vote with a huge
//!   term, a membership change) are refused with UNAUTHENTICATED and change nothing; a proven
//!   request sent again is refused as a replay.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use rocketraft_common::trust::ClusterSecret;
use rocketraft_controller::client::{ControllerCallError, ControllerClient};
use rocketraft_controller::heartbeat::Heartbeat;
use rocketraft_controller::{
    BrokerLiveInfo, Controller, ControllerConfig, ControllerState, CONTROLLER_CODES,
    CONTROLLER_PROTECTED_CODES,
};
use rocketraft_raft::pb;
use rocketraft_raft::pb::raft_peer_client::RaftPeerClient;
use rocketraft_raft::{auth, AdminRequest, ReadMode, RemoteError};
use rocketraft_remoting::response_code as code;
use rocketraft_remoting::{
    request_code, ClientConfig, RemotingClient, RemotingCommand, RemotingError,
};

const CLUSTER: &str = "DefaultCluster";
const SET: &str = "broker-a";
const HUGE_TERM: u64 = 1 << 40;

fn free_port() -> u16 {
    rocketraft_common::net::free_loopback_port().expect("a free loopback port")
}

fn secret() -> ClusterSecret {
    ClusterSecret::new("controller-trust-test-0123").expect("secret")
}

fn wrong_secret() -> ClusterSecret {
    ClusterSecret::new("controller-trust-test-XXXX").expect("secret")
}

fn remoting(secret: Option<ClusterSecret>) -> RemotingClient {
    RemotingClient::new(ClientConfig {
        cluster_secret: secret,
        ..ClientConfig::default()
    })
}

fn client(secret: Option<ClusterSecret>) -> ControllerClient {
    ControllerClient::new(remoting(secret), Duration::from_secs(10))
}

/// Three controllers sharing `secret`, each serving Remoting; their Remoting and Raft addresses.
async fn controllers(
    dir: &Path,
    secret: &ClusterSecret,
) -> (Vec<Arc<Controller>>, Vec<String>, Vec<String>) {
    let raft: BTreeMap<u64, String> = (1..=3)
        .map(|id| (id, format!("127.0.0.1:{}", free_port())))
        .collect();
    let remoting: BTreeMap<u64, String> = (1..=3)
        .map(|id| (id, format!("127.0.0.1:{}", free_port())))
        .collect();
    let mut out = Vec::new();
    for id in 1..=3u64 {
        let mut c = ControllerConfig::default();
        c.raft.node_id = id;
        c.raft.listen = raft[&id].parse().expect("addr");
        c.raft.data_dir = dir.join(format!("c{id}"));
        c.raft.initial_members = raft.clone();
        c.raft.election_timeout_min_ms = 300;
        c.raft.election_timeout_max_ms = 600;
        c.raft.heartbeat_interval_ms = 100;
        c.listen = remoting[&id].parse().expect("addr");
        c.remoting_peers = remoting.clone();
        c.heartbeat_timeout_ms = 1500;
        c.scan_interval_ms = 200;
        // The Raft member inherits it (`raft.cluster_secret` unset).
        c.cluster_secret = Some(secret.clone());
        let controller = Controller::start(c).await.expect("controller starts");
        controller.serve_remoting().await.expect("serves");
        out.push(controller);
    }
    (
        out,
        remoting.values().cloned().collect(),
        raft.values().cloned().collect(),
    )
}

async fn wait_for_leader(controllers: &[Arc<Controller>]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(i) = controllers.iter().position(|c| c.raft().is_leader()) {
            return i;
        }
        assert!(Instant::now() < deadline, "no controller leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn heartbeat(id: i64) -> Heartbeat {
    Heartbeat {
        cluster: CLUSTER.into(),
        broker_name: SET.into(),
        broker_id: id,
        broker_addr: broker_addr(id),
        timeout_ms: 1500,
        info: BrokerLiveInfo::new(1, 100 * id, 0),
    }
}

/// Nobody listens there: role notifications to it are lost, which is fine here.
fn broker_addr(id: i64) -> String {
    format!("127.0.0.1:{}", 31000 + id)
}

/// Every member's linearizable view of the state, and which brokers each one hears.
async fn snapshot(controllers: &[Arc<Controller>]) -> Vec<(ControllerState, Vec<(String, i64)>)> {
    let mut out = Vec::new();
    for c in controllers {
        let (state, _) = c.state(ReadMode::Linearizable).await.expect("state");
        let alive = c
            .live_brokers()
            .iter()
            .map(|(name, id, _)| (name.to_string(), id))
            .collect();
        out.push((state, alive));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_quorum_serves_brokers_with_the_secret_and_refuses_everyone_else() {
    let dir = rocketraft_common::testing::ScratchDir::new("raft").expect("a scratch dir");
    let secret = secret();
    let wrong = wrong_secret();
    let (controllers, addrs, raft_addrs) = controllers(dir.path(), &secret).await;
    let leader = wait_for_leader(&controllers).await;
    // Requests go to a follower: forwarded to the leader over the authenticated Raft port.
    let follower = (leader + 1) % 3;
    let addr = addrs[follower].as_str();

    // (a) A broker holding the secret: ids, registration, heartbeats, election.
    let trusted = client(Some(secret.clone()));
    for id in 1..=2i64 {
        assert_eq!(
            trusted
                .get_next_broker_id(addr, CLUSTER, SET)
                .await
                .expect("next id"),
            id
        );
        trusted
            .apply_broker_id(addr, CLUSTER, SET, id, &format!("{};{id}", broker_addr(id)))
            .await
            .expect("apply id");
        // Brokers heartbeat to every controller (each keeps its own table; the leader's
        // decides elections).
        for a in &addrs {
            trusted
                .heartbeat(a, &heartbeat(id))
                .await
                .expect("heartbeat");
        }
        trusted
            .register_broker(addr, CLUSTER, SET, id, &broker_addr(id))
            .await
            .expect("register");
    }
    let elected = trusted
        .elect_master(addr, CLUSTER, SET, Some(1), false)
        .await
        .expect("elect");
    assert_eq!(
        (elected.master_broker_id, elected.master_epoch),
        (Some(1), 1)
    );
    let (epoch, set) = trusted
        .alter_sync_state_set(addr, SET, 1, 1, &BTreeSet::from([1, 2]), 1)
        .await
        .expect("alter");
    assert_eq!((epoch, set), (2, BTreeSet::from([1, 2])));
    // Keep the brokers alive for the rest of the test, so nothing moves by itself.
    let beating = {
        let trusted = trusted.clone();
        let addrs = addrs.clone();
        tokio::spawn(async move {
            loop {
                for a in &addrs {
                    for id in 1..=2 {
                        let _ = trusted.heartbeat(a, &heartbeat(id)).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let before = snapshot(&controllers).await;

    // (b) Without the secret, every state-changing request is NO_PERMISSION, on every member.
    let untrusted = client(None);
    for addr in &addrs {
        let addr = addr.as_str();
        let refusals: Vec<(&str, Result<(), ControllerCallError>)> = vec![
            (
                "GET_NEXT_BROKER_ID",
                untrusted
                    .get_next_broker_id(addr, CLUSTER, SET)
                    .await
                    .map(drop),
            ),
            (
                "APPLY_BROKER_ID",
                untrusted
                    .apply_broker_id(addr, CLUSTER, SET, 3, "10.6.6.6:1;3")
                    .await,
            ),
            (
                "REGISTER_BROKER",
                untrusted
                    .register_broker(addr, CLUSTER, SET, 2, "10.6.6.6:1")
                    .await
                    .map(drop),
            ),
            (
                "BROKER_HEARTBEAT",
                untrusted
                    .heartbeat(
                        addr,
                        &Heartbeat {
                            broker_id: 7,
                            broker_addr: "10.6.6.6:1".into(),
                            ..heartbeat(7)
                        },
                    )
                    .await
                    .map(drop),
            ),
            (
                "ELECT_MASTER (designated)",
                untrusted
                    .elect_master(addr, CLUSTER, SET, Some(2), true)
                    .await
                    .map(drop),
            ),
            (
                "ALTER_SYNC_STATE_SET",
                untrusted
                    .alter_sync_state_set(addr, SET, 1, 1, &BTreeSet::from([1]), 2)
                    .await
                    .map(drop),
            ),
            (
                "CLEAN_BROKER_DATA",
                untrusted
                    .clean_broker_data(addr, CLUSTER, SET, Some("2"), true)
                    .await
                    .map(drop),
            ),
        ];
        for (what, result) in refusals {
            let err = result.expect_err(what);
            assert_eq!(
                err.code(),
                Some(code::NO_PERMISSION),
                "{what} at {addr}: {err}"
            );
        }
        // The raw codes this server serves (UPDATE_CONTROLLER_CONFIG among them).
        for protected in CONTROLLER_PROTECTED_CODES
            .iter()
            .filter(|c| CONTROLLER_CODES.contains(c))
        {
            let answer = remoting(None)
                .invoke(
                    addr,
                    RemotingCommand::request(*protected),
                    Duration::from_secs(10),
                )
                .await
                .expect("an answer");
            assert_eq!(
                answer.code,
                code::NO_PERMISSION,
                "code {protected} at {addr}"
            );
        }
        // The read-only codes stay open.
        let info = untrusted
            .get_replica_info(addr, SET)
            .await
            .expect("replica info without the secret");
        assert_eq!(info.master_broker_id, Some(1));
        untrusted
            .get_sync_state_data(addr, &[SET])
            .await
            .expect("sync state data without the secret");
        untrusted
            .metadata(addr)
            .await
            .expect("metadata without the secret");
    }
    // With another secret the handshake itself fails: nothing is sent.
    for addr in &addrs {
        let heartbeat = RemotingCommand::request(request_code::BROKER_HEARTBEAT)
            .with_ext("brokerName", SET)
            .with_ext("brokerId", 7)
            .with_ext("brokerAddr", "10.6.6.6:1");
        match remoting(Some(wrong.clone()))
            .invoke(addr, heartbeat, Duration::from_secs(10))
            .await
        {
            Err(RemotingError::Untrusted { .. }) => {}
            other => panic!("a client with another secret at {addr}: {other:?}"),
        }
        let err = client(Some(wrong.clone()))
            .register_broker(addr, CLUSTER, SET, 2, "10.6.6.6:1")
            .await
            .expect_err("another secret");
        assert!(err.to_string().contains("authenticate"), "{err}");
    }
    assert_eq!(
        snapshot(&controllers).await,
        before,
        "refused requests changed the controllers' state or heartbeat tables"
    );

    // (c) The Raft port: a vote with a huge term (from a made-up node 9, as a leadership
    // transfer), a membership change; unsigned or signed with another secret.
    let vote = pb::Blob {
        json: serde_json::to_vec(&serde_json::json!({
            "vote": {"leader_id": {"term": HUGE_TERM, "node_id": 9}, "committed": false},
            "last_log_id": null,
            "leadership_transfer": true,
        }))
        .expect("json"),
    };
    let remove = pb::Blob {
        json: serde_json::to_vec(&(AdminRequest::Remove { id: 3 }, true)).expect("json"),
    };
    let members_before = controllers[leader].raft().status().voters;
    let term_before = controllers[leader].raft().status().term;
    for raft in &raft_addrs {
        let mut peer = RaftPeerClient::connect(format!("http://{raft}"))
            .await
            .expect("connects");
        let attempts = [
            ("unsigned vote", peer.vote(vote.clone()).await),
            (
                "vote signed with another secret",
                peer.vote(auth::blob_request(
                    vote.clone(),
                    Some(&wrong),
                    Some(9),
                    None,
                    auth::method::VOTE,
                ))
                .await,
            ),
            (
                "unsigned membership change",
                peer.admin(remove.clone()).await,
            ),
            (
                "membership change signed with another secret",
                peer.admin(auth::blob_request(
                    remove.clone(),
                    Some(&wrong),
                    None,
                    None,
                    auth::method::ADMIN,
                ))
                .await,
            ),
        ];
        for (what, result) in attempts {
            let status = result.expect_err(what);
            assert_eq!(
                status.code(),
                tonic::Code::Unauthenticated,
                "{what}: {status:?}"
            );
        }
        // The admin CLI's path, without or with the wrong secret.
        for s in [None, Some(&wrong)] {
            match rocketraft_raft::remote_admin(
                raft,
                &AdminRequest::Remove { id: 3 },
                Duration::from_secs(5),
                s,
            )
            .await
            {
                Err(RemoteError::Status { status, .. }) => {
                    assert_eq!(status.code(), tonic::Code::Unauthenticated)
                }
                other => panic!("remote_admin without the secret: {other:?}"),
            }
        }
        // With the secret the tools work; the same proven request twice is a replay.
        let status = rocketraft_raft::remote_status(raft, Duration::from_secs(5), Some(&secret))
            .await
            .expect("status with the secret");
        assert_eq!(status.voters, members_before);
        let query = pb::Blob {
            json: b"null".to_vec(),
        };
        let metadata = auth::metadata(
            Some(&secret),
            None,
            None,
            auth::method::STATUS,
            &[&query.json],
        );
        let request = || {
            tonic::Request::from_parts(
                metadata.clone(),
                tonic::Extensions::default(),
                query.clone(),
            )
        };
        peer.status(request()).await.expect("first use");
        let replay = peer.status(request()).await.expect_err("replay");
        assert_eq!(replay.code(), tonic::Code::Unauthenticated, "{replay:?}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for c in &controllers {
        let s = c.raft().status();
        assert!(
            s.term < HUGE_TERM,
            "member {} took the forged term: {s:?}",
            s.id
        );
        assert!(s.term >= term_before);
        assert_eq!(s.voters, members_before, "member {}", s.id);
    }
    // The honest side still works, and the broker set is as it was.
    let info = trusted.get_replica_info(addr, SET).await.expect("read");
    assert_eq!((info.master_broker_id, info.master_epoch), (Some(1), 1));
    assert_eq!(info.sync_state_set, BTreeSet::from([1, 2]));
    trusted
        .heartbeat(addr, &heartbeat(1))
        .await
        .expect("heartbeat after the attacks");
    beating.abort();
    for c in &controllers {
        c.shutdown().await;
    }
}
