//! Lite topics' lifecycle on a real broker and NameServer on loopback: a LITE topic's
//! `lite.topic.expiration` cleans a lite topic that got no message for that long (every group's
//! offset of it deleted, no longer counted), never one younger than `minLiteTTl`; and a send
//! that would make more lite topics than `maxLmqConsumeQueueNum` is refused with
//! LMQ_QUOTA_EXCEEDED (2017) and stores nothing, until an expired one is cleaned.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use rocketraft_broker::lite::CleanReport;
use rocketraft_broker::metalog::ExpiredQueue;
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
    start_with(dir, max_lmqs, |_| {}).await
}

/// [`start`] with the broker's configuration changed by `tune`.
async fn start_with(dir: &Path, max_lmqs: usize, tune: impl FnOnce(&mut BrokerConfig)) -> Node {
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
    tune(&mut config);
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
    async fn clean(&self, min_lite_ttl_ms: i64, ahead_ms: i64) -> Vec<String> {
        let found = self.find(min_lite_ttl_ms, ahead_ms);
        self.expire(found).await.cleaned
    }

    /// What an expiry check `ahead_ms` after now finds expired.
    fn find(&self, min_lite_ttl_ms: i64, ahead_ms: i64) -> Vec<ExpiredQueue> {
        let inner = self.broker.inner();
        let now = rocketraft_common::time::now_ms() + ahead_ms;
        inner
            .lite
            .find_expired(&inner.store, &inner.topics, min_lite_ttl_ms, now)
    }

    /// Expires what a check found, as the broker's loop does.
    async fn expire(&self, found: Vec<ExpiredQueue>) -> CleanReport {
        let inner = self.broker.inner();
        inner.lite.expire(inner, found).await.expect("expire")
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
    assert!(node.clean(0, 0).await.is_empty());
    assert!(node.clean(10 * 60_000, 2 * 60_000).await.is_empty());
    // Two minutes on, both lite topics have gone a minute without a message.
    let mut cleaned = node.clean(0, 2 * 60_000).await;
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
    assert!(node.clean(0, 2 * 60_000).await.is_empty(), "cleaned once");
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
        node.clean(0, 24 * 3_600_000).await,
        vec![format!("%LMQ%${PARENT}$a")]
    );
    node.stop().await;
}

fn bodies(messages: &[rocketraft_common::message::MessageExt]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.message.body).to_string())
        .collect()
}

impl Node {
    async fn pop(&self, group: &str, lite: &str) -> Vec<String> {
        let got = self
            .api
            .pop(
                &self.addr,
                group,
                &format!("%LMQ%${PARENT}${lite}"),
                -1,
                32,
                60_000,
                0,
                false,
            )
            .await
            .expect("pop");
        bodies(&got)
    }

    /// A POP with initMode 1 (CONSUME_FROM_LAST_OFFSET, the Java client's default): a group
    /// without an offset starts at the queue's end.
    async fn pop_from_last(&self, group: &str, lite: &str) -> Vec<String> {
        let request = rocketraft_remoting::RemotingCommand::request(
            rocketraft_remoting::codes::request_code::POP_MESSAGE,
        )
        .with_ext("consumerGroup", group)
        .with_ext("topic", format!("%LMQ%${PARENT}${lite}"))
        .with_ext("queueId", -1)
        .with_ext("maxMsgNums", 32)
        .with_ext("invisibleTime", 60_000)
        .with_ext("pollTime", 0)
        .with_ext("bornTime", rocketraft_common::time::now_ms())
        .with_ext("initMode", 1);
        let r = self
            .api
            .remoting()
            .invoke(&self.addr, request, Duration::from_secs(10))
            .await
            .expect("pop");
        match r.code {
            response_code::SUCCESS => bodies(
                &rocketraft_common::message::decode_messages(&r.body).expect("decodable pop body"),
            ),
            response_code::PULL_NOT_FOUND | response_code::POLLING_TIMEOUT => Vec::new(),
            code => panic!("pop answered {code} {:?}", r.remark),
        }
    }

    /// Applies an expiry record as if it lay at CommitLog offset `at`.
    fn apply_expiry_at(&self, found: &[ExpiredQueue], at: i64) {
        let inner = self.broker.inner();
        rocketraft_broker::metalog::apply_change(
            inner,
            &rocketraft_broker::metalog::MetadataChange::ExpireLite {
                queues: found.to_vec(),
            },
            Some(at),
        )
        .expect("apply");
    }
}

