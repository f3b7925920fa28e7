//! Replicas and retention, on real stores and a real HA connection: a slave whose log ends
//! below what its master still stores (the master deleted expired segments) starts over at the
//! master's first offset and catches up; so does a brand-new replica. Queue offsets go on from
//! the master's, and what the slave serves is byte for byte the master's.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocketraft_broker::ha::{follow_once, serve, HaState};
use rocketraft_broker::store::{BrokerMessage, GetMessageStatus, MessageStore, StoreConfig};
use rocketraft_common::message::Message;

const SEGMENT: u64 = 64 * 1024;

fn open_store(dir: &Path) -> Arc<MessageStore> {
    MessageStore::open(StoreConfig {
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

/// Follows `ha_addr` as broker 2 until the slave's log reaches `end` (then the session is
/// dropped), within 20 s.
async fn follow_until(slave: &Arc<MessageStore>, ha_addr: &str, end: i64) {
    let ha = HaState::new(slave.clone());
    ha.set_slave(1, "127.0.0.1:1".into(), 1, 1, BTreeSet::from([1]));
    let session = follow_once(&ha, 2, ha_addr);
    tokio::pin!(session);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::select! {
            r = &mut session => panic!("replication ended early: {r:?}"),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {
                if slave.max_phy_offset() >= end {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "slave at {} of {end} after 20 s",
                    slave.max_phy_offset()
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

    // An old slave holds the first few messages.
    put(&master, 20).await;
    let old = open_store(&dir.path().join("old"));
    follow_until(&old, &addr, master.max_phy_offset()).await;
    let old_end = old.max_phy_offset();
    assert!(old_end > 0 && old_end < SEGMENT as i64);

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

    // The old slave and a brand-new one both start over at the master's first offset.
    let fresh = open_store(&dir.path().join("fresh"));
    for (name, slave) in [("old", &old), ("fresh", &fresh)] {
        follow_until(slave, &addr, master.max_phy_offset()).await;
        assert_eq!(slave.min_phy_offset(), min, "{name}");
        assert_eq!(slave.max_phy_offset(), master.max_phy_offset(), "{name}");
        assert_eq!(slave.get_max_offset_in_queue("T", 0), cq_max, "{name}");
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
    server.abort();
}
