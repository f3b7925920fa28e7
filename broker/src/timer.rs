//! Delayed and timed delivery (RocketMQ's timer messages and the 18 legacy delay levels), with
//! the timers in the CommitLog.
//!
//! - A send carrying `TIMER_DELIVER_MS`, `TIMER_DELAY_SEC`, `TIMER_DELAY_MS` or `DELAY` (level
//!   1..=18) due in the future is stored in `rmq_sys_wheel_timer` (queue 0) instead of its topic,
//!   with `REAL_TOPIC`, `REAL_QID` and `TIMER_OUT_MS` (the delivery time) in its properties. The
//!   send answers once that record is durable (and replicated, in controller mode), so a timer
//!   survives restarts and failovers like any message. At most 3 days ahead.
//! - The master keeps the pending timers in memory (rebuilt from the timer topic and the
//!   `rmq_sys_timer_done` markers at start and on becoming master) and, every 100 ms, stores
//!   each due message in its real topic and queue, then a done marker. A crash between the two
//!   delivers twice, never zero times.
//! - **Rolling** (RocketMQ's timer roll): a pending timer keeps the CommitLog segment it is
//!   stored in from being deleted (the retention pin). When retention wants that segment gone
//!   (it expired, or the disk is short of space), the master stores the timer again at the head
//!   of the log, with `TIMER_ROLLED_FROM` naming the record it replaces and `TIMER_ROLL_TIMES`
//!   counting the rolls. One record does both, so a crash leaves either the old timer or the new
//!   one pending, never both and never neither. A recall handle made before a roll still works.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rocketraft_common::consts::property;
use rocketraft_common::message::Message;
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::Refusal;

use crate::store::BrokerMessage;
use crate::BrokerInner;

pub const TIMER_TOPIC: &str = "rmq_sys_wheel_timer";
pub const TIMER_DONE_TOPIC: &str = "rmq_sys_timer_done";
/// The delivery time of a message waiting in the timer topic.
pub const TIMER_OUT_MS: &str = "TIMER_OUT_MS";
/// On a rolled timer record: the timer topic offset of the record it replaces.
pub const TIMER_ROLLED_FROM: &str = "TIMER_ROLLED_FROM";
/// On a rolled timer record: how many times the timer was rolled (RocketMQ's name).
pub const TIMER_ROLL_TIMES: &str = "TIMER_ROLL_TIMES";
/// RocketMQ's `timerMaxDelaySec`: 3 days.
pub const MAX_DELAY_MS: i64 = 3 * 24 * 3600 * 1000;
/// `messageDelayLevel`: "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h".
pub const DELAY_LEVELS_MS: [i64; 18] = [
    1_000, 5_000, 10_000, 30_000, 60_000, 120_000, 180_000, 240_000, 300_000, 360_000, 420_000,
    480_000, 540_000, 600_000, 1_200_000, 1_800_000, 3_600_000, 7_200_000,
];

fn illegal(why: String) -> Refusal {
    Refusal::new(response_code::MESSAGE_ILLEGAL, why)
}

/// When a message asks to be delivered (`None`: at once).
pub fn delivery_time(message: &Message, now: i64) -> Result<Option<i64>, Refusal> {
    let parse = |key: &str| -> Result<Option<i64>, Refusal> {
        match message
            .property(key)
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| illegal(format!("{key} = {v:?} is not a number"))),
        }
    };
    let at = if let Some(ms) = parse(property::TIMER_DELIVER_MS)? {
        Some(ms)
    } else if let Some(s) = parse(property::TIMER_DELAY_SEC)? {
        Some(now.saturating_add(s.saturating_mul(1000)))
    } else if let Some(ms) = parse(property::TIMER_DELAY_MS)? {
        Some(now.saturating_add(ms))
    } else if let Some(level) = parse(property::DELAY_TIME_LEVEL)? {
        match level {
            l if l <= 0 => None,
            l => Some(now + DELAY_LEVELS_MS[(l.min(18) - 1) as usize]),
        }
    } else {
        None
    };
    match at {
        Some(t) if t > now + MAX_DELAY_MS => Err(illegal(format!(
            "delivery {} ms ahead exceeds the 3-day maximum of timer messages",
            t - now
        ))),
        Some(t) if t > now => Ok(Some(t)),
        _ => Ok(None),
    }
}

