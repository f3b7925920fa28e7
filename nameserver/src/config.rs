//! NameServer configuration (TOML, with RocketMQ's `NamesrvConfig` names accepted as aliases).

use std::net::SocketAddr;

use rocketraft_controller::ControllerConfig;
use serde::{Deserialize, Serialize};

/// Settings of one NameServer process.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
}

impl Default for NamesrvConfig {
    fn default() -> Self {
        NamesrvConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 9876)),
            broker_expire_ms: 120_000,
            scan_interval_ms: 5_000,
            enable_controller_in_namesrv: false,
            controller: ControllerConfig::default(),
        }
    }
}

impl NamesrvConfig {
    /// Rejects values that would make the NameServer misbehave, with the fix in the message.
    pub fn validate(&self) -> Result<(), String> {
        if self.broker_expire_ms <= 0 {
            return Err(format!(
                "broker_expire_ms = {} must be positive (RocketMQ's default is 120000)",
                self.broker_expire_ms
            ));
        }
        if self.scan_interval_ms == 0 {
            return Err("scan_interval_ms must be at least 1 (default 5000)".to_string());
        }
        Ok(())
    }
}
