//! PULL_MESSAGE (11) with long polling and tag filtering (`PullMessageProcessor`).
//!
//! A pull that finds nothing new and carries the SUSPEND flag is held until a message arrives in
//! the store or `suspendTimeoutMillis` passes, then answered from a fresh read; RocketMQ's
//! `PullRequestHoldService` does the same with a queue of held requests, we do it with one
//! task per held request waiting on the store's arrival signal.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::BytesMut;
use rocketraft_common::consts::{perm, pull_sys_flag};
use rocketraft_common::hash::java_string_hash;
use rocketraft_common::sql92::Sql92;
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::server::RequestContext;
use rocketraft_remoting::{Refusal, RemotingCommand};

use super::{check_queue_id, existing_topic, Handled};
use crate::store::{GetMessageResult, GetMessageStatus};
use crate::BrokerInner;

/// The longest a pull may be held, whatever the client asks (a bound on held requests).
const MAX_SUSPEND_MS: i64 = 60_000;

#[derive(Debug)]
struct PullHeader {
    consumer_group: String,
    topic: String,
    queue_id: i32,
    queue_offset: i64,
    max_msg_nums: i32,
    sys_flag: i32,
    commit_offset: i64,
    suspend_timeout_ms: i64,
    subscription: Option<String>,
    expression_type: Option<String>,
}

impl PullHeader {
    fn parse(request: &RemotingCommand) -> Result<Self, Refusal> {
        Ok(PullHeader {
            consumer_group: request.require_ext("consumerGroup")?.to_string(),
            topic: request.require_ext("topic")?.to_string(),
            queue_id: request.ext_parse("queueId")?,
            queue_offset: request.ext_parse("queueOffset")?,
            max_msg_nums: request.ext_parse("maxMsgNums")?,
            sys_flag: request.ext_parse("sysFlag")?,
            commit_offset: request.ext_parse_opt("commitOffset")?.unwrap_or(-1),
            suspend_timeout_ms: request.ext_parse_opt("suspendTimeoutMillis")?.unwrap_or(0),
            subscription: request.ext("subscription").map(str::to_string),
            expression_type: request.ext("expressionType").map(str::to_string),
        })
    }
}

/// What a subscription accepts: a TAG expression (tags codes; `None` accepts everything), or an
/// SQL92 expression over the message's properties.
#[derive(Debug, Clone)]
pub struct MessageFilter {
    codes: Option<BTreeSet<i64>>,
    sql: Option<std::sync::Arc<Sql92>>,
}

/// RocketMQ's expression types.
pub const TAG_TYPE: &str = "TAG";
pub const SQL92_TYPE: &str = "SQL92";

impl MessageFilter {
    /// Parses a TAG expression: `*`, empty, or `TagA || TagB`.
    pub fn parse(expression: &str) -> MessageFilter {
        let expression = expression.trim();
        if expression.is_empty() || expression == "*" {
            return MessageFilter {
                codes: None,
                sql: None,
            };
        }
        let codes = expression
            .split("||")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| java_string_hash(t) as i64)
            .collect();
        MessageFilter {
            codes: Some(codes),
            sql: None,
        }
    }

    /// A filter of `expression_type` (TAG when absent or empty; SQL92): refused as RocketMQ
    /// refuses it: SYSTEM_ERROR when the broker does not filter by properties
    /// (`enablePropertyFilter`), SUBSCRIPTION_PARSE_FAILED naming what is wrong with the SQL,
    /// SUBSCRIPTION_PARSE_FAILED for an unknown type.
    pub fn of_type(
        inner: &BrokerInner,
        expression_type: Option<&str>,
        expression: &str,
    ) -> Result<MessageFilter, Refusal> {
        let kind = expression_type.map(str::trim).unwrap_or_default();
        if kind.is_empty() || kind.eq_ignore_ascii_case(TAG_TYPE) {
            return Ok(MessageFilter::parse(expression));
        }
        if !kind.eq_ignore_ascii_case(SQL92_TYPE) {
            return Err(Refusal::new(
                response_code::SUBSCRIPTION_PARSE_FAILED,
                format!("expression type {kind} is not supported; use TAG or SQL92"),
            ));
        }
        if !inner.config.enable_property_filter {
            return Err(Refusal::system_error(format!(
                "The broker does not support consumer to filter message by {kind}"
            )));
        }
        let sql = Sql92::parse(expression).map_err(|e| {
            Refusal::new(
                response_code::SUBSCRIPTION_PARSE_FAILED,
                format!("parse the consumer's subscription failed: {e}"),
            )
        })?;
        Ok(MessageFilter {
            codes: None,
            sql: Some(std::sync::Arc::new(sql)),
        })
    }

    fn from_codes(codes: &BTreeSet<i32>, sub_string: &str) -> MessageFilter {
        if codes.is_empty() {
            return MessageFilter::parse(sub_string);
        }
        MessageFilter {
            codes: Some(codes.iter().map(|c| *c as i64).collect()),
            sql: None,
        }
    }

    /// Whether a record with this tags code may match (the ConsumeQueue-level check).
    pub fn accepts(&self, tags_code: i64) -> bool {
        match &self.codes {
            None => true,
            Some(codes) => codes.contains(&tags_code),
        }
    }

    /// Whether a stored record matches (the CommitLog-level check of an SQL92 filter; a record
    /// that does not decode does not match).
    pub fn accepts_record(&self, record: &[u8]) -> bool {
        let Some(sql) = &self.sql else {
            return true;
        };
        match rocketraft_common::message::decode_message(record) {
            Ok((m, _)) => sql.matches(&m.message.properties),
            Err(_) => false,
        }
    }

    /// Whether records must be read to decide (an SQL92 filter).
    pub fn reads_records(&self) -> bool {
        self.sql.is_some()
    }
}

