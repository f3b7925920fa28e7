//! The server commands: `rocketraft namesrv`, `broker`, `proxy`, `controller` and `dev`, each
//! running until Ctrl-C / SIGTERM. The servers live in their crates; [`config`] turns the flags
//! and `--config` files into their configurations.

pub mod conf_file;
pub mod config;
pub mod metrics;

use std::net::SocketAddr;
use std::path::PathBuf;

use rocketraft_broker::Broker;
use rocketraft_nameserver::NameServer;

use metrics::ProcessMetrics;

/// `rocketraft namesrv`: a NameServer until Ctrl-C / SIGTERM.
pub async fn namesrv(args: config::NamesrvArgs) -> anyhow::Result<()> {
    listen_for_shutdown();
    let mut config = args.load()?;
    let mut process = ProcessMetrics::new();
    let node_id = config.listen.to_string();
    if args.metrics.metrics_listen.is_some() {
        config.rpc_metrics = Some(process.rpc_for("", "namesrv", &node_id));
    }
    let namesrv = NameServer::start(config).await?;
    process.add("", "namesrv", &node_id, namesrv.metrics_collector());
    let metrics = serve_metrics(process, args.metrics.metrics_listen).await?;
    let console = match args.console_listen {
        Some(listen) => Some(
            crate::cmd::console::serve_embedded(
                rocketraft_remoting::api::advertised(namesrv.local_addr()).to_string(),
                args.console_controller.as_deref(),
                args.console_credentials_file.as_deref(),
                listen,
            )
            .await?,
        ),
        None => None,
    };
    println!(
        "rocketraft namesrv is ready: {}{}{}{}",
        namesrv.local_addr(),
        if namesrv.controller().is_some() {
            " (with the controller)"
        } else {
            ""
        },
        metrics_note(metrics.as_ref()),
        console_note(console.as_ref())
    );
    wait_for_shutdown().await;
    stop_metrics(console).await;
    stop_metrics(metrics).await;
    namesrv.shutdown().await;
    Ok(())
}

/// `rocketraft broker`: a broker (with an in-process proxy if asked) until Ctrl-C / SIGTERM.
pub async fn broker(args: config::BrokerArgs) -> anyhow::Result<()> {
    listen_for_shutdown();
    let mut config = args.load()?;
    let name = config.broker_name.clone();
    let cluster = config.cluster_name.clone();
    let store_root = config.store.store_root.clone();
    let namesrv_addr = config.namesrv_addr.clone();
    let remoting = proxy_remoting(&config)?;
    let mut process = ProcessMetrics::new();
    let metrics_on = args.metrics.metrics_listen.is_some();
    if metrics_on {
        config.rpc_metrics = Some(process.rpc_for(&cluster, "broker", &name));
    }
    let broker = Broker::start(config).await?;
    process.add(&cluster, "broker", &name, broker.metrics_collector());
    let proxy = match args.proxy_listen {
        Some(listen) => {
            let rpc = metrics_on.then(|| process.rpc_for(&cluster, "proxy", &listen.to_string()));
            let proxy = local_proxy(listen, namesrv_addr, remoting, rpc).await?;
            process.add(
                &cluster,
                "proxy",
                &listen.to_string(),
                proxy.metrics_collector(),
            );
            Some(proxy)
        }
        None => None,
    };
    let metrics = serve_metrics(process, args.metrics.metrics_listen).await?;
    println!(
        "rocketraft broker is ready: {} (broker set {}, data in {}){}{}",
        broker.advertised_addr(),
        name,
        store_root.display(),
        proxy_note(proxy.as_ref()),
        metrics_note(metrics.as_ref())
    );
    until_shutdown(proxy).await;
    stop_metrics(metrics).await;
    broker.shutdown().await;
    Ok(())
}

