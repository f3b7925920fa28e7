//! # rocketraft-raft — the consensus library (not yet built)
//!
//! This crate will hold Rocketraft's Raft library on openraft `=0.10.0-alpha.37`, generic over an
//! application state machine: RocksDB log storage that passes openraft's storage conformance suite,
//! snapshot building and installation, a tonic gRPC transport between peers, forwarding of writes to
//! the leader, linearizable reads (ReadIndex) and membership changes.
//!
//! Nothing is implemented yet; this is tracked by the controller issue. The crate exists so the
//! workspace has the layout ARCHITECTURE.md describes, and it deliberately exports nothing: no
//! placeholder API that could be mistaken for a working one.
