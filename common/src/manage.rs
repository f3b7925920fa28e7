//! Bodies of the management codes mqadmin and dashboards send a broker: who is connected
//! (`ConsumerConnection`, `ProducerConnection`, `Connection`), who consumes a topic
//! (`GroupList`), what a consumer reports about itself (`ConsumerRunningInfo`,
//! `ConsumeMessageDirectlyResult`, relayed by the broker from the client) and the epochs of a
//! broker's CommitLog (`EpochEntryCache`), with RocketMQ's field names.
//!
//! The broker writes them with [`fastjson`]: the keys of every object in alphabetical order and
//! no `null` fields, as fastjson (RocketMQ's `RemotingSerializable.encode`) writes a bean.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize};

use crate::protocol::{MessageQueue, SubscriptionData};

/// `value` as fastjson writes a bean: object keys sorted, `null` fields left out (arrays keep
/// their order and their elements).
pub fn fastjson<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    fn strip_nulls(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.retain(|_, v| !v.is_null());
                map.values_mut().for_each(strip_nulls);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip_nulls),
            _ => {}
        }
    }
    let mut tree = serde_json::to_value(value)?;
    strip_nulls(&mut tree);
    // `serde_json::Map` is a BTreeMap here (no `preserve_order`): keys come out sorted, as
    // fastjson's default `SortField` writes them. The unit tests pin the bytes.
    serde_json::to_vec(&tree)
}

/// `Connection`: one client connection of a group.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Connection {
    pub client_id: String,
    /// The client's address as the broker sees it (`host:port`).
    pub client_addr: String,
    /// The client's `LanguageCode` (`JAVA`, `CPP`, `GO`, ...).
    pub language: String,
    /// The client's `MQVersion` ordinal.
    pub version: i32,
}

/// `ConsumerConnection`, the body of GET_CONSUMER_CONNECTION_LIST (203): a consumer group's
/// connections and what its last heartbeat said.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerConnection {
    pub connection_set: Vec<Connection>,
    /// Topic -> subscription.
    pub subscription_table: BTreeMap<String, SubscriptionData>,
    /// `CONSUME_ACTIVELY` (pull), `CONSUME_PASSIVELY` (push) or `CONSUME_POP`.
    pub consume_type: Option<String>,
    /// `CLUSTERING` or `BROADCASTING`.
    pub message_model: Option<String>,
    pub consume_from_where: Option<String>,
}

impl ConsumerConnection {
    /// The lowest client version of the group (`computeMinVersion`; `i32::MAX` when empty).
    pub fn min_version(&self) -> i32 {
        self.connection_set
            .iter()
            .map(|c| c.version)
            .min()
            .unwrap_or(i32::MAX)
    }
}

/// `ProducerConnection`, the body of GET_PRODUCER_CONNECTION_LIST (204).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProducerConnection {
    pub connection_set: Vec<Connection>,
}

/// `GroupList`, the body of QUERY_TOPIC_CONSUME_BY_WHO (300).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GroupList {
    pub group_list: BTreeSet<String>,
}

/// `EpochEntry`: the part of the CommitLog one master epoch wrote. The last entry's
/// `endOffset` is `Long.MAX_VALUE` (open), as RocketMQ's `EpochFileCache` answers it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
    pub end_offset: i64,
}

/// `EpochEntryCache`, the body of GET_BROKER_EPOCH_CACHE (1007).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EpochEntryCache {
    pub cluster_name: String,
    pub broker_name: String,
    pub broker_id: i64,
    pub epoch_list: Vec<EpochEntry>,
    /// The broker's CommitLog end.
    pub max_offset: i64,
}

/// `ConsumeStatus`: a consumer's rates for one topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsumeStatus {
    #[serde(rename = "pullRT")]
    pub pull_rt: f64,
    #[serde(rename = "pullTPS")]
    pub pull_tps: f64,
    #[serde(rename = "consumeRT")]
    pub consume_rt: f64,
    #[serde(rename = "consumeOKTPS")]
    pub consume_ok_tps: f64,
    #[serde(rename = "consumeFailedTPS")]
    pub consume_failed_tps: f64,
    #[serde(rename = "consumeFailedMsgs")]
    pub consume_failed_msgs: i64,
}

