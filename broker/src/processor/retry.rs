//! CONSUMER_SEND_MSG_BACK (36): a Remoting push consumer hands back a message it failed to
//! consume. It goes to `%RETRY%{group}` after a delay (level 3 + its reconsume count unless the
//! consumer names one: 10 s, 30 s, 1 min, ...), or to `%DLQ%{group}` once it was retried
//! `maxReconsumeTimes` (16) times or the consumer asks for it (delay level < 0), with its
//! properties, as RocketMQ's `SendMessageProcessor.consumerSendMsgBack` does.

use rocketraft_common::consts::{property, DLQ_GROUP_TOPIC_PREFIX, RETRY_GROUP_TOPIC_PREFIX};
use rocketraft_common::message::{Message, MessageExt};
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{Refusal, RemotingCommand};

use super::Handled;
use crate::pop::ensure_system_topic;
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
/// through the timer topic when delayed.
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
    let original = inner
        .store
        .look_message_by_offset(offset)
        .ok_or_else(|| Refusal::system_error(format!("look message by offset failed, {offset}")))?;
    if crate::metalog::is_reserved(&original.message.topic) {
        return Err(Refusal::new(
            response_code::NO_PERMISSION,
            format!("the message at {offset} belongs to a system topic"),
        ));
    }
    let to_dlq = original.reconsume_times >= max_reconsume || delay_level < 0;
    let (mut msg, topic) = sent_back(&original, &group, origin_msg_id, delay_level, to_dlq);
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
        inner.timers.scheduled(at, result.queue_offset);
    }
    if to_dlq {
        tracing::warn!(%group, offset, reconsume = original.reconsume_times, "message sent back to the dead-letter queue");
    }
    Ok(request.response_to(response_code::SUCCESS, None))
}
