//! `rocketraft`: the command-line entry point. Argument parsing and dispatch only; the servers live
//! in their crates, the admin and bench clients in `admin.rs` and `bench.rs`, the local cluster
//! launcher (`rocketraft cluster up|status|down`) in `cluster.rs`.

mod admin;
mod admin_acl;
mod admin_broker;
mod admin_consumer;
mod admin_controller;
mod bench;
mod bench_controller;
mod bench_pop;
mod bench_proxy;
mod bench_replication;
mod cluster;
mod config;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rocketraft_broker::Broker;
use rocketraft_nameserver::NameServer;

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
    /// Tokio worker threads (default: the number of cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a NameServer.
    Namesrv(config::NamesrvArgs),
    /// Run a broker.
    Broker(config::BrokerArgs),
    /// Run a stateless gRPC proxy (RocketMQ 5 clients) in front of the brokers a NameServer knows.
    Proxy(ProxyArgs),
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
}

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cli.log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = cli.threads {
        runtime.worker_threads(threads.max(1));
    }
    let inherited = cluster::Inherited {
        log: cli.log.clone(),
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
        Command::Proxy(args) => {
            let security = args.security()?;
            let scheme = if security.tls.is_some() {
                "TLS"
            } else {
                "plaintext"
            };
            let auth = if security.auth.enabled {
                ", authentication on"
            } else {
                ""
            };
            let proxy = rocketraft_proxy::Proxy::start_secure(
                rocketraft_proxy::ProxyConfig {
                    listen: args.listen,
                    advertised_host: args.advertised_host,
                    namesrv_addr: args.namesrv,
                },
                security,
            )
            .await?;
            println!(
                "rocketraft proxy is ready: gRPC {} ({scheme}{auth})",
                proxy.local_addr()
            );
            wait_for_shutdown().await;
            proxy.shutdown().await;
            Ok(())
        }
        Command::Namesrv(args) => {
            let config = args.load()?;
            let namesrv = NameServer::start(config).await?;
            println!(
                "rocketraft namesrv is ready: {}{}",
                namesrv.local_addr(),
                if namesrv.controller().is_some() {
                    " (with the controller)"
                } else {
                    ""
                }
            );
            wait_for_shutdown().await;
            namesrv.shutdown().await;
            Ok(())
        }
        Command::Controller(args) => {
            let config = args.load()?;
            let controller = rocketraft_controller::Controller::start(config)
                .await
                .map_err(anyhow::Error::msg)?;
            let addr = controller
                .serve_remoting()
                .await
                .map_err(anyhow::Error::msg)?;
            println!(
                "rocketraft controller {} is ready: Remoting {addr}, Raft {}",
                controller.raft().id(),
                controller.raft().local_addr()
            );
            wait_for_shutdown().await;
            controller.shutdown().await;
            Ok(())
        }
        Command::Broker(args) => {
            let config = args.load()?;
            let name = config.broker_name.clone();
            let store_root = config.store.store_root.clone();
            let namesrv_addr = config.namesrv_addr.clone();
            let broker = Broker::start(config).await?;
            let proxy = match args.proxy_listen {
                Some(listen) => Some(local_proxy(listen, namesrv_addr).await?),
                None => None,
            };
            println!(
                "rocketraft broker is ready: {} (broker set {}, data in {}){}",
                broker.advertised_addr(),
                name,
                store_root.display(),
                proxy
                    .as_ref()
                    .map(|p| format!(", gRPC proxy {}", p.local_addr()))
                    .unwrap_or_default()
            );
            wait_for_shutdown().await;
            if let Some(p) = proxy {
                p.shutdown().await;
            }
            broker.shutdown().await;
            Ok(())
        }
        Command::Dev(args) => {
            let (namesrv_config, broker_config) = args.load()?;
            let data_dir: PathBuf = broker_config.store.store_root.clone();
            let namesrv = NameServer::start(namesrv_config).await?;
            let broker = Broker::start(broker_config).await?;
            let namesrv_addr: SocketAddr =
                rocketraft_remoting::api::advertised(namesrv.local_addr());
            let proxy = if args.no_proxy {
                None
            } else {
                Some(local_proxy(args.proxy_listen, namesrv_addr.to_string()).await?)
            };
            println!(
                "rocketraft dev is ready: NameServer {namesrv_addr} (with the controller), broker {} (data in {}){}",
                broker.advertised_addr(),
                data_dir.display(),
                proxy
                    .as_ref()
                    .map(|p| format!(", gRPC proxy {}", p.local_addr()))
                    .unwrap_or_default()
            );
            wait_for_shutdown().await;
            if let Some(p) = proxy {
                p.shutdown().await;
            }
            broker.shutdown().await;
            namesrv.shutdown().await;
            Ok(())
        }
        Command::Admin(args) => admin::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Cluster(command) => cluster::run(command, inherited).await,
    }
}

/// The gRPC proxy in this process (local mode), plaintext, for `dev` and `broker
/// --proxy-listen`.
async fn local_proxy(
    listen: SocketAddr,
    namesrv_addr: String,
) -> anyhow::Result<rocketraft_proxy::Proxy> {
    rocketraft_proxy::Proxy::start(rocketraft_proxy::ProxyConfig {
        listen,
        advertised_host: None,
        namesrv_addr,
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e:#} (or pass --no-proxy / another --proxy-listen)"))
}

/// `rocketraft proxy` flags.
#[derive(clap::Args)]
struct ProxyArgs {
    /// gRPC listen address.
    #[arg(long, default_value = "0.0.0.0:8081")]
    listen: SocketAddr,
    /// NameServer addresses, `host:port` separated by `;`.
    #[arg(long, default_value = "127.0.0.1:9876")]
    namesrv: String,
    /// The host clients reach this proxy on (default: the listen IP, 127.0.0.1 if unspecified).
    #[arg(long)]
    advertised_host: Option<String>,
    /// Require signed requests (access key / secret key) and check ACL permissions; users and
    /// ACLs come from the brokers (`rocketraft admin acl ...`).
    #[arg(long)]
    auth: bool,
    /// How long the proxy reuses users and ACLs it read from the brokers, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    auth_cache_ms: u64,
    /// Serve TLS with this PEM certificate chain (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl ProxyArgs {
    fn security(&self) -> anyhow::Result<rocketraft_proxy::SecurityConfig> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(rocketraft_proxy::TlsConfig {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => None,
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        };
        Ok(rocketraft_proxy::SecurityConfig {
            auth: rocketraft_proxy::auth::AuthConfig {
                enabled: self.auth,
                cache_ttl: std::time::Duration::from_millis(self.auth_cache_ms),
            },
            tls,
        })
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn wait_for_shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down (flushing the store)");
}
