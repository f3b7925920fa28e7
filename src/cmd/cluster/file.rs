//! `DIR/cluster.json`: the processes of a cluster, their ports, files and exact command lines.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// The file that lists the processes of a cluster directory.
pub(super) const CLUSTER_FILE: &str = "cluster.json";
/// Format version of `cluster.json`.
pub(super) const FILE_VERSION: u32 = 1;

/// What a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Controller,
    Namesrv,
    Broker,
}

impl Kind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Kind::Controller => "controller",
            Kind::Namesrv => "namesrv",
            Kind::Broker => "broker",
        }
    }
}

/// The ports one process listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    /// Remoting (clients, brokers, admin tools).
    pub remoting: u16,
    /// Raft gRPC between controllers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft: Option<u16>,
    /// HA replication between brokers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<u16>,
    /// The metrics endpoint (`http://127.0.0.1:PORT/metrics`); none in a cluster file from
    /// before metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<u16>,
    /// The web console (`http://127.0.0.1:PORT/`), served by the NameServer process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<u16>,
}

/// One process of the cluster, as `cluster.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// `controller-1`, `namesrv`, `broker-1`...; also its directory under the cluster dir.
    pub name: String,
    pub role: Kind,
    /// A broker's set (brokerName); none in a cluster file from before `--sets`, whose brokers
    /// all belong to the file's `broker_name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_name: Option<String>,
    /// 0 until started.
    pub pid: u32,
    pub ports: Ports,
    /// Where its data lives (Raft log, or the broker store; the NameServer keeps none).
    pub data_dir: PathBuf,
    /// Its config file (the NameServer runs on flags only).
    pub config: Option<PathBuf>,
    pub stdout_log: PathBuf,
    pub stderr_log: PathBuf,
    /// The exact command line it was started with: a PID counts as this process only while
    /// `/proc/PID/cmdline` shows it.
    pub argv: Vec<String>,
    /// `cluster down` stopped it (or `cluster up` gave up on it).
    #[serde(default)]
    pub stopped: bool,
}

/// `cluster.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFile {
    pub version: u32,
    pub dir: PathBuf,
    pub cluster_name: String,
    /// The (first) broker set's name; see [`ClusterFile::broker_sets`] for every set.
    pub broker_name: String,
    pub namesrv_addr: String,
    /// Controllers' Remoting addresses (what brokers get as `controller_addr`).
    pub controller_addrs: Vec<String>,
    pub started_at_ms: u64,
    pub processes: Vec<ProcessRecord>,
}

impl ClusterFile {
    /// The broker set of a broker's record.
    pub fn set_of<'a>(&'a self, record: &'a ProcessRecord) -> &'a str {
        record.broker_name.as_deref().unwrap_or(&self.broker_name)
    }

    /// Every broker set with its brokers, in the order of the file.
    pub fn broker_sets(&self) -> Vec<(String, Vec<&ProcessRecord>)> {
        let mut sets: Vec<(String, Vec<&ProcessRecord>)> = Vec::new();
        for p in self.processes.iter().filter(|p| p.role == Kind::Broker) {
            let name = self.set_of(p);
            match sets.iter_mut().find(|(n, _)| n == name) {
                Some((_, members)) => members.push(p),
                None => sets.push((name.to_string(), vec![p])),
            }
        }
        sets
    }

    pub(super) fn path(dir: &Path) -> PathBuf {
        dir.join(CLUSTER_FILE)
    }

    /// Reads `dir/cluster.json`; `Ok(None)` when there is none.
    pub fn load(dir: &Path) -> anyhow::Result<Option<ClusterFile>> {
        let path = Self::path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        let file: ClusterFile = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a cluster file written by `rocketraft cluster up`; move it away if the directory is yours",
                path.display()
            )
        })?;
        if file.version != FILE_VERSION {
            bail!(
                "{} has version {}, this binary reads {FILE_VERSION}: stop that cluster with the binary that started it",
                path.display(),
                file.version
            );
        }
        Ok(Some(file))
    }

    /// Like [`load`](Self::load), but a missing file is an error that says what to do.
    pub(super) fn load_existing(dir: &Path) -> anyhow::Result<ClusterFile> {
        Self::load(dir)?.with_context(|| {
            format!(
                "no {CLUSTER_FILE} in {}: start a cluster with `rocketraft cluster up --dir {}`",
                dir.display(),
                dir.display()
            )
        })
    }

    /// Writes atomically (temporary file, then rename), so a crash never leaves half a file.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let path = Self::path(dir);
        let tmp = dir.join(format!("{CLUSTER_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).context("cannot encode cluster.json")?;
        std::fs::write(&tmp, text + "\n")
            .with_context(|| format!("cannot write {} (is the disk full?)", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
    }
}
