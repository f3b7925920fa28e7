//! What a consumer does with a received message, by its receipt handle on the master of the
//! broker set the handle names: AckMessage, ChangeInvisibleDuration (a new handle; the old one
//! stops working), ForwardMessageToDeadLetterQueue (copied to `%DLQ%{group}` and acked by the
//! broker in one request bound to the handle).
//!
//! Every broker request names the message by the handle alone (queue id and queue offset come
//! from it, the broker checks them against a checkpoint in flight for the group with the
//! handle's pop time); the only client-chosen number, the handle's CommitLog offset, is checked
//! by the broker against that message before anything is copied.

use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::RemotingCommand;

use super::convert::{duration_ms, from_api, ok, status, wrapped};
use super::lite::queue_topic;
use super::receipt::ReceiptHandle;
use super::receive::checked_new_invisible;
use super::trace::Outcome;
use super::Service;
use crate::pb;

/// The entries are acked concurrently; each answers for itself, the response's status is the
/// first refusal's (or OK).
pub(super) async fn ack_message(
    service: &Service,
    req: pb::AckMessageRequest,
) -> Result<pb::AckMessageResponse, pb::Status> {
    let (group, name) = group_and_topic(req.group.as_ref(), req.topic.as_ref())?;
    let results = futures::future::join_all(req.entries.iter().map(|e| async {
        let handle = ReceiptHandle::parse(&e.receipt_handle)?;
        let addr = service.master(&name, handle.broker()).await?;
        // A lite topic's message is acked on its lite topic's queue.
        let name = queue_topic(name.clone(), e.lite_topic.as_deref())?;
        let acked = service
            .ack_on_broker(&addr, &group, &name, &handle, &e.receipt_handle)
            .await;
        service
            .trace_consumed(
                &addr,
                &group,
                &name,
                &handle,
                &e.message_id,
                Outcome::Acked {
                    success: acked.is_ok(),
                },
            )
            .await;
        acked
    }))
    .await;
    let mut entries = Vec::new();
    let mut first_error = None;
    for (e, result) in req.entries.iter().zip(results) {
        let s = match result {
            Ok(()) => ok(),
            Err(s) => {
                first_error.get_or_insert(s.clone());
                s
            }
        };
        entries.push(pb::AckMessageResultEntry {
            message_id: e.message_id.clone(),
            receipt_handle: e.receipt_handle.clone(),
            status: Some(s),
        });
    }
    Ok(pb::AckMessageResponse {
        status: Some(first_error.unwrap_or_else(ok)),
        entries,
    })
}

/// CHANGE_MESSAGE_INVISIBLETIME on the handle's master; answers the renewed handle.
pub(super) async fn change_invisible_duration(
    service: &Service,
    req: pb::ChangeInvisibleDurationRequest,
) -> Result<pb::ChangeInvisibleDurationResponse, pb::Status> {
    let (group, name) = group_and_topic(req.group.as_ref(), req.topic.as_ref())?;
    let invisible_ms = checked_new_invisible(
        req.invisible_duration
            .as_ref()
            .map(duration_ms)
            .unwrap_or(0),
    )?;
    let handle = ReceiptHandle::parse(&req.receipt_handle)?;
    let addr = service.master(&name, handle.broker()).await?;
    let name = queue_topic(name, req.lite_topic.as_deref())?;
    let cmd = RemotingCommand::request(request_code::CHANGE_MESSAGE_INVISIBLETIME)
        .with_ext("consumerGroup", group.as_str())
        .with_ext("topic", name.as_str())
        .with_ext("queueId", handle.queue_id())
        .with_ext("offset", handle.queue_offset())
        .with_ext("extraInfo", req.receipt_handle.clone())
        .with_ext("invisibleTime", invisible_ms);
    let r = service
        .api
        .call(&addr, cmd, &[response_code::SUCCESS])
        .await
        .map_err(|e| from_api(&e))?;
    // A suspended message (its retry count kept) was not a failed attempt.
    if req.suspend != Some(true) {
        service
            .trace_consumed(
                &addr,
                &group,
                &name,
                &handle,
                &req.message_id,
                Outcome::GaveBack,
            )
            .await;
    }
    Ok(pb::ChangeInvisibleDurationResponse {
        status: Some(ok()),
        receipt_handle: handle.renewed(
            r.ext("popTime").unwrap_or_default(),
            r.ext("invisibleTime").unwrap_or_default(),
        ),
    })
}

/// Copies the message to `%DLQ%{group}` and acks its POP handle, in one
/// CONSUMER_SEND_MSG_BACK (delay level -1) bound to the handle: the broker copies only the
/// message the handle names, only while the handle is in flight for the group, and acks it
/// under the same queue lock (see the broker's `processor::retry`). The CommitLog offset in
/// the handle is the client's word; the broker checks it against the handle's queue offset.
pub(super) async fn forward_message_to_dead_letter_queue(
    service: &Service,
    req: pb::ForwardMessageToDeadLetterQueueRequest,
) -> Result<pb::ForwardMessageToDeadLetterQueueResponse, pb::Status> {
    let (group, name) = group_and_topic(req.group.as_ref(), req.topic.as_ref())?;
    let handle = ReceiptHandle::parse(&req.receipt_handle)?;
    let addr = service.master(&name, handle.broker()).await?;
    let name = queue_topic(name, req.lite_topic.as_deref())?;
    let phy = handle.commit_log_offset()?;
    let back = RemotingCommand::request(request_code::CONSUMER_SEND_MSG_BACK)
        .with_ext("offset", phy.to_string())
        .with_ext("group", group.clone())
        .with_ext("delayLevel", -1)
        .with_ext("originMsgId", req.message_id.clone())
        .with_ext("maxReconsumeTimes", req.max_delivery_attempts.max(1) - 1)
        .with_ext("topic", name.clone())
        .with_ext("extraInfo", handle.broker_handle());
    service
        .api
        .call(&addr, back, &[response_code::SUCCESS])
        .await
        .map_err(|e| from_api(&e))?;
    service
        .trace_consumed(
            &addr,
            &group,
            &name,
            &handle,
            &req.message_id,
            Outcome::DeadLettered,
        )
        .await;
    Ok(pb::ForwardMessageToDeadLetterQueueResponse { status: Some(ok()) })
}

/// The namespaced group and topic names; BAD_REQUEST without both.
fn group_and_topic(
    group: Option<&pb::Resource>,
    topic: Option<&pb::Resource>,
) -> Result<(String, String), pb::Status> {
    match (group, topic) {
        (Some(group), Some(topic)) => Ok((wrapped(group), wrapped(topic))),
        _ => Err(status(pb::Code::BadRequest, "group and topic are required")),
    }
}

impl Service {
    /// ACK_MESSAGE of a handle on its broker set's master.
    async fn ack_on_broker(
        &self,
        addr: &str,
        group: &str,
        topic: &str,
        handle: &ReceiptHandle,
        raw: &str,
    ) -> Result<(), pb::Status> {
        let cmd = RemotingCommand::request(request_code::ACK_MESSAGE)
            .with_ext("consumerGroup", group)
            .with_ext("topic", topic)
            .with_ext("queueId", handle.queue_id())
            .with_ext("offset", handle.queue_offset())
            .with_ext("extraInfo", raw);
        self.api
            .call(addr, cmd, &[response_code::SUCCESS])
            .await
            .map(|_| ())
            .map_err(|e| self.broker_failed(topic, &e))
    }
}
