//! The store's replication primitives on real files: a slave appending what a master streams
//! (across segment rolls), rejection of misplaced or damaged bytes, truncation of the tail (log,
//! ConsumeQueues, epochs) and its completion at open after a crash in the middle, and
//! confirm-offset gating of reads.

use std::path::Path;

use rocketraft_broker::store::{
    BrokerMessage, GetMessageStatus, MessageStore, PutResult, StoreConfig, StoreError,
};
use rocketraft_common::message::Message;

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

fn write(store: &MessageStore, from: usize, n: usize) -> Vec<(i32, PutResult)> {
    (from..from + n)
        .map(|i| {
            let qid = i as i32 % 3;
            let mut m = Message::new("T", format!("message-{i}-").repeat(10 + i % 29));
            m.set_tags(format!("tag{}", i % 3));
            let r = store
                .put_message_blocking(BrokerMessage::new(m, qid))
                .expect("put");
            (qid, r)
        })
        .collect()
}

/// Streams `master`'s log into `slave` from the slave's end, as the HA connection does.
fn replicate(rt: &tokio::runtime::Runtime, master: &MessageStore, slave: &MessageStore) {
    loop {
        let at = slave.max_phy_offset();
        let Some(chunk) = master.replication_chunk(at, 32 * 1024, i64::MAX) else {
            break;
        };
        let end = rt
            .block_on(slave.append_replicated(at, chunk.to_vec()))
            .expect("append");
        assert!(end > at);
    }
    assert_eq!(slave.max_phy_offset(), master.max_phy_offset());
}

