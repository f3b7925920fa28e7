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
//!
//! A receive is event-driven: one POP_LITE_MESSAGE to the broker names the client's lite topics
//! and is held there until one of them gets a message. When the client's set changes while it
//! waits, the proxy asks again with the new set (what the abandoned request still pops is made
//! visible again at once), and a message of a lite topic no longer in the set is never handed
//! out. The broker names the lite topics that expired with no message since: the proxy drops
//! them from the client's set and pushes NotifyUnsubscribeLiteCommand down the client's
//! Telemetry stream (a lite consumer's stream is registered here when its Settings arrive).
//!
//! An exclusive group (`liteSubExclusive` in its config, RocketMQ's exclusive mode) lets one
//! client at a time consume a lite topic, the one that subscribed it last. Ownership is
//! decided by the brokers (LITE_SUBSCRIPTION_CTL, where every proxy of the group meets): a
//! sync sends its claims to every master of the parent topic before it answers (PARTIAL_ADD
//! and lite topics new to a COMPLETE_ADD take them over, the rest of a COMPLETE_ADD claims only
//! what nobody owns, removals release). A broker answers the lite topics another client owns
//! as evicted: the proxy drops them from the client's set, pushes NotifyUnsubscribeLiteCommand
//! and keeps a tombstone, so a COMPLETE_ADD still listing one (the notification was lost) is
//! notified again instead of taking it back; a PARTIAL_ADD by the client clears it (and claims
//! again), as does a COMPLETE_ADD no longer listing it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rocketraft_common::consts::property;
use rocketraft_common::lite::{self, LITE_SUBSCRIPTION_QUOTA, MAX_LITE_TOPIC_SIZE};
use rocketraft_common::message::MessageExt;
use rocketraft_remoting::api::LITE_FIRST_LOOK;
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::RemotingCommand;

use super::admission::{required_group, required_topic};
use super::convert::{ok, status, wrapped};
use super::Service;
use crate::pb;

/// A set neither synced nor received on for this long is dropped (clients sync every 30 s).
const IDLE: Duration = Duration::from_secs(120);

/// `(client id, namespaced group, namespaced parent topic)`.
type Key = (String, String, String);

struct Entry {
    topics: BTreeSet<String>,
    seen: Instant,
    /// Where the next receive starts in `topics`, so every lite topic gets its turn.
    cursor: usize,
    /// `(broker address, lite topic)` -> the cut of the last expiry of the lite topic's queue
    /// on that broker this subscription knows of (learnt at its first look; -1: none): only
    /// an expiry with a larger cut, one after the subscription, ends it.
    cuts: HashMap<(String, String), i64>,
    /// Changed at every change of `topics` (unique across sets and time), so a waiting
    /// receive knows its set changed.
    version: u64,
}

