//! The broker replicas' real controller link (`--controller-link`, issue 21 item 1, seam 5).
//!
//! Each replica process runs the broker's own `rocketraft_broker::replica::ReplicaManager`
//! (started with `ReplicaManager::start_with`): its heartbeat loops (`heartbeat_to`, the lease
//! renewed from the send time of a heartbeat the controller leader confirmed as the master's
//! at its epoch), its polls
//! (`poll_once`, `poll_local`, `apply`, `become_master`, `become_slave`,
//! `elect_if_masterless`), `check_sync_state_set` (proposals, the pending union, the fence) and
//! `refresh_known_replicas`, over the real `ControllerLink` and `ControllerClient`. Only the
//! transport underneath is simulated: [`SimTransport`] implements
//! `rocketraft_controller::client::ControllerTransport` by sending the `RemotingCommand` over
//! the simulated network ([`crate::net`]: seeded delay, loss, duplication, partitions, crashes)
//! to a simulated controller node, which answers it in [`serve`] through the controller's own
//! request handling: `service::answer_heartbeat` (decode, the node's real `HeartbeatTracker`
//! at the node's clock, `leaderConfirmed` from `service::quorum_fresh_at`, `leaseConfirmed`
//! from `rocketraft_raft::leader_settled` and `service::lease_confirmable`), `service::route`
//! (decode; `readLocal`, read or write), the state machine through openraft (a write's liveness
//! from the serving leader's table, `service::alive_for_at`), and `wire::encode_response`.
//! A write or read reaching a follower is forwarded to the leader it names, once, over the
//! simulated network (as `RaftNode` forwards). After an election a node sends
//! NOTIFY_BROKER_ROLE_CHANGED (`wire::notify_broker_role_changed`) to every replica of the
//! set, which takes it through `ReplicaManager::on_notification`. Slaves replicate through
//! [`SimPeers`] (`ReplicaPeers`), the simulated streams of [`crate::stream`] running the real
//! `ha::follow_stream` and `ha::master_connection`.
//!
//! The controller's scanner runs too, on every node (`crate::scanner`): it elects for
//! `broker-a` when its master's heartbeats time out, deposes a stuck master and hands
//! leadership over, through [`write`] and [`SimTransport`]; the simulated clients no longer
//! send controller-triggered elections of `broker-a` in this mode.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use openraft::type_config::async_runtime::WatchReceiver;
use parking_lot::Mutex;
use rocketraft_broker::ha::HaState;
use rocketraft_broker::replica::{parse_role_notification, ReplicaPeers};
use rocketraft_controller::client::{ControllerTransport, TransportFuture};
use rocketraft_controller::replicated::CommandResult;
use rocketraft_controller::service::{
    answer_heartbeat, lease_confirmable, master_query, quorum_fresh_at, route, Route,
};
use rocketraft_controller::wire::{encode_response, notify_broker_role_changed};
use rocketraft_controller::{
    AliveBrokers, ControllerCommand, ControllerQuery, ControllerQueryResponse, ControllerRequest,
    ControllerResponse, ControllerStateMachine, DefaultElectPolicy,
};
use rocketraft_raft::types::{Raft, Request};
use rocketraft_raft::{leader_settled, NodeId};
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::{Refusal, RemotingCommand};

use crate::net::{CallError, Channel, Endpoint, NodeHandle};
use crate::rng::SimRng;
use crate::world::{Answer, World};

/// The controllers' `heartbeatTimeoutMills` (the simulated brokers' timeout).
pub const CONTROLLER_TIMEOUT_MS: u64 = 160;
/// The client id under which node `n` proposes the writes brokers send it (`RaftNode` draws one
/// per start; here one per node, its serials never reused across restarts).
const WRITER_BASE: u64 = 1_000_000;

/// A controller node's Remoting address as brokers know it.
pub fn controller_addr(id: NodeId) -> String {
    format!("n{id}")
}

fn node_of(addr: &str) -> Option<NodeId> {
    addr.strip_prefix('n')?.parse().ok()
}

/// The replica id of a broker address (`broker-a-2:10911`).
fn replica_of(addr: &str) -> Option<i64> {
    let host = addr.split(':').next()?;
    host.rsplit('-').next()?.parse().ok()
}

/// What the link keeps per run: the nodes' forwarding channels and write serials, and the
/// draws of the notifications' delays.
pub(crate) struct LinkState {
    forward: Mutex<BTreeMap<(NodeId, NodeId), Channel>>,
    serials: Mutex<BTreeMap<NodeId, u64>>,
    rng: Mutex<SimRng>,
}

