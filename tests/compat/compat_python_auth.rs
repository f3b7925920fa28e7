//! The official Apache RocketMQ 5 Python client (`rocketmq-python-client` from PyPI, installed by
//! `scripts/setup.sh`) with credentials against a real `rocketraft proxy --auth`: users and grants
//! made with `rocketraft admin acl`; signed sends, receives and acks work; a send to a topic the
//! user may only read is refused with FORBIDDEN; a wrong secret key cannot send
//! (`compat/python/auth_smoke.py`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{admin, free_port, Dev};

#[test]
fn python_client_with_credentials_through_a_proxy_with_auth() {
    let _turn = crate::support::file_turn(module_path!());
    crate::ensure_python_client();
    let data = tempfile::tempdir().expect("tempdir");
    let mut dev = Dev::start(data.path(), free_port(), free_port(), &[]);
    let ns = dev.namesrv.clone();
    for topic in ["PyAuthTopic", "PyReadOnly"] {
        admin(&ns, &["topic", "create", topic, "--queues", "2"]);
    }
    admin(
        &ns,
        &[
            "acl",
            "user",
            "create",
            "--username",
            "pyuser",
            "--password",
            "py-secret",
        ],
    );
    for (resource, actions) in [
        ("Topic:PyAuthTopic", "Pub,Sub"),
        ("Group:PyAuthGroup", "Sub"),
        ("Topic:PyReadOnly", "Sub"),
    ] {
        admin(
            &ns,
            &[
                "acl",
                "grant",
                "--subject",
                "User:pyuser",
                "--resource",
                resource,
                "--actions",
                actions,
            ],
        );
    }
    // The proxy reads users' secret keys from the broker, which shows them only to a Super
    // user: it signs its Remoting requests as one.
    admin(
        &ns,
        &[
            "acl",
            "user",
            "create",
            "--username",
            "pyproxy",
            "--password",
            "pyproxy-secret",
            "--user-type",
            "Super",
        ],
    );
    let proxy_port = free_port();
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_rocketraft"))
        .args([
            "proxy",
            "--listen",
            &format!("127.0.0.1:{proxy_port}"),
            "--namesrv",
            &ns,
            "--auth",
            "--remoting-access-key",
            "pyproxy",
        ])
        .env("ROCKETRAFT_PROXY_SECRET_KEY", "pyproxy-secret")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn proxy");
    let ready = BufReader::new(proxy.stdout.take().expect("stdout"))
        .lines()
        .next()
        .expect("a line")
        .expect("readable");
    assert!(ready.contains("authentication on"), "{ready}");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/python/auth_smoke.py");
    let out = Command::new("timeout")
        .args(["180", "python3"])
        .arg(&script)
        .args([
            &format!("127.0.0.1:{proxy_port}"),
            "PyAuthTopic",
            "PyReadOnly",
            "PyAuthGroup",
            "pyuser",
            "py-secret",
        ])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let _ = proxy.kill();
    let _ = proxy.wait();
    let _ = dev.child.kill();
    let _ = dev.child.wait();
    assert!(
        out.status.success(),
        "auth_smoke.py failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ForbiddenException"), "{stdout}");
    assert!(stdout.contains("auth smoke: OK"), "{stdout}");
}
