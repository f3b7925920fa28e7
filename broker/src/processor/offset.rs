//! Consumer offsets and queue offsets (`ConsumerManageProcessor`, `AdminBrokerProcessor`):
//! QUERY/UPDATE_CONSUMER_OFFSET (14/15), GET_MAX_OFFSET (30), GET_MIN_OFFSET (31),
//! SEARCH_OFFSET_BY_TIMESTAMP (29), GET_EARLIEST_MSG_STORETIME (32), and
//! INVOKE_BROKER_TO_RESET_OFFSET (222) with its RESET_CONSUMER_CLIENT_OFFSET (220) to the live
//! consumers (RocketMQ's `Broker2Client.resetOffset`).

use rocketraft_common::json::message_queue_map;
use rocketraft_common::protocol::MessageQueue;
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::{Refusal, RemotingCommand};

use super::{check_queue_id, existing_topic, Handled};
use crate::BrokerInner;

fn topic_and_queue(
    inner: &BrokerInner,
    request: &RemotingCommand,
) -> Result<(String, i32), Refusal> {
    let topic = request.require_ext("topic")?.to_string();
    let queue_id: i32 = request.ext_parse("queueId")?;
    let config = existing_topic(inner, &topic)?;
    check_queue_id(&config, queue_id, true)?;
    Ok((topic, queue_id))
}

pub fn query_consumer_offset(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let group = request.require_ext("consumerGroup")?.to_string();
    let (topic, queue_id) = topic_and_queue(inner, request)?;
    let set_zero = request
        .ext_parse_opt::<bool>("setZeroIfNotFound")?
        .unwrap_or(true);
    if let Some(offset) = inner.metadata.query_offset(&group, &topic, queue_id)? {
        return Ok(request
            .response_to(response_code::SUCCESS, None)
            .with_ext("offset", offset));
    }
    let min = inner.store.get_min_offset_in_queue(&topic, queue_id);
    // An expired lite topic's queue: its expiry deleted the group offsets at or below its cut,
    // so a group without one reads from the cut (as a POP does), as a new group of a queue
    // that still holds its first message reads from 0. QUERY_NOT_FOUND would let a client
    // consuming from the last offset start at the end and skip a message sent right after the
    // expiry. (`setZeroIfNotFound` off asks whether the group committed at all: not found.)
    if let Some(cut) = inner.lite.expired_at(&topic).filter(|_| set_zero) {
        return Ok(request
            .response_to(response_code::SUCCESS, None)
            .with_ext("offset", cut.max(min)));
    }
    // A group that never committed: RocketMQ answers 0 when the queue still holds its first
    // message (so a new group reads everything), and QUERY_NOT_FOUND otherwise, letting the
    // client apply its consume-from-where policy.
    if set_zero && min <= 0 {
        return Ok(request
            .response_to(response_code::SUCCESS, None)
            .with_ext("offset", 0));
    }
    Err(Refusal::new(
        response_code::QUERY_NOT_FOUND,
        format!("Not found, V3_0_6_SNAPSHOT maybe this group consumer boot first (group {group}, topic {topic}, queue {queue_id})"),
    ))
}

pub fn update_consumer_offset(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let group = request.require_ext("consumerGroup")?.to_string();
    let (topic, queue_id) = topic_and_queue(inner, request)?;
    let offset: i64 = request.ext_parse("commitOffset")?;
    if offset < 0 {
        return Err(Refusal::system_error(format!(
            "commitOffset {offset} must not be negative"
        )));
    }
    if let Some(previous) = inner.metadata.query_offset(&group, &topic, queue_id)? {
        if offset < previous {
            // Java overwrites backward commits too (a reset), and logs it.
            tracing::warn!(
                group,
                topic,
                queue_id,
                previous,
                offset,
                "consumer offset moved backwards"
            );
        }
    }
    inner
        .metadata
        .commit_offset(&group, &topic, queue_id, offset)?;
    Ok(request.response_to(response_code::SUCCESS, None))
}

pub fn max_offset(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let (topic, queue_id) = topic_and_queue(inner, request)?;
    let offset = inner.store.get_max_offset_in_queue(&topic, queue_id);
    Ok(request
        .response_to(response_code::SUCCESS, None)
        .with_ext("offset", offset))
}

pub fn min_offset(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let (topic, queue_id) = topic_and_queue(inner, request)?;
    let offset = inner.store.get_min_offset_in_queue(&topic, queue_id);
    Ok(request
        .response_to(response_code::SUCCESS, None)
        .with_ext("offset", offset))
}

pub fn search_by_timestamp(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let (topic, queue_id) = topic_and_queue(inner, request)?;
    let timestamp: i64 = request.ext_parse("timestamp")?;
    let offset = inner.store.get_offset_by_time(&topic, queue_id, timestamp);
    Ok(request
        .response_to(response_code::SUCCESS, None)
        .with_ext("offset", offset))
}

