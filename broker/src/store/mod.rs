//! The message store: CommitLog, ConsumeQueues, recovery and metadata.
//!
//! The store knows nothing about the network. [`MessageStore`] is its facade:
//!
//! - **Writes** go through one writer thread with group commit ([`writer`]): `put_message` /
//!   `put_messages` encode on the caller's task, queue the records on a bounded channel and wait
//!   for the answer. Under SYNC_FLUSH a put is answered only after its bytes are synced (one sync
//!   per group); under ASYNC_FLUSH after they are in the page cache.
//! - **Reads** (`get_messages`, offsets, lookups) are lock-light and copy record bytes out of
//!   the mapped segments; they never block the writer.
//! - **Arrivals**: [`MessageStore::subscribe_arrivals`] gives a `watch` receiver whose value
//!   grows whenever new messages are dispatched to ConsumeQueues: long polling waits on
//!   `changed()` and then re-reads.
//! - **Recovery** runs in [`MessageStore::open`] ([`recovery`]); **shutdown** stops the writer,
//!   flushes everything, writes the checkpoint and removes the `abort` marker.
//!
//! Files under `store_root`: `commitlog/` (segments), `consumequeue/{topic}/{queueId}/`,
//! `checkpoint`, `abort` (present while running), `lock` (flock'ed while open), `store.version`
//! (the layout's format version, see [`format`]), and `metadata/` (RocksDB, see
//! [`metadata::MetadataStore`], opened separately).

pub mod checkpoint;
pub mod clean;
mod commitlog;
pub mod config;
pub mod consume_queue;
mod dispatch;
pub mod durability;
pub mod epoch;
pub mod error;
mod flush;
pub mod format;
pub mod index;
pub mod mapped_file;
pub mod metadata;
pub mod recovery;
#[cfg(test)]
mod retention_tests;
#[cfg(test)]
mod safety_tests;
mod writer;

use std::fs::{self, File, OpenOptions};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use parking_lot::Mutex;
use rocketraft_common::consts::sys_flag;
use rocketraft_common::message::{self, EncodeError, Message, MessageExt, RecordMeta};
use tokio::sync::{mpsc, oneshot, watch};

pub use config::{FlushDiskType, RetentionSettings, StoreConfig, UnknownFlushType};
pub use consume_queue::CqEntry;
pub use error::StoreError;
pub use metadata::MetadataStore;
pub use recovery::RecoveryReport;

use commitlog::{CommitLog, END_FILE_MIN_BLANK_LENGTH};
use consume_queue::ConsumeQueueStore;
use flush::Flusher;
use mapped_file::{sync_dir, SegmentAllocator};
use writer::{PutRequest, Writer, WriterMsg};

/// A message as the broker hands it to the store (RocketMQ's `MessageExtBrokerInner`): the
/// message plus the queue it goes to and what the producer told about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMessage {
    pub message: Message,
    pub queue_id: i32,
    /// `MessageSysFlag` bits; the host-version bits are set by the store.
    pub sys_flag: i32,
    pub born_timestamp: i64,
    pub born_host: SocketAddr,
    pub reconsume_times: i32,
    pub prepared_transaction_offset: i64,
}

impl BrokerMessage {
    /// A message for `queue_id`, born now at an unspecified host.
    pub fn new(message: Message, queue_id: i32) -> Self {
        BrokerMessage {
            message,
            queue_id,
            sys_flag: 0,
            born_timestamp: rocketraft_common::time::now_ms(),
            born_host: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            reconsume_times: 0,
            prepared_transaction_offset: 0,
        }
    }
}

/// RocketMQ's `PutMessageStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutStatus {
    PutOk,
    FlushDiskTimeout,
    FlushSlaveTimeout,
    SlaveNotAvailable,
    ServiceNotAvailable,
    CreateMappedFileFailed,
    MessageIllegal,
    PropertiesSizeExceeded,
    OsPageCacheBusy,
    UnknownError,
}

/// Where a put landed. For a batch: the first record's offsets, the total bytes, and the
/// comma-separated offset message ids of every record (as RocketMQ's batch reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResult {
    pub status: PutStatus,
    pub physical_offset: i64,
    pub wrote_bytes: i32,
    pub queue_offset: i64,
    pub msg_id: String,
    pub store_timestamp: i64,
    pub msg_num: i32,
}

/// RocketMQ's `GetMessageStatus`, with the same meanings (`DefaultMessageStore.getMessage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetMessageStatus {
    Found,
    /// Entries were scanned but none passed the filter.
    NoMatchedMessage,
    /// The ConsumeQueue points at CommitLog bytes that are gone.
    MessageWasRemoving,
    /// No ConsumeQueue entry at an offset inside `[min, max)`.
    OffsetFoundNull,
    OffsetOverflowBadly,
    /// `offset == max`: caught up (the long-polling case).
    OffsetOverflowOne,
    OffsetTooSmall,
    /// The topic/queue does not exist in the store.
    NoMatchedLogicQueue,
    NoMessageInQueue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetMessageResult {
    pub status: GetMessageStatus,
    /// Raw records, ready to be concatenated into a PULL response body.
    pub messages: Vec<Bytes>,
    /// The queue offset of each record in `messages`.
    pub message_queue_offsets: Vec<i64>,
    pub next_begin_offset: i64,
    pub min_offset: i64,
    pub max_offset: i64,
    pub buffer_total_size: usize,
}

/// Counters since open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub put_requests: u64,
    pub put_messages: u64,
    pub put_bytes: u64,
    /// Groups the writer processed (each is one sync under SYNC_FLUSH).
    pub groups: u64,
    /// CommitLog syncs done for SYNC_FLUSH groups.
    pub sync_flushes: u64,
    /// Periodic CommitLog flushes that wrote something.
    pub flushes: u64,
    pub flush_errors: u64,
    /// Puts answered FLUSH_DISK_TIMEOUT because their sync took too long.
    pub flush_timeouts: u64,
    pub rolls: u64,
    pub checkpoints: u64,
}

#[derive(Default)]
pub(crate) struct Stats {
    pub put_requests: AtomicU64,
    pub put_messages: AtomicU64,
    pub put_bytes: AtomicU64,
    pub groups: AtomicU64,
    pub sync_flushes: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_errors: AtomicU64,
    pub flush_timeouts: AtomicU64,
    pub rolls: AtomicU64,
    pub checkpoints: AtomicU64,
}

/// A function answering the lowest CommitLog offset the broker still needs (in-flight POP
/// messages, pending timers, undecided transactions), `None` when it needs nothing: retention
/// never deletes a segment that reaches past it.
pub type RetentionPin = Arc<dyn Fn() -> Option<i64> + Send + Sync>;

/// Retention state shared by the cleaner, the facade and the write path.
pub(crate) struct Retention {
    /// Set while the disk is above `disk_space_warning_level_ratio`: puts are refused.
    pub disk_full: AtomicBool,
    /// The last measured use of the fuller store disk, in per mille.
    pub disk_used_permille: AtomicU64,
    pub segments_deleted: AtomicU64,
    pub cq_files_deleted: AtomicU64,
    pub pin: parking_lot::RwLock<Option<RetentionPin>>,
    /// Where the segment the pin last kept ends ([`clean::NOT_WANTED`] if none did in the last
    /// round).
    pub wanted: AtomicI64,
    /// The settings in force: the config's at open, changed by [`MessageStore::set_retention`].
    pub settings: parking_lot::RwLock<RetentionSettings>,
}

