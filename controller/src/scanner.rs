//! The scanner: what a controller leader does every `scan_interval_ms` about the masters it
//! hears (or no longer hears), generic over the node it runs on.
//!
//! One round ([`scan_round`]) elects a new master for every set whose master's heartbeat timed
//! out, but only on a leader in office for a full heartbeat timeout ([`tenure_needed`]) whose
//! term a quorum acknowledged within a fifth of it ([`ScanEnv::quorum_fresh`]); it deposes a
//! live master that reports it cannot gather `minInSyncReplicas` (at most once per heartbeat
//! timeout per set); and, when its own heartbeat table is not the whole story, it asks the
//! other controllers what they hear and may hand Raft leadership to one of them
//! ([`crate::peers::advise`]). docs/safety.md (Claim 1, "Availability", and "Deposing a master
//! that cannot acknowledge") explains why each condition is there.
//!
//! ## What the scanner needs from its node: [`ScanEnv`]
//!
//! The decisions are this module's; everything they read or do on the node goes through
//! [`ScanEnv`]: the monotonic clock, the node's leadership tenure and whether it leads, whether
//! its term is quorum-fresh, its heartbeat table (a real [`HeartbeatTracker`]), the election
//! policy, the heartbeat timeout, the applied state (a stale read of this node's copy), the
//! write of a controller-triggered `ElectMaster` through the log, a Raft `TransferLeader`, the
//! other controllers' views of a set, and the heartbeat-timeout counter of `/metrics`. What the
//! scanner remembers between rounds (when it last deposed a set's master, when it last handed
//! leadership over for a set, the peers' views and when they were asked) is a
//! [`ScannerMemory`], owned by whoever runs the rounds, one per controller node.
//!
//! [`crate::Controller`] implements [`ScanEnv`] over its `RaftNode` (tokio, gRPC peers,
//! RocksDB) and the Remoting client, and its scanner task calls [`scan_round`] with its own
//! memory every tick: that is production.
//!
//! ## How the deterministic simulation plugs in
//!
//! The simulation (`rocketraft-sim`) runs real openraft nodes with the real
//! [`crate::ControllerStateMachine`], but no [`crate::Controller`]. To run this scanner
//! instead of its simulated clients' controller-triggered elections, each simulated controller
//! node keeps one [`ScannerMemory`] for its whole life (a crash loses it, as a process restart
//! does) and, on its simulated clock every `scan_interval_ms`, calls [`scan_round`] with an
//! environment built from that node's parts:
//!
//! - [`ScanEnv::now_ms`]: the node's simulated clock (the one its heartbeat table is recorded
//!   on, as `service::answer_heartbeat` and `service::alive_for_at` use it);
//! - [`ScanEnv::tenure`] / [`ScanEnv::is_leader`]: the node's openraft metrics (a tenure starts
//!   when the node becomes leader of a term, as `Controller`'s tenure watch does);
//!   [`ScanEnv::quorum_fresh`]: `service::quorum_fresh_at` over the node's quorum-ack age;
//! - [`ScanEnv::heartbeats`]: the node's real `HeartbeatTracker`, the one its simulated
//!   brokers' heartbeats are recorded in;
//! - [`ScanEnv::applied_state`]: the node's state machine (`ControllerQuery::State`);
//! - [`ScanEnv::elect`]: a `ControllerCommand` written through the node's openraft handle,
//!   its liveness from `service::alive_for_at` on the leader (forwarded as the simulation
//!   forwards other writes), followed by the role notification to the set's replicas;
//! - [`ScanEnv::transfer_leader`]: openraft's leadership transfer on the node's handle;
//! - [`ScanEnv::ask_peers`]: [`crate::peers::ask`] with a `ControllerClient` over the
//!   simulation's `ControllerTransport`, so the peers answer through the simulated network
//!   (delays, losses, partitions) with their own heartbeat tables.
//!
//! The futures an environment returns are `Send` (production spawns the scanner on tokio).

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use parking_lot::Mutex;
use rocketraft_remoting::Refusal;

