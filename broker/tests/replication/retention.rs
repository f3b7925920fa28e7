//! Replicas and retention, on real stores and a real HA connection: a slave whose log ends
//! below what its master still stores (the master deleted expired segments) starts over at the
//! master's first offset and catches up; so does a brand-new replica. Queue offsets go on from
//! the master's (also of a queue whose records all lie in the deleted segments: the master
//! sends its next queue offsets before it streams), and what the slave serves is byte for byte
//! the master's.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocketraft_broker::ha::{follow_once, serve, HaState};
use rocketraft_broker::store::{BrokerMessage, GetMessageStatus, MessageStore, StoreConfig};
use rocketraft_common::message::Message;

const SEGMENT: u64 = 64 * 1024;

fn open_store(dir: &Path) -> Arc<MessageStore> {
    open_store_with(dir, StoreConfig::new(dir).consume_queue_entries_per_file)
}

fn open_store_with(dir: &Path, cq_entries_per_file: u32) -> Arc<MessageStore> {
    MessageStore::open(StoreConfig {
        consume_queue_entries_per_file: cq_entries_per_file,
        commitlog_segment_size: SEGMENT,
        pretouch: false,
        flush_interval_ms: 10,
        checkpoint_interval_ms: 20,
        file_reserved_time_secs: Some(1),
        delete_when: (0..24)
            .map(|h| format!("{h:02}"))
            .collect::<Vec<_>>()
            .join(";"),
        // Rounds run when the test asks.
        clean_resource_interval_ms: 3_600_000,
        delete_commit_log_files_interval_ms: 0,
        ..StoreConfig::new(dir)
    })
    .expect("store")
}

async fn put(store: &MessageStore, n: usize) {
    for i in 0..n {
        store
            .put_message(BrokerMessage::new(
                Message::new("T", vec![b'a' + (i % 26) as u8; 1000]),
                0,
            ))
            .await
            .expect("put");
    }
}

async fn put_quiet(store: &MessageStore, n: usize) {
    for _ in 0..n {
        store
            .put_message(BrokerMessage::new(
                Message::new("Quiet", vec![b'q'; 100]),
                0,
            ))
            .await
            .expect("put");
    }
}

/// Follows `ha_addr` as broker 2 until the slave's log reaches `end` and its confirm offset too
/// (then the session is dropped), within 20 s.
async fn follow_until(slave: &Arc<MessageStore>, ha_addr: &str, end: i64) {
    follow_while(slave, ha_addr, end, || true).await
}

/// [`follow_until`], also until `done` holds.
async fn follow_while(slave: &Arc<MessageStore>, ha_addr: &str, end: i64, done: impl Fn() -> bool) {
    let ha = HaState::new(slave.clone());
    ha.set_slave(1, "127.0.0.1:1".into(), 1, 1, BTreeSet::from([1]));
    let session = follow_once(&ha, 2, ha_addr);
    tokio::pin!(session);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::select! {
            r = &mut session => panic!("replication ended early: {r:?}"),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {
                // Held and confirmed (the confirm offset comes with the master's next frame).
                if slave.max_phy_offset() >= end && slave.confirm_offset() >= end && done() {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "slave at {} of {end} (confirmed {}, condition met: {}) after 20 s",
                    slave.max_phy_offset(),
                    slave.confirm_offset(),
                    done()
                );
            }
        }
    }
}

