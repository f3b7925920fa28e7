//! Lite topics over real gRPC and Remoting, in front of a real NameServer and broker on
//! loopback: a client's SyncLiteSubscription decides which lite topics of a LITE topic its
//! receives get (subscribe two of three, unsubscribe one, a late subscription starts at the
//! lite topic's first unconsumed message), acks name the lite topic, a Remoting send with
//! `__LITE_TOPIC` lands in the lite topic's own queue, and every bad request is refused with
//! the protocol's code and nothing changed.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rocketraft_broker::Broker;
use rocketraft_common::TopicConfig;
use rocketraft_nameserver::NameServer;
use rocketraft_proxy::pb;
use rocketraft_proxy::pb::messaging_service_client::MessagingServiceClient;
use rocketraft_proxy::{Proxy, ProxyConfig};
use rocketraft_remoting::api::{ApiError, MqClientApi, SendRequest};
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{ClientConfig, RemotingClient};
use tonic::transport::Channel;

const PARENT: &str = "LiteParent";
const PLAIN: &str = "PlainTopic";
const GROUP: &str = "GLite";
const CLIENT: &str = "lite-client-1";

struct Setup {
    _dir: tempfile::TempDir,
    _namesrv: NameServer,
    broker: Broker,
    _proxy: Proxy,
    api: MqClientApi,
    client: MessagingServiceClient<Channel>,
    /// The consumer group the client syncs, receives and acks as.
    group: &'static str,
}

impl Setup {
    async fn start() -> Setup {
        Setup::start_with(|_| {}).await
    }

    /// [`Setup::start`] with the broker's configuration changed by `tweak`.
    async fn start_with(tweak: impl FnOnce(&mut rocketraft_broker::BrokerConfig)) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let (namesrv, broker) = crate::support::start_backend(dir.path(), tweak).await;
        let mut lite = TopicConfig::new(PARENT, 4);
        lite.attributes.insert("message.type".into(), "LITE".into());
        crate::support::create_topic(&namesrv, &broker, &lite).await;
        crate::support::create_topic(&namesrv, &broker, &TopicConfig::new(PLAIN, 4)).await;
        let proxy = Proxy::start(ProxyConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            advertised_host: None,
            namesrv_addr: namesrv.local_addr().to_string(),
            ..ProxyConfig::default()
        })
        .await
        .expect("proxy");
        let client = MessagingServiceClient::connect(format!("http://{}", proxy.local_addr()))
            .await
            .expect("connect");
        Setup {
            _dir: dir,
            _namesrv: namesrv,
            broker,
            _proxy: proxy,
            api: MqClientApi::new(
                RemotingClient::new(ClientConfig::default()),
                Duration::from_secs(5),
            ),
            client,
            group: GROUP,
        }
    }

    fn addr(&self) -> String {
        self.broker.local_addr().to_string()
    }

    async fn sync(
        &mut self,
        client: Option<&str>,
        topic: &str,
        action: pb::LiteSubscriptionAction,
        lites: &[&str],
        offset_option: Option<pb::OffsetOption>,
    ) -> i32 {
        let mut req = tonic::Request::new(pb::SyncLiteSubscriptionRequest {
            action: action as i32,
            topic: resource(topic),
            group: resource(self.group),
            lite_topic_set: lites.iter().map(|s| s.to_string()).collect(),
            version: None,
            offset_option,
        });
        if let Some(c) = client {
            req.metadata_mut()
                .insert("x-mq-client-id", c.parse().expect("ascii"));
        }
        let r = self
            .client
            .sync_lite_subscription(req)
            .await
            .expect("sync")
            .into_inner();
        code(&r.status)
    }

    async fn send(
        &mut self,
        topic: &str,
        lite: Option<&str>,
        group: Option<&str>,
        body: &str,
    ) -> i32 {
        let m = pb::Message {
            topic: resource(topic),
            user_properties: HashMap::new(),
            system_properties: Some(pb::SystemProperties {
                message_id: format!("id-{body}"),
                message_type: if lite.is_some() {
                    pb::MessageType::Lite as i32
                } else {
                    pb::MessageType::Normal as i32
                },
                lite_topic: lite.map(str::to_string),
                message_group: group.map(str::to_string),
                ..pb::SystemProperties::default()
            }),
            body: body.as_bytes().to_vec(),
        };
        let r = self
            .client
            .send_message(pb::SendMessageRequest { messages: vec![m] })
            .await
            .expect("send")
            .into_inner();
        if code(&r.status) != pb::Code::Ok as i32 {
            eprintln!("send to {topic} ({lite:?}) refused: {:?}", r.status);
        }
        code(&r.status)
    }

    /// One receive of the client on the LITE topic (long poll `poll_s`); nothing acked.
    async fn receive_once(&mut self, poll_s: i64) -> Vec<pb::Message> {
        let mut req = tonic::Request::new(pb::ReceiveMessageRequest {
            group: resource(self.group),
            message_queue: Some(pb::MessageQueue {
                topic: resource(PARENT),
                id: 0,
                ..pb::MessageQueue::default()
            }),
            filter_expression: Some(pb::FilterExpression {
                r#type: pb::FilterType::Tag as i32,
                expression: "*".into(),
            }),
            batch_size: 32,
            invisible_duration: Some(prost_types::Duration {
                seconds: 30,
                nanos: 0,
            }),
            auto_renew: false,
            long_polling_timeout: Some(prost_types::Duration {
                seconds: poll_s,
                nanos: 0,
            }),
            attempt_id: None,
        });
        req.metadata_mut()
            .insert("x-mq-client-id", CLIENT.parse().expect("ascii"));
        req.set_timeout(Duration::from_secs(poll_s as u64 + 10));
        let mut stream = self
            .client
            .receive_message(req)
            .await
            .expect("receive")
            .into_inner();
        let mut out = Vec::new();
        while let Some(item) = stream.message().await.expect("item") {
            if let Some(pb::receive_message_response::Content::Message(m)) = item.content {
                out.push(m);
            }
        }
        out
    }

    /// Acks a received message by its lite topic.
    async fn ack(&mut self, m: &pb::Message) {
        let sys = m.system_properties.clone().expect("system properties");
        let r = self
            .client
            .ack_message(pb::AckMessageRequest {
                group: resource(self.group),
                topic: resource(PARENT),
                entries: vec![pb::AckMessageEntry {
                    message_id: sys.message_id.clone(),
                    receipt_handle: sys.receipt_handle.clone().expect("handle"),
                    lite_topic: sys.lite_topic.clone(),
                }],
            })
            .await
            .expect("ack")
            .into_inner();
        assert_eq!(code(&r.status), pb::Code::Ok as i32, "{:?}", r.status);
    }

    /// Receives and acks (with each message's lite topic) until `want` messages came or
    /// `within` passed; then one more short receive must bring nothing.
    async fn receive_all(&mut self, want: usize, within: Duration) -> Vec<(String, String)> {
        let started = Instant::now();
        let mut got = Vec::new();
        while got.len() < want && started.elapsed() < within {
            for m in self.receive_once(2).await {
                let sys = m.system_properties.clone().expect("system properties");
                assert_eq!(m.topic.as_ref().map(|t| t.name.as_str()), Some(PARENT));
                assert_eq!(sys.message_type, pb::MessageType::Lite as i32);
                let lite = sys.lite_topic.clone().expect("a lite topic");
                self.ack(&m).await;
                got.push((lite, String::from_utf8_lossy(&m.body).to_string()));
            }
        }
        let extra = self.receive_once(1).await;
        assert!(
            extra.is_empty(),
            "more than expected: {:?}",
            extra
                .iter()
                .map(|m| m.system_properties.clone())
                .collect::<Vec<_>>()
        );
        got.sort();
        got
    }
}

fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource {
        resource_namespace: String::new(),
        name: name.to_string(),
    })
}

fn code(s: &Option<pb::Status>) -> i32 {
    s.as_ref().map_or(-1, |s| s.code)
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = v
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_lite_consumer_gets_exactly_its_lite_topics() {
    use pb::LiteSubscriptionAction as A;
    let mut s = Setup::start().await;
    let ok = pb::Code::Ok as i32;
    assert_eq!(
        s.sync(Some(CLIENT), PARENT, A::PartialAdd, &["a", "b"], None)
            .await,
        ok
    );
    for lite in ["a", "b", "c"] {
        for i in 0..3 {
            assert_eq!(
                s.send(PARENT, Some(lite), None, &format!("{lite}{i}"))
                    .await,
                ok
            );
        }
    }
    let got = s.receive_all(6, Duration::from_secs(20)).await;
    assert_eq!(
        got,
        pairs(&[
            ("a", "a0"),
            ("a", "a1"),
            ("a", "a2"),
            ("b", "b0"),
            ("b", "b1"),
            ("b", "b2")
        ])
    );

    // Unsubscribing b stops its delivery; a still comes.
    assert_eq!(
        s.sync(Some(CLIENT), PARENT, A::PartialRemove, &["b"], None)
            .await,
        ok
    );
    assert_eq!(s.send(PARENT, Some("a"), None, "a3").await, ok);
    assert_eq!(s.send(PARENT, Some("b"), None, "b3").await, ok);
    let got = s.receive_all(1, Duration::from_secs(10)).await;
    assert_eq!(got, pairs(&[("a", "a3")]));

    // A late subscription to c, which the group never consumed, starts at c's end (RocketMQ's
    // default, "from last offset"): c0..c2 stay, c3 comes; b's b3 stays for whoever
    // subscribes b.
    assert_eq!(
        s.sync(Some(CLIENT), PARENT, A::CompleteAdd, &["a", "c"], None)
            .await,
        ok
    );
    assert!(s.receive_once(1).await.is_empty());
    assert_eq!(s.send(PARENT, Some("c"), None, "c3").await, ok);
    let got = s.receive_all(1, Duration::from_secs(10)).await;
    assert_eq!(got, pairs(&[("c", "c3")]));

    // Offset options: d from its first message, e its last one only.
    for body in ["d0", "d1", "e0", "e1"] {
        assert_eq!(s.send(PARENT, Some(&body[..1]), None, body).await, ok);
    }
    let min = pb::OffsetOption {
        offset_type: Some(pb::offset_option::OffsetType::Policy(
            pb::offset_option::Policy::Min as i32,
        )),
    };
    let tail_1 = pb::OffsetOption {
        offset_type: Some(pb::offset_option::OffsetType::TailN(1)),
    };
    assert_eq!(
        s.sync(Some(CLIENT), PARENT, A::PartialAdd, &["d"], Some(min))
            .await,
        ok
    );
    assert_eq!(
        s.sync(Some(CLIENT), PARENT, A::PartialAdd, &["e"], Some(tail_1))
            .await,
        ok
    );
    let got = s.receive_all(3, Duration::from_secs(10)).await;
    assert_eq!(got, pairs(&[("d", "d0"), ("d", "d1"), ("e", "e1")]));

    // Each lite topic is its own queue on the broker (one queue, `%LMQ%${parent}${lite}`).
    for (lite, n) in [("a", 4), ("b", 4), ("c", 4), ("d", 2), ("e", 2)] {
        let lmq = format!("%LMQ%${PARENT}${lite}");
        assert_eq!(
            s.api.max_offset(&s.addr(), &lmq, 0).await.ok(),
            Some(n),
            "{lmq}"
        );
    }
    // Nothing of them in the parent's own queues.
    for q in 0..4 {
        assert_eq!(s.api.max_offset(&s.addr(), PARENT, q).await.ok(), Some(0));
    }

    // COMPLETE_REMOVE empties the set: nothing more is delivered.
    assert_eq!(
        s.sync(Some(CLIENT), PARENT, A::CompleteRemove, &[], None)
            .await,
        ok
    );
    assert_eq!(s.send(PARENT, Some("a"), None, "a4").await, ok);
    assert!(s.receive_once(1).await.is_empty());
}

#[tokio::test]
async fn lite_requests_that_make_no_sense_are_refused() {
    use pb::LiteSubscriptionAction as A;
    let mut s = Setup::start().await;
    // Subscriptions.
    assert_eq!(
        s.sync(None, PARENT, A::PartialAdd, &["a"], None).await,
        pb::Code::ClientIdRequired as i32
    );
    assert_eq!(
        s.sync(Some(CLIENT), PLAIN, A::PartialAdd, &["a"], None)
            .await,
        pb::Code::BadRequest as i32
    );
    assert_eq!(
        s.sync(Some(CLIENT), PARENT, A::PartialAdd, &["a$b"], None)
            .await,
        pb::Code::IllegalLiteTopic as i32
    );
    let long = "x".repeat(65);
    assert_eq!(
        s.sync(Some(CLIENT), PARENT, A::PartialAdd, &[long.as_str()], None)
            .await,
        pb::Code::IllegalLiteTopic as i32
    );
    let many: Vec<String> = (0..101).map(|i| format!("t{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(
        s.sync(Some(CLIENT), PARENT, A::CompleteAdd, &many, None)
            .await,
        pb::Code::LiteSubscriptionQuotaExceeded as i32
    );
    let empty = pb::OffsetOption { offset_type: None };
    assert_eq!(
        s.sync(Some(CLIENT), PARENT, A::PartialAdd, &["a"], Some(empty))
            .await,
        pb::Code::BadRequest as i32
    );
    // None of those subscribed anything: a's message goes to nobody, even once a
    // subscription to another lite topic exists.
    assert_eq!(
        s.send(PARENT, Some("a"), None, "a0").await,
        pb::Code::Ok as i32
    );
    assert!(s.receive_once(1).await.is_empty());
    assert_eq!(
        s.sync(Some(CLIENT), PARENT, A::PartialAdd, &["z"], None)
            .await,
        pb::Code::Ok as i32
    );
    assert!(s.receive_once(1).await.is_empty());

    // Sends over gRPC.
    let conflict = pb::Code::MessagePropertyConflictWithType as i32;
    assert_eq!(s.send(PARENT, None, None, "plain").await, conflict);
    assert_eq!(s.send(PLAIN, Some("a"), None, "x").await, conflict);
    assert_eq!(s.send(PARENT, Some("a"), Some("g"), "x").await, conflict);
    assert_eq!(
        s.send(PARENT, Some("a$b"), None, "x").await,
        pb::Code::IllegalLiteTopic as i32
    );
    // An ack naming an illegal lite topic.
    let r = s
        .client
        .ack_message(pb::AckMessageRequest {
            group: resource(s.group),
            topic: resource(PARENT),
            entries: vec![pb::AckMessageEntry {
                message_id: "m".into(),
                receipt_handle: "garbage".into(),
                lite_topic: Some("a$b".into()),
            }],
        })
        .await
        .expect("ack")
        .into_inner();
    assert_ne!(code(&r.status), pb::Code::Ok as i32);

    // Sends over Remoting: `__LITE_TOPIC` decides, the broker refuses what does not fit.
    let remoting = |topic: &str, lite: Option<&str>| {
        let mut properties = BTreeMap::new();
        if let Some(l) = lite {
            properties.insert("__LITE_TOPIC".to_string(), l.to_string());
        }
        SendRequest {
            producer_group: "P".into(),
            topic: topic.into(),
            queue_id: -1,
            body: bytes::Bytes::from_static(b"r"),
            properties,
            ..SendRequest::default()
        }
    };
    let refused = |r: Result<_, ApiError>| match r {
        Err(ApiError::Refused(r)) => r.code,
        other => panic!("not refused: {other:?}"),
    };
    let addr = s.addr();
    assert_eq!(
        refused(s.api.send(&addr, &remoting(PARENT, None)).await),
        response_code::MESSAGE_ILLEGAL
    );
    assert_eq!(
        refused(s.api.send(&addr, &remoting(PLAIN, Some("r"))).await),
        response_code::MESSAGE_ILLEGAL
    );
    assert_eq!(
        refused(s.api.send(&addr, &remoting(PARENT, Some("r$x"))).await),
        response_code::MESSAGE_ILLEGAL
    );
    let sent = s
        .api
        .send(&addr, &remoting(PARENT, Some("r")))
        .await
        .expect("a lite send over Remoting");
    assert_eq!((sent.queue_id, sent.queue_offset), (0, 0));
    let lmq = format!("%LMQ%${PARENT}$r");
    assert_eq!(s.api.max_offset(&addr, &lmq, 0).await.ok(), Some(1));
    // A Remoting POP consumer reads the lite topic's queue by its LMQ name.
    let popped = s
        .api
        .pop_filtered(&addr, "GR", &lmq, -1, 8, 30_000, 0, false, None)
        .await
        .expect("pop");
    assert_eq!(popped.len(), 1);
    assert_eq!(
        popped[0]
            .message
            .properties
            .get("__LITE_TOPIC")
            .map(String::as_str),
        Some("r")
    );
    // The refused sends stored nothing.
    for q in 0..4 {
        assert_eq!(s.api.max_offset(&addr, PARENT, q).await.ok(), Some(0));
        assert_eq!(s.api.max_offset(&addr, PLAIN, q).await.ok(), Some(0));
    }
}

/// A FIFO group (`consumeMessageOrderly`) consumes each lite topic in order: while a lite
/// topic's message is in hand (not acked), nothing more of that lite topic is handed out, and
/// the other lite topics are not held up.
#[tokio::test]
async fn a_fifo_group_consumes_each_lite_topic_in_order() {
    use pb::LiteSubscriptionAction as A;
    let mut s = Setup::start().await;
    s.group = "GLiteFifo";
    let r = s
        .api
        .call(
            &s.addr(),
            rocketraft_remoting::RemotingCommand::request(
                rocketraft_remoting::codes::request_code::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP,
            )
            .with_body(
                serde_json::to_vec(&serde_json::json!({
                    "groupName": "GLiteFifo", "consumeMessageOrderly": true
                }))
                .expect("json"),
            ),
            &[response_code::SUCCESS],
        )
        .await;
    assert!(r.is_ok(), "{r:?}");
    let ok = pb::Code::Ok as i32;
    let bodies = |ms: &[pb::Message]| -> Vec<String> {
        ms.iter()
            .map(|m| String::from_utf8_lossy(&m.body).to_string())
            .collect()
    };
    assert_eq!(
        s.sync(Some(CLIENT), PARENT, A::PartialAdd, &["f1", "f2"], None)
            .await,
        ok
    );
    assert_eq!(s.send(PARENT, Some("f1"), None, "f1-0").await, ok);
    let first = s.receive_once(2).await;
    assert_eq!(bodies(&first), ["f1-0"]);
    // f1-0 is in hand: f1-1 waits, f2 does not.
    assert_eq!(s.send(PARENT, Some("f1"), None, "f1-1").await, ok);
    assert_eq!(s.send(PARENT, Some("f2"), None, "f2-0").await, ok);
    let second = s.receive_once(2).await;
    assert_eq!(bodies(&second), ["f2-0"]);
    s.ack(&second[0]).await;
    assert!(s.receive_once(1).await.is_empty());
    // Acked: f1-1 comes.
    s.ack(&first[0]).await;
    let third = s.receive_once(2).await;
    assert_eq!(bodies(&third), ["f1-1"]);
    s.ack(&third[0]).await;
    assert!(s.receive_once(1).await.is_empty());
}

/// A lite push consumer's Settings are answered with its lite subscription quota and the
/// longest lite topic name (the clients check both before SyncLiteSubscription), and with a
/// consumer's redelivery backoff; a plain push consumer gets neither lite setting.
#[tokio::test]
async fn lite_push_consumers_are_told_their_quota_in_settings() {
    let s = Setup::start().await;
    for (client_type, lite) in [
        (pb::ClientType::LitePushConsumer, true),
        (pb::ClientType::PushConsumer, false),
    ] {
        let (tx, _stream, settings) =
            telemetry_settings(&s.client, CLIENT, client_type, GROUP, PARENT).await;
        let Some(pb::settings::PubSub::Subscription(sub)) = settings.pub_sub else {
            panic!("no subscription settings: {settings:?}");
        };
        let want = |v: i32| lite.then_some(v);
        assert_eq!(sub.lite_subscription_quota, want(100), "{client_type:?}");
        assert_eq!(sub.max_lite_topic_size, want(64), "{client_type:?}");
        assert_eq!(
            settings.backoff_policy.map(|p| p.max_attempts),
            Some(17),
            "{client_type:?}"
        );
        drop(tx);
    }
}

/// Many SyncLiteSubscription calls of one client, group and topic at once (each adding one
/// lite topic) lose none: afterwards the client receives a message of every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_syncs_of_one_client_lose_no_lite_topic() {
    use pb::LiteSubscriptionAction as A;
    const N: usize = 16;
    let mut s = Setup::start().await;
    s.group = "GLiteConcurrent";
    let lites: Vec<String> = (0..N).map(|i| format!("room-{i}")).collect();
    let syncs = lites.iter().map(|l| {
        let mut client = s.client.clone();
        let mut req = tonic::Request::new(pb::SyncLiteSubscriptionRequest {
            action: A::PartialAdd as i32,
            topic: resource(PARENT),
            group: resource("GLiteConcurrent"),
            lite_topic_set: vec![l.clone()],
            version: None,
            offset_option: None,
        });
        req.metadata_mut()
            .insert("x-mq-client-id", CLIENT.parse().expect("ascii"));
        async move {
            let r = client
                .sync_lite_subscription(req)
                .await
                .expect("sync")
                .into_inner();
            code(&r.status)
        }
    });
    let codes = futures::future::join_all(syncs).await;
    assert!(codes.iter().all(|c| *c == pb::Code::Ok as i32), "{codes:?}");
    for l in &lites {
        assert_eq!(
            s.send(PARENT, Some(l), None, &format!("to-{l}")).await,
            pb::Code::Ok as i32
        );
    }
    let got = s.receive_all(N, Duration::from_secs(30)).await;
    let want: Vec<(String, String)> = {
        let mut v: Vec<(String, String)> = lites
            .iter()
            .map(|l| (l.clone(), format!("to-{l}")))
            .collect();
        v.sort();
        v
    };
    assert_eq!(got, want);
}

/// A send that would make one lite topic more than the broker's `maxLmqConsumeQueueNum` is
/// answered LITE_TOPIC_QUOTA_EXCEEDED (the broker's LMQ_QUOTA_EXCEEDED, as RocketMQ's proxy maps
/// it) and stores nothing; the lite topics within the quota keep taking messages.
#[tokio::test]
async fn a_lite_topic_past_the_brokers_quota_is_refused() {
    let mut s = Setup::start_with(|b| b.max_lmq_consume_queue_num = 1).await;
    let ok = pb::Code::Ok as i32;
    assert_eq!(s.send(PARENT, Some("q1"), None, "q1-0").await, ok);
    assert_eq!(
        s.send(PARENT, Some("q2"), None, "q2-0").await,
        pb::Code::LiteTopicQuotaExceeded as i32
    );
    assert_eq!(s.send(PARENT, Some("q1"), None, "q1-1").await, ok);
    let stored = |lite: &str| {
        s.broker
            .inner()
            .store
            .get_max_offset_in_queue(&format!("%LMQ%${PARENT}${lite}"), 0)
    };
    assert_eq!((stored("q1"), stored("q2")), (2, 0));
}

/// One receive of `client_id` on `topic` for `group`, long polling `poll_ms`; answers the
/// messages and when the answer came.
async fn receive_on(
    mut client: MessagingServiceClient<Channel>,
    group: &str,
    topic: &str,
    client_id: &str,
    poll_ms: u64,
) -> (Vec<pb::Message>, Instant) {
    let mut req = tonic::Request::new(pb::ReceiveMessageRequest {
        group: resource(group),
        message_queue: Some(pb::MessageQueue {
            topic: resource(topic),
            id: 0,
            ..pb::MessageQueue::default()
        }),
        filter_expression: Some(pb::FilterExpression {
            r#type: pb::FilterType::Tag as i32,
            expression: "*".into(),
        }),
        batch_size: 32,
        invisible_duration: Some(prost_types::Duration {
            seconds: 30,
            nanos: 0,
        }),
        auto_renew: false,
        long_polling_timeout: Some(prost_types::Duration {
            seconds: (poll_ms / 1000) as i64,
            nanos: ((poll_ms % 1000) * 1_000_000) as i32,
        }),
        attempt_id: None,
    });
    req.metadata_mut()
        .insert("x-mq-client-id", client_id.parse().expect("ascii"));
    req.set_timeout(Duration::from_millis(poll_ms) + Duration::from_secs(10));
    let mut stream = client
        .receive_message(req)
        .await
        .expect("receive")
        .into_inner();
    let mut out = Vec::new();
    while let Some(item) = stream.message().await.expect("item") {
        if let Some(pb::receive_message_response::Content::Message(m)) = item.content {
            out.push(m);
        }
    }
    (out, Instant::now())
}

fn lite_and_body(messages: &[pb::Message]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = messages
        .iter()
        .map(|m| {
            let lite = m
                .system_properties
                .as_ref()
                .and_then(|s| s.lite_topic.clone())
                .unwrap_or_default();
            (lite, String::from_utf8_lossy(&m.body).to_string())
        })
        .collect();
    v.sort();
    v
}

/// Acks `m` on `topic` by its lite topic.
async fn ack_on(
    client: &mut MessagingServiceClient<Channel>,
    group: &str,
    topic: &str,
    m: &pb::Message,
) {
    let sys = m.system_properties.clone().expect("system properties");
    let r = client
        .ack_message(pb::AckMessageRequest {
            group: resource(group),
            topic: resource(topic),
            entries: vec![pb::AckMessageEntry {
                message_id: sys.message_id.clone(),
                receipt_handle: sys.receipt_handle.clone().expect("handle"),
                lite_topic: sys.lite_topic.clone(),
            }],
        })
        .await
        .expect("ack")
        .into_inner();
    assert_eq!(code(&r.status), pb::Code::Ok as i32, "{:?}", r.status);
}

/// A receive held on the client's lite topics is answered as soon as one of them gets a
/// message (the broker holds one POP_LITE_MESSAGE; no polling); a lite topic added while it
/// waits is served by it, one removed while it waits is not (its message stays for whoever
/// subscribes it next).
#[tokio::test]
async fn a_waiting_lite_receive_is_answered_soon_after_a_send() {
    use pb::LiteSubscriptionAction as A;
    let mut s = Setup::start().await;
    s.group = "GLiteWait";
    let ok = pb::Code::Ok as i32;
    assert_eq!(
        s.sync(Some(CLIENT), PARENT, A::PartialAdd, &["a"], None)
            .await,
        ok
    );

    // 1. A send to a subscribed lite topic answers the waiting receive.
    let waiting = tokio::spawn(receive_on(
        s.client.clone(),
        s.group,
        PARENT,
        CLIENT,
        20_000,
    ));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!waiting.is_finished(), "held while nothing is there");
    let sent = Instant::now();
    assert_eq!(s.send(PARENT, Some("a"), None, "a-0").await, ok);
    let (got, at) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("answered")
        .expect("task");
    assert_eq!(lite_and_body(&got), pairs(&[("a", "a-0")]));
    let after = at.duration_since(sent);
    eprintln!("held lite receive answered {after:?} after the send");
    assert!(
        after < Duration::from_millis(1_000),
        "answered {after:?} after the send"
    );
    let mut client = s.client.clone();
    ack_on(&mut client, s.group, PARENT, &got[0]).await;

    // 2. A lite topic added while the receive waits is served by it.
    let waiting = tokio::spawn(receive_on(
        s.client.clone(),
        s.group,
        PARENT,
        CLIENT,
        20_000,
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        s.sync(Some(CLIENT), PARENT, A::PartialAdd, &["b"], None)
            .await,
        ok
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    assert_eq!(s.send(PARENT, Some("b"), None, "b-0").await, ok);
    let (got, at) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("answered")
        .expect("task");
    assert_eq!(lite_and_body(&got), pairs(&[("b", "b-0")]));
    assert!(at.duration_since(sent) < Duration::from_millis(1_000));
    ack_on(&mut client, s.group, PARENT, &got[0]).await;

    // 3. One removed while the receive waits is not given to it.
    let waiting = tokio::spawn(receive_on(
        s.client.clone(),
        s.group,
        PARENT,
        CLIENT,
        20_000,
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        s.sync(Some(CLIENT), PARENT, A::PartialRemove, &["b"], None)
            .await,
        ok
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.send(PARENT, Some("b"), None, "b-1").await, ok);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.send(PARENT, Some("a"), None, "a-1").await, ok);
    let (got, _) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("answered")
        .expect("task");
    assert_eq!(lite_and_body(&got), pairs(&[("a", "a-1")]));
    ack_on(&mut client, s.group, PARENT, &got[0]).await;
    // b-1 was not lost: subscribing b again resumes at it.
    assert_eq!(
        s.sync(Some(CLIENT), PARENT, A::PartialAdd, &["b"], None)
            .await,
        ok
    );
    let got = s.receive_all(1, Duration::from_secs(10)).await;
    assert_eq!(got, pairs(&[("b", "b-1")]));
}

/// Opens a Telemetry stream of `client_id` as a client of `client_type` consuming `topic` for
/// `group`; answers the stream's sender (keep it to keep the stream open), the stream, and
/// the settings the server answered.
async fn telemetry_of(
    client: &MessagingServiceClient<Channel>,
    client_id: &str,
    client_type: pb::ClientType,
    group: &str,
    topic: &str,
) -> (
    tokio::sync::mpsc::Sender<pb::TelemetryCommand>,
    tonic::Streaming<pb::TelemetryCommand>,
    pb::Subscription,
) {
    let (tx, stream, settings) =
        telemetry_settings(client, client_id, client_type, group, topic).await;
    let Some(pb::settings::PubSub::Subscription(sub)) = settings.pub_sub else {
        panic!("no subscription settings: {settings:?}");
    };
    (tx, stream, sub)
}

/// [`telemetry_of`], answering the whole Settings the server answered.
async fn telemetry_settings(
    client: &MessagingServiceClient<Channel>,
    client_id: &str,
    client_type: pb::ClientType,
    group: &str,
    topic: &str,
) -> (
    tokio::sync::mpsc::Sender<pb::TelemetryCommand>,
    tonic::Streaming<pb::TelemetryCommand>,
    pb::Settings,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::TelemetryCommand {
        status: None,
        command: Some(pb::telemetry_command::Command::Settings(pb::Settings {
            client_type: Some(client_type as i32),
            pub_sub: Some(pb::settings::PubSub::Subscription(pb::Subscription {
                group: resource(group),
                subscriptions: vec![pb::SubscriptionEntry {
                    topic: resource(topic),
                    expression: Some(pb::FilterExpression {
                        r#type: pb::FilterType::Tag as i32,
                        expression: "*".into(),
                    }),
                }],
                ..pb::Subscription::default()
            })),
            ..pb::Settings::default()
        })),
    })
    .await
    .expect("settings");
    let outbound =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let mut req = tonic::Request::new(outbound);
    req.metadata_mut()
        .insert("x-mq-client-id", client_id.parse().expect("ascii"));
    let mut stream = client
        .clone()
        .telemetry(req)
        .await
        .expect("telemetry")
        .into_inner();
    let reply = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("settings in time")
        .expect("stream")
        .expect("a command");
    let Some(pb::telemetry_command::Command::Settings(settings)) = reply.command else {
        panic!("the first command is not settings: {reply:?}");
    };
    (tx, stream, settings)
}

/// A LiteSimpleConsumer (client type 6) is told its lite quota, subscribes, receives and acks;
/// when one of its lite topics expires (no message for the topic's `lite.topic.expiration`),
/// the proxy drops it from the client's set and pushes NotifyUnsubscribeLiteCommand on the
/// client's Telemetry stream, and receives no longer get it, even once it has messages again.
#[tokio::test]
async fn a_lite_simple_consumer_is_told_when_its_lite_topic_expires() {
    use pb::LiteSubscriptionAction as A;
    const TOPIC: &str = "LiteExpiring";
    const SIMPLE: &str = "lite-simple-1";
    let mut s = Setup::start().await;
    s.group = "GLiteSimple";
    let mut expiring = TopicConfig::new(TOPIC, 2);
    expiring
        .attributes
        .insert("message.type".into(), "LITE".into());
    expiring
        .attributes
        .insert("lite.topic.expiration".into(), "1".into());
    crate::support::create_topic(&s._namesrv, &s.broker, &expiring).await;
    let ok = pb::Code::Ok as i32;

    let (_tx, mut stream, sub) = telemetry_of(
        &s.client,
        SIMPLE,
        pb::ClientType::LiteSimpleConsumer,
        s.group,
        TOPIC,
    )
    .await;
    assert_eq!(sub.lite_subscription_quota, Some(100));
    assert_eq!(sub.max_lite_topic_size, Some(64));

    assert_eq!(
        s.sync(Some(SIMPLE), TOPIC, A::PartialAdd, &["x", "y"], None)
            .await,
        ok
    );
    assert_eq!(s.send(TOPIC, Some("x"), None, "x-0").await, ok);
    assert_eq!(s.send(TOPIC, Some("y"), None, "y-0").await, ok);
    let mut client = s.client.clone();
    let mut got = Vec::new();
    let started = Instant::now();
    while got.len() < 2 && started.elapsed() < Duration::from_secs(10) {
        let (more, _) = receive_on(s.client.clone(), s.group, TOPIC, SIMPLE, 2_000).await;
        for m in &more {
            ack_on(&mut client, s.group, TOPIC, m).await;
        }
        got.extend(more);
    }
    assert_eq!(lite_and_body(&got), pairs(&[("x", "x-0"), ("y", "y-0")]));

    // Two minutes on, both went a minute without a message: expired as the broker's check
    // does; then y gets a message (alive again), x does not.
    let inner = s.broker.inner().clone();
    let found = inner.lite.find_expired(
        &inner.store,
        &inner.topics,
        0,
        rocketraft_common::time::now_ms() + 2 * 60_000,
    );
    let report = inner.lite.expire(&inner, found).await.expect("expire");
    assert_eq!(report.cleaned.len(), 2, "{report:?}");
    assert_eq!(s.send(TOPIC, Some("y"), None, "y-1").await, ok);

    let (got, _) = receive_on(s.client.clone(), s.group, TOPIC, SIMPLE, 5_000).await;
    assert_eq!(lite_and_body(&got), pairs(&[("y", "y-1")]));
    ack_on(&mut client, s.group, TOPIC, &got[0]).await;
    let command = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a command in time")
        .expect("stream")
        .expect("a command");
    match command.command {
        Some(pb::telemetry_command::Command::NotifyUnsubscribeLiteCommand(c)) => {
            assert_eq!(c.lite_topic, "x")
        }
        other => panic!("expected NotifyUnsubscribeLiteCommand, got {other:?}"),
    }

    // x is no longer received, even with a message again.
    assert_eq!(s.send(TOPIC, Some("x"), None, "x-1").await, ok);
    assert_eq!(s.send(TOPIC, Some("y"), None, "y-2").await, ok);
    let mut got = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let (more, _) = receive_on(s.client.clone(), s.group, TOPIC, SIMPLE, 1_000).await;
        for m in &more {
            ack_on(&mut client, s.group, TOPIC, m).await;
        }
        got.extend(more);
    }
    assert_eq!(lite_and_body(&got), pairs(&[("y", "y-2")]));

    // x expires again (x-1 has gone unread for its minute), then the client subscribes it
    // again: a subscription made after the expiry is not ended by it. Its receives wait (no
    // NotifyUnsubscribeLiteCommand, no receive answered at once over and over), and x's next
    // message is delivered.
    let found: Vec<_> = inner
        .lite
        .find_expired(
            &inner.store,
            &inner.topics,
            0,
            rocketraft_common::time::now_ms() + 4 * 60_000,
        )
        .into_iter()
        .filter(|q| q.queue.ends_with("$x"))
        .collect();
    let report = inner.lite.expire(&inner, found).await.expect("expire");
    assert_eq!(report.cleaned.len(), 1, "{report:?}");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        s.sync(Some(SIMPLE), TOPIC, A::PartialAdd, &["x"], None)
            .await,
        ok
    );
    let started = Instant::now();
    let (got, _) = receive_on(s.client.clone(), s.group, TOPIC, SIMPLE, 1_500).await;
    assert!(got.is_empty(), "{:?}", lite_and_body(&got));
    assert!(
        started.elapsed() >= Duration::from_millis(1_000),
        "the receive waited for a message: {:?}",
        started.elapsed()
    );
    let more = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
    assert!(
        more.is_err(),
        "no NotifyUnsubscribeLiteCommand for a subscription made after the expiry: {more:?}"
    );
    assert_eq!(s.send(TOPIC, Some("x"), None, "x-2").await, ok);
    let (got, _) = receive_on(s.client.clone(), s.group, TOPIC, SIMPLE, 5_000).await;
    assert_eq!(lite_and_body(&got), pairs(&[("x", "x-2")]));
}

