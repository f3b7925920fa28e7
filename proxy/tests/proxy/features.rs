//! The proxy's RocketMQ 5 features over real gRPC, in front of a real NameServer and broker on
//! loopback: transactions (commit, rollback, a second decision refused, an orphaned half
//! message checked back through the producer's Telemetry stream), delayed messages recalled
//! before delivery, topic message types in routes and enforced on sends, namespaces from the
//! `x-mq-namespace` header isolating topics and groups, FIFO groups announced in settings, and
//! TAG filters on receive.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rocketraft_broker::Broker;
use rocketraft_common::TopicConfig;
use rocketraft_nameserver::NameServer;
use rocketraft_proxy::pb;
use rocketraft_proxy::pb::messaging_service_client::MessagingServiceClient;
use rocketraft_proxy::Proxy;
use rocketraft_remoting::api::MqClientApi;
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::{ClientConfig, RemotingClient, RemotingCommand};
use tonic::transport::Channel;

struct Setup {
    _dir: tempfile::TempDir,
    namesrv: NameServer,
    broker: Broker,
    _proxy: Proxy,
    api: MqClientApi,
    client: MessagingServiceClient<Channel>,
}

impl Setup {
    async fn start(tx_check_ms: u64) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let (namesrv, broker) = crate::support::start_backend(dir.path(), |bc| {
            bc.transaction_timeout_ms = tx_check_ms;
            bc.transaction_check_interval_ms = tx_check_ms;
        })
        .await;
        let api = MqClientApi::new(
            RemotingClient::new(ClientConfig::default()),
            Duration::from_secs(5),
        );
        let proxy = Proxy::start(crate::support::local_proxy_config(&namesrv))
            .await
            .expect("proxy");
        let client = crate::support::grpc_client(&proxy).await;
        Setup {
            _dir: dir,
            namesrv,
            broker,
            _proxy: proxy,
            api,
            client,
        }
    }

    fn addr(&self) -> String {
        self.broker.local_addr().to_string()
    }

    async fn topic(&self, name: &str, queues: i32, message_type: Option<&str>) {
        let mut config = TopicConfig::new(name, queues);
        if let Some(t) = message_type {
            config.attributes.insert("message.type".into(), t.into());
        }
        crate::support::create_topic(&self.namesrv, &self.broker, &config).await;
    }

    async fn max_offset(&self, topic: &str, queues: i32) -> i64 {
        let mut total = 0;
        for q in 0..queues {
            total += self
                .api
                .max_offset(&self.addr(), topic, q)
                .await
                .unwrap_or(0);
        }
        total
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

fn in_ns<T>(message: T, namespace: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if !namespace.is_empty() {
        r.metadata_mut()
            .insert("x-mq-namespace", namespace.parse().expect("ascii"));
    }
    r
}

fn message(topic: &str, id: &str, body: &str, kind: pb::MessageType) -> pb::Message {
    pb::Message {
        topic: resource(topic),
        user_properties: HashMap::new(),
        system_properties: Some(pb::SystemProperties {
            message_id: id.to_string(),
            message_type: kind as i32,
            tag: Some("tagA".into()),
            ..pb::SystemProperties::default()
        }),
        body: body.as_bytes().to_vec(),
    }
}

async fn send(
    client: &mut MessagingServiceClient<Channel>,
    namespace: &str,
    m: pb::Message,
) -> pb::SendMessageResponse {
    client
        .send_message(in_ns(
            pb::SendMessageRequest { messages: vec![m] },
            namespace,
        ))
        .await
        .expect("send")
        .into_inner()
}

/// Receives without acking, with a long poll of `poll_s` and the messages invisible for 30 s.
async fn receive_only(
    client: &mut MessagingServiceClient<Channel>,
    namespace: &str,
    group: &str,
    topic: &str,
    expression: &str,
    poll_s: i64,
) -> Vec<pb::Message> {
    let mut req = in_ns(
        pb::ReceiveMessageRequest {
            group: resource(group),
            message_queue: Some(pb::MessageQueue {
                topic: resource(topic),
                id: -1,
                ..pb::MessageQueue::default()
            }),
            filter_expression: Some(pb::FilterExpression {
                r#type: pb::FilterType::Tag as i32,
                expression: expression.into(),
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
        },
        namespace,
    );
    req.set_timeout(Duration::from_secs(poll_s as u64 + 10));
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
    out
}

/// Receives (and acks) with a long poll of `poll_s`; returns the messages.
async fn receive(
    client: &mut MessagingServiceClient<Channel>,
    namespace: &str,
    group: &str,
    topic: &str,
    expression: &str,
    poll_s: i64,
) -> Vec<pb::Message> {
    let out = receive_only(client, namespace, group, topic, expression, poll_s).await;
    for m in &out {
        let handle = m
            .system_properties
            .as_ref()
            .and_then(|p| p.receipt_handle.clone())
            .expect("handle");
        let r = client
            .ack_message(in_ns(
                pb::AckMessageRequest {
                    group: resource(group),
                    topic: resource(topic),
                    entries: vec![pb::AckMessageEntry {
                        message_id: String::new(),
                        receipt_handle: handle,
                        lite_topic: None,
                    }],
                },
                namespace,
            ))
            .await
            .expect("ack")
            .into_inner();
        assert_eq!(code(&r.status), pb::Code::Ok as i32, "{:?}", r.status);
    }
    out
}

fn bodies(ms: &[pb::Message]) -> Vec<String> {
    let mut b: Vec<String> = ms
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).to_string())
        .collect();
    b.sort();
    b
}

async fn end(
    client: &mut MessagingServiceClient<Channel>,
    topic: &str,
    id: &str,
    tx: &str,
    resolution: pb::TransactionResolution,
    source: pb::TransactionSource,
) -> pb::EndTransactionResponse {
    client
        .end_transaction(pb::EndTransactionRequest {
            topic: resource(topic),
            message_id: id.into(),
            transaction_id: tx.into(),
            resolution: resolution as i32,
            source: source as i32,
            trace_context: String::new(),
        })
        .await
        .expect("end")
        .into_inner()
}

/// Opens a Telemetry stream announcing `settings`; returns the stream and the sender that
/// keeps it open.
async fn telemetry(
    client: &mut MessagingServiceClient<Channel>,
    client_id: &str,
    settings: pb::Settings,
) -> (
    tonic::Streaming<pb::TelemetryCommand>,
    tokio::sync::mpsc::Sender<pb::TelemetryCommand>,
    pb::Settings,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::TelemetryCommand {
        status: None,
        command: Some(pb::telemetry_command::Command::Settings(settings)),
    })
    .await
    .expect("settings");
    let outbound =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let mut req = tonic::Request::new(outbound);
    req.metadata_mut()
        .insert("x-mq-client-id", client_id.parse().expect("ascii"));
    let mut stream = client.telemetry(req).await.expect("telemetry").into_inner();
    let reply = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("settings in time")
        .expect("stream")
        .expect("a command");
    let Some(pb::telemetry_command::Command::Settings(s)) = reply.command else {
        panic!("the first command is not settings: {reply:?}");
    };
    (stream, tx, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactions_commit_roll_back_and_orphans_are_checked_through_telemetry() {
    let s = Setup::start(1_000).await;
    s.topic("TxTopic", 2, Some("TRANSACTION")).await;
    let client = &mut s.client.clone();

    // The route says the topic takes transactional messages only; anything else is refused
    // before it is stored.
    let route = client
        .query_route(pb::QueryRouteRequest {
            topic: resource("TxTopic"),
            endpoints: None,
        })
        .await
        .expect("route")
        .into_inner();
    assert_eq!(route.message_queues.len(), 2, "{:?}", route.status);
    for q in &route.message_queues {
        assert_eq!(
            q.accept_message_types,
            vec![pb::MessageType::Transaction as i32]
        );
    }
    let before = s.max_offset("TxTopic", 2).await;
    let refused = send(
        client,
        "",
        message("TxTopic", "N1", "normal", pb::MessageType::Normal),
    )
    .await;
    assert_eq!(
        code(&refused.status),
        pb::Code::MessagePropertyConflictWithType as i32,
        "{:?}",
        refused.status
    );
    assert!(refused
        .status
        .as_ref()
        .expect("status")
        .message
        .contains("TRANSACTION"));

    // Three half messages: invisible until decided.
    let mut txs = Vec::new();
    for (id, body) in [
        ("TX-A", "commit-me"),
        ("TX-B", "roll-me-back"),
        ("TX-C", "orphan"),
    ] {
        let r = send(
            client,
            "",
            message("TxTopic", id, body, pb::MessageType::Transaction),
        )
        .await;
        assert_eq!(code(&r.status), pb::Code::Ok as i32, "{:?}", r.status);
        assert!(!r.entries[0].transaction_id.is_empty());
        txs.push(r.entries[0].transaction_id.clone());
    }
    assert_eq!(
        s.max_offset("TxTopic", 2).await,
        before,
        "half messages are not in the topic"
    );
    assert!(receive(client, "", "txg", "TxTopic", "*", 1)
        .await
        .is_empty());

    let r = end(
        client,
        "TxTopic",
        "TX-A",
        &txs[0],
        pb::TransactionResolution::Commit,
        pb::TransactionSource::SourceClient,
    )
    .await;
    assert_eq!(code(&r.status), pb::Code::Ok as i32, "{:?}", r.status);
    let r = end(
        client,
        "TxTopic",
        "TX-B",
        &txs[1],
        pb::TransactionResolution::Rollback,
        pb::TransactionSource::SourceClient,
    )
    .await;
    assert_eq!(code(&r.status), pb::Code::Ok as i32, "{:?}", r.status);
    // A second decision, a garbage id and a missing resolution are refused.
    let again = end(
        client,
        "TxTopic",
        "TX-A",
        &txs[0],
        pb::TransactionResolution::Rollback,
        pb::TransactionSource::SourceClient,
    )
    .await;
    assert_eq!(code(&again.status), pb::Code::InvalidTransactionId as i32);
    let garbage = end(
        client,
        "TxTopic",
        "TX-A",
        "not-a-transaction",
        pb::TransactionResolution::Commit,
        pb::TransactionSource::SourceClient,
    )
    .await;
    assert_eq!(code(&garbage.status), pb::Code::InvalidTransactionId as i32);
    let unspecified = end(
        client,
        "TxTopic",
        "TX-C",
        &txs[2],
        pb::TransactionResolution::Unspecified,
        pb::TransactionSource::SourceClient,
    )
    .await;
    assert_eq!(code(&unspecified.status), pb::Code::BadRequest as i32);

    // The orphan: a producer of the topic connects; the broker's check back arrives as a
    // RecoverOrphanedTransaction on its Telemetry stream, and it commits from there.
    let (mut stream, _keep, _) = telemetry(
        client,
        "py-producer-1",
        pb::Settings {
            client_type: Some(pb::ClientType::Producer as i32),
            pub_sub: Some(pb::settings::PubSub::Publishing(pb::Publishing {
                topics: vec![pb::Resource {
                    resource_namespace: String::new(),
                    name: "TxTopic".into(),
                }],
                max_body_size: 0,
                validate_message_type: true,
            })),
            ..pb::Settings::default()
        },
    )
    .await;
    let recover = loop {
        let cmd = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("a transaction check within 20 s")
            .expect("stream")
            .expect("a command");
        if let Some(pb::telemetry_command::Command::RecoverOrphanedTransactionCommand(c)) =
            cmd.command
        {
            break c;
        }
    };
    let orphan = recover.message.expect("the half message");
    assert_eq!(orphan.body, b"orphan");
    assert_eq!(orphan.topic.as_ref().expect("topic").name, "TxTopic");
    let id = orphan
        .system_properties
        .as_ref()
        .expect("props")
        .message_id
        .clone();
    assert_eq!(id, "TX-C");
    let r = end(
        client,
        "TxTopic",
        &id,
        &recover.transaction_id,
        pb::TransactionResolution::Commit,
        pb::TransactionSource::SourceServerCheck,
    )
    .await;
    assert_eq!(code(&r.status), pb::Code::Ok as i32, "{:?}", r.status);

    // Exactly the committed ones are delivered.
    let mut got = Vec::new();
    let started = Instant::now();
    while got.len() < 2 && started.elapsed() < Duration::from_secs(15) {
        got.extend(receive(client, "", "txg", "TxTopic", "*", 2).await);
    }
    assert_eq!(
        bodies(&got),
        vec!["commit-me".to_string(), "orphan".to_string()]
    );
    assert!(receive(client, "", "txg", "TxTopic", "*", 1)
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delayed_messages_arrive_on_time_and_can_be_recalled() {
    let s = Setup::start(30_000).await;
    s.topic("DelayTopic", 2, Some("DELAY")).await;
    let client = &mut s.client.clone();
    let now = rocketraft_common::time::now_ms();
    let at = |ms: i64| prost_types::Timestamp {
        seconds: (now + ms) / 1000,
        nanos: (((now + ms) % 1000) * 1_000_000) as i32,
    };
    let mut keep = message("DelayTopic", "D-KEEP", "kept", pb::MessageType::Delay);
    keep.system_properties
        .as_mut()
        .expect("p")
        .delivery_timestamp = Some(at(2_000));
    let mut drop_it = message("DelayTopic", "D-DROP", "recalled", pb::MessageType::Delay);
    drop_it
        .system_properties
        .as_mut()
        .expect("p")
        .delivery_timestamp = Some(at(2_000));
    let r = send(client, "", keep).await;
    assert_eq!(code(&r.status), pb::Code::Ok as i32, "{:?}", r.status);
    assert!(!r.entries[0].recall_handle.is_empty());
    let r = send(client, "", drop_it).await;
    assert_eq!(code(&r.status), pb::Code::Ok as i32, "{:?}", r.status);
    let handle = r.entries[0].recall_handle.clone();

    let recaller = client.clone();
    let recall = |handle: String| {
        let mut c = recaller.clone();
        async move {
            c.recall_message(pb::RecallMessageRequest {
                topic: resource("DelayTopic"),
                recall_handle: handle,
            })
            .await
            .expect("recall")
            .into_inner()
        }
    };
    let r = recall(handle.clone()).await;
    assert_eq!(code(&r.status), pb::Code::Ok as i32, "{:?}", r.status);
    assert_eq!(r.message_id, "D-DROP");
    let twice = recall(handle.clone()).await;
    assert_eq!(
        code(&twice.status),
        pb::Code::NotFound as i32,
        "{:?}",
        twice.status
    );
    let bad = recall("garbage!".into()).await;
    assert_eq!(code(&bad.status), pb::Code::BadRequest as i32);

    // A normal message is refused by a DELAY topic.
    let refused = send(
        client,
        "",
        message("DelayTopic", "N", "normal", pb::MessageType::Normal),
    )
    .await;
    assert_eq!(
        code(&refused.status),
        pb::Code::MessagePropertyConflictWithType as i32
    );

    let mut got = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        got.extend(receive(client, "", "dg", "DelayTopic", "*", 1).await);
    }
    assert_eq!(
        bodies(&got),
        vec!["kept".to_string()],
        "the recalled one never comes"
    );
    let delivered = rocketraft_common::time::now_ms();
    assert!(delivered >= now + 2_000);
    // Recall after delivery is refused.
    let late = recall(
        send(client, "", {
            let mut m = message("DelayTopic", "D-LATE", "late", pb::MessageType::Delay);
            m.system_properties.as_mut().expect("p").delivery_timestamp = Some(at(0));
            m
        })
        .await
        .entries[0]
            .recall_handle
            .clone(),
    )
    .await;
    // Due at once: either already delivered (NOT_FOUND) or the send was immediate (no handle,
    // a BAD_REQUEST).
    assert!(
        [pb::Code::NotFound as i32, pb::Code::BadRequest as i32].contains(&code(&late.status)),
        "{:?}",
        late.status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespaces_isolate_topics_and_groups_and_fifo_groups_and_tags_apply() {
    let s = Setup::start(30_000).await;
    s.topic("ns1%Shared", 2, None).await;
    s.topic("ns2%Shared", 2, None).await;
    let client = &mut s.client.clone();
    for (ns, body) in [("ns1", "one"), ("ns2", "two")] {
        let r = send(
            client,
            ns,
            message("Shared", &format!("ID-{ns}"), body, pb::MessageType::Normal),
        )
        .await;
        assert_eq!(code(&r.status), pb::Code::Ok as i32, "{:?}", r.status);
    }
    // Without a namespace the topic does not exist.
    let r = send(
        client,
        "",
        message("Shared", "ID-none", "none", pb::MessageType::Normal),
    )
    .await;
    assert_eq!(code(&r.status), pb::Code::TopicNotFound as i32);
    for (ns, body) in [("ns1", "one"), ("ns2", "two")] {
        let got = receive(client, ns, "G", "Shared", "*", 2).await;
        assert_eq!(bodies(&got), vec![body.to_string()], "namespace {ns}");
        let topic = got[0].topic.as_ref().expect("topic");
        assert_eq!(
            (topic.resource_namespace.as_str(), topic.name.as_str()),
            (ns, "Shared")
        );
    }
    // The groups are distinct too: ns1's G consumed, ns2's G has its own offsets.
    assert_eq!(
        s.api
            .query_consumer_offset(&s.addr(), "ns1%G", "ns1%Shared", 0)
            .await
            .expect("offset")
            .unwrap_or(0)
            + s.api
                .query_consumer_offset(&s.addr(), "ns1%G", "ns1%Shared", 1)
                .await
                .expect("offset")
                .unwrap_or(0),
        1
    );

    // A FIFO group is announced as such in the settings; a plain one is not.
    s.topic("FifoTopic", 2, Some("FIFO")).await;
    let r = s
        .api
        .call(
            &s.addr(),
            RemotingCommand::request(request_code::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP).with_body(
                serde_json::to_vec(&serde_json::json!({
                    "groupName": "fifo-g", "consumeMessageOrderly": true
                }))
                .expect("json"),
            ),
            &[response_code::SUCCESS],
        )
        .await;
    assert!(r.is_ok(), "{r:?}");
    for (group, fifo) in [("fifo-g", true), ("plain-g", false)] {
        let (_stream, _keep, settings) = telemetry(
            client,
            &format!("consumer-{group}"),
            pb::Settings {
                client_type: Some(pb::ClientType::SimpleConsumer as i32),
                pub_sub: Some(pb::settings::PubSub::Subscription(pb::Subscription {
                    group: resource(group),
                    subscriptions: vec![pb::SubscriptionEntry {
                        topic: resource("FifoTopic"),
                        expression: Some(pb::FilterExpression {
                            r#type: pb::FilterType::Tag as i32,
                            expression: "*".into(),
                        }),
                    }],
                    ..pb::Subscription::default()
                })),
                ..pb::Settings::default()
            },
        )
        .await;
        let Some(pb::settings::PubSub::Subscription(sub)) = settings.pub_sub else {
            panic!("no subscription settings");
        };
        assert_eq!(sub.fifo, Some(fifo), "group {group}");
    }
    // FIFO through the FIFO group: one message group's messages in send order, the next only
    // after the previous is acked.
    for i in 0..4 {
        let mut m = message(
            "FifoTopic",
            &format!("F{i}"),
            &format!("f{i}"),
            pb::MessageType::Fifo,
        );
        let p = m.system_properties.as_mut().expect("p");
        p.message_group = Some("order-1".into());
        p.tag = Some(if i % 2 == 0 { "even" } else { "odd" }.into());
        let r = send(client, "", m).await;
        assert_eq!(code(&r.status), pb::Code::Ok as i32, "{:?}", r.status);
    }
    let mut order = Vec::new();
    let started = Instant::now();
    while order.len() < 4 && started.elapsed() < Duration::from_secs(20) {
        let got = receive(client, "", "fifo-g", "FifoTopic", "*", 1).await;
        order.extend(
            got.iter()
                .map(|m| String::from_utf8_lossy(&m.body).to_string()),
        );
    }
    assert_eq!(order, vec!["f0", "f1", "f2", "f3"]);
    // A TAG filter: only the odd ones for another group.
    let mut odd = Vec::new();
    let started = Instant::now();
    while odd.len() < 2 && started.elapsed() < Duration::from_secs(10) {
        odd.extend(receive(client, "", "odd-g", "FifoTopic", "odd", 1).await);
    }
    assert_eq!(bodies(&odd), vec!["f1".to_string(), "f3".to_string()]);
    for m in &odd {
        assert_eq!(
            m.system_properties.as_ref().expect("p").tag.as_deref(),
            Some("odd")
        );
    }
}

/// The trace records of `id` in the trace topic (the index follows in the background: waits
/// until `want` records are there).
async fn trace_records(
    s: &Setup,
    id: &str,
    want: usize,
) -> Vec<rocketraft_common::trace::TraceRecord> {
    use rocketraft_common::trace::{decode, TRACE_TOPIC};
    let started = Instant::now();
    loop {
        let found = s
            .api
            .query_message(&s.addr(), TRACE_TOPIC, id, 32, 0, i64::MAX, false)
            .await
            .expect("query the trace topic");
        let records: Vec<_> = found
            .iter()
            .flat_map(|m| decode(&String::from_utf8_lossy(&m.message.body)))
            .filter(|r| r.get("msgId") == Some(id))
            .collect();
        if records.len() >= want || started.elapsed() > Duration::from_secs(10) {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_traced_send_and_its_ack_leave_trace_records() {
    let s = Setup::start(60_000).await;
    s.topic("TraceMe", 1, None).await;
    let mut client = s.client.clone();
    let mut traced = message("TraceMe", "TRACED-ID-1", "traced", pb::MessageType::Normal);
    if let Some(sys) = traced.system_properties.as_mut() {
        sys.trace_context = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        sys.keys = vec!["order-1".into()];
    }
    let r = send(&mut client, "", traced).await;
    assert_eq!(code(&r.status), pb::Code::Ok as i32, "{:?}", r.status);
    let plain = message("TraceMe", "PLAIN-ID-1", "plain", pb::MessageType::Normal);
    let r = send(&mut client, "", plain).await;
    assert_eq!(code(&r.status), pb::Code::Ok as i32, "{:?}", r.status);

    let records = trace_records(&s, "TRACED-ID-1", 1).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let p = &records[0];
    assert_eq!(p.trace_type, "Pub");
    assert_eq!(p.get("topic"), Some("TraceMe"));
    assert_eq!(p.get("keys"), Some("order-1"));
    assert_eq!(p.get("tags"), Some("tagA"));
    assert_eq!(p.get("success"), Some("true"));
    assert_eq!(p.get("storeHost"), Some(s.addr().as_str()));
    assert_eq!(p.get("offsetMsgId").map(str::len), Some(32));
    // The trace message is found by the traced message's own key too.
    let by_key = s
        .api
        .query_message(
            &s.addr(),
            rocketraft_common::trace::TRACE_TOPIC,
            "order-1",
            32,
            0,
            i64::MAX,
            false,
        )
        .await
        .expect("query");
    assert_eq!(by_key.len(), 1);
    // An untraced send writes nothing: the trace topic holds that one record only.
    assert_eq!(
        s.max_offset(rocketraft_common::trace::TRACE_TOPIC, 1).await,
        1
    );

    // Received with its trace context, acked by id: a SubAfter record for the group.
    let got = receive_only(&mut client, "", "trace_cg", "TraceMe", "*", 3).await;
    assert_eq!(got.len(), 2, "both messages delivered");
    for m in &got {
        let sys = m.system_properties.as_ref().expect("sys");
        if sys.message_id == "TRACED-ID-1" {
            assert_eq!(
                sys.trace_context.as_deref(),
                Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                "the trace context reaches the consumer"
            );
        } else {
            assert!(sys.trace_context.is_none());
        }
        let r = client
            .ack_message(pb::AckMessageRequest {
                group: resource("trace_cg"),
                topic: resource("TraceMe"),
                entries: vec![pb::AckMessageEntry {
                    message_id: sys.message_id.clone(),
                    receipt_handle: sys.receipt_handle.clone().expect("handle"),
                    lite_topic: None,
                }],
            })
            .await
            .expect("ack")
            .into_inner();
        assert_eq!(code(&r.status), pb::Code::Ok as i32, "{:?}", r.status);
    }
    let records = trace_records(&s, "TRACED-ID-1", 2).await;
    assert_eq!(records.len(), 2, "{records:?}");
    let sub = records
        .iter()
        .find(|r| r.trace_type == "SubAfter")
        .expect("SubAfter");
    assert_eq!(sub.get("groupName"), Some("trace_cg"));
    assert_eq!(sub.get("success"), Some("true"));
    assert_eq!(sub.get("keys"), Some("order-1"));
    assert!(trace_records(&s, "PLAIN-ID-1", 1).await.is_empty());
    assert_eq!(
        s.max_offset(rocketraft_common::trace::TRACE_TOPIC, 1).await,
        2
    );
}

/// The context code RocketMQ's `ConsumeReturnType.FAILED` is written with.
const CONSUME_FAILED: &str = "4";

fn traced(topic: &str, id: &str, key: &str, kind: pb::MessageType) -> pb::Message {
    let mut m = message(topic, id, id, kind);
    if let Some(sys) = m.system_properties.as_mut() {
        sys.trace_context = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        sys.keys = vec![key.into()];
    }
    m
}

fn handle_of(m: &pb::Message) -> String {
    m.system_properties
        .as_ref()
        .and_then(|p| p.receipt_handle.clone())
        .expect("handle")
}

/// Received at one proxy, handed back at another: the second proxy knows from the handle and
/// the transaction id alone that the message is traced, and writes the records.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_traced_message_given_back_dead_lettered_or_committed_at_another_proxy_leaves_records() {
    let s = Setup::start(60_000).await;
    s.topic("TraceBack", 1, None).await;
    s.topic("TraceTx", 1, Some("TRANSACTION")).await;
    let other = Proxy::start(crate::support::local_proxy_config(&s.namesrv))
        .await
        .expect("second proxy");
    let mut at_other = MessagingServiceClient::connect(format!("http://{}", other.local_addr()))
        .await
        .expect("connect to the second proxy");
    let mut client = s.client.clone();
    for m in [
        traced("TraceBack", "TR-NACK", "k-nack", pb::MessageType::Normal),
        traced("TraceBack", "TR-DLQ", "k-dlq", pb::MessageType::Normal),
        message("TraceBack", "PLAIN-BACK", "plain", pb::MessageType::Normal),
    ] {
        let r = send(&mut client, "", m).await;
        assert_eq!(code(&r.status), pb::Code::Ok as i32, "{:?}", r.status);
    }
    let got = receive_only(&mut client, "", "trace_back_cg", "TraceBack", "*", 3).await;
    assert_eq!(got.len(), 3, "all three delivered");
    let by_id: HashMap<String, &pb::Message> = got
        .iter()
        .map(|m| {
            (
                m.system_properties
                    .as_ref()
                    .expect("sys")
                    .message_id
                    .clone(),
                m,
            )
        })
        .collect();
    assert!(handle_of(by_id["TR-NACK"]).ends_with(" t"));
    assert!(!handle_of(by_id["PLAIN-BACK"]).ends_with(" t"));

    // A nack at the other proxy, then an ack of the renewed handle there.
    let renewed = at_other
        .change_invisible_duration(pb::ChangeInvisibleDurationRequest {
            group: resource("trace_back_cg"),
            topic: resource("TraceBack"),
            receipt_handle: handle_of(by_id["TR-NACK"]),
            invisible_duration: Some(prost_types::Duration {
                seconds: 20,
                nanos: 0,
            }),
            message_id: "TR-NACK".into(),
            lite_topic: None,
            suspend: None,
        })
        .await
        .expect("change invisible duration")
        .into_inner();
    assert_eq!(
        code(&renewed.status),
        pb::Code::Ok as i32,
        "{:?}",
        renewed.status
    );
    let acked = at_other
        .ack_message(pb::AckMessageRequest {
            group: resource("trace_back_cg"),
            topic: resource("TraceBack"),
            entries: vec![pb::AckMessageEntry {
                message_id: "TR-NACK".into(),
                receipt_handle: renewed.receipt_handle.clone(),
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
    let records = trace_records(&s, "TR-NACK", 3).await;
    let kinds: Vec<(&str, Option<&str>, Option<&str>)> = records
        .iter()
        .map(|r| {
            (
                r.trace_type.as_str(),
                r.get("success"),
                r.get("contextCode"),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("Pub", Some("true"), None),
            ("SubAfter", Some("false"), Some(CONSUME_FAILED)),
            ("SubAfter", Some("true"), Some("0")),
        ],
        "{records:?}"
    );
    for sub in &records[1..] {
        assert_eq!(sub.get("groupName"), Some("trace_back_cg"));
        assert_eq!(
            sub.get("keys"),
            Some("k-nack"),
            "keys read back from the broker"
        );
    }

    // Given up on at the other proxy: forwarded to the DLQ, a failed attempt in the trace.
    let forwarded = at_other
        .forward_message_to_dead_letter_queue(pb::ForwardMessageToDeadLetterQueueRequest {
            group: resource("trace_back_cg"),
            topic: resource("TraceBack"),
            receipt_handle: handle_of(by_id["TR-DLQ"]),
            message_id: "TR-DLQ".into(),
            delivery_attempt: 1,
            max_delivery_attempts: 1,
            lite_topic: None,
        })
        .await
        .expect("forward")
        .into_inner();
    assert_eq!(
        code(&forwarded.status),
        pb::Code::Ok as i32,
        "{:?}",
        forwarded.status
    );
    let records = trace_records(&s, "TR-DLQ", 2).await;
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[1].trace_type, "SubAfter");
    assert_eq!(records[1].get("success"), Some("false"));
    assert_eq!(records[1].get("contextCode"), Some(CONSUME_FAILED));
    assert_eq!(records[1].get("keys"), Some("k-dlq"));

    // The untraced message acked at the other proxy writes nothing.
    let acked = at_other
        .ack_message(pb::AckMessageRequest {
            group: resource("trace_back_cg"),
            topic: resource("TraceBack"),
            entries: vec![pb::AckMessageEntry {
                message_id: "PLAIN-BACK".into(),
                receipt_handle: handle_of(by_id["PLAIN-BACK"]),
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

    // A traced half message committed at the other proxy, an untraced one rolled back there.
    let half = send(
        &mut client,
        "",
        traced("TraceTx", "TR-TX", "k-tx", pb::MessageType::Transaction),
    )
    .await;
    assert_eq!(code(&half.status), pb::Code::Ok as i32, "{:?}", half.status);
    let plain_half = send(
        &mut client,
        "",
        message("TraceTx", "PLAIN-TX", "plain", pb::MessageType::Transaction),
    )
    .await;
    assert_eq!(
        code(&plain_half.status),
        pb::Code::Ok as i32,
        "{:?}",
        plain_half.status
    );
    let r = end(
        &mut at_other,
        "TraceTx",
        "TR-TX",
        &half.entries[0].transaction_id,
        pb::TransactionResolution::Commit,
        pb::TransactionSource::SourceClient,
    )
    .await;
    assert_eq!(code(&r.status), pb::Code::Ok as i32, "{:?}", r.status);
    let r = end(
        &mut at_other,
        "TraceTx",
        "PLAIN-TX",
        &plain_half.entries[0].transaction_id,
        pb::TransactionResolution::Rollback,
        pb::TransactionSource::SourceClient,
    )
    .await;
    assert_eq!(code(&r.status), pb::Code::Ok as i32, "{:?}", r.status);
    let records = trace_records(&s, "TR-TX", 2).await;
    assert_eq!(records.len(), 2, "{records:?}");
    let end_record = &records[1];
    assert_eq!(end_record.trace_type, "EndTransaction");
    assert_eq!(end_record.get("topic"), Some("TraceTx"));
    assert_eq!(end_record.get("keys"), Some("k-tx"));
    assert_eq!(end_record.get("tags"), Some("tagA"));
    assert_eq!(end_record.get("transactionState"), Some("COMMIT_MESSAGE"));
    assert_eq!(end_record.get("fromTransactionCheck"), Some("false"));
    assert_eq!(end_record.get("storeHost"), Some(s.addr().as_str()));

    // Pub x3, SubAfter x3 and EndTransaction x1, nothing for the untraced messages (trace
    // records are written before the proxy answers).
    assert_eq!(
        s.max_offset(rocketraft_common::trace::TRACE_TOPIC, 1).await,
        7
    );
    drop(other);
}
