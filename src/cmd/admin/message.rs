//! `rocketraft admin message query|get|trace`: finding messages by key, by id and their trace.
//!
//! - `query --topic T --key K`: QUERY_MESSAGE on one broker of every broker set serving the topic
//!   (its master, else any replica), as `MQAdminImpl.queryMessage` does; only messages whose
//!   topic is T and whose `KEYS` hold K are shown (the broker checks it too).
//! - `get --id ID [--topic T]`: an offset message id (the `msgId` of a SEND reply: the store
//!   host's address and the CommitLog offset, hex) is asked of that broker with
//!   VIEW_MESSAGE_BY_ID; a unique id (`UNIQ_KEY`, what producers print) is looked up with
//!   QUERY_MESSAGE and `_UNIQUE_KEY_QUERY=true` on every broker of `--topic`. Both are 32 hex
//!   characters for IPv4, so an id that decodes to the address of a live broker is tried as an
//!   offset id first, then as a unique id.
//! - `trace --id ID`: the trace of a message: QUERY_MESSAGE on the trace topic
//!   (`RMQ_SYS_TRACE_TOPIC`) by the message id (a trace message's `KEYS` are the ids and keys
//!   it traces), the bodies decoded from RocketMQ's `TraceDataEncoder` format
//!   ([`rocketraft_common::trace`]), the records of that id shown in time order.

use std::collections::BTreeSet;

use anyhow::{bail, Context};
use clap::Subcommand;
use rocketraft_common::consts::property;
use rocketraft_common::message::{decode_offset_msg_id, MessageExt};
use rocketraft_common::time::now_ms;
use rocketraft_common::trace::{self, TraceRecord};
use rocketraft_remoting::api::MqClientApi;

/// How far back a lookup by id looks by default (RocketMQ's `queryMessageByUniqKey`: 3 days).
const ID_LOOKBACK_MS: i64 = 3 * 24 * 3600 * 1000;