/// `rocketraft proxy`: a stateless gRPC proxy until Ctrl-C / SIGTERM.
pub async fn proxy(args: ProxyArgs) -> anyhow::Result<()> {
    listen_for_shutdown();
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
    let mut process = ProcessMetrics::new();
    let node_id = args.listen.to_string();
    let rpc_metrics = args
        .metrics
        .metrics_listen
        .map(|_| process.rpc_for(&args.proxy_cluster_name, "proxy", &node_id));
    let proxy = rocketraft_proxy::Proxy::start_secure(
        rocketraft_proxy::ProxyConfig {
            listen: args.listen,
            advertised_host: args.advertised_host.clone(),
            namesrv_addr: args.namesrv.clone(),
            rpc_metrics,
            metric_collector_mode: args.metric_collector_mode,
            metric_collector_address: args.metric_collector_address.clone(),
            ..Default::default()
        },
        security,
    )
    .await?;
    process.add(
        &args.proxy_cluster_name,
        "proxy",
        &node_id,
        proxy.metrics_collector(),
    );
    let metrics = serve_metrics(process, args.metrics.metrics_listen).await?;
    println!(
        "rocketraft proxy is ready: gRPC {} ({scheme}{auth}){}",
        proxy.local_addr(),
        metrics_note(metrics.as_ref())
    );
    wait_for_shutdown().await;
    stop_metrics(metrics).await;
    proxy.shutdown().await;
    Ok(())
}

/// `rocketraft controller`: one member of a standalone controller quorum until Ctrl-C / SIGTERM.
pub async fn controller(args: config::ControllerArgs) -> anyhow::Result<()> {
    listen_for_shutdown();
    let mut config = args.load()?;
    let mut process = ProcessMetrics::new();
    let node_id = config.raft.node_id.to_string();
    if args.metrics.metrics_listen.is_some() {
        config.rpc_metrics = Some(process.rpc_for("", "controller", &node_id));
    }
    let controller = rocketraft_controller::Controller::start(config).await?;
    let addr = controller.serve_remoting().await?;
    process.add("", "controller", &node_id, controller.metrics_collector());
    let metrics = serve_metrics(process, args.metrics.metrics_listen).await?;
    println!(
        "rocketraft controller {} is ready: Remoting {addr}, Raft {}{}",
        controller.raft().id(),
        controller.raft().local_addr(),
        metrics_note(metrics.as_ref())
    );
    wait_for_shutdown().await;
    stop_metrics(metrics).await;
    controller.shutdown().await;
    Ok(())
}

/// `rocketraft dev`: NameServer and broker (and a proxy) in this process until Ctrl-C /
/// SIGTERM.
pub async fn dev(args: config::DevArgs) -> anyhow::Result<()> {
    listen_for_shutdown();
    let (mut namesrv_config, mut broker_config) = args.load()?;
    share_inner_credentials(&mut namesrv_config, &mut broker_config)?;
    let data_dir: PathBuf = broker_config.store.store_root.clone();
    let remoting = proxy_remoting(&broker_config)?;
    let metrics_listen = if args.metrics.no_metrics {
        None
    } else {
        Some(
            args.metrics
                .metrics_listen
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], metrics::DEFAULT_PORT))),
        )
    };
    let mut process = ProcessMetrics::new();
    let cluster = broker_config.cluster_name.clone();
    let broker_name = broker_config.broker_name.clone();
    let namesrv_id = namesrv_config.listen.to_string();
    if metrics_listen.is_some() {
        namesrv_config.rpc_metrics = Some(process.rpc_for("", "namesrv", &namesrv_id));
        broker_config.rpc_metrics = Some(process.rpc_for(&cluster, "broker", &broker_name));
    }
    let namesrv = NameServer::start(namesrv_config).await?;
    process.add("", "namesrv", &namesrv_id, namesrv.metrics_collector());
    let broker = Broker::start(broker_config).await?;
    process.add(&cluster, "broker", &broker_name, broker.metrics_collector());
    let namesrv_addr: SocketAddr = rocketraft_remoting::api::advertised(namesrv.local_addr());
    let proxy = if args.no_proxy {
        None
    } else {
        let proxy_id = args.proxy_listen.to_string();
        let rpc = metrics_listen.map(|_| process.rpc_for(&cluster, "proxy", &proxy_id));
        let proxy = local_proxy(args.proxy_listen, namesrv_addr.to_string(), remoting, rpc).await?;
        process.add(&cluster, "proxy", &proxy_id, proxy.metrics_collector());
        Some(proxy)
    };
    // The default port is best effort (another dev may hold it); one asked for must work.
    let metrics = match serve_metrics(process, metrics_listen).await {
        Ok(m) => m,
        Err(e) if args.metrics.metrics_listen.is_none() => {
            tracing::warn!("{e:#}");
            None
        }
        Err(e) => return Err(e),
    };
    // The console too: on its default port when free, where asked or not at all.
    let console = if args.no_console {
        None
    } else {
        let listen = args
            .console_listen
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], DEFAULT_CONSOLE_PORT)));
        match crate::cmd::console::serve_embedded(namesrv_addr.to_string(), None, None, listen)
            .await
        {
            Ok(c) => Some(c),
            Err(e) if args.console_listen.is_none() => {
                tracing::warn!("{e:#}");
                None
            }
            Err(e) => return Err(e),
        }
    };
    println!(
        "rocketraft dev is ready: NameServer {namesrv_addr} (with the controller), broker {} (data in {}){}{}{}",
        broker.advertised_addr(),
        data_dir.display(),
        proxy_note(proxy.as_ref()),
        metrics_note(metrics.as_ref()),
        console_note(console.as_ref())
    );
    until_shutdown(proxy).await;
    stop_metrics(console).await;
    stop_metrics(metrics).await;
    broker.shutdown().await;
    namesrv.shutdown().await;
    Ok(())
}

