//! The running controller: a Raft node replicating [`ControllerStateMachine`], the heartbeat
//! table, the scanner that elects a new master when a master's heartbeat times out, and the
//! Remoting processor for the controller request codes.
//!
//! Every node answers every request: writes are forwarded to the Raft leader and answered only
//! once committed and applied; reads are linearizable (ReadIndex through the leader) unless
//! `stale_reads` is set. A broker therefore never needs to find the leader itself, and no client
//! ever sees a decision that was not committed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Weak;
use std::time::Duration;

use parking_lot::Mutex;
use rocketraft_common::advertise::{AddressError, Advertised, Peer};
use rocketraft_common::metrics::{Collector, RpcMetrics};
use rocketraft_common::trust::ClusterSecret;
use rocketraft_raft::NodeStatus;
use rocketraft_raft::RaftClientError;
use rocketraft_raft::RaftConfig;
use rocketraft_raft::RaftNode;
use rocketraft_raft::ReadMode;
use rocketraft_remoting::limits::{InvalidLimit, ServerLimitsConfig};
use rocketraft_remoting::response_code;
use rocketraft_remoting::tls::{ClientTlsConfig, ServerTlsConfig, TlsError};
use rocketraft_remoting::ClientConfig;
use rocketraft_remoting::RemotingClient;
use rocketraft_remoting::RemotingServer;
use rocketraft_remoting::RequestProcessor;
use rocketraft_remoting::ServerHandle;
use serde::Deserialize;
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::elect::DefaultElectPolicy;
use crate::handler::ControllerRequest;
use crate::handler::ControllerResponse;
use crate::handler::ElectOutcome;
use crate::heartbeat::Heartbeat;
use crate::heartbeat::HeartbeatTracker;
use crate::metrics::{
    ControllerCollector, ControllerMetrics, ElectionResult, LeaseAnswer, SetsView,
};
use crate::peers::PeerView;
use crate::replicated::CommandResult;
use crate::replicated::ControllerCommand;
use crate::replicated::ControllerQuery;
use crate::replicated::ControllerQueryResponse;
use crate::replicated::ControllerStateMachine;
use crate::scanner::{scan_round, ScanEnv, ScannerMemory};
use crate::state::ControllerState;
use crate::wire;
use rocketraft_remoting::Refusal;

/// The controller's settings (RocketMQ `ControllerConfig` names in the aliases).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControllerConfig {
    /// The Raft member this process runs.
    pub raft: RaftConfig,
    /// Where brokers and admin tools reach the controller over Remoting (standalone mode;
    /// `listenPort`, default 9878). Ignored when embedded in the NameServer, which serves the
    /// controller codes on its own port.
    #[serde(alias = "listenAddr")]
    pub listen: SocketAddr,
    /// `enableElectUncleanMaster`: elect outside the SyncStateSet when nobody in it is alive
    /// (may lose acknowledged messages). Default false.
    #[serde(alias = "enableElectUncleanMaster")]
    pub enable_elect_unclean_master: bool,
    /// Heartbeat timeout used when a broker does not send its own (`heartbeatTimeoutMills`;
    /// 3 s). Brokers learn it from every heartbeat answer and keep their role lease below 3/4 of
    /// it; a new controller leader elects a master only after this long in office.
    pub heartbeat_timeout_ms: u64,
    /// How often the leader looks for dead masters (`scanNotActiveBrokerInterval`; 250 ms here,
    /// RocketMQ scans every 5 s).
    #[serde(alias = "scanNotActiveBrokerInterval")]
    pub scan_interval_ms: u64,
    /// Send `NOTIFY_BROKER_ROLE_CHANGED` to a set's brokers after an election.
    #[serde(alias = "notifyBrokerRoleChanged")]
    pub notify_broker_role_changed: bool,
    /// Remoting addresses of the other controllers by Raft node id (reported by
    /// `CONTROLLER_GET_METADATA_INFO`; any controller accepts every request, so this is optional).
    #[serde(
        deserialize_with = "rocketraft_raft::members_from_any_keys",
        serialize_with = "rocketraft_raft::members_with_string_keys"
    )]
    pub remoting_peers: BTreeMap<u64, String>,
    /// Serve `GET_REPLICA_INFO` / `GET_SYNC_STATE_DATA` from local memory (possibly stale)
    /// instead of linearizably. Default false.
    pub stale_reads: bool,
    /// The cluster's shared secret (at least 16 characters; default none). With it the
    /// controller serves [`CONTROLLER_PROTECTED_CODES`] only to Remoting connections that
    /// proved it (brokers, other controllers, admin tools holding the secret), proves it itself
    /// on every connection it opens (role notifications to brokers, questions to its peers),
    /// and its Raft member authenticates every peer RPC with it unless `raft.cluster_secret`
    /// sets another.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_secret: Option<ClusterSecret>,
    /// What one peer may cost the standalone controller's Remoting port (`[server_limits]`;
    /// see `rocketraft_remoting::limits`). Embedded, the NameServer's own limits apply.
    pub server_limits: ServerLimitsConfig,
    /// TLS on the standalone controller's Remoting port (`[tls]`: `mode`, `cert`, `key`; see
    /// `rocketraft_remoting::tls`). Embedded, the NameServer's `[tls]` applies.
    pub tls: ServerTlsConfig,
    /// TLS on the connections the controller opens: role notifications to brokers and
    /// questions to its peers (`[tls_client]`: `enable`, `trust_cert`). Embedded, the
    /// NameServer's `[tls_client]` applies unless this one is enabled.
    pub tls_client: ClientTlsConfig,
    /// Where the standalone controller's Remoting server records `rocketmq_rpc_latency` (set
    /// by the process, never in a file; default none). Embedded, the NameServer's server
    /// records every code it serves, the controller's included, in its own.
    #[serde(skip)]
    pub rpc_metrics: Option<RpcMetrics>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            raft: RaftConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 9880)),
                data_dir: "controller-data".into(),
                ..RaftConfig::default()
            },
            listen: SocketAddr::from(([127, 0, 0, 1], 9878)),
            enable_elect_unclean_master: false,
            heartbeat_timeout_ms: 3_000,
            scan_interval_ms: 250,
            notify_broker_role_changed: true,
            remoting_peers: BTreeMap::new(),
            stale_reads: false,
            cluster_secret: None,
            server_limits: ServerLimitsConfig::default(),
            tls: ServerTlsConfig::default(),
            tls_client: ClientTlsConfig::default(),
            rpc_metrics: None,
        }
    }
}

