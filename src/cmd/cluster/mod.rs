//! `rocketraft cluster up|status|down`: a whole local cluster (a controller quorum, a NameServer
//! and one broker set) as real, detached processes on loopback, started from this very binary and
//! tracked in `DIR/cluster.json` so that `status` and `down` find them again.
//!
//! The file records each process's exact command line: a PID is only ever signalled when
//! `/proc/PID/cmdline` still shows that command line, so a PID the kernel recycled for someone
//! else's process is reported dead and left alone. Linux only (it reads `/proc`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use rocketraft_broker::BrokerConfig;
use rocketraft_common::protocol::ClusterInfo;
use rocketraft_controller::client::ControllerClient;
use rocketraft_controller::ControllerConfig;
use rocketraft_remoting::api::MqClientApi;
use rocketraft_remoting::{ClientConfig, RemotingClient};
use serde::{Deserialize, Serialize};

/// The file that lists the processes of a cluster directory.
const CLUSTER_FILE: &str = "cluster.json";
/// Format version of `cluster.json`.
const FILE_VERSION: u32 = 1;
/// Ports reserved per role in the fixed layout: two per member, so ten members at most.
const SLOTS_PER_ROLE: u16 = 10;
/// First port offset (from --base-port) of the brokers in the fixed layout.
const BROKER_PORT_OFFSET: u16 = 2 * SLOTS_PER_ROLE;
/// Ports the fixed layout spans from --base-port.
const LAYOUT_SPAN: u16 = 2 * BROKER_PORT_OFFSET;
/// How often readiness and process exit are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long `down` waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// Lines of a stderr log shown when a process fails to come up.
const TAIL_LINES: usize = 20;
/// Bytes read from the end of a log to find those lines.
const TAIL_BYTES: u64 = 16 * 1024;
/// Deadline of one status question to a NameServer or controller.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Start a local cluster: controllers, a NameServer and one broker set, each a detached
    /// process of this binary, and wait until it is ready.
    ///
    /// Port layout (fixed, from --base-port B; --ports auto picks free ports instead):
    /// controller i (1-based) serves Remoting on B+2(i-1) and Raft on B+2(i-1)+1, so B..B+19;
    /// broker replica i serves Remoting on B+20+2(i-1) and HA on B+21+2(i-1), so B+20..B+39;
    /// the NameServer listens on --namesrv-port. With the defaults: controllers 30000-30005,
    /// brokers 30020-30025, NameServer 9876.
    ///
    /// Files under DIR: cluster.json (the processes), and per process DIR/<name>/ with its
    /// config (controller.toml, broker.toml), data (data/ or store/), stdout.log and stderr.log.
    Up(UpArgs),
    /// Show each process of the cluster in DIR: alive or dead, and its role (controller
    /// leader/follower, broker master/slave as the NameServer registers it).
    Status {
        /// The cluster directory given to `cluster up`.
        #[arg(long)]
        dir: PathBuf,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop every process of the cluster in DIR: SIGTERM, then SIGKILL after 15 s. Brokers go
    /// first, then the NameServer, then the controllers. Data stays; `cluster up` restarts it.
    Down {
        /// The cluster directory given to `cluster up`.
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// Cluster directory: configs, data, logs and cluster.json. If it already holds a stopped
    /// cluster, that cluster restarts with its recorded ports and its config files (edit them to
    /// change settings; the options below are refused then, remove DIR to start afresh).
    #[arg(long)]
    pub dir: PathBuf,
    /// Give up (and stop what was started) when the cluster is not ready after this long.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
    /// What "ready" means: registered = every process printed its ready line AND the NameServer
    /// lists the broker set with a master (brokerId 0) and every replica; started = the ready
    /// lines only.
    #[arg(long, value_enum, default_value_t = WaitFor::Registered)]
    pub wait_for: WaitFor,
    #[command(flatten)]
    pub spec: ClusterSpec,
}

/// What a new cluster looks like. Every option is optional so that a restart can tell the
/// options it would ignore from those never given.
#[derive(Args, Debug, Clone, Default)]
pub struct ClusterSpec {
    /// Controller quorum size, 1..=10 [default: 3; odd sizes tolerate the most failures].
    #[arg(long)]
    pub controllers: Option<u16>,
    /// Broker processes in the broker set, 1..=10 [default: 3].
    #[arg(long)]
    pub replicas: Option<u16>,
    /// NameServer port [default: 9876; with --ports auto, a free port].
    #[arg(long)]
    pub namesrv_port: Option<u16>,
    /// First port of the fixed layout (see above) [default: 30000].
    #[arg(long)]
    pub base_port: Option<u16>,
    /// fixed: the layout above; auto: free loopback ports picked now, recorded in cluster.json
    /// [default: fixed].
    #[arg(long, value_enum)]
    pub ports: Option<PortMode>,
    /// Broker set name (brokerName) [default: broker-a].
    #[arg(long)]
    pub broker_name: Option<String>,
    /// Cluster name (brokerClusterName) [default: DefaultCluster].
    #[arg(long)]
    pub cluster_name: Option<String>,
    /// ASYNC_FLUSH or SYNC_FLUSH [default: ASYNC_FLUSH].
    #[arg(long, value_parser = parse_flush)]
    pub flush: Option<String>,
    /// CommitLog segment size in bytes, a multiple of 4096 [default: the broker's, 1 GiB].
    #[arg(long)]
    pub segment_size: Option<u64>,
    /// Replicas (master included) that must hold a message before a send succeeds [default:
    /// the broker's, 1].
    #[arg(long)]
    pub min_in_sync_replicas: Option<usize>,
    /// A TOML line merged into every broker's config, e.g. 'slave_timeout_ms = 5000' or
    /// 'store.flush_interval_ms = 100' (dotted keys reach tables). Repeatable; wins over the
    /// generated keys.
    #[arg(long)]
    pub extra_broker_config: Vec<String>,
    /// Same for every controller's config, e.g. 'scan_interval_ms = 1000' or
    /// 'raft.heartbeat_interval_ms = 100'. Repeatable.
    #[arg(long)]
    pub extra_controller_config: Vec<String>,
}

impl ClusterSpec {
    fn controllers(&self) -> u16 {
        self.controllers.unwrap_or(3)
    }
    fn replicas(&self) -> u16 {
        self.replicas.unwrap_or(3)
    }
    fn broker_name(&self) -> &str {
        self.broker_name.as_deref().unwrap_or("broker-a")
    }
    fn cluster_name(&self) -> &str {
        self.cluster_name
            .as_deref()
            .unwrap_or(rocketraft_common::consts::DEFAULT_CLUSTER)
    }
    fn flush(&self) -> &str {
        self.flush.as_deref().unwrap_or("ASYNC_FLUSH")
    }

    /// The options given on the command line, by flag name.
    fn given(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut flag = |given: bool, name: &'static str| {
            if given {
                out.push(name);
            }
        };
        flag(self.controllers.is_some(), "--controllers");
        flag(self.replicas.is_some(), "--replicas");
        flag(self.namesrv_port.is_some(), "--namesrv-port");
        flag(self.base_port.is_some(), "--base-port");
        flag(self.ports.is_some(), "--ports");
        flag(self.broker_name.is_some(), "--broker-name");
        flag(self.cluster_name.is_some(), "--cluster-name");
        flag(self.flush.is_some(), "--flush");
        flag(self.segment_size.is_some(), "--segment-size");
        flag(
            self.min_in_sync_replicas.is_some(),
            "--min-in-sync-replicas",
        );
        flag(
            !self.extra_broker_config.is_empty(),
            "--extra-broker-config",
        );
        flag(
            !self.extra_controller_config.is_empty(),
            "--extra-controller-config",
        );
        out
    }

    /// The ports of a new cluster; the fixed layout is checked free now.
    fn layout(&self) -> anyhow::Result<PortLayout> {
        match self.ports.unwrap_or(PortMode::Fixed) {
            PortMode::Fixed => {
                let layout = PortLayout::fixed(
                    self.namesrv_port.unwrap_or(9876),
                    self.base_port.unwrap_or(30000),
                    self.controllers(),
                    self.replicas(),
                )?;
                for (what, port) in layout.labelled() {
                    check_port_free(
                        port,
                        &what,
                        "pick another --base-port / --namesrv-port, or --ports auto",
                    )?;
                }
                Ok(layout)
            }
            PortMode::Auto => {
                PortLayout::auto(self.namesrv_port, self.controllers(), self.replicas())
            }
        }
    }
}

