//! Topic administration and broker introspection (`AdminBrokerProcessor`):
//! UPDATE_AND_CREATE_TOPIC (17), DELETE_TOPIC_IN_BROKER (215), GET_ALL_TOPIC_CONFIG (21),
//! GET_BROKER_RUNTIME_INFO (28), VIEW_MESSAGE_BY_ID (33), the subscription group requests.
//!
//! Topic and subscription group changes are committed through the metadata log
//! ([`crate::metalog`]): in controller mode they are answered only once every SyncStateSet
//! member holds them.

use std::collections::BTreeMap;

use rocketraft_common::consts::{AUTO_CREATE_TOPIC_KEY_TOPIC, SELF_TEST_TOPIC};
use rocketraft_common::message::decode_offset_msg_id;
use rocketraft_common::TopicConfig;
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{Refusal, RemotingCommand};

use super::Handled;
use crate::metalog::MetadataChange;
use crate::BrokerInner;

pub async fn create_topic(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let topic = request.require_ext("topic")?.to_string();
    if topic == AUTO_CREATE_TOPIC_KEY_TOPIC
        || topic == SELF_TEST_TOPIC
        || crate::metalog::is_reserved(&topic)
    {
        return Err(Refusal::system_error(format!(
            "The topic[{topic}] is conflict with system topic."
        )));
    }
    let read_queue_nums: i32 = request.ext_parse("readQueueNums")?;
    let write_queue_nums: i32 = request.ext_parse("writeQueueNums")?;
    let mut config = TopicConfig::new(topic.clone(), read_queue_nums);
    config.write_queue_nums = write_queue_nums;
    config.perm = request.ext_parse("perm")?;
    if let Some(filter) = request.ext("topicFilterType").filter(|f| !f.is_empty()) {
        config.topic_filter_type = filter.to_string();
    }
    config.topic_sys_flag = request.ext_parse_opt("topicSysFlag")?.unwrap_or(0);
    config.order = request.ext_parse_opt("order")?.unwrap_or(false);
    if let Some(attributes) = request
        .ext("attributes")
        .filter(|a| !a.is_empty() && *a != "{}")
    {
        config.attributes = parse_attributes(attributes)?;
    }
    config
        .validate()
        .map_err(|e| Refusal::system_error(format!("topic {topic:?}: {e}")))?;
    inner
        .metalog
        .commit(inner, |_| Ok(vec![MetadataChange::PutTopic { config }]))
        .await?;
    tracing::info!(
        topic,
        read_queue_nums,
        write_queue_nums,
        "topic created or updated"
    );
    Ok(request.response_to(response_code::SUCCESS, None))
}

/// Attributes travel as a JSON map, or as RocketMQ's `+key=value,+key2=value2` string.
fn parse_attributes(text: &str) -> Result<BTreeMap<String, String>, Refusal> {
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text).map_err(|e| {
            Refusal::system_error(format!(
                "attributes {text:?} are not a JSON map of strings: {e}"
            ))
        });
    }
    let mut map = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let part = part.trim_start_matches(['+', '-']);
        let Some((k, v)) = part.split_once('=') else {
            return Err(Refusal::system_error(format!(
                "attribute {part:?} is not key=value"
            )));
        };
        map.insert(k.to_string(), v.to_string());
    }
    Ok(map)
}

pub async fn delete_topic(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let topic = request.require_ext("topic")?;
    if topic == SELF_TEST_TOPIC
        || topic == inner.config.cluster_name
        || topic == inner.config.broker_name
        || crate::metalog::is_reserved(topic)
    {
        return Err(Refusal::system_error(format!(
            "The topic[{topic}] is a system topic and cannot be deleted."
        )));
    }
    inner
        .metalog
        .commit(inner, |inner| {
            // Nothing to replicate for a topic this broker does not have.
            Ok(inner
                .topics
                .get(topic)
                .map(|_| MetadataChange::DeleteTopic {
                    topic: topic.to_string(),
                })
                .into_iter()
                .collect())
        })
        .await?;
    inner.stats.forget_topic(topic);
    tracing::info!(topic, "topic deleted");
    Ok(request.response_to(response_code::SUCCESS, None))
}

pub fn all_topic_config(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    // The applied metadata log offset before the state is read (a slave's copy compares it).
    let offset = inner.metalog.applied();
    let body = serde_json::to_vec(&inner.topics.wrapper())
        .map_err(|e| Refusal::system_error(e.to_string()))?;
    Ok(super::acl::with_offset(
        inner,
        request
            .response_to(response_code::SUCCESS, None)
            .with_body(body),
        offset,
    ))
}

