//! `rocketraft admin consumer progress --group G` and `rocketraft admin message dlq --group G`:
//! a consumer group's position on every master, and what its dead-letter queue holds.

use anyhow::Context;
use clap::Subcommand;
use rocketraft_common::consts::{property, pull_sys_flag, DLQ_GROUP_TOPIC_PREFIX};
use rocketraft_remoting::api::{MqClientApi, PullRequest, PullStatus};
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::RemotingCommand;

#[derive(Subcommand)]
pub enum ConsumerCommand {
    /// Per queue: the broker's offset, the group's offset, the lag and POP messages in flight.
    Progress {
        #[arg(long)]
        group: String,
        /// Only this topic.
        #[arg(long)]
        topic: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Create (or update) a consumer group on every master: its retries before the DLQ and
    /// whether it consumes FIFO (RocketMQ 5 clients learn it from the proxy's settings).
    CreateGroup {
        group: String,
        /// Deliveries after the first before a message goes to %DLQ%GROUP.
        #[arg(long, default_value_t = 16)]
        retry_max_times: i32,
        /// Consume in order: one message group's messages one at a time.
        #[arg(long)]
        fifo: bool,
    },
}

#[derive(Subcommand)]
pub enum MessageCommand {
    /// The messages of a group's dead-letter queue (%DLQ%GROUP) on every master.
    Dlq {
        #[arg(long)]
        group: String,
        /// At most this many messages per broker.
        #[arg(long, default_value_t = 32)]
        max: i32,
    },
    /// Lookups by key and by id (`query`, `get`).
    #[command(flatten)]
    Lookup(super::message::MessageLookup),
}

/// The master address of every broker set the NameServer knows.
async fn masters(api: &MqClientApi, namesrv: &str) -> anyhow::Result<Vec<(String, String)>> {
    let info = api
        .cluster_info(namesrv)
        .await
        .map_err(super::namesrv_error(namesrv))?;
    let out: Vec<(String, String)> = info
        .broker_addr_table
        .iter()
        .filter_map(|(name, b)| b.master_addr().map(|a| (name.clone(), a.to_string())))
        .collect();
    if out.is_empty() {
        anyhow::bail!("the NameServer at {namesrv} knows no live master");
    }
    Ok(out)
}

pub async fn run_consumer(
    api: &MqClientApi,
    namesrv: &str,
    command: ConsumerCommand,
) -> anyhow::Result<()> {
    let (group, topic, json) = match command {
        ConsumerCommand::Progress { group, topic, json } => (group, topic, json),
        ConsumerCommand::CreateGroup {
            group,
            retry_max_times,
            fifo,
        } => return create_group(api, namesrv, &group, retry_max_times, fifo).await,
    };
    let mut rows = Vec::new();
    for (name, addr) in masters(api, namesrv).await? {
        let mut request = RemotingCommand::request(request_code::GET_CONSUME_STATS)
            .with_ext("consumerGroup", &group);
        if let Some(t) = &topic {
            request = request.with_ext("topic", t);
        }
        let r = api
            .call(&addr, request, &[response_code::SUCCESS])
            .await
            .with_context(|| format!("GET_CONSUME_STATS on {name} ({addr})"))?;
        let body: serde_json::Value =
            serde_json::from_slice(&r.body).context("undecodable consume stats")?;
        if let Some(table) = body["offsetTable"].as_array() {
            rows.extend(table.iter().cloned());
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("group {group} has no committed offset and nothing in flight");
        return Ok(());
    }
    println!(
        "{:<32} {:<12} {:>5} {:>14} {:>14} {:>10} {:>9}",
        "topic", "broker", "queue", "broker offset", "consumer off", "lag", "in flight"
    );
    let mut total = 0;
    for r in &rows {
        total += r["lag"].as_i64().unwrap_or(0);
        println!(
            "{:<32} {:<12} {:>5} {:>14} {:>14} {:>10} {:>9}",
            r["topic"].as_str().unwrap_or("?"),
            r["brokerName"].as_str().unwrap_or("?"),
            r["queueId"],
            r["brokerOffset"],
            r["consumerOffset"],
            r["lag"],
            r["inFlight"]
        );
    }
    println!("total lag: {total}");
    Ok(())
}

/// UPDATE_AND_CREATE_SUBSCRIPTIONGROUP on every master.
async fn create_group(
    api: &MqClientApi,
    namesrv: &str,
    group: &str,
    retry_max_times: i32,
    fifo: bool,
) -> anyhow::Result<()> {
    if !(0..=10_000).contains(&retry_max_times) {
        anyhow::bail!("--retry-max-times must be between 0 and 10000");
    }
    rocketraft_common::topic::validate_topic_name(group)
        .map_err(|e| anyhow::anyhow!("group {group:?}: {e}"))?;
    let body = serde_json::json!({
        "groupName": group,
        "consumeEnable": true,
        "consumeMessageOrderly": fifo,
        "retryMaxTimes": retry_max_times,
    });
    for (name, addr) in masters(api, namesrv).await? {
        let request = RemotingCommand::request(request_code::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
            .with_body(serde_json::to_vec(&body)?);
        api.call(&addr, request, &[response_code::SUCCESS])
            .await
            .with_context(|| format!("creating group {group} on {name} ({addr})"))?;
        println!("group {group} on {name}: retry max times {retry_max_times}, fifo {fifo}");
    }
    Ok(())
}

pub async fn run_message(
    api: &MqClientApi,
    namesrv: &str,
    command: MessageCommand,
) -> anyhow::Result<()> {
    let (group, max) = match command {
        MessageCommand::Dlq { group, max } => (group, max),
        MessageCommand::Lookup(lookup) => return super::message::run(api, namesrv, lookup).await,
    };
    let topic = format!("{DLQ_GROUP_TOPIC_PREFIX}{group}");
    let mut total = 0;
    for (name, addr) in masters(api, namesrv).await? {
        let mut offset = api.min_offset(&addr, &topic, 0).await.unwrap_or(0);
        let mut shown = 0;
        while shown < max {
            let r = api
                .pull(
                    &addr,
                    &PullRequest {
                        consumer_group: format!("rocketraft-admin-{group}"),
                        topic: topic.clone(),
                        queue_id: 0,
                        queue_offset: offset,
                        max_msg_nums: (max - shown).min(32),
                        sys_flag: pull_sys_flag::SUBSCRIPTION,
                        commit_offset: 0,
                        suspend_timeout_ms: 0,
                        subscription: Some("*".into()),
                    },
                )
                .await;
            let Ok(r) = r else { break };
            if r.status != PullStatus::Found {
                break;
            }
            for m in &r.messages {
                let body = String::from_utf8_lossy(&m.message.body);
                let preview: String = body.chars().take(60).collect();
                println!(
                    "{name} offset {} id {} origin {} topic {} reconsumed {} keys {} stored {} body {:?}",
                    m.queue_offset,
                    m.message.uniq_key().unwrap_or(&m.msg_id),
                    m.message.property(property::ORIGIN_MESSAGE_ID).unwrap_or("-"),
                    m.message.property(property::RETRY_TOPIC).unwrap_or("-"),
                    m.reconsume_times,
                    m.message.keys().unwrap_or("-"),
                    m.store_timestamp,
                    preview
                );
                shown += 1;
            }
            offset = r.next_begin_offset;
        }
        total += shown;
    }
    println!("{total} message(s) in {topic}");
    Ok(())
}
