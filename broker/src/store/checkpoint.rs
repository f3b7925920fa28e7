//! The store checkpoint (`{store_root}/checkpoint`): how far the CommitLog and the
//! ConsumeQueues are known to be on disk, so recovery can start near the end instead of at the
//! beginning.
//!
//! Layout, big-endian, then a CRC32 of everything before it:
//! ```text
//! u32 magic "RRCK" | u32 version (2) | i64 physical flushed offset | i64 dispatch flushed offset
//! | i64 last store timestamp | i64 confirm offset (version 2; -1 = unknown) | u32 queue count
//! | queue* | u32 crc32
//! queue = u16 topic length | topic bytes | i32 queue id | i64 flushed max offset
//! ```
//! "dispatch flushed offset" D: every record below D has its ConsumeQueue entry on disk. The
//! per-queue max offsets let recovery notice a ConsumeQueue that lost entries (deleted or cut
//! files) and rebuild it from the CommitLog. The confirm offset is the replication confirm
//! offset when the checkpoint was taken (every SyncStateSet member held the log below it): a
//! replica restarts from it, so it never serves more after a restart than it knew was held.
//! Version 1 checkpoints (no confirm offset) are still read.
//!
//! Written to `checkpoint.tmp`, synced, renamed over `checkpoint`, directory synced: a reader
//! sees the old or the new checkpoint, never a mix.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use super::mapped_file::sync_dir;

