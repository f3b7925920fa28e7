//! The Raft log on RocksDB.
//!
//! Layout: one RocksDB database with two column families.
//!
//! - [`CF_META`]: small records keyed by name: `vote`, `committed`, `last_purged_log_id`.
//! - [`CF_LOGS`]: one record per log entry, keyed by the entry index as a big-endian `u64` so that
//!   RocksDB's byte order is index order.
//!
//! Every value is one format-version byte ([`FORMAT_VERSION`]) followed by the JSON encoding of the
//! openraft type. RocksDB checksums its blocks and its write-ahead log and drops a torn WAL tail on
//! recovery, so a record is either wholly present or absent after a crash.
//!
//! Durability contract (what openraft requires of a [`RaftLogStorage`]):
//!
//! - [`RaftLogStorage::save_vote`] returns only after the vote is synced to disk.
//! - [`RaftLogStorage::append`] writes the batch with a WAL sync and calls the IO callback only
//!   after that write is durable; the entries are readable when `append` returns.
//! - [`RaftLogStorage::truncate_after`] is synced as well, so a truncated conflicting suffix never
//!   comes back after a crash.
//! - [`RaftLogStorage::purge`] and [`RaftLogStorage::save_committed`] are not synced: losing them in a
//!   crash only means re-purging or re-applying, which openraft handles. They are made durable by
//!   the next synced write.

use std::collections::BTreeSet;
use std::fmt;
use std::fmt::Debug;
use std::io;
use std::marker::PhantomData;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use openraft::alias::EntryOf;
use openraft::alias::LogIdOf;
use openraft::alias::VoteOf;
use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use openraft::type_config::TypeConfigExt;
use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::RaftTypeConfig;
use rocksdb::ColumnFamily;
use rocksdb::ColumnFamilyDescriptor;
use rocksdb::Direction;
use rocksdb::IteratorMode;
use rocksdb::Options;
use rocksdb::WriteBatch;
use rocksdb::WriteOptions;
use rocksdb::DB;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Column family holding the vote, the committed log id and the last purged log id.
pub const CF_META: &str = "meta";
/// Column family holding the log entries, keyed by big-endian `u64` index.
pub const CF_LOGS: &str = "logs";

/// Version byte in front of every stored value.
const FORMAT_VERSION: u8 = 1;

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged_log_id";

/// Errors of the RocksDB log store.
///
/// The openraft traits speak [`io::Error`]; these errors are wrapped into one (see the `From`
/// impl), with [`io::ErrorKind::InvalidData`] for anything that means the data on disk is not what
/// this store wrote.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    /// RocksDB itself failed (open, read, write, sync).
    #[error("rocksdb: {0}")]
    RocksDb(#[from] rocksdb::Error),

    /// The database lacks a column family this store needs.
    #[error("column family `{0}` is missing")]
    MissingColumnFamily(&'static str),

    /// A value could not be serialized.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// Which record.
        what: &'static str,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },

    /// A stored value could not be deserialized.
    #[error("cannot decode {what}: {source}")]
    Decode {
        /// Which record.
        what: &'static str,
        /// The deserializer's error.
        #[source]
        source: serde_json::Error,
    },

    /// A stored value is empty or carries a format version this code does not know.
    #[error("{what}: unsupported format version {found:?}, expected {FORMAT_VERSION}")]
    UnsupportedVersion {
        /// Which record.
        what: &'static str,
        /// The version byte found, `None` for an empty value.
        found: Option<u8>,
    },

    /// A key in the `logs` column family is not an 8-byte index.
    #[error("malformed log key of {0} bytes")]
    MalformedKey(usize),

    /// The entry stored under a key carries a different index.
    #[error("log entry stored under index {key} carries index {entry}")]
    IndexMismatch {
        /// Index from the key.
        key: u64,
        /// Index inside the entry.
        entry: u64,
    },

    /// The log has a hole inside a requested range.
    #[error("log hole: expected index {expected}, found {found}")]
    Hole {
        /// The index that should come next.
        expected: u64,
        /// The index actually found.
        found: u64,
    },
}

impl From<LogStoreError> for io::Error {
    fn from(e: LogStoreError) -> Self {
        let kind = match &e {
            LogStoreError::RocksDb(_)
            | LogStoreError::MissingColumnFamily(_)
            | LogStoreError::Encode { .. } => io::ErrorKind::Other,
            LogStoreError::Decode { .. }
            | LogStoreError::UnsupportedVersion { .. }
            | LogStoreError::MalformedKey(_)
            | LogStoreError::IndexMismatch { .. }
            | LogStoreError::Hole { .. } => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

/// The directories this process has opened a log store in (canonical paths).
///
/// A database closed by this process a moment ago may still be releasing its lock on another
/// thread. RocksDB reports that as an [`rocksdb::ErrorKind::IOError`], like any other I/O failure
/// (another process holding the lock included): only the message tells them apart. Rather than
/// match the message, [`RocksLogStore::open`] retries an `IOError` briefly only for a directory in
/// this set (an in-process reopen) and fails at once for any other.
static OPENED_DIRS: parking_lot::Mutex<BTreeSet<PathBuf>> =
    parking_lot::Mutex::new(BTreeSet::new());

fn opened_before(path: &Path) -> bool {
    path.canonicalize()
        .is_ok_and(|p| OPENED_DIRS.lock().contains(&p))
}

/// Raft log storage on RocksDB, for any openraft type config `C`.
///
/// The handle is cheap to clone (an `Arc` of the database); the log reader openraft asks for is such
/// a clone. The database directory is locked by RocksDB while any clone is alive.
pub struct RocksLogStore<C: RaftTypeConfig> {
    db: Arc<DB>,
    _c: PhantomData<fn() -> C>,
}

impl<C: RaftTypeConfig> Clone for RocksLogStore<C> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            _c: PhantomData,
        }
    }
}

impl<C: RaftTypeConfig> fmt::Debug for RocksLogStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksLogStore")
            .field("path", &self.db.path())
            .finish()
    }
}

