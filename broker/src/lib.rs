//! Rocketraft broker.
pub mod store;
