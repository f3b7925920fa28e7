//! JSON bodies that travel in Remoting commands, with RocketMQ's field names.
//!
//! These are facts of the wire: a Java or Go client parses them by these names. Unknown fields
//! are ignored when parsing so that newer peers can add fields.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::topic::TopicConfig;

/// `DataVersion`: a broker's topic-config version, compared by the NameServer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DataVersion {
    pub state_version: i64,
    pub timestamp: i64,
    pub counter: i64,
}

/// `TopicConfigSerializeWrapper` (5.x adds mapping tables, which we neither need nor send).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicConfigSerializeWrapper {
    pub topic_config_table: BTreeMap<String, TopicConfig>,
    pub data_version: DataVersion,
}

/// `RegisterBrokerBody`: the body of REGISTER_BROKER (103) when `compressed=false`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RegisterBrokerBody {
    pub topic_config_serialize_wrapper: TopicConfigSerializeWrapper,
    pub filter_server_list: Vec<String>,
}

/// `QueueData`: one broker's queues of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueData {
    pub broker_name: String,
    pub read_queue_nums: i32,
    pub write_queue_nums: i32,
    pub perm: i32,
    #[serde(default)]
    pub topic_sys_flag: i32,
}

/// `BrokerData`: the addresses of one broker set, keyed by broker id (0 = master).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerData {
    pub cluster: String,
    pub broker_name: String,
    /// Broker id -> "host:port". fastjson writes these keys unquoted; see [`crate::json`].
    pub broker_addrs: BTreeMap<i64, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_name: Option<String>,
    #[serde(default)]
    pub enable_acting_master: bool,
}

impl BrokerData {
    /// The master's address, if the set has one.
    pub fn master_addr(&self) -> Option<&str> {
        self.broker_addrs
            .get(&crate::consts::MASTER_ID)
            .map(String::as_str)
    }
}

/// `TopicRouteData`: the answer to GET_ROUTEINFO_BY_TOPIC (105).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicRouteData {
    pub order_topic_conf: Option<String>,
    pub queue_datas: Vec<QueueData>,
    pub broker_datas: Vec<BrokerData>,
    pub filter_server_table: BTreeMap<String, Vec<String>>,
}

/// `ClusterInfo`: the answer to GET_BROKER_CLUSTER_INFO (106).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterInfo {
    pub broker_addr_table: BTreeMap<String, BrokerData>,
    pub cluster_addr_table: BTreeMap<String, BTreeSet<String>>,
}

/// `TopicList`: the answer to GET_ALL_TOPIC_LIST_FROM_NAMESERVER (206).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicList {
    pub topic_list: BTreeSet<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_addr: Option<String>,
}

/// `SubscriptionData` inside a consumer's heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubscriptionData {
    pub class_filter_mode: bool,
    pub topic: String,
    pub sub_string: String,
    pub tags_set: BTreeSet<String>,
    pub code_set: BTreeSet<i32>,
    pub sub_version: i64,
    pub expression_type: Option<String>,
}

/// `ConsumerData` inside a heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerData {
    pub group_name: String,
    pub consume_type: Option<String>,
    pub message_model: Option<String>,
    pub consume_from_where: Option<String>,
    pub subscription_data_set: Vec<SubscriptionData>,
    pub unit_mode: bool,
}

/// `ProducerData` inside a heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProducerData {
    pub group_name: String,
}

/// `HeartbeatData`: the body of HEART_BEAT (34) from a client to a broker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HeartbeatData {
    #[serde(rename = "clientID")]
    pub client_id: String,
    #[serde(rename = "producerDataSet")]
    pub producer_data_set: Vec<ProducerData>,
    #[serde(rename = "consumerDataSet")]
    pub consumer_data_set: Vec<ConsumerData>,
}

/// `GetConsumerListByGroupResponseBody`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerIdList {
    pub consumer_id_list: Vec<String>,
}

/// `CheckClientRequestBody`: the body of CHECK_CLIENT_CONFIG (46), a consumer's subscription
/// checked before it starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CheckClientRequestBody {
    pub client_id: String,
    pub group: String,
    pub subscription_data: SubscriptionData,
}

/// `MessageQueue` as the Java client serializes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MessageQueue {
    pub topic: String,
    pub broker_name: String,
    pub queue_id: i32,
}

/// `LockBatchRequestBody` (LOCK_BATCH_MQ, 41) and `UnlockBatchRequestBody` (UNLOCK_BATCH_MQ, 42),
/// which have the same fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LockBatchRequestBody {
    pub consumer_group: String,
    pub client_id: String,
    pub only_this_broker: bool,
    pub mq_set: Vec<MessageQueue>,
}

/// `LockBatchResponseBody`: the queues the client holds the lock of.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LockBatchResponseBody {
    #[serde(rename = "lockOKMQSet")]
    pub lock_ok_mq_set: Vec<MessageQueue>,
}

