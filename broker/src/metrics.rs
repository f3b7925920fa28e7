//! The broker's Prometheus metrics, with RocketMQ 5's names and labels
//! (`BrokerMetricsConstant`, `DefaultStoreMetricsConstant`) where it has them; ours start with
//! `rocketraft_`.
//!
//! Events (messages in and out, DLQ moves, transaction decisions) are counted in
//! [`BrokerMetrics`]' families as the processors serve them: one label-set lookup per request
//! or batch, never per message, and no lock held across I/O. Everything else is read from the
//! broker's live state when scraped, by the [`BrokerCollector`] that
//! [`crate::Broker::metrics_collector`] returns. The collector adds no `cluster` / `node_type` /
//! `node_id` labels (the process registry puts them on every series) and does not write
//! `rocketmq_rpc_latency` (the process writes that family once; the broker's Remoting server
//! records into it through [`crate::BrokerConfig::rpc_metrics`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use rocketraft_common::consts::{
    perm, property, AUTO_CREATE_TOPIC_KEY_TOPIC, DLQ_GROUP_TOPIC_PREFIX, RETRY_GROUP_TOPIC_PREFIX,
    SELF_TEST_TOPIC,
};
use rocketraft_common::metrics::{
    bool_label, counter, create_time_family, family, finish_latency_family, gauge,
    message_size_family, Collector, Counter, CounterFamily, DescriptorEncoder, HandleCache,
    Histogram, HistogramFamily, Labels,
};
use rocketraft_common::time::now_ms;

use crate::BrokerInner;

/// RocketMQ's `TopicValidator.SYSTEM_TOPIC_SET` (besides the `rmq_sys_` prefix).
const SYSTEM_TOPICS: &[&str] = &[
    AUTO_CREATE_TOPIC_KEY_TOPIC,
    "SCHEDULE_TOPIC_XXXX",
    "BenchmarkTest",
    "RMQ_SYS_TRANS_HALF_TOPIC",
    "RMQ_SYS_TRACE_TOPIC",
    "RMQ_SYS_TRANS_OP_HALF_TOPIC",
    "TRANS_CHECK_MAX_TIME_TOPIC",
    SELF_TEST_TOPIC,
    "OFFSET_MOVED_EVENT",
    "CHECKPOINT_TOPIC",
];

/// `TopicValidator.isSystemTopic`.
pub fn is_system_topic(topic: &str) -> bool {
    SYSTEM_TOPICS.contains(&topic) || topic.starts_with("rmq_sys_")
}

/// `BrokerMetricsManager.isSystemGroup`: the group starts with `CID_RMQ_SYS_` (any case).
pub fn is_system_group(group: &str) -> bool {
    group
        .get(..12)
        .is_some_and(|p| p.eq_ignore_ascii_case("CID_RMQ_SYS_"))
}

/// `BrokerMetricsManager.isSystem`.
pub fn is_system(topic: &str, group: &str) -> bool {
    is_system_topic(topic) || is_system_group(group)
}

/// `BrokerMetricsManager.isRetryOrDlqTopic`.
pub fn is_retry_or_dlq_topic(topic: &str) -> bool {
    topic.starts_with(RETRY_GROUP_TOPIC_PREFIX) || topic.starts_with(DLQ_GROUP_TOPIC_PREFIX)
}

/// `TopicMessageType.getMetricsValue()` of a send, as `BrokerMetricsManager.getMessageType`
/// tells it from the message's properties: transaction, fifo (a message group), delay, or
/// normal.
pub fn message_type(properties: &BTreeMap<String, String>) -> &'static str {
    let has = |k: &str| properties.contains_key(k);
    if properties
        .get(property::TRANSACTION_PREPARED)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        "transaction"
    } else if has(property::SHARDING_KEY) {
        "fifo"
    } else if has("__STARTDELIVERTIME")
        || has(property::DELAY_TIME_LEVEL)
        || has(property::TIMER_DELIVER_MS)
        || has(property::TIMER_DELAY_SEC)
        || has(property::TIMER_DELAY_MS)
    {
        "delay"
    } else {
        "normal"
    }
}

