//! The raft-kv workload: three `rocketraft-raft-kv` processes (this crate's test fixture
//! `src/bin/rocketraft-raft-kv.rs`: a key-value store on the `raft/` library,
//! [`rocketraft_raft::kv`]) in their own namespaces, concurrent clients issuing read, write and
//! compare-and-set on a few keys against random nodes, and the history checked for
//! linearizability one key at a time.
//!
//! Each key is a compare-and-set register, so the checker's `cas-register` model is the
//! sequential specification of the store (the `kv` model's operations are get/put/append, with
//! no compare-and-set); the checker splits the history by the `key` field (Jepsen's
//! `independent`). Operations, in the history's terms:
//! - `read`: invoke nil, `ok` with the value (nil for an absent key).
//! - `write v`: `ok` once committed and applied.
//! - `cas [old new]`: `ok` if the compare held (decided in log order); `fail` if it did not.
//!
//! Every written value is unique (worker × counter), so a stale read cannot be explained by a
//! later write of the same value; a worker's `cas` expects the last value it saw for the key,
//! so both outcomes of a compare are common. A request refused before it was proposed, or that
//! could not even connect, is `fail` (nothing happened); no answer, or "outcome unknown" from
//! the server (timeout, leader change), is `info` and the worker continues as a new process.
//! After healing and recovery every node reads every key once more (final reads).
//!
//! Nemeses are those of the other workloads, aimed at the raft-kv nodes: the *controller
//! leader* and *broker master* of the partition, kill and pause variants are the Raft leader
//! here (found through each node's Raft status), and `kill controller-majority` kills a
//! majority of the raft-kv nodes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rocketraft_raft::kv::{wire, KvValue};
use rocketraft_raft::NodeStatus;
use rocketraft_remoting::{ClientConfig, RemotingClient, RemotingCommand, RemotingError};
use serde_json::{json, Value as Json};
use tokio::sync::watch;

use crate::cluster::{node_dir, Clients, Cluster, ClusterOptions, CLIENT_NODE};
use crate::lifecycle::{self, Findings, Power, Task, Workload};
use crate::model::ModelName;
use crate::nemesis::{lock, parse_kinds, FaultKind};
use crate::net::Network;
use crate::nodes::{find_raft_kv_binary, port, Node, Role};
use crate::record::{extra, Event, Kind, Process, Recorder};
use crate::report::Verdicts;
use crate::rng::Rng;
use crate::run::RunOptions;

/// The raft-kv nodes: (name, Raft node id, host byte of 10.77.0.x).
pub const NODES: [(&str, u64, u8); 3] = [("n1", 1, 51), ("n2", 2, 52), ("n3", 3, 53)];
/// The keys clients work on.
pub const KEYS: [&str; 5] = ["x0", "x1", "x2", "x3", "x4"];
/// Concurrent clients.
pub const WORKERS: usize = 10;
/// Process ids of the final reads.
pub const FINAL_PROCESS_BASE: u64 = 1_000_000;
/// Operation names, for availability and recovery.
pub const PRIMARY: [&str; 3] = ["read", "write", "cas"];

/// The `rocketraft-raft-kv` arguments of node `id` (after `--log` and `--threads`).
pub fn node_args(id: u64, data_dir: &Path, stale_reads: bool) -> anyhow::Result<Vec<String>> {
    let (_, _, host) = NODES
        .iter()
        .find(|(_, i, _)| *i == id)
        .with_context(|| format!("no raft-kv node {id}"))?;
    let peers = NODES
        .iter()
        .map(|(_, i, h)| format!("{i}=10.77.0.{h}:{}", port::RAFT))
        .collect::<Vec<_>>()
        .join(",");
    let data = data_dir
        .to_str()
        .with_context(|| format!("{} is not UTF-8", data_dir.display()))?;
    let mut args = vec![
        "--node-id".to_string(),
        id.to_string(),
        "--listen".into(),
        format!("10.77.0.{host}:{}", port::RAFT_KV),
        "--raft-listen".into(),
        format!("10.77.0.{host}:{}", port::RAFT),
        "--data-dir".into(),
        data.to_string(),
        "--peers".into(),
        peers,
    ];
    if stale_reads {
        args.push("--unsafe-stale-reads".into());
    }
    Ok(args)
}

