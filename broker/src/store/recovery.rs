//! Recovery at open: find the end of the valid CommitLog, cut what follows, and make the
//! ConsumeQueues agree with it.
//!
//! 1. Load the segments (contiguous, all of the configured size; `.tmp` leftovers of an
//!    interrupted creation are removed), the ConsumeQueues and the checkpoint.
//! 2. Choose where to start verifying: the start of the segment holding the checkpoint's
//!    flushed points (everything before was synced before the checkpoint was written). A
//!    ConsumeQueue that has fewer entries than the checkpoint recorded (deleted or cut files)
//!    moves the start back to where its last entry ends (or the beginning). No checkpoint or
//!    `recover_full_scan` = start at the first segment.
//! 3. Walk record by record: magic, sizes, the physical offset field (must equal the position),
//!    whole-record CRC (or the body CRC for records without one). The first record that fails,
//!    or a zero header, is the end. Every valid record is re-dispatched (idempotently).
//! 4. Cut: after a crash or when the walk stopped on a bad record, zero the rest of the end
//!    segment (so stale bytes can never be mistaken for records later) and delete the segments
//!    after it; drop ConsumeQueue entries that point past the end.
//!
//! A bad record in the middle of the log ends it there: everything after it is cut, like
//! RocketMQ does. This is logged at error level with the number of bytes cut; a cut below the
//! checkpoint's flushed offset means synced data was damaged on disk.

use std::fs;
use std::sync::Arc;
use std::time::Instant;

use rocketraft_common::message::{self, RecordCheck, BLANK_MAGIC_CODE, MIN_RECORD_LEN};

use super::checkpoint::Checkpoint;
use super::config::StoreConfig;
use super::consume_queue::ConsumeQueueStore;
use super::dispatch::{redispatch, DispatchRequest, Redispatch};
use super::error::StoreError;
use super::mapped_file::{create_dir_all_durable, parse_file_name, sync_dir, MappedFile};

/// Log progress every this many bytes walked.
const PROGRESS_EVERY_BYTES: u64 = 256 << 20;

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The abort marker was absent: the previous run shut down cleanly.
    pub clean_shutdown: bool,
    /// A valid checkpoint was found.
    pub checkpoint_found: bool,
    /// Where verification started.
    pub walk_start: i64,
    /// The end of the valid CommitLog: the next record goes here.
    pub end_offset: i64,
    pub records_checked: u64,
    pub bytes_checked: u64,
    /// Non-zero bytes zeroed past the end (torn or corrupted tail, stale bytes).
    pub bytes_cut: u64,
    /// Why the walk stopped, if it stopped on something other than a clean end.
    pub cut_reason: Option<String>,
    pub segments_deleted: usize,
    /// ConsumeQueue entries appended or replaced while re-dispatching.
    pub cq_entries_rebuilt: u64,
    /// ConsumeQueue entries dropped because they pointed past the end.
    pub cq_entries_truncated: u64,
    pub elapsed_ms: u64,
}

impl RecoveryReport {
    /// The closing summary line of a recovery.
    fn log_recovered(&self) {
        tracing::info!(
            end_offset = self.end_offset,
            records_checked = self.records_checked,
            bytes_checked = self.bytes_checked,
            bytes_cut = self.bytes_cut,
            segments_deleted = self.segments_deleted,
            cq_entries_rebuilt = self.cq_entries_rebuilt,
            cq_entries_truncated = self.cq_entries_truncated,
            elapsed_ms = self.elapsed_ms,
            "store recovered"
        );
    }
}

pub(crate) struct Recovered {
    pub segments: Vec<Arc<MappedFile>>,
    pub end: i64,
    pub cqs: ConsumeQueueStore,
    pub last_store_timestamp: i64,
    /// The confirm offset of the checkpoint, if it has one.
    pub confirm: Option<i64>,
    pub report: RecoveryReport,
}

