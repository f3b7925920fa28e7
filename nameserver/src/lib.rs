//! # rocketraft-nameserver
//!
//! The NameServer: brokers register with it (REGISTER_BROKER every 30 s) and clients ask it which
//! brokers serve a topic (GET_ROUTEINFO_BY_TOPIC). It keeps no disk state: every broker re-sends its
//! topics on each registration, and a broker that stops registering for `broker_expire_ms`
//! (120 s by default) is dropped from every route.
//!
//! - [`route::RouteTable`]: the tables, as pure operations with an explicit clock.
//! - [`NameServer::start`]: the Remoting server and the liveness scanner.
//! - [`metrics`]: its Prometheus series ([`NameServer::metrics_collector`]).
//!
//! - With `enable_controller_in_namesrv`, a [`rocketraft_controller::Controller`] runs in the same
//!   process and answers the controller request codes on the NameServer's port.

pub mod auth;
pub mod config;
pub mod kv;
pub mod metrics;
mod processor;
pub mod properties;
pub mod route;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use rocketraft_controller::Controller;
use rocketraft_controller::{CONTROLLER_CODES, CONTROLLER_PROTECTED_CODES};
use rocketraft_remoting::request_code;
use rocketraft_remoting::server::{RemotingServer, ServerHandle};
use tokio::task::JoinHandle;

pub use config::NamesrvConfig;
use processor::{NamesrvProcessor, NamesrvState, HANDLED_CODES};

/// A running NameServer.
pub struct NameServer {
    server: ServerHandle,
    controller: Option<Arc<Controller>>,
    scanner: JoinHandle<()>,
    state: Arc<NamesrvState>,
}

impl NameServer {
    /// Binds the Remoting port and starts serving and scanning for dead brokers.
    pub async fn start(config: NamesrvConfig) -> anyhow::Result<NameServer> {
        config.validate()?;
        let state = Arc::new(NamesrvState {
            routes: RwLock::new(route::RouteTable::new()),
            kv: RwLock::new(kv::KvTable::default()),
            default_broker_expire_ms: config.broker_expire_ms,
            metrics: metrics::NamesrvMetrics::default(),
        });
        let processor = Arc::new(NamesrvProcessor {
            state: state.clone(),
        });
        let mut builder = RemotingServer::builder();
        for code in HANDLED_CODES {
            builder = builder.register(*code, processor.clone());
        }
        let mut protected = vec![
            request_code::REGISTER_BROKER,
            request_code::UNREGISTER_BROKER,
        ];
        let controller = if config.enable_controller_in_namesrv {
            let mut controller_config = config.controller.clone();
            if controller_config.cluster_secret.is_none() {
                controller_config.cluster_secret = config.cluster_secret.clone();
            }
            if !controller_config.tls_client.enable {
                controller_config.tls_client = config.tls_client.clone();
            }
            protected.extend_from_slice(CONTROLLER_PROTECTED_CODES);
            // The controller's Remoting address is this NameServer's: checked against the
            // other controllers like a standalone one's (the Raft one is, in start).
            rocketraft_controller::check_advertised(
                controller_config
                    .remoting_advertised(config.listen)
                    .into_iter()
                    .collect(),
                controller_config.peers(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("embedded controller: {e}"))?;
            let controller = Controller::start(controller_config)
                .await
                .map_err(|e| anyhow::anyhow!("embedded controller: {e}"))?;
            let controller_processor = controller.processor();
            for code in CONTROLLER_CODES {
                builder = builder.register(*code, controller_processor.clone());
            }
            Some(controller)
        } else {
            None
        };
        let metadata = auth::NamesrvAuthMetadata::new(&config, state.clone());
        let builder = builder.auth(config.auth_settings()?, Arc::new(auth::Shared(metadata)));
        let builder = builder
            .max_connections(config.server_limits.max_connections)
            .limits(config.server_limits.limits())
            .tls(config.tls.load()?)
            .cluster_trust(config.cluster_secret.clone(), &protected)
            .rpc_metrics(config.rpc_metrics.clone());
        let server = match builder.bind(config.listen).await {
            Ok(server) => server.spawn(),
            Err(e) => {
                if let Some(c) = &controller {
                    c.shutdown().await;
                }
                anyhow::bail!("cannot listen on {}: {e}", config.listen);
            }
        };
        if let Some(c) = &controller {
            // What brokers are told: this node's remoting_peers entry, else the bound address.
            let bound = server.local_addr();
            c.set_remoting_addr(match config.controller.remoting_advertised(bound) {
                Some(advertised) => advertised.addr.to_string(),
                None => config
                    .controller
                    .remoting_peers
                    .get(&config.controller.raft.node_id)
                    .cloned()
                    .unwrap_or_else(|| rocketraft_remoting::api::advertised(bound).to_string()),
            });
        }
        tracing::info!(addr = %server.local_addr(), controller = controller.is_some(), "NameServer listening");

        let scan_state = state.clone();
        let interval = Duration::from_millis(config.scan_interval_ms);
        let scanner = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let expired = scan_state
                    .routes
                    .write()
                    .expire(rocketraft_common::time::now_ms());
                scan_state.metrics.brokers_expired(expired.len());
                for (key, live) in expired {
                    tracing::warn!(
                        broker = %live.broker_name,
                        id = live.broker_id,
                        addr = %key.addr,
                        timeout_ms = live.timeout_ms,
                        "broker expired: no registration within its timeout"
                    );
                }
            }
        });
        Ok(NameServer {
            server,
            controller,
            scanner,
            state,
        })
    }

    /// The bound address (useful when listening on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// How many broker processes are registered and alive.
    pub fn live_brokers(&self) -> usize {
        self.state.routes.read().live_brokers()
    }

    /// This NameServer's series for `/metrics` (see [`metrics`]), and the embedded
    /// controller's when it runs one, computed when scraped. Without `cluster` / `node_type` /
    /// `node_id` labels and without `rocketmq_rpc_latency`: the process adds both.
    pub fn metrics_collector(&self) -> Box<dyn rocketraft_common::metrics::Collector> {
        Box::new(metrics::NamesrvCollector {
            state: Arc::downgrade(&self.state),
            controller: self.controller.as_ref().map(|c| c.metrics_collector()),
        })
    }

    /// The embedded controller, if `enable_controller_in_namesrv` is set.
    pub fn controller(&self) -> Option<&Arc<Controller>> {
        self.controller.as_ref()
    }

    /// Stops accepting requests, the scanner and the embedded controller.
    pub async fn shutdown(self) {
        self.scanner.abort();
        self.server.shutdown().await;
        if let Some(c) = self.controller {
            c.shutdown().await;
        }
    }
}
