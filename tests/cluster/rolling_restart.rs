//! `rocketraft cluster restart --rolling` under load (issue 20 item 5): a cluster of three
//! controllers, two NameServers and one broker set of three replicas takes a steady stream of
//! sends over Remoting ([`TopicProducer`]) while every process restarts one at a time:
//! controllers (the leader after handing its leadership over), NameServers, the two slaves,
//! then a master transfer to an in-sync slave and the old master. Afterwards every process runs
//! under a new PID, every acknowledged message is read back from the new master, and the
//! longest stretch without a successful send stays under [`SEND_GAP_BOUND`], the window
//! docs/operations.md documents.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketraft_remoting::api::{MqClientApi, SendRequest};
use rocketraft_remoting::api_produce::TopicProducer;
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{ClientConfig, RemotingClient};

use crate::{create_topic, pull_all, UpCluster};

const TOPIC: &str = "RollingRestart";

/// The longest time without a successful send a rolling restart may cause (docs/operations.md,
/// "Rolling restart"): a master transfer (the election, the new master's NameServer
/// registration, the client's next route read) or a slave leaving the SyncStateSet (the master
/// holds its sends until it drops the slave: `ha_max_time_slave_not_catchup_ms`, 2 s, at the
/// most) each take a few seconds. Measured here at well under this.
const SEND_GAP_BOUND: Duration = Duration::from_secs(6);

/// What the sender saw.
#[derive(Default)]
struct Sends {
    acked: BTreeSet<String>,
    failed: usize,
    /// The longest time between two successful sends, and when it ended (since the start).
    longest_gap: Duration,
    gap_ended_at: Duration,
}

/// Sends until `stop`, one message at a time, recording what was acknowledged.
async fn send_until(producer: TopicProducer, stop: Arc<AtomicBool>, sends: Arc<Mutex<Sends>>) {
    let started = Instant::now();
    let mut last_ok = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let body = format!("M-{n:06}");
        n += 1;
        let request = SendRequest {
            producer_group: "rolling-producer".to_string(),
            topic: TOPIC.to_string(),
            body: Bytes::from(body.clone()),
            ..SendRequest::default()
        };
        let ok = matches!(
            producer.send(&request, None).await,
            Ok((_, _, r)) if r.code == response_code::SUCCESS
        );
        {
            let mut s = sends.lock().unwrap_or_else(|e| e.into_inner());
            if ok {
                let gap = last_ok.elapsed();
                if gap > s.longest_gap {
                    s.longest_gap = gap;
                    s.gap_ended_at = started.elapsed();
                }
                last_ok = Instant::now();
                s.acked.insert(body);
            } else {
                s.failed += 1;
            }
        }
        // Paced: a few thousand messages show the gaps as well as a flood would, and leave
        // the two cores to the restarts.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// name -> pid of every process, from `cluster status`.
fn pids(cluster: &UpCluster) -> Vec<(String, i64, bool)> {
    cluster
        .status()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_string(),
                r["pid"].as_i64().unwrap_or_default(),
                r["alive"].as_bool().unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_load_loses_nothing_and_keeps_sends_flowing() {
    let _turn = crate::support::file_turn(module_path!());
    let started = Instant::now();
    let cluster = UpCluster::default();
    cluster.up_quick(&[
        "--controllers",
        "3",
        "--replicas",
        "3",
        "--namesrvs",
        "2",
        // A NameServer restarted empty is complete again after one registration.
        "--extra-broker-config",
        "register_interval_ms = 2000",
    ]);
    let namesrv = cluster.namesrv();
    create_topic(&namesrv, TOPIC, "4", &[]).await;
    let before = pids(&cluster);
    assert_eq!(before.len(), 8, "{before:?}");
    assert!(before.iter().all(|(_, _, alive)| *alive), "{before:?}");
    let up_took = started.elapsed();

    let api = MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(5),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sends = Arc::new(Mutex::new(Sends::default()));
    let sender = tokio::spawn(send_until(
        TopicProducer::new(api.clone(), &namesrv),
        stop.clone(),
        sends.clone(),
    ));
    // Some traffic before the restart begins.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let dir = cluster.dir().to_string();
    let restart_started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_rocketraft"))
            .args([
                "cluster",
                "restart",
                "--rolling",
                "--dir",
                &dir,
                "--timeout-secs",
                "60",
            ])
            .output()
            .expect("cluster restart")
    })
    .await
    .expect("join");
    let restart_took = restart_started.elapsed();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let logged = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "cluster restart --rolling failed:\n{said}\n{logged}"
    );
    assert!(said.contains("rolling restart"), "{said}");
    // Its progress: the leader handed over, a new master elected, every process restarted.
    for line in [
        "handing controller leadership over",
        "NameServer complete again",
        "slave back in sync",
        "new master takes writes",
        "broker set whole again",
    ] {
        assert!(logged.contains(line), "no {line:?} in its log:\n{logged}");
    }
    // A little traffic after it, then stop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    sender.await.expect("sender");

    // Every process runs, each under a new PID.
    let after = pids(&cluster);
    assert_eq!(after.len(), before.len(), "{after:?}");
    for ((name, old, _), (name2, new, alive)) in before.iter().zip(&after) {
        assert_eq!(name, name2);
        assert!(*alive, "{name} is not running after the restart: {after:?}");
        assert_ne!(old, new, "{name} was not restarted");
    }

    // Nothing acknowledged is lost.
    let s = std::mem::take(&mut *sends.lock().unwrap_or_else(|e| e.into_inner()));
    let stored = pull_all(&api, &namesrv, TOPIC, "rolling-verify").await;
    let lost: Vec<&String> = s
        .acked
        .iter()
        .filter(|b| !stored.contains_key(*b))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged messages not stored after the rolling restart: {:?}",
        lost.len(),
        s.acked.len(),
        &lost[..lost.len().min(20)]
    );
    eprintln!(
        "rolling restart took {restart_took:?} (cluster up {up_took:?}); {} sends acknowledged, {} failed; longest send gap {:?} (ended {:?} after the sender started); test took {:?}",
        s.acked.len(),
        s.failed,
        s.longest_gap,
        s.gap_ended_at,
        started.elapsed()
    );
    assert!(s.acked.len() > 100, "too few sends: {}", s.acked.len());
    assert!(
        s.longest_gap < SEND_GAP_BOUND,
        "a send gap of {:?} during the rolling restart (bound {SEND_GAP_BOUND:?}); its log:\n{logged}",
        s.longest_gap
    );
}
