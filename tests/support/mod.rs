//! Helpers shared by the tests that run the real `rocketraft` binary.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Condvar, Mutex, PoisonError};

/// Whose turn it is: the module (former test file) whose tests run now, and how many of them.
struct Turn {
    module: Option<&'static str>,
    running: usize,
}

static TURN: Mutex<Turn> = Mutex::new(Turn {
    module: None,
    running: 0,
});
static TURN_ENDED: Condvar = Condvar::new();

/// A test's share of its module's turn; dropping it (at the test's end, also by a panic) hands
/// the turn on when the module's last running test ends.
pub struct FileTurn;

impl Drop for FileTurn {
    fn drop(&mut self) {
        let mut turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
        turn.running -= 1;
        if turn.running == 0 {
            turn.module = None;
            TURN_ENDED.notify_all();
        }
    }
}

/// Waits until no test of another module runs, then lets this one run: each module's tests run
/// beside each other (up to `--test-threads`) but never beside another module's, as they did when
/// each file was a test binary of its own (these tests start real processes and some measure
/// failover times). Every test of a binary that uses it takes it first:
/// `let _turn = file_turn(module_path!());`.
pub fn file_turn(module: &'static str) -> FileTurn {
    let mut turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
    while turn.module.is_some_and(|m| m != module) {
        turn = TURN_ENDED
            .wait(turn)
            .unwrap_or_else(PoisonError::into_inner);
    }
    turn.module = Some(module);
    turn.running += 1;
    FileTurn
}

/// A gRPC resource (topic or group) named `name` in the default namespace.
pub fn resource(name: &str) -> Option<rocketraft_proxy::pb::Resource> {
    Some(rocketraft_proxy::pb::Resource {
        resource_namespace: String::new(),
        name: name.to_string(),
    })
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    rocketraft_common::net::free_loopback_port().expect("a free loopback port")
}

/// A running `rocketraft dev` process.
pub struct Dev {
    pub child: Child,
    pub namesrv: String,
    pub broker: String,
    /// The in-process gRPC proxy (local mode).
    pub proxy: String,
}

impl Dev {
    /// Starts `rocketraft dev` on the given ports with `extra` flags and waits for its ready line.
    pub fn start(data: &Path, namesrv_port: u16, broker_port: u16, extra: &[&str]) -> Dev {
        Dev::start_logging(data, namesrv_port, broker_port, extra, Stdio::null())
    }

    /// [`Dev::start`] with the process's log (its stderr) going to `stderr`.
    fn start_logging(
        data: &Path,
        namesrv_port: u16,
        broker_port: u16,
        extra: &[&str],
        stderr: Stdio,
    ) -> Dev {
        let proxy_port = free_port();
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
                "--proxy-listen",
                &format!("127.0.0.1:{proxy_port}"),
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(stderr)
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
            proxy: format!("127.0.0.1:{proxy_port}"),
        }
    }

    /// Starts `rocketraft dev` on free ports with ACL 2.0 on in its NameServer and broker
    /// (authentication and authorization): `super_user` (access key, secret key) as
    /// `init_authentication_user`, a Super user; fixed inner credentials; and `broker_extra`, TOML
    /// keys added under `[broker]`. The config is written to `data/dev.toml`, the process's log
    /// to [`Dev::auth_log`]`(data)`.
    pub fn start_with_auth(data: &Path, super_user: (&str, &str), broker_extra: &str) -> Dev {
        let (user, secret) = super_user;
        let creds = format!(
            "authentication_enabled = true\nauthorization_enabled = true\n\
             init_authentication_user = '{{\"username\":\"{user}\",\"password\":\"{secret}\"}}'\n\
             inner_client_authentication_credentials = '{{\"accessKey\":\"dev-inner\",\"secretKey\":\"dev-inner-secret-0123456789\"}}'\n"
        );
        let config = data.join("dev.toml");
        std::fs::write(
            &config,
            format!("[namesrv]\n{creds}\n[broker]\n{creds}{broker_extra}\n"),
        )
        .expect("write dev.toml");
        let log = std::fs::File::create(Dev::auth_log(data)).expect("create the dev log");
        Dev::start_logging(
            data,
            free_port(),
            free_port(),
            &["--config", config.to_str().expect("utf8 path")],
            Stdio::from(log),
        )
    }

    /// Where [`Dev::start_with_auth`] writes the process's log.
    pub fn auth_log(data: &Path) -> std::path::PathBuf {
        data.join("dev.log")
    }
}

/// A failing test leaves nothing running: the process is killed when the `Dev` is dropped.
impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// A child process killed when dropped (so a failing test leaves nothing running).
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `rocketraft ARGS...` and waits for its "is ready" line.
pub fn spawn_ready(args: &[&str]) -> Killed {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rocketraft"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn rocketraft");
    let ready = BufReader::new(child.stdout.take().expect("stdout"))
        .lines()
        .next()
        .expect("a line")
        .expect("readable");
    assert!(ready.contains("is ready"), "{args:?}: {ready}");
    Killed(child)
}

/// Installs an npm client in `dir` from its lock file (`npm ci`) unless `installed` (a path under
/// `dir`) exists, once at a time: tests running in parallel would fail each other's `npm ci` in
/// one directory (one removes the `node_modules` the other fills).
pub fn npm_ci_once(dir: &Path, installed: &str) {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one = INSTALL.lock().unwrap_or_else(PoisonError::into_inner);
    if dir.join(installed).exists() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .expect("npm is needed for this test: run scripts/setup.sh (installs nodejs and npm)");
    assert!(status.success(), "npm ci in {} failed", dir.display());
}

/// `GET path` over HTTP/1.1 (with `extra` header lines): the status code and the body.
pub fn http_get(addr: &str, path: &str, extra: &str) -> std::io::Result<(u16, String)> {
    http(addr, "GET", path, extra, "")
}

/// One HTTP/1.1 request (`extra` header lines end in CRLF, `body` sent with its length): the
/// status code and the body of the answer.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    extra: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(20)))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    std::io::Write::write_all(&mut stream, request.as_bytes())?;
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut stream, &mut raw)?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
