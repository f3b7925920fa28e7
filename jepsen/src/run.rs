//! `rocketraft-jepsen run`: build the private network, start the cluster, run a workload while
//! the nemesis injects faults on its seeded timeline, heal, wait for recovery, drain, check,
//! and write the report. Everything started is torn down on the way out, on error, and on
//! Ctrl-C / SIGTERM. The lifecycle is [`crate::lifecycle`]'s, shared by every workload; this
//! module brings the RocketMQ cluster and the queue and controller workloads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use rocketraft_common::trust::ClusterSecret;

use crate::cluster::{Clients, Cluster, ClusterOptions, HarnessAuth, Scale};
use crate::lifecycle::{self, Findings, Power, Task, Workload};
use crate::model::ModelName;
use crate::nemesis::{lock, parse_kinds, FaultKind, PowerMounts};
use crate::nodes::{find_binary, Role};
use crate::record::{Event, Kind, Recorder};
use crate::report::{self, FaultImpact, Verdicts};
use crate::workload::{self, QueueOptions};
use crate::{controller_workload, queue_check, split_brain};

/// The broker switch that makes a master acknowledge before replicating (a deliberately broken
/// build, for the harness's self-test).
pub const UNSAFE_ACK_ENV: &str = "ROCKETRAFT_UNSAFE_ACK_BEFORE_REPLICATION";

/// The node data directories removed after a valid run (the logs stay).
const DATA_DIRS: [&str; 4] = ["data", "store", "store-disk", "data-disk"];

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub workload: String,
    pub nemesis: String,
    pub time_limit: Duration,
    pub seed: u64,
    pub out: Option<PathBuf>,
    pub bin: Option<PathBuf>,
    pub with_proxy: bool,
    pub min_in_sync_replicas: usize,
    pub unsafe_ack_before_replication: bool,
    /// Controllers serve reads from local memory (deliberately broken).
    pub unsafe_controller_stale_reads: bool,
    /// raft-kv members serve reads from local memory (deliberately broken).
    pub unsafe_raft_kv_stale_reads: bool,
    /// Remove the nodes' data directories after a valid run (logs stay).
    pub keep_data: bool,
    /// ACL 2.0 on every NameServer and broker; every client and the proxy sign as a generated
    /// administrator (RocketMQ's `AclClientRPCHook` signing).
    pub auth: bool,
    /// Broker sets, replicas per set, NameServers and proxies (queue and controller
    /// workloads).
    pub scale: Scale,
}

/// Runs everything; `Ok` holds the verdicts and the report directory.
pub fn run(options: RunOptions) -> anyhow::Result<(Verdicts, PathBuf)> {
    if options.workload == "raft-kv" {
        return crate::kv_workload::run(options);
    }
    if options.workload != "queue" && options.workload != "controller" {
        bail!(
            "workload {:?} is not implemented: use queue, controller or raft-kv",
            options.workload
        );
    }
    let kinds = parse_kinds(&options.nemesis)?;
    let binary = find_binary(options.bin.as_deref())?;
    if options.workload == "queue" {
        lifecycle::run::<QueueRun>(&options, &kinds, binary)
    } else {
        lifecycle::run::<ControllerRun>(&options, &kinds, binary)
    }
}

/// Builds the network and writes every config of the RocketMQ cluster (starts nothing), and
/// the brokers' LazyFs mounts when the run has the power-loss nemesis.
pub(crate) fn build_cluster(
    options: &RunOptions,
    kinds: &[FaultKind],
    binary: PathBuf,
    dir: &Path,
) -> anyhow::Result<(Cluster, Option<Power>)> {
    let mut broker_env = Vec::new();
    if options.unsafe_ack_before_replication {
        broker_env.push((UNSAFE_ACK_ENV.to_string(), "1".to_string()));
    }
    let mut cluster = Cluster::create(ClusterOptions {
        binary,
        dir: dir.to_path_buf(),
        // The queue workload sends and receives through the proxy too.
        with_proxy: options.with_proxy || options.workload == "queue",
        min_in_sync_replicas: options.min_in_sync_replicas,
        threads: 2,
        broker_env,
        controller_stale_reads: options.unsafe_controller_stale_reads,
        cluster_secret: Some(ClusterSecret::generate()),
        auth: options.auth.then(HarnessAuth::generate).transpose()?,
        scale: options.scale,
    })?;
    lifecycle::prepare_faults(&mut cluster, kinds, &[Role::Controller, Role::Broker])?;
    // The brokers' stores on LazyFs mounts, before any process starts (each gets a copy).
    let power = if kinds.contains(&FaultKind::PowerLoss) {
        Some(Arc::new(Mutex::new(PowerMounts::mount(&cluster)?)))
    } else {
        None
    };
    Ok((cluster, power))
}

