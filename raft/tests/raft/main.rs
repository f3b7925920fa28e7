//! The raft crate's integration tests, one binary: `RocksLogStore` against openraft's storage
//! suite, and real three-node clusters on loopback (with and without a cluster secret).

mod cluster;
mod disk_full;
mod log_store;
mod support;
mod trust;
