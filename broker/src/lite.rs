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
//! message; every `liteTtlCheckInterval` the master cleans the lite topics past it (never one
//! whose last message is younger than `minLiteTTl`, and nothing in the first `minLiteTTl` after
//! start): every consumer group's offset of it is deleted and it stops counting as a lite topic
//! of the broker, so a message to it later starts it afresh (a subscription then starts at its
//! end). Its ConsumeQueue stays until the CommitLog's retention removes what it points at: the
//! store has no call that deletes one topic's queue (RocketMQ's `deleteTopics`). **Quota**: a
//! send that would make one more lite topic than `maxLmqConsumeQueueNum` is refused with
//! LMQ_QUOTA_EXCEEDED (2017); two concurrent first sends of two new lite topics may both pass
//! the last place, as in RocketMQ.

use rocketraft_common::consts::property;
use rocketraft_common::lite::{self, PROPERTY_LITE_TOPIC};
use rocketraft_common::TopicConfig;
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::Refusal;

use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;

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

/// Lite topics this broker cleaned for expiry (RocketMQ deletes their ConsumeQueue; here the
/// queue stays and is remembered by the max offset it had then, so that it counts as a lite
/// topic again only once a message comes). Lost on restart: a cleaned lite topic is then
/// counted again until the next check cleans it again.
#[derive(Default)]
pub struct LiteLifecycle {
    cleaned: Mutex<HashMap<String, i64>>,
}

/// What one expiry check did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanReport {
    /// The lite topics' queues cleaned, by name.
    pub cleaned: Vec<String>,
    /// Consumer group offsets deleted with them.
    pub offsets_deleted: usize,
}

impl LiteLifecycle {
    /// Every lite topic's queue this broker has with at least one message and not cleaned
    /// since, with its max offset.
    pub fn live_lmqs(&self, store: &MessageStore) -> Vec<(String, i64)> {
        let cleaned = self.cleaned.lock();
        store
            .topics()
            .into_iter()
            .filter(|t| lite::parse_lmq(t).is_some())
            .filter_map(|t| {
                let max = store.get_max_offset_in_queue(&t, 0);
                (max > 0 && cleaned.get(&t) != Some(&max)).then_some((t, max))
            })
            .collect()
    }

    /// Whether storing in `lmq` keeps the broker within `max_lmqs` lite topics: always for a
    /// live one; for a new or cleaned one, while fewer than `max_lmqs` are live. Refused with
    /// LMQ_QUOTA_EXCEEDED (2017), as RocketMQ's proxy maps to LITE_TOPIC_QUOTA_EXCEEDED.
    pub fn check_quota(
        &self,
        store: &MessageStore,
        lmq: &str,
        max_lmqs: usize,
    ) -> Result<(), Refusal> {
        let max = store.get_max_offset_in_queue(lmq, 0);
        if max > 0 && self.cleaned.lock().get(lmq) != Some(&max) {
            return Ok(());
        }
        let live = self.live_lmqs(store).len();
        if live >= max_lmqs {
            return Err(Refusal::new(
                response_code::LMQ_QUOTA_EXCEEDED,
                format!(
                    "[LMQ_CONSUME_QUEUE_NUM_EXCEEDED] the broker has {live} lite topics, its maxLmqConsumeQueueNum is {max_lmqs}: the lite topic of {lmq:?} cannot be created"
                ),
            ));
        }
        Ok(())
    }

    /// Cleans every live lite topic whose parent is a LITE topic with a
    /// `lite.topic.expiration` and whose last message is older than it at `now_ms` (and at
    /// least `min_lite_ttl_ms` old): deletes every group's offset of it and forgets it as a
    /// lite topic. Blocking (reads RocksDB and the CommitLog).
    pub fn clean_expired(
        &self,
        store: &MessageStore,
        metadata: &MetadataStore,
        topics: &TopicConfigManager,
        min_lite_ttl_ms: i64,
        now_ms: i64,
    ) -> Result<CleanReport, StoreError> {
        let mut expired: Vec<(String, i64)> = Vec::new();
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
            expired.push((lmq, max));
        }
        let mut report = CleanReport::default();
        if expired.is_empty() {
            return Ok(report);
        }
        let names: HashSet<&str> = expired.iter().map(|(n, _)| n.as_str()).collect();
        for (group, topic, queue_id, _) in metadata.all_offsets()? {
            if names.contains(topic.as_str()) {
                metadata.delete_offset(&group, &topic, queue_id)?;
                report.offsets_deleted += 1;
            }
        }
        let mut cleaned = self.cleaned.lock();
        // A cleaned queue that got messages again is live: its entry can go.
        cleaned.retain(|name, at| store.get_max_offset_in_queue(name, 0) == *at);
        for (lmq, max) in expired {
            tracing::info!(lite_queue = %lmq, max_offset = max, "expired lite topic cleaned");
            cleaned.insert(lmq.clone(), max);
            report.cleaned.push(lmq);
        }
        Ok(report)
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
        let done = tokio::task::spawn_blocking(move || {
            worker.lite.clean_expired(
                &worker.store,
                &worker.metadata,
                &worker.topics,
                min_ttl,
                now,
            )
        })
        .await;
        match done {
            Ok(Ok(report)) if !report.cleaned.is_empty() => {
                tracing::info!(
                    cleaned = report.cleaned.len(),
                    offsets_deleted = report.offsets_deleted,
                    "lite topic expiry check"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "lite topic expiry check failed"),
            Err(e) => tracing::warn!(error = %e, "lite topic expiry check panicked"),
        }
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
