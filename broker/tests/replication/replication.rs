//! Controller mode in one process: a NameServer with the controller embedded and three real
//! brokers on loopback ports, each with its own store. Replication, the ack policy, fencing of
//! slaves, failover after the master stops, and the old master rejoining as a slave.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketraft_broker::ha::Role;
use rocketraft_broker::store::FlushDiskType;
use rocketraft_broker::{Broker, BrokerConfig};
use rocketraft_common::metrics::text::sample;
use rocketraft_common::trust::ClusterSecret;
use rocketraft_controller::ControllerConfig;
use rocketraft_nameserver::{NameServer, NamesrvConfig};
use rocketraft_remoting::api::{MqClientApi, SendRequest};
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{ClientConfig, RemotingClient};

pub(crate) fn free_port() -> u16 {
    rocketraft_common::net::free_loopback_port().expect("a free loopback port")
}

async fn namesrv(dir: &Path) -> NameServer {
    namesrv_with(dir, |_| {}).await
}

async fn namesrv_with(dir: &Path, tune: impl FnOnce(&mut ControllerConfig)) -> NameServer {
    namesrv_secured(dir, None, tune).await
}

/// A NameServer with the controller embedded; with `secret`, both serve their cluster-internal
/// codes only to servers that prove it.
pub(crate) async fn namesrv_secured(
    dir: &Path,
    secret: Option<ClusterSecret>,
    tune: impl FnOnce(&mut ControllerConfig),
) -> NameServer {
    namesrv_tuned(dir, secret, tune, |c| c).await
}

/// [`namesrv_secured`] with the NameServer's own config tuned too.
pub(crate) async fn namesrv_tuned(
    dir: &Path,
    secret: Option<ClusterSecret>,
    tune: impl FnOnce(&mut ControllerConfig),
    tune_namesrv: impl FnOnce(NamesrvConfig) -> NamesrvConfig,
) -> NameServer {
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
    c.heartbeat_timeout_ms = 2000;
    c.scan_interval_ms = 200;
    tune(&mut c);
    let config = NamesrvConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        enable_controller_in_namesrv: true,
        controller: c,
        cluster_secret: secret,
        ..NamesrvConfig::default()
    };
    NameServer::start(tune_namesrv(config))
        .await
        .expect("namesrv with controller")
}

pub(crate) fn broker_config(dir: &Path, namesrv: SocketAddr, port: u16) -> BrokerConfig {
    let mut config = BrokerConfig {
        listen: format!("127.0.0.1:{port}").parse().expect("addr"),
        namesrv_addr: namesrv.to_string(),
        ha_port: 0,
        enable_controller_mode: true,
        controller_addr: namesrv.to_string(),
        controller_heartbeat_interval_ms: 300,
        controller_heartbeat_timeout_ms: 2000,
        sync_controller_metadata_period_ms: 500,
        check_sync_state_set_period_ms: 200,
        ha_max_time_slave_not_catchup_ms: 2000,
        min_in_sync_replicas: 2,
        slave_timeout_ms: 3000,
        ..BrokerConfig::default()
    };
    config.store.store_root = dir.to_path_buf();
    config.store.commitlog_segment_size = 64 * 1024;
    config.store.flush_disk_type = FlushDiskType::AsyncFlush;
    config.store.pretouch = false;
    config.store.max_message_size = 16 * 1024;
    config
}

pub(crate) fn api() -> MqClientApi {
    MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(5),
    )
}

pub(crate) fn message(i: usize) -> SendRequest {
    SendRequest {
        producer_group: "pg".to_string(),
        topic: "Replicated".to_string(),
        queue_id: (i % 2) as i32,
        body: Bytes::from(format!("message-{i}-{}", "x".repeat(300))),
        properties: BTreeMap::new(),
        ..SendRequest::default()
    }
}

pub(crate) async fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn master_of(brokers: &[Option<Broker>]) -> Option<usize> {
    let masters: Vec<usize> = brokers
        .iter()
        .enumerate()
        .filter(|(_, b)| {
            b.as_ref().is_some_and(|b| {
                let ha = b.inner().ha.as_ref().expect("controller mode");
                ha.role() == Role::Master && ha.lease_valid()
            })
        })
        .map(|(i, _)| i)
        .collect();
    assert!(
        masters.len() <= 1,
        "two masters with valid leases: {masters:?}"
    );
    masters.first().copied()
}

pub(crate) fn in_sync(b: &Broker) -> usize {
    b.inner()
        .ha
        .as_ref()
        .expect("controller mode")
        .snapshot()
        .sync_state_set
        .len()
}

/// A broker's metrics as a scrape returns them.
fn scrape(b: &Broker) -> String {
    let mut registry = rocketraft_common::metrics::Registry::default();
    registry.register_collector(b.metrics_collector());
    rocketraft_common::metrics::encode(&registry).expect("encodes")
}

