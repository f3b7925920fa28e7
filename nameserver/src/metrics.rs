//! The NameServer's Prometheus series (Rocketraft's own; RocketMQ's NameServer exports none but
//! `rocketmq_rpc_latency`, which the process encodes):
//!
//! - `rocketraft_namesrv_brokers`: broker processes registered and alive;
//! - `rocketraft_namesrv_broker_sets`: broker sets (`brokerName`s) with a registered broker;
//! - `rocketraft_namesrv_topics`: topics some broker set serves;
//! - `rocketraft_namesrv_brokers_expired_total`: brokers dropped because they did not
//!   re-register within their timeout;
//! - `rocketraft_namesrv_route_queries_total{result="found"|"not_found"}`:
//!   GET_ROUTEINFO_BY_TOPIC requests answered.
//!
//! With an embedded controller, its series follow (`rocketraft_controller::metrics`).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Weak;

use rocketraft_common::metrics::{counter, gauge, label, Collector, DescriptorEncoder, Labels};

use crate::processor::NamesrvState;

/// The events a NameServer counts.
#[derive(Debug, Default)]
pub struct NamesrvMetrics {
    brokers_expired: AtomicU64,
    routes_found: AtomicU64,
    routes_not_found: AtomicU64,
}

impl NamesrvMetrics {
    /// Brokers the scanner dropped because their registrations timed out.
    pub fn brokers_expired(&self, brokers: usize) {
        self.brokers_expired
            .fetch_add(brokers as u64, Ordering::Relaxed);
    }

    /// One GET_ROUTEINFO_BY_TOPIC answered, with a route or without.
    pub fn route_query(&self, found: bool) {
        let counter = if found {
            &self.routes_found
        } else {
            &self.routes_not_found
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The NameServer's series at scrape time (nothing once it is shut down and dropped).
pub struct NamesrvCollector {
    pub(crate) state: Weak<NamesrvState>,
    pub(crate) controller: Option<Box<dyn Collector>>,
}

impl fmt::Debug for NamesrvCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NamesrvCollector")
            .field("controller", &self.controller)
            .finish_non_exhaustive()
    }
}

impl Collector for NamesrvCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        if let Some(state) = self.state.upgrade() {
            let (brokers, sets, topics) = {
                let routes = state.routes.read();
                (
                    routes.live_brokers(),
                    routes.broker_sets(),
                    routes.topic_count(),
                )
            };
            let one = |v: usize| [(Labels::new(), v as i64)];
            gauge(
                &mut encoder,
                "rocketraft_namesrv_brokers",
                "Broker processes registered and alive.",
                one(brokers),
            )?;
            gauge(
                &mut encoder,
                "rocketraft_namesrv_broker_sets",
                "Broker sets (brokerName) with a registered broker.",
                one(sets),
            )?;
            gauge(
                &mut encoder,
                "rocketraft_namesrv_topics",
                "Topics some broker set serves.",
                one(topics),
            )?;
            let m = &state.metrics;
            counter(
                &mut encoder,
                "rocketraft_namesrv_brokers_expired",
                "Brokers dropped because they did not re-register within their timeout.",
                [(Labels::new(), m.brokers_expired.load(Ordering::Relaxed))],
            )?;
            counter(
                &mut encoder,
                "rocketraft_namesrv_route_queries",
                "GET_ROUTEINFO_BY_TOPIC requests answered, with a route (found) or without (not_found).",
                [
                    (
                        label("result", "found"),
                        m.routes_found.load(Ordering::Relaxed),
                    ),
                    (
                        label("result", "not_found"),
                        m.routes_not_found.load(Ordering::Relaxed),
                    ),
                ],
            )?;
        }
        match &self.controller {
            Some(c) => c.encode(encoder),
            None => Ok(()),
        }
    }
}
