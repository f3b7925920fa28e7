//! The management codes against a real broker (and NameServer) on loopback, with real client
//! connections: GET_CONSUMER_CONNECTION_LIST (203), GET_PRODUCER_CONNECTION_LIST (204),
//! QUERY_TOPIC_CONSUME_BY_WHO (300), GET_CONSUMER_RUNNING_INFO (307) and
//! CONSUME_MESSAGE_DIRECTLY (309) relayed to a consumer that answers over its own connection,
//! GET_BROKER_CONFIG (26) / UPDATE_BROKER_CONFIG (25), GET_BROKER_EPOCH_CACHE (1007) in
//! controller mode, and WIPE_WRITE_PERM_OF_BROKER (205) / ADD_WRITE_PERM_OF_BROKER (327) on the
//! NameServer; with RocketMQ's answers to missing headers and unknown groups and clients.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketraft_broker::store::FlushDiskType;
use rocketraft_broker::{Broker, BrokerConfig};
use rocketraft_common::consts::perm;
use rocketraft_common::manage::ConsumeMessageDirectlyResult;
use rocketraft_common::protocol::{ConsumerData, HeartbeatData, ProducerData, SubscriptionData};
use rocketraft_common::TopicConfig;
use rocketraft_nameserver::{NameServer, NamesrvConfig};
use rocketraft_remoting::api::{ApiError, MqClientApi, SendRequest};
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::{
    processor_fn, ClientConfig, RemotingClient, RemotingCommand, CURRENT_VERSION,
};

const TOPIC: &str = "ManageTopic";
const GROUP: &str = "manage-cg";
const PRODUCER_GROUP: &str = "manage-pg";

struct Node {
    namesrv: NameServer,
    broker: Broker,
    api: MqClientApi,
    addr: String,
}

fn broker_config(dir: &Path, namesrv: &NameServer) -> BrokerConfig {
    let mut config = BrokerConfig {
        broker_name: "manage-b".to_string(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        namesrv_addr: namesrv.local_addr().to_string(),
        auto_create_topic_enable: false,
        register_interval_ms: 1000,
        ..BrokerConfig::default()
    };
    config.store.store_root = dir.to_path_buf();
    config.store.commitlog_segment_size = 256 * 1024;
    config.store.flush_disk_type = FlushDiskType::SyncFlush;
    config.store.pretouch = false;
    config
}

fn api(timeout: Duration) -> MqClientApi {
    MqClientApi::new(RemotingClient::new(ClientConfig::default()), timeout)
}

async fn start(dir: &Path) -> Node {
    let namesrv = NameServer::start(NamesrvConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..NamesrvConfig::default()
    })
    .await
    .expect("namesrv starts");
    let broker = Broker::start(broker_config(dir, &namesrv))
        .await
        .expect("broker starts");
    let api = api(Duration::from_secs(15));
    let addr = broker.local_addr().to_string();
    api.create_topic(&addr, &TopicConfig::new(TOPIC, 2))
        .await
        .expect("create topic");
    Node {
        namesrv,
        broker,
        api,
        addr,
    }
}

async fn raw(node: &Node, request: RemotingCommand) -> RemotingCommand {
    node.api
        .remoting()
        .invoke(&node.addr, request, Duration::from_secs(5))
        .await
        .expect("the broker answers")
}

