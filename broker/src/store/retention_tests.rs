//! Retention on real files: expired segments and ConsumeQueue files go, readers behind the
//! minimum are told where to continue, the pin keeps live state, a full disk (a real tmpfs)
//! refuses sends and forced cleaning makes room again.

use std::path::Path;
use std::time::Duration;

use rocketraft_common::message::Message;

use rocketraft_common::testing::{fill_disk, Tmpfs};

use super::{BrokerMessage, GetMessageStatus, MessageStore, StoreConfig, StoreError};

const ALL_HOURS: &str = "00;01;02;03;04;05;06;07;08;09;10;11;12;13;14;15;16;17;18;19;20;21;22;23";

fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        commitlog_segment_size: 64 * 1024,
        consume_queue_entries_per_file: 50,
        pretouch: false,
        flush_interval_ms: 10,
        checkpoint_interval_ms: 20,
        file_reserved_time_secs: Some(1),
        delete_when: ALL_HOURS.into(),
        // Rounds run when the test asks (clean_now), not on their own.
        clean_resource_interval_ms: 3_600_000,
        delete_commit_log_files_interval_ms: 0,
        ..StoreConfig::new(dir)
    }
}

fn put(store: &MessageStore, topic: &str, i: usize) -> Result<super::PutResult, StoreError> {
    store.put_message_blocking(BrokerMessage::new(
        Message::new(topic, vec![b'x'; 900 + i % 7]),
        0,
    ))
}

/// Writes until the CommitLog has `segments` segments.
fn fill(store: &MessageStore, topic: &str, segments: usize) -> usize {
    let mut n = 0;
    while store.retention_status().segments < segments {
        put(store, topic, n).expect("put");
        n += 1;
    }
    n
}

fn wait_flushed(store: &MessageStore) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.flushed_phy_offset() < store.max_phy_offset()
        || store.dispatched_phy_offset() < store.max_phy_offset()
    {
        assert!(std::time::Instant::now() < deadline, "never flushed");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn expired_segments_go_and_readers_continue_from_the_new_minimum() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MessageStore::open(config(dir.path())).expect("open");
    // Two master epochs: the first wrote the first three segments.
    store.append_epoch(1, 0).expect("epoch 1");
    let mut written = fill(&store, "T", 3);
    let second = store.max_phy_offset();
    store.append_epoch(2, second).expect("epoch 2");
    written += fill(&store, "T", 6);
    wait_flushed(&store);
    std::thread::sleep(Duration::from_millis(1_100));
    let report = store.clean_now().expect("round");
    assert_eq!(report.segments_deleted, 5, "{report:?}");
    // The first epoch lies wholly below the new first offset: forgotten, durably.
    let epochs: Vec<(i32, i64)> = store
        .epoch_entries()
        .iter()
        .map(|e| (e.epoch, e.start_offset))
        .collect();
    assert_eq!(epochs, [(2, second)]);
    assert!(report.cq_files_deleted > 0, "{report:?}");
    let status = store.retention_status();
    assert_eq!(status.segments, 1);
    assert_eq!(status.min_phy_offset, 5 * 64 * 1024);
    let files = std::fs::read_dir(dir.path().join("commitlog"))
        .expect("ls")
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".tmp"))
        .count();
    // The writer's segment, plus the one the allocator prepared ahead.
    assert!(files <= 2, "{files} segment files left");

    // A reader at 0 is told where the queue now starts; from there it reads.
    let min = store.get_min_offset_in_queue("T", 0);
    assert!(min > 0);
    assert_eq!(store.get_max_offset_in_queue("T", 0), written as i64);
    let r = store.get_messages("g", "T", 0, 0, 32, 1 << 20, &|_| true);
    assert_eq!(r.status, GetMessageStatus::OffsetTooSmall);
    assert_eq!(r.next_begin_offset, min);
    let r = store.get_messages("g", "T", 0, min, 32, 1 << 20, &|_| true);
    assert_eq!(r.status, GetMessageStatus::Found);
    assert_eq!(r.message_queue_offsets[0], min);
    let entry = store.get_cq_entry("T", 0, min).expect("entry");
    assert!(entry.commit_log_offset >= status.min_phy_offset);

    // A restart keeps the minimums and the queue's end; writes continue at the right offsets.
    store.shutdown().expect("shutdown");
    drop(store);
    let store = MessageStore::open(config(dir.path())).expect("reopen");
    assert_eq!(store.min_phy_offset(), 5 * 64 * 1024);
    assert_eq!(
        store.epoch_entries().len(),
        1,
        "the epoch prefix stays truncated"
    );
    store.clean_now().expect("round");
    assert_eq!(store.get_min_offset_in_queue("T", 0), min);
    let r = put(&store, "T", 0).expect("put after reopen");
    assert_eq!(r.queue_offset, written as i64);
    let r = store.get_messages("g", "T", 0, min, 1000, 1 << 24, &|_| true);
    assert_eq!(r.status, GetMessageStatus::Found);
    store.shutdown().expect("shutdown");
}

