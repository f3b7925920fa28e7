//! Conversions between the protocol (`pb`) and the brokers' Remoting side: statuses, times,
//! namespaced names, a stored message as a `pb::Message`, a `pb::Message` as a Remoting send.

use std::collections::{BTreeMap, HashMap};

use rocketraft_common::consts::{property, sys_flag};
use rocketraft_common::message::MessageExt;
use rocketraft_remoting::api::{ApiError, SendRequest};
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::Refusal;

use super::validate::Outgoing;
use crate::pb;

/// Properties the protocol carries in `SystemProperties` (not shown as user properties).
/// `MessageConst.PROPERTY_TRACE_CONTEXT`: a gRPC message's `trace_context`, kept for its
/// consumers (as RocketMQ's proxy keeps it).
pub(super) const TRACE_CONTEXT: &str = "TRACE_CONTEXT";

pub(super) const SYSTEM_KEYS: &[&str] = &[
    property::TAGS,
    property::KEYS,
    property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX,
    property::POP_CK,
    property::SHARDING_KEY,
    TRACE_CONTEXT,
    property::TIMER_DELIVER_MS,
    property::TIMER_DELAY_SEC,
    property::TIMER_DELAY_MS,
    property::DELAY_TIME_LEVEL,
    property::TRANSACTION_PREPARED,
    property::PRODUCER_GROUP,
    property::RETRY_TOPIC,
    property::REAL_TOPIC,
    property::REAL_QUEUE_ID,
    property::MIN_OFFSET,
    property::MAX_OFFSET,
    property::CONSUME_START_TIMESTAMP,
    property::CRC32,
    property::WAIT_STORE_MSG_OK,
    property::MSG_REGION,
    property::TRACE_SWITCH,
    property::ORIGIN_MESSAGE_ID,
    property::FIRST_POP_TIME,
    property::CLUSTER,
    property::RECONSUME_TIME,
    property::MAX_RECONSUME_TIMES,
    rocketraft_common::lite::PROPERTY_LITE_TOPIC,
];

/// Every message type (a topic without `message.type`, or MIXED).
const ALL_TYPES: [pb::MessageType; 4] = [
    pb::MessageType::Normal,
    pb::MessageType::Fifo,
    pb::MessageType::Delay,
    pb::MessageType::Transaction,
];

/// The message types a topic's `message.type` attribute accepts.
pub(super) fn accepted_types(attribute: Option<&str>) -> Vec<i32> {
    match attribute.map(|t| t.to_ascii_uppercase()).as_deref() {
        Some("NORMAL") => vec![pb::MessageType::Normal as i32],
        Some("FIFO") => vec![pb::MessageType::Fifo as i32],
        Some("DELAY") => vec![pb::MessageType::Delay as i32],
        Some("TRANSACTION") => vec![pb::MessageType::Transaction as i32],
        // A LITE topic takes lite messages alone; other topics never take them.
        Some("LITE") => vec![pb::MessageType::Lite as i32],
        _ => ALL_TYPES.iter().map(|t| *t as i32).collect(),
    }
}

/// The namespace a request names in its `x-mq-namespace` header ("" when none).
pub fn header_namespace(metadata: &tonic::metadata::MetadataMap) -> String {
    header(metadata, "x-mq-namespace")
        .map(str::trim)
        .unwrap_or_default()
        .to_string()
}

/// A request header's value, when it is text.
pub(super) fn header<'a>(
    metadata: &'a tonic::metadata::MetadataMap,
    name: &str,
) -> Option<&'a str> {
    metadata.get(name).and_then(|v| v.to_str().ok())
}

/// Puts the header's namespace into a resource that does not carry its own.
pub(super) fn in_namespace(resource: &mut Option<pb::Resource>, namespace: &str) {
    if let Some(r) = resource.as_mut() {
        if r.resource_namespace.is_empty() {
            r.resource_namespace = namespace.to_string();
        }
    }
}

/// `{namespace}%{name}` as RocketMQ wraps namespaced resources.
pub(super) fn wrapped(resource: &pb::Resource) -> String {
    if resource.resource_namespace.is_empty() {
        resource.name.clone()
    } else {
        format!("{}%{}", resource.resource_namespace, resource.name)
    }
}

pub(super) fn status(code: pb::Code, message: impl Into<String>) -> pb::Status {
    pb::Status {
        code: code as i32,
        message: message.into(),
    }
}

