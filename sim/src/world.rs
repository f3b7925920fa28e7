//! One simulation run: the controller quorum, its clients and the nemesis, on one seed.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::errors::ClientWriteError;
use openraft::errors::LinearizableReadError;
use openraft::errors::RaftError;
use openraft::raft::ReadPolicy;
use openraft::type_config::async_runtime::WatchReceiver;
use openraft::BasicNode;
use openraft::SnapshotPolicy;
use parking_lot::Mutex;
use rocketraft_controller::handler::AlterSyncStateSetRequest;
use rocketraft_controller::handler::ApplyBrokerIdRequest;
use rocketraft_controller::handler::ElectMasterRequest;
use rocketraft_controller::handler::ElectOutcome;
use rocketraft_controller::handler::GetNextBrokerIdRequest;
use rocketraft_controller::handler::GetReplicaInfoRequest;
use rocketraft_controller::handler::RegisterBrokerRequest;
use rocketraft_controller::heartbeat::Heartbeat;
use rocketraft_controller::heartbeat::HeartbeatTracker;
use rocketraft_controller::replicated::CommandResult;
use rocketraft_controller::service::alive_for_at;
use rocketraft_controller::AliveBrokers;
use rocketraft_controller::BrokerLiveInfo;
use rocketraft_controller::ControllerCommand;
use rocketraft_controller::ControllerQuery;
use rocketraft_controller::ControllerQueryResponse;
use rocketraft_controller::ControllerRequest;
use rocketraft_controller::ControllerResponse;
use rocketraft_controller::ControllerStateMachine;
use rocketraft_controller::DefaultElectPolicy;
use rocketraft_raft::state_machine::SnapshotIo;
use rocketraft_raft::state_machine::StateMachineStore;
use rocketraft_raft::types::Raft;
use rocketraft_raft::types::Reply;
use rocketraft_raft::types::Request;
use rocketraft_raft::NodeId;
use rocketraft_raft::TypeConfig;

use crate::bug::Bug;
use crate::check::Checker;
use crate::check::Floor;
use crate::check::Violation;
use crate::clock::Clocks;
use crate::net::CallError;
use crate::net::Channel;
use crate::net::Endpoint;
use crate::net::LinkConfig;
use crate::net::Net;
use crate::net::NodeHandle;
use crate::net::SimNetworkFactory;
use crate::net::BROKER_BASE;
use crate::net::CLIENT_BASE;
use crate::read_gate::ReadGate;
use crate::replicas::Replicas;
use crate::rng::SimRng;
use crate::store::DurableLog;

type LogId = openraft::alias::LogIdOf<TypeConfig>;

/// What a run simulates.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Controller nodes (3 or 5).
    pub nodes: u64,
    /// Concurrent clients.
    pub clients: u64,
    /// Simulated time under faults.
    pub fault_ms: u64,
    /// Simulated time, after healing everything, within which the quorum must serve again and
    /// every node catch up.
    pub recover_ms: u64,
    /// Whether the nemesis injects faults (off: a calm run, the baseline).
    pub faults: bool,
    /// A deliberate bug, for the checker's self-tests ([`Bug`]); `None` in every real run.
    pub bug: Option<Bug>,
    /// Broker replicas of the set `broker-a` run too ([`crate::replicas`]): real stores and
    /// HA streams, roles from this quorum, a producer, and the message invariants.
    pub replicas: bool,
    /// With replicas: a power loss takes every running replica at once (correlated), not one.
    pub power_loss_all: bool,
    /// With replicas: the stores run ASYNC_FLUSH instead of SYNC_FLUSH (their flusher's
    /// schedule is an hour: nothing is synced in a run but by a checkpoint or a truncation).
    /// For exploring what a power loss then loses; the message invariants assume SYNC_FLUSH.
    pub async_flush: bool,
    /// With replicas: each replica runs the broker's real `ReplicaManager` over the real
    /// controller client, on a simulated transport answered by the controller nodes through
    /// the controller's request handling ([`crate::link`]), instead of the simulation's own
    /// role loop and heartbeats.
    pub controller_link: bool,
    /// With the link: the controllers' real scanner ([`crate::scanner`]) does not run, and the
    /// simulated clients' controller-triggered elections of `broker-a` stand in for it, as
    /// before the scanner ran here (the link's regressions found in that mode replay it).
    pub stand_in_scanner: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            nodes: 3,
            clients: 3,
            fault_ms: 3000,
            recover_ms: 4000,
            faults: true,
            bug: None,
            replicas: false,
            power_loss_all: false,
            async_flush: false,
            controller_link: false,
            stand_in_scanner: false,
        }
    }
}

/// Counters of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub ops_ok: u64,
    pub ops_refused: u64,
    pub ops_unknown: u64,
    pub crashes: u64,
    pub partitions: u64,
    /// Clock steps of a node (forward or back).
    pub clock_steps: u64,
    /// Simulated brokers stopped or started (their heartbeats stop or resume).
    pub broker_faults: u64,
    pub messages: u64,
    pub dropped: u64,
    /// Broker replicas: messages acknowledged to the producer, and replica crashes.
    pub acked_messages: u64,
    pub replica_crashes: u64,
    /// Of those crashes, power losses (each replica counted).
    pub power_losses: u64,
    /// Forward steps of a replica's lease clock.
    pub lease_clock_steps: u64,
    /// The replicas' master cut from every controller (both ways; its slaves still reach it).
    pub replica_isolations: u64,
    /// Files a power loss changed, by file type and kind (`commitlog torn`,
    /// `consumequeue lost`, `other vanished`, ...; see `disk::Loss::kind`).
    pub disk_losses: std::collections::BTreeMap<String, u64>,
    /// Controller link (`--controller-link`): broker heartbeats the nodes answered, and of
    /// those the ones a leader confirmed (`leaderConfirmed`, what renews a master's lease).
    pub link_heartbeats: u64,
    pub link_confirmed: u64,
    /// Controller link: ALTER_SYNC_STATE_SET fences (`check_sync_state_set`) the log took.
    pub link_fences: u64,
    /// Controller link: elections the controllers' scanner wrote that elected a master
    /// (`crate::scanner`), leadership hand-overs it triggered, and brokers whose heartbeats
    /// timed out on a leader's scanner.
    pub scanner_elections: u64,
    pub scanner_hand_overs: u64,
    pub scanner_timeouts: u64,
}

/// The broker sets the clients work on.
const SETS: [&str; 2] = ["broker-a", "broker-b"];
/// Broker ids per set.
const BROKER_IDS: u64 = 3;
/// A client's deadline for one attempt.
const CALL_DEADLINE: Duration = Duration::from_millis(150);
/// Attempts per client operation (the same serial each time: the state machine applies a
/// proposal once).
const ATTEMPTS: u32 = 4;
/// A simulated broker heartbeats every controller node this often (the real default is 1 s
/// against a 3 s timeout; the simulation's time scale is shorter).
const HEARTBEAT_MS: u64 = 20;
/// The heartbeat timeout a simulated broker announces (`heartbeatTimeoutMills`).
const BROKER_TIMEOUT_MS: u64 = 160;
/// Election timeouts are drawn from `ELECTION_MIN_MS..`, at least [`ELECTION_GAP_MS`] apart.
const ELECTION_MIN_MS: u64 = 60;
const ELECTION_GAP_MS: u64 = 10;