/// Item 8, a send racing an expiry: the check saw the lite topic idle, then a message came.
/// Before the expiry's record (or before it is planned) the lite topic is left whole: nothing
/// cut, the lagging group's offset kept, everything delivered. After the record, the entries
/// before the cut go (the lagging group loses what expired, as the expiry says) but the new
/// message stays and every group gets it: a message sent during an expiry is never lost. The
/// cut and the expiry survive a restart, and queue offsets go on from where they were.
#[tokio::test]
async fn a_send_racing_an_expiry_is_never_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), 10).await;
    let q = format!("%LMQ%${PARENT}$a");
    node.send("a", "a-0").await.expect("send");
    node.send("a", "a-1").await.expect("send");
    let inner = node.broker.inner().clone();
    inner
        .metadata
        .commit_offset("lagging", &q, 0, 0)
        .expect("commit");

    // 1. Found expired, then a message comes before the expiry is planned: left out.
    let found = node.find(0, 2 * 60_000);
    assert_eq!(found.len(), 1);
    node.send("a", "a-2").await.expect("send");
    let report = node.expire(found.clone()).await;
    assert!(report.cleaned.is_empty(), "{report:?}");
    assert_eq!(report.kept, vec![q.clone()]);
    // 2. ... or after it was planned, before its record: the record leaves it alone.
    let at = inner.store.dispatched_phy_offset();
    node.apply_expiry_at(&found, at);
    assert_eq!(inner.lite.expired_at(&q), None);
    assert_eq!(inner.store.get_min_offset_in_queue(&q, 0), 0);
    assert_eq!(
        inner
            .metadata
            .query_offset("lagging", &q, 0)
            .expect("query"),
        Some(0)
    );
    assert_eq!(node.pop("lagging", "a").await, ["a-0", "a-1", "a-2"]);

    // 3. Found expired at 3, its record placed, then a message comes: the cut is at 3, the
    //    message after it stays and both groups get it.
    inner
        .metadata
        .commit_offset("lagging2", &q, 0, 1)
        .expect("commit");
    // A group that read everything (its offset is the queue's end) and pops from the last
    // offset (initMode 1): its offset goes with the expiry, and it must still get the message
    // that came after the expiry rather than start past it.
    inner
        .metadata
        .commit_offset("caught-up", &q, 0, 3)
        .expect("commit");
    let found = node.find(0, 2 * 60_000);
    assert_eq!(
        found,
        vec![ExpiredQueue {
            queue: q.clone(),
            next: 3
        }]
    );
    let at = inner.store.dispatched_phy_offset();
    node.send("a", "a-3").await.expect("send");
    node.apply_expiry_at(&found, at);
    assert_eq!(inner.lite.expired_at(&q), Some(3));
    assert_eq!(inner.store.get_min_offset_in_queue(&q, 0), 3);
    assert_eq!(inner.store.get_max_offset_in_queue(&q, 0), 4);
    assert_eq!(
        inner.store.get_cq_entry(&q, 0, 2),
        None,
        "the expired entries are gone"
    );
    for group in ["lagging", "lagging2"] {
        assert_eq!(
            inner.metadata.query_offset(group, &q, 0).expect("query"),
            None,
            "{group}'s offset at or below the cut is deleted"
        );
    }
    assert_eq!(node.pop("lagging", "a").await, ["a-3"]);
    assert_eq!(node.pop("lagging2", "a").await, ["a-3"]);
    assert_eq!(
        inner
            .metadata
            .query_offset("caught-up", &q, 0)
            .expect("query"),
        None
    );
    assert_eq!(node.pop_from_last("caught-up", "a").await, ["a-3"]);
    // A pull consumer asks for its offset (QUERY_CONSUMER_OFFSET) and, told none, would start
    // from the end (CONSUME_FROM_LAST_OFFSET) past a-3: it is told the cut instead.
    assert_eq!(
        node.api
            .query_consumer_offset(&node.addr, "pull-from-last", &q, 0)
            .await
            .expect("query"),
        Some(3)
    );
    // Asked whether the group committed at all (`setZeroIfNotFound` off, as the proxy asks
    // before it places a new lite subscription): not found.
    let probe = rocketraft_remoting::RemotingCommand::request(
        rocketraft_remoting::codes::request_code::QUERY_CONSUMER_OFFSET,
    )
    .with_ext("consumerGroup", "pull-from-last")
    .with_ext("topic", q.as_str())
    .with_ext("queueId", 0)
    .with_ext("setZeroIfNotFound", false);
    let r = node
        .api
        .remoting()
        .invoke(&node.addr, probe, Duration::from_secs(10))
        .await
        .expect("query");
    assert_eq!(r.code, response_code::QUERY_NOT_FOUND, "{:?}", r.remark);
    // Applied twice (a replica replaying its log): the same.
    node.apply_expiry_at(&found, at);
    assert_eq!(inner.store.get_min_offset_in_queue(&q, 0), 3);
    assert_eq!(inner.store.get_max_offset_in_queue(&q, 0), 4);
    // Bad input: a name that is no lite topic's queue changes nothing.
    node.send("b", "b-0").await.expect("send");
    node.apply_expiry_at(
        &[ExpiredQueue {
            queue: "NotALiteQueue".into(),
            next: 0,
        }],
        inner.store.dispatched_phy_offset(),
    );
    let qb = format!("%LMQ%${PARENT}$b");
    // Nor does a lite topic's queue named with a negative offset.
    node.apply_expiry_at(
        &[ExpiredQueue {
            queue: qb.clone(),
            next: -1,
        }],
        inner.store.dispatched_phy_offset(),
    );
    assert_eq!(inner.lite.expired_at("NotALiteQueue"), None);
    assert_eq!(inner.lite.expired_at(&qb), None);
    assert_eq!(inner.store.get_min_offset_in_queue(&qb, 0), 0);
    assert_eq!(inner.store.get_max_offset_in_queue(&qb, 0), 1);
    assert_eq!(inner.store.get_min_offset_in_queue(&q, 0), 3);
    assert_eq!(inner.store.get_max_offset_in_queue(&q, 0), 4);
    assert_eq!(node.pop("b-reader", "b").await, ["b-0"]);
    drop(inner);

    // Across a restart: still cut at 3, still expired, offsets go on.
    node.stop().await;
    let node = start(dir.path(), 10).await;
    let inner = node.broker.inner().clone();
    assert_eq!(inner.lite.expired_at(&q), Some(3));
    assert_eq!(inner.store.get_min_offset_in_queue(&q, 0), 3);
    assert_eq!(inner.store.get_max_offset_in_queue(&q, 0), 4);
    node.send("a", "a-4").await.expect("send");
    assert_eq!(node.stored("a"), 5);
    assert_eq!(node.pop("fresh", "a").await, ["a-3", "a-4"]);
    drop(inner);
    node.stop().await;
}

