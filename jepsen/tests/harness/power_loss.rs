//! Power-loss tests: a real `rocketraft dev` process (NameServer with the embedded controller and
//! one broker, on loopback) keeps all its data on a [`LazyFs`] mount; a power cut kills it and
//! drops every byte it wrote but did not sync, the filesystem comes back clean, and the process
//! restarts on what survived.
//!
//! - `sync_flush_power_cuts_lose_no_acknowledged_message`: 100 cuts (`ROCKETRAFT_POWER_CUTS`
//!   overrides) at random points of SYNC_FLUSH sends; after each cut and restart every
//!   acknowledged message is read back by (queue, offset) with its body.
//! - `async_flush_power_cuts_recover_a_consistent_prefix`: cuts under ASYNC_FLUSH; after each
//!   restart the broker serves, every queue is dense from 0 to its max offset with entries that
//!   point at the right CommitLog records (topic, queue, offset), and what survived of each
//!   queue's acknowledged sends is a prefix of them (no hole, no reordering).
//! - `metadata_survives_cuts_at_every_step`: with the broker in controller mode, a cut right
//!   after each acknowledged step (election → epoch file and Raft log; topic creation and
//!   subscription group → RocksDB; sends and a checkpoint) and a check after the restart.
//!
//! Needs root and `/dev/fuse` (CI has both); without them the tests fail and say why. Needs the
//! `rocketraft` binary of the same target directory (`cargo build --workspace --bins`).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::rocketraft_binary;
use bytes::Bytes;
use rocketraft_common::TopicConfig;
use rocketraft_controller::client::ControllerClient;
use rocketraft_jepsen::lazyfs::{fuse_available, LazyFs};
use rocketraft_jepsen::rng::Rng;
use rocketraft_remoting::api::{MqClientApi, PullRequest, PullStatus, SendRequest};
use rocketraft_remoting::client::{ClientConfig, RemotingClient};
use rocketraft_remoting::response_code;

const TOPIC: &str = "power-cut";
const QUEUES: i32 = 4;

fn free_port() -> u16 {
    rocketraft_common::net::free_loopback_port().expect("a free loopback port")
}

fn require_fuse() {
    if let Err(why) = fuse_available() {
        panic!("power-loss tests need FUSE (run as root with /dev/fuse; CI has both): {why}");
    }
}

/// The running `rocketraft dev`, killed when dropped.
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One process on one LazyFs mount. Field order is drop order: the process goes first, then
/// the mount, then the directories.
struct Rig {
    proc: Option<Proc>,
    fs: LazyFs,
    mnt: tempfile::TempDir,
    backing: tempfile::TempDir,
    logs: tempfile::TempDir,
    config: PathBuf,
    namesrv_port: u16,
    broker_port: u16,
    binary: PathBuf,
}

impl Rig {
    /// Mounts a LazyFs and writes the dev config: `[broker]` keys in `broker_toml`, the store
    /// keys in `store_toml`.
    fn new(broker_toml: &str, store_toml: &str) -> Rig {
        require_fuse();
        let tmp = |prefix: &str| {
            tempfile::Builder::new()
                .prefix(prefix)
                .tempdir_in("/tmp")
                .expect("a temporary directory")
        };
        let backing = tmp("rr-power-backing-");
        let mnt = tmp("rr-power-mnt-");
        let logs = tmp("rr-power-logs-");
        let fs = LazyFs::mount(backing.path(), mnt.path()).expect("mount the LazyFs");
        let namesrv_port = free_port();
        let broker_port = free_port();
        let ha_port = free_port();
        let config = logs.path().join("dev.toml");
        let store_root = mnt.path().join("broker");
        let text = format!(
            "[broker]\n\
             listen = \"127.0.0.1:{broker_port}\"\n\
             ha_port = {ha_port}\n\
             {broker_toml}\n\
             [broker.store]\n\
             store_root = {store_root:?}\n\
             store_host = \"127.0.0.1:{broker_port}\"\n\
             commitlog_segment_size = 1048576\n\
             consume_queue_entries_per_file = 2000\n\
             {store_toml}\n"
        );
        std::fs::write(&config, text).expect("write the dev config");
        Rig {
            proc: None,
            fs,
            mnt,
            backing,
            logs,
            config,
            namesrv_port,
            broker_port,
            binary: rocketraft_binary(),
        }
    }

    fn broker(&self) -> String {
        format!("127.0.0.1:{}", self.broker_port)
    }