/// Shared by the tasks of one run.
pub(crate) struct World {
    pub opts: SimOptions,
    pub net: Net,
    pub check: Mutex<Checker>,
    pub rng: Mutex<SimRng>,
    pub disks: BTreeMap<NodeId, DurableLog>,
    /// Each node's current election timeout (redrawn at every restart).
    pub election_ms: Mutex<BTreeMap<NodeId, u64>>,
    /// Each node's monotonic clock (the clock steps move them).
    pub clocks: Clocks,
    /// The simulated brokers that are stopped (they send no heartbeats).
    pub brokers_down: Mutex<BTreeSet<Endpoint>>,
    pub dir: PathBuf,
    pub stats: Mutex<Stats>,
    /// Set when the fault phase is over: clients stop.
    pub stopping: Mutex<bool>,
    /// The broker replicas, with `--replicas`.
    pub replicas: Option<Replicas>,
    /// The replicas' controller link (`--controller-link`): forwarding channels, serials.
    pub link: crate::link::LinkState,
    /// With the link: each running node process's tenure watch and scanner (`crate::scanner`),
    /// aborted when the process ends.
    pub scanners: Mutex<BTreeMap<NodeId, Vec<tokio::task::JoinHandle<()>>>>,
}

impl World {
    pub fn new(seed: u64, opts: SimOptions, dir: PathBuf) -> Arc<World> {
        let mut rng = SimRng::new(seed);
        let net = Net::new(rng.fork());
        let mut disks = BTreeMap::new();
        let mut election_ms = BTreeMap::new();
        // Distinct fixed election timeouts from the seed: openraft draws each timeout from
        // `min..max` with an unseeded RNG; a range of one value takes that out.
        let mut slots: Vec<u64> = (0..opts.nodes).collect();
        for id in 1..=opts.nodes {
            let slot = slots.remove(rng.pick(slots.len()));
            election_ms.insert(id, ELECTION_MIN_MS + slot * 25 + rng.range(0, 15));
            disks.insert(id, DurableLog::new(rng.fork(), (0, 3), opts.bug));
        }
        // Forked only with replicas: a run without them draws exactly as before.
        let replicas = opts
            .replicas
            .then(|| Replicas::new(rng.fork(), dir.join("replicas"), opts.bug, opts.async_flush));
        Arc::new(World {
            opts,
            net,
            check: Mutex::new(Checker::new()),
            rng: Mutex::new(rng),
            disks,
            election_ms: Mutex::new(election_ms),
            clocks: Clocks::new(),
            brokers_down: Mutex::new(BTreeSet::new()),
            dir,
            stats: Mutex::new(Stats::default()),
            stopping: Mutex::new(false),
            replicas,
            // Derived without drawing from `rng`: a run without the link draws as before.
            link: crate::link::LinkState::new(SimRng::new(seed ^ 0x11c4_c0de_0f11_4c5e)),
            scanners: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn log(&self, line: impl AsRef<str>) {
        self.check.lock().log(line);
    }

    pub(crate) fn fail(&self, kind: Violation, line: impl AsRef<str>) {
        self.check.lock().fail(kind, line);
    }

    fn nodes(&self) -> impl Iterator<Item = NodeId> {
        1..=self.opts.nodes
    }

    fn endpoints(&self) -> BTreeSet<Endpoint> {
        self.nodes()
            .chain((0..self.opts.clients).map(|k| CLIENT_BASE + k))
            .chain(brokers().map(|(endpoint, _, _)| endpoint))
            .collect()
    }

    /// Draws node `id` a new election timeout from the seed, at least [`ELECTION_GAP_MS`] from
    /// every other node's: one value, since openraft draws from `min..max` with an RNG of its
    /// own that no seed reaches.
    fn redraw_election_timeout(&self, id: NodeId) -> u64 {
        let mut rng = self.rng.lock();
        let mut timeouts = self.election_ms.lock();
        let hi = ELECTION_MIN_MS + self.opts.nodes * 25 + 14;
        loop {
            let ms = rng.range(ELECTION_MIN_MS, hi);
            let clear = timeouts
                .iter()
                .all(|(n, other)| *n == id || other.abs_diff(ms) >= ELECTION_GAP_MS);
            if clear {
                timeouts.insert(id, ms);
                return ms;
            }
        }
    }

    /// Starts node `id`'s process on its disk.
    async fn start_node(self: &Arc<Self>, id: NodeId) -> Result<Raft, String> {
        let store = self.disks[&id].open();
        let sm = StateMachineStore::open_app(
            &self.dir.join(format!("n{id}")),
            ControllerStateMachine::new(),
            SnapshotIo::Inline,
        )
        .map_err(|e| format!("n{id} state machine: {e}"))?;
        let election = self.election_ms.lock()[&id];
        let config = openraft::Config {
            cluster_name: "sim".to_string(),
            // A tick of 1 ms (heartbeat * 13 / 64, at least 1): openraft offsets the first tick
            // randomly within one tick period; at 1 ms the paused clock's millisecond timer
            // rounds every offset to the same instant. Every node's tick runs openraft's loop,
            // which in a debug build validates its whole state: a simulated millisecond has a
            // fixed price, so the nemesis and the clients act often (faults every 20-150 ms).
            // The heartbeat is also openraft's RPC timeout: at 8 ms a round trip (1-4 ms each
            // way, a 0-3 ms sync) mostly fits; at 5 ms most appends timed out.
            heartbeat_interval: 8,
            election_timeout_min: election,
            election_timeout_max: election + 1,
            snapshot_policy: SnapshotPolicy::Never,
            // As `RaftNode` (raft/src/node.rs `openraft_config`): a restarted leader stands for
            // election, never resumes its term. With resuming, seed 106 (`--controller-link
            // --fault-ms 3000`) broke log matching: n2 lost unsynced entries it had sent to n3,
            // resumed term 17 and proposed other entries under the same log ids, which n3 kept
            // (`[state-diverged]`, `[two-masters]`).
            enable_leader_restore: Some(false),
            // openraft's default backoff after an unreachable peer is 200 ms, two heartbeats of
            // the real controller's 100 ms; the same two heartbeats here (a restarted node
            // waited up to a simulated second for its leader to try again).
            backoff: "16ms".to_string(),
            ..Default::default()
        }
        .validate()
        .map_err(|e| format!("raft config: {e}"))?;
        let network = SimNetworkFactory {
            net: self.net.clone(),
            node_id: id,
        };
        let raft = Raft::new(id, Arc::new(config), network, store, sm.clone())
            .await
            .map_err(|e| format!("n{id} raft: {e}"))?;
        self.check.lock().node_started(id);
        // The gate's task ends with the process's metrics (its Raft stopped).
        let (reads, _gate_task) = ReadGate::spawn(&raft);
        let handle = NodeHandle {
            raft: raft.clone(),
            sm,
            heartbeats: Arc::new(HeartbeatTracker::new()),
            clock: self.clocks.of(id),
            writes_in_flight: Default::default(),
            reads,
        };
        self.net.set_up(id, handle.clone());
        if self.opts.controller_link && !self.opts.stand_in_scanner {
            let tasks = crate::scanner::spawn(self, id, handle);
            self.scanners.lock().insert(id, tasks);
        }
        Ok(raft)
    }

    /// Kills node `id`'s process: what it had not synced is lost.
    async fn crash(self: &Arc<Self>, id: NodeId) {
        let Some(handle) = self.net.set_down(id) else {
            return;
        };
        self.stop_scanner(id);
        let lost = self.disks[&id].crash();
        self.stats.lock().crashes += 1;
        self.log(format!("n{id} crash ({lost} unsynced entries lost)"));
        // Its storage now refuses everything; stop what is left of its tasks.
        let _ = tokio::time::timeout(Duration::from_secs(5), handle.raft.shutdown()).await;
    }

    /// Ends node `id`'s tenure watch and scanner (its process ended: the memory is lost).
    fn stop_scanner(&self, id: NodeId) {
        for task in self.scanners.lock().remove(&id).unwrap_or_default() {
            task.abort();
        }
    }

    async fn restart(self: &Arc<Self>, id: NodeId) {
        if self.net.handle(id).is_some() {
            return;
        }
        let election = self.redraw_election_timeout(id);
        match self.start_node(id).await {
            Ok(_) => self.log(format!(
                "n{id} restart (synced log up to {:?}, election timeout {election} ms)",
                self.disks[&id].synced_last_index()
            )),
            Err(e) => self.fail(Violation::Harness, format!("n{id} does not restart: {e}")),
        }
    }

    /// Samples every running node's role and applied state into the checker.
    fn sample(&self) {
        for id in self.nodes() {
            let Some(node) = self.net.handle(id) else {
                continue;
            };
            let m = node.raft.metrics().borrow_watched().clone();
            if let Err(fatal) = &m.running_state {
                self.fail(Violation::RaftFatal, format!("n{id} stopped: {fatal}"));
                continue;
            }
            match node
                .sm
                .query_app::<ControllerStateMachine>(&ControllerQuery::State)
            {
                Ok(ControllerQueryResponse::State {
                    state,
                    last_applied,
                }) => self.check.lock().observe(
                    id,
                    m.state,
                    m.current_term,
                    m.last_applied.map(|l| l.index),
                    last_applied,
                    &state,
                    &self.disks[&id],
                ),
                Ok(other) => self.fail(
                    Violation::Harness,
                    format!("n{id}: state query answered {other:?}"),
                ),
                Err(e) => self.fail(
                    Violation::Harness,
                    format!("n{id}: state query failed: {e}"),
                ),
            }
        }
    }

    /// The run: bootstrap, clients and nemesis under faults, healing, recovery check.
    pub async fn run(self: Arc<Self>) -> Stats {
        self.check.lock().restart_clock();
        self.clocks.start();
        let members: BTreeMap<NodeId, BasicNode> = self
            .nodes()
            .map(|id| {
                (
                    id,
                    BasicNode {
                        addr: format!("n{id}"),
                    },
                )
            })
            .collect();
        for id in self.nodes() {
            match self.start_node(id).await {
                Ok(raft) => {
                    if let Err(e) = raft.initialize(members.clone()).await {
                        self.fail(Violation::Harness, format!("n{id} initialize: {e}"));
                    }
                }
                Err(e) => self.fail(Violation::Harness, e),
            }
        }
        self.log(format!(
            "{} nodes up, election timeouts {:?} ms",
            self.opts.nodes,
            self.election_ms.lock().clone()
        ));
        let heartbeats = self.spawn_broker_heartbeats();
        let replica_tasks = self.start_replicas();

        let sampler = {
            let w = self.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    w.sample();
                    if let Some(r) = &w.replicas {
                        r.sample(&w);
                    }
                }
            })
        };
        let mut clients = Vec::new();
        for k in 0..self.opts.clients {
            let w = self.clone();
            let rng = self.rng.lock().fork();
            clients.push(tokio::spawn(
                async move { Client::new(w, k, rng).run().await },
            ));
        }

        self.nemesis().await;

        // Clients stop where they are: an operation cut short was never acknowledged, so it
        // binds nothing.
        *self.stopping.lock() = true;
        for c in &clients {
            c.abort();
        }
        for c in clients {
            let _ = c.await;
        }
        self.recover().await;
        if let Some(r) = &self.replicas {
            // The replicas settle: every one runs, the producer is stopped.
            for id in 1..=crate::replicas::REPLICAS {
                r.start(&self, id);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        sampler.abort();
        for h in heartbeats.iter().chain(&replica_tasks) {
            h.abort();
        }
        self.sample();
        if let Some(r) = &self.replicas {
            r.sample(&self);
            self.log(r.summary());
            r.stop_all();
        }
        for id in self.nodes() {
            self.stop_scanner(id);
            if let Some(node) = self.net.set_down(id) {
                let _ = tokio::time::timeout(Duration::from_secs(5), node.raft.shutdown()).await;
            }
        }
        let (messages, dropped) = self.net.counters();
        let mut stats = self.stats.lock().clone();
        stats.messages = messages;
        stats.dropped = dropped;
        stats
    }

    /// With `--replicas`: opens the replicas' stores and starts, per replica, its controller
    /// loop (a linearizable `GET_REPLICA_INFO` every 8-20 ms, applied as the role manager
    /// does; as master, a SyncStateSet change when `desired_sync_state_set` wants one), and
    /// the producer (one message every 2-10 ms to a replica that believes it is master, until
    /// the fault phase ends).
    fn start_replicas(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let Some(replicas) = &self.replicas else {
            return Vec::new();
        };
        let mut tasks = vec![tokio::spawn(replicas.wire().deliver(self.net.clone()))];
        for id in 1..=crate::replicas::REPLICAS {
            replicas.start(self, id);
            if self.opts.controller_link {
                // The replica's own ReplicaManager talks to the controllers (`Replicas::start`).
                continue;
            }
            let w = self.clone();
            let rng = self.rng.lock().fork();
            let endpoint = crate::replicas::endpoint(id);
            tasks.push(tokio::spawn(async move {
                let client = Client::new_at(w, 1000 + id as u64, endpoint, rng, Some(id));
                client.replica_loop(id).await;
            }));
        }
        let w = self.clone();
        let mut rng = self.rng.lock().fork();
        tasks.push(tokio::spawn(async move {
            let Some(replicas) = &w.replicas else {
                return;
            };
            loop {
                tokio::time::sleep(Duration::from_millis(rng.range(2, 10))).await;
                if *w.stopping.lock() {
                    return;
                }
                replicas.send_one(&w, &mut rng).await;
            }
        }));
        tasks
    }

    /// Every simulated broker heartbeats every node over the simulated network (one loop per
    /// broker and node, each on its own channel), unless it is stopped; each node records the
    /// heartbeats in its own real [`HeartbeatTracker`] at its own clock.
    fn spawn_broker_heartbeats(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for (endpoint, set, id) in brokers() {
            // Each broker's log grows at its own rate, the same in every node's view.
            let (base, rate) = {
                let mut rng = self.rng.lock();
                (rng.range(0, 100) as i64, rng.range(0, 4) as i64)
            };
            if self.opts.controller_link && self.replicas.is_some() && set == crate::replicas::SET {
                // The replicas heartbeat through their ReplicaManager (`crate::link`).
                continue;
            }
            for node in self.nodes() {
                let w = self.clone();
                let channel = self.net.open_channel(endpoint, node);
                tasks.push(tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(HEARTBEAT_MS)).await;
                        if w.brokers_down.lock().contains(&endpoint) {
                            continue;
                        }
                        let ticks = w.check.lock().now_ms() as i64 / HEARTBEAT_MS as i64;
                        // A replica reports its own last epoch and log end.
                        let live = match (&w.replicas, set == crate::replicas::SET) {
                            (Some(r), true) => match r.live_info(id) {
                                Some((epoch, end)) => BrokerLiveInfo::new(epoch, end, 0),
                                None => continue,
                            },
                            _ => BrokerLiveInfo::new(0, base + rate * ticks, 0),
                        };
                        let heartbeat = Heartbeat {
                            cluster: "sim".to_string(),
                            broker_name: set.to_string(),
                            broker_id: id,
                            broker_addr: format!("{set}-{id}:10911"),
                            timeout_ms: BROKER_TIMEOUT_MS,
                            info: live,
                        };
                        let deadline = Duration::from_millis(HEARTBEAT_MS);
                        let _ = w
                            .net
                            .call(channel, heartbeat, deadline, |node, heartbeat| async move {
                                node.heartbeats.record(heartbeat, node.clock.now_ms());
                            })
                            .await;
                    }
                }));
            }
        }
        tasks
    }

    /// Faults for `fault_ms`, one every 20..150 ms.
    async fn nemesis(self: &Arc<Self>) {
        let end = tokio::time::Instant::now() + Duration::from_millis(self.opts.fault_ms);
        loop {
            let pause = self.rng.lock().range(20, 150);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            if tokio::time::Instant::now() >= end {
                return;
            }
            if !self.opts.faults {
                continue;
            }
            // Besides the nemesis's own draw, sometimes isolate the replicas' master from the
            // controllers (from the replicas' own stream, so the nemesis draws as before).
            if let Some(r) = &self.replicas {
                if let Some(id) = r.isolation_fault() {
                    let ep = crate::replicas::endpoint(id);
                    for n in self.nodes() {
                        self.net.cut_one_way(ep, n);
                        self.net.cut_one_way(n, ep);
                    }
                    self.network_changed();
                    self.stats.lock().replica_isolations += 1;
                    self.log(format!("a{id} (master) isolated from the controllers"));
                }
            }
            let roll = self.rng.lock().range(0, 99);
            let down: Vec<NodeId> = self
                .nodes()
                .filter(|id| self.net.handle(*id).is_none())
                .collect();
            let up: Vec<NodeId> = self
                .nodes()
                .filter(|id| self.net.handle(*id).is_some())
                .collect();
            match roll {
                0..=16 => {
                    let all = self.endpoints();
                    let side: BTreeSet<Endpoint> = {
                        let mut rng = self.rng.lock();
                        all.iter().copied().filter(|_| rng.chance(500)).collect()
                    };
                    if side.is_empty() || side.len() == all.len() {
                        continue;
                    }
                    self.net.partition(&side, &all);
                    self.network_changed();
                    self.stats.lock().partitions += 1;
                    self.log(format!("partition {side:?} | rest"));
                }
                17..=25 => {
                    let (from, to) = {
                        let mut rng = self.rng.lock();
                        let n = self.opts.nodes;
                        let from = rng.range(1, n);
                        let to = 1 + (from + rng.range(0, n - 2)) % n;
                        (from, to)
                    };
                    self.net.cut_one_way(from, to);
                    self.network_changed();
                    self.stats.lock().partitions += 1;
                    self.log(format!("cut n{from} -> n{to}"));
                }
                26..=41 => {
                    self.net.heal();
                    self.log("heal");
                }
                42..=55 if !up.is_empty() => {
                    let victim = up[self.rng.lock().pick(up.len())];
                    self.crash(victim).await;
                }
                56..=71 if !down.is_empty() => {
                    let back = down[self.rng.lock().pick(down.len())];
                    self.restart(back).await;
                }
                72..=79 => {
                    let (id, by) = {
                        let mut rng = self.rng.lock();
                        let id = rng.range(1, self.opts.nodes);
                        // Forward more often (a stalled process); back to stress the table.
                        let size = rng.range(20, 600) as i64;
                        (id, if rng.chance(650) { size } else { -size })
                    };
                    let offset = self.clocks.step(id, by);
                    self.stats.lock().clock_steps += 1;
                    self.log(format!(
                        "n{id} clock step {by:+} ms (offset now {offset:+} ms)"
                    ));
                    // A replica's lease clock too, sometimes (from the replicas' own stream:
                    // the nemesis draws as before).
                    if let Some(r) = &self.replicas {
                        if r.lease_clock_fault(self) {
                            self.stats.lock().lease_clock_steps += 1;
                        }
                    }
                }
                80..=91 if self.replicas.is_some() => self.replica_fault(),
                80..=87 => {
                    let all: Vec<(Endpoint, &str, i64)> = brokers().collect();
                    let (endpoint, set, id) = all[self.rng.lock().pick(all.len())];
                    let mut down = self.brokers_down.lock();
                    let now_down = if down.remove(&endpoint) {
                        false
                    } else {
                        down.insert(endpoint);
                        true
                    };
                    drop(down);
                    self.stats.lock().broker_faults += 1;
                    self.log(format!(
                        "broker {set}/{id} {}",
                        if now_down { "stops" } else { "starts" }
                    ));
                }
                _ => {
                    let links = {
                        let mut rng = self.rng.lock();
                        let slow = rng.chance(250);
                        LinkConfig {
                            delay_ms: if slow {
                                (1, rng.range(5, 30))
                            } else {
                                (1, rng.range(2, 4))
                            },
                            loss: if rng.chance(500) {
                                rng.range(0, 200)
                            } else {
                                0
                            },
                            duplicate: if rng.chance(500) {
                                rng.range(0, 100)
                            } else {
                                0
                            },
                        }
                    };
                    self.log(format!("links {links:?}"));
                    self.net.set_links(links);
                }
            }
        }
    }

    /// Heals everything and restarts every node; the quorum must then take a write, and every
    /// node reach the same applied state.
    /// The links changed: replica connections over a cut link reset.
    fn network_changed(self: &Arc<Self>) {
        if let Some(r) = &self.replicas {
            r.network_changed(self);
        }
    }

    /// Crashes or restarts a broker replica: the master half the time when one runs.
    fn replica_fault(self: &Arc<Self>) {
        let Some(replicas) = &self.replicas else {
            return;
        };
        let master = (1..=crate::replicas::REPLICAS).find(|id| {
            replicas
                .ha(*id)
                .is_some_and(|ha| ha.role() == rocketraft_broker::ha::Role::Master)
        });
        let id = {
            let mut rng = self.rng.lock();
            match master {
                Some(m) if rng.chance(500) => m,
                _ => rng.range(1, crate::replicas::REPLICAS as u64) as i64,
            }
        };
        self.stats.lock().broker_faults += 1;
        if replicas.is_up(id) {
            // Kill -9 or a power loss (drawn from the replicas' own stream: the nemesis draws
            // as before); a correlated power loss takes every running replica.
            if replicas.draw_power_loss() {
                let ids: Vec<i64> = if self.opts.power_loss_all {
                    (1..=crate::replicas::REPLICAS)
                        .filter(|i| replicas.is_up(*i))
                        .collect()
                } else {
                    vec![id]
                };
                let losses = replicas.power_loss(self, &ids);
                let mut s = self.stats.lock();
                s.replica_crashes += ids.len() as u64;
                s.power_losses += ids.len() as u64;
                for l in losses {
                    *s.disk_losses.entry(l).or_insert(0) += 1;
                }
            } else {
                self.stats.lock().replica_crashes += 1;
                replicas.crash(self, id);
            }
        } else {
            replicas.start(self, id);
        }
    }

    async fn recover(self: &Arc<Self>) {
        self.net.heal();
        self.net.set_links(LinkConfig::default());
        self.log("heal all, links clean, restart every node");
        for id in self.nodes() {
            self.restart(id).await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.opts.recover_ms);
        let mut probe = Client::new(self.clone(), self.opts.clients, SimRng::new(0));
        let mut wrote = false;
        while tokio::time::Instant::now() < deadline {
            let req = ControllerRequest::GetNextBrokerId(GetNextBrokerIdRequest {
                cluster: "sim".to_string(),
                broker_name: SETS[0].to_string(),
            });
            if probe.write_once(req).await.is_some() {
                wrote = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !wrote {
            self.fail(
                Violation::NoRecovery,
                format!(
                    "no write succeeded within {} ms after healing",
                    self.opts.recover_ms
                ),
            );
            return;
        }
        // Everyone catches up to the same applied state.
        while tokio::time::Instant::now() < deadline {
            let applied: BTreeSet<Option<u64>> = self
                .nodes()
                .map(|id| {
                    self.net.handle(id).and_then(|n| {
                        n.raft
                            .metrics()
                            .borrow_watched()
                            .last_applied
                            .map(|l| l.index)
                    })
                })
                .collect();
            if applied.len() == 1 {
                self.log(format!("recovered: every node applied {applied:?}"));
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.fail(
            Violation::NoRecovery,
            "the nodes did not converge to one applied index after healing",
        );
    }
}

/// What a node answers a client.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    Written { log_id: LogId, reply: Reply },
    Read(ControllerQueryResponse),
    NotLeader(Option<NodeId>),
    Failed(String),
}

/// Fills in a command's liveness as the controller leader's prepare does
/// (`rocketraft_controller::service::alive_for_at`, from this node's heartbeat table at its own
/// clock). Done on whichever node a client reached: only a leader takes the write.
fn with_leader_liveness(node: &NodeHandle, mut req: Request) -> Result<Request, String> {
    let mut command: ControllerCommand =
        serde_json::from_str(&req.payload).map_err(|e| format!("undecodable command: {e}"))?;
    command.alive = alive_for_at(&node.heartbeats, &command.request, node.clock.now_ms());
    req.payload =
        serde_json::to_string(&command).map_err(|e| format!("unencodable command: {e}"))?;
    Ok(req)
}

/// What an acknowledged controller answer tells the checker, and its line in the trace; the
/// simulated clients and the controller link log and check their answers alike.
pub(crate) struct Acked {
    /// The epochs the answer acknowledges, if it names any.
    pub floor: Option<Floor>,
    /// The master an election elected, with its epoch.
    pub elected: Option<(i32, i64)>,
    pub summary: String,
}

pub(crate) fn acked(response: &ControllerResponse) -> Acked {
    match response {
        ControllerResponse::ElectMaster(r) => Acked {
            floor: Some(Floor {
                master_epoch: r.master_epoch,
                sync_state_set_epoch: r.sync_state_set_epoch,
            }),
            elected: r
                .master_broker_id
                .filter(|_| r.outcome == ElectOutcome::Elected)
                .map(|m| (r.master_epoch, m)),
            summary: format!(
                "{:?} master {:?} epoch {} set {:?} sss-epoch {}",
                r.outcome,
                r.master_broker_id,
                r.master_epoch,
                r.sync_state_set,
                r.sync_state_set_epoch
            ),
        },
        ControllerResponse::AlterSyncStateSet(r) => Acked {
            floor: Some(Floor {
                master_epoch: 0,
                sync_state_set_epoch: r.new_sync_state_set_epoch,
            }),
            elected: None,
            summary: format!(
                "set {:?} sss-epoch {}",
                r.new_sync_state_set, r.new_sync_state_set_epoch
            ),
        },
        ControllerResponse::RegisterBroker(r) => Acked {
            floor: Some(Floor {
                master_epoch: r.master_epoch.unwrap_or(0),
                sync_state_set_epoch: r.sync_state_set_epoch,
            }),
            elected: None,
            summary: format!(
                "master {:?} epoch {:?} sss-epoch {}",
                r.master_broker_id, r.master_epoch, r.sync_state_set_epoch
            ),
        },
        _ => Acked {
            floor: None,
            elected: None,
            summary: "ok".to_string(),
        },
    }
}

pub(crate) async fn serve_write(node: NodeHandle, req: Request) -> Answer {
    // As `RaftNode`'s write path: counted from before the prepare until openraft answers, in
    // a task of its own, so a caller that gives up (a network call's timeout) does not end it.
    let in_flight = node.writes_in_flight.begin();
    let req = match with_leader_liveness(&node, req) {
        Ok(r) => r,
        Err(e) => return Answer::Failed(e),
    };
    let raft = node.raft.clone();
    let proposal = tokio::spawn(async move {
        let _in_flight = in_flight;
        raft.client_write(req).await
    });
    match proposal.await {
        Ok(Ok(resp)) => Answer::Written {
            log_id: resp.log_id,
            reply: resp.data,
        },
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            Answer::NotLeader(f.leader_id)
        }
        Ok(Err(e)) => Answer::Failed(e.to_string()),
        Err(e) => Answer::Failed(format!("the proposal task failed: {e}")),
    }
}

/// A node answers a read: the ReadIndex round, then the state machine's query. With
/// [`Bug::StaleRead`] the round is skipped (the self-test of the read invariant).
pub(crate) async fn serve_read(
    node: NodeHandle,
    mut query: ControllerQuery,
    stale: bool,
) -> Answer {
    // The serving node's own liveness view, as the controller's read path takes it.
    if let ControllerQuery::Request { request, alive } = &mut query {
        *alive = alive_for_at(&node.heartbeats, request, node.clock.now_ms());
    }
    if stale {
        return match node.sm.query_app::<ControllerStateMachine>(&query) {
            Ok(r) => Answer::Read(r),
            Err(e) => Answer::Failed(e.to_string()),
        };
    }
    // `ensure_linearizable` in two steps: openraft's ReadIndex round, then the wait for the
    // apply on the node's `ReadGate` rather than openraft's metrics watch, whose wake-up order
    // no seed decides (`crate::read_gate`).
    let linearizer = match node.raft.get_read_linearizer(ReadPolicy::ReadIndex).await {
        Ok(l) => l,
        Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
            return Answer::NotLeader(f.leader_id)
        }
        Err(e) => return Answer::Failed(e.to_string()),
    };
    if let Err(e) = node.reads.await_ready(&node.raft, linearizer).await {
        return Answer::Failed(e.to_string());
    }
    match node.sm.query_app::<ControllerStateMachine>(&query) {
        Ok(r) => Answer::Read(r),
        Err(e) => Answer::Failed(e.to_string()),
    }
}