impl Retention {
    fn new(settings: RetentionSettings) -> Self {
        Retention {
            settings: parking_lot::RwLock::new(settings),
            disk_full: AtomicBool::new(false),
            disk_used_permille: AtomicU64::new(0),
            segments_deleted: AtomicU64::new(0),
            cq_files_deleted: AtomicU64::new(0),
            pin: parking_lot::RwLock::new(None),
            wanted: AtomicI64::new(clean::NOT_WANTED),
        }
    }
}

/// What `admin broker status` shows about retention.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionStatus {
    /// Percent of the fuller of the CommitLog's and ConsumeQueues' disks in use, as last
    /// measured by the cleaner.
    pub disk_used_percent: f64,
    /// Sends are refused (above `disk_space_warning_level_ratio`).
    pub disk_full: bool,
    pub min_phy_offset: i64,
    pub max_phy_offset: i64,
    pub segments: usize,
    /// When the oldest segment expires (ms since the epoch), if there is one that can.
    pub oldest_segment_expires_ms: Option<i64>,
    /// The `deleteWhen` hours.
    pub delete_when: String,
    pub segments_deleted: u64,
    pub cq_files_deleted: u64,
    /// The lowest offset live POP, timer or transaction state needs, if any.
    pub pinned_at: Option<i64>,
}

/// Arrival notifications ([`MessageStore::subscribe_arrivals`]): one `watch` whose receivers
/// every arrival wakes. With [`StoreConfig::blocking_io`] (the deterministic simulation) each
/// subscriber has a `watch` of its own instead, woken in the order it subscribed: tokio wakes
/// the receivers of one `watch` in an order drawn from its own unseeded RNG, which would make
/// a simulated run depend on more than its seed (two HA connections of one master, both
/// waiting for its arrivals).
pub(crate) struct Arrivals {
    shared: watch::Sender<u64>,
    ordered: Option<Mutex<Vec<watch::Sender<u64>>>>,
}

impl Arrivals {
    fn new(ordered: bool) -> Arrivals {
        Arrivals {
            shared: watch::channel(0u64).0,
            ordered: ordered.then(|| Mutex::new(Vec::new())),
        }
    }

    pub fn send_modify(&self, modify: impl FnOnce(&mut u64)) {
        self.shared.send_modify(modify);
        if let Some(subscribers) = &self.ordered {
            let value = *self.shared.borrow();
            let mut subscribers = subscribers.lock();
            subscribers.retain(|s| !s.is_closed());
            for s in subscribers.iter() {
                s.send_replace(value);
            }
        }
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        match &self.ordered {
            None => self.shared.subscribe(),
            Some(subscribers) => {
                let (tx, rx) = watch::channel(*self.shared.borrow());
                subscribers.lock().push(tx);
                rx
            }
        }
    }
}

/// State shared by the facade, the writer and the flusher.
pub(crate) struct Shared {
    pub config: StoreConfig,
    pub commitlog: CommitLog,
    pub cqs: ConsumeQueueStore,
    pub stats: Stats,
    pub arrivals: Arrivals,
    /// Every record below this CommitLog offset has its ConsumeQueue entry.
    pub dispatched: AtomicI64,
    pub last_store_timestamp: AtomicI64,
    /// Set after a failed write, sync, flush or checkpoint: the store refuses further writes
    /// (see [`Shared::fail`]).
    pub disk_error: AtomicBool,
    /// The first failure that set `disk_error`, for the error every refused write gets.
    pub disk_error_cause: Mutex<Option<String>>,
    /// Test hook: the failure points armed by [`MessageStore::inject_failure`].
    #[cfg(test)]
    pub injected: Mutex<Vec<&'static str>>,
    /// Which master epoch wrote which part of the CommitLog.
    pub epochs: Mutex<epoch::EpochFile>,
    /// Held while a checkpoint is taken and while the log is truncated, so a checkpoint never
    /// mixes offsets from before and after a cut.
    pub checkpoint_lock: Mutex<()>,
    /// With replication, consumers see records only below this offset (the confirm offset:
    /// held by the in-sync replicas). Ignored unless `gated`. Persisted in the checkpoint and
    /// restored at open (never above the recovered end), so a restarted replica serves nothing
    /// it did not know every SyncStateSet member held; a standalone store never gates, so
    /// there it has no effect.
    pub confirm: AtomicI64,
    pub gated: AtomicBool,
    pub retention: Retention,
}

impl Shared {
    /// The store's config with the retention settings in force now.
    pub fn live_config(&self) -> StoreConfig {
        self.config
            .clone()
            .with_retention(&self.retention.settings.read())
    }

    /// Puts the store into its failed state: every further write is refused with
    /// [`StoreError::ReadOnly`] naming the first failure. Idempotent; logged once.
    pub fn fail(&self, cause: impl Into<String>) {
        let cause = cause.into();
        let mut first = self.disk_error_cause.lock();
        if first.is_none() {
            tracing::error!(cause = %cause, "store disk error: refusing further writes until restarted");
            *first = Some(cause);
        }
        self.disk_error.store(true, Ordering::Release);
    }

    /// The error a write gets once the store failed.
    pub fn read_only_error(&self) -> StoreError {
        let cause = self.disk_error_cause.lock().clone();
        StoreError::ReadOnly(cause.unwrap_or_else(|| "unknown disk error".into()))
    }

    /// Test hook: an I/O error if the failure point `point` was armed (never outside tests).
    #[allow(clippy::unnecessary_wraps)]
    pub fn injected_failure(&self, point: &'static str) -> std::io::Result<()> {
        #[cfg(test)]
        if self.injected.lock().contains(&point) {
            return Err(std::io::Error::other(format!(
                "injected failure at {point}"
            )));
        }
        let _ = point;
        Ok(())
    }
}

/// Test and chaos hook: when the `ROCKETRAFT_FAILPOINT` environment variable names this point,
/// the process aborts there, the way `kill -9` would stop it (no flush, no cleanup). Used by
/// the crash tests of truncation and segment rolls.
pub(crate) fn failpoint(name: &str) {
    static POINT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let point = POINT.get_or_init(|| std::env::var("ROCKETRAFT_FAILPOINT").ok());
    if point.as_deref() == Some(name) {
        tracing::error!(failpoint = name, "failpoint reached: aborting the process");
        std::process::abort();
    }
}

