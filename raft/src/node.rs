//! A running Raft node: storage, the state machine, the gRPC server, and the client API (writes
//! forwarded to the leader, linearizable or stale reads, membership changes, status).

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use openraft::errors::ClientWriteError;
use openraft::errors::LinearizableReadError;
use openraft::errors::RaftError;
use openraft::raft::ReadPolicy;
use openraft::type_config::async_runtime::WatchReceiver;
use openraft::BasicNode;
use openraft::ChangeMembers;
use openraft::SnapshotPolicy;
use parking_lot::RwLock;
use rocketraft_common::trust::ClusterSecret;
use serde::Deserialize;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::auth::blob_request;
use crate::auth::method;
use crate::auth::Verifier;
use crate::log_store::LogWatch;
use crate::log_store::RocksLogStore;
use crate::network::channel;
use crate::network::from_blob;
use crate::network::is_unreachable;
use crate::network::peer_client;
use crate::network::to_blob;
use crate::network::NetworkFactory;
use crate::network::TransportError;
use crate::server::PeerService;
use crate::state_machine::AppStateMachine;
use crate::state_machine::SmInner;
use crate::state_machine::SnapshotIo;
use crate::state_machine::SnapshotWatch;
use crate::state_machine::StateMachineError;
use crate::state_machine::StateMachineStore;
use crate::types::ApplyError;
use crate::types::NodeId;
use crate::types::Raft;
use crate::types::Reply;
use crate::types::Request;
use crate::types::TypeConfig;

/// How a node is configured. Durations are in milliseconds; the defaults are sized for a loaded
/// 2-core machine (openraft's own defaults, 150-300 ms elections and 50 ms heartbeats, cause
/// spurious elections there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    /// This node's id; never reuse an id on wiped data.
    pub node_id: NodeId,
    /// Address the peer gRPC server listens on.
    pub listen: SocketAddr,
    /// Address peers use to reach this node (defaults to the bound listen address).
    pub advertise: Option<String>,
    /// Directory of the Raft log (RocksDB) and the snapshots.
    pub data_dir: PathBuf,
    /// Initial voters (id -> peer address) of a new cluster, this node included. Used only when
    /// the data directory is new; empty means "join": wait to be added by the existing cluster.
    #[serde(
        deserialize_with = "members_from_any_keys",
        serialize_with = "members_with_string_keys"
    )]
    pub initial_members: BTreeMap<NodeId, String>,
    /// Cluster name; nodes of different clusters refuse each other's messages.
    pub cluster_name: String,
    /// A follower that hears no leader for a random time in `election_timeout_min_ms ..
    /// election_timeout_max_ms` (400-800 ms) stands for election; the max is also openraft's
    /// leader lease (no vote for another candidate before it). A controller leader's death must be
    /// healed well inside a master's role lease (3/4 of the 3 s heartbeat timeout), so keep these
    /// small; see docs/safety.md.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// How often the leader heartbeats its followers (100 ms).
    pub heartbeat_interval_ms: u64,
    /// Deadline of one peer RPC.
    pub rpc_timeout_ms: u64,
    /// Deadline of a client write or read, forwarding and retries included.
    pub client_timeout_ms: u64,
    /// A snapshot is built after this many log entries since the last one.
    pub snapshot_logs: u64,
    /// Log entries kept behind the snapshot (for slightly lagging followers).
    pub keep_logs: u64,
    /// The cluster's shared secret (at least 16 characters). With it, every peer RPC this node
    /// sends carries an HMAC of its method and body with a fresh nonce, and its peer server
    /// refuses RPCs without a valid one, and replayed ones (see [`crate::auth`]). Every member
    /// and every tool that talks to the Raft port needs the same secret. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_secret: Option<ClusterSecret>,
    /// Connections the peer port holds open at most (256): members and tools need a few each;
    /// one accepted beyond the limit is closed at once and logged.
    pub max_peer_connections: usize,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            node_id: 1,
            listen: SocketAddr::from(([127, 0, 0, 1], 9880)),
            advertise: None,
            data_dir: PathBuf::from("raft-data"),
            initial_members: BTreeMap::new(),
            cluster_name: "rocketraft".to_string(),
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            heartbeat_interval_ms: 100,
            rpc_timeout_ms: 2000,
            client_timeout_ms: 10_000,
            snapshot_logs: 5000,
            keep_logs: 1000,
            cluster_secret: None,
            max_peer_connections: DEFAULT_MAX_PEER_CONNECTIONS,
        }
    }
}

/// [`RaftConfig::max_peer_connections`] by default.
pub const DEFAULT_MAX_PEER_CONNECTIONS: usize = 256;

/// Builders over [`Default`] for the keys a generated config sets (`cluster up`, the Jepsen
/// harness): `RaftConfig::default().with_node_id(2).with_listen(addr)`.
impl RaftConfig {
    pub fn with_node_id(mut self, id: NodeId) -> Self {
        self.node_id = id;
        self
    }

    pub fn with_listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }

    pub fn with_data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = dir.into();
        self
    }

    pub fn with_initial_members(mut self, members: BTreeMap<NodeId, String>) -> Self {
        self.initial_members = members;
        self
    }

    pub fn with_cluster_secret(mut self, secret: Option<ClusterSecret>) -> Self {
        self.cluster_secret = secret;
        self
    }
}

/// Writes node ids as string keys (`"1" = "addr"`): TOML keys are strings, and
/// [`members_from_any_keys`] reads them back. JSON gets the same text as before.
pub fn members_with_string_keys<S>(
    members: &BTreeMap<NodeId, String>,
    s: S,
) -> Result<S::Ok, S::Error>
where
    S: serde::Serializer,
{
    s.collect_map(members.iter().map(|(id, addr)| (id.to_string(), addr)))
}

/// A member list on a command line that is not `id=host:port,...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembersError {
    #[error("{what}: {part:?} is not id=host:port (e.g. 1=127.0.0.1:9880,2=127.0.0.1:9881)")]
    NotIdEqualsAddress { what: String, part: String },
    #[error("{what}: {id:?} is not a node id")]
    BadNodeId { what: String, id: String },
}

/// Parses a command-line member list, `1=host:port,2=host:port` (`;` also separates, and an
/// id may be written `n1`); `what` names the flag in errors.
pub fn parse_members(text: &str, what: &str) -> Result<BTreeMap<NodeId, String>, MembersError> {
    let mut out = BTreeMap::new();
    for part in text
        .split([',', ';'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| MembersError::NotIdEqualsAddress {
                what: what.to_string(),
                part: part.to_string(),
            })?;
        let id: NodeId =
            id.trim()
                .trim_start_matches('n')
                .parse()
                .map_err(|_| MembersError::BadNodeId {
                    what: what.to_string(),
                    id: id.to_string(),
                })?;
        out.insert(id, addr.trim().to_string());
    }
    Ok(out)
}