/// A one-line description of a controller request, for the trace.
pub(crate) fn describe(request: &ControllerRequest) -> String {
    Client::describe(request)
}

/// A client's knowledge of one broker set (from its last answers).
#[derive(Debug, Clone, Copy, Default)]
struct Known {
    master: Option<i64>,
    master_epoch: i32,
    sync_state_set_epoch: i32,
}

/// A simulated client: issues controller requests to the nodes, follows leader hints, retries
/// with the same serial, and records every answer.
struct Client {
    world: Arc<World>,
    id: u64,
    endpoint: Endpoint,
    rng: SimRng,
    serial: u64,
    leader: Option<NodeId>,
    known: BTreeMap<String, Known>,
    channels: BTreeMap<NodeId, Channel>,
    /// A broker replica's own client: its reads of its set are applied to it.
    replica: Option<i64>,
    /// When the last request of [`Client::call_until_answered`] was sent (its answered attempt's
    /// send time once it returns): a replica's lease runs from it, as the broker renews its
    /// lease from the send time of the heartbeat a controller confirmed.
    sent_at: tokio::time::Instant,
}

/// How a write ended.
enum Outcome {
    Ok(CommandResult, LogId),
    Unknown(String),
}

impl Client {
    fn new(world: Arc<World>, k: u64, rng: SimRng) -> Self {
        Client::new_at(world, k + 1, CLIENT_BASE + k, rng, None)
    }

