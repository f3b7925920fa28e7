//! ConsumeQueues: per topic and queue, an index of 20-byte entries
//! `(i64 commitLogOffset, i32 size, i64 tagsCode)`, big-endian, one per message, in queue offset
//! order. Files live under `consumequeue/{topic}/{queueId}/`, hold `entries_per_file` entries
//! and are named by their first byte offset (entry index * 20), as in RocketMQ.
//!
//! **A queue that starts past 0** (a replica told by its master where a queue with no entry
//! left goes on, [`ConsumeQueue::start_empty_at`]) fills the slots of its first file before its
//! start with blank entries, as RocketMQ's `fillPreBlank` does (`commitLogOffset 0`, `size
//! i32::MAX`, `tagsCode 0`): on load the blanks give the queue's min, and its max even before a
//! first entry comes. A blank is never an entry: every reader sees it as an empty slot.
//!
//! Only the store's writer appends and truncates; an entry is published by storing the new max
//! offset with release ordering after its bytes are written, and readers load it with acquire
//! ordering before reading entries below it.
//!
//! **Truncation under live readers.** A replica cuts its tail at runtime (and a re-dispatch
//! replaces entries), so slots below a max offset a reader has seen may be zeroed. Readers are
//! fenced by the `files` lock: [`ConsumeQueue::entry`] checks the bounds and copies the 20 bytes
//! while holding it shared, and [`ConsumeQueue::truncate`] holds it exclusively while it first
//! lowers the max offset and only then zeroes slots and deletes files. A reader therefore either
//! copied its entry before the cut began or sees the lowered max and never touches the zeroed
//! range: the bytes a reader copies are never written while it copies them (the contract of
//! [`MappedFile`]).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use super::mapped_file::{
    create_dir_all_durable, file_name, parse_file_name, sync_dir, MappedFile,
};

/// Bytes per ConsumeQueue entry.
pub const CQ_UNIT_SIZE: usize = 20;

/// One ConsumeQueue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CqEntry {
    pub commit_log_offset: i64,
    pub size: i32,
    pub tags_code: i64,
}

impl CqEntry {
    pub fn encode(&self) -> [u8; CQ_UNIT_SIZE] {
        let mut b = [0u8; CQ_UNIT_SIZE];
        b[..8].copy_from_slice(&self.commit_log_offset.to_be_bytes());
        b[8..12].copy_from_slice(&self.size.to_be_bytes());
        b[12..].copy_from_slice(&self.tags_code.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> CqEntry {
        let mut o = [0u8; 8];
        o.copy_from_slice(&b[..8]);
        let mut s = [0u8; 4];
        s.copy_from_slice(&b[8..12]);
        let mut t = [0u8; 8];
        t.copy_from_slice(&b[12..20]);
        CqEntry {
            commit_log_offset: i64::from_be_bytes(o),
            size: i32::from_be_bytes(s),
            tags_code: i64::from_be_bytes(t),
        }
    }

    /// A slot before a queue's start ([`ConsumeQueue::start_empty_at`]; RocketMQ's
    /// `fillPreBlank` writes the same bytes).
    pub const BLANK: CqEntry = CqEntry {
        commit_log_offset: 0,
        size: i32::MAX,
        tags_code: 0,
    };

    /// A written entry; an all-zero slot and a blank ([`CqEntry::BLANK`]) are not.
    pub fn is_valid(&self) -> bool {
        self.commit_log_offset >= 0 && self.size > 0 && !self.is_blank()
    }

    /// A slot before a queue's start: no record has this size.
    pub fn is_blank(&self) -> bool {
        *self == CqEntry::BLANK
    }

    /// A slot the writer wrote: an entry or a blank.
    fn is_written(&self) -> bool {
        self.is_valid() || self.is_blank()
    }

    /// The CommitLog offset just past the record.
    pub fn end(&self) -> i64 {
        self.commit_log_offset + self.size as i64
    }
}

pub struct ConsumeQueue {
    topic: String,
    queue_id: i32,
    dir: PathBuf,
    entries_per_file: u64,
    files: RwLock<Vec<Arc<MappedFile>>>,
    /// First readable entry index.
    min_offset: AtomicI64,
    /// One past the last written entry index (the next queue offset).
    max_offset: AtomicI64,
    /// Entries below this index are synced.
    flushed_offset: AtomicI64,
}

impl std::fmt::Debug for ConsumeQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumeQueue")
            .field("topic", &self.topic)
            .field("queue_id", &self.queue_id)
            .field("min", &self.min_offset())
            .field("max", &self.max_offset())
            .finish()
    }
}

/// Opens a queue's files in `dir` (each `file_bytes` long): stray files, files after a gap and
/// trailing files whose first slot is empty (created but never written) are removed, and the
/// directory synced after any removal.
fn open_files(dir: &Path, file_bytes: u64) -> io::Result<Vec<Arc<MappedFile>>> {
    let mut starts = Vec::new();
    // Files deleted here: their directory is synced before the queue is used, so a deletion
    // cannot come back after a power loss.
    let mut removed = false;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        match parse_file_name(&name) {
            Some(s) if s % file_bytes == 0 => starts.push(s),
            _ => {
                tracing::warn!(path = %e.path().display(), "removing stray ConsumeQueue file");
                fs::remove_file(e.path())?;
                removed = true;
            }
        }
    }
    starts.sort_unstable();
    let mut files: Vec<Arc<MappedFile>> = Vec::new();
    for s in starts {
        let path = dir.join(file_name(s));
        if let Some(last) = files.last() {
            if last.end_offset() != s {
                tracing::warn!(path = %path.display(), "ConsumeQueue file after a gap; removing");
                fs::remove_file(&path)?;
                removed = true;
                continue;
            }
        }
        files.push(Arc::new(MappedFile::open(&path, s, file_bytes as usize)?));
    }
    // Drop trailing files whose first slot is empty (created but never written).
    while files.len() > 1 {
        let Some(last) = files.last() else { break };
        // SAFETY: no writer or reader exists yet.
        let first = CqEntry::decode(unsafe { last.slice(0, CQ_UNIT_SIZE) });
        if first.is_written() {
            break;
        }
        let path = last.path().to_path_buf();
        files.pop();
        fs::remove_file(&path)?;
        removed = true;
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(files)
}

