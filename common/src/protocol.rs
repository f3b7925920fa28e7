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
}
