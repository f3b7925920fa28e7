//! The cluster of a run: the private network ([`crate::net`]), and the `rocketraft` processes in
//! it ([`crate::nodes`]): three standalone controllers, a NameServer, one broker set of three
//! replicas in controller mode, optionally a proxy; the harness's own client sockets live in
//! the `client` namespace. The config shapes are those `rocketraft cluster up` writes, with
//! each process on its own IP instead of its own loopback port.
//!
//! Scaled out ([`Scale`], `rocketraft-jepsen run --sets N --replicas R --namesrvs M
//! --proxies P`): N broker sets `broker-a`, `broker-b`, ... under the one controller quorum,
//! each of R replicas (`b1`..`bR` at 10.77.0.31.., then `bb1`.. at .41.., `bc1`.. at .51..,
//! `bd1`.. at .61..), M NameServers (`ns` at .20, `ns2` at .21, ...) every broker registers
//! with and every client and proxy fails over among, and P proxies (`proxy` at .40, `proxy2`
//! at .72, ...). Every node is its own host: its own namespace and IP on the bridge.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use rocketraft_broker::store::{FlushDiskType, StoreConfig};
use rocketraft_broker::BrokerConfig;
use rocketraft_common::trust::ClusterSecret;
use rocketraft_controller::client::ControllerClient;
use rocketraft_controller::ControllerConfig;
use rocketraft_nameserver::NamesrvConfig;
use rocketraft_remoting::api::MqClientApi;
use rocketraft_remoting::{ClientConfig, RemotingClient, SessionCredentials};

use crate::net::{NetNode, Network};
use crate::nodes::{port, Node, Role};

pub const BROKER_NAME: &str = "broker-a";
pub const CLIENT_NODE: &str = "client";

/// How far a run is scaled out: broker sets, replicas per set, NameServers and proxies (when
/// the run has proxies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    pub sets: usize,
    pub replicas: usize,
    pub namesrvs: usize,
    pub proxies: usize,
}

impl Default for Scale {
    /// One broker set of 3 replicas, one NameServer, one proxy: the harness's classic shape.
    fn default() -> Self {
        Scale {
            sets: 1,
            replicas: 3,
            namesrvs: 1,
            proxies: 1,
        }
    }
}

impl Scale {
    /// Refuses shapes the private network has no addresses for.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=4).contains(&self.sets),
            "--sets {} (1 to 4)",
            self.sets
        );
        anyhow::ensure!(
            (1..=5).contains(&self.replicas),
            "--replicas {} (1 to 5)",
            self.replicas
        );
        anyhow::ensure!(
            (1..=4).contains(&self.namesrvs),
            "--namesrvs {} (1 to 4)",
            self.namesrvs
        );
        anyhow::ensure!(
            (1..=4).contains(&self.proxies),
            "--proxies {} (1 to 4)",
            self.proxies
        );
        Ok(())
    }

    /// Whether this is more than the classic shape's one set (the workload then spreads over
    /// sets, and the nemesis aims at any set's master).
    pub fn multi_set(&self) -> bool {
        self.sets > 1
    }
}

/// The name of broker set `index` (0-based): `broker-a`, `broker-b`, ...
pub fn set_name(index: usize) -> String {
    format!("broker-{}", char::from(b'a' + (index % 26) as u8))
}

/// The node name of replica `replica` (1-based) of set `set` (0-based): `b1`.. for the first
/// set (as the classic shape names them), `bb1`.., `bc1`.. for the others.
pub fn broker_node_name(set: usize, replica: usize) -> String {
    if set == 0 {
        format!("b{replica}")
    } else {
        format!("b{}{replica}", char::from(b'a' + (set % 26) as u8))
    }
}

/// The broker set a broker node belongs to (by its name), if it is one.
pub fn set_of_node(node: &str) -> Option<String> {
    let rest = node.strip_prefix('b')?;
    let mut chars = rest.chars();
    match chars.next()? {
        c if c.is_ascii_digit() => Some(set_name(0)),
        c if c.is_ascii_lowercase() && chars.all(|d| d.is_ascii_digit()) => {
            Some(set_name(usize::from(c as u8 - b'a')))
        }
        _ => None,
    }
}