/// Builds the network (a client namespace and one per raft-kv node) and writes nothing but the
/// node directories; starts nothing.
pub fn create_cluster(options: ClusterOptions, stale_reads: bool) -> anyhow::Result<Cluster> {
    let mut names: Vec<(&str, u8)> = vec![(CLIENT_NODE, 2)];
    names.extend(NODES.iter().map(|(n, _, h)| (*n, *h)));
    let network = Network::create(&names).context("cannot build the private network")?;
    let mut nodes = Vec::new();
    for (name, id, _) in NODES {
        let net = network.node(name)?;
        let (dir, mut args) = node_dir(&options, name)?;
        args.extend(node_args(id, &dir.join("data"), stale_reads)?);
        nodes.push(Node::new(name, Role::RaftKv, &net.ns, net.ip, dir, args));
    }
    Ok(Cluster {
        nodes,
        options,
        relays: Vec::new(),
        network,
    })
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvCallError {
    /// Nothing happened: refused before proposing, or no connection could be made.
    Refused(String),
    /// No (definite) answer: a write or CAS may or may not take effect.
    Unknown(String),
}

impl std::fmt::Display for KvCallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvCallError::Refused(why) => write!(f, "refused: {why}"),
            KvCallError::Unknown(why) => write!(f, "outcome unknown: {why}"),
        }
    }
}

/// A typed client of the `rocketraft-raft-kv` Remoting protocol ([`wire`]).
#[derive(Clone)]
pub struct KvClient {
    remoting: RemotingClient,
    timeout: Duration,
}

impl KvClient {
    pub fn new(timeout: Duration) -> KvClient {
        KvClient {
            remoting: RemotingClient::new(ClientConfig {
                connect_timeout: Duration::from_secs(1),
                ..ClientConfig::default()
            }),
            timeout,
        }
    }

    async fn call(&self, addr: &str, code: i32, body: Vec<u8>) -> Result<Vec<u8>, KvCallError> {
        let request = RemotingCommand::request(code).with_body(body);
        let response = match self.remoting.invoke(addr, request, self.timeout).await {
            Ok(response) => response,
            // Never connected: nothing was sent.
            Err(e @ RemotingError::Connect { .. }) => {
                return Err(KvCallError::Refused(e.to_string()))
            }
            Err(e) => return Err(KvCallError::Unknown(e.to_string())),
        };
        let remark = response.remark.clone().unwrap_or_default();
        match response.code {
            wire::SUCCESS => Ok(response.body.to_vec()),
            wire::REFUSED => Err(KvCallError::Refused(remark)),
            code => Err(KvCallError::Unknown(format!("code {code}: {remark}"))),
        }
    }

    fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, KvCallError> {
        serde_json::to_vec(value).map_err(|e| KvCallError::Refused(format!("unencodable: {e}")))
    }

    fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, KvCallError> {
        serde_json::from_slice(bytes)
            .map_err(|e| KvCallError::Unknown(format!("undecodable answer: {e}")))
    }

    pub async fn read(&self, addr: &str, key: &str) -> Result<Option<KvValue>, KvCallError> {
        let body = Self::encode(&wire::ReadRequest {
            key: key.to_string(),
        })?;
        let answer: wire::ReadResponse = Self::decode(&self.call(addr, wire::READ, body).await?)?;
        Ok(answer.value)
    }

    pub async fn write(&self, addr: &str, key: &str, value: KvValue) -> Result<(), KvCallError> {
        let body = Self::encode(&wire::WriteRequest {
            key: key.to_string(),
            value,
        })?;
        self.call(addr, wire::WRITE, body).await.map(|_| ())
    }

    /// Whether the compare held and `new` was set, and the value the compare saw.
    pub async fn cas(
        &self,
        addr: &str,
        key: &str,
        expected: Option<KvValue>,
        new: KvValue,
    ) -> Result<wire::CasResponse, KvCallError> {
        let body = Self::encode(&wire::CasRequest {
            key: key.to_string(),
            expected,
            new,
        })?;
        Self::decode(&self.call(addr, wire::CAS, body).await?)
    }