/// Builders over [`Default`] for the keys a generated config sets (`cluster up`, the Jepsen
/// harness): `ControllerConfig::default().with_listen(addr).with_raft(raft)`.
impl ControllerConfig {
    /// The Raft member. Start it from `ControllerConfig::default().raft` to keep the
    /// controller's defaults (listen 127.0.0.1:9880, data in `controller-data`).
    pub fn with_raft(mut self, raft: RaftConfig) -> Self {
        self.raft = raft;
        self
    }

    pub fn with_listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }

    pub fn with_remoting_peers(mut self, peers: BTreeMap<u64, String>) -> Self {
        self.remoting_peers = peers;
        self
    }

    pub fn with_stale_reads(mut self, stale_reads: bool) -> Self {
        self.stale_reads = stale_reads;
        self
    }

    pub fn with_cluster_secret(mut self, secret: Option<ClusterSecret>) -> Self {
        self.cluster_secret = secret;
        self
    }

    /// Records the standalone Remoting server's requests in `rocketmq_rpc_latency`.
    pub fn with_rpc_metrics(mut self, metrics: Option<RpcMetrics>) -> Self {
        self.rpc_metrics = metrics;
        self
    }

    /// The Raft member's configuration as the controller starts it: `raft`, with
    /// [`ControllerConfig::cluster_secret`] unless `raft.cluster_secret` is set.
    ///
    /// Without `raft.advertise`, the member advertises its own entry of
    /// `raft.initial_members` when that names a port (what its peers were told), not the
    /// bound listen address: a member listening on 0.0.0.0 would otherwise enter the
    /// membership as `0.0.0.0:port`, which every other member reads as itself.
    pub fn effective_raft(&self) -> RaftConfig {
        let mut raft = self.raft.clone();
        if raft.cluster_secret.is_none() {
            raft.cluster_secret = self.cluster_secret.clone();
        }
        if raft.advertise.is_none() {
            raft.advertise = raft
                .initial_members
                .get(&raft.node_id)
                .filter(|own| {
                    own.rsplit_once(':')
                        .and_then(|(_, port)| port.parse::<u16>().ok())
                        .is_some_and(|port| port != 0)
                })
                .cloned();
        }
        raft
    }

    /// The Raft address this member advertises, with the key that sets it, for the start-up
    /// check (`rocketraft_common::advertise`); `None` for a host name (not checked) or a port
    /// bound at start.
    pub fn raft_advertised(&self) -> Option<Advertised> {
        let raft = self.effective_raft();
        let (text, derived) = match (&self.raft.advertise, &raft.advertise) {
            (Some(own), _) => (own.clone(), None),
            (None, Some(member)) => (
                member.clone(),
                Some("not set, taken from raft.initial_members".to_string()),
            ),
            (None, None) => (
                raft.listen.to_string(),
                Some(format!("not set, taken from raft.listen {}", raft.listen)),
            ),
        };
        let addr: SocketAddr = text.parse().ok()?;
        (addr.port() != 0).then(|| Advertised {
            key: "raft.advertise".to_string(),
            addr,
            derived,
            listen: Some(("raft.listen (--raft-listen)".to_string(), raft.listen.ip())),
        })
    }

    /// The Remoting address this controller reports to brokers (`remoting_peers` entry of its
    /// own node id, else the address bound on `listen`, loopback for an unspecified IP), with
    /// the key that sets it; `None` for a host name or a port bound at start.
    pub fn remoting_advertised(&self, listen: SocketAddr) -> Option<Advertised> {
        let id = self.raft.node_id;
        let (addr, derived) = match self.remoting_peers.get(&id) {
            Some(own) => (own.parse::<SocketAddr>().ok()?, None),
            None => (
                rocketraft_remoting::api::advertised(listen),
                Some(format!("not set, taken from listen {listen}")),
            ),
        };
        (addr.port() != 0).then(|| Advertised {
            key: format!("remoting_peers.{id} (--remoting-peers)"),
            addr,
            derived,
            listen: Some(("listen (--listen)".to_string(), listen.ip())),
        })
    }

    /// The other members, by the keys that name them (`raft.initial_members`,
    /// `remoting_peers`), for the start-up check of the advertised addresses.
    pub fn peers(&self) -> Vec<Peer> {
        let me = self.raft.node_id;
        let others = |members: &BTreeMap<u64, String>, key: &str| -> Vec<Peer> {
            members
                .iter()
                .filter(|(id, _)| **id != me)
                .map(|(_, addr)| Peer::new(key, addr.clone()))
                .collect()
        };
        let mut peers = others(&self.raft.initial_members, "raft.initial_members (--peers)");
        peers.extend(others(
            &self.remoting_peers,
            "remoting_peers (--remoting-peers)",
        ));
        peers
    }
}

/// Checks `addresses` against `peers` on this host, off the async runtime (peer names may need
/// a DNS lookup): logs the doubtful ones, refuses the wrong ones.
pub async fn check_advertised(
    addresses: Vec<Advertised>,
    peers: Vec<Peer>,
) -> Result<(), AddressError> {
    match tokio::task::spawn_blocking(move || {
        rocketraft_common::advertise::check_all(&addresses, &peers)
    })
    .await
    {
        Ok(result) => result,
        Err(e) => {
            tracing::warn!(error = %e, "the advertised-address check did not run");
            Ok(())
        }
    }
}

/// What `admin controller status` shows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ControllerStatus {
    pub raft: NodeStatus,
    /// The Remoting address brokers use (standalone listen or the NameServer's).
    pub remoting_addr: String,
    pub broker_sets: usize,
}

/// The codes the controller processor answers (registered on a Remoting server).
pub const CONTROLLER_CODES: &[i32] = &[
    rocketraft_remoting::request_code::CONTROLLER_ALTER_SYNC_STATE_SET,
    rocketraft_remoting::request_code::CONTROLLER_ELECT_MASTER,
    rocketraft_remoting::request_code::CONTROLLER_REGISTER_BROKER,
    rocketraft_remoting::request_code::CONTROLLER_GET_REPLICA_INFO,
    rocketraft_remoting::request_code::CONTROLLER_GET_METADATA_INFO,
    rocketraft_remoting::request_code::CONTROLLER_GET_SYNC_STATE_DATA,
    rocketraft_remoting::request_code::CLEAN_BROKER_DATA,
    rocketraft_remoting::request_code::CONTROLLER_GET_NEXT_BROKER_ID,
    rocketraft_remoting::request_code::CONTROLLER_APPLY_BROKER_ID,
    rocketraft_remoting::request_code::BROKER_HEARTBEAT,
    rocketraft_remoting::request_code::GET_CONTROLLER_CONFIG,
    rocketraft_remoting::request_code::UPDATE_CONTROLLER_CONFIG,
];

