//! The proxy's Prometheus series and the metric settings it gives clients.
//!
//! - Every gRPC call is recorded in `rocketmq_rpc_latency` (the process's family, see
//!   [`crate::ProxyConfig::rpc_metrics`]) with RocketMQ's labels: `protocol_type="grpc"`,
//!   `request_code` the RPC's name (`SendMessage`, `ReceiveMessage`, `QueryRoute`,
//!   `Telemetry`, ...; `unknown` for a path the service does not have), `response_code` the
//!   `apache.rocketmq.v2.Code` number of the answer's status (`20000` OK, `40402`
//!   TOPIC_NOT_FOUND, ...) or, for a call without one (a Telemetry stream, a call refused with
//!   a gRPC error), the gRPC status code (`0` OK, `16` UNAUTHENTICATED, ...; `-1` when the call
//!   was dropped before it answered), `is_long_polling` (`true` for ReceiveMessage and
//!   PullMessage) and `result` (`success`; `process_request_failed` for a gRPC error;
//!   `cancelled` for a call dropped unanswered: the client went away or the request timeout
//!   struck). The time is until the answer (or the stream's start), in milliseconds.
//! - [`ProxyCollector`]: `rocketmq_proxy_up{proxy_mode}` (RocketMQ's), and
//!   `rocketraft_proxy_telemetry_streams`, `rocketraft_proxy_receives_in_flight`,
//!   `rocketraft_proxy_local_dispatches_total` (broker requests made in-process, local mode).
//! - [`MetricCollectorMode`]: RocketMQ's `metricCollectorMode` / `metricCollectorAddress`,
//!   what Telemetry's `Settings.metric` tells clients.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Instant;

use rocketraft_common::metrics::{
    counter, gauge, label, Collector, DescriptorEncoder, Labels, RpcMetrics,
};
use tonic::codegen::http;
use tonic::codegen::Service;
use tonic::server::NamedService;

use crate::pb;
use crate::session::Sessions;

/// The `Status.code` a unary or streamed answer carries, put in the response's extensions
/// for [`Recorded`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct AnswerCode(pub i32);

/// `response` with the code of the status it answers.
pub(crate) fn with_code<T>(mut response: tonic::Response<T>, code: i32) -> tonic::Response<T> {
    response.extensions_mut().insert(AnswerCode(code));
    response
}

/// The RPCs of `apache.rocketmq.v2.MessagingService`.
const RPCS: &[&str] = &[
    "QueryRoute",
    "Heartbeat",
    "SendMessage",
    "QueryAssignment",
    "ReceiveMessage",
    "AckMessage",
    "ForwardMessageToDeadLetterQueue",
    "PullMessage",
    "UpdateOffset",
    "GetOffset",
    "QueryOffset",
    "EndTransaction",
    "Telemetry",
    "NotifyClientTermination",
    "ChangeInvisibleDuration",
    "RecallMessage",
    "SyncLiteSubscription",
];

/// The RPC a request path names (`/apache.rocketmq.v2.MessagingService/SendMessage`), from
/// [`RPCS`] only, so a client cannot make up label values.
fn rpc_of(path: &str) -> &'static str {
    let method = path.rsplit('/').next().unwrap_or_default();
    RPCS.iter()
        .find(|name| **name == method)
        .copied()
        .unwrap_or("unknown")
}

/// One call being served; records itself as `cancelled` if dropped before [`Pending::answer`].
struct Pending {
    metrics: RpcMetrics,
    rpc: &'static str,
    started: Instant,
    done: bool,
}

impl Pending {
    fn record(&mut self, response_code: i64, result: &'static str) {
        self.done = true;
        let labels = [
            ("protocol_type", "grpc".to_string()),
            ("request_code", self.rpc.to_string()),
            ("response_code", response_code.to_string()),
            (
                "is_long_polling",
                matches!(self.rpc, "ReceiveMessage" | "PullMessage").to_string(),
            ),
            ("result", result.to_string()),
        ];
        self.metrics
            .observe(labels, self.started.elapsed().as_secs_f64() * 1000.0);
    }