    pub async fn status(&self, addr: &str) -> Result<NodeStatus, KvCallError> {
        Self::decode(&self.call(addr, wire::STATUS, Vec::new()).await?)
    }
}

/// The (name, client address) of every raft-kv node of the cluster.
fn kv_nodes(cluster: &Mutex<Cluster>) -> Vec<(String, String)> {
    lock(cluster)
        .nodes
        .iter()
        .filter(|n| n.role == Role::RaftKv)
        .map(|n| (n.name.clone(), n.addr()))
        .collect()
}

/// The name of the node the others follow: among the nodes that answer, the leader of the
/// highest term (a partitioned old leader may still claim an older one).
pub async fn leader_among(client: &KvClient, nodes: &[(String, String)]) -> Option<String> {
    let mut best: Option<(u64, u64)> = None; // (term, leader id)
    for (_, addr) in nodes {
        let Ok(status) = client.status(addr).await else {
            continue;
        };
        if let Some(leader) = status.leader {
            if best.is_none_or(|(term, _)| status.term > term) {
                best = Some((status.term, leader));
            }
        }
    }
    let (_, id) = best?;
    NODES
        .iter()
        .find(|(_, i, _)| *i == id)
        .map(|(name, _, _)| name.to_string())
}

/// The Raft leader of the cluster's raft-kv nodes, by name (for the nemesis).
pub async fn leader(cluster: &Mutex<Cluster>) -> Option<String> {
    let nodes = kv_nodes(cluster);
    leader_among(&KvClient::new(Duration::from_millis(1500)), &nodes).await
}

fn with_key(key: &str) -> serde_json::Map<String, Json> {
    extra([("key", json!(key))])
}

fn to_json(value: &Option<KvValue>) -> Json {
    match value {
        None => Json::Null,
        Some(KvValue::Int(i)) => json!(i),
        Some(KvValue::Str(s)) => json!(s),
    }
}

struct Worker {
    client: KvClient,
    recorder: Recorder,
    /// (name, address) of every node.
    nodes: Vec<(String, String)>,
    process: u64,
    stride: u64,
    rng: Rng,
    /// This worker's written values are `value_base + n`.
    value_base: i64,
    written: i64,
    /// The last value this worker saw per key (what its next cas expects).
    seen: HashMap<&'static str, Option<KvValue>>,
}

impl Worker {
    fn complete(
        &mut self,
        kind: Kind,
        f: &str,
        key: &str,
        value: Json,
        node: &str,
        error: Option<String>,
    ) {
        let mut e = with_key(key);
        e.insert("node".into(), json!(node));
        if let Some(error) = error {
            e.insert("error".into(), json!(error));
        }
        self.recorder.complete(self.process, kind, f, value, e);
        if kind == Kind::Info {
            self.process += self.stride;
        }
    }

    fn invoke(&self, f: &str, key: &str, value: Json) {
        self.recorder.record(
            Process::Client(self.process),
            Kind::Invoke,
            f,
            value,
            with_key(key),
        );
    }

    fn failure(f: &str, error: &KvCallError) -> Kind {
        match error {
            KvCallError::Refused(_) => Kind::Fail,
            // A read changes nothing, whatever happened to it.
            KvCallError::Unknown(_) if f == "read" => Kind::Fail,
            KvCallError::Unknown(_) => Kind::Info,
        }
    }

    fn next_value(&mut self) -> KvValue {
        self.written += 1;
        KvValue::Int(self.value_base + self.written)
    }

