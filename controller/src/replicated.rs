//! The controller as a Raft state machine.
//!
//! What is replicated is the *request* together with the inputs the handler needs that are not
//! in the state: the leader's view of live brokers when it proposed, and the election policy.
//! Every replica runs the same pure handler on the same state with the same inputs, in log
//! order, so they all reach the same decision, and a decision exists only once its entry is
//! committed. Handling in `apply` (rather than computing events on the leader and replicating
//! them) also serializes requests: two concurrent requests can never both be validated against
//! the same old state.

use serde::Deserialize;
use serde::Serialize;

use rocketraft_raft::AppStateMachine;
use rocketraft_raft::StateMachineError;

use crate::elect::DefaultElectPolicy;
use crate::event::apply_all;
use crate::handler::handle;
use crate::handler::ControllerRequest;
use crate::handler::ControllerResponse;
use crate::liveness::AliveBrokers;
use crate::metrics::{publish, SetsView};
use crate::state::ControllerState;
use rocketraft_remoting::Refusal;

/// A log entry: a state-changing request and the inputs decided by the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerCommand {
    pub request: ControllerRequest,
    /// Live brokers of the request's broker set(s), as the proposing leader saw them.
    pub alive: AliveBrokers,
    pub policy: DefaultElectPolicy,
}

/// What applying a command answered.
pub type CommandResult = Result<ControllerResponse, Refusal>;

/// A read served from the applied state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerQuery {
    /// A read-only request (`GET_REPLICA_INFO`, `GET_SYNC_STATE_DATA`) with the liveness it
    /// reports.
    Request {
        request: ControllerRequest,
        alive: AliveBrokers,
    },
    /// The whole state (admin tools and tests).
    State,
}

/// The answer to a [`ControllerQuery`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerQueryResponse {
    Request(CommandResult),
    State {
        state: ControllerState,
        last_applied: u64,
    },
}

/// The replicated controller state.
#[derive(Debug, Default)]
pub struct ControllerStateMachine {
    state: ControllerState,
    last_applied: u64,
    /// The per-set figures of `state` for the metrics, replaced after every change.
    view: SetsView,
}

impl ControllerStateMachine {
    pub fn new() -> Self {
        Self::default()
    }

    /// The per-set figures this state machine publishes (shared: keep a clone before handing
    /// the state machine to Raft).
    pub fn sets_view(&self) -> SetsView {
        self.view.clone()
    }
}

#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    state: ControllerState,
    last_applied: u64,
}

impl AppStateMachine for ControllerStateMachine {
    type Command = ControllerCommand;
    type Response = CommandResult;
    type Query = ControllerQuery;
    type QueryResponse = ControllerQueryResponse;

    fn apply(&mut self, index: u64, command: ControllerCommand) -> CommandResult {
        self.last_applied = index;
        let (response, events) = handle(
            &self.state,
            &command.request,
            &command.alive,
            &command.policy,
        )?;
        apply_all(&mut self.state, &events);
        if !events.is_empty() {
            tracing::info!(index, ?events, "controller state changed");
            publish(&self.view, &self.state);
        }
        debug_assert!(
            self.state.check_invariants().is_ok(),
            "{:?}",
            self.state.check_invariants()
        );
        Ok(response)
    }

    fn query(&self, query: &ControllerQuery) -> ControllerQueryResponse {
        match query {
            ControllerQuery::Request { request, alive } => {
                let result = match request {
                    ControllerRequest::GetReplicaInfo(_)
                    | ControllerRequest::GetSyncStateData(_) => {
                        handle(&self.state, request, alive, &DefaultElectPolicy::default())
                            .map(|(response, _no_events)| response)
                    }
                    _ => Err(Refusal::new(
                        rocketraft_remoting::response_code::CONTROLLER_INVALID_REQUEST,
                        "not a read-only request",
                    )),
                };
                ControllerQueryResponse::Request(result)
            }
            ControllerQuery::State => ControllerQueryResponse::State {
                state: self.state.clone(),
                last_applied: self.last_applied,
            },
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, StateMachineError> {
        serde_json::to_vec(&SnapshotBody {
            state: self.state.clone(),
            last_applied: self.last_applied,
        })
        .map_err(StateMachineError::snapshot_failed)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), StateMachineError> {
        let body: SnapshotBody =
            serde_json::from_slice(bytes).map_err(StateMachineError::invalid_snapshot)?;
        body.state
            .check_invariants()
            .map_err(StateMachineError::invalid_snapshot)?;
        self.state = body.state;
        self.last_applied = body.last_applied;
        publish(&self.view, &self.state);
        Ok(())
    }
}
