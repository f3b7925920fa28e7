//! The single CommitLog writer with group commit.
//!
//! One OS thread owns the append position. Senders pre-encode their records (the CPU work,
//! spread over their own tasks) and queue a [`PutRequest`] on a bounded channel. The writer
//! drains everything queued (up to `max_batch_bytes` / `max_batch_requests`) into a group, and
//! for each request: assigns queue offsets (from the ConsumeQueue's end) and the physical offset,
//! stamps the store timestamp, seals the whole-record CRC, copies the bytes into the mapped
//! segment, publishes them, and dispatches the ConsumeQueue entries. Then, once per group:
//! SYNC_FLUSH hands the group to the flusher, which syncs once and answers everyone;
//! ASYNC_FLUSH answers at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocketraft_common::message::{self, BLANK_MAGIC_CODE};
use tokio::sync::{mpsc, oneshot};

use super::checkpoint::Checkpoint;
use super::commitlog::END_FILE_MIN_BLANK_LENGTH;
use super::dispatch::{dispatch, DispatchRequest};
use super::error::StoreError;
use super::flush::{FlushMsg, Waiter};
use super::mapped_file::{MappedFile, SegmentAllocator};
use super::{FlushDiskType, PutResult, PutStatus, Shared};

/// The refusal of a put that needs a new CommitLog segment the store cannot create; a full disk
/// says so (nothing was written; sends resume once space is freed).
fn segment_refusal(start: i64, e: &std::io::Error) -> StoreError {
    if super::flush::is_disk_full(e) {
        StoreError::ServiceNotAvailable(format!(
            "service not available now: no disk space for a new CommitLog segment at {start} ({e}); nothing was written; sends are accepted again once space is freed"
        ))
    } else {
        StoreError::ServiceNotAvailable(format!("cannot create CommitLog segment {start}: {e}"))
    }
}

pub(crate) type Reply = oneshot::Sender<Result<PutResult, StoreError>>;

/// Records of one topic queue, encoded back to back with placeholder offsets.
pub(crate) struct PutRequest {
    pub topic: String,
    pub queue_id: i32,
    pub data: Vec<u8>,
    pub sizes: Vec<u32>,
    pub tags_codes: Vec<i64>,
    /// False for transaction PREPARED / ROLLBACK records: like RocketMQ, they get queue offset
    /// 0 and no ConsumeQueue entry (consumers never see them; the transaction service reads
    /// them by CommitLog offset).
    pub indexed: bool,
    pub reply: Reply,
}

