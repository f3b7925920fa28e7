//! The invariants, checked on every sample of every running node and on every client answer,
//! and the run's trace.
//!
//! - **One master per broker set and epoch**: across every node's applied state and every
//!   acknowledged election, a `(brokerName, masterEpoch)` pair names one master (or none).
//! - **Epochs never go back** on a node while its process runs (a restarted process rebuilds
//!   its state from the log, from nothing).
//! - **State-machine safety**: every node's applied state at a given applied index is the same.
//! - **Acknowledged decisions survive**: every leader's log holds every acknowledged entry with
//!   the same log id, and a node that applied past an acknowledged election holds its epoch
//!   or a later one.
//! - **Linearizable reads**: a `GET_REPLICA_INFO` answer shows epochs no older than those of the
//!   decisions acknowledged before the read started.
//! - **No panic** (counted by the panic hook) and no fatal Raft error.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use openraft::alias::LogIdOf;
use openraft::ServerState;
use rocketraft_controller::ControllerState;
use rocketraft_raft::NodeId;
use rocketraft_raft::TypeConfig;

use crate::store::DurableLog;

type LogId = LogIdOf<TypeConfig>;

/// At most this many failures are kept per run (the first is the one to chase).
const MAX_FAILURES: usize = 20;

/// Which invariant a failure broke: each failure line carries its name in brackets, and the
/// checker's self-tests (`sim/tests/sim.rs`) assert that a deliberately broken run breaks the
/// one it should.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Violation {
    /// Two masters for one broker set and master epoch.
    TwoMasters,
    /// An epoch or the applied index went back on a running node.
    WentBack,
    /// Two nodes applied different states at the same applied index.
    StateDiverged,
    /// An acknowledged write is missing from a later leader's log or applied state.
    AckedLost,
    /// A read showed epochs older than ones acknowledged before it began.
    StaleRead,
    /// Something panicked.
    Panic,
    /// A Raft node stopped with a fatal error.
    RaftFatal,
    /// No write, or no convergence, after everything healed.
    NoRecovery,
    /// The simulation itself could not do its work (setup, an unexpected answer).
    Harness,
    /// Broker replicas: an acknowledged message is missing on a member of the SyncStateSet it
    /// was acknowledged under, or on a later master.
    MessageLost,
    /// Broker replicas: a replica's confirm offset went back within one master epoch.
    ConfirmBack,
    /// Broker replicas: two replicas master (or acknowledging) in one master epoch.
    BrokerTwoMasters,
    /// Broker replicas: two replicas writable (master with a valid lease) at one instant.
    LeaseOverlap,
    /// Broker replicas: bytes once below some replica's confirm offset differ (or are missing)
    /// on a replica confirming them or on a master.
    ConfirmedLost,
}

impl Violation {
    /// The name printed in failure lines.
    pub fn name(self) -> &'static str {
        match self {
            Violation::TwoMasters => "two-masters",
            Violation::WentBack => "went-back",
            Violation::StateDiverged => "state-diverged",
            Violation::AckedLost => "acked-lost",
            Violation::StaleRead => "stale-read",
            Violation::Panic => "panic",
            Violation::RaftFatal => "raft-fatal",
            Violation::NoRecovery => "no-recovery",
            Violation::Harness => "harness",
            Violation::MessageLost => "message-lost",
            Violation::ConfirmBack => "confirm-back",
            Violation::BrokerTwoMasters => "broker-two-masters",
            Violation::LeaseOverlap => "lease-overlap",
            Violation::ConfirmedLost => "confirmed-lost",
        }
    }
}

/// The highest epochs acknowledged for one broker set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Floor {
    pub master_epoch: i32,
    pub sync_state_set_epoch: i32,
}

#[derive(Debug, Default)]
struct NodeSeen {
    /// Per broker set: (master epoch, SyncStateSet epoch) at the last sample.
    epochs: BTreeMap<String, (i32, i32)>,
    last_applied: u64,
    /// The applied index whose state was last compared (a state changes only by applying, so
    /// one comparison per index and process is enough: encoding it is the sampler's cost).
    compared_index: Option<u64>,
    /// The term this node last led in, to trace each new leadership once.
    led_term: Option<u64>,
}

/// An acknowledged write.
#[derive(Debug, Clone)]
struct Acked {
    log_id: LogId,
    what: String,
    /// An acknowledged election: (broker set, master epoch).
    elected: Option<(String, i32)>,
}

