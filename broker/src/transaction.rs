//! Transactional messages (RocketMQ's `TransactionalMessageService`), with their state in the
//! CommitLog.
//!
//! - A prepared send (sys flag TRANSACTION_PREPARED or `TRAN_MSG=true`) is stored as a **half
//!   message** in `RMQ_SYS_TRANS_HALF_TOPIC` (queue 0) with `REAL_TOPIC` / `REAL_QID`: consumers
//!   never see it. The send answers with the half message's offsets.
//! - END_TRANSACTION (37) with COMMIT stores the message in its real topic and queue, then an op
//!   record (the half message's queue offset) in `RMQ_SYS_TRANS_OP_HALF_TOPIC`; ROLLBACK stores
//!   only the op record; UNKNOWN leaves it undecided. A second decision for the same half
//!   message is refused.
//! - **Check-back**: every `transaction_check_interval_ms` (30 s) the master sends
//!   CHECK_TRANSACTION_STATE (39, oneway, the message as body) to a live producer of the half
//!   message's producer group for each undecided half message older than
//!   `transaction_timeout_ms` (6 s); the producer answers with END_TRANSACTION. After
//!   `transaction_check_max` (15) checks it is rolled back and logged.
//! - Pending halves are rebuilt from the two topics at start and on becoming master.
//! - **Retention**: an undecided half message whose segment retention wants is stored again at
//!   the head of the log (as RocketMQ's check puts half messages back), the copy naming the
//!   original by [`PREPARED_QUEUE_OFFSET`] (RocketMQ's `TRAN_PREPARED_QUEUE_OFFSET`) and
//!   [`PREPARED_COMMITLOG_OFFSET`]. A transaction keeps its identity, the original's offsets:
//!   END_TRANSACTION, check-backs and the op record name those, and the commit stores the copy's
//!   content, so the segment of the original can go.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rocketraft_common::consts::{property, sys_flag};
use rocketraft_common::message::{self, Message, RecordMeta};
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::{Refusal, RemotingCommand};

use crate::processor::Handled;
use crate::store::BrokerMessage;
use crate::BrokerInner;

pub const HALF_TOPIC: &str = rocketraft_common::consts::system_topic::TRANS_HALF;
pub const OP_TOPIC: &str = "RMQ_SYS_TRANS_OP_HALF_TOPIC";
/// On a half message stored again: the half-topic queue offset of the original (RocketMQ's
/// `MessageConst.PROPERTY_TRANSACTION_PREPARED_QUEUE_OFFSET`).
pub const PREPARED_QUEUE_OFFSET: &str = "TRAN_PREPARED_QUEUE_OFFSET";
/// On a half message stored again: the CommitLog offset of the original (ours).
pub const PREPARED_COMMITLOG_OFFSET: &str = "TRAN_PREPARED_COMMITLOG_OFFSET";

/// Whether a send is the first phase of a transaction.
pub fn is_prepared(message: &Message, sys_flag_value: i32) -> bool {
    sys_flag::transaction_value(sys_flag_value) == sys_flag::TRANSACTION_PREPARED_TYPE
        || message.property(property::TRANSACTION_PREPARED) == Some("true")
}

/// Turns a prepared message into its half message.
pub fn to_half(mut msg: BrokerMessage) -> BrokerMessage {
    let real_topic = std::mem::replace(&mut msg.message.topic, HALF_TOPIC.to_string());
    msg.message.set_property(property::REAL_TOPIC, real_topic);
    msg.message
        .set_property(property::REAL_QUEUE_ID, msg.queue_id.to_string());
    msg.message
        .set_property(property::TRANSACTION_PREPARED, "true");
    // Stored as an ordinary (indexed) message of the half topic, as RocketMQ does.
    msg.sys_flag = sys_flag::reset_transaction_value(msg.sys_flag, sys_flag::TRANSACTION_NOT_TYPE);
    msg.queue_id = 0;
    msg
}

#[derive(Debug, Clone)]
struct Pending {
    store_ms: i64,
    checks: u32,
    last_check_ms: i64,
    /// The half-topic queue offset of the record holding the message now: the original's (the
    /// key of the pending map) or, once stored again, the latest copy's.
    at: i64,
    /// The original's CommitLog offset (what END_TRANSACTION names).
    phy: i64,
    /// The topic the message goes to once committed (`rocketmq_half_messages` is per topic).
    topic: Arc<str>,
}

