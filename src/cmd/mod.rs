//! The `rocketraft` commands, one module each: [`server`] (`namesrv`, `broker`, `proxy`,
//! `controller`, `dev`), [`admin`], [`bench`] and [`cluster`] (`cluster up|status|down`).

pub mod admin;
pub mod bench;
pub mod cluster;
pub mod server;
