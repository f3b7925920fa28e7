//! Topic and broker statistics (`AdminBrokerProcessor`): GET_TOPIC_STATS_INFO (202), each
//! queue's offsets and last store time, and VIEW_BROKER_STATS_DATA (315), a `BrokerStatsManager`
//! item's minute, hour and day. Both answer RocketMQ's fastjson bytes, which mqadmin
//! (`topicStatus`, `statsAll`) and the dashboard parse.

use rocketraft_common::protocol::{MessageQueue, TopicOffset, TopicStatsTable};
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{Refusal, RemotingCommand};

use super::Handled;
use crate::BrokerInner;

/// GET_TOPIC_STATS_INFO: `topic`. For every queue (the larger of the read and write counts):
/// min and max offset (never negative) and the store time of the queue's last message (0 when
/// empty); and the topic's puts per second over the last minute. TOPIC_NOT_EXIST for a topic
/// this broker does not have.
pub fn topic_stats(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let topic = request.require_ext("topic")?;
    let Some(config) = inner.topics.get(topic) else {
        return Err(Refusal::new(
            response_code::TOPIC_NOT_EXIST,
            format!("topic[{topic}] not exist"),
        ));
    };
    let queues = config.write_queue_nums.max(config.read_queue_nums);
    let mut table = TopicStatsTable {
        offset_table: Vec::with_capacity(queues.max(0) as usize),
        topic_put_tps: inner.stats.topic_put_tps(topic),
    };
    for queue_id in 0..queues {
        let min = inner.store.get_min_offset_in_queue(topic, queue_id).max(0);
        let max = inner.store.get_max_offset_in_queue(topic, queue_id).max(0);
        let last_update_timestamp = if max > 0 {
            inner
                .store
                .get_message_store_timestamp(topic, queue_id, max - 1)
                .unwrap_or(0)
        } else {
            0
        };
        let mq = MessageQueue {
            topic: topic.to_string(),
            broker_name: inner.config.broker_name.clone(),
            queue_id,
        };
        table.offset_table.push((
            mq,
            TopicOffset {
                last_update_timestamp,
                max_offset: max,
                min_offset: min,
            },
        ));
    }
    Ok(request
        .response_to(response_code::SUCCESS, None)
        .with_body(table.to_fastjson().into_bytes()))
}

/// VIEW_BROKER_STATS_DATA: `statsName`, `statsKey`. The item's `BrokerStatsData`; SYSTEM_ERROR
/// "The stats <name> <key> not exist" when there is no such item (an unknown name, or a key
/// never used since the broker started), as RocketMQ answers.
pub fn view_stats(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let name = request.require_ext("statsName")?;
    let key = request.require_ext("statsKey")?;
    let Some(data) = inner.stats.view(name, key, &inner.config.cluster_name) else {
        return Err(Refusal::system_error(format!(
            "The stats <{name}> <{key}> not exist"
        )));
    };
    Ok(request
        .response_to(response_code::SUCCESS, None)
        .with_body(data.to_fastjson().into_bytes()))
}
