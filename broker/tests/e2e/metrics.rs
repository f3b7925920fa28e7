//! The broker's Prometheus metrics and runtime statistics, read from a real broker on loopback
//! after real sends, pulls, POPs and offset commits: the collector's OpenMetrics text,
//! GET_BROKER_RUNTIME_INFO's rates, GET_CONSUME_STATS' consumeTps, and `rocketmq_rpc_latency`
//! recorded by the broker's Remoting server.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use rocketraft_broker::store::FlushDiskType;
use rocketraft_broker::{Broker, BrokerConfig};
use rocketraft_common::consts::{property, pull_sys_flag, sys_flag};
use rocketraft_common::metrics::text::sample;
use rocketraft_common::metrics::{encode, label, Registry, RpcMetrics};
use rocketraft_common::TopicConfig;
use rocketraft_nameserver::{NameServer, NamesrvConfig};
use rocketraft_remoting::api::{MqClientApi, PullRequest, PullStatus, SendRequest};
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::{ClientConfig, RemotingClient, RemotingCommand};

const TOPIC: &str = "MetricsTopic";
const GROUP: &str = "metrics-cg";
const POP_GROUP: &str = "metrics-pop-cg";
const SENT: usize = 5;

struct Node {
    namesrv: NameServer,
    broker: Broker,
    api: MqClientApi,
    addr: String,
    rpc: RpcMetrics,
}

async fn start(dir: &std::path::Path) -> Node {
    let namesrv = NameServer::start(NamesrvConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..NamesrvConfig::default()
    })
    .await
    .expect("namesrv starts");
    let rpc = RpcMetrics::standalone(label("node_type", "broker"));
    let mut config = BrokerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        namesrv_addr: namesrv.local_addr().to_string(),
        auto_create_topic_enable: false,
        rpc_metrics: Some(rpc.clone()),
        ..BrokerConfig::default()
    };
    config.store.store_root = dir.to_path_buf();
    config.store.commitlog_segment_size = 256 * 1024;
    config.store.flush_disk_type = FlushDiskType::SyncFlush;
    config.store.pretouch = false;
    let broker = Broker::start(config).await.expect("broker starts");
    let api = MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(5),
    );
    let addr = broker.local_addr().to_string();
    api.create_topic(&addr, &TopicConfig::new(TOPIC, 1))
        .await
        .expect("create topic");
    Node {
        namesrv,
        broker,
        api,
        addr,
        rpc,
    }
}

/// The broker's metrics as a scrape returns them.
fn scrape(node: &Node) -> String {
    let mut registry = Registry::default();
    registry.register_collector(node.broker.metrics_collector());
    encode(&registry).expect("encodes")
}

fn lag_series(name: &str) -> String {
    format!(
        "{name}{{consumer_group=\"{GROUP}\",topic=\"{TOPIC}\",is_retry=\"false\",is_system=\"false\"}}"
    )
}

async fn send_all(node: &Node) {
    for i in 0..SENT {
        let request = SendRequest {
            producer_group: "metrics-pg".to_string(),
            topic: TOPIC.to_string(),
            queue_id: 0,
            body: Bytes::from(format!("metrics body {i}")),
            properties: BTreeMap::new(),
            ..SendRequest::default()
        };
        let sent = node.api.send(&node.addr, &request).await.expect("send");
        assert_eq!(sent.code, response_code::SUCCESS);
    }
}

async fn runtime_info(node: &Node) -> BTreeMap<String, String> {
    let response = node
        .api
        .call(
            &node.addr,
            RemotingCommand::request(request_code::GET_BROKER_RUNTIME_INFO),
            &[response_code::SUCCESS],
        )
        .await
        .expect("GET_BROKER_RUNTIME_INFO");
    let body: serde_json::Value = serde_json::from_slice(&response.body).expect("JSON body");
    serde_json::from_value(body["table"].clone()).expect("a table of strings")
}

/// The three rates of a RocketMQ TPS string ("x.x y.y z.z").
fn rates(text: &str) -> Vec<f64> {
    text.split(' ')
        .map(|r| {
            r.parse()
                .unwrap_or_else(|e| panic!("rate {r:?} in {text:?}: {e}"))
        })
        .collect()
}

