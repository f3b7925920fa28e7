//! The simulated network: openraft's [`RaftNetworkFactory`]/[`RaftNetworkV2`] between nodes of
//! one process, and the same links for the simulated clients.
//!
//! Every message crosses a link after a seeded delay (so messages overtake each other), may be
//! lost, may be delivered twice, and is dropped when a partition separates its ends at the time
//! it arrives. Requests between Raft nodes go through a JSON round trip, as on the real transport
//! (`rocketraft_raft::network` carries them as JSON blobs), and are handled by the target's real
//! `openraft::Raft` (`append_entries`, `vote`, `install_full_snapshot`). A lost request or answer
//! is seen by the caller as its deadline passing; a crashed target as `Unreachable` (connection
//! refused).

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::alias::SnapshotOf;
use openraft::alias::VoteOf;
use openraft::errors::NetworkError;
use openraft::errors::RPCError;
use openraft::errors::ReplicationClosed;
use openraft::errors::StreamingError;
use openraft::errors::Unreachable;
use openraft::network::RPCOption;
use openraft::network::RaftNetworkFactory;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::TransferLeaderResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use openraft::BasicNode;
use openraft::RaftNetworkV2;
use parking_lot::Mutex;
use rocketraft_controller::heartbeat::HeartbeatTracker;
use rocketraft_raft::state_machine::StateMachineStore;
use rocketraft_raft::types::Raft;
use rocketraft_raft::NodeId;
use rocketraft_raft::TypeConfig;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::clock::NodeClock;
use crate::rng::SimRng;

/// An endpoint: a Raft node (`1..`), a client ([`CLIENT_BASE`]`+k`) or a simulated broker
/// ([`BROKER_BASE`]`+k`).
pub type Endpoint = u64;

/// Client endpoints are numbered from here.
pub const CLIENT_BASE: Endpoint = 100;

/// Simulated brokers (heartbeat senders) are numbered from here.
pub const BROKER_BASE: Endpoint = 200;

/// What a running node offers the network: its Raft, its state machine, its heartbeat table
/// (in memory: a restarted process starts with an empty one, as the real controller does) and
/// its clock.
#[derive(Clone)]
pub struct NodeHandle {
    pub raft: Raft,
    pub sm: StateMachineStore,
    pub heartbeats: Arc<HeartbeatTracker>,
    pub clock: NodeClock,
    /// Writes being prepared or proposed here (`RaftNode`'s count, for
    /// `rocketraft_raft::leader_settled`).
    pub writes_in_flight: rocketraft_raft::WritesInFlight,
    /// Its ReadIndex reads waiting for the apply, woken in the order they began waiting.
    pub reads: crate::read_gate::ReadGate,
}

/// How the links behave now (the nemesis changes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkConfig {
    /// One-way delay, ms.
    pub delay_ms: (u64, u64),
    /// Chance a message is lost, per mille.
    pub loss: u64,
    /// Chance a message is delivered twice, per mille.
    pub duplicate: u64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            delay_ms: (1, 4),
            loss: 0,
            duplicate: 0,
        }
    }
}

struct NetState {
    /// The seed every stream of draws derives from.
    seed: u64,
    /// Draws per sender: `(from, to, channel)`, where a node opens one channel per openraft
    /// client it creates (replication and heartbeats have their own) and a client has one. A
    /// stream per sender keeps the draws of one link independent of how tasks at the same
    /// instant interleave.
    streams: BTreeMap<(Endpoint, Endpoint, u64), SimRng>,
    /// Channels opened per link so far.
    opened: BTreeMap<(Endpoint, Endpoint), u64>,
    links: LinkConfig,
    /// Running nodes.
    up: BTreeMap<NodeId, NodeHandle>,
    /// Directed links that drop everything: `(from, to)`.
    cut: BTreeSet<(Endpoint, Endpoint)>,
    delivered: u64,
    dropped: u64,
}

/// The network of one simulation run; cheap to clone.
#[derive(Clone)]
pub struct Net {
    state: Arc<Mutex<NetState>>,
}

/// Why a call got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Nobody listens at the target (it is down): known at once, nothing was delivered.
    Unreachable,
    /// No answer before the deadline: the request may or may not have been handled.
    Timeout,
}

impl Net {
    pub fn new(rng: SimRng) -> Self {
        Net {
            state: Arc::new(Mutex::new(NetState {
                seed: rng.clone().next_u64(),
                streams: BTreeMap::new(),
                opened: BTreeMap::new(),
                links: LinkConfig::default(),
                up: BTreeMap::new(),
                cut: BTreeSet::new(),
                delivered: 0,
                dropped: 0,
            })),
        }
    }

