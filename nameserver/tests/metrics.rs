//! The NameServer's `/metrics` series, scraped from a real NameServer on a loopback port while
//! brokers (a Remoting client sending REGISTER_BROKER) register and then stop; and a NameServer
//! that embeds a controller, whose series come with its own.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rocketraft_common::metrics::text::{sample, sum};
use rocketraft_common::metrics::{encode, Registry, RpcMetrics};
use rocketraft_common::protocol::{RegisterBrokerBody, TopicConfigSerializeWrapper};
use rocketraft_common::TopicConfig;
use rocketraft_controller::ControllerConfig;
use rocketraft_nameserver::{NameServer, NamesrvConfig};
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::{ClientConfig, RemotingClient, RemotingCommand};

const T: Duration = Duration::from_secs(5);

fn registry_of(namesrv: &NameServer, rpc: &RpcMetrics) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(namesrv.metrics_collector());
    registry.register_collector(Box::new(rpc.clone()));
    registry
}

fn register(name: &str, addr: &str, topics: &[&str]) -> RemotingCommand {
    let mut wrapper = TopicConfigSerializeWrapper::default();
    for t in topics {
        wrapper
            .topic_config_table
            .insert(t.to_string(), TopicConfig::new(*t, 4));
    }
    wrapper.data_version.counter = 1;
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
        .with_ext("brokerId", 0)
        .with_ext("compressed", "false")
        .with_body(body)
}

#[tokio::test]
async fn registered_brokers_routes_and_expiries_show_in_a_scrape() {
    let rpc = RpcMetrics::standalone(Vec::new());
    let namesrv = NameServer::start(NamesrvConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        broker_expire_ms: 1_500,
        scan_interval_ms: 100,
        ..NamesrvConfig::default().with_rpc_metrics(Some(rpc.clone()))
    })
    .await
    .expect("start");
    let registry = registry_of(&namesrv, &rpc);
    let addr = namesrv.local_addr().to_string();
    let client = RemotingClient::new(ClientConfig::default());

    let text = encode(&registry).expect("encodes");
    assert_eq!(
        sample(&text, "rocketraft_namesrv_brokers"),
        Some(0.0),
        "{text}"
    );

    for (name, broker, topics) in [
        ("b1", "10.0.0.1:10911", &["T1", "T2"][..]),
        ("b2", "10.0.0.2:10911", &["T2"][..]),
    ] {
        let r = client
            .invoke(&addr, register(name, broker, topics), T)
            .await
            .expect("register");
        assert_eq!(r.code, response_code::SUCCESS);
    }
    for topic in ["T1", "Missing"] {
        client
            .invoke(
                &addr,
                RemotingCommand::request(request_code::GET_ROUTEINFO_BY_TOPIC)
                    .with_ext("topic", topic),
                T,
            )
            .await
            .expect("route");
    }

    let text = encode(&registry).expect("encodes");
    assert_eq!(
        sample(&text, "rocketraft_namesrv_brokers"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "rocketraft_namesrv_broker_sets"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "rocketraft_namesrv_topics"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "rocketraft_namesrv_route_queries_total{result=\"found\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "rocketraft_namesrv_route_queries_total{result=\"not_found\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "rocketraft_namesrv_brokers_expired_total"),
        Some(0.0),
        "{text}"
    );
    // REGISTER_BROKER (103) twice, answered SUCCESS; the route queries (105), one refused
    // with TOPIC_NOT_EXIST (17).
    let registered = [
        "protocol_type=\"remoting\"",
        "request_code=\"103\"",
        "response_code=\"0\"",
        "result=\"success\"",
    ];
    assert_eq!(
        sum(&text, "rocketmq_rpc_latency_count", &registered),
        2.0,
        "{text}"
    );
    assert_eq!(
        sum(
            &text,
            "rocketmq_rpc_latency_count",
            &["request_code=\"105\"", "response_code=\"17\""]
        ),
        1.0,
        "{text}"
    );
    assert!(!text.contains("rocketraft_raft_term"), "{text}");

    // Nobody re-registers: both brokers expire.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = encode(&registry).expect("encodes");
        if sample(&text, "rocketraft_namesrv_brokers_expired_total") == Some(2.0) {
            assert_eq!(
                sample(&text, "rocketraft_namesrv_brokers"),
                Some(0.0),
                "{text}"
            );
            assert_eq!(
                sample(&text, "rocketraft_namesrv_topics"),
                Some(0.0),
                "{text}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no expiry: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    namesrv.shutdown().await;
}

fn free_port() -> u16 {
    rocketraft_common::net::free_loopback_port().expect("a free loopback port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_controller_adds_its_series() {
    let dir = rocketraft_common::testing::ScratchDir::new("namesrv-metrics").expect("scratch");
    let raft_port = free_port();
    let mut controller = ControllerConfig::default();
    controller.raft.node_id = 1;
    controller.raft.listen = format!("127.0.0.1:{raft_port}").parse().expect("addr");
    controller.raft.data_dir = dir.path().join("controller");
    controller.raft.initial_members = BTreeMap::from([(1, format!("127.0.0.1:{raft_port}"))]);
    let rpc = RpcMetrics::standalone(Vec::new());
    let namesrv = NameServer::start(
        NamesrvConfig::default()
            .with_listen("127.0.0.1:0".parse().expect("addr"))
            .with_embedded_controller(controller)
            .with_rpc_metrics(Some(rpc.clone())),
    )
    .await
    .expect("namesrv with controller");
    let registry = registry_of(&namesrv, &rpc);
    let addr = namesrv.local_addr().to_string();
    let client = RemotingClient::new(ClientConfig::default());

    // A controller request on the NameServer's port: GET_NEXT_BROKER_ID (1012), once the
    // one-node quorum elected itself.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = client
            .invoke(
                &addr,
                RemotingCommand::request(request_code::CONTROLLER_GET_NEXT_BROKER_ID)
                    .with_ext("clusterName", "C")
                    .with_ext("brokerName", "b1"),
                T,
            )
            .await
            .expect("next broker id");
        if r.code == response_code::SUCCESS {
            break;
        }
        assert!(Instant::now() < deadline, "no answer: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let text = encode(&registry).expect("encodes");
    assert_eq!(
        sample(&text, "rocketraft_namesrv_brokers"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "rocketraft_raft_is_leader"),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(&text, "rocketraft_raft_term").is_some_and(|t| t >= 1.0),
        "{text}"
    );
    assert!(
        sum(
            &text,
            "request_total",
            &[
                "request_type=\"CONTROLLER_GET_NEXT_BROKER_ID\"",
                "request_handle_status=\"success\""
            ]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        sum(
            &text,
            "rocketmq_rpc_latency_count",
            &["request_code=\"1012\"", "response_code=\"0\""]
        ) >= 1.0,
        "{text}"
    );
    namesrv.shutdown().await;
}
