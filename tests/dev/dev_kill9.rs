//! `rocketraft dev` as a real process: sustained SYNC_FLUSH sends across segment rolls, `kill -9`,
//! restart, and every acknowledged message is there, in order, at the same queue offset. Also the
//! admin CLI against the running process.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketraft_common::consts::pull_sys_flag;
use rocketraft_remoting::api::{MqClientApi, PullRequest, PullStatus, SendRequest};
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{ClientConfig, RemotingClient};

use crate::support::{admin, free_port, Dev};

const DEV_FLAGS: &[&str] = &[
    "--flush",
    "SYNC_FLUSH",
    "--segment-size",
    "1048576",
    "--no-auto-create-topic",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_sync_flush_sends_loses_no_acknowledged_message() {
    let _turn = crate::support::file_turn(module_path!());
    let data = tempfile::tempdir().expect("tempdir");
    let (namesrv_port, broker_port) = (free_port(), free_port());
    let mut dev = Dev::start(data.path(), namesrv_port, broker_port, DEV_FLAGS);

    // The admin CLI creates the topic and sees it.
    let out = admin(&dev.namesrv, &["topic", "create", "Crash", "--queues", "4"]);
    assert!(out.contains("created topic Crash"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = admin(&dev.namesrv, &["topic", "list"]);
        if out.lines().any(|l| l == "Crash") {
            break;
        }
        assert!(Instant::now() < deadline, "topic never listed: {out}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let route = admin(&dev.namesrv, &["topic", "route", "Crash"]);
    assert!(route.contains(&dev.broker), "{route}");
    let clusters = admin(&dev.namesrv, &["cluster", "list"]);
    assert!(
        clusters.contains("DefaultCluster") && clusters.contains("broker-a"),
        "{clusters}"
    );

    // Sustained sends from 8 concurrent senders, each recording what was acknowledged.
    let api = MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(5),
    );
    let acked: Arc<Mutex<Vec<(i32, i64, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for sender in 0..8 {
        let api = api.clone();
        let acked = acked.clone();
        let stop = stop.clone();
        let broker = dev.broker.clone();
        senders.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let body = format!("s{sender}-n{n}-{}", "p".repeat(900));
                let queue_id = sender % 4;
                let request = SendRequest {
                    producer_group: "crash".into(),
                    topic: "Crash".into(),
                    queue_id,
                    body: Bytes::from(body.clone()),
                    ..SendRequest::default()
                };
                match api.send(&broker, &request).await {
                    Ok(r) if r.code == response_code::SUCCESS => {
                        acked
                            .lock()
                            .expect("lock")
                            .push((r.queue_id, r.queue_offset, body));
                    }
                    // The process died under us: outcome unknown, not acknowledged.
                    _ => break,
                }
                n += 1;
            }
        }));
    }
    // Past at least three 1 MiB segment rolls (about 1 KiB per record).
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.lock().expect("lock").len() < 3_500 {
        assert!(Instant::now() < deadline, "sends too slow");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // SIGKILL with sends in flight.
    dev.child.kill().expect("kill -9");
    dev.child.wait().expect("reap");
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        let _ = s.await;
    }
    let acked = acked.lock().expect("lock").clone();
    let segments = std::fs::read_dir(data.path().join("broker").join("commitlog"))
        .expect("commitlog dir")
        .count();
    assert!(
        segments >= 4,
        "the test crossed segment rolls ({segments} segments)"
    );

    let mut dev = Dev::start(data.path(), namesrv_port, broker_port, DEV_FLAGS);
    let fresh = MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(5),
    );
    for queue_id in 0..4 {
        let mut expected: Vec<(i64, String)> = acked
            .iter()
            .filter(|(q, _, _)| *q == queue_id)
            .map(|(_, o, b)| (*o, b.clone()))
            .collect();
        expected.sort();
        let mut stored = std::collections::BTreeMap::new();
        let mut offset = 0;
        loop {
            let pull = PullRequest {
                consumer_group: "verify".into(),
                topic: "Crash".into(),
                queue_id,
                queue_offset: offset,
                max_msg_nums: 32,
                sys_flag: pull_sys_flag::SUBSCRIPTION,
                commit_offset: -1,
                suspend_timeout_ms: 0,
                subscription: Some("*".into()),
            };
            let r = fresh
                .pull(&dev.broker, &pull)
                .await
                .expect("pull after restart");
            if r.status != PullStatus::Found {
                break;
            }
            for m in r.messages {
                stored.insert(m.queue_offset, String::from_utf8_lossy(&m.body).to_string());
            }
            offset = r.next_begin_offset;
        }
        // Queue offsets are dense from 0: the stored queue is exactly 0..n.
        let offsets: Vec<i64> = stored.keys().copied().collect();
        assert_eq!(
            offsets,
            (0..stored.len() as i64).collect::<Vec<_>>(),
            "queue {queue_id} has holes"
        );
        for (o, body) in &expected {
            assert_eq!(
                stored.get(o),
                Some(body),
                "queue {queue_id} lost acknowledged offset {o}"
            );
        }
        // Per-sender order within the queue is preserved.
        let mut last_n: std::collections::HashMap<String, u64> = Default::default();
        for body in stored.values() {
            let mut parts = body.split('-');
            let sender = parts.next().unwrap_or_default().to_string();
            let n: u64 = parts
                .next()
                .and_then(|p| p.trim_start_matches('n').parse().ok())
                .expect("n");
            if let Some(prev) = last_n.insert(sender.clone(), n) {
                assert!(n > prev, "sender {sender} out of order in queue {queue_id}");
            }
        }
    }
    // The restarted broker keeps taking writes after the recovered tail.
    let r = fresh
        .send(
            &dev.broker,
            &SendRequest {
                producer_group: "crash".into(),
                topic: "Crash".into(),
                queue_id: 0,
                body: Bytes::from_static(b"after"),
                ..SendRequest::default()
            },
        )
        .await
        .expect("send after restart");
    assert_eq!(r.code, response_code::SUCCESS);

    // A clean stop with SIGTERM.
    sigterm(dev.child.id());
    let status = dev.child.wait().expect("wait");
    assert!(
        status.success(),
        "SIGTERM shutdown exits cleanly: {status:?}"
    );
}

fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
}

#[test]
fn bench_produce_and_consume_run_against_dev() {
    let _turn = crate::support::file_turn(module_path!());
    let data = tempfile::tempdir().expect("tempdir");
    let (namesrv_port, broker_port) = (free_port(), free_port());
    let mut dev = Dev::start(data.path(), namesrv_port, broker_port, DEV_FLAGS);
    let bench = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_rocketraft"))
            .arg("bench")
            .args(args)
            .args(["--namesrv", &dev.namesrv, "--topic", "BenchSmoke"])
            .output()
            .expect("run bench");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "bench {args:?} failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    // The topic does not exist yet (auto creation is off): the bench creates it.
    let produced = bench(&[
        "produce",
        "--count",
        "300",
        "--window",
        "16",
        "--size",
        "512",
        "--duration",
        "60",
        "--baseline-secs",
        "1",
    ]);
    assert!(produced.contains("produce: 300 msgs"), "{produced}");
    assert!(produced.contains("errors 0"), "{produced}");
    assert!(produced.contains("latency: p50"), "{produced}");
    assert!(
        produced.contains("baseline (GET_MAX_OFFSET round trip)"),
        "{produced}"
    );
    let consumed = bench(&["consume", "--duration", "30"]);
    assert!(consumed.contains("consume: 300 msgs"), "{consumed}");
    let _ = dev.child.kill();
    let _ = dev.child.wait();
}
