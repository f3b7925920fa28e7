//! POP_LITE_MESSAGE (200070) over Remoting to a real broker and NameServer on loopback: a
//! request held on lite topics with nothing to give is answered as soon as one of them gets a
//! message (store arrivals, not a poll); each lite topic gets its turn across requests; a FIFO
//! request consumes a lite topic in order; a lite topic that expired with no message since is
//! named in `expiredLiteTopics` (at once, not held), and no longer once it got a message; bad
//! input is refused with INVALID_PARAMETER (TOPIC_NOT_EXIST for an unknown parent) and changes
//! nothing. Exclusive groups (`liteSubExclusive`): a lite topic claimed by another client
//! (LITE_SUBSCRIPTION_CTL) is never popped for the former one, which is told it is evicted.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketraft_broker::store::FlushDiskType;
use rocketraft_broker::{Broker, BrokerConfig};
use rocketraft_common::message::MessageExt;
use rocketraft_common::TopicConfig;
use rocketraft_nameserver::{NameServer, NamesrvConfig};
use rocketraft_remoting::api::{
    LiteCtlRequest, MqClientApi, PopLiteRequest, PopLiteResult, SendRequest, LITE_FIRST_LOOK,
};
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::{ClientConfig, RemotingClient, RemotingCommand};

const PARENT: &str = "PopLiteParent";
const PLAIN: &str = "PopLitePlain";
const GROUP: &str = "pop-lite-cg";

struct Node {
    namesrv: NameServer,
    broker: Broker,
    addr: String,
    api: MqClientApi,
}

async fn start(dir: &Path) -> Node {
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
    // Lite topics expire after a minute without a message (the tests check as if later).
    parent
        .attributes
        .insert("lite.topic.expiration".into(), "1".into());
    api.create_topic(&addr, &parent).await.expect("topic");
    api.create_topic(&addr, &TopicConfig::new(PLAIN, 1))
        .await
        .expect("topic");
    Node {
        namesrv,
        broker,
        addr,
        api,
    }
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn bodies(messages: &[MessageExt]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.message.body).to_string())
        .collect()
}

fn lmq(lite: &str) -> String {
    format!("%LMQ%${PARENT}${lite}")
}

impl Node {
    async fn send(&self, lite: &str, body: &str) {
        let mut properties = BTreeMap::new();
        properties.insert("__LITE_TOPIC".to_string(), lite.to_string());
        self.api
            .send(
                &self.addr,
                &SendRequest {
                    producer_group: "pop-lite-pg".into(),
                    topic: PARENT.into(),
                    queue_id: 0,
                    body: Bytes::from(body.to_string()),
                    properties,
                    ..SendRequest::default()
                },
            )
            .await
            .expect("send");
    }

    async fn pop_lite(
        &self,
        lites: &[String],
        start: usize,
        max: i32,
        poll_ms: i64,
        order: bool,
    ) -> PopLiteResult {
        self.api
            .pop_lite(
                &self.addr,
                &PopLiteRequest {
                    group: GROUP,
                    topic: PARENT,
                    lite_topics: lites,
                    known_cuts: &[],
                    start_index: start,
                    max,
                    invisible_ms: 60_000,
                    poll_ms,
                    order,
                    filter: None,
                    client_id: None,
                },
            )
            .await
            .expect("pop lite")
    }

    async fn ack(&self, m: &MessageExt) {
        let lite = m
            .message
            .property("__LITE_TOPIC")
            .expect("a lite message names its lite topic")
            .to_string();
        self.api
            .ack(&self.addr, GROUP, &lmq(&lite), m)
            .await
            .expect("ack");
    }

    async fn stop(self) {
        self.broker.shutdown().await;
        self.namesrv.shutdown().await;
    }
}

