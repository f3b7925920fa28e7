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

/// Runs `seeds` with `opts`, requiring every one to pass; returns the summed stats.
fn band(opts: &SimOptions, seeds: std::ops::RangeInclusive<u64>) -> rocketraft_sim::Stats {
    let mut total = rocketraft_sim::Stats::default();
    let mut failed = Vec::new();
    for seed in seeds {
        let outcome = run_seed(seed, opts);
        let s = &outcome.stats;
        total.acked_messages += s.acked_messages;
        total.replica_crashes += s.replica_crashes;
        total.power_losses += s.power_losses;
        total.lease_clock_steps += s.lease_clock_steps;
        total.replica_isolations += s.replica_isolations;
        for (k, n) in &s.disk_losses {
            *total.disk_losses.entry(k.clone()).or_insert(0) += n;
        }
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
        "failing seeds {failed:?}: replay with `rocketraft-sim --replicas --fault-ms 500 --seed S --trace` (with --power-loss-all if set)"
    );
    total
}

/// The single-replica band's checks on its summed stats.
fn single_replica_checks(total: &rocketraft_sim::Stats, min: u64) {
    eprintln!("{total:?}");
    assert!(total.power_losses >= min, "too few power losses: {total:?}");
    assert!(
        total.lease_clock_steps >= min,
        "too few lease clock steps: {total:?}"
    );
    assert!(
        total.replica_isolations >= min,
        "too few isolations: {total:?}"
    );
    assert!(
        total.acked_messages > 25 * min,
        "too few acknowledged: {total:?}"
    );
    // The power losses lost unsynced bytes (a band where every file was synced checks no
    // recovery).
    let lost: u64 = total
        .disk_losses
        .iter()
        .filter(|(k, _)| !k.ends_with(" length"))
        .map(|(_, n)| n)
        .sum();
    assert!(lost > 0, "no power loss lost a byte: {total:?}");
}

#[test]
fn single_replica_power_losses_and_lease_clock_faults_keep_every_invariant() {
    // Seeds 11-25 (1-10 run above; the full band 11-40 is `#[ignore]`d below): a replica's
    // crash is a power loss one time in two (its files keep what was synced, then a seeded
    // loss per page), lease clocks run at rates within 5 % and are stepped forward, and the
    // master is cut from the controllers now and then.
    single_replica_checks(&band(&options(), 11..=25), 2);
}

#[test]
#[ignore = "the full band, 2-3 minutes: cargo test -p rocketraft-sim --test replicas -- --ignored"]
fn single_replica_power_losses_full_band() {
    single_replica_checks(&band(&options(), 11..=40), 4);
}

fn correlated_checks(total: &rocketraft_sim::Stats, min: u64) {
    eprintln!("{total:?}");
    assert!(total.power_losses >= min, "too few power losses: {total:?}");
    assert!(
        total.acked_messages > 25 * min,
        "too few acknowledged: {total:?}"
    );
}

#[test]
fn correlated_power_losses_of_every_replica_lose_nothing_acknowledged_under_sync_flush() {
    // Every running replica loses power at once. The replicas run SYNC_FLUSH: a master syncs a
    // put before it counts it, a slave syncs a replicated append before it reports it
    // (`writer.rs` `replicate`), so every acknowledged message is synced on every member of
    // the SyncStateSet it was acknowledged under. Seeds 1-12 (the full band 1-25 is
    // `#[ignore]`d below).
    let opts = SimOptions {
        power_loss_all: true,
        ..options()
    };
    correlated_checks(&band(&opts, 1..=12), 4);
}

#[test]
#[ignore = "the full band, about 2 minutes: cargo test -p rocketraft-sim --test replicas -- --ignored"]
fn correlated_power_losses_full_band() {
    let opts = SimOptions {
        power_loss_all: true,
        ..options()
    };
    correlated_checks(&band(&opts, 1..=25), 8);
}