/// The RocketMQ cluster once it serves: its addresses and the clients that ask it.
struct RocketMq {
    clients: Clients,
    controllers: Vec<String>,
    /// Every NameServer, `;`-separated.
    namesrv: String,
    /// Every broker set with its replicas, as the NameServers list them.
    sets: Vec<(String, Vec<String>)>,
    /// The proxies' gRPC addresses.
    proxies: Vec<String>,
}

/// The controllers first, until they elect a leader (90 s); then everything else, until every
/// broker set registers a master and all its replicas (120 s) and its SyncStateSet holds
/// `min_in_sync_replicas` (60 s).
async fn start_rocketmq(
    cluster: &Arc<Mutex<Cluster>>,
    options: &RunOptions,
    dir: &Path,
) -> anyhow::Result<RocketMq> {
    let clients = {
        let c = lock(cluster);
        Clients::new(
            Duration::from_secs(3),
            c.options.cluster_secret.clone(),
            c.options.auth.as_ref().map(|auth| auth.admin.clone()),
        )
    };
    let (controllers, namesrv, set_names) = {
        let c = lock(cluster);
        (c.controller_addrs(), c.namesrv_addr(), c.set_names())
    };
    let scale = options.scale;
    if scale == Scale::default() {
        eprintln!("starting 3 controllers, a NameServer and 3 brokers in network namespaces...");
    } else {
        eprintln!(
            "starting 3 controllers, {} NameServer(s) and {} broker set(s) of {} replicas in network namespaces...",
            scale.namesrvs, scale.sets, scale.replicas
        );
    }
    {
        let mut c = lock(cluster);
        for name in c.names(Role::Controller) {
            c.start(&name)?;
        }
    }
    lifecycle::wait_ready(
        Duration::from_secs(90),
        || {
            let clients = clients.clone();
            let controllers = controllers.clone();
            async move { clients.controller_leader(&controllers).await.is_some() }
        },
        "the controllers elected no leader",
        dir,
        "c*",
    )
    .await?;
    lock(cluster).start_all()?;
    let mut sets = Vec::new();
    for set in &set_names {
        wait_broker_set(&clients, &controllers, &namesrv, set, options, dir).await?;
        let replicas = clients
            .named_broker_set(&namesrv, set)
            .await
            .map(|(_, r)| r)
            .unwrap_or_default();
        sets.push((set.clone(), replicas));
    }
    let proxies = lock(cluster).proxy_addrs();
    Ok(RocketMq {
        clients,
        controllers,
        namesrv,
        sets,
        proxies,
    })
}

/// Waits until broker set `set` registers a master and every replica (120 s) and its
/// SyncStateSet holds `min_in_sync_replicas` (60 s).
async fn wait_broker_set(
    clients: &Clients,
    controllers: &[String],
    namesrv: &str,
    set: &str,
    options: &RunOptions,
    dir: &Path,
) -> anyhow::Result<()> {
    let replicas = options.scale.replicas;
    lifecycle::wait_ready(
        Duration::from_secs(120),
        || {
            let clients = clients.clone();
            let namesrv = namesrv.to_string();
            let set = set.to_string();
            async move {
                matches!(clients.named_broker_set(&namesrv, &set).await, Some((Some(_), r)) if r.len() >= replicas)
            }
        },
        &format!("broker set {set} did not register a master and {replicas} replicas"),
        dir,
        "b*",
    )
    .await?;
    lifecycle::wait_ready(
        Duration::from_secs(60),
        || {
            let clients = clients.clone();
            let controllers = controllers.to_vec();
            let need = options.min_in_sync_replicas;
            let set = set.to_string();
            async move {
                let Some(leader) = clients.controller_leader(&controllers).await else {
                    return false;
                };
                clients
                    .controller
                    .get_replica_info(&leader, &set)
                    .await
                    .is_ok_and(|info| info.sync_state_set.len() >= need)
            }
        },
        &format!(
            "the SyncStateSet of {set} did not reach {} replicas",
            options.min_in_sync_replicas
        ),
        dir,
        "b*",
    )
    .await
}

impl RocketMq {
    fn say_ready(&self) {
        let brokers: Vec<String> = self
            .sets
            .iter()
            .map(|(set, replicas)| {
                if self.sets.len() == 1 {
                    replicas.join(", ")
                } else {
                    format!("{set}: {}", replicas.join(", "))
                }
            })
            .collect();
        eprintln!(
            "cluster ready (brokers {}); running the workload",
            brokers.join("; ")
        );
    }

