//! POP consumption against a real broker and NameServer on loopback: several consumers draining
//! a topic message by message, redelivery after the invisible time, ChangeInvisibleTime and its
//! stale handle, the dead-letter queue after 17 deliveries, a restart with messages in flight, and
//! bad handles.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketraft_broker::store::FlushDiskType;
use rocketraft_broker::{Broker, BrokerConfig};
use rocketraft_common::consts::property;
use rocketraft_common::message::{decode_messages, MessageExt};
use rocketraft_common::TopicConfig;
use rocketraft_nameserver::{NameServer, NamesrvConfig};
use rocketraft_remoting::api::{MqClientApi, SendRequest};
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::{ClientConfig, RemotingClient, RemotingCommand};

use crate::pop_copy::{self, body, handle};

const TOPIC: &str = "PopTopic";

fn config(dir: &Path, namesrv: std::net::SocketAddr, port: u16) -> BrokerConfig {
    let mut c = BrokerConfig {
        listen: format!("127.0.0.1:{port}").parse().expect("addr"),
        namesrv_addr: namesrv.to_string(),
        ..BrokerConfig::default()
    };
    c.store.store_root = dir.to_path_buf();
    c.store.commitlog_segment_size = 1 << 20;
    c.store.flush_disk_type = FlushDiskType::SyncFlush;
    c.store.pretouch = false;
    c
}

fn free_port() -> u16 {
    rocketraft_common::net::free_loopback_port().expect("a free loopback port")
}

struct Setup {
    namesrv: NameServer,
    broker: Option<Broker>,
    addr: String,
    port: u16,
    client: RemotingClient,
}

async fn setup(dir: &Path) -> Setup {
    setup_flushing(dir, FlushDiskType::SyncFlush).await
}

async fn setup_flushing(dir: &Path, flush: FlushDiskType) -> Setup {
    let namesrv = NameServer::start(NamesrvConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..NamesrvConfig::default()
    })
    .await
    .expect("namesrv");
    let port = free_port();
    let mut c = config(dir, namesrv.local_addr(), port);
    c.store.flush_disk_type = flush;
    let broker = Broker::start(c).await.expect("broker");
    let addr = broker.local_addr().to_string();
    let client = RemotingClient::new(ClientConfig::default());
    let api = MqClientApi::new(client.clone(), Duration::from_secs(5));
    api.create_topic(&addr, &TopicConfig::new(TOPIC, 4))
        .await
        .expect("topic");
    Setup {
        namesrv,
        broker: Some(broker),
        addr,
        port,
        client,
    }
}

async fn send(s: &Setup, n: usize, from: usize) {
    let api = MqClientApi::new(s.client.clone(), Duration::from_secs(5));
    for i in from..from + n {
        let r = api
            .send(
                &s.addr,
                &SendRequest {
                    producer_group: "pg".into(),
                    topic: TOPIC.into(),
                    queue_id: (i % 4) as i32,
                    body: Bytes::from(format!("m{i}")),
                    properties: BTreeMap::from([(property::KEYS.to_string(), format!("k{i}"))]),
                    ..SendRequest::default()
                },
            )
            .await
            .expect("send");
        assert_eq!(r.code, response_code::SUCCESS);
    }
}

struct Popped {
    messages: Vec<MessageExt>,
}

async fn pop(s: &Setup, group: &str, max: i32, invisible_ms: i64, poll_ms: i64) -> Popped {
    let request = RemotingCommand::request(request_code::POP_MESSAGE)
        .with_ext("consumerGroup", group)
        .with_ext("topic", TOPIC)
        .with_ext("queueId", -1)
        .with_ext("maxMsgNums", max)
        .with_ext("invisibleTime", invisible_ms)
        .with_ext("pollTime", poll_ms)
        .with_ext("bornTime", rocketraft_common::time::now_ms())
        .with_ext("initMode", 0);
    let r = s
        .client
        .invoke(&s.addr, request, Duration::from_secs(10))
        .await
        .expect("pop");
    assert!(
        [
            response_code::SUCCESS,
            response_code::PULL_NOT_FOUND,
            response_code::POLLING_TIMEOUT
        ]
        .contains(&r.code),
        "pop answered {} {:?}",
        r.code,
        r.remark
    );
    let messages = if r.code == response_code::SUCCESS {
        decode_messages(&r.body).expect("decodable pop body")
    } else {
        Vec::new()
    };
    Popped { messages }
}

async fn ack(s: &Setup, group: &str, m: &MessageExt, handle: &str) -> RemotingCommand {
    pop_copy::ack(&s.client, &s.addr, group, TOPIC, m, handle).await
}