pub(super) fn ok() -> pb::Status {
    status(pb::Code::Ok, "OK")
}

/// A Remoting failure as the protocol's code.
pub(super) fn from_api(e: &ApiError) -> pb::Status {
    match e {
        ApiError::Refused(Refusal { code, remark }) => {
            let c = match *code {
                response_code::TOPIC_NOT_EXIST => pb::Code::TopicNotFound,
                response_code::MESSAGE_ILLEGAL => pb::Code::BadRequest,
                response_code::NO_PERMISSION => pb::Code::Forbidden,
                response_code::NO_MESSAGE => pb::Code::InvalidReceiptHandle,
                response_code::FLUSH_DISK_TIMEOUT => pb::Code::MasterPersistenceTimeout,
                response_code::FLUSH_SLAVE_TIMEOUT | response_code::SLAVE_NOT_AVAILABLE => {
                    pb::Code::SlavePersistenceTimeout
                }
                response_code::SERVICE_NOT_AVAILABLE => pb::Code::HaNotAvailable,
                response_code::SYSTEM_BUSY => pb::Code::TooManyRequests,
                // RocketMQ's proxy `ResponseBuilder`.
                response_code::LMQ_QUOTA_EXCEEDED => pb::Code::LiteTopicQuotaExceeded,
                response_code::LITE_SUBSCRIPTION_QUOTA_EXCEEDED => {
                    pb::Code::LiteSubscriptionQuotaExceeded
                }
                _ => pb::Code::InternalError,
            };
            status(c, format!("broker answered {code}: {remark}"))
        }
        other => status(
            pb::Code::ProxyTimeout,
            format!("broker unreachable: {other}"),
        ),
    }
}

pub(super) fn duration_ms(d: &prost_types::Duration) -> i64 {
    d.seconds.saturating_mul(1000) + (d.nanos / 1_000_000) as i64
}

pub(super) fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub(super) fn timestamp_ms(t: &prost_types::Timestamp) -> i64 {
    t.seconds.saturating_mul(1000) + (t.nanos / 1_000_000) as i64
}