    fn answer<B>(&mut self, response: &http::Response<B>) {
        if let Some(AnswerCode(code)) = response.extensions().get::<AnswerCode>() {
            return self.record(i64::from(*code), "success");
        }
        // A gRPC error is answered in the headers (a trailers-only response); a stream that
        // started has no status yet (OK so far).
        let grpc_status = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0);
        let result = if grpc_status == 0 {
            "success"
        } else {
            "process_request_failed"
        };
        self.record(grpc_status, result);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            self.record(-1, "cancelled");
        }
    }
}

/// The gRPC service `S`, each call recorded in `rocketmq_rpc_latency` when `metrics` is set.
#[derive(Clone)]
pub(crate) struct Recorded<S> {
    pub(crate) inner: S,
    pub(crate) metrics: Option<RpcMetrics>,
}

impl<S: NamedService> NamedService for Recorded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> Service<http::Request<B>> for Recorded<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<R>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let pending = self.metrics.clone().map(|metrics| Pending {
            metrics,
            rpc: rpc_of(request.uri().path()),
            started: Instant::now(),
            done: false,
        });
        let call = self.inner.call(request);
        Box::pin(async move {
            let mut pending = pending;
            let response = call.await;
            if let (Some(p), Ok(r)) = (pending.as_mut(), &response) {
                p.answer(r);
            }
            response
        })
    }
}

/// How the proxy runs (RocketMQ's `proxyMode`, the `proxy_mode` label of `rocketmq_proxy_up`):
/// standalone in front of the brokers, or in a broker's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyMode {
    /// `rocketraft proxy`: a process of its own.
    #[default]
    Cluster,
    /// In the same process as a broker (`rocketraft broker --proxy-listen`, `rocketraft dev`).
    Local,
}

impl ProxyMode {
    /// `cluster` or `local`, as RocketMQ writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyMode::Cluster => "cluster",
            ProxyMode::Local => "local",
        }
    }
}

/// RocketMQ's `metricCollectorMode`: whether Telemetry's `Settings.metric` asks clients to
/// export their own metrics (OTLP), and where. `off` by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetricCollectorMode {
    /// Clients export nothing (`metric { on: false }`).
    #[default]
    Off,
    /// Clients export to `metricCollectorAddress` (`host:port`).
    On,
    /// RocketMQ's proxy collects the clients' metrics itself; Rocketraft's proxy has no OTLP
    /// collector, so it refuses to start in this mode.
    Proxy,
}

impl FromStr for MetricCollectorMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "off" => Ok(MetricCollectorMode::Off),
            "on" => Ok(MetricCollectorMode::On),
            "proxy" => Ok(MetricCollectorMode::Proxy),
            other => Err(format!(
                "metricCollectorMode {other:?} is not one of off, on, proxy"
            )),
        }
    }
}

/// What Telemetry's `Settings.metric` carries for `mode` and `address` (RocketMQ's
/// `GrpcClientSettingsManager`), or why they cannot be served.
pub fn client_metric(mode: MetricCollectorMode, address: &str) -> anyhow::Result<pb::Metric> {
    match mode {
        MetricCollectorMode::Off => Ok(pb::Metric {
            on: false,
            endpoints: None,
        }),
        MetricCollectorMode::On => {
            let (host, port) = address.rsplit_once(':').ok_or_else(|| {
                anyhow::anyhow!(
                    "metricCollectorMode on needs metricCollectorAddress as host:port, not {address:?}"
                )
            })?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port: u16 = port.parse().map_err(|_| {
                anyhow::anyhow!("the port of metricCollectorAddress {address:?} is not a port")
            })?;
            if host.is_empty() || port == 0 {
                anyhow::bail!("metricCollectorAddress {address:?} needs a host and a port");
            }
            let scheme = match host.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(_)) => pb::AddressScheme::IPv4,
                Ok(std::net::IpAddr::V6(_)) => pb::AddressScheme::IPv6,
                Err(_) => pb::AddressScheme::DomainName,
            };
            Ok(pb::Metric {
                on: true,
                endpoints: Some(pb::Endpoints {
                    scheme: scheme as i32,
                    addresses: vec![pb::Address {
                        host: host.to_string(),
                        port: i32::from(port),
                    }],
                }),
            })
        }
        MetricCollectorMode::Proxy => anyhow::bail!(
            "metricCollectorMode proxy needs an OTLP collector in the proxy, which Rocketraft's proxy does not have: use on with metricCollectorAddress, or off"
        ),
    }
}

