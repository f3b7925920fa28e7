//! CI smoke runs of the fault-injecting harness against real `rocketraft` processes in network
//! namespaces: the queue workload and the controller workload, each once under partitions and
//! kill -9 together, about 40 s of faults each (plus start-up, recovery and, for the queue, the
//! final drain). Each must end VALID with every kind of fault actually injected and operations
//! acknowledged (messages delivered; controller operations checked linearizable). The queue
//! runs go through both paths: Remoting to the brokers and gRPC through the proxy (sends,
//! FIFO sends, receives and acks), and the queue run's seed also kills the proxy.
//!
//! The controller faults (SIGSTOP of the controller leader, kill -9 of a controller, a Raft
//! leadership transfer, isolation of the controller leader) run together in one 50 s queue run
//! and must, besides being valid with each fault injected, cost no acknowledged send: no gap of
//! 2 s or more between acknowledged sends charged to any fault window (the per-fault report of
//! `verdicts.json`). The controller workload runs under flip-flop (leadership away and back
//! within a heartbeat timeout) and clock-step (a running node's wall clock stepped, seen in its
//! log), one run each, and must be valid.
//!
//! Runs share kinds of fault to keep CI short; `rocketraft-jepsen matrix` runs each kind on its
//! own (docs/testing.md).
//!
//! Needs root and network namespaces; without them the test prints why and passes. Needs the
//! `rocketraft` binary of the same target directory (`cargo build --workspace --bins`); without
//! it the test fails and says so.

use rocketraft_jepsen::record::Kind;

use crate::support::{serial, skipped, Harness, Run};

