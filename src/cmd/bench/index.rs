//! `rocketraft bench index`: what the key index costs a producer, and how fast a lookup by key
//! is, against a running cluster, in one run.
//!
//! 1. Write cost: the same send load in alternating rounds (the order flips every round, so
//!    drift on a shared machine hits both), once without `KEYS` and once with one unique key per
//!    message. Every message carries a `UNIQ_KEY` (as every real producer's does), so the keyed
//!    load writes two index entries per message and the plain one one; the ratio is keyed / plain.
//! 2. Lookup latency: once the index has caught up, `--lookups` QUERY_MESSAGE requests by
//!    random keys of the keyed rounds (each must find its message), one at a time, over every
//!    message indexed; the baseline is as many GET_MAX_OFFSET round trips to the same brokers.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use clap::Args;
use hdrhistogram::Histogram;
use rocketraft_common::time::now_ms;

use super::{alternating, api, new_histogram, summary, writable_queues, Load, SendLoad, Target};

#[derive(Args)]
pub struct IndexBenchArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    load: SendLoad,
    /// Measurements of each load (alternating); each lasts --duration seconds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Lookups by key after the sends.
    #[arg(long, default_value_t = 2000)]
    lookups: usize,
}

/// A small xorshift generator (the lookups only need keys spread over the run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