/// Options that shape the cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub binary: PathBuf,
    pub dir: PathBuf,
    pub with_proxy: bool,
    /// Replicas (master included) that must hold a message before a send is acknowledged.
    pub min_in_sync_replicas: usize,
    /// Tokio worker threads per process.
    pub threads: usize,
    /// Extra environment for brokers (e.g. the deliberately unsafe switch in tests).
    pub broker_env: Vec<(String, String)>,
    /// Controllers serve replica-info reads from local memory (`stale_reads = true`): a
    /// deliberately broken configuration for the harness's self-test.
    pub controller_stale_reads: bool,
    /// The cluster secret every NameServer, controller and broker config carries (a fresh
    /// one per run), so the runs exercise cluster-internal trust.
    pub cluster_secret: Option<ClusterSecret>,
    /// ACL 2.0 on every NameServer and broker (`--auth`): every harness client and the proxy
    /// sign their Remoting requests as the administrator.
    pub auth: Option<HarnessAuth>,
    /// Broker sets, replicas, NameServers and proxies.
    pub scale: Scale,
}

/// The users of a run with authentication on, as `rocketraft cluster up --auth` makes them: a
/// `Super` administrator (`initAuthenticationUser`) the harness's clients and the proxy sign
/// with, and the servers' own user (`innerClientAuthenticationCredentials`). Fresh random
/// secret keys per run; never logged (the credentials' `Debug` redacts them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HarnessAuth {
    pub admin: SessionCredentials,
    pub inner: SessionCredentials,
}

impl HarnessAuth {
    pub fn generate() -> anyhow::Result<HarnessAuth> {
        let secret = || ClusterSecret::generate().expose().to_string();
        Ok(HarnessAuth {
            admin: SessionCredentials::new("admin", secret())?,
            inner: SessionCredentials::new("rocketraft-inner", secret())?,
        })
    }
}

/// The environment variable `rocketraft proxy --remoting-access-key` reads its secret key from.
const PROXY_SECRET_KEY_ENV: &str = "ROCKETRAFT_PROXY_SECRET_KEY";

/// The network and the processes; dropping it kills them and deletes the namespaces.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub options: ClusterOptions,
    /// Latency relays ([`crate::latency`]), when the run has the latency nemesis.
    pub relays: Vec<crate::latency::Relay>,
    /// Declared last: dropped after the nodes, so processes die before their namespaces go.
    pub network: Network,
}

/// One node of the layout: its name, role (none for the client), host byte of 10.77.0.x, and
/// broker set (brokers only).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Place {
    name: String,
    role: Option<Role>,
    host: u8,
    set: Option<String>,
}

/// The host byte of NameServer `index` (0-based).
fn namesrv_host(index: usize) -> u8 {
    20 + index as u8
}

/// The node name of NameServer `index` (0-based): `ns`, `ns2`, ...
fn namesrv_name(index: usize) -> String {
    if index == 0 {
        "ns".to_string()
    } else {
        format!("ns{}", index + 1)
    }
}

/// The layout: the client, 3 controllers, the NameServers, every set's brokers, the proxies.
fn layout(with_proxy: bool, scale: Scale) -> Vec<Place> {
    let place = |name: String, role: Option<Role>, host: u8, set: Option<String>| Place {
        name,
        role,
        host,
        set,
    };
    let mut out = vec![
        place(CLIENT_NODE.to_string(), None, 2, None),
        place("c1".into(), Some(Role::Controller), 11, None),
        place("c2".into(), Some(Role::Controller), 12, None),
        place("c3".into(), Some(Role::Controller), 13, None),
    ];
    for i in 0..scale.namesrvs {
        out.push(place(
            namesrv_name(i),
            Some(Role::Namesrv),
            namesrv_host(i),
            None,
        ));
    }
    for set in 0..scale.sets {
        for replica in 1..=scale.replicas {
            out.push(place(
                broker_node_name(set, replica),
                Some(Role::Broker),
                31 + 10 * set as u8 + (replica - 1) as u8,
                Some(set_name(set)),
            ));
        }
    }
    if with_proxy {
        for i in 0..scale.proxies {
            let (name, host) = if i == 0 {
                ("proxy".to_string(), 40)
            } else {
                (format!("proxy{}", i + 1), 70 + i as u8 + 1)
            };
            out.push(place(name, Some(Role::Proxy), host, None));
        }
    }
    out
}

