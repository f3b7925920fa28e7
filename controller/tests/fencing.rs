//! Issue 13, holes 2a and 2b, against three real controllers (a Raft quorum, in-process on
//! loopback ports, every timing key at its default) and brokers played by a Remoting client.
//!
//! - 2a: a controller leadership flip L1 -> L2 -> L1 gives L1 a new tenure, so it elects a new
//!   master only a full heartbeat timeout after it leads again, however short the flip. At
//!   83a2c1c `leader_since` was reset only by a periodic scan (every 5 s) while a follower, so
//!   L1 elected as soon as the master's heartbeat timed out, while the master could still hold
//!   a lease that L2 had confirmed.
//! - 2b: an ElectMaster that reaches a follower is decided with the live-broker view of the
//!   leader that proposes it. At 83a2c1c the follower's own table went into the entry: a
//!   follower that had heard no heartbeats deposed a live master.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocketraft_controller::client::ControllerClient;
use rocketraft_controller::heartbeat::Heartbeat;
use rocketraft_controller::{tenure_needed, BrokerLiveInfo, Controller, ControllerConfig};
use rocketraft_raft::AdminRequest;
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{ClientConfig, RemotingClient};

const CLUSTER: &str = "DefaultCluster";
const SET: &str = "broker-a";
/// The heartbeat timeout the brokers announce: shorter than the controllers' 3 s, so a master
/// that stops heartbeating is dead long before a fresh leader may elect.
const BROKER_TIMEOUT_MS: u64 = 1000;

fn free_port() -> u16 {
    rocketraft_common::net::free_loopback_port().expect("a free loopback port")
}

fn client() -> ControllerClient {
    ControllerClient::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(10),
    )
}

async fn controllers(dir: &std::path::Path) -> Vec<Arc<Controller>> {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let members: BTreeMap<u64, String> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| (i as u64 + 1, format!("127.0.0.1:{p}")))
        .collect();
    let remoting: BTreeMap<u64, String> = (1..=3)
        .map(|id| (id, format!("127.0.0.1:{}", free_port())))
        .collect();
    let mut out = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let mut c = ControllerConfig::default();
        c.raft.node_id = i as u64 + 1;
        c.raft.listen = format!("127.0.0.1:{port}").parse().expect("addr");
        c.raft.data_dir = dir.join(format!("c{}", i + 1));
        c.raft.initial_members = members.clone();
        c.listen = remoting[&c.raft.node_id].parse().expect("addr");
        c.remoting_peers = remoting.clone();
        let controller = Controller::start(c).await.expect("controller starts");
        controller
            .serve_remoting()
            .await
            .expect("controller serves");
        out.push(controller);
    }
    out
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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn broker_addr(id: i64) -> String {
    // Nobody listens there: role-change notifications simply fail.
    format!("127.0.0.1:{}", 31000 + id)
}

fn heartbeat_of(id: i64, info: BrokerLiveInfo) -> Heartbeat {
    Heartbeat {
        cluster: CLUSTER.into(),
        broker_name: SET.into(),
        broker_id: id,
        broker_addr: broker_addr(id),
        timeout_ms: BROKER_TIMEOUT_MS,
        info,
    }
}

/// What every broker reports unless a test says otherwise.
fn plain() -> BrokerLiveInfo {
    BrokerLiveInfo::new(1, 100, 0)
}

/// Brokers that heartbeat the given controllers every 100 ms while their flag is set.
struct Beats {
    flags: Vec<(i64, Arc<AtomicBool>)>,
    task: tokio::task::JoinHandle<()>,
}

impl Beats {
    fn start(ids: &[i64], to: Vec<String>) -> Beats {
        let brokers: Vec<(i64, BrokerLiveInfo)> = ids.iter().map(|id| (*id, plain())).collect();
        Beats::reporting(&brokers, to)
    }

