//! Configuration loading for each role: a TOML file (`--config`) and flags that override it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use rocketraft_broker::store::FlushDiskType;
use rocketraft_broker::BrokerConfig;
use rocketraft_controller::ControllerConfig;
use rocketraft_nameserver::NamesrvConfig;
use serde::de::DeserializeOwned;
use serde::Deserialize;

fn load_toml<T: DeserializeOwned + Default>(path: Option<&Path>) -> anyhow::Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| {
        format!(
            "{} is not a valid config: fix the key or value named above (see README.md, Configuration)",
            path.display()
        )
    })
}

#[derive(Args)]
pub struct NamesrvArgs {
    /// Config file: TOML, or RocketMQ's namesrv.conf (`*.conf`, `*.properties`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address (default 0.0.0.0:9876).
    #[arg(long)]
    listen: Option<SocketAddr>,
    #[command(flatten)]
    pub metrics: super::metrics::MetricsFlags,
    /// Also serve the web console (`rocketraft console`) on this address.
    #[arg(long)]
    pub console_listen: Option<SocketAddr>,
    /// The controller quorum the console asks, comma-separated Remoting addresses; the cluster
    /// page shows every member (default: this NameServer, for its embedded controller).
    #[arg(long, requires = "console_listen")]
    pub console_controller: Option<String>,
    /// The console signs its requests as the user in this file (`export
    /// ROCKETRAFT_ACCESS_KEY=...` / `export ROCKETRAFT_SECRET_KEY=...` lines, as `cluster up
    /// --auth` writes DIR/admin-credentials, owner-only); without it, as
    /// ROCKETRAFT_ACCESS_KEY / ROCKETRAFT_SECRET_KEY if set.
    #[arg(long, requires = "console_listen")]
    pub console_credentials_file: Option<PathBuf>,
}

impl NamesrvArgs {
    pub fn load(&self) -> anyhow::Result<NamesrvConfig> {
        let mut config = super::conf_file::load_namesrv(self.config.as_deref())?;
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        config.validate()?;
        Ok(config)
    }
}

/// Flags shared by `broker` and `dev`.
#[derive(Args)]
pub struct BrokerFlags {
    /// Broker set name.
    #[arg(long)]
    broker_name: Option<String>,
    /// Broker listen address (default 0.0.0.0:10911).
    #[arg(long)]
    broker_listen: Option<SocketAddr>,
    /// The address registered with the NameServers (RocketMQ's brokerIP1): an IP, with the
    /// listen port, or IP:port (default: the listen IP, 127.0.0.1 when unspecified).
    #[arg(long, value_parser = parse_ip_or_addr)]
    advertised_addr: Option<SocketAddr>,
    /// The HA (replication) port (haListenPort, default 10912; 0 picks one).
    #[arg(long)]
    ha_port: Option<u16>,
    /// The HA address slaves are told (RocketMQ's brokerIP2): an IP, with the HA port, or
    /// IP:port (default: the advertised IP).
    #[arg(long, value_parser = parse_ip_or_addr)]
    ha_advertised_addr: Option<SocketAddr>,
    /// Data directory of the store.
    #[arg(long)]
    store_dir: Option<PathBuf>,
    /// ASYNC_FLUSH or SYNC_FLUSH.
    #[arg(long)]
    flush: Option<FlushDiskType>,
    /// CommitLog segment size in bytes (default 1 GiB; 64 MiB for `dev` unless its config
    /// file names one).
    #[arg(long)]
    segment_size: Option<u64>,
    /// Disable topic auto-creation on send.
    #[arg(long)]
    no_auto_create_topic: bool,
    /// How old an undecided transaction must be before the producer is asked about it
    /// (transactionTimeOut, default 6000).
    #[arg(long)]
    transaction_timeout_ms: Option<u64>,
    /// How often undecided transactions are checked back (transactionCheckInterval, default
    /// 30000).
    #[arg(long)]
    transaction_check_interval_ms: Option<u64>,
}

