//! GET_CONTROLLER_CONFIG (1010) / UPDATE_CONTROLLER_CONFIG (1009) against real controllers on
//! loopback: a standalone one-node controller whose live keys change (and an election that
//! follows the new `enableElectUncleanMaster`: refused, then granted outside the SyncStateSet), RocketMQ's refusals (black list, bad body) and
//! ours (keys fixed at start, unknown keys, bad values) changing nothing, and a controller
//! embedded in a NameServer with a cluster secret, where an update needs the secret and a read
//! does not.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocketraft_common::trust::ClusterSecret;
use rocketraft_controller::client::{ControllerClient, MasterInfo};
use rocketraft_controller::heartbeat::Heartbeat;
use rocketraft_controller::{BrokerLiveInfo, Controller, ControllerConfig};
use rocketraft_remoting::response_code as code;
use rocketraft_remoting::{request_code, ClientConfig, RemotingClient, RemotingCommand};

const CLUSTER: &str = "DefaultCluster";
const SET: &str = "broker-cfg";

fn free_port() -> u16 {
    rocketraft_common::net::free_loopback_port().expect("a free loopback port")
}

fn controller_config(dir: &Path) -> ControllerConfig {
    let raft_port = free_port();
    let mut c = ControllerConfig::default();
    c.raft.node_id = 1;
    c.raft.listen = format!("127.0.0.1:{raft_port}").parse().expect("addr");
    c.raft.data_dir = dir.join("controller");
    c.raft.initial_members = BTreeMap::from([(1, format!("127.0.0.1:{raft_port}"))]);
    c.raft.election_timeout_min_ms = 300;
    c.raft.election_timeout_max_ms = 600;
    c.raft.heartbeat_interval_ms = 100;
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.heartbeat_timeout_ms = 1500;
    c.scan_interval_ms = 200;
    c
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

async fn raw(addr: &str, request: RemotingCommand) -> RemotingCommand {
    remoting(None)
        .invoke(addr, request, Duration::from_secs(10))
        .await
        .expect("an answer")
}

async fn wait_ready(c: &ControllerClient, addr: &str) {
    for _ in 0..200 {
        if let Ok(m) = c.metadata(addr).await {
            if m.is_leader {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("controller at {addr} never became leader");
}

async fn wait_master(
    c: &ControllerClient,
    addr: &str,
    what: &str,
    check: impl Fn(&MasterInfo) -> bool,
) -> MasterInfo {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = c.get_replica_info(addr, SET).await.expect("replica info");
        if check(&info) {
            return info;
        }
        assert!(Instant::now() < deadline, "{what}: still {info:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn broker_addr(id: i64) -> String {
    // Nobody listens there: role notifications go nowhere (they are best effort).
    format!("127.0.0.1:{}", 31000 + id)
}

async fn heartbeat(c: &ControllerClient, addr: &str, id: i64) {
    c.heartbeat(
        addr,
        &Heartbeat {
            cluster: CLUSTER.into(),
            broker_name: SET.into(),
            broker_id: id,
            broker_addr: broker_addr(id),
            timeout_ms: 1500,
            info: BrokerLiveInfo::new(1, 100 * id, 0),
        },
    )
    .await
    .expect("heartbeat");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_keys_change_and_the_rest_is_refused_by_name() {
    let dir = rocketraft_common::testing::ScratchDir::new("ctl-config").expect("a scratch dir");
    let controller: Arc<Controller> = Controller::start(controller_config(dir.path()))
        .await
        .expect("controller starts");
    let addr = controller
        .serve_remoting()
        .await
        .expect("serve")
        .to_string();
    let c = client(None);
    wait_ready(&c, &addr).await;

    // The configuration as properties text, sorted, without secrets.
    let response = raw(
        &addr,
        RemotingCommand::request(request_code::GET_CONTROLLER_CONFIG),
    )
    .await;
    assert_eq!(response.code, code::SUCCESS);
    let text = String::from_utf8(response.body.to_vec()).expect("utf-8");
    let keys: Vec<&str> = text
        .lines()
        .map(|l| l.split_once('=').expect("key=value").0)
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(keys, sorted, "sorted by key");
    let config = c.get_config(&addr).await.expect("1010");
    for (key, value) in [
        ("enableElectUncleanMaster", "false"),
        ("notifyBrokerRoleChanged", "true"),
        ("scanNotActiveBrokerInterval", "200"),
        ("heartbeat_timeout_ms", "1500"),
        ("stale_reads", "false"),
        ("raft.node_id", "1"),
    ] {
        assert_eq!(config.get(key).map(String::as_str), Some(value), "{key}");
    }
    assert!(!text.contains("secret"), "{text}");

    // Refusals change nothing.
    type Case<'a> = (&'a [(&'a str, &'a str)], i32, &'a str);
    let cases: [Case; 6] = [
        (
            &[
                ("enableElectUncleanMaster", "true"),
                ("heartbeat_timeout_ms", "500"),
            ],
            code::NO_PERMISSION,
            "Can not update config at runtime: heartbeat_timeout_ms",
        ),
        (
            &[
                ("enableElectUncleanMaster", "true"),
                ("raft.data_dir", "/tmp/x"),
            ],
            code::NO_PERMISSION,
            "raft.data_dir",
        ),
        (
            &[
                ("enableElectUncleanMaster", "true"),
                ("controllerType", "jRaft"),
            ],
            code::INVALID_PARAMETER,
            "no such controller config key: controllerType",
        ),
        (
            &[("enableElectUncleanMaster", "yes please")],
            code::INVALID_PARAMETER,
            "enableElectUncleanMaster",
        ),
        (
            &[("scanNotActiveBrokerInterval", "0")],
            code::INVALID_PARAMETER,
            "out of range",
        ),
        (
            &[
                ("enableElectUncleanMaster", "true"),
                ("configStorePath", "/tmp/x"),
            ],
            code::NO_PERMISSION,
            "Can not update config in black list.",
        ),
    ];
    for (entries, want, remark) in cases {
        let err = c.update_config(&addr, entries).await.expect_err("refused");
        let rocketraft_controller::client::ControllerCallError::Refused(r) = err else {
            panic!("{entries:?}: {err}");
        };
        assert_eq!(r.code, want, "{entries:?}: {}", r.remark);
        assert!(r.remark.contains(remark), "{entries:?}: {}", r.remark);
    }
    let bad = raw(
        &addr,
        RemotingCommand::request(request_code::UPDATE_CONTROLLER_CONFIG).with_body(&b"k=\\u12"[..]),
    )
    .await;
    assert_eq!(
        (bad.code, bad.remark.as_deref()),
        (code::SYSTEM_ERROR, Some("string2Properties error"))
    );
    let empty = raw(
        &addr,
        RemotingCommand::request(request_code::UPDATE_CONTROLLER_CONFIG),
    )
    .await;
    assert_eq!(empty.code, code::SUCCESS);
    assert_eq!(c.get_config(&addr).await.expect("1010"), config);

    // A set whose only in-sync replica (the master, 1) dies: 2 is alive but out of the
    // SyncStateSet, so without enableElectUncleanMaster the set is left without a master.
    for id in 1..=2 {
        assert_eq!(
            c.get_next_broker_id(&addr, CLUSTER, SET)
                .await
                .expect("next"),
            id
        );
        c.apply_broker_id(
            &addr,
            CLUSTER,
            SET,
            id,
            &format!("{};{id}", broker_addr(id)),
        )
        .await
        .expect("apply id");
        heartbeat(&c, &addr, id).await;
        c.register_broker(&addr, CLUSTER, SET, id, &broker_addr(id))
            .await
            .expect("register");
    }
    let elected = c
        .elect_master(&addr, CLUSTER, SET, Some(1), false)
        .await
        .expect("elect");
    assert_eq!(elected.master_broker_id, Some(1), "{elected:?}");
    let beating = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let heartbeats = {
        let (hb, addr, beating) = (client(None), addr.clone(), beating.clone());
        tokio::spawn(async move {
            loop {
                if beating.load(std::sync::atomic::Ordering::Relaxed) {
                    heartbeat(&hb, &addr, 1).await;
                }
                heartbeat(&hb, &addr, 2).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    beating.store(false, std::sync::atomic::Ordering::Relaxed);
    let deposed = wait_master(&c, &addr, "master 1 deposed", |i| {
        i.master_broker_id.is_none()
    })
    .await;
    // Broker 2 asks to be elected: refused, it is not in the SyncStateSet.
    match c.elect_master(&addr, CLUSTER, SET, Some(2), false).await {
        Ok(info) => assert_ne!(info.code, code::SUCCESS, "{info:?}"),
        Err(e) => assert!(e.code().is_some(), "{e}"),
    }
    let still = c.get_replica_info(&addr, SET).await.expect("replica info");
    assert_eq!(still.master_broker_id, None, "{still:?}");

    // The live keys change at once, under RocketMQ's names or ours.
    c.update_config(
        &addr,
        &[
            ("enableElectUncleanMaster", "true"),
            ("notifyBrokerRoleChanged", "false"),
            ("scan_interval_ms", "100"),
        ],
    )
    .await
    .expect("1009");
    let after = c.get_config(&addr).await.expect("1010");
    assert_eq!(after["enableElectUncleanMaster"], "true");
    assert_eq!(after["notifyBrokerRoleChanged"], "false");
    assert_eq!(after["scanNotActiveBrokerInterval"], "100");
    let mut rest = after.clone();
    let mut before = config.clone();
    for key in [
        "enableElectUncleanMaster",
        "notifyBrokerRoleChanged",
        "scanNotActiveBrokerInterval",
    ] {
        rest.remove(key);
        before.remove(key);
    }
    assert_eq!(rest, before, "nothing else changed");
    // ... and the next election takes 2 from outside the SyncStateSet.
    let unclean = c
        .elect_master(&addr, CLUSTER, SET, Some(2), false)
        .await
        .expect("elect");
    assert_eq!(
        (unclean.code, unclean.master_broker_id),
        (code::SUCCESS, Some(2)),
        "{unclean:?}"
    );
    assert!(unclean.master_epoch > deposed.master_epoch, "{unclean:?}");
    let info = c.get_replica_info(&addr, SET).await.expect("replica info");
    assert_eq!(info.master_broker_id, Some(2), "{info:?}");

    heartbeats.abort();
    controller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_with_a_secret_an_update_needs_it() {
    use rocketraft_nameserver::{NameServer, NamesrvConfig};
    let dir = rocketraft_common::testing::ScratchDir::new("ctl-config").expect("a scratch dir");
    let secret = ClusterSecret::new("controller-config-test-0123").expect("secret");
    let namesrv = NameServer::start(
        NamesrvConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            enable_controller_in_namesrv: true,
            controller: controller_config(dir.path()),
            ..NamesrvConfig::default()
        }
        .with_cluster_secret(secret.clone()),
    )
    .await
    .expect("namesrv with controller");
    let addr = namesrv.local_addr().to_string();

    // Reading needs no secret, and the secret is never answered.
    let open = client(None);
    let config = open
        .get_config(&addr)
        .await
        .expect("1010 without the secret");
    assert_eq!(config["enableElectUncleanMaster"], "false");
    assert!(
        config
            .iter()
            .all(|(k, v)| !k.contains("secret") && !v.contains("controller-config-test")),
        "{config:?}"
    );
    // Changing does.
    let err = open
        .update_config(&addr, &[("enableElectUncleanMaster", "true")])
        .await
        .expect_err("no secret");
    assert_eq!(err.code(), Some(code::NO_PERMISSION), "{err}");
    assert_eq!(open.get_config(&addr).await.expect("1010"), config);
    let trusted = client(Some(secret));
    trusted
        .update_config(&addr, &[("enableElectUncleanMaster", "true")])
        .await
        .expect("1009 with the secret");
    assert_eq!(
        open.get_config(&addr).await.expect("1010")["enableElectUncleanMaster"],
        "true"
    );
    namesrv.shutdown().await;
}
