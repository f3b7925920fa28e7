//! The raft crate's integration tests, one binary: `RocksLogStore` against openraft's storage
//! suite, and real three-node clusters on loopback.

mod cluster;
mod log_store;
mod support;