/// The controller codes that change state or feed elections: with a cluster secret they are
/// served only on connections that proved it (`RemotingServerBuilder::cluster_trust`), on the
/// controller's own port and on a NameServer that embeds it (`UPDATE_CONTROLLER_CONFIG`
/// included: it changes how elections run). The read-only codes (`CONTROLLER_GET_REPLICA_INFO`, `CONTROLLER_GET_METADATA_INFO`,
/// `CONTROLLER_GET_SYNC_STATE_DATA`, `GET_CONTROLLER_CONFIG`) stay open.
pub const CONTROLLER_PROTECTED_CODES: &[i32] = &[
    rocketraft_remoting::request_code::CONTROLLER_REGISTER_BROKER,
    rocketraft_remoting::request_code::BROKER_HEARTBEAT,
    rocketraft_remoting::request_code::CONTROLLER_ELECT_MASTER,
    rocketraft_remoting::request_code::CONTROLLER_ALTER_SYNC_STATE_SET,
    rocketraft_remoting::request_code::CLEAN_BROKER_DATA,
    rocketraft_remoting::request_code::CONTROLLER_GET_NEXT_BROKER_ID,
    rocketraft_remoting::request_code::CONTROLLER_APPLY_BROKER_ID,
    rocketraft_remoting::request_code::UPDATE_CONTROLLER_CONFIG,
];

/// A running controller node.
pub struct Controller {
    pub(crate) node: RaftNode<ControllerStateMachine>,
    pub(crate) heartbeats: Arc<HeartbeatTracker>,
    pub(crate) config: ControllerConfig,
    /// The settings UPDATE_CONTROLLER_CONFIG changes while the controller runs (their values in
    /// `config` are the ones it started with).
    pub(crate) live: crate::runtime_config::LiveSettings,
    notifier: RemotingClient,
    remoting_addr: Mutex<String>,
    server: Mutex<Option<ServerHandle>>,
    scanner: Mutex<Option<JoinHandle<()>>>,
    tenure_watch: Mutex<Option<JoinHandle<()>>>,
    /// This node's current leadership: the Raft term and since when (monotonic ms) it has led
    /// in that term, as Raft's own metrics report it (a watcher, not the scanner, keeps it, so
    /// a leadership lost and regained between two scans starts a new tenure).
    tenure: Arc<Mutex<Option<Tenure>>>,
    /// What the scanner remembers between rounds (depose and hand-over spacing, the peers'
    /// views).
    scanner_memory: ScannerMemory,
    /// Requests, elections and heartbeat timeouts counted for `/metrics`.
    pub(crate) metrics: ControllerMetrics,
    /// The applied state's per-set figures (published by the state machine).
    pub(crate) sets_view: SetsView,
    /// This controller, for collectors that must not keep it alive.
    me: Weak<Controller>,
}

/// A leadership term of this node and when it began (monotonic ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tenure {
    pub term: u64,
    pub since_ms: u64,
}

/// A leader confirms heartbeats and elects only while a quorum acknowledged its term within
/// `heartbeat_timeout_ms / QUORUM_FRESH_DIVISOR` (600 ms at the default 3 s). openraft dates an
/// acknowledgement by the send time of the request, so this is also the longest controller
/// round trip under which masters keep their leases; the Raft heartbeat (100 ms) keeps a
/// healthy leader well inside it.
pub const QUORUM_FRESH_DIVISOR: u64 = 5;

/// How long a leader must have led before it elects a new master whose heartbeats time out
/// after `timeout_ms`: all of it. A lease an earlier leader confirmed ends at most
/// `timeout/5 + 3/4 timeout` after the quorum acknowledgement that preceded this tenure, which
/// leaves `timeout/20` (150 ms at the defaults) for clock-rate differences. See docs/safety.md.
pub fn tenure_needed(timeout_ms: u64) -> u64 {
    timeout_ms
}

fn raft_error(e: RaftClientError) -> Refusal {
    // No Remoting code says "try again, outcome unknown"; SYSTEM_BUSY makes RocketMQ brokers retry.
    let code = match e {
        RaftClientError::Timeout(_) | RaftClientError::Discarded { .. } => {
            response_code::SYSTEM_BUSY
        }
        RaftClientError::NotLeader { .. } => response_code::CONTROLLER_NOT_LEADER,
        _ => response_code::CONTROLLER_JRAFT_INTERNAL_ERROR,
    };
    Refusal::new(code, e.to_string())
}

/// Why a controller did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the controller's Raft member did not start: {0}")]
    Raft(#[source] RaftClientError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: rocketraft_remoting::RemotingError,
    },
    #[error(transparent)]
    ServerLimits(#[from] InvalidLimit),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Address(#[from] AddressError),
}

