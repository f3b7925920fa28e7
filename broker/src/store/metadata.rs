//! Broker metadata in RocksDB at `{store_root}/metadata/`: topic configs, consumer offsets,
//! subscription groups and a generic key-value space, one column family each.
//!
//! Durability: topic configs and subscription groups are written with a synced WAL (a created
//! topic must survive a crash the moment the admin is told it exists). Consumer offsets are
//! plain WAL writes without sync: they reach disk with the OS's writeback or the next synced
//! write; RocketMQ itself only persists offsets every 5 s, and a lost offset commit means
//! re-delivery, never loss. Call [`MetadataStore::flush`] to force them out (shutdown does).
//!
//! Sized for a small box: two background jobs, no compression (the crate is built without
//! compression libraries), small write buffers.
//!
//! A full disk (issue 15 item 3): when a write fails with an I/O error (ENOSPC above all),
//! RocksDB stops the database (a background error; it accepts no further writes, reads still
//! work) and rust-rocksdb exposes no `DB::resume`. The store then
//!
//! - refuses that write and every further one with [`StoreError::ServiceNotAvailable`] (answered
//!   over Remoting as SERVICE_NOT_AVAILABLE) naming the full disk, never a panic;
//! - keeps serving reads from the stopped handle;
//! - on the next write, once the filesystem has [`MIN_FREE_TO_REOPEN`] bytes free again (and at
//!   most every [`REOPEN_GAP`]), closes the handle and reopens the database, which recovers from
//!   its WAL as after a crash (a torn WAL tail is cut), then writes the write again;
//! - makes a refused write **absent** after the reopen: before each write of a topic, group or
//!   `kv` entry it reads the value the key had; when the write is refused the pre-image is kept,
//!   and the reopen writes it back (synced) before anything is read or written, so a record
//!   that reached the WAL although the write failed (a sync that failed after the append) is
//!   never served. Writes are serialized for this (metadata writes are rare). Consumer offsets
//!   carry no pre-image: an offset commit that was refused may or may not be there afterwards
//!   (re-delivery or a commit the consumer had made anyway, never loss).
//!
//! Acknowledged writes were synced (or are offsets, see above) before the disk filled; the
//! reopen recovers them from the WAL.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parking_lot::{MappedRwLockReadGuard, Mutex, RwLock, RwLockReadGuard};
use rocketraft_common::TopicConfig;
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Direction, IteratorMode, Options,
    WriteBatch, WriteOptions, DB,
};

use super::error::StoreError;

pub const CF_TOPICS: &str = "topics";
pub const CF_CONSUMER_OFFSETS: &str = "consumer_offsets";
pub const CF_SUBSCRIPTION_GROUPS: &str = "subscription_groups";
pub const CF_KV: &str = "kv";
/// Every column family the store creates (besides RocksDB's `default`).
pub const COLUMN_FAMILIES: [&str; 4] = [
    CF_TOPICS,
    CF_CONSUMER_OFFSETS,
    CF_SUBSCRIPTION_GROUPS,
    CF_KV,
];

/// Free bytes the filesystem must have before a stopped database is reopened (the reopen
/// flushes the recovered WAL and writes a new MANIFEST, OPTIONS file and WAL).
pub const MIN_FREE_TO_REOPEN: u64 = 1 << 20;
/// The least time between two reopen attempts while the disk stays full.
pub const REOPEN_GAP: Duration = Duration::from_millis(200);

/// A key and its value from the `kv` column family.
pub type KvPair = (Vec<u8>, Vec<u8>);

pub struct MetadataStore {
    path: PathBuf,
    /// The open database; `None` only while a reopen failed (reads and writes are refused then,
    /// and the next write tries again).
    db: RwLock<Option<DB>>,
    /// Serializes writes; what a failed write left to repair.
    writes: Mutex<WriteState>,
}

/// Why the database stopped, and the pre-images of refused writes.
#[derive(Default)]
struct WriteState {
    /// The first error of the stop; `Some` until a reopen succeeded.
    stopped: Option<String>,
    /// Whether that error was a full disk.
    no_space: bool,
    /// Pre-images of refused writes, written back by the reopen, in order.
    undo: Vec<Undo>,
    last_reopen: Option<Instant>,
}

