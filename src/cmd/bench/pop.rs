//! `rocketraft bench pop`: POP receive + ack throughput beside plain pull, in the same run, on a
//! running cluster (for example `rocketraft dev`).
//!
//! Fills a topic with `--count` messages of `--size` bytes, then drains it three times, each
//! with its own consumer group so each drain sees every message: (1) PULL by one consumer over
//! every queue (the baseline), (2) POP + ACK by one consumer, (3) POP + ACK by `--consumers`
//! concurrent consumers of one group (message-granularity load balancing).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rocketraft_common::consts::pull_sys_flag;
use rocketraft_remoting::api::{PullRequest, PullStatus};

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

/// POP + ACK by `consumers` tasks of `group` until `expected` messages were acked (or nothing
/// came for a while); returns how many were acked.
pub(crate) async fn drain_pop(
    brokers: Vec<String>,
    topic: String,
    batch: i32,
    group: String,
    consumers: usize,
    expected: u64,
) -> anyhow::Result<u64> {
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let (brokers, topic, group, done) =
            (brokers.clone(), topic.clone(), group.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let api = api();
            let mut idle = 0;
            while done.load(Ordering::Relaxed) < expected && idle < 20 {
                let mut got = 0;
                for b in &brokers {
                    let msgs = api
                        .pop(b, &group, &topic, -1, batch, 60_000, 0, false)
                        .await?;
                    got += msgs.len();
                    for m in &msgs {
                        api.ack(b, &group, &topic, m).await?;
                    }
                    done.fetch_add(msgs.len() as u64, Ordering::Relaxed);
                }
                if got == 0 {
                    idle += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                } else {
                    idle = 0;
                }
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await.context("consumer task")??;
    }
    Ok(done.load(Ordering::Relaxed))
}

pub async fn run(args: PopBenchArgs) -> anyhow::Result<()> {
    measure(&PopLoad {
        namesrv: args.namesrv,
        topic: args.topic,
        count: args.count,
        size: args.size,
        consumers: args.consumers,
        batch: args.batch,
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
}

/// The drains' rates, messages per second.
pub(super) struct PopNumbers {
    /// PULL by one consumer (the baseline).
    pub pull: f64,
    /// POP + ACK by one consumer.
    pub pop_one: f64,
    /// POP + ACK by [`PopLoad::consumers`] consumers.
    pub pop_many: f64,
}

/// Fills the topic, drains it by PULL, by POP with one consumer, then with `consumers`;
/// prints each drain and answers their rates.
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

    let mut rates = Vec::new();
    for consumers in [1, args.consumers.max(1)] {
        let (n, secs, rate) = timed_drain(drain_pop(
            brokers.clone(),
            args.topic.clone(),
            args.batch,
            format!("bench_pop_{consumers}_{run_id}"),
            consumers,
            pulled,
        ))
        .await?;
        println!(
            "pop + ack, {consumers} consumer(s): {n} msgs in {secs:.2} s = {rate:.0} msgs/s ({:.2}x the pull baseline)",
            rate / pull_rate.max(1e-9)
        );
        if n < pulled {
            anyhow::bail!("POP drained {n} of {pulled} messages");
        }
        rates.push(rate);
    }
    Ok(PopNumbers {
        pull: pull_rate,
        pop_one: rates[0],
        pop_many: rates[rates.len() - 1],
    })
}