pub async fn run(args: IndexBenchArgs) -> anyhow::Result<()> {
    let api = api();
    let target = args.target.clone();
    let queues = Arc::new(writable_queues(&api, &target).await?);
    let brokers: Vec<String> = queues
        .iter()
        .map(|(b, _)| b.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let run_id = now_ms();
    let mut plain = Vec::new();
    let mut keyed = Vec::new();
    // (key prefix, requests issued) of every keyed round.
    let mut keyed_rounds: Vec<(String, u64)> = Vec::new();
    for (round, with_keys) in alternating(args.rounds) {
        let mut t = target.clone();
        t.count = None;
        if with_keys {
            t.key_prefix = format!("bk-{run_id}-{round}-");
            eprintln!("round {round}: {} s of sends with KEYS", t.duration);
            let r = args.load.run(Load::SendKeyed, &t, &queues).await?;
            keyed_rounds.push((t.key_prefix.clone(), r.messages));
            keyed.push(r);
        } else {
            eprintln!("round {round}: {} s of sends without KEYS", t.duration);
            plain.push(args.load.run(Load::Send, &t, &queues).await?);
        }
    }
    let (plain_rate, plain_p99, plain_n) = summary(&plain);
    let (keyed_rate, keyed_p99, keyed_n) = summary(&keyed);
    ensure!(plain_n > 0 && keyed_n > 0, "no send succeeded");
    println!(
        "{}, without KEYS: {plain_rate:.0} msgs/s, p99 {plain_p99:.3} ms; with one key each: {keyed_rate:.0} msgs/s ({:.2}x), p99 {keyed_p99:.3} ms ({:.2}x)",
        args.load.describe(),
        keyed_rate / plain_rate.max(1e-9),
        keyed_p99 / plain_p99.max(1e-9)
    );

    // Wait for the index to hold the last keyed round's messages.
    let Some((last_prefix, last_issued)) = keyed_rounds.last().cloned() else {
        return Ok(());
    };
    let waited = Instant::now();
    let probe = format!("{last_prefix}{}", last_issued.saturating_sub(1) / 2);
    'wait: loop {
        for b in &brokers {
            let found = api
                .query_message(b, &target.topic, &probe, 1, 0, i64::MAX, false)
                .await
                .context("QUERY_MESSAGE")?;
            if !found.is_empty() {
                break 'wait;
            }
        }
        ensure!(
            waited.elapsed() < Duration::from_secs(60),
            "the index did not catch up within 60 s (is messageIndexEnable on?)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "index caught up {} ms after the last send",
        waited.elapsed().as_millis()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut rng = Rng(run_id as u64 | 1);
    let mut lookup = new_histogram()?;
    let mut ping = new_histogram()?;
    let mut found_count = 0usize;
    let lookups = args.lookups.max(1);
    for i in 0..lookups {
        let (prefix, issued) = &keyed_rounds[(rng.next() % keyed_rounds.len() as u64) as usize];
        let key = format!("{prefix}{}", rng.next() % (*issued).max(1));
        let mut found = false;
        for b in &brokers {
            let started = Instant::now();
            let r = api
                .query_message(b, &target.topic, &key, 32, 0, i64::MAX, false)
                .await
                .context("QUERY_MESSAGE")?;
            lookup.saturating_record((started.elapsed().as_micros() as u64).max(1));
            found |= !r.is_empty();
        }
        found_count += usize::from(found);
        let b = &brokers[i % brokers.len()];
        let started = Instant::now();
        api.max_offset(b, &target.topic, 0)
            .await
            .context("GET_MAX_OFFSET")?;
        ping.saturating_record((started.elapsed().as_micros() as u64).max(1));
    }
    println!(
        "lookup by key over {} indexed messages ({keyed_n} with KEYS) on {} broker(s): {lookups} lookups, found {found_count}, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; GET_MAX_OFFSET round trip p50 {:.3} ms, p99 {:.3} ms; lookup / round trip: p50 {:.2}x, p99 {:.2}x",
        plain_n + keyed_n,
        brokers.len(),
        ms(&lookup, 0.5),
        ms(&lookup, 0.99),
        lookup.max() as f64 / 1000.0,
        ms(&ping, 0.5),
        ms(&ping, 0.99),
        ms(&lookup, 0.5) / ms(&ping, 0.5).max(1e-9),
        ms(&lookup, 0.99) / ms(&ping, 0.99).max(1e-9),
    );
    Ok(())
}

/// `bench index-store`: the index alone, without the network, over many messages.
#[derive(Args)]
pub struct IndexStoreArgs {
    /// Directory for the store (removed first and at the end, unless --keep).
    #[arg(long)]
    dir: std::path::PathBuf,
    /// Messages to store, each with one key and a unique id.
    #[arg(long, default_value_t = 10_000_000)]
    messages: u64,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Lookups by key once everything is indexed.
    #[arg(long, default_value_t = 5000)]
    lookups: usize,
    /// Keep the store afterwards.
    #[arg(long)]
    keep: bool,
}

/// Fills a store with `--messages` keyed messages (batches of 64, straight into the store),
/// times how long the indexer takes to catch up, then times `query_by_key` for random keys
/// against reading the same record by its offset (the baseline of the same run).
pub fn run_store(args: IndexStoreArgs) -> anyhow::Result<()> {
    use rocketraft_broker::store::{BrokerMessage, MessageStore, StoreConfig};
    use rocketraft_common::consts::property;
    use rocketraft_common::message::Message;

    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)
            .with_context(|| format!("cannot remove {}", args.dir.display()))?;
    }
    let mut config = StoreConfig::new(&args.dir);
    config.commitlog_segment_size = 256 << 20;
    config.pretouch = false;
    let store = MessageStore::open(config).context("open the store")?;
    let body = bytes::Bytes::from(vec![b'i'; args.size]);
    let started = Instant::now();
    let mut offsets = Vec::with_capacity(args.messages as usize / 64 + 1);
    let mut n = 0u64;
    while n < args.messages {
        let batch: Vec<BrokerMessage> = (n..(n + 64).min(args.messages))
            .map(|i| {
                let mut m = Message::new("IndexBench", body.clone());
                m.set_keys(format!("k{i}"));
                m.set_property(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX, format!("{i:032X}"));
                BrokerMessage::new(m, (n / 64 % 8) as i32)
            })
            .collect();
        let r = store.put_messages_blocking(&batch).context("put")?;
        offsets.push((n, r.physical_offset));
        n += batch.len() as u64;
        if n % 1_000_000 < 64 {
            eprintln!(
                "  stored {n} messages, index at {} MiB of {} MiB",
                store.message_index().map_or(0, |i| i.progress() >> 20),
                store.max_phy_offset() >> 20
            );
        }
    }
    let stored = started.elapsed();
    let index = store
        .message_index()
        .context("the index is disabled in this store")?;
    while !index.wait_caught_up(Duration::from_secs(10)) {
        eprintln!(
            "  indexing: {} of {} MiB",
            index.progress() >> 20,
            store.max_phy_offset() >> 20
        );
    }
    let indexed = started.elapsed();
    let stats = index.stats();
    println!(
        "stored {} messages ({} MiB of CommitLog) in {:.1} s ({:.0} msgs/s); indexed {} records, {} entries, caught up {:.1} s after the start ({:.0} records/s), {:.1} s after the last put",
        args.messages,
        store.max_phy_offset() >> 20,
        stored.as_secs_f64(),
        args.messages as f64 / stored.as_secs_f64().max(1e-9),
        stats.records,
        stats.entries,
        indexed.as_secs_f64(),
        stats.records as f64 / indexed.as_secs_f64().max(1e-9),
        (indexed - stored).as_secs_f64()
    );
    let mut rng = Rng(now_ms() as u64 | 1);
    let mut lookup = new_histogram()?;
    let mut read = new_histogram()?;
    let mut found = 0usize;
    for _ in 0..args.lookups.max(1) {
        let (first, offset) = offsets[(rng.next() % offsets.len() as u64) as usize];
        let key = format!("k{first}");
        let t = Instant::now();
        let r = store
            .query_by_key("IndexBench", &key, 32, 0, i64::MAX)
            .context("query")?
            .context("the index is disabled")?;
        lookup.saturating_record((t.elapsed().as_micros() as u64).max(1));
        found += usize::from(r.offsets == [offset]);
        let t = Instant::now();
        let rec = store.read_record(offset);
        read.saturating_record((t.elapsed().as_micros() as u64).max(1));
        ensure!(rec.is_some(), "no record at {offset}");
    }
    println!(
        "lookup by key over {} indexed messages: {} lookups, found {found}, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; reading the record by offset p50 {:.3} ms, p99 {:.3} ms; lookup / read: p50 {:.1}x, p99 {:.1}x",
        args.messages,
        args.lookups.max(1),
        ms(&lookup, 0.5),
        ms(&lookup, 0.99),
        lookup.max() as f64 / 1000.0,
        ms(&read, 0.5),
        ms(&read, 0.99),
        ms(&lookup, 0.5) / ms(&read, 0.5).max(1e-9),
        ms(&lookup, 0.99) / ms(&read, 0.99).max(1e-9),
    );
    store.shutdown().context("shutdown")?;
    drop(store);
    if !args.keep {
        std::fs::remove_dir_all(&args.dir)
            .with_context(|| format!("cannot remove {}", args.dir.display()))?;
    }
    Ok(())
}
