//! # rocketraft-broker
//!
//! A RocketMQ broker: the message [`store`] (CommitLog segments on memmap2, ConsumeQueues,
//! RocksDB metadata), the Remoting request [`processor`]s, the topic table ([`topic`]), the
//! client table ([`client_manager`]) and registration with the NameServers.
//!
//! The store knows nothing about the network; the processors know nothing about mmap.
//!
//! Controller mode and replication: [`controller_link`] (the broker's identity from the
//! controller), [`replica`] (roles, epochs, heartbeats to the controllers, the SyncStateSet) and
//! [`ha`] (CommitLog streaming to the slaves, the ack policy, the confirm offset); [`metalog`]
//! replicates topic, subscription group and ACL changes as CommitLog records. Consumption:
//! [`pop`], [`timer`] and [`transaction`], their state replayed from system topics
//! ([`replay`]); [`acl`] holds users and ACLs.

pub mod acl;
pub mod auth;
pub mod client_manager;
pub mod config;
pub mod controller_link;
pub mod ha;
pub mod lite;
pub mod metalog;
pub mod metrics;
pub mod name_server_reach;
pub mod pop;
pub mod processor;
pub mod properties;
pub mod rebalance_lock;
mod register;
pub mod replay;
pub mod replica;
pub mod stats;
pub mod store;
pub mod timer;
pub mod topic;
pub mod transaction;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rocketraft_common::time::now_ms;
use rocketraft_remoting::server::{RemotingServer, ServerHandle};
use rocketraft_remoting::{Refusal, RemotingClient};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use config::BrokerConfig;
use store::metadata::MetadataStore;
use store::MessageStore;

/// Everything the processors share.
pub struct BrokerInner {
    pub config: BrokerConfig,
    pub advertised: SocketAddr,
    pub store: Arc<MessageStore>,
    pub metadata: Arc<MetadataStore>,
    pub topics: topic::TopicConfigManager,
    pub clients: client_manager::ClientManager,
    /// Orderly consumers' queue locks (LOCK_BATCH_MQ / UNLOCK_BATCH_MQ).
    pub locks: rebalance_lock::RebalanceLockManager,
    pub stats: stats::BrokerStats,
    /// Prometheus counters and histograms of the requests served (see [`metrics`]).
    pub metrics: metrics::BrokerMetrics,
    /// Fired after a topic change so the NameServers learn it without waiting 30 s.
    pub register_trigger: Arc<Notify>,
    pub boot_timestamp_ms: i64,
    /// Replication state (controller mode only).
    pub ha: Option<Arc<ha::HaState>>,
    /// The controller-mode role manager (controller mode only).
    pub replicas: Option<Arc<replica::ReplicaManager>>,
    /// POP consumption state.
    pub pop: pop::PopService,
    /// Pending delayed and timed messages.
    pub timers: timer::TimerService,
    /// Undecided transactional (half) messages.
    pub transactions: transaction::TransactionService,
    /// ACL 2.0 users and access control lists.
    pub acl: acl::AclManager,
    /// Topic, subscription group and ACL changes: committed through the replicated CommitLog
    /// and applied in log order ([`metalog`]).
    pub metalog: metalog::MetadataLog,
    /// The version of the broker's configuration (GET_BROKER_CONFIG, UPDATE_BROKER_CONFIG).
    pub config_version: processor::manage::ConfigVersion,
    /// Lite topics' expiry and quota ([`lite`]).
    pub lite: lite::LiteLifecycle,
    /// Which client of an exclusive lite group owns each lite topic, in memory
    /// ([`processor::lite_ctl`]).
    pub lite_owners: std::sync::Arc<processor::lite_ctl::LiteOwners>,
}

/// Why [`BrokerInner::store_durably`] did not store durably.
#[derive(Debug)]
pub enum DurableError {
    /// The store refused (the message was not written).
    Store(store::StoreError),
    /// Written, but the sync to disk timed out or failed (FLUSH_DISK_TIMEOUT).
    FlushTimeout(store::PutResult),
    /// Not written, or written and not acknowledged: this broker is not a master with a lease.
    NotMaster(String),
    /// Refused before writing: the SyncStateSet is smaller than `min_in_sync_replicas`.
    InSyncReplicasNotEnough(String),
    /// Written, but the replicas the ack policy asks for did not confirm in time.
    NotAcked {
        result: store::PutResult,
        why: String,
    },
}

