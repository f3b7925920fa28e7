//! The management codes mqadmin and dashboards send (`AdminBrokerProcessor` in RocketMQ): who
//! is connected (GET_CONSUMER_CONNECTION_LIST 203, GET_PRODUCER_CONNECTION_LIST 204), who
//! consumes a topic (QUERY_TOPIC_CONSUME_BY_WHO 300), requests relayed to one consumer over the
//! connection it heartbeated on (GET_CONSUMER_RUNNING_INFO 307, CONSUME_MESSAGE_DIRECTLY 309),
//! the broker's configuration (GET_BROKER_CONFIG 26, UPDATE_BROKER_CONFIG 25) and the epochs of
//! its CommitLog (GET_BROKER_EPOCH_CACHE 1007). Bodies are RocketMQ's, written as fastjson
//! writes them ([`rocketraft_common::manage`]); refusals carry RocketMQ's codes and remarks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use rocketraft_common::manage::{
    fastjson, version_desc, Connection, ConsumerConnection, EpochEntry, EpochEntryCache, GroupList,
    ProducerConnection, V3_1_8_SNAPSHOT,
};
use rocketraft_common::message::decode_offset_msg_id;
use rocketraft_common::properties::{self, Entry, Properties, Schema};
use rocketraft_common::protocol::DataVersion;
use rocketraft_common::time::now_ms;
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::runtime_config::{sort_update, RuntimeKeys};
use rocketraft_remoting::{Refusal, RemotingCommand, RemotingError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use super::Handled;
use crate::client_manager::ClientChannel;
use crate::store::{RetentionSettings, StoreConfig};
use crate::BrokerInner;

/// How long a relayed request waits for the client (`Broker2Client.callClient`: 10 s).
pub const RELAY_TIMEOUT: Duration = Duration::from_secs(10);

fn encoded<T: Serialize>(request: &RemotingCommand, body: &T) -> Handled {
    let bytes = fastjson(body).map_err(|e| Refusal::system_error(format!("encode: {e}")))?;
    Ok(request
        .response_to(response_code::SUCCESS, None)
        .with_body(bytes))
}

/// A client's entry in a `connectionSet`.
fn connection(channel: &ClientChannel) -> Connection {
    Connection {
        client_id: channel.client_id.clone(),
        client_addr: channel.connection.peer_addr().to_string(),
        // The registry keeps the name lowercased for the metrics' labels; LanguageCode names
        // are upper case.
        language: channel.language.to_ascii_uppercase(),
        version: channel.version,
    }
}

/// GET_CONSUMER_CONNECTION_LIST (203), header `consumerGroup`: the group's live connections and
/// what its last heartbeat said; CONSUMER_NOT_ONLINE when no client of the group is connected.
pub fn consumer_connections(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let group = request.require_ext("consumerGroup")?;
    let not_online = || {
        Refusal::new(
            response_code::CONSUMER_NOT_ONLINE,
            format!("the consumer group[{group}] not online"),
        )
    };
    let info = inner.clients.group(group).ok_or_else(not_online)?;
    let connection_set: Vec<Connection> = info
        .clients
        .values()
        .filter(|c| !c.connection.is_closed())
        .map(connection)
        .collect();
    if connection_set.is_empty() {
        return Err(not_online());
    }
    encoded(
        request,
        &ConsumerConnection {
            connection_set,
            subscription_table: info.subscriptions,
            consume_type: info.consume_type,
            message_model: info.message_model,
            consume_from_where: info.consume_from_where,
        },
    )
}

/// GET_PRODUCER_CONNECTION_LIST (204), header `producerGroup`: the group's live connections;
/// SYSTEM_ERROR "not exist" when none.
pub fn producer_connections(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let group = request.require_ext("producerGroup")?;
    let connection_set: Vec<Connection> = inner
        .clients
        .producer_channels(group)
        .iter()
        .filter(|c| !c.connection.is_closed())
        .map(connection)
        .collect();
    if connection_set.is_empty() {
        return Err(Refusal::system_error(format!(
            "the producer group[{group}] not exist"
        )));
    }
    encoded(request, &ProducerConnection { connection_set })
}

/// QUERY_TOPIC_CONSUME_BY_WHO (300), header `topic`: the groups with online consumers
/// subscribed to the topic, and the groups with committed offsets on it
/// (`ConsumerManager.queryTopicConsumeByWho` + `ConsumerOffsetManager.whichGroupByTopic`).
pub fn topic_consumed_by(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let topic = request.require_ext("topic")?;
    let mut group_list: BTreeSet<String> = inner
        .clients
        .groups_subscribed_to(topic)
        .into_iter()
        .collect();
    for (group, offset_topic, _, _) in inner.metadata.all_offsets()? {
        if offset_topic == topic {
            group_list.insert(group);
        }
    }
    encoded(request, &GroupList { group_list })
}

/// GET_CONSUMER_RUNNING_INFO (307), headers `consumerGroup`, `clientId`, `jstackEnable`:
/// relayed to the client, whose answer (a `ConsumerRunningInfo`) is the response.
pub async fn consumer_running_info(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let group = request.require_ext("consumerGroup")?;
    let client_id = request.require_ext("clientId")?;
    call_consumer(
        inner,
        request_code::GET_CONSUMER_RUNNING_INFO,
        request,
        request.body.clone(),
        group,
        client_id,
    )
    .await
}

/// CONSUME_MESSAGE_DIRECTLY (309), headers `consumerGroup`, `clientId`, `msgId` (an offset
/// message id of this broker), `topic`: the message is read from the CommitLog and handed to
/// the client with this broker's `brokerName` and the topic's and group's system flags; the
/// client's answer (a `ConsumeMessageDirectlyResult`) is the response.
pub async fn consume_message_directly(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let group = request.require_ext("consumerGroup")?;
    let client_id = request.require_ext("clientId")?;
    let msg_id = request.require_ext("msgId")?;
    let mut relayed = request.clone();
    relayed.set_ext("brokerName", &inner.config.broker_name);
    if let Some(topic) = request.ext("topic").filter(|t| !t.is_empty()) {
        if let Some(config) = inner.topics.get(topic) {
            relayed.set_ext("topicSysFlag", config.topic_sys_flag);
        }
    }
    if let Some(raw) = inner.metadata.get_subscription_group(group)? {
        let flag = serde_json::from_slice::<Value>(&raw)
            .ok()
            .and_then(|v| v["groupSysFlag"].as_i64())
            .unwrap_or(0);
        relayed.set_ext("groupSysFlag", flag);
    }
    let (_, offset) = decode_offset_msg_id(msg_id)
        .map_err(|e| Refusal::system_error(format!("msgId {msg_id:?}: {e}")))?;
    let record = super::admin::confirmed_record(inner, offset)?;
    call_consumer(
        inner,
        request_code::CONSUME_MESSAGE_DIRECTLY,
        &relayed,
        record,
        group,
        client_id,
    )
    .await
}

/// `AdminBrokerProcessor.callConsumer`: sends `code` with the request's header fields and
/// `body` to the client's own connection and answers with the client's response.
async fn call_consumer(
    inner: &BrokerInner,
    code: i32,
    request: &RemotingCommand,
    body: bytes::Bytes,
    group: &str,
    client_id: &str,
) -> Handled {
    let channel = inner
        .clients
        .group(group)
        .and_then(|info| info.clients.get(client_id).cloned())
        .filter(|c| !c.connection.is_closed())
        .ok_or_else(|| {
            Refusal::system_error(format!("The Consumer <{group}> <{client_id}> not online"))
        })?;
    if channel.version < V3_1_8_SNAPSHOT {
        return Err(Refusal::system_error(format!(
            "The Consumer <{client_id}> Version <{}> too low to finish, please upgrade it to V3_1_8_SNAPSHOT",
            version_desc(channel.version)
        )));
    }
    let mut relayed = RemotingCommand::request(code).with_body(body);
    relayed.ext_fields = request.ext_fields.clone();
    match channel.connection.invoke(relayed, RELAY_TIMEOUT).await {
        Ok(answer) => Ok(answer),
        Err(e @ RemotingError::Timeout { .. }) => Err(Refusal::new(
            response_code::CONSUME_MSG_TIMEOUT,
            format!("consumer <{group}> <{client_id}> Timeout: {e}"),
        )),
        Err(e) => Err(Refusal::system_error(format!(
            "invoke consumer <{group}> <{client_id}> Exception: {e}"
        ))),
    }
}

/// GET_BROKER_EPOCH_CACHE (1007): the epochs of this broker's CommitLog (each one's end is the
/// next one's start; the last is open, `Long.MAX_VALUE`) and the log's end. Controller mode
/// only, as in RocketMQ.
pub fn epoch_cache(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let Some(replicas) = &inner.replicas else {
        return Err(Refusal::system_error(
            "this request only for controllerMode ",
        ));
    };
    let entries = inner.store.epoch_entries();
    let epoch_list = entries
        .iter()
        .enumerate()
        .map(|(i, e)| EpochEntry {
            epoch: e.epoch,
            start_offset: e.start_offset,
            end_offset: entries
                .get(i + 1)
                .map_or(i64::MAX, |next| next.start_offset),
        })
        .collect();
    encoded(
        request,
        &EpochEntryCache {
            cluster_name: inner.config.cluster_name.clone(),
            broker_name: inner.config.broker_name.clone(),
            broker_id: replicas.broker_id(),
            epoch_list,
            max_offset: inner.store.max_phy_offset(),
        },
    )
}

// ---------------------------------------------------------------------------------------------
// GET_BROKER_CONFIG / UPDATE_BROKER_CONFIG

/// The broker's configuration version (RocketMQ's `Configuration.dataVersion`): the response
/// header `version` of GET_BROKER_CONFIG, bumped by every applied update. Its lock also makes
/// updates one at a time (RocketMQ's `synchronized updateBrokerConfig`).
pub struct ConfigVersion(parking_lot::Mutex<DataVersion>);

impl Default for ConfigVersion {
    fn default() -> Self {
        ConfigVersion(parking_lot::Mutex::new(DataVersion {
            timestamp: now_ms(),
            ..DataVersion::default()
        }))
    }
}

/// Fields never answered: secrets (RocketMQ would print them; we do not).
const SECRET_FIELDS: &[&str] = &[
    "cluster_secret",
    "init_authentication_user",
    "inner_client_authentication_credentials",
];

/// The keys `broker.conf` takes that [`crate::properties`] interprets itself (not fields).
const INTERPRETED_KEYS: &[&str] = &[
    "listenPort",
    "bindAddress",
    "brokerIP1",
    "brokerIP2",
    "brokerRole",
    "aclEnable",
    "enableDLegerCommitLog",
];

/// RocketMQ's `configBlackList` default: keys an update may never name.
const BLACK_LIST: &[&str] = &["configBlackList", "brokerConfigPath"];

/// Each field's RocketMQ key, from the serde aliases the `broker.conf` reader matches keys
/// against ([`properties::load`]): for a field name `p` and a key `a` of the struct's schema,
/// `a` is an alias of `p` when a map holding both makes serde report a duplicate `p`.
/// Computed once per type from its default value.
fn rocketmq_keys<T: Serialize + DeserializeOwned + Default>() -> BTreeMap<String, String> {
    let Ok(Value::Object(fields)) = serde_json::to_value(T::default()) else {
        return BTreeMap::new();
    };
    let mut keys = BTreeMap::new();
    for candidate in Schema::of::<T>().fields {
        if fields.contains_key(candidate) {
            continue;
        }
        for (name, value) in &fields {
            let mut both = Map::new();
            both.insert(name.clone(), value.clone());
            both.insert(candidate.to_string(), value.clone());
            let duplicate = format!("duplicate field `{name}`");
            if serde_json::from_value::<T>(Value::Object(both))
                .is_err_and(|e| e.to_string().starts_with(&duplicate))
            {
                keys.insert(name.clone(), candidate.to_string());
                break;
            }
        }
    }
    keys
}

struct KeyTables {
    broker: BTreeMap<String, String>,
    store: BTreeMap<String, String>,
    limits: BTreeMap<String, String>,
}

fn key_tables() -> &'static KeyTables {
    static TABLES: OnceLock<KeyTables> = OnceLock::new();
    TABLES.get_or_init(|| KeyTables {
        broker: rocketmq_keys::<crate::BrokerConfig>(),
        store: rocketmq_keys::<StoreConfig>(),
        limits: rocketmq_keys::<rocketraft_remoting::limits::ServerLimitsConfig>(),
    })
}