/// Reads `{ 1 = "addr" }` / `{"1": "addr"}` / `{"n1": "addr"}`: TOML and JSON keys are strings.
pub fn members_from_any_keys<'de, D>(d: D) -> Result<BTreeMap<NodeId, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let raw: BTreeMap<String, String> = BTreeMap::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| {
            k.trim_start_matches('n')
                .parse::<NodeId>()
                .map(|id| (id, v))
                .map_err(|_| serde::de::Error::custom(format!("{k:?} is not a node id")))
        })
        .collect()
}

/// Errors of node start-up and of the client API.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize, PartialEq, Eq)]
pub enum RaftClientError {
    /// No leader could be reached before the deadline: the outcome of a write is unknown.
    #[error("no answer from a Raft leader within {0} ms (outcome unknown)")]
    Timeout(u64),
    /// This node is not the leader (returned by forwarded requests; the client API follows it).
    #[error("not the leader; leader is {leader:?}")]
    NotLeader { leader: Option<(NodeId, String)> },
    /// The proposal was discarded by a leader change; it may or may not be committed.
    #[error("proposal discarded by a leader change (outcome unknown)")]
    Discarded { leader: Option<(NodeId, String)> },
    /// The state machine could not decode the command (nothing changed).
    #[error("command rejected: {0}")]
    Rejected(String),
    /// A membership change is not allowed (e.g. another change in progress, unknown node).
    #[error("membership change refused: {0}")]
    Membership(String),
    /// The node is shutting down or broken.
    #[error("raft node failure: {0}")]
    Fatal(String),
    /// This node's Raft log cannot be written (its disk is full or failing; the node waits for
    /// it and resumes by itself once the log can be written). `proposed: false`: refused before
    /// it was proposed, nothing changed. `proposed: true`: the request was waiting on the log
    /// when it stalled; a write may still take effect once the disk has room (outcome unknown).
    #[error("{detail}")]
    Storage { detail: String, proposed: bool },
    /// Start-up failed (configuration, storage, port).
    #[error("raft start-up: {0}")]
    Startup(String),
    /// A leadership transfer did not end with the target leading (it may still happen later).
    #[error("leadership transfer: {0}")]
    Transfer(String),
}

/// A command the state machine (or the leader-side prepare) refused, or a query it could not
/// answer: [`RaftClientError::Rejected`] with the error's text.
impl From<StateMachineError> for RaftClientError {
    fn from(e: StateMachineError) -> Self {
        RaftClientError::Rejected(e.to_string())
    }
}

/// A committed command that was not applied: [`RaftClientError::Rejected`] with its reason.
impl From<ApplyError> for RaftClientError {
    fn from(e: ApplyError) -> Self {
        RaftClientError::Rejected(e.to_string())
    }
}

/// Why [`remote_status`] or [`remote_admin`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The address is bad, or a message could not be encoded or decoded.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The node did not answer in time.
    #[error("{addr}: no answer within {ms} ms")]
    Timeout { addr: String, ms: u128 },
    /// The call failed (the node is unreachable, or its server refused the call).
    #[error("{addr}: {}", .status.message())]
    Status { addr: String, status: tonic::Status },
    /// The node answered with an error (e.g. the membership change was refused).
    #[error(transparent)]
    Raft(#[from] RaftClientError),
}

/// Serializes as its message (a JSON string), for reports that record it.
impl Serialize for RemoteError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl RaftClientError {
    /// Whether a write that failed with this error might still take effect.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            RaftClientError::Timeout(_)
                | RaftClientError::Discarded { .. }
                | RaftClientError::Storage { proposed: true, .. }
        )
    }
}

/// How a read is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ReadMode {
    /// Linearizable: confirmed by the leader with a quorum round (ReadIndex), after the state
    /// machine has applied everything committed before the read began. The default.
    #[default]
    Linearizable,
    /// From this node's state machine as it is: may be stale, never waits for the network.
    Stale,
}

/// A membership change or a leadership transfer (forwarded to the leader). One membership change
/// at a time: openraft refuses a change while another is in progress.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum AdminRequest {
    /// Adds a non-voting learner and waits until it has caught up (by log or by snapshot).
    AddLearner { id: NodeId, addr: String },
    /// Promotes a learner to voter.
    Promote { id: NodeId },
    /// Removes a voter or a learner.
    Remove { id: NodeId },
    /// Hands leadership to voter `to`: the leader waits (briefly) until `to` has its whole log,
    /// stops proposing, and tells the voters; `to` starts an election at once. Answers when `to`
    /// leads, or [`RaftClientError::Transfer`] if it does not within the transfer deadline.
    TransferLeader { to: NodeId },
}

/// What a node reports about itself and its cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: NodeId,
    pub addr: String,
    /// Leader, Follower, Candidate, Learner or Shutdown.
    pub state: String,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub leader_addr: Option<String>,
    pub voters: BTreeMap<NodeId, String>,
    pub learners: BTreeMap<NodeId, String>,
    pub last_log_index: Option<u64>,
    pub committed: Option<u64>,
    pub last_applied: Option<u64>,
    pub snapshot: Option<u64>,
    pub purged: Option<u64>,
}

/// The type-erased node; shared by the gRPC service and the typed [`RaftNode`].
pub(crate) struct NodeCore {
    pub(crate) id: NodeId,
    pub(crate) addr: String,
    pub(crate) raft: Raft,
    pub(crate) sm: Arc<RwLock<SmInner>>,
    client: u64,
    serial: AtomicU64,
    /// Channels to peers for forwarded requests, by address.
    channels: parking_lot::Mutex<std::collections::HashMap<String, tonic::transport::Channel>>,
    rpc_timeout: Duration,
    client_timeout: Duration,
    /// How long a leadership transfer may take before it is reported as failed.
    transfer_timeout: Duration,
    /// Rewrites a command's payload on the leader just before it is proposed (see
    /// [`RaftNode::set_leader_prepare`]).
    prepare: parking_lot::RwLock<Option<PrepareFn>>,
    /// Writes proposed on this node ([`NodeCore::write_local`]) from just before their prepare
    /// until openraft answers them: see [`RaftNode::settled`].
    writes_in_flight: WritesInFlight,
    /// Signs the requests this node forwards ([`crate::auth`]).
    secret: Option<ClusterSecret>,
    /// Checks the requests the peer server receives.
    pub(crate) verifier: Verifier,
    /// Whether the Raft log's writes wait for the disk ([`crate::log_store`]).
    log: LogWatch,
}

