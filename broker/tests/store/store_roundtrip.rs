//! Store round trips on real files: puts across topics and queues with small segments (so the
//! CommitLog rolls), reads by queue offset, tag filters, offsets by time, group commit under
//! SYNC_FLUSH, batches.

use std::collections::HashMap;
use std::sync::Arc;

use rocketraft_broker::store::{
    BrokerMessage, FlushDiskType, GetMessageStatus, MessageStore, PutStatus, StoreConfig,
    StoreError,
};
use rocketraft_common::hash::java_string_hash;
use rocketraft_common::message::{decode_message, decode_messages, decode_offset_msg_id, Message};

fn config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        commitlog_segment_size: 64 * 1024,
        consume_queue_entries_per_file: 64,
        pretouch: false,
        flush_interval_ms: 20,
        checkpoint_interval_ms: 50,
        ..StoreConfig::new(dir)
    }
}

fn msg(topic: &str, queue_id: i32, body: Vec<u8>, tags: Option<&str>) -> BrokerMessage {
    let mut m = Message::new(topic, body);
    if let Some(t) = tags {
        m.set_tags(t);
    }
    m.set_keys("k");
    BrokerMessage::new(m, queue_id)
}

fn body(topic: &str, qid: i32, i: usize) -> Vec<u8> {
    format!("{topic}/{qid}/{i}/").repeat(20).into_bytes()
}

const ALL: &dyn Fn(i64) -> bool = &|_| true;

/// `(physical offset, body)` of each message of a queue, in queue order.
type Expected = Vec<(i64, Vec<u8>)>;

#[tokio::test]
async fn put_and_read_back_across_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MessageStore::open(config(dir.path())).expect("open");
    let topics = ["TopicA", "TopicB", "%RETRY%g"];
    let mut expected: HashMap<(String, i32), Expected> = HashMap::new();
    for i in 0..600 {
        let topic = topics[i % 3];
        let qid = (i % 4) as i32;
        let b = body(topic, qid, i);
        let r = store
            .put_message(msg(
                topic,
                qid,
                b.clone(),
                Some(if i % 2 == 0 { "even" } else { "odd" }),
            ))
            .await
            .expect("put");
        assert_eq!(r.status, PutStatus::PutOk);
        assert_eq!(r.msg_num, 1);
        let (host, off) = decode_offset_msg_id(&r.msg_id).expect("msg id");
        assert_eq!((host, off), (store.config().store_host, r.physical_offset));
        let list = expected.entry((topic.to_string(), qid)).or_default();
        assert_eq!(
            r.queue_offset,
            list.len() as i64,
            "consecutive queue offsets"
        );
        list.push((r.physical_offset, b));
    }
    assert!(
        store.stats().rolls >= 3,
        "small segments must roll: {:?}",
        store.stats()
    );
    assert!(dir
        .path()
        .join("commitlog")
        .join("00000000000000065536")
        .exists());

    for ((topic, qid), list) in &expected {
        assert_eq!(
            store.get_max_offset_in_queue(topic, *qid),
            list.len() as i64
        );
        assert_eq!(store.get_min_offset_in_queue(topic, *qid), 0);
        let mut offset = 0;
        let mut got = Vec::new();
        while offset < list.len() as i64 {
            let r = store.get_messages("g", topic, *qid, offset, 7, 1 << 20, ALL);
            assert_eq!(r.status, GetMessageStatus::Found);
            assert!(r.messages.len() <= 7);
            assert_eq!(r.max_offset, list.len() as i64);
            for (raw, qo) in r.messages.iter().zip(&r.message_queue_offsets) {
                let (m, used) = decode_message(raw).expect("decode");
                assert_eq!(used, raw.len());
                assert_eq!(m.queue_offset, *qo);
                got.push((m.commit_log_offset, m.body.to_vec(), m.topic.clone()));
            }
            offset = r.next_begin_offset;
        }
        assert_eq!(got.len(), list.len());
        for ((phy, b, t), (ephy, eb)) in got.iter().zip(list) {
            assert_eq!((phy, b, t), (ephy, eb, topic));
        }
        let r = store.get_messages("g", topic, *qid, list.len() as i64, 7, 1 << 20, ALL);
        assert_eq!(r.status, GetMessageStatus::OffsetOverflowOne);
        assert_eq!(r.next_begin_offset, list.len() as i64);
        let r = store.get_messages("g", topic, *qid, list.len() as i64 + 5, 7, 1 << 20, ALL);
        assert_eq!(r.status, GetMessageStatus::OffsetOverflowBadly);
        assert_eq!(r.next_begin_offset, 0);
    }
    let r = store.get_messages("g", "Nope", 0, 0, 7, 1 << 20, ALL);
    assert_eq!(r.status, GetMessageStatus::NoMatchedLogicQueue);

    // Byte budget: always at least one, then stop before exceeding.
    let r = store.get_messages("g", "TopicA", 0, 0, 32, 10, ALL);
    assert_eq!(r.messages.len(), 1);
    assert_eq!(r.next_begin_offset, 1);

    // Lookup by physical offset.
    let (phy, b) = &expected[&("TopicB".to_string(), 1)][3];
    let m = store.look_message_by_offset(*phy).expect("look");
    assert_eq!(&m.body.to_vec(), b);
    assert_eq!(m.tags(), Some("odd"));
    assert!(store.look_message_by_offset(*phy + 1).is_none());
    store.shutdown().expect("shutdown");
    assert!(!dir.path().join("abort").exists());

    // Clean reopen: everything still there.
    let store = MessageStore::open(config(dir.path())).expect("reopen");
    assert!(store.recovery_report().clean_shutdown);
    for ((topic, qid), list) in &expected {
        assert_eq!(
            store.get_max_offset_in_queue(topic, *qid),
            list.len() as i64
        );
    }
    let r = store
        .put_message(msg("TopicA", 0, b"after".to_vec(), None))
        .await
        .expect("put");
    assert_eq!(
        r.queue_offset,
        expected[&("TopicA".to_string(), 0)].len() as i64
    );
}

