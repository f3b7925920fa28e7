//! Broker configuration: TOML, with RocketMQ's `BrokerConfig` names accepted as aliases so that
//! operators can bring their habits (`brokerName`, `namesrvAddr`, `autoCreateTopicEnable`, ...).

use std::net::SocketAddr;
use std::time::Duration;

use rocketraft_common::trust::ClusterSecret;
use rocketraft_remoting::auth::{AuthSettings, BadWhitelist, SessionCredentials};
use rocketraft_remoting::limits::{InvalidLimit, ServerLimitsConfig};
use rocketraft_remoting::tls::{ClientTlsConfig, ServerTlsConfig};
use rocketraft_remoting::ClientConfig;
use serde::Deserialize;
use serde::Serialize;

use crate::store::StoreConfig;

/// Settings of one broker process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// The broker set this process belongs to (`brokerName`).
    #[serde(alias = "brokerName")]
    pub broker_name: String,
    /// The cluster of the broker set (`brokerClusterName`).
    #[serde(alias = "brokerClusterName")]
    pub cluster_name: String,
    /// 0 for a master (`brokerId`).
    #[serde(alias = "brokerId")]
    pub broker_id: i64,
    /// Where the Remoting port binds (`listenAddr`; RocketMQ's `bindAddress` and `listenPort`
    /// in a broker.conf; default 0.0.0.0:10911).
    #[serde(alias = "listenAddr")]
    pub listen: SocketAddr,
    /// The Remoting address registered with the NameServers and the controller, stored in
    /// every message as its store host (`brokerIP1`): an IP, as RocketMQ writes it, with the
    /// port of `listen` (the bound one when that is 0), or `IP:port` when clients reach the
    /// port through a forwarded one. Default: the IP of `listen`, or 127.0.0.1 when that is
    /// unspecified. Checked at start against the NameServers and controllers (see
    /// [`BrokerConfig::advertised_addresses`]).
    #[serde(
        alias = "brokerIP1",
        default,
        deserialize_with = "ip_or_addr::deserialize",
        serialize_with = "ip_or_addr::serialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub advertised_addr: Option<SocketAddr>,
    /// The HA (replication) port (`haListenPort`, default 10912), bound on the IP of `listen`;
    /// 0 picks a free port.
    #[serde(alias = "haListenPort")]
    pub ha_port: u16,
    /// The HA address slaves are told to connect to (`brokerIP2`): an IP with the bound HA
    /// port, as RocketMQ writes it, or `IP:port` when slaves reach this broker through NAT or a
    /// forwarded port. Default: the IP of the advertised address.
    #[serde(
        alias = "brokerIP2",
        default,
        deserialize_with = "ip_or_addr::deserialize",
        serialize_with = "ip_or_addr::serialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub ha_advertised_addr: Option<SocketAddr>,
    /// NameServer addresses, `host:port` separated by `;` (`namesrvAddr`).
    #[serde(alias = "namesrvAddr")]
    pub namesrv_addr: String,
    /// How often the broker re-registers with every NameServer (`registerNameServerPeriod`, 30 s).
    #[serde(alias = "registerNameServerPeriod")]
    pub register_interval_ms: u64,
    /// Create a topic on the first send to it (`autoCreateTopicEnable`, default true).
    #[serde(alias = "autoCreateTopicEnable")]
    pub auto_create_topic_enable: bool,
    /// Queues of an auto-created topic (`defaultTopicQueueNums`, 8).
    #[serde(alias = "defaultTopicQueueNums")]
    pub default_topic_queue_nums: i32,
    /// Hold PULL requests that find nothing until messages arrive (`longPollingEnable`).
    #[serde(alias = "longPollingEnable")]
    pub long_polling_enable: bool,
    /// Without long polling, how long a suspended pull waits (`shortPollingTimeMills`).
    #[serde(alias = "shortPollingTimeMills")]
    pub short_polling_time_ms: u64,
    /// The most messages one PULL returns (`maxTransferCountOnMessageInMemory`, 32).
    #[serde(alias = "maxTransferCountOnMessageInMemory")]
    pub max_transfer_count: i32,
    /// The most body bytes one PULL returns (`maxTransferBytesOnMessageInMemory`, 256 KiB).
    #[serde(alias = "maxTransferBytesOnMessageInMemory")]
    pub max_transfer_bytes: usize,
    /// A client whose connection is open but silent for this long is forgotten
    /// (`channelExpiredTimeout`, 120 s).
    #[serde(alias = "channelExpiredTimeout")]
    pub client_channel_expire_ms: i64,
    /// How long an orderly consumer's queue lock lives after its last renewal (RocketMQ's
    /// `rocketmq.broker.rebalance.lockMaxLiveTime` system property, 60 s).
    #[serde(alias = "rebalanceLockMaxLiveTime")]
    pub rebalance_lock_max_live_time_ms: i64,
    /// Serve LITE_PULL_MESSAGE (361, `DefaultLitePullConsumer`) (`litePullMessageEnable`).
    #[serde(alias = "litePullMessageEnable")]
    pub lite_pull_message_enable: bool,
    /// Most lite topics' queues (LMQs) this broker keeps (`maxLmqConsumeQueueNum`, RocketMQ's
    /// MessageStoreConfig, 20000): a send that would create one more is refused with
    /// LMQ_QUOTA_EXCEEDED (2017; the proxy answers LITE_TOPIC_QUOTA_EXCEEDED).
    #[serde(alias = "maxLmqConsumeQueueNum")]
    pub max_lmq_consume_queue_num: usize,
    /// How often expired lite topics are looked for (`liteTtlCheckInterval`, 120 s).
    #[serde(alias = "liteTtlCheckInterval")]
    pub lite_ttl_check_interval_ms: u64,
    /// A lite topic is never expired while its last message is younger than this, and nothing
    /// is expired until the broker has run this long (`minLiteTTl`, 15 min). A LITE topic's
    /// lite topics expire when no message came for its `lite.topic.expiration` minutes.
    #[serde(alias = "minLiteTTl")]
    pub min_lite_ttl_ms: u64,
    /// Filter by message properties: SQL92 subscriptions (`enablePropertyFilter`; RocketMQ's
    /// default is off, ours on: only consumers that ask for SQL92 pay for it).
    #[serde(alias = "enablePropertyFilter")]
    pub enable_property_filter: bool,
    /// Store replies of request-reply in `{cluster}_REPLY_TOPIC` besides pushing them to the
    /// requester (`storeReplyMessageEnable`).
    #[serde(alias = "storeReplyMessageEnable")]
    pub store_reply_message_enable: bool,
    /// Refuse prepared transactional messages (`rejectTransactionMessage`).
    #[serde(alias = "rejectTransactionMessage")]
    pub reject_transaction_message: bool,
    /// A half message undecided for this long is checked back with its producer
    /// (`transactionTimeOut`, 6 s).
    #[serde(alias = "transactionTimeOut")]
    pub transaction_timeout_ms: u64,
    /// How often an undecided half message is checked (`transactionCheckInterval`, 30 s).
    #[serde(alias = "transactionCheckInterval")]
    pub transaction_check_interval_ms: u64,
    /// Checks before an undecided half message is rolled back (`transactionCheckMax`, 15).
    #[serde(alias = "transactionCheckMax")]
    pub transaction_check_max: u32,
    /// Controller mode (`enableControllerMode`): the broker id, the role and the epochs come from
    /// the controller quorum, and the CommitLog is replicated to the slaves of the broker set.
    #[serde(alias = "enableControllerMode")]
    pub enable_controller_mode: bool,
    /// Controller Remoting addresses, `host:port` separated by `;` (`controllerAddr`).
    #[serde(alias = "controllerAddr")]
    pub controller_addr: String,
    /// How often the broker heartbeats every controller (300 ms; RocketMQ heartbeats every 1 s).
    /// A master whose lease missed a renewal retries every 100 ms until one is confirmed.
    pub controller_heartbeat_interval_ms: u64,
    /// A controller declares this broker dead after this long without a heartbeat
    /// (`controllerHeartBeatTimeoutMills`; 3 s here, RocketMQ's 10 s would put a dead master's
    /// failover past 10 s). A master stops acknowledging writes before it: its role lease is 3/4
    /// of this (or of the controllers' timeout, if shorter), renewed by heartbeats the controller
    /// leader confirmed. See docs/safety.md.
    #[serde(alias = "controllerHeartBeatTimeoutMills")]
    pub controller_heartbeat_timeout_ms: u64,
    /// How often the broker polls its replica info (`syncControllerMetadataPeriod`; 1 s here,
    /// 5 s in RocketMQ); the controller also notifies role changes at once, but a slave the
    /// electing controller cannot reach (a partial partition) learns of its new master only
    /// by this poll, and the new master acknowledges nothing until a slave follows it.
    #[serde(alias = "syncControllerMetadataPeriod")]
    pub sync_controller_metadata_period_ms: u64,
    /// How often the master checks its slaves and its SyncStateSet (`checkSyncStateSetPeriod`;
    /// 200 ms here, 5 s in RocketMQ): after a failover the new master acknowledges nothing
    /// needing a second replica until a caught-up slave is back in the set, so this is part of
    /// the failover time. A check that finds nothing to change sends nothing.
    #[serde(alias = "checkSyncStateSetPeriod")]
    pub check_sync_state_set_period_ms: u64,
    /// A slave not caught up for this long (or disconnected) leaves the SyncStateSet
    /// (`haMaxTimeSlaveNotCatchup`; 2 s here, 15 s in RocketMQ). Every acknowledgement waits for
    /// every member, so a partitioned slave stalls writes this long before the master drops it;
    /// a dropped slave rejoins as soon as it has caught up.
    #[serde(alias = "haMaxTimeSlaveNotCatchup")]
    pub ha_max_time_slave_not_catchup_ms: u64,
    /// Replicas (master included) that must hold a message before a send succeeds
    /// (`minInSyncReplicas`, 1). The SyncStateSet never counts fewer.
    #[serde(alias = "minInSyncReplicas")]
    pub min_in_sync_replicas: usize,
    /// Every SyncStateSet member must hold a message before a send succeeds
    /// (`allAckInSyncStateSet`). Default true here (RocketMQ: false): with it, every master the
    /// controller can elect holds every acknowledged message.
    #[serde(alias = "allAckInSyncStateSet")]
    pub all_ack_in_sync_state_set: bool,
    /// Without `all_ack_in_sync_state_set`: replicas (master included) that must ack
    /// (`inSyncReplicas`, 1).
    #[serde(alias = "inSyncReplicas")]
    pub in_sync_replicas: usize,
    /// How long a send waits for its replica acks before failing with FLUSH_SLAVE_TIMEOUT
    /// (`slaveTimeout`, 3 s).
    #[serde(alias = "slaveTimeout")]
    pub slave_timeout_ms: u64,
    /// Check every Remoting request's signature (`authenticationEnabled`, default false):
    /// RocketMQ's `AclClientRPCHook` signing, verified against the ACL 2.0 users
    /// (`rocketraft_remoting::auth`). Unsigned, unknown, disabled or wrongly signed requests are
    /// refused with NO_PERMISSION (16).
    #[serde(alias = "authenticationEnabled")]
    pub authentication_enabled: bool,
    /// Check every request's resources against the user's ACL (`authorizationEnabled`, default
    /// false); `Super` users may do everything.
    #[serde(alias = "authorizationEnabled")]
    pub authorization_enabled: bool,
    /// Request codes served without a signature, comma-separated (`authenticationWhitelist`).
    #[serde(alias = "authenticationWhitelist")]
    pub authentication_whitelist: String,
    /// Request codes served without a permission check (`authorizationWhitelist`).
    #[serde(alias = "authorizationWhitelist")]
    pub authorization_whitelist: String,
    /// Refuse signed requests without a signed time (`authRequireSignedTimestamp`, Rocketraft's
    /// own, default false): Rocketraft's signers add one, RocketMQ's `AclClientRPCHook` does not.
    #[serde(alias = "authRequireSignedTimestamp")]
    pub auth_require_signed_timestamp: bool,
    /// How far a signed time may be from this server's clock, and how long a signature is
    /// remembered to refuse its replay (`authSignedTimestampWindowSeconds`, default 300).
    #[serde(alias = "authSignedTimestampWindowSeconds")]
    pub auth_signed_timestamp_window_seconds: u64,
    /// A `Super` user this broker knows from its config (`initAuthenticationUser`, JSON
    /// `{"username": ..., "password": ...}` or a table): the administrator. Never logged.
    #[serde(
        alias = "initAuthenticationUser",
        deserialize_with = "rocketraft_remoting::auth::deserialize_credentials"
    )]
    pub init_authentication_user: Option<SessionCredentials>,
    /// What this broker signs its calls to NameServers, controllers and other brokers with, and a
    /// `Super` user it accepts (`innerClientAuthenticationCredentials`, JSON `{"accessKey": ...,
    /// "secretKey": ...}` or a table). Never logged.
    #[serde(
        alias = "innerClientAuthenticationCredentials",
        deserialize_with = "rocketraft_remoting::auth::deserialize_credentials"
    )]
    pub inner_client_authentication_credentials: Option<SessionCredentials>,
    /// The cluster's shared secret (`cluster_secret`, Rocketraft; at least 16 characters, the
    /// same on every NameServer, controller and broker of the cluster; none by default).
    ///
    /// With it, every connection this broker opens to a NameServer, a controller or another
    /// broker first proves the secret and checks the other side's proof
    /// (`rocketraft_remoting::trust`); the cluster-internal requests it serves
    /// ([`crate::CLUSTER_INTERNAL_CODES`]: role notifications, the HA address exchange) are
    /// answered only on connections that proved it; and master and slave prove it to each other
    /// on the HA port before any frame ([`crate::ha`]). Client-facing requests are ACL's
    /// business, not this. It is never logged (`Debug` shows `<redacted>`).
    pub cluster_secret: Option<ClusterSecret>,
    /// What one peer may cost the Remoting port (`[server_limits]`: connections, request
    /// sizes, buffered bytes, half-sent frames, idle time; see `rocketraft_remoting::limits`).
    pub server_limits: ServerLimitsConfig,
    /// TLS on the Remoting and HA ports (`[tls]`: `mode` = disabled / permissive / enforcing,
    /// RocketMQ's `tls.server.mode`; `cert` and `key`, PEM; see `rocketraft_remoting::tls`).
    pub tls: ServerTlsConfig,
    /// TLS on the connections this broker opens: to NameServers, controllers, other brokers
    /// and its master's HA port (`[tls_client]`: `enable`, `trust_cert`).
    pub tls_client: ClientTlsConfig,
    /// The message store.
    pub store: StoreConfig,
    /// Where the broker's Remoting server records `rocketmq_rpc_latency` (the process's family
    /// and this broker's labels); set by the process, never read from a file. None: not
    /// recorded.
    #[serde(skip)]
    pub rpc_metrics: Option<rocketraft_common::metrics::RpcMetrics>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            broker_name: "broker-a".to_string(),
            cluster_name: rocketraft_common::consts::DEFAULT_CLUSTER.to_string(),
            broker_id: 0,
            listen: SocketAddr::from(([0, 0, 0, 0], 10911)),
            advertised_addr: None,
            ha_port: 10912,
            ha_advertised_addr: None,
            namesrv_addr: "127.0.0.1:9876".to_string(),
            register_interval_ms: 30_000,
            auto_create_topic_enable: true,
            default_topic_queue_nums: 8,
            long_polling_enable: true,
            short_polling_time_ms: 1_000,
            max_transfer_count: 32,
            max_transfer_bytes: 256 * 1024,
            client_channel_expire_ms: 120_000,
            rebalance_lock_max_live_time_ms: 60_000,
            lite_pull_message_enable: true,
            max_lmq_consume_queue_num: 20_000,
            lite_ttl_check_interval_ms: 120_000,
            min_lite_ttl_ms: 15 * 60 * 1000,
            enable_property_filter: true,
            store_reply_message_enable: true,
            reject_transaction_message: false,
            transaction_timeout_ms: 6_000,
            transaction_check_interval_ms: 30_000,
            transaction_check_max: 15,
            enable_controller_mode: false,
            controller_addr: String::new(),
            controller_heartbeat_interval_ms: 300,
            controller_heartbeat_timeout_ms: 3_000,
            sync_controller_metadata_period_ms: 1_000,
            check_sync_state_set_period_ms: 200,
            ha_max_time_slave_not_catchup_ms: 2_000,
            min_in_sync_replicas: 1,
            all_ack_in_sync_state_set: true,
            in_sync_replicas: 1,
            slave_timeout_ms: 3_000,
            authentication_enabled: false,
            authorization_enabled: false,
            authentication_whitelist: String::new(),
            authorization_whitelist: String::new(),
            auth_require_signed_timestamp: false,
            auth_signed_timestamp_window_seconds: 300,
            init_authentication_user: None,
            inner_client_authentication_credentials: None,
            cluster_secret: None,
            server_limits: ServerLimitsConfig::default(),
            tls: ServerTlsConfig::default(),
            tls_client: ClientTlsConfig::default(),
            store: StoreConfig::default(),
            rpc_metrics: None,
        }
    }
}

