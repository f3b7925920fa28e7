//! The `rocketraft` commands, one module each: [`server`] (`namesrv`, `broker`, `proxy`,
//! `controller`, `dev`), [`admin`], [`bench`], [`cluster`] (`cluster up|status|down`) and
//! [`console`] (the web console).

pub mod admin;
pub mod bench;
pub mod cluster;
pub mod console;
pub mod server;

/// The CommitLog segment size `dev` and `cluster up` use unless told otherwise: 64 MiB, so an
/// empty store takes about 130 MB of disk (a segment and the next one prepared ahead) instead of
/// the 2 GiB a production broker's 1 GiB segments take.
pub const SMALL_SEGMENT_SIZE: u64 = 64 << 20;
