//! Lite topics on the broker ([`rocketraft_common::lite`]): a send to a parent topic of type
//! `LITE` names its lite topic in the `__LITE_TOPIC` property and is stored in that lite topic's
//! own queue, the LMQ `%LMQ%${parent}${lite}` (one queue, id 0), created by its first message.
//! Everything that names a topic (POP, ACK, PULL, offsets, the retry topic of a POP group) works
//! on an LMQ as on any topic: [`lmq_config`] answers for it while its parent is a LITE topic, so
//! a consumer group has its own offset and in-flight state per lite topic, and a FIFO group's
//! order gate (one queue) orders each lite topic on its own.
//!
//! **Lifecycle** (RocketMQ's `AbstractLiteLifecycleManager`): a LITE topic's
//! `lite.topic.expiration` (minutes, -1 never) says how long a lite topic may go without a
//! message; every `liteTtlCheckInterval` the master expires the lite topics past it (never one
//! whose last message is younger than `minLiteTTl`, and nothing in the first `minLiteTTl` after
//! start) through a record of the metadata log that every replica applies ([`LiteLifecycle`]):
//! the queue's entries go, every consumer group's offset of it is deleted and it stops counting
//! as a lite topic of the broker, so a message to it later starts it afresh (a subscription then
//! starts at its end). **Quota**: a send that would make one more lite topic than
//! `maxLmqConsumeQueueNum` is refused with LMQ_QUOTA_EXCEEDED (2017).

use rocketraft_common::consts::property;
use rocketraft_common::lite::{self, PROPERTY_LITE_TOPIC};
use rocketraft_common::TopicConfig;
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::Refusal;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::metalog::{ExpiredQueue, MetadataChange};
use crate::store::metadata::MetadataStore;
use crate::store::{BrokerMessage, MessageStore, StoreError};
use crate::topic::TopicConfigManager;
use crate::BrokerInner;

/// The configuration of an LMQ name whose parent is a LITE topic here; `None` otherwise.
pub fn lmq_config(topics: &TopicConfigManager, name: &str) -> Option<TopicConfig> {
    let (parent, _) = lite::parse_lmq(name)?;
    let parent = topics.get(parent)?;
    lite::lmq_config(name, &parent)
}

fn illegal(why: String) -> Refusal {
    Refusal::new(response_code::MESSAGE_ILLEGAL, why)
}

/// Properties that make a message delayed; a lite message is delivered at once.
const DELAY_KEYS: [&str; 4] = [
    property::TIMER_DELIVER_MS,
    property::TIMER_DELAY_SEC,
    property::TIMER_DELAY_MS,
    property::DELAY_TIME_LEVEL,
];