    fn set_names(&self) -> Vec<String> {
        self.sets.iter().map(|(s, _)| s.clone()).collect()
    }
}

/// The queue workload's part of the lifecycle: sends and pops over Remoting (and through the
/// proxy over gRPC), a final drain, the queue and split-brain checks.
struct QueueRun {
    rocketmq: RocketMq,
}

impl Workload for QueueRun {
    const DATA_DIRS: &'static [&'static str] = &DATA_DIRS;
    const PRIMARY: &'static [&'static str] = &["send"];
    const WORKERS_BELOW: u64 = controller_workload::AUTO_ELECT_PROCESS_BASE;
    const CHARTED: &'static [&'static str] = &["send", "pop"];

    async fn start(
        cluster: &Arc<Mutex<Cluster>>,
        options: &RunOptions,
        dir: &Path,
    ) -> anyhow::Result<QueueRun> {
        let rocketmq = start_rocketmq(cluster, options, dir).await?;
        let (clients, namesrv) = (&rocketmq.clients, &rocketmq.namesrv);
        let sets = rocketmq.set_names();
        workload::create_topics(clients, namesrv, &sets, Duration::from_secs(60)).await?;
        if !rocketmq.proxies.is_empty() {
            crate::grpc_queue::setup(clients, namesrv, &sets, Duration::from_secs(60)).await?;
        }
        rocketmq.say_ready();
        Ok(QueueRun { rocketmq })
    }

    fn spawn(
        &mut self,
        recorder: &Recorder,
        _options: &RunOptions,
        stop: &watch::Receiver<bool>,
    ) -> Vec<Task> {
        let m = &self.rocketmq;
        let grpc = (!m.proxies.is_empty()).then(|| {
            let mut grpc = crate::grpc_queue::GrpcOptions::new("");
            grpc.proxies = m.proxies.clone();
            if m.sets.len() > 1 {
                grpc.sets = m.set_names();
            }
            tokio::spawn(crate::grpc_queue::run(recorder.clone(), grpc, stop.clone()))
        });
        let queue = tokio::spawn(workload::run_queue(
            m.clients.clone(),
            recorder.clone(),
            m.namesrv.clone(),
            m.sets.clone(),
            QueueOptions::default(),
            stop.clone(),
        ));
        let mut tasks = vec![("the workload task failed", queue)];
        tasks.extend(grpc.map(|task| ("the gRPC workload task failed", task)));
        tasks
    }

    fn nemesis_clients(&self) -> Clients {
        self.rocketmq.clients.clone()
    }

    async fn finish(&mut self, recorder: &Recorder) {
        eprintln!("final drain...");
        let m = &mut self.rocketmq;
        workload::drain(
            &m.clients,
            recorder,
            &m.namesrv,
            std::mem::take(&mut m.sets),
            1_000_000,
            Duration::from_millis(workload::INVISIBLE_MS as u64) + Duration::from_secs(8),
            Duration::from_secs(90),
        )
        .await;
    }

    fn check(
        &self,
        events: &[Event],
        _options: &RunOptions,
        _dir: &Path,
    ) -> anyhow::Result<Findings> {
        let queue = queue_check::check(events);
        let split = split_brain::check(events);
        let mut others = BTreeMap::new();
        others.insert("paths".to_string(), crate::grpc_queue::path_counts(events));
        others.insert("sets".to_string(), report::per_set(events));
        let counterexample = report::counterexample(events, &queue, &split);
        Ok(Findings {
            valid: queue.valid && split.valid,
            queue: Some(queue),
            split_brain: Some(split),
            others,
            counterexample,
        })
    }

    fn mark_faults(
        &self,
        faults: &mut [FaultImpact],
        cluster: &Mutex<Cluster>,
        options: &RunOptions,
    ) {
        let nodes = lock(cluster).server_names();
        report::mark_writable_sides(faults, &nodes, options.min_in_sync_replicas);
    }
}

/// The controller workload's part of the lifecycle: elections, SyncStateSet changes and reads
/// of fake broker sets straight at the controllers, with their heartbeats, checked for
/// linearizability with the replica-info model.
struct ControllerRun {
    rocketmq: RocketMq,
    heartbeats: Option<JoinHandle<()>>,
}