/// A leader-side rewrite of a command's JSON payload; an error refuses the command.
type PrepareFn = Arc<dyn Fn(&str) -> Result<String, StateMachineError> + Send + Sync>;

fn random_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;
    use std::hash::Hasher;
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

type LeaderHint = Option<(NodeId, String)>;

/// The peer RPCs that carry forwarded client requests.
#[derive(Clone, Copy)]
enum Forward {
    Write,
    Read,
    Admin,
}

impl NodeCore {
    fn leader_hint(&self, id: Option<NodeId>, node: Option<BasicNode>) -> LeaderHint {
        let id = id?;
        let addr = match node {
            Some(n) => n.addr,
            None => self.member_addr(id)?,
        };
        Some((id, addr))
    }

    fn membership(&self) -> Arc<openraft::alias::StoredMembershipOf<TypeConfig>> {
        self.raft
            .metrics()
            .borrow_watched()
            .membership_config
            .clone()
    }

    fn member_addr(&self, id: NodeId) -> Option<String> {
        self.membership()
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    }

    fn current_leader(&self) -> LeaderHint {
        let leader = self.raft.metrics().borrow_watched().current_leader;
        leader.and_then(|id| self.member_addr(id).map(|a| (id, a)))
    }

    fn write_error(
        &self,
        e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
    ) -> RaftClientError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                RaftClientError::NotLeader {
                    leader: self.leader_hint(f.leader_id, f.leader_node),
                }
            }
            RaftError::APIError(ClientWriteError::LogEntryDiscarded(f)) => {
                RaftClientError::Discarded {
                    leader: self.leader_hint(f.leader_id, f.leader_node),
                }
            }
            RaftError::APIError(e) => RaftClientError::Membership(e.to_string()),
            RaftError::Fatal(f) => RaftClientError::Fatal(f.to_string()),
        }
    }

    /// A reused (HTTP/2 multiplexed) channel to a peer.
    fn channel_to(&self, addr: &str) -> Result<tonic::transport::Channel, tonic::Status> {
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let c = channel(addr, self.rpc_timeout)
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        channels.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Sends a request to the leader's peer server, which runs it locally.
    async fn forward<Req: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        rpc: Forward,
        leader: NodeId,
        addr: String,
        remaining: Duration,
        req: &Req,
    ) -> Result<Result<T, RaftClientError>, tonic::Status> {
        let mut client = peer_client(self.channel_to(&addr)?);
        let blob = to_blob(req).map_err(|e| tonic::Status::internal(e.to_string()))?;
        let path = match rpc {
            Forward::Write => method::WRITE,
            Forward::Read => method::READ,
            Forward::Admin => method::ADMIN,
        };
        let mut r = blob_request(
            blob,
            self.secret.as_ref(),
            Some(self.id),
            Some(leader),
            path,
        );
        r.set_timeout(remaining);
        let resp = match rpc {
            Forward::Write => client.write(r).await?,
            Forward::Read => client.read(r).await?,
            Forward::Admin => client.admin(r).await?,
        };
        from_blob(resp.get_ref()).map_err(|e| tonic::Status::internal(e.to_string()))
    }

    /// Refuses a request while this node's Raft log cannot be written (nothing proposed).
    fn check_log(&self, what: &str) -> Result<(), RaftClientError> {
        match self.log.stalled() {
            None => Ok(()),
            Some(why) => Err(RaftClientError::Storage {
                detail: format!(
                    "{what} refused by raft node {}: {why}; nothing was proposed; the node resumes by itself once its log can be written",
                    self.id
                ),
                proposed: false,
            }),
        }
    }

    /// Runs `request` unless the Raft log stalls while it waits: then answers at once that the
    /// outcome is unknown (a write waiting on the stalled log may still take effect later).
    async fn unless_log_stalls<T>(
        &self,
        what: &str,
        request: impl std::future::Future<Output = Result<T, RaftClientError>>,
    ) -> Result<T, RaftClientError> {
        let mut stall = self.log.subscribe();
        tokio::pin!(request);
        loop {
            tokio::select! {
                r = &mut request => return r,
                changed = stall.changed() => {
                    let why = stall.borrow_and_update().clone();
                    match (changed, why) {
                        (Ok(()), Some(why)) => {
                            return Err(RaftClientError::Storage {
                                detail: format!(
                                    "{what} on raft node {} waited on its log when the log stopped accepting writes: {why}; outcome unknown (it may still take effect once the disk has room)",
                                    self.id
                                ),
                                proposed: true,
                            })
                        }
                        (Ok(()), None) => {}
                        // The store is gone (shutdown): the request ends with the node.
                        (Err(_), _) => return request.await,
                    }
                }
            }
        }
    }

    /// Proposes on this node only (no forwarding).
    pub(crate) async fn write_local(&self, mut req: Request) -> Result<Reply, RaftClientError> {
        self.check_log("write")?;
        // Counted before the prepare reads anything (a leader-side view such as the
        // controller's live brokers) and until openraft answers the write, whether or not
        // anyone still waits for it: a caller that gives up (a timeout, a stalled log, a
        // forwarder's deadline) leaves the entry on its way into the log, so the proposal runs
        // in a task of its own that holds the count. A decision taken while none is in flight
        // ([`RaftNode::settled`]) is taken after every view a proposed entry carries, or
        // before the entry exists.
        let in_flight = self.writes_in_flight.begin();
        let prepare = self.prepare.read().clone();
        if let Some(prepare) = prepare {
            req.payload = prepare(&req.payload)?;
        }
        let raft = self.raft.clone();
        let proposal = tokio::spawn(async move {
            let _in_flight = in_flight;
            raft.client_write(req).await
        });
        self.unless_log_stalls("write", async {
            match proposal.await {
                Ok(answer) => answer
                    .map(|resp| resp.data)
                    .map_err(|e| self.write_error(e)),
                Err(e) => Err(RaftClientError::Fatal(format!(
                    "the proposal task failed: {e}"
                ))),
            }
        })
        .await
    }

    /// Linearizable read on this node only (it must be the leader).
    pub(crate) async fn read_local(&self, query: &str) -> Result<String, RaftClientError> {
        self.check_log("linearizable read")?;
        let linearized = self
            .unless_log_stalls("linearizable read", async {
                Ok(self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await)
            })
            .await?;
        match linearized {
            Ok(_) => {}
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                return Err(RaftClientError::NotLeader {
                    leader: self.leader_hint(f.leader_id, f.leader_node),
                })
            }
            Err(RaftError::APIError(e)) => {
                return Err(RaftClientError::NotLeader {
                    leader: {
                        tracing::debug!(error = %e, "linearizable read refused");
                        None
                    },
                })
            }
            Err(RaftError::Fatal(f)) => return Err(RaftClientError::Fatal(f.to_string())),
        }
        Ok(self.sm.read().query(query)?)
    }

    /// Runs a leadership transfer on this node, which must lead (see
    /// [`AdminRequest::TransferLeader`]).
    async fn transfer_leader_local(&self, to: NodeId) -> Result<String, RaftClientError> {
        let start = Instant::now();
        let m = self.raft.metrics().borrow_watched().clone();
        if m.current_leader != Some(self.id) {
            return Err(RaftClientError::NotLeader {
                leader: self.current_leader(),
            });
        }
        if to == self.id {
            return Ok(format!("node {to} already leads (term {})", m.current_term));
        }
        if !m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == to)
        {
            return Err(RaftClientError::Transfer(format!(
                "node {to} is not a voter"
            )));
        }
        let from_term = m.current_term;
        // The target refuses the transfer unless it holds the leader's whole log: give
        // replication a moment (half the deadline at most) to get it there.
        self.catch_up(to, start + self.transfer_timeout / 2).await;
        self.await_transfer(to, from_term, start).await
    }

    /// Waits until `to` has replicated this node's whole log, or until `until`.
    async fn catch_up(&self, to: NodeId, until: Instant) {
        loop {
            let m = self.raft.metrics().borrow_watched().clone();
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&to).cloned().flatten())
                .map(|l| l.index);
            if matched >= m.last_log_index || Instant::now() >= until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Announces the transfer to `to` (again every second while this node still leads) until
    /// `to` leads a term after `from_term`, another node is elected instead, or the transfer
    /// deadline (from `start`) passes.
    async fn await_transfer(
        &self,
        to: NodeId,
        from_term: u64,
        start: Instant,
    ) -> Result<String, RaftClientError> {
        let deadline = start + self.transfer_timeout;
        let mut triggered: Option<Instant> = None;
        let mut metrics = self.raft.metrics();
        loop {
            let m = metrics.borrow_watched().clone();
            let now = Instant::now();
            if m.current_leader == Some(to) && m.current_term > from_term {
                tracing::info!(
                    from = self.id,
                    to,
                    term = m.current_term,
                    ms = start.elapsed().as_millis() as u64,
                    "leadership transferred"
                );
                return Ok(format!(
                    "node {to} leads (term {}), {} ms after the request to node {}",
                    m.current_term,
                    start.elapsed().as_millis(),
                    self.id
                ));
            }
            if now >= deadline {
                return Err(RaftClientError::Transfer(format!(
                    "node {to} does not lead {} ms after the request (leader {:?}, term {})",
                    start.elapsed().as_millis(),
                    m.current_leader,
                    m.current_term
                )));
            }
            if m.current_leader == Some(self.id) {
                // Still leading: (re)announce the transfer; a target that was behind refused the
                // previous announcement.
                if triggered.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
                    tracing::info!(
                        from = self.id,
                        to,
                        term = m.current_term,
                        "transferring leadership"
                    );
                    self.raft
                        .trigger()
                        .transfer_leader(to)
                        .await
                        .map_err(|f| RaftClientError::Fatal(f.to_string()))?;
                    triggered = Some(now);
                }
            } else if let Some(other) = m.current_leader.filter(|l| *l != to) {
                if m.current_term > from_term {
                    return Err(RaftClientError::Transfer(format!(
                        "node {other} was elected (term {}) instead of node {to}",
                        m.current_term
                    )));
                }
            }
            if let Ok(Err(_)) =
                tokio::time::timeout(Duration::from_millis(100), metrics.changed()).await
            {
                return Err(RaftClientError::Fatal("raft stopped".to_string()));
            }
        }
    }

    pub(crate) async fn admin_local(&self, req: AdminRequest) -> Result<String, RaftClientError> {
        let result = match &req {
            AdminRequest::TransferLeader { to } => return self.transfer_leader_local(*to).await,
            AdminRequest::AddLearner { id, addr } => {
                self.raft
                    .add_learner(*id, BasicNode { addr: addr.clone() }, true)
                    .await
            }
            AdminRequest::Promote { id } => {
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([*id])), false)
                    .await
            }
            AdminRequest::Remove { id } => {
                let is_voter = self.membership().membership().voter_ids().any(|v| v == *id);
                let change = if is_voter {
                    ChangeMembers::RemoveVoters(BTreeSet::from([*id]))
                } else {
                    ChangeMembers::RemoveNodes(BTreeSet::from([*id]))
                };
                self.raft.change_membership(change, false).await
            }
        };
        result
            .map(|resp| format!("{req:?} committed at {}", resp.log_id))
            .map_err(|e| self.write_error(e))
    }

    pub(crate) fn status(&self) -> NodeStatus {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voter_ids: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut voters = BTreeMap::new();
        let mut learners = BTreeMap::new();
        for (id, node) in membership.nodes() {
            if voter_ids.contains(id) {
                voters.insert(*id, node.addr.clone());
            } else {
                learners.insert(*id, node.addr.clone());
            }
        }
        let leader_addr = m
            .current_leader
            .and_then(|l| membership.get_node(&l).map(|n| n.addr.clone()));
        NodeStatus {
            id: self.id,
            addr: self.addr.clone(),
            state: format!("{:?}", m.state),
            term: m.current_term,
            leader: m.current_leader,
            leader_addr,
            voters,
            learners,
            last_log_index: m.last_log_index,
            committed: m.local_committed.map(|l| l.index),
            last_applied: m.last_applied.map(|l| l.index),
            snapshot: m.snapshot.map(|l| l.index),
            purged: m.purged.map(|l| l.index),
        }
    }

    /// Runs `local` here if this node leads, otherwise sends `forward` to the leader; retries
    /// (same request, so de-duplicated) until the client deadline.
    async fn route<T, L, LF, F, FF>(
        &self,
        what: &'static str,
        local: L,
        forward: F,
    ) -> Result<T, RaftClientError>
    where
        L: Fn() -> LF,
        LF: std::future::Future<Output = Result<T, RaftClientError>>,
        F: Fn(NodeId, String, Duration) -> FF,
        FF: std::future::Future<Output = Result<Result<T, RaftClientError>, tonic::Status>>,
    {
        let start = Instant::now();
        let deadline = start + self.client_timeout;
        let mut hint = self.current_leader();
        let mut attempt = 0u32;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(RaftClientError::Timeout(
                    self.client_timeout.as_millis() as u64
                ));
            }
            let remaining = deadline - now;
            attempt += 1;
            let outcome = match &hint {
                Some((id, _)) if *id == self.id => {
                    tokio::time::timeout(remaining, local()).await.ok()
                }
                Some((id, addr)) => {
                    match tokio::time::timeout(remaining, forward(*id, addr.clone(), remaining))
                        .await
                        .unwrap_or_else(|_| {
                            Err(tonic::Status::deadline_exceeded("forwarding timed out"))
                        }) {
                        Ok(r) => Some(r),
                        Err(status) => {
                            tracing::debug!(what, leader = id, %status, unreachable = is_unreachable(&status), "forwarding failed; retrying");
                            None
                        }
                    }
                }
                None => None,
            };
            match outcome {
                Some(Ok(v)) => return Ok(v),
                // Told who leads now: go there at once.
                Some(Err(RaftClientError::NotLeader { leader }))
                | Some(Err(RaftClientError::Discarded { leader }))
                    if leader.is_some() && leader != hint =>
                {
                    hint = leader;
                    continue;
                }
                Some(Err(RaftClientError::NotLeader { .. }))
                | Some(Err(RaftClientError::Discarded { .. })) => {}
                Some(Err(e)) => return Err(e),
                None => {}
            }
            // Back off a little, growing, then look the leader up again.
            let pause = Duration::from_millis((20u64 << attempt.min(4)).min(300));
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            hint = self.current_leader();
        }
    }

    fn next_request(&self, payload: String) -> Request {
        Request {
            client: self.client,
            serial: self.serial.fetch_add(1, Ordering::Relaxed) + 1,
            payload,
        }
    }

    pub(crate) async fn write_json(&self, payload: String) -> Result<String, RaftClientError> {
        let req = self.next_request(payload);
        let reply = self
            .route(
                "write",
                || self.write_local(req.clone()),
                |leader, addr, remaining| {
                    self.forward(Forward::Write, leader, addr, remaining, &req)
                },
            )
            .await?;
        Ok(reply.result?)
    }

    pub(crate) async fn read_json(
        &self,
        query: String,
        mode: ReadMode,
    ) -> Result<String, RaftClientError> {
        if mode == ReadMode::Stale {
            return Ok(self.sm.read().query(&query)?);
        }
        self.route(
            "read",
            || self.read_local(&query),
            |leader, addr, remaining| self.forward(Forward::Read, leader, addr, remaining, &query),
        )
        .await
    }

    pub(crate) async fn admin(&self, req: AdminRequest) -> Result<String, RaftClientError> {
        // `false`: the leader runs it itself, never forwards it again.
        let forwarded = (req.clone(), false);
        self.route(
            "admin",
            || self.admin_local(req.clone()),
            |leader, addr, remaining| {
                self.forward(Forward::Admin, leader, addr, remaining, &forwarded)
            },
        )
        .await
    }
}

