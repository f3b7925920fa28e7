//! What the harness tests share, written once.
//!
//! The one lock: a harness run (`broken_build`, `harness_failover`, `harness_smoke`, `raft_kv`)
//! builds the private network (namespaces on 10.77.0.x) and a cluster of real processes: it
//! holds the lock alone ([`serial`]); two clusters at once would also overload a two-core
//! machine. The power-loss tests (each a `rocketraft dev` on its own LazyFs mount) hold it
//! together ([`shared`]): side by side, as when they were a test binary of their own, but never
//! beside a harness run.
//!
//! A harness run: whether this machine can make one ([`skip_reason`], [`skipped`]), the `rocketraft-jepsen
//! run` itself with its report read back ([`Harness::run`], [`Run`]), and the check that it
//! tore its namespaces down ([`Run::assert_no_namespace_left`]).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use rocketraft_jepsen::record::{read_events, Event};

static LOCK: RwLock<()> = RwLock::new(());

/// One harness run at a time, and no power-loss test beside it.
pub fn serial() -> RwLockWriteGuard<'static, ()> {
    LOCK.write().unwrap_or_else(PoisonError::into_inner)
}

/// Power-loss tests side by side, never beside a harness run.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    LOCK.read().unwrap_or_else(PoisonError::into_inner)
}

/// `target/<profile>/rocketraft`, found from this test's executable (`target/<profile>/deps/..`)
/// or `$CARGO_TARGET_DIR`.
pub fn rocketraft_binary() -> PathBuf {
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            candidates.push(profile_dir.join("rocketraft"));
        }
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(&target).join("debug/rocketraft"));
        candidates.push(PathBuf::from(&target).join("release/rocketraft"));
    }
    match candidates.iter().find(|p| p.is_file()) {
        Some(path) => path.clone(),
        None => panic!(
            "the rocketraft binary is missing (looked at {candidates:?}): run `cargo build --workspace --bins` first"
        ),
    }
}

/// The tools a harness run needs besides `ip`: nftables (partitions, packet loss, the latency
/// relays' redirects) and libfaketime (clock skew). `scripts/setup.sh` installs both.
const TOOLS: [(&str, &str); 2] = [("nft", "nftables"), ("faketime", "faketime")];

/// Why this machine cannot make a harness run (not root, no working `ip netns`, a tool
/// missing), if it cannot. Call it holding [`serial`]: the probe namespace is named after this
/// process, so two probes at once collide.
pub fn skip_reason() -> Option<String> {
    if let Err(why) = rocketraft_jepsen::net::netns_available() {
        return Some(format!("network namespaces unavailable ({why})"));
    }
    let missing: Vec<String> = TOOLS
        .iter()
        .filter(|(tool, _)| {
            !Command::new(tool)
                .arg("--version")
                .output()
                .is_ok_and(|out| out.status.success())
        })
        .map(|(tool, package)| format!("{tool} (Debian package {package})"))
        .collect();
    (!missing.is_empty()).then(|| format!("missing {}", missing.join(", ")))
}

/// Whether the calling test must skip its harness run `what` ([`skip_reason`]): then it says so
/// through [`rocketraft_common::testing::skip`] (a `SKIPPED:` line scripts/test.sh counts; a
/// failure with the reason under `CI=true`, where every test must run) and returns.
pub fn skipped(what: &str) -> bool {
    match skip_reason() {
        Some(why) => {
            rocketraft_common::testing::skip(&format!("{what}: {why}"));
            true
        }
        None => false,
    }
}

/// One `rocketraft-jepsen run` of a test: `workload` under `nemesis` for `time_limit` seconds
/// of faults from `seed`, its report in a temporary directory under /tmp.
#[derive(Default)]
pub struct Harness<'a> {
    pub workload: &'a str,
    pub nemesis: &'a str,
    pub time_limit: u64,
    pub seed: u64,
    /// More flags (the deliberately broken builds' `--unsafe-...`).
    pub extra: &'a [&'a str],
    /// Pass `--bin` with [`rocketraft_binary`] (which fails the test at once when it is
    /// missing); without it the harness looks for the binary itself (raft-kv does not use it).
    pub bin: bool,
    /// The report directory's name prefix.
    pub prefix: &'a str,
}

/// What one finished run left behind.
pub struct Run {
    pub status: ExitStatus,
    pub verdicts: serde_json::Value,
    /// `verdicts.json` as written, for failure messages.
    pub verdicts_text: String,
    /// `history.jsonl`.
    pub events: Vec<Event>,
    /// The report directory, removed when dropped (`out.keep()` keeps it).
    pub out: tempfile::TempDir,
    /// The harness's PID, which names its namespaces.
    pub pid: u32,
}

impl Harness<'_> {
    /// Runs the harness to its end and reads its verdicts and history back (a run that wrote
    /// no verdicts fails the test with its exit status).
    pub fn run(&self) -> Run {
        let binary = self.bin.then(rocketraft_binary);
        let out = tempfile::Builder::new()
            .prefix(self.prefix)
            .tempdir_in("/tmp")
            .expect("a temporary report directory");
        let mut command = Command::new(env!("CARGO_BIN_EXE_rocketraft-jepsen"));
        command
            .args([
                "run",
                "--workload",
                self.workload,
                "--nemesis",
                self.nemesis,
            ])
            .args([
                "--time-limit",
                &self.time_limit.to_string(),
                "--seed",
                &self.seed.to_string(),
            ])
            .args(self.extra)
            .arg("--out")
            .arg(out.path());
        if let Some(binary) = &binary {
            command.arg("--bin").arg(binary);
        }
        let mut harness = command.spawn().expect("rocketraft-jepsen runs");
        let pid = harness.id();
        let status = harness.wait().expect("rocketraft-jepsen ends");
        let verdicts_text = std::fs::read_to_string(out.path().join("verdicts.json"))
            .unwrap_or_else(|e| panic!("no verdicts.json ({e}); exit status {status}"));
        let verdicts: serde_json::Value =
            serde_json::from_str(&verdicts_text).expect("verdicts are JSON");
        let history =
            std::fs::read_to_string(out.path().join("history.jsonl")).expect("history.jsonl");
        let events = read_events(&history).expect("the history parses");
        Run {
            status,
            verdicts,
            verdicts_text,
            events,
            out,
            pid,
        }
    }
}

impl Run {
    /// How many `nemesis` faults started (its `start-<nemesis>` events).
    pub fn started(&self, nemesis: &str) -> usize {
        let f = format!("start-{nemesis}");
        self.events
            .iter()
            .filter(|e| e.is_nemesis() && e.f == f)
            .count()
    }

    /// Everything was torn down: no namespace of this run is left.
    pub fn assert_no_namespace_left(&self) {
        let listing = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list");
        let listing = String::from_utf8_lossy(&listing.stdout);
        let own = format!("{}{}-", rocketraft_jepsen::net::PREFIX, self.pid);
        assert!(
            !listing.lines().any(|l| l.starts_with(&own)),
            "namespaces of this run ({own}*) left behind:\n{listing}"
        );
    }
}
