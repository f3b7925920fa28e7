//! Retention: the cleaner thread (RocketMQ's `CleanCommitLogService` and
//! `CleanConsumeQueueService`).
//!
//! Every `clean_resource_interval_ms` the cleaner measures how full the disks of the CommitLog
//! and the ConsumeQueues are, then decides:
//!
//! - above `disk_space_warning_level_ratio` (90 %, RocketMQ clamps it to 35..=90 %) the store is
//!   marked **disk full**: every put is refused with SERVICE_NOT_AVAILABLE and a remark saying
//!   so, until the disk is below that level again;
//! - above `disk_space_clean_forcibly_ratio` (85 %, clamped to 30..=85 %), with
//!   `clean_file_forcibly_enable`, the oldest segments go even if not expired;
//! - expired segments (the last message older than `file_reserved_time` hours) go at the hours
//!   listed in `delete_when`, at any hour above `disk_max_used_space_ratio` (75 %), and during
//!   the 20 rounds after a manual request (DELETE_EXPIRED_COMMITLOG).
//!
//! At most [`DELETE_FILES_BATCH_MAX`] segments go per round, `delete_commit_log_files_interval_ms`
//! apart. A segment never goes while it is the writer's, while any of its bytes is not yet
//! flushed or dispatched, or while it holds state the broker still needs (the **retention
//! pin**: in-flight POP messages, pending timers and undecided transactions, see
//! [`super::MessageStore::set_retention_pin`]). When the pin keeps a segment, the round records
//! where that segment ends ([`super::MessageStore::retention_wanted`]) and the broker moves what
//! it can above it: pending timers, which may wait days, undecided half messages and POP
//! messages in flight (which ChangeInvisibleTime can keep in flight for good) are stored again
//! at the head of the log, even while the disk is marked full
//! ([`super::MessageStore::put_messages_reserved`]). Before a segment leaves the chain, every
//! ConsumeQueue's minimum moves past it (to its first entry in a later segment), so no reader
//! follows an entry into deleted bytes, and the queue files wholly below go (the last file of
//! a queue always stays: it carries the queue's max offset).
//!
//! **Off the hot path.** Taking a segment out of the chain is a pointer move under the segments
//! lock; the unlink, the directory sync and the unmap happen on this thread. A reader that
//! copied the segment's `Arc` before it left the chain keeps a valid mapping until it drops it
//! (an unlinked file stays readable while mapped), so no reader ever faults, and
//! `destroy_mapped_file_interval_forcibly_ms` has nothing to force.
//!
//! **Expiry time of a segment** is the store timestamp of the first record of the next
//! segment (an upper bound of its own last record's), or the file's modification time while
//! the next segment has no record yet.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::mapped_file::{sync_dir, MappedFile};
use super::Shared;

/// [`super::Retention::wanted`] when no segment is kept by the pin.
pub(crate) const NOT_WANTED: i64 = -1;

/// Segments deleted per round at most (RocketMQ's `deleteFileBatchMax`).
pub const DELETE_FILES_BATCH_MAX: usize = 10;
/// Rounds that delete expired files at any hour after a manual request
/// (RocketMQ's `MAX_MANUAL_DELETE_FILE_TIMES`).
pub const MAX_MANUAL_DELETE_FILE_TIMES: u32 = 20;

pub(crate) enum CleanMsg {
    /// DELETE_EXPIRED_COMMITLOG: delete expired files during the next rounds at any hour.
    Manual,
    /// Run a round now and answer what it did.
    RoundNow(std::sync::mpsc::Sender<RoundReport>),
    Stop,
}

/// What one cleaning round saw and did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoundReport {
    /// Percent of the fuller of the CommitLog's and the ConsumeQueues' disks in use (`None` if
    /// it could not be measured).
    pub disk_used_percent: Option<f64>,
    pub disk_full: bool,
    pub segments_deleted: usize,
    pub cq_files_deleted: usize,
    /// Set when the retention pin kept a segment that would otherwise have gone.
    pub pinned_at: Option<i64>,
    /// Where the segment the pin kept ends: the broker moves the state it can move (timers)
    /// above this (see [`super::MessageStore::retention_wanted`]).
    pub wanted: Option<i64>,
}

