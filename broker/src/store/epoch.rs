//! The epoch file of a replica: which master epoch wrote which part of the CommitLog.
//!
//! Each entry says "from CommitLog offset `start_offset` on, the log was written by the master of
//! `epoch`"; an entry ends where the next begins (the last one at the log's end). A new master
//! appends an entry for its epoch at its current end offset before taking writes. A replica
//! becoming slave compares its entries with the master's to find the last offset they share
//! ([`EpochFile::find_consistent_point`]: the highest epoch both have with the same start) and
//! truncates its divergent tail ([`EpochFile::truncate_from`]).
//!
//! On disk: one line `epoch start_offset` per entry, then `crc <crc32 of the lines before>`. The
//! file is replaced atomically (temporary file, fsync, rename, directory fsync), so a crash leaves
//! either the old or the new list; a file whose checksum does not match is refused, never
//! silently trusted.

use std::fs;
use std::io;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;

/// One epoch's start in the CommitLog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// The epoch list of one replica, persisted in one file.
#[derive(Debug)]
pub struct EpochFile {
    path: PathBuf,
    entries: Vec<EpochEntry>,
}

fn invalid(path: &Path, msg: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("epoch file {}: {msg}", path.display()),
    )
}

fn encode(entries: &[EpochEntry]) -> String {
    let mut body = String::new();
    for e in entries {
        body.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
    }
    let crc = crc32fast::hash(body.as_bytes());
    body.push_str(&format!("crc {crc}\n"));
    body
}

fn decode(path: &Path, text: &str) -> io::Result<Vec<EpochEntry>> {
    let body_end = text
        .rfind("crc ")
        .ok_or_else(|| invalid(path, "no checksum line (torn or foreign file)"))?;
    let (body, crc_line) = text.split_at(body_end);
    let stored: u32 = crc_line["crc ".len()..]
        .trim()
        .parse()
        .map_err(|_| invalid(path, "unreadable checksum"))?;
    if crc32fast::hash(body.as_bytes()) != stored {
        return Err(invalid(path, "checksum mismatch"));
    }
    let mut entries: Vec<EpochEntry> = Vec::new();
    for (n, line) in body.lines().enumerate() {
        let mut parts = line.split_whitespace();
        let (Some(epoch), Some(start), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(invalid(
                path,
                format!("line {}: expected `epoch start_offset`", n + 1),
            ));
        };
        let entry = EpochEntry {
            epoch: epoch
                .parse()
                .map_err(|_| invalid(path, format!("line {}: bad epoch", n + 1)))?,
            start_offset: start
                .parse()
                .map_err(|_| invalid(path, format!("line {}: bad offset", n + 1)))?,
        };
        if let Some(last) = entries.last() {
            if entry.epoch <= last.epoch || entry.start_offset < last.start_offset {
                return Err(invalid(
                    path,
                    format!("line {}: epochs out of order", n + 1),
                ));
            }
        }
        entries.push(entry);
    }
    Ok(entries)
}

impl EpochFile {
    /// Opens the epoch file at `path`, or starts an empty list if there is none.
    pub fn open(path: impl Into<PathBuf>) -> io::Result<EpochFile> {
        let path = path.into();
        let entries = match fs::read_to_string(&path) {
            Ok(text) => decode(&path, &text)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(EpochFile { path, entries })
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The newest entry.
    pub fn last(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    fn persist(&self, entries: &[EpochEntry]) -> io::Result<()> {
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let tmp = self.path.with_extension("tmp");
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(encode(entries).as_bytes())?;
            f.sync_all()?;
        }
        super::durability::note(super::durability::Durable::File { path: &tmp });
        fs::rename(&tmp, &self.path)?;
        super::mapped_file::sync_dir(dir)
    }

    /// Records that `epoch` writes from `start_offset` on. The epoch must be newer than the last
    /// one and must not start before it; appending the last entry again is a no-op.
    pub fn append(&mut self, epoch: i32, start_offset: i64) -> io::Result<()> {
        let entry = EpochEntry {
            epoch,
            start_offset,
        };
        if let Some(last) = self.last() {
            if last == entry {
                return Ok(());
            }
            if epoch <= last.epoch || start_offset < last.start_offset {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("epoch {epoch} at {start_offset} does not follow {last:?}"),
                ));
            }
        }
        let mut next = self.entries.clone();
        next.push(entry);
        self.persist(&next)?;
        self.entries = next;
        Ok(())
    }

    /// Forgets every epoch that starts at or after `offset` (the log is being cut there).
    pub fn truncate_from(&mut self, offset: i64) -> io::Result<()> {
        self.keep(|e, _| e.start_offset < offset)
    }

    /// Forgets the epochs that end at or below `offset`, the log's new first offset after
    /// retention deleted segments (RocketMQ's `truncatePrefixByOffset`); the newest entry
    /// always stays. Kept entries keep their start, so consistent points are found as before.
    pub fn truncate_prefix(&mut self, offset: i64) -> io::Result<()> {
        self.keep(|_, end| end > offset)
    }

    /// Keeps the entries `keep(entry, end)` accepts (the newest entry ends at `i64::MAX`),
    /// persisting the list if it changed.
    fn keep(&mut self, keep: impl Fn(&EpochEntry, i64) -> bool) -> io::Result<()> {
        let next: Vec<EpochEntry> = self
            .entries
            .iter()
            .enumerate()
            .filter(|(i, e)| keep(e, Self::end_of(&self.entries, *i, i64::MAX)))
            .map(|(_, e)| *e)
            .collect();
        if next.len() == self.entries.len() {
            return Ok(());
        }
        self.persist(&next)?;
        self.entries = next;
        Ok(())
    }