#[test]
fn a_seed_with_a_power_loss_and_a_lease_clock_step_replays_byte_for_byte() {
    // Seed 5: the master a1 is cut from the controllers at 294 ms and its lease clock steps
    // 57 ms forward; it loses power at 489 ms (a ConsumeQueue file keeps a prefix of its
    // unsynced entries) and recovers at 679 ms.
    let opts = options();
    let a = run_seed(5, &opts);
    let b = run_seed(5, &opts);
    assert!(
        a.stats.power_losses > 0
            && a.stats.lease_clock_steps > 0
            && a.trace
                .iter()
                .any(|l| l.contains(" power loss: consumequeue/")),
        "seed 5 no longer has a power loss that loses bytes and a lease clock step: {:?}",
        a.stats
    );
    assert!(a.passed(), "{:?}", a.failures);
    assert_eq!(a.stats, b.stats, "stats differ");
    assert_same_trace(&a.trace, &b.trace);
}

#[test]
fn checker_catches_a_lease_clock_slower_than_the_documented_bound() {
    // `slow-lease-clock`: every replica's lease clock runs at a fifth of the real rate (the
    // bound is 5 %), so a 120 ms lease lasts 600 ms. Seed 14 with 1.5 s of faults: a1, master
    // of epoch 1, is cut from the controllers at 842 ms; they elect a3 (epoch 2, 1020 ms) while
    // a1's lease still runs on its slow clock: both are master with a valid lease at 1025 ms.
    // (Seeds 1-30 with 1.5 s of faults catch only this one; with 0.5 s none of 1-40.)
    let opts = SimOptions {
        bug: Some(Bug::SlowLeaseClock),
        fault_ms: 1500,
        ..options()
    };
    let outcome = run_seed(14, &opts);
    for f in &outcome.failures {
        eprintln!("  {f}");
    }
    // a1, still master of epoch 1 with a valid lease on its slow clock, then also lacks what
    // epoch 2 confirmed from 1030 ms on: a writable master must hold the whole confirmed
    // prefix (`[confirmed-lost]` relaxes that only for a master whose lease ran out).
    assert_eq!(
        outcome.violations,
        vec![Violation::LeaseOverlap, Violation::ConfirmedLost]
    );
    assert!(outcome
        .failures
        .iter()
        .all(|f| f.contains("[lease-overlap]")
            || f.contains("[confirmed-lost] a1 (Master of epoch 1")));
    let again = run_seed(14, &opts);
    assert_eq!(outcome.failures, again.failures);
    assert_same_trace(&outcome.trace, &again.trace);
}

#[test]
fn power_loss_of_an_async_flush_replica_loses_acknowledged_messages() {
    // The model's self-test: it can lose an acknowledged message. With ASYNC_FLUSH nothing is
    // synced within a run (no checkpoint, the flusher's interval is an hour), so an
    // acknowledgement stands on page caches only. Seed 14: a2, a slave of a1 in the set
    // {1, 2}, loses power at 291 ms (of its CommitLog's two unsynced pages the second is
    // lost) and at 560 ms lacks messages a1 acknowledged under {1, 2}. (Seeds 5 and 18, a
    // master alone in its set losing power, also fail `[confirmed-lost]`, and 5 `[confirm-back]`.)
    let opts = SimOptions {
        async_flush: true,
        ..options()
    };
    let outcome = run_seed(14, &opts);
    for f in &outcome.failures {
        eprintln!("  {f}");
    }
    assert_eq!(outcome.violations, vec![Violation::MessageLost]);
    assert!(outcome
        .failures
        .iter()
        .all(|f| f.contains("[message-lost]")));
    let commitlog: u64 = outcome
        .stats
        .disk_losses
        .iter()
        .filter(|(k, _)| k.starts_with("commitlog ") && !k.ends_with(" length"))
        .map(|(_, n)| n)
        .sum();
    assert!(
        commitlog > 0,
        "no CommitLog bytes lost: {:?}",
        outcome.stats
    );
    let again = run_seed(14, &opts);
    assert_eq!(outcome.failures, again.failures);
    assert_eq!(outcome.stats, again.stats);
    assert_same_trace(&outcome.trace, &again.trace);
}