/// The queue offsets loaded files hold: from the first file's first slot that is not a blank
/// (see [`leading_blanks`]) to the first slot of the last file that was not written (neither an
/// entry nor a blank). `(0, 0)` without files.
fn offset_range(files: &[Arc<MappedFile>], entries_per_file: u64) -> (i64, i64) {
    match (files.first(), files.last()) {
        (Some(first), Some(last)) => {
            let base = (last.start_offset() / CQ_UNIT_SIZE as u64) as i64;
            let mut n = 0;
            while (n as u64) < entries_per_file {
                // SAFETY: no writer or reader exists yet; n * 20 + 20 <= file size.
                let e = CqEntry::decode(unsafe { last.slice(n * CQ_UNIT_SIZE, CQ_UNIT_SIZE) });
                if !e.is_written() {
                    break;
                }
                n += 1;
            }
            (
                (first.start_offset() / CQ_UNIT_SIZE as u64) as i64
                    + leading_blanks(first, entries_per_file),
                base + n as i64,
            )
        }
        _ => (0, 0),
    }
}

/// How many blanks open `file` (only a queue's first file has any: the slots before where it
/// started, see [`ConsumeQueue::start_empty_at`]). The caller is the writer (or recovery): only
/// it writes blanks, and never rewrites them.
fn leading_blanks(file: &MappedFile, entries_per_file: u64) -> i64 {
    let mut n = 0;
    while (n as u64) < entries_per_file {
        // SAFETY: n * 20 + 20 <= file size; blanks are below the queue's min, which no
        // truncation goes under, and only the writer (the caller) writes them.
        let e = CqEntry::decode(unsafe { file.slice(n * CQ_UNIT_SIZE, CQ_UNIT_SIZE) });
        if !e.is_blank() {
            break;
        }
        n += 1;
    }
    n as i64
}

/// Writes a ConsumeQueue file of `file_bytes` at `path` whose first `blank_bytes` are blanks
/// ([`CqEntry::BLANK`]) and the rest zero, and syncs it.
fn write_blanks(path: &Path, file_bytes: u64, blank_bytes: usize) -> io::Result<()> {
    use std::io::Write;
    let mut file = fs::File::create(path)?;
    file.set_len(file_bytes)?;
    let unit = CqEntry::BLANK.encode();
    let chunk: Vec<u8> = unit.repeat(4096);
    let mut left = blank_bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        file.write_all(&chunk[..n])?;
        left -= n;
    }
    file.sync_all()?;
    super::durability::note(super::durability::Durable::File { path });
    Ok(())
}

