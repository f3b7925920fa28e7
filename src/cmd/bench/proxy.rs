//! `rocketraft bench proxy`: what the gRPC proxy costs, measured against the broker's own
//! Remoting protocol in the same run, on a running cluster with a proxy (for example
//! `rocketraft dev`, whose proxy listens on 8081).
//!
//! 1. Sends of `--size` bytes with `--window` requests in flight: straight to the broker over
//!    Remoting (the baseline), then through the proxy over gRPC. Throughput and p50/p99.
//! 2. Receive + ack of everything sent, by `--consumers` consumers: POP + ACK over Remoting
//!    (the baseline), then ReceiveMessage + AckMessage through the proxy.
//!
//! `--tls` / `--tls-trust-cert` are for the Remoting side (NameServer and brokers with `[tls]`
//! enforcing); `--proxy-tls` / `--proxy-tls-trust-cert` for a proxy serving TLS (`rocketraft
//! proxy --tls-cert`): the two are configured apart (`dev`'s own proxy is plaintext even when
//! its servers take TLS only).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use rocketraft_common::coalesce::Coalesced;
use rocketraft_proxy::pb;
use rocketraft_proxy::pb::messaging_service_client::MessagingServiceClient;
use rocketraft_remoting::api::SendRequest;
use rocketraft_remoting::tls::{ClientTls, ClientTlsConfig};
use tonic::transport::{Channel, Endpoint, Uri};

use super::{api, timed_drain, writable_queues, Target};

#[derive(Args)]
pub struct ProxyBenchArgs {
    /// NameServer address.
    #[arg(long, default_value = "127.0.0.1:9876")]
    namesrv: String,
    /// The proxy's gRPC address.
    #[arg(long, default_value = "127.0.0.1:8081")]
    proxy: String,
    /// Reach the proxy over TLS (`rocketraft proxy --tls-cert`), verifying it against
    /// --proxy-tls-trust-cert, or not verifying it without it.
    #[arg(long)]
    proxy_tls: bool,
    /// Trusted certificates (PEM) for --proxy-tls: the CA of the proxy's certificate.
    #[arg(long)]
    proxy_tls_trust_cert: Option<std::path::PathBuf>,
    /// Topic (created with 8 queues when missing; a fresh name per run is best).
    #[arg(long, default_value = "BenchProxy")]
    topic: String,
    /// Messages sent by each of the two senders.
    #[arg(long, default_value_t = 20_000)]
    count: u64,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Sends in flight.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Concurrent consumers in each drain.
    #[arg(long, default_value_t = 4)]
    consumers: usize,
    /// The process id of the server (for example `rocketraft dev`) on this host: each step
    /// then also prints the CPU time it and this bench took per message (from /proc), the
    /// figure to compare on a loaded machine.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Messages per SendMessage through the proxy (the proxy sends them to the broker as one
    /// batch); the Remoting baseline still sends one per request. `--window` stays the
    /// messages in flight: `window / proxy_batch` calls (at least one). The latencies
    /// printed for the proxy are then per call of this many messages.
    #[arg(long, default_value_t = 1)]
    proxy_batch: usize,
}

fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource {
        resource_namespace: String::new(),
        name: name.to_string(),
    })
}

impl ProxyBenchArgs {
    /// `count` sends of `size` bytes, `window` in flight, and drains by `consumers`, against
    /// the cluster of `namesrv` and the plaintext proxy at `proxy`.
    pub(super) fn new(
        namesrv: &str,
        proxy: &str,
        topic: &str,
        count: u64,
        size: usize,
        window: usize,
        consumers: usize,
    ) -> ProxyBenchArgs {
        ProxyBenchArgs {
            namesrv: namesrv.to_string(),
            proxy: proxy.to_string(),
            proxy_tls: false,
            proxy_tls_trust_cert: None,
            topic: topic.to_string(),
            count,
            size,
            window,
            consumers,
            server_pid: None,
            proxy_batch: 1,
        }
    }
}

/// CPU time (user + system, all threads) of process `pid` so far, in microseconds, from
/// `/proc/PID/stat` (clock ticks of 10 ms); `None` where there is no such file.
fn cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from the closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10_000)
}

/// The CPU time the server (`--server-pid`) and this bench take during one step.
struct CpuMeter {
    server: Option<(u32, u64)>,
    bench: Option<u64>,
}