/// A client's lite topics as one receive asks for them.
pub(super) struct View {
    /// Sorted.
    pub topics: Vec<String>,
    /// Whose turn it is first.
    pub start: usize,
    pub version: u64,
    /// The expiry cut the subscription knows of, per lite topic of `topics` (in the same
    /// order) on the broker asked ([`LITE_FIRST_LOOK`] before its first look).
    pub known_cuts: Vec<i64>,
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
    /// Counts every change of any set; receives waiting on the broker watch it.
    changes: tokio::sync::watch::Sender<u64>,
    /// The last version given to a set (versions are unique across sets, so a set removed and
    /// made again never repeats one).
    versions: std::sync::atomic::AtomicU64,
    /// The Telemetry streams of lite consumers, by stream key: `(client id, sender)`.
    streams: Mutex<HashMap<u64, (String, crate::session::TelemetrySender)>>,
    /// Lite topics of exclusive groups evicted from a client's set (another client took them),
    /// with when: a COMPLETE_ADD still listing one is notified again rather than re-adding it.
    /// Forgotten after [`IDLE`].
    tombstones: Mutex<HashMap<(Key, String), Instant>>,
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
            changes: tokio::sync::watch::channel(0).0,
            versions: std::sync::atomic::AtomicU64::new(0),
            streams: Mutex::default(),
            tombstones: Mutex::default(),
        }
    }

    fn tombs(&self) -> std::sync::MutexGuard<'_, HashMap<(Key, String), Instant>> {
        self.tombstones.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers that `lite` was evicted from `key`'s set.
    fn tombstone(&self, key: &Key, lite: &str) {
        let mut t = self.tombs();
        let now = Instant::now();
        t.retain(|_, at| now.duration_since(*at) < IDLE);
        t.insert((key.clone(), lite.to_string()), now);
    }

    /// Which of `lites` are tombstoned for `key`; each found is kept for another [`IDLE`]
    /// (a client that keeps listing a lite topic it lost, its notification missed, is refused
    /// for as long as it does, not only for the first two minutes).
    fn tombstoned(&self, key: &Key, lites: &[String]) -> BTreeSet<String> {
        let mut t = self.tombs();
        let now = Instant::now();
        lites
            .iter()
            .filter(|l| match t.get_mut(&(key.clone(), l.to_string())) {
                Some(at) if now.duration_since(*at) < IDLE => {
                    *at = now;
                    true
                }
                _ => false,
            })
            .cloned()
            .collect()
    }

    /// Forgets the tombstones of `key` that `keep` says no to.
    fn clear_tombstones(&self, key: &Key, keep: impl Fn(&str) -> bool) {
        self.tombs().retain(|(k, l), _| k != key || keep(l));
    }

    /// The current set of `key`.
    fn current(&self, key: &Key) -> BTreeSet<String> {
        self.lock()
            .get(key)
            .map(|e| e.topics.clone())
            .unwrap_or_default()
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
        let changed = entries.get(&key).map(|e| &e.topics) != Some(&next);
        if next.is_empty() {
            entries.remove(&key);
        } else {
            let entry = entries.entry(key).or_insert_with(|| Entry {
                topics: BTreeSet::new(),
                seen: now,
                cursor: 0,
                cuts: HashMap::new(),
                version: 0,
            });
            if entry.topics != next {
                entry.version = self.next_version();
                entry.cuts.retain(|(_, l), _| next.contains(l));
            }
            entry.topics = next;
            entry.seen = now;
        }
        drop(entries);
        if changed {
            self.changes.send_modify(|n| *n += 1);
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
    #[cfg(test)]
    fn topics(&self, key: &Key) -> Vec<String> {
        let v = self.view(key, "");
        let all = v.topics;
        if all.is_empty() {
            return all;
        }
        all[v.start..]
            .iter()
            .chain(&all[..v.start])
            .cloned()
            .collect()
    }

    /// The lite topics of `key` for one receive from the broker at `addr`; the next receive
    /// starts one further.
    fn view(&self, key: &Key, addr: &str) -> View {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(key) else {
            return View {
                topics: Vec::new(),
                start: 0,
                version: 0,
                known_cuts: Vec::new(),
            };
        };
        entry.seen = Instant::now();
        let topics: Vec<String> = entry.topics.iter().cloned().collect();
        let start = if topics.is_empty() {
            0
        } else {
            entry.cursor % topics.len()
        };
        entry.cursor = start + 1;
        let known_cuts = topics
            .iter()
            .map(|l| {
                entry
                    .cuts
                    .get(&(addr.to_string(), l.clone()))
                    .copied()
                    .unwrap_or(LITE_FIRST_LOOK)
            })
            .collect();
        View {
            topics,
            start,
            version: entry.version,
            known_cuts,
        }
    }

    /// A version no set had.
    fn next_version(&self) -> u64 {
        self.versions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    }

    /// When `key`'s set is no longer at `version`: its version now, and whether it has a lite
    /// topic not in `asked`.
    fn added_since(
        &self,
        key: &Key,
        version: u64,
        asked: &BTreeSet<String>,
    ) -> Option<(u64, bool)> {
        let entries = self.lock();
        let (now, added) = match entries.get(key) {
            Some(e) => (e.version, !e.topics.is_subset(asked)),
            None => (0, false),
        };
        (now != version).then_some((now, added))
    }

    /// Whether `lite` is in `key`'s set.
    fn contains(&self, key: &Key, lite: &str) -> bool {
        self.lock()
            .get(key)
            .is_some_and(|e| e.topics.contains(lite))
    }

    /// Learns, at a subscription's first look at each of `asked` on the broker at `addr`, the
    /// cut of its last expiry there (`cuts`, in the order asked), if `key`'s set is still at
    /// `version`.
    fn learn_cuts(&self, key: &Key, version: u64, addr: &str, asked: &[String], cuts: &[i64]) {
        if cuts.len() != asked.len() {
            return;
        }
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(key) else {
            return;
        };
        if entry.version != version {
            return;
        }
        for (l, cut) in asked.iter().zip(cuts) {
            if entry.topics.contains(l) {
                entry
                    .cuts
                    .entry((addr.to_string(), l.clone()))
                    .or_insert(*cut);
            }
        }
    }

    /// Forgets what the subscription knew of `lites`' expiries (subscribed again: the next
    /// look learns anew, so an expiry before this subscription does not end it).
    fn forget_cuts(&self, key: &Key, lites: &[String]) {
        if let Some(entry) = self.lock().get_mut(key) {
            entry.cuts.retain(|(_, l), _| !lites.contains(l));
        }
    }

    /// Removes lite topics the broker said are gone (expired, or taken by another client of
    /// an exclusive group) from `key`'s set, if the set is still at `version` (the one the
    /// broker was asked with: a sync since may have subscribed one again, and the next receive
    /// asks again anyway). Answers those dropped.
    fn drop_gone(&self, key: &Key, version: u64, gone: &[String]) -> Vec<String> {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(key) else {
            return Vec::new();
        };
        if entry.version != version {
            return Vec::new();
        }
        let mut dropped = Vec::new();
        for l in gone {
            if entry.topics.remove(l.as_str()) {
                entry.cuts.retain(|(_, c), _| c != l);
                dropped.push(l.clone());
            }
        }
        if dropped.is_empty() {
            return dropped;
        }
        entry.version = self.next_version();
        if entry.topics.is_empty() {
            entries.remove(key);
        }
        drop(entries);
        self.changes.send_modify(|n| *n += 1);
        dropped
    }

    /// Registers the Telemetry stream `stream` of a lite consumer.
    pub(super) fn attach(
        &self,
        stream: u64,
        client: &str,
        sender: crate::session::TelemetrySender,
    ) {
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(stream, (client.to_string(), sender));
    }

    /// Forgets a closed Telemetry stream.
    pub(super) fn detach(&self, stream: u64) {
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&stream);
    }

    /// Pushes NotifyUnsubscribeLiteCommand for `lite` down every open stream of `client`;
    /// answers how many took it.
    fn notify_unsubscribe(&self, client: &str, lite: &str) -> usize {
        let senders: Vec<crate::session::TelemetrySender> = self
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|(c, s)| c == client && !s.is_closed())
            .map(|(_, s)| s.clone())
            .collect();
        let mut pushed = 0;
        for sender in senders {
            let command = pb::TelemetryCommand {
                status: Some(ok()),
                command: Some(
                    pb::telemetry_command::Command::NotifyUnsubscribeLiteCommand(
                        pb::NotifyUnsubscribeLiteCommand {
                            lite_topic: lite.to_string(),
                        },
                    ),
                ),
            };
            match sender.try_send(Ok(command)) {
                Ok(()) => pushed += 1,
                Err(e) => {
                    tracing::warn!(client, lite_topic = lite, error = %e, "NotifyUnsubscribeLiteCommand not pushed")
                }
            }
        }
        pushed
    }

    /// Forgets every set of a client; answers how many there were.
    pub(super) fn drop_client(&self, client: &str) -> usize {
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|(c, _, _), _| c != client);
        let dropped = before - entries.len();
        drop(entries);
        self.tombs().retain(|((c, _, _), _), _| c != client);
        if dropped > 0 {
            self.changes.send_modify(|n| *n += 1);
        }
        dropped
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
    let exclusive = service.group_is_lite_exclusive(&group, &route).await;
    // From plan to apply, alone for this key: a concurrent sync would be lost otherwise.
    let _syncing = service.lite.sync_lock(&key).await;
    let (mut next, mut added) = service.lite.plan(&key, action, &req.lite_topic_set)?;
    // An exclusive group: what the client takes over, what it keeps if nobody owns it, what it
    // releases, and what it lists although another client took it (told again, not re-added).
    let mut claims = Claims::default();
    if exclusive {
        use pb::LiteSubscriptionAction as A;
        let current = service.lite.current(&key);
        match action {
            A::PartialAdd => {
                claims.take = req.lite_topic_set.clone();
            }
            A::CompleteAdd => {
                claims.refused = service.lite.tombstoned(&key, &req.lite_topic_set);
                next.retain(|l| !claims.refused.contains(l));
                added.retain(|l| !claims.refused.contains(l));
                claims.take = added.clone();
                claims.keep = next
                    .iter()
                    .filter(|l| !added.contains(l))
                    .cloned()
                    .collect();
            }
            A::PartialRemove | A::CompleteRemove => {}
        }
        claims.released = current.difference(&next).cloned().collect();
    }
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
    if exclusive {
        claim(service, &route, &key, &claims).await?;
        use pb::LiteSubscriptionAction as A;
        match action {
            // Claimed again: no longer evicted.
            A::PartialAdd => service
                .lite
                .clear_tombstones(&key, |l| !req.lite_topic_set.iter().any(|t| t == l)),
            // Tombstones of lite topics no longer listed are done with.
            A::CompleteAdd => service
                .lite
                .clear_tombstones(&key, |l| req.lite_topic_set.iter().any(|t| t == l)),
            A::PartialRemove => service
                .lite
                .clear_tombstones(&key, |l| !req.lite_topic_set.iter().any(|t| t == l)),
            A::CompleteRemove => service.lite.clear_tombstones(&key, |_| false),
        }
    }
    if action == pb::LiteSubscriptionAction::PartialAdd {
        // Subscribed (again): what the set knew of these lite topics' expiries is learnt anew,
        // so an expiry before this subscription does not end it.
        service.lite.forget_cuts(&key, &req.lite_topic_set);
    }
    let count = service.lite.apply(key, next);
    for lite in &claims.refused {
        let pushed = service.lite.notify_unsubscribe(&client, lite);
        tracing::info!(
            client,
            group,
            topic,
            lite_topic = %lite,
            streams = pushed,
            "lite topic of an exclusive group owned by another client still listed: not re-added, NotifyUnsubscribeLiteCommand pushed again"
        );
    }
    tracing::debug!(client, topic, ?action, count, "lite subscription synced");
    Ok(pb::SyncLiteSubscriptionResponse { status: Some(ok()) })
}