    /// A client with id `id` at `endpoint`; a broker replica's own (`replica`) applies what
    /// its reads of its set answer.
    fn new_at(
        world: Arc<World>,
        id: u64,
        endpoint: Endpoint,
        rng: SimRng,
        replica: Option<i64>,
    ) -> Self {
        Client {
            world,
            id,
            endpoint,
            rng,
            serial: 0,
            leader: None,
            known: BTreeMap::new(),
            channels: BTreeMap::new(),
            replica,
            sent_at: tokio::time::Instant::now(),
        }
    }

    /// A broker replica's controller loop (see [`World::start_replicas`]): at each start of
    /// its process it applies for its id and registers (as `ReplicaManager::start`), then reads
    /// its set's replica info, elects itself when the set has no master
    /// (`elect_if_masterless`), and as master proposes SyncStateSet changes.
    async fn replica_loop(mut self, id: i64) {
        let set = crate::replicas::SET;
        let mut registered: Option<u64> = None;
        loop {
            let pause = self.rng.range(8, 20);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            let world = self.world.clone();
            let Some(replicas) = &world.replicas else {
                return;
            };
            let Some(incarnation) = replicas.incarnation(id) else {
                continue;
            };
            if registered != Some(incarnation) {
                let apply = ControllerRequest::ApplyBrokerId(ApplyBrokerIdRequest {
                    cluster: "sim".to_string(),
                    broker_name: set.to_string(),
                    applied_broker_id: id,
                    register_check_code: format!("{set}-{id}:10911;0"),
                });
                let register = ControllerRequest::RegisterBroker(RegisterBrokerRequest {
                    cluster: "sim".to_string(),
                    broker_name: set.to_string(),
                    broker_id: id,
                    broker_address: format!("{set}-{id}:10911"),
                });
                self.write(set, apply).await;
                if matches!(self.write_outcome(register).await, Outcome::Ok(Ok(_), _)) {
                    self.log(format!("a{id} registered"));
                    registered = Some(incarnation);
                }
                continue;
            }
            self.read(set).await;
            if self.known.get(set).is_some_and(|k| k.master.is_none()) {
                let elect = ControllerRequest::ElectMaster(ElectMasterRequest {
                    cluster: "sim".to_string(),
                    broker_name: set.to_string(),
                    broker_id: Some(id),
                    designate_elect: false,
                    depose_epoch: None,
                });
                self.write(set, elect).await;
                continue;
            }
            let Some(ha) = replicas.ha(id) else {
                continue;
            };
            ha.on_local_append();
            let Some((master, epoch, sss_epoch, want)) =
                ha.desired_sync_state_set(crate::replicas::MAX_NOT_CAUGHT_UP, 1)
            else {
                continue;
            };
            ha.add_pending(sss_epoch, &want);
            let request = ControllerRequest::AlterSyncStateSet(AlterSyncStateSetRequest {
                broker_name: set.to_string(),
                master_broker_id: master,
                master_epoch: epoch,
                new_sync_state_set: want,
                sync_state_set_epoch: sss_epoch,
                fence: false,
            });
            let what = Self::describe(&request);
            match self.write_outcome(request).await {
                Outcome::Ok(Ok(ControllerResponse::AlterSyncStateSet(r)), log_id) => {
                    self.log(format!(
                        "{what} -> ok at {log_id}: set {:?} sss-epoch {}",
                        r.new_sync_state_set, r.new_sync_state_set_epoch
                    ));
                    self.world.check.lock().acked_epochs(
                        set,
                        Floor {
                            master_epoch: 0,
                            sync_state_set_epoch: r.new_sync_state_set_epoch,
                        },
                    );
                    ha.update_sync_state_set(r.new_sync_state_set_epoch, r.new_sync_state_set);
                }
                Outcome::Ok(Ok(other), log_id) => self.log(format!(
                    "{what} -> unexpected answer at {log_id}: {other:?}"
                )),
                Outcome::Ok(Err(refusal), log_id) => self.log(format!(
                    "{what} -> refused at {log_id}: {} {}",
                    refusal.code, refusal.remark
                )),
                Outcome::Unknown(why) => self.log(format!("{what} -> unknown: {why}")),
            }
        }
    }

