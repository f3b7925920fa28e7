//! The HTTP endpoint of a process's metrics: `GET /metrics` in the OpenMetrics text format (what
//! Prometheus scrapes), on RocketMQ's `metricsPromExporterHost:metricsPromExporterPort`.
//! Anything else is a 404 or 405; hyper answers oversized or malformed requests itself (431,
//! 400) and keeps serving.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use rocketraft_common::metrics::{self, Registry};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The routes of the metrics endpoint (`/metrics`, and `/` naming it), to serve alone
/// ([`MetricsServer::start`]) or merged into a larger router.
pub fn metrics_router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move { scrape(&registry) }
            }),
        )
        .route(
            "/",
            get(|| async { "Rocketraft metrics: GET /metrics (OpenMetrics text)\n" }),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found: try GET /metrics\n") })
        .layer(axum::middleware::from_fn(limit_headers))
}

/// The most header bytes a request may carry (hyper itself buffers up to about 400 KiB).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The bytes a request's headers take on the wire (name, value, `: ` and CRLF each).
pub fn header_bytes(headers: &axum::http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// Answers 431 to a request whose headers exceed [`MAX_HEADER_BYTES`].
async fn limit_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if header_bytes(request.headers()) > MAX_HEADER_BYTES {
        return (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("request headers over {MAX_HEADER_BYTES} bytes\n"),
        )
            .into_response();
    }
    next.run(request).await
}

fn scrape(registry: &Registry) -> axum::response::Response {
    match metrics::encode(registry) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "encoding the metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding the metrics failed\n",
            )
                .into_response()
        }
    }
}

/// A running HTTP server; stops when [`MetricsServer::shutdown`] is called or it is dropped.
pub struct MetricsServer {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Serves `router` (for example [`metrics_router`]) on `listen`.
    pub async fn start(listen: SocketAddr, router: Router) -> std::io::Result<MetricsServer> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "the HTTP server stopped");
            }
        });
        tracing::info!(addr = %local_addr, "HTTP endpoint listening");
        Ok(MetricsServer {
            local_addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and waits (at most 3 s) for open requests.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let aborter = task.abort_handle();
            if tokio::time::timeout(std::time::Duration::from_secs(3), task)
                .await
                .is_err()
            {
                aborter.abort();
            }
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
