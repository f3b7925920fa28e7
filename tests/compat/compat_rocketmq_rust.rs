//! A third-party RocketMQ Remoting client, rocketmq-client-rust 1.0.0 (the rocketmq-rust
//! project's client, from crates.io), against a real `rocketraft dev` process, through the
//! client's own public API (compat/rocketmq-rust): its producer with message trace on sends keyed
//! messages, its push consumer receives them, its `query_message` finds them by key
//! (QUERY_MESSAGE), its `view_message` by the offset message id (VIEW_MESSAGE_BY_ID) and by the
//! unique id the producer printed (QUERY_MESSAGE with the unique-key flag), and the trace its
//! `AsyncTraceDispatcher` wrote to `RMQ_SYS_TRACE_TOPIC` is shown by `admin message trace`.
//!
//! The client is a separate Cargo project with its own lock file, built once per machine into
//! `$CARGO_TARGET_DIR/compat-rocketmq-rust` (a large dependency tree: a few minutes cold).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{admin, admin_output, free_port, Dev};

/// Builds the client program (once per test run; cargo's own lock serialises concurrent builds
/// into one target directory) and returns its path.
fn probe() -> PathBuf {
    build_compat_program("rocketmq-rust", "rmq-rust-probe")
}

/// Builds the Cargo project `compat/{project}` (its own lock file) into
/// `$CARGO_TARGET_DIR/compat-{project}` and returns the path of its binary `bin`.
pub(crate) fn build_compat_program(project: &str, bin: &str) -> PathBuf {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join(format!("compat-{project}"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--locked", "--manifest-path"])
        .arg(root.join(format!("compat/{project}/Cargo.toml")))
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building compat/{project} failed");
    target.join("debug").join(bin)
}

/// Runs one scenario of the client program against `namesrv` with `envs`; its JSON events,
/// asserting it exited 0 and printed `done`. HOME is `home` (the client keeps broadcasting
/// offsets and logs under it).
fn run_probe(
    probe: &Path,
    scenario: &str,
    namesrv: &str,
    home: &Path,
    envs: &[(&str, String)],
) -> Vec<serde_json::Value> {
    let out = Command::new(probe)
        .arg(scenario)
        .env("NAMESRV", namesrv)
        .env("HOME", home)
        .env("RUST_LOG", "warn")
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("the client program runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rocketmq-client-rust {scenario} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(events_of(&events, "done").len(), 1, "{stdout}");
    events
}

/// `rocketraft dev` with a topic of `queues` queues whose route the NameServer serves.
fn dev_with_topic(data: &Path, topic: &str, queues: usize) -> Dev {
    let dev = Dev::start(data, free_port(), free_port(), &["--no-proxy"]);
    let created = admin(
        &dev.namesrv,
        &["topic", "create", topic, "--queues", &queues.to_string()],
    );
    assert!(created.contains("created topic"), "{created}");
    for _ in 0..100 {
        if admin_output(&dev.namesrv, &["topic", "route", topic])
            .status
            .success()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    dev
}

fn events_of<'a>(events: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

fn bodies(messages: &serde_json::Value) -> BTreeSet<String> {
    messages
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|m| m["body"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn rocketmq_client_rust_finds_messages_by_key_and_id_and_writes_traces() {
    let _turn = crate::support::file_turn(module_path!());
    let probe = probe();
    let data = tempfile::tempdir().expect("tempdir");
    let topic = "RustClientLookup";
    let mut dev = dev_with_topic(data.path(), topic, 4);
    let namesrv = dev.namesrv.clone();
    let count = 10;
    let events = run_probe(
        &probe,
        "lookup-trace",
        &namesrv,
        data.path(),
        &[
            ("TOPIC", topic.to_string()),
            ("COUNT", count.to_string()),
            // The client's trace worker sends its batches in the background; shutting down
            // drops what it has not sent yet.
            ("HOLD_MS", "1500".to_string()),
        ],
    );
    let stdout = format!("{events:?}");

    let sent = events_of(&events, "sent");
    assert_eq!(sent.len(), count, "{stdout}");
    for e in &sent {
        assert_eq!(e["status"], "SendOk", "{e}");
        assert_eq!(e["msgId"].as_str().map(str::len), Some(32), "{e}");
        assert_eq!(e["offsetMsgId"].as_str().map(str::len), Some(32), "{e}");
        assert_eq!(e["traceOn"], true, "the broker's trace switch is on: {e}");
    }
    let all: BTreeSet<String> = (0..count).map(|i| format!("rust-body-{i}")).collect();
    let received: BTreeSet<String> = events_of(&events, "received")
        .iter()
        .filter_map(|e| e["message"]["body"].as_str().map(str::to_string))
        .collect();
    assert_eq!(received, all, "the push consumer got every message");

    // By key: the shared key finds every message, a message's own key finds it alone, an unknown
    // key finds nothing (the client reports "no message").
    let by_key = events_of(&events, "by_key");
    let shared = by_key
        .iter()
        .find(|e| e["key"] == "lookup-all")
        .unwrap_or_else(|| panic!("no lookup by the shared key: {stdout}"));
    assert_eq!(bodies(&shared["messages"]), all, "{shared}");
    let probe_index = count / 2;
    let own = by_key
        .iter()
        .find(|e| e["key"] == format!("order-{probe_index}"))
        .unwrap_or_else(|| panic!("no lookup by order-{probe_index}: {stdout}"));
    assert_eq!(
        bodies(&own["messages"]),
        BTreeSet::from([format!("rust-body-{probe_index}")]),
        "{own}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "by_key_failed" && e["key"] == "no-such-key"),
        "an unknown key finds nothing: {stdout}"
    );

    // By id: the offset message id and the unique id of the same message.
    let expected = sent[probe_index];
    for kind in ["offset", "unique"] {
        let found = events
            .iter()
            .find(|e| e["event"] == "by_id" && e["kind"] == kind)
            .unwrap_or_else(|| panic!("view_message by the {kind} id failed: {stdout}"));
        let m = &found["message"];
        assert_eq!(m["body"], format!("rust-body-{probe_index}"), "{found}");
        assert_eq!(m["uniq"], expected["msgId"], "{found}");
        assert_eq!(m["msgId"], expected["offsetMsgId"], "{found}");
        assert_eq!(
            m["keys"],
            format!("order-{probe_index} lookup-all"),
            "{found}"
        );
    }

    // The producer's trace, written by the client's own trace dispatcher.
    let uniq = expected["msgId"].as_str().unwrap_or_default().to_string();
    let offset_id = expected["offsetMsgId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let trace = loop {
        let out = admin_output(&namesrv, &["message", "trace", "--id", &uniq]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() && text.starts_with("Pub") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no trace of {uniq}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let publish = trace.lines().next().unwrap_or_default();
    for field in [
        "groupName=rr_compat_rust_pg".to_string(),
        format!("topic={topic}"),
        format!("msgId={uniq}"),
        "tags=TagR".to_string(),
        format!("keys=order-{probe_index} lookup-all"),
        "msgType=Normal_Msg".to_string(),
        format!("offsetMsgId={offset_id}"),
        "success=true".to_string(),
    ] {
        assert!(publish.contains(&field), "{field} in {trace}");
    }

    // Our CLI agrees with the client about the same message.
    let shown = admin(
        &namesrv,
        &[
            "message",
            "query",
            "--topic",
            topic,
            "--key",
            &format!("order-{probe_index}"),
        ],
    );
    assert!(shown.contains(&format!("unique id:   {uniq}")), "{shown}");
    let shown = admin(&namesrv, &["message", "get", "--id", &offset_id]);
    assert!(
        shown.contains(&format!("rust-body-{probe_index}")),
        "{shown}"
    );
    let _ = dev.child.kill();
    let _ = dev.child.wait();
}

/// An orderly push consumer of rocketmq-client-rust (`MessageListenerOrderly`, which consumes a
/// queue only while the broker grants it the queue's lock: LOCK_BATCH_MQ / UNLOCK_BATCH_MQ)
/// receives every message of each queue in order; a second consumer joins the group, the
/// queues are rebalanced between the two, and each queue's messages still come in order, each
/// queue from one consumer at a time.
#[test]
fn rocketmq_client_rust_orderly_consumers_keep_queue_order_across_a_rebalance() {
    let _turn = crate::support::file_turn(module_path!());
    let probe = probe();
    let data = tempfile::tempdir().expect("tempdir");
    let topic = "RustClientOrderly";
    let queues = 4;
    let mut dev = dev_with_topic(data.path(), topic, queues);
    let count = 20;
    let events = run_probe(
        &probe,
        "orderly",
        &dev.namesrv.clone(),
        data.path(),
        &[
            ("TOPIC", topic.to_string()),
            ("COUNT", count.to_string()),
            ("QUEUES", queues.to_string()),
        ],
    );
    let _ = dev.child.kill();
    let _ = dev.child.wait();
    for e in events_of(&events, "sent") {
        assert_eq!(e["queue"], e["queueId"], "the selector's queue: {e}");
    }
    let mut received = events_of(&events, "ordered");
    received.sort_by_key(|e| e["seq"].as_u64());
    let mut per_queue: BTreeMap<i64, Vec<(String, usize)>> = BTreeMap::new();
    for e in &received {
        let q = e["queueId"].as_i64().unwrap_or(-1);
        let body = e["body"].as_str().unwrap_or_default();
        let (bq, n) = body
            .trim_start_matches('q')
            .split_once('-')
            .unwrap_or_else(|| panic!("body {body}"));
        assert_eq!(
            bq,
            q.to_string(),
            "message of queue {bq} came from queue {q}"
        );
        per_queue.entry(q).or_default().push((
            e["consumer"].as_str().unwrap_or_default().to_string(),
            n.parse().unwrap_or_else(|_| panic!("body {body}")),
        ));
    }
    assert_eq!(per_queue.len(), queues, "{per_queue:?}");
    let mut after_rebalance = BTreeSet::new();
    for (q, got) in &per_queue {
        // In order: each message is the next one, or a redelivery from an earlier one (a new
        // holder starts from the committed offset); nothing is skipped and all arrive.
        let mut last: Option<usize> = None;
        for (_, n) in got {
            if let Some(l) = last {
                assert!(*n <= l + 1, "queue {q} skipped from {l} to {n}: {got:?}");
            } else {
                assert_eq!(*n, 0, "queue {q} starts at 0: {got:?}");
            }
            last = Some(*n);
        }
        let all: BTreeSet<usize> = got.iter().map(|(_, n)| *n).collect();
        assert_eq!(all, (0..count).collect(), "queue {q}: {got:?}");
        // One consumer at a time: once a queue changes hands it does not go back.
        let holders: Vec<&String> = got.iter().map(|(c, _)| c).fold(Vec::new(), |mut v, c| {
            if v.last() != Some(&c) {
                v.push(c);
            }
            v
        });
        assert!(holders.len() <= 2, "queue {q} changed hands back: {got:?}");
        if let Some((c, _)) = got.last() {
            after_rebalance.insert(c.clone());
        }
    }
    assert_eq!(
        after_rebalance,
        BTreeSet::from(["first".to_string(), "second".to_string()]),
        "after the rebalance both consumers hold queues: {per_queue:?}"
    );
}

/// rocketmq-client-rust's `DefaultLitePullConsumer` (the consumer of the Flink and Spark
/// connectors): in subscribe mode it polls every message and commits (the committed offsets are
/// the queues' ends); in assign mode it seeks within a queue and reads from there, then from the
/// beginning, and commits.
#[test]
fn rocketmq_client_rust_lite_pull_consumer_polls_seeks_and_commits() {
    let _turn = crate::support::file_turn(module_path!());
    let probe = probe();
    let data = tempfile::tempdir().expect("tempdir");
    let topic = "RustClientLite";
    let mut dev = dev_with_topic(data.path(), topic, 4);
    let count = 40;
    let events = run_probe(
        &probe,
        "lite-pull",
        &dev.namesrv.clone(),
        data.path(),
        &[("TOPIC", topic.to_string()), ("COUNT", count.to_string())],
    );
    let _ = dev.child.kill();
    let _ = dev.child.wait();
    let polled: BTreeSet<String> = events_of(&events, "polled")
        .iter()
        .filter_map(|e| e["body"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        polled,
        (0..count).map(|i| format!("lite-{i}")).collect(),
        "every message polled once"
    );
    let committed = events_of(&events, "committed");
    assert_eq!(committed.len(), 4, "{committed:?}");
    let total: i64 = committed.iter().filter_map(|e| e["max"].as_i64()).sum();
    assert_eq!(total, count as i64);
    for e in &committed {
        assert_eq!(e["committed"], e["max"], "committed to the end: {e}");
    }
    let offsets = |kind: &str| -> Vec<i64> {
        events_of(&events, kind)
            .iter()
            .map(|e| {
                assert_eq!(e["queueId"], 0, "only the assigned queue: {e}");
                e["queueOffset"].as_i64().unwrap_or(-1)
            })
            .collect()
    };
    let max0 = events_of(&events, "assigned_committed")[0]["max"]
        .as_i64()
        .unwrap_or(-1);
    assert!(max0 > 2, "queue 0 holds {max0}");
    assert_eq!(offsets("after_seek"), (2..max0).collect::<Vec<_>>());
    assert_eq!(
        offsets("after_seek_to_begin"),
        (0..max0).collect::<Vec<_>>()
    );
    assert_eq!(
        events_of(&events, "assigned_committed")[0]["committed"],
        max0
    );
}

/// Two rocketmq-client-rust push consumers of one group in the BROADCASTING model each receive
/// every message.
#[test]
fn rocketmq_client_rust_broadcasting_consumers_each_get_every_message() {
    let _turn = crate::support::file_turn(module_path!());
    let probe = probe();
    let data = tempfile::tempdir().expect("tempdir");
    let topic = "RustClientBroadcast";
    let mut dev = dev_with_topic(data.path(), topic, 4);
    let count = 20;
    let events = run_probe(
        &probe,
        "broadcast",
        &dev.namesrv.clone(),
        data.path(),
        &[("TOPIC", topic.to_string()), ("COUNT", count.to_string())],
    );
    let _ = dev.child.kill();
    let _ = dev.child.wait();
    let all: BTreeSet<String> = (0..count).map(|i| format!("bcast-{i}")).collect();
    for name in ["one", "two"] {
        let got: BTreeSet<String> = events_of(&events, "broadcast")
            .iter()
            .filter(|e| e["consumer"] == name)
            .filter_map(|e| e["body"].as_str().map(str::to_string))
            .collect();
        assert_eq!(got, all, "consumer {name}");
    }
}

/// A rocketmq-client-rust push consumer subscribed with `MessageSelector::by_sql` receives
/// exactly the messages whose properties match; one with an invalid expression fails to start
/// (the broker refuses its CHECK_CLIENT_CONFIG).
#[test]
fn rocketmq_client_rust_sql92_consumer_gets_exactly_the_matching_messages() {
    let _turn = crate::support::file_turn(module_path!());
    let probe = probe();
    let data = tempfile::tempdir().expect("tempdir");
    let topic = "RustClientSql";
    let mut dev = dev_with_topic(data.path(), topic, 4);
    let count = 20;
    let events = run_probe(
        &probe,
        "sql",
        &dev.namesrv.clone(),
        data.path(),
        &[
            ("TOPIC", topic.to_string()),
            ("COUNT", count.to_string()),
            ("EXPECT", "5".to_string()),
            ("SQL", "a BETWEEN 3 AND 12 AND TAGS = 'odd'".to_string()),
            ("BAD_SQL", "a > 'x'".to_string()),
        ],
    );
    let _ = dev.child.kill();
    let _ = dev.child.wait();
    let got: BTreeSet<String> = events_of(&events, "sql")
        .iter()
        .filter_map(|e| e["body"].as_str().map(str::to_string))
        .collect();
    let want: BTreeSet<String> = [3, 5, 7, 9, 11]
        .iter()
        .map(|i| format!("sql-{i}"))
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        events_of(&events, "bad_sql_refused").len(),
        1,
        "a consumer with a bad expression does not start: {events:?}"
    );
}

/// A live rocketmq-client-rust push consumer that consumed everything is moved back by
/// `rocketraft admin consumer reset --earliest` (INVOKE_BROKER_TO_RESET_OFFSET, which pushes
/// RESET_CONSUMER_CLIENT_OFFSET to it) and receives every message again.
#[test]
fn rocketmq_client_rust_consumer_rereads_after_an_offset_reset() {
    use std::io::BufRead;
    let _turn = crate::support::file_turn(module_path!());
    let probe = probe();
    let data = tempfile::tempdir().expect("tempdir");
    let topic = "RustClientReset";
    let mut dev = dev_with_topic(data.path(), topic, 4);
    let namesrv = dev.namesrv.clone();
    let count = 20;
    let mut child = crate::support::Killed(
        Command::new(&probe)
            .arg("reset")
            .env("NAMESRV", &namesrv)
            .env("HOME", data.path())
            .env("RUST_LOG", "warn")
            .env("TOPIC", topic)
            .env("COUNT", count.to_string())
            .env("SETTLE_MS", "1000")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the client program runs"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let mut events = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("a line");
        let Ok(e) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if e["event"] == "ready_for_reset" {
            assert_eq!(e["distinct"], count, "first pass: {e}");
            let out = admin(
                &namesrv,
                &[
                    "consumer",
                    "reset",
                    "--group",
                    "rr_compat_reset_cg",
                    "--topic",
                    topic,
                    "--earliest",
                ],
            );
            assert!(out.contains("reset on topic"), "{out}");
        }
        events.push(e);
    }
    let status = child.0.wait().expect("wait");
    let _ = dev.child.kill();
    let _ = dev.child.wait();
    assert!(status.success(), "{events:?}");
    assert_eq!(events_of(&events, "done").len(), 1, "{events:?}");
    let mut times: BTreeMap<String, usize> = BTreeMap::new();
    for e in events_of(&events, "reset_received") {
        *times
            .entry(e["body"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    assert_eq!(times.len(), count, "{times:?}");
    assert!(
        times.values().all(|n| *n >= 2),
        "every message again after the reset: {times:?}"
    );
}

/// Request-reply with rocketmq-client-rust: a requester's `request` gets the reply a responder
/// built with `MessageUtil::create_reply_message` (SEND_REPLY_MESSAGE_V2, pushed back by the
/// broker with PUSH_REPLY_MESSAGE_TO_CLIENT), for each of several requests.
#[test]
fn rocketmq_client_rust_request_reply_round_trips() {
    let _turn = crate::support::file_turn(module_path!());
    let probe = probe();
    let data = tempfile::tempdir().expect("tempdir");
    let topic = "RustClientRequests";
    let mut dev = dev_with_topic(data.path(), topic, 4);
    let count = 5;
    let events = run_probe(
        &probe,
        "request-reply",
        &dev.namesrv.clone(),
        data.path(),
        &[("TOPIC", topic.to_string()), ("COUNT", count.to_string())],
    );
    let _ = dev.child.kill();
    let _ = dev.child.wait();
    let replies: Vec<(i64, String)> = events_of(&events, "reply")
        .iter()
        .map(|e| {
            (
                e["i"].as_i64().unwrap_or(-1),
                e["body"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let want: Vec<(i64, String)> = (0..count)
        .map(|i| (i as i64, format!("reply-to-question-{i}")))
        .collect();
    assert_eq!(replies, want, "{events:?}");
}
