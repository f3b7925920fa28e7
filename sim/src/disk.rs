//! Power loss of a broker replica: what its disk holds after the power goes, from what its
//! store made durable.
//!
//! The store reports every sync that returned (`rocketraft_broker::store::durability`): a
//! mapped range (msync), a whole file (fsync), a directory's entries (fsync of the directory).
//! [`DiskModel`] keeps, per file (by inode, so a file renamed keeps its history), the bytes
//! those syncs covered: its *durable image*, read from the file right after each sync; and per
//! directory the entries (name -> inode) its last sync saw. At a power loss
//! ([`DiskModel::power_loss`], after the process was stopped), every file keeps its image, and
//! past it (bytes written since, never synced), seeded per file: everything lost (the image: a
//! preallocated segment reads zeros there), a prefix of the unsynced span kept, or a prefix
//! then a torn tail of garbage. A directory whose entries were synced at least once also loses
//! what changed in it since, seeded per entry: a file created since may vanish, a file removed
//! may come back with its durable image, a file renamed over another may turn back into the
//! old one. Afterwards everything on disk is durable (the model starts again from it).
//!
//! Directories never synced (the store syncs each parent when it creates a directory, and a
//! directory's entries after each creation, rename or removal in it) keep their entries.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use rocketraft_broker::store::durability::{DurabilityObserver, Durable};

use crate::rng::SimRng;

/// One replica's disk: what its syncs made durable.
#[derive(Debug, Default)]
pub struct DiskModel {
    inner: Mutex<DiskInner>,
}

#[derive(Debug, Default)]
struct DiskInner {
    /// Per inode: the bytes its syncs covered (zeros elsewhere).
    images: HashMap<u64, Vec<u8>>,
    /// Per directory synced at least once: its entries (regular files) at the last sync.
    listings: HashMap<PathBuf, BTreeMap<OsString, u64>>,
    /// Syncs reported that could not be read back (the file vanished meanwhile).
    unreadable: u64,
}

/// What a power loss did to one file, for the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loss {
    /// Unsynced bytes `[from, to)` all lost (the durable image there).
    Lost { from: u64, to: u64 },
    /// Of the unsynced bytes `[from, to)`, `[from, kept)` survived.
    Prefix { from: u64, kept: u64, to: u64 },
    /// Of the unsynced bytes `[from, to)`, `[from, kept)` survived, then `garbage` bytes of
    /// garbage.
    Torn {
        from: u64,
        kept: u64,
        garbage: u64,
        to: u64,
    },
    /// A file created since its directory's last sync vanished.
    Vanished,
    /// A file removed since its directory's last sync came back.
    Back,
    /// A rename over this name since the directory's last sync was undone.
    Unrenamed,
}

fn read_all(path: &Path) -> io::Result<(u64, Vec<u8>)> {
    let meta = fs::metadata(path)?;
    Ok((meta.ino(), fs::read(path)?))
}

