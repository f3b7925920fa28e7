//! # rocketraft-nameserver
//!
//! The NameServer: brokers register with it (REGISTER_BROKER every 30 s) and clients ask it which
//! brokers serve a topic (GET_ROUTEINFO_BY_TOPIC). It keeps no disk state: every broker re-sends its
//! topics on each registration, and a broker that stops registering for `broker_expire_ms`
//! (120 s by default) is dropped from every route.
//!
//! - [`route::RouteTable`]: the tables, as pure operations with an explicit clock.
//! - [`NameServer::start`]: the Remoting server and the liveness scanner.
//!
//! A later issue starts the embedded controller from here (`enableControllerInNamesrv`).

pub mod config;
pub mod kv;
mod processor;
pub mod route;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use rocketraft_remoting::server::{RemotingServer, ServerHandle};
use tokio::task::JoinHandle;

pub use config::NamesrvConfig;
use processor::{NamesrvProcessor, NamesrvState, HANDLED_CODES};

/// A running NameServer.
pub struct NameServer {
    server: ServerHandle,
    scanner: JoinHandle<()>,
    state: Arc<NamesrvState>,
}

impl NameServer {
    /// Binds the Remoting port and starts serving and scanning for dead brokers.
    pub async fn start(config: NamesrvConfig) -> anyhow::Result<NameServer> {
        config.validate().map_err(anyhow::Error::msg)?;
        let state = Arc::new(NamesrvState {
            routes: RwLock::new(route::RouteTable::new()),
            kv: RwLock::new(kv::KvTable::default()),
            default_broker_expire_ms: config.broker_expire_ms,
        });
        let processor = Arc::new(NamesrvProcessor {
            state: state.clone(),
        });
        let mut builder = RemotingServer::builder();
        for code in HANDLED_CODES {
            builder = builder.register(*code, processor.clone());
        }
        let server = builder
            .bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?
            .spawn();
        tracing::info!(addr = %server.local_addr(), "NameServer listening");

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

    /// Stops accepting requests and the scanner.
    pub async fn shutdown(self) {
        self.scanner.abort();
        self.server.shutdown().await;
    }
}