impl BrokerFlags {
    fn apply(&self, config: &mut BrokerConfig) {
        if let Some(name) = &self.broker_name {
            config.broker_name = name.clone();
        }
        if let Some(listen) = self.broker_listen {
            config.listen = listen;
        }
        if let Some(addr) = self.advertised_addr {
            config.advertised_addr = Some(addr);
        }
        if let Some(port) = self.ha_port {
            config.ha_port = port;
        }
        if let Some(addr) = self.ha_advertised_addr {
            config.ha_advertised_addr = Some(addr);
        }
        if let Some(dir) = &self.store_dir {
            config.store.store_root = dir.clone();
        }
        if let Some(flush) = self.flush {
            config.store.flush_disk_type = flush;
        }
        if let Some(size) = self.segment_size {
            config.store.commitlog_segment_size = size;
        }
        if self.no_auto_create_topic {
            config.auto_create_topic_enable = false;
        }
        if let Some(ms) = self.transaction_timeout_ms {
            config.transaction_timeout_ms = ms;
        }
        if let Some(ms) = self.transaction_check_interval_ms {
            config.transaction_check_interval_ms = ms;
        }
    }
}

/// `--advertised-addr` / `--ha-advertised-addr`: an IP (the port is the listening one) or
/// IP:port, as `brokerIP1` / `brokerIP2` in a config file.
fn parse_ip_or_addr(text: &str) -> Result<SocketAddr, String> {
    rocketraft_broker::config::ip_or_addr::parse(text)
}

#[derive(Args)]
pub struct BrokerArgs {
    /// Config file: TOML (BrokerConfig keys; RocketMQ names such as brokerName are accepted), or
    /// RocketMQ's broker.conf as it is (`*.conf`, `*.properties`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// NameServer addresses, `host:port` separated by `;`.
    #[arg(long)]
    namesrv: Option<String>,
    /// Also serve the gRPC proxy (RocketMQ 5 clients) in this process, on this address (local
    /// mode: it finds brokers, this one included, through the NameServer).
    #[arg(long)]
    pub proxy_listen: Option<SocketAddr>,
    #[command(flatten)]
    flags: BrokerFlags,
    #[command(flatten)]
    pub metrics: super::metrics::MetricsFlags,
}

impl BrokerArgs {
    pub fn load(&self) -> anyhow::Result<BrokerConfig> {
        let mut config = super::conf_file::load_broker(self.config.as_deref())?;
        if let Some(namesrv) = &self.namesrv {
            config.namesrv_addr = namesrv.clone();
        }
        self.flags.apply(&mut config);
        config.validate()?;
        Ok(config)
    }
}

#[derive(Args)]
pub struct ControllerArgs {
    /// TOML config file: ControllerConfig keys, with the Raft member under `[raft]`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// This member's Raft node id.
    #[arg(long)]
    node_id: Option<u64>,
    /// Remoting listen address for brokers and admin tools (default 127.0.0.1:9878).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Raft (gRPC) listen address between controllers (default 127.0.0.1:9880).
    #[arg(long)]
    raft_listen: Option<SocketAddr>,
    /// The Raft address the other members reach this one on (default: this member's entry
    /// of --peers, else the Raft listen address).
    #[arg(long)]
    raft_advertise: Option<String>,
    /// Data directory (Raft log and snapshots).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Initial voters of a new quorum: `1=127.0.0.1:9880,2=127.0.0.1:9881,3=127.0.0.1:9882`.
    #[arg(long)]
    peers: Option<String>,
    /// Remoting addresses of the members, reported to brokers: `1=127.0.0.1:9878,...`.
    #[arg(long)]
    remoting_peers: Option<String>,
    /// Start without bootstrapping: wait to be added with `admin controller member add`.
    #[arg(long)]
    join: bool,
    #[command(flatten)]
    pub metrics: super::metrics::MetricsFlags,
}

impl ControllerArgs {
    pub fn load(&self) -> anyhow::Result<ControllerConfig> {
        let mut config: ControllerConfig = load_toml(self.config.as_deref())?;
        if let Some(id) = self.node_id {
            config.raft.node_id = id;
        }
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(listen) = self.raft_listen {
            config.raft.listen = listen;
        }
        if let Some(advertise) = &self.raft_advertise {
            config.raft.advertise = Some(advertise.clone());
        }
        if let Some(dir) = &self.data_dir {
            config.raft.data_dir = dir.clone();
        }
        if let Some(peers) = &self.peers {
            config.raft.initial_members = rocketraft_raft::parse_members(peers, "--peers")?;
        }
        if let Some(peers) = &self.remoting_peers {
            config.remoting_peers = rocketraft_raft::parse_members(peers, "--remoting-peers")?;
        }
        if self.join {
            config.raft.initial_members.clear();
        }
        if !config.raft.initial_members.is_empty()
            && !config
                .raft
                .initial_members
                .contains_key(&config.raft.node_id)
        {
            anyhow::bail!(
                "node id {} is not among the initial members {:?}: fix --node-id or --peers, or pass --join to be added later",
                config.raft.node_id,
                config.raft.initial_members.keys().collect::<Vec<_>>()
            );
        }
        Ok(config)
    }
}

