//! The controller's Prometheus metrics: RocketMQ's (`ControllerMetricsManager`, exported by
//! RocketMQ without a prefix) and Rocketraft's own (`rocketraft_raft_*`,
//! `rocketraft_controller_*`, `rocketraft_broker_set_*`).
//!
//! Events (requests, elections, heartbeat timeouts) are counted as they happen, in
//! [`ControllerMetrics`]; gauges are computed when scraped by [`ControllerCollector`] from the
//! Raft node's status, the heartbeat table and [`SetsView`], the per-set figures the state
//! machine publishes after every applied change. No series carries `cluster`, `node_type` or
//! `node_id`: the process adds them to every series it exports (RocketMQ's `active_broker_num`
//! and `election_total` have a `cluster` label naming the brokers' cluster; here the process's
//! `cluster` label stands in for it, and `broker_set` names the set, which is unique).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::Weak;

use parking_lot::RwLock;
use rocketraft_common::metrics::{
    counter, family, gauge, Collector, Counter, CounterFamily, DescriptorEncoder, Family,
    Histogram, Labels,
};
use rocketraft_remoting::request_code as rc;
use rocketraft_remoting::response_code;

use crate::handler::ElectOutcome;
use crate::service::Controller;
use crate::state::ControllerState;

/// RocketMQ's `request_latency` buckets (`ControllerMetricsManager.registerMetricsView`), in
/// microseconds: 1 us .. 10 s.
pub const REQUEST_LATENCY_BUCKETS_US: [f64; 22] = [
    1.0,
    3.0,
    5.0,
    10.0,
    30.0,
    50.0,
    100.0,
    300.0,
    500.0,
    1_000.0,
    3_000.0,
    5_000.0,
    10_000.0,
    30_000.0,
    50_000.0,
    100_000.0,
    300_000.0,
    500_000.0,
    1_000_000.0,
    3_000_000.0,
    5_000_000.0,
    10_000_000.0,
];

fn request_latency_histogram() -> Histogram {
    Histogram::new(REQUEST_LATENCY_BUCKETS_US)
}

/// RocketMQ's `request_type` label: the `ControllerMetricsConstant.RequestType` name of a
/// request code (`None` for a code it does not name).
pub fn request_type(code: i32) -> Option<&'static str> {
    Some(match code {
        rc::CONTROLLER_ALTER_SYNC_STATE_SET => "CONTROLLER_ALTER_SYNC_STATE_SET",
        rc::CONTROLLER_ELECT_MASTER => "CONTROLLER_ELECT_MASTER",
        rc::CONTROLLER_REGISTER_BROKER => "CONTROLLER_REGISTER_BROKER",
        rc::CONTROLLER_GET_REPLICA_INFO => "CONTROLLER_GET_REPLICA_INFO",
        rc::CONTROLLER_GET_METADATA_INFO => "CONTROLLER_GET_METADATA_INFO",
        rc::CONTROLLER_GET_SYNC_STATE_DATA => "CONTROLLER_GET_SYNC_STATE_DATA",
        rc::GET_BROKER_EPOCH_CACHE => "CONTROLLER_GET_BROKER_EPOCH_CACHE",
        rc::NOTIFY_BROKER_ROLE_CHANGED => "CONTROLLER_NOTIFY_BROKER_ROLE_CHANGED",
        rc::BROKER_HEARTBEAT => "CONTROLLER_BROKER_HEARTBEAT",
        rc::UPDATE_CONTROLLER_CONFIG => "CONTROLLER_UPDATE_CONTROLLER_CONFIG",
        rc::GET_CONTROLLER_CONFIG => "CONTROLLER_GET_CONTROLLER_CONFIG",
        rc::CLEAN_BROKER_DATA => "CONTROLLER_CLEAN_BROKER_DATA",
        rc::CONTROLLER_GET_NEXT_BROKER_ID => "CONTROLLER_GET_NEXT_BROKER_ID",
        rc::CONTROLLER_APPLY_BROKER_ID => "CONTROLLER_APPLY_BROKER_ID",
        _ => return None,
    })
}