impl CpuMeter {
    fn start(server_pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            server: server_pid.and_then(|pid| cpu_us(pid).map(|us| (pid, us))),
            bench: cpu_us(std::process::id()),
        }
    }

    /// Prints `step`'s CPU time per message when the server's is known.
    fn report(&self, step: &str, messages: u64) {
        let Some((pid, server_start)) = self.server else {
            return;
        };
        let per = |start: u64, end: Option<u64>| {
            end.map(|e| e.saturating_sub(start) as f64 / messages.max(1) as f64)
        };
        let server = per(server_start, cpu_us(pid));
        let bench = self.bench.and_then(|b| per(b, cpu_us(std::process::id())));
        if let (Some(server), Some(bench)) = (server, bench) {
            println!("  CPU per message, {step}: server {server:.1} us, bench {bench:.1} us");
        }
    }
}

pub(super) struct SendStats {
    pub count: u64,
    pub secs: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// p50, p90, p99 and p999, in milliseconds.
    pub percentiles_ms: [f64; 4],
}

/// What [`measure`] found: sends both ways, then receive + ack both ways (messages/s).
pub(super) struct ProxyNumbers {
    pub remoting: SendStats,
    pub grpc: SendStats,
    pub pop_rate: f64,
    pub proxy_rate: f64,
}

impl SendStats {
    pub fn rate(&self) -> f64 {
        self.count as f64 / self.secs.max(1e-9)
    }
}

/// Runs `window` senders until `count` sends succeeded; `send(i)` performs send number i.
async fn timed_sends<F, Fut>(count: u64, window: usize, send: F) -> anyhow::Result<SendStats>
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?,
    ));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..window {
        let (next, hist, send) = (next.clone(), hist.clone(), send.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<(), anyhow::Error>(());
                }
                let t = Instant::now();
                send(i).await?;
                let us = t.elapsed().as_micros().clamp(1, 60_000_000) as u64;
                let _ = hist.lock().map(|mut h| h.record(us));
            }
        }));
    }
    for t in tasks {
        t.await.context("sender task")??;
    }
    let secs = started.elapsed().as_secs_f64();
    let h = hist.lock().map_err(|_| anyhow::anyhow!("histogram lock"))?;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(SendStats {
        count,
        secs,
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        percentiles_ms: [ms(0.5), ms(0.9), ms(0.99), ms(0.999)],
    })
}

fn report(name: &str, s: &SendStats, baseline: Option<&SendStats>) {
    let ratio = baseline
        .map(|b| {
            format!(
                " ({:.2}x the throughput, {:.2}x the p99 of Remoting)",
                s.rate() / b.rate().max(1e-9),
                s.p99_us as f64 / b.p99_us.max(1) as f64
            )
        })
        .unwrap_or_default();
    println!(
        "{name}: {} msgs in {:.2} s = {:.0} msgs/s, p50 {:.2} ms, p99 {:.2} ms{ratio}",
        s.count,
        s.secs,
        s.rate(),
        s.p50_us as f64 / 1000.0,
        s.p99_us as f64 / 1000.0
    );
}