fn same_log(a: &MessageStore, b: &MessageStore, upto: i64) {
    let mut at = 0;
    while at < upto {
        let x = a.read_commit_log(at, 8192).expect("a");
        let y = b.read_commit_log(at, x.len()).expect("b");
        assert_eq!(x, y, "logs differ at {at}");
        at += x.len() as i64;
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_slave_rebuilds_the_same_log_and_queues_and_refuses_bad_bytes() {
    let rt = rt();
    let dir = tempfile::tempdir().expect("tempdir");
    let master = MessageStore::open(config(&dir.path().join("m"))).expect("master");
    let slave = MessageStore::open(config(&dir.path().join("s"))).expect("slave");
    let written = write(&master, 0, 600);
    assert!(
        master.max_phy_offset() > 3 * SEGMENT as i64,
        "several segments"
    );
    replicate(&rt, &master, &slave);
    same_log(&master, &slave, master.max_phy_offset());
    for q in 0..3 {
        assert_eq!(
            slave.get_max_offset_in_queue("T", q),
            master.get_max_offset_in_queue("T", q)
        );
    }
    for (qid, r) in &written {
        assert_eq!(
            slave.get_commit_log_offset_in_queue("T", *qid, r.queue_offset),
            Some(r.physical_offset)
        );
    }

    // Bytes for another offset, or damaged bytes, are refused and change nothing.
    write(&master, 600, 5);
    let end = slave.max_phy_offset();
    let chunk = master
        .replication_chunk(end, 32 * 1024, i64::MAX)
        .expect("chunk");
    let wrong = rt.block_on(slave.append_replicated(end + 1, chunk.to_vec()));
    assert!(
        matches!(wrong, Err(StoreError::OffsetMismatch { .. })),
        "{wrong:?}"
    );
    let mut damaged = chunk.to_vec();
    let last = damaged.len() - 10;
    damaged[last] ^= 0x5A;
    let bad = rt.block_on(slave.append_replicated(end, damaged));
    assert!(matches!(bad, Err(StoreError::Replication(_))), "{bad:?}");
    // The good records before the damaged one may have been taken; the rest follows cleanly.
    replicate(&rt, &master, &slave);
    same_log(&master, &slave, master.max_phy_offset());
}

#[test]
fn truncation_cuts_log_queues_and_epochs_and_survives_reopen() {
    let rt = rt();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s");
    let store = MessageStore::open(config(&path)).expect("open");
    store.append_epoch(1, 0).expect("epoch 1");
    let first = write(&store, 0, 300);
    let cut = store.max_phy_offset();
    store.append_epoch(2, cut).expect("epoch 2");
    write(&store, 300, 400);
    assert!(
        store.max_phy_offset() - cut > 2 * SEGMENT as i64,
        "the tail spans segments"
    );
    let queue_ends: Vec<i64> = (0..3)
        .map(|q| store.get_max_offset_in_queue("T", q))
        .collect();

    rt.block_on(store.truncate_to(cut)).expect("truncate");
    assert_eq!(store.max_phy_offset(), cut);
    assert_eq!(store.epoch_entries().len(), 1, "epoch 2 started at the cut");
    for (q, end) in queue_ends.iter().enumerate() {
        let now = store.get_max_offset_in_queue("T", q as i32);
        assert!(now < *end);
        let last = store
            .get_cq_entry("T", q as i32, now - 1)
            .expect("last entry");
        assert!(last.commit_log_offset + last.size as i64 <= cut);
    }
    assert!(
        !path.join("truncate").exists(),
        "the marker is gone once done"
    );
    // Writing continues at the cut, then a clean reopen keeps exactly that.
    let more = write(&store, 700, 50);
    assert_eq!(more[0].1.physical_offset, cut);
    let end = store.max_phy_offset();
    store.shutdown().expect("shutdown");
    drop(store);
    let store = MessageStore::open(config(&path)).expect("reopen");
    assert_eq!(store.max_phy_offset(), end);
    for (qid, r) in first.iter().chain(&more) {
        assert_eq!(
            store.get_commit_log_offset_in_queue("T", *qid, r.queue_offset),
            Some(r.physical_offset)
        );
    }
}

#[test]
fn an_interrupted_truncation_is_finished_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s");
    let store = MessageStore::open(config(&path)).expect("open");
    store.append_epoch(1, 0).expect("epoch");
    write(&store, 0, 200);
    let cut = store.max_phy_offset();
    store.append_epoch(2, cut).expect("epoch 2");
    write(&store, 200, 400);
    // A crash right after the truncation marker was written: nothing else was cut yet.
    std::fs::write(path.join("truncate"), format!("{cut}\n")).expect("marker");
    store.crash_for_test();
    drop(store);
    let store = MessageStore::open(config(&path)).expect("reopen");
    assert_eq!(store.max_phy_offset(), cut);
    assert_eq!(store.epoch_entries().len(), 1);
    assert!(!path.join("truncate").exists());
    for q in 0..3 {
        let max = store.get_max_offset_in_queue("T", q);
        let last = store.get_cq_entry("T", q, max - 1).expect("entry");
        assert!(last.commit_log_offset + last.size as i64 <= cut);
    }
    // No segment past the cut survives.
    let segments = std::fs::read_dir(path.join("commitlog"))
        .expect("dir")
        .count() as i64;
    assert!(
        segments <= cut / SEGMENT as i64 + 2,
        "{segments} segments for a {cut}-byte log"
    );
}

#[test]
fn reads_stop_at_the_confirm_offset_when_gated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MessageStore::open(config(dir.path())).expect("open");
    let written = write(&store, 0, 30);
    let (qid, tenth) = &written[9];
    store.set_gated(true);
    store.set_confirm_offset(tenth.physical_offset + tenth.wrote_bytes as i64);
    let got = store.get_messages("g", "T", *qid, 0, 100, 1 << 20, &|_| true);
    let visible: Vec<i64> = got.message_queue_offsets.clone();
    assert!(
        visible.iter().all(|o| *o <= tenth.queue_offset),
        "{visible:?}"
    );
    assert_eq!(visible.last(), Some(&tenth.queue_offset));
    let beyond = store.get_messages("g", "T", *qid, tenth.queue_offset + 1, 10, 1 << 20, &|_| {
        true
    });
    assert_eq!(beyond.status, GetMessageStatus::OffsetOverflowOne);
    store.set_gated(false);
    let all = store.get_messages("g", "T", *qid, 0, 100, 1 << 20, &|_| true);
    assert_eq!(all.messages.len(), 10);
}

// ------------------------------------------------------------------------------------------
// A replica that diverged below its own first offset (issue 15 item 2)
// ------------------------------------------------------------------------------------------

const ALL_HOURS: &str = "00;01;02;03;04;05;06;07;08;09;10;11;12;13;14;15;16;17;18;19;20;21;22;23";

/// Retention on: segments expire 1 s after their last message, at any hour, in rounds the
/// test runs (`clean_now`).
fn retention_config(dir: &Path, cq_entries_per_file: u32) -> StoreConfig {
    StoreConfig {
        consume_queue_entries_per_file: cq_entries_per_file,
        file_reserved_time_secs: Some(1),
        delete_when: ALL_HOURS.into(),
        clean_resource_interval_ms: 3_600_000,
        delete_commit_log_files_interval_ms: 0,
        flush_interval_ms: 10,
        checkpoint_interval_ms: 20,
        ..config(dir)
    }
}