pub(crate) enum WriterMsg {
    Put(PutRequest),
    /// A slave appends CommitLog bytes its master wrote (whole records, or one blank marker),
    /// at exactly `offset`, the end of its log. Answers the new end.
    Replicate {
        offset: i64,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<i64, StoreError>>,
    },
    /// Cuts the log at `offset` (a replica dropping the tail it does not share with its
    /// master). See [`super::truncate`].
    Truncate {
        offset: i64,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Empties the log and makes it start at `offset`: a replica whose log ends below its
    /// master's first offset starts over there. See [`Writer::reset_to`].
    Reset {
        offset: i64,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// The master's next queue offsets at this replica's log end `at`: the queues with no
    /// entry left start there. See [`Writer::seed_queues`].
    SeedQueues {
        at: i64,
        queues: Vec<(String, i32, i64)>,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    /// Stop; `graceful` = the flusher flushes and checkpoints before exiting.
    Stop {
        graceful: bool,
    },
}

pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub rx: mpsc::Receiver<WriterMsg>,
    pub flush_tx: std::sync::mpsc::Sender<FlushMsg>,
    pub allocator: SegmentAllocator,
    pub write_pos: i64,
    pub last_store_timestamp: i64,
    current: Option<Arc<MappedFile>>,
}

impl Writer {
    pub fn new(
        shared: Arc<Shared>,
        rx: mpsc::Receiver<WriterMsg>,
        flush_tx: std::sync::mpsc::Sender<FlushMsg>,
        allocator: SegmentAllocator,
        last_store_timestamp: i64,
    ) -> Writer {
        let write_pos = shared.commitlog.max_offset();
        let mut current = shared.commitlog.segment_for(write_pos);
        if current.is_none() {
            // An empty store (or one whose end sits on a segment boundary): map and pre-touch the
            // first segment now, at open, rather than on the first send (pre-touching 1 GiB takes
            // seconds, longer than a client's send timeout). On failure the first put retries.
            let start = shared.commitlog.segment_start(write_pos);
            match allocator.take(start as u64, Duration::from_secs(60)) {
                Ok(seg) => {
                    shared.commitlog.push_segment(seg.clone());
                    current = Some(seg);
                }
                Err(e) => {
                    tracing::warn!(start, error = %e, "cannot prepare the first CommitLog segment")
                }
            }
        }
        if let Some(seg) = &current {
            allocator.request(seg.end_offset());
        }
        Writer {
            shared,
            rx,
            flush_tx,
            allocator,
            write_pos,
            last_store_timestamp,
            current,
        }
    }

    /// The writer thread's loop: takes the next message, drains what else is queued into a
    /// group of puts, appends the group, then serves a replicate or truncate that ended the
    /// drain, until told to stop (or every sender is gone). Then refuses what is still queued
    /// and stops the allocator and the flusher.
    pub fn run(mut self) {
        let mut graceful = true;
        loop {
            let Some(first) = self.rx.blocking_recv() else {
                break;
            };
            let (group, stop, other) = self.drain(first);
            if !group.is_empty() {
                self.process_group(group);
            }
            match other {
                Some(WriterMsg::Replicate {
                    offset,
                    data,
                    reply,
                }) => {
                    let _ = reply.send(self.replicate(offset, &data));
                }
                Some(WriterMsg::Truncate { offset, reply }) => {
                    let _ = reply.send(self.truncate(offset));
                }
                Some(WriterMsg::Reset { offset, reply }) => {
                    let _ = reply.send(self.reset_to(offset));
                }
                Some(WriterMsg::SeedQueues { at, queues, reply }) => {
                    let _ = reply.send(self.seed_queues(at, &queues));
                }
                _ => {}
            }
            if let Some(g) = stop {
                graceful = g;
                break;
            }
        }
        self.refuse_queued();
        self.allocator.stop();
        let _ = self.flush_tx.send(FlushMsg::Stop { graceful });
    }

    /// Group commit: the puts queued after `first` (and `first` if a put), up to
    /// `max_batch_bytes` / `max_batch_requests`. The drain ends early at a stop (returned as its
    /// `graceful`) or another message (returned to be served after the group).
    fn drain(&mut self, first: WriterMsg) -> (Vec<PutRequest>, Option<bool>, Option<WriterMsg>) {
        let max_bytes = self.shared.config.max_batch_bytes;
        let max_requests = self.shared.config.max_batch_requests;
        let mut group = Vec::new();
        let mut bytes = 0usize;
        let mut stop = None;
        let mut other = None;
        match first {
            WriterMsg::Put(r) => {
                bytes += r.data.len();
                group.push(r);
            }
            WriterMsg::Stop { graceful } => stop = Some(graceful),
            m => other = Some(m),
        }
        while stop.is_none() && other.is_none() && bytes < max_bytes && group.len() < max_requests {
            match self.rx.try_recv() {
                Ok(WriterMsg::Put(r)) => {
                    bytes += r.data.len();
                    group.push(r);
                }
                Ok(WriterMsg::Stop { graceful }) => stop = Some(graceful),
                Ok(m) => other = Some(m),
                Err(_) => break,
            }
        }
        (group, stop, other)
    }

    /// At stop: closes the channel and refuses whatever is still queued.
    fn refuse_queued(&mut self) {
        self.rx.close();
        let closing = || StoreError::ServiceNotAvailable("store is shutting down".into());
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                WriterMsg::Put(r) => {
                    let _ = r.reply.send(Err(closing()));
                }
                WriterMsg::Replicate { reply, .. } => {
                    let _ = reply.send(Err(closing()));
                }
                WriterMsg::SeedQueues { reply, .. } => {
                    let _ = reply.send(Err(closing()));
                }
                WriterMsg::Truncate { reply, .. } | WriterMsg::Reset { reply, .. } => {
                    let _ = reply.send(Err(closing()));
                }
                WriterMsg::Stop { .. } => {}
            }
        }
    }

