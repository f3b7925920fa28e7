//! The lifecycle every workload of `rocketraft-jepsen run` shares, written once: the tools,
//! the namespaces of a crashed run and the report directory; the cluster, the harness inside
//! the client namespace, and the teardown on exit, error, Ctrl-C and SIGTERM (every process
//! stopped, the namespaces and LazyFs mounts removed, the nodes' data removed after a valid
//! run unless kept); and inside, the seeded nemesis plan, the workers under the nemesis until
//! the time limit, the heal, the recovery measurement, the final phase, the checks and the
//! report (`history.jsonl`, `verdicts.json`, `index.html`). Each workload brings its specifics
//! through [`Workload`]: the queue and controller workloads in [`crate::run`], raft-kv in
//! [`crate::kv_workload`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value as Json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::{Clients, Cluster};
use crate::linearizability::{CheckOptions, Verdict};
use crate::model::ModelName;
use crate::nemesis::{lock, timeline, FaultKind, Nemesis, PowerMounts, Window};
use crate::nodes::{wait_until, Role};
use crate::queue_check::QueueReport;
use crate::record::{Event, Kind, Recorder};
use crate::report::{self, FaultImpact, Verdicts};
use crate::rng::Rng;
use crate::run::{progress, RunOptions};
use crate::split_brain::SplitBrainReport;
use crate::{net, Checked};

/// The brokers' LazyFs mounts of a power-loss run, shared with the nemesis.
pub(crate) type Power = Arc<Mutex<PowerMounts>>;

/// A worker task, with what to log if it failed.
pub(crate) type Task = (&'static str, JoinHandle<()>);

/// What a workload's checkers found in the history ([`Workload::check`]); the lifecycle adds
/// the recovery to it.
pub(crate) struct Findings {
    pub valid: bool,
    pub queue: Option<QueueReport>,
    pub split_brain: Option<SplitBrainReport>,
    pub others: BTreeMap<String, Json>,
    pub counterexample: Option<Json>,
}

/// What a workload brings to the shared lifecycle, in the order the lifecycle asks for it.
pub(crate) trait Workload: Sized {
    /// The node data directories removed after a valid run (the logs stay).
    const DATA_DIRS: &'static [&'static str];
    /// The operations that count for availability and recovery.
    const PRIMARY: &'static [&'static str];
    /// Client processes from this id on are not the workers' (final reads, automatic
    /// elections): recovery is the workers' first acknowledged operation after the heal.
    const WORKERS_BELOW: u64;
    /// The operations charted in the HTML report.
    const CHARTED: &'static [&'static str] = Self::PRIMARY;

    /// Builds the network and the node directories (starts nothing), and the power-loss
    /// mounts when the run has that nemesis: by default the RocketMQ cluster
    /// ([`crate::run::build_cluster`]).
    fn build(
        options: &RunOptions,
        kinds: &[FaultKind],
        binary: PathBuf,
        dir: &Path,
    ) -> anyhow::Result<(Cluster, Option<Power>)> {
        crate::run::build_cluster(options, kinds, binary, dir)
    }

    /// Starts the nodes and waits until the cluster serves; called inside the client namespace
    /// before the history begins.
    async fn start(
        cluster: &Arc<Mutex<Cluster>>,
        options: &RunOptions,
        dir: &Path,
    ) -> anyhow::Result<Self>;

    /// Spawns the workers, which run until `stop` fires; returns the tasks in the order they
    /// are awaited.
    fn spawn(
        &mut self,
        recorder: &Recorder,
        options: &RunOptions,
        stop: &watch::Receiver<bool>,
    ) -> Vec<Task>;

    /// Called by the nemesis after every fault starts.
    fn on_fault(&self, _recorder: &Recorder) -> Option<Arc<dyn Fn() + Send + Sync>> {
        None
    }

    /// The clients the nemesis asks for leaders and masters.
    fn nemesis_clients(&self) -> Clients;

    /// After the workers stopped, before the history is closed (final drain, final reads).
    async fn finish(&mut self, _recorder: &Recorder) {}

    /// The checkers' findings on the complete history.
    fn check(&self, events: &[Event], options: &RunOptions, dir: &Path)
        -> anyhow::Result<Findings>;

    /// Adds what the workload knows to the fault windows' impacts.
    fn mark_faults(
        &self,
        _faults: &mut [FaultImpact],
        _cluster: &Mutex<Cluster>,
        _options: &RunOptions,
    ) {
    }
}

/// What the run's faults need of a built cluster before anything starts: the relays of the
/// latency nemesis, and the clock files of the clock-step nemesis on the nodes of `clock_roles`.
pub(crate) fn prepare_faults(
    cluster: &mut Cluster,
    kinds: &[FaultKind],
    clock_roles: &[Role],
) -> anyhow::Result<()> {
    if kinds.contains(&FaultKind::Latency) {
        cluster.add_relays()?;
    }
    if kinds.contains(&FaultKind::ClockStep) {
        cluster.enable_clock_files(clock_roles)?;
    }
    Ok(())
}