#[test]
fn a_crash_between_segment_and_consume_queue_deletion_is_repaired_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MessageStore::open(config(dir.path())).expect("open");
    fill(&store, "T", 4);
    wait_flushed(&store);
    store.shutdown().expect("shutdown");
    drop(store);
    // The first segment goes, as if the cleaner died right after unlinking it.
    std::fs::remove_file(
        dir.path()
            .join("commitlog")
            .join(super::mapped_file::file_name(0)),
    )
    .expect("rm");
    let store = MessageStore::open(config(dir.path())).expect("reopen");
    store.clean_now().expect("round");
    let min = store.get_min_offset_in_queue("T", 0);
    let first = store.get_cq_entry("T", 0, min).expect("entry");
    assert!(first.commit_log_offset >= 64 * 1024, "{first:?}");
    let r = store.get_messages("g", "T", 0, 0, 8, 1 << 20, &|_| true);
    assert_eq!(r.status, GetMessageStatus::OffsetTooSmall);
    assert_eq!(r.next_begin_offset, min);
    store.shutdown().expect("shutdown");
}

#[test]
fn segments_not_yet_expired_stay_and_the_pin_keeps_live_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.file_reserved_time_secs = Some(3_600);
    let store = MessageStore::open(cfg).expect("open");
    fill(&store, "T", 4);
    wait_flushed(&store);
    store.delete_expired_files_manually();
    let report = store.clean_now().expect("round");
    assert_eq!(
        report.segments_deleted, 0,
        "nothing expired yet: {report:?}"
    );
    store.shutdown().expect("shutdown");
    drop(store);

    // Expired, but live state at the start of the third segment pins it.
    let store = MessageStore::open(config(dir.path())).expect("reopen");
    let pin = 2 * 64 * 1024 + 10;
    store.set_retention_pin(std::sync::Arc::new(move || Some(pin)));
    std::thread::sleep(Duration::from_millis(1_100));
    let report = store.clean_now().expect("round");
    assert_eq!(report.segments_deleted, 2, "{report:?}");
    assert_eq!(report.pinned_at, Some(pin));
    assert_eq!(store.min_phy_offset(), 2 * 64 * 1024);
    assert_eq!(store.retention_status().pinned_at, Some(pin));
    // The broker is told which segment the pin keeps (it rolls timers out of it).
    assert_eq!(report.wanted, Some(3 * 64 * 1024));
    assert_eq!(store.retention_wanted(), Some(3 * 64 * 1024));
    // Once nothing pins, the rest goes and nothing is wanted any more.
    store.set_retention_pin(std::sync::Arc::new(|| None));
    let report = store.clean_now().expect("round");
    assert_eq!(report.segments_deleted, 1, "{report:?}");
    assert_eq!(store.retention_wanted(), None);
    store.shutdown().expect("shutdown");
}

