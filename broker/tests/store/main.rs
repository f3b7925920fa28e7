//! The message store on real files, without servers: round trips, recovery after crashes and
//! `kill -9`, RocksDB metadata, the replication primitives of a slave's store, and the safety
//! holes of issue 13.

mod store_metadata;
mod store_metadata_disk;
mod store_recovery;
mod store_replication;
mod store_roundtrip;
mod store_safety;