/// The report directory: `--out`, or one per run under the temporary directory.
fn report_dir(options: &RunOptions) -> PathBuf {
    match &options.out {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!(
            "rocketraft-jepsen/{}-{}-{}-{}",
            options.workload,
            options.nemesis.replace(',', "+"),
            options.seed,
            std::process::id()
        )),
    }
}

/// Checks the tools, removes the namespaces of a crashed run, creates the report directory
/// and says what runs.
fn prepare(options: &RunOptions, binary: &Path) -> anyhow::Result<PathBuf> {
    net::ensure_tools()?;
    let stale = net::clean_stale()?;
    if !stale.is_empty() {
        eprintln!("removed {} namespace(s) of a crashed run", stale.len());
    }
    let dir = report_dir(options);
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
    Ok(dir)
}

/// Runs workload `W` from start to end; `Ok` holds the verdicts and the report directory.
/// Everything started is torn down on the way out, on error, and on Ctrl-C / SIGTERM.
pub(crate) fn run<W: Workload>(
    options: &RunOptions,
    kinds: &[FaultKind],
    binary: PathBuf,
) -> anyhow::Result<(Verdicts, PathBuf)> {
    let dir = prepare(options, &binary)?;
    // Declared before the cluster: on an unwind the processes die before the mounts go.
    let (cluster, power) = W::build(options, kinds, binary, &dir)?;
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
                result = drive::<W>(cluster.clone(), power.clone(), options, kinds, &dir) => result,
                _ = tokio::signal::ctrl_c() => bail!("interrupted (Ctrl-C): tearing down"),
                _ = term.recv() => bail!("terminated (SIGTERM): tearing down"),
            }
        });
        runtime.shutdown_timeout(Duration::from_secs(2));
        outcome
    });
    lock(&cluster).shutdown();
    if let Some(power) = power {
        unmount(power);
    }
    let verdicts = result?;
    if !options.keep_data && verdicts.valid {
        remove_data(&lock(&cluster), W::DATA_DIRS);
    }
    Ok((verdicts, dir))
}

/// Every process is gone: unmounts the LazyFs mounts (the last reference to them) and says
/// what the power cuts dropped.
fn unmount(power: Power) {
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

/// Removes the data directories `data_dirs` of every node (the logs stay).
fn remove_data(cluster: &Cluster, data_dirs: &[&str]) {
    for node in &cluster.nodes {
        for data in data_dirs {
            let path = node.dir.join(data);
            if path.exists() {
                if let Err(e) = std::fs::remove_dir_all(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove node data");
                }
            }
        }
    }
}

/// Inside the client namespace: start, run the workers under the nemesis until the time
/// limit, heal, measure the recovery, finish, check, write the report.
async fn drive<W: Workload>(
    cluster: Arc<Mutex<Cluster>>,
    power: Option<Power>,
    options: &RunOptions,
    kinds: &[FaultKind],
    dir: &Path,
) -> anyhow::Result<Verdicts> {
    let mut workload = W::start(&cluster, options, dir).await?;
    let recorder = Recorder::create(&dir.join("history.jsonl"))?;
    let mut rng = Rng::new(options.seed);
    let windows = timeline(kinds, options.time_limit, &mut rng.fork(1));
    record_plan(&recorder, options.seed, &windows);
    let (stop_workers, workers_stopped) = watch::channel(false);
    let tasks = workload.spawn(&recorder, options, &workers_stopped);
    let on_fault = workload.on_fault(&recorder);
    let progress_task = tokio::spawn(progress(cluster.clone(), recorder.clone(), workers_stopped));
    let mut nemesis = Nemesis {
        cluster: cluster.clone(),
        clients: workload.nemesis_clients(),
        recorder: recorder.clone(),
        rng: rng.fork(2),
        on_fault,
        power,
    };
    run_nemesis(&mut nemesis, windows, options.time_limit).await?;
    eprintln!("time limit reached: healing everything");
    nemesis.heal_all()?;
    let recovered = wait_recovered(&recorder, W::PRIMARY, W::WORKERS_BELOW).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_workers.send(true);
    for (what, task) in tasks {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "{what}");
        }
    }
    workload.finish(&recorder).await;
    progress_task.abort();
    recorder.flush();

    let events = recorder.events();
    let stats = report::stats(&events, W::PRIMARY);
    let mut findings = workload.check(&events, options, dir)?;
    findings
        .others
        .insert("recovered".to_string(), json!(recovered));
    let mut faults = report::run_fault_impacts(&events, &stats, dir);
    workload.mark_faults(&mut faults, &cluster, options);
    let verdicts = Verdicts {
        valid: findings.valid && recovered,
        workload: options.workload.clone(),
        nemesis: options.nemesis.clone(),
        seed: options.seed,
        time_limit_s: options.time_limit.as_secs(),
        queue: findings.queue,
        split_brain: findings.split_brain,
        others: findings.others,
        faults,
        stats,
        counterexample: findings.counterexample,
    };
    write_report(&cluster, dir, &events, &verdicts, W::CHARTED)?;
    Ok(verdicts)
}