use crate::elect::DefaultElectPolicy;
use crate::handler::ControllerRequest;
use crate::handler::ControllerResponse;
use crate::handler::ElectMasterRequest;
use crate::heartbeat::HeartbeatTracker;
use crate::peers::{advise, Advice, PeerView, Situation};
use crate::replicated::CommandResult;
use crate::service::{tenure_needed, Tenure};
use crate::state::ControllerState;

/// The scanner's log lines keep the target they had while the scanner was a part of
/// `service` (operators' filters and the Jepsen report's log excerpts name it).
const TARGET: &str = "rocketraft_controller::service";

/// What [`scan_round`] reads and does on the controller node it runs on (see the module docs:
/// [`crate::Controller`] in production, a simulated node in `rocketraft-sim`).
pub trait ScanEnv: Sync {
    /// The node's monotonic clock (ms): the clock its heartbeat table and tenure are kept on.
    fn now_ms(&self) -> u64;

    /// The node's current leadership tenure (its term and since when it leads), if it leads.
    fn tenure(&self) -> Option<Tenure>;

    /// Whether the node's Raft member leads right now.
    fn is_leader(&self) -> bool;

    /// Whether the node leads and a quorum acknowledged its term within
    /// `heartbeat_timeout_ms / QUORUM_FRESH_DIVISOR` (`service::quorum_fresh_at`).
    fn quorum_fresh(&self) -> bool;

    /// The controller's `heartbeat_timeout_ms` (T): tenure, depose and hand-over spacing, the
    /// peers' answer budget.
    fn heartbeat_timeout_ms(&self) -> u64;

    /// The node's heartbeat table.
    fn heartbeats(&self) -> &HeartbeatTracker;

    /// The election policy its writes would carry (`enableElectUncleanMaster`).
    fn policy(&self) -> DefaultElectPolicy;

    /// Counts brokers whose heartbeat timed out on this leader
    /// (`rocketraft_controller_heartbeat_timeouts_total`).
    fn count_heartbeat_timeouts(&self, brokers: usize);

    /// The node's applied state (its own copy, possibly behind the leader's: a stale read).
    fn applied_state(&self) -> impl Future<Output = Result<ControllerState, Refusal>> + Send;

    /// Writes a controller-triggered `ElectMaster` through the log, as any client write goes
    /// (`Controller::execute`: the leader's liveness in the entry, the election counted in
    /// `election_total`, the set's brokers notified of their roles after an election).
    fn elect(&self, request: ControllerRequest) -> impl Future<Output = CommandResult> + Send;

    /// Asks Raft to hand leadership to member `to` (`TransferLeader`).
    fn transfer_leader(&self, to: u64) -> impl Future<Output = Result<(), String>> + Send;

    /// The other controllers' own views of `broker_name` (`peers::ask`), each peer waited for
    /// at most `wait`; a peer that does not answer in time is left out.
    fn ask_peers(
        &self,
        broker_name: &str,
        wait: Duration,
    ) -> impl Future<Output = Vec<PeerView>> + Send;
}

/// What the scanner of one controller node remembers between rounds.
#[derive(Debug, Default)]
pub struct ScannerMemory {
    /// When this node last proposed to depose each set's master (monotonic ms): at most one
    /// proposal per heartbeat timeout, while the brokers learn the outcome.
    deposed_at: Mutex<BTreeMap<String, u64>>,
    /// When this node last handed leadership over for each set (monotonic ms).
    handed_over_at: Mutex<BTreeMap<String, u64>>,
    /// The other controllers' views of each set and when they were asked (monotonic ms).
    peer_views: Mutex<BTreeMap<String, (u64, Vec<PeerView>)>>,
}

impl ScannerMemory {
    pub fn new() -> Self {
        Self::default()
    }
}

/// What one scanner round knows before it looks at each set.
#[derive(Debug, Clone, Copy)]
struct Round {
    now: u64,
    /// A quorum acknowledged this leader's term within a fifth of the heartbeat timeout.
    fresh: bool,
    /// How long this node has led in its current term (ms).
    in_office: u64,
}

