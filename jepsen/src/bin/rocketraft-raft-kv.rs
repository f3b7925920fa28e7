//! `rocketraft-raft-kv`: one member of a replicated key-value store on the Raft library
//! ([`rocketraft_raft::kv`]), served over Rocketraft's Remoting protocol with private request
//! codes (9001 read, 9002 write, 9003 compare-and-set, 9004 Raft status; JSON bodies, see
//! [`rocketraft_raft::kv::wire`]).
//!
//! A test fixture of the harness, not part of the product: `rocketraft-jepsen run --workload
//! raft-kv` starts three of these (found beside the harness's own executable) in network
//! namespaces and checks that what clients saw is linearizable. Every node answers every
//! request: writes and CAS are forwarded to the leader and answered once committed and
//! applied; reads are linearizable (ReadIndex through the leader). `--unsafe-stale-reads`
//! answers reads from this node's memory instead: a deliberately broken build for the
//! harness's self-test, never for real use.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use rocketraft_raft::kv::wire;
use rocketraft_raft::kv::{validate_key, KvCommand, KvQuery, KvStateMachine};
use rocketraft_raft::{RaftClientError, RaftConfig, RaftNode, ReadMode};
use rocketraft_remoting::{
    BoxFuture, RemotingCommand, RemotingError, RemotingServer, RequestContext, RequestProcessor,
    ServerHandle,
};
use serde::de::DeserializeOwned;

/// `rocketraft-raft-kv` flags.
#[derive(Parser)]
#[command(
    name = "rocketraft-raft-kv",
    version,
    about = "One member of the raft-kv store the Jepsen harness tests (a test fixture)"
)]
struct RaftKvArgs {
    /// Log filter (tracing's EnvFilter syntax); RUST_LOG overrides it.
    #[arg(long, default_value = "info")]
    log: String,
    /// Tokio worker threads (default: the number of cores).
    #[arg(long)]
    threads: Option<usize>,
    /// This member's Raft node id.
    #[arg(long)]
    node_id: u64,
    /// Remoting listen address for clients.
    #[arg(long, default_value = "127.0.0.1:9890")]
    listen: SocketAddr,
    /// Raft (gRPC) listen address between members.
    #[arg(long, default_value = "127.0.0.1:9891")]
    raft_listen: SocketAddr,
    /// Data directory (Raft log and snapshots).
    #[arg(long)]
    data_dir: PathBuf,
    /// Initial voters of a new group: `1=127.0.0.1:9891,2=127.0.0.1:9893,3=127.0.0.1:9895`.
    #[arg(long)]
    peers: String,
    /// Minimum election timeout in milliseconds (the maximum is twice it).
    #[arg(long, default_value_t = 1500)]
    election_timeout_ms: u64,
    /// Leader heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 300)]
    heartbeat_ms: u64,
    /// How long a client request may wait for a committed answer (forwarding and retries
    /// included) before it is answered "outcome unknown".
    #[arg(long, default_value_t = 4000)]
    client_timeout_ms: u64,
    /// Build a snapshot after this many log entries.
    #[arg(long, default_value_t = 1000)]
    snapshot_logs: u64,
    /// DELIBERATELY BROKEN: answer reads from this node's memory (possibly stale, e.g. on a
    /// partitioned old leader) instead of linearizably. Only for testing the test harness.
    #[arg(long)]
    unsafe_stale_reads: bool,
}

impl RaftKvArgs {
    fn raft_config(&self) -> anyhow::Result<RaftConfig> {
        let members = rocketraft_raft::parse_members(&self.peers, "--peers")?;
        if !members.contains_key(&self.node_id) {
            anyhow::bail!(
                "node id {} is not among the --peers {:?}",
                self.node_id,
                members.keys().collect::<Vec<_>>()
            );
        }
        Ok(RaftConfig {
            node_id: self.node_id,
            listen: self.raft_listen,
            advertise: members.get(&self.node_id).cloned(),
            data_dir: self.data_dir.clone(),
            initial_members: members,
            cluster_name: "rocketraft-raft-kv".to_string(),
            election_timeout_min_ms: self.election_timeout_ms,
            election_timeout_max_ms: self.election_timeout_ms.saturating_mul(2),
            heartbeat_interval_ms: self.heartbeat_ms,
            rpc_timeout_ms: 2000,
            client_timeout_ms: self.client_timeout_ms,
            snapshot_logs: self.snapshot_logs,
            keep_logs: self.snapshot_logs,
            cluster_secret: None,
            max_peer_connections: rocketraft_raft::DEFAULT_MAX_PEER_CONNECTIONS,
        })
    }
}