    fn process_group(&mut self, group: Vec<PutRequest>) {
        let shared = self.shared.clone();
        let stats = &shared.stats;
        stats.groups.fetch_add(1, Ordering::Relaxed);
        let mut waiters = Vec::with_capacity(group.len());
        for req in group {
            let reply_to_error = |reply: Reply, e: StoreError| {
                let _ = reply.send(Err(e));
            };
            let PutRequest {
                topic,
                queue_id,
                mut data,
                sizes,
                tags_codes,
                indexed,
                reply,
            } = req;
            let tags = indexed.then_some(tags_codes.as_slice());
            match self.append(&topic, queue_id, &mut data, &sizes, tags) {
                Ok(result) => {
                    stats.put_requests.fetch_add(1, Ordering::Relaxed);
                    stats
                        .put_messages
                        .fetch_add(sizes.len() as u64, Ordering::Relaxed);
                    stats
                        .put_bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    waiters.push(Waiter { reply, result });
                }
                Err(e) => reply_to_error(reply, e),
            }
        }
        if waiters.is_empty() {
            return;
        }
        self.shared.arrivals.send_modify(|v| *v += 1);
        match self.shared.config.flush_disk_type {
            FlushDiskType::SyncFlush => {
                let msg = FlushMsg::Group {
                    target: self.write_pos,
                    waiters,
                    appended_at: Instant::now(),
                };
                if let Err(std::sync::mpsc::SendError(FlushMsg::Group { waiters, .. })) =
                    self.flush_tx.send(msg)
                {
                    // The flusher is gone: nobody will sync these bytes.
                    for w in waiters {
                        let mut r = w.result;
                        r.status = PutStatus::FlushDiskTimeout;
                        let _ = w.reply.send(Err(StoreError::FlushDiskTimeout(Box::new(r))));
                    }
                }
            }
            FlushDiskType::AsyncFlush => {
                for w in waiters {
                    let _ = w.reply.send(Ok(w.result));
                }
            }
        }
    }

    /// The segment and position where `len` bytes go, rolling (blank filler + next segment)
    /// when they do not fit with room for the blank marker.
    fn room_for(&mut self, len: usize) -> Result<(Arc<MappedFile>, usize), StoreError> {
        let seg_size = self.shared.commitlog.segment_size();
        for _ in 0..3 {
            let seg = match &self.current {
                Some(s) => s.clone(),
                None => {
                    let start = self.shared.commitlog.segment_start(self.write_pos);
                    if let Some(seg) = self.shared.commitlog.segment_for(start) {
                        // After a truncation the write position sits inside a kept segment.
                        self.current = Some(seg);
                        continue;
                    }
                    let seg = self
                        .allocator
                        .take(start as u64, Duration::from_secs(30))
                        .map_err(|e| {
                            tracing::error!(start, error = %e, "cannot create CommitLog segment");
                            segment_refusal(start, &e)
                        })?;
                    self.shared.commitlog.push_segment(seg.clone());
                    self.allocator.request(seg.end_offset());
                    self.current = Some(seg.clone());
                    tracing::debug!(start, "CommitLog rolled to a new segment");
                    seg
                }
            };
            let pos = (self.write_pos as u64 - seg.start_offset()) as usize;
            let remaining = seg.size() - pos;
            if len + END_FILE_MIN_BLANK_LENGTH <= remaining {
                return Ok((seg, pos));
            }
            if remaining >= END_FILE_MIN_BLANK_LENGTH {
                let mut blank = [0u8; 8];
                blank[..4].copy_from_slice(&(remaining as i32).to_be_bytes());
                blank[4..].copy_from_slice(&BLANK_MAGIC_CODE.to_be_bytes());
                // SAFETY: single writer, past the published end.
                unsafe { seg.write(pos, &blank) };
            }
            super::failpoint("roll-after-blank");
            self.write_pos = seg.end_offset() as i64;
            self.shared.commitlog.publish(self.write_pos);
            self.shared.stats.rolls.fetch_add(1, Ordering::Relaxed);
            self.current = None;
            debug_assert!(len + END_FILE_MIN_BLANK_LENGTH <= seg_size as usize);
        }
        Err(StoreError::MessageIllegal(format!(
            "{len} bytes do not fit a {seg_size}-byte segment"
        )))
    }

