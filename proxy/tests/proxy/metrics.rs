//! The proxy's metrics over real gRPC: every call in `rocketmq_rpc_latency` with
//! `protocol_type="grpc"`, the RPC's name and the v2 status code it answered; the proxy's
//! gauges (`rocketmq_proxy_up`, Telemetry streams, receives in flight); and the clients'
//! metric settings (`metricCollectorMode` / `metricCollectorAddress`) in Telemetry.

use std::time::{Duration, Instant};

use rocketraft_common::metrics::text::{sample, sum};
use rocketraft_common::metrics::{encode, Registry, RpcMetrics};
use rocketraft_common::TopicConfig;
use rocketraft_nameserver::{NameServer, NamesrvConfig};
use rocketraft_proxy::metrics::{MetricCollectorMode, ProxyMode};
use rocketraft_proxy::pb;
use rocketraft_proxy::pb::messaging_service_client::MessagingServiceClient;
use rocketraft_proxy::{Proxy, ProxyConfig, SecurityConfig};
use tonic::transport::Channel;

const TOPIC: &str = "MetricsTopic";
const EMPTY: &str = "MetricsEmptyTopic";

fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource {
        resource_namespace: String::new(),
        name: name.to_string(),
    })
}

fn proxy_config(namesrv: &str) -> ProxyConfig {
    ProxyConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        advertised_host: None,
        namesrv_addr: namesrv.to_string(),
        ..ProxyConfig::default()
    }
}

fn grpc_calls(text: &str, rpc: &str, response_code: i32) -> f64 {
    sum(
        text,
        "rocketmq_rpc_latency_count",
        &[
            "protocol_type=\"grpc\"",
            &format!("request_code=\"{rpc}\""),
            &format!("response_code=\"{response_code}\""),
        ],
    )
}