/// GET_TOPIC_CONFIG (351): one topic's `TopicConfig` as JSON (its `attributes` carry
/// `message.type`); TOPIC_NOT_EXIST when the broker does not serve it.
pub fn topic_config(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let topic = request.require_ext("topic")?;
    let config = inner.topics.get(topic).ok_or_else(|| {
        Refusal::new(
            response_code::TOPIC_NOT_EXIST,
            format!("topic {topic} does not exist on this broker"),
        )
    })?;
    let body = serde_json::to_vec(&config).map_err(|e| Refusal::system_error(e.to_string()))?;
    Ok(request
        .response_to(response_code::SUCCESS, None)
        .with_body(body))
}

/// GET_SUBSCRIPTIONGROUP_CONFIG (352): one group's `SubscriptionGroupConfig` JSON as stored;
/// SUBSCRIPTION_GROUP_NOT_EXIST when nobody created it.
pub fn subscription_group(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let group = request.require_ext("group")?;
    let raw = inner
        .metadata
        .get_subscription_group(group)?
        .ok_or_else(|| {
            Refusal::new(
                response_code::SUBSCRIPTION_GROUP_NOT_EXIST,
                format!("subscription group {group} does not exist on this broker"),
            )
        })?;
    Ok(request
        .response_to(response_code::SUCCESS, None)
        .with_body(raw))
}

/// UPDATE_AND_CREATE_SUBSCRIPTIONGROUP (200): a `SubscriptionGroupConfig` JSON body, kept as
/// sent (its `retryMaxTimes` sets the group's retries before the DLQ).
pub async fn update_subscription_group(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let value: serde_json::Value = serde_json::from_slice(&request.body).map_err(|e| {
        Refusal::system_error(format!("the body is not a SubscriptionGroupConfig: {e}"))
    })?;
    let group = value["groupName"]
        .as_str()
        .filter(|g| !g.is_empty())
        .ok_or_else(|| Refusal::system_error("groupName is missing"))?;
    rocketraft_common::topic::validate_topic_name(group)
        .map_err(|e| Refusal::system_error(format!("group {group:?}: {e}")))?;
    if let Some(n) = value.get("retryMaxTimes") {
        if !n.as_i64().is_some_and(|n| (0..=10_000).contains(&n)) {
            return Err(Refusal::system_error(format!(
                "retryMaxTimes {n} must be within 0..=10000"
            )));
        }
    }
    let config = String::from_utf8(request.body.to_vec())
        .map_err(|e| Refusal::system_error(format!("the body is not UTF-8: {e}")))?;
    let group = group.to_string();
    inner
        .metalog
        .commit(inner, |_| {
            Ok(vec![MetadataChange::PutGroup { group, config }])
        })
        .await?;
    Ok(request.response_to(response_code::SUCCESS, None))
}

/// DELETE_SUBSCRIPTIONGROUP (207): deletes the group's `SubscriptionGroupConfig` (header
/// `groupName`); SUCCESS also when it did not exist, as RocketMQ answers. (Its consumer offsets
/// are kept: `cleanOffset` is not supported.)
pub async fn delete_subscription_group(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let group = request.require_ext("groupName")?.to_string();
    inner
        .metalog
        .commit(inner, |inner| {
            Ok(
                if inner.metadata.get_subscription_group(&group)?.is_some() {
                    vec![MetadataChange::DeleteGroup {
                        group: group.clone(),
                    }]
                } else {
                    vec![]
                },
            )
        })
        .await?;
    inner.stats.forget_group(&group);
    tracing::info!(%group, "subscription group deleted");
    Ok(request.response_to(response_code::SUCCESS, None))
}

/// GET_ALL_SUBSCRIPTIONGROUP_CONFIG (201): `{"subscriptionGroupTable": {group: config}}`.
pub fn all_subscription_groups(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let offset = inner.metalog.applied();
    let mut table = serde_json::Map::new();
    for (group, raw) in inner.metadata.all_subscription_groups()? {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&raw) {
            table.insert(group, v);
        }
    }
    let body = serde_json::to_vec(&serde_json::json!({ "subscriptionGroupTable": table }))
        .map_err(|e| Refusal::system_error(e.to_string()))?;
    Ok(super::acl::with_offset(
        inner,
        request
            .response_to(response_code::SUCCESS, None)
            .with_body(body),
        offset,
    ))
}

