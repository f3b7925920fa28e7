//! The broker and NameServer as real servers on loopback ports, driven through the Remoting
//! client API: send, pull, offsets, routes, long polling, bad requests, restart.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketraft_broker::store::FlushDiskType;
use rocketraft_broker::{Broker, BrokerConfig};
use rocketraft_common::consts::{property, pull_sys_flag};
use rocketraft_common::protocol::{ConsumerData, HeartbeatData, SubscriptionData};
use rocketraft_common::TopicConfig;
use rocketraft_nameserver::{NameServer, NamesrvConfig};
use rocketraft_remoting::api::{MqClientApi, PullRequest, PullStatus, SendRequest};
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::{ClientConfig, RemotingClient, RemotingCommand};

struct Cluster {
    namesrv: NameServer,
    broker: Broker,
    api: MqClientApi,
    namesrv_addr: String,
    broker_addr: String,
}

fn broker_config(dir: &std::path::Path, namesrv: SocketAddr, auto_create: bool) -> BrokerConfig {
    let mut config = BrokerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        namesrv_addr: namesrv.to_string(),
        auto_create_topic_enable: auto_create,
        ..BrokerConfig::default()
    };
    config.store.store_root = dir.to_path_buf();
    config.store.commitlog_segment_size = 256 * 1024;
    config.store.flush_disk_type = FlushDiskType::SyncFlush;
    config.store.pretouch = false;
    config.store.max_message_size = 64 * 1024;
    config
}

async fn start(dir: &std::path::Path, auto_create: bool) -> Cluster {
    start_with(dir, auto_create, |_| {}).await
}

/// [`start`] with the broker's config changed by `tune`.
async fn start_with(
    dir: &std::path::Path,
    auto_create: bool,
    tune: impl FnOnce(&mut BrokerConfig),
) -> Cluster {
    let namesrv = NameServer::start(NamesrvConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..NamesrvConfig::default()
    })
    .await
    .expect("namesrv starts");
    let mut config = broker_config(dir, namesrv.local_addr(), auto_create);
    // The advertised address must be the bound one: bind first with port 0, then advertise it.
    config.advertised_addr = None;
    tune(&mut config);
    let broker = Broker::start(config).await.expect("broker starts");
    let api = MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(5),
    );
    Cluster {
        namesrv_addr: namesrv.local_addr().to_string(),
        broker_addr: broker.local_addr().to_string(),
        namesrv,
        broker,
        api,
    }
}

fn message(topic: &str, queue_id: i32, body: &str, tags: Option<&str>) -> SendRequest {
    let mut properties = BTreeMap::new();
    if let Some(tags) = tags {
        properties.insert(property::TAGS.to_string(), tags.to_string());
    }
    properties.insert(property::KEYS.to_string(), format!("key-{body}"));
    SendRequest {
        producer_group: "pg".to_string(),
        topic: topic.to_string(),
        queue_id,
        body: Bytes::from(body.to_string()),
        properties,
        ..SendRequest::default()
    }
}

fn pull(topic: &str, queue_id: i32, offset: i64, sub: &str) -> PullRequest {
    PullRequest {
        consumer_group: "cg".to_string(),
        topic: topic.to_string(),
        queue_id,
        queue_offset: offset,
        max_msg_nums: 32,
        sys_flag: pull_sys_flag::SUBSCRIPTION,
        commit_offset: -1,
        suspend_timeout_ms: 0,
        subscription: Some(sub.to_string()),
    }
}

async fn create_topic(c: &Cluster, topic: &str, queues: i32) {
    c.api
        .create_topic(&c.broker_addr, &TopicConfig::new(topic, queues))
        .await
        .expect("create topic");
}