/// Creates subscription group `group` on the broker with `liteSubExclusive` as given.
async fn create_lite_group(s: &Setup, group: &str, exclusive: bool) {
    let r = s
        .api
        .call(
            &s.addr(),
            rocketraft_remoting::RemotingCommand::request(
                rocketraft_remoting::codes::request_code::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP,
            )
            .with_body(
                serde_json::to_vec(&serde_json::json!({
                    "groupName": group, "liteSubExclusive": exclusive
                }))
                .expect("json"),
            ),
            &[response_code::SUCCESS],
        )
        .await;
    assert!(r.is_ok(), "{r:?}");
}

/// Receives (acking) as `client_id` for `within`; answers all it got.
async fn receive_for(s: &Setup, client_id: &str, within: Duration) -> Vec<(String, String)> {
    let mut client = s.client.clone();
    let mut got = Vec::new();
    let started = Instant::now();
    while started.elapsed() < within {
        let (more, _) = receive_on(s.client.clone(), s.group, PARENT, client_id, 1_000).await;
        for m in &more {
            ack_on(&mut client, s.group, PARENT, m).await;
        }
        got.extend(lite_and_body(&more));
    }
    got.sort();
    got
}

/// The next command on a Telemetry stream within `within`, if any.
async fn next_command(
    stream: &mut tonic::Streaming<pb::TelemetryCommand>,
    within: Duration,
) -> Option<pb::telemetry_command::Command> {
    match tokio::time::timeout(within, stream.message()).await {
        Ok(Ok(Some(c))) => c.command,
        Ok(Ok(None)) => panic!("the Telemetry stream ended"),
        Ok(Err(e)) => panic!("the Telemetry stream failed: {e}"),
        Err(_) => None,
    }
}

