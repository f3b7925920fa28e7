//! # rocketraft-jepsen — the fault-injection harness (not yet built)
//!
//! This crate will hold the Jepsen-style harness: real `rocketraft` processes in network namespaces,
//! nemeses (partitions, kill, pause, loss, latency, clock skew), workloads, a WGL linearizability
//! checker, a queue checker and reports. It will ship its own binary, `rocketraft-jepsen`.
//!
//! Nothing is implemented yet; it deliberately exports nothing.
