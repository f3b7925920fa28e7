//! The harness must catch a deliberately broken build: brokers started with
//! `ROCKETRAFT_UNSAFE_ACK_BEFORE_REPLICATION=1` acknowledge sends before the replicas hold
//! them. Isolating the master from the rest of the cluster (the clients still reach it) lets it
//! acknowledge until its lease runs out while a new master is elected without those messages;
//! after the heal the old master follows the new one and the acknowledged messages are gone.
//! The queue checker must report them lost and the run must exit 1 (invalid).
//!
//! Likewise controllers configured with `stale_reads = true` (replica info served from local
//! memory): under a partition that isolates the controller leader, the controller workload's
//! reads of the isolated node are stale and the history is not linearizable.
//!
//! Needs root and network namespaces (skipped with a message otherwise) and the `rocketraft`
//! binary of the same target directory.

use crate::support::{serial, skipped, Harness};

#[test]
fn acking_before_replication_loses_messages_and_is_caught() {
    let _one = serial();
    if skipped("broken-build run") {
        return;
    }
    let run = Harness {
        workload: "queue",
        nemesis: "partition-master",
        time_limit: 40,
        seed: 3,
        extra: &["--unsafe-ack-before-replication"],
        bin: true,
        prefix: "rrj-broken-",
    }
    .run();
    assert_eq!(
        run.status.code(),
        Some(1),
        "the broken build must be found invalid:\n{}",
        run.verdicts_text
    );
    let verdicts = &run.verdicts;
    assert_eq!(verdicts["valid"], false);
    let lost = verdicts["queue"]["lost_count"].as_u64().unwrap_or(0);
    let split = verdicts["split_brain"]["valid"] == false;
    assert!(
        lost > 0 || split,
        "neither lost messages nor split brain reported: {verdicts}"
    );
    assert!(
        verdicts["counterexample"].is_object(),
        "a counterexample is reported"
    );
}

#[test]
fn stale_controller_reads_are_caught() {
    let _one = serial();
    if skipped("stale-reads run") {
        return;
    }
    let run = Harness {
        workload: "controller",
        nemesis: "partition-controller",
        time_limit: 40,
        seed: 8,
        extra: &["--unsafe-controller-stale-reads"],
        bin: true,
        prefix: "rrj-stale-",
    }
    .run();
    assert_eq!(
        run.status.code(),
        Some(1),
        "stale controller reads must be found invalid:\n{}",
        run.verdicts_text
    );
    assert_eq!(
        run.verdicts["others"]["linearizability"]["verdict"],
        "Invalid"
    );
    assert!(run.verdicts["counterexample"].is_object());
}
