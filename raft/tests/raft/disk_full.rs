//! A single Raft node whose log lives on a real full filesystem (issue 15 item 3): a 4 MiB tmpfs
//! and a ballast file that fills it. Client writes are refused with a clear error (never
//! acknowledged, never left hanging), nothing committed is lost, and once space is freed the
//! node serves again by itself, without a restart; a restart afterwards finds every
//! acknowledged write and none of the refused ones.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rocketraft_common::testing::{grow_ballast, Tmpfs};
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