/// `dev`'s servers and its proxy share one `innerClientAuthenticationCredentials`: the one the
/// config gives the broker or the NameServer, else a random one made now (a `Super` user
/// `rocketraft-inner` with a 128-bit secret key that is never logged, printed or stored). The
/// in-process proxy signs with it, so the broker shows it users' secret keys and serves it
/// with authentication on or off.
fn share_inner_credentials(
    namesrv: &mut rocketraft_nameserver::NamesrvConfig,
    broker: &mut rocketraft_broker::BrokerConfig,
) -> anyhow::Result<()> {
    let shared = match (
        &broker.inner_client_authentication_credentials,
        &namesrv.inner_client_authentication_credentials,
    ) {
        (Some(c), _) | (None, Some(c)) => c.clone(),
        (None, None) => rocketraft_remoting::SessionCredentials::new(
            crate::cmd::cluster::auth::INNER_USER,
            rocketraft_common::trust::ClusterSecret::generate().expose(),
        )?,
    };
    broker
        .inner_client_authentication_credentials
        .get_or_insert_with(|| shared.clone());
    namesrv
        .inner_client_authentication_credentials
        .get_or_insert(shared);
    Ok(())
}

/// How an in-process proxy reaches this process's servers: over TLS and signed as the broker's
/// own cluster-internal calls are (`[tls_client]`, `innerClientAuthenticationCredentials`).
fn proxy_remoting(
    broker: &rocketraft_broker::BrokerConfig,
) -> anyhow::Result<rocketraft_proxy::RemotingSecurity> {
    Ok(rocketraft_proxy::RemotingSecurity {
        tls: broker.tls_client.load()?,
        credentials: broker.inner_client_authentication_credentials.clone(),
        cluster_secret: None,
    })
}

/// `, gRPC proxy ADDR` for a ready line, when there is an in-process proxy.
fn proxy_note(proxy: Option<&rocketraft_proxy::Proxy>) -> String {
    proxy
        .map(|p| format!(", gRPC proxy {}", p.local_addr()))
        .unwrap_or_default()
}

/// Starts the process's metrics endpoint when `listen` is set.
async fn serve_metrics(
    process: ProcessMetrics,
    listen: Option<SocketAddr>,
) -> anyhow::Result<Option<rocketraft_remoting::http::MetricsServer>> {
    match listen {
        Some(listen) => Ok(Some(process.serve(listen).await?)),
        None => Ok(None),
    }
}

async fn stop_metrics(metrics: Option<rocketraft_remoting::http::MetricsServer>) {
    if let Some(m) = metrics {
        m.shutdown().await;
    }
}

