//! PEEK_MESSAGE (200052) and NOTIFICATION (200054) against a real broker and NameServer on
//! loopback: a peek shows the messages a POP would get without consuming them (a later POP
//! still gets them, and a second peek shows what is left after it), a notification answers
//! `hasMsg=true` at once when a message is waiting, holds when none is until one is sent, and
//! answers `hasMsg=false` when its poll time ends; bad input is refused with RocketMQ's codes.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketraft_broker::store::FlushDiskType;
use rocketraft_broker::{Broker, BrokerConfig};
use rocketraft_common::message::{decode_messages, MessageExt};
use rocketraft_common::TopicConfig;
use rocketraft_nameserver::{NameServer, NamesrvConfig};
use rocketraft_remoting::api::{MqClientApi, SendRequest};
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::{ClientConfig, RemotingClient, RemotingCommand};

const TOPIC: &str = "PeekTopic";
const GROUP: &str = "peek-cg";

struct Node {
    _namesrv: NameServer,
    broker: Broker,
    addr: String,
    api: MqClientApi,
}

async fn start(dir: &Path) -> Node {
    let namesrv = NameServer::start(NamesrvConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..NamesrvConfig::default()
    })
    .await
    .expect("namesrv");
    let mut config = BrokerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        namesrv_addr: namesrv.local_addr().to_string(),
        auto_create_topic_enable: false,
        ..BrokerConfig::default()
    };
    config.store.store_root = dir.to_path_buf();
    config.store.commitlog_segment_size = 1 << 20;
    config.store.flush_disk_type = FlushDiskType::SyncFlush;
    config.store.pretouch = false;
    let broker = Broker::start(config).await.expect("broker");
    let addr = broker.local_addr().to_string();
    let api = MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(10),
    );
    api.create_topic(&addr, &TopicConfig::new(TOPIC, 2))
        .await
        .expect("topic");
    Node {
        _namesrv: namesrv,
        broker,
        addr,
        api,
    }
}

async fn invoke(node: &Node, request: RemotingCommand, wait: Duration) -> RemotingCommand {
    node.api
        .remoting()
        .invoke(&node.addr, request, wait)
        .await
        .expect("the broker answers")
}

async fn send(node: &Node, queue_id: i32, body: &str) {
    let r = node
        .api
        .send(
            &node.addr,
            &SendRequest {
                producer_group: "peek-pg".into(),
                topic: TOPIC.into(),
                queue_id,
                body: Bytes::from(body.to_string()),
                ..SendRequest::default()
            },
        )
        .await
        .expect("send");
    assert_eq!(r.code, response_code::SUCCESS);
}

fn peek_request(topic: &str, queue_id: i32, max: i32) -> RemotingCommand {
    RemotingCommand::request(request_code::PEEK_MESSAGE)
        .with_ext("consumerGroup", GROUP)
        .with_ext("topic", topic)
        .with_ext("queueId", queue_id)
        .with_ext("maxMsgNums", max)
}

fn notification_request(queue_id: i32, poll_ms: i64) -> RemotingCommand {
    RemotingCommand::request(request_code::NOTIFICATION)
        .with_ext("consumerGroup", GROUP)
        .with_ext("topic", TOPIC)
        .with_ext("queueId", queue_id)
        .with_ext("pollTime", poll_ms)
        .with_ext("bornTime", rocketraft_common::time::now_ms())
        .with_ext("order", false)
}

fn bodies(messages: &[MessageExt]) -> Vec<String> {
    let mut out: Vec<String> = messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.message.body).to_string())
        .collect();
    out.sort();
    out
}

