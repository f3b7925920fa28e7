//! A whole broker whose disk fills (issue 15 item 3), driven through the Remoting client API:
//! the store root is a small real tmpfs and a ballast file fills it. Sends are refused with
//! SERVICE_NOT_AVAILABLE and a remark naming the full disk, UPDATE_AND_CREATE_TOPIC is refused
//! the same way when the metadata RocksDB cannot write, reads go on, and once the ballast is
//! removed both work again without a restart; a restart finds every acknowledged message and
//! topic, and none of the refused topics.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketraft_broker::store::FlushDiskType;
use rocketraft_broker::{Broker, BrokerConfig};
use rocketraft_common::consts::pull_sys_flag;
use rocketraft_common::testing::{fill_disk, Tmpfs};
use rocketraft_common::TopicConfig;
use rocketraft_nameserver::{NameServer, NamesrvConfig};
use rocketraft_remoting::api::{ApiError, MqClientApi, PullRequest, SendRequest};
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{ClientConfig, RemotingClient};

fn broker_config(root: &Path, namesrv: SocketAddr) -> BrokerConfig {
    let mut config = BrokerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        namesrv_addr: namesrv.to_string(),
        auto_create_topic_enable: false,
        advertised_addr: None,
        ..BrokerConfig::default()
    };
    let store = &mut config.store;
    store.store_root = root.to_path_buf();
    store.commitlog_segment_size = 128 * 1024;
    store.consume_queue_entries_per_file = 2_000;
    store.flush_disk_type = FlushDiskType::SyncFlush;
    store.pretouch = false;
    store.max_message_size = 64 * 1024;
    store.message_index_enable = false;
    // Nothing acknowledged may be deleted to make room: no forced cleaning, nothing expires.
    store.clean_file_forcibly_enable = false;
    store.disk_max_used_space_ratio = 95;
    store.disk_space_clean_forcibly_ratio = 95;
    store.file_reserved_time = 72;
    store.clean_resource_interval_ms = 200;
    config
}

fn message(topic: &str, body: &str) -> SendRequest {
    SendRequest {
        producer_group: "pg".to_string(),
        topic: topic.to_string(),
        queue_id: 0,
        body: Bytes::from(body.to_string()),
        properties: BTreeMap::new(),
        ..SendRequest::default()
    }
}

fn pull(topic: &str, offset: i64) -> PullRequest {
    PullRequest {
        consumer_group: "cg".to_string(),
        topic: topic.to_string(),
        queue_id: 0,
        queue_offset: offset,
        max_msg_nums: 1,
        sys_flag: pull_sys_flag::SUBSCRIPTION,
        commit_offset: -1,
        suspend_timeout_ms: 0,
        subscription: Some("*".to_string()),
    }
}

/// A refusal for the full disk: SERVICE_NOT_AVAILABLE, a remark that says so.
fn assert_full_disk_refusal(e: &ApiError, what: &str) {
    assert_eq!(
        e.code(),
        Some(response_code::SERVICE_NOT_AVAILABLE),
        "{what}: {e}"
    );
    let remark = e.to_string().to_lowercase();
    assert!(
        remark.contains("no space left")
            || remark.contains("disk is full")
            || remark.contains("no disk space"),
        "{what}: {e}"
    );
}

