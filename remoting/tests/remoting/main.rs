//! The remoting crate's integration tests, one binary: the codec against hand-built frames and
//! property tests, and client and server against each other on loopback.

mod codec;
mod server;
