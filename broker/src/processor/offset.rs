//! Consumer offsets and queue offsets (`ConsumerManageProcessor`, `AdminBrokerProcessor`):
//! QUERY/UPDATE_CONSUMER_OFFSET (14/15), GET_MAX_OFFSET (30), GET_MIN_OFFSET (31),
//! SEARCH_OFFSET_BY_TIMESTAMP (29), GET_EARLIEST_MSG_STORETIME (32).

use rocketraft_remoting::codes::response_code;
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
    // A group that never committed: RocketMQ answers 0 when the queue still holds its first
    // message (so a new group reads everything), and QUERY_NOT_FOUND otherwise, letting the
    // client apply its consume-from-where policy.
    let min = inner.store.get_min_offset_in_queue(&topic, queue_id);
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
