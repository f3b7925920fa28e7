//! The broker replicas over their real controller link (`--controller-link`, `src/link.rs`):
//! each replica runs the broker's `ReplicaManager` and `ControllerClient` over a simulated
//! transport, and the controller nodes answer through the controller's request handling. A
//! band keeps every invariant, a seed replays byte for byte, and the runs show the link at
//! work: leases renewed only by heartbeats a leader confirmed, elections and SyncStateSet
//! changes the replicas asked for, a lease lapsing while the master is cut from the
//! controllers.

use rocketraft_sim::run_seed;
use rocketraft_sim::SimOptions;

fn options() -> SimOptions {
    SimOptions {
        fault_ms: 500,
        replicas: true,
        controller_link: true,
        ..SimOptions::default()
    }
}

/// Link seeds CI runs (0.7 s of CPU each in a debug build; more with `rocketraft-sim
/// --controller-link --fault-ms 500 --seeds N`).
const LINK_SEEDS: u64 = 24;

#[test]
fn link_seeds_keep_every_invariant_and_exercise_the_link() {
    let opts = options();
    let mut failed = Vec::new();
    let (mut acked, mut crashes, mut confirmed, mut heartbeats) = (0, 0, 0, 0);
    let (mut elections, mut alters) = (0, 0);
    for seed in 1..=LINK_SEEDS {
        let outcome = run_seed(seed, &opts);
        acked += outcome.stats.acked_messages;
        crashes += outcome.stats.replica_crashes;
        confirmed += outcome.stats.link_confirmed;
        heartbeats += outcome.stats.link_heartbeats;
        elections += outcome
            .trace
            .iter()
            .filter(|l| l.contains(" link elect broker-a") && l.contains(": Elected master"))
            .count();
        alters += outcome
            .trace
            .iter()
            .filter(|l| l.contains(" link alter broker-a") && l.contains(": set {"))
            .count();
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
        "failing seeds {failed:?}: replay with `rocketraft-sim --controller-link --fault-ms 500 --seed S --trace`"
    );
    // With the link, a master's lease is renewed only by `ReplicaManager::heartbeat_to` on a
    // heartbeat a controller leader confirmed, and a send is acknowledged only under a valid
    // lease: acknowledged messages prove the real heartbeat path renewed leases.
    assert!(
        acked > 50,
        "only {acked} messages acknowledged in {LINK_SEEDS} seeds"
    );
    assert!(
        confirmed > 100 && confirmed < heartbeats,
        "heartbeats {heartbeats}, confirmed {confirmed}: followers answer unconfirmed, the leader confirms"
    );
    // Elections the replicas asked for (`ControllerLink::register`, `elect_if_masterless`) and
    // SyncStateSet changes their `check_sync_state_set` proposed, committed through the log.
    assert!(
        elections >= 8,
        "only {elections} elections through the link"
    );
    assert!(alters > 0, "no SyncStateSet change through the link");
    assert!(crashes > 0, "no replica crashed in {LINK_SEEDS} seeds");
}

#[test]
fn a_link_seed_replays_byte_for_byte() {
    let opts = options();
    let a = run_seed(1, &opts);
    let b = run_seed(1, &opts);
    assert!(a.passed(), "seed 1 failed: {:?}", a.failures);
    assert!(a.stats.acked_messages > 0, "{:?}", a.stats);
    assert_eq!(a.stats, b.stats, "stats differ");
    if a.trace != b.trace {
        let at = a
            .trace
            .iter()
            .zip(&b.trace)
            .position(|(x, y)| x != y)
            .unwrap_or(a.trace.len().min(b.trace.len()));
        panic!(
            "traces differ at line {at}: {:?} vs {:?}",
            a.trace.get(at),
            b.trace.get(at)
        );
    }
}

