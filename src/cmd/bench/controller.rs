//! `rocketraft bench controller`: a 3-process controller quorum on loopback (started from this
//! binary, RocksDB logs syncing every batch), measured in one run:
//!
//! 1. baseline: `CONTROLLER_GET_METADATA_INFO` round trips (answered locally, no Raft);
//! 2. writes: `CONTROLLER_ALTER_SYNC_STATE_SET` through the quorum, with 1 and with N clients
//!    (each client owns a broker set and toggles its SyncStateSet with the right epochs);
//! 3. linearizable reads: `CONTROLLER_GET_REPLICA_INFO` (ReadIndex through the leader);
//! 4. failover: kill -9 the leader and time until the next write commits.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use hdrhistogram::Histogram;
use rocketraft_controller::client::ControllerClient;
use rocketraft_controller::heartbeat::Heartbeat;
use rocketraft_controller::BrokerLiveInfo;
use rocketraft_remoting::{ClientConfig, RemotingClient};

#[derive(Args)]
pub struct ControllerBenchArgs {
    /// Directory for the three members' data (emptied first).
    #[arg(long)]
    dir: PathBuf,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Concurrent clients of the second write run.
    #[arg(long, default_value_t = 64)]
    clients: usize,
}

struct Member {
    id: u64,
    remoting: String,
    child: Option<Child>,
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(rocketraft_common::net::free_loopback_port()?)
}

