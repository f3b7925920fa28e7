//! The server commands: `rocketraft namesrv`, `broker`, `proxy`, `controller` and `dev`, each
//! running until Ctrl-C / SIGTERM. The servers live in their crates; [`config`] turns the flags
//! and `--config` files into their configurations.

pub mod conf_file;
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
    let remoting = proxy_remoting(&config)?;
    let broker = Broker::start(config).await?;
    let proxy = match args.proxy_listen {
        Some(listen) => Some(local_proxy(listen, namesrv_addr, remoting).await?),
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
    let remoting = proxy_remoting(&broker_config)?;
    let namesrv = NameServer::start(namesrv_config).await?;
    let broker = Broker::start(broker_config).await?;
    let namesrv_addr: SocketAddr = rocketraft_remoting::api::advertised(namesrv.local_addr());
    let proxy = if args.no_proxy {
        None
    } else {
        Some(local_proxy(args.proxy_listen, namesrv_addr.to_string(), remoting).await?)
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

/// How an in-process proxy reaches this process's servers: over TLS and signed as the broker's
/// own cluster-internal calls are (`[tls_client]`, `innerClientAuthenticationCredentials`).
fn proxy_remoting(
    broker: &rocketraft_broker::BrokerConfig,
) -> anyhow::Result<rocketraft_proxy::RemotingSecurity> {
    Ok(rocketraft_proxy::RemotingSecurity {
        tls: broker.tls_client.load()?,
        credentials: broker.inner_client_authentication_credentials.clone(),
    })
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
    remoting: rocketraft_proxy::RemotingSecurity,
) -> anyhow::Result<rocketraft_proxy::Proxy> {
    let security = rocketraft_proxy::SecurityConfig {
        remoting,
        ..Default::default()
    };
    let config = rocketraft_proxy::ProxyConfig {
        listen,
        advertised_host: None,
        namesrv_addr,
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
    /// the secret key comes from ROCKETRAFT_PROXY_SECRET_KEY.
    #[arg(long)]
    remoting_access_key: Option<String>,
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
            remoting: self.remoting()?,
            ..Default::default()
        })
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
