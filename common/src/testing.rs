//! Helpers for tests that need a real full filesystem: a small `tmpfs` mounted for one test
//! and a ballast that fills it. Used by the tests of several crates; the servers never call it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A small tmpfs mounted for one test, unmounted and removed when dropped (even if the test
/// fails).
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. `"4m"`) on a fresh directory of the
    /// temp dir; `None` when it cannot (mounting needs root).
    pub fn mount(size: &str) -> Option<Tmpfs> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rocketraft-tmpfs-{}-{}-{}",
            std::process::id(),
            crate::time::now_ms(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
        Some(Tmpfs { dir })
    }

    /// [`Tmpfs::mount`], or `None` after [`skip`] when this process is not root; panics when
    /// root could not mount one, and under `CI=true` (CI runs as root: a test must not pass
    /// silently there).
    pub fn mount_or_skip(size: &str) -> Option<Tmpfs> {
        let fs = Tmpfs::mount(size);
        if fs.is_none() {
            assert!(!is_root(), "root could not mount a tmpfs");
            skip("cannot mount a tmpfs here (not root)");
        }
        fs
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether this is a CI run: `CI` set to anything but empty, `false` or `0` (CI services set
/// `CI=true`; some `CI=1` or `CI=yes`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "false" | "0"))
}

/// Skips the calling test, which then returns: it cannot run here (not root, no network
/// namespaces, a tool missing) and says why.
///
/// Under `CI=true` it panics with the reason instead: CI runs as root with every tool
/// `scripts/setup.sh` installs, so there a test that cannot run is a failure, never a silent
/// pass. Elsewhere it writes one line `SKIPPED: <test>: <reason>` straight to this process's
/// standard error, past the test harness's capture of `eprintln!`, so `cargo test` shows it
/// and `scripts/test.sh` counts it (its summary's "skipped"). Call it once per test.
pub fn skip(reason: &str) {
    assert!(
        !in_ci(),
        "this test cannot run here, and CI=true does not skip: {reason}"
    );
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let line = format!("SKIPPED: {test}: {reason}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Whether this process runs as root (its effective uid, from `/proc/self/status`).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Appends `bytes` of ballast to `path` (fewer once the filesystem refuses more).
pub fn grow_ballast(path: &Path, bytes: usize) {
    let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    else {
        return;
    };
    let chunk = vec![1u8; 4096];
    let mut left = bytes;
    while left > 0 && f.write_all(&chunk).is_ok() {
        left = left.saturating_sub(chunk.len());
    }
}

/// Fills the filesystem holding `path` with a ballast file there until it refuses more bytes.
pub fn fill_disk(path: &Path) {
    grow_ballast(path, usize::MAX);
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.sync_all();
    }
}

/// A fresh directory under the temp dir for servers that may still be writing into it when it is
/// dropped (a test that fails before it shut its Raft nodes down: their RocksDB keeps creating
/// files while the directory is being removed, and one `remove_dir_all` then fails with
/// "directory not empty" and leaves the rest behind). Dropping it retries the removal until the
/// directory is gone (at most about 5 s).
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `<temp dir>/rocketraft-<label>-<pid>-<ms>-<n>`.
    pub fn new(label: &str) -> std::io::Result<ScratchDir> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "rocketraft-{label}-{}-{}-{}",
            std::process::id(),
            crate::time::now_ms(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)?;
        Ok(ScratchDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        for _ in 0..50 {
            match std::fs::remove_dir_all(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                _ if self.path.exists() => {
                    // Something recreated it right after the removal: once more.
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                _ => return,
            }
        }
        eprintln!("could not remove {}", self.path.display());
    }
}
