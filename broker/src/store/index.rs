//! The message index: CommitLog offsets by `(topic, key)` for every key of a message's `KEYS`
//! property (space separated, RocketMQ's `KEY_SEPARATOR`) and its `UNIQ_KEY` (the id the
//! producer printed), for QUERY_MESSAGE.
//!
//! It is a RocksDB database at `{store_root}/index` (not RocketMQ's `IndexFile` hash files: a
//! sorted key space gives the time-range bound of a query for free, and RocksDB's WAL gives the
//! crash safety). Entries are
//!
//! ```text
//! 'e' topic 0x00 key 0x00 be64(store_timestamp) be64(commit_log_offset)  ->  be32(record size)
//! ```
//!
//! so a query is a scan of one prefix bounded by the time range (newest first, as RocketMQ
//! walks its hash chains). Keys carry no length: the timestamp and offset are the fixed last 16
//! bytes, and a key holding a 0x00 byte can only add candidates, which the lookup drops when it
//! checks the record (below).
//!
//! **Feeding**: a background thread (`store-indexer`) follows the CommitLog behind the writer,
//! like RocketMQ's reput service: it reads whole records from its progress offset up to the
//! dispatched offset (never above), parses their properties and writes their entries and the new
//! progress in one `WriteBatch`. Nothing of this runs on the writer's hot path. A crash loses
//! at most the batches whose WAL records did not reach the disk, entries and progress together,
//! so the next start re-indexes from the last progress (puts are idempotent).
//!
//! **Truncation**: a replica that cuts its CommitLog tail (or recovery that cuts a torn tail)
//! leaves entries above the cut. The progress moves back to the cut ([`MessageIndex::rewind`],
//! and at open to the recovered end), so what is written there next gets indexed; the stale
//! entries stay until compaction, but a lookup never serves them: it reads the record at the
//! entry's offset with its size, checks its CRC and physical offset, and checks that its topic
//! and keys still match.
//!
//! **Retention**: [`MessageIndex::delete_below`] raises a floor; a compaction filter drops the
//! entries below it, and lookups skip offsets below the floor and below the CommitLog's first
//! offset.
//!
//! **Visibility**: lookups serve only records wholly below the limit the caller gives (the
//! store's confirm offset), as every other read path does.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use rocketraft_common::consts::{property, sys_flag};
use rocketraft_common::message::{
    self, BLANK_MAGIC_CODE, NAME_VALUE_SEPARATOR, PROPERTY_SEPARATOR,
};
use rocksdb::{
    compaction_filter::Decision, DBCompressionType, IteratorMode, Options, ReadOptions, WriteBatch,
    DB,
};

use super::error::StoreError;
use super::Shared;

/// RocketMQ's `MessageConst.KEY_SEPARATOR`.
pub const KEY_SEPARATOR: char = ' ';

const ENTRY_TAG: u8 = b'e';
const META_PROGRESS: &[u8] = b"m:progress";
const META_LAST_TIMESTAMP: &[u8] = b"m:last_timestamp";
const META_FLOOR: &[u8] = b"m:floor";
/// Records per write batch at most.
const BATCH_RECORDS: usize = 4096;
/// How long the indexer sleeps when it has caught up.
const IDLE_POLL: Duration = Duration::from_millis(5);

/// What a key lookup found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryMessageResult {
    /// Raw records (the store encoding), ascending by CommitLog offset.
    pub messages: Vec<Bytes>,
    /// Their CommitLog offsets.
    pub offsets: Vec<i64>,
    /// Store timestamp of the last record indexed (`indexLastUpdateTimestamp`).
    pub index_last_update_timestamp: i64,
    /// The index covers the CommitLog below this offset (`indexLastUpdatePhyoffset`).
    pub index_last_update_phy_offset: i64,
}

/// Counters of the indexer since open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexStats {
    pub records: u64,
    pub entries: u64,
    pub batches: u64,
    pub errors: u64,
    pub rewinds: u64,
}

struct Inner {
    /// `None` once the index stopped: the database is closed then (its lock released), so the
    /// store can be opened again in the same process while this object still lives.
    db: parking_lot::RwLock<Option<DB>>,
    shared: Arc<Shared>,
    /// Every record below this CommitLog offset is indexed.
    progress: AtomicI64,
    last_timestamp: AtomicI64,
    /// Entries below this offset are dropped (retention).
    floor: Arc<AtomicI64>,
    /// A rewind asked for by a truncation, applied by the indexer before its next batch
    /// (`i64::MAX`: none).
    pending_rewind: AtomicI64,
    stop: AtomicBool,
    records: AtomicU64,
    entries: AtomicU64,
    batches: AtomicU64,
    errors: AtomicU64,
    rewinds: AtomicU64,
}

/// The index of one store; see the module documentation.
pub struct MessageIndex {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for MessageIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageIndex")
            .field("progress", &self.progress())
            .finish()
    }
}

