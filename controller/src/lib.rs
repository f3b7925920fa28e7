//! # rocketraft-controller — the RocketMQ controller as a Raft state machine (not yet built)
//!
//! This crate will hold the controller: broker sets and broker id assignment, SyncStateSet, master and
//! SyncStateSet epochs, the election policy, the broker heartbeat tracker and the Remoting handlers for
//! the controller request codes (1001-1018, 904). `Controller::start(config)` will run either as a
//! standalone quorum member or embedded in the NameServer.
//!
//! Nothing is implemented yet; it deliberately exports nothing.