/// Seed 43 (0.5 s of faults): a1, master of epoch 1 with its SyncStateSet grown to {1, 2, 3}
/// through its own `check_sync_state_set`, is cut from every controller at 247 ms. Its
/// heartbeats no longer reach a leader, so `heartbeat_to` renews nothing and its lease lapses
/// (the sampler sees it master without a lease) before the controllers' scanner, on leader n3,
/// finds its heartbeat timed out and elects a2 master of epoch 2 (427 ms,
/// `scanner::scan_round`); a1 then follows a2 as a slave of epoch 2. Without the real link
/// a1's lease would come from elsewhere (or from nothing) and none of these lines would
/// appear. (Before the scanner ran here a client's controller-triggered election stood in
/// for it, at 465 ms; until the proposals ran in a task of their own, the same seed played it
/// with a3 and a1.)
#[test]
fn an_isolated_master_loses_its_lease_before_another_is_elected() {
    let outcome = run_seed(43, &options());
    assert!(outcome.passed(), "seed 43 failed: {:?}", outcome.failures);
    let trace = &outcome.trace;
    let at = |needle: &str| trace.iter().position(|l| l.contains(needle));
    let elected = at("scanner n3 elect broker-a by None")
        .filter(|i| trace[*i].contains("Elected master Some(2) epoch 2"))
        .expect("the scanner did not elect a2 for epoch 2");
    let leased = at("a1 is Master of epoch 1 with a lease").expect("a1 never held a lease");
    let grown = at("link alter broker-a master 1 epoch 1 set {1, 2, 3}")
        .expect("a1's SyncStateSet change did not go through the link");
    let isolated =
        at("a1 (master) isolated from the controllers").expect("a1 was not cut off: seed changed");
    let lapsed = trace
        .iter()
        .enumerate()
        .skip(isolated)
        .position(|(_, l)| l.contains("a1 is Master of epoch 1 (master"))
        .map(|p| p + isolated)
        .expect("a1's lease did not lapse after it was cut from the controllers");
    let successor = at("a2 is Master of epoch 2").expect("no new master of epoch 2");
    let followed = at("a1 is Slave of epoch 2").expect("a1 did not learn of epoch 2");
    assert!(
        leased < isolated && grown < isolated,
        "{leased} {grown} {isolated}"
    );
    assert!(
        lapsed < elected && elected < successor,
        "a1's lease lapsed at line {lapsed}, the scanner elected at line {elected}, a2 became master at line {successor}"
    );
    assert!(elected < followed);
}

/// Regression (a finding of the link, fixed): seed 3 with 3 s of faults. a1, master of epoch
/// 1, is cut from two controllers (386 ms); its lease lapses, and a2 is elected master of
/// epoch 2 (583 ms). After the heal a1 has not yet learned of epoch 2 and its heartbeat
/// reaches the new leader n3 (term 5, 775 ms). Before the fix the leader confirmed it
/// (`leaderConfirmed` asked only whether a quorum acknowledged the leader lately) and a1
/// renewed its lease as master of epoch 1 while a2 held one for epoch 2 (790 ms):
/// `[lease-overlap]`, docs/safety.md Claim 1. Now a lease is renewed only on
/// `leaseConfirmed`: a settled leader whose applied state names the broker master at the
/// epoch it reports (`service::answer_heartbeat`). Found before the scanner ran here: the seed
/// replays in that mode (`stand_in_scanner`, the clients' elections; the same trace as then).
#[test]
fn a_deposed_master_does_not_renew_its_lease_on_a_heartbeat_after_the_heal() {
    let opts = SimOptions {
        fault_ms: 3000,
        stand_in_scanner: true,
        ..options()
    };
    let outcome = run_seed(3, &opts);
    assert!(
        outcome.failures.is_empty(),
        "seed 3: {:?}",
        outcome.failures
    );
    assert!(
        !outcome
            .trace
            .iter()
            .any(|l| l.contains("a1 is Master of epoch 1 with a lease") && l.contains("790ms")),
        "a1 renewed its lease for epoch 1 after a2 was elected"
    );
    // The run still goes through the failover the finding needed.
    assert!(
        outcome
            .trace
            .iter()
            .any(|l| l.contains("a2 is Master of epoch 2")),
        "seed 3 no longer elects a2 for epoch 2; pick another seed"
    );
}