pub(crate) fn write_truncate_marker(config: &StoreConfig, offset: i64) -> Result<(), StoreError> {
    let path = config.truncate_marker_path();
    let tmp = path.with_extension("tmp");
    let io = |e| StoreError::io(&path, e);
    {
        use std::io::Write;
        let mut f = File::create(&tmp).map_err(io)?;
        f.write_all(format!("{offset}\n").as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    durability::note(durability::Durable::File { path: &tmp });
    fs::rename(&tmp, &path).map_err(io)?;
    sync_dir(&config.store_root).map_err(|e| StoreError::io(&config.store_root, e))
}

pub(crate) fn read_truncate_marker(config: &StoreConfig) -> Result<Option<i64>, StoreError> {
    let path = config.truncate_marker_path();
    match fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map(Some).map_err(|_| {
            StoreError::Corrupted(format!(
                "truncation marker {} holds {text:?}, not an offset",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(&path, e)),
    }
}

pub(crate) fn remove_truncate_marker(config: &StoreConfig) -> Result<(), StoreError> {
    let path = config.truncate_marker_path();
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::io(&path, e)),
    }
    sync_dir(&config.store_root).map_err(|e| StoreError::io(&config.store_root, e))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    Running,
    Stopped,
}

/// The store facade. Cheap to share as `Arc<MessageStore>`; every method takes `&self`.
pub struct MessageStore {
    shared: Arc<Shared>,
    put_tx: mpsc::Sender<WriterMsg>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    lock_file: Mutex<Option<File>>,
    lifecycle: Mutex<Lifecycle>,
    accepting: AtomicBool,
    recovery: RecoveryReport,
    /// The key index (`None` with `message_index_enable = false`); see [`index`].
    index: Option<index::MessageIndex>,
    clean_tx: Mutex<Option<std::sync::mpsc::Sender<clean::CleanMsg>>>,
}

impl std::fmt::Debug for MessageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageStore")
            .field("root", &self.shared.config.store_root)
            .field("max_phy_offset", &self.max_phy_offset())
            .finish()
    }
}

fn lock_store(path: &Path) -> Result<File, StoreError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| StoreError::io(path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: plain syscall on an owned, open descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(StoreError::AlreadyOpen(path.to_path_buf()));
            }
            return Err(StoreError::io(path, err));
        }
    }
    Ok(file)
}

fn illegal(e: EncodeError) -> StoreError {
    match e {
        EncodeError::PropertiesTooLong(_) => StoreError::PropertiesSizeExceeded(e.to_string()),
        _ => StoreError::MessageIllegal(e.to_string()),
    }
}

