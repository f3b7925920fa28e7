//! The raft-kv workload against real `rocketraft-raft-kv` processes in network namespaces:
//! - a CI smoke run under partitions and kill -9 (about 30 s of faults, plus start-up, recovery
//!   and the check; seed 2 gives a partition at 4-15 s and a kill at 21-27 s): it must be VALID,
//!   with both faults injected, reads, writes and compare-and-sets acknowledged, and nothing
//!   left behind;
//! - a deliberately broken build: members started with `--unsafe-stale-reads` answer reads
//!   from local memory, and with the Raft leader isolated from the other members (reads on the
//!   old leader, writes through the new one) the run must be INVALID.
//!
//! Needs root and network namespaces; without them each test prints why and passes. The nodes
//! run this crate's `rocketraft-raft-kv` binary, which cargo builds with the test and the
//! harness finds beside its own executable.

use rocketraft_jepsen::record::Kind;

use crate::support::{serial, skipped, Harness, Run};

/// A raft-kv run, with the node logs and the charts in its report and nothing left behind.
fn run(nemesis: &str, seconds: u64, seed: u64, extra: &[&str]) -> Run {
    let run = Harness {
        workload: "raft-kv",
        nemesis,
        time_limit: seconds,
        seed,
        extra,
        prefix: "rrj-raft-kv-",
        ..Harness::default()
    }
    .run();
    assert!(
        run.out.path().join("nodes/n1/node.log").is_file(),
        "the node logs are in the report"
    );
    let html = std::fs::read_to_string(run.out.path().join("index.html")).expect("index.html");
    assert!(html.contains("<svg"), "the report has its charts");
    run.assert_no_namespace_left();
    run
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
    for kind in nemesis.split(',') {
        assert!(
            run.started(kind) >= 1,
            "no {kind} fault was injected (seed {seed})"
        );
    }
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
    drop(run.out);
}

#[test]
fn raft_kv_under_partitions_and_kills() {
    // Serial from the start: the namespace probe is named after this process, so two probes
    // at once collide.
    let _one = serial();
    if skipped("raft-kv smoke runs") {
        return;
    }
    smoke("partition,kill", 2);
}

#[test]
fn stale_reads_on_an_isolated_leader_are_caught() {
    // Serial from the start: the namespace probe is named after this process, so two probes
    // at once collide.
    let _one = serial();
    if skipped("raft-kv broken-build run") {
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
