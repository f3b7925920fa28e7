//! Nemeses: faults on a seeded timeline, each start and stop recorded in the history as a
//! `"process":"nemesis"` `info` event (`start-<kind>` / `stop-<kind>`, the value saying exactly
//! what was done).
//!
//! Kinds (`--nemesis` takes a comma-separated list, `all`, or `none`):
//! - `partition`: nftables drop rules inside the nodes' namespaces; one of *halves* (random
//!   3 | 4 split of the servers), *isolate-controller-leader*, *isolate-broker-master*,
//!   *majority-ring* (each server sees a majority, no two the same one), *bridge* (two halves
//!   that only one node sees both of), *one-way* (one node receives nothing, sends freely).
//! - `partition-master`: always *isolate-broker-master* (the clients still reach the master);
//!   `partition-controller`: always *isolate-controller-leader*; `partition-ring`: always
//!   *majority-ring*; `partition-bridge`: always *bridge*.
//! - `kill`: SIGKILL, restarted at the window's end: one random server, a majority of the
//!   controllers, the broker master, the controller leader and the broker master together, or
//!   (when the run has one) the gRPC proxy, which is stateless.
//! - `pause`: SIGSTOP / SIGCONT of a random server, the broker master or the controller leader.
//! - `loss`: one or two servers drop 20-40 % of their packets (nft `numgen random`).
//! - `clock`: a controller or broker (a member in raft-kv runs) restarted under `faketime`
//!   shifted by ±30-600 s, restarted normally at the end (in `all`; it also restarts the node).
//! - `transfer`: the controller is asked to elect a designated slave of the SyncStateSet as the
//!   broker master (a master transfer); nothing to undo.
//! - `latency`: the TCP relays of [`crate::latency`] (in place from the start when this kind is
//!   selected) hold every chunk 50-800 ms: of every server (brokers: replication, controller
//!   heartbeats; controllers and raft-kv members: Raft, forwarding), of one of them, of the
//!   clients (the harness's Remoting and gRPC connections and the proxy's connections to the
//!   brokers), or of all.
//!
//! Controller kinds (not in `all`; in raft-kv runs they aim at the raft-kv members):
//! - `pause-controller`: SIGSTOP of the controller leader, SIGCONT at the window's end.
//! - `kill-controller`: SIGKILL of one controller, restarted at the window's end: the leader
//!   half of the time, otherwise one picked at random (the leader included).
//! - `transfer-controller`: a Raft leadership transfer of the controller quorum from its leader
//!   to another controller (the `TransferLeader` admin request over the Raft peer protocol, what
//!   `rocketraft admin controller transfer-leader` sends); a 2 s window. The stop event holds the
//!   outcome and the leader afterwards.
//! - `flip-flop`: leadership goes from the leader L1 to L2 and, 1.5 s later, back to L1: both
//!   within one broker heartbeat timeout (6 s); a 5 s window.
//! - `clock-step`: when selected, every controller and broker runs from the start under
//!   libfaketime reading its offset from `nodes/<name>/faketime.rc` at every clock read
//!   (`FAKETIME_TIMESTAMP_FILE`, `FAKETIME_NO_CACHE=1`; wall clock only, monotonic clocks
//!   untouched), holding `+0`; a window writes `-60s`..`-300s` or `+60s`..`+300s` into one
//!   node's file (its running process's clock steps at once) and `+0` at the end. The stop
//!   event says whether the node's log shows the step (`observed_skew_s`: how far the
//!   timestamps of the lines it logged during the window lie outside the real window).
//! - `power-loss`: when selected, every broker's store (`nodes/<name>/store`) and every
//!   controller's data (`nodes/<name>/data`) is a [`crate::lazyfs::LazyFs`] mount served by the
//!   harness over `<dir>-disk`: bytes a node wrote stay volatile until it syncs them, and files
//!   it created vanish unless it synced their directory. A window cuts the power of one node
//!   (the broker master half of the time, a random broker a quarter, a random controller a
//!   quarter): its later writes are discarded, it is killed (SIGKILL), the mount is unmounted
//!   and every unsynced byte dropped; the mount comes back clean at once and the node restarts
//!   at the window's end on what its disk kept. Needs root and `/dev/fuse`, so it is not in
//!   `all`. The start event records the variant and what was dropped.
//!
//! Scale-out kinds (not in `all`): `kill-master` (SIGKILL of the master of a random broker
//! set), `kill-namesrv` (of a random NameServer), `kill-proxy` (of a random proxy), each
//! restarted at the window's end. In a run with several broker sets every fault aimed at "the
//! broker master" (kill, pause, isolation, power loss, transfer) aims at the master of a set
//! drawn at random, and a proxy kill at one proxy.
//!
//! The clients' namespace is never cut off: faults are between servers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::bail;
use serde_json::{json, Value as Json};

use crate::cluster::{Clients, Cluster, BROKER_NAME};
use crate::lazyfs::{CutReport, LazyFs};
use crate::nodes::{port, write_clock_file, Role};
use crate::record::Recorder;
use crate::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    Partition,
    /// Always the *isolate-broker-master* partition (recorded as a partition).
    PartitionMaster,
    /// Always the *isolate-controller-leader* partition (recorded as a partition).
    PartitionController,
    /// Always the *majority-ring* partition (recorded as a partition).
    PartitionRing,
    /// Always the *bridge* partition (recorded as a partition).
    PartitionBridge,
    Kill,
    Pause,
    Loss,
    Clock,
    Transfer,
    Latency,
    /// SIGSTOP of the controller leader.
    PauseController,
    /// SIGKILL of a random controller.
    KillController,
    /// Raft leadership transfer of the controller quorum.
    TransferController,
    /// Leadership L1 -> L2 -> L1 within a broker heartbeat timeout.
    FlipFlop,
    /// The wall clock of a running controller or broker steps (libfaketime file).
    ClockStep,
    /// Power cut of a broker: unsynced bytes of its LazyFs store dropped, kill -9, restart.
    PowerLoss,
    /// SIGKILL of the master of a random broker set.
    KillMaster,
    /// SIGKILL of a random NameServer.
    KillNamesrv,
    /// SIGKILL of a random proxy.
    KillProxy,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Partition
            | FaultKind::PartitionMaster
            | FaultKind::PartitionController
            | FaultKind::PartitionRing
            | FaultKind::PartitionBridge => "partition",
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Loss => "loss",
            FaultKind::Clock => "clock",
            FaultKind::Transfer => "transfer",
            FaultKind::Latency => "latency",
            FaultKind::PauseController => "pause-controller",
            FaultKind::KillController => "kill-controller",
            FaultKind::TransferController => "transfer-controller",
            FaultKind::FlipFlop => "flip-flop",
            FaultKind::ClockStep => "clock-step",
            FaultKind::PowerLoss => "power-loss",
            FaultKind::KillMaster => "kill-master",
            FaultKind::KillNamesrv => "kill-namesrv",
            FaultKind::KillProxy => "kill-proxy",
        }
    }
}

