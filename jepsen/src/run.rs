//! `rocketraft-jepsen run`: build the private network, start the cluster, run a workload while
//! the nemesis injects faults on its seeded timeline, heal, wait for recovery, drain, check,
//! and write the report. Everything started is torn down on the way out, on error, and on
//! Ctrl-C / SIGTERM.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::json;

use crate::cluster::{Clients, Cluster, ClusterOptions};
use crate::linearizability::{CheckOptions, Verdict};
use crate::nemesis::{lock, parse_kinds, timeline, Nemesis};
use crate::nodes::{find_binary, wait_until, Role};
use crate::record::{Kind, Recorder};
use crate::report::{self, Verdicts};
use crate::rng::Rng;
use crate::workload::{self, QueueOptions};
use crate::{controller_workload, net, queue_check, split_brain};
use std::sync::atomic::AtomicU64;

/// The broker switch that makes a master acknowledge before replicating (a deliberately broken
/// build, for the harness's self-test).
pub const UNSAFE_ACK_ENV: &str = "ROCKETRAFT_UNSAFE_ACK_BEFORE_REPLICATION";

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
    net::ensure_tools()?;
    let stale = net::clean_stale()?;
    if !stale.is_empty() {
        eprintln!("removed {} namespace(s) of a crashed run", stale.len());
    }
    let dir = match &options.out {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!(
            "rocketraft-jepsen/{}-{}-{}-{}",
            options.workload,
            options.nemesis.replace(',', "+"),
            options.seed,
            std::process::id()
        )),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    eprintln!(
        "rocketraft-jepsen run: workload {}, nemesis {}, {} s, seed {}; binary {}; report in {}",
        options.workload,
        options.nemesis,
        options.time_limit.as_secs(),
        options.seed,
        binary.display(),
        dir.display()
    );
    let mut broker_env = Vec::new();
    if options.unsafe_ack_before_replication {
        broker_env.push((UNSAFE_ACK_ENV.to_string(), "1".to_string()));
    }
    let mut cluster = Cluster::create(ClusterOptions {
        binary,
        dir: dir.clone(),
        // The queue workload sends and receives through the proxy too.
        with_proxy: options.with_proxy || options.workload == "queue",
        min_in_sync_replicas: options.min_in_sync_replicas,
        threads: 2,
        broker_env,
        controller_stale_reads: options.unsafe_controller_stale_reads,
    })?;
    if kinds.contains(&crate::nemesis::FaultKind::Latency) {
        cluster.add_relays()?;
    }
    if kinds.contains(&crate::nemesis::FaultKind::ClockStep) {
        cluster.enable_clock_files(&[Role::Controller, Role::Broker])?;
    }
    // The brokers' stores on LazyFs mounts, before any process starts (each gets a copy).
    let power = if kinds.contains(&crate::nemesis::FaultKind::PowerLoss) {
        Some(Arc::new(Mutex::new(crate::nemesis::PowerMounts::mount(
            &cluster,
        )?)))
    } else {
        None
    };
    let client_ns = cluster.client_ns()?;
    let cluster = Arc::new(Mutex::new(cluster));
    // Every socket the harness opens from here on is inside the client namespace: the runtime's
    // threads are created by this thread after it moved.
    let result = net::enter(&client_ns).and_then(|()| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot build the tokio runtime")?;
        let outcome = runtime.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .context("cannot catch SIGTERM")?;
            tokio::select! {
                result = run_async(cluster.clone(), power.clone(), &options, &kinds, &dir) => result,
                _ = tokio::signal::ctrl_c() => bail!("interrupted (Ctrl-C): tearing down"),
                _ = term.recv() => bail!("terminated (SIGTERM): tearing down"),
            }
        });
        runtime.shutdown_timeout(Duration::from_secs(2));
        outcome
    });
    lock(&cluster).shutdown();
    if let Some(power) = power {
        // Every process is gone: unmount the LazyFs mounts (the last reference to them).
        let stats = match power.lock() {
            Ok(p) => p.stats(),
            Err(poisoned) => poisoned.into_inner().stats(),
        };
        eprintln!(
            "power-loss: {} cuts, {} unsynced bytes dropped ({} files), {} bytes written after the cuts discarded",
            stats.cuts, stats.dropped_bytes, stats.dropped_files, stats.discarded_write_bytes
        );
        drop(power);
    }
    let verdicts = result?;
    if !options.keep_data && verdicts.valid {
        let c = lock(&cluster);
        for node in &c.nodes {
            for data in ["data", "store", "store-disk", "data-disk"] {
                let path = node.dir.join(data);
                if path.exists() {
                    if let Err(e) = std::fs::remove_dir_all(&path) {
                        tracing::warn!(path = %path.display(), error = %e, "cannot remove node data");
                    }
                }
            }
        }
    }
    Ok((verdicts, dir))
}

