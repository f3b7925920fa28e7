//! POP_MESSAGE (200050), ACK_MESSAGE (200051), CHANGE_MESSAGE_INVISIBLETIME (200053),
//! PEEK_MESSAGE (200052) and NOTIFICATION (200054) over Remoting; the logic is in
//! [`crate::pop`].

use std::time::Duration;

use rocketraft_common::consts::perm;
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{Refusal, RemotingCommand, RequestContext};

use super::pull::MessageFilter;
use super::Handled;
use crate::pop::Handle;
use crate::BrokerInner;

/// Most messages one POP returns (RocketMQ caps `maxMsgNums` at 32).
const MAX_POP_NUMS: i32 = 32;
/// Bounds of `invisibleTime` (RocketMQ's proxy allows 10 s to 12 h; the broker takes shorter ones).
const MAX_INVISIBLE_MS: i64 = 12 * 3600 * 1000;
/// The longest a POP may be held for long polling.
const MAX_POLL_MS: i64 = 60_000;

fn bad(why: impl Into<String>) -> Refusal {
    Refusal::system_error(why)
}

fn check_invisible(ms: i64) -> Result<(), Refusal> {
    if !(1..=MAX_INVISIBLE_MS).contains(&ms) {
        return Err(bad(format!(
            "invisibleTime {ms} ms is out of range (1 ms to 12 h)"
        )));
    }
    Ok(())
}

/// The filter of a POP: its `exp` expression of type `expType` (TAG or SQL92), or everything.
fn pop_filter(inner: &BrokerInner, request: &RemotingCommand) -> Result<MessageFilter, Refusal> {
    match request.ext("exp") {
        Some(exp) => MessageFilter::of_type(inner, request.ext("expType"), exp),
        None => Ok(MessageFilter::parse("*")),
    }
}

/// POP_MESSAGE: pops from [`crate::pop`]; with a `pollTime`, an empty pop is retried at each
/// store arrival until the (capped) poll time passes.
pub async fn pop(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let group = request.require_ext("consumerGroup")?.to_string();
    let topic = request.require_ext("topic")?.to_string();
    let queue_id: i32 = request.ext_parse("queueId")?;
    let max_nums: i32 = request.ext_parse("maxMsgNums")?;
    let invisible_ms: i64 = request.ext_parse("invisibleTime")?;
    let poll_ms: i64 = request.ext_parse_opt("pollTime")?.unwrap_or(0);
    let init_mode: i32 = request.ext_parse_opt("initMode")?.unwrap_or(0);
    let order = request.ext("order").is_some_and(|v| v == "true");
    if !(1..=MAX_POP_NUMS).contains(&max_nums) {
        return Err(bad(format!("maxMsgNums {max_nums} must be within 1..=32")));
    }
    check_invisible(invisible_ms)?;
    crate::pop::check_consume_enable(inner, &group)?;
    let filter = pop_filter(inner, request)?;
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(poll_ms.clamp(0, MAX_POLL_MS) as u64);
    let mut arrivals = inner.store.subscribe_arrivals();
    loop {
        arrivals.borrow_and_update();
        let result = inner
            .pop
            .pop(
                inner,
                &group,
                &topic,
                queue_id,
                max_nums as usize,
                invisible_ms,
                init_mode == 1,
                order,
                &filter,
            )
            .await?;
        if !result.messages.is_empty() {
            record_out(inner, &group, &topic, &result.messages);
            return Ok(request
                .response_to(response_code::SUCCESS, None)
                .with_ext("popTime", result.pop_time)
                .with_ext("invisibleTime", result.invisible_ms)
                .with_ext("reviveQid", 0)
                .with_ext("restNum", result.rest)
                .with_body(crate::pop::body(&result.messages)));
        }
        if poll_ms <= 0 || tokio::time::Instant::now() >= deadline {
            inner.stats.record_get(&topic, &group, 0, 0);
            let code = if poll_ms > 0 {
                response_code::POLLING_TIMEOUT
            } else {
                response_code::PULL_NOT_FOUND
            };
            return Ok(request
                .response_to(code, Some("no new message".to_string()))
                .with_ext("popTime", result.pop_time)
                .with_ext("invisibleTime", invisible_ms)
                .with_ext("reviveQid", 0)
                .with_ext("restNum", result.rest));
        }
        // Wake on new messages (or a revive into the retry topic), at the latest at the deadline.
        let _ = tokio::time::timeout_at(deadline, arrivals.changed()).await;
    }
}