/// `n` records of about 1 KiB whose bodies start with `{what}-{i}-` and whose key is
/// `{what}-{i}`, over queues 0..3.
fn write_named(store: &MessageStore, what: &str, from: usize, n: usize) -> Vec<(i32, PutResult)> {
    (from..from + n)
        .map(|i| {
            let qid = i as i32 % 3;
            let mut body = format!("{what}-{i}-").into_bytes();
            body.resize(1000, b'.');
            let mut m = Message::new("T", body);
            m.set_keys(format!("{what}-{i}"));
            let r = store
                .put_message_blocking(BrokerMessage::new(m, qid))
                .expect("put");
            (qid, r)
        })
        .collect()
}

fn segment_start(offset: i64) -> i64 {
    offset - offset.rem_euclid(SEGMENT as i64)
}

/// The epoch holding `offset` in `entries` and where the next one starts (or `max`).
fn epoch_at(
    entries: &[rocketraft_broker::store::epoch::EpochEntry],
    offset: i64,
    max: i64,
) -> (i32, i64, i64) {
    let mut found = (0, 0, max);
    for (i, e) in entries.iter().enumerate() {
        if e.start_offset <= offset {
            let limit = entries.get(i + 1).map_or(max, |n| n.start_offset.min(max));
            found = (e.epoch, e.start_offset, limit);
        }
    }
    found
}

/// Streams `master`'s log into `slave` from the slave's end as the HA connection does: a slave
/// behind the master's first offset starts over there, and the master's epochs are recorded as
/// their data arrives.
fn follow(rt: &tokio::runtime::Runtime, master: &MessageStore, slave: &MessageStore) {
    loop {
        let mut at = slave.max_phy_offset();
        if at < master.min_phy_offset() {
            rt.block_on(slave.reset_to(master.min_phy_offset()))
                .expect("start over at the master's first offset");
            at = slave.max_phy_offset();
        }
        let entries = master.epoch_entries();
        let (epoch, start, limit) = epoch_at(&entries, at, master.max_phy_offset());
        let Some(chunk) = master.replication_chunk(at, 32 * 1024, limit) else {
            break;
        };
        if slave.last_epoch().is_none_or(|e| e.epoch != epoch) {
            slave.append_epoch(epoch, start).expect("epoch");
        }
        rt.block_on(slave.append_replicated(at, chunk.to_vec()))
            .expect("append");
    }
    assert_eq!(slave.max_phy_offset(), master.max_phy_offset());
}

/// What the HA handshake decides on the slave's side (`ha::truncate_divergent`): an empty log
/// forgets its epochs; otherwise the log is cut at the last offset it shares with the master,
/// which starts it over when that lies below its first offset.
fn handshake(rt: &tokio::runtime::Runtime, slave: &MessageStore, master: &MessageStore) {
    let (end, min, epochs) = (
        slave.max_phy_offset(),
        slave.min_phy_offset(),
        slave.epoch_entries(),
    );
    if end == min && !epochs.is_empty() {
        rt.block_on(slave.reset_to(end)).expect("forget the epochs");
        return;
    }
    let point = rocketraft_broker::store::epoch::consistent_point(
        &epochs,
        end,
        &master.epoch_entries(),
        master.max_phy_offset(),
    )
    .expect("a shared epoch");
    rt.block_on(slave.truncate_to(point.min(end)))
        .expect("truncate");
}

fn segment_files(store_root: &Path) -> Vec<i64> {
    let mut starts: Vec<i64> = std::fs::read_dir(store_root.join("commitlog"))
        .expect("commitlog dir")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i64>().ok())
        .collect();
    starts.sort_unstable();
    starts
}

