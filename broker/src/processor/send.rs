//! SEND_MESSAGE (10), SEND_MESSAGE_V2 (310) and SEND_BATCH_MESSAGE (320)
//! (`SendMessageProcessor`).

use bytes::Bytes;
use rocketraft_common::consts::{perm, property, RETRY_GROUP_TOPIC_PREFIX};
use rocketraft_common::message::{decode_properties, Message};
use rocketraft_common::topic::validate_topic_name;
use rocketraft_common::TopicConfig;
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::server::RequestContext;
use rocketraft_remoting::{Refusal, RemotingCommand};

use super::Handled;
use crate::store::{BrokerMessage, PutStatus};
use crate::BrokerInner;

/// The fields of `SendMessageRequestHeader`, whichever of its two spellings the client used
/// (the strings borrowed from the request).
#[derive(Debug)]
struct SendHeader<'a> {
    producer_group: &'a str,
    topic: &'a str,
    default_topic: &'a str,
    default_topic_queue_nums: i32,
    queue_id: i32,
    sys_flag: i32,
    born_timestamp: i64,
    flag: i32,
    properties: &'a str,
    reconsume_times: i32,
    batch: bool,
}

impl<'a> SendHeader<'a> {
    /// V1 headers use full field names; V2 (`SendMessageRequestHeaderV2`) single letters a..n.
    fn parse(request: &'a RemotingCommand) -> Result<SendHeader<'a>, Refusal> {
        let v2 = !matches!(
            request.code,
            request_code::SEND_MESSAGE | request_code::SEND_REPLY_MESSAGE
        );
        let name = |full: &'static str, letter: &'static str| if v2 { letter } else { full };
        Ok(SendHeader {
            producer_group: request.require_ext(name("producerGroup", "a"))?,
            topic: request.require_ext(name("topic", "b"))?,
            default_topic: request
                .ext(name("defaultTopic", "c"))
                .unwrap_or(rocketraft_common::consts::AUTO_CREATE_TOPIC_KEY_TOPIC),
            default_topic_queue_nums: request
                .ext_parse_opt(name("defaultTopicQueueNums", "d"))?
                .unwrap_or(4),
            queue_id: request.ext_parse(name("queueId", "e"))?,
            sys_flag: request.ext_parse_opt(name("sysFlag", "f"))?.unwrap_or(0),
            born_timestamp: request
                .ext_parse_opt(name("bornTimestamp", "g"))?
                .unwrap_or(0),
            flag: request.ext_parse_opt(name("flag", "h"))?.unwrap_or(0),
            properties: request.ext(name("properties", "i")).unwrap_or_default(),
            reconsume_times: request
                .ext_parse_opt(name("reconsumeTimes", "j"))?
                .unwrap_or(0),
            batch: request.code == request_code::SEND_BATCH_MESSAGE
                || request
                    .ext_parse_opt::<bool>(name("batch", "m"))?
                    .unwrap_or(false),
        })
    }
}

/// Topics that only the broker itself writes (`TopicValidator.isNotAllowedSendTopic`).
const NOT_ALLOWED_SEND_TOPICS: &[&str] = &[
    "SCHEDULE_TOPIC_XXXX",
    "RMQ_SYS_TRANS_HALF_TOPIC",
    "RMQ_SYS_TRANS_OP_HALF_TOPIC",
    "rmq_sys_wheel_timer",
    "rmq_sys_REVIVE_LOG",
    crate::metalog::METADATA_TOPIC,
];

/// Serves a send, in this order: the fencing checks (`check_writable` and `check_in_sync`)
/// before anything else, the topic and queue checks, decoding and checking the messages,
/// routing delayed and transactional ones to their system topics, then the durable write (which
/// waits for the acks the policy asks for) and the answer.
pub async fn handle(
    inner: &BrokerInner,
    ctx: &RequestContext,
    request: &RemotingCommand,
) -> Handled {
    let header = SendHeader::parse(request)?;
    check_fencing(inner)?;
    let topic_config = writable_topic(inner, &header)?;
    let queue_id = choose_queue(&header, &topic_config, ctx)?;
    let max_size = inner.config.store.max_message_size;
    if request.body.len() > max_size {
        return Err(Refusal::new(
            response_code::MESSAGE_ILLEGAL,
            format!(
                "the message body size {} exceeds the broker's maximum of {max_size} bytes",
                request.body.len()
            ),
        ));
    }

    let messages = decode_messages(inner, &header, request)?;
    let uniq = match messages.as_slice() {
        [one] => one.uniq_key().unwrap_or_default().to_owned(),
        many => many
            .iter()
            .filter_map(|m| m.uniq_key())
            .collect::<Vec<_>>()
            .join(","),
    };
    let count = messages.len() as u64;
    let message_type = messages
        .first()
        .map_or("normal", |m| crate::metrics::message_type(&m.properties));
    let mut to_store: Vec<BrokerMessage> = messages
        .into_iter()
        .map(|message| BrokerMessage {
            message,
            queue_id,
            sys_flag: header.sys_flag,
            born_timestamp: header.born_timestamp,
            born_host: ctx.peer,
            reconsume_times: header.reconsume_times,
            prepared_transaction_offset: 0,
        })
        .collect();
    // A lite message goes to its lite topic's queue (`crate::lite`).
    let queue_id =
        crate::lite::route_send(&topic_config, header.sys_flag, queue_id, &mut to_store)?;
    if let Some(lmq) = to_store
        .first()
        .map(|m| m.message.topic.as_str())
        .filter(|t| *t != header.topic)
    {
        let epoch = inner.ha.as_ref().map_or(0, |ha| ha.master_epoch() as i64);
        inner.lite.check_quota(
            &inner.store,
            lmq,
            inner.config.max_lmq_consume_queue_num,
            epoch,
        )?;
    }
    tracing::trace!(producer_group = %header.producer_group, topic = %header.topic, queue_id, count, "send");
    let (to_store, deliver_at) = route_delayed(inner, to_store)?;
    let delayed = deliver_at.iter().any(|d| d.is_some());
    let (to_store, prepared) = route_prepared(inner, to_store, delayed)?;
    let sent = Sent {
        queue_id,
        deliver_at,
        prepared,
        uniq,
        count,
        message_type,
    };
    store_and_answer(inner, request, header.topic, to_store, sent).await
}

/// Fencing: only a master holding a valid role lease (`check_writable`) and with the replicas
/// the ack policy needs in sync (`check_in_sync`) takes writes.
fn check_fencing(inner: &BrokerInner) -> Result<(), Refusal> {
    if let Some(ha) = &inner.ha {
        ha.check_writable()
            .map_err(|e| Refusal::new(response_code::SERVICE_NOT_AVAILABLE, e.to_string()))?;
        ha.check_in_sync(&inner.ack_policy())
            .map_err(|e| Refusal::system_error(e.to_string()))?;
    }
    Ok(())
}

/// The configuration of the topic sent to, once its name is valid, it is not a system topic
/// only the broker writes, it exists (or was auto-created: then the nameservers are told soon)
/// and it is writable.
fn writable_topic(inner: &BrokerInner, header: &SendHeader) -> Result<TopicConfig, Refusal> {
    validate_topic_name(header.topic)
        .map_err(|e| Refusal::system_error(format!("topic {:?}: {e}", header.topic)))?;
    if NOT_ALLOWED_SEND_TOPICS
        .iter()
        .any(|t| header.topic == *t || header.topic.starts_with("rmq_sys_REVIVE_LOG"))
    {
        return Err(Refusal::new(
            response_code::NO_PERMISSION,
            format!("Sending message to topic[{}] is forbidden.", header.topic),
        ));
    }
    // A consumer group's retry topic is made on first send as CONSUMER_SEND_MSG_BACK makes it
    // (one queue, read-write), whatever auto-creation says: RocketMQ's `msgCheck` creates a
    // missing `%RETRY%` topic the same way (`createTopicInSendMessageBackMethod`). A DLQ message
    // resent to its group (`admin message dlq --resend`, the console) arrives like this.
    if header.topic.starts_with(RETRY_GROUP_TOPIC_PREFIX) {
        crate::pop::ensure_system_topic(inner, header.topic, 1)?;
    }
    let (topic_config, created) = inner
        .topics
        .get_or_create_on_send(
            header.topic,
            header.default_topic,
            header.default_topic_queue_nums,
            inner.config.auto_create_topic_enable,
        )?
        .ok_or_else(|| {
            Refusal::new(
                response_code::TOPIC_NOT_EXIST,
                format!(
                    "topic[{}] not exist, apply first please! (create it with `rocketraft admin topic create`, or enable auto_create_topic_enable)",
                    header.topic
                ),
            )
        })?;
    if created {
        inner.register_trigger.notify_one();
    }
    if !perm::is_writeable(topic_config.perm) {
        return Err(Refusal::new(
            response_code::NO_PERMISSION,
            format!("the topic[{}] sending message is forbidden", header.topic),
        ));
    }
    Ok(topic_config)
}

/// The queue to write to: the client's choice, or when it left it to the broker (a negative
/// id) one picked here. Refused when past the topic's write queues.
fn choose_queue(
    header: &SendHeader,
    topic_config: &TopicConfig,
    ctx: &RequestContext,
) -> Result<i32, Refusal> {
    let queue_id = if header.queue_id < 0 {
        // The broker picks: a FIFO message group (sharding key) always maps to the same queue,
        // so its messages stay in send order.
        match decode_properties(header.properties).get(property::SHARDING_KEY) {
            Some(group) if !group.is_empty() => {
                (rocketraft_common::hash::java_string_hash(group).unsigned_abs()
                    % topic_config.write_queue_nums.max(1) as u32) as i32
            }
            _ => pick_queue(topic_config.write_queue_nums),
        }
    } else {
        header.queue_id
    };
    if queue_id >= topic_config.write_queue_nums {
        return Err(Refusal::system_error(format!(
            "request queueId[{queue_id}] is illegal, topic:[{}] topicConfig.writeQueueNums:[{}] Producer:[{}]",
            header.topic, topic_config.write_queue_nums, ctx.peer
        )));
    }
    Ok(queue_id)
}

/// The request's messages (one, or a batch's), refused when the batch is empty or a message
/// breaks the broker's rules (`check_semantics`).
fn decode_messages(
    inner: &BrokerInner,
    header: &SendHeader,
    request: &RemotingCommand,
) -> Result<Vec<Message>, Refusal> {
    let messages = if header.batch {
        decode_batch(header.topic, request.body.clone(), header.properties)?
    } else {
        let mut message = Message::new(header.topic, request.body.clone());
        message.flag = header.flag;
        message.properties = decode_properties(header.properties);
        // A request of request-reply names the cluster its reply goes to (RocketMQ stamps every
        // message; we stamp only these, whose consumers need it to build the reply).
        if message.properties.contains_key(property::REPLY_TO_CLIENT)
            && message.property(property::MSG_TYPE) != Some(crate::processor::reply::REPLY_FLAG)
        {
            message.set_property(property::CLUSTER, inner.config.cluster_name.clone());
        }
        vec![message]
    };
    if messages.is_empty() {
        return Err(Refusal::new(
            response_code::MESSAGE_ILLEGAL,
            "the batch holds no message".to_string(),
        ));
    }
    for message in &messages {
        check_semantics(inner, message, header.sys_flag)?;
    }
    Ok(messages)
}

/// Delayed and timed messages wait in the timer topic (see `crate::timer`): rewrites them for
/// it (creating the topic if needed) and returns each message's delivery time. A batch cannot
/// mix delayed and immediate messages.
fn route_delayed(
    inner: &BrokerInner,
    to_store: Vec<BrokerMessage>,
) -> Result<(Vec<BrokerMessage>, Vec<Option<i64>>), Refusal> {
    let now = rocketraft_common::time::now_ms();
    let mut deliver_at = Vec::with_capacity(to_store.len());
    for m in &to_store {
        deliver_at.push(crate::timer::delivery_time(&m.message, now)?);
    }
    let delayed = deliver_at.iter().filter(|d| d.is_some()).count();
    if delayed > 0 && delayed < deliver_at.len() {
        return Err(Refusal::new(
            response_code::MESSAGE_ILLEGAL,
            "a batch cannot mix delayed and immediate messages".to_string(),
        ));
    }
    let to_store: Vec<BrokerMessage> = to_store
        .into_iter()
        .zip(&deliver_at)
        .map(|(m, at)| match at {
            Some(at) => crate::timer::to_timer(m, *at),
            None => m,
        })
        .collect();
    if delayed > 0 {
        crate::pop::ensure_system_topic(inner, crate::timer::TIMER_TOPIC, 1)?;
    }
    Ok((to_store, deliver_at))
}

/// The first phase of a transaction: a half message, invisible until committed. Rewrites
/// prepared messages for the half topic (creating it if needed) and returns how many there are;
/// a transactional message cannot be batched with others or `delayed`.
fn route_prepared(
    inner: &BrokerInner,
    to_store: Vec<BrokerMessage>,
    delayed: bool,
) -> Result<(Vec<BrokerMessage>, usize), Refusal> {
    let prepared = to_store
        .iter()
        .filter(|m| crate::transaction::is_prepared(&m.message, m.sys_flag))
        .count();
    if prepared > 0 && (prepared < to_store.len() || delayed) {
        return Err(Refusal::new(
            response_code::MESSAGE_ILLEGAL,
            "a transactional message cannot be batched with others or delayed".to_string(),
        ));
    }
    let to_store: Vec<BrokerMessage> = if prepared > 0 {
        crate::pop::ensure_system_topic(inner, crate::transaction::HALF_TOPIC, 1)?;
        to_store
            .into_iter()
            .map(crate::transaction::to_half)
            .collect()
    } else {
        to_store
    };
    Ok((to_store, prepared))
}

/// What the answer and the follow-ups of a write need to know about the messages sent.
struct Sent {
    queue_id: i32,
    /// Each message's delivery time, for delayed messages.
    deliver_at: Vec<Option<i64>>,
    /// How many prepared (half) messages were written.
    prepared: usize,
    /// The messages' unique keys, comma-separated.
    uniq: String,
    count: u64,
    /// `rocketmq_messages_in`'s `message_type` of the send.
    message_type: &'static str,
}

/// Writes durably (waiting for the acks the policy asks for), then registers the delayed
/// messages' timers and the half message's transaction, even when the acks did not come in
/// time (written, and maybe kept by the next master), and answers.
async fn store_and_answer(
    inner: &BrokerInner,
    request: &RemotingCommand,
    topic: &str,
    to_store: Vec<BrokerMessage>,
    sent: Sent,
) -> Handled {
    let queue_id = sent.queue_id;
    let (code, result) = match inner.store_durably(to_store).await {
        Ok(result) => (response_code::SUCCESS, result),
        // Appended but not known to be durable: RocketMQ answers FLUSH_DISK_TIMEOUT with the
        // offsets, and clients report it as a non-OK send status.
        Err(crate::DurableError::FlushTimeout(result)) => {
            (response_code::FLUSH_DISK_TIMEOUT, result)
        }
        // Replication: written, but the replicas the ack policy asks for did not confirm in
        // time: FLUSH_SLAVE_TIMEOUT (a non-OK send status), never SUCCESS.
        Err(crate::DurableError::NotAcked { result, why }) => {
            // Written (and maybe kept by the next master): its timer must still fire, its
            // transaction still be decided.
            schedule(inner, &sent.deliver_at, result.queue_offset, topic);
            if sent.prepared > 0 {
                inner
                    .transactions
                    .prepared(result.queue_offset, result.physical_offset, topic);
            }
            return Ok(request
                .response_to(response_code::FLUSH_SLAVE_TIMEOUT, Some(why))
                .with_ext("msgId", result.msg_id)
                .with_ext("queueId", queue_id)
                .with_ext("queueOffset", result.queue_offset));
        }
        Err(crate::DurableError::Store(e)) => return Err(e.into()),
        Err(e) => return Err(e.into()),
    };
    debug_assert_eq!(
        result.status == PutStatus::PutOk,
        code == response_code::SUCCESS
    );
    schedule(inner, &sent.deliver_at, result.queue_offset, topic);
    if sent.prepared > 0 {
        inner
            .transactions
            .prepared(result.queue_offset, result.physical_offset, topic);
    }
    let wrote = result.wrote_bytes.max(0) as u64;
    inner.stats.record_put(topic, sent.count, wrote);
    inner
        .metrics
        .message_in(topic, sent.message_type, sent.count, wrote);
    // A single delayed message can be recalled until it is delivered (RECALL_MESSAGE).
    let recall = match sent.deliver_at.as_slice() {
        [Some(at)] => Some(crate::timer::recall_handle(
            topic,
            &inner.config.broker_name,
            *at,
            &sent.uniq,
            result.queue_offset,
        )),
        _ => None,
    };
    let mut response = request.response_to(code, None);
    // Room for every field up front: no regrowth while they go in.
    response.ext_fields.reserve(7);
    response.ext_fields.insert("msgId", result.msg_id);
    response.set_ext("queueId", queue_id);
    response.set_ext("queueOffset", result.queue_offset);
    response.ext_fields.insert("transactionId", sent.uniq);
    response.ext_fields.insert("MSG_REGION", "DefaultRegion");
    response.ext_fields.insert("TRACE_ON", "true");
    if let Some(handle) = recall {
        response.ext_fields.insert("recallHandle", handle);
    }
    Ok(response)
}

/// Registers the timers of delayed messages written at `first_offset` of the timer topic.
fn schedule(inner: &BrokerInner, deliver_at: &[Option<i64>], first_offset: i64, topic: &str) {
    for (i, at) in deliver_at.iter().enumerate() {
        if let Some(at) = at {
            inner.timers.scheduled(*at, first_offset + i as i64, topic);
            inner.metrics.timer_enqueued(topic);
        }
    }
}

/// Transactional sends are refused when the broker is configured to reject them.
fn check_semantics(
    inner: &BrokerInner,
    message: &Message,
    sys_flag_value: i32,
) -> Result<(), Refusal> {
    if crate::transaction::is_prepared(message, sys_flag_value)
        && inner.config.reject_transaction_message
    {
        return Err(Refusal::new(
            response_code::NO_PERMISSION,
            "transactional messages are rejected by this broker (reject_transaction_message)"
                .to_string(),
        ));
    }
    Ok(())
}

/// Splits a SEND_BATCH_MESSAGE body (`MessageDecoder.decodesBatch`): entries of
/// `totalSize i32, magic i32, bodyCRC i32, flag i32, bodyLen i32 + body, propsLen i16 + props`.
fn decode_batch(
    topic: &str,
    body: Bytes,
    header_properties: &str,
) -> Result<Vec<Message>, Refusal> {
    let bad = |why: String| {
        Refusal::new(
            response_code::MESSAGE_ILLEGAL,
            format!("malformed batch body: {why}"),
        )
    };
    let shared = decode_properties(header_properties);
    let mut messages = Vec::new();
    let mut at = 0usize;
    while at < body.len() {
        let rest = &body[at..];
        if rest.len() < 20 {
            return Err(bad(format!("{} trailing bytes at offset {at}", rest.len())));
        }
        let read_i32 = |pos: usize| {
            i32::from_be_bytes([rest[pos], rest[pos + 1], rest[pos + 2], rest[pos + 3]])
        };
        let total = read_i32(0);
        if total < 22 || total as usize > rest.len() {
            return Err(bad(format!(
                "entry size {total} at offset {at} does not fit"
            )));
        }
        let total = total as usize;
        let flag = read_i32(12);
        let body_len = read_i32(16);
        if body_len < 0 || 20 + body_len as usize + 2 > total {
            return Err(bad(format!(
                "body length {body_len} at offset {at} does not fit"
            )));
        }
        let body_end = 20 + body_len as usize;
        let props_len = i16::from_be_bytes([rest[body_end], rest[body_end + 1]]);
        if props_len < 0 || body_end + 2 + props_len as usize > total {
            return Err(bad(format!(
                "properties length {props_len} at offset {at} does not fit"
            )));
        }
        let props_bytes = &rest[body_end + 2..body_end + 2 + props_len as usize];
        let props_text = std::str::from_utf8(props_bytes)
            .map_err(|_| bad(format!("properties at offset {at} are not UTF-8")))?;
        let mut message = Message::new(topic, body.slice(at + 20..at + body_end));
        message.flag = flag;
        message.properties = shared.clone();
        message.properties.extend(decode_properties(props_text));
        messages.push(message);
        at += total;
    }
    Ok(messages)
}

fn pick_queue(write_queue_nums: i32) -> i32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    (NEXT.fetch_add(1, Ordering::Relaxed) % write_queue_nums.max(1) as u32) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_bodies_decode_and_garbage_is_refused() {
        let mut body = Vec::new();
        rocketraft_remoting::api::encode_batch_entry(&mut body, b"one", "KEYS\u{1}k1\u{2}")
            .expect("short properties");
        let first_len = body.len();
        rocketraft_remoting::api::encode_batch_entry(&mut body, b"", "").expect("no properties");
        let messages = decode_batch("T", Bytes::from(body.clone()), "").expect("decode");
        assert_eq!(messages.len(), 2);
        assert_eq!(&messages[0].body[..], b"one");
        assert_eq!(messages[0].keys(), Some("k1"));
        assert!(messages[1].body.is_empty());

        for cut in 1..body.len() {
            if cut == first_len {
                continue; // the first entry ends exactly here: a valid one-message batch
            }
            assert!(
                decode_batch("T", Bytes::from(body[..cut].to_vec()), "").is_err(),
                "cut at {cut}"
            );
        }
        let mut lying = body.clone();
        lying[0..4].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode_batch("T", Bytes::from(lying), "").is_err());
    }
}
