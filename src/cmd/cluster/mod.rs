//! `rocketraft cluster up|status|restart|down`: a whole local cluster (a controller quorum, a NameServer
//! and one or more broker sets) as real, detached processes on loopback, started from this very binary and
//! tracked in `DIR/cluster.json` so that `status` and `down` find them again.
//!
//! The file records each process's exact command line: a PID is only ever signalled when
//! `/proc/PID/cmdline` still shows that command line, so a PID the kernel recycled for someone
//! else's process is reported dead and left alone. Linux only (it reads `/proc`).
//!
//! Here: the flags. The steps, one module each: [`layout`] (the ports), [`config`] (each
//! process's TOML), [`plan`] (what to start, or restart, and how), [`file`] (`cluster.json`),
//! [`process`] (spawning, liveness and signals), [`readiness`] (starting in order and waiting
//! until ready); the commands: [`up`], [`status`], [`restart`], [`down`].

pub(crate) mod auth;
mod config;
mod down;
mod file;
mod layout;
mod plan;
mod process;
mod readiness;
mod restart;
mod status;
mod up;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use rocketraft_broker::store::FlushDiskType;

pub use auth::{admin_credentials, read_credentials_file};
pub use file::{ClusterFile, Kind};
use layout::{check_port_free, PortLayout};

