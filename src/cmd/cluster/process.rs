//! The processes: spawned detached with their logs, alive only while `/proc/PID/cmdline` shows
//! the recorded command line, stopped with SIGTERM then SIGKILL.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::file::{ClusterFile, Kind, ProcessRecord};

/// How long `down` waits after SIGTERM before SIGKILL.
pub(super) const STOP_GRACE: Duration = Duration::from_secs(15);
/// Lines of a stderr log shown when a process fails to come up.
pub(super) const TAIL_LINES: usize = 20;
/// Bytes read from the end of a log to find those lines.
const TAIL_BYTES: u64 = 16 * 1024;

/// The command line of `pid`, or `None` if it has none (gone, a zombie, or not ours to read).
fn proc_cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None;
    }
    let mut args: Vec<String> = raw
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if args.last().is_some_and(String::is_empty) {
        args.pop();
    }
    Some(args)
}

/// A PID we may signal: never 0, 1 or anything that `kill` reads as a process group.
fn signalable(pid: u32) -> Option<libc::pid_t> {
    libc::pid_t::try_from(pid).ok().filter(|p| *p > 1)
}

/// True if `record`'s process runs: the PID exists and still shows the command line we started.
pub fn is_alive(record: &ProcessRecord) -> bool {
    let Some(pid) = signalable(record.pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists; `pid` is a single positive PID.
    let exists = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && proc_cmdline(record.pid).as_deref() == Some(record.argv.as_slice())
}

/// `name (pid N)` of every process of `file` that runs.
pub(super) fn running(file: &ClusterFile) -> Vec<String> {
    file.processes
        .iter()
        .filter(|p| is_alive(p))
        .map(|p| format!("{} (pid {})", p.name, p.pid))
        .collect()
}

fn send_signal(record: &ProcessRecord, signal: libc::c_int) {
    if let Some(pid) = signalable(record.pid) {
        // SAFETY: `pid` is a single positive PID whose command line we just checked.
        let rc = unsafe { libc::kill(pid, signal) };
        if rc != 0 {
            tracing::debug!(
                name = %record.name,
                pid,
                error = %std::io::Error::last_os_error(),
                "kill failed"
            );
        }
    }
}

/// How a process was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stopped {
    Term,
    Kill,
}

/// SIGTERM to the live ones among `records`, SIGKILL to whoever is still up after the grace
/// period. `reap` lets `cluster up` collect its own children so they do not linger as zombies.
pub(super) async fn stop_group(
    records: &[&ProcessRecord],
    grace: Duration,
    reap: &mut dyn FnMut(),
) -> Vec<(String, u32, Stopped)> {
    let live: Vec<&ProcessRecord> = records.iter().copied().filter(|r| is_alive(r)).collect();
    for r in &live {
        tracing::info!(name = %r.name, pid = r.pid, "SIGTERM");
        send_signal(r, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    loop {
        reap();
        if live.iter().all(|r| !is_alive(r)) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut out = Vec::new();
    for r in live {
        if is_alive(r) {
            tracing::warn!(name = %r.name, pid = r.pid, "still running after SIGTERM: SIGKILL");
            send_signal(r, libc::SIGKILL);
            out.push((r.name.clone(), r.pid, Stopped::Kill));
        } else {
            out.push((r.name.clone(), r.pid, Stopped::Term));
        }
    }
    if out.iter().any(|(_, _, s)| *s == Stopped::Kill) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && records.iter().any(|r| is_alive(r)) {
            reap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    out
}

/// Stops every live process of `file` (brokers, then the NameServer, then the controllers) and
/// marks all of them stopped.
pub(super) async fn stop_all(
    file: &mut ClusterFile,
    grace: Duration,
    reap: &mut dyn FnMut(),
) -> Vec<(String, u32, Stopped)> {
    let mut out = Vec::new();
    for kind in [Kind::Broker, Kind::Namesrv, Kind::Controller] {
        let group: Vec<&ProcessRecord> = file.processes.iter().filter(|p| p.role == kind).collect();
        out.extend(stop_group(&group, grace, reap).await);
    }
    for p in &mut file.processes {
        p.stopped = true;
    }
    out
}

/// The last `lines` lines of a log file (reads at most the last 16 KiB).
pub(super) fn tail(path: &Path, lines: usize) -> String {
    let read = || -> std::io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            let shown = all[start..].join("\n");
            if shown.trim().is_empty() {
                format!("({} is empty)", path.display())
            } else {
                shown
            }
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

pub(super) fn printed_ready(record: &ProcessRecord) -> bool {
    std::fs::read_to_string(&record.stdout_log)
        .map(|t| t.contains(" is ready"))
        .unwrap_or(false)
}

/// Moves `path` to `path.1` (one generation kept), so that a restart's logs start empty and
/// the previous run's remain readable.
fn rotate(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        let mut old = path.as_os_str().to_owned();
        old.push(".1");
        std::fs::rename(path, &old)
            .with_context(|| format!("cannot rotate the log {}", path.display()))?;
    }
    Ok(())
}

pub(super) fn spawn(record: &ProcessRecord) -> anyhow::Result<Child> {
    let (program, args) = record
        .argv
        .split_first()
        .context("empty command line in the plan")?;
    rotate(&record.stdout_log)?;
    rotate(&record.stderr_log)?;
    let stdout = File::create(&record.stdout_log)
        .with_context(|| format!("cannot create {}", record.stdout_log.display()))?;
    let stderr = File::create(&record.stderr_log)
        .with_context(|| format!("cannot create {}", record.stderr_log.display()))?;
    Command::new(program)
        .args(args)
        // Plain logs in files: no terminal colour codes.
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        // Its own process group: a Ctrl-C in the terminal of `cluster up` does not reach it.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {} ({program})", record.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    use super::super::file::Ports;

    #[test]
    fn liveness_needs_the_same_command_line() {
        let me = std::process::id();
        let argv = proc_cmdline(me).expect("our own cmdline");
        let mut record = ProcessRecord {
            name: "self".to_string(),
            role: Kind::Broker,
            broker_name: None,
            pid: me,
            ports: Ports {
                remoting: 1,
                raft: None,
                ha: None,
                metrics: None,
                console: None,
            },
            data_dir: PathBuf::new(),
            config: None,
            stdout_log: PathBuf::new(),
            stderr_log: PathBuf::new(),
            argv,
            stopped: false,
        };
        assert!(is_alive(&record));
        record.argv.push("--something-else".to_string());
        assert!(
            !is_alive(&record),
            "a recycled PID with another command line is dead"
        );
        record.argv.pop();
        for pid in [0, 1, u32::MAX] {
            record.pid = pid;
            assert!(!is_alive(&record), "pid {pid} is never ours");
        }
    }

    #[test]
    fn tail_shows_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).expect("write");
        assert_eq!(tail(&path, 2), "line 98\nline 99");
        assert!(tail(&dir.path().join("missing"), 2).contains("cannot read"));
    }
}
