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

use std::process::Command;

use crate::support::{rocketraft_binary, serial};

#[test]
fn acking_before_replication_loses_messages_and_is_caught() {
    let _one = serial();
    if let Err(why) = rocketraft_jepsen::net::netns_available() {
        eprintln!("SKIPPED broken-build run: network namespaces unavailable ({why})");
        return;
    }
    let binary = rocketraft_binary();
    let out = tempfile::Builder::new()
        .prefix("rrj-broken-")
        .tempdir_in("/tmp")
        .expect("a temporary report directory");
    let status = Command::new(env!("CARGO_BIN_EXE_rocketraft-jepsen"))
        .args([
            "run",
            "--workload",
            "queue",
            "--nemesis",
            "partition-master",
        ])
        .args(["--time-limit", "40", "--seed", "3"])
        .arg("--unsafe-ack-before-replication")
        .arg("--out")
        .arg(out.path())
        .arg("--bin")
        .arg(&binary)
        .status()
        .expect("rocketraft-jepsen runs");
    let verdicts = std::fs::read_to_string(out.path().join("verdicts.json"))
        .unwrap_or_else(|e| panic!("no verdicts.json ({e}); exit status {status}"));
    assert_eq!(
        status.code(),
        Some(1),
        "the broken build must be found invalid:\n{verdicts}"
    );
    let verdicts: serde_json::Value = serde_json::from_str(&verdicts).expect("verdicts are JSON");
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
    if let Err(why) = rocketraft_jepsen::net::netns_available() {
        eprintln!("SKIPPED stale-reads run: network namespaces unavailable ({why})");
        return;
    }
    let binary = rocketraft_binary();
    let out = tempfile::Builder::new()
        .prefix("rrj-stale-")
        .tempdir_in("/tmp")
        .expect("a temporary report directory");
    let status = Command::new(env!("CARGO_BIN_EXE_rocketraft-jepsen"))
        .args([
            "run",
            "--workload",
            "controller",
            "--nemesis",
            "partition-controller",
        ])
        .args(["--time-limit", "40", "--seed", "8"])
        .arg("--unsafe-controller-stale-reads")
        .arg("--out")
        .arg(out.path())
        .arg("--bin")
        .arg(&binary)
        .status()
        .expect("rocketraft-jepsen runs");
    let verdicts = std::fs::read_to_string(out.path().join("verdicts.json"))
        .unwrap_or_else(|e| panic!("no verdicts.json ({e}); exit status {status}"));
    assert_eq!(
        status.code(),
        Some(1),
        "stale controller reads must be found invalid:\n{verdicts}"
    );
    let verdicts: serde_json::Value = serde_json::from_str(&verdicts).expect("verdicts are JSON");
    assert_eq!(verdicts["others"]["linearizability"]["verdict"], "Invalid");
    assert!(verdicts["counterexample"].is_object());
}
