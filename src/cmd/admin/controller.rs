//! `rocketraft admin controller`: the controller quorum's status, a broker set's replicas, Raft
//! membership changes, Raft leadership transfer, and the controllers' settings.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use rocketraft_common::trust::ClusterSecret;
use rocketraft_controller::client::{ControllerCallError, ControllerClient};
use rocketraft_controller::wire::{BrokerReplicasInfo, WireReplicasInfo};
use rocketraft_controller::ControllerStatus;
use rocketraft_raft::AdminRequest;
use rocketraft_remoting::{request_code, response_code, RemotingClient, RemotingCommand};

use super::{id_and_addr, print_as};

#[derive(Subcommand)]
pub enum ControllerCommand {
    /// Leader, term, members and last applied index, as the controller at --controller sees them.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// A broker set's master, epochs and SyncStateSet (a linearizable read).
    Replicas {
        /// Broker set name (brokerName).
        #[arg(long)]
        broker: String,
        #[arg(long)]
        json: bool,
    },
    /// Raft membership: add a learner (it catches up by log or snapshot), promote it to voter,
    /// or remove a node. One change at a time. Talks to a controller's Raft address.
    #[command(subcommand)]
    Member(MemberChange),
    /// Hand the controller quorum's Raft leadership to voter --to; answers once it leads. Talks
    /// to --raft (a controller's Raft address), else to the Raft address of the controller at
    /// --controller; the request is forwarded to the leader.
    TransferLeader {
        /// The node id of the voter that should lead.
        #[arg(long)]
        to: u64,
        /// Raft (gRPC) address of any controller member.
        #[arg(long)]
        raft: Option<String>,
    },
    /// Elect a broker set's master now (mqadmin electMaster): with --broker-id that replica,
    /// which must be in the SyncStateSet (or enableElectUncleanMaster on); without, the
    /// controller's policy picks among the live ones. Changes state: needs the cluster secret
    /// (--cluster-secret-file), or a Super user on a NameServer's embedded controller with ACL.
    Elect {
        /// Broker set name (brokerName).
        #[arg(long)]
        broker: String,
        /// The replica to make master (its controller-assigned broker id).
        #[arg(long)]
        broker_id: Option<i64>,
        #[arg(long, default_value = rocketraft_common::consts::DEFAULT_CLUSTER)]
        cluster: String,
        #[arg(long)]
        json: bool,
    },
    /// Make the controller forget a broker set, or some of its replicas (mqadmin
    /// cleanBrokerMetadata). Refused for a set that still has a master, or a listed replica
    /// that is alive, unless --clean-living. Changes state: needs the cluster secret, as
    /// `elect` does.
    Clean {
        /// Broker set name (brokerName).
        #[arg(long)]
        broker: String,
        /// Only these replicas: broker ids separated by `;` (RocketMQ's `1;2;3`).
        #[arg(long)]
        broker_ids: Option<String>,
        /// Also when the set has a master or a listed replica is alive.
        #[arg(long)]
        clean_living: bool,
        #[arg(long, default_value = rocketraft_common::consts::DEFAULT_CLUSTER)]
        cluster: String,
        #[arg(long)]
        json: bool,
    },
    /// The controllers' settings (mqadmin getControllerConfig / updateControllerConfig). Each
    /// controller has its own: --controller takes one address or a `;`-separated list, and
    /// every one is asked.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Every setting of each controller (secrets left out).
    Get {
        #[arg(long)]
        json: bool,
    },
    /// Change settings while the controllers run: `key=value` ... (enableElectUncleanMaster,
    /// notifyBrokerRoleChanged, scanNotActiveBrokerInterval, stale_reads). A controller applies
    /// all of them or, refusing one, none; the change lasts until it restarts. Needs
    /// --cluster-secret-file (or ROCKETRAFT_CLUSTER_SECRET) when the cluster has a secret.
    Set {
        /// `key=value` pairs.
        #[arg(required = true)]
        entries: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum MemberChange {
    /// Add a new node as learner. Give a wiped node a new id: ids are never reused.
    Add {
        #[arg(long)]
        id: u64,
        /// The new node's Raft address.
        #[arg(long)]
        addr: String,
        #[command(flatten)]
        via: Via,
    },
    /// Promote a learner to voter.
    Promote {
        #[arg(long)]
        id: u64,
        #[command(flatten)]
        via: Via,
    },
    /// Remove a voter or learner.
    Remove {
        #[arg(long)]
        id: u64,
        #[command(flatten)]
        via: Via,
    },
}

#[derive(clap::Args)]
pub struct Via {
    /// Raft (gRPC) address of any controller member; the change is forwarded to the leader.
    #[arg(long)]
    raft: String,
}

/// The controllers named by `--controller` (`a;b` or `a,b`, as mqadmin's `-a`).
fn controller_list(controller: &str) -> anyhow::Result<Vec<String>> {
    let list: Vec<String> = controller
        .split([';', ','])
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    if list.is_empty() {
        bail!("no controller address in {controller:?} (pass --controller)");
    }
    Ok(list)
}

fn config_error(addr: &str, e: ControllerCallError) -> String {
    match e {
        ControllerCallError::Refused(r) => {
            format!("{addr}: refused (code {}): {}", r.code, r.remark)
        }
        other => format!("{addr}: {other}"),
    }
}

async fn run_config(
    client: &RemotingClient,
    controller: &str,
    command: ConfigCommand,
) -> anyhow::Result<()> {
    let addrs = controller_list(controller)?;
    let api = ControllerClient::new(client.clone(), Duration::from_secs(15));
    match command {
        ConfigCommand::Get { json } => {
            let mut all = BTreeMap::new();
            for addr in &addrs {
                let config = api
                    .get_config(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!(config_error(addr, e)))?;
                all.insert(addr.clone(), config);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(());
            }
            for (addr, config) in &all {
                if all.len() > 1 {
                    println!("# {addr}");
                }
                for (key, value) in config {
                    println!("{key}={value}");
                }
            }
            Ok(())
        }
        ConfigCommand::Set { entries } => {
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
            let mut failed = Vec::new();
            for addr in &addrs {
                match api.update_config(addr, &pairs).await {
                    Ok(()) => println!("{addr}: updated"),
                    Err(e) => failed.push(config_error(addr, e)),
                }
            }
            if !failed.is_empty() {
                bail!("{}", failed.join("\n"));
            }
            Ok(())
        }
    }
}

/// The controller's own status (Remoting).
async fn status_of(client: &RemotingClient, controller: &str) -> anyhow::Result<ControllerStatus> {
    let response = call(
        client,
        controller,
        RemotingCommand::request(request_code::CONTROLLER_GET_METADATA_INFO),
    )
    .await?;
    serde_json::from_slice(&response.body).context(
        "the controller's status body is not Rocketraft's (is it a Rocketraft controller?)",
    )
}

async fn call(
    client: &RemotingClient,
    addr: &str,
    request: RemotingCommand,
) -> anyhow::Result<RemotingCommand> {
    let response = client
        .invoke(addr, request, Duration::from_secs(15))
        .await
        .with_context(|| format!("cannot reach a controller at {addr} (pass --controller)"))?;
    if response.code != response_code::SUCCESS {
        bail!(
            "controller at {addr} answered code {}: {}",
            response.code,
            response.remark.unwrap_or_default()
        );
    }
    Ok(response)
}

pub async fn run(
    client: &RemotingClient,
    controller: &str,
    command: ControllerCommand,
    cluster_secret: Option<&ClusterSecret>,
) -> anyhow::Result<()> {
    match command {
        ControllerCommand::Status { json } => {
            let status = status_of(client, controller).await?;
            print_as(json, &status, print_status)
        }
        ControllerCommand::Replicas { broker, json } => {
            let request = RemotingCommand::request(request_code::CONTROLLER_GET_SYNC_STATE_DATA)
                .with_body(serde_json::to_vec(&vec![broker.clone()])?);
            let response = call(client, controller, request).await?;
            let info: BrokerReplicasInfo = serde_json::from_slice(&response.body)
                .context("undecodable BrokerReplicasInfo from the controller")?;
            let Some(set) = info.replicas_info_table.get(&broker) else {
                bail!("the controller knows no broker set named {broker:?}");
            };
            print_as(json, set, |set| print_replicas(&broker, set))
        }
        ControllerCommand::Member(change) => {
            let (request, raft) = match change {
                MemberChange::Add { id, addr, via } => {
                    (AdminRequest::AddLearner { id, addr }, via.raft)
                }
                MemberChange::Promote { id, via } => (AdminRequest::Promote { id }, via.raft),
                MemberChange::Remove { id, via } => (AdminRequest::Remove { id }, via.raft),
            };
            let answer = rocketraft_raft::remote_admin(
                &raft,
                &request,
                Duration::from_secs(60),
                cluster_secret,
            )
            .await
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("membership change through {raft}"))?;
            println!("{answer}");
            Ok(())
        }
        ControllerCommand::TransferLeader { to, raft } => {
            let raft = match raft {
                Some(raft) => raft,
                None => status_of(client, controller).await?.raft.addr,
            };
            let answer = rocketraft_raft::remote_admin(
                &raft,
                &AdminRequest::TransferLeader { to },
                Duration::from_secs(30),
                cluster_secret,
            )
            .await
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("leadership transfer to node {to} through {raft}"))?;
            println!("{answer}");
            Ok(())
        }
        ControllerCommand::Config(command) => run_config(client, controller, command).await,
        ControllerCommand::Elect {
            broker,
            broker_id,
            cluster,
            json,
        } => {
            let api = ControllerClient::new(client.clone(), Duration::from_secs(15));
            let info = api
                .elect_master(
                    controller,
                    &cluster,
                    &broker,
                    broker_id,
                    broker_id.is_some(),
                )
                .await
                .map_err(|e| anyhow::anyhow!(state_change_error(controller, e)))?;
            #[derive(serde::Serialize)]
            #[serde(rename_all = "camelCase")]
            struct Elected<'a> {
                broker_name: &'a str,
                code: i32,
                master_broker_id: Option<i64>,
                master_address: Option<&'a str>,
                master_epoch: i32,
                sync_state_set_epoch: i32,
                sync_state_set: Vec<i64>,
            }
            let elected = Elected {
                broker_name: &broker,
                code: info.code,
                master_broker_id: info.master_broker_id,
                master_address: info.master_address.as_deref(),
                master_epoch: info.master_epoch,
                sync_state_set_epoch: info.sync_state_set_epoch,
                sync_state_set: info.sync_state_set.iter().copied().collect(),
            };
            if info.code != response_code::SUCCESS {
                bail!(
                    "the controller at {controller} elected no new master of {broker} (code {}: {}); master now: {}",
                    info.code,
                    if info.code == response_code::CONTROLLER_MASTER_STILL_EXIST {
                        "the master is still alive and was not replaced"
                    } else {
                        "no replica can be master"
                    },
                    id_and_addr(info.master_broker_id, info.master_address.as_ref())
                );
            }
            print_as(json, &elected, |e| {
                println!(
                    "{}: master {} at epoch {}, SyncStateSet {:?} (epoch {})",
                    e.broker_name,
                    id_and_addr(
                        e.master_broker_id,
                        e.master_address.map(str::to_string).as_ref()
                    ),
                    e.master_epoch,
                    e.sync_state_set,
                    e.sync_state_set_epoch
                )
            })
        }
        ControllerCommand::Clean {
            broker,
            broker_ids,
            clean_living,
            cluster,
            json,
        } => {
            let api = ControllerClient::new(client.clone(), Duration::from_secs(15));
            api.clean_broker_data(
                controller,
                &cluster,
                &broker,
                broker_ids.as_deref(),
                clean_living,
            )
            .await
            .map_err(|e| anyhow::anyhow!(state_change_error(controller, e)))?;
            let cleaned = serde_json::json!({
                "brokerName": broker,
                "brokerIds": broker_ids,
                "cleanLiving": clean_living,
            });
            print_as(json, &cleaned, |_| match &broker_ids {
                Some(ids) => println!("the controller forgot replicas {ids} of {broker}"),
                None => println!("the controller forgot broker set {broker}"),
            })
        }
    }
}

