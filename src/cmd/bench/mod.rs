//! `rocketraft bench`: load generators against a running cluster, and a store recovery timer.
//!
//! Every run prints a progress line each second and ends with msgs/s, MB/s and latency
//! percentiles. Numbers from this shared 2-core machine are noisy: compare runs made together.
//! `produce`, `consume` and `recovery` live here; the other benches in their modules:
//! [`auth`], [`controller`], [`index`], [`pop`], [`proxy`], [`replication`]; [`suite`] runs the
//! comparison table of issue 19 with several of them and writes a report.
//!
//! With `--access-key`/`--secret-key` (or ROCKETRAFT_ACCESS_KEY/ROCKETRAFT_SECRET_KEY, as for
//! `rocketraft admin`) every Remoting request is signed (RocketMQ's `AclClientRPCHook`), for
//! servers with `authenticationEnabled`. With `--tls` / `--tls-trust-cert` (as for `rocketraft
//! admin`) the benches against a running cluster reach its NameServers and brokers over TLS,
//! for servers with `[tls]` enforcing; `bench proxy --proxy-tls` reaches a proxy serving TLS.

mod auth;
mod controller;
mod index;
mod metrics;
mod pop;
mod proxy;
mod replication;
mod retention;
mod sets;
mod suite;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use rocketraft_broker::store::{BrokerMessage, FlushDiskType, MessageStore, StoreConfig};
use rocketraft_common::message::Message;
use rocketraft_common::protocol::TopicRouteData;
use rocketraft_common::TopicConfig;
use rocketraft_remoting::api::{ApiError, MqClientApi, PullRequest, PullStatus, SendRequest};
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::tls::ClientTls;
use rocketraft_remoting::{ClientConfig, RemotingClient, SessionCredentials};
use tokio::sync::Mutex;

use crate::cmd::admin::TlsFlags;

#[derive(Args)]
pub struct BenchArgs {
    /// The access key (username) to sign Remoting requests with, for servers with
    /// `authenticationEnabled`; ROCKETRAFT_ACCESS_KEY if unset.
    #[arg(long, global = true)]
    access_key: Option<String>,
    /// The secret key of --access-key; ROCKETRAFT_SECRET_KEY if unset (prefer the variable: a
    /// command line is visible to other users of the machine).
    #[arg(long, global = true)]
    secret_key: Option<String>,
    #[command(flatten)]
    tls: TlsFlags,
    #[command(subcommand)]
    command: BenchCommand,
}

/// The credentials of `--access-key`/`--secret-key`, set once by [`run`].
static SIGNING: OnceLock<Option<SessionCredentials>> = OnceLock::new();

/// What this run signs its Remoting requests with, if anything.
pub(crate) fn signing() -> Option<SessionCredentials> {
    SIGNING.get().cloned().flatten()
}

/// The TLS of `--tls` / `--tls-trust-cert`, set once by [`run`].
static TLS: OnceLock<Option<ClientTls>> = OnceLock::new();

/// The TLS this run's Remoting connections use, if any.
pub(crate) fn tls() -> Option<ClientTls> {
    TLS.get().cloned().flatten()
}

#[derive(Args, Clone)]
pub(crate) struct Target {
    /// NameServer address.
    #[arg(long, default_value = "127.0.0.1:9876")]
    pub(crate) namesrv: String,
    /// Topic to use (created with 8 queues on every master when missing).
    #[arg(long, default_value = "BenchTopic")]
    pub(crate) topic: String,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 10)]
    pub(crate) duration: u64,
    /// Stop after this many messages (whichever comes first).
    #[arg(long)]
    pub(crate) count: Option<u64>,
    /// What the load's requests are signed with (`--access-key`, or a bench's own choice).
    #[arg(skip)]
    pub(crate) credentials: Option<SessionCredentials>,
    /// [`Load::SendKeyed`]: the keys' prefix.
    #[arg(skip)]
    pub(crate) key_prefix: String,
}

impl Target {
    /// `count` messages on `topic`, with ten minutes to send them.
    pub(crate) fn messages(namesrv: &str, topic: &str, count: u64) -> Target {
        Target {
            namesrv: namesrv.to_string(),
            topic: topic.to_string(),
            duration: 600,
            count: Some(count),
            credentials: signing(),
            key_prefix: String::new(),
        }
    }
}

