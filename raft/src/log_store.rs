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
//!
//! A full disk (issue 15 item 3). A failed write is fatal to an openraft node, and a RocksDB
//! write that fails with an I/O error (ENOSPC above all) stops the database (a background
//! error: no further writes, reads go on; rust-rocksdb has no `DB::resume`). So a write that
//! fails with an I/O error is not returned to openraft: the store marks itself **stalled**
//! ([`LogWatch::stalled`] says why; the node refuses new client writes and reads with a clear
//! error while it is), and retries: every [`STALL_RETRY`] it checks that the filesystem has room
//! again (it writes and removes a [`SPACE_PROBE_BYTES`] probe file), closes the stopped handle and
//! reopens the database, which recovers from its WAL as after a crash (a torn tail is cut), and
//! writes the same batch again (every batch is idempotent: puts of entries at their index, the
//! vote, range deletions). Only then does the write return, and the entries are acknowledged.
//! Meanwhile openraft waits for the write as for a slow disk: nothing is acknowledged, nothing
//! committed is lost, and peers see a node that is paused. [`LogWatch::close`] (node shutdown)
//! ends the wait with an error. Should the reopen fail, a read-only handle serves reads until a
//! later attempt succeeds.

use std::collections::BTreeSet;
use std::fmt;
use std::fmt::Debug;
use std::io;
use std::marker::PhantomData;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Weak;
use std::time::Duration;

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

