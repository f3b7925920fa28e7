//! The store's format version: `{store_root}/store.version`, so that a binary knows whether it
//! can read a store before it touches it.
//!
//! Most files carry their own version already (the CommitLog record magic, V1 or V2; the
//! checkpoint's `RRCK` header, versions 1 and 2; the epoch file's count and CRC; RocksDB's own
//! format). What they cannot say is how the files fit together: which directories exist, what
//! a ConsumeQueue entry means, which markers recovery honours. That is this version, one
//! number for the whole layout:
//!
//! - A store without the file was written before it existed (format 1, the layout this binary
//!   reads): it opens, and gets the file.
//! - A store of this binary's format, or an older one it still reads, opens as it is. When a
//!   future change needs a conversion, it runs here, before recovery, and then the file is
//!   rewritten with the new number (never the other way round: a crash in between redoes the
//!   conversion, which must therefore be idempotent).
//! - A store of a newer format is refused before anything is read or written, with a message
//!   naming both versions: a downgrade would misread it, and a newer binary may have changed
//!   files in ways an older one would "repair" into corruption.
//!
//! The file is JSON: `{"formatVersion": 1, "writtenBy": "rocketraft-broker 0.1.0"}`; only
//! `formatVersion` is read (`writtenBy` is for the operator). It is written atomically
//! (temporary file, fsync, rename, directory fsync).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::mapped_file::sync_dir;

/// The store layout this binary writes.
pub const STORE_FORMAT_VERSION: u32 = 1;
/// The oldest store layout this binary opens.
pub const OLDEST_READABLE_FORMAT_VERSION: u32 = 1;
/// The file under the store root.
pub const STORE_VERSION_FILE: &str = "store.version";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VersionFile {
    format_version: u32,
    #[serde(default)]
    written_by: String,
}

/// What [`check_and_stamp`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFormat {
    /// A store created now (no files yet): stamped with this binary's version.
    Created,
    /// A store from before the version file: opened as format 1, stamped now.
    Unversioned,
    /// A store stamped with this (readable) version.
    Versioned(u32),
}

/// Where the version file of the store at `root` lives.
pub fn version_path(root: &Path) -> PathBuf {
    root.join(STORE_VERSION_FILE)
}

/// The store's format version as written in its file; `None` without one.
pub fn read_version(root: &Path) -> Result<Option<u32>, StoreError> {
    let path = version_path(root);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(&path, e)),
    };
    let file: VersionFile = serde_json::from_str(&text).map_err(|e| {
        StoreError::Corrupted(format!(
            "{} is not a store version file ({e}); it should hold {{\"formatVersion\": N}}",
            path.display()
        ))
    })?;
    Ok(Some(file.format_version))
}

/// Whether `root` holds anything a store writes (a store from before the version file).
fn has_store_files(root: &Path) -> Result<bool, StoreError> {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(StoreError::io(root, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(root, e))?;
        let name = entry.file_name();
        // The lock file is made by the open that calls us; nothing else is ours yet.
        if name != "lock" && name != STORE_VERSION_FILE {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Writes the version file of this binary's format, atomically.
fn write_version(root: &Path) -> Result<(), StoreError> {
    let path = version_path(root);
    let tmp = root.join(format!("{STORE_VERSION_FILE}.tmp"));
    let io = |e| StoreError::io(&path, e);
    let text = serde_json::to_string(&VersionFile {
        format_version: STORE_FORMAT_VERSION,
        written_by: format!("rocketraft-broker {}", env!("CARGO_PKG_VERSION")),
    })
    .map_err(|e| StoreError::Corrupted(format!("cannot encode the store version: {e}")))?;
    {
        let mut f = File::create(&tmp).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.write_all(b"\n").map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    super::durability::note(super::durability::Durable::File { path: &tmp });
    fs::rename(&tmp, &path).map_err(io)?;
    sync_dir(root).map_err(|e| StoreError::io(root, e))
}

/// Checks the store at `root` before it is opened (called with the store lock held): refuses a
/// newer format or one too old to read, and stamps a new or unversioned store.
pub fn check_and_stamp(root: &Path) -> Result<StoreFormat, StoreError> {
    match read_version(root)? {
        Some(version) if version > STORE_FORMAT_VERSION => Err(StoreError::Config(format!(
            "the store at {} has format version {version}, newer than this binary's ({STORE_FORMAT_VERSION}): \
             it was written by a newer rocketraft, and downgrades are not supported; run that version (or a newer one) on this store",
            root.display()
        ))),
        Some(version) if version < OLDEST_READABLE_FORMAT_VERSION => Err(StoreError::Config(format!(
            "the store at {} has format version {version}, older than this binary reads (from {OLDEST_READABLE_FORMAT_VERSION}): \
             open it with an intermediate release first",
            root.display()
        ))),
        Some(version) => Ok(StoreFormat::Versioned(version)),
        None => {
            let existing = has_store_files(root)?;
            write_version(root)?;
            if existing {
                tracing::info!(
                    root = %root.display(),
                    version = STORE_FORMAT_VERSION,
                    "store from before format versions: opened as format 1, version file written"
                );
                Ok(StoreFormat::Unversioned)
            } else {
                Ok(StoreFormat::Created)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_store_is_stamped_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            check_and_stamp(dir.path()).expect("new"),
            StoreFormat::Created
        );
        assert_eq!(
            read_version(dir.path()).expect("read"),
            Some(STORE_FORMAT_VERSION)
        );
        assert_eq!(
            check_and_stamp(dir.path()).expect("again"),
            StoreFormat::Versioned(STORE_FORMAT_VERSION)
        );
        assert!(!dir.path().join("store.version.tmp").exists());
    }

    #[test]
    fn an_unversioned_store_is_opened_and_stamped() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("commitlog")).expect("mkdir");
        fs::write(dir.path().join("lock"), b"").expect("lock");
        assert_eq!(
            check_and_stamp(dir.path()).expect("old"),
            StoreFormat::Unversioned
        );
        assert_eq!(
            read_version(dir.path()).expect("read"),
            Some(STORE_FORMAT_VERSION)
        );
    }

    #[test]
    fn a_newer_or_unreadable_version_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = version_path(dir.path());
        fs::write(
            &path,
            r#"{"formatVersion": 99, "writtenBy": "rocketraft 9"}"#,
        )
        .expect("write");
        let e = check_and_stamp(dir.path()).expect_err("newer").to_string();
        assert!(e.contains("format version 99"), "{e}");
        assert!(e.contains("downgrades are not supported"), "{e}");
        // Left as it was: a refusal writes nothing.
        assert!(fs::read_to_string(&path).expect("read").contains("99"));
        fs::write(&path, "1").expect("write");
        let e = check_and_stamp(dir.path())
            .expect_err("garbage")
            .to_string();
        assert!(e.contains("not a store version file"), "{e}");
        fs::write(&path, r#"{"formatVersion": 0}"#).expect("write");
        let e = check_and_stamp(dir.path())
            .expect_err("too old")
            .to_string();
        assert!(e.contains("older than this binary reads"), "{e}");
    }
}