async fn run_async(
    cluster: Arc<Mutex<Cluster>>,
    power: Option<Arc<Mutex<crate::nemesis::PowerMounts>>>,
    options: &RunOptions,
    kinds: &[crate::nemesis::FaultKind],
    dir: &std::path::Path,
) -> anyhow::Result<Verdicts> {
    let clients = Clients::new(Duration::from_secs(3));
    let (controllers, namesrv) = {
        let c = lock(&cluster);
        (c.controller_addrs(), c.namesrv_addr())
    };
    eprintln!("starting 3 controllers, a NameServer and 3 brokers in network namespaces...");
    {
        let mut c = lock(&cluster);
        for name in c.names(Role::Controller) {
            c.start(&name)?;
        }
    }
    if !wait_until(Duration::from_secs(90), || {
        let clients = clients.clone();
        let controllers = controllers.clone();
        async move { clients.controller_leader(&controllers).await.is_some() }
    })
    .await
    {
        bail!(
            "the controllers elected no leader within 90 s; see {}/nodes/c*/node.log",
            dir.display()
        );
    }
    lock(&cluster).start_all()?;
    let ready = wait_until(Duration::from_secs(120), || {
        let clients = clients.clone();
        let namesrv = namesrv.clone();
        async move {
            matches!(clients.broker_set(&namesrv).await, Some((Some(_), replicas)) if replicas.len() >= 3)
        }
    })
    .await;
    if !ready {
        bail!(
            "the broker set did not register a master and 3 replicas within 120 s; see {}/nodes/b*/node.log",
            dir.display()
        );
    }
    let in_sync = wait_until(Duration::from_secs(60), || {
        let clients = clients.clone();
        let controllers = controllers.clone();
        let need = options.min_in_sync_replicas;
        async move {
            let Some(leader) = clients.controller_leader(&controllers).await else {
                return false;
            };
            clients
                .controller
                .get_replica_info(&leader, crate::cluster::BROKER_NAME)
                .await
                .is_ok_and(|info| info.sync_state_set.len() >= need)
        }
    })
    .await;
    if !in_sync {
        bail!(
            "the SyncStateSet did not reach {} replicas within 60 s; see {}/nodes/b*/node.log",
            options.min_in_sync_replicas,
            dir.display()
        );
    }
    let replicas = clients
        .broker_set(&namesrv)
        .await
        .map(|(_, r)| r)
        .unwrap_or_default();
    let is_queue = options.workload == "queue";
    let proxy = lock(&cluster).addr_of("proxy");
    if is_queue {
        workload::create_topics(&clients, &namesrv, Duration::from_secs(60)).await?;
        if proxy.is_some() {
            crate::grpc_queue::setup(&clients, &namesrv, Duration::from_secs(60)).await?;
        }
    } else {
        controller_workload::setup(&clients, &controllers, Duration::from_secs(60)).await?;
    }
    eprintln!(
        "cluster ready (brokers {}); running the workload",
        replicas.join(", ")
    );

    let recorder = Recorder::create(&dir.join("history.jsonl"))?;
    let mut rng = Rng::new(options.seed);
    let windows = timeline(kinds, options.time_limit, &mut rng.fork(1));
    recorder.nemesis(
        "plan",
        json!({
            "seed": options.seed,
            "wall_clock_unix_ms": report::wall_clock_ms(),
            "windows": windows.iter().map(|w| json!({
                "kind": w.kind.as_str(),
                "start_s": w.start.as_secs_f64(),
                "duration_s": w.duration.as_secs_f64(),
            })).collect::<Vec<_>>(),
        }),
    );
    let (stop_workers, workers_stopped) = tokio::sync::watch::channel(false);
    let (stop_nemesis, nemesis_stopped) = tokio::sync::watch::channel(false);
    let primary: &[&str] = if is_queue {
        &["send"]
    } else {
        &["read", "elect", "alter"]
    };
    let mut heartbeat_task = None;
    let grpc_task = match (&proxy, is_queue) {
        (Some(proxy), true) => Some(tokio::spawn(crate::grpc_queue::run(
            recorder.clone(),
            crate::grpc_queue::GrpcOptions::new(proxy),
            workers_stopped.clone(),
        ))),
        _ => None,
    };
    let workload_task = if is_queue {
        tokio::spawn(workload::run_queue(
            clients.clone(),
            recorder.clone(),
            namesrv.clone(),
            replicas.clone(),
            QueueOptions::default(),
            workers_stopped.clone(),
        ))
    } else {
        // Heartbeats run until the very end (the final reads need live brokers too).
        heartbeat_task = Some(tokio::spawn(controller_workload::heartbeats(
            clients.clone(),
            controllers.clone(),
            workers_stopped.clone(),
        )));
        tokio::spawn(controller_workload::run(
            clients.clone(),
            recorder.clone(),
            controllers.clone(),
            4,
            options.seed,
            workers_stopped.clone(),
        ))
    };
    let on_fault: Option<Arc<dyn Fn() + Send + Sync>> = if is_queue {
        None
    } else {
        let recorder = recorder.clone();
        let counter = Arc::new(AtomicU64::new(0));
        Some(Arc::new(move || {
            controller_workload::record_possible_auto_elections(&recorder, &counter)
        }))
    };
    let progress_task = tokio::spawn(progress(cluster.clone(), recorder.clone(), workers_stopped));
    let mut nemesis = Nemesis {
        cluster: cluster.clone(),
        clients: clients.clone(),
        recorder: recorder.clone(),
        rng: rng.fork(2),
        on_fault,
        power,
    };
    {
        let nemesis_run = nemesis.run(windows, nemesis_stopped);
        let limit = tokio::time::sleep(options.time_limit);
        tokio::pin!(nemesis_run);
        tokio::pin!(limit);
        tokio::select! {
            result = &mut nemesis_run => {
                result?;
                limit.await;
            }
            _ = &mut limit => {
                let _ = stop_nemesis.send(true);
                nemesis_run.await?;
            }
        }
    }
    eprintln!("time limit reached: healing everything");
    nemesis.heal_all()?;
    let healed = recorder.now();
    let recovered = wait_until(Duration::from_secs(90), || {
        let recorder = recorder.clone();
        async move {
            recorder.events().iter().any(|e| {
                e.time >= healed
                    && primary.contains(&e.f.as_str())
                    && e.kind == Kind::Ok
                    && e.process
                        .client()
                        .is_some_and(|p| p < controller_workload::AUTO_ELECT_PROCESS_BASE)
            })
        }
    })
    .await;
    if recovered {
        eprintln!(
            "recovered {:.1} s after the heal",
            (recorder.now() - healed) as f64 / 1e9
        );
    } else {
        eprintln!("no acknowledged operation within 90 s of the heal: the cluster did not recover");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_workers.send(true);
    if let Err(e) = workload_task.await {
        tracing::error!(error = %e, "the workload task failed");
    }
    if let Some(task) = grpc_task {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "the gRPC workload task failed");
        }
    }
    if is_queue {
        eprintln!("final drain...");
        workload::drain(
            &clients,
            &recorder,
            &namesrv,
            replicas,
            1_000_000,
            Duration::from_millis(workload::INVISIBLE_MS as u64) + Duration::from_secs(8),
            Duration::from_secs(90),
        )
        .await;
    }
    if let Some(task) = heartbeat_task {
        let _ = task.await;
    }
    progress_task.abort();
    recorder.flush();

    let events = recorder.events();
    let stats = report::stats(&events, primary);
    let mut others: std::collections::BTreeMap<String, serde_json::Value> =
        [("recovered".to_string(), json!(recovered))]
            .into_iter()
            .collect();
    let verdicts = if is_queue {
        let queue = queue_check::check(&events);
        let split = split_brain::check(&events);
        others.insert("paths".to_string(), crate::grpc_queue::path_counts(&events));
        let counterexample = report::counterexample(&events, &queue, &split);
        Verdicts {
            valid: queue.valid && split.valid && recovered,
            workload: options.workload.clone(),
            nemesis: options.nemesis.clone(),
            seed: options.seed,
            time_limit_s: options.time_limit.as_secs(),
            queue: Some(queue),
            split_brain: Some(split),
            others,
            faults: {
                let mut impacts = report::run_fault_impacts(&events, &stats, dir);
                let nodes = lock(&cluster).server_names();
                report::mark_writable_sides(&mut impacts, &nodes, options.min_in_sync_replicas);
                impacts
            },
            stats,
            counterexample,
        }
    } else {
        eprintln!("checking linearizability (replica-info model, one key per broker set)...");
        let text = std::fs::read_to_string(dir.join("history.jsonl"))
            .context("cannot read back history.jsonl")?;
        let checked = crate::check_text(
            &text,
            Some(crate::history::Format::Jsonl),
            Some(crate::model::ModelName::ReplicaInfo),
            &CheckOptions {
                time_budget: Duration::from_secs(120),
                ..CheckOptions::default()
            },
        )
        .context("cannot check the controller history")?;
        let verdict = checked.report.verdict;
        let counterexample = checked
            .report
            .counterexample
            .as_ref()
            .and_then(|c| serde_json::to_value(c).ok())
            .map(|c| json!({"checker": "linearizability (replica-info)", "explanation": "no linearization of the operations of one broker set; see the deepest partial linearization", "counterexample": c}));
        others.insert(
            "linearizability".to_string(),
            json!({
                "verdict": format!("{verdict:?}"),
                "operations": checked.report.operations,
                "unknown_outcome": checked.report.unknown_outcome,
                "keys": checked.report.keys,
                "elapsed_s": checked.report.elapsed.as_secs_f64(),
                "unknown_reason": checked.report.unknown_reason,
            }),
        );
        Verdicts {
            valid: verdict == Verdict::Valid && recovered,
            workload: options.workload.clone(),
            nemesis: options.nemesis.clone(),
            seed: options.seed,
            time_limit_s: options.time_limit.as_secs(),
            queue: None,
            split_brain: None,
            others,
            faults: report::run_fault_impacts(&events, &stats, dir),
            stats,
            counterexample,
        }
    };
    let logs: Vec<(String, String)> = lock(&cluster)
        .log_paths()
        .into_iter()
        .map(|(name, path)| {
            let rel = path
                .strip_prefix(dir)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| path.display().to_string());
            (name, rel)
        })
        .collect();
    std::fs::write(
        dir.join("verdicts.json"),
        serde_json::to_string_pretty(&verdicts).context("cannot encode the verdicts")?,
    )
    .context("cannot write verdicts.json")?;
    std::fs::write(
        dir.join("index.html"),
        report::html(
            &events,
            &verdicts,
            if is_queue { &["send", "pop"] } else { primary },
            &logs,
        ),
    )
    .context("cannot write index.html")?;
    Ok(verdicts)
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