/// The console's default port in `dev` (`rocketraft console` listens there too).
pub const DEFAULT_CONSOLE_PORT: u16 = 8082;

/// `, console http://ADDR/` for a ready line.
fn console_note(console: Option<&rocketraft_remoting::http::MetricsServer>) -> String {
    console
        .map(|c| format!(", console http://{}/", c.local_addr()))
        .unwrap_or_default()
}

/// `, metrics http://ADDR/metrics` for a ready line.
fn metrics_note(metrics: Option<&rocketraft_remoting::http::MetricsServer>) -> String {
    metrics
        .map(|m| format!(", metrics http://{}/metrics", m.local_addr()))
        .unwrap_or_default()
}

/// The gRPC proxy in this process (local mode), plaintext, for `dev` and `broker
/// --proxy-listen`.
async fn local_proxy(
    listen: SocketAddr,
    namesrv_addr: String,
    remoting: rocketraft_proxy::RemotingSecurity,
    rpc_metrics: Option<rocketraft_common::metrics::RpcMetrics>,
) -> anyhow::Result<rocketraft_proxy::Proxy> {
    let security = rocketraft_proxy::SecurityConfig {
        remoting,
        ..Default::default()
    };
    let config = rocketraft_proxy::ProxyConfig {
        listen,
        advertised_host: None,
        namesrv_addr,
        rpc_metrics,
        proxy_mode: rocketraft_proxy::metrics::ProxyMode::Local,
        ..Default::default()
    };
    rocketraft_proxy::Proxy::start_secure(config, security)
        .await
        .map_err(|e| anyhow::anyhow!("{e:#} (or pass --no-proxy / another --proxy-listen)"))
}

/// `rocketraft proxy` flags.
#[derive(clap::Args)]
pub struct ProxyArgs {
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
    /// Reach NameServers and brokers over TLS (servers with `[tls]` enforcing), verifying them
    /// against --remoting-tls-trust-cert, or not verifying them without it.
    #[arg(long)]
    remoting_tls: bool,
    /// Trusted certificates (PEM) for --remoting-tls: the CA of the servers' certificates.
    #[arg(long)]
    remoting_tls_trust_cert: Option<PathBuf>,
    /// Sign the proxy's Remoting requests with this access key, for brokers with
    /// `authenticationEnabled` (a Super user, or their `innerClientAuthenticationCredentials`);
    /// the secret key comes from ROCKETRAFT_PROXY_SECRET_KEY. With --auth, this or
    /// --cluster-secret-file is needed: brokers show users' secret keys only to a Super user.
    #[arg(long)]
    remoting_access_key: Option<String>,
    /// Prove the cluster's secret (the file `cluster up` writes, or the brokers'
    /// `cluster_secret`) on every connection to NameServers and brokers; without the flag,
    /// ROCKETRAFT_CLUSTER_SECRET if set.
    #[arg(long)]
    cluster_secret_file: Option<PathBuf>,
    /// Whether Telemetry asks clients to export their own metrics (RocketMQ's
    /// metricCollectorMode): off, or on (to --metric-collector-address, an OTLP endpoint).
    #[arg(long, default_value = "off")]
    metric_collector_mode: rocketraft_proxy::metrics::MetricCollectorMode,
    /// Where clients export their metrics with --metric-collector-mode on (host:port;
    /// RocketMQ's metricCollectorAddress).
    #[arg(long, default_value = "")]
    metric_collector_address: String,
    /// The proxy's cluster (RocketMQ's proxyClusterName), the `cluster` label of its metrics.
    #[arg(long, default_value = "DefaultCluster")]
    proxy_cluster_name: String,
    #[command(flatten)]
    metrics: metrics::MetricsFlags,
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
        let remoting = self.remoting()?;
        if self.auth && remoting.credentials.is_none() && remoting.cluster_secret.is_none() {
            anyhow::bail!(
                "--auth verifies signatures with the users' secret keys, which the brokers show only to a Super user: give --remoting-access-key with a Super user's access key (its secret key in ROCKETRAFT_PROXY_SECRET_KEY; `cluster up --auth` writes both to DIR/admin-credentials) or --cluster-secret-file"
            );
        }
        Ok(rocketraft_proxy::SecurityConfig {
            auth: rocketraft_proxy::auth::AuthConfig {
                enabled: self.auth,
                cache_ttl: std::time::Duration::from_millis(self.auth_cache_ms),
                ..Default::default()
            },
            tls,
            remoting,
            ..Default::default()
        })
    }

    /// The cluster secret from --cluster-secret-file or ROCKETRAFT_CLUSTER_SECRET, if given.
    fn cluster_secret(&self) -> anyhow::Result<Option<rocketraft_common::trust::ClusterSecret>> {
        let text = match &self.cluster_secret_file {
            Some(path) => std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read the cluster secret file {}: {e}",
                    path.display()
                )
            })?,
            None => match std::env::var("ROCKETRAFT_CLUSTER_SECRET") {
                Ok(text) => text,
                Err(_) => return Ok(None),
            },
        };
        Ok(Some(rocketraft_common::trust::ClusterSecret::new(
            text.trim(),
        )?))
    }

    /// TLS and credentials for the proxy's connections to NameServers and brokers.
    fn remoting(&self) -> anyhow::Result<rocketraft_proxy::RemotingSecurity> {
        let tls = rocketraft_remoting::tls::ClientTlsConfig {
            enable: self.remoting_tls || self.remoting_tls_trust_cert.is_some(),
            trust_cert: self.remoting_tls_trust_cert.clone(),
        };
        let credentials = match &self.remoting_access_key {
            None => None,
            Some(access_key) => {
                let secret = std::env::var("ROCKETRAFT_PROXY_SECRET_KEY").map_err(|_| {
                    anyhow::anyhow!(
                        "--remoting-access-key needs its secret key in ROCKETRAFT_PROXY_SECRET_KEY"
                    )
                })?;
                Some(rocketraft_remoting::SessionCredentials::new(
                    access_key.clone(),
                    secret,
                )?)
            }
        };
        Ok(rocketraft_proxy::RemotingSecurity {
            tls: tls.load()?,
            credentials,
            cluster_secret: self.cluster_secret()?,
        })
    }
}