/// The broker's event counters and histograms.
pub struct BrokerMetrics {
    messages_in: CounterFamily,
    throughput_in: CounterFamily,
    message_size: HistogramFamily,
    messages_out: CounterFamily,
    throughput_out: CounterFamily,
    send_to_dlq: CounterFamily,
    commit_messages: CounterFamily,
    rollback_messages: CounterFamily,
    pop_revived: CounterFamily,
    finish_latency: HistogramFamily,
    topic_create_time: HistogramFamily,
    group_create_time: HistogramFamily,
    timer_enqueue: CounterFamily,
    timer_dequeue: CounterFamily,
    /// The members `message_in` and `message_out` update, by topic (then message type, or
    /// group): no label strings are built per request once a key has been seen.
    in_handles: HandleCache<String, Arc<HandleCache<&'static str, InHandles>>>,
    /// By `is_retry` (false, true), then topic, then group: a series is made on the first
    /// message it counts.
    out_handles: [HandleCache<String, Arc<HandleCache<String, OutHandles>>>; 2],
}

/// `rocketmq_messages_in`, `rocketmq_throughput_in` and `rocketmq_message_size` of one topic and
/// message type.
#[derive(Clone)]
struct InHandles {
    messages: Counter,
    bytes: Counter,
    size: Histogram,
}

/// `rocketmq_messages_out` and `rocketmq_throughput_out` of one topic, group and `is_retry`.
#[derive(Clone)]
struct OutHandles {
    messages: Counter,
    bytes: Counter,
}

impl Default for BrokerMetrics {
    fn default() -> Self {
        BrokerMetrics {
            messages_in: CounterFamily::default(),
            throughput_in: CounterFamily::default(),
            message_size: message_size_family(),
            messages_out: CounterFamily::default(),
            throughput_out: CounterFamily::default(),
            send_to_dlq: CounterFamily::default(),
            commit_messages: CounterFamily::default(),
            rollback_messages: CounterFamily::default(),
            pop_revived: CounterFamily::default(),
            finish_latency: finish_latency_family(),
            topic_create_time: create_time_family(),
            group_create_time: create_time_family(),
            timer_enqueue: CounterFamily::default(),
            timer_dequeue: CounterFamily::default(),
            in_handles: HandleCache::default(),
            out_handles: Default::default(),
        }
    }
}

impl BrokerMetrics {
    /// A stored send of `messages` messages, `bytes` bytes in all, to `topic` (not counted for
    /// retry and DLQ topics, as RocketMQ does). The size histogram gets the batch's mean size
    /// once, as RocketMQ records it.
    pub fn message_in(&self, topic: &str, message_type: &'static str, messages: u64, bytes: u64) {
        if messages == 0 || is_retry_or_dlq_topic(topic) {
            return;
        }
        let by_type = self
            .in_handles
            .get(topic, || (topic.to_string(), Arc::default()));
        let handles = by_type.get(message_type, || {
            let labels: Labels = vec![
                ("topic", topic.to_string()),
                ("message_type", message_type.to_string()),
                ("is_system", bool_label(is_system_topic(topic))),
            ];
            let size_labels: Labels = labels.iter().take(2).cloned().collect();
            let handles = InHandles {
                messages: self.messages_in.get_or_create_owned(&labels),
                bytes: self.throughput_in.get_or_create_owned(&labels),
                size: self.message_size.get_or_create_owned(&size_labels),
            };
            (message_type, handles)
        });
        handles.messages.inc_by(messages);
        handles.bytes.inc_by(bytes);
        handles.size.observe((bytes / messages) as f64);
    }

    /// `messages` (`bytes` in all) handed to `group` from `topic` by a pull, lite pull or POP;
    /// `is_retry` for the group's retry messages (a POP labels them with the topic popped).
    pub fn message_out(&self, topic: &str, group: &str, is_retry: bool, messages: u64, bytes: u64) {
        if messages == 0 {
            return;
        }
        let by_group = self.out_handles[usize::from(is_retry)]
            .get(topic, || (topic.to_string(), Arc::default()));
        let handles = by_group.get(group, || {
            let labels: Labels = vec![
                ("topic", topic.to_string()),
                ("consumer_group", group.to_string()),
                ("is_retry", bool_label(is_retry)),
                ("is_system", bool_label(is_system(topic, group))),
            ];
            let handles = OutHandles {
                messages: self.messages_out.get_or_create_owned(&labels),
                bytes: self.throughput_out.get_or_create_owned(&labels),
            };
            (group.to_string(), handles)
        });
        handles.messages.inc_by(messages);
        handles.bytes.inc_by(bytes);
    }