    async fn one(&mut self) {
        let key = KEYS[self.rng.below(KEYS.len() as u64) as usize];
        let Some((node, addr)) = self.rng.pick(&self.nodes).cloned() else {
            return;
        };
        let roll = self.rng.below(100);
        if roll < 40 {
            self.invoke("read", key, Json::Null);
            match self.client.read(&addr, key).await {
                Ok(value) => {
                    self.complete(Kind::Ok, "read", key, to_json(&value), &node, None);
                    self.seen.insert(key, value);
                }
                Err(e) => {
                    let kind = Self::failure("read", &e);
                    self.complete(kind, "read", key, Json::Null, &node, Some(e.to_string()));
                }
            }
        } else if roll < 70 {
            let value = self.next_value();
            let v = to_json(&Some(value.clone()));
            self.invoke("write", key, v.clone());
            match self.client.write(&addr, key, value.clone()).await {
                Ok(()) => {
                    self.complete(Kind::Ok, "write", key, v, &node, None);
                    self.seen.insert(key, Some(value));
                }
                Err(e) => {
                    let kind = Self::failure("write", &e);
                    self.complete(kind, "write", key, v, &node, Some(e.to_string()));
                }
            }
        } else {
            let expected = self.seen.get(key).cloned().flatten();
            let new = self.next_value();
            let pair = json!([to_json(&expected), to_json(&Some(new.clone()))]);
            self.invoke("cas", key, pair.clone());
            match self.client.cas(&addr, key, expected, new.clone()).await {
                Ok(answer) if answer.applied => {
                    self.complete(Kind::Ok, "cas", key, pair, &node, None);
                    self.seen.insert(key, Some(new));
                }
                Ok(answer) => {
                    let mut e = with_key(key);
                    e.insert("node".into(), json!(node));
                    e.insert("current".into(), to_json(&answer.current));
                    self.recorder
                        .complete(self.process, Kind::Fail, "cas", pair, e);
                    self.seen.insert(key, answer.current);
                }
                Err(e) => {
                    let kind = Self::failure("cas", &e);
                    self.complete(kind, "cas", key, pair, &node, Some(e.to_string()));
                }
            }
        }
    }
}

