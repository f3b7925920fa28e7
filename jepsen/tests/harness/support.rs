//! The one lock of the harness tests. A harness run (`broken_build`, `harness_failover`,
//! `harness_smoke`, `raft_kv`) builds the private network (namespaces on 10.77.0.x) and a
//! cluster of real processes: it holds the lock alone ([`serial`]); two clusters at once would
//! also overload a two-core machine. The power-loss tests (each a `rocketraft dev` on its own
//! LazyFs mount) hold it together ([`shared`]): side by side, as when they were a test binary of
//! their own, but never beside a harness run.

use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

static LOCK: RwLock<()> = RwLock::new(());

/// One harness run at a time, and no power-loss test beside it.
pub fn serial() -> RwLockWriteGuard<'static, ()> {
    LOCK.write().unwrap_or_else(PoisonError::into_inner)
}

/// Power-loss tests side by side, never beside a harness run.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    LOCK.read().unwrap_or_else(PoisonError::into_inner)
}

/// `target/<profile>/rocketraft`, found from this test's executable (`target/<profile>/deps/..`)
/// or `$CARGO_TARGET_DIR`.
pub fn rocketraft_binary() -> PathBuf {
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            candidates.push(profile_dir.join("rocketraft"));
        }
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(&target).join("debug/rocketraft"));
        candidates.push(PathBuf::from(&target).join("release/rocketraft"));
    }
    match candidates.iter().find(|p| p.is_file()) {
        Some(path) => path.clone(),
        None => panic!(
            "the rocketraft binary is missing (looked at {candidates:?}): run `cargo build --workspace --bins` first"
        ),
    }
}