fn load_segments(config: &StoreConfig) -> Result<Vec<Arc<MappedFile>>, StoreError> {
    let dir = config.commitlog_dir();
    create_dir_all_durable(&dir).map_err(|e| StoreError::io(&dir, e))?;
    let size = config.commitlog_segment_size;
    let mut starts = Vec::new();
    // Deletions are made durable (directory fsync) before recovery goes on.
    let mut removed = false;
    for e in fs::read_dir(&dir).map_err(|e| StoreError::io(&dir, e))? {
        let e = e.map_err(|e| StoreError::io(&dir, e))?;
        let name = e.file_name().to_string_lossy().to_string();
        if name.ends_with(".tmp") {
            tracing::info!(file = %name, "removing an interrupted segment creation");
            fs::remove_file(e.path()).map_err(|err| StoreError::io(e.path(), err))?;
            removed = true;
            continue;
        }
        match parse_file_name(&name) {
            Some(s) if s % size == 0 => starts.push(s),
            Some(_) => {
                return Err(StoreError::Config(format!(
                    "CommitLog segment {name} does not start at a multiple of commitlog_segment_size {size}; was the size changed?"
                )))
            }
            None => tracing::warn!(file = %name, "ignoring a foreign file in the CommitLog directory"),
        }
    }
    starts.sort_unstable();
    let last = starts.last().copied();
    let mut segments: Vec<Arc<MappedFile>> = Vec::with_capacity(starts.len());
    for s in starts {
        let path = dir.join(super::mapped_file::file_name(s));
        if let Some(prev) = segments.last() {
            if prev.end_offset() != s {
                // A segment prepared ahead of the writer and never written (its first record
                // header is zero) can sit past a gap after a truncation: it is no data.
                if first_header_is_zero(&path) {
                    tracing::warn!(segment = %path.display(), "removing an unwritten segment past a gap");
                    fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
                    removed = true;
                    continue;
                }
                return Err(StoreError::Corrupted(format!(
                    "CommitLog segment missing between {} and {s}",
                    prev.end_offset()
                )));
            }
        }
        let len = fs::metadata(&path)
            .map_err(|e| StoreError::io(&path, e))?
            .len();
        if len == 0 && Some(s) == last {
            // Not what a power loss leaves (nor a changed segment size): a segment is sized
            // and synced under a `.tmp` name before it gets its own, and its directory is
            // synced after (`MappedFile::create`). Nothing is deleted: what it held may have
            // been acknowledged.
            return Err(StoreError::Corrupted(format!(
                "the last CommitLog segment {} is empty (0 bytes); segments are sized and synced before they are named, so the disk lost a synced size or the file was cut. Nothing was deleted. If no message you need was at or past offset {s}, remove the file and restart",
                path.display()
            )));
        }
        if len != size {
            return Err(StoreError::Config(format!(
                "CommitLog segment {} is {len} bytes but commitlog_segment_size is {size}",
                path.display()
            )));
        }
        let seg =
            MappedFile::open(&path, s, size as usize).map_err(|e| StoreError::io(&path, e))?;
        segments.push(Arc::new(seg));
    }
    if removed {
        sync_dir(&dir).map_err(|e| StoreError::io(&dir, e))?;
    }
    Ok(segments)
}

fn first_header_is_zero(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 8];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head.iter().all(|b| *b == 0))
}

fn segment_index(segments: &[Arc<MappedFile>], offset: i64) -> Option<usize> {
    let first = segments.first()?.start_offset();
    let off = u64::try_from(offset).ok()?;
    if off < first {
        return None;
    }
    let size = segments[0].size() as u64;
    let i = ((off - first) / size) as usize;
    (i < segments.len()).then_some(i)
}

/// `truncate_to`: an interrupted truncation's target (the `truncate` marker): the walk stops
/// there and everything after is cut, as if it were a bad record.
///
/// The steps of the module documentation, in order: load, choose the walk start, walk and
/// re-dispatch, cut. Each step is its own function below.
pub(crate) fn recover(
    config: &StoreConfig,
    abort_existed: bool,
    truncate_to: Option<i64>,
) -> Result<Recovered, StoreError> {
    let started = Instant::now();
    let mut report = RecoveryReport {
        clean_shutdown: !abort_existed,
        ..RecoveryReport::default()
    };
    let mut segments = load_segments(config)?;
    let cq_dir = config.consume_queue_dir();
    let cqs = ConsumeQueueStore::load(&cq_dir, config.consume_queue_entries_per_file as u64)
        .map_err(|e| StoreError::io(&cq_dir, e))?;
    let checkpoint = load_checkpoint(config)?;
    report.checkpoint_found = checkpoint.is_some();
    let seg_size = config.commitlog_segment_size as i64;

    let start = walk_start(config, &segments, &cqs, checkpoint.as_ref(), truncate_to);
    report.walk_start = start;
    tracing::info!(
        clean_shutdown = report.clean_shutdown,
        checkpoint = report.checkpoint_found,
        segments = segments.len(),
        walk_start = start,
        "recovering the store"
    );

    let mut walk = Walk {
        segments: &segments,
        cqs: &cqs,
        cq_dir: &cq_dir,
        started,
        report: &mut report,
    };
    let last_ts = checkpoint.as_ref().map_or(0, |c| c.last_store_timestamp);
    let (end, last_ts, cut_reason) = walk.run(start, truncate_to, last_ts)?;
    report.end_offset = end;

    let cut_reason = cut_reason_at(end, cut_reason, checkpoint.as_ref(), truncate_to);
    report.cut_reason = cut_reason.clone();
    if abort_existed || cut_reason.is_some() {
        report.bytes_cut += zero_tail_at(&segments, end)?;
    }
    delete_segments_past(
        config,
        &mut segments,
        end - end.rem_euclid(seg_size),
        &mut report,
    )?;
    report.cq_entries_truncated += truncate_consume_queues(&cqs, &cq_dir, end)?;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    report.log_recovered();
    Ok(Recovered {
        segments,
        end,
        cqs,
        last_store_timestamp: last_ts,
        confirm: checkpoint.as_ref().and_then(|c| c.confirm_offset),
        report,
    })
}

