//! `rocketraft-jepsen matrix`: every workload under every nemesis on its own and under `all`,
//! a few seeds each, one `rocketraft-jepsen run` per cell (a child process of this binary, so
//! each run enters its own network namespaces and tears them down), and one table of the
//! results: `matrix.md` and `matrix.json` in the output directory, beside each cell's report
//! directory `<workload>-<nemesis>-seed<seed>/`.
//!
//! Per cell the table gives the operations, the verdict, the fault windows (and how many the
//! nemesis skipped for want of a target or failed to inject), the longest stretch without
//! an acknowledged operation, and the recovery after the final heal. Both are measured on the
//! run's `history.jsonl` exactly as the run measures availability: acknowledged operations of
//! the workload's primary kinds ([`primary_ops`]) by its workers (not the final reads or the
//! recorded automatic elections), from the workers' first invocation; the recovery is the
//! first such acknowledgement at or after the last `heal-all`. When the history is gone (a
//! pruned report) the row kept in `row.json` is used, else the run's `verdicts.json`, which
//! only lists gaps of 2 s or more: then a run without one says "< 2" rather than a number.
//!
//! A cell runs under a wall-clock guard: past it the run gets SIGTERM (it tears down), and
//! SIGKILL 60 s later. `--resume` skips every cell whose report already has a
//! `verdicts.json`; a cell that failed or timed out is run again (its directory is emptied
//! first). Exit 1 if any verdict is INVALID, else 3 if a cell could not run (ERROR, TIMEOUT),
//! else 2 if one is UNKNOWN, else 0.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rocketraft_jepsen::record::{read_events, Event, Kind};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

/// The workloads, in the order they run.
pub const WORKLOADS: [&str; 3] = ["queue", "controller", "raft-kv"];

/// Every nemesis of `rocketraft-jepsen run` on its own, then `all`.
pub const NEMESES: [&str; 18] = [
    "partition",
    "partition-master",
    "partition-controller",
    "partition-ring",
    "partition-bridge",
    "kill",
    "pause",
    "loss",
    "clock",
    "transfer",
    "latency",
    "pause-controller",
    "kill-controller",
    "transfer-controller",
    "flip-flop",
    "clock-step",
    "power-loss",
    "all",
];

/// A run's report directory with this file has a verdict.
const VERDICTS: &str = "verdicts.json";
/// The row of a cell, kept beside its report (survives pruning `history.jsonl`).
const ROW: &str = "row.json";
/// How a cell's run ended (exit status, guard), written by the matrix.
const OUTCOME: &str = "outcome.json";
/// Grace between the guard's SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(60);

/// The operations that count for availability and recovery, and the client process ids from
/// which on operations are not the workers' (the values of the workloads' `PRIMARY` and
/// `WORKERS_BELOW` in `run.rs` and `kv_workload.rs`).
pub fn primary_ops(workload: &str) -> Option<(&'static [&'static str], u64)> {
    match workload {
        "queue" => Some((
            &["send"],
            rocketraft_jepsen::controller_workload::AUTO_ELECT_PROCESS_BASE,
        )),
        "controller" => Some((
            &["read", "elect", "alter"],
            rocketraft_jepsen::controller_workload::AUTO_ELECT_PROCESS_BASE,
        )),
        "raft-kv" => Some((
            &rocketraft_jepsen::kv_workload::PRIMARY,
            rocketraft_jepsen::kv_workload::FINAL_PROCESS_BASE,
        )),
        _ => None,
    }
}

/// One cell of the matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub workload: String,
    pub nemesis: String,
    pub seed: u64,
}

impl Cell {
    /// The cell's report directory under the matrix's output directory.
    pub fn dir_name(&self) -> String {
        format!("{}-{}-seed{}", self.workload, self.nemesis, self.seed)
    }
}

/// The cells of a selection, workload by workload, nemesis by nemesis, seed by seed.
pub fn cells(workloads: &[String], nemeses: &[String], seeds: &[u64]) -> Vec<Cell> {
    let mut out = Vec::new();
    for workload in workloads {
        for nemesis in nemeses {
            for &seed in seeds {
                out.push(Cell {
                    workload: workload.clone(),
                    nemesis: nemesis.clone(),
                    seed,
                });
            }
        }
    }
    out
}

/// What the history says about availability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Availability {
    /// The longest stretch without an acknowledged primary operation of a worker, from the
    /// workers' first invocation to their last event (seconds).
    pub longest_gap_s: f64,
    /// Where it was (seconds from the start of the history).
    pub gap_from_s: f64,
    pub gap_to_s: f64,
    /// From the last `heal-all` to the workers' first acknowledgement at or after it; `None`
    /// when there was none.
    pub recovery_s: Option<f64>,
    /// Whether the history has a `heal-all`.
    pub healed: bool,
}