/// Regression (found by the link band, fixed): seed 106 with 3 s of faults. n2, leader of term
/// 17, crashes at 1839 ms having sent two entries it had not synced (T17-N2.71 and .72) to n3;
/// it restarted with its log up to 70 and, openraft resuming a leader whose vote was committed,
/// led term 17 again and proposed two other entries under the same log ids. n3 kept its own
/// (log matching compares ids), so at index 72 n2 applied "MasterNotAvailable" and n3 "master
/// 2, epoch 2": `[state-diverged]`, `[two-masters]`. Now a restarted leader stands for election
/// in a new term (`enable_leader_restore: false`, in `RaftNode` and the simulation), and the
/// seed passes. (Production's RocksDB log syncs an append before openraft can read and
/// replicate it, so there the entries lost were never sent; the stale read of seed 84 applied
/// there too: the committed log id is saved unsynced, and a resumed leader read at it.)
/// Found before the scanner ran here: the seed replays in that mode (`stand_in_scanner`).
/// With the fix reverted the seed now fails on the term assertion below (n2 leads term 17 again
/// and proposes T17-N2.71 and .72 anew) without reaching the divergence: the run's later events
/// changed since it was found (checked at `e341558`).
#[test]
fn a_restarted_leader_does_not_resume_its_term() {
    let opts = SimOptions {
        fault_ms: 3000,
        stand_in_scanner: true,
        ..options()
    };
    let outcome = run_seed(106, &opts);
    assert!(
        outcome.failures.is_empty(),
        "seed 106: {:?}",
        outcome.failures
    );
    let trace = &outcome.trace;
    let at = |needle: &str| trace.iter().position(|l| l.contains(needle));
    let crashed = at("n2 crash (2 unsynced entries lost)").expect("seed 106 changed: no n2 crash");
    assert!(
        trace[crashed..]
            .iter()
            .any(|l| l.contains(" leads term 18")),
        "no new term after the leader's crash"
    );
}

/// Names of this process's threads (Linux: `/proc/self/task/*/comm`).
fn thread_names() -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}

/// Regression (issue 21, found by a band on a loaded machine, fixed): seed 523 with 3 s of
/// faults. a3 opens its store at 0 ms, and the store's allocator thread was asked to prepare
/// the next segment (00000000000000065536) beside the simulation's thread. a3 loses power at
/// 73 ms: when the thread had not yet created the segment by then (a slow fsync), it created,
/// synced and renamed it after the disk model froze, so the model counted none of its syncs
/// and the power loss cut the renamed file to 0 bytes, a state production cannot reach (the
/// file is sized and synced before its rename). At 3558 ms a3 did not open its store ("is 0
/// bytes but commitlog_segment_size is 65536", `[harness]`), and the run printed other counts
/// (messages 6954, not 7219): the seed did not decide the outcome, the OS scheduler did.
/// Reproduced by delaying `fallocate` under strace. Now the store in the simulation's mode
/// (`blocking_io`) prepares segments on the writer's own thread (`SegmentAllocator::inline`):
/// no allocator thread runs, and the segment is on disk and synced before the power loss.
#[test]
fn a_power_loss_right_after_open_keeps_the_prepared_segment() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut seen = std::collections::BTreeSet::new();
            while !done.load(Ordering::Acquire) {
                seen.extend(
                    thread_names()
                        .into_iter()
                        .filter(|n| n.starts_with("store-allocator")),
                );
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            seen
        })
    };
    let opts = SimOptions {
        fault_ms: 3000,
        ..options()
    };
    let outcome = run_seed(523, &opts);
    done.store(true, Ordering::Release);
    let allocators = watcher.join().expect("watcher");
    assert!(
        allocators.is_empty(),
        "a store of the simulation ran an allocator thread beside it: {allocators:?}"
    );
    assert!(
        outcome.failures.is_empty(),
        "seed 523: {:?}",
        outcome.failures
    );
    let trace = &outcome.trace;
    let at = |needle: &str| trace.iter().position(|l| l.contains(needle));
    let lost = at("73ms a3 power loss: everything was synced")
        .expect("seed 523 changed: no power loss of a3 at 73 ms");
    // a3 reopens its store later (3558 ms before the scanner ran here, 3100 ms now).
    let reopened = trace[lost..]
        .iter()
        .position(|l| l.contains(" a3 up (log"))
        .expect("a3 did not reopen its store");
    assert!(reopened > 0);
    assert!(outcome.stats.acked_messages > 0, "{:?}", outcome.stats);
}