/// A Remoting client API with a 10 s deadline per request, signing as `--access-key`.
pub(crate) fn api() -> MqClientApi {
    api_signed(signing())
}

/// A Remoting client API with a 10 s deadline per request, signing with `credentials`.
pub(crate) fn api_signed(credentials: Option<SessionCredentials>) -> MqClientApi {
    MqClientApi::new(
        RemotingClient::new(ClientConfig {
            credentials,
            tls: tls(),
            ..ClientConfig::default()
        }),
        Duration::from_secs(10),
    )
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Send messages as fast as the window allows.
    Produce {
        #[command(flatten)]
        target: Target,
        /// Message body size in bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Concurrent producers (each with its own connection).
        #[arg(long, default_value_t = 1)]
        producers: usize,
        /// Messages in flight per producer.
        #[arg(long, default_value_t = 1)]
        window: usize,
        /// Messages per request: more than 1 sends SEND_BATCH_MESSAGE requests of this many
        /// messages (RocketMQ's `send(Collection<Message>)`), `window / batch` of them in flight.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Seconds of GET_MAX_OFFSET round trips measured first as the baseline (0: none).
        #[arg(long, default_value_t = 3)]
        baseline_secs: u64,
    },
    /// Pull every queue of the topic from its first offset.
    Consume {
        #[command(flatten)]
        target: Target,
        /// Messages per pull (the broker caps it at 32 by default).
        #[arg(long, default_value_t = 32)]
        batch: i32,
    },
    /// Start a 3-process controller quorum and measure writes, linearizable reads and failover.
    Controller(controller::ControllerBenchArgs),
    /// POP receive + ack throughput (1 and N consumers) beside plain pull, same run.
    Pop(pop::PopBenchArgs),
    /// Sends through the gRPC proxy vs straight over Remoting (throughput, p99), and receive +
    /// ack through the proxy vs POP + ack over Remoting, same run.
    Proxy(proxy::ProxyBenchArgs),
    /// Start a broker set of 3 replicas (and the same broker alone) with `rocketraft cluster up`,
    /// compare send throughput and p99, and time failovers after kill -9 of the master.
    Replication(replication::ReplicationBenchArgs),
    /// Start a one-broker cluster with `cluster up --auth` and the same without, and compare
    /// signed sends (ACL 2.0 checked) with unsigned ones on the same load, same run.
    Auth(auth::AuthBenchArgs),
    /// Start `cluster up --sets N` and compare sends spread over the queues of 1, 2, ... N
    /// broker sets (rotating rounds, same run).
    Sets(sets::SetsBenchArgs),
    /// Sends with a key vs without (same run, alternating), then QUERY_MESSAGE latency by key
    /// over every message indexed, against GET_MAX_OFFSET round trips.
    Index(index::IndexBenchArgs),
    /// The index alone (no network): fill a store with keyed messages, time the indexer and
    /// lookups by key against reading the record by offset.
    IndexStore(index::IndexStoreArgs),
    /// Run the comparison table of issue 19 (produce, POP, proxy, failover, against NATS
    /// JetStream and the same run's baselines), starting what it needs, and write
    /// bench-report.md and bench-report.html.
    Suite(suite::SuiteArgs),
    /// Start two `rocketraft dev` processes, one serving metrics (scraped every second) and one
    /// with --no-metrics, and compare sends against each (alternating rounds, same run).
    Metrics(metrics::MetricsBenchArgs),
    /// Start a `rocketraft dev` with a reserved time of 1 s and compare sends while expired
    /// segments are being deleted with sends while nothing is (alternating rounds, same run).
    Retention(retention::RetentionBenchArgs),
    /// Fill a store of SIZE MiB, crash it (no clean shutdown) and time its recovery.
    Recovery {
        /// Directory for the store (created; reused if it holds a store of the right size).
        #[arg(long)]
        dir: std::path::PathBuf,
        /// CommitLog bytes to write, in MiB.
        #[arg(long, default_value_t = 1024)]
        size_mib: u64,
    },
}

