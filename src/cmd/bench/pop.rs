//! `rocketraft bench pop`: POP receive + ack throughput beside plain pull, in the same run, on a
//! running cluster (for example `rocketraft dev`).
//!
//! Fills a topic with `--count` messages of `--size` bytes, then drains it three times, each
//! with its own consumer group so each drain sees every message: (1) PULL by one consumer over
//! every queue (the baseline), then, for each ack mode of `--ack-mode` (both by default), (2)
//! POP + ack by one consumer and (3) POP + ack by `--consumers` concurrent consumers of one group
//! (message-granularity load balancing). `single` acks each message with its own ACK_MESSAGE;
//! `batch` acks each POP's messages with one BATCH_ACK_MESSAGE (a bitset per queue, as
//! RocketMQ's Remoting clients' `batchAckMessageAsync`), awaiting its answer before the next
//! POP; `async` sends the same BATCH_ACK_MESSAGE without waiting for it before the next POP
//! (as the Java clients ack: `batchAckMessageAsync`, or the 5.x clients acking after
//! consumption while the next receive runs), at most `--acks-in-flight` per consumer. Every
//! ack's answer is still awaited and checked: a drain ends only once every ack has answered
//! SUCCESS and the acked count is the popped count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use rocketraft_common::consts::{property, pull_sys_flag};
use rocketraft_common::message::MessageExt;
use rocketraft_remoting::api::{MqClientApi, PullRequest, PullStatus};
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::RemotingCommand;

use super::{api, run_load, timed_drain, writable_queues, Load, Target};

#[derive(Args)]
pub struct PopBenchArgs {
    /// NameServer address.
    #[arg(long, default_value = "127.0.0.1:9876")]
    namesrv: String,
    /// Topic (created with 8 queues when missing; a fresh name per run is best).
    #[arg(long, default_value = "BenchPop")]
    topic: String,
    /// Messages to fill the topic with.
    #[arg(long, default_value_t = 50_000)]
    count: u64,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Concurrent POP consumers in the last drain.
    #[arg(long, default_value_t = 8)]
    consumers: usize,
    /// Messages per POP / PULL request.
    #[arg(long, default_value_t = 32)]
    batch: i32,
    /// How POPped messages are acked: `single` (one ACK_MESSAGE each, awaited), `batch` (one
    /// BATCH_ACK_MESSAGE per POP, awaited before the next POP), `async` (one BATCH_ACK_MESSAGE
    /// per POP, not awaited before the next POP), `both` (single and batch) or `all` (the three),
    /// side by side against the same pull.
    #[arg(long, value_enum, default_value_t = AckModes::All)]
    ack_mode: AckModes,
    /// With `--ack-mode async`: most BATCH_ACK_MESSAGE requests a consumer has unanswered; at
    /// the bound its next POP waits for the oldest ack's answer.
    #[arg(long, default_value_t = DEFAULT_ACKS_IN_FLIGHT)]
    acks_in_flight: usize,
}

/// `--acks-in-flight`'s default.
pub(crate) const DEFAULT_ACKS_IN_FLIGHT: usize = 4;

/// `--ack-mode`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum AckModes {
    Single,
    Batch,
    Async,
    Both,
    All,
}

/// How a POP consumer acks what it popped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AckMode {
    /// One ACK_MESSAGE per message, one at a time.
    Single,
    /// One BATCH_ACK_MESSAGE per POP: a bitset per queue (and pop time) of the batch, its
    /// answer awaited before the next POP.
    Batch,
    /// One BATCH_ACK_MESSAGE per POP, sent without waiting for its answer before the next POP:
    /// at most this many unanswered per consumer. Every answer is still awaited and checked
    /// before the drain ends.
    AsyncBatch(usize),
}

impl AckMode {
    pub(crate) fn label(self) -> String {
        match self {
            AckMode::Single => "ack each".into(),
            AckMode::Batch => "batch ack".into(),
            AckMode::AsyncBatch(n) => format!("async batch ack ({n} in flight)"),
        }
    }
}