/// GET_ALL_CONSUMER_OFFSET (43): RocketMQ's `ConsumerOffsetSerializeWrapper`, keyed
/// `topic@group` (what slaves copy from their master).
pub fn all_consumer_offsets(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let mut table: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
    for (group, topic, queue_id, offset) in inner.metadata.all_offsets()? {
        table
            .entry(format!("{topic}@{group}"))
            .or_default()
            .insert(queue_id, offset);
    }
    let body = serde_json::to_vec(&serde_json::json!({ "offsetTable": table }))
        .map_err(|e| Refusal::system_error(e.to_string()))?;
    Ok(request
        .response_to(response_code::SUCCESS, None)
        .with_body(body))
}

/// GET_CONSUME_STATS (208) for a group (optionally one topic): per queue the broker's max
/// offset, the group's committed offset, the lag and the POP messages in flight, and the
/// messages handed to the group per second over the last minute (`consumeTps`; RocketMQ sums
/// its per-topic minute statistics, ours is per group, whatever the `topic`). The body is
/// Rocketraft's JSON (`{"offsetTable": [{topic, queueId, brokerName, brokerOffset,
/// consumerOffset, lag, inFlight, lastTimestamp}], "consumeTps": 1.5}`), not fastjson's map
/// with object keys.
pub fn consume_stats(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let group = request.require_ext("consumerGroup")?.to_string();
    let only_topic = request.ext("topic").filter(|t| !t.is_empty());
    let mut rows: BTreeMap<(String, i32), (i64, i64)> = BTreeMap::new();
    for (topic, queue_id, offset) in inner.metadata.offsets_of_group(&group)? {
        rows.insert((topic, queue_id), (offset, 0));
    }
    for (topic, queue_id, n) in inner.pop.in_flight(&group) {
        rows.entry((topic, queue_id)).or_insert((0, 0)).1 = n as i64;
    }
    let table: Vec<serde_json::Value> = rows
        .into_iter()
        .filter(|((topic, _), _)| only_topic.is_none_or(|t| t == topic))
        .map(|((topic, queue_id), (consumer, in_flight))| {
            let broker = inner.store.get_max_offset_in_queue(&topic, queue_id);
            let last = inner
                .store
                .get_message_store_timestamp(&topic, queue_id, consumer.max(1) - 1)
                .unwrap_or(0);
            serde_json::json!({
                "topic": topic,
                "queueId": queue_id,
                "brokerName": inner.config.broker_name,
                "brokerOffset": broker,
                "consumerOffset": consumer,
                "lag": (broker - consumer).max(0),
                "inFlight": in_flight,
                "lastTimestamp": last,
            })
        })
        .collect();
    let consume_tps = inner.stats.consume_tps(&group);
    let body =
        serde_json::to_vec(&serde_json::json!({ "offsetTable": table, "consumeTps": consume_tps }))
            .map_err(|e| Refusal::system_error(e.to_string()))?;
    Ok(request
        .response_to(response_code::SUCCESS, None)
        .with_body(body))
}