/// Builders over [`Default`] for the keys a generated config sets (`cluster up`, the Jepsen
/// harness): `BrokerConfig::default().with_listen(addr).with_store(store)`.
impl BrokerConfig {
    pub fn with_broker_name(mut self, name: impl Into<String>) -> Self {
        self.broker_name = name.into();
        self
    }

    pub fn with_cluster_name(mut self, name: impl Into<String>) -> Self {
        self.cluster_name = name.into();
        self
    }

    pub fn with_listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }

    pub fn with_ha_port(mut self, port: u16) -> Self {
        self.ha_port = port;
        self
    }

    pub fn with_namesrv_addr(mut self, addrs: impl Into<String>) -> Self {
        self.namesrv_addr = addrs.into();
        self
    }

    /// Controller mode (`enable_controller_mode`) with these controllers (`controller_addr`,
    /// `host:port` separated by `;`).
    pub fn with_controller_mode(mut self, controller_addr: impl Into<String>) -> Self {
        self.enable_controller_mode = true;
        self.controller_addr = controller_addr.into();
        self
    }

    pub fn with_min_in_sync_replicas(mut self, replicas: usize) -> Self {
        self.min_in_sync_replicas = replicas;
        self
    }

    pub fn with_register_interval_ms(mut self, ms: u64) -> Self {
        self.register_interval_ms = ms;
        self
    }

    pub fn with_store(mut self, store: StoreConfig) -> Self {
        self.store = store;
        self
    }

    /// The cluster's shared secret ([`BrokerConfig::cluster_secret`]).
    pub fn with_cluster_secret(mut self, secret: ClusterSecret) -> Self {
        self.cluster_secret = Some(secret);
        self
    }
}