/// What a sync of an exclusive group tells the brokers ([`claim`]).
#[derive(Default)]
struct Claims {
    /// Taken from whichever client owns them.
    take: Vec<String>,
    /// Claimed where nobody owns them.
    keep: Vec<String>,
    /// No longer subscribed by the client.
    released: Vec<String>,
    /// Listed by a COMPLETE_ADD although evicted: not claimed, the client is told again.
    refused: BTreeSet<String>,
}

/// Sends `claims` of `key`'s client to every master of the parent topic (LITE_SUBSCRIPTION_CTL).
async fn claim(
    service: &Service,
    route: &rocketraft_common::protocol::TopicRouteData,
    key: &Key,
    claims: &Claims,
) -> Result<(), pb::Status> {
    let (client, group, topic) = key;
    let requests = [
        (true, &claims.take, &claims.released),
        (false, &claims.keep, &Vec::new()),
    ];
    // Every reachable master gets the claims (each refreshes its owners' claims, which it
    // forgets after 2 minutes without one); the first failure is answered after.
    let mut failed = None;
    for b in &route.broker_datas {
        let Some(addr) = b.master_addr() else {
            continue;
        };
        for (take_over, lites, released) in requests {
            if lites.is_empty() && released.is_empty() {
                continue;
            }
            let request = rocketraft_remoting::api::LiteCtlRequest {
                group,
                topic,
                client_id: client,
                lite_topics: lites,
                released,
                take_over,
            };
            if let Err(e) = service.api.lite_subscription_ctl(addr, &request).await {
                tracing::warn!(broker = %addr, %topic, %group, error = %e, "LITE_SUBSCRIPTION_CTL failed");
                failed.get_or_insert_with(|| service.broker_failed(topic, &e));
                break;
            }
        }
    }
    match failed {
        None => Ok(()),
        Some(status) => Err(status),
    }
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
/// order) with one POP_LITE_MESSAGE held by the broker until one of them has a message or the
/// poll time passes; none for a client without lite subscriptions (such a receive waits for a
/// sync until the poll time passes). A change of the client's set while the broker holds the
/// request asks again with the new set; the lite topics the broker reports expired are dropped
/// from the set and the client is told (NotifyUnsubscribeLiteCommand).
pub(super) async fn receive_lite(
    service: &Service,
    r: LiteReceive<'_>,
) -> Result<Vec<MessageExt>, pb::Status> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(r.poll_ms.max(0) as u64);
    let client = r.client.unwrap_or_default();
    let key = (client.to_string(), r.group.to_string(), r.topic.to_string());
    let mut changes = service.lite.changes.subscribe();
    loop {
        changes.borrow_and_update();
        let view = service.lite.view(&key, r.addr);
        let now = tokio::time::Instant::now();
        let left_ms = deadline.saturating_duration_since(now).as_millis() as i64;
        if view.topics.is_empty() {
            if left_ms == 0 {
                return Ok(Vec::new());
            }
            // Nothing to pop until a sync gives the client lite topics.
            let _ = tokio::time::timeout_at(deadline, changes.changed()).await;
            continue;
        }
        let asked: BTreeSet<String> = view.topics.iter().cloned().collect();
        let asked_order = view.topics.clone();
        let mut version = view.version;
        let mut call = Box::pin(pop_lite_call(
            service,
            &r,
            (view.topics, view.known_cuts),
            view.start,
            left_ms,
        ));
        let answer = loop {
            tokio::select! {
                answer = &mut call => break Some(answer),
                changed = changes.changed() => {
                    if changed.is_err() {
                        break Some((&mut call).await);
                    }
                    // Only a lite topic added needs a new request: the answer of this one is
                    // filtered by the set anyway (so a removal does not cost a new request and
                    // a released message).
                    match service.lite.added_since(&key, version, &asked) {
                        Some((_, true)) => break None,
                        Some((now, false)) => version = now,
                        None => {}
                    }
                }
            }
        };
        let Some(answer) = answer else {
            // The set changed: ask again with the new one; whatever the old request still
            // pops is made visible again.
            let (api, addr, group) = (service.api.clone(), r.addr.to_string(), r.group.to_string());
            tokio::spawn(async move {
                if let Ok(res) = call.await {
                    release(&api, &addr, &group, res.messages).await;
                }
            });
            continue;
        };
        let res = answer.map_err(|e| service.broker_failed(r.topic, &e))?;
        for lite in service.lite.drop_gone(&key, version, &res.evicted) {
            service.lite.tombstone(&key, &lite);
            let pushed = service.lite.notify_unsubscribe(client, &lite);
            tracing::info!(
                client,
                group = r.group,
                topic = r.topic,
                lite_topic = %lite,
                streams = pushed,
                "lite topic of an exclusive group taken by another client: dropped from this client's subscription, NotifyUnsubscribeLiteCommand pushed"
            );
        }
        service
            .lite
            .learn_cuts(&key, version, r.addr, &asked_order, &res.cuts);
        for lite in service.lite.drop_gone(&key, version, &res.expired) {
            let pushed = service.lite.notify_unsubscribe(client, &lite);
            tracing::info!(
                client,
                group = r.group,
                topic = r.topic,
                lite_topic = %lite,
                streams = pushed,
                "lite topic expired: dropped from the client's subscription, NotifyUnsubscribeLiteCommand pushed"
            );
        }
        // A message of a lite topic the client no longer subscribes is not handed out.
        let (got, stale): (Vec<MessageExt>, Vec<MessageExt>) = res
            .messages
            .into_iter()
            .partition(|m| lite_of(m).is_some_and(|(_, l)| service.lite.contains(&key, l)));
        if !stale.is_empty() {
            release(&service.api, r.addr, r.group, stale).await;
        }
        if !got.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(got);
        }
    }
}

