//! Controller mode with real processes on loopback: `rocketraft controller` quorums, the
//! controller embedded in `rocketraft dev` and `rocketraft namesrv`, `rocketraft cluster`, and
//! broker sets and a proxy that fail over after kill -9.
//!
//! Each test takes its module's turn first ([`support::file_turn`]): the modules' tests run one
//! module after another, as they did when each file was its own binary, since they start many
//! processes and measure failover times.

mod cluster_cli;
mod controller_quorum;
mod embedded_controller;
mod metadata_kill9;
mod metrics_prometheus;
mod multi_set;
mod proxy_cluster_failover;
mod replication_failover;
mod rocketmq_conf;

#[path = "../support/mod.rs"]
mod support;
