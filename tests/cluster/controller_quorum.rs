//! Three real `rocketraft controller` processes on loopback: kill -9 the leader while clients
//! issue ElectMaster and AlterSyncStateSet, restart everything, and replace a wiped member.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rocketraft_controller::client::{ControllerCallError, ControllerClient};
use rocketraft_controller::heartbeat::Heartbeat;
use rocketraft_controller::BrokerLiveInfo;
use rocketraft_remoting::response_code as code;
use rocketraft_remoting::{ClientConfig, RemotingClient};

use crate::support;
use crate::support::free_port;

const CLUSTER: &str = "DefaultCluster";
const SET: &str = "broker-a";

struct Member {
    id: u64,
    remoting: String,
    raft: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn new(id: u64, root: &Path) -> Member {
        Member {
            id,
            remoting: format!("127.0.0.1:{}", free_port()),
            raft: format!("127.0.0.1:{}", free_port()),
            dir: root.join(format!("c{id}")),
            child: None,
        }
    }

    fn start(&mut self, peers: &str, remoting_peers: &str, join: bool) {
        std::fs::create_dir_all(&self.dir).expect("dir");
        let config = self.dir.with_extension("toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{}\"\nheartbeat_timeout_ms = 3000\nscan_interval_ms = 500\n\n[raft]\nnode_id = {}\nlisten = \"{}\"\ndata_dir = \"{}\"\nelection_timeout_min_ms = 800\nelection_timeout_max_ms = 1600\nheartbeat_interval_ms = 200\nrpc_timeout_ms = 1000\nclient_timeout_ms = 8000\nsnapshot_logs = 50\nkeep_logs = 10\n",
                self.remoting,
                self.id,
                self.raft,
                self.dir.display()
            ),
        )
        .expect("write config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rocketraft"));
        cmd.args(["controller", "--config"]).arg(&config).args([
            "--remoting-peers",
            remoting_peers,
            "--threads",
            "2",
            "--log",
            "warn",
        ]);
        if join {
            cmd.arg("--join");
        } else {
            cmd.args(["--peers", peers]);
        }
        let log = std::fs::File::create(self.dir.with_extension("log")).expect("log file");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn controller");
        let stdout = child.stdout.take().expect("stdout");
        let line = BufReader::new(stdout)
            .lines()
            .next()
            .expect("a line")
            .expect("stdout");
        assert!(line.contains("is ready"), "controller {}: {line}", self.id);
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn client(timeout_ms: u64) -> ControllerClient {
    ControllerClient::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_millis(timeout_ms),
    )
}

fn broker_addr(id: i64) -> String {
    format!("127.0.0.1:{}", 31000 + id)
}

