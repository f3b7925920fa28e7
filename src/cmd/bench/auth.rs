//! `rocketraft bench auth`: what ACL 2.0 on the Remoting port costs a producer, measured on real
//! processes in the same run.
//!
//! Two one-broker clusters (one controller each) run side by side, started with `rocketraft
//! cluster up`: one plain, one with `--auth` (authentication and authorization on every
//! NameServer and broker). The same send load runs against each in alternating rounds (the order
//! flips every round, so drift on a shared machine hits both): unsigned against the plain
//! cluster, signed as the cluster's administrator (`DIR/on/admin-credentials`, a Super user)
//! against the other, where the broker verifies every signature (HMAC-SHA1 over the header
//! fields and the body) and looks the user up. Before measuring, an unsigned send to the
//! `--auth` cluster must be refused, so the numbers compare what they claim to.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{ensure, Context};
use clap::Args;
use rocketraft_remoting::api::SendRequest;
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::SessionCredentials;

use super::replication::{start_cluster, Down};
use super::{api_signed, summary, writable_queues, AbRounds, Load, LoadResult, Target};
use crate::cmd::cluster::{admin_credentials, ClusterFile};

#[derive(Args)]
pub struct AuthBenchArgs {
    /// Working directory (`off/` and `on/`, one cluster each; removed first).
    #[arg(long)]
    dir: PathBuf,
    #[command(flatten)]
    rounds: AbRounds,
    /// CommitLog segment size of both brokers.
    #[arg(long, default_value_t = 64 << 20)]
    segment_size: u64,
}

/// One of the two clusters: its send target and queues.
struct Side {
    label: &'static str,
    target: Target,
    queues: Arc<Vec<(String, i32)>>,
    results: Vec<LoadResult>,
}

impl Side {
    async fn new(
        label: &'static str,
        file: &ClusterFile,
        credentials: Option<SessionCredentials>,
        args: &AuthBenchArgs,
    ) -> anyhow::Result<Side> {
        let target = Target {
            namesrv: file.namesrv_addr.clone(),
            topic: "BenchAuth".to_string(),
            duration: args.rounds.duration,
            count: None,
            credentials: credentials.clone(),
            key_prefix: String::new(),
        };
        let queues = Arc::new(writable_queues(&api_signed(credentials), &target).await?);
        Ok(Side {
            label,
            target,
            queues,
            results: Vec::new(),
        })
    }

    async fn measure(&mut self, args: &AuthBenchArgs, duration: u64) -> anyhow::Result<()> {
        let mut target = self.target.clone();
        target.duration = duration;
        eprintln!("{}: {duration} s of sends", self.label);
        let result = args
            .rounds
            .load
            .run(Load::Send, &target, &self.queues)
            .await?;
        ensure!(
            result.messages > 0,
            "{}: no send succeeded (are the credentials right?)",
            self.label
        );
        self.results.push(result);
        Ok(())
    }
}

/// An unsigned send to the `--auth` cluster's broker must be refused.
async fn check_refused(side: &Side) -> anyhow::Result<()> {
    let (broker, queue_id) = side.queues[0].clone();
    let request = SendRequest {
        producer_group: "bench_auth_unsigned".to_string(),
        topic: side.target.topic.clone(),
        queue_id,
        body: bytes::Bytes::from_static(b"unsigned"),
        ..SendRequest::default()
    };
    let answer = api_signed(None).send(&broker, &request).await;
    ensure!(
        !matches!(&answer, Ok(r) if r.code == response_code::SUCCESS),
        "the --auth cluster's broker {broker} accepted an unsigned send: authentication is not on"
    );
    Ok(())
}

fn start(args: &AuthBenchArgs, name: &str, auth: bool) -> anyhow::Result<(ClusterFile, Down)> {
    let dir = args.dir.join(name);
    let mut flags: Vec<String> = [
        "--controllers",
        "1",
        "--replicas",
        "1",
        "--segment-size",
        &args.segment_size.to_string(),
    ]
    .map(String::from)
    .to_vec();
    if auth {
        flags.push("--auth".to_string());
    }
    let file = start_cluster(&dir, &flags)?;
    Ok((file, Down(dir)))
}

pub async fn run(args: AuthBenchArgs) -> anyhow::Result<()> {
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)
            .with_context(|| format!("cannot clear {}", args.dir.display()))?;
    }
    std::fs::create_dir_all(&args.dir)?;
    let (off_file, _off_guard) = start(&args, "off", false)?;
    let (on_file, _on_guard) = start(&args, "on", true)?;
    let admin = admin_credentials(&args.dir.join("on"))?
        .context("cluster up --auth wrote no admin-credentials")?;
    let mut off = Side::new("auth off, unsigned", &off_file, None, &args).await?;
    let mut on = Side::new("auth on, signed (Super user)", &on_file, Some(admin), &args).await?;
    check_refused(&on).await?;
    eprintln!("warming up both clusters for 2 s each");
    off.measure(&args, 2).await?;
    on.measure(&args, 2).await?;
    off.results.clear();
    on.results.clear();
    for (_, auth) in args.rounds.order() {
        let side = if auth { &mut on } else { &mut off };
        side.measure(&args, args.rounds.duration).await?;
    }
    let (off_rate, off_p99, _) = summary(&off.results);
    let (on_rate, on_p99, _) = summary(&on.results);
    println!(
        "auth ({}, {} rounds of {} s each, alternating): off {off_rate:.0} msg/s p99 {off_p99:.2} ms; on (signed, authentication + authorization) {on_rate:.0} msg/s p99 {on_p99:.2} ms; ratio {:.2}x throughput, {:.2}x p99",
        args.rounds.load.describe(),
        args.rounds.rounds.max(1),
        args.rounds.duration,
        on_rate / off_rate.max(1e-9),
        on_p99 / off_p99.max(1e-9)
    );
    Ok(())
}
