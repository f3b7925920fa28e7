//! The metrics endpoint of a server process: one registry for every role the process runs
//! (`dev` runs NameServer, controller, broker and proxy), served on `/metrics` (RocketMQ's
//! `metricsPromExporterPort`, 5557 by default).
//!
//! Each role's series carry RocketMQ's `cluster`, `node_type` and `node_id` labels;
//! `rocketmq_rpc_latency` is one family for the whole process (a name may appear only once in a
//! scrape), its samples told apart by the same labels.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use rocketraft_common::metrics::{Collector, Labels, Registry, RpcMetrics};
use rocketraft_remoting::http::{metrics_router, MetricsServer};

/// RocketMQ's default `metricsPromExporterPort`.
pub const DEFAULT_PORT: u16 = 5557;

/// `--metrics-listen` / `--no-metrics`, shared by the server commands.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct MetricsFlags {
    /// Serve Prometheus metrics (OpenMetrics text on `/metrics`) on this address
    /// (RocketMQ's metricsPromExporterHost:metricsPromExporterPort). `dev` serves them on
    /// 127.0.0.1:5557 unless told otherwise; the other roles only when this is given.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// Do not serve metrics (`dev`).
    #[arg(long, conflicts_with = "metrics_listen")]
    pub no_metrics: bool,
}

/// The roles of one process, gathered before the endpoint starts.
pub struct ProcessMetrics {
    registry: Registry,
    rpc: RpcMetrics,
}

fn role_labels(cluster: &str, node_type: &'static str, node_id: &str) -> Labels {
    let mut labels = Vec::new();
    if !cluster.is_empty() {
        labels.push(("cluster", cluster.to_string()));
    }
    labels.push(("node_type", node_type.to_string()));
    labels.push(("node_id", node_id.to_string()));
    labels
}

impl Default for ProcessMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessMetrics {
    pub fn new() -> ProcessMetrics {
        let rpc = RpcMetrics::standalone(Vec::new());
        let mut registry = Registry::default();
        registry.register_collector(Box::new(rpc.clone()));
        ProcessMetrics { registry, rpc }
    }

    /// Where a role's servers record their requests.
    pub fn rpc_for(&self, cluster: &str, node_type: &'static str, node_id: &str) -> RpcMetrics {
        self.rpc
            .with_labels(role_labels(cluster, node_type, node_id))
    }

    /// Adds a role's own metrics under its labels.
    pub fn add(
        &mut self,
        cluster: &str,
        node_type: &'static str,
        node_id: &str,
        collector: Box<dyn Collector>,
    ) {
        let labels = role_labels(cluster, node_type, node_id)
            .into_iter()
            .map(|(k, v)| (Cow::Borrowed(k), Cow::Owned(v)));
        self.registry
            .sub_registry_with_labels(labels)
            .register_collector(collector);
    }

    /// Serves the registry on `listen`.
    pub async fn serve(self, listen: SocketAddr) -> anyhow::Result<MetricsServer> {
        MetricsServer::start(listen, metrics_router(Arc::new(self.registry)))
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot serve metrics on {listen}: {e} (pass another --metrics-listen, or --no-metrics)"
                )
            })
    }
}
