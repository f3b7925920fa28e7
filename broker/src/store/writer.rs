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

use super::commitlog::END_FILE_MIN_BLANK_LENGTH;
use super::dispatch::{dispatch, DispatchRequest};
use super::error::StoreError;
use super::flush::{FlushMsg, Waiter};
use super::mapped_file::{MappedFile, SegmentAllocator};
use super::{FlushDiskType, PutResult, PutStatus, Shared};

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

    pub fn run(mut self) {
        let max_bytes = self.shared.config.max_batch_bytes;
        let max_requests = self.shared.config.max_batch_requests;
        let mut graceful = true;
        loop {
            let Some(first) = self.rx.blocking_recv() else {
                break;
            };
            let mut group = Vec::new();
            let mut bytes = 0usize;
            let mut stop = None;
            match first {
                WriterMsg::Put(r) => {
                    bytes += r.data.len();
                    group.push(r);
                }
                WriterMsg::Stop { graceful } => stop = Some(graceful),
            }
            while stop.is_none() && bytes < max_bytes && group.len() < max_requests {
                match self.rx.try_recv() {
                    Ok(WriterMsg::Put(r)) => {
                        bytes += r.data.len();
                        group.push(r);
                    }
                    Ok(WriterMsg::Stop { graceful }) => stop = Some(graceful),
                    Err(_) => break,
                }
            }
            if !group.is_empty() {
                self.process_group(group);
            }
            if let Some(g) = stop {
                graceful = g;
                break;
            }
        }
        // Refuse whatever is still queued.
        self.rx.close();
        while let Ok(msg) = self.rx.try_recv() {
            if let WriterMsg::Put(r) = msg {
                let _ = r.reply.send(Err(StoreError::ServiceNotAvailable(
                    "store is shutting down".into(),
                )));
            }
        }
        self.allocator.stop();
        let _ = self.flush_tx.send(FlushMsg::Stop { graceful });
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
                    let seg = self
                        .allocator
                        .take(start as u64, Duration::from_secs(30))
                        .map_err(|e| {
                            tracing::error!(start, error = %e, "cannot create CommitLog segment");
                            StoreError::ServiceNotAvailable(format!(
                                "cannot create CommitLog segment {start}: {e}"
                            ))
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

    fn append(
        &mut self,
        topic: &str,
        queue_id: i32,
        data: &mut [u8],
        sizes: &[u32],
        tags_codes: Option<&[i64]>,
    ) -> Result<PutResult, StoreError> {
        if self.shared.disk_error.load(Ordering::Acquire) {
            return Err(StoreError::ServiceNotAvailable(
                "the store stopped writing after a disk error".into(),
            ));
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
        let mut at = 0usize;
        for (i, &size) in sizes.iter().enumerate() {
            let rec = &mut data[at..at + size as usize];
            message::set_record_offsets(
                rec,
                base_queue_offset + i as i64,
                base_physical + at as i64,
            );
            message::set_store_timestamp(rec, store_timestamp);
            message::seal_record_crc(rec);
            debug_assert!(message::verify_record_crc(rec));
            at += size as usize;
        }
        // SAFETY: single writer, past the published end; room_for checked the bounds.
        unsafe { seg.write(pos, data) };
        self.write_pos += data.len() as i64;
        self.shared.commitlog.publish(self.write_pos);

        let mut at = 0i64;
        for (i, (&size, &tags_code)) in sizes.iter().zip(tags_codes.unwrap_or_default()).enumerate()
        {
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
                tracing::error!(topic, queue_id, error = %e, "ConsumeQueue dispatch failed; store stops accepting writes");
                self.shared.disk_error.store(true, Ordering::Release);
                return Err(StoreError::ServiceNotAvailable(format!(
                    "ConsumeQueue dispatch failed: {e}"
                )));
            }
            at += size as i64;
        }
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