/// GET_BROKER_RUNTIME_INFO (28): RocketMQ's keys (`prepareRuntimeInfo` and the store's
/// `getRuntimeInfo`) where this broker has the value, and Rocketraft's own (retention, index).
pub fn runtime_info(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let mut table = BTreeMap::new();
    let stats = inner.stats.snapshot();
    table.insert(
        "brokerVersionDesc",
        "Rocketraft ".to_string() + env!("CARGO_PKG_VERSION"),
    );
    table.insert("msgPutTotalTodayNow", stats.put_messages.to_string());
    table.insert("msgGetTotalTodayNow", stats.get_messages.to_string());
    let marks = inner.stats.day_marks();
    table.insert(
        "msgPutTotalTodayMorning",
        marks.put_today_morning.to_string(),
    );
    table.insert(
        "msgPutTotalYesterdayMorning",
        marks.put_yesterday_morning.to_string(),
    );
    table.insert(
        "msgGetTotalTodayMorning",
        marks.get_today_morning.to_string(),
    );
    table.insert(
        "msgGetTotalYesterdayMorning",
        marks.get_yesterday_morning.to_string(),
    );
    table.insert("putBytesTotal", stats.put_bytes.to_string());
    table.insert("putMessageSizeTotal", stats.put_bytes.to_string());
    let tps = inner.stats.tps();
    table.insert("putTps", crate::stats::tps_string(tps.put));
    table.insert("getFoundTps", crate::stats::tps_string(tps.get_found));
    table.insert("getMissTps", crate::stats::tps_string(tps.get_miss));
    let total = |i: usize| tps.get_found[i] + tps.get_miss[i];
    table.insert(
        "getTotalTps",
        crate::stats::tps_string([total(0), total(1), total(2)]),
    );
    table.insert(
        "getTransferredTps",
        crate::stats::tps_string(tps.get_transferred),
    );
    let store_stats = inner.store.stats();
    table.insert("putMessageTimesTotal", store_stats.put_requests.to_string());
    let max = inner.store.max_phy_offset();
    table.insert(
        "dispatchBehindBytes",
        (max - inner.store.dispatched_phy_offset())
            .max(0)
            .to_string(),
    );
    table.insert(
        "remainHowManyDataToFlush",
        human_readable_bytes((max - inner.store.flushed_phy_offset()).max(0)),
    );
    // No page cache lock: writes go through the store's writer task (RocketMQ's key is the time
    // the put lock has been held, 0 when free).
    table.insert("pageCacheLockTimeMills", "0".to_string());
    table.insert(
        "earliestMessageTimeStamp",
        inner
            .store
            .earliest_message_time()
            .unwrap_or(-1)
            .to_string(),
    );
    // Rocketraft's own: delayed and timed messages waiting, undecided half messages.
    table.insert(
        "timerPendingMessages",
        inner.timers.pending_count().to_string(),
    );
    table.insert(
        "halfMessages",
        inner.transactions.pending_count().to_string(),
    );
    let runtime_secs = (rocketraft_common::time::now_ms() - inner.boot_timestamp_ms).max(0) / 1000;
    table.insert(
        "runtime",
        format!(
            "[ {} days, {} hours, {} minutes, {} seconds ]",
            runtime_secs / 86_400,
            runtime_secs / 3600 % 24,
            runtime_secs / 60 % 60,
            runtime_secs % 60
        ),
    );
    table.insert(
        "commitLogMaxOffset",
        inner.store.max_phy_offset().to_string(),
    );
    table.insert(
        "commitLogMinOffset",
        inner.store.min_phy_offset().to_string(),
    );
    let retention = inner.store.retention_status();
    // RocketMQ's key is a ratio of 1 ("0.45"); ours below are Rocketraft's own.
    table.insert(
        "commitLogDiskRatio",
        format!("{}", retention.disk_used_percent / 100.0),
    );
    table.insert("diskFull", retention.disk_full.to_string());
    table.insert("commitLogSegments", retention.segments.to_string());
    table.insert(
        "nextSegmentExpireTimestamp",
        retention
            .oldest_segment_expires_ms
            .map_or_else(|| "-1".to_string(), |t| t.to_string()),
    );
    table.insert("deleteWhen", retention.delete_when);
    table.insert(
        "fileReservedTime",
        inner.store.config().file_reserved_time.to_string(),
    );
    table.insert(
        "fileReservedTimeSecs",
        inner
            .store
            .config()
            .file_reserved_time_secs
            .map_or_else(|| "-1".to_string(), |s| s.to_string()),
    );
    table.insert("segmentsDeleted", retention.segments_deleted.to_string());
    table.insert(
        "consumeQueueFilesDeleted",
        retention.cq_files_deleted.to_string(),
    );
    table.insert(
        "retentionPinnedAt",
        retention
            .pinned_at
            .map_or_else(|| "-1".to_string(), |p| p.to_string()),
    );
    // The message index (our own keys; RocketMQ's IndexService reports none): how far it has
    // indexed the CommitLog and how much is still to index.
    if let Some(index) = inner.store.message_index() {
        let progress = index.progress();
        let stats = index.stats();
        table.insert("indexProgressOffset", progress.to_string());
        table.insert(
            "indexBehindBytes",
            (inner.store.max_phy_offset() - progress).max(0).to_string(),
        );
        table.insert("indexedRecords", stats.records.to_string());
        table.insert("indexEntries", stats.entries.to_string());
        table.insert("indexErrors", stats.errors.to_string());
    }
    table.insert("bootTimestamp", inner.boot_timestamp_ms.to_string());
    table.insert("brokerName", inner.config.broker_name.clone());
    table.insert("brokerAddr", inner.advertised.to_string());
    let body = serde_json::to_vec(&serde_json::json!({ "table": table }))
        .map_err(|e| Refusal::system_error(e.to_string()))?;
    Ok(request
        .response_to(response_code::SUCCESS, None)
        .with_body(body))
}