/// `TopicOffset`: one queue's offsets in a [`TopicStatsTable`]. The fields are declared in
/// fastjson's (alphabetical) order, so serializing writes RocketMQ's bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicOffset {
    /// The store time of the queue's last message; 0 when the queue is empty.
    pub last_update_timestamp: i64,
    pub max_offset: i64,
    pub min_offset: i64,
}

/// `TopicStatsTable`, the body of GET_TOPIC_STATS_INFO (202): each queue of a topic on one
/// broker, and the topic's puts per second over the last minute. On the wire `offsetTable` is
/// fastjson's map keyed by `MessageQueue` objects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopicStatsTable {
    pub offset_table: Vec<(MessageQueue, TopicOffset)>,
    pub topic_put_tps: f64,
}

impl TopicStatsTable {
    /// RocketMQ's bytes: `{"offsetTable":{{"brokerName":..,"queueId":..,"topic":..}:
    /// {"lastUpdateTimestamp":..,"maxOffset":..,"minOffset":..},...},"topicPutTps":0.0}`.
    pub fn to_fastjson(&self) -> String {
        let entries = self.offset_table.iter().map(|(mq, o)| {
            (
                mq,
                format!(
                    "{{\"lastUpdateTimestamp\":{},\"maxOffset\":{},\"minOffset\":{}}}",
                    o.last_update_timestamp, o.max_offset, o.min_offset
                ),
            )
        });
        format!(
            "{{\"offsetTable\":{},\"topicPutTps\":{}}}",
            crate::json::message_queue_map(entries),
            crate::json::java_double(self.topic_put_tps)
        )
    }

    /// Parses a body written by a RocketMQ or Rocketraft broker (fastjson's object keys).
    pub fn from_json(body: &[u8]) -> Result<Self, serde_json::Error> {
        let text = String::from_utf8_lossy(body);
        let pairs = crate::json::object_keys_as_pairs(&text);
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire {
            #[serde(default, deserialize_with = "queue_map")]
            offset_table: Vec<(MessageQueue, TopicOffset)>,
            #[serde(default)]
            topic_put_tps: Option<f64>,
        }
        let wire: Wire = serde_json::from_str(&crate::json::normalize(&pairs))?;
        Ok(TopicStatsTable {
            offset_table: wire.offset_table,
            topic_put_tps: wire.topic_put_tps.unwrap_or(0.0),
        })
    }
}

/// A fastjson map keyed by `MessageQueue` after [`crate::json::object_keys_as_pairs`]: an
/// array of `[queue, value]` pairs, or `{}` when empty.
pub(crate) fn queue_map<'de, D, V>(d: D) -> Result<Vec<(MessageQueue, V)>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: serde::de::DeserializeOwned,
{
    use serde::de::Error;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(Vec::new()),
        serde_json::Value::Object(m) if m.is_empty() => Ok(Vec::new()),
        v @ serde_json::Value::Array(_) => serde_json::from_value(v).map_err(D::Error::custom),
        other => Err(D::Error::custom(format!(
            "a map keyed by MessageQueue objects was expected, not {other}"
        ))),
    }
}

/// `BrokerStatsItem`: a statistic over one window (a minute, an hour, a day).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BrokerStatsItem {
    /// The value added in the window per time it was added (RocketMQ's average per call).
    pub avgpt: f64,
    /// The value added in the window (messages, bytes).
    pub sum: i64,
    /// `sum` per second over the window.
    pub tps: f64,
}

impl BrokerStatsItem {
    fn to_fastjson(self) -> String {
        format!(
            "{{\"avgpt\":{},\"sum\":{},\"tps\":{}}}",
            crate::json::java_double(self.avgpt),
            self.sum,
            crate::json::java_double(self.tps)
        )
    }
}

/// `BrokerStatsData`, the body of VIEW_BROKER_STATS_DATA (315).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BrokerStatsData {
    pub stats_day: BrokerStatsItem,
    pub stats_hour: BrokerStatsItem,
    pub stats_minute: BrokerStatsItem,
}

impl BrokerStatsData {
    /// RocketMQ's bytes: `{"statsDay":{"avgpt":..,"sum":..,"tps":..},"statsHour":{..},
    /// "statsMinute":{..}}` (doubles as Java writes them).
    pub fn to_fastjson(&self) -> String {
        format!(
            "{{\"statsDay\":{},\"statsHour\":{},\"statsMinute\":{}}}",
            self.stats_day.to_fastjson(),
            self.stats_hour.to_fastjson(),
            self.stats_minute.to_fastjson()
        )
    }
}

