//! Metrics in the Prometheus / OpenMetrics text format, on `prometheus-client`.
//!
//! Every role keeps its event counters and histograms in `prometheus-client` families (each
//! sample an atomic; a label set is looked up under a read lock, once per request, not per
//! message) and computes its gauges when scraped, in a [`Collector`] that reads the role's live
//! state. The root binary registers the roles of a process in one [`Registry`] under the labels
//! RocketMQ puts on every series (`cluster`, `node_type`, `node_id`) and serves it on
//! `/metrics`. Names follow RocketMQ 5 (`BrokerMetricsConstant`, `RemotingMetricsConstant`,
//! `DefaultStoreMetricsConstant`, ...) where it has one; ours start with `rocketraft_`.
//!
//! Counter names are given without `_total`: the OpenMetrics encoder appends it
//! (`rocketmq_messages_in` is exported as `rocketmq_messages_in_total`).

use std::borrow::Cow;
use std::fmt;

pub use prometheus_client;
pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::DescriptorEncoder;
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::histogram::Histogram;
pub use prometheus_client::registry::Registry;

use prometheus_client::encoding::{EncodeGaugeValue, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// A label set: RocketMQ's label names with their values.
pub type Labels = Vec<(&'static str, String)>;

/// A family of counters by label set.
pub type CounterFamily = Family<Labels, Counter>;

/// A family of histograms by label set, all with the same buckets.
pub type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// Where a server records `rocketmq_rpc_latency`: the process's one family (a process may run
/// several roles, and a name must appear once in a scrape) and the labels that tell this server's
/// samples apart (`node_type`, `node_id`), put before the request's own.
#[derive(Clone, Debug)]
pub struct RpcMetrics {
    pub family: std::sync::Arc<HistogramFamily>,
    pub labels: Labels,
    /// This server's Remoting samples by key.
    remoting: std::sync::Arc<HandleCache<RpcKey, Histogram>>,
}

/// The same family (not a copy) with the same labels.
impl PartialEq for RpcMetrics {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.family, &other.family) && self.labels == other.labels
    }
}

impl Eq for RpcMetrics {}

impl RpcMetrics {
    /// A family of its own (tests, or a process that runs one server).
    pub fn standalone(labels: Labels) -> RpcMetrics {
        RpcMetrics {
            family: std::sync::Arc::new(rpc_latency_family()),
            labels,
            remoting: Default::default(),
        }
    }

    /// The same family with other labels (another role of the process).
    pub fn with_labels(&self, labels: Labels) -> RpcMetrics {
        RpcMetrics {
            family: self.family.clone(),
            labels,
            remoting: Default::default(),
        }
    }

    /// Records one Remoting request (`protocol_type="remoting"`): its request and response
    /// codes (-1: none, a oneway request), whether its code long-polls, and `result`
    /// (RocketMQ's `success`, `oneway`, `cancelled`, `process_request_failed`). The label set is
    /// built once per distinct key.
    pub fn observe_remoting(
        &self,
        request_code: i32,
        response_code: i32,
        long_polling: bool,
        result: &'static str,
        millis: f64,
    ) {
        let key = (request_code, response_code, result);
        let histogram = self.remoting.get(&key, || {
            let mut labels = self.labels.clone();
            labels.extend([
                ("protocol_type", "remoting".to_string()),
                ("request_code", request_code.to_string()),
                ("response_code", response_code.to_string()),
                ("is_long_polling", bool_label(long_polling)),
                ("result", result.to_string()),
            ]);
            (key, self.family.get_or_create_owned(&labels))
        });
        histogram.observe(millis);
    }

    /// Records one call: `labels` are the call's own (request code, result, ...).
    pub fn observe(&self, labels: impl IntoIterator<Item = (&'static str, String)>, millis: f64) {
        let mut all = self.labels.clone();
        all.extend(labels);
        self.family.get_or_create(&all).observe(millis);
    }

    /// Writes the family as `rocketmq_rpc_latency` (once per process).
    pub fn encode(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        family(
            encoder,
            "rocketmq_rpc_latency",
            "Latency of the requests a server answered, in milliseconds.",
            &self.family,
        )
    }
}

/// A process registers its `rocketmq_rpc_latency` family once: as a collector of its own.
impl Collector for RpcMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        RpcMetrics::encode(self, &mut encoder)
    }
}