/// A JSON value as a properties value (`None` for null, as `properties2String` skips nulls).
fn property_value(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Writes the fields of `table` (a serialized config struct) under their RocketMQ keys (or
/// their own names when RocketMQ has none); nested tables as `prefix.key`.
fn flatten_into(
    out: &mut BTreeMap<String, String>,
    table: &Map<String, Value>,
    keys: &BTreeMap<String, String>,
    prefix: &str,
) {
    for (name, value) in table {
        if let Value::Object(inner) = value {
            let nested = format!("{prefix}{name}.");
            flatten_into(out, inner, &BTreeMap::new(), &nested);
            continue;
        }
        let key = keys
            .get(name)
            .map_or_else(|| format!("{prefix}{name}"), |k| k.clone());
        if let Some(v) = property_value(value) {
            out.insert(key, v);
        }
    }
}

/// The broker's configuration as RocketMQ's properties (`Configuration.getAllConfigsFormatString`):
/// every setting under its `broker.conf` key, the store's and the server limits' flat as
/// RocketMQ writes them, the retention settings as they are now, the keys the reader
/// interprets (`listenPort`, `bindAddress`, `brokerIP1`, `brokerIP2`, `brokerRole`) from the
/// running broker, and no secrets.
pub fn config_properties(inner: &BrokerInner) -> Result<BTreeMap<String, String>, Refusal> {
    let encode_error = |e: serde_json::Error| Refusal::system_error(format!("encode: {e}"));
    let mut config = inner.config.clone();
    config.store = config
        .store
        .with_retention(&inner.store.retention_settings());
    let Value::Object(mut fields) = serde_json::to_value(&config).map_err(encode_error)? else {
        return Err(Refusal::system_error("the broker config is not a table"));
    };
    for secret in SECRET_FIELDS {
        fields.remove(*secret);
    }
    let tables = key_tables();
    let mut out = BTreeMap::new();
    for (table, keys) in [("store", &tables.store), ("server_limits", &tables.limits)] {
        if let Some(Value::Object(flat)) = fields.remove(table) {
            flatten_into(&mut out, &flat, keys, "");
        }
    }
    // The keys the reader interprets, from what the broker runs with.
    fields.remove("listen");
    fields.remove("advertised_addr");
    let listen = config.listen;
    let port = match listen.port() {
        0 => inner.advertised.port(),
        bound => bound,
    };
    out.insert("listenPort".into(), port.to_string());
    out.insert("bindAddress".into(), listen.ip().to_string());
    out.insert("brokerIP1".into(), inner.advertised.ip().to_string());
    if let Some(ha) = fields.remove("ha_advertised_addr").and_then(|v| {
        v.as_str()
            .and_then(|s| crate::config::ip_or_addr::parse(s).ok())
    }) {
        out.insert("brokerIP2".into(), ha.ip().to_string());
    }
    let mut broker_id = config.broker_id;
    match (&inner.ha, &inner.replicas) {
        (Some(ha), Some(replicas)) => {
            broker_id = replicas.broker_id();
            match ha.role() {
                crate::ha::Role::Master => {
                    out.insert("brokerRole".into(), "SYNC_MASTER".into());
                }
                crate::ha::Role::Slave => {
                    out.insert("brokerRole".into(), "SLAVE".into());
                }
                crate::ha::Role::None => {}
            }
        }
        _ => {
            out.insert("brokerRole".into(), "ASYNC_MASTER".into());
        }
    }
    fields.insert("broker_id".into(), Value::from(broker_id));
    flatten_into(&mut out, &fields, &tables.broker, "");
    Ok(out)
}

/// GET_BROKER_CONFIG (26): the configuration as `key=value` lines sorted by key
/// ([`config_properties`]), and its version (`version` header, a DataVersion in JSON).
pub fn broker_config(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let mut text = String::new();
    for (key, value) in config_properties(inner)? {
        text.push_str(&key);
        text.push('=');
        text.push_str(&value);
        text.push('\n');
    }
    let version = fastjson(&*inner.config_version.0.lock())
        .map_err(|e| Refusal::system_error(format!("encode: {e}")))?;
    Ok(request
        .response_to(response_code::SUCCESS, None)
        .with_ext("version", String::from_utf8_lossy(&version))
        .with_body(text.into_bytes()))
}

/// The settings that change at runtime: (RocketMQ's key, the field's own name), in the order
/// a persisted set is applied (`fileReservedTime` clears `file_reserved_time_secs`, so it
/// comes first).
const LIVE: &[(&str, &str)] = &[
    ("fileReservedTime", "file_reserved_time"),
    ("file_reserved_time_secs", "file_reserved_time_secs"),
    ("deleteWhen", "delete_when"),
    ("diskMaxUsedSpaceRatio", "disk_max_used_space_ratio"),
    (
        "diskSpaceCleanForciblyRatio",
        "disk_space_clean_forcibly_ratio",
    ),
    (
        "diskSpaceWarningLevelRatio",
        "disk_space_warning_level_ratio",
    ),
    ("cleanFileForciblyEnable", "clean_file_forcibly_enable"),
];

/// How an update may name a retention setting: RocketMQ's key or the field's own name.
fn live_key(key: &str) -> Option<&'static str> {
    LIVE.iter()
        .find(|(rocketmq, field)| key == *rocketmq || key == *field)
        .map(|(_, field)| *field)
}

/// The key a runtime setting is persisted under (RocketMQ's), and its place in [`LIVE`].
fn persisted_key(field: &str) -> Option<(usize, &'static str)> {
    LIVE.iter()
        .position(|(_, f)| *f == field)
        .map(|i| (i, LIVE[i].0))
}

/// Whether `key` names a setting of this broker (a field, an alias, a key of a flat table, or
/// a key the reader interprets), changeable at runtime or not.
fn is_setting(key: &str) -> bool {
    if INTERPRETED_KEYS.contains(&key) {
        return true;
    }
    let schema = Schema::of::<crate::BrokerConfig>();
    schema.has_value(key)
        || crate::properties::FLAT_TABLES
            .iter()
            .any(|table| schema.table_has(table, key))
        || key.split_once('.').is_some_and(|(table, rest)| {
            schema.tables.contains_key(table) && schema.table_has(table, rest)
        })
}

fn invalid_value(e: properties::PropertyError) -> Refusal {
    Refusal::new(response_code::INVALID_PARAMETER, e.to_string())
}

/// Applies one retention key to `settings`.
fn apply_live(settings: &mut RetentionSettings, field: &str, entry: &Entry) -> Result<(), Refusal> {
    match field {
        "file_reserved_time" => {
            settings.file_reserved_time = properties::value(entry).map_err(invalid_value)?;
            // RocketMQ's key says hours; our seconds override would hide the change.
            settings.file_reserved_time_secs = None;
        }
        "file_reserved_time_secs" => {
            settings.file_reserved_time_secs =
                Some(properties::value(entry).map_err(invalid_value)?);
        }
        "delete_when" => settings.delete_when = entry.value.trim().to_string(),
        "disk_max_used_space_ratio" => {
            settings.disk_max_used_space_ratio = properties::value(entry).map_err(invalid_value)?;
        }
        "disk_space_clean_forcibly_ratio" => {
            settings.disk_space_clean_forcibly_ratio =
                properties::value(entry).map_err(invalid_value)?;
        }
        "disk_space_warning_level_ratio" => {
            settings.disk_space_warning_level_ratio =
                properties::value(entry).map_err(invalid_value)?;
        }
        "clean_file_forcibly_enable" => {
            settings.clean_file_forcibly_enable =
                properties::value(entry).map_err(invalid_value)?;
        }
        other => return Err(Refusal::system_error(format!("no runtime setting {other}"))),
    }
    Ok(())
}

/// The file under the store root that keeps the settings changed at runtime
/// (UPDATE_BROKER_CONFIG), as properties text under RocketMQ's keys. RocketMQ rewrites the
/// broker's config file (`Configuration.persist`); we leave the operator's file alone and apply
/// this one over it at start ([`apply_persisted_config`]).
pub const RUNTIME_CONFIG_FILE: &str = "config/broker-runtime.properties";

fn runtime_config_path(store_root: &Path) -> PathBuf {
    store_root.join(RUNTIME_CONFIG_FILE)
}

/// Escapes a key or value for a properties file (`Properties.store`'s escapes).
fn escape_property(text: &str, out: &mut String) {
    for (i, c) in text.chars().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '=' | ':' | '#' | '!' => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == 0 => out.push_str("\\ "),
            c => out.push(c),
        }
    }
}