    fn namesrv(&self) -> String {
        format!("127.0.0.1:{}", self.namesrv_port)
    }

    fn log_path(&self) -> PathBuf {
        self.logs.path().join("dev.log")
    }

    /// The last lines of the process log, for failure messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Starts `rocketraft dev` on the mount and waits for its ready line.
    fn start(&mut self) {
        let ready = self.spawn();
        let line = ready.recv_timeout(Duration::from_secs(60));
        match line {
            Ok(Some(Ok(line))) if line.contains("is ready") => {}
            other => {
                self.proc = None;
                panic!(
                    "rocketraft dev did not start after a power cut ({other:?}); log:\n{}",
                    self.log_tail()
                );
            }
        }
    }

    /// Spawns `rocketraft dev` on the mount; the receiver gets its first stdout line.
    fn spawn(&mut self) -> std::sync::mpsc::Receiver<Option<std::io::Result<String>>> {
        assert!(self.proc.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the log");
        let mut child = Command::new(&self.binary)
            .args(["--threads", "2", "dev", "--no-proxy", "--config"])
            .arg(&self.config)
            .arg("--data-dir")
            .arg(self.mnt.path())
            .arg("--namesrv-listen")
            .arg(self.namesrv())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn rocketraft dev");
        let stdout = child.stdout.take().expect("stdout");
        let proc = Proc { child };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        self.proc = Some(proc);
        rx
    }

    /// Cuts the power: kill -9, unmount, drop the unsynced bytes, mount again.
    fn cut(&mut self) -> rocketraft_jepsen::lazyfs::CutReport {
        let pids: Vec<u32> = self.proc.iter().map(|p| p.child.id()).collect();
        let report = self.fs.power_cut(&pids).expect("power cut");
        if !report.lost_entries.is_empty() {
            eprintln!(
                "cut: entries lost for want of a directory fsync: {:?}",
                report.lost_entries
            );
        }
        if let Some(mut p) = self.proc.take() {
            let _ = p.child.wait();
        }
        self.fs.remount().expect("remount after the cut");
        report
    }

    /// What the broker stores ([`read_all`]); a failure names `when` and shows the log's tail.
    fn read_back(
        &self,
        rt: &tokio::runtime::Runtime,
        api: &MqClientApi,
        when: &str,
    ) -> HashMap<(i32, i64), String> {
        rt.block_on(read_all(api, &self.broker()))
            .unwrap_or_else(|e| panic!("{when}: {e}\nlog:\n{}", self.log_tail()))
    }
}

fn api() -> MqClientApi {
    let config = ClientConfig {
        connect_timeout: Duration::from_secs(1),
        ..ClientConfig::default()
    };
    MqClientApi::new(RemotingClient::new(config), Duration::from_secs(3))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Retries `create_topic` until the broker answers (it may still be registering).
async fn create_topic(api: &MqClientApi, broker: &str, topic: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match api
            .create_topic(broker, &TopicConfig::new(topic, QUEUES))
            .await
        {
            Ok(()) => return,
            Err(e) if Instant::now() < deadline => {
                eprintln!("create topic {topic}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot create topic {topic}: {e}"),
        }
    }
}

/// An acknowledged send.
#[derive(Debug, Clone)]
struct Acked {
    queue: i32,
    offset: i64,
    body: String,
}

/// Senders, one per queue, each sending its queue's messages one at a time until stopped.
fn spawn_senders(
    rt: &tokio::runtime::Runtime,
    broker: String,
    cycle: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..QUEUES)
        .map(|queue| {
            let broker = broker.clone();
            let stop = stop.clone();
            let acked = acked.clone();
            rt.spawn(async move {
                let api = api();
                let mut sent = 0u64;
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let body = format!("c{cycle}-q{queue}-{n}");
                    n += 1;
                    let request = SendRequest {
                        producer_group: "power-cut-producer".into(),
                        topic: TOPIC.into(),
                        queue_id: queue,
                        body: Bytes::from(body.clone()),
                        ..SendRequest::default()
                    };
                    sent += 1;
                    match api.send(&broker, &request).await {
                        Ok(r) if r.code == response_code::SUCCESS => {
                            if let Ok(mut a) = acked.lock() {
                                a.push(Acked {
                                    queue: r.queue_id,
                                    offset: r.queue_offset,
                                    body,
                                });
                            }
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
                sent
            })
        })
        .collect()
}

/// Every message of every queue of TOPIC, by (queue, offset) → body; checks each entry points
/// at a record of this topic, queue and offset, and that queues are dense from 0.
async fn read_all(api: &MqClientApi, broker: &str) -> Result<HashMap<(i32, i64), String>, String> {
    let mut out = HashMap::new();
    for queue in 0..QUEUES {
        let max = api
            .max_offset(broker, TOPIC, queue)
            .await
            .map_err(|e| format!("max offset of queue {queue}: {e}"))?;
        let mut offset = 0i64;
        while offset < max {
            let pull = PullRequest {
                consumer_group: "power-cut-checker".into(),
                topic: TOPIC.into(),
                queue_id: queue,
                queue_offset: offset,
                max_msg_nums: 32,
                // PullSysFlag.FLAG_SUBSCRIPTION: the subscription travels with the pull.
                sys_flag: 4,
                commit_offset: 0,
                suspend_timeout_ms: 0,
                subscription: Some("*".into()),
            };
            let result = api
                .pull(broker, &pull)
                .await
                .map_err(|e| format!("pull queue {queue} at {offset}: {e}"))?;
            if result.status != PullStatus::Found || result.messages.is_empty() {
                return Err(format!(
                    "queue {queue}: offset {offset} below max {max} unreadable ({:?}, next {}, min {})",
                    result.status, result.next_begin_offset, result.min_offset
                ));
            }
            for m in &result.messages {
                if m.queue_offset != offset || m.queue_id != queue || m.message.topic != TOPIC {
                    return Err(format!(
                        "queue {queue} offset {offset}: entry points at {}/{}/{} (commit log offset {})",
                        m.message.topic, m.queue_id, m.queue_offset, m.commit_log_offset
                    ));
                }
                let body = String::from_utf8_lossy(&m.message.body).to_string();
                out.insert((queue, offset), body);
                offset += 1;
            }
        }
    }
    Ok(out)
}

fn cut_count() -> usize {
    std::env::var("ROCKETRAFT_POWER_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

/// One cycle: senders run for a random while (0–300 ms, so some cuts land before or during
/// the first sends), then the power goes.
fn send_and_cut(
    rt: &tokio::runtime::Runtime,
    rig: &mut Rig,
    rng: &mut Rng,
    cycle: usize,
) -> (Vec<Acked>, u64, rocketraft_jepsen::lazyfs::CutReport) {
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let senders = spawn_senders(rt, rig.broker(), cycle, stop.clone(), acked.clone());
    std::thread::sleep(Duration::from_millis(rng.range(0, 300)));
    let report = rig.cut();
    stop.store(true, Ordering::SeqCst);
    let mut sent = 0;
    for s in senders {
        sent += rt.block_on(s).unwrap_or(0);
    }
    let acked = acked.lock().map(|a| a.clone()).unwrap_or_default();
    (acked, sent, report)
}

#[test]
fn sync_flush_power_cuts_lose_no_acknowledged_message() {
    let _beside = crate::support::shared();
    let started = Instant::now();
    let cuts = cut_count();
    let mut rig = Rig::new("", "flush_disk_type = \"SYNC_FLUSH\"");
    let rt = runtime();
    let mut rng = Rng::new(0x5eed_0013);
    rig.start();
    rt.block_on(create_topic(&api(), &rig.broker(), TOPIC));
    let mut all_acked: Vec<Acked> = Vec::new();
    let (mut sent_total, mut checks, mut dropped) = (0u64, 0u64, 0u64);
    let mut startup_cuts = 0;
    for cycle in 0..cuts {
        let (acked, sent, report) = send_and_cut(&rt, &mut rig, &mut rng, cycle);
        sent_total += sent;
        if cycle % 10 == 9 {
            // Another cut during the restart itself (recovery writes too).
            let _ready = rig.spawn();
            std::thread::sleep(Duration::from_millis(rng.range(0, 150)));
            let r = rig.cut();
            dropped += r.dropped_bytes + r.discarded_write_bytes;
            startup_cuts += 1;
        }
        dropped += report.dropped_bytes + report.discarded_write_bytes;
        all_acked.extend(acked);
        rig.start();
        let stored = rig.read_back(&rt, &api(), &format!("after cut {}", cycle + 1));
        let lost: Vec<&Acked> = all_acked
            .iter()
            .filter(|a| stored.get(&(a.queue, a.offset)) != Some(&a.body))
            .collect();
        checks += all_acked.len() as u64;
        assert!(
            lost.is_empty(),
            "after cut {}: {} of {} acknowledged messages lost or changed, e.g. {:?} (stored there: {:?})\nlog:\n{}",
            cycle + 1,
            lost.len(),
            all_acked.len(),
            lost[0],
            stored.get(&(lost[0].queue, lost[0].offset)),
            rig.log_tail()
        );
    }
    let stats = rig.fs.stats();
    println!(
        "power-loss SYNC_FLUSH: {cuts} cuts during sends and {startup_cuts} during restarts, {} acknowledged messages (of {sent_total} sends) all read back after the last cut, {checks} acknowledged-message checks over all restarts, 0 lost; {} unsynced bytes dropped at cuts ({} files), {} written bytes discarded while powered off, {} syncs; {:.1} s",
        all_acked.len(),
        stats.dropped_bytes,
        stats.dropped_files,
        stats.discarded_write_bytes,
        stats.syncs,
        started.elapsed().as_secs_f64()
    );
    let _ = dropped;
    assert_eq!(stats.cuts as usize, cuts + startup_cuts);
    assert!(
        all_acked.len() > cuts,
        "too few sends acknowledged to mean anything: {}",
        all_acked.len()
    );
    assert!(
        stats.dropped_bytes + stats.discarded_write_bytes > 0,
        "the cuts dropped nothing: the layer is not in the data path"
    );
}

#[test]
fn async_flush_power_cuts_recover_a_consistent_prefix() {
    let _beside = crate::support::shared();
    let started = Instant::now();
    let cuts = (cut_count() / 4).max(5);
    let mut rig = Rig::new(
        "",
        "flush_disk_type = \"ASYNC_FLUSH\"\nflush_interval_ms = 200\ncheckpoint_interval_ms = 300",
    );
    let rt = runtime();
    let mut rng = Rng::new(0xa5_0013);
    rig.start();
    rt.block_on(create_topic(&api(), &rig.broker(), TOPIC));
    // Per queue: the acknowledged bodies every later check must still hold, in queue order.
    let mut kept: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let (mut acked_total, mut lost_total) = (0usize, 0usize);
    for cycle in 0..cuts {
        let (acked, _sent, _report) = send_and_cut(&rt, &mut rig, &mut rng, cycle);
        acked_total += acked.len();
        rig.start();
        let stored = rig.read_back(&rt, &api(), &format!("after cut {}", cycle + 1));
        for queue in 0..QUEUES {
            // This cycle's acknowledged bodies of the queue, in acknowledgement (= queue) order.
            let fresh: Vec<String> = acked
                .iter()
                .filter(|a| a.queue == queue)
                .map(|a| a.body.clone())
                .collect();
            let mut expected = kept.get(&queue).cloned().unwrap_or_default();
            let before = expected.len();
            expected.extend(fresh.iter().cloned());
            let known: std::collections::HashSet<&String> = expected.iter().collect();
            let mut offsets: Vec<i64> = stored
                .keys()
                .filter(|(q, _)| *q == queue)
                .map(|(_, o)| *o)
                .collect();
            offsets.sort_unstable();
            let survived: Vec<String> = offsets
                .iter()
                .filter_map(|o| stored.get(&(queue, *o)))
                .filter(|b| known.contains(b))
                .cloned()
                .collect();
            assert!(
                survived.len() >= before && survived[..] == expected[..survived.len()],
                "after cut {}: queue {queue} holds {:?}… which is not a prefix of the acknowledged {:?}… (earlier cuts' {before} must all stay)\nlog:\n{}",
                cycle + 1,
                &survived[survived.len().saturating_sub(5)..],
                &expected[survived.len().min(expected.len()).saturating_sub(5)..],
                rig.log_tail()
            );
            lost_total += expected.len() - survived.len();
            kept.insert(queue, survived);
        }
    }
    let stats = rig.fs.stats();
    println!(
        "power-loss ASYNC_FLUSH: {cuts} cuts, {acked_total} sends acknowledged, {lost_total} of them lost with the unsynced tail (allowed under ASYNC_FLUSH), every queue a dense, consistent prefix after every restart; {} unsynced bytes dropped; {:.1} s",
        stats.dropped_bytes,
        started.elapsed().as_secs_f64()
    );
}

/// The controller's view of the broker set (master epoch), from the embedded controller.
async fn master_epoch(namesrv: &str) -> Option<(i32, Option<String>)> {
    let client = ControllerClient::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(3),
    );
    let info = client.get_replica_info(namesrv, "broker-a").await.ok()?;
    Some((info.master_epoch, info.master_address))
}

/// Waits until the controller names our broker master; returns the master epoch.
async fn wait_master(namesrv: &str, broker: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((epoch, Some(addr))) = master_epoch(namesrv).await {
            if addr == broker && epoch > 0 {
                return epoch;
            }
        }
        assert!(Instant::now() < deadline, "no master elected within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the broker accepts a send (it is master and has written its epoch entry).
async fn wait_writable(api: &MqClientApi, broker: &str) -> Acked {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let request = SendRequest {
            producer_group: "power-cut-producer".into(),
            topic: TOPIC.into(),
            queue_id: 0,
            body: Bytes::from_static(b"probe"),
            ..SendRequest::default()
        };
        match api.send(broker, &request).await {
            Ok(r) if r.code == response_code::SUCCESS => {
                return Acked {
                    queue: r.queue_id,
                    offset: r.queue_offset,
                    body: "probe".into(),
                }
            }
            other => {
                assert!(
                    Instant::now() < deadline,
                    "the broker never accepted a send: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Reads the epoch file from the backing directory (what the disk kept): (epoch, start) lines.
fn epoch_entries(rig: &Rig) -> Vec<(i32, i64)> {
    let text = std::fs::read_to_string(rig.backing.path().join("broker/epoch"))
        .unwrap_or_else(|e| panic!("the epoch file did not survive the cut: {e}"));
    let mut entries = Vec::new();
    let mut crc_seen = false;
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next()) {
            (Some("crc"), Some(_)) => crc_seen = true,
            (Some(e), Some(s)) => entries.push((
                e.parse().expect("epoch number"),
                s.parse().expect("start offset"),
            )),
            _ => panic!("unreadable epoch file line {line:?} in {text:?}"),
        }
    }
    assert!(crc_seen, "epoch file without its checksum line: {text:?}");
    entries
}

/// [`epoch_entries`], checked in order: epochs rising, start offsets not falling (`when` names
/// the moment in the failure message).
fn ordered_epoch_entries(rig: &Rig, when: &str) -> Vec<(i32, i64)> {
    let entries = epoch_entries(rig);
    assert!(
        entries
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
        "{when}: epoch file out of order: {entries:?}"
    );
    entries
}

/// Every acknowledged message of `acked` is `stored` at its (queue, offset) with its body.
fn assert_all_kept(stored: &HashMap<(i32, i64), String>, acked: &[Acked], when: &str) {
    for a in acked {
        assert_eq!(
            stored.get(&(a.queue, a.offset)),
            Some(&a.body),
            "{when}: acknowledged message {a:?} lost"
        );
    }
}

#[test]
fn metadata_survives_cuts_at_every_step() {
    let _beside = crate::support::shared();
    let started = Instant::now();
    let mut rig = Rig::new(
        "enable_controller_mode = true\ncontroller_addr = \"CONTROLLER\"\ncontroller_heartbeat_interval_ms = 500",
        "flush_disk_type = \"SYNC_FLUSH\"\ncheckpoint_interval_ms = 200",
    );
    // The embedded controller answers on the NameServer's port.
    let text = std::fs::read_to_string(&rig.config).expect("config");
    std::fs::write(&rig.config, text.replace("CONTROLLER", &rig.namesrv())).expect("config");
    let rt = runtime();
    let mut steps = Vec::new();

    // Step 1: the election (a Raft log entry) and the master's epoch entry.
    rig.start();
    let epoch1 = rt.block_on(wait_master(&rig.namesrv(), &rig.broker()));
    let api1 = api();
    rt.block_on(create_topic(&api1, &rig.broker(), TOPIC));
    let probe = rt.block_on(wait_writable(&api1, &rig.broker()));
    // An acknowledged controller write nobody repeats after a restart: a broker id applied for
    // a broker set that has no process. Only the Raft log can bring it back.
    let controller = ControllerClient::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(3),
    );
    rt.block_on(controller.apply_broker_id(
        &rig.namesrv(),
        "DefaultCluster",
        "ghost-set",
        1,
        "127.0.0.1:1;ghost",
    ))
    .expect("apply a broker id through the controller");
    let next = rt
        .block_on(controller.get_next_broker_id(&rig.namesrv(), "DefaultCluster", "ghost-set"))
        .expect("next broker id");
    assert_eq!(next, 2);
    rig.cut();
    let entries = epoch_entries(&rig);
    assert!(
        entries.iter().any(|(e, _)| *e == epoch1),
        "epoch {epoch1} (elected and written before the cut) missing from the epoch file: {entries:?}"
    );
    rig.start();
    let next = rt
        .block_on(controller.get_next_broker_id(&rig.namesrv(), "DefaultCluster", "ghost-set"))
        .expect("next broker id after the cut");
    assert_eq!(
        next, 2,
        "the controller's Raft log lost an acknowledged write (broker id 1 of ghost-set)"
    );
    let epoch2 = rt.block_on(wait_master(&rig.namesrv(), &rig.broker()));
    assert!(
        epoch2 >= epoch1,
        "the controller's Raft log lost the election of epoch {epoch1}: epoch {epoch2} after the cut"
    );
    steps.push(format!(
        "election and a broker id: epoch {epoch1} in the epoch file, both in the Raft log"
    ));

    // Step 2: the topic (synced RocksDB write) and the first message survive.
    let api2 = api();
    let _ = rt.block_on(wait_writable(&api2, &rig.broker()));
    let stored = rig.read_back(&rt, &api2, "after the first cut");
    assert_eq!(stored.get(&(probe.queue, probe.offset)), Some(&probe.body));
    let topic2 = "power-cut-created";
    rt.block_on(create_topic(&api2, &rig.broker(), topic2));
    rig.cut();
    rig.start();
    let api3 = api();
    let topics = rt
        .block_on(async {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match api3.broker_topics(&rig.broker()).await {
                    Ok(t) => break Ok(t),
                    Err(e) if Instant::now() < deadline => {
                        eprintln!("topics: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                    Err(e) => break Err(e),
                }
            }
        })
        .expect("the broker lists its topics");
    assert!(
        topics.topic_config_table.contains_key(topic2),
        "topic {topic2}, created (acknowledged) right before the cut, is gone"
    );
    steps.push(format!("topic creation: {topic2} in RocksDB"));

    // Step 3: a checkpoint written after sends, then a cut: the broker starts from it.
    let epoch3 = rt.block_on(wait_master(&rig.namesrv(), &rig.broker()));
    let _ = rt.block_on(wait_writable(&api3, &rig.broker()));
    let checkpoint = rig.backing.path().join("broker/checkpoint");
    // A checkpoint on disk first, so the one cut below replaces it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !checkpoint.exists() {
        assert!(Instant::now() < deadline, "no checkpoint within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = std::fs::metadata(&checkpoint)
        .and_then(|m| m.modified())
        .ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut acked = Vec::new();
    while std::fs::metadata(&checkpoint)
        .and_then(|m| m.modified())
        .ok()
        == before
    {
        acked.push(rt.block_on(wait_writable(&api3, &rig.broker())));
        assert!(
            Instant::now() < deadline,
            "no checkpoint reached the disk within 10 s of sends"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    rig.cut();
    assert!(
        checkpoint.exists(),
        "the checkpoint file did not survive a cut right after it was rewritten"
    );
    rig.start();
    let epoch4 = rt.block_on(wait_master(&rig.namesrv(), &rig.broker()));
    assert!(epoch4 >= epoch3, "epoch went from {epoch3} to {epoch4}");
    let api4 = api();
    let when = "after a checkpoint and a cut";
    assert_all_kept(&rig.read_back(&rt, &api4, when), &acked, when);
    let entries = ordered_epoch_entries(&rig, when);
    steps.push(format!(
        "checkpoint: {} acknowledged messages read back, epoch file {entries:?}",
        acked.len()
    ));

    // Step 4: cuts at random points (during the start, the election, sends): after each
    // restart the controller still knows the ghost broker id, the master epoch never goes
    // back, the epoch file stays ordered and every acknowledged message is there.
    let mut rng = Rng::new(0x6d65_7461);
    let mut all_acked = acked;
    let mut max_epoch = epoch4;
    let random_cuts = 15;
    for i in 0..random_cuts {
        if i % 3 == 0 {
            // Cut the running process, then cut again during the start itself.
            rig.cut();
            let _ready = rig.spawn();
            std::thread::sleep(Duration::from_millis(rng.range(0, 300)));
            rig.cut();
            rig.start();
        } else {
            let api = api();
            let deadline = Instant::now() + Duration::from_millis(rng.range(0, 400));
            while Instant::now() < deadline {
                let request = SendRequest {
                    producer_group: "power-cut-producer".into(),
                    topic: TOPIC.into(),
                    queue_id: 1,
                    body: Bytes::from(format!("r{i}-{}", all_acked.len())),
                    ..SendRequest::default()
                };
                if let Ok(r) = rt.block_on(api.send(&rig.broker(), &request)) {
                    if r.code == response_code::SUCCESS {
                        all_acked.push(Acked {
                            queue: r.queue_id,
                            offset: r.queue_offset,
                            body: String::from_utf8_lossy(&request.body).to_string(),
                        });
                    }
                }
            }
            rig.cut();
            rig.start();
        }
        let next = rt
            .block_on(controller.get_next_broker_id(&rig.namesrv(), "DefaultCluster", "ghost-set"))
            .expect("next broker id after a cut");
        assert_eq!(next, 2, "cut {i}: the Raft log lost the ghost broker id");
        let epoch = rt.block_on(wait_master(&rig.namesrv(), &rig.broker()));
        assert!(
            epoch >= max_epoch,
            "cut {i}: master epoch went back from {max_epoch} to {epoch}"
        );
        max_epoch = epoch;
        let _ = rt.block_on(wait_writable(&api(), &rig.broker()));
        let when = format!("cut {i}");
        assert_all_kept(&rig.read_back(&rt, &api(), &when), &all_acked, &when);
        ordered_epoch_entries(&rig, &when);
    }
    steps.push(format!(
        "{random_cuts} random cuts: ghost id kept, master epoch {epoch4} -> {max_epoch} never back, {} acknowledged messages kept",
        all_acked.len()
    ));
    println!(
        "power-loss metadata: {} cuts, {:.1} s: {}",
        rig.fs.stats().cuts,
        started.elapsed().as_secs_f64(),
        steps.join("; ")
    );
    let _ = std::io::stdout().flush();
}

mod store_in_process {
    //! The store run in this process on a LazyFs mount, for the steps a process cannot be
    //! told to take at a chosen moment: a truncation (the truncate marker, the CommitLog and
    //! ConsumeQueue cuts, the epoch file) cut right after it is acknowledged.

    use super::*;
    use rocketraft_broker::store::{BrokerMessage, FlushDiskType, MessageStore, StoreConfig};
    use rocketraft_common::message::Message;

    struct Disk {
        fs: LazyFs,
        mnt: tempfile::TempDir,
        _backing: tempfile::TempDir,
    }

    fn config(root: &Path) -> StoreConfig {
        let mut c = StoreConfig::new(root);
        c.flush_disk_type = FlushDiskType::SyncFlush;
        c.commitlog_segment_size = 64 * 1024;
        c.consume_queue_entries_per_file = 100;
        c.pretouch = false;
        c
    }

    /// Puts `n` messages round-robin over the queues; returns each one's physical offset.
    fn put(store: &MessageStore, tag: &str, n: usize) -> Vec<i64> {
        (0..n)
            .map(|i| {
                let body = format!("{tag}-{i}");
                let msg = BrokerMessage::new(Message::new(TOPIC, body), (i % 4) as i32);
                let r = store.put_message_blocking(msg).expect("put");
                assert_eq!(
                    r.status,
                    rocketraft_broker::store::PutStatus::PutOk,
                    "{r:?}"
                );
                r.physical_offset
            })
            .collect()
    }

    /// The power goes while the store runs in this process: writes discarded from now, the
    /// store stopped as by a crash, the unsynced bytes dropped, the disk mounted again.
    fn cut(disk: &mut Disk, store: std::sync::Arc<MessageStore>) {
        disk.fs.power_off();
        store.crash_for_test();
        drop(store);
        disk.fs.power_cut(&[]).expect("power cut");
        disk.fs.remount().expect("remount");
    }

    /// Every ConsumeQueue entry points at a record of its topic, queue and queue offset;
    /// returns the bodies in CommitLog order.
    fn check_consistent(store: &MessageStore) -> Vec<String> {
        let mut all = Vec::new();
        for queue in 0..QUEUES {
            let (min, max) = (
                store.get_min_offset_in_queue(TOPIC, queue),
                store.get_max_offset_in_queue(TOPIC, queue),
            );
            for offset in min..max {
                let entry = store
                    .get_cq_entry(TOPIC, queue, offset)
                    .unwrap_or_else(|| panic!("queue {queue}: no entry at {offset} < {max}"));
                assert!(
                    entry.commit_log_offset + entry.size as i64 <= store.max_phy_offset(),
                    "queue {queue} offset {offset} points past the log end: {entry:?}"
                );
                let m = store
                    .look_message_by_offset(entry.commit_log_offset)
                    .unwrap_or_else(|| {
                        panic!("queue {queue} offset {offset}: {entry:?} unreadable")
                    });
                assert_eq!(
                    (m.message.topic.as_str(), m.queue_id, m.queue_offset),
                    (TOPIC, queue, offset),
                    "the entry points at another record"
                );
                all.push((
                    entry.commit_log_offset,
                    String::from_utf8_lossy(&m.message.body).to_string(),
                ));
            }
        }
        all.sort();
        all.into_iter().map(|(_, b)| b).collect()
    }

    #[test]
    fn truncation_and_epochs_survive_cuts_right_after_they_are_acknowledged() {
        let _beside = crate::support::shared();
        require_fuse();
        let tmp = |prefix: &str| {
            tempfile::Builder::new()
                .prefix(prefix)
                .tempdir_in("/tmp")
                .expect("a temporary directory")
        };
        let backing = tmp("rr-power-backing-");
        let mnt = tmp("rr-power-mnt-");
        let fs = LazyFs::mount(backing.path(), mnt.path()).expect("mount the LazyFs");
        let mut disk = Disk {
            fs,
            mnt,
            _backing: backing,
        };
        let root = disk.mnt.path().join("store");
        let rt = runtime();

        // Epoch 1 from 0, 200 messages, epoch 2, 200 more: several segments and queue files.
        let store = MessageStore::open(config(&root)).expect("open");
        store.append_epoch(1, 0).expect("epoch 1");
        let first = put(&store, "a", 200);
        let epoch2_start = store.max_phy_offset();
        store.append_epoch(2, epoch2_start).expect("epoch 2");
        put(&store, "b", 200);
        // A cut right after the epoch write: both epochs and all 400 messages stay.
        cut(&mut disk, store);
        let store = MessageStore::open(config(&root)).expect("reopen after the first cut");
        let epochs: Vec<(i32, i64)> = store
            .epoch_entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect();
        assert_eq!(epochs, vec![(1, 0), (2, epoch2_start)]);
        assert_eq!(check_consistent(&store).len(), 400);

        // Truncate into epoch 1 (message a-150): the cut is acknowledged, then the power goes.
        let cut_at = first[150];
        rt.block_on(store.truncate_to(cut_at)).expect("truncate");
        cut(&mut disk, store);
        let store = MessageStore::open(config(&root)).expect("reopen after the truncation cut");
        assert_eq!(
            store.max_phy_offset(),
            cut_at,
            "the truncated tail came back"
        );
        assert!(
            !config(&root).truncate_marker_path().exists(),
            "the truncate marker stayed after a finished truncation"
        );
        let epochs: Vec<(i32, i64)> = store
            .epoch_entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect();
        assert_eq!(epochs, vec![(1, 0)], "epoch 2 (past the cut) survived");
        let bodies = check_consistent(&store);
        assert_eq!(bodies.len(), 150);
        assert!(bodies.iter().all(|b| b.starts_with("a-")));

        // New writes over the cut positions, a cut: the queues point at the new records only.
        store.append_epoch(3, cut_at).expect("epoch 3");
        put(&store, "c", 120);
        cut(&mut disk, store);
        let store = MessageStore::open(config(&root)).expect("reopen after the rewrite cut");
        let bodies = check_consistent(&store);
        assert_eq!(bodies.len(), 270);
        assert_eq!(
            bodies.iter().filter(|b| b.starts_with("b-")).count(),
            0,
            "truncated records came back"
        );
        let epochs: Vec<(i32, i64)> = store
            .epoch_entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect();
        assert_eq!(epochs, vec![(1, 0), (3, cut_at)]);
        store.shutdown().expect("clean shutdown");
        drop(store);
        let stats = disk.fs.stats();
        println!(
            "power-loss store: {} cuts (after epoch writes, after a truncation, after rewriting the cut range); {} unsynced bytes dropped, {} bytes the kernel wrote back after power-off discarded",
            stats.cuts, stats.dropped_bytes, stats.discarded_write_bytes
        );
        assert!(
            stats.dropped_bytes + stats.discarded_write_bytes > 0,
            "the cuts dropped nothing: the store is not on the LazyFs"
        );
    }
}