/// `ProcessQueueInfo`: a push consumer's view of one queue it consumes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProcessQueueInfo {
    pub commit_offset: i64,
    pub cached_msg_min_offset: i64,
    pub cached_msg_max_offset: i64,
    pub cached_msg_count: i32,
    #[serde(rename = "cachedMsgSizeInMiB")]
    pub cached_msg_size_in_mib: i32,
    pub transaction_msg_min_offset: i64,
    pub transaction_msg_max_offset: i64,
    pub transaction_msg_count: i32,
    pub locked: bool,
    pub try_unlock_times: i64,
    pub last_lock_timestamp: i64,
    /// RocketMQ's spelling.
    pub droped: bool,
    pub last_pull_timestamp: i64,
    pub last_consume_timestamp: i64,
}

/// `PopProcessQueueInfo`: a POP consumer's view of one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PopProcessQueueInfo {
    pub wait_ack_count: i32,
    pub droped: bool,
    pub last_pop_timestamp: i64,
}

/// `ConsumerRunningInfo`, what a consumer answers GET_CONSUMER_RUNNING_INFO (307) with (the
/// broker relays it unchanged). `mqTable` and `mqPopTable` are fastjson maps keyed by
/// `MessageQueue` objects on the wire; here they are pairs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerRunningInfo {
    /// The client's `Properties` (`PROP_CONSUME_TYPE`, `PROP_CLIENT_VERSION`, ...); values that
    /// are not strings are kept as their JSON text.
    #[serde(deserialize_with = "string_map")]
    pub properties: BTreeMap<String, String>,
    pub subscription_set: Vec<SubscriptionData>,
    #[serde(deserialize_with = "crate::protocol::queue_map")]
    pub mq_table: Vec<(MessageQueue, ProcessQueueInfo)>,
    #[serde(deserialize_with = "crate::protocol::queue_map")]
    pub mq_pop_table: Vec<(MessageQueue, PopProcessQueueInfo)>,
    /// Topic -> rates.
    pub status_table: BTreeMap<String, ConsumeStatus>,
    #[serde(deserialize_with = "string_map")]
    pub user_consumer_info: BTreeMap<String, String>,
    /// The client's thread dump, when the request asked for it (`jstackEnable`).
    pub jstack: Option<String>,
}

impl ConsumerRunningInfo {
    /// Parses a body written by a Java (fastjson, `MessageQueue` object keys) or any other
    /// client.
    pub fn from_json(body: &[u8]) -> Result<Self, serde_json::Error> {
        let text = String::from_utf8_lossy(body);
        let pairs = crate::json::object_keys_as_pairs(&text);
        serde_json::from_str(&crate::json::normalize(&pairs))
    }
}

/// A JSON object whose values are kept as strings (non-strings as their JSON text, `null`
/// left out); `null` for the whole map is empty.
fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw: Option<BTreeMap<String, serde_json::Value>> = Option::deserialize(d)?;
    Ok(raw
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect())
}

/// `ConsumeMessageDirectlyResult`, what a consumer answers CONSUME_MESSAGE_DIRECTLY (309) with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumeMessageDirectlyResult {
    pub order: bool,
    pub auto_commit: bool,
    /// `CMResult`: `CR_SUCCESS`, `CR_LATER`, `CR_ROLLBACK`, `CR_COMMIT`, `CR_THROW_EXCEPTION`,
    /// `CR_RETURN_NULL`.
    pub consume_result: Option<String>,
    pub remark: Option<String>,
    pub spent_time_mills: i64,
}

/// `MQVersion.Version.V3_1_8_SNAPSHOT.ordinal()`: older clients cannot answer requests the
/// broker relays (GET_CONSUMER_RUNNING_INFO, CONSUME_MESSAGE_DIRECTLY).
pub const V3_1_8_SNAPSHOT: i32 = 62;