impl<C: RaftTypeConfig> RocksLogStore<C> {
    /// Opens (or creates) the log store in directory `path`.
    ///
    /// Options are sized for a small machine: one background job for flushes and compactions.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LogStoreError> {
        let path = path.as_ref();
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(1);

        // A database closed by this process a moment ago may still be releasing its lock on
        // another thread (the last `Arc` drop runs the close after the count reaches zero):
        // retry that case briefly instead of failing an in-process restart. RocksDB gives the
        // lock error no kind of its own, so any I/O error on a directory this process opened
        // before is retried, for 5 s at most (see `OPENED_DIRS`).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let db = loop {
            let cfs = [CF_META, CF_LOGS]
                .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
            match DB::open_cf_descriptors(&opts, path, cfs) {
                Ok(db) => break db,
                Err(e)
                    if e.kind() == rocksdb::ErrorKind::IOError
                        && std::time::Instant::now() < deadline
                        && opened_before(path) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(e.into()),
            }
        };
        tracing::info!(path = %path.display(), "opened raft log store");
        Self::from_db(Arc::new(db))
    }

    /// Uses an already opened database, which must have the [`CF_META`] and [`CF_LOGS`] column
    /// families (for sharing one database with other data).
    pub fn from_db(db: Arc<DB>) -> Result<Self, LogStoreError> {
        for name in [CF_META, CF_LOGS] {
            if db.cf_handle(name).is_none() {
                return Err(LogStoreError::MissingColumnFamily(name));
            }
        }
        if let Ok(dir) = db.path().canonicalize() {
            OPENED_DIRS.lock().insert(dir);
        }
        Ok(Self {
            db,
            _c: PhantomData,
        })
    }

    /// A handle that tells when the database has been closed (every clone dropped).
    pub fn closed_watch(&self) -> std::sync::Weak<DB> {
        Arc::downgrade(&self.db)
    }

    /// The directory of the database.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    fn get_meta<T: DeserializeOwned>(
        &self,
        key: &'static [u8],
        what: &'static str,
    ) -> Result<Option<T>, LogStoreError> {
        let cf = cf(&self.db, CF_META)?;
        match self.db.get_pinned_cf(cf, key)? {
            None => Ok(None),
            Some(bytes) => decode(&bytes, what).map(Some),
        }
    }

    /// Runs a write batch on the blocking pool; `sync` makes it wait for the WAL fsync.
    async fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), io::Error> {
        let db = self.db.clone();
        let res = C::spawn_blocking(move || {
            let mut wo = WriteOptions::default();
            wo.set_sync(sync);
            db.write_opt(batch, &wo)
        })
        .await?;
        res.map_err(|e| io::Error::from(LogStoreError::from(e)))
    }

    fn last_entry(&self) -> Result<Option<EntryOf<C>>, LogStoreError> {
        let cf = cf(&self.db, CF_LOGS)?;
        match self.db.iterator_cf(cf, IteratorMode::End).next() {
            None => Ok(None),
            Some(item) => {
                let (key, value) = item?;
                decode_entry::<C>(&key, &value).map(Some)
            }
        }
    }
}

fn cf<'a>(db: &'a DB, name: &'static str) -> Result<&'a ColumnFamily, LogStoreError> {
    db.cf_handle(name)
        .ok_or(LogStoreError::MissingColumnFamily(name))
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(key: &[u8]) -> Result<u64, LogStoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| LogStoreError::MalformedKey(key.len()))?;
    Ok(u64::from_be_bytes(bytes))
}