/// A request held on two lite topics is answered right after a send to one of them, long
/// before its poll time; one with nothing is held for its poll time and answered empty.
#[tokio::test]
async fn a_held_pop_lite_is_answered_when_one_of_its_lite_topics_gets_a_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = std::sync::Arc::new(start(dir.path()).await);
    let lites = names(&["a", "b"]);

    let started = Instant::now();
    let empty = node.pop_lite(&lites, 0, 32, 500, false).await;
    assert!(empty.messages.is_empty());
    assert!(empty.expired.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "held for its poll time: {:?}",
        started.elapsed()
    );

    let waiting = {
        let node = node.clone();
        let lites = lites.clone();
        tokio::spawn(async move {
            let r = node.pop_lite(&lites, 0, 32, 20_000, false).await;
            (r, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "held while nothing is there");
    let sent = Instant::now();
    node.send("b", "b-0").await;
    let (got, answered) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("answered")
        .expect("task");
    let after = answered.duration_since(sent);
    assert_eq!(bodies(&got.messages), ["b-0"]);
    assert!(
        after < Duration::from_millis(1_000),
        "answered {after:?} after the send"
    );
    eprintln!("held POP_LITE_MESSAGE answered {after:?} after the send");
    match std::sync::Arc::try_unwrap(node) {
        Ok(node) => node.stop().await,
        Err(_) => panic!("the node is still shared"),
    }
}

/// Each lite topic gets its turn: the start index picks the first, a full batch takes the
/// others after it; a FIFO request takes a lite topic's messages in order and nothing more of
/// it while they are in flight.
#[tokio::test]
async fn lite_topics_take_turns_and_fifo_keeps_each_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    for lite in ["a", "b", "c"] {
        for i in 0..3 {
            node.send(lite, &format!("{lite}-{i}")).await;
        }
    }
    let lites = names(&["a", "b", "c"]);
    // One message per request: the lite topic whose turn it is.
    assert_eq!(
        bodies(&node.pop_lite(&lites, 0, 1, 0, false).await.messages),
        ["a-0"]
    );
    assert_eq!(
        bodies(&node.pop_lite(&lites, 1, 1, 0, false).await.messages),
        ["b-0"]
    );
    assert_eq!(
        bodies(&node.pop_lite(&lites, 5, 1, 0, false).await.messages),
        ["c-0"],
        "the start index wraps around"
    );
    // A batch starting at b takes b's, then c's, then a's.
    assert_eq!(
        bodies(&node.pop_lite(&lites, 1, 32, 0, false).await.messages),
        ["b-1", "b-2", "c-1", "c-2", "a-1", "a-2"]
    );

    // FIFO on lite topic f: in order, then nothing of it while in flight, the next after acks.
    for i in 0..3 {
        node.send("f", &format!("f-{i}")).await;
    }
    let f = names(&["f"]);
    let first = node.pop_lite(&f, 0, 32, 0, true).await.messages;
    assert_eq!(bodies(&first), ["f-0", "f-1", "f-2"]);
    node.send("f", "f-3").await;
    assert!(
        node.pop_lite(&f, 0, 32, 0, true).await.messages.is_empty(),
        "a FIFO lite topic gives nothing while its messages are in flight"
    );
    for m in &first {
        node.ack(m).await;
    }
    assert_eq!(
        bodies(&node.pop_lite(&f, 0, 32, 0, true).await.messages),
        ["f-3"]
    );
    node.stop().await;
}

/// A lite topic that expired with no message since is reported (at once, though the request
/// could wait), the others not; after a new message to it, it is alive: delivered, not
/// reported.
#[tokio::test]
async fn an_expired_lite_topic_is_reported_until_it_gets_a_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    node.send("x", "x-0").await;
    let got = node.pop_lite(&names(&["x"]), 0, 32, 0, false).await;
    assert_eq!(bodies(&got.messages), ["x-0"]);
    node.ack(&got.messages[0]).await;
    // Two minutes on, x has gone a minute without a message: expired as the broker's check does.
    let inner = node.broker.inner();
    let found = inner.lite.find_expired(
        &inner.store,
        &inner.topics,
        0,
        rocketraft_common::time::now_ms() + 2 * 60_000,
    );
    let report = inner.lite.expire(inner, found).await.expect("expire");
    assert_eq!(report.cleaned, vec![lmq("x")]);

    let lites = names(&["never-sent", "x"]);
    let started = Instant::now();
    let r = node.pop_lite(&lites, 0, 32, 10_000, false).await;
    assert!(r.messages.is_empty());
    assert_eq!(r.expired, ["x"], "only the expired lite topic");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered at once: {:?}",
        started.elapsed()
    );

    node.send("x", "x-1").await;
    let r = node.pop_lite(&lites, 0, 32, 0, false).await;
    assert_eq!(bodies(&r.messages), ["x-1"]);
    assert!(r.expired.is_empty(), "alive again: {:?}", r.expired);
    node.stop().await;
}

