//! ReceiveMessage: POP with the client's batch size and invisible duration, long polling that
//! answers before the client's deadline, a status first then the messages (receipt handles,
//! delivery attempts, CRC32 body digests), then the delivery timestamp.

use std::time::Duration;

use rocketraft_common::message::MessageExt;

use super::admission::{required_group, required_queue, required_topic};
use super::convert::{duration_ms, ok, status, timestamp, to_pb, wrapped};
use super::route::queue_broker;
use super::{stream_of, BoxStream, Service};
use crate::pb;

type Item = pb::ReceiveMessageResponse;

/// Pops from the broker set the queue names; `client_deadline` is the client's `grpc-timeout`.
pub(super) async fn receive_message(
    service: &Service,
    req: pb::ReceiveMessageRequest,
    client_deadline: Option<Duration>,
    client: Option<&str>,
) -> Result<BoxStream<Item>, pb::Status> {
    let group = required_group(req.group.as_ref())?;
    let mq = required_queue(req.message_queue.as_ref())?;
    let topic = required_topic(mq.topic.as_ref())?;
    let invisible_ms = checked_invisible(
        req.invisible_duration
            .as_ref()
            .map(duration_ms)
            .unwrap_or(service.config.default_invisible.as_millis() as i64),
    )?;
    let batch = req.batch_size.clamp(1, 32);
    let poll = service.long_polling_ms(req.long_polling_timeout.as_ref(), client_deadline);
    let name = wrapped(topic);
    let route = service.route(&name).await?;
    let addr = service.master_of(&route, &queue_broker(mq, &route))?;
    let group_name = wrapped(group);
    // The queue only names the broker set: POP takes from every queue of the topic there, as
    // RocketMQ's proxy does, so a consumer never waits on an empty queue it happened to pick.
    let (kind, expression) = filter_expression(req.filter_expression.as_ref())?;
    // A FIFO group gets one message group's messages one at a time (the broker's order gate).
    let fifo = service.group_is_fifo(&group_name, &route).await;
    // A LITE topic: the client's lite topics only (`lite.rs`).
    if service.topic_types(&name, &route).await == [pb::MessageType::Lite as i32] {
        let messages = super::lite::receive_lite(
            service,
            super::lite::LiteReceive {
                client,
                group: &group_name,
                topic: &name,
                addr: &addr,
                batch,
                invisible_ms,
                poll_ms: poll,
                fifo,
                filter: (kind, expression.as_str()),
            },
        )
        .await?;
        if messages.is_empty() {
            return Err(status(pb::Code::MessageNotFound, "no new message"));
        }
        let items = received(&messages, &topic.resource_namespace, invisible_ms);
        return Ok(stream_of(items));
    }
    let messages = service
        .api
        .pop_filtered(
            &addr,
            &group_name,
            &name,
            -1,
            batch,
            invisible_ms,
            poll,
            fifo,
            Some((kind, expression.as_str())),
        )
        .await
        .map_err(|e| service.broker_failed(&name, &e))?;
    if messages.is_empty() {
        return Err(status(pb::Code::MessageNotFound, "no new message"));
    }
    let items = received(&messages, &topic.resource_namespace, invisible_ms);
    Ok(stream_of(items))
}

/// The stream's items: OK, the messages, the delivery timestamp.
fn received(messages: &[MessageExt], namespace: &str, invisible_ms: i64) -> Vec<Item> {
    use pb::receive_message_response::Content;
    let mut items = vec![Item {
        content: Some(Content::Status(ok())),
    }];
    items.extend(messages.iter().map(|m| Item {
        content: Some(Content::Message(to_pb(m, namespace, invisible_ms))),
    }));
    items.push(Item {
        content: Some(Content::DeliveryTimestamp(timestamp(
            rocketraft_common::time::now_ms(),
        ))),
    });
    items
}

/// The filter of a receive: `(type, expression)` for the broker's POP, TAG `*` without one. An
/// SQL92 expression that does not compile is refused here with ILLEGAL_FILTER_EXPRESSION and the
/// reason, as RocketMQ's proxy refuses it (`FilterAPI.build`).
fn filter_expression(
    filter: Option<&pb::FilterExpression>,
) -> Result<(&'static str, String), pb::Status> {
    match filter {
        Some(f) if f.r#type == pb::FilterType::Sql as i32 => {
            rocketraft_common::sql92::Sql92::parse(&f.expression).map_err(|e| {
                status(
                    pb::Code::IllegalFilterExpression,
                    format!("illegal SQL92 filter expression {:?}: {e}", f.expression),
                )
            })?;
            Ok(("SQL92", f.expression.clone()))
        }
        Some(f) => Ok(("TAG", f.expression.clone())),
        None => Ok(("TAG", "*".to_string())),
    }
}

/// An invisible duration between 1 s and 12 h; ILLEGAL_INVISIBLE_TIME otherwise.
/// A ChangeInvisibleDuration's duration: 0 .. 12 h, as RocketMQ's proxy takes it (0 is a nack
/// without backoff, what a client sends when its retry policy gives no delay).
pub(super) fn checked_new_invisible(ms: i64) -> Result<i64, pb::Status> {
    if (0..=12 * 3600 * 1000).contains(&ms) {
        Ok(ms)
    } else {
        Err(status(
            pb::Code::IllegalInvisibleTime,
            format!("invisible duration {ms} ms is outside 0 .. 12 h"),
        ))
    }
}

pub(super) fn checked_invisible(ms: i64) -> Result<i64, pb::Status> {
    if (1_000..=12 * 3600 * 1000).contains(&ms) {
        Ok(ms)
    } else {
        Err(status(
            pb::Code::IllegalInvisibleTime,
            format!("invisible duration {ms} ms is outside 1 s .. 12 h"),
        ))
    }
}

impl Service {
    /// How long a receive may wait for messages: the client's long polling timeout (the
    /// proxy's maximum without one, and at most that), answering 2 s before the client's own
    /// deadline.
    fn long_polling_ms(
        &self,
        requested: Option<&prost_types::Duration>,
        client_deadline: Option<Duration>,
    ) -> i64 {
        let max = self.config.max_long_polling.as_millis() as i64;
        let poll = requested.map(duration_ms).unwrap_or(max).min(max);
        match client_deadline {
            Some(d) => poll.min((d.as_millis() as i64 - 2_000).max(0)),
            None => poll,
        }
    }
}

/// `grpc-timeout`: digits and a unit (H, M, S, m, u, n).
pub(super) fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn grpc_timeouts_parse() {
        use std::time::Duration;
        assert_eq!(
            super::parse_grpc_timeout("30S"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            super::parse_grpc_timeout("1500m"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(super::parse_grpc_timeout("x"), None);
    }
}