    /// A message of `topic` that `group` could not consume moved to the group's DLQ.
    pub fn sent_to_dlq(&self, topic: &str, group: &str) {
        let labels: Labels = vec![
            ("consumer_group", group.to_string()),
            ("topic", topic.to_string()),
            ("is_system", bool_label(is_system(topic, group))),
        ];
        self.send_to_dlq.get_or_create(&labels).inc();
    }

    /// A transactional message of `topic` committed, `age_ms` after it was born (recorded in
    /// whole seconds, as RocketMQ records `rocketmq_finish_message_latency`).
    pub fn committed(&self, topic: &str, age_ms: i64) {
        let labels = vec![("topic", topic.to_string())];
        self.commit_messages.get_or_create(&labels).inc();
        self.finish_latency
            .get_or_create(&labels)
            .observe((age_ms.max(0) / 1000) as f64);
    }

    /// An UPDATE_AND_CREATE_TOPIC answered (`ok`: SUCCESS) after `took`.
    pub fn topic_created(&self, ok: bool, system: bool, took: Duration) {
        observe_create(&self.topic_create_time, ok, system, took);
    }

    /// An UPDATE_AND_CREATE_SUBSCRIPTIONGROUP answered (`ok`: SUCCESS) after `took`.
    pub fn group_created(&self, ok: bool, system: bool, took: Duration) {
        observe_create(&self.group_create_time, ok, system, took);
    }

    /// A delayed or timed message of `topic` entered the timer.
    pub fn timer_enqueued(&self, topic: &str) {
        self.timer_enqueue
            .get_or_create(&vec![("topic", topic.to_string())])
            .inc();
    }

    /// A delayed or timed message of `topic` was delivered by the timer.
    pub fn timer_dequeued(&self, topic: &str) {
        self.timer_dequeue
            .get_or_create(&vec![("topic", topic.to_string())])
            .inc();
    }

    /// A transactional message of `topic` rolled back.
    pub fn rolled_back(&self, topic: &str) {
        self.rollback_messages
            .get_or_create(&vec![("topic", topic.to_string())])
            .inc();
    }

    /// A POP checkpoint of `group` on `topic` expired and its message was put back, into the
    /// retry topic or (`dlq`) the DLQ.
    pub fn pop_revived(&self, topic: &str, group: &str, dlq: bool) {
        let labels: Labels = vec![
            ("topic", topic.to_string()),
            ("consumer_group", group.to_string()),
            ("target", if dlq { "dlq" } else { "retry" }.to_string()),
        ];
        self.pop_revived.get_or_create(&labels).inc();
    }
}

/// RocketMQ's labels of a create's execution time: `invocation_status` and `is_system`.
fn observe_create(histograms: &HistogramFamily, ok: bool, system: bool, took: Duration) {
    let status = if ok { "success" } else { "failure" };
    histograms
        .get_or_create(&vec![
            ("invocation_status", status.to_string()),
            ("is_system", bool_label(system)),
        ])
        .observe(took.as_secs_f64() * 1000.0);
}

/// Writes the broker's metrics when scraped. Holds the broker weakly: a stopped broker's
/// collector writes nothing.
pub struct BrokerCollector {
    pub(crate) inner: Weak<BrokerInner>,
}

impl fmt::Debug for BrokerCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerCollector")
            .field("running", &(self.inner.strong_count() > 0))
            .finish()
    }
}

impl Collector for BrokerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let Some(inner) = self.inner.upgrade() else {
            return Ok(());
        };
        encode_events(&inner.metrics, &mut encoder)?;
        encode_broker(&inner, &mut encoder)?;
        encode_consumers(&inner, &mut encoder)?;
        encode_store(&inner, &mut encoder)?;
        encode_replication(&inner, &mut encoder)
    }
}

