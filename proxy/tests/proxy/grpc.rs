//! The proxy over real gRPC (tonic client) in front of a real NameServer and broker on loopback:
//! route, telemetry settings, sends, POP receive with a status first, acks, change invisible
//! duration (the old handle refused), long polling that answers before the client's deadline,
//! and malformed requests answered with the protocol's codes while the proxy keeps serving.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rocketraft_broker::Broker;
use rocketraft_common::TopicConfig;
use rocketraft_proxy::pb;
use rocketraft_proxy::pb::messaging_service_client::MessagingServiceClient;
use rocketraft_proxy::Proxy;
use rocketraft_remoting::api::MqClientApi;
use rocketraft_remoting::{ClientConfig, RemotingClient};
use tonic::transport::Channel;

const TOPIC: &str = "GrpcTopic";

fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource {
        resource_namespace: String::new(),
        name: name.to_string(),
    })
}

fn message(i: usize, group: Option<&str>) -> pb::Message {
    pb::Message {
        topic: resource(TOPIC),
        user_properties: HashMap::from([("color".to_string(), format!("c{i}"))]),
        system_properties: Some(pb::SystemProperties {
            tag: Some(format!("tag{}", i % 2)),
            keys: vec![format!("key-{i}"), "common".to_string()],
            message_id: format!("MSGID{i:04}"),
            message_group: group.map(str::to_string),
            message_type: if group.is_some() {
                pb::MessageType::Fifo as i32
            } else {
                pb::MessageType::Normal as i32
            },
            ..pb::SystemProperties::default()
        }),
        body: format!("body-{i}").into_bytes(),
    }
}

fn code(s: &Option<pb::Status>) -> i32 {
    s.as_ref().map_or(-1, |s| s.code)
}

async fn receive(
    client: &mut MessagingServiceClient<Channel>,
    group: &str,
    invisible_s: i64,
    poll_s: i64,
    deadline: Duration,
) -> (Vec<pb::ReceiveMessageResponse>, Duration) {
    let mut req = tonic::Request::new(pb::ReceiveMessageRequest {
        group: resource(group),
        message_queue: Some(pb::MessageQueue {
            topic: resource(TOPIC),
            id: -1,
            ..pb::MessageQueue::default()
        }),
        filter_expression: Some(pb::FilterExpression {
            r#type: pb::FilterType::Tag as i32,
            expression: "*".into(),
        }),
        batch_size: 32,
        invisible_duration: Some(prost_types::Duration {
            seconds: invisible_s,
            nanos: 0,
        }),
        auto_renew: false,
        long_polling_timeout: Some(prost_types::Duration {
            seconds: poll_s,
            nanos: 0,
        }),
        attempt_id: None,
    });
    req.set_timeout(deadline);
    let started = Instant::now();
    let mut stream = client
        .receive_message(req)
        .await
        .expect("receive")
        .into_inner();
    let mut items = Vec::new();
    while let Some(item) = stream.message().await.expect("stream item") {
        items.push(item);
    }
    (items, started.elapsed())
}