/// Waits up to `timeout` for `check` ([`wait_until`]); if it never holds, fails with "`failure`
/// within N s; see `dir`/nodes/`logs`/node.log" (the logs to read: `logs` is a glob of node
/// names).
pub(crate) async fn wait_ready<F, Fut>(
    timeout: Duration,
    check: F,
    failure: &str,
    dir: &Path,
    logs: &str,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    if !wait_until(timeout, check).await {
        bail!(
            "{failure} within {} s; see {}/nodes/{logs}/node.log",
            timeout.as_secs(),
            dir.display()
        );
    }
    Ok(())
}

/// Records the nemesis plan: the seed, the wall clock and every fault window.
fn record_plan(recorder: &Recorder, seed: u64, windows: &[Window]) {
    recorder.nemesis(
        "plan",
        json!({
            "seed": seed,
            "wall_clock_unix_ms": report::wall_clock_ms(),
            "windows": windows.iter().map(|w| json!({
                "kind": w.kind.as_str(),
                "start_s": w.start.as_secs_f64(),
                "duration_s": w.duration.as_secs_f64(),
            })).collect::<Vec<_>>(),
        }),
    );
}

/// Runs the nemesis's plan until the time limit: a plan that ends early waits for the limit,
/// one still running at the limit is stopped.
async fn run_nemesis(
    nemesis: &mut Nemesis,
    windows: Vec<Window>,
    time_limit: Duration,
) -> anyhow::Result<()> {
    let (stop_nemesis, nemesis_stopped) = watch::channel(false);
    let nemesis_run = nemesis.run(windows, nemesis_stopped);
    let limit = tokio::time::sleep(time_limit);
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
    Ok(())
}

/// Waits up to 90 s for a worker's first acknowledged `primary` operation after the heal
/// (now), and says how long it took.
async fn wait_recovered(
    recorder: &Recorder,
    primary: &'static [&'static str],
    workers_below: u64,
) -> bool {
    let healed = recorder.now();
    let recovered = wait_until(Duration::from_secs(90), || {
        let recorder = recorder.clone();
        async move {
            recorder.events().iter().any(|e| {
                e.time >= healed
                    && primary.contains(&e.f.as_str())
                    && e.kind == Kind::Ok
                    && e.process.client().is_some_and(|p| p < workers_below)
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
    recovered
}

/// Writes `verdicts.json` and `index.html` (charting `charted`, linking the node logs).
fn write_report(
    cluster: &Mutex<Cluster>,
    dir: &Path,
    events: &[Event],
    verdicts: &Verdicts,
    charted: &[&str],
) -> anyhow::Result<()> {
    let logs: Vec<(String, String)> = lock(cluster)
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
        serde_json::to_string_pretty(verdicts).context("cannot encode the verdicts")?,
    )
    .context("cannot write verdicts.json")?;
    std::fs::write(
        dir.join("index.html"),
        report::html(events, verdicts, charted, &logs),
    )
    .context("cannot write index.html")?;
    Ok(())
}

/// Reads the history back from `dir` and checks it for linearizability with `model` (a
/// 120 s budget); `what` names the history in the error.
fn check_linearizable(dir: &Path, model: ModelName, what: &str) -> anyhow::Result<Checked> {
    let text = std::fs::read_to_string(dir.join("history.jsonl"))
        .context("cannot read back history.jsonl")?;
    crate::check_text(
        &text,
        Some(crate::history::Format::Jsonl),
        Some(model),
        &CheckOptions {
            time_budget: Duration::from_secs(120),
            ..CheckOptions::default()
        },
    )
    .with_context(|| format!("cannot check the {what} history"))
}

/// The findings of a linearizability check of the history with `model` ([`check_linearizable`]):
/// its verdict, its `linearizability` entry of the verdicts' `others`, and its counterexample
/// under `checker` with `explanation`; the check itself for more.
pub(crate) fn linearizability_findings(
    dir: &Path,
    model: ModelName,
    what: &str,
    checker: &str,
    explanation: &str,
) -> anyhow::Result<(Findings, Checked)> {
    let checked = check_linearizable(dir, model, what)?;
    let report = &checked.report;
    let counterexample = report
        .counterexample
        .as_ref()
        .and_then(|c| serde_json::to_value(c).ok())
        .map(|c| json!({"checker": checker, "explanation": explanation, "counterexample": c}));
    let summary = json!({
        "verdict": format!("{:?}", report.verdict),
        "operations": report.operations,
        "unknown_outcome": report.unknown_outcome,
        "keys": report.keys,
        "elapsed_s": report.elapsed.as_secs_f64(),
        "unknown_reason": report.unknown_reason,
    });
    let findings = Findings {
        valid: report.verdict == Verdict::Valid,
        queue: None,
        split_brain: None,
        others: BTreeMap::from([("linearizability".to_string(), summary)]),
        counterexample,
    };
    Ok((findings, checked))
}
