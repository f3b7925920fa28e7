//! SendMessage: each message checked ([`super::validate`]), sent to a writable queue (a FIFO
//! message group's queue by hash, else round robin over every broker set's queues, a set that
//! failed lately left aside and a failed send retried on another set) on its set's master; tags, keys,
//! message id, delivery timestamp (a timer message) and transactional half messages. Several
//! plain messages of one topic in one SendMessage go as one SEND_BATCH_MESSAGE (stored
//! contiguously in one queue, all or none), as RocketMQ's proxy sends them.

use std::collections::BTreeMap;

use rocketraft_common::message::encode_properties;
use rocketraft_common::protocol::TopicRouteData;
use rocketraft_remoting::api::{batch_entry_len, ApiError, SendResult, MAX_BATCH_PROPERTIES_LEN};
use rocketraft_remoting::api_produce::{
    group_queue, worth_another_set, writable_queues, SEND_ATTEMPTS,
};
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::Refusal;

use super::convert::{from_api, ok, send_request, status};
use super::validate::{check_message, check_properties, check_type, Outgoing};
use super::Service;
use crate::pb;
use crate::session::TransactionId;

/// Every message is checked first (body size, topic, id, properties), as RocketMQ's proxy
/// builds them all before sending: if one is refused nothing is sent, each entry answers its
/// own checks (its properties too; a valid message: BAD_REQUEST, not sent). Otherwise every message is sent, in
/// order; each entry answers for its message. The response's status is the first refusal's (or
/// OK).
pub(super) async fn send_message(
    service: &Service,
    req: pb::SendMessageRequest,
) -> Result<pb::SendMessageResponse, pb::Status> {
    if req.messages.is_empty() {
        return Err(status(pb::Code::BadRequest, "no message to send"));
    }
    let checks: Vec<Option<pb::Status>> = req
        .messages
        .iter()
        .map(|m| check_message(m, service.config.max_body_size).err())
        .collect();
    if let Some(first) = checks.iter().flatten().next().cloned() {
        let entries = req
            .messages
            .iter()
            .zip(checks)
            .map(|(m, refused)| {
                // A message that passed its first check still names its property fault.
                let own = refused.or_else(|| check_properties(m).err());
                refused_entry(
                    m,
                    own.unwrap_or_else(|| {
                        status(
                            pb::Code::BadRequest,
                            "not sent: another message of this request was refused",
                        )
                    }),
                )
            })
            .collect();
        return Ok(pb::SendMessageResponse {
            status: Some(first),
            entries,
        });
    }
    // Several plain messages of one topic: one broker request, as RocketMQ's proxy sends them.
    if let Some(sent) = service.send_together(&req.messages).await {
        return Ok(match sent {
            Ok(entries) => pb::SendMessageResponse {
                status: Some(ok()),
                entries,
            },
            Err(s) => pb::SendMessageResponse {
                entries: req
                    .messages
                    .iter()
                    .map(|m| refused_entry(m, s.clone()))
                    .collect(),
                status: Some(s),
            },
        });
    }
    let mut entries = Vec::with_capacity(req.messages.len());
    let mut first_error = None;
    for m in &req.messages {
        match service.send_one(m).await {
            Ok(e) => entries.push(e),
            Err(s) => {
                first_error.get_or_insert(s.clone());
                entries.push(refused_entry(m, s));
            }
        }
    }
    Ok(pb::SendMessageResponse {
        status: Some(first_error.unwrap_or_else(ok)),
        entries,
    })
}

/// The entry of a message that was not sent.
fn refused_entry(m: &pb::Message, s: pb::Status) -> pb::SendResultEntry {
    pb::SendResultEntry {
        status: Some(s),
        message_id: m
            .system_properties
            .as_ref()
            .map(|p| p.message_id.clone())
            .unwrap_or_default(),
        ..pb::SendResultEntry::default()
    }
}

/// The most messages one SendMessage sends as one batch (more go one by one).
const MAX_BATCH: usize = 1024;