impl Controller {
    /// Starts the Raft member and the heartbeat scanner. Call [`Controller::serve_remoting`]
    /// for a standalone controller, or register [`Controller::processor`] for
    /// [`CONTROLLER_CODES`] on the NameServer's server when embedded (protecting
    /// [`CONTROLLER_PROTECTED_CODES`] with the same cluster secret).
    pub async fn start(config: ControllerConfig) -> Result<Arc<Controller>, StartError> {
        check_advertised(
            config.raft_advertised().into_iter().collect(),
            config.peers(),
        )
        .await?;
        let state_machine = ControllerStateMachine::new();
        let sets_view = state_machine.sets_view();
        let node = RaftNode::start(config.effective_raft(), state_machine)
            .await
            .map_err(StartError::Raft)?;
        let tls = config.tls_client.load()?;
        let metrics = ControllerMetrics::new(config.raft.listen.to_string(), node.id());
        let controller = Arc::new_cyclic(|me| Controller {
            metrics,
            sets_view,
            me: me.clone(),
            node,
            heartbeats: Arc::new(HeartbeatTracker::new()),
            // Role notifications and the questions to the peers: with a secret, every
            // connection proves it (and checks that the other side holds it too).
            notifier: RemotingClient::new(ClientConfig {
                cluster_secret: config.cluster_secret.clone(),
                tls,
                ..ClientConfig::default()
            }),
            remoting_addr: Mutex::new(config.listen.to_string()),
            live: crate::runtime_config::LiveSettings::new(&config),
            config,
            server: Mutex::new(None),
            scanner: Mutex::new(None),
            tenure_watch: Mutex::new(None),
            tenure: Arc::new(Mutex::new(None)),
            scanner_memory: ScannerMemory::new(),
        });
        // The live-broker view an entry carries is the leader's own, taken just before the
        // leader proposes it (forwarded requests included): a follower's table may be stale
        // (paused, partitioned from the brokers, freshly restarted).
        let heartbeats = controller.heartbeats.clone();
        controller
            .node
            .set_leader_prepare(move |mut command: ControllerCommand| {
                command.alive = alive_for(&heartbeats, &command.request);
                Ok(command)
            });
        *controller.tenure_watch.lock() = Some(spawn_tenure_watch(&controller));
        let weak = Arc::downgrade(&controller);
        let mut interval = Duration::from_millis(controller.live.scan_interval_ms());
        let scanner = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_tick = rocketraft_common::time::mono_ms();
            loop {
                ticker.tick().await;
                let Some(c) = weak.upgrade() else { break };
                // `scanNotActiveBrokerInterval` changes at runtime (UPDATE_CONTROLLER_CONFIG).
                let wanted = Duration::from_millis(c.live.scan_interval_ms());
                if wanted != interval {
                    tracing::info!(
                        from_ms = interval.as_millis() as u64,
                        to_ms = wanted.as_millis() as u64,
                        "scan interval changed"
                    );
                    interval = wanted;
                    ticker =
                        tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                }
                let now = rocketraft_common::time::mono_ms();
                // A tick far later than due means this process was stopped (SIGSTOP, a VM
                // pause, a stall): what it knows of heartbeats and of its own leadership is
                // stale, so it starts a new tenure before it may elect anyone.
                let late = now.saturating_sub(last_tick) > 2 * interval.as_millis() as u64 + 1000;
                last_tick = now;
                if late {
                    if let Some(t) = c.tenure.lock().as_mut() {
                        tracing::warn!(term = t.term, "the scanner ran late (was this process paused?); restarting the leadership tenure");
                        t.since_ms = now;
                    }
                }
                c.scan().await;
            }
        });
        *controller.scanner.lock() = Some(scanner);
        Ok(controller)
    }

    /// Serves the controller codes on its own Remoting port (standalone mode).
    pub async fn serve_remoting(self: &Arc<Self>) -> Result<SocketAddr, StartError> {
        let processor = self.processor();
        let limits = &self.config.server_limits;
        limits.validate()?;
        check_advertised(
            self.config
                .remoting_advertised(self.config.listen)
                .into_iter()
                .collect(),
            self.config.peers(),
        )
        .await?;
        let mut builder = RemotingServer::builder()
            .max_connections(limits.max_connections)
            .limits(limits.limits())
            .tls(self.config.tls.load()?);
        for code in CONTROLLER_CODES {
            builder = builder.register(*code, processor.clone());
        }
        let server = builder
            .cluster_trust(
                self.config.cluster_secret.clone(),
                CONTROLLER_PROTECTED_CODES,
            )
            .rpc_metrics(self.config.rpc_metrics.clone())
            .bind(self.config.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: self.config.listen,
                source,
            })?
            .spawn();
        let addr = server.local_addr();
        // What brokers are told: this node's remoting_peers entry, else the bound address.
        *self.remoting_addr.lock() = match self.config.remoting_advertised(addr) {
            Some(advertised) => advertised.addr.to_string(),
            None => self
                .config
                .remoting_peers
                .get(&self.config.raft.node_id)
                .cloned()
                .unwrap_or_else(|| rocketraft_remoting::api::advertised(addr).to_string()),
        };
        *self.server.lock() = Some(server);
        tracing::info!(%addr, "controller listening for brokers");
        Ok(addr)
    }

    /// Sets the Remoting address reported to clients (embedded mode: the NameServer's).
    pub fn set_remoting_addr(&self, addr: String) {
        *self.remoting_addr.lock() = addr;
    }

    /// The Remoting address brokers use.
    pub fn remoting_addr(&self) -> String {
        self.remoting_addr.lock().clone()
    }

    /// The Remoting processor for [`CONTROLLER_CODES`].
    pub fn processor(self: &Arc<Self>) -> Arc<dyn RequestProcessor> {
        Arc::new(wire::ControllerProcessor::new(self.clone()))
    }

    /// The Raft node (status, membership changes).
    pub fn raft(&self) -> &RaftNode<ControllerStateMachine> {
        &self.node
    }

    fn policy(&self) -> DefaultElectPolicy {
        DefaultElectPolicy::new(self.live.enable_elect_unclean_master())
    }

    fn alive_for(&self, request: &ControllerRequest) -> crate::liveness::AliveBrokers {
        alive_for(&self.heartbeats, request)
    }

    /// This controller's series for `/metrics` (RocketMQ's `role`, `active_broker_num`,
    /// `request_total`, `request_latency`, `election_total`; `rocketraft_raft_*`,
    /// `rocketraft_controller_*`, `rocketraft_broker_set_*`; see [`crate::metrics`]), computed
    /// when scraped. Without `cluster` / `node_type` / `node_id` labels and without
    /// `rocketmq_rpc_latency`: the process adds both. Encodes nothing once the controller is
    /// dropped.
    pub fn metrics_collector(&self) -> Box<dyn Collector> {
        Box::new(ControllerCollector {
            controller: self.me.clone(),
        })
    }

    /// Counts a request the Remoting processor answered (`request_total`, `request_latency`).
    pub(crate) fn count_request(&self, code: i32, answer_code: i32, elapsed: Duration) {
        self.metrics
            .request(code, answer_code, elapsed.as_secs_f64() * 1_000_000.0);
    }

    /// This node's current leadership tenure, if it leads.
    pub fn tenure(&self) -> Option<Tenure> {
        *self.tenure.lock()
    }

    /// Runs a state-changing request through the Raft log.
    pub async fn execute(&self, request: ControllerRequest) -> CommandResult {
        self.execute_elect_aware(request).await.0
    }

    /// [`Controller::execute`], plus, after an election, the new master's broker set (read once,
    /// for both the brokers' notification and the `BrokerMemberGroup` of the answer).
    pub(crate) async fn execute_elect_aware(
        &self,
        request: ControllerRequest,
    ) -> (CommandResult, Option<wire::BrokerMemberGroup>) {
        let command = ControllerCommand {
            alive: self.alive_for(&request),
            policy: self.policy(),
            request,
        };
        let result = match self.node.write(&command).await {
            Ok(result) => result,
            Err(e) => {
                if let ControllerRequest::ElectMaster(req) = &command.request {
                    self.metrics
                        .election(&req.broker_name, ElectionResult::Failed);
                }
                return (Err(raft_error(e)), None);
            }
        };
        if let ControllerRequest::ElectMaster(req) = &command.request {
            let outcome = match &result {
                Ok(ControllerResponse::ElectMaster(r)) => ElectionResult::of_outcome(r.outcome),
                Ok(_) => ElectionResult::Failed,
                Err(refusal) => ElectionResult::of_refusal(refusal.code),
            };
            self.metrics.election(&req.broker_name, outcome);
        }
        let mut group = None;
        if let (Ok(ControllerResponse::ElectMaster(r)), ControllerRequest::ElectMaster(req)) =
            (&result, &command.request)
        {
            if r.outcome == ElectOutcome::Elected {
                group = self.after_election(&req.broker_name).await;
            }
        }
        (result, group)
    }

    /// Answers a read-only request, linearizably unless `stale_reads` is configured.
    pub async fn read(&self, request: ControllerRequest) -> CommandResult {
        let mode = if self.live.stale_reads() {
            ReadMode::Stale
        } else {
            ReadMode::Linearizable
        };
        self.read_in(request, mode).await
    }

    /// Answers a read-only request from this node's applied state, leader or not (committed,
    /// possibly behind the leader's).
    pub async fn read_local(&self, request: ControllerRequest) -> CommandResult {
        self.read_in(request, ReadMode::Stale).await
    }

    async fn read_in(&self, request: ControllerRequest, mode: ReadMode) -> CommandResult {
        let query = ControllerQuery::Request {
            alive: self.alive_for(&request),
            request,
        };
        match self.node.read(&query, mode).await.map_err(raft_error)? {
            ControllerQueryResponse::Request(r) => r,
            ControllerQueryResponse::State { .. } => Err(Refusal::new(
                response_code::SYSTEM_ERROR,
                "unexpected answer to a controller read",
            )),
        }
    }

    /// The whole controller state (linearizable or this node's copy).
    pub async fn state(&self, mode: ReadMode) -> Result<(ControllerState, u64), Refusal> {
        match self
            .node
            .read(&ControllerQuery::State, mode)
            .await
            .map_err(raft_error)?
        {
            ControllerQueryResponse::State {
                state,
                last_applied,
            } => Ok((state, last_applied)),
            ControllerQueryResponse::Request(_) => Err(Refusal::new(
                response_code::SYSTEM_ERROR,
                "unexpected answer to a state read",
            )),
        }
    }

    /// Records a broker heartbeat (every node keeps its own table).
    pub fn heartbeat(&self, heartbeat: Heartbeat) {
        record_heartbeat(
            &self.heartbeats,
            heartbeat,
            self.config.heartbeat_timeout_ms,
            rocketraft_common::time::mono_ms(),
        );
    }

    /// What this node's heartbeat table holds for the brokers alive now (each node keeps its
    /// own; the leader's decides elections).
    pub fn live_brokers(&self) -> crate::liveness::AliveBrokers {
        self.heartbeats.alive(rocketraft_common::time::mono_ms())
    }

    /// The node's status for admin tools.
    pub async fn status(&self) -> ControllerStatus {
        let broker_sets = match self.state(ReadMode::Stale).await {
            Ok((s, _)) => s.broker_sets.len(),
            Err(_) => 0,
        };
        ControllerStatus {
            raft: self.node.status(),
            remoting_addr: self.remoting_addr(),
            broker_sets,
        }
    }

    /// Whether this node leads and a quorum acknowledged its term within a fifth of the
    /// heartbeat timeout: the condition to confirm a heartbeat (`leaderConfirmed`) and to elect.
    pub fn quorum_fresh(&self) -> bool {
        quorum_fresh_at(self.node.quorum_ack_age(), self.config.heartbeat_timeout_ms)
    }

    /// Whether `heartbeat`, already recorded in this node's table, may renew its broker's
    /// master lease (`leaseConfirmed`): see [`answer_heartbeat`] and [`lease_confirmable`].
    ///
    /// A leader that is not settled (a write being prepared or proposed, an entry not yet
    /// applied) refuses at once rather than waiting: the master asks again with its next
    /// heartbeat, well within its lease, and controller writes are rare (registrations,
    /// elections, changes of a SyncStateSet). Every answer is counted by
    /// `rocketraft_controller_lease_answers_total{result}`, so leases refused under write churn
    /// show.
    pub fn lease_confirmed(&self, heartbeat: &Heartbeat) -> bool {
        let answer = self.lease_answer(heartbeat);
        self.metrics.lease_answer(answer);
        answer == LeaseAnswer::Confirmed
    }

    fn lease_answer(&self, heartbeat: &Heartbeat) -> LeaseAnswer {
        if !self.quorum_fresh() {
            return LeaseAnswer::NotLeader;
        }
        if !self.node.settled() {
            return LeaseAnswer::Unsettled;
        }
        let query = master_query(&heartbeat.broker_name);
        let master = match self.node.read_applied(&query) {
            Ok(ControllerQueryResponse::Request(Ok(ControllerResponse::GetReplicaInfo(r)))) => {
                Some(r)
            }
            _ => None,
        };
        if lease_confirmable(heartbeat, master.as_ref()) {
            LeaseAnswer::Confirmed
        } else {
            LeaseAnswer::NotMaster
        }
    }

    /// One scanner round ([`scan_round`] on this node, with its [`ScannerMemory`]).
    async fn scan(&self) {
        scan_round(self, &self.scanner_memory).await;
    }

    /// After an election: reads the set once (linearizably), tells every broker of the set its
    /// new role (oneway, best effort: brokers also poll; in the background and concurrently, so
    /// a dead broker delays neither the answer nor the other brokers), and returns the set's
    /// ids and addresses.
    async fn after_election(&self, broker_name: &str) -> Option<wire::BrokerMemberGroup> {
        let (state, _) = self.state(ReadMode::Linearizable).await.ok()?;
        let set = state.broker_set(broker_name)?;
        if self.live.notify_broker_role_changed() {
            let request = wire::notify_broker_role_changed(set);
            let addrs: Vec<String> = set
                .replica_info
                .broker_id_info
                .values()
                .map(|b| b.address.clone())
                .collect();
            // One task per broker: a dead or isolated broker (a connect that hangs until its
            // timeout) must not delay the news to the live ones, whose slave has to follow the
            // new master before it can acknowledge anything.
            for addr in addrs {
                let notifier = self.notifier.clone();
                let request = request.clone();
                tokio::spawn(async move {
                    if let Err(e) = notifier.invoke_oneway(&addr, request).await {
                        tracing::debug!(%addr, error = %e, "NOTIFY_BROKER_ROLE_CHANGED not delivered");
                    }
                });
            }
        }
        Some(wire::BrokerMemberGroup {
            cluster: set.replica_info.cluster.clone(),
            broker_name: broker_name.to_string(),
            broker_addrs: set
                .replica_info
                .broker_id_info
                .iter()
                .map(|(id, b)| (*id, b.address.clone()))
                .collect(),
        })
    }

    /// Stops serving, then the Raft node.
    pub async fn shutdown(&self) {
        if let Some(task) = self.scanner.lock().take() {
            task.abort();
        }
        if let Some(task) = self.tenure_watch.lock().take() {
            task.abort();
        }
        let server = self.server.lock().take();
        if let Some(server) = server {
            server.shutdown().await;
        }
        self.node.shutdown().await;
    }
}

