//! Third-party clients against real `rocketraft` processes: ali-ons (Node.js, Remoting),
//! rocketmq-client-rust (Rust, Remoting), and the official RocketMQ 5 Python (with and without
//! credentials), Node.js and Rust clients (gRPC).
//!
//! Each test takes its module's turn first ([`support::file_turn`]): the modules' tests run one
//! module after another, as they did when each file was its own binary.

mod compat_ali_ons;
mod compat_nodejs;
mod compat_python;
mod compat_python_auth;
mod compat_rocketmq_official;
mod compat_rocketmq_rust;

#[path = "../support/mod.rs"]
mod support;