/// The checks PEEK_MESSAGE and NOTIFICATION share (`PeekMessageProcessor`,
/// `NotificationProcessor`), with RocketMQ's codes and remarks: the topic exists
/// (TOPIC_NOT_EXIST) and is readable (NO_PERMISSION), the queue id is below its read queue count
/// (INVALID_PARAMETER; negative means all queues), and the group may consume (NO_PERMISSION).
fn check_peekable(
    inner: &BrokerInner,
    ctx: &RequestContext,
    group: &str,
    topic: &str,
    queue_id: i32,
) -> Result<(), Refusal> {
    let config = super::existing_topic(inner, topic)?;
    if !perm::is_readable(config.perm) {
        return Err(Refusal::new(
            response_code::NO_PERMISSION,
            format!("the topic[{topic}] peeking message is forbidden"),
        ));
    }
    if queue_id >= config.read_queue_nums {
        return Err(Refusal::new(
            response_code::INVALID_PARAMETER,
            format!(
                "queueId[{queue_id}] is illegal, topic:[{topic}] topicConfig.readQueueNums:[{}] consumer:[{}]",
                config.read_queue_nums, ctx.peer
            ),
        ));
    }
    crate::pop::check_consume_enable(inner, group)
}

/// PEEK_MESSAGE (200052): up to `maxMsgNums` (1..=32) of the messages the group's next POP
/// would get, from the group's retry topic and `queueId` of `topic` (all queues when
/// negative), as stored (no `POP_CK`). Nothing changes: no checkpoint, no invisibility, no
/// offset, so a later POP gets the same messages. SUCCESS with remark `FOUND` and the messages,
/// or PULL_NOT_FOUND with `NO_MESSAGE_IN_QUEUE`; the header is POP's (`popTime`,
/// `invisibleTime`, `reviveQid` 0 as RocketMQ leaves them, and `restNum`).
pub async fn peek(inner: &BrokerInner, ctx: &RequestContext, request: &RemotingCommand) -> Handled {
    let group = request.require_ext("consumerGroup")?.to_string();
    let topic = request.require_ext("topic")?.to_string();
    let queue_id: i32 = request.ext_parse("queueId")?;
    let max_nums: i32 = request.ext_parse("maxMsgNums")?;
    if !(1..=MAX_POP_NUMS).contains(&max_nums) {
        return Err(Refusal::new(
            response_code::INVALID_PARAMETER,
            format!("maxMsgNums {max_nums} must be within 1..=32"),
        ));
    }
    check_peekable(inner, ctx, &group, &topic, queue_id)?;
    let (records, rest) = inner
        .pop
        .peek(inner, &group, &topic, queue_id, max_nums as usize)
        .await?;
    let (code, remark) = if records.is_empty() {
        (response_code::PULL_NOT_FOUND, "NO_MESSAGE_IN_QUEUE")
    } else {
        (response_code::SUCCESS, "FOUND")
    };
    let mut body = bytes::BytesMut::with_capacity(records.iter().map(|r| r.len()).sum());
    for record in &records {
        body.extend_from_slice(record);
    }
    Ok(request
        .response_to(code, Some(remark.to_string()))
        .with_ext("popTime", 0)
        .with_ext("invisibleTime", 0)
        .with_ext("reviveQid", 0)
        .with_ext("restNum", rest)
        .with_body(body.freeze()))
}

