//! POP consumption (RocketMQ 5's `PopMessageProcessor`, `AckMessageProcessor`,
//! `ChangeInvisibleTimeProcessor` and `PopReviveService`), with its state in the CommitLog.
//!
//! - **Pop** hands out the next un-popped messages of a queue to whichever consumer of the group
//!   asks (message-granularity load balancing) and makes them invisible for `invisibleTime`.
//!   Before any message leaves, one **checkpoint** record per queue of the POP (group, topic,
//!   queue, pop time, invisible time, and each message's offset and delivery count: RocketMQ's
//!   `PopCheckPoint`) is stored durably in the revive topic `rmq_sys_REVIVE_LOG_{cluster}`
//!   (through the same path as a send: flushed per the flush policy and, in controller mode,
//!   acknowledged by the in-sync replicas). Versions before it stored one record per message;
//!   the replay reads both.
//! - **Ack** and **change invisible time** store an ack record (and, for the latter, a new
//!   checkpoint of that one message) the same way before answering; an ack ends its message's
//!   checkpoint within the batch. Acks that arrive while another acks write is being stored go
//!   together into the next write (one record); BATCH_ACK_MESSAGE stores a queue's acks in one
//!   record. A receipt handle names its checkpoint by queue, offset and pop time, so a handle
//!   from before a ChangeInvisibleTime no longer matches.
//! - **Revive**: a checkpoint past its invisible time without an ack is re-put into the retry topic
//!   `%RETRY%{group}_{topic}` with its delivery count + 1, or into `%DLQ%{group}` once the count
//!   passes the group's `retryMaxTimes` (16), then marked revived (a crash in between delivers it twice,
//!   never zero times).
//! - **Restart and failover**: the in-memory table of messages in flight is rebuilt by replaying
//!   the revive topic, which is replicated with the CommitLog like every other topic; a broker
//!   that becomes master rebuilds it before serving POP.
//! - **Clocks**: a pop time is stamped by the wall clock of the master that popped; the broker
//!   serving a checkpoint keeps its message invisible at most its invisible time from when it
//!   sees it, so a checkpoint from a clock ahead (a skewed former master, or this clock stepped
//!   back) does not block a FIFO queue or delay a revive by the skew. A checkpoint that replaces
//!   another (ChangeInvisibleTime, a FIFO message popped again) takes a pop time later than the
//!   one it replaces, so the replay keeps the right one.
//! - The group's consumer offset of a queue advances to the first message still in flight.
//! - **Retention**: a message in flight whose segment retention wants is stored again at the
//!   head of the log ([`PopService::roll_below`]), in the revive topic with its checkpoint
//!   ([`POP_COPY_OF`]); it stays in flight under the same receipt handle and is read from the
//!   copy from then on.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;
use rocketraft_common::consts::{
    property, sys_flag, DLQ_GROUP_TOPIC_PREFIX, RETRY_GROUP_TOPIC_PREFIX,
};
use rocketraft_common::message::{self, Message, RecordMeta};
use rocketraft_common::TopicConfig;
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::Refusal;
use serde::{Deserialize, Serialize};

use crate::processor::pull::MessageFilter;
use crate::store::{BrokerMessage, GetMessageStatus};
use crate::BrokerInner;

/// Most expired messages of a queue revived together (see [`PopService::revive_expired`]).
const REVIVE_GROUP: usize = 256;
/// Delivery attempts before the DLQ: RocketMQ's `retryMaxTimes` (16) retries after the first.
pub const DEFAULT_MAX_RECONSUME_TIMES: i32 = 16;
/// Topic types in receipt handles (`ExtraInfoUtil`).
const NORMAL_TOPIC: &str = "0";
const RETRY_TOPIC: &str = "1";

pub fn revive_topic(cluster: &str) -> String {
    format!("rmq_sys_REVIVE_LOG_{cluster}")
}

/// `%RETRY%{group}_{topic}` (RocketMQ's POP retry topic, v1 naming).
pub fn retry_topic(group: &str, topic: &str) -> String {
    format!("{RETRY_GROUP_TOPIC_PREFIX}{group}_{topic}")
}

pub fn dlq_topic(group: &str) -> String {
    format!("{DLQ_GROUP_TOPIC_PREFIX}{group}")
}

/// One record of the revive topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k")]
enum PopRecord {
    /// A message was popped: invisible until `pt + it`.
    #[serde(rename = "ck")]
    Ck {
        g: String,
        t: String,
        q: i32,
        o: i64,
        pt: i64,
        it: i64,
        rt: i32,
        /// A FIFO checkpoint: never revived into the retry topic; the same message is popped
        /// again from its queue after the invisible time, before anything after it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        fifo: bool,
    },
    /// The consumer acknowledged the checkpoint popped at `pt`.
    #[serde(rename = "ack")]
    Ack {
        g: String,
        t: String,
        q: i32,
        o: i64,
        pt: i64,
    },
    /// The checkpoint popped at `pt` expired and its message was re-put (retry or DLQ).
    #[serde(rename = "rv")]
    Revived {
        g: String,
        t: String,
        q: i32,
        o: i64,
        pt: i64,
    },
    /// A POP batch of one queue (RocketMQ's `PopCheckPoint`): the messages at `so + d[i]`
    /// popped at `pt`, each invisible until `pt + it`, with delivery count `rt[i]` (all 0 when
    /// `rt` is empty). Replayed as one [`PopRecord::Ck`] per message; acks and revives name the
    /// messages one by one, so an ack marks its message done within the batch and a revive
    /// re-puts only the messages not acked.
    #[serde(rename = "cks")]
    Cks {
        g: String,
        t: String,
        q: i32,
        so: i64,
        d: Vec<i64>,
        pt: i64,
        it: i64,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        rt: Vec<i32>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        fifo: bool,
    },
    /// Acks, possibly of several queues, stored together: each `(offset, pop time)` as a
    /// [`PopRecord::Ack`].
    #[serde(rename = "acks")]
    Acks { a: Vec<QueueDone> },
    /// Revived marks stored together: each `(offset, pop time)` as a [`PopRecord::Revived`].
    #[serde(rename = "rvs")]
    Rvs { a: Vec<QueueDone> },
}

/// The checkpoints of one queue that an [`PopRecord::Acks`] or [`PopRecord::Rvs`] record ends:
/// `(queue offset, pop time)` each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct QueueDone {
    g: String,
    t: String,
    q: i32,
    d: Vec<(i64, i64)>,
}

impl PopRecord {
    /// The checkpoint of a POP batch of `key`'s queue: `(offset, delivery count)` of each
    /// message (in offset order), popped at `pt`.
    fn batch(key: &QueueKey, msgs: &[(i64, i32)], pt: i64, it: i64, fifo: bool) -> PopRecord {
        let so = msgs.first().map_or(0, |(o, _)| *o);
        let rt: Vec<i32> = if msgs.iter().all(|(_, rt)| *rt == 0) {
            Vec::new()
        } else {
            msgs.iter().map(|(_, rt)| *rt).collect()
        };
        PopRecord::Cks {
            g: key.0.clone(),
            t: key.1.clone(),
            q: key.2,
            so,
            d: msgs.iter().map(|(o, _)| o - so).collect(),
            pt,
            it,
            rt,
            fifo,
        }
    }

    /// `(offset, pop time)` pairs of `key`'s queue as one [`QueueDone`].
    fn done(key: &QueueKey, d: Vec<(i64, i64)>) -> QueueDone {
        QueueDone {
            g: key.0.clone(),
            t: key.1.clone(),
            q: key.2,
            d,
        }
    }
}

/// A revive record's stored body. An encoding error is returned, never stored as an empty
/// body (which the rebuild would skip, silently losing a checkpoint or an ack). serde_json
/// fails only on non-string map keys or a failing `Serialize` impl, and `PopRecord` has
/// neither (strings, integers, a bool), so the error path is not expected to run; the
/// `revive_record_encoding` test checks every variant round-trips.
fn encode_revive_record(r: &PopRecord) -> Result<Vec<u8>, Refusal> {
    serde_json::to_vec(r)
        .map_err(|e| Refusal::system_error(format!("cannot encode a POP revive record: {e}")))
}

/// On a copy of a message in flight, stored in the revive topic when retention wanted the
/// segment the message (or its previous copy) was in: the checkpoint state it carries, a
/// [`Moved`] in JSON. The copy is the message itself (body, properties, flags) plus this
/// property, in one record: stored, it both keeps the message and (on replay) restores its
/// checkpoint, even once the original and every earlier revive record of it are deleted.
pub const POP_COPY_OF: &str = "RKT_POP_COPY_OF";

/// The state a copy of a message in flight carries (see [`POP_COPY_OF`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Moved {
    /// The checkpoint: group, topic, queue, queue offset, pop time, invisible time, delivery
    /// count, FIFO, as in [`PopRecord::Ck`] (the handle of `pt` keeps working).
    g: String,
    t: String,
    q: i32,
    o: i64,
    pt: i64,
    it: i64,
    rt: i32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    fifo: bool,
    /// The queue's pop offset when copied: a replay that lost every other checkpoint of the
    /// queue (their segments deleted) still never hands out its earlier messages again.
    po: i64,
    /// The original's CommitLog offset, store time, sys flag, prepared transaction offset and
    /// offset message id, given back to the consumer as the original had them.
    phy: i64,
    sts: i64,
    sf: i32,
    pto: i64,
    mid: String,
}

impl Moved {
    /// The message as stored originally, from its copy `m`.
    fn restore(&self, mut m: message::MessageExt) -> message::MessageExt {
        m.message.topic = self.t.clone();
        m.message.remove_property(POP_COPY_OF);
        m.queue_id = self.q;
        m.queue_offset = self.o;
        m.commit_log_offset = self.phy;
        m.store_timestamp = self.sts;
        m.sys_flag = self.sf;
        m.prepared_transaction_offset = self.pto;
        m.msg_id = self.mid.clone();
        m
    }
}

/// A record as stored, for a message read back from a copy.
fn encode_ext(m: &message::MessageExt) -> Result<bytes::Bytes, Refusal> {
    let meta = RecordMeta {
        queue_id: m.queue_id,
        queue_offset: m.queue_offset,
        physical_offset: m.commit_log_offset,
        sys_flag: m.sys_flag,
        born_timestamp: m.born_timestamp,
        born_host: m.born_host,
        store_timestamp: m.store_timestamp,
        store_host: m.store_host,
        reconsume_times: m.reconsume_times,
        prepared_transaction_offset: m.prepared_transaction_offset,
    };
    let mut out = Vec::new();
    message::encode_record(&m.message, &meta, false, &mut out).map_err(|e| {
        Refusal::system_error(format!("cannot encode a copied message in flight: {e}"))
    })?;
    Ok(bytes::Bytes::from(out))
}

type QueueKey = (String, String, i32);

