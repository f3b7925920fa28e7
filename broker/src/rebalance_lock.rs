//! Queue locks of orderly consumers (RocketMQ's `RebalanceLockManager`): LOCK_BATCH_MQ (41) and
//! UNLOCK_BATCH_MQ (42).
//!
//! An orderly push consumer (`MessageListenerOrderly`) consumes a queue only while it holds the
//! queue's lock on the broker, so that one client of a group at a time consumes it in order.
//! A lock belongs to one client id per (group, queue) and lives
//! [`crate::BrokerConfig::rebalance_lock_max_live_time_ms`] (RocketMQ's
//! `rocketmq.broker.rebalance.lockMaxLiveTime`, 60 s) from its holder's last lock request (the
//! client renews its locks every 20 s). A lock request for a queue locked by another live client
//! leaves it out of the answer; an expired lock goes to whoever asks. A client's locks are
//! released when it unlocks them, unregisters from the group, or its connection is forgotten.
//! Locks live in memory only, as in RocketMQ: after a restart or failover the clients lock again
//! at their next rebalance.

use std::collections::HashMap;

use parking_lot::Mutex;
use rocketraft_common::protocol::MessageQueue;

#[derive(Debug, Clone)]
struct LockEntry {
    client_id: String,
    last_update_ms: i64,
}

impl LockEntry {
    fn expired(&self, now_ms: i64, max_live_ms: i64) -> bool {
        now_ms.saturating_sub(self.last_update_ms) > max_live_ms
    }
}

/// The lock table: group -> queue -> holder.
#[derive(Default)]
pub struct RebalanceLockManager {
    table: Mutex<HashMap<String, HashMap<MessageQueue, LockEntry>>>,
}

impl RebalanceLockManager {
    /// Locks (or renews) each queue of `mqs` for `client_id` in `group` unless another client
    /// holds an unexpired lock on it; returns the queues `client_id` holds now.
    pub fn try_lock_batch(
        &self,
        group: &str,
        mqs: &[MessageQueue],
        client_id: &str,
        now_ms: i64,
        max_live_ms: i64,
    ) -> Vec<MessageQueue> {
        let mut table = self.table.lock();
        let locks = table.entry(group.to_string()).or_default();
        let mut held = Vec::with_capacity(mqs.len());
        for mq in mqs {
            match locks.get_mut(mq) {
                Some(entry) if entry.client_id == client_id => {
                    entry.last_update_ms = now_ms;
                    held.push(mq.clone());
                }
                Some(entry) if entry.expired(now_ms, max_live_ms) => {
                    tracing::info!(
                        group,
                        topic = %mq.topic,
                        queue = mq.queue_id,
                        old = %entry.client_id,
                        new = client_id,
                        "an expired queue lock goes to another client"
                    );
                    *entry = LockEntry {
                        client_id: client_id.to_string(),
                        last_update_ms: now_ms,
                    };
                    held.push(mq.clone());
                }
                Some(entry) => {
                    tracing::debug!(
                        group,
                        topic = %mq.topic,
                        queue = mq.queue_id,
                        holder = %entry.client_id,
                        asking = client_id,
                        "queue locked by another client"
                    );
                }
                None => {
                    locks.insert(
                        mq.clone(),
                        LockEntry {
                            client_id: client_id.to_string(),
                            last_update_ms: now_ms,
                        },
                    );
                    held.push(mq.clone());
                }
            }
        }
        held.sort();
        held.dedup();
        held
    }

    /// Releases the locks of `mqs` that `client_id` holds in `group`; others' stay.
    pub fn unlock_batch(&self, group: &str, mqs: &[MessageQueue], client_id: &str) {
        let mut table = self.table.lock();
        let Some(locks) = table.get_mut(group) else {
            return;
        };
        for mq in mqs {
            if locks.get(mq).is_some_and(|e| e.client_id == client_id) {
                locks.remove(mq);
            }
        }
        if locks.is_empty() {
            table.remove(group);
        }
    }

    /// Releases every lock `client_id` holds in `group` (the client left the group).
    pub fn release_client(&self, group: &str, client_id: &str) -> usize {
        let mut table = self.table.lock();
        let Some(locks) = table.get_mut(group) else {
            return 0;
        };
        let before = locks.len();
        locks.retain(|_, e| e.client_id != client_id);
        let released = before - locks.len();
        if locks.is_empty() {
            table.remove(group);
        }
        released
    }

