//! The server processes of a run (`rocketraft`, or [`RAFT_KV_BINARY`] in raft-kv runs), each
//! started with `ip netns exec <its namespace>` (which execs, so the child's PID is the
//! server's), with its own directory (config, data, logs) under the run directory. Only PIDs
//! started here are ever signalled. Dropping the set kills every process still running
//! (SIGCONT first for paused ones).

use std::fs::{File, OpenOptions};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

/// What a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Controller,
    Namesrv,
    Broker,
    Proxy,
    /// A [`RAFT_KV_BINARY`] member ([`crate::kv_workload`]).
    RaftKv,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Controller => "controller",
            Role::Namesrv => "namesrv",
            Role::Broker => "broker",
            Role::Proxy => "proxy",
            Role::RaftKv => "raft-kv",
        }
    }
}

/// Ports every node uses on its own IP (each node has its own namespace, so they never clash).
pub mod port {
    pub const NAMESRV: u16 = 9876;
    pub const CONTROLLER: u16 = 9878;
    pub const RAFT: u16 = 9880;
    pub const BROKER: u16 = 10911;
    pub const HA: u16 = 10912;
    pub const PROXY: u16 = 8081;
    /// A raft-kv member's Remoting port (its Raft port is [`RAFT`]).
    pub const RAFT_KV: u16 = 9890;
}

/// One server process and how to (re)start it.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub role: Role,
    pub ns: String,
    pub ip: Ipv4Addr,
    pub dir: PathBuf,
    /// The server's arguments (after the binary).
    pub args: Vec<String>,
    child: Option<Child>,
    paused: bool,
    /// When set, the process runs under `faketime` with this offset (e.g. `+120s`).
    clock_offset: Option<String>,
    /// When set (and no `clock_offset`), the process runs under libfaketime reading its offset
    /// from this file at every clock read (`FAKETIME_TIMESTAMP_FILE`, `FAKETIME_NO_CACHE=1`):
    /// the clock of the running process steps when the file changes ([`write_clock_file`]).
    clock_file: Option<PathBuf>,
    pub starts: u32,
    /// Extra environment of the process.
    pub env: Vec<(String, String)>,
}

impl Node {
    pub fn new(
        name: &str,
        role: Role,
        ns: &str,
        ip: Ipv4Addr,
        dir: PathBuf,
        args: Vec<String>,
    ) -> Node {
        Node {
            name: name.to_string(),
            role,
            ns: ns.to_string(),
            ip,
            dir,
            args,
            child: None,
            paused: false,
            clock_offset: None,
            clock_file: None,
            starts: 0,
            env: Vec::new(),
        }
    }