async fn drain_pull(
    queues: &[(String, i32)],
    topic: &str,
    batch: i32,
    group: &str,
) -> anyhow::Result<u64> {
    let api = api();
    let mut total = 0;
    for (broker, q) in queues {
        let mut offset = 0;
        loop {
            let r = api
                .pull(
                    broker,
                    &PullRequest {
                        consumer_group: group.to_string(),
                        topic: topic.to_string(),
                        queue_id: *q,
                        queue_offset: offset,
                        max_msg_nums: batch,
                        sys_flag: pull_sys_flag::SUBSCRIPTION,
                        commit_offset: 0,
                        suspend_timeout_ms: 0,
                        subscription: Some("*".into()),
                    },
                )
                .await?;
            if r.status != PullStatus::Found {
                break;
            }
            total += r.messages.len() as u64;
            offset = r.next_begin_offset;
        }
    }
    Ok(total)
}

/// POP + ACK (one ACK_MESSAGE per message) by `consumers` tasks of `group` until `expected`
/// messages were acked (or nothing came for a while); returns how many were acked.
pub(crate) async fn drain_pop(
    brokers: Vec<String>,
    topic: String,
    batch: i32,
    group: String,
    consumers: usize,
    expected: u64,
) -> anyhow::Result<u64> {
    drain_pop_acking(
        brokers,
        topic,
        batch,
        group,
        consumers,
        expected,
        AckMode::Single,
    )
    .await
}

/// The fields of a `POP_CK` receipt handle a BATCH_ACK_MESSAGE entry names: `ckQueueOffset
/// popTime invisibleTime reviveQid topicType brokerName queueId queueOffset`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct AckKey {
    queue_id: i32,
    pop_time: i64,
    invisible_ms: i64,
    revive_qid: i32,
    retry: bool,
}

fn ack_key(m: &MessageExt) -> anyhow::Result<AckKey> {
    let handle = m
        .message
        .property(property::POP_CK)
        .context("a popped message without a POP_CK receipt handle")?;
    let parts: Vec<&str> = handle.split(' ').collect();
    if parts.len() < 8 {
        anyhow::bail!(
            "receipt handle {handle:?}: {} fields, 8 expected",
            parts.len()
        );
    }
    let num = |i: usize| -> anyhow::Result<i64> {
        parts[i]
            .parse()
            .with_context(|| format!("receipt handle {handle:?}: field {i} is not a number"))
    };
    Ok(AckKey {
        queue_id: m.queue_id,
        pop_time: num(1)?,
        invisible_ms: num(2)?,
        revive_qid: num(3)? as i32,
        retry: parts[4] != "0",
    })
}

/// Acks `msgs` (popped together from `broker`) with one BATCH_ACK_MESSAGE: one entry per queue
/// and pop time, its offsets as a `java.util.BitSet.toByteArray()` from the lowest.
async fn batch_ack(
    api: &MqClientApi,
    broker: &str,
    group: &str,
    topic: &str,
    msgs: &[MessageExt],
) -> anyhow::Result<()> {
    let mut by_key: std::collections::BTreeMap<AckKey, Vec<i64>> = Default::default();
    for m in msgs {
        by_key.entry(ack_key(m)?).or_default().push(m.queue_offset);
    }
    let mut acks = Vec::with_capacity(by_key.len());
    for (k, offsets) in &by_key {
        let so = offsets
            .iter()
            .copied()
            .min()
            .context("an entry without offsets")?;
        let mut bits: Vec<u8> = Vec::new();
        for o in offsets {
            let i = usize::try_from(o - so).context("offset below the start")?;
            if bits.len() <= i / 8 {
                bits.resize(i / 8 + 1, 0);
            }
            bits[i / 8] |= 1 << (i % 8);
        }
        acks.push(serde_json::json!({
            "c": group,
            "t": topic,
            "r": if k.retry { "1" } else { "0" },
            "so": so,
            "q": k.queue_id,
            "rq": k.revive_qid,
            "pt": k.pop_time,
            "it": k.invisible_ms,
            "b": rocketraft_common::base64::encode_standard(&bits),
        }));
    }
    let body = serde_json::to_vec(&serde_json::json!({ "acks": acks }))
        .context("encoding a BATCH_ACK_MESSAGE body")?;
    api.call(
        broker,
        RemotingCommand::request(request_code::BATCH_ACK_MESSAGE).with_body(body),
        &[response_code::SUCCESS],
    )
    .await
    .context("BATCH_ACK_MESSAGE")?;
    Ok(())
}

