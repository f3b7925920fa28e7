//! Memory-mapped, preallocated files: CommitLog segments and ConsumeQueue files.
//!
//! A file is named by the 20-digit zero-padded offset of its first byte. It is created under a
//! `.tmp` name, sized, preallocated and synced, then renamed, so a crash never leaves a
//! half-created file under a real name.
//!
//! **Concurrency contract.** A `MappedFile` is shared (`Arc`) between one writer and many
//! readers. The writer only writes at or past the store's published end offset; readers only read
//! below it (the publication is an atomic with release/acquire ordering). Bytes below the
//! published end are never written again while readers exist (recovery runs before any reader).
//! The one exception, cutting a published tail at runtime (a replica's truncation), first lowers
//! the published end and fences readers with a lock they hold while they check the end and copy
//! (the CommitLog's and each ConsumeQueue's `RwLock` of files), so no reader copies a byte while
//! it is zeroed. This is what makes the `unsafe` slice accessors below sound in practice.
//!
//! Directory entries are made durable too: a file created, renamed or deleted, and a directory
//! created, is followed by an fsync of the directory that holds the entry.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use memmap2::{MmapOptions, MmapRaw};
use parking_lot::{Condvar, Mutex};

const PAGE: usize = 4096;

/// The 20-digit file name of a file starting at `offset`.
pub fn file_name(offset: u64) -> String {
    format!("{offset:020}")
}

/// Parses a 20-digit file name back to its offset.
pub fn parse_file_name(name: &str) -> Option<u64> {
    if name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()) {
        name.parse().ok()
    } else {
        None
    }
}

pub struct MappedFile {
    path: PathBuf,
    file: File,
    map: MmapRaw,
    start_offset: u64,
    size: usize,
    /// Bytes from the start whose disk blocks are known to be allocated (see
    /// [`MappedFile::reserve`]).
    allocated: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedFile")
            .field("path", &self.path)
            .field("start_offset", &self.start_offset)
            .field("size", &self.size)
            .finish()
    }
}

/// fsync a directory so a file created, renamed or deleted in it survives a power loss.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(test)]
    SYNCED_DIRS.with(|d| d.borrow_mut().push(dir.to_path_buf()));
    File::open(dir)?.sync_all()?;
    super::durability::note(super::durability::Durable::Dir { path: dir });
    Ok(())
}

#[cfg(test)]
thread_local! {
    /// Directories this thread synced (tests check that deletions and creations are synced).
    pub(crate) static SYNCED_DIRS: std::cell::RefCell<Vec<PathBuf>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// `create_dir_all` whose new directories survive a power loss: after creating them, the
/// parent of each new directory is synced (top-down). Existing directories cost one `stat`.
pub fn create_dir_all_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut p = dir;
    while !p.as_os_str().is_empty() && !p.exists() {
        missing.push(p);
        match p.parent() {
            Some(q) => p = q,
            None => break,
        }
    }
    fs::create_dir_all(dir)?;
    for d in missing.iter().rev() {
        let parent = d
            .parent()
            .filter(|q| !q.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        sync_dir(parent)?;
    }
    Ok(())
}

fn preallocate(file: &File, size: u64) -> io::Result<()> {
    file.set_len(size)?;
    allocate_range(file, 0, size)
}

/// Allocates disk blocks for `[offset, offset + len)` of `file` (within its size), so writes
/// through a mapping there cannot hit a full disk (which would be a SIGBUS, not an error).
fn allocate_range(file: &File, offset: u64, len: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: plain syscall on an owned, open descriptor.
        let rc = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                0,
                offset as libc::off_t,
                len as libc::off_t,
            )
        };
        if rc != 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                // The filesystem cannot preallocate (tmpfs on old kernels, some FUSE): the sparse
                // file still works, it just may hit ENOSPC later.
                Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => {
                    tracing::debug!(error = %err, "fallocate unsupported; file stays sparse")
                }
                _ => return Err(err),
            }
        }
    }
    Ok(())
}

