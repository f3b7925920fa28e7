//! Power loss of a broker replica: what its disk holds after the power goes, from what its
//! store made durable.
//!
//! The store reports every sync that returned (`rocketraft_broker::store::durability`): a
//! mapped range (msync), a whole file (fsync), a directory's entries (fsync of the directory).
//! [`DiskModel`] keeps, per file (by inode and creation time, so a file renamed keeps its
//! history and a reused inode starts afresh), the bytes those syncs covered: its *durable
//! image*, read from the file right after each sync, and its synced length; and per directory
//! the entries (name -> inode, files and subdirectories) its last sync saw. Before the process
//! is stopped for a power loss the model is frozen ([`DiskModel::freeze`]): what the store
//! syncs while it stops (a flusher draining its queue, a writer finishing its operation) is
//! not durable, the power went first. The simulation's stores do nothing on their own, so it
//! reports any such sync as a harness failure ([`DiskModel::take_late`]): a sync after the
//! freeze whose file operations went on (a rename after a `.tmp`'s sync) would leave a state
//! no real power loss leaves. At the power loss ([`DiskModel::power_loss`]) every file
//! keeps its image, and past it (bytes written since, never synced), drawn per 4 KiB page from
//! the seed: the page's new bytes kept, lost (the image there: a preallocated segment reads
//! zeros), or torn (a prefix kept, then garbage). A length changed since the last fsync may
//! revert to the synced one. Directory entries changed since the directory's last sync may be
//! undone, drawn per entry: a file or subdirectory created since may vanish (a subdirectory
//! with everything in it), a file removed may come back with its durable image, a file renamed
//! over another may turn back into the old one. A directory never synced that did not exist
//! at the baseline has no durable entries at all. Afterwards everything on disk is durable
//! (the model starts again from it).
//!
//! Not modelled: a removed subdirectory never comes back.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use parking_lot::Mutex;
use rocketraft_broker::store::durability::{DurabilityObserver, Durable};

use crate::rng::SimRng;

/// The page size of the per-page draws.
const PAGE: usize = 4096;

/// A file's identity: its inode and creation time (a reused inode is another file).
type FileId = (u64, u128);

fn file_id(meta: &fs::Metadata) -> FileId {
    let born = meta
        .created()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    (meta.ino(), born)
}

/// One replica's disk: what its syncs made durable.
#[derive(Debug, Default)]
pub struct DiskModel {
    inner: Mutex<DiskInner>,
}

/// A directory entry: the file's identity, and whether it is a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    id: FileId,
    dir: bool,
}

/// What a file's syncs made durable.
#[derive(Debug, Default)]
struct Image {
    /// The bytes its syncs covered (zeros elsewhere).
    bytes: Vec<u8>,
    /// Its length at its last fsync (or grown to the end of a synced range).
    len: u64,
}

#[derive(Debug, Default)]
struct DiskInner {
    /// Per file: what its syncs made durable.
    images: HashMap<FileId, Image>,
    /// Per directory synced at least once, or present at the baseline: its entries at the
    /// last sync.
    listings: HashMap<PathBuf, BTreeMap<OsString, Entry>>,
    /// Syncs reported that could not be read back (the file vanished meanwhile).
    unreadable: u64,
    /// The power went: syncs reported from now on are not durable.
    frozen: bool,
    /// Syncs reported while frozen, until taken ([`DiskModel::take_late`]).
    late: Vec<String>,
}

/// What a power loss did to one file, for the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loss {
    /// Of the unsynced bytes `[from, to)`, per 4 KiB page: `kept` pages kept, `lost` lost (the
    /// durable image there), `torn` torn (a prefix kept, then garbage); `len` is `Some((now,
    /// synced))` when the length reverted to the synced one.
    Pages {
        from: u64,
        to: u64,
        kept: u32,
        lost: u32,
        torn: u32,
        len: Option<(u64, u64)>,
    },
    /// A file or directory created since its directory's last sync vanished.
    Vanished,
    /// A file removed since its directory's last sync came back.
    Back,
    /// A rename over this name since the directory's last sync was undone.
    Unrenamed,
}

impl Loss {
    /// The kind of loss, for the counts (`lost`: some unsynced page lost and none torn).
    pub fn kind(&self) -> &'static str {
        match self {
            Loss::Pages { torn, .. } if *torn > 0 => "torn",
            Loss::Pages { lost, .. } if *lost > 0 => "lost",
            Loss::Pages { .. } => "length",
            Loss::Vanished => "vanished",
            Loss::Back => "back",
            Loss::Unrenamed => "unrenamed",
        }
    }
}