/// The scanner on a running controller: its `RaftNode`, its heartbeat table, its Remoting
/// client for the peers' views (see [`crate::scanner`]).
impl ScanEnv for Controller {
    fn now_ms(&self) -> u64 {
        rocketraft_common::time::mono_ms()
    }

    fn tenure(&self) -> Option<Tenure> {
        Controller::tenure(self)
    }

    fn is_leader(&self) -> bool {
        self.node.is_leader()
    }

    fn quorum_fresh(&self) -> bool {
        Controller::quorum_fresh(self)
    }

    fn heartbeat_timeout_ms(&self) -> u64 {
        self.config.heartbeat_timeout_ms
    }

    fn heartbeats(&self) -> &HeartbeatTracker {
        &self.heartbeats
    }

    fn policy(&self) -> DefaultElectPolicy {
        Controller::policy(self)
    }

    fn count_heartbeat_timeouts(&self, brokers: usize) {
        self.metrics.heartbeat_timeouts(brokers);
    }

    async fn applied_state(&self) -> Result<ControllerState, Refusal> {
        self.state(ReadMode::Stale).await.map(|(state, _)| state)
    }

    async fn elect(&self, request: ControllerRequest) -> CommandResult {
        self.execute(request).await
    }

    async fn transfer_leader(&self, to: u64) -> Result<(), String> {
        self.node
            .admin(rocketraft_raft::AdminRequest::TransferLeader { to })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn ask_peers(&self, broker_name: &str, wait: Duration) -> Vec<PeerView> {
        let client = crate::client::ControllerClient::new(self.notifier.clone(), wait);
        crate::peers::ask(
            &client,
            &self.config.remoting_peers,
            self.node.id(),
            broker_name,
            wait,
        )
        .await
    }
}

/// Whether a node whose term a quorum acknowledged `quorum_ack_age` ago (`None`: it does not
/// lead, or no acknowledgement yet; `RaftNode::quorum_ack_age`) confirms heartbeats and may
/// elect: within `heartbeat_timeout_ms / QUORUM_FRESH_DIVISOR`. [`Controller::quorum_fresh`]
/// and the simulation's nodes decide through it.
pub fn quorum_fresh_at(quorum_ack_age: Option<Duration>, heartbeat_timeout_ms: u64) -> bool {
    quorum_ack_age
        .is_some_and(|age| age.as_millis() as u64 <= heartbeat_timeout_ms / QUORUM_FRESH_DIVISOR)
}

/// Records `heartbeat` in a node's table at `now` (monotonic ms), with the controller's
/// `heartbeat_timeout_ms` when the broker sent none.
pub fn record_heartbeat(
    heartbeats: &HeartbeatTracker,
    mut heartbeat: Heartbeat,
    heartbeat_timeout_ms: u64,
    now: u64,
) {
    if heartbeat.timeout_ms == 0 {
        heartbeat.timeout_ms = heartbeat_timeout_ms;
    }
    heartbeats.record(heartbeat, now);
}

/// BROKER_HEARTBEAT (904) on one controller node: decodes it, records it in the node's table at
/// `now`, and answers. Rocketraft extension: `leaderConfirmed` (`confirmed`, from
/// [`quorum_fresh_at`]) tells the broker that the leader recorded this heartbeat while a quorum
/// had acknowledged its term within T/5, T being this controller's `heartbeat_timeout_ms`
/// (answered as `controllerHeartbeatTimeoutMills`). A master renews its role lease until its
/// send time + 3/4 min(T, its own timeout) only on such answers. Any later leader was elected
/// after that quorum acknowledgement and elects a new master only after T in office
/// (> T/5 + 3/4 T), so no new master exists while the lease runs; this leader elects only after
/// the master's heartbeat timed out here, which is after the lease too. The argument, step by
/// step: docs/safety.md. The Remoting processor and the simulation's nodes both answer here.
///
/// `leaseConfirmed` (`lease`, from [`Controller::lease_confirmed`]), the answer a master renews
/// its lease on: `leaderConfirmed`, and besides, the leader is settled (`RaftNode::settled`:
/// its applied state is final, no write in flight) and that state names this broker its set's
/// master at the epoch the heartbeat reports ([`lease_confirmable`]). Without it a master the
/// controllers had replaced while it was cut off renewed its lease for the old epoch on the
/// first heartbeat after the heal, while the new master held one (found by the simulation,
/// `rocketraft-sim --controller-link --fault-ms 3000 --seed 3`). The heartbeat is recorded
/// before `lease` runs, so an election prepared after the answer sees this broker alive; one
/// prepared before it is still in flight, and the leader is not settled.
pub fn answer_heartbeat(
    heartbeats: &HeartbeatTracker,
    cmd: &rocketraft_remoting::RemotingCommand,
    heartbeat_timeout_ms: u64,
    now: u64,
    confirmed: impl FnOnce() -> bool,
    lease: impl FnOnce(&Heartbeat) -> bool,
) -> Result<rocketraft_remoting::RemotingCommand, Refusal> {
    let heartbeat = wire::decode_heartbeat(cmd)?;
    record_heartbeat(heartbeats, heartbeat.clone(), heartbeat_timeout_ms, now);
    let confirmed = confirmed();
    let lease = confirmed && lease(&heartbeat);
    Ok(cmd
        .response_to(response_code::SUCCESS, None)
        .with_ext("leaderConfirmed", confirmed)
        .with_ext("leaseConfirmed", lease)
        .with_ext("controllerHeartbeatTimeoutMills", heartbeat_timeout_ms))
}

/// The query [`Controller::lease_confirmed`] reads the set's master with.
pub fn master_query(broker_name: &str) -> ControllerQuery {
    ControllerQuery::Request {
        request: ControllerRequest::GetReplicaInfo(crate::handler::GetReplicaInfoRequest {
            broker_name: broker_name.to_string(),
        }),
        alive: crate::liveness::AliveBrokers::new(),
    }
}

/// Whether a settled leader whose applied state says `master` (the set's replica info) may
/// renew the lease of the broker that sent `heartbeat`: only the master of record, at the
/// epoch it reports (its epoch file's highest). A replaced master reports an older epoch; a
/// broker just elected, whose epoch file does not have the new epoch yet, renews from its
/// next heartbeat.
pub fn lease_confirmable(
    heartbeat: &Heartbeat,
    master: Option<&crate::handler::GetReplicaInfoResponse>,
) -> bool {
    master.is_some_and(|m| {
        m.master_broker_id == Some(heartbeat.broker_id) && m.master_epoch == heartbeat.info.epoch
    })
}

/// How a node serves a controller request other than a heartbeat (the decoded request and the
/// path it takes); [`route`] decides it for the Remoting processor and the simulation's nodes.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// Rocketraft extension (`readLocal`): this node's applied state, leader or not. A broker
    /// cut off from the leader learns a new master (and its epoch) from any controller; epochs
    /// only move forward, so an older answer is ignored, and the state is committed, so it
    /// never names a master the log does not.
    ReadLocal(ControllerRequest),
    /// A read ([`Controller::read`]: linearizable unless `stale_reads`).
    Read(ControllerRequest),
    /// A write through the log ([`Controller::execute_elect_aware`]).
    Write(ControllerRequest),
}