/// Serves a pull: checks the topic, queue and subscription, commits the offset the consumer
/// reports (COMMIT_OFFSET flag), reads, and with the SUSPEND flag holds a pull that found
/// nothing new (see the module documentation) before answering.
pub async fn handle(
    inner: &BrokerInner,
    _ctx: &RequestContext,
    request: &RemotingCommand,
) -> Handled {
    if request.code == rocketraft_remoting::codes::request_code::LITE_PULL_MESSAGE
        && !inner.config.lite_pull_message_enable
    {
        return Err(Refusal::new(
            response_code::NO_PERMISSION,
            format!(
                "the broker[{}] for lite pull consumer is forbidden",
                inner.advertised
            ),
        ));
    }
    let header = PullHeader::parse(request)?;
    crate::pop::check_consume_enable(inner, &header.consumer_group)?;
    let topic = existing_topic(inner, &header.topic)?;
    if !perm::is_readable(topic.perm) {
        return Err(Refusal::new(
            response_code::NO_PERMISSION,
            format!("the topic[{}] pulling message is forbidden", header.topic),
        ));
    }
    check_queue_id(&topic, header.queue_id, true)?;
    if header.max_msg_nums <= 0 {
        return Err(Refusal::system_error(format!(
            "maxMsgNums = {} must be positive",
            header.max_msg_nums
        )));
    }
    let filter = subscription_filter(inner, &header)?;

    if header.sys_flag & pull_sys_flag::COMMIT_OFFSET != 0 && header.commit_offset >= 0 {
        inner.metadata.commit_offset(
            &header.consumer_group,
            &header.topic,
            header.queue_id,
            header.commit_offset,
        )?;
    }

    let max_msgs = header.max_msg_nums.min(inner.config.max_transfer_count);
    // Subscribed before the read, so an arrival right after it is not missed.
    let arrivals = inner.store.subscribe_arrivals();
    let mut result = read(inner, &header, max_msgs, &filter);

    let suspend = header.sys_flag & pull_sys_flag::SUSPEND != 0;
    if suspend && nothing_new(&result, header.queue_offset) {
        result = hold(inner, &header, max_msgs, &filter, arrivals).await;
    }
    Ok(respond(inner, request, &header, result))
}

/// The tag filter of a pull: from the request's subscription (SUBSCRIPTION flag) or the one
/// the consumer registered by heartbeat. Only TAG expressions are supported.
fn subscription_filter(inner: &BrokerInner, header: &PullHeader) -> Result<MessageFilter, Refusal> {
    Ok(if header.sys_flag & pull_sys_flag::SUBSCRIPTION != 0 {
        MessageFilter::of_type(
            inner,
            header.expression_type.as_deref(),
            header.subscription.as_deref().unwrap_or("*"),
        )?
    } else {
        crate::pop::check_broadcast_enable(inner, &header.consumer_group)?;
        let Some(sub) = inner
            .clients
            .subscription(&header.consumer_group, &header.topic)
        else {
            return Err(Refusal::new(
                response_code::SUBSCRIPTION_NOT_EXIST,
                format!(
                    "the consumer's subscription not exist, group: {} topic: {} (send HEART_BEAT with the subscription first, or set the SUBSCRIPTION flag)",
                    header.consumer_group, header.topic
                ),
            ));
        };
        match sub.expression_type.as_deref() {
            Some(kind) if kind.eq_ignore_ascii_case(SQL92_TYPE) => {
                MessageFilter::of_type(inner, Some(kind), &sub.sub_string)?
            }
            _ => MessageFilter::from_codes(&sub.code_set, &sub.sub_string),
        }
    })
}

