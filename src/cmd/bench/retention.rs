//! `rocketraft bench retention`: what deleting expired files costs a producer, in one run.
//!
//! A `rocketraft dev` process runs with small segments, a reserved time of one second and no
//! delete hour, so nothing is deleted unless asked. The same send load then runs in alternating
//! rounds (the order flips every round, so drift on a shared machine hits both): in a
//! *deleting* round DELETE_EXPIRED_COMMITLOG is sent every second, so the cleaner deletes every
//! expired segment (and the ConsumeQueue files behind it) while the producer sends; in a *quiet*
//! round nothing is deleted. The broker's `segmentsDeleted` counter is read around each round,
//! so the numbers compare what they claim to (a deleting round that deleted nothing fails the
//! bench).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use clap::Args;
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::RemotingCommand;

use super::{api, summary, writable_queues, AbRounds, Load, Target};

#[derive(Args)]
pub struct RetentionBenchArgs {
    /// Working directory for the dev process's data (removed first and at the end).
    #[arg(long)]
    dir: PathBuf,
    #[command(flatten)]
    rounds: AbRounds,
    /// CommitLog segment size of the broker.
    #[arg(long, default_value_t = 4 << 20)]
    segment_size: u64,
}

/// The dev process, killed and its directory removed when dropped (even on failure).
pub(super) struct DevProcess {
    child: Child,
    dir: PathBuf,
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove the bench directory");
        }
    }
}

pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(rocketraft_common::net::free_loopback_port()?)
}

fn start_dev(args: &RetentionBenchArgs) -> anyhow::Result<(DevProcess, String, String)> {
    let store_root = args.dir.join("broker");
    let config = format!(
        "[broker]\n[broker.store]\nstore_root = {:?}\ncommitlog_segment_size = {}\nfile_reserved_time_secs = 1\ndelete_when = \"\"\nclean_resource_interval_ms = 200\ndelete_commit_log_files_interval_ms = 20\n",
        store_root.display().to_string(),
        args.segment_size
    );
    spawn_dev(&args.dir, Some(&config), &["--no-proxy"])
}

/// Starts `rocketraft dev` with its data in `dir` (emptied first, removed when the process is
/// dropped), `config` as its dev.toml, free loopback ports and `extra` flags; returns it with
/// its NameServer and broker addresses once it is ready.
pub(super) fn spawn_dev(
    dir: &std::path::Path,
    config: Option<&str>,
    extra: &[&str],
) -> anyhow::Result<(DevProcess, String, String)> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    let (namesrv_port, broker_port) = (free_port()?, free_port()?);
    let exe = std::env::current_exe().context("cannot find the rocketraft binary")?;
    let mut command = Command::new(exe);
    command.arg("dev");
    if let Some(text) = config {
        let path = dir.join("dev.toml");
        std::fs::write(&path, text)?;
        command.arg("--config").arg(path);
    }
    let mut child = command
        .arg("--data-dir")
        .arg(dir)
        .args(["--namesrv-listen", &format!("127.0.0.1:{namesrv_port}")])
        .args(["--broker-listen", &format!("127.0.0.1:{broker_port}")])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start rocketraft dev")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let dev = DevProcess {
        child,
        dir: dir.to_path_buf(),
    };
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first)?;
    if !first.contains("is ready") {
        bail!("rocketraft dev did not start: {first:?}");
    }
    Ok((
        dev,
        format!("127.0.0.1:{namesrv_port}"),
        format!("127.0.0.1:{broker_port}"),
    ))
}

async fn segments_deleted(broker: &str) -> anyhow::Result<i64> {
    let r = api()
        .remoting()
        .invoke(
            broker,
            RemotingCommand::request(request_code::GET_BROKER_RUNTIME_INFO),
            Duration::from_secs(5),
        )
        .await?;
    ensure!(r.code == response_code::SUCCESS, "runtime info refused");
    let v: serde_json::Value = serde_json::from_slice(&r.body)?;
    v["table"]["segmentsDeleted"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .context("no segmentsDeleted in the runtime info")
}

pub async fn run(args: RetentionBenchArgs) -> anyhow::Result<()> {
    let (_dev, namesrv, broker) = start_dev(&args)?;
    let target = Target {
        namesrv,
        topic: "BenchRetention".to_string(),
        duration: args.rounds.duration,
        count: None,
        credentials: None,
        key_prefix: String::new(),
    };
    let queues = Arc::new(writable_queues(&api(), &target).await?);
    let load = args.rounds.load;
    // Something to delete from the first deleting round on.
    eprintln!("warm-up: {} s of sends", target.duration);
    load.run(Load::Send, &target, &queues).await?;
    let (mut quiet, mut deleting) = (Vec::new(), Vec::new());
    let mut deleted_while_deleting = 0;
    for (round, delete) in args.rounds.order() {
        let before = segments_deleted(&broker).await?;
        if delete {
            eprintln!(
                "round {round}: {} s of sends while deleting",
                target.duration
            );
            let b = broker.clone();
            let asker = tokio::spawn(async move {
                loop {
                    let _ = api()
                        .remoting()
                        .invoke(
                            &b,
                            RemotingCommand::request(request_code::DELETE_EXPIRED_COMMITLOG),
                            Duration::from_secs(5),
                        )
                        .await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
            let r = load.run(Load::Send, &target, &queues).await;
            asker.abort();
            deleting.push(r?);
            // The manual request lasts 20 cleaning rounds (4 s): let it run out before a quiet
            // round.
            tokio::time::sleep(Duration::from_secs(5)).await;
            let n = segments_deleted(&broker).await? - before;
            eprintln!("  {n} segments deleted");
            deleted_while_deleting += n;
        } else {
            eprintln!(
                "round {round}: {} s of sends, nothing deleted",
                target.duration
            );
            quiet.push(load.run(Load::Send, &target, &queues).await?);
            let n = segments_deleted(&broker).await? - before;
            ensure!(n == 0, "{n} segments were deleted during a quiet round");
        }
    }
    ensure!(
        deleted_while_deleting > 0,
        "no segment was deleted during the deleting rounds; nothing was measured"
    );
    let (q_rate, q_p99, _) = summary(&quiet);
    let (d_rate, d_p99, _) = summary(&deleting);
    println!(
        "{}, nothing deleted: {q_rate:.0} msgs/s, p99 {q_p99:.3} ms; while deleting ({deleted_while_deleting} segments of {} MiB): {d_rate:.0} msgs/s ({:.2}x), p99 {d_p99:.3} ms ({:.2}x)",
        load.describe(),
        args.segment_size >> 20,
        d_rate / q_rate.max(1e-9),
        d_p99 / q_p99.max(1e-9)
    );
    Ok(())
}
