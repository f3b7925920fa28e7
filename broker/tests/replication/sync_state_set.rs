//! Issue 13, hole 1: a SyncStateSet change whose outcome the master does not know must keep the
//! union of the sets counted until the controller's state is known to have moved past the
//! epoch the change was derived from. Before the fix, a refused or timed-out change dropped the
//! pending set at once, so the master acknowledged with a smaller set than the controller's.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rocketraft_broker::ha::{AckError, AckPolicy, HaState};
use rocketraft_broker::store::{BrokerMessage, MessageStore, StoreConfig};
use rocketraft_common::message::Message;

fn policy() -> AckPolicy {
    AckPolicy {
        min_in_sync_replicas: 1,
        all_ack_in_sync_state_set: true,
        in_sync_replicas: 1,
        timeout: Duration::from_millis(200),
    }
}

#[tokio::test]
async fn a_pending_change_is_counted_until_a_newer_epoch_is_seen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MessageStore::open(StoreConfig {
        commitlog_segment_size: 64 * 1024,
        pretouch: false,
        ..StoreConfig::new(dir.path())
    })
    .expect("store");
    let ha = HaState::new(store.clone());
    // Master 1 of epoch 1 with SyncStateSet {1} (epoch 1).
    ha.set_master(1, "127.0.0.1:1".into(), 1, 1, BTreeSet::from([1]));
    ha.renew_lease(Instant::now() + Duration::from_secs(60));
    let put = store
        .put_message(BrokerMessage::new(Message::new("T", "m"), 0))
        .await
        .expect("put");
    let end = put.physical_offset + put.wrote_bytes as i64;
    ha.wait_for_acks(end, &policy())
        .await
        .expect("alone in its set, the master acks");

    // The master proposes {1, 2} from epoch 1; the answer is lost (or refused by a controller
    // that saw the first copy commit). Until it learns better, broker 2 must hold every write.
    ha.add_pending(1, &BTreeSet::from([1, 2]));
    match ha.wait_for_acks(end, &policy()).await {
        Err(AckError::Timeout { acked: 1, need: 2 }) => {}
        other => panic!("the union {{1, 2}} must be counted: {other:?}"),
    }
    // A read that shows the same epoch settles nothing.
    ha.update_sync_state_set(1, BTreeSet::from([1]));
    assert_eq!(ha.pending(), Some(BTreeSet::from([1, 2])));
    // Another proposal from the same epoch widens the union; one from an older epoch is ignored.
    ha.add_pending(1, &BTreeSet::from([1, 3]));
    ha.add_pending(0, &BTreeSet::from([1, 4]));
    assert_eq!(ha.pending(), Some(BTreeSet::from([1, 2, 3])));
    // The controller's epoch moved (the change, or a fence, committed): settled.
    ha.update_sync_state_set(2, BTreeSet::from([1]));
    assert_eq!(ha.pending(), None);
    ha.wait_for_acks(end, &policy())
        .await
        .expect("settled to {1}: the master acks alone again");
    store.shutdown().expect("shutdown");
}

fn open_store(dir: &std::path::Path) -> std::sync::Arc<MessageStore> {
    MessageStore::open(StoreConfig {
        commitlog_segment_size: 64 * 1024,
        pretouch: false,
        ..StoreConfig::new(dir)
    })
    .expect("store")
}

/// Issue 22: a master that asked for every caught-up slave at once kept proposing the same set
/// when the controller refused it for one slave (then: a slave cut off from the leader, as in a
/// majority-ring partition) and never reached `min_in_sync_replicas` (24 s without an
/// acknowledged send in a harness run). It adds one slave per change and rotates, so a refusal
/// of one slave leaves the next proposal to the other.
/// A master (id 1, SyncStateSet {1}, one message written) serving its HA port, and slaves 2 and
/// 3 following it over loopback (each task reconnects until aborted).
struct MasterAndSlaves {
    _dirs: Vec<tempfile::TempDir>,
    store: std::sync::Arc<MessageStore>,
    ha: std::sync::Arc<HaState>,
    server: tokio::task::JoinHandle<()>,
    followers: Vec<tokio::task::JoinHandle<()>>,
}

