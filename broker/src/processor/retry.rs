//! CONSUMER_SEND_MSG_BACK (36): a Remoting push consumer hands back a message it failed to
//! consume. It goes to `%RETRY%{group}` after a delay (level 3 + its reconsume count unless the
//! consumer names one: 10 s, 30 s, 1 min, ...), or to `%DLQ%{group}` once it was retried
//! `maxReconsumeTimes` (16) times or the consumer asks for it (delay level < 0), with its
//! properties, as RocketMQ's `SendMessageProcessor.consumerSendMsgBack` does.
//!
//! **Bound to a receipt handle.** A request that carries a POP receipt handle in `extraInfo`
//! (and its `topic`), as the gRPC proxy's ForwardMessageToDeadLetterQueue always does, is
//! served only if the handle is in flight for the group and `offset` is the CommitLog offset of
//! the message it names (and `originMsgId`, when given, that message's id); otherwise it is
//! refused (NO_MESSAGE for a handle not in flight, NO_PERMISSION for another message's offset)
//! and nothing is stored. The handle's queue stays locked until the copy is stored and the
//! handle acked, so one handle lands its message in the DLQ at most once.
//!
//! **Without a handle** (a Remoting push consumer, as in RocketMQ) the request names any
//! CommitLog offset: the broker copies the message there if it lies wholly below the confirm
//! offset and is not in a system topic. Who may send it at all is the Remoting ACL's decision.

use rocketraft_common::consts::{property, DLQ_GROUP_TOPIC_PREFIX, RETRY_GROUP_TOPIC_PREFIX};
use rocketraft_common::message::{Message, MessageExt};
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{Refusal, RemotingCommand};

/// The optional ext field of CONSUMER_SEND_MSG_BACK that binds it to a POP receipt handle.
pub const EXTRA_INFO: &str = "extraInfo";

use super::Handled;
use crate::pop::{ensure_system_topic, Handle, HeldHandle};
use crate::store::BrokerMessage;
use crate::BrokerInner;

/// The message to re-put and its topic: a copy of `original` remembering its first topic and
/// message id, for the group's DLQ when `to_dlq`, else for its retry topic with a delay level
/// (the consumer's, or 3 + the reconsume count).
fn sent_back(
    original: &MessageExt,
    group: &str,
    origin_msg_id: Option<String>,
    mut delay_level: i32,
    to_dlq: bool,
) -> (Message, String) {
    let mut msg = original.message.clone();
    if msg.property(property::RETRY_TOPIC).is_none() {
        msg.set_property(property::RETRY_TOPIC, original.message.topic.clone());
    }
    let id = origin_msg_id
        .or_else(|| original.message.uniq_key().map(str::to_string))
        .unwrap_or_else(|| original.msg_id.clone());
    if msg.property(property::ORIGIN_MESSAGE_ID).is_none() {
        msg.set_property(property::ORIGIN_MESSAGE_ID, id);
    }
    msg.remove_property(property::DELAY_TIME_LEVEL);
    let topic = if to_dlq {
        format!("{DLQ_GROUP_TOPIC_PREFIX}{group}")
    } else {
        if delay_level == 0 {
            delay_level = 3 + original.reconsume_times;
        }
        msg.set_property(property::DELAY_TIME_LEVEL, delay_level.to_string());
        format!("{RETRY_GROUP_TOPIC_PREFIX}{group}")
    };
    (msg, topic)
}

/// CONSUMER_SEND_MSG_BACK: re-puts the message at `offset` (see the module documentation),
/// through the timer topic when delayed. With a receipt handle (`extraInfo`) the message must
/// be the one the handle names and the handle is acked once the copy is stored.
pub async fn send_back(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let offset: i64 = request.ext_parse("offset")?;
    let group = request.require_ext("group")?.to_string();
    let delay_level: i32 = request.ext_parse_opt("delayLevel")?.unwrap_or(0);
    let max_reconsume: i32 = match request.ext_parse_opt("maxReconsumeTimes")? {
        Some(n) => n,
        None => crate::pop::max_reconsume_times(inner, &group),
    };
    let origin_msg_id = request.ext("originMsgId").map(str::to_string);
    if let Some(ha) = &inner.ha {
        ha.check_writable()
            .map_err(|e| Refusal::new(response_code::SERVICE_NOT_AVAILABLE, e.to_string()))?;
    }
    let (held, original) = match request.ext(EXTRA_INFO) {
        Some(extra) => {
            let topic = request.require_ext("topic")?;
            let (held, m) = bound_message(
                inner,
                &group,
                topic,
                extra,
                offset,
                origin_msg_id.as_deref(),
            )
            .await?;
            (Some(held), m)
        }
        None => (None, confirmed_message(inner, offset)?),
    };
    if crate::metalog::is_reserved(&original.message.topic) {
        return Err(Refusal::new(
            response_code::NO_PERMISSION,
            format!("the message at {offset} belongs to a system topic"),
        ));
    }
    // A group holding live queue locks consumes orderly: a message it sends back has used up
    // its local retries and goes to the DLQ at once (RocketMQ's `isLockAllExpired` rule).
    let orderly = !inner.locks.is_lock_all_expired(
        &group,
        rocketraft_common::time::now_ms(),
        inner.config.rebalance_lock_max_live_time_ms,
    );
    let to_dlq = original.reconsume_times >= max_reconsume || delay_level < 0 || orderly;
    let (msg, topic) = sent_back(&original, &group, origin_msg_id, delay_level, to_dlq);
    store_sent_back(inner, &original, msg, topic).await?;
    if let Some(held) = held {
        inner.pop.ack_held(inner, held).await?;
    }
    if to_dlq {
        let origin_topic = original
            .message
            .property(property::RETRY_TOPIC)
            .unwrap_or(&original.message.topic);
        inner.metrics.sent_to_dlq(origin_topic, &group);
        tracing::warn!(%group, offset, reconsume = original.reconsume_times, "message sent back to the dead-letter queue");
    }
    Ok(request.response_to(response_code::SUCCESS, None))
}

