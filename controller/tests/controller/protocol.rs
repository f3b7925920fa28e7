//! The controller's Remoting protocol against real servers on loopback: a standalone one-node
//! controller, and the same suite against a NameServer with the controller embedded.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rocketraft_controller::client::{ControllerCallError, ControllerClient};
use rocketraft_controller::heartbeat::Heartbeat;
use rocketraft_controller::{BrokerLiveInfo, Controller, ControllerConfig};
use rocketraft_remoting::response_code as code;
use rocketraft_remoting::{
    processor_fn, request_code, ClientConfig, RemotingClient, RemotingCommand, RemotingServer,
};

const CLUSTER: &str = "DefaultCluster";
const SET: &str = "broker-a";

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

/// A one-node controller serving Remoting on a loopback port, and that address.
async fn serving_controller(dir: &Path) -> (Arc<Controller>, String) {
    let controller: Arc<Controller> = Controller::start(controller_config(dir))
        .await
        .expect("controller starts");
    let addr = controller
        .serve_remoting()
        .await
        .expect("serve")
        .to_string();
    (controller, addr)
}

fn client() -> ControllerClient {
    ControllerClient::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(10),
    )
}

/// Broker 3 is a real Remoting server (`b3`) that records NOTIFY_BROKER_ROLE_CHANGED; the
/// others are addresses nobody listens on.
fn broker_addr(id: i64, b3: &str) -> String {
    if id == 3 {
        b3.to_string()
    } else {
        format!("127.0.0.1:{}", 30000 + id)
    }
}

async fn heartbeat(c: &ControllerClient, addr: &str, b3: &str, id: i64, max_offset: i64) {
    c.heartbeat(
        addr,
        &Heartbeat {
            cluster: CLUSTER.into(),
            broker_name: SET.into(),
            broker_id: id,
            broker_addr: broker_addr(id, b3),
            timeout_ms: 1500,
            info: BrokerLiveInfo::new(1, max_offset, 0),
        },
    )
    .await
    .expect("heartbeat");
}

/// Waits for the one-node controller to lead (its first election).
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

async fn raw(addr: &str, request: RemotingCommand) -> RemotingCommand {
    RemotingClient::new(ClientConfig::default())
        .invoke(addr, request, Duration::from_secs(10))
        .await
        .expect("answer")
}

