//! The official Apache RocketMQ 5 Python client (`rocketmq-python-client` from PyPI, installed by
//! `scripts/setup.sh`) against real `rocketraft dev` and `rocketraft proxy` processes: a producer
//! sends normal and FIFO messages with tags, keys and properties; a SimpleConsumer receives them,
//! changes one message's invisible duration and acks everything (`compat/python/smoke.py`).

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use support::{admin, admin_output, free_port, Dev};

fn ensure_client() {
    let present = Command::new("python3")
        .args(["-c", "import rocketmq"])
        .status()
        .expect("python3 is needed for this test: run scripts/setup.sh")
        .success();
    if !present {
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "rocketmq-python-client==5.1.2",
            ])
            .status()
            .expect("pip");
        assert!(
            status.success(),
            "installing rocketmq-python-client failed: run scripts/setup.sh"
        );
    }
}

#[test]
fn python_client_sends_receives_changes_invisibility_and_acks_through_the_proxy() {
    ensure_client();
    let data = tempfile::tempdir().expect("tempdir");
    let mut dev = Dev::start(
        data.path(),
        free_port(),
        free_port(),
        &["--segment-size", "1048576"],
    );
    let namesrv = dev.namesrv.clone();
    let created = admin(&namesrv, &["topic", "create", "PyTopic", "--queues", "4"]);
    assert!(created.contains("created topic"), "{created}");
    for _ in 0..100 {
        if admin_output(&namesrv, &["topic", "route", "PyTopic"])
            .status
            .success()
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let port = free_port();
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_rocketraft"))
        .args([
            "proxy",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--namesrv",
            &namesrv,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn proxy");
    let ready = BufReader::new(proxy.stdout.take().expect("stdout"))
        .lines()
        .next()
        .expect("a line")
        .expect("readable");
    assert!(ready.contains("is ready"), "{ready}");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/python/smoke.py");
    let out = Command::new("python3")
        .arg(&script)
        .args([&format!("127.0.0.1:{port}"), "PyTopic", "pygroup"])
        .output()
        .expect("run the Python client");
    let _ = proxy.kill();
    let _ = proxy.wait();
    let _ = dev.child.kill();
    let _ = dev.child.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("sent 5 messages"), "{stdout}");
    assert!(stdout.contains("received and acked 5 messages"), "{stdout}");
}