#[tokio::test]
async fn send_pull_and_offsets_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = start(dir.path(), false).await;
    create_topic(&c, "Orders", 2).await;

    // The NameServer learns the topic from the broker's immediate re-registration.
    let deadline = Instant::now() + Duration::from_secs(10);
    let route = loop {
        match c.api.topic_route(&c.namesrv_addr, "Orders").await {
            Ok(r) => break r,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no route: {e}"),
        }
    };
    assert_eq!(route.queue_datas[0].write_queue_nums, 2);
    assert_eq!(
        route.broker_datas[0].master_addr(),
        Some(c.broker_addr.as_str())
    );
    let cluster = c
        .api
        .cluster_info(&c.namesrv_addr)
        .await
        .expect("cluster info");
    assert!(cluster.cluster_addr_table["DefaultCluster"].contains("broker-a"));
    assert!(c
        .api
        .all_topics(&c.namesrv_addr)
        .await
        .expect("topics")
        .topic_list
        .contains("Orders"));

    let before = rocketraft_common::time::now_ms();
    let mut sent = Vec::new();
    for i in 0..60 {
        let tags = if i % 2 == 0 { "TagA" } else { "TagB" };
        let r = c
            .api
            .send(
                &c.broker_addr,
                &message("Orders", 1, &format!("m{i}"), Some(tags)),
            )
            .await
            .expect("send");
        assert_eq!(r.code, response_code::SUCCESS);
        assert_eq!(r.queue_id, 1);
        assert_eq!(r.queue_offset, i);
        assert_eq!(
            r.msg_id.len(),
            32,
            "offset msg id is 32 hex digits: {}",
            r.msg_id
        );
        sent.push(r);
    }
    assert_eq!(
        c.api
            .max_offset(&c.broker_addr, "Orders", 1)
            .await
            .expect("max"),
        60
    );
    assert_eq!(
        c.api
            .min_offset(&c.broker_addr, "Orders", 1)
            .await
            .expect("min"),
        0
    );
    assert_eq!(
        c.api
            .max_offset(&c.broker_addr, "Orders", 0)
            .await
            .expect("max q0"),
        0
    );

    // Pull everything, in order, with bodies, properties and ids intact.
    let mut offset = 0;
    let mut bodies = Vec::new();
    while offset < 60 {
        let r = c
            .api
            .pull(&c.broker_addr, &pull("Orders", 1, offset, "*"))
            .await
            .expect("pull");
        assert_eq!(r.status, PullStatus::Found);
        for m in &r.messages {
            assert_eq!(m.queue_offset, offset);
            assert_eq!(m.queue_id, 1);
            assert_eq!(m.msg_id, sent[offset as usize].msg_id);
            assert_eq!(m.keys(), Some(format!("key-m{offset}").as_str()));
            assert!(m.uniq_key().is_some());
            bodies.push(String::from_utf8(m.body.to_vec()).expect("utf8"));
            offset += 1;
        }
        assert_eq!(r.next_begin_offset, offset);
    }
    assert_eq!(bodies, (0..60).map(|i| format!("m{i}")).collect::<Vec<_>>());
    let r = c
        .api
        .pull(&c.broker_addr, &pull("Orders", 1, 60, "*"))
        .await
        .expect("pull end");
    assert_eq!(r.status, PullStatus::NoNewMsg);
    let r = c
        .api
        .pull(&c.broker_addr, &pull("Orders", 1, 1000, "*"))
        .await
        .expect("pull past");
    assert_eq!(r.status, PullStatus::OffsetIllegal);

    // Tag filtering: only TagB comes back.
    let mut tagged = Vec::new();
    let mut offset = 0;
    while offset < 60 {
        let r = c
            .api
            .pull(&c.broker_addr, &pull("Orders", 1, offset, "TagB"))
            .await
            .expect("pull tags");
        tagged.extend(
            r.messages
                .iter()
                .map(|m| m.tags().unwrap_or_default().to_string()),
        );
        offset = r.next_begin_offset;
    }
    assert_eq!(tagged.len(), 30);
    assert!(tagged.iter().all(|t| t == "TagB"));

    // Consumer offsets.
    assert_eq!(
        c.api
            .query_consumer_offset(&c.broker_addr, "cg", "Orders", 1)
            .await
            .expect("query"),
        Some(0),
        "a new group on a queue that still has its first message starts at 0"
    );
    c.api
        .update_consumer_offset(&c.broker_addr, "cg", "Orders", 1, 42)
        .await
        .expect("update");
    assert_eq!(
        c.api
            .query_consumer_offset(&c.broker_addr, "cg", "Orders", 1)
            .await
            .expect("query"),
        Some(42)
    );
    let found = c
        .api
        .search_offset(&c.broker_addr, "Orders", 1, before - 1000)
        .await
        .expect("search");
    assert_eq!(found, 0);
    let found = c
        .api
        .search_offset(
            &c.broker_addr,
            "Orders",
            1,
            rocketraft_common::time::now_ms() + 60_000,
        )
        .await
        .expect("search future");
    assert_eq!(found, 60);

    // Batch: consecutive offsets, one id per message.
    let batch: Vec<(Bytes, BTreeMap<String, String>)> = (0..5)
        .map(|i| (Bytes::from(format!("b{i}")), BTreeMap::new()))
        .collect();
    let r = c
        .api
        .send_batch(&c.broker_addr, "pg", "Orders", 0, &batch)
        .await
        .expect("batch");
    assert_eq!(r.queue_offset, 0);
    assert_eq!(r.msg_id.split(',').count(), 5);
    let p = c
        .api
        .pull(&c.broker_addr, &pull("Orders", 0, 0, "*"))
        .await
        .expect("pull batch");
    let got: Vec<(i64, String)> = p
        .messages
        .iter()
        .map(|m| (m.queue_offset, String::from_utf8_lossy(&m.body).to_string()))
        .collect();
    assert_eq!(
        got,
        (0..5)
            .map(|i| (i as i64, format!("b{i}")))
            .collect::<Vec<_>>()
    );

    c.broker.shutdown().await;
    c.namesrv.shutdown().await;
}

#[tokio::test]
async fn long_polling_holds_until_a_message_arrives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = start(dir.path(), true).await;
    create_topic(&c, "Poll", 1).await;

    let mut held = pull("Poll", 0, 0, "*");
    held.sys_flag |= pull_sys_flag::SUSPEND;
    held.suspend_timeout_ms = 20_000;
    let api = c.api.clone();
    let addr = c.broker_addr.clone();
    let waiter = tokio::spawn(async move { api.pull(&addr, &held).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "the pull is held while the queue is empty"
    );
    c.api
        .send(&c.broker_addr, &message("Poll", 0, "wake", None))
        .await
        .expect("send");
    let r = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the held pull is answered long before its 20 s suspend time")
        .expect("join")
        .expect("pull");
    assert_eq!(r.status, PullStatus::Found);
    assert_eq!(&r.messages[0].body[..], b"wake");

    // Nothing arrives: the pull comes back empty once its suspend time has passed.
    let mut held = pull("Poll", 0, 1, "*");
    held.sys_flag |= pull_sys_flag::SUSPEND;
    held.suspend_timeout_ms = 400;
    let started = Instant::now();
    let r = c.api.pull(&c.broker_addr, &held).await.expect("pull");
    assert_eq!(r.status, PullStatus::NoNewMsg);
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "it was held"
    );

    c.broker.shutdown().await;
    c.namesrv.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_rocketmq_codes_and_store_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = start(dir.path(), false).await;
    create_topic(&c, "T", 2).await;
    let client = c.api.remoting();
    let invoke = |cmd: RemotingCommand| {
        let addr = c.broker_addr.clone();
        async move {
            client
                .invoke(&addr, cmd, Duration::from_secs(5))
                .await
                .expect("response")
        }
    };

    // Unknown topic with auto creation off.
    let err = c
        .api
        .send(&c.broker_addr, &message("Nope", 0, "x", None))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Some(response_code::TOPIC_NOT_EXIST));
    // Queue id out of range.
    let err = c
        .api
        .send(&c.broker_addr, &message("T", 7, "x", None))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Some(response_code::SYSTEM_ERROR));
    assert!(err.to_string().contains("queueId[7] is illegal"), "{err}");
    // Oversized body.
    let mut big = message("T", 0, "", None);
    big.body = Bytes::from(vec![0u8; 65 * 1024]);
    let err = c.api.send(&c.broker_addr, &big).await.expect_err("refused");
    assert_eq!(err.code(), Some(response_code::MESSAGE_ILLEGAL));
    // Illegal topic name.
    let err = c
        .api
        .send(&c.broker_addr, &message("bad topic", 0, "x", None))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Some(response_code::SYSTEM_ERROR));
    // A delay past the 3-day limit of timer messages: refused, not delivered early.
    let mut delayed = message("T", 0, "x", None);
    delayed.properties.insert(
        property::TIMER_DELAY_SEC.into(),
        (4 * 24 * 3600).to_string(),
    );
    let err = c
        .api
        .send(&c.broker_addr, &delayed)
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Some(response_code::MESSAGE_ILLEGAL));
    // A header field missing.
    let response = invoke(
        RemotingCommand::request(request_code::SEND_MESSAGE_V2)
            .with_ext("a", "pg")
            .with_ext("b", "T")
            .with_body(&b"x"[..]),
    )
    .await;
    assert_eq!(response.code, response_code::SYSTEM_ERROR);
    assert!(
        response
            .remark
            .as_deref()
            .unwrap_or_default()
            .contains("`e`"),
        "{:?}",
        response.remark
    );
    // Garbage in a numeric field.
    let response = invoke(
        RemotingCommand::request(request_code::GET_MAX_OFFSET)
            .with_ext("topic", "T")
            .with_ext("queueId", "zero"),
    )
    .await;
    assert_eq!(response.code, response_code::SYSTEM_ERROR);
    // A malformed batch body.
    let response = invoke(
        RemotingCommand::request(request_code::SEND_BATCH_MESSAGE)
            .with_ext("a", "pg")
            .with_ext("b", "T")
            .with_ext("e", "0")
            .with_body(vec![0u8, 0, 0, 100, 1, 2, 3]),
    )
    .await;
    assert_eq!(response.code, response_code::MESSAGE_ILLEGAL);
    // An unknown request code.
    let response = invoke(RemotingCommand::request(9999)).await;
    assert_eq!(response.code, response_code::REQUEST_CODE_NOT_SUPPORTED);
    assert!(response.remark.is_some());
    // Pull without a subscription or a heartbeat.
    let mut p = pull("T", 0, 0, "*");
    p.sys_flag = 0;
    let err = c.api.pull(&c.broker_addr, &p).await.expect_err("refused");
    assert_eq!(err.code(), Some(response_code::SUBSCRIPTION_NOT_EXIST));
    // Pull on a queue that does not exist.
    let err = c
        .api
        .pull(&c.broker_addr, &pull("T", 9, 0, "*"))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Some(response_code::SYSTEM_ERROR));

    // Nothing was stored by any of that.
    for q in 0..2 {
        assert_eq!(
            c.api.max_offset(&c.broker_addr, "T", q).await.expect("max"),
            0
        );
    }
    assert!(c.api.topic_route(&c.namesrv_addr, "Nope").await.is_err());

    c.broker.shutdown().await;
    c.namesrv.shutdown().await;
}

