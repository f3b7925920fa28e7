//! NameServer configuration (TOML, with RocketMQ's `NamesrvConfig` names accepted as aliases).

use std::net::SocketAddr;

use rocketraft_common::metrics::RpcMetrics;
use rocketraft_common::trust::ClusterSecret;
use rocketraft_controller::ControllerConfig;
use rocketraft_remoting::auth::{AuthSettings, BadWhitelist, SessionCredentials};
use rocketraft_remoting::limits::{InvalidLimit, ServerLimitsConfig};
use rocketraft_remoting::tls::{ClientTlsConfig, ServerTlsConfig};
use serde::{Deserialize, Serialize};

/// Settings of one NameServer process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamesrvConfig {
    /// Where Remoting clients and brokers connect (`listenPort`, default 9876).
    #[serde(alias = "listenAddr")]
    pub listen: SocketAddr,
    /// A broker that has not re-registered for this long is dropped from routes. Brokers may send
    /// their own value in REGISTER_BROKER (`heartbeatTimeoutMillis`); this is the default.
    #[serde(alias = "brokerExpireMillis")]
    pub broker_expire_ms: i64,
    /// How often the liveness table is scanned (`scanNotActiveBrokerInterval`, 5 s).
    #[serde(alias = "scanNotActiveBrokerInterval")]
    pub scan_interval_ms: u64,
    /// Run a controller inside this process (`enableControllerInNamesrv`, default false): it
    /// answers the controller request codes on the NameServer's port.
    #[serde(alias = "enableControllerInNamesrv")]
    pub enable_controller_in_namesrv: bool,
    /// The embedded controller's settings (its Raft member); used when
    /// `enable_controller_in_namesrv` is set.
    pub controller: ControllerConfig,
    /// Check every Remoting request's signature (`authenticationEnabled`, default false; RocketMQ's
    /// NameServer has no such check). Users and ACLs are the brokers' (see `crate::auth`).
    #[serde(alias = "authenticationEnabled")]
    pub authentication_enabled: bool,
    /// Check every request's resources against the user's ACL (`authorizationEnabled`).
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
    /// A `Super` user known from the config (`initAuthenticationUser`); never logged.
    #[serde(
        alias = "initAuthenticationUser",
        deserialize_with = "rocketraft_remoting::auth::deserialize_credentials"
    )]
    pub init_authentication_user: Option<SessionCredentials>,
    /// What the NameServer signs its user lookups on brokers with, and a `Super` user it accepts
    /// (`innerClientAuthenticationCredentials`); never logged.
    #[serde(
        alias = "innerClientAuthenticationCredentials",
        deserialize_with = "rocketraft_remoting::auth::deserialize_credentials"
    )]
    pub inner_client_authentication_credentials: Option<SessionCredentials>,
    /// The cluster's shared secret (Rocketraft; at least 16 characters). With it, REGISTER_BROKER
    /// and UNREGISTER_BROKER, and the embedded controller's write codes, are served only on
    /// connections that proved it (`rocketraft_remoting::trust`), so nobody else can register a
    /// broker and hijack a route. The embedded controller uses it too unless its own is set.
    pub cluster_secret: Option<ClusterSecret>,
    /// What one peer may cost the Remoting port (`[server_limits]`: connections, request
    /// sizes, buffered bytes, half-sent frames, idle time; see `rocketraft_remoting::limits`).
    pub server_limits: ServerLimitsConfig,
    /// TLS on the Remoting port (`[tls]`: `mode` = disabled / permissive / enforcing,
    /// RocketMQ's `tls.server.mode`; `cert` and `key`, PEM; see `rocketraft_remoting::tls`).
    pub tls: ServerTlsConfig,
    /// TLS on the connections this process opens (the embedded controller's, unless its own
    /// `[controller.tls_client]` is enabled): `[tls_client]` with `enable`, `trust_cert`.
    pub tls_client: ClientTlsConfig,
    /// Where the Remoting server records `rocketmq_rpc_latency`, every code it serves
    /// (the embedded controller's included); set by the process, never in a file; default none.
    #[serde(skip)]
    pub rpc_metrics: Option<RpcMetrics>,
}

