//! `rocketraft bench replication`: what replication costs and how fast failover is, measured on
//! real processes started with `rocketraft cluster up`.
//!
//! 1. **Send cost**: the same broker configuration alone (one replica, one controller) and as a
//!    set of 3 replicas with `min_in_sync_replicas = 2` (every in-sync replica acknowledges a
//!    send before it succeeds), the same load on both, in the same run; the ratio is the cost.
//! 2. **Failover**: kill -9 of the master while a client sends one message at a time to
//!    whichever broker says it is the master; the time from the kill to the first acknowledged
//!    send on the new master, with the default timing and with the fastest settings the safety
//!    argument allows (`--fast-*` below), a fresh cluster per trial.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rocketraft_remoting::api::{MqClientApi, SendRequest};
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::{ClientConfig, RemotingClient, RemotingCommand};

use super::{api, run_load, signing, writable_queues, Load, LoadResult, Target};
use crate::cmd::cluster::{ClusterFile, Kind};

#[derive(Args)]
pub struct ReplicationBenchArgs {
    /// Working directory (one sub-directory per cluster; removed first).
    #[arg(long)]
    dir: PathBuf,
    /// Seconds of sending per measurement.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Concurrent producers.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Sends in flight per producer.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// ASYNC_FLUSH or SYNC_FLUSH on every broker.
    #[arg(long, default_value = "ASYNC_FLUSH")]
    flush: String,
    /// Failover trials with the fast settings (each on a fresh cluster).
    #[arg(long, default_value_t = 3)]
    fast_trials: usize,
    /// Failover trials with the default settings (3 s heartbeat timeout).
    #[arg(long, default_value_t = 1)]
    default_trials: usize,
    /// Skip the send-cost part.
    #[arg(long)]
    no_throughput: bool,
    /// CommitLog segment size of every broker (each preallocates two segments).
    #[arg(long, default_value_t = 64 << 20)]
    segment_size: u64,
}

/// Tuned timing for a failover within 1.5 s on loopback, the lease argument intact
/// (docs/safety.md): heartbeats every 150 ms, a 1.2 s timeout on both sides (the master's lease
/// is 900 ms), the controller scanning every 100 ms with 50 ms Raft heartbeats (leadership
/// confirmations must be fresher than 240 ms, T_c / 5), role polling every 250 ms and
/// SyncStateSet checks every 100 ms. With 1 s, masters of a debug build on a busy 2-core machine
/// lost their lease now and then without any fault. docs/configuration.md lists them.
const FAST_CONTROLLER: &[&str] = &[
    "heartbeat_timeout_ms = 1200",
    "scan_interval_ms = 100",
    "raft.heartbeat_interval_ms = 50",
];
const FAST_BROKER: &[&str] = &[
    "controller_heartbeat_interval_ms = 150",
    "controller_heartbeat_timeout_ms = 1200",
    "sync_controller_metadata_period_ms = 250",
    "check_sync_state_set_period_ms = 100",
];

/// The heartbeat timeout of the defaults and of the fast settings, in seconds: the time a
/// failover cannot beat (the master's absence is noticed only then).
pub(super) const DEFAULT_HEARTBEAT_TIMEOUT_S: f64 = 3.0;
pub(super) const FAST_HEARTBEAT_TIMEOUT_S: f64 = 1.2;

/// How the brokers of a cluster store: `ASYNC_FLUSH`/`SYNC_FLUSH` and the CommitLog segment size.
#[derive(Clone, Copy)]
pub(super) struct Storage<'a> {
    pub flush: &'a str,
    pub segment_size: u64,
}

fn cluster_up(
    dir: &Path,
    storage: Storage<'_>,
    replicas: u16,
    controllers: u16,
    broker_extra: &[&str],
    controller_extra: &[&str],
) -> anyhow::Result<ClusterFile> {
    let mut flags: Vec<String> = [
        "--replicas",
        &replicas.to_string(),
        "--controllers",
        &controllers.to_string(),
        "--flush",
        storage.flush,
        "--segment-size",
        &storage.segment_size.to_string(),
        "--min-in-sync-replicas",
        if replicas > 1 { "2" } else { "1" },
    ]
    .map(String::from)
    .to_vec();
    for e in broker_extra {
        flags.extend(["--extra-broker-config".to_string(), e.to_string()]);
    }
    for e in controller_extra {
        flags.extend(["--extra-controller-config".to_string(), e.to_string()]);
    }
    start_cluster(dir, &flags)
}

