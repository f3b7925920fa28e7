//! # rocketraft-controller — the RocketMQ controller's state machine
//!
//! The controller decides, for every broker set (`brokerName`), which broker ids exist, which one is
//! master, and which replicas are in sync with it (the SyncStateSet), fencing every change with a
//! master epoch and a SyncStateSet epoch. This crate follows `ReplicasInfoManager` and
//! `DefaultElectPolicy` of Apache RocketMQ 5.3.
//!
//! ## The pure state machine
//! - [`state`]: [`ControllerState`], serde so it can be snapshotted.
//! - [`handler`]: one pure function per request (`GET_NEXT_BROKER_ID`, `APPLY_BROKER_ID`,
//!   `CONTROLLER_REGISTER_BROKER`, `CONTROLLER_ELECT_MASTER`, `CONTROLLER_ALTER_SYNC_STATE_SET`,
//!   `CONTROLLER_GET_REPLICA_INFO`, `CONTROLLER_GET_SYNC_STATE_DATA`, `CLEAN_BROKER_DATA`):
//!   `(state, request, liveness) -> (response, events)` or a [`rocketraft_remoting::Refusal`] with the Remoting
//!   response code. A rejection carries no events.
//! - [`event`]: [`Event`]s and [`apply`], the only way the state changes; deterministic, so every
//!   replica applying the same log holds the same state.
//! - [`elect`] holds [`DefaultElectPolicy`].
//! - [`liveness`]: broker liveness is an input ([`BrokerLiveness`]), never a clock read.
//!
//! ## The running controller
//! - [`replicated`]: [`ControllerStateMachine`], the state machine on `rocketraft-raft`: the
//!   replicated entry is the request plus the leader's view of live brokers, handled in log
//!   order by every replica; snapshots of [`ControllerState`].
//! - [`heartbeat`]: `BROKER_HEARTBEAT` (904), kept in memory by every node; the leader puts its
//!   [`AliveBrokers`] snapshot into each command it proposes.
//! - [`service`]: [`Controller::start`] (standalone, or embedded in the NameServer), the scanner
//!   that elects a new master when a master's heartbeat times out and sends
//!   `NOTIFY_BROKER_ROLE_CHANGED`, and the Remoting processor; every node answers every request.
//!   With a `cluster_secret`, the state-changing codes ([`CONTROLLER_PROTECTED_CODES`]) are
//!   served only to connections that proved it, and the Raft RPCs are authenticated with it.
//! - [`scanner`]: the scanner's decisions ([`scanner::scan_round`]), generic over the node it
//!   runs on ([`scanner::ScanEnv`]: `Controller` in production, a simulated node in
//!   `rocketraft-sim`), with what it remembers between rounds ([`scanner::ScannerMemory`]).
//! - [`runtime_config`]: GET_CONTROLLER_CONFIG / UPDATE_CONTROLLER_CONFIG, and the settings an
//!   update changes while the controller runs.
//! - [`metrics`]: the controller's Prometheus series ([`Controller::metrics_collector`]).
//! - [`peers`]: what the other controllers hear, asked before an election or a depose the
//!   leader cannot make from its own table (partitions; issue 22).
//! - [`wire`]: the Remoting headers and bodies of the controller codes (plus
//!   `CONTROLLER_GET_METADATA_INFO`); [`client`]: a typed client for brokers, the admin tool and
//!   the tests.

pub mod client;
pub mod elect;
pub mod event;
pub mod handler;
pub mod heartbeat;
pub mod liveness;
pub mod metrics;
pub mod peers;
pub mod replicated;
pub mod runtime_config;
pub mod scanner;
pub mod service;
pub mod state;
pub mod wire;

pub use elect::DefaultElectPolicy;
pub use event::{apply, apply_all, Event};
pub use handler::{handle, ControllerRequest, ControllerResponse, HandlerResult};
pub use liveness::{AliveBrokers, BrokerLiveInfo, BrokerLiveness};
pub use replicated::{
    ControllerCommand, ControllerQuery, ControllerQueryResponse, ControllerStateMachine,
};
pub use service::{
    check_advertised, tenure_needed, Controller, ControllerConfig, ControllerStatus, StartError,
    CONTROLLER_CODES, CONTROLLER_PROTECTED_CODES, QUORUM_FRESH_DIVISOR,
};
pub use state::{
    Broken, BrokerIdentity, BrokerReplicaInfo, BrokerSet, ControllerState, InvariantBroken,
    SyncStateInfo,
};