/// DELETE_EXPIRED_COMMITLOG (329, mqadmin `deleteExpiredCommitLog`): the next 20 cleaning
/// rounds delete expired CommitLog segments whatever the hour (RocketMQ's
/// `executeDeleteFilesManually`). Answers at once; the deletion runs on the cleaner.
pub fn delete_expired_commitlog(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    tracing::warn!("deleteExpiredCommitLog requested: expired files go during the next rounds");
    inner.store.delete_expired_files_manually();
    Ok(request.response_to(response_code::SUCCESS, None))
}

/// CLEAN_EXPIRED_CONSUMEQUEUE (306, mqadmin `cleanExpiredCQ`): moves every ConsumeQueue's
/// minimum past the CommitLog's and deletes the files wholly below. Unlike RocketMQ, a queue
/// whose every entry expired is kept (empty), so its offsets never restart at 0.
pub async fn clean_expired_consume_queue(
    inner: &BrokerInner,
    request: &RemotingCommand,
) -> Handled {
    let store = inner.store.clone();
    let files = tokio::task::spawn_blocking(move || store.clean_expired_consume_queues())
        .await
        .map_err(|e| Refusal::system_error(format!("ConsumeQueue cleaning failed: {e}")))?;
    tracing::info!(files, "cleanExpiredConsumeQueue done");
    Ok(request.response_to(response_code::SUCCESS, None))
}

/// VIEW_MESSAGE_BY_ID: the record at the id's (or `offset`'s) CommitLog offset, only when it
/// lies wholly below the confirm offset (a record beyond it is not yet held by the in-sync
/// replicas, may still be cut by a truncation, and is not visible to consumers either) and is
/// not in a reserved topic.
pub fn view_message_by_id(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let offset: i64 = match request.ext("offset") {
        Some(_) => request.ext_parse("offset")?,
        None => {
            let id = request.require_ext("msgId")?;
            decode_offset_msg_id(id)
                .map_err(|e| Refusal::system_error(format!("msgId {id:?}: {e}")))?
                .1
        }
    };
    let record = confirmed_record(inner, offset)?;
    // With ACLs the request's `topic` is what Get was checked on: a record of another topic is
    // not this caller's to see.
    let asked = request.ext("topic").filter(|t| !t.is_empty());
    let hidden = rocketraft_common::message::decode_message(&record).is_ok_and(|(m, _)| {
        crate::metalog::is_reserved(&m.message.topic) || asked.is_some_and(|t| t != m.message.topic)
    });
    if hidden {
        return Err(not_found(offset));
    }
    Ok(request
        .response_to(response_code::SUCCESS, None)
        .with_body(record))
}

fn not_found(offset: i64) -> Refusal {
    Refusal::system_error(format!("can not find message by the offset, {offset}"))
}

/// The raw record at CommitLog `offset` when it lies wholly below the confirm offset; refused
/// (SYSTEM_ERROR, as RocketMQ answers a missing message) otherwise.
pub(crate) fn confirmed_record(inner: &BrokerInner, offset: i64) -> Result<bytes::Bytes, Refusal> {
    let confirm = inner.store.confirm_offset();
    if offset < 0 || offset >= confirm {
        return Err(Refusal::system_error(format!(
            "can not find message by the offset, {offset}: it is not below the confirm offset {confirm}"
        )));
    }
    let record = inner
        .store
        .read_record(offset)
        .ok_or_else(|| not_found(offset))?;
    let end = offset.saturating_add(record.len() as i64);
    if end > confirm {
        return Err(Refusal::system_error(format!(
            "can not find message by the offset, {offset}: it ends at {end}, beyond the confirm offset {confirm}"
        )));
    }
    Ok(record)
}

/// `MixAll.humanReadableByteCount(bytes, false)`: "512 B", "1.5 KiB", "3.2 MiB".
fn human_readable_bytes(bytes: i64) -> String {
    const UNIT: f64 = 1024.0;
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let exp = ((bytes as f64).ln() / UNIT.ln()) as i32;
    let prefix = ["K", "M", "G", "T", "P", "E"]
        .get((exp - 1) as usize)
        .copied()
        .unwrap_or("E");
    format!("{:.1} {prefix}iB", bytes as f64 / UNIT.powi(exp))
}

#[cfg(test)]
mod tests {
    #[test]
    fn byte_counts_read_as_rocketmq_writes_them() {
        assert_eq!(super::human_readable_bytes(0), "0 B");
        assert_eq!(super::human_readable_bytes(1023), "1023 B");
        assert_eq!(super::human_readable_bytes(1536), "1.5 KiB");
        assert_eq!(super::human_readable_bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