/// Percent of the filesystem holding `path` in use, as RocketMQ's
/// `getDiskPartitionSpaceUsedPercent` computes it: (total - free) / total.
pub fn disk_used_percent(path: &Path) -> std::io::Result<f64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path holds a NUL byte"))?;
    // SAFETY: statvfs fills the zeroed struct; `c` is a valid NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let total = st.f_blocks as f64;
    if total <= 0.0 {
        return Ok(0.0);
    }
    let free = st.f_bfree as f64;
    Ok(((total - free) / total * 100.0).clamp(0.0, 100.0))
}

/// Bytes in use on the filesystem holding `path` (total - free), as RocketMQ's
/// `rocketmq_storage_size` measures the store directory.
pub fn disk_used_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path holds a NUL byte"))?;
    // SAFETY: statvfs fills the zeroed struct; `c` is a valid NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)]
    let frsize = st.f_frsize as u64;
    #[allow(clippy::unnecessary_cast)]
    Ok((st.f_blocks as u64).saturating_sub(st.f_bfree as u64) * frsize)
}

/// The hours of `delete_when` ("04", "04;16"; empty parts ignored), or the first part that
/// is not an hour of the day (00..23). The config check and the cleaner both read it here.
pub fn parse_delete_when(when: &str) -> Result<BTreeSet<u32>, String> {
    when.split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.parse::<u32>() {
            Ok(h) if h < 24 => Ok(h),
            _ => Err(p.to_string()),
        })
        .collect()
}

/// The local hour of the day now (the broker host's time zone, like RocketMQ's `Calendar`).
fn local_hour() -> u32 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as libc::time_t;
    // SAFETY: localtime_r fills the zeroed struct from a valid time_t.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&now, &mut tm).is_null() };
    if ok {
        tm.tm_hour as u32
    } else {
        ((now / 3600) % 24) as u32
    }
}

fn file_mtime_ms(path: &Path) -> Option<i64> {
    let m = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(m.duration_since(UNIX_EPOCH).ok()?.as_millis() as i64)
}

/// The ratios RocketMQ uses, clamped as it clamps them (fractions of 1).
#[derive(Debug, Clone, Copy)]
struct Levels {
    warning: f64,
    forcibly: f64,
    max_used: f64,
}

impl Levels {
    fn of(cfg: &super::StoreConfig) -> Levels {
        Levels {
            warning: (cfg.disk_space_warning_level_ratio as f64 / 100.0).clamp(0.35, 0.90),
            forcibly: (cfg.disk_space_clean_forcibly_ratio as f64 / 100.0).clamp(0.30, 0.85),
            max_used: (cfg.disk_max_used_space_ratio as f64 / 100.0).clamp(0.10, 0.95),
        }
    }
}

pub(crate) struct Cleaner {
    pub shared: Arc<Shared>,
    pub rx: Receiver<CleanMsg>,
    pub manual_rounds: u32,
    /// The CommitLog minimum the ConsumeQueues were last cleaned for.
    pub cleaned_for: Option<i64>,
}

