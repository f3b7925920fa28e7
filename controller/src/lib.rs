//! # rocketraft-controller — the RocketMQ controller's state machine
//!
//! The controller decides, for every broker set (`brokerName`), which broker ids exist, which one is
//! master, and which replicas are in sync with it (the SyncStateSet), fencing every change with a
//! master epoch and a SyncStateSet epoch. This crate follows `ReplicasInfoManager` and
//! `DefaultElectPolicy` of Apache RocketMQ 5.3.
//!
//! ## What exists now: the pure state machine
//! - [`state`]: [`ControllerState`], serde so it can be snapshotted.
//! - [`handler`]: one pure function per request (`GET_NEXT_BROKER_ID`, `APPLY_BROKER_ID`,
//!   `CONTROLLER_REGISTER_BROKER`, `CONTROLLER_ELECT_MASTER`, `CONTROLLER_ALTER_SYNC_STATE_SET`,
//!   `CONTROLLER_GET_REPLICA_INFO`, `CONTROLLER_GET_SYNC_STATE_DATA`, `CLEAN_BROKER_DATA`):
//!   `(state, request, liveness) -> (response, events)` or a [`ControllerError`] with the Remoting
//!   response code. A rejection carries no events.
//! - [`event`]: [`Event`]s and [`apply`], the only way the state changes; deterministic, so every
//!   replica applying the same log holds the same state.
//! - [`elect`] holds [`DefaultElectPolicy`].
//! - [`liveness`]: broker liveness is an input ([`BrokerLiveness`]), never a clock read.
//!
//! ## What comes next
//! - The Raft state machine wrapper: replicate events through `rocketraft-raft`, apply them in log
//!   order, snapshot/restore [`ControllerState`]; run handlers one at a time against the applied state.
//! - The heartbeat tracker (`BROKER_HEARTBEAT` 904, 10 s timeout, scans every 5 s) that produces
//!   [`AliveBrokers`] and triggers controller-side elections when a master is lost.
//! - Remoting handlers mapping the wire headers/bodies to these requests (plus
//!   `CONTROLLER_GET_METADATA_INFO`, `CONTROLLER_NOT_LEADER`, `NOTIFY_BROKER_ROLE_CHANGED`).
//! - `Controller::start(config)`, standalone or embedded in the NameServer.

pub mod client;
pub mod elect;
pub mod event;
pub mod handler;
pub mod heartbeat;
pub mod liveness;
pub mod replicated;
pub mod service;
pub mod state;
pub mod wire;

pub use elect::DefaultElectPolicy;
pub use event::{apply, apply_all, Event};
pub use handler::{handle, ControllerError, ControllerRequest, ControllerResponse, HandlerResult};
pub use liveness::{AliveBrokers, BrokerLiveInfo, BrokerLiveness};
pub use replicated::{
    ControllerCommand, ControllerQuery, ControllerQueryResponse, ControllerStateMachine,
};
pub use service::{
    tenure_needed, Controller, ControllerConfig, ControllerStatus, CONTROLLER_CODES,
    QUORUM_FRESH_DIVISOR,
};
pub use state::{BrokerIdentity, BrokerReplicaInfo, BrokerSet, ControllerState, SyncStateInfo};