impl Pending {
    fn new(store_ms: i64, at: i64, phy: i64, topic: &str) -> Pending {
        Pending {
            store_ms,
            checks: 0,
            last_check_ms: 0,
            at,
            phy,
            topic: Arc::from(topic),
        }
    }
}

/// The topic a half-topic record's message goes to once committed.
fn real_topic(m: &message::MessageExt) -> &str {
    m.message.property(property::REAL_TOPIC).unwrap_or("")
}

/// The original a half-topic record stands for: `(queue offset, CommitLog offset)` of the
/// original half message when the record is a copy stored again, `None` for an original.
fn copy_of(m: &message::MessageExt) -> Option<(i64, i64)> {
    let queue_offset = m.message.property(PREPARED_QUEUE_OFFSET)?.parse().ok()?;
    let phy = m
        .message
        .property(PREPARED_COMMITLOG_OFFSET)
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1);
    Some((queue_offset, phy))
}

/// Undecided half messages of a broker.
pub struct TransactionService {
    /// Half topic queue offset -> state.
    pending: Mutex<BTreeMap<i64, Pending>>,
    replay: crate::replay::ReplayGate,
    decide_lock: tokio::sync::Mutex<()>,
}

impl Default for TransactionService {
    fn default() -> Self {
        TransactionService {
            pending: Mutex::new(BTreeMap::new()),
            replay: crate::replay::ReplayGate::default(),
            decide_lock: tokio::sync::Mutex::new(()),
        }
    }
}

/// The message a commit makes visible: the half message back in its real topic and queue, with
/// the commit transaction type and a link to the half message's CommitLog offset.
fn committed_message(half: &message::MessageExt) -> Result<BrokerMessage, Refusal> {
    let mut msg = half.message.clone();
    let original_phy = copy_of(half).map_or(half.commit_log_offset, |(_, phy)| phy);
    msg.remove_property(PREPARED_QUEUE_OFFSET);
    msg.remove_property(PREPARED_COMMITLOG_OFFSET);
    let topic = msg
        .remove_property(property::REAL_TOPIC)
        .ok_or_else(|| Refusal::system_error("half message without REAL_TOPIC"))?;
    let queue_id: i32 = msg
        .remove_property(property::REAL_QUEUE_ID)
        .and_then(|q| q.parse().ok())
        .unwrap_or(0);
    msg.topic = topic;
    let mut bm = BrokerMessage::new(msg, queue_id);
    bm.sys_flag =
        sys_flag::reset_transaction_value(half.sys_flag, sys_flag::TRANSACTION_COMMIT_TYPE);
    bm.born_timestamp = half.born_timestamp;
    bm.born_host = half.born_host;
    bm.prepared_transaction_offset = original_phy;
    Ok(bm)
}

impl TransactionService {
    /// Retention pin: the lowest CommitLog offset of an undecided half message. From memory
    /// once this broker has replayed the transactions for its serving epoch, from a fresh
    /// replay of the half and op topics otherwise (a slave, or a master before its first
    /// check round): a failover must find every undecided half message.
    pub fn lowest_needed(&self, inner: &BrokerInner) -> Option<i64> {
        let at: Vec<i64> = if self.replay.is_current(inner) {
            self.pending.lock().values().map(|p| p.at).collect()
        } else {
            Self::replay_pending(inner)
                .0
                .values()
                .map(|p| p.at)
                .collect()
        };
        at.into_iter()
            .filter_map(|o| inner.store.get_commit_log_offset_in_queue(HALF_TOPIC, 0, o))
            .min()
    }

    /// The undecided half messages the two topics describe, and how many were decided.
    fn replay_pending(inner: &BrokerInner) -> (BTreeMap<i64, Pending>, usize) {
        let done = crate::replay::offsets_in(inner, OP_TOPIC);
        let mut pending: BTreeMap<i64, Pending> = BTreeMap::new();
        crate::replay::scan(inner, HALF_TOPIC, |off, m| match copy_of(m) {
            // A later copy of an undecided original holds it now (the original itself may be
            // gone to retention).
            Some((original, phy)) => {
                if !done.contains(&original) {
                    pending
                        .entry(original)
                        .and_modify(|p| p.at = off)
                        .or_insert_with(|| Pending::new(m.born_timestamp, off, phy, real_topic(m)));
                }
            }
            None => {
                if !done.contains(&off) {
                    pending.insert(
                        off,
                        Pending::new(m.store_timestamp, off, m.commit_log_offset, real_topic(m)),
                    );
                }
            }
        });
        (pending, done.len())
    }