#[tokio::test]
async fn heartbeat_subscriptions_and_consumer_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = start(dir.path(), true).await;
    // Auto creation: the first send creates the topic.
    let r = c
        .api
        .send(&c.broker_addr, &message("Auto", -1, "a", Some("TagA")))
        .await
        .expect("send");
    assert_eq!(r.code, response_code::SUCCESS);
    c.api
        .send(
            &c.broker_addr,
            &message("Auto", r.queue_id, "b", Some("TagB")),
        )
        .await
        .expect("send");

    let heartbeat = HeartbeatData {
        client_id: "127.0.0.1@test".to_string(),
        producer_data_set: vec![],
        consumer_data_set: vec![ConsumerData {
            group_name: "cg".to_string(),
            consume_type: Some("CONSUME_PASSIVELY".to_string()),
            message_model: Some("CLUSTERING".to_string()),
            consume_from_where: Some("CONSUME_FROM_FIRST_OFFSET".to_string()),
            subscription_data_set: vec![SubscriptionData {
                topic: "Auto".to_string(),
                sub_string: "TagB".to_string(),
                tags_set: ["TagB".to_string()].into(),
                code_set: [rocketraft_common::hash::java_string_hash("TagB")].into(),
                ..SubscriptionData::default()
            }],
            unit_mode: false,
        }],
    };
    c.api
        .heartbeat(&c.broker_addr, &heartbeat)
        .await
        .expect("heartbeat");
    assert_eq!(
        c.api
            .consumer_list(&c.broker_addr, "cg")
            .await
            .expect("list"),
        vec!["127.0.0.1@test".to_string()]
    );
    assert!(c.api.consumer_list(&c.broker_addr, "nobody").await.is_err());

    // Without the SUBSCRIPTION flag the broker filters by the heartbeat's subscription.
    let mut p = pull("Auto", r.queue_id, 0, "*");
    p.sys_flag = 0;
    p.subscription = None;
    let mut tags = Vec::new();
    let mut offset = 0;
    loop {
        p.queue_offset = offset;
        let res = c.api.pull(&c.broker_addr, &p).await.expect("pull");
        tags.extend(
            res.messages
                .iter()
                .map(|m| m.tags().unwrap_or_default().to_string()),
        );
        if res.next_begin_offset == offset {
            break;
        }
        offset = res.next_begin_offset;
    }
    assert_eq!(tags, vec!["TagB".to_string()]);

    c.broker.shutdown().await;
    c.namesrv.shutdown().await;
}

#[tokio::test]
async fn messages_offsets_and_topics_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = start(dir.path(), false).await;
    create_topic(&c, "Durable", 1).await;
    for i in 0..200 {
        // Bodies large enough that several 256 KiB segments roll.
        let mut m = message("Durable", 0, &format!("{i}"), None);
        m.body = Bytes::from(format!("{i:0>4}").repeat(1000));
        c.api.send(&c.broker_addr, &m).await.expect("send");
    }
    c.api
        .update_consumer_offset(&c.broker_addr, "cg", "Durable", 0, 123)
        .await
        .expect("commit");
    c.broker.shutdown().await;

    let config = broker_config(dir.path(), c.namesrv.local_addr(), false);
    let broker = Broker::start(config).await.expect("restart");
    let addr = broker.local_addr().to_string();
    assert_eq!(
        c.api.max_offset(&addr, "Durable", 0).await.expect("max"),
        200
    );
    assert_eq!(
        c.api
            .query_consumer_offset(&addr, "cg", "Durable", 0)
            .await
            .expect("offset"),
        Some(123)
    );
    let mut offset = 0;
    while offset < 200 {
        let r = c
            .api
            .pull(&addr, &pull("Durable", 0, offset, "*"))
            .await
            .expect("pull");
        for m in &r.messages {
            assert_eq!(m.body, Bytes::from(format!("{offset:0>4}").repeat(1000)));
            offset += 1;
        }
    }
    broker.shutdown().await;
    c.namesrv.shutdown().await;
}

