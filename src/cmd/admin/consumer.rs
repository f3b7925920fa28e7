//! `rocketraft admin consumer progress --group G` and `rocketraft admin message dlq --group G`:
//! a consumer group's position on every master, and what its dead-letter queue holds (and
//! `--resend`: sending DLQ messages to the group again, the code path the console's DLQ page
//! shares: [`read_dlq`], [`resend_dlq`]); `rocketraft admin consumer reset` moves a group's
//! offsets (live consumers follow at once).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use clap::Subcommand;
use rocketraft_common::consts::{
    property, pull_sys_flag, sys_flag, DLQ_GROUP_TOPIC_PREFIX, RETRY_GROUP_TOPIC_PREFIX,
};
use rocketraft_common::message::MessageExt;
use rocketraft_remoting::api::{ApiError, MqClientApi, PullRequest, PullStatus, SendRequest};
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::RemotingCommand;

#[derive(Subcommand)]
pub enum ConsumerCommand {
    /// The connections of a consumer group's clients and the group's subscriptions (mqadmin
    /// consumerConnection).
    Connections(super::clients::ConnectionsArgs),
    /// What each live client of a group says about itself: its queues and their commit
    /// offsets, cached and locked messages, POP messages waiting for an ack, rates (mqadmin
    /// consumerStatus; GET_CONSUMER_RUNNING_INFO relayed by a broker).
    Status {
        #[arg(long)]
        group: String,
        /// Only this client (a client id from `consumer connections`).
        #[arg(long)]
        client_id: Option<String>,
        #[arg(long, default_value = rocketraft_common::consts::DEFAULT_CLUSTER)]
        cluster: String,
        #[arg(long)]
        json: bool,
    },
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
    /// Create (or update) a consumer group on every master: its retries before the DLQ,
    /// whether it consumes FIFO (RocketMQ 5 clients learn it from the proxy's settings) and
    /// whether its lite topics are exclusive to one client.
    CreateGroup {
        group: String,
        /// Deliveries after the first before a message goes to %DLQ%GROUP.
        #[arg(long, default_value_t = 16)]
        retry_max_times: i32,
        /// Consume in order: one message group's messages one at a time.
        #[arg(long)]
        fifo: bool,
        /// Lite topics exclusive to one client (`liteSubExclusive`): a client subscribing a
        /// lite topic takes it from the other clients of the group, which are told to drop it.
        #[arg(long)]
        lite_sub_exclusive: bool,
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
    /// The messages of a group's dead-letter queue (%DLQ%GROUP) on every master; with
    /// --resend or --resend-all, send messages of it again to the group alone: to its retry
    /// topic %RETRY%GROUP, with their body, keys, tags and properties, the original topic in
    /// RETRY_TOPIC (push consumers restore it) and a fresh reconsume count. The DLQ keeps them.
    Dlq {
        #[arg(long)]
        group: String,
        /// At most this many messages per broker (listing only).
        #[arg(long, default_value_t = 32)]
        max: i32,
        /// Resend these messages (ids as listed, or their offset ids; comma-separated). An id
        /// that several copies in the DLQ share resends the newest copy.
        #[arg(long, value_delimiter = ',', conflicts_with = "resend_all")]
        resend: Vec<String>,
        /// Resend every message in the DLQ.
        #[arg(long)]
        resend_all: bool,
        /// Where resent messages go: the group's retry topic for push and pull consumers
        /// (`push`, %RETRY%GROUP), its POP retry topic of the message's original topic (`pop`,
        /// %RETRY%GROUP_TOPIC: RocketMQ 5 gRPC clients and other POP consumers), or `auto`: pop
        /// when the group has POP-consumed that topic on the broker set (its POP retry topic
        /// exists there), push otherwise.
        #[arg(long, value_enum, default_value_t = ResendTo::Auto)]
        to: ResendTo,
    },
    /// Lookups by key and by id (`query`, `get`).
    #[command(flatten)]
    Lookup(super::message::MessageLookup),
}

/// The (name, master address) of every broker set the NameServer knows.
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
        ConsumerCommand::Connections(args) => {
            return super::clients::consumer_connections(api, namesrv, args).await
        }
        ConsumerCommand::Status {
            group,
            client_id,
            cluster,
            json,
        } => {
            return super::group::consumer_status(
                api,
                namesrv,
                &group,
                client_id.as_deref(),
                &cluster,
                json,
            )
            .await
        }
        ConsumerCommand::Progress { group, topic, json } => (group, topic, json),
        ConsumerCommand::CreateGroup {
            group,
            retry_max_times,
            fifo,
            lite_sub_exclusive,
        } => {
            return create_group(
                api,
                namesrv,
                &group,
                retry_max_times,
                fifo,
                lite_sub_exclusive,
            )
            .await
        }
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
    lite_sub_exclusive: bool,
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
        "liteSubExclusive": lite_sub_exclusive,
    });
    for (name, addr) in masters(api, namesrv).await? {
        let request = RemotingCommand::request(request_code::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
            .with_body(serde_json::to_vec(&body)?);
        api.call(&addr, request, &[response_code::SUCCESS])
            .await
            .with_context(|| format!("creating group {group} on {name} ({addr})"))?;
        println!(
            "group {group} on {name}: retry max times {retry_max_times}, fifo {fifo}, lite sub exclusive {lite_sub_exclusive}"
        );
    }
    Ok(())
}