/// RocketMQ's `request_handle_status` of an answer: `success` when the request was handled
/// (whatever the state machine answered, as RocketMQ counts every request that returned a
/// response), `timeout` when the Raft write or read timed out (answered `SYSTEM_BUSY`), and
/// `failed` when it could not be handled (undecodable, no leader, a Raft failure).
pub fn request_handle_status(answer_code: i32) -> &'static str {
    match answer_code {
        response_code::SYSTEM_BUSY => "timeout",
        response_code::CONTROLLER_INVALID_REQUEST
        | response_code::CONTROLLER_NOT_LEADER
        | response_code::CONTROLLER_JRAFT_INTERNAL_ERROR
        | response_code::SYSTEM_ERROR => "failed",
        _ => "success",
    }
}

/// How an ElectMaster this node served ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionResult {
    /// A new master (RocketMQ's `new_master_elected`).
    Elected,
    /// The live master stays (`keep_current_master`).
    KeptMaster,
    /// Nobody could be elected (`no_master_elected`).
    NoMaster,
    /// The election was not decided: refused before the state machine, or not committed in
    /// time (not counted by RocketMQ's `election_total`).
    Failed,
}

impl ElectionResult {
    /// From the outcome the state machine answered.
    pub fn of_outcome(outcome: ElectOutcome) -> ElectionResult {
        match outcome {
            ElectOutcome::Elected => ElectionResult::Elected,
            ElectOutcome::MasterStillExist => ElectionResult::KeptMaster,
            ElectOutcome::MasterNotAvailable => ElectionResult::NoMaster,
        }
    }

    /// From a refusal's response code.
    pub fn of_refusal(code: i32) -> ElectionResult {
        match code {
            response_code::CONTROLLER_MASTER_NOT_AVAILABLE
            | response_code::CONTROLLER_ELECT_MASTER_FAILED => ElectionResult::NoMaster,
            response_code::CONTROLLER_MASTER_STILL_EXIST => ElectionResult::KeptMaster,
            _ => ElectionResult::Failed,
        }
    }

    /// RocketMQ's `election_result` label, if RocketMQ counts this result.
    pub fn rocketmq_label(self) -> Option<&'static str> {
        match self {
            ElectionResult::Elected => Some("new_master_elected"),
            ElectionResult::KeptMaster => Some("keep_current_master"),
            ElectionResult::NoMaster => Some("no_master_elected"),
            ElectionResult::Failed => None,
        }
    }

    /// The `result` label of `rocketraft_controller_elections`.
    pub fn label(self) -> &'static str {
        match self {
            ElectionResult::Elected => "elected",
            ElectionResult::KeptMaster => "kept_master",
            ElectionResult::NoMaster => "no_master",
            ElectionResult::Failed => "failed",
        }
    }
}

/// The events a controller node counts.
#[derive(Debug)]
pub struct ControllerMetrics {
    /// `address` and `peer_id`, as RocketMQ puts them on every controller series.
    peer: Labels,
    /// `request_total`: request_type, request_handle_status.
    requests: CounterFamily,
    /// `request_latency` (microseconds): request_type.
    latency: Family<Labels, Histogram, fn() -> Histogram>,
    /// `election_total`: broker_set, election_result.
    election_total: CounterFamily,
    /// `rocketraft_controller_elections`: broker_set, result.
    elections: CounterFamily,
    /// `rocketraft_controller_heartbeat_timeouts`.
    heartbeat_timeouts: Counter,
    /// `rocketraft_controller_lease_answers`: result.
    lease_answers: CounterFamily,
}

/// How a controller answered a master's request to renew its lease (`leaseConfirmed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAnswer {
    /// Renewed: a settled, quorum-fresh leader whose state names the broker master at its epoch.
    Confirmed,
    /// Refused: this node does not lead, or no quorum acknowledged its term lately.
    NotLeader,
    /// Refused: a write is being prepared or proposed, or the log is not all applied.
    Unsettled,
    /// Refused: the state names another master, or the broker reports an older epoch.
    NotMaster,
}