/// Parses a JSON body written by us or by a Java peer (fastjson's bare numeric keys accepted).
pub fn from_json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    let text = String::from_utf8_lossy(body);
    let normalized = crate::json::normalize(&text);
    serde_json::from_str(&normalized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_data_parses_fastjson_output() {
        // As a Java NameServer writes it for an old client.
        let body = br#"{"brokerDatas":[{"brokerAddrs":{0:"127.0.0.1:10911"},"brokerName":"broker-a","cluster":"DefaultCluster","enableActingMaster":false}],"filterServerTable":{},"queueDatas":[{"brokerName":"broker-a","perm":6,"readQueueNums":4,"topicSysFlag":0,"writeQueueNums":4}]}"#;
        let route: TopicRouteData = from_json_body(body).expect("parse");
        assert_eq!(route.broker_datas[0].master_addr(), Some("127.0.0.1:10911"));
        assert_eq!(route.queue_datas[0].write_queue_nums, 4);
    }

    #[test]
    fn lock_batch_bodies_parse_java_shape() {
        let body = br#"{"clientId":"10.0.0.1@77","consumerGroup":"og","mqSet":[{"brokerName":"broker-a","queueId":1,"topic":"T"}],"onlyThisBroker":false}"#;
        let req: LockBatchRequestBody = from_json_body(body).expect("parse");
        assert_eq!(req.client_id, "10.0.0.1@77");
        assert_eq!(
            req.mq_set,
            vec![MessageQueue {
                topic: "T".into(),
                broker_name: "broker-a".into(),
                queue_id: 1
            }]
        );
        let out = serde_json::to_string(&LockBatchResponseBody {
            lock_ok_mq_set: req.mq_set,
        })
        .expect("json");
        assert_eq!(
            out,
            r#"{"lockOKMQSet":[{"topic":"T","brokerName":"broker-a","queueId":1}]}"#
        );
    }

    #[test]
    fn heartbeat_parses_java_shape() {
        let body = br#"{"clientID":"10.0.0.1@123","consumerDataSet":[{"consumeFromWhere":"CONSUME_FROM_LAST_OFFSET","consumeType":"CONSUME_PASSIVELY","groupName":"g","messageModel":"CLUSTERING","subscriptionDataSet":[{"classFilterMode":false,"codeSet":[2598919],"expressionType":"TAG","subString":"TagA","subVersion":1,"tagsSet":["TagA"],"topic":"T"}],"unitMode":false}],"producerDataSet":[{"groupName":"CLIENT_INNER_PRODUCER"}]}"#;
        let hb: HeartbeatData = from_json_body(body).expect("parse");
        assert_eq!(hb.client_id, "10.0.0.1@123");
        assert_eq!(
            hb.consumer_data_set[0].subscription_data_set[0]
                .tags_set
                .len(),
            1
        );
    }

    #[test]
    fn topic_stats_table_is_fastjson_and_reads_back() {
        let mq = |id| MessageQueue {
            topic: "T".to_string(),
            broker_name: "broker-a".to_string(),
            queue_id: id,
        };
        let table = TopicStatsTable {
            offset_table: vec![
                (
                    mq(0),
                    TopicOffset {
                        last_update_timestamp: 1_700_000_000_123,
                        max_offset: 7,
                        min_offset: 2,
                    },
                ),
                (mq(1), TopicOffset::default()),
            ],
            topic_put_tps: 0.5,
        };
        let text = table.to_fastjson();
        assert_eq!(
            text,
            r#"{"offsetTable":{{"brokerName":"broker-a","queueId":0,"topic":"T"}:{"lastUpdateTimestamp":1700000000123,"maxOffset":7,"minOffset":2},{"brokerName":"broker-a","queueId":1,"topic":"T"}:{"lastUpdateTimestamp":0,"maxOffset":0,"minOffset":0}},"topicPutTps":0.5}"#
        );
        assert_eq!(
            TopicStatsTable::from_json(text.as_bytes()).expect("parses"),
            table
        );
        let empty = TopicStatsTable::default();
        assert_eq!(
            empty.to_fastjson(),
            r#"{"offsetTable":{},"topicPutTps":0.0}"#
        );
        assert_eq!(
            TopicStatsTable::from_json(empty.to_fastjson().as_bytes()).expect("parses"),
            empty
        );
        assert!(TopicStatsTable::from_json(br#"{"offsetTable":5}"#).is_err());
        assert!(TopicStatsTable::from_json(b"{{").is_err());
    }

    #[test]
    fn broker_stats_data_is_fastjson_and_reads_back() {
        let item = |sum: i64| BrokerStatsItem {
            avgpt: 1.0,
            sum,
            tps: sum as f64 / 60.0,
        };
        let data = BrokerStatsData {
            stats_day: item(120),
            stats_hour: item(60),
            stats_minute: item(6),
        };
        let text = data.to_fastjson();
        assert_eq!(
            text,
            r#"{"statsDay":{"avgpt":1.0,"sum":120,"tps":2.0},"statsHour":{"avgpt":1.0,"sum":60,"tps":1.0},"statsMinute":{"avgpt":1.0,"sum":6,"tps":0.1}}"#
        );
        let back: BrokerStatsData = from_json_body(text.as_bytes()).expect("parses");
        assert_eq!(back, data);
    }
}