    pub fn set_up(&self, id: NodeId, handle: NodeHandle) {
        self.state.lock().up.insert(id, handle);
    }

    pub fn set_down(&self, id: NodeId) -> Option<NodeHandle> {
        self.state.lock().up.remove(&id)
    }

    pub fn handle(&self, id: NodeId) -> Option<NodeHandle> {
        self.state.lock().up.get(&id).cloned()
    }

    pub fn set_links(&self, links: LinkConfig) {
        self.state.lock().links = links;
    }

    pub fn links(&self) -> LinkConfig {
        self.state.lock().links.clone()
    }

    /// Cuts every link between `side` and the other endpoints of `all` (both directions).
    pub fn partition(&self, side: &BTreeSet<Endpoint>, all: &BTreeSet<Endpoint>) {
        let mut st = self.state.lock();
        for a in side {
            for b in all.difference(side) {
                st.cut.insert((*a, *b));
                st.cut.insert((*b, *a));
            }
        }
    }

    /// Cuts the one direction `from -> to`.
    pub fn cut_one_way(&self, from: Endpoint, to: Endpoint) {
        self.state.lock().cut.insert((from, to));
    }

    /// Whether `from -> to` is not cut now.
    pub fn reachable(&self, from: Endpoint, to: Endpoint) -> bool {
        !self.state.lock().cut.contains(&(from, to))
    }

    pub fn heal(&self) {
        self.state.lock().cut.clear();
    }

    /// Messages delivered and dropped so far.
    pub fn counters(&self) -> (u64, u64) {
        let st = self.state.lock();
        (st.delivered, st.dropped)
    }

    /// Opens a new channel from `from` to `to` (see [`NetState::streams`]).
    pub fn open_channel(&self, from: Endpoint, to: Endpoint) -> Channel {
        let mut st = self.state.lock();
        let n = st.opened.entry((from, to)).or_insert(0);
        *n += 1;
        let channel = *n;
        let mut mix = SimRng::new(st.seed ^ (from << 40) ^ (to << 20) ^ channel);
        let rng = mix.fork();
        st.streams.insert((from, to, channel), rng);
        Channel { from, to, channel }
    }

    /// The fate of one call on `ch`, drawn at once from the channel's own stream.
    fn draw(&self, ch: Channel) -> Fate {
        let mut st = self.state.lock();
        let links = st.links.clone();
        let Some(rng) = st.streams.get_mut(&(ch.from, ch.to, ch.channel)) else {
            return Fate::default();
        };
        let (lo, hi) = links.delay_ms;
        Fate {
            there: Duration::from_millis(rng.range(lo, hi)),
            request_lost: rng.chance(links.loss),
            duplicate: rng
                .chance(links.duplicate)
                .then(|| Duration::from_millis(rng.range(lo, hi))),
            back: Duration::from_millis(rng.range(lo, hi)),
            answer_lost: rng.chance(links.loss),
        }
    }

    /// Whether a message crossing `from -> to` now arrives (`lost`: drawn when it was sent).
    fn arrives(&self, from: Endpoint, to: Endpoint, lost: bool) -> bool {
        let mut st = self.state.lock();
        let ok = !lost && !st.cut.contains(&(from, to));
        if ok {
            st.delivered += 1;
        } else {
            st.dropped += 1;
        }
        ok
    }

    /// Sends `req` from `from` to node `to`, where `handler` answers it, and brings the answer
    /// back, within `deadline`. A duplicate delivery runs `handler` again on a copy; its answer
    /// is dropped (the caller already has one or gave up).
    pub async fn call<Req, Resp, F, Fut>(
        &self,
        ch: Channel,
        req: Req,
        deadline: Duration,
        handler: F,
    ) -> Result<Resp, CallError>
    where
        Req: Clone + Send + 'static,
        Resp: Send + 'static,
        F: Fn(NodeHandle, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Resp> + Send + 'static,
    {
        let start = tokio::time::Instant::now();
        let (from, to) = (ch.from, ch.to);
        let fate = self.draw(ch);
        let handler = Arc::new(handler);
        let round = async {
            tokio::time::sleep(fate.there).await;
            if !self.arrives(from, to, fate.request_lost) {
                return Err(CallError::Timeout);
            }
            let Some(node) = self.handle(to) else {
                return Err(CallError::Unreachable);
            };
            if let Some(extra) = fate.duplicate {
                let copy = req.clone();
                let net = self.clone();
                let handler = handler.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(extra).await;
                    // The copy crosses the network on its own: a cut made since stops it.
                    if !net.arrives(from, to, false) {
                        return;
                    }
                    if let Some(node) = net.handle(to) {
                        let _ignored = handler(node, copy).await;
                    }
                });
            }
            let resp = handler(node, req).await;
            tokio::time::sleep(fate.back).await;
            if !self.arrives(to, from, fate.answer_lost) {
                return Err(CallError::Timeout);
            }
            Ok(resp)
        };
        match tokio::time::timeout(deadline, round).await {
            Ok(Err(CallError::Timeout)) => {
                // A lost message shows as silence until the deadline.
                tokio::time::sleep_until(start + deadline).await;
                Err(CallError::Timeout)
            }
            Ok(other) => other,
            Err(_elapsed) => Err(CallError::Timeout),
        }
    }
}

