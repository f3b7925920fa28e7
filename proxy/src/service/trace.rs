//! Trace records the proxy writes for the clients that ask for tracing, in RocketMQ's
//! `TraceDataEncoder` format ([`rocketraft_common::trace`]), to `RMQ_SYS_TRACE_TOPIC` with the
//! traced message's id and keys as `KEYS` (what `rocketraft admin message trace --id` looks up).
//!
//! A gRPC client asks for tracing per message: the official clients fill
//! `SystemProperties.trace_context` (a W3C `traceparent`) when their tracing is on. RocketMQ's
//! proxy only carries that context (as the `TRACE_CONTEXT` property, back to consumers); ours
//! also records what it did with such a message:
//!
//! - a `Pub` record after each SendMessage of a traced message it handles (success or not,
//!   the cost, the broker's offset id);
//! - a `SubAfter` record when a consumer hands back a traced message: AckMessage (success),
//!   ChangeInvisibleDuration and ForwardMessageToDeadLetterQueue (not a success, context code
//!   `FAILED`: the consumer gave the message back or gave up on it; a proxy cannot tell a nack
//!   from a renewal of a long consumption, both show as an attempt that did not end the
//!   message);
//! - an `EndTransaction` record for each EndTransaction the broker accepts of a traced half
//!   message (commit or rollback, from the producer or from a transaction check).
//!
//! Any proxy can write the consumer's and the transaction's records: the receipt handle and the
//! transaction id a traced message is handed out with carry a `t` (see `receipt` and
//! `crate::session::TransactionId`), and the message's keys and tags are read back from the
//! broker by the CommitLog offset the handle or id names. Untraced messages cost nothing.
//!
//! A trace write never fails the client's request: it is best effort and logged when refused.

use std::time::Instant;

use rocketraft_common::consts::{perm, property};
use rocketraft_common::time::now_ms;
use rocketraft_common::trace::{
    trace_keys, EndTransactionTrace, PubTrace, SubAfterTrace, TRACE_TOPIC,
};
use rocketraft_remoting::api::{SendRequest, SendResult};
use rocketraft_remoting::codes::response_code;

use super::receipt::ReceiptHandle;
use super::validate::Outgoing;
use super::Service;
use crate::pb;
use crate::session::TransactionId;

/// RocketMQ's `ConsumeReturnType` ordinals the proxy reports.
const CONSUME_SUCCESS: i32 = 0;
const CONSUME_EXCEPTION: i32 = 2;
const CONSUME_FAILED: i32 = 4;

/// What a consumer did with a traced message it received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// AckMessage, answered by the broker as given.
    Acked { success: bool },
    /// ChangeInvisibleDuration: the message comes back later.
    GaveBack,
    /// ForwardMessageToDeadLetterQueue.
    DeadLettered,
}

impl Outcome {
    fn success_and_code(self) -> (bool, i32) {
        match self {
            Outcome::Acked { success: true } => (true, CONSUME_SUCCESS),
            Outcome::Acked { success: false } => (false, CONSUME_EXCEPTION),
            Outcome::GaveBack | Outcome::DeadLettered => (false, CONSUME_FAILED),
        }
    }
}

/// Whether a message asks for tracing.
pub(super) fn traced(message: &pb::Message) -> bool {
    message
        .system_properties
        .as_ref()
        .and_then(|s| s.trace_context.as_deref())
        .is_some_and(|t| !t.is_empty())
}

/// RocketMQ's `MessageType` ordinal of a gRPC message type.
fn message_type_ordinal(out: &Outgoing<'_>) -> usize {
    if out.transactional {
        return 1;
    }
    match pb::MessageType::try_from(out.message_type) {
        Ok(pb::MessageType::Fifo) => 4,
        Ok(pb::MessageType::Delay) => 3,
        Ok(pb::MessageType::Transaction) => 1,
        _ => 0,
    }
}

impl Service {
    /// The `Pub` record of a traced send: `result` is the broker's answer (`None`: the send
    /// failed).
    pub(super) async fn trace_send(
        &self,
        message: &pb::Message,
        out: &Outgoing<'_>,
        store_host: &str,
        result: Option<&SendResult>,
        started: Instant,
    ) {
        let keys = out.sys.keys.join(" ");
        let record = PubTrace {
            timestamp: now_ms(),
            region_id: "DefaultRegion".into(),
            group_name: "proxy".into(),
            topic: out.topic.clone(),
            msg_id: out.sys.message_id.clone(),
            tags: out.sys.tag.clone().unwrap_or_default(),
            keys: keys.clone(),
            store_host: store_host.to_string(),
            body_length: message.body.len(),
            cost_time_ms: started.elapsed().as_millis() as i64,
            msg_type: message_type_ordinal(out),
            offset_msg_id: result.map(|r| r.msg_id.clone()).unwrap_or_default(),
            success: result.is_some_and(|r| r.code == response_code::SUCCESS),
        };
        self.write_trace(&out.sys.message_id, &keys, record.encode())
            .await;
    }