/// The whole broker-side protocol plus every rejection, against the controller at `addr`.
async fn protocol_suite(addr: &str) {
    let c = client();
    wait_ready(&c, addr).await;
    let (notified_tx, mut notified) = tokio::sync::mpsc::unbounded_channel::<RemotingCommand>();
    let broker3 = RemotingServer::builder()
        .register(
            request_code::NOTIFY_BROKER_ROLE_CHANGED,
            processor_fn(move |_ctx, request: RemotingCommand| {
                let tx = notified_tx.clone();
                async move {
                    let _ = tx.send(request);
                    None
                }
            }),
        )
        .bind("127.0.0.1:0".parse::<std::net::SocketAddr>().expect("addr"))
        .await
        .expect("broker 3 listens")
        .spawn();
    let b3_owned = broker3.local_addr().to_string();
    let b3 = b3_owned.as_str();

    // Broker ids: the first apply of a new set must be id 1.
    assert_eq!(
        c.get_next_broker_id(addr, CLUSTER, SET)
            .await
            .expect("next id"),
        1
    );
    let err = c
        .apply_broker_id(addr, CLUSTER, SET, 2, &format!("{};1", broker_addr(2, b3)))
        .await
        .expect_err("id 2 first");
    assert_eq!(err.code(), Some(code::CONTROLLER_BROKER_ID_INVALID));
    for id in 1..=3 {
        assert_eq!(
            c.get_next_broker_id(addr, CLUSTER, SET)
                .await
                .expect("next"),
            id
        );
        c.apply_broker_id(
            addr,
            CLUSTER,
            SET,
            id,
            &format!("{};{id}", broker_addr(id, b3)),
        )
        .await
        .expect("apply id");
    }
    // Re-applying with the same check code is idempotent; another code is refused.
    c.apply_broker_id(addr, CLUSTER, SET, 2, &format!("{};2", broker_addr(2, b3)))
        .await
        .expect("same check code");
    let err = c
        .apply_broker_id(addr, CLUSTER, SET, 2, "10.9.9.9:1;7")
        .await
        .expect_err("taken id");
    assert_eq!(err.code(), Some(code::CONTROLLER_BROKER_ID_INVALID));

    // Brokers 1-3 heartbeat in the background from now on, every 200 ms.
    let beating = Arc::new(std::sync::Mutex::new(vec![1i64, 2, 3]));
    let heartbeats = {
        let hb = client();
        let addr = addr.to_string();
        let b3 = b3.to_string();
        let beating = beating.clone();
        tokio::spawn(async move {
            loop {
                let ids = beating.lock().expect("lock").clone();
                for id in ids {
                    heartbeat(&hb, &addr, &b3, id, 100 * id).await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    for id in 1..=3 {
        heartbeat(&c, addr, b3, id, 100 * id).await;
        let r = c
            .register_broker(addr, CLUSTER, SET, id, &broker_addr(id, b3))
            .await
            .expect("register");
        assert_eq!(r.master_broker_id, None, "no master yet");
    }
    let err = c
        .register_broker(addr, CLUSTER, SET, 9, &broker_addr(9, b3))
        .await
        .expect_err("unknown id");
    assert_eq!(
        err.code(),
        Some(code::CONTROLLER_BROKER_NEED_TO_BE_REGISTERED)
    );

    // First election: the requester wins.
    let r = c
        .elect_master(addr, CLUSTER, SET, Some(1), false)
        .await
        .expect("elect");
    assert_eq!(
        (r.code, r.master_broker_id, r.master_epoch),
        (code::SUCCESS, Some(1), 1)
    );
    assert_eq!(
        r.master_address.as_deref(),
        Some(broker_addr(1, b3).as_str())
    );
    assert_eq!(r.sync_state_set, BTreeSet::from([1]));
    // Another broker asking: the master is alive and stays.
    let r = c
        .elect_master(addr, CLUSTER, SET, Some(2), false)
        .await
        .expect("elect again");
    assert_eq!(
        (r.code, r.master_broker_id),
        (code::CONTROLLER_MASTER_STILL_EXIST, Some(1))
    );

    // The master grows its SyncStateSet.
    let (epoch, set) = c
        .alter_sync_state_set(addr, SET, 1, 1, &BTreeSet::from([1, 2, 3]), 1)
        .await
        .expect("alter");
    assert_eq!((epoch, set), (2, BTreeSet::from([1, 2, 3])));

    // Bad input; each leaves the state as it was.
    let before = c.get_sync_state_data(addr, &[SET]).await.expect("state");
    type AlterResult = Result<(i32, BTreeSet<i64>), ControllerCallError>;
    let cases: Vec<(&str, AlterResult, i32)> = vec![
        (
            "stale master epoch",
            c.alter_sync_state_set(addr, SET, 1, 0, &BTreeSet::from([1, 2]), 2)
                .await,
            code::CONTROLLER_FENCED_MASTER_EPOCH,
        ),
        (
            "stale SyncStateSet epoch",
            c.alter_sync_state_set(addr, SET, 1, 1, &BTreeSet::from([1, 2]), 1)
                .await,
            code::CONTROLLER_FENCED_SYNC_STATE_SET_EPOCH,
        ),
        (
            "not the master",
            c.alter_sync_state_set(addr, SET, 2, 1, &BTreeSet::from([1, 2]), 2)
                .await,
            code::CONTROLLER_INVALID_MASTER,
        ),
        (
            "unknown replica",
            c.alter_sync_state_set(addr, SET, 1, 1, &BTreeSet::from([1, 7]), 2)
                .await,
            code::CONTROLLER_INVALID_REPLICAS,
        ),
        (
            "set without the master",
            c.alter_sync_state_set(addr, SET, 1, 1, &BTreeSet::from([2, 3]), 2)
                .await,
            code::CONTROLLER_ALTER_SYNC_STATE_SET_FAILED,
        ),
        (
            "unknown broker set",
            c.alter_sync_state_set(addr, "nope", 1, 1, &BTreeSet::from([1]), 1)
                .await,
            code::CONTROLLER_ALTER_SYNC_STATE_SET_FAILED,
        ),
    ];
    for (what, result, expected) in cases {
        assert_eq!(result.expect_err(what).code(), Some(expected), "{what}");
    }
    let err = c
        .elect_master(addr, CLUSTER, "nope", Some(1), false)
        .await
        .expect_err("unknown set");
    assert_eq!(
        err.code(),
        Some(code::CONTROLLER_BROKER_NEED_TO_BE_REGISTERED)
    );
    let err = c
        .get_replica_info(addr, "nope")
        .await
        .expect_err("unknown set");
    assert!(err.code().is_some(), "{err}");

    // Garbage: bodies that are not JSON, missing or non-numeric header fields.
    let garbage = [
        RemotingCommand::request(request_code::CONTROLLER_ALTER_SYNC_STATE_SET)
            .with_ext("brokerName", SET)
            .with_ext("masterBrokerId", 1)
            .with_ext("masterEpoch", 1)
            .with_body(&b"{not json"[..]),
        RemotingCommand::request(request_code::CONTROLLER_ALTER_SYNC_STATE_SET)
            .with_ext("brokerName", SET)
            .with_ext("masterBrokerId", "one")
            .with_ext("masterEpoch", 1)
            .with_body(&br#"{"syncStateSet":[1],"syncStateSetEpoch":2}"#[..]),
        RemotingCommand::request(request_code::CONTROLLER_ELECT_MASTER)
            .with_ext("clusterName", CLUSTER),
        RemotingCommand::request(request_code::CONTROLLER_APPLY_BROKER_ID)
            .with_ext("clusterName", CLUSTER)
            .with_ext("brokerName", SET),
        RemotingCommand::request(request_code::CONTROLLER_GET_SYNC_STATE_DATA)
            .with_body(&b"\x00\x01"[..]),
        RemotingCommand::request(request_code::BROKER_HEARTBEAT).with_ext("brokerName", SET),
    ];
    for request in garbage {
        let what = format!("{:?}", request.ext_fields);
        let response = raw(addr, request).await;
        assert_eq!(
            response.code,
            code::CONTROLLER_INVALID_REQUEST,
            "{what}: {:?}",
            response.remark
        );
        assert!(
            response.remark.is_some_and(|r| !r.is_empty()),
            "{what}: a remark says why"
        );
    }
    let after = c.get_sync_state_data(addr, &[SET]).await.expect("state");
    assert_eq!(before, after, "rejections changed nothing");

    // Reads: replica info and sync state data.
    let info = c.get_replica_info(addr, SET).await.expect("replica info");
    assert_eq!(
        (
            info.master_broker_id,
            info.master_epoch,
            info.sync_state_set_epoch,
            info.sync_state_set.clone()
        ),
        (Some(1), 1, 2, BTreeSet::from([1, 2, 3]))
    );
    let table = &after.replicas_info_table[SET];
    assert_eq!(table.in_sync_replicas.len(), 3);
    assert!(table.in_sync_replicas.iter().all(|r| r.alive));

    // Master 1 dies (no more heartbeats) while 2 and 3 keep beating: the controller elects
    // the most advanced in-sync replica (3 has the highest max offset) through the log.
    beating.lock().expect("lock").retain(|id| *id != 1);
    let mut elected = None;
    for _ in 0..100 {
        let info = c.get_replica_info(addr, SET).await.expect("replica info");
        if info.master_broker_id != Some(1) {
            elected = Some(info);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    heartbeats.abort();
    let info = elected.expect("a new master after the old one's heartbeat timed out");
    assert_eq!(info.master_broker_id, Some(3));
    assert_eq!(info.master_epoch, 2);
    assert_eq!(info.sync_state_set, BTreeSet::from([3]));
    // Broker 3 was told, oneway, that it is the master now.
    let notice = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = notified.recv().await.expect("notification channel");
            if n.ext("masterBrokerId") == Some("3") {
                return n;
            }
        }
    })
    .await
    .expect("NOTIFY_BROKER_ROLE_CHANGED reached broker 3");
    assert_eq!(notice.ext("masterEpoch"), Some("2"));
    assert_eq!(notice.ext("masterAddress"), Some(b3));
    let body: serde_json::Value = serde_json::from_slice(&notice.body).expect("SyncStateSet body");
    assert_eq!(body["syncStateSet"], serde_json::json!([3]));
    broker3.shutdown().await;
    // The deposed master's AlterSyncStateSet is fenced.
    let err = c
        .alter_sync_state_set(addr, SET, 1, 1, &BTreeSet::from([1, 2]), 2)
        .await
        .expect_err("stale master");
    assert_eq!(err.code(), Some(code::CONTROLLER_INVALID_MASTER));

    // CLEAN_BROKER_DATA: the dead old master's id goes; a malformed id list is refused.
    let err = c
        .clean_broker_data(addr, CLUSTER, SET, Some("1;x"), false)
        .await
        .expect_err("malformed ids");
    assert_eq!(
        err.code(),
        Some(code::CONTROLLER_INVALID_CLEAN_BROKER_METADATA)
    );
    c.clean_broker_data(addr, CLUSTER, SET, Some("1"), false)
        .await
        .expect("clean dead broker 1");
    let data = c.get_sync_state_data(addr, &[SET]).await.expect("state");
    let table = &data.replicas_info_table[SET];
    let ids: BTreeSet<i64> = table
        .in_sync_replicas
        .iter()
        .chain(&table.not_in_sync_replicas)
        .map(|r| r.broker_id)
        .collect();
    assert_eq!(ids, BTreeSet::from([2, 3]));

    // Metadata names the leader and the peers in Java's format.
    let m = c.metadata(addr).await.expect("metadata");
    assert!(m.is_leader);
    assert_eq!(m.leader_id.as_deref(), Some("n1"));
    assert!(
        m.peers.starts_with("n1:") && m.peers.ends_with(';'),
        "{}",
        m.peers
    );
    let status = m.status.expect("status body");
    assert!(status.raft.last_applied.unwrap_or(0) > 0);
    assert_eq!(status.broker_sets, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_controller_speaks_the_protocol() {
    let dir = rocketraft_common::testing::ScratchDir::new("raft").expect("a scratch dir");
    let (controller, addr) = serving_controller(dir.path()).await;
    protocol_suite(&addr).await;
    controller.shutdown().await;

    // Restart from disk: the same decisions are there.
    let mut config = controller_config(dir.path());
    config.raft.listen = controller.raft().local_addr();
    config.raft.initial_members = BTreeMap::from([(1, controller.raft().local_addr().to_string())]);
    drop(controller);
    let controller = Controller::start(config).await.expect("restart");
    let addr = controller
        .serve_remoting()
        .await
        .expect("serve")
        .to_string();
    let c = client();
    wait_ready(&c, &addr).await;
    let info = c.get_replica_info(&addr, SET).await.expect("replica info");
    assert_eq!((info.master_broker_id, info.master_epoch), (Some(3), 2));
    controller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_in_the_nameserver() {
    use rocketraft_nameserver::{NameServer, NamesrvConfig};
    let dir = rocketraft_common::testing::ScratchDir::new("raft").expect("a scratch dir");
    let namesrv = NameServer::start(NamesrvConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        enable_controller_in_namesrv: true,
        controller: controller_config(dir.path()),
        ..NamesrvConfig::default()
    })
    .await
    .expect("namesrv with controller");
    let addr = namesrv.local_addr().to_string();
    protocol_suite(&addr).await;
    // The NameServer's own protocol still works on the same port.
    let response = raw(
        &addr,
        RemotingCommand::request(request_code::GET_BROKER_CLUSTER_INFO),
    )
    .await;
    assert_eq!(response.code, code::SUCCESS);
    namesrv.shutdown().await;
}

/// A one-node controller and a set of three replicas (ids 1..=3, addresses from
/// [`broker_addr`]) that heartbeat every 200 ms with what `beat` says (ids listed in
/// `beating` only), with 1 elected master and 2 and 3 in its SyncStateSet.
struct ThreeReplicas {
    controller: Arc<Controller>,
    addr: String,
    beating: Arc<std::sync::Mutex<Vec<i64>>>,
    heartbeats: tokio::task::JoinHandle<()>,
}

impl ThreeReplicas {
    async fn start(
        dir: &Path,
        beat: impl Fn(i64) -> Heartbeat + Send + Sync + Clone + 'static,
    ) -> ThreeReplicas {
        let (controller, addr) = serving_controller(dir).await;
        let c = client();
        wait_ready(&c, &addr).await;
        for id in 1..=3 {
            assert_eq!(
                c.get_next_broker_id(&addr, CLUSTER, SET)
                    .await
                    .expect("next"),
                id
            );
            let hb = beat(id);
            c.apply_broker_id(&addr, CLUSTER, SET, id, &format!("{};{id}", hb.broker_addr))
                .await
                .expect("apply id");
        }
        let beating = Arc::new(std::sync::Mutex::new(vec![1i64, 2, 3]));
        let heartbeats = {
            let hb = client();
            let (addr, beating, beat) = (addr.clone(), beating.clone(), beat.clone());
            tokio::spawn(async move {
                loop {
                    let ids = beating.lock().expect("lock").clone();
                    for id in ids {
                        let _ = hb.heartbeat(&addr, &beat(id)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        for id in 1..=3 {
            let hb = beat(id);
            c.heartbeat(&addr, &hb).await.expect("heartbeat");
            c.register_broker(&addr, CLUSTER, SET, id, &hb.broker_addr)
                .await
                .expect("register");
        }
        let r = c
            .elect_master(&addr, CLUSTER, SET, Some(1), false)
            .await
            .expect("elect");
        assert_eq!(r.master_broker_id, Some(1));
        // The master adds its slaves one per change (each change names one joining member).
        c.alter_sync_state_set(&addr, SET, 1, 1, &BTreeSet::from([1, 2]), 1)
            .await
            .expect("2 joins");
        c.alter_sync_state_set(&addr, SET, 1, 1, &BTreeSet::from([1, 2, 3]), 2)
            .await
            .expect("3 joins");
        ThreeReplicas {
            controller,
            addr,
            beating,
            heartbeats,
        }
    }

    /// Polls the set until its master is no longer 1 (at most 10 s).
    async fn next_master(&self) -> Option<rocketraft_controller::client::MasterInfo> {
        let c = client();
        for _ in 0..100 {
            let info = c
                .get_replica_info(&self.addr, SET)
                .await
                .expect("replica info");
            if info.master_broker_id != Some(1) {
                return Some(info);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    async fn stop(self) {
        self.heartbeats.abort();
        self.controller.shutdown().await;
    }
}

fn beat_of(id: i64, max_offset: i64, info: BrokerLiveInfo) -> Heartbeat {
    Heartbeat {
        cluster: CLUSTER.into(),
        broker_name: SET.into(),
        broker_id: id,
        broker_addr: broker_addr(id, "127.0.0.1:30003"),
        timeout_ms: 1500,
        info: BrokerLiveInfo { max_offset, ..info },
    }
}

/// `nameServersReached` in BROKER_HEARTBEAT (a Rocketraft extension) reaches the election: when
/// the master dies, the in-sync replica with the longer log (2) reports that it reaches no
/// NameServer, so the controller elects the one clients can find (3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_election_prefers_a_replica_the_name_servers_reach() {
    let dir = rocketraft_common::testing::ScratchDir::new("raft").expect("a scratch dir");
    // (id, max offset, NameServers reached)
    let beat = |id: i64| -> Heartbeat {
        let (max_offset, reached) = match id {
            1 => (100, 1),
            2 => (900, 0),
            _ => (300, 1),
        };
        beat_of(
            id,
            max_offset,
            BrokerLiveInfo::new(1, 0, 0).with_name_servers_reached(reached),
        )
    };
    let set = ThreeReplicas::start(dir.path(), beat).await;
    set.beating.lock().expect("lock").retain(|id| *id != 1);
    let info = set
        .next_master()
        .await
        .expect("a new master after the old one's heartbeat timed out");
    assert_eq!(
        info.master_broker_id,
        Some(3),
        "2 has the longer log but reaches no NameServer"
    );
    set.stop().await;
}

/// `leaseConfirmed` (a Rocketraft extension; what a master renews its role lease on): the
/// leader confirms every heartbeat it records (`leaderConfirmed`), but the lease only of the
/// set's master of record at the epoch the heartbeat reports. A master replaced while it was
/// cut off (its heartbeats stopped) that heartbeats again before it learns of the new epoch
/// gets no lease (found by the simulation: `rocketraft-sim --controller-link --fault-ms 3000
/// --seed 3`, two masters with a lease at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_master_of_record_at_its_epoch_gets_a_lease() {
    let dir = rocketraft_common::testing::ScratchDir::new("raft").expect("a scratch dir");
    let beat = |id: i64| beat_of(id, 100 * id, BrokerLiveInfo::new(1, 0, 0));
    let set = ThreeReplicas::start(dir.path(), beat).await;
    let c = client();
    let ack = |hb: Heartbeat| {
        let c = &c;
        let addr = set.addr.clone();
        async move {
            c.heartbeat_ack(&addr, &hb, Duration::from_secs(5))
                .await
                .expect("heartbeat answered")
        }
    };
    // A settled leader: the master at epoch 1 gets its lease; a slave only the confirmation.
    let mut master = ack(beat(1)).await;
    for _ in 0..50 {
        if master.lease_confirmed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        master = ack(beat(1)).await;
    }
    assert!(
        master.leader_confirmed && master.lease_confirmed,
        "{master:?}"
    );
    let slave = ack(beat(2)).await;
    assert!(
        slave.leader_confirmed && !slave.lease_confirmed,
        "{slave:?}"
    );

    // 1 falls silent; the controller elects another master for epoch 2.
    set.beating.lock().expect("lock").retain(|id| *id != 1);
    let info = set
        .next_master()
        .await
        .expect("a new master after the old one's heartbeat timed out");
    assert_eq!(info.master_epoch, 2);
    let new_master = info.master_broker_id.expect("a master");

    // The old master is back, still at epoch 1: confirmed, no lease.
    let old = ack(beat(1)).await;
    assert!(old.leader_confirmed, "{old:?}");
    assert!(
        !old.lease_confirmed,
        "a replaced master renewed its lease: {old:?}"
    );
    // The new master before it wrote epoch 2 to its epoch file: no lease either.
    let unaware = ack(beat(new_master)).await;
    assert!(!unaware.lease_confirmed, "{unaware:?}");
    // Once at epoch 2, its lease.
    let at_2 = || beat_of(new_master, 100 * new_master, BrokerLiveInfo::new(2, 0, 0));
    let mut aware = ack(at_2()).await;
    for _ in 0..50 {
        if aware.lease_confirmed {
            break;
        }
        // A write still in flight on the leader (it is not settled) refuses a lease for now.
        tokio::time::sleep(Duration::from_millis(50)).await;
        aware = ack(at_2()).await;
    }
    assert!(aware.leader_confirmed && aware.lease_confirmed, "{aware:?}");
    set.stop().await;
}

/// A master that counts acks (`allAckInSyncStateSet=false` in its heartbeat) may acknowledge
/// writes a designated successor lacks until it learns of the election: the controller refuses
/// a transfer away from it while it heartbeats, with the fix in the remark. Once it reports
/// that every member must hold a write, the same request moves the master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_away_from_a_master_that_counts_acks_is_refused() {
    let dir = rocketraft_common::testing::ScratchDir::new("raft").expect("a scratch dir");
    let all_ack = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let beat = {
        let all_ack = all_ack.clone();
        move |id: i64| -> Heartbeat {
            let info = BrokerLiveInfo::new(1, 0, 0).with_all_ack_in_sync_state_set(
                id != 1 || all_ack.load(std::sync::atomic::Ordering::SeqCst),
            );
            beat_of(id, 100 * id, info)
        }
    };
    let set = ThreeReplicas::start(dir.path(), beat.clone()).await;
    let c = client();
    // The heartbeat loop may not have run yet: the table holds the master's flag once this
    // one is answered.
    c.heartbeat(&set.addr, &beat(1)).await.expect("heartbeat");
    let refused = c
        .elect_master(&set.addr, CLUSTER, SET, Some(2), true)
        .await
        .expect_err("a transfer away from a live master that counts acks");
    assert_eq!(
        refused.code(),
        Some(code::CONTROLLER_ELECT_MASTER_FAILED),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("allAckInSyncStateSet=true"),
        "{refused}"
    );
    let info = c.get_replica_info(&set.addr, SET).await.expect("info");
    assert_eq!((info.master_broker_id, info.master_epoch), (Some(1), 1));

    all_ack.store(true, std::sync::atomic::Ordering::SeqCst);
    c.heartbeat(&set.addr, &beat(1)).await.expect("heartbeat");
    let moved = c
        .elect_master(&set.addr, CLUSTER, SET, Some(2), true)
        .await
        .expect("a transfer away from a master that waits for every member");
    assert_eq!((moved.master_broker_id, moved.master_epoch), (Some(2), 2));
    set.stop().await;
}

/// Issue 22: a master that keeps heartbeating but reports that it cannot gather
/// `minInSyncReplicas` (`inSyncReplicasUnreachable`, a Rocketraft extension: cut off from its
/// slaves but not from the controller leader) is deposed by the controller's own scan in favour
/// of a member of its SyncStateSet the leader heard recently; while it reports `false`, it
/// stays master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_master_that_cannot_gather_in_sync_replicas_is_deposed() {
    let dir = rocketraft_common::testing::ScratchDir::new("raft").expect("a scratch dir");
    let stuck = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let beat = {
        let stuck = stuck.clone();
        move |id: i64| -> Heartbeat {
            let info = BrokerLiveInfo::new(1, 0, 0).with_name_servers_reached(1);
            let info = match id {
                1 => info.with_in_sync_unreachable(stuck.load(std::sync::atomic::Ordering::SeqCst)),
                _ => info.with_master_link_fresh(false),
            };
            beat_of(id, 100 * id, info)
        }
    };
    let set = ThreeReplicas::start(dir.path(), beat).await;
    // Two heartbeat timeouts with the master able to write: nobody touches it.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let c = client();
    let info = c
        .get_replica_info(&set.addr, SET)
        .await
        .expect("replica info");
    assert_eq!(info.master_broker_id, Some(1));
    assert_eq!(info.master_epoch, 1);

    // 3 (the longest log) falls silent: still alive for a heartbeat timeout, but not heard
    // recently, so it is no replacement (a partition that just began may have cut it off).
    set.beating.lock().expect("lock").retain(|id| *id != 3);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stuck.store(true, std::sync::atomic::Ordering::SeqCst);
    let started = std::time::Instant::now();
    let info = set
        .next_master()
        .await
        .expect("the stuck master was never deposed");
    assert_eq!(
        info.master_broker_id,
        Some(2),
        "deposed in favour of a member the leader has not heard for a while"
    );
    assert_eq!(info.master_epoch, 2);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "deposed only after {:?}",
        started.elapsed()
    );
    // The old master still heartbeats (and still says it cannot gather its set): it is not
    // put back, and 2 is not deposed for what 1 reports.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let info = c
        .get_replica_info(&set.addr, SET)
        .await
        .expect("replica info");
    assert_eq!(info.master_broker_id, Some(2));
    assert_eq!(info.master_epoch, 2);
    set.stop().await;
}