fn messages(items: &[pb::ReceiveMessageResponse]) -> Vec<pb::Message> {
    items
        .iter()
        .filter_map(|i| match &i.content {
            Some(pb::receive_message_response::Content::Message(m)) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

async fn ack(
    client: &mut MessagingServiceClient<Channel>,
    group: &str,
    handle: &str,
) -> pb::AckMessageResponse {
    client
        .ack_message(pb::AckMessageRequest {
            group: resource(group),
            topic: resource(TOPIC),
            entries: vec![pb::AckMessageEntry {
                message_id: String::new(),
                receipt_handle: handle.to_string(),
                lite_topic: None,
            }],
        })
        .await
        .expect("ack")
        .into_inner()
}

/// Messages stored in the test topic's queues.
async fn stored(broker: &Broker) -> i64 {
    let api = MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(5),
    );
    let mut total = 0;
    for q in 0..4 {
        total += api
            .max_offset(&broker.local_addr().to_string(), TOPIC, q)
            .await
            .expect("max offset");
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grpc_client_sends_receives_acks_and_changes_invisibility() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (namesrv, broker) = crate::support::start_backend(dir.path(), |_| {}).await;
    crate::support::create_topic(&namesrv, &broker, &TopicConfig::new(TOPIC, 4)).await;
    // Local mode, as in `rocketraft dev`: the broker of this process is called in-process.
    let proxy = Proxy::start(crate::support::local_proxy_config(&namesrv))
        .await
        .expect("proxy");
    let mut client = crate::support::grpc_client(&proxy).await;

    // Route: every queue, served by this proxy.
    let route = client
        .query_route(pb::QueryRouteRequest {
            topic: resource(TOPIC),
            endpoints: None,
        })
        .await
        .expect("route")
        .into_inner();
    assert_eq!(code(&route.status), pb::Code::Ok as i32);
    assert_eq!(route.message_queues.len(), 4);
    let ep = &route.message_queues[0]
        .broker
        .as_ref()
        .expect("broker")
        .endpoints;
    assert_eq!(
        ep.as_ref().expect("endpoints").addresses[0].port as u16,
        proxy.local_addr().port()
    );
    let missing = client
        .query_route(pb::QueryRouteRequest {
            topic: resource("NoSuchTopic"),
            endpoints: None,
        })
        .await
        .expect("route")
        .into_inner();
    assert_eq!(code(&missing.status), pb::Code::TopicNotFound as i32);

    // Telemetry: the client's settings are answered with the server's.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::TelemetryCommand {
        status: None,
        command: Some(pb::telemetry_command::Command::Settings(pb::Settings {
            client_type: Some(pb::ClientType::Producer as i32),
            pub_sub: Some(pb::settings::PubSub::Publishing(pb::Publishing {
                topics: vec![pb::Resource {
                    resource_namespace: String::new(),
                    name: TOPIC.into(),
                }],
                max_body_size: 0,
                validate_message_type: true,
            })),
            ..pb::Settings::default()
        })),
    })
    .await
    .expect("settings");
    let outbound =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let mut telemetry = client
        .telemetry(outbound)
        .await
        .expect("telemetry")
        .into_inner();
    let reply = tokio::time::timeout(Duration::from_secs(5), telemetry.message())
        .await
        .expect("settings reply in time")
        .expect("stream")
        .expect("a command");
    match reply.command {
        Some(pb::telemetry_command::Command::Settings(s)) => {
            match s.pub_sub {
                Some(pb::settings::PubSub::Publishing(p)) => {
                    assert_eq!(p.max_body_size, 4 * 1024 * 1024)
                }
                other => panic!("no publishing settings: {other:?}"),
            }
            assert!(s.backoff_policy.is_some());
        }
        other => panic!("not settings: {other:?}"),
    }

    // Sends.
    let sent = client
        .send_message(pb::SendMessageRequest {
            messages: (0..6).map(|i| message(i, None)).collect(),
        })
        .await
        .expect("send")
        .into_inner();
    assert_eq!(code(&sent.status), pb::Code::Ok as i32, "{:?}", sent.status);
    assert_eq!(sent.entries.len(), 6);
    assert_eq!(sent.entries[2].message_id, "MSGID0002");
    // Plain messages of one topic went as one batch: one queue of the four, one after another.
    let offsets: Vec<i64> = sent.entries.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, (0..6).collect::<Vec<i64>>(), "not one batch");
    let api = MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(5),
    );
    let mut per_queue = Vec::new();
    for q in 0..4 {
        per_queue.push(
            api.max_offset(&broker.local_addr().to_string(), TOPIC, q)
                .await
                .expect("max offset"),
        );
    }
    per_queue.sort_unstable();
    assert_eq!(per_queue, vec![0, 0, 0, 6], "the batch is not in one queue");

    // Receive: a status first, then the messages, with handles and digests.
    let (items, _) = receive(&mut client, "gg", 10, 5, Duration::from_secs(10)).await;
    assert!(
        matches!(items.first().and_then(|i| i.content.as_ref()), Some(pb::receive_message_response::Content::Status(s)) if s.code == pb::Code::Ok as i32)
    );
    let got = messages(&items);
    assert_eq!(got.len(), 6);
    for m in &got {
        let sys = m.system_properties.as_ref().expect("system properties");
        let i: usize = sys.message_id[5..].parse().expect("id");
        assert_eq!(m.body, format!("body-{i}").into_bytes());
        assert_eq!(sys.tag.as_deref(), Some(format!("tag{}", i % 2).as_str()));
        assert_eq!(sys.keys, vec![format!("key-{i}"), "common".to_string()]);
        assert_eq!(m.user_properties.get("color"), Some(&format!("c{i}")));
        assert_eq!(sys.delivery_attempt, Some(1));
        let digest = sys.body_digest.as_ref().expect("digest");
        assert_eq!(digest.r#type(), pb::DigestType::Md5);
        use md5::Digest;
        let md5: String = md5::Md5::digest(&m.body)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        assert_eq!(
            digest.checksum, md5,
            "RocketMQ's proxy sends MD5, uppercase hex"
        );
        assert!(sys.receipt_handle.is_some());
    }

    // Ack five; change the sixth's invisibility: the old handle stops working.
    for m in &got[..5] {
        let h = m
            .system_properties
            .as_ref()
            .and_then(|s| s.receipt_handle.clone())
            .expect("handle");
        let r = ack(&mut client, "gg", &h).await;
        assert_eq!(code(&r.status), pb::Code::Ok as i32, "{:?}", r.status);
    }
    let last = got[5]
        .system_properties
        .as_ref()
        .and_then(|s| s.receipt_handle.clone())
        .expect("handle");
    let changed = client
        .change_invisible_duration(pb::ChangeInvisibleDurationRequest {
            group: resource("gg"),
            topic: resource(TOPIC),
            receipt_handle: last.clone(),
            invisible_duration: Some(prost_types::Duration {
                seconds: 20,
                nanos: 0,
            }),
            message_id: String::new(),
            lite_topic: None,
            suspend: None,
        })
        .await
        .expect("change")
        .into_inner();
    assert_eq!(
        code(&changed.status),
        pb::Code::Ok as i32,
        "{:?}",
        changed.status
    );
    assert_ne!(changed.receipt_handle, last);
    let stale = ack(&mut client, "gg", &last).await;
    assert_eq!(code(&stale.status), pb::Code::InvalidReceiptHandle as i32);
    // A nack without backoff (a duration of 0, what a client whose retry policy gives no
    // delay sends, as RocketMQ's proxy takes it): the message is visible again at once.
    let zero = client
        .change_invisible_duration(pb::ChangeInvisibleDurationRequest {
            group: resource("gg"),
            topic: resource(TOPIC),
            receipt_handle: changed.receipt_handle.clone(),
            invisible_duration: Some(prost_types::Duration {
                seconds: 0,
                nanos: 0,
            }),
            message_id: String::new(),
            lite_topic: None,
            suspend: None,
        })
        .await
        .expect("change to 0")
        .into_inner();
    assert_eq!(code(&zero.status), pb::Code::Ok as i32, "{:?}", zero.status);
    let until = Instant::now() + Duration::from_secs(20);
    let redelivered = loop {
        assert!(Instant::now() < until, "the nacked message never came back");
        let (items, _) = receive(&mut client, "gg", 10, 2, Duration::from_secs(6)).await;
        let ms: Vec<pb::Message> = items
            .into_iter()
            .filter_map(|i| match i.content {
                Some(pb::receive_message_response::Content::Message(m)) => Some(m),
                _ => None,
            })
            .collect();
        if !ms.is_empty() {
            break ms;
        }
    };
    assert_eq!(redelivered.len(), 1);
    assert_eq!(redelivered[0].body, got[5].body, "the nacked message again");
    let again = redelivered[0]
        .system_properties
        .as_ref()
        .and_then(|s| s.receipt_handle.clone())
        .expect("handle");
    let fresh = ack(&mut client, "gg", &again).await;
    assert_eq!(code(&fresh.status), pb::Code::Ok as i32);

    // Nothing left: long polling answers MESSAGE_NOT_FOUND alone, before the client's deadline.
    let (items, took) = receive(&mut client, "gg", 10, 20, Duration::from_secs(4)).await;
    assert_eq!(items.len(), 1);
    assert!(
        matches!(items[0].content.as_ref(), Some(pb::receive_message_response::Content::Status(s)) if s.code == pb::Code::MessageNotFound as i32)
    );
    assert!(
        took < Duration::from_secs(4),
        "answered after the deadline: {took:?}"
    );

    // Malformed requests: the protocol's codes, and the proxy keeps serving.
    let mut no_id = message(9, None);
    no_id
        .system_properties
        .as_mut()
        .expect("sys")
        .message_id
        .clear();
    let mut big = message(10, None);
    big.body = vec![0u8; 5 * 1024 * 1024];
    let mut reserved = message(11, None);
    reserved.user_properties.insert("TAGS".into(), "x".into());
    let mut no_topic = message(13, None);
    no_topic.topic = None;
    let mut empty_body = message(14, None);
    empty_body.body.clear();
    let stored_before = stored(&broker).await;
    let bad = client
        .send_message(pb::SendMessageRequest {
            messages: vec![no_id, big, reserved, no_topic, empty_body],
        })
        .await
        .expect("send")
        .into_inner();
    let codes: Vec<i32> = bad.entries.iter().map(|e| code(&e.status)).collect();
    assert_eq!(
        codes,
        vec![
            pb::Code::IllegalMessageId as i32,
            pb::Code::MessageBodyTooLarge as i32,
            pb::Code::IllegalMessagePropertyKey as i32,
            pb::Code::IllegalTopic as i32,
            pb::Code::MessageBodyEmpty as i32,
        ]
    );
    assert_eq!(
        stored(&broker).await,
        stored_before,
        "a refused message was stored"
    );
    let (no_group, _) = {
        let mut req = tonic::Request::new(pb::ReceiveMessageRequest {
            group: None,
            message_queue: Some(pb::MessageQueue {
                topic: resource(TOPIC),
                id: -1,
                ..pb::MessageQueue::default()
            }),
            ..pb::ReceiveMessageRequest::default()
        });
        req.set_timeout(Duration::from_secs(5));
        let started = Instant::now();
        let mut stream = client
            .receive_message(req)
            .await
            .expect("receive")
            .into_inner();
        let mut items = Vec::new();
        while let Some(item) = stream.message().await.expect("item") {
            items.push(item);
        }
        (items, started.elapsed())
    };
    assert!(
        matches!(no_group.as_slice(), [pb::ReceiveMessageResponse { content: Some(pb::receive_message_response::Content::Status(s)) }] if s.code == pb::Code::IllegalConsumerGroup as i32),
        "{no_group:?}"
    );
    let garbage = ack(&mut client, "gg", "garbage").await;
    assert_eq!(code(&garbage.status), pb::Code::InvalidReceiptHandle as i32);
    let empty = client
        .send_message(pb::SendMessageRequest { messages: vec![] })
        .await
        .expect("send")
        .into_inner();
    assert_eq!(code(&empty.status), pb::Code::BadRequest as i32);
    let broker_addr = broker.local_addr().to_string();
    let before = proxy.local_dispatches_to(&broker_addr);
    let still = client
        .send_message(pb::SendMessageRequest {
            messages: vec![message(12, Some("fifo-group"))],
        })
        .await
        .expect("send")
        .into_inner();
    assert_eq!(code(&still.status), pb::Code::Ok as i32);
    // The send reached the broker in-process (NameServer lookups are counted apart).
    assert!(
        proxy.local_dispatches_to(&broker_addr) > before,
        "the send did not reach the broker in-process"
    );

    drop(telemetry);
    proxy.shutdown().await;
    broker.shutdown().await;
    namesrv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offsets_pull_and_dead_letter_forwarding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (namesrv, broker) = crate::support::start_backend(dir.path(), |bc| {
        bc.store.flush_disk_type = rocketraft_broker::store::FlushDiskType::AsyncFlush;
    })
    .await;
    crate::support::create_topic(&namesrv, &broker, &TopicConfig::new(TOPIC, 1)).await;
    // Local mode, as in `rocketraft dev`: the broker of this process is called in-process.
    let proxy = Proxy::start(crate::support::local_proxy_config(&namesrv))
        .await
        .expect("proxy");
    let mut client = crate::support::grpc_client(&proxy).await;
    let sent = client
        .send_message(pb::SendMessageRequest {
            messages: (0..3).map(|i| message(i, None)).collect(),
        })
        .await
        .expect("send")
        .into_inner();
    assert_eq!(code(&sent.status), pb::Code::Ok as i32);
    let mq = || {
        Some(pb::MessageQueue {
            topic: resource(TOPIC),
            id: 0,
            broker: Some(pb::Broker {
                name: "broker-a".into(),
                ..pb::Broker::default()
            }),
            ..pb::MessageQueue::default()
        })
    };
    // Offsets.
    let end = client
        .query_offset(pb::QueryOffsetRequest {
            message_queue: mq(),
            query_offset_policy: pb::QueryOffsetPolicy::End as i32,
            timestamp: None,
        })
        .await
        .expect("query")
        .into_inner();
    assert_eq!((code(&end.status), end.offset), (pb::Code::Ok as i32, 3));
    let none = client
        .get_offset(pb::GetOffsetRequest {
            group: resource("og"),
            message_queue: mq(),
        })
        .await
        .expect("get")
        .into_inner();
    // No committed offset on a queue that starts at 0: RocketMQ answers 0 (consume from the
    // start) rather than "not found".
    assert_eq!((code(&none.status), none.offset), (pb::Code::Ok as i32, 0));
    let up = client
        .update_offset(pb::UpdateOffsetRequest {
            group: resource("og"),
            message_queue: mq(),
            offset: 2,
        })
        .await
        .expect("update")
        .into_inner();
    assert_eq!(code(&up.status), pb::Code::Ok as i32, "{:?}", up.status);
    let got = client
        .get_offset(pb::GetOffsetRequest {
            group: resource("og"),
            message_queue: mq(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!((code(&got.status), got.offset), (pb::Code::Ok as i32, 2));
    // Pull: a status, the messages, the next offset.
    let mut stream = client
        .pull_message(pb::PullMessageRequest {
            group: resource("og"),
            message_queue: mq(),
            offset: 1,
            batch_size: 10,
            filter_expression: None,
            long_polling_timeout: None,
        })
        .await
        .expect("pull")
        .into_inner();
    let mut items = Vec::new();
    while let Some(i) = stream.message().await.expect("item") {
        items.push(i.content);
    }
    assert!(
        matches!(items.first(), Some(Some(pb::pull_message_response::Content::Status(s))) if s.code == pb::Code::Ok as i32)
    );
    let bodies: Vec<Vec<u8>> = items
        .iter()
        .filter_map(|c| match c {
            Some(pb::pull_message_response::Content::Message(m)) => Some(m.body.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(bodies, vec![b"body-1".to_vec(), b"body-2".to_vec()]);
    assert!(matches!(
        items.last(),
        Some(Some(pb::pull_message_response::Content::NextOffset(3)))
    ));
    // Forward to the DLQ: the message lands in %DLQ%dg and is not delivered again.
    let (items, _) = receive(&mut client, "dg", 2, 1, Duration::from_secs(5)).await;
    let first = messages(&items).into_iter().next().expect("a message");
    let handle = first
        .system_properties
        .as_ref()
        .and_then(|s| s.receipt_handle.clone())
        .expect("handle");
    let fwd = client
        .forward_message_to_dead_letter_queue(pb::ForwardMessageToDeadLetterQueueRequest {
            group: resource("dg"),
            topic: resource(TOPIC),
            receipt_handle: handle,
            message_id: first
                .system_properties
                .as_ref()
                .map(|s| s.message_id.clone())
                .unwrap_or_default(),
            delivery_attempt: 1,
            max_delivery_attempts: 1,
            lite_topic: None,
        })
        .await
        .expect("forward")
        .into_inner();
    assert_eq!(code(&fwd.status), pb::Code::Ok as i32, "{:?}", fwd.status);
    let store = broker.inner().store.clone();
    assert_eq!(store.get_max_offset_in_queue("%DLQ%dg", 0), 1);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (items, _) = receive(&mut client, "dg", 2, 1, Duration::from_secs(5)).await;
    let again: Vec<Vec<u8>> = messages(&items).iter().map(|m| m.body.clone()).collect();
    assert!(
        !again.contains(&first.body),
        "the dead-lettered message came back"
    );
    proxy.shutdown().await;
    broker.shutdown().await;
    namesrv.shutdown().await;
}
