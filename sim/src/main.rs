//! `rocketraft-sim`: runs seeds of the deterministic simulation (see `sim/README.md`).

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use rocketraft_sim::run_seed;
use rocketraft_sim::Bug;
use rocketraft_sim::SimOptions;

/// Deterministic simulation of the controller quorum: N seeds, or one seed replayed with its
/// trace.
#[derive(Parser, Debug)]
#[command(name = "rocketraft-sim")]
struct Args {
    /// How many seeds to run (from --seed, or from 1).
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// The first seed (with --seeds 1 and --trace: the seed to replay).
    #[arg(long)]
    seed: Option<u64>,
    /// Print each seed's whole trace.
    #[arg(long)]
    trace: bool,
    /// Controller nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 3)]
    clients: u64,
    /// Simulated milliseconds under faults per seed.
    #[arg(long, default_value_t = 3000)]
    fault_ms: u64,
    /// No faults: a calm run (the baseline).
    #[arg(long)]
    no_faults: bool,
    /// Run with a deliberate bug, to see the checker catch it: lose-unsynced-ack, forget-vote
    /// or stale-read.
    #[arg(long = "break", value_name = "BUG")]
    bug: Option<Bug>,
    /// Run three broker replicas of broker-a too (real stores and HA streams; roles from the
    /// simulated controllers; a producer; the message invariants). ack-before-replicas needs it.
    #[arg(long)]
    replicas: bool,
    /// With --replicas: a power loss takes every running replica at once (correlated), not
    /// one. A single replica's power loss is among the faults either way.
    #[arg(long)]
    power_loss_all: bool,
    /// With --replicas: the stores run ASYNC_FLUSH (nothing synced within a run but by a
    /// checkpoint or a truncation), to see what a power loss then loses.
    #[arg(long)]
    async_flush: bool,
    /// With --replicas (implied): each replica runs the broker's real ReplicaManager and
    /// controller client; the controller nodes answer its requests through the controller's
    /// request handling over the simulated network (sim/src/link.rs).
    #[arg(long)]
    controller_link: bool,
    /// With --controller-link: the controllers' scanner does not run and the simulated
    /// clients' controller-triggered elections of broker-a stand in for it, as before the
    /// scanner ran in the simulation (the regressions pinned to that mode replay it).
    #[arg(long)]
    stand_in_scanner: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // RUST_LOG=... shows openraft's and the controller's own logs, without wall-clock stamps.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .without_time()
        .with_writer(std::io::stderr)
        .init();
    if args.nodes < 2 {
        eprintln!("--nodes must be at least 2");
        return ExitCode::FAILURE;
    }
    let opts = SimOptions {
        nodes: args.nodes,
        clients: args.clients,
        fault_ms: args.fault_ms,
        faults: !args.no_faults,
        bug: args.bug,
        replicas: args.replicas || args.controller_link,
        controller_link: args.controller_link,
        stand_in_scanner: args.stand_in_scanner,
        power_loss_all: args.power_loss_all,
        async_flush: args.async_flush,
        ..SimOptions::default()
    };
    let first = args.seed.unwrap_or(1);
    let started = Instant::now();
    let mut failing = Vec::new();
    for seed in first..first.saturating_add(args.seeds) {
        let outcome = run_seed(seed, &opts);
        if args.trace {
            print!("{}", outcome.trace_text());
        }
        let s = &outcome.stats;
        let replicas = if opts.replicas {
            format!(
                "; replica crashes {} (power losses {}), lease clock steps {}, messages acknowledged {}",
                s.replica_crashes, s.power_losses, s.lease_clock_steps, s.acked_messages
            )
        } else {
            String::new()
        };
        let replicas = if opts.controller_link {
            format!(
                "{replicas}; link heartbeats {} (confirmed {}), fences {}; scanner elections {}, hand-overs {}, heartbeat timeouts {}",
                s.link_heartbeats, s.link_confirmed, s.link_fences, s.scanner_elections, s.scanner_hand_overs, s.scanner_timeouts
            )
        } else {
            replicas
        };
        println!(
            "seed {seed}: {} (ops ok {}, refused {}, unknown {}; crashes {}, partitions {}, clock steps {}, broker faults {}; messages {}, dropped {}{replicas})",
            if outcome.passed() { "ok" } else { "FAILED" },
            s.ops_ok,
            s.ops_refused,
            s.ops_unknown,
            s.crashes,
            s.partitions,
            s.clock_steps,
            s.broker_faults,
            s.messages,
            s.dropped,
        );
        for f in &outcome.failures {
            println!("  {f}");
        }
        if !outcome.passed() {
            failing.push(seed);
        }
    }
    // Wall-clock time goes to stderr only: stdout stays byte-identical for one seed.
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{} seeds in {secs:.1} s ({:.0} seeds/min)",
        args.seeds,
        args.seeds as f64 * 60.0 / secs.max(1e-9)
    );
    if failing.is_empty() {
        println!("summary: {} seeds, all passed", args.seeds);
        ExitCode::SUCCESS
    } else {
        println!(
            "summary: {} seeds, {} failed: {:?} (replay one with --seed S --trace)",
            args.seeds,
            failing.len(),
            failing
        );
        ExitCode::FAILURE
    }
}
