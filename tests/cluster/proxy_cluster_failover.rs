//! The proxy in cluster mode follows a failover: `rocketraft cluster up` (three controllers, a
//! NameServer, a broker set of three replicas with `min_in_sync_replicas = 2`) and a
//! `rocketraft proxy` process; a gRPC client sends through the proxy, the master is killed with
//! SIGKILL mid-run, and the client's sends through the same proxy succeed again once a slave
//! is elected. A final drain through the proxy finds every acknowledged message.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rocketraft_proxy::pb;
use rocketraft_proxy::pb::messaging_service_client::MessagingServiceClient;
use tonic::transport::Channel;

use crate::support::{admin_output, free_port, resource, spawn_ready};
use crate::{grpc_send, UpCluster};

const TOPIC: &str = "ProxyFailover";
const GROUP: &str = "proxy-failover";

async fn send(client: &mut MessagingServiceClient<Channel>, i: usize) -> bool {
    grpc_send(client, TOPIC, &format!("PF-{i:05}"), &format!("m{i}"), None).await
}

async fn drain(client: &mut MessagingServiceClient<Channel>) -> Vec<String> {
    let mut req = tonic::Request::new(pb::ReceiveMessageRequest {
        group: resource(GROUP),
        message_queue: Some(pb::MessageQueue {
            topic: resource(TOPIC),
            id: -1,
            ..pb::MessageQueue::default()
        }),
        filter_expression: None,
        batch_size: 32,
        invisible_duration: Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
        auto_renew: false,
        long_polling_timeout: Some(prost_types::Duration {
            seconds: 2,
            nanos: 0,
        }),
        attempt_id: None,
    });
    req.set_timeout(Duration::from_secs(10));
    let mut ids = Vec::new();
    let Ok(r) = client.receive_message(req).await else {
        return ids;
    };
    let mut stream = r.into_inner();
    let mut entries = Vec::new();
    while let Ok(Some(item)) = stream.message().await {
        if let Some(pb::receive_message_response::Content::Message(m)) = item.content {
            let p = m.system_properties.unwrap_or_default();
            ids.push(p.message_id.clone());
            entries.push(pb::AckMessageEntry {
                message_id: p.message_id,
                receipt_handle: p.receipt_handle.unwrap_or_default(),
                lite_topic: None,
            });
        }
    }
    if !entries.is_empty() {
        let r = client
            .ack_message(pb::AckMessageRequest {
                group: resource(GROUP),
                topic: resource(TOPIC),
                entries,
            })
            .await
            .expect("ack")
            .into_inner();
        assert_eq!(r.status.map(|s| s.code), Some(pb::Code::Ok as i32));
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_follows_a_failover_and_loses_no_acknowledged_message() {
    let _turn = crate::support::file_turn(module_path!());
    let cluster = UpCluster::default();
    let up = vec![
        "--threads",
        "2",
        "cluster",
        "up",
        "--dir",
        cluster.dir(),
        "--ports",
        "auto",
        "--segment-size",
        "4194304",
        "--min-in-sync-replicas",
        "2",
        "--timeout-secs",
        "60",
    ];
    crate::quick_failover_up(up);
    let namesrv = cluster.namesrv();
    // A topic creation is a metadata record every SyncStateSet member must hold, refused while
    // the set is smaller than min_in_sync_replicas (the slaves may still be catching up right
    // after `cluster up`), or while the master's lease waits for its next renewal (a leader
    // refuses to confirm one while a write, such as a slave joining the set, is in flight;
    // with the quick timings and a loaded machine a lease can lapse between two renewals):
    // retry until the set is complete and the master holds its lease.
    let deadline = Instant::now() + Duration::from_secs(30);
    let created = loop {
        let out = admin_output(&namesrv, &["topic", "create", TOPIC, "--queues", "4"]);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).to_string();
        }
        assert!(
            (stderr.contains("in-sync replicas not enough")
                || stderr.contains("the master lease of epoch"))
                && Instant::now() < deadline,
            "admin topic create failed: {stderr}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(created.contains("created topic"), "{created}");
    let proxy_addr = format!("127.0.0.1:{}", free_port());
    let _proxy = spawn_ready(&["proxy", "--listen", &proxy_addr, "--namesrv", &namesrv]);
    let mut client = MessagingServiceClient::connect(format!("http://{proxy_addr}"))
        .await
        .expect("connect");

    let mut acked = BTreeSet::new();
    let mut i = 0;
    // Before: the proxy finds the master (the topic reaches the slaves within their sync
    // period; the route exists at once).
    let started = Instant::now();
    while acked.len() < 30 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no sends through the proxy"
        );
        if send(&mut client, i).await {
            acked.insert(format!("PF-{i:05}"));
        }
        i += 1;
    }
    let master = cluster
        .status()
        .into_iter()
        .find(|r| r["kind"] == "broker" && r["role"] == "master")
        .expect("a master");
    let pid = master["pid"].as_i64().expect("pid") as i32;
    // SAFETY: kill(2) on a PID this test's cluster started (read from its status).
    let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill -9 the master");
    let killed = Instant::now();
    let mut first_after = None;
    let before = acked.len();
    while acked.len() < before + 30 {
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "no send through the proxy succeeded within 60 s of the failover"
        );
        if send(&mut client, i).await {
            acked.insert(format!("PF-{i:05}"));
            first_after.get_or_insert(killed.elapsed());
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        i += 1;
    }
    eprintln!(
        "first send acknowledged through the proxy {:?} after kill -9 of the master",
        first_after
    );
    let mut seen = BTreeSet::new();
    let started = Instant::now();
    while !acked.is_subset(&seen) && started.elapsed() < Duration::from_secs(60) {
        seen.extend(drain(&mut client).await);
    }
    let lost: Vec<&String> = acked.difference(&seen).collect();
    assert!(lost.is_empty(), "acknowledged but never received: {lost:?}");
}