#[tokio::test]
async fn malformed_frames_close_only_their_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let c = start(dir.path(), true).await;
    create_topic(&c, "Frames", 1).await;

    let garbage: Vec<Vec<u8>> = vec![
        // Unknown serialize type 7.
        [
            &12i32.to_be_bytes()[..],
            &((7 << 24) | 2i32).to_be_bytes(),
            b"{}",
            b"xxxx",
        ]
        .concat(),
        // A length prefix of 17 MiB.
        (17 * 1024 * 1024i32).to_be_bytes().to_vec(),
        // A header longer than the frame.
        [&8i32.to_be_bytes()[..], &1000i32.to_be_bytes(), b"{}{}"].concat(),
        // A JSON header that is not JSON.
        [&9i32.to_be_bytes()[..], &5i32.to_be_bytes(), b"{oops"].concat(),
    ];
    for bytes in garbage {
        let mut raw = tokio::net::TcpStream::connect(&c.broker_addr)
            .await
            .expect("connect");
        raw.write_all(&bytes).await.expect("write");
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf))
            .await
            .expect("the broker closes the connection");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "connection closed, got {read:?}"
        );
        // Everyone else is still served.
        let r = c
            .api
            .send(&c.broker_addr, &message("Frames", 0, "still-here", None))
            .await
            .expect("send");
        assert_eq!(r.code, response_code::SUCCESS);
    }
    assert_eq!(
        c.api
            .max_offset(&c.broker_addr, "Frames", 0)
            .await
            .expect("max"),
        4
    );
    c.broker.shutdown().await;
    c.namesrv.shutdown().await;
}

#[tokio::test]
async fn send_message_v1_headers_and_binary_encoding() {
    use rocketraft_remoting::SerializeType;
    let dir = tempfile::tempdir().expect("tempdir");
    let c = start(dir.path(), false).await;
    create_topic(&c, "V1", 1).await;
    // SEND_MESSAGE (10) with the full-name header of SendMessageRequestHeader, in both encodings.
    for (i, encoding) in [SerializeType::Json, SerializeType::RocketMq]
        .into_iter()
        .enumerate()
    {
        let request = RemotingCommand::request(request_code::SEND_MESSAGE)
            .with_ext("producerGroup", "pg")
            .with_ext("topic", "V1")
            .with_ext("defaultTopic", "TBW102")
            .with_ext("defaultTopicQueueNums", "4")
            .with_ext("queueId", "0")
            .with_ext("sysFlag", "0")
            .with_ext("bornTimestamp", rocketraft_common::time::now_ms())
            .with_ext("flag", "0")
            .with_ext("properties", "TAGS\u{1}v1\u{2}KEYS\u{1}k\u{2}")
            .with_ext("reconsumeTimes", "0")
            .with_ext("unitMode", "false")
            .with_body(format!("v1-{i}").into_bytes())
            .with_serialize_type(encoding);
        // The raw socket path lets the request keep its own encoding.
        let raw = RemotingClient::new(ClientConfig {
            serialize_type: encoding,
            ..ClientConfig::default()
        });
        let response = raw
            .invoke(&c.broker_addr, request, Duration::from_secs(5))
            .await
            .expect("response");
        assert_eq!(
            response.code,
            response_code::SUCCESS,
            "{:?}",
            response.remark
        );
        assert_eq!(
            response.serialize_type, encoding,
            "answered in the request's encoding"
        );
        assert_eq!(response.ext("queueOffset"), Some(i.to_string().as_str()));
    }
    let r = c
        .api
        .pull(&c.broker_addr, &pull("V1", 0, 0, "v1"))
        .await
        .expect("pull");
    let bodies: Vec<String> = r
        .messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).to_string())
        .collect();
    assert_eq!(bodies, vec!["v1-0".to_string(), "v1-1".to_string()]);
    assert_eq!(r.messages[0].keys(), Some("k"));
    c.broker.shutdown().await;
    c.namesrv.shutdown().await;
}

