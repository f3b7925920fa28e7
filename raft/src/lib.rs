//! # rocketraft-raft — Rocketraft's consensus library
//!
//! This crate is Rocketraft's Raft library, built on openraft `=0.10.0-alpha.37` and generic over
//! the application's state machine: the Controller plugs its broker-set state machine into it, and
//! nothing in here knows about brokers or topics.
//!
//! ## What exists today
//!
//! - [`RocksLogStore`]: the Raft log on RocksDB, implementing openraft's [`RaftLogStorage`] and
//!   [`RaftLogReader`] for any [`RaftTypeConfig`]. It passes openraft's storage conformance suite
//!   (`openraft::testing::log::Suite`), see `tests/log_store.rs`.
//!
//! ## What this crate will become
//!
//! - a type config generic over an application state machine, with state-machine glue (apply,
//!   responders, snapshot building and installation);
//! - snapshot storage on disk;
//! - a tonic gRPC transport between peers (`RaftNetworkFactory` / `RaftNetworkV2`);
//! - forwarding of writes to the leader, linearizable reads (ReadIndex) and membership changes.
//!
//! None of these are implemented yet, and the crate exports nothing that pretends they are.
//!
//! [`RaftLogStorage`]: openraft::storage::RaftLogStorage
//! [`RaftLogReader`]: openraft::RaftLogReader
//! [`RaftTypeConfig`]: openraft::RaftTypeConfig

mod log_store;

pub use log_store::LogStoreError;
pub use log_store::RocksLogStore;
pub use log_store::CF_LOGS;
pub use log_store::CF_META;