impl BenchCommand {
    /// The bench's name if it starts the servers it measures (or needs none) rather than
    /// reaching a running cluster.
    fn own_servers(&self) -> Option<&'static str> {
        match self {
            BenchCommand::Produce { .. }
            | BenchCommand::Consume { .. }
            | BenchCommand::Pop(_)
            | BenchCommand::Proxy(_)
            | BenchCommand::Index(_) => None,
            BenchCommand::Controller(_) => Some("controller"),
            BenchCommand::Replication(_) => Some("replication"),
            BenchCommand::Auth(_) => Some("auth"),
            BenchCommand::Sets(_) => Some("sets"),
            BenchCommand::IndexStore(_) => Some("index-store"),
            BenchCommand::Metrics(_) => Some("metrics"),
            BenchCommand::Suite(_) => Some("suite"),
            BenchCommand::Retention(_) => Some("retention"),
            BenchCommand::Recovery { .. } => Some("recovery"),
        }
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let credentials = crate::cmd::admin::credentials(args.access_key, args.secret_key)?;
    let _ = SIGNING.set(credentials.clone());
    if args.tls.enabled() {
        if let Some(bench) = args.command.own_servers() {
            bail!(
                "bench {bench} starts its own plaintext servers: --tls and --tls-trust-cert are for \
                 the benches against a running cluster (produce, consume, pop, index, proxy)"
            );
        }
    }
    let _ = TLS.set(args.tls.load()?);
    match args.command {
        BenchCommand::Produce {
            mut target,
            size,
            producers,
            window,
            batch,
            baseline_secs,
        } => {
            target.credentials = credentials;
            let load = if batch > 1 {
                Load::SendBatch(batch)
            } else {
                Load::Send
            };
            let shape = (producers.max(1), window.max(1));
            produce(target, size, shape, load, baseline_secs).await
        }
        BenchCommand::Consume { target, batch } => consume(target, batch.max(1)).await,
        BenchCommand::Auth(args) => auth::run(args).await,
        BenchCommand::Sets(args) => sets::run(args).await,
        BenchCommand::Retention(args) => retention::run(args).await,
        BenchCommand::Metrics(args) => metrics::run(args).await,
        BenchCommand::Suite(args) => suite::run(args).await,
        BenchCommand::Controller(args) => controller::run(args).await,
        BenchCommand::Replication(args) => replication::run(args).await,
        BenchCommand::Pop(args) => pop::run(args).await,
        BenchCommand::Index(args) => index::run(args).await,
        BenchCommand::IndexStore(args) => {
            tokio::task::spawn_blocking(move || index::run_store(args))
                .await
                .context("index-store bench task failed")?
        }
        BenchCommand::Proxy(args) => proxy::run(args).await,
        BenchCommand::Recovery { dir, size_mib } => {
            tokio::task::spawn_blocking(move || recovery(&dir, size_mib))
                .await
                .context("recovery bench task failed")?
        }
    }
}

/// Times a drain that answers how many messages it got: (messages, seconds, messages/s).
pub(crate) async fn timed_drain(
    drain: impl std::future::Future<Output = anyhow::Result<u64>>,
) -> anyhow::Result<(u64, f64, f64)> {
    let started = Instant::now();
    let n = drain.await?;
    let secs = started.elapsed().as_secs_f64();
    Ok((n, secs, n as f64 / secs.max(1e-9)))
}

/// Every (broker address, queue id) that takes writes for the topic, creating it if needed.
pub(crate) async fn writable_queues(
    api: &MqClientApi,
    target: &Target,
) -> anyhow::Result<Vec<(String, i32)>> {
    let route = match api.topic_route(&target.namesrv, &target.topic).await {
        Ok(route) => route,
        Err(ApiError::Refused(r)) if r.code == response_code::TOPIC_NOT_EXIST => {
            create_topic(api, target).await?
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot get the route of {} from {}",
                    target.topic, target.namesrv
                )
            })
        }
    };
    let mut queues = Vec::new();
    for queue in &route.queue_datas {
        let Some(addr) = route
            .broker_datas
            .iter()
            .find(|b| b.broker_name == queue.broker_name)
            .and_then(|b| b.master_addr())
        else {
            continue;
        };
        for id in 0..queue.write_queue_nums {
            queues.push((addr.to_string(), id));
        }
    }
    if queues.is_empty() {
        bail!(
            "topic {} has no writable queue on a live master",
            target.topic
        );
    }
    Ok(queues)
}

