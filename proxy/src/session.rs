//! What a proxy knows about the clients connected to it right now: their Telemetry streams.
//!
//! This is the only client state a proxy holds, and it is soft: a Telemetry stream lives on one
//! proxy, so that proxy is the one that can push commands (RecoverOrphanedTransaction) to the
//! client. Every request works without it (a client whose settings this proxy never saw, e.g.
//! after a restart, is served like any other), and a client that reconnects elsewhere
//! re-announces its settings there.
//!
//! Transactions: a gRPC producer has no producer group, so (as RocketMQ's proxy does) the half
//! message's producer group is its topic. The proxy registers itself with every master of each
//! topic its connected producers publish, as a Remoting producer of that group, so a broker's
//! CHECK_TRANSACTION_STATE reaches a proxy that has a producer of the topic connected; the
//! proxy turns it into a RecoverOrphanedTransaction pushed down that producer's stream.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::mpsc;
use tonic::Status as GrpcStatus;

use crate::pb;

/// The sending half of a Telemetry stream.
pub type TelemetrySender = mpsc::Sender<Result<pb::TelemetryCommand, GrpcStatus>>;

/// One Telemetry stream.
#[derive(Clone)]
pub struct Session {
    pub client_id: String,
    /// Namespaced (`{namespace}%{topic}`) topics the client publishes.
    pub topics: BTreeSet<String>,
    pub sender: TelemetrySender,
}

/// The Telemetry streams of this proxy.
#[derive(Default)]
pub struct Sessions {
    next: AtomicU64,
    round_robin: AtomicU64,
    streams: Mutex<HashMap<u64, Session>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Session>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new stream; returns its key.
    pub fn open(&self, client_id: String, sender: TelemetrySender) -> u64 {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            key,
            Session {
                client_id,
                topics: BTreeSet::new(),
                sender,
            },
        );
        key
    }

    /// The topics a stream's client publishes (from its Settings).
    pub fn set_topics(&self, key: u64, topics: BTreeSet<String>) {
        if let Some(s) = self.lock().get_mut(&key) {
            s.topics = topics;
        }
    }

    pub fn close(&self, key: u64) {
        self.lock().remove(&key);
    }

    /// Forgets every stream of a client that said it is terminating; returns how many.
    pub fn close_client(&self, client_id: &str) -> usize {
        let mut streams = self.lock();
        let before = streams.len();
        streams.retain(|_, s| s.client_id != client_id);
        before - streams.len()
    }

    /// Every topic some connected producer publishes.
    pub fn published_topics(&self) -> BTreeSet<String> {
        self.lock()
            .values()
            .flat_map(|s| s.topics.iter().cloned())
            .collect()
    }

    /// One connected producer of `topic` (round robin), if any.
    pub fn publisher_of(&self, topic: &str) -> Option<Session> {
        let streams = self.lock();
        let mut candidates: Vec<&Session> = streams
            .values()
            .filter(|s| s.topics.contains(topic) && !s.sender.is_closed())
            .collect();
        if candidates.is_empty() {
            return None;
        }
        candidates.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        let i = self.round_robin.fetch_add(1, Ordering::Relaxed) as usize % candidates.len();
        Some(candidates[i].clone())
    }

    /// How many streams are open (for tests and logs).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A transaction id as this proxy hands it out: everything EndTransaction needs, so any proxy
/// can end a transaction another one started (URL-safe base64 of
/// `tx1 brokerName halfQueueOffset commitLogOffset messageId`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionId {
    pub broker_name: String,
    pub queue_offset: i64,
    pub commit_log_offset: i64,
    pub message_id: String,
    /// The half message asked for tracing: whichever proxy ends the transaction writes its
    /// `EndTransaction` trace record.
    pub traced: bool,
}

impl TransactionId {
    pub fn encode(&self) -> String {
        let mut text = format!(
            "tx1 {} {} {} {}",
            self.broker_name, self.queue_offset, self.commit_log_offset, self.message_id
        );
        if self.traced {
            text.push_str(" t");
        }
        rocketraft_common::base64::encode_url_safe(text.as_bytes())
    }

    pub fn parse(text: &str) -> Result<TransactionId, BadTransactionId> {
        let bytes = rocketraft_common::base64::decode(text).ok_or(BadTransactionId::NotIssued)?;
        let text = String::from_utf8(bytes).map_err(|_| BadTransactionId::NotUtf8)?;
        let fields: Vec<&str> = text.split(' ').collect();
        let (fields, traced) = match fields.as_slice() {
            [head @ .., "t"] if head.len() == 5 => (head, true),
            all => (all, false),
        };
        match fields {
            ["tx1", broker, qoff, phy, id] => Ok(TransactionId {
                broker_name: broker.to_string(),
                queue_offset: qoff
                    .parse()
                    .map_err(|_| BadTransactionId::HalfOffset(qoff.to_string()))?,
                commit_log_offset: phy
                    .parse()
                    .map_err(|_| BadTransactionId::CommitLogOffset(phy.to_string()))?,
                message_id: id.to_string(),
                traced,
            }),
            _ => Err(BadTransactionId::NotIssued),
        }
    }
}

/// Why a transaction id does not parse ([`TransactionId::parse`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadTransactionId {
    #[error("transaction id is not one this proxy issued")]
    NotIssued,
    #[error("transaction id is not UTF-8")]
    NotUtf8,
    #[error("bad half offset {0:?} in the transaction id")]
    HalfOffset(String),
    #[error("bad CommitLog offset {0:?} in the transaction id")]
    CommitLogOffset(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_ids_round_trip_and_garbage_is_refused() {
        let id = TransactionId {
            broker_name: "broker-a".into(),
            queue_offset: 7,
            commit_log_offset: 123_456,
            message_id: "0A0B0C".into(),
            traced: false,
        };
        assert_eq!(TransactionId::parse(&id.encode()), Ok(id.clone()));
        let traced = TransactionId { traced: true, ..id };
        assert_eq!(TransactionId::parse(&traced.encode()), Ok(traced));
        assert!(TransactionId::parse("%%%").is_err());
        assert!(
            TransactionId::parse(&rocketraft_common::base64::encode_url_safe(b"tx1 a b")).is_err()
        );
    }

    #[tokio::test]
    async fn publishers_are_found_by_topic_and_closed_streams_skipped() {
        let sessions = Sessions::default();
        let (tx1, rx1) = mpsc::channel(1);
        let (tx2, _rx2) = mpsc::channel(1);
        let a = sessions.open("a".into(), tx1);
        let b = sessions.open("b".into(), tx2);
        sessions.set_topics(a, BTreeSet::from(["T".to_string()]));
        sessions.set_topics(b, BTreeSet::from(["ns%T".to_string(), "U".to_string()]));
        assert_eq!(
            sessions.publisher_of("T").map(|s| s.client_id),
            Some("a".into())
        );
        assert_eq!(
            sessions.publisher_of("ns%T").map(|s| s.client_id),
            Some("b".into())
        );
        assert!(sessions.publisher_of("V").is_none());
        assert_eq!(sessions.published_topics().len(), 3);
        drop(rx1);
        assert!(
            sessions.publisher_of("T").is_none(),
            "a closed stream is skipped"
        );
        sessions.close(a);
        assert_eq!(sessions.close_client("b"), 1);
        assert_eq!(sessions.close_client("b"), 0);
        assert!(sessions.is_empty());
    }
}