/// `rocketraft cluster up --ports auto --dir DIR FLAGS...` with this binary; its cluster file.
pub(super) fn start_cluster(dir: &Path, flags: &[String]) -> anyhow::Result<ClusterFile> {
    let exe = std::env::current_exe().context("cannot find the rocketraft binary")?;
    let mut cmd = Command::new(exe);
    cmd.args(["cluster", "up", "--ports", "auto", "--dir"])
        .arg(dir)
        .args(flags);
    let out = cmd.output().context("cannot run `rocketraft cluster up`")?;
    if !out.status.success() {
        anyhow::bail!(
            "cluster up failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(dir.join("cluster.json"))?;
    Ok(serde_json::from_str(&text)?)
}

fn cluster_down(dir: &Path) {
    if let Ok(exe) = std::env::current_exe() {
        let _ = Command::new(exe)
            .args(["cluster", "down", "--dir"])
            .arg(dir)
            .output();
    }
}

/// Stops the cluster and removes its directory, even when the bench fails half-way.
pub(super) struct Down(pub(super) PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        cluster_down(&self.0);
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(dir = %self.0.display(), error = %e, "cannot remove the cluster directory");
        }
    }
}

fn brokers(file: &ClusterFile) -> Vec<(String, u32)> {
    file.processes
        .iter()
        .filter(|p| p.role == Kind::Broker)
        .map(|p| (format!("127.0.0.1:{}", p.ports.remoting), p.pid))
        .collect()
}

/// The size of `addr`'s SyncStateSet if it is a master with a valid lease.
async fn in_sync_members(client: &RemotingClient, addr: &str) -> Option<usize> {
    let r = client
        .invoke(
            addr,
            RemotingCommand::request(request_code::GET_BROKER_HA_STATUS),
            Duration::from_millis(500),
        )
        .await
        .ok()?;
    let s = serde_json::from_slice::<serde_json::Value>(&r.body).ok()?;
    (s["role"] == "MASTER" && s["leaseValid"] == true)
        .then(|| s["syncStateSet"].as_array().map_or(0, Vec::len))
}

/// Whether `addr` is a master with a valid lease.
async fn is_master(client: &RemotingClient, addr: &str) -> bool {
    in_sync_members(client, addr).await.is_some()
}

async fn measure(
    file: &ClusterFile,
    args: &ReplicationBenchArgs,
    label: &str,
) -> anyhow::Result<LoadResult> {
    let target = Target {
        namesrv: file.namesrv_addr.clone(),
        topic: "BenchReplication".to_string(),
        duration: args.duration,
        count: None,
        credentials: signing(),
        key_prefix: String::new(),
    };
    let queues = Arc::new(writable_queues(&api(), &target).await?);
    eprintln!("{label}: warming up 2 s, then {} s of sends", args.duration);
    let mut warm = target.clone();
    warm.duration = 2;
    run_load(
        Load::Send,
        &warm,
        &queues,
        args.size,
        args.producers,
        args.window,
    )
    .await?;
    run_load(
        Load::Send,
        &target,
        &queues,
        args.size,
        args.producers,
        args.window,
    )
    .await
}