/// Decodes a controller request and picks its [`Route`].
pub fn route(cmd: &rocketraft_remoting::RemotingCommand) -> Result<Route, Refusal> {
    let request = wire::decode_request(cmd)?;
    Ok(match request {
        ControllerRequest::GetReplicaInfo(_) | ControllerRequest::GetSyncStateData(_)
            if cmd.ext("readLocal") == Some("true") =>
        {
            Route::ReadLocal(request)
        }
        ControllerRequest::GetReplicaInfo(_) | ControllerRequest::GetSyncStateData(_) => {
            Route::Read(request)
        }
        other => Route::Write(other),
    })
}

/// The live brokers a request's entry carries: the whole table, or only the sets it concerns;
/// for a depose, only the set's brokers heard recently (`HeartbeatTracker::heard_recently`).
fn alive_for(
    heartbeats: &HeartbeatTracker,
    request: &ControllerRequest,
) -> crate::liveness::AliveBrokers {
    alive_for_at(heartbeats, request, rocketraft_common::time::mono_ms())
}

/// [`alive_for`] at `now` (monotonic ms, the clock the tracker's entries were recorded on): the
/// seam through which the deterministic simulation (`rocketraft-sim`) fills in a command's
/// liveness on its leader exactly as the leader-side prepare does, on the node's simulated
/// clock.
pub fn alive_for_at(
    heartbeats: &HeartbeatTracker,
    request: &ControllerRequest,
    now: u64,
) -> crate::liveness::AliveBrokers {
    if let ControllerRequest::ElectMaster(r) = request {
        if r.depose_epoch.is_some() {
            return heartbeats.heard_recently(now).only(&r.broker_name);
        }
    }
    let all = heartbeats.alive(now);
    match request {
        ControllerRequest::GetSyncStateData(r) => {
            all.only_sets(r.broker_names.iter().map(String::as_str))
        }
        other => match broker_name_of(other) {
            Some(name) => all.only(name),
            None => all,
        },
    }
}

