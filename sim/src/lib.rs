//! # rocketraft-sim — deterministic simulation (issue 21 item 1)
//!
//! Runs the controller quorum in one process on one thread under a paused tokio clock: real
//! openraft (`=0.10.0-alpha.37`) with Rocketraft's state-machine wrapper
//! ([`rocketraft_raft::state_machine::StateMachineStore`]: de-duplication by client and serial)
//! around the real controller state machine ([`rocketraft_controller::ControllerStateMachine`]),
//! a simulated network ([`net`]: delay, loss, reordering, duplication, partitions, one-way
//! cuts), a log store that loses what it had not synced when its process crashes ([`store`]),
//! simulated clients issuing controller requests, simulated brokers heartbeating every node's
//! real heartbeat table (`rocketraft_controller::heartbeat::HeartbeatTracker`), per-node
//! clocks that the nemesis steps ([`clock`]), and a nemesis. With
//! [`SimOptions::replicas`], three broker replicas on the real store and HA code
//! ([`replicas`], over [`stream`]) and a producer, with the message invariants; with
//! [`SimOptions::controller_link`] the replicas run the broker's real `ReplicaManager` and
//! controller client over a simulated transport, answered by the nodes through the
//! controller's request handling ([`link`]). Everything random is drawn
//! from one seed ([`rng`]), so a seed replays exactly: [`run_seed`] twice gives byte-identical
//! traces. [`check`] holds the invariants. See `sim/README.md`.

pub mod bug;
pub mod check;
pub mod clock;
pub mod disk;
pub mod lease_clock;
pub mod link;
pub mod net;
pub mod read_gate;
pub mod replicas;
pub mod rng;
pub mod scanner;
pub mod store;
pub mod stream;
mod world;

use std::cell::RefCell;
use std::sync::Once;

pub use bug::Bug;
pub use check::Violation;
pub use world::SimOptions;
pub use world::Stats;

/// The result of one seed.
#[derive(Debug)]
pub struct SeedOutcome {
    pub seed: u64,
    /// Every event, stamped with simulated time; identical for identical seeds.
    pub trace: Vec<String>,
    /// The invariants the run broke, one line each (empty: passed).
    pub failures: Vec<String>,
    /// Which invariants those were, in the order first broken.
    pub violations: Vec<Violation>,
    pub stats: Stats,
}

impl SeedOutcome {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The trace as one text (one line per event).
    pub fn trace_text(&self) -> String {
        let mut out = String::new();
        for line in &self.trace {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

thread_local! {
    /// Panics on this thread since the current run began (the run's tasks all run here).
    static PANICS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Records every panic of a simulation thread (the default hook still prints it).
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_string());
            PANICS.with(|p| p.borrow_mut().push(format!("panic{at}: {msg}")));
            previous(info);
        }));
    });
}

/// Runs one seed to the end and reports what it saw.
pub fn run_seed(seed: u64, opts: &SimOptions) -> SeedOutcome {
    install_panic_hook();
    PANICS.with(|p| p.borrow_mut().clear());
    let fail = |why: String| SeedOutcome {
        seed,
        trace: vec![why.clone()],
        failures: vec![why],
        violations: vec![Violation::Harness],
        stats: Stats::default(),
    };
    let dir = match tempfile::Builder::new().prefix("rocketraft-sim-").tempdir() {
        Ok(d) => d,
        Err(e) => return fail(format!("no temporary directory: {e}")),
    };
    // One thread, the clock paused: time moves only when every task waits, straight to the
    // next timer, so the order of events depends on the seed alone.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("no runtime: {e}")),
    };
    let world = world::World::new(seed, opts.clone(), dir.path().to_path_buf());
    let stats = runtime.block_on(world.clone().run());
    // Tasks still parked (a duplicate delivery, a dead process's sync) end with the runtime.
    drop(runtime);
    let checker = std::mem::take(&mut *world.check.lock());
    let (mut trace, mut failures, mut violations) = checker.into_parts();
    for panic in PANICS.with(|p| std::mem::take(&mut *p.borrow_mut())) {
        trace.push(format!("FAIL [panic] {panic}"));
        failures.push(format!("[panic] {panic}"));
        if !violations.contains(&Violation::Panic) {
            violations.push(Violation::Panic);
        }
    }
    SeedOutcome {
        seed,
        trace,
        failures,
        violations,
        stats,
    }
}
