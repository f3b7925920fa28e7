//! Failure injection for the store's failed state and durability of directory entries (issue
//! 13): failures that the file system alone cannot produce on demand are armed through
//! [`MessageStore::inject_failure`].

use std::path::Path;
use std::time::{Duration, Instant};

use rocketraft_common::message::Message;

use super::mapped_file::SYNCED_DIRS;
use super::{BrokerMessage, GetMessageStatus, MessageStore, StoreConfig, StoreError};

fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        commitlog_segment_size: 64 * 1024,
        consume_queue_entries_per_file: 50,
        pretouch: false,
        flush_interval_ms: 20,
        checkpoint_interval_ms: 30,
        ..StoreConfig::new(dir)
    }
}

fn put(store: &MessageStore, i: usize) -> Result<super::PutResult, StoreError> {
    store.put_message_blocking(BrokerMessage::new(
        Message::new("T", format!("body-{i}").into_bytes()),
        0,
    ))
}

/// A ConsumeQueue flush fails: the store refuses writes with the cause, keeps serving what
/// it stored, and after a restart everything acknowledged is there.
#[test]
fn a_failed_consume_queue_flush_makes_the_store_read_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MessageStore::open(config(dir.path())).expect("open");
    let mut acked = 0;
    for i in 0..10 {
        put(&store, i).expect("put");
        acked += 1;
    }
    store.inject_failure("cq-flush");
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        assert!(Instant::now() < deadline, "writes still accepted");
        match put(&store, acked) {
            Ok(_) => acked += 1,
            Err(e) => break e,
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(matches!(err, StoreError::ReadOnly(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with("store is read-only after a disk error: ConsumeQueue T/0 flush failed"),
        "{text}"
    );
    assert!(store.disk_error().is_some_and(|c| c.contains("injected")));
    assert!(matches!(put(&store, 999), Err(StoreError::ReadOnly(_))));
    let got = store.get_messages("g", "T", 0, 0, 1000, 1 << 24, &|_| true);
    assert_eq!(got.messages.len(), acked);
    let e = store
        .shutdown()
        .expect_err("shutdown reports the disk error");
    assert!(matches!(e, StoreError::ReadOnly(_)), "{e:?}");
    drop(store);

    let store = MessageStore::open(config(dir.path())).expect("reopen");
    assert!(!store.recovery_report().clean_shutdown);
    let got = store.get_messages("g", "T", 0, 0, 1000, 1 << 24, &|_| true);
    assert_eq!(got.status, GetMessageStatus::Found);
    assert_eq!(got.messages.len(), acked);
    put(&store, 1000).expect("writable again after the restart");
}

/// Recovery's deletions (an interrupted segment creation) are followed by an fsync of the
/// CommitLog directory.
#[test]
fn recovery_deletions_sync_the_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let store = MessageStore::open(cfg.clone()).expect("open");
    put(&store, 0).expect("put");
    store.shutdown().expect("shutdown");
    drop(store);
    // Only the leftover below is to be deleted: drop the segment prepared ahead of the writer.
    for e in std::fs::read_dir(cfg.commitlog_dir()).expect("ls") {
        let path = e.expect("entry").path();
        if path
            .file_name()
            .is_some_and(|n| n != "00000000000000000000")
        {
            std::fs::remove_file(&path).expect("rm");
        }
    }
    // A leftover of an interrupted creation far ahead of the log: the allocator prepares the
    // next segment (65536) under its own `.tmp` name right after the reopen, so a leftover of
    // that name could be the allocator's fresh one when the test looks.
    let leftover = cfg.commitlog_dir().join("00000000000000655360.tmp");
    std::fs::write(&leftover, b"half created").expect("leftover");
    SYNCED_DIRS.with(|d| d.borrow_mut().clear());
    let store = MessageStore::open(cfg.clone()).expect("reopen");
    assert!(!leftover.exists());
    let synced = SYNCED_DIRS.with(|d| d.borrow().clone());
    assert!(
        synced.contains(&cfg.commitlog_dir()),
        "CommitLog directory not synced after a deletion: {synced:?}"
    );
    drop(store);
}

/// `open` creates the store's directories durably (each new directory's parent is synced).
#[test]
fn open_syncs_the_directories_it_creates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("new").join("store");
    SYNCED_DIRS.with(|d| d.borrow_mut().clear());
    let store = MessageStore::open(config(&root)).expect("open");
    let synced = SYNCED_DIRS.with(|d| d.borrow().clone());
    for d in [
        dir.path().to_path_buf(),
        dir.path().join("new"),
        root.clone(),
    ] {
        assert!(
            synced.contains(&d),
            "{} not synced: {synced:?}",
            d.display()
        );
    }
    drop(store);
}