async fn leader(c: &ControllerClient, members: &[&Member], timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        for m in members.iter().filter(|m| m.child.is_some()) {
            if let Ok(meta) = c.metadata(&m.remoting).await {
                if meta.is_leader {
                    return m.id;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no controller leader within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Retries a call through the live members until it gets an answer.
async fn any<T, F, Fut>(addrs: &[String], f: F) -> T
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<T, ControllerCallError>>,
{
    for _ in 0..100 {
        for a in addrs {
            if let Ok(v) = f(a.clone()).await {
                return v;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no controller answered");
}

#[derive(Default)]
struct History {
    /// Master epochs of acknowledged elections.
    elected_epochs: Vec<i32>,
    /// SyncStateSet epochs of acknowledged alters.
    altered_epochs: Vec<i32>,
    unknown: usize,
    reads: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_kill9_restart_all_and_a_wiped_member() {
    let _turn = crate::support::file_turn(module_path!());
    let root = tempfile::tempdir().expect("tempdir");
    let mut members: Vec<Member> = (1..=3).map(|id| Member::new(id, root.path())).collect();
    let peers = members
        .iter()
        .map(|m| format!("{}={}", m.id, m.raft))
        .collect::<Vec<_>>()
        .join(",");
    let remoting_peers = members
        .iter()
        .map(|m| format!("{}={}", m.id, m.remoting))
        .collect::<Vec<_>>()
        .join(",");
    for m in members.iter_mut() {
        m.start(&peers, &remoting_peers, false);
    }
    let c = client(10_000);
    let refs: Vec<&Member> = members.iter().collect();
    leader(&c, &refs, Duration::from_secs(30)).await;
    let addrs: Vec<String> = members.iter().map(|m| m.remoting.clone()).collect();

    // Three brokers heartbeat every controller, as RocketMQ brokers do, all along (a master
    // without heartbeats would be replaced by the controller).
    let stop_beats = Arc::new(AtomicBool::new(false));
    let beat_targets = Arc::new(Mutex::new(addrs.clone()));
    let beats = {
        let targets = beat_targets.clone();
        let stop = stop_beats.clone();
        tokio::spawn(async move {
            let c = client(500);
            while !stop.load(Ordering::Relaxed) {
                for id in 1..=3i64 {
                    let addrs = targets.lock().expect("lock").clone();
                    for a in &addrs {
                        let _ = c
                            .heartbeat(
                                a,
                                &Heartbeat {
                                    cluster: CLUSTER.into(),
                                    broker_name: SET.into(),
                                    broker_id: id,
                                    broker_addr: broker_addr(id),
                                    timeout_ms: 3000,
                                    info: BrokerLiveInfo::new(1, 100, 0),
                                },
                            )
                            .await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };

    for id in 1..=3i64 {
        let next = any(&addrs, |a| {
            let c = c.clone();
            async move { c.get_next_broker_id(&a, CLUSTER, SET).await }
        })
        .await;
        assert_eq!(next, id);
        any(&addrs, |a| {
            let c = c.clone();
            async move {
                c.apply_broker_id(&a, CLUSTER, SET, id, &format!("{};{id}", broker_addr(id)))
                    .await
            }
        })
        .await;
        any(&addrs, |a| {
            let c = c.clone();
            async move {
                c.register_broker(&a, CLUSTER, SET, id, &broker_addr(id))
                    .await
            }
        })
        .await;
    }
    let first = c
        .elect_master(&addrs[0], CLUSTER, SET, Some(1), false)
        .await
        .expect("first election");
    assert_eq!((first.master_broker_id, first.master_epoch), (Some(1), 1));

    // Workload: 3 clients, each through its own controller, alternate designated elections and
    // SyncStateSet changes with the epochs they just read; reads must never go back in time.
    let history = Arc::new(Mutex::new(History::default()));
    let acked_master_epoch = Arc::new(AtomicI32::new(1));
    let acked_sss_epoch = Arc::new(AtomicI32::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..3usize {
        let addrs = addrs.clone();
        let history = history.clone();
        let stop = stop.clone();
        let acked_master_epoch = acked_master_epoch.clone();
        let acked_sss_epoch = acked_sss_epoch.clone();
        workers.push(tokio::spawn(async move {
            let c = client(10_000);
            let mut round = 0usize;
            let mut last_seen = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let addr = &addrs[(w + round) % addrs.len()];
                let floor = (
                    acked_master_epoch.load(Ordering::SeqCst),
                    acked_sss_epoch.load(Ordering::SeqCst),
                );
                let Ok(info) = c.get_replica_info(addr, SET).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let seen = (info.master_epoch, info.sync_state_set_epoch);
                assert!(
                    seen.0 >= floor.0 && seen.1 >= floor.1,
                    "stale read from {addr}: {seen:?} older than acknowledged {floor:?}"
                );
                assert!(
                    seen >= last_seen,
                    "epochs went back: {seen:?} after {last_seen:?}"
                );
                last_seen = seen;
                history.lock().expect("lock").reads += 1;
                let master = info.master_broker_id.expect("a master");
                if round.is_multiple_of(3) {
                    let target = [1i64, 2, 3]
                        .into_iter()
                        .find(|id| *id != master && info.sync_state_set.contains(id));
                    let Some(target) = target else { continue };
                    match c.elect_master(addr, CLUSTER, SET, Some(target), true).await {
                        Ok(r) if r.code == code::SUCCESS => {
                            acked_master_epoch.fetch_max(r.master_epoch, Ordering::SeqCst);
                            acked_sss_epoch.fetch_max(r.sync_state_set_epoch, Ordering::SeqCst);
                            history
                                .lock()
                                .expect("lock")
                                .elected_epochs
                                .push(r.master_epoch);
                        }
                        Ok(_) => {}
                        Err(ControllerCallError::Refused(r)) if r.code != code::SYSTEM_BUSY => {}
                        Err(_) => history.lock().expect("lock").unknown += 1,
                    }
                } else {
                    let mut set = info.sync_state_set.clone();
                    let other = [1i64, 2, 3]
                        .into_iter()
                        .find(|id| *id != master)
                        .expect("id");
                    if !set.remove(&other) {
                        set.insert(other);
                    }
                    match c
                        .alter_sync_state_set(
                            addr,
                            SET,
                            master,
                            info.master_epoch,
                            &set,
                            info.sync_state_set_epoch,
                        )
                        .await
                    {
                        Ok((epoch, new_set)) => {
                            assert_eq!(new_set, set);
                            acked_sss_epoch.fetch_max(epoch, Ordering::SeqCst);
                            history.lock().expect("lock").altered_epochs.push(epoch);
                        }
                        Err(ControllerCallError::Refused(r)) if r.code != code::SYSTEM_BUSY => {}
                        Err(_) => history.lock().expect("lock").unknown += 1,
                    }
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(3)).await;
    let refs: Vec<&Member> = members.iter().collect();
    let old_leader = leader(&c, &refs, Duration::from_secs(10)).await;
    let killed_at = Instant::now();
    members[(old_leader - 1) as usize].kill9();
    let refs: Vec<&Member> = members.iter().collect();
    let new_leader = leader(&c, &refs, Duration::from_secs(30)).await;
    assert_ne!(new_leader, old_leader);
    eprintln!("new leader {new_leader} after {:?}", killed_at.elapsed());
    tokio::time::sleep(Duration::from_secs(4)).await;
    members[(old_leader - 1) as usize].start(&peers, &remoting_peers, false);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker ok");
    }

    // No acknowledged decision lost or applied twice.
    let h = std::mem::take(&mut *history.lock().expect("lock"));
    eprintln!(
        "elections {}, alters {}, unknown {}, reads {}",
        h.elected_epochs.len(),
        h.altered_epochs.len(),
        h.unknown,
        h.reads
    );
    assert!(
        h.elected_epochs.len() + h.altered_epochs.len() >= 5,
        "the workload ran"
    );
    let distinct: BTreeSet<i32> = h.elected_epochs.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        h.elected_epochs.len(),
        "two elections acknowledged the same epoch"
    );
    let distinct: BTreeSet<i32> = h.altered_epochs.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        h.altered_epochs.len(),
        "two alters acknowledged the same epoch"
    );
    let fin = any(&addrs, |a| {
        let c = c.clone();
        async move { c.get_replica_info(&a, SET).await }
    })
    .await;
    let max_elected = h.elected_epochs.iter().copied().max().unwrap_or(1);
    assert!(
        fin.master_epoch >= max_elected,
        "{fin:?} lost an election up to {max_elected}"
    );
    // Every master epoch increment is one acknowledged or unknown-outcome election.
    let increments = (fin.master_epoch - 1) as usize;
    assert!(
        increments >= h.elected_epochs.len() && increments <= h.elected_epochs.len() + h.unknown,
        "master epoch {} after {} acknowledged and {} unknown elections",
        fin.master_epoch,
        h.elected_epochs.len(),
        h.unknown
    );

    // Stop all three, restart: identical state.
    let before = any(&addrs, |a| {
        let c = c.clone();
        async move { c.get_replica_info(&a, SET).await }
    })
    .await;
    for m in members.iter_mut() {
        m.stop();
    }
    for m in members.iter_mut() {
        m.start(&peers, &remoting_peers, false);
    }
    let refs: Vec<&Member> = members.iter().collect();
    leader(&c, &refs, Duration::from_secs(30)).await;
    let after = any(&addrs, |a| {
        let c = c.clone();
        async move { c.get_replica_info(&a, SET).await }
    })
    .await;
    assert_eq!(before, after, "state after restarting every member");

    // Member 3's disk dies: remove it, add a new member 4 on an empty directory; it catches up
    // by snapshot (only 10 log entries are kept behind each snapshot).
    members[2].kill9();
    std::fs::remove_dir_all(&members[2].dir).expect("wipe");
    let raft1 = members[0].raft.clone();
    support::admin(
        &members[0].remoting,
        &[
            "controller",
            "member",
            "remove",
            "--id",
            "3",
            "--raft",
            &raft1,
        ],
    );
    let mut m4 = Member::new(4, root.path());
    beat_targets.lock().expect("lock").push(m4.remoting.clone());
    let remoting_peers4 = format!("{remoting_peers},4={}", m4.remoting);
    m4.start("", &remoting_peers4, true);
    support::admin(
        &members[0].remoting,
        &[
            "controller",
            "member",
            "add",
            "--id",
            "4",
            "--addr",
            &m4.raft,
            "--raft",
            &raft1,
        ],
    );
    support::admin(
        &members[0].remoting,
        &[
            "controller",
            "member",
            "promote",
            "--id",
            "4",
            "--raft",
            &raft1,
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let meta = c.metadata(&m4.remoting).await.expect("metadata of 4");
        let status = meta.status.expect("status");
        let r = &status.raft;
        if r.snapshot.is_some() && r.voters.contains_key(&4) && !r.voters.contains_key(&3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "member 4 did not catch up by snapshot into the membership: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stop member 1: the quorum {2, 4} still answers, with the same state.
    members[0].stop();
    let replica = any(&[members[1].remoting.clone(), m4.remoting.clone()], |a| {
        let c = c.clone();
        async move { c.get_replica_info(&a, SET).await }
    })
    .await;
    assert_eq!(replica, after);
    let status_out = support::admin(&m4.remoting, &["controller", "status"]);
    assert!(status_out.contains("leader:"), "{status_out}");
    let replicas_out = support::admin(&m4.remoting, &["controller", "replicas", "--broker", SET]);
    assert!(replicas_out.contains("master epoch:"), "{replicas_out}");
    stop_beats.store(true, Ordering::Relaxed);
    beats.await.expect("beats");
    members[1].stop();
    m4.stop();
}
