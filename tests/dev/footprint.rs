//! The disk footprint of an empty `rocketraft dev`: 64 MiB CommitLog segments unless configured
//! (issue 15 item 8), so the store takes a segment and the next one prepared ahead, not 2 GiB.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketraft_common::TopicConfig;
use rocketraft_remoting::api::{MqClientApi, SendRequest};
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{ClientConfig, RemotingClient};

use crate::support::{free_port, Dev};

const SEGMENT: u64 = 64 << 20;

/// The lengths of the CommitLog's segment files.
fn segment_lengths(commitlog: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(commitlog) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_dev_preallocates_small_segments() {
    let _turn = crate::support::file_turn(module_path!());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut dev = Dev::start(dir.path(), free_port(), free_port(), &[]);
    let api = MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(5),
    );
    let sent = async {
        api.create_topic(&dev.broker, &TopicConfig::new("Footprint", 1))
            .await?;
        api.send(
            &dev.broker,
            &SendRequest {
                producer_group: "pg".into(),
                topic: "Footprint".into(),
                queue_id: 0,
                body: Bytes::from_static(b"one"),
                properties: BTreeMap::new(),
                ..SendRequest::default()
            },
        )
        .await
    }
    .await;
    // The segment prepared ahead appears shortly after the first one.
    let commitlog = dir.path().join("broker").join("commitlog");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lengths = segment_lengths(&commitlog);
    while lengths.len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        lengths = segment_lengths(&commitlog);
    }
    let _ = dev.child.kill();
    let _ = dev.child.wait();
    let sent = sent.expect("send");
    assert_eq!(sent.code, response_code::SUCCESS);
    assert!(!lengths.is_empty(), "no CommitLog segment in {commitlog:?}");
    assert!(
        lengths.iter().all(|&l| l == SEGMENT),
        "segments of 64 MiB expected: {lengths:?}"
    );
    let total: u64 = lengths.iter().sum();
    assert!(total <= 2 * SEGMENT, "{total} bytes preallocated");
}