/// POP + ack by `consumers` tasks of `group`, acking as `mode` says, until `expected` messages
/// were acked (or nothing came for a while); returns how many were acked.
pub(crate) async fn drain_pop_acking(
    brokers: Vec<String>,
    topic: String,
    batch: i32,
    group: String,
    consumers: usize,
    expected: u64,
    mode: AckMode,
) -> anyhow::Result<u64> {
    // `popped` ends the POP loops; `acked` counts the messages whose ack answered SUCCESS.
    let popped = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let (brokers, topic, group) = (brokers.clone(), topic.clone(), group.clone());
        let (popped, acked) = (popped.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let api = Arc::new(api());
            // Async acks of this consumer, oldest first: each answers its message count.
            let mut in_flight: tokio::task::JoinSet<anyhow::Result<u64>> =
                tokio::task::JoinSet::new();
            let mut idle = 0;
            while popped.load(Ordering::Relaxed) < expected && idle < 20 {
                let mut got = 0;
                for b in &brokers {
                    let msgs = api
                        .pop(b, &group, &topic, -1, batch, 60_000, 0, false)
                        .await?;
                    got += msgs.len();
                    popped.fetch_add(msgs.len() as u64, Ordering::Relaxed);
                    match mode {
                        AckMode::Single => {
                            for m in &msgs {
                                api.ack(b, &group, &topic, m).await?;
                            }
                            acked.fetch_add(msgs.len() as u64, Ordering::Relaxed);
                        }
                        AckMode::Batch if !msgs.is_empty() => {
                            batch_ack(&api, b, &group, &topic, &msgs).await?;
                            acked.fetch_add(msgs.len() as u64, Ordering::Relaxed);
                        }
                        AckMode::AsyncBatch(bound) if !msgs.is_empty() => {
                            while in_flight.len() >= bound.max(1) {
                                if let Some(done) = in_flight.join_next().await {
                                    let n = done.context("ack task")??;
                                    acked.fetch_add(n, Ordering::Relaxed);
                                }
                            }
                            let (api, b, group, topic) =
                                (api.clone(), b.clone(), group.clone(), topic.clone());
                            in_flight.spawn(async move {
                                batch_ack(&api, &b, &group, &topic, &msgs).await?;
                                Ok(msgs.len() as u64)
                            });
                        }
                        AckMode::Batch | AckMode::AsyncBatch(_) => {}
                    }
                }
                if got == 0 {
                    idle += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                } else {
                    idle = 0;
                }
            }
            // Every ack still unanswered must answer SUCCESS before the drain counts it.
            while let Some(done) = in_flight.join_next().await {
                let n = done.context("ack task")??;
                acked.fetch_add(n, Ordering::Relaxed);
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await.context("consumer task")??;
    }
    let (popped, acked) = (
        popped.load(Ordering::Relaxed),
        acked.load(Ordering::Relaxed),
    );
    if acked != popped {
        anyhow::bail!("{popped} messages popped but {acked} acked");
    }
    Ok(acked)
}

pub async fn run(args: PopBenchArgs) -> anyhow::Result<()> {
    measure(&PopLoad {
        namesrv: args.namesrv,
        topic: args.topic,
        count: args.count,
        size: args.size,
        consumers: args.consumers,
        batch: args.batch,
        modes: match args.ack_mode {
            AckModes::Single => vec![AckMode::Single],
            AckModes::Batch => vec![AckMode::Batch],
            AckModes::Async => vec![AckMode::AsyncBatch(args.acks_in_flight)],
            AckModes::Both => vec![AckMode::Single, AckMode::Batch],
            AckModes::All => vec![
                AckMode::Single,
                AckMode::Batch,
                AckMode::AsyncBatch(args.acks_in_flight),
            ],
        },
    })
    .await
    .map(|_| ())
}

/// What [`measure`] fills and drains.
pub(super) struct PopLoad {
    pub namesrv: String,
    pub topic: String,
    pub count: u64,
    pub size: usize,
    pub consumers: usize,
    pub batch: i32,
    /// The ack modes drained, in this order, each by 1 and by `consumers` consumers.
    pub modes: Vec<AckMode>,
}

/// The drains' rates, messages per second.
pub(super) struct PopNumbers {
    /// PULL by one consumer (the baseline).
    pub pull: f64,
    /// POP + one ACK_MESSAGE per message by one consumer (0 when not drained).
    pub pop_one: f64,
    /// POP + one ACK_MESSAGE per message by [`PopLoad::consumers`] consumers (0 when not
    /// drained).
    pub pop_many: f64,
    /// POP + one BATCH_ACK_MESSAGE per POP by one consumer (`None` when not drained).
    pub batch_one: Option<f64>,
    /// POP + one BATCH_ACK_MESSAGE per POP by [`PopLoad::consumers`] consumers.
    pub batch_many: Option<f64>,
    /// POP + one BATCH_ACK_MESSAGE per POP, not awaited before the next POP, by one consumer.
    pub async_one: Option<f64>,
    /// The same by [`PopLoad::consumers`] consumers.
    pub async_many: Option<f64>,
}

/// Fills the topic, drains it by PULL, then for each ack mode by POP with one consumer and
/// with `consumers`; prints each drain and answers their rates.
pub(super) async fn measure(args: &PopLoad) -> anyhow::Result<PopNumbers> {
    let target = Target::messages(&args.namesrv, &args.topic, args.count);
    let setup = api();
    let queues = Arc::new(writable_queues(&setup, &target).await?);
    eprintln!(
        "filling {} with {} messages of {} bytes",
        args.topic, args.count, args.size
    );
    run_load(Load::Send, &target, &queues, args.size, 1, 256).await?;
    let run_id = rocketraft_common::time::now_ms();
    let mut brokers: Vec<String> = queues.iter().map(|(b, _)| b.clone()).collect();
    brokers.dedup();

    let pull_group = format!("bench_pull_{run_id}");
    let (pulled, pull_secs, pull_rate) =
        timed_drain(drain_pull(&queues, &args.topic, args.batch, &pull_group)).await?;
    println!(
        "pull (baseline), 1 consumer: {pulled} msgs in {pull_secs:.2} s = {pull_rate:.0} msgs/s"
    );

    let mut numbers = PopNumbers {
        pull: pull_rate,
        pop_one: 0.0,
        pop_many: 0.0,
        batch_one: None,
        batch_many: None,
        async_one: None,
        async_many: None,
    };
    for &mode in &args.modes {
        let mut rates = Vec::new();
        let mut counts = vec![1, args.consumers.max(1)];
        counts.dedup();
        for consumers in counts {
            let tag = match mode {
                AckMode::Single => "pop",
                AckMode::Batch => "popbatch",
                AckMode::AsyncBatch(_) => "popasync",
            };
            let (n, secs, rate) = timed_drain(drain_pop_acking(
                brokers.clone(),
                args.topic.clone(),
                args.batch,
                format!("bench_{tag}_{consumers}_{run_id}"),
                consumers,
                pulled,
                mode,
            ))
            .await?;
            println!(
                "pop + {}, {consumers} consumer(s): {n} msgs in {secs:.2} s = {rate:.0} msgs/s ({:.2}x the pull baseline)",
                mode.label(),
                rate / pull_rate.max(1e-9)
            );
            if n < pulled {
                anyhow::bail!("POP ({}) drained {n} of {pulled} messages", mode.label());
            }
            rates.push(rate);
        }
        match mode {
            AckMode::Single => {
                numbers.pop_one = rates[0];
                numbers.pop_many = rates[rates.len() - 1];
            }
            AckMode::Batch => {
                numbers.batch_one = Some(rates[0]);
                numbers.batch_many = Some(rates[rates.len() - 1]);
            }
            AckMode::AsyncBatch(_) => {
                numbers.async_one = Some(rates[0]);
                numbers.async_many = Some(rates[rates.len() - 1]);
            }
        }
    }
    Ok(numbers)
}