/// Handles of a family's members (counters and histograms share their value with the family
/// when cloned) by a cheap key, so that a hot path finds its member under a read lock without
/// building label strings; the labels are built once, when a key is first seen.
#[derive(Debug)]
pub struct HandleCache<K, M> {
    map: std::sync::RwLock<std::collections::HashMap<K, M>>,
}

impl<K, M> Default for HandleCache<K, M> {
    fn default() -> Self {
        HandleCache {
            map: std::sync::RwLock::new(std::collections::HashMap::new()),
        }
    }
}

impl<K: std::hash::Hash + Eq, M: Clone> HandleCache<K, M> {
    /// The handle of `key`, made (with its key) by `make` the first time.
    pub fn get<Q>(&self, key: &Q, make: impl FnOnce() -> (K, M)) -> M
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        if let Some(m) = self
            .map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
        {
            return m.clone();
        }
        let (k, m) = make();
        self.map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(k)
            .or_insert(m)
            .clone()
    }
}

/// The key of a Remoting request's latency sample: request code, response code (-1: none),
/// result.
type RpcKey = (i32, i32, &'static str);

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// RocketMQ's `rocketmq_rpc_latency` buckets (RemotingMetricsManager), in milliseconds.
pub const RPC_LATENCY_BUCKETS_MS: [f64; 7] = [1.0, 3.0, 5.0, 7.0, 10.0, 100.0, 1000.0];

/// RocketMQ's `rocketmq_message_size` buckets (BrokerMetricsManager), in bytes: 1 KiB, 4 KiB,
/// 512 KiB, 1 MiB, 2 MiB, 4 MiB.
pub const MESSAGE_SIZE_BUCKETS: [f64; 6] = [
    1024.0,
    4096.0,
    524_288.0,
    1_048_576.0,
    2_097_152.0,
    4_194_304.0,
];

/// Buckets for our own latencies in milliseconds (replication acks, Raft writes).
pub const LATENCY_BUCKETS_MS: [f64; 10] =
    [0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0];

/// RocketMQ's `rocketmq_finish_message_latency` buckets (BrokerMetricsManager), in seconds
/// from a transactional message's birth to its commit: 5 s, 1 min, 10 min, 1 h, 12 h, 24 h.
pub const FINISH_LATENCY_BUCKETS_S: [f64; 6] = [5.0, 60.0, 600.0, 3600.0, 43_200.0, 86_400.0];

/// RocketMQ's buckets of `rocketmq_topic_create_execution_time` and
/// `rocketmq_consumer_group_create_execution_time`, in milliseconds.
pub const CREATE_TIME_BUCKETS_MS: [f64; 5] = [10.0, 100.0, 1000.0, 3000.0, 5000.0];

fn finish_latency_histogram() -> Histogram {
    Histogram::new(FINISH_LATENCY_BUCKETS_S)
}

fn create_time_histogram() -> Histogram {
    Histogram::new(CREATE_TIME_BUCKETS_MS)
}

/// A family of `rocketmq_finish_message_latency` histograms.
pub fn finish_latency_family() -> HistogramFamily {
    Family::new_with_constructor(finish_latency_histogram)
}

/// A family of `rocketmq_*_create_execution_time` histograms.
pub fn create_time_family() -> HistogramFamily {
    Family::new_with_constructor(create_time_histogram)
}

fn rpc_latency_histogram() -> Histogram {
    Histogram::new(RPC_LATENCY_BUCKETS_MS)
}

fn message_size_histogram() -> Histogram {
    Histogram::new(MESSAGE_SIZE_BUCKETS)
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS_MS)
}

/// A family of `rocketmq_rpc_latency` histograms.
pub fn rpc_latency_family() -> HistogramFamily {
    Family::new_with_constructor(rpc_latency_histogram)
}

/// A family of `rocketmq_message_size` histograms.
pub fn message_size_family() -> HistogramFamily {
    Family::new_with_constructor(message_size_histogram)
}

/// A family of latency histograms with [`LATENCY_BUCKETS_MS`].
pub fn latency_family() -> HistogramFamily {
    Family::new_with_constructor(latency_histogram)
}

