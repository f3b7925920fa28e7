//! Attacks on the proxy's consumer and size paths over real gRPC, in front of a real NameServer
//! and broker on loopback: dead-letter forwards of a foreign CommitLog offset, of a handle never
//! received, of an acked handle or with another message's id are refused and the DLQ stays
//! empty (read back from the store), an honest forward lands exactly its message once; a plain
//! Remoting send-back keeps working below the confirm offset and is refused beyond it, as
//! VIEW_MESSAGE_BY_ID is; oversized bodies and requests are refused before anything is stored;
//! the stream and connection limits hold.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rocketraft_broker::Broker;
use rocketraft_common::consts::property;
use rocketraft_common::TopicConfig;
use rocketraft_nameserver::NameServer;
use rocketraft_proxy::pb;
use rocketraft_proxy::pb::messaging_service_client::MessagingServiceClient;
use rocketraft_proxy::{GrpcLimits, Proxy, ProxyConfig, SecurityConfig};
use rocketraft_remoting::api::{ApiError, MqClientApi};
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::{ClientConfig, RemotingClient, RemotingCommand};
use tonic::transport::Channel;

const TOPIC: &str = "HardTopic";
const GROUP: &str = "HardGroup";
const DLQ: &str = "%DLQ%HardGroup";

struct Setup {
    _dir: tempfile::TempDir,
    namesrv: NameServer,
    broker: Broker,
    proxy: Proxy,
    api: MqClientApi,
}

impl Setup {
    async fn start(limits: GrpcLimits) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let (namesrv, broker) = crate::support::start_backend(dir.path(), |_| {}).await;
        crate::support::create_topic(&namesrv, &broker, &TopicConfig::new(TOPIC, 1)).await;
        let proxy = Proxy::start_secure(
            ProxyConfig {
                listen: "127.0.0.1:0".parse().expect("addr"),
                advertised_host: None,
                namesrv_addr: namesrv.local_addr().to_string(),
                ..ProxyConfig::default()
            },
            SecurityConfig {
                limits,
                ..SecurityConfig::default()
            },
        )
        .await
        .expect("proxy");
        let api = MqClientApi::new(
            RemotingClient::new(ClientConfig::default()),
            Duration::from_secs(5),
        );
        Setup {
            _dir: dir,
            namesrv,
            broker,
            proxy,
            api,
        }
    }

    async fn client(&self) -> MessagingServiceClient<Channel> {
        MessagingServiceClient::connect(format!("http://{}", self.proxy.local_addr()))
            .await
            .expect("connect")
    }

    fn broker_addr(&self) -> String {
        self.broker.local_addr().to_string()
    }

    /// Messages stored in queue 0 of `topic`.
    fn stored(&self, topic: &str) -> i64 {
        self.broker.inner().store.get_max_offset_in_queue(topic, 0)
    }

    async fn stop(self) {
        self.proxy.shutdown().await;
        self.broker.shutdown().await;
        self.namesrv.shutdown().await;
    }
}

fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource {
        resource_namespace: String::new(),
        name: name.to_string(),
    })
}

fn message(id: &str, body: Vec<u8>) -> pb::Message {
    pb::Message {
        topic: resource(TOPIC),
        user_properties: HashMap::new(),
        system_properties: Some(pb::SystemProperties {
            message_id: id.to_string(),
            message_type: pb::MessageType::Normal as i32,
            ..pb::SystemProperties::default()
        }),
        body,
    }
}

fn code(s: &Option<pb::Status>) -> i32 {
    s.as_ref().map_or(-1, |s| s.code)
}

async fn send(client: &mut MessagingServiceClient<Channel>, messages: Vec<pb::Message>) -> i32 {
    let r = client
        .send_message(pb::SendMessageRequest { messages })
        .await
        .expect("send rpc")
        .into_inner();
    code(&r.status)
}

/// One received message: its id, body, receipt handle.
struct Received {
    id: String,
    body: Vec<u8>,
    handle: String,
}