/// The replication gauges of a settled set: the master sees every slave caught up (no ack
/// lag, in sync), slaves say they are not master, and all share the master's epoch.
async fn replication_metrics(brokers: &[Option<Broker>], m: usize) {
    let master = brokers[m].as_ref().expect("master");
    let epoch = master.inner().ha.as_ref().expect("ha").master_epoch();
    let slaves: Vec<i64> = master
        .inner()
        .ha
        .as_ref()
        .expect("ha")
        .snapshot()
        .slaves
        .iter()
        .map(|s| s.broker_id)
        .collect();
    assert_eq!(slaves.len(), 2);
    let text = wait_for("no replica ack lag", Duration::from_secs(10), || {
        let text = scrape(master);
        slaves
            .iter()
            .all(|id| {
                let replica = format!("{{replica=\"{id}\"}}");
                sample(&text, &format!("rocketraft_replica_ack_lag_bytes{replica}")) == Some(0.0)
                    && sample(&text, &format!("rocketraft_replica_ack_lag_ms{replica}"))
                        == Some(0.0)
            })
            .then_some(text)
    })
    .await;
    assert_eq!(sample(&text, "rocketraft_broker_is_master"), Some(1.0));
    assert_eq!(sample(&text, "rocketraft_sync_state_set_size"), Some(3.0));
    assert_eq!(
        sample(&text, "rocketraft_master_epoch"),
        Some(f64::from(epoch))
    );
    for id in &slaves {
        let series = format!("rocketraft_replica_in_sync{{replica=\"{id}\"}}");
        assert_eq!(sample(&text, &series), Some(1.0), "{text}");
    }
    // The confirm offset only grows: read after the scrape, it is at least the scraped one.
    let confirm = sample(&text, "rocketraft_confirm_offset").expect("confirm offset");
    assert!(confirm > 0.0, "{text}");
    assert!(
        confirm <= master.inner().store.confirm_offset() as f64,
        "{text}"
    );
    for (i, b) in brokers.iter().enumerate() {
        if i == m {
            continue;
        }
        let text = scrape(b.as_ref().expect("slave"));
        assert_eq!(
            sample(&text, "rocketraft_broker_is_master"),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, "rocketraft_master_epoch"),
            Some(f64::from(epoch))
        );
        assert!(
            !text.contains("rocketraft_replica_ack_lag_bytes{"),
            "{text}"
        );
    }
}

