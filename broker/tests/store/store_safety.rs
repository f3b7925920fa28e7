//! Safety holes of the store (issue 13), each reproduced on real files:
//!
//! 1. the confirm offset survives a restart: a replica never serves more after a restart than
//!    it knew every SyncStateSet member held before it;
//! 2. a ConsumeQueue truncated at runtime (a replica cutting its tail) never shows a zeroed or
//!    torn entry to a concurrent reader;
//! 3. a failed checkpoint write makes the store refuse writes with a clear error and loses
//!    nothing already stored, and `open` keeps the truncation marker when its checkpoint fails.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocketraft_broker::ha::HaState;
use rocketraft_broker::store::consume_queue::{ConsumeQueue, CqEntry};
use rocketraft_broker::store::{BrokerMessage, MessageStore, PutResult, StoreConfig};
use rocketraft_common::message::{decode_message, Message};

const SEGMENT: u64 = 64 * 1024;

fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        commitlog_segment_size: SEGMENT,
        consume_queue_entries_per_file: 50,
        pretouch: false,
        flush_interval_ms: 20,
        checkpoint_interval_ms: 30,
        ..StoreConfig::new(dir)
    }
}

fn body(i: usize) -> Vec<u8> {
    format!("message-{i}-").repeat(5 + i % 13).into_bytes()
}

fn write(store: &MessageStore, from: usize, n: usize) -> Vec<(i32, PutResult)> {
    (from..from + n)
        .map(|i| {
            let qid = i as i32 % 3;
            let r = store
                .put_message_blocking(BrokerMessage::new(Message::new("T", body(i)), qid))
                .expect("put");
            (qid, r)
        })
        .collect()
}

fn end_of(r: &PutResult) -> i64 {
    r.physical_offset + r.wrote_bytes as i64
}

/// `(queue id, queue offset)` of every message consumers can read now.
fn visible(store: &MessageStore) -> HashSet<(i32, i64)> {
    let mut out = HashSet::new();
    for qid in 0..3 {
        let got = store.get_messages("g", "T", qid, 0, 10_000, 1 << 26, &|_| true);
        out.extend(got.message_queue_offsets.iter().map(|o| (qid, *o)));
    }
    out
}

/// The messages whose record ends at or below `confirm`.
fn held_below(written: &[(i32, PutResult)], confirm: i64) -> HashSet<(i32, i64)> {
    written
        .iter()
        .filter(|(_, r)| end_of(r) <= confirm)
        .map(|(q, r)| (*q, r.queue_offset))
        .collect()
}

/// Waits until the flusher wrote `n` more checkpoints than `from`.
fn wait_checkpoints(store: &MessageStore, from: u64, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.stats().checkpoints < from + n {
        assert!(Instant::now() < deadline, "no checkpoint written");
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The confirm offset after a restart.
// ---------------------------------------------------------------------------------------------

/// A gated replica confirmed only part of its log, shuts down cleanly and reopens: consumers
/// must see nothing past the old confirm offset until the replicas confirm more.
#[test]
fn confirm_offset_survives_a_clean_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MessageStore::open(config(dir.path())).expect("open");
    store.set_gated(true);
    let written = write(&store, 0, 60);
    let confirm = end_of(&written[19].1);
    store.set_confirm_offset(confirm);
    assert_eq!(visible(&store), held_below(&written, confirm));
    store.shutdown().expect("shutdown");
    drop(store);

    let store = MessageStore::open(config(dir.path())).expect("reopen");
    assert_eq!(store.max_phy_offset(), end_of(&written[59].1));
    // Controller mode gates reads as soon as the broker starts (HaState::new).
    let _ha = HaState::new(store.clone());
    store.set_gated(true);
    assert_eq!(store.confirm_offset(), confirm);
    assert_eq!(visible(&store), held_below(&written, confirm));
    // Confirmed again by the replicas: everything is visible.
    store.set_confirm_offset(store.max_phy_offset());
    assert_eq!(visible(&store).len(), 60);
}

/// The same after `kill -9`: the confirm offset of the last checkpoint bounds the reads.
#[test]
fn confirm_offset_survives_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MessageStore::open(config(dir.path())).expect("open");
    store.set_gated(true);
    let mut written = write(&store, 0, 40);
    let confirm = end_of(&written[9].1);
    store.set_confirm_offset(confirm);
    // One more write so the next checkpoint differs from the last one and is written.
    let before = store.stats().checkpoints;
    written.extend(write(&store, 40, 1));
    wait_checkpoints(&store, before, 1);
    store.crash_for_test();
    drop(store);

    let store = MessageStore::open(config(dir.path())).expect("reopen");
    assert!(!store.recovery_report().clean_shutdown);
    store.set_gated(true);
    assert_eq!(store.confirm_offset(), confirm);
    assert_eq!(visible(&store), held_below(&written, confirm));
}

