//! Request-reply (RocketMQ's `ReplyMessageProcessor`): SEND_REPLY_MESSAGE (324) and
//! SEND_REPLY_MESSAGE_V2 (325).
//!
//! A requester's producer sends a request message carrying `REPLY_TO_CLIENT` (its client id) and
//! `CORRELATION_ID`; the broker stamps it with `CLUSTER`. The consumer answers with a reply
//! message to `{cluster}_REPLY_TOPIC` (`MSG_TYPE=reply`), sent with SEND_REPLY_MESSAGE(_V2). The
//! broker pushes the reply to the requester over the requester's own connection
//! (PUSH_REPLY_MESSAGE_TO_CLIENT, 326, found by the client id of its producer heartbeat), and
//! stores it in the reply topic (`storeReplyMessageEnable`). The replier is answered SUCCESS
//! only when the push succeeded; otherwise SYSTEM_ERROR says why (no such client connected, or
//! the client refused the push).

use std::time::Duration;

use rocketraft_common::consts::property;
use rocketraft_common::message::{decode_properties, encode_properties};
use rocketraft_common::time::now_ms;
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::server::RequestContext;
use rocketraft_remoting::{Refusal, RemotingCommand};

use super::Handled;
use crate::BrokerInner;

/// `MixAll.REPLY_MESSAGE_FLAG`: the `MSG_TYPE` of a reply.
pub const REPLY_FLAG: &str = "reply";

/// How long the requester has to take a pushed reply.
const PUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// `{cluster}_REPLY_TOPIC` (`MixAll.getReplyTopic`).
pub fn reply_topic(cluster: &str) -> String {
    format!("{cluster}_REPLY_TOPIC")
}

/// SEND_REPLY_MESSAGE(_V2).
pub async fn handle(
    inner: &BrokerInner,
    ctx: &RequestContext,
    request: &RemotingCommand,
) -> Handled {
    let v2 = request.code == request_code::SEND_REPLY_MESSAGE_V2;
    let name = |full: &'static str, letter: &'static str| if v2 { letter } else { full };
    let topic = request.require_ext(name("topic", "b"))?.to_string();
    let properties_text = request
        .ext(name("properties", "i"))
        .unwrap_or_default()
        .to_string();
    let mut properties = decode_properties(&properties_text);
    let Some(requester) = properties
        .get(property::REPLY_TO_CLIENT)
        .filter(|c| !c.is_empty())
        .cloned()
    else {
        return Err(Refusal::system_error(format!(
            "reply message properties[{}] is null",
            property::REPLY_TO_CLIENT
        )));
    };
    let Some(channel) = inner.clients.producer_channel_of(&requester) else {
        return Err(Refusal::system_error(format!(
            "push reply message fail, channel of <{requester}> not found."
        )));
    };
    properties.insert(property::PUSH_REPLY_TIME.to_string(), now_ms().to_string());
    let text = |key: &str, default: &str| -> String {
        request
            .ext(key)
            .map(str::to_string)
            .unwrap_or_else(|| default.to_string())
    };
    let push = RemotingCommand::request(request_code::PUSH_REPLY_MESSAGE_TO_CLIENT)
        .with_ext("producerGroup", text(name("producerGroup", "a"), ""))
        .with_ext("topic", &topic)
        .with_ext("defaultTopic", text(name("defaultTopic", "c"), "TBW102"))
        .with_ext(
            "defaultTopicQueueNums",
            text(name("defaultTopicQueueNums", "d"), "4"),
        )
        .with_ext("queueId", text(name("queueId", "e"), "0"))
        .with_ext("sysFlag", text(name("sysFlag", "f"), "0"))
        .with_ext("bornTimestamp", text(name("bornTimestamp", "g"), "0"))
        .with_ext("flag", text(name("flag", "h"), "0"))
        .with_ext("properties", encode_properties(&properties))
        .with_ext("reconsumeTimes", text(name("reconsumeTimes", "j"), "0"))
        .with_ext("unitMode", text(name("unitMode", "k"), "false"))
        .with_ext("bornHost", ctx.peer.to_string())
        .with_ext("storeHost", inner.advertised.to_string())
        .with_ext("storeTimestamp", now_ms())
        .with_body(request.body.clone());
    match channel.connection.invoke(push, PUSH_TIMEOUT).await {
        Ok(r) if r.code == response_code::SUCCESS => {}
        Ok(r) => {
            tracing::warn!(%requester, code = r.code, remark = ?r.remark, "push reply message refused");
            return Err(Refusal::system_error(format!(
                "push reply message to {requester}fail."
            )));
        }
        Err(e) => {
            tracing::warn!(%requester, error = %e, "push reply message failed");
            return Err(Refusal::system_error(format!(
                "push reply message to {requester}fail."
            )));
        }
    }
    if inner.config.store_reply_message_enable {
        // Stored like any send to the reply topic (its answer carries the offsets).
        return super::send::handle(inner, ctx, request).await;
    }
    Ok(request
        .response_to(response_code::SUCCESS, None)
        .with_ext("msgId", "0")
        .with_ext("queueId", 0)
        .with_ext("queueOffset", 0))
}
