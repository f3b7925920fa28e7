//! A small replicated key-value store: string keys holding an integer or a string, with read,
//! write and compare-and-set. It is the `raft-kv` workload's system under test (the
//! `rocketraft-raft-kv` server of the jepsen crate and `rocketraft-jepsen run --workload
//! raft-kv`): the plainest possible user of this library, so that a linearizability violation
//! found there is the library's, not an application's.
//!
//! - [`KvStateMachine`]: the [`AppStateMachine`]. Writes and CAS are log entries; a CAS is
//!   decided in `apply` (on the committed, ordered state), so its answer is final.
//! - [`wire`]: the request codes and JSON bodies the server speaks over Rocketraft's Remoting
//!   protocol (private codes 9001-9004), shared by the server and the harness's client.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::Serialize;

use crate::state_machine::AppStateMachine;
use crate::state_machine::StateMachineError;

/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest string value accepted, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Why a command or key is refused before it is proposed (nothing happened).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("the key is empty")]
    EmptyKey,
    #[error("a key of {len} bytes is over the limit of {max}", max = MAX_KEY_BYTES)]
    KeyTooLong { len: usize },
    #[error("a value of {len} bytes is over the limit of {max}", max = MAX_VALUE_BYTES)]
    ValueTooLong { len: usize },
}

/// A value: an integer or a string (JSON number or string).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KvValue {
    Int(i64),
    Str(String),
}

impl fmt::Display for KvValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvValue::Int(i) => write!(f, "{i}"),
            KvValue::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// A state-changing command (one log entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum KvCommand {
    /// `key` := `value`.
    Write { key: String, value: KvValue },
    /// `key` := `new` if `key` holds `expected` (`None`: if `key` is absent).
    Cas {
        key: String,
        expected: Option<KvValue>,
        new: KvValue,
    },
}

impl KvCommand {
    /// Why the command is refused before it is proposed, if it is.
    pub fn validate(&self) -> Result<(), KvError> {
        let (key, values): (&str, Vec<&KvValue>) = match self {
            KvCommand::Write { key, value } => (key, vec![value]),
            KvCommand::Cas {
                key, expected, new, ..
            } => (key, expected.iter().chain([new]).collect()),
        };
        validate_key(key)?;
        for value in values {
            if let KvValue::Str(s) = value {
                if s.len() > MAX_VALUE_BYTES {
                    return Err(KvError::ValueTooLong { len: s.len() });
                }
            }
        }
        Ok(())
    }
}

/// Why a key is refused, if it is.
pub fn validate_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KvError::KeyTooLong { len: key.len() });
    }
    Ok(())
}

/// What applying a command answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvResponse {
    /// Always true for a write; for a CAS, whether the compare held and the value was set.
    pub applied: bool,
    /// The key's value just before the command (for a CAS that did not apply: its value now).
    pub previous: Option<KvValue>,
}

/// A read-only query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum KvQuery {
    /// The value of `key` (`None`: absent).
    Read { key: String },
}

/// The replicated map.
#[derive(Debug, Default)]
pub struct KvStateMachine {
    data: BTreeMap<String, KvValue>,
}

impl KvStateMachine {
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `key` in this replica's applied state.
    pub fn get(&self, key: &str) -> Option<&KvValue> {
        self.data.get(key)
    }
}

impl AppStateMachine for KvStateMachine {
    type Command = KvCommand;
    type Response = KvResponse;
    type Query = KvQuery;
    type QueryResponse = Option<KvValue>;

    fn apply(&mut self, index: u64, command: KvCommand) -> KvResponse {
        match command {
            KvCommand::Write { key, value } => {
                tracing::debug!(index, %key, %value, "write");
                let previous = self.data.insert(key, value);
                KvResponse {
                    applied: true,
                    previous,
                }
            }
            KvCommand::Cas { key, expected, new } => {
                let current = self.data.get(&key).cloned();
                if current == expected {
                    tracing::debug!(index, %key, %new, "cas applied");
                    let previous = self.data.insert(key, new);
                    KvResponse {
                        applied: true,
                        previous,
                    }
                } else {
                    tracing::debug!(index, %key, ?current, ?expected, "cas compare failed");
                    KvResponse {
                        applied: false,
                        previous: current,
                    }
                }
            }
        }
    }