    /// Releases every lock whose holder `is_member` no longer counts in its group, and forgets
    /// locks expired for longer than `max_live_ms` more (housekeeping).
    pub fn retain_members(
        &self,
        is_member: impl Fn(&str, &str) -> bool,
        now_ms: i64,
        max_live_ms: i64,
    ) -> usize {
        let mut table = self.table.lock();
        let mut released = 0;
        for (group, locks) in table.iter_mut() {
            let before = locks.len();
            locks.retain(|_, e| {
                is_member(group, &e.client_id) && !e.expired(now_ms, max_live_ms.saturating_mul(2))
            });
            released += before - locks.len();
        }
        table.retain(|_, locks| !locks.is_empty());
        released
    }

    /// Whether no unexpired lock exists in `group` (RocketMQ's `isLockAllExpired`: a group with
    /// live locks consumes orderly, and its messages sent back go to the DLQ at once).
    pub fn is_lock_all_expired(&self, group: &str, now_ms: i64, max_live_ms: i64) -> bool {
        self.table
            .lock()
            .get(group)
            .is_none_or(|locks| locks.values().all(|e| e.expired(now_ms, max_live_ms)))
    }

    /// The holder of a queue's unexpired lock (admin tools and tests).
    pub fn holder(
        &self,
        group: &str,
        mq: &MessageQueue,
        now_ms: i64,
        max_live_ms: i64,
    ) -> Option<String> {
        self.table
            .lock()
            .get(group)?
            .get(mq)
            .filter(|e| !e.expired(now_ms, max_live_ms))
            .map(|e| e.client_id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mq(q: i32) -> MessageQueue {
        MessageQueue {
            topic: "T".into(),
            broker_name: "broker-a".into(),
            queue_id: q,
        }
    }

    const LIVE: i64 = 60_000;

    #[test]
    fn one_client_per_queue_until_unlock_or_expiry() {
        let m = RebalanceLockManager::default();
        assert_eq!(
            m.try_lock_batch("g", &[mq(0), mq(1)], "a", 0, LIVE),
            vec![mq(0), mq(1)]
        );
        // b gets only the queue nobody holds.
        assert_eq!(
            m.try_lock_batch("g", &[mq(1), mq(2)], "b", 10, LIVE),
            vec![mq(2)]
        );
        // Another group is independent.
        assert_eq!(m.try_lock_batch("h", &[mq(1)], "b", 10, LIVE), vec![mq(1)]);
        // a renews at 30 s; at 70 s its lock on 1 is still live (renewed), on 0 too.
        assert_eq!(
            m.try_lock_batch("g", &[mq(0), mq(1)], "a", 30_000, LIVE),
            vec![mq(0), mq(1)]
        );
        assert!(m
            .try_lock_batch("g", &[mq(1)], "b", 70_000, LIVE)
            .is_empty());
        // Unrenewed for more than the live time: b takes it.
        assert_eq!(
            m.try_lock_batch("g", &[mq(1)], "b", 90_001, LIVE),
            vec![mq(1)]
        );
        // Unlock by a non-holder changes nothing; by the holder frees the queue.
        m.unlock_batch("g", &[mq(1)], "a");
        assert_eq!(m.holder("g", &mq(1), 90_002, LIVE).as_deref(), Some("b"));
        m.unlock_batch("g", &[mq(1)], "b");
        assert_eq!(m.holder("g", &mq(1), 90_002, LIVE), None);
    }

    #[test]
    fn leaving_releases_and_expiry_is_reported() {
        let m = RebalanceLockManager::default();
        m.try_lock_batch("g", &[mq(0), mq(1)], "a", 0, LIVE);
        m.try_lock_batch("g", &[mq(2)], "b", 0, LIVE);
        assert!(!m.is_lock_all_expired("g", 1, LIVE));
        assert_eq!(m.release_client("g", "a"), 2);
        assert_eq!(m.try_lock_batch("g", &[mq(0)], "c", 2, LIVE), vec![mq(0)]);
        // b's connection is gone: housekeeping releases its lock.
        assert_eq!(m.retain_members(|_, c| c != "b", 3, LIVE), 1);
        assert_eq!(m.holder("g", &mq(2), 4, LIVE), None);
        assert!(m.is_lock_all_expired("g", 2 + LIVE + 1, LIVE));
        assert!(m.is_lock_all_expired("nobody", 0, LIVE));
    }
}
