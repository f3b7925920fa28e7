//! # rocketraft-jepsen — Jepsen-style testing for Rocketraft
//!
//! The **linearizability checker**, usable on its own:
//! - [`history`]: the history model (a process invokes an operation, which completes `ok`,
//!   `fail` or `info`), our JSONL format (documented there), and parsers for it, Jepsen/Knossos
//!   EDN, Porcupine's etcd logs and Porcupine's kv files, the format detected from the content.
//!   [`edn`] is the small EDN reader behind them, [`value`] the data they carry.
//! - [`linearizability`]: WGL search (Wing & Gong, with Lowe's memoization of (linearized set,
//!   state)), split by key, with subsumption for operations of unknown outcome, two search orders
//!   raced on two threads, a time budget and a memory bound (past either the verdict is
//!   *unknown*), and a counterexample for invalid histories.
//! - [`model`]: the sequential specifications: a CAS register, a key-value store, and the
//!   controller's replica info (master, epochs, SyncStateSet; its operations are documented in
//!   [`model::replica_info`]). [`model::Model`] is the seam for more.
//! - The `rocketraft-jepsen check [--model M] [--format F] [--timeout-secs S] [--json] FILE`
//!   command (`src/main.rs`): exit 0 valid, 1 invalid, 2 unknown, 3 when the input cannot be read
//!   or checked.
//!
//! It agrees with the verdicts of the public histories kept in `tests/histories` (Porcupine's
//! etcd and kv files) and of Knossos' small EDN examples, and is self-tested on hand-made anomalies
//! (stale read, lost acknowledged write, two masters in one epoch) and on randomized histories of a
//! simulated atomic store (`tests/`).
//!
//! # The harness: `rocketraft-jepsen run --workload W --nemesis N --time-limit S --seed X`
//! (root; [`run`]). It builds a private network ([`net`]: a bridge in its own namespace, one
//! namespace per process, nftables for faults), starts real `rocketraft` processes in it
//! ([`nodes`], [`cluster`]: 3 controllers, a NameServer, a broker set of 3 replicas in
//! controller mode, a gRPC proxy for the queue workload (or with `--with-proxy`); the
//! harness's own sockets live in a `client` namespace; scaled out with `--sets N --replicas R
//! --namesrvs M --proxies P`: N broker sets under the one controller quorum, each node its own
//! host), runs a workload while the [`nemesis`]
//! injects faults on a seeded timeline ([`rng`]), heals, waits for recovery, checks, and
//! writes a report ([`report`]): the history ([`record`], JSONL), `verdicts.json`,
//! `index.html` with inline SVG charts, node logs under `nodes/<name>/node.log`. Everything
//! started is torn down on exit, error, Ctrl-C and SIGTERM; namespaces of a crashed run are
//! removed by the next one.
//! - Workloads: `queue` ([`workload`]: sends over Remoting, POP+ack, FIFO groups, final drain;
//!   [`grpc_queue`]: the same through the proxy, SendMessage / ReceiveMessage / AckMessage,
//!   FIFO message groups; every operation records its `path`) checked by [`queue_check`]
//!   (lost, unexpected, duplicated, recovered, FIFO order) and [`split_brain`] (two masters
//!   writing the same queue position, offsets going back in real time); `controller`
//!   ([`controller_workload`]) checked for linearizability with the replica-info model;
//!   `raft-kv` ([`kv_workload`]: three `rocketraft-raft-kv` members of a key-value store on
//!   the `raft/` library, read / write / compare-and-set on five keys from random nodes)
//!   checked for linearizability one compare-and-set register per key.
//! - Nemeses: partition (halves, isolate the controller leader or the broker master, majority
//!   ring, bridge, one-way), partition-master, partition-controller, partition-ring,
//!   partition-bridge, kill (one, controller majority, broker master, leader and master
//!   together, the proxy), pause, loss, clock (libfaketime), transfer (designated master election), latency ([`latency`]: TCP relays in
//!   the nodes' namespaces behind an nft redirect, since `tc netem` is missing); and aimed at
//!   the controller quorum: pause-controller (SIGSTOP of the leader), kill-controller (kill -9
//!   of a random controller), transfer-controller (Raft leadership transfer), flip-flop
//!   (leadership away and back within a broker heartbeat timeout), clock-step (the wall clock of
//!   a running controller or broker stepped through its libfaketime file, checked in its log);
//!   and power-loss (a broker's store or a controller's data on a [`lazyfs`] FUSE mount hosted
//!   by the harness loses every byte and new file it did not sync, the node is killed -9 and
//!   restarted; [`nemesis::PowerMounts`]).
//! - Power-loss testing ([`lazyfs`]): a FUSE filesystem (the `fuser` crate, mounted without
//!   libfuse as root) that keeps written bytes in a volatile layer until `fsync`/`msync` and drops
//!   them on a simulated power cut, in the spirit of Jepsen's LazyFS.
//!   `tests/harness/power_loss.rs` cuts the power of a real `rocketraft dev` 100 times under
//!   SYNC_FLUSH sends (no acknowledged message may be lost), under ASYNC_FLUSH (a consistent
//!   prefix), and right after each metadata step (election and Raft log, epoch file, topic
//!   creation, checkpoint, truncation).
//! - Per-fault unavailability ([`report::fault_impacts`]): the gaps of 2 s or more between
//!   acknowledged operations each fault window caused, with the nearest lease / route /
//!   election / heartbeat-timeout line of the node logs as the likely cause; in the summary,
//!   `verdicts.json` (`faults`) and the HTML report.
//! - Self-tests (`tests/harness/broken_build.rs`): brokers that acknowledge before replicating
//!   (`ROCKETRAFT_UNSAFE_ACK_BEFORE_REPLICATION=1`) lose messages under `partition-master`, and
//!   controllers with `stale_reads = true` give non-linearizable reads under
//!   `partition-controller`: both runs must be INVALID.