/// Every NameServer's Remoting address, `;`-separated (as brokers, clients and proxies take
/// them).
fn namesrv_list(scale: Scale) -> String {
    (0..scale.namesrvs)
        .map(|i| addr(namesrv_host(i), port::NAMESRV).to_string())
        .collect::<Vec<_>>()
        .join(";")
}

fn path_str(path: &Path) -> anyhow::Result<String> {
    path.to_str()
        .map(str::to_string)
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

fn addr(host: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([10, 77, 0, host], port))
}

const CONTROLLER_HOSTS: [u8; 3] = [11, 12, 13];

/// Node id (index + 1) -> `10.77.0.x:port` of every controller.
fn controller_members(port: u16) -> BTreeMap<u64, String> {
    CONTROLLER_HOSTS
        .iter()
        .zip(1u64..)
        .map(|(host, id)| (id, addr(*host, port).to_string()))
        .collect()
}

/// The controller config of controller `id` (1-based). Every timing key (heartbeat timeout, scan
/// interval, Raft timeouts) is written at its default: the harness measures the defaults users
/// get.
pub fn controller_toml(
    id: usize,
    data_dir: &Path,
    stale_reads: bool,
    secret: Option<&ClusterSecret>,
) -> anyhow::Result<String> {
    let host = CONTROLLER_HOSTS
        .get(id.wrapping_sub(1))
        .with_context(|| format!("no controller {id}"))?;
    let raft = ControllerConfig::default()
        .raft
        .with_node_id(id as u64)
        .with_listen(addr(*host, port::RAFT))
        .with_data_dir(path_str(data_dir)?)
        .with_initial_members(controller_members(port::RAFT));
    let mut config = ControllerConfig::default()
        .with_listen(addr(*host, port::CONTROLLER))
        .with_stale_reads(stale_reads)
        .with_remoting_peers(controller_members(port::CONTROLLER))
        .with_raft(raft);
    config.cluster_secret = secret.cloned();
    toml::to_string(&config).context("cannot encode a controller config")
}

/// The broker config of replica `host` (its IP's last byte) of the classic shape (set
/// `broker-a`, one NameServer).
pub fn broker_toml(
    host: u8,
    store_root: &Path,
    min_in_sync: usize,
    secret: Option<&ClusterSecret>,
    auth: Option<&HarnessAuth>,
) -> anyhow::Result<String> {
    set_broker_toml(
        BrokerPlace {
            host,
            set: BROKER_NAME,
            namesrvs: &addr(20, port::NAMESRV).to_string(),
        },
        store_root,
        min_in_sync,
        secret,
        auth,
    )
}

/// Where a broker is: its host byte, its set, the NameServers it registers with (`;`-separated).
pub struct BrokerPlace<'a> {
    pub host: u8,
    pub set: &'a str,
    pub namesrvs: &'a str,
}

/// The broker config of a replica of any set.
pub fn set_broker_toml(
    place: BrokerPlace<'_>,
    store_root: &Path,
    min_in_sync: usize,
    secret: Option<&ClusterSecret>,
    auth: Option<&HarnessAuth>,
) -> anyhow::Result<String> {
    let BrokerPlace {
        host,
        set,
        namesrvs,
    } = place;
    let controllers = CONTROLLER_HOSTS
        .iter()
        .map(|h| addr(*h, port::CONTROLLER).to_string())
        .collect::<Vec<_>>()
        .join(";");
    let store = StoreConfig::new(path_str(store_root)?)
        .with_flush_disk_type(FlushDiskType::AsyncFlush)
        .with_commitlog_segment_size(64 << 20);
    let mut config = BrokerConfig::default()
        .with_broker_name(set)
        .with_cluster_name("DefaultCluster")
        .with_listen(addr(host, port::BROKER))
        .with_ha_port(port::HA)
        .with_namesrv_addr(namesrvs)
        .with_controller_mode(controllers)
        .with_min_in_sync_replicas(min_in_sync)
        .with_register_interval_ms(5000)
        .with_store(store);
    config.cluster_secret = secret.cloned();
    if let Some(auth) = auth {
        config.authentication_enabled = true;
        config.authorization_enabled = true;
        config.init_authentication_user = Some(auth.admin.clone());
        config.inner_client_authentication_credentials = Some(auth.inner.clone());
    }
    toml::to_string(&config).context("cannot encode a broker config")
}