/// LOCK_BATCH_MQ (41) / UNLOCK_BATCH_MQ (42): one client of a group holds a queue at a time;
/// the holder renews, others get the queues nobody holds, an unlock by a non-holder changes
/// nothing, unregistering releases; a body that does not parse is refused and locks nothing.
#[tokio::test]
async fn orderly_queue_locks() {
    use rocketraft_common::protocol::{LockBatchRequestBody, LockBatchResponseBody, MessageQueue};
    let dir = tempfile::tempdir().expect("tempdir");
    let c = start(dir.path(), false).await;
    create_topic(&c, "Ord", 4).await;
    let client = RemotingClient::new(ClientConfig::default());
    let mq = |q: i32| MessageQueue {
        topic: "Ord".into(),
        broker_name: "broker-a".into(),
        queue_id: q,
    };
    let body = |client_id: &str, qs: &[i32]| {
        serde_json::to_vec(&LockBatchRequestBody {
            consumer_group: "og".into(),
            client_id: client_id.into(),
            only_this_broker: false,
            mq_set: qs.iter().map(|q| mq(*q)).collect(),
        })
        .expect("json")
    };
    let lock = |client_id: &'static str, qs: &'static [i32]| {
        let (client, addr, b) = (client.clone(), c.broker_addr.clone(), body(client_id, qs));
        async move {
            let r = client
                .invoke(
                    &addr,
                    RemotingCommand::request(request_code::LOCK_BATCH_MQ).with_body(b),
                    Duration::from_secs(5),
                )
                .await
                .expect("lock");
            assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
            let held: LockBatchResponseBody =
                rocketraft_common::protocol::from_json_body(&r.body).expect("response body");
            let mut qs: Vec<i32> = held.lock_ok_mq_set.iter().map(|m| m.queue_id).collect();
            qs.sort();
            qs
        }
    };
    let unlock = |client_id: &'static str, qs: &'static [i32]| {
        let (client, addr, b) = (client.clone(), c.broker_addr.clone(), body(client_id, qs));
        async move {
            let r = client
                .invoke(
                    &addr,
                    RemotingCommand::request(request_code::UNLOCK_BATCH_MQ).with_body(b),
                    Duration::from_secs(5),
                )
                .await
                .expect("unlock");
            assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
        }
    };
    // The clients are members of the group, as a real orderly consumer is before it locks: the
    // broker's membership scan (every 10 s) releases the locks of clients that are not.
    for id in ["a", "b", "c"] {
        let heartbeat = consumer_heartbeat(id, "og", "CLUSTERING", "Ord", "*", None);
        c.api
            .heartbeat(&c.broker_addr, &heartbeat)
            .await
            .expect("heartbeat");
    }
    assert_eq!(lock("a", &[0, 1]).await, vec![0, 1]);
    assert_eq!(lock("b", &[1, 2, 3]).await, vec![2, 3], "1 is a's");
    assert_eq!(lock("a", &[0, 1]).await, vec![0, 1], "a renews");
    unlock("b", &[1]).await;
    assert_eq!(
        lock("b", &[1]).await,
        Vec::<i32>::new(),
        "b cannot unlock a's"
    );
    unlock("a", &[1]).await;
    assert_eq!(lock("b", &[1]).await, vec![1]);

    // Bad bodies: refused with a remark; nothing locked or unlocked.
    for (code, bad) in [
        (request_code::LOCK_BATCH_MQ, b"{not json".to_vec()),
        (request_code::LOCK_BATCH_MQ, br#"{"mqSet":[]}"#.to_vec()),
        (request_code::UNLOCK_BATCH_MQ, b"[1,2]".to_vec()),
    ] {
        let r = client
            .invoke(
                &c.broker_addr,
                RemotingCommand::request(code).with_body(bad),
                Duration::from_secs(5),
            )
            .await
            .expect("answer");
        assert_eq!(r.code, response_code::SYSTEM_ERROR, "{:?}", r.remark);
        assert!(
            r.remark.as_deref().unwrap_or_default().contains("BATCH_MQ"),
            "{:?}",
            r.remark
        );
    }
    assert_eq!(lock("c", &[0, 1, 2, 3]).await, Vec::<i32>::new());

    // a leaves the group: its lock on 0 is released at once.
    let r = client
        .invoke(
            &c.broker_addr,
            RemotingCommand::request(request_code::UNREGISTER_CLIENT)
                .with_ext("clientID", "a")
                .with_ext("consumerGroup", "og"),
            Duration::from_secs(5),
        )
        .await
        .expect("unregister");
    assert_eq!(r.code, response_code::SUCCESS);
    assert_eq!(lock("c", &[0, 1]).await, vec![0]);

    c.broker.shutdown().await;
    c.namesrv.shutdown().await;
}

/// A consumer's heartbeat: `client_id` in `group` (`model`: CLUSTERING or BROADCASTING)
/// subscribing to `topic` with `expression` of `expression_type` (None: TAG).
fn consumer_heartbeat(
    client_id: &str,
    group: &str,
    model: &str,
    topic: &str,
    expression: &str,
    expression_type: Option<&str>,
) -> HeartbeatData {
    HeartbeatData {
        client_id: client_id.to_string(),
        producer_data_set: vec![],
        consumer_data_set: vec![ConsumerData {
            group_name: group.to_string(),
            consume_type: Some("CONSUME_PASSIVELY".to_string()),
            message_model: Some(model.to_string()),
            consume_from_where: Some("CONSUME_FROM_FIRST_OFFSET".to_string()),
            subscription_data_set: vec![SubscriptionData {
                topic: topic.to_string(),
                sub_string: expression.to_string(),
                expression_type: expression_type.map(str::to_string),
                ..SubscriptionData::default()
            }],
            unit_mode: false,
        }],
    }
}

/// A pull request as a client sends it; `code` is PULL_MESSAGE or LITE_PULL_MESSAGE.
fn pull_command(code: i32, group: &str, topic: &str, with_subscription: bool) -> RemotingCommand {
    let request = RemotingCommand::request(code)
        .with_ext("consumerGroup", group)
        .with_ext("topic", topic)
        .with_ext("queueId", 0)
        .with_ext("queueOffset", 0)
        .with_ext("maxMsgNums", 32)
        .with_ext(
            "sysFlag",
            if with_subscription {
                pull_sys_flag::SUBSCRIPTION
            } else {
                0
            },
        )
        .with_ext("commitOffset", -1)
        .with_ext("suspendTimeoutMillis", 0)
        .with_ext("subVersion", 0)
        .with_ext("expressionType", "TAG");
    if with_subscription {
        request.with_ext("subscription", "*")
    } else {
        request
    }
}

/// LITE_PULL_MESSAGE (361) reads as PULL_MESSAGE does (and is refused when
/// `lite_pull_message_enable` is off); a group with `consumeEnable: false` may neither pull nor
/// POP, and a BROADCASTING group with `consumeBroadcastEnable: false` may not pull; turning the
/// flags back on restores both, and nothing stored changes.
#[tokio::test]
async fn lite_pull_and_the_group_consume_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = start(dir.path(), false).await;
    create_topic(&c, "Flags", 1).await;
    for i in 0..3 {
        let r = c
            .api
            .send(&c.broker_addr, &message("Flags", 0, &format!("f{i}"), None))
            .await
            .expect("send");
        assert_eq!(r.code, response_code::SUCCESS);
    }
    let client = RemotingClient::new(ClientConfig::default());
    let invoke = |cmd: RemotingCommand| {
        let (client, addr) = (client.clone(), c.broker_addr.clone());
        async move {
            client
                .invoke(&addr, cmd, Duration::from_secs(5))
                .await
                .expect("answer")
        }
    };
    let r = invoke(pull_command(
        request_code::LITE_PULL_MESSAGE,
        "lg",
        "Flags",
        true,
    ))
    .await;
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    assert_eq!(
        rocketraft_common::message::decode_messages(&r.body)
            .expect("messages")
            .len(),
        3
    );

    let set_group = |config: serde_json::Value| async move {
        let r = invoke(
            RemotingCommand::request(request_code::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
                .with_body(serde_json::to_vec(&config).expect("json")),
        )
        .await;
        assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    };
    set_group(serde_json::json!({"groupName": "lg", "consumeEnable": false})).await;
    for code in [request_code::PULL_MESSAGE, request_code::LITE_PULL_MESSAGE] {
        let r = invoke(pull_command(code, "lg", "Flags", true)).await;
        assert_eq!(r.code, response_code::NO_PERMISSION, "{:?}", r.remark);
        assert_eq!(
            r.remark.as_deref(),
            Some("subscription group no permission, lg")
        );
    }
    let pop = invoke(
        RemotingCommand::request(request_code::POP_MESSAGE)
            .with_ext("consumerGroup", "lg")
            .with_ext("topic", "Flags")
            .with_ext("queueId", -1)
            .with_ext("maxMsgNums", 1)
            .with_ext("invisibleTime", 60_000),
    )
    .await;
    assert_eq!(pop.code, response_code::NO_PERMISSION, "{:?}", pop.remark);
    // Another group is not affected.
    let r = invoke(pull_command(
        request_code::PULL_MESSAGE,
        "other",
        "Flags",
        true,
    ))
    .await;
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);

    // A broadcasting group whose subscription comes from its heartbeat.
    let heartbeat = consumer_heartbeat("127.0.0.1@bcast", "bg", "BROADCASTING", "Flags", "*", None);
    c.api
        .heartbeat(&c.broker_addr, &heartbeat)
        .await
        .expect("heartbeat");
    let r = invoke(pull_command(
        request_code::PULL_MESSAGE,
        "bg",
        "Flags",
        false,
    ))
    .await;
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    set_group(serde_json::json!({"groupName": "bg", "consumeBroadcastEnable": false})).await;
    let r = invoke(pull_command(
        request_code::PULL_MESSAGE,
        "bg",
        "Flags",
        false,
    ))
    .await;
    assert_eq!(r.code, response_code::NO_PERMISSION, "{:?}", r.remark);
    assert_eq!(
        r.remark.as_deref(),
        Some("the consumer group[bg] can not consume by broadcast way")
    );

    // Back on: both read everything again.
    set_group(serde_json::json!({"groupName": "lg", "consumeEnable": true})).await;
    set_group(serde_json::json!({"groupName": "bg", "consumeBroadcastEnable": true})).await;
    for (group, sub) in [("lg", true), ("bg", false)] {
        let r = invoke(pull_command(
            request_code::PULL_MESSAGE,
            group,
            "Flags",
            sub,
        ))
        .await;
        assert_eq!(r.code, response_code::SUCCESS, "{group}: {:?}", r.remark);
        assert_eq!(
            rocketraft_common::message::decode_messages(&r.body)
                .expect("messages")
                .len(),
            3
        );
    }
    c.broker.shutdown().await;
    c.namesrv.shutdown().await;

    // With lite pull off, LITE_PULL_MESSAGE is refused; PULL_MESSAGE still works.
    let dir = tempfile::tempdir().expect("tempdir");
    let off = start_with(dir.path(), true, |c| c.lite_pull_message_enable = false).await;
    let (addr, api) = (off.broker_addr.clone(), &off.api);
    let r = api
        .send(&addr, &message("Off", -1, "x", None))
        .await
        .expect("send");
    assert_eq!(r.code, response_code::SUCCESS);
    let lite = pull_command(request_code::LITE_PULL_MESSAGE, "lg", "Off", true)
        .with_ext("queueId", r.queue_id);
    let r = client
        .invoke(&addr, lite, Duration::from_secs(5))
        .await
        .expect("answer");
    assert_eq!(r.code, response_code::NO_PERMISSION, "{:?}", r.remark);
    assert!(
        r.remark
            .as_deref()
            .unwrap_or_default()
            .contains("for lite pull consumer is forbidden"),
        "{:?}",
        r.remark
    );
    off.broker.shutdown().await;
    off.namesrv.shutdown().await;
}