/// Follows Raft's metrics: a tenure starts whenever this node becomes leader of a term and ends
/// whenever it stops leading, so L1 -> L2 -> L1 gives L1 a new tenure however fast it happens.
fn spawn_tenure_watch(controller: &Arc<Controller>) -> JoinHandle<()> {
    let tenure = controller.tenure.clone();
    controller.node.on_leadership(move |term, leads| {
        let mut t = tenure.lock();
        match (*t, leads) {
            (Some(cur), true) if cur.term == term => {}
            (_, true) => {
                let since_ms = rocketraft_common::time::mono_ms();
                tracing::info!(
                    term,
                    "controller leadership begins; elections wait a full heartbeat timeout"
                );
                *t = Some(Tenure { term, since_ms });
            }
            (Some(_), false) => {
                tracing::info!(term, "controller leadership ended");
                *t = None;
            }
            (None, false) => {}
        }
    })
}

fn broker_name_of(request: &ControllerRequest) -> Option<&str> {
    Some(match request {
        ControllerRequest::GetNextBrokerId(r) => &r.broker_name,
        ControllerRequest::ApplyBrokerId(r) => &r.broker_name,
        ControllerRequest::RegisterBroker(r) => &r.broker_name,
        ControllerRequest::ElectMaster(r) => &r.broker_name,
        ControllerRequest::AlterSyncStateSet(r) => &r.broker_name,
        ControllerRequest::GetReplicaInfo(r) => &r.broker_name,
        ControllerRequest::CleanBrokerData(r) => &r.broker_name,
        ControllerRequest::GetSyncStateData(_) => return None,
    })
}

#[cfg(test)]
mod config_tests {
    use super::*;

    fn round_trip(config: &ControllerConfig) -> ControllerConfig {
        let text = toml::to_string(config).expect("serializes");
        toml::from_str(&text).unwrap_or_else(|e| panic!("does not parse back: {e}\n{text}"))
    }

