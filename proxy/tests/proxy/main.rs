//! The proxy crate's integration tests, one binary: the generated protocol's wire facts, and the
//! proxy over real gRPC (sends, POP, features, security) in front of a real NameServer and
//! broker on loopback.

mod auth;
mod batch;
mod features;
mod grpc;
mod hardening;
mod health;
mod http2_attacks;
mod lite;
mod local;
mod metrics;
mod proto_roundtrip;
mod support;