/// The availability of a history: `primary` operations acknowledged by processes below
/// `workers_below`. `None` when no worker invoked a primary operation.
pub fn availability(
    events: &[Event],
    primary: &[&str],
    workers_below: u64,
) -> Option<Availability> {
    let worker = |e: &Event| e.process.client().is_some_and(|p| p < workers_below);
    let first = events
        .iter()
        .filter(|e| worker(e) && e.kind == Kind::Invoke && primary.contains(&e.f.as_str()))
        .map(|e| e.time)
        .min()?;
    let last = events
        .iter()
        .filter(|e| worker(e))
        .map(|e| e.time)
        .max()
        .unwrap_or(first);
    let mut oks: Vec<u64> = events
        .iter()
        .filter(|e| worker(e) && e.kind == Kind::Ok && primary.contains(&e.f.as_str()))
        .map(|e| e.time)
        .collect();
    oks.sort_unstable();
    let mut longest = (first, first);
    let mut previous = first;
    for &t in oks.iter().chain(std::iter::once(&last)) {
        if t.saturating_sub(previous) > longest.1 - longest.0 {
            longest = (previous, t);
        }
        previous = previous.max(t);
    }
    let heal = events
        .iter()
        .filter(|e| e.is_nemesis() && e.f == "heal-all")
        .map(|e| e.time)
        .max();
    let recovery_s = heal.and_then(|h| oks.iter().find(|&&t| t >= h).map(|&t| secs(t - h)));
    Some(Availability {
        longest_gap_s: secs(longest.1 - longest.0),
        gap_from_s: secs(longest.0),
        gap_to_s: secs(longest.1),
        recovery_s,
        healed: heal.is_some(),
    })
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// `VALID`, `INVALID` or `UNKNOWN` from a `verdicts.json`, by the rule of
/// [`rocketraft_jepsen::report::verdict_label`].
pub fn verdict_label(verdicts: &Json) -> &'static str {
    if verdicts["valid"] == Json::Bool(true) {
        return "VALID";
    }
    let failed_elsewhere = verdicts["queue"]["valid"] == Json::Bool(false)
        || verdicts["split_brain"]["valid"] == Json::Bool(false)
        || verdicts["others"]["recovered"] == Json::Bool(false);
    let unknown = verdicts["others"]["linearizability"]["verdict"].as_str() == Some("Unknown");
    if unknown && !failed_elsewhere {
        "UNKNOWN"
    } else {
        "INVALID"
    }
}

/// How a cell's run ended, as the matrix saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The exit code (`None` when a signal ended it).
    pub exit_code: Option<i32>,
    /// The guard stopped it.
    pub timed_out: bool,
    /// Wall-clock seconds of the run.
    pub wall_s: f64,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub workload: String,
    pub nemesis: String,
    pub seed: u64,
    /// VALID, INVALID, UNKNOWN; ERROR (the run wrote no verdict), TIMEOUT (the guard stopped
    /// it) or PENDING (not run yet).
    pub verdict: String,
    /// Client operations invoked (every kind, final phase included).
    pub ops: Option<u64>,
    /// Of them acknowledged (`ok`).
    pub ok: Option<u64>,
    /// Faults the nemesis started, and how many of them did nothing (skipped for want of a
    /// target, or failed).
    pub faults: Option<usize>,
    pub faults_not_applied: Option<usize>,
    /// The longest stretch without an acknowledged operation (seconds).
    pub longest_gap_s: Option<f64>,
    /// When `longest_gap_s` is missing or only a bound: why (e.g. "< 2").
    pub gap_note: Option<String>,
    /// From the last heal to the first acknowledged operation (seconds).
    pub recovery_s: Option<f64>,
    /// When `recovery_s` is missing: why.
    pub recovery_note: Option<String>,
    /// Where the numbers come from: `history.jsonl` or `verdicts.json`.
    pub source: Option<String>,
    /// Wall-clock seconds of the run, when the matrix ran it.
    pub wall_s: Option<f64>,
    /// The report directory, relative to the matrix's output directory.
    pub report: String,
}

impl Row {
    fn empty(cell: &Cell, verdict: &str) -> Row {
        Row {
            workload: cell.workload.clone(),
            nemesis: cell.nemesis.clone(),
            seed: cell.seed,
            verdict: verdict.to_string(),
            ops: None,
            ok: None,
            faults: None,
            faults_not_applied: None,
            longest_gap_s: None,
            gap_note: None,
            recovery_s: None,
            recovery_note: None,
            source: None,
            wall_s: None,
            report: cell.dir_name(),
        }
    }
}

/// Whether the cell's report already has a verdict (what `--resume` skips).
pub fn has_verdict(out: &Path, cell: &Cell) -> bool {
    let path = out.join(cell.dir_name()).join(VERDICTS);
    std::fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Json>(&bytes).ok())
        .is_some_and(|v| v.get("valid").is_some_and(Json::is_boolean))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The row of `cell` from its report directory under `out`: from `history.jsonl` when it is