/// Turns a delayed message into its timer record.
pub fn to_timer(mut msg: BrokerMessage, deliver_at: i64) -> BrokerMessage {
    let real_topic = std::mem::replace(&mut msg.message.topic, TIMER_TOPIC.to_string());
    msg.message.set_property(property::REAL_TOPIC, real_topic);
    msg.message
        .set_property(property::REAL_QUEUE_ID, msg.queue_id.to_string());
    msg.message
        .set_property(TIMER_OUT_MS, deliver_at.to_string());
    msg.queue_id = 0;
    msg
}

/// The handle that recalls a delayed message (RocketMQ's `RecallMessageHandle.HandleV1`,
/// `v1 topic brokerName deliveryTime messageId`, plus the timer topic offset) in URL-safe base64.
pub fn recall_handle(
    topic: &str,
    broker_name: &str,
    deliver_at: i64,
    message_id: &str,
    timer_offset: i64,
) -> String {
    rocketraft_common::base64::encode_url_safe(
        format!("v1 {topic} {broker_name} {deliver_at} {message_id} {timer_offset}").as_bytes(),
    )
}

/// Why a recall handle does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecallHandleError {
    #[error("the recall handle is not base64")]
    NotBase64,
    #[error("the recall handle is not UTF-8 inside")]
    NotUtf8,
    #[error("bad delivery time {0:?} in the recall handle")]
    BadDeliveryTime(String),
    #[error("bad offset {0:?} in the recall handle")]
    BadOffset(String),
    #[error("the recall handle is not a v1 handle of this broker")]
    NotV1,
}

/// A decoded recall handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecallHandle {
    pub topic: String,
    pub broker_name: String,
    pub deliver_at: i64,
    pub message_id: String,
    pub timer_offset: i64,
}

impl RecallHandle {
    /// Decodes a handle made by [`recall_handle`]; a clear reason otherwise.
    pub fn parse(handle: &str) -> Result<RecallHandle, RecallHandleError> {
        let bytes =
            rocketraft_common::base64::decode(handle).ok_or(RecallHandleError::NotBase64)?;
        let text = String::from_utf8(bytes).map_err(|_| RecallHandleError::NotUtf8)?;
        let f: Vec<&str> = text.split(' ').collect();
        match f.as_slice() {
            ["v1", topic, broker, at, id, offset] => Ok(RecallHandle {
                topic: topic.to_string(),
                broker_name: broker.to_string(),
                deliver_at: at
                    .parse()
                    .map_err(|_| RecallHandleError::BadDeliveryTime(at.to_string()))?,
                message_id: id.to_string(),
                timer_offset: offset
                    .parse()
                    .map_err(|_| RecallHandleError::BadOffset(offset.to_string()))?,
            }),
            _ => Err(RecallHandleError::NotV1),
        }
    }
}

/// What a replay of the timer topics found.
struct Replayed {
    /// (delivery time, timer topic offset) of every pending timer -> its real topic.
    pending: Pending,
    /// Replaced record -> the record that replaced it.
    rolled: HashMap<i64, i64>,
    delivered: usize,
}

/// (delivery time, timer topic queue offset) of a pending timer -> the topic its message goes
/// to (`rocketmq_timing_messages` is per topic).
type Pending = BTreeMap<(i64, i64), Arc<str>>;

/// The pending timers of a broker.
pub struct TimerService {
    pending: Mutex<Pending>,
    /// Rolled timers: the timer topic offset of a replaced record -> the offset of the record
    /// that replaced it (for recall handles made before the roll).
    rolled: Mutex<HashMap<i64, i64>>,
    replay: crate::replay::ReplayGate,
    /// Held while delivering and while recalling, so a recall never races a delivery.
    op_lock: tokio::sync::Mutex<()>,
}

impl Default for TimerService {
    fn default() -> Self {
        TimerService {
            pending: Mutex::new(BTreeMap::new()),
            rolled: Mutex::new(HashMap::new()),
            replay: crate::replay::ReplayGate::default(),
            op_lock: tokio::sync::Mutex::new(()),
        }
    }
}

impl TimerService {
    /// Retention pin: the lowest CommitLog offset of a pending timer message. From memory once
    /// this broker has replayed the timers for its serving epoch, from a fresh replay of the
    /// timer topics otherwise (a slave, or a master before its first round): a failover must
    /// find every pending timer.
    pub fn lowest_needed(&self, inner: &BrokerInner) -> Option<i64> {
        let first = if self.replay.is_current(inner) {
            self.pending.lock().keys().map(|(_, o)| *o).min()?
        } else {
            Self::replay_pending(inner)
                .pending
                .keys()
                .map(|(_, o)| *o)
                .min()?
        };
        inner
            .store
            .get_commit_log_offset_in_queue(TIMER_TOPIC, 0, first)
    }