/// The key prefix of every entry of `(topic, key)`.
fn entry_prefix(topic: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + key.len() + 19);
    write_entry_prefix(&mut k, topic, key);
    k
}

/// Writes [`entry_prefix`] into `k` (cleared first, its allocation reused, room left for the
/// timestamp and offset an entry's key adds).
fn write_entry_prefix(k: &mut Vec<u8>, topic: &str, key: &str) {
    k.clear();
    k.reserve(topic.len() + key.len() + 19);
    k.push(ENTRY_TAG);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k.push(0);
}

/// The key of an entry: [`entry_prefix`], then the store timestamp and the offset, written into
/// `k` (cleared first, its allocation reused).
fn write_entry_key(k: &mut Vec<u8>, topic: &str, key: &str, store_timestamp: i64, offset: i64) {
    write_entry_prefix(k, topic, key);
    k.extend_from_slice(&(store_timestamp.max(0) as u64).to_be_bytes());
    k.extend_from_slice(&(offset.max(0) as u64).to_be_bytes());
}

/// The (store timestamp, offset) of an entry key.
fn parse_entry(key: &[u8]) -> Option<(i64, i64)> {
    if key.first() != Some(&ENTRY_TAG) || key.len() < 1 + 2 + 16 {
        return None;
    }
    let n = key.len();
    let ts = i64::from_be_bytes(key[n - 16..n - 8].try_into().ok()?);
    let off = i64::from_be_bytes(key[n - 8..].try_into().ok()?);
    Some((ts, off))
}

fn read_meta(db: &DB, key: &[u8]) -> Result<Option<i64>, StoreError> {
    match db.get(key)? {
        None => Ok(None),
        Some(v) => {
            let b: [u8; 8] = v.as_slice().try_into().map_err(|_| {
                StoreError::Corrupted(format!(
                    "index meta {} holds {} bytes, not 8",
                    String::from_utf8_lossy(key),
                    v.len()
                ))
            })?;
            Ok(Some(i64::from_be_bytes(b)))
        }
    }
}