/// The `--nemesis` words that name one kind each.
const KIND_WORDS: [(&str, FaultKind); 20] = [
    ("partition", FaultKind::Partition),
    ("partition-master", FaultKind::PartitionMaster),
    ("partition-controller", FaultKind::PartitionController),
    ("partition-ring", FaultKind::PartitionRing),
    ("partition-bridge", FaultKind::PartitionBridge),
    ("kill", FaultKind::Kill),
    ("pause", FaultKind::Pause),
    ("loss", FaultKind::Loss),
    ("clock", FaultKind::Clock),
    ("transfer", FaultKind::Transfer),
    ("latency", FaultKind::Latency),
    ("pause-controller", FaultKind::PauseController),
    ("kill-controller", FaultKind::KillController),
    ("transfer-controller", FaultKind::TransferController),
    ("flip-flop", FaultKind::FlipFlop),
    ("clock-step", FaultKind::ClockStep),
    ("power-loss", FaultKind::PowerLoss),
    ("kill-master", FaultKind::KillMaster),
    ("kill-namesrv", FaultKind::KillNamesrv),
    ("kill-proxy", FaultKind::KillProxy),
];

/// Parses `--nemesis`.
pub fn parse_kinds(spec: &str) -> anyhow::Result<Vec<FaultKind>> {
    let mut out = BTreeSet::new();
    for word in spec.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match word {
            "none" => {}
            "all" => out.extend([
                FaultKind::Partition,
                FaultKind::Kill,
                FaultKind::Pause,
                FaultKind::Loss,
                FaultKind::Transfer,
                FaultKind::Latency,
                FaultKind::Clock,
            ]),
            other => match KIND_WORDS.iter().find(|(name, _)| *name == other) {
                Some((_, kind)) => {
                    out.insert(*kind);
                }
                None => bail!(
                    "unknown nemesis {other:?}: use none, all, or a list of partition, partition-master, partition-controller, partition-ring, partition-bridge, kill, pause, loss, clock, transfer, latency, pause-controller, kill-controller, transfer-controller, flip-flop, clock-step, power-loss, kill-master, kill-namesrv, kill-proxy"
                ),
            },
        }
    }
    Ok(out.into_iter().collect())
}

/// One fault window of the timeline (offsets from the start of the workload).
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub kind: FaultKind,
    pub start: Duration,
    pub duration: Duration,
}

/// The timeline: quiet 3-6 s, then windows of 6-12 s separated by 4-8 s of quiet, all ending
/// at least 2 s before `limit`. Transfers are instant (a window of 1 s; 2 s for a controller
/// leadership transfer, 5 s for a flip-flop).
pub fn timeline(kinds: &[FaultKind], limit: Duration, rng: &mut Rng) -> Vec<Window> {
    let mut out = Vec::new();
    if kinds.is_empty() {
        return out;
    }
    let mut t = Duration::from_secs(rng.range(3, 6));
    while let Some(kind) = rng.pick(kinds).copied() {
        let duration = match kind {
            FaultKind::Transfer => Duration::from_secs(1),
            FaultKind::TransferController => Duration::from_secs(2),
            FaultKind::FlipFlop => Duration::from_secs(5),
            _ => Duration::from_secs(rng.range(6, 12)),
        };
        if t + duration + Duration::from_secs(2) > limit {
            break;
        }
        out.push(Window {
            kind,
            start: t,
            duration,
        });
        t += duration + Duration::from_secs(rng.range(4, 8));
    }
    out
}

/// What to undo at the end of a window.
#[derive(Debug, Clone)]
pub enum Active {
    /// Nodes with drop rules.
    Rules(Vec<String>),
    Killed(Vec<String>),
    Paused(Vec<String>),
    Clock(Vec<String>),
    /// Nodes whose relays were slowed.
    Latency(Vec<String>),
    /// Nothing to undo; the stop event records the nodes and this outcome.
    Done(Vec<String>, Json),
    /// A node whose clock file holds `offset`; its log is read from byte `log_from` at the end.
    ClockStep {
        node: String,
        file: std::path::PathBuf,
        log: std::path::PathBuf,
        offset: String,
        log_from: u64,
        real_start_ms: f64,
    },
    Nothing,
}

/// A Raft group member the nemesis aims at: (name, Raft node id, Raft address).
type Member = (String, u64, String);

/// How far the timestamps of `log`'s lines from byte `from` on lie outside the real interval
/// `[start_ms, stop_ms]` (the one farthest out, in seconds; 0 when every line lies inside), and
/// how many timestamped lines there were.
pub fn observed_skew(
    log: &std::path::Path,
    from: u64,
    start_ms: f64,
    stop_ms: f64,
) -> (Option<f64>, usize) {
    let Ok(bytes) = std::fs::read(log) else {
        return (None, 0);
    };
    let tail = bytes.get(from as usize..).unwrap_or_default();
    let text = String::from_utf8_lossy(tail);
    let mut lines = 0;
    let mut worst: Option<f64> = None;
    for raw in text.lines() {
        let line = crate::report::strip_ansi(raw);
        let Some(ts) = crate::report::log_line_time_ms(&line) else {
            continue;
        };
        lines += 1;
        // A second of slack for the write and the log's own buffering.
        let d = if ts < start_ms - 1000.0 {
            ts - start_ms
        } else if ts > stop_ms + 1000.0 {
            ts - stop_ms
        } else {
            0.0
        };
        if worst.is_none_or(|w| d.abs() > w.abs()) {
            worst = Some(d);
        }
    }
    (worst.map(|w| (w / 100.0).round() / 10.0), lines)
}

/// Runs faults against a cluster.
pub struct Nemesis {
    pub cluster: Arc<Mutex<Cluster>>,
    pub clients: Clients,
    pub recorder: Recorder,
    pub rng: Rng,
    /// Called after every fault starts (the controller workload records possible
    /// controller-triggered elections there).
    pub on_fault: Option<Arc<dyn Fn() + Send + Sync>>,
    /// The brokers' LazyFs mounts, when the run has the `power-loss` nemesis.
    pub power: Option<Arc<Mutex<PowerMounts>>>,
}