fn unsubscribed(command: Option<pb::telemetry_command::Command>) -> Option<String> {
    match command {
        Some(pb::telemetry_command::Command::NotifyUnsubscribeLiteCommand(c)) => Some(c.lite_topic),
        None => None,
        Some(other) => panic!("expected NotifyUnsubscribeLiteCommand, got {other:?}"),
    }
}

/// An exclusive group (`liteSubExclusive`): client B subscribing a lite topic client A holds
/// takes it: A is told (NotifyUnsubscribeLiteCommand on its Telemetry stream) and no longer
/// gets its messages, B does; A's COMPLETE_ADD still listing it is told again and does not get
/// it back; A's PARTIAL_ADD takes it back, and B is told in turn.
#[tokio::test]
async fn an_exclusive_lite_group_gives_a_lite_topic_to_its_last_subscriber() {
    use pb::LiteSubscriptionAction as A;
    const CA: &str = "lite-excl-a";
    const CB: &str = "lite-excl-b";
    let mut s = Setup::start().await;
    s.group = "GLiteExclusive";
    create_lite_group(&s, s.group, true).await;
    let ok = pb::Code::Ok as i32;
    let (_ta, mut stream_a, _) = telemetry_of(
        &s.client,
        CA,
        pb::ClientType::LitePushConsumer,
        s.group,
        PARENT,
    )
    .await;
    let (_tb, mut stream_b, _) = telemetry_of(
        &s.client,
        CB,
        pb::ClientType::LitePushConsumer,
        s.group,
        PARENT,
    )
    .await;
    assert_eq!(
        s.sync(Some(CA), PARENT, A::PartialAdd, &["x", "y"], None)
            .await,
        ok
    );
    assert_eq!(s.send(PARENT, Some("x"), None, "x-0").await, ok);
    assert_eq!(s.send(PARENT, Some("y"), None, "y-0").await, ok);
    assert_eq!(
        receive_for(&s, CA, Duration::from_secs(2)).await,
        pairs(&[("x", "x-0"), ("y", "y-0")])
    );

    // B takes x.
    assert_eq!(
        s.sync(Some(CB), PARENT, A::PartialAdd, &["x"], None).await,
        ok
    );
    assert_eq!(s.send(PARENT, Some("x"), None, "x-1").await, ok);
    assert_eq!(s.send(PARENT, Some("y"), None, "y-1").await, ok);
    assert_eq!(
        receive_for(&s, CA, Duration::from_secs(2)).await,
        pairs(&[("y", "y-1")]),
        "A no longer gets x"
    );
    assert_eq!(
        unsubscribed(next_command(&mut stream_a, Duration::from_secs(5)).await).as_deref(),
        Some("x")
    );
    assert_eq!(
        receive_for(&s, CB, Duration::from_secs(2)).await,
        pairs(&[("x", "x-1")])
    );

    // A's periodic COMPLETE_ADD still lists x (as if the notification was lost): told again,
    // x is not given back.
    assert_eq!(
        s.sync(Some(CA), PARENT, A::CompleteAdd, &["x", "y"], None)
            .await,
        ok
    );
    assert_eq!(
        unsubscribed(next_command(&mut stream_a, Duration::from_secs(5)).await).as_deref(),
        Some("x")
    );
    assert_eq!(s.send(PARENT, Some("x"), None, "x-2").await, ok);
    assert_eq!(s.send(PARENT, Some("y"), None, "y-2").await, ok);
    assert_eq!(
        receive_for(&s, CA, Duration::from_secs(2)).await,
        pairs(&[("y", "y-2")])
    );
    assert_eq!(
        receive_for(&s, CB, Duration::from_secs(2)).await,
        pairs(&[("x", "x-2")])
    );
    assert_eq!(
        unsubscribed(next_command(&mut stream_b, Duration::from_millis(300)).await),
        None,
        "B keeps x"
    );

    // A subscribes x again (PARTIAL_ADD): it takes x back and B is told.
    assert_eq!(
        s.sync(Some(CA), PARENT, A::PartialAdd, &["x"], None).await,
        ok
    );
    assert_eq!(s.send(PARENT, Some("x"), None, "x-3").await, ok);
    assert_eq!(
        receive_for(&s, CB, Duration::from_secs(2)).await,
        pairs(&[]),
        "B no longer gets x"
    );
    assert_eq!(
        unsubscribed(next_command(&mut stream_b, Duration::from_secs(5)).await).as_deref(),
        Some("x")
    );
    assert_eq!(
        receive_for(&s, CA, Duration::from_secs(2)).await,
        pairs(&[("x", "x-3")])
    );
}