#[test]
fn outside_the_delete_hours_nothing_goes_until_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.delete_when = String::new();
    let store = MessageStore::open(cfg).expect("open");
    fill(&store, "T", 3);
    wait_flushed(&store);
    std::thread::sleep(Duration::from_millis(1_100));
    let report = store.clean_now().expect("round");
    // Below 75 % of the disk and no delete hour: expired files stay.
    if report.disk_used_percent.is_some_and(|p| p < 75.0) {
        assert_eq!(report.segments_deleted, 0, "{report:?}");
    }
    // DELETE_EXPIRED_COMMITLOG: the next rounds delete them at any hour.
    store.delete_expired_files_manually();
    let report = store.clean_now().expect("round");
    assert_eq!(store.retention_status().segments, 1, "{report:?}");
    store.shutdown().expect("shutdown");
}

#[test]
fn bad_retention_keys_are_refused_with_the_key_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.delete_when = "4am".into();
    let err = MessageStore::open(cfg)
        .expect_err("bad deleteWhen")
        .to_string();
    assert!(err.contains("deleteWhen") && err.contains("4am"), "{err}");
    let mut cfg = config(dir.path());
    cfg.disk_space_warning_level_ratio = 190;
    let err = MessageStore::open(cfg).expect_err("bad ratio").to_string();
    assert!(err.contains("disk_space_warning_level_ratio"), "{err}");
}

fn fill_until(
    store: &MessageStore,
    acked: &mut i64,
    done: impl Fn(&super::clean::RoundReport) -> bool,
) {
    loop {
        match put(store, "T", *acked as usize) {
            Ok(r) => {
                assert_eq!(r.queue_offset, *acked);
                *acked += 1;
            }
            Err(e) => panic!("the filesystem filled before the cleaner acted: {e}"),
        }
        if *acked % 32 == 0 {
            wait_flushed(store);
            let report = store.clean_now().expect("round");
            if done(&report) {
                return;
            }
        }
        assert!(*acked < 100_000, "the disk never filled");
    }
}

/// A real full filesystem (a 4 MiB tmpfs). Above the warning level sends are refused with a
/// clear reason and accepted again once space is freed; with forced cleaning on, the oldest
/// segments go although they have not expired; what was acknowledged and not deleted is
/// readable throughout.
#[test]
fn a_full_disk_refuses_sends_until_space_is_freed_and_forced_cleaning_makes_room() {
    let Some(fs) = Tmpfs::mount_or_skip("4m") else {
        return;
    };
    let ballast = fs.dir.join("ballast");
    std::fs::write(&ballast, vec![7u8; 1 << 20]).expect("ballast");
    let root = fs.dir.join("store");
    let mut cfg = config(&root);
    cfg.commitlog_segment_size = 128 * 1024;
    cfg.file_reserved_time_secs = Some(3_600);
    cfg.delete_when = String::new();
    cfg.clean_file_forcibly_enable = false;
    let store = MessageStore::open(cfg.clone()).expect("open");
    let mut acked = 0i64;
    fill_until(&store, &mut acked, |r| r.disk_full);
    let err = put(&store, "T", 0).expect_err("refused while full");
    let text = err.to_string();
    assert!(matches!(err, StoreError::ServiceNotAvailable(_)), "{text}");
    assert!(text.contains("disk is full"), "{text}");
    assert_eq!(store.min_phy_offset(), 0, "nothing expired, nothing forced");
    // Space freed by someone else: the next round accepts sends again.
    std::fs::remove_file(&ballast).expect("free space");
    let report = store.clean_now().expect("round");
    assert!(!report.disk_full, "{report:?}");
    let r = put(&store, "T", 0).expect("accepted again");
    assert_eq!(r.queue_offset, acked);
    acked += 1;
    let got = store.get_messages("g", "T", 0, 0, 100_000, 1 << 26, &|_| true);
    assert_eq!(got.message_queue_offsets.len() as i64, acked);
    store.shutdown().expect("shutdown");
    drop(store);

    // Forced cleaning: above 85 % the oldest segments go although not expired.
    cfg.clean_file_forcibly_enable = true;
    let store = MessageStore::open(cfg).expect("reopen");
    fill_until(&store, &mut acked, |r| r.segments_deleted > 0);
    assert!(store.min_phy_offset() > 0);
    assert!(!store.is_disk_full());
    let min = store.get_min_offset_in_queue("T", 0);
    let got = store.get_messages("g", "T", 0, min, 100_000, 1 << 26, &|_| true);
    assert_eq!(got.status, GetMessageStatus::Found);
    assert_eq!(got.message_queue_offsets.first(), Some(&min));
    assert_eq!(got.message_queue_offsets.last(), Some(&(acked - 1)));
    store.shutdown().expect("shutdown");
    drop(store);
    drop(fs);
}