pub fn lock(cluster: &Mutex<Cluster>) -> MutexGuard<'_, Cluster> {
    match cluster.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Partition grudges: node -> the nodes it drops packets from.
pub type Grudge = BTreeMap<String, BTreeSet<String>>;

/// Every node in `a` and every node in `b` drop each other.
fn cut(grudge: &mut Grudge, a: &[String], b: &[String]) {
    for x in a {
        for y in b {
            if x != y {
                grudge.entry(x.clone()).or_default().insert(y.clone());
                grudge.entry(y.clone()).or_default().insert(x.clone());
            }
        }
    }
}

/// Each node sees the nodes within ring distance `d`, where `2d + 1` is the smallest majority
/// span; it drops the others.
pub fn majority_ring(ring: &[String]) -> Grudge {
    let n = ring.len();
    let majority = n / 2 + 1;
    let d = majority / 2;
    let mut grudge = Grudge::new();
    for (i, x) in ring.iter().enumerate() {
        for (j, y) in ring.iter().enumerate() {
            let dist = i.abs_diff(j).min(n - i.abs_diff(j));
            if dist > d {
                grudge.entry(x.clone()).or_default().insert(y.clone());
            }
        }
    }
    grudge
}

impl Nemesis {
    fn servers(&self) -> Vec<String> {
        lock(&self.cluster).nemesis_targets()
    }

    async fn controller_leader(&self) -> Option<String> {
        if !lock(&self.cluster).names(Role::RaftKv).is_empty() {
            // A raft-kv run: its Raft leader.
            return crate::kv_workload::leader(&self.cluster).await;
        }
        let addrs = lock(&self.cluster).controller_addrs();
        let leader = self.clients.controller_leader(&addrs).await?;
        lock(&self.cluster).name_of_addr(&leader)
    }

    /// The master of a broker set: of the only one, or (several sets) of one drawn at random.
    async fn broker_master(&mut self) -> Option<String> {
        if !lock(&self.cluster).names(Role::RaftKv).is_empty() {
            // A raft-kv run: the node that takes the writes is its Raft leader.
            return crate::kv_workload::leader(&self.cluster).await;
        }
        let set = self.pick_set();
        let namesrv = lock(&self.cluster).namesrv_addr();
        let (master, _) = self.clients.named_broker_set(&namesrv, &set).await?;
        lock(&self.cluster).name_of_addr(&master?)
    }

    /// The broker set a fault aims at: the only one, or one drawn at random (a draw only when
    /// there are several, so the classic shape's timelines stay as they were).
    fn pick_set(&mut self) -> String {
        let sets = lock(&self.cluster).set_names();
        if sets.len() > 1 {
            self.rng
                .pick(&sets)
                .cloned()
                .unwrap_or_else(|| BROKER_NAME.to_string())
        } else {
            BROKER_NAME.to_string()
        }
    }

    /// One of the run's nodes of `role` (all of them when there is one; a draw only when there
    /// are several).
    fn one_of(&mut self, role: Role) -> Vec<String> {
        let names = lock(&self.cluster).names(role);
        if names.len() > 1 {
            self.rng.pick(&names).cloned().into_iter().collect()
        } else {
            names
        }
    }

    /// `kill-master`, `kill-namesrv`, `kill-proxy`: SIGKILL of the master of a random broker
    /// set, of a random NameServer or of a random proxy, restarted at the window's end.
    async fn start_kill_one(&mut self, kind: FaultKind) -> anyhow::Result<Active> {
        let (targets, set) = match kind {
            FaultKind::KillMaster => {
                let set = self.pick_set();
                let namesrv = lock(&self.cluster).namesrv_addr();
                let master = match self.clients.named_broker_set(&namesrv, &set).await {
                    Some((Some(addr), _)) => lock(&self.cluster).name_of_addr(&addr),
                    _ => None,
                };
                (master.into_iter().collect::<Vec<_>>(), Some(set))
            }
            FaultKind::KillNamesrv => (self.one_of(Role::Namesrv), None),
            _ => (self.one_of(Role::Proxy), None),
        };
        {
            let mut cluster = lock(&self.cluster);
            for name in &targets {
                cluster.node_mut(name)?.kill();
            }
        }
        let mut value = json!({"nodes": targets});
        if let (Some(map), Some(set)) = (value.as_object_mut(), set) {
            map.insert("set".into(), json!(set));
            if targets.is_empty() {
                map.insert("skipped".into(), json!("the set has no master known"));
            }
        }
        self.recorder
            .nemesis(&format!("start-{}", kind.as_str()), value);
        Ok(Active::Killed(targets))
    }

    fn random_server(&mut self, role: Option<Role>) -> Option<String> {
        let names = match role {
            Some(role) => lock(&self.cluster).names(role),
            None => self.servers(),
        };
        self.rng.pick(&names).cloned()
    }

    fn apply_grudge(&self, grudge: &Grudge) -> anyhow::Result<Vec<String>> {
        let cluster = lock(&self.cluster);
        let mut touched = Vec::new();
        for (node, from) in grudge {
            let from: Vec<&str> = from.iter().map(String::as_str).collect();
            cluster.network.drop_from(node, &from)?;
            touched.push(node.clone());
        }
        Ok(touched)
    }

    /// Starts a fault of `kind`; records it; returns what to undo.
    pub async fn start(&mut self, kind: FaultKind) -> anyhow::Result<Active> {
        match kind {
            FaultKind::Partition => {
                let variants = [
                    "halves",
                    "isolate-controller-leader",
                    "isolate-broker-master",
                    "majority-ring",
                    "bridge",
                    "one-way",
                ];
                let variant = *self.rng.pick(&variants).unwrap_or(&"halves");
                self.start_partition(variant).await
            }
            FaultKind::PartitionMaster => self.start_partition("isolate-broker-master").await,
            FaultKind::PartitionController => {
                self.start_partition("isolate-controller-leader").await
            }
            FaultKind::PartitionRing => self.start_partition("majority-ring").await,
            FaultKind::PartitionBridge => self.start_partition("bridge").await,
            FaultKind::Kill => self.start_kill().await,
            FaultKind::Pause => self.start_pause().await,
            FaultKind::Loss => self.start_loss(),
            FaultKind::Clock => self.start_clock(),
            FaultKind::Transfer => {
                self.transfer().await?;
                Ok(Active::Nothing)
            }
            FaultKind::Latency => self.start_latency().await,
            FaultKind::PauseController => self.start_pause_controller().await,
            FaultKind::KillController => self.start_kill_controller().await,
            FaultKind::TransferController => self.start_transfer_controller().await,
            FaultKind::FlipFlop => self.start_flip_flop().await,
            FaultKind::ClockStep => self.start_clock_step(),
            FaultKind::PowerLoss => self.start_power_loss().await,
            FaultKind::KillMaster | FaultKind::KillNamesrv | FaultKind::KillProxy => {
                self.start_kill_one(kind).await
            }
        }
    }