fn encode_events(m: &BrokerMetrics, e: &mut DescriptorEncoder) -> fmt::Result {
    family(
        e,
        "rocketmq_messages_in",
        "Total number of incoming messages.",
        &m.messages_in,
    )?;
    family(
        e,
        "rocketmq_throughput_in",
        "Total traffic of incoming messages, in bytes.",
        &m.throughput_in,
    )?;
    family(
        e,
        "rocketmq_message_size",
        "Incoming messages size, in bytes.",
        &m.message_size,
    )?;
    family(
        e,
        "rocketmq_messages_out",
        "Total number of outgoing messages.",
        &m.messages_out,
    )?;
    family(
        e,
        "rocketmq_throughput_out",
        "Total traffic of outgoing messages, in bytes.",
        &m.throughput_out,
    )?;
    family(
        e,
        "rocketmq_send_to_dlq_messages",
        "Consumer send to DLQ messages.",
        &m.send_to_dlq,
    )?;
    family(
        e,
        "rocketmq_commit_messages",
        "Total number of commit messages.",
        &m.commit_messages,
    )?;
    family(
        e,
        "rocketmq_rollback_messages",
        "Total number of rollback messages.",
        &m.rollback_messages,
    )?;
    family(
        e,
        "rocketmq_finish_message_latency",
        "Transaction finish latency: seconds from a transactional message's birth to its commit.",
        &m.finish_latency,
    )?;
    family(
        e,
        "rocketmq_topic_create_execution_time",
        "The distribution of create topic time, in milliseconds.",
        &m.topic_create_time,
    )?;
    family(
        e,
        "rocketmq_consumer_group_create_execution_time",
        "The distribution of create subscription time, in milliseconds.",
        &m.group_create_time,
    )?;
    family(
        e,
        "rocketmq_timer_enqueue",
        "Total number of timer enqueue.",
        &m.timer_enqueue,
    )?;
    family(
        e,
        "rocketmq_timer_dequeue",
        "Total number of timer dequeue.",
        &m.timer_dequeue,
    )?;
    family(
        e,
        "rocketraft_pop_revived_messages",
        "POP messages whose invisible time passed unacknowledged, put back into the retry topic or the DLQ.",
        &m.pop_revived,
    )
}

fn one<V>(v: V) -> [(Labels, V); 1] {
    [(Labels::new(), v)]
}

/// The broker as a whole: permission, topics, groups, connections, POP, timers, transactions.
fn encode_broker(inner: &BrokerInner, e: &mut DescriptorEncoder) -> fmt::Result {
    // This broker has no permission setting of its own (RocketMQ's `brokerPermission`): it
    // reads and writes; a slave's writes are refused by its role, as RocketMQ's are.
    gauge(
        e,
        "rocketmq_broker_permission",
        "Broker permission.",
        one(i64::from(perm::READ | perm::WRITE)),
    )?;
    gauge(
        e,
        "rocketmq_topic_number",
        "Active topic number.",
        one(inner.topics.all().len() as i64),
    )?;
    match inner.metadata.all_subscription_groups() {
        Ok(groups) => gauge(
            e,
            "rocketmq_consumer_group_number",
            "Active subscription group number.",
            one(groups.len() as i64),
        )?,
        Err(err) => tracing::debug!(error = %err, "subscription groups unreadable for metrics"),
    }
    let connections = inner.clients.connection_counts();
    gauge(
        e,
        "rocketmq_producer_connections",
        "Producer connections.",
        connections
            .producers
            .into_iter()
            .map(|((language, version), n)| {
                (
                    vec![
                        ("language", language),
                        ("version", version.to_string()),
                        ("protocol_type", "remoting".to_string()),
                    ],
                    n as i64,
                )
            }),
    )?;
    gauge(
        e,
        "rocketmq_consumer_connections",
        "Consumer connections.",
        connections
            .consumers
            .into_iter()
            .map(|((group, language, version, mode), n)| {
                let system = bool_label(is_system_group(&group));
                (
                    vec![
                        ("consumer_group", group),
                        ("language", language),
                        ("version", version.to_string()),
                        ("consume_mode", mode),
                        ("protocol_type", "remoting".to_string()),
                        ("is_system", system),
                    ],
                    n as i64,
                )
            }),
    )?;
    let by_topic = |counts: BTreeMap<Arc<str>, usize>| {
        counts
            .into_iter()
            .map(|(topic, n)| (vec![("topic", topic.to_string())], n as i64))
    };
    gauge(
        e,
        "rocketmq_half_messages",
        "Half messages of all topics (undecided transactional messages, by topic).",
        by_topic(inner.transactions.pending_by_topic()),
    )?;
    gauge(
        e,
        "rocketmq_timing_messages",
        "Current message number in timing (delayed and timed messages, by topic).",
        by_topic(inner.timers.pending_by_topic()),
    )?;
    let (overdue, overdue_ms) = inner.timers.overdue(now_ms());
    gauge(
        e,
        "rocketmq_timer_dequeue_lag",
        "Timer dequeue messages lag: timers past their time, not delivered yet.",
        one(overdue as i64),
    )?;
    gauge(
        e,
        "rocketmq_timer_dequeue_latency",
        "Timer dequeue latency: how long the earliest undelivered timer is overdue, in milliseconds.",
        one(overdue_ms),
    )?;
    gauge(
        e,
        "rocketraft_pop_revive_backlog",
        "POP messages past their invisible time, not yet put back into the retry topic.",
        one(inner.pop.revive_backlog(now_ms()) as i64),
    )
}

