//! `rocketraft bench metrics`: what metrics cost a producer, in one run.
//!
//! Two `rocketraft dev` processes run side by side: one serves metrics (`--metrics-listen`,
//! every request's latency recorded) and is scraped every second as Prometheus would; the other
//! runs with `--no-metrics`. The same send load then runs against each in alternating rounds
//! (the order flips every round, so drift on a shared machine hits both; only one process is
//! loaded at a time). The broker's event counters (messages and bytes in and out) are kept in
//! both, as GET_BROKER_RUNTIME_INFO needs them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context};
use clap::Args;

use super::retention::{free_port, spawn_dev};
use super::{api, summary, writable_queues, AbRounds, Load, Target};

#[derive(Args)]
pub struct MetricsBenchArgs {
    /// Working directory for the two dev processes' data (removed first and at the end).
    #[arg(long)]
    dir: PathBuf,
    #[command(flatten)]
    rounds: AbRounds,
    /// How often the metrics-on process is scraped, in milliseconds (0: never).
    #[arg(long, default_value_t = 1000)]
    scrape_interval_ms: u64,
}

/// One scrape of `addr`'s `/metrics`: its size in bytes.
async fn scrape(addr: &str) -> anyhow::Result<usize> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut body = Vec::new();
    stream.read_to_end(&mut body).await?;
    ensure!(
        body.starts_with(b"HTTP/1.1 200"),
        "the metrics endpoint answered {:?}",
        String::from_utf8_lossy(&body[..body.len().min(40)])
    );
    Ok(body.len())
}

pub async fn run(args: MetricsBenchArgs) -> anyhow::Result<()> {
    let metrics_addr = format!("127.0.0.1:{}", free_port()?);
    let (_on, on_namesrv, _) = spawn_dev(
        &args.dir.join("on"),
        None,
        &["--no-proxy", "--metrics-listen", &metrics_addr],
    )?;
    let (_off, off_namesrv, _) =
        spawn_dev(&args.dir.join("off"), None, &["--no-proxy", "--no-metrics"])?;
    let bytes = scrape(&metrics_addr)
        .await
        .context("the metrics-on process does not serve /metrics")?;
    let interval = args.scrape_interval_ms;
    eprintln!("metrics on: {metrics_addr}/metrics ({bytes} bytes), scraped every {interval} ms");
    let scraper = {
        let addr = metrics_addr.clone();
        tokio::spawn(async move {
            if interval == 0 {
                return;
            }
            loop {
                if let Err(e) = scrape(&addr).await {
                    tracing::warn!(error = %e, "scrape failed");
                }
                tokio::time::sleep(Duration::from_millis(interval)).await;
            }
        })
    };
    let target = |namesrv: &str| Target {
        namesrv: namesrv.to_string(),
        topic: "BenchMetrics".to_string(),
        duration: args.rounds.duration,
        count: None,
        credentials: None,
        key_prefix: String::new(),
    };
    let (on_target, off_target) = (target(&on_namesrv), target(&off_namesrv));
    let on_queues = Arc::new(writable_queues(&api(), &on_target).await?);
    let off_queues = Arc::new(writable_queues(&api(), &off_target).await?);
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for (round, metrics) in args.rounds.order() {
        let (label, t, q) = if metrics {
            ("metrics on", &on_target, &on_queues)
        } else {
            ("metrics off", &off_target, &off_queues)
        };
        eprintln!(
            "round {round}: {} s of sends, {label}",
            args.rounds.duration
        );
        let r = args.rounds.load.run(Load::Send, t, q).await?;
        if metrics {
            on.push(r)
        } else {
            off.push(r)
        }
    }
    scraper.abort();
    let (on_rate, on_p99, _) = summary(&on);
    let (off_rate, off_p99, _) = summary(&off);
    println!(
        "{}, metrics off: {off_rate:.0} msgs/s, p99 {off_p99:.3} ms; metrics on (scraped every {interval} ms): {on_rate:.0} msgs/s ({:.3}x), p99 {on_p99:.3} ms ({:.2}x)",
        args.rounds.load.describe(),
        on_rate / off_rate.max(1e-9),
        on_p99 / off_p99.max(1e-9)
    );
    Ok(())
}