    /// Packet loss of 20-40 % on one or two random servers.
    fn start_loss(&mut self) -> anyhow::Result<Active> {
        let mut servers = self.servers();
        self.rng.shuffle(&mut servers);
        servers.truncate(self.rng.range(1, 2) as usize);
        let percent = self.rng.range(20, 40) as u8;
        {
            let cluster = lock(&self.cluster);
            for name in &servers {
                cluster.network.lossy(name, percent)?;
            }
        }
        self.recorder
            .nemesis("start-loss", json!({"nodes": servers, "percent": percent}));
        Ok(Active::Rules(servers))
    }

    /// A controller or a broker restarted with its clock 30-600 s ahead or behind.
    fn start_clock(&mut self) -> anyhow::Result<Active> {
        let role = if self.rng.chance(0.5) {
            Role::Controller
        } else {
            Role::Broker
        };
        // Runs without controllers or brokers (raft-kv): any server.
        let Some(name) = self
            .random_server(Some(role))
            .or_else(|| self.random_server(None))
        else {
            return Ok(Active::Nothing);
        };
        let seconds = self.rng.range(30, 600) as i64;
        let offset = if self.rng.chance(0.5) {
            format!("+{seconds}s")
        } else {
            format!("-{seconds}s")
        };
        {
            let mut cluster = lock(&self.cluster);
            let node = cluster.node_mut(&name)?;
            node.kill();
            node.set_clock_offset(Some(offset.clone()));
            cluster.start(&name)?;
        }
        self.recorder
            .nemesis("start-clock", json!({"node": name, "offset": offset}));
        Ok(Active::Clock(vec![name]))
    }

    /// Cuts the power of a node (the broker master half of the time, a random broker or a
    /// random controller otherwise): see [`PowerMounts::cut`].
    async fn start_power_loss(&mut self) -> anyhow::Result<Active> {
        let Some(power) = self.power.clone() else {
            bail!("power-loss needs the nodes' data on LazyFs mounts (set up at the start)");
        };
        let master = self.broker_master().await;
        let roll = self.rng.below(4);
        let (variant, target) = match (roll, master.clone()) {
            (0 | 1, Some(m)) => ("broker-master", Some(m)),
            (3, _) if power.lock().is_ok_and(|p| p.has_controllers()) => {
                ("controller", self.random_server(Some(Role::Controller)))
            }
            _ => ("broker", self.random_server(Some(Role::Broker))),
        };
        let Some(target) = target else {
            self.recorder.nemesis(
                "start-power-loss",
                json!({"nodes": [], "skipped": "no broker"}),
            );
            return Ok(Active::Killed(Vec::new()));
        };
        let report = {
            let mut cluster = lock(&self.cluster);
            let node = cluster.node_mut(&target)?;
            let pids: Vec<u32> = node.pid().into_iter().collect();
            let mut power = match power.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            let report = power.cut(&target, &pids);
            // Reap the killed process (and kill it, should the cut have failed before that).
            node.kill();
            let report = report?;
            power.remount(&target)?;
            report
        };
        self.recorder.nemesis(
            "start-power-loss",
            json!({
                "nodes": [target],
                "variant": variant,
                "was_master": master.as_deref() == Some(target.as_str()),
                "dropped_bytes": report.dropped_bytes,
                "dropped_files": report.dropped_files,
                "discarded_write_bytes": report.discarded_write_bytes,
                "lost_entries": report.lost_entries,
            }),
        );
        Ok(Active::Killed(vec![target]))
    }

    /// The Raft group's members: the controllers, or in a raft-kv run its members (node `cN`
    /// or `nN` has Raft id N).
    fn raft_members(&self) -> Vec<Member> {
        let cluster = lock(&self.cluster);
        let mut names = cluster.names(Role::Controller);
        if names.is_empty() {
            names = cluster.names(Role::RaftKv);
        }
        names
            .into_iter()
            .filter_map(|name| {
                let id = name.get(1..)?.parse().ok()?;
                let ip = cluster.node(&name)?.ip;
                Some((name, id, format!("{ip}:{}", port::RAFT)))
            })
            .collect()
    }

    /// The cluster's secret, which the Raft admin and status calls prove.
    fn cluster_secret(&self) -> Option<rocketraft_common::trust::ClusterSecret> {
        lock(&self.cluster).options.cluster_secret.clone()
    }

    /// The Raft leader as the members' Raft status says (the highest term's).
    async fn raft_leader(&self, members: &[Member]) -> Option<Member> {
        let mut best: Option<(u64, u64)> = None;
        let secret = self.cluster_secret();
        for (_, _, addr) in members {
            let Ok(status) =
                rocketraft_raft::remote_status(addr, Duration::from_millis(1500), secret.as_ref())
                    .await
            else {
                continue;
            };
            if let Some(leader) = status.leader {
                if best.is_none_or(|(term, _)| status.term > term) {
                    best = Some((status.term, leader));
                }
            }
        }
        let (_, id) = best?;
        members.iter().find(|m| m.1 == id).cloned()
    }

    /// A leadership transfer to `to`, asked of the member at `via`; its outcome as JSON.
    async fn raft_transfer(&self, via: &str, to: u64) -> Json {
        let start = std::time::Instant::now();
        let secret = self.cluster_secret();
        let result = rocketraft_raft::remote_admin(
            via,
            &rocketraft_raft::AdminRequest::TransferLeader { to },
            Duration::from_secs(15),
            secret.as_ref(),
        )
        .await;
        let ms = start.elapsed().as_millis() as u64;
        match result {
            Ok(answer) => json!({"ok": true, "answer": answer, "ms": ms}),
            Err(e) => json!({"ok": false, "error": e, "ms": ms}),
        }
    }

    async fn start_pause_controller(&mut self) -> anyhow::Result<Active> {
        let leader = self.controller_leader().await;
        let mut paused = Vec::new();
        if let Some(name) = &leader {
            if lock(&self.cluster).node_mut(name)?.pause() {
                paused.push(name.clone());
            }
        }
        self.recorder.nemesis(
            "start-pause-controller",
            json!({"nodes": paused, "leader": leader}),
        );
        Ok(Active::Paused(paused))
    }

