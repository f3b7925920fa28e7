//! The flusher thread: group-commit syncs for SYNC_FLUSH, periodic syncs for ASYNC_FLUSH, and the
//! periodic ConsumeQueue flush + checkpoint.
//!
//! Under SYNC_FLUSH the writer hands over each group after appending it and goes on appending
//! the next one; the flusher drains every group waiting, syncs the CommitLog once up to the
//! highest end, and answers all of them. A send is acknowledged only after its bytes are synced;
//! if the sync fails or the group waited longer than `sync_flush_timeout_ms`, it is answered
//! FLUSH_DISK_TIMEOUT, never success. A failed sync also stops the store from accepting writes
//! (after a failed fsync the kernel may have dropped the dirty pages: we cannot know what is on
//! disk, so we stop rather than acknowledge on top of a hole). A failed ConsumeQueue flush or
//! checkpoint write does the same, and after any such failure no checkpoint is written again:
//! a later "successful" sync proves nothing about the pages a failed one dropped, so the next
//! open must verify from the last good checkpoint.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::checkpoint::Checkpoint;
use super::error::StoreError;
use super::writer::Reply;
use super::{FlushDiskType, PutResult, PutStatus, Shared};

pub(crate) struct Waiter {
    pub reply: Reply,
    pub result: PutResult,
}

pub(crate) enum FlushMsg {
    Group {
        target: i64,
        waiters: Vec<Waiter>,
        appended_at: Instant,
    },
    Stop {
        graceful: bool,
    },
}

pub(crate) struct Flusher {
    pub shared: Arc<Shared>,
    pub rx: Receiver<FlushMsg>,
    pub checkpoint_path: PathBuf,
    pub last_checkpoint: Option<Checkpoint>,
    /// The last checkpoint found no disk space (logged once until one is written again).
    pub checkpoint_skipped: bool,
}

/// ENOSPC (or a quota): a full disk, which frees up, as opposed to a failing one.
pub(crate) fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == std::io::ErrorKind::StorageFull
}

impl Flusher {
    pub fn run(mut self) {
        let cfg = self.shared.config.clone();
        let flush_interval = Duration::from_millis(cfg.flush_interval_ms);
        let checkpoint_interval = Duration::from_millis(cfg.checkpoint_interval_ms);
        let timeout = Duration::from_millis(cfg.sync_flush_timeout_ms);
        let mut last_flush = Instant::now();
        let mut last_checkpoint = Instant::now();
        loop {
            let wait = flush_interval
                .min(checkpoint_interval)
                .saturating_sub(last_flush.elapsed().min(last_checkpoint.elapsed()))
                .max(Duration::from_millis(1));
            let mut groups = Vec::new();
            let mut stop = None;
            match self.rx.recv_timeout(wait) {
                Ok(FlushMsg::Group {
                    target,
                    waiters,
                    appended_at,
                }) => groups.push((target, waiters, appended_at)),
                Ok(FlushMsg::Stop { graceful }) => stop = Some(graceful),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stop = Some(true),
            }
            while stop.is_none() {
                match self.rx.try_recv() {
                    Ok(FlushMsg::Group {
                        target,
                        waiters,
                        appended_at,
                    }) => groups.push((target, waiters, appended_at)),
                    Ok(FlushMsg::Stop { graceful }) => stop = Some(graceful),
                    Err(_) => break,
                }
            }
            if !groups.is_empty() {
                self.sync_groups(groups, timeout);
            }
            if cfg.flush_disk_type == FlushDiskType::AsyncFlush
                && last_flush.elapsed() >= flush_interval
            {
                self.flush_commitlog();
                last_flush = Instant::now();
            }
            if last_checkpoint.elapsed() >= checkpoint_interval {
                // A failure is recorded in the store's failed state (see `checkpoint`), which
                // every later write reports.
                let _recorded = self.checkpoint();
                last_checkpoint = Instant::now();
            }
            if let Some(graceful) = stop {
                if graceful {
                    self.flush_commitlog();
                    let _recorded = self.checkpoint();
                }
                break;
            }
        }
    }