/// What the proxy's gauges read.
pub(crate) struct ProxyGauges {
    pub(crate) mode: ProxyMode,
    pub(crate) sessions: Arc<Sessions>,
    /// ReceiveMessage calls in progress (mostly long polls).
    pub(crate) receiving: Arc<AtomicI64>,
    /// The proxy's Remoting client, whose in-process dispatches are counted.
    pub(crate) remoting: rocketraft_remoting::RemotingClient,
}

impl fmt::Debug for ProxyGauges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyGauges")
            .field("mode", &self.mode)
            .field("telemetry_streams", &self.sessions.len())
            .field("receiving", &self.receiving)
            .finish()
    }
}

/// The proxy's series at scrape time (nothing once the proxy is shut down).
#[derive(Debug)]
pub struct ProxyCollector {
    pub(crate) gauges: Weak<ProxyGauges>,
}

impl Collector for ProxyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let Some(g) = self.gauges.upgrade() else {
            return Ok(());
        };
        gauge(
            &mut encoder,
            "rocketmq_proxy_up",
            "1 while the proxy serves.",
            [(label("proxy_mode", g.mode.as_str()), 1i64)],
        )?;
        gauge(
            &mut encoder,
            "rocketraft_proxy_telemetry_streams",
            "Telemetry streams of clients open on this proxy.",
            [(Labels::new(), g.sessions.len() as i64)],
        )?;
        gauge(
            &mut encoder,
            "rocketraft_proxy_receives_in_flight",
            "ReceiveMessage calls in progress (long polls included).",
            [(Labels::new(), g.receiving.load(Ordering::Relaxed))],
        )?;
        counter(
            &mut encoder,
            "rocketraft_proxy_local_dispatches",
            "Requests to brokers (and NameServers) of this process handed to their processors in-process instead of over TCP (local mode).",
            [(Labels::new(), g.remoting.local_dispatches())],
        )
    }
}

/// Counts a ReceiveMessage in progress while it lives.
pub(crate) struct InFlight(Arc<AtomicI64>);

impl InFlight {
    pub(crate) fn new(counter: &Arc<AtomicI64>) -> InFlight {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_names_come_from_the_service_only() {
        assert_eq!(
            rpc_of("/apache.rocketmq.v2.MessagingService/SendMessage"),
            "SendMessage"
        );
        assert_eq!(
            rpc_of("/apache.rocketmq.v2.MessagingService/Made-Up"),
            "unknown"
        );
        assert_eq!(rpc_of(""), "unknown");
    }

    #[test]
    fn collector_settings_follow_rocketmq() {
        assert_eq!(
            client_metric(MetricCollectorMode::Off, "").expect("off"),
            pb::Metric {
                on: false,
                endpoints: None
            }
        );
        let on = client_metric(MetricCollectorMode::On, "10.0.0.5:4317").expect("on");
        assert!(on.on);
        let endpoints = on.endpoints.expect("endpoints");
        assert_eq!(endpoints.scheme, pb::AddressScheme::IPv4 as i32);
        assert_eq!(
            (
                endpoints.addresses[0].host.as_str(),
                endpoints.addresses[0].port
            ),
            ("10.0.0.5", 4317)
        );
        let named = client_metric(MetricCollectorMode::On, "otel.example:4317").expect("on");
        assert_eq!(
            named.endpoints.expect("endpoints").scheme,
            pb::AddressScheme::DomainName as i32
        );
        let v6 = client_metric(MetricCollectorMode::On, "[::1]:4317").expect("on");
        assert_eq!(
            v6.endpoints.expect("endpoints").scheme,
            pb::AddressScheme::IPv6 as i32
        );
        for bad in ["", "host", "host:", "host:x", ":4317", "host:0"] {
            assert!(
                client_metric(MetricCollectorMode::On, bad).is_err(),
                "{bad:?}"
            );
        }
        assert!(client_metric(MetricCollectorMode::Proxy, "").is_err());
        assert_eq!("ON".parse(), Ok(MetricCollectorMode::On));
        assert!("sometimes".parse::<MetricCollectorMode>().is_err());
    }
}
