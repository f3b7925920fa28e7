//! Several NameServers (issue 20 item 2): `rocketraft cluster up --namesrvs 2` starts `namesrv`
//! and `namesrv-2`; every broker registers with both, and cluster.json's `namesrv_addr` lists
//! both (`a;b`), which the admin CLI, [`TopicProducer`], [`MqClientApi`] and a `rocketraft
//! proxy` take as it is. The first NameServer is killed with SIGKILL: topics are created, routes
//! read and messages sent over Remoting and through the proxy, all through the second. The
//! first is then restarted empty (a NameServer keeps no routes on disk): within one
//! registration interval it lists the broker set whole and knows every topic, alone.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketraft_proxy::pb;
use rocketraft_proxy::pb::messaging_service_client::MessagingServiceClient;
use rocketraft_remoting::api::{namesrv_list, MqClientApi, SendRequest};
use rocketraft_remoting::api_produce::TopicProducer;
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{ClientConfig, RemotingClient};

use crate::support::{admin_output, free_port, resource, spawn_ready};
use crate::{create_topic, grpc_send, UpCluster};

/// How often the brokers re-register (`registerNameServerPeriod`), shortened for the test.
const REGISTER_INTERVAL: Duration = Duration::from_secs(3);

/// Sends `n` messages over Remoting through the NameServer list; all must be acknowledged.
async fn send_remoting(producer: &TopicProducer, topic: &str, tag: &str, n: usize) {
    for i in 0..n {
        let request = SendRequest {
            producer_group: "namesrvs-producer".to_string(),
            topic: topic.to_string(),
            body: Bytes::from(format!("{tag}-{i}")),
            ..SendRequest::default()
        };
        let (set, _, r) = producer
            .send(&request, None)
            .await
            .unwrap_or_else(|e| panic!("send {tag}-{i} to {topic}: {e}"));
        assert_eq!(r.code, response_code::SUCCESS, "{tag}-{i} on {set}");
    }
}

/// Whether the NameServer at `addr`, alone, lists broker-a with both replicas and a master, and
/// knows every topic of `topics`.
async fn complete(api: &MqClientApi, addr: &str, topics: &[&str]) -> bool {
    let Ok(info) = api.cluster_info(addr).await else {
        return false;
    };
    let Some(set) = info.broker_addr_table.get("broker-a") else {
        return false;
    };
    if set.broker_addrs.len() != 2 || set.master_addr().is_none() {
        return false;
    }
    for topic in topics {
        if api.topic_route(addr, topic).await.is_err() {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_namesrvs_serve_through_the_loss_and_the_empty_restart_of_one() {
    let _turn = crate::support::file_turn(module_path!());
    let cluster = UpCluster::default();
    let interval = format!("register_interval_ms = {}", REGISTER_INTERVAL.as_millis());
    cluster.up_quick(&[
        "--namesrvs",
        "2",
        "--replicas",
        "2",
        "--controllers",
        "1",
        "--extra-broker-config",
        &interval,
    ]);
    let namesrv = cluster.namesrv();
    let addrs: Vec<String> = namesrv_list(&namesrv)
        .into_iter()
        .map(str::to_string)
        .collect();
    assert_eq!(addrs.len(), 2, "{namesrv}");
    let rows = cluster.status();
    let serving: Vec<&str> = rows
        .iter()
        .filter(|r| r["kind"] == "namesrv" && r["role"] == "serving")
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(serving, ["namesrv", "namesrv-2"], "{rows:?}");

    // Each NameServer on its own knows the set and a topic created through the list.
    let api = MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(3),
    );
    create_topic(&namesrv, "Before", "2", &[]).await;
    for addr in &addrs {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !complete(&api, addr, &["Before"]).await {
            assert!(Instant::now() < deadline, "{addr} never complete");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let producer = TopicProducer::new(api.clone(), &namesrv);
    send_remoting(&producer, "Before", "before", 10).await;

    // A proxy given both NameServers.
    let proxy_addr = format!("127.0.0.1:{}", free_port());
    let _proxy = spawn_ready(&["proxy", "--listen", &proxy_addr, "--namesrv", &namesrv]);
    let mut client = MessagingServiceClient::connect(format!("http://{proxy_addr}"))
        .await
        .expect("connect");
    assert!(
        grpc_send(
            &mut client,
            "Before",
            "ID-Before",
            "through the proxy",
            None
        )
        .await,
        "send to Before through the proxy"
    );

    // kill -9 the first NameServer.
    let first = rows
        .iter()
        .find(|r| r["name"] == "namesrv")
        .expect("namesrv row");
    let pid = first["pid"].as_i64().expect("pid") as i32;
    // SAFETY: kill(2) on a PID this test's cluster started (read from its status).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill -9");
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.cluster_info(&addrs[0]).await.is_ok() {
        assert!(Instant::now() < deadline, "the killed NameServer answers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Everything goes on through the second: a new topic, routes, sends over both protocols.
    create_topic(&namesrv, "During", "2", &[]).await;
    let out = admin_output(&namesrv, &["topic", "route", "During"]);
    assert!(
        out.status.success(),
        "admin topic route through the list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh = TopicProducer::new(api.clone(), &namesrv);
    send_remoting(&fresh, "During", "during", 10).await;
    send_remoting(&producer, "Before", "before-during", 10).await;
    let queues = client
        .query_route(pb::QueryRouteRequest {
            topic: resource("During"),
            endpoints: None,
        })
        .await
        .expect("the proxy's route for a topic made after the kill")
        .into_inner()
        .message_queues;
    assert_eq!(queues.len(), 2, "{queues:?}");
    assert!(
        grpc_send(
            &mut client,
            "During",
            "ID-During",
            "through the proxy",
            None
        )
        .await,
        "send to During through the proxy"
    );

    // Restart the first one empty, on its port and config: within one registration interval it
    // knows the whole set and every topic on its own.
    let config = cluster.0.path().join("namesrv").join("namesrv.toml");
    let _restarted = spawn_ready(&["namesrv", "--config", config.to_str().expect("utf8")]);
    let restarted = Instant::now();
    while !complete(&api, &addrs[0], &["Before", "During"]).await {
        // One interval, and a little for a registration in flight and for the checks.
        assert!(
            restarted.elapsed() < REGISTER_INTERVAL + Duration::from_secs(3),
            "the restarted NameServer at {} is not complete after {:?}",
            addrs[0],
            restarted.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "the NameServer restarted empty was complete after {:?} (registration interval {REGISTER_INTERVAL:?})",
        restarted.elapsed()
    );
    // And it serves alone.
    let alone = TopicProducer::new(api.clone(), &addrs[0]);
    send_remoting(&alone, "During", "after", 10).await;
}
