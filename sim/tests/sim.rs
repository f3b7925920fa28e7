//! The deterministic simulation in CI: a band of seeds must pass, and a seed must replay byte for
//! byte.

use rocketraft_sim::run_seed;
use rocketraft_sim::SimOptions;

/// Seeds CI runs on every test run (more with `rocketraft-sim --seeds N`).
const CI_SEEDS: u64 = 30;

/// Shorter runs than the binary's default, for a debug build in CI.
fn ci_options() -> SimOptions {
    SimOptions {
        fault_ms: 1000,
        ..SimOptions::default()
    }
}

#[test]
fn thirty_seeds_keep_every_invariant() {
    let opts = ci_options();
    let mut failed = Vec::new();
    let mut ops = 0;
    for seed in 1..=CI_SEEDS {
        let outcome = run_seed(seed, &opts);
        ops += outcome.stats.ops_ok;
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
        "failing seeds {failed:?}: replay with `rocketraft-sim --seed S --trace`"
    );
    // The clients got work done: a run where nothing is acknowledged checks little.
    assert!(ops > CI_SEEDS * 5, "only {ops} operations acknowledged");
}

#[test]
fn a_seed_replays_byte_for_byte() {
    let opts = ci_options();
    for seed in [7, 1234] {
        let a = run_seed(seed, &opts);
        let b = run_seed(seed, &opts);
        assert!(
            a.trace.len() > 50,
            "seed {seed}: a trace of {} lines",
            a.trace.len()
        );
        assert_eq!(a.stats, b.stats, "seed {seed}: stats differ");
        let (ta, tb) = (a.trace_text(), b.trace_text());
        if ta != tb {
            let first = a
                .trace
                .iter()
                .zip(&b.trace)
                .position(|(x, y)| x != y)
                .unwrap_or(a.trace.len().min(b.trace.len()));
            panic!(
                "seed {seed}: traces differ from line {first}:\n  {:?}\n  {:?}",
                a.trace.get(first),
                b.trace.get(first)
            );
        }
        // A different seed is a different run.
        let other = run_seed(seed + 1, &opts);
        assert_ne!(ta, other.trace_text());
    }
}