fn encode<T: Serialize>(value: &T, what: &'static str) -> Result<Vec<u8>, LogStoreError> {
    let mut buf = vec![FORMAT_VERSION];
    serde_json::to_writer(&mut buf, value)
        .map_err(|source| LogStoreError::Encode { what, source })?;
    Ok(buf)
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T, LogStoreError> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, body)) => {
            serde_json::from_slice(body).map_err(|source| LogStoreError::Decode { what, source })
        }
        Some((&found, _)) => Err(LogStoreError::UnsupportedVersion {
            what,
            found: Some(found),
        }),
        None => Err(LogStoreError::UnsupportedVersion { what, found: None }),
    }
}

fn decode_entry<C: RaftTypeConfig>(key: &[u8], value: &[u8]) -> Result<EntryOf<C>, LogStoreError> {
    let key = key_index(key)?;
    let entry: EntryOf<C> = decode(value, "log entry")?;
    if entry.index() != key {
        return Err(LogStoreError::IndexMismatch {
            key,
            entry: entry.index(),
        });
    }
    Ok(entry)
}

impl<C: RaftTypeConfig> RaftLogReader<C> for RocksLogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => match i.checked_add(1) {
                Some(s) => s,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        };

        let cf = cf(&self.db, CF_LOGS)?;
        let start_key = index_key(start);
        // A RocksDB iterator reads from an implicit snapshot: the result is atomic.
        let iter = self
            .db
            .iterator_cf(cf, IteratorMode::From(&start_key, Direction::Forward));

        let mut entries: Vec<C::Entry> = Vec::new();
        for item in iter {
            let (key, value) = item.map_err(LogStoreError::from)?;
            let index = key_index(&key)?;
            if !range.contains(&index) {
                break;
            }
            if let Some(prev) = entries.last() {
                let expected = prev.index() + 1;
                if index != expected {
                    return Err(LogStoreError::Hole {
                        expected,
                        found: index,
                    }
                    .into());
                }
            }
            entries.push(decode_entry::<C>(&key, &value)?);
        }
        tracing::trace!(?range, n = entries.len(), "read log entries");
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        Ok(self.get_meta(KEY_VOTE, "vote")?)
    }
}

impl<C: RaftTypeConfig> RaftLogStorage<C> for RocksLogStore<C> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let last_purged_log_id: Option<LogIdOf<C>> =
            self.get_meta(KEY_LAST_PURGED, "last purged log id")?;
        let last_log_id = match self.last_entry()? {
            Some(entry) => Some(entry.log_id()),
            None => last_purged_log_id.clone(),
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_META)?, KEY_VOTE, encode(vote, "vote")?);
        self.write(batch, true).await?;
        tracing::debug!(vote = %vote, "saved vote (synced)");
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let mut batch = WriteBatch::default();
        let meta = cf(&self.db, CF_META)?;
        match &committed {
            Some(log_id) => batch.put_cf(meta, KEY_COMMITTED, encode(log_id, "committed log id")?),
            None => batch.delete_cf(meta, KEY_COMMITTED),
        }
        self.write(batch, false).await?;
        tracing::trace!(?committed, "saved committed");
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        Ok(self.get_meta(KEY_COMMITTED, "committed log id")?)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let logs = cf(&self.db, CF_LOGS)?;
        let mut first = None;
        let mut last = None;
        for entry in entries {
            let index = entry.index();
            first.get_or_insert(index);
            last = Some(index);
            batch.put_cf(logs, index_key(index), encode(&entry, "log entry")?);
        }
        // The synced write returns once the batch is in the fsynced WAL: readable and durable.
        self.write(batch, true).await?;
        tracing::debug!(?first, ?last, "appended log entries (synced)");
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let from = match &last_log_id {
            Some(log_id) => log_id.index().saturating_add(1),
            None => 0,
        };
        let logs = cf(&self.db, CF_LOGS)?;
        let mut batch = WriteBatch::default();
        // delete_range's end is exclusive: delete u64::MAX separately.
        batch.delete_range_cf(logs, index_key(from), index_key(u64::MAX));
        batch.delete_cf(logs, index_key(u64::MAX));
        self.write(batch, true).await?;
        tracing::debug!(?last_log_id, "truncated logs after (synced)");
        Ok(())
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        let mut batch = WriteBatch::default();
        // The last purged id and the deletion go in one atomic batch.
        batch.put_cf(
            cf(&self.db, CF_META)?,
            KEY_LAST_PURGED,
            encode(&log_id, "last purged log id")?,
        );
        let logs = cf(&self.db, CF_LOGS)?;
        let end = log_id.index().checked_add(1);
        match end {
            Some(end) => batch.delete_range_cf(logs, index_key(0), index_key(end)),
            None => {
                batch.delete_range_cf(logs, index_key(0), index_key(u64::MAX));
                batch.delete_cf(logs, index_key(u64::MAX));
            }
        }
        self.write(batch, false).await?;
        tracing::debug!(log_id = %log_id, "purged logs up to");
        Ok(())
    }
}
