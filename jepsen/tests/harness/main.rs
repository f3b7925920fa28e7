//! The harness against real `rocketraft` processes (root, network namespaces, FUSE): smoke runs
//! of every workload under faults, issue 22's failover bounds at default timing, a deliberately
//! broken build caught, raft-kv, a tiny fault matrix, power cuts on a LazyFs mount, and issue
//! 20's scale-out runs (several broker sets, NameServers and proxies). Without
//! root, network namespaces or FUSE a test says why and passes (the power-loss tests fail
//! without FUSE).
//!
//! The tests share one private network (10.77.0.x) and one machine: they take one lock
//! ([`support`]).

mod broken_build;
mod fault_matrix;
mod harness_failover;
mod harness_smoke;
mod multi_set;
mod power_loss;
mod raft_kv;
mod support;
