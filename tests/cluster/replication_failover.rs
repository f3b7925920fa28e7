//! Controller mode with real processes on loopback: a `rocketraft namesrv` with the controller
//! embedded and three `rocketraft broker` processes of one broker set (minInSyncReplicas = 2).
//! kill -9 of the master under sustained sends, the old master rejoining as a slave (also when
//! killed in the middle of its truncation), a master killed while rolling a segment, a slave
//! killed mid-stream that falls several segments behind, and a slave with a corrupted tail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketraft_remoting::api::{PullRequest, PullStatus, SendRequest};
use rocketraft_remoting::codes::response_code;

use crate::procs::{api, find_master, status, BrokerProc, NameSrv, BROKER_SEGMENT};

const TOPIC: &str = "Failover";

/// On a failing test, copies the run's directory (logs, stores) to /tmp for inspection.
struct KeepOnPanic(PathBuf);

impl Drop for KeepOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let to = std::env::temp_dir().join(format!(
                "rr-failover-kept-{}",
                self.0.file_name().and_then(|n| n.to_str()).unwrap_or("run")
            ));
            let _ = Command::new("cp").arg("-r").arg(&self.0).arg(&to).status();
            eprintln!("run directory kept at {}", to.display());
        }
    }
}
const SEGMENT: u64 = BROKER_SEGMENT;