    /// The `SubAfter` record of what a consumer did with a message, if the handle says it was
    /// handed out traced. `addr` is the master of the handle's broker set.
    pub(super) async fn trace_consumed(
        &self,
        addr: &str,
        group: &str,
        topic: &str,
        handle: &ReceiptHandle,
        message_id: &str,
        outcome: Outcome,
    ) {
        if !handle.traced() {
            return;
        }
        let keys = self
            .keys_and_tags(addr, handle.commit_log_offset().ok(), topic)
            .await
            .0;
        let now = now_ms();
        let (success, context_code) = outcome.success_and_code();
        let record = SubAfterTrace {
            request_id: format!("proxy-{}-{}", handle.queue_offset(), now),
            msg_id: message_id.to_string(),
            cost_time_ms: handle.pop_time().map_or(0, |t| (now - t).max(0)),
            success,
            keys: keys.clone(),
            context_code,
            timestamp: now,
            group_name: group.to_string(),
        };
        self.write_trace(message_id, &keys, record.encode()).await;
    }

    /// The `EndTransaction` record of a traced half message the broker at `addr` committed
    /// or rolled back.
    pub(super) async fn trace_end_transaction(
        &self,
        addr: &str,
        topic: &str,
        tx: &TransactionId,
        commit: bool,
        from_check: bool,
    ) {
        if !tx.traced {
            return;
        }
        let offset = tx.commit_log_offset.to_string();
        // The half message, in the broker's half topic (the committed copy may not exist).
        let half = rocketraft_common::consts::system_topic::TRANS_HALF;
        let (keys, tags) = self.keys_and_tags(addr, Some(&offset), half).await;
        let record = EndTransactionTrace {
            timestamp: now_ms(),
            region_id: "DefaultRegion".into(),
            group_name: "proxy".into(),
            topic: topic.to_string(),
            msg_id: tx.message_id.clone(),
            tags,
            keys: keys.clone(),
            store_host: addr.to_string(),
            // What RocketMQ's EndTransactionTraceHookImpl writes for either decision.
            msg_type: 2,
            transaction_id: tx.message_id.clone(),
            transaction_state: if commit {
                "COMMIT_MESSAGE"
            } else {
                "ROLLBACK_MESSAGE"
            }
            .into(),
            from_transaction_check: from_check,
        };
        self.write_trace(&tx.message_id, &keys, record.encode())
            .await;
    }

    /// The keys and tags of the message at a CommitLog offset on `addr` (empty when it cannot
    /// be read: the record is still found by the message id).
    async fn keys_and_tags(
        &self,
        addr: &str,
        offset: Option<&str>,
        topic: &str,
    ) -> (String, String) {
        let Some(offset) = offset.and_then(|o| o.parse::<i64>().ok()) else {
            return Default::default();
        };
        match self.api.view_message(addr, offset, Some(topic)).await {
            Ok(m) => (
                m.message
                    .property(property::KEYS)
                    .unwrap_or_default()
                    .to_string(),
                m.message
                    .property(property::TAGS)
                    .unwrap_or_default()
                    .to_string(),
            ),
            Err(e) => {
                tracing::debug!(offset, error = %e, "traced message not read back for its keys");
                Default::default()
            }
        }
    }

    /// Sends one trace message to a writable queue of the trace topic.
    async fn write_trace(&self, message_id: &str, keys: &str, body: String) {
        let target = async {
            let route = self.route(TRACE_TOPIC).await.ok()?;
            let queue = route
                .queue_datas
                .iter()
                .find(|q| perm::is_writeable(q.perm) && q.write_queue_nums > 0)?;
            let addr = self.master_of(&route, &queue.broker_name).ok()?;
            Some(addr)
        }
        .await;
        let Some(addr) = target else {
            tracing::warn!(
                message_id,
                "no writable {TRACE_TOPIC} queue: trace record dropped"
            );
            return;
        };
        let request = SendRequest {
            producer_group: "_INNER_TRACE_PRODUCER-proxy".into(),
            topic: TRACE_TOPIC.into(),
            queue_id: 0,
            body: bytes::Bytes::from(body),
            properties: [(
                rocketraft_common::consts::property::KEYS.to_string(),
                trace_keys(message_id, keys),
            )]
            .into_iter()
            .collect(),
            ..SendRequest::default()
        };
        match self.api.send(&addr, &request).await {
            Ok(r) if r.code == response_code::SUCCESS => {}
            Ok(r) => tracing::warn!(message_id, code = r.code, "trace record refused"),
            Err(e) => tracing::warn!(message_id, error = %e, "trace record not written"),
        }
    }
}
