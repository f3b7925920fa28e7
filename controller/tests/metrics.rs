//! The controller's `/metrics` series, scraped from three real controllers (a Raft quorum,
//! in-process on loopback ports) while brokers, played by a Remoting client, register,
//! heartbeat, get a master elected and stop heartbeating.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocketraft_common::metrics::text::sample;
use rocketraft_common::metrics::{encode, Registry, RpcMetrics};
use rocketraft_controller::client::ControllerClient;
use rocketraft_controller::heartbeat::Heartbeat;
use rocketraft_controller::{BrokerLiveInfo, Controller, ControllerConfig};
use rocketraft_remoting::{ClientConfig, RemotingClient};

const CLUSTER: &str = "DefaultCluster";
const SET: &str = "broker-a";

fn free_port() -> u16 {
    rocketraft_common::net::free_loopback_port().expect("a free loopback port")
}

fn client() -> ControllerClient {
    ControllerClient::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(10),
    )
}

struct Node {
    controller: Arc<Controller>,
    registry: Registry,
}

impl Node {
    fn scrape(&self) -> String {
        encode(&self.registry).expect("the registry encodes")
    }
}

/// Three controllers serving Remoting, each recording its requests in its own
/// `rocketmq_rpc_latency` family, each with a registry holding its collector.
async fn controllers(dir: &std::path::Path) -> Vec<Node> {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let members: BTreeMap<u64, String> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| (i as u64 + 1, format!("127.0.0.1:{p}")))
        .collect();
    let mut out = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let rpc = RpcMetrics::standalone(Vec::new());
        let mut c = ControllerConfig::default().with_rpc_metrics(Some(rpc.clone()));
        c.raft.node_id = i as u64 + 1;
        c.raft.listen = format!("127.0.0.1:{port}").parse().expect("addr");
        c.raft.data_dir = dir.join(format!("c{}", i + 1));
        c.raft.initial_members = members.clone();
        c.listen = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let controller = Controller::start(c).await.expect("controller starts");
        controller
            .serve_remoting()
            .await
            .expect("controller serves");
        let mut registry = Registry::default();
        registry.register_collector(controller.metrics_collector());
        registry.register_collector(Box::new(rpc));
        out.push(Node {
            controller,
            registry,
        });
    }
    out
}

/// Every sample of metric `name` (any labels): (labels, value).
fn samples<'a>(text: &'a str, name: &str) -> Vec<(&'a str, f64)> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => {
                    let end = r.find("} ")?;
                    (&r[..end], &r[end + 2..])
                }
                None => ("", rest.strip_prefix(' ')?),
            };
            Some((labels, value.trim().parse().ok()?))
        })
        .collect()
}

async fn eventually<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn broker_addr(id: i64) -> String {
    // Nobody listens there: role-change notifications simply fail.
    format!("127.0.0.1:{}", 32000 + id)
}

