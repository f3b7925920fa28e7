//! Issue 22 in CI: with every timing key at its default, the harness's queue workload under
//! isolation of the broker master and kill -9 faults (seed 7: kills of the proxy, of the
//! controller leader together with the broker master, of one controller, and an isolation of
//! the broker master in 90 s) must be valid, and each isolation of the broker master may cost
//! acknowledged sends at most 5 s (the per-fault report of `verdicts.json`). The kill of the
//! leader with the master needs a Raft election and a full heartbeat timeout in office first;
//! its gap is printed, and bounded by 7 s.
//!
//! Majority-ring partitions that leave a side able to write (a controller majority, a replica
//! reachable from its leader and the NameServer, and a second replica: `writable_side` in the
//! report; seed 11, 60 s: four rings) may cost at most 5 s each. Seed 11's first ring is the
//! hard one: the controller leader hears the master, cut off from both slaves, and one slave
//! that reaches no NameServer, while another controller hears the slave clients could use. The
//! leader hands Raft leadership to that controller, which deposes the master in that slave's
//! favour (`controller/src/peers.rs`; 10.7-13.3 s before, 2.9 s after). Before that: the
//! route-aware election (8.6 s in one CI run), slaves learning the new master away from the
//! leader and the preference for slaves still linked to the old master (13.2 s), closing dead
//! connections and adding one slave per SyncStateSet change (seed 5's four rings: 23.6, 23.6,
//! 2.0 and 6.7 s before, at most 2.2 s now).
//!
//! Needs root and network namespaces; without them the test prints why and passes. Needs the
//! `rocketraft` binary beside `rocketraft-jepsen` (`cargo build --workspace --bins`). The runs
//! share the harness's private addresses, so they take turns.

use crate::support::{serial, skipped, Harness};

const SEED: u64 = 7;

/// Runs the queue workload under `nemesis`; returns the verdicts and a printable per-fault table
/// once the run exited valid. The report directory is kept when the run was not valid.
fn run(nemesis: &str, seed: u64, time_limit: u64) -> (serde_json::Value, Vec<String>) {
    let run = Harness {
        workload: "queue",
        nemesis,
        time_limit,
        seed,
        prefix: "rrj-failover-",
        ..Harness::default()
    }
    .run();
    let (status, verdicts) = (run.status, run.verdicts);
    let faults = verdicts["faults"].as_array().cloned().unwrap_or_default();
    let table: Vec<String> = faults
        .iter()
        .map(|f| {
            format!(
                "{} {} {:.1}-{:.1} s: unavailable {:.1} s, gaps {}",
                f["kind"].as_str().unwrap_or("?"),
                variant(f),
                f["start"].as_f64().unwrap_or(0.0),
                f["end"].as_f64().unwrap_or(0.0),
                f["unavailable_s"].as_f64().unwrap_or(0.0),
                f["gaps"]
            )
        })
        .collect();
    eprintln!(
        "queue under {nemesis} (seed {seed}), default timing:\n{}",
        table.join("\n")
    );
    assert!(
        status.success() && verdicts["valid"] == true,
        "the run under {nemesis} was not valid (exit {status}); report kept in {}",
        run.out.keep().display()
    );
    (verdicts, table)
}

/// The longest gap between acknowledged sends charged to `fault`.
fn longest(fault: &serde_json::Value) -> f64 {
    fault["gaps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| g[1].as_f64().unwrap_or(0.0) - g[0].as_f64().unwrap_or(0.0))
        .fold(0.0f64, f64::max)
}

fn variant(fault: &serde_json::Value) -> &str {
    fault["value"]["variant"].as_str().unwrap_or("")
}

#[test]
fn master_faults_are_healed_within_five_seconds() {
    // Serial from the start: the namespace probe is named after this process, so two probes
    // at once collide.
    let _turn = serial();
    if skipped("harness failover run") {
        return;
    }
    let (verdicts, table) = run("partition-master,kill", SEED, 90);
    let faults = verdicts["faults"].as_array().cloned().unwrap_or_default();
    let isolations: Vec<&serde_json::Value> = faults
        .iter()
        .filter(|f| {
            variant(f) == "isolate-broker-master"
                && f["value"]["drops"]
                    .as_object()
                    .is_some_and(|d| !d.is_empty())
        })
        .collect();
    assert!(
        !isolations.is_empty(),
        "seed {SEED} no longer isolates the broker master: pick another\n{}",
        table.join("\n")
    );
    for f in isolations {
        assert!(
            longest(f) <= 5.0,
            "an isolation of the broker master cost {:.1} s of acknowledged sends (at most 5 s)",
            longest(f)
        );
    }
    let both: Vec<&serde_json::Value> = faults
        .iter()
        .filter(|f| variant(f) == "leader-and-master")
        .collect();
    assert!(
        !both.is_empty(),
        "seed {SEED} no longer kills the controller leader with the master: pick another"
    );
    for f in both {
        assert!(
            longest(f) <= 7.0,
            "a kill of the controller leader and the broker master cost {:.1} s",
            longest(f)
        );
    }
}

/// Issue 22: majority-ring partitions that leave a writable side (`writable_side`) cost at most
/// 5 s of acknowledged sends each: the election prefers a candidate its leader heard recently
/// that reaches the NameServer, a master cut off from both slaves is deposed (by another
/// controller when only that one hears a usable replacement), and the old master learns its
/// successor from it (docs/safety.md, Partitions).
#[test]
fn majority_ring_partitions_cost_at_most_five_seconds() {
    // Serial from the start: the namespace probe is named after this process, so two probes
    // at once collide.
    let _turn = serial();
    if skipped("harness ring run") {
        return;
    }
    let seed = 11;
    let (verdicts, table) = run("partition-ring", seed, 60);
    let rings: Vec<serde_json::Value> = verdicts["faults"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| variant(f) == "majority-ring" && f["writable_side"] == true)
        .collect();
    assert!(
        rings.len() >= 3,
        "seed {seed} drew {} majority rings that leave a writable side in 60 s: pick another\n{}",
        rings.len(),
        table.join("\n")
    );
    for f in &rings {
        assert!(
            longest(f) <= 5.0,
            "a majority-ring partition cost {:.1} s of acknowledged sends (at most 5 s)\n{}",
            longest(f),
            table.join("\n")
        );
    }
}