impl MessageStore {
    /// Opens (or creates) the store at `config.store_root`, recovers it, and starts the writer,
    /// the flusher and the segment allocator. Blocking: recovery may read a lot; call it before
    /// serving, or from `spawn_blocking`.
    pub fn open(config: StoreConfig) -> Result<Arc<MessageStore>, StoreError> {
        config.validate()?;
        let root = config.store_root.clone();
        mapped_file::create_dir_all_durable(&root).map_err(|e| StoreError::io(&root, e))?;
        let lock = lock_store(&config.lock_path())?;
        // Before anything is read: a store of a newer format is refused untouched.
        format::check_and_stamp(&root)?;
        let abort_path = config.abort_path();
        let abort_existed = abort_path.exists();
        let marker = read_truncate_marker(&config)?;
        let recovered = recovery::recover(&config, abort_existed, marker)?;
        let epoch_path = config.epoch_path();
        let mut epochs =
            epoch::EpochFile::open(&epoch_path).map_err(|e| StoreError::io(&epoch_path, e))?;
        if let Some(target) = marker {
            // Finish an interrupted truncation: recovery cut the log, the epochs follow.
            epochs
                .truncate_from(target.min(recovered.end))
                .map_err(|e| StoreError::io(&epoch_path, e))?;
        }
        // Epochs that start past the end of the log describe bytes this replica lost.
        epochs
            .truncate_from(recovered.end + 1)
            .map_err(|e| StoreError::io(&epoch_path, e))?;
        {
            let f = File::create(&abort_path).map_err(|e| StoreError::io(&abort_path, e))?;
            f.sync_all().map_err(|e| StoreError::io(&abort_path, e))?;
            durability::note(durability::Durable::File { path: &abort_path });
            sync_dir(&root).map_err(|e| StoreError::io(&root, e))?;
        }
        let report = recovered.report.clone();
        // The confirm offset restarts where the checkpoint left it, never above what recovery
        // kept. Without one (a new store, or a checkpoint from before the confirm offset was
        // persisted) nothing is known to be held by the replicas: start at the log's first
        // offset. Only a gated (controller-mode) store reads it.
        let first_offset = recovered
            .segments
            .first()
            .map_or(0, |s| s.start_offset() as i64);
        let confirm = match recovered.confirm {
            Some(c) => c.clamp(first_offset.min(recovered.end), recovered.end),
            None => {
                if recovered.end > first_offset {
                    tracing::warn!(
                        first_offset,
                        end = recovered.end,
                        "no persisted confirm offset: a replica serves nothing until its SyncStateSet confirms it again"
                    );
                }
                first_offset.min(recovered.end)
            }
        };
        let commitlog = CommitLog::new(
            config.commitlog_segment_size,
            recovered.segments,
            recovered.end,
            report.walk_start,
        );
        let arrivals = Arrivals::new(config.blocking_io);
        let shared = Arc::new(Shared {
            commitlog,
            cqs: recovered.cqs,
            stats: Stats::default(),
            arrivals,
            dispatched: AtomicI64::new(recovered.end),
            last_store_timestamp: AtomicI64::new(recovered.last_store_timestamp),
            disk_error: AtomicBool::new(false),
            disk_error_cause: Mutex::new(None),
            #[cfg(test)]
            injected: Mutex::new(Vec::new()),
            epochs: Mutex::new(epochs),
            checkpoint_lock: Mutex::new(()),
            confirm: AtomicI64::new(confirm),
            gated: AtomicBool::new(false),
            retention: Retention::new(config.retention()),
            config: config.clone(),
        });

        let (flush_tx, flush_rx) = std::sync::mpsc::channel();
        let mut flusher = Flusher {
            shared: shared.clone(),
            rx: flush_rx,
            checkpoint_path: config.checkpoint_path(),
            last_checkpoint: None,
            checkpoint_skipped: false,
        };
        // Make what recovery verified and rebuilt durable before accepting anything new. The
        // truncation marker goes only once that checkpoint is written: if it fails, the next
        // open finishes the truncation again.
        flusher.checkpoint()?;
        if marker.is_some() {
            remove_truncate_marker(&config)?;
        }
        let index = match config.message_index_enable {
            true => Some(index::MessageIndex::open(shared.clone())?),
            false => None,
        };

        // The simulation's mode prepares segments on the writer's thread: a segment created by
        // a thread of its own would land on disk (or not) before a simulated power loss as the
        // OS scheduled it, not as the seed decided.
        let allocator = if config.blocking_io {
            SegmentAllocator::inline(
                config.commitlog_dir(),
                config.commitlog_segment_size as usize,
                config.pretouch,
            )
        } else {
            SegmentAllocator::start(
                config.commitlog_dir(),
                config.commitlog_segment_size as usize,
                config.pretouch,
            )
            .map_err(|e| StoreError::io(config.commitlog_dir(), e))?
        };
        let (put_tx, put_rx) = mpsc::channel(config.put_queue_capacity);
        let writer = Writer::new(
            shared.clone(),
            put_rx,
            flush_tx,
            allocator,
            recovered.last_store_timestamp,
        );
        let mut threads = Vec::new();
        let spawn_err = |e: std::io::Error| StoreError::io(&root, e);
        threads.push(
            std::thread::Builder::new()
                .name("store-flusher".into())
                .spawn(move || flusher.run())
                .map_err(spawn_err)?,
        );
        threads.push(
            std::thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || writer.run())
                .map_err(spawn_err)?,
        );
        let (clean_tx, clean_rx) = std::sync::mpsc::channel();
        let cleaner = clean::Cleaner {
            shared: shared.clone(),
            rx: clean_rx,
            manual_rounds: 0,
            cleaned_for: None,
        };
        threads.push(
            std::thread::Builder::new()
                .name("store-cleaner".into())
                .spawn(move || cleaner.run())
                .map_err(spawn_err)?,
        );
        tracing::info!(
            root = %root.display(),
            max_phy_offset = shared.commitlog.max_offset(),
            flush = ?config.flush_disk_type,
            "message store open"
        );
        Ok(Arc::new(MessageStore {
            shared,
            put_tx,
            threads: Mutex::new(threads),
            lock_file: Mutex::new(Some(lock)),
            lifecycle: Mutex::new(Lifecycle::Running),
            accepting: AtomicBool::new(true),
            recovery: report,
            index,
            clean_tx: Mutex::new(Some(clean_tx)),
        }))
    }

    pub fn config(&self) -> &StoreConfig {
        &self.shared.config
    }

    /// What recovery did at open.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        self.check_writable_as(false)
    }

    /// [`Self::check_writable`]; with `reserved`, the disk-full mark (a level of the disk
    /// in use, not a failed write) does not refuse: see [`Self::put_messages_reserved`].
    fn check_writable_as(&self, reserved: bool) -> Result<(), StoreError> {
        if !self.accepting.load(Ordering::Acquire) {
            return Err(StoreError::ServiceNotAvailable(
                "the store is shut down".into(),
            ));
        }
        if self.shared.disk_error.load(Ordering::Acquire) {
            return Err(self.shared.read_only_error());
        }
        if !reserved && self.shared.retention.disk_full.load(Ordering::Acquire) {
            let permille = self
                .shared
                .retention
                .disk_used_permille
                .load(Ordering::Relaxed);
            return Err(StoreError::ServiceNotAvailable(format!(
                "service not available now: the broker's disk is full [{:.1}% used, above diskSpaceWarningLevelRatio {}%]; sends are accepted again once space is freed (expired files are deleted by retention, or free space on the disk)",
                permille as f64 / 10.0,
                self.shared
                    .retention
                    .settings
                    .read()
                    .disk_space_warning_level_ratio
                    .clamp(35, 90)
            )));
        }
        Ok(())
    }

    /// Validates and encodes records for one topic queue (the CPU part of a put, done on the
    /// caller's task, not the writer's).
    fn encode(&self, msgs: &[BrokerMessage]) -> Result<PutRequest, StoreError> {
        let cfg = &self.shared.config;
        let Some(first) = msgs.first() else {
            return Err(StoreError::MessageIllegal("empty batch".into()));
        };
        let topic = &first.message.topic;
        rocketraft_common::topic::validate_stored_topic_name(topic)
            .map_err(|e| StoreError::MessageIllegal(e.to_string()))?;
        if first.queue_id < 0 {
            return Err(StoreError::MessageIllegal(format!(
                "queue id {} is negative",
                first.queue_id
            )));
        }
        let mut data = Vec::new();
        let mut sizes = Vec::with_capacity(msgs.len());
        let mut tags_codes = Vec::with_capacity(msgs.len());
        let mut body_total = 0usize;
        let indexed = |m: &BrokerMessage| {
            let t = sys_flag::transaction_value(m.sys_flag);
            t != sys_flag::TRANSACTION_PREPARED_TYPE && t != sys_flag::TRANSACTION_ROLLBACK_TYPE
        };
        for m in msgs {
            if indexed(m) != indexed(first) {
                return Err(StoreError::MessageIllegal(
                    "a batch cannot mix transaction types".into(),
                ));
            }
            if m.message.topic != *topic || m.queue_id != first.queue_id {
                return Err(StoreError::MessageIllegal(
                    "a batch must go to one topic and queue".into(),
                ));
            }
            let body_len = m.message.body.len();
            body_total += body_len;
            if body_len > cfg.max_message_size || body_total > cfg.max_message_size {
                return Err(StoreError::MessageIllegal(format!(
                    "message body of {body_total} bytes exceeds max_message_size {}",
                    cfg.max_message_size
                )));
            }
            let meta = RecordMeta {
                queue_id: m.queue_id,
                queue_offset: 0,
                physical_offset: 0,
                sys_flag: m.sys_flag,
                born_timestamp: m.born_timestamp,
                born_host: m.born_host,
                store_timestamp: 0,
                store_host: cfg.store_host,
                reconsume_times: m.reconsume_times,
                prepared_transaction_offset: m.prepared_transaction_offset,
            };
            let n = message::encode_record(&m.message, &meta, true, &mut data).map_err(illegal)?;
            sizes.push(n as u32);
            tags_codes.push(m.message.tags_code());
        }
        if data.len() + END_FILE_MIN_BLANK_LENGTH > cfg.commitlog_segment_size as usize {
            return Err(StoreError::MessageIllegal(format!(
                "{} bytes of records do not fit a {}-byte CommitLog segment",
                data.len(),
                cfg.commitlog_segment_size
            )));
        }
        let (reply, _) = oneshot::channel();
        Ok(PutRequest {
            topic: topic.clone(),
            queue_id: first.queue_id,
            data,
            sizes,
            tags_codes,
            indexed: indexed(first),
            reply,
        })
    }

    fn fill_ids(&self, r: &mut PutResult, sizes: &[u32]) {
        let host = self.shared.config.store_host;
        let mut ids = String::with_capacity(sizes.len() * 33);
        let mut at = r.physical_offset;
        for (i, s) in sizes.iter().enumerate() {
            if i > 0 {
                ids.push(',');
            }
            ids.push_str(&message::offset_msg_id(host, at));
            at += *s as i64;
        }
        r.msg_id = ids;
    }

    async fn submit(&self, msgs: &[BrokerMessage]) -> Result<PutResult, StoreError> {
        self.submit_as(msgs, false).await
    }

    async fn submit_as(
        &self,
        msgs: &[BrokerMessage],
        reserved: bool,
    ) -> Result<PutResult, StoreError> {
        self.check_writable_as(reserved)?;
        let mut req = self.encode(msgs)?;
        let sizes = req.sizes.clone();
        let (tx, rx) = oneshot::channel();
        req.reply = tx;
        let stopped = |_| StoreError::ServiceNotAvailable("the store writer stopped".into());
        let answer =
            if self.shared.config.blocking_io {
                // The simulation's mode (see `StoreConfig::blocking_io`): no timer, which the
                // blocked runtime thread could not fire (its disk is a temporary directory; the
                // flusher still answers a group synced late FLUSH_DISK_TIMEOUT).
                self.exchange(WriterMsg::Put(req), rx).await?
            } else if self.shared.config.flush_disk_type == FlushDiskType::SyncFlush {
                self.put_tx.send(WriterMsg::Put(req)).await.map_err(|_| {
                    StoreError::ServiceNotAvailable("the store writer stopped".into())
                })?;
                // A sync that hangs (a dying disk, a stuck network filesystem) must not hang the
                // sender forever: past twice the timeout (queueing included) answer
                // FLUSH_DISK_TIMEOUT without offsets (-1). Never success.
                let limit =
                    std::time::Duration::from_millis(self.shared.config.sync_flush_timeout_ms * 2);
                match tokio::time::timeout(limit, rx).await {
                    Ok(a) => a.map_err(stopped)?,
                    Err(_) => {
                        self.shared
                            .stats
                            .flush_timeouts
                            .fetch_add(1, Ordering::Relaxed);
                        return Err(StoreError::FlushDiskTimeout(Box::new(PutResult {
                            status: PutStatus::FlushDiskTimeout,
                            physical_offset: -1,
                            wrote_bytes: 0,
                            queue_offset: -1,
                            msg_id: String::new(),
                            store_timestamp: 0,
                            msg_num: sizes.len() as i32,
                        })));
                    }
                }
            } else {
                self.put_tx.send(WriterMsg::Put(req)).await.map_err(|_| {
                    StoreError::ServiceNotAvailable("the store writer stopped".into())
                })?;
                rx.await.map_err(stopped)?
            };
        match answer {
            Ok(mut r) => {
                self.fill_ids(&mut r, &sizes);
                Ok(r)
            }
            Err(StoreError::FlushDiskTimeout(mut r)) => {
                self.fill_ids(&mut r, &sizes);
                Err(StoreError::FlushDiskTimeout(r))
            }
            Err(e) => Err(e),
        }
    }

    /// Hands `msg` to the writer thread and waits for its answer on `rx`: awaited, or with
    /// [`StoreConfig::blocking_io`] by blocking the calling thread until the writer answers.
    async fn exchange<T>(&self, msg: WriterMsg, rx: oneshot::Receiver<T>) -> Result<T, StoreError> {
        let stopped = || StoreError::ServiceNotAvailable("the store writer stopped".into());
        let round = async {
            self.put_tx.send(msg).await.map_err(|_| stopped())?;
            rx.await.map_err(|_| stopped())
        };
        if self.shared.config.blocking_io {
            // Unconstrained: tokio's cooperative budget of the calling task, if spent, would
            // make the channels answer "not yet" forever to a thread that only blocks.
            futures::executor::block_on(tokio::task::unconstrained(round))
        } else {
            round.await
        }
    }

    /// Appends one message. `Ok` means stored under the configured flush policy; see
    /// [`StoreError::put_status`] for the status of an error.
    pub async fn put_message(&self, msg: BrokerMessage) -> Result<PutResult, StoreError> {
        self.submit(std::slice::from_ref(&msg)).await
    }

    /// Appends a batch (SEND_BATCH) for one topic queue: the records are contiguous in the
    /// CommitLog and get consecutive queue offsets.
    pub async fn put_messages(&self, msgs: Vec<BrokerMessage>) -> Result<PutResult, StoreError> {
        self.submit(&msgs).await
    }

    /// [`put_messages`](Self::put_messages) for the copies that let retention free space: live
    /// state (an in-flight POP message, a pending timer, an undecided half message) stored
    /// again at the head of the log so that the segment it was in can go. Accepted while the
    /// disk is marked full (above `diskSpaceWarningLevelRatio`): refusing them would keep the
    /// pinned segment, and so the disk, full for good. A failed write (ENOSPC, a disk error)
    /// still refuses as for any put.
    pub async fn put_messages_reserved(
        &self,
        msgs: Vec<BrokerMessage>,
    ) -> Result<PutResult, StoreError> {
        self.submit_as(&msgs, true).await
    }

    /// [`put_message`](Self::put_message) for threads outside a tokio runtime (benches,
    /// tools). Panics if called from inside a runtime (tokio's blocking channel rule).
    pub fn put_message_blocking(&self, msg: BrokerMessage) -> Result<PutResult, StoreError> {
        self.put_messages_blocking(std::slice::from_ref(&msg))
    }

    /// Blocking [`put_messages`](Self::put_messages).
    pub fn put_messages_blocking(&self, msgs: &[BrokerMessage]) -> Result<PutResult, StoreError> {
        self.check_writable()?;
        let mut req = self.encode(msgs)?;
        let sizes = req.sizes.clone();
        let (tx, rx) = oneshot::channel();
        req.reply = tx;
        self.put_tx
            .blocking_send(WriterMsg::Put(req))
            .map_err(|_| StoreError::ServiceNotAvailable("the store writer stopped".into()))?;
        let answer = rx
            .blocking_recv()
            .map_err(|_| StoreError::ServiceNotAvailable("the store writer stopped".into()))?;
        match answer {
            Ok(mut r) => {
                self.fill_ids(&mut r, &sizes);
                Ok(r)
            }
            Err(StoreError::FlushDiskTimeout(mut r)) => {
                self.fill_ids(&mut r, &sizes);
                Err(StoreError::FlushDiskTimeout(r))
            }
            Err(e) => Err(e),
        }
    }

    /// Reads up to `max_msgs` records of `topic`/`queue_id` from queue offset `offset`, at most
    /// `max_total_bytes` (but always at least one record if any matches), skipping records
    /// whose tags code `filter` rejects. Semantics of statuses and `next_begin_offset` follow
    /// RocketMQ's `DefaultMessageStore.getMessage` on a master. `_group` is unused (kept for
    /// the shape of the Java API).
    #[allow(clippy::too_many_arguments)]
    pub fn get_messages(
        &self,
        group: &str,
        topic: &str,
        queue_id: i32,
        offset: i64,
        max_msgs: i32,
        max_total_bytes: usize,
        filter: &dyn Fn(i64) -> bool,
    ) -> GetMessageResult {
        self.get_messages_matching(
            group,
            topic,
            queue_id,
            offset,
            max_msgs,
            max_total_bytes,
            filter,
            &|_| true,
        )
    }

    /// [`Self::get_messages`] with a second filter on each record that passed the tags-code
    /// filter (RocketMQ's `isMatchedByCommitLog`, for SQL92 filters over the properties).
    #[allow(clippy::too_many_arguments)]
    pub fn get_messages_matching(
        &self,
        _group: &str,
        topic: &str,
        queue_id: i32,
        offset: i64,
        max_msgs: i32,
        max_total_bytes: usize,
        filter: &dyn Fn(i64) -> bool,
        record_filter: &dyn Fn(&[u8]) -> bool,
    ) -> GetMessageResult {
        let mut r = GetMessageResult {
            status: GetMessageStatus::NoMessageInQueue,
            messages: Vec::new(),
            message_queue_offsets: Vec::new(),
            next_begin_offset: offset,
            min_offset: 0,
            max_offset: 0,
            buffer_total_size: 0,
        };
        let Some(cq) = self.shared.cqs.get(topic, queue_id) else {
            r.status = GetMessageStatus::NoMatchedLogicQueue;
            r.next_begin_offset = 0;
            return r;
        };
        let min = cq.min_offset();
        let max = cq.max_offset();
        r.min_offset = min;
        r.max_offset = max;
        if max == 0 {
            r.status = GetMessageStatus::NoMessageInQueue;
            r.next_begin_offset = 0;
        } else if offset < min {
            r.status = GetMessageStatus::OffsetTooSmall;
            r.next_begin_offset = min;
        } else if offset == max {
            r.status = GetMessageStatus::OffsetOverflowOne;
            r.next_begin_offset = offset;
        } else if offset > max {
            r.status = GetMessageStatus::OffsetOverflowBadly;
            r.next_begin_offset = if min == 0 { min } else { max };
        } else {
            let max_msgs = max_msgs.max(1) as usize;
            let scan_limit = self.shared.config.max_filter_scan_entries.max(max_msgs) as i64;
            r.status = GetMessageStatus::NoMatchedMessage;
            let mut index = offset;
            let mut first_entry_missing = true;
            let confirm = self.confirm_offset();
            while index < max && index - offset < scan_limit {
                let Some(entry) = cq.entry(index) else {
                    break;
                };
                if entry.is_valid() && entry.end() > confirm {
                    // Not yet held by the in-sync replicas: invisible, as if not yet written.
                    if index == offset {
                        r.status = GetMessageStatus::OffsetOverflowOne;
                        first_entry_missing = false;
                    }
                    break;
                }
                first_entry_missing = false;
                if !entry.is_valid() {
                    index += 1;
                    continue;
                }
                if !r.messages.is_empty()
                    && (r.messages.len() >= max_msgs
                        || r.buffer_total_size + entry.size as usize > max_total_bytes)
                {
                    break;
                }
                if !filter(entry.tags_code) {
                    index += 1;
                    continue;
                }
                match self
                    .shared
                    .commitlog
                    .read_record_sized(entry.commit_log_offset, entry.size)
                {
                    Some(rec) if !record_filter(&rec) => {}
                    Some(rec) => {
                        r.buffer_total_size += rec.len();
                        r.messages.push(rec);
                        r.message_queue_offsets.push(index);
                        r.status = GetMessageStatus::Found;
                    }
                    None => {
                        if r.messages.is_empty() {
                            r.status = GetMessageStatus::MessageWasRemoving;
                        }
                    }
                }
                index += 1;
            }
            if first_entry_missing {
                r.status = GetMessageStatus::OffsetFoundNull;
                r.next_begin_offset = cq.roll_next_file(offset);
            } else {
                r.next_begin_offset = index;
            }
        }
        r
    }

    /// The next queue offset of a queue (its message count if nothing was removed); 0 if the
    /// queue does not exist.
    pub fn get_max_offset_in_queue(&self, topic: &str, queue_id: i32) -> i64 {
        self.shared
            .cqs
            .get(topic, queue_id)
            .map_or(0, |q| q.max_offset())
    }

    /// The first readable queue offset; 0 if the queue does not exist.
    pub fn get_min_offset_in_queue(&self, topic: &str, queue_id: i32) -> i64 {
        self.shared
            .cqs
            .get(topic, queue_id)
            .map_or(0, |q| q.min_offset())
    }

    /// Expires a whole queue at the CommitLog offset `commitlog_pos` if no record of it lies
    /// between queue offset `next` (what the expiry saw) and there: its entries below `next`
    /// go, for good (see [`consume_queue::ConsumeQueue::expire_before`]). Whether it did; true for
    /// a queue this store does not have (a replica that started its log over past it): no
    /// record of it lies there either.
    pub fn expire_queue(
        &self,
        topic: &str,
        queue_id: i32,
        next: i64,
        commitlog_pos: i64,
    ) -> Result<bool, StoreError> {
        let Some(cq) = self.shared.cqs.get(topic, queue_id) else {
            return Ok(true);
        };
        cq.expire_before(next, commitlog_pos)
            .map_err(|e| StoreError::io(format!("consumequeue/{topic}/{queue_id}"), e))
    }

    /// The ConsumeQueue entry at a queue offset.
    pub fn get_cq_entry(&self, topic: &str, queue_id: i32, offset: i64) -> Option<CqEntry> {
        self.shared.cqs.get(topic, queue_id)?.entry(offset)
    }

    /// The CommitLog offset of the message at a queue offset.
    pub fn get_commit_log_offset_in_queue(
        &self,
        topic: &str,
        queue_id: i32,
        offset: i64,
    ) -> Option<i64> {
        self.get_cq_entry(topic, queue_id, offset)
            .filter(CqEntry::is_valid)
            .map(|e| e.commit_log_offset)
    }

    /// The store timestamp of the message at a queue offset.
    pub fn get_message_store_timestamp(
        &self,
        topic: &str,
        queue_id: i32,
        offset: i64,
    ) -> Option<i64> {
        let e = self.get_cq_entry(topic, queue_id, offset)?;
        self.shared
            .commitlog
            .store_timestamp_at(e.commit_log_offset)
    }

    /// The first queue offset whose message was stored at or after `timestamp_ms`: the max
    /// offset if every message is older, the min offset if every message is newer. Store
    /// timestamps never decrease along a queue (the writer enforces it), so this is a binary
    /// search. (RocketMQ's `getOffsetInQueueByTime` with `BoundaryType.LOWER`.)
    pub fn get_offset_by_time(&self, topic: &str, queue_id: i32, timestamp_ms: i64) -> i64 {
        let Some(cq) = self.shared.cqs.get(topic, queue_id) else {
            return 0;
        };
        let (mut lo, mut hi) = (cq.min_offset(), cq.max_offset());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let ts = cq.entry(mid).and_then(|e| {
                self.shared
                    .commitlog
                    .store_timestamp_at(e.commit_log_offset)
            });
            match ts {
                Some(t) if t >= timestamp_ms => hi = mid,
                _ => lo = mid + 1,
            }
        }
        lo
    }

    /// The store timestamp of the oldest message of a queue.
    pub fn get_earliest_message_time(&self, topic: &str, queue_id: i32) -> Option<i64> {
        let min = self.shared.cqs.get(topic, queue_id)?.min_offset();
        self.get_message_store_timestamp(topic, queue_id, min)
    }

    /// The store timestamp of the oldest message of the CommitLog (RocketMQ's
    /// `getEarliestMessageTime`), `None` when the log is empty.
    pub fn earliest_message_time(&self) -> Option<i64> {
        let min = self.min_phy_offset();
        if min >= self.max_phy_offset() {
            return None;
        }
        self.shared.commitlog.store_timestamp_at(min)
    }

    /// Decodes the record at a CommitLog offset.
    pub fn look_message_by_offset(&self, phy_offset: i64) -> Option<MessageExt> {
        let rec = self.shared.commitlog.read_record(phy_offset)?;
        message::decode_message(&rec).ok().map(|(m, _)| m)
    }

    /// The raw record at a CommitLog offset.
    pub fn read_record(&self, phy_offset: i64) -> Option<Bytes> {
        self.shared.commitlog.read_record(phy_offset)
    }

    /// Raw CommitLog bytes from `offset`, at most `max_len`, not crossing a segment end (what HA
    /// streams to slaves).
    pub fn read_commit_log(&self, offset: i64, max_len: usize) -> Option<Bytes> {
        let cl = &self.shared.commitlog;
        let seg = cl.segment_for(offset)?;
        let seg_end = seg.end_offset() as i64;
        let len = (max_len as i64)
            .min(seg_end - offset)
            .min(cl.max_offset() - offset);
        if len <= 0 {
            return None;
        }
        cl.read(offset, len as usize)
    }

    /// What a master streams to a slave from `offset`: whole records (at most `max_bytes` unless
    /// the first record alone is larger), not crossing a segment end nor `limit` (an epoch
    /// boundary), or the 8-byte blank marker that ends a segment. `None` when nothing is there.
    pub fn replication_chunk(&self, offset: i64, max_bytes: usize, limit: i64) -> Option<Bytes> {
        let cl = &self.shared.commitlog;
        let end = cl.max_offset().min(limit);
        if offset >= end {
            return None;
        }
        let seg = cl.segment_for(offset)?;
        let stop = end.min(seg.end_offset() as i64);
        let head = cl.read(offset, 8)?;
        if message::read_i32(&head, 4) == Some(message::BLANK_MAGIC_CODE) {
            return Some(head);
        }
        let mut len = 0i64;
        let mut at = offset;
        while at < stop {
            let Some(size) = cl.read_i32(at) else { break };
            if size <= 0 || cl.read_i32(at + 4) == Some(message::BLANK_MAGIC_CODE) {
                break;
            }
            if at + size as i64 > stop || (len > 0 && (len + size as i64) as usize > max_bytes) {
                break;
            }
            len += size as i64;
            at += size as i64;
        }
        if len == 0 {
            return None;
        }
        cl.read(offset, len as usize)
    }

    /// End of the CommitLog: the offset the next record is written at (or the next segment's).
    pub fn max_phy_offset(&self) -> i64 {
        self.shared.commitlog.max_offset()
    }

    /// The first CommitLog offset still stored.
    pub fn min_phy_offset(&self) -> i64 {
        self.shared.commitlog.min_offset()
    }

    /// CommitLog bytes below this are synced to disk.
    pub fn flushed_phy_offset(&self) -> i64 {
        self.shared.commitlog.flushed_offset()
    }

    /// Every record below this CommitLog offset is in its ConsumeQueue.
    pub fn dispatched_phy_offset(&self) -> i64 {
        self.shared.dispatched.load(Ordering::Acquire)
    }

    /// The confirm offset: records below it are held by the in-sync replicas and visible to
    /// consumers. Without replication gating it is the dispatched offset.
    pub fn confirm_offset(&self) -> i64 {
        let dispatched = self.dispatched_phy_offset();
        if self.shared.gated.load(Ordering::Acquire) {
            self.shared.confirm.load(Ordering::Acquire).min(dispatched)
        } else {
            dispatched
        }
    }

    /// Turns confirm-offset gating on (controller mode) or off.
    pub fn set_gated(&self, gated: bool) {
        self.shared.gated.store(gated, Ordering::Release);
        self.shared.arrivals.send_modify(|v| *v += 1);
    }

    /// Sets the confirm offset (replication: the master from its in-sync replicas' acks, a slave
    /// from its master). Wakes long-polling consumers when it grows.
    pub fn set_confirm_offset(&self, offset: i64) {
        let old = self.shared.confirm.swap(offset, Ordering::AcqRel);
        if offset > old {
            self.shared.arrivals.send_modify(|v| *v += 1);
        }
    }

    /// The epochs of this replica's log, oldest first.
    pub fn epoch_entries(&self) -> Vec<epoch::EpochEntry> {
        self.shared.epochs.lock().entries().to_vec()
    }

    /// The last epoch entry.
    pub fn last_epoch(&self) -> Option<epoch::EpochEntry> {
        self.shared.epochs.lock().last()
    }

    /// Records that the master of `epoch` writes from `start_offset` on (crash-safe). A new master
    /// calls it with its log end before taking writes; a slave when data of a new epoch arrives.
    pub fn append_epoch(&self, epoch: i32, start_offset: i64) -> Result<(), StoreError> {
        let path = self.shared.config.epoch_path();
        self.shared
            .epochs
            .lock()
            .append(epoch, start_offset)
            .map_err(|e| StoreError::io(&path, e))
    }

    /// Slave side of replication: appends bytes the master wrote at `offset` (which must be the
    /// end of this log). Returns the new end.
    pub async fn append_replicated(&self, offset: i64, data: Vec<u8>) -> Result<i64, StoreError> {
        self.check_writable()?;
        let (reply, rx) = oneshot::channel();
        let msg = WriterMsg::Replicate {
            offset,
            data,
            reply,
        };
        self.exchange(msg, rx).await?
    }

    /// Cuts the log at `offset` (crash-safely, see the writer's `truncate`), dropping the
    /// ConsumeQueue entries and epochs past it. Below the log's first offset (retention deleted
    /// the segments it would keep) the log starts over at the segment start at or below
    /// `offset` instead ([`MessageStore::reset_to`]).
    pub async fn truncate_to(&self, offset: i64) -> Result<(), StoreError> {
        self.check_writable()?;
        let (reply, rx) = oneshot::channel();
        let result = self
            .exchange(WriterMsg::Truncate { offset, reply }, rx)
            .await?;
        if let Some(index) = &self.index {
            index.rewind(offset);
            if result.is_ok() {
                // Below the first offset the log started over lower.
                index.follow_log_start()?;
            }
        }
        result
    }

    /// Empties this replica's log and makes it start at `offset`, a segment start: at or past
    /// this log's end (its master's first offset, for a replica whose log ends below what its
    /// master still stores), or at or below its first offset (a replica that diverged from its
    /// master below its own first offset). See the writer's `reset_to`.
    pub async fn reset_to(&self, offset: i64) -> Result<(), StoreError> {
        self.check_writable()?;
        let (reply, rx) = oneshot::channel();
        self.exchange(WriterMsg::Reset { offset, reply }, rx)
            .await??;
        if let Some(index) = &self.index {
            index.rewind(offset);
            index.follow_log_start()?;
        }
        Ok(())
    }

    /// Of every ConsumeQueue, the queue offset its next record at or past the CommitLog offset
    /// `at` has (see [`consume_queue::ConsumeQueue::offset_at`]), for the queues that have one above 0: what
    /// a master tells a replica that fetches from `at`.
    pub fn queue_offsets_at(&self, at: i64) -> Vec<(String, i32, i64)> {
        let mut out: Vec<(String, i32, i64)> = self
            .shared
            .cqs
            .all()
            .iter()
            .map(|q| (q.topic().to_string(), q.queue_id(), q.offset_at(at)))
            .filter(|(_, _, next)| *next > 0)
            .collect();
        out.sort();
        out
    }

    /// A replica: applies its master's next queue offsets at `at` (see
    /// [`MessageStore::queue_offsets_at`]) when `at` is still this log's end: every queue with
    /// no entry left and a lower max starts empty at the master's offset. Returns how many
    /// queues moved.
    pub async fn seed_queue_offsets(
        &self,
        at: i64,
        queues: Vec<(String, i32, i64)>,
    ) -> Result<usize, StoreError> {
        self.check_writable()?;
        let (reply, rx) = oneshot::channel();
        self.exchange(WriterMsg::SeedQueues { at, queues, reply }, rx)
            .await?
    }

    /// A receiver whose value increases each time new messages are dispatched. Long polling:
    /// `rx.borrow_and_update()`, check the queue, then `rx.changed().await` and check again.
    pub fn subscribe_arrivals(&self) -> watch::Receiver<u64> {
        self.shared.arrivals.subscribe()
    }

    /// Topics that have a ConsumeQueue.
    pub fn topics(&self) -> Vec<String> {
        self.shared.cqs.topics()
    }

    /// Queue ids of `topic` that exist in the store.
    pub fn queue_ids(&self, topic: &str) -> Vec<i32> {
        self.shared.cqs.queue_ids(topic)
    }

    pub fn stats(&self) -> StoreStats {
        let s = &self.shared.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StoreStats {
            put_requests: l(&s.put_requests),
            put_messages: l(&s.put_messages),
            put_bytes: l(&s.put_bytes),
            groups: l(&s.groups),
            sync_flushes: l(&s.sync_flushes),
            flushes: l(&s.flushes),
            flush_errors: l(&s.flush_errors),
            flush_timeouts: l(&s.flush_timeouts),
            rolls: l(&s.rolls),
            checkpoints: l(&s.checkpoints),
        }
    }

    /// Registers the function retention asks for the lowest CommitLog offset still needed by
    /// live state (see [`RetentionPin`]). Replaces an earlier one.
    pub fn set_retention_pin(&self, pin: RetentionPin) {
        *self.shared.retention.pin.write() = Some(pin);
    }

    /// When the last cleaning round kept a segment only because the retention pin needs it:
    /// the offset where that segment ends. State the broker can move (a pending timer or an
    /// undecided half message, by storing it again at the head of the log) should move above it
    /// so that the segment can go.
    pub fn retention_wanted(&self) -> Option<i64> {
        let w = self.shared.retention.wanted.load(Ordering::Acquire);
        (w != clean::NOT_WANTED).then_some(w)
    }

    /// DELETE_EXPIRED_COMMITLOG (RocketMQ's `executeDeleteFilesManually`): the next 20
    /// cleaning rounds delete expired files whatever the hour.
    pub fn delete_expired_files_manually(&self) {
        if let Some(tx) = self.clean_tx.lock().as_ref() {
            let _ = tx.send(clean::CleanMsg::Manual);
        }
    }

    /// Runs one cleaning round now (after any round in progress) and answers what it did;
    /// `None` once the store is stopped. Blocking.
    pub fn clean_now(&self) -> Option<clean::RoundReport> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.clean_tx
            .lock()
            .as_ref()?
            .send(clean::CleanMsg::RoundNow(tx))
            .ok()?;
        rx.recv_timeout(std::time::Duration::from_secs(120)).ok()
    }

    /// CLEAN_EXPIRED_CONSUMEQUEUE: moves every ConsumeQueue's minimum past the CommitLog's and
    /// deletes the files wholly below. Returns the files deleted.
    pub fn clean_expired_consume_queues(&self) -> usize {
        clean::clean_consume_queues(&self.shared, self.shared.commitlog.min_offset())
    }

    /// The retention settings in force.
    pub fn retention_settings(&self) -> RetentionSettings {
        self.shared.retention.settings.read().clone()
    }

    /// Changes the retention settings while the store runs (the cleaner's next round uses
    /// them). Refused, changing nothing, when the store's config with them would not pass
    /// [`StoreConfig::validate`].
    pub fn set_retention(&self, settings: RetentionSettings) -> Result<(), StoreError> {
        self.shared
            .config
            .clone()
            .with_retention(&settings)
            .validate()?;
        tracing::info!(?settings, "retention settings changed");
        *self.shared.retention.settings.write() = settings;
        Ok(())
    }

    /// Whether sends are refused because the disk is above its warning level.
    pub fn is_disk_full(&self) -> bool {
        self.shared.retention.disk_full.load(Ordering::Acquire)
    }

    /// Disk use, offsets and the next deletion, for `admin broker status`.
    pub fn retention_status(&self) -> RetentionStatus {
        let r = &self.shared.retention;
        let cfg = &self.shared.live_config();
        let segs = self.shared.commitlog.segments();
        let reserved = cfg.file_reserved_ms();
        let oldest_segment_expires_ms = match (segs.first(), segs.get(1)) {
            (Some(_), Some(next)) if (next.start_offset() as i64) < self.max_phy_offset() => self
                .shared
                .commitlog
                .store_timestamp_at(next.start_offset() as i64)
                .map(|t| t.saturating_add(reserved)),
            _ => None,
        };
        let pin = r.pin.read().clone();
        RetentionStatus {
            disk_used_percent: r.disk_used_permille.load(Ordering::Relaxed) as f64 / 10.0,
            disk_full: r.disk_full.load(Ordering::Acquire),
            min_phy_offset: self.min_phy_offset(),
            max_phy_offset: self.max_phy_offset(),
            segments: segs.len(),
            oldest_segment_expires_ms,
            delete_when: cfg.delete_when.clone(),
            segments_deleted: r.segments_deleted.load(Ordering::Relaxed),
            cq_files_deleted: r.cq_files_deleted.load(Ordering::Relaxed),
            pinned_at: pin.and_then(|p| p()),
        }
    }

    /// Whether the store refuses writes after a disk error.
    pub fn has_disk_error(&self) -> bool {
        self.shared.disk_error.load(Ordering::Acquire)
    }

    /// The failure that made the store read-only, if any.
    pub fn disk_error(&self) -> Option<String> {
        if self.has_disk_error() {
            self.shared.disk_error_cause.lock().clone()
        } else {
            None
        }
    }

    /// Test hook: arms a failure point (`"cq-flush"`, `"checkpoint"`) so the next operation
    /// there fails with an I/O error.
    #[cfg(test)]
    pub(crate) fn inject_failure(&self, point: &'static str) {
        self.shared.injected.lock().push(point);
    }

    /// Stops the threads; false if the store was already stopped (by another caller).
    fn stop(&self, graceful: bool) -> bool {
        let mut lc = self.lifecycle.lock();
        if *lc != Lifecycle::Running {
            return false;
        }
        *lc = Lifecycle::Stopped;
        self.accepting.store(false, Ordering::Release);
        if let Some(tx) = self.clean_tx.lock().take() {
            let _ = tx.send(clean::CleanMsg::Stop);
        }
        // The queue may be full under load: retry until the writer takes the stop.
        loop {
            match self.put_tx.try_send(WriterMsg::Stop { graceful }) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => break,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
            }
        }
        for t in self.threads.lock().drain(..) {
            if t.join().is_err() {
                tracing::error!("a store thread panicked");
            }
        }
        if let Some(index) = &self.index {
            index.stop();
        }
        true
    }

    /// Stops accepting writes, lets the writer finish what is queued, flushes the CommitLog and
    /// the ConsumeQueues, writes the checkpoint and removes the `abort` marker. Idempotent.
    /// Blocking (joins the store threads): from async code call it in `spawn_blocking`.
    ///
    /// After a disk error (before or during this final flush) the `abort` marker stays, so the
    /// next open recovers as after a crash, and the error is returned. The lock is released
    /// either way.
    pub fn shutdown(&self) -> Result<(), StoreError> {
        if !self.stop(true) {
            return Ok(());
        }
        let result = self.finish_shutdown();
        self.lock_file.lock().take();
        result
    }

    fn finish_shutdown(&self) -> Result<(), StoreError> {
        if self.has_disk_error() {
            tracing::warn!(
                "shutting down after a disk error: the next start recovers as after a crash"
            );
            return Err(self.shared.read_only_error());
        }
        let root = &self.shared.config.store_root;
        let abort = self.shared.config.abort_path();
        fs::remove_file(&abort).map_err(|e| StoreError::io(&abort, e))?;
        sync_dir(root).map_err(|e| StoreError::io(root, e))?;
        tracing::info!(
            max_phy_offset = self.max_phy_offset(),
            "message store shut down"
        );
        Ok(())
    }

    /// Test hook: stops the threads the way a crash would (no final flush, no checkpoint, the
    /// `abort` marker stays) and releases the lock so the store can be reopened in-process.
    /// What was written to the mapped files stays in the page cache, as after `kill -9`.
    pub fn crash_for_test(&self) {
        if self.stop(false) {
            self.lock_file.lock().take();
        }
    }
}

impl Drop for MessageStore {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "message store shutdown failed");
        }
    }
}
