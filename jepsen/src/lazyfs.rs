//! A FUSE filesystem that loses everything not yet synced when the power is cut, in the spirit
//! of Jepsen's LazyFS. The crash tests kill a process, so the kernel's page cache survives and a
//! missing `fsync` is invisible; a [`LazyFs`] mount makes it visible.
//!
//! **Semantics.** The mount is a passthrough to a backing directory, with one difference: the
//! bytes a `WRITE` carries stay in a volatile in-memory layer (per file, 4 KiB pages) until an
//! `FSYNC` of that file (`fsync(2)`, `fdatasync(2)`, or `msync(2)` of a shared mapping, which
//! reaches FUSE as writeback `WRITE`s followed by `FSYNC`) copies them to the backing file.
//! Reads see the volatile pages laid over the backing bytes, so a running process sees every
//! byte it wrote. A file's size grown by writes is volatile too: the backing file grows only at
//! the sync.
//!
//! **Metadata** applies to the backing directory at once (as in LazyFS): create, mkdir, rename,
//! unlink, rmdir, truncate (`set_len`) and fallocate. One exception, on by default
//! ([`LazyFs::set_lose_unsynced_entries`]): a file or directory *created* since the last `fsync` of
//! its parent directory is removed at a cut (POSIX makes a new entry durable only with that
//! directory fsync), so a missing directory sync after a create shows too. Renames, unlinks and
//! truncations are durable at once (a renamed fresh entry stays fresh under its new name; a rename
//! over a durable entry also makes the entries created before it in its directory durable, as a
//! journaled filesystem's ordered commits do). Closing a file syncs nothing. The backing directory
//! itself is never power-cut, so a sync does not `fsync` the backing file (it only needs to survive
//! our simulated cut).
//!
//! **A power cut** ([`LazyFs::power_cut`]): (a) the filesystem switches to *powered off*: every
//! later `WRITE` is acknowledged and discarded, every `FSYNC` and `FSYNCDIR` fails with `EIO`, and
//! metadata changes fail with `EIO`; (b) the given processes (the caller's own children that use
//! the mount) get SIGKILL and are waited for; (c) the mount is unmounted, which drops the kernel's
//! page cache for it (the dirty pages it writes back on the way are discarded by (a)); (d) the
//! volatile layer is dropped and counted. [`LazyFs::remount`] mounts a clean filesystem over the
//! same backing directory for the restart.
//!
//! A sync never *succeeds* while powered off: a real power cut stops the CPU and the disk at the
//! same instant, so a process can never learn that a sync the disk ignored went well. Here the
//! processes die just after the power goes, and a sync acknowledged in between would let one of
//! them tell a client its data is safe (a broker answering a SYNC_FLUSH send) when it is not:
//! the checks would count that as an acknowledged message lost. Failing it, the process sees a
//! disk error and acknowledges nothing.
//!
//! Needs `/dev/fuse` and the right to mount (root): [`fuse_available`] says why not.
//! Direct I/O is never used, so shared writable `mmap` works (the broker maps its CommitLog and
//! ConsumeQueue files).

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsStr};
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use fuser::{
    AccessFlags, BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, SessionACL, TimeOrNow, WriteFlags,
};

/// Granularity of the volatile layer.
pub const PAGE: u64 = 4096;
const TTL: Duration = Duration::from_secs(1);

/// Why this machine cannot mount a [`LazyFs`].
#[derive(Debug, thiserror::Error)]
pub enum FuseUnavailable {
    #[error("/dev/fuse is missing (modprobe fuse, or run the container with --device /dev/fuse)")]
    NoDevice,
    #[error("mounting a FUSE filesystem without fusermount needs root")]
    NotRoot,
    /// The device is there but cannot be opened read-write.
    #[error("cannot open /dev/fuse: {0}")]
    Open(std::io::Error),
}

/// Why this machine cannot mount a [`LazyFs`], if it cannot.
pub fn fuse_available() -> Result<(), FuseUnavailable> {
    if !Path::new("/dev/fuse").exists() {
        return Err(FuseUnavailable::NoDevice);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(FuseUnavailable::NotRoot);
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(FuseUnavailable::Open)?;
    Ok(())
}

/// Counters of one [`LazyFs`] over all its mounts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LazyFsStats {
    /// Power cuts so far.
    pub cuts: u64,
    /// Written bytes never synced, dropped at the cuts (dirty ranges of the volatile pages).
    pub dropped_bytes: u64,
    /// Files that had unsynced bytes at a cut.
    pub dropped_files: u64,
    /// Bytes of `WRITE`s discarded while powered off (incl. the kernel's writeback at unmount).
    pub discarded_write_bytes: u64,
    /// `FSYNC`s that reached the layer while powered (each persisted a file's volatile pages).
    pub syncs: u64,
    /// Bytes copied to the backing files by syncs (whole pages).
    pub synced_bytes: u64,
    /// Created entries lost at cuts for want of a directory fsync.
    pub lost_entries: u64,
}

/// What one [`LazyFs::power_cut`] dropped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CutReport {
    pub dropped_bytes: u64,
    pub dropped_files: u64,
    pub discarded_write_bytes: u64,
    /// Files and directories created but never made durable by an fsync of their directory,
    /// removed by the cut (relative paths).
    pub lost_entries: Vec<String>,
}

#[derive(Default)]
struct Counters {
    cuts: AtomicU64,
    dropped_bytes: AtomicU64,
    dropped_files: AtomicU64,
    discarded_write_bytes: AtomicU64,
    syncs: AtomicU64,
    synced_bytes: AtomicU64,
    lost_entries: AtomicU64,
}

/// One volatile page: its content and the range written since the last sync.
struct Page {
    data: Box<[u8]>,
    dirty_lo: usize,
    dirty_hi: usize,
}

