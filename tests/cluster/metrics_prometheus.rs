//! Issue 18: a real Prometheus server (Debian's `prometheus`) scrapes every process of a
//! `rocketraft cluster up` cluster from the `metrics` URLs `cluster status --json` lists, and
//! PromQL sees what the test did: the messages it sent, one master per broker set, the election
//! after kill -9 of the master, and a consumer group's lag falling to 0 once it has drained the
//! topic. Also the endpoint under bad input.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketraft_common::consts::pull_sys_flag;
use rocketraft_common::TopicConfig;
use rocketraft_remoting::api::{MqClientApi, PullRequest, PullStatus, SendRequest};
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{ClientConfig, RemotingClient};
use serde_json::Value;

use crate::cluster_cli::{text, Cluster};
use crate::support::{self, http_get, Killed};

const TOPIC: &str = "MetricsTopic";
const GROUP: &str = "metrics-group";
const SENT: u64 = 40;

/// Percent-encodes a PromQL query for a URL.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query's samples: (labels, value).
fn query(prometheus: &str, promql: &str) -> Vec<(Value, f64)> {
    let path = format!("/api/v1/query?query={}", encode(promql));
    let Ok((200, body)) = http_get(prometheus, &path, "") else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_str::<Value>(body.trim()) else {
        return Vec::new();
    };
    v["data"]["result"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| {
                    let value = r["value"][1].as_str()?.parse::<f64>().ok()?;
                    Some((r["metric"].clone(), value))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The one value of `promql` (a sum), once it satisfies `ok` (within 60 s).
fn wait_value(prometheus: &str, promql: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Vec::new();
    while Instant::now() < deadline {
        last = query(prometheus, promql);
        if let [(_, v)] = last.as_slice() {
            if ok(*v) {
                return *v;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("PromQL {promql} never got there; last answer {last:?}");
}

fn api() -> MqClientApi {
    MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(10),
    )
}

/// The broker `status` calls master: its Remoting address, metrics target (Prometheus's
/// `instance`) and PID.
fn master(rows: &[Value]) -> Option<(String, String, u64)> {
    rows.iter()
        .find(|r| r["kind"] == "broker" && r["role"] == "master" && r["alive"] == true)
        .map(|r| {
            (
                format!("127.0.0.1:{}", r["ports"]["remoting"]),
                format!("127.0.0.1:{}", r["ports"]["metrics"]),
                r["pid"].as_u64().unwrap_or(0),
            )
        })
}

fn prometheus_config(dir: &Path, targets: &[String]) -> std::path::PathBuf {
    let list = targets
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let path = dir.join("prometheus.yml");
    std::fs::write(
        &path,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: rocketraft\n    static_configs:\n      - targets: [{list}]\n"
        ),
    )
    .expect("write prometheus.yml");
    path
}

/// Pulls queue 0 of the topic for the group from `from` up to `until` messages and commits the
/// offset reached; returns it.
async fn consume(api: &MqClientApi, broker: &str, from: i64, until: i64) -> i64 {
    let mut offset = from;
    while offset < until {
        let pulled = api
            .pull(
                broker,
                &PullRequest {
                    consumer_group: GROUP.into(),
                    topic: TOPIC.into(),
                    queue_id: 0,
                    queue_offset: offset,
                    max_msg_nums: ((until - offset) as i32).min(16),
                    sys_flag: pull_sys_flag::SUBSCRIPTION,
                    commit_offset: -1,
                    suspend_timeout_ms: 0,
                    subscription: Some("*".into()),
                },
            )
            .await
            .expect("pull");
        assert_eq!(pulled.status, PullStatus::Found, "at {offset}");
        offset = pulled.next_begin_offset.min(until);
    }
    api.update_consumer_offset(broker, GROUP, TOPIC, 0, offset)
        .await
        .expect("commit the offset");
    offset
}

#[test]
fn prometheus_scrapes_a_cluster_and_promql_sees_what_happened() {
    let _turn = support::file_turn(module_path!());
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        rocketraft_common::testing::skip(
            "prometheus is missing (scripts/setup.sh installs Debian's package)",
        );
        return;
    }
    let cluster = Cluster::new();
    let out = cluster.up(&["--replicas", "2"]);
    assert!(out.status.success(), "cluster up: {}", text(&out));
    let rows = cluster.status();
    let mut targets: Vec<String> = rows
        .iter()
        .map(|r| {
            let url = r["metrics"]
                .as_str()
                .expect("every process lists its metrics URL");
            url.trim_start_matches("http://")
                .trim_end_matches("/metrics")
                .to_string()
        })
        .collect();
    assert_eq!(targets.len(), 6, "{rows:#?}");
    // A standalone proxy in front of the cluster, scraped too.
    let proxy_metrics = format!("127.0.0.1:{}", support::free_port());
    let proxy_listen = format!("127.0.0.1:{}", support::free_port());
    let _proxy = support::spawn_ready(&[
        "proxy",
        "--namesrv",
        &cluster.namesrv(),
        "--listen",
        &proxy_listen,
        "--metrics-listen",
        &proxy_metrics,
    ]);
    targets.push(proxy_metrics);

    // The NameServer process serves the web console; status names it, and it shows the set.
    let console_addr = rows
        .iter()
        .find_map(|r| r["console"].as_str())
        .expect("status lists the console")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let (status, page) = http_get(&console_addr, "/", "").expect("the console answers");
    assert_eq!(status, 200, "{page}");
    let (first_master, _, _) = master(&rows).expect("a master");
    assert!(
        page.contains("broker-a") && page.contains(&format!("({first_master})</b>")),
        "the console shows the controller's master: {page}"
    );

    // The endpoint itself: OpenMetrics text, and clear 4xx for what it does not serve.
    let (status, body) = http_get(&targets[0], "/metrics", "").expect("scrape");
    assert_eq!(status, 200);
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    assert_eq!(http_get(&targets[0], "/nope", "").expect("GET").0, 404);
    assert_eq!(
        http_get(&targets[0], "/metrics?%%zz=&&", "")
            .expect("GET")
            .0,
        200,
        "a query string is ignored"
    );
    let huge = format!("X-Huge: {}\r\n", "a".repeat(256 * 1024));
    let status = http_get(&targets[0], "/metrics", &huge).map_or(0, |(s, _)| s);
    assert!(
        status == 0 || (400..500).contains(&status),
        "huge header answered {status}"
    );
    assert_eq!(
        http_get(&targets[0], "/metrics", "")
            .expect("still serving")
            .0,
        200
    );

    let prom_dir = tempfile::tempdir().expect("tempdir");
    let config = prometheus_config(prom_dir.path(), &targets);
    let prom_addr = format!("127.0.0.1:{}", support::free_port());
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    wait_value(&prom_addr, "sum(up)", |v| v == targets.len() as f64);
    wait_value(&prom_addr, "sum(rocketmq_proxy_up)", |v| v == 1.0);
    wait_value(&prom_addr, "sum(rocketraft_broker_is_master)", |v| v == 1.0);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let api = api();
    let (master_addr, instance, master_pid) = master(&rows).expect("a master");
    rt.block_on(async {
        api.create_topic(&master_addr, &TopicConfig::new(TOPIC, 1))
            .await
            .expect("create the topic");
        for i in 0..SENT {
            let r = api
                .send(
                    &master_addr,
                    &SendRequest {
                        producer_group: "metrics-producer".into(),
                        topic: TOPIC.into(),
                        queue_id: 0,
                        body: Bytes::from(format!("message {i}")),
                        properties: BTreeMap::new(),
                        ..SendRequest::default()
                    },
                )
                .await
                .expect("send");
            assert_eq!(r.code, response_code::SUCCESS);
        }
    });
    // Counted once, by the master (replication is not a send).
    let sent = format!("sum(rocketmq_messages_in_total{{topic=\"{TOPIC}\"}})");
    wait_value(&prom_addr, &sent, |v| v == SENT as f64);

    // Half consumed: the master's lag for the group is the other half; all consumed: 0.
    let lag = format!(
        "sum(rocketmq_consumer_lag_messages{{instance=\"{instance}\",topic=\"{TOPIC}\",consumer_group=\"{GROUP}\"}})"
    );
    let half = rt.block_on(consume(&api, &master_addr, 0, SENT as i64 / 2));
    wait_value(&prom_addr, &lag, |v| v == (SENT as i64 - half) as f64);
    rt.block_on(consume(&api, &master_addr, half, SENT as i64));
    wait_value(&prom_addr, &lag, |v| v == 0.0);
    let out = wait_value(
        &prom_addr,
        &format!("sum(rocketmq_messages_out_total{{instance=\"{instance}\",topic=\"{TOPIC}\"}})"),
        |v| v >= SENT as f64,
    );
    assert_eq!(out, SENT as f64, "every message delivered once");

    // kill -9 of the master: the controllers elect the other replica and count it.
    let elections = "sum(max by (node_id) (rocketraft_controller_elections_total))";
    let before = wait_value(&prom_addr, elections, |v| v >= 1.0);
    let status = Command::new("kill")
        .args(["-9", &master_pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = cluster.status();
        if master(&rows).is_some_and(|(addr, _, _)| addr != master_addr) {
            break;
        }
        assert!(Instant::now() < deadline, "no new master: {rows:#?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    wait_value(&prom_addr, elections, |v| v > before);
    // The console's controller view follows the failover.
    let (new_master, _, _) = master(&cluster.status()).expect("the new master");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, page) = http_get(&console_addr, "/", "").expect("the console answers");
        assert_eq!(status, 200, "{page}");
        if page.contains(&format!("({new_master})</b>")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the console never showed {new_master} as master: {page}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The dead master's series went stale with its failed scrapes: one master again.
    wait_value(&prom_addr, "sum(rocketraft_broker_is_master)", |v| v == 1.0);

    dashboard_matches_the_metrics(&prom_addr, &targets);

    let out = cluster.down();
    assert!(out.status.success(), "down: {}", text(&out));
}

/// Every query of the Grafana dashboard in `docs/grafana/` is valid PromQL for this Prometheus,
/// and every metric it names is one the live processes export (a `# TYPE` line of a scrape).
fn dashboard_matches_the_metrics(prometheus: &str, targets: &[String]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana/rocketraft.json");
    let dashboard: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("the dashboard")).expect("JSON");
    let mut exported = std::collections::BTreeSet::new();
    for addr in targets {
        if let Ok((200, body)) = http_get(addr, "/metrics", "") {
            for line in body.lines() {
                if let Some(rest) = line.strip_prefix("# TYPE ") {
                    if let Some(name) = rest.split_whitespace().next() {
                        exported.insert(name.to_string());
                    }
                }
            }
        }
    }
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    for panel in panels {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            // Template variables as Grafana would fill them.
            let filled = expr.replace("$cluster", ".*");
            let path = format!("/api/v1/query?query={}", encode(&filled));
            let (status, body) = http_get(prometheus, &path, "").expect("query");
            assert_eq!(status, 200, "{expr}: {body}");
            for name in metric_names(expr) {
                let base = ["_total", "_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(&name);
                assert!(
                    exported.contains(base) || exported.contains(&name),
                    "panel {:?} uses {name}, which no process exports",
                    panel["title"]
                );
            }
        }
    }
}

/// The `rocketmq_*` and `rocketraft_*` names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts_word
            && (expr[i..].starts_with("rocketmq_") || expr[i..].starts_with("rocketraft_"))
        {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(expr.len(), |n| i + n);
            out.push(expr[i..end].to_string());
            i = end;
        } else {
            i += 1;
        }
    }
    out
}