/// The labels RocketMQ puts on every series of a node.
pub fn node_labels(
    cluster: &str,
    node_type: &'static str,
    node_id: &str,
) -> impl Iterator<Item = (Cow<'static, str>, Cow<'static, str>)> {
    [
        (Cow::Borrowed("cluster"), Cow::Owned(cluster.to_string())),
        (Cow::Borrowed("node_type"), Cow::Borrowed(node_type)),
        (Cow::Borrowed("node_id"), Cow::Owned(node_id.to_string())),
    ]
    .into_iter()
}

/// The registry in the OpenMetrics text format (ends with `# EOF`).
pub fn encode(registry: &Registry) -> Result<String, fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

/// Writes a gauge computed at scrape time: one sample per row.
pub fn gauge<V: EncodeGaugeValue + fmt::Debug + Send + Sync + 'static>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, V)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes a counter whose value lives elsewhere (an atomic of the role): one sample per row.
/// `name` without `_total`.
pub fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes a family kept by the role (counters or histograms) under `name`.
pub fn family<M, C>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    family: &Family<Labels, M, C>,
) -> fmt::Result
where
    M: EncodeMetric + prometheus_client::metrics::TypedMetric,
    C: prometheus_client::metrics::family::MetricConstructor<M>,
{
    family.encode(encoder.encode_descriptor(name, help, None, M::TYPE)?)
}

/// One label.
pub fn label(name: &'static str, value: impl Into<String>) -> Labels {
    vec![(name, value.into())]
}

/// `"true"` / `"false"`, as RocketMQ writes boolean labels.
pub fn bool_label(v: bool) -> String {
    if v { "true" } else { "false" }.to_string()
}

/// Reading the text [`encode`] writes: for tests and tools that check a scrape.
pub mod text {
    use super::{encode, Collector, Registry};

    /// One collector's metrics as a scrape returns them (no node labels).
    pub fn scrape(collector: Box<dyn Collector>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(collector);
        encode(&registry).unwrap_or_default()
    }

    /// The value of the sample whose line starts with `series` (the name and, when it has any,
    /// its labels exactly as encoded).
    pub fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    /// The sum of the samples of `name` whose label set contains every one of `labels`
    /// (`key="value"` strings).
    pub fn sum(text: &str, name: &str, labels: &[&str]) -> f64 {
        text.lines()
            .filter_map(|line| {
                let rest = line.strip_prefix(name)?.strip_prefix('{')?;
                let end = rest.find("} ")?;
                let (set, value) = (&rest[..end], &rest[end + 2..]);
                labels
                    .iter()
                    .all(|l| set.contains(l))
                    .then(|| value.trim().parse::<f64>().ok())?
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(CounterFamily, HistogramFamily);

    impl Collector for Fixed {
        fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
            gauge(
                &mut encoder,
                "rocketmq_topic_number",
                "Topics.",
                [(Labels::new(), 3i64)],
            )?;
            counter(
                &mut encoder,
                "rocketraft_elections",
                "Elections.",
                [(label("result", "elected"), 2)],
            )?;
            family(
                &mut encoder,
                "rocketmq_messages_in",
                "Messages in.",
                &self.0,
            )?;
            family(
                &mut encoder,
                "rocketmq_rpc_latency",
                "RPC latency.",
                &self.1,
            )
        }
    }

    #[test]
    fn node_labels_prefix_every_series_and_counters_get_total() {
        let fixed = Fixed(CounterFamily::default(), rpc_latency_family());
        fixed
            .0
            .get_or_create(&vec![("topic", "T".to_string())])
            .inc_by(5);
        fixed
            .1
            .get_or_create(&vec![("request_code", "10".to_string())])
            .observe(4.0);
        let mut registry = Registry::default();
        registry
            .sub_registry_with_labels(node_labels("C", "broker", "b-0"))
            .register_collector(Box::new(fixed));
        let text = encode(&registry).expect("encodes");
        assert!(
            text.contains(
                "rocketmq_topic_number{cluster=\"C\",node_type=\"broker\",node_id=\"b-0\"} 3"
            ),
            "{text}"
        );
        assert!(text.contains("rocketraft_elections_total{"), "{text}");
        assert!(text.contains("result=\"elected\"} 2"), "{text}");
        assert!(text.contains("rocketmq_messages_in_total{"), "{text}");
        assert!(text.contains("topic=\"T\"} 5"), "{text}");
        assert!(text.contains("rocketmq_rpc_latency_bucket{"), "{text}");
        assert!(text.contains("le=\"5.0\",request_code=\"10\"} 1"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }
}