/// One POP_LITE_MESSAGE of `r` over `topics`, owning all it needs (it may outlive the receive).
fn pop_lite_call(
    service: &Service,
    r: &LiteReceive<'_>,
    (topics, known_cuts): (Vec<String>, Vec<i64>),
    start: usize,
    poll_ms: i64,
) -> impl std::future::Future<
    Output = Result<rocketraft_remoting::api::PopLiteResult, rocketraft_remoting::api::ApiError>,
> + Send
       + 'static {
    let api = service.api.clone();
    let addr = r.addr.to_string();
    let group = r.group.to_string();
    let topic = r.topic.to_string();
    let (kind, expression) = (r.filter.0.to_string(), r.filter.1.to_string());
    let (batch, invisible_ms, fifo) = (r.batch, r.invisible_ms, r.fifo);
    let client = r.client.filter(|c| !c.is_empty()).map(str::to_string);
    async move {
        api.pop_lite(
            &addr,
            &rocketraft_remoting::api::PopLiteRequest {
                group: &group,
                topic: &topic,
                lite_topics: &topics,
                known_cuts: &known_cuts,
                start_index: start,
                max: batch,
                invisible_ms,
                poll_ms,
                order: fifo,
                filter: Some((&kind, &expression)),
                client_id: client.as_deref(),
            },
        )
        .await
    }
}

