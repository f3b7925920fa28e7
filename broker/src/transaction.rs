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

pub const HALF_TOPIC: &str = "RMQ_SYS_TRANS_HALF_TOPIC";
pub const OP_TOPIC: &str = "RMQ_SYS_TRANS_OP_HALF_TOPIC";

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

#[derive(Debug, Clone, Copy)]
struct Pending {
    store_ms: i64,
    checks: u32,
    last_check_ms: i64,
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
    bm.prepared_transaction_offset = half.commit_log_offset;
    Ok(bm)
}

impl TransactionService {
    /// Retention pin: the lowest CommitLog offset of an undecided half message. From memory
    /// once this broker has replayed the transactions for its serving epoch, from a fresh
    /// replay of the half and op topics otherwise (a slave, or a master before its first
    /// check round): a failover must find every undecided half message.
    pub fn lowest_needed(&self, inner: &BrokerInner) -> Option<i64> {
        let first = if self.replay.is_current(inner) {
            *self.pending.lock().keys().next()?
        } else {
            *Self::replay_pending(inner).0.keys().next()?
        };
        inner
            .store
            .get_commit_log_offset_in_queue(HALF_TOPIC, 0, first)
    }

    /// The undecided half messages the two topics describe, and how many were decided.
    fn replay_pending(inner: &BrokerInner) -> (BTreeMap<i64, Pending>, usize) {
        let done = crate::replay::offsets_in(inner, OP_TOPIC);
        let mut pending = BTreeMap::new();
        crate::replay::scan(inner, HALF_TOPIC, |off, m| {
            if !done.contains(&off) {
                pending.insert(
                    off,
                    Pending {
                        store_ms: m.store_timestamp,
                        checks: 0,
                        last_check_ms: 0,
                    },
                );
            }
        });
        (pending, done.len())
    }

    /// Whether the undecided half messages in memory are this broker's for its serving epoch.
    pub fn replayed(&self, inner: &BrokerInner) -> bool {
        self.replay.is_current(inner)
    }

    /// Records a half message stored at `offset` of the half topic.
    pub fn prepared(&self, offset: i64) {
        self.pending.lock().insert(
            offset,
            Pending {
                store_ms: rocketraft_common::time::now_ms(),
                checks: 0,
                last_check_ms: 0,
            },
        );
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

    /// The half message at `offset`, if it is still undecided.
    fn half(&self, inner: &BrokerInner, offset: i64) -> Option<message::MessageExt> {
        let phy = inner
            .store
            .get_commit_log_offset_in_queue(HALF_TOPIC, 0, offset)?;
        inner.store.look_message_by_offset(phy)
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
            .filter(|m| m.commit_log_offset == phy)
            .ok_or_else(|| {
                Refusal::system_error(format!(
                    "the half message at offset {offset} is not at commit log offset {phy}"
                ))
            })?;
        match decision {
            sys_flag::TRANSACTION_COMMIT_TYPE => {
                let bm = committed_message(&half)?;
                inner.store_durably(vec![bm]).await?;
                self.record_decision(inner, offset).await?;
                tracing::debug!(offset, from_check, "transaction committed");
            }
            sys_flag::TRANSACTION_ROLLBACK_TYPE => {
                self.record_decision(inner, offset).await?;
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
            .map(|(o, p)| (*o, *p))
            .collect();
        let mut sent = 0;
        for (offset, p) in due {
            let Some(half) = self.half(inner, offset) else {
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
                .with_ext("commitLogOffset", half.commit_log_offset)
                .with_ext("msgId", uniq.clone())
                .with_ext("transactionId", uniq)
                .with_ext("offsetMsgId", half.msg_id.clone())
                .with_ext("brokerName", inner.config.broker_name.clone())
                .with_body(check_body(&half));
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
}

/// The half message as the producer should see it in a check: its real topic and queue.
fn check_body(half: &message::MessageExt) -> Vec<u8> {
    let mut msg = half.message.clone();
    if let Some(topic) = msg.property(property::REAL_TOPIC).map(str::to_string) {
        msg.topic = topic;
    }
    let queue_id = msg
        .property(property::REAL_QUEUE_ID)
        .and_then(|q| q.parse().ok())
        .unwrap_or(half.queue_id);
    let meta = RecordMeta {
        queue_id,
        queue_offset: half.queue_offset,
        physical_offset: half.commit_log_offset,
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
/// `transaction_check_interval_ms`).
pub async fn check_loop(inner: Arc<BrokerInner>) {
    let mut ticker = tokio::time::interval(Duration::from_millis(1000));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let n = inner.transactions.check(&inner).await;
        if n > 0 {
            tracing::debug!(checks = n, "transaction check-back round");
        }
    }
}