pub async fn run_message(
    api: &MqClientApi,
    namesrv: &str,
    command: MessageCommand,
) -> anyhow::Result<()> {
    let (group, max, resend, resend_all, to) = match command {
        MessageCommand::Dlq {
            group,
            max,
            resend,
            resend_all,
            to,
        } => (group, max, resend, resend_all, to),
        MessageCommand::Lookup(lookup) => return super::message::run(api, namesrv, lookup).await,
    };
    rocketraft_common::topic::validate_topic_name(&group)
        .map_err(|e| anyhow::anyhow!("group {group:?}: {e}"))?;
    let masters = masters(api, namesrv).await?;
    if resend_all || !resend.is_empty() {
        let pick = if resend_all {
            Pick::All
        } else {
            Pick::Ids(resend.iter().map(|id| id.trim().to_string()).collect())
        };
        let resent = resend_dlq(api, &masters, &group, &pick, to).await?;
        for r in &resent {
            println!("{r}");
        }
        let topics: std::collections::BTreeSet<&str> =
            resent.iter().map(|r| r.retry_topic.as_str()).collect();
        let topics: Vec<&str> = topics.into_iter().collect();
        println!(
            "{} message(s) resent to {}",
            resent.len(),
            if topics.is_empty() {
                format!("{RETRY_GROUP_TOPIC_PREFIX}{group}")
            } else {
                topics.join(", ")
            }
        );
        return Ok(());
    }
    let read = read_dlq(api, &masters, &group, Some(max.max(0) as usize)).await;
    if let Some(problem) = read.problems.first() {
        anyhow::bail!("{problem}");
    }
    for m in &read.messages {
        let preview: String = m.body_text().chars().take(60).collect();
        let e = &m.message;
        println!(
            "{} offset {} id {} origin {} topic {} reconsumed {} keys {} stored {} body {:?}",
            m.broker,
            e.queue_offset,
            m.id(),
            e.message
                .property(property::ORIGIN_MESSAGE_ID)
                .unwrap_or("-"),
            m.origin_topic().unwrap_or("-"),
            e.reconsume_times,
            e.message.keys().unwrap_or("-"),
            e.store_timestamp,
            preview
        );
    }
    println!(
        "{} message(s) in {DLQ_GROUP_TOPIC_PREFIX}{group}{}",
        read.messages.len(),
        if read.more {
            format!(" shown (at most {max} per broker set; there are more)")
        } else {
            String::new()
        }
    );
    Ok(())
}

/// One message of a group's dead-letter queue, as read from the master of broker set `broker`.
#[derive(Debug, Clone)]
pub(crate) struct DlqMessage {
    pub broker: String,
    pub addr: String,
    pub message: MessageExt,
}

impl DlqMessage {
    /// The id listed and accepted: the producer's message id (UNIQ_KEY), or the offset id.
    pub fn id(&self) -> &str {
        self.message
            .message
            .uniq_key()
            .unwrap_or(&self.message.msg_id)
    }

