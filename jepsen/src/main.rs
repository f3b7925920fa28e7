//! `rocketraft-jepsen`: Jepsen-style testing for Rocketraft.
//! - `check`: the linearizability checker on a history file. Exit codes: 0 valid, 1 invalid,
//!   2 unknown (the time budget or the memory bound ran out), 3 the input could not be read or
//!   checked (missing file, malformed history, operations the model does not know, bad
//!   arguments).
//! - `run`: a fault-injecting run against real `rocketraft` processes in network namespaces
//!   (root). Exit 0 valid, 1 invalid, 2 unknown (the linearizability checker ran out of
//!   budget and nothing else failed), 3 when the harness itself failed (cluster not ready,
//!   missing tools, interrupted).
//!
//! - `matrix`: `run` for every workload under every nemesis on its own and under `all`, a few
//!   seeds each, into one table (`matrix.md`, `matrix.json`) and the runs' reports
//!   ([`matrix`]). Exit 1 if any verdict is INVALID, 3 if a cell could not run, 2 if one is
//!   UNKNOWN.
//!
//! With the default `--strategy race`, a model with versioned states (replica-info) is first
//! searched version by version (`linearizability::versions`); otherwise, or when that search
//! does not apply, the WGL search runs in both orders on two threads and the first answer wins,
//! so an invalid history's counterexample may differ between runs. `--strategy real-time` (or
//! `required-first`) asks for the WGL search alone in that order, which is reproducible.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rocketraft_jepsen::history::Format;
use rocketraft_jepsen::linearizability::{
    CheckOptions, Counterexample, OpReport, Strategy, Verdict,
};
use rocketraft_jepsen::model::{ModelName, UnknownModel};
use rocketraft_jepsen::report::FaultTableError;
use rocketraft_jepsen::{check_text, Checked};

mod matrix;

/// Exit code when the input cannot be read or checked.
const EXIT_UNREADABLE: u8 = 3;