fn heartbeat(id: i64) -> Heartbeat {
    Heartbeat {
        cluster: CLUSTER.into(),
        broker_name: SET.into(),
        broker_id: id,
        broker_addr: broker_addr(id),
        timeout_ms: 1000,
        info: BrokerLiveInfo::new(1, 100, 0),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quorum_reports_one_leader_its_term_the_election_and_a_dead_broker() {
    let dir = rocketraft_common::testing::ScratchDir::new("controller-metrics").expect("scratch");
    let nodes = controllers(dir.path()).await;
    let leader = eventually("one controller leader", Duration::from_secs(15), || {
        nodes.iter().position(|n| n.controller.raft().is_leader())
    })
    .await;
    let addrs: Vec<String> = nodes.iter().map(|n| n.controller.remoting_addr()).collect();
    let c = client();

    // Brokers 1 and 2 heartbeat every controller, register, and 1 is elected master.
    let beating = Arc::new(parking_lot::Mutex::new(vec![1i64, 2]));
    let beats = {
        let beating = beating.clone();
        let addrs = addrs.clone();
        tokio::spawn(async move {
            let c = client();
            loop {
                let ids = beating.lock().clone();
                for id in ids {
                    for addr in &addrs {
                        let _ = c.heartbeat(addr, &heartbeat(id)).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    for id in [1i64, 2] {
        c.apply_broker_id(
            &addrs[leader],
            CLUSTER,
            SET,
            id,
            &format!("{};{id}", broker_addr(id)),
        )
        .await
        .expect("apply id");
        c.register_broker(&addrs[leader], CLUSTER, SET, id, &broker_addr(id))
            .await
            .expect("register");
    }
    let r = c
        .elect_master(&addrs[leader], CLUSTER, SET, Some(1), false)
        .await
        .expect("election");
    assert_eq!((r.master_broker_id, r.master_epoch), (Some(1), 1));

    // Every node: one leader among them, a term, the set as applied, its Raft indexes.
    let texts: Vec<String> = eventually(
        "every controller to apply the election",
        Duration::from_secs(10),
        || {
            let texts: Vec<String> = nodes.iter().map(Node::scrape).collect();
            texts
                .iter()
                .all(|t| {
                    sample(
                        t,
                        "rocketraft_broker_set_master_id{broker_set=\"broker-a\"}",
                    ) == Some(1.0)
                })
                .then_some(texts)
        },
    )
    .await;
    let leaders: Vec<usize> = texts
        .iter()
        .enumerate()
        .filter(|(_, t)| sample(t, "rocketraft_raft_is_leader") == Some(1.0))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(leaders, vec![leader], "{texts:#?}");
    let leader_id = nodes[leader].controller.raft().id() as f64;
    for (i, t) in texts.iter().enumerate() {
        let term = sample(t, "rocketraft_raft_term").expect("a term");
        assert!(term > 0.0, "{t}");
        assert_eq!(
            sample(t, "rocketraft_raft_leader_id"),
            Some(leader_id),
            "{t}"
        );
        if i != leader {
            assert_eq!(sample(t, "rocketraft_raft_is_leader"), Some(0.0), "{t}");
        }
        let commit = sample(t, "rocketraft_raft_commit_index").expect("commit index");
        let applied = sample(t, "rocketraft_raft_applied_index").expect("applied index");
        // Five entries at least: the membership, two ids applied, two registrations, the
        // election.
        assert!(applied >= 5.0 && commit >= applied, "{t}");
        assert_eq!(
            sample(
                t,
                "rocketraft_broker_set_master_epoch{broker_set=\"broker-a\"}"
            ),
            Some(1.0),
            "{t}"
        );
        assert_eq!(
            sample(
                t,
                "rocketraft_broker_set_sync_state_set_size{broker_set=\"broker-a\"}"
            ),
            Some(1.0),
            "{t}"
        );
        let role = if i == leader { 3.0 } else { 2.0 };
        let roles = samples(t, "role");
        assert_eq!(roles.len(), 1, "{t}");
        assert_eq!(roles[0].1, role, "{t}");
        assert!(roles[0].0.contains("peer_id=\""), "{t}");
    }

    // The leader served the election and the requests.
    let t = &texts[leader];
    assert_eq!(
        sample(
            t,
            "rocketraft_controller_elections_total{broker_set=\"broker-a\",result=\"elected\"}"
        ),
        Some(1.0),
        "{t}"
    );
    let elections = samples(t, "election_total");
    assert_eq!(elections.len(), 1, "{t}");
    assert!(
        elections[0]
            .0
            .ends_with("broker_set=\"broker-a\",election_result=\"new_master_elected\""),
        "{t}"
    );
    assert_eq!(elections[0].1, 1.0, "{t}");
    let registered: f64 = samples(t, "request_total")
        .iter()
        .filter(|(l, _)| {
            l.contains("request_type=\"CONTROLLER_REGISTER_BROKER\"")
                && l.contains("request_handle_status=\"success\"")
        })
        .map(|(_, v)| v)
        .sum();
    assert_eq!(registered, 2.0, "{t}");
    let elect_latency: f64 = samples(t, "request_latency_count")
        .iter()
        .filter(|(l, _)| l.contains("request_type=\"CONTROLLER_ELECT_MASTER\""))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(elect_latency, 1.0, "{t}");
    let heartbeats: f64 = samples(t, "active_broker_num")
        .iter()
        .filter(|(l, _)| l.contains("broker_set=\"broker-a\""))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(heartbeats, 2.0, "{t}");
    // The Remoting server recorded the election's request code in rocketmq_rpc_latency.
    let rpc: f64 = samples(t, "rocketmq_rpc_latency_count")
        .iter()
        .filter(|(l, _)| {
            l.contains("protocol_type=\"remoting\"") && l.contains("request_code=\"1002\"")
        })
        .map(|(_, v)| v)
        .sum();
    assert_eq!(rpc, 1.0, "{t}");
    let timeouts_before =
        sample(t, "rocketraft_controller_heartbeat_timeouts_total").expect("the counter");

    // The master of record renews its lease on the leader; broker 2, a slave, does not.
    eventually(
        "the leader to answer both brokers' lease renewals",
        Duration::from_secs(10),
        || {
            let t = nodes[leader].scrape();
            let confirmed = sample(
                &t,
                "rocketraft_controller_lease_answers_total{result=\"confirmed\"}",
            )?;
            let refused = sample(
                &t,
                "rocketraft_controller_lease_answers_total{result=\"not_master\"}",
            )?;
            (confirmed > 0.0 && refused > 0.0).then_some(())
        },
    )
    .await;

    // Broker 2 stops heartbeating: the leader declares it dead once its 1 s timeout passes.
    beating.lock().retain(|id| *id == 1);
    eventually(
        "the leader to time broker 2 out",
        Duration::from_secs(10),
        || {
            let t = nodes[leader].scrape();
            let timeouts = sample(&t, "rocketraft_controller_heartbeat_timeouts_total")?;
            let alive: f64 = samples(&t, "active_broker_num")
                .iter()
                .map(|(_, v)| v)
                .sum();
            (timeouts > timeouts_before && alive == 1.0).then_some(())
        },
    )
    .await;

    beats.abort();
    for n in &nodes {
        n.controller.shutdown().await;
    }
}