/// `brokerIP1` / `brokerIP2` values: an IP (held with port 0: "the bound port") or `IP:port`.
pub mod ip_or_addr {
    use std::net::{IpAddr, SocketAddr};

    use serde::{Deserialize, Deserializer, Serializer};

    /// `10.0.0.5`, `[::1]` or `::1` (port 0: the bound port), or `10.0.0.5:30911`.
    pub fn parse(text: &str) -> Result<SocketAddr, String> {
        let text = text.trim();
        let bare = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, 0));
        }
        text.parse::<SocketAddr>().map_err(|_| {
            format!(
                "expected an IP address (10.0.0.5; the port is then the listening one) or \
                 IP:port, found {text:?}"
            )
        })
    }

    /// The address clients are given: `addr`, its port 0 replaced by `bound_port`.
    pub fn with_port(addr: SocketAddr, bound_port: u16) -> SocketAddr {
        if addr.port() == 0 {
            SocketAddr::new(addr.ip(), bound_port)
        } else {
            addr
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) if text.trim().is_empty() => Ok(None),
            Some(text) => parse(&text).map(Some).map_err(serde::de::Error::custom),
        }
    }

    /// A bare IP when the port is the bound one, so a file written from a config reads back
    /// the same.
    pub fn serialize<S: Serializer>(addr: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match addr {
            None => s.serialize_none(),
            Some(a) if a.port() == 0 => s.serialize_str(&a.ip().to_string()),
            Some(a) => s.serialize_str(&a.to_string()),
        }
    }
}