impl LinkState {
    pub fn new(rng: SimRng) -> LinkState {
        LinkState {
            forward: Mutex::new(BTreeMap::new()),
            serials: Mutex::new(BTreeMap::new()),
            rng: Mutex::new(rng),
        }
    }

    fn next_request(&self, node: NodeId, payload: String) -> Request {
        let mut serials = self.serials.lock();
        let serial = serials.entry(node).or_insert(0);
        *serial += 1;
        Request {
            client: WRITER_BASE + node,
            serial: *serial,
            payload,
        }
    }
}

/// A broker's transport to the controllers: its requests cross the simulated network from its
/// endpoint, one channel per controller node.
pub struct SimTransport {
    world: Weak<World>,
    endpoint: Endpoint,
    channels: Mutex<BTreeMap<NodeId, Channel>>,
}

impl SimTransport {
    pub(crate) fn new(world: &Arc<World>, endpoint: Endpoint) -> SimTransport {
        SimTransport {
            world: Arc::downgrade(world),
            endpoint,
            channels: Mutex::new(BTreeMap::new()),
        }
    }
}

impl ControllerTransport for SimTransport {
    fn invoke<'a>(
        &'a self,
        addr: &'a str,
        request: RemotingCommand,
        timeout: Duration,
    ) -> TransportFuture<'a> {
        Box::pin(async move {
            let w = self.world.upgrade().ok_or("the run is over")?;
            let to = node_of(addr).ok_or_else(|| format!("{addr}: not a controller"))?;
            let channel = *self
                .channels
                .lock()
                .entry(to)
                .or_insert_with(|| w.net.open_channel(self.endpoint, to));
            let weak = self.world.clone();
            let answer = w
                .net
                .call(channel, request, timeout, move |node, cmd| {
                    serve(weak.clone(), to, node, cmd)
                })
                .await;
            match answer {
                Ok(response) => Ok(response),
                Err(CallError::Unreachable) => Err(format!("{addr}: connection refused")),
                Err(CallError::Timeout) => Err(format!("{addr}: timeout")),
            }
        })
    }
}

/// `RaftNode::quorum_ack_age` on the simulation's openraft node: how long ago a quorum last
/// acknowledged this leader's term (`None` on a follower).
pub(crate) fn quorum_ack_age(id: NodeId, raft: &Raft) -> Option<Duration> {
    let m = raft.metrics().borrow_watched().clone();
    if m.current_leader != Some(id) {
        return None;
    }
    if m.membership_config.membership().voter_ids().count() <= 1 {
        return Some(Duration::ZERO);
    }
    m.last_quorum_acked.map(|t| openraft::Instant::elapsed(&*t))
}

/// Controller node `id` answers a broker's request (see the module docs).
async fn serve(
    w: Weak<World>,
    id: NodeId,
    node: NodeHandle,
    cmd: RemotingCommand,
) -> RemotingCommand {
    match serve_request(&w, id, node, &cmd).await {
        Ok(response) => response,
        Err(refusal) => cmd.response_to(refusal.code, Some(refusal.remark)),
    }
}

fn busy(e: impl Into<String>) -> Refusal {
    // As `service::raft_error`: an outcome unknown is SYSTEM_BUSY, which brokers retry.
    Refusal::new(response_code::SYSTEM_BUSY, e.into())
}