impl Cleaner {
    pub fn run(mut self) {
        let interval = Duration::from_millis(self.shared.config.clean_resource_interval_ms.max(1));
        // The first round runs at once: it corrects the ConsumeQueues' minimums after a crash
        // between a segment's deletion and theirs, and marks a full disk before the first put.
        // Not in the simulation's mode (`StoreConfig::blocking_io`): a round reads the wall
        // clock and the real disk's usage, and would run beside the simulation's thread as the
        // OS schedules it; there rounds run only when asked or at the (long) interval.
        let mut due = !self.shared.config.blocking_io;
        let mut reply = None;
        loop {
            if due || reply.is_some() {
                let report = self.round();
                if let Some(tx) = reply.take() {
                    let _ = std::sync::mpsc::Sender::send(&tx, report);
                }
            }
            due = true;
            match self.rx.recv_timeout(interval) {
                Ok(CleanMsg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(CleanMsg::Manual) => {
                    tracing::info!("executeDeleteFilesManually: expired files go during the next rounds at any hour");
                    self.manual_rounds = MAX_MANUAL_DELETE_FILE_TIMES;
                }
                Ok(CleanMsg::RoundNow(tx)) => reply = Some(tx),
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Waits `d` unless told to stop (then false). Manual requests arriving meanwhile count.
    fn pause(&mut self, d: Duration) -> bool {
        if d.is_zero() {
            return true;
        }
        match self.rx.recv_timeout(d) {
            Ok(CleanMsg::Stop) | Err(RecvTimeoutError::Disconnected) => false,
            Ok(CleanMsg::Manual) => {
                self.manual_rounds = MAX_MANUAL_DELETE_FILE_TIMES;
                true
            }
            Ok(CleanMsg::RoundNow(tx)) => {
                // Answer with "nothing more" rather than block the caller for a whole round.
                let _ = tx.send(RoundReport::default());
                true
            }
            Err(RecvTimeoutError::Timeout) => true,
        }
    }

    fn measure(&self) -> Option<f64> {
        let cfg = &self.shared.config;
        let mut worst: Option<f64> = None;
        for dir in [cfg.commitlog_dir(), cfg.consume_queue_dir()] {
            match disk_used_percent(&dir) {
                Ok(p) => worst = Some(worst.map_or(p, |w| w.max(p))),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot measure disk use")
                }
            }
        }
        worst
    }

    pub fn round(&mut self) -> RoundReport {
        let cfg = self.shared.live_config();
        let levels = Levels::of(&cfg);
        let mut report = RoundReport {
            disk_used_percent: self.measure(),
            ..RoundReport::default()
        };
        let ratio = report.disk_used_percent.map(|p| p / 100.0);
        if let Some(p) = report.disk_used_percent {
            self.shared
                .retention
                .disk_used_permille
                .store((p * 10.0) as u64, Ordering::Relaxed);
        }
        let mut clean_now = false;
        match ratio {
            Some(r) if r > levels.warning => {
                if !self.shared.retention.disk_full.swap(true, Ordering::AcqRel) {
                    tracing::error!(
                        used_percent = r * 100.0,
                        warning_level_percent = levels.warning * 100.0,
                        "disk full: refusing sends until space is freed"
                    );
                }
                clean_now = true;
            }
            other => {
                if let Some(r) = other {
                    clean_now = r > levels.forcibly;
                }
                if self
                    .shared
                    .retention
                    .disk_full
                    .swap(false, Ordering::AcqRel)
                {
                    tracing::info!(
                        used_percent = other.map(|r| r * 100.0),
                        "disk space OK again: accepting sends"
                    );
                }
            }
        }
        report.disk_full = self.shared.retention.disk_full.load(Ordering::Acquire);
        let space_to_delete = clean_now || ratio.is_some_and(|r| r > levels.max_used);
        // Checked when the store opened; a bad value deletes at no hour.
        let time_up =
            parse_delete_when(&cfg.delete_when).is_ok_and(|hours| hours.contains(&local_hour()));
        let manual = self.manual_rounds > 0;
        if time_up || space_to_delete || manual {
            if manual {
                self.manual_rounds -= 1;
            }
            let at_once = cfg.clean_file_forcibly_enable && clean_now;
            self.delete_expired_segments(at_once, &mut report);
        }
        let min = self.shared.commitlog.min_offset();
        if self.cleaned_for != Some(min) {
            report.cq_files_deleted += self.clean_consume_queues(min);
        }
        if report.segments_deleted > 0 {
            // The epochs wholly below the log's first offset describe nothing any more.
            if let Err(e) = self.shared.epochs.lock().truncate_prefix(min) {
                tracing::warn!(error = %e, "cannot forget the epochs below the first offset; retrying after the next deletion");
            }
        }
        self.shared
            .retention
            .wanted
            .store(report.wanted.unwrap_or(NOT_WANTED), Ordering::Release);
        report
    }

    /// When `seg`'s last message was stored (an upper bound), `next` being the segment after it.
    fn last_message_ms(&self, seg: &MappedFile, next: &MappedFile) -> Option<i64> {
        let start = next.start_offset() as i64;
        if start < self.shared.commitlog.max_offset() {
            if let Some(ts) = self.shared.commitlog.store_timestamp_at(start) {
                return Some(ts);
            }
        }
        file_mtime_ms(seg.path())
    }

    /// The highest offset segments may be deleted up to: flushed, dispatched and not pinned.
    fn delete_limit(&self, report: &mut RoundReport) -> i64 {
        let flushed = self.shared.commitlog.flushed_offset();
        let dispatched = self.shared.dispatched.load(Ordering::Acquire);
        let mut limit = flushed.min(dispatched);
        let pin = self.shared.retention.pin.read().clone();
        if let Some(pin) = pin {
            if let Some(p) = pin() {
                if p < limit {
                    limit = p;
                    report.pinned_at = Some(p);
                }
            }
        }
        limit
    }

    fn delete_expired_segments(&mut self, at_once: bool, report: &mut RoundReport) {
        let reserved = self.shared.live_config().file_reserved_ms();
        let now = rocketraft_common::time::now_ms();
        let pause = Duration::from_millis(self.shared.config.delete_commit_log_files_interval_ms);
        let dir = self.shared.config.commitlog_dir();
        while report.segments_deleted < DELETE_FILES_BATCH_MAX {
            let segs = self.shared.commitlog.segments();
            let (Some(first), Some(next)) = (segs.first(), segs.get(1)) else {
                break;
            };
            let expired = self
                .last_message_ms(first, next)
                .is_some_and(|t| t.saturating_add(reserved) <= now);
            if !expired && !at_once {
                break;
            }
            let limit = self.delete_limit(report);
            let new_min = first.end_offset() as i64;
            if new_min > limit {
                if report.pinned_at.is_some() {
                    report.wanted = Some(new_min);
                    tracing::info!(
                        segment = %first.path().display(),
                        pinned_at = ?report.pinned_at,
                        "an expired CommitLog segment stays: live POP, timer or transaction state still needs it"
                    );
                }
                break;
            }
            // The ConsumeQueues first: once their minimums are past the segment, no reader
            // follows an entry into it, so none ever finds its bytes gone.
            report.cq_files_deleted += self.clean_consume_queues(new_min);
            let Some(seg) = self.shared.commitlog.remove_first(limit) else {
                break;
            };
            let path = seg.path().to_path_buf();
            // The last reader's drop unmaps it; the file goes now.
            drop(seg);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot delete an expired CommitLog segment")
                }
            }
            if let Err(e) = sync_dir(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot sync the CommitLog directory after a deletion");
            }
            report.segments_deleted += 1;
            self.shared
                .retention
                .segments_deleted
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                segment = %path.display(),
                forcibly = at_once && !expired,
                min_phy_offset = self.shared.commitlog.min_offset(),
                "CommitLog segment deleted"
            );
            if !self.pause(pause) {
                break;
            }
        }
    }