/// Creates the missing topic with 8 queues on every live master; its route once the NameServer
/// shows it.
async fn create_topic(api: &MqClientApi, target: &Target) -> anyhow::Result<TopicRouteData> {
    let info = api.cluster_info(&target.namesrv).await?;
    let masters: Vec<String> = info
        .broker_addr_table
        .values()
        .filter_map(|b| b.master_addr().map(str::to_string))
        .collect();
    if masters.is_empty() {
        bail!("no live broker is registered with {}", target.namesrv);
    }
    for broker in &masters {
        api.create_topic(broker, &TopicConfig::new(target.topic.clone(), 8))
            .await
            .with_context(|| format!("creating {} on {broker}", target.topic))?;
    }
    eprintln!(
        "created topic {} on {} broker(s)",
        target.topic,
        masters.len()
    );
    // The broker re-registers at once; give the NameServer a moment.
    let mut waited = 0;
    loop {
        match api.topic_route(&target.namesrv, &target.topic).await {
            Ok(route) => return Ok(route),
            Err(_) if waited < 50 => {
                waited += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).context("the new topic never appeared in the route"),
        }
    }
}

#[derive(Default)]
struct Progress {
    messages: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    /// Messages completed in each whole second of the run, recorded by [`spawn_progress`].
    per_second: std::sync::Mutex<Vec<u64>>,
}

fn spawn_progress(
    progress: Arc<Progress>,
    started: Instant,
    verb: &'static str,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.tick().await;
        let mut last = 0;
        loop {
            ticker.tick().await;
            let now = progress.messages.load(Ordering::Relaxed);
            if let Ok(mut samples) = progress.per_second.lock() {
                samples.push(now - last);
            }
            eprintln!(
                "[{:>4.0}s] {verb} {now} msgs, {} msgs/s in the last second, {} errors",
                started.elapsed().as_secs_f64(),
                now - last,
                progress.errors.load(Ordering::Relaxed)
            );
            last = now;
        }
    })
}

fn report(verb: &str, progress: &Progress, elapsed: Duration, histogram: &Histogram<u64>) {
    let messages = progress.messages.load(Ordering::Relaxed);
    let bytes = progress.bytes.load(Ordering::Relaxed);
    let seconds = elapsed.as_secs_f64().max(1e-9);
    println!(
        "{verb}: {messages} msgs in {seconds:.2} s = {:.0} msgs/s, {:.2} MB/s, errors {}",
        messages as f64 / seconds,
        bytes as f64 / seconds / 1_000_000.0,
        progress.errors.load(Ordering::Relaxed)
    );
    println!(
        "latency: p50 {:.3} ms, p99 {:.3} ms, p999 {:.3} ms, max {:.3} ms",
        histogram.value_at_quantile(0.50) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
        histogram.value_at_quantile(0.999) as f64 / 1000.0,
        histogram.max() as f64 / 1000.0
    );
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram bounds")
}

/// What each request of a load run does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Load {
    /// SEND_MESSAGE_V2 of the configured body.
    Send,
    /// GET_MAX_OFFSET on the same queues and connections: the round trip without the store
    /// write, measured in the same run as the baseline the send numbers are compared with.
    Ping,
    /// SEND_MESSAGE_V2 with `KEYS` = `{key_prefix}{n}` (n = the request's number in the run):
    /// one more index entry per message than [`Load::Send`] (both carry a `UNIQ_KEY`).
    SendKeyed,
    /// SEND_BATCH_MESSAGE of this many messages of the configured body (RocketMQ's
    /// `send(Collection<Message>)`): the window counts messages, so a run keeps
    /// `window / n` requests in flight, and each message is timed by its batch's round trip.
    SendBatch(usize),
}

impl Load {
    /// Messages one request carries.
    fn messages(self) -> usize {
        match self {
            Load::SendBatch(n) => n.max(1),
            _ => 1,
        }
    }
}

pub(crate) struct LoadResult {
    pub(crate) messages: u64,
    pub(crate) seconds: f64,
    pub(crate) p99_ms: f64,
    /// p50, p90, p99 and p999 of the requests' latency, in milliseconds.
    pub(crate) percentiles_ms: [f64; 4],
    /// Messages completed in each whole second of the run.
    pub(crate) per_second: Vec<u64>,
    pub(crate) errors: u64,
}

