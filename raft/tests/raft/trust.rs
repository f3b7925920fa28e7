//! Cluster trust on the Raft peer port (issue 16, item 2): a real three-node cluster whose
//! members share a cluster secret replicates, forwards and installs snapshots as one without;
//! calls to a member's port that do not prove the secret, prove another one, or replay a proven
//! call are refused with UNAUTHENTICATED, and nothing changes (terms, membership, data).

use std::time::Duration;
use std::time::Instant;

use rocketraft_raft::auth;
use rocketraft_raft::pb;
use rocketraft_raft::pb::raft_peer_client::RaftPeerClient;
use rocketraft_raft::types::Reply;
use rocketraft_raft::types::Request;
use rocketraft_raft::AdminRequest;
use rocketraft_raft::ClusterSecret;
use rocketraft_raft::RaftClientError;
use rocketraft_raft::ReadMode;
use rocketraft_raft::RemoteError;
use rocketraft_raft::TypeConfig;
use tonic::transport::Channel;

use crate::cluster::Cluster;
use crate::cluster::Cmd;
use crate::cluster::Query;

const HUGE_TERM: u64 = 1 << 40;

fn secret() -> ClusterSecret {
    ClusterSecret::new("raft-trust-test-secret-0123").expect("secret")
}

fn wrong_secret() -> ClusterSecret {
    ClusterSecret::new("raft-trust-test-secret-XXXX").expect("secret")
}

async fn raw_client(addr: &str) -> RaftPeerClient<Channel> {
    RaftPeerClient::connect(format!("http://{addr}"))
        .await
        .expect("connects")
}

/// A vote from a made-up node 9 with a huge term, marked as a leadership transfer (so no lease
/// would hold it back): a real openraft vote request, which only its authentication stops.
fn forged_vote() -> pb::Blob {
    let json = serde_json::to_vec(&serde_json::json!({
        "vote": {"leader_id": {"term": HUGE_TERM, "node_id": 9}, "committed": false},
        "last_log_id": null,
        "leadership_transfer": true,
    }))
    .expect("json");
    let _: openraft::raft::VoteRequest<TypeConfig> =
        serde_json::from_slice(&json).expect("a valid vote request");
    pb::Blob { json }
}

fn with_metadata(
    metadata: &tonic::metadata::MetadataMap,
    blob: &pb::Blob,
) -> tonic::Request<pb::Blob> {
    tonic::Request::from_parts(metadata.clone(), tonic::Extensions::default(), blob.clone())
}

fn assert_unauthenticated(what: &str, result: Result<tonic::Response<pb::Blob>, tonic::Status>) {
    match result {
        Err(status) => assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{what}: {status:?}"
        ),
        Ok(r) => panic!(
            "{what} was accepted: {}",
            String::from_utf8_lossy(&r.get_ref().json)
        ),
    }
}