impl From<&DurableError> for Refusal {
    /// The refusal RocketMQ answers with: the response code, and a remark saying why.
    fn from(e: &DurableError) -> Self {
        use rocketraft_remoting::codes::response_code as rc;
        use store::StoreError;
        match e {
            DurableError::Store(
                e @ (StoreError::MessageIllegal(_) | StoreError::PropertiesSizeExceeded(_)),
            ) => Refusal::new(rc::MESSAGE_ILLEGAL, e.to_string()),
            DurableError::Store(e @ StoreError::ServiceNotAvailable(_)) => {
                Refusal::new(rc::SERVICE_NOT_AVAILABLE, e.to_string())
            }
            DurableError::Store(e) => Refusal::system_error(e.to_string()),
            DurableError::FlushTimeout(r) => Refusal::new(
                rc::FLUSH_DISK_TIMEOUT,
                format!("flush to disk timed out (record at {})", r.physical_offset),
            ),
            DurableError::NotMaster(why) => Refusal::new(rc::SERVICE_NOT_AVAILABLE, why.clone()),
            DurableError::InSyncReplicasNotEnough(why) => Refusal::system_error(why.clone()),
            DurableError::NotAcked { why, .. } => {
                Refusal::new(rc::FLUSH_SLAVE_TIMEOUT, why.clone())
            }
        }
    }
}

impl From<DurableError> for Refusal {
    fn from(e: DurableError) -> Self {
        Refusal::from(&e)
    }
}

/// The request codes only the cluster's own servers may send a broker, served only on
/// connections that proved [`BrokerConfig::cluster_secret`] when one is set:
/// NOTIFY_BROKER_ROLE_CHANGED (from a controller, or from a new master to the old one: it
/// makes a broker change role and truncate its log) and EXCHANGE_BROKER_HA_INFO (a slave asks
/// its master for the HA address). Client-facing and admin codes are left to ACL.
pub const CLUSTER_INTERNAL_CODES: &[i32] = &[
    rocketraft_remoting::codes::request_code::NOTIFY_BROKER_ROLE_CHANGED,
    rocketraft_remoting::codes::request_code::EXCHANGE_BROKER_HA_INFO,
];

/// How long a retention pin computed by replaying the system topics is reused (a slave, or a
/// master that has not replayed its POP, timer or transaction state yet).
pub const PIN_SCAN_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The environment variable of a deliberately BROKEN build, for the jepsen harness's
/// self-test only: with `1`, a master acknowledges writes as soon as they are in its own
/// CommitLog, without waiting for the replicas (so a failover loses acknowledged messages).
pub const UNSAFE_ACK_BEFORE_REPLICATION_ENV: &str = "ROCKETRAFT_UNSAFE_ACK_BEFORE_REPLICATION";

/// Whether [`UNSAFE_ACK_BEFORE_REPLICATION_ENV`] is `1` (read once; off by default).
fn unsafe_ack_before_replication() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let on = std::env::var(UNSAFE_ACK_BEFORE_REPLICATION_ENV).is_ok_and(|v| v == "1");
        if on {
            tracing::error!(
                "{UNSAFE_ACK_BEFORE_REPLICATION_ENV}=1: acknowledging writes BEFORE replication; acknowledged messages can be lost (test switch, never use it for real)"
            );
        }
        on
    })
}

impl BrokerInner {
    /// The shared state over an opened store and metadata store: loads the topic table, the
    /// ACLs and the metadata log's applied offset.
    fn new(
        config: BrokerConfig,
        advertised: SocketAddr,
        store: Arc<MessageStore>,
        metadata: Arc<MetadataStore>,
        register_trigger: Arc<Notify>,
        ha: Option<Arc<ha::HaState>>,
        replicas: Option<Arc<replica::ReplicaManager>>,
    ) -> anyhow::Result<BrokerInner> {
        let topics = topic::TopicConfigManager::load(
            metadata.clone(),
            &config.cluster_name,
            &config.broker_name,
            config.auto_create_topic_enable,
            config.default_topic_queue_nums,
        )?;
        let acl_manager = acl::AclManager::new(metadata.clone());
        let metalog = metalog::MetadataLog::open(&metadata)
            .map_err(|e| anyhow::anyhow!("cannot read the applied metadata log offset: {e}"))?;
        let lite = lite::LiteLifecycle::open(&metadata)
            .map_err(|e| anyhow::anyhow!("cannot read the expired lite topics: {e}"))?;
        Ok(BrokerInner {
            config,
            advertised,
            store,
            metadata,
            topics,
            clients: client_manager::ClientManager::default(),
            locks: rebalance_lock::RebalanceLockManager::default(),
            stats: stats::BrokerStats::default(),
            metrics: metrics::BrokerMetrics::default(),
            register_trigger,
            boot_timestamp_ms: now_ms(),
            ha,
            replicas,
            pop: pop::PopService::default(),
            timers: timer::TimerService::default(),
            transactions: transaction::TransactionService::default(),
            acl: acl_manager,
            metalog,
            config_version: processor::manage::ConfigVersion::default(),
            lite,
            lite_owners: Default::default(),
        })
    }