/// Per (group, topic): lag, lag latency, in flight and ready, as RocketMQ's
/// `ConsumerLagCalculator` reports them (`is_retry` for the group's retry topics).
#[derive(Default)]
struct Lag {
    lag: i64,
    earliest_unconsumed: Option<i64>,
    inflight: i64,
    ready: i64,
}

fn encode_consumers(inner: &BrokerInner, e: &mut DescriptorEncoder) -> fmt::Result {
    let offsets = match inner.metadata.all_offsets() {
        Ok(o) => o,
        Err(err) => {
            tracing::debug!(error = %err, "consumer offsets unreadable for metrics");
            return Ok(());
        }
    };
    // POP queues: the next offset to hand out and the messages in flight.
    let pop: BTreeMap<(String, String, i32), (i64, usize)> = inner
        .pop
        .queue_positions()
        .into_iter()
        .map(|(k, next, inflight)| (k, (next, inflight)))
        .collect();
    let mut rows: BTreeMap<(String, String), Lag> = BTreeMap::new();
    for (group, topic, queue_id, committed) in offsets {
        let max = inner.store.get_max_offset_in_queue(&topic, queue_id);
        let lag = (max - committed).max(0);
        let row = rows.entry((group.clone(), topic.clone())).or_default();
        row.lag += lag;
        if lag > 0 {
            if let Some(t) = inner
                .store
                .get_message_store_timestamp(&topic, queue_id, committed)
            {
                row.earliest_unconsumed = Some(row.earliest_unconsumed.map_or(t, |e| e.min(t)));
            }
        }
        match pop.get(&(group, topic, queue_id)) {
            Some((next, inflight)) => {
                row.inflight += *inflight as i64;
                row.ready += (max - (*next).max(committed)).max(0);
            }
            None => row.ready += lag,
        }
    }
    let now = now_ms();
    let labels = |group: &str, topic: &str| -> Labels {
        vec![
            ("consumer_group", group.to_string()),
            ("topic", topic.to_string()),
            (
                "is_retry",
                bool_label(topic.starts_with(RETRY_GROUP_TOPIC_PREFIX)),
            ),
            ("is_system", bool_label(is_system(topic, group))),
        ]
    };
    gauge(
        e,
        "rocketmq_consumer_lag_messages",
        "Consumer lag messages.",
        rows.iter().map(|((g, t), r)| (labels(g, t), r.lag)),
    )?;
    gauge(
        e,
        "rocketmq_consumer_lag_latency",
        "Consumer lag time, in milliseconds: the age of the oldest unconsumed message.",
        rows.iter().map(|((g, t), r)| {
            let latency = r.earliest_unconsumed.map_or(0, |t| (now - t).max(0));
            (labels(g, t), latency)
        }),
    )?;
    gauge(
        e,
        "rocketmq_consumer_inflight_messages",
        "Consumer inflight messages (POP messages handed out, not acknowledged).",
        rows.iter().map(|((g, t), r)| (labels(g, t), r.inflight)),
    )?;
    gauge(
        e,
        "rocketmq_consumer_ready_messages",
        "Consumer ready messages (stored, not yet handed out).",
        rows.iter().map(|((g, t), r)| (labels(g, t), r.ready)),
    )
}

fn store_labels() -> Labels {
    vec![
        ("storage_type", "local".to_string()),
        ("storage_medium", "disk".to_string()),
    ]
}