/// The controllers' real scanner replaces a master that stopped heartbeating because it
/// crashed (seed 16, 3 s of faults). n3 leads term 3 from 900 ms; a3, master of epoch 1 with
/// {1, 3}, crashes at 911 ms and stays down. No client elects `broker-a` in this mode: n3's
/// scanner (`scanner::scan_round`) elects a1 master of epoch 2 at 1075 ms, once a3's heartbeat
/// timed out in its table (160 ms) and n3 had been in office a full heartbeat timeout
/// (`tenure_needed`), through the write path with the leader's liveness; a1 later takes the
/// role (it was cut from the controllers by a partition at 1052 ms and learns it on a poll).
#[test]
fn the_scanner_replaces_a_crashed_master() {
    let opts = SimOptions {
        fault_ms: 3000,
        ..options()
    };
    let outcome = run_seed(16, &opts);
    assert!(
        outcome.failures.is_empty(),
        "seed 16: {:?}",
        outcome.failures
    );
    let trace = &outcome.trace;
    let at = |needle: &str| trace.iter().position(|l| l.contains(needle));
    let ms = |i: usize| -> u64 {
        trace[i]
            .split_whitespace()
            .next()
            .and_then(|t| t.strip_suffix("ms"))
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no time in {:?}", trace[i]))
    };
    let tenure =
        at("n3 tenure of term 3 begins").expect("seed 16 changed: n3 does not lead term 3");
    let crashed =
        at("a3 crash (Master of epoch 1").expect("seed 16 changed: a3 does not crash as master");
    let elected = trace
        .iter()
        .position(|l| {
            l.contains("scanner n3 elect broker-a by None")
                && l.contains("Elected master Some(1) epoch 2")
        })
        .expect("the scanner did not elect a1 for epoch 2");
    assert!(
        !trace[crashed..elected]
            .iter()
            .any(|l| l.contains(" a3 up (")),
        "a3 came back before the election"
    );
    // Not before a3's heartbeat timed out, nor before n3 was in office a heartbeat timeout.
    let timeout = rocketraft_sim::link::CONTROLLER_TIMEOUT_MS;
    assert!(
        ms(elected) >= ms(crashed) + timeout / 2,
        "{}",
        trace[elected]
    );
    assert!(ms(elected) >= ms(tenure) + timeout, "{}", trace[elected]);
    assert!(
        trace[elected..]
            .iter()
            .any(|l| l.contains("a1 is Master of epoch 2")),
        "a1 never took the role"
    );
    assert!(outcome.stats.scanner_elections >= 1, "{:?}", outcome.stats);
    let by_client = |l: &&String| {
        let mut words = l.split_whitespace().skip(1);
        let who = words.next().unwrap_or("");
        who.starts_with('c')
            && who[1..].chars().all(|c| c.is_ascii_digit())
            && words.next() == Some("elect")
            && words.next() == Some("broker-a")
    };
    assert!(
        !trace.iter().any(|l| by_client(&l)),
        "a client elected broker-a: the stand-in elections should be off"
    );
}