impl LoadResult {
    /// What a run counted, timed and recorded.
    fn new(progress: &Progress, elapsed: Duration, histogram: &Histogram<u64>) -> LoadResult {
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        LoadResult {
            messages: progress.messages.load(Ordering::Relaxed),
            seconds: elapsed.as_secs_f64(),
            p99_ms: ms(0.99),
            percentiles_ms: [ms(0.5), ms(0.9), ms(0.99), ms(0.999)],
            per_second: progress
                .per_second
                .lock()
                .map(|s| s.clone())
                .unwrap_or_default(),
            errors: progress.errors.load(Ordering::Relaxed),
        }
    }

    /// Messages per second over the whole run.
    pub(crate) fn rate(&self) -> f64 {
        self.messages as f64 / self.seconds.max(1e-9)
    }
}

async fn produce(
    target: Target,
    size: usize,
    (producers, window): (usize, usize),
    load: Load,
    baseline_secs: u64,
) -> anyhow::Result<()> {
    let queues = Arc::new(writable_queues(&api_signed(target.credentials.clone()), &target).await?);
    let baseline = if baseline_secs > 0 {
        eprintln!("baseline: GET_MAX_OFFSET round trips for {baseline_secs} s, same window");
        let mut ping_target = target.clone();
        ping_target.duration = baseline_secs;
        ping_target.count = None;
        // One round trip per request in flight, as many requests as the sends keep in flight.
        let requests = (window / load.messages()).max(1);
        Some(run_load(Load::Ping, &ping_target, &queues, size, producers, requests).await?)
    } else {
        None
    };
    let batches = match load {
        Load::SendBatch(n) => format!(", in batches of {n} (SEND_BATCH_MESSAGE)"),
        _ => String::new(),
    };
    eprintln!(
        "producing {size}-byte messages to {} ({} queues), {producers} producer(s) x {window} in flight{batches}",
        target.topic,
        queues.len()
    );
    let sends = run_load(load, &target, &queues, size, producers, window).await?;
    if let Some(base) = baseline {
        let rate = |r: &LoadResult| r.messages as f64 / r.seconds.max(1e-9);
        println!(
            "baseline (GET_MAX_OFFSET round trip): {:.0} req/s, p99 {:.3} ms; sends reach {:.2}x its rate, p99 {:.2}x",
            rate(&base),
            base.p99_ms,
            rate(&sends) / rate(&base).max(1e-9),
            sends.p99_ms / base.p99_ms.max(1e-9)
        );
    }
    Ok(())
}

/// The send load of one measurement (shared by the benches that compare two settings).
#[derive(Args, Clone, Copy, Debug)]
pub(crate) struct SendLoad {
    /// Message body size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Concurrent producers (each with its own connection).
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Sends in flight per producer.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
}

impl SendLoad {
    /// `load` against `queues` of `target` for `target.duration` seconds.
    pub async fn run(
        &self,
        load: Load,
        target: &Target,
        queues: &Arc<Vec<(String, i32)>>,
    ) -> anyhow::Result<LoadResult> {
        let (producers, window) = (self.producers.max(1), self.window.max(1));
        run_load(load, target, queues, self.size, producers, window).await
    }

    /// "1024 B sends, 1 producer(s) x 32 in flight"
    pub fn describe(&self) -> String {
        format!(
            "{} B sends, {} producer(s) x {} in flight",
            self.size,
            self.producers.max(1),
            self.window.max(1)
        )
    }
}

/// Rounds of two measurements, a baseline and a variant, alternating: the baseline goes first
/// in even rounds and second in odd ones, so drift on a shared machine hits both.
#[derive(Args, Clone, Copy, Debug)]
pub(crate) struct AbRounds {
    /// Seconds of sending per measurement.
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Measurements of each kind (alternating).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    #[command(flatten)]
    pub load: SendLoad,
}

impl AbRounds {
    /// Every measurement in order: (round, whether it is the variant's).
    pub fn order(&self) -> impl Iterator<Item = (usize, bool)> {
        alternating(self.rounds)
    }
}

/// (round, whether it is the variant's turn) for `rounds` rounds of a baseline and a variant,
/// the baseline first in even rounds.
pub(crate) fn alternating(rounds: usize) -> impl Iterator<Item = (usize, bool)> {
    (0..rounds.max(1)).flat_map(|round| {
        let variant_first = round % 2 == 1;
        [(round, variant_first), (round, !variant_first)]
    })
}