/// Removes `files` (gone already is fine) and, if there were any, syncs `dir` so the removal
/// survives a crash.
fn remove_durably<'a>(dir: &Path, files: impl Iterator<Item = &'a Path>) -> io::Result<()> {
    let mut removed = false;
    for path in files {
        removed = true;
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}

impl ConsumeQueue {
    fn file_bytes(&self) -> u64 {
        self.entries_per_file * CQ_UNIT_SIZE as u64
    }

    /// An empty queue; files are created on first append.
    pub fn new(root: &Path, topic: &str, queue_id: i32, entries_per_file: u64) -> ConsumeQueue {
        ConsumeQueue {
            topic: topic.to_string(),
            queue_id,
            dir: root.join(topic).join(queue_id.to_string()),
            entries_per_file,
            files: RwLock::new(Vec::new()),
            min_offset: AtomicI64::new(0),
            max_offset: AtomicI64::new(0),
            flushed_offset: AtomicI64::new(0),
        }
    }

    /// Loads the files of an existing queue and finds its end: the first slot that is not a
    /// valid entry. Files are expected to be contiguous; anything after a gap is removed.
    pub fn load(
        root: &Path,
        topic: &str,
        queue_id: i32,
        entries_per_file: u64,
    ) -> io::Result<ConsumeQueue> {
        let cq = ConsumeQueue::new(root, topic, queue_id, entries_per_file);
        let files = open_files(&cq.dir, cq.file_bytes())?;
        let (min, max) = offset_range(&files, entries_per_file);
        cq.min_offset.store(min, Ordering::Release);
        cq.max_offset.store(max, Ordering::Release);
        // What is on disk is unknown after a process crash (dirty pages may still be in the page
        // cache): the first flush syncs everything.
        cq.flushed_offset.store(min, Ordering::Release);
        *cq.files.write() = files;
        Ok(cq)
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }
    pub fn queue_id(&self) -> i32 {
        self.queue_id
    }
    pub fn min_offset(&self) -> i64 {
        self.min_offset.load(Ordering::Acquire)
    }
    pub fn max_offset(&self) -> i64 {
        self.max_offset.load(Ordering::Acquire)
    }
    pub fn flushed_offset(&self) -> i64 {
        self.flushed_offset.load(Ordering::Acquire)
    }

    /// The file holding entry `index` and the entry's position in it, in `files` (the caller
    /// holds the `files` lock).
    fn locate_in<'a>(
        &self,
        files: &'a [Arc<MappedFile>],
        index: i64,
    ) -> Option<(&'a Arc<MappedFile>, usize)> {
        if index < 0 {
            return None;
        }
        let byte = index as u64 * CQ_UNIT_SIZE as u64;
        let first = files.first()?;
        if byte < first.start_offset() {
            return None;
        }
        let i = ((byte - first.start_offset()) / self.file_bytes()) as usize;
        let f = files.get(i)?;
        Some((f, (byte - f.start_offset()) as usize))
    }

    fn locate(&self, index: i64) -> Option<(Arc<MappedFile>, usize)> {
        let files = self.files.read();
        self.locate_in(&files, index)
            .map(|(f, pos)| (f.clone(), pos))
    }

    /// The entry at queue offset `index`, if it is in `[min, max)`.
    pub fn entry(&self, index: i64) -> Option<CqEntry> {
        // The bounds are checked and the bytes copied under the shared `files` lock: a
        // truncation (exclusive lock) lowers the max before it zeroes anything, so the slot read
        // here is below the max for the whole copy.
        let files = self.files.read();
        if index < self.min_offset() || index >= self.max_offset() {
            return None;
        }
        let (f, pos) = self.locate_in(&files, index)?;
        // SAFETY: below the published max, checked under the `files` lock that every rewrite
        // of published slots (truncate) holds exclusively: nobody writes these bytes while they
        // are copied.
        Some(CqEntry::decode(unsafe { f.slice(pos, CQ_UNIT_SIZE) }))
    }

    /// The first queue offset of the file after the one holding `index` (RocketMQ's
    /// `rollNextFile`).
    pub fn roll_next_file(&self, index: i64) -> i64 {
        let per = self.entries_per_file as i64;
        index + per - index.rem_euclid(per)
    }

    /// Writes the entry at `index` and publishes it. Writer only. `index` is normally `max`; a
    /// larger index leaves empty slots (recovery logs that as a bug).
    pub fn append(&self, index: i64, entry: CqEntry) -> io::Result<()> {
        let max = self.max_offset();
        debug_assert!(index >= max);
        self.ensure_file_for(index)?;
        let (f, pos) = self
            .locate(index)
            .ok_or_else(|| io::Error::other("ConsumeQueue file missing after creation"))?;
        f.reserve(pos + CQ_UNIT_SIZE)?;
        // SAFETY: writer only, at or past the published max.
        unsafe { f.write(pos, &entry.encode()) };
        self.max_offset.store(index + 1, Ordering::Release);
        Ok(())
    }

    /// Creates the files up to the one holding entry `index`. Writer only.
    fn ensure_file_for(&self, index: i64) -> io::Result<()> {
        let byte = index as u64 * CQ_UNIT_SIZE as u64;
        let file_bytes = self.file_bytes();
        loop {
            let need_file = {
                let files = self.files.read();
                match files.last() {
                    None => Some(byte - byte % file_bytes),
                    Some(last) if byte >= last.end_offset() => Some(last.end_offset()),
                    Some(_) => None,
                }
            };
            match need_file {
                Some(start) => {
                    // New queue directories are made durable (their parents synced) with
                    // the first file.
                    create_dir_all_durable(&self.dir)?;
                    let f =
                        MappedFile::create(&self.dir, start, file_bytes as usize, false, false)?;
                    let mut files = self.files.write();
                    if files.is_empty() {
                        // Not below where a queue started empty ([`Self::start_empty_at`]):
                        // the slots before that are not entries.
                        self.min_offset
                            .fetch_max((start / CQ_UNIT_SIZE as u64) as i64, Ordering::AcqRel);
                    }
                    files.push(Arc::new(f));
                }
                None => return Ok(()),
            }
        }
    }

    /// Makes room on disk for the next `count` entries (files created, blocks allocated), so
    /// that appending them after their CommitLog records cannot fail for a full disk: the
    /// writer asks before it writes a record, and a full disk refuses the put instead of
    /// leaving a record without its entry. Writer only.
    pub fn reserve_next(&self, count: usize) -> io::Result<()> {
        let first = self.max_offset();
        let last = first + count.max(1) as i64 - 1;
        for index in [first, last] {
            self.ensure_file_for(index)?;
            let (f, pos) = self
                .locate(index)
                .ok_or_else(|| io::Error::other("ConsumeQueue file missing after creation"))?;
            f.reserve(pos + CQ_UNIT_SIZE)?;
        }
        Ok(())
    }

    /// Syncs the entries written since the last flush.
    pub fn flush(&self) -> io::Result<()> {
        // Shared `files` lock for the whole flush: a truncation cannot run in between, so the
        // flushed offset raised at the end never covers slots a truncation emptied meanwhile
        // (which the writer may fill again, unsynced).
        let files = self.files.read();
        let max = self.max_offset();
        let mut from = self.flushed_offset();
        while from < max {
            let Some((f, pos)) = self.locate_in(&files, from) else {
                break;
            };
            let in_file = ((f.size() - pos) / CQ_UNIT_SIZE) as i64;
            let n = in_file.min(max - from);
            f.flush_range(pos, n as usize * CQ_UNIT_SIZE)?;
            from += n;
        }
        self.flushed_offset.fetch_max(max, Ordering::AcqRel);
        Ok(())
    }

    /// Drops every entry at or after `new_max` (zeroing their slots, deleting later files).
    /// Writer (or recovery) only; safe under concurrent readers: with the `files` lock held
    /// exclusively the max offset is lowered first, and only then are slots zeroed, so no reader
    /// ever copies a slot being zeroed (see the module documentation).
    pub fn truncate(&self, new_max: i64) -> io::Result<()> {
        let mut files = self.files.write();
        self.truncate_in(&mut files, new_max)
    }

    /// [`Self::truncate`] with the `files` lock held exclusively by the caller.
    fn truncate_in(&self, files: &mut Vec<Arc<MappedFile>>, new_max: i64) -> io::Result<()> {
        // Never raises the max (that would publish empty slots).
        let new_max = new_max.min(self.max_offset()).max(self.min_offset());
        // Logical cut first: from here on no reader looks at or past `new_max`.
        self.max_offset.store(new_max, Ordering::Release);
        self.flushed_offset.fetch_min(new_max, Ordering::AcqRel);
        let byte = new_max as u64 * CQ_UNIT_SIZE as u64;
        let mut removed = false;
        while let Some(last) = files.last() {
            if last.start_offset() >= byte && files.len() > 1 {
                let path = last.path().to_path_buf();
                files.pop();
                fs::remove_file(&path)?;
                removed = true;
            } else {
                break;
            }
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        if let Some(last) = files.last() {
            if byte < last.end_offset() {
                let pos = byte.saturating_sub(last.start_offset()) as usize;
                // SAFETY: at or past the max offset lowered above, under the exclusive `files`
                // lock: no reader is copying these slots and none will (they are unpublished).
                let dirtied = unsafe { last.zero_tail(pos) };
                if dirtied > 0 {
                    last.flush_range(pos, last.size() - pos)?;
                }
            }
        }
        Ok(())
    }

    /// For a replica starting its log over at `commitlog_offset`, below its first offset:
    /// drops the entries whose record reaches past it. When the entry before the cut is still on
    /// disk (even below the min, which then moves down to the cut) and its record ends at or
    /// below `commitlog_offset`, that record is of the prefix the replica shares with its master
    /// and the queue goes on from there; otherwise the next queue offset cannot be known here
    /// and the queue is emptied ([`Self::clear`]): the master's records bring their queue
    /// offsets. Writer only.
    pub fn start_over_at(&self, commitlog_offset: i64) -> io::Result<()> {
        // Exclusively from the search to the cut: a lite topic's expiry applied in between
        // would raise the min, and the cut below would lower it back over its blanks.
        let mut files = self.files.write();
        let keep = {
            // The first slot that may hold an entry: past the blanks of a queue that started
            // past 0 (they come before every entry, and are no entry to keep).
            let first = files.first().map_or(0, |f| {
                (f.start_offset() / CQ_UNIT_SIZE as u64) as i64
                    + leading_blanks(f, self.entries_per_file)
            });
            let shared = |index: i64| {
                self.locate_in(&files, index)
                    .map(|(f, pos)| {
                        // SAFETY: below the max, under the `files` lock; only the writer (the
                        // caller) rewrites published slots.
                        CqEntry::decode(unsafe { f.slice(pos, CQ_UNIT_SIZE) })
                    })
                    .is_some_and(|e| e.is_valid() && e.end() <= commitlog_offset)
            };
            // Entries are in CommitLog order: the first one past the cut, by binary search (an
            // invalid slot counts as past it, which can only empty the queue).
            let (mut lo, mut hi) = (first, self.max_offset());
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if shared(mid) {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            (lo > first && shared(lo - 1)).then_some(lo)
        };
        match keep {
            Some(cut) => {
                // Lowered first: `truncate` never cuts below the min.
                self.min_offset.fetch_min(cut, Ordering::AcqRel);
                self.truncate_in(&mut files, cut)
            }
            None => self.clear_in(&mut files),
        }
    }

    /// The queue offset of the first entry whose record starts at or past `commitlog_offset`,
    /// or the max when none does: the queue offset this queue's next record at or past that
    /// CommitLog offset has (entries are in CommitLog order). An empty slot counts as before
    /// it: the only ones are the leading slots of a queue that a start-over emptied, whose
    /// first file begins before its first entry.
    pub fn offset_at(&self, commitlog_offset: i64) -> i64 {
        let (mut lo, mut hi) = (self.min_offset(), self.max_offset());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self
                .entry(mid)
                .is_none_or(|e| !e.is_valid() || e.commit_log_offset < commitlog_offset)
            {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// For a replica whose master says this queue's next record gets queue offset `next`: a
    /// queue with no entry left (emptied by a start-over, or every entry below its min) and a
    /// max below `next` starts at `next` (min = max = `next`). Whether it moved. Writer only.
    ///
    /// Persisted, so that a replica restarted while its master is down (and then elected) goes
    /// on from `next`, not from 0: the file holding `next` is written first under another name
    /// (which loading removes as stray) with blanks in its slots before `next` and synced; then
    /// the queue's old files go (newest first; they hold no entry) and the new file takes its
    /// name (replacing an old file of that name at once), and the directory is synced. A crash
    /// in between leaves the queue at its old max or empty (as before the master's word, which
    /// it repeats at every connection), never a wrong offset.
    pub fn start_empty_at(&self, next: i64) -> io::Result<bool> {
        if self.min_offset() < self.max_offset() || self.max_offset() >= next {
            return Ok(false);
        }
        let file_bytes = self.file_bytes();
        let byte = next as u64 * CQ_UNIT_SIZE as u64;
        let start = byte - byte % file_bytes;
        create_dir_all_durable(&self.dir)?;
        let path = self.dir.join(file_name(start));
        let seeded = self.dir.join(format!("{}.seed", file_name(start)));
        if let Err(e) = write_blanks(&seeded, file_bytes, (byte - start) as usize) {
            let _ = fs::remove_file(&seeded);
            return Err(e);
        }
        // Readers see no entry from here on (min = max, under the exclusive lock), and none
        // of the files being replaced.
        let mut files = self.files.write();
        self.max_offset.store(next, Ordering::Release);
        self.min_offset.store(next, Ordering::Release);
        self.flushed_offset.store(next, Ordering::Release);
        let replaced = (|| -> io::Result<Arc<MappedFile>> {
            while let Some(old) = files.pop() {
                if old.path() == path {
                    continue;
                }
                match fs::remove_file(old.path()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            fs::rename(&seeded, &path)?;
            sync_dir(&self.dir)?;
            Ok(Arc::new(MappedFile::open(
                &path,
                start,
                file_bytes as usize,
            )?))
        })();
        match replaced {
            Ok(file) => {
                files.push(file);
                Ok(true)
            }
            Err(e) => {
                // Half done: the queue is left empty at 0 (as `clear` leaves it, files and
                // all), so the master's next word (repeated at every connection) seeds it
                // again; never at `next` without the file that says so.
                self.max_offset.store(0, Ordering::Release);
                self.min_offset.store(0, Ordering::Release);
                self.flushed_offset.store(0, Ordering::Release);
                for old in files.drain(..).rev() {
                    let _ = fs::remove_file(old.path());
                }
                let _ = fs::remove_file(&seeded);
                let _ = fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Empties the queue: min and max go back to 0 and every file is deleted (newest first), so
    /// the next entry may come at any queue offset (its file is created then). For a replica
    /// starting its log over below its own first offset, for a queue whose next queue offset
    /// it cannot know: its master's records bring them. Writer only; safe under readers as
    /// [`Self::truncate`] is: the offsets are lowered under the exclusive `files` lock before
    /// any file goes.
    pub fn clear(&self) -> io::Result<()> {
        let mut files = self.files.write();
        self.clear_in(&mut files)
    }

    /// [`Self::clear`] with the `files` lock held exclusively by the caller.
    fn clear_in(&self, files: &mut Vec<Arc<MappedFile>>) -> io::Result<()> {
        self.max_offset.store(0, Ordering::Release);
        self.min_offset.store(0, Ordering::Release);
        self.flushed_offset.store(0, Ordering::Release);
        let removed = !files.is_empty();
        while let Some(last) = files.pop() {
            match fs::remove_file(last.path()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Retention: moves the min offset to the first entry whose record starts at or after
    /// `commitlog_min` (RocketMQ's `correctMinOffset`) and deletes the files wholly below it,
    /// never the last one (it carries the queue's max offset). Returns the files deleted.
    pub fn clean_below(&self, commitlog_min: i64) -> io::Result<usize> {
        // Entries are in CommitLog order: binary search for the first one still stored. An
        // invalid slot (a gap left by a bug) counts as gone.
        let (mut lo, mut hi) = (self.min_offset(), self.max_offset());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.entry(mid) {
                Some(e) if e.is_valid() && e.commit_log_offset >= commitlog_min => hi = mid,
                _ => lo = mid + 1,
            }
        }
        let new_min = lo;
        if new_min > self.min_offset() {
            self.min_offset.fetch_max(new_min, Ordering::AcqRel);
        }
        let mut deleted = Vec::new();
        {
            let mut files = self.files.write();
            while files.len() > 1 {
                let first_end = (files[0].end_offset() / CQ_UNIT_SIZE as u64) as i64;
                if first_end > new_min.min(self.max_offset()) {
                    break;
                }
                deleted.push(files.remove(0));
            }
            if let Some(first) = files.first() {
                // Nothing below the first file is flushed again.
                let first_index = (first.start_offset() / CQ_UNIT_SIZE as u64) as i64;
                self.flushed_offset.fetch_max(first_index, Ordering::AcqRel);
                if self.min_offset() < first_index {
                    self.min_offset.fetch_max(first_index, Ordering::AcqRel);
                }
            }
        }
        remove_durably(&self.dir, deleted.iter().map(|f| f.path()))?;
        if !deleted.is_empty() {
            tracing::debug!(
                topic = %self.topic,
                queue_id = self.queue_id,
                files = deleted.len(),
                min_offset = self.min_offset(),
                "expired ConsumeQueue files deleted"
            );
        }
        Ok(deleted.len())
    }

    /// Expiry of a whole queue (a lite topic's, [`crate::lite`]): when the first entry whose
    /// record starts at or past `commitlog_pos` (the expiry's place in the CommitLog) is at
    /// queue offset `next` (no record of this queue lies between the `next` the expiry saw and
    /// `commitlog_pos`), every entry below `next` goes: the min moves to `next`, the files wholly
    /// below it are deleted and the slots of the first remaining file before `next` become
    /// blanks ([`CqEntry::BLANK`], synced), so a reload starts the queue at `next` too. Queue
    /// offsets go on from where they were: entries at or past `next` (records after the expiry)
    /// stay, and a later record gets the next offset as before. Answers whether the queue was
    /// cut (again: a queue already cut at `next` answers true); false (nothing changed) when a
    /// record came between, or `next` is outside `[min, max]`.
    ///
    /// Safe beside the writer and readers: under the exclusive `files` lock the min is raised
    /// first (no reader looks below it from then on), and only slots below it are rewritten;
    /// the writer writes at or past the max, which is at or past `next`, in a file never
    /// deleted here (the last file, and every file ending past `next`, stay).
    pub fn expire_before(&self, next: i64, commitlog_pos: i64) -> io::Result<bool> {
        let mut files = self.files.write();
        let (min, max) = (self.min_offset(), self.max_offset());
        if min == max && max < next {
            // No entry at all, and this replica's queue ends below the master's (it started
            // its log over past them): nothing to cut, and no record lies in between.
            return Ok(true);
        }
        if next < min || next > max {
            return Ok(false);
        }
        // The first entry at or past the expiry's place, by binary search (entries are in
        // CommitLog order; an invalid slot counts as before it, as in `offset_at`).
        let (mut lo, mut hi) = (min, max);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let before = self
                .locate_in(&files, mid)
                .map(|(f, pos)| {
                    // SAFETY: in [min, max) under the exclusive `files` lock: nobody rewrites it.
                    CqEntry::decode(unsafe { f.slice(pos, CQ_UNIT_SIZE) })
                })
                .is_none_or(|e| !e.is_valid() || e.commit_log_offset < commitlog_pos);
            if before {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo != next {
            return Ok(false);
        }
        // Logical cut first: from here on no reader looks below `next`.
        self.min_offset.fetch_max(next, Ordering::AcqRel);
        let byte = next as u64 * CQ_UNIT_SIZE as u64;
        let mut deleted = Vec::new();
        while files.len() > 1 && files[0].end_offset() <= byte {
            deleted.push(files.remove(0));
        }
        // The files wholly below go first (durably), then the first file's slots are blanked:
        // a crash in between leaves the queue whole from the first file on (a smaller cut,
        // which the record's replay completes), never blanks with older entries below them.
        remove_durably(&self.dir, deleted.iter().map(|f| f.path()))?;
        if let Some(first) = files.first() {
            let upto = byte
                .saturating_sub(first.start_offset())
                .min(first.size() as u64) as usize;
            if upto > 0 {
                let chunk = CqEntry::BLANK.encode().repeat(4096);
                let mut pos = 0;
                while pos < upto {
                    let n = chunk.len().min(upto - pos);
                    // SAFETY: below the min raised above, under the exclusive `files` lock:
                    // no reader copies these slots and the writer writes only at or past the
                    // max (>= `next`).
                    unsafe { first.write(pos, &chunk[..n]) };
                    pos += n;
                }
                first.flush_range(0, upto)?;
            }
        }
        self.flushed_offset.fetch_max(next, Ordering::AcqRel);
        Ok(true)
    }

    /// Drops the entries whose record reaches past `commitlog_end`. Entries are in CommitLog
    /// order, so this is a cut at the first such entry (found by binary search).
    pub fn truncate_past(&self, commitlog_end: i64) -> io::Result<i64> {
        let (mut lo, mut hi) = (self.min_offset(), self.max_offset());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.entry(mid) {
                Some(e) if e.is_valid() && e.end() <= commitlog_end => lo = mid + 1,
                _ => hi = mid,
            }
        }
        let cut = self.max_offset() - lo;
        if cut > 0 {
            self.truncate(lo)?;
        }
        Ok(cut)
    }
}

/// Every ConsumeQueue of the store, by topic and queue id.
pub struct ConsumeQueueStore {
    root: PathBuf,
    entries_per_file: u64,
    queues: RwLock<HashMap<String, HashMap<i32, Arc<ConsumeQueue>>>>,
}

impl ConsumeQueueStore {
    /// Loads every queue found under `root` (`{topic}/{queueId}/`).
    pub fn load(root: &Path, entries_per_file: u64) -> io::Result<ConsumeQueueStore> {
        create_dir_all_durable(root)?;
        let mut queues: HashMap<String, HashMap<i32, Arc<ConsumeQueue>>> = HashMap::new();
        for t in fs::read_dir(root)? {
            let t = t?;
            if !t.file_type()?.is_dir() {
                continue;
            }
            let topic = t.file_name().to_string_lossy().to_string();
            for q in fs::read_dir(t.path())? {
                let q = q?;
                let Ok(qid) = q.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let cq = ConsumeQueue::load(root, &topic, qid, entries_per_file)?;
                queues
                    .entry(topic.clone())
                    .or_default()
                    .insert(qid, Arc::new(cq));
            }
        }
        Ok(ConsumeQueueStore {
            root: root.to_path_buf(),
            entries_per_file,
            queues: RwLock::new(queues),
        })
    }

    pub fn get(&self, topic: &str, queue_id: i32) -> Option<Arc<ConsumeQueue>> {
        self.queues.read().get(topic)?.get(&queue_id).cloned()
    }

    pub fn get_or_create(&self, topic: &str, queue_id: i32) -> Arc<ConsumeQueue> {
        if let Some(q) = self.get(topic, queue_id) {
            return q;
        }
        let mut w = self.queues.write();
        w.entry(topic.to_string())
            .or_default()
            .entry(queue_id)
            .or_insert_with(|| {
                Arc::new(ConsumeQueue::new(
                    &self.root,
                    topic,
                    queue_id,
                    self.entries_per_file,
                ))
            })
            .clone()
    }

    pub fn all(&self) -> Vec<Arc<ConsumeQueue>> {
        self.queues
            .read()
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// The queue ids that exist for `topic`.
    pub fn queue_ids(&self, topic: &str) -> Vec<i32> {
        let mut ids: Vec<i32> = self
            .queues
            .read()
            .get(topic)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    pub fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self.queues.read().keys().cloned().collect();
        t.sort();
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(o: i64) -> CqEntry {
        CqEntry {
            commit_log_offset: o,
            size: 100,
            tags_code: o * 7,
        }
    }

    #[test]
    fn entry_codec() {
        let x = CqEntry {
            commit_log_offset: 1 << 40,
            size: 321,
            tags_code: -5,
        };
        assert_eq!(CqEntry::decode(&x.encode()), x);
        assert!(!CqEntry::decode(&[0u8; 20]).is_valid());
    }

    #[test]
    fn append_across_files_and_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cq = ConsumeQueue::new(dir.path(), "T", 1, 4);
        for i in 0..10 {
            cq.append(i, e(i * 100)).expect("append");
        }
        assert_eq!(cq.max_offset(), 10);
        assert_eq!(cq.entry(9), Some(e(900)));
        assert_eq!(cq.entry(10), None);
        cq.flush().expect("flush");
        assert_eq!(cq.roll_next_file(5), 8);
        // Files named by byte offset: 0, 80, 160.
        let qdir = dir.path().join("T").join("1");
        for start in [0u64, 80, 160] {
            assert!(qdir.join(file_name(start)).exists(), "{start}");
        }
        drop(cq);
        let cq = ConsumeQueue::load(dir.path(), "T", 1, 4).expect("load");
        assert_eq!((cq.min_offset(), cq.max_offset()), (0, 10));
        assert_eq!(cq.entry(4), Some(e(400)));
        assert_eq!(cq.truncate_past(550).expect("cut"), 5);
        assert_eq!(cq.max_offset(), 5);
        cq.append(5, e(555)).expect("append");
        drop(cq);
        let cq = ConsumeQueue::load(dir.path(), "T", 1, 4).expect("load");
        assert_eq!(cq.max_offset(), 6);
        assert_eq!(cq.entry(5), Some(e(555)));
        assert!(!qdir.join(file_name(160)).exists());
    }

    #[test]
    fn truncation_deleting_files_syncs_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cq = ConsumeQueue::new(dir.path(), "T", 0, 4);
        for i in 0..10 {
            cq.append(i, e(i * 100)).expect("append");
        }
        super::super::mapped_file::SYNCED_DIRS.with(|d| d.borrow_mut().clear());
        cq.truncate(2).expect("truncate");
        let synced = super::super::mapped_file::SYNCED_DIRS.with(|d| d.borrow().clone());
        assert!(
            synced.contains(&dir.path().join("T").join("0")),
            "{synced:?}"
        );
        assert_eq!(cq.max_offset(), 2);
        assert_eq!(cq.entry(1), Some(e(100)));
        assert_eq!(cq.entry(2), None);
    }

    #[test]
    fn a_queue_started_past_0_keeps_its_start_across_a_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let qdir = dir.path().join("T").join("0");
        // No file yet: it starts at 7, in the file of entries 4..8, after three blanks.
        let cq = ConsumeQueue::new(dir.path(), "T", 0, 4);
        assert!(cq.start_empty_at(7).expect("seed"));
        assert!(!cq.start_empty_at(7).expect("again"), "already there");
        assert_eq!((cq.min_offset(), cq.max_offset()), (7, 7));
        drop(cq);
        let names: Vec<String> = fs::read_dir(&qdir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(
            names,
            vec![file_name(80)],
            "only the seeded file, by its name"
        );
        let cq = ConsumeQueue::load(dir.path(), "T", 0, 4).expect("load");
        assert_eq!((cq.min_offset(), cq.max_offset()), (7, 7));
        assert_eq!(cq.entry(6), None, "a blank is no entry");
        cq.append(7, e(700)).expect("append");
        cq.append(8, e(800)).expect("append");
        cq.flush().expect("flush");
        drop(cq);
        let cq = ConsumeQueue::load(dir.path(), "T", 0, 4).expect("load");
        assert_eq!((cq.min_offset(), cq.max_offset()), (7, 9));
        assert_eq!(cq.entry(7), Some(e(700)));
        assert_eq!(cq.offset_at(0), 7);
        // Starting the log over below: the entry of a record that ends at or before the cut is
        // kept (the blanks before it are not entries to keep).
        cq.start_over_at(800).expect("start over");
        assert_eq!((cq.min_offset(), cq.max_offset()), (7, 8));
        assert_eq!(cq.clean_below(1000).expect("clean"), 0);
        assert_eq!((cq.min_offset(), cq.max_offset()), (8, 8));
        drop(cq);

        // A queue with no entry left and its old file (carrying its max 8) starts further on:
        // the old file goes, the new one holds its blanks.
        let cq = ConsumeQueue::load(dir.path(), "T", 0, 4).expect("load");
        cq.clean_below(1000).expect("clean");
        assert_eq!((cq.min_offset(), cq.max_offset()), (8, 8));
        assert!(cq.start_empty_at(13).expect("seed"));
        drop(cq);
        let cq = ConsumeQueue::load(dir.path(), "T", 0, 4).expect("load");
        assert_eq!((cq.min_offset(), cq.max_offset()), (13, 13));
        assert!(!qdir.join(file_name(80)).exists());
        assert!(qdir.join(file_name(240)).exists());
        cq.append(13, e(1300)).expect("append");
        assert_eq!(cq.entry(13), Some(e(1300)));
        assert_eq!(cq.entry(12), None);

        // A seed left behind by a crash before its rename is removed as stray at load.
        std::fs::write(qdir.join(format!("{}.seed", file_name(320))), b"x").expect("write");
        drop(cq);
        let cq = ConsumeQueue::load(dir.path(), "T", 0, 4).expect("load");
        assert_eq!((cq.min_offset(), cq.max_offset()), (13, 14));
        assert!(!qdir.join(format!("{}.seed", file_name(320))).exists());
        assert!(!CqEntry::BLANK.is_valid() && CqEntry::BLANK.is_blank());
    }

    #[test]
    fn an_expired_queue_drops_its_entries_keeps_its_offsets_and_stays_cut_across_a_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let qdir = dir.path().join("L").join("0");
        let cq = ConsumeQueue::new(dir.path(), "L", 0, 4);
        // Entries 0..10 at CommitLog offsets 0, 100, ..., 900: files 0..4, 4..8, 8..12.
        for i in 0..10 {
            cq.append(i, e(i * 100)).expect("append");
        }
        // A record of the queue (entry 10) lies between what the expiry saw (10) and its place
        // (1050): nothing changes.
        cq.append(10, e(1000)).expect("append");
        assert!(!cq.expire_before(10, 1050).expect("expire"));
        assert_eq!((cq.min_offset(), cq.max_offset()), (0, 11));
        // Out of range: nothing changes.
        assert!(!cq.expire_before(12, 2000).expect("expire"));
        // The expiry at 1050 saw 11 entries; a record after it (entry 11) stays.
        cq.append(11, e(1100)).expect("append");
        assert!(cq.expire_before(11, 1050).expect("expire"));
        assert_eq!((cq.min_offset(), cq.max_offset()), (11, 12));
        assert_eq!(cq.entry(10), None);
        assert_eq!(cq.entry(11), Some(e(1100)));
        assert!(cq.expire_before(11, 1050).expect("again"), "idempotent");
        assert!(
            !qdir.join(file_name(0)).exists(),
            "a file wholly below goes"
        );
        assert!(
            !qdir.join(file_name(80)).exists(),
            "a file wholly below goes"
        );
        cq.append(12, e(1200)).expect("append");
        cq.flush().expect("flush");
        drop(cq);
        let cq = ConsumeQueue::load(dir.path(), "L", 0, 4).expect("load");
        assert_eq!((cq.min_offset(), cq.max_offset()), (11, 13));
        assert_eq!(cq.entry(11), Some(e(1100)));
        // Expired at its end, on a file boundary: the last file stays, all blanks, and carries
        // the max; the next record goes on at 16.
        for i in 13..16 {
            cq.append(i, e(i * 100)).expect("append");
        }
        assert!(cq.expire_before(16, 1600).expect("expire"));
        assert_eq!((cq.min_offset(), cq.max_offset()), (16, 16));
        drop(cq);
        let cq = ConsumeQueue::load(dir.path(), "L", 0, 4).expect("load");
        assert_eq!((cq.min_offset(), cq.max_offset()), (16, 16));
        cq.append(16, e(1700)).expect("append");
        assert_eq!(cq.entry(16), Some(e(1700)));
        drop(cq);
        let cq = ConsumeQueue::load(dir.path(), "L", 0, 4).expect("load");
        assert_eq!((cq.min_offset(), cq.max_offset()), (16, 17));
    }

    /// The writer appends, readers copy entries and an expirer cuts the queue at its end, all
    /// at once, over small files (many deletions and blankings): a reader only ever gets the
    /// entry written at that offset (never a blank, a zeroed slot or a neighbour's), never sees
    /// the min go back, and a reload afterwards starts at the last cut with every entry past it.
    #[test]
    fn readers_writer_and_expiries_at_once_never_see_a_torn_or_blank_entry() {
        use std::sync::atomic::{AtomicBool, AtomicUsize};
        const ENTRIES: i64 = 20_000;
        let dir = tempfile::tempdir().expect("tempdir");
        let cq = Arc::new(ConsumeQueue::new(dir.path(), "L", 0, 16));
        let done = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicUsize::new(0));
        let readers: Vec<_> = (0..3u64)
            .map(|seed| {
                let (cq, done, reads) = (cq.clone(), done.clone(), reads.clone());
                std::thread::spawn(move || {
                    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    let mut last_min = 0;
                    while !done.load(Ordering::Acquire) {
                        let (min, max) = (cq.min_offset(), cq.max_offset());
                        assert!(min >= last_min, "the min went back: {last_min} -> {min}");
                        last_min = min;
                        if max <= min {
                            std::thread::yield_now();
                            continue;
                        }
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let i = min + (x % (max - min) as u64) as i64;
                        if let Some(got) = cq.entry(i) {
                            assert_eq!(got, e(i * 100), "entry {i}");
                            reads.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        let expirer = {
            let (cq, done) = (cq.clone(), done.clone());
            std::thread::spawn(move || {
                let mut cuts = 0;
                let mut last = 0;
                while !done.load(Ordering::Acquire) {
                    // An expiry that saw the queue end at `next`, placed where the record at
                    // `next` would start: everything below it goes, a later append stays.
                    let next = cq.max_offset();
                    if next > last {
                        assert!(cq.expire_before(next, next * 100).expect("expire"));
                        assert!(cq.min_offset() >= next);
                        last = next;
                        cuts += 1;
                    }
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                (cuts, last)
            })
        };
        for i in 0..ENTRIES {
            cq.append(i, e(i * 100)).expect("append");
            if i % 64 == 0 {
                std::thread::yield_now();
            }
        }
        done.store(true, Ordering::Release);
        for r in readers {
            r.join().expect("a reader saw a wrong entry");
        }
        let (cuts, last) = expirer.join().expect("the expirer failed");
        assert!(cuts > 10, "only {cuts} expiries ran beside the writer");
        assert!(reads.load(Ordering::Relaxed) > 0, "no reader got an entry");
        assert_eq!(cq.min_offset(), last);
        assert_eq!(cq.max_offset(), ENTRIES);
        cq.flush().expect("flush");
        drop(cq);
        let cq = ConsumeQueue::load(dir.path(), "L", 0, 16).expect("load");
        assert_eq!((cq.min_offset(), cq.max_offset()), (last, ENTRIES));
        for i in last..ENTRIES {
            assert_eq!(cq.entry(i), Some(e(i * 100)), "entry {i} after the reload");
        }
    }

    #[test]
    fn store_loads_queues() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = ConsumeQueueStore::load(dir.path(), 8).expect("load");
        s.get_or_create("A", 0).append(0, e(0)).expect("append");
        s.get_or_create("A", 3).append(0, e(100)).expect("append");
        s.get_or_create("B", 0);
        drop(s);
        let s = ConsumeQueueStore::load(dir.path(), 8).expect("load");
        assert_eq!(s.topics(), vec!["A".to_string()]);
        assert_eq!(s.queue_ids("A"), vec![0, 3]);
        assert_eq!(s.get("A", 3).map(|q| q.max_offset()), Some(1));
    }
}
