//! GET_TOPIC_STATS_INFO (202) and VIEW_BROKER_STATS_DATA (315) from a real broker on loopback
//! after real sends and pulls: each queue's exact offsets and last store time, RocketMQ's
//! fastjson bytes, the minute/hour/day sums of puts per topic and of gets per `topic@group`, and
//! RocketMQ's answers to an unknown topic, an unknown statistic and malformed headers.

use std::time::Duration;

use bytes::Bytes;
use rocketraft_broker::store::FlushDiskType;
use rocketraft_broker::{Broker, BrokerConfig};
use rocketraft_common::consts::pull_sys_flag;
use rocketraft_common::protocol::{from_json_body, BrokerStatsData};
use rocketraft_common::time::now_ms;
use rocketraft_common::TopicConfig;
use rocketraft_nameserver::{NameServer, NamesrvConfig};
use rocketraft_remoting::api::{MqClientApi, PullRequest, PullStatus, SendRequest};
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::{ClientConfig, RemotingClient, RemotingCommand};

const TOPIC: &str = "StatsTopic";
const QUEUES: i32 = 3;
const SENT: i32 = 7;
const GROUP: &str = "stats-cg";

struct Node {
    namesrv: NameServer,
    broker: Broker,
    api: MqClientApi,
    addr: String,
}

async fn start(dir: &std::path::Path) -> Node {
    let namesrv = NameServer::start(NamesrvConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..NamesrvConfig::default()
    })
    .await
    .expect("namesrv starts");
    let mut config = BrokerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        namesrv_addr: namesrv.local_addr().to_string(),
        auto_create_topic_enable: false,
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

fn topic_stats_request(topic: &str) -> RemotingCommand {
    RemotingCommand::request(request_code::GET_TOPIC_STATS_INFO).with_ext("topic", topic)
}

fn view_request(name: &str, key: &str) -> RemotingCommand {
    RemotingCommand::request(request_code::VIEW_BROKER_STATS_DATA)
        .with_ext("statsName", name)
        .with_ext("statsKey", key)
}

async fn view(node: &Node, name: &str, key: &str) -> BrokerStatsData {
    node.api
        .broker_stats(&node.addr, name, key)
        .await
        .expect("315 answers")
        .unwrap_or_else(|| panic!("the broker has {name} {key}"))
}