/// ReceiveMessage + one AckMessage per batch through the proxy until `expected` were acked.
async fn drain_proxy(
    client: MessagingServiceClient<Channel>,
    topic: String,
    group: String,
    consumers: usize,
    expected: u64,
) -> anyhow::Result<u64> {
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let (mut client, topic, group, done) =
            (client.clone(), topic.clone(), group.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut idle = 0;
            while done.load(Ordering::Relaxed) < expected && idle < 5 {
                let n = receive_and_ack(&mut client, &topic, &group).await?;
                if n == 0 {
                    idle += 1;
                    continue;
                }
                idle = 0;
                done.fetch_add(n, Ordering::Relaxed);
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await.context("consumer task")??;
    }
    Ok(done.load(Ordering::Relaxed))
}

/// One ReceiveMessage (up to 32 messages, 1 s long polling) and one AckMessage of what came;
/// how many were acked.
async fn receive_and_ack(
    client: &mut MessagingServiceClient<Channel>,
    topic: &str,
    group: &str,
) -> anyhow::Result<u64> {
    let mut req = tonic::Request::new(pb::ReceiveMessageRequest {
        group: resource(group),
        message_queue: Some(pb::MessageQueue {
            topic: resource(topic),
            id: -1,
            ..pb::MessageQueue::default()
        }),
        filter_expression: Some(pb::FilterExpression {
            r#type: pb::FilterType::Tag as i32,
            expression: "*".into(),
        }),
        batch_size: 32,
        invisible_duration: Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
        auto_renew: false,
        long_polling_timeout: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
        attempt_id: None,
    });
    req.set_timeout(Duration::from_secs(10));
    let mut stream = client.receive_message(req).await?.into_inner();
    let mut entries = Vec::new();
    while let Some(item) = stream.message().await? {
        if let Some(pb::receive_message_response::Content::Message(m)) = item.content {
            let p = m.system_properties.unwrap_or_default();
            entries.push(pb::AckMessageEntry {
                message_id: p.message_id,
                receipt_handle: p.receipt_handle.unwrap_or_default(),
                lite_topic: None,
            });
        }
    }
    if entries.is_empty() {
        return Ok(0);
    }
    let n = entries.len() as u64;
    let r = client
        .ack_message(pb::AckMessageRequest {
            group: resource(group),
            topic: resource(topic),
            entries,
        })
        .await?
        .into_inner();
    if let Some(s) = r.status.filter(|s| s.code != pb::Code::Ok as i32) {
        anyhow::bail!("ack through the proxy failed: {}", s.message);
    }
    Ok(n)
}

pub async fn run(args: ProxyBenchArgs) -> anyhow::Result<()> {
    measure(&args).await.map(|_| ())
}

/// Sends over Remoting and through the proxy, then drains both ways; prints each step and
/// answers the numbers.
pub(super) async fn measure(args: &ProxyBenchArgs) -> anyhow::Result<ProxyNumbers> {
    let target = Target::messages(&args.namesrv, &args.topic, args.count);
    let queues = Arc::new(writable_queues(&api(), &target).await?);
    let tls = ClientTlsConfig {
        enable: args.proxy_tls || args.proxy_tls_trust_cert.is_some(),
        trust_cert: args.proxy_tls_trust_cert.clone(),
    }
    .load()?;
    let client = connect(&args.proxy, tls).await.with_context(|| {
        format!(
            "cannot reach the proxy at {} (is it running? pass --proxy; --proxy-tls if it serves TLS)",
            args.proxy
        )
    })?;
    let body = bytes::Bytes::from(vec![b'x'; args.size]);
    let window = args.window.max(1);

    eprintln!(
        "sending {} messages of {} bytes, {window} in flight, over Remoting",
        args.count, args.size
    );
    let cpu = CpuMeter::start(args.server_pid);
    let remoting = send_over_remoting(args, queues.clone(), body.clone()).await?;
    report("send over Remoting (baseline)", &remoting, None);
    cpu.report("send over Remoting", args.count);

    eprintln!("sending {} messages through the proxy (gRPC)", args.count);
    let run_id = rocketraft_common::time::now_ms();
    let cpu = CpuMeter::start(args.server_pid);
    let grpc = send_through_proxy(args, client.clone(), body, run_id).await?;
    report("send through the proxy (gRPC)", &grpc, Some(&remoting));
    cpu.report("send through the proxy", grpc.count);

    let mut brokers: Vec<String> = queues.iter().map(|(b, _)| b.clone()).collect();
    brokers.sort();
    brokers.dedup();
    let (pop_rate, proxy_rate) = drain_both(args, brokers, client, run_id).await?;
    Ok(ProxyNumbers {
        remoting,
        grpc,
        pop_rate,
        proxy_rate,
    })
}

/// A gRPC client of the proxy at `addr` (`host:port`), over TLS when `tls` is set: the
/// Remoting client's TLS, so it verifies (or not) as `--tls-trust-cert` does there. Its
/// writes are coalesced ([`rocketraft_common::coalesce`]) as grpc-java's are: one write for
/// the calls issued together, not one per call.
async fn connect(
    addr: &str,
    tls: Option<ClientTls>,
) -> anyhow::Result<MessagingServiceClient<Channel>> {
    let endpoint =
        Endpoint::from_shared(format!("http://{addr}"))?.connect_timeout(Duration::from_secs(5));
    let connector = ProxyConnector {
        addr: addr.to_string(),
        tls,
    };
    let channel = endpoint.connect_with_connector(connector).await?;
    Ok(MessagingServiceClient::new(channel))
}

/// Opens the proxy's connections: TCP to `addr`, then the TLS handshake if asked (HTTP/2 runs
/// inside), writes coalesced.
#[derive(Clone)]
struct ProxyConnector {
    addr: String,
    tls: Option<ClientTls>,
}

impl tonic::codegen::Service<Uri> for ProxyConnector {
    type Response = hyper_util::rt::TokioIo<Coalesced<rocketraft_remoting::tls::Transport>>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let (addr, tls) = (self.addr.clone(), self.tls.clone());
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(&addr).await?;
            tcp.set_nodelay(true)?;
            let stream = match tls {
                Some(tls) => tls.connect(tcp, &addr).await?,
                None => rocketraft_remoting::tls::Transport::Plain(tcp),
            };
            Ok(hyper_util::rt::TokioIo::new(Coalesced::new(stream)))
        })
    }
}