fn encode_store(inner: &BrokerInner, e: &mut DescriptorEncoder) -> fmt::Result {
    let store = &inner.store;
    let max = store.max_phy_offset();
    if let Ok(used) = crate::store::clean::disk_used_bytes(&store.config().store_root) {
        gauge(
            e,
            "rocketmq_storage_size",
            "Broker storage size: bytes used on the store's filesystem.",
            [(store_labels(), used as i64)],
        )?;
    }
    gauge(
        e,
        "rocketmq_storage_flush_behind_bytes",
        "Broker flush behind bytes.",
        [(store_labels(), (max - store.flushed_phy_offset()).max(0))],
    )?;
    gauge(
        e,
        "rocketmq_storage_dispatch_behind_bytes",
        "Broker dispatch behind bytes.",
        [(store_labels(), (max - store.dispatched_phy_offset()).max(0))],
    )?;
    if let Some(earliest) = store.earliest_message_time().filter(|t| *t > 0) {
        gauge(
            e,
            "rocketmq_storage_message_reserve_time",
            "Broker message reserve time, in milliseconds: the age of the oldest stored message.",
            [(store_labels(), (now_ms() - earliest).max(0))],
        )?;
    }
    let retention = store.retention_status();
    gauge(
        e,
        "rocketraft_disk_used_ratio",
        "Fraction of the store's filesystem in use (RocketMQ's commitLogDiskRatio).",
        one(retention.disk_used_percent / 100.0),
    )?;
    gauge(
        e,
        "rocketraft_commitlog_min_offset",
        "The CommitLog's first offset still stored.",
        one(store.min_phy_offset()),
    )?;
    gauge(
        e,
        "rocketraft_commitlog_max_offset",
        "The CommitLog's end offset.",
        one(max),
    )?;
    gauge(
        e,
        "rocketraft_commitlog_segments",
        "CommitLog segment files.",
        one(retention.segments as i64),
    )?;
    counter(
        e,
        "rocketraft_commitlog_segments_deleted",
        "CommitLog segment files deleted by retention.",
        [(Labels::new(), retention.segments_deleted)],
    )?;
    gauge(
        e,
        "rocketraft_confirm_offset",
        "The CommitLog offset consumers may read up to (what the in-sync replicas hold).",
        one(store.confirm_offset()),
    )
}

fn encode_replication(inner: &BrokerInner, e: &mut DescriptorEncoder) -> fmt::Result {
    let Some(ha) = &inner.ha else {
        // Not in controller mode: the configured role.
        return gauge(
            e,
            "rocketraft_broker_is_master",
            "1 on the master of the broker set, 0 otherwise.",
            one(i64::from(
                inner.config.broker_id == rocketraft_common::consts::MASTER_ID,
            )),
        );
    };
    let snap = ha.snapshot();
    gauge(
        e,
        "rocketraft_broker_is_master",
        "1 on the master of the broker set, 0 otherwise.",
        one(i64::from(snap.role == crate::ha::Role::Master)),
    )?;
    gauge(
        e,
        "rocketraft_master_epoch",
        "The master epoch this broker serves or follows.",
        one(i64::from(snap.master_epoch)),
    )?;
    gauge(
        e,
        "rocketraft_sync_state_set_size",
        "Replicas in the SyncStateSet (the master included).",
        one(snap.sync_state_set.len() as i64),
    )?;
    if snap.role != crate::ha::Role::Master {
        return Ok(());
    }
    let replica = |id: i64| vec![("replica", id.to_string())];
    gauge(
        e,
        "rocketraft_replica_ack_lag_bytes",
        "CommitLog bytes the master holds that the replica has not acknowledged.",
        snap.slaves.iter().map(|s| (replica(s.broker_id), s.lag)),
    )?;
    gauge(
        e,
        "rocketraft_replica_ack_lag_ms",
        "Milliseconds since the replica last acknowledged everything the master held (0 when caught up).",
        snap.slaves.iter().filter_map(|s| {
            let ms = if s.lag == 0 {
                0
            } else {
                ha.since(s.last_caught_up?).as_millis() as i64
            };
            Some((replica(s.broker_id), ms))
        }),
    )?;
    gauge(
        e,
        "rocketraft_replica_in_sync",
        "1 when the replica is in the SyncStateSet.",
        snap.slaves
            .iter()
            .map(|s| (replica(s.broker_id), i64::from(s.in_sync))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_rocketmq() {
        assert!(is_system_topic("TBW102"));
        assert!(is_system_topic("rmq_sys_wheel_timer"));
        assert!(!is_system_topic("Orders"));
        assert!(is_system_group("cid_rmq_sys_x"));
        assert!(!is_system_group("CID"));
        assert!(is_retry_or_dlq_topic("%DLQ%g"));
        let props = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        assert_eq!(message_type(&BTreeMap::new()), "normal");
        assert_eq!(
            message_type(&props(property::TRANSACTION_PREPARED, "true")),
            "transaction"
        );
        assert_eq!(message_type(&props(property::SHARDING_KEY, "g")), "fifo");
        assert_eq!(
            message_type(&props(property::DELAY_TIME_LEVEL, "3")),
            "delay"
        );
    }
}