    #[test]
    fn serialized_config_parses_back_identically() {
        let default = ControllerConfig::default();
        assert_eq!(round_trip(&default), default);
        let members = |first: u16| {
            (1..=3u16)
                .map(|i| (u64::from(i), format!("127.0.0.1:{}", first + 2 * (i - 1))))
                .collect::<BTreeMap<_, _>>()
        };
        let raft = ControllerConfig::default()
            .raft
            .with_node_id(2)
            .with_listen(SocketAddr::from(([127, 0, 0, 1], 30003)))
            .with_data_dir("/d/controller-2/data")
            .with_initial_members(members(30001));
        let custom = ControllerConfig {
            enable_elect_unclean_master: true,
            heartbeat_timeout_ms: 2_000,
            scan_interval_ms: 200,
            notify_broker_role_changed: false,
            ..ControllerConfig::default()
                .with_raft(raft)
                .with_listen(SocketAddr::from(([127, 0, 0, 1], 30002)))
                .with_remoting_peers(members(30000))
                .with_stale_reads(true)
                .with_cluster_secret(Some(
                    ClusterSecret::new("controller-secret-0123").expect("secret"),
                ))
        };
        assert_eq!(round_trip(&custom), custom);
        // The Raft member gets the controller's secret unless it has its own.
        assert_eq!(
            custom.effective_raft().cluster_secret,
            custom.cluster_secret
        );
        let own = ClusterSecret::new("raft-only-secret-0123").expect("secret");
        let mut split = custom.clone();
        split.raft.cluster_secret = Some(own.clone());
        assert_eq!(round_trip(&split), split);
        assert_eq!(split.effective_raft().cluster_secret, Some(own));
        assert_eq!(default.effective_raft().cluster_secret, None);
        assert_eq!(custom.raft.node_id, 2);
        assert!(custom.stale_reads);
        let table: toml::Table =
            toml::from_str(&toml::to_string(&custom).expect("serializes")).expect("parses");
        assert_eq!(
            table["remoting_peers"]["3"].as_str(),
            Some("127.0.0.1:30004")
        );
        assert_eq!(
            table["raft"]["initial_members"]["3"].as_str(),
            Some("127.0.0.1:30005")
        );
    }

    /// A member of a three-host quorum listening on 0.0.0.0.
    fn member_on_all_interfaces() -> ControllerConfig {
        let mut c = ControllerConfig::default()
            .with_listen("0.0.0.0:9878".parse().expect("addr"))
            .with_remoting_peers(BTreeMap::from([
                (1, "10.0.0.1:9878".to_string()),
                (2, "10.0.0.2:9878".to_string()),
                (3, "10.0.0.3:9878".to_string()),
            ]));
        c.raft.node_id = 2;
        c.raft.listen = "0.0.0.0:9880".parse().expect("addr");
        c.raft.initial_members = BTreeMap::from([
            (1, "10.0.0.1:9880".to_string()),
            (2, "10.0.0.2:9880".to_string()),
            (3, "10.0.0.3:9880".to_string()),
        ]);
        c
    }

    #[test]
    fn a_member_advertises_its_own_entries_of_the_member_lists() {
        let c = member_on_all_interfaces();
        // Not 0.0.0.0:9880: what the other members were told this one is.
        assert_eq!(
            c.effective_raft().advertise.as_deref(),
            Some("10.0.0.2:9880")
        );
        let raft = c.raft_advertised().expect("an IP");
        assert_eq!(raft.key, "raft.advertise");
        assert_eq!(raft.addr, "10.0.0.2:9880".parse().expect("addr"));
        assert_eq!(
            raft.derived.as_deref(),
            Some("not set, taken from raft.initial_members")
        );
        let remoting = c
            .remoting_advertised("0.0.0.0:9878".parse().expect("addr"))
            .expect("an IP");
        assert_eq!(remoting.key, "remoting_peers.2 (--remoting-peers)");
        assert_eq!(remoting.addr, "10.0.0.2:9878".parse().expect("addr"));
        assert_eq!(remoting.derived, None);
        // The peers are the other members, by the keys that name them.
        let peers: Vec<(String, String)> = c.peers().into_iter().map(|p| (p.key, p.addr)).collect();
        assert_eq!(
            peers,
            vec![
                (
                    "raft.initial_members (--peers)".to_string(),
                    "10.0.0.1:9880".to_string()
                ),
                (
                    "raft.initial_members (--peers)".to_string(),
                    "10.0.0.3:9880".to_string()
                ),
                (
                    "remoting_peers (--remoting-peers)".to_string(),
                    "10.0.0.1:9878".to_string()
                ),
                (
                    "remoting_peers (--remoting-peers)".to_string(),
                    "10.0.0.3:9878".to_string()
                ),
            ]
        );
        // An explicit advertise wins; a port 0 entry (`dev`) is not advertised.
        let mut own = member_on_all_interfaces();
        own.raft.advertise = Some("10.9.0.2:19880".to_string());
        assert_eq!(
            own.effective_raft().advertise.as_deref(),
            Some("10.9.0.2:19880")
        );
        assert_eq!(own.raft_advertised().expect("ip").derived, None);
        let mut dev = ControllerConfig::default();
        dev.raft.listen = "127.0.0.1:0".parse().expect("addr");
        dev.raft.initial_members = BTreeMap::from([(1, "127.0.0.1:0".to_string())]);
        assert_eq!(dev.effective_raft().advertise, None);
        assert!(dev.raft_advertised().is_none());
    }

    #[tokio::test]
    async fn a_member_advertising_loopback_to_members_on_other_hosts_is_refused_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = member_on_all_interfaces();
        // Its own entries on loopback, the others elsewhere (TEST-NET-3: never this host).
        c.raft.initial_members = BTreeMap::from([
            (1, "203.0.113.1:9880".to_string()),
            (2, "127.0.0.1:0".to_string()),
            (3, "203.0.113.3:9880".to_string()),
        ]);
        c.raft.listen = "127.0.0.1:9880".parse().expect("addr");
        c.raft.data_dir = dir.path().join("raft");
        c.remoting_peers.clear();
        let err = match Controller::start(c).await {
            Ok(controller) => {
                controller.shutdown().await;
                panic!("started advertising 127.0.0.1 to members on other hosts");
            }
            Err(e) => e.to_string(),
        };
        assert!(
            err.starts_with(
                "raft.advertise is 127.0.0.1:9880 (not set, taken from raft.listen \
                 127.0.0.1:9880), a loopback address, but raft.initial_members (--peers) names \
                 203.0.113.1:9880 on another host"
            ),
            "{err}"
        );
        // Refused before the Raft member was created.
        assert!(!dir.path().join("raft").exists());
    }
}
