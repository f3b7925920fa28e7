//! What POP, timers and transactions share: their state is a log of records in a system topic
//! (replicated with the CommitLog), replayed into memory by the broker that serves them, once per
//! master epoch (at start, and again after becoming master of a newer epoch).

use std::sync::atomic::{AtomicI64, Ordering};

use rocketraft_common::message::{self, MessageExt};

use crate::ha::AckError;
use crate::store::GetMessageStatus;
use crate::BrokerInner;

/// The epoch this broker serves writes in: 0 without controller mode, the master epoch on a
/// master holding its lease, [`AckError::NotMaster`] on a slave or a master without a lease.
pub fn serving_epoch(inner: &BrokerInner) -> Result<i64, AckError> {
    match &inner.ha {
        None => Ok(0),
        Some(ha) => ha.check_writable().map(|()| ha.master_epoch() as i64),
    }
}

/// Calls `each(queue offset, message)` for every message of queue 0 of `topic`, in order.
pub fn scan(inner: &BrokerInner, topic: &str, mut each: impl FnMut(i64, &MessageExt)) {
    let store = &inner.store;
    let (mut offset, max) = (
        store.get_min_offset_in_queue(topic, 0),
        store.get_max_offset_in_queue(topic, 0),
    );
    while offset < max {
        let r = store.get_messages("", topic, 0, offset, 256, 4 << 20, &|_| true);
        if r.status != GetMessageStatus::Found {
            break;
        }
        for (rec, off) in r.messages.iter().zip(&r.message_queue_offsets) {
            match message::decode_message(rec) {
                Ok((m, _)) => each(*off, &m),
                Err(e) => {
                    tracing::warn!(topic, offset = off, error = %e, "undecodable record skipped")
                }
            }
        }
        offset = r.next_begin_offset;
    }
}

/// The offsets a marker topic holds (queue 0, one decimal offset per message body: timer done
/// markers, transaction op records); unreadable bodies are skipped.
pub fn offsets_in(inner: &BrokerInner, topic: &str) -> std::collections::HashSet<i64> {
    let mut offsets = std::collections::HashSet::new();
    scan(inner, topic, |_, m| {
        if let Ok(o) = String::from_utf8_lossy(&m.message.body)
            .trim()
            .parse::<i64>()
        {
            offsets.insert(o);
        }
    });
    offsets
}

/// Runs a replay once per serving epoch.
pub struct ReplayGate {
    replayed_for: AtomicI64,
    lock: tokio::sync::Mutex<()>,
}

impl Default for ReplayGate {
    fn default() -> Self {
        ReplayGate {
            replayed_for: AtomicI64::new(-1),
            lock: tokio::sync::Mutex::new(()),
        }
    }
}

impl ReplayGate {
    /// Whether the replay ran for the epoch this broker serves now (false on a slave).
    pub fn is_current(&self, inner: &BrokerInner) -> bool {
        serving_epoch(inner).is_ok_and(|e| self.replayed_for.load(Ordering::Acquire) == e)
    }

    /// `Ok` once `replay(epoch)` ran for the current serving epoch (running it now if needed);
    /// `Err` when this broker does not serve writes (see [`serving_epoch`]).
    pub async fn ensure(
        &self,
        inner: &BrokerInner,
        replay: impl FnOnce(i64),
    ) -> Result<(), AckError> {
        let epoch = serving_epoch(inner)?;
        if self.replayed_for.load(Ordering::Acquire) == epoch {
            return Ok(());
        }
        let _one = self.lock.lock().await;
        if self.replayed_for.load(Ordering::Acquire) != epoch {
            replay(epoch);
            self.replayed_for.store(epoch, Ordering::Release);
        }
        Ok(())
    }
}