    fn target(&mut self) -> NodeId {
        match self.leader {
            Some(l) if !self.rng.chance(100) => l,
            _ => self.rng.range(1, self.world.opts.nodes),
        }
    }

    fn log(&self, line: impl AsRef<str>) {
        self.world.log(format!("c{} {}", self.id, line.as_ref()));
    }

    /// This client's channel to node `to` (opened on first use).
    fn channel(&mut self, to: NodeId) -> Channel {
        let endpoint = self.endpoint;
        let net = self.world.net.clone();
        *self
            .channels
            .entry(to)
            .or_insert_with(|| net.open_channel(endpoint, to))
    }

    async fn run(mut self) {
        loop {
            let think = self.rng.range(1, 15);
            tokio::time::sleep(Duration::from_millis(think)).await;
            if *self.world.stopping.lock() {
                return;
            }
            self.one_op().await;
        }
    }

    async fn one_op(&mut self) {
        let set = SETS[self.rng.pick(SETS.len())].to_string();
        // The replicas' set takes only what brokers and their controllers would do: its
        // SyncStateSet changes come from its master, and no operator designates a master.
        let replica_set = self.world.replicas.is_some() && set == crate::replicas::SET;
        // Id 1 half the time: a broker set exists once id 1 is applied.
        let id = if self.rng.chance(500) {
            1
        } else {
            self.rng.range(1, BROKER_IDS) as i64
        };
        let address = format!("{set}-{id}:10911");
        let roll = self.rng.range(0, 99);
        let request = match roll {
            0..=14 => ControllerRequest::ApplyBrokerId(ApplyBrokerIdRequest {
                cluster: "sim".to_string(),
                broker_name: set.clone(),
                applied_broker_id: id,
                register_check_code: format!("{address};0"),
            }),
            15..=29 => ControllerRequest::RegisterBroker(RegisterBrokerRequest {
                cluster: "sim".to_string(),
                broker_name: set.clone(),
                broker_id: id,
                broker_address: if self.rng.chance(200) {
                    format!("{set}-{id}:10912")
                } else {
                    address
                },
            }),
            // The replicas' set: these elections stand in for the controller's scanner (not
            // simulated), which elects only for a set whose master it knew: a controller-
            // triggered election of a set that never had a master would end its first-time
            // election for good. The replicas trigger their own when masterless.
            // With the controller link the controllers' real scanner does these elections
            // (`crate::scanner`): the clients only read.
            30..=59
                if replica_set
                    && self.world.opts.controller_link
                    && !self.world.opts.stand_in_scanner =>
            {
                self.read(&set).await;
                return;
            }
            30..=59 if replica_set => {
                if self.known.get(&set).is_none_or(|k| k.master.is_none()) {
                    self.read(&set).await;
                    return;
                }
                ControllerRequest::ElectMaster(ElectMasterRequest {
                    cluster: "sim".to_string(),
                    broker_name: set.clone(),
                    broker_id: None,
                    designate_elect: false,
                    depose_epoch: None,
                })
            }
            30..=59 => ControllerRequest::ElectMaster(ElectMasterRequest {
                cluster: "sim".to_string(),
                broker_name: set.clone(),
                broker_id: if self.rng.chance(300) { None } else { Some(id) },
                designate_elect: self.rng.chance(100),
                depose_epoch: None,
            }),
            60..=79 if replica_set => {
                self.read(&set).await;
                return;
            }
            60..=79 => {
                let known = self.known.get(&set).copied().unwrap_or_default();
                let master = known.master.unwrap_or(id);
                let mut members: BTreeSet<i64> = (1..=BROKER_IDS as i64)
                    .filter(|_| self.rng.chance(500))
                    .collect();
                members.insert(master);
                ControllerRequest::AlterSyncStateSet(AlterSyncStateSetRequest {
                    broker_name: set.clone(),
                    master_broker_id: master,
                    master_epoch: known.master_epoch,
                    new_sync_state_set: members,
                    sync_state_set_epoch: known.sync_state_set_epoch,
                    fence: self.rng.chance(100),
                })
            }
            _ => {
                self.read(&set).await;
                return;
            }
        };
        self.write(&set, request).await;
    }