async fn change_invisible(s: &Setup, group: &str, m: &MessageExt, invisible_ms: i64) -> String {
    pop_copy::change_invisible(&s.client, &s.addr, group, TOPIC, m, invisible_ms).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumers_share_a_topic_and_each_message_is_acked_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Arc::new(setup(dir.path()).await);
    send(&s, 200, 0).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let s = s.clone();
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            let mut empty = 0;
            while empty < 3 {
                let p = pop(&s, "g1", 8, 30_000, 0).await;
                if p.messages.is_empty() {
                    empty += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                for m in &p.messages {
                    assert_eq!(m.message.topic, TOPIC);
                    let r = ack(&s, "g1", m, &handle(m)).await;
                    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
                    seen.lock().expect("lock").push(body(m));
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("consumer");
    }
    let seen = seen.lock().expect("lock").clone();
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), 200, "each message delivered once");
    assert_eq!(unique.len(), 200);
    // The group's consumer offsets advanced past everything acknowledged.
    let api = MqClientApi::new(s.client.clone(), Duration::from_secs(5));
    for q in 0..4 {
        assert_eq!(
            api.query_consumer_offset(&s.addr, "g1", TOPIC, q)
                .await
                .expect("offset"),
            Some(50)
        );
    }
    // Another group sees everything again.
    let other = pop(&s, "g2", 32, 30_000, 0).await;
    assert_eq!(other.messages.len(), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unacked_come_back_change_invisible_extends_and_the_old_handle_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = setup(dir.path()).await;
    send(&s, 4, 0).await;
    let first = pop(&s, "g", 4, 1000, 0).await;
    assert_eq!(first.messages.len(), 4);
    // Nothing else is visible while they are in flight.
    assert_eq!(pop(&s, "g", 4, 1000, 0).await.messages.len(), 0);
    // Extend one of them; its old handle stops working, the new one works later.
    let extended = &first.messages[0];
    let new_handle = change_invisible(&s, "g", extended, 5000).await;
    let stale = ack(&s, "g", extended, &handle(extended)).await;
    assert_eq!(stale.code, response_code::NO_MESSAGE, "{:?}", stale.remark);
    // After the invisible time the other three come back (long polling waits for them), with
    // their delivery counted; the extended one does not.
    let started = Instant::now();
    let mut again = Vec::new();
    while again.len() < 3 {
        assert!(started.elapsed() < Duration::from_secs(10), "no redelivery");
        again.extend(pop(&s, "g", 4, 60_000, 2000).await.messages);
    }
    let mut bodies: Vec<String> = again.iter().map(body).collect();
    bodies.sort();
    let mut expected: Vec<String> = first.messages[1..].iter().map(body).collect();
    expected.sort();
    assert_eq!(bodies, expected);
    for m in &again {
        assert_eq!(m.message.topic, TOPIC, "the original topic is restored");
        assert_eq!(m.reconsume_times, 1);
        assert_eq!(
            ack(&s, "g", m, &handle(m)).await.code,
            response_code::SUCCESS
        );
    }
    let r = ack(&s, "g", extended, &new_handle).await;
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    // Acked twice: refused, state unchanged.
    let twice = ack(&s, "g", extended, &new_handle).await;
    assert_eq!(twice.code, response_code::NO_MESSAGE);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        pop(&s, "g", 4, 1000, 0).await.messages.is_empty(),
        "nothing left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_failed_17_times_goes_to_the_dlq() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = setup(dir.path()).await;
    send(&s, 1, 0).await;
    let mut deliveries = 0;
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "stuck after {deliveries}"
        );
        let p = pop(&s, "gd", 1, 1, 1000).await;
        if let Some(m) = p.messages.first() {
            assert_eq!(m.reconsume_times, deliveries);
            deliveries += 1;
        } else if deliveries == 17 {
            break;
        }
    }
    // The DLQ holds it with its properties.
    let inner = s.broker.as_ref().expect("broker").inner().clone();
    let dlq = "%DLQ%gd";
    let mut found = None;
    for _ in 0..50 {
        if inner.store.get_max_offset_in_queue(dlq, 0) == 1 {
            let phy = inner
                .store
                .get_commit_log_offset_in_queue(dlq, 0, 0)
                .expect("dlq entry");
            found = inner.store.look_message_by_offset(phy);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = found.expect("a message in the DLQ");
    assert_eq!(body(&m), "m0");
    assert_eq!(m.message.property(property::KEYS), Some("k0"));
    assert_eq!(m.message.property(property::RETRY_TOPIC), Some(TOPIC));
    assert_eq!(m.reconsume_times, 17);
    assert_eq!(deliveries, 17);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_with_messages_in_flight_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = setup(dir.path()).await;
    send(&s, 10, 0).await;
    let first = pop(&s, "gr", 10, 2000, 0).await;
    assert_eq!(first.messages.len(), 10);
    let (acked, pending) = first.messages.split_at(5);
    for m in acked {
        assert_eq!(
            ack(&s, "gr", m, &handle(m)).await.code,
            response_code::SUCCESS
        );
    }
    s.broker.take().expect("broker").shutdown().await;
    let broker = Broker::start(config(dir.path(), s.namesrv.local_addr(), s.port))
        .await
        .expect("restart");
    s.addr = broker.local_addr().to_string();
    s.broker = Some(broker);
    // Acknowledged handles stay acknowledged; the others come back after their invisible time.
    let again_ack = ack(&s, "gr", &acked[0], &handle(&acked[0])).await;
    assert_eq!(again_ack.code, response_code::NO_MESSAGE);
    let started = Instant::now();
    let mut back = Vec::new();
    while back.len() < 5 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "in-flight messages lost"
        );
        back.extend(pop(&s, "gr", 10, 30_000, 1000).await.messages);
    }
    let mut got: Vec<String> = back.iter().map(body).collect();
    got.sort();
    let mut want: Vec<String> = pending.iter().map(body).collect();
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_handles_and_other_groups_get_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = setup(dir.path()).await;
    send(&s, 2, 0).await;
    let p = pop(&s, "ga", 1, 30_000, 0).await;
    let m = &p.messages[0];
    let garbage = ack(&s, "ga", m, "not a handle").await;
    assert_eq!(garbage.code, response_code::SYSTEM_ERROR);
    assert!(garbage
        .remark
        .unwrap_or_default()
        .contains("receipt handle"));
    let other_group = ack(&s, "gb", m, &handle(m)).await;
    assert_eq!(other_group.code, response_code::NO_MESSAGE);
    // Still in flight for its own group.
    assert_eq!(
        ack(&s, "ga", m, &handle(m)).await.code,
        response_code::SUCCESS
    );
    let bad_invisible = RemotingCommand::request(request_code::POP_MESSAGE)
        .with_ext("consumerGroup", "ga")
        .with_ext("topic", TOPIC)
        .with_ext("queueId", -1)
        .with_ext("maxMsgNums", 1)
        .with_ext("invisibleTime", 0);
    let r = s
        .client
        .invoke(&s.addr, bad_invisible, Duration::from_secs(5))
        .await
        .expect("answer");
    assert_eq!(r.code, response_code::SYSTEM_ERROR);
    let unknown_topic = RemotingCommand::request(request_code::POP_MESSAGE)
        .with_ext("consumerGroup", "ga")
        .with_ext("topic", "NoSuchTopic")
        .with_ext("queueId", -1)
        .with_ext("maxMsgNums", 1)
        .with_ext("invisibleTime", 1000);
    let r = s
        .client
        .invoke(&s.addr, unknown_topic, Duration::from_secs(5))
        .await
        .expect("answer");
    assert_eq!(r.code, response_code::TOPIC_NOT_EXIST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_ack_acknowledges_the_offsets_of_its_bitset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = setup(dir.path()).await;
    // One queue's worth: offsets 0..4 of queue 1.
    for i in 0..4 {
        send(&s, 1, 1 + 4 * i).await;
    }
    let request = RemotingCommand::request(request_code::POP_MESSAGE)
        .with_ext("consumerGroup", "gb")
        .with_ext("topic", TOPIC)
        .with_ext("queueId", 1)
        .with_ext("maxMsgNums", 4)
        .with_ext("invisibleTime", 1000);
    let r = s
        .client
        .invoke(&s.addr, request, Duration::from_secs(5))
        .await
        .expect("pop");
    let popped = decode_messages(&r.body).expect("body");
    assert_eq!(popped.len(), 4);
    let pop_time: i64 = r.ext("popTime").expect("popTime").parse().expect("number");
    // A bitset longer than 128 bytes (offsets past 1024) is refused whole: nothing acked.
    let huge = rocketraft_common::base64::encode_standard(&[0xffu8; 129]);
    let huge_body = serde_json::json!({
        "brokerName": "broker-a",
        "acks": [{"c": "gb", "t": TOPIC, "r": "0", "so": 0, "q": 1, "rq": 0, "pt": pop_time, "it": 1000, "b": huge}]
    });
    let r = s
        .client
        .invoke(
            &s.addr,
            RemotingCommand::request(request_code::BATCH_ACK_MESSAGE)
                .with_body(serde_json::to_vec(&huge_body).expect("json")),
            Duration::from_secs(5),
        )
        .await
        .expect("batch ack");
    assert_ne!(r.code, response_code::SUCCESS);
    assert!(
        r.remark.as_deref().is_some_and(|m| m.contains("bitSet")),
        "{:?}",
        r.remark
    );
    // Ack offsets 0, 1 and 3 (bits 0, 1, 3 = 0b1011 = 11 -> base64 "Cw==").
    let ack_body = serde_json::json!({
        "brokerName": "broker-a",
        "acks": [{"c": "gb", "t": TOPIC, "r": "0", "so": 0, "q": 1, "rq": 0, "pt": pop_time, "it": 1000, "b": "Cw=="}]
    });
    let r = s
        .client
        .invoke(
            &s.addr,
            RemotingCommand::request(request_code::BATCH_ACK_MESSAGE)
                .with_body(serde_json::to_vec(&ack_body).expect("json")),
            Duration::from_secs(5),
        )
        .await
        .expect("batch ack");
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    // Only offset 2 comes back.
    let started = Instant::now();
    let again = loop {
        let p = pop(&s, "gb", 4, 30_000, 1000).await;
        if !p.messages.is_empty() {
            break p.messages;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "offset 2 never came back"
        );
    };
    assert_eq!(again.len(), 1);
    assert_eq!(body_of_offset(&popped, 2), body(&again[0]));
}