fn main() {
    let args = RaftKvArgs::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&args.log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads.max(1));
    }
    let result = runtime
        .build()
        .context("cannot start the async runtime")
        .and_then(|rt| rt.block_on(run(args)));
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Runs the server until Ctrl-C / SIGTERM.
async fn run(args: RaftKvArgs) -> anyhow::Result<()> {
    let config = args.raft_config()?;
    let node = RaftNode::start(config, KvStateMachine::new())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let node = Arc::new(node);
    let read_mode = if args.unsafe_stale_reads {
        tracing::error!(
            "--unsafe-stale-reads: reads are answered from this node's memory and may be stale (a deliberately broken build)"
        );
        ReadMode::Stale
    } else {
        ReadMode::Linearizable
    };
    let server = serve(node.clone(), read_mode, args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!(
        "rocketraft raft-kv {} is ready: Remoting {}, Raft {}{}",
        node.id(),
        server.local_addr(),
        node.local_addr(),
        if args.unsafe_stale_reads {
            " (UNSAFE stale reads)"
        } else {
            ""
        }
    );
    wait_for_shutdown().await;
    server.shutdown().await;
    node.shutdown().await;
    Ok(())
}

/// The Remoting server answering the [`wire`] codes for `node`.
async fn serve(
    node: Arc<RaftNode<KvStateMachine>>,
    read_mode: ReadMode,
    listen: impl tokio::net::ToSocketAddrs,
) -> Result<ServerHandle, RemotingError> {
    let processor: Arc<dyn RequestProcessor> = Arc::new(KvProcessor { node, read_mode });
    let mut builder = RemotingServer::builder();
    for code in wire::CODES {
        builder = builder.register(code, processor.clone());
    }
    Ok(builder.bind(listen).await?.spawn())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn wait_for_shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
}

/// Answers the [`wire`] codes.
struct KvProcessor {
    node: Arc<RaftNode<KvStateMachine>>,
    read_mode: ReadMode,
}

/// A response code and remark for a failed request.
type Failure = (i32, String);

fn body<T: DeserializeOwned>(request: &RemotingCommand) -> Result<T, Failure> {
    serde_json::from_slice(&request.body)
        .map_err(|e| (wire::REFUSED, format!("undecodable request body: {e}")))
}

fn encoded<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, Failure> {
    serde_json::to_vec(value).map_err(|e| (wire::OUTCOME_UNKNOWN, format!("unencodable: {e}")))
}

/// How a Raft error is reported: anything that may have been proposed is "outcome unknown".
fn raft_failure(e: RaftClientError) -> Failure {
    let code = match e {
        RaftClientError::Rejected(_) => wire::REFUSED,
        _ => wire::OUTCOME_UNKNOWN,
    };
    (code, e.to_string())
}

impl KvProcessor {
    async fn handle(&self, request: &RemotingCommand) -> Result<Vec<u8>, Failure> {
        match request.code {
            wire::READ => {
                let req: wire::ReadRequest = body(request)?;
                validate_key(&req.key).map_err(|e| (wire::REFUSED, e.to_string()))?;
                let value = self
                    .node
                    .read(&KvQuery::Read { key: req.key }, self.read_mode)
                    .await
                    .map_err(raft_failure)?;
                encoded(&wire::ReadResponse { value })
            }
            wire::WRITE => {
                let req: wire::WriteRequest = body(request)?;
                let command = KvCommand::Write {
                    key: req.key,
                    value: req.value,
                };
                command
                    .validate()
                    .map_err(|e| (wire::REFUSED, e.to_string()))?;
                self.node.write(&command).await.map_err(raft_failure)?;
                Ok(Vec::new())
            }
            wire::CAS => {
                let req: wire::CasRequest = body(request)?;
                let command = KvCommand::Cas {
                    key: req.key,
                    expected: req.expected,
                    new: req.new,
                };
                command
                    .validate()
                    .map_err(|e| (wire::REFUSED, e.to_string()))?;
                let response = self.node.write(&command).await.map_err(raft_failure)?;
                encoded(&wire::CasResponse {
                    applied: response.applied,
                    current: response.previous,
                })
            }
            wire::STATUS => encoded(&self.node.status()),
            other => Err((wire::REFUSED, format!("unknown request code {other}"))),
        }
    }
}

impl RequestProcessor for KvProcessor {
    fn process(
        &self,
        _ctx: RequestContext,
        request: RemotingCommand,
    ) -> BoxFuture<Option<RemotingCommand>> {
        let this = KvProcessor {
            node: self.node.clone(),
            read_mode: self.read_mode,
        };
        Box::pin(async move {
            let response = match this.handle(&request).await {
                Ok(body) => request.response_to(wire::SUCCESS, None).with_body(body),
                Err((code, remark)) => {
                    tracing::debug!(code, %remark, request = request.code, "raft-kv request failed");
                    request.response_to(code, Some(remark))
                }
            };
            Some(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rocketraft_raft::kv::KvValue;
    use rocketraft_remoting::{ClientConfig, RemotingClient};
    use std::time::Duration;

    async fn call(
        client: &RemotingClient,
        addr: &str,
        code: i32,
        body: serde_json::Value,
    ) -> RemotingCommand {
        let request = RemotingCommand::request(code).with_body(body.to_string().into_bytes());
        client
            .invoke(addr, request, Duration::from_secs(10))
            .await
            .expect("an answer")
    }

    /// One node on loopback: every code answers as documented, a bad body is refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_single_node_serves_the_protocol() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = RaftConfig {
            node_id: 1,
            listen: "127.0.0.1:0".parse().expect("addr"),
            data_dir: dir.path().join("data"),
            initial_members: [(1, "127.0.0.1:0".to_string())].into_iter().collect(),
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            heartbeat_interval_ms: 100,
            ..RaftConfig::default()
        };
        let node = Arc::new(
            RaftNode::start(config, KvStateMachine::new())
                .await
                .expect("node starts"),
        );
        let server = serve(node.clone(), ReadMode::Linearizable, "127.0.0.1:0")
            .await
            .expect("bind");
        let addr = server.local_addr().to_string();
        let client = RemotingClient::new(ClientConfig::default());
        // Wait for the single node to lead.
        let mut led = false;
        for _ in 0..100 {
            if node.is_leader() {
                led = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(led, "a one-node group elects itself");

        let r = call(&client, &addr, wire::READ, serde_json::json!({"key": "a"})).await;
        assert_eq!(r.code, wire::SUCCESS);
        let read: wire::ReadResponse = serde_json::from_slice(&r.body).expect("read body");
        assert_eq!(read.value, None);

        let r = call(
            &client,
            &addr,
            wire::WRITE,
            serde_json::json!({"key": "a", "value": 5}),
        )
        .await;
        assert_eq!(r.code, wire::SUCCESS, "{:?}", r.remark);

        let r = call(
            &client,
            &addr,
            wire::CAS,
            serde_json::json!({"key": "a", "expected": 4, "new": 6}),
        )
        .await;
        assert_eq!(r.code, wire::SUCCESS);
        let cas: wire::CasResponse = serde_json::from_slice(&r.body).expect("cas body");
        assert_eq!(
            cas,
            wire::CasResponse {
                applied: false,
                current: Some(KvValue::Int(5))
            }
        );
        let r = call(
            &client,
            &addr,
            wire::CAS,
            serde_json::json!({"key": "a", "expected": 5, "new": "six"}),
        )
        .await;
        let cas: wire::CasResponse = serde_json::from_slice(&r.body).expect("cas body");
        assert!(cas.applied);

        let r = call(&client, &addr, wire::READ, serde_json::json!({"key": "a"})).await;
        let read: wire::ReadResponse = serde_json::from_slice(&r.body).expect("read body");
        assert_eq!(read.value, Some(KvValue::Str("six".into())));

        let r = call(&client, &addr, wire::STATUS, serde_json::json!(null)).await;
        assert_eq!(r.code, wire::SUCCESS);
        let status: rocketraft_raft::NodeStatus =
            serde_json::from_slice(&r.body).expect("status body");
        assert_eq!(status.state, "Leader");
        assert_eq!(status.leader, Some(1));

        let r = call(&client, &addr, wire::WRITE, serde_json::json!({"key": ""})).await;
        assert_eq!(r.code, wire::REFUSED);
        let r = call(
            &client,
            &addr,
            wire::WRITE,
            serde_json::json!({"key": "", "value": 1}),
        )
        .await;
        assert_eq!(r.code, wire::REFUSED, "an empty key is refused");

        server.shutdown().await;
        node.shutdown().await;
    }
}