impl BrokerConfig {
    /// The Remoting address this broker advertises once its port is bound on `bound_port`
    /// (see [`BrokerConfig::advertised_addr`]).
    pub fn advertised_for(&self, bound_port: u16) -> SocketAddr {
        match self.advertised_addr {
            Some(addr) => ip_or_addr::with_port(addr, bound_port),
            None => {
                rocketraft_remoting::api::advertised(SocketAddr::new(self.listen.ip(), bound_port))
            }
        }
    }

    /// The HA address slaves are told, once the HA port is bound on `bound_ha_port`, for a
    /// broker advertising `advertised` (see [`BrokerConfig::ha_advertised_addr`]).
    pub fn ha_advertised_for(&self, advertised: SocketAddr, bound_ha_port: u16) -> SocketAddr {
        match self.ha_advertised_addr {
            Some(addr) => ip_or_addr::with_port(addr, bound_ha_port),
            None => SocketAddr::new(advertised.ip(), bound_ha_port),
        }
    }

    /// Every address this broker advertises, with the key that sets it, and the peers it is
    /// configured with (NameServers; controllers in controller mode), for the start-up check
    /// [`rocketraft_common::advertise::check_all`]. Ports not bound yet show as configured.
    pub fn advertised_addresses(
        &self,
    ) -> (
        Vec<rocketraft_common::advertise::Advertised>,
        Vec<rocketraft_common::advertise::Peer>,
    ) {
        use rocketraft_common::advertise::{Advertised, Peer};
        let remoting = self.advertised_for(self.listen.port());
        let mut addresses = vec![Advertised {
            key: "brokerIP1 (advertised_addr)".to_string(),
            addr: remoting,
            derived: self
                .advertised_addr
                .is_none()
                .then(|| format!("not set, taken from listen {}", self.listen)),
            listen: Some(("listen (bindAddress)".to_string(), self.listen.ip())),
        }];
        let mut peers = Peer::list("namesrvAddr", &self.namesrv_addr);
        if self.enable_controller_mode {
            // Slaves are told the HA address through the controller and the master.
            addresses.push(Advertised {
                key: "brokerIP2 (ha_advertised_addr)".to_string(),
                addr: self.ha_advertised_for(remoting, self.ha_port),
                derived: self
                    .ha_advertised_addr
                    .is_none()
                    .then(|| "not set, taken from brokerIP1".to_string()),
                // The HA port binds the IP of `listen` too.
                listen: Some(("listen (bindAddress)".to_string(), self.listen.ip())),
            });
            peers.extend(Peer::list("controllerAddr", &self.controller_addr));
        }
        (addresses, peers)
    }

