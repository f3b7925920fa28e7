//! The one lock of the harness tests. A harness run (`broken_build`, `harness_failover`,
//! `harness_smoke`, `raft_kv`) builds the private network (namespaces on 10.77.0.x) and a
//! cluster of real processes: it holds the lock alone ([`serial`]); two clusters at once would
//! also overload a two-core machine. The power-loss tests (each a `rocketraft dev` on its own
//! LazyFs mount) hold it together ([`shared`]): side by side, as when they were a test binary of
//! their own, but never beside a harness run.

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
