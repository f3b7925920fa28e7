//! A third-party RocketMQ Remoting client, ali-ons (Node.js, from the npm registry), produces to
//! and consumes from a real `rocketraft dev` process. `scripts/setup.sh` installs Node.js when it
//! is missing; the client itself is installed from `compat/ali-ons/package-lock.json`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::support::{admin, admin_output, free_port, Dev};

fn ensure_ali_ons(dir: &Path) {
    if dir.join("node_modules/ali-ons/package.json").exists() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .expect("npm is needed for this test: run scripts/setup.sh (installs nodejs and npm)");
    assert!(status.success(), "npm ci in {} failed", dir.display());
}

#[test]
fn ali_ons_produces_and_consumes_through_rocketraft_dev() {
    let _turn = crate::support::file_turn(module_path!());
    let compat = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/ali-ons");
    ensure_ali_ons(&compat);

    let data = tempfile::tempdir().expect("tempdir");
    let (namesrv_port, broker_port) = (free_port(), free_port());
    let mut dev = Dev::start(data.path(), namesrv_port, broker_port, &[]);
    let namesrv = dev.namesrv.clone();
    let created = admin(
        &namesrv,
        &["topic", "create", "CompatTopic", "--queues", "4"],
    );
    assert!(created.contains("created topic"), "{created}");
    // Let the broker's re-registration reach the NameServer.
    for _ in 0..100 {
        if admin_output(&namesrv, &["topic", "route", "CompatTopic"])
            .status
            .success()
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let count = 40;
    let out = Command::new("node")
        .arg("roundtrip.js")
        .current_dir(&compat)
        .env("NAMESRV", &namesrv)
        .env("TOPIC", "CompatTopic")
        .env("COUNT", count.to_string())
        .output()
        .expect("node is needed for this test: run scripts/setup.sh");
    let _ = dev.child.kill();
    let _ = dev.child.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ali-ons run failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );

    let events: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let sent: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "sent").collect();
    assert_eq!(sent.len(), count);
    let queues: BTreeSet<i64> = sent.iter().filter_map(|e| e["queueId"].as_i64()).collect();
    assert!(
        queues.len() > 1,
        "ali-ons spread sends over the queues: {queues:?}"
    );
    for e in &sent {
        assert_eq!(
            e["msgId"].as_str().map(str::len),
            Some(32),
            "offset msg id: {e}"
        );
    }
    let received: BTreeSet<String> = events
        .iter()
        .filter(|e| e["event"] == "received")
        .filter_map(|e| e["body"].as_str().map(str::to_string))
        .collect();
    let expected: BTreeSet<String> = (0..count).map(|i| format!("compat-body-{i}")).collect();
    assert_eq!(
        received, expected,
        "every message sent by ali-ons came back to its consumer"
    );
    for e in events.iter().filter(|e| e["event"] == "received") {
        let body = e["body"].as_str().unwrap_or_default();
        let i: usize = body
            .trim_start_matches("compat-body-")
            .parse()
            .expect("index");
        let tag = if i.is_multiple_of(2) { "TagA" } else { "TagB" };
        assert_eq!(e["tags"].as_str(), Some(tag), "tags survive: {e}");
    }
}