#[derive(Default)]
struct Volatile {
    pages: BTreeMap<u64, Page>,
    /// The size reads see when writes grew the file past its backing size.
    size: Option<u64>,
}

impl Volatile {
    fn dirty_bytes(&self) -> u64 {
        self.pages
            .values()
            .map(|p| (p.dirty_hi - p.dirty_lo) as u64)
            .sum()
    }
}

struct Inode {
    /// Relative to the backing directory; `None` once unlinked or replaced.
    path: Option<PathBuf>,
    /// The backing file while the kernel holds it open.
    file: Option<Arc<File>>,
    open: u32,
    volatile: Volatile,
}

/// The mutable state of one mount: inode table and the volatile layer.
struct State {
    inodes: HashMap<u64, Inode>,
    by_path: HashMap<PathBuf, u64>,
    next_ino: u64,
    next_fh: u64,
    /// Entries created (files, directories) whose parent directory was not fsynced since.
    fresh: std::collections::BTreeSet<PathBuf>,
}

impl State {
    fn new() -> State {
        let mut inodes = HashMap::new();
        inodes.insert(
            INodeNo::ROOT.0,
            Inode {
                path: Some(PathBuf::new()),
                file: None,
                open: 0,
                volatile: Volatile::default(),
            },
        );
        let mut by_path = HashMap::new();
        by_path.insert(PathBuf::new(), INodeNo::ROOT.0);
        State {
            inodes,
            by_path,
            next_ino: 2,
            next_fh: 1,
            fresh: std::collections::BTreeSet::new(),
        }
    }

    /// `rel` and everything under it are gone: no longer fresh.
    fn forget_fresh(&mut self, rel: &Path) {
        self.fresh.retain(|p| !p.starts_with(rel));
    }

    /// The inode of `rel`, created when first seen.
    fn ino_of(&mut self, rel: &Path) -> u64 {
        if let Some(ino) = self.by_path.get(rel) {
            return *ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(
            ino,
            Inode {
                path: Some(rel.to_path_buf()),
                file: None,
                open: 0,
                volatile: Volatile::default(),
            },
        );
        self.by_path.insert(rel.to_path_buf(), ino);
        ino
    }

    /// `rel` no longer names its inode (unlinked, or replaced by a rename); an inode nobody
    /// holds open is forgotten with its volatile pages (they are unreachable).
    fn detach(&mut self, rel: &Path) {
        let Some(ino) = self.by_path.remove(rel) else {
            return;
        };
        let forget = match self.inodes.get_mut(&ino) {
            Some(inode) => {
                inode.path = None;
                inode.open == 0
            }
            None => false,
        };
        if forget {
            self.inodes.remove(&ino);
        }
    }

    /// `from` was renamed to `to`: the target's old inode is gone; the source (and everything
    /// under it) moves. A rename is durable at once, but what was never made durable in a
    /// directory stays so, except that a rename over a durable entry (durable at once) makes
    /// the entries created before it in the target's directory durable too: a journaled
    /// filesystem commits a directory's updates in order, so the new name never survives a cut
    /// that loses an entry created before it (RocksDB's new MANIFEST, then CURRENT renamed to
    /// point at it).
    fn renamed(&mut self, from: &Path, to: &Path, replaces_durable: bool) {
        if replaces_durable {
            if let Some(dir) = to.parent() {
                self.fresh.retain(|p| p.parent() != Some(dir));
            }
        }
        self.detach(to);
        self.forget_fresh(to);
        let fresh_moved: Vec<PathBuf> = self
            .fresh
            .iter()
            .filter(|p| p.starts_with(from))
            .cloned()
            .collect();
        for old in fresh_moved {
            self.fresh.remove(&old);
            match old.strip_prefix(from) {
                Ok(rest) if rest.as_os_str().is_empty() => {
                    if !replaces_durable {
                        self.fresh.insert(to.to_path_buf());
                    }
                }
                Ok(rest) => {
                    self.fresh.insert(to.join(rest));
                }
                Err(_) => {}
            }
        }
        let moved: Vec<(PathBuf, u64)> = self
            .by_path
            .iter()
            .filter(|(p, _)| p.starts_with(from))
            .map(|(p, ino)| (p.clone(), *ino))
            .collect();
        for (old, ino) in moved {
            self.by_path.remove(&old);
            let new = match old.strip_prefix(from) {
                Ok(rest) if rest.as_os_str().is_empty() => to.to_path_buf(),
                Ok(rest) => to.join(rest),
                Err(_) => continue,
            };
            if let Some(inode) = self.inodes.get_mut(&ino) {
                inode.path = Some(new.clone());
            }
            self.by_path.insert(new, ino);
        }
    }

    /// Forgets everything (a power cut): returns the unsynced bytes and files dropped, and the
    /// entries that were never made durable.
    fn reset(&mut self) -> (u64, u64, std::collections::BTreeSet<PathBuf>) {
        let mut bytes = 0;
        let mut files = 0;
        for inode in self.inodes.values() {
            let dirty = inode.volatile.dirty_bytes();
            if dirty > 0 || inode.volatile.size.is_some() {
                files += 1;
            }
            bytes += dirty;
        }
        let fresh = std::mem::take(&mut self.fresh);
        *self = State::new();
        (bytes, files, fresh)
    }

    fn path_of(&self, ino: u64) -> Result<PathBuf, Errno> {
        match self.inodes.get(&ino) {
            Some(Inode { path: Some(p), .. }) => Ok(p.clone()),
            _ => Err(Errno::ENOENT),
        }
    }
}

/// One mount's state: a remount gets a fresh one, so a session that outlives its unmount (its
/// connection kept alive by a copy of the mount in another mount namespace) can never touch the
/// new mount's volatile layer.
struct Shared {
    backing: PathBuf,
    powered: AtomicBool,
    state: Mutex<State>,
    counters: Arc<Counters>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn powered(&self) -> bool {
        self.powered.load(Ordering::SeqCst)
    }