#[derive(Parser)]
#[command(
    name = "rocketraft-jepsen",
    version,
    about = "Jepsen-style checking for Rocketraft"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Checks a history for linearizability. Exit 0 valid, 1 invalid, 2 unknown, 3 unreadable.
    Check {
        /// The sequential model: cas-register, kv or replica-info. Inferred from the operations'
        /// names when left out.
        #[arg(long, value_parser = parse_model)]
        model: Option<ModelName>,
        /// Time budget; past it the verdict is "unknown".
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
        /// Memory the search may remember configurations in; past it the verdict is "unknown".
        #[arg(long, default_value_t = 2048)]
        max_memory_mib: usize,
        /// auto, jsonl, edn, etcd-log or porcupine-kv. In etcd logs a failed cas means "the
        /// register did not hold the expected value" (Porcupine's reading); elsewhere failed
        /// operations did not happen (Jepsen's).
        #[arg(long, default_value = "auto")]
        format: String,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
        /// Search: race (the per-version search for a versioned model, else the WGL search in
        /// both orders on two threads, first answer wins), or the WGL search alone in the
        /// order real-time or required-first.
        #[arg(long, default_value = "race")]
        strategy: String,
        /// The history file.
        file: PathBuf,
    },
    /// Runs a workload against a real cluster in network namespaces while a nemesis injects
    /// faults, then checks the history and writes a report (needs root).
    Run {
        /// queue (send / POP+ack over Remoting and through the gRPC proxy, FIFO groups, final
        /// drain), controller
        /// (ApplyBrokerId/RegisterBroker, ElectMaster, AlterSyncStateSet, GetReplicaInfo checked
        /// for linearizability) or raft-kv (read / write / cas on a key-value store on the Raft
        /// library, checked for linearizability per key).
        #[arg(long, default_value = "queue")]
        workload: String,
        /// none, all, or a comma-separated list of partition, partition-master,
        /// partition-controller, partition-ring, partition-bridge, kill, pause, loss, clock,
        /// transfer, latency (all = these but the four aimed partitions), and the controller
        /// kinds: pause-controller (SIGSTOP of the controller leader), kill-controller (kill -9
        /// of a random controller, restarted at the window's end), transfer-controller (Raft
        /// leadership transfer to another controller), flip-flop (leadership L1 -> L2 and back to L1 within 2 s), kill-master, kill-namesrv,
        /// kill-proxy (kill -9 of the master of a random broker set, of a random NameServer,
        /// of a random proxy; restarted at the window's end), clock-step
        /// (the wall clock of a running controller or broker steps by 60-300 s either way
        /// through its libfaketime file, and back), power-loss (the brokers' stores and the
        /// controllers' data live on LazyFs FUSE mounts served by the harness; a node loses
        /// every byte it did not sync and every file whose directory it did not sync, is killed
        /// -9 and restarted at the window's end; needs /dev/fuse, not in all).
        #[arg(long, default_value = "partition,kill")]
        nemesis: String,
        /// Seconds of workload under faults (healing, recovery and the drain come after).
        #[arg(long, default_value_t = 60)]
        time_limit: u64,
        /// Seed of the nemesis timeline [default: from the clock, printed].
        #[arg(long)]
        seed: Option<u64>,
        /// Report directory [default: $TMPDIR/rocketraft-jepsen/<workload>-<nemesis>-<seed>-<pid>].
        #[arg(long)]
        out: Option<PathBuf>,
        /// The rocketraft binary [default: beside this one, or $CARGO_TARGET_DIR/{release,debug}].
        /// Not used by raft-kv, whose nodes run rocketraft-raft-kv (built beside this one).
        #[arg(long = "bin")]
        bin: Option<PathBuf>,
        /// Also start a gRPC proxy in its own namespace (the queue workload always starts one
        /// and sends and receives through it too).
        #[arg(long)]
        with_proxy: bool,
        /// Replicas (master included) that must hold a message before a send is acknowledged.
        #[arg(long, default_value_t = 2)]
        min_in_sync_replicas: usize,
        /// Start the brokers with ROCKETRAFT_UNSAFE_ACK_BEFORE_REPLICATION=1 (a deliberately
        /// broken build: the harness must then find lost messages).
        #[arg(long)]
        unsafe_ack_before_replication: bool,
        /// Start the controllers with `stale_reads = true` (replica info served from local
        /// memory, a deliberately broken configuration the controller workload must catch).
        #[arg(long)]
        unsafe_controller_stale_reads: bool,
        /// Start the raft-kv members with --unsafe-stale-reads (reads answered from local
        /// memory, a deliberately broken build the raft-kv workload must catch).
        #[arg(long)]
        unsafe_raft_kv_stale_reads: bool,
        /// Keep the nodes' data directories after a valid run (always kept after an invalid one).
        #[arg(long)]
        keep_data: bool,
        /// Turn on ACL 2.0 (authentication and authorization) on every NameServer and broker:
        /// the harness's clients and the proxy sign every Remoting request as a generated Super
        /// user, so the run also checks that signed traffic survives the faults.
        #[arg(long)]
        auth: bool,
        /// Broker sets under the one controller quorum (`broker-a`, `broker-b`, ...; queue and
        /// controller workloads): the queue workload's topics get queues on every set's master,
        /// sends spread over the sets and leave a set whose send failed aside for a while,
        /// consumers receive from every set, faults aimed at a master hit any set's.
        #[arg(long, default_value_t = 1)]
        sets: usize,
        /// Replicas per broker set (master included).
        #[arg(long, default_value_t = 3)]
        replicas: usize,
        /// NameServers every broker registers with and every client fails over among.
        #[arg(long, default_value_t = 1)]
        namesrvs: usize,
        /// Proxies (when the run has a proxy): the gRPC workers spread over them and move to
        /// the next one after a transport error.
        #[arg(long, default_value_t = 1)]
        proxies: usize,
    },
    /// Prints the unavailability per fault window of a run from its verdicts.json (kept runs
    /// in jepsen/runs/ included), recomputed with the current charging rule.
    Faults {
        /// Markdown table rows instead of the plain summary lines.
        #[arg(long)]
        markdown: bool,
        /// The run's verdicts.json.
        file: PathBuf,
    },
    /// Runs every workload under every nemesis on its own and under `all`, a few seeds each
    /// (one `run` per cell, needs root), and writes matrix.md / matrix.json and every run's
    /// report under --out. Exit 1 if any verdict is INVALID, 3 if a cell could not run (no
    /// verdict, or stopped by the guard), 2 if one is UNKNOWN.
    Matrix {
        /// Comma-separated workloads [default: queue,controller,raft-kv].
        #[arg(long, value_delimiter = ',')]
        workloads: Vec<String>,
        /// Comma-separated nemeses [default: each nemesis of `run` on its own, then all].
        #[arg(long, value_delimiter = ',')]
        nemeses: Vec<String>,
        /// Seeds per cell: --first-seed, --first-seed + 1, ...
        #[arg(long, default_value_t = 2)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 1)]
        first_seed: u64,
        /// Seconds of workload under faults per run.
        #[arg(long, default_value_t = 300)]
        time_limit: u64,
        /// Wall-clock limit of one run (start-up, recovery, drain and checks included); past
        /// it the run gets SIGTERM [default: time limit + 900 s].
        #[arg(long)]
        guard_secs: Option<u64>,
        /// Output directory: the table and one report directory per cell.
        #[arg(long)]
        out: PathBuf,
        /// Skip cells whose report already has a verdict (cells that failed run again).
        #[arg(long)]
        resume: bool,
        /// The rocketraft binary, passed to every run.
        #[arg(long = "bin")]
        bin: Option<PathBuf>,
    },
}

