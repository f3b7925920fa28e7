//! Several broker sets under one controller and one NameServer: `rocketraft cluster up --sets 2
//! --replicas 2` starts broker-a and broker-b (two replicas each); `admin topic create` puts a
//! topic's queues on both masters and the route lists both sets. Sends over Remoting
//! ([`TopicProducer`]) and through a `rocketraft proxy` (gRPC) land on both sets; POP through the
//! proxy (naming each set, as a gRPC client does from QueryAssignment) and Remoting pulls receive
//! from both. The master of broker-a is killed with SIGKILL: sends keep succeeding on broker-b
//! during the failover, and once broker-a's slave is master both sets take sends again. Nothing
//! acknowledged is lost, and every message of a FIFO message group sits on one queue of one set.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketraft_common::consts::property;
use rocketraft_proxy::pb;
use rocketraft_proxy::pb::messaging_service_client::MessagingServiceClient;
use rocketraft_remoting::api::{MqClientApi, SendRequest};
use rocketraft_remoting::api_produce::TopicProducer;
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{ClientConfig, RemotingClient};
use serde_json::Value;
use tonic::transport::Channel;

use crate::support::{free_port, resource, spawn_ready};
use crate::{create_topic, grpc_send, pull_all, UpCluster};

const TOPIC: &str = "MultiSet";
const FIFO_TOPIC: &str = "MultiSetFifo";
const GROUP: &str = "multi-set";

/// The master row of broker set `set`, if the NameServer shows one.
fn master_row(cluster: &UpCluster, set: &str) -> Option<Value> {
    cluster
        .status()
        .into_iter()
        .find(|r| r["broker_name"] == set && r["role"] == "master")
}

fn remoting_request(topic: &str, body: &str, group: Option<&str>) -> SendRequest {
    let mut request = SendRequest {
        producer_group: "multi-set-producer".to_string(),
        topic: topic.to_string(),
        queue_id: 0,
        body: Bytes::from(body.to_string()),
        ..SendRequest::default()
    };
    if let Some(g) = group {
        request
            .properties
            .insert(property::SHARDING_KEY.to_string(), g.to_string());
    }
    request
}

/// One message over Remoting; the broker set it was stored on when acknowledged.
async fn remoting_send(
    producer: &TopicProducer,
    topic: &str,
    body: &str,
    group: Option<&str>,
) -> Option<(String, i32)> {
    match producer
        .send(&remoting_request(topic, body, group), group)
        .await
    {
        Ok((set, queue, r)) if r.code == response_code::SUCCESS => Some((set, queue)),
        _ => None,
    }
}