fn assert_remote_unauthenticated<T: std::fmt::Debug>(what: &str, result: Result<T, RemoteError>) {
    match result {
        Err(RemoteError::Status { status, .. }) => assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{what}: {status:?}"
        ),
        other => panic!("{what}: expected UNAUTHENTICATED, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_cluster_secret_members_work_and_unproven_or_replayed_rpcs_are_refused() {
    let dir = rocketraft_common::testing::ScratchDir::new("raft").expect("a scratch dir");
    let secret = secret();
    let wrong = wrong_secret();
    let mut cluster = Cluster::start_with_secret(dir.path(), Some(secret.clone())).await;
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let others: Vec<u64> = cluster
        .nodes
        .keys()
        .copied()
        .filter(|id| *id != leader)
        .collect();
    let (follower, third) = (others[0], others[1]);

    // Elections, replication, forwarded writes and linearizable reads from followers.
    for i in 0..30i64 {
        cluster.nodes[&follower]
            .write(&Cmd::Put(format!("k{i}"), i))
            .await
            .expect("forwarded write")
            .expect("put applies");
    }
    for node in cluster.nodes.values() {
        let v = node
            .read(&Query::Get("k29".into()), ReadMode::Linearizable)
            .await
            .expect("linearizable read");
        assert_eq!(v, Some(29), "node {}", node.id());
    }
    // A member that was down catches up by an (authenticated) snapshot: the log behind the
    // last snapshot is purged meanwhile.
    cluster.stop_node(third).await;
    for i in 30..120i64 {
        cluster.nodes[&follower]
            .write(&Cmd::Put(format!("k{i}"), i))
            .await
            .expect("write with 2 of 3")
            .expect("put applies");
    }
    cluster.start_node(third, dir.path()).await;
    let last = cluster.nodes[&leader].status().last_log_index.expect("log");
    cluster.wait_applied(last, Duration::from_secs(20)).await;
    let status = cluster.nodes[&third].status();
    assert!(
        status.snapshot.is_some(),
        "caught up by snapshot: {status:?}"
    );
    assert_eq!(
        cluster.nodes[&third]
            .read(&Query::Get("k119".into()), ReadMode::Stale)
            .await
            .expect("stale read"),
        Some(119)
    );

    // Tools: with the secret the status answers; without it or with another one, refused.
    let addr = cluster.members[&follower].clone();
    let status = rocketraft_raft::remote_status(&addr, Duration::from_secs(5), Some(&secret))
        .await
        .expect("status with the secret");
    assert_eq!(status.id, follower);
    let term = status.term;
    let voters = status.voters.clone();
    for (what, s) in [("no secret", None), ("wrong secret", Some(&wrong))] {
        assert_remote_unauthenticated(
            &format!("status with {what}"),
            rocketraft_raft::remote_status(&addr, Duration::from_secs(5), s).await,
        );
        assert_remote_unauthenticated(
            &format!("membership change with {what}"),
            rocketraft_raft::remote_admin(
                &addr,
                &AdminRequest::Remove { id: third },
                Duration::from_secs(5),
                s,
            )
            .await,
        );
    }

    // Raw calls: a vote with a huge term, unsigned, signed with another secret, or carrying a
    // proof made for another method or another body; a membership change forwarded as if from
    // a member, unsigned and wrongly signed.
    let vote = forged_vote();
    for id in [follower, third, leader] {
        let mut client = raw_client(&cluster.members[&id]).await;
        assert_unauthenticated("unsigned vote", client.vote(vote.clone()).await);
        assert_unauthenticated(
            "vote signed with another secret",
            client
                .vote(auth::blob_request(
                    vote.clone(),
                    Some(&wrong),
                    Some(9),
                    Some(id),
                    auth::method::VOTE,
                ))
                .await,
        );
        let for_status = auth::metadata(
            Some(&secret),
            Some(9),
            Some(id),
            auth::method::STATUS,
            &[&vote.json],
        );
        assert_unauthenticated(
            "vote with a proof for another method",
            client.vote(with_metadata(&for_status, &vote)).await,
        );
        let for_other_body = auth::metadata(
            Some(&secret),
            Some(9),
            Some(id),
            auth::method::VOTE,
            &[b"{}"],
        );
        assert_unauthenticated(
            "vote with a proof of another body",
            client.vote(with_metadata(&for_other_body, &vote)).await,
        );
        let remove = pb::Blob {
            json: serde_json::to_vec(&(AdminRequest::Remove { id: follower }, false))
                .expect("json"),
        };
        assert_unauthenticated(
            "unsigned membership change",
            client.admin(remove.clone()).await,
        );
        assert_unauthenticated(
            "membership change signed with another secret",
            client
                .admin(auth::blob_request(
                    remove,
                    Some(&wrong),
                    Some(leader),
                    Some(id),
                    auth::method::ADMIN,
                ))
                .await,
        );
    }
    // Nothing changed: no node adopted the forged term, the membership is the same, the leader
    // still leads.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for node in cluster.nodes.values() {
        let s = node.status();
        assert!(
            s.term < HUGE_TERM,
            "node {} took the forged term: {s:?}",
            s.id
        );
        assert!(s.term >= term, "{s:?}");
        assert_eq!(s.voters, voters, "node {}", s.id);
    }
    assert_eq!(cluster.leader(Duration::from_secs(5)).await, leader);

    // A proven forwarded write is applied once; the same bytes again are refused as a replay.
    let mut client = raw_client(&cluster.members[&leader]).await;
    let write = pb::Blob {
        json: serde_json::to_vec(&Request {
            client: 0xfeed,
            serial: 1,
            payload: serde_json::to_string(&Cmd::Add("replayed".into(), 1)).expect("json"),
        })
        .expect("json"),
    };
    let metadata = auth::metadata(
        Some(&secret),
        Some(follower),
        Some(leader),
        auth::method::WRITE,
        &[&write.json],
    );
    // Recorded on its way to the leader and played to the other members first: each refuses
    // a proof made for another node.
    for id in [follower, third] {
        let mut other = raw_client(&cluster.members[&id]).await;
        let refused = other
            .write(with_metadata(&metadata, &write))
            .await
            .expect_err("a proof for the leader");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
        assert!(refused.message().contains("another node"), "{refused:?}");
    }
    let answer = client
        .write(with_metadata(&metadata, &write))
        .await
        .expect("a proven write is served");
    let reply: Result<Reply, RaftClientError> =
        serde_json::from_slice(&answer.get_ref().json).expect("reply");
    reply.expect("applied");
    let replay = client
        .write(with_metadata(&metadata, &write))
        .await
        .expect_err("replay refused");
    assert_eq!(replay.code(), tonic::Code::Unauthenticated, "{replay:?}");
    assert!(replay.message().contains("replayed"), "{replay:?}");
    // A replayed status query too (nothing to change, but refused all the same).
    let mut fclient = raw_client(&cluster.members[&follower]).await;
    let query = pb::Blob {
        json: b"null".to_vec(),
    };
    let metadata = auth::metadata(
        Some(&secret),
        None,
        None,
        auth::method::STATUS,
        &[&query.json],
    );
    fclient
        .status(with_metadata(&metadata, &query))
        .await
        .expect("a proven status query is served");
    assert_unauthenticated(
        "replayed status query",
        fclient.status(with_metadata(&metadata, &query)).await,
    );
    assert_eq!(
        cluster.nodes[&third]
            .read(&Query::Get("replayed".into()), ReadMode::Linearizable)
            .await
            .expect("read"),
        Some(1)
    );

    // The honest members are still fine: writes from every node.
    let start = Instant::now();
    for node in cluster.nodes.values() {
        node.write(&Cmd::Add("after".into(), 1))
            .await
            .expect("write after the attacks")
            .expect("add applies");
    }
    assert!(start.elapsed() < Duration::from_secs(10));
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    for id in ids {
        cluster.stop_node(id).await;
    }
}