/// The value `key` of `cf` had before a refused write (`None`: absent).
struct Undo {
    cf: &'static str,
    key: Vec<u8>,
    prior: Option<Vec<u8>>,
}

impl std::fmt::Debug for MetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataStore")
            .field("path", &self.path)
            .finish()
    }
}

/// The consumer offset key `group@topic@queueId`.
pub fn offset_key(group: &str, topic: &str, queue_id: i32) -> String {
    format!("{group}@{topic}@{queue_id}")
}

fn parse_offset_key(key: &[u8]) -> Option<(String, String, i32)> {
    let s = std::str::from_utf8(key).ok()?;
    let mut it = s.rsplitn(3, '@');
    let qid = it.next()?.parse().ok()?;
    let topic = it.next()?.to_string();
    let group = it.next()?.to_string();
    Some((group, topic, qid))
}

fn decode_i64(v: &[u8]) -> Option<i64> {
    let b: [u8; 8] = v.try_into().ok()?;
    Some(i64::from_be_bytes(b))
}

fn synced() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}

fn options() -> (Options, Vec<ColumnFamilyDescriptor>) {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_max_background_jobs(2);
    opts.set_compression_type(DBCompressionType::None);
    opts.set_write_buffer_size(8 << 20);
    opts.set_keep_log_file_num(4);
    let cfs = COLUMN_FAMILIES
        .iter()
        .map(|name| {
            let mut o = Options::default();
            o.set_compression_type(DBCompressionType::None);
            o.set_write_buffer_size(8 << 20);
            ColumnFamilyDescriptor::new(*name, o)
        })
        .collect();
    (opts, cfs)
}

fn open_db(path: &Path) -> Result<DB, rocksdb::Error> {
    let (opts, cfs) = options();
    DB::open_cf_descriptors(&opts, path, cfs)
}

fn cf_of<'a>(db: &'a DB, name: &str) -> Result<&'a ColumnFamily, StoreError> {
    db.cf_handle(name)
        .ok_or_else(|| StoreError::Metadata(format!("column family {name} missing")))
}

/// Whether a failed write stopped the database (RocksDB sets a background error on I/O errors).
fn stops_the_db(e: &rocksdb::Error) -> bool {
    matches!(e.kind(), rocksdb::ErrorKind::IOError) || is_no_space(e)
}

fn is_no_space(e: &rocksdb::Error) -> bool {
    let text = e.to_string();
    text.contains("No space left on device") || text.contains("NoSpace")
}

/// Bytes an unprivileged writer may still use on the filesystem holding `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)]
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

impl MetadataStore {
    /// Opens (creating if needed) the database and its column families.
    pub fn open(path: impl AsRef<Path>) -> Result<MetadataStore, StoreError> {
        let path = path.as_ref();
        super::mapped_file::create_dir_all_durable(path).map_err(|e| StoreError::io(path, e))?;
        let db = open_db(path)?;
        Ok(MetadataStore {
            path: path.to_path_buf(),
            db: RwLock::new(Some(db)),
            writes: Mutex::new(WriteState::default()),
        })
    }

