//! The official Apache RocketMQ 5 Node.js client (`rocketmq-client-nodejs` 1.0.8 from the npm
//! registry, installed from `compat/nodejs/package-lock.json`) through the gRPC proxy of a real
//! `rocketraft dev`: its PushConsumer verifies every message's `body_digest` and silently drops
//! a message it cannot match, so receiving every message shows the proxy sends the digest
//! RocketMQ's proxy sends (MD5, uppercase hex); and `compat/nodejs/suite.js` runs every client
//! type it has (Producer: normal, FIFO, delay with recall, transactions committed, rolled back
//! and checked back; SimpleConsumer; PushConsumer).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::support::{admin, free_port, Dev};

fn ensure_client(dir: &Path) {
    crate::support::npm_ci_once(dir, "node_modules/rocketmq-client-nodejs/package.json");
}

#[test]
fn nodejs_push_consumer_accepts_every_message_digest() {
    let _turn = crate::support::file_turn(module_path!());
    let compat = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/nodejs");
    ensure_client(&compat);
    let data = tempfile::tempdir().expect("tempdir");
    let mut dev = Dev::start(data.path(), free_port(), free_port(), &[]);
    let (namesrv, proxy) = (dev.namesrv.clone(), dev.proxy.clone());
    let created = admin(
        &namesrv,
        &["topic", "create", "NodeDigest", "--queues", "4"],
    );
    assert!(created.contains("created topic"), "{created}");
    admin(&namesrv, &["consumer", "create-group", "node_cg"]);
    let count = 10;
    let out = Command::new("node")
        .arg("push.js")
        .current_dir(&compat)
        .env("PROXY", &proxy)
        .env("TOPIC", "NodeDigest")
        .env("GROUP", "node_cg")
        .env("COUNT", count.to_string())
        // The client logs under $HOME/logs.
        .env("HOME", data.path())
        .output()
        .expect("node is needed for this test: run scripts/setup.sh");
    let _ = dev.child.kill();
    let _ = dev.child.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Node.js client failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let received: BTreeSet<String> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "received")
        .filter_map(|e| e["body"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        received,
        (0..count).map(|i| format!("node-{i}")).collect(),
        "{stdout}"
    );
}

#[test]
fn nodejs_producers_and_consumers_of_every_type_work_through_the_proxy() {
    let _turn = crate::support::file_turn(module_path!());
    let compat = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/nodejs");
    ensure_client(&compat);
    let mut node = Command::new("node");
    node.arg("suite.js").current_dir(&compat);
    let events = crate::compat_python::run_official_suite(
        node,
        "Node",
        "nodeg",
        &[
            "normal_ok",
            "push_ok",
            "fifo_ok",
            "delay_ok",
            "tx_checked",
            "tx_ok",
            "done",
        ],
    );
    let normal = events
        .iter()
        .find(|e| e["event"] == "normal_ok")
        .expect("normal");
    assert_eq!(normal["received"], 5, "{events:?}");
    assert_eq!(normal["renewed"], true, "{events:?}");
    let tx = events.iter().find(|e| e["event"] == "tx_ok").expect("tx");
    assert_eq!(
        tx["bodies"],
        serde_json::json!(["node-tx-commit", "node-tx-orphan"]),
        "{events:?}"
    );
}

/// Lite topics with the official client (`compat/nodejs/lite.js`): a topic of message type
/// LITE made with `rocketraft admin topic create --message-type LITE`, a `LitePushConsumer`
/// subscribing two of three lite topics (SyncLiteSubscription), a Producer sending with
/// `liteTopic` to all three; the consumer gets exactly its lite topics' messages, and after
/// `unsubscribeLite` only the other one's.
#[test]
fn nodejs_lite_push_consumer_gets_exactly_its_lite_topics() {
    let _turn = crate::support::file_turn(module_path!());
    let compat = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/nodejs");
    ensure_client(&compat);
    let data = tempfile::tempdir().expect("tempdir");
    let mut dev = Dev::start(data.path(), free_port(), free_port(), &[]);
    let (namesrv, proxy) = (dev.namesrv.clone(), dev.proxy.clone());
    let created = admin(
        &namesrv,
        &[
            "topic",
            "create",
            "NodeLite",
            "--queues",
            "4",
            "--message-type",
            "LITE",
        ],
    );
    assert!(created.contains("created topic"), "{created}");
    admin(&namesrv, &["consumer", "create-group", "node_lite_cg"]);
    let out = Command::new("node")
        .arg("lite.js")
        .current_dir(&compat)
        .env("PROXY", &proxy)
        .env("TOPIC", "NodeLite")
        .env("GROUP", "node_lite_cg")
        // The client logs under $HOME/logs.
        .env("HOME", data.path())
        .output()
        .expect("node is needed for this test: run scripts/setup.sh");
    let _ = dev.child.kill();
    let _ = dev.child.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Node.js client failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let event = |name: &str| {
        events
            .iter()
            .find(|e| e["event"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} event in:\n{stdout}"))
    };
    assert_eq!(
        event("lite_ok")["bodies"],
        serde_json::json!(["lite-a-0", "lite-a-1", "lite-a-2", "lite-b-0", "lite-b-1", "lite-b-2"])
    );
    assert_eq!(
        event("unsubscribe_ok")["bodies"],
        serde_json::json!(["lite-a-3"])
    );
    event("done");
}
