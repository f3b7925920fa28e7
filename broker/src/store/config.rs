//! Store configuration: where the files live, how big they are and when they are flushed.
//!
//! Field names are ours (snake_case in TOML); RocketMQ's `MessageStoreConfig` names are accepted
//! as aliases so operators can carry their settings over.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use serde::Serialize;

use super::error::StoreError;

/// When a send is acknowledged relative to the disk (`flushDiskType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FlushDiskType {
    /// Acknowledge once the record is in the page cache; a flusher syncs every
    /// `flush_interval_ms`. Survives a process crash, not a power loss.
    #[default]
    #[serde(rename = "ASYNC_FLUSH", alias = "async", alias = "AsyncFlush")]
    AsyncFlush,
    /// Acknowledge only after the record's bytes are synced to disk (group commit: one sync
    /// covers every record appended before it).
    #[serde(rename = "SYNC_FLUSH", alias = "sync", alias = "SyncFlush")]
    SyncFlush,
}

/// A `--flush` / `flushDiskType` value that names no flush type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown flush type {0:?}: use ASYNC_FLUSH or SYNC_FLUSH")]
pub struct UnknownFlushType(pub String);

impl std::str::FromStr for FlushDiskType {
    type Err = UnknownFlushType;

    /// RocketMQ's names (`ASYNC_FLUSH`, `SYNC_FLUSH`), in any case, `-` for `_`, or short.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().replace('-', "_").as_str() {
            "ASYNC_FLUSH" | "ASYNC" => Ok(FlushDiskType::AsyncFlush),
            "SYNC_FLUSH" | "SYNC" => Ok(FlushDiskType::SyncFlush),
            other => Err(UnknownFlushType(other.to_string())),
        }
    }
}

/// The retention settings a running store can change ([`super::MessageStore::set_retention`],
/// UPDATE_BROKER_CONFIG): how long segments are kept, when expired ones go, and the disk levels.
/// The cleaner reads them at every round; nothing else in the store depends on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionSettings {
    pub file_reserved_time: u64,
    pub file_reserved_time_secs: Option<u64>,
    pub delete_when: String,
    pub disk_max_used_space_ratio: u32,
    pub disk_space_clean_forcibly_ratio: u32,
    pub disk_space_warning_level_ratio: u32,
    pub clean_file_forcibly_enable: bool,
}