/// One sender's channel to one node (see [`Net::open_channel`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    from: Endpoint,
    to: Endpoint,
    channel: u64,
}

/// What happens to one call, drawn when it is sent.
#[derive(Debug, Clone, Copy, Default)]
struct Fate {
    there: Duration,
    request_lost: bool,
    /// A second copy of the request, this much after the first.
    duplicate: Option<Duration>,
    back: Duration,
    answer_lost: bool,
}

/// A JSON round trip, as the real transport makes: what does not survive it fails here too.
fn wire<T: Serialize + DeserializeOwned>(v: &T) -> Result<T, String> {
    serde_json::to_vec(v)
        .and_then(|b| serde_json::from_slice(&b))
        .map_err(|e| format!("wire coding: {e}"))
}

/// openraft's network factory: one [`PeerLink`] per target.
#[derive(Clone)]
pub struct SimNetworkFactory {
    pub net: Net,
    pub node_id: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for SimNetworkFactory {
    type Network = PeerLink;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> PeerLink {
        PeerLink {
            net: self.net.clone(),
            channel: self.net.open_channel(self.node_id, target),
            target,
        }
    }
}

/// The link from one node to one peer.
pub struct PeerLink {
    net: Net,
    channel: Channel,
    target: NodeId,
}

impl PeerLink {
    async fn rpc<Req, Resp, F, Fut>(
        &self,
        what: &'static str,
        req: Req,
        option: &RPCOption,
        handler: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize + DeserializeOwned + Clone + Send + 'static,
        Resp: Serialize + DeserializeOwned + Send + 'static,
        F: Fn(NodeHandle, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, String>> + Send + 'static,
    {
        let req = wire(&req).map_err(|e| RPCError::Network(NetworkError::from_string(e)))?;
        let answer = self
            .net
            .call(self.channel, req, option.hard_ttl(), handler)
            .await;
        match answer {
            Ok(Ok(resp)) => {
                wire(&resp).map_err(|e| RPCError::Network(NetworkError::from_string(e)))
            }
            Ok(Err(refused)) => Err(RPCError::Network(NetworkError::from_string(format!(
                "node {} refused {what}: {refused}",
                self.target
            )))),
            Err(CallError::Unreachable) => Err(RPCError::Unreachable(Unreachable::from_string(
                format!("{what} to node {}: down", self.target),
            ))),
            Err(CallError::Timeout) => Err(RPCError::Network(NetworkError::from_string(format!(
                "{what} to node {} timed out",
                self.target
            )))),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for PeerLink {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.rpc("append", rpc, &option, |node, rpc| async move {
            node.raft
                .append_entries(rpc)
                .await
                .map_err(|e| e.to_string())
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.rpc("vote", rpc, &option, |node, rpc| async move {
            node.raft.vote(rpc).await.map_err(|e| e.to_string())
        })
        .await
    }

    /// The leader hands leadership to the request's target (the scanner's hand-over): every
    /// voter is told, through its real `handle_transfer_leader`, as the gRPC transport does
    /// (openraft's default refuses it as unreachable, and the cluster then waited for an
    /// election timeout).
    async fn transfer_leader(
        &mut self,
        rpc: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.rpc("transfer-leader", rpc, &option, |node, rpc| async move {
            node.raft
                .handle_transfer_leader(rpc)
                .await
                .map_err(|e| e.to_string())
        })
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Vec<u8>>,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let req = (vote, snapshot.meta, snapshot.snapshot);
        let call = self.rpc(
            "snapshot",
            req,
            &option,
            |node, (vote, meta, data)| async move {
                let snapshot = openraft::Snapshot {
                    meta,
                    snapshot: data,
                };
                node.raft
                    .install_full_snapshot(vote, snapshot)
                    .await
                    .map_err(|e| e.to_string())
            },
        );
        tokio::select! {
            biased;
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = call => r.map_err(|e| match e {
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                other => StreamingError::Network(NetworkError::from_string(other.to_string())),
            }),
        }
    }
}