/// Deadline of one status question to a NameServer or controller.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Start a local cluster: controllers, a NameServer and one or more broker sets (--sets),
    /// each process a detached process of this binary, and wait until it is ready.
    ///
    /// Port layout (fixed, from --base-port B; --ports auto picks free ports instead):
    /// controller i (1-based) serves Remoting on B+2(i-1) and Raft on B+2(i-1)+1, so B..B+19;
    /// broker replica i serves Remoting on B+20+2(i-1) and HA on B+21+2(i-1), so B+20..B+39
    /// (with --sets, replicas are counted set after set: broker-a's, then broker-b's...);
    /// the NameServer listens on --namesrv-port. Metrics (`/metrics`): the NameServer on B+40,
    /// controller i on B+40+i, broker replica i on B+50+i; the web console (served by the
    /// NameServer process) on B+61. With the defaults: controllers 30000-30005, brokers
    /// 30020-30025, NameServer 9876, metrics 30040-30043 and 30051-30053, console 30061.
    ///
    /// Files under DIR: cluster.json (the processes), cluster-secret, admin-credentials (with
    /// --auth; the NameServer's console signs with it), and per process DIR/<name>/ with its
    /// config (controller.toml, namesrv.toml, broker.toml), data (data/ or store/), stdout.log
    /// and stderr.log.
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
    /// Restart every process of the running cluster in DIR one at a time (--rolling), as this
    /// binary: a rolling upgrade when it is a newer one. Controllers first (followers, then the
    /// leader after handing its leadership over), then the NameServers (each waited for until
    /// every broker registered again), then each broker set: its slaves (each waited for until
    /// it is back in the SyncStateSet), then a master transfer to an in-sync slave
    /// (CONTROLLER_ELECT_MASTER naming it), waited for until the new master takes writes, then
    /// the old master. Each stop is a SIGTERM (SIGKILL after 15 s). Refused unless every
    /// process runs and every broker set is whole. Progress is logged (--log info).
    Restart {
        /// The cluster directory given to `cluster up`.
        #[arg(long)]
        dir: PathBuf,
        /// One process at a time, keeping the cluster serving. Required: it is the only mode
        /// (to stop and start everything at once, run `cluster down` and `cluster up`).
        #[arg(long)]
        rolling: bool,
        /// Give up when one step (a process ready again, a replica back in sync, a new master
        /// taking writes, a NameServer complete again) takes longer than this.
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
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
    /// lists every broker set with a master (brokerId 0) and every replica; started = the ready
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
    /// Broker processes in each broker set, 1..=10 [default: 3].
    #[arg(long)]
    pub replicas: Option<u16>,
    /// Broker sets, 1..=26 [default: 1]: named broker-a, broker-b, ... (RocketMQ's naming),
    /// their processes broker-a-1, broker-a-2, ..., all under the one controller quorum and
    /// registered with the one NameServer. With more than one set, `admin topic create` puts
    /// the topic's queues on every set's master. The fixed port layout has ten broker slots
    /// shared by all sets (e.g. 2 sets x 5 replicas); use --ports auto for more.
    #[arg(long)]
    pub sets: Option<u16>,
    /// NameServers, 1..=5 [default: 1]: `namesrv`, `namesrv-2`, ...; every broker registers
    /// with each, and cluster.json's `namesrv_addr` lists them all (`a;b`), which clients, the
    /// proxy and the admin CLI take as it is and fail over among. In the fixed layout the
    /// extra ones follow the console (two ports each).
    #[arg(long)]
    pub namesrvs: Option<u16>,
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
    /// Broker set name (brokerName) [default: broker-a]; only with one set (--sets 2 or more
    /// names them broker-a, broker-b, ...).
    #[arg(long)]
    pub broker_name: Option<String>,
    /// Cluster name (brokerClusterName) [default: DefaultCluster].
    #[arg(long)]
    pub cluster_name: Option<String>,
    /// ASYNC_FLUSH or SYNC_FLUSH [default: ASYNC_FLUSH].
    #[arg(long)]
    pub flush: Option<FlushDiskType>,
    /// CommitLog segment size in bytes, a multiple of 4096 [default: 64 MiB; a production
    /// broker's default is 1 GiB].
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
    /// Run without a cluster secret: any process that reaches a port may then register a
    /// broker, send role notifications or Raft RPCs (as in Apache RocketMQ). By default a new
    /// cluster gets a random secret in every config file and in `<dir>/cluster-secret`.
    #[arg(long)]
    pub no_cluster_secret: bool,
    /// Turn on ACL 2.0 on every NameServer and broker (authenticationEnabled and
    /// authorizationEnabled): unsigned Remoting requests are refused. A generated administrator
    /// (`admin`, a Super user: initAuthenticationUser) and the servers' own user
    /// (innerClientAuthenticationCredentials) go into every config; the administrator's keys into
    /// `<dir>/admin-credentials` (owner-only), which `cluster status` signs with. Off by default,
    /// as in RocketMQ.
    #[arg(long)]
    pub auth: bool,
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
    fn sets(&self) -> u16 {
        self.sets.unwrap_or(1)
    }
    /// The broker set names, set after set: `--broker-name` (or broker-a) for one set, else
    /// broker-a, broker-b, ...
    fn broker_names(&self) -> anyhow::Result<Vec<String>> {
        match (self.sets(), &self.broker_name) {
            (1, _) => Ok(vec![self.broker_name().to_string()]),
            (n, Some(name)) => anyhow::bail!(
                "--broker-name {name} names the one broker set; with --sets {n} the sets are broker-a, broker-b, ...: drop --broker-name or --sets"
            ),
            (n, None) => Ok((0..usize::from(n)).map(layout::set_name).collect()),
        }
    }
    fn cluster_name(&self) -> &str {
        self.cluster_name
            .as_deref()
            .unwrap_or(rocketraft_common::consts::DEFAULT_CLUSTER)
    }
    fn flush(&self) -> FlushDiskType {
        self.flush.unwrap_or_default()
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
        flag(self.sets.is_some(), "--sets");
        flag(self.namesrvs.is_some(), "--namesrvs");
        flag(self.namesrv_port.is_some(), "--namesrv-port");
        flag(self.base_port.is_some(), "--base-port");
        flag(self.ports.is_some(), "--ports");
        flag(self.broker_name.is_some(), "--broker-name");
        flag(self.cluster_name.is_some(), "--cluster-name");
        flag(self.flush.is_some(), "--flush");
        flag(self.no_cluster_secret, "--no-cluster-secret");
        flag(self.auth, "--auth");
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
                let base = self.base_port.unwrap_or(30000);
                let layout = PortLayout::fixed_sets(
                    self.namesrv_port.unwrap_or(9876),
                    base,
                    self.controllers(),
                    self.sets(),
                    self.replicas(),
                )?
                .with_namesrvs(self.namesrvs.unwrap_or(1), Some(base))?;
                for (what, port) in layout.labelled() {
                    check_port_free(
                        port,
                        &what,
                        "pick another --base-port / --namesrv-port, or --ports auto",
                    )?;
                }
                Ok(layout)
            }
            PortMode::Auto => PortLayout::auto_sets(
                self.namesrv_port,
                self.controllers(),
                self.sets(),
                self.replicas(),
            )?
            .with_namesrvs(self.namesrvs.unwrap_or(1), None),
        }
    }
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

/// Global flags of the `cluster` invocation that the started processes inherit.
#[derive(Debug, Clone, Default)]
pub struct Inherited {
    /// `--log` filter.
    pub log: String,
    /// `--log-format`.
    pub log_format: crate::LogFormat,
    /// `--threads`.
    pub threads: Option<usize>,
}

pub async fn run(command: ClusterCommand, inherited: Inherited) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Up(args) => up::up(args, inherited).await,
        ClusterCommand::Status { dir, json } => status::status(&dir, json).await,
        ClusterCommand::Restart {
            dir,
            rolling,
            timeout_secs,
        } => {
            if !rolling {
                anyhow::bail!(
                    "cluster restart needs --rolling (one process at a time); to stop and start everything at once, run `cluster down` and `cluster up`"
                );
            }
            restart::restart_rolling(&dir, Duration::from_secs(timeout_secs)).await
        }
        ClusterCommand::Down { dir } => down::down(&dir).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        up: UpArgs,
    }

    pub(super) fn up_args(extra: &[&str]) -> UpArgs {
        let mut argv = vec!["x", "--dir", "/tmp/c"];
        argv.extend_from_slice(extra);
        Wrap::try_parse_from(argv).expect("valid args").up
    }
}
