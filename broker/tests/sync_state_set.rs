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