fn check_port_free(port: u16, what: &str, fix: &str) -> anyhow::Result<()> {
    TcpListener::bind(("127.0.0.1", port))
        .map(drop)
        .with_context(|| format!("port {port} ({what}) is in use: {fix}"))
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortMode {
    Fixed,
    Auto,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitFor {
    Registered,
    Started,
}

fn parse_flush(s: &str) -> Result<String, String> {
    match s.to_ascii_uppercase().replace('-', "_").as_str() {
        "ASYNC_FLUSH" | "ASYNC" => Ok("ASYNC_FLUSH".to_string()),
        "SYNC_FLUSH" | "SYNC" => Ok("SYNC_FLUSH".to_string()),
        other => Err(format!(
            "unknown flush type {other:?}: use ASYNC_FLUSH or SYNC_FLUSH"
        )),
    }
}

/// Global flags of the `cluster` invocation that the started processes inherit.
#[derive(Debug, Clone, Default)]
pub struct Inherited {
    /// `--log` filter.
    pub log: String,
    /// `--threads`.
    pub threads: Option<usize>,
}

/// What a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Controller,
    Namesrv,
    Broker,
}

impl Kind {
    fn as_str(self) -> &'static str {
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
}

/// Every port of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortLayout {
    pub namesrv: u16,
    /// (Remoting, Raft) per controller, node id = index + 1.
    pub controllers: Vec<(u16, u16)>,
    /// (Remoting, HA) per broker replica.
    pub brokers: Vec<(u16, u16)>,
}

fn check_counts(controllers: u16, replicas: u16) -> anyhow::Result<()> {
    if !(1..=SLOTS_PER_ROLE).contains(&controllers) {
        bail!("--controllers {controllers}: use 1..={SLOTS_PER_ROLE} (3 tolerates one failure)");
    }
    if !(1..=SLOTS_PER_ROLE).contains(&replicas) {
        bail!("--replicas {replicas}: use 1..={SLOTS_PER_ROLE}");
    }
    Ok(())
}

impl PortLayout {
    /// The documented fixed layout from `base`.
    pub fn fixed(
        namesrv: u16,
        base: u16,
        controllers: u16,
        replicas: u16,
    ) -> anyhow::Result<PortLayout> {
        check_counts(controllers, replicas)?;
        if base == 0 || u32::from(base) + u32::from(LAYOUT_SPAN) > u32::from(u16::MAX) + 1 {
            bail!(
                "--base-port {base}: the layout needs {LAYOUT_SPAN} ports from it below 65536; pick e.g. 30000"
            );
        }
        if namesrv == 0 {
            bail!("--namesrv-port 0: give a port, or use --ports auto");
        }
        let last = u32::from(base) + u32::from(LAYOUT_SPAN) - 1;
        if (u32::from(base)..=last).contains(&u32::from(namesrv)) {
            bail!(
                "--namesrv-port {namesrv} lies inside the layout {base}..={last}; move --base-port or --namesrv-port"
            );
        }
        let pair = |offset: u16, i: u16| (base + offset + 2 * i, base + offset + 2 * i + 1);
        Ok(PortLayout {
            namesrv,
            controllers: (0..controllers).map(|i| pair(0, i)).collect(),
            brokers: (0..replicas).map(|i| pair(BROKER_PORT_OFFSET, i)).collect(),
        })
    }

    /// Free loopback ports, all held open together while picking so that none repeats.
    pub fn auto(namesrv: Option<u16>, controllers: u16, replicas: u16) -> anyhow::Result<Self> {
        check_counts(controllers, replicas)?;
        let wanted = 2 * usize::from(controllers) + 2 * usize::from(replicas) + 1;
        let mut held = Vec::with_capacity(wanted);
        let mut ports = Vec::with_capacity(wanted);
        while ports.len() < wanted {
            let listener = TcpListener::bind("127.0.0.1:0")
                .context("cannot bind a loopback port to pick free ports")?;
            let port = listener
                .local_addr()
                .context("cannot read a bound port")?
                .port();
            if Some(port) != namesrv {
                ports.push(port);
            }
            held.push(listener);
        }
        drop(held);
        let mut next = ports.into_iter();
        let mut take = || next.next().context("ran out of picked ports");
        let namesrv = match namesrv {
            Some(p) => p,
            None => take()?,
        };
        let mut layout = PortLayout {
            namesrv,
            controllers: Vec::new(),
            brokers: Vec::new(),
        };
        for _ in 0..controllers {
            layout.controllers.push((take()?, take()?));
        }
        for _ in 0..replicas {
            layout.brokers.push((take()?, take()?));
        }
        Ok(layout)
    }

