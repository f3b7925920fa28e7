//! The official Apache RocketMQ 5 Python client (`rocketmq-python-client` from PyPI, installed by
//! `scripts/setup.sh`) through Rocketraft's gRPC proxy (`compat/python/smoke.py`): normal sends
//! with tags, keys and properties; FIFO message groups in order; a delayed message on time and a
//! recalled one never; transactions committed, rolled back, and an orphan committed by the
//! client's TransactionChecker when the server asks; a SimpleConsumer receiving, changing
//! invisible duration and acking with the new handle; a PushConsumer whose failed message
//! comes back with its delivery attempt counted; an SQL92 filter receiving exactly the matching
//! messages, and an invalid one refused.
//!
//! Twice: against `rocketraft dev` (the proxy in the same process, local mode) and against a
//! cluster of separate `rocketraft namesrv`, `rocketraft broker` and `rocketraft proxy`
//! processes.

use std::path::Path;
use std::process::Command;

use crate::support::{admin, admin_output, free_port, spawn_ready, Dev};

/// Creates the topics `{prefix}Normal`, `Fifo`, `Delay` and `Tx` (each with its message type,
/// 4 queues) and the FIFO group `{group}-fifo` an official client's suite uses, and waits for
/// their routes.
pub(crate) fn suite_topics(namesrv: &str, prefix: &str, group: &str) {
    for (suffix, kind) in [
        ("Normal", None),
        ("Fifo", Some("FIFO")),
        ("Delay", Some("DELAY")),
        ("Tx", Some("TRANSACTION")),
    ] {
        let topic = format!("{prefix}{suffix}");
        let mut args = vec!["topic", "create", topic.as_str(), "--queues", "4"];
        if let Some(k) = kind {
            args.extend(["--message-type", k]);
        }
        let created = admin(namesrv, &args);
        assert!(created.contains("created topic"), "{created}");
        for _ in 0..100 {
            if admin_output(namesrv, &["topic", "route", &topic])
                .status
                .success()
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    let fifo = format!("{group}-fifo");
    let made = admin(namesrv, &["consumer", "create-group", &fifo, "--fifo"]);
    assert!(made.contains("fifo true"), "{made}");
}

/// Runs one official client's suite program against a fresh `dev` (the transaction check
/// quickened): sets up `suite_topics(prefix, group)`, runs `command` with `PROXY`, `PREFIX`,
/// `GROUP` and `HOME` set, stops dev (also when the set-up fails), checks the program succeeded
/// and printed every `wanted` event, and returns its JSON events.
pub(crate) fn run_official_suite(
    mut command: Command,
    prefix: &str,
    group: &str,
    wanted: &[&str],
) -> Vec<serde_json::Value> {
    let data = tempfile::tempdir().expect("tempdir");
    let mut dev = Dev::start(data.path(), free_port(), free_port(), &FAST_TX);
    let (namesrv, proxy) = (dev.namesrv.clone(), dev.proxy.clone());
    let setup = std::panic::catch_unwind(|| suite_topics(&namesrv, prefix, group));
    let out = setup.as_ref().ok().map(|()| {
        command
            .env("PROXY", &proxy)
            .env("PREFIX", prefix)
            .env("GROUP", group)
            // The clients log under $HOME/logs.
            .env("HOME", data.path())
            .output()
            .expect("run the client's suite program (its toolchain comes from scripts/setup.sh)")
    });
    let _ = dev.child.kill();
    let _ = dev.child.wait();
    if let Err(e) = setup {
        std::panic::resume_unwind(e);
    }
    let out = out.expect("ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the client's suite failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    for want in wanted {
        assert!(kinds.contains(want), "no {want} event in:\n{stdout}");
    }
    events
}

/// Creates the script's topics and groups, then runs it against `proxy`.
fn run_suite(namesrv: &str, proxy: &str, prefix: &str) {
    suite_topics(namesrv, prefix, "pygroup");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/python/smoke.py");
    let out = Command::new("python3")
        .arg(&script)
        .args([proxy, prefix, "pygroup"])
        .output()
        .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "normal: received and acked 5 messages",
        "normal: the old handle is refused",
        "push: 5 messages consumed, the failed one redelivered",
        "fifo: 8 messages, each message group in send order",
        "the recalled one never came",
        "the server asked the checker about the orphan",
        "exactly the committed and the checked-and-committed arrived",
        "sql: received exactly ['py-body-1', 'py-body-4']",
        "sql: an invalid expression is refused",
        "all checks passed",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
}

/// Transaction checks within about a second (the suites' orphaned transactions).
pub(crate) const FAST_TX: [&str; 4] = [
    "--transaction-timeout-ms",
    "1000",
    "--transaction-check-interval-ms",
    "1000",
];

#[test]
fn python_client_against_dev_with_its_in_process_proxy() {
    let _turn = crate::support::file_turn(module_path!());
    crate::ensure_python_client();
    let data = tempfile::tempdir().expect("tempdir");
    let mut extra = vec!["--segment-size", "1048576"];
    extra.extend(FAST_TX);
    let mut dev = Dev::start(data.path(), free_port(), free_port(), &extra);
    let (namesrv, proxy) = (dev.namesrv.clone(), dev.proxy.clone());
    let result = std::panic::catch_unwind(|| run_suite(&namesrv, &proxy, "PyDev"));
    let _ = dev.child.kill();
    let _ = dev.child.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn python_client_against_namesrv_broker_and_proxy_processes() {
    let _turn = crate::support::file_turn(module_path!());
    crate::ensure_python_client();
    let data = tempfile::tempdir().expect("tempdir");
    let namesrv = format!("127.0.0.1:{}", free_port());
    let broker = format!("127.0.0.1:{}", free_port());
    let proxy = format!("127.0.0.1:{}", free_port());
    let store = data.path().join("broker");
    let _ns = spawn_ready(&["namesrv", "--listen", &namesrv]);
    let mut broker_args = vec![
        "broker",
        "--namesrv",
        &namesrv,
        "--broker-listen",
        &broker,
        "--store-dir",
        store.to_str().expect("utf8"),
        "--segment-size",
        "1048576",
    ];
    broker_args.extend(FAST_TX);
    let _broker = spawn_ready(&broker_args);
    let _proxy = spawn_ready(&["proxy", "--listen", &proxy, "--namesrv", &namesrv]);
    run_suite(&namesrv, &proxy, "PyCluster");
}
