//! Who is connected and how a broker is configured: `admin consumer connections` and `admin
//! producer connections` (mqadmin consumerConnection / producerConnection, from
//! GET_CONSUMER_CONNECTION_LIST and GET_PRODUCER_CONNECTION_LIST on every master of a cluster),
//! and `admin broker config get|set` (mqadmin getBrokerConfig / updateBrokerConfig, from
//! GET_BROKER_CONFIG and UPDATE_BROKER_CONFIG).

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use rocketraft_common::manage::{Connection, ConsumerConnection, ProducerConnection};
use rocketraft_remoting::api::{ApiError, MqClientApi};
use rocketraft_remoting::codes::response_code;

/// Which group, on which brokers.
#[derive(Args)]
pub struct ConnectionsArgs {
    #[arg(long)]
    pub group: String,
    /// Cluster whose masters are asked.
    #[arg(long, default_value = rocketraft_common::consts::DEFAULT_CLUSTER)]
    pub cluster: String,
    /// One broker's address instead of every master of the cluster.
    #[arg(long)]
    pub addr: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum ProducerCommand {
    /// The connections of a producer group's clients (client id, address, language, version).
    Connections(ConnectionsArgs),
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Every setting of the broker, by RocketMQ's `broker.conf` keys, and the config's version.
    Get {
        /// Broker set name (brokerName); every replica the NameServer knows is asked.
        #[arg(long, required_unless_present = "addr")]
        broker: Option<String>,
        /// One broker's address instead.
        #[arg(long, conflicts_with = "broker")]
        addr: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Change settings while the broker runs: `key=value` ... (the retention settings:
    /// fileReservedTime, deleteWhen, diskMaxUsedSpaceRatio, diskSpaceCleanForciblyRatio,
    /// diskSpaceWarningLevelRatio, cleanFileForciblyEnable). A broker applies all of them or,
    /// refusing one, none; the broker keeps the change across restarts (in
    /// `{storeRoot}/config/broker-runtime.properties`, applied over its config file).
    Set {
        /// Broker set name (brokerName); every replica the NameServer knows is changed.
        #[arg(long, required_unless_present = "addr")]
        broker: Option<String>,
        /// One broker's address instead.
        #[arg(long, conflicts_with = "broker")]
        addr: Option<String>,
        /// `key=value` pairs.
        #[arg(required = true)]
        entries: Vec<String>,
        /// Print the brokers updated and the settings as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The brokers to ask: `--addr`, or every master of `--cluster`.
async fn brokers(
    api: &MqClientApi,
    namesrv: &str,
    args: &ConnectionsArgs,
) -> anyhow::Result<Vec<String>> {
    match &args.addr {
        Some(a) => Ok(vec![a.clone()]),
        None => super::cluster_masters(api, namesrv, &args.cluster).await,
    }
}

fn add_connections(into: &mut Vec<Connection>, from: Vec<Connection>) {
    for c in from {
        if !into.contains(&c) {
            into.push(c);
        }
    }
}

fn print_connections(connections: &[Connection]) {
    println!(
        "{:<4} {:<40} {:<24} {:<10} Version",
        "#", "ClientId", "ClientAddr", "Language"
    );
    for (i, c) in connections.iter().enumerate() {
        println!(
            "{:<4} {:<40} {:<24} {:<10} {}",
            i + 1,
            c.client_id,
            c.client_addr,
            c.language,
            c.version
        );
    }
}

/// `admin consumer connections`: the group's connections and subscriptions, merged over the
/// brokers that have a client of it; an error when none has.
pub async fn consumer_connections(
    api: &MqClientApi,
    namesrv: &str,
    args: ConnectionsArgs,
) -> anyhow::Result<()> {
    let addrs = brokers(api, namesrv, &args).await?;
    let mut merged = ConsumerConnection::default();
    for addr in &addrs {
        match api.consumer_connections(addr, &args.group).await {
            Ok(c) => {
                add_connections(&mut merged.connection_set, c.connection_set);
                merged.subscription_table.extend(c.subscription_table);
                merged.consume_type = merged.consume_type.or(c.consume_type);
                merged.message_model = merged.message_model.or(c.message_model);
                merged.consume_from_where = merged.consume_from_where.or(c.consume_from_where);
            }
            Err(ApiError::Refused(r)) if r.code == response_code::CONSUMER_NOT_ONLINE => {}
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "the consumer connections of {} on {addr}",
                    args.group
                )))
            }
        }
    }
    if merged.connection_set.is_empty() {
        bail!(
            "the consumer group {} is not online: no client of it is connected to {}",
            args.group,
            addrs.join(", ")
        );
    }
    super::print_as(args.json, &merged, |c| {
        print_connections(&c.connection_set);
        println!();
        println!("{:<40} SubExpression", "Topic");
        for (topic, s) in &c.subscription_table {
            println!("{topic:<40} {}", s.sub_string);
        }
        println!();
        let or_unknown = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
        println!("ConsumeType: {}", or_unknown(&c.consume_type));
        println!("MessageModel: {}", or_unknown(&c.message_model));
        println!("ConsumeFromWhere: {}", or_unknown(&c.consume_from_where));
    })
}

/// `admin producer connections`.
pub async fn run_producer(
    api: &MqClientApi,
    namesrv: &str,
    command: ProducerCommand,
) -> anyhow::Result<()> {
    let ProducerCommand::Connections(args) = command;
    let addrs = brokers(api, namesrv, &args).await?;
    let mut merged = ProducerConnection::default();
    for addr in &addrs {
        match api.producer_connections(addr, &args.group).await {
            Ok(c) => add_connections(&mut merged.connection_set, c.connection_set),
            // RocketMQ answers a group without a client with SYSTEM_ERROR "... not exist".
            Err(ApiError::Refused(r))
                if r.code == response_code::SYSTEM_ERROR && r.remark.ends_with("not exist") => {}
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "the producer connections of {} on {addr}",
                    args.group
                )))
            }
        }
    }
    if merged.connection_set.is_empty() {
        bail!(
            "the producer group {} has no client connected to {}",
            args.group,
            addrs.join(", ")
        );
    }
    super::print_as(args.json, &merged, |c| print_connections(&c.connection_set))
}