/// `args.count` sends of `body` straight to the brokers' `queues` over Remoting.
async fn send_over_remoting(
    args: &ProxyBenchArgs,
    queues: Arc<Vec<(String, i32)>>,
    body: bytes::Bytes,
) -> anyhow::Result<SendStats> {
    let topic = args.topic.clone();
    let api = api();
    timed_sends(args.count, args.window.max(1), move |i| {
        let (queues, topic, body, api) = (queues.clone(), topic.clone(), body.clone(), api.clone());
        async move {
            let (broker, queue_id) = &queues[i as usize % queues.len()];
            let r = api
                .send(
                    broker,
                    &SendRequest {
                        producer_group: "bench_proxy".into(),
                        topic,
                        queue_id: *queue_id,
                        body,
                        ..SendRequest::default()
                    },
                )
                .await?;
            anyhow::ensure!(r.code == 0, "send answered {}", r.code);
            Ok(())
        }
    })
    .await
}

/// `args.count` SendMessage calls of `body` through the proxy; message ids carry `run_id`.
async fn send_through_proxy(
    args: &ProxyBenchArgs,
    client: MessagingServiceClient<Channel>,
    body: bytes::Bytes,
    run_id: i64,
) -> anyhow::Result<SendStats> {
    let topic = args.topic.clone();
    let batch = args.proxy_batch.max(1) as u64;
    let calls = args.count.div_ceil(batch);
    // As many messages in flight as the Remoting baseline: `window` messages, so
    // `window / batch` calls (at least one).
    let in_flight = (args.window.max(1) / batch as usize).max(1);
    let mut stats = timed_sends(calls, in_flight, move |i| {
        let (mut client, topic, body) = (client.clone(), topic.clone(), body.clone());
        async move {
            let messages = (i * batch..(i + 1) * batch)
                .map(|n| pb::Message {
                    topic: resource(&topic),
                    user_properties: HashMap::new(),
                    system_properties: Some(pb::SystemProperties {
                        message_id: format!("BENCH{run_id:X}{n:010}"),
                        message_type: pb::MessageType::Normal as i32,
                        ..pb::SystemProperties::default()
                    }),
                    body: body.to_vec(),
                })
                .collect();
            let r = client
                .send_message(pb::SendMessageRequest { messages })
                .await?
                .into_inner();
            if let Some(s) = r.status.filter(|s| s.code != pb::Code::Ok as i32) {
                anyhow::bail!("send through the proxy failed: {}", s.message);
            }
            Ok(())
        }
    })
    .await?;
    // Rates and CPU are per message.
    stats.count = calls * batch;
    Ok(stats)
}

/// Receives and acks everything both senders sent: POP + ACK over Remoting (the baseline),
/// then ReceiveMessage + AckMessage through the proxy, each with its own group; their rates.
async fn drain_both(
    args: &ProxyBenchArgs,
    brokers: Vec<String>,
    client: MessagingServiceClient<Channel>,
    run_id: i64,
) -> anyhow::Result<(f64, f64)> {
    let total = args.count
        + args.count.div_ceil(args.proxy_batch.max(1) as u64) * args.proxy_batch.max(1) as u64;
    let consumers = args.consumers.max(1);
    let cpu = CpuMeter::start(args.server_pid);
    let (n, base_secs, base_rate) = timed_drain(super::pop::drain_pop(
        brokers,
        args.topic.clone(),
        32,
        format!("bench_proxy_pop_{run_id}"),
        consumers,
        total,
    ))
    .await?;
    println!(
        "POP + ack over Remoting, {consumers} consumers (baseline): {n} msgs in {base_secs:.2} s = {base_rate:.0} msgs/s"
    );
    cpu.report("POP + ack over Remoting", n);
    let cpu = CpuMeter::start(args.server_pid);
    let (m, secs, rate) = timed_drain(drain_proxy(
        client,
        args.topic.clone(),
        format!("bench_proxy_recv_{run_id}"),
        consumers,
        total,
    ))
    .await?;
    println!(
        "receive + ack through the proxy, {consumers} consumers: {m} msgs in {secs:.2} s = {rate:.0} msgs/s ({:.2}x the Remoting baseline)",
        rate / base_rate.max(1e-9)
    );
    cpu.report("receive + ack through the proxy", m);
    if n < total || m < total {
        anyhow::bail!("drained {n} (Remoting) and {m} (proxy) of {total} messages");
    }
    Ok((base_rate, rate))
}
