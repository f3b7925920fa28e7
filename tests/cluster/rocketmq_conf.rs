//! `rocketraft broker --config broker.conf` with RocketMQ's own `broker.conf`: a real NameServer
//! (itself from a `namesrv.conf`) and a real broker process read the file as shipped (plus the keys a host sets: ports, IPs,
//! store paths), register, and take a message that is then read back; a key Rocketraft does not
//! use is named in the broker's warning, and a SLAVE outside controller mode is refused with the
//! key named.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketraft_remoting::api::{MqClientApi, PullRequest, PullStatus, SendRequest};
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{ClientConfig, RemotingClient};

use crate::support::{free_port, spawn_ready, Killed};

/// RocketMQ's distribution/conf/broker.conf, as shipped.
const SHIPPED: &str = include_str!("../../broker/tests/fixtures/rocketmq/broker.conf");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rocketmq_broker_conf_runs_as_is() {
    let _turn = crate::support::file_turn(module_path!());
    let dir = tempfile::tempdir().expect("tempdir");
    let namesrv_port = free_port();
    let broker_port = free_port();
    let namesrv_addr = format!("127.0.0.1:{namesrv_port}");
    // The NameServer from a namesrv.conf too: listenPort and bindAddress make its address.
    let namesrv_conf = dir.path().join("namesrv.conf");
    std::fs::write(
        &namesrv_conf,
        format!(
            "listenPort = {namesrv_port}\nbindAddress = 127.0.0.1\nrocketmqHome = /opt/rocketmq\n"
        ),
    )
    .expect("write namesrv.conf");
    let namesrv_conf = namesrv_conf.to_str().expect("utf8 path");
    let _namesrv = spawn_ready(&["namesrv", "--config", namesrv_conf, "--threads", "2"]);

    let store = dir.path().join("store");
    let commitlog = dir.path().join("commitlog-elsewhere");
    let conf = dir.path().join("broker.conf");
    std::fs::write(
        &conf,
        format!(
            "{SHIPPED}\n# What a host adds.\nnamesrvAddr = {namesrv_addr}\nbindAddress = 127.0.0.1\n\
             listenPort = {broker_port}\nbrokerIP1 = 127.0.0.1\nstorePathRootDir = {}\n\
             storePathCommitLog = {}\nmappedFileSizeCommitLog = 1048576\n\
             warmMapedFileEnable = false\nsendMessageThreadPoolNums = 16\n",
            store.display(),
            commitlog.display()
        ),
    )
    .expect("write broker.conf");

    let mut child = Command::new(env!("CARGO_BIN_EXE_rocketraft"))
        .args(["broker", "--threads", "2", "--config"])
        .arg(&conf)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rocketraft broker");
    let stderr = Arc::new(Mutex::new(String::new()));
    if let Some(mut pipe) = child.stderr.take() {
        let log = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut log) = log.lock() {
                    log.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
    }
    let stdout = child.stdout.take().expect("stdout");
    let broker = Killed(child);
    let ready = BufReader::new(stdout).lines().next();
    let log = || stderr.lock().map(|l| l.clone()).unwrap_or_default();
    let ready = match ready {
        Some(Ok(line)) => line,
        _ => panic!("the broker did not start: {}", log()),
    };
    let broker_addr = format!("127.0.0.1:{broker_port}");
    assert!(
        ready.contains(&format!("ready: {broker_addr}")),
        "{ready}\n{}",
        log()
    );
    assert!(ready.contains("broker set broker-a"), "{ready}");

    // The unused key is named in one warning.
    let warning = log()
        .lines()
        .find(|l| l.contains("does not use"))
        .map(str::to_string);
    let warning = warning.unwrap_or_else(|| panic!("no warning: {}", log()));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("sendMessageThreadPoolNums"), "{warning}");

    // Send (autoCreateTopicEnable is RocketMQ's default, true) and read back.
    let api = MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(5),
    );
    let sent = api
        .send(
            &broker_addr,
            &SendRequest {
                producer_group: "pg".into(),
                topic: "ConfTopic".into(),
                queue_id: 0,
                body: Bytes::from_static(b"from broker.conf"),
                properties: BTreeMap::new(),
                ..SendRequest::default()
            },
        )
        .await
        .expect("send");
    assert_eq!(sent.code, response_code::SUCCESS);
    let pulled = api
        .pull(
            &broker_addr,
            &PullRequest {
                consumer_group: "cg".into(),
                topic: "ConfTopic".into(),
                queue_id: 0,
                queue_offset: 0,
                max_msg_nums: 8,
                sys_flag: rocketraft_common::consts::pull_sys_flag::SUBSCRIPTION,
                commit_offset: 0,
                suspend_timeout_ms: 1_000,
                subscription: Some("*".into()),
            },
        )
        .await
        .expect("pull");
    assert_eq!(pulled.status, PullStatus::Found);
    assert_eq!(pulled.messages.len(), 1);
    assert_eq!(
        pulled.messages[0].message.body.as_ref(),
        b"from broker.conf"
    );
    assert_eq!(
        pulled.messages[0].store_host.to_string(),
        broker_addr,
        "brokerIP1:listenPort is the store host"
    );

    // Registered under broker.conf's names, at brokerIP1:listenPort.
    let deadline = Instant::now() + Duration::from_secs(10);
    let route = loop {
        match api.topic_route(&namesrv_addr, "ConfTopic").await {
            Ok(route) if !route.broker_datas.is_empty() => break route,
            other if Instant::now() > deadline => panic!("no route: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let data = &route.broker_datas[0];
    assert_eq!(data.cluster, "DefaultCluster");
    assert_eq!(data.broker_name, "broker-a");
    assert_eq!(data.broker_addrs.get(&0), Some(&broker_addr));

    // The CommitLog is where storePathCommitLog says, in 1 MiB segments.
    let segments: Vec<u64> = std::fs::read_dir(&commitlog)
        .expect("the CommitLog directory")
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .collect();
    assert!(!segments.is_empty(), "no segment in {commitlog:?}");
    assert!(segments.iter().all(|&l| l == 1 << 20), "{segments:?}");
    assert!(store.join("consumequeue").is_dir());
    drop(broker);

    // RocketMQ's slave example outside controller mode: refused, naming the key and the fix.
    let slave = dir.path().join("broker-a-s.properties");
    std::fs::write(
        &slave,
        include_str!("../../broker/tests/fixtures/rocketmq/2m-2s-async_broker-a-s.properties"),
    )
    .expect("write the slave's config");
    let out = Command::new(env!("CARGO_BIN_EXE_rocketraft"))
        .args(["broker", "--config"])
        .arg(&slave)
        .output()
        .expect("run rocketraft broker");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broker-a-s.properties, line 20: brokerRole"),
        "{err}"
    );
    assert!(err.contains("enableControllerMode = true"), "{err}");
}