/// A store that meets ENOSPC itself: no retention and no disk-full level of its own.
fn full_disk_config(root: &Path, segment: u64) -> StoreConfig {
    StoreConfig {
        commitlog_segment_size: segment,
        consume_queue_entries_per_file: 50_000,
        file_reserved_time_secs: Some(3_600),
        delete_when: String::new(),
        disk_space_warning_level_ratio: 100,
        disk_space_clean_forcibly_ratio: 100,
        clean_file_forcibly_enable: false,
        ..config(root)
    }
}

#[test]
fn enospc_refuses_sends_cleanly_and_recovers_when_space_is_freed() {
    let Some(fs) = Tmpfs::mount_or_skip("3m") else {
        return;
    };
    let cfg = full_disk_config(&fs.dir.join("store"), 256 * 1024);
    let store = MessageStore::open(cfg.clone()).expect("open");
    let mut acked: Vec<(String, i64)> = Vec::new();
    for q in 0..4 {
        let t = format!("T{q}");
        let r = put(&store, &t, 0).expect("put");
        acked.push((t, r.queue_offset));
    }
    wait_flushed(&store);
    let ballast = fs.dir.join("ballast");
    fill_disk(&ballast);

    // A new queue needs a new ConsumeQueue file: refused, cleanly.
    let err = put(&store, "Fresh", 0).expect_err("no room for a new ConsumeQueue");
    assert!(matches!(err, StoreError::ServiceNotAvailable(_)), "{err}");
    assert!(err.to_string().contains("ConsumeQueue"), "{err}");
    assert!(!store.has_disk_error(), "a full disk is not a disk error");
    // Existing queues go on until the segments run out, then are refused too.
    let refused = loop {
        match put(&store, "T0", acked.len()) {
            Ok(r) => acked.push(("T0".into(), r.queue_offset)),
            Err(e) => break e,
        }
        assert!(acked.len() < 10_000, "never refused");
    };
    assert!(
        matches!(refused, StoreError::ServiceNotAvailable(_)),
        "{refused}"
    );
    assert!(!store.has_disk_error());
    assert_eq!(
        store.get_max_offset_in_queue("Fresh", 0),
        0,
        "nothing half-written"
    );

    // Space freed: accepted again, on the same queues and the new one.
    std::fs::remove_file(&ballast).expect("free space");
    let r = put(&store, "T0", 0).expect("accepted again");
    acked.push(("T0".into(), r.queue_offset));
    let r = put(&store, "Fresh", 0).expect("the new queue too");
    assert_eq!(r.queue_offset, 0);
    acked.push(("Fresh".into(), 0));
    wait_flushed(&store);

    // kill -9: everything acknowledged is there after recovery, in its queue, in order.
    store.crash_for_test();
    drop(store);
    let store = MessageStore::open(cfg.clone()).expect("recover");
    let check = |store: &MessageStore, acked: &[(String, i64)]| {
        for (t, off) in acked {
            let r = store.get_messages("g", t, 0, *off, 1, 1 << 20, &|_| true);
            assert_eq!(r.status, GetMessageStatus::Found, "{t}@{off}");
            assert_eq!(r.message_queue_offsets, vec![*off]);
        }
    };
    check(&store, &acked);

    // kill -9 at the full point: the disk full again, the store killed there. Opening it on
    // the full disk either works or fails with a clear error (recovery needs a few blocks);
    // once space is freed it opens, with everything acknowledged.
    fill_disk(&ballast);
    loop {
        match put(&store, "T1", 0) {
            Ok(r) => acked.push(("T1".into(), r.queue_offset)),
            Err(e) => {
                assert!(matches!(e, StoreError::ServiceNotAvailable(_)), "{e}");
                break;
            }
        }
        assert!(acked.len() < 10_000, "never refused");
    }
    store.crash_for_test();
    drop(store);
    match MessageStore::open(cfg.clone()) {
        Ok(store) => {
            eprintln!("opened on the full disk");
            check(&store, &acked);
            store.crash_for_test();
        }
        Err(e) => {
            let text = e.to_string();
            eprintln!("refused to open on the full disk: {text}");
            assert!(text.contains("No space left"), "{text}");
        }
    }
    std::fs::remove_file(&ballast).expect("free space");
    let store = MessageStore::open(cfg).expect("recover once space is freed");
    check(&store, &acked);
    let r = put(&store, "T1", 0).expect("accepted");
    assert_eq!(
        r.queue_offset,
        acked.iter().filter(|(t, _)| t == "T1").count() as i64
    );
    store.shutdown().expect("shutdown");
    drop(store);
    drop(fs);
}