    async fn start_kill_controller(&mut self) -> anyhow::Result<Active> {
        let members: Vec<String> = self.raft_members().into_iter().map(|m| m.0).collect();
        let leader = self.controller_leader().await;
        let aim_at_leader = self.rng.chance(0.5);
        let target = match (&leader, aim_at_leader) {
            (Some(leader), true) => Some(leader.clone()),
            _ => self.rng.pick(&members).cloned(),
        };
        let Some(target) = target else {
            self.recorder.nemesis(
                "start-kill-controller",
                json!({"nodes": [], "skipped": "no controllers"}),
            );
            return Ok(Active::Killed(Vec::new()));
        };
        lock(&self.cluster).node_mut(&target)?.kill();
        self.recorder.nemesis(
            "start-kill-controller",
            json!({"nodes": [target], "leader": leader, "was_leader": leader.as_deref() == Some(target.as_str())}),
        );
        Ok(Active::Killed(vec![target]))
    }

    /// Records that the fault `event` was skipped (`why`); its stop records the same.
    fn skipped(&self, event: &str, why: &str) -> Active {
        self.recorder.nemesis(event, json!({"skipped": why}));
        Active::Done(Vec::new(), json!({"skipped": why}))
    }

    async fn start_transfer_controller(&mut self) -> anyhow::Result<Active> {
        let members = self.raft_members();
        let Some(leader) = self.raft_leader(&members).await else {
            return Ok(self.skipped("start-transfer-controller", "no Raft leader"));
        };
        let others: Vec<Member> = members
            .iter()
            .filter(|m| m.1 != leader.1)
            .cloned()
            .collect();
        let Some(target) = self.rng.pick(&others).cloned() else {
            return Ok(self.skipped("start-transfer-controller", "a single member"));
        };
        self.recorder.nemesis(
            "start-transfer-controller",
            json!({"from": leader.0, "to": target.0}),
        );
        let result = self.raft_transfer(&leader.2, target.1).await;
        let after = self.raft_leader(&members).await.map(|m| m.0);
        Ok(Active::Done(
            vec![leader.0, target.0],
            json!({"result": result, "leader_after": after}),
        ))
    }

    async fn start_flip_flop(&mut self) -> anyhow::Result<Active> {
        let members = self.raft_members();
        let Some(first) = self.raft_leader(&members).await else {
            return Ok(self.skipped("start-flip-flop", "no Raft leader"));
        };
        let others: Vec<Member> = members.iter().filter(|m| m.1 != first.1).cloned().collect();
        let Some(second) = self.rng.pick(&others).cloned() else {
            return Ok(self.skipped("start-flip-flop", "a single member"));
        };
        self.recorder.nemesis(
            "start-flip-flop",
            json!({"from": first.0, "to": second.0, "back_after_ms": 1500}),
        );
        let start = std::time::Instant::now();
        let away = self.raft_transfer(&first.2, second.1).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Asked of L2 (the leader now, if the first step worked; else forwarded).
        let back = self.raft_transfer(&second.2, first.1).await;
        let elapsed_ms = start.elapsed().as_millis() as u64;
        let after = self.raft_leader(&members).await.map(|m| m.0);
        Ok(Active::Done(
            vec![first.0, second.0],
            json!({"away": away, "back": back, "elapsed_ms": elapsed_ms, "leader_after": after}),
        ))
    }

    fn start_clock_step(&mut self) -> anyhow::Result<Active> {
        let candidates: Vec<(String, std::path::PathBuf, std::path::PathBuf)> = lock(&self.cluster)
            .nodes
            .iter()
            .filter_map(|n| {
                n.clock_file()
                    .map(|f| (n.name.clone(), f.to_path_buf(), n.log_path()))
            })
            .collect();
        let Some((node, file, log)) = self.rng.pick(&candidates).cloned() else {
            self.recorder.nemesis(
                "start-clock-step",
                json!({"skipped": "no node runs under a clock file"}),
            );
            return Ok(Active::Nothing);
        };
        let seconds = self.rng.range(60, 300);
        let offset = if self.rng.chance(0.5) {
            format!("+{seconds}s")
        } else {
            format!("-{seconds}s")
        };
        let log_from = std::fs::metadata(&log).map_or(0, |m| m.len());
        let real_start_ms = crate::report::wall_clock_ms() as f64;
        write_clock_file(&file, &offset)?;
        self.recorder
            .nemesis("start-clock-step", json!({"node": node, "offset": offset}));
        Ok(Active::ClockStep {
            node,
            file,
            log,
            offset,
            log_from,
            real_start_ms,
        })
    }

    async fn start_latency(&mut self) -> anyhow::Result<Active> {
        let with_relay: Vec<String> = lock(&self.cluster)
            .relays
            .iter()
            .map(|r| r.node.clone())
            .collect();
        if with_relay.is_empty() {
            self.recorder
                .nemesis("start-latency", json!({"skipped": "no relays in this run"}));
            return Ok(Active::Latency(Vec::new()));
        }
        // Servers with a relay: brokers, controllers, raft-kv members.
        let servers: Vec<String> = {
            let cluster = lock(&self.cluster);
            [Role::Broker, Role::Controller, Role::RaftKv]
                .into_iter()
                .flat_map(|role| cluster.names(role))
                .collect()
        };
        let variants = ["servers", "one-server", "clients", "everything"];
        let variant = *self.rng.pick(&variants).unwrap_or(&"servers");
        let mut nodes: Vec<String> = match variant {
            "servers" => servers,
            "one-server" => self.rng.pick(&servers).cloned().into_iter().collect(),
            "clients" => vec![crate::cluster::CLIENT_NODE.to_string(), "proxy".to_string()],
            _ => with_relay.clone(),
        };
        nodes.retain(|n| with_relay.contains(n));
        let delay = Duration::from_millis(self.rng.range(50, 800));
        {
            let cluster = lock(&self.cluster);
            for relay in cluster.relays.iter().filter(|r| nodes.contains(&r.node)) {
                relay.control.set_delay(delay);
            }
        }
        self.recorder.nemesis(
            "start-latency",
            json!({"variant": variant, "nodes": nodes, "delay_ms": delay.as_millis() as u64}),
        );
        Ok(Active::Latency(nodes))
    }

