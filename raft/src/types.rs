//! The Raft type configuration shared by every Rocketraft Raft group.
//!
//! The library is generic over the application's state machine ([`crate::AppStateMachine`]), but
//! openraft's type configuration is concrete: a log entry carries the application command as JSON
//! text inside a [`Request`], tagged with the proposing client and a serial number so that a
//! retried proposal is applied once ([`crate::state_machine`] keeps the de-duplication table).

use std::fmt;

use serde::Deserialize;
use serde::Serialize;

use crate::state_machine::StateMachineError;

/// A proposal: one application command, JSON-encoded, from `client` with sequence number `serial`.
///
/// `(client, serial)` identifies the proposal across retries and forwarding: if it is committed
/// twice (a retry after an unknown outcome), the second copy is not applied again and answers
/// with the first copy's response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Random id of the proposing process (one per [`crate::RaftNode`] start).
    pub client: u64,
    /// Per-client serial, starting at 1.
    pub serial: u64,
    /// The application command as JSON.
    pub payload: String,
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request({:x}#{}, {} bytes)",
            self.client,
            self.serial,
            self.payload.len()
        )
    }
}

/// What applying an entry answered: the application response as JSON, or why the command could
/// not be decoded (deterministic on every replica).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// `Ok(json)` of the application's response, `Err` if the command was undecodable.
    pub result: Result<String, ApplyError>,
}

/// Why a committed command was not applied: the text of the [`StateMachineError`] it failed
/// with.
///
/// Only the text is kept, and it serializes as a plain JSON string: replies are stored in
/// snapshots on disk (the de-duplication table) and sent to the peers that forwarded the write,
/// and both held a `String` here before this type existed, so old snapshots still load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(transparent)]
#[error("{reason}")]
pub struct ApplyError {
    reason: String,
}

impl ApplyError {
    /// The reason, as the state machine reported it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl From<StateMachineError> for ApplyError {
    fn from(e: StateMachineError) -> Self {
        ApplyError {
            reason: e.to_string(),
        }
    }
}

impl Reply {
    pub(crate) fn empty() -> Self {
        Reply {
            result: Ok(String::new()),
        }
    }
}

openraft::declare_raft_types!(
    /// Rocketraft's Raft types: `u64` node ids, [`openraft::BasicNode`] (the peer's gRPC
    /// address), tokio.
    pub TypeConfig:
        D = Request,
        R = Reply,
);

/// A node id.
pub type NodeId = u64;
/// The openraft handle with our types.
pub type Raft = openraft::Raft<TypeConfig, crate::state_machine::StateMachineStore>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_keeps_the_json_shape_snapshots_hold() {
        let err = Reply {
            result: Err(ApplyError::from(StateMachineError::UndecodableQuery(
                "x".to_string(),
            ))),
        };
        let text = serde_json::to_string(&err).expect("json");
        assert_eq!(text, r#"{"result":{"Err":"undecodable query: x"}}"#);
        assert_eq!(serde_json::from_str::<Reply>(&text).expect("back"), err);
        let ok: Reply = serde_json::from_str(r#"{"result":{"Ok":"7"}}"#).expect("ok");
        assert_eq!(ok.result, Ok("7".to_string()));
    }
}