    /// Whether the undecided half messages in memory are this broker's for its serving epoch.
    pub fn replayed(&self, inner: &BrokerInner) -> bool {
        self.replay.is_current(inner)
    }

    /// Records a half message of `topic` stored at `offset` of the half topic, CommitLog
    /// offset `phy`.
    pub fn prepared(&self, offset: i64, phy: i64, topic: &str) {
        self.pending.lock().insert(
            offset,
            Pending::new(rocketraft_common::time::now_ms(), offset, phy, topic),
        );
    }

    /// Undecided half messages by the topic they go to (`rocketmq_half_messages`).
    pub fn pending_by_topic(&self) -> BTreeMap<Arc<str>, usize> {
        let mut counts = BTreeMap::new();
        for p in self.pending.lock().values() {
            *counts.entry(p.topic.clone()).or_insert(0) += 1;
        }
        counts
    }

    async fn ensure_rebuilt(&self, inner: &BrokerInner) -> bool {
        self.replay
            .ensure(inner, |epoch| {
                let (pending, decided) = Self::replay_pending(inner);
                tracing::info!(
                    pending = pending.len(),
                    decided,
                    epoch,
                    "transactions rebuilt"
                );
                self.pending.lock().extend(pending);
            })
            .await
            .is_ok()
    }

    /// The record holding the undecided half message `offset` now (the original or its latest
    /// copy), and the original's CommitLog offset.
    fn half(&self, inner: &BrokerInner, offset: i64) -> Option<(message::MessageExt, i64)> {
        let p = self.pending.lock().get(&offset)?.clone();
        let phy = inner
            .store
            .get_commit_log_offset_in_queue(HALF_TOPIC, 0, p.at)?;
        let m = inner.store.look_message_by_offset(phy)?;
        let original = if p.phy >= 0 {
            p.phy
        } else {
            m.commit_log_offset
        };
        Some((m, original))
    }

    /// Marks the half message at `offset` decided (an op record). Refused with SYSTEM_ERROR
    /// (whatever the store answered) when the record cannot be stored durably.
    async fn record_decision(&self, inner: &BrokerInner, offset: i64) -> Result<(), Refusal> {
        crate::pop::ensure_system_topic(inner, OP_TOPIC, 1)?;
        let op = BrokerMessage::new(Message::new(OP_TOPIC, offset.to_string().into_bytes()), 0);
        inner
            .store_durably(vec![op])
            .await
            .map_err(|e| Refusal::system_error(Refusal::from(e).remark))?;
        self.pending.lock().remove(&offset);
        Ok(())
    }

    /// END_TRANSACTION.
    pub async fn end(&self, inner: &BrokerInner, request: &RemotingCommand) -> Handled {
        if !self.ensure_rebuilt(inner).await {
            return Err(Refusal::new(
                response_code::SERVICE_NOT_AVAILABLE,
                "this broker is not a master: end transactions on the master",
            ));
        }
        let offset: i64 = request.ext_parse("tranStateTableOffset")?;
        let phy: i64 = request.ext_parse("commitLogOffset")?;
        let decision: i32 = request.ext_parse("commitOrRollback")?;
        let from_check = request.ext("fromTransactionCheck") == Some("true");
        let _one = self.decide_lock.lock().await;
        if !self.pending.lock().contains_key(&offset) {
            return Err(Refusal::system_error(format!(
                "no undecided half message at offset {offset} (already committed or rolled back, or unknown)"
            )));
        }
        let half = self
            .half(inner, offset)
            .filter(|(_, original)| *original == phy)
            .map(|(m, _)| m)
            .ok_or_else(|| {
                Refusal::system_error(format!(
                    "the half message at offset {offset} is not at commit log offset {phy}"
                ))
            })?;
        match decision {
            sys_flag::TRANSACTION_COMMIT_TYPE => {
                let bm = committed_message(&half)?;
                let topic = bm.message.topic.clone();
                inner.store_durably(vec![bm]).await?;
                self.record_decision(inner, offset).await?;
                let age_ms = rocketraft_common::time::now_ms() - half.born_timestamp;
                inner.metrics.committed(&topic, age_ms);
                tracing::debug!(offset, from_check, "transaction committed");
            }
            sys_flag::TRANSACTION_ROLLBACK_TYPE => {
                self.record_decision(inner, offset).await?;
                let topic = half
                    .message
                    .property(property::REAL_TOPIC)
                    .unwrap_or(&half.message.topic);
                inner.metrics.rolled_back(topic);
                tracing::debug!(offset, from_check, "transaction rolled back");
            }
            _ => tracing::debug!(
                offset,
                from_check,
                "transaction state unknown; will check back"
            ),
        }
        Ok(request.response_to(response_code::SUCCESS, None))
    }