/// What a queue run must show of its gRPC half.
fn check_grpc_path(verdicts: &serde_json::Value, events: &[rocketraft_jepsen::record::Event]) {
    let paths = &verdicts["others"]["paths"];
    let grpc_sends = paths["grpc"]["send"]["ok"].as_u64().unwrap_or(0);
    let remoting_sends = paths["remoting"]["send"]["ok"].as_u64().unwrap_or(0);
    assert!(
        grpc_sends > 50,
        "only {grpc_sends} sends acknowledged through the proxy: {paths}"
    );
    assert!(
        remoting_sends > 50,
        "only {remoting_sends} over Remoting: {paths}"
    );
    let grpc = |e: &&rocketraft_jepsen::record::Event| e.extra_str("path") == Some("grpc");
    assert!(
        events.iter().filter(grpc).any(|e| e.f == "pop"
            && e.kind == Kind::Ok
            && e.value.as_array().is_some_and(|a| !a.is_empty())),
        "nothing received through the proxy"
    );
    assert!(
        events
            .iter()
            .filter(grpc)
            .any(|e| e.f == "send" && e.kind == Kind::Ok && e.extra_str("group").is_some()),
        "no FIFO send acknowledged through the proxy"
    );
    // Cross-path deliveries: the two halves share topics and consumer groups.
    assert!(
        paths["delivered_through_the_other_path"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{paths}"
    );
    assert_eq!(verdicts["split_brain"]["unattributed"], grpc_sends);
}

/// Runs the harness (`time_limit` s of faults) and checks that it tore everything down.
fn harness(workload: &str, nemesis: &str, seed: u64, time_limit: u64) -> Run {
    let run = Harness {
        workload,
        nemesis,
        time_limit,
        seed,
        bin: true,
        prefix: "rrj-smoke-",
        ..Harness::default()
    }
    .run();
    run.assert_no_namespace_left();
    run
}

/// What every run must show: valid, operations acknowledged, the report written.
fn assert_valid(run: &Run, workload: &str, nemesis: &str) {
    let (status, verdicts) = (run.status, &run.verdicts);
    assert!(
        status.success(),
        "the {workload} run under {nemesis} was not valid (exit {status}):\n{}",
        run.verdicts_text
    );
    assert_eq!(verdicts["valid"], true);
    if workload == "queue" {
        assert_eq!(verdicts["queue"]["lost_count"], 0);
        assert_eq!(verdicts["split_brain"]["valid"], true);
        let acknowledged = verdicts["queue"]["acknowledged"].as_u64().unwrap_or(0);
        assert!(acknowledged > 100, "only {acknowledged} sends acknowledged");
    } else {
        let lin = &verdicts["others"]["linearizability"];
        assert_eq!(lin["verdict"], "Valid");
        let operations = lin["operations"].as_u64().unwrap_or(0);
        assert!(
            operations > 100,
            "only {operations} controller operations checked"
        );
    }
    let html = std::fs::read_to_string(run.out.path().join("index.html")).expect("index.html");
    assert!(html.contains("<svg"), "the report has its charts");
    assert!(html.contains("Unavailability per fault"));
    assert!(run.out.path().join("nodes/b1/node.log").is_file());
    assert!(run.events.iter().any(|e| e.f == "heal-all"));
    if workload == "controller" {
        for f in ["read", "elect", "alter"] {
            assert!(
                run.events.iter().any(|e| e.f == f && e.kind == Kind::Ok),
                "no {f} succeeded"
            );
        }
    }
}

/// One run under every fault of `nemesis` (a comma-separated list: the seed is chosen so that
/// each kind gets at least one window, which `nemesis::timeline` decides from the seed alone).
fn smoke(workload: &str, nemesis: &str, seed: u64) {
    if skipped(&format!("harness smoke run ({workload}, {nemesis})")) {
        return;
    }
    let run = harness(workload, nemesis, seed, 40);
    assert_valid(&run, workload, nemesis);
    let (verdicts, events, out) = (&run.verdicts, &run.events, &run.out);
    for kind in nemesis.split(',') {
        assert!(
            run.started(kind) >= 1,
            "no {kind} fault was injected: seed {seed} no longer gives every kind a window"
        );
    }
    if workload == "queue" {
        assert!(events.iter().any(|e| e.f == "pop"
            && e.kind == Kind::Ok
            && e.value.as_array().is_some_and(|a| !a.is_empty())));
        check_grpc_path(verdicts, events);
        assert!(out.path().join("nodes/proxy/node.log").is_file());
        if nemesis.split(',').any(|kind| kind == "kill") {
            assert!(
                events
                    .iter()
                    .any(|e| e.f == "start-kill" && e.value["variant"] == "proxy"),
                "seed {seed} no longer kills the proxy: pick another"
            );
        }
    }
}

/// The per-fault report as one line per window, for the test output.
fn describe_faults(faults: &[serde_json::Value]) -> String {
    faults
        .iter()
        .map(|f| {
            format!(
                "  {} {:.1}-{:.1} s: unavailable {:.1} s, gaps {}, cause {}",
                f["kind"].as_str().unwrap_or("?"),
                f["start"].as_f64().unwrap_or(0.0),
                f["end"].as_f64().unwrap_or(0.0),
                f["unavailable_s"].as_f64().unwrap_or(0.0),
                f["gaps"],
                f["cause"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The queue workload under controller faults (a comma-separated list; the seed gives each kind
/// a window): valid, every fault injected, and not one gap of 2 s or more between acknowledged
/// sends charged to a fault window.
fn queue_without_gaps(nemesis: &str, seed: u64, time_limit: u64) {
    if skipped(&format!("harness run (queue, {nemesis})")) {
        return;
    }
    let run = harness("queue", nemesis, seed, time_limit);
    let faults = run.verdicts["faults"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // Printed first, so a failing assertion below still shows what was measured.
    eprintln!(
        "queue under {nemesis} (seed {seed}): valid {}, per-fault unavailability:\n{}\nfaults injected:\n{}",
        run.verdicts["valid"],
        describe_faults(&faults),
        run.events
            .iter()
            .filter(|e| e.is_nemesis() && (e.f.starts_with("start-") || e.f.starts_with("stop-")))
            .map(|e| format!("  {} {}", e.f, e.value))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_valid(&run, "queue", nemesis);
    assert_eq!(run.verdicts["queue"]["lost_count"], 0);
    assert_eq!(run.verdicts["split_brain"]["valid"], true);
    let nemesis_events = || run.events.iter().filter(|e| e.is_nemesis());
    for kind in nemesis.split(',') {
        let injected = match kind {
            "partition-controller" => nemesis_events()
                .filter(|e| {
                    e.f == "start-partition"
                        && e.value["variant"] == "isolate-controller-leader"
                        && e.value["drops"].as_object().is_some_and(|d| !d.is_empty())
                })
                .count(),
            "transfer-controller" => nemesis_events()
                .filter(|e| e.f == "stop-transfer-controller" && e.value["result"]["ok"] == true)
                .count(),
            _ => nemesis_events()
                .filter(|e| {
                    e.f == format!("start-{kind}")
                        && e.value["nodes"].as_array().is_some_and(|n| !n.is_empty())
                })
                .count(),
        };
        assert!(injected >= 1, "no {kind} fault was injected (seed {seed})");
    }
    if nemesis.split(',').any(|kind| kind == "kill-controller") {
        assert!(
            nemesis_events()
                .any(|e| e.f == "start-kill-controller" && e.value["was_leader"] == true),
            "seed {seed} no longer kills the controller leader: pick another"
        );
    }
    assert!(!faults.is_empty(), "no per-fault report");
    let with_gaps: Vec<&serde_json::Value> = faults
        .iter()
        .filter(|f| f["gaps"].as_array().is_some_and(|g| !g.is_empty()))
        .collect();
    assert!(
        with_gaps.is_empty(),
        "{} of {} {nemesis} windows cost acknowledged sends 2 s or more:\n{}",
        with_gaps.len(),
        faults.len(),
        describe_faults(&faults)
    );
}

// Seeds are chosen offline from `nemesis::timeline` (a pure function of the seed, the kinds
// and the time limit) so that each kind gets a window; the first window of seed 15 is a kill,
// and the nemesis's first draw for it picks the proxy.

#[test]
fn queue_under_partitions_and_kills() {
    let _one = serial();
    smoke("queue", "partition,kill", 15);
}

#[test]
fn controller_under_partitions_and_kills() {
    let _one = serial();
    smoke("controller", "partition,kill", 2);
}

/// Every controller fault in one 50 s run: seed 1090 pauses the controller leader (3-10 s),
/// kills the leader (15-21 s; the nemesis's first draw aims it at the leader), transfers the
/// leadership (26-28 s), isolates the leader (33-41 s) and transfers again (45-47 s).
#[test]
fn queue_has_no_gap_under_controller_faults() {
    let _one = serial();
    queue_without_gaps(
        "pause-controller,kill-controller,transfer-controller,partition-controller",
        1090,
        50,
    );
}

#[test]
fn controller_under_flip_flop() {
    let _one = serial();
    if skipped("harness run (controller, flip-flop)") {
        return;
    }
    let run = harness("controller", "flip-flop", 35, 40);
    assert_valid(&run, "controller", "flip-flop");
    // At least once the leadership went away and came back to the first leader.
    let round_trips = run
        .events
        .iter()
        .filter(|e| {
            e.f == "stop-flip-flop"
                && e.value["away"]["ok"] == true
                && e.value["back"]["ok"] == true
                && e.value["leader_after"] == e.value["nodes"][0]
        })
        .count();
    assert!(
        round_trips >= 1,
        "no flip-flop went away and back: {:?}",
        run.events
            .iter()
            .filter(|e| e.f.ends_with("flip-flop"))
            .map(|e| &e.value)
            .collect::<Vec<_>>()
    );
}

#[test]
fn controller_under_clock_steps() {
    let _one = serial();
    if skipped("harness run (controller, clock-step)") {
        return;
    }
    let run = harness("controller", "clock-step", 36, 40);
    assert_valid(&run, "controller", "clock-step");
    // The step shows in the node's log: lines logged during the window carry timestamps well
    // outside it (the steps are 60-300 s).
    let steps: Vec<&serde_json::Value> = run
        .events
        .iter()
        .filter(|e| e.f == "stop-clock-step")
        .map(|e| &e.value)
        .collect();
    assert!(!steps.is_empty(), "no clock step");
    assert!(
        steps.iter().any(|v| v["observed_skew_s"]
            .as_f64()
            .is_some_and(|s| s.abs() >= 30.0)),
        "no clock step showed in a node log: {steps:?}"
    );
    // Every controller and broker ran under the clock file from its first start.
    let log = std::fs::read_to_string(run.out.path().join("nodes/c1/node.log")).expect("c1 log");
    assert!(
        log.contains("under faketime reading"),
        "{}",
        &log[..log.len().min(300)]
    );
}

#[test]
fn queue_under_power_loss() {
    let _one = serial();
    if skipped("harness run (queue, power-loss)") {
        return;
    }
    // Root with network namespaces but no FUSE is a broken CI machine, not a reason to pass.
    if let Err(why) = rocketraft_jepsen::lazyfs::fuse_available() {
        panic!("the power-loss run needs FUSE (root and /dev/fuse): {why}");
    }
    // Seed 42 cuts the broker master, then a controller.
    let run = harness("queue", "power-loss", 42, 40);
    let cuts: Vec<&serde_json::Value> = run
        .events
        .iter()
        .filter(|e| e.f == "start-power-loss")
        .map(|e| &e.value)
        .collect();
    println!(
        "queue under power-loss (seed 42): {} acknowledged sends, lost {}, cuts {:?}",
        run.verdicts["queue"]["acknowledged"], run.verdicts["queue"]["lost_count"], cuts
    );
    assert_valid(&run, "queue", "power-loss");
    assert!(
        cuts.iter()
            .any(|v| v["nodes"].as_array().is_some_and(|n| !n.is_empty())),
        "no node lost its power: {cuts:?}"
    );
    for variant in ["broker-master", "controller"] {
        assert!(
            cuts.iter().any(|v| v["variant"] == variant),
            "seed 42 no longer cuts a {variant}: pick another seed ({cuts:?})"
        );
    }
    assert!(
        cuts.iter().any(|v| v["dropped_bytes"].as_u64().unwrap_or(0)
            + v["discarded_write_bytes"].as_u64().unwrap_or(0)
            > 0),
        "the cuts dropped nothing: the stores are not on the LazyFs mounts: {cuts:?}"
    );
    // Every mount of the run is gone.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let ours = run.out.path().to_string_lossy().to_string();
    assert!(
        !mounts.contains(&ours),
        "mounts of the run left behind:\n{}",
        mounts
            .lines()
            .filter(|l| l.contains(&ours))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
