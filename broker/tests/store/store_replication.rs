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