    /// One check-back round.
    pub async fn check(&self, inner: &BrokerInner) -> usize {
        if !self.ensure_rebuilt(inner).await {
            return 0;
        }
        let now = rocketraft_common::time::now_ms();
        let cfg = &inner.config;
        let due: Vec<(i64, Pending)> = self
            .pending
            .lock()
            .iter()
            .filter(|(_, p)| {
                now - p.store_ms >= cfg.transaction_timeout_ms as i64
                    && now - p.last_check_ms >= cfg.transaction_check_interval_ms as i64
            })
            .map(|(o, p)| (*o, p.clone()))
            .collect();
        let mut sent = 0;
        for (offset, p) in due {
            let Some((half, original_phy)) = self.half(inner, offset) else {
                self.pending.lock().remove(&offset);
                continue;
            };
            if p.checks >= cfg.transaction_check_max {
                let _one = self.decide_lock.lock().await;
                tracing::warn!(
                    offset,
                    checks = p.checks,
                    "transaction still undecided after the maximum checks; rolling it back"
                );
                if let Err(e) = self.record_decision(inner, offset).await {
                    tracing::warn!(offset, error = %e.remark, "cannot record the rollback");
                }
                continue;
            }
            if let Some(entry) = self.pending.lock().get_mut(&offset) {
                entry.checks += 1;
                entry.last_check_ms = now;
            }
            let group = half
                .message
                .property(property::PRODUCER_GROUP)
                .unwrap_or_default()
                .to_string();
            let channels = inner.clients.producer_channels(&group);
            let Some(channel) = channels.first() else {
                tracing::debug!(offset, %group, "no live producer of the group to check back");
                continue;
            };
            let uniq = half.message.uniq_key().unwrap_or_default().to_string();
            let request = RemotingCommand::request(request_code::CHECK_TRANSACTION_STATE)
                .with_ext("tranStateTableOffset", offset)
                .with_ext("commitLogOffset", original_phy)
                .with_ext("msgId", uniq.clone())
                .with_ext("transactionId", uniq)
                .with_ext("offsetMsgId", original_msg_id(&half, original_phy))
                .with_ext("brokerName", inner.config.broker_name.clone())
                .with_body(check_body(&half, offset, original_phy));
            match channel.connection.send_oneway(request) {
                Ok(()) => sent += 1,
                Err(e) => {
                    tracing::debug!(offset, client = %channel.client_id, error = %e, "check-back not sent")
                }
            }
        }
        sent
    }

    /// Undecided half messages (for admin tools and tests).
    pub fn pending_count(&self) -> usize {
        self.pending.lock().len()
    }