    /// Records a timer stored at `offset` of the timer topic, for a message of `topic`.
    pub fn scheduled(&self, deliver_at: i64, offset: i64, topic: &str) {
        self.pending
            .lock()
            .insert((deliver_at, offset), Arc::from(topic));
    }

    /// The pending timers the timer topics describe.
    fn replay_pending(inner: &BrokerInner) -> Replayed {
        let done = crate::replay::offsets_in(inner, TIMER_DONE_TOPIC);
        let mut pending = BTreeMap::new();
        let mut rolled = HashMap::new();
        crate::replay::scan(inner, TIMER_TOPIC, |off, m| {
            if let Some(from) = m
                .message
                .property(TIMER_ROLLED_FROM)
                .and_then(|v| v.parse::<i64>().ok())
            {
                rolled.insert(from, off);
            }
            if done.contains(&off) {
                return;
            }
            if let Some(at) = m
                .message
                .property(TIMER_OUT_MS)
                .and_then(|v| v.parse::<i64>().ok())
            {
                let topic = m.message.property(property::REAL_TOPIC).unwrap_or("");
                pending.insert((at, off), Arc::from(topic));
            }
        });
        // A rolled record is replaced by its copy (stored later, so seen after it).
        pending.retain(|(_, off), _| !rolled.contains_key(off));
        Replayed {
            pending,
            rolled,
            delivered: done.len(),
        }
    }

    async fn ensure_rebuilt(&self, inner: &BrokerInner) -> bool {
        self.replay
            .ensure(inner, |epoch| {
                let r = Self::replay_pending(inner);
                tracing::info!(
                    pending = r.pending.len(),
                    delivered = r.delivered,
                    rolled = r.rolled.len(),
                    epoch,
                    "timers rebuilt from the timer topic"
                );
                self.pending.lock().extend(r.pending);
                self.rolled.lock().extend(r.rolled);
            })
            .await
            .is_ok()
    }

    /// The timer topic offset a timer first stored at `offset` has now (after its rolls).
    fn current_offset(&self, mut offset: i64) -> i64 {
        let rolled = self.rolled.lock();
        // Each roll stores a later record, so the chain ends.
        while let Some(next) = rolled.get(&offset) {
            offset = *next;
        }
        offset
    }

    /// Stores again, at the head of the log, every pending timer whose record lies below the
    /// CommitLog offset `limit`, so that retention can delete the segments below it (see the
    /// module documentation). Returns how many timers were rolled; stops at the first failure.
    pub async fn roll_below(&self, inner: &BrokerInner, limit: i64) -> usize {
        if !self.ensure_rebuilt(inner).await {
            return 0;
        }
        let _one = self.op_lock.lock().await;
        let store = &inner.store;
        let below: Vec<(i64, i64)> = self
            .pending
            .lock()
            .keys()
            .filter(|(_, off)| {
                store
                    .get_commit_log_offset_in_queue(TIMER_TOPIC, 0, *off)
                    .is_some_and(|phy| phy < limit)
            })
            .copied()
            .collect();
        let mut rolled = 0;
        for (at, offset) in below {
            match self.roll(inner, offset).await {
                Ok(Some(new_offset)) => {
                    let mut pending = self.pending.lock();
                    if let Some(topic) = pending.remove(&(at, offset)) {
                        pending.insert((at, new_offset), topic);
                    }
                    drop(pending);
                    self.rolled.lock().insert(offset, new_offset);
                    rolled += 1;
                }
                Ok(None) => {}
                Err(Refusal { code, remark: why }) => {
                    tracing::warn!(offset, code, %why, "cannot roll a timer; will retry");
                    break;
                }
            }
        }
        if rolled > 0 {
            tracing::info!(
                rolled,
                below = limit,
                "pending timers stored again at the head of the log so that retention can delete the segments they were in"
            );
        }
        rolled
    }