/// Stores the sent-back copy `msg` of `original` in `topic` (through the timer topic when it
/// carries a delay).
async fn store_sent_back(
    inner: &BrokerInner,
    original: &MessageExt,
    mut msg: Message,
    topic: String,
) -> Result<(), Refusal> {
    ensure_system_topic(inner, &topic, 1)?;
    msg.topic = topic.clone();
    let mut bm = BrokerMessage::new(msg, 0);
    bm.reconsume_times = original.reconsume_times + 1;
    bm.born_timestamp = original.born_timestamp;
    bm.born_host = original.born_host;
    let now = rocketraft_common::time::now_ms();
    let deliver_at = crate::timer::delivery_time(&bm.message, now)?;
    let bm = match deliver_at {
        Some(at) => {
            ensure_system_topic(inner, crate::timer::TIMER_TOPIC, 1)?;
            crate::timer::to_timer(bm, at)
        }
        None => bm,
    };
    let result = inner.store_durably(vec![bm]).await?;
    if let Some(at) = deliver_at {
        inner.timers.scheduled(at, result.queue_offset, &topic);
        inner.metrics.timer_enqueued(&topic);
    }
    Ok(())
}

/// The message at `offset` when it lies wholly below the confirm offset (what consumers may
/// see): a Remoting consumer's plain send-back names any offset it likes.
fn confirmed_message(inner: &BrokerInner, offset: i64) -> Result<MessageExt, Refusal> {
    let record = super::admin::confirmed_record(inner, offset)?;
    rocketraft_common::message::decode_message(&record)
        .map(|(m, _)| m)
        .map_err(|e| Refusal::system_error(format!("look message by offset failed, {offset}: {e}")))
}

/// The message a receipt handle names, its handle held in flight for `group` (see
/// [`crate::pop::PopService::hold`]): refused unless `offset` is that message's CommitLog
/// offset and `origin_msg_id`, when given, its id.
async fn bound_message(
    inner: &BrokerInner,
    group: &str,
    topic: &str,
    extra: &str,
    offset: i64,
    origin_msg_id: Option<&str>,
) -> Result<(HeldHandle, MessageExt), Refusal> {
    let handle = Handle::parse(extra)
        .map_err(|e| Refusal::new(response_code::INVALID_PARAMETER, e.to_string()))?;
    let held = inner.pop.hold(inner, group, topic, handle).await?;
    let (queue_topic, queue_id, queue_offset) =
        (held.queue_topic(), held.queue_id(), held.queue_offset());
    let named = format!("{queue_topic}/{queue_id}/{queue_offset}");
    // A message copied forward for retention is read from its copy, as originally stored.
    let m = match inner.pop.copied_message(inner, &held) {
        Some(m) => m,
        None => {
            let phy = inner
                .store
                .get_commit_log_offset_in_queue(queue_topic, queue_id, queue_offset)
                .ok_or_else(|| {
                    Refusal::new(
                        response_code::NO_MESSAGE,
                        format!(
                            "the message the receipt handle names ({named}) is no longer stored"
                        ),
                    )
                })?;
            confirmed_message(inner, phy)?
        }
    };
    let matches = m.commit_log_offset == offset
        && m.message.topic == queue_topic
        && m.queue_id == queue_id
        && m.queue_offset == queue_offset
        && origin_msg_id
            .filter(|id| !id.is_empty())
            .is_none_or(|id| m.message.uniq_key().unwrap_or(&m.msg_id) == id);
    if !matches {
        tracing::warn!(%group, offset, named = %named, "send-back refused: the offset or message id is not the message the receipt handle names");
        return Err(Refusal::new(
            response_code::NO_PERMISSION,
            format!("offset {offset} (message id {origin_msg_id:?}) is not the message the receipt handle names ({named})"),
        ));
    }
    Ok((held, m))
}