/// The NameServer config: its address, the cluster secret and, with `auth`, the ACL keys.
pub fn namesrv_toml(
    listen: SocketAddr,
    secret: Option<&ClusterSecret>,
    auth: Option<&HarnessAuth>,
) -> anyhow::Result<String> {
    let mut config = NamesrvConfig::default().with_listen(listen);
    config.cluster_secret = secret.cloned();
    if let Some(auth) = auth {
        config.authentication_enabled = true;
        config.authorization_enabled = true;
        config.init_authentication_user = Some(auth.admin.clone());
        config.inner_client_authentication_credentials = Some(auth.inner.clone());
    }
    toml::to_string(&config).context("cannot encode a NameServer config")
}

/// The directory of node `name` (created), and the arguments every node process starts with.
pub(crate) fn node_dir(
    options: &ClusterOptions,
    name: &str,
) -> anyhow::Result<(PathBuf, Vec<String>)> {
    let dir = options.dir.join("nodes").join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let args = vec![
        "--log".to_string(),
        "info".to_string(),
        "--threads".to_string(),
        options.threads.to_string(),
    ];
    Ok((dir, args))
}

/// The `rocketraft` arguments of node `name` in `role` after the common ones; a controller's or
/// a broker's config is written into its directory `dir`.
fn role_args(
    options: &ClusterOptions,
    role: Role,
    place: &Place,
    net: &NetNode,
    dir: &Path,
) -> anyhow::Result<Vec<String>> {
    let name = place.name.as_str();
    let namesrvs = namesrv_list(options.scale);
    Ok(match role {
        Role::Controller => {
            let id: usize = name[1..].parse().context("controller name")?;
            let config = dir.join("controller.toml");
            std::fs::write(
                &config,
                controller_toml(
                    id,
                    &dir.join("data"),
                    options.controller_stale_reads,
                    options.cluster_secret.as_ref(),
                )?,
            )
            .with_context(|| format!("cannot write {}", config.display()))?;
            vec!["controller".into(), "--config".into(), path_str(&config)?]
        }
        Role::Namesrv => {
            let config = dir.join("namesrv.toml");
            let listen = SocketAddr::new(net.ip.into(), port::NAMESRV);
            std::fs::write(
                &config,
                namesrv_toml(
                    listen,
                    options.cluster_secret.as_ref(),
                    options.auth.as_ref(),
                )?,
            )
            .with_context(|| format!("cannot write {}", config.display()))?;
            vec!["namesrv".into(), "--config".into(), path_str(&config)?]
        }
        Role::Broker => {
            let config = dir.join("broker.toml");
            std::fs::write(
                &config,
                set_broker_toml(
                    BrokerPlace {
                        host: place.host,
                        set: place.set.as_deref().unwrap_or(BROKER_NAME),
                        namesrvs: &namesrvs,
                    },
                    &dir.join("store"),
                    options.min_in_sync_replicas,
                    options.cluster_secret.as_ref(),
                    options.auth.as_ref(),
                )?,
            )
            .with_context(|| format!("cannot write {}", config.display()))?;
            vec!["broker".into(), "--config".into(), path_str(&config)?]
        }
        Role::Proxy => {
            let mut args = vec![
                "proxy".into(),
                "--listen".into(),
                format!("{}:{}", net.ip, port::PROXY),
                "--namesrv".into(),
                namesrvs,
            ];
            // Its secret key comes from the environment ([`proxy_env`]).
            if let Some(auth) = &options.auth {
                args.extend([
                    "--remoting-access-key".into(),
                    auth.admin.access_key.clone(),
                ]);
            }
            args
        }
        Role::RaftKv => anyhow::bail!("raft-kv nodes are built by kv_workload::create_cluster"),
    })
}