/// Messages per second over every measurement, the median of their p99 latencies, and the
/// messages sent.
pub(crate) fn summary(results: &[LoadResult]) -> (f64, f64, u64) {
    let messages: u64 = results.iter().map(|r| r.messages).sum();
    let seconds: f64 = results.iter().map(|r| r.seconds).sum();
    let mut p99: Vec<f64> = results.iter().map(|r| r.p99_ms).collect();
    p99.sort_by(f64::total_cmp);
    let median = p99.get(p99.len() / 2).copied().unwrap_or(0.0);
    (messages as f64 / seconds.max(1e-9), median, messages)
}

pub(crate) async fn run_load(
    load: Load,
    target: &Target,
    queues: &Arc<Vec<(String, i32)>>,
    size: usize,
    producers: usize,
    window: usize,
) -> anyhow::Result<LoadResult> {
    let started = Instant::now();
    let run = Arc::new(LoadRun {
        load,
        queues: queues.clone(),
        topic: target.topic.clone(),
        body: Bytes::from(vec![b'x'; size]),
        progress: Arc::new(Progress::default()),
        histogram: Mutex::new(new_histogram()?),
        issued: AtomicU64::new(0),
        limit: target.count.unwrap_or(u64::MAX),
        deadline: started + Duration::from_secs(target.duration),
        producers,
        window,
        credentials: target.credentials.clone(),
        key_prefix: target.key_prefix.clone(),
    });
    let verb = if load == Load::Ping { "pinged" } else { "sent" };
    let ticker = spawn_progress(run.progress.clone(), started, verb);

    let mut workers = Vec::new();
    for producer in 0..producers {
        workers.push(tokio::spawn(produce_load(run.clone(), producer)));
    }
    for worker in workers {
        worker.await.context("load task failed")?;
    }
    let elapsed = started.elapsed();
    ticker.abort();
    let histogram = run.histogram.lock().await;
    if load != Load::Ping {
        report("produce", &run.progress, elapsed, &histogram);
    }
    Ok(LoadResult::new(&run.progress, elapsed, &histogram))
}

/// What the producers of one [`run_load`] share.
struct LoadRun {
    load: Load,
    queues: Arc<Vec<(String, i32)>>,
    topic: String,
    body: Bytes,
    progress: Arc<Progress>,
    histogram: Mutex<Histogram<u64>>,
    /// Requests issued by all producers, against `limit`.
    issued: AtomicU64,
    limit: u64,
    deadline: Instant,
    producers: usize,
    window: usize,
    credentials: Option<SessionCredentials>,
    key_prefix: String,
}

