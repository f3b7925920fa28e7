//! The controller's integration tests but `fencing`: the state machine's handlers, election
//! policy and invariants (property tests), and its Remoting protocol against real servers on
//! loopback, cluster trust (a secret quorum refusing whoever does not prove it), and the
//! controller's configuration over Remoting (GET/UPDATE_CONTROLLER_CONFIG).
//!
//! `fencing` keeps its own binary: three real controllers at default timing whose tenures and
//! elections it times, alone as before.

mod config;
mod elect_policy;
mod handlers;
mod protocol;
mod state_machine_props;
mod trust;