/// NOTIFICATION (200054): whether the group's next POP of `topic` (`queueId`, all queues when
/// negative; `order` for FIFO, where a queue blocked by messages in flight has nothing to give)
/// would find a message. With none, the request is held until one arrives or `pollTime` (at
/// most 60 s) from `bornTime` (now when absent or 0) has passed. Always SUCCESS with `hasMsg`
/// and `pollingFull` (false: holds are not capped here) in the header.
pub async fn notification(
    inner: &BrokerInner,
    ctx: &RequestContext,
    request: &RemotingCommand,
) -> Handled {
    let group = request.require_ext("consumerGroup")?.to_string();
    let topic = request.require_ext("topic")?.to_string();
    let queue_id: i32 = request.ext_parse("queueId")?;
    let poll_ms: i64 = request.ext_parse("pollTime")?;
    let born: i64 = request.ext_parse_opt("bornTime")?.unwrap_or(0);
    let order = request.ext("order").is_some_and(|v| v == "true");
    check_peekable(inner, ctx, &group, &topic, queue_id)?;
    let now = rocketraft_common::time::now_ms();
    let born = if born <= 0 { now } else { born };
    // RocketMQ holds until bornTime + pollTime; never longer than pollTime from now (a client
    // clock ahead of ours), nor than the cap.
    let hold_ms = born
        .saturating_add(poll_ms)
        .saturating_sub(now)
        .min(poll_ms)
        .clamp(0, MAX_POLL_MS);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(hold_ms as u64);
    let mut arrivals = inner.store.subscribe_arrivals();
    loop {
        arrivals.borrow_and_update();
        let has_msg = inner
            .pop
            .has_message(inner, &group, &topic, queue_id, order)
            .await?;
        if has_msg || tokio::time::Instant::now() >= deadline {
            return Ok(request
                .response_to(response_code::SUCCESS, None)
                .with_ext("hasMsg", has_msg)
                .with_ext("pollingFull", false));
        }
        let _ = tokio::time::timeout_at(deadline, arrivals.changed()).await;
    }
}

/// Counts a POP's deliveries: the stats (`getTransferredTps`, the group's `consumeTps`) and
/// `rocketmq_messages_out` / `rocketmq_throughput_out`, the messages of the group's retry topic
/// apart (`is_retry`, under the topic popped), as RocketMQ labels them.
pub(super) fn record_out(
    inner: &BrokerInner,
    group: &str,
    topic: &str,
    messages: &[crate::pop::Popped],
) {
    let bytes = |retry: bool| -> (u64, u64) {
        messages
            .iter()
            .filter(|m| m.retry == retry)
            .fold((0, 0), |(n, b), m| (n + 1, b + m.record.len() as u64))
    };
    let (n, b) = bytes(false);
    let (rn, rb) = bytes(true);
    inner.stats.record_get(topic, group, n + rn, b + rb);
    inner.metrics.message_out(topic, group, false, n, b);
    inner.metrics.message_out(topic, group, true, rn, rb);
}

fn handle_of(request: &RemotingCommand) -> Result<Handle, Refusal> {
    let extra = request.require_ext("extraInfo")?;
    let handle = Handle::parse(extra).map_err(|e| Refusal::system_error(e.to_string()))?;
    if let Some(q) = request.ext_parse_opt::<i32>("queueId")? {
        if q != handle.queue_id {
            return Err(bad(format!(
                "queueId {q} does not match the receipt handle's queue {}",
                handle.queue_id
            )));
        }
    }
    if let Some(o) = request.ext_parse_opt::<i64>("offset")? {
        if o != handle.queue_offset {
            return Err(bad(format!(
                "offset {o} does not match the receipt handle's offset {}",
                handle.queue_offset
            )));
        }
    }
    Ok(handle)
}

pub async fn ack(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let group = request.require_ext("consumerGroup")?.to_string();
    let topic = request.require_ext("topic")?.to_string();
    let handle = handle_of(request)?;
    inner.pop.ack(inner, &group, &topic, &handle).await?;
    Ok(request.response_to(response_code::SUCCESS, None))
}

pub async fn change_invisible(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let group = request.require_ext("consumerGroup")?.to_string();
    let topic = request.require_ext("topic")?.to_string();
    let invisible_ms: i64 = request.ext_parse("invisibleTime")?;
    // 0 is a nack without backoff: visible again at once (RocketMQ takes it too).
    if !(0..=MAX_INVISIBLE_MS).contains(&invisible_ms) {
        return Err(bad(format!(
            "invisibleTime {invisible_ms} ms is out of range (0 to 12 h)"
        )));
    }
    let handle = handle_of(request)?;
    let pop_time = inner
        .pop
        .change_invisible(inner, &group, &topic, &handle, invisible_ms)
        .await?;
    Ok(request
        .response_to(response_code::SUCCESS, None)
        .with_ext("popTime", pop_time)
        .with_ext("invisibleTime", invisible_ms)
        .with_ext("reviveQid", 0))
}

