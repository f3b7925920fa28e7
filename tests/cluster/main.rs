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
mod rolling_restart;

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

/// A cluster directory for `rocketraft cluster up`; `cluster down` when dropped (so a failing
/// test leaves nothing running), the directory removed after.
pub struct UpCluster(pub tempfile::TempDir);

impl Default for UpCluster {
    fn default() -> Self {
        UpCluster(tempfile::tempdir().expect("tempdir"))
    }
}

impl UpCluster {
    pub fn dir(&self) -> &str {
        self.0.path().to_str().expect("utf8")
    }

    /// `cluster status --json`: one row per process (empty when it cannot be read).
    pub fn status(&self) -> Vec<serde_json::Value> {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rocketraft"))
            .args(["cluster", "status", "--dir", self.dir(), "--json"])
            .output()
            .expect("status");
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    /// `namesrv_addr` of its cluster.json (one address, or `a;b`).
    pub fn namesrv(&self) -> String {
        let file: serde_json::Value = serde_json::from_slice(
            &std::fs::read(self.0.path().join("cluster.json")).expect("cluster.json"),
        )
        .expect("cluster.json parses");
        file["namesrv_addr"]
            .as_str()
            .expect("namesrv_addr")
            .to_string()
    }
}

impl Drop for UpCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(env!("CARGO_BIN_EXE_rocketraft"))
            .args(["cluster", "down", "--dir", self.dir()])
            .output();
    }
}