impl LeaseAnswer {
    pub fn label(self) -> &'static str {
        match self {
            LeaseAnswer::Confirmed => "confirmed",
            LeaseAnswer::NotLeader => "not_leader",
            LeaseAnswer::Unsettled => "unsettled",
            LeaseAnswer::NotMaster => "not_master",
        }
    }
}

impl ControllerMetrics {
    /// For the controller whose Raft member listens on `address` with id `peer_id`.
    pub fn new(address: String, peer_id: u64) -> ControllerMetrics {
        ControllerMetrics {
            peer: vec![("address", address), ("peer_id", peer_id.to_string())],
            requests: CounterFamily::default(),
            latency: Family::new_with_constructor(request_latency_histogram),
            election_total: CounterFamily::default(),
            elections: CounterFamily::default(),
            heartbeat_timeouts: Counter::default(),
            lease_answers: CounterFamily::default(),
        }
    }

    fn with_peer(&self, more: impl IntoIterator<Item = (&'static str, String)>) -> Labels {
        let mut labels = self.peer.clone();
        labels.extend(more);
        labels
    }

    /// One request of `code` answered with `answer_code` after `micros` microseconds.
    pub fn request(&self, code: i32, answer_code: i32, micros: f64) {
        let Some(kind) = request_type(code) else {
            return;
        };
        self.requests
            .get_or_create(&self.with_peer([
                ("request_type", kind.to_string()),
                (
                    "request_handle_status",
                    request_handle_status(answer_code).to_string(),
                ),
            ]))
            .inc();
        self.latency
            .get_or_create(&self.with_peer([("request_type", kind.to_string())]))
            .observe(micros);
    }

    /// One ElectMaster of `broker_set` this node served.
    pub fn election(&self, broker_set: &str, result: ElectionResult) {
        if let Some(label) = result.rocketmq_label() {
            self.election_total
                .get_or_create(&self.with_peer([
                    ("broker_set", broker_set.to_string()),
                    ("election_result", label.to_string()),
                ]))
                .inc();
        }
        self.elections
            .get_or_create(&vec![
                ("broker_set", broker_set.to_string()),
                ("result", result.label().to_string()),
            ])
            .inc();
    }

    /// Brokers this node, leading, declared dead because their heartbeats timed out.
    pub fn heartbeat_timeouts(&self, brokers: usize) {
        self.heartbeat_timeouts.inc_by(brokers as u64);
    }

    /// One answer to a master's lease renewal.
    pub fn lease_answer(&self, answer: LeaseAnswer) {
        self.lease_answers
            .get_or_create(&vec![("result", answer.label().to_string())])
            .inc();
    }
}

/// What the state machine publishes of one broker set for the gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetFigures {
    pub master_epoch: i32,
    pub sync_state_set_size: usize,
    /// The master's broker id; `None` while the set has none.
    pub master_id: Option<i64>,
}

/// The per-set figures of the applied state, by broker set, kept current by the state machine
/// (read at scrape time without going through Raft).
pub type SetsView = Arc<RwLock<BTreeMap<String, SetFigures>>>;

/// Replaces `view` with `state`'s figures.
pub(crate) fn publish(view: &SetsView, state: &ControllerState) {
    let figures = state
        .broker_sets
        .iter()
        .map(|(name, set)| {
            let sync = &set.sync_state_info;
            (
                name.clone(),
                SetFigures {
                    master_epoch: sync.master_epoch,
                    sync_state_set_size: sync.sync_state_set.len(),
                    master_id: sync.master_broker_id,
                },
            )
        })
        .collect();
    *view.write() = figures;
}

/// RocketMQ's `role` values (DLedger's `MemberState.Role`): 0 unknown, 1 candidate,
/// 2 follower, 3 leader. A learner counts as a follower.
fn role_value(state: &str) -> i64 {
    match state {
        "Leader" => 3,
        "Candidate" => 1,
        "Follower" | "Learner" => 2,
        _ => 0,
    }
}

/// The controller's gauges and counters at scrape time (a stopped or dropped controller
/// encodes nothing).
pub struct ControllerCollector {
    pub(crate) controller: Weak<Controller>,
}

impl fmt::Debug for ControllerCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControllerCollector")
            .finish_non_exhaustive()
    }
}