/// Holds a pull that found nothing new: reads again at each store arrival until something new
/// is found, and once more when the hold time passes (or the store shuts down). The hold time
/// is the client's suspend timeout (capped) with long polling, else the short polling time.
async fn hold(
    inner: &BrokerInner,
    header: &PullHeader,
    max_msgs: i32,
    filter: &MessageFilter,
    mut arrivals: tokio::sync::watch::Receiver<u64>,
) -> GetMessageResult {
    let hold_ms = if inner.config.long_polling_enable {
        header.suspend_timeout_ms.clamp(0, MAX_SUSPEND_MS)
    } else {
        inner.config.short_polling_time_ms as i64
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(hold_ms as u64);
    loop {
        match tokio::time::timeout_at(deadline, arrivals.changed()).await {
            Ok(Ok(())) => {
                let result = read(inner, header, max_msgs, filter);
                if !nothing_new(&result, header.queue_offset) {
                    return result;
                }
            }
            // The store is shutting down, or the hold time passed: answer with what there is.
            Ok(Err(_)) | Err(_) => return read(inner, header, max_msgs, filter),
        }
    }
}

/// Whether a read found nothing new yet (the case long polling waits out).
fn nothing_new(result: &GetMessageResult, requested_offset: i64) -> bool {
    pull_code(result.status, requested_offset) == response_code::PULL_NOT_FOUND
}

fn read(
    inner: &BrokerInner,
    header: &PullHeader,
    max_msgs: i32,
    filter: &MessageFilter,
) -> GetMessageResult {
    inner.store.get_messages_matching(
        &header.consumer_group,
        &header.topic,
        header.queue_id,
        header.queue_offset,
        max_msgs,
        inner.config.max_transfer_bytes,
        &|code| filter.accepts(code),
        &|record| filter.accepts_record(record),
    )
}

/// RocketMQ's mapping of a store read to a pull response code.
fn pull_code(status: GetMessageStatus, requested_offset: i64) -> i32 {
    match status {
        GetMessageStatus::Found => response_code::SUCCESS,
        GetMessageStatus::MessageWasRemoving | GetMessageStatus::NoMatchedMessage => {
            response_code::PULL_RETRY_IMMEDIATELY
        }
        GetMessageStatus::NoMatchedLogicQueue | GetMessageStatus::NoMessageInQueue => {
            if requested_offset != 0 {
                response_code::PULL_OFFSET_MOVED
            } else {
                response_code::PULL_NOT_FOUND
            }
        }
        GetMessageStatus::OffsetFoundNull | GetMessageStatus::OffsetOverflowOne => {
            response_code::PULL_NOT_FOUND
        }
        GetMessageStatus::OffsetOverflowBadly | GetMessageStatus::OffsetTooSmall => {
            response_code::PULL_OFFSET_MOVED
        }
    }
}

fn respond(
    inner: &BrokerInner,
    request: &RemotingCommand,
    header: &PullHeader,
    result: GetMessageResult,
) -> RemotingCommand {
    let code = pull_code(result.status, header.queue_offset);
    let mut response = request
        .response_to(code, Some(format!("{:?}", result.status)))
        .with_ext("nextBeginOffset", result.next_begin_offset)
        .with_ext("minOffset", result.min_offset)
        .with_ext("maxOffset", result.max_offset)
        .with_ext("suggestWhichBrokerId", rocketraft_common::consts::MASTER_ID);
    if code == response_code::SUCCESS {
        let total: usize = result.messages.iter().map(|m| m.len()).sum();
        let mut body = BytesMut::with_capacity(total);
        for record in &result.messages {
            body.extend_from_slice(record);
        }
        let count = result.messages.len() as u64;
        inner
            .stats
            .record_get(&header.topic, &header.consumer_group, count, total as u64);
        let is_retry = header
            .topic
            .starts_with(rocketraft_common::consts::RETRY_GROUP_TOPIC_PREFIX);
        inner.metrics.message_out(
            &header.topic,
            &header.consumer_group,
            is_retry,
            count,
            total as u64,
        );
        response = response.with_body(body.freeze());
    } else {
        inner
            .stats
            .record_get(&header.topic, &header.consumer_group, 0, 0);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_expressions() {
        let all = MessageFilter::parse("*");
        assert!(all.accepts(0) && all.accepts(12345));
        let some = MessageFilter::parse("TagA || TagB");
        assert!(some.accepts(java_string_hash("TagA") as i64));
        assert!(some.accepts(java_string_hash("TagB") as i64));
        assert!(!some.accepts(java_string_hash("TagC") as i64));
        assert!(!some.accepts(0));
    }

    #[test]
    fn status_mapping_matches_rocketmq() {
        assert_eq!(
            pull_code(GetMessageStatus::Found, 5),
            response_code::SUCCESS
        );
        assert_eq!(
            pull_code(GetMessageStatus::OffsetOverflowOne, 5),
            response_code::PULL_NOT_FOUND
        );
        assert_eq!(
            pull_code(GetMessageStatus::OffsetOverflowBadly, 5),
            response_code::PULL_OFFSET_MOVED
        );
        assert_eq!(
            pull_code(GetMessageStatus::NoMessageInQueue, 0),
            response_code::PULL_NOT_FOUND
        );
        assert_eq!(
            pull_code(GetMessageStatus::NoMessageInQueue, 3),
            response_code::PULL_OFFSET_MOVED
        );
        assert_eq!(
            pull_code(GetMessageStatus::NoMatchedMessage, 3),
            response_code::PULL_RETRY_IMMEDIATELY
        );
    }
}
