//! CI smoke runs of the fault-injecting harness against real `rocketraft` processes in network
//! namespaces: the queue workload and the controller workload, each once under partitions and
//! once under kill -9, about 40 s of faults each (plus start-up, recovery and, for the queue,
//! the final drain). Each must end VALID with faults actually injected and operations
//! acknowledged (messages delivered; controller operations checked linearizable). The queue
//! runs go through both paths: Remoting to the brokers and gRPC through the proxy (sends,
//! FIFO sends, receives and acks), and the kill run's seed also kills the proxy.
//!
//! Needs root and network namespaces; without them the test prints why and passes. Needs the
//! `rocketraft` binary of the same target directory (`cargo build --workspace --bins`); without
//! it the test fails and says so.

use std::path::{Path, PathBuf};
use std::process::Command;

use rocketraft_jepsen::record::{read_events, Kind};

/// `target/<profile>/rocketraft`, found from this test's executable (`target/<profile>/deps/..`)
/// or `$CARGO_TARGET_DIR`.
fn rocketraft_binary() -> PathBuf {
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            candidates.push(profile_dir.join("rocketraft"));
        }
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(&target).join("debug/rocketraft"));
        candidates.push(PathBuf::from(&target).join("release/rocketraft"));
    }
    match candidates.iter().find(|p| p.is_file()) {
        Some(path) => path.clone(),
        None => panic!(
            "the rocketraft binary is missing (looked at {candidates:?}): run `cargo build --workspace --bins` first"
        ),
    }
}

fn skip_reason() -> Option<String> {
    rocketraft_jepsen::net::netns_available()
        .err()
        .map(|why| format!("network namespaces unavailable ({why})"))
}

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

fn smoke(workload: &str, nemesis: &str, seed: u64) {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED harness smoke run ({workload}, {nemesis}): {why}");
        return;
    }
    let binary = rocketraft_binary();
    let out = tempfile::Builder::new()
        .prefix("rrj-smoke-")
        .tempdir_in("/tmp")
        .expect("a temporary report directory");
    let mut harness = Command::new(env!("CARGO_BIN_EXE_rocketraft-jepsen"))
        .args(["run", "--workload", workload, "--nemesis", nemesis])
        .args(["--time-limit", "40", "--seed", &seed.to_string()])
        .arg("--out")
        .arg(out.path())
        .arg("--bin")
        .arg(&binary)
        .spawn()
        .expect("rocketraft-jepsen runs");
    // The harness names its namespaces after its own PID.
    let harness_pid = harness.id();
    let status = harness.wait().expect("rocketraft-jepsen ends");
    let verdicts = std::fs::read_to_string(out.path().join("verdicts.json"))
        .unwrap_or_else(|e| panic!("no verdicts.json ({e}); exit status {status}"));
    assert!(
        status.success(),
        "the {workload} run under {nemesis} was not valid (exit {status}):\n{verdicts}"
    );
    let verdicts: serde_json::Value = serde_json::from_str(&verdicts).expect("verdicts are JSON");
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

    let history = std::fs::read_to_string(out.path().join("history.jsonl")).expect("history.jsonl");
    let events = read_events(&history).expect("the history parses");
    let started = events
        .iter()
        .filter(|e| e.is_nemesis() && e.f == format!("start-{nemesis}"))
        .count();
    assert!(started >= 1, "no {nemesis} fault was injected");
    assert!(events.iter().any(|e| e.f == "heal-all"));
    if workload == "queue" {
        assert!(events.iter().any(|e| e.f == "pop"
            && e.kind == Kind::Ok
            && e.value.as_array().is_some_and(|a| !a.is_empty())));
        check_grpc_path(&verdicts, &events);
        assert!(out.path().join("nodes/proxy/node.log").is_file());
        if nemesis == "kill" {
            assert!(
                events
                    .iter()
                    .any(|e| e.f == "start-kill" && e.value["variant"] == "proxy"),
                "seed {seed} no longer kills the proxy: pick another"
            );
        }
    } else {
        for f in ["read", "elect", "alter"] {
            assert!(
                events.iter().any(|e| e.f == f && e.kind == Kind::Ok),
                "no {f} succeeded"
            );
        }
    }
    let html = std::fs::read_to_string(out.path().join("index.html")).expect("index.html");
    assert!(html.contains("<svg"), "the report has its charts");
    assert!(out.path().join("nodes/b1/node.log").is_file());

    // Everything was torn down: no namespace of this run is left.
    let listing = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let listing = String::from_utf8_lossy(&listing.stdout);
    let own = format!("rrj{harness_pid}-");
    assert!(
        !listing.lines().any(|l| l.starts_with(&own)),
        "namespaces of this run ({own}*) left behind:\n{listing}"
    );
}

// One run after the other (the test harness runs tests in parallel): two clusters at once
// would overload a two-core machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn queue_under_partitions_and_kills() {
    let _one = serial();
    smoke("queue", "partition", 11);
    smoke("queue", "kill", 12);
}

#[test]
fn controller_under_partitions_and_kills() {
    let _one = serial();
    smoke("controller", "partition", 21);
    smoke("controller", "kill", 22);
}
