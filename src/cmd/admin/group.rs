//! `rocketraft admin group list|delete` (mqadmin's subscription group commands: the groups every
//! master knows, `deleteSubGroup`) and `rocketraft admin consumer status` (mqadmin
//! consumerStatus: what each live client of a group says about itself, relayed by a broker).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context};
use clap::Subcommand;
use rocketraft_common::manage::ConsumerRunningInfo;
use rocketraft_remoting::api::{ApiError, MqClientApi};
use rocketraft_remoting::codes::response_code;
use serde::Serialize;

#[derive(Subcommand)]
pub enum GroupCommand {
    /// Every subscription group the masters of a cluster know, with its retries before the DLQ,
    /// whether it consumes in order and whether it may consume at all (mqadmin's
    /// subscription group list).
    List {
        #[arg(long, default_value = rocketraft_common::consts::DEFAULT_CLUSTER)]
        cluster: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a subscription group on every master of a cluster (mqadmin deleteSubGroup); its
    /// consumer offsets stay. A group that a master does not have is not an error there.
    Delete {
        #[arg(long)]
        group: String,
        #[arg(long, default_value = rocketraft_common::consts::DEFAULT_CLUSTER)]
        cluster: String,
        #[arg(long)]
        json: bool,
    },
}

/// One group as `group list` shows it.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct GroupRow {
    group: String,
    /// The masters that have it.
    brokers: BTreeSet<String>,
    retry_max_times: Option<i64>,
    consume_message_orderly: Option<bool>,
    consume_enable: Option<bool>,
    consume_broadcast_enable: Option<bool>,
}

pub async fn run(api: &MqClientApi, namesrv: &str, command: GroupCommand) -> anyhow::Result<()> {
    match command {
        GroupCommand::List { cluster, json } => {
            let mut rows: BTreeMap<String, GroupRow> = BTreeMap::new();
            for broker in super::cluster_masters(api, namesrv, &cluster).await? {
                let table = api
                    .subscription_groups(&broker)
                    .await
                    .with_context(|| format!("the subscription groups of {broker}"))?;
                for (name, config) in table {
                    let row = rows.entry(name.clone()).or_insert_with(|| GroupRow {
                        group: name,
                        ..GroupRow::default()
                    });
                    row.brokers.insert(broker.clone());
                    row.retry_max_times = config.get("retryMaxTimes").and_then(|v| v.as_i64());
                    let flag = |key: &str| config.get(key).and_then(|v| v.as_bool());
                    row.consume_message_orderly = flag("consumeMessageOrderly");
                    row.consume_enable = flag("consumeEnable");
                    row.consume_broadcast_enable = flag("consumeBroadcastEnable");
                }
            }
            let rows: Vec<GroupRow> = rows.into_values().collect();
            super::print_as(json, &rows, |rows| {
                println!(
                    "{:<40} {:>6} {:>8} {:>8}  brokers",
                    "group", "retry", "orderly", "consume"
                );
                let shown = |b: Option<bool>| b.map_or("-".to_string(), |b| b.to_string());
                for r in rows {
                    println!(
                        "{:<40} {:>6} {:>8} {:>8}  {}",
                        r.group,
                        r.retry_max_times.map_or("-".to_string(), |n| n.to_string()),
                        shown(r.consume_message_orderly),
                        shown(r.consume_enable),
                        r.brokers.iter().cloned().collect::<Vec<_>>().join(" ")
                    );
                }
            })
        }
        GroupCommand::Delete {
            group,
            cluster,
            json,
        } => {
            let mut deleted = Vec::new();
            for broker in super::cluster_masters(api, namesrv, &cluster).await? {
                api.delete_subscription_group(&broker, &group)
                    .await
                    .with_context(|| format!("deleting group {group} on {broker}"))?;
                deleted.push(broker);
            }
            #[derive(Serialize)]
            struct Deleted<'a> {
                group: &'a str,
                brokers: &'a [String],
            }
            super::print_as(
                json,
                &Deleted {
                    group: &group,
                    brokers: &deleted,
                },
                |d| {
                    for b in d.brokers {
                        println!("deleted group {} on {b}", d.group);
                    }
                },
            )
        }
    }
}