    /// The open database for a read.
    fn db(&self) -> Result<MappedRwLockReadGuard<'_, DB>, StoreError> {
        RwLockReadGuard::try_map(self.db.read(), Option::as_ref).map_err(|_| {
            StoreError::ServiceNotAvailable(format!(
                "the metadata store at {} is closed after a disk error and could not be reopened yet (retried on the next write)",
                self.path.display()
            ))
        })
    }

    /// Whether the database stopped after a write error and waits for a reopen.
    pub fn is_stopped(&self) -> bool {
        self.writes.lock().stopped.is_some()
    }

    /// The refusal of a write while the database is stopped.
    fn refusal(&self, st: &WriteState, why: &str) -> StoreError {
        let cause = st.stopped.as_deref().unwrap_or("unknown error");
        if st.no_space {
            StoreError::ServiceNotAvailable(format!(
                "no space left on the broker's disk: the metadata store at {} refuses writes ({cause}); nothing was written; writes resume by themselves once space is freed{why}",
                self.path.display()
            ))
        } else {
            StoreError::ServiceNotAvailable(format!(
                "the metadata store at {} stopped after a disk error ({cause}); nothing was written; it reopens on a later write{why}",
                self.path.display()
            ))
        }
    }

    /// Reopens the stopped database if the disk has room again, and writes back the
    /// pre-images of refused writes. Refuses (with the reason) if it cannot yet.
    fn reopen(&self, st: &mut WriteState) -> Result<(), StoreError> {
        if let Some(free) = free_bytes(&self.path) {
            if free < MIN_FREE_TO_REOPEN {
                return Err(self.refusal(st, &format!(" ({free} bytes free)")));
            }
        }
        if st.last_reopen.is_some_and(|t| t.elapsed() < REOPEN_GAP) {
            return Err(self.refusal(st, ""));
        }
        st.last_reopen = Some(Instant::now());
        let mut slot = self.db.write();
        // Close the stopped handle first: the reopen needs its lock file.
        drop(slot.take());
        let db = match open_db(&self.path) {
            Ok(db) => db,
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot reopen the metadata store yet; reads use a read-only handle");
                let (opts, _) = options();
                *slot = DB::open_cf_for_read_only(&opts, &self.path, COLUMN_FAMILIES, false)
                    .map_err(|e| tracing::error!(path = %self.path.display(), error = %e, "cannot open the metadata store read-only either"))
                    .ok();
                return Err(self.refusal(st, &format!("; reopening failed: {e}")));
            }
        };
        if !st.undo.is_empty() {
            let mut batch = WriteBatch::default();
            for u in st.undo.iter().rev() {
                let cf = cf_of(&db, u.cf)?;
                match &u.prior {
                    Some(v) => batch.put_cf(cf, &u.key, v),
                    None => batch.delete_cf(cf, &u.key),
                }
            }
            if let Err(e) = db.write_opt(batch, &synced()) {
                // The refused values may be readable now; the next write tries again.
                *slot = Some(db);
                tracing::error!(path = %self.path.display(), error = %e, "cannot take refused metadata writes back after the reopen");
                return Err(self.refusal(st, &format!("; reopening failed: {e}")));
            }
        }
        *slot = Some(db);
        tracing::warn!(
            path = %self.path.display(),
            cause = st.stopped.as_deref().unwrap_or(""),
            refused_writes_taken_back = st.undo.len(),
            "metadata store reopened after a disk error; writes accepted again"
        );
        st.undo.clear();
        st.stopped = None;
        st.no_space = false;
        Ok(())
    }

    /// Runs one write to column family `cf`. `undo`: the key whose pre-image a refusal keeps.
    fn write(
        &self,
        cf: &'static str,
        undo: Option<&[u8]>,
        op: impl Fn(&DB, &ColumnFamily) -> Result<(), rocksdb::Error>,
    ) -> Result<(), StoreError> {
        let mut st = self.writes.lock();
        // A stop this store has not seen yet (a background flush failed) is found by the
        // first write; if the disk has room again by then, that write is retried once.
        for attempt in 0..2 {
            if st.stopped.is_some() {
                self.reopen(&mut st)?;
            }
            let db = self.db()?;
            let handle = cf_of(&db, cf)?;
            let prior = match undo {
                Some(key) => Some(Undo {
                    cf,
                    key: key.to_vec(),
                    prior: db.get_cf(handle, key)?,
                }),
                None => None,
            };
            let e = match op(&db, handle) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            drop(db);
            if !stops_the_db(&e) {
                return Err(e.into());
            }
            st.undo.extend(prior);
            let first = st.stopped.is_none();
            if first {
                st.no_space = is_no_space(&e);
                st.stopped = Some(e.to_string());
                tracing::error!(path = %self.path.display(), error = %e, no_space = st.no_space, "metadata write failed; the metadata store refuses writes until it is reopened");
            }
            if !first || attempt > 0 {
                return Err(self.refusal(&st, ""));
            }
        }
        Err(self.refusal(&st, ""))
    }

    /// Names of the column families present in the database at `path`.
    pub fn list_column_families(path: impl AsRef<Path>) -> Result<Vec<String>, StoreError> {
        Ok(DB::list_cf(&Options::default(), path)?)
    }

    pub fn put_topic(&self, config: &TopicConfig) -> Result<(), StoreError> {
        let json = serde_json::to_vec(config).map_err(|e| StoreError::Metadata(e.to_string()))?;
        let key = config.topic_name.as_bytes();
        self.write(CF_TOPICS, Some(key), |db, cf| {
            db.put_cf_opt(cf, key, &json, &synced())
        })
    }

    pub fn get_topic(&self, topic: &str) -> Result<Option<TopicConfig>, StoreError> {
        let db = self.db()?;
        match db.get_cf(cf_of(&db, CF_TOPICS)?, topic.as_bytes())? {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Metadata(format!("topic {topic}: {e}"))),
            None => Ok(None),
        }
    }

    pub fn delete_topic(&self, topic: &str) -> Result<(), StoreError> {
        let key = topic.as_bytes();
        self.write(CF_TOPICS, Some(key), |db, cf| {
            db.delete_cf_opt(cf, key, &synced())
        })
    }

    /// Every topic config; an entry that does not parse is logged and skipped.
    pub fn all_topics(&self) -> Result<Vec<TopicConfig>, StoreError> {
        let db = self.db()?;
        let mut out = Vec::new();
        for item in db.iterator_cf(cf_of(&db, CF_TOPICS)?, IteratorMode::Start) {
            let (k, v) = item?;
            match serde_json::from_slice::<TopicConfig>(&v) {
                Ok(t) => out.push(t),
                Err(e) => {
                    tracing::error!(key = %String::from_utf8_lossy(&k), error = %e, "unreadable topic config skipped")
                }
            }
        }
        Ok(out)
    }

    /// Stores a consumer offset (overwrites, also backwards, as Java does).
    pub fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        queue_id: i32,
        offset: i64,
    ) -> Result<(), StoreError> {
        let key = offset_key(group, topic, queue_id);
        self.write(CF_CONSUMER_OFFSETS, None, |db, cf| {
            db.put_cf(cf, key.as_bytes(), offset.to_be_bytes())
        })
    }

    pub fn query_offset(
        &self,
        group: &str,
        topic: &str,
        queue_id: i32,
    ) -> Result<Option<i64>, StoreError> {
        let db = self.db()?;
        Ok(db
            .get_cf(
                cf_of(&db, CF_CONSUMER_OFFSETS)?,
                offset_key(group, topic, queue_id).as_bytes(),
            )?
            .and_then(|v| decode_i64(&v)))
    }

    pub fn delete_offset(&self, group: &str, topic: &str, queue_id: i32) -> Result<(), StoreError> {
        let key = offset_key(group, topic, queue_id);
        self.write(CF_CONSUMER_OFFSETS, None, |db, cf| {
            db.delete_cf(cf, key.as_bytes())
        })
    }

    fn scan_offsets(&self, prefix: &[u8]) -> Result<Vec<(String, String, i32, i64)>, StoreError> {
        let db = self.db()?;
        let mut out = Vec::new();
        let mode = IteratorMode::From(prefix, Direction::Forward);
        for item in db.iterator_cf(cf_of(&db, CF_CONSUMER_OFFSETS)?, mode) {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            if let (Some((g, t, q)), Some(o)) = (parse_offset_key(&k), decode_i64(&v)) {
                out.push((g, t, q, o));
            }
        }
        Ok(out)
    }

    /// `(topic, queue id, offset)` of every queue `group` committed.
    pub fn offsets_of_group(&self, group: &str) -> Result<Vec<(String, i32, i64)>, StoreError> {
        let prefix = format!("{group}@");
        Ok(self
            .scan_offsets(prefix.as_bytes())?
            .into_iter()
            .filter(|(g, ..)| g == group)
            .map(|(_, t, q, o)| (t, q, o))
            .collect())
    }

    /// `(group, topic, queue id, offset)` of every committed offset.
    pub fn all_offsets(&self) -> Result<Vec<(String, String, i32, i64)>, StoreError> {
        self.scan_offsets(b"")
    }

    pub fn put_subscription_group(&self, group: &str, value: &[u8]) -> Result<(), StoreError> {
        let key = group.as_bytes();
        self.write(CF_SUBSCRIPTION_GROUPS, Some(key), |db, cf| {
            db.put_cf_opt(cf, key, value, &synced())
        })
    }

    pub fn get_subscription_group(&self, group: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let db = self.db()?;
        Ok(db.get_cf(cf_of(&db, CF_SUBSCRIPTION_GROUPS)?, group.as_bytes())?)
    }

    pub fn delete_subscription_group(&self, group: &str) -> Result<(), StoreError> {
        let key = group.as_bytes();
        self.write(CF_SUBSCRIPTION_GROUPS, Some(key), |db, cf| {
            db.delete_cf_opt(cf, key, &synced())
        })
    }

    pub fn all_subscription_groups(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let db = self.db()?;
        let mut out = Vec::new();
        for item in db.iterator_cf(cf_of(&db, CF_SUBSCRIPTION_GROUPS)?, IteratorMode::Start) {
            let (k, v) = item?;
            out.push((String::from_utf8_lossy(&k).into_owned(), v.into_vec()));
        }
        Ok(out)
    }

    /// Generic key-value write; `sync` = synced WAL.
    pub fn put_kv(&self, key: &[u8], value: &[u8], sync: bool) -> Result<(), StoreError> {
        let mut w = WriteOptions::default();
        w.set_sync(sync);
        self.write(CF_KV, Some(key), |db, cf| db.put_cf_opt(cf, key, value, &w))
    }

    pub fn get_kv(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let db = self.db()?;
        Ok(db.get_cf(cf_of(&db, CF_KV)?, key)?)
    }

    pub fn delete_kv(&self, key: &[u8]) -> Result<(), StoreError> {
        self.write(CF_KV, Some(key), |db, cf| db.delete_cf(cf, key))
    }

    /// Every `(key, value)` whose key starts with `prefix`, in key order.
    pub fn scan_kv(&self, prefix: &[u8]) -> Result<Vec<KvPair>, StoreError> {
        let db = self.db()?;
        let mut out = Vec::new();
        let mode = IteratorMode::From(prefix, Direction::Forward);
        for item in db.iterator_cf(cf_of(&db, CF_KV)?, mode) {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }

    /// Syncs the WAL (makes unsynced offset commits durable).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.write(CF_KV, None, |db, _| db.flush_wal(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_keys() {
        assert_eq!(offset_key("g", "T", 3), "g@T@3");
        assert_eq!(
            parse_offset_key(b"g@T@3"),
            Some(("g".into(), "T".into(), 3))
        );
        assert_eq!(parse_offset_key(b"bad"), None);
    }

    /// The reopen after a stop writes back the pre-images of refused writes (a record that
    /// reached the WAL although its write failed is never served) and forgets them.
    #[test]
    fn the_reopen_takes_refused_writes_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let md = MetadataStore::open(dir.path()).expect("open");
        md.put_kv(b"a", b"acked", true).expect("put");
        // As if a write of a=refused and of b reached the WAL but failed its sync.
        md.put_kv(b"a", b"refused", true).expect("put");
        md.put_kv(b"b", b"refused", true).expect("put");
        {
            let mut st = md.writes.lock();
            st.stopped = Some("IO error: No space left on device".into());
            st.no_space = true;
            st.undo.push(Undo {
                cf: CF_KV,
                key: b"a".to_vec(),
                prior: Some(b"acked".to_vec()),
            });
            st.undo.push(Undo {
                cf: CF_KV,
                key: b"b".to_vec(),
                prior: None,
            });
        }
        assert!(md.is_stopped());
        md.put_kv(b"c", b"after", true).expect("reopens and writes");
        assert!(!md.is_stopped());
        assert_eq!(md.get_kv(b"a").expect("get"), Some(b"acked".to_vec()));
        assert_eq!(md.get_kv(b"b").expect("get"), None);
        drop(md);
        let md = MetadataStore::open(dir.path()).expect("reopen");
        assert_eq!(md.get_kv(b"a").expect("get"), Some(b"acked".to_vec()));
        assert_eq!(md.get_kv(b"b").expect("get"), None);
        assert_eq!(md.get_kv(b"c").expect("get"), Some(b"after".to_vec()));
    }
}