    /// The NameServer addresses.
    pub fn namesrv_addrs(&self) -> Vec<String> {
        self.namesrv_addr
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    pub fn register_interval(&self) -> Duration {
        Duration::from_millis(self.register_interval_ms)
    }

    /// The settings of a Remoting client for cluster-internal calls (NameServers, controllers,
    /// other brokers): with the cluster secret, if one is configured, and signing with
    /// `inner_client_authentication_credentials`, if set.
    pub fn internal_client_config(&self) -> ClientConfig {
        // Broker::start loaded it once already and refuses to start if it cannot.
        let tls = self.tls_client.load().unwrap_or_else(|e| {
            tracing::error!(error = %e, "TLS for cluster-internal connections unavailable");
            None
        });
        ClientConfig {
            tls,
            cluster_secret: self.cluster_secret.clone(),
            credentials: self.inner_client_authentication_credentials.clone(),
            ..ClientConfig::default()
        }
    }

    /// What the Remoting ACL checks (`authentication_enabled`, `authorization_enabled`, the
    /// whitelists; `Cluster` resources name this broker's cluster).
    pub fn auth_settings(&self) -> Result<AuthSettings, BadWhitelist> {
        AuthSettings::from_keys(
            self.authentication_enabled,
            self.authorization_enabled,
            [
                &self.authentication_whitelist,
                &self.authorization_whitelist,
            ],
            self.cluster_name.clone(),
        )?
        .with_signed_time(
            self.auth_require_signed_timestamp,
            self.auth_signed_timestamp_window_seconds,
        )
    }

    /// Rejects values that would make the broker misbehave, with the fix in the message.
    pub fn validate(&self) -> Result<(), ConfigError> {
        rocketraft_common::topic::validate_topic_name(&self.broker_name).map_err(|reason| {
            ConfigError::Name {
                field: "broker_name",
                value: self.broker_name.clone(),
                reason,
            }
        })?;
        rocketraft_common::topic::validate_topic_name(&self.cluster_name).map_err(|reason| {
            ConfigError::Name {
                field: "cluster_name",
                value: self.cluster_name.clone(),
                reason,
            }
        })?;
        self.auth_settings()?;
        if self.broker_id < 0 {
            return Err(ConfigError::BrokerId(self.broker_id));
        }
        self.server_limits.validate()?;
        if !(1..=rocketraft_common::TopicConfig::MAX_QUEUE_NUMS)
            .contains(&self.default_topic_queue_nums)
        {
            return Err(ConfigError::DefaultTopicQueueNums(
                self.default_topic_queue_nums,
            ));
        }
        if self.register_interval_ms < 1_000 {
            return Err(ConfigError::RegisterInterval(self.register_interval_ms));
        }
        if self.enable_controller_mode {
            if self.controller_addr.trim().is_empty() {
                return Err(ConfigError::NoControllerAddr);
            }
            if self.controller_heartbeat_interval_ms == 0
                || self.controller_heartbeat_interval_ms * 3 > self.controller_heartbeat_timeout_ms
            {
                return Err(ConfigError::ControllerHeartbeat {
                    interval_ms: self.controller_heartbeat_interval_ms,
                    timeout_ms: self.controller_heartbeat_timeout_ms,
                });
            }
            if self.min_in_sync_replicas == 0 || self.in_sync_replicas == 0 {
                return Err(ConfigError::InSyncReplicas);
            }
            if self.sync_controller_metadata_period_ms == 0
                || self.check_sync_state_set_period_ms == 0
            {
                return Err(ConfigError::ControllerPeriods);
            }
        }
        if !(1..=1024).contains(&self.max_transfer_count) {
            return Err(ConfigError::MaxTransferCount);
        }
        Ok(())
    }
}

/// A [`BrokerConfig`] value the broker cannot run with; the message says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `broker_name` or `cluster_name` is not a valid topic-name-like name.
    #[error("{field} {value:?}: {reason}")]
    Name {
        field: &'static str,
        value: String,
        reason: rocketraft_common::topic::TopicValidationError,
    },
    #[error("broker_id = {0} must be 0 (master) or positive")]
    BrokerId(i64),
    #[error("default_topic_queue_nums = {0} must be within 1..=1024")]
    DefaultTopicQueueNums(i32),
    #[error("register_interval_ms = {0} is below 1000; RocketMQ registers every 30000")]
    RegisterInterval(u64),
    #[error("enable_controller_mode needs controller_addr (host:port;host:port)")]
    NoControllerAddr,
    #[error("controller_heartbeat_interval_ms = {interval_ms} must be positive and at most a third of controller_heartbeat_timeout_ms = {timeout_ms}")]
    ControllerHeartbeat { interval_ms: u64, timeout_ms: u64 },
    #[error("min_in_sync_replicas and in_sync_replicas must be at least 1 (the master counts)")]
    InSyncReplicas,
    #[error(
        "sync_controller_metadata_period_ms and check_sync_state_set_period_ms must be positive"
    )]
    ControllerPeriods,
    #[error("max_transfer_count must be within 1..=1024 (default 32)")]
    MaxTransferCount,
    #[error(transparent)]
    Whitelist(#[from] BadWhitelist),
    #[error(transparent)]
    ServerLimits(#[from] InvalidLimit),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FlushDiskType;

    fn round_trip(config: &BrokerConfig) -> BrokerConfig {
        let text = toml::to_string(config).expect("serializes");
        toml::from_str(&text).unwrap_or_else(|e| panic!("does not parse back: {e}\n{text}"))
    }

    #[test]
    fn serialized_config_parses_back_identically() {
        let default = BrokerConfig::default();
        assert_eq!(round_trip(&default), default);

        let custom = BrokerConfig {
            broker_id: 2,
            advertised_addr: Some(SocketAddr::from(([10, 0, 0, 1], 10911))),
            ha_advertised_addr: Some(SocketAddr::from(([10, 0, 0, 1], 10912))),
            auto_create_topic_enable: false,
            default_topic_queue_nums: 4,
            long_polling_enable: false,
            short_polling_time_ms: 500,
            max_transfer_count: 16,
            max_transfer_bytes: 1024,
            client_channel_expire_ms: 60_000,
            rebalance_lock_max_live_time_ms: 30_000,
            lite_pull_message_enable: false,
            max_lmq_consume_queue_num: 5,
            lite_ttl_check_interval_ms: 1_000,
            min_lite_ttl_ms: 0,
            enable_property_filter: false,
            store_reply_message_enable: false,
            reject_transaction_message: true,
            transaction_timeout_ms: 1_000,
            transaction_check_interval_ms: 2_000,
            transaction_check_max: 3,
            controller_heartbeat_interval_ms: 200,
            controller_heartbeat_timeout_ms: 2_000,
            sync_controller_metadata_period_ms: 500,
            check_sync_state_set_period_ms: 100,
            ha_max_time_slave_not_catchup_ms: 1_000,
            all_ack_in_sync_state_set: false,
            in_sync_replicas: 2,
            slave_timeout_ms: 4_000,
            ..BrokerConfig::default()
                .with_broker_name("broker-b")
                .with_cluster_name("OtherCluster")
                .with_listen(SocketAddr::from(([127, 0, 0, 1], 30020)))
                .with_ha_port(30021)
                .with_namesrv_addr("127.0.0.1:9876;127.0.0.1:9877")
                .with_controller_mode("127.0.0.1:30000;127.0.0.1:30002")
                .with_min_in_sync_replicas(2)
                .with_register_interval_ms(5_000)
                .with_store(
                    StoreConfig::new("/d/store")
                        .with_flush_disk_type(FlushDiskType::SyncFlush)
                        .with_commitlog_segment_size(1 << 20),
                )
        };
        assert_eq!(round_trip(&custom), custom);
        assert!(custom.enable_controller_mode);
        assert_eq!(custom.controller_addr, "127.0.0.1:30000;127.0.0.1:30002");
        assert_eq!(custom.min_in_sync_replicas, 2);
        assert_eq!(
            custom.store.store_root,
            std::path::PathBuf::from("/d/store")
        );
        assert_eq!(custom.validate(), Ok(()));
        assert_eq!(custom.store.validate().ok(), Some(()));

        // The keys written are ours, never an alias, and an unset address is left out.
        let text = toml::to_string(&custom).expect("serializes");
        assert!(text.contains("min_in_sync_replicas = 2"), "{text}");
        assert!(text.contains("flush_disk_type = \"SYNC_FLUSH\""), "{text}");
        let keys: toml::Table = toml::from_str(&toml::to_string(&default).expect("ser")).unwrap();
        assert!(!keys.contains_key("advertised_addr"));
        assert!(!keys.contains_key("cluster_secret"));
        assert!(keys.contains_key("store"));
    }

    #[test]
    fn broker_ips_are_bare_ips_as_in_rocketmq_or_ip_and_port() {
        // RocketMQ's form: IPs, the ports are the listening ones.
        let c: BrokerConfig = toml::from_str(
            "listen = \"0.0.0.0:30911\"\nha_port = 30912\nbrokerIP1 = \"10.0.0.5\"\n\
             brokerIP2 = \"10.0.1.5\"\n",
        )
        .expect("parses");
        assert_eq!(c.advertised_addr, Some("10.0.0.5:0".parse().expect("addr")));
        assert_eq!(
            c.advertised_for(30911),
            "10.0.0.5:30911".parse().expect("addr")
        );
        let remoting = c.advertised_for(30911);
        assert_eq!(
            c.ha_advertised_for(remoting, 30912),
            "10.0.1.5:30912".parse().expect("addr")
        );
        // Written back as bare IPs, read back the same.
        let text = toml::to_string(&c).expect("serializes");
        assert!(text.contains("advertised_addr = \"10.0.0.5\""), "{text}");
        assert!(text.contains("ha_advertised_addr = \"10.0.1.5\""), "{text}");
        assert_eq!(round_trip(&c), c);
        // Our older form, IP:port, under either key: the port is kept (a forwarded port).
        let c: BrokerConfig = toml::from_str(
            "advertised_addr = \"203.0.113.9:40911\"\nbrokerIP2 = \"[::1]:40912\"\n",
        )
        .expect("parses");
        assert_eq!(
            c.advertised_for(10911),
            "203.0.113.9:40911".parse().expect("addr")
        );
        assert_eq!(
            c.ha_advertised_for(c.advertised_for(10911), 10912),
            "[::1]:40912".parse().expect("addr")
        );
        assert_eq!(round_trip(&c), c);
        // Bracketed IPv6 as RocketMQ normalises it; empty is unset.
        let c: BrokerConfig =
            toml::from_str("brokerIP1 = \"[fd00::5]\"\nbrokerIP2 = \"\"\n").expect("parses");
        assert_eq!(
            c.advertised_for(10911),
            "[fd00::5]:10911".parse().expect("addr")
        );
        assert_eq!(c.ha_advertised_addr, None);
        // Without them: the listen IP, loopback for an unspecified one; HA follows brokerIP1.
        let c = BrokerConfig::default();
        assert_eq!(
            c.advertised_for(10911),
            "127.0.0.1:10911".parse().expect("addr")
        );
        let c = BrokerConfig::default().with_listen("127.0.0.3:0".parse().expect("addr"));
        assert_eq!(
            c.advertised_for(31000),
            "127.0.0.3:31000".parse().expect("addr")
        );
        assert_eq!(
            c.ha_advertised_for(c.advertised_for(31000), 31001),
            "127.0.0.3:31001".parse().expect("addr")
        );
        // A host name is not an IP: refused with the key and the forms.
        let err = toml::from_str::<BrokerConfig>("brokerIP1 = \"broker-0.example\"\n")
            .expect_err("a name");
        assert!(
            err.to_string().contains("expected an IP address (10.0.0.5"),
            "{err}"
        );
    }

    #[test]
    fn the_addresses_checked_at_start_name_their_keys_and_peers() {
        use rocketraft_common::advertise::Peer;
        let c = BrokerConfig::default().with_namesrv_addr("10.0.0.1:9876;10.0.0.2:9876");
        let (addresses, peers) = c.advertised_addresses();
        assert_eq!(addresses.len(), 1);
        assert_eq!(addresses[0].key, "brokerIP1 (advertised_addr)");
        assert_eq!(addresses[0].addr, "127.0.0.1:10911".parse().expect("addr"));
        assert_eq!(
            addresses[0].derived.as_deref(),
            Some("not set, taken from listen 0.0.0.0:10911")
        );
        assert_eq!(
            peers,
            vec![
                Peer::new("namesrvAddr", "10.0.0.1:9876"),
                Peer::new("namesrvAddr", "10.0.0.2:9876"),
            ]
        );
        // The NameServers are elsewhere: the default advertised address is refused.
        let err = rocketraft_common::advertise::check_all(&addresses, &peers)
            .expect_err("loopback toward 10.0.0.1");
        assert!(
            err.to_string().contains("namesrvAddr names 10.0.0.1:9876"),
            "{err}"
        );
        // Controller mode adds the HA address and the controllers.
        let c = BrokerConfig {
            advertised_addr: Some("127.0.0.2:0".parse().expect("addr")),
            ..BrokerConfig::default()
                .with_namesrv_addr("127.0.0.1:9876")
                .with_controller_mode("127.0.0.1:9878")
        };
        let (addresses, peers) = c.advertised_addresses();
        assert_eq!(addresses[0].addr, "127.0.0.2:10911".parse().expect("addr"));
        assert_eq!(addresses[0].derived, None);
        assert_eq!(addresses[1].key, "brokerIP2 (ha_advertised_addr)");
        assert_eq!(addresses[1].addr, "127.0.0.2:10912".parse().expect("addr"));
        assert_eq!(peers[1], Peer::new("controllerAddr", "127.0.0.1:9878"));
        assert_eq!(
            rocketraft_common::advertise::check_all(&addresses, &peers),
            Ok(())
        );
    }

    #[test]
    fn the_cluster_secret_is_read_written_and_never_shown() {
        let secret = ClusterSecret::new("a-secret-of-the-cluster").expect("long enough");
        let config = BrokerConfig::default().with_cluster_secret(secret.clone());
        assert_eq!(round_trip(&config), config);
        let text = toml::to_string(&config).expect("serializes");
        assert!(
            text.contains("cluster_secret = \"a-secret-of-the-cluster\""),
            "{text}"
        );
        assert!(!format!("{config:?}").contains(secret.expose()));
        assert_eq!(config.internal_client_config().cluster_secret, Some(secret));
        // Absent: none; too short: refused with the reason.
        let plain: BrokerConfig = toml::from_str("broker_name = \"b\"").expect("parses");
        assert_eq!(plain.cluster_secret, None);
        let weak = toml::from_str::<BrokerConfig>("cluster_secret = \"short\"")
            .expect_err("a 5-character secret is refused");
        assert!(weak.to_string().contains("at least 16"), "{weak}");
    }
}