pub fn earliest_store_time(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let (topic, queue_id) = topic_and_queue(inner, request)?;
    match inner.store.get_earliest_message_time(&topic, queue_id) {
        Some(ts) => Ok(request
            .response_to(response_code::SUCCESS, None)
            .with_ext("timestamp", ts)),
        None => Err(Refusal::system_error(format!(
            "queue {queue_id} of topic {topic} holds no message"
        ))),
    }
}

/// `ResetOffsetBody` as RocketMQ's fastjson writes it: a map keyed by `MessageQueue` objects
/// (`{"offsetTable":{{"brokerName":"b","queueId":0,"topic":"T"}:5}}`, fields in fastjson's
/// alphabetical order), which the Java and Rust clients parse.
fn reset_offset_body(broker_name: &str, topic: &str, offsets: &[(i32, i64)]) -> Vec<u8> {
    let queues: Vec<(MessageQueue, i64)> = offsets
        .iter()
        .map(|(q, o)| {
            let mq = MessageQueue {
                topic: topic.to_string(),
                broker_name: broker_name.to_string(),
                queue_id: *q,
            };
            (mq, *o)
        })
        .collect();
    let table = message_queue_map(queues.iter().map(|(mq, o)| (mq, o.to_string())));
    format!("{{\"offsetTable\":{table}}}").into_bytes()
}

/// INVOKE_BROKER_TO_RESET_OFFSET: moves a group's offsets of a topic on this broker to the first
/// message stored at or after `timestamp` (-1: the queues' ends), every queue, or only
/// `queueId` to `offset` when both are given; without `isForce` an offset only moves back. The
/// new offsets are committed here (so POP consumers, consumers that are offline and consumers
/// that pull with broker-side offsets continue from them) and pushed to every live consumer of
/// the group (RESET_CONSUMER_CLIENT_OFFSET, which makes a Remoting client drop what it fetched
/// and read again from there). The answer's body is the offsets set.
pub fn reset_offset(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let topic = request.require_ext("topic")?.to_string();
    let group = request.require_ext("group")?.to_string();
    let timestamp: i64 = request.ext_parse("timestamp")?;
    let force = request.ext_parse_opt::<bool>("isForce")?.unwrap_or(false);
    let only_queue: i32 = request.ext_parse_opt("queueId")?.unwrap_or(-1);
    let only_offset: Option<i64> = request.ext_parse_opt("offset")?;
    let Some(config) = inner.topics.get(&topic) else {
        return Err(Refusal::new(
            response_code::TOPIC_NOT_EXIST,
            format!("[reset-offset] reset offset failed, no topic in this broker. topic={topic}"),
        ));
    };
    if only_queue >= 0 {
        check_queue_id(&config, only_queue, false)?;
    }
    let mut offsets = Vec::new();
    for queue_id in 0..config.write_queue_nums {
        if only_queue >= 0 && queue_id != only_queue {
            continue;
        }
        let target = match only_offset.filter(|_| only_queue >= 0) {
            Some(offset) => offset,
            None if timestamp == -1 => inner.store.get_max_offset_in_queue(&topic, queue_id),
            None => inner.store.get_offset_by_time(&topic, queue_id, timestamp),
        };
        let min = inner.store.get_min_offset_in_queue(&topic, queue_id);
        let max = inner.store.get_max_offset_in_queue(&topic, queue_id);
        let target = target.clamp(min.max(0), max.max(0));
        let current = inner.metadata.query_offset(&group, &topic, queue_id)?;
        let offset = match current {
            Some(current) if !force && target >= current => current,
            _ => target,
        };
        offsets.push((queue_id, offset));
    }
    for (queue_id, offset) in &offsets {
        inner
            .metadata
            .commit_offset(&group, &topic, *queue_id, *offset)?;
    }
    let body = reset_offset_body(&inner.config.broker_name, &topic, &offsets);
    let mut told = 0;
    if let Some(info) = inner.clients.group(&group) {
        for channel in info.clients.values() {
            let push = RemotingCommand::request(request_code::RESET_CONSUMER_CLIENT_OFFSET)
                .with_ext("topic", &topic)
                .with_ext("group", &group)
                .with_ext("timestamp", timestamp)
                .with_ext("isForce", force)
                .with_body(body.clone());
            match channel.connection.send_oneway(push) {
                Ok(()) => told += 1,
                Err(e) => {
                    tracing::warn!(%group, client = %channel.client_id, error = %e, "[reset-offset] could not tell a consumer")
                }
            }
        }
    }
    tracing::info!(%group, %topic, timestamp, force, consumers = told, ?offsets, "[reset-offset] consumer offsets reset");
    Ok(request
        .response_to(response_code::SUCCESS, None)
        .with_body(body))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reset_offset_body_is_fastjson_with_queue_keys() {
        let body = super::reset_offset_body("broker-a", "T", &[(0, 5), (1, 7)]);
        assert_eq!(
            String::from_utf8(body).expect("utf8"),
            r#"{"offsetTable":{{"brokerName":"broker-a","queueId":0,"topic":"T"}:5,{"brokerName":"broker-a","queueId":1,"topic":"T"}:7}}"#
        );
    }
}