/// Every acknowledged message is at its offset with its body.
async fn check_messages(api: &MqClientApi, addr: &str, acked: &[(String, i64, String)]) {
    for (topic, offset, body) in acked {
        let r = api
            .pull(addr, &pull(topic, *offset))
            .await
            .expect("pull an acknowledged message");
        let m = r
            .messages
            .first()
            .unwrap_or_else(|| panic!("{topic}@{offset} missing: {:?}", r.status));
        assert_eq!(m.queue_offset, *offset, "{topic}@{offset}");
        assert_eq!(m.body, Bytes::from(body.clone()), "{topic}@{offset}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_sends_and_topics_clearly_and_the_broker_serves_again_once_space_is_freed(
) {
    let Some(fs) = Tmpfs::mount_or_skip("16m") else {
        return;
    };
    let root = fs.dir.join("store");
    let ballast = fs.dir.join("ballast");
    let namesrv = NameServer::start(NamesrvConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..NamesrvConfig::default()
    })
    .await
    .expect("namesrv starts");
    let broker = Broker::start(broker_config(&root, namesrv.local_addr()))
        .await
        .expect("broker starts");
    let addr = broker.local_addr().to_string();
    let api = MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(5),
    );

    api.create_topic(&addr, &TopicConfig::new("Orders", 1))
        .await
        .expect("create topic");
    let mut acked_topics = vec!["Orders".to_string()];
    let mut acked: Vec<(String, i64, String)> = Vec::new();
    let body = |i: usize| format!("{i:0>6}").repeat(150);
    let mut n = 0usize;
    for _ in 0..20 {
        let b = body(n);
        n += 1;
        let r = api.send(&addr, &message("Orders", &b)).await.expect("send");
        assert_eq!(r.code, response_code::SUCCESS);
        acked.push(("Orders".into(), r.queue_offset, b));
    }

    // The disk fills: sends go on until the store refuses them, clearly.
    fill_disk(&ballast);
    let send_refusal = loop {
        assert!(n < 5_000, "sends never refused");
        let b = body(n);
        n += 1;
        match api.send(&addr, &message("Orders", &b)).await {
            Ok(r) if r.code == response_code::SUCCESS => {
                acked.push(("Orders".into(), r.queue_offset, b))
            }
            Ok(r) => panic!("stored but not durable: {r:?}"),
            Err(e) => break e,
        }
    };
    eprintln!("send refused: {send_refusal}");
    assert_full_disk_refusal(&send_refusal, "send");

    // Topic creation writes the metadata RocksDB: refused once it cannot write.
    let mut refused_topics = Vec::new();
    for i in 0.. {
        assert!(i < 500, "topic creation never refused");
        fill_disk(&ballast);
        let topic = format!("Full{i}");
        match api.create_topic(&addr, &TopicConfig::new(&topic, 1)).await {
            Ok(()) => acked_topics.push(topic),
            Err(e) => {
                eprintln!("topic creation refused: {e}");
                assert_full_disk_refusal(&e, "create topic");
                refused_topics.push(topic);
                break;
            }
        }
    }
    // Still full: refused again, and reads go on.
    let again = api
        .send(&addr, &message("Orders", "refused"))
        .await
        .expect_err("still full");
    assert_full_disk_refusal(&again, "send");
    check_messages(&api, &addr, &acked).await;

    // Space freed: both work again without a restart.
    std::fs::remove_file(&ballast).expect("free space");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let b = body(n);
        n += 1;
        match api.send(&addr, &message("Orders", &b)).await {
            Ok(r) if r.code == response_code::SUCCESS => {
                acked.push(("Orders".into(), r.queue_offset, b));
                break;
            }
            other => {
                assert!(
                    Instant::now() < deadline,
                    "sends not accepted again: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    loop {
        match api.create_topic(&addr, &TopicConfig::new("After", 1)).await {
            Ok(()) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "topics not created again: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    acked_topics.push("After".into());
    let r = api
        .send(&addr, &message("After", "after"))
        .await
        .expect("send to the new topic");
    assert_eq!(r.code, response_code::SUCCESS);
    acked.push(("After".into(), r.queue_offset, "after".into()));
    check_messages(&api, &addr, &acked).await;
    eprintln!(
        "{} messages and {} topics acknowledged, {} topics refused",
        acked.len(),
        acked_topics.len(),
        refused_topics.len()
    );
    broker.shutdown().await;

    // A restart has every acknowledged message and topic, and no refused topic.
    let broker = Broker::start(broker_config(&root, namesrv.local_addr()))
        .await
        .expect("broker restarts");
    let addr = broker.local_addr().to_string();
    let topics = api.broker_topics(&addr).await.expect("topics");
    for t in &acked_topics {
        assert!(topics.topic_config_table.contains_key(t), "{t} lost");
    }
    for t in &refused_topics {
        assert!(
            !topics.topic_config_table.contains_key(t),
            "{t} was refused"
        );
    }
    check_messages(&api, &addr, &acked).await;
    broker.shutdown().await;
    namesrv.shutdown().await;
    drop(fs);
}