async fn consume_tps(node: &Node, group: &str) -> f64 {
    let request = RemotingCommand::request(request_code::GET_CONSUME_STATS)
        .with_ext("consumerGroup", group)
        .with_ext("topic", TOPIC);
    let response = node
        .api
        .call(&node.addr, request, &[response_code::SUCCESS])
        .await
        .expect("GET_CONSUME_STATS");
    let body: serde_json::Value = serde_json::from_slice(&response.body).expect("JSON body");
    body["consumeTps"].as_f64().expect("consumeTps is a number")
}

#[tokio::test]
async fn sends_pulls_and_commits_show_in_metrics_and_runtime_stats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;

    // Nothing sent yet: no messages in, and the rates are zero.
    let before = scrape(&node);
    assert!(!before.contains(&format!("topic=\"{TOPIC}\"")), "{before}");
    assert!(
        sample(&before, "rocketmq_topic_number").is_some_and(|n| n >= 1.0),
        "{before}"
    );
    assert_eq!(runtime_info(&node).await["msgPutTotalTodayNow"], "0");

    send_all(&node).await;

    // Pull them all as GROUP, to know the stored size of each.
    let pulled = node
        .api
        .pull(
            &node.addr,
            &PullRequest {
                consumer_group: GROUP.to_string(),
                topic: TOPIC.to_string(),
                queue_id: 0,
                queue_offset: 0,
                max_msg_nums: 32,
                sys_flag: pull_sys_flag::SUBSCRIPTION,
                commit_offset: -1,
                suspend_timeout_ms: 0,
                subscription: Some("*".to_string()),
            },
        )
        .await
        .expect("pull");
    assert_eq!(pulled.status, PullStatus::Found);
    assert_eq!(pulled.messages.len(), SENT);
    let bytes: i64 = pulled
        .messages
        .iter()
        .map(|m| i64::from(m.store_size))
        .sum();

    // Commit part of them: the lag is what is left.
    node.api
        .update_consumer_offset(&node.addr, GROUP, TOPIC, 0, 2)
        .await
        .expect("commit 2");
    let text = scrape(&node);
    let labels_in = format!("{{topic=\"{TOPIC}\",message_type=\"normal\",is_system=\"false\"}}");
    assert_eq!(
        sample(&text, &format!("rocketmq_messages_in_total{labels_in}")),
        Some(SENT as f64),
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!("rocketmq_throughput_in_total{labels_in}")),
        Some(bytes as f64),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!("rocketmq_message_size_count{{topic=\"{TOPIC}\",message_type=\"normal\"}}")
        ),
        Some(SENT as f64),
        "{text}"
    );
    let labels_out = format!(
        "{{topic=\"{TOPIC}\",consumer_group=\"{GROUP}\",is_retry=\"false\",is_system=\"false\"}}"
    );
    assert_eq!(
        sample(&text, &format!("rocketmq_messages_out_total{labels_out}")),
        Some(SENT as f64),
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!("rocketmq_throughput_out_total{labels_out}")),
        Some(bytes as f64),
        "{text}"
    );
    assert_eq!(
        sample(&text, &lag_series("rocketmq_consumer_lag_messages")),
        Some((SENT - 2) as f64),
        "{text}"
    );
    assert_eq!(
        sample(&text, &lag_series("rocketmq_consumer_ready_messages")),
        Some((SENT - 2) as f64),
        "{text}"
    );
    assert!(
        sample(&text, &lag_series("rocketmq_consumer_lag_latency")).is_some_and(|ms| ms >= 0.0),
        "{text}"
    );
    let max_offset = sample(&text, "rocketraft_commitlog_max_offset").expect("max offset");
    assert!(max_offset >= bytes as f64, "{text}");
    assert!(
        sample(
            &text,
            "rocketmq_storage_dispatch_behind_bytes{storage_type=\"local\",storage_medium=\"disk\"}"
        )
        .is_some(),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "rocketmq_storage_size{storage_type=\"local\",storage_medium=\"disk\"}"
        )
        .is_some_and(|b| b > 0.0),
        "{text}"
    );
    assert_eq!(sample(&text, "rocketraft_broker_is_master"), Some(1.0));
    // No node labels and no rocketmq_rpc_latency: the process adds those.
    assert!(!text.contains("node_id="), "{text}");
    assert!(!text.contains("rocketmq_rpc_latency"), "{text}");

    // Everything committed: no lag.
    node.api
        .update_consumer_offset(&node.addr, GROUP, TOPIC, 0, SENT as i64)
        .await
        .expect("commit all");
    let text = scrape(&node);
    assert_eq!(
        sample(&text, &lag_series("rocketmq_consumer_lag_messages")),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &lag_series("rocketmq_consumer_lag_latency")),
        Some(0.0),
        "{text}"
    );

    // The runtime info's rates: the sends and the pull happened within the last 10 s.
    let info = runtime_info(&node).await;
    assert_eq!(info["msgPutTotalTodayNow"], SENT.to_string());
    assert_eq!(info["msgGetTotalTodayNow"], SENT.to_string());
    let put = rates(&info["putTps"]);
    assert_eq!(put.len(), 3, "{info:?}");
    assert!(put.iter().all(|r| *r > 0.0), "{info:?}");
    assert!(rates(&info["getTransferredTps"])[0] > 0.0, "{info:?}");
    assert!(rates(&info["getFoundTps"])[0] > 0.0, "{info:?}");
    assert_eq!(rates(&info["getTotalTps"]).len(), 3, "{info:?}");
    assert_eq!(info["dispatchBehindBytes"], "0", "{info:?}");
    assert!(info.contains_key("commitLogDiskRatio"), "{info:?}");
    assert!(info.contains_key("remainHowManyDataToFlush"), "{info:?}");

    // consumeTps: the group took SENT messages within the last minute; another group none.
    assert!(consume_tps(&node, GROUP).await > 0.0);
    assert_eq!(consume_tps(&node, "nobody").await, 0.0);

    // A POP delivery counts too, under its own group.
    let popped = node
        .api
        .pop(&node.addr, POP_GROUP, TOPIC, 0, 32, 60_000, 0, false)
        .await
        .expect("pop");
    assert_eq!(popped.len(), SENT);
    let text = scrape(&node);
    assert_eq!(
        sample(
            &text,
            &format!(
                "rocketmq_messages_out_total{{topic=\"{TOPIC}\",consumer_group=\"{POP_GROUP}\",is_retry=\"false\",is_system=\"false\"}}"
            )
        ),
        Some(SENT as f64),
        "{text}"
    );
    assert!(consume_tps(&node, POP_GROUP).await > 0.0);
    // No retry message went out: no is_retry="true" series of messages out.
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("rocketmq_messages_out_total{")
                && l.contains("is_retry=\"true\"")),
        "{text}"
    );

    // The Remoting server recorded the sends in the process's rocketmq_rpc_latency family.
    let mut registry = Registry::default();
    registry.register_collector(Box::new(node.rpc.clone()));
    let rpc = encode(&registry).expect("encodes");
    let send_code = format!("request_code=\"{}\"", request_code::SEND_MESSAGE_V2);
    let send_count = rpc
        .lines()
        .filter(|l| l.starts_with("rocketmq_rpc_latency_count{") && l.contains(&send_code))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert_eq!(send_count, SENT as f64, "{rpc}");
    assert!(rpc.contains("node_type=\"broker\""), "{rpc}");

    node.broker.shutdown().await;
    node.namesrv.shutdown().await;
}