/// SQL92 filters: a pull with an SQL92 subscription, a pull by a consumer whose heartbeat
/// declared one, and a POP get exactly the messages whose properties match;
/// CHECK_CLIENT_CONFIG passes a good expression and names what is wrong with a bad one; a bad
/// expression in a pull or POP is refused (SUBSCRIPTION_PARSE_FAILED) and nothing is consumed;
/// with `enable_property_filter` off, SQL92 is refused as RocketMQ refuses it.
#[tokio::test]
async fn sql92_filters_in_pull_pop_and_check_client_config() {
    use rocketraft_common::protocol::CheckClientRequestBody;
    let dir = tempfile::tempdir().expect("tempdir");
    let c = start(dir.path(), false).await;
    create_topic(&c, "Sql", 1).await;
    for i in 0..10 {
        let mut m = message(
            "Sql",
            0,
            &format!("m{i}"),
            Some(if i % 2 == 0 { "even" } else { "odd" }),
        );
        m.properties.insert("a".to_string(), i.to_string());
        if i % 3 == 0 {
            m.properties
                .insert("region".to_string(), "eu-west".to_string());
        }
        let r = c.api.send(&c.broker_addr, &m).await.expect("send");
        assert_eq!(r.code, response_code::SUCCESS);
    }
    let client = RemotingClient::new(ClientConfig::default());
    let invoke = |cmd: RemotingCommand| {
        let (client, addr) = (client.clone(), c.broker_addr.clone());
        async move {
            client
                .invoke(&addr, cmd, Duration::from_secs(5))
                .await
                .expect("answer")
        }
    };
    let bodies = |r: &RemotingCommand| -> Vec<String> {
        rocketraft_common::message::decode_messages(&r.body)
            .expect("messages")
            .iter()
            .map(|m| String::from_utf8_lossy(&m.message.body).to_string())
            .collect()
    };
    let sql_pull = |sql: &str| {
        pull_command(request_code::PULL_MESSAGE, "sg", "Sql", true)
            .with_ext("subscription", sql)
            .with_ext("expressionType", "SQL92")
    };
    let r = invoke(sql_pull("a BETWEEN 3 AND 7 AND TAGS = 'odd'")).await;
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    assert_eq!(bodies(&r), vec!["m3", "m5", "m7"]);
    let r = invoke(sql_pull("region IS NOT NULL OR a > 8")).await;
    assert_eq!(bodies(&r), vec!["m0", "m3", "m6", "m9"]);
    // Nothing matches: the pull moves past what it scanned.
    let r = invoke(sql_pull("a > 100")).await;
    assert_eq!(
        r.code,
        response_code::PULL_RETRY_IMMEDIATELY,
        "{:?}",
        r.remark
    );
    assert_eq!(r.ext("nextBeginOffset"), Some("10"));
    // A bad expression.
    let r = invoke(sql_pull("a >")).await;
    assert_eq!(
        r.code,
        response_code::SUBSCRIPTION_PARSE_FAILED,
        "{:?}",
        r.remark
    );
    assert!(
        r.remark.as_deref().unwrap_or_default().contains("ended"),
        "{:?}",
        r.remark
    );

    // A consumer whose heartbeat declares an SQL92 subscription pulls without the flag.
    let heartbeat = consumer_heartbeat(
        "127.0.0.1@sql",
        "hg",
        "CLUSTERING",
        "Sql",
        "region = 'eu-west'",
        Some("SQL92"),
    );
    c.api
        .heartbeat(&c.broker_addr, &heartbeat)
        .await
        .expect("heartbeat");
    let r = invoke(pull_command(request_code::PULL_MESSAGE, "hg", "Sql", false)).await;
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    assert_eq!(bodies(&r), vec!["m0", "m3", "m6", "m9"]);

    // POP with an SQL92 expression; a bad one pops nothing.
    let pop = |exp: &str| {
        RemotingCommand::request(request_code::POP_MESSAGE)
            .with_ext("consumerGroup", "pg-sql")
            .with_ext("topic", "Sql")
            .with_ext("queueId", -1)
            .with_ext("maxMsgNums", 32)
            .with_ext("invisibleTime", 60_000)
            .with_ext("expType", "SQL92")
            .with_ext("exp", exp)
    };
    let r = invoke(pop("a = 1 OR a = 2 OR TAGS = 'none'")).await;
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    assert_eq!(bodies(&r), vec!["m1", "m2"]);
    let r = invoke(pop("a = NULL")).await;
    assert_eq!(
        r.code,
        response_code::SUBSCRIPTION_PARSE_FAILED,
        "{:?}",
        r.remark
    );

    // CHECK_CLIENT_CONFIG.
    let check = |kind: &str, expression: &str| {
        let body = CheckClientRequestBody {
            client_id: "127.0.0.1@sql".into(),
            group: "hg".into(),
            subscription_data: SubscriptionData {
                topic: "Sql".into(),
                sub_string: expression.into(),
                expression_type: Some(kind.into()),
                ..SubscriptionData::default()
            },
        };
        RemotingCommand::request(request_code::CHECK_CLIENT_CONFIG)
            .with_body(serde_json::to_vec(&body).expect("json"))
    };
    let r = invoke(check("SQL92", "a > 1 AND region IN ('eu-west')")).await;
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    let r = invoke(check("TAG", "TagA || TagB")).await;
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    let r = invoke(check("SQL92", "a > 'x'")).await;
    assert_eq!(
        r.code,
        response_code::SUBSCRIPTION_PARSE_FAILED,
        "{:?}",
        r.remark
    );
    assert!(
        r.remark
            .as_deref()
            .unwrap_or_default()
            .contains("only numbers"),
        "{:?}",
        r.remark
    );
    let r = invoke(
        RemotingCommand::request(request_code::CHECK_CLIENT_CONFIG).with_body(b"{nope".to_vec()),
    )
    .await;
    assert_eq!(r.code, response_code::SYSTEM_ERROR, "{:?}", r.remark);
    c.broker.shutdown().await;
    c.namesrv.shutdown().await;

    // Property filtering off: SQL92 is refused with RocketMQ's remark; TAG still works.
    let dir = tempfile::tempdir().expect("tempdir");
    let off = start_with(dir.path(), true, |c| c.enable_property_filter = false).await;
    let addr = off.broker_addr.clone();
    let r = client
        .invoke(&addr, check("SQL92", "a > 1"), Duration::from_secs(5))
        .await
        .expect("answer");
    assert_eq!(r.code, response_code::SYSTEM_ERROR, "{:?}", r.remark);
    assert_eq!(
        r.remark.as_deref(),
        Some("The broker does not support consumer to filter message by SQL92")
    );
    let r = client
        .invoke(&addr, check("TAG", "*"), Duration::from_secs(5))
        .await
        .expect("answer");
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    off.broker.shutdown().await;
    off.namesrv.shutdown().await;
}