    fn query(&self, query: &KvQuery) -> Option<KvValue> {
        match query {
            KvQuery::Read { key } => self.data.get(key).cloned(),
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, StateMachineError> {
        serde_json::to_vec(&self.data).map_err(StateMachineError::snapshot_failed)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), StateMachineError> {
        self.data = serde_json::from_slice(bytes)
            .map_err(|e| StateMachineError::invalid_snapshot(format!("kv snapshot: {e}")))?;
        Ok(())
    }
}

/// The Remoting protocol of `rocketraft-raft-kv`: request codes in a private range (RocketMQ
/// uses none of them) with JSON bodies, and the response codes besides `SUCCESS` (0).
pub mod wire {
    use serde::Deserialize;
    use serde::Serialize;

    use super::KvValue;

    /// Read a key: [`ReadRequest`] -> [`ReadResponse`].
    pub const READ: i32 = 9001;
    /// Write a key: [`WriteRequest`] -> empty body.
    pub const WRITE: i32 = 9002;
    /// Compare-and-set: [`CasRequest`] -> [`CasResponse`].
    pub const CAS: i32 = 9003;
    /// This node's Raft status: empty body -> [`crate::NodeStatus`].
    pub const STATUS: i32 = 9004;
    /// Every code the server answers.
    pub const CODES: [i32; 4] = [READ, WRITE, CAS, STATUS];

    /// Response: success.
    pub const SUCCESS: i32 = 0;
    /// Response: no committed answer in time (timeout, leader change, node failure); a write or
    /// CAS may or may not take effect.
    pub const OUTCOME_UNKNOWN: i32 = 9100;
    /// Response: refused before it was proposed (bad request): nothing happened.
    pub const REFUSED: i32 = 9101;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ReadRequest {
        pub key: String,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ReadResponse {
        /// `None`: the key is absent.
        pub value: Option<KvValue>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct WriteRequest {
        pub key: String,
        pub value: KvValue,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct CasRequest {
        pub key: String,
        /// `None`: the key must be absent.
        pub expected: Option<KvValue>,
        pub new: KvValue,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct CasResponse {
        /// Whether the compare held and `new` was set (decided in log order, final).
        pub applied: bool,
        /// The value the compare saw.
        pub current: Option<KvValue>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(key: &str, value: KvValue) -> KvCommand {
        KvCommand::Write {
            key: key.to_string(),
            value,
        }
    }

    fn cas(key: &str, expected: Option<KvValue>, new: KvValue) -> KvCommand {
        KvCommand::Cas {
            key: key.to_string(),
            expected,
            new,
        }
    }

    fn read(sm: &KvStateMachine, key: &str) -> Option<KvValue> {
        sm.query(&KvQuery::Read {
            key: key.to_string(),
        })
    }

    #[test]
    fn write_read_and_cas_follow_the_register_semantics() {
        let mut sm = KvStateMachine::new();
        assert_eq!(read(&sm, "a"), None);
        // CAS from absent succeeds only while the key is absent.
        let r = sm.apply(1, cas("a", None, KvValue::Int(1)));
        assert_eq!(
            r,
            KvResponse {
                applied: true,
                previous: None
            }
        );
        let r = sm.apply(2, cas("a", None, KvValue::Int(9)));
        assert_eq!(
            r,
            KvResponse {
                applied: false,
                previous: Some(KvValue::Int(1))
            }
        );
        assert_eq!(read(&sm, "a"), Some(KvValue::Int(1)));
        // A write replaces whatever was there and reports it.
        let r = sm.apply(3, write("a", KvValue::Str("x".into())));
        assert_eq!(r.previous, Some(KvValue::Int(1)));
        assert!(r.applied);
        // The compare is by type and value: the string "1" is not the integer 1.
        sm.apply(4, write("b", KvValue::Int(1)));
        assert!(
            !sm.apply(5, cas("b", Some(KvValue::Str("1".into())), KvValue::Int(2)))
                .applied
        );
        assert!(
            sm.apply(6, cas("b", Some(KvValue::Int(1)), KvValue::Int(2)))
                .applied
        );
        assert_eq!(read(&sm, "b"), Some(KvValue::Int(2)));
        // Keys are independent.
        assert_eq!(read(&sm, "a"), Some(KvValue::Str("x".into())));
        assert_eq!(read(&sm, "c"), None);
    }

    #[test]
    fn snapshots_restore_the_same_state_and_reject_garbage() {
        let mut sm = KvStateMachine::new();
        sm.apply(1, write("a", KvValue::Int(-7)));
        sm.apply(2, write("b", KvValue::Str("hello".into())));
        let bytes = sm.snapshot().expect("snapshot");
        let mut other = KvStateMachine::new();
        other.apply(1, write("stale", KvValue::Int(1)));
        other.restore(&bytes).expect("restore");
        assert_eq!(read(&other, "a"), Some(KvValue::Int(-7)));
        assert_eq!(read(&other, "b"), Some(KvValue::Str("hello".into())));
        assert_eq!(read(&other, "stale"), None, "restore replaces everything");
        assert!(other.restore(b"not json").is_err());
        assert_eq!(
            read(&other, "a"),
            Some(KvValue::Int(-7)),
            "a failed restore changes nothing"
        );
    }

    #[test]
    fn commands_and_values_have_a_stable_json_form() {
        let c = cas("k", Some(KvValue::Int(3)), KvValue::Str("s".into()));
        let text = serde_json::to_string(&c).expect("json");
        assert_eq!(text, r#"{"op":"cas","key":"k","expected":3,"new":"s"}"#);
        assert_eq!(serde_json::from_str::<KvCommand>(&text).expect("back"), c);
        let body: wire::ReadResponse =
            serde_json::from_str(r#"{"value":null}"#).expect("absent value");
        assert_eq!(body.value, None);
        let body: wire::ReadResponse = serde_json::from_str(r#"{"value":"12"}"#).expect("string");
        assert_eq!(body.value, Some(KvValue::Str("12".into())));
    }

    #[test]
    fn oversized_keys_and_values_are_refused() {
        assert!(write("", KvValue::Int(1)).validate().is_err());
        assert!(write(&"k".repeat(MAX_KEY_BYTES + 1), KvValue::Int(1))
            .validate()
            .is_err());
        assert!(cas(
            "k",
            Some(KvValue::Str("v".repeat(MAX_VALUE_BYTES + 1))),
            KvValue::Int(1)
        )
        .validate()
        .is_err());
        assert!(cas("k", None, KvValue::Str("ok".into())).validate().is_ok());
        // The texts the raft-kv server answers with.
        assert_eq!(
            validate_key("").map_err(|e| e.to_string()),
            Err("the key is empty".to_string())
        );
        assert_eq!(
            validate_key(&"k".repeat(MAX_KEY_BYTES + 1)).map_err(|e| e.to_string()),
            Err("a key of 1025 bytes is over the limit of 1024".to_string())
        );
        assert_eq!(
            write("k", KvValue::Str("v".repeat(MAX_VALUE_BYTES + 1)))
                .validate()
                .map_err(|e| e.to_string()),
            Err("a value of 65537 bytes is over the limit of 65536".to_string())
        );
    }
}
