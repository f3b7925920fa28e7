//! The controller inside `rocketraft dev` and inside `rocketraft namesrv` configured with
//! RocketMQ's `enableControllerInNamesrv`, driven through the admin CLI and the protocol.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use rocketraft_controller::client::ControllerClient;
use rocketraft_controller::heartbeat::Heartbeat;
use rocketraft_controller::BrokerLiveInfo;
use rocketraft_remoting::{ClientConfig, RemotingClient};

use crate::support::{admin, admin_output, free_port, Dev};

async fn register_and_elect(addr: &str, set: &str) {
    let c = ControllerClient::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(10),
    );
    // The embedded controller elects itself leader shortly after start.
    let mut ready = false;
    for _ in 0..100 {
        if c.metadata(addr).await.map(|m| m.is_leader).unwrap_or(false) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the embedded controller leads");
    let broker = "127.0.0.1:30911";
    let id = c
        .get_next_broker_id(addr, "DefaultCluster", set)
        .await
        .expect("next id");
    c.apply_broker_id(addr, "DefaultCluster", set, id, &format!("{broker};1"))
        .await
        .expect("apply");
    c.heartbeat(
        addr,
        &Heartbeat {
            cluster: "DefaultCluster".into(),
            broker_name: set.into(),
            broker_id: id,
            broker_addr: broker.into(),
            timeout_ms: 60_000,
            info: BrokerLiveInfo::new(0, 0, 0),
        },
    )
    .await
    .expect("heartbeat");
    c.register_broker(addr, "DefaultCluster", set, id, broker)
        .await
        .expect("register");
    let elected = c
        .elect_master(addr, "DefaultCluster", set, Some(id), false)
        .await
        .expect("elect");
    assert_eq!(elected.master_broker_id, Some(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_embeds_a_one_node_controller() {
    let _turn = crate::support::file_turn(module_path!());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut dev = Dev::start(dir.path(), free_port(), free_port(), &[]);
    let status = admin(&dev.namesrv, &["controller", "status"]);
    assert!(status.contains("voter:"), "{status}");
    register_and_elect(&dev.namesrv, "dev-set").await;
    let replicas = admin(
        &dev.namesrv,
        &["controller", "replicas", "--broker", "dev-set"],
    );
    assert!(replicas.contains("master epoch:      1"), "{replicas}");
    assert!(replicas.contains("127.0.0.1:30911 alive"), "{replicas}");
    let unknown = admin_output(
        &dev.namesrv,
        &["controller", "replicas", "--broker", "nope"],
    );
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("knows no broker set"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    let _ = dev.child.kill();
    let _ = dev.child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namesrv_with_enable_controller_in_namesrv() {
    let _turn = crate::support::file_turn(module_path!());
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let raft_port = free_port();
    let config = dir.path().join("namesrv.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nenableControllerInNamesrv = true\n\n[controller]\nheartbeat_timeout_ms = 10000\n\n[controller.raft]\nnode_id = 1\nlisten = \"127.0.0.1:{raft_port}\"\ndata_dir = \"{}\"\ninitial_members = {{ 1 = \"127.0.0.1:{raft_port}\" }}\nelection_timeout_min_ms = 400\nelection_timeout_max_ms = 800\nheartbeat_interval_ms = 100\n",
            dir.path().join("controller").display()
        ),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rocketraft"))
        .args(["namesrv", "--config"])
        .arg(&config)
        .args(["--threads", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn namesrv");
    let namesrv = format!("127.0.0.1:{port}");
    let stdout = child.stdout.take().expect("stdout");
    let line = BufReader::new(stdout)
        .lines()
        .next()
        .expect("line")
        .expect("stdout");
    assert!(line.contains("is ready"), "{line}");
    register_and_elect(&namesrv, "ns-set").await;
    let replicas = admin(&namesrv, &["controller", "replicas", "--broker", "ns-set"]);
    assert!(replicas.contains("master epoch:      1"), "{replicas}");
    // Still a NameServer.
    let clusters = admin(&namesrv, &["cluster", "list"]);
    assert!(clusters.contains("cluster"), "{clusters}");
    // An unknown key is refused with its name.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "enableControllerInNamesrv = true\n[controller]\nno_such_key = 1\n",
    )
    .expect("bad");
    let out = Command::new(env!("CARGO_BIN_EXE_rocketraft"))
        .args(["namesrv", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_key"));
    let _ = child.kill();
    let _ = child.wait();
}