    /// Brokers that report the given heartbeat fields.
    fn reporting(brokers: &[(i64, BrokerLiveInfo)], to: Vec<String>) -> Beats {
        let flags: Vec<(i64, Arc<AtomicBool>)> = brokers
            .iter()
            .map(|(id, _)| (*id, Arc::new(AtomicBool::new(true))))
            .collect();
        let beating: Vec<(Arc<AtomicBool>, Heartbeat)> = brokers
            .iter()
            .zip(&flags)
            .map(|((id, info), (_, on))| (on.clone(), heartbeat_of(*id, *info)))
            .collect();
        let task = tokio::spawn(async move {
            let c = client();
            loop {
                for (on, heartbeat) in &beating {
                    if on.load(Ordering::SeqCst) {
                        for addr in &to {
                            let _ = c.heartbeat(addr, heartbeat).await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Beats { flags, task }
    }

    fn stop(&self, id: i64) {
        for (i, on) in &self.flags {
            if *i == id {
                on.store(false, Ordering::SeqCst);
            }
        }
    }
}

impl Drop for Beats {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The brokers get their ids and register (through `addr`, forwarded to the leader).
async fn register(c: &ControllerClient, addr: &str, ids: &[i64]) {
    for &id in ids {
        c.apply_broker_id(addr, CLUSTER, SET, id, &format!("{};{id}", broker_addr(id)))
            .await
            .expect("apply id");
        c.register_broker(addr, CLUSTER, SET, id, &broker_addr(id))
            .await
            .expect("register");
    }
}

/// Three controllers, brokers `ids` heartbeating all of them, broker 1 elected master (epoch 1)
/// with every broker in its SyncStateSet.
struct MasterOne {
    _dir: rocketraft_common::testing::ScratchDir,
    ctls: Vec<Arc<Controller>>,
    leader: usize,
    addrs: Vec<String>,
    c: ControllerClient,
    everyone: Beats,
}

impl MasterOne {
    async fn start(ids: &[i64]) -> MasterOne {
        let dir = rocketraft_common::testing::ScratchDir::new("raft").expect("a scratch dir");
        let ctls = controllers(dir.path()).await;
        let leader = wait_for("a controller leader", Duration::from_secs(15), || {
            leader_index(&ctls)
        })
        .await;
        let addrs: Vec<String> = ctls.iter().map(|c| c.remoting_addr()).collect();
        let c = client();
        let everyone = Beats::start(ids, addrs.clone());
        register(&c, &addrs[leader], ids).await;
        let r = c
            .elect_master(&addrs[leader], CLUSTER, SET, Some(1), false)
            .await
            .expect("first election");
        assert_eq!((r.master_broker_id, r.master_epoch), (Some(1), 1));
        let all: BTreeSet<i64> = ids.iter().copied().collect();
        c.alter_sync_state_set(&addrs[leader], SET, 1, 1, &all, 1)
            .await
            .expect("every broker in sync");
        MasterOne {
            _dir: dir,
            ctls,
            leader,
            addrs,
            c,
            everyone,
        }
    }

    async fn shutdown(self) {
        drop(self.everyone);
        shutdown(self.ctls).await;
    }
}

async fn shutdown(ctls: Vec<Arc<Controller>>) {
    for c in ctls {
        c.shutdown().await;
    }
}

async fn transfer(ctls: &[Arc<Controller>], from: usize, to: usize) {
    let target = ctls[to].raft().id();
    ctls[from]
        .raft()
        .admin(AdminRequest::TransferLeader { to: target })
        .await
        .expect("leadership transfer");
    wait_for(
        "the transfer target to lead",
        Duration::from_secs(10),
        || ctls[to].raft().is_leader().then_some(()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leadership_flip_restarts_the_tenure_before_an_election() {
    let set = MasterOne::start(&[1, 2]).await;
    let (ctls, addrs, c, beats) = (&set.ctls, &set.addrs, &set.c, &set.everyone);
    let l1 = set.leader;
    let l2 = (l1 + 1) % 3;
    let first_term = ctls[l1].tenure().expect("l1 leads").term;

    // L1 -> L2; the master dies while L2 leads (L2 has not led long enough to elect); L2 -> L1.
    transfer(ctls, l1, l2).await;
    beats.stop(1);
    let flip_back = rocketraft_common::time::mono_ms();
    transfer(ctls, l2, l1).await;
    let back = rocketraft_common::time::mono_ms();
    let tenure = ctls[l1].tenure().expect("l1 leads again");
    assert!(
        tenure.term > first_term,
        "a new term: {} after {first_term}",
        tenure.term
    );
    assert!(
        tenure.since_ms >= flip_back,
        "the tenure restarted with the flip: since {} ms, flip back began at {flip_back} ms",
        tenure.since_ms
    );

    // Broker 1's heartbeat timed out (1 s) long before L1 may elect (3 s in office).
    let deadline = Instant::now() + Duration::from_secs(20);
    let elected = loop {
        let master = c
            .get_replica_info(&addrs[l1], SET)
            .await
            .ok()
            .and_then(|i| i.master_broker_id);
        if master == Some(2) {
            break rocketraft_common::time::mono_ms();
        }
        assert!(Instant::now() < deadline, "broker 2 was never elected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let waited = elected.saturating_sub(tenure.since_ms);
    let needed = tenure_needed(ControllerConfig::default().heartbeat_timeout_ms);
    println!(
        "flip-flop: broker 2 elected {waited} ms into L1's new tenure (needed {needed} ms; L1 led again {} ms after the flip back began)",
        back - flip_back
    );
    assert!(
        waited >= needed,
        "L1 elected {waited} ms after it led again, before its {needed} ms tenure"
    );
    set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_election_through_a_follower_uses_the_leaders_view() {
    let dir = rocketraft_common::testing::ScratchDir::new("raft").expect("a scratch dir");
    let ctls = controllers(dir.path()).await;
    let leader = wait_for("a controller leader", Duration::from_secs(15), || {
        leader_index(&ctls)
    })
    .await;
    let follower = (leader + 1) % 3;
    let addrs: Vec<String> = ctls.iter().map(|c| c.remoting_addr()).collect();
    let c = client();
    // Both brokers heartbeat the leader only: the follower has never heard of them alive.
    let beats = Beats::start(&[1, 2], vec![addrs[leader].clone()]);
    register(&c, &addrs[leader], &[1, 2]).await;
    let r = c
        .elect_master(&addrs[leader], CLUSTER, SET, Some(1), false)
        .await
        .expect("first election");
    assert_eq!((r.master_broker_id, r.master_epoch), (Some(1), 1));
    c.alter_sync_state_set(&addrs[leader], SET, 1, 1, &BTreeSet::from([1, 2]), 1)
        .await
        .expect("both in sync");

    // Broker 2 asks the follower for an election while master 1 is alive (to the leader).
    let r = c
        .elect_master(&addrs[follower], CLUSTER, SET, Some(2), false)
        .await
        .expect("an answer");
    assert_eq!(
        (r.code, r.master_broker_id, r.master_epoch),
        (response_code::CONTROLLER_MASTER_STILL_EXIST, Some(1), 1),
        "the leader's view (master 1 alive) decides, not the follower's empty table"
    );
    let info = c
        .get_replica_info(&addrs[follower], SET)
        .await
        .expect("replica info");
    assert_eq!((info.master_broker_id, info.master_epoch), (Some(1), 1));
    // The follower's own applied copy (`readLocal`, what a broker cut off from the leader
    // reads) names the same master once it applied the election.
    let mut local = None;
    for _ in 0..50 {
        if let Ok(i) = c
            .get_replica_info_local(&addrs[follower], SET, Duration::from_secs(1))
            .await
        {
            if i.master_broker_id == Some(1) {
                local = Some(i);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let local = local.expect("the follower's copy names master 1");
    assert_eq!(local.master_epoch, 1);
    assert_eq!(local.sync_state_set, BTreeSet::from([1, 2]));

    // Once master 1 is dead to the leader too, the same request through the follower elects 2
    // (alive to the leader, never heard of by the follower), unless the leader's own scan
    // elected it first.
    beats.stop(1);
    tokio::time::sleep(Duration::from_millis(BROKER_TIMEOUT_MS + 300)).await;
    let r = c
        .elect_master(&addrs[follower], CLUSTER, SET, Some(2), false)
        .await
        .expect("an answer");
    assert!(
        r.master_broker_id == Some(2)
            && (r.code == response_code::SUCCESS
                || r.code == response_code::CONTROLLER_MASTER_STILL_EXIST),
        "broker 2 is alive in the leader's view: {r:?}"
    );
    drop(beats);
    shutdown(ctls).await;
}

/// Issue 22: a leader that stops hearing the master while another controller still hears it
/// (a majority ring: the master is cut off from the leader only) hands leadership to that
/// controller instead of electing another replica; the new leader confirms the master, which
/// stays master in the same epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_that_loses_the_master_hands_over_to_a_controller_that_hears_it() {
    let set = MasterOne::start(&[1, 2]).await;
    let (ctls, addrs, c, everyone) = (&set.ctls, &set.addrs, &set.c, &set.everyone);
    let hearing = (set.leader + 1) % 3;
    // Wait out the leader's tenure, so it would elect as soon as the master times out.
    tokio::time::sleep(Duration::from_millis(tenure_needed(3000))).await;

    // The master now reaches only `hearing`; broker 2 still reaches everyone.
    everyone.stop(1);
    let to_one = Beats::start(&[1], vec![addrs[hearing].clone()]);
    wait_for(
        "leadership handed to the controller that hears the master",
        Duration::from_secs(15),
        || ctls[hearing].raft().is_leader().then_some(()),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2 * BROKER_TIMEOUT_MS)).await;
    let info = c
        .get_replica_info(&addrs[hearing], SET)
        .await
        .expect("replica info");
    assert_eq!(
        (info.master_broker_id, info.master_epoch),
        (Some(1), 1),
        "the master a controller still hears was replaced"
    );
    drop(to_one);
    set.shutdown().await;
}

/// Issue 22, seed 11's first majority ring: the leader hears the master, which cannot gather
/// `minInSyncReplicas`, and one slave that reaches no NameServer; another controller, which
/// does not hear the master at all, hears the slave clients could use. The leader hands
/// leadership to that controller, which deposes the master (the old leader still hears it
/// stuck) in favour of that slave, without waiting out a tenure.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stuck_master_is_replaced_where_a_usable_slave_is_heard() {
    let set = MasterOne::start(&[1, 2, 3]).await;
    let (ctls, addrs, c, everyone) = (&set.ctls, &set.addrs, &set.c, &set.everyone);
    let (leader, hearing) = (set.leader, (set.leader + 1) % 3);

    // First slave 2 moves to `hearing` only and slave 3 loses its NameServer, long enough for
    // the leader to have no usable replacement of its own; the master still works.
    everyone.stop(2);
    everyone.stop(3);
    let slave_two = Beats::reporting(
        &[(2, plain().with_name_servers_reached(1))],
        vec![addrs[hearing].clone()],
    );
    let slave_three = Beats::reporting(
        &[(3, plain().with_name_servers_reached(0))],
        vec![addrs[leader].clone()],
    );
    tokio::time::sleep(Duration::from_millis(BROKER_TIMEOUT_MS)).await;
    assert!(
        ctls[leader].raft().is_leader(),
        "nothing moves while the master works"
    );
    // Then the master is cut off from both slaves: it reaches the leader only, and says so.
    everyone.stop(1);
    let stuck = Beats::reporting(
        &[(1, plain().with_in_sync_unreachable(true))],
        vec![addrs[leader].clone()],
    );
    let started = Instant::now();
    let info = wait_for_master(c, &addrs[hearing], 2, Duration::from_secs(15)).await;
    println!(
        "slave 2 elected {} ms after the master got stuck",
        started.elapsed().as_millis()
    );
    assert_eq!(info.master_epoch, 2, "one election: {info:?}");
    assert!(
        ctls[hearing].raft().is_leader(),
        "leadership went to the controller that hears slave 2"
    );
    drop((slave_two, slave_three, stuck));
    set.shutdown().await;
}

/// Polls `addr` until it names `master`.
async fn wait_for_master(
    c: &ControllerClient,
    addr: &str,
    master: i64,
    limit: Duration,
) -> rocketraft_controller::client::MasterInfo {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(info) = c.get_replica_info(addr, SET).await {
            if info.master_broker_id == Some(master) {
                return info;
            }
        }
        assert!(
            Instant::now() < deadline,
            "broker {master} was never elected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