/// The proxy's environment: the administrator's secret key when the run has authentication on
/// (an environment variable, not a command-line argument other users could read).
fn proxy_env(options: &ClusterOptions) -> Vec<(String, String)> {
    options
        .auth
        .iter()
        .map(|auth| {
            (
                PROXY_SECRET_KEY_ENV.to_string(),
                auth.admin.secret_key.clone(),
            )
        })
        .collect()
}

impl Cluster {
    /// Builds the network and writes every config; starts nothing.
    pub fn create(options: ClusterOptions) -> anyhow::Result<Cluster> {
        options.scale.validate()?;
        let layout = layout(options.with_proxy, options.scale);
        let names: Vec<(&str, u8)> = layout.iter().map(|p| (p.name.as_str(), p.host)).collect();
        let network = Network::create(&names).context("cannot build the private network")?;
        let mut nodes = Vec::new();
        for place in &layout {
            let Some(role) = place.role else { continue };
            let name = place.name.as_str();
            let net = network.node(name)?;
            let (dir, mut args) = node_dir(&options, name)?;
            args.extend(role_args(&options, role, place, net, &dir)?);
            let mut node = Node::new(name, role, &net.ns, net.ip, dir, args);
            if role == Role::Broker {
                node.env = options.broker_env.clone();
            }
            if role == Role::Proxy {
                node.env = proxy_env(&options);
            }
            nodes.push(node);
        }
        Ok(Cluster {
            nodes,
            options,
            relays: Vec::new(),
            network,
        })
    }

