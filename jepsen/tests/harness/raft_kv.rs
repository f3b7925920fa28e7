//! The raft-kv workload against real `rocketraft-raft-kv` processes in network namespaces:
//! - a CI smoke run under partitions, then one under kill -9 (about 30 s of faults each, plus
//!   start-up, recovery and the check): each must be VALID, with faults injected, reads,
//!   writes and compare-and-sets acknowledged, and nothing left behind;
//! - a deliberately broken build: members started with `--unsafe-stale-reads` answer reads
//!   from local memory, and with the Raft leader isolated from the other members (reads on the
//!   old leader, writes through the new one) the run must be INVALID.
//!
//! Needs root and network namespaces; without them each test prints why and passes. The nodes
//! run this crate's `rocketraft-raft-kv` binary, which cargo builds with the test and the
//! harness finds beside its own executable.

use std::process::{Command, ExitStatus};

use rocketraft_jepsen::record::{read_events, Event, Kind};

use crate::support::serial;

fn skip_reason() -> Option<String> {
    rocketraft_jepsen::net::netns_available()
        .err()
        .map(|why| format!("network namespaces unavailable ({why})"))
}

/// What one run left behind.
struct Run {
    status: ExitStatus,
    verdicts: serde_json::Value,
    events: Vec<Event>,
    /// Kept so the directory lives until the assertions are done.
    dir: tempfile::TempDir,
}

fn run(nemesis: &str, seconds: u64, seed: u64, extra: &[&str]) -> Run {
    let dir = tempfile::Builder::new()
        .prefix("rrj-raft-kv-")
        .tempdir_in("/tmp")
        .expect("a temporary report directory");
    let mut harness = Command::new(env!("CARGO_BIN_EXE_rocketraft-jepsen"))
        .args(["run", "--workload", "raft-kv", "--nemesis", nemesis])
        .args([
            "--time-limit",
            &seconds.to_string(),
            "--seed",
            &seed.to_string(),
        ])
        .args(extra)
        .arg("--out")
        .arg(dir.path())
        .spawn()
        .expect("rocketraft-jepsen runs");
    // The harness names its namespaces after its own PID.
    let harness_pid = harness.id();
    let status = harness.wait().expect("rocketraft-jepsen ends");
    let verdicts = std::fs::read_to_string(dir.path().join("verdicts.json"))
        .unwrap_or_else(|e| panic!("no verdicts.json ({e}); exit status {status}"));
    let verdicts: serde_json::Value = serde_json::from_str(&verdicts).expect("verdicts are JSON");
    let history = std::fs::read_to_string(dir.path().join("history.jsonl")).expect("history.jsonl");
    let events = read_events(&history).expect("the history parses");
    assert!(
        dir.path().join("nodes/n1/node.log").is_file(),
        "the node logs are in the report"
    );
    let html = std::fs::read_to_string(dir.path().join("index.html")).expect("index.html");
    assert!(html.contains("<svg"), "the report has its charts");
    no_namespace_left(harness_pid);
    Run {
        status,
        verdicts,
        events,
        dir,
    }
}

/// Everything was torn down: no namespace of the harness with this PID is left.
fn no_namespace_left(harness_pid: u32) {
    let listing = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let listing = String::from_utf8_lossy(&listing.stdout);
    let own = format!("rrj{harness_pid}-");
    assert!(
        !listing.lines().any(|l| l.starts_with(&own)),
        "namespaces left behind:\n{listing}"
    );
}

fn started(events: &[Event], f: &str) -> usize {
    events.iter().filter(|e| e.is_nemesis() && e.f == f).count()
}

fn smoke(nemesis: &str, seed: u64) {
    let run = run(nemesis, 30, seed, &[]);
    assert!(
        run.status.success(),
        "the raft-kv run under {nemesis} was not valid (exit {}):\n{:#}",
        run.status,
        run.verdicts
    );
    assert_eq!(run.verdicts["valid"], true);
    let lin = &run.verdicts["others"]["linearizability"];
    assert_eq!(lin["verdict"], "Valid");
    assert_eq!(lin["model"], "cas-register");
    assert!(
        lin["keys"].as_u64().unwrap_or(0) >= 5,
        "every key was checked: {lin}"
    );
    let operations = lin["operations"].as_u64().unwrap_or(0);
    assert!(operations > 200, "only {operations} operations checked");
    assert!(
        started(&run.events, &format!("start-{nemesis}")) >= 1,
        "no {nemesis} fault was injected"
    );
    assert!(run.events.iter().any(|e| e.f == "heal-all"));
    for f in ["read", "write", "cas"] {
        assert!(
            run.events.iter().any(|e| e.f == f && e.kind == Kind::Ok),
            "no {f} succeeded"
        );
    }
    // Both outcomes of a compare happen.
    let kv = &run.verdicts["others"]["raft_kv"];
    assert!(kv["cas_applied"].as_u64().unwrap_or(0) > 0, "{kv}");
    assert!(kv["cas_compare_failed"].as_u64().unwrap_or(0) > 0, "{kv}");
    // The final reads reached every node.
    let finals: std::collections::BTreeSet<&str> = run
        .events
        .iter()
        .filter(|e| e.kind == Kind::Ok && e.extra.contains_key("final"))
        .filter_map(|e| e.extra_str("node"))
        .collect();
    assert_eq!(finals.len(), 3, "final reads answered by {finals:?}");
    drop(run.dir);
}

#[test]
fn raft_kv_under_partitions_and_kills() {
    // Serial from the start: the namespace probe is named after this process, so two probes
    // at once collide.
    let _one = serial();
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED raft-kv smoke runs: {why}");
        return;
    }
    smoke("partition", 31);
    smoke("kill", 32);
}

#[test]
fn stale_reads_on_an_isolated_leader_are_caught() {
    // Serial from the start: the namespace probe is named after this process, so two probes
    // at once collide.
    let _one = serial();
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED raft-kv broken-build run: {why}");
        return;
    }
    let run = run(
        "partition-controller",
        40,
        41,
        &["--unsafe-raft-kv-stale-reads"],
    );
    assert_eq!(
        run.status.code(),
        Some(1),
        "stale reads must make the run INVALID:\n{:#}",
        run.verdicts
    );
    assert_eq!(run.verdicts["valid"], false);
    let lin = &run.verdicts["others"]["linearizability"];
    assert_eq!(lin["verdict"], "Invalid", "{lin}");
    assert_eq!(
        run.verdicts["others"]["raft_kv"]["unsafe_stale_reads"],
        true
    );
    assert!(
        run.verdicts["counterexample"]["counterexample"].is_object(),
        "an invalid run shows its counterexample: {:#}",
        run.verdicts["counterexample"]
    );
    // The partition did isolate the leader.
    let isolations = run
        .events
        .iter()
        .filter(|e| {
            e.is_nemesis()
                && e.f == "start-partition"
                && e.value["variant"] == "isolate-controller-leader"
                && e.value["drops"]
                    .as_object()
                    .is_some_and(|drops| !drops.is_empty())
        })
        .count();
    assert!(isolations >= 1, "the leader was never isolated");
}