    /// Stores messages as a send does: under the flush policy and, in controller mode, only on a
    /// master with a valid lease and until the replicas the ack policy asks for hold them.
    pub async fn store_durably(
        &self,
        msgs: Vec<store::BrokerMessage>,
    ) -> Result<store::PutResult, DurableError> {
        self.store_durably_with(msgs, &self.ack_policy()).await
    }

    /// [`BrokerInner::store_durably`] under another ack policy (metadata records wait for every
    /// SyncStateSet member).
    pub async fn store_durably_with(
        &self,
        msgs: Vec<store::BrokerMessage>,
        policy: &ha::AckPolicy,
    ) -> Result<store::PutResult, DurableError> {
        self.store_durably_as(msgs, policy, false).await
    }

    /// [`BrokerInner::store_durably`] for a copy of live state that retention wants moved
    /// (a POP message in flight, a pending timer, an undecided half message): accepted while
    /// the disk is marked full, see [`store::MessageStore::put_messages_reserved`].
    pub async fn store_state_copy(
        &self,
        msgs: Vec<store::BrokerMessage>,
    ) -> Result<store::PutResult, DurableError> {
        self.store_durably_as(msgs, &self.ack_policy(), true).await
    }

    async fn store_durably_as(
        &self,
        msgs: Vec<store::BrokerMessage>,
        policy: &ha::AckPolicy,
        reserved: bool,
    ) -> Result<store::PutResult, DurableError> {
        let policy = *policy;
        if let Some(ha) = &self.ha {
            ha.check_writable()
                .map_err(|e| DurableError::NotMaster(e.to_string()))?;
            ha.check_in_sync(&policy)
                .map_err(|e| DurableError::InSyncReplicasNotEnough(e.to_string()))?;
        }
        let put = if reserved {
            self.store.put_messages_reserved(msgs).await
        } else {
            self.store.put_messages(msgs).await
        };
        let result = match put {
            Ok(r) => r,
            Err(store::StoreError::FlushDiskTimeout(r)) => {
                return Err(DurableError::FlushTimeout(*r))
            }
            Err(e) => return Err(DurableError::Store(e)),
        };
        if let Some(ha) = &self.ha {
            ha.on_local_append();
            if unsafe_ack_before_replication() {
                return Ok(result);
            }
            let end = result.physical_offset + result.wrote_bytes as i64;
            match ha.wait_for_acks(end, &policy).await {
                Ok(()) => {}
                Err(ha::AckError::NotMaster(why)) => return Err(DurableError::NotMaster(why)),
                Err(e) => {
                    tracing::warn!(error = %e, end, "write not acknowledged by the replicas");
                    return Err(DurableError::NotAcked {
                        result,
                        why: e.to_string(),
                    });
                }
            }
        }
        Ok(result)
    }

    /// The broker id to register with the NameServers (`None`: do not register yet).
    pub fn registered_broker_id(&self) -> Option<i64> {
        match &self.replicas {
            Some(r) => r.registered_id(),
            None => Some(self.config.broker_id),
        }
    }

    /// The ack policy of sends (controller mode).
    pub fn ack_policy(&self) -> ha::AckPolicy {
        ha::AckPolicy {
            min_in_sync_replicas: self.config.min_in_sync_replicas,
            all_ack_in_sync_state_set: self.config.all_ack_in_sync_state_set,
            in_sync_replicas: self.config.in_sync_replicas,
            timeout: Duration::from_millis(self.config.slave_timeout_ms),
        }
    }

    /// The HA address slaves connect to.
    pub fn ha_addr(&self) -> String {
        match &self.replicas {
            Some(r) => r.ha_addr().to_string(),
            None => self
                .config
                .ha_advertised_for(self.advertised, self.config.ha_port)
                .to_string(),
        }
    }
}