fn body_of_offset(msgs: &[MessageExt], offset: i64) -> String {
    msgs.iter()
        .find(|m| m.queue_offset == offset)
        .map(body)
        .expect("offset popped")
}

/// Per message group: (index, delivery count) in delivery order.
type Deliveries = BTreeMap<String, Vec<(u32, i32)>>;

async fn pop_fifo(s: &Setup, group: &str, invisible_ms: i64) -> Vec<MessageExt> {
    let request = RemotingCommand::request(request_code::POP_MESSAGE)
        .with_ext("consumerGroup", group)
        .with_ext("topic", TOPIC)
        .with_ext("queueId", -1)
        .with_ext("maxMsgNums", 4)
        .with_ext("invisibleTime", invisible_ms)
        .with_ext("order", "true");
    let r = s
        .client
        .invoke(&s.addr, request, Duration::from_secs(10))
        .await
        .expect("pop");
    if r.code == response_code::SUCCESS {
        decode_messages(&r.body).expect("body")
    } else {
        Vec::new()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifo_groups_keep_send_order_across_consumers_and_retries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Arc::new(setup(dir.path()).await);
    let api = MqClientApi::new(s.client.clone(), Duration::from_secs(5));
    // Three message groups, sent interleaved; the broker maps each group to one queue.
    for i in 0..10 {
        for g in ["A", "B", "C"] {
            let r = api
                .send(
                    &s.addr,
                    &SendRequest {
                        producer_group: "pg".into(),
                        topic: TOPIC.into(),
                        queue_id: -1,
                        body: Bytes::from(format!("{g}-{i}")),
                        properties: BTreeMap::from([(
                            property::SHARDING_KEY.to_string(),
                            g.to_string(),
                        )]),
                        ..SendRequest::default()
                    },
                )
                .await
                .expect("send");
            assert_eq!(r.code, response_code::SUCCESS);
        }
    }
    let acked: Arc<Mutex<BTreeMap<String, Vec<u32>>>> = Arc::default();
    let delivered: Arc<Mutex<Deliveries>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (s, acked, delivered) = (s.clone(), acked.clone(), delivered.clone());
        tasks.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(40);
            loop {
                let done = acked
                    .lock()
                    .expect("lock")
                    .values()
                    .map(Vec::len)
                    .sum::<usize>()
                    == 30;
                if done || Instant::now() > deadline {
                    break;
                }
                let batch = pop_fifo(&s, "fifo", 800).await;
                if batch.is_empty() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                let mut failed = false;
                for m in &batch {
                    let b = body(m);
                    let (g, i) = b.split_once('-').expect("group-index");
                    let i: u32 = i.parse().expect("index");
                    delivered
                        .lock()
                        .expect("lock")
                        .entry(g.to_string())
                        .or_default()
                        .push((i, m.reconsume_times));
                    // Every group's message 3 fails on its first delivery; the rest of its batch
                    // is then left unacknowledged too (a FIFO consumer stops at a failure).
                    if failed || (i == 3 && m.reconsume_times == 0) {
                        failed = true;
                        continue;
                    }
                    let r = ack(&s, "fifo", m, &handle(m)).await;
                    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
                    acked
                        .lock()
                        .expect("lock")
                        .entry(g.to_string())
                        .or_default()
                        .push(i);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("consumer");
    }
    let acked = acked.lock().expect("lock").clone();
    for g in ["A", "B", "C"] {
        assert_eq!(
            acked.get(g),
            Some(&(0..10).collect::<Vec<u32>>()),
            "group {g} acked in order"
        );
        let d = delivered
            .lock()
            .expect("lock")
            .get(g)
            .cloned()
            .unwrap_or_default();
        // A retried message keeps its place: nothing after it is delivered before it is acked.
        let retried: Vec<&(u32, i32)> = d.iter().filter(|(_, rt)| *rt > 0).collect();
        assert!(
            retried.iter().any(|(i, _)| *i == 3),
            "group {g}: message 3 retried: {d:?}"
        );
        let first_retry = d
            .iter()
            .position(|(i, rt)| *i == 3 && *rt > 0)
            .expect("retry");
        assert!(
            d[..first_retry].iter().all(|(i, _)| *i <= 6),
            "group {g}: messages past the batch were delivered before the retry: {d:?}"
        );
        assert!(
            d[first_retry..]
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 || w[1].1 > 0),
            "group {g}: out of order after the retry: {d:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_retry_max_times_and_expired_handles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = setup(dir.path()).await;
    // Group "g3" retries twice, then its DLQ.
    let config = serde_json::json!({"groupName": "g3", "retryMaxTimes": 2, "consumeEnable": true});
    let r = s
        .client
        .invoke(
            &s.addr,
            RemotingCommand::request(request_code::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
                .with_body(serde_json::to_vec(&config).expect("json")),
            Duration::from_secs(5),
        )
        .await
        .expect("group");
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    let bad = serde_json::json!({"groupName": "g4", "retryMaxTimes": -1});
    let r = s
        .client
        .invoke(
            &s.addr,
            RemotingCommand::request(request_code::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
                .with_body(serde_json::to_vec(&bad).expect("json")),
            Duration::from_secs(5),
        )
        .await
        .expect("group");
    assert_eq!(r.code, response_code::SYSTEM_ERROR);
    send(&s, 1, 0).await;
    let mut deliveries = 0;
    let mut first_handle = None;
    let started = Instant::now();
    while deliveries < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "stuck at {deliveries}"
        );
        for m in pop(&s, "g3", 1, 1, 1000).await.messages {
            first_handle.get_or_insert_with(|| (m.clone(), handle(&m)));
            deliveries += 1;
        }
    }
    // An expired handle (its message was redelivered since) is refused.
    let (m, h) = first_handle.expect("a delivery");
    assert_eq!(ack(&s, "g3", &m, &h).await.code, response_code::NO_MESSAGE);
    // After the third failure the message is in %DLQ%g3 and never delivered again.
    let inner = s.broker.as_ref().expect("broker").inner().clone();
    let started = Instant::now();
    while inner.store.get_max_offset_in_queue("%DLQ%g3", 0) < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(pop(&s, "g3", 1, 1000, 500).await.messages.is_empty());
}

/// Sends `n` messages of one message group (one FIFO queue); returns that queue.
async fn send_group(s: &Setup, group: &str, n: usize) -> i32 {
    let api = MqClientApi::new(s.client.clone(), Duration::from_secs(5));
    let mut queue = None;
    for i in 0..n {
        let r = api
            .send(
                &s.addr,
                &SendRequest {
                    producer_group: "pg".into(),
                    topic: TOPIC.into(),
                    queue_id: -1,
                    body: Bytes::from(format!("{group}-{i}")),
                    properties: BTreeMap::from([(
                        property::SHARDING_KEY.to_string(),
                        group.to_string(),
                    )]),
                    ..SendRequest::default()
                },
            )
            .await
            .expect("send");
        assert_eq!(r.code, response_code::SUCCESS);
        assert_eq!(*queue.get_or_insert(r.queue_id), r.queue_id);
    }
    queue.expect("sent")
}

/// Stores the checkpoint a master whose wall clock ran `skew_ms` ahead would have stored when
/// it popped offset `offset` of `queue` for `group` (as the revive record `PopService` writes).
async fn store_skewed_checkpoint(
    s: &Setup,
    group: &str,
    queue: i32,
    offset: i64,
    skew_ms: i64,
    invisible_ms: i64,
    fifo: bool,
) {
    let inner = s.broker.as_ref().expect("broker").inner().clone();
    let topic = rocketraft_broker::pop::revive_topic(&inner.config.cluster_name);
    rocketraft_broker::pop::ensure_system_topic(&inner, &topic, 1).expect("revive topic");
    let ck = serde_json::json!({
        "k": "ck", "g": group, "t": TOPIC, "q": queue, "o": offset,
        "pt": rocketraft_common::time::now_ms() + skew_ms, "it": invisible_ms, "rt": 0, "fifo": fifo,
    });
    let msg =
        rocketraft_common::message::Message::new(topic, serde_json::to_vec(&ck).expect("json"));
    inner
        .store_durably(vec![rocketraft_broker::store::BrokerMessage::new(msg, 0)])
        .await
        .expect("checkpoint stored");
}

async fn restart(s: &mut Setup, dir: &Path) {
    s.broker.take().expect("broker").shutdown().await;
    let broker = Broker::start(config(dir, s.namesrv.local_addr(), s.port))
        .await
        .expect("restart");
    s.addr = broker.local_addr().to_string();
    s.broker = Some(broker);
}

/// FIFO pops until one returns messages (or `within` passes).
async fn pop_fifo_within(
    s: &Setup,
    group: &str,
    invisible_ms: i64,
    within: Duration,
) -> Vec<MessageExt> {
    let started = Instant::now();
    while started.elapsed() < within {
        let got = pop_fifo(s, group, invisible_ms).await;
        if !got.is_empty() {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Vec::new()
}

/// Found by the jepsen run `--nemesis all --seed 2026` (/tmp/j-all-2026b): the master b3, run
/// with its clock 438 s ahead, popped one message of each of two FIFO queues and was restarted
/// (normal clock) before its consumer got them. Their checkpoints carried pop times 438 s in
/// the future, and every master that replayed the revive topic (b3 itself, then b2 after a
/// transfer) kept both queues blocked until `pop time + invisible time` on its own clock:
/// ~446 s, longer than the rest of the run; 4580 acknowledged messages behind them were never
/// delivered. A checkpoint must stay invisible at most its invisible time from when a broker
/// sees it, and the message must then be popped again, in order, and survive more replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifo_checkpoint_from_a_clock_ahead_blocks_its_queue_only_for_the_invisible_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = setup(dir.path()).await;
    let group = "fifo-skew";
    let queue = send_group(&s, "A", 3).await;
    // Offset 0 popped by a master 438 s ahead; the pop never reached its consumer.
    store_skewed_checkpoint(&s, group, queue, 0, 438_000, 2_000, true).await;
    restart(&mut s, dir.path()).await;

    let got = pop_fifo_within(&s, group, 2_000, Duration::from_secs(15)).await;
    let bodies: Vec<String> = got.iter().map(body).collect();
    assert_eq!(
        bodies,
        ["A-0"],
        "the FIFO queue stays blocked by a checkpoint from a clock ahead"
    );
    assert_eq!(got[0].reconsume_times, 1);

    // Popped again (not acked), then replayed once more: still in flight, and first again.
    restart(&mut s, dir.path()).await;
    let got = pop_fifo_within(&s, group, 30_000, Duration::from_secs(15)).await;
    let bodies: Vec<String> = got.iter().map(body).collect();
    assert_eq!(
        bodies,
        ["A-0"],
        "the re-popped message was lost by the replay"
    );
    assert_eq!(got[0].reconsume_times, 2);
    assert_eq!(
        ack(&s, group, &got[0], &handle(&got[0])).await.code,
        response_code::SUCCESS
    );
    let got = pop_fifo_within(&s, group, 30_000, Duration::from_secs(5)).await;
    let bodies: Vec<String> = got.iter().map(body).collect();
    assert_eq!(bodies, ["A-1", "A-2"]);
}

/// The same for a normal (non-FIFO) checkpoint: revived into the retry topic after its
/// invisible time, not after the skew.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkpoint_from_a_clock_ahead_is_revived_after_the_invisible_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = setup(dir.path()).await;
    let group = "skew";
    let queue = send_group(&s, "B", 1).await;
    store_skewed_checkpoint(&s, group, queue, 0, 438_000, 1_000, false).await;
    // The committed offset past the popped message, as the popping master left it.
    s.broker
        .as_ref()
        .expect("broker")
        .inner()
        .metadata
        .commit_offset(group, TOPIC, queue, 1)
        .expect("offset");
    restart(&mut s, dir.path()).await;
    let started = Instant::now();
    let mut back = Vec::new();
    while back.is_empty() && started.elapsed() < Duration::from_secs(15) {
        back = pop(&s, group, 4, 30_000, 1000).await.messages;
    }
    let bodies: Vec<String> = back.iter().map(body).collect();
    assert_eq!(bodies, ["B-0"], "not revived within its invisible time");
}

/// Pops up to `max` messages of `queue` only.
async fn pop_queue(
    s: &Setup,
    group: &str,
    queue: i32,
    max: i32,
    invisible_ms: i64,
) -> Vec<MessageExt> {
    let request = RemotingCommand::request(request_code::POP_MESSAGE)
        .with_ext("consumerGroup", group)
        .with_ext("topic", TOPIC)
        .with_ext("queueId", queue)
        .with_ext("maxMsgNums", max)
        .with_ext("invisibleTime", invisible_ms)
        .with_ext("initMode", 0);
    let r = s
        .client
        .invoke(&s.addr, request, Duration::from_secs(10))
        .await
        .expect("pop");
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    decode_messages(&r.body).expect("decodable pop body")
}

/// Records stored in the revive topic so far.
fn revive_records(s: &Setup) -> i64 {
    let inner = s.broker.as_ref().expect("broker").inner().clone();
    let topic = rocketraft_broker::pop::revive_topic(&inner.config.cluster_name);
    inner.store.get_max_offset_in_queue(&topic, 0)
}

/// Pops until `n` messages came back (each pop long-polls), within `within`.
async fn popped_back(s: &Setup, group: &str, n: usize, within: Duration) -> Vec<MessageExt> {
    let started = Instant::now();
    let mut back = Vec::new();
    while back.len() < n && started.elapsed() < within {
        back.extend(pop(s, group, 32, 30_000, 1000).await.messages);
    }
    back
}

fn sorted_bodies(msgs: &[MessageExt]) -> Vec<String> {
    let mut bodies: Vec<String> = msgs.iter().map(body).collect();
    bodies.sort();
    bodies
}

/// One POP of 8 messages of one queue stores one checkpoint record; acks (single ones stored
/// together with whatever else is acked at the time, and a BATCH_ACK_MESSAGE of the same
/// batch) mark messages done within it, and the revive re-puts exactly the others, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_has_one_checkpoint_and_its_revive_gives_exactly_the_unacked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = setup(dir.path()).await;
    // Queue 1 gets m1, m5, ..., m29 (offsets 0..8).
    for i in 0..8 {
        send(&s, 1, 1 + 4 * i).await;
    }
    let before = revive_records(&s);
    let batch = pop_queue(&s, "gbatch", 1, 8, 1500).await;
    assert_eq!(batch.len(), 8);
    assert_eq!(
        revive_records(&s) - before,
        1,
        "one checkpoint record for the batch"
    );
    // Offsets 0 and 2 acked one by one, concurrently; 5 and 6 in one BATCH_ACK_MESSAGE.
    let by_offset = |o: i64| {
        batch
            .iter()
            .find(|m| m.queue_offset == o)
            .expect("popped offset")
    };
    let (h0, h2) = (handle(by_offset(0)), handle(by_offset(2)));
    let (a, b) = tokio::join!(
        ack(&s, "gbatch", by_offset(0), &h0),
        ack(&s, "gbatch", by_offset(2), &h2)
    );
    assert_eq!(a.code, response_code::SUCCESS, "{:?}", a.remark);
    assert_eq!(b.code, response_code::SUCCESS, "{:?}", b.remark);
    let pop_time: i64 = handle(by_offset(5))
        .split(' ')
        .nth(1)
        .expect("pop time")
        .parse()
        .expect("number");
    // Bits 5 and 6 = 0b0110_0000 = 96 -> base64 "YA==".
    let ack_body = serde_json::json!({
        "brokerName": "broker-a",
        "acks": [{"c": "gbatch", "t": TOPIC, "r": "0", "so": 0, "q": 1, "rq": 0, "pt": pop_time, "it": 1500, "b": "YA=="}]
    });
    let r = s
        .client
        .invoke(
            &s.addr,
            RemotingCommand::request(request_code::BATCH_ACK_MESSAGE)
                .with_body(serde_json::to_vec(&ack_body).expect("json")),
            Duration::from_secs(5),
        )
        .await
        .expect("batch ack");
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    // Acked twice in a batch: refused.
    let r = s
        .client
        .invoke(
            &s.addr,
            RemotingCommand::request(request_code::BATCH_ACK_MESSAGE)
                .with_body(serde_json::to_vec(&ack_body).expect("json")),
            Duration::from_secs(5),
        )
        .await
        .expect("batch ack");
    assert_eq!(r.code, response_code::NO_MESSAGE, "{:?}", r.remark);

    let back = popped_back(&s, "gbatch", 4, Duration::from_secs(15)).await;
    let unacked: Vec<MessageExt> = [1, 3, 4, 7].iter().map(|o| by_offset(*o).clone()).collect();
    assert_eq!(sorted_bodies(&back), sorted_bodies(&unacked));
    for m in &back {
        assert_eq!(m.reconsume_times, 1);
        assert_eq!(
            ack(&s, "gbatch", m, &handle(m)).await.code,
            response_code::SUCCESS
        );
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(
        pop(&s, "gbatch", 32, 1000, 0).await.messages.is_empty(),
        "an acked message of the batch came back"
    );
}

/// A restart replays a half-acked batch: the acked handles stay acked, an un-acked one is
/// still in flight under its receipt handle, and the rest come back after the invisible time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_replays_a_half_acked_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = setup(dir.path()).await;
    for i in 0..6 {
        send(&s, 1, 2 + 4 * i).await;
    }
    let batch = pop_queue(&s, "ghalf", 2, 6, 3000).await;
    assert_eq!(batch.len(), 6);
    for m in batch.iter().filter(|m| m.queue_offset % 2 == 0) {
        assert_eq!(
            ack(&s, "ghalf", m, &handle(m)).await.code,
            response_code::SUCCESS
        );
    }
    restart(&mut s, dir.path()).await;
    // 3 and 5 are left alone to come back.
    for m in batch.iter().filter(|m| ![3, 5].contains(&m.queue_offset)) {
        let r = ack(&s, "ghalf", m, &handle(m)).await;
        if m.queue_offset == 1 {
            assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
        } else {
            assert_eq!(
                r.code,
                response_code::NO_MESSAGE,
                "acked before the restart"
            );
        }
    }
    let back = popped_back(&s, "ghalf", 2, Duration::from_secs(15)).await;
    let want: Vec<MessageExt> = batch
        .iter()
        .filter(|m| [3, 5].contains(&m.queue_offset))
        .cloned()
        .collect();
    assert_eq!(sorted_bodies(&back), sorted_bodies(&want));
}

/// A data directory written by the previous version (one checkpoint record per message, one
/// ack record per ack) keeps working: its messages in flight are rebuilt on start, the acked
/// one stays acked, the others are revived and handles of the old checkpoints still ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_message_checkpoints_of_the_previous_version_are_replayed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = setup(dir.path()).await;
    for i in 0..4 {
        send(&s, 1, 3 + 4 * i).await;
    }
    let group = "gold";
    let inner = s.broker.as_ref().expect("broker").inner().clone();
    let topic = rocketraft_broker::pop::revive_topic(&inner.config.cluster_name);
    rocketraft_broker::pop::ensure_system_topic(&inner, &topic, 1).expect("revive topic");
    let pt = rocketraft_common::time::now_ms();
    let mut records: Vec<serde_json::Value> = (0..4)
        .map(|o| {
            serde_json::json!({"k": "ck", "g": group, "t": TOPIC, "q": 3, "o": o, "pt": pt, "it": 4000, "rt": 0})
        })
        .collect();
    records.push(serde_json::json!({"k": "ack", "g": group, "t": TOPIC, "q": 3, "o": 1, "pt": pt}));
    for record in records {
        let msg = rocketraft_common::message::Message::new(
            topic.clone(),
            serde_json::to_vec(&record).expect("json"),
        );
        inner
            .store_durably(vec![rocketraft_broker::store::BrokerMessage::new(msg, 0)])
            .await
            .expect("old record stored");
    }
    inner
        .metadata
        .commit_offset(group, TOPIC, 3, 0)
        .expect("offset");
    drop(inner);
    restart(&mut s, dir.path()).await;
    let name = s
        .broker
        .as_ref()
        .expect("broker")
        .inner()
        .config
        .broker_name
        .clone();
    let old_handle = |o: i64| format!("{o} {pt} 4000 0 0 {name} 3 {o}");
    let ack_at = |o: i64| {
        let request = RemotingCommand::request(request_code::ACK_MESSAGE)
            .with_ext("consumerGroup", group)
            .with_ext("topic", TOPIC)
            .with_ext("queueId", 3)
            .with_ext("extraInfo", old_handle(o))
            .with_ext("offset", o);
        s.client.invoke(&s.addr, request, Duration::from_secs(5))
    };
    // Offset 0 is acked with the handle its old checkpoint gave; 1 was acked before.
    let r = ack_at(0).await.expect("ack");
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    let r = ack_at(1).await.expect("ack");
    assert_eq!(r.code, response_code::NO_MESSAGE, "{:?}", r.remark);
    let back = popped_back(&s, group, 2, Duration::from_secs(15)).await;
    assert_eq!(sorted_bodies(&back), ["m11", "m15"]);
    assert!(back.iter().all(|m| m.reconsume_times == 1));
}

/// How a measured POP drain acknowledges.
#[derive(Clone, Copy, Debug)]
enum AckMode {
    /// One ACK_MESSAGE per message, one at a time (what `rocketraft bench pop` does).
    EachMessage,
    /// One BATCH_ACK_MESSAGE per POP (a bitset per queue of the batch).
    PerPop,
}

/// POPs (32 at a time, all queues) and acks until `n` messages of `group` were acked; the
/// messages acked.
async fn drain_pop(s: &Setup, group: &str, n: usize, mode: AckMode) -> usize {
    let mut acked = 0;
    let mut idle = 0;
    while acked < n && idle < 50 {
        let batch = pop(s, group, 32, 60_000, 0).await.messages;
        if batch.is_empty() {
            idle += 1;
            continue;
        }
        match mode {
            AckMode::EachMessage => {
                for m in &batch {
                    let r = ack(s, group, m, &handle(m)).await;
                    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
                }
            }
            AckMode::PerPop => {
                let mut by_queue: BTreeMap<(i32, i64), Vec<i64>> = BTreeMap::new();
                for m in &batch {
                    let pt: i64 = handle(m)
                        .split(' ')
                        .nth(1)
                        .and_then(|t| t.parse().ok())
                        .expect("pop time in the handle");
                    by_queue
                        .entry((m.queue_id, pt))
                        .or_default()
                        .push(m.queue_offset);
                }
                let acks: Vec<serde_json::Value> = by_queue
                    .iter()
                    .map(|((q, pt), offsets)| {
                        let so = *offsets.iter().min().expect("an offset");
                        let mut bits = vec![0u8; 8];
                        for o in offsets {
                            let i = (o - so) as usize;
                            bits[i / 8] |= 1 << (i % 8);
                        }
                        serde_json::json!({"c": group, "t": TOPIC, "r": "0", "so": so, "q": q, "rq": 0, "pt": pt, "it": 60_000, "b": rocketraft_common::base64::encode_standard(&bits)})
                    })
                    .collect();
                let body = serde_json::json!({"brokerName": "broker-a", "acks": acks});
                let r = s
                    .client
                    .invoke(
                        &s.addr,
                        RemotingCommand::request(request_code::BATCH_ACK_MESSAGE)
                            .with_body(serde_json::to_vec(&body).expect("json")),
                        Duration::from_secs(5),
                    )
                    .await
                    .expect("batch ack");
                assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
            }
        }
        acked += batch.len();
    }
    acked
}

/// A measurement more than a check (run it with `--ignored --nocapture`; debug builds make the
/// numbers small, the ratios are what to read): one consumer draining the same messages by
/// PULL (32 a request, the baseline), by POP + one ACK_MESSAGE per message, and by POP + one
/// BATCH_ACK_MESSAGE per POP, against a broker with ASYNC_FLUSH (as `rocketraft dev` runs).
/// Every message must be drained each way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_pop_with_per_message_and_batch_acks_against_pull() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = setup_flushing(dir.path(), FlushDiskType::AsyncFlush).await;
    const N: usize = 4000;
    send(&s, N, 0).await;
    let api = MqClientApi::new(s.client.clone(), Duration::from_secs(5));
    let started = Instant::now();
    let mut pulled = 0;
    for q in 0..4 {
        let mut offset = 0;
        loop {
            let r = api
                .pull(
                    &s.addr,
                    &rocketraft_remoting::api::PullRequest {
                        consumer_group: "measure-pull".into(),
                        topic: TOPIC.into(),
                        queue_id: q,
                        queue_offset: offset,
                        max_msg_nums: 32,
                        sys_flag: rocketraft_common::consts::pull_sys_flag::SUBSCRIPTION,
                        commit_offset: 0,
                        suspend_timeout_ms: 0,
                        subscription: Some("*".into()),
                    },
                )
                .await
                .expect("pull");
            if r.messages.is_empty() {
                break;
            }
            pulled += r.messages.len();
            offset = r.next_begin_offset;
        }
    }
    let pull_rate = pulled as f64 / started.elapsed().as_secs_f64();
    assert_eq!(pulled, N);
    println!("pull: {pull_rate:.0} msgs/s");
    for (group, mode) in [
        ("measure-each", AckMode::EachMessage),
        ("measure-batch", AckMode::PerPop),
    ] {
        let started = Instant::now();
        let acked = drain_pop(&s, group, N, mode).await;
        let rate = acked as f64 / started.elapsed().as_secs_f64();
        println!(
            "pop + ack ({mode:?}): {rate:.0} msgs/s = {:.2}x pull",
            rate / pull_rate
        );
        assert_eq!(acked, N, "{mode:?} drained {acked} of {N}");
    }
}
