//! Issue 22: a controller fault must not stop the data path. Three real controllers (a Raft
//! quorum, in-process on loopback ports) and a broker in controller mode that reaches each
//! controller through its own relay. A relay can *hang* (it keeps the connection and holds the
//! bytes, as a SIGSTOPped process does), so the broker's heartbeats to that controller get no
//! answer. Sends go on all the time; the longest gap between acknowledged sends is measured.
//!
//! Before per-controller heartbeat loops, one heartbeat round waited for every controller (5 s
//! client timeout), so a single hung controller, not even the leader, let the 1.5 s role lease
//! lapse and refused writes for seconds.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use rocketraft_broker::ha::Role;
use rocketraft_broker::store::FlushDiskType;
use rocketraft_broker::{Broker, BrokerConfig};
use rocketraft_controller::{Controller, ControllerConfig};
use rocketraft_nameserver::{NameServer, NamesrvConfig};
use rocketraft_remoting::api::{MqClientApi, SendRequest};
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{ClientConfig, RemotingClient};

#[path = "support/relay.rs"]
mod relay;
use relay::HoldingRelay;

fn free_port() -> u16 {
    rocketraft_common::net::free_loopback_port().expect("a free loopback port")
}

/// The default heartbeat timeout (the controllers' and the broker's), which the test keeps.
const T_MS: u64 = 3000;

async fn controllers(dir: &std::path::Path) -> Vec<Arc<Controller>> {
    let raft_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let members: BTreeMap<u64, String> = raft_ports
        .iter()
        .enumerate()
        .map(|(i, p)| (i as u64 + 1, format!("127.0.0.1:{p}")))
        .collect();
    let mut out = Vec::new();
    for (i, port) in raft_ports.iter().enumerate() {
        let mut c = ControllerConfig::default();
        c.raft.node_id = i as u64 + 1;
        c.raft.listen = format!("127.0.0.1:{port}").parse().expect("addr");
        c.raft.data_dir = dir.join(format!("c{}", i + 1));
        c.raft.initial_members = members.clone();
        // Every timing key at its default (issue 22 asks for no gap with default settings).
        c.listen = "127.0.0.1:0".parse().expect("addr");
        let controller = Controller::start(c).await.expect("controller starts");
        controller
            .serve_remoting()
            .await
            .expect("controller serves");
        out.push(controller);
    }
    out
}

fn broker_config(dir: &std::path::Path, namesrv: SocketAddr, controllers: &str) -> BrokerConfig {
    let mut config = BrokerConfig {
        listen: format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
        namesrv_addr: namesrv.to_string(),
        ha_port: 0,
        enable_controller_mode: true,
        controller_addr: controllers.to_string(),
        sync_controller_metadata_period_ms: 500,
        check_sync_state_set_period_ms: 200,
        min_in_sync_replicas: 1,
        slave_timeout_ms: 3000,
        ..BrokerConfig::default()
    };
    config.store.store_root = dir.to_path_buf();
    config.store.commitlog_segment_size = 1024 * 1024;
    config.store.flush_disk_type = FlushDiskType::AsyncFlush;
    config.store.pretouch = false;
    config
}

/// Sends every 50 ms until stopped; records each acknowledgement's time and each refusal.
struct Sender {
    acks: Arc<Mutex<Vec<Instant>>>,
    refusals: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start_sender(broker: String) -> Sender {
    let acks = Arc::new(Mutex::new(Vec::new()));
    let refusals = Arc::new(Mutex::new(Vec::new()));
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let (a, r) = (acks.clone(), refusals.clone());
    let task = tokio::spawn(async move {
        let api = MqClientApi::new(
            RemotingClient::new(ClientConfig::default()),
            Duration::from_secs(3),
        );
        let mut i = 0usize;
        loop {
            let request = SendRequest {
                producer_group: "pg".to_string(),
                topic: "Faults".to_string(),
                queue_id: 0,
                body: Bytes::from(format!("message-{i}")),
                properties: BTreeMap::new(),
                ..SendRequest::default()
            };
            i += 1;
            match api.send(&broker, &request).await {
                Ok(resp) if resp.code == response_code::SUCCESS => a.lock().push(Instant::now()),
                Ok(resp) => r
                    .lock()
                    .push((Instant::now(), format!("code {}", resp.code))),
                Err(e) => r.lock().push((Instant::now(), e.to_string())),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = stopped.changed() => return,
            }
        }
    });
    Sender {
        acks,
        refusals,
        stop,
        task,
    }
}

impl Sender {
    /// The longest time without an acknowledgement in `[from, to]`.
    fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        let acks = self.acks.lock();
        let mut last = from;
        let mut longest = Duration::ZERO;
        for t in acks.iter().copied().filter(|t| *t >= from && *t <= to) {
            longest = longest.max(t - last);
            last = t;
        }
        longest.max(to.saturating_duration_since(last))
    }