#[tokio::test]
async fn tag_filter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MessageStore::open(config(dir.path())).expect("open");
    for i in 0..30 {
        let tag = ["TagA", "TagB", "TagC"][i % 3];
        store
            .put_message(msg("T", 0, format!("m{i}").into_bytes(), Some(tag)))
            .await
            .expect("put");
    }
    let want = java_string_hash("TagB") as i64;
    let only_b = move |code: i64| code == want;
    let r = store.get_messages("g", "T", 0, 0, 32, 1 << 20, &only_b);
    assert_eq!(r.status, GetMessageStatus::Found);
    let bodies: Vec<String> = decode_messages(&r.messages.concat())
        .expect("decode")
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    assert_eq!(
        bodies,
        (0..10)
            .map(|i| format!("m{}", i * 3 + 1))
            .collect::<Vec<_>>()
    );
    assert_eq!(r.next_begin_offset, 30);
    let none = |_: i64| false;
    let r = store.get_messages("g", "T", 0, 0, 32, 1 << 20, &none);
    assert_eq!(r.status, GetMessageStatus::NoMatchedMessage);
    assert_eq!(r.next_begin_offset, 30, "scanned entries are skipped");
}

#[tokio::test]
async fn offset_by_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MessageStore::open(config(dir.path())).expect("open");
    let mut stamps = Vec::new();
    for i in 0..12 {
        let r = store
            .put_message(msg("T", 2, vec![i as u8; 10], None))
            .await
            .expect("put");
        stamps.push(r.store_timestamp);
        if i % 4 == 3 {
            tokio::time::sleep(std::time::Duration::from_millis(15)).await;
        }
    }
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]));
    for (i, ts) in stamps.iter().enumerate() {
        let o = store.get_offset_by_time("T", 2, *ts);
        assert!(o <= i as i64);
        assert_eq!(stamps[o as usize], *ts, "first offset at that time");
    }
    assert_eq!(store.get_offset_by_time("T", 2, 0), 0);
    assert_eq!(store.get_offset_by_time("T", 2, i64::MAX), 12);
    assert_eq!(store.get_earliest_message_time("T", 2), Some(stamps[0]));
    assert_eq!(
        store.get_message_store_timestamp("T", 2, 5),
        Some(stamps[5])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_flush_group_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig {
        flush_disk_type: FlushDiskType::SyncFlush,
        ..config(dir.path())
    };
    let store = MessageStore::open(cfg).expect("open");
    let tasks = 32;
    let per_task = 25;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..per_task {
                let r = store
                    .put_message(msg("Sync", t % 4, format!("{t}-{i}").into_bytes(), None))
                    .await
                    .expect("put");
                assert!(store.flushed_phy_offset() >= r.physical_offset + r.wrote_bytes as i64);
                out.push(r);
            }
            out
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.expect("join").len();
    }
    let stats = store.stats();
    assert_eq!(total, tasks as usize * per_task);
    assert_eq!(stats.put_requests, total as u64);
    assert!(
        stats.sync_flushes < total as u64,
        "group commit must share syncs: {stats:?}"
    );
    assert!(stats.sync_flushes > 0);
    let sum: i64 = (0..4)
        .map(|q| store.get_max_offset_in_queue("Sync", q))
        .sum();
    assert_eq!(sum, total as i64);
}