/// The one-node controller `rocketraft dev` embeds in its NameServer.
fn dev_controller(data_dir: &Path) -> ControllerConfig {
    let mut c = ControllerConfig::default();
    c.raft.node_id = 1;
    c.raft.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.raft.data_dir = data_dir.join("controller");
    c.raft.initial_members = BTreeMap::from([(1, "127.0.0.1:0".to_string())]);
    c.raft.election_timeout_min_ms = 500;
    c.raft.election_timeout_max_ms = 1000;
    c.raft.heartbeat_interval_ms = 100;
    c
}

/// Whether a `[broker]` table names the CommitLog segment size, under our key or RocketMQ's,
/// in its `[store]` table.
fn names_segment_size(broker: &toml::Table) -> bool {
    broker
        .get("store")
        .and_then(toml::Value::as_table)
        .is_some_and(|store| {
            store.contains_key("commitlog_segment_size")
                || store.contains_key("mappedFileSizeCommitLog")
        })
}

/// Whether a `[broker]` table names the store's root directory, under our key or RocketMQ's.
fn names_store_root(broker: &toml::Table) -> bool {
    broker
        .get("store")
        .and_then(toml::Value::as_table)
        .is_some_and(|store| {
            store.contains_key("store_root") || store.contains_key("storePathRootDir")
        })
}

/// `rocketraft dev` config file: a `[namesrv]` and a `[broker]` table.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct DevFile {
    data_dir: Option<PathBuf>,
    namesrv: Option<NamesrvConfig>,
    broker: Option<BrokerConfig>,
}

#[derive(Args)]
pub struct DevArgs {
    /// TOML config file with optional `data_dir`, `[namesrv]` and `[broker]` tables.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the data lives (default ./data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// NameServer listen address (default 127.0.0.1:9876).
    #[arg(long)]
    namesrv_listen: Option<SocketAddr>,
    /// The in-process gRPC proxy's address (RocketMQ 5 clients).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub proxy_listen: SocketAddr,
    /// Do not run the gRPC proxy.
    #[arg(long)]
    pub no_proxy: bool,
    /// The web console's address (default 127.0.0.1:8082, skipped with a warning when taken).
    #[arg(long)]
    pub console_listen: Option<SocketAddr>,
    /// Do not serve the web console.
    #[arg(long, conflicts_with = "console_listen")]
    pub no_console: bool,
    #[command(flatten)]
    flags: BrokerFlags,
    #[command(flatten)]
    pub metrics: super::metrics::MetricsFlags,
}

