//! `rocketraft admin consumer progress --group G` and `rocketraft admin message dlq --group G`:
//! a consumer group's position on every master, and what its dead-letter queue holds;
//! `rocketraft admin consumer reset` moves a group's offsets (live consumers follow at once).

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
    /// Move a group's offsets of a topic on every master serving it (mqadmin's
    /// resetOffsetByTime): to the first message stored at or after --timestamp, or to the
    /// queues' beginnings (--earliest) or ends (--latest). Live consumers are told at once and
    /// read again from there; offline ones start there.
    Reset {
        #[arg(long)]
        group: String,
        #[arg(long)]
        topic: String,
        /// Milliseconds since the epoch.
        #[arg(long, conflicts_with_all = ["earliest", "latest"], required_unless_present_any = ["earliest", "latest"])]
        timestamp: Option<i64>,
        #[arg(long, conflicts_with = "latest")]
        earliest: bool,
        #[arg(long)]
        latest: bool,
        #[arg(long)]
        json: bool,
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
        ConsumerCommand::Reset {
            group,
            topic,
            timestamp,
            earliest,
            latest,
            json,
        } => {
            let timestamp = match (timestamp, earliest, latest) {
                (Some(t), _, _) => t,
                (None, true, _) => 0,
                _ => -1,
            };
            return reset(api, namesrv, &group, &topic, timestamp, json).await;
        }
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

/// INVOKE_BROKER_TO_RESET_OFFSET (forced) on every master serving `topic`.
async fn reset(
    api: &MqClientApi,
    namesrv: &str,
    group: &str,
    topic: &str,
    timestamp: i64,
    json: bool,
) -> anyhow::Result<()> {
    let route = api
        .topic_route(namesrv, topic)
        .await
        .map_err(super::namesrv_error(namesrv))?;
    let masters: Vec<(String, String)> = route
        .broker_datas
        .iter()
        .filter_map(|b| {
            b.master_addr()
                .map(|a| (b.broker_name.clone(), a.to_string()))
        })
        .collect();
    if masters.is_empty() {
        anyhow::bail!("no live master serves topic {topic}");
    }
    let mut rows = Vec::new();
    for (name, addr) in masters {
        let request = RemotingCommand::request(request_code::INVOKE_BROKER_TO_RESET_OFFSET)
            .with_ext("topic", topic)
            .with_ext("group", group)
            .with_ext("timestamp", timestamp)
            .with_ext("isForce", true);
        let r = api
            .call(&addr, request, &[response_code::SUCCESS])
            .await
            .with_context(|| format!("INVOKE_BROKER_TO_RESET_OFFSET on {name} ({addr})"))?;
        let table = reset_table(&r.body)
            .with_context(|| format!("undecodable ResetOffsetBody from {name}"))?;
        rows.extend(table.into_iter().map(|(q, o)| (name.clone(), q, o)));
    }
    rows.sort();
    if json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|(b, q, o)| serde_json::json!({"brokerName": b, "queueId": q, "offset": o}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!("{:<12} {:>5} {:>14}", "broker", "queue", "offset");
    for (b, q, o) in &rows {
        println!("{b:<12} {q:>5} {o:>14}");
    }
    println!("group {group} reset on topic {topic}");
    Ok(())
}

/// The (queue, offset) pairs of a fastjson `ResetOffsetBody` (`{"offsetTable":{{...}:5}}`).
fn reset_table(body: &[u8]) -> anyhow::Result<Vec<(i32, i64)>> {
    let text = std::str::from_utf8(body)?;
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{\"brokerName\"") {
        let end = rest[start..]
            .find('}')
            .map(|e| start + e)
            .ok_or_else(|| anyhow::anyhow!("unterminated queue key"))?;
        let key: serde_json::Value = serde_json::from_str(&rest[start..=end])?;
        let after = rest[end + 1..]
            .strip_prefix(':')
            .ok_or_else(|| anyhow::anyhow!("a queue key without an offset"))?;
        let digits: String = after
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '-')
            .collect();
        out.push((
            key["queueId"].as_i64().unwrap_or(-1) as i32,
            digits.parse::<i64>()?,
        ));
        rest = &after[digits.len()..];
    }
    Ok(out)
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
