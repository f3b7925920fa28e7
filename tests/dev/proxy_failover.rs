//! Two stateless `rocketraft proxy` processes in front of one `rocketraft dev`: a gRPC client
//! spreads its sends over both, receives through one, then that proxy is killed with SIGKILL in
//! the middle of the run. The client carries on through the other proxy: messages received (and
//! not yet acked) through the dead proxy are acked through the live one, later sends go to the
//! live one, and a final drain finds every acknowledged message.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rocketraft_common::TopicConfig;
use rocketraft_proxy::pb;
use rocketraft_proxy::pb::messaging_service_client::MessagingServiceClient;
use rocketraft_remoting::api::MqClientApi;
use rocketraft_remoting::{ClientConfig, RemotingClient};
use tonic::transport::Channel;

use crate::support::{free_port, resource, spawn_ready, Dev};

const TOPIC: &str = "TwoProxies";
const GROUP: &str = "two-proxies";

/// Sends one message; `Ok(true)` when acknowledged, `Ok(false)` on a non-OK status,
/// `Err` when the proxy could not be reached (the outcome is then unknown).
async fn send(client: &mut MessagingServiceClient<Channel>, i: usize) -> Result<bool, String> {
    let mut req = tonic::Request::new(pb::SendMessageRequest {
        messages: vec![pb::Message {
            topic: resource(TOPIC),
            user_properties: HashMap::new(),
            system_properties: Some(pb::SystemProperties {
                message_id: format!("FO-{i:05}"),
                message_type: pb::MessageType::Normal as i32,
                ..pb::SystemProperties::default()
            }),
            body: format!("m{i}").into_bytes(),
        }],
    });
    req.set_timeout(Duration::from_secs(5));
    match client.send_message(req).await {
        Ok(r) => Ok(r
            .into_inner()
            .status
            .is_some_and(|s| s.code == pb::Code::Ok as i32)),
        Err(e) => Err(e.to_string()),
    }
}

/// One receive: (message id, receipt handle) pairs.
async fn receive(
    client: &mut MessagingServiceClient<Channel>,
    poll_s: i64,
) -> Result<Vec<(String, String)>, String> {
    let mut req = tonic::Request::new(pb::ReceiveMessageRequest {
        group: resource(GROUP),
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
            seconds: 60,
            nanos: 0,
        }),
        auto_renew: false,
        long_polling_timeout: Some(prost_types::Duration {
            seconds: poll_s,
            nanos: 0,
        }),
        attempt_id: None,
    });
    req.set_timeout(Duration::from_secs(poll_s as u64 + 10));
    let mut stream = client
        .receive_message(req)
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let mut out = Vec::new();
    while let Some(item) = stream.message().await.map_err(|e| e.to_string())? {
        if let Some(pb::receive_message_response::Content::Message(m)) = item.content {
            let p = m.system_properties.unwrap_or_default();
            out.push((p.message_id, p.receipt_handle.unwrap_or_default()));
        }
    }
    Ok(out)
}

async fn ack(client: &mut MessagingServiceClient<Channel>, handle: &str) -> i32 {
    client
        .ack_message(pb::AckMessageRequest {
            group: resource(GROUP),
            topic: resource(TOPIC),
            entries: vec![pb::AckMessageEntry {
                message_id: String::new(),
                receipt_handle: handle.to_string(),
                lite_topic: None,
            }],
        })
        .await
        .map(|r| r.into_inner().status.map_or(-1, |s| s.code))
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_two_proxies_loses_no_acknowledged_message() {
    let _turn = crate::support::file_turn(module_path!());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut dev = Dev::start(dir.path(), free_port(), free_port(), &["--no-proxy"]);
    MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(5),
    )
    .create_topic(&dev.broker, &TopicConfig::new(TOPIC, 4))
    .await
    .expect("topic");
    // The broker registers the topic with the NameServer right after; wait for the route.
    let api = MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(5),
    );
    let started = Instant::now();
    while api.topic_route(&dev.namesrv, TOPIC).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "no route");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (a_addr, b_addr) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let mut proxy_a = spawn_ready(&["proxy", "--listen", &a_addr, "--namesrv", &dev.namesrv]);
    let _proxy_b = spawn_ready(&["proxy", "--listen", &b_addr, "--namesrv", &dev.namesrv]);
    let mut a = MessagingServiceClient::connect(format!("http://{a_addr}"))
        .await
        .expect("connect a");
    let mut b = MessagingServiceClient::connect(format!("http://{b_addr}"))
        .await
        .expect("connect b");

    let mut acked: BTreeSet<String> = BTreeSet::new();
    let mut unknown = 0;
    let mut held: Vec<(String, String)> = Vec::new();
    let mut a_alive = true;
    for i in 0..300 {
        if i == 120 {
            // Take some messages through A, keep their handles, then kill A.
            held = receive(&mut a, 2).await.expect("receive through a");
            assert!(!held.is_empty(), "nothing received through proxy A");
            proxy_a.0.kill().expect("kill -9 proxy A");
            let _ = proxy_a.0.wait();
            a_alive = false;
        }
        // Alternate; a send to the dead proxy fails and is retried on the other one.
        let first = if i % 2 == 0 && a_alive {
            &mut a
        } else {
            &mut b
        };
        let outcome = match send(first, i).await {
            Err(_) => send(&mut b, i).await,
            done => done,
        };
        match outcome {
            Ok(true) => {
                acked.insert(format!("FO-{i:05}"));
            }
            Ok(false) => panic!("message {i} refused"),
            Err(e) => {
                unknown += 1;
                assert!(
                    !a_alive || i < 120,
                    "a send through the live proxy failed: {e}"
                );
            }
        }
    }
    assert!(!a_alive);
    assert!(
        acked.len() >= 299,
        "only {} of 300 sends acknowledged ({unknown} unknown)",
        acked.len()
    );
    // Handles received through the dead proxy are acked through the live one.
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for (id, handle) in &held {
        assert_eq!(
            ack(&mut b, handle).await,
            pb::Code::Ok as i32,
            "a handle from proxy A does not ack through proxy B"
        );
        seen.insert(id.clone());
    }
    // Drain through B.
    let started = Instant::now();
    while !acked.is_subset(&seen) && started.elapsed() < Duration::from_secs(60) {
        for (id, handle) in receive(&mut b, 2).await.expect("receive through b") {
            assert_eq!(ack(&mut b, &handle).await, pb::Code::Ok as i32);
            seen.insert(id);
        }
    }
    let lost: Vec<&String> = acked.difference(&seen).collect();
    assert!(lost.is_empty(), "acknowledged but never received: {lost:?}");
    let _ = dev.child.kill();
    let _ = dev.child.wait();
}