impl MappedFile {
    /// Creates `dir/{start:020}` of `size` bytes (via a `.tmp` name and a rename), preallocated;
    /// with `pretouch`, every page is written once so later appends do not fault.
    pub fn create(
        dir: &Path,
        start_offset: u64,
        size: usize,
        fallocate: bool,
        pretouch: bool,
    ) -> io::Result<MappedFile> {
        create_dir_all_durable(dir)?;
        let path = dir.join(file_name(start_offset));
        let tmp = dir.join(format!("{}.tmp", file_name(start_offset)));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let sized = if fallocate {
            preallocate(&file, size as u64)
        } else {
            file.set_len(size as u64)
        };
        if let Err(e) = sized.and_then(|()| file.sync_all()) {
            // A full disk: give back what a partial preallocation took; nothing was renamed.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        super::durability::note(super::durability::Durable::File { path: &tmp });
        fs::rename(&tmp, &path)?;
        sync_dir(dir)?;
        let map = MmapOptions::new().len(size).map_raw(&file)?;
        let mf = MappedFile {
            path,
            file,
            map,
            start_offset,
            size,
            allocated: std::sync::atomic::AtomicUsize::new(if fallocate { size } else { 0 }),
        };
        if pretouch {
            mf.pretouch();
        }
        Ok(mf)
    }

    /// Opens an existing file; its length must be `size` (a shorter one is extended with zeros,
    /// which only happens to a ConsumeQueue file that was cut short).
    pub fn open(path: &Path, start_offset: u64, size: usize) -> io::Result<MappedFile> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        if len < size as u64 {
            file.set_len(size as u64)?;
        } else if len > size as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is {len} bytes, expected {size}", path.display()),
            ));
        }
        let map = MmapOptions::new().len(size).map_raw(&file)?;
        Ok(MappedFile {
            path: path.to_path_buf(),
            file,
            map,
            start_offset,
            size,
            allocated: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    fn pretouch(&self) {
        let ptr = self.map.as_mut_ptr();
        let mut i = 0;
        while i < self.size {
            // SAFETY: i < size; the file is not yet visible to anyone else.
            unsafe { ptr.add(i).write_volatile(0) };
            i += PAGE;
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes sure the disk blocks of `[0, upto)` are allocated, 64 KiB at a time beyond what
    /// already is: for sparse files (ConsumeQueues), so that writing through the mapping can
    /// never meet a full disk. A full disk is an `ENOSPC` error here, before anything is
    /// written. Writer only.
    pub fn reserve(&self, upto: usize) -> io::Result<()> {
        use std::sync::atomic::Ordering;
        const CHUNK: usize = 64 * 1024;
        let have = self.allocated.load(Ordering::Acquire);
        if upto <= have {
            return Ok(());
        }
        let end = upto.div_ceil(CHUNK).saturating_mul(CHUNK).min(self.size);
        allocate_range(&self.file, have as u64, (end - have) as u64)?;
        self.allocated.fetch_max(end, Ordering::AcqRel);
        Ok(())
    }
    pub fn start_offset(&self) -> u64 {
        self.start_offset
    }
    pub fn size(&self) -> usize {
        self.size
    }
    pub fn end_offset(&self) -> u64 {
        self.start_offset + self.size as u64
    }

    /// Bytes `[pos, pos + len)` of the file.
    ///
    /// # Safety
    /// The range must lie in the file and must not be written while the slice lives (see the
    /// module's concurrency contract). Panics if the range is out of bounds.
    pub unsafe fn slice(&self, pos: usize, len: usize) -> &[u8] {
        assert!(pos.checked_add(len).is_some_and(|e| e <= self.size));
        std::slice::from_raw_parts(self.map.as_ptr().add(pos), len)
    }

    /// Copies `data` to `pos`.
    ///
    /// # Safety
    /// Only the single writer may call this, and only past the published end (nobody reads the
    /// range concurrently). Panics if the range is out of bounds.
    pub unsafe fn write(&self, pos: usize, data: &[u8]) {
        assert!(pos.checked_add(data.len()).is_some_and(|e| e <= self.size));
        std::ptr::copy_nonoverlapping(data.as_ptr(), self.map.as_mut_ptr().add(pos), data.len());
    }

    /// Zeroes `[pos, size)`, touching only the 64 KiB chunks that hold a non-zero byte (a tail
    /// that is already zero is read but not dirtied). Returns the bytes that were non-zero chunks.
    ///
    /// # Safety
    /// As for [`write`](Self::write): no concurrent reader of the range.
    pub unsafe fn zero_tail(&self, pos: usize) -> usize {
        const CHUNK: usize = 64 * 1024;
        let mut at = pos;
        let mut dirtied = 0;
        while at < self.size {
            let len = CHUNK.min(self.size - at);
            let s = self.slice(at, len);
            if s.iter().any(|&b| b != 0) {
                std::ptr::write_bytes(self.map.as_mut_ptr().add(at), 0, len);
                dirtied += len;
            }
            at += len;
        }
        dirtied
    }

    /// Synchronously writes back `[pos, pos + len)` (msync MS_SYNC).
    pub fn flush_range(&self, pos: usize, len: usize) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.map.flush_range(pos, len)?;
        super::durability::note(super::durability::Durable::Range {
            path: &self.path,
            pos: pos as u64,
            len: len as u64,
        });
        Ok(())
    }

    /// Syncs the file's data and metadata.
    pub fn sync_all(&self) -> io::Result<()> {
        self.map.flush()?;
        self.file.sync_all()?;
        super::durability::note(super::durability::Durable::File { path: &self.path });
        Ok(())
    }
}

/// Creates CommitLog segments ahead of the writer on its own thread (RocketMQ's
/// `AllocateMappedFileService`): when the writer takes segment N it asks for N+1, which is
/// preallocated and pre-touched while N fills, so a roll is a hand-over, not a stall.
///
/// [`SegmentAllocator::inline`] (the deterministic simulation, `StoreConfig::blocking_io`) has
/// no thread: a request creates the segment at once on the caller's thread (the writer's, or
/// the opener's), so the files on disk at any instant follow from the operations the caller
/// made, never from how a thread was scheduled.
pub struct SegmentAllocator {
    shared: Arc<AllocShared>,
    tx: Mutex<Option<mpsc::Sender<u64>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// No thread: requests are served on the caller's thread.
    inline: bool,
}

struct AllocShared {
    dir: PathBuf,
    size: usize,
    pretouch: bool,
    /// Start offset -> finished (or failed) segment; `None` = requested, in progress.
    slots: Mutex<HashMap<u64, Option<io::Result<Arc<MappedFile>>>>>,
    done: Condvar,
}

impl SegmentAllocator {
    /// An allocator without a thread: [`request`](Self::request) creates the segment before it
    /// returns (see the type's documentation).
    pub fn inline(dir: PathBuf, size: usize, pretouch: bool) -> SegmentAllocator {
        SegmentAllocator {
            shared: Arc::new(AllocShared {
                dir,
                size,
                pretouch,
                slots: Mutex::new(HashMap::new()),
                done: Condvar::new(),
            }),
            tx: Mutex::new(None),
            thread: Mutex::new(None),
            inline: true,
        }
    }

    pub fn start(dir: PathBuf, size: usize, pretouch: bool) -> io::Result<SegmentAllocator> {
        let shared = Arc::new(AllocShared {
            dir,
            size,
            pretouch,
            slots: Mutex::new(HashMap::new()),
            done: Condvar::new(),
        });
        let (tx, rx) = mpsc::channel::<u64>();
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("store-allocator".into())
            .spawn(move || {
                while let Ok(start) = rx.recv() {
                    let t = Instant::now();
                    let res =
                        MappedFile::create(&worker.dir, start, worker.size, true, worker.pretouch)
                            .map(Arc::new);
                    match &res {
                        Ok(_) => tracing::debug!(
                            start,
                            elapsed_ms = t.elapsed().as_millis() as u64,
                            "segment preallocated"
                        ),
                        Err(e) => tracing::warn!(start, error = %e, "segment preallocation failed"),
                    }
                    worker.slots.lock().insert(start, Some(res));
                    worker.done.notify_all();
                }
            })?;
        Ok(SegmentAllocator {
            shared,
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            inline: false,
        })
    }

    /// Asks for the segment at `start` to be prepared in the background (inline: prepares it
    /// now; a failure is kept and returned by [`take`](Self::take), as a background one is).
    pub fn request(&self, start: u64) {
        let mut slots = self.shared.slots.lock();
        if slots.contains_key(&start) {
            return;
        }
        if self.inline {
            let w = &self.shared;
            let res = MappedFile::create(&w.dir, start, w.size, true, w.pretouch).map(Arc::new);
            if let Err(e) = &res {
                tracing::warn!(start, error = %e, "segment preallocation failed");
            }
            slots.insert(start, Some(res));
            return;
        }
        if let Some(tx) = self.tx.lock().as_ref() {
            if tx.send(start).is_ok() {
                slots.insert(start, None);
            }
        }
    }

    /// The segment at `start`: the one prepared in the background if requested, else created
    /// now. Waits at most `timeout` for a background creation before doing it itself.
    pub fn take(&self, start: u64, timeout: Duration) -> io::Result<Arc<MappedFile>> {
        let deadline = Instant::now() + timeout;
        let mut slots = self.shared.slots.lock();
        loop {
            match slots.get(&start) {
                Some(Some(_)) => {
                    if let Some(Some(res)) = slots.remove(&start) {
                        return res;
                    }
                }
                Some(None) => {
                    if self
                        .shared
                        .done
                        .wait_until(&mut slots, deadline)
                        .timed_out()
                    {
                        break;
                    }
                }
                None => break,
            }
        }
        drop(slots);
        let file = MappedFile::create(
            &self.shared.dir,
            start,
            self.shared.size,
            true,
            self.shared.pretouch,
        )?;
        Ok(Arc::new(file))
    }

    /// Forgets and deletes every segment prepared at or after `start` (waiting for one being
    /// created), so that after a truncation no stale, unlinked or out-of-place segment is handed
    /// out or left on disk. The caller syncs the directory afterwards.
    pub fn discard_from(&self, start: u64) -> io::Result<()> {
        let mut slots = self.shared.slots.lock();
        loop {
            let pending = slots.iter().any(|(s, v)| *s >= start && v.is_none());
            if !pending {
                break;
            }
            self.shared.done.wait(&mut slots);
        }
        let keys: Vec<u64> = slots.keys().copied().filter(|s| *s >= start).collect();
        for k in keys {
            if let Some(Some(Ok(seg))) = slots.remove(&k) {
                match std::fs::remove_file(seg.path()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Stops the thread; unused prepared segments stay on disk (recovery deletes empty ones
    /// past the end).
    pub fn stop(&self) {
        self.tx.lock().take();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Drop for SegmentAllocator {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(file_name(0), "00000000000000000000");
        assert_eq!(file_name(1 << 30), "00000000001073741824");
        assert_eq!(parse_file_name("00000000001073741824"), Some(1 << 30));
        assert_eq!(parse_file_name("0000000000107374182x"), None);
        assert_eq!(parse_file_name("00000000001073741824.tmp"), None);
    }

    #[test]
    fn create_write_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = MappedFile::create(dir.path(), 8192, 8192, true, true).expect("create");
        assert_eq!(f.path(), dir.path().join("00000000000000008192"));
        unsafe { f.write(100, b"hello") };
        f.flush_range(100, 5).expect("flush");
        drop(f);
        let f = MappedFile::open(&dir.path().join(file_name(8192)), 8192, 8192).expect("open");
        assert_eq!(unsafe { f.slice(100, 5) }, b"hello");
        assert_eq!(unsafe { f.zero_tail(50) }, 8192 - 50);
        assert_eq!(unsafe { f.zero_tail(0) }, 0);
        assert!(unsafe { f.slice(0, 8192) }.iter().all(|&b| b == 0));
        assert!(!dir.path().join("00000000000000008192.tmp").exists());
    }

    #[test]
    fn new_directories_and_files_are_synced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nested = dir.path().join("a").join("b");
        SYNCED_DIRS.with(|d| d.borrow_mut().clear());
        let _f = MappedFile::create(&nested, 0, 4096, false, false).expect("create");
        let synced = SYNCED_DIRS.with(|d| d.borrow().clone());
        // The entry of `a` (in the root), of `b` (in `a`) and of the file (in `b`).
        for d in [dir.path().to_path_buf(), dir.path().join("a"), nested] {
            assert!(
                synced.contains(&d),
                "{} not synced: {synced:?}",
                d.display()
            );
        }
    }

    #[test]
    fn allocator_prepares_ahead() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = SegmentAllocator::start(dir.path().to_path_buf(), 4096, true).expect("start");
        a.request(4096);
        let f = a.take(4096, Duration::from_secs(5)).expect("take");
        assert_eq!(f.start_offset(), 4096);
        // Not requested: created on the spot.
        let g = a.take(8192, Duration::from_secs(5)).expect("take");
        assert_eq!(g.size(), 4096);
        a.stop();
    }

    /// The simulation's allocator: a request has created (sized, synced, named) the segment
    /// by the time it returns; `take` hands that one over; `discard_from` deletes it.
    #[test]
    fn inline_allocator_creates_on_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = SegmentAllocator::inline(dir.path().to_path_buf(), 4096, false);
        assert!(a.thread.lock().is_none());
        a.request(4096);
        let path = dir.path().join(file_name(4096));
        assert_eq!(fs::metadata(&path).expect("created").len(), 4096);
        let f = a.take(4096, Duration::ZERO).expect("take");
        assert_eq!(f.path(), path);
        a.request(8192);
        a.discard_from(8192).expect("discard");
        assert!(!dir.path().join(file_name(8192)).exists());
        a.stop();
    }
}