/// One POP through the proxy on broker set `set`, acked: the bodies received.
async fn pop(client: &mut MessagingServiceClient<Channel>, set: &str) -> Vec<String> {
    let mut req = tonic::Request::new(pb::ReceiveMessageRequest {
        group: resource(GROUP),
        message_queue: Some(pb::MessageQueue {
            topic: resource(TOPIC),
            id: 0,
            broker: Some(pb::Broker {
                name: set.to_string(),
                id: 0,
                endpoints: None,
            }),
            ..pb::MessageQueue::default()
        }),
        filter_expression: None,
        batch_size: 32,
        // Short: a message popped by a receive whose answer is lost (the proxy's call to a
        // master being killed) comes back soon.
        invisible_duration: Some(prost_types::Duration {
            seconds: 10,
            nanos: 0,
        }),
        auto_renew: false,
        long_polling_timeout: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
        attempt_id: None,
    });
    req.set_timeout(Duration::from_secs(8));
    let mut bodies = Vec::new();
    let r = match client.receive_message(req).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("receive on {set}: {}", e.message());
            return bodies;
        }
    };
    let mut stream = r.into_inner();
    let mut entries = Vec::new();
    while let Ok(Some(item)) = stream.message().await {
        if let Some(pb::receive_message_response::Content::Message(m)) = item.content {
            bodies.push(String::from_utf8_lossy(&m.body).to_string());
            let p = m.system_properties.unwrap_or_default();
            entries.push(pb::AckMessageEntry {
                message_id: p.message_id,
                receipt_handle: p.receipt_handle.unwrap_or_default(),
                lite_topic: None,
            });
        }
    }
    if !entries.is_empty() {
        let _ = client
            .ack_message(pb::AckMessageRequest {
                group: resource(GROUP),
                topic: resource(TOPIC),
                entries,
            })
            .await;
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_broker_sets_share_topics_and_survive_a_failover_in_one() {
    let _turn = crate::support::file_turn(module_path!());
    let started = Instant::now();
    let cluster = UpCluster::default();
    let out = cluster.up_quick(&["--sets", "2", "--replicas", "2", "--controllers", "1"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("broker sets broker-a with 2 replicas, broker-b with 2 replicas"),
        "{said}"
    );
    // Status shows both sets, each with a master and a slave.
    let rows = cluster.status();
    for set in ["broker-a", "broker-b"] {
        let mut roles: Vec<String> = rows
            .iter()
            .filter(|r| r["broker_name"] == set)
            .map(|r| r["role"].as_str().unwrap_or_default().to_string())
            .collect();
        roles.sort();
        assert_eq!(roles, ["master", "slave"], "{set}: {rows:?}");
    }
    let namesrv = cluster.namesrv();

    // A topic on every master; the route lists both sets' queues.
    let created = create_topic(&namesrv, TOPIC, "2", &[]).await;
    assert_eq!(created.matches("created topic").count(), 2, "{created}");
    create_topic(&namesrv, FIFO_TOPIC, "2", &["--message-type", "FIFO"]).await;
    let api = MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(5),
    );
    let route = api.topic_route(&namesrv, TOPIC).await.expect("route");
    let sets: BTreeSet<&str> = route
        .queue_datas
        .iter()
        .map(|q| q.broker_name.as_str())
        .collect();
    assert_eq!(sets, BTreeSet::from(["broker-a", "broker-b"]));

    let proxy_addr = format!("127.0.0.1:{}", free_port());
    let _proxy = spawn_ready(&["proxy", "--listen", &proxy_addr, "--namesrv", &namesrv]);
    let mut client = MessagingServiceClient::connect(format!("http://{proxy_addr}"))
        .await
        .expect("connect");
    // QueryRoute answers every set's queues.
    let queues = client
        .query_route(pb::QueryRouteRequest {
            topic: resource(TOPIC),
            endpoints: None,
        })
        .await
        .expect("query route")
        .into_inner()
        .message_queues;
    let named: BTreeSet<String> = queues
        .iter()
        .filter_map(|q| q.broker.as_ref().map(|b| b.name.clone()))
        .collect();
    assert_eq!(named.len(), 2, "{queues:?}");
    assert_eq!(queues.len(), 4);

    let producer = TopicProducer::new(api.clone(), &namesrv);
    // acked body -> set it went to (Remoting) or "?" (gRPC: the consumers tell).
    let mut acked: BTreeSet<String> = BTreeSet::new();
    let mut remoting_sets: BTreeMap<String, usize> = BTreeMap::new();
    let mut n = 0;
    let before = Instant::now();
    while acked.len() < 40 {
        assert!(
            before.elapsed() < Duration::from_secs(30),
            "sends before the failover: {} acked",
            acked.len()
        );
        let body = format!("R-{n:04}");
        if let Some((set, _)) = remoting_send(&producer, TOPIC, &body, None).await {
            *remoting_sets.entry(set).or_default() += 1;
            acked.insert(body);
        }
        let body = format!("G-{n:04}");
        if grpc_send(&mut client, TOPIC, &format!("ID-{body}"), &body, None).await {
            acked.insert(body);
        }
        n += 1;
    }
    assert_eq!(remoting_sets.len(), 2, "Remoting sends: {remoting_sets:?}");

    // POP through the proxy, naming each set as a gRPC client does: both sets deliver, and
    // gRPC sends landed on both.
    let mut popped: BTreeMap<String, String> = BTreeMap::new();
    let pop_until = Instant::now() + Duration::from_secs(20);
    while !acked.iter().all(|b| popped.contains_key(b)) && Instant::now() < pop_until {
        for set in ["broker-a", "broker-b"] {
            for b in pop(&mut client, set).await {
                popped.insert(b, set.to_string());
            }
        }
    }
    let missing: Vec<&String> = acked.iter().filter(|b| !popped.contains_key(*b)).collect();
    assert!(
        missing.is_empty(),
        "not popped before the failover: {missing:?}"
    );
    let grpc_sets: BTreeSet<&String> = popped
        .iter()
        .filter(|(b, _)| b.starts_with("G-"))
        .map(|(_, s)| s)
        .collect();
    assert_eq!(grpc_sets.len(), 2, "gRPC sends landed on {grpc_sets:?}");

    // FIFO: one message group over both protocols stays on one queue of one set.
    for i in 0..10 {
        assert!(
            remoting_send(&producer, FIFO_TOPIC, &format!("F-R-{i}"), Some("order-7"))
                .await
                .is_some(),
            "FIFO send over Remoting"
        );
        assert!(
            grpc_send(
                &mut client,
                FIFO_TOPIC,
                &format!("ID-F-G-{i}"),
                &format!("F-G-{i}"),
                Some("order-7")
            )
            .await,
            "FIFO send through the proxy"
        );
    }
    let fifo = pull_all(&api, &namesrv, FIFO_TOPIC, "multi-set-verify").await;
    let places: BTreeSet<&(String, i32)> = fifo.values().collect();
    assert_eq!(fifo.len(), 20, "{fifo:?}");
    assert_eq!(places.len(), 1, "one message group on one queue: {fifo:?}");

    // kill -9 broker-a's master, once its slave is back in its SyncStateSet: a slave that fell
    // behind under the sends above (on a busy machine) is dropped from the set, and a set
    // whose only in-sync member dies has nobody to elect (no unclean election).
    let old = master_row(&cluster, "broker-a").expect("broker-a has a master");
    let pid = old["pid"].as_i64().expect("pid") as i32;
    let old_addr = format!(
        "127.0.0.1:{}",
        old["ports"]["remoting"].as_u64().expect("remoting port")
    );
    let in_sync_deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let members = crate::procs::status(&old_addr)
            .await
            .and_then(|s| s["syncStateSet"].as_array().map(Vec::len));
        if members == Some(2) {
            break;
        }
        assert!(
            Instant::now() < in_sync_deadline,
            "broker-a's slave never back in sync: {members:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // SAFETY: kill(2) on a PID this test's cluster started (read from its status).
    let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill -9 broker-a's master");
    let killed = Instant::now();
    // During the failover sends keep succeeding (on broker-b).
    let mut during = 0;
    let mut tried = 0;
    let mut after_sets: BTreeMap<String, usize> = BTreeMap::new();
    while killed.elapsed() < Duration::from_secs(3) || tried < 20 {
        let body = format!("R-{n:04}");
        tried += 1;
        if let Some((set, _)) = remoting_send(&producer, TOPIC, &body, None).await {
            *after_sets.entry(set).or_default() += 1;
            acked.insert(body);
            during += 1;
        }
        let body = format!("G-{n:04}");
        tried += 1;
        if grpc_send(&mut client, TOPIC, &format!("ID-{body}"), &body, None).await {
            acked.insert(body);
            during += 1;
        }
        n += 1;
        // Paced: a few hundred messages show the failover as well as thousands would.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        during * 10 >= tried * 9,
        "only {during} of {tried} sends acknowledged right after the kill"
    );
    eprintln!(
        "right after the kill: {during}/{tried} sends acknowledged, Remoting on {after_sets:?}"
    );

    // broker-a's slave becomes master; then sends reach both sets again.
    let elect_deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if master_row(&cluster, "broker-a")
            .is_some_and(|m| m["pid"].as_i64() != Some(i64::from(pid)))
        {
            break;
        }
        assert!(
            Instant::now() < elect_deadline,
            "no new master in broker-a: {:?}",
            cluster.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "broker-a has a new master {:?} after the kill",
        killed.elapsed()
    );
    let mut both: BTreeMap<String, usize> = BTreeMap::new();
    let again = Instant::now();
    while both.len() < 2 || both.values().sum::<usize>() < 20 {
        assert!(
            again.elapsed() < Duration::from_secs(30),
            "after the failover, Remoting sends reached only {both:?}"
        );
        let body = format!("R-{n:04}");
        if let Some((set, _)) = remoting_send(&producer, TOPIC, &body, None).await {
            *both.entry(set).or_default() += 1;
            acked.insert(body);
        }
        let body = format!("G-{n:04}");
        if grpc_send(&mut client, TOPIC, &format!("ID-{body}"), &body, None).await {
            acked.insert(body);
        }
        n += 1;
    }
    // Nothing acknowledged is lost: a Remoting pull of both sets' current masters finds every
    // message, and POP through the proxy delivers every message not popped before.
    let pulled = pull_all(&api, &namesrv, TOPIC, "multi-set-verify").await;
    let lost: Vec<&String> = acked.iter().filter(|b| !pulled.contains_key(*b)).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    // POP until every message came, as long as messages keep coming: a receive gives at most
    // 32, and an empty set long-polls a second, so a backlog of a thousand takes a while on a
    // loaded machine. Anything popped by a receive whose answer was lost during the failover
    // comes back after its invisible time (10 s): give up only after 25 s without a new one.
    let mut last_new = Instant::now();
    let drain_started = Instant::now();
    while !acked.iter().all(|b| popped.contains_key(b))
        && last_new.elapsed() < Duration::from_secs(25)
        && drain_started.elapsed() < Duration::from_secs(240)
    {
        for set in ["broker-a", "broker-b"] {
            for b in pop(&mut client, set).await {
                if popped.insert(b, set.to_string()).is_none() {
                    last_new = Instant::now();
                }
            }
        }
    }
    let missing: Vec<&String> = acked.iter().filter(|b| !popped.contains_key(*b)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but never popped: {missing:?}"
    );
    eprintln!(
        "{} messages acknowledged and received; test took {:?}",
        acked.len(),
        started.elapsed()
    );
}