    /// Appends one request's records at the write position (rolling to the next segment when
    /// they do not fit), with their queue offsets (none for records that are not `tags_codes`
    /// indexed), publishes them, then dispatches their ConsumeQueue entries. A failed dispatch
    /// fails the store: writes are refused until recovery re-dispatches at the next open.
    fn append(
        &mut self,
        topic: &str,
        queue_id: i32,
        data: &mut [u8],
        sizes: &[u32],
        tags_codes: Option<&[i64]>,
    ) -> Result<PutResult, StoreError> {
        if self.shared.disk_error.load(Ordering::Acquire) {
            return Err(self.shared.read_only_error());
        }
        if tags_codes.is_some() {
            // Room for the ConsumeQueue entries first: a full disk refuses the put here, with
            // nothing written, rather than after the records are in the CommitLog.
            self.shared
                .cqs
                .get_or_create(topic, queue_id)
                .reserve_next(sizes.len())
                .map_err(|e| {
                    StoreError::ServiceNotAvailable(format!(
                        "service not available now: no disk space for the ConsumeQueue of {topic}/{queue_id}: {e}; sends are accepted again once space is freed"
                    ))
                })?;
        }
        let (seg, pos) = self.room_for(data.len())?;
        let base_queue_offset = match tags_codes {
            Some(_) => self.shared.cqs.get_or_create(topic, queue_id).max_offset(),
            None => 0,
        };
        let base_physical = self.write_pos;
        // Store timestamps never go backwards in CommitLog order, so searches by time can
        // binary-search a ConsumeQueue.
        let store_timestamp = rocketraft_common::time::now_ms().max(self.last_store_timestamp);
        self.last_store_timestamp = store_timestamp;
        stamp_records(
            data,
            sizes,
            base_queue_offset,
            base_physical,
            store_timestamp,
        );
        // SAFETY: single writer, past the published end; room_for checked the bounds.
        unsafe { seg.write(pos, data) };
        self.write_pos += data.len() as i64;
        self.shared.commitlog.publish(self.write_pos);

        self.dispatch_appended(
            topic,
            queue_id,
            sizes,
            tags_codes.unwrap_or_default(),
            base_queue_offset,
            base_physical,
        )?;
        self.shared
            .dispatched
            .store(self.write_pos, Ordering::Release);
        self.shared
            .last_store_timestamp
            .store(store_timestamp, Ordering::Release);
        Ok(PutResult {
            status: PutStatus::PutOk,
            physical_offset: base_physical,
            wrote_bytes: data.len() as i32,
            queue_offset: base_queue_offset,
            msg_id: String::new(),
            store_timestamp,
            msg_num: sizes.len() as i32,
        })
    }
}

impl Writer {
    /// Adds the ConsumeQueue entries of records just appended at `base_physical` (`sizes`
    /// bytes each, one entry per `tags_codes` code, from `base_queue_offset`). A failed
    /// dispatch fails the store.
    fn dispatch_appended(
        &self,
        topic: &str,
        queue_id: i32,
        sizes: &[u32],
        tags_codes: &[i64],
        base_queue_offset: i64,
        base_physical: i64,
    ) -> Result<(), StoreError> {
        let mut at = 0i64;
        for (i, (&size, &tags_code)) in sizes.iter().zip(tags_codes).enumerate() {
            let req = DispatchRequest {
                topic,
                queue_id,
                queue_offset: base_queue_offset + i as i64,
                commit_log_offset: base_physical + at,
                size: size as i32,
                tags_code,
            };
            if let Err(e) = dispatch(&self.shared.cqs, &req) {
                // The record is in the CommitLog but not indexed; handing out further queue
                // offsets for this queue would be wrong. Stop writing; recovery at the next start
                // re-dispatches from the CommitLog.
                self.shared.fail(format!(
                    "ConsumeQueue dispatch of {topic}/{queue_id} failed: {e}"
                ));
                return Err(self.shared.read_only_error());
            }
            at += size as i64;
        }
        Ok(())
    }
}

/// Fills in the placeholder fields of records encoded back to back in `data` (of `sizes`
/// bytes each): consecutive queue offsets from `base_queue_offset`, their physical offsets from
/// `base_physical` and the store timestamp, then seals each record's CRC.
fn stamp_records(
    data: &mut [u8],
    sizes: &[u32],
    base_queue_offset: i64,
    base_physical: i64,
    store_timestamp: i64,
) {
    let mut at = 0usize;
    for (i, &size) in sizes.iter().enumerate() {
        let rec = &mut data[at..at + size as usize];
        message::set_record_offsets(rec, base_queue_offset + i as i64, base_physical + at as i64);
        message::set_store_timestamp(rec, store_timestamp);
        message::seal_record_crc(rec);
        debug_assert!(message::verify_record_crc(rec));
        at += size as usize;
    }
}

impl Writer {
    /// The segment holding the write position, taking the next one when the position sits on
    /// a segment boundary.
    fn current_segment(&mut self) -> Result<(Arc<MappedFile>, usize), StoreError> {
        if self
            .current
            .as_ref()
            .is_none_or(|s| self.write_pos as u64 >= s.end_offset())
        {
            let start = self.shared.commitlog.segment_start(self.write_pos);
            let seg = match self.shared.commitlog.segment_for(start) {
                Some(seg) => seg,
                None => {
                    let seg = self
                        .allocator
                        .take(start as u64, Duration::from_secs(30))
                        .map_err(|e| segment_refusal(start, &e))?;
                    self.shared.commitlog.push_segment(seg.clone());
                    self.allocator.request(seg.end_offset());
                    seg
                }
            };
            self.current = Some(seg);
        }
        let seg = self.current.clone().ok_or_else(|| {
            StoreError::ServiceNotAvailable("no CommitLog segment to write".into())
        })?;
        Ok((
            seg.clone(),
            (self.write_pos as u64 - seg.start_offset()) as usize,
        ))
    }