/// Where a message in flight is stored, for the retention pin.
enum Held {
    /// The original, at a queue offset of its queue.
    Original(String, i32, i64),
    /// A copy, at a queue offset of the revive topic.
    Copy(i64),
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    /// The checkpoint's pop time, stamped by the clock of the master that popped it; it names
    /// the checkpoint (receipt handles carry it) and orders its versions, nothing more.
    pop_time: i64,
    invisible_ms: i64,
    reconsume_times: i32,
    fifo: bool,
    /// When the message becomes visible again, on this broker's clock.
    visible_at: i64,
    /// Once retention wanted the segment of the message: the revive-topic queue offset of its
    /// latest copy (see [`PopService::roll_below`]), which is read instead of the original.
    moved: Option<i64>,
}

impl InFlight {
    /// A checkpoint seen at `now` (this broker's clock): invisible until `pop_time +
    /// invisible_ms`, but never more than `invisible_ms` from now. A pop time ahead of this
    /// broker's clock comes from a master whose clock ran ahead (or from before this clock
    /// stepped back); taken at face value it would keep the message invisible (and a FIFO
    /// queue blocked) for the whole skew on top of its invisible time.
    fn new(pop_time: i64, invisible_ms: i64, reconsume_times: i32, fifo: bool, now: i64) -> Self {
        InFlight {
            pop_time,
            invisible_ms,
            reconsume_times,
            fifo,
            visible_at: pop_time.min(now).saturating_add(invisible_ms),
            moved: None,
        }
    }

    /// The same message's record, where `self` has it: a new checkpoint of a message keeps
    /// reading the copy its earlier checkpoint moved it to.
    fn reading(mut self, moved: Option<i64>) -> Self {
        self.moved = moved;
        self
    }

    fn deadline(&self) -> i64 {
        self.visible_at
    }

    /// Caps the deadline at `invisible_ms` from `now`, for a clock that stepped back since the
    /// checkpoint was taken (a no-op while the clock only moves forward).
    fn clamp(&mut self, now: i64) {
        self.visible_at = self.visible_at.min(now.saturating_add(self.invisible_ms));
    }
}

#[derive(Debug, Default)]
struct QueueState {
    /// The next offset to hand out.
    pop_offset: i64,
    inflight: BTreeMap<i64, InFlight>,
}

/// Why a receipt handle (`POP_CK` / `extraInfo`) does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    #[error("receipt handle {handle:?} has {fields} fields, expected 8 (ckQueueOffset popTime invisibleTime reviveQid topicType brokerName queueId queueOffset)")]
    FieldCount { handle: String, fields: usize },
    #[error("receipt handle {handle:?}: {field} {value:?} is not a number")]
    NotANumber {
        handle: String,
        field: &'static str,
        value: String,
    },
}

/// A parsed receipt handle (`POP_CK` / `extraInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handle {
    pub ck_offset: i64,
    pub pop_time: i64,
    pub invisible_ms: i64,
    pub revive_qid: i32,
    pub retry: bool,
    pub broker_name: String,
    pub queue_id: i32,
    pub queue_offset: i64,
}

impl Handle {
    /// `ckQueueOffset popTime invisibleTime reviveQid topicType brokerName queueId queueOffset`.
    pub fn encode(&self) -> String {
        format!(
            "{} {} {} {} {} {} {} {}",
            self.ck_offset,
            self.pop_time,
            self.invisible_ms,
            self.revive_qid,
            if self.retry {
                RETRY_TOPIC
            } else {
                NORMAL_TOPIC
            },
            self.broker_name,
            self.queue_id,
            self.queue_offset
        )
    }

    pub fn parse(text: &str) -> Result<Handle, HandleError> {
        let parts: Vec<&str> = text.split(' ').collect();
        if parts.len() < 8 {
            return Err(HandleError::FieldCount {
                handle: text.to_string(),
                fields: parts.len(),
            });
        }
        let num = |i: usize, field: &'static str| -> Result<i64, HandleError> {
            parts[i].parse().map_err(|_| HandleError::NotANumber {
                handle: text.to_string(),
                field,
                value: parts[i].to_string(),
            })
        };
        Ok(Handle {
            ck_offset: num(0, "ckQueueOffset")?,
            pop_time: num(1, "popTime")?,
            invisible_ms: num(2, "invisibleTime")?,
            revive_qid: num(3, "reviveQid")? as i32,
            retry: parts[4] != NORMAL_TOPIC,
            broker_name: parts[5].to_string(),
            queue_id: num(6, "queueId")? as i32,
            queue_offset: num(7, "queueOffset")?,
        })
    }
}

/// A receipt handle checked in flight by [`PopService::hold`], with its queue's lock held.
pub struct HeldHandle {
    _guard: tokio::sync::OwnedMutexGuard<()>,
    key: QueueKey,
    handle: Handle,
}

impl HeldHandle {
    /// The topic of the queue the message is in: the group's retry topic for a retried
    /// message.
    pub fn queue_topic(&self) -> &str {
        &self.key.1
    }

    pub fn queue_id(&self) -> i32 {
        self.key.2
    }

    pub fn queue_offset(&self) -> i64 {
        self.handle.queue_offset
    }
}

/// What a FIFO queue allows a pop.
enum FifoGate {
    /// Nothing in flight: pop the next messages.
    Open,
    /// Messages in flight and not expired: nothing from this queue.
    Blocked,
    /// Expired messages popped again (in order).
    Again(Vec<Popped>),
}

/// One popped message ready for the response body.
pub struct Popped {
    pub record: bytes::Bytes,
    pub queue_id: i32,
    pub queue_offset: i64,
    pub retry: bool,
}

/// What a pop returned.
pub struct PopResult {
    pub pop_time: i64,
    pub invisible_ms: i64,
    pub messages: Vec<Popped>,
    /// Messages left in the queues looked at.
    pub rest: i64,
}

/// One POP request's parameters, shared by the steps that pop each candidate queue.
struct PopRequest<'a> {
    group: &'a str,
    invisible_ms: i64,
    /// With no committed offset, a normal (not retry) queue starts at its max offset.
    init_from_max: bool,
    /// FIFO.
    order: bool,
    filter: &'a MessageFilter,
    /// The pop time stamped on every checkpoint of the request.
    pop_time: i64,
}

/// An ack waiting for the next acks write: the checkpoints it ends and where its outcome goes.
type PendingAck = (QueueDone, tokio::sync::oneshot::Sender<Result<(), Refusal>>);

/// Group commit of acks: acks that arrive while an acks write is being stored go, together,
/// into the next write (one [`PopRecord::Acks`] record), and each is answered once that
/// record is stored durably.
#[derive(Default)]
struct AckLog {
    pending: Mutex<Vec<PendingAck>>,
    /// Held by the one request storing an acks write.
    writer: tokio::sync::Mutex<()>,
}

/// The POP service of a broker.
pub struct PopService {
    state: Mutex<HashMap<QueueKey, QueueState>>,
    locks: Mutex<HashMap<QueueKey, Arc<tokio::sync::Mutex<()>>>>,
    replay: crate::replay::ReplayGate,
    round_robin: AtomicI64,
    acks: AckLog,
}

impl Default for PopService {
    fn default() -> Self {
        PopService {
            state: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            replay: crate::replay::ReplayGate::default(),
            round_robin: AtomicI64::new(0),
            acks: AckLog::default(),
        }
    }
}

fn now_ms() -> i64 {
    rocketraft_common::time::now_ms()
}

impl PopService {
    /// Retention pin: the lowest CommitLog offset of a message still in flight (its
    /// checkpoint, stored after it, is above). `None` when nothing is in flight. From the
    /// table in memory once this broker has replayed it for its serving epoch, from a fresh
    /// replay of the revive topic otherwise (a slave, or a master before its first POP
    /// request): a failover must find every message still in flight.
    pub fn lowest_needed(&self, inner: &BrokerInner) -> Option<i64> {
        let held: Vec<Held> = if self.replay.is_current(inner) {
            Self::held(&self.state.lock())
        } else {
            Self::held(&Self::replay_table(inner).0)
        };
        let revive = revive_topic(&inner.config.cluster_name);
        held.into_iter()
            .filter_map(|h| match h {
                Held::Original(topic, q, o) => {
                    inner.store.get_commit_log_offset_in_queue(&topic, q, o)
                }
                Held::Copy(at) => inner.store.get_commit_log_offset_in_queue(&revive, 0, at),
            })
            .min()
    }

    /// Whether the in-flight table in memory is this broker's for its serving epoch.
    pub fn replayed(&self, inner: &BrokerInner) -> bool {
        self.replay.is_current(inner)
    }

    /// Where the messages in flight are held: of each queue, the first one still at its
    /// original (the lowest CommitLog offset of the originals, stored in queue order) and
    /// every copy.
    fn held(table: &HashMap<QueueKey, QueueState>) -> Vec<Held> {
        let mut out = Vec::new();
        for ((_, topic, q), qs) in table {
            if let Some(o) = qs.inflight.iter().find(|(_, f)| f.moved.is_none()) {
                out.push(Held::Original(topic.clone(), *q, *o.0));
            }
            out.extend(qs.inflight.values().filter_map(|f| f.moved.map(Held::Copy)));
        }
        out
    }

    /// The copy of a message in flight at `at` of the revive topic and the state it carries.
    fn copy_at(inner: &BrokerInner, at: i64) -> Option<(message::MessageExt, Moved)> {
        let topic = revive_topic(&inner.config.cluster_name);
        let phy = inner.store.get_commit_log_offset_in_queue(&topic, 0, at)?;
        let m = inner.store.look_message_by_offset(phy)?;
        let moved: Moved = serde_json::from_str(m.message.property(POP_COPY_OF)?).ok()?;
        Some((m, moved))
    }

    /// The message in flight at `offset` of `key`'s queue as it was stored: read from its
    /// latest copy when `moved`, else from the queue.
    fn stored_message(
        inner: &BrokerInner,
        key: &QueueKey,
        offset: i64,
        moved: Option<i64>,
    ) -> Option<message::MessageExt> {
        match moved {
            Some(at) => Self::copy_at(inner, at).map(|(m, mv)| mv.restore(m)),
            None => inner
                .store
                .get_commit_log_offset_in_queue(&key.1, key.2, offset)
                .and_then(|phy| inner.store.look_message_by_offset(phy)),
        }
    }

    /// [`Self::stored_message`] as a record.
    fn stored_record(
        inner: &BrokerInner,
        key: &QueueKey,
        offset: i64,
        moved: Option<i64>,
    ) -> Result<Option<bytes::Bytes>, Refusal> {
        match moved {
            Some(_) => Self::stored_message(inner, key, offset, moved)
                .map(|m| encode_ext(&m))
                .transpose(),
            None => Ok(inner
                .store
                .get_cq_entry(&key.1, key.2, offset)
                .and_then(|e| inner.store.read_record(e.commit_log_offset))),
        }
    }

    /// The CommitLog offset of the record holding the message in flight at `offset` of
    /// `key`'s queue (its latest copy when `moved`).
    fn held_at(
        inner: &BrokerInner,
        key: &QueueKey,
        offset: i64,
        moved: Option<i64>,
    ) -> Option<i64> {
        match moved {
            Some(at) => inner.store.get_commit_log_offset_in_queue(
                &revive_topic(&inner.config.cluster_name),
                0,
                at,
            ),
            None => inner
                .store
                .get_commit_log_offset_in_queue(&key.1, key.2, offset),
        }
    }

