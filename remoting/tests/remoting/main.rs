//! The remoting crate's integration tests, one binary: the codec against hand-built frames and
//! property tests, client and server against each other on loopback, the server's limits and
//! TLS.

mod codec;
mod limits;
mod server;
mod tls;
