//! Configuration loading for each role: a TOML file (`--config`) and flags that override it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use rocketraft_broker::store::FlushDiskType;
use rocketraft_broker::BrokerConfig;
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
    /// TOML config file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address (default 0.0.0.0:9876).
    #[arg(long)]
    listen: Option<SocketAddr>,
}

impl NamesrvArgs {
    pub fn load(&self) -> anyhow::Result<NamesrvConfig> {
        let mut config: NamesrvConfig = load_toml(self.config.as_deref())?;
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        config.validate().map_err(anyhow::Error::msg)?;
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
    /// Data directory of the store.
    #[arg(long)]
    store_dir: Option<PathBuf>,
    /// ASYNC_FLUSH or SYNC_FLUSH.
    #[arg(long, value_parser = parse_flush)]
    flush: Option<FlushDiskType>,
    /// CommitLog segment size in bytes (default 1 GiB).
    #[arg(long)]
    segment_size: Option<u64>,
    /// Disable topic auto-creation on send.
    #[arg(long)]
    no_auto_create_topic: bool,
}

fn parse_flush(s: &str) -> Result<FlushDiskType, String> {
    match s.to_ascii_uppercase().replace('-', "_").as_str() {
        "ASYNC_FLUSH" | "ASYNC" => Ok(FlushDiskType::AsyncFlush),
        "SYNC_FLUSH" | "SYNC" => Ok(FlushDiskType::SyncFlush),
        other => Err(format!(
            "unknown flush type {other:?}: use ASYNC_FLUSH or SYNC_FLUSH"
        )),
    }
}

impl BrokerFlags {
    fn apply(&self, config: &mut BrokerConfig) {
        if let Some(name) = &self.broker_name {
            config.broker_name = name.clone();
        }
        if let Some(listen) = self.broker_listen {
            config.listen = listen;
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
    }
}

#[derive(Args)]
pub struct BrokerArgs {
    /// TOML config file (BrokerConfig keys; RocketMQ names such as brokerName are accepted).
    #[arg(long)]
    config: Option<PathBuf>,
    /// NameServer addresses, `host:port` separated by `;`.
    #[arg(long)]
    namesrv: Option<String>,
    #[command(flatten)]
    flags: BrokerFlags,
}

impl BrokerArgs {
    pub fn load(&self) -> anyhow::Result<BrokerConfig> {
        let mut config: BrokerConfig = load_toml(self.config.as_deref())?;
        if let Some(namesrv) = &self.namesrv {
            config.namesrv_addr = namesrv.clone();
        }
        self.flags.apply(&mut config);
        config.validate().map_err(anyhow::Error::msg)?;
        Ok(config)
    }
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
    #[command(flatten)]
    flags: BrokerFlags,
}

impl DevArgs {
    pub fn load(&self) -> anyhow::Result<(NamesrvConfig, BrokerConfig)> {
        let file: DevFile = load_toml(self.config.as_deref())?;
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
        let mut broker = file.broker.unwrap_or_else(|| {
            let mut b = BrokerConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 10911)),
                ..BrokerConfig::default()
            };
            b.store.store_root = data_dir.join("broker");
            b
        });
        self.flags.apply(&mut broker);
        let namesrv_addr = rocketraft_remoting::api::advertised(namesrv.listen);
        broker.namesrv_addr = namesrv_addr.to_string();
        namesrv.validate().map_err(anyhow::Error::msg)?;
        broker.validate().map_err(anyhow::Error::msg)?;
        Ok((namesrv, broker))
    }
}
