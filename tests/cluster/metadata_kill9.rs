//! Issue 13, hole 5 with real processes: a `rocketraft namesrv` with the controller embedded and
//! three `rocketraft broker` processes of one set. Topic, subscription group and ACL changes
//! acknowledged by the master survive its kill -9, also while changes are in flight, and the
//! old master, restarted, converges on the same metadata.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rocketraft_common::acl::{AclInfo, PolicyEntryInfo, PolicyInfo, UserInfo};
use rocketraft_common::TopicConfig;
use rocketraft_remoting::api::MqClientApi;
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::{ClientConfig, RemotingClient, RemotingCommand};

use crate::support::free_port;
use crate::{kill, NameSrv};

struct BrokerProc {
    dir: PathBuf,
    port: u16,
    config: PathBuf,
    child: Option<Child>,
    runs: usize,
}

impl BrokerProc {
    fn new(root: &Path, i: usize, namesrv: &str) -> BrokerProc {
        let dir = root.join(format!("broker-{i}"));
        std::fs::create_dir_all(&dir).expect("dir");
        let port = free_port();
        let config = dir.join("broker.toml");
        std::fs::write(
            &config,
            format!(
                "broker_name = \"broker-a\"\nlisten = \"127.0.0.1:{port}\"\nha_port = 0\nnamesrv_addr = \"{namesrv}\"\nenable_controller_mode = true\ncontroller_addr = \"{namesrv}\"\ncontroller_heartbeat_interval_ms = 300\ncontroller_heartbeat_timeout_ms = 2000\nsync_controller_metadata_period_ms = 500\ncheck_sync_state_set_period_ms = 200\nmin_in_sync_replicas = 2\nslave_timeout_ms = 2000\n\n[store]\nstore_root = \"{}\"\ncommitlog_segment_size = 65536\npretouch = false\nmax_message_size = 16384\n",
                dir.join("store").display()
            ),
        )
        .expect("config");
        BrokerProc {
            dir,
            port,
            config,
            child: None,
            runs: 0,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn start(&mut self) {
        self.runs += 1;
        let log =
            std::fs::File::create(self.dir.join(format!("run-{}.log", self.runs))).expect("log");
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_rocketraft"))
                .args(["broker", "--config"])
                .arg(&self.config)
                .args(["--threads", "2"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn broker"),
        );
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&c, libc::SIGKILL);
            let _ = c.wait();
        }
    }
}

impl Drop for BrokerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn api() -> MqClientApi {
    MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(5),
    )
}

async fn invoke(addr: &str, request: RemotingCommand) -> Option<RemotingCommand> {
    RemotingClient::new(ClientConfig::default())
        .invoke(addr, request, Duration::from_secs(5))
        .await
        .ok()
}

async fn status(addr: &str) -> Option<serde_json::Value> {
    let r = invoke(
        addr,
        RemotingCommand::request(request_code::GET_BROKER_HA_STATUS),
    )
    .await?;
    (r.code == response_code::SUCCESS)
        .then(|| serde_json::from_slice(&r.body).ok())
        .flatten()
}