/// Every key a record is indexed under: its `UNIQ_KEY` and each of its `KEYS` (deduplicated).
pub fn record_keys(props: &str) -> Vec<&str> {
    let mut keys: Vec<&str> = Vec::new();
    for item in props.split(PROPERTY_SEPARATOR as char) {
        let Some((k, v)) = item.split_once(NAME_VALUE_SEPARATOR as char) else {
            continue;
        };
        if k == property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX {
            if !v.is_empty() && !keys.contains(&v) {
                keys.push(v);
            }
        } else if k == property::KEYS {
            for key in v.split(KEY_SEPARATOR).filter(|k| !k.is_empty()) {
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
    }
    keys
}

/// The database options of the index; its compaction filter drops entries below `floor`.
fn index_options(floor: Arc<AtomicI64>) -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.set_max_background_jobs(2);
    opts.set_compression_type(DBCompressionType::None);
    opts.set_write_buffer_size(16 << 20);
    opts.set_keep_log_file_num(4);
    opts.set_compaction_filter(
        "rocketraft-index-floor",
        move |_level: u32, key: &[u8], _value: &[u8]| match parse_entry(key) {
            Some((_, offset)) if offset < floor.load(Ordering::Acquire) => Decision::Remove,
            _ => Decision::Keep,
        },
    );
    opts
}

/// The least time between two reopens of the index database after write errors.
const REOPEN_EVERY: Duration = Duration::from_secs(2);

impl MessageIndex {
    /// Opens (creating) the index at `{store_root}/index` and starts the indexer thread. The
    /// progress restarts where the database left it, but never above the CommitLog's dispatched
    /// end (what recovery kept) nor below its first offset.
    pub(crate) fn open(shared: Arc<Shared>) -> Result<MessageIndex, StoreError> {
        let path = shared.config.store_root.join("index");
        super::mapped_file::create_dir_all_durable(&path).map_err(|e| StoreError::io(&path, e))?;
        let floor = Arc::new(AtomicI64::new(0));
        let opts = index_options(floor.clone());
        let db = match DB::open(&opts, &path) {
            Ok(db) => db,
            Err(e) => {
                // The index is derived from the CommitLog: a database that cannot be opened
                // (corrupted files, a newer format) is rebuilt rather than keeping the broker
                // down.
                tracing::error!(path = %path.display(), error = %e, "cannot open the message index: rebuilding it from the CommitLog");
                std::fs::remove_dir_all(&path).map_err(|e| StoreError::io(&path, e))?;
                super::mapped_file::create_dir_all_durable(&path)
                    .map_err(|e| StoreError::io(&path, e))?;
                DB::open(&opts, &path)?
            }
        };
        let dispatched = shared.dispatched.load(Ordering::Acquire);
        let min = shared.commitlog.min_offset();
        let mut stored_floor = read_meta(&db, META_FLOOR)?.unwrap_or(0);
        if stored_floor > min {
            // Only a replica that started its log over below its first offset has a log that
            // starts below the floor (retention only raises it): what it fetches again there
            // is indexed again.
            tracing::info!(
                floor = stored_floor,
                min_phy_offset = min,
                "the CommitLog starts below the index floor (a replica started over): the floor follows"
            );
            db.put(META_FLOOR, min.to_be_bytes())?;
            stored_floor = min;
        }
        floor.store(stored_floor, Ordering::Release);
        let stored = read_meta(&db, META_PROGRESS)?;
        let mut progress = stored.unwrap_or(min);
        if progress > dispatched {
            tracing::info!(
                progress,
                end = dispatched,
                "the CommitLog ends below the index progress (a cut tail): re-indexing from its end"
            );
            progress = dispatched;
        }
        progress = progress.max(min);
        if stored != Some(progress) {
            db.put(META_PROGRESS, progress.to_be_bytes())?;
        }
        let last_timestamp = read_meta(&db, META_LAST_TIMESTAMP)?.unwrap_or(0);
        tracing::info!(
            path = %path.display(),
            progress,
            behind = dispatched - progress,
            "message index open"
        );
        let inner = Arc::new(Inner {
            db: parking_lot::RwLock::new(Some(db)),
            shared,
            progress: AtomicI64::new(progress),
            last_timestamp: AtomicI64::new(last_timestamp),
            floor,
            pending_rewind: AtomicI64::new(i64::MAX),
            stop: AtomicBool::new(false),
            records: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            rewinds: AtomicU64::new(0),
        });
        let worker = inner.clone();
        let thread = std::thread::Builder::new()
            .name("store-indexer".into())
            .spawn(move || worker.run())
            .map_err(|e| StoreError::io(&path, e))?;
        Ok(MessageIndex {
            inner,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Every record below this CommitLog offset is indexed.
    pub fn progress(&self) -> i64 {
        self.inner.progress.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> IndexStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let i = &self.inner;
        IndexStats {
            records: l(&i.records),
            entries: l(&i.entries),
            batches: l(&i.batches),
            errors: l(&i.errors),
            rewinds: l(&i.rewinds),
        }
    }

    /// The CommitLog was cut at `offset`: index again from there (applied by the indexer before
    /// its next batch, so a batch that read the old tail is followed by the rewind).
    pub fn rewind(&self, offset: i64) {
        self.inner
            .pending_rewind
            .fetch_min(offset, Ordering::AcqRel);
    }

    /// The log started over below its first offset (a replica that diverged from its master
    /// there): the floor comes down to the log's new first offset, so the records fetched
    /// again below the old one are found by key again. Blocking (one small RocksDB write).
    pub fn follow_log_start(&self) -> Result<(), StoreError> {
        let min = self.inner.shared.commitlog.min_offset();
        if min >= self.inner.floor.load(Ordering::Acquire) {
            return Ok(());
        }
        self.inner.db()?.put(META_FLOOR, min.to_be_bytes())?;
        self.inner.floor.store(min, Ordering::Release);
        tracing::info!(
            min_phy_offset = min,
            "the log started over below the index floor: the floor follows"
        );
        Ok(())
    }

    /// Retention: entries of records below `min_phy_offset` are dropped (the floor is persisted
    /// and the database compacted through a filter that removes them; lookups skip them at
    /// once). Blocking: compaction may take a while; call it from the cleaner, never from the
    /// writer.
    ///
    /// The indexer thread calls it by itself when it sees the CommitLog's first offset move
    /// (retention deleted segments), so the cleaner need not.
    pub fn delete_below(&self, min_phy_offset: i64) -> Result<(), StoreError> {
        self.inner.delete_below(min_phy_offset)
    }

    /// Entries in the database (a full scan: tests and tools only).
    pub fn entry_count(&self) -> usize {
        let Ok(db) = self.inner.db() else {
            return 0;
        };
        db.iterator(IteratorMode::Start)
            .filter_map(Result::ok)
            .filter(|(k, _)| k.first() == Some(&ENTRY_TAG))
            .count()
    }

    /// The newest records (at most `max`) of `topic` indexed under `key` and stored within
    /// `[begin, end]` (ms), ascending by offset. Only records wholly below `visible_end`, at
    /// or above the CommitLog's first offset and the retention floor, whose bytes are intact and
    /// whose topic and keys still match are returned.
    pub fn query(
        &self,
        topic: &str,
        key: &str,
        max: usize,
        begin: i64,
        end: i64,
        visible_end: i64,
    ) -> Result<QueryMessageResult, StoreError> {
        let inner = &self.inner;
        let mut result = QueryMessageResult {
            index_last_update_timestamp: inner.last_timestamp.load(Ordering::Acquire),
            index_last_update_phy_offset: self.progress(),
            ..QueryMessageResult::default()
        };
        if max == 0 || key.is_empty() || end < begin || end < 0 {
            return Ok(result);
        }
        let prefix = entry_prefix(topic, key);
        let mut lower = prefix.clone();
        lower.extend_from_slice(&(begin.max(0) as u64).to_be_bytes());
        let mut upper = prefix.clone();
        match end.checked_add(1) {
            Some(e) => upper.extend_from_slice(&(e as u64).to_be_bytes()),
            None => {
                // End of the prefix: its last byte (the 0x00 separator) plus one.
                if let Some(last) = upper.last_mut() {
                    *last = 1;
                }
            }
        }
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(lower);
        ro.set_iterate_upper_bound(upper);
        let floor = inner
            .floor
            .load(Ordering::Acquire)
            .max(inner.shared.commitlog.min_offset());
        // Candidates that fail the checks (stale after a cut, a key with a 0x00) do not count
        // towards `max`, but the scan is bounded.
        let scan_limit = max.saturating_mul(8).saturating_add(256);
        let mut found: Vec<(i64, Bytes)> = Vec::new();
        let db = inner.db()?;
        for (scanned, item) in db.iterator_opt(IteratorMode::End, ro).enumerate() {
            if scanned >= scan_limit || found.len() >= max {
                break;
            }
            let (k, v) = item?;
            let Some((_, offset)) = parse_entry(&k) else {
                continue;
            };
            if k.len() != prefix.len() + 16 {
                continue;
            }
            let Ok(size) = <[u8; 4]>::try_from(&v[..]).map(i32::from_be_bytes) else {
                continue;
            };
            if offset < floor
                || size <= 0
                || offset.saturating_add(size as i64) > visible_end
                || found.iter().any(|(o, _)| *o == offset)
            {
                continue;
            }
            let Some(rec) = inner.shared.commitlog.read_record_sized(offset, size) else {
                continue;
            };
            let matches = message::record_topic(&rec) == Some(topic)
                && message::record_properties_str(&rec)
                    .is_some_and(|p| record_keys(p).contains(&key));
            if matches {
                found.push((offset, rec));
            }
        }
        found.sort_by_key(|(o, _)| *o);
        for (o, rec) in found {
            result.offsets.push(o);
            result.messages.push(rec);
        }
        Ok(result)
    }

    /// Stops the indexer thread and closes the database (idempotent); queries answer
    /// SERVICE_NOT_AVAILABLE from then on.
    pub fn stop(&self) {
        self.inner.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.lock().take() {
            if t.join().is_err() {
                tracing::error!("the index thread panicked");
            }
        }
        self.inner.db.write().take();
    }

    /// Waits until the indexer has caught up with the dispatched end (tests and tools).
    pub fn wait_caught_up(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.progress() >= self.inner.shared.dispatched.load(Ordering::Acquire)
                && self.inner.pending_rewind.load(Ordering::Acquire) == i64::MAX
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }
}

impl Drop for MessageIndex {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Inner {
    /// The open database, or an error once the index stopped.
    fn db(&self) -> Result<parking_lot::MappedRwLockReadGuard<'_, DB>, StoreError> {
        parking_lot::RwLockReadGuard::try_map(self.db.read(), Option::as_ref).map_err(|_| {
            StoreError::ServiceNotAvailable(
                "the message index is closed (the store stopped, or a reopen after a disk error failed)"
                    .into(),
            )
        })
    }

    fn delete_below(&self, min_phy_offset: i64) -> Result<(), StoreError> {
        if min_phy_offset <= self.floor.load(Ordering::Acquire) {
            return Ok(());
        }
        let db = self.db()?;
        db.put(META_FLOOR, min_phy_offset.to_be_bytes())?;
        self.floor.fetch_max(min_phy_offset, Ordering::AcqRel);
        let started = Instant::now();
        // Entries sort by topic and key, not by offset: the whole key space is compacted (the
        // filter keeps everything at or above the floor). Flushes the memtable first.
        db.compact_range(Some([ENTRY_TAG]), Some([ENTRY_TAG + 1]));
        tracing::info!(
            min_phy_offset,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "index entries below the CommitLog's first offset dropped"
        );
        Ok(())
    }

    fn run(self: Arc<Self>) {
        let mut last_error: Option<Instant> = None;
        let mut last_reopen: Option<Instant> = None;
        let mut healthy = true;
        while !self.stop.load(Ordering::Acquire) {
            match self.step() {
                Ok(true) | Ok(false) if !healthy => {
                    tracing::info!(
                        progress = self.progress.load(Ordering::Relaxed),
                        "indexing again after the write errors"
                    );
                    healthy = true;
                }
                Ok(true) => {}
                Ok(false) => std::thread::sleep(IDLE_POLL),
                Err(e) => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    healthy = false;
                    if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::error!(error = %e, progress = self.progress.load(Ordering::Relaxed), "indexing failed; retrying (queries may miss recent messages)");
                        last_error = Some(Instant::now());
                    }
                    std::thread::sleep(Duration::from_millis(500));
                    if last_reopen.is_none_or(|t| t.elapsed() >= REOPEN_EVERY) {
                        last_reopen = Some(Instant::now());
                        self.reopen();
                    }
                }
            }
        }
    }

    /// RocksDB stops a database after a failed write (a full disk above all: its WAL append
    /// fails) and rust-rocksdb cannot resume it, so after write errors the indexer closes the
    /// database and opens it again (it recovers from its WAL), until writes go through: the
    /// index catches up by itself once space is freed. Entries are rewritten from the
    /// in-memory progress, which only moves after a write succeeded, so nothing is skipped.
    /// Never after [`MessageIndex::stop`].
    fn reopen(&self) {
        let path = self.shared.config.store_root.join("index");
        let mut slot = self.db.write();
        if self.stop.load(Ordering::Acquire) {
            return;
        }
        drop(slot.take());
        match DB::open(&index_options(self.floor.clone()), &path) {
            Ok(db) => {
                tracing::info!(path = %path.display(), "message index reopened after write errors");
                *slot = Some(db);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot reopen the message index yet; retrying")
            }
        }
    }

    fn set_progress(&self, offset: i64) -> Result<(), StoreError> {
        self.db()?.put(META_PROGRESS, offset.to_be_bytes())?;
        self.progress.store(offset, Ordering::Release);
        Ok(())
    }

    /// One round: applies a pending rewind, then indexes a batch. Whether it did any work.
    fn step(&self) -> Result<bool, StoreError> {
        let rewind = self.pending_rewind.swap(i64::MAX, Ordering::AcqRel);
        let progress = self.progress.load(Ordering::Acquire);
        if rewind < progress {
            tracing::info!(
                from = progress,
                to = rewind,
                "the CommitLog was cut: the index follows"
            );
            self.rewinds.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = self.set_progress(rewind) {
                self.pending_rewind.fetch_min(rewind, Ordering::AcqRel);
                return Err(e);
            }
            return Ok(true);
        }
        let upper = self.shared.dispatched.load(Ordering::Acquire);
        let min = self.shared.commitlog.min_offset();
        if min > self.floor.load(Ordering::Acquire) {
            // Retention deleted segments: their entries go too.
            self.delete_below(min)?;
        }
        if progress > upper {
            // Only a cut lowers the dispatched end; its rewind may not have arrived yet.
            self.set_progress(upper)?;
            return Ok(true);
        }
        if progress < min {
            // Retention deleted what was not indexed yet.
            self.set_progress(min.min(upper))?;
            return Ok(true);
        }
        if progress >= upper {
            return Ok(false);
        }
        self.index_batch(progress, upper)
    }

    /// Indexes the records in `[from, upper)` (at most a batch), writing their entries and the
    /// new progress in one write.
    fn index_batch(&self, from: i64, upper: i64) -> Result<bool, StoreError> {
        let cl = &self.shared.commitlog;
        let segment = cl.segment_size() as i64;
        let mut batch = WriteBatch::default();
        let mut at = from;
        let mut records = 0usize;
        let mut entries = 0u64;
        let mut last_ts = None;
        // One key buffer for the batch (the write batch copies each key).
        let mut key_buf = Vec::new();
        while at < upper && records < BATCH_RECORDS {
            // The size and magic words in one read, then the record in one more (the store's
            // `read_record` reads the size again).
            let head = cl.read(at, 8);
            let (Some(size), Some(magic)) = (
                head.as_deref().and_then(|h| message::read_i32(h, 0)),
                head.as_deref().and_then(|h| message::read_i32(h, 4)),
            ) else {
                break;
            };
            if magic == BLANK_MAGIC_CODE {
                at = cl.segment_start(at) + segment;
                continue;
            }
            // As `read_record` checks it: the layout, not the CRCs.
            let rec = usize::try_from(size)
                .ok()
                .filter(|size| *size > 0)
                .and_then(|size| cl.read(at, size))
                .filter(|rec| message::record_size(rec).is_ok());
            let Some(rec) = rec else {
                tracing::error!(
                    offset = at,
                    size,
                    "no readable record below the dispatched end: the rest of its segment is not indexed"
                );
                at = cl.segment_start(at) + segment;
                continue;
            };
            records += 1;
            let flag = message::read_i32(&rec, message::pos::SYS_FLAG).unwrap_or(0);
            let rollback = sys_flag::transaction_value(flag) == sys_flag::TRANSACTION_ROLLBACK_TYPE;
            if let (false, Some(topic), Some(props), Some(ts)) = (
                rollback,
                message::record_topic(&rec),
                message::record_properties_str(&rec),
                message::record_store_timestamp(&rec),
            ) {
                let value = (rec.len() as i32).to_be_bytes();
                for key in record_keys(props) {
                    write_entry_key(&mut key_buf, topic, key, ts, at);
                    batch.put(&key_buf, value);
                    entries += 1;
                }
                last_ts = Some(ts);
            }
            at += rec.len() as i64;
        }
        if at == from {
            return Ok(false);
        }
        batch.put(META_PROGRESS, at.to_be_bytes());
        if let Some(ts) = last_ts {
            batch.put(META_LAST_TIMESTAMP, ts.to_be_bytes());
        }
        self.db()?.write(batch)?;
        self.progress.store(at, Ordering::Release);
        if let Some(ts) = last_ts {
            self.last_timestamp.store(ts, Ordering::Release);
        }
        self.records.fetch_add(records as u64, Ordering::Relaxed);
        self.entries.fetch_add(entries, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }
}

impl super::MessageStore {
    /// The key index, `None` when `message_index_enable` is off.
    pub fn message_index(&self) -> Option<&MessageIndex> {
        self.index.as_ref()
    }

    /// QUERY_MESSAGE: the newest records of `topic` (at most `max`, and at most
    /// `max_msgs_num_batch`) whose `KEYS` or `UNIQ_KEY` hold `key`, stored within `[begin, end]`
    /// (ms), ascending by offset; only records wholly below the confirm offset. `None` when the
    /// index is disabled.
    pub fn query_by_key(
        &self,
        topic: &str,
        key: &str,
        max: usize,
        begin: i64,
        end: i64,
    ) -> Result<Option<QueryMessageResult>, StoreError> {
        let Some(index) = &self.index else {
            return Ok(None);
        };
        let max = max.min(self.shared.config.max_msgs_num_batch as usize);
        index
            .query(topic, key, max, begin, end, self.confirm_offset())
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use rocketraft_common::consts::property;
    use rocketraft_common::message::{decode_message, Message};

    use super::super::{BrokerMessage, MessageStore, StoreConfig};

    fn config(dir: &Path) -> StoreConfig {
        StoreConfig {
            commitlog_segment_size: 64 * 1024,
            pretouch: false,
            flush_interval_ms: 20,
            checkpoint_interval_ms: 30,
            ..StoreConfig::new(dir)
        }
    }

    fn message(topic: &str, keys: &str, uniq: &str, body: &str) -> BrokerMessage {
        let mut m = Message::new(topic, body.as_bytes().to_vec());
        if !keys.is_empty() {
            m.set_keys(keys);
        }
        m.set_property(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX, uniq);
        BrokerMessage::new(m, 0)
    }

    /// Puts one message; its CommitLog offset.
    fn put(store: &MessageStore, topic: &str, keys: &str, uniq: &str, body: &str) -> i64 {
        store
            .put_message_blocking(message(topic, keys, uniq, body))
            .expect("put")
            .physical_offset
    }

    fn caught_up(store: &MessageStore) {
        let index = store.message_index().expect("index enabled");
        assert!(
            index.wait_caught_up(Duration::from_secs(10)),
            "index behind: {} < {}",
            index.progress(),
            store.dispatched_phy_offset()
        );
    }

    /// Bodies of what a query by `key` finds, in order.
    fn bodies(store: &MessageStore, topic: &str, key: &str, max: usize) -> Vec<String> {
        let r = store
            .query_by_key(topic, key, max, 0, i64::MAX)
            .expect("query")
            .expect("index enabled");
        r.messages
            .iter()
            .map(|rec| {
                let (m, _) = decode_message(rec).expect("decodes");
                String::from_utf8_lossy(&m.message.body).into_owned()
            })
            .collect()
    }

    #[test]
    fn finds_messages_by_each_key_and_by_unique_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MessageStore::open(config(dir.path())).expect("open");
        put(&store, "T", "order-1 user-7", "U1", "first");
        put(&store, "T", "order-2 user-7", "U2", "second");
        put(&store, "Other", "order-1", "U3", "elsewhere");
        put(&store, "T", "", "U4", "no keys");
        put(&store, "T", "  order-1   ", "U5", "spaces");
        caught_up(&store);
        assert_eq!(bodies(&store, "T", "order-1", 32), ["first", "spaces"]);
        assert_eq!(bodies(&store, "T", "user-7", 32), ["first", "second"]);
        assert_eq!(bodies(&store, "T", "U4", 32), ["no keys"]);
        assert_eq!(bodies(&store, "Other", "order-1", 32), ["elsewhere"]);
        assert!(
            bodies(&store, "T", "U3", 32).is_empty(),
            "another topic's id"
        );
        assert!(bodies(&store, "T", "order", 32).is_empty(), "a key prefix");
        assert!(bodies(&store, "T", "", 32).is_empty());
        // The newest `max`, ascending.
        assert_eq!(bodies(&store, "T", "user-7", 1), ["second"]);
        let r = store
            .query_by_key("T", "U4", 32, 0, i64::MAX)
            .expect("query")
            .expect("enabled");
        assert_eq!(r.index_last_update_phy_offset, store.max_phy_offset());
        assert!(r.index_last_update_timestamp > 0);
        // The time range is on the store timestamp, both ends included.
        let (m, _) = decode_message(&r.messages[0]).expect("decodes");
        let ts = m.store_timestamp;
        let count = |b, e| {
            store
                .query_by_key("T", "U4", 32, b, e)
                .expect("query")
                .expect("on")
                .messages
                .len()
        };
        assert_eq!(count(ts, ts), 1);
        assert_eq!(count(ts + 1, i64::MAX), 0);
        assert_eq!(count(0, ts - 1), 0);
        // max is held to max_msgs_num_batch.
        for i in 0..70 {
            put(&store, "T", "many", &format!("M{i}"), &format!("m{i}"));
        }
        caught_up(&store);
        let many = bodies(&store, "T", "many", 1000);
        assert_eq!(many.len(), 64);
        assert_eq!(many.first().map(String::as_str), Some("m6"));
        assert_eq!(many.last().map(String::as_str), Some("m69"));
        store.shutdown().expect("shutdown");
    }

    #[test]
    fn a_restart_keeps_the_index_and_a_lost_index_is_rebuilt() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = MessageStore::open(config(dir.path())).expect("open");
            for i in 0..200 {
                put(
                    &store,
                    "T",
                    &format!("k{i} all"),
                    &format!("U{i}"),
                    &format!("b{i}"),
                );
            }
            caught_up(&store);
            store.shutdown().expect("shutdown");
        }
        {
            let store = MessageStore::open(config(dir.path())).expect("reopen");
            assert_eq!(bodies(&store, "T", "k150", 32), ["b150"]);
            // Written after a crash (no clean shutdown): indexed again at the next open.
            put(&store, "T", "after", "UA", "after-crash");
            caught_up(&store);
            store.crash_for_test();
        }
        std::fs::remove_dir_all(dir.path().join("index")).expect("remove the index");
        let store = MessageStore::open(config(dir.path())).expect("reopen without an index");
        caught_up(&store);
        assert_eq!(bodies(&store, "T", "k3", 32), ["b3"]);
        assert_eq!(bodies(&store, "T", "U199", 32), ["b199"]);
        assert_eq!(bodies(&store, "T", "after", 32), ["after-crash"]);
        assert_eq!(bodies(&store, "T", "all", 1000).len(), 64);
        let index = store.message_index().expect("enabled");
        assert_eq!(index.stats().records, 201);
        store.shutdown().expect("shutdown");
    }

    #[test]
    fn entries_above_a_truncation_are_never_served_and_new_records_are_indexed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let store = MessageStore::open(config(dir.path())).expect("open");
        let mut offsets = Vec::new();
        for i in 0..10 {
            offsets.push(put(&store, "T", &format!("k{i}"), &format!("U{i}"), "old"));
        }
        caught_up(&store);
        assert_eq!(bodies(&store, "T", "k7", 32), ["old"]);
        rt.block_on(store.truncate_to(offsets[5]))
            .expect("truncate");
        caught_up(&store);
        for k in ["k5", "k7", "k9", "U9"] {
            assert!(bodies(&store, "T", k, 32).is_empty(), "{k} above the cut");
        }
        assert_eq!(bodies(&store, "T", "k4", 32), ["old"]);
        // New records land at the same offsets with other keys (and one reused key).
        for (i, &old) in offsets.iter().enumerate().skip(5) {
            let at = put(&store, "T", &format!("n{i}"), &format!("V{i}"), "new");
            assert_eq!(at, old);
        }
        put(&store, "T", "k7", "W", "new-k7");
        caught_up(&store);
        assert_eq!(bodies(&store, "T", "n7", 32), ["new"]);
        assert_eq!(bodies(&store, "T", "k7", 32), ["new-k7"]);
        assert!(bodies(&store, "T", "U9", 32).is_empty());
        // A restart agrees.
        store.shutdown().expect("shutdown");
        drop(store);
        let store = MessageStore::open(config(dir.path())).expect("reopen");
        assert_eq!(bodies(&store, "T", "n9", 32), ["new"]);
        assert!(bodies(&store, "T", "k9", 32).is_empty());
        store.shutdown().expect("shutdown");
    }

    #[test]
    fn a_cut_tail_at_open_moves_the_progress_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let cut;
        {
            let store = MessageStore::open(config(dir.path())).expect("open");
            let mut offsets = Vec::new();
            for i in 0..6 {
                offsets.push(put(&store, "T", &format!("k{i}"), &format!("U{i}"), "x"));
            }
            caught_up(&store);
            cut = offsets[3];
            // Stop the indexer first, as a crash right after the cut would.
            store.message_index().expect("on").stop();
            rt.block_on(store.truncate_to(cut)).expect("truncate");
            store.crash_for_test();
        }
        let store = MessageStore::open(config(dir.path())).expect("reopen");
        assert_eq!(store.message_index().expect("on").progress(), cut);
        assert!(bodies(&store, "T", "k4", 32).is_empty());
        let at = put(&store, "T", "fresh", "F", "fresh");
        assert_eq!(at, cut);
        caught_up(&store);
        assert_eq!(bodies(&store, "T", "fresh", 32), ["fresh"]);
        store.shutdown().expect("shutdown");
    }

    #[test]
    fn an_index_that_cannot_be_opened_is_rebuilt() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = MessageStore::open(config(dir.path())).expect("open");
            put(&store, "T", "k", "U", "kept");
            caught_up(&store);
            store.shutdown().expect("shutdown");
        }
        // Garbage where RocksDB keeps its manifest pointer.
        std::fs::write(dir.path().join("index/CURRENT"), b"MANIFEST-999999\n").expect("write");
        let store = MessageStore::open(config(dir.path())).expect("reopen");
        caught_up(&store);
        assert_eq!(bodies(&store, "T", "k", 32), ["kept"]);
        store.shutdown().expect("shutdown");
    }

    #[test]
    fn delete_below_drops_entries_under_the_new_minimum() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MessageStore::open(config(dir.path())).expect("open");
        let mut offsets = Vec::new();
        for i in 0..20 {
            offsets.push(put(
                &store,
                "T",
                &format!("k{i} all"),
                &format!("U{i}"),
                "x",
            ));
        }
        caught_up(&store);
        let index = store.message_index().expect("on");
        assert_eq!(index.entry_count(), 60);
        index.delete_below(offsets[10]).expect("delete_below");
        assert_eq!(index.entry_count(), 30);
        assert!(bodies(&store, "T", "k9", 32).is_empty());
        assert_eq!(bodies(&store, "T", "k10", 32), ["x"]);
        assert_eq!(bodies(&store, "T", "all", 32).len(), 10);
        // Lower floors change nothing; the floor survives a restart.
        index.delete_below(offsets[2]).expect("lower");
        assert_eq!(index.entry_count(), 30);
        store.shutdown().expect("shutdown");
        drop(store);
        let store = MessageStore::open(config(dir.path())).expect("reopen");
        caught_up(&store);
        assert!(bodies(&store, "T", "U3", 32).is_empty());
        assert_eq!(bodies(&store, "T", "all", 32).len(), 10);
        store.shutdown().expect("shutdown");
    }

    #[test]
    fn retention_deleting_segments_drops_their_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MessageStore::open(StoreConfig {
            file_reserved_time_secs: Some(0),
            clean_resource_interval_ms: 50,
            delete_commit_log_files_interval_ms: 1,
            ..config(dir.path())
        })
        .expect("open");
        let body = "x".repeat(2000);
        for i in 0..100 {
            put(&store, "T", &format!("k{i} all"), &format!("U{i}"), &body);
        }
        caught_up(&store);
        let index = store.message_index().expect("on");
        let before = index.entry_count();
        assert_eq!(before, 300);
        store.delete_expired_files_manually();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while store.min_phy_offset() == 0 {
            assert!(std::time::Instant::now() < deadline, "nothing deleted");
            std::thread::sleep(Duration::from_millis(20));
        }
        let min = store.min_phy_offset();
        while index.entry_count() == before {
            assert!(std::time::Instant::now() < deadline, "entries kept");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(bodies(&store, "T", "k0", 32).is_empty());
        assert_eq!(bodies(&store, "T", "k99", 32).len(), 1);
        let r = store
            .query_by_key("T", "all", 64, 0, i64::MAX)
            .expect("query")
            .expect("on");
        assert!(
            r.offsets.iter().all(|o| *o >= min),
            "{:?} < {min}",
            r.offsets
        );
        store.shutdown().expect("shutdown");
    }

    #[test]
    fn a_gated_store_serves_nothing_above_the_confirm_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MessageStore::open(config(dir.path())).expect("open");
        let first = put(&store, "T", "k", "U1", "held");
        let second = put(&store, "T", "k", "U2", "not yet");
        caught_up(&store);
        store.set_gated(true);
        store.set_confirm_offset(second);
        assert_eq!(bodies(&store, "T", "k", 32), ["held"]);
        assert!(bodies(&store, "T", "U2", 32).is_empty());
        store.set_confirm_offset(second - 1);
        assert!(
            bodies(&store, "T", "k", 32).is_empty(),
            "a record must lie wholly below"
        );
        store.set_confirm_offset(store.max_phy_offset());
        assert_eq!(bodies(&store, "T", "k", 32), ["held", "not yet"]);
        assert!(first < second);
        store.shutdown().expect("shutdown");
    }

    #[test]
    fn a_disabled_index_answers_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MessageStore::open(StoreConfig {
            message_index_enable: false,
            ..config(dir.path())
        })
        .expect("open");
        put(&store, "T", "k", "U", "x");
        assert!(store.message_index().is_none());
        assert!(store
            .query_by_key("T", "k", 32, 0, i64::MAX)
            .expect("query")
            .is_none());
        assert!(!dir.path().join("index").exists());
        store.shutdown().expect("shutdown");
    }

    #[test]
    fn record_keys_splits_keys_and_adds_the_unique_key() {
        let props = "KEYS\u{1}a b  a\u{2}UNIQ_KEY\u{1}U\u{2}TAGS\u{1}t\u{2}";
        assert_eq!(super::record_keys(props), ["a", "b", "U"]);
        assert!(super::record_keys("").is_empty());
    }
}