/// Runs [`WORKERS`] clients until `stop`.
pub async fn run_workers(
    client: KvClient,
    recorder: Recorder,
    nodes: Vec<(String, String)>,
    seed: u64,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let mut worker = Worker {
            client: client.clone(),
            recorder: recorder.clone(),
            nodes: nodes.clone(),
            process: w as u64,
            stride: WORKERS as u64,
            rng: Rng::new(seed ^ (w as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            value_base: (w as i64 + 1) * 1_000_000,
            written: 0,
            seen: HashMap::new(),
        };
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            while !*stop.borrow() {
                worker.one().await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    for task in tasks {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "a raft-kv worker panicked");
        }
    }
}

/// Every node reads every key once (recorded like any read).
async fn final_reads(client: &KvClient, recorder: &Recorder, nodes: &[(String, String)]) {
    let mut process = FINAL_PROCESS_BASE;
    for (node, addr) in nodes {
        for key in KEYS {
            recorder.record(
                Process::Client(process),
                Kind::Invoke,
                "read",
                Json::Null,
                with_key(key),
            );
            let mut e = with_key(key);
            e.insert("node".into(), json!(node));
            e.insert("final".into(), json!(true));
            match client.read(addr, key).await {
                Ok(value) => {
                    recorder.complete(process, Kind::Ok, "read", to_json(&value), e);
                }
                Err(error) => {
                    e.insert("error".into(), json!(error.to_string()));
                    recorder.complete(process, Kind::Fail, "read", Json::Null, e);
                }
            }
            process += 1;
        }
    }
}

/// `rocketraft-jepsen run --workload raft-kv` ([`crate::run::run`] hands over at once; the
/// nodes run [`crate::nodes::RAFT_KV_BINARY`], `--bin` is not used): the lifecycle of every
/// workload ([`crate::lifecycle`]) around [`KvRun`].
pub fn run(options: RunOptions) -> anyhow::Result<(Verdicts, PathBuf)> {
    let kinds = parse_kinds(&options.nemesis)?;
    let binary = find_raft_kv_binary()?;
    lifecycle::run::<KvRun>(&options, &kinds, binary)
}

/// The raft-kv workload's part of the lifecycle: start the nodes, run the workers, read every
/// key back on every node, check one compare-and-set register per key.
pub(crate) struct KvRun {
    client: KvClient,
    /// (name, client address) of every node.
    nodes: Vec<(String, String)>,
}

impl Workload for KvRun {
    const DATA_DIRS: &'static [&'static str] = &["data"];
    const PRIMARY: &'static [&'static str] = &PRIMARY;
    const WORKERS_BELOW: u64 = FINAL_PROCESS_BASE;

    fn build(
        options: &RunOptions,
        kinds: &[FaultKind],
        binary: PathBuf,
        dir: &Path,
    ) -> anyhow::Result<(Cluster, Option<Power>)> {
        let mut cluster = create_cluster(
            ClusterOptions {
                binary,
                dir: dir.to_path_buf(),
                with_proxy: false,
                min_in_sync_replicas: 0,
                threads: 2,
                broker_env: Vec::new(),
                controller_stale_reads: false,
                cluster_secret: None,
                auth: None,
                scale: crate::cluster::Scale::default(),
            },
            options.unsafe_raft_kv_stale_reads,
        )?;
        lifecycle::prepare_faults(&mut cluster, kinds, &[Role::RaftKv])?;
        Ok((cluster, None))
    }

    async fn start(
        cluster: &Arc<Mutex<Cluster>>,
        options: &RunOptions,
        dir: &Path,
    ) -> anyhow::Result<KvRun> {
        let client = KvClient::new(Duration::from_secs(6));
        let nodes = kv_nodes(cluster);
        eprintln!(
            "starting {} raft-kv nodes in network namespaces{}...",
            nodes.len(),
            if options.unsafe_raft_kv_stale_reads {
                " (UNSAFE stale reads)"
            } else {
                ""
            }
        );
        lock(cluster).start_all()?;
        wait_serving(&client, &nodes, dir).await?;
        let leader = leader_among(&client, &nodes).await;
        eprintln!(
            "raft-kv ready (leader {}); running the workload: {WORKERS} clients, keys {}",
            leader.as_deref().unwrap_or("unknown"),
            KEYS.join(",")
        );
        Ok(KvRun { client, nodes })
    }

    fn spawn(
        &mut self,
        recorder: &Recorder,
        options: &RunOptions,
        stop: &watch::Receiver<bool>,
    ) -> Vec<Task> {
        let workers = tokio::spawn(run_workers(
            self.client.clone(),
            recorder.clone(),
            self.nodes.clone(),
            options.seed,
            stop.clone(),
        ));
        vec![("the raft-kv workload task failed", workers)]
    }

    fn nemesis_clients(&self) -> Clients {
        Clients::new(Duration::from_secs(3), None, None)
    }

    async fn finish(&mut self, recorder: &Recorder) {
        eprintln!("final reads of every key on every node...");
        final_reads(&self.client, recorder, &self.nodes).await;
    }

    fn check(
        &self,
        events: &[Event],
        options: &RunOptions,
        dir: &Path,
    ) -> anyhow::Result<Findings> {
        eprintln!("checking linearizability (cas-register model, one register per key)...");
        let (mut findings, checked) = lifecycle::linearizability_findings(
            dir,
            ModelName::CasRegister,
            "raft-kv",
            "linearizability (cas-register per key)",
            "no linearization of the operations on one key; see the deepest partial linearization",
        )?;
        let summary = findings.others.get_mut("linearizability");
        if let Some(summary) = summary.and_then(Json::as_object_mut) {
            summary.insert("model".into(), json!(checked.report.model));
            summary.insert("dropped".into(), json!(checked.report.dropped));
        }
        let counts = self.counts(events, options);
        findings.others.insert("raft_kv".to_string(), counts);
        Ok(findings)
    }
}

impl KvRun {
    /// The `raft_kv` entry of the verdicts: the shape of the run and how its compares went.
    fn counts(&self, events: &[Event], options: &RunOptions) -> Json {
        let cas_ok = events
            .iter()
            .filter(|e| e.f == "cas" && e.kind == Kind::Ok)
            .count();
        let cas_failed = events
            .iter()
            .filter(|e| e.f == "cas" && e.kind == Kind::Fail && e.extra.contains_key("current"))
            .count();
        json!({
            "nodes": self.nodes.len(),
            "keys": KEYS.len(),
            "workers": WORKERS,
            "cas_applied": cas_ok,
            "cas_compare_failed": cas_failed,
            "unsafe_stale_reads": options.unsafe_raft_kv_stale_reads,
        })
    }
}

