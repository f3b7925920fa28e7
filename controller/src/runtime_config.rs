//! GET_CONTROLLER_CONFIG (1010) and UPDATE_CONTROLLER_CONFIG (1009) as RocketMQ's
//! `ControllerRequestProcessor` serves them: the configuration as properties text, and an update
//! from properties text, refused with NO_PERMISSION "Can not update config in black list." when
//! it names a key of the `configBlackList` (`configBlackList`, `configStorePath`,
//! `rocketmqHome`).
//!
//! Where we differ on purpose: RocketMQ's `Configuration.update` sets whatever it is given,
//! including keys that only take effect at start (and unknown ones). Here an update is applied
//! all or nothing; only the settings the running controller reads again take it
//! ([`LiveSettings`]); every other setting is refused by name (NO_PERMISSION), and a key that is
//! no setting at all is refused (INVALID_PARAMETER), so an operator's typo never looks applied.
//! As in RocketMQ, an update changes the controller it was sent to (each controller has its own
//! configuration), and it lasts until that controller restarts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rocketraft_common::properties::{self, Entry, Schema};
use rocketraft_remoting::runtime_config::{sort_update, RuntimeKeys};
use rocketraft_remoting::{response_code, Refusal};
use serde_json::Value;

use crate::service::ControllerConfig;

/// RocketMQ's `configBlackList` default plus the keys `ControllerRequestProcessor` always adds.
pub const BLACK_LIST: &[&str] = &["configBlackList", "configStorePath", "rocketmqHome"];

/// The smallest and largest scan interval an update may set (ms).
pub const SCAN_INTERVAL_RANGE: std::ops::RangeInclusive<u64> = 50..=3_600_000;

/// The settings that change while the controller runs: (RocketMQ's key, the field's name).
/// - `enableElectUncleanMaster`: read by every election;
/// - `notifyBrokerRoleChanged`: read after every election;
/// - `scanNotActiveBrokerInterval`: the scanner's period, from its next round;
/// - `stale_reads`: how the next GET_REPLICA_INFO / GET_SYNC_STATE_DATA is read.
///
/// `heartbeat_timeout_ms` is not among them: brokers' role leases and a new leader's wait
/// before it elects are derived from it on every controller (docs/safety.md), so changing it on
/// one running controller could let two masters overlap.
const LIVE: &[(&str, &str)] = &[
    ("enableElectUncleanMaster", "enable_elect_unclean_master"),
    ("notifyBrokerRoleChanged", "notify_broker_role_changed"),
    ("scanNotActiveBrokerInterval", "scan_interval_ms"),
    ("stale_reads", "stale_reads"),
];

/// Fields never answered.
const SECRET_FIELDS: &[&str] = &["cluster_secret"];

/// The live values of the settings [`LIVE`] names; the rest of the configuration is fixed at
/// start.
#[derive(Debug)]
pub struct LiveSettings {
    enable_elect_unclean_master: AtomicBool,
    notify_broker_role_changed: AtomicBool,
    scan_interval_ms: AtomicU64,
    stale_reads: AtomicBool,
}

/// One consistent set of live values (what an update computes before it applies them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Values {
    enable_elect_unclean_master: bool,
    notify_broker_role_changed: bool,
    scan_interval_ms: u64,
    stale_reads: bool,
}

impl LiveSettings {
    pub fn new(config: &ControllerConfig) -> Self {
        LiveSettings {
            enable_elect_unclean_master: AtomicBool::new(config.enable_elect_unclean_master),
            notify_broker_role_changed: AtomicBool::new(config.notify_broker_role_changed),
            scan_interval_ms: AtomicU64::new(config.scan_interval_ms),
            stale_reads: AtomicBool::new(config.stale_reads),
        }
    }

    pub fn enable_elect_unclean_master(&self) -> bool {
        self.enable_elect_unclean_master.load(Ordering::Acquire)
    }

    pub fn notify_broker_role_changed(&self) -> bool {
        self.notify_broker_role_changed.load(Ordering::Acquire)
    }

    /// The scanner's period (ms), at least 50.
    pub fn scan_interval_ms(&self) -> u64 {
        self.scan_interval_ms.load(Ordering::Acquire).max(50)
    }

    pub fn stale_reads(&self) -> bool {
        self.stale_reads.load(Ordering::Acquire)
    }