    /// This stored copy's own id (store host and CommitLog offset).
    pub fn offset_id(&self) -> &str {
        &self.message.msg_id
    }

    /// The topic the message was first sent to (RETRY_TOPIC, which the broker sets when it
    /// moves a message to the DLQ).
    pub fn origin_topic(&self) -> Option<&str> {
        self.message.message.property(property::RETRY_TOPIC)
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn body_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.message.message.body)
    }

    fn named_by(&self, id: &str) -> bool {
        id == self.id() || id == self.offset_id()
    }
}

/// What [`read_dlq`] found.
#[derive(Debug, Default)]
pub(crate) struct DlqRead {
    /// By broker set, then queue offset.
    pub messages: Vec<DlqMessage>,
    /// Brokers whose DLQ could not be read (one line each).
    pub problems: Vec<String>,
    /// Whether a broker holds more than the `max` asked for.
    pub more: bool,
}

/// Whether an API error is the broker saying the topic does not exist (no DLQ yet).
fn no_such_topic(e: &ApiError) -> bool {
    e.code() == Some(response_code::TOPIC_NOT_EXIST)
}

/// The messages of `%DLQ%group` (one queue) on every master of `masters` (name, address),
/// pulled from each queue's first offset: at most `max` per broker, or all of them.
pub(crate) async fn read_dlq(
    api: &MqClientApi,
    masters: &[(String, String)],
    group: &str,
    max: Option<usize>,
) -> DlqRead {
    let topic = format!("{DLQ_GROUP_TOPIC_PREFIX}{group}");
    let mut out = DlqRead::default();
    for (name, addr) in masters {
        let mut offset = match api.min_offset(addr, &topic, 0).await {
            Ok(o) => o,
            Err(e) if no_such_topic(&e) => continue,
            Err(e) => {
                out.problems
                    .push(format!("reading {topic} on {name} ({addr}): {e}"));
                continue;
            }
        };
        let mut read = 0usize;
        loop {
            let want = max.map_or(32, |m| m.saturating_sub(read).min(32));
            if want == 0 {
                // Asked for no more: is there any?
                out.more |= api
                    .max_offset(addr, &topic, 0)
                    .await
                    .is_ok_and(|end| end > offset);
                break;
            }
            let pulled = api
                .pull(
                    addr,
                    &PullRequest {
                        consumer_group: format!("rocketraft-admin-{group}"),
                        topic: topic.clone(),
                        queue_id: 0,
                        queue_offset: offset,
                        max_msg_nums: want as i32,
                        sys_flag: pull_sys_flag::SUBSCRIPTION,
                        commit_offset: 0,
                        suspend_timeout_ms: 0,
                        subscription: Some("*".into()),
                    },
                )
                .await;
            let r = match pulled {
                Ok(r) => r,
                Err(e) if no_such_topic(&e) => break,
                Err(e) => {
                    out.problems.push(format!(
                        "reading {topic} on {name} ({addr}) at offset {offset}: {e}"
                    ));
                    break;
                }
            };
            if r.status != PullStatus::Found || r.messages.is_empty() {
                break;
            }
            read += r.messages.len();
            out.messages
                .extend(r.messages.into_iter().map(|message| DlqMessage {
                    broker: name.clone(),
                    addr: addr.clone(),
                    message,
                }));
            if r.next_begin_offset <= offset {
                break;
            }
            offset = r.next_begin_offset;
        }
    }
    out
}

/// Which DLQ messages to resend.
#[derive(Debug, Clone)]
pub(crate) enum Pick {
    All,
    /// Ids as [`DlqMessage::id`] lists them, or offset ids.
    Ids(Vec<String>),
}

/// One message sent again.
#[derive(Debug, Clone)]
pub(crate) struct Resent {
    pub id: String,
    pub broker: String,
    /// Its offset in the DLQ.
    pub dlq_offset: i64,
    pub origin_topic: Option<String>,
    pub retry_topic: String,
    pub queue_id: i32,
    pub queue_offset: i64,
    pub body: bytes::Bytes,
}