/// Every CommitLog byte below `upto` is the same on both stores.
pub(crate) fn same_bytes(a: &Broker, b: &Broker, upto: i64) {
    let (sa, sb) = (&a.inner().store, &b.inner().store);
    let mut at = sa.min_phy_offset().max(sb.min_phy_offset());
    while at < upto {
        let x = sa
            .read_commit_log(at, (upto - at).min(16 * 1024) as usize)
            .expect("bytes on a");
        let y = sb.read_commit_log(at, x.len()).expect("bytes on b");
        assert_eq!(x, y, "CommitLogs differ in the chunk at {at}");
        at += x.len() as i64;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicate_ack_fail_over_and_rejoin() {
    replicate_ack_fail_over_and_rejoin_with(None).await;
}

/// Issue 16: the same with one cluster secret on the NameServer, the controller and every
/// broker: every internal connection (registration, heartbeats, role notifications, the HA
/// port) proves it, and nothing else changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicate_ack_fail_over_and_rejoin_with_a_cluster_secret() {
    let secret = ClusterSecret::new("replication-test-cluster-secret").expect("long enough");
    replicate_ack_fail_over_and_rejoin_with(Some(secret)).await;
}

async fn replicate_ack_fail_over_and_rejoin_with(secret: Option<ClusterSecret>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = namesrv_secured(dir.path(), secret.clone(), |_| {}).await;
    let ns_addr = ns.local_addr();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let config = |i: usize| BrokerConfig {
        cluster_secret: secret.clone(),
        ..broker_config(&dir.path().join(format!("b{i}")), ns_addr, ports[i])
    };
    let mut brokers: Vec<Option<Broker>> = Vec::new();
    for i in 0..ports.len() {
        let cfg = config(i);
        brokers.push(Some(Broker::start(cfg).await.expect("broker starts")));
    }
    let m = wait_for("a master", Duration::from_secs(20), || master_of(&brokers)).await;
    let master = brokers[m].as_ref().expect("master");
    wait_for(
        "all three in the SyncStateSet",
        Duration::from_secs(20),
        || (in_sync(master) == 3).then_some(()),
    )
    .await;

    // Sends succeed once all in-sync replicas hold them; slaves refuse writes.
    let api = api();
    let master_addr = master.local_addr().to_string();
    let mut acked = Vec::new();
    for i in 0..300 {
        let r = api.send(&master_addr, &message(i)).await.expect("send");
        assert_eq!(r.code, response_code::SUCCESS, "send {i}");
        acked.push((r.queue_id, r.queue_offset, i));
    }
    let end = master.inner().store.max_phy_offset();
    for (i, b) in brokers.iter().enumerate() {
        let b = b.as_ref().expect("broker");
        if i == m {
            continue;
        }
        let store = &b.inner().store;
        // An acknowledged send is already on every in-sync replica.
        assert!(
            store.max_phy_offset() >= acked_end(master),
            "slave {i} lags an acked send"
        );
        wait_for("slave caught up", Duration::from_secs(10), || {
            (store.max_phy_offset() == end).then_some(())
        })
        .await;
        same_bytes(master, b, end);
        for q in 0..2 {
            assert_eq!(
                store.get_max_offset_in_queue("Replicated", q),
                master
                    .inner()
                    .store
                    .get_max_offset_in_queue("Replicated", q),
                "slave {i} rebuilt its ConsumeQueue {q}"
            );
        }
        let refused = api
            .send(&b.local_addr().to_string(), &message(0))
            .await
            .expect_err("a slave refuses writes");
        assert!(
            refused
                .to_string()
                .contains(&response_code::SERVICE_NOT_AVAILABLE.to_string())
                || refused.to_string().contains("slave"),
            "{refused}"
        );
    }

    // Slaves copy the master's topics (so that, elected, they serve them).
    for (i, b) in brokers.iter().enumerate() {
        if i != m {
            let b = b.as_ref().expect("broker");
            wait_for("the topic on the slave", Duration::from_secs(10), || {
                b.inner().topics.get("Replicated").map(|_| ())
            })
            .await;
        }
    }

    replication_metrics(&brokers, m).await;

    // The master stops (its heartbeats stop): a slave of the SyncStateSet takes over.
    let old = brokers[m].take().expect("master");
    let old_epoch = old.inner().ha.as_ref().expect("ha").master_epoch();
    old.shutdown().await;
    let stopped = Instant::now();
    let n = wait_for("a new master", Duration::from_secs(30), || {
        master_of(&brokers)
    })
    .await;
    let new_master = brokers[n].as_ref().expect("new master");
    assert!(new_master.inner().ha.as_ref().expect("ha").master_epoch() > old_epoch);
    let new_addr = new_master.local_addr().to_string();
    // Writes resume once the set shrank to the live replicas (min 2 in sync).
    let mut first_ack = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 300;
    while acked.len() < 400 {
        assert!(
            Instant::now() < deadline,
            "the new master never took writes"
        );
        match api.send(&new_addr, &message(i)).await {
            Ok(r) if r.code == response_code::SUCCESS => {
                first_ack.get_or_insert_with(|| stopped.elapsed());
                acked.push((r.queue_id, r.queue_offset, i));
                i += 1;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    eprintln!(
        "failover: first acknowledged send {:?} after the master stopped",
        first_ack
    );
    // The NameServer's route follows: the new master is broker id 0 of the set.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let route = api
            .topic_route(&ns_addr.to_string(), "Replicated")
            .await
            .expect("route");
        let master_in_route = route
            .broker_datas
            .iter()
            .find(|b| b.broker_name == "broker-a")
            .and_then(|b| b.broker_addrs.get(&0).cloned());
        if master_in_route.as_deref() == Some(new_addr.as_str()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "route still shows {master_in_route:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every acknowledged message is readable on the new master, in order.
    assert_acked_present(new_master, acked.iter().copied());

    // The old master restarts: it becomes a slave and converges byte for byte.
    let cfg = config(m);
    let restarted = Broker::start(cfg).await.expect("old master restarts");
    let new_master = brokers[n].as_ref().expect("new master");
    let back = &restarted;
    wait_for("the old master is a slave", Duration::from_secs(10), || {
        (back.inner().ha.as_ref().expect("ha").role() == Role::Slave).then_some(())
    })
    .await;
    let end = new_master.inner().store.max_phy_offset();
    wait_for("the old master caught up", Duration::from_secs(20), || {
        (back.inner().store.max_phy_offset() == end).then_some(())
    })
    .await;
    same_bytes(new_master, back, end);
    wait_for("all three in sync again", Duration::from_secs(20), || {
        (in_sync(new_master) == 3).then_some(())
    })
    .await;
    restarted.shutdown().await;
    for b in brokers.into_iter().flatten() {
        b.shutdown().await;
    }
    ns.shutdown().await;
}

fn acked_end(master: &Broker) -> i64 {
    master.inner().store.confirm_offset()
}

/// A TCP relay that can drop every connection through it and refuse new ones: a network
/// partition of whatever is behind it.
pub(crate) struct Relay {
    pub(crate) addr: SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    pub(crate) async fn start(target: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("relay bind");
        let addr = listener.local_addr().expect("relay addr");
        let (cut, _) = tokio::sync::watch::channel(false);
        let cut_tx = cut.clone();
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                if *cut_tx.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut cut_rx = cut_tx.subscribe();
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut ri, mut wi) = inbound.into_split();
                    let (mut ro, mut wo) = outbound.into_split();
                    tokio::select! {
                        _ = tokio::io::copy(&mut ri, &mut wo) => {}
                        _ = tokio::io::copy(&mut ro, &mut wi) => {}
                        _ = cut_rx.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Relay { addr, cut }
    }

    pub(crate) fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

/// Every broker reaches the controller and the NameServer through its own relay, and is reached
/// (Remoting and HA) through two more; cutting the three isolates it from everything.
pub(crate) struct Isolatable {
    pub(crate) broker: Option<Broker>,
    pub(crate) listen: SocketAddr,
    pub(crate) relays: [Relay; 3],
    pub(crate) cfg: BrokerConfig,
}

/// Three brokers, each reaching the controller and NameServer through its own relay and
/// reached (Remoting, HA) through two more, started.
async fn isolatable_set(dir: &Path, ns_addr: SocketAddr) -> Vec<Isolatable> {
    isolatable_set_with(dir, ns_addr, |_| {}).await
}

/// [`isolatable_set`] with each broker's config tuned by `tune` first.
pub(crate) async fn isolatable_set_with(
    dir: &Path,
    ns_addr: SocketAddr,
    tune: impl Fn(&mut BrokerConfig),
) -> Vec<Isolatable> {
    let mut nodes = Vec::new();
    for i in 0..3 {
        let port = free_port();
        let ha_port = free_port();
        let listen: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let to_ctl = Relay::start(ns_addr).await;
        let to_me = Relay::start(listen).await;
        let to_ha = Relay::start(format!("127.0.0.1:{ha_port}").parse().expect("addr")).await;
        let mut cfg = broker_config(&dir.join(format!("i{i}")), to_ctl.addr, port);
        cfg.ha_port = ha_port;
        cfg.advertised_addr = Some(to_me.addr);
        cfg.ha_advertised_addr = Some(to_ha.addr);
        tune(&mut cfg);
        nodes.push(Isolatable {
            broker: None,
            listen,
            relays: [to_ctl, to_me, to_ha],
            cfg,
        });
    }
    for n in &mut nodes {
        n.broker = Some(Broker::start(n.cfg.clone()).await.expect("broker"));
    }
    nodes
}

/// The first broker that is master with a valid lease.
pub(crate) fn current_master(nodes: &[Isolatable]) -> Option<usize> {
    nodes.iter().position(|n| {
        n.broker.as_ref().is_some_and(|b| {
            let ha = b.inner().ha.as_ref().expect("ha");
            ha.role() == Role::Master && ha.lease_valid()
        })
    })
}

/// Waits for a master with all three replicas in its SyncStateSet, then sends `count`
/// messages to it, each acknowledged: (queue, queue offset, value, master index, when).
async fn settled_master_with_sends(
    nodes: &[Isolatable],
    count: usize,
) -> (usize, Vec<(i32, i64, usize, usize, Instant)>) {
    let m = wait_for("a master", Duration::from_secs(20), || {
        current_master(nodes)
    })
    .await;
    let master = nodes[m].broker.as_ref().expect("master");
    wait_for("3 in sync", Duration::from_secs(20), || {
        (in_sync(master) == 3).then_some(())
    })
    .await;
    let api = api();
    let mut acked = Vec::new();
    for i in 0..count {
        let r = api
            .send(&nodes[m].listen.to_string(), &message(i))
            .await
            .expect("send");
        assert_eq!(r.code, response_code::SUCCESS);
        acked.push((r.queue_id, r.queue_offset, i, m, Instant::now()));
    }
    (m, acked)
}

/// Every acknowledged send (queue, queue offset, value, ...) is on `new`, with its body.
/// Every acknowledged `(queue, offset, message number)` is on `new` with its own body.
fn assert_acked_present(new: &Broker, acked: impl IntoIterator<Item = (i32, i64, usize)>) {
    for (q, off, i) in acked {
        let phy = new
            .inner()
            .store
            .get_commit_log_offset_in_queue("Replicated", q, off)
            .unwrap_or_else(|| panic!("acked message {i} at {q}/{off} missing on the new master"));
        let msg = new
            .inner()
            .store
            .look_message_by_offset(phy)
            .expect("decodable");
        assert!(
            msg.message
                .body
                .starts_with(format!("message-{i}-").as_bytes()),
            "acked message {i} replaced"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn isolated_master_stops_acking_and_heals_without_divergence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = namesrv(dir.path()).await;
    let ns_addr = ns.local_addr();
    let nodes = isolatable_set(dir.path(), ns_addr).await;
    let (m, mut acked) = settled_master_with_sends(&nodes, 100).await;
    let api = api();

    // Isolate the master. A client on its side of the partition keeps sending to it directly.
    for r in &nodes[m].relays {
        r.set_cut(true);
    }
    let cut_at = Instant::now();
    let mut old_last_ack = None;
    let mut i = 100;
    let mut new_master = None;
    let mut new_first_ack: Option<Instant> = None;
    while new_first_ack.is_none() || cut_at.elapsed() < Duration::from_secs(6) {
        assert!(
            cut_at.elapsed() < Duration::from_secs(30),
            "no new master took writes"
        );
        if let Ok(r) = api.send(&nodes[m].listen.to_string(), &message(i)).await {
            if r.code == response_code::SUCCESS {
                old_last_ack = Some(cut_at.elapsed());
                acked.push((r.queue_id, r.queue_offset, i, m, Instant::now()));
            }
        }
        i += 1;
        if new_master.is_none() {
            new_master = (0..3).filter(|j| *j != m).find(|j| {
                let ha = nodes[*j]
                    .broker
                    .as_ref()
                    .expect("b")
                    .inner()
                    .ha
                    .clone()
                    .expect("ha");
                ha.role() == Role::Master && ha.lease_valid()
            });
        }
        if let Some(n) = new_master {
            if let Ok(r) = api.send(&nodes[n].listen.to_string(), &message(i)).await {
                if r.code == response_code::SUCCESS {
                    new_first_ack.get_or_insert_with(Instant::now);
                    acked.push((r.queue_id, r.queue_offset, i, n, Instant::now()));
                }
            }
            i += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let n = new_master.expect("new master");
    let old_ha = nodes[m]
        .broker
        .as_ref()
        .expect("old")
        .inner()
        .ha
        .clone()
        .expect("ha");
    // The old master stopped acknowledging within its lease (3/4 of the 2 s heartbeat timeout,
    // plus a heartbeat interval), and before the new master acknowledged anything.
    let stopped = old_last_ack.unwrap_or_default();
    eprintln!("isolation: old master acked after the cut: {old_last_ack:?}");
    assert!(
        stopped < Duration::from_millis(2500),
        "the isolated master acked {stopped:?} after the cut"
    );
    let first_new = new_first_ack.expect("new ack") - cut_at;
    assert!(stopped < first_new, "two masters acknowledged in overlapping time: old until {stopped:?}, new from {first_new:?}");
    assert!(!old_ha.lease_valid());
    eprintln!("isolation: old master's last ack {stopped:?} after the cut, new master's first {first_new:?}");

    // Heal: the old master learns the new epoch, becomes a slave, drops what it alone wrote.
    for r in &nodes[m].relays {
        r.set_cut(false);
    }
    let old = nodes[m].broker.as_ref().expect("old");
    wait_for(
        "the old master became a slave",
        Duration::from_secs(20),
        || (old.inner().ha.as_ref().expect("ha").role() == Role::Slave).then_some(()),
    )
    .await;
    let new = nodes[n].broker.as_ref().expect("new");
    let end = new.inner().store.max_phy_offset();
    wait_for("the old master converged", Duration::from_secs(20), || {
        (old.inner().store.max_phy_offset() == end).then_some(())
    })
    .await;
    same_bytes(new, old, end);
    assert_acked_present(new, acked.iter().map(|(q, off, i, _, _)| (*q, *off, *i)));
    for node in nodes {
        if let Some(b) = node.broker {
            b.shutdown().await;
        }
    }
    ns.shutdown().await;
}

fn pop_request(group: &str, invisible_ms: i64) -> rocketraft_remoting::RemotingCommand {
    rocketraft_remoting::RemotingCommand::request(
        rocketraft_remoting::codes::request_code::POP_MESSAGE,
    )
    .with_ext("consumerGroup", group)
    .with_ext("topic", "Replicated")
    .with_ext("queueId", -1)
    .with_ext("maxMsgNums", 32)
    .with_ext("invisibleTime", invisible_ms)
    .with_ext("pollTime", 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pop_state_survives_a_failover() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = namesrv(dir.path()).await;
    let ns_addr = ns.local_addr();
    let mut brokers: Vec<Option<Broker>> = Vec::new();
    for i in 0..3 {
        let cfg = broker_config(&dir.path().join(format!("p{i}")), ns_addr, free_port());
        brokers.push(Some(Broker::start(cfg).await.expect("broker")));
    }
    let m = wait_for("a master", Duration::from_secs(20), || master_of(&brokers)).await;
    let master = brokers[m].as_ref().expect("master");
    wait_for("3 in sync", Duration::from_secs(20), || {
        (in_sync(master) == 3).then_some(())
    })
    .await;
    let api = api();
    let addr = master.local_addr().to_string();
    for i in 0..20 {
        let r = api.send(&addr, &message(i)).await.expect("send");
        assert_eq!(r.code, response_code::SUCCESS);
    }
    let client = RemotingClient::new(ClientConfig::default());
    let r = client
        .invoke(&addr, pop_request("pg", 3000), Duration::from_secs(5))
        .await
        .expect("pop");
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    let popped = rocketraft_common::message::decode_messages(&r.body).expect("body");
    assert!(!popped.is_empty());
    // Ack half of what was popped, then the master dies with the rest in flight.
    let (acked, pending) = popped.split_at(popped.len() / 2);
    for msg in acked {
        let ack = rocketraft_remoting::RemotingCommand::request(
            rocketraft_remoting::codes::request_code::ACK_MESSAGE,
        )
        .with_ext("consumerGroup", "pg")
        .with_ext("topic", "Replicated")
        .with_ext("queueId", msg.queue_id)
        .with_ext(
            "extraInfo",
            msg.message
                .property(rocketraft_common::consts::property::POP_CK)
                .expect("handle"),
        )
        .with_ext("offset", msg.queue_offset);
        let r = client
            .invoke(&addr, ack, Duration::from_secs(5))
            .await
            .expect("ack");
        assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    }
    brokers[m].take().expect("master").shutdown().await;
    let n = wait_for("a new master", Duration::from_secs(30), || {
        master_of(&brokers)
    })
    .await;
    let new_addr = brokers[n].as_ref().expect("new").local_addr().to_string();
    // A receipt handle from the old master works on the new one (the checkpoints were
    // replicated): ack the first pending message there.
    let (late, pending) = pending.split_first().expect("a pending message");
    let late_ack = rocketraft_remoting::RemotingCommand::request(
        rocketraft_remoting::codes::request_code::ACK_MESSAGE,
    )
    .with_ext("consumerGroup", "pg")
    .with_ext("topic", "Replicated")
    .with_ext("queueId", late.queue_id)
    .with_ext(
        "extraInfo",
        late.message
            .property(rocketraft_common::consts::property::POP_CK)
            .expect("handle"),
    )
    .with_ext("offset", late.queue_offset);
    let r = loop {
        let r = client
            .invoke(&new_addr, late_ack.clone(), Duration::from_secs(5))
            .await
            .expect("ack on the new master");
        // The new master may still be taking office (lease, SyncStateSet).
        if r.code != response_code::SERVICE_NOT_AVAILABLE && r.code != response_code::SYSTEM_ERROR {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    // Everything else not acknowledged comes back from the new master (the popped-but-unacked
    // ones after their invisible time, the never-popped ones at once); nothing acknowledged
    // does.
    let acked_bodies: BTreeSet<String> = acked
        .iter()
        .chain(std::iter::once(late))
        .map(|m| String::from_utf8_lossy(&m.message.body).to_string())
        .collect();
    let pending_bodies: BTreeSet<String> = pending
        .iter()
        .map(|m| String::from_utf8_lossy(&m.message.body).to_string())
        .collect();
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pending_bodies.is_subset(&seen) || seen.len() < 20 - acked_bodies.len() {
        assert!(
            Instant::now() < deadline,
            "missing after failover: {:?}",
            pending_bodies.difference(&seen).collect::<Vec<_>>()
        );
        if let Ok(r) = client
            .invoke(&new_addr, pop_request("pg", 60_000), Duration::from_secs(5))
            .await
        {
            if r.code != response_code::SUCCESS && r.code != response_code::PULL_NOT_FOUND {
                eprintln!("pop on the new master: {} {:?}", r.code, r.remark);
            }
            if r.code == response_code::SUCCESS {
                for msg in rocketraft_common::message::decode_messages(&r.body).expect("body") {
                    let b = String::from_utf8_lossy(&msg.message.body).to_string();
                    assert!(
                        !acked_bodies.contains(&b),
                        "an acknowledged message came back: {b}"
                    );
                    seen.insert(b);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for b in brokers.into_iter().flatten() {
        b.shutdown().await;
    }
    ns.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timers_survive_a_failover() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = namesrv(dir.path()).await;
    let ns_addr = ns.local_addr();
    let mut brokers: Vec<Option<Broker>> = Vec::new();
    for i in 0..3 {
        let cfg = broker_config(&dir.path().join(format!("t{i}")), ns_addr, free_port());
        brokers.push(Some(Broker::start(cfg).await.expect("broker")));
    }
    let m = wait_for("a master", Duration::from_secs(20), || master_of(&brokers)).await;
    let master = brokers[m].as_ref().expect("master");
    wait_for("3 in sync", Duration::from_secs(20), || {
        (in_sync(master) == 3).then_some(())
    })
    .await;
    let api = api();
    let addr = master.local_addr().to_string();
    // The topic exists everywhere before the timers are set.
    let r = api.send(&addr, &message(0)).await.expect("send");
    assert_eq!(r.code, response_code::SUCCESS);
    for i in 1..=5 {
        let mut msg = message(i);
        msg.properties.insert(
            rocketraft_common::consts::property::TIMER_DELAY_MS.to_string(),
            "3000".to_string(),
        );
        let r = api.send(&addr, &msg).await.expect("delayed send");
        assert_eq!(r.code, response_code::SUCCESS);
    }
    let sent = Instant::now();
    brokers[m].take().expect("master").shutdown().await;
    let n = wait_for("a new master", Duration::from_secs(30), || {
        master_of(&brokers)
    })
    .await;
    let new_master = brokers[n].as_ref().expect("new master");
    let store = new_master.inner().store.clone();
    let delivered = |i: usize| {
        (0..2).any(|q| {
            (0..store.get_max_offset_in_queue("Replicated", q)).any(|o| {
                store
                    .get_commit_log_offset_in_queue("Replicated", q, o)
                    .and_then(|phy| store.look_message_by_offset(phy))
                    .is_some_and(|m| {
                        m.message
                            .body
                            .starts_with(format!("message-{i}-").as_bytes())
                    })
            })
        })
    };
    wait_for(
        "the delayed messages on the new master",
        Duration::from_secs(30),
        || (1..=5).all(delivered).then_some(()),
    )
    .await;
    assert!(
        sent.elapsed() >= Duration::from_millis(2900),
        "delivered before their time"
    );
    for b in brokers.into_iter().flatten() {
        b.shutdown().await;
    }
    ns.shutdown().await;
}

/// The route-aware election end to end: every broker reaches the NameServer through its own
/// relay and the controller directly. The slave the heartbeat order would elect (the lower id;
/// both hold the same log) loses its NameServer relay, as in a partition that cuts it from the
/// NameServer but not from the controller leader; when the master dies, the controller elects
/// the other slave, the one clients can find.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_elects_the_slave_the_name_server_reaches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = namesrv(dir.path()).await;
    let ns_addr = ns.local_addr();
    let controller = ns.controller().expect("embedded controller").clone();
    let mut to_ns = Vec::new();
    let mut brokers: Vec<Option<Broker>> = Vec::new();
    for i in 0..3 {
        let relay = Relay::start(ns_addr).await;
        let mut cfg = broker_config(&dir.path().join(format!("r{i}")), ns_addr, free_port());
        cfg.namesrv_addr = relay.addr.to_string();
        brokers.push(Some(Broker::start(cfg).await.expect("broker")));
        to_ns.push(relay);
    }
    let id_of = |b: &Broker| {
        b.inner()
            .replicas
            .as_ref()
            .expect("controller mode")
            .broker_id()
    };
    let reach = |b: &Broker| {
        controller
            .live_brokers()
            .iter()
            .find(|(_, id, _)| *id == id_of(b))
            .and_then(|(_, _, info)| info.name_servers_reached)
    };
    let m = wait_for("a master", Duration::from_secs(20), || master_of(&brokers)).await;
    let master = brokers[m].as_ref().expect("master");
    wait_for("3 in sync", Duration::from_secs(20), || {
        (in_sync(master) == 3).then_some(())
    })
    .await;
    let mut slaves: Vec<usize> = (0..3).filter(|i| *i != m).collect();
    slaves.sort_by_key(|i| id_of(brokers[*i].as_ref().expect("slave")));
    let (favoured, other) = (slaves[0], slaves[1]);
    for b in brokers.iter().flatten() {
        wait_for(
            "every broker reports reaching the NameServer",
            Duration::from_secs(10),
            || (reach(b) == Some(1)).then_some(()),
        )
        .await;
    }

    to_ns[favoured].set_cut(true);
    let cut = brokers[favoured].as_ref().expect("slave");
    wait_for(
        "the cut slave reports reaching no NameServer",
        Duration::from_secs(10),
        || (reach(cut) == Some(0)).then_some(()),
    )
    .await;
    wait_for(
        "both slaves hold the master's whole log",
        Duration::from_secs(10),
        || {
            let end = brokers[m]
                .as_ref()
                .expect("master")
                .inner()
                .store
                .max_phy_offset();
            slaves
                .iter()
                .all(|s| {
                    brokers[*s]
                        .as_ref()
                        .expect("slave")
                        .inner()
                        .store
                        .max_phy_offset()
                        == end
                })
                .then_some(())
        },
    )
    .await;
    brokers[m].take().expect("master").shutdown().await;
    let n = wait_for("a new master", Duration::from_secs(30), || {
        master_of(&brokers)
    })
    .await;
    assert_eq!(
        n, other,
        "the controller elected the slave the NameServer cannot reach"
    );

    // The heal: the slave reports the NameServer reached again.
    to_ns[favoured].set_cut(false);
    let healed = brokers[favoured].as_ref().expect("slave");
    wait_for(
        "the healed slave reaches the NameServer",
        Duration::from_secs(10),
        || (reach(healed) == Some(1)).then_some(()),
    )
    .await;
    for b in brokers.into_iter().flatten() {
        b.shutdown().await;
    }
    ns.shutdown().await;
}

/// Issue 22: a master cut off from both slaves (its HA port unreachable) but not from the
/// controller leader, with `min_in_sync_replicas = 2`, can acknowledge nothing. It keeps its
/// slaves in the SyncStateSet and says so in its heartbeats; the controller deposes it and
/// elects a slave, which gathers the other one and acknowledges again while the cut lasts.
/// Nothing acknowledged before is lost, and the old master follows the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_cut_off_from_both_slaves_is_deposed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = namesrv(dir.path()).await;
    let nodes = isolatable_set(dir.path(), ns.local_addr()).await;
    let (m, mut acked) = settled_master_with_sends(&nodes, 50).await;
    let api = api();

    // Cut the master's HA port: both slaves lose it, the controller still hears it.
    nodes[m].relays[2].set_cut(true);
    let cut_at = Instant::now();
    let mut i = 50;
    let n = loop {
        if let Some(n) = (0..3).filter(|j| *j != m).find(|j| {
            let ha = nodes[*j]
                .broker
                .as_ref()
                .expect("b")
                .inner()
                .ha
                .clone()
                .expect("ha");
            ha.role() == Role::Master && ha.lease_valid()
        }) {
            let r = api.send(&nodes[n].listen.to_string(), &message(i)).await;
            i += 1;
            if let Ok(r) = r {
                if r.code == response_code::SUCCESS {
                    acked.push((r.queue_id, r.queue_offset, i - 1, n, Instant::now()));
                    eprintln!(
                        "deposed: first ack of the new master {:?} after the cut",
                        cut_at.elapsed()
                    );
                    break n;
                }
            }
        }
        assert!(
            cut_at.elapsed() < Duration::from_secs(30),
            "no slave took over the writes of a master cut off from both slaves"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let new = nodes[n].broker.as_ref().expect("new");
    let new_ha = new.inner().ha.clone().expect("ha");
    assert!(
        new_ha.snapshot().sync_state_set.len() >= 2,
        "acknowledged below min_in_sync_replicas"
    );
    let old = nodes[m].broker.as_ref().expect("old");
    wait_for(
        "the deposed master became a slave",
        Duration::from_secs(20),
        || (old.inner().ha.as_ref().expect("ha").role() == Role::Slave).then_some(()),
    )
    .await;
    // It can still reach the new master's HA port: it follows it.
    let end = new.inner().store.max_phy_offset();
    wait_for("the old master converged", Duration::from_secs(20), || {
        (old.inner().store.max_phy_offset() >= end).then_some(())
    })
    .await;
    same_bytes(new, old, end);
    assert_acked_present(new, acked.iter().map(|(q, off, i, _, _)| (*q, *off, *i)));
    for node in nodes {
        if let Some(b) = node.broker {
            b.shutdown().await;
        }
    }
    ns.shutdown().await;
}

/// Issue 22: a master cut off from the controllers (and so from any news of the election) but
/// not from its slaves learns the new master from the new master itself, which tells the master
/// it followed, and follows it while the cut lasts instead of at the heal.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_cut_off_from_the_controllers_learns_the_new_master_from_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The controller's own notification would reach the old master here (the relay cuts only
    // the old master's way to the controller); in a partition it does not.
    let ns = namesrv_with(dir.path(), |c| c.notify_broker_role_changed = false).await;
    let nodes = isolatable_set(dir.path(), ns.local_addr()).await;
    let (m, _) = settled_master_with_sends(&nodes, 0).await;
    // Only its way to the controller (and NameServer) is cut.
    nodes[m].relays[0].set_cut(true);
    let n = wait_for("a new master", Duration::from_secs(20), || {
        (0..3).filter(|j| *j != m).find(|j| {
            let ha = nodes[*j]
                .broker
                .as_ref()
                .expect("b")
                .inner()
                .ha
                .clone()
                .expect("ha");
            ha.role() == Role::Master && ha.lease_valid()
        })
    })
    .await;
    let old = nodes[m]
        .broker
        .as_ref()
        .expect("old")
        .inner()
        .ha
        .clone()
        .expect("ha");
    let new = nodes[n]
        .broker
        .as_ref()
        .expect("new")
        .inner()
        .ha
        .clone()
        .expect("ha");
    wait_for(
        "the old master, still cut off from the controller, follows the new one",
        Duration::from_secs(10),
        || (old.role() == Role::Slave && old.master_epoch() == new.master_epoch()).then_some(()),
    )
    .await;
    for node in nodes {
        if let Some(b) = node.broker {
            b.shutdown().await;
        }
    }
    ns.shutdown().await;
}
