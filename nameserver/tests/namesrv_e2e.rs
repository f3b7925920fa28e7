//! The NameServer as a real server on a loopback port, spoken to with Remoting frames as a Java
//! broker and client would send them.

use std::time::{Duration, Instant};

use rocketraft_common::protocol::{
    from_json_body, ClusterInfo, RegisterBrokerBody, TopicConfigSerializeWrapper, TopicRouteData,
};
use rocketraft_common::TopicConfig;
use rocketraft_nameserver::{NameServer, NamesrvConfig};
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::{ClientConfig, RemotingClient, RemotingCommand};

async fn start(expire_ms: i64) -> (NameServer, String, RemotingClient) {
    let namesrv = NameServer::start(NamesrvConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        broker_expire_ms: expire_ms,
        scan_interval_ms: 100,
        ..NamesrvConfig::default()
    })
    .await
    .expect("start");
    let addr = namesrv.local_addr().to_string();
    (namesrv, addr, RemotingClient::new(ClientConfig::default()))
}

fn register(name: &str, id: i64, addr: &str, topics: &[&str], counter: i64) -> RemotingCommand {
    let mut wrapper = TopicConfigSerializeWrapper::default();
    for t in topics {
        wrapper
            .topic_config_table
            .insert(t.to_string(), TopicConfig::new(*t, 4));
    }
    wrapper.data_version.counter = counter;
    let body = serde_json::to_vec(&RegisterBrokerBody {
        topic_config_serialize_wrapper: wrapper,
        filter_server_list: vec![],
    })
    .expect("json");
    RemotingCommand::request(request_code::REGISTER_BROKER)
        .with_ext("brokerName", name)
        .with_ext("brokerAddr", addr)
        .with_ext("clusterName", "C")
        .with_ext("haServerAddr", format!("{addr}-ha"))
        .with_ext("brokerId", id)
        .with_ext("compressed", "false")
        .with_body(body)
}

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn register_route_cluster_and_unregister() {
    let (namesrv, addr, client) = start(120_000).await;
    let r = client
        .invoke(&addr, register("b1", 0, "10.0.0.1:10911", &["T1"], 1), T)
        .await
        .expect("register");
    assert_eq!(r.code, response_code::SUCCESS);
    let r = client
        .invoke(&addr, register("b1", 1, "10.0.0.2:10911", &["T1"], 1), T)
        .await
        .expect("register slave");
    assert_eq!(r.ext("masterAddr"), Some("10.0.0.1:10911"));
    assert_eq!(r.ext("haServerAddr"), Some("10.0.0.1:10911-ha"));
    assert_eq!(namesrv.live_brokers(), 2);

    // A new client asks for standard JSON (its version is >= V4_9_4).
    let r = client
        .invoke(
            &addr,
            RemotingCommand::request(request_code::GET_ROUTEINFO_BY_TOPIC).with_ext("topic", "T1"),
            T,
        )
        .await
        .expect("route");
    assert_eq!(r.code, response_code::SUCCESS);
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert!(
        text.contains(r#""brokerAddrs":{"0":"10.0.0.1:10911","1":"10.0.0.2:10911"}"#),
        "{text}"
    );
    let route: TopicRouteData = serde_json::from_slice(&r.body).expect("standard json");
    assert_eq!(route.queue_datas[0].read_queue_nums, 4);

    // An old client (version below 401) gets fastjson's bare numeric keys, as Java writes them.
    let mut old =
        RemotingCommand::request(request_code::GET_ROUTEINFO_BY_TOPIC).with_ext("topic", "T1");
    old.version = 317;
    let r = client.invoke(&addr, old, T).await.expect("route");
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert!(
        text.contains(r#""brokerAddrs":{0:"10.0.0.1:10911",1:"10.0.0.2:10911"}"#),
        "{text}"
    );
    let route: TopicRouteData = from_json_body(&r.body).expect("fastjson parses");
    assert_eq!(route.broker_datas[0].broker_addrs.len(), 2);

    // Unknown topic.
    let r = client
        .invoke(
            &addr,
            RemotingCommand::request(request_code::GET_ROUTEINFO_BY_TOPIC)
                .with_ext("topic", "Nope"),
            T,
        )
        .await
        .expect("route");
    assert_eq!(r.code, response_code::TOPIC_NOT_EXIST);
    assert!(r.remark.unwrap_or_default().contains("Nope"));

    let r = client
        .invoke(
            &addr,
            RemotingCommand::request(request_code::GET_BROKER_CLUSTER_INFO),
            T,
        )
        .await
        .expect("cluster");
    let info: ClusterInfo = serde_json::from_slice(&r.body).expect("json");
    assert!(info.cluster_addr_table["C"].contains("b1"));

    // Missing header field: a clear error, nothing registered.
    let bad = RemotingCommand::request(request_code::REGISTER_BROKER).with_ext("brokerName", "x");
    let r = client.invoke(&addr, bad, T).await.expect("response");
    assert_eq!(r.code, response_code::SYSTEM_ERROR);
    assert!(r.remark.unwrap_or_default().contains("clusterName"));
    // A body that is not JSON.
    let bad = register("b9", 0, "10.0.0.9:1", &[], 1).with_body(&b"{not json"[..]);
    let r = client.invoke(&addr, bad, T).await.expect("response");
    assert_eq!(r.code, response_code::SYSTEM_ERROR);
    assert_eq!(namesrv.live_brokers(), 2);
    // Unknown request code.
    let r = client
        .invoke(&addr, RemotingCommand::request(4242), T)
        .await
        .expect("response");
    assert_eq!(r.code, response_code::REQUEST_CODE_NOT_SUPPORTED);

    // Unregistering both members removes the set and its topics.
    for (id, a) in [(0, "10.0.0.1:10911"), (1, "10.0.0.2:10911")] {
        let r = client
            .invoke(
                &addr,
                RemotingCommand::request(request_code::UNREGISTER_BROKER)
                    .with_ext("brokerName", "b1")
                    .with_ext("brokerAddr", a)
                    .with_ext("clusterName", "C")
                    .with_ext("brokerId", id),
                T,
            )
            .await
            .expect("unregister");
        assert_eq!(r.code, response_code::SUCCESS);
    }
    let r = client
        .invoke(
            &addr,
            RemotingCommand::request(request_code::GET_ROUTEINFO_BY_TOPIC).with_ext("topic", "T1"),
            T,
        )
        .await
        .expect("route");
    assert_eq!(r.code, response_code::TOPIC_NOT_EXIST);
    namesrv.shutdown().await;
}

#[tokio::test]
async fn silent_brokers_expire_and_registering_ones_stay() {
    let (namesrv, addr, client) = start(800).await;
    client
        .invoke(&addr, register("gone", 0, "10.0.0.1:1", &["A"], 1), T)
        .await
        .expect("register");
    client
        .invoke(&addr, register("alive", 0, "10.0.0.2:1", &["B"], 1), T)
        .await
        .expect("register");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Keep "alive" registering (same data version: a heartbeat-like refresh).
        client
            .invoke(&addr, register("alive", 0, "10.0.0.2:1", &["B"], 1), T)
            .await
            .expect("register");
        let a = client
            .invoke(
                &addr,
                RemotingCommand::request(request_code::GET_ROUTEINFO_BY_TOPIC)
                    .with_ext("topic", "A"),
                T,
            )
            .await
            .expect("route");
        if a.code == response_code::TOPIC_NOT_EXIST {
            break;
        }
        assert!(Instant::now() < deadline, "the silent broker never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = client
        .invoke(
            &addr,
            RemotingCommand::request(request_code::GET_ROUTEINFO_BY_TOPIC).with_ext("topic", "B"),
            T,
        )
        .await
        .expect("route");
    assert_eq!(b.code, response_code::SUCCESS);
    assert_eq!(namesrv.live_brokers(), 1);
    namesrv.shutdown().await;
}

#[tokio::test]
async fn kv_config_round_trip() {
    let (namesrv, addr, client) = start(120_000).await;
    let put = RemotingCommand::request(request_code::PUT_KV_CONFIG)
        .with_ext("namespace", "ORDER_TOPIC_CONFIG")
        .with_ext("key", "T1")
        .with_ext("value", "b1:4");
    assert_eq!(
        client.invoke(&addr, put, T).await.expect("put").code,
        response_code::SUCCESS
    );
    let get = RemotingCommand::request(request_code::GET_KV_CONFIG)
        .with_ext("namespace", "ORDER_TOPIC_CONFIG")
        .with_ext("key", "T1");
    let r = client.invoke(&addr, get.clone(), T).await.expect("get");
    assert_eq!(r.ext("value"), Some("b1:4"));
    client
        .invoke(&addr, register("b1", 0, "10.0.0.1:1", &["T1"], 1), T)
        .await
        .expect("register");
    let r = client
        .invoke(
            &addr,
            RemotingCommand::request(request_code::GET_ROUTEINFO_BY_TOPIC).with_ext("topic", "T1"),
            T,
        )
        .await
        .expect("route");
    let route: TopicRouteData = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(route.order_topic_conf.as_deref(), Some("b1:4"));
    let del = RemotingCommand::request(request_code::DELETE_KV_CONFIG)
        .with_ext("namespace", "ORDER_TOPIC_CONFIG")
        .with_ext("key", "T1");
    client.invoke(&addr, del, T).await.expect("delete");
    assert_eq!(
        client.invoke(&addr, get, T).await.expect("get").code,
        response_code::QUERY_NOT_FOUND
    );
    namesrv.shutdown().await;
}

/// With a cluster secret, only servers that prove it register or unregister brokers: a forged
/// registration (no proof, or a proof with another secret) is refused, leaves the routes as they
/// were, and honest brokers and plain clients are served as before.
#[tokio::test]
async fn forged_registrations_are_refused_with_a_cluster_secret() {
    use rocketraft_common::trust::ClusterSecret;
    use rocketraft_remoting::trust::HandshakeError;
    use rocketraft_remoting::RemotingError;

    let secret = ClusterSecret::new("the-cluster-secret-0001").expect("secret");
    let namesrv = NameServer::start(
        NamesrvConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            scan_interval_ms: 100,
            ..NamesrvConfig::default()
        }
        .with_cluster_secret(secret.clone()),
    )
    .await
    .expect("start");
    let addr = namesrv.local_addr().to_string();
    let with = |secret: Option<ClusterSecret>| {
        RemotingClient::new(ClientConfig {
            cluster_secret: secret,
            ..ClientConfig::default()
        })
    };
    let honest = with(Some(secret));
    let r = honest
        .invoke(&addr, register("b1", 0, "10.0.0.1:10911", &["T1"], 1), T)
        .await
        .expect("register");
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);

    // No proof: NO_PERMISSION with a remark that names the fix.
    let plain = with(None);
    let r = plain
        .invoke(
            &addr,
            register("b1", 0, "10.6.6.6:10911", &["T1", "EVIL"], 2),
            T,
        )
        .await
        .expect("answered");
    assert_eq!(r.code, response_code::NO_PERMISSION);
    assert!(r.remark.unwrap_or_default().contains("cluster_secret"));
    let r = plain
        .invoke(
            &addr,
            RemotingCommand::request(request_code::UNREGISTER_BROKER)
                .with_ext("brokerName", "b1")
                .with_ext("brokerAddr", "10.0.0.1:10911")
                .with_ext("clusterName", "C")
                .with_ext("brokerId", 0),
            T,
        )
        .await
        .expect("answered");
    assert_eq!(r.code, response_code::NO_PERMISSION);

    // Another secret: the client sees the server's proof fail and sends nothing else.
    let other = with(Some(
        ClusterSecret::new("another-secret-000002").expect("secret"),
    ));
    let e = other
        .invoke(&addr, register("b1", 0, "10.6.6.6:10911", &["EVIL"], 3), T)
        .await
        .expect_err("untrusted");
    assert!(
        matches!(
            e,
            RemotingError::Untrusted {
                why: HandshakeError::BadServerProof,
                ..
            }
        ),
        "{e}"
    );

    // Nothing changed: the honest master is still the route of T1, and EVIL does not exist.
    assert_eq!(namesrv.live_brokers(), 1);
    let route = |topic: &str| {
        plain.invoke(
            &addr,
            RemotingCommand::request(request_code::GET_ROUTEINFO_BY_TOPIC).with_ext("topic", topic),
            T,
        )
    };
    let r = route("T1").await.expect("route");
    assert_eq!(r.code, response_code::SUCCESS);
    let data: TopicRouteData = from_json_body(&r.body).expect("route json");
    assert_eq!(
        data.broker_datas[0]
            .broker_addrs
            .get(&0)
            .map(String::as_str),
        Some("10.0.0.1:10911")
    );
    assert_eq!(
        route("EVIL").await.expect("route").code,
        response_code::TOPIC_NOT_EXIST
    );
}