/// One scanner round: on a leader in office for at least a heartbeat timeout (its own
/// `heartbeat_timeout_ms`, and the master's if that is longer), whose term a quorum
/// acknowledged within a fifth of it, elect a new master for every set whose master's
/// heartbeat timed out (or never arrived). Time is monotonic throughout.
pub async fn scan_round(env: &impl ScanEnv, memory: &ScannerMemory) {
    let now = env.now_ms();
    let tenure = env.tenure();
    let fresh = env.quorum_fresh();
    let Some(tenure) = tenure.filter(|_| env.is_leader()) else {
        // Followers expire too, so a later leader does not trust ancient heartbeats.
        env.heartbeats().take_expired(now);
        return;
    };
    let in_office = now.saturating_sub(tenure.since_ms);
    let expired = env.heartbeats().take_expired(now);
    env.count_heartbeat_timeouts(expired.len());
    for e in &expired {
        tracing::warn!(target: TARGET, broker = %e.broker_name, id = e.broker_id, addr = %e.broker_addr, "broker heartbeat timed out");
    }
    let expired_ids: BTreeSet<(String, i64)> = expired
        .iter()
        .map(|e| (e.broker_name.clone(), e.broker_id))
        .collect();
    let Ok(state) = env.applied_state().await else {
        return;
    };
    // Set name -> (cluster, the master epoch to depose for a live master).
    let mut to_elect: BTreeMap<String, (String, Option<i32>)> = BTreeMap::new();
    for (name, set) in &state.broker_sets {
        let Some(master) = set.sync_state_info.master_broker_id else {
            continue;
        };
        let timed_out = expired_ids.contains(&(name.clone(), master))
            || !env.heartbeats().is_alive(name, master, now);
        let round = Round {
            now,
            fresh,
            in_office,
        };
        if let Some(depose_epoch) = decide(env, memory, name, set, master, timed_out, round).await {
            to_elect.insert(
                name.clone(),
                (set.replica_info.cluster.clone(), depose_epoch),
            );
        }
    }
    for (broker_name, (cluster, depose_epoch)) in to_elect {
        elect_through_the_log(env, broker_name, cluster, depose_epoch).await;
    }
}

/// The scanner's decision for one set: `Some(None)` to elect in place of a lost master,
/// `Some(Some(epoch))` to depose the live master of `epoch`, `None` to leave it (perhaps
/// after handing leadership to a peer, `peers::advise`).
async fn decide(
    env: &impl ScanEnv,
    memory: &ScannerMemory,
    name: &str,
    set: &crate::state::BrokerSet,
    master: i64,
    timed_out: bool,
    round: Round,
) -> Option<Option<i32>> {
    let Round {
        now,
        fresh,
        in_office,
    } = round;
    let here = env.heartbeats().live_info(name, master, now);
    let stuck_here = here.is_some_and(|info| info.in_sync_unreachable == Some(true));
    let unheard_here = timed_out || here.is_some_and(|info| info.heard_recently == Some(false));
    if !(timed_out || stuck_here || unheard_here) || !fresh {
        if timed_out {
            tracing::info!(target: TARGET, broker = %name, "master heartbeat timed out; no election without a quorum acknowledgement within a fifth of the timeout");
        }
        return None;
    }
    let sync_state_set = &set.sync_state_info.sync_state_set;
    // The same view a depose entry carries (`alive_for`): candidates heard recently.
    let recent = env.heartbeats().heard_recently(now).only(name);
    let replacement_here = env
        .policy()
        .elect_replacement(name, sync_state_set, master, &recent)
        .is_some();
    let advice = if stuck_here && replacement_here {
        Advice::DeposeNow
    } else {
        let situation = Situation {
            master,
            sync_state_set,
            timed_out_here: timed_out,
            unheard_here,
            stuck_here,
            replacement_here,
        };
        advise(&situation, &peer_views(env, memory, name, now).await)
    };
    let handed = match advice {
        Advice::DeposeNow => {
            let epoch = set.sync_state_info.master_epoch;
            return may_depose(env, memory, name, now).then_some(Some(epoch));
        }
        Advice::HandOverToMaster(to) => {
            hand_over(env, memory, name, to, now, "hears the master").await
        }
        Advice::HandOverToReplacement(to) => {
            hand_over(
                env,
                memory,
                name,
                to,
                now,
                "hears a replacement this leader does not",
            )
            .await
        }
        Advice::Nothing => false,
    };
    if handed || !timed_out {
        return None;
    }
    // Only a leader in office for a full heartbeat timeout elects: a master's role lease
    // (renewed by heartbeats this leader or an earlier one confirmed) has run out by then
    // (an earlier leader confirmed at most T/5 after the quorum acknowledgement that
    // preceded this tenure, for at most 3/4 T; docs/safety.md). A master that heartbeats
    // with a longer timeout than ours is waited for in proportion.
    let t = env.heartbeat_timeout_ms();
    let wait = tenure_needed(t.max(env.heartbeats().timeout_of(name, master).unwrap_or(0)));
    if in_office < wait {
        tracing::info!(target: TARGET, broker = %name, in_office_ms = in_office, wait_ms = wait, "master heartbeat timed out; electing once this leader has been in office long enough");
        return None;
    }
    Some(None)
}