fn refused(result: Result<impl std::fmt::Debug, ApiError>) -> (i32, String) {
    match result {
        Err(ApiError::Refused(r)) => (r.code, r.remark),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn subscription() -> SubscriptionData {
    SubscriptionData {
        topic: TOPIC.to_string(),
        sub_string: "*".to_string(),
        sub_version: 1,
        expression_type: Some("TAG".to_string()),
        ..SubscriptionData::default()
    }
}

fn heartbeat(client_id: &str) -> HeartbeatData {
    HeartbeatData {
        client_id: client_id.to_string(),
        producer_data_set: vec![ProducerData {
            group_name: PRODUCER_GROUP.to_string(),
        }],
        consumer_data_set: vec![ConsumerData {
            group_name: GROUP.to_string(),
            consume_type: Some("CONSUME_PASSIVELY".to_string()),
            message_model: Some("CLUSTERING".to_string()),
            consume_from_where: Some("CONSUME_FROM_LAST_OFFSET".to_string()),
            subscription_data_set: vec![subscription()],
            unit_mode: false,
        }],
    }
}

/// A consumer client: heartbeats on its own connection and answers what the broker relays to
/// it, counting the requests.
struct Consumer {
    client: RemotingClient,
    client_id: String,
    relayed: Arc<AtomicUsize>,
}

impl Consumer {
    /// `version` is the protocol version its heartbeat carries; `answer` false: it never
    /// answers relayed requests.
    async fn connect(node: &Node, client_id: &str, version: i32, answer: bool) -> Consumer {
        let client = RemotingClient::new(ClientConfig::default());
        let relayed = Arc::new(AtomicUsize::new(0));
        let seen = relayed.clone();
        let id = client_id.to_string();
        client.set_request_handler(processor_fn(move |_ctx, request| {
            let seen = seen.clone();
            let id = id.clone();
            async move {
                if request.code == request_code::NOTIFY_CONSUMER_IDS_CHANGED {
                    return None;
                }
                seen.fetch_add(1, Ordering::SeqCst);
                if !answer {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return None;
                }
                Some(answer_relayed(&id, &request))
            }
        }));
        let body = serde_json::to_vec(&heartbeat(client_id)).expect("json");
        let mut hb = RemotingCommand::request(request_code::HEART_BEAT).with_body(body);
        hb.version = version;
        let response = client
            .invoke(&node.addr, hb, Duration::from_secs(5))
            .await
            .expect("heartbeat answered");
        assert_eq!(
            response.code,
            response_code::SUCCESS,
            "{:?}",
            response.remark
        );
        Consumer {
            client,
            client_id: client_id.to_string(),
            relayed,
        }
    }

    async fn local_addr(&self, node: &Node) -> String {
        self.client
            .connection_handle(&node.addr)
            .await
            .expect("connected")
            .local_addr()
            .to_string()
    }
}

/// What the consumer answers: its running info (fastjson, `mqTable` keyed by queue objects, as
/// a Java client writes it) or how it consumed the message in the body.
fn answer_relayed(client_id: &str, request: &RemotingCommand) -> RemotingCommand {
    match request.code {
        request_code::GET_CONSUMER_RUNNING_INFO => {
            let jstack = if request.ext("jstackEnable") == Some("true") {
                r#","jstack":"thread dump""#
            } else {
                ""
            };
            let body = format!(
                r#"{{"mqPopTable":{{}},"mqTable":{{{{"brokerName":"manage-b","queueId":1,"topic":"{TOPIC}"}}:{{"cachedMsgCount":3,"commitOffset":5,"droped":false,"locked":true}}}},"properties":{{"PROP_CLIENT_ID":"{client_id}","PROP_GROUP":"{}","PROP_CONSUME_TYPE":"CONSUME_PASSIVELY","PROP_THREADPOOL_CORE_SIZE":20}},"statusTable":{{"{TOPIC}":{{"consumeOKTPS":2.5,"pullTPS":1.0}}}},"subscriptionSet":[{{"subString":"*","topic":"{TOPIC}"}}]{jstack}}}"#,
                request.ext("consumerGroup").unwrap_or("")
            );
            request
                .response_to(response_code::SUCCESS, None)
                .with_body(body.into_bytes())
        }
        request_code::CONSUME_MESSAGE_DIRECTLY => {
            let Ok((message, _)) = rocketraft_common::message::decode_message(&request.body) else {
                return request.response_to(
                    response_code::SYSTEM_ERROR,
                    "the body is not a message".to_string(),
                );
            };
            let result = ConsumeMessageDirectlyResult {
                order: false,
                auto_commit: true,
                consume_result: Some("CR_SUCCESS".to_string()),
                remark: Some(format!(
                    "{}|{}|{}|{}|{}",
                    String::from_utf8_lossy(&message.body),
                    message.topic,
                    request.ext("brokerName").unwrap_or(""),
                    request.ext("topicSysFlag").unwrap_or("-"),
                    request.ext("msgId").unwrap_or("")
                )),
                spent_time_mills: 3,
            };
            request
                .response_to(response_code::SUCCESS, None)
                .with_body(serde_json::to_vec(&result).expect("json"))
        }
        other => request.response_to(
            response_code::REQUEST_CODE_NOT_SUPPORTED,
            format!("{other} not supported"),
        ),
    }
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_and_the_groups_that_consume_a_topic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;

    // Nobody connected yet: RocketMQ's codes and remarks.
    assert_eq!(
        refused(node.api.consumer_connections(&node.addr, GROUP).await),
        (
            response_code::CONSUMER_NOT_ONLINE,
            format!("the consumer group[{GROUP}] not online")
        )
    );
    assert_eq!(
        refused(
            node.api
                .producer_connections(&node.addr, PRODUCER_GROUP)
                .await
        ),
        (
            response_code::SYSTEM_ERROR,
            format!("the producer group[{PRODUCER_GROUP}] not exist")
        )
    );
    let none = node
        .api
        .topic_consumed_by(&node.addr, TOPIC)
        .await
        .expect("300");
    assert!(none.group_list.is_empty());

    let consumer = Consumer::connect(&node, "10.0.0.7@manage", CURRENT_VERSION, true).await;
    let client_addr = consumer.local_addr(&node).await;

    // 203: the exact bytes fastjson writes, and the typed answer.
    let response = raw(
        &node,
        RemotingCommand::request(request_code::GET_CONSUMER_CONNECTION_LIST)
            .with_ext("consumerGroup", GROUP),
    )
    .await;
    assert_eq!(response.code, response_code::SUCCESS);
    assert_eq!(
        String::from_utf8_lossy(&response.body),
        format!(
            r#"{{"connectionSet":[{{"clientAddr":"{client_addr}","clientId":"10.0.0.7@manage","language":"RUST","version":{CURRENT_VERSION}}}],"consumeFromWhere":"CONSUME_FROM_LAST_OFFSET","consumeType":"CONSUME_PASSIVELY","messageModel":"CLUSTERING","subscriptionTable":{{"{TOPIC}":{{"classFilterMode":false,"codeSet":[],"expressionType":"TAG","subString":"*","subVersion":1,"tagsSet":[],"topic":"{TOPIC}"}}}}}}"#
        )
    );
    let connections = node
        .api
        .consumer_connections(&node.addr, GROUP)
        .await
        .expect("203");
    assert_eq!(connections.connection_set.len(), 1);
    assert_eq!(connections.connection_set[0].client_addr, client_addr);
    assert_eq!(connections.subscription_table[TOPIC], subscription());
    assert_eq!(connections.message_model.as_deref(), Some("CLUSTERING"));
    assert_eq!(connections.min_version(), CURRENT_VERSION);

    // 204: the producer group of the same heartbeat.
    let producers = node
        .api
        .producer_connections(&node.addr, PRODUCER_GROUP)
        .await
        .expect("204");
    assert_eq!(producers.connection_set.len(), 1);
    assert_eq!(producers.connection_set[0].client_id, "10.0.0.7@manage");
    assert_eq!(producers.connection_set[0].client_addr, client_addr);

    // 300: the online group, plus a group that only committed an offset on the topic.
    node.api
        .update_consumer_offset(&node.addr, "offset-only-cg", TOPIC, 1, 3)
        .await
        .expect("commit");
    let response = raw(
        &node,
        RemotingCommand::request(request_code::QUERY_TOPIC_CONSUME_BY_WHO).with_ext("topic", TOPIC),
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&response.body),
        format!(r#"{{"groupList":["{GROUP}","offset-only-cg"]}}"#)
    );
    let other = node
        .api
        .topic_consumed_by(&node.addr, "OtherTopic")
        .await
        .expect("300");
    assert!(other.group_list.is_empty());

    // Missing headers: SYSTEM_ERROR naming the field, as a header that fails to decode.
    for (code, field) in [
        (request_code::GET_CONSUMER_CONNECTION_LIST, "consumerGroup"),
        (request_code::GET_PRODUCER_CONNECTION_LIST, "producerGroup"),
        (request_code::QUERY_TOPIC_CONSUME_BY_WHO, "topic"),
    ] {
        let response = raw(&node, RemotingCommand::request(code)).await;
        assert_eq!(response.code, response_code::SYSTEM_ERROR, "{code}");
        assert!(
            response.remark.as_deref().unwrap_or("").contains(field),
            "{code}: {:?}",
            response.remark
        );
    }
    assert_eq!(
        refused(
            node.api
                .consumer_connections(&node.addr, "unknown-cg")
                .await
        )
        .0,
        response_code::CONSUMER_NOT_ONLINE
    );

    // The consumer's connection closes: the group is not online any more.
    consumer.client.close(&node.addr);
    let n = &node;
    wait_until("the closed connection to drop out", || async move {
        n.api.consumer_connections(&n.addr, GROUP).await.is_err()
    })
    .await;
    assert_eq!(
        refused(node.api.consumer_connections(&node.addr, GROUP).await).0,
        response_code::CONSUMER_NOT_ONLINE
    );
    let groups = node
        .api
        .topic_consumed_by(&node.addr, TOPIC)
        .await
        .expect("300");
    assert!(groups.group_list.contains("offset-only-cg"));
    drop(node.namesrv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_info_and_consume_directly_are_relayed_to_the_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let consumer = Consumer::connect(&node, "10.0.0.8@relay", CURRENT_VERSION, true).await;

    // 307 with and without the thread dump.
    let info = node
        .api
        .consumer_running_info(&node.addr, GROUP, &consumer.client_id, true)
        .await
        .expect("307");
    assert_eq!(info.properties["PROP_CLIENT_ID"], consumer.client_id);
    assert_eq!(info.properties["PROP_GROUP"], GROUP);
    assert_eq!(info.properties["PROP_THREADPOOL_CORE_SIZE"], "20");
    assert_eq!(info.mq_table.len(), 1);
    assert_eq!(info.mq_table[0].0.queue_id, 1);
    assert_eq!(info.mq_table[0].1.cached_msg_count, 3);
    assert!(info.mq_table[0].1.locked);
    assert_eq!(info.status_table[TOPIC].consume_ok_tps, 2.5);
    assert_eq!(info.subscription_set[0].topic, TOPIC);
    assert_eq!(info.jstack.as_deref(), Some("thread dump"));
    let info = node
        .api
        .consumer_running_info(&node.addr, GROUP, &consumer.client_id, false)
        .await
        .expect("307");
    assert_eq!(info.jstack, None);
    assert_eq!(consumer.relayed.load(Ordering::SeqCst), 2);

    // 309: the broker reads the message by its offset id and hands it over.
    let sent = node
        .api
        .send(
            &node.addr,
            &SendRequest {
                producer_group: PRODUCER_GROUP.to_string(),
                topic: TOPIC.to_string(),
                queue_id: 0,
                body: Bytes::from_static(b"consume me directly"),
                properties: BTreeMap::new(),
                ..SendRequest::default()
            },
        )
        .await
        .expect("send");
    let result = node
        .api
        .consume_message_directly(&node.addr, GROUP, &consumer.client_id, TOPIC, &sent.msg_id)
        .await
        .expect("309");
    assert_eq!(result.consume_result.as_deref(), Some("CR_SUCCESS"));
    assert!(result.auto_commit);
    assert_eq!(result.spent_time_mills, 3);
    assert_eq!(
        result.remark.as_deref(),
        Some(format!("consume me directly|{TOPIC}|manage-b|0|{}", sent.msg_id).as_str())
    );
    assert_eq!(consumer.relayed.load(Ordering::SeqCst), 3);

    // Unknown client, unknown group: RocketMQ's remark; nothing reaches the consumer.
    assert_eq!(
        refused(
            node.api
                .consumer_running_info(&node.addr, GROUP, "nobody", false)
                .await
        ),
        (
            response_code::SYSTEM_ERROR,
            format!("The Consumer <{GROUP}> <nobody> not online")
        )
    );
    assert_eq!(
        refused(
            node.api
                .consume_message_directly(
                    &node.addr,
                    "other-cg",
                    &consumer.client_id,
                    TOPIC,
                    &sent.msg_id
                )
                .await
        ),
        (
            response_code::SYSTEM_ERROR,
            format!(
                "The Consumer <other-cg> <{}> not online",
                consumer.client_id
            )
        )
    );
    // Missing or bad headers.
    let no_client = raw(
        &node,
        RemotingCommand::request(request_code::GET_CONSUMER_RUNNING_INFO)
            .with_ext("consumerGroup", GROUP),
    )
    .await;
    assert_eq!(no_client.code, response_code::SYSTEM_ERROR);
    assert!(no_client.remark.unwrap_or_default().contains("clientId"));
    let no_msg = raw(
        &node,
        RemotingCommand::request(request_code::CONSUME_MESSAGE_DIRECTLY)
            .with_ext("consumerGroup", GROUP)
            .with_ext("clientId", consumer.client_id.clone()),
    )
    .await;
    assert_eq!(no_msg.code, response_code::SYSTEM_ERROR);
    assert!(no_msg.remark.unwrap_or_default().contains("msgId"));
    let (code, remark) = refused(
        node.api
            .consume_message_directly(&node.addr, GROUP, &consumer.client_id, TOPIC, "XYZ")
            .await,
    );
    assert_eq!(code, response_code::SYSTEM_ERROR);
    assert!(remark.contains("XYZ"), "{remark}");
    // An offset past the log's end: no message there.
    let past = rocketraft_common::message::offset_msg_id(node.broker.local_addr(), 1 << 40);
    let (code, remark) = refused(
        node.api
            .consume_message_directly(&node.addr, GROUP, &consumer.client_id, TOPIC, &past)
            .await,
    );
    assert_eq!(code, response_code::SYSTEM_ERROR);
    assert!(remark.contains("can not find message"), "{remark}");
    assert_eq!(consumer.relayed.load(Ordering::SeqCst), 3);

    // A client older than V3_1_8_SNAPSHOT is not asked.
    let old = Consumer::connect(&node, "10.0.0.9@old", 50, true).await;
    assert_eq!(
        refused(
            node.api
                .consumer_running_info(&node.addr, GROUP, &old.client_id, false)
                .await
        ),
        (
            response_code::SYSTEM_ERROR,
            "The Consumer <10.0.0.9@old> Version <V3_1_2_SNAPSHOT> too low to finish, please upgrade it to V3_1_8_SNAPSHOT".to_string()
        )
    );
    assert_eq!(old.relayed.load(Ordering::SeqCst), 0);

    // A client that never answers: CONSUME_MSG_TIMEOUT after the broker's 10 s.
    let silent = Consumer::connect(&node, "10.0.0.10@silent", CURRENT_VERSION, false).await;
    let started = Instant::now();
    let (code, remark) = refused(
        node.api
            .consumer_running_info(&node.addr, GROUP, &silent.client_id, false)
            .await,
    );
    assert_eq!(code, response_code::CONSUME_MSG_TIMEOUT);
    assert!(
        remark.starts_with(&format!("consumer <{GROUP}> <10.0.0.10@silent> Timeout: ")),
        "{remark}"
    );
    assert!(started.elapsed() >= Duration::from_secs(9));
    assert_eq!(silent.relayed.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_config_is_read_and_its_retention_keys_change_all_or_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;

    let response = raw(
        &node,
        RemotingCommand::request(request_code::GET_BROKER_CONFIG),
    )
    .await;
    assert_eq!(response.code, response_code::SUCCESS);
    let text = String::from_utf8(response.body.to_vec()).expect("utf-8");
    let keys: Vec<&str> = text
        .lines()
        .map(|l| l.split_once('=').expect("key=value").0)
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(keys, sorted, "sorted by key, as RocketMQ writes them");
    for secret in [
        "cluster_secret",
        "innerClientAuthenticationCredentials",
        "initAuthenticationUser",
    ] {
        assert!(!keys.contains(&secret), "{secret} is never answered");
    }
    let version = response.ext("version").expect("version header");
    assert!(
        version.starts_with(r#"{"counter":0,"stateVersion":0,"timestamp":"#),
        "{version}"
    );

    let config = node.api.broker_config(&node.addr).await.expect("26");
    let p = &config.properties;
    let port = node.broker.local_addr().port().to_string();
    let root = dir.path().to_string_lossy().to_string();
    for (key, value) in [
        ("brokerName", "manage-b"),
        ("brokerClusterName", "DefaultCluster"),
        ("brokerId", "0"),
        ("brokerRole", "ASYNC_MASTER"),
        ("listenPort", port.as_str()),
        ("brokerIP1", "127.0.0.1"),
        ("autoCreateTopicEnable", "false"),
        ("storePathRootDir", root.as_str()),
        ("flushDiskType", "SYNC_FLUSH"),
        ("fileReservedTime", "72"),
        ("deleteWhen", "04"),
        ("diskMaxUsedSpaceRatio", "75"),
        ("cleanFileForciblyEnable", "true"),
        ("tls.mode", "disabled"),
    ] {
        assert_eq!(p.get(key).map(String::as_str), Some(value), "{key}");
    }
    assert_eq!(config.version.as_ref().map(|v| v.counter), Some(0));

    // Retention keys change at once, under RocketMQ's names or the fields'.
    node.api
        .update_broker_config(
            &node.addr,
            &[("deleteWhen", "01;13"), ("disk_max_used_space_ratio", "60")],
        )
        .await
        .expect("25");
    let after = node.api.broker_config(&node.addr).await.expect("26");
    assert_eq!(after.properties["deleteWhen"], "01;13");
    assert_eq!(after.properties["diskMaxUsedSpaceRatio"], "60");
    assert_eq!(after.version.as_ref().map(|v| v.counter), Some(1));
    let live = node.broker.inner().store.retention_settings();
    assert_eq!(
        (live.delete_when.as_str(), live.disk_max_used_space_ratio),
        ("01;13", 60)
    );
    assert_eq!(
        node.broker.inner().store.retention_status().delete_when,
        "01;13"
    );

    // Refusals change nothing, not even the keys that could change.
    type Case<'a> = (&'a [(&'a str, &'a str)], i32, &'a str);
    let cases: [Case; 7] = [
        (
            &[("deleteWhen", "02"), ("brokerName", "x")],
            response_code::NO_PERMISSION,
            "Can not update config at runtime: brokerName",
        ),
        (
            &[("flushDiskType", "ASYNC_FLUSH")],
            response_code::NO_PERMISSION,
            "Can not update config at runtime: flushDiskType",
        ),
        (
            &[("deleteWhen", "02"), ("noSuchKey", "1")],
            response_code::INVALID_PARAMETER,
            "no such broker config key: noSuchKey",
        ),
        (
            &[("diskMaxUsedSpaceRatio", "lots")],
            response_code::INVALID_PARAMETER,
            "diskMaxUsedSpaceRatio",
        ),
        (
            &[("deleteWhen", "02"), ("diskSpaceWarningLevelRatio", "150")],
            response_code::INVALID_PARAMETER,
            "disk_space_warning_level_ratio 150 is a percentage",
        ),
        (
            &[("deleteWhen", "25")],
            response_code::INVALID_PARAMETER,
            "is not an hour of the day",
        ),
        (
            &[("deleteWhen", "02"), ("brokerConfigPath", "/tmp/x")],
            response_code::NO_PERMISSION,
            "Can not update config in black list.",
        ),
    ];
    for (entries, code, remark) in cases {
        let (got, text) = refused(node.api.update_broker_config(&node.addr, entries).await);
        assert_eq!(got, code, "{entries:?}: {text}");
        assert!(text.contains(remark), "{entries:?}: {text}");
    }
    let unchanged = node.api.broker_config(&node.addr).await.expect("26");
    assert_eq!(unchanged.properties, after.properties);
    assert_eq!(unchanged.version, after.version);

    // A body that is not properties text, and an empty one.
    let bad = raw(
        &node,
        RemotingCommand::request(request_code::UPDATE_BROKER_CONFIG).with_body(&b"k=\\u12"[..]),
    )
    .await;
    assert_eq!(
        (bad.code, bad.remark.as_deref()),
        (response_code::SYSTEM_ERROR, Some("string2Properties error"))
    );
    let empty = raw(
        &node,
        RemotingCommand::request(request_code::UPDATE_BROKER_CONFIG),
    )
    .await;
    assert_eq!(empty.code, response_code::SUCCESS);
    let still = node.api.broker_config(&node.addr).await.expect("26");
    assert_eq!(still.properties, after.properties);
    assert_eq!(still.version, after.version);

    // Outside controller mode there is no epoch cache: RocketMQ's answer.
    assert_eq!(
        refused(node.api.broker_epoch_cache(&node.addr).await),
        (
            response_code::SYSTEM_ERROR,
            "this request only for controllerMode ".to_string()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_config_changes_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let persisted = dir.path().join("config/broker-runtime.properties");

    // A refused update writes nothing.
    let (code, _) = refused(
        node.api
            .update_broker_config(&node.addr, &[("deleteWhen", "02"), ("brokerName", "x")])
            .await,
    );
    assert_eq!(code, response_code::NO_PERMISSION);
    assert!(!persisted.exists(), "a refused update is not persisted");

    node.api
        .update_broker_config(
            &node.addr,
            &[("file_reserved_time_secs", "3600"), ("deleteWhen", "01;13")],
        )
        .await
        .expect("25");
    // fileReservedTime clears the seconds override, in the file too; a later value wins.
    node.api
        .update_broker_config(
            &node.addr,
            &[
                ("fileReservedTime", "48"),
                ("disk_max_used_space_ratio", "60"),
            ],
        )
        .await
        .expect("25");
    node.api
        .update_broker_config(&node.addr, &[("diskMaxUsedSpaceRatio", "65")])
        .await
        .expect("25");
    let text = std::fs::read_to_string(&persisted).expect("the update is persisted");
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            "fileReservedTime=48",
            "deleteWhen=01;13",
            "diskMaxUsedSpaceRatio=65"
        ],
        "{text}"
    );
    let before = node.api.broker_config(&node.addr).await.expect("26");

    // Restart on the same dirs with the same config: the changed keys come back.
    let Node {
        namesrv,
        broker,
        api,
        ..
    } = node;
    broker.shutdown().await;
    let broker = Broker::start(broker_config(dir.path(), &namesrv))
        .await
        .expect("broker restarts");
    let addr = broker.local_addr().to_string();
    let after = api.broker_config(&addr).await.expect("26 after restart");
    for (key, value) in [
        ("fileReservedTime", "48"),
        ("deleteWhen", "01;13"),
        ("diskMaxUsedSpaceRatio", "65"),
        ("diskSpaceWarningLevelRatio", "90"),
        ("brokerName", "manage-b"),
    ] {
        assert_eq!(
            after.properties.get(key).map(String::as_str),
            Some(value),
            "{key}"
        );
        assert_eq!(
            after.properties.get(key),
            before.properties.get(key),
            "{key}"
        );
    }
    assert!(
        !after.properties.contains_key("file_reserved_time_secs"),
        "the cleared seconds override stays cleared"
    );
    let live = broker.inner().store.retention_settings();
    assert_eq!(
        (
            live.file_reserved_time,
            live.file_reserved_time_secs,
            live.delete_when.as_str(),
            live.disk_max_used_space_ratio
        ),
        (48, None, "01;13", 65)
    );
    broker.shutdown().await;

    // A persisted value that no longer parses stops the start, naming the file.
    std::fs::write(&persisted, "diskMaxUsedSpaceRatio=lots\n").expect("write");
    let err = match Broker::start(broker_config(dir.path(), &namesrv)).await {
        Ok(_) => panic!("a broker started over a bad runtime config file"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("broker-runtime.properties") && err.contains("diskMaxUsedSpaceRatio"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_write_perm_is_served_and_survives_registrations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let ns = node.namesrv.local_addr().to_string();
    let perm_of = |topic: &'static str| {
        let api = node.api.clone();
        let ns = ns.clone();
        async move {
            api.topic_route(&ns, topic)
                .await
                .ok()
                .and_then(|r| r.queue_datas.first().map(|q| q.perm))
        }
    };
    let perm_of = &perm_of;
    wait_until("the topic in the NameServer's routes", || async move {
        perm_of(TOPIC).await == Some(perm::READ | perm::WRITE)
    })
    .await;
    let topics = node
        .api
        .all_topics(&ns)
        .await
        .expect("topics")
        .topic_list
        .len() as i32;

    assert_eq!(
        node.api
            .wipe_write_perm(&ns, "manage-b")
            .await
            .expect("205"),
        topics
    );
    assert_eq!(perm_of(TOPIC).await, Some(perm::READ));
    // The broker keeps registering (every second) the same topic-config version: the wipe stays.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(perm_of(TOPIC).await, Some(perm::READ));

    assert_eq!(
        node.api.add_write_perm(&ns, "manage-b").await.expect("327"),
        topics
    );
    assert_eq!(perm_of(TOPIC).await, Some(perm::READ | perm::WRITE));

    // An unknown broker set touches nothing; a missing header is SYSTEM_ERROR.
    assert_eq!(
        node.api.wipe_write_perm(&ns, "nobody").await.expect("205"),
        0
    );
    assert_eq!(perm_of(TOPIC).await, Some(perm::READ | perm::WRITE));
    let response = node
        .api
        .remoting()
        .invoke(
            &ns,
            RemotingCommand::request(request_code::WIPE_WRITE_PERM_OF_BROKER),
            Duration::from_secs(5),
        )
        .await
        .expect("answered");
    assert_eq!(response.code, response_code::SYSTEM_ERROR);
    assert!(response.remark.unwrap_or_default().contains("brokerName"));

    // As in RocketMQ, a changed topic config (a new version) is the broker's word again.
    node.api
        .wipe_write_perm(&ns, "manage-b")
        .await
        .expect("205");
    node.api
        .create_topic(&node.addr, &TopicConfig::new("ManageTopic2", 1))
        .await
        .expect("create");
    wait_until("the new version re-registered", || async move {
        perm_of(TOPIC).await == Some(perm::READ | perm::WRITE)
    })
    .await;
    assert_eq!(
        perm_of("ManageTopic2").await,
        Some(perm::READ | perm::WRITE)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epoch_cache_of_a_controller_mode_master() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raft_port = rocketraft_common::net::free_loopback_port().expect("port");
    let mut c = rocketraft_controller::ControllerConfig::default();
    c.raft.node_id = 1;
    c.raft.listen = format!("127.0.0.1:{raft_port}").parse().expect("addr");
    c.raft.data_dir = dir.path().join("controller");
    c.raft.initial_members = BTreeMap::from([(1, format!("127.0.0.1:{raft_port}"))]);
    c.raft.election_timeout_min_ms = 300;
    c.raft.election_timeout_max_ms = 600;
    c.raft.heartbeat_interval_ms = 100;
    c.listen = "127.0.0.1:0".parse().expect("addr");
    let namesrv = NameServer::start(NamesrvConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        enable_controller_in_namesrv: true,
        controller: c,
        ..NamesrvConfig::default()
    })
    .await
    .expect("namesrv with controller");
    let mut config = broker_config(&dir.path().join("broker"), &namesrv);
    config.enable_controller_mode = true;
    config.controller_addr = namesrv.local_addr().to_string();
    config.ha_port = 0;
    config.store.flush_disk_type = FlushDiskType::AsyncFlush;
    let broker = Broker::start(config).await.expect("broker starts");
    let addr = broker.local_addr().to_string();
    let api = api(Duration::from_secs(5));
    let b = &broker;
    wait_until("the broker to be master", || async move {
        b.inner()
            .ha
            .as_ref()
            .is_some_and(|ha| ha.role() == rocketraft_broker::ha::Role::Master)
            && !b.inner().store.epoch_entries().is_empty()
    })
    .await;
    api.create_topic(&addr, &TopicConfig::new(TOPIC, 1))
        .await
        .expect("create");
    for i in 0..3 {
        api.send(
            &addr,
            &SendRequest {
                producer_group: PRODUCER_GROUP.to_string(),
                topic: TOPIC.to_string(),
                body: Bytes::from(format!("epoch message {i}")),
                ..SendRequest::default()
            },
        )
        .await
        .expect("send");
    }
    let response = api
        .remoting()
        .invoke(
            &addr,
            RemotingCommand::request(request_code::GET_BROKER_EPOCH_CACHE),
            Duration::from_secs(5),
        )
        .await
        .expect("answered");
    assert_eq!(response.code, response_code::SUCCESS);
    let max = broker.inner().store.max_phy_offset();
    let epochs = broker.inner().store.epoch_entries();
    let id = broker
        .inner()
        .replicas
        .as_ref()
        .expect("replicas")
        .broker_id();
    let list: Vec<String> = epochs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let end = epochs.get(i + 1).map_or(i64::MAX, |n| n.start_offset);
            format!(
                r#"{{"endOffset":{end},"epoch":{},"startOffset":{}}}"#,
                e.epoch, e.start_offset
            )
        })
        .collect();
    assert_eq!(
        String::from_utf8_lossy(&response.body),
        format!(
            r#"{{"brokerId":{id},"brokerName":"manage-b","clusterName":"DefaultCluster","epochList":[{}],"maxOffset":{max}}}"#,
            list.join(",")
        )
    );
    let cache = api.broker_epoch_cache(&addr).await.expect("1007");
    assert_eq!(cache.broker_id, 1);
    assert!(cache.max_offset > 0);
    assert_eq!(
        cache.epoch_list.last().map(|e| e.end_offset),
        Some(i64::MAX)
    );
    assert_eq!(cache.epoch_list[0].start_offset, 0);
    let distinct: BTreeSet<i32> = cache.epoch_list.iter().map(|e| e.epoch).collect();
    assert_eq!(distinct.len(), cache.epoch_list.len());
    let config = api.broker_config(&addr).await.expect("26");
    assert_eq!(config.properties["brokerRole"], "SYNC_MASTER");
    assert_eq!(config.properties["brokerId"], "1");
    assert_eq!(config.properties["enableControllerMode"], "true");
}