const MAGIC: u32 = u32::from_be_bytes(*b"RRCK");
const VERSION: u32 = 2;
/// The first version, without the confirm offset.
const VERSION_1: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub physical_flushed_offset: i64,
    pub dispatch_flushed_offset: i64,
    pub last_store_timestamp: i64,
    /// The replication confirm offset; `None` when unknown (a version 1 checkpoint).
    pub confirm_offset: Option<i64>,
    /// `(topic, queue id, max offset flushed)`.
    pub queues: Vec<(String, i32, i64)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    #[error("checkpoint truncated")]
    Truncated,
    #[error("bad checkpoint magic {0:#x}")]
    Magic(u32),
    #[error("unsupported checkpoint version {0}")]
    Version(u32),
    #[error("checkpoint CRC mismatch")]
    Crc,
    #[error("checkpoint topic is not UTF-8")]
    Utf8,
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], CheckpointError> {
        if self.0.len() < n {
            return Err(CheckpointError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16, CheckpointError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, CheckpointError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i64(&mut self) -> Result<i64, CheckpointError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40 + self.queues.len() * 32);
        out.extend_from_slice(&MAGIC.to_be_bytes());
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&self.physical_flushed_offset.to_be_bytes());
        out.extend_from_slice(&self.dispatch_flushed_offset.to_be_bytes());
        out.extend_from_slice(&self.last_store_timestamp.to_be_bytes());
        let confirm = self.confirm_offset.filter(|c| *c >= 0).unwrap_or(-1);
        out.extend_from_slice(&confirm.to_be_bytes());
        out.extend_from_slice(&(self.queues.len() as u32).to_be_bytes());
        for (topic, qid, max) in &self.queues {
            // Topic names are at most 127 bytes (validated before they reach the store).
            out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
            out.extend_from_slice(topic.as_bytes());
            out.extend_from_slice(&qid.to_be_bytes());
            out.extend_from_slice(&max.to_be_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Checkpoint, CheckpointError> {
        if buf.len() < 4 {
            return Err(CheckpointError::Truncated);
        }
        let (body, crc) = buf.split_at(buf.len() - 4);
        let mut r = Reader(body);
        let magic = r.u32()?;
        if magic != MAGIC {
            return Err(CheckpointError::Magic(magic));
        }
        let version = r.u32()?;
        if version != VERSION && version != VERSION_1 {
            return Err(CheckpointError::Version(version));
        }
        if crc32fast::hash(body).to_be_bytes() != crc {
            return Err(CheckpointError::Crc);
        }
        let physical_flushed_offset = r.i64()?;
        let dispatch_flushed_offset = r.i64()?;
        let last_store_timestamp = r.i64()?;
        let confirm_offset = if version == VERSION_1 {
            None
        } else {
            Some(r.i64()?).filter(|c| *c >= 0)
        };
        let n = r.u32()? as usize;
        let mut queues = Vec::with_capacity(n.min(1 << 16));
        for _ in 0..n {
            let l = r.u16()? as usize;
            let topic = std::str::from_utf8(r.take(l)?)
                .map_err(|_| CheckpointError::Utf8)?
                .to_string();
            let qid = r.u32()? as i32;
            let max = r.i64()?;
            queues.push((topic, qid, max));
        }
        Ok(Checkpoint {
            physical_flushed_offset,
            dispatch_flushed_offset,
            last_store_timestamp,
            confirm_offset,
            queues,
        })
    }

    /// Reads the checkpoint; `Ok(None)` if there is none, `Err` if it is unreadable or invalid.
    pub fn load(path: &Path) -> io::Result<Option<Result<Checkpoint, CheckpointError>>> {
        match fs::read(path) {
            Ok(b) => Ok(Some(Checkpoint::decode(&b))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Atomically replaces the checkpoint at `path`.
    pub fn store(&self, path: &Path) -> io::Result<()> {
        let tmp = path.with_extension("tmp");
        let written = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(&self.encode())?;
            f.sync_all()
        })();
        if let Err(e) = written {
            // The previous checkpoint is untouched; leave no partial temp file behind.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        super::durability::note(super::durability::Durable::File { path: &tmp });
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            physical_flushed_offset: 1 << 35,
            dispatch_flushed_offset: 12345,
            last_store_timestamp: 1_700_000_000_000,
            confirm_offset: Some(12000),
            queues: vec![("TopicA".into(), 0, 10), ("%RETRY%g".into(), 3, 0)],
        }
    }

    #[test]
    fn round_trip_and_atomic_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("checkpoint");
        assert_eq!(Checkpoint::load(&p).expect("load"), None);
        sample().store(&p).expect("store");
        assert_eq!(Checkpoint::load(&p).expect("load"), Some(Ok(sample())));
        assert!(!p.with_extension("tmp").exists());
    }

    #[test]
    fn version_1_checkpoints_are_read_without_a_confirm_offset() {
        // A version 1 encoding: no confirm offset field.
        let c = sample();
        let mut v1 = Vec::new();
        v1.extend_from_slice(&MAGIC.to_be_bytes());
        v1.extend_from_slice(&VERSION_1.to_be_bytes());
        v1.extend_from_slice(&c.physical_flushed_offset.to_be_bytes());
        v1.extend_from_slice(&c.dispatch_flushed_offset.to_be_bytes());
        v1.extend_from_slice(&c.last_store_timestamp.to_be_bytes());
        v1.extend_from_slice(&0u32.to_be_bytes());
        let crc = crc32fast::hash(&v1);
        v1.extend_from_slice(&crc.to_be_bytes());
        let got = Checkpoint::decode(&v1).expect("decode v1");
        assert_eq!(got.confirm_offset, None);
        assert_eq!(got.physical_flushed_offset, c.physical_flushed_offset);
        let unknown = Checkpoint {
            confirm_offset: None,
            ..sample()
        };
        assert_eq!(Checkpoint::decode(&unknown.encode()), Ok(unknown));
    }

    #[test]
    fn crc_catches_every_flip() {
        let enc = sample().encode();
        for i in 0..enc.len() {
            let mut c = enc.clone();
            c[i] ^= 0x01;
            assert!(Checkpoint::decode(&c).is_err(), "flip at {i}");
        }
        for cut in 0..enc.len() {
            assert!(Checkpoint::decode(&enc[..cut]).is_err(), "cut at {cut}");
        }
    }
}
