//! Real three-node Raft clusters on loopback (gRPC transport, RocksDB logs, snapshots on disk):
//! forwarding, linearizable and stale reads, leader loss, restart from disk, a wiped node
//! replaced by a new one that catches up by snapshot, and leadership transfer.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use std::time::Instant;

use rocketraft_raft::AdminRequest;
use rocketraft_raft::AppStateMachine;
use rocketraft_raft::ClusterSecret;
use rocketraft_raft::RaftConfig;
use rocketraft_raft::RaftNode;
use rocketraft_raft::ReadMode;
use rocketraft_raft::StateMachineError;
use serde::Deserialize;
use serde::Serialize;

/// A key-value state machine with compare-and-set.
#[derive(Default)]
pub(crate) struct Kv {
    map: BTreeMap<String, i64>,
    applied: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Cmd {
    Put(String, i64),
    Add(String, i64),
    Cas(String, Option<i64>, i64),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Query {
    Get(String),
    Count,
}

impl AppStateMachine for Kv {
    type Command = Cmd;
    type Response = Result<Option<i64>, Option<i64>>;
    type Query = Query;
    type QueryResponse = Option<i64>;

    fn apply(&mut self, index: u64, command: Cmd) -> Self::Response {
        self.applied = index;
        match command {
            Cmd::Put(k, v) => Ok(self.map.insert(k, v)),
            Cmd::Add(k, d) => {
                let v = self.map.entry(k).or_insert(0);
                *v += d;
                Ok(Some(*v))
            }
            Cmd::Cas(k, expect, new) => {
                let current = self.map.get(&k).copied();
                if current == expect {
                    self.map.insert(k, new);
                    Ok(current)
                } else {
                    Err(current)
                }
            }
        }
    }

    fn query(&self, query: &Query) -> Option<i64> {
        match query {
            Query::Get(k) => self.map.get(k).copied(),
            Query::Count => Some(self.map.len() as i64),
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, StateMachineError> {
        serde_json::to_vec(&self.map).map_err(StateMachineError::snapshot_failed)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), StateMachineError> {
        self.map = serde_json::from_slice(bytes).map_err(StateMachineError::invalid_snapshot)?;
        Ok(())
    }
}

pub(crate) fn free_port() -> u16 {
    rocketraft_common::net::free_loopback_port().expect("a free loopback port")
}

pub(crate) fn config(
    id: u64,
    port: u16,
    dir: &Path,
    members: &BTreeMap<u64, String>,
) -> RaftConfig {
    RaftConfig {
        node_id: id,
        listen: format!("127.0.0.1:{port}").parse().expect("addr"),
        data_dir: dir.join(format!("node{id}")),
        initial_members: members.clone(),
        election_timeout_min_ms: 600,
        election_timeout_max_ms: 1200,
        heartbeat_interval_ms: 150,
        rpc_timeout_ms: 1000,
        client_timeout_ms: 15_000,
        snapshot_logs: 40,
        keep_logs: 5,
        ..RaftConfig::default()
    }
}

pub(crate) struct Cluster {
    pub(crate) ports: BTreeMap<u64, u16>,
    pub(crate) members: BTreeMap<u64, String>,
    pub(crate) nodes: BTreeMap<u64, RaftNode<Kv>>,
    /// Every node's `cluster_secret`.
    pub(crate) secret: Option<ClusterSecret>,
}

impl Cluster {
    pub(crate) async fn start(dir: &Path) -> Cluster {
        Cluster::start_with_secret(dir, None).await
    }

    pub(crate) async fn start_with_secret(dir: &Path, secret: Option<ClusterSecret>) -> Cluster {
        let ports: BTreeMap<u64, u16> = (1..=3).map(|id| (id, free_port())).collect();
        let members = ports
            .iter()
            .map(|(id, p)| (*id, format!("127.0.0.1:{p}")))
            .collect();
        let mut c = Cluster {
            ports,
            members,
            nodes: BTreeMap::new(),
            secret,
        };
        for id in 1..=3 {
            c.start_node(id, dir).await;
        }
        c
    }

    pub(crate) async fn start_node(&mut self, id: u64, dir: &Path) {
        let port = self.ports[&id];
        let config = config(id, port, dir, &self.members).with_cluster_secret(self.secret.clone());
        let node = RaftNode::start(config, Kv::default())
            .await
            .expect("node starts");
        self.nodes.insert(id, node);
    }

    pub(crate) async fn stop_node(&mut self, id: u64) {
        if let Some(node) = self.nodes.remove(&id) {
            node.shutdown().await;
        }
    }

    pub(crate) async fn leader(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            for (id, node) in &self.nodes {
                if node.is_leader() {
                    return *id;
                }
            }
            assert!(Instant::now() < deadline, "no leader within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) async fn wait_applied(&self, index: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for node in self.nodes.values() {
            loop {
                let applied = node.status().last_applied.unwrap_or(0);
                if applied >= index {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {} applied {applied} < {index}",
                    node.id()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_forward_reads_linearize_and_leader_loss_keeps_every_write() {
    let dir = rocketraft_common::testing::ScratchDir::new("raft").expect("a scratch dir");
    let mut cluster = Cluster::start(dir.path()).await;
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let follower = *cluster
        .nodes
        .keys()
        .find(|id| **id != leader)
        .expect("a follower");

    // A write on a follower is forwarded; a linearizable read on another follower sees it.
    let f = &cluster.nodes[&follower];
    assert_eq!(
        f.write(&Cmd::Put("a".into(), 1)).await.expect("write"),
        Ok(None)
    );
    for node in cluster.nodes.values() {
        let v = node
            .read(&Query::Get("a".into()), ReadMode::Linearizable)
            .await
            .expect("read");
        assert_eq!(v, Some(1), "linearizable read on node {}", node.id());
    }
    // CAS semantics through the log.
    assert_eq!(
        f.write(&Cmd::Cas("a".into(), Some(1), 2))
            .await
            .expect("cas"),
        Ok(Some(1))
    );
    assert_eq!(
        f.write(&Cmd::Cas("a".into(), Some(1), 3))
            .await
            .expect("cas"),
        Err(Some(2))
    );

    // Many acknowledged increments from every node, then kill the leader mid-stream.
    let mut acked = 0i64;
    for i in 0..30 {
        let id = *cluster
            .nodes
            .keys()
            .nth(i % cluster.nodes.len())
            .expect("node");
        cluster.nodes[&id]
            .write(&Cmd::Add("n".into(), 1))
            .await
            .expect("add")
            .expect("add applies");
        acked += 1;
    }
    cluster.stop_node(leader).await;
    let new_leader = cluster.leader(Duration::from_secs(20)).await;
    assert_ne!(new_leader, leader);
    // A read right after the leader change returns every acknowledged write.
    for node in cluster.nodes.values() {
        let v = node
            .read(&Query::Get("n".into()), ReadMode::Linearizable)
            .await
            .expect("read after leader change");
        assert_eq!(v, Some(acked));
    }
    // Writes continue with one node down.
    for node in cluster.nodes.values() {
        node.write(&Cmd::Add("n".into(), 1))
            .await
            .expect("add")
            .expect("add applies");
        acked += 1;
    }
    // The old leader comes back and catches up; stale reads there converge.
    cluster.start_node(leader, dir.path()).await;
    let last = cluster.nodes[&new_leader]
        .status()
        .last_log_index
        .expect("log");
    cluster.wait_applied(last, Duration::from_secs(20)).await;
    let v = cluster.nodes[&leader]
        .read(&Query::Get("n".into()), ReadMode::Stale)
        .await
        .expect("stale read");
    assert_eq!(v, Some(acked));

    for id in [1, 2, 3] {
        cluster.stop_node(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_disk_and_replace_a_wiped_node_by_snapshot() {
    let dir = rocketraft_common::testing::ScratchDir::new("raft").expect("a scratch dir");
    let mut cluster = Cluster::start(dir.path()).await;
    cluster.leader(Duration::from_secs(20)).await;
    // Enough writes for several snapshots (every 40 entries, 5 kept).
    for i in 0..150i64 {
        let id = [1u64, 2, 3][(i % 3) as usize];
        cluster.nodes[&id]
            .write(&Cmd::Put(format!("k{i}"), i))
            .await
            .expect("put")
            .expect("put applies");
    }
    let before: Vec<Option<i64>> = {
        let n = &cluster.nodes[&1];
        let mut v = Vec::new();
        for i in 0..150 {
            v.push(
                n.read(&Query::Get(format!("k{i}")), ReadMode::Linearizable)
                    .await
                    .expect("read"),
            );
        }
        v
    };
    let status = cluster.nodes[&1].status();
    assert!(
        status.snapshot.is_some(),
        "a snapshot was built: {status:?}"
    );

    // Stop everything and restart from disk: identical state.
    for id in [1, 2, 3] {
        cluster.stop_node(id).await;
    }
    for id in [1, 2, 3] {
        cluster.start_node(id, dir.path()).await;
    }
    cluster.leader(Duration::from_secs(20)).await;
    for (i, expected) in before.iter().enumerate() {
        let v = cluster.nodes[&2]
            .read(&Query::Get(format!("k{i}")), ReadMode::Linearizable)
            .await
            .expect("read after restart");
        assert_eq!(&v, expected, "k{i}");
    }

    // Node 3's disk dies: remove it, start a new node 4 on a fresh directory, add it. The log
    // before the last snapshot is purged, so it can only catch up by snapshot.
    cluster.stop_node(3).await;
    std::fs::remove_dir_all(dir.path().join("node3")).expect("wipe node 3");
    let answer = cluster.nodes[&1]
        .admin(AdminRequest::Remove { id: 3 })
        .await
        .expect("remove 3");
    assert!(answer.contains("committed"), "{answer}");
    for i in 150..200i64 {
        cluster.nodes[&1]
            .write(&Cmd::Put(format!("k{i}"), i))
            .await
            .expect("put")
            .expect("put applies");
    }
    let port4 = free_port();
    cluster.ports.insert(4, port4);
    let mut cfg4 = config(4, port4, dir.path(), &BTreeMap::new());
    cfg4.initial_members.clear();
    let node4 = RaftNode::start(cfg4, Kv::default())
        .await
        .expect("node 4 starts");
    cluster.nodes.insert(4, node4);
    cluster.nodes[&2]
        .admin(AdminRequest::AddLearner {
            id: 4,
            addr: format!("127.0.0.1:{port4}"),
        })
        .await
        .expect("add learner 4");
    cluster.nodes[&2]
        .admin(AdminRequest::Promote { id: 4 })
        .await
        .expect("promote 4");
    // Node 4 caught up by snapshot (the leader's log before it is purged) and learns the
    // committed membership with the next replication round.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = cluster.nodes[&4].status();
        if s.snapshot.is_some() && s.voters.contains_key(&4) && !s.voters.contains_key(&3) {
            break;
        }
        assert!(Instant::now() < deadline, "node 4: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Node 4 holds everything, read locally (stale mode: its own state machine).
    let last = cluster.nodes[&1].status().last_log_index.expect("log");
    cluster.wait_applied(last, Duration::from_secs(20)).await;
    for i in 0..200i64 {
        let v = cluster.nodes[&4]
            .read(&Query::Get(format!("k{i}")), ReadMode::Stale)
            .await
            .expect("stale read");
        assert_eq!(v, Some(i), "k{i} on node 4");
    }
    // The new membership tolerates losing one of the old nodes.
    cluster.stop_node(1).await;
    cluster.leader(Duration::from_secs(20)).await;
    cluster.nodes[&4]
        .write(&Cmd::Put("after".into(), 1))
        .await
        .expect("write with 2 of 3")
        .expect("put applies");
    for id in [2, 4] {
        cluster.stop_node(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_directory_of_another_node_is_refused() {
    let dir = rocketraft_common::testing::ScratchDir::new("raft").expect("a scratch dir");
    let port = free_port();
    let members = BTreeMap::from([(1, format!("127.0.0.1:{port}"))]);
    let node = RaftNode::start(config(1, port, dir.path(), &members), Kv::default())
        .await
        .expect("start");
    node.shutdown().await;
    // Same directory, another id: refused with the fix in the message.
    let mut cfg = config(1, free_port(), dir.path(), &members);
    cfg.node_id = 2;
    cfg.data_dir = dir.path().join("node1");
    let err = RaftNode::start(cfg, Kv::default())
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("belongs to node 1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_transfers_to_the_named_voter_and_writes_continue() {
    let dir = rocketraft_common::testing::ScratchDir::new("raft").expect("a scratch dir");
    let mut cluster = Cluster::start(dir.path()).await;
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let others: Vec<u64> = cluster
        .nodes
        .keys()
        .copied()
        .filter(|id| *id != leader)
        .collect();
    let (target, third) = (others[0], others[1]);
    for _ in 0..10 {
        cluster.nodes[&third]
            .write(&Cmd::Add("n".into(), 1))
            .await
            .expect("add")
            .expect("add applies");
    }
    let term_before = cluster.nodes[&leader].status().term;

    // Asked on the third node: forwarded to the leader, which answers once the target leads.
    let answer = cluster.nodes[&third]
        .admin(AdminRequest::TransferLeader { to: target })
        .await
        .expect("transfer");
    assert!(answer.contains(&format!("node {target} leads")), "{answer}");
    // The old leader has heard from the new one; the new one's own metrics follow at once.
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let status = cluster.nodes[&target].status();
        if status.leader == Some(target) || Instant::now() >= deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.leader, Some(target), "{status:?}");
    assert!(status.term > term_before, "{status:?}");
    assert_eq!(cluster.leader(Duration::from_secs(5)).await, target);

    // Writes go on from every node, and every acknowledged write is there.
    for node in cluster.nodes.values() {
        node.write(&Cmd::Add("n".into(), 1))
            .await
            .expect("add after the transfer")
            .expect("add applies");
    }
    for node in cluster.nodes.values() {
        let v = node
            .read(&Query::Get("n".into()), ReadMode::Linearizable)
            .await
            .expect("read after the transfer");
        assert_eq!(v, Some(13));
    }

    // Back to the first leader over the peer protocol (what the admin CLI uses), through the
    // node that is neither.
    let via = cluster.members[&third].clone();
    let answer = rocketraft_raft::remote_admin(
        &via,
        &AdminRequest::TransferLeader { to: leader },
        Duration::from_secs(15),
        None,
    )
    .await
    .expect("transfer back");
    assert!(answer.contains(&format!("node {leader} leads")), "{answer}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cluster.nodes[&leader].is_leader() {
        assert!(Instant::now() < deadline, "node {leader} does not lead");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // To the leader itself: nothing to do. To a node that is not a voter: refused.
    let answer = cluster.nodes[&target]
        .admin(AdminRequest::TransferLeader { to: leader })
        .await
        .expect("no-op transfer");
    assert!(answer.contains("already leads"), "{answer}");
    let err = cluster.nodes[&target]
        .admin(AdminRequest::TransferLeader { to: 9 })
        .await
        .expect_err("not a voter");
    assert!(err.to_string().contains("not a voter"), "{err}");
    cluster.nodes[&leader]
        .write(&Cmd::Add("n".into(), 1))
        .await
        .expect("add after the transfer back")
        .expect("add applies");

    for id in [1, 2, 3] {
        cluster.stop_node(id).await;
    }
}