/// How often a stalled write checks whether the disk has room again.
pub const STALL_RETRY: Duration = Duration::from_millis(250);
/// Bytes the space probe writes (and syncs) before a stalled store reopens its database.
pub const SPACE_PROBE_BYTES: usize = 1 << 20;

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

    /// The database is closed: a reopen after a disk error failed, or the node shuts down.
    #[error("the raft log at {} is closed ({why})", .path.display())]
    Closed {
        /// The database directory.
        path: PathBuf,
        /// Why.
        why: String,
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
            | LogStoreError::Closed { .. }
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
/// The handle is cheap to clone (an `Arc` of the shared state); the log reader openraft asks for
/// is such a clone. The database directory is locked by RocksDB while any clone is alive.
pub struct RocksLogStore<C: RaftTypeConfig> {
    shared: Arc<Shared>,
    _c: PhantomData<fn() -> C>,
}

/// What every clone of a store shares: the database handle (replaced by a reopen) and the
/// stall state.
/// A handle of the database, counted in `open` until its destructor has returned (RocksDB
/// closes the database there, and may still write its files while it does).
struct OpenDb {
    db: Option<Arc<DB>>,
    open: Arc<AtomicUsize>,
}

impl OpenDb {
    fn new(db: Arc<DB>, open: &Arc<AtomicUsize>) -> Arc<OpenDb> {
        open.fetch_add(1, Ordering::AcqRel);
        Arc::new(OpenDb {
            db: Some(db),
            open: open.clone(),
        })
    }
}

impl std::ops::Deref for OpenDb {
    type Target = DB;

    fn deref(&self) -> &DB {
        // `None` only inside `drop`.
        self.db
            .as_deref()
            .expect("the database handle is alive until dropped")
    }
}

impl Drop for OpenDb {
    fn drop(&mut self) {
        drop(self.db.take());
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Shared {
    path: PathBuf,
    /// `None` only while a reopen failed and no read-only handle could be opened either.
    db: parking_lot::RwLock<Option<Arc<OpenDb>>>,
    /// Handles of the database not closed yet (see [`OpenDb`]).
    open: Arc<AtomicUsize>,
    /// Whether `db` is a read-only handle (a reopen failed).
    read_only: AtomicBool,
    /// Why writes wait (`None`: they do not).
    stall: tokio::sync::watch::Sender<Option<String>>,
    /// Set by [`LogWatch::close`]: a stalled write gives up.
    closing: AtomicBool,
}

impl Shared {
    fn db(&self) -> Result<Arc<OpenDb>, LogStoreError> {
        self.db.read().clone().ok_or_else(|| LogStoreError::Closed {
            path: self.path.clone(),
            why: "a reopen after a disk error failed".into(),
        })
    }

    fn set_stall(&self, why: Option<String>) {
        self.stall.send_if_modified(|s| {
            let changed = s.is_some() != why.is_some();
            if changed {
                *s = why;
            }
            changed
        });
    }

    /// Whether the filesystem takes [`SPACE_PROBE_BYTES`] again (written, synced, removed).
    fn has_room(&self) -> Result<(), String> {
        use std::io::Write;
        let probe = self.path.join(".space-probe");
        let result = std::fs::File::create(&probe).and_then(|mut f| {
            f.write_all(&vec![0u8; SPACE_PROBE_BYTES])?;
            f.sync_all()
        });
        let _ = std::fs::remove_file(&probe);
        result.map_err(|e| format!("no room yet: {e}"))
    }

    /// Closes the stopped handle and reopens the database (blocking).
    fn reopen(&self) -> Result<(), String> {
        self.has_room()?;
        let mut slot = self.db.write();
        if let Some(db) = slot.as_ref() {
            // Reads in flight hold the old handle for a moment; it must be closed to reopen.
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while Arc::strong_count(db) > 1 {
                if std::time::Instant::now() >= deadline {
                    return Err("the old handle is still in use".into());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        drop(slot.take());
        match open_db(&self.path) {
            Ok(db) => {
                *slot = Some(OpenDb::new(Arc::new(db), &self.open));
                self.read_only.store(false, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                let mut opts = Options::default();
                opts.create_if_missing(false);
                *slot = DB::open_cf_for_read_only(&opts, &self.path, [CF_META, CF_LOGS], false)
                    .map(|db| OpenDb::new(Arc::new(db), &self.open))
                    .map_err(|e| tracing::error!(path = %self.path.display(), error = %e, "cannot open the raft log read-only either"))
                    .ok();
                self.read_only.store(slot.is_some(), Ordering::Release);
                Err(format!("reopen failed: {e}"))
            }
        }
    }
}

/// What a node keeps of its log store: whether writes wait for the disk, the switch that ends
/// that wait at shutdown, and whether every handle is gone.
#[derive(Clone)]
pub struct LogWatch {
    shared: Weak<Shared>,
    /// Handles of the database not closed yet.
    open: Arc<AtomicUsize>,
    stall: tokio::sync::watch::Receiver<Option<String>>,
}

impl LogWatch {
    /// Why the log's writes wait (the disk is full or failing), if they do.
    pub fn stalled(&self) -> Option<String> {
        self.stall.borrow().clone()
    }

    /// A receiver that changes when the log stalls or resumes.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.stall.clone()
    }

    /// Makes a stalled write give up (with an error, fatal to the Raft node): for shutdown.
    pub fn close(&self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.closing.store(true, Ordering::Release);
        }
    }

    /// Whether every handle of the store is dropped and the database closed (its destructor
    /// returned: its files written, its lock released).
    pub fn is_closed(&self) -> bool {
        self.shared.strong_count() == 0 && self.open.load(Ordering::Acquire) == 0
    }
}

impl<C: RaftTypeConfig> Clone for RocksLogStore<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            _c: PhantomData,
        }
    }
}

impl<C: RaftTypeConfig> fmt::Debug for RocksLogStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksLogStore")
            .field("path", &self.shared.path)
            .finish()
    }
}