    /// Stores again, at the head of the log, every undecided half message whose record lies
    /// below the CommitLog offset `limit`, so that retention can delete the segments below it.
    /// Returns how many were stored again; stops at the first failure (retried next round).
    pub async fn roll_below(&self, inner: &BrokerInner, limit: i64) -> usize {
        if !self.ensure_rebuilt(inner).await {
            return 0;
        }
        let _one = self.decide_lock.lock().await;
        let store = &inner.store;
        let below: Vec<(i64, Pending)> = self
            .pending
            .lock()
            .iter()
            .filter(|(_, p)| {
                store
                    .get_commit_log_offset_in_queue(HALF_TOPIC, 0, p.at)
                    .is_some_and(|phy| phy < limit)
            })
            .map(|(o, p)| (*o, p.clone()))
            .collect();
        let mut rolled = 0;
        for (offset, p) in below {
            match self.roll(inner, offset, p).await {
                Ok(Some(at)) => {
                    if let Some(entry) = self.pending.lock().get_mut(&offset) {
                        entry.at = at;
                    }
                    rolled += 1;
                }
                Ok(None) => {}
                Err(Refusal { code, remark: why }) => {
                    tracing::warn!(offset, code, %why, "cannot store a half message again; will retry");
                    break;
                }
            }
        }
        if rolled > 0 {
            tracing::info!(
                rolled,
                below = limit,
                "undecided half messages stored again at the head of the log so that retention can delete the segments they were in"
            );
        }
        rolled
    }

    /// Stores a copy of the undecided half message `offset` (held now at `p.at`); the copy's
    /// queue offset, or `None` when its record is gone.
    async fn roll(
        &self,
        inner: &BrokerInner,
        offset: i64,
        p: Pending,
    ) -> Result<Option<i64>, Refusal> {
        let Some(m) = inner
            .store
            .get_commit_log_offset_in_queue(HALF_TOPIC, 0, p.at)
            .and_then(|phy| inner.store.look_message_by_offset(phy))
        else {
            return Ok(None);
        };
        let original_phy = if p.phy >= 0 {
            p.phy
        } else {
            m.commit_log_offset
        };
        let mut msg = m.message.clone();
        msg.set_property(PREPARED_QUEUE_OFFSET, offset.to_string());
        msg.set_property(PREPARED_COMMITLOG_OFFSET, original_phy.to_string());
        let mut bm = BrokerMessage::new(msg, 0);
        bm.sys_flag = m.sys_flag;
        bm.born_timestamp = m.born_timestamp;
        bm.born_host = m.born_host;
        bm.reconsume_times = m.reconsume_times;
        let put = inner.store_state_copy(vec![bm]).await?;
        Ok(Some(put.queue_offset))
    }
}

/// The offset message id of the original half message at CommitLog offset `phy`: its own when
/// `half` is the original, else computed from this broker's store host (the original was stored
/// by a master of this set at that offset).
fn original_msg_id(half: &message::MessageExt, phy: i64) -> String {
    if half.commit_log_offset == phy {
        return half.msg_id.clone();
    }
    message::offset_msg_id(half.store_host, phy)
}

/// The half message as the producer should see it in a check: its real topic and queue, and
/// the original's offsets (`offset` in the half topic, `phy` in the CommitLog).
fn check_body(half: &message::MessageExt, offset: i64, phy: i64) -> Vec<u8> {
    let mut msg = half.message.clone();
    msg.remove_property(PREPARED_QUEUE_OFFSET);
    msg.remove_property(PREPARED_COMMITLOG_OFFSET);
    if let Some(topic) = msg.property(property::REAL_TOPIC).map(str::to_string) {
        msg.topic = topic;
    }
    let queue_id = msg
        .property(property::REAL_QUEUE_ID)
        .and_then(|q| q.parse().ok())
        .unwrap_or(half.queue_id);
    let meta = RecordMeta {
        queue_id,
        queue_offset: offset,
        physical_offset: phy,
        sys_flag: half.sys_flag,
        born_timestamp: half.born_timestamp,
        born_host: half.born_host,
        store_timestamp: half.store_timestamp,
        store_host: half.store_host,
        reconsume_times: half.reconsume_times,
        prepared_transaction_offset: half.prepared_transaction_offset,
    };
    let mut out = Vec::new();
    if message::encode_record(&msg, &meta, false, &mut out).is_err() {
        out.clear();
    }
    out
}

/// Runs check-back rounds every second (each half message is checked at most every
/// `transaction_check_interval_ms`), and stores again the undecided half messages retention
/// wants the segments of.
pub async fn check_loop(inner: Arc<BrokerInner>) {
    let mut ticker = tokio::time::interval(Duration::from_millis(1000));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let n = inner.transactions.check(&inner).await;
        if n > 0 {
            tracing::debug!(checks = n, "transaction check-back round");
        }
        if let Some(limit) = inner.store.retention_wanted() {
            inner.transactions.roll_below(&inner, limit).await;
        }
    }
}