/// Step 1's checkpoint: an invalid one is logged and treated as absent, so that the whole
/// CommitLog is verified; only an I/O error reading it fails recovery.
fn load_checkpoint(config: &StoreConfig) -> Result<Option<Checkpoint>, StoreError> {
    let cp_path = config.checkpoint_path();
    Ok(
        match Checkpoint::load(&cp_path).map_err(|e| StoreError::io(&cp_path, e))? {
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "checkpoint invalid; verifying the whole CommitLog");
                None
            }
            None => None,
        },
    )
}

/// Step 2: where to start verifying (see the module documentation), rounded down to the start
/// of its segment and kept within the segments present.
fn walk_start(
    config: &StoreConfig,
    segments: &[Arc<MappedFile>],
    cqs: &ConsumeQueueStore,
    checkpoint: Option<&Checkpoint>,
    truncate_to: Option<i64>,
) -> i64 {
    let seg_size = config.commitlog_segment_size as i64;
    let first = segments.first().map_or(0, |s| s.start_offset() as i64);
    let mut start = match (checkpoint, config.recover_full_scan) {
        (Some(c), false) => c.physical_flushed_offset.min(c.dispatch_flushed_offset),
        _ => first,
    };
    if let Some(c) = checkpoint {
        start = start.min(consume_queue_resume(c, cqs, first));
    }
    if let Some(t) = truncate_to {
        start = start.min(t);
    }
    // Never start past the segments present (a checkpoint from a longer log).
    if let Some(last) = segments.last() {
        start = start.min(last.start_offset() as i64);
    }
    start = start.max(first);
    start -= start.rem_euclid(seg_size);
    start
}

/// The earliest point from which a ConsumeQueue with fewer entries than the checkpoint recorded
/// must be rebuilt: where its last valid entry ends, or `first` when it has none. Each such
/// queue is logged. `i64::MAX` when every queue is complete.
fn consume_queue_resume(checkpoint: &Checkpoint, cqs: &ConsumeQueueStore, first: i64) -> i64 {
    let mut start = i64::MAX;
    for (topic, qid, max) in &checkpoint.queues {
        let have = cqs.get(topic, *qid);
        let have_max = have.as_ref().map_or(0, |q| q.max_offset());
        if have_max >= *max {
            continue;
        }
        let resume = have
            .as_ref()
            .and_then(|q| q.entry(q.max_offset() - 1))
            .filter(|e| e.is_valid())
            .map_or(first, |e| e.end());
        tracing::warn!(
            topic,
            queue_id = qid,
            have = have_max,
            expected = max,
            resume_from = resume,
            "ConsumeQueue lost entries since the checkpoint; rebuilding it from the CommitLog"
        );
        start = start.min(resume);
    }
    start
}

/// What the walk found at one position of a segment.
enum Step<'a> {
    /// Too few bytes left for a header, or a blank marker filling the rest: the walk goes on at
    /// the next segment.
    NextSegment,
    /// A zero header: the clean end of the log.
    End,
    /// The first invalid record: the log ends here, for this reason.
    Cut(String),
    /// A valid record, and what re-dispatching it needs.
    Record {
        rec: &'a [u8],
        req: DispatchRequest<'a>,
        /// False for transaction prepared and rollback records, which have no
        /// ConsumeQueue entry.
        indexed: bool,
    },
}

