//! Issue 18: `rocketraft dev` serves the metrics of all its roles (NameServer with the embedded
//! controller, broker, proxy) in one scrape that Prometheus accepts: every family once, each
//! role's series under its `node_type`; and `--log-format json` / `RUST_LOG` per module.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketraft_remoting::api::{MqClientApi, SendRequest};
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{ClientConfig, RemotingClient};
use serde_json::Value;

use crate::support::{file_turn, free_port, http_get, Dev};

/// The sample lines of `name` (exactly that metric name) in a scrape.
fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .collect()
}

#[test]
fn dev_serves_every_role_in_one_valid_scrape() {
    let _turn = file_turn(module_path!());
    let data = tempfile::tempdir().expect("tempdir");
    let metrics = format!("127.0.0.1:{}", free_port());
    let dev = Dev::start(
        data.path(),
        free_port(),
        free_port(),
        &["--metrics-listen", &metrics],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let api = MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(10),
    );
    rt.block_on(async {
        for i in 0..3 {
            let r = api
                .send(
                    &dev.broker,
                    &SendRequest {
                        producer_group: "pg".into(),
                        topic: "DevMetrics".into(),
                        queue_id: 0,
                        body: Bytes::from(format!("m{i}")),
                        properties: BTreeMap::new(),
                        ..SendRequest::default()
                    },
                )
                .await
                .expect("send");
            assert_eq!(r.code, response_code::SUCCESS);
        }
    });

    // The embedded controller leads within a moment of the start.
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let (status, text) = http_get(&metrics, "/metrics", "").expect("scrape");
        assert_eq!(status, 200);
        if samples(&text, "rocketraft_raft_is_leader")
            .iter()
            .any(|l| l.ends_with(" 1"))
        {
            break text;
        }
        assert!(Instant::now() < deadline, "no controller leader: {text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(text.trim_end().ends_with("# EOF"));

    // Every family is described once (Prometheus refuses a scrape that repeats one).
    let mut seen = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split_whitespace().next().expect("a name");
            assert!(seen.insert(name.to_string()), "{name} described twice");
        }
    }
    for role in ["broker", "namesrv", "proxy"] {
        assert!(
            text.contains(&format!("node_type=\"{role}\"")),
            "no {role} series: {text}"
        );
    }
    let sent = samples(&text, "rocketmq_messages_in_total");
    assert!(
        sent.iter()
            .any(|l| l.contains("topic=\"DevMetrics\"") && l.ends_with(" 3")),
        "{sent:?}"
    );
    // SEND_MESSAGE_V2 (310) as the broker answered it, in the process's one latency family.
    let sends = samples(&text, "rocketmq_rpc_latency_count");
    assert!(
        sends.iter().any(|l| l.contains("node_type=\"broker\"")
            && l.contains("request_code=\"310\"")
            && l.ends_with(" 3")),
        "{sends:?}"
    );
    let up = samples(&text, "rocketmq_proxy_up");
    assert!(
        up.iter()
            .any(|l| l.contains("proxy_mode=\"local\"") && l.ends_with(" 1")),
        "{up:?}"
    );
    drop(dev);
}

#[test]
fn json_logs_with_a_filter_per_module() {
    let _turn = file_turn(module_path!());
    let listen = format!("127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_rocketraft"))
        .args(["--log-format", "json", "namesrv", "--listen", &listen])
        // The server commands' events at info (a directive names a target prefix), everything
        // else only from warn.
        .env("RUST_LOG", "warn,rocketraft::cmd=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rocketraft namesrv");
    // Killed however the test ends.
    let mut guard = crate::support::Killed(child);
    let child = &mut guard.0;
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let ready = stdout.next().expect("a line").expect("readable");
    assert!(ready.contains("is ready"), "{ready}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut lines = Vec::new();
    for line in stderr.lines() {
        let line = line.expect("readable stderr");
        if !line.trim().is_empty() {
            lines.push(line);
        }
    }
    let _ = child.wait();
    assert!(!lines.is_empty(), "nothing logged");
    let mut shutting_down = false;
    for line in &lines {
        let event: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        let level = event["level"].as_str().expect("level");
        let target = event["target"].as_str().expect("target");
        assert!(event["timestamp"].is_string(), "{line}");
        if level == "INFO" || level == "DEBUG" || level == "TRACE" {
            assert!(
                target.starts_with("rocketraft::cmd"),
                "RUST_LOG let through {level} of {target}: {line}"
            );
        }
        if event["message"]
            .as_str()
            .is_some_and(|m| m.contains("shutting down"))
        {
            shutting_down = true;
        }
    }
    assert!(shutting_down, "{lines:#?}");
}