fn parse_model(text: &str) -> Result<ModelName, UnknownModel> {
    text.parse()
}

/// A `--strategy` that is none of race, real-time, required-first.
#[derive(Debug, thiserror::Error)]
#[error("unknown strategy {0:?} (race, real-time, required-first)")]
struct UnknownStrategy(String);

/// `None` for `race` (the per-version search first, else both WGL orders on two threads).
fn parse_strategy(text: &str) -> Result<Option<Strategy>, UnknownStrategy> {
    match text {
        "race" => Ok(None),
        "real-time" => Ok(Some(Strategy::RealTime)),
        "required-first" => Ok(Some(Strategy::RequiredFirst)),
        other => Err(UnknownStrategy(other.to_string())),
    }
}

/// Why `rocketraft-jepsen faults` has no table for a file.
#[derive(Debug, thiserror::Error)]
enum FaultsError {
    #[error("{0}")]
    Read(std::io::Error),
    #[error("not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error(transparent)]
    Table(FaultTableError),
}

fn init_tracing() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    "warn,rocketraft_remoting=error,rocketraft_jepsen::matrix=info",
                )
            }),
        )
        .init();
}

/// The seed of a run without `--seed`: the Unix time in seconds.
fn default_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1)
}

/// `rocketraft-jepsen run`: the summary on stdout; exit 0 valid, 1 invalid, 2 unknown, 3 when
/// the run could not be made.
fn run_harness(options: rocketraft_jepsen::run::RunOptions) -> ExitCode {
    match rocketraft_jepsen::run::run(options) {
        Ok((verdicts, dir)) => {
            print!(
                "{}",
                rocketraft_jepsen::report::summary(&verdicts, &dir.display().to_string())
            );
            match rocketraft_jepsen::report::verdict_label(&verdicts) {
                "VALID" => ExitCode::SUCCESS,
                "UNKNOWN" => ExitCode::from(2),
                _ => ExitCode::from(1),
            }
        }
        Err(error) => {
            eprintln!("rocketraft-jepsen run: {error:#}");
            ExitCode::from(EXIT_UNREADABLE)
        }
    }
}