    /// Appends bytes a master wrote: each record is checked (layout, CRC, physical offset =
    /// where it lands) and dispatched with the queue offset the master gave it. A blank marker
    /// must fill the rest of the segment exactly (the replicas' segment sizes must agree).
    pub(crate) fn replicate(&mut self, offset: i64, data: &[u8]) -> Result<i64, StoreError> {
        if self.shared.disk_error.load(Ordering::Acquire) {
            return Err(self.shared.read_only_error());
        }
        if offset != self.write_pos {
            return Err(StoreError::OffsetMismatch {
                expected: self.write_pos,
                got: offset,
            });
        }
        let mut at = 0usize;
        let mut dispatched_any = false;
        while at < data.len() {
            let (seg, pos) = self.current_segment()?;
            let (consumed, dispatched) = self.replicate_one(&seg, pos, &data[at..])?;
            dispatched_any |= dispatched;
            at += consumed;
        }
        self.shared
            .dispatched
            .store(self.write_pos, Ordering::Release);
        self.shared
            .last_store_timestamp
            .store(self.last_store_timestamp, Ordering::Release);
        if dispatched_any {
            self.shared.arrivals.send_modify(|v| *v += 1);
        }
        if self.shared.config.flush_disk_type == FlushDiskType::SyncFlush {
            if let Err(e) = self.shared.commitlog.flush(self.write_pos) {
                self.shared.fail(format!(
                    "CommitLog flush of replicated bytes up to {} failed: {e}",
                    self.write_pos
                ));
                return Err(self.shared.read_only_error());
            }
        }
        Ok(self.write_pos)
    }

    /// Appends the blank marker or the record at the start of `rest` at `pos` of `seg` (the
    /// write position). Returns the bytes consumed and whether a ConsumeQueue entry was
    /// dispatched.
    fn replicate_one(
        &mut self,
        seg: &Arc<MappedFile>,
        pos: usize,
        rest: &[u8],
    ) -> Result<(usize, bool), StoreError> {
        let remaining = seg.size() - pos;
        let (Some(size), Some(magic)) = (message::read_i32(rest, 0), message::read_i32(rest, 4))
        else {
            return Err(StoreError::Replication(format!(
                "{} trailing bytes at {} are not a record header",
                rest.len(),
                self.write_pos
            )));
        };
        if magic == BLANK_MAGIC_CODE {
            if size < 0 || size as usize != remaining {
                return Err(StoreError::Replication(format!(
                    "blank marker of {size} bytes at {} but {remaining} bytes remain in the segment: do the replicas use the same commitlog_segment_size?",
                    self.write_pos
                )));
            }
            // SAFETY: single writer, past the published end.
            unsafe { seg.write(pos, &rest[..8]) };
            super::failpoint("roll-after-blank");
            self.write_pos = seg.end_offset() as i64;
            self.shared.commitlog.publish(self.write_pos);
            self.shared.stats.rolls.fetch_add(1, Ordering::Relaxed);
            self.current = None;
            return Ok((8, false));
        }
        let (rec, req, flag) = self.check_replicated(rest, size, remaining)?;
        let dispatched = self.append_replicated(seg, pos, rec, &req, flag)?;
        Ok((size as usize, dispatched))
    }