/// A send's messages routed to their lite topic's LMQ when `config` is a LITE topic: each
/// message names the same valid lite topic, is neither delayed nor transactional, and is
/// stored in queue 0 of the LMQ. Answers the queue id the messages go to. A message with a lite
/// topic sent to a topic of another type, or a message without one sent to a LITE topic, is
/// refused with MESSAGE_ILLEGAL, as RocketMQ refuses a message whose type its topic does not
/// accept.
pub fn route_send(
    config: &TopicConfig,
    sys_flag: i32,
    queue_id: i32,
    messages: &mut [BrokerMessage],
) -> Result<i32, Refusal> {
    let parent = lite::is_lite_parent(config);
    let mut lite_topic: Option<String> = None;
    for m in messages.iter() {
        let named = m.message.properties.get(PROPERTY_LITE_TOPIC);
        match (parent, named) {
            (false, None) => continue,
            (false, Some(l)) => {
                return Err(illegal(format!(
                    "topic[{}] is not of message type LITE; the lite topic {l:?} cannot be sent to it",
                    config.topic_name
                )))
            }
            (true, None) => {
                return Err(illegal(format!(
                    "topic[{}] is of message type LITE: a message sent to it needs a lite topic ({PROPERTY_LITE_TOPIC})",
                    config.topic_name
                )))
            }
            (true, Some(l)) => {
                lite::validate_lite_topic(l).map_err(|e| illegal(e.to_string()))?;
                if lite_topic.as_deref().is_some_and(|first| first != l) {
                    return Err(illegal(
                        "the messages of a batch must share one lite topic".to_string(),
                    ));
                }
                if DELAY_KEYS.iter().any(|k| m.message.properties.contains_key(*k))
                    || crate::transaction::is_prepared(&m.message, sys_flag)
                {
                    return Err(illegal(format!(
                        "a lite message (lite topic {l:?}) cannot be delayed or transactional"
                    )));
                }
                lite_topic = Some(l.clone());
            }
        }
    }
    let Some(lite_topic) = lite_topic else {
        return Ok(queue_id);
    };
    let lmq = lite::lmq_name(&config.topic_name, &lite_topic);
    if lmq.len() > rocketraft_common::topic::TOPIC_MAX_LENGTH {
        return Err(illegal(format!(
            "the queue name {lmq:?} of lite topic {lite_topic:?} is longer than {} characters",
            rocketraft_common::topic::TOPIC_MAX_LENGTH
        )));
    }
    for m in messages.iter_mut() {
        m.message.topic = lmq.clone();
        m.queue_id = 0;
    }
    Ok(0)
}

/// The metadata-store key prefix of expired lite topics: `lite/expired/{lmq}` -> the queue
/// offset it was cut at (i64 big-endian).
const EXPIRED_PREFIX: &str = "lite/expired/";

/// How many lite topics one expiry record carries at most.
const EXPIRY_BATCH: usize = 256;

/// Lite topics' expiry and quota on this broker.
///
/// **Expiry** goes through the metadata log ([`crate::metalog`], [`MetadataChange::ExpireLite`]):
/// the master's check finds the lite topics past their expiration and commits one record
/// naming each queue with the max offset it saw; every replica applies the record where it lies
/// in the CommitLog ([`LiteLifecycle::apply_expiry`]), so a failover neither brings an expired
/// lite topic's offsets back nor loses an expiry. Applying cuts the queue's entries below that
/// offset ([`MessageStore::expire_queue`]; queue offsets go on from there), deletes every
/// group's offset of it at or below that offset, and records the expiry in the metadata store
/// (`lite/expired/{lmq}`). A queue that got a message between the check and the record is left
/// alone (the lite topic was not idle after all); a message stored after the record stays
/// readable, at or past the cut, so a send racing the expiry is never lost.
///
/// **Quota**: the lite topics counted are kept in a set (counted once from the store, again
/// when the master epoch changes and before refusing), so a send of a new lite topic does not
/// scan every queue; the place is taken under the set's lock, so two first sends of new lite
/// topics cannot both take the last one.
#[derive(Default)]
pub struct LiteLifecycle {
    state: Mutex<State>,
    /// Group offsets deleted by expiries applied here (for the check's report).
    offsets_deleted: AtomicUsize,
}

#[derive(Default)]
struct State {
    /// Expired lite topics' queues: name -> the queue offset they were cut at.
    expired: HashMap<String, i64>,
    /// The lite topics counted against the quota (a place a send took and has not stored in
    /// yet carries when it was taken), and the master epoch they were counted in; `None` until
    /// first needed.
    live: Option<(HashMap<String, Option<Instant>>, i64)>,
    /// When a refusal last counted again from the store (a full scan of the topics): at most
    /// once per [`RECOUNT_EVERY`], so a client sending to new lite topics at the quota cannot
    /// make every lite send wait behind a scan.
    recounted: Option<Instant>,
}

/// How often a send refused at the quota may count the lite topics again from the store
/// (expiries give their places back at once; this finds places of sends that failed).
const RECOUNT_EVERY: Duration = Duration::from_secs(1);