impl Workload for ControllerRun {
    const DATA_DIRS: &'static [&'static str] = &DATA_DIRS;
    const PRIMARY: &'static [&'static str] = &["read", "elect", "alter"];
    const WORKERS_BELOW: u64 = controller_workload::AUTO_ELECT_PROCESS_BASE;

    async fn start(
        cluster: &Arc<Mutex<Cluster>>,
        options: &RunOptions,
        dir: &Path,
    ) -> anyhow::Result<ControllerRun> {
        let rocketmq = start_rocketmq(cluster, options, dir).await?;
        controller_workload::setup(
            &rocketmq.clients,
            &rocketmq.controllers,
            Duration::from_secs(60),
        )
        .await?;
        rocketmq.say_ready();
        Ok(ControllerRun {
            rocketmq,
            heartbeats: None,
        })
    }

    fn spawn(
        &mut self,
        recorder: &Recorder,
        options: &RunOptions,
        stop: &watch::Receiver<bool>,
    ) -> Vec<Task> {
        let m = &self.rocketmq;
        // Heartbeats run until the very end (the final reads need live brokers too).
        self.heartbeats = Some(tokio::spawn(controller_workload::heartbeats(
            m.clients.clone(),
            m.controllers.clone(),
            stop.clone(),
        )));
        let workers = tokio::spawn(controller_workload::run(
            m.clients.clone(),
            recorder.clone(),
            m.controllers.clone(),
            4,
            options.seed,
            stop.clone(),
        ));
        vec![("the workload task failed", workers)]
    }

    fn on_fault(&self, recorder: &Recorder) -> Option<Arc<dyn Fn() + Send + Sync>> {
        let recorder = recorder.clone();
        let counter = Arc::new(AtomicU64::new(0));
        Some(Arc::new(move || {
            controller_workload::record_possible_auto_elections(&recorder, &counter)
        }))
    }

    fn nemesis_clients(&self) -> Clients {
        self.rocketmq.clients.clone()
    }

    async fn finish(&mut self, _recorder: &Recorder) {
        if let Some(task) = self.heartbeats.take() {
            let _ = task.await;
        }
    }

    fn check(
        &self,
        _events: &[Event],
        _options: &RunOptions,
        dir: &Path,
    ) -> anyhow::Result<Findings> {
        eprintln!("checking linearizability (replica-info model, one key per broker set)...");
        let (findings, _) = lifecycle::linearizability_findings(
            dir,
            ModelName::ReplicaInfo,
            "controller",
            "linearizability (replica-info)",
            "no linearization of the operations of one broker set; see the deepest partial linearization",
        )?;
        Ok(findings)
    }
}

/// Prints progress every 5 s and records nodes that died on their own.
pub(crate) async fn progress(
    cluster: Arc<Mutex<Cluster>>,
    recorder: Recorder,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let start = tokio::time::Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let died: Vec<(String, String)> = {
            let mut c = lock(&cluster);
            c.nodes
                .iter_mut()
                .filter_map(|n| n.exited().map(|how| (n.name.clone(), how)))
                .collect()
        };
        for (name, how) in died {
            eprintln!("  WARNING: {name} exited on its own ({how}); see its node.log");
            recorder.nemesis("node-exited", json!({"node": name, "status": how}));
        }
        let events = recorder.events();
        let mut line = String::new();
        let mut fs: Vec<&str> = events
            .iter()
            .filter(|e| e.kind == Kind::Invoke)
            .map(|e| e.f.as_str())
            .collect();
        fs.sort_unstable();
        fs.dedup();
        for f in fs {
            let count = |k: Kind| events.iter().filter(|e| e.f == f && e.kind == k).count();
            line.push_str(&format!(
                "{f} ok {} info {} fail {}; ",
                count(Kind::Ok),
                count(Kind::Info),
                count(Kind::Fail)
            ));
        }
        let delivered: usize = events
            .iter()
            .filter(|e| e.f == "pop" && e.kind == Kind::Ok)
            .map(|e| e.value.as_array().map_or(0, Vec::len))
            .sum();
        if delivered > 0 {
            line.push_str(&format!("delivered {delivered}"));
        }
        let grpc_sends = events
            .iter()
            .filter(|e| e.f == "send" && e.kind == Kind::Ok && e.extra_str("path") == Some("grpc"))
            .count();
        if grpc_sends > 0 {
            line.push_str(&format!(" (sends ok through the proxy {grpc_sends})"));
        }
        eprintln!(
            "  [{:>5.1}s] {line}{}",
            start.elapsed().as_secs_f64(),
            if *stop.borrow() {
                " (workers stopped)"
            } else {
                ""
            }
        );
    }
}