    /// Stores a copy of the timer record at `offset` that replaces it; its new offset, or
    /// `None` when the record is gone.
    async fn roll(&self, inner: &BrokerInner, offset: i64) -> Result<Option<i64>, Refusal> {
        let Some(m) = inner
            .store
            .get_commit_log_offset_in_queue(TIMER_TOPIC, 0, offset)
            .and_then(|phy| inner.store.look_message_by_offset(phy))
        else {
            return Ok(None);
        };
        let mut msg = m.message.clone();
        let times = msg
            .property(TIMER_ROLL_TIMES)
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0);
        msg.set_property(TIMER_ROLL_TIMES, (times + 1).to_string());
        msg.set_property(TIMER_ROLLED_FROM, offset.to_string());
        let mut bm = BrokerMessage::new(msg, 0);
        bm.sys_flag = m.sys_flag;
        bm.born_timestamp = m.born_timestamp;
        bm.born_host = m.born_host;
        bm.reconsume_times = m.reconsume_times;
        let put = inner.store_state_copy(vec![bm]).await?;
        Ok(Some(put.queue_offset))
    }

    /// Delivers every due timer; returns how many.
    pub async fn deliver_due(&self, inner: &BrokerInner) -> usize {
        if !self.ensure_rebuilt(inner).await {
            return 0;
        }
        let _one = self.op_lock.lock().await;
        let now = rocketraft_common::time::now_ms();
        let due: Vec<(i64, i64)> = self
            .pending
            .lock()
            .range(..(now + 1, 0))
            .map(|(k, _)| *k)
            .collect();
        let mut delivered = 0;
        for (at, offset) in due {
            match self.deliver(inner, offset).await {
                Ok(()) => {
                    if let Some(topic) = self.pending.lock().remove(&(at, offset)) {
                        inner.metrics.timer_dequeued(&topic);
                    }
                    delivered += 1;
                }
                Err(Refusal { code, remark: why }) => {
                    tracing::warn!(offset, code, %why, "timer delivery failed; will retry");
                    break;
                }
            }
        }
        delivered
    }

    /// Stores the timer message at `offset` of the timer topic in its real topic, then its done
    /// marker.
    async fn deliver(&self, inner: &BrokerInner, offset: i64) -> Result<(), Refusal> {
        let stored = inner
            .store
            .get_commit_log_offset_in_queue(TIMER_TOPIC, 0, offset)
            .and_then(|phy| inner.store.look_message_by_offset(phy));
        if let Some(m) = stored {
            let mut msg = m.message.clone();
            let topic = msg
                .remove_property(property::REAL_TOPIC)
                .ok_or_else(|| Refusal::system_error("timer record without REAL_TOPIC"))?;
            let queue_id: i32 = msg
                .remove_property(property::REAL_QUEUE_ID)
                .and_then(|q| q.parse().ok())
                .unwrap_or(0);
            msg.remove_property(TIMER_OUT_MS);
            msg.remove_property(TIMER_ROLLED_FROM);
            msg.remove_property(TIMER_ROLL_TIMES);
            msg.topic = topic.clone();
            crate::pop::ensure_system_topic(inner, &topic, queue_id + 1)?;
            let mut bm = BrokerMessage::new(msg, queue_id);
            bm.sys_flag = m.sys_flag;
            bm.born_timestamp = m.born_timestamp;
            bm.born_host = m.born_host;
            bm.reconsume_times = m.reconsume_times;
            inner.store_durably(vec![bm]).await?;
        } else {
            tracing::warn!(
                offset,
                "timer record no longer in the store; marking it delivered"
            );
        }
        crate::pop::ensure_system_topic(inner, TIMER_DONE_TOPIC, 1)?;
        let marker = BrokerMessage::new(
            Message::new(TIMER_DONE_TOPIC, offset.to_string().into_bytes()),
            0,
        );
        inner.store_durably(vec![marker]).await?;
        Ok(())
    }

    /// RECALL_MESSAGE: the delayed message of `handle` is never delivered. Refused with
    /// NO_MESSAGE when it was already delivered or recalled, or the handle names another topic,
    /// broker set or message. Returns the message id.
    pub async fn recall(
        &self,
        inner: &BrokerInner,
        topic: &str,
        handle: &str,
    ) -> Result<String, Refusal> {
        if !self.ensure_rebuilt(inner).await {
            return Err(Refusal::new(
                response_code::SERVICE_NOT_AVAILABLE,
                "this broker is not a master: recall on the master",
            ));
        }
        let h = RecallHandle::parse(handle).map_err(|e| illegal(e.to_string()))?;
        if h.topic != topic || h.broker_name != inner.config.broker_name {
            return Err(illegal(format!(
                "the recall handle is for topic {} on broker set {}, not {topic} on {}",
                h.topic, h.broker_name, inner.config.broker_name
            )));
        }
        let _one = self.op_lock.lock().await;
        let timer_offset = self.current_offset(h.timer_offset);
        if !self
            .pending
            .lock()
            .contains_key(&(h.deliver_at, timer_offset))
        {
            return Err(Refusal::new(
                response_code::NO_MESSAGE,
                format!(
                    "message {} is not waiting to be delivered (already delivered or recalled)",
                    h.message_id
                ),
            ));
        }
        let stored = inner
            .store
            .get_commit_log_offset_in_queue(TIMER_TOPIC, 0, timer_offset)
            .and_then(|phy| inner.store.look_message_by_offset(phy));
        let matches = stored.as_ref().is_some_and(|m| {
            m.message.uniq_key() == Some(h.message_id.as_str())
                && m.message.property(property::REAL_TOPIC) == Some(topic)
        });
        if !matches {
            return Err(Refusal::new(
                response_code::NO_MESSAGE,
                format!(
                    "no delayed message {} of topic {topic} at the handle's offset",
                    h.message_id
                ),
            ));
        }
        crate::pop::ensure_system_topic(inner, TIMER_DONE_TOPIC, 1)?;
        let marker = BrokerMessage::new(
            Message::new(TIMER_DONE_TOPIC, timer_offset.to_string().into_bytes()),
            0,
        );
        inner.store_durably(vec![marker]).await?;
        self.pending.lock().remove(&(h.deliver_at, timer_offset));
        tracing::info!(topic, message_id = %h.message_id, "delayed message recalled");
        Ok(h.message_id)
    }

    /// Timers waiting (for admin tools and tests).
    pub fn pending_count(&self) -> usize {
        self.pending.lock().len()
    }

    /// Timers past their delivery time and not delivered yet at `now`, and how long the
    /// earliest of them is overdue in milliseconds (`rocketmq_timer_dequeue_lag` and
    /// `rocketmq_timer_dequeue_latency`).
    pub fn overdue(&self, now: i64) -> (usize, i64) {
        let pending = self.pending.lock();
        let mut due = pending.range(..(now + 1, 0));
        match due.next() {
            Some(((at, _), _)) => (1 + due.count(), now - at),
            None => (0, 0),
        }
    }

    /// Timers waiting, by the topic their messages go to (`rocketmq_timing_messages`).
    pub fn pending_by_topic(&self) -> BTreeMap<Arc<str>, usize> {
        let mut counts = BTreeMap::new();
        for topic in self.pending.lock().values() {
            *counts.entry(topic.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// Whether the pending timers in memory are this broker's for its serving epoch.
    pub fn replayed(&self, inner: &BrokerInner) -> bool {
        self.replay.is_current(inner)
    }
}

/// Runs delivery rounds every 100 ms until aborted, and every second rolls the timers that
/// keep retention from deleting a segment.
pub async fn timer_loop(inner: Arc<BrokerInner>) {
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round = 0u64;
    loop {
        ticker.tick().await;
        round += 1;
        let n = inner.timers.deliver_due(&inner).await;
        if n > 0 {
            tracing::debug!(delivered = n, "timer round");
        }
        if round.is_multiple_of(10) {
            if let Some(limit) = inner.store.retention_wanted() {
                inner.timers.roll_below(&inner, limit).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(key: &str, value: &str) -> Message {
        let mut m = Message::new("T", "b");
        m.set_property(key, value);
        m
    }

    #[test]
    fn delivery_times_follow_the_properties() {
        let now = 1_000_000;
        assert_eq!(
            delivery_time(&msg(property::TIMER_DELAY_MS, "1500"), now).ok(),
            Some(Some(now + 1500))
        );
        assert_eq!(
            delivery_time(&msg(property::TIMER_DELAY_SEC, "2"), now).ok(),
            Some(Some(now + 2000))
        );
        assert_eq!(
            delivery_time(&msg(property::TIMER_DELIVER_MS, "1000500"), now).ok(),
            Some(Some(now + 500))
        );
        assert_eq!(
            delivery_time(&msg(property::DELAY_TIME_LEVEL, "3"), now).ok(),
            Some(Some(now + 10_000))
        );
        assert_eq!(
            delivery_time(&msg(property::DELAY_TIME_LEVEL, "99"), now).ok(),
            Some(Some(now + 7_200_000))
        );
        assert_eq!(
            delivery_time(&msg(property::DELAY_TIME_LEVEL, "0"), now).ok(),
            Some(None)
        );
        assert_eq!(
            delivery_time(&msg(property::TIMER_DELIVER_MS, "5"), now).ok(),
            Some(None),
            "a time in the past delivers at once"
        );
        assert!(delivery_time(&msg(property::TIMER_DELAY_SEC, "x"), now).is_err());
        assert!(
            delivery_time(&msg(property::TIMER_DELAY_SEC, "300000"), now).is_err(),
            "more than 3 days"
        );
    }
}