/// A refused state change, with the fix for the usual cause (no cluster secret).
fn state_change_error(addr: &str, e: ControllerCallError) -> String {
    match e {
        ControllerCallError::Refused(r) if r.code == response_code::NO_PERMISSION => format!(
            "the controller at {addr} refused: {} (state changes need the cluster secret: pass \
             --cluster-secret-file, e.g. <cluster dir>/cluster-secret)",
            r.remark
        ),
        ControllerCallError::Refused(r) => format!(
            "the controller at {addr} refused (code {}): {}",
            r.code, r.remark
        ),
        other => format!("no answer from the controller at {addr}: {other}"),
    }
}

fn print_status(status: &ControllerStatus) {
    let r = &status.raft;
    println!("node:          {} ({}) {}", r.id, r.addr, r.state);
    println!("remoting:      {}", status.remoting_addr);
    println!(
        "leader:        {}",
        id_and_addr(r.leader, r.leader_addr.as_ref())
    );
    println!("term:          {}", r.term);
    for (id, addr) in &r.voters {
        println!("voter:         {id} {addr}");
    }
    for (id, addr) in &r.learners {
        println!("learner:       {id} {addr}");
    }
    let show = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    println!("last log:      {}", show(r.last_log_index));
    println!("committed:     {}", show(r.committed));
    println!("last applied:  {}", show(r.last_applied));
    println!("snapshot:      {}", show(r.snapshot));
    println!("broker sets:   {}", status.broker_sets);
}

fn print_replicas(broker: &str, set: &WireReplicasInfo) {
    println!("broker set:        {broker}");
    println!(
        "master:            {}",
        id_and_addr(set.master_broker_id, set.master_address.as_ref())
    );
    println!("master epoch:      {}", set.master_epoch);
    println!("SyncStateSet epoch: {}", set.sync_state_set_epoch);
    for (label, replicas) in [
        ("in sync:", &set.in_sync_replicas),
        ("not in sync:", &set.not_in_sync_replicas),
    ] {
        for r in replicas {
            println!(
                "{label:<19}{} {} {}",
                r.broker_id,
                r.broker_address,
                if r.alive { "alive" } else { "not alive" }
            );
        }
    }
}