#[tokio::test]
async fn batch_gets_consecutive_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MessageStore::open(config(dir.path())).expect("open");
    store
        .put_message(msg("B", 1, b"first".to_vec(), None))
        .await
        .expect("put");
    let batch: Vec<_> = (0..10)
        .map(|i| msg("B", 1, format!("b{i}").into_bytes(), Some("t")))
        .collect();
    let r = store.put_messages(batch).await.expect("batch");
    assert_eq!(r.queue_offset, 1);
    assert_eq!(r.msg_num, 10);
    let ids: Vec<&str> = r.msg_id.split(',').collect();
    assert_eq!(ids.len(), 10);
    let got = store.get_messages("g", "B", 1, 1, 32, 1 << 20, ALL);
    assert_eq!(got.messages.len(), 10);
    let mut phy = r.physical_offset;
    for (i, raw) in got.messages.iter().enumerate() {
        let (m, _) = decode_message(raw).expect("decode");
        assert_eq!(m.queue_offset, 1 + i as i64);
        assert_eq!(m.commit_log_offset, phy, "contiguous");
        assert_eq!(m.msg_id, ids[i]);
        assert_eq!(m.body.as_ref(), format!("b{i}").as_bytes());
        phy += m.store_size as i64;
    }
    assert_eq!(phy - r.physical_offset, r.wrote_bytes as i64);

    // A batch must target one queue.
    let mixed = vec![msg("B", 1, vec![1], None), msg("B", 2, vec![1], None)];
    assert!(matches!(
        store.put_messages(mixed).await,
        Err(StoreError::MessageIllegal(_))
    ));
}

#[tokio::test]
async fn illegal_messages_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig {
        max_message_size: 1024,
        ..config(dir.path())
    };
    let store = MessageStore::open(cfg).expect("open");
    let e = store
        .put_message(msg("T", 0, vec![0; 1025], None))
        .await
        .expect_err("too big");
    assert_eq!(e.put_status(), PutStatus::MessageIllegal);
    let e = store
        .put_message(msg(&"x".repeat(128), 0, vec![0; 1], None))
        .await
        .expect_err("topic too long");
    assert_eq!(e.put_status(), PutStatus::MessageIllegal);
    let e = store
        .put_message(msg("../etc", 0, vec![0; 1], None))
        .await
        .expect_err("path in topic");
    assert_eq!(e.put_status(), PutStatus::MessageIllegal);
    let mut big_props = msg("T", 0, vec![1], None);
    big_props.message.set_property("p", "v".repeat(40_000));
    let e = store.put_message(big_props).await.expect_err("props");
    assert_eq!(e.put_status(), PutStatus::PropertiesSizeExceeded);
    // Still writable.
    store
        .put_message(msg("T", 0, vec![0; 1024], None))
        .await
        .expect("put");
    store.shutdown().expect("shutdown");
    let e = store
        .put_message(msg("T", 0, vec![0; 1], None))
        .await
        .expect_err("after shutdown");
    assert_eq!(e.put_status(), PutStatus::ServiceNotAvailable);
}

#[tokio::test]
async fn arrivals_are_notified() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MessageStore::open(config(dir.path())).expect("open");
    let mut rx = store.subscribe_arrivals();
    let before = *rx.borrow_and_update();
    let s2 = Arc::clone(&store);
    let waiter = tokio::spawn(async move {
        rx.changed().await.expect("changed");
        let v = *rx.borrow();
        (v, s2.get_max_offset_in_queue("N", 0))
    });
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    store
        .put_message(msg("N", 0, b"x".to_vec(), None))
        .await
        .expect("put");
    let (v, max) = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .expect("notified")
        .expect("join");
    assert!(v > before);
    assert_eq!(
        max, 1,
        "the message is readable when the notification arrives"
    );
}

#[test]
fn second_open_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MessageStore::open(config(dir.path())).expect("open");
    assert!(matches!(
        MessageStore::open(config(dir.path())),
        Err(StoreError::AlreadyOpen(_))
    ));
    store.shutdown().expect("shutdown");
    let again = MessageStore::open(config(dir.path())).expect("reopen after shutdown");
    drop(again);
}

#[test]
fn blocking_put_outside_a_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MessageStore::open(config(dir.path())).expect("open");
    let r = store
        .put_message_blocking(msg("T", 0, b"hi".to_vec(), None))
        .expect("put");
    assert_eq!(r.queue_offset, 0);
    let raw = store.read_record(r.physical_offset).expect("raw");
    assert_eq!(raw.len(), r.wrote_bytes as usize);
}

#[tokio::test]
async fn prepared_transactions_are_not_indexed() {
    use rocketraft_common::consts::sys_flag;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MessageStore::open(config(dir.path())).expect("open");
    let mut half = msg("Tx", 0, b"half".to_vec(), None);
    half.sys_flag = sys_flag::TRANSACTION_PREPARED_TYPE;
    let r = store.put_message(half).await.expect("put prepared");
    assert_eq!(r.queue_offset, 0);
    assert_eq!(
        store.get_max_offset_in_queue("Tx", 0),
        0,
        "not in the ConsumeQueue"
    );
    let m = store
        .look_message_by_offset(r.physical_offset)
        .expect("readable by CommitLog offset");
    assert_eq!(m.body.as_ref(), b"half");
    let r = store
        .put_message(msg("Tx", 0, b"normal".to_vec(), None))
        .await
        .expect("put");
    assert_eq!(r.queue_offset, 0);
    store.crash_for_test();
    drop(store);
    let store = MessageStore::open(config(dir.path())).expect("reopen");
    assert_eq!(
        store.get_max_offset_in_queue("Tx", 0),
        1,
        "recovery skips it too"
    );
}
