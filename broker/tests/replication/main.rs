//! Controller mode in one process: real brokers with an in-process controller (alone or
//! embedded in a NameServer) on loopback: the controller link, replication and failover, the
//! SyncStateSet, replicated metadata, cluster-internal trust and TLS.
//!
//! `controller_faults` keeps its own binary: it measures the longest gap between acknowledged
//! sends, so it runs alone, not beside these tests.

mod addressing;
mod cluster_trust;
mod controller_link;
mod metadata_failover;
mod replication;
mod retention;
mod retention_pins;
mod sync_state_set;
mod tls;

#[path = "../support/relay.rs"]
mod relay;