impl std::fmt::Display for Resent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "resent {} from {} (DLQ offset {}, original topic {}) to {} queue {} offset {}",
            self.id,
            self.broker,
            self.dlq_offset,
            self.origin_topic.as_deref().unwrap_or("-"),
            self.retry_topic,
            self.queue_id,
            self.queue_offset
        )
    }
}

/// Why a resend did not (wholly) happen.
#[derive(Debug)]
pub(crate) enum ResendError {
    /// Ids that name no message of the DLQ: nothing was sent.
    NotInDlq { ids: Vec<String>, dlq: String },
    /// The DLQ could not be read: nothing was sent.
    Read(Vec<String>),
    /// A send failed; `done` were sent before it.
    Send { done: Vec<Resent>, error: String },
}

impl std::fmt::Display for ResendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResendError::NotInDlq { ids, dlq } => write!(
                f,
                "message id {} is not in {dlq}; nothing was resent",
                ids.join(", ")
            ),
            ResendError::Read(problems) => write!(
                f,
                "cannot read the whole dead-letter queue, so nothing was resent: {}",
                problems.join("; ")
            ),
            ResendError::Send { done, error } => {
                write!(f, "{error}")?;
                if done.is_empty() {
                    write!(f, "; nothing was resent")
                } else {
                    let ids: Vec<&str> = done.iter().map(|r| r.id.as_str()).collect();
                    write!(f, "; resent before that: {}", ids.join(", "))
                }
            }
        }
    }
}

impl std::error::Error for ResendError {}

/// The messages `pick` names among `messages`, in DLQ order; an id naming several copies picks
/// the newest (the copy most recently moved to the DLQ). The ids that name none are the error.
fn choose<'a>(messages: &'a [DlqMessage], pick: &Pick) -> Result<Vec<&'a DlqMessage>, Vec<String>> {
    let ids = match pick {
        Pick::All => return Ok(messages.iter().collect()),
        Pick::Ids(ids) => ids,
    };
    let mut chosen = BTreeSet::new();
    let mut missing = Vec::new();
    for id in ids.iter().filter(|id| !id.is_empty()) {
        let newest = messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m.named_by(id))
            .max_by_key(|(_, m)| (m.message.store_timestamp, m.message.queue_offset));
        match newest {
            Some((index, _)) => {
                chosen.insert(index);
            }
            None if !missing.contains(id) => missing.push(id.clone()),
            None => {}
        }
    }
    if !missing.is_empty() {
        return Err(missing);
    }
    Ok(chosen.into_iter().map(|i| &messages[i]).collect())
}

/// Properties the broker or the delivery path set, dropped from a resent copy: delays and
/// timers (it would wait again), transaction and POP bookkeeping, CommitLog details.
const NOT_RESENT: &[&str] = &[
    property::DELAY_TIME_LEVEL,
    property::TIMER_DELIVER_MS,
    property::TIMER_DELAY_SEC,
    property::TIMER_DELAY_MS,
    "TIMER_OUT_MS",
    "TIMER_ROLLED_FROM",
    "TIMER_ROLL_TIMES",
    "TIMER_ENQUEUE_MS",
    "TIMER_DEQUEUE_MS",
    "TIMER_DEL_UNIQKEY",
    property::REAL_TOPIC,
    property::REAL_QUEUE_ID,
    property::TRANSACTION_PREPARED,
    "TRAN_PREPARED_QUEUE_OFFSET",
    "TRAN_PREPARED_COMMITLOG_OFFSET",
    "TRANSACTION_CHECK_TIMES",
    "CHECK_IMMUNITY_TIME_IN_SECONDS",
    property::PRODUCER_GROUP,
    property::MIN_OFFSET,
    property::MAX_OFFSET,
    property::RECONSUME_TIME,
    property::MAX_RECONSUME_TIMES,
    property::CONSUME_START_TIMESTAMP,
    property::POP_CK,
    property::FIRST_POP_TIME,
    property::CLUSTER,
    property::TRANSFER_FLAG,
    property::CORRECTION_FLAG,
    property::MQ2_FLAG,
    property::CRC32,
];

/// The producer group resent messages are sent as.
const RESEND_PRODUCER_GROUP: &str = "rocketraft-dlq-resend";