/// `rocketraft-jepsen faults`: the per-fault table of a `verdicts.json`.
fn print_faults(markdown: bool, file: &Path) -> ExitCode {
    let table = std::fs::read(file)
        .map_err(FaultsError::Read)
        .and_then(|b| serde_json::from_slice(&b).map_err(FaultsError::NotJson))
        .and_then(|v| {
            rocketraft_jepsen::report::per_fault_table(&v, markdown).map_err(FaultsError::Table)
        });
    match table {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!(
                "rocketraft-jepsen faults: cannot read {}: {error}",
                file.display()
            );
            ExitCode::from(EXIT_UNREADABLE)
        }
    }
}

fn main() -> ExitCode {
    init_tracing();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // clap exits 2 on a usage error, which here means "unknown": use 3 instead.
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(EXIT_UNREADABLE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Check {
            model,
            timeout_secs,
            max_memory_mib,
            format,
            json,
            strategy,
            file,
        } => {
            let options = CheckOptions {
                time_budget: Duration::from_secs(timeout_secs),
                max_cache_bytes: max_memory_mib.saturating_mul(1 << 20),
                strategy: None,
            };
            run_check(model, options, &format, json, &strategy, file)
        }
        Command::Run {
            workload,
            nemesis,
            time_limit,
            seed,
            out,
            bin,
            with_proxy,
            min_in_sync_replicas,
            unsafe_ack_before_replication,
            unsafe_controller_stale_reads,
            unsafe_raft_kv_stale_reads,
            keep_data,
            auth,
            sets,
            replicas,
            namesrvs,
            proxies,
        } => {
            let seed = seed.unwrap_or_else(default_seed);
            let options = rocketraft_jepsen::run::RunOptions {
                workload,
                nemesis,
                time_limit: Duration::from_secs(time_limit),
                seed,
                out,
                bin,
                with_proxy,
                min_in_sync_replicas,
                unsafe_ack_before_replication,
                unsafe_controller_stale_reads,
                unsafe_raft_kv_stale_reads,
                keep_data,
                auth,
                scale: rocketraft_jepsen::cluster::Scale {
                    sets,
                    replicas,
                    namesrvs,
                    proxies,
                },
            };
            run_harness(options)
        }
        Command::Faults { markdown, file } => print_faults(markdown, &file),
        Command::Matrix {
            workloads,
            nemeses,
            seeds,
            first_seed,
            time_limit,
            guard_secs,
            out,
            resume,
            bin,
        } => {
            let or_all = |given: Vec<String>, all: &[&str]| {
                if given.is_empty() {
                    all.iter().map(|s| s.to_string()).collect()
                } else {
                    given
                }
            };
            let harness = match std::env::current_exe() {
                Ok(exe) => exe,
                Err(error) => {
                    eprintln!("rocketraft-jepsen matrix: cannot find this executable: {error}");
                    return ExitCode::from(EXIT_UNREADABLE);
                }
            };
            let options = matrix::MatrixOptions {
                workloads: or_all(workloads, &matrix::WORKLOADS),
                nemeses: or_all(nemeses, &matrix::NEMESES),
                seeds: (first_seed..first_seed.saturating_add(seeds)).collect(),
                time_limit: Duration::from_secs(time_limit),
                guard: Duration::from_secs(guard_secs.unwrap_or(time_limit.saturating_add(900))),
                out,
                resume,
                bin,
                harness,
                command: std::iter::once("rocketraft-jepsen".to_string())
                    .chain(std::env::args().skip(1))
                    .collect::<Vec<_>>()
                    .join(" "),
            };
            match matrix::run(&options) {
                Ok(rows) => {
                    print!("{}", matrix::markdown(&rows, &options.command));
                    ExitCode::from(matrix::exit_code(&rows))
                }
                Err(error) => {
                    eprintln!("rocketraft-jepsen matrix: {error:#}");
                    ExitCode::from(EXIT_UNREADABLE)
                }
            }
        }
    }
}