/// How long a place a send took counts without the send's message in the store: a send is
/// stored or refused well within this, so a place past it was taken by a send that failed.
const RESERVATION: Duration = Duration::from_secs(30);

/// What one expiry check did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanReport {
    /// The lite topics' queues cut, by name.
    pub cleaned: Vec<String>,
    /// Consumer group offsets deleted with them.
    pub offsets_deleted: usize,
    /// Found expired, but a message came before the expiry's record: left alone.
    pub kept: Vec<String>,
}

/// Whether `lmq` counts as a lite topic: it has had a message, and one since its last expiry.
fn is_live(store: &MessageStore, expired: &HashMap<String, i64>, lmq: &str) -> Option<i64> {
    let max = store.get_max_offset_in_queue(lmq, 0);
    (max > 0 && expired.get(lmq) != Some(&max)).then_some(max)
}

/// Every lite topic's queue this broker counts, with its max offset.
fn scan_live(store: &MessageStore, expired: &HashMap<String, i64>) -> Vec<(String, i64)> {
    store
        .topics()
        .into_iter()
        .filter(|t| lite::parse_lmq(t).is_some())
        .filter_map(|t| is_live(store, expired, &t).map(|max| (t, max)))
        .collect()
}

impl LiteLifecycle {
    /// Reads the expired lite topics the metadata store recorded.
    pub fn open(metadata: &MetadataStore) -> Result<LiteLifecycle, StoreError> {
        let mut expired = HashMap::new();
        for (k, v) in metadata.scan_kv(EXPIRED_PREFIX.as_bytes())? {
            let name = String::from_utf8_lossy(&k[EXPIRED_PREFIX.len()..]).to_string();
            match <[u8; 8]>::try_from(v.as_slice()) {
                Ok(b) => {
                    expired.insert(name, i64::from_be_bytes(b));
                }
                Err(_) => {
                    tracing::warn!(lite_queue = %name, bytes = v.len(), "unreadable lite expiry record skipped")
                }
            }
        }
        Ok(LiteLifecycle {
            state: Mutex::new(State {
                expired,
                live: None,
                recounted: None,
            }),
            offsets_deleted: AtomicUsize::new(0),
        })
    }

    /// The queue offset `lmq` was cut at by its last expiry, if it expired.
    pub fn expired_at(&self, lmq: &str) -> Option<i64> {
        self.state.lock().expired.get(lmq).copied()
    }

    /// Every lite topic's queue this broker counts against the quota, with its max offset
    /// (a full scan).
    pub fn live_lmqs(&self, store: &MessageStore) -> Vec<(String, i64)> {
        let expired = self.state.lock().expired.clone();
        scan_live(store, &expired)
    }

    /// How many lite topics the quota counts now (from the kept set, counting it if needed).
    pub fn live_count(&self, store: &MessageStore, epoch: i64) -> usize {
        let mut guard = self.state.lock();
        Self::counted(&mut guard, store, epoch).len()
    }