/// Opens a producer's Telemetry stream and returns the server's settings and the stream (the
/// session lives while both ends are held).
async fn telemetry(
    client: &mut MessagingServiceClient<Channel>,
) -> (
    pb::Settings,
    tonic::Streaming<pb::TelemetryCommand>,
    tokio::sync::mpsc::Sender<pb::TelemetryCommand>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::TelemetryCommand {
        status: None,
        command: Some(pb::telemetry_command::Command::Settings(pb::Settings {
            client_type: Some(pb::ClientType::Producer as i32),
            pub_sub: Some(pb::settings::PubSub::Publishing(pb::Publishing {
                topics: vec![resource(TOPIC).expect("resource")],
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
    let mut stream = client
        .telemetry(outbound)
        .await
        .expect("telemetry")
        .into_inner();
    let reply = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("settings reply in time")
        .expect("stream")
        .expect("a command");
    match reply.command {
        Some(pb::telemetry_command::Command::Settings(s)) => (s, stream, tx),
        other => panic!("not settings: {other:?}"),
    }
}

async fn eventually(what: &str, registry: &Registry, mut done: impl FnMut(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = encode(registry).expect("encodes");
        if done(&text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_calls_show_in_rpc_latency_and_the_proxy_reports_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (namesrv, broker) = crate::support::start_backend(dir.path(), |_| {}).await;
    crate::support::create_topic(&namesrv, &broker, &TopicConfig::new(TOPIC, 2)).await;
    crate::support::create_topic(&namesrv, &broker, &TopicConfig::new(EMPTY, 1)).await;
    let rpc = RpcMetrics::standalone(Vec::new());
    let proxy = Proxy::start_secure(
        ProxyConfig {
            rpc_metrics: Some(rpc.clone()),
            proxy_mode: ProxyMode::Local,
            ..proxy_config(&namesrv.local_addr().to_string())
        },
        SecurityConfig::default(),
    )
    .await
    .expect("proxy");
    let mut registry = Registry::default();
    registry.register_collector(proxy.metrics_collector());
    registry.register_collector(Box::new(rpc));

    let text = encode(&registry).expect("encodes");
    assert_eq!(
        sample(&text, "rocketmq_proxy_up{proxy_mode=\"local\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "rocketraft_proxy_telemetry_streams"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "rocketraft_proxy_receives_in_flight"),
        Some(0.0),
        "{text}"
    );

    let mut client = crate::support::grpc_client(&proxy).await;
    for topic in [TOPIC, "NoSuchTopic"] {
        client
            .query_route(pb::QueryRouteRequest {
                topic: resource(topic),
                endpoints: None,
            })
            .await
            .expect("route");
    }
    let sent = client
        .send_message(pb::SendMessageRequest {
            messages: vec![pb::Message {
                topic: resource(TOPIC),
                system_properties: Some(pb::SystemProperties {
                    message_id: "METRICS0001".into(),
                    message_type: pb::MessageType::Normal as i32,
                    ..pb::SystemProperties::default()
                }),
                body: b"counted".to_vec(),
                ..pb::Message::default()
            }],
        })
        .await
        .expect("send")
        .into_inner();
    assert_eq!(
        sent.status.as_ref().map(|s| s.code),
        Some(pb::Code::Ok as i32),
        "{sent:?}"
    );

    // A Telemetry stream: counted while open; the settings say client metrics are off.
    let (settings, stream, tx) = telemetry(&mut client).await;
    assert_eq!(
        settings.metric,
        Some(pb::Metric {
            on: false,
            endpoints: None
        })
    );

    let text = encode(&registry).expect("encodes");
    let ok = pb::Code::Ok as i32;
    assert_eq!(grpc_calls(&text, "QueryRoute", ok), 1.0, "{text}");
    assert_eq!(
        grpc_calls(&text, "QueryRoute", pb::Code::TopicNotFound as i32),
        1.0,
        "{text}"
    );
    assert_eq!(grpc_calls(&text, "SendMessage", ok), 1.0, "{text}");
    assert_eq!(grpc_calls(&text, "Telemetry", 0), 1.0, "{text}");
    assert_eq!(
        sum(
            &text,
            "rocketmq_rpc_latency_count",
            &[
                "request_code=\"SendMessage\"",
                "is_long_polling=\"false\"",
                "result=\"success\""
            ]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "rocketraft_proxy_telemetry_streams"),
        Some(1.0),
        "{text}"
    );

    // A long poll on an empty topic: in flight while it waits, then MESSAGE_NOT_FOUND.
    let mut poller = client.clone();
    let poll = tokio::spawn(async move {
        let mut req = tonic::Request::new(pb::ReceiveMessageRequest {
            group: resource("metrics-group"),
            message_queue: Some(pb::MessageQueue {
                topic: resource(EMPTY),
                id: -1,
                ..pb::MessageQueue::default()
            }),
            filter_expression: Some(pb::FilterExpression {
                r#type: pb::FilterType::Tag as i32,
                expression: "*".into(),
            }),
            batch_size: 1,
            invisible_duration: Some(prost_types::Duration {
                seconds: 10,
                nanos: 0,
            }),
            auto_renew: false,
            long_polling_timeout: Some(prost_types::Duration {
                seconds: 2,
                nanos: 0,
            }),
            attempt_id: None,
        });
        req.set_timeout(Duration::from_secs(10));
        let mut stream = poller
            .receive_message(req)
            .await
            .expect("receive")
            .into_inner();
        let mut items = Vec::new();
        while let Some(item) = stream.message().await.expect("item") {
            items.push(item);
        }
        items
    });
    eventually("a receive in flight", &registry, |t| {
        sample(t, "rocketraft_proxy_receives_in_flight") == Some(1.0)
    })
    .await;
    let items = poll.await.expect("the poll ends");
    assert!(
        matches!(
            items.first().and_then(|i| i.content.as_ref()),
            Some(pb::receive_message_response::Content::Status(s))
                if s.code == pb::Code::MessageNotFound as i32
        ),
        "{items:?}"
    );
    let text = encode(&registry).expect("encodes");
    assert_eq!(
        sample(&text, "rocketraft_proxy_receives_in_flight"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sum(
            &text,
            "rocketmq_rpc_latency_count",
            &[
                "protocol_type=\"grpc\"",
                "request_code=\"ReceiveMessage\"",
                &format!("response_code=\"{}\"", pb::Code::MessageNotFound as i32),
                "is_long_polling=\"true\"",
            ]
        ),
        1.0,
        "{text}"
    );

    // The client closes its Telemetry stream: no longer counted.
    drop((stream, tx));
    eventually("the Telemetry stream to close", &registry, |t| {
        sample(t, "rocketraft_proxy_telemetry_streams") == Some(0.0)
    })
    .await;

    proxy.shutdown().await;
    let text = encode(&registry).expect("encodes");
    assert!(!text.contains("rocketmq_proxy_up"), "{text}");
    broker.shutdown().await;
    namesrv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_settings_name_the_metric_collector_when_configured() {
    let namesrv = NameServer::start(NamesrvConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..NamesrvConfig::default()
    })
    .await
    .expect("namesrv");
    let namesrv_addr = namesrv.local_addr().to_string();

    // Settings the proxy cannot serve are refused before it listens.
    for (mode, address) in [
        (MetricCollectorMode::On, ""),
        (MetricCollectorMode::On, "collector:notaport"),
        (MetricCollectorMode::Proxy, ""),
    ] {
        let refused = Proxy::start_secure(
            ProxyConfig {
                metric_collector_mode: mode,
                metric_collector_address: address.to_string(),
                ..proxy_config(&namesrv_addr)
            },
            SecurityConfig::default(),
        )
        .await;
        let Err(e) = refused else {
            panic!("a proxy started with {mode:?} {address:?}")
        };
        assert!(e.to_string().contains("metricCollector"), "{e}");
    }

    let proxy = Proxy::start_secure(
        ProxyConfig {
            metric_collector_mode: MetricCollectorMode::On,
            metric_collector_address: "10.1.2.3:4317".into(),
            ..proxy_config(&namesrv_addr)
        },
        SecurityConfig::default(),
    )
    .await
    .expect("proxy");
    let mut client = crate::support::grpc_client(&proxy).await;
    let (settings, _stream, _tx) = telemetry(&mut client).await;
    assert_eq!(
        settings.metric,
        Some(pb::Metric {
            on: true,
            endpoints: Some(pb::Endpoints {
                scheme: pb::AddressScheme::IPv4 as i32,
                addresses: vec![pb::Address {
                    host: "10.1.2.3".into(),
                    port: 4317,
                }],
            }),
        })
    );
    proxy.shutdown().await;
    namesrv.shutdown().await;
}
