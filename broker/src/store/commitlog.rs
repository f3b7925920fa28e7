//! The CommitLog: every record of every topic, appended to a chain of equally sized mapped
//! segments named by their first byte's offset. A record never spans two segments; when the
//! next one does not fit (with room for the 8-byte blank marker) the writer fills the rest of
//! the segment with `[i32 remaining][i32 BLANK_MAGIC_CODE]` and rolls.
//!
//! This type is the shared, read-mostly view (segments, published end, flushed offset). The
//! single writer that appends lives in `writer.rs`.

use std::io;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use rocketraft_common::message::{self, BLANK_MAGIC_CODE};

use super::mapped_file::MappedFile;

/// Room the blank marker needs at the end of a segment (RocketMQ's `END_FILE_MIN_BLANK_LENGTH`).
pub const END_FILE_MIN_BLANK_LENGTH: usize = 8;

pub struct CommitLog {
    segment_size: u64,
    /// Sorted, contiguous segments.
    segments: RwLock<Vec<Arc<MappedFile>>>,
    /// End of the bytes written and published to readers.
    max_offset: AtomicI64,
    /// Bytes below this offset are synced to disk.
    flushed_offset: AtomicI64,
    /// Held by `flush` and `cut`, so a flush never re-raises the flushed offset past a cut.
    flush_lock: parking_lot::Mutex<()>,
}

impl CommitLog {
    /// `flushed` is how far the bytes are known to be synced (recovery's verified start: what
    /// follows may still sit dirty in the page cache after a process crash).
    pub fn new(
        segment_size: u64,
        segments: Vec<Arc<MappedFile>>,
        end: i64,
        flushed: i64,
    ) -> CommitLog {
        CommitLog {
            segment_size,
            segments: RwLock::new(segments),
            max_offset: AtomicI64::new(end),
            flushed_offset: AtomicI64::new(flushed.min(end)),
            flush_lock: parking_lot::Mutex::new(()),
        }
    }

    pub fn segment_size(&self) -> u64 {
        self.segment_size
    }

    /// The end of the published bytes: the next record goes here (or at the next segment).
    pub fn max_offset(&self) -> i64 {
        self.max_offset.load(Ordering::Acquire)
    }

    /// Publishes bytes up to `end` to readers. Writer only, after the bytes are in place.
    pub fn publish(&self, end: i64) {
        self.max_offset.store(end, Ordering::Release);
    }

    pub fn flushed_offset(&self) -> i64 {
        self.flushed_offset.load(Ordering::Acquire)
    }

    /// The first offset still on disk (the end, for a log with no segment).
    pub fn min_offset(&self) -> i64 {
        self.segments
            .read()
            .first()
            .map_or_else(|| self.max_offset(), |s| s.start_offset() as i64)
    }

    /// Start of the segment holding `offset`.
    pub fn segment_start(&self, offset: i64) -> i64 {
        offset - offset.rem_euclid(self.segment_size as i64)
    }