    /// The counted set, counted again from the store when it never was or was counted in
    /// another master epoch (a slave does not count the lite topics replication brings).
    fn counted<'a>(
        st: &'a mut State,
        store: &MessageStore,
        epoch: i64,
    ) -> &'a mut HashMap<String, Option<Instant>> {
        if st.live.as_ref().is_some_and(|(_, e)| *e != epoch) {
            st.live = None;
        }
        let expired = &st.expired;
        let (set, _) = st.live.get_or_insert_with(|| {
            let set = scan_live(store, expired)
                .into_iter()
                .map(|(t, _)| (t, None))
                .collect();
            (set, epoch)
        });
        set
    }

    /// Counts again from the store, keeping the places sends took within [`RESERVATION`]
    /// (their messages may not be stored yet).
    fn recount(st: &mut State, store: &MessageStore, epoch: i64) {
        let reserved: Vec<(String, Instant)> = match st.live.take() {
            Some((old, e)) if e == epoch => old
                .into_iter()
                .filter_map(|(t, at)| at.filter(|at| at.elapsed() < RESERVATION).map(|at| (t, at)))
                .collect(),
            _ => Vec::new(),
        };
        let live = Self::counted(st, store, epoch);
        for (t, at) in reserved {
            live.entry(t).or_insert(Some(at));
        }
    }

    /// Whether storing in `lmq` keeps the broker within `max_lmqs` lite topics (`epoch`: the
    /// master epoch this broker serves in, 0 without a controller): always for a counted one;
    /// a new (or expired) one takes a place while fewer than `max_lmqs` are counted, the count
    /// being taken again from the store before a refusal. Refused with LMQ_QUOTA_EXCEEDED
    /// (2017), as RocketMQ's proxy maps to LITE_TOPIC_QUOTA_EXCEEDED. A place taken by a send
    /// that then fails is given back at the next count.
    pub fn check_quota(
        &self,
        store: &MessageStore,
        lmq: &str,
        max_lmqs: usize,
        epoch: i64,
    ) -> Result<(), Refusal> {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        if Self::counted(st, store, epoch).contains_key(lmq) {
            return Ok(());
        }
        if is_live(store, &st.expired, lmq).is_none() {
            let full = Self::counted(st, store, epoch).len() >= max_lmqs;
            if full && st.recounted.is_none_or(|at| at.elapsed() >= RECOUNT_EVERY) {
                // Counted again: sends that failed give their places back.
                Self::recount(st, store, epoch);
                st.recounted = Some(Instant::now());
            }
            let live = Self::counted(st, store, epoch);
            if live.len() >= max_lmqs && !live.contains_key(lmq) {
                return Err(Refusal::new(
                    response_code::LMQ_QUOTA_EXCEEDED,
                    format!(
                        "[LMQ_CONSUME_QUEUE_NUM_EXCEEDED] the broker has {} lite topics, its maxLmqConsumeQueueNum is {max_lmqs}: the lite topic of {lmq:?} cannot be created",
                        live.len()
                    ),
                ));
            }
        }
        Self::counted(st, store, epoch)
            .entry(lmq.to_string())
            .or_insert(Some(Instant::now()));
        Ok(())
    }

    /// The live lite topics whose parent is a LITE topic with a `lite.topic.expiration` and
    /// whose last message is older than it at `now_ms` (and at least `min_lite_ttl_ms` old),
    /// each with its max offset. Blocking (reads the CommitLog).
    pub fn find_expired(
        &self,
        store: &MessageStore,
        topics: &TopicConfigManager,
        min_lite_ttl_ms: i64,
        now_ms: i64,
    ) -> Vec<ExpiredQueue> {
        let mut expired = Vec::new();
        for (lmq, max) in self.live_lmqs(store) {
            let Some((parent, _)) = lite::parse_lmq(&lmq) else {
                continue;
            };
            let Some(minutes) = topics
                .get(parent)
                .filter(lite::is_lite_parent)
                .and_then(|p| lite::lite_topic_expiration_minutes(&p))
            else {
                continue;
            };
            // Its last message gone with retention: it was stored before the oldest record the
            // CommitLog still holds, so that record's time bounds it from above (never expired
            // early); with the log empty, now.
            let last = store
                .get_message_store_timestamp(&lmq, 0, max - 1)
                .unwrap_or_else(|| store.earliest_message_time().unwrap_or(now_ms));
            let inactive = now_ms - last;
            if inactive < min_lite_ttl_ms || inactive <= minutes * 60_000 {
                continue;
            }
            expired.push(ExpiredQueue {
                queue: lmq,
                next: max,
            });
        }
        expired
    }

    /// Expires `found` ([`Self::find_expired`]) through the metadata log, in records of at
    /// most [`EXPIRY_BATCH`] lite topics: answered once every SyncStateSet member holds each
    /// record and this broker applied it. A lite topic that got a message since it was found
    /// is left out (or, if the message came after planning, left alone by the record).
    pub async fn expire(
        &self,
        inner: &BrokerInner,
        found: Vec<ExpiredQueue>,
    ) -> Result<CleanReport, Refusal> {
        let mut report = CleanReport::default();
        let deleted_before = self.offsets_deleted.load(Ordering::Relaxed);
        for chunk in found.chunks(EXPIRY_BATCH) {
            let mut planned = Vec::new();
            inner
                .metalog
                .commit(inner, |inner| {
                    planned = chunk
                        .iter()
                        .filter(|q| {
                            let st = self.state.lock();
                            is_live(&inner.store, &st.expired, &q.queue) == Some(q.next)
                        })
                        .cloned()
                        .collect();
                    Ok(if planned.is_empty() {
                        Vec::new()
                    } else {
                        vec![MetadataChange::ExpireLite {
                            queues: planned.clone(),
                        }]
                    })
                })
                .await?;
            for q in chunk {
                if self.expired_at(&q.queue) == Some(q.next) {
                    report.cleaned.push(q.queue.clone());
                } else {
                    report.kept.push(q.queue.clone());
                }
            }
        }
        report.offsets_deleted = self
            .offsets_deleted
            .load(Ordering::Relaxed)
            .saturating_sub(deleted_before);
        Ok(report)
    }

    /// Applies an expiry record lying at CommitLog offset `at` (every replica, in log order):
    /// each named queue with no record between its `next` and `at` is cut below `next`, every
    /// group's offset of it at or below `next` deleted (an offset past it consumed messages
    /// stored after the expiry), and the expiry recorded. Names that are not lite topics'
    /// queues, or offsets below 0, are skipped. Idempotent.
    pub fn apply_expiry(
        &self,
        inner: &BrokerInner,
        queues: &[ExpiredQueue],
        at: i64,
    ) -> Result<(), StoreError> {
        let mut cut: HashMap<&str, i64> = HashMap::new();
        for q in queues {
            if lite::parse_lmq(&q.queue).is_none() || q.next < 0 {
                tracing::warn!(lite_queue = %q.queue, next = q.next, "expiry of a queue that is no lite topic's skipped");
                continue;
            }
            if !inner.store.expire_queue(&q.queue, 0, q.next, at)? {
                tracing::info!(lite_queue = %q.queue, next = q.next, "lite topic not expired: it got a message since the check");
                continue;
            }
            // Recorded as soon as it is cut: an error after this (deleting offsets) leaves the
            // cut known, so a group without an offset still starts at it, never at the end.
            inner.metadata.put_kv(
                format!("{EXPIRED_PREFIX}{}", q.queue).as_bytes(),
                &q.next.to_be_bytes(),
                true,
            )?;
            let mut st = self.state.lock();
            tracing::info!(lite_queue = %q.queue, cut_at = q.next, "expired lite topic cleaned");
            st.expired.insert(q.queue.clone(), q.next);
            if let Some((live, _)) = &mut st.live {
                live.remove(q.queue.as_str());
            }
            drop(st);
            cut.insert(q.queue.as_str(), q.next);
        }
        if cut.is_empty() {
            return Ok(());
        }
        inner
            .lite_owners
            .forget(&cut.keys().copied().collect::<Vec<_>>());
        let mut deleted = 0;
        for (group, topic, queue_id, offset) in inner.metadata.all_offsets()? {
            if cut.get(topic.as_str()).is_some_and(|next| offset <= *next) {
                inner.metadata.delete_offset(&group, &topic, queue_id)?;
                deleted += 1;
            }
        }
        self.offsets_deleted.fetch_add(deleted, Ordering::Relaxed);
        Ok(())
    }
}