    /// Where the epoch containing index `i` ends: the next entry's start, or `log_end`.
    fn end_of(entries: &[EpochEntry], i: usize, log_end: i64) -> i64 {
        entries.get(i + 1).map_or(log_end, |n| n.start_offset)
    }

    /// The last CommitLog offset this replica (log end `local_end`) shares with a master whose
    /// entries are `master` (log end `master_end`): the end of the highest epoch both have with
    /// the same start, capped by both ends. `None` when they share no epoch (the replica keeps
    /// nothing of its log).
    pub fn find_consistent_point(
        &self,
        local_end: i64,
        master: &[EpochEntry],
        master_end: i64,
    ) -> Option<i64> {
        consistent_point(&self.entries, local_end, master, master_end)
    }
}

/// [`EpochFile::find_consistent_point`] over plain entry lists.
pub fn consistent_point(
    local_entries: &[EpochEntry],
    local_end: i64,
    master: &[EpochEntry],
    master_end: i64,
) -> Option<i64> {
    {
        for (i, local) in local_entries.iter().enumerate().rev() {
            let Some(j) = master.iter().position(|m| m.epoch == local.epoch) else {
                continue;
            };
            if master[j].start_offset != local.start_offset {
                continue;
            }
            let local_stop = EpochFile::end_of(local_entries, i, local_end);
            let master_stop = EpochFile::end_of(master, j, master_end);
            return Some(local_stop.min(master_stop));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncating_the_prefix_forgets_the_epochs_below_the_first_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("epoch");
        let mut f = EpochFile::open(&path).expect("open");
        // Epoch 2 wrote nothing: epoch 3 starts where it did.
        for (epoch, start) in [(1, 0), (2, 1000), (3, 1000), (5, 4000)] {
            f.append(epoch, start).expect("append");
        }
        f.truncate_prefix(999).expect("truncate");
        assert_eq!(f.entries().len(), 4, "epoch 1 still holds offset 999");
        f.truncate_prefix(1000).expect("truncate");
        let left: Vec<(i32, i64)> = f
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect();
        assert_eq!(
            left,
            [(3, 1000), (5, 4000)],
            "epoch 2 held nothing, epoch 1 ended at 1000"
        );
        f.truncate_prefix(1 << 40).expect("truncate");
        assert_eq!(f.entries().len(), 1, "the newest entry stays");
        let again = EpochFile::open(&path).expect("reopen");
        assert_eq!(again.entries(), f.entries(), "durable");
    }

    fn e(epoch: i32, start_offset: i64) -> EpochEntry {
        EpochEntry {
            epoch,
            start_offset,
        }
    }

    #[test]
    fn entries_survive_reopen_and_stay_ordered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("epoch");
        let mut f = EpochFile::open(&path).expect("open");
        f.append(1, 0).expect("append");
        f.append(1, 0).expect("same entry again is a no-op");
        f.append(3, 500).expect("append");
        assert!(f.append(2, 600).is_err(), "older epoch");
        assert!(f.append(4, 100).is_err(), "starts before the last one");
        let again = EpochFile::open(&path).expect("reopen");
        assert_eq!(again.entries(), &[e(1, 0), e(3, 500)]);
    }

    #[test]
    fn a_damaged_file_is_refused_and_a_leftover_temp_file_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("epoch");
        let mut f = EpochFile::open(&path).expect("open");
        f.append(1, 0).expect("append");
        f.append(2, 4096).expect("append");
        // A crash between writing the temporary file and the rename leaves the old list.
        fs::write(path.with_extension("tmp"), "garbage").expect("tmp");
        assert_eq!(EpochFile::open(&path).expect("reopen").entries().len(), 2);
        // Any flipped byte is caught.
        let good = fs::read(&path).expect("read");
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            fs::write(&path, &bad).expect("write");
            if let Ok(f) = EpochFile::open(&path) {
                assert_eq!(
                    f.entries(),
                    &[e(1, 0), e(2, 4096)],
                    "flip at {i} changed the list"
                );
            }
        }
        fs::write(&path, "1 0\n").expect("torn");
        assert!(EpochFile::open(&path).is_err(), "no checksum line");
    }

    #[test]
    fn consistent_point_is_the_end_of_the_highest_shared_epoch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut slave = EpochFile::open(dir.path().join("epoch")).expect("open");
        slave.append(1, 0).expect("append");
        slave.append(2, 1000).expect("append");
        // The old master wrote epoch 2 up to 1800 alone; the new master (epoch 3) took over at
        // 1500, where epoch 2 ended for it.
        let master = [e(1, 0), e(2, 1000), e(3, 1500)];
        assert_eq!(slave.find_consistent_point(1800, &master, 2500), Some(1500));
        // A slave behind the master keeps all it has.
        assert_eq!(slave.find_consistent_point(1200, &master, 2500), Some(1200));
        // Same epoch number but another start: not shared; fall back to epoch 1.
        let other = [e(1, 0), e(2, 900), e(3, 1500)];
        assert_eq!(slave.find_consistent_point(1800, &other, 2500), Some(900));
        // Nothing shared.
        assert_eq!(slave.find_consistent_point(1800, &[e(5, 0)], 10), None);
        // Truncating the tail drops the epochs that start at or after the cut.
        slave.truncate_from(1000).expect("truncate");
        assert_eq!(slave.entries(), &[e(1, 0)]);
        slave.append(3, 1000).expect("the new epoch follows");
    }
}