    fn sync_groups(&mut self, groups: Vec<(i64, Vec<Waiter>, Instant)>, timeout: Duration) {
        let target = groups.iter().map(|g| g.0).max().unwrap_or(0);
        let result = if self.shared.disk_error.load(Ordering::Acquire) {
            // A sync after a failed one proves nothing: never acknowledge on top of it.
            Err(std::io::Error::other("the store failed earlier"))
        } else {
            self.shared.commitlog.flush(target)
        };
        let stats = &self.shared.stats;
        let ok = match result {
            Ok(did) => {
                if did {
                    stats.sync_flushes.fetch_add(1, Ordering::Relaxed);
                }
                true
            }
            Err(e) => {
                if !self.shared.disk_error.load(Ordering::Acquire) {
                    stats.flush_errors.fetch_add(1, Ordering::Relaxed);
                    self.shared
                        .fail(format!("CommitLog sync up to {target} failed: {e}"));
                }
                false
            }
        };
        for (_, waiters, appended_at) in groups {
            let in_time = appended_at.elapsed() <= timeout;
            if !in_time {
                stats
                    .flush_timeouts
                    .fetch_add(waiters.len() as u64, Ordering::Relaxed);
                tracing::warn!(
                    waited_ms = appended_at.elapsed().as_millis() as u64,
                    "sync flush exceeded sync_flush_timeout_ms"
                );
            }
            for w in waiters {
                if ok && in_time {
                    let _ = w.reply.send(Ok(w.result));
                } else {
                    let mut r = w.result;
                    r.status = PutStatus::FlushDiskTimeout;
                    let _ = w.reply.send(Err(StoreError::FlushDiskTimeout(Box::new(r))));
                }
            }
        }
    }

    fn flush_commitlog(&self) {
        if self.shared.disk_error.load(Ordering::Acquire) {
            // After a failed sync a later one proves nothing (see the module documentation).
            return;
        }
        let target = self.shared.commitlog.max_offset();
        match self.shared.commitlog.flush(target) {
            Ok(true) => {
                self.shared.stats.flushes.fetch_add(1, Ordering::Relaxed);
            }
            Ok(false) => {}
            Err(e) => {
                self.shared
                    .stats
                    .flush_errors
                    .fetch_add(1, Ordering::Relaxed);
                self.shared
                    .fail(format!("CommitLog flush up to {target} failed: {e}"));
            }
        }
    }

    /// Flushes the ConsumeQueues and the CommitLog, then records how far both are on disk and
    /// the confirm offset. Any failure puts the store into its failed state (writes refused)
    /// and is returned; once failed, no checkpoint is written any more.
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        let _no_truncation = shared.checkpoint_lock.lock();
        if shared.disk_error.load(Ordering::Acquire) {
            return Err(shared.read_only_error());
        }
        let dispatched = shared.dispatched.load(Ordering::Acquire);
        // Never above what is dispatched (a standalone store leaves `confirm` where open put it;
        // it only matters once gated).
        let confirm = shared.confirm.load(Ordering::Acquire).min(dispatched);
        let queues = shared.cqs.all();
        let mut snapshot: Vec<(String, i32, i64)> = queues
            .iter()
            .map(|q| (q.topic().to_string(), q.queue_id(), q.max_offset()))
            .collect();
        snapshot.sort();
        for q in &queues {
            let flushed = shared.injected_failure("cq-flush").and_then(|()| q.flush());
            if let Err(e) = flushed {
                shared.stats.flush_errors.fetch_add(1, Ordering::Relaxed);
                shared.fail(format!(
                    "ConsumeQueue {}/{} flush failed: {e}",
                    q.topic(),
                    q.queue_id()
                ));
                return Err(shared.read_only_error());
            }
        }
        self.flush_commitlog();
        if shared.disk_error.load(Ordering::Acquire) {
            return Err(shared.read_only_error());
        }
        let cp = Checkpoint {
            physical_flushed_offset: shared.commitlog.flushed_offset(),
            dispatch_flushed_offset: dispatched,
            last_store_timestamp: shared.last_store_timestamp.load(Ordering::Acquire),
            confirm_offset: Some(confirm),
            queues: snapshot,
        };
        if self.last_checkpoint.as_ref() == Some(&cp) {
            return Ok(());
        }
        let stored = shared
            .injected_failure("checkpoint")
            .and_then(|()| cp.store(&self.checkpoint_path));
        match stored {
            Ok(()) => {
                shared.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                if std::mem::take(&mut self.checkpoint_skipped) {
                    tracing::info!("checkpoint written again");
                }
                self.last_checkpoint = Some(cp);
                Ok(())
            }
            Err(e) if is_disk_full(&e) => {
                // The data files are intact and synced; only the small checkpoint file found
                // no room, and the previous one still stands (recovery verifies from it, a
                // little further back). Try again at the next interval rather than stop.
                if !self.checkpoint_skipped {
                    tracing::warn!(
                        path = %self.checkpoint_path.display(),
                        error = %e,
                        "no disk space for the checkpoint; keeping the previous one until space is freed"
                    );
                }
                self.checkpoint_skipped = true;
                Ok(())
            }
            Err(e) => {
                shared.fail(format!(
                    "writing the checkpoint {} failed: {e}",
                    self.checkpoint_path.display()
                ));
                Err(shared.read_only_error())
            }
        }
    }
}
