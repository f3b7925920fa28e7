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
mod namesrvs;
mod proxy_cluster_failover;
mod replication_failover;
mod rocketmq_conf;

#[path = "../support/mod.rs"]
mod support;

/// Runs `rocketraft cluster up` with `args` plus the controller and broker settings that make a
/// failover take seconds (2 s heartbeat timeouts, quick scans and syncs); asserts it succeeded.
fn quick_failover_up(mut args: Vec<&str>) -> std::process::Output {
    for c in [
        "heartbeat_timeout_ms = 2000",
        "scan_interval_ms = 200",
        "raft.heartbeat_interval_ms = 100",
    ] {
        args.extend(["--extra-controller-config", c]);
    }
    for c in [
        "controller_heartbeat_interval_ms = 300",
        "controller_heartbeat_timeout_ms = 2000",
        "sync_controller_metadata_period_ms = 500",
        "check_sync_state_set_period_ms = 200",
    ] {
        args.extend(["--extra-broker-config", c]);
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rocketraft"))
        .args(&args)
        .output()
        .expect("cluster up");
    assert!(
        out.status.success(),
        "cluster up: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
