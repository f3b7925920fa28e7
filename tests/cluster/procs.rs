//! Processes the controller-mode tests start themselves (metadata_kill9, replication_failover):
//! a `rocketraft namesrv` with the controller embedded and the `rocketraft broker` processes of
//! one broker set, stopped when dropped; and the broker's HA status over Remoting.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rocketraft_remoting::api::MqClientApi;
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{ClientConfig, RemotingClient, RemotingCommand};

use crate::support::free_port;

/// The brokers' CommitLog segment size.
pub(crate) const BROKER_SEGMENT: u64 = 64 * 1024;

/// Sends `signal` to `child`.
fn kill(child: &Child, signal: i32) {
    // SAFETY: plain syscall on the pid of our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, signal) };
}

/// A `rocketraft namesrv` process with the controller embedded (a one-node Raft group with
/// quick failover timings) on free loopback ports, its config and log under `dir`; killed when
/// dropped.
pub(crate) struct NameSrv {
    pub(crate) child: Child,
    pub(crate) addr: String,
}

impl NameSrv {
    pub(crate) fn start(dir: &Path) -> NameSrv {
        let port = free_port();
        let raft = free_port();
        std::fs::create_dir_all(dir).expect("dir");
        let config = dir.join("namesrv.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\nenable_controller_in_namesrv = true\n\n[controller]\nheartbeat_timeout_ms = 2000\nscan_interval_ms = 200\n\n[controller.raft]\nnode_id = 1\nlisten = \"127.0.0.1:{raft}\"\ndata_dir = \"{}\"\nelection_timeout_min_ms = 300\nelection_timeout_max_ms = 600\nheartbeat_interval_ms = 100\n\n[controller.raft.initial_members]\n1 = \"127.0.0.1:{raft}\"\n",
                dir.join("controller").display()
            ),
        )
        .expect("config");
        let child = Command::new(env!("CARGO_BIN_EXE_rocketraft"))
            .args(["namesrv", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("namesrv.log")).expect("log"))
            .spawn()
            .expect("spawn namesrv");
        NameSrv {
            child,
            addr: format!("127.0.0.1:{port}"),
        }
    }
}

impl Drop for NameSrv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `rocketraft broker` process of broker set broker-a in controller mode (quick failover
/// timings, minInSyncReplicas 2, [`BROKER_SEGMENT`] segments) under `root/broker-{i}`, each run
/// logging to its own file there; killed with SIGKILL when dropped.
pub(crate) struct BrokerProc {
    pub(crate) dir: PathBuf,
    pub(crate) port: u16,
    pub(crate) config: PathBuf,
    pub(crate) child: Option<Child>,
    pub(crate) runs: usize,
}

impl BrokerProc {
    pub(crate) fn new(root: &Path, i: usize, namesrv: &str, extra: &str) -> BrokerProc {
        let dir = root.join(format!("broker-{i}"));
        std::fs::create_dir_all(&dir).expect("dir");
        let port = free_port();
        let config = dir.join("broker.toml");
        std::fs::write(
            &config,
            format!(
                "broker_name = \"broker-a\"\nlisten = \"127.0.0.1:{port}\"\nha_port = 0\nnamesrv_addr = \"{namesrv}\"\nenable_controller_mode = true\ncontroller_addr = \"{namesrv}\"\ncontroller_heartbeat_interval_ms = 300\ncontroller_heartbeat_timeout_ms = 2000\nsync_controller_metadata_period_ms = 500\ncheck_sync_state_set_period_ms = 200\nmin_in_sync_replicas = 2\n{}{extra}\n[store]\nstore_root = \"{}\"\ncommitlog_segment_size = {BROKER_SEGMENT}\npretouch = false\nmax_message_size = 16384\n",
                if extra.contains("slave_timeout_ms") { "" } else { "slave_timeout_ms = 2000\n" },
                dir.join("store").display()
            ),
        )
        .expect("config");
        BrokerProc {
            dir,
            port,
            config,
            child: None,
            runs: 0,
        }
    }

    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn start(&mut self, failpoint: Option<&str>) {
        self.runs += 1;
        let log =
            std::fs::File::create(self.dir.join(format!("run-{}.log", self.runs))).expect("log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rocketraft"));
        cmd.args(["broker", "--config"])
            .arg(&self.config)
            .args(["--threads", "2"])
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(f) = failpoint {
            cmd.env("ROCKETRAFT_FAILPOINT", f);
        }
        self.child = Some(cmd.spawn().expect("spawn broker"));
    }

    pub(crate) fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&c, libc::SIGKILL);
            let _ = c.wait();
        }
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&c, libc::SIGTERM);
            let _ = c.wait();
        }
    }

    pub(crate) fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            kill(c, sig);
        }
    }

    /// Waits for the process to exit on its own (a failpoint); true if it died abnormally.
    pub(crate) fn wait_crash(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return !status.success();
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub(crate) fn commitlog(&self) -> PathBuf {
        self.dir.join("store").join("commitlog")
    }
}

impl Drop for BrokerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub(crate) fn api() -> MqClientApi {
    MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(5),
    )
}

/// GET_BROKER_HA_STATUS of one broker.
pub(crate) async fn status(addr: &str) -> Option<serde_json::Value> {
    let client = RemotingClient::new(ClientConfig::default());
    let r = client
        .invoke(
            addr,
            RemotingCommand::request(
                rocketraft_remoting::codes::request_code::GET_BROKER_HA_STATUS,
            ),
            Duration::from_secs(2),
        )
        .await
        .ok()?;
    (r.code == response_code::SUCCESS)
        .then(|| serde_json::from_slice(&r.body).ok())
        .flatten()
}

/// The index of the broker that is master with a valid lease.
pub(crate) async fn find_master(brokers: &[BrokerProc], limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        for (i, b) in brokers.iter().enumerate() {
            if b.child.is_none() {
                continue;
            }
            if let Some(s) = status(&b.addr()).await {
                if s["role"] == "MASTER" && s["leaseValid"] == true {
                    return i;
                }
            }
        }
        assert!(Instant::now() < deadline, "no master within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
