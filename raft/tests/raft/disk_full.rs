//! A single Raft node whose log lives on a real full filesystem (issue 15 item 3): a 4 MiB tmpfs
//! and a ballast file that fills it. Client writes are refused with a clear error (never
//! acknowledged, never left hanging), nothing committed is lost, and once space is freed the
//! node serves again by itself, without a restart; a restart afterwards finds every
//! acknowledged write and none of the refused ones. A snapshot that falls due while the disk is
//! full waits for space (the node keeps serving, the previous snapshot stays) and is written
//! once space is freed. In a three-node cluster, a follower with a full disk never makes a
//! quorum and catches up by snapshot once space is freed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rocketraft_common::testing::{fill_disk, grow_ballast, Tmpfs};
use rocketraft_raft::kv::{KvCommand, KvQuery, KvStateMachine, KvValue};
use rocketraft_raft::{RaftClientError, RaftConfig, RaftNode, ReadMode};

use crate::cluster::free_port;

fn config(port: u16, dir: &Path) -> RaftConfig {
    RaftConfig {
        node_id: 1,
        listen: format!("127.0.0.1:{port}").parse().expect("addr"),
        data_dir: dir.to_path_buf(),
        initial_members: BTreeMap::from([(1, format!("127.0.0.1:{port}"))]),
        election_timeout_min_ms: 600,
        election_timeout_max_ms: 1200,
        heartbeat_interval_ms: 150,
        rpc_timeout_ms: 1000,
        client_timeout_ms: 15_000,
        // No snapshot during the test: this one is about the log.
        snapshot_logs: 100_000,
        keep_logs: 1000,
        ..RaftConfig::default()
    }
}