/// Opens the database at `path`, retrying briefly a lock this process released a moment ago.
fn open_db(path: &Path) -> Result<DB, rocksdb::Error> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_max_background_jobs(1);

    // A database closed by this process a moment ago may still be releasing its lock on
    // another thread (the last `Arc` drop runs the close after the count reaches zero):
    // retry that case briefly instead of failing an in-process restart. RocksDB gives the
    // lock error no kind of its own, so any I/O error on a directory this process opened
    // before is retried, for 5 s at most (see `OPENED_DIRS`).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let cfs =
            [CF_META, CF_LOGS].map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        match DB::open_cf_descriptors(&opts, path, cfs) {
            Ok(db) => return Ok(db),
            Err(e)
                if e.kind() == rocksdb::ErrorKind::IOError
                    && std::time::Instant::now() < deadline
                    && opened_before(path) =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

impl<C: RaftTypeConfig> RocksLogStore<C> {
    /// Opens (or creates) the log store in directory `path`.
    ///
    /// Options are sized for a small machine: one background job for flushes and compactions.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LogStoreError> {
        let path = path.as_ref();
        let db = open_db(path)?;
        tracing::info!(path = %path.display(), "opened raft log store");
        Self::from_db(Arc::new(db))
    }

    /// Uses an already opened database, which must have the [`CF_META`] and [`CF_LOGS`] column
    /// families (for sharing one database with other data). A store whose database is shared
    /// cannot reopen it after a disk error (the other handles keep it open): its writes wait
    /// until those are dropped.
    pub fn from_db(db: Arc<DB>) -> Result<Self, LogStoreError> {
        for name in [CF_META, CF_LOGS] {
            if db.cf_handle(name).is_none() {
                return Err(LogStoreError::MissingColumnFamily(name));
            }
        }
        if let Ok(dir) = db.path().canonicalize() {
            OPENED_DIRS.lock().insert(dir);
        }
        let (stall, _) = tokio::sync::watch::channel(None);
        let open = Arc::new(AtomicUsize::new(0));
        Ok(Self {
            shared: Arc::new(Shared {
                path: db.path().to_path_buf(),
                db: parking_lot::RwLock::new(Some(OpenDb::new(db, &open))),
                open,
                read_only: AtomicBool::new(false),
                stall,
                closing: AtomicBool::new(false),
            }),
            _c: PhantomData,
        })
    }

    /// The node's view of this store: stalls, shutdown, closure.
    pub fn watch(&self) -> LogWatch {
        LogWatch {
            shared: Arc::downgrade(&self.shared),
            open: self.shared.open.clone(),
            stall: self.shared.stall.subscribe(),
        }
    }

    /// The directory of the database.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    fn db(&self) -> Result<Arc<OpenDb>, LogStoreError> {
        self.shared.db()
    }

    fn get_meta<T: DeserializeOwned>(
        &self,
        key: &'static [u8],
        what: &'static str,
    ) -> Result<Option<T>, LogStoreError> {
        let db = self.db()?;
        let cf = cf(&db, CF_META)?;
        let value = match db.get_pinned_cf(cf, key)? {
            None => Ok(None),
            Some(bytes) => decode(&bytes, what).map(Some),
        };
        value
    }

    /// Runs a write batch on the blocking pool; `sync` makes it wait for the WAL fsync. A batch
    /// that fails with an I/O error waits for the disk and is written again (module docs).
    async fn write(
        &self,
        what: &'static str,
        build: impl Fn(&DB, &mut WriteBatch) -> Result<(), LogStoreError>,
        sync: bool,
    ) -> Result<(), io::Error> {
        let shared = &self.shared;
        let mut attempt = 0u64;
        loop {
            attempt += 1;
            let result = if shared.read_only.load(Ordering::Acquire) {
                None
            } else {
                let db = self.db()?;
                let mut batch = WriteBatch::default();
                build(&db, &mut batch)?;
                let res = C::spawn_blocking(move || {
                    let mut wo = WriteOptions::default();
                    wo.set_sync(sync);
                    db.write_opt(batch, &wo)
                })
                .await?;
                Some(res)
            };
            match result {
                Some(Ok(())) => {
                    if shared.stall.borrow().is_some() {
                        shared.set_stall(None);
                        tracing::warn!(path = %shared.path.display(), what, attempts = attempt, "the raft log is written again; the node resumes");
                    }
                    return Ok(());
                }
                Some(Err(e)) if e.kind() != rocksdb::ErrorKind::IOError => {
                    return Err(LogStoreError::from(e).into())
                }
                Some(Err(e)) if shared.stall.borrow().is_none() => {
                    let no_space = e.to_string().contains("No space left");
                    let why = if no_space {
                        format!(
                            "no space left on the disk of the raft log at {} ({e})",
                            shared.path.display()
                        )
                    } else {
                        format!(
                            "the raft log at {} failed a write ({e})",
                            shared.path.display()
                        )
                    };
                    tracing::error!(what, error = %e, no_space, "{why}: the node waits for the disk and refuses client requests; it resumes by itself once the log can be written");
                    shared.set_stall(Some(why));
                }
                Some(Err(_)) | None => {}
            }
            // Wait for the disk, then reopen (which also cuts a torn tail) and write again.
            let deadline = std::time::Instant::now() + STALL_RETRY;
            while std::time::Instant::now() < deadline {
                if shared.closing.load(Ordering::Acquire) {
                    let why = shared.stall.borrow().clone().unwrap_or_default();
                    return Err(LogStoreError::Closed {
                        path: shared.path.clone(),
                        why: format!("shut down while waiting for the disk: {why}"),
                    }
                    .into());
                }
                C::sleep(Duration::from_millis(25)).await;
            }
            let me = shared.clone();
            match C::spawn_blocking(move || me.reopen()).await? {
                Ok(()) => {
                    tracing::info!(path = %shared.path.display(), "raft log reopened after a disk error")
                }
                Err(e) => {
                    tracing::debug!(path = %shared.path.display(), error = %e, "raft log not reopened yet")
                }
            }
        }
    }

    fn last_entry(&self) -> Result<Option<EntryOf<C>>, LogStoreError> {
        let db = self.db()?;
        let cf = cf(&db, CF_LOGS)?;
        let last = match db.iterator_cf(cf, IteratorMode::End).next() {
            None => Ok(None),
            Some(item) => {
                let (key, value) = item?;
                decode_entry::<C>(&key, &value).map(Some)
            }
        };
        last
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

        let db = self.db()?;
        let cf = cf(&db, CF_LOGS)?;
        let start_key = index_key(start);
        // A RocksDB iterator reads from an implicit snapshot: the result is atomic.
        let iter = db.iterator_cf(cf, IteratorMode::From(&start_key, Direction::Forward));

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
        let value = encode(vote, "vote")?;
        self.write(
            "vote",
            |db, batch| {
                batch.put_cf(cf(db, CF_META)?, KEY_VOTE, &value);
                Ok(())
            },
            true,
        )
        .await?;
        tracing::debug!(vote = %vote, "saved vote (synced)");
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let value = match &committed {
            Some(log_id) => Some(encode(log_id, "committed log id")?),
            None => None,
        };
        self.write(
            "committed",
            |db, batch| {
                let meta = cf(db, CF_META)?;
                match &value {
                    Some(v) => batch.put_cf(meta, KEY_COMMITTED, v),
                    None => batch.delete_cf(meta, KEY_COMMITTED),
                }
                Ok(())
            },
            false,
        )
        .await?;
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
        let mut first = None;
        let mut last = None;
        let mut encoded = Vec::new();
        for entry in entries {
            let index = entry.index();
            first.get_or_insert(index);
            last = Some(index);
            encoded.push((index_key(index), encode(&entry, "log entry")?));
        }
        // The synced write returns once the batch is in the fsynced WAL: readable and durable.
        self.write(
            "log entries",
            |db, batch| {
                let logs = cf(db, CF_LOGS)?;
                for (key, value) in &encoded {
                    batch.put_cf(logs, key, value);
                }
                Ok(())
            },
            true,
        )
        .await?;
        tracing::debug!(?first, ?last, "appended log entries (synced)");
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let from = match &last_log_id {
            Some(log_id) => log_id.index().saturating_add(1),
            None => 0,
        };
        self.write(
            "truncation",
            |db, batch| {
                let logs = cf(db, CF_LOGS)?;
                // delete_range's end is exclusive: delete u64::MAX separately.
                batch.delete_range_cf(logs, index_key(from), index_key(u64::MAX));
                batch.delete_cf(logs, index_key(u64::MAX));
                Ok(())
            },
            true,
        )
        .await?;
        tracing::debug!(?last_log_id, "truncated logs after (synced)");
        Ok(())
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        let value = encode(&log_id, "last purged log id")?;
        let end = log_id.index().checked_add(1);
        self.write(
            "purge",
            |db, batch| {
                // The last purged id and the deletion go in one atomic batch.
                batch.put_cf(cf(db, CF_META)?, KEY_LAST_PURGED, &value);
                let logs = cf(db, CF_LOGS)?;
                match end {
                    Some(end) => batch.delete_range_cf(logs, index_key(0), index_key(end)),
                    None => {
                        batch.delete_range_cf(logs, index_key(0), index_key(u64::MAX));
                        batch.delete_cf(logs, index_key(u64::MAX));
                    }
                }
                Ok(())
            },
            false,
        )
        .await?;
        tracing::debug!(log_id = %log_id, "purged logs up to");
        Ok(())
    }
}