/// A running Raft node replicating the application state machine `S`.
pub struct RaftNode<S: AppStateMachine> {
    core: Arc<NodeCore>,
    local_addr: SocketAddr,
    server_stop: parking_lot::Mutex<Option<oneshot::Sender<()>>>,
    server_task: parking_lot::Mutex<Option<JoinHandle<()>>>,
    /// The log store's stall state; closed once every handle of the log database is dropped
    /// (its lock released).
    log: LogWatch,
    /// The snapshot store's stall state and shutdown switch.
    snapshots: SnapshotWatch,
    _app: PhantomData<fn() -> S>,
}

const NODE_ID_FILE: &str = "node_id";

fn check_node_id(dir: &std::path::Path, id: NodeId) -> io::Result<bool> {
    let path = dir.join(NODE_ID_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let stored: NodeId = text.trim().parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: not a node id: {text:?}", path.display()),
                )
            })?;
            if stored != id {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} belongs to node {stored}, not node {id}: use that id, or a new empty directory",
                        dir.display()
                    ),
                ));
            }
            Ok(false)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::write(&path, format!("{id}\n"))?;
            fs::File::open(&path)?.sync_all()?;
            Ok(true)
        }
        Err(e) => Err(e),
    }
}

/// `fs::create_dir_all`, then an fsync of the parent of every directory it created, so the
/// new directories survive a power loss.
fn create_dir_all_durable(dir: &std::path::Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.exists() {
            break;
        }
        missing.push(d.to_path_buf());
        cur = d.parent();
    }
    fs::create_dir_all(dir)?;
    for d in missing.iter().rev() {
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::File::open(parent)?.sync_all()?;
        }
    }
    Ok(())
}