async fn wait_leader(node: &RaftNode<KvStateMachine>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !node.is_leader() {
        assert!(Instant::now() < deadline, "no leader: {:?}", node.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn put(key: &str, i: i64) -> KvCommand {
    KvCommand::Write {
        key: key.to_string(),
        value: KvValue::Int(i),
    }
}

async fn read(node: &RaftNode<KvStateMachine>, key: &str) -> Option<KvValue> {
    node.read(
        &KvQuery::Read {
            key: key.to_string(),
        },
        ReadMode::Linearizable,
    )
    .await
    .expect("linearizable read")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_log_disk_refuses_writes_clearly_and_the_node_serves_again_once_space_is_freed() {
    let Some(fs) = Tmpfs::mount_or_skip("4m") else {
        return;
    };
    let dir = fs.dir.join("node1");
    let ballast = fs.dir.join("ballast");
    let port = free_port();
    let node = RaftNode::start(config(port, &dir), KvStateMachine::new())
        .await
        .expect("start");
    wait_leader(&node).await;

    let mut acked: Vec<(String, i64)> = Vec::new();
    let mut unknown: Vec<String> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    // Write while a ballast fills the disk, until writes are refused.
    for i in 0i64.. {
        assert!(i < 20_000, "the disk never filled");
        grow_ballast(&ballast, 16 * 1024);
        let key = format!("k{i}");
        let started = Instant::now();
        let result = node.write(&put(&key, i)).await;
        let took = started.elapsed();
        match result {
            Ok(r) => {
                assert!(r.applied);
                acked.push((key, i));
            }
            Err(e) => {
                let text = e.to_string();
                assert!(
                    matches!(e, RaftClientError::Storage { .. }),
                    "not a storage refusal: {e:?}"
                );
                assert!(text.contains("no space left"), "{text}");
                // Refused at once, not after the client deadline.
                assert!(took < Duration::from_secs(5), "took {took:?}: {text}");
                eprintln!("refused after {took:?}: {text}");
                if e.outcome_unknown() {
                    unknown.push(key);
                } else {
                    refused.push(key);
                }
                if refused.len() >= 3 {
                    break;
                }
            }
        }
    }
    eprintln!(
        "{} writes acknowledged, {} with an unknown outcome, {} refused",
        acked.len(),
        unknown.len(),
        refused.len()
    );
    assert!(!acked.is_empty());
    // While full: stale reads still answer from the state machine; a linearizable read is
    // refused clearly rather than left hanging.
    let (k0, v0) = &acked[0];
    let stale = node
        .read(&KvQuery::Read { key: k0.clone() }, ReadMode::Stale)
        .await
        .expect("stale read");
    assert_eq!(stale, Some(KvValue::Int(*v0)));
    let err = node
        .read(&KvQuery::Read { key: k0.clone() }, ReadMode::Linearizable)
        .await
        .expect_err("linearizable read refused while the log is stalled");
    assert!(err.to_string().contains("no space left"), "{err}");

    // Space freed by someone else: the node serves again by itself.
    std::fs::remove_file(&ballast).expect("free space");
    let deadline = Instant::now() + Duration::from_secs(30);
    let key = "after".to_string();
    loop {
        match node.write(&put(&key, -1)).await {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "writes not accepted again after space was freed: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    acked.push((key, -1));
    for (k, v) in &acked {
        assert_eq!(read(&node, k).await, Some(KvValue::Int(*v)), "{k}");
    }
    for k in &refused {
        assert_eq!(
            read(&node, k).await,
            None,
            "{k} was refused, never proposed"
        );
    }
    // A write that waited on the stalled log was kept and written once the disk had room.
    for k in &unknown {
        assert!(read(&node, k).await.is_some(), "{k} waited on the log");
    }
    node.shutdown().await;

    // A restart from disk has every acknowledged write and none of the refused ones.
    let node = RaftNode::start(config(free_port(), &dir), KvStateMachine::new())
        .await
        .expect("restart");
    wait_leader(&node).await;
    for (k, v) in &acked {
        assert_eq!(
            read(&node, k).await,
            Some(KvValue::Int(*v)),
            "{k} after restart"
        );
    }
    for k in &refused {
        assert_eq!(read(&node, k).await, None, "{k} after restart");
    }
    node.shutdown().await;
    drop(fs);
}

/// A node with snapshots every 20 entries and a state machine holding a 512 KiB value (so every
/// snapshot is over 512 KiB while log entries stay small).
/// Writes `k<n>` = n for the next `n`.
async fn write_small(
    node: &RaftNode<KvStateMachine>,
    next: &mut i64,
) -> (String, Result<(), RaftClientError>) {
    let key = format!("k{next}");
    let cmd = put(&key, *next);
    *next += 1;
    let r = node.write(&cmd).await.map(|_| ());
    (key, r)
}

fn snapshot_config(port: u16, dir: &Path) -> RaftConfig {
    RaftConfig {
        snapshot_logs: 20,
        keep_logs: 5,
        ..config(port, dir)
    }
}

async fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_due_on_a_full_disk_waits_for_space_without_killing_the_node() {
    let Some(fs) = Tmpfs::mount_or_skip("4m") else {
        return;
    };
    let dir = fs.dir.join("node1");
    let snap_dir = dir.join("snapshot");
    let ballast = fs.dir.join("ballast");
    let node = RaftNode::start(snapshot_config(free_port(), &dir), KvStateMachine::new())
        .await
        .expect("start");
    wait_leader(&node).await;

    // A big value, then enough small writes for a first snapshot.
    let big = "x".repeat(512 * 1024);
    node.write(&KvCommand::Write {
        key: "big".into(),
        value: KvValue::Str(big.clone()),
    })
    .await
    .expect("big write");
    let mut acked: Vec<(String, i64)> = Vec::new();
    let mut next = 0i64;
    for _ in 0..25 {
        let (key, r) = write_small(&node, &mut next).await;
        r.expect("write before the disk fills");
        acked.push((key.clone(), key[1..].parse().expect("n")));
    }
    wait_for("a first snapshot", 20, || node.status().snapshot.is_some()).await;
    let first = node.status().snapshot.expect("first snapshot");
    let first_bytes = std::fs::read(snap_dir.join("current.snap")).expect("first snapshot file");
    eprintln!("first snapshot at {first}: {} bytes", first_bytes.len());

    // Fill the disk, then free 128 KiB: room for small log entries, not for a snapshot.
    fill_disk(&ballast);
    let len = std::fs::metadata(&ballast).expect("ballast").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&ballast)
        .and_then(|f| f.set_len(len.saturating_sub(128 * 1024)))
        .expect("shrink ballast");

    // Small writes until the next snapshot is due and cannot be written.
    let mut refused = 0;
    let mut i = 0;
    while node.snapshot_stalled().is_none() {
        i += 1;
        assert!(i < 200, "no snapshot stalled: {:?}", node.status());
        let (key, r) = write_small(&node, &mut next).await;
        match r {
            Ok(_) => acked.push((key.clone(), key[1..].parse().expect("n"))),
            Err(e) => {
                // The log may briefly meet the full disk too; it is refused clearly.
                assert!(e.to_string().contains("no space left"), "{e}");
                refused += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let why = node.snapshot_stalled().expect("stalled");
    eprintln!("snapshot stalled ({refused} writes refused meanwhile): {why}");
    assert!(why.to_lowercase().contains("no space left"), "{why}");
    assert!(why.contains("previous snapshot stays in place"), "{why}");

    // The node is alive: still the leader, still applying, the previous snapshot untouched.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(node.snapshot_stalled().is_some());
    let status = node.status();
    assert!(node.is_leader(), "{status:?}");
    assert_eq!(status.snapshot, Some(first), "{status:?}");
    assert_eq!(
        std::fs::read(snap_dir.join("current.snap")).expect("previous snapshot"),
        first_bytes,
        "the previous snapshot is left in place"
    );
    let stale = node
        .read(&KvQuery::Read { key: "big".into() }, ReadMode::Stale)
        .await
        .expect("stale read");
    assert_eq!(stale, Some(KvValue::Str(big.clone())));

    // Space freed: the snapshot that was due is written, and writes go on.
    std::fs::remove_file(&ballast).expect("free space");
    wait_for("the snapshot once space is freed", 30, || {
        node.snapshot_stalled().is_none() && node.status().snapshot > Some(first)
    })
    .await;
    let second = node.status().snapshot.expect("second snapshot");
    assert!(
        !snap_dir.join("current.snap.tmp").exists(),
        "no partial snapshot left"
    );
    eprintln!("snapshot at {second} after space was freed");
    let deadline = Instant::now() + Duration::from_secs(30);
    for _ in 0..25 {
        loop {
            let (key, r) = write_small(&node, &mut next).await;
            match r {
                Ok(_) => {
                    acked.push((key.clone(), key[1..].parse().expect("n")));
                    break;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "writes not accepted again: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    wait_for("a snapshot after more writes", 20, || {
        node.status().snapshot > Some(second)
    })
    .await;
    node.shutdown().await;

    // A restart (from the latest snapshot and the log after it) has every acknowledged write.
    let node = RaftNode::start(snapshot_config(free_port(), &dir), KvStateMachine::new())
        .await
        .expect("restart");
    wait_leader(&node).await;
    assert!(node.status().snapshot > Some(second), "{:?}", node.status());
    assert_eq!(read(&node, "big").await, Some(KvValue::Str(big)));
    for (k, v) in &acked {
        assert_eq!(
            read(&node, k).await,
            Some(KvValue::Int(*v)),
            "{k} after restart"
        );
    }
    node.shutdown().await;
    drop(fs);
}

/// Writes `key` through whichever of `nodes` leads (forwarded by any node), until it is
/// acknowledged or `secs` pass; the error of the last attempt otherwise.
async fn write_until_acked(
    nodes: &BTreeMap<u64, RaftNode<KvStateMachine>>,
    key: &str,
    value: i64,
    secs: u64,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let mut last = String::new();
        for node in nodes.values() {
            match node.write(&put(key, value)).await {
                Ok(r) if r.applied => return Ok(()),
                Ok(r) => last = format!("not applied: {r:?}"),
                Err(e) => last = e.to_string(),
            }
        }
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Three nodes; node 3's log lives on a tmpfs that fills up. The other two go on committing
/// (node 3 never counts towards a commit it could not persist: with one of them stopped, no
/// write is acknowledged), the leader snapshots and purges its log meanwhile, and once space
/// is freed node 3 catches up by installing the snapshot, after which it makes a quorum again.
/// Every acknowledged write is on every node at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_with_a_full_disk_never_makes_a_quorum_and_catches_up_by_snapshot_once_freed() {
    let Some(fs) = Tmpfs::mount_or_skip("8m") else {
        return;
    };
    let scratch = rocketraft_common::testing::ScratchDir::new("raft-full").expect("scratch dir");
    let ballast = fs.dir.join("ballast");
    let ports: BTreeMap<u64, u16> = (1..=3).map(|id| (id, free_port())).collect();
    let members: BTreeMap<u64, String> = ports
        .iter()
        .map(|(id, p)| (*id, format!("127.0.0.1:{p}")))
        .collect();
    let node_config = |id: u64| RaftConfig {
        node_id: id,
        initial_members: members.clone(),
        snapshot_logs: 20,
        keep_logs: 5,
        client_timeout_ms: 4_000,
        // Node 3 (the one whose disk fills) is slow to stand for election.
        election_timeout_min_ms: if id == 3 { 4_000 } else { 600 },
        election_timeout_max_ms: if id == 3 { 6_000 } else { 1_200 },
        ..config(
            ports[&id],
            &if id == 3 {
                fs.dir.join("node3")
            } else {
                scratch.path().join(format!("node{id}"))
            },
        )
    };
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        let node = RaftNode::start(node_config(id), KvStateMachine::new())
            .await
            .expect("node starts");
        nodes.insert(id, node);
    }
    wait_for("a leader", 20, || nodes.values().any(|n| n.is_leader())).await;
    if nodes[&3].is_leader() {
        nodes[&3]
            .admin(rocketraft_raft::AdminRequest::TransferLeader { to: 1 })
            .await
            .expect("leadership to node 1");
    }
    let mut acked: Vec<(String, i64)> = Vec::new();
    for i in 0..10 {
        let key = format!("before{i}");
        write_until_acked(&nodes, &key, i, 20)
            .await
            .expect("write before the disk fills");
        acked.push((key, i));
    }

    // Node 3's disk is full: nodes 1 and 2 go on, past a snapshot and a purge of their logs.
    fill_disk(&ballast);
    let stuck_at = nodes[&3].status().last_log_index;
    for i in 0..60 {
        let key = format!("full{i}");
        write_until_acked(&nodes, &key, i, 20)
            .await
            .expect("nodes 1 and 2 make a quorum");
        acked.push((key, i));
    }
    let leader = *nodes
        .iter()
        .find(|(_, n)| n.is_leader())
        .map(|(id, _)| id)
        .expect("a leader");
    assert_ne!(leader, 3, "node 3 cannot lead with a full disk");
    wait_for("a purged log on the leader", 20, || {
        nodes[&leader].status().purged > stuck_at
    })
    .await;
    let s3 = nodes[&3].status();
    assert!(
        s3.last_log_index < nodes[&leader].status().last_log_index,
        "node 3 appended nothing while full: {s3:?}"
    );

    // With the other healthy node stopped, the leader and node 3 are no quorum: nothing is
    // acknowledged (node 3 never answers for entries it could not persist).
    let other = if leader == 1 { 2 } else { 1 };
    if let Some(n) = nodes.remove(&other) {
        n.shutdown().await;
    }
    let refused = nodes[&leader].write(&put("no-quorum", 1)).await;
    assert!(
        refused.is_err(),
        "a write acknowledged without a quorum: {refused:?}"
    );

    // Space freed: node 3 installs the leader's snapshot (the entries it missed are purged)
    // and, with the leader, is a quorum again.
    std::fs::remove_file(&ballast).expect("free space");
    write_until_acked(&nodes, "after", -1, 60)
        .await
        .expect("node 3 makes a quorum once space is freed");
    acked.push(("after".into(), -1));
    // The leader purged the entries after node 3's last one, so a snapshot was all it could
    // catch up from.
    let s3 = nodes[&3].status();
    assert!(s3.snapshot.is_some(), "node 3 has a snapshot: {s3:?}");

    // The stopped node comes back; every node has every acknowledged write.
    let node = RaftNode::start(node_config(other), KvStateMachine::new())
        .await
        .expect("restart");
    nodes.insert(other, node);
    let target = nodes
        .values()
        .filter_map(|n| n.status().committed)
        .max()
        .expect("a commit index");
    wait_for("every node applied everything", 30, || {
        nodes
            .values()
            .all(|n| n.status().last_applied >= Some(target))
    })
    .await;
    for (id, node) in &nodes {
        for (k, v) in &acked {
            let got = node
                .read(&KvQuery::Read { key: k.clone() }, ReadMode::Stale)
                .await
                .expect("stale read");
            assert_eq!(got, Some(KvValue::Int(*v)), "{k} on node {id}");
        }
    }
    for node in nodes.values() {
        node.shutdown().await;
    }
    drop(fs);
}