    pub fn client_ns(&self) -> anyhow::Result<String> {
        Ok(self.network.node(CLIENT_NODE)?.ns.clone())
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn node_mut(&mut self, name: &str) -> anyhow::Result<&mut Node> {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .with_context(|| format!("no node {name}"))
    }

    pub fn names(&self, role: Role) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.role == role)
            .map(|n| n.name.clone())
            .collect()
    }

    /// Every server node's name.
    pub fn server_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    pub fn start(&mut self, name: &str) -> anyhow::Result<()> {
        let binary = self.options.binary.clone();
        let node = self.node_mut(name)?;
        node.start(&binary)
    }

    /// Starts everything: controllers first, then the NameServer, the brokers, the proxy.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for name in self.server_names() {
            self.start(&name)?;
        }
        Ok(())
    }

    pub fn nemesis_targets(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| {
                matches!(
                    n.role,
                    Role::Controller | Role::Broker | Role::Namesrv | Role::RaftKv
                )
            })
            .map(|n| n.name.clone())
            .collect()
    }

    pub fn addr_of(&self, name: &str) -> Option<String> {
        self.node(name).map(Node::addr)
    }

    pub fn name_of_addr(&self, addr: &str) -> Option<String> {
        self.nodes
            .iter()
            .find(|n| n.addr() == addr)
            .map(|n| n.name.clone())
    }

    /// Every NameServer's address, `;`-separated (clients fail over among them).
    pub fn namesrv_addr(&self) -> String {
        namesrv_list(self.options.scale)
    }

    /// The broker sets of the run, `broker-a` first.
    pub fn set_names(&self) -> Vec<String> {
        (0..self.options.scale.sets).map(set_name).collect()
    }

    /// The proxies' gRPC addresses.
    pub fn proxy_addrs(&self) -> Vec<String> {
        self.names(Role::Proxy)
            .iter()
            .filter_map(|n| self.addr_of(n))
            .collect()
    }

    /// Puts a latency relay in the namespaces of the brokers (their Remoting, HA and controller
    /// connections), of the controllers (Raft and forwarding to the leader), of the raft-kv
    /// members (Raft and their Remoting), of the clients (to the brokers, the proxy, the
    /// controllers, the raft-kv members) and of the proxy (to the brokers). Call before starting
    /// the processes: only new connections go through a relay.
    pub fn add_relays(&mut self) -> anyhow::Result<()> {
        let mut plan: Vec<(String, Vec<u16>)> = self
            .names(Role::Broker)
            .into_iter()
            .map(|b| (b, vec![port::BROKER, port::HA, port::CONTROLLER]))
            .collect();
        for controller in self.names(Role::Controller) {
            plan.push((controller, vec![port::RAFT, port::CONTROLLER]));
        }
        let raft_kv = self.names(Role::RaftKv);
        for member in &raft_kv {
            plan.push((member.clone(), vec![port::RAFT, port::RAFT_KV]));
        }
        let mut client_ports = vec![port::BROKER, port::PROXY, port::CONTROLLER];
        if !raft_kv.is_empty() {
            client_ports.push(port::RAFT_KV);
        }
        plan.push((CLIENT_NODE.to_string(), client_ports));
        for proxy in self.names(Role::Proxy) {
            plan.push((proxy, vec![port::BROKER]));
        }
        for (name, ports) in plan {
            let ns = self.network.node(&name)?.ns.clone();
            let relay = crate::latency::Relay::start(&name, &ns)?;
            self.network
                .add_rules(&name, &crate::latency::redirect_rules(ports.as_slice()))?;
            self.relays.push(relay);
        }
        Ok(())
    }

    /// Runs the nodes of `roles` under libfaketime reading `nodes/<name>/faketime.rc` (holding
    /// `+0`), so the clock-step nemesis can step their clocks while they run. Call before
    /// starting them.
    pub fn enable_clock_files(&mut self, roles: &[Role]) -> anyhow::Result<()> {
        for node in self.nodes.iter_mut().filter(|n| roles.contains(&n.role)) {
            let file = node.dir.join("faketime.rc");
            node.set_clock_file(file)?;
        }
        Ok(())
    }

    pub fn controller_addrs(&self) -> Vec<String> {
        self.names(Role::Controller)
            .iter()
            .filter_map(|n| self.addr_of(n))
            .collect()
    }

    /// Kills every process (SIGCONT first for paused ones) and deletes the network. Idempotent;
    /// also what dropping the cluster does.
    pub fn shutdown(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        for relay in &mut self.relays {
            relay.stop();
        }
        self.network.teardown();
    }

    /// Copies of the node logs are not needed: they live under `DIR/nodes/<name>/node.log`.
    pub fn log_paths(&self) -> Vec<(String, PathBuf)> {
        self.nodes
            .iter()
            .map(|n| (n.name.clone(), n.log_path()))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Clients for the harness's own questions (leader, master) and workloads.
#[derive(Clone)]
pub struct Clients {
    pub api: MqClientApi,
    pub controller: ControllerClient,
}

impl Clients {
    /// Clients whose controller calls prove `secret` (the cluster's, if it has one); the
    /// message and route calls need none. With `credentials` every request is signed (servers
    /// with authentication on refuse unsigned ones).
    pub fn new(
        timeout: Duration,
        secret: Option<ClusterSecret>,
        credentials: Option<SessionCredentials>,
    ) -> Clients {
        let config = ClientConfig {
            connect_timeout: Duration::from_secs(1),
            credentials,
            ..ClientConfig::default()
        };
        let controller = RemotingClient::new(ClientConfig {
            cluster_secret: secret,
            ..config.clone()
        });
        Clients {
            api: MqClientApi::new(RemotingClient::new(config), timeout),
            controller: ControllerClient::new(controller, timeout),
        }
    }

    /// The controller leader's Remoting address, asking each controller in turn.
    pub async fn controller_leader(&self, controllers: &[String]) -> Option<String> {
        for addr in controllers {
            if let Ok(meta) = self.controller.metadata(addr).await {
                if meta.is_leader {
                    return Some(addr.clone());
                }
                if let Some(leader) = meta.leader_address.filter(|a| !a.is_empty()) {
                    if controllers.contains(&leader) {
                        return Some(leader);
                    }
                }
            }
        }
        None
    }

    /// The broker set's (master address, all replica addresses) as the NameServer lists them.
    pub async fn broker_set(&self, namesrv: &str) -> Option<(Option<String>, Vec<String>)> {
        self.named_broker_set(namesrv, BROKER_NAME).await
    }

    /// Broker set `set`'s (master address, all replica addresses) as the NameServers (a
    /// `;`-separated list, asked in turn) list them.
    pub async fn named_broker_set(
        &self,
        namesrv: &str,
        set: &str,
    ) -> Option<(Option<String>, Vec<String>)> {
        let info = self.api.cluster_info(namesrv).await.ok()?;
        let set = info.broker_addr_table.get(set)?;
        let master = set.broker_addrs.get(&0).cloned();
        Some((master, set.broker_addrs.values().cloned().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_parse_as_the_servers_read_them() {
        let text = controller_toml(2, Path::new("/d/c2/data"), false, None).expect("toml");
        let c: rocketraft_controller::ControllerConfig = toml::from_str(&text).expect("parses");
        assert_eq!(c.listen.to_string(), "10.77.0.12:9878");
        assert_eq!(c.raft.node_id, 2);
        assert_eq!(c.raft.listen.to_string(), "10.77.0.12:9880");
        assert_eq!(c.raft.initial_members.len(), 3);
        assert_eq!(
            c.remoting_peers.get(&3).map(String::as_str),
            Some("10.77.0.13:9878")
        );
        assert!(!c.stale_reads);
        assert!(controller_toml(4, Path::new("/d"), false, None).is_err());
        let stale: rocketraft_controller::ControllerConfig =
            toml::from_str(&controller_toml(1, Path::new("/d"), true, None).expect("toml"))
                .expect("parses");
        assert!(stale.stale_reads);
        let text = broker_toml(32, Path::new("/d/b2/store"), 2, None, None).expect("toml");
        let b: toml::Table = toml::from_str(&text).expect("parses");
        assert_eq!(b["listen"].as_str(), Some("10.77.0.32:10911"));
        assert_eq!(b["min_in_sync_replicas"].as_integer(), Some(2));
        assert_eq!(
            b["controller_addr"].as_str(),
            Some("10.77.0.11:9878;10.77.0.12:9878;10.77.0.13:9878")
        );
        assert_eq!(b["store"]["store_root"].as_str(), Some("/d/b2/store"));
    }

    #[test]
    fn configs_are_serialized_config_values() {
        let text = controller_toml(3, Path::new("/d/c3/data"), true, None).expect("toml");
        let c: ControllerConfig = toml::from_str(&text).expect("parses");
        assert_eq!(toml::to_string(&c).expect("encodes"), text);
        assert_eq!(c.raft.data_dir, PathBuf::from("/d/c3/data"));
        assert_eq!(
            c.raft.initial_members.get(&1).map(String::as_str),
            Some("10.77.0.11:9880")
        );
        let text = broker_toml(31, Path::new("/d/b1/store"), 1, None, None).expect("toml");
        let b: BrokerConfig = toml::from_str(&text).expect("parses");
        assert_eq!(toml::to_string(&b).expect("encodes"), text);
        assert_eq!(b.broker_name, BROKER_NAME);
        assert_eq!(b.namesrv_addr, "10.77.0.20:9876");
        assert_eq!(b.register_interval_ms, 5000);
        assert_eq!(b.store.commitlog_segment_size, 64 << 20);
        assert_eq!(b.store.flush_disk_type, FlushDiskType::AsyncFlush);
        assert_eq!(b.validate(), Ok(()));
    }

    #[test]
    fn auth_turns_acl_on_and_the_proxy_signs() {
        let auth = HarnessAuth::generate().expect("auth");
        assert_ne!(auth.admin.secret_key, auth.inner.secret_key);
        let text = broker_toml(31, Path::new("/d/b1/store"), 1, None, Some(&auth)).expect("toml");
        let b: BrokerConfig = toml::from_str(&text).expect("parses");
        assert!(b.authentication_enabled && b.authorization_enabled);
        assert_eq!(b.init_authentication_user.as_ref(), Some(&auth.admin));
        assert_eq!(
            b.inner_client_authentication_credentials.as_ref(),
            Some(&auth.inner)
        );
        assert_eq!(b.validate(), Ok(()));
        let listen = addr(20, port::NAMESRV);
        let text = namesrv_toml(listen, None, Some(&auth)).expect("toml");
        let n: NamesrvConfig = toml::from_str(&text).expect("parses");
        assert!(n.authentication_enabled && n.authorization_enabled);
        assert_eq!(n.init_authentication_user.as_ref(), Some(&auth.admin));
        let plain: NamesrvConfig =
            toml::from_str(&namesrv_toml(listen, None, None).expect("toml")).expect("parses");
        assert!(!plain.authentication_enabled && plain.init_authentication_user.is_none());

        let mut options = ClusterOptions {
            binary: PathBuf::from("/bin/rocketraft"),
            dir: PathBuf::from("/d"),
            with_proxy: true,
            min_in_sync_replicas: 2,
            threads: 2,
            broker_env: Vec::new(),
            controller_stale_reads: false,
            cluster_secret: None,
            auth: None,
            scale: Scale::default(),
        };
        assert!(proxy_env(&options).is_empty());
        options.auth = Some(auth.clone());
        assert_eq!(
            proxy_env(&options),
            [(
                PROXY_SECRET_KEY_ENV.to_string(),
                auth.admin.secret_key.clone()
            )]
        );
    }

    #[test]
    fn a_scaled_out_layout_gives_every_node_its_own_host() {
        let scale = Scale {
            sets: 3,
            replicas: 3,
            namesrvs: 2,
            proxies: 2,
        };
        scale.validate().expect("valid");
        let places = layout(true, scale);
        let hosts: std::collections::BTreeSet<u8> = places.iter().map(|p| p.host).collect();
        assert_eq!(hosts.len(), places.len(), "{places:?}");
        let brokers: Vec<&Place> = places
            .iter()
            .filter(|p| p.role == Some(Role::Broker))
            .collect();
        assert_eq!(brokers.len(), 9);
        for b in &brokers {
            assert_eq!(set_of_node(&b.name), b.set, "{b:?}");
        }
        assert_eq!(brokers[0].name, "b1");
        assert_eq!(brokers[3].name, "bb1");
        assert_eq!(brokers[8].name, "bc3");
        assert_eq!(brokers[8].set.as_deref(), Some("broker-c"));
        assert_eq!(namesrv_list(scale), "10.77.0.20:9876;10.77.0.21:9876");
        let names: Vec<&str> = places.iter().map(|p| p.name.as_str()).collect();
        for n in ["ns", "ns2", "proxy", "proxy2", "c3"] {
            assert!(names.contains(&n), "{names:?}");
        }
        // The classic shape is unchanged.
        let classic: Vec<(String, u8)> = layout(true, Scale::default())
            .into_iter()
            .map(|p| (p.name, p.host))
            .collect();
        let expected = [
            ("client", 2),
            ("c1", 11),
            ("c2", 12),
            ("c3", 13),
            ("ns", 20),
            ("b1", 31),
            ("b2", 32),
            ("b3", 33),
            ("proxy", 40),
        ];
        assert_eq!(
            classic,
            expected
                .iter()
                .map(|(n, h)| (n.to_string(), *h))
                .collect::<Vec<_>>()
        );
        assert_eq!(set_of_node("ns"), None);
        assert_eq!(set_of_node("b2").as_deref(), Some("broker-a"));
        assert!(Scale { sets: 5, ..scale }.validate().is_err());
        let text = set_broker_toml(
            BrokerPlace {
                host: 42,
                set: "broker-b",
                namesrvs: &namesrv_list(scale),
            },
            Path::new("/d/bb2/store"),
            2,
            None,
            None,
        )
        .expect("toml");
        let b: BrokerConfig = toml::from_str(&text).expect("parses");
        assert_eq!(b.broker_name, "broker-b");
        assert_eq!(b.namesrv_addr, "10.77.0.20:9876;10.77.0.21:9876");
        assert_eq!(b.validate(), Ok(()));
    }
}