/// Configuration of the [`MessageStore`](super::MessageStore).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreConfig {
    /// Root directory: `commitlog/`, `consumequeue/`, `metadata/`, `checkpoint`, `abort`, `lock`.
    #[serde(alias = "storePathRootDir")]
    pub store_root: PathBuf,
    /// Bytes per CommitLog segment file (`mappedFileSizeCommitLog`, 1 GiB).
    #[serde(alias = "mappedFileSizeCommitLog")]
    pub commitlog_segment_size: u64,
    /// Entries (20 bytes each) per ConsumeQueue file (300,000 as in RocketMQ).
    #[serde(alias = "consumeQueueEntriesPerFile")]
    pub consume_queue_entries_per_file: u32,
    #[serde(alias = "flushDiskType")]
    pub flush_disk_type: FlushDiskType,
    /// How often the flusher syncs the CommitLog under ASYNC_FLUSH (`flushIntervalCommitLog`).
    #[serde(alias = "flushIntervalCommitLog")]
    pub flush_interval_ms: u64,
    /// A SYNC_FLUSH send not synced within this time is answered FLUSH_DISK_TIMEOUT
    /// (`syncFlushTimeout`).
    #[serde(alias = "syncFlushTimeout")]
    pub sync_flush_timeout_ms: u64,
    /// Largest body accepted (`maxMessageSize`, 4 MiB).
    #[serde(alias = "maxMessageSize")]
    pub max_message_size: usize,
    /// The address written as STOREHOST into every record and into offset message ids. A broker
    /// sets it to its advertised address, so a written config leaves the default out.
    #[serde(alias = "brokerAddr", skip_serializing_if = "is_default_store_host")]
    pub store_host: SocketAddr,
    /// Write a zero into every page of a new segment before the writer uses it, so appends do
    /// not page-fault (`warmMapedFileEnable`).
    #[serde(alias = "warmMapedFileEnable")]
    pub pretouch: bool,
    /// The writer drains queued requests into one group up to this many bytes: one sync and one
    /// arrival notification per group.
    #[serde(alias = "maxBatchBytes")]
    pub max_batch_bytes: usize,
    /// Requests per group at most.
    pub max_batch_requests: usize,
    /// Capacity, in requests, of the queue in front of the writer; senders wait when it is full.
    pub put_queue_capacity: usize,
    /// How often the flusher syncs the ConsumeQueues and writes the checkpoint.
    #[serde(alias = "flushIntervalConsumeQueue")]
    pub checkpoint_interval_ms: u64,
    /// Verify the whole CommitLog at open instead of starting from the checkpoint's segment.
    pub recover_full_scan: bool,
    /// Most ConsumeQueue entries one `get_messages` scans when a filter skips messages
    /// (RocketMQ's `maxFilterMessageSize` is 16,000 bytes = 800 entries).
    pub max_filter_scan_entries: usize,
    /// Where the CommitLog segments live (`storePathCommitLog`); `{store_root}/commitlog` when
    /// unset.
    #[serde(alias = "storePathCommitLog", skip_serializing_if = "Option::is_none")]
    pub commitlog_path: Option<PathBuf>,

    // Retention (RocketMQ's `CleanCommitLogService` / `CleanConsumeQueueService` keys).
    /// Hours a CommitLog segment is kept after its last message (`fileReservedTime`, 72).
    #[serde(alias = "fileReservedTime")]
    pub file_reserved_time: u64,
    /// Ours, for tests and soaks: the reserved time in seconds; overrides `file_reserved_time`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_reserved_time_secs: Option<u64>,
    /// Hours of the day (local time of the broker host, `;`-separated) when expired files are
    /// deleted (`deleteWhen`, `"04"`).
    #[serde(alias = "deleteWhen")]
    pub delete_when: String,
    /// Above this percentage of the store's disk in use, expired files are deleted at any hour
    /// (`diskMaxUsedSpaceRatio`, 75).
    #[serde(alias = "diskMaxUsedSpaceRatio")]
    pub disk_max_used_space_ratio: u32,
    /// Above this percentage the oldest files are deleted even if not expired
    /// (`diskSpaceCleanForciblyRatio`, 85).
    #[serde(alias = "diskSpaceCleanForciblyRatio")]
    pub disk_space_clean_forcibly_ratio: u32,
    /// Above this percentage sends are refused until space is back
    /// (`diskSpaceWarningLevelRatio`, 90).
    #[serde(alias = "diskSpaceWarningLevelRatio")]
    pub disk_space_warning_level_ratio: u32,
    /// Whether the oldest files may go before they expire when the disk is short
    /// (`cleanFileForciblyEnable`).
    #[serde(alias = "cleanFileForciblyEnable")]
    pub clean_file_forcibly_enable: bool,
    /// How often the cleaner looks at the disk and the files (`cleanResourceInterval`, 10 s).
    #[serde(alias = "cleanResourceInterval")]
    pub clean_resource_interval_ms: u64,
    /// Pause between two CommitLog segment deletions (`deleteCommitLogFilesInterval`, 100 ms).
    #[serde(alias = "deleteCommitLogFilesInterval")]
    pub delete_commit_log_files_interval_ms: u64,
    /// Pause between two ConsumeQueue file deletions (`deleteConsumeQueueFilesInterval`).
    #[serde(alias = "deleteConsumeQueueFilesInterval")]
    pub delete_consume_queue_files_interval_ms: u64,
    /// A segment still referenced by readers this long after it left the chain is deleted
    /// anyway (`destroyMapedFileIntervalForcibly`, 120 s).
    #[serde(alias = "destroyMapedFileIntervalForcibly")]
    pub destroy_mapped_file_interval_forcibly_ms: u64,

    // Index by key and unique key.
    /// Index `KEYS` and `UNIQ_KEY` for QUERY_MESSAGE (`messageIndexEnable`).
    #[serde(alias = "messageIndexEnable")]
    pub message_index_enable: bool,
    /// Most messages one QUERY_MESSAGE returns (`maxMsgsNumBatch`, 64).
    #[serde(alias = "maxMsgsNumBatch")]
    pub max_msgs_num_batch: u32,

    /// Not a configuration key (never read from nor written to a file): the async entry
    /// points that hand work to the writer thread (`put_message(s)`, `append_replicated`,
    /// `truncate_to`, `reset_to`, `seed_queue_offsets`) wait for its answer by blocking the
    /// calling thread instead of yielding. For the deterministic simulation (`sim/`): on its
    /// single runtime thread under a paused clock nothing else runs and no simulated time
    /// passes while the writer works, so the outcome follows from the seed whatever the thread
    /// takes. The store's other threads act only when asked, so that nothing happens beside
    /// the simulation's thread as the OS schedules it: the CommitLog's next segment is
    /// prepared by the writer itself (no allocator thread), and the cleaner's first round, which
    /// reads the wall clock and the real disk's usage, does not run at open. Never set in a
    /// broker: it would stall a runtime worker for every write.
    #[serde(skip)]
    pub blocking_io: bool,
}