    fn refusals_between(&self, from: Instant, to: Instant) -> Vec<String> {
        self.refusals
            .lock()
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|(_, why)| why.clone())
            .collect()
    }

    async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

fn leader_index(controllers: &[Arc<Controller>]) -> Option<usize> {
    controllers.iter().position(|c| c.raft().is_leader())
}

async fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_flow_through_a_hung_controller_and_a_dead_leader() {
    // Logs (RUST_LOG, off by default) show the lease and the Raft elections when this fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ctls = controllers(dir.path()).await;
    let mut relays = Vec::new();
    for c in &ctls {
        let addr: SocketAddr = c.remoting_addr().parse().expect("controller addr");
        relays.push(HoldingRelay::start(addr).await);
    }
    let ns = NameServer::start(NamesrvConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..NamesrvConfig::default()
    })
    .await
    .expect("namesrv");
    let controller_addr = relays
        .iter()
        .map(|r| r.addr.to_string())
        .collect::<Vec<_>>()
        .join(";");
    let broker = Broker::start(broker_config(
        &dir.path().join("b"),
        ns.local_addr(),
        &controller_addr,
    ))
    .await
    .expect("broker starts");
    wait_for(
        "the broker is master with a lease",
        Duration::from_secs(20),
        || {
            let ha = broker.inner().ha.as_ref().expect("controller mode");
            (ha.role() == Role::Master && ha.lease_valid()).then_some(())
        },
    )
    .await;
    let sender = start_sender(broker.local_addr().to_string());
    wait_for("a first acknowledged send", Duration::from_secs(10), || {
        (!sender.acks.lock().is_empty()).then_some(())
    })
    .await;

    // 1. A follower controller hangs for 2 lease lengths: nothing changes for the data path.
    let leader = wait_for("a controller leader", Duration::from_secs(10), || {
        leader_index(&ctls)
    })
    .await;
    let follower = (leader + 1) % 3;
    let from = Instant::now();
    relays[follower].set_hold(true);
    tokio::time::sleep(Duration::from_millis(2 * T_MS)).await;
    relays[follower].set_hold(false);
    let to = Instant::now();
    let gap = sender.longest_gap(from, to);
    let refused = sender.refusals_between(from, to);
    println!("hung follower controller: longest gap {gap:?}, refusals {refused:?}");
    assert!(
        gap < Duration::from_millis(1000),
        "a hung follower controller stalled writes for {gap:?}: {refused:?}"
    );
    assert!(refused.is_empty(), "sends refused: {refused:?}");

    // 2. The leader controller dies: the remaining two elect a new Raft leader, which confirms
    //    heartbeats before the lease (3/4 of 3 s) runs out.
    let leader = wait_for("a controller leader", Duration::from_secs(10), || {
        leader_index(&ctls)
    })
    .await;
    let from = Instant::now();
    let dead = ctls.remove(leader);
    dead.shutdown().await;
    drop(dead);
    let new_leader = wait_for("a new controller leader", Duration::from_secs(10), || {
        leader_index(&ctls)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(T_MS)).await;
    let to = Instant::now();
    let gap = sender.longest_gap(from, to);
    let refused = sender.refusals_between(from, to);
    println!(
        "dead leader controller (new leader {}): longest gap {gap:?}, refusals {refused:?}",
        ctls[new_leader].raft().id()
    );
    assert!(
        gap < Duration::from_millis(2000),
        "the death of the controller leader stalled writes for {gap:?}: {refused:?}"
    );

    sender.stop().await;
    broker.shutdown().await;
    for c in ctls {
        c.shutdown().await;
    }
    ns.shutdown().await;
}