/// Where a resent dead letter goes (`admin message dlq --to`, the console's resend form).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ResendTo {
    /// `pop` when the group's POP retry topic of the message's original topic exists on the
    /// broker set holding the message (the group has POP-consumed it there), `push` otherwise.
    #[default]
    Auto,
    /// `%RETRY%GROUP`: the group's Remoting push and pull consumers.
    Push,
    /// `%RETRY%GROUP_TOPIC`: the group's POP consumers of TOPIC (RocketMQ 5 gRPC clients through
    /// the proxy); a message without an original topic goes to `%RETRY%GROUP`.
    Pop,
}

impl ResendTo {
    /// From the console's form value (`auto`, `push`, `pop`).
    pub fn parse(text: &str) -> Option<ResendTo> {
        <ResendTo as clap::ValueEnum>::from_str(text, true).ok()
    }
}

/// The retry topic DLQ message `m` of `group` is resent to, on the master at `addr`.
async fn resend_topic(
    api: &MqClientApi,
    addr: &str,
    m: &DlqMessage,
    group: &str,
    to: ResendTo,
) -> String {
    let push = format!("{RETRY_GROUP_TOPIC_PREFIX}{group}");
    let Some(origin) = m.origin_topic() else {
        return push;
    };
    let pop = format!("{RETRY_GROUP_TOPIC_PREFIX}{group}_{origin}");
    match to {
        ResendTo::Push => push,
        ResendTo::Pop => pop,
        ResendTo::Auto => {
            let request = RemotingCommand::request(request_code::GET_TOPIC_CONFIG)
                .with_ext("topic", pop.as_str());
            match api.call(addr, request, &[response_code::SUCCESS]).await {
                Ok(_) => pop,
                Err(_) => push,
            }
        }
    }
}