    async fn start_partition(&mut self, variant: &str) -> anyhow::Result<Active> {
        let mut servers = self.servers();
        self.rng.shuffle(&mut servers);
        let mut grudge = Grudge::new();
        let isolate = |grudge: &mut Grudge, one: Option<String>, servers: &[String]| {
            if let Some(one) = one {
                let rest: Vec<String> = servers.iter().filter(|s| **s != one).cloned().collect();
                cut(grudge, &[one], &rest);
            }
        };
        match variant {
            "halves" => {
                let (a, b) = servers.split_at(servers.len() / 2);
                cut(&mut grudge, a, b);
            }
            "isolate-controller-leader" => {
                let leader = self.controller_leader().await;
                isolate(&mut grudge, leader, &servers);
            }
            "isolate-broker-master" => {
                let master = self.broker_master().await;
                isolate(&mut grudge, master, &servers);
            }
            "majority-ring" => grudge = majority_ring(&servers),
            "bridge" => {
                let (bridge, rest) = servers.split_at(1);
                let (a, b) = rest.split_at(rest.len() / 2);
                cut(&mut grudge, a, b);
                let _ = bridge;
            }
            _ => {
                // one-way: the first node receives nothing from the others.
                if let Some((one, rest)) = servers.split_first() {
                    grudge.insert(one.clone(), rest.iter().cloned().collect());
                }
            }
        }
        let touched = self.apply_grudge(&grudge)?;
        let described: BTreeMap<&String, Vec<&String>> = grudge
            .iter()
            .map(|(k, v)| (k, v.iter().collect()))
            .collect();
        self.recorder.nemesis(
            "start-partition",
            json!({"variant": variant, "drops": described}),
        );
        Ok(Active::Rules(touched))
    }

    async fn start_kill(&mut self) -> anyhow::Result<Active> {
        let mut variants = vec![
            "one",
            "controller-majority",
            "broker-master",
            "leader-and-master",
        ];
        let has_proxy = !lock(&self.cluster).names(Role::Proxy).is_empty();
        if has_proxy {
            variants.push("proxy");
        }
        let variant = *self.rng.pick(&variants).unwrap_or(&"one");
        let mut targets: Vec<String> = match variant {
            "one" => self.random_server(None).into_iter().collect(),
            "controller-majority" => {
                let mut c = lock(&self.cluster).names(Role::Controller);
                if c.is_empty() {
                    c = lock(&self.cluster).names(Role::RaftKv);
                }
                self.rng.shuffle(&mut c);
                c.truncate(c.len() / 2 + 1);
                c
            }
            "broker-master" => self.broker_master().await.into_iter().collect(),
            "proxy" => self.one_of(Role::Proxy),
            _ => {
                let mut both: Vec<String> = self.controller_leader().await.into_iter().collect();
                both.extend(self.broker_master().await);
                both.dedup();
                both
            }
        };
        // What the event records: the variant aimed at, or that nobody could be aimed at.
        let mut label = variant.to_string();
        if targets.is_empty() {
            // Nobody to aim at (no leader or master right now): kill a random server.
            targets.extend(self.random_server(None));
            label = format!("{variant} (none known: a random server)");
        }
        {
            let mut cluster = lock(&self.cluster);
            for name in &targets {
                cluster.node_mut(name)?.kill();
            }
        }
        self.recorder
            .nemesis("start-kill", json!({"variant": label, "nodes": targets}));
        Ok(Active::Killed(targets))
    }

    async fn start_pause(&mut self) -> anyhow::Result<Active> {
        let variants = ["one", "broker-master", "controller-leader"];
        let variant = *self.rng.pick(&variants).unwrap_or(&"one");
        let target = match variant {
            "broker-master" => self.broker_master().await,
            "controller-leader" => self.controller_leader().await,
            _ => None,
        }
        .or_else(|| self.random_server(None));
        let mut paused = Vec::new();
        if let Some(name) = target {
            let mut cluster = lock(&self.cluster);
            if cluster.node_mut(&name)?.pause() {
                paused.push(name);
            }
        }
        self.recorder
            .nemesis("start-pause", json!({"variant": variant, "nodes": paused}));
        Ok(Active::Paused(paused))
    }

    /// Asks the controller leader to elect a designated slave as the master.
    async fn transfer(&mut self) -> anyhow::Result<()> {
        let set = self.pick_set();
        let addrs = lock(&self.cluster).controller_addrs();
        let Some(leader) = self.clients.controller_leader(&addrs).await else {
            self.recorder
                .nemesis("transfer", json!({"skipped": "no controller leader"}));
            return Ok(());
        };
        let info = match self
            .clients
            .controller
            .get_replica_info(&leader, &set)
            .await
        {
            Ok(info) => info,
            Err(e) => {
                self.recorder
                    .nemesis("transfer", json!({"skipped": e.to_string()}));
                return Ok(());
            }
        };
        let candidates: Vec<i64> = info
            .sync_state_set
            .iter()
            .copied()
            .filter(|id| Some(*id) != info.master_broker_id)
            .collect();
        let Some(target) = self.rng.pick(&candidates).copied() else {
            self.recorder.nemesis(
                "transfer",
                json!({"skipped": "no slave in the SyncStateSet", "sync_state_set": info.sync_state_set}),
            );
            return Ok(());
        };
        let result = self
            .clients
            .controller
            .elect_master(&leader, "DefaultCluster", &set, Some(target), true)
            .await;
        let outcome: Json = match result {
            Ok(m) => {
                json!({"code": m.code, "master": m.master_broker_id, "master_epoch": m.master_epoch})
            }
            Err(e) => json!({"error": e.to_string()}),
        };
        self.recorder.nemesis(
            "transfer",
            json!({"set": set, "from": info.master_broker_id, "to": target, "result": outcome}),
        );
        Ok(())
    }

    /// Undoes `active` and records it.
    pub fn stop(&mut self, kind: FaultKind, active: &Active) -> anyhow::Result<()> {
        let nodes = match active {
            Active::Rules(n)
            | Active::Killed(n)
            | Active::Paused(n)
            | Active::Clock(n)
            | Active::Latency(n) => n.clone(),
            Active::Done(nodes, outcome) => {
                let mut value = json!({"nodes": nodes});
                if let (Some(map), Some(extra)) = (value.as_object_mut(), outcome.as_object()) {
                    map.extend(extra.clone());
                }
                self.recorder
                    .nemesis(&format!("stop-{}", kind.as_str()), value);
                return Ok(());
            }
            Active::ClockStep { .. } => return self.stop_clock_step(kind, active),
            Active::Nothing => return Ok(()),
        };
        self.undo(active)?;
        self.recorder
            .nemesis(&format!("stop-{}", kind.as_str()), json!({"nodes": nodes}));
        Ok(())
    }