impl Collector for ControllerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let Some(c) = self.controller.upgrade() else {
            return Ok(());
        };
        encode_controller(&c, &mut encoder)
    }
}

/// Writes every controller series of `c`.
pub(crate) fn encode_controller(c: &Controller, encoder: &mut DescriptorEncoder) -> fmt::Result {
    let m = &c.metrics;
    let status = c.raft().status();
    let peer = || m.peer.clone();

    // RocketMQ's.
    gauge(
        encoder,
        "role",
        "Role of this controller: 0 unknown, 1 candidate, 2 follower, 3 leader.",
        [(peer(), role_value(&status.state))],
    )?;
    let mut active: BTreeMap<String, i64> = BTreeMap::new();
    for (set, _, _) in c.live_brokers().iter() {
        *active.entry(set.to_string()).or_default() += 1;
    }
    gauge(
        encoder,
        "active_broker_num",
        "Brokers whose heartbeats this controller receives, by broker set.",
        active
            .into_iter()
            .map(|(set, n)| (m.with_peer([("broker_set", set)]), n)),
    )?;
    family(
        encoder,
        "request",
        "Requests this controller handled.",
        &m.requests,
    )?;
    family(
        encoder,
        "request_latency",
        "Time to handle a request, in microseconds.",
        &m.latency,
    )?;
    family(
        encoder,
        "election",
        "Master elections this controller served.",
        &m.election_total,
    )?;

    // Raft.
    gauge(
        encoder,
        "rocketraft_raft_term",
        "The Raft term this controller is in.",
        [(Labels::new(), status.term as i64)],
    )?;
    gauge(
        encoder,
        "rocketraft_raft_leader_id",
        "The Raft leader this controller knows of (0: none).",
        [(Labels::new(), status.leader.unwrap_or(0) as i64)],
    )?;
    gauge(
        encoder,
        "rocketraft_raft_is_leader",
        "1 when this controller is the Raft leader.",
        [(Labels::new(), i64::from(status.state == "Leader"))],
    )?;
    gauge(
        encoder,
        "rocketraft_raft_commit_index",
        "The last log index this controller knows committed.",
        [(Labels::new(), status.committed.unwrap_or(0) as i64)],
    )?;
    gauge(
        encoder,
        "rocketraft_raft_applied_index",
        "The last log index this controller applied.",
        [(Labels::new(), status.last_applied.unwrap_or(0) as i64)],
    )?;

    // Elections and liveness.
    family(
        encoder,
        "rocketraft_controller_elections",
        "ElectMaster requests this controller served (broker- or controller-triggered), by result: elected, kept_master, no_master, failed (not decided).",
        &m.elections,
    )?;
    counter(
        encoder,
        "rocketraft_controller_heartbeat_timeouts",
        "Brokers this controller, leading, declared dead because their heartbeats timed out.",
        [(Labels::new(), m.heartbeat_timeouts.get())],
    )?;
    family(
        encoder,
        "rocketraft_controller_lease_answers",
        "Masters' lease renewals this controller answered, by result: confirmed, not_leader, unsettled (a write in flight), not_master (another master or an older epoch).",
        &m.lease_answers,
    )?;

    // Broker sets, as this controller applied them.
    let sets = c.sets_view.read().clone();
    let set_label = |name: &String| vec![("broker_set", name.clone())];
    gauge(
        encoder,
        "rocketraft_broker_set_master_epoch",
        "The master epoch of each broker set.",
        sets.iter()
            .map(|(name, f)| (set_label(name), i64::from(f.master_epoch))),
    )?;
    gauge(
        encoder,
        "rocketraft_broker_set_sync_state_set_size",
        "Brokers in each set's SyncStateSet.",
        sets.iter()
            .map(|(name, f)| (set_label(name), f.sync_state_set_size as i64)),
    )?;
    gauge(
        encoder,
        "rocketraft_broker_set_master_id",
        "The broker id of each set's master (-1: no master).",
        sets.iter()
            .map(|(name, f)| (set_label(name), f.master_id.unwrap_or(-1))),
    )
}