/// The other controllers' own views of a set (`peers::ask`), asked at most once per sixth
/// of the heartbeat timeout per set (the scanner runs every quarter second); each peer gets
/// a tenth of the timeout to answer, so a dead master's failover waits at most that long.
async fn peer_views(
    env: &impl ScanEnv,
    memory: &ScannerMemory,
    name: &str,
    now: u64,
) -> Vec<PeerView> {
    let t = env.heartbeat_timeout_ms();
    if let Some((at, views)) = memory.peer_views.lock().get(name) {
        if now.saturating_sub(*at) < t / 6 {
            return views.clone();
        }
    }
    let wait = Duration::from_millis((t / 10).max(100));
    let views = env.ask_peers(name, wait).await;
    memory
        .peer_views
        .lock()
        .insert(name.to_string(), (now, views.clone()));
    views
}

/// Hands Raft leadership to controller `to` for the sake of set `name` (`peers::advise`):
/// a new term there, so whatever it elects waits out its own tenure (Claim 1), and a depose
/// needs none (Claim 2). At most one hand-over per set per heartbeat timeout, so two
/// controllers with different views do not pass leadership back and forth.
async fn hand_over(
    env: &impl ScanEnv,
    memory: &ScannerMemory,
    name: &str,
    to: u64,
    now: u64,
    why: &str,
) -> bool {
    let t = env.heartbeat_timeout_ms();
    {
        let mut last = memory.handed_over_at.lock();
        if last.get(name).is_some_and(|at| now.saturating_sub(*at) < t) {
            return false;
        }
        last.insert(name.to_string(), now);
    }
    tracing::warn!(target: TARGET, broker = %name, to, "controller {to} {why}; handing leadership over");
    if let Err(e) = env.transfer_leader(to).await {
        tracing::warn!(target: TARGET, to, error = %e, "leadership hand-over failed");
    }
    true
}

/// Proposes a controller-triggered ElectMaster for a set whose master was lost, or to depose
/// its live master of `depose_epoch`, and logs the outcome.
async fn elect_through_the_log(
    env: &impl ScanEnv,
    broker_name: String,
    cluster: String,
    depose_epoch: Option<i32>,
) {
    match depose_epoch {
        None => {
            tracing::warn!(target: TARGET, broker = %broker_name, "master lost; electing a new one through the log")
        }
        Some(epoch) => {
            tracing::warn!(target: TARGET, broker = %broker_name, epoch, "the master reports it cannot gather minInSyncReplicas; deposing it through the log")
        }
    }
    let request = ControllerRequest::ElectMaster(ElectMasterRequest {
        cluster,
        broker_name: broker_name.clone(),
        broker_id: None,
        designate_elect: false,
        depose_epoch,
    });
    match env.elect(request).await {
        Ok(ControllerResponse::ElectMaster(r)) => {
            tracing::info!(target: TARGET, broker = %broker_name, outcome = ?r.outcome, master = ?r.master_broker_id, epoch = r.master_epoch, "controller-triggered election")
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(target: TARGET, broker = %broker_name, error = %e, "controller-triggered election failed; will retry")
        }
    }
}