/// `admin broker config get|set`.
pub async fn run_config(
    api: &MqClientApi,
    namesrv: &str,
    command: ConfigCommand,
) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Get { broker, addr, json } => {
            let addrs = super::broker::target_addrs(api, namesrv, broker, addr).await?;
            let mut all = BTreeMap::new();
            for addr in &addrs {
                let snapshot = api
                    .broker_config(addr)
                    .await
                    .with_context(|| format!("the config of {addr}"))?;
                all.insert(addr.clone(), snapshot);
            }
            if json {
                let out: BTreeMap<&String, serde_json::Value> = all
                    .iter()
                    .map(|(addr, s)| {
                        (
                            addr,
                            serde_json::json!({
                                "properties": s.properties,
                                "version": s.version,
                            }),
                        )
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(());
            }
            for (addr, snapshot) in &all {
                if all.len() > 1 {
                    println!("# {addr}");
                }
                for (key, value) in &snapshot.properties {
                    println!("{key}={value}");
                }
            }
            Ok(())
        }
        ConfigCommand::Set {
            broker,
            addr,
            entries,
            json,
        } => {
            let mut pairs = Vec::new();
            for entry in &entries {
                let Some((key, value)) = entry.split_once('=') else {
                    bail!("{entry:?} is not key=value");
                };
                if key.trim().is_empty() {
                    bail!("{entry:?} has no key");
                }
                pairs.push((key.trim(), value.trim()));
            }
            let addrs = super::broker::target_addrs(api, namesrv, broker, addr).await?;
            let mut failed = Vec::new();
            let mut updated = Vec::new();
            for addr in &addrs {
                match api.update_broker_config(addr, &pairs).await {
                    Ok(()) => {
                        if !json {
                            println!("{addr}: updated");
                        }
                        updated.push(addr.clone());
                    }
                    Err(ApiError::Refused(r)) => {
                        failed.push(format!("{addr}: refused (code {}): {}", r.code, r.remark))
                    }
                    Err(e) => failed.push(format!("{addr}: {e}")),
                }
            }
            if json {
                let settings: BTreeMap<&str, &str> = pairs.iter().copied().collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({ "updated": updated, "settings": settings })
                    )?
                );
            }
            if !failed.is_empty() {
                bail!("{}", failed.join("\n"));
            }
            Ok(())
        }
    }
}