/// The persisted runtime settings; none when there is no file yet.
fn read_runtime_config(path: &Path) -> Result<Vec<Entry>, String> {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| "it is not UTF-8".to_string())?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.to_string()),
    };
    let props = Properties::parse(&text).map_err(|e| e.to_string())?;
    Ok(props.entries().to_vec())
}

/// Writes `entries` (RocketMQ key, value) to `path` atomically: a temporary file, synced, then
/// renamed over the old one, and the directory synced.
fn write_runtime_config(path: &Path, entries: &[(&str, &str)]) -> std::io::Result<()> {
    use std::io::Write;
    let mut text = String::from(
        "# Broker settings changed at runtime (UPDATE_BROKER_CONFIG); applied over the config \
         file at start.\n",
    );
    for (key, value) in entries {
        escape_property(key, &mut text);
        text.push('=');
        escape_property(value, &mut text);
        text.push('\n');
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("properties.tmp");
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Merges the keys of an applied update into the persisted runtime settings: each under
/// RocketMQ's key, the newest value winning; `fileReservedTime` drops a persisted
/// `file_reserved_time_secs` (the update cleared it).
fn persist_runtime_keys(store_root: &Path, props: &Properties) -> Result<(), Refusal> {
    let path = runtime_config_path(store_root);
    let failed = |what: String| {
        tracing::error!(path = %path.display(), error = %what, "cannot persist the broker config");
        Refusal::system_error(format!(
            "cannot persist the update to {}: {what}; nothing was changed",
            path.display()
        ))
    };
    let mut merged: BTreeMap<usize, (&'static str, String)> = BTreeMap::new();
    for entry in read_runtime_config(&path).map_err(&failed)? {
        if let Some((place, key)) = live_key(&entry.key).and_then(persisted_key) {
            merged.insert(place, (key, entry.value));
        }
    }
    for entry in props.entries() {
        let Some(field) = live_key(&entry.key) else {
            continue;
        };
        if field == "file_reserved_time" {
            if let Some((place, _)) = persisted_key("file_reserved_time_secs") {
                merged.remove(&place);
            }
        }
        if let Some((place, key)) = persisted_key(field) {
            merged.insert(place, (key, entry.value.trim().to_string()));
        }
    }
    let entries: Vec<(&str, &str)> = merged.values().map(|(k, v)| (*k, v.as_str())).collect();
    write_runtime_config(&path, &entries).map_err(|e| failed(e.to_string()))
}

/// At start: applies the settings an earlier UPDATE_BROKER_CONFIG persisted under the store
/// root ([`RUNTIME_CONFIG_FILE`]) over `config`'s (from its config file), logging which keys
/// came from there. A key that no longer changes at runtime is ignored with a warning; a file
/// that cannot be read or a value that does not parse stops the start, naming the file.
pub fn apply_persisted_config(config: &mut crate::BrokerConfig) -> anyhow::Result<()> {
    let path = runtime_config_path(&config.store.store_root);
    let entries = read_runtime_config(&path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e} (fix or remove it)", path.display()))?;
    if entries.is_empty() {
        return Ok(());
    }
    let mut ordered = Vec::new();
    for entry in entries {
        match live_key(&entry.key).and_then(|field| persisted_key(field).map(|(i, _)| (i, field))) {
            Some((place, field)) => ordered.push((place, field, entry)),
            None => tracing::warn!(
                path = %path.display(),
                key = entry.key,
                "ignoring a persisted broker setting that does not change at runtime"
            ),
        }
    }
    ordered.sort_by_key(|(place, ..)| *place);
    let mut settings = config.store.retention();
    let mut applied = Vec::new();
    for (_, field, entry) in ordered {
        apply_live(&mut settings, field, &entry)
            .map_err(|r| anyhow::anyhow!("{}: {} (fix or remove it)", path.display(), r.remark))?;
        applied.push(entry.key);
    }
    config.store = config.store.clone().with_retention(&settings);
    tracing::info!(
        path = %path.display(),
        keys = ?applied,
        "broker settings changed at runtime applied over the config file"
    );
    Ok(())
}

/// UPDATE_BROKER_CONFIG (25): the body is properties text (`key=value` lines). All of them are
/// applied, or none:
///
/// - the keys that change while the broker runs are the store's retention settings, read by
///   the cleaner at its next round: `fileReservedTime` (hours; it also clears our
///   `file_reserved_time_secs`), `file_reserved_time_secs`, `deleteWhen`,
///   `diskMaxUsedSpaceRatio`, `diskSpaceCleanForciblyRatio`, `diskSpaceWarningLevelRatio` and
///   `cleanFileForciblyEnable` (or their field names, `delete_when`, ...); the new values must
///   pass the store's config check (percentages 0..=100, `deleteWhen` hours 00..23), else
///   INVALID_PARAMETER naming the key;
/// - RocketMQ's black-listed keys (`configBlackList`, `brokerConfigPath`) are refused as
///   RocketMQ refuses them: NO_PERMISSION, "Can not update config in black list.";
/// - every other setting of the broker (names, addresses, ports, the store's layout, flush
///   policy, ACL, ...) takes effect only at start: refused with NO_PERMISSION naming the keys;
/// - keys that are no setting here: INVALID_PARAMETER naming them (RocketMQ ignores them
///   silently; an operator's typo should not look applied).
///
/// An applied update bumps the config version (GET_BROKER_CONFIG's `version`) and is persisted
/// under the store root ([`RUNTIME_CONFIG_FILE`]) before it takes effect, so it survives a
/// restart; when it cannot be written, SYSTEM_ERROR and nothing changes.
pub fn update_broker_config(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let mut version = inner.config_version.0.lock();
    let mut settings = inner.store.retention_settings();
    let rules = RuntimeKeys {
        server: "broker",
        black_list: BLACK_LIST,
        live_keys: "fileReservedTime, file_reserved_time_secs, deleteWhen, \
                    diskMaxUsedSpaceRatio, diskSpaceCleanForciblyRatio, \
                    diskSpaceWarningLevelRatio, cleanFileForciblyEnable",
        start_only: "when the broker starts: change the config file and restart",
    };
    let Some(props) = sort_update(
        &request.body,
        &rules,
        |entry| live_key(&entry.key).map(|field| apply_live(&mut settings, field, entry)),
        is_setting,
    )?
    else {
        return Ok(request.response_to(response_code::SUCCESS, None));
    };
    let invalid =
        |e: crate::store::StoreError| Refusal::new(response_code::INVALID_PARAMETER, e.to_string());
    inner
        .config
        .store
        .clone()
        .with_retention(&settings)
        .validate()
        .map_err(invalid)?;
    persist_runtime_keys(&inner.config.store.store_root, &props)?;
    inner.store.set_retention(settings).map_err(invalid)?;
    version.timestamp = now_ms();
    version.counter += 1;
    tracing::info!(keys = ?props.entries().iter().map(|e| &e.key).collect::<Vec<_>>(), "broker config updated");
    Ok(request.response_to(response_code::SUCCESS, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rocketmq_keys_come_from_the_config_aliases() {
        let tables = key_tables();
        assert_eq!(tables.broker["broker_name"], "brokerName");
        assert_eq!(tables.broker["cluster_name"], "brokerClusterName");
        assert_eq!(tables.broker["namesrv_addr"], "namesrvAddr");
        assert_eq!(tables.broker["ha_port"], "haListenPort");
        assert!(!tables
            .broker
            .contains_key("controller_heartbeat_interval_ms"));
        assert_eq!(tables.store["store_root"], "storePathRootDir");
        assert_eq!(tables.store["file_reserved_time"], "fileReservedTime");
        assert_eq!(tables.store["flush_disk_type"], "flushDiskType");
        assert_eq!(
            tables.limits["idle_seconds"],
            "serverChannelMaxIdleTimeSeconds"
        );
    }

    #[test]
    fn settings_and_live_keys() {
        assert_eq!(live_key("deleteWhen"), Some("delete_when"));
        assert_eq!(live_key("delete_when"), Some("delete_when"));
        assert_eq!(live_key("brokerName"), None);
        for key in [
            "brokerName",
            "broker_name",
            "listenPort",
            "flushDiskType",
            "tls.mode",
        ] {
            assert!(is_setting(key), "{key}");
        }
        for key in ["noSuchKey", "tls.nope", "store"] {
            assert!(!is_setting(key), "{key}");
        }
    }
}