impl NodeCore {
    fn new(
        config: &RaftConfig,
        addr: String,
        raft: Raft,
        sm: Arc<RwLock<SmInner>>,
        log: LogWatch,
    ) -> NodeCore {
        NodeCore {
            id: config.node_id,
            addr,
            raft,
            sm,
            client: random_u64(),
            serial: AtomicU64::new(0),
            channels: parking_lot::Mutex::new(std::collections::HashMap::new()),
            rpc_timeout: Duration::from_millis(config.rpc_timeout_ms),
            client_timeout: Duration::from_millis(config.client_timeout_ms),
            // Catching up, one election, and a heartbeat to the old leader; below the client
            // deadline so a forwarded transfer answers before the forwarder gives up.
            transfer_timeout: Duration::from_millis(
                (config.election_timeout_max_ms * 3)
                    .max(3000)
                    .min(config.client_timeout_ms * 3 / 4),
            ),
            prepare: parking_lot::RwLock::new(None),
            writes_in_flight: WritesInFlight::default(),
            secret: config.cluster_secret.clone(),
            verifier: Verifier::new(config.cluster_secret.clone(), config.node_id),
            log,
        }
    }
}

/// The writes being prepared or proposed on a node, for [`leader_settled`]: a write is
/// counted from before its leader-side prepare reads anything until openraft answers it
/// ([`WritesInFlight::begin`] returns the guard that ends the count). Shared by
/// [`RaftNode`] and the deterministic simulation's nodes.
#[derive(Debug, Clone, Default)]
pub struct WritesInFlight(Arc<AtomicU64>);

impl WritesInFlight {
    /// Counts one write in until the returned guard is dropped.
    pub fn begin(&self) -> InFlightWrite {
        self.0.fetch_add(1, Ordering::SeqCst);
        InFlightWrite(self.0.clone())
    }