/// The peer port holds at most `max_peer_connections` connections: one more is closed at once,
/// and a member's RPCs work again once the idle ones go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_port_refuses_connections_beyond_its_maximum() {
    use tokio::io::AsyncReadExt;

    let dir = rocketraft_common::testing::ScratchDir::new("raft").expect("a scratch dir");
    let port = crate::cluster::free_port();
    let addr = format!("127.0.0.1:{port}");
    let members = std::collections::BTreeMap::from([(1, addr.clone())]);
    let mut config = crate::cluster::config(1, port, dir.path(), &members);
    config.max_peer_connections = 4;
    let node = rocketraft_raft::RaftNode::start(config, crate::cluster::Kv::default())
        .await
        .expect("node starts");
    let status = || rocketraft_raft::remote_status(&addr, Duration::from_secs(2), None);
    status().await.expect("the port answers");

    // Four idle connections take every slot (the status call's connection is gone by now, or
    // goes within a few seconds).
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(
            tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connects"),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut extra = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("TCP accepts");
        let mut buf = [0u8; 64];
        // Refused: closed without a byte (a served connection would get the HTTP/2 preface's
        // SETTINGS, or wait for ours).
        match tokio::time::timeout(Duration::from_secs(1), extra.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            // Served: a slot was still free (the status call's connection had not gone yet
            // when the idle ones came); this one holds it now.
            _ => {
                assert!(
                    Instant::now() < deadline && idle.len() < 8,
                    "connections beyond the maximum were served"
                );
                idle.push(extra);
            }
        }
    }
    assert!(
        status().await.is_err(),
        "an RPC got a slot beyond the maximum"
    );

    // The idle connections go; RPCs are served again.
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(10);
    while status().await.is_err() {
        assert!(Instant::now() < deadline, "the slots were never given back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.shutdown().await;
}