async fn find_master(brokers: &[BrokerProc], limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        for (i, b) in brokers.iter().enumerate() {
            if b.child.is_none() {
                continue;
            }
            if let Some(s) = status(&b.addr()).await {
                if s["role"] == "MASTER" && s["leaseValid"] == true {
                    return i;
                }
            }
        }
        assert!(Instant::now() < deadline, "no master within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn eventually(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn user(name: &str) -> UserInfo {
    UserInfo {
        username: name.into(),
        password: Some(format!("{name}-pw")),
        user_type: None,
        user_status: None,
    }
}

fn grant(subject: &str, resources: &[&str]) -> AclInfo {
    AclInfo {
        subject: subject.into(),
        policies: vec![PolicyInfo {
            policy_type: None,
            entries: resources
                .iter()
                .map(|r| PolicyEntryInfo {
                    resource: r.to_string(),
                    actions: vec!["Pub".into()],
                    source_ips: vec![],
                    decision: "Allow".into(),
                })
                .collect(),
        }],
    }
}

async fn has_topic(addr: &str, topic: &str) -> Option<bool> {
    let r = invoke(
        addr,
        RemotingCommand::request(request_code::GET_TOPIC_CONFIG).with_ext("topic", topic),
    )
    .await?;
    match r.code {
        response_code::SUCCESS => Some(true),
        response_code::TOPIC_NOT_EXIST => Some(false),
        _ => None,
    }
}

async fn has_group(addr: &str, group: &str) -> Option<bool> {
    let r = invoke(
        addr,
        RemotingCommand::request(request_code::GET_SUBSCRIPTIONGROUP_CONFIG)
            .with_ext("group", group),
    )
    .await?;
    match r.code {
        response_code::SUCCESS => Some(true),
        response_code::SUBSCRIPTION_GROUP_NOT_EXIST => Some(false),
        _ => None,
    }
}

/// What the master acknowledged before its kill -9 is what the next master (and the old one,
/// restarted) holds: the listed changes, and every topic of a stream of creations cut by the
/// kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_metadata_survives_kill9_of_the_master() {
    let _turn = crate::support::file_turn(module_path!());
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = NameSrv::start(&dir.path().join("namesrv"));
    let mut brokers: Vec<BrokerProc> = (0..3)
        .map(|i| BrokerProc::new(dir.path(), i, &ns.addr))
        .collect();
    for b in &mut brokers {
        b.start();
    }
    let m = find_master(&brokers, Duration::from_secs(30)).await;
    let master = brokers[m].addr();
    eventually("3 in sync", Duration::from_secs(30), async || {
        status(&master)
            .await
            .is_some_and(|s| s["syncStateSet"].as_array().is_some_and(|a| a.len() == 3))
    })
    .await;
    let api = api();
    api.create_user(&master, &user("alice"))
        .await
        .expect("alice");
    api.create_user(&master, &user("bob")).await.expect("bob");
    api.create_acl(&master, &grant("User:bob", &["Topic:Keep", "Topic:Revoke"]))
        .await
        .expect("grant");

    // A stream of topic creations; the master is killed in the middle of it.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stream = {
        let (acked, master, api) = (acked.clone(), master.clone(), api.clone());
        tokio::spawn(async move {
            for i in 0.. {
                let name = format!("Stream{i}");
                match api.create_topic(&master, &TopicConfig::new(&name, 2)).await {
                    Ok(()) => acked.lock().expect("lock").push(name),
                    Err(_) => return,
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.create_topic(&master, &TopicConfig::new("MetaTopic", 4))
        .await
        .expect("topic");
    let r = invoke(
        &master,
        RemotingCommand::request(request_code::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP).with_body(
            serde_json::to_vec(&serde_json::json!({"groupName": "MetaGroup"})).expect("json"),
        ),
    )
    .await
    .expect("group answer");
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    api.delete_user(&master, "alice")
        .await
        .expect("delete alice");
    api.delete_acl(&master, "User:bob", None, Some("Topic:Revoke"))
        .await
        .expect("revoke");
    brokers[m].kill9();
    let _ = stream.await;
    let acked = acked.lock().expect("lock").clone();
    eprintln!("{} stream topics acknowledged before the kill", acked.len());
    assert!(!acked.is_empty());

    let n = find_master(&brokers, Duration::from_secs(30)).await;
    let new_master = brokers[n].addr();
    let check = async |addr: &str| -> Result<(), String> {
        for topic in acked.iter().map(String::as_str).chain(["MetaTopic"]) {
            if has_topic(addr, topic).await != Some(true) {
                return Err(format!("topic {topic} missing"));
            }
        }
        if has_group(addr, "MetaGroup").await != Some(true) {
            return Err("group MetaGroup missing".into());
        }
        let reader = self::api();
        match reader.get_user(addr, "alice").await {
            Ok(None) => {}
            other => return Err(format!("deleted user alice: {other:?}")),
        }
        match reader.get_acl(addr, "User:bob").await {
            Ok(Some(acl)) => {
                let resources: Vec<&str> = acl
                    .policies
                    .iter()
                    .flat_map(|p| p.entries.iter().map(|e| e.resource.as_str()))
                    .collect();
                if resources != ["Topic:Keep"] {
                    return Err(format!("bob's rules {resources:?}"));
                }
            }
            other => return Err(format!("bob's ACL: {other:?}")),
        }
        Ok(())
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match check(&new_master).await {
            Ok(()) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "the new master lost acknowledged metadata: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The old master restarts as a slave and converges on the same metadata.
    brokers[m].start();
    let old = brokers[m].addr();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let slave = status(&old).await.is_some_and(|s| s["role"] == "SLAVE");
        match check(&old).await {
            Ok(()) if slave => break,
            Ok(()) => {}
            Err(e) => assert!(
                Instant::now() < deadline,
                "the restarted old master differs: {e}"
            ),
        }
        assert!(Instant::now() < deadline, "the old master is no slave");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(brokers);
    drop(ns);
}