    /// How many writes are in flight now.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// One write of a [`WritesInFlight`]; counts it out when dropped.
#[must_use = "the write is counted only while this guard lives"]
#[derive(Debug)]
pub struct InFlightWrite(Arc<AtomicU64>);

impl Drop for InFlightWrite {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether node `id`, by its metrics `m`, is a leader whose applied state is final for now:
/// it leads, it has applied an entry of its own term (so every entry an earlier leader
/// committed is applied here, and no entry of an earlier term can still commit), everything in
/// its log is applied, and no write is being prepared or proposed on it (`writes_in_flight`).
/// A decision read from the applied state then cannot be overtaken by an entry already on its
/// way: any later entry is prepared after the decision. Shared by [`RaftNode::settled`] and
/// the deterministic simulation, which runs openraft itself.
pub fn leader_settled(
    m: &openraft::RaftMetrics<TypeConfig>,
    id: NodeId,
    writes_in_flight: u64,
) -> bool {
    if writes_in_flight != 0 || m.current_leader != Some(id) {
        return false;
    }
    m.last_applied.as_ref().is_some_and(|applied| {
        applied.committed_leader_id().term == m.current_term
            && m.last_log_index == Some(applied.index())
    })
}

fn startup(e: String) -> RaftClientError {
    RaftClientError::Startup(e)
}

/// Refuses timeouts that cannot work: heartbeat < election min < election max.
fn check_timeouts(config: &RaftConfig) -> Result<(), RaftClientError> {
    if config.election_timeout_min_ms <= config.heartbeat_interval_ms
        || config.election_timeout_max_ms <= config.election_timeout_min_ms
    {
        return Err(startup(format!(
            "timeouts must satisfy heartbeat ({}) < election min ({}) < election max ({})",
            config.heartbeat_interval_ms,
            config.election_timeout_min_ms,
            config.election_timeout_max_ms
        )));
    }
    Ok(())
}

/// openraft's configuration of the node.
fn openraft_config(config: &RaftConfig) -> Result<openraft::Config, RaftClientError> {
    openraft::Config {
        cluster_name: config.cluster_name.clone(),
        election_timeout_min: config.election_timeout_min_ms,
        election_timeout_max: config.election_timeout_max_ms,
        heartbeat_interval: config.heartbeat_interval_ms,
        install_snapshot_timeout: config.rpc_timeout_ms.max(10_000),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_logs.max(1)),
        max_in_snapshot_log_to_keep: config.keep_logs,
        // A restarted leader stands for election in a new term, never resumes its old one
        // (openraft's default resumes it when its vote is committed). Resuming is unsafe here:
        // the committed log id is saved without a sync, so after a power loss the resumed
        // leader serves linearizable reads (ReadIndex at its local committed id) from a state
        // older than writes it had acknowledged; and a leader whose log lost entries it had
        // already sent would propose different entries under the same log ids, which followers
        // keep (Raft's log matching broken, the state machines diverge). The simulation found
        // both (`rocketraft-sim --controller-link --fault-ms 3000`, seeds 106 and 84).
        enable_leader_restore: Some(false),
        ..Default::default()
    }
    .validate()
    .map_err(|e| startup(format!("raft config: {e}")))
}

/// Serves the peer gRPC service on `listener` until the returned sender fires (or drops).
fn serve_peers(
    listener: tokio::net::TcpListener,
    core: Arc<NodeCore>,
    max_connections: usize,
) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let service = PeerService::new(core).into_server();
    // With TCP_NODELAY (Builder::tcp_nodelay applies only to listeners tonic binds itself), at
    // most `max_connections` open.
    let incoming = rocketraft_common::capped::incoming(listener, max_connections, "raft peer port");
    let server_task = tokio::spawn(async move {
        // Peers need a few streams each (votes, appends, snapshots); a peer that opens more or
        // goes silent is cut off rather than held (issue 16: resource limits on every port).
        let result = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .max_concurrent_streams(Some(64))
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop_rx.await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "raft peer server stopped with an error");
        }
    });
    (stop_tx, server_task)
}

/// Bootstraps a new cluster from `initial_members` when the data directory was new (`fresh`),
/// Raft is not initialized and this node is a member; this node's entry is its own `addr`.
async fn bootstrap(
    raft: &Raft,
    config: &RaftConfig,
    addr: &str,
    fresh: bool,
) -> Result<(), RaftClientError> {
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| startup(format!("raft: {e}")))?;
    if !initialized && fresh && config.initial_members.contains_key(&config.node_id) {
        let members: BTreeMap<NodeId, BasicNode> = config
            .initial_members
            .iter()
            .map(|(id, a)| {
                let a = if *id == config.node_id {
                    addr.to_string()
                } else {
                    a.clone()
                };
                (*id, BasicNode { addr: a })
            })
            .collect();
        match raft.initialize(members).await {
            Ok(()) => tracing::info!(node = config.node_id, "bootstrapped a new raft cluster"),
            Err(RaftError::APIError(e)) => {
                tracing::info!(node = config.node_id, reason = %e, "cluster already initialized")
            }
            Err(RaftError::Fatal(f)) => return Err(startup(format!("raft: {f}"))),
        }
    } else if !initialized {
        tracing::info!(
            node = config.node_id,
            "waiting to be added to an existing cluster"
        );
    }
    Ok(())
}

impl<S: AppStateMachine> RaftNode<S> {
    /// Starts a node: opens (or creates) its storage, restores the state machine from the last
    /// snapshot, binds the peer gRPC server, and bootstraps a new cluster from
    /// `initial_members` if the data directory is new.
    pub async fn start(config: RaftConfig, app: S) -> Result<Self, RaftClientError> {
        check_timeouts(&config)?;
        create_dir_all_durable(&config.data_dir)
            .map_err(|e| startup(format!("{}: {e}", config.data_dir.display())))?;
        let fresh =
            check_node_id(&config.data_dir, config.node_id).map_err(|e| startup(e.to_string()))?;

        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| startup(format!("cannot listen on {}: {e}", config.listen)))?;
        let local_addr = listener.local_addr().map_err(|e| startup(e.to_string()))?;
        let addr = config
            .advertise
            .clone()
            .unwrap_or_else(|| local_addr.to_string());

        let log_store = RocksLogStore::<TypeConfig>::open(config.data_dir.join("log"))
            .map_err(|e| startup(format!("raft log: {e}")))?;
        let log = log_store.watch();
        let sm = StateMachineStore::open(
            &config.data_dir.join("snapshot"),
            Box::new(app),
            SnapshotIo::BlockingPool,
        )
        .map_err(|e| startup(format!("state machine: {e}")))?;
        // `node_id`, `log/` and `snapshot/` are entries of the data directory: durable only
        // once it is synced (else a power loss right after the first start can take the whole
        // log, votes included, and the node restarts blank).
        fs::File::open(&config.data_dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| startup(format!("{}: {e}", config.data_dir.display())))?;
        let shared = sm.shared();
        let snapshots = sm.watch();