impl DevArgs {
    pub fn load(&self) -> anyhow::Result<(NamesrvConfig, BrokerConfig)> {
        let file: DevFile = load_toml(self.config.as_deref())?;
        let raw: toml::Table = load_toml(self.config.as_deref())?;
        let broker_table = raw.get("broker").and_then(toml::Value::as_table);
        let segment_size_given = broker_table.is_some_and(names_segment_size);
        let store_root_given = broker_table.is_some_and(names_store_root);
        let mut namesrv = file.namesrv.unwrap_or_else(|| NamesrvConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9876)),
            ..NamesrvConfig::default()
        });
        if let Some(listen) = self.namesrv_listen {
            namesrv.listen = listen;
        }
        let data_dir = self
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("data"));
        if !namesrv.enable_controller_in_namesrv {
            namesrv.enable_controller_in_namesrv = true;
            namesrv.controller = dev_controller(&data_dir);
        }
        let mut broker = file.broker.unwrap_or_else(|| {
            let mut b = BrokerConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 10911)),
                ..BrokerConfig::default()
            };
            b.store.store_root = data_dir.join("broker");
            b
        });
        if !segment_size_given {
            broker.store.commitlog_segment_size = crate::cmd::SMALL_SEGMENT_SIZE;
        }
        // The store lives under the data directory unless the file puts it elsewhere.
        if !store_root_given {
            broker.store.store_root = data_dir.join("broker");
        }
        self.flags.apply(&mut broker);
        let namesrv_addr = rocketraft_remoting::api::advertised(namesrv.listen);
        broker.namesrv_addr = namesrv_addr.to_string();
        namesrv.validate()?;
        broker.validate()?;
        Ok((namesrv, broker))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cmd::SMALL_SEGMENT_SIZE;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        dev: DevArgs,
    }

    fn dev_config(args: &[&str], file: Option<&str>) -> BrokerConfig {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dev.toml");
        let mut argv = vec!["dev".to_string()];
        if let Some(text) = file {
            std::fs::write(&path, text).expect("write the config");
            argv.push("--config".into());
            argv.push(path.to_string_lossy().into_owned());
        }
        argv.extend(args.iter().map(|a| a.to_string()));
        let cli = Cli::try_parse_from(argv).expect("valid flags");
        cli.dev.load().expect("a valid config").1
    }

    #[derive(Parser)]
    struct ControllerCli {
        #[command(flatten)]
        controller: ControllerArgs,
    }

    #[test]
    fn advertised_address_flags_take_rocketmqs_forms() {
        let c = dev_config(
            &[
                "--advertised-addr",
                "10.0.0.5",
                "--ha-port",
                "0",
                "--ha-advertised-addr",
                "10.0.1.5:40912",
            ],
            None,
        );
        assert_eq!(
            c.advertised_for(10911),
            "10.0.0.5:10911".parse().expect("addr")
        );
        assert_eq!(c.ha_port, 0);
        assert_eq!(
            c.ha_advertised_for(c.advertised_for(10911), 30000),
            "10.0.1.5:40912".parse().expect("addr")
        );
        let bad = Cli::try_parse_from(["dev", "--advertised-addr", "broker-0.example"])
            .err()
            .expect("a host name is refused");
        assert!(bad.to_string().contains("expected an IP address"), "{bad}");

        let cli = ControllerCli::try_parse_from([
            "controller",
            "--node-id",
            "2",
            "--raft-listen",
            "0.0.0.0:9880",
            "--raft-advertise",
            "10.0.0.2:9880",
            "--peers",
            "1=10.0.0.1:9880,2=10.0.0.2:9880",
        ])
        .expect("valid flags");
        let config = cli.controller.load().expect("loads");
        assert_eq!(config.raft.advertise.as_deref(), Some("10.0.0.2:9880"));
    }

    #[test]
    fn dev_keeps_the_store_under_its_data_dir_unless_the_file_names_one() {
        let root = |args: &[&str], file: Option<&str>| dev_config(args, file).store.store_root;
        let plain = "[broker]\nbrokerName = \"broker-x\"\n";
        assert_eq!(
            root(&["--data-dir", "/srv/rr"], Some(plain)),
            PathBuf::from("/srv/rr/broker")
        );
        assert_eq!(
            root(&["--data-dir", "/srv/rr"], None),
            PathBuf::from("/srv/rr/broker")
        );
        let named = "[broker.store]\nstorePathRootDir = \"/elsewhere\"\n";
        assert_eq!(
            root(&["--data-dir", "/srv/rr"], Some(named)),
            PathBuf::from("/elsewhere")
        );
    }

    #[test]
    fn dev_uses_small_segments_unless_told_otherwise() {
        let segment = |c: BrokerConfig| c.store.commitlog_segment_size;
        assert_eq!(segment(dev_config(&[], None)), SMALL_SEGMENT_SIZE);
        assert_eq!(
            segment(dev_config(&["--segment-size", "1048576"], None)),
            1 << 20
        );
        // A config file that names the size keeps it, under either key; one that does not
        // gets the small default too.
        let rocketmq_key = "[broker.store]\nmappedFileSizeCommitLog = 1073741824\n";
        assert_eq!(segment(dev_config(&[], Some(rocketmq_key))), 1 << 30);
        let our_key = "[broker.store]\ncommitlog_segment_size = 268435456\n";
        assert_eq!(segment(dev_config(&[], Some(our_key))), 256 << 20);
        let other = "[broker]\nbrokerName = \"broker-x\"\n";
        assert_eq!(segment(dev_config(&[], Some(other))), SMALL_SEGMENT_SIZE);
        // The flag wins over the file.
        assert_eq!(
            segment(dev_config(
                &["--segment-size", "2097152"],
                Some(rocketmq_key)
            )),
            2 << 20
        );
    }
}