/// Producer number `producer` of a load run: its own connection, `window` messages in flight,
/// every `producers`-th queue from its own.
async fn produce_load(run: Arc<LoadRun>, producer: usize) {
    // One connection per producer, as separate client processes would have.
    let api = MqClientApi::new(
        RemotingClient::new(ClientConfig {
            max_in_flight_per_connection: run.window.max(1),
            credentials: run.credentials.clone(),
            tls: tls(),
            ..ClientConfig::default()
        }),
        Duration::from_secs(10),
    );
    // The window counts messages: as many senders as requests fit in it, each sending its
    // next request once the last is answered (no task per request: the spawn and the moves of
    // a request's future cost the client more than its encoding).
    let per_request = run.load.messages();
    let senders = (run.window / per_request).max(1);
    // Request k of this producer goes to queue `producer + k * producers`.
    let next = Arc::new(AtomicUsize::new(producer));
    let mut tasks = Vec::with_capacity(senders);
    for _ in 0..senders {
        let (run, api, next) = (run.clone(), api.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            // Latencies recorded here, merged into the run's once at the end.
            let mut histogram = Histogram::new_from(&*run.histogram.lock().await);
            loop {
                let number = run.issued.fetch_add(per_request as u64, Ordering::Relaxed);
                if Instant::now() >= run.deadline || number >= run.limit {
                    break;
                }
                let n = next.fetch_add(run.producers, Ordering::Relaxed);
                let (broker, queue_id) = &run.queues[n % run.queues.len()];
                let mut request = SendRequest {
                    producer_group: "bench_producer".to_string(),
                    topic: run.topic.clone(),
                    queue_id: *queue_id,
                    body: run.body.clone(),
                    ..SendRequest::default()
                };
                if run.load == Load::SendKeyed {
                    request.properties.insert(
                        rocketraft_common::consts::property::KEYS.to_string(),
                        format!("{}{number}", run.key_prefix),
                    );
                }
                issue(&run, &api, broker, &request, &mut histogram).await;
            }
            if let Err(e) = run.histogram.lock().await.add(&histogram) {
                tracing::warn!(error = %e, "latencies of one sender not merged");
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// One request of a load run, timed and counted.
async fn issue(
    run: &LoadRun,
    api: &MqClientApi,
    broker: &str,
    request: &SendRequest,
    histogram: &mut Histogram<u64>,
) {
    let sent = Instant::now();
    let messages = run.load.messages() as u64;
    let ok = match run.load {
        Load::Send | Load::SendKeyed => matches!(
            api.send(broker, request).await,
            Ok(r) if r.code == response_code::SUCCESS
        ),
        Load::SendBatch(n) => {
            let batch = vec![(request.body.clone(), BTreeMap::new()); n];
            matches!(
                api.send_batch(broker, &request.producer_group, &request.topic, request.queue_id, &batch)
                    .await,
                Ok(r) if r.code == response_code::SUCCESS
            )
        }
        Load::Ping => api
            .max_offset(broker, &request.topic, request.queue_id)
            .await
            .is_ok(),
    };
    if ok {
        let micros = sent.elapsed().as_micros() as u64;
        // Every message of a batch waited for the batch's answer.
        let _ = histogram.record_n(micros.max(1), messages);
        run.progress.messages.fetch_add(messages, Ordering::Relaxed);
        if run.load != Load::Ping {
            run.progress
                .bytes
                .fetch_add(request.body.len() as u64 * messages, Ordering::Relaxed);
        }
    } else {
        run.progress.errors.fetch_add(messages, Ordering::Relaxed);
    }
}

async fn consume(target: Target, batch: i32) -> anyhow::Result<()> {
    let api = api();
    let queues = writable_queues(&api, &target).await?;
    let progress = Arc::new(Progress::default());
    let histogram = Arc::new(Mutex::new(new_histogram()?));
    let limit = target.count.unwrap_or(u64::MAX);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(target.duration);
    let ticker = spawn_progress(progress.clone(), started, "consumed");
    let mut workers = Vec::new();
    for (broker, queue_id) in queues {
        let api = api.clone();
        let progress = progress.clone();
        let histogram = histogram.clone();
        let topic = target.topic.clone();
        workers.push(tokio::spawn(async move {
            let mut offset = 0i64;
            while Instant::now() < deadline && progress.messages.load(Ordering::Relaxed) < limit {
                let pull = PullRequest {
                    consumer_group: "bench_consumer".to_string(),
                    topic: topic.clone(),
                    queue_id,
                    queue_offset: offset,
                    max_msg_nums: batch,
                    sys_flag: rocketraft_common::consts::pull_sys_flag::SUBSCRIPTION,
                    commit_offset: -1,
                    suspend_timeout_ms: 0,
                    subscription: Some("*".to_string()),
                };
                let sent = Instant::now();
                match api.pull(&broker, &pull).await {
                    Ok(result) => {
                        histogram
                            .lock()
                            .await
                            .saturating_record((sent.elapsed().as_micros() as u64).max(1));
                        let n = result.messages.len() as u64;
                        let bytes: u64 = result.messages.iter().map(|m| m.body.len() as u64).sum();
                        progress.messages.fetch_add(n, Ordering::Relaxed);
                        progress.bytes.fetch_add(bytes, Ordering::Relaxed);
                        offset = result.next_begin_offset;
                        if result.status != PullStatus::Found {
                            // Caught up with this queue.
                            break;
                        }
                    }
                    Err(_) => {
                        progress.errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }));
    }
    for worker in workers {
        worker.await.context("consumer task failed")?;
    }
    let elapsed = started.elapsed();
    ticker.abort();
    report("consume", &progress, elapsed, &*histogram.lock().await);
    Ok(())
}

/// Fills a store of `size_mib` MiB of 1 KiB messages (unless the directory already holds one),
/// leaves it as a crash would, and times `MessageStore::open`'s recovery. The baseline, measured
/// in the same run, is a plain sequential read with CRC32 of the same segment files.
fn recovery(dir: &std::path::Path, size_mib: u64) -> anyhow::Result<()> {
    let mut config = StoreConfig::new(dir);
    config.flush_disk_type = FlushDiskType::AsyncFlush;
    config.commitlog_segment_size = 1 << 30;
    fill_store(&config, size_mib)?;
    let (baseline_bytes, baseline) = baseline_read(&config)?;

    for (label, full) in [("from the checkpoint", false), ("full scan", true)] {
        let mut run = config.clone();
        run.recover_full_scan = full;
        let started = Instant::now();
        let store = MessageStore::open(run).context("recover")?;
        let elapsed = started.elapsed();
        let report = store.recovery_report().clone();
        store.crash_for_test();
        println!(
            "recovery ({label}): {} ms for {} MiB checked ({} records, {} bytes cut), CommitLog end {} MiB; {:.2}x the baseline read",
            elapsed.as_millis(),
            report.bytes_checked >> 20,
            report.records_checked,
            report.bytes_cut,
            report.end_offset >> 20,
            elapsed.as_secs_f64() / baseline.as_secs_f64().max(1e-9)
        );
    }
    println!(
        "baseline: sequential read + CRC32 of {} MiB of segment files in {} ms",
        baseline_bytes >> 20,
        baseline.as_millis()
    );
    Ok(())
}

/// Fills the store of `config` up to `size_mib` MiB of 1 KiB messages (unless it already holds
/// that much), then leaves it as `kill -9` would.
fn fill_store(config: &StoreConfig, size_mib: u64) -> anyhow::Result<()> {
    let target = size_mib.max(1) * 1024 * 1024;
    let store = MessageStore::open(config.clone()).context("open the store to fill it")?;
    let start = store.max_phy_offset();
    if (start as u64) < target {
        eprintln!(
            "filling {} with {size_mib} MiB of 1 KiB messages",
            config.store_root.display()
        );
        let body = Bytes::from(vec![b'r'; 1024]);
        let mut next_report = 64 * 1024 * 1024;
        let mut n = 0u64;
        while (store.max_phy_offset() as u64) < target {
            // A batch goes to one queue: rotate the queue per batch.
            let queue_id = (n / 64 % 8) as i32;
            n += 64;
            let batch: Vec<BrokerMessage> = (0..64)
                .map(|_| BrokerMessage::new(Message::new("RecoveryBench", body.clone()), queue_id))
                .collect();
            store.put_messages_blocking(&batch).context("fill")?;
            if store.max_phy_offset() as u64 >= next_report {
                eprintln!(
                    "  written {} MiB ({n} messages)",
                    store.max_phy_offset() >> 20
                );
                next_report += 64 * 1024 * 1024;
            }
        }
    }
    // Leave it as `kill -9` would: no final flush, no checkpoint update, abort marker kept.
    store.crash_for_test();
    Ok(())
}

/// The baseline: read and checksum the same bytes (the CommitLog up to its end, not the
/// preallocated space past it) straight from the files. Returns the bytes read and the time.
fn baseline_read(config: &StoreConfig) -> anyhow::Result<(u64, Duration)> {
    let end = {
        let mut probe = config.clone();
        probe.recover_full_scan = false;
        let store = MessageStore::open(probe).context("probe the CommitLog end")?;
        let end = store.max_phy_offset().max(0) as u64;
        store.crash_for_test();
        end
    };
    let baseline_started = Instant::now();
    let mut baseline_bytes = 0u64;
    let mut crc = crc32fast::Hasher::new();
    let mut segments: Vec<_> = std::fs::read_dir(config.commitlog_dir())
        .context("list segments")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    segments.sort();
    for segment in &segments {
        if baseline_bytes >= end {
            break;
        }
        let data = std::fs::read(segment).with_context(|| format!("read {}", segment.display()))?;
        let take = data.len().min((end - baseline_bytes) as usize);
        baseline_bytes += take as u64;
        crc.update(&data[..take]);
    }
    let _ = crc.finalize();
    Ok((baseline_bytes, baseline_started.elapsed()))
}