/// One client's running info, as `consumer status --json` prints it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClientStatus {
    client_id: String,
    broker: String,
    running_info: ConsumerRunningInfo,
}

/// `admin consumer status`: GET_CONSUMER_RUNNING_INFO relayed to every live client of the group
/// (or to `--client-id` alone), asked at a master each client is connected to.
pub async fn consumer_status(
    api: &MqClientApi,
    namesrv: &str,
    group: &str,
    client_id: Option<&str>,
    cluster: &str,
    json: bool,
) -> anyhow::Result<()> {
    // Each client, with a master it is connected to.
    let mut clients: BTreeMap<String, String> = BTreeMap::new();
    let masters = super::cluster_masters(api, namesrv, cluster).await?;
    for broker in &masters {
        match api.consumer_connections(broker, group).await {
            Ok(c) => {
                for conn in c.connection_set {
                    clients
                        .entry(conn.client_id)
                        .or_insert_with(|| broker.clone());
                }
            }
            Err(ApiError::Refused(r)) if r.code == response_code::CONSUMER_NOT_ONLINE => {}
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("the consumer connections of {group} on {broker}")))
            }
        }
    }
    if clients.is_empty() {
        bail!(
            "the consumer group {group} is not online: no client of it is connected to {}",
            masters.join(", ")
        );
    }
    if let Some(wanted) = client_id {
        clients.retain(|id, _| id == wanted);
        if clients.is_empty() {
            bail!("no client {wanted} of the consumer group {group} is connected; `rocketraft admin consumer connections --group {group}` lists them");
        }
    }
    let mut statuses = Vec::new();
    for (client_id, broker) in clients {
        let running_info = api
            .consumer_running_info(&broker, group, &client_id, false)
            .await
            .with_context(|| format!("the running info of {client_id} (asked at {broker})"))?;
        statuses.push(ClientStatus {
            client_id,
            broker,
            running_info,
        });
    }
    super::print_as(json, &statuses, |statuses| {
        for s in statuses {
            print_status(s);
        }
    })
}

fn print_status(s: &ClientStatus) {
    let info = &s.running_info;
    println!("client {} (via {})", s.client_id, s.broker);
    for key in [
        "PROP_CONSUME_TYPE",
        "PROP_CLIENT_VERSION",
        "PROP_CONSUMER_START_TIMESTAMP",
        "PROP_THREADPOOL_CORE_SIZE",
    ] {
        if let Some(v) = info.properties.get(key) {
            println!("  {key}: {v}");
        }
    }
    for sub in &info.subscription_set {
        println!("  subscribes {} {}", sub.topic, sub.sub_string);
    }
    if !info.mq_table.is_empty() {
        println!(
            "  {:<30} {:<16} {:>5} {:>14} {:>8} {:>7}",
            "topic", "broker", "queue", "commitOffset", "cached", "locked"
        );
        for (mq, q) in &info.mq_table {
            println!(
                "  {:<30} {:<16} {:>5} {:>14} {:>8} {:>7}",
                mq.topic,
                mq.broker_name,
                mq.queue_id,
                q.commit_offset,
                q.cached_msg_count,
                q.locked
            );
        }
    }
    for (mq, q) in &info.mq_pop_table {
        println!(
            "  pop {} {} {}: {} waiting for an ack",
            mq.topic, mq.broker_name, mq.queue_id, q.wait_ack_count
        );
    }
    for (topic, st) in &info.status_table {
        println!(
            "  {topic}: pull {:.2}/s, consumed OK {:.2}/s, failed {:.2}/s, consume RT {:.1} ms",
            st.pull_tps, st.consume_ok_tps, st.consume_failed_tps, st.consume_rt
        );
    }
}
