//! What the store made durable, reported as it happens: a seam for the deterministic
//! simulation's power-loss model (`sim/`), which keeps, per file, only what was synced.
//!
//! The store calls [`note`] after every sync that makes bytes or directory entries durable:
//! the msync of a mapped range (CommitLog and ConsumeQueue segments), the fsync of a whole file
//! (a new segment before its rename, the checkpoint, the epoch file, the format file, the abort
//! marker, a seeded ConsumeQueue file), and the fsync of a directory (files created, renamed or
//! removed in it). With no observer registered, [`note`] is one relaxed atomic load: the
//! production path pays nothing else. An observer watches the files under one directory
//! ([`observe`]), so runs in one process (parallel tests) each see their own stores only.
//!
//! An observer is called on the thread that synced, right after the sync returned: it may read
//! the file (the bytes the sync covered are still those the store wrote; the store's single
//! writer is the caller or waits for it).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// One sync that returned.
#[derive(Debug, Clone, Copy)]
pub enum Durable<'a> {
    /// Bytes `[pos, pos + len)` of the file at `path` are on disk (msync of a mapped range).
    Range { path: &'a Path, pos: u64, len: u64 },
    /// The whole file at `path`, content and size, is on disk (fsync).
    File { path: &'a Path },
    /// The entries of the directory `path` (files created, renamed or removed in it) are on
    /// disk (fsync of the directory).
    Dir { path: &'a Path },
}

impl Durable<'_> {
    pub fn path(&self) -> &Path {
        match self {
            Durable::Range { path, .. } | Durable::File { path } | Durable::Dir { path } => path,
        }
    }
}

/// Receives what the stores under one directory made durable.
pub trait DurabilityObserver: Send + Sync {
    fn durable(&self, event: &Durable<'_>);
}

type Registered = (u64, PathBuf, Arc<dyn DurabilityObserver>);

static ACTIVE: AtomicBool = AtomicBool::new(false);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static OBSERVERS: RwLock<Vec<Registered>> = RwLock::new(Vec::new());

/// Registered while alive: dropping it stops the reports.
#[must_use = "the observer is removed when this is dropped"]
#[derive(Debug)]
pub struct Observing {
    id: u64,
}

/// Reports every sync of a file or directory under `root` (compared as given: use the same
/// form of the path as the store's configuration) to `observer`, until the guard drops.
pub fn observe(root: PathBuf, observer: Arc<dyn DurabilityObserver>) -> Observing {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut g = OBSERVERS.write().unwrap_or_else(|e| e.into_inner());
    g.push((id, root, observer));
    ACTIVE.store(true, Ordering::Release);
    Observing { id }
}

impl Drop for Observing {
    fn drop(&mut self) {
        let mut g = OBSERVERS.write().unwrap_or_else(|e| e.into_inner());
        g.retain(|(id, _, _)| *id != self.id);
        if g.is_empty() {
            ACTIVE.store(false, Ordering::Release);
        }
    }
}

/// Reports a sync that returned (see the module documentation).
#[inline]
pub(crate) fn note(event: Durable<'_>) {
    if !ACTIVE.load(Ordering::Relaxed) {
        return;
    }
    note_slow(&event);
}

#[cold]
fn note_slow(event: &Durable<'_>) {
    let observer = {
        let g = OBSERVERS.read().unwrap_or_else(|e| e.into_inner());
        g.iter()
            .find(|(_, root, _)| event.path().starts_with(root))
            .map(|(_, _, o)| o.clone())
    };
    if let Some(o) = observer {
        o.durable(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    struct Seen(Mutex<Vec<String>>);

    impl DurabilityObserver for Seen {
        fn durable(&self, event: &Durable<'_>) {
            self.0.lock().push(format!("{event:?}"));
        }
    }

    #[test]
    fn syncs_under_the_root_are_reported_until_the_guard_drops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let other = tempfile::tempdir().expect("tempdir");
        let seen = Arc::new(Seen(Mutex::new(Vec::new())));
        let guard = observe(dir.path().to_path_buf(), seen.clone());
        let f = super::super::mapped_file::MappedFile::create(dir.path(), 0, 4096, false, false)
            .expect("create");
        // SAFETY: nothing else maps the file.
        unsafe { f.write(10, b"abc") };
        f.flush_range(10, 3).expect("flush");
        super::super::mapped_file::sync_dir(other.path()).expect("sync other");
        let events = seen.0.lock().clone();
        assert!(
            events
                .iter()
                .any(|e| e.starts_with("File") && e.contains(".tmp")),
            "{events:?}"
        );
        assert!(events.iter().any(|e| e.starts_with("Dir")), "{events:?}");
        assert!(
            events.iter().any(|e| e.contains("pos: 10, len: 3")),
            "{events:?}"
        );
        assert!(
            !events
                .iter()
                .any(|e| e.contains(&*other.path().to_string_lossy())),
            "{events:?}"
        );
        drop(guard);
        let before = seen.0.lock().len();
        f.flush_range(10, 3).expect("flush");
        assert_eq!(seen.0.lock().len(), before);
    }
}