        let raft_config = openraft_config(&config)?;
        let rpc_timeout = Duration::from_millis(config.rpc_timeout_ms);
        let network = NetworkFactory {
            rpc_timeout,
            connect_timeout: rpc_timeout.min(Duration::from_millis(1000)),
            node_id: config.node_id,
            secret: config.cluster_secret.clone(),
        };
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            network,
            log_store,
            sm,
        )
        .await
        .map_err(|e| startup(format!("raft: {e}")))?;

        let core = Arc::new(NodeCore::new(
            &config,
            addr.clone(),
            raft.clone(),
            shared,
            log.clone(),
        ));

        let (stop_tx, server_task) =
            serve_peers(listener, core.clone(), config.max_peer_connections);
        bootstrap(&raft, &config, &addr, fresh).await?;
        tracing::info!(node = config.node_id, %local_addr, %addr, "raft node started");

        Ok(RaftNode {
            core,
            local_addr,
            server_stop: parking_lot::Mutex::new(Some(stop_tx)),
            server_task: parking_lot::Mutex::new(Some(server_task)),
            log,
            snapshots,
            _app: PhantomData,
        })
    }

    /// Sets a rewrite that this node applies to every command it proposes as the leader,
    /// forwarded ones included, just before `client_write`: what a command must carry of the
    /// leader's own view (the controller's live-broker table) is filled in here, never on the
    /// node that first received the request. An `Err` (e.g. [`StateMachineError::Rejected`])
    /// refuses the command: [`RaftClientError::Rejected`] with its text.
    pub fn set_leader_prepare<F>(&self, prepare: F)
    where
        F: Fn(S::Command) -> Result<S::Command, StateMachineError> + Send + Sync + 'static,
    {
        let f: PrepareFn = Arc::new(move |payload: &str| {
            let command: S::Command = serde_json::from_str(payload)
                .map_err(|e| StateMachineError::undecodable_command(None, e))?;
            let command = prepare(command)?;
            serde_json::to_string(&command)
                .map_err(|e| StateMachineError::unencodable("command", e))
        });
        *self.core.prepare.write() = Some(f);
    }

    /// Calls `f(term, leads)` now and after every change of Raft's metrics, until the node
    /// shuts down: `leads` is whether this node is the leader of `term`. Every change of
    /// leadership is seen, however short (the controller's tenure tracking).
    pub fn on_leadership<F>(&self, mut f: F) -> tokio::task::JoinHandle<()>
    where
        F: FnMut(u64, bool) + Send + 'static,
    {
        let mut rx = self.core.raft.metrics();
        let me = self.core.id;
        tokio::spawn(async move {
            loop {
                {
                    let m = rx.borrow_and_update();
                    let leads = m.current_leader == Some(me) && m.state.is_leader();
                    f(m.current_term, leads);
                }
                if rx.changed().await.is_err() {
                    break;
                }
            }
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.core.id
    }

    /// The address the peer server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The openraft handle, for metrics and triggers.
    pub fn raft(&self) -> &Raft {
        &self.core.raft
    }

    /// Whether this node currently believes it is the leader (a hint; decisions go through the
    /// log).
    pub fn is_leader(&self) -> bool {
        self.core.raft.metrics().borrow_watched().current_leader == Some(self.core.id)
    }

    /// For a leader: how long ago a quorum last acknowledged its term (no other leader can have
    /// been elected before that instant). `None` on a follower or before any acknowledgement.
    /// A single-node cluster is its own quorum at every instant.
    pub fn quorum_ack_age(&self) -> Option<Duration> {
        let m = self.core.raft.metrics().borrow_watched().clone();
        if m.current_leader != Some(self.core.id) {
            return None;
        }
        if m.membership_config.membership().voter_ids().count() <= 1 {
            return Some(Duration::ZERO);
        }
        m.last_quorum_acked.map(|t| openraft::Instant::elapsed(&*t))
    }

    /// See [`leader_settled`]. Reads no network: a snapshot of this node's metrics and its
    /// count of writes in flight (read first, so a write counted after it prepares after it).
    pub fn settled(&self) -> bool {
        let in_flight = self.core.writes_in_flight.count();
        let m = self.core.raft.metrics().borrow_watched().clone();
        leader_settled(&m, self.core.id, in_flight)
    }

    /// Answers `query` from this node's applied state as it is now, without waiting for
    /// anything (a stale read; [`RaftNode::settled`] says when a leader's is final).
    pub fn read_applied(&self, query: &S::Query) -> Result<S::QueryResponse, RaftClientError> {
        let payload = serde_json::to_string(query)
            .map_err(|e| RaftClientError::Rejected(format!("unencodable query: {e}")))?;
        let answer = self
            .core
            .sm
            .read()
            .query(&payload)
            .map_err(|e| RaftClientError::Rejected(e.to_string()))?;
        serde_json::from_str(&answer)
            .map_err(|e| RaftClientError::Rejected(format!("undecodable answer: {e}")))
    }

    /// The current leader's id and address, if known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        self.core.current_leader()
    }

    /// Proposes `command`; forwarded to the leader from any node. Returns the state machine's
    /// response once the command is committed and applied.
    pub async fn write(&self, command: &S::Command) -> Result<S::Response, RaftClientError> {
        let payload = serde_json::to_string(command)
            .map_err(|e| RaftClientError::Rejected(format!("unencodable command: {e}")))?;
        let answer = self.core.write_json(payload).await?;
        serde_json::from_str(&answer)
            .map_err(|e| RaftClientError::Rejected(format!("undecodable response: {e}")))
    }

    /// Answers `query`, linearizably unless `mode` is [`ReadMode::Stale`].
    pub async fn read(
        &self,
        query: &S::Query,
        mode: ReadMode,
    ) -> Result<S::QueryResponse, RaftClientError> {
        let payload = serde_json::to_string(query)
            .map_err(|e| RaftClientError::Rejected(format!("unencodable query: {e}")))?;
        let answer = self.core.read_json(payload, mode).await?;
        serde_json::from_str(&answer)
            .map_err(|e| RaftClientError::Rejected(format!("undecodable answer: {e}")))
    }

    /// Runs a membership change through the leader.
    pub async fn admin(&self, req: AdminRequest) -> Result<String, RaftClientError> {
        self.core.admin(req).await
    }

    /// Why a snapshot of this node waits to be written (its disk is full or failing; the node
    /// keeps serving, keeps the log behind the previous snapshot, and writes the snapshot by
    /// itself once the disk has room), if one does.
    pub fn snapshot_stalled(&self) -> Option<String> {
        self.snapshots.stalled()
    }

    /// This node's view of itself and the cluster.
    pub fn status(&self) -> NodeStatus {
        self.core.status()
    }

    /// Stops the peer server, then Raft (in that order, so no RPC reaches a stopped core).
    pub async fn shutdown(&self) {
        if let Some(stop) = self.server_stop.lock().take() {
            let _ = stop.send(());
        }
        let task = self.server_task.lock().take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        // A write waiting for a full disk gives up (the node stops anyway).
        self.log.close();
        self.snapshots.close();
        if let Err(e) = self.core.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        // openraft's workers drop their log handles as they stop; wait for that so the data
        // directory can be reopened as soon as this returns.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log.is_closed() {
            if Instant::now() >= deadline {
                tracing::warn!(
                    node = self.core.id,
                    "the raft log is still open 10 s after shutdown"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!(node = self.core.id, "raft node stopped");
    }
}

/// Queries a node's status over the peer protocol (for admin tools). `secret`: the cluster
/// secret, needed when the node has one ([`RaftConfig::cluster_secret`]).
pub async fn remote_status(
    addr: &str,
    timeout: Duration,
    secret: Option<&ClusterSecret>,
) -> Result<NodeStatus, RemoteError> {
    let mut client = peer_client(channel(addr, timeout)?);
    let mut r = blob_request(to_blob(&())?, secret, None, None, method::STATUS);
    r.set_timeout(timeout);
    let resp = tokio::time::timeout(timeout, client.status(r))
        .await
        .map_err(|_| remote_timeout(addr, timeout))?
        .map_err(|status| remote_status_error(addr, status))?;
    Ok(from_blob(resp.get_ref())?)
}

fn remote_timeout(addr: &str, timeout: Duration) -> RemoteError {
    RemoteError::Timeout {
        addr: addr.to_string(),
        ms: timeout.as_millis(),
    }
}

fn remote_status_error(addr: &str, status: tonic::Status) -> RemoteError {
    RemoteError::Status {
        addr: addr.to_string(),
        status,
    }
}

/// Sends a membership change to a node over the peer protocol; the node forwards it to the leader.
/// `secret`: the cluster secret, needed when the node has one ([`RaftConfig::cluster_secret`]).
/// With a secret the node's status is asked first: the change's proof names the node's id.
pub async fn remote_admin(
    addr: &str,
    req: &AdminRequest,
    timeout: Duration,
    secret: Option<&ClusterSecret>,
) -> Result<String, RemoteError> {
    let started = Instant::now();
    let receiver = match secret {
        Some(_) => Some(remote_status(addr, timeout, secret).await?.id),
        None => None,
    };
    let timeout = timeout.saturating_sub(started.elapsed());
    let mut client = peer_client(channel(addr, timeout.min(Duration::from_secs(2)))?);
    let mut r = blob_request(
        to_blob(&(req, true))?,
        secret,
        None,
        receiver,
        method::ADMIN,
    );
    r.set_timeout(timeout);
    let resp = tokio::time::timeout(timeout, client.admin(r))
        .await
        .map_err(|_| remote_timeout(addr, timeout))?
        .map_err(|status| remote_status_error(addr, status))?;
    let result: Result<String, RaftClientError> = from_blob(resp.get_ref())?;
    Ok(result?)
}

#[cfg(test)]
mod config_tests {
    use super::*;

    fn round_trip(config: &RaftConfig) -> RaftConfig {
        let text = toml::to_string(config).expect("serializes");
        toml::from_str(&text).unwrap_or_else(|e| panic!("does not parse back: {e}\n{text}"))
    }

    #[test]
    fn serialized_config_parses_back_identically() {
        let default = RaftConfig::default();
        assert_eq!(round_trip(&default), default);
        let custom = RaftConfig {
            advertise: Some("10.0.0.2:9880".to_string()),
            cluster_name: "other".to_string(),
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1_000,
            heartbeat_interval_ms: 111,
            rpc_timeout_ms: 1_500,
            client_timeout_ms: 5_000,
            snapshot_logs: 100,
            keep_logs: 10,
            cluster_secret: Some(ClusterSecret::new("0123456789abcdef-secret").expect("secret")),
            ..RaftConfig::default()
                .with_node_id(2)
                .with_listen(SocketAddr::from(([127, 0, 0, 1], 30003)))
                .with_data_dir("/d/controller-2/data")
                .with_initial_members(BTreeMap::from([
                    (1, "127.0.0.1:30001".to_string()),
                    (2, "127.0.0.1:30003".to_string()),
                    (10, "127.0.0.1:30005".to_string()),
                ]))
        };
        assert_eq!(round_trip(&custom), custom);
        let text = toml::to_string(&custom).expect("serializes");
        let table: toml::Table = toml::from_str(&text).expect("parses");
        assert_eq!(
            table["initial_members"]["1"].as_str(),
            Some("127.0.0.1:30001")
        );
        assert_eq!(
            table["cluster_secret"].as_str(),
            Some("0123456789abcdef-secret")
        );
        // Absent from a config without one; a short secret is refused.
        assert!(!toml::to_string(&default)
            .expect("serializes")
            .contains("cluster_secret"));
        let weak = format!("{text}\n").replace("0123456789abcdef-secret", "short");
        assert!(toml::from_str::<RaftConfig>(&weak).is_err());
        // JSON keeps its string keys.
        let json = serde_json::to_value(&custom).expect("json");
        assert_eq!(json["initial_members"]["10"], "127.0.0.1:30005");
        let back: RaftConfig = serde_json::from_value(json).expect("parses");
        assert_eq!(back, custom);
    }

    #[test]
    fn command_line_member_lists_parse_or_say_what_is_wrong() {
        let members = parse_members("1=127.0.0.1:9880; n2 = 127.0.0.1:9881,", "--peers")
            .expect("two members");
        assert_eq!(
            members,
            BTreeMap::from([
                (1, "127.0.0.1:9880".to_string()),
                (2, "127.0.0.1:9881".to_string())
            ])
        );
        let err = parse_members("1=a:1,127.0.0.1:9", "--peers").expect_err("no id");
        assert_eq!(
            err.to_string(),
            "--peers: \"127.0.0.1:9\" is not id=host:port (e.g. 1=127.0.0.1:9880,2=127.0.0.1:9881)"
        );
        let err = parse_members("x=a:1", "--remoting-peers").expect_err("bad id");
        assert_eq!(err.to_string(), "--remoting-peers: \"x\" is not a node id");
    }
}
