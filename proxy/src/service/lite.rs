//! Lite topics ([`rocketraft_common::lite`]) through the proxy: SyncLiteSubscription keeps each
//! lite push consumer's set of lite topics (per client id, group and parent topic), and a
//! ReceiveMessage on a LITE topic pops from the queues (LMQs) of the client's lite topics
//! only, in turn, so a consumer gets exactly the lite topics it subscribed. Acks,
//! ChangeInvisibleDuration and dead-lettering name the lite topic (`lite_topic`) and go to its
//! LMQ.
//!
//! The subscriptions live in this proxy's memory: a client syncs its whole set every 30 s
//! (COMPLETE_ADD), so a proxy that restarts, or another proxy, has it back within that time; a
//! set neither synced nor received on for [`IDLE`] is dropped, as is every set of a client that
//! sends NotifyClientTermination. Syncs of one client, group and topic run one at a time
//! (a per-key lock held from plan to apply), so concurrent syncs lose no update. Quotas: at
//! most [`LITE_SUBSCRIPTION_QUOTA`] lite topics per client, group and topic (what clients are
//! told in their settings) and [`MAX_LITE_SUBSCRIPTION_COUNT`] in all (RocketMQ's
//! `maxLiteSubscriptionCount`); past either, LITE_SUBSCRIPTION_QUOTA_EXCEEDED.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rocketraft_common::consts::property;
use rocketraft_common::lite::{self, LITE_SUBSCRIPTION_QUOTA, MAX_LITE_TOPIC_SIZE};
use rocketraft_common::message::MessageExt;
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::RemotingCommand;

use super::admission::{required_group, required_topic};
use super::convert::{ok, status, wrapped};
use super::Service;
use crate::pb;

/// A set neither synced nor received on for this long is dropped (clients sync every 30 s).
const IDLE: Duration = Duration::from_secs(120);
/// How often a receive with nothing to give looks at the client's lite topics again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// `(client id, namespaced group, namespaced parent topic)`.
type Key = (String, String, String);

struct Entry {
    topics: BTreeSet<String>,
    seen: Instant,
    /// Where the next receive starts in `topics`, so every lite topic gets its turn.
    cursor: usize,
}

/// Most lite subscriptions this proxy keeps, counting each (client, lite topic) pair
/// (RocketMQ's broker-wide `maxLiteSubscriptionCount`, 100000): a sync that would add more is
/// refused with LITE_SUBSCRIPTION_QUOTA_EXCEEDED.
pub const MAX_LITE_SUBSCRIPTION_COUNT: usize = 100_000;

/// The lite subscriptions of the clients of this proxy.
pub struct LiteSubscriptions {
    /// [`MAX_LITE_SUBSCRIPTION_COUNT`], smaller in tests.
    max_total: usize,
    entries: Mutex<HashMap<Key, Entry>>,
    /// One lock per key a sync is under way for: a sync plans its set, sets start offsets on
    /// the brokers (awaiting them) and then applies the set, so two syncs of one client, group
    /// and topic must not interleave, or the later would apply a set planned without the
    /// earlier's change. A key's lock is dropped when no sync holds or awaits it.
    syncing: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds a key's sync lock; forgets the lock when the last sync of the key lets go.
struct SyncGuard<'a> {
    subs: &'a LiteSubscriptions,
    key: Key,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for SyncGuard<'_> {
    fn drop(&mut self) {
        let mut syncing = self.subs.syncing.lock().unwrap_or_else(|e| e.into_inner());
        // Released under the map's lock: a sync that cloned the Arc since holds a count.
        drop(self.guard.take());
        if syncing
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            syncing.remove(&self.key);
        }
    }
}

impl Default for LiteSubscriptions {
    fn default() -> Self {
        LiteSubscriptions::with_max_total(MAX_LITE_SUBSCRIPTION_COUNT)
    }
}