#[tokio::test]
async fn queue_offsets_and_put_and_get_sums_after_real_traffic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    node.api
        .create_topic(&node.addr, &TopicConfig::new(TOPIC, QUEUES))
        .await
        .expect("create topic");

    // Before any message: every queue at 0, no put statistic yet (RocketMQ creates the item
    // with the first put, and answers SYSTEM_ERROR before).
    let empty = node.api.topic_stats(&node.addr, TOPIC).await.expect("202");
    assert_eq!(empty.offset_table.len(), QUEUES as usize);
    assert!(empty
        .offset_table
        .iter()
        .all(|(_, o)| o.min_offset == 0 && o.max_offset == 0 && o.last_update_timestamp == 0));
    assert_eq!(empty.topic_put_tps, 0.0);
    assert_eq!(
        node.api
            .broker_stats(&node.addr, "TOPIC_PUT_NUMS", TOPIC)
            .await
            .expect("315 answers"),
        None
    );

    // 7 messages round-robin over 3 queues: 3, 2, 2.
    let before = now_ms();
    for i in 0..SENT {
        let request = SendRequest {
            producer_group: "stats-pg".to_string(),
            topic: TOPIC.to_string(),
            queue_id: i % QUEUES,
            body: Bytes::from(format!("stats body {i}")),
            ..SendRequest::default()
        };
        let sent = node.api.send(&node.addr, &request).await.expect("send");
        assert_eq!(sent.code, response_code::SUCCESS);
    }
    let after = now_ms();

    let table = node.api.topic_stats(&node.addr, TOPIC).await.expect("202");
    let mut rows: Vec<_> = table
        .offset_table
        .iter()
        .map(|(mq, o)| (mq.queue_id, mq.topic.as_str(), mq.broker_name.as_str(), *o))
        .collect();
    rows.sort_by_key(|r| r.0);
    assert_eq!(rows.len(), QUEUES as usize);
    for (queue_id, topic, broker, offset) in &rows {
        let expected = (SENT + QUEUES - 1 - queue_id) / QUEUES;
        assert_eq!(*topic, TOPIC);
        assert_eq!(*broker, "broker-a");
        assert_eq!(offset.min_offset, 0, "queue {queue_id}");
        assert_eq!(offset.max_offset, i64::from(expected), "queue {queue_id}");
        assert!(
            (before..=after).contains(&offset.last_update_timestamp),
            "queue {queue_id}: last update {} not within {before}..={after}",
            offset.last_update_timestamp
        );
    }
    assert!(table.topic_put_tps > 0.0, "{table:?}");

    // The bytes are RocketMQ's fastjson: a map keyed by MessageQueue objects, fields sorted.
    let response = raw(&node, topic_stats_request(TOPIC)).await;
    assert_eq!(response.code, response_code::SUCCESS);
    let text = String::from_utf8(response.body.to_vec()).expect("utf8");
    assert!(
        text.starts_with(
            r#"{"offsetTable":{{"brokerName":"broker-a","queueId":0,"topic":"StatsTopic"}:{"lastUpdateTimestamp":"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#","maxOffset":3,"minOffset":0},{"brokerName":"broker-a","queueId":1,"#),
        "{text}"
    );
    assert!(text.contains(r#"},"topicPutTps":"#), "{text}");

    // Puts: 7 messages in 7 requests over the minute, the hour and the day.
    let puts = view(&node, "TOPIC_PUT_NUMS", TOPIC).await;
    for (window, item) in [
        ("minute", puts.stats_minute),
        ("hour", puts.stats_hour),
        ("day", puts.stats_day),
    ] {
        assert_eq!(item.sum, i64::from(SENT), "{window}: {puts:?}");
        assert_eq!(item.avgpt, 1.0, "{window}: {puts:?}");
        assert!(item.tps > 0.0, "{window}: {puts:?}");
    }
    // The minute's rate is over at most a minute and a seeded 10 s: at least 7/70 a second.
    assert!(puts.stats_minute.tps >= f64::from(SENT) / 70.0, "{puts:?}");
    let size = view(&node, "TOPIC_PUT_SIZE", TOPIC).await;
    assert!(
        size.stats_minute.sum > i64::from(SENT) * "stats body 0".len() as i64,
        "{size:?}"
    );
    let broker_puts = view(&node, "BROKER_PUT_NUMS", "DefaultCluster").await;
    assert_eq!(broker_puts.stats_minute.sum, i64::from(SENT));

    // Gets: pull queues 0 and 1 (3 + 2 messages) as the group.
    let mut pulled = 0;
    for queue_id in [0, 1] {
        let result = node
            .api
            .pull(
                &node.addr,
                &PullRequest {
                    consumer_group: GROUP.to_string(),
                    topic: TOPIC.to_string(),
                    queue_id,
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
        assert_eq!(result.status, PullStatus::Found);
        pulled += result.messages.len() as i64;
    }
    assert_eq!(pulled, 5);
    let key = format!("{TOPIC}@{GROUP}");
    let gets = view(&node, "GROUP_GET_NUMS", &key).await;
    assert_eq!(gets.stats_minute.sum, pulled, "{gets:?}");
    assert_eq!(gets.stats_day.sum, pulled, "{gets:?}");
    assert_eq!(gets.stats_minute.avgpt, 2.5, "two pulls: {gets:?}");
    assert!(view(&node, "GROUP_GET_SIZE", &key).await.stats_hour.sum > 0);
    assert_eq!(
        view(&node, "BROKER_GET_NUMS", "DefaultCluster")
            .await
            .stats_minute
            .sum,
        pulled
    );

    // The bytes of 315: BrokerStatsData as fastjson writes it.
    let response = raw(&node, view_request("GROUP_GET_NUMS", &key)).await;
    assert_eq!(response.code, response_code::SUCCESS);
    let text = String::from_utf8(response.body.to_vec()).expect("utf8");
    assert!(
        text.starts_with(r#"{"statsDay":{"avgpt":2.5,"sum":5,"tps":"#),
        "{text}"
    );
    assert!(
        text.contains(r#"},"statsHour":{"avgpt":2.5,"sum":5,"tps":"#),
        "{text}"
    );
    assert!(
        text.contains(r#"},"statsMinute":{"avgpt":2.5,"sum":5,"tps":"#),
        "{text}"
    );
    let parsed: BrokerStatsData = from_json_body(&response.body).expect("parses");
    assert_eq!(parsed.stats_minute.sum, 5);

    // A deleted topic's statistics go with it.
    let response = raw(
        &node,
        RemotingCommand::request(request_code::DELETE_TOPIC_IN_BROKER).with_ext("topic", TOPIC),
    )
    .await;
    assert_eq!(response.code, response_code::SUCCESS);
    assert_eq!(
        node.api
            .broker_stats(&node.addr, "TOPIC_PUT_NUMS", TOPIC)
            .await
            .expect("315 answers"),
        None
    );
    node.broker.shutdown().await;
    node.namesrv.shutdown().await;
}

#[tokio::test]
async fn unknown_topics_and_stats_and_malformed_headers_get_rocketmq_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    node.api
        .create_topic(&node.addr, &TopicConfig::new(TOPIC, 2))
        .await
        .expect("create topic");

    // An unknown topic: TOPIC_NOT_EXIST with RocketMQ's remark.
    let response = raw(&node, topic_stats_request("NoSuchTopic")).await;
    assert_eq!(response.code, response_code::TOPIC_NOT_EXIST);
    assert_eq!(
        response.remark.as_deref(),
        Some("topic[NoSuchTopic] not exist")
    );
    let refused = node
        .api
        .topic_stats(&node.addr, "NoSuchTopic")
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Some(response_code::TOPIC_NOT_EXIST));

    // An unknown key or name: SYSTEM_ERROR "The stats <name> <key> not exist".
    for (name, key) in [
        ("TOPIC_PUT_NUMS", "NoSuchTopic"),
        ("GROUP_GET_NUMS", "StatsTopic@nobody"),
        ("BROKER_PUT_NUMS", "NoSuchCluster"),
        ("NO_SUCH_STATS", "StatsTopic"),
    ] {
        let response = raw(&node, view_request(name, key)).await;
        assert_eq!(response.code, response_code::SYSTEM_ERROR, "{name} {key}");
        assert_eq!(
            response.remark.as_deref(),
            Some(format!("The stats <{name}> <{key}> not exist").as_str())
        );
        assert_eq!(
            node.api
                .broker_stats(&node.addr, name, key)
                .await
                .expect("answers"),
            None
        );
    }

    // Malformed headers: a clear SYSTEM_ERROR naming the missing field.
    for (request, field) in [
        (
            RemotingCommand::request(request_code::GET_TOPIC_STATS_INFO),
            "topic",
        ),
        (
            RemotingCommand::request(request_code::VIEW_BROKER_STATS_DATA)
                .with_ext("statsName", "TOPIC_PUT_NUMS"),
            "statsKey",
        ),
        (
            RemotingCommand::request(request_code::VIEW_BROKER_STATS_DATA)
                .with_ext("statsKey", TOPIC),
            "statsName",
        ),
    ] {
        let response = raw(&node, request).await;
        assert_eq!(response.code, response_code::SYSTEM_ERROR);
        let remark = response.remark.unwrap_or_default();
        assert!(remark.contains(field), "{field}: {remark}");
    }

    // The broker keeps serving on the same connection.
    let table = node.api.topic_stats(&node.addr, TOPIC).await.expect("202");
    assert_eq!(table.offset_table.len(), 2);
    let broker_puts = view(&node, "BROKER_PUT_NUMS", "DefaultCluster").await;
    assert_eq!(broker_puts.stats_day.sum, 0);
    node.broker.shutdown().await;
    node.namesrv.shutdown().await;
}