    fn values(&self) -> Values {
        Values {
            enable_elect_unclean_master: self.enable_elect_unclean_master(),
            notify_broker_role_changed: self.notify_broker_role_changed(),
            scan_interval_ms: self.scan_interval_ms.load(Ordering::Acquire),
            stale_reads: self.stale_reads(),
        }
    }

    fn store(&self, v: Values) {
        self.enable_elect_unclean_master
            .store(v.enable_elect_unclean_master, Ordering::Release);
        self.notify_broker_role_changed
            .store(v.notify_broker_role_changed, Ordering::Release);
        self.scan_interval_ms
            .store(v.scan_interval_ms, Ordering::Release);
        self.stale_reads.store(v.stale_reads, Ordering::Release);
    }
}

fn live_field(key: &str) -> Option<&'static str> {
    LIVE.iter()
        .find(|(rocketmq, field)| key == *rocketmq || key == *field)
        .map(|(_, field)| *field)
}

/// The key a field is answered under: RocketMQ's where it has one.
fn answered_key(field: &str) -> &str {
    LIVE.iter()
        .find(|(_, f)| *f == field)
        .map_or(field, |(rocketmq, _)| rocketmq)
}

fn property_value(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The configuration as properties (`Configuration.getAllConfigsFormatString`): every setting,
/// nested tables as `table.key`, the live ones as they are now, no secrets.
pub fn config_properties(
    config: &ControllerConfig,
    live: &LiveSettings,
) -> Result<BTreeMap<String, String>, Refusal> {
    let mut config = config.clone();
    let v = live.values();
    config.enable_elect_unclean_master = v.enable_elect_unclean_master;
    config.notify_broker_role_changed = v.notify_broker_role_changed;
    config.scan_interval_ms = v.scan_interval_ms;
    config.stale_reads = v.stale_reads;
    let Value::Object(fields) = serde_json::to_value(&config)
        .map_err(|e| Refusal::system_error(format!("encode the controller config: {e}")))?
    else {
        return Err(Refusal::system_error(
            "the controller config is not a table",
        ));
    };
    let mut out = BTreeMap::new();
    for (name, value) in fields {
        if SECRET_FIELDS.contains(&name.as_str()) {
            continue;
        }
        match value {
            Value::Object(table) => {
                for (key, inner) in table {
                    if SECRET_FIELDS.contains(&key.as_str()) {
                        continue;
                    }
                    if let Some(v) = property_value(&inner) {
                        out.insert(format!("{name}.{key}"), v);
                    }
                }
            }
            other => {
                if let Some(v) = property_value(&other) {
                    out.insert(answered_key(&name).to_string(), v);
                }
            }
        }
    }
    Ok(out)
}

/// GET_CONTROLLER_CONFIG's body: `key=value` lines sorted by key.
pub fn config_text(config: &ControllerConfig, live: &LiveSettings) -> Result<String, Refusal> {
    let mut text = String::new();
    for (key, value) in config_properties(config, live)? {
        text.push_str(&key);
        text.push('=');
        text.push_str(&value);
        text.push('\n');
    }
    Ok(text)
}

/// Whether `key` names a setting of the controller (a field, an alias, or `table.key`).
fn is_setting(key: &str) -> bool {
    let schema = Schema::of::<ControllerConfig>();
    schema.has_value(key)
        || key.split_once('.').is_some_and(|(table, rest)| {
            schema.tables.contains_key(table) && schema.table_has(table, rest)
        })
}

fn invalid_value(e: properties::PropertyError) -> Refusal {
    Refusal::new(response_code::INVALID_PARAMETER, e.to_string())
}

fn apply(values: &mut Values, field: &str, entry: &Entry) -> Result<(), Refusal> {
    match field {
        "enable_elect_unclean_master" => {
            values.enable_elect_unclean_master = properties::value(entry).map_err(invalid_value)?;
        }
        "notify_broker_role_changed" => {
            values.notify_broker_role_changed = properties::value(entry).map_err(invalid_value)?;
        }
        "scan_interval_ms" => {
            let ms: u64 = properties::value(entry).map_err(invalid_value)?;
            if !SCAN_INTERVAL_RANGE.contains(&ms) {
                return Err(Refusal::new(
                    response_code::INVALID_PARAMETER,
                    format!(
                        "{} {ms} is out of range: {}..={} ms",
                        entry.key,
                        SCAN_INTERVAL_RANGE.start(),
                        SCAN_INTERVAL_RANGE.end()
                    ),
                ));
            }
            values.scan_interval_ms = ms;
        }
        "stale_reads" => {
            values.stale_reads = properties::value(entry).map_err(invalid_value)?;
        }
        other => return Err(Refusal::system_error(format!("no runtime setting {other}"))),
    }
    Ok(())
}

/// UPDATE_CONTROLLER_CONFIG (1009): applies the properties text `body` to `live`, all of it or
/// nothing. An empty body changes nothing (SUCCESS, as RocketMQ answers a request without one).
/// Returns the keys applied.
pub fn update(live: &LiveSettings, body: &[u8]) -> Result<Vec<String>, Refusal> {
    let mut values = live.values();
    let rules = RuntimeKeys {
        server: "controller",
        black_list: BLACK_LIST,
        live_keys: "enableElectUncleanMaster, notifyBrokerRoleChanged, \
                    scanNotActiveBrokerInterval, stale_reads",
        start_only: "when the controller starts: change its config file and restart it",
    };
    let Some(props) = sort_update(
        body,
        &rules,
        |entry| live_field(&entry.key).map(|field| apply(&mut values, field, entry)),
        is_setting,
    )?
    else {
        return Ok(Vec::new());
    };
    live.store(values);
    let keys: Vec<String> = props.entries().iter().map(|e| e.key.clone()).collect();
    tracing::info!(?keys, "controller config updated");
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_keys_change_all_or_nothing() {
        let live = LiveSettings::new(&ControllerConfig::default());
        let before = live.values();
        let refused = |body: &str| update(&live, body.as_bytes()).expect_err(body);
        for (body, code, remark) in [
            (
                "scanNotActiveBrokerInterval=1000\nheartbeat_timeout_ms=1",
                response_code::NO_PERMISSION,
                "Can not update config at runtime: heartbeat_timeout_ms",
            ),
            (
                "enableElectUncleanMaster=true\nraft.node_id=7",
                response_code::NO_PERMISSION,
                "raft.node_id",
            ),
            (
                "enableElectUncleanMaster=true\nnoSuchKey=1",
                response_code::INVALID_PARAMETER,
                "no such controller config key: noSuchKey",
            ),
            (
                "enableElectUncleanMaster=maybe",
                response_code::INVALID_PARAMETER,
                "enableElectUncleanMaster",
            ),
            (
                "scanNotActiveBrokerInterval=10",
                response_code::INVALID_PARAMETER,
                "out of range",
            ),
            (
                "stale_reads=true\nrocketmqHome=/x",
                response_code::NO_PERMISSION,
                "Can not update config in black list.",
            ),
        ] {
            let r = refused(body);
            assert_eq!(r.code, code, "{body}: {}", r.remark);
            assert!(r.remark.contains(remark), "{body}: {}", r.remark);
            assert_eq!(live.values(), before, "{body} changed nothing");
        }
        let keys = update(
            &live,
            b"enableElectUncleanMaster=true\nscan_interval_ms=1000\nnotifyBrokerRoleChanged=false",
        )
        .expect("live keys");
        assert_eq!(keys.len(), 3);
        assert!(live.enable_elect_unclean_master());
        assert!(!live.notify_broker_role_changed());
        assert_eq!(live.scan_interval_ms(), 1000);
        let props = config_properties(&ControllerConfig::default(), &live).expect("encode");
        assert_eq!(props["enableElectUncleanMaster"], "true");
        assert_eq!(props["scanNotActiveBrokerInterval"], "1000");
        assert_eq!(props["notifyBrokerRoleChanged"], "false");
        assert_eq!(props["heartbeat_timeout_ms"], "3000");
        assert_eq!(props["raft.node_id"], "1");
    }

    #[test]
    fn secrets_are_never_answered() {
        let secret = rocketraft_common::trust::ClusterSecret::new("0123456789abcdef-secret")
            .expect("secret");
        let mut config = ControllerConfig {
            cluster_secret: Some(secret),
            ..ControllerConfig::default()
        };
        config.raft.cluster_secret = config.cluster_secret.clone();
        let live = LiveSettings::new(&config);
        let text = config_text(&config, &live).expect("encode");
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("scanNotActiveBrokerInterval=250\n"), "{text}");
    }
}