async fn serve_request(
    w: &Weak<World>,
    id: NodeId,
    node: NodeHandle,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Refusal> {
    if cmd.code == request_code::BROKER_HEARTBEAT {
        let raft = node.raft.clone();
        let answer = answer_heartbeat(
            &node.heartbeats,
            cmd,
            CONTROLLER_TIMEOUT_MS,
            node.clock.now_ms(),
            || quorum_fresh_at(quorum_ack_age(id, &raft), CONTROLLER_TIMEOUT_MS),
            |hb| {
                // As `Controller::lease_confirmed`: the count first, then the metrics.
                let in_flight = node.writes_in_flight.count();
                let m = raft.metrics().borrow_watched().clone();
                if !leader_settled(&m, id, in_flight) {
                    return false;
                }
                let master = match node
                    .sm
                    .query_app::<ControllerStateMachine>(&master_query(&hb.broker_name))
                {
                    Ok(ControllerQueryResponse::Request(Ok(
                        ControllerResponse::GetReplicaInfo(r),
                    ))) => Some(r),
                    _ => None,
                };
                lease_confirmable(hb, master.as_ref())
            },
        );
        if let (Ok(response), Some(w)) = (&answer, w.upgrade()) {
            let mut stats = w.stats.lock();
            stats.link_heartbeats += 1;
            if response.ext("leaderConfirmed") == Some("true") {
                stats.link_confirmed += 1;
            }
        }
        return answer;
    }
    let w = w.upgrade().ok_or_else(|| busy("the run is over"))?;
    let response = match route(cmd)? {
        Route::ReadLocal(request) => read(&w, id, node, request, true).await?,
        Route::Read(request) => read(&w, id, node, request, false).await?,
        Route::Write(request) => write(&w, id, node, request, "link").await?,
    };
    Ok(encode_response(cmd, &response))
}

/// A read on node `id`, forwarded once to the leader it names if it is not the leader.
async fn read(
    w: &Arc<World>,
    id: NodeId,
    node: NodeHandle,
    request: ControllerRequest,
    stale: bool,
) -> Result<ControllerResponse, Refusal> {
    let query = ControllerQuery::Request {
        request,
        alive: AliveBrokers::new(),
    };
    let answer = match crate::world::serve_read(node, query.clone(), stale).await {
        Answer::NotLeader(Some(leader)) if leader != id => {
            forward(w, id, leader, move |n| {
                crate::world::serve_read(n, query.clone(), false)
            })
            .await?
        }
        other => other,
    };
    match answer {
        Answer::Read(ControllerQueryResponse::Request(result)) => result,
        Answer::Read(other) => Err(busy(format!("unexpected answer {other:?}"))),
        Answer::NotLeader(_) => Err(busy("no leader")),
        Answer::Failed(e) => Err(busy(e)),
        Answer::Written { .. } => Err(busy("a read answered as a write")),
    }
}

/// Sends `serve` to node `leader` from node `from` over the simulated network.
async fn forward<F, Fut>(
    w: &Arc<World>,
    from: NodeId,
    leader: NodeId,
    serve: F,
) -> Result<Answer, Refusal>
where
    F: Fn(NodeHandle) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Answer> + Send + 'static,
{
    let channel = *w
        .link
        .forward
        .lock()
        .entry((from, leader))
        .or_insert_with(|| w.net.open_channel(from, leader));
    match w
        .net
        .call(channel, (), Duration::from_millis(100), move |n, ()| {
            serve(n)
        })
        .await
    {
        Ok(answer) => Ok(answer),
        Err(e) => Err(busy(format!("forwarded to n{leader}: {e:?}"))),
    }
}

/// A write through the log: proposed on the leader (forwarded once from a follower), its
/// liveness filled in there (`world::serve_write`); an acknowledged one is recorded for the
/// checks, and an election tells the set's brokers (`Controller::after_election`). `who`
/// starts its trace line (`link` for a broker's request, `scanner nN` for the scanner's).
pub(crate) async fn write(
    w: &Arc<World>,
    id: NodeId,
    node: NodeHandle,
    request: ControllerRequest,
    who: &str,
) -> Result<ControllerResponse, Refusal> {
    let what = crate::world::describe(&request);
    let set = broker_name(&request);
    let fence = matches!(&request, ControllerRequest::AlterSyncStateSet(r) if r.fence);
    let command = ControllerCommand {
        request,
        alive: AliveBrokers::new(),
        policy: DefaultElectPolicy::default(),
    };
    let payload = serde_json::to_string(&command).map_err(|e| busy(e.to_string()))?;
    let req = w.link.next_request(id, payload);
    let mut served_by = id;
    let answer = match crate::world::serve_write(node, req.clone()).await {
        Answer::NotLeader(Some(leader)) if leader != id => {
            served_by = leader;
            forward(w, id, leader, move |n| {
                crate::world::serve_write(n, req.clone())
            })
            .await?
        }
        other => other,
    };
    let (log_id, reply) = match answer {
        Answer::Written { log_id, reply } => (log_id, reply),
        Answer::NotLeader(_) => return Err(busy("no leader")),
        Answer::Failed(e) => return Err(busy(e)),
        Answer::Read(_) => return Err(busy("a write answered as a read")),
    };
    let json = reply
        .result
        .map_err(|e| busy(format!("not applied: {e}")))?;
    let result: CommandResult =
        serde_json::from_str(&json).map_err(|e| busy(format!("undecodable reply: {e}")))?;
    let mut elected = None;
    let summary = match &result {
        Ok(response) => {
            let acked = crate::world::acked(response);
            if let Some(set) = &set {
                if let Some(floor) = acked.floor {
                    w.check.lock().acked_epochs(set, floor);
                }
                elected = acked.elected.map(|(epoch, m)| (set.clone(), epoch, m));
            }
            acked.summary
        }
        Err(refusal) => format!("refused: {} {}", refusal.code, refusal.remark),
    };
    w.log(format!("{who} {what} -> at {log_id}: {summary}"));
    if result.is_ok() {
        if fence {
            w.stats.lock().link_fences += 1;
        }
        let notify = elected.as_ref().map(|(set, _, _)| set.clone());
        w.check
            .lock()
            .acked_write(log_id, format!("{who} {what}"), elected);
        if let Some(set) = notify {
            notify_brokers(w, served_by, &set);
        }
    }
    result
}

fn broker_name(request: &ControllerRequest) -> Option<String> {
    Some(match request {
        ControllerRequest::RegisterBroker(r) => r.broker_name.clone(),
        ControllerRequest::ElectMaster(r) => r.broker_name.clone(),
        ControllerRequest::AlterSyncStateSet(r) => r.broker_name.clone(),
        ControllerRequest::ApplyBrokerId(r) => r.broker_name.clone(),
        _ => return None,
    })
}

/// After an election on node `leader`: NOTIFY_BROKER_ROLE_CHANGED for the set's current master
/// (from the leader's applied state) to every replica, oneway, each after a seeded delay and
/// only over a link that is up (`Controller::after_election`).
fn notify_brokers(w: &Arc<World>, leader: NodeId, set: &str) {
    // Only `broker-a` has replicas here (the scanner elects for `broker-b` too).
    if set != crate::replicas::SET {
        return;
    }
    let Some(node) = w.net.handle(leader) else {
        return;
    };
    let Ok(ControllerQueryResponse::State { state, .. }) =
        node.sm
            .query_app::<rocketraft_controller::ControllerStateMachine>(&ControllerQuery::State)
    else {
        return;
    };
    let Some(broker_set) = state.broker_set(set) else {
        return;
    };
    let request = notify_broker_role_changed(broker_set);
    for addr in broker_set
        .replica_info
        .broker_id_info
        .values()
        .map(|b| b.address.clone())
    {
        let Some(to) = replica_of(&addr) else {
            continue;
        };
        deliver(w, leader, to, request.clone());
    }
}

/// Delivers a role notification from endpoint `from` to replica `to` after a seeded delay, if
/// the link is up then and the replica runs.
fn deliver(w: &Arc<World>, from: Endpoint, to: i64, request: RemotingCommand) {
    let delay = w.link.rng.lock().range(1, 4);
    let w = Arc::downgrade(w);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let Some(w) = w.upgrade() else { return };
        if !w.net.reachable(from, crate::replicas::endpoint(to)) {
            return;
        }
        let Some(info) = parse_role_notification(&request) else {
            return;
        };
        if let Some(manager) = w.replicas.as_ref().and_then(|r| r.manager(to)) {
            manager.on_notification(info).await;
        }
    });
}

/// A replica's peers in the simulation: replication over simulated streams
/// (`replicas::follow_loop`), and the news to an old master as a simulated oneway message.
pub(crate) struct SimPeers {
    pub world: Weak<World>,
    pub id: i64,
    pub incarnation: u64,
    pub rng: Mutex<SimRng>,
}

impl ReplicaPeers for SimPeers {
    fn follow(
        &self,
        _ha: Arc<HaState>,
        _me: i64,
        master_id: i64,
        _master_addr: String,
    ) -> BoxFuture<'static, ()> {
        let (world, id, incarnation) = (self.world.clone(), self.id, self.incarnation);
        let rng = self.rng.lock().fork();
        Box::pin(async move {
            let Some(w) = world.upgrade() else { return };
            crate::replicas::follow_loop(w, id, incarnation, master_id, rng).await;
        })
    }

    fn tell(&self, addr: String, request: RemotingCommand) -> BoxFuture<'static, ()> {
        let (world, id) = (self.world.clone(), self.id);
        Box::pin(async move {
            let (Some(w), Some(to)) = (world.upgrade(), replica_of(&addr)) else {
                return;
            };
            deliver(&w, crate::replicas::endpoint(id), to, request);
        })
    }
}