fn default_store_host() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10911))
}

fn is_default_store_host(host: &SocketAddr) -> bool {
    *host == default_store_host()
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            store_root: PathBuf::from("data/store"),
            commitlog_segment_size: 1 << 30,
            consume_queue_entries_per_file: 300_000,
            flush_disk_type: FlushDiskType::AsyncFlush,
            flush_interval_ms: 500,
            sync_flush_timeout_ms: 5_000,
            max_message_size: rocketraft_common::consts::DEFAULT_MAX_MESSAGE_SIZE,
            store_host: default_store_host(),
            pretouch: true,
            max_batch_bytes: 4 << 20,
            max_batch_requests: 4096,
            put_queue_capacity: 16_384,
            checkpoint_interval_ms: 1_000,
            recover_full_scan: false,
            max_filter_scan_entries: 800,
            commitlog_path: None,
            file_reserved_time: 72,
            file_reserved_time_secs: None,
            delete_when: "04".into(),
            disk_max_used_space_ratio: 75,
            disk_space_clean_forcibly_ratio: 85,
            disk_space_warning_level_ratio: 90,
            clean_file_forcibly_enable: true,
            clean_resource_interval_ms: 10_000,
            delete_commit_log_files_interval_ms: 100,
            delete_consume_queue_files_interval_ms: 100,
            destroy_mapped_file_interval_forcibly_ms: 120_000,
            message_index_enable: true,
            max_msgs_num_batch: 64,
            blocking_io: false,
        }
    }
}

/// Smallest segment we accept: a page multiple that holds a few records.
pub const MIN_SEGMENT_SIZE: u64 = 4096;