    fn full(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.backing.clone()
        } else {
            self.backing.join(rel)
        }
    }
}

fn errno(e: &std::io::Error) -> Errno {
    match e.raw_os_error() {
        Some(code) => Errno::from_i32(code),
        None => Errno::EIO,
    }
}

fn time_of(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs.clamp(0, 999_999_999) as u32)
    } else {
        UNIX_EPOCH
    }
}

fn attr_of(ino: u64, meta: &std::fs::Metadata, size: u64) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: meta.blocks().max(size.div_ceil(512)),
        atime: time_of(meta.atime(), meta.atime_nsec()),
        mtime: time_of(meta.mtime(), meta.mtime_nsec()),
        ctime: time_of(meta.ctime(), meta.ctime_nsec()),
        crtime: time_of(meta.ctime(), meta.ctime_nsec()),
        kind: FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile),
        perm: (meta.mode() & 0o7777) as u16,
        nlink: meta.nlink() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: meta.rdev() as u32,
        blksize: 4096,
        flags: 0,
    }
}

/// The filesystem the kernel talks to (one per mount).
struct LazyFsFs {
    shared: Arc<Shared>,
}

impl LazyFsFs {
    /// Metadata and attributes of `ino` (size: the volatile size when writes grew it).
    fn attr(&self, state: &State, ino: u64) -> Result<FileAttr, Errno> {
        let inode = state.inodes.get(&ino).ok_or(Errno::ENOENT)?;
        let meta = match (&inode.path, &inode.file) {
            (_, Some(file)) => file.metadata(),
            (Some(rel), None) => std::fs::symlink_metadata(self.shared.full(rel)),
            (None, None) => return Err(Errno::ENOENT),
        }
        .map_err(|e| errno(&e))?;
        let size = match inode.volatile.size {
            Some(size) if meta.is_file() => size,
            _ => meta.len(),
        };
        Ok(attr_of(ino, &meta, size))
    }

    fn child(
        &self,
        parent: INodeNo,
        name: &OsStr,
    ) -> Result<(MutexGuard<'_, State>, PathBuf), Errno> {
        let state = self.shared.state();
        let parent = state.path_of(parent.0)?;
        Ok((state, parent.join(name)))
    }

    /// The backing file of `ino`: the open one, else opened by path.
    fn backing_file(&self, state: &State, ino: u64) -> Result<Arc<File>, Errno> {
        let inode = state.inodes.get(&ino).ok_or(Errno::ENOENT)?;
        if let Some(file) = &inode.file {
            return Ok(file.clone());
        }
        let rel = inode.path.as_ref().ok_or(Errno::ENOENT)?;
        let full = self.shared.full(rel);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&full)
            .or_else(|_| File::open(&full))
            .map_err(|e| errno(&e))?;
        Ok(Arc::new(file))
    }

    /// Copies the volatile pages of `ino` to its backing file and forgets them.
    fn sync(&self, state: &mut State, ino: u64) -> Result<(), Errno> {
        let has_pages = state
            .inodes
            .get(&ino)
            .is_some_and(|i| !i.volatile.pages.is_empty() || i.volatile.size.is_some());
        if !has_pages {
            return Ok(());
        }
        let file = self.backing_file(state, ino)?;
        let backing_len = file.metadata().map_err(|e| errno(&e))?.len();
        let inode = state.inodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        let size = inode.volatile.size.unwrap_or(backing_len);
        let mut copied = 0u64;
        for (index, page) in &inode.volatile.pages {
            let start = index * PAGE;
            if start >= size {
                continue;
            }
            let len = (size - start).min(PAGE) as usize;
            file.write_all_at(&page.data[..len], start)
                .map_err(|e| errno(&e))?;
            copied += len as u64;
        }
        if size > backing_len {
            file.set_len(size).map_err(|e| errno(&e))?;
        }
        inode.volatile = Volatile::default();
        self.shared.counters.syncs.fetch_add(1, Ordering::Relaxed);
        self.shared
            .counters
            .synced_bytes
            .fetch_add(copied, Ordering::Relaxed);
        Ok(())
    }

    fn write_volatile(
        &self,
        state: &mut State,
        ino: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<(), Errno> {
        let file = self.backing_file(state, ino)?;
        let backing_len = file.metadata().map_err(|e| errno(&e))?.len();
        let inode = state.inodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        let logical = inode.volatile.size.unwrap_or(backing_len);
        let end = offset + data.len() as u64;
        let mut pos = offset;
        while pos < end {
            let index = pos / PAGE;
            let in_page = (pos % PAGE) as usize;
            let n = ((PAGE as usize) - in_page).min((end - pos) as usize);
            let page = match inode.volatile.pages.entry(index) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let mut buf = vec![0u8; PAGE as usize].into_boxed_slice();
                    let start = index * PAGE;
                    // The page's current bytes: backing content up to the logical size.
                    if start < logical.min(backing_len) {
                        let want = (logical.min(backing_len) - start).min(PAGE) as usize;
                        read_full_at(&file, &mut buf[..want], start).map_err(|e| errno(&e))?;
                    }
                    e.insert(Page {
                        data: buf,
                        dirty_lo: in_page,
                        dirty_hi: in_page,
                    })
                }
            };
            let from = (pos - offset) as usize;
            page.data[in_page..in_page + n].copy_from_slice(&data[from..from + n]);
            if page.dirty_lo == page.dirty_hi {
                page.dirty_lo = in_page;
                page.dirty_hi = in_page + n;
            } else {
                page.dirty_lo = page.dirty_lo.min(in_page);
                page.dirty_hi = page.dirty_hi.max(in_page + n);
            }
            pos += n as u64;
        }
        if end > logical {
            inode.volatile.size = Some(end);
        } else if inode.volatile.size.is_none() && logical != backing_len {
            inode.volatile.size = Some(logical);
        }
        Ok(())
    }

    fn read_overlaid(
        &self,
        state: &State,
        ino: u64,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>, Errno> {
        let file = self.backing_file(state, ino)?;
        let backing_len = file.metadata().map_err(|e| errno(&e))?.len();
        let inode = state.inodes.get(&ino).ok_or(Errno::ENOENT)?;
        let logical = inode.volatile.size.unwrap_or(backing_len);
        if offset >= logical {
            return Ok(Vec::new());
        }
        let len = (logical - offset).min(size as u64) as usize;
        let mut buf = vec![0u8; len];
        if offset < backing_len {
            let want = ((backing_len - offset) as usize).min(len);
            read_full_at(&file, &mut buf[..want], offset).map_err(|e| errno(&e))?;
        }
        let end = offset + len as u64;
        for (index, page) in inode.volatile.pages.range(offset / PAGE..=(end - 1) / PAGE) {
            let start = index * PAGE;
            let lo = start.max(offset);
            let hi = (start + PAGE).min(end);
            if lo >= hi {
                continue;
            }
            buf[(lo - offset) as usize..(hi - offset) as usize]
                .copy_from_slice(&page.data[(lo - start) as usize..(hi - start) as usize]);
        }
        Ok(buf)
    }

    /// Truncation: applied to the backing file at once; volatile pages past it dropped.
    fn truncate(&self, state: &mut State, ino: u64, size: u64) -> Result<(), Errno> {
        let file = self.backing_file(state, ino)?;
        file.set_len(size).map_err(|e| errno(&e))?;
        let inode = state.inodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        let first_gone = size.div_ceil(PAGE);
        inode.volatile.pages.retain(|index, _| *index < first_gone);
        if !size.is_multiple_of(PAGE) {
            if let Some(page) = inode.volatile.pages.get_mut(&(size / PAGE)) {
                let cut = (size % PAGE) as usize;
                page.data[cut..].fill(0);
                page.dirty_hi = page.dirty_hi.min(cut);
                page.dirty_lo = page.dirty_lo.min(page.dirty_hi);
            }
        }
        inode.volatile.size = None;
        Ok(())
    }

    fn entry_reply(&self, state: &mut State, rel: &Path, reply: ReplyEntry) {
        let ino = state.ino_of(rel);
        match self.attr(state, ino) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }
}

fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break, // past the end: the rest stays zero
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Removes the entries `fresh` (relative to `backing`), deepest first; returns those removed.
fn lose_entries(backing: &Path, fresh: std::collections::BTreeSet<PathBuf>) -> Vec<String> {
    let mut lost_entries = Vec::new();
    let mut fresh: Vec<PathBuf> = fresh.into_iter().collect();
    fresh.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for rel in fresh {
        let full = backing.join(&rel);
        let removed = match std::fs::symlink_metadata(&full) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&full),
            Ok(_) => std::fs::remove_file(&full),
            Err(_) => continue,
        };
        match removed {
            Ok(()) => lost_entries.push(rel.display().to_string()),
            Err(e) => {
                tracing::warn!(path = %full.display(), error = %e, "lazyfs cannot drop an unsynced entry")
            }
        }
    }
    lost_entries
}

/// `renameat2(2)` of two absolute paths with `flags`.
fn renameat2(from: &Path, to: &Path, flags: u32) -> Result<(), Errno> {
    let (Ok(from_c), Ok(to_c)) = (cstring(from), cstring(to)) else {
        return Err(Errno::EINVAL);
    };
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from_c.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            flags,
        )
    };
    if rc != 0 {
        return Err(errno(&std::io::Error::last_os_error()));
    }
    Ok(())
}

fn cstring(path: &Path) -> Result<CString, Errno> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

