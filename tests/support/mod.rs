//! Helpers shared by the tests that run the real `rocketraft` binary.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running `rocketraft dev` process.
pub struct Dev {
    pub child: Child,
    pub namesrv: String,
    pub broker: String,
}

impl Dev {
    /// Starts `rocketraft dev` on the given ports with `extra` flags and waits for its ready line.
    pub fn start(data: &Path, namesrv_port: u16, broker_port: u16, extra: &[&str]) -> Dev {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rocketraft"))
            .args([
                "dev",
                "--data-dir",
                data.to_str().expect("utf8 path"),
                "--namesrv-listen",
                &format!("127.0.0.1:{namesrv_port}"),
                "--broker-listen",
                &format!("127.0.0.1:{broker_port}"),
                "--threads",
                "2",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn rocketraft dev");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = lines
            .next()
            .expect("a line from rocketraft dev")
            .expect("readable stdout");
        assert!(ready.contains("is ready"), "unexpected first line: {ready}");
        Dev {
            child,
            namesrv: format!("127.0.0.1:{namesrv_port}"),
            broker: format!("127.0.0.1:{broker_port}"),
        }
    }
}

/// Runs `rocketraft admin --namesrv NAMESRV ARGS...`; panics with its stderr if it fails.
pub fn admin(namesrv: &str, args: &[&str]) -> String {
    let out = admin_output(namesrv, args);
    assert!(
        out.status.success(),
        "admin {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Runs `rocketraft admin` and returns its output whatever its status.
pub fn admin_output(namesrv: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rocketraft"))
        .arg("admin")
        .arg("--namesrv")
        .arg(namesrv)
        .args(args)
        .output()
        .expect("run admin")
}