fn wait_flushed(store: &MessageStore) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.flushed_phy_offset() < store.max_phy_offset() {
        assert!(Instant::now() < deadline, "never flushed");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slave_behind_the_masters_first_offset_starts_over_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master = open_store(&dir.path().join("master"));
    let ha = HaState::new(master.clone());
    ha.set_master(1, "127.0.0.1:1".into(), 1, 1, BTreeSet::from([1, 2]));
    ha.renew_lease(Instant::now() + Duration::from_secs(600));
    master.append_epoch(1, 0).expect("epoch");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let server = tokio::spawn(serve(listener, ha.clone()));

    // An old slave holds the first few messages, three of them of a quiet queue.
    put_quiet(&master, 3).await;
    put(&master, 20).await;
    let old = open_store(&dir.path().join("old"));
    follow_until(&old, &addr, master.max_phy_offset()).await;
    let old_end = old.max_phy_offset();
    assert!(old_end > 0 && old_end < SEGMENT as i64);
    assert_eq!(old.get_max_offset_in_queue("Quiet", 0), 3);
    // The quiet queue's last records: none of them outlives the deletion below.
    put_quiet(&master, 4).await;

    // The master goes on for five segments, then deletes the expired ones.
    while master.max_phy_offset() < 5 * SEGMENT as i64 + 1000 {
        put(&master, 20).await;
    }
    wait_flushed(&master);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    master.clean_now().expect("round");
    let min = master.min_phy_offset();
    assert_eq!(min, 5 * SEGMENT as i64, "expired segments deleted");
    let cq_min = master.get_min_offset_in_queue("T", 0);
    let cq_max = master.get_max_offset_in_queue("T", 0);
    assert_eq!(master.get_max_offset_in_queue("Quiet", 0), 7);
    assert_eq!(
        master.get_min_offset_in_queue("Quiet", 0),
        7,
        "no entry left"
    );

    // The old slave and a brand-new one both start over at the master's first offset.
    let fresh = open_store(&dir.path().join("fresh"));
    for (name, slave) in [("old", &old), ("fresh", &fresh)] {
        follow_until(slave, &addr, master.max_phy_offset()).await;
        assert_eq!(slave.min_phy_offset(), min, "{name}");
        assert_eq!(slave.max_phy_offset(), master.max_phy_offset(), "{name}");
        assert_eq!(slave.get_max_offset_in_queue("T", 0), cq_max, "{name}");
        // A queue with no record left on the master: its offsets are the master's anyway, not
        // the slave's own (old) or none (fresh).
        assert_eq!(slave.get_max_offset_in_queue("Quiet", 0), 7, "{name}");
        assert_eq!(slave.get_min_offset_in_queue("Quiet", 0), 7, "{name}");
        slave.clean_now().expect("round");
        assert_eq!(slave.get_min_offset_in_queue("T", 0), cq_min, "{name}");
        let from_master = master.get_messages("g", "T", 0, cq_min, 1000, 1 << 26, &|_| true);
        let from_slave = slave.get_messages("g", "T", 0, cq_min, 1000, 1 << 26, &|_| true);
        assert_eq!(from_slave.status, GetMessageStatus::Found, "{name}");
        assert_eq!(from_slave.messages, from_master.messages, "{name}");
        let epochs = slave.epoch_entries();
        assert_eq!(
            epochs.last().map(|e| e.epoch),
            Some(1),
            "{name}: {epochs:?}"
        );
    }

    // After a restart the slave's log still starts there.
    fresh.shutdown().expect("shutdown");
    drop(fresh);
    let fresh = open_store(&dir.path().join("fresh"));
    assert_eq!(fresh.min_phy_offset(), min);
    assert_eq!(fresh.max_phy_offset(), master.max_phy_offset());
    // The master tells the quiet queue's offsets again when the slave connects, before
    // anything else.
    let fresh_store = fresh.clone();
    follow_while(&fresh, &addr, master.max_phy_offset(), move || {
        fresh_store.get_max_offset_in_queue("Quiet", 0) == 7
    })
    .await;

    // The master goes down; the old slave (which seeded the quiet queue when it started over)
    // is killed and restarted without it: the queue's start is on its disk. Elected, it goes
    // on with the master's queue offsets, and they stay after another restart.
    server.abort();
    old.crash_for_test();
    drop(old);
    let old = open_store(&dir.path().join("old"));
    assert_eq!(old.min_phy_offset(), min);
    assert_eq!(
        old.get_max_offset_in_queue("Quiet", 0),
        7,
        "seeded max kept"
    );
    assert_eq!(old.get_min_offset_in_queue("Quiet", 0), 7);
    assert_eq!(old.get_max_offset_in_queue("T", 0), cq_max);
    for store in [&old, &fresh] {
        let r = store
            .put_message(BrokerMessage::new(
                Message::new("Quiet", b"after the restart".to_vec()),
                0,
            ))
            .await
            .expect("put");
        assert_eq!(r.queue_offset, 7, "the master's next queue offset");
    }
    old.shutdown().expect("shutdown");
    drop(old);
    let old = open_store(&dir.path().join("old"));
    assert_eq!(old.get_min_offset_in_queue("Quiet", 0), 7);
    assert_eq!(old.get_max_offset_in_queue("Quiet", 0), 8);
    let got = old.get_messages("g", "Quiet", 0, 7, 10, 1 << 20, &|_| true);
    assert_eq!(got.status, GetMessageStatus::Found);
    assert_eq!(got.message_queue_offsets, vec![7]);
    let read = rocketraft_common::message::decode_messages(&got.messages[0]).expect("a record");
    assert_eq!(
        read[0].message.body.as_ref(),
        b"after the restart".as_slice()
    );
}

