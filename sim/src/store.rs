//! An in-memory Raft log store that models `fsync`: what a crash keeps is what was synced.
//!
//! Why not [`rocketraft_raft::RocksLogStore`]: RocksDB runs its own background threads and its
//! writes take real time, so under the paused clock neither their order against the simulated
//! tasks nor the point a crash cuts them at would follow from the seed. This store keeps the
//! contract openraft asks of the RocksDB one (and the RocksDB store's own choices of what is
//! synced):
//! - `save_vote` and `truncate_after` are durable when they return (synced writes there);
//! - `append` makes the entries readable at once and calls the IO callback only once a simulated
//!   sync, a seeded delay later, made them durable; a sync covers every entry written before it
//!   (openraft allows this and replicates entries before they are synced; `RocksLogStore`
//!   syncs before `append` returns, so this store exposes more: it found a leader that lost
//!   entries it had sent, see the README's "a restarted leader resumed its term");
//! - `save_committed` and `purge` are unsynced writes (as in the RocksDB store): they become
//!   durable with the next sync.
//!
//! A crash ([`DurableLog::crash`]) throws away every unsynced write and bumps the incarnation,
//! so syncs still pending from the dead process never land.
//!
//! Two deliberate bugs live here for the checker's self-tests ([`Bug::LoseUnsyncedAck`],
//! [`Bug::ForgetVote`]); a disk made with `bug: None` has neither.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::sync::Arc;
use std::time::Duration;

use openraft::alias::EntryOf;
use openraft::alias::LogIdOf;
use openraft::alias::VoteOf;
use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use parking_lot::Mutex;
use rocketraft_raft::TypeConfig;

use crate::bug::Bug;
use crate::rng::SimRng;

type Entry = EntryOf<TypeConfig>;
type LogId = LogIdOf<TypeConfig>;
type Vote = VoteOf<TypeConfig>;

/// What one copy of the log holds (the synced copy or the process's view).
#[derive(Debug, Clone, Default)]
struct LogImage {
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
    entries: BTreeMap<u64, Entry>,
}

#[derive(Debug)]
struct Inner {
    /// What survives a crash.
    synced: LogImage,
    /// What the running process sees: the synced image plus unsynced writes.
    live: LogImage,
    /// Bumped by every crash; a pending sync of an older incarnation does nothing.
    incarnation: u64,
    /// Draws the sync delays.
    rng: SimRng,
    /// A sync takes `min..=max` ms of simulated time.
    sync_ms: (u64, u64),
    /// [`Bug::LoseUnsyncedAck`]: appends are reported durable at once and never synced.
    ack_unsynced: bool,
    /// [`Bug::ForgetVote`]: no sync ever makes the vote durable.
    forget_vote: bool,
}

/// One node's disk: shared by every incarnation of the node's process.
#[derive(Debug, Clone)]
pub struct DurableLog {
    inner: Arc<Mutex<Inner>>,
}

impl DurableLog {
    /// A fresh disk; `bug` breaks it on purpose (the checker's self-tests), `None` otherwise.
    pub fn new(rng: SimRng, sync_ms: (u64, u64), bug: Option<Bug>) -> Self {
        DurableLog {
            inner: Arc::new(Mutex::new(Inner {
                synced: LogImage::default(),
                live: LogImage::default(),
                incarnation: 0,
                rng,
                sync_ms,
                ack_unsynced: bug == Some(Bug::LoseUnsyncedAck),
                forget_vote: bug == Some(Bug::ForgetVote),
            })),
        }
    }

    /// The process dies: unsynced writes are lost; returns how many log entries went with them.
    pub fn crash(&self) -> usize {
        let mut inner = self.inner.lock();
        inner.incarnation += 1;
        let lost = inner
            .live
            .entries
            .iter()
            .filter(|(i, e)| inner.synced.entries.get(i).map(|s| s.log_id()) != Some(e.log_id()))
            .count();
        inner.live = inner.synced.clone();
        lost
    }

    /// A store handle for the process now running on this disk.
    pub fn open(&self) -> SimLogStore {
        SimLogStore {
            disk: self.clone(),
            incarnation: self.inner.lock().incarnation,
        }
    }

    /// The log id the running process holds at `index`, if any.
    pub fn live_log_id(&self, index: u64) -> Option<LogId> {
        self.inner
            .lock()
            .live
            .entries
            .get(&index)
            .map(|e| e.log_id())
    }

    /// The highest log index synced.
    pub fn synced_last_index(&self) -> Option<u64> {
        self.inner.lock().synced.entries.keys().next_back().copied()
    }
}

/// The log store openraft runs on; a handle on one incarnation of a node's disk.
#[derive(Debug, Clone)]
pub struct SimLogStore {
    disk: DurableLog,
    incarnation: u64,
}

fn dead() -> io::Error {
    io::Error::other("the simulated process crashed")
}

impl SimLogStore {
    /// Runs `f` on the disk if this handle's process is still the running one.
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> Result<T, io::Error> {
        let mut inner = self.disk.inner.lock();
        if inner.incarnation != self.incarnation {
            return Err(dead());
        }
        Ok(f(&mut inner))
    }

    /// A synced write: the live image's state up to now becomes durable.
    fn sync_now(inner: &mut Inner) {
        let vote = inner.synced.vote;
        inner.synced = inner.live.clone();
        if inner.forget_vote {
            inner.synced.vote = vote;
        }
    }
}

impl RaftLogReader<TypeConfig> for SimLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        self.with(|inner| {
            inner
                .live
                .entries
                .range(range)
                .map(|(_, e)| e.clone())
                .collect()
        })
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.with(|inner| inner.live.vote)
    }
}

impl RaftLogStorage<TypeConfig> for SimLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        self.with(|inner| {
            let last_purged_log_id = inner.live.last_purged;
            let last_log_id = inner
                .live
                .entries
                .values()
                .next_back()
                .map(|e| e.log_id())
                .or(last_purged_log_id);
            LogState {
                last_purged_log_id,
                last_log_id,
            }
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let delay = self.with(|inner| {
            let (lo, hi) = inner.sync_ms;
            inner.rng.range(lo, hi)
        })?;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        // Synced before it returns, like the RocksDB store's vote write.
        self.with(|inner| {
            inner.live.vote = Some(*vote);
            Self::sync_now(inner);
        })
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Unsynced, like the RocksDB store's: durable with the next sync.
        self.with(|inner| inner.live.committed = committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        self.with(|inner| inner.live.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let (delay, ack_unsynced) = self.with(|inner| {
            for entry in entries {
                inner.live.entries.insert(entry.index(), entry);
            }
            let (lo, hi) = inner.sync_ms;
            (inner.rng.range(lo, hi), inner.ack_unsynced)
        })?;
        if ack_unsynced {
            // The bug: durable in name only.
            callback.io_completed(Ok(()));
            return Ok(());
        }
        // The sync completes later, in its own task; openraft goes on meanwhile (it may read
        // the entries, but counts them only once the callback says they are durable).
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            match this.with(Self::sync_now) {
                Ok(()) => callback.io_completed(Ok(())),
                // The process died before the sync: the callback's receiver is gone with it.
                Err(e) => callback.io_completed(Err(e)),
            }
        });
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.as_ref().map_or(0, |l| l.index() + 1);
        self.with(|inner| {
            inner.live.entries.split_off(&from);
            // Synced, like the RocksDB store's truncation: a truncated entry never comes back.
            Self::sync_now(inner);
        })
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.with(|inner| {
            let keep = inner.live.entries.split_off(&(log_id.index() + 1));
            inner.live.entries = keep;
            inner.live.last_purged = Some(log_id);
        })
    }
}