/// Every 10 s, forgets the clients that stopped heartbeating and tells the remaining
/// consumers of each group whose membership changed; the queue locks of forgotten clients go.
async fn client_expiry_loop(scan: Arc<BrokerInner>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(10));
    loop {
        ticker.tick().await;
        for group in scan
            .clients
            .expire(now_ms(), scan.config.client_channel_expire_ms)
        {
            tracing::info!(group, "consumer group membership changed (client gone)");
            scan.clients.notify_ids_changed(&group);
        }
        let released = scan.locks.retain_members(
            |group, client| scan.clients.is_member(group, client),
            now_ms(),
            scan.config.rebalance_lock_max_live_time_ms,
        );
        if released > 0 {
            tracing::info!(released, "queue locks of departed consumers released");
        }
    }
}

/// A running broker.
pub struct Broker {
    inner: Arc<BrokerInner>,
    server: ServerHandle,
    tasks: Vec<JoinHandle<()>>,
    namesrv_client: RemotingClient,
}

impl Broker {
    /// Binds the Remoting port, opens (and recovers) the store, registers with the NameServers.
    /// The settings changed at runtime and persisted under the store root are applied over
    /// `config`'s first ([`processor::manage::apply_persisted_config`]).
    pub async fn start(mut config: BrokerConfig) -> anyhow::Result<Broker> {
        processor::manage::apply_persisted_config(&mut config)?;
        config.validate().map_err(anyhow::Error::msg)?;
        // Before any port is taken: an advertised address the peers cannot reach is refused
        // here rather than handed to clients and slaves (rocketraft_common::advertise).
        let (addresses, peers) = config.advertised_addresses();
        tokio::task::spawn_blocking(move || {
            rocketraft_common::advertise::check_all(&addresses, &peers)
        })
        .await?
        .map_err(anyhow::Error::msg)?;
        let listen = config.listen;

        // Bind first: with port 0 the advertised address (stored in every record as the store
        // host, and registered with the NameServers) is only known after binding.
        let slot = Arc::new(OnceLock::new());
        let server = Self::bind(
            listen,
            config.cluster_secret.clone(),
            &config.server_limits,
            &slot,
            &config,
        )
        .await?;
        let bound = server.local_addr();
        let advertised = config.advertised_for(bound.port());

        let (store, metadata) = Self::open_store(&config, advertised).await?;
        let register_trigger = Arc::new(Notify::new());
        let (ha_state, replicas, ha_listener) = if config.enable_controller_mode {
            let (ha_state, replicas, listener) =
                Self::start_replication(&config, advertised, &store, &register_trigger).await?;
            (Some(ha_state), Some(replicas), Some(listener))
        } else {
            (None, None, None)
        };
        let inner = Arc::new(BrokerInner::new(
            config,
            advertised,
            store,
            metadata,
            register_trigger,
            ha_state,
            replicas,
        )?);
        Self::replay_metadata(&inner);
        Self::pin_live_state(&inner);
        if slot.set(inner.clone()).is_err() {
            anyhow::bail!("broker state initialised twice");
        }
        let server = server.spawn();
        tracing::info!(
            broker = %inner.config.broker_name,
            addr = %bound,
            advertised = %advertised,
            "broker listening"
        );

        let namesrv_client = RemotingClient::new(inner.config.internal_client_config());
        let tasks = Self::spawn_services(&inner, ha_listener, &namesrv_client).await;
        Ok(Broker {
            inner,
            server,
            tasks,
            namesrv_client,
        })
    }

