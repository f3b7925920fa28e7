//! The server commands: `rocketraft namesrv`, `broker`, `proxy`, `controller` and `dev`, each
//! running until Ctrl-C / SIGTERM. The servers live in their crates; [`config`] turns the flags
//! and `--config` files into their configurations.

pub mod config;

use std::net::SocketAddr;
use std::path::PathBuf;

use rocketraft_broker::Broker;
use rocketraft_nameserver::NameServer;

/// `rocketraft namesrv`: a NameServer until Ctrl-C / SIGTERM.
pub async fn namesrv(args: config::NamesrvArgs) -> anyhow::Result<()> {
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

/// `rocketraft broker`: a broker (with an in-process proxy if asked) until Ctrl-C / SIGTERM.
pub async fn broker(args: config::BrokerArgs) -> anyhow::Result<()> {
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
        proxy_note(proxy.as_ref())
    );
    until_shutdown(proxy).await;
    broker.shutdown().await;
    Ok(())
}

/// `rocketraft proxy`: a stateless gRPC proxy until Ctrl-C / SIGTERM.
pub async fn proxy(args: ProxyArgs) -> anyhow::Result<()> {
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

/// `rocketraft controller`: one member of a standalone controller quorum until Ctrl-C / SIGTERM.
pub async fn controller(args: config::ControllerArgs) -> anyhow::Result<()> {
    let config = args.load()?;
    let controller = rocketraft_controller::Controller::start(config).await?;
    let addr = controller.serve_remoting().await?;
    println!(
        "rocketraft controller {} is ready: Remoting {addr}, Raft {}",
        controller.raft().id(),
        controller.raft().local_addr()
    );
    wait_for_shutdown().await;
    controller.shutdown().await;
    Ok(())
}

/// `rocketraft dev`: NameServer and broker (and a proxy) in this process until Ctrl-C /
/// SIGTERM.
pub async fn dev(args: config::DevArgs) -> anyhow::Result<()> {
    let (namesrv_config, broker_config) = args.load()?;
    let data_dir: PathBuf = broker_config.store.store_root.clone();
    let namesrv = NameServer::start(namesrv_config).await?;
    let broker = Broker::start(broker_config).await?;
    let namesrv_addr: SocketAddr = rocketraft_remoting::api::advertised(namesrv.local_addr());
    let proxy = if args.no_proxy {
        None
    } else {
        Some(local_proxy(args.proxy_listen, namesrv_addr.to_string()).await?)
    };
    println!(
        "rocketraft dev is ready: NameServer {namesrv_addr} (with the controller), broker {} (data in {}){}",
        broker.advertised_addr(),
        data_dir.display(),
        proxy_note(proxy.as_ref())
    );
    until_shutdown(proxy).await;
    broker.shutdown().await;
    namesrv.shutdown().await;
    Ok(())
}

/// `, gRPC proxy ADDR` for a ready line, when there is an in-process proxy.
fn proxy_note(proxy: Option<&rocketraft_proxy::Proxy>) -> String {
    proxy
        .map(|p| format!(", gRPC proxy {}", p.local_addr()))
        .unwrap_or_default()
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
                ..Default::default()
            },
            tls,
            ..Default::default()
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