/// INVOKE_BROKER_TO_RESET_OFFSET: by timestamp (every queue), to the end (-1), one queue to an
/// offset; without isForce an offset only moves back; a live consumer is sent
/// RESET_CONSUMER_CLIENT_OFFSET with the offsets; an unknown topic or queue is refused and
/// changes nothing.
#[tokio::test]
async fn reset_offsets_by_time_end_and_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = start(dir.path(), false).await;
    create_topic(&c, "Rst", 2).await;
    for i in 0..4 {
        for q in 0..2 {
            let r = c
                .api
                .send(
                    &c.broker_addr,
                    &message("Rst", q, &format!("r{q}-{i}"), None),
                )
                .await
                .expect("send");
            assert_eq!(r.code, response_code::SUCCESS);
        }
        if i == 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // A consumer of the group, listening for the broker's push.
    let consumer = RemotingClient::new(ClientConfig::default());
    let pushed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = pushed.clone();
    consumer.set_request_handler(rocketraft_remoting::server::processor_fn(
        move |_ctx, req: RemotingCommand| {
            let seen = seen.clone();
            async move {
                if req.code == request_code::RESET_CONSUMER_CLIENT_OFFSET {
                    seen.lock().unwrap_or_else(|e| e.into_inner()).push((
                        req.ext("group").map(str::to_string),
                        String::from_utf8_lossy(&req.body).to_string(),
                    ));
                }
                None
            }
        },
    ));
    let heartbeat = consumer_heartbeat("127.0.0.1@reset", "rg", "CLUSTERING", "Rst", "*", None);
    MqClientApi::new(consumer.clone(), Duration::from_secs(5))
        .heartbeat(&c.broker_addr, &heartbeat)
        .await
        .expect("heartbeat");
    let offsets = |c: &Cluster| {
        (0..2)
            .map(|q| {
                c.broker
                    .inner()
                    .metadata
                    .query_offset("rg", "Rst", q)
                    .expect("query")
                    .unwrap_or(-1)
            })
            .collect::<Vec<i64>>()
    };
    let client = RemotingClient::new(ClientConfig::default());
    let reset = |topic: &str, timestamp: i64, force: bool, queue: Option<(i32, i64)>| {
        let mut r = RemotingCommand::request(request_code::INVOKE_BROKER_TO_RESET_OFFSET)
            .with_ext("topic", topic)
            .with_ext("group", "rg")
            .with_ext("timestamp", timestamp)
            .with_ext("isForce", force);
        if let Some((q, o)) = queue {
            r = r.with_ext("queueId", q).with_ext("offset", o);
        }
        let (client, addr) = (client.clone(), c.broker_addr.clone());
        async move {
            client
                .invoke(&addr, r, Duration::from_secs(5))
                .await
                .expect("answer")
        }
    };
    // To the end, then back to the beginning (timestamp 0).
    let r = reset("Rst", -1, true, None).await;
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    assert_eq!(offsets(&c), vec![4, 4]);
    let r = reset("Rst", 0, true, None).await;
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    assert_eq!(offsets(&c), vec![0, 0]);
    // Not forced: a move forward is not made.
    let r = reset("Rst", -1, false, None).await;
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    assert_eq!(offsets(&c), vec![0, 0]);
    // One queue to an offset.
    let r = reset("Rst", 0, true, Some((1, 3))).await;
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    assert_eq!(offsets(&c), vec![0, 3]);
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        r#"{"offsetTable":{{"brokerName":"broker-a","queueId":1,"topic":"Rst"}:3}}"#
    );
    // The live consumer was told each time.
    let deadline = Instant::now() + Duration::from_secs(5);
    while pushed.lock().unwrap_or_else(|e| e.into_inner()).len() < 4 {
        assert!(Instant::now() < deadline, "no RESET_CONSUMER_CLIENT_OFFSET");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last = pushed.lock().unwrap_or_else(|e| e.into_inner())[3].clone();
    assert_eq!(last.0.as_deref(), Some("rg"));
    assert!(
        last.1.contains(r#""queueId":1,"topic":"Rst"}:3"#),
        "{}",
        last.1
    );

    // Bad input: refused, nothing moves.
    let r = reset("NoSuchTopic", 0, true, None).await;
    assert_eq!(r.code, response_code::TOPIC_NOT_EXIST, "{:?}", r.remark);
    let r = reset("Rst", 0, true, Some((9, 0))).await;
    assert_ne!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    let r = client
        .invoke(
            &c.broker_addr,
            RemotingCommand::request(request_code::INVOKE_BROKER_TO_RESET_OFFSET)
                .with_ext("topic", "Rst")
                .with_ext("timestamp", 0),
            Duration::from_secs(5),
        )
        .await
        .expect("answer");
    assert_ne!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    assert_eq!(offsets(&c), vec![0, 3]);
    c.broker.shutdown().await;
    c.namesrv.shutdown().await;
}

/// SEND_REPLY_MESSAGE(_V2): the reply is pushed to the requester's connection
/// (PUSH_REPLY_MESSAGE_TO_CLIENT) and stored in `{cluster}_REPLY_TOPIC`; a reply without
/// REPLY_TO_CLIENT, or for a client that is not connected, is refused and nothing is stored; a
/// request message is stamped with the cluster.
#[tokio::test]
async fn replies_are_pushed_to_the_requester_and_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = start(dir.path(), false).await;
    create_topic(&c, "Req", 1).await;
    let reply_topic = "DefaultCluster_REPLY_TOPIC";
    // The requester: a producer heartbeat, then it takes pushed replies.
    let requester = RemotingClient::new(ClientConfig::default());
    let pushed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = pushed.clone();
    requester.set_request_handler(rocketraft_remoting::server::processor_fn(
        move |_ctx, req: RemotingCommand| {
            let seen = seen.clone();
            async move {
                if req.code == request_code::PUSH_REPLY_MESSAGE_TO_CLIENT {
                    seen.lock().unwrap_or_else(|e| e.into_inner()).push((
                        req.ext("topic").map(str::to_string),
                        req.ext("properties").map(str::to_string),
                        String::from_utf8_lossy(&req.body).to_string(),
                    ));
                    return Some(req.response_to(response_code::SUCCESS, None));
                }
                None
            }
        },
    ));
    let hb = HeartbeatData {
        client_id: "10.0.0.9@requester".into(),
        producer_data_set: vec![rocketraft_common::protocol::ProducerData {
            group_name: "reqg".into(),
        }],
        consumer_data_set: vec![],
    };
    MqClientApi::new(requester.clone(), Duration::from_secs(5))
        .heartbeat(&c.broker_addr, &hb)
        .await
        .expect("heartbeat");
    // A request message is stamped with the cluster its reply goes to.
    let mut request = message("Req", 0, "question", None);
    request
        .properties
        .insert("REPLY_TO_CLIENT".into(), "10.0.0.9@requester".into());
    request
        .properties
        .insert("CORRELATION_ID".into(), "corr-1".into());
    let r = c.api.send(&c.broker_addr, &request).await.expect("send");
    assert_eq!(r.code, response_code::SUCCESS);
    let stored = c
        .broker
        .inner()
        .store
        .get_commit_log_offset_in_queue("Req", 0, 0)
        .and_then(|phy| c.broker.inner().store.look_message_by_offset(phy))
        .expect("request stored");
    assert_eq!(stored.message.property("CLUSTER"), Some("DefaultCluster"));

    let reply = |to: Option<&str>| {
        let mut props = "MSG_TYPE\u{1}reply\u{2}CORRELATION_ID\u{1}corr-1\u{2}".to_string();
        if let Some(to) = to {
            props.push_str(&format!("REPLY_TO_CLIENT\u{1}{to}\u{2}"));
        }
        RemotingCommand::request(request_code::SEND_REPLY_MESSAGE_V2)
            .with_ext("a", "replier")
            .with_ext("b", reply_topic)
            .with_ext("c", "TBW102")
            .with_ext("d", 4)
            .with_ext("e", 0)
            .with_ext("f", 0)
            .with_ext("g", 0)
            .with_ext("h", 0)
            .with_ext("i", props)
            .with_ext("j", 0)
            .with_ext("k", false)
            .with_body(b"answer".to_vec())
    };
    let client = RemotingClient::new(ClientConfig::default());
    let r = client
        .invoke(
            &c.broker_addr,
            reply(Some("10.0.0.9@requester")),
            Duration::from_secs(5),
        )
        .await
        .expect("answer");
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    {
        let pushed = pushed.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(pushed.len(), 1);
        assert_eq!(pushed[0].0.as_deref(), Some(reply_topic));
        assert!(
            pushed[0]
                .1
                .as_deref()
                .unwrap_or_default()
                .contains("CORRELATION_ID\u{1}corr-1"),
            "{pushed:?}"
        );
        assert!(
            pushed[0]
                .1
                .as_deref()
                .unwrap_or_default()
                .contains("PUSH_REPLY_TIME\u{1}"),
            "{pushed:?}"
        );
        assert_eq!(pushed[0].2, "answer");
    }
    let max = |c: &Cluster| {
        c.broker
            .inner()
            .store
            .get_max_offset_in_queue(reply_topic, 0)
    };
    assert_eq!(max(&c), 1, "the reply is stored");

    // Refused: no REPLY_TO_CLIENT; a client that is not connected. Nothing stored or pushed.
    for (to, remark) in [
        (None, "REPLY_TO_CLIENT] is null"),
        (
            Some("10.0.0.9@gone"),
            "channel of <10.0.0.9@gone> not found",
        ),
    ] {
        let r = client
            .invoke(&c.broker_addr, reply(to), Duration::from_secs(5))
            .await
            .expect("answer");
        assert_eq!(r.code, response_code::SYSTEM_ERROR, "{:?}", r.remark);
        assert!(
            r.remark.as_deref().unwrap_or_default().contains(remark),
            "{:?}",
            r.remark
        );
    }
    assert_eq!(max(&c), 1);
    assert_eq!(pushed.lock().unwrap_or_else(|e| e.into_inner()).len(), 1);
    c.broker.shutdown().await;
    c.namesrv.shutdown().await;
}