/// Waits until the nodes elect a leader (90 s) and every node serves a read (60 s: knows the
/// leader, forwards).
async fn wait_serving(
    client: &KvClient,
    nodes: &[(String, String)],
    dir: &Path,
) -> anyhow::Result<()> {
    lifecycle::wait_ready(
        Duration::from_secs(90),
        || {
            let client = client.clone();
            let nodes = nodes.to_vec();
            async move { leader_among(&client, &nodes).await.is_some() }
        },
        "the raft-kv nodes elected no leader",
        dir,
        "n*",
    )
    .await?;
    lifecycle::wait_ready(
        Duration::from_secs(60),
        || {
            let client = client.clone();
            let nodes = nodes.to_vec();
            async move {
                for (_, addr) in &nodes {
                    if client.read(addr, KEYS[0]).await.is_err() {
                        return false;
                    }
                }
                true
            }
        },
        "not every raft-kv node answered a read",
        dir,
        "n*",
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linearizability::{CheckOptions, Verdict};

    #[test]
    fn node_arguments_name_every_peer() {
        let args = node_args(2, Path::new("/d/n2/data"), false).expect("args");
        let text = args.join(" ");
        assert!(
            text.starts_with("--node-id 2 --listen 10.77.0.52:"),
            "{text}"
        );
        assert!(
            text.contains("--peers 1=10.77.0.51:9880,2=10.77.0.52:9880,3=10.77.0.53:9880"),
            "{text}"
        );
        assert!(!text.contains("unsafe"));
        let stale = node_args(1, Path::new("/d"), true).expect("args");
        assert_eq!(
            stale.last().map(String::as_str),
            Some("--unsafe-stale-reads")
        );
        assert!(node_args(4, Path::new("/d"), false).is_err());
    }

    /// What the workers record is what the cas-register model reads, one register per key: a
    /// read of a value overwritten before it began is caught.
    #[test]
    fn recorded_operations_check_per_key_and_a_stale_read_is_invalid() {
        let r = Recorder::in_memory();
        let op = |p: u64, f: &str, key: &str, input: Json, kind: Kind, output: Json| {
            r.record(Process::Client(p), Kind::Invoke, f, input, with_key(key));
            r.complete(p, kind, f, output, with_key(key));
        };
        op(
            0,
            "write",
            "x0",
            json!(1_000_001),
            Kind::Ok,
            json!(1_000_001),
        );
        op(1, "read", "x1", Json::Null, Kind::Ok, Json::Null);
        op(
            1,
            "cas",
            "x0",
            json!([1_000_001, 2_000_001]),
            Kind::Ok,
            json!([1_000_001, 2_000_001]),
        );
        op(
            0,
            "cas",
            "x0",
            json!([1_000_001, 1_000_002]),
            Kind::Fail,
            json!([1_000_001, 1_000_002]),
        );
        op(
            2,
            "write",
            "x1",
            json!(3_000_001),
            Kind::Info,
            json!(3_000_001),
        );
        op(1, "read", "x0", Json::Null, Kind::Ok, json!(2_000_001));
        let text = |r: &Recorder| -> String {
            r.events()
                .iter()
                .map(|e| serde_json::to_string(e).expect("json") + "\n")
                .collect()
        };
        let options = CheckOptions::default();
        let checked = crate::check_text(
            &text(&r),
            Some(crate::history::Format::Jsonl),
            Some(crate::model::ModelName::CasRegister),
            &options,
        )
        .expect("checks");
        assert_eq!(checked.report.verdict, Verdict::Valid);
        assert_eq!(checked.report.keys, 2);
        // x0 was overwritten with 2_000_001 before this read began: 1_000_001 is stale.
        op(3, "read", "x0", Json::Null, Kind::Ok, json!(1_000_001));
        let checked = crate::check_text(
            &text(&r),
            Some(crate::history::Format::Jsonl),
            Some(crate::model::ModelName::CasRegister),
            &options,
        )
        .expect("checks");
        assert_eq!(checked.report.verdict, Verdict::Invalid);
    }

    #[test]
    fn values_record_as_plain_json() {
        assert_eq!(to_json(&None), Json::Null);
        assert_eq!(to_json(&Some(KvValue::Int(7))), json!(7));
        assert_eq!(to_json(&Some(KvValue::Str("a".into()))), json!("a"));
    }
}