async fn peek(node: &Node, max: i32) -> (i32, Vec<MessageExt>, i64) {
    let r = invoke(node, peek_request(TOPIC, -1, max), Duration::from_secs(10)).await;
    let rest: i64 = r
        .ext("restNum")
        .expect("restNum")
        .parse()
        .expect("a number");
    for key in ["popTime", "invisibleTime", "reviveQid"] {
        assert_eq!(r.ext(key), Some("0"), "{key}");
    }
    let messages = match r.code {
        response_code::SUCCESS => {
            assert_eq!(r.remark.as_deref(), Some("FOUND"));
            decode_messages(&r.body).expect("decodable peek body")
        }
        response_code::PULL_NOT_FOUND => {
            assert_eq!(r.remark.as_deref(), Some("NO_MESSAGE_IN_QUEUE"));
            assert!(r.body.is_empty());
            Vec::new()
        }
        other => panic!("peek answered {other} {:?}", r.remark),
    };
    (r.code, messages, rest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peek_shows_without_consuming_and_notification_long_polls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;

    // Nothing yet.
    let (code, messages, rest) = peek(&node, 32).await;
    assert_eq!(
        (code, messages.len(), rest),
        (response_code::PULL_NOT_FOUND, 0, 0)
    );
    let r = invoke(&node, notification_request(-1, 0), Duration::from_secs(5)).await;
    assert_eq!(r.code, response_code::SUCCESS);
    assert_eq!(
        (r.ext("hasMsg"), r.ext("pollingFull")),
        (Some("false"), Some("false"))
    );

    for (i, q) in [(0, 0), (1, 1), (2, 0)] {
        send(&node, q, &format!("m{i}")).await;
    }

    // A peek shows them, as stored (no receipt handle), and twice the same.
    let (code, first, rest) = peek(&node, 32).await;
    assert_eq!(code, response_code::SUCCESS);
    assert_eq!(bodies(&first), ["m0", "m1", "m2"]);
    assert_eq!(rest, 3);
    assert!(first.iter().all(|m| m
        .message
        .property(rocketraft_common::consts::property::POP_CK)
        .is_none()));
    let (_, again, _) = peek(&node, 32).await;
    assert_eq!(bodies(&again), bodies(&first));
    let (_, one, rest) = peek(&node, 1).await;
    assert_eq!((one.len(), rest), (1, 3));
    // Of one queue only.
    let r = invoke(&node, peek_request(TOPIC, 1, 32), Duration::from_secs(5)).await;
    assert_eq!(r.code, response_code::SUCCESS);
    let q1 = decode_messages(&r.body).expect("decodable");
    assert_eq!(bodies(&q1), ["m1"]);

    // A notification with messages waiting answers at once.
    let started = Instant::now();
    let r = invoke(
        &node,
        notification_request(-1, 10_000),
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(r.code, response_code::SUCCESS);
    assert_eq!(r.ext("hasMsg"), Some("true"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // The peeks consumed nothing: a POP gets every message, then nothing is left to peek.
    let popped = node
        .api
        .pop(&node.addr, GROUP, TOPIC, -1, 32, 60_000, 0, false)
        .await
        .expect("pop");
    assert_eq!(bodies(&popped), ["m0", "m1", "m2"]);
    let (code, left, rest) = peek(&node, 32).await;
    assert_eq!(
        (code, left.len(), rest),
        (response_code::PULL_NOT_FOUND, 0, 0)
    );

    // Nothing waiting: the notification holds until its poll time ends, then hasMsg=false.
    let started = Instant::now();
    let r = invoke(&node, notification_request(0, 800), Duration::from_secs(10)).await;
    assert_eq!(r.code, response_code::SUCCESS);
    assert_eq!(r.ext("hasMsg"), Some("false"));
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "held only {:?}",
        started.elapsed()
    );

    // ... or until a message arrives.
    let waiting = {
        let remoting = node.api.remoting().clone();
        let addr = node.addr.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = remoting
                .invoke(
                    &addr,
                    notification_request(-1, 20_000),
                    Duration::from_secs(30),
                )
                .await
                .expect("the broker answers");
            (r, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!waiting.is_finished(), "the notification is held");
    send(&node, 1, "m3").await;
    let (r, held) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("answered after the send")
        .expect("task");
    assert_eq!(r.code, response_code::SUCCESS);
    assert_eq!(r.ext("hasMsg"), Some("true"));
    assert!(
        held >= Duration::from_millis(900) && held < Duration::from_secs(15),
        "{held:?}"
    );
    let (_, after, _) = peek(&node, 32).await;
    assert_eq!(bodies(&after), ["m3"]);

    node.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peek_and_notification_refuse_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    send(&node, 0, "kept").await;

    let cases = [
        (
            peek_request("NoSuchTopic", -1, 32),
            response_code::TOPIC_NOT_EXIST,
            "topic[NoSuchTopic] not exist",
        ),
        (
            peek_request(TOPIC, 2, 32),
            response_code::INVALID_PARAMETER,
            "queueId[2] is illegal, topic:[PeekTopic] topicConfig.readQueueNums:[2]",
        ),
        (
            peek_request(TOPIC, -1, 0),
            response_code::INVALID_PARAMETER,
            "maxMsgNums 0 must be within 1..=32",
        ),
        (
            notification_request(7, 0),
            response_code::INVALID_PARAMETER,
            "queueId[7] is illegal",
        ),
        (
            RemotingCommand::request(request_code::NOTIFICATION)
                .with_ext("consumerGroup", GROUP)
                .with_ext("topic", TOPIC)
                .with_ext("queueId", -1),
            response_code::SYSTEM_ERROR,
            "pollTime",
        ),
        (
            RemotingCommand::request(request_code::PEEK_MESSAGE)
                .with_ext("consumerGroup", GROUP)
                .with_ext("topic", TOPIC)
                .with_ext("queueId", "x")
                .with_ext("maxMsgNums", 1),
            response_code::SYSTEM_ERROR,
            "queueId",
        ),
    ];
    for (request, code, remark) in cases {
        let mut fields: Vec<_> = request.ext_fields.iter().collect();
        fields.sort();
        let what = format!("{fields:?}");
        let r = invoke(&node, request, Duration::from_secs(5)).await;
        assert_eq!(r.code, code, "{what}: {:?}", r.remark);
        let text = r.remark.unwrap_or_default();
        assert!(text.contains(remark), "{what}: {text}");
    }

    // A topic that may not be read.
    let topic_write_only = TopicConfig {
        perm: rocketraft_common::consts::perm::WRITE,
        ..TopicConfig::new("WriteOnlyTopic", 1)
    };
    node.api
        .create_topic(&node.addr, &topic_write_only)
        .await
        .expect("topic");
    let r = invoke(
        &node,
        peek_request("WriteOnlyTopic", -1, 1),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        (r.code, r.remark.as_deref()),
        (
            response_code::NO_PERMISSION,
            Some("the topic[WriteOnlyTopic] peeking message is forbidden")
        )
    );

    // Nothing was consumed by the refusals.
    let (_, messages, _) = peek(&node, 32).await;
    assert_eq!(bodies(&messages), ["kept"]);
    node.broker.shutdown().await;
}