/// A restarted master whose SyncStateSet holds a slave it has not heard from yet keeps the
/// persisted confirm offset (it cannot know the slave holds more); once the set shrinks to
/// itself the confirm offset advances to its log end.
#[test]
fn a_restarted_master_holds_the_confirm_offset_until_its_replicas_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MessageStore::open(config(dir.path())).expect("open");
    store.set_gated(true);
    let written = write(&store, 0, 30);
    let confirm = end_of(&written[14].1);
    store.set_confirm_offset(confirm);
    store.shutdown().expect("shutdown");
    drop(store);

    let store = MessageStore::open(config(dir.path())).expect("reopen");
    let ha = HaState::new(store.clone());
    store.set_gated(true);
    ha.set_master(1, "127.0.0.1:1".into(), 2, 1, BTreeSet::from([1, 2]));
    ha.on_local_append();
    assert_eq!(store.confirm_offset(), confirm);
    assert_eq!(visible(&store), held_below(&written, confirm));
    ha.update_sync_state_set(2, BTreeSet::from([1]));
    assert_eq!(store.confirm_offset(), store.max_phy_offset());
    assert_eq!(visible(&store).len(), 30);
}

/// A standalone broker never gates: after a restart it serves its whole log, as before.
#[test]
fn an_ungated_store_serves_its_whole_log_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MessageStore::open(config(dir.path())).expect("open");
    let written = write(&store, 0, 25);
    store.shutdown().expect("shutdown");
    drop(store);
    let store = MessageStore::open(config(dir.path())).expect("reopen");
    assert_eq!(store.confirm_offset(), store.max_phy_offset());
    assert_eq!(visible(&store), held_below(&written, i64::MAX));
    let more = write(&store, 25, 5);
    assert_eq!(store.confirm_offset(), end_of(&more[4].1));
    assert_eq!(visible(&store).len(), 30);
}

// ---------------------------------------------------------------------------------------------
// 2. ConsumeQueue truncation at runtime under live readers.
// ---------------------------------------------------------------------------------------------

fn cq_entry(i: i64, generation: i64) -> CqEntry {
    CqEntry {
        commit_log_offset: i * 100,
        size: 100,
        tags_code: generation,
    }
}

/// One thread appends and cuts the queue back again and again (what a slave's truncation and
/// a re-dispatch do at runtime); readers scan below the max offset they see. No reader may
/// ever get a zeroed or half-zeroed entry: an entry returned is always a whole written entry.
#[test]
fn runtime_consume_queue_truncation_never_shows_zeroed_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cq = Arc::new(ConsumeQueue::new(dir.path(), "T", 0, 1024));
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (cq, stop, reads) = (cq.clone(), stop.clone(), reads.clone());
            std::thread::spawn(move || -> Result<(), String> {
                while !stop.load(Ordering::Acquire) {
                    let max = cq.max_offset();
                    let mut i = max - 1;
                    while i >= cq.min_offset() && i >= max - 3000 {
                        if let Some(e) = cq.entry(i) {
                            reads.fetch_add(1, Ordering::Relaxed);
                            if e.commit_log_offset != i * 100 || e.size != 100 {
                                stop.store(true, Ordering::Release);
                                return Err(format!("entry {i} read as {e:?} (max was {max})"));
                            }
                        }
                        i -= 1;
                    }
                }
                Ok(())
            })
        })
        .collect();
    let started = Instant::now();
    let mut generation = 0;
    let mut rounds = 0;
    while !stop.load(Ordering::Acquire) && started.elapsed() < Duration::from_secs(6) {
        generation += 1;
        let from = cq.max_offset();
        for i in from..3000 {
            cq.append(i, cq_entry(i, generation)).expect("append");
        }
        cq.truncate((generation * 37) % 500).expect("truncate");
        rounds += 1;
    }
    stop.store(true, Ordering::Release);
    for r in readers {
        if let Err(e) = r.join().expect("reader panicked") {
            panic!("after {rounds} truncations: {e}");
        }
    }
    assert!(reads.load(Ordering::Relaxed) > 0);
}