/// Whether this node may propose to depose a set's master now: it proposed no depose of
/// the set within the last heartbeat timeout (records this one). No tenure is needed: the
/// deposed master acknowledges only what every member, the new master included, holds
/// (docs/safety.md, "Deposing a master that cannot acknowledge").
fn may_depose(env: &impl ScanEnv, memory: &ScannerMemory, name: &str, now: u64) -> bool {
    let mut last = memory.deposed_at.lock();
    if last
        .get(name)
        .is_some_and(|t| now.saturating_sub(*t) < env.heartbeat_timeout_ms())
    {
        return false;
    }
    last.insert(name.to_string(), now);
    true
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

    use rocketraft_raft::AppStateMachine;

    use super::*;
    use crate::handler::{AlterSyncStateSetRequest, ApplyBrokerIdRequest, ElectOutcome};
    use crate::heartbeat::Heartbeat;
    use crate::liveness::BrokerLiveInfo;
    use crate::replicated::{
        ControllerCommand, ControllerQuery, ControllerQueryResponse, ControllerStateMachine,
    };
    use crate::service::{alive_for_at, record_heartbeat};

    /// The controllers' and brokers' heartbeat timeout.
    const T: u64 = 3_000;
    /// The scanner's interval.
    const TICK: u64 = 250;
    const SET: &str = "broker-a";

    /// One controller node built from real parts, the environment the simulation provides
    /// (module docs): its clock, leadership and quorum freshness are set by the test as the
    /// simulation's openraft node would report them; its heartbeat table is a real
    /// `HeartbeatTracker` the brokers' heartbeats are recorded in (`service::record_heartbeat`);
    /// its writes are `ControllerCommand`s applied by the real `ControllerStateMachine`, their
    /// liveness filled in by `service::alive_for_at` as a leader's prepare does. A single
    /// controller: nobody to ask, nobody to hand leadership to.
    struct Node {
        now: AtomicU64,
        tenure: Mutex<Option<Tenure>>,
        fresh: AtomicBool,
        heartbeats: HeartbeatTracker,
        machine: Mutex<ControllerStateMachine>,
        last_index: AtomicU64,
        heartbeat_timeouts: AtomicUsize,
        /// Every ElectMaster the scanner wrote, in order.
        elections: Mutex<Vec<ElectMasterRequest>>,
    }

    impl Node {
        fn new() -> Self {
            Node {
                now: AtomicU64::new(0),
                tenure: Mutex::new(None),
                fresh: AtomicBool::new(true),
                heartbeats: HeartbeatTracker::new(),
                machine: Mutex::new(ControllerStateMachine::new()),
                last_index: AtomicU64::new(0),
                heartbeat_timeouts: AtomicUsize::new(0),
                elections: Mutex::new(Vec::new()),
            }
        }

        /// Leads from `since_ms` on (a new term).
        fn lead_since(&self, since_ms: u64) {
            let term = self.tenure.lock().map_or(1, |t| t.term + 1);
            *self.tenure.lock() = Some(Tenure { term, since_ms });
        }

        fn write(&self, request: ControllerRequest) -> CommandResult {
            let command = ControllerCommand {
                alive: alive_for_at(&self.heartbeats, &request, self.now_ms()),
                policy: self.policy(),
                request,
            };
            let index = self.last_index.fetch_add(1, Ordering::SeqCst) + 1;
            self.machine.lock().apply(index, command)
        }

        fn heartbeat(&self, id: i64, in_sync_unreachable: Option<bool>) {
            let info = BrokerLiveInfo {
                in_sync_unreachable,
                ..BrokerLiveInfo::new(1, 100, 0)
            };
            let heartbeat = Heartbeat {
                cluster: "c".into(),
                broker_name: SET.into(),
                broker_id: id,
                broker_addr: format!("10.0.0.{id}:10911"),
                timeout_ms: 0,
                info,
            };
            record_heartbeat(&self.heartbeats, heartbeat, T, self.now_ms());
        }

        /// The set's (master, master epoch) in the applied state.
        fn master(&self) -> (Option<i64>, i32) {
            match self.machine.lock().query(&ControllerQuery::State) {
                ControllerQueryResponse::State { state, .. } => {
                    let sync = &state.broker_sets[SET].sync_state_info;
                    (sync.master_broker_id, sync.master_epoch)
                }
                other => panic!("not a state: {other:?}"),
            }
        }

        fn elections(&self) -> Vec<ElectMasterRequest> {
            self.elections.lock().clone()
        }
    }

    impl ScanEnv for Node {
        fn now_ms(&self) -> u64 {
            self.now.load(Ordering::SeqCst)
        }

        fn tenure(&self) -> Option<Tenure> {
            *self.tenure.lock()
        }

        fn is_leader(&self) -> bool {
            self.tenure.lock().is_some()
        }

        fn quorum_fresh(&self) -> bool {
            self.is_leader() && self.fresh.load(Ordering::SeqCst)
        }

        fn heartbeat_timeout_ms(&self) -> u64 {
            T
        }

        fn heartbeats(&self) -> &HeartbeatTracker {
            &self.heartbeats
        }

        fn policy(&self) -> DefaultElectPolicy {
            DefaultElectPolicy::default()
        }

        fn count_heartbeat_timeouts(&self, brokers: usize) {
            self.heartbeat_timeouts.fetch_add(brokers, Ordering::SeqCst);
        }

        async fn applied_state(&self) -> Result<ControllerState, Refusal> {
            match self.machine.lock().query(&ControllerQuery::State) {
                ControllerQueryResponse::State { state, .. } => Ok(state),
                ControllerQueryResponse::Request(_) => Err(Refusal::new(
                    rocketraft_remoting::response_code::SYSTEM_ERROR,
                    "unexpected answer to a state read",
                )),
            }
        }

        async fn elect(&self, request: ControllerRequest) -> CommandResult {
            if let ControllerRequest::ElectMaster(r) = &request {
                self.elections.lock().push(r.clone());
            }
            self.write(request)
        }

        async fn transfer_leader(&self, to: u64) -> Result<(), String> {
            Err(format!("no controller {to}: a single-controller cluster"))
        }

        async fn ask_peers(&self, _broker_name: &str, _wait: Duration) -> Vec<PeerView> {
            Vec::new()
        }
    }

    /// At 1000 ms: brokers 1 and 2 of `broker-a` heartbeat and apply their ids, broker 1 is
    /// elected master (epoch 1) and the SyncStateSet becomes {1, 2}, all through the state
    /// machine.
    fn set_with_master_and_slave() -> Node {
        let node = Node::new();
        node.now.store(1_000, Ordering::SeqCst);
        for id in [1, 2] {
            node.heartbeat(id, None);
            let applied = node.write(ControllerRequest::ApplyBrokerId(ApplyBrokerIdRequest {
                cluster: "c".into(),
                broker_name: SET.into(),
                applied_broker_id: id,
                register_check_code: format!("10.0.0.{id}:10911;{id}"),
            }));
            assert!(applied.is_ok(), "{applied:?}");
        }
        let elected = node.write(ControllerRequest::ElectMaster(ElectMasterRequest {
            cluster: "c".into(),
            broker_name: SET.into(),
            broker_id: Some(1),
            designate_elect: false,
            depose_epoch: None,
        }));
        assert!(
            matches!(&elected, Ok(ControllerResponse::ElectMaster(r)) if r.outcome == ElectOutcome::Elected),
            "{elected:?}"
        );
        let altered = node.write(ControllerRequest::AlterSyncStateSet(
            AlterSyncStateSetRequest {
                broker_name: SET.into(),
                master_broker_id: 1,
                master_epoch: 1,
                new_sync_state_set: BTreeSet::from([1, 2]),
                sync_state_set_epoch: 1,
                fence: false,
            },
        ));
        assert!(altered.is_ok(), "{altered:?}");
        assert_eq!(node.master(), (Some(1), 1));
        node
    }

    /// Advances the node's clock tick by tick up to `until` (ms): broker 2 heartbeats every
    /// other tick (as do the brokers in `alive`), and the scanner runs every tick.
    async fn run_until(node: &Node, memory: &ScannerMemory, until: u64, alive: &[i64]) {
        while node.now_ms() < until {
            let now = node.now.fetch_add(TICK, Ordering::SeqCst) + TICK;
            if now.is_multiple_of(2 * TICK) {
                for id in alive {
                    node.heartbeat(*id, None);
                }
            }
            scan_round(node, memory).await;
        }
    }

    #[tokio::test]
    async fn a_timed_out_master_is_replaced_only_after_a_full_tenure() {
        let node = set_with_master_and_slave();
        let memory = ScannerMemory::new();
        // A new leader since 2500 ms; broker 1 is last heard at 1000 ms and times out at 4000.
        node.lead_since(2_500);
        run_until(&node, &memory, 3_750, &[2]).await;
        assert_eq!(node.heartbeat_timeouts.load(Ordering::SeqCst), 0);
        run_until(&node, &memory, 4_000, &[2]).await;
        assert_eq!(node.heartbeat_timeouts.load(Ordering::SeqCst), 1);
        // Timed out, but the leader has been in office for less than T: no election, for
        // every round until 2500 + T.
        run_until(&node, &memory, 2_500 + tenure_needed(T) - TICK, &[2]).await;
        assert_eq!(node.master(), (Some(1), 1));
        assert!(node.elections().is_empty(), "{:?}", node.elections());
        // The first round a full tenure in: broker 2 replaces it, through the log.
        run_until(&node, &memory, 2_500 + tenure_needed(T), &[2]).await;
        assert_eq!(node.master(), (Some(2), 2));
        let elections = node.elections();
        assert_eq!(elections.len(), 1, "{elections:?}");
        assert_eq!(elections[0].broker_id, None);
        assert_eq!(elections[0].depose_epoch, None);
        // Broker 2 is alive: nothing more to do.
        run_until(&node, &memory, 10_000, &[2]).await;
        assert_eq!(node.elections().len(), 1);
        assert_eq!(node.heartbeat_timeouts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn no_election_without_a_fresh_quorum_nor_on_a_follower() {
        let node = set_with_master_and_slave();
        let memory = ScannerMemory::new();
        // A follower expires heartbeats (a later leader must not trust ancient ones) but
        // neither counts nor elects.
        run_until(&node, &memory, 5_000, &[2]).await;
        assert_eq!(node.heartbeat_timeouts.load(Ordering::SeqCst), 0);
        assert!(!node.heartbeats.knows(SET, 1));
        assert!(node.elections().is_empty());
        // A leader long in office whose term no quorum acknowledged lately: broker 1 stays
        // master of record, round after round.
        node.lead_since(0);
        node.fresh.store(false, Ordering::SeqCst);
        run_until(&node, &memory, 12_000, &[2]).await;
        assert_eq!(node.master(), (Some(1), 1));
        assert!(node.elections().is_empty(), "{:?}", node.elections());
        // Once a quorum acknowledges it again, the next round elects.
        node.fresh.store(true, Ordering::SeqCst);
        run_until(&node, &memory, 12_250, &[2]).await;
        assert_eq!(node.master(), (Some(2), 2));
        assert_eq!(node.elections().len(), 1);
    }

    #[tokio::test]
    async fn a_stuck_master_is_deposed_at_once_without_a_tenure() {
        let node = set_with_master_and_slave();
        let memory = ScannerMemory::new();
        node.lead_since(1_000);
        // Broker 1 heartbeats but says it cannot gather minInSyncReplicas; broker 2 is heard.
        node.now.store(1_250, Ordering::SeqCst);
        node.heartbeat(1, Some(true));
        node.heartbeat(2, None);
        scan_round(&node, &memory).await;
        // In office 250 ms: a depose needs no tenure (docs/safety.md, Claim 2).
        assert_eq!(node.master(), (Some(2), 2));
        let elections = node.elections();
        assert_eq!(elections.len(), 1, "{elections:?}");
        assert_eq!(elections[0].depose_epoch, Some(1));
        assert!(memory.deposed_at.lock().contains_key(SET));
    }
}