    /// Checks a replicated record of `size` bytes at the start of `rest`, to land at the write
    /// position with `remaining` bytes left in its segment: it fits what was received and the
    /// segment, passes its CRC, carries this physical offset and has readable fields. Returns
    /// the record, its dispatch request and its sys flag.
    fn check_replicated<'a>(
        &self,
        rest: &'a [u8],
        size: i32,
        remaining: usize,
    ) -> Result<(&'a [u8], DispatchRequest<'a>, i32), StoreError> {
        if size < message::MIN_RECORD_LEN as i32 || size as usize > rest.len() {
            return Err(StoreError::Replication(format!(
                "record of size {size} at {} does not fit the {} bytes received",
                self.write_pos,
                rest.len()
            )));
        }
        let rec = &rest[..size as usize];
        if size as usize + END_FILE_MIN_BLANK_LENGTH > remaining {
            return Err(StoreError::Replication(format!(
                "record of {size} bytes at {} does not fit the segment ({remaining} bytes left): do the replicas use the same commitlog_segment_size?",
                self.write_pos
            )));
        }
        if message::check_record(rec) == message::RecordCheck::Bad
            || message::read_i64(rec, message::pos::PHYSICAL_OFFSET) != Some(self.write_pos)
        {
            return Err(StoreError::Replication(format!(
                "record at {} fails its CRC or carries another physical offset",
                self.write_pos
            )));
        }
        let (Some(topic), Some(queue_id), Some(queue_offset), Some(tags_code), Some(flag)) = (
            message::record_topic(rec),
            message::read_i32(rec, message::pos::QUEUE_ID),
            message::read_i64(rec, message::pos::QUEUE_OFFSET),
            message::record_tags_code(rec),
            message::read_i32(rec, message::pos::SYS_FLAG),
        ) else {
            return Err(StoreError::Replication(format!(
                "record at {} has unreadable fields",
                self.write_pos
            )));
        };
        let req = DispatchRequest {
            topic,
            queue_id,
            queue_offset,
            commit_log_offset: self.write_pos,
            size,
            tags_code,
        };
        Ok((rec, req, flag))
    }

    /// Writes a checked replicated record at `pos` of `seg`, publishes it, then dispatches it
    /// (unless a transaction prepared or rollback record) with the master's queue offset. A
    /// failed dispatch fails the store (writes refused), as in [`Self::append`]. Returns
    /// whether it was dispatched.
    fn append_replicated(
        &mut self,
        seg: &MappedFile,
        pos: usize,
        rec: &[u8],
        req: &DispatchRequest<'_>,
        flag: i32,
    ) -> Result<bool, StoreError> {
        // SAFETY: single writer, past the published end; bounds checked by `check_replicated`.
        unsafe { seg.write(pos, rec) };
        self.write_pos += req.size as i64;
        self.shared.commitlog.publish(self.write_pos);
        let tran = rocketraft_common::consts::sys_flag::transaction_value(flag);
        let indexed = tran != rocketraft_common::consts::sys_flag::TRANSACTION_PREPARED_TYPE
            && tran != rocketraft_common::consts::sys_flag::TRANSACTION_ROLLBACK_TYPE;
        if indexed {
            if let Err(e) = super::dispatch::redispatch(&self.shared.cqs, req) {
                self.shared.fail(format!(
                    "ConsumeQueue dispatch of {}/{} failed: {e}",
                    req.topic, req.queue_id
                ));
                return Err(self.shared.read_only_error());
            }
        }
        if let Some(ts) = message::record_store_timestamp(rec) {
            self.last_store_timestamp = self.last_store_timestamp.max(ts);
        }
        self.shared
            .stats
            .put_messages
            .fetch_add(1, Ordering::Relaxed);
        self.shared
            .stats
            .put_bytes
            .fetch_add(req.size as u64, Ordering::Relaxed);
        Ok(indexed)
    }

    /// Cuts the CommitLog at `offset`, crash-safely: the target is recorded first (a
    /// `truncate` marker file), then readers stop seeing the tail, the ConsumeQueues drop
    /// entries past it, the tail is zeroed and later segments deleted, the epoch file forgets
    /// epochs starting at or after it, and finally the marker goes. A crash anywhere in between
    /// leaves the marker, and recovery at the next open finishes the cut.
    ///
    /// An `offset` below the log's first offset (this replica diverged from its master where
    /// its own retention has since deleted the segments) makes the whole log suspect: it starts
    /// over at the segment start at or below `offset` ([`Self::reset_to`]), and the master
    /// streams from there (or from its own first offset if it no longer has that one either).
    pub(crate) fn truncate(&mut self, offset: i64) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        let min = shared.commitlog.min_offset();
        if offset < 0 {
            return Err(StoreError::Replication(format!(
                "cannot truncate to {offset}: not an offset"
            )));
        }
        if offset < min {
            let start = shared.commitlog.segment_start(offset);
            tracing::warn!(
                min_phy_offset = min,
                diverged_at = offset,
                start_over_at = start,
                "this replica diverged from its master below its own first offset: its whole log is suspect"
            );
            return self.reset_to(start);
        }
        if offset >= self.write_pos {
            if offset == self.write_pos {
                // Nothing to cut, but an epoch this replica started at its end (as a master that
                // never wrote) is not the master's.
                shared
                    .epochs
                    .lock()
                    .truncate_from(offset)
                    .map_err(|e| StoreError::io(shared.config.epoch_path(), e))?;
            }
            return Ok(());
        }
        let _checkpoint = shared.checkpoint_lock.lock();
        tracing::warn!(
            from = self.write_pos,
            to = offset,
            bytes = self.write_pos - offset,
            "truncating the CommitLog tail not shared with the master"
        );
        super::write_truncate_marker(&shared.config, offset)?;
        super::failpoint("truncate-after-marker");
        // From here on the log is half cut: a failure leaves the store failed (writes refused)
        // and the marker in place, so the next open finishes the cut.
        if let Err(e) = self.cut_tail(offset) {
            shared.fail(format!("truncating the CommitLog to {offset} failed: {e}"));
            return Err(shared.read_only_error());
        }
        Ok(())
    }

    /// Empties the log and makes it start at `offset`, a segment start: a replica starts over.
    ///
    /// - **Forward**, at or past the log's end: the master's first offset lies past this
    ///   replica's end (the master deleted the segments it would need next). Every ConsumeQueue's
    ///   minimum moves to its end: queue offsets go on from the master's records.
    /// - **Backward**, at or below the log's first offset (and below its end): this replica
    ///   diverged from its master below its own first offset, so its whole log is suspect. Each
    ///   ConsumeQueue keeps its entries of records that end at or below `offset` (the shared
    ///   prefix, which gives the next queue offset, even from entries below the queue's min); a
    ///   queue with no such entry left is emptied, and its queue offsets come with the master's
    ///   records.
    ///
    /// Either way the epochs are forgotten (the master's come with its data). An empty log
    /// already at `offset` only forgets its epochs (they describe no byte).
    ///
    /// Crash-safe by its order, each step durable before the next: (1) the old bytes are
    /// synced and readers stop seeing them; (2) the ConsumeQueues move; (3) a checkpoint at
    /// `offset` is written; (4) the segments go, prepared ones first, then the chain newest
    /// first, each unlink synced before the next; (5) the epochs go. Killed before (4) ends,
    /// recovery finds a shorter log starting where it did (and rebuilds the queue entries of
    /// what is left from it), with the epochs that made this replica start over, so the next
    /// handshake starts over again; killed after, it finds an empty log at `offset` (the
    /// checkpoint's offset) with stale epochs, which the next handshake forgets.
    pub(crate) fn reset_to(&mut self, offset: i64) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        let seg_size = shared.commitlog.segment_size() as i64;
        let min = shared.commitlog.min_offset();
        let forward = offset >= self.write_pos;
        if offset < 0 || offset.rem_euclid(seg_size) != 0 || !(forward || offset <= min) {
            return Err(StoreError::Replication(format!(
                "cannot start over at {offset}: it must be a segment start at or past this log's end {} or at or below its first offset {min}",
                self.write_pos
            )));
        }
        if shared.disk_error.load(Ordering::Acquire) {
            return Err(shared.read_only_error());
        }
        let epoch_path = shared.config.epoch_path();
        if offset == self.write_pos && min == offset {
            return shared
                .epochs
                .lock()
                .truncate_from(i64::MIN)
                .map_err(|e| StoreError::io(&epoch_path, e));
        }
        let _checkpoint = shared.checkpoint_lock.lock();
        tracing::warn!(
            from = min,
            to = self.write_pos,
            start_over_at = offset,
            forward,
            "this replica empties its log and starts over"
        );
        let fail = |e: StoreError| {
            shared.fail(format!("starting the log over at {offset} failed: {e}"));
            shared.read_only_error()
        };
        let dir = shared.config.commitlog_dir();
        // (1) What a crash before (4) leaves must be intact: sync it while it is published.
        shared
            .commitlog
            .flush(self.write_pos)
            .map_err(|e| fail(StoreError::io(&dir, e)))?;
        let removed = shared.commitlog.reset(offset);
        shared.dispatched.store(offset, Ordering::Release);
        shared.confirm.store(offset, Ordering::Release);
        self.write_pos = offset;
        self.current = None;
        // (2)
        let cq_dir = shared.config.consume_queue_dir();
        for q in shared.cqs.all() {
            let moved = if forward {
                q.clean_below(offset).map(|_| ())
            } else {
                q.start_over_at(offset)
            };
            moved.map_err(|e| fail(StoreError::io(&cq_dir, e)))?;
        }
        super::failpoint("reset-after-cq");
        // (3)
        self.checkpoint_at(offset).map_err(fail)?;
        super::failpoint("reset-after-checkpoint");
        // (4)
        self.allocator
            .discard_from(0)
            .map_err(|e| fail(StoreError::io(&dir, e)))?;
        for seg in removed.iter().rev() {
            match std::fs::remove_file(seg.path()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(fail(StoreError::io(seg.path(), e))),
            }
            super::mapped_file::sync_dir(&dir).map_err(|e| fail(StoreError::io(&dir, e)))?;
            super::failpoint("reset-after-segment");
        }
        drop(removed);
        super::mapped_file::sync_dir(&dir).map_err(|e| fail(StoreError::io(&dir, e)))?;
        super::failpoint("reset-after-segments");
        // (5)
        shared
            .epochs
            .lock()
            .truncate_from(i64::MIN)
            .map_err(|e| fail(StoreError::io(&epoch_path, e)))?;
        Ok(())
    }

    /// A replica told by its master, before it streams from `at`, the queue offset each queue's
    /// next record at or past `at` gets: when `at` is still this log's end, every queue with no
    /// entry left and a lower max (emptied by a start-over, or behind the master's first
    /// offset) starts empty there, so its max is the master's before the master's next record
    /// of it arrives, and a promotion goes on with the master's queue offsets. Returns how many
    /// queues moved. Persisted ([`ConsumeQueue::start_empty_at`](super::consume_queue::ConsumeQueue::start_empty_at)
    /// writes the queue's file before it returns): a replica restarted while its master is down,
    /// then elected, goes on from there.
    pub(crate) fn seed_queues(
        &mut self,
        at: i64,
        queues: &[(String, i32, i64)],
    ) -> Result<usize, StoreError> {
        if at != self.write_pos {
            return Ok(0);
        }
        let cq_dir = self.shared.config.consume_queue_dir();
        let mut moved = 0;
        for (topic, queue_id, next) in queues {
            let q = self.shared.cqs.get_or_create(topic, *queue_id);
            if q.start_empty_at(*next)
                .map_err(|e| StoreError::io(&cq_dir, e))?
            {
                moved += 1;
            }
        }
        if moved > 0 {
            tracing::info!(
                at,
                queues = moved,
                "queues with no entry left start at the master's next queue offsets"
            );
        }
        Ok(moved)
    }

    /// Writes a checkpoint saying the log is flushed and dispatched up to `offset` (after the
    /// ConsumeQueues are flushed), with the queues' ends: step (3) of [`Self::reset_to`]. The
    /// caller holds the checkpoint lock, so the flusher's checkpoints come before or after.
    fn checkpoint_at(&self, offset: i64) -> Result<(), StoreError> {
        let shared = &self.shared;
        let cq_dir = shared.config.consume_queue_dir();
        let mut queues = Vec::new();
        for q in shared.cqs.all() {
            q.flush().map_err(|e| StoreError::io(&cq_dir, e))?;
            queues.push((q.topic().to_string(), q.queue_id(), q.max_offset()));
        }
        queues.sort();
        let cp = Checkpoint {
            physical_flushed_offset: offset,
            dispatch_flushed_offset: offset,
            last_store_timestamp: shared.last_store_timestamp.load(Ordering::Acquire),
            confirm_offset: Some(offset),
            queues,
        };
        let path = shared.config.checkpoint_path();
        cp.store(&path).map_err(|e| StoreError::io(&path, e))
    }

    /// The part of [`truncate`](Self::truncate) after the marker is written.
    fn cut_tail(&mut self, offset: i64) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        let root = &shared.config.store_root;
        shared.commitlog.publish(offset);
        shared.dispatched.fetch_min(offset, Ordering::AcqRel);
        shared.confirm.fetch_min(offset, Ordering::AcqRel);
        let cq_dir = shared.config.consume_queue_dir();
        for q in shared.cqs.all() {
            q.truncate_past(offset)
                .map_err(|e| StoreError::io(&cq_dir, e))?;
        }
        super::failpoint("truncate-after-cq");
        let removed = shared
            .commitlog
            .cut(offset)
            .map_err(|e| StoreError::io(root, e))?;
        for path in removed {
            std::fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
        }
        // Segments the allocator prepared past the old end are not part of the new log.
        let next_start =
            shared.commitlog.segment_start(offset) + shared.commitlog.segment_size() as i64;
        self.allocator
            .discard_from(next_start as u64)
            .map_err(|e| StoreError::io(shared.config.commitlog_dir(), e))?;
        super::mapped_file::sync_dir(&shared.config.commitlog_dir())
            .map_err(|e| StoreError::io(shared.config.commitlog_dir(), e))?;
        super::failpoint("truncate-after-cut");
        shared
            .epochs
            .lock()
            .truncate_from(offset)
            .map_err(|e| StoreError::io(shared.config.epoch_path(), e))?;
        self.write_pos = offset;
        self.current = None;
        super::remove_truncate_marker(&shared.config)?;
        Ok(())
    }
}