    /// The Remoting (or gRPC, for the proxy) address clients use.
    pub fn addr(&self) -> String {
        let port = match self.role {
            Role::Controller => port::CONTROLLER,
            Role::Namesrv => port::NAMESRV,
            Role::Broker => port::BROKER,
            Role::Proxy => port::PROXY,
            Role::RaftKv => port::RAFT_KV,
        };
        format!("{}:{port}", self.ip)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Starts the process (a no-op when it runs).
    pub fn start(&mut self, binary: &Path) -> anyhow::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let log = open_log(&self.log_path())?;
        let log2 = log.try_clone().context("cannot share the log file")?;
        self.starts += 1;
        use std::io::Write;
        let mut header = &log;
        let _ = writeln!(
            header,
            "===== harness: start #{} of {}{} =====",
            self.starts,
            self.name,
            match (&self.clock_offset, &self.clock_file) {
                (Some(o), _) => format!(" under faketime {o}"),
                (None, Some(f)) => format!(" under faketime reading {}", f.display()),
                (None, None) => String::new(),
            }
        );
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns]);
        if let Some(offset) = &self.clock_offset {
            // libfaketime preloaded directly (the `faketime` wrapper forks, and its PID would
            // not be the server's).
            let library = faketime_library()?;
            command
                .env("LD_PRELOAD", library)
                .env("FAKETIME", offset)
                .env("FAKETIME_DONT_RESET", "1")
                .env("DONT_FAKE_MONOTONIC", "1");
        } else if let Some(file) = &self.clock_file {
            // No FAKETIME variable: it would take priority over the file.
            let library = faketime_library()?;
            command
                .env("LD_PRELOAD", library)
                .env("FAKETIME_TIMESTAMP_FILE", file)
                .env("FAKETIME_NO_CACHE", "1")
                .env("FAKETIME_DONT_RESET", "1")
                .env("DONT_FAKE_MONOTONIC", "1");
        }
        // Its own process group: a Ctrl-C at the terminal reaches the harness only, which then
        // tears down in order.
        use std::os::unix::process::CommandExt;
        command.process_group(0);
        command
            .arg(binary)
            .args(&self.args)
            .current_dir(&self.dir)
            .env("RUST_BACKTRACE", "1")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", self.name))?;
        tracing::info!(node = self.name, pid = child.id(), "started");
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    /// SIGKILL and reap. A no-op when it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.paused {
                signal(child.id(), libc::SIGCONT);
            }
            // Child::kill sends SIGKILL to exactly this PID.
            let _ = child.kill();
            let _ = child.wait();
            tracing::info!(node = self.name, pid = child.id(), "killed");
        }
        self.paused = false;
    }

    /// SIGSTOP.
    pub fn pause(&mut self) -> bool {
        match self.pid() {
            Some(pid) if !self.paused && self.is_running() => {
                signal(pid, libc::SIGSTOP);
                self.paused = true;
                true
            }
            _ => false,
        }
    }

    /// SIGCONT.
    pub fn resume(&mut self) {
        if let (true, Some(pid)) = (self.paused, self.pid()) {
            signal(pid, libc::SIGCONT);
        }
        self.paused = false;
    }

    /// Sets (or with `None` clears) the faketime offset the next start uses.
    pub fn set_clock_offset(&mut self, offset: Option<String>) {
        self.clock_offset = offset;
    }

    pub fn clock_offset(&self) -> Option<&str> {
        self.clock_offset.as_deref()
    }

    /// Makes every later start run under libfaketime reading `file` (see `clock_file`); writes
    /// `+0` into it.
    pub fn set_clock_file(&mut self, file: PathBuf) -> anyhow::Result<()> {
        write_clock_file(&file, "+0")?;
        self.clock_file = Some(file);
        Ok(())
    }

    pub fn clock_file(&self) -> Option<&Path> {
        self.clock_file.as_deref()
    }

    /// If the process died on its own, say how (once).
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status.to_string())
            }
            _ => None,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn signal(pid: u32, sig: i32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    // SAFETY: kill has no memory preconditions; `pid` is a child we started and have not reaped.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// The multi-threaded libfaketime (Debian package `libfaketime`, installed with `faketime`).
fn faketime_library() -> anyhow::Result<PathBuf> {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/faketime/libfaketimeMT.so.1",
    ];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .with_context(|| {
            format!("libfaketime not found (looked at {candidates:?}): apt-get install faketime")
        })
}

/// Replaces the offset libfaketime reads (e.g. `-120s`, `+0`), atomically: a process reading
/// the file at that instant sees the old or the new offset, never a torn one.
pub fn write_clock_file(path: &Path, offset: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{offset}\n"))
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

fn open_log(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

/// The `rocketraft` binary to run: `--bin`, else `rocketraft` beside this executable (same
/// cargo target directory), else `$CARGO_TARGET_DIR/{release,debug}/rocketraft`.
pub fn find_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        bail!("--bin {}: no such file", path.display());
    }
    find_built(
        "rocketraft",
        "build it (cargo build --workspace --bins) or pass --bin",
    )
}

/// The file name of the raft-kv workload's server (`src/bin/rocketraft-raft-kv.rs`, a test
/// fixture of this crate, not part of the product).
pub const RAFT_KV_BINARY: &str = "rocketraft-raft-kv";

/// The [`RAFT_KV_BINARY`] to run: beside this executable (cargo builds every binary of this
/// crate together), else in `$CARGO_TARGET_DIR/{release,debug}`.
pub fn find_raft_kv_binary() -> anyhow::Result<PathBuf> {
    find_built(
        RAFT_KV_BINARY,
        "build it (cargo build -p rocketraft-jepsen --bins)",
    )
}

/// The executable `name` beside this one or its parent directory (a test runs from
/// `target/<profile>/deps`), else under `$CARGO_TARGET_DIR`; the error lists where it looked
/// and says `fix`.
fn find_built(name: &str, fix: &str) -> anyhow::Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join(name));
            if let Some(up) = dir.parent() {
                candidates.push(up.join(name));
            }
        }
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        let target = PathBuf::from(target);
        candidates.push(target.join("release").join(name));
        candidates.push(target.join("debug").join(name));
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "cannot find the {name} binary (looked at {}): {fix}",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// Waits up to `timeout` for `check` to succeed, polling every 250 ms.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