    fn describe(request: &ControllerRequest) -> String {
        match request {
            ControllerRequest::ApplyBrokerId(r) => {
                format!("apply-id {} {}", r.broker_name, r.applied_broker_id)
            }
            ControllerRequest::RegisterBroker(r) => format!(
                "register {} {} {}",
                r.broker_name, r.broker_id, r.broker_address
            ),
            ControllerRequest::ElectMaster(r) => format!(
                "elect {} by {:?}{}",
                r.broker_name,
                r.broker_id,
                if r.designate_elect { " designated" } else { "" }
            ),
            ControllerRequest::AlterSyncStateSet(r) => format!(
                "alter {} master {} epoch {} set {:?} sss-epoch {}{}",
                r.broker_name,
                r.master_broker_id,
                r.master_epoch,
                r.new_sync_state_set,
                r.sync_state_set_epoch,
                if r.fence { " fence" } else { "" }
            ),
            ControllerRequest::GetNextBrokerId(r) => format!("next-id {}", r.broker_name),
            other => format!("{other:?}"),
        }
    }

    /// Sends one write until it is answered or [`ATTEMPTS`] run out.
    async fn write_outcome(&mut self, request: ControllerRequest) -> Outcome {
        self.serial += 1;
        // The leader fills in the liveness ([`with_leader_liveness`]).
        let command = ControllerCommand {
            request,
            alive: AliveBrokers::new(),
            policy: DefaultElectPolicy::default(),
        };
        let payload = match serde_json::to_string(&command) {
            Ok(p) => p,
            Err(e) => return Outcome::Unknown(format!("unencodable command: {e}")),
        };
        let req = Request {
            client: self.id,
            serial: self.serial,
            payload,
        };
        match self.call_until_answered(req, serve_write).await {
            Ok((to, Answer::Written { log_id, reply })) => {
                self.leader = Some(to);
                match reply.result {
                    Ok(json) => match serde_json::from_str::<CommandResult>(&json) {
                        Ok(result) => Outcome::Ok(result, log_id),
                        Err(e) => Outcome::Unknown(format!("undecodable reply: {e}")),
                    },
                    Err(e) => Outcome::Unknown(format!("not applied: {e}")),
                }
            }
            Ok((to, other)) => {
                self.world.check.lock().fail(
                    Violation::Harness,
                    format!("a write to n{to} answered {other:?}"),
                );
                Outcome::Unknown(format!("n{to}: not a write's answer"))
            }
            Err(last) => Outcome::Unknown(last),
        }
    }