/// The send that puts DLQ message `m` into `retry_topic`: its body, flag, keys, tags and user
/// properties (and its message id), RETRY_TOPIC the original topic, reconsume count 0; delays,
/// timers and transaction state dropped.
fn resend_request(m: &MessageExt, retry_topic: &str) -> SendRequest {
    let mut properties: BTreeMap<String, String> = m
        .message
        .properties
        .iter()
        .filter(|(k, _)| !NOT_RESENT.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(origin) = m.message.property(property::RETRY_TOPIC) {
        properties.insert(property::RETRY_TOPIC.to_string(), origin.to_string());
    }
    let kept_flags = !(sys_flag::TRANSACTION_ROLLBACK_TYPE
        | sys_flag::BORNHOST_V6
        | sys_flag::STOREHOST_V6
        | sys_flag::NEED_UNWRAP
        | sys_flag::INNER_BATCH);
    SendRequest {
        producer_group: RESEND_PRODUCER_GROUP.to_string(),
        topic: retry_topic.to_string(),
        queue_id: -1,
        body: m.message.body.clone(),
        properties,
        flag: m.message.flag,
        sys_flag: m.sys_flag & kept_flags,
        reconsume_times: 0,
    }
}

/// Sends the DLQ messages `pick` names (see [`choose`]) again to the group's retry topic that
/// `to` picks, each through the master of the broker set whose DLQ holds it (the broker makes
/// the retry topic if the group has none yet). Reads the whole DLQ first; nothing is sent when
/// an id is not in it or a master's DLQ cannot be read. The DLQ keeps its messages.
pub(crate) async fn resend_dlq(
    api: &MqClientApi,
    masters: &[(String, String)],
    group: &str,
    pick: &Pick,
    to: ResendTo,
) -> Result<Vec<Resent>, ResendError> {
    let read = read_dlq(api, masters, group, None).await;
    if !read.problems.is_empty() {
        return Err(ResendError::Read(read.problems));
    }
    let chosen = choose(&read.messages, pick).map_err(|ids| ResendError::NotInDlq {
        ids,
        dlq: format!("{DLQ_GROUP_TOPIC_PREFIX}{group}"),
    })?;
    let mut done = Vec::new();
    for m in chosen {
        let topic = resend_topic(api, &m.addr, m, group, to).await;
        let request = resend_request(&m.message, &topic);
        match api.send(&m.addr, &request).await {
            Ok(sent) => done.push(Resent {
                id: m.id().to_string(),
                broker: m.broker.clone(),
                dlq_offset: m.message.queue_offset,
                origin_topic: m.origin_topic().map(str::to_string),
                retry_topic: request.topic.clone(),
                queue_id: sent.queue_id,
                queue_offset: sent.queue_offset,
                body: m.message.message.body.clone(),
            }),
            Err(e) => {
                return Err(ResendError::Send {
                    error: format!(
                        "resending {} to {} on {} ({}): {e}",
                        m.id(),
                        request.topic,
                        m.broker,
                        m.addr
                    ),
                    done,
                })
            }
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dlq_message(uniq: &str, offset: i64, stored: i64) -> DlqMessage {
        let mut message = rocketraft_common::message::Message::new("%DLQ%g", "body");
        message.set_property(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX, uniq);
        message.set_property(property::RETRY_TOPIC, "Orders");
        DlqMessage {
            broker: "broker-a".into(),
            addr: "127.0.0.1:10911".into(),
            message: MessageExt {
                message,
                queue_id: 0,
                store_size: 0,
                queue_offset: offset,
                sys_flag: 0,
                born_timestamp: 0,
                born_host: "127.0.0.1:1".parse().expect("addr"),
                store_timestamp: stored,
                store_host: "127.0.0.1:2".parse().expect("addr"),
                commit_log_offset: offset * 100,
                body_crc: 0,
                reconsume_times: 3,
                prepared_transaction_offset: 0,
                msg_id: format!("OFFSET-{offset}"),
            },
        }
    }

    #[test]
    fn ids_pick_the_newest_copy_and_unknown_ids_are_named() {
        let dlq = [
            dlq_message("A", 0, 10),
            dlq_message("B", 1, 11),
            dlq_message("A", 2, 12),
        ];
        let pick = |ids: &[&str]| Pick::Ids(ids.iter().map(|s| s.to_string()).collect());
        let offsets = |chosen: Vec<&DlqMessage>| -> Vec<i64> {
            chosen.iter().map(|m| m.message.queue_offset).collect()
        };
        assert_eq!(offsets(choose(&dlq, &pick(&["A"])).expect("A")), [2]);
        assert_eq!(
            offsets(choose(&dlq, &pick(&["OFFSET-0", "B", "B"])).expect("by offset id")),
            [0, 1]
        );
        assert_eq!(offsets(choose(&dlq, &Pick::All).expect("all")), [0, 1, 2]);
        assert_eq!(
            choose(&dlq, &pick(&["A", "nope", "gone"])).expect_err("unknown"),
            ["nope", "gone"]
        );
    }

    #[test]
    fn a_resent_copy_keeps_the_message_and_drops_the_bookkeeping() {
        let mut m = dlq_message("U1", 4, 0).message;
        m.message.set_property(property::KEYS, "k1 k2");
        m.message.set_property(property::TAGS, "TagA");
        m.message.set_property("color", "blue");
        m.message.set_property(property::ORIGIN_MESSAGE_ID, "O1");
        m.message.set_property(property::REAL_TOPIC, "Orders");
        m.message.set_property(property::DELAY_TIME_LEVEL, "3");
        m.message.set_property(property::TIMER_DELIVER_MS, "5");
        m.message.set_property(property::POP_CK, "ck");
        m.message.flag = 7;
        m.sys_flag =
            sys_flag::COMPRESSED | sys_flag::TRANSACTION_PREPARED_TYPE | sys_flag::BORNHOST_V6;
        let r = resend_request(&m, "%RETRY%g");
        assert_eq!(r.topic, "%RETRY%g");
        assert_eq!(r.reconsume_times, 0);
        assert_eq!(r.queue_id, -1);
        assert_eq!(r.flag, 7);
        assert_eq!(r.sys_flag, sys_flag::COMPRESSED);
        assert_eq!(&r.body[..], b"body");
        let kept: Vec<&str> = r.properties.keys().map(String::as_str).collect();
        assert_eq!(
            kept,
            [
                "KEYS",
                "ORIGIN_MESSAGE_ID",
                "RETRY_TOPIC",
                "TAGS",
                "UNIQ_KEY",
                "color"
            ]
        );
        assert_eq!(r.properties["RETRY_TOPIC"], "Orders");
    }
}
