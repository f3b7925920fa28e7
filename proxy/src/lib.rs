//! # rocketraft-proxy — the stateless gRPC proxy (not yet built)
//!
//! This crate will hold the `apache.rocketmq.v2.MessagingService` front end over tonic (including
//! Telemetry), finding brokers through the NameServer (cluster mode) or calling an in-process broker
//! (local mode), with protocol adaptation, permissions and consumption management.
//!
//! Nothing is implemented yet; it deliberately exports nothing.
