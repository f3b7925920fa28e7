//! Lite topics' lifecycle on a real broker and NameServer on loopback: a LITE topic's
//! `lite.topic.expiration` cleans a lite topic that got no message for that long (every group's
//! offset of it deleted, no longer counted), never one younger than `minLiteTTl`; and a send
//! that would make more lite topics than `maxLmqConsumeQueueNum` is refused with
//! LMQ_QUOTA_EXCEEDED (2017) and stores nothing, until an expired one is cleaned.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use rocketraft_broker::store::FlushDiskType;
use rocketraft_broker::{Broker, BrokerConfig};
use rocketraft_common::TopicConfig;
use rocketraft_nameserver::{NameServer, NamesrvConfig};
use rocketraft_remoting::api::{ApiError, MqClientApi, SendRequest};
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{ClientConfig, RemotingClient};

const PARENT: &str = "LiteTtl";
const GROUP: &str = "lite-ttl-cg";

struct Node {
    namesrv: NameServer,
    broker: Broker,
    addr: String,
    api: MqClientApi,
}

/// A broker allowing `max_lmqs` lite topics, with a LITE topic whose lite topics expire after
/// one minute without a message.
async fn start(dir: &Path, max_lmqs: usize) -> Node {
    let namesrv = NameServer::start(NamesrvConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..NamesrvConfig::default()
    })
    .await
    .expect("namesrv");
    let mut config = BrokerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        namesrv_addr: namesrv.local_addr().to_string(),
        auto_create_topic_enable: false,
        max_lmq_consume_queue_num: max_lmqs,
        ..BrokerConfig::default()
    };
    config.store.store_root = dir.to_path_buf();
    config.store.commitlog_segment_size = 1 << 20;
    config.store.consume_queue_entries_per_file = 1024;
    config.store.flush_disk_type = FlushDiskType::SyncFlush;
    config.store.pretouch = false;
    let broker = Broker::start(config).await.expect("broker");
    let addr = broker.local_addr().to_string();
    let api = MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(10),
    );
    let mut parent = TopicConfig::new(PARENT, 2);
    parent
        .attributes
        .insert("message.type".into(), "LITE".into());
    parent
        .attributes
        .insert("lite.topic.expiration".into(), "1".into());
    api.create_topic(&addr, &parent).await.expect("topic");
    Node {
        namesrv,
        broker,
        addr,
        api,
    }
}

impl Node {
    async fn send(&self, lite: &str, body: &str) -> Result<(), ApiError> {
        let mut properties = BTreeMap::new();
        properties.insert("__LITE_TOPIC".to_string(), lite.to_string());
        self.api
            .send(
                &self.addr,
                &SendRequest {
                    producer_group: "lite-ttl-pg".into(),
                    topic: PARENT.into(),
                    queue_id: 0,
                    body: Bytes::from(body.to_string()),
                    properties,
                    ..SendRequest::default()
                },
            )
            .await
            .map(drop)
    }

    fn stored(&self, lite: &str) -> i64 {
        self.broker
            .inner()
            .store
            .get_max_offset_in_queue(&format!("%LMQ%${PARENT}${lite}"), 0)
    }

    /// One expiry check as the broker's loop runs it, `ahead_ms` after now.
    fn clean(&self, min_lite_ttl_ms: i64, ahead_ms: i64) -> Vec<String> {
        let inner = self.broker.inner();
        let now = rocketraft_common::time::now_ms() + ahead_ms;
        inner
            .lite
            .clean_expired(
                &inner.store,
                &inner.metadata,
                &inner.topics,
                min_lite_ttl_ms,
                now,
            )
            .expect("clean")
            .cleaned
    }

    async fn stop(self) {
        self.broker.shutdown().await;
        self.namesrv.shutdown().await;
    }
}

fn quota_refusal(result: Result<(), ApiError>) -> String {
    match result {
        Err(ApiError::Refused(r)) if r.code == response_code::LMQ_QUOTA_EXCEEDED => r.remark,
        other => panic!("expected LMQ_QUOTA_EXCEEDED, got {other:?}"),
    }
}

#[tokio::test]
async fn the_lite_topic_quota_refuses_a_new_lite_topic_until_one_expires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), 2).await;
    node.send("a", "a-0").await.expect("first lite topic");
    node.send("b", "b-0").await.expect("second lite topic");
    // Existing lite topics take more messages; a third is refused and stores nothing.
    node.send("a", "a-1").await.expect("an existing lite topic");
    let remark = quota_refusal(node.send("c", "c-0").await);
    assert!(remark.contains("maxLmqConsumeQueueNum"), "{remark}");
    assert_eq!(node.stored("c"), 0);
    // The group consumed `b` up to its end.
    let inner = node.broker.inner();
    let b = format!("%LMQ%${PARENT}$b");
    inner
        .metadata
        .commit_offset(GROUP, &b, 0, 1)
        .expect("commit");

    // Nothing is expired before its minute, nor while younger than minLiteTTl.
    assert!(node.clean(0, 0).is_empty());
    assert!(node.clean(10 * 60_000, 2 * 60_000).is_empty());
    // Two minutes on, both lite topics have gone a minute without a message.
    let mut cleaned = node.clean(0, 2 * 60_000);
    cleaned.sort();
    assert_eq!(
        cleaned,
        vec![format!("%LMQ%${PARENT}$a"), format!("%LMQ%${PARENT}$b")]
    );
    assert_eq!(
        inner.metadata.query_offset(GROUP, &b, 0).expect("query"),
        None,
        "the group's offset of the cleaned lite topic is gone"
    );
    assert!(node.clean(0, 2 * 60_000).is_empty(), "cleaned once");
    // Room again: a new lite topic is taken, and a cleaned one comes back with its next message.
    node.send("c", "c-0")
        .await
        .expect("room after the cleaning");
    node.send("a", "a-2")
        .await
        .expect("a cleaned lite topic again");
    assert_eq!(node.stored("c"), 1);
    assert_eq!(node.stored("a"), 3);
    quota_refusal(node.send("d", "d-0").await);
    node.stop().await;
}

#[tokio::test]
async fn lite_topics_of_a_topic_without_expiration_never_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), 10).await;
    let mut forever = TopicConfig::new("LiteForever", 1);
    forever
        .attributes
        .insert("message.type".into(), "LITE".into());
    node.api
        .create_topic(&node.addr, &forever)
        .await
        .expect("topic");
    let mut properties = BTreeMap::new();
    properties.insert("__LITE_TOPIC".to_string(), "x".to_string());
    node.api
        .send(
            &node.addr,
            &SendRequest {
                producer_group: "lite-ttl-pg".into(),
                topic: "LiteForever".into(),
                queue_id: 0,
                body: Bytes::from_static(b"x-0"),
                properties,
                ..SendRequest::default()
            },
        )
        .await
        .expect("send");
    node.send("a", "a-0").await.expect("send");
    // A day on, only the lite topic of the topic with an expiration is cleaned.
    assert_eq!(
        node.clean(0, 24 * 3_600_000),
        vec![format!("%LMQ%${PARENT}$a")]
    );
    node.stop().await;
}