    /// The segment of `segs` that holds `offset`.
    fn segment_in<'a>(
        &self,
        segs: &'a [Arc<MappedFile>],
        offset: i64,
    ) -> Option<&'a Arc<MappedFile>> {
        if offset < 0 {
            return None;
        }
        let first = segs.first()?.start_offset();
        let off = offset as u64;
        if off < first {
            return None;
        }
        segs.get(((off - first) / self.segment_size) as usize)
    }

    /// The segment that holds `offset`.
    pub fn segment_for(&self, offset: i64) -> Option<Arc<MappedFile>> {
        let segs = self.segments.read();
        self.segment_in(&segs, offset).cloned()
    }

    /// A snapshot of the chain of segments, oldest first.
    pub fn segments(&self) -> Vec<Arc<MappedFile>> {
        self.segments.read().clone()
    }

    /// Takes the oldest segment out of the chain if it ends at or below `limit` and is not the
    /// only one (the writer's segment is never removed). Retention only. Readers that already
    /// hold it keep their mapping until they drop it; new reads below the new first segment
    /// find nothing.
    pub fn remove_first(&self, limit: i64) -> Option<Arc<MappedFile>> {
        let mut segs = self.segments.write();
        if segs.len() < 2 || segs[0].end_offset() as i64 > limit {
            return None;
        }
        Some(segs.remove(0))
    }

    /// Empties the log and makes it start at `offset` (a segment start, past the end or at or
    /// below the first offset): every segment leaves the chain and is returned for deletion.
    /// Writer only (a replica starting over, see the writer's `reset_to`).
    pub fn reset(&self, offset: i64) -> Vec<Arc<MappedFile>> {
        let _guard = self.flush_lock.lock();
        let mut segs = self.segments.write();
        let removed = std::mem::take(&mut *segs);
        self.max_offset.store(offset, Ordering::Release);
        self.flushed_offset.store(offset, Ordering::Release);
        removed
    }

    /// Adds a segment at the end. Writer only.
    pub fn push_segment(&self, seg: Arc<MappedFile>) {
        let mut segs = self.segments.write();
        debug_assert!(segs
            .last()
            .is_none_or(|l| l.end_offset() == seg.start_offset()));
        segs.push(seg);
    }

    /// Copies `len` published bytes at `offset`, `None` if they are not all published or cross
    /// a segment boundary.
    pub fn read(&self, offset: i64, len: usize) -> Option<Bytes> {
        // The end is checked and the bytes copied under the shared segments lock: `cut` lowers
        // the end and zeroes the tail under the exclusive lock, so these bytes stay published
        // (and untouched) for the whole copy.
        let segs = self.segments.read();
        let end = offset.checked_add(len as i64)?;
        if offset < 0 || end > self.max_offset() {
            return None;
        }
        let seg = self.segment_in(&segs, offset)?;
        let pos = (offset as u64 - seg.start_offset()) as usize;
        if pos + len > seg.size() {
            return None;
        }
        // SAFETY: published bytes, checked under the segments lock that `cut` (the only rewrite
        // of published bytes) holds exclusively: nobody writes them while they are copied.
        Some(Bytes::copy_from_slice(unsafe { seg.slice(pos, len) }))
    }

    /// Reads a big-endian i32 of published bytes.
    pub fn read_i32(&self, offset: i64) -> Option<i32> {
        let b = self.read(offset, 4)?;
        message::read_i32(&b, 0)
    }

    /// The whole record at `offset` (checks magic and layout, not CRCs).
    pub fn read_record(&self, offset: i64) -> Option<Bytes> {
        let size = self.read_i32(offset)?;
        if size <= 0 {
            return None;
        }
        let rec = self.read(offset, size as usize)?;
        if message::read_i32(&rec, 4)? == BLANK_MAGIC_CODE {
            return None;
        }
        message::record_size(&rec).ok()?;
        Some(rec)
    }

    /// The record at `offset` if it is `size` bytes long and intact: layout, physical offset
    /// field and CRCs are checked on the way out, as they were on the way in.
    pub fn read_record_sized(&self, offset: i64, size: i32) -> Option<Bytes> {
        if size <= 0 {
            return None;
        }
        let rec = self.read(offset, size as usize)?;
        if message::read_i64(&rec, message::pos::PHYSICAL_OFFSET)? != offset
            || message::check_record(&rec) == message::RecordCheck::Bad
        {
            tracing::error!(
                offset,
                size,
                "CommitLog record fails its CRC or does not match its ConsumeQueue entry"
            );
            return None;
        }
        Some(rec)
    }

    /// The store timestamp of the record at `offset`.
    pub fn store_timestamp_at(&self, offset: i64) -> Option<i64> {
        // Every record is at least MIN_RECORD_LEN (91) bytes, so this never reads past it.
        let head = self.read(offset, message::pos::BORN_HOST + 20 + 8)?;
        message::record_store_timestamp(&head)
    }

    /// Cuts the log at `offset` (writer only): lowers the published end under the exclusive
    /// segments lock (so no reader is copying past it, see [`read`](Self::read)), then zeroes
    /// and syncs the rest of its segment, drops the later segments from the chain and returns
    /// their paths for deletion.
    pub fn cut(&self, offset: i64) -> io::Result<Vec<std::path::PathBuf>> {
        let _guard = self.flush_lock.lock();
        let mut removed = Vec::new();
        let mut segs = self.segments.write();
        self.max_offset.fetch_min(offset, Ordering::AcqRel);
        self.flushed_offset.fetch_min(offset, Ordering::AcqRel);
        while let Some(last) = segs.last() {
            if (last.start_offset() as i64) < offset
                || (last.start_offset() as i64 == offset && segs.len() == 1)
            {
                break;
            }
            removed.push(last.path().to_path_buf());
            segs.pop();
        }
        if let Some(seg) = segs.last() {
            let end = seg.end_offset() as i64;
            if offset < end && offset >= seg.start_offset() as i64 {
                let rel = (offset as u64 - seg.start_offset()) as usize;
                // SAFETY: past the published end, lowered above under the exclusive segments
                // lock that readers hold while they copy; the single writer is the caller.
                let dirtied = unsafe { seg.zero_tail(rel) };
                if dirtied > 0 {
                    seg.flush_range(rel, seg.size() - rel)?;
                }
            }
        }
        drop(segs);
        self.max_offset.store(offset, Ordering::Release);
        self.flushed_offset.fetch_min(offset, Ordering::AcqRel);
        Ok(removed)
    }

    /// Syncs every byte below `target` not yet synced. Returns whether anything was synced.
    pub fn flush(&self, target: i64) -> io::Result<bool> {
        let _guard = self.flush_lock.lock();
        let target = target.min(self.max_offset());
        let mut from = self.flushed_offset();
        if from >= target {
            return Ok(false);
        }
        while from < target {
            let Some(seg) = self.segment_for(from) else {
                return Err(io::Error::other(format!(
                    "no CommitLog segment holds offset {from}"
                )));
            };
            let pos = (from as u64 - seg.start_offset()) as usize;
            let upto = (target as u64).min(seg.end_offset());
            let len = (upto - from as u64) as usize;
            seg.flush_range(pos, len)?;
            from = upto as i64;
        }
        self.flushed_offset.fetch_max(target, Ordering::AcqRel);
        Ok(true)
    }
}