fn start_quorum(dir: &Path) -> anyhow::Result<Vec<Member>> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    let ports: Vec<(u16, u16)> = (0..3)
        .map(|_| Ok((free_port()?, free_port()?)))
        .collect::<anyhow::Result<_>>()?;
    let peers = ports
        .iter()
        .enumerate()
        .map(|(i, (_, r))| format!("{}=127.0.0.1:{r}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let remoting_peers = ports
        .iter()
        .enumerate()
        .map(|(i, (p, _))| format!("{}=127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let exe = std::env::current_exe().context("locating this binary")?;
    let mut members = Vec::new();
    for (i, (port, raft_port)) in ports.iter().enumerate() {
        let id = (i + 1) as u64;
        let log = std::fs::File::create(dir.join(format!("c{id}.log")))?;
        let mut child = Command::new(&exe)
            .args(["controller", "--node-id", &id.to_string()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--raft-listen", &format!("127.0.0.1:{raft_port}")])
            .arg("--data-dir")
            .arg(dir.join(format!("c{id}")))
            .args(["--peers", &peers, "--remoting-peers", &remoting_peers])
            .args(["--threads", "2", "--log", "warn"])
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting a controller")?;
        let stdout = child.stdout.take().context("controller stdout")?;
        let line = BufReader::new(stdout)
            .lines()
            .next()
            .context("controller exited")??;
        if !line.contains("is ready") {
            bail!("controller {id}: {line}");
        }
        members.push(Member {
            id,
            remoting: format!("127.0.0.1:{port}"),
            child: Some(child),
        });
    }
    Ok(members)
}

async fn leader(c: &ControllerClient, members: &[Member]) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for (i, m) in members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.child.is_some())
        {
            if let Ok(meta) = c.metadata(&m.remoting).await {
                if meta.is_leader {
                    return Ok(i);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("no controller leader within 30 s")
}

/// One client's broker set: master 1, toggles replica 2 in and out of the SyncStateSet.
struct SetClient {
    name: String,
    master_epoch: i32,
    sss_epoch: i32,
    with_two: bool,
}

impl SetClient {
    async fn setup(c: &ControllerClient, addr: &str, name: String) -> anyhow::Result<SetClient> {
        for id in 1..=2i64 {
            let next = c.get_next_broker_id(addr, "BenchCluster", &name).await?;
            c.apply_broker_id(
                addr,
                "BenchCluster",
                &name,
                next,
                &format!("127.0.0.1:{};{id}", 40000 + id),
            )
            .await?;
            c.register_broker(
                addr,
                "BenchCluster",
                &name,
                next,
                &format!("127.0.0.1:{}", 40000 + id),
            )
            .await?;
        }
        let r = c
            .elect_master(addr, "BenchCluster", &name, Some(1), false)
            .await?;
        Ok(SetClient {
            name,
            master_epoch: r.master_epoch,
            sss_epoch: r.sync_state_set_epoch,
            with_two: false,
        })
    }

    async fn write(&mut self, c: &ControllerClient, addr: &str) -> anyhow::Result<()> {
        let set: BTreeSet<i64> = if self.with_two {
            [1].into()
        } else {
            [1, 2].into()
        };
        let (epoch, _) = c
            .alter_sync_state_set(addr, &self.name, 1, self.master_epoch, &set, self.sss_epoch)
            .await?;
        self.sss_epoch = epoch;
        self.with_two = !self.with_two;
        Ok(())
    }
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 3).context("histogram")
}

#[derive(Clone, Copy)]
enum Op {
    Ping,
    Write,
    Read,
}

/// A progress line each second (the ops `done` so far, and in the last second) until `stop`.
fn spawn_progress(
    label: &str,
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    started: Instant,
) -> tokio::task::JoinHandle<()> {
    let label = label.to_string();
    tokio::spawn(async move {
        let mut last = 0;
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = done.load(Ordering::Relaxed);
            eprintln!(
                "[{:>3.0}s] {label}: {now} ops, {} ops/s",
                started.elapsed().as_secs_f64(),
                now - last
            );
            last = now;
        }
    })
}

/// Runs `clients` loops of `op` for `secs`, with a progress line each second.
async fn measure(
    label: &str,
    op: Op,
    clients: Vec<SetClient>,
    addrs: &[String],
    secs: u64,
) -> anyhow::Result<(f64, f64, Vec<SetClient>)> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let progress = spawn_progress(label, done.clone(), stop.clone(), started);
    let mut tasks = Vec::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        let addr = addrs[i % addrs.len()].clone();
        let done = done.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let c = ControllerClient::new(
                RemotingClient::new(ClientConfig::default()),
                Duration::from_secs(10),
            );
            let mut h = histogram()?;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match op {
                    Op::Ping => {
                        c.metadata(&addr).await?;
                    }
                    Op::Write => client.write(&c, &addr).await?,
                    Op::Read => {
                        c.get_replica_info(&addr, &client.name).await?;
                    }
                }
                h.record(t.elapsed().as_micros().max(1) as u64).ok();
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok((h, client))
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = histogram()?;
    let mut back = Vec::new();
    for t in tasks {
        let (h, client) = t.await.context("bench task")??;
        total.add(&h).ok();
        back.push(client);
    }
    progress.abort();
    let elapsed = started.elapsed().as_secs_f64();
    let ops = done.load(Ordering::Relaxed) as f64 / elapsed;
    let p99 = total.value_at_quantile(0.99) as f64 / 1000.0;
    println!(
        "{label}: {ops:.0} ops/s, p50 {:.2} ms, p99 {p99:.2} ms",
        total.value_at_quantile(0.5) as f64 / 1000.0
    );
    Ok((ops, p99, back))
}

pub async fn run(args: ControllerBenchArgs) -> anyhow::Result<()> {
    let mut members = start_quorum(&args.dir)?;
    let c = ControllerClient::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(10),
    );
    let lead = leader(&c, &members).await?;
    let addrs: Vec<String> = members.iter().map(|m| m.remoting.clone()).collect();
    // Clients talk to the leader (followers forward: that adds a hop, measured separately below).
    let leader_addr = vec![addrs[lead].clone()];
    let followers: Vec<String> = addrs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != lead)
        .map(|(_, a)| a.clone())
        .collect();
    eprintln!(
        "quorum up; leader is controller {}; setting up {} broker sets",
        members[lead].id, args.clients
    );

    let mut sets = Vec::new();
    for i in 0..args.clients.max(1) {
        sets.push(SetClient::setup(&c, &leader_addr[0], format!("bench-{i}")).await?);
    }
    // Replica 2 of every set heartbeats, so it may join the SyncStateSet.
    let stop_beats = Arc::new(AtomicBool::new(false));
    let names: Vec<String> = sets.iter().map(|s| s.name.clone()).collect();
    let beats = heartbeat_replicas(addrs.clone(), names, stop_beats.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (rates, mut back) = measure_runs(sets, &leader_addr, &followers, args.duration).await?;
    let failover = time_failover(&c, &mut members[lead], back.remove(0), &followers).await?;
    stop_beats.store(true, Ordering::Relaxed);
    beats.abort();
    print_rates(&rates, failover, args.duration);
    drop(members);
    Ok(())
}

/// Heartbeats of both replicas of every broker set in `names` to every controller, every 5 s
/// until `stop`.
fn heartbeat_replicas(
    addrs: Vec<String>,
    names: Vec<String>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let c = ControllerClient::new(
            RemotingClient::new(ClientConfig::default()),
            Duration::from_secs(2),
        );
        while !stop.load(Ordering::Relaxed) {
            for name in &names {
                for id in 1..=2i64 {
                    for a in &addrs {
                        let _ = c
                            .heartbeat(
                                a,
                                &Heartbeat {
                                    cluster: "BenchCluster".into(),
                                    broker_name: name.clone(),
                                    broker_id: id,
                                    broker_addr: format!("127.0.0.1:{}", 40000 + id),
                                    timeout_ms: 60_000,
                                    info: BrokerLiveInfo::new(1, 0, 0),
                                },
                            )
                            .await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    })
}

/// Ops/s and p99 (ms) of each run, in the order of the table.
struct Rates {
    ping: (f64, f64),
    write_one: (f64, f64),
    write_n: (f64, f64),
    read_n: (f64, f64),
    forwarded: (f64, f64),
    /// The clients of the `_n` runs.
    clients: usize,
}

/// The runs of the table, `secs` each: a ping and a write by one client and writes and
/// linearizable reads by every client, all to the leader, then writes by one client through
/// a follower. Gives the clients back.
async fn measure_runs(
    mut sets: Vec<SetClient>,
    leader_addr: &[String],
    followers: &[String],
    secs: u64,
) -> anyhow::Result<(Rates, Vec<SetClient>)> {
    let one: Vec<SetClient> = sets.drain(..1).collect();
    let (ping_ops, ping_p99, one) = measure(
        "baseline GET_METADATA_INFO x1",
        Op::Ping,
        one,
        leader_addr,
        secs,
    )
    .await?;
    let (w1_ops, w1_p99, one) = measure(
        "write ALTER_SYNC_STATE_SET x1",
        Op::Write,
        one,
        leader_addr,
        secs,
    )
    .await?;
    sets.splice(0..0, one);
    let n = sets.len();
    let (wn_ops, wn_p99, back) = measure(
        &format!("write ALTER_SYNC_STATE_SET x{n}"),
        Op::Write,
        sets,
        leader_addr,
        secs,
    )
    .await?;
    let (rn_ops, rn_p99, mut back) = measure(
        &format!("linearizable read GET_REPLICA_INFO x{n}"),
        Op::Read,
        back,
        leader_addr,
        secs,
    )
    .await?;
    let mine: Vec<SetClient> = back.drain(..1).collect();
    let (fw_ops, fw_p99, back2) = measure(
        "write x1 through a follower (forwarded)",
        Op::Write,
        mine,
        followers,
        secs,
    )
    .await?;
    back.splice(0..0, back2);
    let rates = Rates {
        ping: (ping_ops, ping_p99),
        write_one: (w1_ops, w1_p99),
        write_n: (wn_ops, wn_p99),
        read_n: (rn_ops, rn_p99),
        forwarded: (fw_ops, fw_p99),
        clients: n,
    };
    Ok((rates, back))
}

/// Failover: kill -9 the leader, then write through the survivors until one commits; the time
/// from the kill to that commit.
async fn time_failover(
    c: &ControllerClient,
    leader: &mut Member,
    mut probe: SetClient,
    survivors: &[String],
) -> anyhow::Result<Duration> {
    let killed = Instant::now();
    if let Some(mut child) = leader.child.take() {
        child.kill().ok();
        child.wait().ok();
    }
    loop {
        if killed.elapsed() > Duration::from_secs(60) {
            bail!("no write committed within 60 s of killing the leader");
        }
        for a in survivors {
            if probe.write(c, a).await.is_ok() {
                return Ok(killed.elapsed());
            }
        }
    }
}

fn print_rates(rates: &Rates, failover: Duration, secs: u64) {
    let (ping_ops, ping_p99) = rates.ping;
    let n = rates.clients;
    println!();
    println!("controller quorum (3 processes, RocksDB log synced per batch), {secs} s per run:");
    println!("| run | ops/s | p99 ms | vs baseline |");
    println!("|---|---|---|---|");
    println!("| baseline GET_METADATA_INFO, 1 client | {ping_ops:.0} | {ping_p99:.2} | 1.00 |");
    let rows = [
        ("write, 1 client".to_string(), rates.write_one),
        (format!("write, {n} clients"), rates.write_n),
        (format!("linearizable read, {n} clients"), rates.read_n),
        ("write via follower, 1 client".to_string(), rates.forwarded),
    ];
    for (label, (ops, p99)) in rows {
        println!("| {label} | {ops:.0} | {p99:.2} | {:.3} |", ops / ping_ops);
    }
    println!(
        "leader killed -> next committed write: {:.2} s",
        failover.as_secs_f64()
    );
}