    /// (what, port) for every port, for messages.
    fn labelled(&self) -> Vec<(String, u16)> {
        let mut out = vec![("namesrv Remoting".to_string(), self.namesrv)];
        for (i, (r, raft)) in self.controllers.iter().enumerate() {
            out.push((format!("controller-{} Remoting", i + 1), *r));
            out.push((format!("controller-{} Raft", i + 1), *raft));
        }
        for (i, (r, ha)) in self.brokers.iter().enumerate() {
            out.push((format!("broker-{} Remoting", i + 1), *r));
            out.push((format!("broker-{} HA", i + 1), *ha));
        }
        out
    }
}

fn loopback(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// One process of the cluster, as `cluster.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// `controller-1`, `namesrv`, `broker-1`...; also its directory under the cluster dir.
    pub name: String,
    pub role: Kind,
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
    pub broker_name: String,
    pub namesrv_addr: String,
    /// Controllers' Remoting addresses (what brokers get as `controller_addr`).
    pub controller_addrs: Vec<String>,
    pub started_at_ms: u64,
    pub processes: Vec<ProcessRecord>,
}

impl ClusterFile {
    fn path(dir: &Path) -> PathBuf {
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
    fn load_existing(dir: &Path) -> anyhow::Result<ClusterFile> {
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

/// A process to start: its record (pid 0) and the config file to write first.
#[derive(Debug, Clone)]
pub struct PlannedProcess {
    pub record: ProcessRecord,
    pub config_text: Option<String>,
}

/// The whole cluster to start, computed without touching the disk or the network.
#[derive(Debug, Clone)]
pub struct Plan {
    pub file: ClusterFile,
    pub processes: Vec<PlannedProcess>,
}

/// Parses `--extra-*-config` lines and merges them (deeply) over `table`.
fn merge_extra(table: &mut toml::Table, extra: &[String], flag: &str) -> anyhow::Result<()> {
    for line in extra {
        let parsed: toml::Table = toml::from_str(line).with_context(|| {
            format!(
                "{flag} {line:?} is not a TOML `key = value` line (quote strings: key = \"text\")"
            )
        })?;
        merge_table(table, parsed);
    }
    Ok(())
}

fn merge_table(into: &mut toml::Table, from: toml::Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(new)) => {
                merge_table(existing, new)
            }
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

fn path_string(path: &Path) -> anyhow::Result<String> {
    path.to_str().map(str::to_string).with_context(|| {
        format!(
            "{} is not valid UTF-8: use a plain directory name",
            path.display()
        )
    })
}

fn members_table(members: impl Iterator<Item = (usize, String)>) -> toml::Table {
    members
        .map(|(id, addr)| (id.to_string(), toml::Value::String(addr)))
        .collect()
}

/// The controller TOML of node `id` (1-based), checked by parsing it back.
pub fn controller_toml(
    id: usize,
    layout: &PortLayout,
    data_dir: &Path,
    extra: &[String],
) -> anyhow::Result<String> {
    let (remoting, raft) = layout
        .controllers
        .get(id.wrapping_sub(1))
        .copied()
        .with_context(|| format!("no controller {id} in the layout"))?;
    let mut raft_table = toml::Table::new();
    raft_table.insert("node_id".into(), toml::Value::Integer(id as i64));
    raft_table.insert("listen".into(), toml::Value::String(loopback(raft)));
    raft_table.insert(
        "data_dir".into(),
        toml::Value::String(path_string(data_dir)?),
    );
    raft_table.insert(
        "initial_members".into(),
        toml::Value::Table(members_table(
            layout
                .controllers
                .iter()
                .enumerate()
                .map(|(i, (_, raft))| (i + 1, loopback(*raft))),
        )),
    );
    let mut table = toml::Table::new();
    table.insert("listen".into(), toml::Value::String(loopback(remoting)));
    table.insert(
        "remoting_peers".into(),
        toml::Value::Table(members_table(
            layout
                .controllers
                .iter()
                .enumerate()
                .map(|(i, (remoting, _))| (i + 1, loopback(*remoting))),
        )),
    );
    table.insert("raft".into(), toml::Value::Table(raft_table));
    merge_extra(&mut table, extra, "--extra-controller-config")?;
    let text = toml::to_string(&table).context("cannot encode a controller config")?;
    let _: ControllerConfig = toml::from_str(&text).with_context(|| {
        format!("the controller config would be invalid (check --extra-controller-config):\n{text}")
    })?;
    Ok(text)
}

/// The broker TOML of replica `index` (1-based), checked by parsing and validating it back.
pub fn broker_toml(
    index: usize,
    spec: &ClusterSpec,
    layout: &PortLayout,
    store_root: &Path,
) -> anyhow::Result<String> {
    let (remoting, ha) = layout
        .brokers
        .get(index.wrapping_sub(1))
        .copied()
        .with_context(|| format!("no broker {index} in the layout"))?;
    let controller_addr = layout
        .controllers
        .iter()
        .map(|(r, _)| loopback(*r))
        .collect::<Vec<_>>()
        .join(";");
    let mut store = toml::Table::new();
    store.insert(
        "store_root".into(),
        toml::Value::String(path_string(store_root)?),
    );
    store.insert(
        "flush_disk_type".into(),
        toml::Value::String(spec.flush().to_string()),
    );
    if let Some(size) = spec.segment_size {
        let size = i64::try_from(size).context("--segment-size is too large")?;
        store.insert("commitlog_segment_size".into(), toml::Value::Integer(size));
    }
    let mut table = toml::Table::new();
    let mut put = |k: &str, v: toml::Value| {
        table.insert(k.to_string(), v);
    };
    put(
        "broker_name",
        toml::Value::String(spec.broker_name().to_string()),
    );
    put(
        "cluster_name",
        toml::Value::String(spec.cluster_name().to_string()),
    );
    put("listen", toml::Value::String(loopback(remoting)));
    put("ha_port", toml::Value::Integer(i64::from(ha)));
    put(
        "namesrv_addr",
        toml::Value::String(loopback(layout.namesrv)),
    );
    put("enable_controller_mode", toml::Value::Boolean(true));
    put("controller_addr", toml::Value::String(controller_addr));
    if let Some(n) = spec.min_in_sync_replicas {
        if n == 0 || n > layout.brokers.len() {
            bail!(
                "--min-in-sync-replicas {n}: use 1..={} (the replicas of the set)",
                layout.brokers.len()
            );
        }
        put("min_in_sync_replicas", toml::Value::Integer(n as i64));
    }
    put("store", toml::Value::Table(store));
    merge_extra(
        &mut table,
        &spec.extra_broker_config,
        "--extra-broker-config",
    )?;
    let text = toml::to_string(&table).context("cannot encode a broker config")?;
    let config: BrokerConfig = toml::from_str(&text).with_context(|| {
        format!("the broker config would be invalid (check --extra-broker-config):\n{text}")
    })?;
    config
        .validate()
        .map_err(anyhow::Error::msg)
        .context("the broker config would be invalid")?;
    config
        .store
        .validate()
        .map_err(|e| anyhow::anyhow!("the broker store config would be invalid: {e}"))?;
    Ok(text)
}

/// The command line of `record`'s process: this binary, the inherited global flags, and the
/// subcommand with the record's config file (or, for the NameServer, its listen address).
fn command_line(
    record: &ProcessRecord,
    exe: &str,
    inherited: &Inherited,
) -> anyhow::Result<Vec<String>> {
    let mut argv = vec![exe.to_string()];
    if !inherited.log.is_empty() {
        argv.extend(["--log".to_string(), inherited.log.clone()]);
    }
    if let Some(threads) = inherited.threads {
        argv.extend(["--threads".to_string(), threads.to_string()]);
    }
    match (record.role, &record.config) {
        (Kind::Namesrv, _) => argv.extend([
            "namesrv".to_string(),
            "--listen".to_string(),
            loopback(record.ports.remoting),
        ]),
        (kind, Some(config)) => argv.extend([
            kind.as_str().to_string(),
            "--config".to_string(),
            path_string(config)?,
        ]),
        (kind, None) => bail!(
            "{} in {CLUSTER_FILE} has no config file, which a {} needs: remove the directory to start afresh",
            record.name,
            kind.as_str()
        ),
    }
    Ok(argv)
}

/// Everything `cluster up` will write and start for a new cluster. `dir` must be absolute
/// (configs name paths).
pub fn plan(
    spec: &ClusterSpec,
    layout: &PortLayout,
    dir: &Path,
    exe: &str,
    inherited: &Inherited,
) -> anyhow::Result<Plan> {
    let mut processes = Vec::new();
    let mut add = |name: String,
                   role,
                   ports,
                   data_dir,
                   config: Option<PathBuf>,
                   config_text|
     -> anyhow::Result<()> {
        let mut record = ProcessRecord {
            stdout_log: dir.join(&name).join("stdout.log"),
            stderr_log: dir.join(&name).join("stderr.log"),
            name,
            role,
            pid: 0,
            ports,
            data_dir,
            config,
            argv: Vec::new(),
            stopped: false,
        };
        record.argv = command_line(&record, exe, inherited)?;
        processes.push(PlannedProcess {
            record,
            config_text,
        });
        Ok(())
    };
    for (i, (remoting, raft)) in layout.controllers.iter().enumerate() {
        let id = i + 1;
        let name = format!("controller-{id}");
        let home = dir.join(&name);
        let data_dir = home.join("data");
        let text = controller_toml(id, layout, &data_dir, &spec.extra_controller_config)?;
        let ports = Ports {
            remoting: *remoting,
            raft: Some(*raft),
            ha: None,
        };
        let config = home.join("controller.toml");
        add(
            name,
            Kind::Controller,
            ports,
            data_dir,
            Some(config),
            Some(text),
        )?;
    }
    let ports = Ports {
        remoting: layout.namesrv,
        raft: None,
        ha: None,
    };
    add(
        "namesrv".to_string(),
        Kind::Namesrv,
        ports,
        dir.join("namesrv"),
        None,
        None,
    )?;
    for (i, (remoting, ha)) in layout.brokers.iter().enumerate() {
        let index = i + 1;
        let name = format!("broker-{index}");
        let home = dir.join(&name);
        let store_root = home.join("store");
        let text = broker_toml(index, spec, layout, &store_root)?;
        let ports = Ports {
            remoting: *remoting,
            raft: None,
            ha: Some(*ha),
        };
        let config = home.join("broker.toml");
        add(
            name,
            Kind::Broker,
            ports,
            store_root,
            Some(config),
            Some(text),
        )?;
    }
    let file = ClusterFile {
        version: FILE_VERSION,
        dir: dir.to_path_buf(),
        cluster_name: spec.cluster_name().to_string(),
        broker_name: spec.broker_name().to_string(),
        namesrv_addr: loopback(layout.namesrv),
        controller_addrs: layout
            .controllers
            .iter()
            .map(|(r, _)| loopback(*r))
            .collect(),
        started_at_ms: now_ms(),
        processes: processes.iter().map(|p| p.record.clone()).collect(),
    };
    Ok(Plan { file, processes })
}

/// Prepares a stopped cluster's file for a restart: same processes, ports and config files,
/// command lines refreshed for this binary and these global flags.
pub fn restart_plan(
    mut file: ClusterFile,
    dir: &Path,
    exe: &str,
    inherited: &Inherited,
) -> anyhow::Result<ClusterFile> {
    if file.dir != dir {
        bail!(
            "{} was written for {}, not {}: move the directory back, or remove {} to start afresh",
            ClusterFile::path(dir).display(),
            file.dir.display(),
            dir.display(),
            ClusterFile::path(dir).display()
        );
    }
    for p in &mut file.processes {
        if let Some(config) = &p.config {
            if !config.is_file() {
                bail!(
                    "{} of {} is missing: restore it, or remove {} to start afresh",
                    config.display(),
                    p.name,
                    dir.display()
                );
            }
        }
        p.argv = command_line(p, exe, inherited)?;
        p.pid = 0;
        p.stopped = false;
    }
    file.started_at_ms = now_ms();
    Ok(file)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Processes: liveness through /proc, signals through libc.

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
enum Stopped {
    Term,
    Kill,
}

/// SIGTERM to the live ones among `records`, SIGKILL to whoever is still up after the grace
/// period. `reap` lets `cluster up` collect its own children so they do not linger as zombies.
async fn stop_group(
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
async fn stop_all(
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
fn tail(path: &Path, lines: usize) -> String {
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

fn printed_ready(record: &ProcessRecord) -> bool {
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

fn spawn(record: &ProcessRecord) -> anyhow::Result<Child> {
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

// ---------------------------------------------------------------------------------------------
// Readiness.

/// What the NameServer shows of the broker set, against what `up` started.
fn registration_gap(info: &ClusterInfo, file: &ClusterFile) -> Option<String> {
    let Some(set) = info.broker_addr_table.get(&file.broker_name) else {
        return Some(format!(
            "the NameServer lists no broker set {:?} yet",
            file.broker_name
        ));
    };
    if set.master_addr().is_none() {
        return Some(format!(
            "broker set {:?} has no master (brokerId 0) registered; registered: {:?}",
            file.broker_name, set.broker_addrs
        ));
    }
    let missing: Vec<String> = file
        .processes
        .iter()
        .filter(|p| p.role == Kind::Broker)
        .map(|p| loopback(p.ports.remoting))
        .filter(|addr| !set.broker_addrs.values().any(|a| a == addr))
        .collect();
    if missing.is_empty() {
        None
    } else {
        Some(format!(
            "broker set {:?} misses replicas {missing:?}; registered: {:?}",
            file.broker_name, set.broker_addrs
        ))
    }
}

/// Why the cluster is not ready yet, naming the process to look at.
enum NotReady {
    /// The process has not printed its ready line.
    Process(usize),
    /// The NameServer does not show the broker set complete.
    Registration(String),
}

struct Starter {
    dir: PathBuf,
    file: ClusterFile,
    /// Our children, by index in `file.processes`.
    children: Vec<Option<Child>>,
}

impl Starter {
    /// Collects exited children (they would stay zombies while `up` runs).
    fn reap(children: &mut [Option<Child>]) {
        for child in children.iter_mut().flatten() {
            let _ = child.try_wait();
        }
    }

    fn start(&mut self, index: usize) -> anyhow::Result<()> {
        let child = spawn(&self.file.processes[index])?;
        self.file.processes[index].pid = child.id();
        self.file.processes[index].stopped = false;
        tracing::info!(
            name = %self.file.processes[index].name,
            pid = child.id(),
            "started"
        );
        self.children[index] = Some(child);
        // Recorded at once: if `up` itself dies now, `down` still finds this process.
        self.file.save(&self.dir)
    }

    /// An exited child, as an error with its stderr tail.
    fn check_exited(&mut self, indices: &[usize]) -> anyhow::Result<()> {
        for &i in indices {
            if let Some(child) = self.children[i].as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let r = &self.file.processes[i];
                    bail!(
                        "{} exited ({status}) before it was ready; last lines of {}:\n{}",
                        r.name,
                        r.stderr_log.display(),
                        tail(&r.stderr_log, TAIL_LINES)
                    );
                }
            }
        }
        Ok(())
    }

    /// Waits until every process in `indices` printed its ready line and, if `registered`,
    /// until the NameServer lists the whole broker set with a master.
    async fn wait_ready(
        &mut self,
        indices: &[usize],
        registered: bool,
        (deadline, timeout): (Instant, Duration),
        api: &MqClientApi,
    ) -> anyhow::Result<()> {
        loop {
            self.check_exited(indices)?;
            let pending = indices
                .iter()
                .copied()
                .find(|&i| !printed_ready(&self.file.processes[i]));
            let not_ready = match pending {
                Some(i) => Some(NotReady::Process(i)),
                None if registered => match api.cluster_info(&self.file.namesrv_addr).await {
                    Ok(info) => registration_gap(&info, &self.file).map(NotReady::Registration),
                    Err(e) => Some(NotReady::Registration(format!(
                        "the NameServer at {} does not answer: {e}",
                        self.file.namesrv_addr
                    ))),
                },
                None => None,
            };
            let Some(not_ready) = not_ready else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                bail!(self.describe(not_ready, timeout));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    fn describe(&self, not_ready: NotReady, timeout: Duration) -> String {
        let secs = timeout.as_secs();
        match not_ready {
            NotReady::Process(i) => {
                let r = &self.file.processes[i];
                format!(
                    "{} (pid {}) did not print its ready line within {secs} s (raise --timeout-secs if the machine is slow); last lines of {}:\n{}",
                    r.name,
                    r.pid,
                    r.stderr_log.display(),
                    tail(&r.stderr_log, TAIL_LINES)
                )
            }
            NotReady::Registration(gap) => {
                let mut text = format!(
                    "the broker set is not registered within {secs} s: {gap} (raise --timeout-secs, or pass --wait-for started to skip this check)"
                );
                for r in self
                    .file
                    .processes
                    .iter()
                    .filter(|p| p.role == Kind::Broker)
                {
                    text.push_str(&format!(
                        "\nlast lines of {} ({}):\n{}",
                        r.name,
                        r.stderr_log.display(),
                        tail(&r.stderr_log, TAIL_LINES / 2)
                    ));
                }
                text
            }
        }
    }

    async fn run(&mut self, wait_for: WaitFor, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let api = MqClientApi::new(RemotingClient::new(ClientConfig::default()), QUERY_TIMEOUT);
        // Controllers and the NameServer first: a broker registers once at start and then
        // only every 30 s, so the NameServer must be up before the brokers.
        let first: Vec<usize> = (0..self.file.processes.len())
            .filter(|&i| self.file.processes[i].role != Kind::Broker)
            .collect();
        let brokers: Vec<usize> = (0..self.file.processes.len())
            .filter(|&i| self.file.processes[i].role == Kind::Broker)
            .collect();
        for &i in &first {
            self.start(i)?;
        }
        self.wait_ready(&first, false, (deadline, timeout), &api)
            .await?;
        for &i in &brokers {
            self.start(i)?;
        }
        let all: Vec<usize> = (0..self.file.processes.len()).collect();
        self.wait_ready(
            &all,
            wait_for == WaitFor::Registered,
            (deadline, timeout),
            &api,
        )
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// Commands.

pub async fn run(command: ClusterCommand, inherited: Inherited) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Up(args) => up(args, inherited).await,
        ClusterCommand::Status { dir, json } => status(&dir, json).await,
        ClusterCommand::Down { dir } => down(&dir).await,
    }
}

async fn up(args: UpArgs, inherited: Inherited) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create the cluster directory {}", args.dir.display()))?;
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", args.dir.display()))?;
    let exe = std::env::current_exe().context("cannot find this binary to start the processes")?;
    let exe = path_string(&exe)?;
    let file = match ClusterFile::load(&dir)? {
        Some(existing) => {
            let alive: Vec<String> = existing
                .processes
                .iter()
                .filter(|p| is_alive(p))
                .map(|p| format!("{} (pid {})", p.name, p.pid))
                .collect();
            if !alive.is_empty() {
                bail!(
                    "the cluster in {} is already up ({}); run `rocketraft cluster down --dir {}` first",
                    dir.display(),
                    alive.join(", "),
                    dir.display()
                );
            }
            let given = args.spec.given();
            if !given.is_empty() {
                bail!(
                    "{} holds a stopped cluster, which restarts with its recorded ports and config files; drop {} (edit the TOML files under {} to change settings), or remove {} to start afresh",
                    dir.display(),
                    given.join(", "),
                    dir.display(),
                    dir.display()
                );
            }
            let file = restart_plan(existing, &dir, &exe, &inherited)?;
            for p in &file.processes {
                let check = |port: u16, what: &str| {
                    check_port_free(
                        port,
                        &format!("{} {what}", p.name),
                        "stop what uses it; the cluster's ports are recorded in cluster.json",
                    )
                };
                check(p.ports.remoting, "Remoting")?;
                if let Some(port) = p.ports.raft {
                    check(port, "Raft")?;
                }
                if let Some(port) = p.ports.ha {
                    check(port, "HA")?;
                }
            }
            println!(
                "restarting the cluster recorded in {}",
                ClusterFile::path(&dir).display()
            );
            file
        }
        None => {
            let layout = args.spec.layout()?;
            let plan = plan(&args.spec, &layout, &dir, &exe, &inherited)?;
            for p in &plan.processes {
                let home = dir.join(&p.record.name);
                std::fs::create_dir_all(&home)
                    .with_context(|| format!("cannot create {}", home.display()))?;
                if let (Some(path), Some(text)) = (&p.record.config, &p.config_text) {
                    std::fs::write(path, text)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                }
            }
            plan.file
        }
    };
    let count = file.processes.len();
    let mut starter = Starter {
        dir: dir.clone(),
        file,
        children: (0..count).map(|_| None).collect(),
    };
    starter.file.save(&dir)?;
    let result = starter
        .run(args.wait_for, Duration::from_secs(args.timeout_secs))
        .await;
    if let Err(e) = result {
        let children = &mut starter.children;
        let stopped = stop_all(&mut starter.file, STOP_GRACE, &mut || {
            Starter::reap(children)
        })
        .await;
        Starter::reap(&mut starter.children);
        if let Err(save) = starter.file.save(&dir) {
            tracing::warn!(error = %save, "cannot record the stopped processes");
        }
        let names: Vec<String> = stopped.iter().map(|(n, _, _)| n.clone()).collect();
        bail!(
            "{e:#}\ncluster up in {} failed; stopped what it had started: {}. The next `cluster up --dir {}` restarts it as recorded; remove the directory to start afresh with other options",
            dir.display(),
            if names.is_empty() {
                "nothing was running".to_string()
            } else {
                names.join(", ")
            },
            dir.display()
        );
    }
    println!(
        "rocketraft cluster is up: NameServer {} ({} controllers at {}, broker set {} with {} replicas; {} in {})",
        starter.file.namesrv_addr,
        starter.file.controller_addrs.len(),
        starter.file.controller_addrs.join(";"),
        starter.file.broker_name,
        starter
            .file
            .processes
            .iter()
            .filter(|p| p.role == Kind::Broker)
            .count(),
        CLUSTER_FILE,
        dir.display()
    );
    Ok(())
}

/// One row of `cluster status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRow {
    pub name: String,
    pub kind: Kind,
    /// controller: leader|follower; broker: master|slave|unregistered; namesrv: serving;
    /// dead: dead; unknown when the question got no answer.
    pub role: String,
    /// The id the NameServer registered a broker under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_id: Option<i64>,
    pub pid: u32,
    pub alive: bool,
    pub ports: Ports,
    pub data_dir: PathBuf,
    /// The stderr log (where the process logs).
    pub log: PathBuf,
    pub config: Option<PathBuf>,
}

async fn status_rows(file: &ClusterFile) -> Vec<StatusRow> {
    let remoting = RemotingClient::new(ClientConfig::default());
    let api = MqClientApi::new(remoting.clone(), QUERY_TIMEOUT);
    let controllers = ControllerClient::new(remoting, QUERY_TIMEOUT);
    let namesrv_alive = file
        .processes
        .iter()
        .any(|p| p.role == Kind::Namesrv && is_alive(p));
    let info = if namesrv_alive {
        api.cluster_info(&file.namesrv_addr).await.ok()
    } else {
        None
    };
    let mut rows = Vec::new();
    for p in &file.processes {
        let alive = is_alive(p);
        let mut broker_id = None;
        let role = if !alive {
            "dead".to_string()
        } else {
            match p.role {
                Kind::Namesrv => "serving".to_string(),
                Kind::Controller => match controllers.metadata(&loopback(p.ports.remoting)).await {
                    Ok(m) if m.is_leader => "leader".to_string(),
                    Ok(_) => "follower".to_string(),
                    Err(_) => "unknown".to_string(),
                },
                Kind::Broker => match &info {
                    None => "unknown".to_string(),
                    Some(info) => {
                        let addr = loopback(p.ports.remoting);
                        broker_id = info
                            .broker_addr_table
                            .get(&file.broker_name)
                            .and_then(|set| {
                                set.broker_addrs
                                    .iter()
                                    .find(|(_, a)| **a == addr)
                                    .map(|(id, _)| *id)
                            });
                        match broker_id {
                            Some(rocketraft_common::consts::MASTER_ID) => "master".to_string(),
                            Some(_) => "slave".to_string(),
                            None => "unregistered".to_string(),
                        }
                    }
                },
            }
        };
        rows.push(StatusRow {
            name: p.name.clone(),
            kind: p.role,
            role,
            broker_id,
            pid: p.pid,
            alive,
            ports: p.ports,
            data_dir: p.data_dir.clone(),
            log: p.stderr_log.clone(),
            config: p.config.clone(),
        });
    }
    rows
}

async fn status(dir: &Path, json: bool) -> anyhow::Result<()> {
    let file = ClusterFile::load_existing(dir)?;
    let rows = status_rows(&file).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "cluster {} in {}: NameServer {}",
        file.cluster_name,
        file.dir.display(),
        file.namesrv_addr
    );
    println!(
        "{:<14} {:<10} {:<12} {:>8} {:<6} {:<24} log",
        "name", "kind", "role", "pid", "alive", "ports"
    );
    for r in &rows {
        let mut ports = format!("remoting {}", r.ports.remoting);
        if let Some(p) = r.ports.raft {
            ports.push_str(&format!(" raft {p}"));
        }
        if let Some(p) = r.ports.ha {
            ports.push_str(&format!(" ha {p}"));
        }
        println!(
            "{:<14} {:<10} {:<12} {:>8} {:<6} {:<24} {}",
            r.name,
            r.kind.as_str(),
            r.role,
            r.pid,
            if r.alive { "yes" } else { "no" },
            ports,
            r.log.display()
        );
    }
    Ok(())
}

async fn down(dir: &Path) -> anyhow::Result<()> {
    let mut file = ClusterFile::load_existing(dir)?;
    let stopped = stop_all(&mut file, STOP_GRACE, &mut || {}).await;
    file.save(dir)?;
    if stopped.is_empty() {
        println!(
            "nothing to stop: no process of the cluster in {} is running",
            dir.display()
        );
        return Ok(());
    }
    for (name, pid, how) in &stopped {
        println!(
            "stopped {name} (pid {pid}){}",
            match how {
                Stopped::Term => "",
                Stopped::Kill => " with SIGKILL: it ignored SIGTERM for 15 s",
            }
        );
    }
    let still: Vec<String> = file
        .processes
        .iter()
        .filter(|p| is_alive(p))
        .map(|p| format!("{} (pid {})", p.name, p.pid))
        .collect();
    if !still.is_empty() {
        bail!(
            "still running after SIGKILL: {}; check them with `ps` (another user's process?)",
            still.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::BTreeMap;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        up: UpArgs,
    }

    fn up_args(extra: &[&str]) -> UpArgs {
        let mut argv = vec!["x", "--dir", "/tmp/c"];
        argv.extend_from_slice(extra);
        Wrap::try_parse_from(argv).expect("valid args").up
    }

    #[test]
    fn fixed_layout_is_the_documented_one() {
        let l = PortLayout::fixed(9876, 30000, 3, 3).expect("layout");
        assert_eq!(l.namesrv, 9876);
        assert_eq!(
            l.controllers,
            vec![(30000, 30001), (30002, 30003), (30004, 30005)]
        );
        assert_eq!(
            l.brokers,
            vec![(30020, 30021), (30022, 30023), (30024, 30025)]
        );
        let l = PortLayout::fixed(9876, 40000, 10, 10).expect("layout");
        assert_eq!(l.controllers[9], (40018, 40019));
        assert_eq!(l.brokers[9], (40038, 40039));
        let mut all: Vec<u16> = l.labelled().iter().map(|(_, p)| *p).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 41, "no port is used twice");
    }

    #[test]
    fn fixed_layout_rejects_bad_input() {
        assert!(PortLayout::fixed(9876, 30000, 0, 3).is_err());
        assert!(PortLayout::fixed(9876, 30000, 3, 11).is_err());
        assert!(PortLayout::fixed(9876, 65500, 3, 3).is_err());
        assert!(PortLayout::fixed(9876, 0, 3, 3).is_err());
        assert!(PortLayout::fixed(30010, 30000, 3, 3).is_err());
        assert!(PortLayout::fixed(9876, 65496, 3, 3).is_ok());
    }

    #[test]
    fn auto_layout_picks_distinct_ports() {
        let l = PortLayout::auto(None, 3, 3).expect("layout");
        let mut all: Vec<u16> = l.labelled().iter().map(|(_, p)| *p).collect();
        assert_eq!(all.len(), 13);
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 13);
        let l = PortLayout::auto(Some(9876), 1, 1).expect("layout");
        assert_eq!(l.namesrv, 9876);
        assert!(!l.controllers.iter().any(|(a, b)| *a == 9876 || *b == 9876));
    }

    #[test]
    fn controller_config_forms_a_quorum() {
        let l = PortLayout::fixed(9876, 30000, 3, 3).expect("layout");
        let text = controller_toml(
            2,
            &l,
            Path::new("/d/controller-2/data"),
            &[
                "scan_interval_ms = 700".to_string(),
                "raft.heartbeat_interval_ms = 111".to_string(),
            ],
        )
        .expect("toml");
        let c: ControllerConfig = toml::from_str(&text).expect("parses");
        assert_eq!(c.listen.to_string(), "127.0.0.1:30002");
        assert_eq!(c.raft.node_id, 2);
        assert_eq!(c.raft.listen.to_string(), "127.0.0.1:30003");
        assert_eq!(c.raft.data_dir, PathBuf::from("/d/controller-2/data"));
        assert_eq!(
            c.raft.initial_members,
            BTreeMap::from([
                (1, "127.0.0.1:30001".to_string()),
                (2, "127.0.0.1:30003".to_string()),
                (3, "127.0.0.1:30005".to_string()),
            ])
        );
        assert_eq!(
            c.remoting_peers.get(&3).map(String::as_str),
            Some("127.0.0.1:30004")
        );
        assert_eq!(c.scan_interval_ms, 700);
        assert_eq!(c.raft.heartbeat_interval_ms, 111);
        assert!(controller_toml(4, &l, Path::new("/d"), &[]).is_err());
        assert!(controller_toml(0, &l, Path::new("/d"), &[]).is_err());
        assert!(controller_toml(1, &l, Path::new("/d"), &["not toml".to_string()]).is_err());
    }

    #[test]
    fn broker_config_joins_the_controllers() {
        let args = up_args(&[
            "--flush",
            "sync",
            "--segment-size",
            "1048576",
            "--min-in-sync-replicas",
            "2",
            "--extra-broker-config",
            "slave_timeout_ms = 4000",
            "--extra-broker-config",
            "store.flush_interval_ms = 100",
        ]);
        let l = PortLayout::fixed(9876, 30000, 3, 3).expect("layout");
        let text = broker_toml(3, &args.spec, &l, Path::new("/d/broker-3/store")).expect("toml");
        let b: BrokerConfig = toml::from_str(&text).expect("parses");
        assert_eq!(b.broker_name, "broker-a");
        assert_eq!(b.cluster_name, "DefaultCluster");
        assert_eq!(b.listen.to_string(), "127.0.0.1:30024");
        assert_eq!(b.ha_port, 30025);
        assert_eq!(b.namesrv_addr, "127.0.0.1:9876");
        assert!(b.enable_controller_mode);
        assert_eq!(
            b.controller_addr,
            "127.0.0.1:30000;127.0.0.1:30002;127.0.0.1:30004"
        );
        assert_eq!(b.min_in_sync_replicas, 2);
        assert_eq!(b.slave_timeout_ms, 4000);
        assert_eq!(b.store.store_root, PathBuf::from("/d/broker-3/store"));
        assert_eq!(
            b.store.flush_disk_type,
            rocketraft_broker::store::FlushDiskType::SyncFlush
        );
        assert_eq!(b.store.commitlog_segment_size, 1 << 20);
        assert_eq!(b.store.flush_interval_ms, 100);

        let bad = up_args(&["--extra-broker-config", "no_such_key = 1"]);
        assert!(broker_toml(1, &bad.spec, &l, Path::new("/d")).is_err());
        let bad = up_args(&["--min-in-sync-replicas", "4"]);
        assert!(broker_toml(1, &bad.spec, &l, Path::new("/d")).is_err());
        let bad = up_args(&["--segment-size", "1000"]);
        assert!(broker_toml(1, &bad.spec, &l, Path::new("/d")).is_err());
        assert_eq!(up_args(&[]).spec.flush(), "ASYNC_FLUSH");
        assert!(up_args(&[]).spec.given().is_empty());
        assert_eq!(
            up_args(&["--replicas", "2", "--extra-controller-config", "a = 1"])
                .spec
                .given(),
            ["--replicas", "--extra-controller-config"]
        );
    }

    #[test]
    fn plan_and_cluster_file_round_trip() {
        let args = up_args(&[]);
        let l = PortLayout::fixed(9876, 30000, 3, 3).expect("layout");
        let inherited = Inherited {
            log: "warn".to_string(),
            threads: Some(2),
        };
        let plan = plan(
            &args.spec,
            &l,
            Path::new("/d"),
            "/bin/rocketraft",
            &inherited,
        )
        .expect("plan");
        let names: Vec<&str> = plan
            .file
            .processes
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "controller-1",
                "controller-2",
                "controller-3",
                "namesrv",
                "broker-1",
                "broker-2",
                "broker-3"
            ]
        );
        let b2 = &plan.file.processes[5];
        assert_eq!(b2.role, Kind::Broker);
        assert_eq!(
            b2.argv,
            [
                "/bin/rocketraft",
                "--log",
                "warn",
                "--threads",
                "2",
                "broker",
                "--config",
                "/d/broker-2/broker.toml"
            ]
        );
        assert_eq!(b2.stderr_log, PathBuf::from("/d/broker-2/stderr.log"));
        assert_eq!(b2.data_dir, PathBuf::from("/d/broker-2/store"));
        assert_eq!(
            b2.ports,
            Ports {
                remoting: 30022,
                raft: None,
                ha: Some(30023)
            }
        );
        let ns = &plan.file.processes[3];
        assert_eq!(&ns.argv[5..], ["namesrv", "--listen", "127.0.0.1:9876"]);
        assert!(ns.config.is_none());

        let dir = tempfile::tempdir().expect("tempdir");
        assert!(ClusterFile::load(dir.path())
            .expect("no file is fine")
            .is_none());
        assert!(ClusterFile::load_existing(dir.path()).is_err());
        plan.file.save(dir.path()).expect("save");
        let back = ClusterFile::load(dir.path())
            .expect("load")
            .expect("present");
        assert_eq!(back, plan.file);
        let text = std::fs::read_to_string(dir.path().join(CLUSTER_FILE)).expect("read");
        assert!(text.contains("\"role\": \"controller\""), "{text}");
        std::fs::write(dir.path().join(CLUSTER_FILE), "{").expect("write");
        assert!(ClusterFile::load(dir.path()).is_err());
    }

    #[test]
    fn restart_keeps_ports_and_configs_and_refreshes_command_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let args = up_args(&[]);
        let l = PortLayout::auto(None, 1, 2).expect("layout");
        let old = Inherited {
            log: "debug".to_string(),
            threads: None,
        };
        let mut file = plan(&args.spec, &l, root, "/old/rocketraft", &old)
            .expect("plan")
            .file;
        for (i, p) in file.processes.iter_mut().enumerate() {
            p.pid = 1000 + i as u32;
            p.stopped = true;
        }
        // The config files must still be there.
        let missing = restart_plan(file.clone(), root, "/new/rocketraft", &old);
        assert!(missing.is_err());
        for p in &file.processes {
            if let Some(config) = &p.config {
                std::fs::create_dir_all(config.parent().expect("parent")).expect("mkdir");
                std::fs::write(config, "").expect("write");
            }
        }
        let new = Inherited {
            log: "warn".to_string(),
            threads: Some(1),
        };
        let again = restart_plan(file.clone(), root, "/new/rocketraft", &new).expect("restart");
        assert_eq!(again.processes.len(), 4);
        for (before, after) in file.processes.iter().zip(&again.processes) {
            assert_eq!(before.ports, after.ports);
            assert_eq!(before.config, after.config);
            assert_eq!(after.pid, 0);
            assert!(!after.stopped);
            assert_eq!(
                &after.argv[..5],
                ["/new/rocketraft", "--log", "warn", "--threads", "1"]
            );
            assert_eq!(after.argv[5..], before.argv[3..], "same subcommand");
        }
        assert!(restart_plan(file, Path::new("/elsewhere"), "/x", &new).is_err());
    }

    #[test]
    fn liveness_needs_the_same_command_line() {
        let me = std::process::id();
        let argv = proc_cmdline(me).expect("our own cmdline");
        let mut record = ProcessRecord {
            name: "self".to_string(),
            role: Kind::Broker,
            pid: me,
            ports: Ports {
                remoting: 1,
                raft: None,
                ha: None,
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
    fn registration_gap_wants_a_master_and_every_replica() {
        let args = up_args(&[]);
        let l = PortLayout::fixed(9876, 30000, 3, 3).expect("layout");
        let plan =
            plan(&args.spec, &l, Path::new("/d"), "/x", &Inherited::default()).expect("plan");
        let mut info = ClusterInfo::default();
        assert!(registration_gap(&info, &plan.file).is_some());
        let set = rocketraft_common::protocol::BrokerData {
            cluster: "DefaultCluster".to_string(),
            broker_name: "broker-a".to_string(),
            broker_addrs: BTreeMap::from([
                (1, "127.0.0.1:30020".to_string()),
                (2, "127.0.0.1:30022".to_string()),
                (3, "127.0.0.1:30024".to_string()),
            ]),
            zone_name: None,
            enable_acting_master: false,
        };
        info.broker_addr_table
            .insert("broker-a".to_string(), set.clone());
        let gap = registration_gap(&info, &plan.file).expect("no master");
        assert!(gap.contains("no master"), "{gap}");
        let mut with_master = set;
        with_master.broker_addrs.remove(&1);
        with_master
            .broker_addrs
            .insert(0, "127.0.0.1:30020".to_string());
        info.broker_addr_table
            .insert("broker-a".to_string(), with_master.clone());
        assert_eq!(registration_gap(&info, &plan.file), None);
        with_master.broker_addrs.remove(&3);
        info.broker_addr_table
            .insert("broker-a".to_string(), with_master);
        let gap = registration_gap(&info, &plan.file).expect("missing one");
        assert!(gap.contains("127.0.0.1:30024"), "{gap}");
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