/// Makes popped messages that will not be handed out visible again at once
/// (CHANGE_MESSAGE_INVISIBLETIME 0 on their lite topic's queue).
async fn release(
    api: &rocketraft_remoting::api::MqClientApi,
    addr: &str,
    group: &str,
    messages: Vec<MessageExt>,
) {
    for m in messages {
        let (Some((parent, l)), Some(handle)) = (lite_of(&m), m.message.property(property::POP_CK))
        else {
            continue;
        };
        let cmd = RemotingCommand::request(request_code::CHANGE_MESSAGE_INVISIBLETIME)
            .with_ext("consumerGroup", group)
            .with_ext("topic", lite::lmq_name(parent, l))
            .with_ext("extraInfo", handle)
            .with_ext("invisibleTime", 0);
        match api.call(addr, cmd, &[response_code::SUCCESS]).await {
            Ok(_) => tracing::debug!(
                lite_topic = l,
                "popped message of a lite topic no longer subscribed made visible again"
            ),
            Err(e) => {
                tracing::warn!(lite_topic = l, error = %e, "popped message of a lite topic no longer subscribed not released; visible after its invisible time")
            }
        }
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

    /// A waiting receive learns of a change of its set: whether a lite topic was added beyond
    /// what it asked for; a set removed and made again never repeats a version; an expiry drops
    /// the named lite topics only.
    #[test]
    fn set_changes_are_seen_by_version() {
        let subs = LiteSubscriptions::default();
        subs.sync(key(), A::CompleteAdd, &names(&["a", "b"])).ok();
        let v = subs.view(&key(), "b1");
        let asked: BTreeSet<String> = v.topics.iter().cloned().collect();
        assert_eq!(subs.added_since(&key(), v.version, &asked), None);
        subs.sync(key(), A::PartialRemove, &names(&["b"])).ok();
        let (now, added) = subs
            .added_since(&key(), v.version, &asked)
            .expect("changed");
        assert!(!added, "a removal adds nothing");
        subs.sync(key(), A::CompleteRemove, &[]).ok();
        subs.sync(key(), A::CompleteAdd, &names(&["a", "c"])).ok();
        assert_eq!(
            subs.added_since(&key(), now, &asked).map(|(_, a)| a),
            Some(true)
        );
        let view = subs.view(&key(), "b1");
        assert_eq!(view.known_cuts, [LITE_FIRST_LOOK, LITE_FIRST_LOOK]);
        let v = view.version;
        // What the first look learnt is asked with from then on, per broker; a stale answer
        // (the set changed since) teaches nothing.
        subs.learn_cuts(&key(), v + 1, "b1", &names(&["a", "c"]), &[9, 9]);
        assert_eq!(subs.view(&key(), "b1").known_cuts, [LITE_FIRST_LOOK; 2]);
        subs.learn_cuts(&key(), v, "b1", &names(&["a", "c"]), &[-1, 4]);
        subs.learn_cuts(&key(), v, "b1", &names(&["a", "c"]), &[7, 7]);
        assert_eq!(
            subs.view(&key(), "b1").known_cuts,
            [-1, 4],
            "first look only"
        );
        assert_eq!(subs.view(&key(), "b2").known_cuts, [LITE_FIRST_LOOK; 2]);
        // Subscribed again: learnt anew.
        subs.forget_cuts(&key(), &names(&["c"]));
        assert_eq!(subs.view(&key(), "b1").known_cuts, [-1, LITE_FIRST_LOOK]);
        assert_eq!(
            subs.drop_gone(&key(), v + 1, &names(&["c"])),
            Vec::<String>::new(),
            "a set changed since the request keeps what the answer names"
        );
        assert_eq!(
            subs.drop_gone(&key(), v, &names(&["c", "x"])),
            names(&["c"])
        );
        assert_eq!(subs.topics(&key()), names(&["a"]));
        assert!(subs.contains(&key(), "a") && !subs.contains(&key(), "c"));
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
