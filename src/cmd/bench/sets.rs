//! `rocketraft bench sets`: produce throughput as a topic spreads over 1, 2 and 3 broker sets,
//! measured in the same run on one cluster (issue 20's numbers).
//!
//! One cluster of `--sets` broker sets is started with `rocketraft cluster up --sets N` (one
//! controller, `--replicas` per set). The topic gets 8 queues on every master. Each measurement
//! sends the same load (producers, window, body) over the queues of the first k sets only, for
//! k = 1..=N; every round runs each k once, the order rotating from round to round so drift on a
//! shared machine hits every k alike. A set whose master does not take writes is left out of the
//! queues (the bench says so) rather than failing the run.
//!
//! On one machine the sets share its cores and disk: the numbers show what spreading costs or
//! gains there, not what separate hosts would give (each set then has its own).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{ensure, Context};
use clap::Args;

use super::replication::{start_cluster, Down};
use super::{api_signed, summary, writable_queues, AbRounds, Load, LoadResult, Target};
use crate::cmd::cluster::ClusterFile;

#[derive(Args)]
pub struct SetsBenchArgs {
    /// Working directory of the cluster (removed first, and when the bench ends).
    #[arg(long)]
    dir: PathBuf,
    /// Broker sets to start; the topic spreads over 1..=SETS of them.
    #[arg(long, default_value_t = 3)]
    sets: usize,
    /// Replicas in each set (1: masters only, so the sets' writes are all this machine does).
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    #[command(flatten)]
    rounds: AbRounds,
    /// CommitLog segment size of every broker.
    #[arg(long, default_value_t = 64 << 20)]
    segment_size: u64,
}

/// (broker address, queue id) of every writable queue.
type Queues = Vec<(String, i32)>;

/// The writable queues of the topic grouped by broker set, in the sets' order.
fn queues_by_set(
    file: &ClusterFile,
    queues: &[(String, i32)],
) -> anyhow::Result<Vec<(String, Queues)>> {
    let mut by_addr = BTreeMap::new();
    for p in &file.processes {
        by_addr.insert(format!("127.0.0.1:{}", p.ports.remoting), file.set_of(p));
    }
    let mut sets: Vec<(String, Queues)> = file
        .broker_sets()
        .into_iter()
        .map(|(name, _)| (name, Vec::new()))
        .collect();
    for (addr, qid) in queues {
        let set = by_addr
            .get(addr)
            .with_context(|| format!("a queue on {addr}, which is no broker of this cluster"))?;
        if let Some((_, qs)) = sets.iter_mut().find(|(name, _)| name == set) {
            qs.push((addr.clone(), *qid));
        }
    }
    for (name, qs) in &sets {
        if qs.is_empty() {
            eprintln!("broker set {name}: its master takes no writes; left out");
        }
    }
    sets.retain(|(_, qs)| !qs.is_empty());
    Ok(sets)
}

pub async fn run(args: SetsBenchArgs) -> anyhow::Result<()> {
    ensure!(
        (1..=26).contains(&args.sets),
        "--sets must be 1 to 26, not {}",
        args.sets
    );
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)
            .with_context(|| format!("cannot clear {}", args.dir.display()))?;
    }
    let flags: Vec<String> = [
        "--controllers".to_string(),
        "1".to_string(),
        "--sets".to_string(),
        args.sets.to_string(),
        "--replicas".to_string(),
        args.replicas.to_string(),
        "--segment-size".to_string(),
        args.segment_size.to_string(),
    ]
    .to_vec();
    eprintln!(
        "starting {} broker sets of {} replicas",
        args.sets, args.replicas
    );
    let file = start_cluster(&args.dir, &flags)?;
    let _down = Down(args.dir.clone());
    let target = Target {
        namesrv: file.namesrv_addr.clone(),
        topic: "BenchSets".to_string(),
        duration: args.rounds.duration,
        count: None,
        credentials: None,
        key_prefix: String::new(),
    };
    let all = writable_queues(&api_signed(None), &target).await?;
    let sets = queues_by_set(&file, &all)?;
    ensure!(!sets.is_empty(), "no broker set takes writes");
    // The queues of the first k sets, k = 1..=N.
    let spreads: Vec<Arc<Queues>> = (1..=sets.len())
        .map(|k| Arc::new(sets[..k].iter().flat_map(|(_, qs)| qs.clone()).collect()))
        .collect();
    let mut results: Vec<Vec<LoadResult>> = spreads.iter().map(|_| Vec::new()).collect();
    eprintln!("warming up every spread for 2 s");
    for queues in &spreads {
        let mut warm = target.clone();
        warm.duration = 2;
        args.rounds.load.run(Load::Send, &warm, queues).await?;
    }
    let n = spreads.len();
    for round in 0..args.rounds.rounds.max(1) {
        for i in 0..n {
            let k = (round + i) % n;
            eprintln!(
                "round {}: {} s of sends over {} set(s), {} queues",
                round + 1,
                args.rounds.duration,
                k + 1,
                spreads[k].len()
            );
            let result = args
                .rounds
                .load
                .run(Load::Send, &target, &spreads[k])
                .await?;
            ensure!(
                result.messages > 0,
                "no send succeeded over {} set(s)",
                k + 1
            );
            results[k].push(result);
        }
    }
    let (base, _, _) = summary(&results[0]);
    let mut line = format!(
        "sets ({}, {} replica(s) per set, {} rounds of {} s each, rotating):",
        args.rounds.load.describe(),
        args.replicas,
        args.rounds.rounds.max(1),
        args.rounds.duration
    );
    for (k, r) in results.iter().enumerate() {
        let (rate, p99, _) = summary(r);
        line.push_str(&format!(
            " {} set(s) {rate:.0} msg/s p99 {p99:.2} ms ({:.2}x);",
            k + 1,
            rate / base.max(1e-9)
        ));
    }
    println!("{}", line.trim_end_matches(';'));
    Ok(())
}