fn wait_flushed(store: &MessageStore) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.flushed_phy_offset() < store.max_phy_offset()
        || store.dispatched_phy_offset() < store.max_phy_offset()
    {
        assert!(std::time::Instant::now() < deadline, "never flushed");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The old master, the new one, `X` and what the new one acknowledged.
type Diverged = (
    std::sync::Arc<MessageStore>,
    std::sync::Arc<MessageStore>,
    i64,
    Vec<(i32, PutResult)>,
);

/// Builds the situation under `root`: `old` was master of epoch 1; `new` replicated its first
/// 100 records (up to `X`), then `old` went on alone for about four segments (never replicated)
/// and its retention deleted its segments up to past `X`; `new` became master of epoch 2 at `X`
/// and wrote 80 records. Returns the two stores, `X`, and what `new` acknowledged.
fn diverged_below_first_offset(root: &Path, cq_entries_per_file: u32) -> Diverged {
    let rt = rt();
    let old =
        MessageStore::open(retention_config(&root.join("old"), cq_entries_per_file)).expect("old");
    let new =
        MessageStore::open(retention_config(&root.join("new"), cq_entries_per_file)).expect("new");
    old.append_epoch(1, 0).expect("epoch 1");
    let mut acked = write_named(&old, "shared", 0, 100);
    follow(&rt, &old, &new);
    let x = old.max_phy_offset();
    write_named(&old, "diverged", 100, 250);
    wait_flushed(&old);
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    // More after the pause: the segments holding these have not expired, so a few stay.
    write_named(&old, "diverged", 350, 120);
    wait_flushed(&old);
    old.clean_now().expect("cleaning round");
    assert!(
        segment_files(&root.join("old")).len() >= 2,
        "a few segments stay"
    );
    assert!(
        old.min_phy_offset() > x,
        "the old master's retention deleted past the divergence: min {} X {x}",
        old.min_phy_offset()
    );
    assert!(
        segment_files(&root.join("old"))
            .iter()
            .all(|s| *s >= old.min_phy_offset()),
        "segments below the first offset are gone from disk"
    );
    new.append_epoch(2, x).expect("epoch 2");
    acked.extend(write_named(&new, "new", 500, 80));
    (old, new, x, acked)
}

/// The CommitLog offsets of the records of `T` indexed under `key` (waits for the indexer).
fn found_by_key(store: &MessageStore, key: &str) -> Vec<i64> {
    let index = store.message_index().expect("the index is on");
    assert!(
        index.wait_caught_up(std::time::Duration::from_secs(20)),
        "the indexer caught up"
    );
    store
        .query_by_key("T", key, 8, 0, i64::MAX)
        .expect("query")
        .expect("the index is on")
        .offsets
}

/// The old master, caught up with `new` after starting over at the segment holding `x`: same
/// bytes, queues, epochs and acknowledged records as `new`, nothing of what it wrote alone.
fn assert_started_over_and_caught_up(
    old: &MessageStore,
    new: &MessageStore,
    x: i64,
    acked: &[(i32, PutResult)],
) {
    let start = segment_start(x).max(new.min_phy_offset());
    assert_eq!(old.min_phy_offset(), start);
    assert_eq!(old.max_phy_offset(), new.max_phy_offset());
    let mut at = start;
    while at < new.max_phy_offset() {
        let a = new.read_commit_log(at, 8192).expect("new");
        let b = old.read_commit_log(at, a.len()).expect("old");
        assert_eq!(a, b, "logs differ at {at}");
        at += a.len() as i64;
    }
    assert_eq!(old.epoch_entries(), new.epoch_entries());
    for q in 0..3 {
        assert_eq!(
            old.get_max_offset_in_queue("T", q),
            new.get_max_offset_in_queue("T", q),
            "queue {q}"
        );
        let min = old.get_min_offset_in_queue("T", q);
        for off in min..old.get_max_offset_in_queue("T", q) {
            let Some(phy) = old.get_commit_log_offset_in_queue("T", q, off) else {
                continue;
            };
            if phy >= old.min_phy_offset() {
                let m = old.look_message_by_offset(phy).expect("decodable");
                assert!(
                    !m.message.body.starts_with(b"diverged-"),
                    "queue {q} offset {off} still holds what the old master wrote alone"
                );
            }
        }
    }
    for q in 0..3 {
        for off in new.get_min_offset_in_queue("T", q)..new.get_max_offset_in_queue("T", q) {
            let Some(phy) = new.get_commit_log_offset_in_queue("T", q, off) else {
                continue;
            };
            if phy >= start {
                assert_eq!(
                    old.get_commit_log_offset_in_queue("T", q, off),
                    Some(phy),
                    "queue {q} offset {off}"
                );
            }
        }
    }
    let mut checked = 0;
    for (qid, r) in acked.iter().filter(|(_, r)| r.physical_offset >= start) {
        assert_eq!(
            old.get_commit_log_offset_in_queue("T", *qid, r.queue_offset),
            Some(r.physical_offset),
            "acknowledged record at {} (queue {qid} offset {})",
            r.physical_offset,
            r.queue_offset
        );
        checked += 1;
    }
    assert!(
        acked.is_empty() || checked > 0,
        "only {checked} acknowledged records above {start}"
    );
}

#[test]
fn a_replica_that_diverged_below_its_first_offset_starts_over_at_that_segment() {
    let rt = rt();
    let dir = tempfile::tempdir().expect("tempdir");
    // Queue files of 200 entries: each queue's first file (its entries of the shared records)
    // is still on disk.
    let (old, new, x, acked) = diverged_below_first_offset(dir.path(), 200);
    let old_min = old.min_phy_offset();
    let point = rocketraft_broker::store::epoch::consistent_point(
        &old.epoch_entries(),
        old.max_phy_offset(),
        &new.epoch_entries(),
        new.max_phy_offset(),
    );
    assert_eq!(point, Some(x), "epoch 1 is shared up to X");

    // The cut lies below the old master's first offset: its whole log goes, it starts over at
    // the segment holding X, its queues are emptied (none has an entry at or below X left) and
    // its epochs forgotten.
    rt.block_on(old.truncate_to(x))
        .expect("truncate below the first offset");
    let start = segment_start(x);
    assert!(start < old_min);
    assert_eq!(old.min_phy_offset(), start);
    assert_eq!(old.max_phy_offset(), start);
    assert!(old.epoch_entries().is_empty());
    assert!(segment_files(&dir.path().join("old")).is_empty());
    // Each queue goes on after its last record that ends at or below the new start (the
    // shared prefix; its entry is still on disk although below the queue's minimum).
    for q in 0..3 {
        let shared = acked[..100]
            .iter()
            .filter(|(qid, r)| *qid == q && r.physical_offset + r.wrote_bytes as i64 <= start)
            .count() as i64;
        assert_eq!(old.get_max_offset_in_queue("T", q), shared, "queue {q}");
        let r = old.get_messages("g", "T", q, shared, 32, 1 << 20, &|_| true);
        assert_eq!(r.status, GetMessageStatus::OffsetOverflowOne, "queue {q}");
    }

    // It fetches from there: the master's records bring their own queue offsets.
    follow(&rt, &new, &old);
    assert_started_over_and_caught_up(&old, &new, x, &acked);
    // The records fetched again below its old first offset are found by key again: the
    // index's retention floor came down with the log's start.
    let refetched: Vec<usize> = (500..580)
        .filter(|i| acked[100 + i - 500].1.physical_offset < old_min)
        .collect();
    assert!(
        !refetched.is_empty(),
        "records of the new master below {old_min}"
    );
    for i in [refetched[0], refetched[refetched.len() - 1]] {
        assert_eq!(
            found_by_key(&old, &format!("new-{i}")),
            vec![acked[100 + i - 500].1.physical_offset],
            "new-{i}"
        );
    }

    // A restart keeps it; elected, it would go on with the master's queue offsets.
    old.shutdown().expect("shutdown");
    drop(old);
    let old = MessageStore::open(retention_config(&dir.path().join("old"), 200)).expect("reopen");
    assert_started_over_and_caught_up(&old, &new, x, &acked);
    assert_eq!(
        found_by_key(&old, &format!("new-{}", refetched[0])).len(),
        1,
        "the floor stays down after a restart"
    );
    let next = write_named(&old, "after", 1000, 3);
    for (qid, r) in next {
        assert_eq!(r.queue_offset, new.get_max_offset_in_queue("T", qid));
    }
}

#[test]
fn a_replica_that_diverged_below_its_first_offset_and_the_masters_starts_at_the_masters() {
    let rt = rt();
    let dir = tempfile::tempdir().expect("tempdir");
    // Queue files of 50 entries: those holding the shared records are gone.
    let (old, new, x, mut acked) = diverged_below_first_offset(dir.path(), 50);
    // The new master's retention deleted the segment holding X too.
    acked.extend(write_named(&new, "more", 600, 150));
    wait_flushed(&new);
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    new.clean_now().expect("cleaning round");
    assert!(new.min_phy_offset() > segment_start(x));

    rt.block_on(old.truncate_to(x))
        .expect("truncate below the first offset");
    assert_eq!(old.max_phy_offset(), segment_start(x));
    // No queue has an entry left of a record at or below the new start: all are emptied.
    for q in 0..3 {
        assert_eq!(old.get_max_offset_in_queue("T", q), 0, "queue {q} emptied");
        let r = old.get_messages("g", "T", q, 0, 32, 1 << 20, &|_| true);
        assert_eq!(r.status, GetMessageStatus::NoMessageInQueue);
    }
    // The master no longer has that offset: it sends its first one, and the replica starts
    // over there instead.
    follow(&rt, &new, &old);
    assert_eq!(old.min_phy_offset(), new.min_phy_offset());
    assert_started_over_and_caught_up(&old, &new, x, &acked);
    old.clean_now().expect("cleaning round");
    new.clean_now().expect("cleaning round");
    for q in 0..3 {
        assert_eq!(
            old.get_min_offset_in_queue("T", q),
            new.get_min_offset_in_queue("T", q),
            "queue {q}"
        );
    }
}

const CRASH_DIR: &str = "ROCKETRAFT_TEST_RESET_CRASH_DIR";

/// Run by [`a_start_over_killed_halfway_is_finished_by_the_next_handshake`] in a child process
/// with `ROCKETRAFT_FAILPOINT` set, which aborts the process halfway through the start-over.
/// Does nothing in a normal test run.
#[test]
fn reset_crash_child() {
    let Ok(root) = std::env::var(CRASH_DIR) else {
        return;
    };
    let root = std::path::PathBuf::from(root);
    let (old, new, x, _) = diverged_below_first_offset(&root, 200);
    std::fs::write(root.join("x"), x.to_string()).expect("x");
    std::fs::write(root.join("old_min"), old.min_phy_offset().to_string()).expect("old_min");
    new.shutdown().expect("shutdown");
    let _ = rt().block_on(old.truncate_to(x));
    panic!("the failpoint was not reached");
}

#[test]
fn a_start_over_killed_halfway_is_finished_by_the_next_handshake() {
    let rt = rt();
    let exe = std::env::current_exe().expect("test binary");
    for point in [
        "reset-after-cq",
        "reset-after-checkpoint",
        "reset-after-segment",
        "reset-after-segments",
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = std::process::Command::new(&exe)
            .args([
                "--exact",
                "store_replication::reset_crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_DIR, dir.path())
            .env("ROCKETRAFT_FAILPOINT", point)
            .output()
            .expect("child");
        assert!(
            !out.status.success() && dir.path().join("x").exists(),
            "{point}: the child was not killed at the failpoint: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let read = |name: &str| -> i64 {
            std::fs::read_to_string(dir.path().join(name))
                .expect("value")
                .parse()
                .expect("number")
        };
        let (x, old_min) = (read("x"), read("old_min"));
        let old = MessageStore::open(retention_config(&dir.path().join("old"), 200)).expect("old");
        let new = MessageStore::open(retention_config(&dir.path().join("new"), 200)).expect("new");
        // What recovery sees: the old log, or a prefix of it starting where it did (the newest
        // segments went first), or an empty log at the start-over offset.
        let (min, max) = (old.min_phy_offset(), old.max_phy_offset());
        if point == "reset-after-segments" {
            assert_eq!((min, max), (segment_start(x), segment_start(x)), "{point}");
        } else {
            assert_eq!(min, old_min, "{point}");
            assert!(max > min, "{point}");
            assert!(!old.epoch_entries().is_empty(), "{point}: epochs kept");
        }
        for q in 0..3 {
            let (lo, hi) = (
                old.get_min_offset_in_queue("T", q),
                old.get_max_offset_in_queue("T", q),
            );
            for off in lo..hi {
                if let Some(phy) = old.get_commit_log_offset_in_queue("T", q, off) {
                    assert!(
                        phy < min || old.look_message_by_offset(phy).is_some(),
                        "{point}: queue {q} offset {off} points at {phy}, not in the log"
                    );
                }
            }
        }
        // The next handshake finishes the start-over, and the replica catches up.
        handshake(&rt, &old, &new);
        assert_eq!(old.max_phy_offset(), segment_start(x), "{point}");
        assert!(old.epoch_entries().is_empty(), "{point}");
        follow(&rt, &new, &old);
        let acked: Vec<(i32, PutResult)> = Vec::new();
        assert_started_over_and_caught_up(&old, &new, x, &acked);
        for q in 0..3 {
            assert_eq!(
                old.get_max_offset_in_queue("T", q),
                new.get_max_offset_in_queue("T", q),
                "{point}: queue {q}"
            );
        }
    }
}