/// What a file's path says it is: `commitlog`, `consumequeue` or `other`.
pub fn file_type(rel: &Path) -> &'static str {
    match rel.components().next().map(|c| c.as_os_str()) {
        Some(c) if c == "commitlog" => "commitlog",
        Some(c) if c == "consumequeue" => "consumequeue",
        _ => "other",
    }
}

fn read_all(path: &Path) -> io::Result<(FileId, Vec<u8>)> {
    let meta = fs::metadata(path)?;
    Ok((file_id(&meta), fs::read(path)?))
}

/// The regular files and subdirectories of `dir` by name.
fn entries(dir: &Path) -> io::Result<BTreeMap<OsString, Entry>> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let meta = e.metadata()?;
        if meta.is_file() || meta.is_dir() {
            out.insert(
                e.file_name(),
                Entry {
                    id: file_id(&meta),
                    dir: meta.is_dir(),
                },
            );
        }
    }
    Ok(out)
}

/// The directories under `root` (itself included), sorted.
fn dirs_under(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let mut subs: Vec<PathBuf> = fs::read_dir(&out[i])?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        subs.sort();
        out.extend(subs);
        i += 1;
    }
    Ok(out)
}

/// FNV-1a of a path's bytes: a file's draws depend on its name, not on which other files
/// exist (a segment the allocator thread prepared ahead, or not yet, shifts no other file's).
fn name_hash(rel: &Path) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in rel.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl DurabilityObserver for DiskModel {
    fn durable(&self, event: &Durable<'_>) {
        let mut g = self.inner.lock();
        if g.frozen {
            g.late.push(format!("{event:?}"));
            return;
        }
        let ok = match *event {
            Durable::Range { path, pos, len } => (|| -> io::Result<()> {
                let f = fs::File::open(path)?;
                let id = file_id(&f.metadata()?);
                let mut buf = vec![0u8; len as usize];
                f.read_exact_at(&mut buf, pos)?;
                let image = g.images.entry(id).or_default();
                let end = (pos + len) as usize;
                if image.bytes.len() < end {
                    image.bytes.resize(end, 0);
                }
                image.bytes[pos as usize..end].copy_from_slice(&buf);
                image.len = image.len.max(end as u64);
                Ok(())
            })(),
            Durable::File { path } => read_all(path).map(|(id, bytes)| {
                let len = bytes.len() as u64;
                g.images.insert(id, Image { bytes, len });
            }),
            Durable::Dir { path } => entries(path).map(|listing| {
                g.listings.insert(path.to_path_buf(), listing);
            }),
        };
        if ok.is_err() {
            g.unreadable += 1;
        }
    }
}

impl DiskModel {
    /// Everything under `root` is durable as it is now (a fresh directory, or after a power
    /// loss was applied); the model takes syncs again.
    pub fn baseline(&self, root: &Path) -> io::Result<()> {
        let mut g = self.inner.lock();
        g.images.clear();
        g.listings.clear();
        g.frozen = false;
        if !root.exists() {
            return Ok(());
        }
        for dir in dirs_under(root)? {
            let listing = entries(&dir)?;
            for (name, e) in &listing {
                if !e.dir {
                    let (id, bytes) = read_all(&dir.join(name))?;
                    let len = bytes.len() as u64;
                    g.images.insert(id, Image { bytes, len });
                }
            }
            g.listings.insert(dir, listing);
        }
        Ok(())
    }

    /// The power goes: syncs reported from now on (while the process stops) are not durable,
    /// until the next [`DiskModel::baseline`] (which [`DiskModel::power_loss`] ends with).
    pub fn freeze(&self) {
        self.inner.lock().frozen = true;
    }