impl Service {
    /// Sends `messages` (each already checked) as one SEND_BATCH_MESSAGE to one queue, stored
    /// contiguously, when they can go together: two or more NORMAL messages of one topic, none
    /// with a message group, lite topic, delivery time, transaction or trace, each with valid
    /// properties that a batch entry can carry (their encoding within an `i16`), the encoded
    /// batch (each entry's fixed fields, body and properties, as the broker counts it) within
    /// the largest message. `None` when they cannot, or when the broker refused the batch as
    /// an illegal message (its size: nothing stored): each then goes alone and gets its own
    /// answer. All or none are stored; a set that fails is left aside and another tried, as
    /// for one message.
    async fn send_together(
        &self,
        messages: &[pb::Message],
    ) -> Option<Result<Vec<pb::SendResultEntry>, pb::Status>> {
        if messages.len() < 2 || messages.len() > MAX_BATCH {
            return None;
        }
        let mut outs = Vec::with_capacity(messages.len());
        let mut items = Vec::with_capacity(messages.len());
        let mut total = 0usize;
        for m in messages {
            let out = check_message(m, self.config.max_body_size).ok()?;
            let alone = out.group.is_some()
                || out.transactional
                || out.message_type != pb::MessageType::Normal as i32
                || out.sys.delivery_timestamp.is_some()
                || out.sys.lite_topic.as_deref().is_some_and(|l| !l.is_empty())
                || super::trace::traced(m)
                || check_properties(m).is_err();
            if alone
                || outs
                    .first()
                    .is_some_and(|o: &Outgoing<'_>| o.topic != out.topic)
            {
                return None;
            }
            // The queue is the broker's to fill in: the properties do not depend on it.
            let r = send_request(m, &out, 0);
            let properties_len = encode_properties(&r.properties).len();
            if properties_len > MAX_BATCH_PROPERTIES_LEN {
                return None;
            }
            total += batch_entry_len(r.body.len(), properties_len);
            items.push((r.body, r.properties));
            outs.push(out);
        }
        if total > self.config.max_body_size {
            return None;
        }
        self.send_batch_of(&outs, &items).await
    }

    /// Sends one batch; `None` when the broker refused it as an illegal message (nothing
    /// stored).
    async fn send_batch_of(
        &self,
        outs: &[Outgoing<'_>],
        items: &[(bytes::Bytes, BTreeMap<String, String>)],
    ) -> Option<Result<Vec<pb::SendResultEntry>, pb::Status>> {
        let first = outs.first()?;
        let sent = self
            .send_with_retries(first, SEND_ATTEMPTS, |addr, queue_id| async move {
                self.api
                    .send_batch(&addr, "proxy", &first.topic, queue_id, items)
                    .await
                    .map_err(SendFailed::Refused)
            })
            .await;
        let r = match sent {
            Ok((_, r)) => r,
            // Refused as a whole for what it holds (its size, a message the broker does not
            // take): nothing was stored; each message goes alone for its own answer.
            Err(SendFailed::Refused(e))
                if e.code() == Some(response_code::MESSAGE_ILLEGAL)
                    || matches!(e, ApiError::Malformed(_)) =>
            {
                tracing::debug!(error = %e, "batch refused, sending its messages one by one");
                return None;
            }
            Err(e) => return Some(Err(e.into_status())),
        };
        let s = if r.code == response_code::SUCCESS {
            ok()
        } else {
            from_api(&ApiError::Refused(Refusal::new(
                r.code,
                "stored but not confirmed",
            )))
        };
        Some(Ok(outs
            .iter()
            .enumerate()
            .map(|(i, out)| pb::SendResultEntry {
                status: Some(s.clone()),
                message_id: out.sys.message_id.clone(),
                offset: r.queue_offset + i as i64,
                ..pb::SendResultEntry::default()
            })
            .collect()))
    }

    /// Sends to a queue picked for `out` ([`Service::pick_queue`]) on its set's master,
    /// `send(master address, queue id)`, trying up to `attempts` broker sets: a set without a
    /// master, or that failed in a way worth another set (no answer, a set in trouble), is
    /// left aside a while and the next tried. The set and the answer, or why not.
    async fn send_with_retries<T, F, Fut>(
        &self,
        out: &Outgoing<'_>,
        attempts: usize,
        mut send: F,
    ) -> Result<(String, T), SendFailed>
    where
        F: FnMut(String, i32) -> Fut,
        Fut: std::future::Future<Output = Result<T, SendFailed>>,
    {
        let mut tried: Vec<String> = Vec::new();
        // The failure of the last set tried: answered when no other set is left.
        let mut last: Option<pb::Status> = None;
        for attempt in 1..=attempts.max(1) {
            let route = self.route(&out.topic).await.map_err(SendFailed::Status)?;
            check_type(out, &self.topic_types(&out.topic, &route).await)
                .map_err(SendFailed::Status)?;
            let (broker, queue_id) = match self.pick_queue(out, &route, &tried) {
                Ok(pick) => pick,
                Err(s) => return Err(SendFailed::Status(last.unwrap_or(s))),
            };
            tried.push(broker.clone());
            let addr = match self.master_of(&route, &broker) {
                Ok(addr) => addr,
                Err(s) => {
                    self.meta.faults.failed(&broker);
                    self.forget_route(&out.topic);
                    last = Some(s);
                    continue;
                }
            };
            match send(addr, queue_id).await {
                Ok(r) => {
                    self.meta.faults.succeeded(&broker);
                    return Ok((broker, r));
                }
                Err(SendFailed::Refused(e)) => {
                    // A refusal of the message (too large, a lite topic quota, a bad
                    // property) says nothing about the set: only silence or a set in trouble
                    // leaves it aside, and only those are tried elsewhere.
                    if !worth_another_set(&e) {
                        return Err(SendFailed::Refused(e));
                    }
                    self.meta.faults.failed(&broker);
                    let failed = self.broker_failed(&out.topic, &e);
                    tracing::debug!(broker, error = %e, attempt, "send failed, trying another broker set");
                    last = Some(failed);
                }
                Err(failed) => return Err(failed),
            }
        }
        Err(SendFailed::Status(last.unwrap_or_else(|| {
            status(pb::Code::InternalError, "no broker set to send to")
        })))
    }

    async fn send_one(&self, message: &pb::Message) -> Result<pb::SendResultEntry, pb::Status> {
        let out = check_message(message, self.config.max_body_size)?;
        // A message group (or a lite topic) stays on its queue; others try up to SEND_ATTEMPTS
        // broker sets.
        let attempts = if placement_key(&out).is_some() {
            1
        } else {
            SEND_ATTEMPTS
        };
        let out_ref = &out;
        let (broker, r) = self
            .send_with_retries(out_ref, attempts, |addr, queue_id| async move {
                check_properties(message).map_err(SendFailed::Status)?;
                let request = send_request(message, out_ref, queue_id);
                let started = std::time::Instant::now();
                let sent = self.api.send(&addr, &request).await;
                if super::trace::traced(message) {
                    self.trace_send(message, out_ref, &addr, sent.as_ref().ok(), started)
                        .await;
                }
                sent.map_err(SendFailed::Refused)
            })
            .await
            .map_err(SendFailed::into_status)?;
        let transaction_id = if out.transactional {
            transaction_id(
                &broker,
                &r,
                &out.sys.message_id,
                super::trace::traced(message),
            )?
        } else {
            String::new()
        };
        let s = if r.code == response_code::SUCCESS {
            ok()
        } else {
            from_api(&ApiError::Refused(Refusal::new(
                r.code,
                "stored but not confirmed",
            )))
        };
        Ok(pb::SendResultEntry {
            status: Some(s),
            message_id: out.sys.message_id.clone(),
            transaction_id,
            offset: r.queue_offset,
            recall_handle: r.recall_handle.unwrap_or_default(),
        })
    }

    /// The broker set and queue a message goes to: a FIFO message group's (or a lite topic's)
    /// queue by hash over every set's writable queues (so a group keeps its queue and order,
    /// and a lite topic its one broker set's queue), else the next in
    /// round robin among the sets with a master that did not fail lately and are not in
    /// `tried` (see [`rocketraft_remoting::api_produce`]).
    fn pick_queue(
        &self,
        out: &Outgoing<'_>,
        route: &TopicRouteData,
        tried: &[String],
    ) -> Result<(String, i32), pb::Status> {
        let writable = writable_queues(route);
        let pick = match placement_key(out) {
            Some(key) => group_queue(&writable, key).cloned(),
            None => self
                .meta
                .faults
                .next_queue(&writable, route, &self.round_robin, tried),
        };
        pick.ok_or_else(|| {
            status(
                pb::Code::Forbidden,
                format!("topic {} has no writable queue", out.topic),
            )
        })
    }
}

/// Why [`Service::send_with_retries`] did not send.
enum SendFailed {
    /// Answered with this status: no route, a failed check, no set left to try.
    Status(pb::Status),
    /// The broker's refusal, or no answer (after the last set tried).
    Refused(ApiError),
}

impl SendFailed {
    fn into_status(self) -> pb::Status {
        match self {
            SendFailed::Status(s) => s,
            SendFailed::Refused(e) => from_api(&e),
        }
    }
}

/// What pins a message to one queue across broker sets: its FIFO message group, else its lite
/// topic (stored in that broker set's queue of the lite topic, which one consumer reads in
/// order).
fn placement_key<'a>(out: &Outgoing<'a>) -> Option<&'a str> {
    out.group
        .or_else(|| out.sys.lite_topic.as_deref().filter(|l| !l.is_empty()))
}

/// A half message's transaction id: where the broker stored it, its message id, and whether it
/// asked for tracing.
fn transaction_id(
    broker: &str,
    r: &SendResult,
    message_id: &str,
    traced: bool,
) -> Result<String, pb::Status> {
    let (_, phy) = rocketraft_common::message::decode_offset_msg_id(&r.msg_id).map_err(|e| {
        status(
            pb::Code::InternalError,
            format!("the broker answered an undecodable message id: {e}"),
        )
    })?;
    Ok(TransactionId {
        broker_name: broker.to_string(),
        queue_offset: r.queue_offset,
        commit_log_offset: phy,
        message_id: message_id.to_string(),
        traced,
    }
    .encode())
}