async fn wait_status(
    what: &str,
    addr: &str,
    limit: Duration,
    f: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = status(addr).await {
            if f(&s) {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn message(i: u64) -> SendRequest {
    SendRequest {
        producer_group: "pg".to_string(),
        topic: TOPIC.to_string(),
        queue_id: (i % 2) as i32,
        body: Bytes::from(format!("m{i:08}-{}", "p".repeat(400))),
        properties: BTreeMap::new(),
        ..SendRequest::default()
    }
}

#[derive(Default)]
struct Acked {
    /// (queue, queue offset, message number)
    list: Vec<(i32, i64, u64)>,
}

/// Sends until `stop`, always to the broker that says it is the master.
async fn sender(
    addrs: Vec<String>,
    acked: Arc<Mutex<Acked>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    start: u64,
) -> u64 {
    let api = api();
    let mut i = start;
    let mut target: Option<String> = None;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let Some(addr) = target.clone() else {
            for a in &addrs {
                if let Some(s) = status(a).await {
                    if s["role"] == "MASTER" && s["leaseValid"] == true {
                        target = Some(a.clone());
                    }
                }
            }
            if target.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            continue;
        };
        match api.send(&addr, &message(i)).await {
            Ok(r) if r.code == response_code::SUCCESS => {
                acked
                    .lock()
                    .expect("lock")
                    .list
                    .push((r.queue_id, r.queue_offset, i));
                i += 1;
            }
            Ok(_) => i += 1,
            Err(_) => {
                target = None;
                i += 1;
            }
        }
    }
    i
}

/// Every acknowledged message is readable from `addr` at its queue offset, and each queue holds
/// acknowledged messages in send order.
async fn verify_acked(addr: &str, acked: &[(i32, i64, u64)]) {
    let api = api();
    let mut by_queue: BTreeMap<i32, BTreeMap<i64, u64>> = BTreeMap::new();
    for (q, off, i) in acked {
        by_queue.entry(*q).or_default().insert(*off, *i);
    }
    for (q, want) in by_queue {
        let mut offset = 0;
        let mut seen: BTreeMap<i64, u64> = BTreeMap::new();
        let last = *want.keys().last().expect("non-empty");
        while offset <= last {
            let r = api
                .pull(
                    addr,
                    &PullRequest {
                        consumer_group: "verify".into(),
                        topic: TOPIC.into(),
                        queue_id: q,
                        queue_offset: offset,
                        max_msg_nums: 32,
                        sys_flag: rocketraft_common::consts::pull_sys_flag::SUBSCRIPTION,
                        commit_offset: 0,
                        suspend_timeout_ms: 0,
                        subscription: Some("*".into()),
                    },
                )
                .await
                .expect("pull");
            assert_eq!(
                r.status,
                PullStatus::Found,
                "queue {q} offset {offset} not readable (max {})",
                r.max_offset
            );
            for m in &r.messages {
                let body = String::from_utf8_lossy(&m.message.body);
                let n: u64 = body[1..9].parse().expect("message number");
                seen.insert(m.queue_offset, n);
            }
            offset = r.next_begin_offset;
        }
        for (off, i) in &want {
            assert_eq!(
                seen.get(off),
                Some(i),
                "acked message {i} at queue {q} offset {off}"
            );
        }
        let order: Vec<u64> = seen.values().copied().collect();
        let acked_order: Vec<u64> = order
            .iter()
            .copied()
            .filter(|n| want.values().any(|w| w == n))
            .collect();
        assert!(
            acked_order.windows(2).all(|w| w[0] < w[1]),
            "queue {q} out of order"
        );
    }
}

fn read_log(dir: &Path, upto: u64) -> Vec<u8> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("commitlog dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 20)
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        out.extend(std::fs::read(f).expect("segment"));
        if out.len() as u64 >= upto {
            break;
        }
    }
    out.truncate(upto as usize);
    out
}

/// After a graceful stop of both, the two CommitLogs hold the same bytes up to `upto`.
fn same_bytes(a: &BrokerProc, b: &BrokerProc, upto: u64) {
    let x = read_log(&a.commitlog(), upto);
    let y = read_log(&b.commitlog(), upto);
    assert_eq!(x.len() as u64, upto, "log a shorter than {upto}");
    assert_eq!(y.len() as u64, upto, "log b shorter than {upto}");
    if let Some(at) = x.iter().zip(&y).position(|(p, q)| p != q) {
        panic!("the CommitLogs differ at byte {at} (of {upto})");
    }
}

fn start_cluster(root: &Path, extra: &str) -> (NameSrv, Vec<BrokerProc>) {
    let ns = NameSrv::start(&root.join("namesrv"));
    let mut brokers: Vec<BrokerProc> = (0..3)
        .map(|i| BrokerProc::new(root, i, &ns.addr, extra))
        .collect();
    for b in &mut brokers {
        b.start(None);
    }
    (ns, brokers)
}

async fn all_in_sync(master: &BrokerProc) {
    wait_status(
        "3 in-sync replicas",
        &master.addr(),
        Duration::from_secs(30),
        |s| s["syncStateSet"].as_array().is_some_and(|a| a.len() == 3),
    )
    .await;
}

async fn caught_up(slave: &BrokerProc, master: &BrokerProc) -> u64 {
    let end = status(&master.addr()).await.expect("master status")["maxPhyOffset"]
        .as_i64()
        .expect("offset");
    wait_status(
        "a slave caught up",
        &slave.addr(),
        Duration::from_secs(30),
        |s| s["role"] == "SLAVE" && s["maxPhyOffset"].as_i64() == Some(end),
    )
    .await;
    end as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_master_under_load_then_old_master_rejoins() {
    let _turn = crate::support::file_turn(module_path!());
    let dir = tempfile::Builder::new()
        .prefix("rr-failover")
        .tempdir()
        .expect("tempdir");
    let _keep = KeepOnPanic(dir.path().to_path_buf());
    let (_ns, mut brokers) = start_cluster(dir.path(), "");
    let m = find_master(&brokers, Duration::from_secs(30)).await;
    all_in_sync(&brokers[m]).await;

    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addrs: Vec<String> = brokers.iter().map(BrokerProc::addr).collect();
    let send = tokio::spawn(sender(addrs.clone(), acked.clone(), stop.clone(), 0));
    // Sustained sends, then kill -9 the master in the middle of them.
    while acked.lock().expect("lock").list.len() < 300 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    brokers[m].kill9();
    let killed = Instant::now();
    let before = acked.lock().expect("lock").list.len();
    let n = find_master(&brokers, Duration::from_secs(30)).await;
    assert_ne!(n, m);
    while acked.lock().expect("lock").list.len() < before + 300 {
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "sends did not resume on the new master"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "failover: 300 more acks {:?} after kill -9",
        killed.elapsed()
    );
    // The old master restarts as a slave and converges.
    brokers[m].start(None);
    wait_status(
        "the old master is a slave",
        &brokers[m].addr(),
        Duration::from_secs(30),
        |s| s["role"] == "SLAVE",
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    send.await.expect("sender");
    let list = acked.lock().expect("lock").list.clone();
    verify_acked(&brokers[n].addr(), &list).await;
    let end = caught_up(&brokers[m], &brokers[n]).await;
    for b in &mut brokers {
        b.stop();
    }
    same_bytes(&brokers[n], &brokers[m], end);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn divergent_old_master_killed_during_truncation_recovers() {
    let _turn = crate::support::file_turn(module_path!());
    let dir = tempfile::Builder::new()
        .prefix("rr-failover")
        .tempdir()
        .expect("tempdir");
    let _keep = KeepOnPanic(dir.path().to_path_buf());
    // The SyncStateSet must not shrink while the slaves are paused (they stay electable).
    let (_ns, mut brokers) = start_cluster(
        dir.path(),
        "ha_max_time_slave_not_catchup_ms = 600000\nslave_timeout_ms = 500\n",
    );
    let m = find_master(&brokers, Duration::from_secs(30)).await;
    all_in_sync(&brokers[m]).await;
    let api = api();
    let mut acked = Vec::new();
    for i in 0..100 {
        let r = api
            .send(&brokers[m].addr(), &message(i))
            .await
            .expect("send");
        assert_eq!(r.code, response_code::SUCCESS);
        acked.push((r.queue_id, r.queue_offset, i));
    }
    // Pause both slaves: the master writes what it cannot get acknowledged.
    for (i, b) in brokers.iter().enumerate() {
        if i != m {
            b.signal(libc::SIGSTOP);
        }
    }
    for i in 100..110 {
        let r = api.send(&brokers[m].addr(), &message(i)).await;
        assert!(
            !matches!(r, Ok(ref r) if r.code == response_code::SUCCESS),
            "send {i} acknowledged without its replicas"
        );
    }
    let diverged = status(&brokers[m].addr()).await.expect("status")["maxPhyOffset"]
        .as_i64()
        .expect("offset");
    brokers[m].kill9();
    for (i, b) in brokers.iter().enumerate() {
        if i != m {
            b.signal(libc::SIGCONT);
        }
    }
    let n = find_master(&brokers, Duration::from_secs(30)).await;
    for i in 200..260 {
        let mut done = false;
        for _ in 0..50 {
            if let Ok(r) = api.send(&brokers[n].addr(), &message(i)).await {
                if r.code == response_code::SUCCESS {
                    acked.push((r.queue_id, r.queue_offset, i));
                    done = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(done, "send {i} to the new master");
    }
    // The old master holds a tail nobody else has; it is killed while cutting it.
    brokers[m].start(Some("truncate-after-cq"));
    assert!(
        brokers[m].wait_crash(Duration::from_secs(30)),
        "the failpoint stopped the old master mid-truncation"
    );
    assert!(
        brokers[m].dir.join("store").join("truncate").exists(),
        "the truncation marker survives the crash"
    );
    brokers[m].start(None);
    let end = caught_up(&brokers[m], &brokers[n]).await;
    assert!(diverged > 0);
    verify_acked(&brokers[n].addr(), &acked).await;
    verify_acked(&brokers[m].addr(), &acked).await;
    for b in &mut brokers {
        b.stop();
    }
    same_bytes(&brokers[n], &brokers[m], end);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_killed_in_a_segment_roll_and_slave_far_behind_and_corrupted_tail() {
    let _turn = crate::support::file_turn(module_path!());
    let dir = tempfile::Builder::new()
        .prefix("rr-failover")
        .tempdir()
        .expect("tempdir");
    let _keep = KeepOnPanic(dir.path().to_path_buf());
    let (_ns, mut brokers) = start_cluster(dir.path(), "");
    let m = find_master(&brokers, Duration::from_secs(30)).await;
    all_in_sync(&brokers[m]).await;
    let api = api();
    let mut acked = Vec::new();
    let mut i = 0u64;

    // A slave killed mid-stream falls several segments behind, then catches up.
    let s = (m + 1) % 3;
    for _ in 0..50 {
        let r = api
            .send(&brokers[m].addr(), &message(i))
            .await
            .expect("send");
        assert_eq!(r.code, response_code::SUCCESS);
        acked.push((r.queue_id, r.queue_offset, i));
        i += 1;
    }
    brokers[s].kill9();
    let target = status(&brokers[m].addr()).await.expect("status")["maxPhyOffset"]
        .as_i64()
        .expect("o")
        + 4 * SEGMENT as i64;
    loop {
        match api.send(&brokers[m].addr(), &message(i)).await {
            Ok(r) if r.code == response_code::SUCCESS => {
                acked.push((r.queue_id, r.queue_offset, i))
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
        i += 1;
        if status(&brokers[m].addr()).await.expect("status")["maxPhyOffset"]
            .as_i64()
            .expect("o")
            > target
        {
            break;
        }
    }
    brokers[s].start(None);
    caught_up(&brokers[s], &brokers[m]).await;
    all_in_sync(&brokers[m]).await;

    // A slave whose last record is corrupted on disk is repaired from the master.
    let end = caught_up(&brokers[s], &brokers[m]).await;
    brokers[s].stop();
    let seg_start = end - end % SEGMENT;
    let path = brokers[s].commitlog().join(format!("{seg_start:020}"));
    let mut bytes = std::fs::read(&path).expect("segment");
    let at = (end - seg_start - 40) as usize;
    bytes[at] ^= 0xFF;
    std::fs::write(&path, &bytes).expect("corrupt");
    brokers[s].start(None);
    caught_up(&brokers[s], &brokers[m]).await;

    // The master restarts with a failpoint that aborts the process in its next segment roll
    // (as master, or as slave replicating the roll), under sends to whoever is master.
    brokers[m].stop();
    brokers[m].start(Some("roll-after-blank"));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if brokers[m].wait_crash(Duration::from_millis(1)) {
            break;
        }
        assert!(Instant::now() < deadline, "no segment roll happened");
        let cur = find_master(&brokers, Duration::from_secs(30)).await;
        if let Ok(r) = api.send(&brokers[cur].addr(), &message(i)).await {
            if r.code == response_code::SUCCESS {
                acked.push((r.queue_id, r.queue_offset, i));
            }
        }
        i += 1;
    }
    brokers[m].start(None);
    let n = find_master(&brokers, Duration::from_secs(30)).await;
    for _ in 0..100 {
        if let Ok(r) = api.send(&brokers[n].addr(), &message(i)).await {
            if r.code == response_code::SUCCESS {
                acked.push((r.queue_id, r.queue_offset, i));
            }
        }
        i += 1;
    }
    verify_acked(&brokers[n].addr(), &acked).await;
    let mut ends = Vec::new();
    for (j, b) in brokers.iter().enumerate() {
        if j != n {
            ends.push(caught_up(b, &brokers[n]).await);
        }
    }
    for b in &mut brokers {
        b.stop();
    }
    for (j, b) in brokers.iter().enumerate() {
        if j != n {
            same_bytes(&brokers[n], b, ends[0]);
        }
    }
}
