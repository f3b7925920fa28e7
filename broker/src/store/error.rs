//! Store errors and the RocketMQ put status each maps to.

use std::io;
use std::path::PathBuf;

use super::{PutResult, PutStatus};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The message cannot be stored: too large, topic too long, bad properties
    /// (`MESSAGE_ILLEGAL` / `PROPERTIES_SIZE_EXCEEDED`).
    #[error("message illegal: {0}")]
    MessageIllegal(String),
    /// The message's properties encode to more than a record holds (`PROPERTIES_SIZE_EXCEEDED`;
    /// answered over Remoting as `MESSAGE_ILLEGAL`, like [`StoreError::MessageIllegal`]).
    #[error("message illegal: {0}")]
    PropertiesSizeExceeded(String),
    /// The store refuses writes: shutting down, or a disk error made it stop
    /// (`SERVICE_NOT_AVAILABLE`).
    #[error("store not available: {0}")]
    ServiceNotAvailable(String),
    /// A write, sync, flush or checkpoint failed: the store refuses every further write until
    /// it is restarted (what is on disk after a failed sync is unknown; the next open recovers
    /// as after a crash). Carries the first failure. The Remoting processors answer it with
    /// `SYSTEM_ERROR` and this text.
    #[error("store is read-only after a disk error: {0}")]
    ReadOnly(String),
    /// A SYNC_FLUSH send whose bytes were not synced in time, or whose sync failed. The record was
    /// appended (the result says where) but is not known to be durable (`FLUSH_DISK_TIMEOUT`).
    #[error("flush to disk failed or timed out (record at physical offset {})", .0.physical_offset)]
    FlushDiskTimeout(Box<PutResult>),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// On-disk data contradicts itself in a way recovery cannot repair.
    #[error("store corrupted: {0}")]
    Corrupted(String),
    #[error("store configuration: {0}")]
    Config(String),
    #[error("metadata store: {0}")]
    Metadata(String),
    /// Replicated bytes were offered at another offset than the end of this replica's log.
    #[error("replication offset mismatch: the log ends at {expected}, the data starts at {got}")]
    OffsetMismatch { expected: i64, got: i64 },
    /// Replicated bytes that cannot be appended (bad records, different segment sizes) or a
    /// truncation that cannot be done.
    #[error("replication: {0}")]
    Replication(String),
    /// Another process (or another `MessageStore` in this one) holds the store's lock file.
    #[error("the store at {0} is already open")]
    AlreadyOpen(PathBuf),
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }

    /// The RocketMQ put status this error answers with.
    pub fn put_status(&self) -> PutStatus {
        match self {
            StoreError::PropertiesSizeExceeded(_) => PutStatus::PropertiesSizeExceeded,
            StoreError::MessageIllegal(_) => PutStatus::MessageIllegal,
            StoreError::FlushDiskTimeout(_) => PutStatus::FlushDiskTimeout,
            StoreError::ServiceNotAvailable(_) | StoreError::ReadOnly(_) => {
                PutStatus::ServiceNotAvailable
            }
            StoreError::Io { .. } => PutStatus::CreateMappedFileFailed,
            _ => PutStatus::UnknownError,
        }
    }
}

impl From<rocksdb::Error> for StoreError {
    fn from(e: rocksdb::Error) -> Self {
        StoreError::Metadata(e.to_string())
    }
}