async fn receive_all(client: &mut MessagingServiceClient<Channel>) -> Vec<Received> {
    let mut stream = client
        .receive_message(pb::ReceiveMessageRequest {
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
                seconds: 1,
                nanos: 0,
            }),
            attempt_id: None,
        })
        .await
        .expect("receive")
        .into_inner();
    let mut out = Vec::new();
    while let Some(item) = stream.message().await.expect("item") {
        if let Some(pb::receive_message_response::Content::Message(m)) = item.content {
            let sys = m.system_properties.expect("system properties");
            out.push(Received {
                id: sys.message_id,
                body: m.body,
                handle: sys.receipt_handle.expect("handle"),
            });
        }
    }
    out
}

async fn forward(
    client: &mut MessagingServiceClient<Channel>,
    handle: &str,
    id: &str,
) -> pb::Status {
    client
        .forward_message_to_dead_letter_queue(pb::ForwardMessageToDeadLetterQueueRequest {
            group: resource(GROUP),
            topic: resource(TOPIC),
            receipt_handle: handle.to_string(),
            message_id: id.to_string(),
            delivery_attempt: 1,
            max_delivery_attempts: 16,
            lite_topic: None,
        })
        .await
        .expect("forward rpc")
        .into_inner()
        .status
        .expect("status")
}

/// `handle` with field `i` replaced by `value`.
fn with_field(handle: &str, i: usize, value: &str) -> String {
    let mut fields: Vec<&str> = handle.split(' ').collect();
    fields[i] = value;
    fields.join(" ")
}