/// What one run observed.
#[derive(Debug)]
pub struct Checker {
    start: tokio::time::Instant,
    trace: Vec<String>,
    failures: Vec<String>,
    /// Every invariant broken, in the order first broken.
    violations: Vec<Violation>,
    /// Every failure reported so far: a broken state is seen again at every sample, and
    /// reported once.
    reported: BTreeSet<String>,
    /// Applied index -> the applied state there (JSON) and the node first seen with it.
    by_index: BTreeMap<u64, (String, NodeId)>,
    /// (broker set, master epoch) -> master, and where it was first seen.
    epoch_master: BTreeMap<(String, i32), (Option<i64>, String)>,
    nodes: BTreeMap<NodeId, NodeSeen>,
    acked: Vec<Acked>,
    floors: BTreeMap<String, Floor>,
}

impl Checker {
    pub fn new() -> Self {
        Checker {
            start: tokio::time::Instant::now(),
            trace: Vec::new(),
            failures: Vec::new(),
            violations: Vec::new(),
            reported: BTreeSet::new(),
            by_index: BTreeMap::new(),
            epoch_master: BTreeMap::new(),
            nodes: BTreeMap::new(),
            acked: Vec::new(),
            floors: BTreeMap::new(),
        }
    }

    /// Starts the clock of the trace's stamps: call inside the run's runtime (its paused clock
    /// began at a wall-clock instant of its own).
    pub fn restart_clock(&mut self) {
        self.start = tokio::time::Instant::now();
    }

    /// Simulated milliseconds since the run started.
    pub fn now_ms(&self) -> u128 {
        (tokio::time::Instant::now() - self.start).as_millis()
    }

    /// Appends a trace line stamped with the simulated time.
    pub fn log(&mut self, line: impl AsRef<str>) {
        let stamped = format!("{:>7}ms {}", self.now_ms(), line.as_ref());
        self.trace.push(stamped);
    }

    /// Records a broken invariant (also traced).
    pub fn fail(&mut self, kind: Violation, what: impl AsRef<str>) {
        if !self.reported.insert(what.as_ref().to_string()) {
            return;
        }
        let line = format!("{}ms [{}] {}", self.now_ms(), kind.name(), what.as_ref());
        self.log(format!("FAIL [{}] {}", kind.name(), what.as_ref()));
        if self.failures.len() < MAX_FAILURES {
            self.failures.push(line);
        }
        if !self.violations.contains(&kind) {
            self.violations.push(kind);
        }
    }

    pub fn failures(&self) -> &[String] {
        &self.failures
    }

    /// The trace, the failure lines and the invariants broken.
    pub fn into_parts(self) -> (Vec<String>, Vec<String>, Vec<Violation>) {
        (self.trace, self.failures, self.violations)
    }

    /// A node's process (re)starts: its state is rebuilt from nothing.
    pub fn node_started(&mut self, id: NodeId) {
        let led_term = self.nodes.get(&id).and_then(|n| n.led_term);
        self.nodes.insert(
            id,
            NodeSeen {
                led_term,
                ..NodeSeen::default()
            },
        );
    }

    /// What the acknowledged decisions for `set` guarantee a later read.
    pub fn floor(&self, set: &str) -> Floor {
        self.floors.get(set).copied().unwrap_or_default()
    }

    fn note_master(&mut self, set: &str, epoch: i32, master: Option<i64>, seen: String) {
        if epoch == 0 {
            return;
        }
        match self.epoch_master.get(&(set.to_string(), epoch)) {
            None => {
                self.epoch_master
                    .insert((set.to_string(), epoch), (master, seen));
            }
            Some((m, first)) if *m != master => {
                let msg = format!(
                    "two masters in broker set {set} epoch {epoch}: {m:?} ({first}) and {master:?} ({seen})"
                );
                self.fail(Violation::TwoMasters, msg);
            }
            Some(_) => {}
        }
    }

    /// A client's write was acknowledged at `log_id`.
    pub fn acked_write(
        &mut self,
        log_id: LogId,
        what: String,
        elected: Option<(String, i32, i64)>,
    ) {
        if let Some((set, epoch, master)) = &elected {
            self.note_master(
                set,
                *epoch,
                Some(*master),
                format!("acknowledged at {log_id}"),
            );
            let floor = self.floors.entry(set.clone()).or_default();
            floor.master_epoch = floor.master_epoch.max(*epoch);
        }
        self.acked.push(Acked {
            log_id,
            what,
            elected: elected.map(|(s, e, _)| (s, e)),
        });
    }

    /// An acknowledged answer showed the epochs of `set` as `seen` (the state it was applied
    /// to, or, for a read, the state it was linearized at): every read that begins later must
    /// see them or newer ones.
    pub fn acked_epochs(&mut self, set: &str, seen: Floor) {
        let floor = self.floors.entry(set.to_string()).or_default();
        floor.master_epoch = floor.master_epoch.max(seen.master_epoch);
        floor.sync_state_set_epoch = floor.sync_state_set_epoch.max(seen.sync_state_set_epoch);
    }