/// A group that is not exclusive: two clients subscribing one lite topic both keep it (no
/// NotifyUnsubscribeLiteCommand), and each of its messages goes to one of them.
#[tokio::test]
async fn a_non_exclusive_lite_group_keeps_both_subscribers() {
    use pb::LiteSubscriptionAction as A;
    const CA: &str = "lite-shared-a";
    const CB: &str = "lite-shared-b";
    let mut s = Setup::start().await;
    s.group = "GLiteShared";
    create_lite_group(&s, s.group, false).await;
    let ok = pb::Code::Ok as i32;
    let (_ta, mut stream_a, _) = telemetry_of(
        &s.client,
        CA,
        pb::ClientType::LitePushConsumer,
        s.group,
        PARENT,
    )
    .await;
    assert_eq!(
        s.sync(Some(CA), PARENT, A::PartialAdd, &["x"], None).await,
        ok
    );
    assert_eq!(
        s.sync(Some(CB), PARENT, A::PartialAdd, &["x"], None).await,
        ok
    );
    assert_eq!(s.send(PARENT, Some("x"), None, "x-0").await, ok);
    assert_eq!(
        receive_for(&s, CA, Duration::from_secs(2)).await,
        pairs(&[("x", "x-0")])
    );
    assert_eq!(s.send(PARENT, Some("x"), None, "x-1").await, ok);
    assert_eq!(
        receive_for(&s, CB, Duration::from_secs(2)).await,
        pairs(&[("x", "x-1")])
    );
    assert_eq!(s.send(PARENT, Some("x"), None, "x-2").await, ok);
    assert_eq!(
        receive_for(&s, CA, Duration::from_secs(2)).await,
        pairs(&[("x", "x-2")])
    );
    assert_eq!(
        unsubscribed(next_command(&mut stream_a, Duration::from_millis(500)).await),
        None,
        "A keeps x"
    );
}