fn run_check(
    model: Option<ModelName>,
    options: CheckOptions,
    format: &str,
    json: bool,
    strategy: &str,
    file: PathBuf,
) -> ExitCode {
    let strategy = match parse_strategy(strategy) {
        Ok(strategy) => strategy,
        Err(error) => return unreadable(&file, &error.to_string()),
    };
    let format = match format {
        "auto" => None,
        other => match other.parse::<Format>() {
            Ok(format) => Some(format),
            Err(error) => return unreadable(&file, &error.to_string()),
        },
    };
    let text = match std::fs::read(&file) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(_) => return unreadable(&file, "not UTF-8 text"),
        },
        Err(error) => return unreadable(&file, &error.to_string()),
    };
    let options = CheckOptions {
        strategy,
        ..options
    };
    let checked = match check_text(&text, format, model, &options) {
        Ok(checked) => checked,
        Err(error) => return unreadable(&file, &error.to_string()),
    };
    if json {
        print_json(&file, &checked);
    } else {
        print_human(&file, &checked);
    }
    // Exit codes 0..=2 fit a u8.
    ExitCode::from(checked.report.verdict.exit_code() as u8)
}

fn unreadable(file: &std::path::Path, message: &str) -> ExitCode {
    eprintln!(
        "rocketraft-jepsen: cannot check {}: {message}",
        file.display()
    );
    ExitCode::from(EXIT_UNREADABLE)
}

fn print_json(file: &std::path::Path, checked: &Checked) {
    let value = serde_json::json!({
        "file": file.display().to_string(),
        "format": checked.format.name(),
        "model": checked.model.as_str(),
        "events": checked.events,
        "skipped": checked.skipped,
        "incomplete": checked.pair_stats.incomplete,
        "superseded": checked.pair_stats.superseded,
        "report": checked.report,
    });
    println!("{value}");
}

fn verdict_word(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Valid => "VALID (linearizable)",
        Verdict::Invalid => "INVALID (not linearizable)",
        Verdict::Unknown => "UNKNOWN",
    }
}

fn op_line(op: &OpReport) -> String {
    format!(
        "op {} (process {}, {}): {}",
        op.index, op.process, op.outcome, op.description
    )
}

fn print_counterexample(counterexample: &Counterexample) {
    let key = counterexample
        .key
        .as_ref()
        .map_or(String::new(), |k| format!(" in key {k:?}"));
    println!("cannot linearize{key}: {}", op_line(&counterexample.op));
    println!(
        "deepest partial linearization: {} operations{}",
        counterexample.linearized,
        if counterexample.linearized > counterexample.tail.len() {
            format!(", the last {}:", counterexample.tail.len())
        } else {
            ":".to_string()
        }
    );
    for step in &counterexample.tail {
        println!("  {}  => {}", op_line(&step.op), step.state_after);
    }
    println!("state there: {}", counterexample.state);
    if !counterexample.pending.is_empty() {
        println!("also pending there (each was tried; none leads to a full linearization):");
        for op in &counterexample.pending {
            println!("  {}", op_line(op));
        }
    }
}

fn print_human(file: &std::path::Path, checked: &Checked) {
    let report = &checked.report;
    println!("{}: {}", file.display(), verdict_word(report.verdict));
    println!(
        "{} operations checked ({} of unknown outcome), {} dropped, {} key(s); model {}, format {}",
        report.operations,
        report.unknown_outcome,
        report.dropped,
        report.keys,
        checked.model,
        checked.format.name()
    );
    println!(
        "{:.3} s, {} configurations explored",
        report.elapsed.as_secs_f64(),
        report.configurations
    );
    if let Some(reason) = &report.unknown_reason {
        println!("unknown: {reason}");
    }
    if let Some(counterexample) = &report.counterexample {
        print_counterexample(counterexample);
    }
}