/// Step 3's check of the record at `pos` (inside `seg`): header, blank marker, size, CRC,
/// physical offset, then the fields dispatching reads, in that order.
fn inspect(seg: &MappedFile, pos: i64) -> Step<'_> {
    let rel = (pos as u64 - seg.start_offset()) as usize;
    let remaining = seg.size() - rel;
    if remaining < 8 {
        return Step::NextSegment;
    }
    // SAFETY: recovery runs before the writer and any reader exist.
    let head = unsafe { seg.slice(rel, 8) };
    let size = message::read_i32(head, 0).unwrap_or(0);
    let magic = message::read_i32(head, 4).unwrap_or(0);
    if size == 0 && magic == 0 {
        return Step::End;
    }
    if magic == BLANK_MAGIC_CODE {
        if size >= 0 && size as usize == remaining {
            return Step::NextSegment;
        }
        return Step::Cut(format!(
            "blank marker of size {size} with {remaining} bytes left at {pos}"
        ));
    }
    if size < MIN_RECORD_LEN as i32 || size as usize > remaining {
        return Step::Cut(format!("impossible record size {size} at {pos}"));
    }
    // SAFETY: as above.
    let rec = unsafe { seg.slice(rel, size as usize) };
    if message::check_record(rec) == RecordCheck::Bad {
        return Step::Cut(format!("record at {pos} fails its CRC or layout check"));
    }
    if message::read_i64(rec, message::pos::PHYSICAL_OFFSET) != Some(pos) {
        return Step::Cut(format!("record at {pos} carries another physical offset"));
    }
    let (Some(topic), Some(queue_id), Some(queue_offset), Some(tags_code)) = (
        message::record_topic(rec),
        message::read_i32(rec, message::pos::QUEUE_ID),
        message::read_i64(rec, message::pos::QUEUE_OFFSET),
        message::record_tags_code(rec),
    ) else {
        return Step::Cut(format!("record at {pos} has unreadable fields"));
    };
    if rocketraft_common::topic::validate_stored_topic_name(topic).is_err()
        || queue_id < 0
        || queue_offset < 0
    {
        return Step::Cut(format!("record at {pos} has an invalid topic or queue"));
    }
    let tran = rocketraft_common::consts::sys_flag::transaction_value(
        message::read_i32(rec, message::pos::SYS_FLAG).unwrap_or(0),
    );
    let indexed = tran != rocketraft_common::consts::sys_flag::TRANSACTION_PREPARED_TYPE
        && tran != rocketraft_common::consts::sys_flag::TRANSACTION_ROLLBACK_TYPE;
    Step::Record {
        rec,
        req: DispatchRequest {
            topic,
            queue_id,
            queue_offset,
            commit_log_offset: pos,
            size,
            tags_code,
        },
        indexed,
    }
}

/// Step 3: the record-by-record walk, with what it reads and counts into.
struct Walk<'a> {
    segments: &'a [Arc<MappedFile>],
    cqs: &'a ConsumeQueueStore,
    cq_dir: &'a std::path::Path,
    started: Instant,
    report: &'a mut RecoveryReport,
}

impl Walk<'_> {
    /// Walks from `start` until the end of the log, a bad record or `truncate_to`, re-dispatching
    /// every valid record. Returns the end, the latest store timestamp seen (starting from
    /// `last_ts`) and why the walk stopped if it stopped on a bad record.
    fn run(
        &mut self,
        start: i64,
        truncate_to: Option<i64>,
        mut last_ts: i64,
    ) -> Result<(i64, i64, Option<String>), StoreError> {
        let mut pos = start;
        let mut next_progress = PROGRESS_EVERY_BYTES;
        let mut cut_reason: Option<String> = None;
        let limit = truncate_to.unwrap_or(i64::MAX);
        while let Some(i) = segment_index(self.segments, pos) {
            if pos >= limit {
                break;
            }
            let seg = &self.segments[i];
            let (rec, req, indexed) = match inspect(seg, pos) {
                Step::NextSegment => {
                    pos = seg.end_offset() as i64;
                    continue;
                }
                Step::End => break,
                Step::Cut(reason) => {
                    cut_reason = Some(reason);
                    break;
                }
                Step::Record { rec, req, indexed } => (rec, req, indexed),
            };
            self.redispatch(&req, indexed)?;
            if let Some(ts) = message::record_store_timestamp(rec) {
                last_ts = last_ts.max(ts);
            }
            self.report.records_checked += 1;
            self.report.bytes_checked += req.size as u64;
            pos += req.size as i64;
            if self.report.bytes_checked >= next_progress {
                next_progress += PROGRESS_EVERY_BYTES;
                tracing::info!(
                    checked_mib = self.report.bytes_checked >> 20,
                    records = self.report.records_checked,
                    offset = pos,
                    elapsed_ms = self.started.elapsed().as_millis() as u64,
                    "recovery progress"
                );
            }
        }
        Ok((pos, last_ts, cut_reason))
    }

    /// Makes the record's ConsumeQueue entry present (an `indexed` record only) and counts what
    /// was rebuilt; a queue offset gap is logged as a bug.
    fn redispatch(&mut self, req: &DispatchRequest<'_>, indexed: bool) -> Result<(), StoreError> {
        let outcome = if indexed {
            redispatch(self.cqs, req).map_err(|e| StoreError::io(self.cq_dir, e))?
        } else {
            Redispatch::Present
        };
        match outcome {
            Redispatch::Present => {}
            Redispatch::Appended | Redispatch::Replaced => self.report.cq_entries_rebuilt += 1,
            Redispatch::Gap => {
                self.report.cq_entries_rebuilt += 1;
                tracing::error!(
                    topic = req.topic,
                    queue_id = req.queue_id,
                    queue_offset = req.queue_offset,
                    pos = req.commit_log_offset,
                    "[BUG] queue offset gap in ConsumeQueue rebuild"
                );
            }
        }
        Ok(())
    }
}