impl Default for NamesrvConfig {
    fn default() -> Self {
        NamesrvConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 9876)),
            broker_expire_ms: 120_000,
            scan_interval_ms: 5_000,
            enable_controller_in_namesrv: false,
            controller: ControllerConfig::default(),
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
            rpc_metrics: None,
        }
    }
}

/// Builders over [`Default`], like the other config types':
/// `NamesrvConfig::default().with_listen(addr)`.
impl NamesrvConfig {
    pub fn with_listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }

    /// Serves broker registrations only to servers that prove `secret` ([`Self::cluster_secret`]).
    pub fn with_cluster_secret(mut self, secret: ClusterSecret) -> Self {
        self.cluster_secret = Some(secret);
        self
    }

    /// Records the Remoting server's requests in `rocketmq_rpc_latency`.
    pub fn with_rpc_metrics(mut self, metrics: Option<RpcMetrics>) -> Self {
        self.rpc_metrics = metrics;
        self
    }

    /// Runs `controller` inside this process (`enable_controller_in_namesrv`).
    pub fn with_embedded_controller(mut self, controller: ControllerConfig) -> Self {
        self.enable_controller_in_namesrv = true;
        self.controller = controller;
        self
    }
}

/// A NameServer setting it refuses to start with; the text names the key and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("broker_expire_ms = {0} must be positive (RocketMQ's default is 120000)")]
    BrokerExpire(i64),
    #[error("scan_interval_ms must be at least 1 (default 5000)")]
    ScanInterval,
    #[error(transparent)]
    Whitelist(#[from] BadWhitelist),
    #[error(transparent)]
    ServerLimits(#[from] InvalidLimit),
}

impl NamesrvConfig {
    /// What the Remoting ACL checks (`authentication_enabled`, `authorization_enabled`, the
    /// whitelists); `Cluster` resources name the default cluster.
    pub fn auth_settings(&self) -> Result<AuthSettings, BadWhitelist> {
        AuthSettings::from_keys(
            self.authentication_enabled,
            self.authorization_enabled,
            [
                &self.authentication_whitelist,
                &self.authorization_whitelist,
            ],
            rocketraft_common::consts::DEFAULT_CLUSTER.to_string(),
        )?
        .with_signed_time(
            self.auth_require_signed_timestamp,
            self.auth_signed_timestamp_window_seconds,
        )
    }

    /// Rejects values that would make the NameServer misbehave, with the fix in the message.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.broker_expire_ms <= 0 {
            return Err(ConfigError::BrokerExpire(self.broker_expire_ms));
        }
        if self.scan_interval_ms == 0 {
            return Err(ConfigError::ScanInterval);
        }
        self.auth_settings()?;
        self.server_limits.validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(config: &NamesrvConfig) -> NamesrvConfig {
        let text = toml::to_string(config).expect("serializes");
        toml::from_str(&text).unwrap_or_else(|e| panic!("does not parse back: {e}\n{text}"))
    }

    #[test]
    fn serialized_config_parses_back_identically() {
        let default = NamesrvConfig::default();
        assert_eq!(round_trip(&default), default);
        let controller = ControllerConfig::default()
            .with_listen(SocketAddr::from(([127, 0, 0, 1], 9877)))
            .with_raft(
                ControllerConfig::default()
                    .raft
                    .with_data_dir("/d/namesrv/controller")
                    .with_initial_members([(1, "127.0.0.1:9880".to_string())].into()),
            );
        let custom = NamesrvConfig {
            broker_expire_ms: 30_000,
            scan_interval_ms: 1_000,
            ..NamesrvConfig::default()
                .with_listen(SocketAddr::from(([127, 0, 0, 1], 19876)))
                .with_embedded_controller(controller)
        };
        assert_eq!(round_trip(&custom), custom);
        assert!(custom.enable_controller_in_namesrv);
        assert_eq!(custom.validate(), Ok(()));
    }
}
