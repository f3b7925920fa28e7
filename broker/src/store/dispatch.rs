//! Dispatch: turning appended CommitLog records into ConsumeQueue entries.
//!
//! The writer dispatches each request right after its bytes are appended and published, so a
//! ConsumeQueue never shows an entry whose CommitLog bytes are not readable. Recovery
//! re-dispatches the records it walks; that path is idempotent by queue offset.

use std::io;

use super::consume_queue::{ConsumeQueueStore, CqEntry};

/// One record's ConsumeQueue entry and where it goes.
#[derive(Debug, Clone, Copy)]
pub struct DispatchRequest<'a> {
    pub topic: &'a str,
    pub queue_id: i32,
    pub queue_offset: i64,
    pub commit_log_offset: i64,
    pub size: i32,
    pub tags_code: i64,
}

impl DispatchRequest<'_> {
    fn entry(&self) -> CqEntry {
        CqEntry {
            commit_log_offset: self.commit_log_offset,
            size: self.size,
            tags_code: self.tags_code,
        }
    }
}

/// What a recovery dispatch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redispatch {
    /// The queue already had this exact entry.
    Present,
    /// The entry was appended at the queue's end.
    Appended,
    /// The queue had a different entry at this offset; it and everything after were dropped.
    Replaced,
    /// The record's queue offset is past the queue's end: slots in between stay empty.
    Gap,
}

/// Live path: appends the entry at the queue's end (the writer took the queue offset from it).
pub fn dispatch(cqs: &ConsumeQueueStore, req: &DispatchRequest<'_>) -> io::Result<()> {
    cqs.get_or_create(req.topic, req.queue_id)
        .append(req.queue_offset, req.entry())
}

/// Recovery path: makes the queue hold exactly this entry at `queue_offset`.
pub fn redispatch(cqs: &ConsumeQueueStore, req: &DispatchRequest<'_>) -> io::Result<Redispatch> {
    let cq = cqs.get_or_create(req.topic, req.queue_id);
    let max = cq.max_offset();
    let want = req.entry();
    if req.queue_offset < max {
        if cq.entry(req.queue_offset) == Some(want) {
            return Ok(Redispatch::Present);
        }
        if req.queue_offset < cq.min_offset() {
            return Ok(Redispatch::Present);
        }
        cq.truncate(req.queue_offset)?;
        cq.append(req.queue_offset, want)?;
        return Ok(Redispatch::Replaced);
    }
    let gap = req.queue_offset > max;
    cq.append(req.queue_offset, want)?;
    Ok(if gap {
        Redispatch::Gap
    } else {
        Redispatch::Appended
    })
}