pub(super) fn pb_duration(ms: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: ms / 1000,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

/// A message to send (checked by [`super::validate`]) as the Remoting send to `queue_id`.
/// A gRPC producer has no group: a half message's producer group is its topic (see
/// `crate::session`).
pub(super) fn send_request(
    message: &pb::Message,
    out: &Outgoing<'_>,
    queue_id: i32,
) -> SendRequest {
    let sys = out.sys;
    let mut properties: BTreeMap<String, String> = message
        .user_properties
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(tag) = sys.tag.as_ref().filter(|t| !t.is_empty()) {
        properties.insert(property::TAGS.into(), tag.clone());
    }
    if !sys.keys.is_empty() {
        properties.insert(property::KEYS.into(), sys.keys.join(" "));
    }
    properties.insert(
        property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX.into(),
        sys.message_id.clone(),
    );
    if let Some(group) = out.group {
        properties.insert(property::SHARDING_KEY.into(), group.to_string());
    }
    if let Some(lite) = sys.lite_topic.as_ref().filter(|l| !l.is_empty()) {
        properties.insert(
            rocketraft_common::lite::PROPERTY_LITE_TOPIC.into(),
            lite.clone(),
        );
    }
    if let Some(trace) = sys.trace_context.as_ref().filter(|t| !t.is_empty()) {
        properties.insert(TRACE_CONTEXT.into(), trace.clone());
    }
    if let Some(at) = &sys.delivery_timestamp {
        properties.insert(
            property::TIMER_DELIVER_MS.into(),
            timestamp_ms(at).to_string(),
        );
    }
    let (producer_group, sys_flag) = if out.transactional {
        properties.insert(property::TRANSACTION_PREPARED.into(), "true".into());
        properties.insert(property::PRODUCER_GROUP.into(), out.topic.clone());
        (out.topic.clone(), sys_flag::TRANSACTION_PREPARED_TYPE)
    } else {
        ("proxy".to_string(), 0)
    };
    SendRequest {
        producer_group,
        topic: out.topic.clone(),
        queue_id,
        body: bytes::Bytes::from(message.body.clone()),
        properties,
        sys_flag,
        ..SendRequest::default()
    }
}

/// A stored (popped or pulled) message as the protocol's message, its topic without the
/// `namespace` prefix.
pub(super) fn to_pb(m: &MessageExt, namespace: &str, invisible_ms: i64) -> pb::Message {
    let props = &m.message.properties;
    // A lite topic's message (stored in its LMQ, or retried from the LMQ's retry topic) is
    // the parent topic's message with its lite topic.
    let lite = super::lite::lite_of(m);
    let stored_topic = lite.map_or(m.message.topic.as_str(), |(parent, _)| parent);
    let topic_name = stored_topic
        .strip_prefix(&format!("{namespace}%"))
        .filter(|_| !namespace.is_empty())
        .unwrap_or(stored_topic)
        .to_string();
    let user_properties: HashMap<String, String> = props
        .iter()
        .filter(|(k, _)| !SYSTEM_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let body = m.message.body.to_vec();
    pb::Message {
        topic: Some(pb::Resource {
            resource_namespace: namespace.to_string(),
            name: topic_name,
        }),
        user_properties,
        system_properties: Some(system_properties(m, &body, invisible_ms)),
        body,
    }
}

/// The `SystemProperties` of a stored message.
fn system_properties(m: &MessageExt, body: &[u8], invisible_ms: i64) -> pb::SystemProperties {
    let props = &m.message.properties;
    let group = props.get(property::SHARDING_KEY).cloned();
    let delivery = props
        .get(property::TIMER_DELIVER_MS)
        .and_then(|v| v.parse::<i64>().ok());
    let message_type = if super::lite::lite_of(m).is_some() {
        pb::MessageType::Lite
    } else if group.is_some() {
        pb::MessageType::Fifo
    } else if delivery.is_some() {
        pb::MessageType::Delay
    } else if sys_flag::transaction_value(m.sys_flag) == sys_flag::TRANSACTION_COMMIT_TYPE {
        pb::MessageType::Transaction
    } else {
        pb::MessageType::Normal
    };
    pb::SystemProperties {
        tag: props.get(property::TAGS).cloned(),
        keys: props
            .get(property::KEYS)
            .map(|k| {
                k.split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        message_id: props
            .get(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX)
            .cloned()
            .unwrap_or_else(|| m.msg_id.clone()),
        // What RocketMQ's proxy sends (`GrpcConverter`): MD5, uppercase hex. Official clients
        // check it, and some discard a message whose digest they cannot match.
        body_digest: Some(pb::Digest {
            r#type: pb::DigestType::Md5 as i32,
            checksum: md5_hex(body),
        }),
        body_encoding: pb::Encoding::Identity as i32,
        message_type: message_type as i32,
        born_timestamp: Some(timestamp(m.born_timestamp)),
        born_host: m.born_host.ip().to_string(),
        store_timestamp: Some(timestamp(m.store_timestamp)),
        store_host: m.store_host.to_string(),
        delivery_timestamp: delivery.map(timestamp),
        // The broker's POP handle plus the message's CommitLog offset (for
        // ForwardMessageToDeadLetterQueue) and, for a traced message, `t` (any proxy that
        // takes the handle back writes the consumer's trace record); the broker reads the
        // first eight fields.
        receipt_handle: props.get(property::POP_CK).map(|h| {
            if props.get(TRACE_CONTEXT).is_some_and(|t| !t.is_empty()) {
                format!("{h} {} t", m.commit_log_offset)
            } else {
                format!("{h} {}", m.commit_log_offset)
            }
        }),
        queue_id: m.queue_id,
        queue_offset: Some(m.queue_offset),
        invisible_duration: Some(pb_duration(invisible_ms)),
        delivery_attempt: Some(m.reconsume_times + 1),
        message_group: group,
        trace_context: props.get(TRACE_CONTEXT).cloned(),
        lite_topic: super::lite::lite_of(m).map(|(_, lite)| lite.to_string()),
        ..pb::SystemProperties::default()
    }
}

/// MD5 of `body` as uppercase hex (RocketMQ's `BinaryUtil.generateMd5`).
pub(crate) fn md5_hex(body: &[u8]) -> String {
    use md5::Digest;
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let digest = md5::Md5::digest(body);
    let mut hex = String::with_capacity(2 * digest.len());
    for b in digest {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0xF)]));
    }
    hex
}

#[cfg(test)]
mod digest_tests {
    #[test]
    fn md5_is_uppercase_hex_as_rocketmq_writes_it() {
        assert_eq!(super::md5_hex(b""), "D41D8CD98F00B204E9800998ECF8427E");
        assert_eq!(super::md5_hex(b"abc"), "900150983CD24FB0D6963F7D28E17F72");
    }
}