    /// Sends `req` to the leader this client knows (now and then, and when it knows none, to a
    /// node drawn from the seed), where `handler` serves it; follows leader hints and retries
    /// after a seeded backoff, [`ATTEMPTS`] times in all. Returns the first answer that is not a
    /// redirection or a failure, with the node that gave it, or why the last attempt failed.
    async fn call_until_answered<Req, F, Fut>(
        &mut self,
        req: Req,
        handler: F,
    ) -> Result<(NodeId, Answer), String>
    where
        Req: Clone + Send + 'static,
        F: Fn(NodeHandle, Req) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Answer> + Send + 'static,
    {
        let mut last = String::from("no attempt");
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                let backoff = self.rng.range(5, 30);
                tokio::time::sleep(Duration::from_millis(backoff)).await;
            }
            let to = self.target();
            let channel = self.channel(to);
            // On the replica's lease clock (`HaState::now`), which the lease is judged on.
            self.sent_at = match (self.replica, &self.world.replicas) {
                (Some(id), Some(r)) => r.lease_now(id),
                _ => tokio::time::Instant::now(),
            };
            let answer = self
                .world
                .net
                .call(channel, req.clone(), CALL_DEADLINE, handler.clone())
                .await;
            match answer {
                Ok(Answer::NotLeader(hint)) => {
                    self.leader = hint;
                    last = format!("n{to}: not leader (hint {hint:?})");
                }
                Ok(Answer::Failed(e)) => {
                    self.leader = None;
                    last = format!("n{to}: {e}");
                }
                Ok(answer) => return Ok((to, answer)),
                Err(CallError::Unreachable) => {
                    self.leader = None;
                    last = format!("n{to}: down");
                }
                Err(CallError::Timeout) => {
                    self.leader = None;
                    last = format!("n{to}: timeout");
                }
            }
        }
        Err(last)
    }

    /// A write for the recovery probe: `Some` once acknowledged.
    async fn write_once(&mut self, request: ControllerRequest) -> Option<u64> {
        match self.write_outcome(request).await {
            Outcome::Ok(_, log_id) => Some(log_id.index),
            Outcome::Unknown(_) => None,
        }
    }

    async fn write(&mut self, set: &str, request: ControllerRequest) {
        let what = Self::describe(&request);
        let outcome = self.write_outcome(request).await;
        match outcome {
            Outcome::Ok(Ok(response), log_id) => {
                self.world.stats.lock().ops_ok += 1;
                let acked = acked(&response);
                if let Some(floor) = acked.floor {
                    self.world.check.lock().acked_epochs(set, floor);
                }
                match &response {
                    ControllerResponse::ElectMaster(r) => {
                        self.known.insert(
                            set.to_string(),
                            Known {
                                master: r.master_broker_id,
                                master_epoch: r.master_epoch,
                                sync_state_set_epoch: r.sync_state_set_epoch,
                            },
                        );
                    }
                    ControllerResponse::AlterSyncStateSet(r) => {
                        if let Some(k) = self.known.get_mut(set) {
                            k.sync_state_set_epoch = r.new_sync_state_set_epoch;
                        }
                    }
                    _ => {}
                }
                let elected = acked.elected.map(|(epoch, m)| (set.to_string(), epoch, m));
                let summary = acked.summary;
                self.log(format!("{what} -> ok at {log_id}: {summary}"));
                let desc = format!("c{} {what}", self.id);
                self.world.check.lock().acked_write(log_id, desc, elected);
            }
            Outcome::Ok(Err(refusal), log_id) => {
                self.world.stats.lock().ops_refused += 1;
                self.log(format!(
                    "{what} -> refused at {log_id}: {} {}",
                    refusal.code, refusal.remark
                ));
            }
            Outcome::Unknown(why) => {
                self.world.stats.lock().ops_unknown += 1;
                self.log(format!("{what} -> unknown: {why}"));
            }
        }
    }

    async fn read(&mut self, set: &str) {
        let floor: Floor = self.world.check.lock().floor(set);
        let stale = self.world.opts.bug == Some(Bug::StaleRead);
        if stale {
            // The bug reads from any replica, as a client spreading reads would.
            self.leader = None;
        }
        // The serving node fills in its liveness view ([`serve_read`]).
        let query = ControllerQuery::Request {
            request: ControllerRequest::GetReplicaInfo(GetReplicaInfoRequest {
                broker_name: set.to_string(),
            }),
            alive: AliveBrokers::new(),
        };
        let answer = self
            .call_until_answered(query, move |node, query| serve_read(node, query, stale))
            .await;
        match answer {
            Ok((
                to,
                Answer::Read(ControllerQueryResponse::Request(Ok(
                    ControllerResponse::GetReplicaInfo(r),
                ))),
            )) => {
                self.leader = Some(to);
                self.world.stats.lock().ops_ok += 1;
                self.known.insert(
                    set.to_string(),
                    Known {
                        master: r.master_broker_id,
                        master_epoch: r.master_epoch,
                        sync_state_set_epoch: r.sync_state_set_epoch,
                    },
                );
                self.log(format!(
                    "read {set} @n{to} -> master {:?} epoch {} set {:?} sss-epoch {}",
                    r.master_broker_id, r.master_epoch, r.sync_state_set, r.sync_state_set_epoch
                ));
                if let (Some(id), Some(replicas)) = (self.replica, &self.world.replicas) {
                    // The replica heard the answer only if it can still hear that node.
                    let me = self.endpoint;
                    if self.world.net.reachable(to, me) {
                        replicas.learn(&self.world, id, &r, self.sent_at);
                    }
                }
                let got = Floor {
                    master_epoch: r.master_epoch,
                    sync_state_set_epoch: r.sync_state_set_epoch,
                };
                self.world
                    .check
                    .lock()
                    .read_answered(self.id, set, floor, got);
            }
            Ok((to, Answer::Read(ControllerQueryResponse::Request(Err(refusal))))) => {
                self.world.stats.lock().ops_refused += 1;
                self.log(format!("read {set} @n{to} -> refused: {}", refusal.remark));
            }
            Ok((to, other)) => {
                self.world.check.lock().fail(
                    Violation::Harness,
                    format!("read {set} @n{to} answered {other:?}"),
                );
            }
            Err(last) => {
                self.world.stats.lock().ops_unknown += 1;
                self.log(format!("read {set} -> failed: {last}"));
            }
        }
    }
}

/// The simulated brokers: (endpoint, broker set, broker id).
fn brokers() -> impl Iterator<Item = (Endpoint, &'static str, i64)> {
    let sets: &'static [&'static str] = &SETS;
    sets.iter().enumerate().flat_map(|(s, set)| {
        (1..=BROKER_IDS).map(move |id| (BROKER_BASE + s as u64 * 10 + id, *set, id as i64))
    })
}