    /// Undoes a fault that acts on `nodes` until stopped: rules, kills, pauses, clocks, delays.
    fn undo(&mut self, active: &Active) -> anyhow::Result<()> {
        let mut cluster = lock(&self.cluster);
        match active {
            Active::Rules(nodes) => {
                for node in nodes {
                    cluster.network.heal_node(node)?;
                }
            }
            Active::Killed(nodes) => {
                for node in nodes {
                    cluster.start(node)?;
                }
            }
            Active::Paused(nodes) => {
                for node in nodes {
                    cluster.node_mut(node)?.resume();
                }
            }
            Active::Clock(nodes) => {
                for node in nodes {
                    let n = cluster.node_mut(node)?;
                    n.kill();
                    n.set_clock_offset(None);
                    cluster.start(node)?;
                }
            }
            Active::Latency(nodes) => {
                for relay in cluster.relays.iter().filter(|r| nodes.contains(&r.node)) {
                    relay.control.set_delay(Duration::ZERO);
                }
            }
            Active::Done(..) | Active::ClockStep { .. } | Active::Nothing => {}
        }
        Ok(())
    }

    /// Steps the clock back (`+0`) and records the skew the node's log showed.
    fn stop_clock_step(&mut self, kind: FaultKind, active: &Active) -> anyhow::Result<()> {
        let Active::ClockStep {
            node,
            file,
            log,
            offset,
            log_from,
            real_start_ms,
        } = active
        else {
            return Ok(());
        };
        write_clock_file(file, "+0")?;
        let real_stop_ms = crate::report::wall_clock_ms() as f64;
        let (skew, lines) = observed_skew(log, *log_from, *real_start_ms, real_stop_ms);
        self.recorder.nemesis(
            &format!("stop-{}", kind.as_str()),
            json!({"nodes": [node], "offset": offset, "observed_skew_s": skew, "log_lines": lines}),
        );
        Ok(())
    }

    /// Heals everything: every rule removed, paused nodes resumed, stopped nodes and clocks
    /// restarted normally.
    pub fn heal_all(&mut self) -> anyhow::Result<()> {
        let mut cluster = lock(&self.cluster);
        cluster.network.heal_all()?;
        for relay in &cluster.relays {
            relay.control.set_delay(Duration::ZERO);
        }
        let mut restarted = Vec::new();
        for name in cluster.server_names() {
            let node = cluster.node_mut(&name)?;
            if let Some(file) = node.clock_file() {
                write_clock_file(file, "+0")?;
            }
            node.resume();
            if node.clock_offset().is_some() {
                node.kill();
                node.set_clock_offset(None);
            }
            if !node.is_running() {
                restarted.push(name.clone());
                cluster.start(&name)?;
            }
        }
        drop(cluster);
        self.recorder
            .nemesis("heal-all", json!({"restarted": restarted}));
        if let Some(hook) = &self.on_fault {
            hook();
        }
        Ok(())
    }

    /// Runs `windows` (offsets from now) until done or `stop` fires; always undoes the fault in
    /// progress.
    pub async fn run(
        &mut self,
        windows: Vec<Window>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let origin = tokio::time::Instant::now();
        for window in windows {
            if sleep_or_stop(origin + window.start, &mut stop).await {
                break;
            }
            let active = match self.start(window.kind).await {
                Ok(active) => active,
                Err(e) => {
                    tracing::warn!(kind = window.kind.as_str(), error = %e, "nemesis failed to start");
                    self.recorder.nemesis(
                        &format!("start-{}", window.kind.as_str()),
                        json!({"error": e.to_string()}),
                    );
                    continue;
                }
            };
            if let Some(hook) = &self.on_fault {
                hook();
            }
            eprintln!(
                "  [{:>5.1}s] nemesis: {} started",
                origin.elapsed().as_secs_f64(),
                window.kind.as_str()
            );
            let stopped = sleep_or_stop(origin + window.start + window.duration, &mut stop).await;
            self.stop(window.kind, &active)?;
            eprintln!(
                "  [{:>5.1}s] nemesis: {} stopped",
                origin.elapsed().as_secs_f64(),
                window.kind.as_str()
            );
            if stopped {
                break;
            }
        }
        Ok(())
    }
}

/// Sleeps until `at`; true when `stop` fired first.
async fn sleep_or_stop(
    at: tokio::time::Instant,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep_until(at) => false,
        _ = stop.changed() => true,
    }
}

/// The brokers' stores and controllers' data on [`LazyFs`] mounts hosted by the harness (the
/// `power-loss` nemesis).
///
/// The `nodes` directory is first bind-mounted on itself and made *shared*, and each LazyFs
/// mounted inside it: every process starts through `ip netns exec`, which gives it its own
/// mount namespace with copies of the harness's mounts turned into *slaves*, so the unmount of
/// a cut propagates into those copies and the FUSE connection really ends (dropping the
/// kernel's page cache of it). (The bind mount is on the parent, not on `store` itself: fuser
/// tries an unmount of the mount point when its session handle goes, which must find nothing
/// there.) Dropping this unmounts everything (after the processes are gone).
pub struct PowerMounts {
    mounts: BTreeMap<String, LazyFs>,
    binds: Vec<std::path::PathBuf>,
    controllers: Vec<String>,
}

impl PowerMounts {
    /// Mounts a LazyFs over `nodes/<name>/store-disk` at `nodes/<name>/store` for every broker
    /// and over `nodes/<name>/data-disk` at `nodes/<name>/data` for every controller. Call
    /// before any process starts.
    pub fn mount(cluster: &Cluster) -> anyhow::Result<PowerMounts> {
        if let Err(why) = crate::lazyfs::fuse_available() {
            bail!("the power-loss nemesis needs FUSE: {why}");
        }
        let mut out = PowerMounts {
            mounts: BTreeMap::new(),
            binds: Vec::new(),
            controllers: cluster.names(Role::Controller),
        };
        let brokers = cluster
            .names(Role::Broker)
            .into_iter()
            .map(|n| (n, "store"));
        let controllers = cluster
            .names(Role::Controller)
            .into_iter()
            .map(|n| (n, "data"));
        for (name, sub) in brokers.chain(controllers) {
            let Some(node) = cluster.node(&name) else {
                continue;
            };
            let store = node.dir.join(sub);
            let disk = node.dir.join(format!("{sub}-disk"));
            for dir in [&store, &disk] {
                std::fs::create_dir_all(dir)
                    .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
            }
            if let Some(nodes) = node.dir.parent() {
                if !out.binds.iter().any(|b| b == nodes) {
                    make_shared_bind(nodes)?;
                    out.binds.push(nodes.to_path_buf());
                }
            }
            let fs = LazyFs::mount(&disk, &store)?;
            out.mounts.insert(name, fs);
        }
        Ok(out)
    }