/// Cleans expired lite topics every `lite_ttl_check_interval_ms` on a broker that serves
/// writes, once it has run `min_lite_ttl_ms`.
pub async fn lite_ttl_loop(inner: std::sync::Arc<BrokerInner>) {
    let interval =
        std::time::Duration::from_millis(inner.config.lite_ttl_check_interval_ms.max(100));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = rocketraft_common::time::now_ms();
        let min_ttl = inner.config.min_lite_ttl_ms as i64;
        if now - inner.boot_timestamp_ms < min_ttl || crate::replay::serving_epoch(&inner).is_err()
        {
            continue;
        }
        let worker = inner.clone();
        let found = tokio::task::spawn_blocking(move || {
            worker
                .lite
                .find_expired(&worker.store, &worker.topics, min_ttl, now)
        })
        .await;
        let found = match found {
            Ok(found) if found.is_empty() => continue,
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "lite topic expiry check panicked");
                continue;
            }
        };
        match inner.lite.expire(&inner, found).await {
            Ok(report) => tracing::info!(
                cleaned = report.cleaned.len(),
                kept = report.kept.len(),
                offsets_deleted = report.offsets_deleted,
                "lite topic expiry check"
            ),
            Err(e) => {
                tracing::warn!(code = e.code, error = %e.remark, "lite topic expiry not committed")
            }
        }
    }
}