impl Filesystem for LazyFsFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let (mut state, rel) = match self.child(parent, name) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        if let Err(e) = std::fs::symlink_metadata(self.shared.full(&rel)) {
            return reply.error(errno(&e));
        }
        self.entry_reply(&mut state, &rel, reply);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let state = self.shared.state();
        match self.attr(&state, ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut state = self.shared.state();
        if (mode.is_some() || size.is_some()) && !self.shared.powered() {
            return reply.error(Errno::EIO);
        }
        if let Some(mode) = mode {
            let rel = match state.path_of(ino.0) {
                Ok(rel) => rel,
                Err(e) => return reply.error(e),
            };
            let perms = std::fs::Permissions::from_mode(mode & 0o7777);
            if let Err(e) = std::fs::set_permissions(self.shared.full(&rel), perms) {
                return reply.error(errno(&e));
            }
        }
        if let Some(size) = size {
            if let Err(e) = self.truncate(&mut state, ino.0, size) {
                return reply.error(e);
            }
        }
        match self.attr(&state, ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let state = self.shared.state();
        match state.path_of(ino.0) {
            Ok(rel) => match std::fs::read_link(self.shared.full(&rel)) {
                Ok(target) => reply.data(target.as_os_str().as_bytes()),
                Err(e) => reply.error(errno(&e)),
            },
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        if !self.shared.powered() {
            return reply.error(Errno::EIO);
        }
        let (mut state, rel) = match self.child(parent, name) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        let full = self.shared.full(&rel);
        if let Err(e) = std::fs::create_dir(&full) {
            return reply.error(errno(&e));
        }
        let _ = std::fs::set_permissions(
            &full,
            std::fs::Permissions::from_mode(mode & !umask & 0o7777),
        );
        state.detach(&rel);
        state.fresh.insert(rel.clone());
        self.entry_reply(&mut state, &rel, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if !self.shared.powered() {
            return reply.error(Errno::EIO);
        }
        let (mut state, rel) = match self.child(parent, name) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        match std::fs::remove_file(self.shared.full(&rel)) {
            Ok(()) => {
                state.detach(&rel);
                state.forget_fresh(&rel);
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if !self.shared.powered() {
            return reply.error(Errno::EIO);
        }
        let (mut state, rel) = match self.child(parent, name) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        match std::fs::remove_dir(self.shared.full(&rel)) {
            Ok(()) => {
                state.detach(&rel);
                state.forget_fresh(&rel);
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if !self.shared.powered() {
            return reply.error(Errno::EIO);
        }
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            return reply.error(Errno::EINVAL);
        }
        let (mut state, from) = match self.child(parent, name) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        let to = match state.path_of(newparent.0) {
            Ok(p) => p.join(newname),
            Err(e) => return reply.error(e),
        };
        // A fresh entry renamed over a durable one: after a cut the name holds either file,
        // never nothing, so the result counts as durable (the new file).
        let replaces_durable =
            std::fs::symlink_metadata(self.shared.full(&to)).is_ok() && !state.fresh.contains(&to);
        if let Err(e) = renameat2(
            &self.shared.full(&from),
            &self.shared.full(&to),
            flags.bits(),
        ) {
            return reply.error(e);
        }
        state.renamed(&from, &to, replaces_durable);
        reply.ok()
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut state = self.shared.state();
        let file = match self.backing_file(&state, ino.0) {
            Ok(file) => file,
            Err(e) => return reply.error(e),
        };
        let fh = state.next_fh;
        state.next_fh += 1;
        match state.inodes.get_mut(&ino.0) {
            Some(inode) => {
                inode.file = Some(file);
                inode.open += 1;
                reply.opened(FileHandle(fh), FopenFlags::empty())
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        if !self.shared.powered() {
            return reply.error(Errno::EIO);
        }
        let (mut state, rel) = match self.child(parent, name) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        let full = self.shared.full(&rel);
        let mut options = OpenOptions::new();
        options
            .read(true)
            .write(true)
            .create(true)
            .mode(mode & !umask & 0o7777);
        if flags & libc::O_EXCL != 0 {
            options.create_new(true);
        }
        if flags & libc::O_TRUNC != 0 {
            options.truncate(true);
        }
        let existed = full.exists();
        let file = match options.open(&full) {
            Ok(file) => Arc::new(file),
            Err(e) => return reply.error(errno(&e)),
        };
        // A fresh file: whatever inode had this name before is gone.
        state.detach(&rel);
        if !existed {
            state.fresh.insert(rel.clone());
        }
        let ino = state.ino_of(&rel);
        let fh = state.next_fh;
        state.next_fh += 1;
        if let Some(inode) = state.inodes.get_mut(&ino) {
            inode.file = Some(file);
            inode.open += 1;
        }
        match self.attr(&state, ino) {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let state = self.shared.state();
        match self.read_overlaid(&state, ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if !self.shared.powered() {
            self.shared
                .counters
                .discarded_write_bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            return reply.written(data.len() as u32);
        }
        let mut state = self.shared.state();
        match self.write_volatile(&mut state, ino.0, offset, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) persists nothing.
        reply.ok()
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut state = self.shared.state();
        let forget = match state.inodes.get_mut(&ino.0) {
            Some(inode) => {
                inode.open = inode.open.saturating_sub(1);
                if inode.open == 0 {
                    inode.file = None;
                }
                inode.open == 0 && inode.path.is_none()
            }
            None => false,
        };
        if forget {
            state.inodes.remove(&ino.0);
        }
        reply.ok()
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        if !self.shared.powered() {
            // Never acknowledge a sync that the cut ignores (see the module documentation).
            return reply.error(Errno::EIO);
        }
        let mut state = self.shared.state();
        match self.sync(&mut state, ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut state = self.shared.state();
        let rel = match state.path_of(ino.0) {
            Ok(rel) => rel,
            Err(e) => return reply.error(e),
        };
        let entries = match std::fs::read_dir(self.shared.full(&rel)) {
            Ok(entries) => entries,
            Err(e) => return reply.error(errno(&e)),
        };
        let mut list: Vec<(u64, FileType, std::ffi::OsString)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (INodeNo::ROOT.0, FileType::Directory, "..".into()),
        ];
        for entry in entries.flatten() {
            let kind = entry
                .file_type()
                .ok()
                .and_then(FileType::from_std)
                .unwrap_or(FileType::RegularFile);
            let child = state.ino_of(&rel.join(entry.file_name()));
            list.push((child, kind, entry.file_name()));
        }
        for (i, (child, kind, name)) in list.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok()
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        if !self.shared.powered() {
            return reply.error(Errno::EIO);
        }
        // The directory's new entries are durable from now on.
        let mut state = self.shared.state();
        if let Ok(dir) = state.path_of(ino.0) {
            state.fresh.retain(|p| p.parent() != Some(dir.as_path()));
        }
        reply.ok()
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let Ok(path) = cstring(&self.shared.backing) else {
            return reply.error(Errno::EINVAL);
        };
        // SAFETY: statvfs fills the zeroed struct; the path is a valid C string.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
            return reply.error(errno(&std::io::Error::last_os_error()));
        }
        reply.statfs(
            st.f_blocks,
            st.f_bfree,
            st.f_bavail,
            st.f_files,
            st.f_ffree,
            st.f_bsize as u32,
            st.f_namemax as u32,
            st.f_frsize as u32,
        )
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        // No extended attributes (the kernel asks for security.capability on writes).
        reply.error(Errno::from_i32(libc::ENODATA))
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0)
        } else {
            reply.data(&[])
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok()
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if !self.shared.powered() {
            return reply.error(Errno::EIO);
        }
        let mut state = self.shared.state();
        let file = match self.backing_file(&state, ino.0) {
            Ok(file) => file,
            Err(e) => return reply.error(e),
        };
        // SAFETY: a valid open descriptor; fallocate has no memory arguments.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), mode, offset as i64, length as i64) };
        if rc != 0 {
            return reply.error(errno(&std::io::Error::last_os_error()));
        }
        // Allocation is metadata (applied at once); a volatile size below the new end grows.
        if mode & libc::FALLOC_FL_KEEP_SIZE == 0 {
            if let Some(inode) = state.inodes.get_mut(&ino.0) {
                if let Some(size) = inode.volatile.size.as_mut() {
                    *size = (*size).max(offset + length);
                }
            }
        }
        reply.ok()
    }
}

/// A mounted (or power-cut) [`LazyFs`]: owns the FUSE session; dropping it unmounts.
pub struct LazyFs {
    backing: PathBuf,
    mountpoint: PathBuf,
    shared: Arc<Shared>,
    session: Option<BackgroundSession>,
    /// Sessions whose connection outlived their unmount (see [`Shared`]); never dropped while
    /// a newer mount lives at the same path, since fuser's drop would unmount that path.
    lingering: Vec<BackgroundSession>,
    /// Whether a cut removes entries created without a later fsync of their directory.
    lose_unsynced_entries: bool,
}

impl std::fmt::Debug for LazyFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyFs")
            .field("backing", &self.backing)
            .field("mountpoint", &self.mountpoint)
            .field("mounted", &self.session.is_some())
            .finish()
    }
}

impl LazyFs {
    /// Mounts a lazy view of `backing` at `mountpoint` (both existing directories).
    pub fn mount(backing: &Path, mountpoint: &Path) -> anyhow::Result<LazyFs> {
        if let Err(why) = fuse_available() {
            bail!("cannot mount a LazyFs: {why}");
        }
        let backing = backing
            .canonicalize()
            .with_context(|| format!("backing directory {}", backing.display()))?;
        let mountpoint = mountpoint
            .canonicalize()
            .with_context(|| format!("mount point {}", mountpoint.display()))?;
        let shared = Arc::new(Shared {
            backing: backing.clone(),
            powered: AtomicBool::new(true),
            state: Mutex::new(State::new()),
            counters: Arc::new(Counters::default()),
        });
        let mut fs = LazyFs {
            backing,
            mountpoint,
            shared,
            session: None,
            lingering: Vec::new(),
            lose_unsynced_entries: true,
        };
        fs.start_session()?;
        Ok(fs)
    }

    fn start_session(&mut self) -> anyhow::Result<()> {
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("rocketraft-lazyfs".to_string()),
            MountOption::Subtype("lazyfs".to_string()),
            MountOption::RW,
            MountOption::NoAtime,
        ];
        config.acl = SessionACL::Owner;
        let fs = LazyFsFs {
            shared: self.shared.clone(),
        };
        let session = fuser::spawn_mount(fs, &self.mountpoint, &config).with_context(|| {
            format!(
                "cannot mount the LazyFs over {} at {}",
                self.backing.display(),
                self.mountpoint.display()
            )
        })?;
        self.session = Some(session);
        tracing::info!(
            backing = %self.backing.display(),
            mountpoint = %self.mountpoint.display(),
            "lazyfs mounted"
        );
        Ok(())
    }

    /// Whether a cut also removes the files and directories created since the last fsync of
    /// their directory (POSIX: a new entry is durable only then). On by default; off, new
    /// entries survive every cut, as in Jepsen's LazyFS.
    pub fn set_lose_unsynced_entries(&mut self, on: bool) {
        self.lose_unsynced_entries = on;
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    pub fn backing(&self) -> &Path {
        &self.backing
    }

    pub fn is_mounted(&self) -> bool {
        self.session.is_some()
    }

    /// Counters over every mount of this filesystem.
    pub fn stats(&self) -> LazyFsStats {
        let c = &self.shared.counters;
        LazyFsStats {
            cuts: c.cuts.load(Ordering::Relaxed),
            dropped_bytes: c.dropped_bytes.load(Ordering::Relaxed),
            dropped_files: c.dropped_files.load(Ordering::Relaxed),
            discarded_write_bytes: c.discarded_write_bytes.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            synced_bytes: c.synced_bytes.load(Ordering::Relaxed),
            lost_entries: c.lost_entries.load(Ordering::Relaxed),
        }
    }

    /// Bytes written but not yet synced, right now.
    pub fn unsynced_bytes(&self) -> u64 {
        let state = self.shared.state();
        state
            .inodes
            .values()
            .map(|i| i.volatile.dirty_bytes())
            .sum()
    }

    /// Step (a) of a cut alone: from now on every write and sync is discarded and metadata
    /// changes fail, while the mount stays. For a store run in the caller's own process: power
    /// off, stop the store, then [`LazyFs::power_cut`] with no pids.
    pub fn power_off(&self) {
        self.shared.powered.store(false, Ordering::SeqCst);
    }

    /// Cuts the power: discard every later write and sync, SIGKILL `pids` (processes the caller
    /// started that use the mount) and wait until they are gone, unmount (dropping the kernel's
    /// page cache), and drop every unsynced byte. [`LazyFs::remount`] brings it back.
    pub fn power_cut(&mut self, pids: &[u32]) -> anyhow::Result<CutReport> {
        let discarded_before = self
            .shared
            .counters
            .discarded_write_bytes
            .load(Ordering::Relaxed);
        self.shared.powered.store(false, Ordering::SeqCst);
        for pid in pids {
            // SAFETY: kill has no memory arguments; the pid is one the caller started.
            unsafe {
                libc::kill(*pid as libc::pid_t, libc::SIGKILL);
            }
        }
        for pid in pids {
            wait_gone(*pid, Duration::from_secs(10))?;
        }
        self.unmount()?;
        let (dropped_bytes, dropped_files, fresh) = self.shared.state().reset();
        // Entries never made durable by an fsync of their directory vanish, deepest first.
        let lost_entries = if self.lose_unsynced_entries {
            lose_entries(&self.backing, fresh)
        } else {
            Vec::new()
        };
        self.shared
            .counters
            .lost_entries
            .fetch_add(lost_entries.len() as u64, Ordering::Relaxed);
        let c = &self.shared.counters;
        c.cuts.fetch_add(1, Ordering::Relaxed);
        c.dropped_bytes.fetch_add(dropped_bytes, Ordering::Relaxed);
        c.dropped_files.fetch_add(dropped_files, Ordering::Relaxed);
        let report = CutReport {
            dropped_bytes,
            dropped_files,
            lost_entries,
            discarded_write_bytes: c.discarded_write_bytes.load(Ordering::Relaxed)
                - discarded_before,
        };
        tracing::info!(
            mountpoint = %self.mountpoint.display(),
            killed = ?pids,
            lost_entries = ?report.lost_entries,
            dropped_bytes = report.dropped_bytes,
            dropped_files = report.dropped_files,
            discarded_write_bytes = report.discarded_write_bytes,
            "lazyfs power cut"
        );
        Ok(report)
    }

    /// Mounts again after a [`LazyFs::power_cut`] (a no-op while mounted): a clean filesystem
    /// over what the backing directory kept.
    pub fn remount(&mut self) -> anyhow::Result<()> {
        if self.session.is_some() {
            return Ok(());
        }
        self.shared = Arc::new(Shared {
            backing: self.backing.clone(),
            powered: AtomicBool::new(true),
            state: Mutex::new(State::new()),
            counters: self.shared.counters.clone(),
        });
        self.start_session()
    }

    /// Unmounts (waiting out a busy mount for a few seconds, then detaching it lazily) and
    /// ends the FUSE session. Volatile bytes stay until [`LazyFs::power_cut`] or a remount.
    fn unmount(&mut self) -> anyhow::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let path =
            cstring(&self.mountpoint).map_err(|_| anyhow::anyhow!("mount point path has a NUL"))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut detached = false;
        loop {
            // SAFETY: a valid C string.
            if unsafe { libc::umount2(path.as_ptr(), 0) } == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EBUSY) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Some(libc::EINVAL) | Some(libc::ENOENT) => break, // not mounted any more
                _ => {
                    tracing::warn!(mountpoint = %self.mountpoint.display(), error = %err, "lazyfs unmount failed; detaching it");
                    // SAFETY: a valid C string.
                    unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
                    detached = true;
                    break;
                }
            }
        }
        // The session ends when the kernel drops the connection (DESTROY or ENODEV). It does
        // not while a copy of the mount lives in another mount namespace: keep it aside then.
        let deadline = Instant::now() + Duration::from_secs(3);
        while !session.guard.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if session.guard.is_finished() {
            if let Err(e) = session.join() {
                tracing::debug!(error = %e, "lazyfs session end");
            }
        } else {
            tracing::warn!(mountpoint = %self.mountpoint.display(), "lazyfs session outlives its unmount (a copy of the mount in another mount namespace); kept aside");
            self.lingering.push(session);
        }
        tracing::info!(mountpoint = %self.mountpoint.display(), detached, "lazyfs unmounted");
        if detached {
            bail!(
                "{} was busy: detached lazily (a process outside the cut still uses it)",
                self.mountpoint.display()
            );
        }
        Ok(())
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            tracing::warn!(error = %e, "lazyfs unmount at drop");
        }
        // Nothing is mounted here any more; a lingering session's thread ends when the last
        // copy of its mount goes. Its handle is leaked rather than dropped (the drop would try
        // an unmount of the path) or joined (which could wait for other processes).
        for session in self.lingering.drain(..) {
            std::mem::forget(session);
        }
    }
}

/// Waits until `pid` has exited (gone, or a zombie whose files and mappings are released).
fn wait_gone(pid: u32, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return Ok(()),
            Ok(stat) => {
                // The state follows the parenthesised command name.
                let state = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.trim_start().chars().next());
                if matches!(state, Some('Z') | Some('X')) {
                    return Ok(());
                }
            }
        }
        if Instant::now() >= deadline {
            bail!("process {pid} still alive {timeout:?} after SIGKILL");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn setup() -> Option<(tempfile::TempDir, tempfile::TempDir, LazyFs)> {
        if let Err(why) = fuse_available() {
            panic!("lazyfs tests need FUSE (root and /dev/fuse): {why}");
        }
        let backing = tempfile::tempdir().ok()?;
        let mnt = tempfile::tempdir().ok()?;
        let fs = LazyFs::mount(backing.path(), mnt.path()).expect("mount");
        Some((backing, mnt, fs))
    }

    fn sync_dir(path: &Path) {
        File::open(path)
            .and_then(|d| d.sync_all())
            .expect("fsync the directory");
    }

    #[test]
    fn entries_created_without_a_directory_fsync_are_lost() {
        let (_backing, mnt, mut fs) = setup().expect("temp dirs");
        let d = mnt.path().join("d");
        std::fs::create_dir(&d).expect("mkdir");
        sync_dir(mnt.path());
        let kept = d.join("kept");
        let lost = d.join("lost");
        let mut f = File::create(&kept).expect("create");
        f.write_all(b"k").expect("write");
        f.sync_all().expect("fsync");
        sync_dir(&d);
        // RocksDB's sequence: a new file (its MANIFEST), then a fresh file renamed over a
        // durable one (CURRENT, pointing at it). The rename replaces the old file for good
        // (never leaves nothing), and with it the entries created before it in that directory
        // (a journaled filesystem commits a directory's updates in order).
        let manifest = d.join("manifest");
        std::fs::write(&manifest, b"m").expect("write");
        File::open(&manifest)
            .and_then(|t| t.sync_all())
            .expect("fsync");
        let tmp = d.join("kept.tmp");
        std::fs::write(&tmp, b"k2").expect("write");
        File::open(&tmp).and_then(|t| t.sync_all()).expect("fsync");
        std::fs::rename(&tmp, &kept).expect("rename");
        // Created after the rename, never made durable.
        let mut g = File::create(&lost).expect("create");
        g.write_all(b"l").expect("write");
        g.sync_all().expect("fsync the file but not its directory");
        std::fs::create_dir(mnt.path().join("newdir")).expect("mkdir");
        // A fresh file renamed to a new name stays fresh.
        let fresh_tmp = d.join("fresh.tmp");
        std::fs::write(&fresh_tmp, b"f").expect("write");
        std::fs::rename(&fresh_tmp, d.join("fresh")).expect("rename");
        drop((f, g));
        let report = fs.power_cut(&[]).expect("cut");
        assert_eq!(
            report.lost_entries,
            vec![
                "d/fresh".to_string(),
                "d/lost".to_string(),
                "newdir".to_string()
            ]
        );
        fs.remount().expect("remount");
        assert_eq!(std::fs::read(&kept).expect("read"), b"k2");
        assert_eq!(std::fs::read(&manifest).expect("read"), b"m");
        assert!(!lost.exists());
        assert!(!d.join("fresh").exists());
        assert!(!mnt.path().join("newdir").exists());
    }

    /// Between the power going and the processes dying, no sync may look successful: a
    /// process could otherwise acknowledge data the cut drops.
    #[test]
    fn no_sync_succeeds_once_the_power_is_off() {
        let (_backing, mnt, mut fs) = setup().expect("temp dirs");
        let path = mnt.path().join("f");
        let mut f = File::create(&path).expect("create");
        sync_dir(mnt.path());
        f.write_all(b"before").expect("write");
        f.sync_all().expect("fsync while powered");
        fs.power_off();
        f.write_all(b" after").expect("a write is still taken");
        let err = f.sync_all().expect_err("an fsync while powered off");
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
        let dir = File::open(mnt.path()).expect("open the directory");
        assert!(
            dir.sync_all().is_err(),
            "a directory fsync while powered off"
        );
        drop((f, dir));
        fs.power_cut(&[]).expect("cut");
        fs.remount().expect("remount");
        assert_eq!(std::fs::read(&path).expect("read"), b"before");
    }

    #[test]
    fn unsynced_writes_are_lost_and_synced_ones_kept() {
        let (_backing, mnt, mut fs) = setup().expect("temp dirs");
        let synced = mnt.path().join("synced");
        let lazy = mnt.path().join("lazy");
        {
            let mut f = File::create(&synced).expect("create");
            f.write_all(b"durable").expect("write");
            f.sync_all().expect("fsync");
            f.write_all(b" and volatile").expect("write");
            let mut g = File::create(&lazy).expect("create");
            g.write_all(&vec![7u8; 10_000]).expect("write");
        }
        // A running process sees its writes.
        let mut text = String::new();
        File::open(&synced)
            .and_then(|mut f| f.read_to_string(&mut text))
            .expect("read");
        assert_eq!(text, "durable and volatile");
        assert_eq!(std::fs::metadata(&lazy).expect("stat").len(), 10_000);
        sync_dir(mnt.path());
        let report = fs.power_cut(&[]).expect("cut");
        assert!(report.dropped_bytes >= 10_000 + 13, "{report:?}");
        fs.remount().expect("remount");
        assert_eq!(std::fs::read(&synced).expect("read"), b"durable");
        // Metadata survives (created at once), the data does not.
        assert_eq!(std::fs::metadata(&lazy).expect("stat").len(), 0);
        assert_eq!(fs.stats().cuts, 1);
    }

    #[test]
    fn shared_mmap_survives_only_after_msync() {
        let (_backing, mnt, mut fs) = setup().expect("temp dirs");
        let path = mnt.path().join("mapped");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("create");
        file.set_len(3 * PAGE).expect("set_len");
        sync_dir(mnt.path());
        // SAFETY: the file is ours and not truncated while mapped.
        let len = (3 * PAGE) as usize;
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(addr, libc::MAP_FAILED);
        // SAFETY: the mapping is len bytes long.
        let map = unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len) };
        map[..5].copy_from_slice(b"first");
        // SAFETY: msync of our mapping.
        assert_eq!(unsafe { libc::msync(addr, len, libc::MS_SYNC) }, 0);
        map[PAGE as usize..PAGE as usize + 6].copy_from_slice(b"second");
        // SAFETY: the mapping is ours.
        unsafe { libc::munmap(addr, len) };
        drop(file);
        fs.power_cut(&[]).expect("cut");
        fs.remount().expect("remount");
        let data = std::fs::read(&path).expect("read");
        assert_eq!(data.len(), len);
        assert_eq!(&data[..5], b"first");
        assert_eq!(&data[PAGE as usize..PAGE as usize + 6], &[0u8; 6]);
    }

    #[test]
    fn rename_and_truncate_apply_at_once() {
        let (_backing, mnt, mut fs) = setup().expect("temp dirs");
        std::fs::create_dir(mnt.path().join("d")).expect("mkdir");
        let tmp = mnt.path().join("d/f.tmp");
        let mut f = File::create(&tmp).expect("create");
        f.write_all(b"0123456789").expect("write");
        f.sync_all().expect("sync");
        f.set_len(4).expect("truncate");
        drop(f);
        std::fs::rename(&tmp, mnt.path().join("d/f")).expect("rename");
        std::fs::rename(mnt.path().join("d"), mnt.path().join("e")).expect("rename dir");
        sync_dir(&mnt.path().join("e"));
        sync_dir(mnt.path());
        assert_eq!(
            std::fs::read(mnt.path().join("e/f")).expect("read"),
            b"0123"
        );
        fs.power_cut(&[]).expect("cut");
        fs.remount().expect("remount");
        assert_eq!(
            std::fs::read(mnt.path().join("e/f")).expect("read"),
            b"0123"
        );
        assert!(!mnt.path().join("d").exists());
    }
}