    /// Cuts the power of `node`: discard its later writes, SIGKILL `pids`, unmount, drop every
    /// unsynced byte. [`PowerMounts::remount`] brings the mount back.
    pub fn cut(&mut self, node: &str, pids: &[u32]) -> anyhow::Result<CutReport> {
        match self.mounts.get_mut(node) {
            Some(fs) => fs.power_cut(pids),
            None => bail!("{node} has no LazyFs mount"),
        }
    }

    /// Whether controllers' data is on LazyFs mounts too.
    pub fn has_controllers(&self) -> bool {
        self.controllers.iter().any(|n| self.mounts.contains_key(n))
    }

    pub fn remount(&mut self, node: &str) -> anyhow::Result<()> {
        match self.mounts.get_mut(node) {
            Some(fs) => fs.remount(),
            None => bail!("{node} has no LazyFs mount"),
        }
    }

    /// Counters summed over the mounts.
    pub fn stats(&self) -> crate::lazyfs::LazyFsStats {
        let mut total = crate::lazyfs::LazyFsStats::default();
        for fs in self.mounts.values() {
            let s = fs.stats();
            total.cuts += s.cuts;
            total.dropped_bytes += s.dropped_bytes;
            total.dropped_files += s.dropped_files;
            total.discarded_write_bytes += s.discarded_write_bytes;
            total.syncs += s.syncs;
            total.synced_bytes += s.synced_bytes;
            total.lost_entries += s.lost_entries;
        }
        total
    }
}

impl Drop for PowerMounts {
    fn drop(&mut self) {
        // LazyFs unmounts itself; then the bind mounts under them go.
        self.mounts.clear();
        for path in self.binds.drain(..) {
            if let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) {
                // SAFETY: a valid C string.
                if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                    tracing::warn!(path = %path.display(), error = %std::io::Error::last_os_error(), "cannot unmount the bind mount");
                }
            }
        }
    }
}

/// Bind-mounts `dir` on itself and marks it shared (see [`PowerMounts`]).
fn make_shared_bind(dir: &std::path::Path) -> anyhow::Result<()> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| anyhow::anyhow!("{} has a NUL", dir.display()))?;
    // SAFETY: valid C strings; null type and data are allowed for MS_BIND and MS_SHARED.
    let rc = unsafe {
        libc::mount(
            c.as_ptr(),
            c.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        bail!(
            "cannot bind-mount {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: as above.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            c.as_ptr(),
            std::ptr::null(),
            libc::MS_SHARED,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        // SAFETY: as above.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        bail!("cannot make {} a shared mount: {err}", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse() {
        assert_eq!(parse_kinds("none").expect("none"), vec![]);
        assert_eq!(
            parse_kinds("kill,partition").expect("list"),
            vec![FaultKind::Partition, FaultKind::Kill]
        );
        let all = parse_kinds("all").expect("all");
        assert_eq!(all.len(), 7);
        assert_eq!(
            parse_kinds(
                "pause-controller,kill-controller,transfer-controller,flip-flop,clock-step"
            )
            .expect("controller kinds")
            .len(),
            5
        );
        for kind in [
            "pause-controller",
            "kill-controller",
            "transfer-controller",
            "flip-flop",
            "clock-step",
        ] {
            assert_eq!(parse_kinds(kind).expect(kind)[0].as_str(), kind);
        }
        assert!(all.contains(&FaultKind::Latency) && all.contains(&FaultKind::Clock));
        assert_eq!(
            parse_kinds("latency").expect("latency"),
            vec![FaultKind::Latency]
        );
        assert!(parse_kinds("meteor").is_err());
        let scale_out = parse_kinds("kill-proxy,kill-master,kill-namesrv").expect("scale-out");
        assert_eq!(
            scale_out,
            vec![
                FaultKind::KillMaster,
                FaultKind::KillNamesrv,
                FaultKind::KillProxy
            ]
        );
        for kind in scale_out {
            assert_eq!(parse_kinds(kind.as_str()).expect("word"), vec![kind]);
            assert!(!all.contains(&kind));
        }
    }

    #[test]
    fn a_clock_step_shows_in_the_timestamps_of_the_lines_logged_during_the_window() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("node.log");
        let before = "2026-05-09T07:00:00.000000Z  INFO long before the window\n";
        std::fs::write(
            &log,
            format!(
                "{before}\u{1b}[2m2026-05-09T07:27:40.000000Z\u{1b}[0m  INFO stepped back\n===== harness line =====\n2026-05-09T07:29:35.000000Z  INFO back to normal\n"
            ),
        )
        .expect("log");
        let at = |s: &str| crate::report::log_line_time_ms(s).expect("time");
        let (start, stop) = (at("2026-05-09T07:29:33Z"), at("2026-05-09T07:29:43Z"));
        let (skew, lines) = observed_skew(&log, before.len() as u64, start, stop);
        assert_eq!((skew, lines), (Some(-113.0), 2));
        // Nothing logged during the window: nothing observed.
        let len = std::fs::metadata(&log).expect("log").len();
        assert_eq!(observed_skew(&log, len, start, stop), (None, 0));
        assert_eq!(
            observed_skew(&dir.path().join("none"), 0, start, stop),
            (None, 0)
        );
    }

    #[test]
    fn the_timeline_is_seeded_and_fits() {
        let kinds = [FaultKind::Partition, FaultKind::Kill];
        let limit = Duration::from_secs(60);
        let a = timeline(&kinds, limit, &mut Rng::new(1));
        let b = timeline(&kinds, limit, &mut Rng::new(1));
        assert_eq!(a, b);
        assert!(a.len() >= 3, "{a:?}");
        for w in &a {
            assert!(w.start + w.duration + Duration::from_secs(2) <= limit);
        }
        for pair in a.windows(2) {
            assert!(pair[0].start + pair[0].duration < pair[1].start);
        }
        assert!(timeline(&[], limit, &mut Rng::new(1)).is_empty());
    }

    #[test]
    fn a_majority_ring_gives_everyone_a_different_majority() {
        let ring: Vec<String> = (1..=7).map(|i| format!("n{i}")).collect();
        let grudge = majority_ring(&ring);
        let mut views = BTreeSet::new();
        for node in &ring {
            let dropped = grudge.get(node).map_or(0, BTreeSet::len);
            assert_eq!(7 - dropped, 5, "{node} sees itself and 4 others");
            views.insert(grudge.get(node).cloned().unwrap_or_default());
            // Symmetric.
            for other in grudge.get(node).into_iter().flatten() {
                assert!(grudge[other].contains(node));
            }
        }
        assert_eq!(views.len(), 7);
    }
}