    /// Moves every ConsumeQueue's minimum past the deleted segments and deletes their files
    /// wholly below (CLEAN_EXPIRED_CONSUMEQUEUE does the same on request).
    pub fn clean_consume_queues(&mut self, commitlog_min: i64) -> usize {
        let files = clean_consume_queues(&self.shared, commitlog_min);
        self.cleaned_for = Some(commitlog_min);
        files
    }
}

/// Moves every ConsumeQueue's minimum to its first entry at or past `commitlog_min` and deletes
/// its files wholly below. Returns the files deleted.
pub(crate) fn clean_consume_queues(shared: &Shared, commitlog_min: i64) -> usize {
    let mut deleted = 0;
    for cq in shared.cqs.all() {
        match cq.clean_below(commitlog_min) {
            Ok(n) => deleted += n,
            Err(e) => tracing::warn!(
                topic = cq.topic(),
                queue_id = cq.queue_id(),
                error = %e,
                "cannot delete expired ConsumeQueue files; retrying next round"
            ),
        }
    }
    shared
        .retention
        .cq_files_deleted
        .fetch_add(deleted as u64, Ordering::Relaxed);
    deleted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_when_hours() {
        assert_eq!(parse_delete_when("04"), Ok(BTreeSet::from([4])));
        assert_eq!(
            parse_delete_when("04;16; 23"),
            Ok(BTreeSet::from([4, 16, 23]))
        );
        assert_eq!(parse_delete_when("01;24;x"), Err("24".to_string()));
        assert_eq!(parse_delete_when("x"), Err("x".to_string()));
        assert_eq!(parse_delete_when(""), Ok(BTreeSet::new()));
    }

    #[test]
    fn disk_use_is_a_percentage() {
        let p = disk_used_percent(Path::new("/")).expect("statvfs /");
        assert!((0.0..=100.0).contains(&p), "{p}");
        assert!(disk_used_percent(Path::new("/no/such/dir/here")).is_err());
    }

    #[test]
    fn levels_are_clamped_as_rocketmq_clamps_them() {
        let mut cfg = super::super::StoreConfig::default();
        let l = Levels::of(&cfg);
        assert_eq!((l.warning, l.forcibly, l.max_used), (0.90, 0.85, 0.75));
        cfg.disk_space_warning_level_ratio = 99;
        cfg.disk_space_clean_forcibly_ratio = 10;
        cfg.disk_max_used_space_ratio = 1;
        let l = Levels::of(&cfg);
        assert_eq!((l.warning, l.forcibly, l.max_used), (0.90, 0.30, 0.10));
    }
}