/// The regular files of `dir` by name, with their inodes.
fn entries(dir: &Path) -> io::Result<BTreeMap<OsString, u64>> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let meta = e.metadata()?;
        if meta.is_file() {
            out.insert(e.file_name(), meta.ino());
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
        let ok = match *event {
            Durable::Range { path, pos, len } => (|| -> io::Result<()> {
                let f = fs::File::open(path)?;
                let ino = f.metadata()?.ino();
                let mut buf = vec![0u8; len as usize];
                f.read_exact_at(&mut buf, pos)?;
                let image = g.images.entry(ino).or_default();
                let end = (pos + len) as usize;
                if image.len() < end {
                    image.resize(end, 0);
                }
                image[pos as usize..end].copy_from_slice(&buf);
                Ok(())
            })(),
            Durable::File { path } => read_all(path).map(|(ino, bytes)| {
                g.images.insert(ino, bytes);
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
    /// loss was applied).
    pub fn baseline(&self, root: &Path) -> io::Result<()> {
        let mut g = self.inner.lock();
        g.images.clear();
        g.listings.clear();
        if !root.exists() {
            return Ok(());
        }
        for dir in dirs_under(root)? {
            let listing = entries(&dir)?;
            for name in listing.keys() {
                let (ino, bytes) = read_all(&dir.join(name))?;
                g.images.insert(ino, bytes);
            }
            g.listings.insert(dir, listing);
        }
        Ok(())
    }

    /// The power goes: rewrites the files under `root` (whose process was stopped) to what the
    /// disk holds afterwards (see the module documentation), drawing from `seed`. Returns what
    /// it did per file, by path relative to `root`, sorted.
    pub fn power_loss(&self, root: &Path, seed: u64) -> io::Result<Vec<(PathBuf, Loss)>> {
        let mut out = Vec::new();
        if !root.exists() {
            return Ok(out);
        }
        {
            let g = self.inner.lock();
            for dir in dirs_under(root)? {
                let now = entries(&dir)?;
                let listing = g.listings.get(&dir);
                let mut names: Vec<&OsString> = now.keys().collect();
                if let Some(l) = listing {
                    names.extend(l.keys().filter(|n| !now.contains_key(*n)));
                }
                names.sort();
                names.dedup();
                for name in names {
                    let path = dir.join(name);
                    let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
                    let mut rng = SimRng::new(seed ^ name_hash(&rel));
                    let was = listing.and_then(|l| l.get(name)).copied();
                    let is = now.get(name).copied();
                    let loss = match (was, is, listing.is_some()) {
                        // Removed since the last sync of its directory.
                        (Some(old), None, _) => match g.images.get(&old) {
                            Some(image) if rng.chance(500) => {
                                fs::write(&path, image)?;
                                Some(Loss::Back)
                            }
                            _ => None,
                        },
                        // Created since (its directory synced before, never after).
                        (None, Some(ino), true) => {
                            if rng.chance(500) {
                                fs::remove_file(&path)?;
                                Some(Loss::Vanished)
                            } else {
                                content_loss(&path, g.images.get(&ino), &mut rng)?
                            }
                        }
                        // Renamed over since.
                        (Some(old), Some(ino), _) if old != ino => match g.images.get(&old) {
                            Some(image) if rng.chance(500) => {
                                let tmp = path.with_extension("powerloss");
                                fs::write(&tmp, image)?;
                                fs::rename(&tmp, &path)?;
                                Some(Loss::Unrenamed)
                            }
                            _ => content_loss(&path, g.images.get(&ino), &mut rng)?,
                        },
                        (_, Some(ino), _) => content_loss(&path, g.images.get(&ino), &mut rng)?,
                        (None, None, _) => None,
                    };
                    if let Some(l) = loss {
                        out.push((rel, l));
                    }
                }
            }
        }
        self.baseline(root)?;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Syncs reported that could not be read back.
    pub fn unreadable(&self) -> u64 {
        self.inner.lock().unreadable
    }
}

/// One file's content after the power loss: its durable image, and past it what `rng` draws.
fn content_loss(
    path: &Path,
    image: Option<&Vec<u8>>,
    rng: &mut SimRng,
) -> io::Result<Option<Loss>> {
    let cur = fs::read(path)?;
    let empty = Vec::new();
    let image = image.unwrap_or(&empty);
    let at = |i: usize| image.get(i).copied().unwrap_or(0);
    let Some(from) = (0..cur.len()).find(|&i| cur[i] != at(i)) else {
        return Ok(None);
    };
    let to = (0..cur.len())
        .rev()
        .find(|&i| cur[i] != at(i))
        .map_or(from, |i| i + 1);
    let mut out: Vec<u8> = (0..cur.len()).map(at).collect();
    let kind = rng.range(0, 2);
    let kept = if kind == 0 {
        from
    } else {
        rng.range(from as u64, to as u64) as usize
    };
    out[from..kept].copy_from_slice(&cur[from..kept]);
    let loss = match kind {
        0 => Loss::Lost {
            from: from as u64,
            to: to as u64,
        },
        1 => Loss::Prefix {
            from: from as u64,
            kept: kept as u64,
            to: to as u64,
        },
        _ => {
            let garbage = rng.range(1, 64).min((cur.len() - kept) as u64) as usize;
            for b in &mut out[kept..kept + garbage] {
                *b = rng.next_u64() as u8;
            }
            Loss::Torn {
                from: from as u64,
                kept: kept as u64,
                garbage: garbage as u64,
                to: to as u64,
            }
        }
    };
    let f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all_at(&out, 0)?;
    f.set_len(out.len() as u64)?;
    Ok(Some(loss))
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
            // Past the unsynced span (and a torn tail's garbage, at most 64 bytes) the image:
            // zeros, as a preallocated file reads.
            assert!(bytes[17 + 64..].iter().all(|b| *b == 0));
            assert_eq!(bytes.len(), 4096);
            for (path, loss) in &losses {
                let kind = match loss {
                    Loss::Lost { .. } => "lost",
                    Loss::Prefix { .. } => "prefix",
                    Loss::Torn { .. } => "torn",
                    Loss::Vanished => "vanished",
                    Loss::Back => "back",
                    Loss::Unrenamed => "unrenamed",
                };
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
            "00000000000000000000 prefix",
            "00000000000000000000 torn",
            "late vanished",
        ] {
            assert!(kinds.contains(want), "never drew {want}: {seen:?}");
        }
    }
}