/// there, else the kept `row.json`, else `verdicts.json`; ERROR / TIMEOUT from `outcome.json`
/// when the run wrote no verdict; PENDING when the cell has not run.
pub fn read_row(out: &Path, cell: &Cell) -> anyhow::Result<Row> {
    let dir = out.join(cell.dir_name());
    let outcome: Option<Outcome> = read_json(&dir.join(OUTCOME));
    let wall_s = outcome.as_ref().map(|o| o.wall_s);
    if !has_verdict(out, cell) {
        let verdict = match &outcome {
            None => "PENDING",
            Some(o) if o.timed_out => "TIMEOUT",
            Some(_) => "ERROR",
        };
        let mut row = Row::empty(cell, verdict);
        row.wall_s = wall_s;
        return Ok(row);
    }
    let history = dir.join("history.jsonl");
    if !history.is_file() {
        if let Some(row) = read_json::<Row>(&dir.join(ROW)) {
            if row.workload == cell.workload && row.nemesis == cell.nemesis && row.seed == cell.seed
            {
                return Ok(row);
            }
        }
    }
    let text = std::fs::read_to_string(dir.join(VERDICTS))
        .with_context(|| format!("cannot read {}", dir.join(VERDICTS).display()))?;
    let verdicts: Json = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", dir.join(VERDICTS).display()))?;
    let mut row = Row::empty(cell, verdict_label(&verdicts));
    row.wall_s = wall_s;
    if let Some(by_f) = verdicts["stats"]["by_f"].as_object() {
        let sum = |field: &str| by_f.values().filter_map(|c| c[field].as_u64()).sum::<u64>();
        row.ops = Some(sum("invoke"));
        row.ok = Some(sum("ok"));
    }
    if let Some(faults) = verdicts["stats"]["faults"].as_array() {
        // Refined from the nemesis events below when they are there.
        row.faults = Some(faults.len());
        row.faults_not_applied = Some(
            faults
                .iter()
                .filter(|f| not_applied(&f["detail"]) || not_applied(&f["outcome"]))
                .count(),
        );
    }
    let recovered = verdicts["others"]["recovered"].as_bool();
    if history.is_file() {
        let text = std::fs::read_to_string(&history)
            .with_context(|| format!("cannot read {}", history.display()))?;
        let events =
            read_events(&text).with_context(|| format!("{} does not parse", history.display()))?;
        let (faults, not) = fault_counts(&events);
        (row.faults, row.faults_not_applied) = (Some(faults), Some(not));
        fill_from_history(&mut row, &events, recovered);
        write_json(&dir.join(ROW), &row)?;
    } else {
        fill_from_verdicts(&mut row, &verdicts, recovered);
    }
    Ok(row)
}

/// Whether a fault's recorded value says it did nothing: skipped (nothing to aim at) or failed.
fn not_applied(value: &Json) -> bool {
    value.get("skipped").is_some() || value.get("error").is_some()
}

/// The faults the nemesis started (its `start-*` and `transfer` events) and how many of them
/// did nothing ([`not_applied`]).
pub fn fault_counts(events: &[Event]) -> (usize, usize) {
    let starts: Vec<&Event> = events
        .iter()
        .filter(|e| e.is_nemesis() && (e.f.starts_with("start-") || e.f == "transfer"))
        .collect();
    let not = starts.iter().filter(|e| not_applied(&e.value)).count();
    (starts.len(), not)
}

/// The unavailability and recovery of a row from the run's history.
fn fill_from_history(row: &mut Row, events: &[Event], recovered: Option<bool>) {
    row.source = Some("history.jsonl".to_string());
    let Some((primary, workers_below)) = primary_ops(&row.workload) else {
        row.gap_note = Some(format!("workload {} unknown to the matrix", row.workload));
        row.recovery_note = row.gap_note.clone();
        return;
    };
    match availability(events, primary, workers_below) {
        None => {
            row.gap_note = Some("no operation invoked".to_string());
            row.recovery_note = row.gap_note.clone();
        }
        Some(a) => {
            row.longest_gap_s = Some(a.longest_gap_s);
            row.gap_note = Some(format!("{:.1}-{:.1} s", a.gap_from_s, a.gap_to_s));
            row.recovery_s = a.recovery_s;
            if a.recovery_s.is_none() {
                row.recovery_note = Some(if !a.healed {
                    "no heal recorded".to_string()
                } else if recovered == Some(false) {
                    "not recovered".to_string()
                } else {
                    "no acknowledgement after the heal".to_string()
                });
            }
        }
    }
}