// ---------------------------------------------------------------------------------------------
// 3. Failed checkpoint writes.
// ---------------------------------------------------------------------------------------------

/// The checkpoint cannot be written (its temporary path is a directory): the store must stop
/// taking writes with a clear error, keep serving what it stored, and reopen with everything.
#[test]
fn a_failed_checkpoint_write_makes_the_store_read_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let store = MessageStore::open(cfg.clone()).expect("open");
    let mut written = write(&store, 0, 20);
    let blocker = cfg.checkpoint_path().with_extension("tmp");
    std::fs::create_dir(&blocker).expect("mkdir");
    // Writes go on until the next checkpoint fails; then they must be refused.
    let mut refused = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut i = 20;
    while Instant::now() < deadline {
        match store.put_message_blocking(BrokerMessage::new(Message::new("T", body(i)), 0)) {
            Ok(r) => written.push((0, r)),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    let e = refused.expect("writes still accepted after the checkpoint write failed");
    let text = e.to_string();
    assert!(
        text.contains("read-only after a disk error") && text.contains("checkpoint"),
        "{text}"
    );
    assert!(store.has_disk_error());
    // Still refused, and everything acknowledged is still readable.
    assert!(store
        .put_message_blocking(BrokerMessage::new(Message::new("T", body(0)), 1))
        .is_err());
    let want = held_below(&written, i64::MAX);
    assert_eq!(visible(&store), want);
    let e = store
        .shutdown()
        .expect_err("shutdown reports the disk error");
    assert!(
        e.to_string().contains("read-only after a disk error"),
        "{e}"
    );
    drop(store);

    std::fs::remove_dir(&blocker).expect("rmdir");
    let store = MessageStore::open(cfg).expect("reopen");
    assert!(!store.has_disk_error());
    assert_eq!(visible(&store), want);
    for (qid, r) in &written {
        let got = store.get_messages("g", "T", *qid, r.queue_offset, 1, 1 << 20, &|_| true);
        let (m, _) = decode_message(&got.messages[0]).expect("decode");
        assert_eq!(m.store_timestamp, r.store_timestamp);
    }
    write(&store, 1000, 3);
}

/// `open` finishing an interrupted truncation must not remove the truncation marker unless
/// the checkpoint that records the cut state was written.
#[test]
fn open_keeps_the_truncation_marker_when_its_checkpoint_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let store = MessageStore::open(cfg.clone()).expect("open");
    let written = write(&store, 0, 30);
    store.shutdown().expect("shutdown");
    drop(store);
    // An interrupted truncation to the end of message 9.
    let cut = end_of(&written[9].1);
    let marker = cfg.truncate_marker_path();
    std::fs::write(&marker, format!("{cut}\n")).expect("marker");
    let blocker = cfg.checkpoint_path().with_extension("tmp");
    std::fs::create_dir(&blocker).expect("mkdir");

    let opened = MessageStore::open(cfg.clone());
    assert!(
        opened.is_err(),
        "open succeeded although its checkpoint failed"
    );
    drop(opened);
    assert!(marker.exists(), "the truncation marker was removed");

    std::fs::remove_dir(&blocker).expect("rmdir");
    let store = MessageStore::open(cfg).expect("reopen");
    assert!(!marker.exists());
    assert_eq!(store.max_phy_offset(), cut);
    assert_eq!(visible(&store), held_below(&written, cut));
}