/// Item 8: a lite topic whose last message went with the CommitLog's retention expires too
/// (its last store time is bounded by the oldest record left), its group offset deleted; a
/// lite topic with a young message does not.
#[tokio::test]
async fn a_lite_topic_whose_messages_went_with_retention_expires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_with(dir.path(), 10, |c| {
        c.store.commitlog_segment_size = 64 * 1024;
        c.store.file_reserved_time_secs = Some(1);
        c.store.delete_when = (0..24)
            .map(|h| format!("{h:02}"))
            .collect::<Vec<_>>()
            .join(";");
        c.store.clean_resource_interval_ms = 3_600_000;
        c.store.delete_commit_log_files_interval_ms = 0;
    })
    .await;
    let q = format!("%LMQ%${PARENT}$old");
    node.send("old", "old-0").await.expect("send");
    let inner = node.broker.inner().clone();
    inner
        .metadata
        .commit_offset(GROUP, &q, 0, 1)
        .expect("commit");
    // Other messages fill four segments (a normal topic: no lite topic of their own).
    node.api
        .create_topic(&node.addr, &TopicConfig::new("Filler", 1))
        .await
        .expect("topic");
    let body = Bytes::from(vec![b'x'; 4096]);
    while inner.store.max_phy_offset() < 4 * 64 * 1024 + 1000 {
        node.api
            .send(
                &node.addr,
                &SendRequest {
                    producer_group: "lite-ttl-pg".into(),
                    topic: "Filler".into(),
                    queue_id: 0,
                    body: body.clone(),
                    ..SendRequest::default()
                },
            )
            .await
            .expect("filler");
    }
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let store = inner.store.clone();
    tokio::task::spawn_blocking(move || store.clean_now().expect("cleaning round"))
        .await
        .expect("join");
    assert!(inner.store.min_phy_offset() > 0, "segments deleted");
    assert_eq!(
        inner.store.get_message_store_timestamp(&q, 0, 0),
        None,
        "the lite topic's only message went with retention"
    );
    // Not a minute old as the oldest record left says: not yet.
    assert!(node.clean(0, 0).await.is_empty());
    assert_eq!(node.clean(0, 2 * 60_000).await, vec![q.clone()]);
    assert_eq!(
        inner.metadata.query_offset(GROUP, &q, 0).expect("query"),
        None
    );
    assert_eq!(inner.lite.expired_at(&q), Some(1));
    assert_eq!(inner.lite.live_count(&inner.store, 0), 0);
    drop(inner);
    node.stop().await;
}

/// Item 8, the quota is a kept count: first sends of many new lite topics at once take exactly
/// the places left (before, two at the same moment could both take the last one), and a
/// refused one stores nothing.
#[tokio::test]
async fn concurrent_first_sends_never_pass_the_lite_topic_quota() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), 3).await;
    node.send("first", "first-0").await.expect("send");
    let sends = (0..12).map(|i| {
        let node = &node;
        async move { (i, node.send(&format!("new{i}"), "x").await) }
    });
    let results = futures::future::join_all(sends).await;
    let mut accepted = 0;
    for (i, r) in results {
        match r {
            Ok(()) => accepted += 1,
            Err(e) => {
                quota_refusal(Err(e));
                assert_eq!(node.stored(&format!("new{i}")), 0);
            }
        }
    }
    assert_eq!(accepted, 2, "exactly the two places left are taken");
    let inner = node.broker.inner();
    assert_eq!(inner.lite.live_count(&inner.store, 0), 3);
    node.stop().await;
}