/// Waits for Ctrl-C / SIGTERM, then stops the in-process proxy if there is one; the caller
/// stops its servers after it.
async fn until_shutdown(proxy: Option<rocketraft_proxy::Proxy>) {
    wait_for_shutdown().await;
    if let Some(p) = proxy {
        p.shutdown().await;
    }
}

/// Set once Ctrl-C or SIGTERM arrived ([`listen_for_shutdown`]).
static SHUTDOWN: std::sync::OnceLock<tokio::sync::watch::Receiver<bool>> =
    std::sync::OnceLock::new();

/// Catches Ctrl-C and SIGTERM from now on (the handlers are installed before this returns), so
/// a signal that comes before the server waits for it, even right after it said it is ready,
/// still shuts it down cleanly instead of killing it. Idempotent.
pub(crate) fn listen_for_shutdown() {
    SHUTDOWN.get_or_init(|| {
        let (tx, rx) = tokio::sync::watch::channel(false);
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = term.recv() => {}
                            _ = int.recv() => {}
                        }
                        let _ = tx.send(true);
                    });
                }
                (term, int) => {
                    if let Err(e) = term.as_ref().and(int.as_ref()) {
                        tracing::warn!(error = %e, "cannot catch SIGTERM/SIGINT; waiting for Ctrl-C only");
                    }
                    tokio::spawn(async move {
                        let _ = tokio::signal::ctrl_c().await;
                        let _ = tx.send(true);
                    });
                }
            }
        }
        #[cfg(not(unix))]
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            let _ = tx.send(true);
        });
        rx
    });
}

/// Resolves on Ctrl-C or SIGTERM (caught from [`listen_for_shutdown`] on; called here too).
pub(crate) async fn wait_for_shutdown() {
    listen_for_shutdown();
    if let Some(rx) = SHUTDOWN.get() {
        let mut rx = rx.clone();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }
    tracing::info!("shutting down (flushing the store)");
}