/// Index writes on a real full disk: sends still go through (the index follows behind the
/// writer), the indexer's writes fail and it retries, and once space is freed it reopens its
/// database and catches up by itself: every message is found by key, those sent while the
/// disk was full too.
#[test]
fn the_index_catches_up_by_itself_once_a_full_disk_has_room_again() {
    use rocketraft_common::consts::property;
    let Some(fs) = Tmpfs::mount_or_skip("6m") else {
        return;
    };
    let cfg = full_disk_config(&fs.dir.join("store"), 1 << 20);
    let store = MessageStore::open(cfg).expect("open");
    let keyed = |i: usize| {
        let mut m = Message::new("K", vec![b'k'; 200]);
        m.set_property(property::KEYS, format!("key-{i}"));
        BrokerMessage::new(m, 0)
    };
    let mut sent = 0;
    while sent < 10 {
        store.put_message_blocking(keyed(sent)).expect("put");
        sent += 1;
    }
    let index = store.message_index().expect("the index is on");
    assert!(index.wait_caught_up(Duration::from_secs(10)));
    let ballast = fs.dir.join("ballast");
    fill_disk(&ballast);
    // The segment is preallocated and the ConsumeQueue's blocks reserved: sends go on; the
    // index cannot write.
    let errors_before = index.stats().errors;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while index.stats().errors == errors_before {
        match store.put_message_blocking(keyed(sent)) {
            Ok(_) => sent += 1,
            Err(e) => panic!("a send refused before the index failed: {e}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the index never failed on the full disk ({sent} sent)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        index.progress() < store.max_phy_offset(),
        "behind while full"
    );
    std::fs::remove_file(&ballast).expect("free space");
    assert!(
        index.wait_caught_up(Duration::from_secs(20)),
        "the index caught up once space was freed (progress {}, end {})",
        index.progress(),
        store.max_phy_offset()
    );
    for i in 0..sent {
        let found = store
            .query_by_key("K", &format!("key-{i}"), 32, 0, i64::MAX)
            .expect("query")
            .expect("the index is on");
        assert_eq!(found.messages.len(), 1, "key-{i} of {sent}");
    }
    store.shutdown().expect("shutdown");
    drop(store);
    drop(fs);
}