    /// Binds the Remoting port with the broker's processors registered; they reach the broker's
    /// state through `slot`, filled once it exists (after the bind, which gives the address).
    /// With a cluster secret, [`CLUSTER_INTERNAL_CODES`] are served only to peers that prove it.
    async fn bind(
        listen: SocketAddr,
        cluster_secret: Option<rocketraft_common::trust::ClusterSecret>,
        limits: &rocketraft_remoting::limits::ServerLimitsConfig,
        slot: &Arc<OnceLock<Arc<BrokerInner>>>,
        config: &BrokerConfig,
    ) -> anyhow::Result<RemotingServer> {
        let processor = Arc::new(processor::BrokerProcessor {
            inner: slot.clone(),
        });
        let mut builder = RemotingServer::builder();
        for code in processor::HANDLED_CODES {
            builder = builder.register(*code, processor.clone());
        }
        let password_replay = if config.authentication_enabled {
            None
        } else {
            Some(Arc::new(rocketraft_remoting::auth::ReplayGuard::new(
                &config.auth_settings()?,
            )))
        };
        let acl_processor = Arc::new(processor::acl::AclProcessor {
            inner: slot.clone(),
            password_replay,
        });
        for code in processor::acl::CODES {
            builder = builder.register(*code, acl_processor.clone());
        }
        let metadata = Arc::new(auth::BrokerAuthMetadata {
            inner: slot.clone(),
            config_users: auth::config_users(config),
        });
        builder = auth::install(builder, config, metadata)?;
        builder
            .max_connections(limits.max_connections)
            .limits(limits.limits())
            .tls(config.tls.load()?)
            .cluster_trust(cluster_secret, CLUSTER_INTERNAL_CODES)
            .rpc_metrics(config.rpc_metrics.clone())
            .bind(listen).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {listen}: {e} (is another broker running? pick another port with --broker-listen)"
            )
        })
    }

    /// Opens (and recovers) the store, off the async runtime, with `advertised` as the store
    /// host, then the metadata store in its `metadata` directory.
    async fn open_store(
        config: &BrokerConfig,
        advertised: SocketAddr,
    ) -> anyhow::Result<(Arc<MessageStore>, Arc<MetadataStore>)> {
        let mut store_config = config.store.clone();
        store_config.store_host = advertised;
        let store_root = store_config.store_root.clone();
        let store = tokio::task::spawn_blocking(move || MessageStore::open(store_config))
            .await
            .map_err(|e| anyhow::anyhow!("store open task failed: {e}"))?
            .map_err(|e| {
                anyhow::anyhow!("cannot open the store at {}: {e}", store_root.display())
            })?;
        let metadata_path = store_root.join("metadata");
        let metadata = Arc::new(MetadataStore::open(&metadata_path).map_err(|e| {
            anyhow::anyhow!("cannot open metadata at {}: {e}", metadata_path.display())
        })?);
        Ok((store, metadata))
    }

    /// Controller mode: binds the HA listener, then starts the role manager (the role from the
    /// controller, replication). Returns the replication state, the role manager and the
    /// listener, which is served once the broker is up.
    async fn start_replication(
        config: &BrokerConfig,
        advertised: SocketAddr,
        store: &Arc<MessageStore>,
        register_trigger: &Arc<Notify>,
    ) -> anyhow::Result<(
        Arc<ha::HaState>,
        Arc<replica::ReplicaManager>,
        tokio::net::TcpListener,
    )> {
        let ha_bind = SocketAddr::new(config.listen.ip(), config.ha_port);
        let listener = tokio::net::TcpListener::bind(ha_bind).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot listen for replication on {ha_bind}: {e} (pick another ha_port)"
            )
        })?;
        let ha_local = listener.local_addr()?;
        let ha_addr = config.ha_advertised_for(advertised, ha_local.port());
        let tls = ha::HaTls {
            server: config.tls.load()?,
            client: config.tls_client.load()?,
        };
        let ha_state =
            ha::HaState::with_security(store.clone(), config.cluster_secret.clone(), tls);
        let replicas = replica::ReplicaManager::start(
            config.clone(),
            store.clone(),
            ha_state.clone(),
            advertised.to_string(),
            ha_addr,
            register_trigger.clone(),
        )
        .await?;
        Ok((ha_state, replicas, listener))
    }

    /// Retention never deletes CommitLog segments holding state the broker still needs: a
    /// message in flight under POP, a pending timer, an undecided half message (their state
    /// is replayed from those records after a restart or failover; all three are stored
    /// again at the head when retention wants their segment). A master that serves them
    /// answers from memory; a slave (which must keep what it would serve after a failover) and
    /// a master that has not replayed them yet answer from a replay of the system topics, at
    /// most once per [`PIN_SCAN_EVERY`].
    fn pin_live_state(inner: &Arc<BrokerInner>) {
        let weak = Arc::downgrade(inner);
        let scanned: parking_lot::Mutex<Option<(std::time::Instant, Option<i64>)>> =
            parking_lot::Mutex::new(None);
        inner.store.set_retention_pin(Arc::new(move || {
            let inner = weak.upgrade()?;
            let lowest = || {
                [
                    inner.pop.lowest_needed(&inner),
                    inner.timers.lowest_needed(&inner),
                    inner.transactions.lowest_needed(&inner),
                ]
                .into_iter()
                .flatten()
                .min()
            };
            let in_memory = inner.pop.replayed(&inner)
                && inner.timers.replayed(&inner)
                && inner.transactions.replayed(&inner);
            if in_memory {
                return lowest();
            }
            let mut scanned = scanned.lock();
            match *scanned {
                Some((at, pin)) if at.elapsed() < PIN_SCAN_EVERY => pin,
                _ => {
                    let pin = lowest();
                    *scanned = Some((std::time::Instant::now(), pin));
                    pin
                }
            }
        }));
    }

    /// Metadata records the store recovered beyond what the metadata store applied (a crash
    /// between the two), up to what the replicas confirmed, before any request is served. A
    /// failure is logged: the apply loop retries in the background.
    fn replay_metadata(inner: &Arc<BrokerInner>) {
        match inner
            .metalog
            .apply_through(inner, inner.store.confirm_offset())
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(records = n, "metadata records replayed from the log"),
            Err(e) => {
                tracing::error!(error = %e, "cannot replay metadata records; retrying in the background")
            }
        }
    }

    /// Starts the background services: in controller mode the HA listener, the role loops, the
    /// metadata apply loop and the slave sync; then revive, timers and transaction checks, the
    /// first registration with the NameServers (awaited), the registration loop and the client
    /// expiry scan. Returns their tasks.
    async fn spawn_services(
        inner: &Arc<BrokerInner>,
        ha_listener: Option<tokio::net::TcpListener>,
        namesrv_client: &RemotingClient,
    ) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        if let (Some(listener), Some(ha_state), Some(replicas)) =
            (ha_listener, inner.ha.clone(), inner.replicas.clone())
        {
            tasks.push(tokio::spawn(ha::serve(listener, ha_state)));
            tasks.extend(replicas.spawn_loops());
            tasks.push(tokio::spawn(metalog::apply_loop(inner.clone())));
            tasks.push(tokio::spawn(replica::slave_sync_loop(inner.clone())));
        }
        tasks.push(tokio::spawn(pop::revive_loop(inner.clone())));
        tasks.push(tokio::spawn(timer::timer_loop(inner.clone())));
        tasks.push(tokio::spawn(transaction::check_loop(inner.clone())));
        register::register_all(inner, namesrv_client).await;
        tasks.push(tokio::spawn(register::registration_loop(
            inner.clone(),
            namesrv_client.clone(),
        )));
        tasks.push(tokio::spawn(client_expiry_loop(inner.clone())));
        tasks.push(tokio::spawn(stats::sample_loop(inner.clone())));
        tasks.push(tokio::spawn(lite::lite_ttl_loop(inner.clone())));
        tasks
    }

    /// The bound Remoting address.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The address registered with the NameServers.
    pub fn advertised_addr(&self) -> SocketAddr {
        self.inner.advertised
    }

    /// Shared state (for in-process users such as the proxy's local mode and tests).
    pub fn inner(&self) -> &Arc<BrokerInner> {
        &self.inner
    }

    /// The broker's Prometheus metrics, computed when scraped (see [`metrics`]): register it
    /// in the process's registry under the node labels. It holds the broker weakly and writes
    /// nothing once the broker is gone; it writes neither the node labels nor
    /// `rocketmq_rpc_latency` (see [`BrokerConfig::rpc_metrics`]).
    pub fn metrics_collector(&self) -> Box<dyn rocketraft_common::metrics::Collector> {
        Box::new(metrics::BrokerCollector {
            inner: Arc::downgrade(&self.inner),
        })
    }

    /// Stops serving, unregisters, flushes and closes the store cleanly.
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(r) = &self.inner.replicas {
            r.stop();
        }
        self.server.shutdown().await;
        register::unregister_all(&self.inner, &self.namesrv_client).await;
        let store = self.inner.store.clone();
        match tokio::task::spawn_blocking(move || store.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "store shutdown failed"),
            Err(e) => tracing::error!(error = %e, "store shutdown task failed"),
        }
        if let Err(e) = self.inner.metadata.flush() {
            tracing::error!(error = %e, "metadata flush failed");
        }
        tracing::info!(broker = %self.inner.config.broker_name, "broker stopped");
    }
}
