//! The simulation with broker replicas (`--replicas`, `src/replicas.rs`) in CI: a band of seeds
//! keeps the message invariants, a seed replays byte for byte, and a deliberate bug (a send
//! acknowledged before the SyncStateSet holds it) is caught.

use rocketraft_sim::run_seed;
use rocketraft_sim::Bug;
use rocketraft_sim::SimOptions;
use rocketraft_sim::Violation;

/// Half a second of faults, as the controller-only CI seeds, with the replicas.
fn options() -> SimOptions {
    SimOptions {
        fault_ms: 500,
        replicas: true,
        ..SimOptions::default()
    }
}

#[test]
fn replica_seeds_keep_every_invariant() {
    let opts = options();
    let mut failed = Vec::new();
    let (mut acked, mut crashes) = (0, 0);
    for seed in 1..=10 {
        let outcome = run_seed(seed, &opts);
        acked += outcome.stats.acked_messages;
        crashes += outcome.stats.replica_crashes;
        if !outcome.passed() {
            eprintln!("seed {seed} failed:");
            for f in &outcome.failures {
                eprintln!("  {f}");
            }
            failed.push(seed);
        }
    }
    assert!(
        failed.is_empty(),
        "failing seeds {failed:?}: replay with `rocketraft-sim --replicas --fault-ms 500 --seed S --trace`"
    );
    // Messages were acknowledged and replicas crashed under them: a band where nothing is
    // acknowledged checks nothing.
    assert!(
        acked > 100,
        "only {acked} messages acknowledged in 10 seeds"
    );
    assert!(crashes > 0, "no replica crashed in 10 seeds");
}

#[test]
fn a_replica_seed_replays_byte_for_byte() {
    let opts = options();
    let a = run_seed(1, &opts);
    let b = run_seed(1, &opts);
    // Seed 1: the master a2 crashes with messages acknowledged, restarts and is master again.
    assert!(
        a.stats.acked_messages > 0 && a.stats.replica_crashes > 0,
        "seed 1 no longer acknowledges messages and crashes a replica: {:?}",
        a.stats
    );
    assert!(
        a.trace.iter().any(|l| l.contains(" a2 crash (Master")),
        "seed 1 no longer crashes its master"
    );
    assert_eq!(a.stats, b.stats, "stats differ");
    assert_same_trace(&a.trace, &b.trace);
    let other = run_seed(2, &opts);
    assert_ne!(a.trace_text(), other.trace_text());
}

#[test]
fn checker_catches_a_send_acknowledged_before_the_sync_state_set_holds_it() {
    // Seed 1: a2 is master with a1 in its SyncStateSet; message 8, acknowledged at once, is
    // not yet on a1 at the next sample (140 ms). 9 of seeds 1-20 are caught (those whose
    // SyncStateSet had grown past the master when a message was sent).
    let opts = SimOptions {
        bug: Some(Bug::AckBeforeReplicas),
        ..options()
    };
    let outcome = run_seed(1, &opts);
    for f in &outcome.failures {
        eprintln!("  {f}");
    }
    assert_eq!(outcome.violations, vec![Violation::MessageLost]);
    assert!(outcome
        .failures
        .iter()
        .all(|f| f.contains("[message-lost]")));
    let again = run_seed(1, &opts);
    assert_eq!(outcome.failures, again.failures);
    assert_same_trace(&outcome.trace, &again.trace);
}

/// Two runs printed the same trace, line for line (the first difference shown).
fn assert_same_trace(a: &[String], b: &[String]) {
    if a != b {
        let first = a
            .iter()
            .zip(b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        panic!(
            "traces differ from line {first} (of {} and {}):\n  {:?}\n  {:?}",
            a.len(),
            b.len(),
            a.get(first),
            b.get(first)
        );
    }
}

#[test]
fn a_master_restarted_in_its_epoch_does_not_move_its_slaves_confirm_offset_back() {
    // Seeds 50 and 67 (found in seeds 1-100): the master crashes and comes back master of the
    // same epoch with the confirm offset of its last checkpoint (0 here: the checkpoint runs
    // only at open); its first frames told the slaves that lower offset, and a slave's confirm
    // offset went back (seed 50: a1's from 2617 to 0 at 635 ms). Fixed in `ha::follow_stream`:
    // a slave's confirm offset never goes back within a session. The seeds must keep
    // exercising that: the master crashes in epoch 1 and comes back master of epoch 1 with a
    // confirm offset below a slave's.
    let opts = options();
    for seed in [50, 67] {
        let outcome = run_seed(seed, &opts);
        let crash = outcome
            .trace
            .iter()
            .position(|l| l.contains(" crash (Master of epoch 1"));
        let Some(crash) = crash else {
            panic!("seed {seed} no longer crashes its master");
        };
        let master = crash_master(&outcome.trace[crash]);
        let back = outcome.trace[crash..]
            .iter()
            .filter(|l| l.contains(&format!(" {master} master of epoch 1 ")))
            .find_map(|l| confirms(l));
        let Some((own, slaves)) = back else {
            panic!("seed {seed}: {master} never came back master of epoch 1 after its crash");
        };
        assert!(
            slaves > own,
            "seed {seed}: {master} came back master of epoch 1 with confirm {own}, not below a slave's ({slaves})"
        );
        assert!(outcome.passed(), "seed {seed}: {:?}", outcome.failures);
    }
}

/// The replica named in a trace line `... aN crash (...)`.
fn crash_master(line: &str) -> String {
    line.split_whitespace()
        .take_while(|w| *w != "crash")
        .last()
        .unwrap_or_default()
        .to_string()
}

/// (its confirm, the others' highest) from a line `... confirm C, others' highest confirm S`.
fn confirms(line: &str) -> Option<(i64, i64)> {
    let (_, tail) = line.split_once(", confirm ")?;
    let (own, slaves) = tail.split_once(", others' highest confirm ")?;
    Some((own.trim().parse().ok()?, slaves.trim().parse().ok()?))
}