impl MasterAndSlaves {
    async fn start() -> MasterAndSlaves {
        let dirs: Vec<_> = (0..3)
            .map(|_| tempfile::tempdir().expect("tempdir"))
            .collect();
        let store = open_store(dirs[0].path());
        let ha = HaState::new(store.clone());
        ha.set_master(1, "127.0.0.1:1".into(), 1, 1, BTreeSet::from([1]));
        ha.renew_lease(Instant::now() + Duration::from_secs(60));
        store
            .put_message(BrokerMessage::new(Message::new("T", "m"), 0))
            .await
            .expect("put");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let ha_addr = listener.local_addr().expect("addr").to_string();
        let server = tokio::spawn(rocketraft_broker::ha::serve(listener, ha.clone()));
        let mut followers = Vec::new();
        for (id, dir) in [(2i64, &dirs[1]), (3, &dirs[2])] {
            let slave = HaState::new(open_store(dir.path()));
            slave.set_slave(1, "127.0.0.1:1".into(), 1, 1, BTreeSet::from([1]));
            let addr = ha_addr.clone();
            followers.push(tokio::spawn(async move {
                loop {
                    let _ = rocketraft_broker::ha::follow_once(&slave, id, &addr).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }));
        }
        MasterAndSlaves {
            _dirs: dirs,
            store,
            ha,
            server,
            followers,
        }
    }

    /// Cuts the slaves off (their connections close).
    fn cut_slaves(&mut self) {
        for f in self.followers.drain(..) {
            f.abort();
        }
    }

    fn stop(mut self) {
        self.cut_slaves();
        self.server.abort();
        self.store.shutdown().expect("shutdown");
    }
}

#[tokio::test]
async fn caught_up_slaves_join_one_per_change_in_rotation() {
    let set = MasterAndSlaves::start().await;
    let ha = set.ha.clone();
    let max_gap = Duration::from_secs(2);
    // Both slaves catch up; each proposal then names exactly one of them, alternately.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = BTreeSet::new();
    while seen.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "both slaves never became candidates: {seen:?}"
        );
        if let Some((master, _, _, want)) = ha.desired_sync_state_set(max_gap, 1) {
            assert_eq!(master, 1);
            assert_eq!(want.len(), 2, "more than one slave joins at once: {want:?}");
            assert!(want.contains(&1), "{want:?}");
            seen.extend(want.into_iter().filter(|id| *id != 1));
            if seen.len() == 1 {
                // Wait until the other slave is a candidate too, then the rotation must pick
                // it within two proposals.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(seen, BTreeSet::from([2, 3]));
    // The controller accepted {1, 3}: the next proposal adds 2 alone.
    ha.update_sync_state_set(2, BTreeSet::from([1, 3]));
    let (_, _, sss_epoch, want) = ha
        .desired_sync_state_set(max_gap, 1)
        .expect("slave 2 still wants in");
    assert_eq!(sss_epoch, 2);
    assert_eq!(want, BTreeSet::from([1, 2, 3]));
    set.stop();
}

/// Issue 22: a master cut off from both slaves with `min_in_sync_replicas = 2` keeps them in
/// its SyncStateSet (dropping them would acknowledge nothing more and leave the controllers no
/// one to elect in its place) and reports that it cannot gather its in-sync replicas; with
/// `min_in_sync_replicas = 1` it shrinks to itself as before.
#[tokio::test]
async fn a_master_cut_off_from_its_slaves_keeps_min_in_sync_members_and_says_so() {
    let mut set = MasterAndSlaves::start().await;
    let ha = set.ha.clone();
    let window = Duration::from_millis(300);
    let everyone = BTreeSet::from([1, 2, 3]);
    ha.update_sync_state_set(2, everyone.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    while ha.snapshot().slaves.iter().filter(|s| s.in_sync).count() < 2
        || ha.in_sync_unreachable(window, 3, Duration::ZERO)
    {
        assert!(Instant::now() < deadline, "the slaves never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!ha.in_sync_unreachable(window, 2, Duration::ZERO));
    assert!(
        !ha.in_sync_unreachable(window, 2, Duration::from_secs(60)),
        "reported within its grace period in office"
    );

    set.cut_slaves();
    let max_gap = Duration::from_millis(200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ha.in_sync_unreachable(window, 2, Duration::ZERO) {
        assert!(
            Instant::now() < deadline,
            "never reported its slaves unreachable"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(max_gap * 2).await;
    assert_eq!(
        ha.desired_sync_state_set(max_gap, 2),
        None,
        "shrank below min_in_sync_replicas"
    );
    assert_eq!(ha.snapshot().sync_state_set, everyone);
    let (_, _, _, want) = ha
        .desired_sync_state_set(max_gap, 1)
        .expect("with min_in_sync_replicas = 1 the master shrinks");
    assert_eq!(want, BTreeSet::from([1]));
    set.stop();
}
