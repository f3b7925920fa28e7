//! # rocketraft-common
//!
//! Types shared by every Rocketraft crate and by the wire: the message model and its on-disk /
//! on-wire record codec ([`message`]), topic configuration and permissions ([`topic`]), the
//! well-known property names and flags of RocketMQ ([`consts`]) and small helpers ([`time`],
//! [`hash`]). No I/O lives here.

pub mod acl;
pub mod advertise;
pub mod base64;
pub mod capped;
pub mod coalesce;
pub mod consts;
pub mod hash;
pub mod message;
pub mod metrics;
pub mod net;
pub mod sql92;
#[doc(hidden)]
pub mod testing;
pub mod time;
pub mod topic;
pub mod trace;
pub mod trust;

pub use topic::{TopicConfig, TopicValidationError};
pub mod json;
pub mod lite;
pub mod manage;
pub mod properties;
pub mod protocol;