impl LiteSubscriptions {
    fn with_max_total(max_total: usize) -> Self {
        LiteSubscriptions {
            max_total,
            entries: Mutex::default(),
            syncing: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until no other sync of `key` is under way; the sync holds the key until the
    /// guard drops.
    async fn sync_lock(&self, key: &Key) -> SyncGuard<'_> {
        let lock = {
            let mut syncing = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
            syncing.entry(key.clone()).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        SyncGuard {
            subs: self,
            key: key.clone(),
            guard: Some(guard),
        }
    }

    /// The set an action leaves and the lite topics it adds, without applying it; refused
    /// past the quota.
    fn plan(
        &self,
        key: &Key,
        action: pb::LiteSubscriptionAction,
        topics: &[String],
    ) -> Result<(BTreeSet<String>, Vec<String>), pb::Status> {
        use pb::LiteSubscriptionAction as A;
        let mut entries = self.lock();
        let now = Instant::now();
        entries.retain(|_, e| now.duration_since(e.seen) < IDLE);
        let current = entries
            .get(key)
            .map(|e| e.topics.clone())
            .unwrap_or_default();
        let next: BTreeSet<String> = match action {
            A::PartialAdd => current.iter().chain(topics).cloned().collect(),
            A::PartialRemove => current
                .iter()
                .filter(|t| !topics.contains(t))
                .cloned()
                .collect(),
            A::CompleteAdd => topics.iter().cloned().collect(),
            A::CompleteRemove => BTreeSet::new(),
        };
        if next.len() > LITE_SUBSCRIPTION_QUOTA && next.len() > current.len() {
            return Err(status(
                pb::Code::LiteSubscriptionQuotaExceeded,
                format!(
                    "lite subscription quota exceeded: {} lite topics asked for, at most {LITE_SUBSCRIPTION_QUOTA} per client, group and topic",
                    next.len()
                ),
            ));
        }
        let total: usize = entries.values().map(|e| e.topics.len()).sum();
        let after = total - current.len() + next.len();
        if after > self.max_total && next.len() > current.len() {
            return Err(status(
                pb::Code::LiteSubscriptionQuotaExceeded,
                format!(
                    "lite subscription quota exceeded: this proxy keeps at most {} lite subscriptions (maxLiteSubscriptionCount)",
                    self.max_total
                ),
            ));
        }
        let added = next.difference(&current).cloned().collect();
        Ok((next, added))
    }

    /// Makes `next` the set of `key`.
    fn apply(&self, key: Key, next: BTreeSet<String>) -> usize {
        let mut entries = self.lock();
        let now = Instant::now();
        let count = next.len();
        if next.is_empty() {
            entries.remove(&key);
        } else {
            let entry = entries.entry(key).or_insert_with(|| Entry {
                topics: BTreeSet::new(),
                seen: now,
                cursor: 0,
            });
            entry.topics = next;
            entry.seen = now;
        }
        count
    }

    /// [`Self::plan`] then [`Self::apply`].
    #[cfg(test)]
    fn sync(
        &self,
        key: Key,
        action: pb::LiteSubscriptionAction,
        topics: &[String],
    ) -> Result<usize, pb::Status> {
        let (next, _) = self.plan(&key, action, topics)?;
        Ok(self.apply(key, next))
    }

    /// The lite topics of `key`, starting at the next one's turn.
    fn topics(&self, key: &Key) -> Vec<String> {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(key) else {
            return Vec::new();
        };
        entry.seen = Instant::now();
        let all: Vec<String> = entry.topics.iter().cloned().collect();
        if all.is_empty() {
            return all;
        }
        let start = entry.cursor % all.len();
        entry.cursor = start + 1;
        all[start..].iter().chain(&all[..start]).cloned().collect()
    }

    /// Forgets every set of a client; answers how many there were.
    pub(super) fn drop_client(&self, client: &str) -> usize {
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|(c, _, _), _| c != client);
        before - entries.len()
    }
}

/// `(namespaced parent topic, lite topic)` of a message stored in a lite topic's LMQ, or
/// retried from the LMQ's retry topic.
pub(super) fn lite_of(m: &MessageExt) -> Option<(&str, &str)> {
    lite::parse_lmq(&m.message.topic).or_else(|| {
        m.message
            .properties
            .get(property::RETRY_TOPIC)
            .and_then(|t| lite::parse_lmq(t))
    })
}

/// The LMQ a request's `lite_topic` names under `topic` (a namespaced name); the topic itself
/// when the request names none.
pub(super) fn queue_topic(topic: String, lite_topic: Option<&str>) -> Result<String, pb::Status> {
    match lite_topic.filter(|l| !l.is_empty()) {
        None => Ok(topic),
        Some(l) => {
            lite::validate_lite_topic(l)
                .map_err(|e| status(pb::Code::IllegalLiteTopic, e.to_string()))?;
            Ok(lite::lmq_name(&topic, l))
        }
    }
}

/// SyncLiteSubscription: the client (`x-mq-client-id`) adds, removes or replaces the lite
/// topics it consumes of a LITE topic for its group. Where consumption starts: a lite topic the
/// group never consumed starts at its end (`OffsetOption` LAST, what RocketMQ's clients call
/// "from last offset"), one it consumed resumes; an `offset_option` sets the group's offset of
/// each named lite topic (LAST/MAX: the end, MIN: the first stored, an offset, the last N, the
/// first at or after a time). Refused: no client id (CLIENT_ID_REQUIRED), no group or topic, a
/// topic that is not of type LITE or an offset option naming nothing (BAD_REQUEST), an illegal
/// lite topic name (ILLEGAL_LITE_TOPIC), more than the quota
/// (LITE_SUBSCRIPTION_QUOTA_EXCEEDED); a refusal changes nothing.
pub(super) async fn sync_lite_subscription(
    service: &Service,
    client: Option<String>,
    req: pb::SyncLiteSubscriptionRequest,
) -> Result<pb::SyncLiteSubscriptionResponse, pb::Status> {
    let client = client
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| status(pb::Code::ClientIdRequired, "x-mq-client-id is required"))?;
    let group = wrapped(required_group(req.group.as_ref())?);
    let topic = wrapped(required_topic(req.topic.as_ref())?);
    let action = pb::LiteSubscriptionAction::try_from(req.action).map_err(|_| {
        status(
            pb::Code::BadRequest,
            format!("unknown lite subscription action {}", req.action),
        )
    })?;
    let option = match &req.offset_option {
        None => None,
        Some(o) => Some(
            o.offset_type
                .ok_or_else(|| status(pb::Code::BadRequest, "offset_option names no offset"))?,
        ),
    };
    for l in &req.lite_topic_set {
        lite::validate_lite_topic(l)
            .map_err(|e| status(pb::Code::IllegalLiteTopic, e.to_string()))?;
    }
    let route = service.route(&topic).await?;
    if service.topic_types(&topic, &route).await != [pb::MessageType::Lite as i32] {
        return Err(status(
            pb::Code::BadRequest,
            format!("topic {topic} is not of message type LITE"),
        ));
    }
    let key = (client.clone(), group.clone(), topic.clone());
    // From plan to apply, alone for this key: a concurrent sync would be lost otherwise.
    let _syncing = service.lite.sync_lock(&key).await;
    let (next, added) = service.lite.plan(&key, action, &req.lite_topic_set)?;
    // Where the group starts on each broker set: an option resets the named lite topics, a
    // lite topic new to the group starts at its end.
    let (targets, forced): (Vec<&String>, bool) = match option {
        Some(_) => (req.lite_topic_set.iter().collect(), true),
        None => (added.iter().collect(), false),
    };
    for b in &route.broker_datas {
        let Some(addr) = b.master_addr() else {
            continue;
        };
        for l in &targets {
            let lmq = lite::lmq_name(&topic, l);
            start_offset(service, addr, &group, &lmq, option, forced)
                .await
                .map_err(|e| service.broker_failed(&topic, &e))?;
        }
    }
    let count = service.lite.apply(key, next);
    tracing::debug!(client, topic, ?action, count, "lite subscription synced");
    Ok(pb::SyncLiteSubscriptionResponse { status: Some(ok()) })
}