    /// The power goes: rewrites the files under `root` (whose process was stopped) to what the
    /// disk holds afterwards (see the module documentation), drawing from `seed`. Returns what
    /// it did per file, by path relative to `root`, sorted.
    pub fn power_loss(&self, root: &Path, seed: u64) -> io::Result<Vec<(PathBuf, Loss)>> {
        self.freeze();
        let mut out = Vec::new();
        if !root.exists() {
            return Ok(out);
        }
        {
            let g = self.inner.lock();
            // The root itself always exists (its parent is not the store's).
            let mut dirs = vec![root.to_path_buf()];
            while let Some(dir) = dirs.pop() {
                let subs = lose_entries(&g, root, &dir, seed, &mut out)?;
                // Depth first, in name order.
                dirs.extend(subs.into_iter().rev());
            }
        }
        self.baseline(root)?;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The syncs reported since [`DiskModel::freeze`], as text (and forgets them). The
    /// simulation's stores do nothing on their own (`StoreConfig::blocking_io`) and stop
    /// without syncing (a crash), so any is store I/O that ran beside the simulation's thread
    /// when the power went: its order with the freeze was the OS scheduler's, not the seed's.
    pub fn take_late(&self) -> Vec<String> {
        std::mem::take(&mut self.inner.lock().late)
    }

    /// Syncs reported that could not be read back.
    pub fn unreadable(&self) -> u64 {
        self.inner.lock().unreadable
    }
}

/// The power loss in one directory: its entries and its files' contents. Returns the
/// subdirectories left, to visit next.
fn lose_entries(
    g: &DiskInner,
    root: &Path,
    dir: &Path,
    seed: u64,
    out: &mut Vec<(PathBuf, Loss)>,
) -> io::Result<Vec<PathBuf>> {
    let empty = BTreeMap::new();
    let now = entries(dir)?;
    // A directory never synced has the entries it had at the baseline (recorded then), or,
    // created since, none.
    let listing = g.listings.get(dir).unwrap_or(&empty);
    let mut names: Vec<&OsString> = now.keys().collect();
    names.extend(listing.keys().filter(|n| !now.contains_key(*n)));
    names.sort();
    names.dedup();
    let mut subdirs = Vec::new();
    for name in names {
        let path = dir.join(name);
        let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        let mut rng = SimRng::new(seed ^ name_hash(&rel));
        let was = listing.get(name).copied();
        let is = now.get(name).copied();
        let loss = match (was, is) {
            // Created since its directory's last sync.
            (None, Some(e)) => {
                if rng.chance(500) {
                    if e.dir {
                        fs::remove_dir_all(&path)?;
                    } else {
                        fs::remove_file(&path)?;
                    }
                    Some(Loss::Vanished)
                } else if e.dir {
                    subdirs.push(path.clone());
                    None
                } else {
                    content_loss(&path, g.images.get(&e.id), &mut rng)?
                }
            }
            // A subdirectory: its entries are its own.
            (_, Some(e)) if e.dir => {
                subdirs.push(path.clone());
                None
            }
            // Removed since (a removed subdirectory is not brought back).
            (Some(old), None) => match g.images.get(&old.id) {
                Some(image) if !old.dir && rng.chance(500) => {
                    let len = (image.len as usize).min(image.bytes.len());
                    let mut bytes = image.bytes[..len].to_vec();
                    bytes.resize(image.len as usize, 0);
                    fs::write(&path, bytes)?;
                    Some(Loss::Back)
                }
                _ => None,
            },
            // Renamed over since.
            (Some(old), Some(e)) if old.id != e.id && !old.dir => match g.images.get(&old.id) {
                Some(image) if rng.chance(500) => {
                    let tmp = path.with_extension("powerloss");
                    let mut bytes = image.bytes.clone();
                    bytes.resize(image.len as usize, 0);
                    fs::write(&tmp, bytes)?;
                    fs::rename(&tmp, &path)?;
                    Some(Loss::Unrenamed)
                }
                _ => content_loss(&path, g.images.get(&e.id), &mut rng)?,
            },
            (_, Some(e)) => content_loss(&path, g.images.get(&e.id), &mut rng)?,
            (None, None) => None,
        };
        if let Some(l) = loss {
            out.push((rel, l));
        }
    }
    Ok(subdirs)
}

/// One file's content after the power loss: its durable image, and past it what `rng` draws
/// per page; its length, the synced one or (drawn) the current one.
fn content_loss(path: &Path, image: Option<&Image>, rng: &mut SimRng) -> io::Result<Option<Loss>> {
    let cur = fs::read(path)?;
    let none = Image::default();
    let image = image.unwrap_or(&none);
    let synced_len = image.len as usize;
    let len = if synced_len != cur.len() && rng.chance(500) {
        synced_len
    } else {
        cur.len()
    };
    let at = |i: usize| image.bytes.get(i).copied().unwrap_or(0);
    let new = |i: usize| cur.get(i).copied().unwrap_or(0);
    let first = (0..len).find(|&i| new(i) != at(i));
    let mut out: Vec<u8> = (0..len).map(at).collect();
    let (mut kept, mut lost, mut torn) = (0u32, 0u32, 0u32);
    let (mut from, mut to) = (len, len);
    if let Some(f) = first {
        from = f;
        to = (f..len)
            .rev()
            .find(|&i| new(i) != at(i))
            .map_or(f, |i| i + 1);
        let mut page = from / PAGE * PAGE;
        while page < to {
            let lo = page.max(from);
            let hi = (page + PAGE).min(to);
            page += PAGE;
            // Only pages where something changed.
            if !(lo..hi).any(|i| new(i) != at(i)) {
                continue;
            }
            match rng.range(0, 2) {
                0 => {
                    for (i, b) in out.iter_mut().enumerate().take(hi).skip(lo) {
                        *b = new(i);
                    }
                    kept += 1;
                }
                1 => lost += 1,
                _ => {
                    let cut = rng.range(lo as u64, hi as u64 - 1) as usize;
                    for (i, b) in out.iter_mut().enumerate().take(cut).skip(lo) {
                        *b = new(i);
                    }
                    let garbage = rng.range(1, 64).min((hi - cut) as u64) as usize;
                    for b in &mut out[cut..cut + garbage] {
                        *b = rng.next_u64() as u8;
                    }
                    torn += 1;
                }
            }
        }
    }
    let len_changed = len != cur.len();
    if lost == 0 && torn == 0 && !len_changed {
        // Everything written survived.
        return Ok(None);
    }
    let f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all_at(&out, 0)?;
    f.set_len(out.len() as u64)?;
    Ok(Some(Loss::Pages {
        from: from as u64,
        to: to as u64,
        kept,
        lost,
        torn,
        len: len_changed.then_some((cur.len() as u64, len as u64)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use rocketraft_broker::store::durability::observe;
    use rocketraft_broker::store::mapped_file::{sync_dir, MappedFile};

    /// A real mapped file: a synced range survives every draw; an unsynced one never survives
    /// beyond what was written; a file created after the last directory sync may vanish.
    #[test]
    fn only_synced_bytes_are_sure_to_survive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("r");
        fs::create_dir_all(&root).expect("mkdir");
        let disk = Arc::new(DiskModel::default());
        disk.baseline(&root).expect("baseline");
        let _guard = observe(root.clone(), disk.clone());
        let mut kinds = std::collections::BTreeSet::new();
        for seed in 0..40u64 {
            let f = MappedFile::create(&root, 0, 4096, false, false).expect("create");
            // SAFETY: nothing else maps the file.
            unsafe { f.write(0, b"synced!") };
            f.flush_range(0, 7).expect("flush");
            // SAFETY: as above.
            unsafe { f.write(7, b"not synced") };
            drop(f);
            fs::write(root.join("late"), b"created after the directory sync").expect("late");
            let losses = disk.power_loss(&root, seed).expect("power loss");
            let bytes = fs::read(root.join(format!("{:020}", 0))).expect("read");
            assert_eq!(&bytes[..7], b"synced!");
            if &bytes[7..17] == b"not synced" {
                kinds.insert("kept".to_string());
            }
            // Past the unsynced span (and a torn tail's garbage, at most 64 bytes) the image:
            // zeros, as a preallocated file reads.
            assert!(bytes[17 + 64..].iter().all(|b| *b == 0));
            assert_eq!(bytes.len(), 4096);
            for (path, loss) in &losses {
                let kind = loss.kind();
                kinds.insert(format!("{} {kind}", path.display()));
            }
            // Whatever survived is durable now: a second power loss changes nothing.
            assert!(disk
                .power_loss(&root, seed + 1000)
                .expect("again")
                .is_empty());
            let _ = fs::remove_file(root.join("late"));
            let _ = fs::remove_file(root.join(format!("{:020}", 0)));
            sync_dir(&root).expect("sync");
        }
        let seen: Vec<&String> = kinds.iter().collect();
        for want in [
            "00000000000000000000 lost",
            "00000000000000000000 torn",
            "late vanished",
            "kept",
        ] {
            assert!(kinds.contains(want), "never drew {want}: {seen:?}");
        }
    }

    /// A subdirectory created since its parent's last sync may vanish with everything in it,
    /// even files synced in it; one whose parent was synced after it was created stays.
    #[test]
    fn an_unsynced_subdirectory_may_vanish_with_its_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("r");
        fs::create_dir_all(&root).expect("mkdir");
        let disk = Arc::new(DiskModel::default());
        disk.baseline(&root).expect("baseline");
        let _guard = observe(root.clone(), disk.clone());
        let (mut vanished, mut stayed) = (0, 0);
        for seed in 0..40u64 {
            let sub = root.join("unsynced");
            fs::create_dir_all(sub.join("deeper")).expect("mkdir");
            let f = MappedFile::create(&sub.join("deeper"), 0, 4096, false, false).expect("create");
            // SAFETY: nothing else maps the file.
            unsafe { f.write(0, b"synced") };
            f.flush_range(0, 6).expect("flush");
            drop(f);
            let kept = root.join("synced");
            fs::create_dir_all(&kept).expect("mkdir");
            fs::write(kept.join("file"), b"x").expect("write");
            sync_dir(&kept).expect("sync");
            sync_dir(&root).expect("sync");
            // Created after the root's last sync.
            let late = root.join("late");
            fs::create_dir_all(&late).expect("mkdir");
            let losses = disk.power_loss(&root, seed).expect("power loss");
            assert!(kept.join("file").exists(), "seed {seed}: {losses:?}");
            if late.exists() {
                stayed += 1;
            } else {
                vanished += 1;
                assert!(losses.contains(&(PathBuf::from("late"), Loss::Vanished)));
            }
            assert!(sub.exists(), "synced with the root: {losses:?}");
            fs::remove_dir_all(&sub).expect("rm");
            fs::remove_dir_all(&kept).expect("rm");
            let _ = fs::remove_dir_all(&late);
            sync_dir(&root).expect("sync");
            disk.baseline(&root).expect("baseline");
            // Now the subdirectory is created after the root's last sync.
            fs::create_dir_all(sub.join("deeper")).expect("mkdir");
            let f = MappedFile::create(&sub.join("deeper"), 0, 4096, false, false).expect("create");
            // SAFETY: as above.
            unsafe { f.write(0, b"synced") };
            f.flush_range(0, 6).expect("flush");
            drop(f);
            let losses = disk.power_loss(&root, seed).expect("power loss");
            if !sub.exists() {
                assert!(losses.contains(&(PathBuf::from("unsynced"), Loss::Vanished)));
                vanished += 1;
            } else {
                fs::remove_dir_all(&sub).expect("rm");
            }
            sync_dir(&root).expect("sync");
            disk.baseline(&root).expect("baseline");
        }
        assert!(
            vanished > 10 && stayed > 5,
            "vanished {vanished}, stayed {stayed}"
        );
    }

    /// Syncs reported after the model froze (the process stopping after the power went) are
    /// not durable.
    #[test]
    fn syncs_after_freeze_are_not_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("r");
        fs::create_dir_all(&root).expect("mkdir");
        let disk = Arc::new(DiskModel::default());
        disk.baseline(&root).expect("baseline");
        let _guard = observe(root.clone(), disk.clone());
        let f = MappedFile::create(&root, 0, 4096, false, false).expect("create");
        sync_dir(&root).expect("sync");
        let mut lost = 0;
        for seed in 0..20u64 {
            // SAFETY: nothing else maps the file.
            unsafe { f.write(0, format!("{seed:08}").as_bytes()) };
            disk.freeze();
            f.flush_range(0, 8).expect("flush");
            let late = disk.take_late();
            assert!(
                late.len() == 1 && late[0].starts_with("Range"),
                "the sync after the freeze is reported late: {late:?}"
            );
            let losses = disk.power_loss(&root, seed).expect("power loss");
            if !losses.is_empty() {
                lost += 1;
            }
        }
        assert!(
            lost > 5,
            "a sync after freeze counted as durable: lost only {lost} of 20"
        );
    }

    /// A length changed since the last fsync (a growth or a truncation) may revert to the
    /// synced one; the synced bytes stay.
    #[test]
    fn an_unsynced_length_change_may_revert() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("r");
        fs::create_dir_all(&root).expect("mkdir");
        let disk = Arc::new(DiskModel::default());
        disk.baseline(&root).expect("baseline");
        let _guard = observe(root.clone(), disk.clone());
        let name = root.join(format!("{:020}", 0));
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..30u64 {
            // Created and fsynced at 4096 bytes (and its directory synced).
            let f = MappedFile::create(&root, 0, 4096, false, false).expect("create");
            // SAFETY: nothing else maps the file.
            unsafe { f.write(0, b"synced") };
            f.flush_range(0, 6).expect("flush");
            drop(f);
            let new_len = if seed % 2 == 0 { 8192 } else { 1024 };
            fs::OpenOptions::new()
                .write(true)
                .open(&name)
                .and_then(|f| f.set_len(new_len))
                .expect("set_len");
            disk.power_loss(&root, seed).expect("power loss");
            let bytes = fs::read(&name).expect("read");
            assert_eq!(&bytes[..6], b"synced");
            assert!(bytes.len() == 4096 || bytes.len() as u64 == new_len);
            seen.insert((new_len, bytes.len()));
            fs::remove_file(&name).expect("rm");
            sync_dir(&root).expect("sync");
        }
        for want in [(8192, 4096), (8192, 8192), (1024, 4096), (1024, 1024)] {
            assert!(seen.contains(&want), "never {want:?}: {seen:?}");
        }
    }
}