/// Every bad request is refused with its code and changes nothing: no message popped (a
/// valid request afterwards gets them all), no queue offsets moved.
#[tokio::test]
async fn bad_pop_lite_requests_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    node.send("a", "a-0").await;
    node.send("b", "b-0").await;
    let request = |topic: &str, body: &str, tweak: &[(&'static str, &str)]| {
        let mut r = RemotingCommand::request(request_code::POP_LITE_MESSAGE)
            .with_ext("consumerGroup", GROUP)
            .with_ext("topic", topic)
            .with_ext("maxMsgNums", 32)
            .with_ext("invisibleTime", 60_000)
            .with_ext("pollTime", 0)
            .with_ext("startIndex", 0)
            .with_body(Bytes::from(body.to_string()));
        for (k, v) in tweak {
            r = r.with_ext(*k, *v);
        }
        r
    };
    let ab = r#"{"liteTopics":["a","b"]}"#;
    let too_many = serde_json::json!({
        "liteTopics": (0..101).map(|i| format!("t{i}")).collect::<Vec<_>>()
    })
    .to_string();
    let invalid = response_code::INVALID_PARAMETER;
    let cases: Vec<(&str, RemotingCommand, i32)> = vec![
        (
            "no lite topic",
            request(PARENT, r#"{"liteTopics":[]}"#, &[]),
            invalid,
        ),
        ("101 lite topics", request(PARENT, &too_many, &[]), invalid),
        (
            "a name with the separator",
            request(PARENT, r#"{"liteTopics":["a","b$c"]}"#, &[]),
            invalid,
        ),
        (
            "a blank name",
            request(PARENT, r#"{"liteTopics":["a"," "]}"#, &[]),
            invalid,
        ),
        (
            "a body that is no list",
            request(PARENT, "a,b", &[]),
            invalid,
        ),
        (
            "a parent that is not LITE",
            request(PLAIN, ab, &[]),
            invalid,
        ),
        (
            "an unknown parent",
            request("NoSuchTopic", ab, &[]),
            response_code::TOPIC_NOT_EXIST,
        ),
        (
            "a negative poll time",
            request(PARENT, ab, &[("pollTime", "-1")]),
            invalid,
        ),
        (
            "a negative start index",
            request(PARENT, ab, &[("startIndex", "-1")]),
            invalid,
        ),
        (
            "a negative invisible time",
            request(PARENT, ab, &[("invisibleTime", "-5")]),
            invalid,
        ),
        (
            "no messages asked for",
            request(PARENT, ab, &[("maxMsgNums", "0")]),
            invalid,
        ),
    ];
    for (what, command, want) in cases {
        let r = node
            .api
            .remoting()
            .invoke(&node.addr, command, Duration::from_secs(10))
            .await
            .expect("answered");
        assert_eq!(r.code, want, "{what}: {:?}", r.remark);
        assert!(r.body.is_empty(), "{what}: no messages");
    }
    // Nothing changed: both messages still there for the group, offsets as they were.
    let inner = node.broker.inner();
    for lite in ["a", "b"] {
        assert_eq!(inner.store.get_min_offset_in_queue(&lmq(lite), 0), 0);
        assert_eq!(inner.store.get_max_offset_in_queue(&lmq(lite), 0), 1);
        assert_eq!(
            inner
                .metadata
                .query_offset(GROUP, &lmq(lite), 0)
                .expect("query"),
            None,
            "no offset committed for {lite}"
        );
    }
    let r = node.pop_lite(&names(&["a", "b"]), 0, 32, 0, false).await;
    assert_eq!(bodies(&r.messages), ["a-0", "b-0"]);
    node.stop().await;
}

const EXCLUSIVE: &str = "pop-lite-exclusive-cg";

impl Node {
    async fn create_group(&self, group: &str, exclusive: bool) {
        self.api
            .call(
                &self.addr,
                RemotingCommand::request(request_code::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
                    .with_body(
                        serde_json::to_vec(&serde_json::json!({
                            "groupName": group, "liteSubExclusive": exclusive
                        }))
                        .expect("json"),
                    ),
                &[response_code::SUCCESS],
            )
            .await
            .expect("group created");
    }

    /// LITE_SUBSCRIPTION_CTL: `client` of `group` claims `lites`; answers `exclusive`.
    async fn claim(&self, group: &str, client: &str, lites: &[String], take_over: bool) -> bool {
        self.api
            .lite_subscription_ctl(
                &self.addr,
                &LiteCtlRequest {
                    group,
                    topic: PARENT,
                    client_id: client,
                    lite_topics: lites,
                    released: &[],
                    take_over,
                },
            )
            .await
            .expect("claimed")
    }

    async fn pop_as(
        &self,
        group: &str,
        client: &str,
        lites: &[String],
        poll_ms: i64,
    ) -> PopLiteResult {
        self.api
            .pop_lite(
                &self.addr,
                &PopLiteRequest {
                    group,
                    topic: PARENT,
                    lite_topics: lites,
                    known_cuts: &[],
                    start_index: 0,
                    max: 32,
                    invisible_ms: 60_000,
                    poll_ms,
                    order: false,
                    filter: None,
                    client_id: Some(client),
                },
            )
            .await
            .expect("pop lite")
    }
}

/// An exclusive group: client A claims lite topic x, then B claims it: A's POP_LITE_MESSAGE
/// gets x as evicted (at once, with its other lite topic's messages) and never x's messages,
/// B gets them; a claim without take-over does not steal; a held request of A is answered as
/// soon as B takes x; a release lets the lite topic be claimed by anyone.
#[tokio::test]
async fn an_exclusive_group_evicts_a_lite_topic_another_client_claimed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    node.create_group(EXCLUSIVE, true).await;
    let xy = names(&["x", "y"]);
    assert!(
        node.claim(EXCLUSIVE, "A", &xy, true).await,
        "the group is exclusive"
    );
    node.send("x", "x-1").await;
    node.send("y", "y-1").await;
    // B claims x, A keeps y.
    assert!(node.claim(EXCLUSIVE, "B", &names(&["x"]), true).await);
    let a = node.pop_as(EXCLUSIVE, "A", &xy, 10_000).await;
    assert_eq!(a.evicted, names(&["x"]));
    assert_eq!(bodies(&a.messages), ["y-1"], "A gets y only");
    let b = node.pop_as(EXCLUSIVE, "B", &names(&["x"]), 0).await;
    assert!(b.evicted.is_empty());
    assert_eq!(bodies(&b.messages), ["x-1"]);
    // Asked again with nothing to give, A is answered at once (not held) with x evicted.
    let started = Instant::now();
    let a = node.pop_as(EXCLUSIVE, "A", &xy, 10_000).await;
    assert_eq!(a.evicted, names(&["x"]));
    assert!(a.messages.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // A claim without take-over (a COMPLETE_ADD re-listing) does not steal x back.
    node.claim(EXCLUSIVE, "A", &names(&["x"]), false).await;
    node.send("x", "x-2").await;
    let a = node.pop_as(EXCLUSIVE, "A", &names(&["x"]), 0).await;
    assert_eq!(a.evicted, names(&["x"]));
    assert!(a.messages.is_empty(), "{:?}", bodies(&a.messages));
    assert_eq!(
        bodies(
            &node
                .pop_as(EXCLUSIVE, "B", &names(&["x"]), 0)
                .await
                .messages
        ),
        ["x-2"]
    );
    // A request of A held on y is answered as soon as B takes y.
    let held = {
        let api = node.api.clone();
        let addr = node.addr.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let lites = names(&["y"]);
            let r = api
                .pop_lite(
                    &addr,
                    &PopLiteRequest {
                        group: EXCLUSIVE,
                        topic: PARENT,
                        lite_topics: &lites,
                        known_cuts: &[],
                        start_index: 0,
                        max: 32,
                        invisible_ms: 60_000,
                        poll_ms: 20_000,
                        order: false,
                        filter: None,
                        client_id: Some("A"),
                    },
                )
                .await
                .expect("pop lite");
            (r, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(node.claim(EXCLUSIVE, "B", &names(&["y"]), true).await);
    let (r, took) = held.await.expect("held request");
    assert_eq!(r.evicted, names(&["y"]));
    assert!(
        took < Duration::from_secs(10),
        "answered when y was taken: {took:?}"
    );
    // B releases x: A may claim it without take-over, and gets its messages again.
    node.api
        .lite_subscription_ctl(
            &node.addr,
            &LiteCtlRequest {
                group: EXCLUSIVE,
                topic: PARENT,
                client_id: "B",
                lite_topics: &[],
                released: &names(&["x"]),
                take_over: false,
            },
        )
        .await
        .expect("released");
    node.claim(EXCLUSIVE, "A", &names(&["x"]), false).await;
    node.send("x", "x-3").await;
    let a = node.pop_as(EXCLUSIVE, "A", &names(&["x"]), 0).await;
    assert!(a.evicted.is_empty());
    assert_eq!(bodies(&a.messages), ["x-3"]);
    node.stop().await;
}

/// A group that is not exclusive records no owner: every client pops every lite topic it
/// names, and the broker says the group is not exclusive.
#[tokio::test]
async fn a_non_exclusive_group_is_not_evicted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    node.create_group("pop-lite-shared-cg", false).await;
    let x = names(&["x"]);
    assert!(!node.claim("pop-lite-shared-cg", "A", &x, true).await);
    assert!(!node.claim("pop-lite-shared-cg", "B", &x, true).await);
    node.send("x", "x-1").await;
    let a = node.pop_as("pop-lite-shared-cg", "A", &x, 0).await;
    assert!(a.evicted.is_empty());
    assert_eq!(bodies(&a.messages), ["x-1"]);
    node.send("x", "x-2").await;
    let b = node.pop_as("pop-lite-shared-cg", "B", &x, 0).await;
    assert!(b.evicted.is_empty());
    assert_eq!(bodies(&b.messages), ["x-2"]);
    node.stop().await;
}

/// Bad LITE_SUBSCRIPTION_CTL requests are refused with their code and record nothing: the
/// client that claimed first still owns its lite topic afterwards.
#[tokio::test]
async fn bad_lite_subscription_ctl_requests_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    node.create_group(EXCLUSIVE, true).await;
    node.claim(EXCLUSIVE, "A", &names(&["x"]), true).await;
    let request = |topic: &str, client: &str, body: &str, tweak: &[(&'static str, &str)]| {
        let mut r = RemotingCommand::request(request_code::LITE_SUBSCRIPTION_CTL)
            .with_ext("consumerGroup", EXCLUSIVE)
            .with_ext("topic", topic)
            .with_ext("clientId", client)
            .with_ext("takeOver", true)
            .with_body(Bytes::from(body.to_string()));
        for (k, v) in tweak {
            r = r.with_ext(*k, *v);
        }
        r
    };
    let x = r#"{"liteTopics":["x"]}"#;
    let too_many = serde_json::json!({
        "liteTopics": (0..101).map(|i| format!("t{i}")).collect::<Vec<_>>()
    })
    .to_string();
    let invalid = response_code::INVALID_PARAMETER;
    let mut no_client = request(PARENT, "B", x, &[]);
    no_client.ext_fields.remove("clientId");
    let cases: Vec<(&str, RemotingCommand, i32)> = vec![
        ("no client id", no_client, response_code::SYSTEM_ERROR),
        ("a blank client id", request(PARENT, " ", x, &[]), invalid),
        (
            "no lite topic",
            request(PARENT, "B", r#"{"liteTopics":[]}"#, &[]),
            invalid,
        ),
        (
            "101 lite topics",
            request(PARENT, "B", &too_many, &[]),
            invalid,
        ),
        (
            "an illegal name after a good one",
            request(PARENT, "B", r#"{"liteTopics":["x","a$b"]}"#, &[]),
            invalid,
        ),
        (
            "a body that is no object",
            request(PARENT, "B", "x", &[]),
            invalid,
        ),
        (
            "a takeOver that is no boolean",
            request(PARENT, "B", x, &[("takeOver", "yes")]),
            invalid,
        ),
        (
            "a parent that is not LITE",
            request(PLAIN, "B", x, &[]),
            invalid,
        ),
        (
            "an unknown parent",
            request("NoSuchTopic", "B", x, &[]),
            response_code::TOPIC_NOT_EXIST,
        ),
    ];
    for (what, command, want) in cases {
        let r = node
            .api
            .remoting()
            .invoke(&node.addr, command, Duration::from_secs(10))
            .await
            .expect("answered");
        assert_eq!(r.code, want, "{what}: {:?}", r.remark);
        assert!(
            r.remark.as_deref().is_some_and(|m| !m.is_empty()),
            "{what}: says why"
        );
    }
    // A still owns x: B is evicted from it, A gets its message.
    node.send("x", "x-1").await;
    let b = node.pop_as(EXCLUSIVE, "B", &names(&["x"]), 0).await;
    assert_eq!(b.evicted, names(&["x"]));
    assert!(b.messages.is_empty());
    let a = node.pop_as(EXCLUSIVE, "A", &names(&["x"]), 0).await;
    assert_eq!(bodies(&a.messages), ["x-1"]);
    node.stop().await;
}

/// The owners of a lite topic go with its expiry: the owner map does not keep expired lite
/// topics, and a lite topic made again by a later message is popped by whichever client of
/// the exclusive group claims it next (no stale owner evicts it).
#[tokio::test]
async fn an_expired_lite_topic_forgets_its_owner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    node.create_group(EXCLUSIVE, true).await;
    let inner = node.broker.inner().clone();
    let epoch = inner.ha.as_ref().map_or(0, |ha| ha.master_epoch() as i64);
    node.send("x", "x-0").await;
    node.send("y", "y-0").await;
    assert!(node.claim(EXCLUSIVE, "A", &names(&["x", "y"]), true).await);
    assert_eq!(
        inner
            .lite_owners
            .owner(epoch, EXCLUSIVE, &lmq("x"))
            .as_deref(),
        Some("A")
    );
    // x expires (two minutes on, as the broker's check does); y got a message since.
    let found: Vec<_> = inner
        .lite
        .find_expired(
            &inner.store,
            &inner.topics,
            0,
            rocketraft_common::time::now_ms() + 2 * 60_000,
        )
        .into_iter()
        .filter(|q| q.queue == lmq("x"))
        .collect();
    let report = inner.lite.expire(&inner, found).await.expect("expire");
    assert_eq!(report.cleaned, vec![lmq("x")]);
    assert_eq!(inner.lite_owners.owner(epoch, EXCLUSIVE, &lmq("x")), None);
    assert_eq!(
        inner
            .lite_owners
            .owner(epoch, EXCLUSIVE, &lmq("y"))
            .as_deref(),
        Some("A"),
        "only the expired lite topic's owner goes"
    );
    // x made again: B claims it without taking over (nobody owns it) and pops it.
    node.send("x", "x-1").await;
    assert!(node.claim(EXCLUSIVE, "B", &names(&["x"]), false).await);
    let b = node.pop_as(EXCLUSIVE, "B", &names(&["x"]), 0).await;
    assert!(b.evicted.is_empty(), "{:?}", b.evicted);
    assert_eq!(bodies(&b.messages), ["x-1"]);
    drop(inner);
    node.stop().await;
}

/// Only an expiry the subscription does not know of is reported, ordered by cuts (which only
/// grow), never by clocks: a subscription's first look (`LITE_FIRST_LOOK`) reports nothing and
/// learns the cut; one that knew of no expiry (-1) is told of it, at once; one that knows the
/// cut waits for the next message; a later expiry (a larger cut) is reported again.
#[tokio::test]
async fn only_an_expiry_after_what_the_subscription_knows_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    node.send("x", "x-0").await;
    node.send("y", "y-0").await;
    let inner = node.broker.inner().clone();
    let expire_x = |ahead_ms: i64| {
        let inner = inner.clone();
        async move {
            let found: Vec<_> = inner
                .lite
                .find_expired(
                    &inner.store,
                    &inner.topics,
                    0,
                    rocketraft_common::time::now_ms() + ahead_ms,
                )
                .into_iter()
                .filter(|q| q.queue == lmq("x"))
                .collect();
            inner
                .lite
                .expire(&inner, found)
                .await
                .expect("expire")
                .cleaned
        }
    };
    let xy = names(&["x", "y"]);
    let ask = |known: Vec<i64>, poll_ms: i64| {
        let (api, addr, xy) = (node.api.clone(), node.addr.clone(), xy.clone());
        async move {
            api.pop_lite(
                &addr,
                &PopLiteRequest {
                    group: GROUP,
                    topic: PARENT,
                    lite_topics: &xy,
                    known_cuts: &known,
                    start_index: 0,
                    max: 32,
                    invisible_ms: 60_000,
                    poll_ms,
                    order: false,
                    filter: None,
                    client_id: None,
                },
            )
            .await
            .expect("pop lite")
        }
    };
    // Never expired: cuts -1.
    let r = ask(vec![LITE_FIRST_LOOK, LITE_FIRST_LOOK], 0).await;
    assert_eq!(r.cuts, [-1, -1]);
    assert_eq!(bodies(&r.messages), ["x-0", "y-0"]);
    for m in &r.messages {
        node.ack(m).await;
    }
    assert_eq!(expire_x(2 * 60_000).await, vec![lmq("x")]);

    // A subscription from before (it knew of no expiry): told, at once.
    let started = Instant::now();
    let r = ask(vec![-1, -1], 10_000).await;
    assert_eq!(r.expired, names(&["x"]));
    assert_eq!(r.cuts, [1, -1]);
    assert!(started.elapsed() < Duration::from_secs(5), "at once");
    // A subscription made after it: its first look reports nothing and learns the cut, 1; with
    // it known, the request waits like any other.
    let r = ask(vec![LITE_FIRST_LOOK, -1], 0).await;
    assert!(r.expired.is_empty(), "{:?}", r.expired);
    assert_eq!(r.cuts, [1, -1]);
    let started = Instant::now();
    let r = ask(vec![1, -1], 600).await;
    assert!(r.expired.is_empty() && r.messages.is_empty(), "{r:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the request waited: {:?}",
        started.elapsed()
    );
    // Held, it is answered with x's next message.
    let held = tokio::spawn(ask(vec![1, -1], 10_000));
    tokio::time::sleep(Duration::from_millis(200)).await;
    node.send("x", "x-1").await;
    let r = held.await.expect("held pop");
    assert_eq!(bodies(&r.messages), ["x-1"]);
    node.ack(&r.messages[0]).await;
    // x expires again (cut 2): a later expiry than the one known, reported.
    assert_eq!(expire_x(4 * 60_000).await, vec![lmq("x")]);
    let r = ask(vec![1, -1], 10_000).await;
    assert_eq!(r.expired, names(&["x"]));
    assert_eq!(r.cuts, [2, -1]);
    // Bad input: known cuts not one per lite topic.
    let bad = node
        .api
        .pop_lite(
            &node.addr,
            &PopLiteRequest {
                group: GROUP,
                topic: PARENT,
                lite_topics: &xy,
                known_cuts: &[1],
                start_index: 0,
                max: 32,
                invisible_ms: 60_000,
                poll_ms: 0,
                order: false,
                filter: None,
                client_id: None,
            },
        )
        .await;
    assert!(bad.is_err(), "{bad:?}");
    drop(inner);
    node.stop().await;
}