/// Serves `store` as the master of `epoch` on a fresh port; returns its HA address and task.
async fn serve_master(
    store: &Arc<MessageStore>,
    epoch: i32,
) -> (String, tokio::task::JoinHandle<()>) {
    let ha = HaState::new(store.clone());
    ha.set_master(1, "127.0.0.1:1".into(), epoch, 1, BTreeSet::from([1, 2]));
    ha.renew_lease(Instant::now() + Duration::from_secs(600));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    (addr, tokio::spawn(serve(listener, ha)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_starting_over_below_its_first_offset_learns_the_queue_offsets_it_has_no_entry_for(
) {
    let dir = tempfile::tempdir().expect("tempdir");
    // Queue files of 4 entries, so that retention deletes a queue's early files.
    let old = open_store_with(&dir.path().join("old"), 4);
    let new = open_store_with(&dir.path().join("new"), 4);
    old.append_epoch(1, 0).expect("epoch 1");
    let (old_addr, old_server) = serve_master(&old, 1).await;

    // Shared: six records of a quiet queue in the first segment, then others into the second;
    // `new` holds all of it.
    put_quiet(&old, 6).await;
    put(&old, 80).await;
    follow_until(&new, &old_addr, old.max_phy_offset()).await;
    old_server.abort();
    let x = old.max_phy_offset();
    assert!(x > SEGMENT as i64, "X lies past the quiet queue's segment");

    // The old master goes on alone (its quiet queue too) for five segments, then its retention
    // deletes past X: the quiet queue's files of the shared entries go.
    put_quiet(&old, 10).await;
    while old.max_phy_offset() < x + 5 * SEGMENT as i64 {
        put(&old, 20).await;
    }
    wait_flushed(&old);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    put(&old, 20).await;
    wait_flushed(&old);
    old.clean_now().expect("round");
    assert!(
        old.min_phy_offset() > x,
        "min {} X {x}",
        old.min_phy_offset()
    );
    assert!(old.get_min_offset_in_queue("Quiet", 0) > 6);

    // `new` is master of epoch 2 from X and writes nothing to the quiet queue.
    new.append_epoch(2, x).expect("epoch 2");
    put(&new, 30).await;
    assert_eq!(new.get_max_offset_in_queue("Quiet", 0), 6);
    let (new_addr, new_server) = serve_master(&new, 2).await;

    // The old master follows it: it diverged below its first offset, so it starts over at the
    // segment holding X and its quiet queue (no entry left at or below the cut) is emptied. The
    // master's records after the cut hold none of that queue: its next queue offset comes with
    // the queue offsets the master sends first.
    let old_store = old.clone();
    follow_while(&old, &new_addr, new.max_phy_offset(), move || {
        old_store.get_max_offset_in_queue("Quiet", 0) == 6
    })
    .await;
    assert_eq!(old.max_phy_offset(), new.max_phy_offset());
    assert_eq!(
        old.min_phy_offset(),
        x - x % SEGMENT as i64,
        "started over at the segment holding X"
    );
    assert_eq!(
        old.get_max_offset_in_queue("T", 0),
        new.get_max_offset_in_queue("T", 0)
    );
    // Killed and restarted while its master is down (the queue's start is in the middle of a
    // queue file: blanks before it), then elected, it goes on with the master's queue offsets.
    new_server.abort();
    old.crash_for_test();
    drop(old);
    let old = open_store_with(&dir.path().join("old"), 4);
    assert_eq!(
        old.get_max_offset_in_queue("Quiet", 0),
        6,
        "seeded max kept"
    );
    assert_eq!(old.get_min_offset_in_queue("Quiet", 0), 6);
    assert_eq!(old.max_phy_offset(), new.max_phy_offset());
    let r = old
        .put_message(BrokerMessage::new(
            Message::new("Quiet", vec![b'q'; 100]),
            0,
        ))
        .await
        .expect("put");
    assert_eq!(r.queue_offset, 6, "the master's next queue offset");
    assert_eq!(old.get_min_offset_in_queue("Quiet", 0), 6);
    assert_eq!(old.get_max_offset_in_queue("Quiet", 0), 7);
    old.shutdown().expect("shutdown");
    drop(old);
    let old = open_store_with(&dir.path().join("old"), 4);
    assert_eq!(old.get_min_offset_in_queue("Quiet", 0), 6);
    assert_eq!(old.get_max_offset_in_queue("Quiet", 0), 7);
    let got = old.get_messages("g", "Quiet", 0, 6, 10, 1 << 20, &|_| true);
    assert_eq!(got.status, GetMessageStatus::Found);
    assert_eq!(got.message_queue_offsets, vec![6]);
}

// ------------------------------------------------------------------------------------------
// Three replicas under retention: failover, truncation below a replica's first offset, and a
// further failover (real brokers and the controller on loopback).
// ------------------------------------------------------------------------------------------

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::FutureExt;
use rocketraft_broker::ha::Role;
use rocketraft_broker::Broker;
use rocketraft_remoting::api::SendRequest;
use rocketraft_remoting::codes::response_code;

use crate::replication::{
    api, current_master, in_sync, isolatable_set_with, namesrv_secured, same_bytes, wait_for,
    Isolatable,
};

const ALL_HOURS: &str = "00;01;02;03;04;05;06;07;08;09;10;11;12;13;14;15;16;17;18;19;20;21;22;23";
const TOPIC: &str = "Replicated";

/// A send of about `size` bytes whose body starts with `{what}-{i}-`.
fn named(what: &str, i: usize, size: usize) -> SendRequest {
    let mut body = format!("{what}-{i}-").into_bytes();
    body.resize(size, b'.');
    SendRequest {
        producer_group: "pg".to_string(),
        topic: TOPIC.to_string(),
        queue_id: (i % 2) as i32,
        body: Bytes::from(body),
        properties: BTreeMap::new(),
        ..SendRequest::default()
    }
}

fn store_of(nodes: &[Isolatable], i: usize) -> Arc<MessageStore> {
    nodes[i]
        .broker
        .as_ref()
        .expect("broker running")
        .inner()
        .store
        .clone()
}

fn broker(nodes: &[Isolatable], i: usize) -> &Broker {
    nodes[i].broker.as_ref().expect("broker running")
}

async fn clean_now(store: Arc<MessageStore>) {
    tokio::task::spawn_blocking(move || store.clean_now().expect("cleaning round"))
        .await
        .expect("cleaning task");
}

fn segment_files(store: &MessageStore) -> Vec<i64> {
    let mut starts: Vec<i64> = std::fs::read_dir(store.config().commitlog_dir())
        .expect("commitlog dir")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i64>().ok())
        .collect();
    starts.sort_unstable();
    starts
}

fn segment_start(offset: i64) -> i64 {
    offset - offset.rem_euclid(SEGMENT as i64)
}

/// Sends `count` acknowledged messages to `nodes[m]` (retrying refusals while a new master
/// takes office, within 30 s): `(queue, queue offset, number)` of each.
async fn send_acked(
    nodes: &[Isolatable],
    m: usize,
    from: usize,
    count: usize,
) -> Vec<(i32, i64, usize)> {
    let api = api();
    let addr = nodes[m].listen.to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut acked = Vec::new();
    let mut i = from;
    while acked.len() < count {
        match api.send(&addr, &named("acked", i, 2000)).await {
            Ok(r) if r.code == response_code::SUCCESS => {
                acked.push((r.queue_id, r.queue_offset, i));
                i += 1;
            }
            other => {
                assert!(
                    Instant::now() < deadline,
                    "the master never acknowledged send {i}: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    acked
}

/// Every acknowledged message at or above `store`'s ConsumeQueue minimum is readable there
/// with its own body. Returns how many were checked.
fn assert_acked_readable(store: &MessageStore, acked: &[(i32, i64, usize)]) -> usize {
    let mut checked = 0;
    for (q, off, i) in acked {
        if *off < store.get_min_offset_in_queue(TOPIC, *q) {
            continue;
        }
        let phy = store
            .get_commit_log_offset_in_queue(TOPIC, *q, *off)
            .unwrap_or_else(|| panic!("acknowledged message {i} at {q}/{off} missing"));
        if phy < store.min_phy_offset() {
            // Its entry is still there, its segment no longer (the minimum moves at the next
            // cleaning round).
            continue;
        }
        let m = store.look_message_by_offset(phy).expect("decodable");
        assert!(
            m.message.body.starts_with(format!("acked-{i}-").as_bytes()),
            "acknowledged message {i} at {q}/{off} replaced"
        );
        checked += 1;
    }
    checked
}

/// No message of `store`'s ConsumeQueues has a body starting with `prefix`.
fn assert_none_with(store: &MessageStore, prefix: &str) {
    for q in 0..2 {
        let max = store.get_max_offset_in_queue(TOPIC, q);
        for off in store.get_min_offset_in_queue(TOPIC, q)..max {
            let Some(phy) = store.get_commit_log_offset_in_queue(TOPIC, q, off) else {
                continue;
            };
            if phy >= store.min_phy_offset() {
                let m = store.look_message_by_offset(phy).expect("decodable");
                assert!(
                    !m.message.body.starts_with(prefix.as_bytes()),
                    "{q}/{off} holds a message that was never acknowledged"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_fail_over_and_truncate_below_their_first_offset_after_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A heartbeat timeout of 4 s on both sides, so a lease of 3 s (3/4 of the shorter one):
    // the cut-off master must still take the whole blast of step 2 after its last renewal, on
    // a busy machine too.
    let ns = namesrv_secured(dir.path(), None, |c| c.heartbeat_timeout_ms = 4000).await;
    let mut nodes = isolatable_set_with(dir.path(), ns.local_addr(), |c| {
        c.store.file_reserved_time_secs = Some(1);
        c.store.delete_when = ALL_HOURS.into();
        c.controller_heartbeat_timeout_ms = 4000;
        // Rounds run when the test asks (clean_now).
        c.store.clean_resource_interval_ms = 3_600_000;
        c.store.delete_commit_log_files_interval_ms = 0;
    })
    .await;
    let outcome = std::panic::AssertUnwindSafe(fail_over_and_truncate_after_retention(&mut nodes))
        .catch_unwind()
        .await;
    for node in &mut nodes {
        if let Some(b) = node.broker.take() {
            b.shutdown().await;
        }
    }
    ns.shutdown().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn fail_over_and_truncate_after_retention(nodes: &mut [Isolatable]) {
    let seg = SEGMENT as i64;
    let a = wait_for("a master", Duration::from_secs(20), || {
        current_master(nodes)
    })
    .await;
    wait_for("3 in sync", Duration::from_secs(20), || {
        (in_sync(broker(nodes, a)) == 3).then_some(())
    })
    .await;

    // 1. Acknowledged sends fill five segments; every replica holds them, then deletes the
    //    expired segments.
    let master = store_of(nodes, a);
    let mut acked = Vec::new();
    while master.max_phy_offset() < 5 * seg {
        let n = acked.len();
        acked.extend(send_acked(nodes, a, n, 20).await);
    }
    let x = master.max_phy_offset();
    for i in 0..3 {
        let s = store_of(nodes, i);
        wait_for(
            "every replica holds the log",
            Duration::from_secs(20),
            || (s.max_phy_offset() == x).then_some(()),
        )
        .await;
        let b = broker(nodes, i);
        wait_for("the topic everywhere", Duration::from_secs(10), || {
            b.inner().topics.get(TOPIC).map(|_| ())
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    for i in 0..3 {
        let s = store_of(nodes, i);
        clean_now(s.clone()).await;
        assert!(
            s.min_phy_offset() >= 4 * seg,
            "replica {i}: min {}",
            s.min_phy_offset()
        );
        assert!(
            segment_files(&s).iter().all(|f| *f >= s.min_phy_offset()),
            "replica {i}: deleted segments gone from disk"
        );
    }

    // 2. The master is cut off from everything. A client beside it keeps sending to it until
    //    its lease runs out: it writes them (about three segments) but nothing acknowledges
    //    them; then its retention deletes its segments up to past X, where the others stopped.
    //    The client is connected before the cut: the whole blast must reach the master within
    //    what is left of its lease, not spend it on 64 connects on a busy machine.
    let target = nodes[a].listen.to_string();
    let blaster = api();
    blaster
        .max_offset(&target, TOPIC, 0)
        .await
        .expect("the client reaches the master");
    for r in &nodes[a].relays {
        r.set_cut(true);
    }
    let unacked: Vec<SendRequest> = (0..64).map(|i| named("unacked", i, 3000)).collect();
    let blast = futures::future::join_all(unacked.iter().map(|m| blaster.send(&target, m))).await;
    for r in blast.into_iter().flatten() {
        assert_ne!(
            r.code,
            response_code::SUCCESS,
            "acknowledged without replicas"
        );
    }
    let old = store_of(nodes, a);
    assert!(
        old.max_phy_offset() >= segment_start(x) + 2 * seg,
        "the cut-off master wrote {} bytes past {x}",
        old.max_phy_offset() - x
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    clean_now(old.clone()).await;
    let old_min = old.min_phy_offset();
    assert!(
        old_min > x,
        "its retention deleted past X: min {old_min}, X {x}"
    );
    assert!(!segment_files(&old).contains(&segment_start(x)));
    let old_epoch = broker(nodes, a)
        .inner()
        .ha
        .as_ref()
        .expect("ha")
        .master_epoch();
    drop(old);
    drop(master);

    // 3. It stops; a slave is elected and takes acknowledged writes with the other one.
    nodes[a].broker.take().expect("old master").shutdown().await;
    let b = wait_for("a new master", Duration::from_secs(30), || {
        current_master(nodes)
    })
    .await;
    assert_ne!(b, a);
    let new_ha = broker(nodes, b).inner().ha.clone().expect("ha");
    assert!(new_ha.master_epoch() > old_epoch);
    let new = store_of(nodes, b);
    assert_eq!(
        new.epoch_entries().last().map(|e| e.start_offset),
        Some(x),
        "the new epoch starts where the old master's replicas stopped"
    );
    let before = assert_acked_readable(&new, &acked);
    assert!(
        before > 0,
        "only {before} acknowledged messages above the minimum"
    );
    let n = acked.len();
    acked.extend(send_acked(nodes, b, n, 40).await);
    assert!(assert_acked_readable(&new, &acked) >= before + 40);
    assert_none_with(&new, "unacked-");

    // 4. The old master comes back (its links healed). The last offset it shares with the new
    //    master is X, below its own first offset: it starts over at the segment holding X,
    //    fetches from there and catches up.
    for r in &nodes[a].relays {
        r.set_cut(false);
    }
    nodes[a].broker = Some(
        Broker::start(nodes[a].cfg.clone())
            .await
            .expect("old master restarts"),
    );
    let back = broker(nodes, a);
    wait_for("the old master is a slave", Duration::from_secs(20), || {
        (back.inner().ha.as_ref().expect("ha").role() == Role::Slave).then_some(())
    })
    .await;
    let end = new.max_phy_offset();
    let old = store_of(nodes, a);
    wait_for("the old master caught up", Duration::from_secs(30), || {
        (old.max_phy_offset() == end).then_some(())
    })
    .await;
    let start = segment_start(x).max(new.min_phy_offset());
    assert_eq!(
        old.min_phy_offset(),
        start,
        "started over at the segment holding X"
    );
    assert!(start < old_min);
    assert!(
        segment_files(&old).iter().all(|f| *f >= start),
        "{:?}",
        segment_files(&old)
    );
    same_bytes(broker(nodes, b), broker(nodes, a), end);
    assert_eq!(old.epoch_entries(), new.epoch_entries());
    for q in 0..2 {
        assert_eq!(
            old.get_max_offset_in_queue(TOPIC, q),
            new.get_max_offset_in_queue(TOPIC, q),
            "queue {q}"
        );
    }
    assert_none_with(&old, "unacked-");
    assert!(assert_acked_readable(&old, &acked) >= 40);

    // 5. A further failover: the new master stops once all three are in sync again.
    wait_for("all three in sync again", Duration::from_secs(30), || {
        (in_sync(broker(nodes, b)) == 3).then_some(())
    })
    .await;
    let epoch = new_ha.master_epoch();
    drop(new);
    drop(old);
    drop(new_ha);
    nodes[b].broker.take().expect("new master").shutdown().await;
    let c = wait_for("a third master", Duration::from_secs(30), || {
        current_master(nodes)
    })
    .await;
    let third = broker(nodes, c).inner().ha.clone().expect("ha");
    assert!(third.master_epoch() > epoch);
    let n = acked.len();
    acked.extend(send_acked(nodes, c, n, 20).await);
    let store = store_of(nodes, c);
    assert!(assert_acked_readable(&store, &acked) >= 60);
    assert_none_with(&store, "unacked-");
}