/// kill -9 of the master, then one send at a time to whoever is master: seconds to the first ack.
async fn failover_once(file: &ClusterFile) -> anyhow::Result<f64> {
    let client = RemotingClient::new(ClientConfig::default());
    let api = MqClientApi::new(client.clone(), Duration::from_secs(3));
    let all = brokers(file);
    let message = SendRequest {
        producer_group: "bench_failover".into(),
        topic: "BenchFailover".into(),
        queue_id: 0,
        body: bytes::Bytes::from_static(b"failover"),
        ..SendRequest::default()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let (master, pid) = loop {
        let mut found = None;
        for (addr, pid) in &all {
            if is_master(&client, addr).await {
                found = Some((addr.clone(), *pid));
            }
        }
        let Some((master, pid)) = found else {
            anyhow::ensure!(Instant::now() < deadline, "no master before the kill");
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        // The topic exists and the set is fully in sync before the kill.
        let acked = loop {
            if matches!(api.send(&master, &message).await, Ok(r) if r.code == response_code::SUCCESS)
            {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        anyhow::ensure!(acked, "the master never acknowledged before the kill");
        tokio::time::sleep(Duration::from_secs(4)).await;
        // Still the master right before the kill, with every replica in its SyncStateSet: with
        // tight timing on a busy machine a master can lose its lease or be replaced without
        // any kill (a missed heartbeat timeout), killing the former master would then time
        // nothing, and a set shrunk to the master alone has nobody to elect.
        let members = in_sync_members(&client, &master).await;
        if members == Some(all.len()) {
            break (master, pid);
        }
        eprintln!(
            "failover trial: before the kill {master} is {} ; looking again",
            match members {
                Some(n) => format!("master with {n} of {} replicas in sync", all.len()),
                None => "no longer a master with a valid lease".to_string(),
            }
        );
        anyhow::ensure!(
            Instant::now() < deadline,
            "no stable master before the kill"
        );
    };
    // SAFETY: plain syscall on a PID `cluster up` started and recorded.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(120);
    loop {
        for (addr, _) in all.iter().filter(|(a, _)| *a != master) {
            if let Ok(r) = api.send(addr, &message).await {
                if r.code == response_code::SUCCESS {
                    return Ok(killed.elapsed().as_secs_f64());
                }
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no acknowledged send within 120 s of the kill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One failover trial on a fresh 3-replica cluster in `dir` (removed after): seconds from
/// kill -9 of the master to the first acknowledged send on the new one, with the fast settings
/// or the defaults.
pub(super) async fn failover_trial(
    dir: &Path,
    storage: Storage<'_>,
    fast: bool,
) -> anyhow::Result<f64> {
    let (broker, controller) = if fast {
        (FAST_BROKER, FAST_CONTROLLER)
    } else {
        (&[][..], &[][..])
    };
    // Guarded before it starts: a cluster that fails half-way up is stopped and removed too.
    let _guard = Down(dir.to_path_buf());
    let file = cluster_up(dir, storage, 3, 3, broker, controller)?;
    failover_once(&file).await
}

fn summary(label: &str, times: &[f64]) {
    if times.is_empty() {
        return;
    }
    let mut t = times.to_vec();
    t.sort_by(f64::total_cmp);
    println!(
        "failover ({label}): kill -9 to first acknowledged send: median {:.2} s, min {:.2} s, max {:.2} s over {} trial(s)",
        t[t.len() / 2],
        t[0],
        t[t.len() - 1],
        t.len()
    );
}

pub async fn run(args: ReplicationBenchArgs) -> anyhow::Result<()> {
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)
            .with_context(|| format!("cannot clear {}", args.dir.display()))?;
    }
    std::fs::create_dir_all(&args.dir)?;
    let storage = Storage {
        flush: &args.flush,
        segment_size: args.segment_size,
    };
    if !args.no_throughput {
        let alone_dir = args.dir.join("alone");
        let alone = cluster_up(&alone_dir, storage, 1, 1, &[], &[])?;
        let guard = Down(alone_dir);
        let a = measure(&alone, &args, "one broker alone").await?;
        drop(guard);
        let set_dir = args.dir.join("replicated");
        let set = cluster_up(&set_dir, storage, 3, 3, &[], &[])?;
        let guard = Down(set_dir);
        let r = measure(&set, &args, "3 replicas, min_in_sync_replicas = 2").await?;
        drop(guard);
        let rate = |x: &LoadResult| x.messages as f64 / x.seconds.max(1e-9);
        println!(
            "sends ({} B, {} producer(s) x {} in flight, {}): alone {:.0} msg/s p99 {:.2} ms; 3 replicas (all in sync ack) {:.0} msg/s p99 {:.2} ms; ratio {:.2}x throughput, {:.2}x p99",
            args.size,
            args.producers,
            args.window,
            args.flush,
            rate(&a),
            a.p99_ms,
            rate(&r),
            r.p99_ms,
            rate(&r) / rate(&a).max(1e-9),
            r.p99_ms / a.p99_ms.max(1e-9)
        );
    }
    let mut fast = Vec::new();
    for trial in 0..args.fast_trials {
        let dir = args.dir.join(format!("fast-{trial}"));
        let t = failover_trial(&dir, storage, true).await?;
        eprintln!("failover trial {trial} (fast settings): {t:.2} s");
        fast.push(t);
    }
    let mut default = Vec::new();
    for trial in 0..args.default_trials {
        let dir = args.dir.join(format!("default-{trial}"));
        let t = failover_trial(&dir, storage, false).await?;
        eprintln!("failover trial {trial} (default settings): {t:.2} s");
        default.push(t);
    }
    summary(
        &format!(
            "fast: {} / controller {}",
            FAST_BROKER.join(", "),
            FAST_CONTROLLER.join(", ")
        ),
        &fast,
    );
    summary(
        "defaults: 300 ms heartbeats, 3 s timeout, 250 ms scans, 200 ms SyncStateSet checks",
        &default,
    );
    Ok(())
}