/// The unavailability and recovery of a row from `verdicts.json` alone (the history is gone):
/// its gaps are only those of 2 s or more, and its recovery counts any client's operation.
fn fill_from_verdicts(row: &mut Row, verdicts: &Json, recovered: Option<bool>) {
    row.source = Some("verdicts.json".to_string());
    let gaps: Vec<(f64, f64)> =
        serde_json::from_value(verdicts["stats"]["unavailable"].clone()).unwrap_or_default();
    match gaps
        .iter()
        .max_by(|a, b| (a.1 - a.0).total_cmp(&(b.1 - b.0)))
    {
        Some(&(from, to)) => {
            row.longest_gap_s = Some(to - from);
            row.gap_note = Some(format!("{from:.1}-{to:.1} s"));
        }
        None => row.gap_note = Some("< 2".to_string()),
    }
    row.recovery_s = verdicts["stats"]["recovery_s"].as_f64();
    if row.recovery_s.is_none() {
        row.recovery_note = Some(if recovered == Some(false) {
            "not recovered".to_string()
        } else {
            "not recorded".to_string()
        });
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("cannot encode JSON")?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

fn cell_text(value: Option<f64>, note: &Option<String>) -> String {
    match (value, note) {
        (Some(v), _) => format!("{v:.1}"),
        (None, Some(note)) => note.clone(),
        (None, None) => "-".to_string(),
    }
}

/// `matrix.md`: a heading, the command, the table, and what its columns mean.
pub fn markdown(rows: &[Row], command: &str) -> String {
    let mut out = String::from("# Fault matrix\n\n");
    out.push_str(&format!("Command: `{command}`\n\n"));
    let count = |v: &str| rows.iter().filter(|r| r.verdict == v).count();
    out.push_str(&format!(
        "{} cells: {} VALID, {} INVALID, {} UNKNOWN, {} ERROR, {} TIMEOUT, {} PENDING.\n\n",
        rows.len(),
        count("VALID"),
        count("INVALID"),
        count("UNKNOWN"),
        count("ERROR"),
        count("TIMEOUT"),
        count("PENDING")
    ));
    out.push_str("| workload | nemesis | seed | ops | ok | verdict | faults (not applied) | longest gap (s) | where | recovery (s) | wall (s) | report |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    for r in rows {
        let faults = match (r.faults, r.faults_not_applied) {
            (Some(f), Some(s)) => format!("{f} ({s})"),
            _ => "-".to_string(),
        };
        let (gap, place) = match r.longest_gap_s {
            Some(g) => (format!("{g:.1}"), r.gap_note.clone().unwrap_or_default()),
            None => (cell_text(None, &r.gap_note), String::new()),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | [{}]({}/) |\n",
            r.workload,
            r.nemesis,
            r.seed,
            opt(r.ops),
            opt(r.ok),
            r.verdict,
            faults,
            gap,
            place,
            cell_text(r.recovery_s, &r.recovery_note),
            r.wall_s.map_or("-".to_string(), |w| format!("{w:.0}")),
            r.report,
            r.report
        ));
    }
    out.push_str(
        "\n- **ops / ok**: client operations invoked / acknowledged (final drain and reads included).\n\
         - **faults (not applied)**: faults the nemesis started; not applied: skipped for want of \
         a target (e.g. no broker master in raft-kv) or failed (e.g. power-loss without LazyFs \
         mounts), as its events in `nemesis.jsonl` say.\n\
         - **longest gap**: the longest stretch without an acknowledged primary operation of a \
         worker (queue: send; controller: read, elect, alter; raft-kv: read, write, cas), from \
         the workers' first invocation to their last event, from `history.jsonl`. When only \
         `verdicts.json` is left, its gaps are those of 2 s or more, so `< 2` means none.\n\
         - **recovery**: from the last heal to the first such acknowledgement.\n\
         - **verdict**: VALID / INVALID / UNKNOWN as `rocketraft-jepsen run` decides it; ERROR: the \
         run wrote no verdict (see its `progress.txt`); TIMEOUT: the wall-clock guard stopped it; \
         PENDING: not run yet.\n",
    );
    out
}

/// `matrix.md` and `matrix.json` under `out`.
pub fn write_table(out: &Path, rows: &[Row], command: &str) -> anyhow::Result<()> {
    write_json(
        &out.join("matrix.json"),
        &json!({"command": command, "rows": rows}),
    )?;
    std::fs::write(out.join("matrix.md"), markdown(rows, command))
        .with_context(|| format!("cannot write {}", out.join("matrix.md").display()))
}

/// What `rocketraft-jepsen matrix` was asked.
#[derive(Debug, Clone)]
pub struct MatrixOptions {
    pub workloads: Vec<String>,
    pub nemeses: Vec<String>,
    pub seeds: Vec<u64>,
    pub time_limit: Duration,
    /// Wall-clock limit of one cell's run.
    pub guard: Duration,
    pub out: PathBuf,
    pub resume: bool,
    /// `--bin` of each run.
    pub bin: Option<PathBuf>,
    /// The `rocketraft-jepsen` that runs each cell.
    pub harness: PathBuf,
    /// The command line, for the table.
    pub command: String,
}

/// Checks the selection: known workloads and nemeses, at least one of each and a seed.
pub fn validate(options: &MatrixOptions) -> anyhow::Result<()> {
    for w in &options.workloads {
        if !WORKLOADS.contains(&w.as_str()) {
            bail!("unknown workload {w:?}: use {}", WORKLOADS.join(", "));
        }
    }
    for n in &options.nemeses {
        rocketraft_jepsen::nemesis::parse_kinds(n)?;
    }
    if options.workloads.is_empty() || options.nemeses.is_empty() || options.seeds.is_empty() {
        bail!("the selection is empty: give at least one workload, nemesis and seed");
    }
    Ok(())
}

/// Runs one cell's `rocketraft-jepsen run` into `dir` under the guard; its standard output
/// (the summary) goes to `summary.txt`, its standard error to `progress.txt`.
fn run_cell(options: &MatrixOptions, cell: &Cell, dir: &Path) -> anyhow::Result<Outcome> {
    if dir.exists() {
        // A run that left no verdict (failed, stopped): start it afresh.
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let stdout = std::fs::File::create(dir.join("summary.txt")).context("summary.txt")?;
    let stderr = std::fs::File::create(dir.join("progress.txt")).context("progress.txt")?;
    let mut command = Command::new(&options.harness);
    command
        .args([
            "run",
            "--workload",
            &cell.workload,
            "--nemesis",
            &cell.nemesis,
        ])
        .args(["--time-limit", &options.time_limit.as_secs().to_string()])
        .args(["--seed", &cell.seed.to_string()])
        .arg("--out")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    if let Some(bin) = &options.bin {
        command.arg("--bin").arg(bin);
    }
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", options.harness.display()))?;
    let mut timed_out = false;
    let mut term_sent: Option<Instant> = None;
    let status = loop {
        if let Some(status) = child.try_wait().context("cannot wait for the run")? {
            break status;
        }
        if term_sent.is_none() && STOP.load(Ordering::SeqCst) {
            tracing::warn!(cell = %cell.dir_name(), "the matrix was stopped: SIGTERM to the run");
            signal(child.id(), libc::SIGTERM);
            term_sent = Some(Instant::now());
        }
        if term_sent.is_none() && started.elapsed() > options.guard {
            tracing::warn!(
                cell = %cell.dir_name(),
                guard_s = options.guard.as_secs(),
                "the run exceeded its wall-clock guard: SIGTERM"
            );
            timed_out = true;
            signal(child.id(), libc::SIGTERM);
            term_sent = Some(Instant::now());
        }
        if term_sent.is_some_and(|t| t.elapsed() > KILL_GRACE) {
            tracing::warn!(cell = %cell.dir_name(), "the run ignored SIGTERM: SIGKILL");
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let outcome = Outcome {
        exit_code: status.code(),
        timed_out,
        wall_s: started.elapsed().as_secs_f64(),
    };
    write_json(&dir.join(OUTCOME), &outcome)?;
    if let Err(e) = write_nemesis_events(dir) {
        tracing::warn!(cell = %cell.dir_name(), error = %e, "no nemesis.jsonl");
    }
    Ok(outcome)
}

/// Set by SIGTERM or SIGINT of the matrix: the running cell is stopped and the matrix ends.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGTERM and SIGINT set [`STOP`] instead of ending the matrix at once, so the running
/// cell's run is told to tear its cluster down first.
fn catch_stop_signals() {
    let handler = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
    }
}

/// Sends `signal` to process `pid` (a child of ours).
fn signal(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a child's pid and a valid signal number has no memory effects.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// `nemesis.jsonl`: the nemesis's lines of the history (what the kept runs of `jepsen/runs/`
/// keep when the history itself is too big to keep).
fn write_nemesis_events(dir: &Path) -> anyhow::Result<()> {
    let history = dir.join("history.jsonl");
    let text = std::fs::read_to_string(&history)
        .with_context(|| format!("cannot read {}", history.display()))?;
    let mut out = String::new();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<Event>(line) else {
            continue;
        };
        if event.is_nemesis() {
            out.push_str(line);
            out.push('\n');
        }
    }
    std::fs::write(dir.join("nemesis.jsonl"), out).context("cannot write nemesis.jsonl")
}

/// Runs the matrix: every cell not skipped by `--resume`, the table rewritten after each.
/// Returns the rows in cell order.
pub fn run(options: &MatrixOptions) -> anyhow::Result<Vec<Row>> {
    validate(options)?;
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("cannot create {}", options.out.display()))?;
    // The runs hand the report directory to the nodes, which start elsewhere: absolute.
    let out = std::fs::canonicalize(&options.out)
        .with_context(|| format!("cannot resolve {}", options.out.display()))?;
    let options = &MatrixOptions {
        out,
        ..options.clone()
    };
    let all = cells(&options.workloads, &options.nemeses, &options.seeds);
    let done: Vec<bool> = all.iter().map(|c| has_verdict(&options.out, c)).collect();
    if !options.resume {
        if let Some(cell) = all.iter().zip(&done).find(|(_, d)| **d).map(|(c, _)| c) {
            bail!(
                "{} already has a report ({}): pass --resume to keep it, or another --out",
                options.out.display(),
                cell.dir_name()
            );
        }
    }
    catch_stop_signals();
    let to_run = done.iter().filter(|d| !**d).count();
    tracing::info!(
        cells = all.len(),
        to_run,
        skipped = all.len() - to_run,
        out = %options.out.display(),
        "fault matrix"
    );
    let started = Instant::now();
    let mut ran = 0usize;
    for (i, (cell, done)) in all.iter().zip(&done).enumerate() {
        if *done {
            tracing::info!(cell = %cell.dir_name(), "cell {} of {}: has a verdict, skipped", i + 1, all.len());
            continue;
        }
        let elapsed = started.elapsed();
        let eta = if ran == 0 {
            "unknown".to_string()
        } else {
            let per_cell = elapsed.as_secs_f64() / ran as f64;
            format!("{:.0} s", per_cell * (to_run - ran) as f64)
        };
        tracing::info!(
            "cell {} of {}: {} under {} seed {}; elapsed {:.0} s, ETA {eta}",
            i + 1,
            all.len(),
            cell.workload,
            cell.nemesis,
            cell.seed,
            elapsed.as_secs_f64()
        );
        let dir = options.out.join(cell.dir_name());
        let outcome = run_cell(options, cell, &dir)?;
        if STOP.load(Ordering::SeqCst) {
            let rows = all
                .iter()
                .map(|c| read_row(&options.out, c))
                .collect::<anyhow::Result<Vec<Row>>>()?;
            write_table(&options.out, &rows, &options.command)?;
            bail!(
                "stopped by a signal during cell {} of {} (rerun with --resume)",
                i + 1,
                all.len()
            );
        }
        ran += 1;
        let row = read_row(&options.out, cell)?;
        tracing::info!(
            "cell {} of {}: {} (exit {:?}{}, {:.0} s)",
            i + 1,
            all.len(),
            row.verdict,
            outcome.exit_code,
            if outcome.timed_out { ", guard" } else { "" },
            outcome.wall_s
        );
        let rows = all
            .iter()
            .map(|c| read_row(&options.out, c))
            .collect::<anyhow::Result<Vec<Row>>>()?;
        write_table(&options.out, &rows, &options.command)?;
    }
    let rows = all
        .iter()
        .map(|c| read_row(&options.out, c))
        .collect::<anyhow::Result<Vec<Row>>>()?;
    write_table(&options.out, &rows, &options.command)?;
    Ok(rows)
}

/// The exit code of a finished matrix: 1 if any verdict is INVALID, else 3 if a cell could
/// not run, else 2 if one is UNKNOWN, else 0.
pub fn exit_code(rows: &[Row]) -> u8 {
    let any = |v: &str| rows.iter().any(|r| r.verdict == v);
    if any("INVALID") {
        1
    } else if any("ERROR") || any("TIMEOUT") || any("PENDING") {
        3
    } else if any("UNKNOWN") {
        2
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rocketraft_jepsen::record::{extra, Recorder};
    use rocketraft_jepsen::report::{self, Verdicts};
    use std::collections::BTreeMap;

    /// A report directory as `rocketraft-jepsen run` writes it: the history through the
    /// harness's [`Recorder`], `verdicts.json` from the report's [`Verdicts`] and stats.
    /// Raft-kv operations by two workers (process 0 and 1) and a final read (process
    /// 1 000 000); a partition from 0.2 s to 0.5 s; writes stop acknowledging during it.
    fn write_report(dir: &Path, cell: &Cell, valid: bool) -> Vec<Event> {
        std::fs::create_dir_all(dir).expect("report dir");
        let recorder = Recorder::create(&dir.join("history.jsonl")).expect("history");
        let pause = |ms: u64| std::thread::sleep(Duration::from_millis(ms));
        let op = |p: u64, f: &str, kind: Kind| {
            recorder.invoke(p, f, json!(null));
            recorder.complete(p, kind, f, json!(1), extra([("key", json!("x0"))]));
        };
        op(0, "write", Kind::Ok);
        op(1, "read", Kind::Ok);
        recorder.nemesis("start-partition", json!({"variant": "halves"}));
        pause(100);
        op(0, "write", Kind::Info);
        pause(250);
        recorder.nemesis("stop-partition", json!({}));
        recorder.nemesis(
            "start-clock",
            json!({"skipped": "no node runs under a clock file"}),
        );
        recorder.nemesis(
            "stop-clock",
            json!({"skipped": "no node runs under a clock file"}),
        );
        recorder.nemesis(
            "start-power-loss",
            json!({"error": "power-loss needs the nodes' data on LazyFs mounts"}),
        );
        recorder.nemesis("heal-all", json!({}));
        pause(120);
        op(1, "cas", Kind::Ok);
        op(0, "read", Kind::Ok);
        op(1_000_000, "read", Kind::Ok);
        recorder.flush();
        let events = recorder.events();
        let stats = report::stats(&events, &rocketraft_jepsen::kv_workload::PRIMARY);
        let verdicts = Verdicts {
            valid,
            workload: cell.workload.clone(),
            nemesis: cell.nemesis.clone(),
            seed: cell.seed,
            time_limit_s: 1,
            queue: None,
            split_brain: None,
            others: BTreeMap::from([
                ("recovered".to_string(), json!(true)),
                (
                    "linearizability".to_string(),
                    json!({"verdict": if valid { "Valid" } else { "Invalid" }}),
                ),
            ]),
            faults: Vec::new(),
            stats,
            counterexample: None,
        };
        std::fs::write(
            dir.join(VERDICTS),
            serde_json::to_string_pretty(&verdicts).expect("verdicts encode"),
        )
        .expect("verdicts.json");
        events
    }

    fn cell(nemesis: &str, seed: u64) -> Cell {
        Cell {
            workload: "raft-kv".to_string(),
            nemesis: nemesis.to_string(),
            seed,
        }
    }

    #[test]
    fn every_nemesis_parses_and_cells_are_in_order() {
        for n in NEMESES {
            rocketraft_jepsen::nemesis::parse_kinds(n).expect("a nemesis of run");
        }
        let all = cells(
            &["queue".to_string(), "raft-kv".to_string()],
            &["kill".to_string(), "all".to_string()],
            &[1, 2],
        );
        assert_eq!(all.len(), 8);
        assert_eq!(all[0].dir_name(), "queue-kill-seed1");
        assert_eq!(all[1].dir_name(), "queue-kill-seed2");
        assert_eq!(all[2].dir_name(), "queue-all-seed1");
        assert_eq!(all[7].dir_name(), "raft-kv-all-seed2");
    }

    #[test]
    fn rows_come_from_the_history_then_the_kept_row_then_the_verdicts() {
        let out = tempfile::tempdir().expect("tempdir");
        let valid = cell("partition", 1);
        let invalid = cell("partition", 2);
        let failed = cell("kill", 1);
        let pending = cell("kill", 2);
        let events = write_report(&out.path().join(valid.dir_name()), &valid, true);
        write_report(&out.path().join(invalid.dir_name()), &invalid, false);
        // A run that wrote no verdict: only the matrix's outcome.
        let failed_dir = out.path().join(failed.dir_name());
        std::fs::create_dir_all(&failed_dir).expect("dir");
        write_json(
            &failed_dir.join(OUTCOME),
            &Outcome {
                exit_code: Some(3),
                timed_out: false,
                wall_s: 4.0,
            },
        )
        .expect("outcome");

        assert!(has_verdict(out.path(), &valid));
        assert!(has_verdict(out.path(), &invalid));
        assert!(!has_verdict(out.path(), &failed));
        assert!(!has_verdict(out.path(), &pending));

        let row = read_row(out.path(), &valid).expect("row");
        assert_eq!(row.verdict, "VALID");
        assert_eq!(row.source.as_deref(), Some("history.jsonl"));
        // 6 invocations: 5 of the workers, 1 final read; all but the write during the
        // partition acknowledged.
        assert_eq!((row.ops, row.ok), (Some(6), Some(5)));
        assert_eq!((row.faults, row.faults_not_applied), (Some(3), Some(2)));
        // The longest gap runs from the read before the partition to the cas after the heal
        // (the write in between got no answer): at least the 350 ms of sleeps before the heal
        // and the 120 ms after it.
        let gap = row.longest_gap_s.expect("a gap");
        let a = availability(&events, &rocketraft_jepsen::kv_workload::PRIMARY, 1_000_000)
            .expect("availability");
        assert_eq!(a.longest_gap_s, gap);
        assert!((0.47..5.0).contains(&gap), "gap {gap}");
        let ok_times: Vec<u64> = events
            .iter()
            .filter(|e| e.kind == Kind::Ok && e.process.client().is_some_and(|p| p < 1_000_000))
            .map(|e| e.time)
            .collect();
        assert!((a.gap_from_s - ok_times[1] as f64 / 1e9).abs() < 1e-9);
        assert!((a.gap_to_s - ok_times[2] as f64 / 1e9).abs() < 1e-9);
        let recovery = row.recovery_s.expect("recovered");
        assert!((0.12..gap).contains(&recovery), "recovery {recovery}");

        assert_eq!(
            read_row(out.path(), &invalid).expect("row").verdict,
            "INVALID"
        );
        let failed_row = read_row(out.path(), &failed).expect("row");
        assert_eq!(
            (failed_row.verdict.as_str(), failed_row.wall_s),
            ("ERROR", Some(4.0))
        );
        assert_eq!(
            read_row(out.path(), &pending).expect("row").verdict,
            "PENDING"
        );

        // The history pruned: the kept row.json gives the same numbers.
        let dir = out.path().join(valid.dir_name());
        std::fs::remove_file(dir.join("history.jsonl")).expect("prune");
        assert_eq!(read_row(out.path(), &valid).expect("row"), row);
        // row.json gone too: verdicts.json alone, whose gaps are only those of 2 s or more.
        std::fs::remove_file(dir.join(ROW)).expect("prune");
        let coarse = read_row(out.path(), &valid).expect("row");
        assert_eq!(coarse.source.as_deref(), Some("verdicts.json"));
        assert_eq!(coarse.longest_gap_s, None);
        assert_eq!(coarse.gap_note.as_deref(), Some("< 2"));
        assert_eq!(coarse.ops, row.ops);
        assert_eq!(
            (coarse.faults, coarse.faults_not_applied),
            (Some(3), Some(2))
        );

        let rows: Vec<Row> = [&valid, &invalid, &failed, &pending]
            .iter()
            .map(|c| read_row(out.path(), c).expect("row"))
            .collect();
        write_table(out.path(), &rows, "rocketraft-jepsen matrix --test").expect("table");
        let md = std::fs::read_to_string(out.path().join("matrix.md")).expect("matrix.md");
        assert!(
            md.contains("4 cells: 1 VALID, 1 INVALID, 0 UNKNOWN, 1 ERROR, 0 TIMEOUT, 1 PENDING."),
            "{md}"
        );
        assert!(
            md.contains("| raft-kv | partition | 1 | 6 | 5 | VALID | 3 (2) | < 2 |"),
            "{md}"
        );
        assert!(
            md.contains("[raft-kv-kill-seed1](raft-kv-kill-seed1/)"),
            "{md}"
        );
        let json: Json =
            serde_json::from_slice(&std::fs::read(out.path().join("matrix.json")).expect("json"))
                .expect("matrix.json parses");
        let back: Vec<Row> = serde_json::from_value(json["rows"].clone()).expect("rows");
        assert_eq!(back, rows);
        assert_eq!(exit_code(&rows), 1);
        assert_eq!(exit_code(&rows[..1]), 0);
        assert_eq!(
            exit_code(
                &rows[..1]
                    .iter()
                    .chain(&rows[2..3])
                    .cloned()
                    .collect::<Vec<_>>()
            ),
            3
        );
    }

    #[test]
    fn resume_skips_cells_with_a_verdict_and_a_fresh_matrix_refuses_old_reports() {
        let out = tempfile::tempdir().expect("tempdir");
        let done = cell("partition", 1);
        write_report(&out.path().join(done.dir_name()), &done, true);
        // A harness that cannot start: the cell without a verdict ends ERROR, the one with a
        // verdict is not run at all.
        let mut options = MatrixOptions {
            workloads: vec!["raft-kv".to_string()],
            nemeses: vec!["partition".to_string()],
            seeds: vec![1, 2],
            time_limit: Duration::from_secs(1),
            guard: Duration::from_secs(30),
            out: out.path().to_path_buf(),
            resume: false,
            bin: None,
            harness: PathBuf::from("/bin/false"),
            command: "test".to_string(),
        };
        let error = run(&options).expect_err("old reports without --resume");
        assert!(error.to_string().contains("--resume"), "{error}");
        options.resume = true;
        let before = std::fs::read(out.path().join(done.dir_name()).join(VERDICTS)).expect("v");
        let rows = run(&options).expect("matrix");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].verdict, "VALID");
        assert_eq!(rows[1].verdict, "ERROR");
        assert_eq!(
            std::fs::read(out.path().join(done.dir_name()).join(VERDICTS)).expect("v"),
            before,
            "the report with a verdict was left alone"
        );
        let outcome: Outcome =
            read_json(&out.path().join("raft-kv-partition-seed2").join(OUTCOME)).expect("outcome");
        assert_eq!(outcome.exit_code, Some(1));
        assert!(out.path().join("matrix.md").is_file());
        assert_eq!(exit_code(&rows), 3);
    }
}