    /// The in-flight table the revive topic describes, and how many records it read.
    fn replay_table(inner: &BrokerInner) -> (HashMap<QueueKey, QueueState>, u64) {
        let topic = revive_topic(&inner.config.cluster_name);
        let mut table: HashMap<QueueKey, QueueState> = HashMap::new();
        let mut records = 0u64;
        let now = now_ms();
        crate::replay::scan(inner, &topic, |offset, m| {
            if let Some(state) = m.message.property(POP_COPY_OF) {
                match serde_json::from_str::<Moved>(state) {
                    Ok(moved) => {
                        records += 1;
                        apply_copy(&mut table, moved, offset, now);
                    }
                    Err(_) => tracing::warn!(offset, "unreadable copy of a POP message skipped"),
                }
                return;
            }
            match serde_json::from_slice::<PopRecord>(&m.message.body) {
                Ok(record) => {
                    records += 1;
                    apply(&mut table, record, now);
                }
                Err(_) => tracing::warn!(offset, "unreadable revive record skipped"),
            }
        });
        (table, records)
    }

    fn lock_of(&self, key: &QueueKey) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .entry(key.clone())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone()
    }

    /// Rebuilds the in-flight table from the revive topic when this broker starts serving (at
    /// start, or after becoming master of a new epoch); refuses on a slave.
    pub async fn ensure_rebuilt(&self, inner: &BrokerInner) -> Result<(), Refusal> {
        self.replay
            .ensure(inner, |epoch| {
                let (table, records) = Self::replay_table(inner);
                let inflight: usize = table.values().map(|q| q.inflight.len()).sum();
                tracing::info!(
                    records,
                    inflight,
                    epoch,
                    "POP state rebuilt from the revive topic"
                );
                *self.state.lock() = table;
            })
            .await
            .map_err(|e| Refusal::new(response_code::SERVICE_NOT_AVAILABLE, e.to_string()))
    }

    /// Stores revive records durably (flush policy, and replica acks in controller mode); a
    /// record that cannot be encoded fails the whole call (nothing is stored).
    async fn persist(inner: &BrokerInner, records: &[PopRecord]) -> Result<(), Refusal> {
        if records.is_empty() {
            return Ok(());
        }
        let topic = revive_topic(&inner.config.cluster_name);
        ensure_system_topic(inner, &topic, 1)?;
        let msgs = records
            .iter()
            .map(|r| {
                Ok(BrokerMessage::new(
                    Message::new(topic.clone(), encode_revive_record(r)?),
                    0,
                ))
            })
            .collect::<Result<Vec<_>, Refusal>>()?;
        inner.store_durably(msgs).await.map(|_| ()).map_err(|e| {
            let Refusal { code, remark } = Refusal::from(e);
            Refusal::new(code, format!("cannot store POP state: {remark}"))
        })
    }

    /// Stores the acks of `done` (checkpoints of one queue, `(offset, pop time)` each)
    /// durably, as [`Self::persist`] does, in one acks record with whatever other acks are
    /// waiting for the next write (see [`AckLog`]). Returns once the record holding them is
    /// stored (or failed to be).
    async fn persist_acks(&self, inner: &BrokerInner, done: QueueDone) -> Result<(), Refusal> {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        self.acks.pending.lock().push((done, tx));
        let writer = self.acks.writer.lock().await;
        // A writer before us took ours into its record and answered it before letting go.
        if let Ok(outcome) = rx.try_recv() {
            return outcome;
        }
        let batch = std::mem::take(&mut *self.acks.pending.lock());
        let (done, answers): (Vec<QueueDone>, Vec<_>) = batch.into_iter().unzip();
        if !done.is_empty() {
            // One store call: one outcome for every ack in it (and one flush).
            let records: Vec<PopRecord> = records_of(done)
                .into_iter()
                .map(|a| PopRecord::Acks { a })
                .collect();
            let outcome = Self::persist(inner, &records).await;
            for answer in answers {
                let _ = answer.send(outcome.clone());
            }
        }
        drop(writer);
        rx.await.unwrap_or_else(|_| {
            Err(Refusal::system_error(
                "the acks write holding this ack was abandoned; the ack may not be stored",
            ))
        })
    }

    /// POP_MESSAGE: up to `max` messages of `topic` (one queue, or all when `queue_id < 0`;
    /// the group's retry topic first).
    #[allow(clippy::too_many_arguments)]
    pub async fn pop(
        &self,
        inner: &BrokerInner,
        group: &str,
        topic: &str,
        queue_id: i32,
        max: usize,
        invisible_ms: i64,
        init_from_max: bool,
        order: bool,
        filter: &MessageFilter,
    ) -> Result<PopResult, Refusal> {
        self.ensure_rebuilt(inner).await?;
        let candidates = self.candidates(inner, group, topic, queue_id, order)?;
        let pop_time = now_ms();
        let request = PopRequest {
            group,
            invisible_ms,
            init_from_max,
            order,
            filter,
            pop_time,
        };
        let mut out = PopResult {
            pop_time,
            invisible_ms,
            messages: Vec::new(),
            rest: 0,
        };
        for (t, q, is_retry) in candidates {
            let remaining = max.saturating_sub(out.messages.len());
            self.pop_queue(inner, &request, (t, q, is_retry), remaining, &mut out)
                .await?;
        }
        Ok(out)
    }

    /// Where a peek or a notification looks in `key`'s queue: where the next pop would start
    /// (the pop offset, never below the group's committed offset, or the queue's min when
    /// there is none), without moving anything.
    fn peek_start(&self, inner: &BrokerInner, key: &QueueKey) -> i64 {
        let committed = inner
            .metadata
            .query_offset(&key.0, &key.1, key.2)
            .ok()
            .flatten();
        let min = inner.store.get_min_offset_in_queue(&key.1, key.2);
        let popped = self.state.lock().get(key).map(|qs| qs.pop_offset);
        committed
            .unwrap_or(min)
            .max(popped.unwrap_or(i64::MIN))
            .max(min)
    }

    /// PEEK_MESSAGE: up to `max` of the messages the next pops of `group` would get (the
    /// group's retry topic first, then `queue_id` of `topic` or all its queues), and how many
    /// are waiting in the queues looked at. Stores no checkpoint and moves no offset: the
    /// messages stay visible to the next POP.
    pub async fn peek(
        &self,
        inner: &BrokerInner,
        group: &str,
        topic: &str,
        queue_id: i32,
        max: usize,
    ) -> Result<(Vec<bytes::Bytes>, i64), Refusal> {
        self.ensure_rebuilt(inner).await?;
        let mut records = Vec::new();
        let mut rest = 0i64;
        for (t, q, _) in self.candidates(inner, group, topic, queue_id, false)? {
            let key = (group.to_string(), t, q);
            let start = self.peek_start(inner, &key);
            rest += (inner.store.get_max_offset_in_queue(&key.1, q) - start).max(0);
            let remaining = max.saturating_sub(records.len());
            if remaining == 0 {
                continue;
            }
            let r = inner.store.get_messages(
                group,
                &key.1,
                q,
                start,
                remaining as i32,
                inner.config.max_transfer_bytes,
                &|_| true,
            );
            records.extend(r.messages);
        }
        Ok((records, rest))
    }

    /// NOTIFICATION: whether a pop of `group` would find a message now (the group's retry
    /// topic, then `queue_id` of `topic` or all its queues; with `order`, a FIFO queue blocked
    /// by messages in flight has none to give, and the retry topic is not looked at).
    pub async fn has_message(
        &self,
        inner: &BrokerInner,
        group: &str,
        topic: &str,
        queue_id: i32,
        order: bool,
    ) -> Result<bool, Refusal> {
        self.ensure_rebuilt(inner).await?;
        let now = now_ms();
        for (t, q, _) in self.candidates(inner, group, topic, queue_id, order)? {
            let key = (group.to_string(), t, q);
            if order {
                // In flight and not yet visible again: blocked; all visible again: a pop
                // delivers them again.
                let inflight: Vec<bool> = self
                    .state
                    .lock()
                    .get(&key)
                    .map(|qs| {
                        qs.inflight
                            .values()
                            .map(|f| f.deadline().min(now.saturating_add(f.invisible_ms)) > now)
                            .collect()
                    })
                    .unwrap_or_default();
                if inflight.iter().any(|invisible| *invisible) {
                    continue;
                }
                if !inflight.is_empty() {
                    return Ok(true);
                }
            }
            if inner.store.get_max_offset_in_queue(&key.1, q) > self.peek_start(inner, &key) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The queues a pop looks at, in order, as `(topic, queue, is_retry)`: the group's retry
    /// topic's queues first (never for FIFO: a failed message is popped again in its place),
    /// then `queue_id` of `topic`, or all its queues starting at the next round-robin one.
    fn candidates(
        &self,
        inner: &BrokerInner,
        group: &str,
        topic: &str,
        queue_id: i32,
        order: bool,
    ) -> Result<Vec<(String, i32, bool)>, Refusal> {
        let config = inner.topics.get(topic).ok_or_else(|| {
            Refusal::new(
                response_code::TOPIC_NOT_EXIST,
                format!("topic[{topic}] not exist, apply first please!"),
            )
        })?;
        let mut candidates: Vec<(String, i32, bool)> = Vec::new();
        let retry = retry_topic(group, topic);
        // FIFO never uses the retry topic: a failed message is popped again in its place.
        if let Some(rc) = inner.topics.get(&retry).filter(|_| !order) {
            for q in 0..rc.read_queue_nums {
                candidates.push((retry.clone(), q, true));
            }
        }
        if queue_id >= 0 {
            if queue_id >= config.read_queue_nums {
                return Err(Refusal::system_error(format!(
                    "queueId[{queue_id}] is illegal, topic:[{topic}] topicConfig.readQueueNums:[{}]",
                    config.read_queue_nums
                )));
            }
            candidates.push((topic.to_string(), queue_id, false));
        } else {
            let n = config.read_queue_nums.max(1) as i64;
            let start = self
                .round_robin
                .fetch_add(1, Ordering::Relaxed)
                .rem_euclid(n);
            for i in 0..n {
                candidates.push((topic.to_string(), ((start + i) % n) as i32, false));
            }
        }
        Ok(candidates)
    }

    /// Pops up to `remaining` messages of one candidate queue into `out`, under the queue's
    /// lock: from the pop offset (FIFO: only when the gate is open, or the expired messages
    /// again), storing their checkpoints durably before they are handed out. Counts what is
    /// left in the queue into `out.rest` (the whole queue's rest when `remaining` is 0).
    async fn pop_queue(
        &self,
        inner: &BrokerInner,
        request: &PopRequest<'_>,
        (t, q, is_retry): (String, i32, bool),
        remaining: usize,
        out: &mut PopResult,
    ) -> Result<(), Refusal> {
        let key = (request.group.to_string(), t.clone(), q);
        let lock = self.lock_of(&key);
        let _guard = lock.lock().await;
        let committed = inner
            .metadata
            .query_offset(request.group, &t, q)
            .ok()
            .flatten();
        let (min, max_off) = (
            inner.store.get_min_offset_in_queue(&t, q),
            inner.store.get_max_offset_in_queue(&t, q),
        );
        // A lite topic's queue that expired (its offsets went with it) starts at its cut, not
        // at its end: everything from the cut on came after the expiry, and a subscriber that
        // had read everything before it must still get that.
        // (Asked only when it decides: no committed offset, a start from the end.)
        let from_max = request.init_from_max
            && !is_retry
            && (committed.is_some() || inner.lite.expired_at(&t).is_none());
        let start = self.pop_start(&key, committed, from_max, min, max_off);
        if remaining == 0 {
            out.rest += (max_off - start).max(0);
            return Ok(());
        }
        if request.order {
            match self
                .fifo_gate(
                    inner,
                    &key,
                    remaining,
                    request.pop_time,
                    request.invisible_ms,
                )
                .await?
            {
                FifoGate::Open => {}
                FifoGate::Blocked => {
                    out.rest += (max_off - start).max(0);
                    return Ok(());
                }
                FifoGate::Again(again) => {
                    out.rest += (max_off - start).max(0);
                    out.messages.extend(again);
                    return Ok(());
                }
            }
        }
        let r = inner.store.get_messages_matching(
            request.group,
            &t,
            q,
            start,
            remaining as i32,
            inner.config.max_transfer_bytes,
            &|code| is_retry || request.filter.accepts(code),
            &|record| is_retry || request.filter.accepts_record(record),
        );
        let next = match r.status {
            GetMessageStatus::Found | GetMessageStatus::NoMatchedMessage => r.next_begin_offset,
            GetMessageStatus::OffsetTooSmall | GetMessageStatus::OffsetFoundNull => {
                r.next_begin_offset
            }
            _ => start,
        };
        let picked = self.check_out(inner, request, &key, &r, next).await?;
        out.rest += (max_off - next).max(0);
        hand_out(inner, request, (q, is_retry), picked, out)
    }

    /// Where a pop of `key`'s queue starts: its pop offset, moved up to the group's committed
    /// offset (or, with none, the queue's max when `from_max`, else its min) and never below the
    /// queue's min.
    fn pop_start(
        &self,
        key: &QueueKey,
        committed: Option<i64>,
        from_max: bool,
        min: i64,
        max_off: i64,
    ) -> i64 {
        let mut st = self.state.lock();
        let qs = st.entry(key.clone()).or_default();
        let base = match committed {
            Some(c) => c,
            None if from_max => max_off,
            None => min,
        };
        qs.pop_offset = qs.pop_offset.max(base).max(min);
        qs.pop_offset
    }

    /// Stores one checkpoint for the messages read (durably, before any leaves), then records
    /// them in flight, moves the pop offset to `next` and advances the consumer offset. Returns each
    /// message as `(record, queue offset, reconsume times)`.
    async fn check_out(
        &self,
        inner: &BrokerInner,
        request: &PopRequest<'_>,
        key: &QueueKey,
        r: &crate::store::GetMessageResult,
        next: i64,
    ) -> Result<Vec<(bytes::Bytes, i64, i32)>, Refusal> {
        let (pop_time, invisible_ms, order) =
            (request.pop_time, request.invisible_ms, request.order);
        let mut picked = Vec::new();
        for (rec, off) in r.messages.iter().zip(&r.message_queue_offsets) {
            picked.push((rec.clone(), *off, record_reconsume_times(rec)));
        }
        if !picked.is_empty() {
            let msgs: Vec<(i64, i32)> = picked.iter().map(|(_, o, rt)| (*o, *rt)).collect();
            let ck = PopRecord::batch(key, &msgs, pop_time, invisible_ms, order);
            Self::persist(inner, &[ck]).await?;
        }
        {
            let mut st = self.state.lock();
            let qs = st.entry(key.clone()).or_default();
            for (_, off, reconsume) in &picked {
                qs.inflight.insert(
                    *off,
                    InFlight::new(pop_time, invisible_ms, *reconsume, order, pop_time),
                );
            }
            qs.pop_offset = qs.pop_offset.max(next);
        }
        self.advance_offset(inner, key);
        Ok(picked)
    }

    /// The group's consumer offset of a queue: the first message still in flight, or the pop
    /// offset when none is.
    fn advance_offset(&self, inner: &BrokerInner, key: &QueueKey) {
        let target = {
            let st = self.state.lock();
            let Some(qs) = st.get(key) else { return };
            qs.inflight.keys().next().copied().unwrap_or(qs.pop_offset)
        };
        let (group, topic, q) = key;
        let current = inner.metadata.query_offset(group, topic, *q).ok().flatten();
        if current.is_none_or(|c| c < target) {
            if let Err(e) = inner.metadata.commit_offset(group, topic, *q, target) {
                tracing::warn!(error = %e, "cannot commit the POP consumer offset");
            }
        }
    }

    fn key_for(group: &str, topic: &str, handle: &Handle) -> QueueKey {
        // RocketMQ's clients ack a retried message with the retry topic's own name; ours and
        // the proxy name the original topic.
        let t = if handle.retry && !topic.starts_with(RETRY_GROUP_TOPIC_PREFIX) {
            retry_topic(group, topic)
        } else {
            topic.to_string()
        };
        (group.to_string(), t, handle.queue_id)
    }

    /// ACK_MESSAGE: the handle must match a message in flight for this group.
    pub async fn ack(
        &self,
        inner: &BrokerInner,
        group: &str,
        topic: &str,
        handle: &Handle,
    ) -> Result<(), Refusal> {
        let held = self.hold(inner, group, topic, handle.clone()).await?;
        self.ack_held(inner, held).await
    }

    /// Checks that `handle` names a message in flight for `group` (as an ack would) and keeps
    /// its queue locked until the returned [`HeldHandle`] is dropped or acked with
    /// [`PopService::ack_held`]: nothing can ack, revive or change it in between.
    pub async fn hold(
        &self,
        inner: &BrokerInner,
        group: &str,
        topic: &str,
        handle: Handle,
    ) -> Result<HeldHandle, Refusal> {
        self.ensure_rebuilt(inner).await?;
        let key = Self::key_for(group, topic, &handle);
        let guard = self.lock_of(&key).lock_owned().await;
        self.check_in_flight(&key, &handle)?;
        Ok(HeldHandle {
            _guard: guard,
            key,
            handle,
        })
    }

    /// The message a held handle names, read from its copy, when retention had it copied
    /// forward (`None` while it is read from its queue).
    pub fn copied_message(
        &self,
        inner: &BrokerInner,
        held: &HeldHandle,
    ) -> Option<message::MessageExt> {
        let moved = self
            .state
            .lock()
            .get(&held.key)
            .and_then(|qs| qs.inflight.get(&held.handle.queue_offset))
            .and_then(|f| f.moved)?;
        Self::stored_message(inner, &held.key, held.handle.queue_offset, Some(moved))
    }

    /// Acknowledges a held handle: its ack record is stored durably, then the message leaves
    /// the in-flight table and the queue lock is released.
    pub async fn ack_held(&self, inner: &BrokerInner, held: HeldHandle) -> Result<(), Refusal> {
        let (key, handle) = (&held.key, &held.handle);
        self.persist_acks(
            inner,
            PopRecord::done(key, vec![(handle.queue_offset, handle.pop_time)]),
        )
        .await?;
        if let Some(qs) = self.state.lock().get_mut(key) {
            qs.inflight.remove(&handle.queue_offset);
        }
        self.advance_offset(inner, key);
        Ok(())
    }

    /// BATCH_ACK_MESSAGE for one queue: acks the messages at `offsets` of the queue `handle`
    /// names (its queue id, topic type and pop time; its offset is not used), all in one acks
    /// record. Every offset must be in flight with that pop time; the others are refused (the
    /// first refusal is returned) and the rest still acked.
    pub async fn ack_offsets(
        &self,
        inner: &BrokerInner,
        group: &str,
        topic: &str,
        handle: &Handle,
        offsets: &[i64],
    ) -> Result<(), Refusal> {
        self.ensure_rebuilt(inner).await?;
        let key = Self::key_for(group, topic, handle);
        let lock = self.lock_of(&key);
        let _guard = lock.lock().await;
        let mut first_error = None;
        let mut acked = Vec::with_capacity(offsets.len());
        for &offset in offsets {
            let one = Handle {
                queue_offset: offset,
                ..handle.clone()
            };
            match self.check_in_flight(&key, &one) {
                Ok(_) => acked.push((offset, handle.pop_time)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if !acked.is_empty() {
            self.persist_acks(inner, PopRecord::done(&key, acked.clone()))
                .await?;
            if let Some(qs) = self.state.lock().get_mut(&key) {
                for (offset, _) in &acked {
                    qs.inflight.remove(offset);
                }
            }
            self.advance_offset(inner, &key);
        }
        match first_error {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    fn check_in_flight(&self, key: &QueueKey, handle: &Handle) -> Result<InFlight, Refusal> {
        let st = self.state.lock();
        let found = st
            .get(key)
            .and_then(|qs| qs.inflight.get(&handle.queue_offset))
            .copied();
        match found {
            Some(f) if f.pop_time == handle.pop_time => Ok(f),
            Some(_) => Err(Refusal::new(
                response_code::NO_MESSAGE,
                "receipt handle is stale: the message's invisible time was changed (use the handle ChangeInvisibleTime returned)",
            )),
            None => Err(Refusal::new(
                response_code::NO_MESSAGE,
                format!(
                    "no message in flight for group {} at {}/{}/{} with this receipt handle: already acknowledged, expired and redelivered, or popped by another group",
                    key.0, key.1, key.2, handle.queue_offset
                ),
            )),
        }
    }

    /// CHANGE_MESSAGE_INVISIBLETIME: a new checkpoint (pop time now) replaces the old one, whose
    /// handle stops working. Returns the new pop time.
    pub async fn change_invisible(
        &self,
        inner: &BrokerInner,
        group: &str,
        topic: &str,
        handle: &Handle,
        invisible_ms: i64,
    ) -> Result<i64, Refusal> {
        self.ensure_rebuilt(inner).await?;
        let key = Self::key_for(group, topic, handle);
        let lock = self.lock_of(&key);
        let _guard = lock.lock().await;
        let old = self.check_in_flight(&key, handle)?;
        let now = now_ms();
        // The new checkpoint must replace the old one when the revive topic is replayed,
        // which keeps the later pop time: later than the old one even if that came from a
        // clock ahead of ours (its deadline is still `invisible_ms` from now).
        let pop_time = now.max(old.pop_time.saturating_add(1));
        Self::persist(
            inner,
            &[
                PopRecord::Ck {
                    g: key.0.clone(),
                    t: key.1.clone(),
                    q: key.2,
                    o: handle.queue_offset,
                    pt: pop_time,
                    it: invisible_ms,
                    rt: old.reconsume_times,
                    fifo: old.fifo,
                },
                PopRecord::Ack {
                    g: key.0.clone(),
                    t: key.1.clone(),
                    q: key.2,
                    o: handle.queue_offset,
                    pt: old.pop_time,
                },
            ],
        )
        .await?;
        if let Some(qs) = self.state.lock().get_mut(&key) {
            qs.inflight.insert(
                handle.queue_offset,
                InFlight::new(pop_time, invisible_ms, old.reconsume_times, old.fifo, now)
                    .reading(old.moved),
            );
        }
        Ok(pop_time)
    }

    /// Stores again, at the head of the log, every message in flight whose record (the
    /// original, or its latest copy) lies below the CommitLog offset `limit`, so that retention
    /// can delete the segments below it (as the timers roll, see [`crate::timer`]). Each copy
    /// is one record of the revive topic holding the message and its checkpoint (see
    /// [`POP_COPY_OF`]): the message stays in flight with the same pop time and deadline, so
    /// its receipt handle keeps working (ack, ChangeInvisibleTime, send-back), and a revive
    /// re-puts the copy once. Nothing is put into the message's own queue, so no consumer
    /// gets it again. Returns how many were copied; a message the store refuses as illegal is
    /// skipped, any other failure stops the round (retried next round).
    pub async fn roll_below(&self, inner: &BrokerInner, limit: i64) -> usize {
        if self.ensure_rebuilt(inner).await.is_err() {
            return 0;
        }
        let all: Vec<(QueueKey, i64, Option<i64>)> = self
            .state
            .lock()
            .iter()
            .flat_map(|(k, qs)| {
                qs.inflight
                    .iter()
                    .map(|(o, f)| (k.clone(), *o, f.moved))
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut rolled = 0;
        for (key, offset, moved) in all {
            if Self::held_at(inner, &key, offset, moved).is_none_or(|phy| phy >= limit) {
                continue;
            }
            match self.roll_one(inner, &key, offset, limit).await {
                Ok(true) => rolled += 1,
                Ok(false) => {}
                // This message cannot be copied (e.g. its properties with the checkpoint are
                // too long): it keeps its segment, the others still move.
                Err(Refusal { code, remark: why }) if code == response_code::MESSAGE_ILLEGAL => {
                    tracing::warn!(code, %why, group = %key.0, topic = %key.1, queue = key.2, offset, "a message in flight cannot be copied forward; its segment stays until it is acked or revived");
                }
                // The store refuses writes: retried next round.
                Err(Refusal { code, remark: why }) => {
                    tracing::warn!(code, %why, group = %key.0, topic = %key.1, queue = key.2, offset, "cannot copy a message in flight forward; will retry");
                    break;
                }
            }
        }
        if rolled > 0 {
            tracing::info!(
                rolled,
                below = limit,
                "POP messages in flight stored again at the head of the log so that retention can delete the segments they were in"
            );
        }
        rolled
    }

    /// Copies the message in flight at `offset` of `key`'s queue forward, under the queue's
    /// lock, if it is still in flight and still held below `limit` (so a message is copied at
    /// most once per roll). Whether it was copied.
    async fn roll_one(
        &self,
        inner: &BrokerInner,
        key: &QueueKey,
        offset: i64,
        limit: i64,
    ) -> Result<bool, Refusal> {
        let lock = self.lock_of(key);
        let _guard = lock.lock().await;
        let (f, pop_offset) = {
            let st = self.state.lock();
            let Some(qs) = st.get(key) else {
                return Ok(false);
            };
            let Some(f) = qs.inflight.get(&offset).copied() else {
                return Ok(false);
            };
            (f, qs.pop_offset)
        };
        if Self::held_at(inner, key, offset, f.moved).is_none_or(|phy| phy >= limit) {
            return Ok(false);
        }
        let Some(m) = Self::stored_message(inner, key, offset, f.moved) else {
            tracing::warn!(group = %key.0, topic = %key.1, queue = key.2, offset, "in-flight message no longer in the store; nothing to copy");
            return Ok(false);
        };
        let moved = Moved {
            g: key.0.clone(),
            t: key.1.clone(),
            q: key.2,
            o: offset,
            pt: f.pop_time,
            it: f.invisible_ms,
            rt: f.reconsume_times,
            fifo: f.fifo,
            po: pop_offset,
            phy: m.commit_log_offset,
            sts: m.store_timestamp,
            sf: m.sys_flag,
            pto: m.prepared_transaction_offset,
            mid: m.msg_id.clone(),
        };
        let state = serde_json::to_string(&moved).map_err(|e| {
            Refusal::system_error(format!("cannot encode the state of a POP copy: {e}"))
        })?;
        let topic = revive_topic(&inner.config.cluster_name);
        ensure_system_topic(inner, &topic, 1)?;
        let mut msg = m.message.clone();
        msg.topic = topic;
        msg.set_property(POP_COPY_OF, state);
        let mut bm = BrokerMessage::new(msg, 0);
        // An ordinary record of the revive topic (a committed message's flag would do too;
        // a prepared one would get no queue entry).
        bm.sys_flag = sys_flag::reset_transaction_value(m.sys_flag, sys_flag::TRANSACTION_NOT_TYPE);
        bm.born_timestamp = m.born_timestamp;
        bm.born_host = m.born_host;
        bm.reconsume_times = m.reconsume_times;
        let put = inner.store_state_copy(vec![bm]).await.map_err(|e| {
            let Refusal { code, remark } = Refusal::from(e);
            Refusal::new(
                code,
                format!("cannot store a copy of a POP message: {remark}"),
            )
        })?;
        if let Some(f) = self
            .state
            .lock()
            .get_mut(key)
            .and_then(|qs| qs.inflight.get_mut(&offset))
        {
            f.moved = Some(put.queue_offset);
        }
        Ok(true)
    }

    /// One revive round: every checkpoint past its invisible time goes to the retry topic (or
    /// the DLQ) and is marked revived, a queue's together. Returns how many were revived.
    pub async fn revive_expired(&self, inner: &BrokerInner) -> usize {
        if self.ensure_rebuilt(inner).await.is_err() {
            return 0;
        }
        let now = now_ms();
        let expired: Vec<(QueueKey, i64)> = {
            let mut st = self.state.lock();
            st.iter_mut()
                .flat_map(|(k, qs)| {
                    qs.inflight.values_mut().for_each(|f| f.clamp(now));
                    qs.inflight
                        .iter()
                        .filter(|(_, f)| !f.fifo && f.deadline() <= now)
                        .map(|(o, _)| (k.clone(), *o))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let mut by_queue: HashMap<QueueKey, Vec<i64>> = HashMap::new();
        for (key, offset) in expired {
            by_queue.entry(key).or_default().push(offset);
        }
        let mut revived = 0;
        'queues: for (key, offsets) in by_queue {
            // A bounded group at a time: its re-puts in flight together, its revived record
            // well below the store's largest message.
            for chunk in offsets.chunks(REVIVE_GROUP) {
                match self.revive_queue(inner, &key, chunk, now).await {
                    Ok(n) => revived += n,
                    Err(Refusal { code, remark: why }) => {
                        tracing::warn!(code, %why, group = %key.0, topic = %key.1, queue = key.2, "revive failed; will retry");
                        break 'queues;
                    }
                }
            }
        }
        revived
    }

    /// Revives the messages at `offsets` of `key`'s queue still in flight and past their
    /// deadline at `now`, under the queue's lock: re-puts them (together: the store writes
    /// them as one group), then marks the re-put ones revived in one record. A crash in
    /// between delivers a message twice, never zero times. Returns how many were revived.
    async fn revive_queue(
        &self,
        inner: &BrokerInner,
        key: &QueueKey,
        offsets: &[i64],
        now: i64,
    ) -> Result<usize, Refusal> {
        let lock = self.lock_of(key);
        let _guard = lock.lock().await;
        let due: Vec<(i64, InFlight)> = {
            let st = self.state.lock();
            let Some(qs) = st.get(key) else {
                return Ok(0);
            };
            offsets
                .iter()
                .filter_map(|o| qs.inflight.get(o).map(|f| (*o, *f)))
                .filter(|(_, f)| f.deadline() <= now)
                .collect()
        };
        if due.is_empty() {
            return Ok(0);
        }
        let puts = due
            .iter()
            .map(|(o, f)| self.requeue(inner, key, (*o, f.moved), f.reconsume_times + 1, false));
        let outcomes = futures::future::join_all(puts).await;
        let mut first_error = None;
        let mut requeued = Vec::with_capacity(due.len());
        for ((o, f), outcome) in due.iter().zip(outcomes) {
            match outcome {
                Ok(()) => requeued.push((*o, f.pop_time)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if !requeued.is_empty() {
            Self::persist(
                inner,
                &[PopRecord::Rvs {
                    a: vec![PopRecord::done(key, requeued.clone())],
                }],
            )
            .await?;
            if let Some(qs) = self.state.lock().get_mut(key) {
                for (o, _) in &requeued {
                    qs.inflight.remove(o);
                }
            }
            self.advance_offset(inner, key);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(requeued.len()),
        }
    }

    async fn mark_revived(
        &self,
        inner: &BrokerInner,
        key: &QueueKey,
        offset: i64,
        pop_time: i64,
    ) -> Result<(), Refusal> {
        let (group, topic, q) = key;
        Self::persist(
            inner,
            &[PopRecord::Revived {
                g: group.clone(),
                t: topic.clone(),
                q: *q,
                o: offset,
                pt: pop_time,
            }],
        )
        .await?;
        if let Some(qs) = self.state.lock().get_mut(key) {
            qs.inflight.remove(&offset);
        }
        self.advance_offset(inner, key);
        Ok(())
    }

    /// Re-puts the message at `offset` of `key`'s queue (read from its copy when `moved`)
    /// into the group's retry topic with `attempts` deliveries counted, or into its DLQ when
    /// `attempts` passes the maximum (or `dlq` says so).
    async fn requeue(
        &self,
        inner: &BrokerInner,
        key: &QueueKey,
        (offset, moved): (i64, Option<i64>),
        attempts: i32,
        dlq: bool,
    ) -> Result<(), Refusal> {
        let (group, topic, q) = key;
        let original = Self::stored_message(inner, key, offset, moved);
        let Some(m) = original else {
            tracing::warn!(%group, %topic, queue = q, offset, "in-flight message no longer in the store; dropping its checkpoint");
            return Ok(());
        };
        let origin_topic = m
            .message
            .property(property::RETRY_TOPIC)
            .map(str::to_string)
            .unwrap_or_else(|| topic.clone());
        let target = if dlq || attempts > max_reconsume_times(inner, group) {
            dlq_topic(group)
        } else {
            retry_topic(group, &origin_topic)
        };
        ensure_system_topic(inner, &target, 1)?;
        let mut msg = m.message.clone();
        msg.topic = target.clone();
        msg.set_property(property::RETRY_TOPIC, origin_topic.clone());
        if msg.property(property::ORIGIN_MESSAGE_ID).is_none() {
            let id = m
                .message
                .uniq_key()
                .map(str::to_string)
                .unwrap_or_else(|| m.msg_id.clone());
            msg.set_property(property::ORIGIN_MESSAGE_ID, id);
        }
        msg.set_property(property::REAL_TOPIC, origin_topic);
        let mut bm = BrokerMessage::new(msg, 0);
        bm.reconsume_times = attempts;
        bm.born_timestamp = m.born_timestamp;
        bm.born_host = m.born_host;
        inner.store_durably(vec![bm]).await?;
        let to_dlq = target.starts_with(DLQ_GROUP_TOPIC_PREFIX);
        let origin = m
            .message
            .property(property::RETRY_TOPIC)
            .unwrap_or(topic.as_str());
        inner.metrics.pop_revived(origin, group, to_dlq);
        if to_dlq {
            inner.metrics.sent_to_dlq(origin, group);
            tracing::warn!(%group, topic = %topic, offset, attempts, dlq = %target, "message moved to the dead-letter queue");
        }
        Ok(())
    }

    /// FIFO: a queue with messages in flight for the group is blocked until they are acked or
    /// expire; expired ones are popped again first, in order, with their delivery counted (past
    /// the maximum they go to the DLQ and the queue moves on). Called under the queue lock.
    async fn fifo_gate(
        &self,
        inner: &BrokerInner,
        key: &QueueKey,
        max: usize,
        pop_time: i64,
        invisible_ms: i64,
    ) -> Result<FifoGate, Refusal> {
        loop {
            let inflight = self.clamped_inflight(key, pop_time);
            if inflight.is_empty() {
                return Ok(FifoGate::Open);
            }
            if inflight.iter().any(|(_, f)| f.deadline() > pop_time) {
                return Ok(FifoGate::Blocked);
            }
            // All expired. The first one past the maximum goes to the DLQ; then look again.
            if let Some((o, f)) = inflight
                .iter()
                .find(|(_, f)| f.reconsume_times + 1 > max_reconsume_times(inner, &key.0))
            {
                self.requeue(inner, key, (*o, f.moved), f.reconsume_times + 1, true)
                    .await?;
                self.mark_revived(inner, key, *o, f.pop_time).await?;
                continue;
            }
            let again = self
                .pop_again(inner, key, &inflight, max, pop_time, invisible_ms)
                .await?;
            return Ok(FifoGate::Again(again));
        }
    }

    /// The messages in flight of `key`'s queue, in offset order, after capping their deadlines
    /// at their invisible time from `pop_time` (see `InFlight::clamp`).
    fn clamped_inflight(&self, key: &QueueKey, pop_time: i64) -> Vec<(i64, InFlight)> {
        self.state
            .lock()
            .get_mut(key)
            .map(|qs| {
                qs.inflight.values_mut().for_each(|f| f.clamp(pop_time));
                qs.inflight.iter().map(|(o, f)| (*o, *f)).collect()
            })
            .unwrap_or_default()
    }

    /// FIFO: pops the first `max` expired in-flight messages of `key`'s queue again, with their
    /// delivery counted: new checkpoints and the old ones' revived marks are stored durably
    /// before the messages are recorded in flight and handed out.
    async fn pop_again(
        &self,
        inner: &BrokerInner,
        key: &QueueKey,
        inflight: &[(i64, InFlight)],
        max: usize,
        pop_time: i64,
        invisible_ms: i64,
    ) -> Result<Vec<Popped>, Refusal> {
        let (_, _, q) = key;
        let mut again = Vec::new();
        for (o, f) in inflight.iter().take(max) {
            let Some(rec) = Self::stored_record(inner, key, *o, f.moved)? else {
                continue;
            };
            again.push((rec, *o, f.reconsume_times + 1, f.pop_time));
        }
        let moved: HashMap<i64, Option<i64>> =
            inflight.iter().map(|(o, f)| (*o, f.moved)).collect();
        // The new checkpoints must replace the old ones when the revive topic is replayed,
        // which keeps the later pop time: later than the old ones even if those came from a
        // clock ahead of ours (the deadline is still `invisible_ms` from now).
        let pt = again
            .iter()
            .map(|(_, _, _, old_pt)| old_pt.saturating_add(1))
            .fold(pop_time, i64::max);
        let cks = again_records(key, &again, pt, invisible_ms);
        Self::persist(inner, &cks).await?;
        let mut out = Vec::new();
        {
            let mut st = self.state.lock();
            let qs = st.entry(key.clone()).or_default();
            for (_, o, rt, _) in &again {
                qs.inflight.insert(
                    *o,
                    InFlight::new(pt, invisible_ms, *rt, true, pop_time)
                        .reading(moved.get(o).copied().flatten()),
                );
            }
        }
        for (rec, o, rt, _) in again {
            let handle = Handle {
                ck_offset: o,
                pop_time: pt,
                invisible_ms,
                revive_qid: 0,
                retry: false,
                broker_name: inner.config.broker_name.clone(),
                queue_id: *q,
                queue_offset: o,
            };
            out.push(Popped {
                record: with_handle(&rec, &handle, false, Some(rt))?,
                queue_id: *q,
                queue_offset: o,
                retry: false,
            });
        }
        Ok(out)
    }

    /// Every queue a group pops, for metrics: `((group, topic, queue), next offset to hand
    /// out, messages in flight)`.
    pub fn queue_positions(&self) -> Vec<((String, String, i32), i64, usize)> {
        self.state
            .lock()
            .iter()
            .map(|(k, qs)| (k.clone(), qs.pop_offset, qs.inflight.len()))
            .collect()
    }

    /// Checkpoints past their invisible time at `now` that are not revived yet (FIFO ones are
    /// popped again in place, not revived): the revive backlog.
    pub fn revive_backlog(&self, now: i64) -> usize {
        self.state
            .lock()
            .values()
            .flat_map(|qs| qs.inflight.values())
            .filter(|f| !f.fifo && f.deadline() <= now)
            .count()
    }

    /// Messages in flight per (topic, queue) of a group (for admin tools).
    pub fn in_flight(&self, group: &str) -> Vec<(String, i32, usize)> {
        let st = self.state.lock();
        let mut out: Vec<(String, i32, usize)> = st
            .iter()
            .filter(|(k, _)| k.0 == group)
            .map(|(k, qs)| (k.1.clone(), k.2, qs.inflight.len()))
            .collect();
        out.sort();
        out
    }
}

/// Applies one revive record to the in-flight table; `now` is this broker's clock at the replay.
fn apply(table: &mut HashMap<QueueKey, QueueState>, record: PopRecord, now: i64) {
    match record {
        PopRecord::Ck {
            g,
            t,
            q,
            o,
            pt,
            it,
            rt,
            fifo,
        } => {
            let qs = table.entry((g, t, q)).or_default();
            qs.pop_offset = qs.pop_offset.max(o + 1);
            let old = qs.inflight.get(&o);
            if old.is_none_or(|f| f.pop_time < pt) {
                // A new checkpoint of a message copied forward reads the copy.
                let moved = old.and_then(|f| f.moved);
                qs.inflight
                    .insert(o, InFlight::new(pt, it, rt, fifo, now).reading(moved));
            }
        }
        PopRecord::Ack { g, t, q, o, pt } | PopRecord::Revived { g, t, q, o, pt } => {
            if let Some(qs) = table.get_mut(&(g, t, q)) {
                end_checkpoint(qs, o, pt);
            }
        }
        PopRecord::Cks {
            g,
            t,
            q,
            so,
            d,
            pt,
            it,
            rt,
            fifo,
        } => {
            for (i, diff) in d.iter().enumerate() {
                apply(
                    table,
                    PopRecord::Ck {
                        g: g.clone(),
                        t: t.clone(),
                        q,
                        o: so.saturating_add(*diff),
                        pt,
                        it,
                        rt: rt.get(i).copied().unwrap_or(0),
                        fifo,
                    },
                    now,
                );
            }
        }
        PopRecord::Acks { a } | PopRecord::Rvs { a } => {
            for QueueDone { g, t, q, d } in a {
                if let Some(qs) = table.get_mut(&(g, t, q)) {
                    for (o, pt) in d {
                        end_checkpoint(qs, o, pt);
                    }
                }
            }
        }
    }
}

/// Most `(offset, pop time)` pairs in one acks or revived record (about 30 KiB of JSON), far
/// below the store's largest message.
const MAX_DONE_PER_RECORD: usize = 1024;

/// `done` split into the contents of records of at most [`MAX_DONE_PER_RECORD`] pairs each.
fn records_of(done: Vec<QueueDone>) -> Vec<Vec<QueueDone>> {
    let mut records: Vec<Vec<QueueDone>> = vec![Vec::new()];
    let mut room = MAX_DONE_PER_RECORD;
    for qd in done {
        let QueueDone { g, t, q, mut d } = qd;
        while !d.is_empty() {
            if room == 0 {
                records.push(Vec::new());
                room = MAX_DONE_PER_RECORD;
            }
            let rest = d.split_off(d.len().min(room));
            room -= d.len();
            if let Some(record) = records.last_mut() {
                record.push(QueueDone {
                    g: g.clone(),
                    t: t.clone(),
                    q,
                    d,
                });
            }
            d = rest;
        }
    }
    records.retain(|r| !r.is_empty());
    records
}

/// An ack or a revived mark of the checkpoint of offset `o` popped at `pt`: the message leaves
/// the table if that checkpoint is still its latest.
fn end_checkpoint(qs: &mut QueueState, o: i64, pt: i64) {
    if qs.inflight.get(&o).is_some_and(|f| f.pop_time == pt) {
        qs.inflight.remove(&o);
    }
}

/// Applies a copy of a message in flight, at `at` of the revive topic: its checkpoint (the same
/// pop time, so the same receipt handle) now reads the copy. The checkpoints of the original
/// may be gone with their segments: the copy restores it.
fn apply_copy(table: &mut HashMap<QueueKey, QueueState>, mv: Moved, at: i64, now: i64) {
    let qs = table.entry((mv.g, mv.t, mv.q)).or_default();
    qs.pop_offset = qs.pop_offset.max(mv.o + 1).max(mv.po);
    if qs.inflight.get(&mv.o).is_none_or(|f| f.pop_time <= mv.pt) {
        qs.inflight.insert(
            mv.o,
            InFlight::new(mv.pt, mv.it, mv.rt, mv.fifo, now).reading(Some(at)),
        );
    }
}

/// A group's retries before its DLQ: `retryMaxTimes` of its subscription group config
/// (UPDATE_AND_CREATE_SUBSCRIPTIONGROUP), else 16.
pub fn max_reconsume_times(inner: &BrokerInner, group: &str) -> i32 {
    inner
        .metadata
        .get_subscription_group(group)
        .ok()
        .flatten()
        .and_then(|raw| serde_json::from_slice::<serde_json::Value>(&raw).ok())
        .and_then(|v| v["retryMaxTimes"].as_i64())
        .map_or(DEFAULT_MAX_RECONSUME_TIMES, |n| n.clamp(0, 10_000) as i32)
}

/// A boolean of a group's `SubscriptionGroupConfig` (as stored), `default` when the group has
/// none or does not set it. (On the pull path: parsed only when the stored config names it.)
fn group_flag(inner: &BrokerInner, group: &str, key: &str, default: bool) -> bool {
    inner
        .metadata
        .get_subscription_group(group)
        .ok()
        .flatten()
        .filter(|raw| raw.windows(key.len()).any(|w| w == key.as_bytes()))
        .and_then(|raw| serde_json::from_slice::<serde_json::Value>(&raw).ok())
        .and_then(|v| v[key].as_bool())
        .unwrap_or(default)
}

/// Refuses consumption by a group whose `consumeEnable` is false (RocketMQ's answer to PULL and
/// POP: NO_PERMISSION, `subscription group no permission, G`).
pub fn check_consume_enable(inner: &BrokerInner, group: &str) -> Result<(), Refusal> {
    if group_flag(inner, group, "consumeEnable", true) {
        Ok(())
    } else {
        Err(Refusal::new(
            response_code::NO_PERMISSION,
            format!("subscription group no permission, {group}"),
        ))
    }
}

/// Refuses pulls of a broadcasting group whose `consumeBroadcastEnable` is false.
pub fn check_broadcast_enable(inner: &BrokerInner, group: &str) -> Result<(), Refusal> {
    let broadcasting = inner.clients.is_broadcasting(group);
    if broadcasting && !group_flag(inner, group, "consumeBroadcastEnable", true) {
        return Err(Refusal::new(
            response_code::NO_PERMISSION,
            format!("the consumer group[{group}] can not consume by broadcast way"),
        ));
    }
    Ok(())
}

/// Creates a system topic (revive, retry, DLQ, timer) on first use.
pub fn ensure_system_topic(inner: &BrokerInner, topic: &str, queues: i32) -> Result<(), Refusal> {
    if inner.topics.get(topic).is_some() {
        return Ok(());
    }
    inner
        .topics
        .upsert(TopicConfig::new(topic, queues))
        .map_err(|e| Refusal::system_error(format!("cannot create topic {topic}: {e}")))?;
    inner.register_trigger.notify_one();
    Ok(())
}

/// The revive records of FIFO messages popped again from `key`'s queue, given as
/// `(record, offset, delivery count, old pop time)`: one new checkpoint of them at pop time
/// `pt`, then the old checkpoints marked revived (in offset order: `pop_again` takes them from
/// the in-flight table).
fn again_records(
    key: &QueueKey,
    again: &[(bytes::Bytes, i64, i32, i64)],
    pt: i64,
    invisible_ms: i64,
) -> Vec<PopRecord> {
    if again.is_empty() {
        return Vec::new();
    }
    let msgs: Vec<(i64, i32)> = again.iter().map(|(_, o, rt, _)| (*o, *rt)).collect();
    let old: Vec<(i64, i64)> = again.iter().map(|(_, o, _, pt)| (*o, *pt)).collect();
    vec![
        PopRecord::batch(key, &msgs, pt, invisible_ms, true),
        PopRecord::Rvs {
            a: vec![PopRecord::done(key, old)],
        },
    ]
}

/// Adds the messages checked out of queue `q` (a retry topic's when `is_retry`) to `out`, each
/// with its receipt handle.
fn hand_out(
    inner: &BrokerInner,
    request: &PopRequest<'_>,
    (q, is_retry): (i32, bool),
    picked: Vec<(bytes::Bytes, i64, i32)>,
    out: &mut PopResult,
) -> Result<(), Refusal> {
    for (rec, off, _) in picked {
        let handle = Handle {
            ck_offset: off,
            pop_time: request.pop_time,
            invisible_ms: request.invisible_ms,
            revive_qid: 0,
            retry: is_retry,
            broker_name: inner.config.broker_name.clone(),
            queue_id: q,
            queue_offset: off,
        };
        out.messages.push(Popped {
            record: with_handle(&rec, &handle, is_retry, None)?,
            queue_id: q,
            queue_offset: off,
            retry: is_retry,
        });
    }
    Ok(())
}

/// The record with its receipt handle in `POP_CK` (and, for a retry message, the original
/// topic back in place), as RocketMQ's POP response carries it. A message of its own topic
/// is copied with the property added ([`patched_with_handle`]); otherwise, or when that does
/// not apply, the record is decoded and encoded again.
fn with_handle(
    record: &[u8],
    handle: &Handle,
    retry: bool,
    reconsume_times: Option<i32>,
) -> Result<bytes::Bytes, Refusal> {
    let text = handle.encode();
    if !retry {
        if let Some(patched) = patched_with_handle(record, &text, reconsume_times) {
            return Ok(patched);
        }
    }
    reencoded_with_handle(record, text, retry, reconsume_times)
}

/// The reconsume times of a stored record, read in place (0 when the record is too short to
/// hold them, as a record that does not decode counted before).
fn record_reconsume_times(record: &[u8]) -> i32 {
    let Some(flag) = message::read_i32(record, message::pos::SYS_FLAG) else {
        return 0;
    };
    let at =
        message::pos::BORN_HOST + message::born_host_len(flag) + 8 + message::store_host_len(flag);
    message::read_i32(record, at).unwrap_or(0)
}

/// [`with_handle`] without decoding: the stored bytes, copied once, with `POP_CK` `\x01`
/// `handle` `\x02` added to the properties (before the store's `__CRC32#` trailer, which is
/// then sealed again for the new bytes), the total size patched and, if given, the reconsume
/// times. `None` when it does not apply (not exactly one well-formed record, a `POP_CK`
/// already there, properties that would grow too long, a trailer that does not seal): the
/// caller re-encodes instead.
fn patched_with_handle(
    record: &[u8],
    handle: &str,
    reconsume_times: Option<i32>,
) -> Option<bytes::Bytes> {
    const KV: u8 = message::NAME_VALUE_SEPARATOR;
    const SEP: u8 = message::PROPERTY_SEPARATOR;
    if message::record_size(record).ok()? != record.len()
        || handle.bytes().any(|b| b == KV || b == SEP)
    {
        return None;
    }
    // The properties end the record (its layout check made sure).
    let props = message::record_properties_str(record)?;
    let props_at = record.len() - props.len();
    let key = property::POP_CK.as_bytes();
    if props.as_bytes().split(|b| *b == SEP).any(|kv| {
        kv.strip_prefix(key)
            .is_some_and(|rest| rest.is_empty() || rest[0] == KV)
    }) {
        return None;
    }
    let trailer_len = if props.len() >= message::RECORD_CRC_TRAILER_LEN
        && props.as_bytes()[props.len() - message::RECORD_CRC_TRAILER_LEN..]
            .starts_with(property::CRC32.as_bytes())
    {
        message::RECORD_CRC_TRAILER_LEN
    } else {
        0
    };
    let before = &props[..props.len() - trailer_len];
    let separate = !before.is_empty() && !before.ends_with(SEP as char);
    let added = usize::from(separate) + property::POP_CK.len() + 1 + handle.len() + 1;
    let new_props_len = props.len() + added;
    if new_props_len > message::MAX_PROPERTIES_LEN {
        return None;
    }
    let total = i32::try_from(record.len() + added).ok()?;
    let mut out = Vec::with_capacity(record.len() + added);
    out.extend_from_slice(&record[..props_at - 2]);
    out.extend_from_slice(&(new_props_len as i16).to_be_bytes());
    out.extend_from_slice(before.as_bytes());
    if separate {
        out.push(message::PROPERTY_SEPARATOR);
    }
    out.extend_from_slice(property::POP_CK.as_bytes());
    out.push(message::NAME_VALUE_SEPARATOR);
    out.extend_from_slice(handle.as_bytes());
    out.push(message::PROPERTY_SEPARATOR);
    out.extend_from_slice(&props.as_bytes()[props.len() - trailer_len..]);
    out[message::pos::TOTAL_SIZE..message::pos::TOTAL_SIZE + 4]
        .copy_from_slice(&total.to_be_bytes());
    if let Some(rt) = reconsume_times {
        let flag = message::read_i32(&out, message::pos::SYS_FLAG)?;
        let at = message::pos::BORN_HOST
            + message::born_host_len(flag)
            + 8
            + message::store_host_len(flag);
        out.get_mut(at..at + 4)?.copy_from_slice(&rt.to_be_bytes());
    }
    if trailer_len > 0 && !message::seal_record_crc(&mut out) {
        return None;
    }
    Some(bytes::Bytes::from(out))
}

/// [`with_handle`] by decoding the record and encoding it again.
fn reencoded_with_handle(
    record: &[u8],
    handle: String,
    retry: bool,
    reconsume_times: Option<i32>,
) -> Result<bytes::Bytes, Refusal> {
    let (m, _) = message::decode_message(record)
        .map_err(|e| Refusal::system_error(format!("stored record unreadable: {e}")))?;
    let mut msg = m.message.clone();
    msg.set_property(property::POP_CK, handle);
    if retry {
        if let Some(origin) = m.message.property(property::RETRY_TOPIC) {
            msg.topic = origin.to_string();
        }
    }
    let meta = RecordMeta {
        queue_id: m.queue_id,
        queue_offset: m.queue_offset,
        physical_offset: m.commit_log_offset,
        sys_flag: m.sys_flag,
        born_timestamp: m.born_timestamp,
        born_host: m.born_host,
        store_timestamp: m.store_timestamp,
        store_host: m.store_host,
        reconsume_times: reconsume_times.unwrap_or(m.reconsume_times),
        prepared_transaction_offset: m.prepared_transaction_offset,
    };
    let mut out = Vec::with_capacity(record.len() + 64);
    message::encode_record(&msg, &meta, false, &mut out)
        .map_err(|e| Refusal::system_error(format!("cannot encode the popped message: {e}")))?;
    Ok(bytes::Bytes::from(out))
}

/// Concatenates popped records into a response body.
pub fn body(messages: &[Popped]) -> bytes::Bytes {
    let mut b = BytesMut::with_capacity(messages.iter().map(|m| m.record.len()).sum());
    for m in messages {
        b.extend_from_slice(&m.record);
    }
    b.freeze()
}

/// Runs revive rounds until aborted, and every second copies forward the messages in flight
/// that keep retention from deleting a segment.
pub async fn revive_loop(inner: Arc<BrokerInner>) {
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round = 0u64;
    loop {
        ticker.tick().await;
        round += 1;
        let n = inner.pop.revive_expired(&inner).await;
        if n > 0 {
            tracing::debug!(revived = n, "POP revive round");
        }
        // Every second: copy forward the messages in flight that keep retention from
        // deleting a segment (only a master copies: a slave replays the copies).
        if round.is_multiple_of(5) {
            if let Some(limit) = inner.store.retention_wanted() {
                inner.pop.roll_below(&inner, limit).await;
            }
        }
    }
}

#[cfg(test)]
mod revive_record_encoding {
    use super::*;

    /// Every revive record variant encodes to a non-empty body that decodes back to itself
    /// (the encoding error `persist` now returns cannot be hit by these types).
    #[test]
    fn every_variant_round_trips() {
        let records = [
            PopRecord::Ck {
                g: "g".into(),
                t: "T\u{1}\"x".into(),
                q: 3,
                o: i64::MAX,
                pt: 1,
                it: 2,
                rt: 4,
                fifo: true,
            },
            PopRecord::Ack {
                g: String::new(),
                t: "T".into(),
                q: -1,
                o: 0,
                pt: i64::MIN,
            },
            PopRecord::Revived {
                g: "g".into(),
                t: "T".into(),
                q: 0,
                o: 5,
                pt: 6,
            },
        ];
        let key: QueueKey = ("g".into(), "T".into(), 2);
        let records = records.into_iter().chain([
            PopRecord::batch(&key, &[(7, 0), (8, 3), (10, 0)], 11, 12, false),
            PopRecord::batch(&key, &[(1, 0), (2, 0)], 11, 12, true),
            PopRecord::Acks {
                a: vec![
                    PopRecord::done(&key, vec![(7, 11), (10, 11)]),
                    PopRecord::done(&("h".into(), "U".into(), 0), vec![(0, 1)]),
                ],
            },
            PopRecord::Rvs {
                a: vec![PopRecord::done(&key, vec![(8, 11)])],
            },
        ]);
        for r in records {
            let body = encode_revive_record(&r).expect("encodes");
            assert!(!body.is_empty());
            let back: PopRecord = serde_json::from_slice(&body).expect("decodes");
            assert_eq!(back, r);
        }
    }
}

#[cfg(test)]
mod replay_records {
    use super::*;

    /// Acks of many offsets are split into records of at most `MAX_DONE_PER_RECORD` pairs,
    /// none lost, none repeated, in order.
    #[test]
    fn many_acks_are_split_into_bounded_records() {
        let a = PopRecord::done(&key(), (0..2500).map(|o| (o, 7)).collect());
        let b = PopRecord::done(&("h".into(), "U".into(), 0), vec![(1, 2)]);
        let records = records_of(vec![a, b]);
        assert_eq!(records.len(), 3);
        for r in &records {
            let n: usize = r.iter().map(|qd| qd.d.len()).sum();
            assert!(n <= MAX_DONE_PER_RECORD);
        }
        let pairs: Vec<(QueueKey, i64)> = records
            .iter()
            .flatten()
            .flat_map(|qd| {
                qd.d.iter()
                    .map(|(o, _)| ((qd.g.clone(), qd.t.clone(), qd.q), *o))
            })
            .collect();
        assert_eq!(pairs.len(), 2501);
        assert_eq!(pairs[2499], (key(), 2499));
        assert_eq!(pairs[2500], (("h".into(), "U".into(), 0), 1));
        assert!(records_of(Vec::new()).is_empty());
    }

    const NOW: i64 = 1_000_000;

    fn replay(bodies: &[&str]) -> HashMap<QueueKey, QueueState> {
        let mut table = HashMap::new();
        for body in bodies {
            let record: PopRecord = serde_json::from_str(body).expect("a revive record");
            apply(&mut table, record, NOW);
        }
        table
    }

    /// `(offset, pop time, delivery count)` of each message in flight of `key`'s queue.
    fn inflight(table: &HashMap<QueueKey, QueueState>, key: &QueueKey) -> Vec<(i64, i64, i32)> {
        table
            .get(key)
            .map(|qs| {
                qs.inflight
                    .iter()
                    .map(|(o, f)| (*o, f.pop_time, f.reconsume_times))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn key() -> QueueKey {
        ("g".into(), "T".into(), 1)
    }

    /// One checkpoint record for a batch (offsets 4, 5, 7 and 8: 6 was filtered out), two of
    /// them acked in one acks record: the other two are in flight with their delivery counts
    /// and the batch's pop time; the pop offset is past the batch.
    #[test]
    fn a_half_acked_batch_replays_to_its_unacked_messages() {
        let ck = encode_revive_record(&PopRecord::batch(
            &key(),
            &[(4, 0), (5, 2), (7, 0), (8, 1)],
            NOW - 10,
            30_000,
            false,
        ))
        .expect("encodes");
        let acks = encode_revive_record(&PopRecord::Acks {
            a: vec![PopRecord::done(&key(), vec![(4, NOW - 10), (8, NOW - 10)])],
        })
        .expect("encodes");
        let table = replay(&[
            std::str::from_utf8(&ck).expect("utf-8"),
            std::str::from_utf8(&acks).expect("utf-8"),
        ]);
        assert_eq!(
            inflight(&table, &key()),
            vec![(5, NOW - 10, 2), (7, NOW - 10, 0)]
        );
        assert_eq!(table[&key()].pop_offset, 9);
        assert_eq!(
            table[&key()].inflight[&5].deadline(),
            NOW - 10 + 30_000,
            "invisible time of the batch"
        );
    }

    /// The records the previous version wrote (one `ck` per message, one `ack` / `rv` each) as
    /// stored in an existing data directory still replay, also mixed with batch records.
    #[test]
    fn per_message_records_of_the_previous_version_replay() {
        let table = replay(&[
            r#"{"k":"ck","g":"g","t":"T","q":1,"o":0,"pt":100,"it":5000,"rt":0}"#,
            r#"{"k":"ck","g":"g","t":"T","q":1,"o":1,"pt":100,"it":5000,"rt":3}"#,
            r#"{"k":"ck","g":"g","t":"T","q":1,"o":2,"pt":100,"it":5000,"rt":0}"#,
            r#"{"k":"ck","g":"g","t":"T","q":1,"o":3,"pt":100,"it":5000,"rt":0,"fifo":true}"#,
            r#"{"k":"ack","g":"g","t":"T","q":1,"o":0,"pt":100}"#,
            r#"{"k":"rv","g":"g","t":"T","q":1,"o":2,"pt":100}"#,
            // A stale ack (an older pop time) does not end the checkpoint.
            r#"{"k":"ack","g":"g","t":"T","q":1,"o":1,"pt":99}"#,
            // Then this version's records of the same queue.
            r#"{"k":"cks","g":"g","t":"T","q":1,"so":4,"d":[0,1],"pt":200,"it":5000}"#,
            r#"{"k":"acks","a":[{"g":"g","t":"T","q":1,"d":[[5,200]]}]}"#,
        ]);
        assert_eq!(
            inflight(&table, &key()),
            vec![(1, 100, 3), (3, 100, 0), (4, 200, 0)]
        );
        assert!(table[&key()].inflight[&3].fifo);
        assert_eq!(table[&key()].pop_offset, 6);
    }

    /// A ChangeInvisibleTime of one message of a batch (a new single checkpoint, the batch's
    /// one acked for it) and a FIFO batch popped again (a new batch, the old ones marked
    /// revived) replay to the latest checkpoint of each message.
    #[test]
    fn replaced_checkpoints_of_a_batch_replay_to_the_latest() {
        let table = replay(&[
            r#"{"k":"cks","g":"g","t":"T","q":1,"so":0,"d":[0,1,2],"pt":100,"it":5000}"#,
            r#"{"k":"ck","g":"g","t":"T","q":1,"o":1,"pt":150,"it":9000,"rt":0}"#,
            r#"{"k":"ack","g":"g","t":"T","q":1,"o":1,"pt":100}"#,
            r#"{"k":"cks","g":"g","t":"T","q":1,"so":0,"d":[0,2],"pt":160,"it":5000,"rt":[1,1],"fifo":true}"#,
            r#"{"k":"rvs","a":[{"g":"g","t":"T","q":1,"d":[[0,100],[2,100]]}]}"#,
        ]);
        assert_eq!(
            inflight(&table, &key()),
            vec![(0, 160, 1), (1, 150, 0), (2, 160, 1)]
        );
    }
}

#[cfg(test)]
mod popped_records {
    use super::*;

    fn stored(props: &[(&str, &str)], append_crc: bool, v6: bool) -> Vec<u8> {
        let mut m = Message::new("TopicA", vec![7u8; 300]);
        for (k, v) in props {
            m.set_property(*k, *v);
        }
        let host: std::net::SocketAddr = if v6 {
            "[::1]:10911".parse().expect("addr")
        } else {
            "127.0.0.1:10911".parse().expect("addr")
        };
        let meta = RecordMeta {
            queue_id: 3,
            queue_offset: 41,
            physical_offset: 9_000,
            born_host: host,
            store_host: host,
            born_timestamp: 11,
            store_timestamp: 12,
            reconsume_times: 2,
            ..RecordMeta::default()
        };
        let mut out = Vec::new();
        message::encode_record(&m, &meta, append_crc, &mut out).expect("encode");
        out
    }

    fn handle() -> Handle {
        Handle {
            ck_offset: 41,
            pop_time: 1_700_000_000_000,
            invisible_ms: 60_000,
            revive_qid: 0,
            retry: false,
            broker_name: "broker-a".into(),
            queue_id: 3,
            queue_offset: 41,
        }
    }

    /// The copied-and-patched record decodes to what decoding and encoding again gives (the
    /// store's CRC trailer apart, which the copy seals anew), for stored records with and
    /// without the trailer, IPv4 and IPv6 hosts, with and without new reconsume times.
    #[test]
    fn patching_gives_what_reencoding_gives() {
        for append_crc in [true, false] {
            for v6 in [false, true] {
                for props in [
                    vec![],
                    vec![("TAGS", "a"), ("KEYS", "k1 k2")],
                    vec![("KEYS", "ключ-ключ-ключ-ключ-ключ")],
                ] {
                    for rt in [None, Some(5)] {
                        let rec = stored(&props, append_crc, v6);
                        let text = handle().encode();
                        let fast = patched_with_handle(&rec, &text, rt).expect("patched");
                        let slow = reencoded_with_handle(&rec, text.clone(), false, rt)
                            .expect("re-encoded");
                        let (mut a, used) = message::decode_message(&fast).expect("decode");
                        assert_eq!(used, fast.len());
                        let (mut b, _) = message::decode_message(&slow).expect("decode");
                        assert_eq!(a.message.property(property::POP_CK), Some(text.as_str()));
                        assert_eq!(a.reconsume_times, rt.unwrap_or(2));
                        if append_crc {
                            assert_eq!(
                                message::check_record(&fast),
                                message::RecordCheck::RecordCrcOk,
                                "the trailer is sealed for the new bytes"
                            );
                        }
                        a.message.properties.remove(property::CRC32);
                        b.message.properties.remove(property::CRC32);
                        a.store_size = 0;
                        b.store_size = 0;
                        assert_eq!(a, b, "crc {append_crc}, v6 {v6}, {props:?}, {rt:?}");
                    }
                }
            }
        }
    }

    /// A record already carrying `POP_CK`, or bytes that are not exactly one record, are left
    /// to the re-encoding path.
    #[test]
    fn patching_declines_what_it_cannot_do_exactly() {
        let text = handle().encode();
        let with_ck = stored(&[(property::POP_CK, "old")], true, false);
        assert!(patched_with_handle(&with_ck, &text, None).is_none());
        let fresh = stored(&[], true, false);
        assert!(patched_with_handle(&fresh[..fresh.len() - 1], &text, None).is_none());
        let mut two = fresh.clone();
        two.extend_from_slice(&fresh);
        assert!(patched_with_handle(&two, &text, None).is_none());
        assert_eq!(record_reconsume_times(&fresh), 2);
        let (m, _) = message::decode_message(
            &with_handle(&with_ck, &handle(), false, None).expect("re-encoded"),
        )
        .expect("decode");
        assert_eq!(m.message.property(property::POP_CK), Some(text.as_str()));
    }
}