impl StoreConfig {
    /// A config rooted at `root` with everything else default; the `with_*` builders set the
    /// other keys a generated config sets.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StoreConfig {
            store_root: root.into(),
            ..StoreConfig::default()
        }
    }

    pub fn with_store_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.store_root = root.into();
        self
    }

    pub fn with_flush_disk_type(mut self, flush: FlushDiskType) -> Self {
        self.flush_disk_type = flush;
        self
    }

    pub fn with_commitlog_segment_size(mut self, bytes: u64) -> Self {
        self.commitlog_segment_size = bytes;
        self
    }

    /// Checks the values at start, with a message that names the field.
    pub fn validate(&self) -> Result<(), StoreError> {
        let bad = |m: String| Err(StoreError::Config(m));
        if self.commitlog_segment_size < MIN_SEGMENT_SIZE
            || !self.commitlog_segment_size.is_multiple_of(MIN_SEGMENT_SIZE)
        {
            return bad(format!(
                "commitlog_segment_size {} must be a multiple of {MIN_SEGMENT_SIZE}",
                self.commitlog_segment_size
            ));
        }
        if self.commitlog_segment_size > i32::MAX as u64 {
            // Record positions inside a segment are handled as i32 by RocketMQ tools.
            return bad(format!(
                "commitlog_segment_size {} exceeds 2 GiB",
                self.commitlog_segment_size
            ));
        }
        if self.consume_queue_entries_per_file == 0
            || self.consume_queue_entries_per_file > 10_000_000
        {
            return bad("consume_queue_entries_per_file must be in 1..=10,000,000".into());
        }
        if self.max_message_size == 0 || self.max_message_size > 64 << 20 {
            return bad("max_message_size must be in 1..=64 MiB".into());
        }
        if self.max_batch_bytes == 0 || self.max_batch_requests == 0 || self.put_queue_capacity == 0
        {
            return bad(
                "max_batch_bytes, max_batch_requests and put_queue_capacity must be > 0".into(),
            );
        }
        if self.flush_interval_ms == 0 || self.checkpoint_interval_ms == 0 {
            return bad("flush_interval_ms and checkpoint_interval_ms must be > 0".into());
        }
        if self.max_filter_scan_entries == 0 {
            return bad("max_filter_scan_entries must be > 0".into());
        }
        for (key, v) in [
            ("disk_max_used_space_ratio", self.disk_max_used_space_ratio),
            (
                "disk_space_clean_forcibly_ratio",
                self.disk_space_clean_forcibly_ratio,
            ),
            (
                "disk_space_warning_level_ratio",
                self.disk_space_warning_level_ratio,
            ),
        ] {
            if v > 100 {
                return bad(format!("{key} {v} is a percentage: use 0..=100"));
            }
        }
        if let Err(part) = super::clean::parse_delete_when(&self.delete_when) {
            return bad(format!(
                "delete_when (deleteWhen) {:?}: {part:?} is not an hour of the day; use hours 00..23 separated by ';', e.g. \"04\" or \"04;16\"",
                self.delete_when
            ));
        }
        if self.clean_resource_interval_ms == 0 {
            return bad("clean_resource_interval_ms (cleanResourceInterval) must be > 0".into());
        }
        Ok(())
    }

    /// The retention settings in force at start (see [`RetentionSettings`]).
    pub fn retention(&self) -> RetentionSettings {
        RetentionSettings {
            file_reserved_time: self.file_reserved_time,
            file_reserved_time_secs: self.file_reserved_time_secs,
            delete_when: self.delete_when.clone(),
            disk_max_used_space_ratio: self.disk_max_used_space_ratio,
            disk_space_clean_forcibly_ratio: self.disk_space_clean_forcibly_ratio,
            disk_space_warning_level_ratio: self.disk_space_warning_level_ratio,
            clean_file_forcibly_enable: self.clean_file_forcibly_enable,
        }
    }

    /// This config with `settings` in place of its retention settings.
    pub fn with_retention(mut self, settings: &RetentionSettings) -> StoreConfig {
        self.file_reserved_time = settings.file_reserved_time;
        self.file_reserved_time_secs = settings.file_reserved_time_secs;
        self.delete_when = settings.delete_when.clone();
        self.disk_max_used_space_ratio = settings.disk_max_used_space_ratio;
        self.disk_space_clean_forcibly_ratio = settings.disk_space_clean_forcibly_ratio;
        self.disk_space_warning_level_ratio = settings.disk_space_warning_level_ratio;
        self.clean_file_forcibly_enable = settings.clean_file_forcibly_enable;
        self
    }

    /// How long a segment is kept after its last message, in ms: `file_reserved_time_secs`
    /// when set, else `file_reserved_time` hours.
    pub fn file_reserved_ms(&self) -> i64 {
        match self.file_reserved_time_secs {
            Some(s) => (s as i64).saturating_mul(1000),
            None => (self.file_reserved_time as i64).saturating_mul(3_600_000),
        }
    }

    pub fn commitlog_dir(&self) -> PathBuf {
        self.commitlog_path
            .clone()
            .unwrap_or_else(|| self.store_root.join("commitlog"))
    }
    pub fn consume_queue_dir(&self) -> PathBuf {
        self.store_root.join("consumequeue")
    }
    pub fn metadata_dir(&self) -> PathBuf {
        self.store_root.join("metadata")
    }
    pub fn checkpoint_path(&self) -> PathBuf {
        self.store_root.join("checkpoint")
    }
    pub fn abort_path(&self) -> PathBuf {
        self.store_root.join("abort")
    }
    pub fn lock_path(&self) -> PathBuf {
        self.store_root.join("lock")
    }
    /// The epoch file (which master epoch wrote which part of the CommitLog).
    pub fn epoch_path(&self) -> PathBuf {
        self.store_root.join("epoch")
    }
    /// Present while a truncation is in progress: holds the target offset.
    pub fn truncate_marker_path(&self) -> PathBuf {
        self.store_root.join("truncate")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_aliases() {
        let c: StoreConfig = serde_json::from_str(
            r#"{"storePathRootDir":"/x","flushDiskType":"SYNC_FLUSH","mappedFileSizeCommitLog":65536}"#,
        )
        .expect("parse");
        assert_eq!(c.flush_disk_type, FlushDiskType::SyncFlush);
        assert_eq!(c.commitlog_segment_size, 65536);
        assert_eq!(c.consume_queue_entries_per_file, 300_000);
        assert_eq!(c.flush_interval_ms, 500);
        assert!(c.validate().is_ok());
        let d = StoreConfig::default();
        assert_eq!(d.commitlog_segment_size, 1 << 30);
        assert_eq!(d.flush_disk_type, FlushDiskType::AsyncFlush);
        let bad = StoreConfig {
            commitlog_segment_size: 1000,
            ..StoreConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    fn round_trip(config: &StoreConfig) -> StoreConfig {
        let text = toml::to_string(config).expect("serializes");
        toml::from_str(&text).unwrap_or_else(|e| panic!("does not parse back: {e}\n{text}"))
    }

    #[test]
    fn serialized_config_parses_back_identically() {
        let default = StoreConfig::default();
        assert_eq!(round_trip(&default), default);
        let custom = StoreConfig {
            consume_queue_entries_per_file: 1_000,
            flush_interval_ms: 100,
            sync_flush_timeout_ms: 1_000,
            max_message_size: 16_384,
            store_host: SocketAddr::from(([10, 0, 0, 1], 30020)),
            pretouch: false,
            max_batch_bytes: 1 << 20,
            max_batch_requests: 64,
            put_queue_capacity: 128,
            checkpoint_interval_ms: 200,
            recover_full_scan: true,
            max_filter_scan_entries: 100,
            ..StoreConfig::default()
                .with_store_root("/d/store")
                .with_flush_disk_type(FlushDiskType::SyncFlush)
                .with_commitlog_segment_size(1 << 20)
        };
        assert_eq!(round_trip(&custom), custom);
        assert!(custom.validate().is_ok());
        let text = toml::to_string(&default).expect("serializes");
        assert!(!text.contains("store_host"), "{text}");
        for flush in [FlushDiskType::AsyncFlush, FlushDiskType::SyncFlush] {
            let text = toml::to_string(&StoreConfig::default().with_flush_disk_type(flush))
                .expect("serializes");
            let name = match flush {
                FlushDiskType::AsyncFlush => "ASYNC_FLUSH",
                FlushDiskType::SyncFlush => "SYNC_FLUSH",
            };
            assert!(
                text.contains(&format!("flush_disk_type = \"{name}\"")),
                "{text}"
            );
        }
    }
}
