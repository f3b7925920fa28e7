//! Several plain messages in one SendMessage go to the broker as one SEND_BATCH_MESSAGE, unless
//! one cannot go in a batch: properties longer than a batch entry's `i16` length (sent one by
//! one, never stored cut short), or a batch larger than the largest message once each entry's
//! fixed fields and properties are counted, or refused by the broker for its size (then each
//! message goes alone and gets its own answer).

use std::collections::HashMap;
use std::time::Duration;

use rocketraft_broker::Broker;
use rocketraft_common::message::MessageExt;
use rocketraft_common::TopicConfig;
use rocketraft_proxy::metrics::ProxyMode;
use rocketraft_proxy::pb;
use rocketraft_proxy::pb::messaging_service_client::MessagingServiceClient;
use rocketraft_proxy::{GrpcLimits, Proxy, ProxyConfig, SecurityConfig};
use rocketraft_remoting::api::{MqClientApi, PullRequest, PullStatus};
use rocketraft_remoting::{ClientConfig, RemotingClient};
use tonic::transport::Channel;

const TOPIC: &str = "BatchTopic";

fn message(id: &str, body: Vec<u8>) -> pb::Message {
    pb::Message {
        topic: Some(pb::Resource {
            resource_namespace: String::new(),
            name: TOPIC.to_string(),
        }),
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

async fn send(
    client: &mut MessagingServiceClient<Channel>,
    messages: Vec<pb::Message>,
) -> pb::SendMessageResponse {
    client
        .send_message(pb::SendMessageRequest { messages })
        .await
        .expect("send")
        .into_inner()
}

/// Every message stored in the topic's one queue.
async fn stored(broker: &Broker) -> Vec<MessageExt> {
    let api = MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(5),
    );
    let mut all = Vec::new();
    let mut offset = 0;
    loop {
        let r = api
            .pull(
                &broker.local_addr().to_string(),
                &PullRequest {
                    consumer_group: "batch_reader".into(),
                    topic: TOPIC.into(),
                    queue_id: 0,
                    queue_offset: offset,
                    max_msg_nums: 32,
                    sys_flag: rocketraft_common::consts::pull_sys_flag::SUBSCRIPTION,
                    commit_offset: 0,
                    suspend_timeout_ms: 0,
                    subscription: Some("*".into()),
                },
            )
            .await
            .expect("pull");
        if r.status != PullStatus::Found || r.messages.is_empty() {
            return all;
        }
        offset = r.next_begin_offset;
        all.extend(r.messages);
    }
}

/// A backend (broker's largest message `broker_max`), the topic with one queue, and a
/// local-mode proxy whose largest message is `proxy_max`.
async fn setup(
    dir: &std::path::Path,
    broker_max: usize,
    proxy_max: usize,
) -> (rocketraft_nameserver::NameServer, Broker, Proxy) {
    let (namesrv, broker) = crate::support::start_backend(dir, |c| {
        c.store.max_message_size = broker_max;
    })
    .await;
    crate::support::create_topic(&namesrv, &broker, &TopicConfig::new(TOPIC, 1)).await;
    let proxy = Proxy::start_secure(
        ProxyConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            namesrv_addr: namesrv.local_addr().to_string(),
            proxy_mode: ProxyMode::Local,
            ..ProxyConfig::default()
        },
        SecurityConfig {
            limits: GrpcLimits {
                max_message_size: proxy_max,
                ..GrpcLimits::default()
            },
            ..SecurityConfig::default()
        },
    )
    .await
    .expect("proxy");
    (namesrv, broker, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_property_too_long_for_a_batch_entry_goes_alone_and_is_never_stored_cut_short() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (namesrv, broker, proxy) = setup(dir.path(), 4 << 20, 4 << 20).await;
    let mut client = crate::support::grpc_client(&proxy).await;
    let huge_value = "v".repeat(70_000);
    let huge = |id: &str| {
        let mut m = message(id, format!("body of {id}").into_bytes());
        m.user_properties.insert("big".into(), huge_value.clone());
        m
    };

    let alone = send(&mut client, vec![huge("HUGE-ALONE")]).await;
    let together = send(
        &mut client,
        vec![message("PLAIN-1", b"plain".to_vec()), huge("HUGE-WITH")],
    )
    .await;
    assert_eq!(together.entries.len(), 2);
    assert_eq!(code(&together.entries[0].status), pb::Code::Ok as i32);
    assert_eq!(
        code(&together.entries[1].status),
        code(&alone.entries[0].status),
        "sent with another message, the long-property message was answered otherwise than alone: {:?} vs {:?}",
        together.entries[1].status,
        alone.entries[0].status
    );

    let messages = stored(&broker).await;
    assert!(
        messages.iter().any(|m| m.message.body.as_ref() == b"plain"),
        "the plain message was not stored"
    );
    for m in &messages {
        if let Some(big) = m.message.properties.get("big") {
            assert_eq!(
                big.len(),
                huge_value.len(),
                "a property was stored cut short"
            );
        }
        assert!(
            m.message.body.starts_with(b"body of HUGE") == m.message.properties.contains_key("big"),
            "a message was stored without its long property: {:?}",
            m.message.body
        );
    }
    let huge_stored = messages
        .iter()
        .filter(|m| m.message.properties.contains_key("big"))
        .count();
    let expected = if code(&alone.entries[0].status) == pb::Code::Ok as i32 {
        2
    } else {
        0
    };
    assert_eq!(huge_stored, expected);

    proxy.shutdown().await;
    broker.shutdown().await;
    namesrv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_counts_each_entrys_overhead_and_a_batch_the_broker_refuses_goes_one_by_one() {
    const MAX: usize = 16 * 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    // The proxy's limit is the broker's: bodies that fit together, entries that do not.
    let (namesrv, broker, proxy) = setup(dir.path(), MAX, MAX).await;
    let mut client = crate::support::grpc_client(&proxy).await;
    let half = MAX / 2 - 4;
    let r = send(
        &mut client,
        vec![
            message("FIT-1", vec![b'a'; half]),
            message("FIT-2", vec![b'b'; half]),
        ],
    )
    .await;
    assert_eq!(code(&r.status), pb::Code::Ok as i32, "{:?}", r.status);
    assert!(r
        .entries
        .iter()
        .all(|e| code(&e.status) == pb::Code::Ok as i32));
    assert_eq!(stored(&broker).await.len(), 2);
    proxy.shutdown().await;

    // A proxy that allows more than the broker: the broker refuses the batch (nothing
    // stored), each message goes alone and is stored.
    let proxy = Proxy::start_secure(
        ProxyConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            namesrv_addr: namesrv.local_addr().to_string(),
            proxy_mode: ProxyMode::Local,
            ..ProxyConfig::default()
        },
        SecurityConfig {
            limits: GrpcLimits {
                max_message_size: 4 * MAX,
                ..GrpcLimits::default()
            },
            ..SecurityConfig::default()
        },
    )
    .await
    .expect("proxy");
    let mut client = crate::support::grpc_client(&proxy).await;
    let r = send(
        &mut client,
        vec![
            message("BIG-1", vec![b'c'; MAX - 1024]),
            message("BIG-2", vec![b'd'; MAX - 1024]),
        ],
    )
    .await;
    assert_eq!(code(&r.status), pb::Code::Ok as i32, "{:?}", r.status);
    assert!(r
        .entries
        .iter()
        .all(|e| code(&e.status) == pb::Code::Ok as i32));
    let bodies: Vec<usize> = stored(&broker)
        .await
        .iter()
        .map(|m| m.message.body.len())
        .collect();
    assert_eq!(bodies, vec![half, half, MAX - 1024, MAX - 1024]);

    proxy.shutdown().await;
    broker.shutdown().await;
    namesrv.shutdown().await;
}