    /// A read answered `(master_epoch, sync_state_set_epoch)`; `floor` was taken when it began.
    pub fn read_answered(&mut self, client: u64, set: &str, floor: Floor, got: Floor) {
        if got.master_epoch < floor.master_epoch
            || got.sync_state_set_epoch < floor.sync_state_set_epoch
        {
            self.fail(Violation::StaleRead, format!(
                "stale read by c{client} of {set}: epochs {got:?}, but {floor:?} were acknowledged before it began"
            ));
        }
        // A read that completed is a fact later reads must not contradict either.
        self.acked_epochs(set, got);
    }

    /// One sample of a running node: its Raft role and term, and its applied state.
    #[allow(clippy::too_many_arguments)]
    pub fn observe(
        &mut self,
        id: NodeId,
        server_state: ServerState,
        term: u64,
        raft_applied: Option<u64>,
        app_applied: u64,
        state: &ControllerState,
        disk: &DurableLog,
    ) {
        // State-machine safety.
        let seen = self.nodes.entry(id).or_default();
        if seen.compared_index != Some(app_applied) {
            seen.compared_index = Some(app_applied);
            let json = match serde_json::to_string(state) {
                Ok(j) => j,
                Err(e) => {
                    self.fail(
                        Violation::Harness,
                        format!("n{id}: state not encodable: {e}"),
                    );
                    return;
                }
            };
            match self.by_index.get(&app_applied) {
                None => {
                    self.by_index.insert(app_applied, (json, id));
                }
                Some((other, first)) if *other != json => {
                    let first = *first;
                    self.fail(
                        Violation::StateDiverged,
                        format!(
                            "n{id} applied state at index {app_applied} differs from n{first}'s"
                        ),
                    );
                }
                Some(_) => {}
            }
        }
        // Epochs per node process, and one master per epoch.
        let mut went_back = Vec::new();
        let seen = self.nodes.entry(id).or_default();
        if app_applied < seen.last_applied {
            went_back.push(format!(
                "n{id} applied index went back from {} to {app_applied}",
                seen.last_applied
            ));
        }
        seen.last_applied = app_applied;
        let mut masters = Vec::new();
        for (name, set) in &state.broker_sets {
            let sync = &set.sync_state_info;
            let now = (sync.master_epoch, sync.sync_state_set_epoch);
            if let Some(before) = seen.epochs.insert(name.clone(), now) {
                if now.0 < before.0 || now.1 < before.1 {
                    went_back.push(format!(
                        "n{id} broker set {name}: epochs went back from {before:?} to {now:?}"
                    ));
                }
            }
            masters.push((name.clone(), sync.master_epoch, sync.master_broker_id));
        }
        let new_leadership = server_state == ServerState::Leader && seen.led_term != Some(term);
        if new_leadership {
            seen.led_term = Some(term);
        }
        for w in went_back {
            self.fail(Violation::WentBack, w);
        }
        for (name, epoch, master) in masters {
            self.note_master(&name, epoch, master, format!("n{id} applied {app_applied}"));
        }
        if new_leadership {
            self.log(format!("n{id} leads term {term}"));
        }
        // Acknowledged decisions survive: in every leader's log, and in every applied state
        // that went past them.
        let mut lost = Vec::new();
        for a in &self.acked {
            // Only a leader of a later leadership than the one that committed the entry must
            // hold it: a process restarted with its old committed vote (openraft's leader
            // restore) may lead its stale term, where it can commit nothing.
            let entry_leader = (a.log_id.leader_id.term, a.log_id.leader_id.node_id);
            if server_state == ServerState::Leader && (term, id) >= entry_leader {
                let held = disk.live_log_id(a.log_id.index);
                if held.as_ref() != Some(&a.log_id) {
                    lost.push(format!(
                        "leader n{id} (term {term}) lacks acknowledged {} at {}: holds {held:?}",
                        a.what, a.log_id
                    ));
                }
            }
            if let Some((set, epoch)) = &a.elected {
                if raft_applied.is_some_and(|i| i >= a.log_id.index) {
                    let have = state
                        .broker_set(set)
                        .map_or(0, |s| s.sync_state_info.master_epoch);
                    if have < *epoch {
                        lost.push(format!(
                            "n{id} applied past {} ({}) but holds master epoch {have} of {set}",
                            a.log_id, a.what
                        ));
                    }
                }
            }
        }
        for l in lost {
            self.fail(Violation::AckedLost, l);
        }
    }
}

impl Default for Checker {
    fn default() -> Self {
        Self::new()
    }
}