/// One entry of BATCH_ACK_MESSAGE's body (RocketMQ's `BatchAck`, short JSON names).
#[derive(serde::Deserialize)]
struct BatchAck {
    #[serde(alias = "consumerGroup")]
    c: String,
    #[serde(alias = "topic")]
    t: String,
    #[serde(alias = "retry", default)]
    r: Option<String>,
    #[serde(alias = "startOffset")]
    so: i64,
    #[serde(alias = "queueId")]
    q: i32,
    #[serde(alias = "reviveQueueId", default)]
    rq: i32,
    #[serde(alias = "popTime")]
    pt: i64,
    #[serde(alias = "invisibleTime", default)]
    it: i64,
    /// `java.util.BitSet.toByteArray()` in base64: bit i acks offset `so + i`.
    #[serde(alias = "bitSet")]
    b: String,
}

#[derive(serde::Deserialize)]
struct BatchAckBody {
    #[serde(rename = "brokerName", default)]
    _broker_name: Option<String>,
    acks: Vec<BatchAck>,
}

/// BATCH_ACK_MESSAGE (200151): every acked offset must be in flight with that pop time; the
/// answer is SUCCESS only if all were, otherwise the first refusal (the others still applied).
/// The offsets of one entry (one queue) are acked in one acks record, stored durably before
/// the answer as for ACK_MESSAGE.
pub async fn batch_ack(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let body: BatchAckBody = serde_json::from_slice(&request.body).map_err(|e| {
        bad(format!(
            "BATCH_ACK_MESSAGE body is not a BatchAckMessageRequestBody: {e}"
        ))
    })?;
    // Every entry's bitset is decoded and checked before any offset is acked. One entry acks
    // offsets of one POP batch (at most 32 messages per POP in RocketMQ): a longer bitset is
    // refused.
    let mut bitsets = Vec::with_capacity(body.acks.len());
    for a in &body.acks {
        let bytes = rocketraft_common::base64::decode(&a.b)
            .ok_or_else(|| bad(format!("bitSet {:?} is not base64", a.b)))?;
        if bytes.len() > MAX_BITSET_BYTES {
            return Err(bad(format!(
                "bitSet of {} bytes acks offsets past {} of startOffset; at most {MAX_BITSET_BYTES} bytes",
                bytes.len(),
                MAX_BITSET_BYTES * 8
            )));
        }
        bitsets.push(bytes);
    }
    let mut first_error = None;
    for (a, bytes) in body.acks.iter().zip(&bitsets) {
        let retry = a.r.as_deref().is_some_and(|r| r != "0");
        let offsets: Vec<i64> = bitset_offsets(bytes)
            .map(|i| a.so.saturating_add(i))
            .collect();
        if offsets.is_empty() {
            continue;
        }
        let handle = Handle {
            ck_offset: a.so,
            pop_time: a.pt,
            invisible_ms: a.it,
            revive_qid: a.rq,
            retry,
            broker_name: inner.config.broker_name.clone(),
            queue_id: a.q,
            queue_offset: a.so,
        };
        if let Err(e) = inner
            .pop
            .ack_offsets(inner, &a.c, &a.t, &handle, &offsets)
            .await
        {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        None => Ok(request.response_to(response_code::SUCCESS, None)),
        Some(e) => Err(e),
    }
}

/// Longest bitset one BATCH_ACK_MESSAGE entry may carry: offsets within 1024 of its start.
const MAX_BITSET_BYTES: usize = 128;

/// The set bits of `java.util.BitSet.toByteArray()` output, lowest first.
fn bitset_offsets(bytes: &[u8]) -> impl Iterator<Item = i64> + '_ {
    bytes.iter().enumerate().flat_map(|(i, byte)| {
        (0..8)
            .filter(move |bit| byte & (1 << bit) != 0)
            .map(move |bit| (i * 8 + bit) as i64)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_java_bitset_bytes() {
        // BitSet {0, 2, 9}.toByteArray() = [0b0000_0101, 0b0000_0010] = "BQI="
        assert_eq!(rocketraft_common::base64::decode("BQI="), Some(vec![5, 2]));
        assert_eq!(rocketraft_common::base64::decode("BQI"), Some(vec![5, 2]));
        assert_eq!(rocketraft_common::base64::decode("!!"), None);
        assert_eq!(
            super::bitset_offsets(&[5, 2]).collect::<Vec<_>>(),
            vec![0, 2, 9]
        );
    }
}