pub mod cluster;
pub mod controller_workload;
pub mod edn;
pub mod grpc_queue;
pub mod history;
pub mod kv_workload;
pub mod latency;
pub mod lazyfs;
mod lifecycle;
pub mod linearizability;
pub mod model;
pub mod nemesis;
pub mod net;
pub mod nodes;
pub mod queue_check;
pub mod record;
pub mod report;
pub mod rng;
pub mod run;
pub mod split_brain;
pub mod value;
pub mod workload;

use history::{Operation, PairStats};
use linearizability::{check, CheckOptions, Report};
use model::cas_register::CasRegister;
use model::kv::Kv;
use model::replica_info::ReplicaInfo;
use model::{ModelError, ModelName};

/// Checks paired operations against the model called `name`. For etcd logs pass
/// `etcd_semantics`: a failed cas then tells that the register did not hold the expected value
/// (see [`CasRegister::failed_cas_observes`]).
pub fn check_with(
    name: ModelName,
    operations: &[Operation],
    options: &CheckOptions,
    etcd_semantics: bool,
) -> Result<Report, ModelError> {
    match name {
        ModelName::CasRegister => {
            let model = CasRegister {
                failed_cas_observes: etcd_semantics,
            };
            check(&model, operations, options)
        }
        ModelName::Kv => check(&Kv, operations, options),
        ModelName::ReplicaInfo => check(&ReplicaInfo, operations, options),
    }
}

/// Everything the command line does short of printing: parse `text` (format detected unless
/// given), pair, pick the model (inferred from the operations unless given), check.
pub fn check_text(
    text: &str,
    format: Option<history::Format>,
    model: Option<ModelName>,
    options: &CheckOptions,
) -> Result<Checked, CheckError> {
    let format = match format {
        Some(format) => format,
        None => history::Format::detect(text)?,
    };
    let parsed = history::parse(text, format)?;
    let (operations, pair_stats) = history::pair(&parsed.ops)?;
    let model = match model {
        Some(model) => model,
        None => ModelName::infer(&operations).ok_or(CheckError::NoModel)?,
    };
    let etcd_semantics = format == history::Format::EtcdLog;
    let report = check_with(model, &operations, options, etcd_semantics)?;
    Ok(Checked {
        format,
        model,
        events: parsed.ops.len(),
        skipped: parsed.skipped,
        pair_stats,
        report,
    })
}

/// What [`check_text`] found.
#[derive(Debug, Clone)]
pub struct Checked {
    pub format: history::Format,
    pub model: ModelName,
    /// Client events read.
    pub events: usize,
    /// Lines or events that were not client operations.
    pub skipped: usize,
    pub pair_stats: PairStats,
    pub report: Report,
}

/// Why a history could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    History(#[from] history::HistoryError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("cannot tell which model these operations are for; pass --model")]
    NoModel,
}
