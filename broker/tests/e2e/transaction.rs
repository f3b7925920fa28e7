//! Transactional messages against a real broker on loopback: commit delivers, rollback never
//! does, a second decision is refused, an undecided half message is checked back with a live
//! producer (which commits it), and one nobody answers is rolled back after the maximum checks.
//! Under retention, undecided half messages are stored again at the head of the log and keep
//! their identity, so the segments they started in can go.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketraft_broker::store::FlushDiskType;
use rocketraft_broker::{Broker, BrokerConfig};
use rocketraft_common::consts::{property, sys_flag};
use rocketraft_common::message::decode_message;
use rocketraft_common::protocol::{HeartbeatData, ProducerData};
use rocketraft_common::TopicConfig;
use rocketraft_nameserver::{NameServer, NamesrvConfig};
use rocketraft_remoting::api::{MqClientApi, SendRequest};
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::server::processor_fn;
use rocketraft_remoting::{ClientConfig, RemotingClient, RemotingCommand};

pub(crate) const TOPIC: &str = "Tx";

fn free_port() -> u16 {
    rocketraft_common::net::free_loopback_port().expect("a free loopback port")
}

async fn start(dir: &Path) -> (NameServer, Broker) {
    start_with(dir, |_| {}).await
}

async fn start_with(dir: &Path, tune: impl FnOnce(&mut BrokerConfig)) -> (NameServer, Broker) {
    let ns = NameServer::start(NamesrvConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..NamesrvConfig::default()
    })
    .await
    .expect("namesrv");
    let mut c = BrokerConfig {
        listen: format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
        namesrv_addr: ns.local_addr().to_string(),
        transaction_timeout_ms: 300,
        transaction_check_interval_ms: 300,
        transaction_check_max: 3,
        ..BrokerConfig::default()
    };
    c.store.store_root = dir.to_path_buf();
    c.store.commitlog_segment_size = 1 << 20;
    c.store.flush_disk_type = FlushDiskType::SyncFlush;
    c.store.pretouch = false;
    tune(&mut c);
    let broker = Broker::start(c).await.expect("broker");
    (ns, broker)
}

pub(crate) fn visible(b: &Broker) -> Vec<String> {
    let store = &b.inner().store;
    (0..store.get_max_offset_in_queue(TOPIC, 0))
        .filter_map(|o| store.get_commit_log_offset_in_queue(TOPIC, 0, o))
        .filter_map(|phy| store.look_message_by_offset(phy))
        .map(|m| String::from_utf8_lossy(&m.message.body).to_string())
        .collect()
}

/// Sends a prepared message; returns (half queue offset, commit log offset).
pub(crate) async fn prepare(api: &MqClientApi, addr: &str, body: &str, group: &str) -> (i64, i64) {
    let r = api
        .send(
            addr,
            &SendRequest {
                producer_group: group.into(),
                topic: TOPIC.into(),
                queue_id: 0,
                body: Bytes::from(body.to_string()),
                properties: BTreeMap::from([
                    (
                        property::TRANSACTION_PREPARED.to_string(),
                        "true".to_string(),
                    ),
                    (property::PRODUCER_GROUP.to_string(), group.to_string()),
                ]),
                sys_flag: sys_flag::TRANSACTION_PREPARED_TYPE,
                ..SendRequest::default()
            },
        )
        .await
        .expect("prepare");
    assert_eq!(r.code, response_code::SUCCESS);
    let (_, phy) = rocketraft_common::message::decode_offset_msg_id(&r.msg_id).expect("offset id");
    (r.queue_offset, phy)
}

pub(crate) fn end(offset: i64, phy: i64, decision: i32, from_check: bool) -> RemotingCommand {
    RemotingCommand::request(request_code::END_TRANSACTION)
        .with_ext("producerGroup", "tg")
        .with_ext("tranStateTableOffset", offset)
        .with_ext("commitLogOffset", phy)
        .with_ext("commitOrRollback", decision)
        .with_ext("fromTransactionCheck", from_check)
}