#[derive(Subcommand)]
pub enum MessageLookup {
    /// Messages of a topic by key (one of their `KEYS`), on every broker of the topic.
    Query {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        key: String,
        /// At most this many messages per broker (brokers cap it at maxMsgsNumBatch, 64).
        #[arg(long, default_value_t = 32)]
        max: i32,
        /// Stored at or after this time (ms since the epoch); default: 0.
        #[arg(long)]
        begin: Option<i64>,
        /// Stored at or before this time (ms since the epoch); default: now and later.
        #[arg(long)]
        end: Option<i64>,
        /// Print the messages as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One message by its id: an offset message id, or the unique id a producer printed (needs
    /// --topic).
    Get {
        #[arg(long)]
        id: String,
        /// The message's topic (required for a unique id; checked by brokers with ACLs).
        #[arg(long)]
        topic: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The trace of a message (what producers and consumers with trace on recorded, and what the
    /// proxy recorded for traced clients): give the message's unique id.
    Trace {
        #[arg(long)]
        id: String,
        /// The trace topic the clients write to.
        #[arg(long, default_value = rocketraft_common::trace::TRACE_TOPIC)]
        trace_topic: String,
        #[arg(long)]
        json: bool,
    },
}

/// A broker of each broker set serving `topic`: (broker name, address), master first.
pub(crate) async fn topic_brokers(
    api: &MqClientApi,
    namesrv: &str,
    topic: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let route = api
        .topic_route(namesrv, topic)
        .await
        .with_context(|| format!("no route for topic {topic} from the NameServer at {namesrv}"))?;
    let brokers: Vec<(String, String)> = route
        .broker_datas
        .iter()
        .filter_map(|b| {
            b.master_addr()
                .or_else(|| b.broker_addrs.values().next().map(String::as_str))
                .map(|a| (b.broker_name.clone(), a.to_string()))
        })
        .collect();
    if brokers.is_empty() {
        bail!("topic {topic} has no live broker");
    }
    Ok(brokers)
}

/// QUERY_MESSAGE on every broker of `topic`; (broker name, message) for the messages that
/// match (`KEYS` hold `key`, or with `unique` the `UNIQ_KEY` is `key`).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn query_all(
    api: &MqClientApi,
    namesrv: &str,
    topic: &str,
    key: &str,
    max: i32,
    begin: i64,
    end: i64,
    unique: bool,
) -> anyhow::Result<Vec<(String, MessageExt)>> {
    let mut out = Vec::new();
    let mut failures = Vec::new();
    let brokers = topic_brokers(api, namesrv, topic).await?;
    for (name, addr) in &brokers {
        match api
            .query_message(addr, topic, key, max, begin, end, unique)
            .await
        {
            Ok(messages) => out.extend(
                messages
                    .into_iter()
                    .filter(|m| m.message.topic == topic && matches_key(m, key, unique))
                    .map(|m| (name.clone(), m)),
            ),
            Err(e) => failures.push(format!("{name} ({addr}): {e}")),
        }
    }
    if out.is_empty() && !failures.is_empty() {
        bail!("QUERY_MESSAGE failed: {}", failures.join("; "));
    }
    for f in failures {
        eprintln!("warning: QUERY_MESSAGE failed on {f}");
    }
    Ok(out)
}

fn matches_key(m: &MessageExt, key: &str, unique: bool) -> bool {
    if unique {
        return m.message.uniq_key() == Some(key);
    }
    m.message
        .keys()
        .is_some_and(|keys| keys.split(' ').any(|k| k == key))
}

pub async fn run(api: &MqClientApi, namesrv: &str, command: MessageLookup) -> anyhow::Result<()> {
    match command {
        MessageLookup::Query {
            topic,
            key,
            max,
            begin,
            end,
            json,
        } => {
            if max <= 0 {
                bail!("--max must be positive");
            }
            let (begin, end) = (begin.unwrap_or(0), end.unwrap_or(i64::MAX));
            if end < begin {
                bail!("--end {end} is before --begin {begin}");
            }
            let found = query_all(api, namesrv, &topic, &key, max, begin, end, false).await?;
            print_messages(&found, json)?;
            if !json {
                println!("{} message(s) with key {key} in {topic}", found.len());
            }
            Ok(())
        }
        MessageLookup::Get { id, topic, json } => {
            let found = get(api, namesrv, &id, topic.as_deref()).await?;
            print_messages(&found, json)
        }
        MessageLookup::Trace {
            id,
            trace_topic,
            json,
        } => trace(api, namesrv, id.trim(), &trace_topic, json).await,
    }
}

/// `message trace`: the records of `id` in the trace topic, oldest first.
async fn trace(
    api: &MqClientApi,
    namesrv: &str,
    id: &str,
    trace_topic: &str,
    json: bool,
) -> anyhow::Result<()> {
    if id.is_empty() {
        bail!("--id is empty");
    }
    let found = query_all(api, namesrv, trace_topic, id, 64, 0, i64::MAX, false).await?;
    let mut records: Vec<(String, TraceRecord)> = Vec::new();
    for (broker, m) in &found {
        let body = String::from_utf8_lossy(&m.message.body);
        for r in trace::decode(&body) {
            if r.get("msgId") == Some(id) && !records.iter().any(|(_, seen)| *seen == r) {
                records.push((broker.clone(), r));
            }
        }
    }
    let time = |r: &TraceRecord| {
        r.get("timestamp")
            .and_then(|t| t.parse::<i64>().ok())
            .unwrap_or(i64::MAX)
    };
    records.sort_by_key(|(_, r)| time(r));
    if json {
        let list: Vec<serde_json::Value> = records
            .iter()
            .map(|(broker, r)| {
                let mut fields = serde_json::Map::new();
                fields.insert("traceType".into(), r.trace_type.clone().into());
                fields.insert("broker".into(), broker.clone().into());
                for (k, v) in &r.fields {
                    fields.insert((*k).to_string(), v.clone().into());
                }
                serde_json::Value::Object(fields)
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if records.is_empty() {
        bail!(
            "no trace of {id} in {trace_topic} (were the clients' traces on? give the unique id the producer printed)"
        );
    }
    for (_, r) in &records {
        let mut line = format!("{:<15}", r.trace_type);
        for (k, v) in &r.fields {
            let v = if *k == "msgType" {
                v.parse::<usize>()
                    .ok()
                    .and_then(|i| trace::MESSAGE_TYPES.get(i))
                    .map_or_else(|| v.clone(), |t| t.to_string())
            } else {
                v.clone()
            };
            line.push_str(&format!(" {k}={v}"));
        }
        println!("{line}");
    }
    println!("{} trace record(s) of {id}", records.len());
    Ok(())
}

/// The message(s) of an id: by offset (VIEW_MESSAGE_BY_ID on the broker the id names), else by
/// unique id on every broker of `topic`.
async fn get(
    api: &MqClientApi,
    namesrv: &str,
    id: &str,
    topic: Option<&str>,
) -> anyhow::Result<Vec<(String, MessageExt)>> {
    let id = id.trim();
    if id.is_empty() {
        bail!("--id is empty");
    }
    let mut tried = Vec::new();
    if let Ok((addr, offset)) = decode_offset_msg_id(id) {
        let addr = addr.to_string();
        let known = known_brokers(api, namesrv).await;
        // An id naming no live broker is most likely a unique id: only try it when there is
        // nothing else to try.
        if known.contains(&addr) || topic.is_none() {
            match api.view_message(&addr, offset, topic).await {
                Ok(m) if topic.is_none_or(|t| t == m.message.topic) => {
                    return Ok(vec![(addr, m)]);
                }
                Ok(m) => tried.push(format!(
                    "the message at offset {offset} on {addr} is in topic {}, not {}",
                    m.message.topic,
                    topic.unwrap_or_default()
                )),
                Err(e) => tried.push(format!(
                    "as an offset id: VIEW_MESSAGE_BY_ID offset {offset} on {addr}: {e}"
                )),
            }
        }
    }
    let Some(topic) = topic else {
        bail!(
            "no message found for id {id} ({}); a unique id (what a producer prints) needs --topic",
            if tried.is_empty() {
                "it is not an offset message id".to_string()
            } else {
                tried.join("; ")
            }
        );
    };
    let found = query_all(
        api,
        namesrv,
        topic,
        id,
        32,
        now_ms() - ID_LOOKBACK_MS,
        i64::MAX,
        true,
    )
    .await?;
    if found.is_empty() {
        tried.push(format!(
            "as a unique id: no message of {topic} stored in the last 3 days has it"
        ));
        bail!("no message found for id {id}: {}", tried.join("; "));
    }
    Ok(found)
}

/// The addresses of every broker the NameServer knows (empty if it cannot be asked).
async fn known_brokers(api: &MqClientApi, namesrv: &str) -> BTreeSet<String> {
    match api.cluster_info(namesrv).await {
        Ok(info) => info
            .broker_addr_table
            .values()
            .flat_map(|b| b.broker_addrs.values().cloned())
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

fn print_messages(found: &[(String, MessageExt)], json: bool) -> anyhow::Result<()> {
    if json {
        let list: Vec<serde_json::Value> = found.iter().map(|(b, m)| to_json(b, m)).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    for (broker, m) in found {
        let body = String::from_utf8_lossy(&m.message.body);
        let preview: String = body.chars().take(120).collect();
        println!("broker:      {broker}");
        println!("topic:       {}", m.message.topic);
        println!("unique id:   {}", m.message.uniq_key().unwrap_or("-"));
        println!("offset id:   {}", m.msg_id);
        println!("queue:       {} offset {}", m.queue_id, m.queue_offset);
        println!("commit log:  {}", m.commit_log_offset);
        println!("keys:        {}", m.message.keys().unwrap_or("-"));
        println!("tags:        {}", m.message.tags().unwrap_or("-"));
        println!("born:        {} at {}", m.born_host, m.born_timestamp);
        println!("stored:      {} at {}", m.store_host, m.store_timestamp);
        println!("reconsumed:  {}", m.reconsume_times);
        let props: Vec<String> = m
            .message
            .properties
            .iter()
            .filter(|(k, _)| {
                ![
                    property::KEYS,
                    property::TAGS,
                    property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX,
                ]
                .contains(&k.as_str())
            })
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("properties:  {}", props.join(" "));
        println!("body:        {} bytes {preview:?}", m.message.body.len());
        println!();
    }
    Ok(())
}

fn to_json(broker: &str, m: &MessageExt) -> serde_json::Value {
    serde_json::json!({
        "broker": broker,
        "topic": m.message.topic,
        "uniqueId": m.message.uniq_key(),
        "offsetMsgId": m.msg_id,
        "queueId": m.queue_id,
        "queueOffset": m.queue_offset,
        "commitLogOffset": m.commit_log_offset,
        "keys": m.message.keys(),
        "tags": m.message.tags(),
        "bornHost": m.born_host.to_string(),
        "bornTimestamp": m.born_timestamp,
        "storeHost": m.store_host.to_string(),
        "storeTimestamp": m.store_timestamp,
        "reconsumeTimes": m.reconsume_times,
        "properties": m.message.properties,
        "body": String::from_utf8_lossy(&m.message.body),
    })
}
