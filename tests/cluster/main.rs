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
mod procs;
mod proxy_cluster_failover;
mod replication_failover;
mod rocketmq_conf;
mod rolling_restart;

#[path = "../support/mod.rs"]
mod support;

/// The arguments of `rocketraft --threads THREADS cluster up --dir DIR` on free ports, with
/// 4 MiB segments and 60 s to start, followed by `extra`.
fn up_args<'a>(threads: &'a str, dir: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--threads",
        threads,
        "cluster",
        "up",
        "--dir",
        dir,
        "--ports",
        "auto",
        "--segment-size",
        "4194304",
        "--timeout-secs",
        "60",
    ];
    args.extend_from_slice(extra);
    args
}

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

/// Creates `topic` with `queues` queues (plus `extra` arguments) on every master through
/// `namesrv`, retrying for 30 s while the SyncStateSets are still forming; `admin topic
/// create`'s output.
async fn create_topic(namesrv: &str, topic: &str, queues: &str, extra: &[&str]) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut args = vec!["topic", "create", topic, "--queues", queues];
    args.extend_from_slice(extra);
    loop {
        let out = support::admin_output(namesrv, &args);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "admin topic create {topic} through {namesrv}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

/// One message through the proxy (a FIFO message of message group `group` when it names one),
/// within 8 s; true when acknowledged.
async fn grpc_send(
    client: &mut rocketraft_proxy::pb::messaging_service_client::MessagingServiceClient<
        tonic::transport::Channel,
    >,
    topic: &str,
    message_id: &str,
    body: &str,
    group: Option<&str>,
) -> bool {
    use rocketraft_proxy::pb;
    let mut req = tonic::Request::new(pb::SendMessageRequest {
        messages: vec![pb::Message {
            topic: support::resource(topic),
            user_properties: std::collections::HashMap::new(),
            system_properties: Some(pb::SystemProperties {
                message_id: message_id.to_string(),
                message_type: if group.is_some() {
                    pb::MessageType::Fifo as i32
                } else {
                    pb::MessageType::Normal as i32
                },
                message_group: group.map(str::to_string),
                ..pb::SystemProperties::default()
            }),
            body: body.as_bytes().to_vec(),
        }],
    });
    req.set_timeout(std::time::Duration::from_secs(8));
    match client.send_message(req).await {
        Ok(r) => r
            .into_inner()
            .status
            .is_some_and(|s| s.code == pb::Code::Ok as i32),
        Err(_) => false,
    }
}

/// The master address of broker set `set` in `route`.
fn master(route: &rocketraft_common::protocol::TopicRouteData, set: &str) -> Option<String> {
    route
        .broker_datas
        .iter()
        .find(|b| b.broker_name == set)
        .and_then(|b| b.master_addr().map(str::to_string))
}

/// Every message of `topic` on every set's master, pulled over Remoting as consumer `group`:
/// body -> (set, queue). A route, master or pull that cannot be read leaves its messages out.
async fn pull_all(
    api: &rocketraft_remoting::api::MqClientApi,
    namesrv: &str,
    topic: &str,
    group: &str,
) -> std::collections::BTreeMap<String, (String, i32)> {
    use rocketraft_remoting::api::{PullRequest, PullStatus};
    let mut found = std::collections::BTreeMap::new();
    let Ok(route) = api.topic_route(namesrv, topic).await else {
        return found;
    };
    for q in &route.queue_datas {
        let Some(addr) = master(&route, &q.broker_name) else {
            continue;
        };
        for queue_id in 0..q.read_queue_nums {
            let mut offset = 0;
            loop {
                let pull = PullRequest {
                    consumer_group: group.into(),
                    topic: topic.into(),
                    queue_id,
                    queue_offset: offset,
                    max_msg_nums: 32,
                    sys_flag: rocketraft_common::consts::pull_sys_flag::SUBSCRIPTION,
                    commit_offset: -1,
                    suspend_timeout_ms: 0,
                    subscription: Some("*".into()),
                };
                let Ok(r) = api.pull(&addr, &pull).await else {
                    break;
                };
                if r.status != PullStatus::Found || r.messages.is_empty() {
                    break;
                }
                for m in r.messages {
                    found.insert(
                        String::from_utf8_lossy(&m.body).to_string(),
                        (q.broker_name.clone(), queue_id),
                    );
                }
                offset = r.next_begin_offset;
            }
        }
    }
    found
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

    /// `rocketraft --threads 1 cluster up` in this directory on free ports, 4 MiB segments, 60 s
    /// to start, plus `extra`, with [`quick_failover_up`]'s settings; asserts it succeeded.
    pub fn up_quick(&self, extra: &[&str]) -> std::process::Output {
        quick_failover_up(up_args("1", self.dir(), extra))
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
