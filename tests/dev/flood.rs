//! A flood of idle connections against a real `rocketraft dev` (issue 16 item 5): 10 000 idle
//! TCP connections to the broker's Remoting port, and an honest client still creates a topic,
//! sends and pulls; the broker's memory stays bounded (its RSS is printed for the record).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use rocketraft_common::consts::pull_sys_flag;
use rocketraft_common::TopicConfig;
use rocketraft_remoting::api::{MqClientApi, PullRequest, PullStatus, SendRequest};
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{ClientConfig, RemotingClient};
use tokio::net::TcpStream;

use crate::support::{free_port, Dev};

const IDLE_CONNECTIONS: usize = 10_000;

/// The resident set of a process, in KiB (from /proc).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Sends `n` messages and pulls them back from queue 0.
async fn send_and_pull(api: &MqClientApi, broker: &str, n: usize) {
    for i in 0..n {
        let r = api
            .send(
                broker,
                &SendRequest {
                    producer_group: "pg".into(),
                    topic: "Flood".into(),
                    queue_id: 0,
                    body: Bytes::from(format!("m{i}")),
                    properties: BTreeMap::new(),
                    ..SendRequest::default()
                },
            )
            .await
            .expect("send under the flood");
        assert_eq!(r.code, response_code::SUCCESS);
    }
    let pulled = api
        .pull(
            broker,
            &PullRequest {
                consumer_group: "cg".into(),
                topic: "Flood".into(),
                queue_id: 0,
                queue_offset: 0,
                max_msg_nums: 32,
                sys_flag: pull_sys_flag::SUBSCRIPTION,
                commit_offset: -1,
                suspend_timeout_ms: 0,
                subscription: Some("*".into()),
            },
        )
        .await
        .expect("pull under the flood");
    assert_eq!(pulled.status, PullStatus::Found);
    assert_eq!(pulled.messages.len(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_leave_the_broker_serving() {
    let _turn = crate::support::file_turn(module_path!());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut dev = Dev::start(dir.path(), free_port(), free_port(), &[]);
    let pid = dev.child.id();
    let outcome = async {
        let before = rss_kib(pid);
        let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
        for _ in 0..IDLE_CONNECTIONS {
            idle.push(TcpStream::connect(&dev.broker).await.expect("connect"));
        }
        // Let the broker accept them all and become the longest idle.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let api = MqClientApi::new(
            RemotingClient::new(ClientConfig::default()),
            Duration::from_secs(10),
        );
        api.create_topic(&dev.broker, &TopicConfig::new("Flood", 1))
            .await
            .expect("topic under the flood");
        send_and_pull(&api, &dev.broker, 20).await;
        let during = rss_kib(pid);
        println!(
            "broker RSS: {} MiB before, {} MiB under {IDLE_CONNECTIONS} idle connections ({:.2}x)",
            before / 1024,
            during / 1024,
            during as f64 / before.max(1) as f64
        );
        drop(idle);
        during
    }
    .await;
    let _ = dev.child.kill();
    let _ = dev.child.wait();
    assert!(
        outcome < 1 << 20,
        "broker RSS {} MiB under the flood",
        outcome / 1024
    );
}