/// What a check-back showed the producer: (tranStateTableOffset, commitLogOffset, the
/// message's topic, queue offset, CommitLog offset and TRAN_PREPARED_QUEUE_OFFSET).
pub(crate) type Check = (i64, i64, Option<(String, i64, i64, Option<String>)>);

/// A live producer of `group` (heartbeat from `client_id`) that answers every check-back with
/// COMMIT over a separate connection, recording what each check showed.
pub(crate) async fn committing_producer(
    addr: &str,
    group: &str,
    client_id: &str,
) -> (RemotingClient, Arc<std::sync::Mutex<Vec<Check>>>) {
    let producer = RemotingClient::new(ClientConfig::default());
    let answer = RemotingClient::new(ClientConfig::default());
    let broker_addr = addr.to_string();
    let checks = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = checks.clone();
    producer.set_request_handler(processor_fn(move |_ctx, req: RemotingCommand| {
        let (answer, broker_addr, seen) = (answer.clone(), broker_addr.clone(), seen.clone());
        async move {
            if req.code == request_code::CHECK_TRANSACTION_STATE {
                let offset: i64 = req
                    .ext("tranStateTableOffset")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(-1);
                let phy: i64 = req
                    .ext("commitLogOffset")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(-1);
                let shown = decode_message(&req.body)
                    .map(|(m, _)| {
                        (
                            m.message.topic.clone(),
                            m.queue_offset,
                            m.commit_log_offset,
                            m.message
                                .property(rocketraft_broker::transaction::PREPARED_QUEUE_OFFSET)
                                .map(str::to_string),
                        )
                    })
                    .ok();
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((offset, phy, shown));
                let _ = answer
                    .invoke(
                        &broker_addr,
                        end(offset, phy, sys_flag::TRANSACTION_COMMIT_TYPE, true),
                        Duration::from_secs(5),
                    )
                    .await;
            }
            None
        }
    }));
    let hb = HeartbeatData {
        client_id: client_id.into(),
        producer_data_set: vec![ProducerData {
            group_name: group.into(),
        }],
        consumer_data_set: vec![],
    };
    MqClientApi::new(producer.clone(), Duration::from_secs(5))
        .heartbeat(addr, &hb)
        .await
        .expect("heartbeat");
    (producer, checks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commit_delivers_rollback_never_and_undecided_are_checked_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ns, broker) = start(dir.path()).await;
    let addr = broker.local_addr().to_string();
    let client = RemotingClient::new(ClientConfig::default());
    let api = MqClientApi::new(client.clone(), Duration::from_secs(5));
    api.create_topic(&addr, &TopicConfig::new(TOPIC, 1))
        .await
        .expect("topic");

    // Commit and rollback.
    let (c_off, c_phy) = prepare(&api, &addr, "commit-me", "other").await;
    let (r_off, r_phy) = prepare(&api, &addr, "roll-me-back", "other").await;
    assert!(visible(&broker).is_empty(), "half messages are invisible");
    let r = client
        .invoke(
            &addr,
            end(c_off, c_phy, sys_flag::TRANSACTION_COMMIT_TYPE, false),
            Duration::from_secs(5),
        )
        .await
        .expect("end");
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    let r = client
        .invoke(
            &addr,
            end(r_off, r_phy, sys_flag::TRANSACTION_ROLLBACK_TYPE, false),
            Duration::from_secs(5),
        )
        .await
        .expect("end");
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    assert_eq!(visible(&broker), vec!["commit-me".to_string()]);
    // A second decision is refused and changes nothing.
    let again = client
        .invoke(
            &addr,
            end(r_off, r_phy, sys_flag::TRANSACTION_COMMIT_TYPE, false),
            Duration::from_secs(5),
        )
        .await
        .expect("end");
    assert_eq!(again.code, response_code::SYSTEM_ERROR);
    assert_eq!(visible(&broker), vec!["commit-me".to_string()]);

    // A producer of group "tg" that answers check-backs with COMMIT on a separate connection.
    let (_producer, checked) = committing_producer(&addr, "tg", "producer-1").await;
    let started = Instant::now();
    prepare(&api, &addr, "decided-by-check", "tg").await;
    loop {
        if visible(&broker).contains(&"decided-by-check".to_string()) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "never checked back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "checked before the timeout"
    );
    let checked = checked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(!checked.is_empty());
    for (_, _, shown) in &checked {
        let topic = shown.as_ref().map(|s| s.0.as_str());
        assert_eq!(topic, Some(TOPIC), "the check shows the real topic");
    }

    // A half message whose group has no producer is rolled back after the maximum checks.
    prepare(&api, &addr, "orphan", "nobody").await;
    let started = Instant::now();
    while broker.inner().transactions.pending_count() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "orphan never rolled back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!visible(&broker).contains(&"orphan".to_string()));

    // Restart: decided transactions stay decided, nothing is delivered twice.
    broker.shutdown().await;
    let (ns2, broker) = start(dir.path()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut v = visible(&broker);
    v.sort();
    assert_eq!(
        v,
        vec!["commit-me".to_string(), "decided-by-check".to_string()]
    );
    assert_eq!(broker.inner().transactions.pending_count(), 0);
    broker.shutdown().await;
    ns.shutdown().await;
    ns2.shutdown().await;
}

/// Retention after 2 s at every hour, checked every 300 ms; check-backs far apart.
fn retention(c: &mut BrokerConfig) {
    c.store.file_reserved_time_secs = Some(2);
    c.store.delete_when = (0..24)
        .map(|h| format!("{h:02}"))
        .collect::<Vec<_>>()
        .join(";");
    c.store.clean_resource_interval_ms = 300;
    c.store.consume_queue_entries_per_file = 1000;
    c.transaction_timeout_ms = 60_000;
    c.transaction_check_interval_ms = 60_000;
    c.transaction_check_max = 15;
}

/// Fills `n` segments of 1 MiB with 1 KiB messages of another topic.
async fn fill(api: &MqClientApi, addr: &str, n: usize) {
    for _ in 0..n * 1024 + 64 {
        let r = api
            .send(
                addr,
                &SendRequest {
                    producer_group: "filler".into(),
                    topic: "Filler".into(),
                    queue_id: 0,
                    body: Bytes::from(vec![b'x'; 900]),
                    ..SendRequest::default()
                },
            )
            .await
            .expect("fill");
        assert_eq!(r.code, response_code::SUCCESS);
    }
}

/// The records of the half topic from its minimum: (body, TRAN_PREPARED_QUEUE_OFFSET).
fn half_records(b: &Broker) -> Vec<(String, Option<String>)> {
    let store = &b.inner().store;
    let half = rocketraft_broker::transaction::HALF_TOPIC;
    (store.get_min_offset_in_queue(half, 0)..store.get_max_offset_in_queue(half, 0))
        .filter_map(|o| store.get_commit_log_offset_in_queue(half, 0, o))
        .filter_map(|phy| store.look_message_by_offset(phy))
        .map(|m| {
            (
                String::from_utf8_lossy(&m.message.body).to_string(),
                m.message
                    .property(rocketraft_broker::transaction::PREPARED_QUEUE_OFFSET)
                    .map(str::to_string),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn undecided_half_messages_are_stored_again_so_retention_can_delete_their_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ns, broker) = start_with(dir.path(), retention).await;
    let addr = broker.local_addr().to_string();
    let client = RemotingClient::new(ClientConfig::default());
    let api = MqClientApi::new(client.clone(), Duration::from_secs(5));
    for t in [TOPIC, "Filler"] {
        api.create_topic(&addr, &TopicConfig::new(t, 1))
            .await
            .expect("topic");
    }
    // Three undecided transactions in the first segment; checks are a minute away.
    let (c_off, c_phy) = prepare(&api, &addr, "commit-after-roll", "tg").await;
    let (r_off, r_phy) = prepare(&api, &addr, "rollback-after-restart", "tg").await;
    let (k_off, k_phy) = prepare(&api, &addr, "checked-after-roll", "tg").await;

    // Four more segments. Without storing them again, the half messages would keep the first
    // segment, and every later one, until decided.
    fill(&api, &addr, 4).await;
    let started = Instant::now();
    while broker.inner().store.min_phy_offset() < 3 << 20 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the segments of the half messages never went: min {}",
            broker.inner().store.min_phy_offset()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(broker.inner().transactions.pending_count(), 3);
    let mut copies = half_records(&broker);
    copies.sort();
    assert_eq!(
        copies,
        vec![
            ("checked-after-roll".to_string(), Some(k_off.to_string())),
            ("commit-after-roll".to_string(), Some(c_off.to_string())),
            (
                "rollback-after-restart".to_string(),
                Some(r_off.to_string())
            ),
        ],
        "each undecided half message is one copy naming its original"
    );

    // The producer's END_TRANSACTION names the original offsets: it commits the copy's
    // content, as the message was sent.
    let r = client
        .invoke(
            &addr,
            end(c_off, c_phy, sys_flag::TRANSACTION_COMMIT_TYPE, false),
            Duration::from_secs(5),
        )
        .await
        .expect("end");
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    assert_eq!(visible(&broker), vec!["commit-after-roll".to_string()]);
    let store = &broker.inner().store;
    let phy = store
        .get_commit_log_offset_in_queue(TOPIC, 0, 0)
        .expect("committed");
    let committed = store
        .look_message_by_offset(phy)
        .expect("committed message");
    for p in [
        rocketraft_broker::transaction::PREPARED_QUEUE_OFFSET,
        rocketraft_broker::transaction::PREPARED_COMMITLOG_OFFSET,
        property::REAL_TOPIC,
        property::REAL_QUEUE_ID,
    ] {
        assert_eq!(committed.message.property(p), None, "{p} on {committed:?}");
    }
    assert_eq!(committed.prepared_transaction_offset, c_phy);
    // A wrong CommitLog offset is still refused.
    let r = client
        .invoke(
            &addr,
            end(r_off, r_phy + 1, sys_flag::TRANSACTION_COMMIT_TYPE, false),
            Duration::from_secs(5),
        )
        .await
        .expect("end");
    assert_eq!(r.code, response_code::SYSTEM_ERROR, "{:?}", r.remark);

    // Restart: the replay finds the two still undecided through their copies (the originals
    // are gone), under their original offsets.
    broker.shutdown().await;
    let (ns2, broker) = start_with(dir.path(), |c| {
        retention(c);
        c.transaction_timeout_ms = 300;
        c.transaction_check_interval_ms = 300;
    })
    .await;
    let addr = broker.local_addr().to_string();
    let r = client
        .invoke(
            &addr,
            end(r_off, r_phy, sys_flag::TRANSACTION_ROLLBACK_TYPE, false),
            Duration::from_secs(5),
        )
        .await
        .expect("end");
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    let r = client
        .invoke(
            &addr,
            end(c_off, c_phy, sys_flag::TRANSACTION_COMMIT_TYPE, false),
            Duration::from_secs(5),
        )
        .await
        .expect("end");
    assert_eq!(
        r.code,
        response_code::SYSTEM_ERROR,
        "decided before the restart: {:?}",
        r.remark
    );

    // The last one is checked back under its original offsets, and the producer's answer
    // commits it.
    let (_producer, checks) = committing_producer(&addr, "tg", "producer-roll").await;
    let started = Instant::now();
    while broker.inner().transactions.pending_count() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "never checked back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut v = visible(&broker);
    v.sort();
    assert_eq!(
        v,
        vec![
            "checked-after-roll".to_string(),
            "commit-after-roll".to_string()
        ]
    );
    let checks = checks.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(
        checks.first(),
        Some(&(k_off, k_phy, Some((TOPIC.to_string(), k_off, k_phy, None)))),
        "the check names the original, in its real topic: {checks:?}"
    );
    broker.shutdown().await;
    ns.shutdown().await;
    ns2.shutdown().await;
}