/// Sets the group's offset of an LMQ as `option` says (LAST without one); unless `forced`,
/// only when the group has none yet.
async fn start_offset(
    service: &Service,
    addr: &str,
    group: &str,
    lmq: &str,
    option: Option<pb::offset_option::OffsetType>,
    forced: bool,
) -> Result<(), rocketraft_remoting::api::ApiError> {
    use pb::offset_option::{OffsetType, Policy};
    let api = &service.api;
    if !forced {
        // Whether the group ever committed an offset here (`setZeroIfNotFound` off: not the
        // 0 RocketMQ answers a new group of a queue that still has its first message).
        let query = RemotingCommand::request(request_code::QUERY_CONSUMER_OFFSET)
            .with_ext("consumerGroup", group)
            .with_ext("topic", lmq)
            .with_ext("queueId", 0)
            .with_ext("setZeroIfNotFound", false);
        let r = api
            .call(
                addr,
                query,
                &[response_code::SUCCESS, response_code::QUERY_NOT_FOUND],
            )
            .await?;
        if r.code == response_code::SUCCESS {
            return Ok(());
        }
    }
    let max = api.max_offset(addr, lmq, 0).await?;
    let min = || api.min_offset(addr, lmq, 0);
    let offset = match option {
        None => max,
        Some(OffsetType::Policy(p)) if p == Policy::Min as i32 => min().await?,
        Some(OffsetType::Policy(_)) => max,
        Some(OffsetType::Offset(o)) => o.clamp(min().await?, max),
        Some(OffsetType::TailN(n)) => max.saturating_sub(n.max(0)).max(min().await?),
        Some(OffsetType::Timestamp(t)) => api.search_offset(addr, lmq, 0, t).await?,
    };
    api.update_consumer_offset(addr, group, lmq, 0, offset)
        .await
}