/// A half message of TOPIC; its (half topic queue offset, CommitLog offset).
async fn prepare(node: &Node, body: &str) -> (i64, i64) {
    let request = SendRequest {
        producer_group: "metrics-tg".to_string(),
        topic: TOPIC.to_string(),
        queue_id: 0,
        body: Bytes::from(body.to_string()),
        properties: BTreeMap::from([
            (
                property::TRANSACTION_PREPARED.to_string(),
                "true".to_string(),
            ),
            (
                property::PRODUCER_GROUP.to_string(),
                "metrics-tg".to_string(),
            ),
        ]),
        sys_flag: sys_flag::TRANSACTION_PREPARED_TYPE,
        ..SendRequest::default()
    };
    let sent = node.api.send(&node.addr, &request).await.expect("prepare");
    assert_eq!(sent.code, response_code::SUCCESS);
    let (_, phy) = rocketraft_common::message::decode_offset_msg_id(&sent.msg_id).expect("id");
    (sent.queue_offset, phy)
}

async fn end_transaction(node: &Node, (offset, phy): (i64, i64), decision: i32) {
    let request = RemotingCommand::request(request_code::END_TRANSACTION)
        .with_ext("producerGroup", "metrics-tg")
        .with_ext("tranStateTableOffset", offset)
        .with_ext("commitLogOffset", phy)
        .with_ext("commitOrRollback", decision)
        .with_ext("fromTransactionCheck", false);
    node.api
        .call(&node.addr, request, &[response_code::SUCCESS])
        .await
        .expect("END_TRANSACTION");
}