/// `MQVersion.getVersionDesc` for the versions below [`V3_1_8_SNAPSHOT`] (the only ones a
/// remark names); other values are written as numbers.
pub fn version_desc(version: i32) -> String {
    const OLD: [&str; 62] = [
        "V3_0_0_SNAPSHOT",
        "V3_0_0_ALPHA1",
        "V3_0_0_BETA1",
        "V3_0_0_BETA2",
        "V3_0_0_BETA3",
        "V3_0_0_BETA4",
        "V3_0_0_BETA5",
        "V3_0_0_BETA6_SNAPSHOT",
        "V3_0_0_BETA6",
        "V3_0_0_BETA7_SNAPSHOT",
        "V3_0_0_BETA7",
        "V3_0_0_BETA8_SNAPSHOT",
        "V3_0_0_BETA8",
        "V3_0_0_BETA9_SNAPSHOT",
        "V3_0_0_BETA9",
        "V3_0_0_FINAL",
        "V3_0_1_SNAPSHOT",
        "V3_0_1",
        "V3_0_2_SNAPSHOT",
        "V3_0_2",
        "V3_0_3_SNAPSHOT",
        "V3_0_3",
        "V3_0_4_SNAPSHOT",
        "V3_0_4",
        "V3_0_5_SNAPSHOT",
        "V3_0_5",
        "V3_0_6_SNAPSHOT",
        "V3_0_6",
        "V3_0_7_SNAPSHOT",
        "V3_0_7",
        "V3_0_8_SNAPSHOT",
        "V3_0_8",
        "V3_0_9_SNAPSHOT",
        "V3_0_9",
        "V3_0_10_SNAPSHOT",
        "V3_0_10",
        "V3_0_11_SNAPSHOT",
        "V3_0_11",
        "V3_0_12_SNAPSHOT",
        "V3_0_12",
        "V3_0_13_SNAPSHOT",
        "V3_0_13",
        "V3_0_14_SNAPSHOT",
        "V3_0_14",
        "V3_0_15_SNAPSHOT",
        "V3_0_15",
        "V3_1_0_SNAPSHOT",
        "V3_1_0",
        "V3_1_1_SNAPSHOT",
        "V3_1_1",
        "V3_1_2_SNAPSHOT",
        "V3_1_2",
        "V3_1_3_SNAPSHOT",
        "V3_1_3",
        "V3_1_4_SNAPSHOT",
        "V3_1_4",
        "V3_1_5_SNAPSHOT",
        "V3_1_5",
        "V3_1_6_SNAPSHOT",
        "V3_1_6",
        "V3_1_7_SNAPSHOT",
        "V3_1_7",
    ];
    usize::try_from(version)
        .ok()
        .and_then(|i| OLD.get(i))
        .map_or_else(|| version.to_string(), |name| (*name).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_connection_is_fastjson() {
        let mut subscription_table = BTreeMap::new();
        subscription_table.insert(
            "T".to_string(),
            SubscriptionData {
                topic: "T".into(),
                sub_string: "TagA".into(),
                tags_set: BTreeSet::from(["TagA".to_string()]),
                code_set: BTreeSet::from([2598919]),
                sub_version: 7,
                expression_type: Some("TAG".into()),
                ..SubscriptionData::default()
            },
        );
        let body = ConsumerConnection {
            connection_set: vec![Connection {
                client_id: "10.0.0.1@1".into(),
                client_addr: "127.0.0.1:5000".into(),
                language: "JAVA".into(),
                version: 475,
            }],
            subscription_table,
            consume_type: Some("CONSUME_PASSIVELY".into()),
            message_model: Some("CLUSTERING".into()),
            consume_from_where: None,
        };
        let text = String::from_utf8(fastjson(&body).expect("encodes")).expect("utf-8");
        assert_eq!(
            text,
            r#"{"connectionSet":[{"clientAddr":"127.0.0.1:5000","clientId":"10.0.0.1@1","language":"JAVA","version":475}],"consumeType":"CONSUME_PASSIVELY","messageModel":"CLUSTERING","subscriptionTable":{"T":{"classFilterMode":false,"codeSet":[2598919],"expressionType":"TAG","subString":"TagA","subVersion":7,"tagsSet":["TagA"],"topic":"T"}}}"#
        );
        let back: ConsumerConnection =
            crate::protocol::from_json_body(text.as_bytes()).expect("parses");
        assert_eq!(back, body);
        assert_eq!(back.min_version(), 475);
    }

    #[test]
    fn epoch_cache_and_group_list_are_fastjson() {
        let cache = EpochEntryCache {
            cluster_name: "C".into(),
            broker_name: "b".into(),
            broker_id: 1,
            epoch_list: vec![
                EpochEntry {
                    epoch: 1,
                    start_offset: 0,
                    end_offset: 100,
                },
                EpochEntry {
                    epoch: 2,
                    start_offset: 100,
                    end_offset: i64::MAX,
                },
            ],
            max_offset: 250,
        };
        assert_eq!(
            String::from_utf8(fastjson(&cache).expect("encodes")).expect("utf-8"),
            r#"{"brokerId":1,"brokerName":"b","clusterName":"C","epochList":[{"endOffset":100,"epoch":1,"startOffset":0},{"endOffset":9223372036854775807,"epoch":2,"startOffset":100}],"maxOffset":250}"#
        );
        let groups = GroupList {
            group_list: BTreeSet::from(["b".to_string(), "a".to_string()]),
        };
        assert_eq!(
            fastjson(&groups).expect("encodes"),
            br#"{"groupList":["a","b"]}"#
        );
    }

    #[test]
    fn running_info_parses_what_a_java_client_writes() {
        // As DefaultMQPushConsumerImpl.consumerRunningInfo encodes it with fastjson.
        let body = br#"{"jstack":"main thread","mqPopTable":{},"mqTable":{{"brokerName":"broker-a","queueId":0,"topic":"T"}:{"cachedMsgCount":2,"cachedMsgMaxOffset":9,"cachedMsgMinOffset":8,"cachedMsgSizeInMiB":0,"commitOffset":8,"droped":false,"lastConsumeTimestamp":1700000000000,"lastLockTimestamp":1700000000001,"lastPullTimestamp":1700000000002,"locked":false,"transactionMsgCount":0,"transactionMsgMaxOffset":0,"transactionMsgMinOffset":0,"tryUnlockTimes":0}},"properties":{"PROP_CONSUME_TYPE":"CONSUME_PASSIVELY","PROP_THREADPOOL_CORE_SIZE":20,"PROP_CONSUMER_START_TIMESTAMP":"1700000000000"},"statusTable":{"T":{"consumeFailedMsgs":1,"consumeFailedTPS":0.0,"consumeOKTPS":1.5,"consumeRT":2.0,"pullRT":3.0,"pullTPS":4.0}},"subscriptionSet":[{"classFilterMode":false,"codeSet":[],"expressionType":"TAG","subString":"*","subVersion":1,"tagsSet":[],"topic":"T"}],"userConsumerInfo":{}}"#;
        let info = ConsumerRunningInfo::from_json(body).expect("parses");
        assert_eq!(info.properties["PROP_CONSUME_TYPE"], "CONSUME_PASSIVELY");
        assert_eq!(info.properties["PROP_THREADPOOL_CORE_SIZE"], "20");
        assert_eq!(info.subscription_set[0].topic, "T");
        assert_eq!(info.mq_table.len(), 1);
        assert_eq!(info.mq_table[0].0.queue_id, 0);
        assert_eq!(info.mq_table[0].1.cached_msg_max_offset, 9);
        assert!(info.mq_pop_table.is_empty());
        assert_eq!(info.status_table["T"].consume_ok_tps, 1.5);
        assert_eq!(info.status_table["T"].consume_failed_msgs, 1);
        assert_eq!(info.jstack.as_deref(), Some("main thread"));
        assert!(ConsumerRunningInfo::from_json(b"[1]").is_err());
    }

    #[test]
    fn version_names() {
        assert_eq!(version_desc(0), "V3_0_0_SNAPSHOT");
        assert_eq!(version_desc(61), "V3_1_7");
        assert_eq!(version_desc(V3_1_8_SNAPSHOT), "62");
        assert_eq!(version_desc(-1), "-1");
    }
}
