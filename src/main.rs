//! `rocketraft`: the command-line entry point. Argument parsing and dispatch only; the servers
//! live in their crates, the commands in [`cmd`]: the server commands in `cmd/server/`, the admin
//! verbs in `cmd/admin/`, the benches in `cmd/bench/`, the local cluster launcher (`rocketraft
//! cluster up|status|down`) in `cmd/cluster/`.

mod cmd;

/// mimalloc rather than glibc's malloc: a broker allocates and frees per request (frames,
/// headers, messages), and glibc's allocator took about a fifth of the broker's CPU under
/// `bench produce` (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use cmd::server::{self, config};
use cmd::{admin, bench, cluster, console};

#[derive(Parser)]
#[command(
    name = "rocketraft",
    version,
    about = "RocketMQ 5 architecture in Rust"
)]
struct Cli {
    /// Log filter (tracing's EnvFilter syntax); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    /// Log lines as human-readable text or as one JSON object per line (for log shippers).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Tokio worker threads (default: the number of cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a NameServer.
    Namesrv(config::NamesrvArgs),
    /// Run a broker.
    Broker(config::BrokerArgs),
    /// Run a stateless gRPC proxy (RocketMQ 5 clients) in front of the brokers a NameServer knows.
    Proxy(server::ProxyArgs),
    /// Run one member of a standalone controller quorum.
    Controller(config::ControllerArgs),
    /// Run NameServer and broker in one process on loopback, data under ./data.
    Dev(config::DevArgs),
    /// Administer a running cluster.
    Admin(admin::AdminArgs),
    /// Measure a running cluster (produce, consume) or the store (recovery).
    Bench(bench::BenchArgs),
    /// A local cluster (controller quorum, NameServer, one broker set) as processes on loopback.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// A web console for a running cluster: brokers, topics, consumer groups, messages.
    Console(console::ConsoleArgs),
}

/// The log filter: `RUST_LOG` when set (per module, e.g.
/// `RUST_LOG=info,rocketraft_broker::store=debug`), else `--log`; a filter that does not parse
/// is reported and `info` used.
fn log_filter(flag: &str) -> tracing_subscriber::EnvFilter {
    let (source, spec) = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => ("RUST_LOG", v),
        _ => ("--log", flag.to_string()),
    };
    tracing_subscriber::EnvFilter::try_new(&spec).unwrap_or_else(|e| {
        eprintln!("warning: {source}={spec:?} is not a log filter ({e}); logging at info");
        tracing_subscriber::EnvFilter::new("info")
    })
}

fn main() {
    let cli = Cli::parse();
    let filter = log_filter(&cli.log);
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = cli.threads {
        runtime.worker_threads(threads.max(1));
    }
    let inherited = cluster::Inherited {
        log: cli.log.clone(),
        log_format: cli.log_format,
        threads: cli.threads,
    };
    let result = runtime
        .build()
        .context("cannot start the async runtime")
        .and_then(|rt| rt.block_on(run(cli.command, inherited)));
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(command: Command, inherited: cluster::Inherited) -> anyhow::Result<()> {
    match command {
        Command::Namesrv(args) => server::namesrv(args).await,
        Command::Broker(args) => server::broker(args).await,
        Command::Proxy(args) => server::proxy(args).await,
        Command::Controller(args) => server::controller(args).await,
        Command::Dev(args) => server::dev(args).await,
        Command::Admin(args) => admin::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Cluster(command) => cluster::run(command, inherited).await,
        Command::Console(args) => console::run(args).await,
    }
}
