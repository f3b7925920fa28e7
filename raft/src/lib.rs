//! # rocketraft-raft — Rocketraft's consensus library
//!
//! Built on openraft `=0.10.0-alpha.37` and generic over the application's state machine: the
//! Controller plugs its broker-set state machine into it; nothing in here knows about brokers.
//!
//! - [`RocksLogStore`]: the Raft log on RocksDB (vote and entries synced before they are
//!   acknowledged, purge, committed index saved). It passes openraft's storage conformance suite
//!   (`tests/raft/log_store.rs`).
//! - [`AppStateMachine`]: what an application implements (typed commands, queries, snapshots).
//!   [`state_machine`] applies committed entries, de-duplicates retried proposals by
//!   `(client, serial)`, and builds, stores (crash-safely, checksummed) and installs snapshots, so
//!   a node that was down for long catches up by snapshot.
//! - [`network`] and the peer server: a tonic gRPC transport (append, vote, snapshot transfer)
//!   with deadlines; unreachable peers are reported so openraft backs off.
//! - [`RaftNode`]: bootstrap from configuration or restart from disk; writes accepted on any node
//!   and forwarded to the leader; reads linearizable by default (ReadIndex) or explicitly stale;
//!   membership changes one at a time ([`AdminRequest`]); [`NodeStatus`].
//! - [`auth`]: with a cluster secret ([`RaftConfig::cluster_secret`]), every peer RPC carries
//!   an HMAC of its method and body with a fresh nonce; the server refuses unproven and
//!   replayed ones.
//! - [`kv`]: a small key-value state machine (read, write, compare-and-set) and its Remoting
//!   protocol: what `rocketraft-raft-kv` (a test fixture of the jepsen crate) serves and the
//!   `raft-kv` Jepsen workload tests.

pub mod auth;
pub mod kv;
mod log_store;
pub mod network;
mod node;
mod server;
pub mod state_machine;
pub mod types;

/// Generated gRPC code of `proto/raft.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("rocketraft.raft.v1");
}

pub use kv::KvError;
pub use log_store::LogStoreError;
pub use log_store::RocksLogStore;
pub use log_store::CF_LOGS;
pub use log_store::CF_META;
pub use network::TransportError;
pub use node::leader_settled;
pub use node::members_from_any_keys;
pub use node::members_with_string_keys;
pub use node::parse_members;
pub use node::remote_admin;
pub use node::remote_status;
pub use node::AdminRequest;
pub use node::MembersError;
pub use node::NodeStatus;
pub use node::RaftClientError;
pub use node::RaftConfig;
pub use node::RaftNode;
pub use node::ReadMode;
pub use node::RemoteError;
pub use node::DEFAULT_MAX_PEER_CONNECTIONS;
pub use node::{InFlightWrite, WritesInFlight};
pub use rocketraft_common::trust::ClusterSecret;
pub use state_machine::AppStateMachine;
pub use state_machine::StateMachineError;
pub use types::ApplyError;
pub use types::NodeId;
pub use types::TypeConfig;