#[tokio::test]
async fn transactions_timers_and_creates_show_per_topic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let topic = format!("topic=\"{TOPIC}\"");

    // `start` created TOPIC once; a topic named like a system topic is refused.
    let refused = RemotingCommand::request(request_code::UPDATE_AND_CREATE_TOPIC)
        .with_ext("topic", "TBW102")
        .with_ext("readQueueNums", 1)
        .with_ext("writeQueueNums", 1)
        .with_ext("perm", 6);
    node.api
        .call(&node.addr, refused, &[response_code::SYSTEM_ERROR])
        .await
        .expect("refused create");
    let group = RemotingCommand::request(request_code::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
        .with_body(br#"{"groupName":"metrics-created-cg","consumeEnable":true}"#.to_vec());
    node.api
        .call(&node.addr, group, &[response_code::SUCCESS])
        .await
        .expect("create group");
    let text = scrape(&node);
    let created = |name: &str, status: &str| {
        sample(
            &text,
            &format!("{name}_count{{invocation_status=\"{status}\",is_system=\"false\"}}"),
        )
    };
    assert_eq!(
        created("rocketmq_topic_create_execution_time", "success"),
        Some(1.0),
        "{text}"
    );
    // TBW102 is RocketMQ's auto-create key topic: a system topic.
    assert_eq!(
        sample(
            &text,
            "rocketmq_topic_create_execution_time_count{invocation_status=\"failure\",is_system=\"true\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        created("rocketmq_consumer_group_create_execution_time", "success"),
        Some(1.0),
        "{text}"
    );

    // Two undecided half messages of TOPIC; one committed, one rolled back.
    let committed = prepare(&node, "to commit").await;
    let rolled_back = prepare(&node, "to roll back").await;
    let text = scrape(&node);
    assert_eq!(
        sample(&text, &format!("rocketmq_half_messages{{{topic}}}")),
        Some(2.0),
        "{text}"
    );
    end_transaction(&node, committed, sys_flag::TRANSACTION_COMMIT_TYPE).await;
    let text = scrape(&node);
    assert_eq!(
        sample(&text, &format!("rocketmq_half_messages{{{topic}}}")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!("rocketmq_commit_messages_total{{{topic}}}")),
        Some(1.0),
        "{text}"
    );
    // Committed within seconds of its birth: in the first bucket (5 s).
    assert_eq!(
        sample(
            &text,
            &format!("rocketmq_finish_message_latency_bucket{{le=\"5.0\",{topic}}}")
        ),
        Some(1.0),
        "{text}"
    );
    end_transaction(&node, rolled_back, sys_flag::TRANSACTION_ROLLBACK_TYPE).await;
    let text = scrape(&node);
    assert!(!text.contains("rocketmq_half_messages{"), "{text}");
    assert_eq!(
        sample(
            &text,
            &format!("rocketmq_rollback_messages_total{{{topic}}}")
        ),
        Some(1.0),
        "{text}"
    );

    // A message delayed by 1.5 s waits in the timer, then is delivered.
    let delayed = SendRequest {
        producer_group: "metrics-pg".to_string(),
        topic: TOPIC.to_string(),
        queue_id: 0,
        body: Bytes::from_static(b"later"),
        properties: BTreeMap::from([(property::TIMER_DELAY_MS.to_string(), "1500".to_string())]),
        ..SendRequest::default()
    };
    let sent = node.api.send(&node.addr, &delayed).await.expect("send");
    assert_eq!(sent.code, response_code::SUCCESS);
    let text = scrape(&node);
    assert_eq!(
        sample(&text, &format!("rocketmq_timing_messages{{{topic}}}")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!("rocketmq_timer_enqueue_total{{{topic}}}")),
        Some(1.0),
        "{text}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let text = loop {
        let text = scrape(&node);
        if sample(&text, &format!("rocketmq_timer_dequeue_total{{{topic}}}")) == Some(1.0) {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the timer never delivered: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!text.contains("rocketmq_timing_messages{"), "{text}");
    assert_eq!(
        sample(&text, "rocketmq_timer_dequeue_lag"),
        Some(0.0),
        "{text}"
    );

    node.broker.shutdown().await;
    node.namesrv.shutdown().await;
}