/// What a receive on a LITE topic pops.
pub(super) struct LiteReceive<'a> {
    pub client: Option<&'a str>,
    pub group: &'a str,
    /// The namespaced parent topic.
    pub topic: &'a str,
    pub addr: &'a str,
    pub batch: i32,
    pub invisible_ms: i64,
    pub poll_ms: i64,
    pub fifo: bool,
    pub filter: (&'a str, &'a str),
}

/// Pops up to `batch` messages from the client's lite topics (each in turn, a FIFO group's in
/// order), waiting up to the poll time for one; none for a client without lite subscriptions.
pub(super) async fn receive_lite(
    service: &Service,
    r: LiteReceive<'_>,
) -> Result<Vec<MessageExt>, pb::Status> {
    let deadline = Instant::now() + Duration::from_millis(r.poll_ms.max(0) as u64);
    let key = (
        r.client.unwrap_or_default().to_string(),
        r.group.to_string(),
        r.topic.to_string(),
    );
    loop {
        let mut got: Vec<MessageExt> = Vec::new();
        for l in service.lite.topics(&key) {
            let left = r.batch - got.len() as i32;
            if left <= 0 {
                break;
            }
            let lmq = lite::lmq_name(r.topic, &l);
            let more = service
                .api
                .pop_filtered(
                    r.addr,
                    r.group,
                    &lmq,
                    -1,
                    left,
                    r.invisible_ms,
                    0,
                    r.fifo,
                    Some(r.filter),
                )
                .await;
            match more {
                Ok(more) => got.extend(more),
                // What the earlier lite topics gave is handed out: failing the receive would
                // leave it invisible (a FIFO lite topic blocked) until its invisible time.
                Err(e) if !got.is_empty() => {
                    tracing::warn!(lite_topic = %l, error = %e, "POP of a lite topic failed; answering with the messages popped before it");
                    return Ok(got);
                }
                Err(e) => return Err(service.broker_failed(r.topic, &e)),
            }
        }
        let now = Instant::now();
        if !got.is_empty() || now >= deadline {
            return Ok(got);
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
    }
}

/// The Subscription settings a lite push consumer is told: its quota and the longest name.
pub(super) fn lite_settings(sub: &mut pb::Subscription) {
    sub.lite_subscription_quota = Some(LITE_SUBSCRIPTION_QUOTA as i32);
    sub.max_lite_topic_size = Some(MAX_LITE_TOPIC_SIZE as i32);
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::LiteSubscriptionAction as A;

    fn key() -> Key {
        ("c".into(), "g".into(), "P".into())
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn actions_add_remove_and_replace() {
        let subs = LiteSubscriptions::default();
        assert_eq!(
            subs.sync(key(), A::PartialAdd, &names(&["a", "b"])).ok(),
            Some(2)
        );
        assert_eq!(
            subs.sync(key(), A::PartialAdd, &names(&["c"])).ok(),
            Some(3)
        );
        assert_eq!(
            subs.sync(key(), A::PartialRemove, &names(&["b"])).ok(),
            Some(2)
        );
        let mut got = subs.topics(&key());
        got.sort();
        assert_eq!(got, names(&["a", "c"]));
        // Each receive starts one further.
        assert_ne!(subs.topics(&key()), subs.topics(&key()));
        assert_eq!(
            subs.sync(key(), A::CompleteAdd, &names(&["x"])).ok(),
            Some(1)
        );
        assert_eq!(subs.topics(&key()), names(&["x"]));
        assert_eq!(subs.sync(key(), A::CompleteRemove, &[]).ok(), Some(0));
        assert!(subs.topics(&key()).is_empty());
    }

    /// Syncs of one key that await between plan and apply (as the broker calls do) are
    /// serialized by the key's lock: every partial add is in the final set, and the lock is
    /// forgotten once no sync holds it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_syncs_of_one_key_lose_no_update() {
        let subs = Arc::new(LiteSubscriptions::default());
        let mut tasks = Vec::new();
        for i in 0..32 {
            let subs = subs.clone();
            tasks.push(tokio::spawn(async move {
                let _syncing = subs.sync_lock(&key()).await;
                let (next, _) = subs
                    .plan(&key(), A::PartialAdd, &[format!("t{i}")])
                    .expect("within the quota");
                tokio::time::sleep(Duration::from_millis(1)).await;
                subs.apply(key(), next);
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let mut got = subs.topics(&key());
        got.sort();
        let mut want: Vec<String> = (0..32).map(|i| format!("t{i}")).collect();
        want.sort();
        assert_eq!(got, want);
        assert!(subs
            .syncing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty());
    }

    #[test]
    fn the_quota_refuses_and_changes_nothing() {
        let subs = LiteSubscriptions::default();
        let many: Vec<String> = (0..LITE_SUBSCRIPTION_QUOTA)
            .map(|i| format!("t{i}"))
            .collect();
        assert!(subs.sync(key(), A::CompleteAdd, &many).is_ok());
        let refused = subs.sync(key(), A::PartialAdd, &names(&["one-more"]));
        assert_eq!(
            refused.err().map(|s| s.code),
            Some(pb::Code::LiteSubscriptionQuotaExceeded as i32)
        );
        assert_eq!(subs.topics(&key()).len(), LITE_SUBSCRIPTION_QUOTA);
        assert_eq!(subs.drop_client("c"), 1);
        assert!(subs.topics(&key()).is_empty());
    }

    #[test]
    fn the_proxy_wide_count_refuses_past_its_maximum() {
        let subs = LiteSubscriptions::with_max_total(3);
        let other: Key = ("c2".into(), "g".into(), "P".into());
        assert!(subs
            .sync(key(), A::CompleteAdd, &names(&["a", "b"]))
            .is_ok());
        let refused = subs.sync(other.clone(), A::PartialAdd, &names(&["x", "y"]));
        assert_eq!(
            refused.err().map(|s| s.code),
            Some(pb::Code::LiteSubscriptionQuotaExceeded as i32)
        );
        assert!(subs.topics(&other).is_empty(), "a refusal changes nothing");
        assert_eq!(
            subs.sync(other.clone(), A::PartialAdd, &names(&["x"])).ok(),
            Some(1)
        );
        // Replacing a set by one no larger is within the count.
        assert_eq!(
            subs.sync(key(), A::CompleteAdd, &names(&["c", "d"])).ok(),
            Some(2)
        );
        assert_eq!(
            subs.sync(key(), A::PartialRemove, &names(&["c"])).ok(),
            Some(1)
        );
        assert_eq!(
            subs.sync(other, A::PartialAdd, &names(&["y"])).ok(),
            Some(2)
        );
    }

    #[test]
    fn request_lite_topics_name_their_lmq() {
        assert_eq!(queue_topic("P".into(), None).ok().as_deref(), Some("P"));
        assert_eq!(
            queue_topic("P".into(), Some("a")).ok().as_deref(),
            Some("%LMQ%$P$a")
        );
        assert_eq!(
            queue_topic("P".into(), Some("a$b")).err().map(|s| s.code),
            Some(pb::Code::IllegalLiteTopic as i32)
        );
    }
}