impl LiteLifecycle {
    /// Whether `lmq`'s lite topic expired and has had no message since: its last expiry cut
    /// it at its max offset (a message after the expiry moves the max past the cut, so a lite
    /// topic sent to again is alive). Read-only.
    pub fn is_expired_idle(&self, store: &MessageStore, lmq: &str) -> bool {
        self.expired_at(lmq)
            .is_some_and(|cut| store.get_max_offset_in_queue(lmq, 0) <= cut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rocketraft_common::message::Message;

    fn lite_parent() -> TopicConfig {
        let mut c = TopicConfig::new("P", 4);
        c.attributes.insert("message.type".into(), "LITE".into());
        c
    }

    fn message(lite: Option<&str>) -> BrokerMessage {
        let mut m = Message::new("P", b"x".to_vec());
        if let Some(l) = lite {
            m.properties.insert(PROPERTY_LITE_TOPIC.into(), l.into());
        }
        BrokerMessage::new(m, 2)
    }

    fn code(r: Result<i32, Refusal>) -> i32 {
        match r {
            Ok(_) => panic!("accepted"),
            Err(r) => r.code,
        }
    }

    #[test]
    fn lite_messages_go_to_their_lmq() {
        let mut ms = vec![message(Some("a")), message(Some("a"))];
        assert_eq!(route_send(&lite_parent(), 0, 2, &mut ms).ok(), Some(0));
        for m in &ms {
            assert_eq!(m.message.topic, "%LMQ%$P$a");
            assert_eq!(m.queue_id, 0);
        }
    }

    #[test]
    fn wrong_kinds_are_refused() {
        let normal = TopicConfig::new("P", 4);
        let mut plain = vec![message(None)];
        assert_eq!(route_send(&normal, 0, 2, &mut plain).ok(), Some(2));
        assert_eq!(plain[0].message.topic, "P");
        let illegal = response_code::MESSAGE_ILLEGAL;
        assert_eq!(
            code(route_send(&normal, 0, 2, &mut [message(Some("a"))])),
            illegal
        );
        assert_eq!(
            code(route_send(&lite_parent(), 0, 2, &mut [message(None)])),
            illegal
        );
        assert_eq!(
            code(route_send(
                &lite_parent(),
                0,
                2,
                &mut [message(Some("a$b"))]
            )),
            illegal
        );
        assert_eq!(
            code(route_send(
                &lite_parent(),
                0,
                2,
                &mut [message(Some("a")), message(Some("b"))]
            )),
            illegal
        );
        let mut delayed = message(Some("a"));
        delayed
            .message
            .properties
            .insert(property::DELAY_TIME_LEVEL.into(), "3".into());
        assert_eq!(
            code(route_send(&lite_parent(), 0, 2, &mut [delayed])),
            illegal
        );
    }
}