fn commit_log_offset(handle: &str) -> &str {
    handle
        .split(' ')
        .nth(8)
        .expect("the CommitLog offset field")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letter_forwards_accept_only_the_message_the_handle_names() {
    let setup = Setup::start(GrpcLimits::default()).await;
    let mut client = setup.client().await;
    let sent: Vec<pb::Message> = ["A", "B", "C", "D"]
        .iter()
        .map(|n| message(&format!("MSG-{n}"), format!("body {n}").into_bytes()))
        .collect();
    assert_eq!(send(&mut client, sent).await, pb::Code::Ok as i32);
    let got = receive_all(&mut client).await;
    assert_eq!(got.len(), 4, "all four popped");
    let (a, b, c, d) = (&got[0], &got[1], &got[2], &got[3]);

    // A's handle with B's CommitLog offset: refused, nothing copied.
    let forged = with_field(&a.handle, 8, commit_log_offset(&b.handle));
    let s = forward(&mut client, &forged, &a.id).await;
    assert_eq!(s.code, pb::Code::Forbidden as i32, "{}", s.message);
    assert!(
        s.message
            .contains("is not the message the receipt handle names"),
        "{}",
        s.message
    );
    // A's handle with B's message id: refused.
    let s = forward(&mut client, &a.handle, &b.id).await;
    assert_eq!(s.code, pb::Code::Forbidden as i32, "{}", s.message);
    // A handle never received (C's with another pop time): refused.
    let pop_time: i64 = c
        .handle
        .split(' ')
        .nth(1)
        .expect("pop time")
        .parse()
        .expect("num");
    let never = with_field(&c.handle, 1, &(pop_time - 1).to_string());
    let s = forward(&mut client, &never, &c.id).await;
    assert_eq!(
        s.code,
        pb::Code::InvalidReceiptHandle as i32,
        "{}",
        s.message
    );
    // An acked handle (D's): refused.
    let acked = client
        .ack_message(pb::AckMessageRequest {
            group: resource(GROUP),
            topic: resource(TOPIC),
            entries: vec![pb::AckMessageEntry {
                message_id: d.id.clone(),
                receipt_handle: d.handle.clone(),
                lite_topic: None,
            }],
        })
        .await
        .expect("ack")
        .into_inner();
    assert_eq!(code(&acked.status), pb::Code::Ok as i32);
    let s = forward(&mut client, &d.handle, &d.id).await;
    assert_eq!(
        s.code,
        pb::Code::InvalidReceiptHandle as i32,
        "{}",
        s.message
    );
    assert_eq!(setup.stored(DLQ), 0, "a refused forward copied something");

    // The honest forward lands exactly A, once; the handle is acked with it.
    let s = forward(&mut client, &a.handle, &a.id).await;
    assert_eq!(s.code, pb::Code::Ok as i32, "{}", s.message);
    let s = forward(&mut client, &a.handle, &a.id).await;
    assert_eq!(
        s.code,
        pb::Code::InvalidReceiptHandle as i32,
        "a second forward: {}",
        s.message
    );
    assert_eq!(setup.stored(DLQ), 1);
    let store = &setup.broker.inner().store;
    let landed = store
        .get_commit_log_offset_in_queue(DLQ, 0, 0)
        .and_then(|phy| store.look_message_by_offset(phy))
        .expect("the DLQ message");
    assert_eq!(landed.message.body, a.body);
    assert_eq!(landed.message.uniq_key(), Some(a.id.as_str()));
    assert_eq!(
        landed.message.property(property::ORIGIN_MESSAGE_ID),
        Some(a.id.as_str())
    );
    // B and C are still in flight for the group: acking them works.
    for r in [b, c] {
        let acked = client
            .ack_message(pb::AckMessageRequest {
                group: resource(GROUP),
                topic: resource(TOPIC),
                entries: vec![pb::AckMessageEntry {
                    message_id: r.id.clone(),
                    receipt_handle: r.handle.clone(),
                    lite_topic: None,
                }],
            })
            .await
            .expect("ack")
            .into_inner();
        assert_eq!(
            code(&acked.status),
            pb::Code::Ok as i32,
            "{:?}",
            acked.status
        );
    }
    setup.stop().await;
}

/// CONSUMER_SEND_MSG_BACK without a handle (a Remoting push consumer) at `offset`.
async fn plain_send_back(setup: &Setup, offset: i64) -> Result<RemotingCommand, ApiError> {
    let back = RemotingCommand::request(request_code::CONSUMER_SEND_MSG_BACK)
        .with_ext("offset", offset)
        .with_ext("group", "PlainGroup")
        .with_ext("delayLevel", -1);
    setup
        .api
        .call(&setup.broker_addr(), back, &[response_code::SUCCESS])
        .await
}

async fn view(setup: &Setup, offset: i64) -> Result<RemotingCommand, ApiError> {
    let request =
        RemotingCommand::request(request_code::VIEW_MESSAGE_BY_ID).with_ext("offset", offset);
    setup
        .api
        .call(&setup.broker_addr(), request, &[response_code::SUCCESS])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_served_by_offset_at_or_beyond_the_confirm_offset() {
    let setup = Setup::start(GrpcLimits::default()).await;
    let mut client = setup.client().await;
    let msgs = vec![
        message("MSG-1", b"first".to_vec()),
        message("MSG-2", b"second".to_vec()),
    ];
    assert_eq!(send(&mut client, msgs).await, pb::Code::Ok as i32);
    let store = setup.broker.inner().store.clone();
    let first = store
        .get_commit_log_offset_in_queue(TOPIC, 0, 0)
        .expect("first");
    let second = store
        .get_commit_log_offset_in_queue(TOPIC, 0, 1)
        .expect("second");
    // Both are below the confirm offset (no replication: everything dispatched).
    assert!(!view(&setup, second).await.expect("view").body.is_empty());
    // As a master waiting for its replicas: the second record is beyond the confirm offset.
    store.set_gated(true);
    store.set_confirm_offset(second);
    let viewed = view(&setup, first).await.expect("the first is confirmed");
    assert!(!viewed.body.is_empty());
    for offset in [second, store.max_phy_offset(), -1] {
        match view(&setup, offset).await {
            Err(ApiError::Refused(r)) => {
                assert_eq!(r.code, response_code::SYSTEM_ERROR);
                assert!(
                    r.remark.contains("can not find message by the offset"),
                    "{}",
                    r.remark
                );
            }
            other => panic!("view at {offset} beyond the confirm offset: {other:?}"),
        }
        match plain_send_back(&setup, offset).await {
            Err(ApiError::Refused(r)) => assert_eq!(r.code, response_code::SYSTEM_ERROR),
            other => panic!("send-back at {offset}: {other:?}"),
        }
    }
    assert_eq!(setup.stored("%DLQ%PlainGroup"), 0);
    // A plain Remoting send-back below the confirm offset still works, as in RocketMQ.
    plain_send_back(&setup, first)
        .await
        .expect("plain send-back");
    assert_eq!(setup.stored("%DLQ%PlainGroup"), 1);
    store.set_gated(false);
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_bodies_and_requests_are_refused_before_anything_is_stored() {
    let setup = Setup::start(GrpcLimits {
        max_message_size: 64 * 1024,
        max_inbound_message_size: 256 * 1024,
        ..GrpcLimits::default()
    })
    .await;
    let mut client = setup.client().await;
    let big = message("MSG-BIG", vec![7u8; 64 * 1024 + 1]);
    // One oversized body refuses the whole request: the small message before it is not sent.
    let r = client
        .send_message(pb::SendMessageRequest {
            messages: vec![message("MSG-SMALL", b"small".to_vec()), big.clone()],
        })
        .await
        .expect("send rpc")
        .into_inner();
    let s = r.status.expect("status");
    assert_eq!(
        s.code,
        pb::Code::MessageBodyTooLarge as i32,
        "{}",
        s.message
    );
    assert!(
        s.message.contains("exceeds the maximum of 65536"),
        "{}",
        s.message
    );
    // A request above the inbound limit is refused by the transport before it is decoded.
    let huge = message("MSG-HUGE", vec![7u8; 300 * 1024]);
    let e = client
        .send_message(pb::SendMessageRequest {
            messages: vec![huge],
        })
        .await
        .expect_err("a request above the inbound limit");
    // tonic answers OUT_OF_RANGE ("decoded message length too large"; grpc-java says
    // RESOURCE_EXHAUSTED) without buffering the body.
    assert_eq!(e.code(), tonic::Code::OutOfRange, "{e}");
    assert!(e.message().contains("too large"), "{e}");
    assert_eq!(
        setup.stored(TOPIC),
        0,
        "an oversized request stored something"
    );
    // The proxy keeps serving: a body at the limit is stored.
    let at_limit = message("MSG-LIMIT", vec![7u8; 64 * 1024]);
    assert_eq!(send(&mut client, vec![at_limit]).await, pb::Code::Ok as i32);
    assert_eq!(setup.stored(TOPIC), 1);
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_per_connection_and_connections_are_limited() {
    let setup = Setup::start(GrpcLimits {
        max_concurrent_streams: 1,
        max_connections: 2,
        ..GrpcLimits::default()
    })
    .await;
    let mut client = setup.client().await;
    // One stream per connection: a route query waits for the long poll on the same connection.
    let mut polling = client.clone();
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let _ = receive_all(&mut polling).await;
        started.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let route = client
        .query_route(pb::QueryRouteRequest {
            topic: resource(TOPIC),
            endpoints: None,
        })
        .await
        .expect("route")
        .into_inner();
    let waited = started.elapsed();
    assert_eq!(code(&route.status), pb::Code::Ok as i32);
    let polled = poll.await.expect("poll task");
    assert!(
        polled >= Duration::from_millis(800),
        "the long poll ended early: {polled:?}"
    );
    assert!(
        waited >= Duration::from_millis(500),
        "the second call did not wait for the stream: {waited:?}"
    );
    // Two connections at most: a third is closed when accepted.
    let mut second = setup.client().await;
    let route = |c: &mut MessagingServiceClient<Channel>| {
        let mut c = c.clone();
        async move {
            let mut request = tonic::Request::new(pb::QueryRouteRequest {
                topic: resource(TOPIC),
                endpoints: None,
            });
            request.set_timeout(Duration::from_secs(3));
            c.query_route(request).await
        }
    };
    route(&mut second).await.expect("the second connection");
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://{}", setup.proxy.local_addr()))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(3));
    let served = |endpoint: tonic::transport::Endpoint| async move {
        match endpoint.connect().await {
            Err(_) => false,
            Ok(channel) => route(&mut MessagingServiceClient::new(channel))
                .await
                .is_ok(),
        }
    };
    assert!(
        !served(endpoint.clone()).await,
        "a third connection was served"
    );
    // A closed connection frees its slot.
    drop(second);
    let started = Instant::now();
    while !served(endpoint.clone()).await {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    route(&mut client)
        .await
        .expect("the first connection still serves");
    setup.stop().await;
}