/// Step 4's reason for cutting at `end`: the walk's, or the completion of an interrupted
/// truncation that reached its target. Logs it, and at error level a bad record, noting when the
/// cut is below the checkpoint's flushed offset (synced data damaged on disk).
fn cut_reason_at(
    end: i64,
    mut cut_reason: Option<String>,
    checkpoint: Option<&Checkpoint>,
    truncate_to: Option<i64>,
) -> Option<String> {
    let truncating = truncate_to.is_some_and(|t| end >= t);
    if truncating && cut_reason.is_none() {
        tracing::warn!(end, "completing an interrupted truncation");
        cut_reason = Some(format!("completing an interrupted truncation to {end}"));
    } else if let Some(reason) = &cut_reason {
        tracing::error!(end, reason = %reason, "CommitLog cut at the first invalid record");
        if let Some(c) = checkpoint.filter(|_| truncate_to.is_none()) {
            if end < c.physical_flushed_offset {
                tracing::error!(end, flushed = c.physical_flushed_offset,
                    "the cut is below the checkpoint's flushed offset: synced data was damaged on disk");
            }
        }
    }
    cut_reason
}

/// Step 4: zeroes the end segment from `end` on (flushing what was dirtied) so that stale bytes
/// can never be taken for records later. Returns the number of non-zero bytes zeroed.
fn zero_tail_at(segments: &[Arc<MappedFile>], end: i64) -> Result<u64, StoreError> {
    let Some(i) = segment_index(segments, end) else {
        return Ok(0);
    };
    let seg = &segments[i];
    let rel = (end as u64 - seg.start_offset()) as usize;
    // SAFETY: recovery only.
    let dirtied = unsafe { seg.zero_tail(rel) };
    if dirtied > 0 {
        seg.flush_range(rel, seg.size() - rel)
            .map_err(|e| StoreError::io(seg.path(), e))?;
    }
    Ok(dirtied as u64)
}

/// Step 4: deletes the segments after the one starting at `end_seg_start` (last first), then
/// makes the deletions durable. Counts them, and a written one's size as bytes cut.
fn delete_segments_past(
    config: &StoreConfig,
    segments: &mut Vec<Arc<MappedFile>>,
    end_seg_start: i64,
    report: &mut RecoveryReport,
) -> Result<(), StoreError> {
    while let Some(last) = segments.last() {
        if (last.start_offset() as i64) <= end_seg_start {
            break;
        }
        let path = last.path().to_path_buf();
        // SAFETY: recovery only.
        let nonzero = unsafe { last.slice(0, 8) }.iter().any(|&b| b != 0);
        if nonzero {
            report.bytes_cut += last.size() as u64;
            tracing::warn!(segment = %path.display(), "deleting a CommitLog segment past the end");
        }
        segments.pop();
        fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
        report.segments_deleted += 1;
    }
    if report.segments_deleted > 0 {
        let dir = config.commitlog_dir();
        sync_dir(&dir).map_err(|e| StoreError::io(&dir, e))?;
    }
    Ok(())
}

/// Step 4: drops the ConsumeQueue entries that point past `end`. Returns how many.
fn truncate_consume_queues(
    cqs: &ConsumeQueueStore,
    cq_dir: &std::path::Path,
    end: i64,
) -> Result<u64, StoreError> {
    let mut truncated = 0;
    for q in cqs.all() {
        let cut = q
            .truncate_past(end)
            .map_err(|e| StoreError::io(cq_dir, e))?;
        if cut > 0 {
            tracing::warn!(
                topic = q.topic(),
                queue_id = q.queue_id(),
                entries = cut,
                "ConsumeQueue entries past the CommitLog end dropped"
            );
        }
        truncated += cut as u64;
    }
    Ok(truncated)
}
