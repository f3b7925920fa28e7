//! The metadata log: topic configurations, subscription groups and ACL users/ACLs travel to the
//! replicas as records of the replicated CommitLog (issue 13, hole 5).
//!
//! In controller mode a metadata change (UPDATE_AND_CREATE_TOPIC, DELETE_TOPIC_IN_BROKER,
//! UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, DELETE_SUBSCRIPTIONGROUP, the AUTH create/update/delete
//! user and ACL requests) goes through one lane on the master ([`MetadataLog::commit`]):
//!
//! 1. the master waits until every metadata record of its log is confirmed and applied
//!    (`MetadataLog::settle`), then computes the resulting state (a full topic config, group
//!    config, user or ACL, or a deletion) from its applied metadata,
//! 2. appends it as a record of the reserved topic [`METADATA_TOPIC`] (queue 0; the body is
//!    [`encode`]'s format: magic `RRMD`, a version byte, then the JSON of [`MetadataChange`]),
//! 3. waits, as a SYNC_MASTER send does (same lease check, same ack wait in [`crate::ha`]), until
//!    **every** SyncStateSet member holds it, whatever the send ack policy says,
//! 4. applies it to its own metadata store and only then answers SUCCESS.
//!
//! If the SyncStateSet does not confirm in time the request fails as such a send would
//! (FLUSH_SLAVE_TIMEOUT, SERVICE_NOT_AVAILABLE without a lease, SYSTEM_ERROR when the set is below
//! `min_in_sync_replicas`) and the change is **not applied**: no replica shows it. Like a message
//! whose send timed out, the record stays in the master's log; should the replicas confirm it
//! later, every replica applies it then (never out of log order, never on one replica only), and
//! the master plans no further change until that happened.
//!
//! Every replica (master and slaves) applies records only below its **confirm offset**, in log
//! order ([`MetadataLog::apply_through`], driven by [`apply_loop`]): what is applied is held by
//! every SyncStateSet member, so a failover never takes an applied change back, and a truncated
//! tail never held an applied record. Records carry the resulting state, not an operation, so
//! applying one twice is harmless. The next queue offset to apply is stored in the metadata
//! store (`kv` key `metalog/applied`, synced); a broker that restarts applies whatever lies
//! between that offset and its recovered confirm offset before it serves requests.
//!
//! The topic is hidden as RocketMQ hides its system topics: it has no topic configuration (so it
//! is neither registered with the NameServers nor listed by GET_ALL_TOPIC_CONFIG), sends to it
//! are refused, it cannot be created as a topic, and neither VIEW_MESSAGE_BY_ID nor
//! CONSUMER_SEND_MSG_BACK hand out its records (they carry ACL passwords).
//!
//! Without controller mode there is no replica: a change is applied to the metadata store
//! directly (synced) and answered.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rocketraft_common::acl::{AclInfo, UserInfo};
use rocketraft_common::message::{self, Message};
use rocketraft_common::TopicConfig;
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::Refusal;
use serde::{Deserialize, Serialize};

use crate::store::metadata::MetadataStore;
use crate::store::{BrokerMessage, StoreError};
use crate::BrokerInner;

/// The reserved system topic of metadata records (queue 0).
pub const METADATA_TOPIC: &str = "rmq_sys_METADATA_LOG";
/// The first bytes of every record body.
const MAGIC: &[u8; 4] = b"RRMD";
/// The body format version [`encode`] writes.
const VERSION: u8 = 1;
/// The `kv` key holding the next queue offset of [`METADATA_TOPIC`] to apply (i64 big-endian).
const APPLIED_KEY: &[u8] = b"metalog/applied";
/// The header a master adds to its GET_ALL_* metadata answers: its applied offset when it read
/// the state (see [`MetadataLog::copy_allowed`]).
pub const OFFSET_HEADER: &str = "metadataLogOffset";

/// One metadata change, as the resulting state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum MetadataChange {
    /// Creates or replaces a topic configuration.
    PutTopic {
        config: TopicConfig,
    },
    DeleteTopic {
        topic: String,
    },
    /// Creates or replaces a subscription group (`SubscriptionGroupConfig` JSON as sent).
    PutGroup {
        group: String,
        config: String,
    },
    DeleteGroup {
        group: String,
    },
    /// Creates or replaces a user (password included).
    PutUser {
        user: UserInfo,
    },
    /// Deletes a user and its ACL.
    DeleteUser {
        username: String,
    },
    /// Creates or replaces a subject's whole ACL.
    PutAcl {
        acl: AclInfo,
    },
    DeleteAcl {
        subject: String,
    },
    /// Expires lite topics ([`crate::lite`]): each queue as the master's expiry check saw it.
    /// Applied where the record lies in the log, on every replica alike: a queue that got a
    /// record between what the check saw and this record is left alone.
    ExpireLite {
        queues: Vec<ExpiredQueue>,
    },
}

/// One lite topic's queue an expiry check found expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpiredQueue {
    /// The LMQ, `%LMQ%$parent$lite`.
    pub queue: String,
    /// Its max offset when the check looked (the next queue offset).
    pub next: i64,
}

impl MetadataChange {
    fn describe(&self) -> String {
        match self {
            MetadataChange::PutTopic { config } => format!("put topic {}", config.topic_name),
            MetadataChange::DeleteTopic { topic } => format!("delete topic {topic}"),
            MetadataChange::PutGroup { group, .. } => format!("put group {group}"),
            MetadataChange::DeleteGroup { group } => format!("delete group {group}"),
            MetadataChange::PutUser { user } => format!("put user {}", user.username),
            MetadataChange::DeleteUser { username } => format!("delete user {username}"),
            MetadataChange::PutAcl { acl } => format!("put ACL of {}", acl.subject),
            MetadataChange::DeleteAcl { subject } => format!("delete ACL of {subject}"),
            MetadataChange::ExpireLite { queues } => {
                format!("expire {} lite topic(s)", queues.len())
            }
        }
    }
}

/// Why a metadata record body cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum MetalogError {
    #[error("not a metadata record (bad magic)")]
    BadMagic,
    #[error("metadata record without a version")]
    NoVersion,
    #[error("metadata record version {0} is not supported")]
    UnsupportedVersion(u8),
    /// The change's JSON does not encode or does not parse.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The CommitLog record holding the body does not decode.
    #[error(transparent)]
    Record(#[from] message::DecodeError),
}

/// The body of a metadata record: `RRMD`, the version byte, the change as JSON.
pub fn encode(change: &MetadataChange) -> Result<Vec<u8>, MetalogError> {
    let json = serde_json::to_vec(change)?;
    let mut body = Vec::with_capacity(MAGIC.len() + 1 + json.len());
    body.extend_from_slice(MAGIC);
    body.push(VERSION);
    body.extend_from_slice(&json);
    Ok(body)
}

/// Parses a body [`encode`] wrote.
pub fn decode(body: &[u8]) -> Result<MetadataChange, MetalogError> {
    let rest = body
        .strip_prefix(MAGIC.as_slice())
        .ok_or(MetalogError::BadMagic)?;
    match rest.split_first() {
        Some((&VERSION, json)) => Ok(serde_json::from_slice(json)?),
        Some((v, _)) => Err(MetalogError::UnsupportedVersion(*v)),
        None => Err(MetalogError::NoVersion),
    }
}

/// Whether `topic` is the reserved metadata topic (hidden from clients).
pub fn is_reserved(topic: &str) -> bool {
    topic == METADATA_TOPIC
}

/// The metadata lane and applier of one broker.
pub struct MetadataLog {
    /// Serializes changes on this broker: each plan sees every change committed before it.
    lane: tokio::sync::Mutex<()>,
    /// Serializes application (and the slave's periodic copy, which must not interleave).
    apply: parking_lot::Mutex<()>,
    /// The next queue offset of [`METADATA_TOPIC`] to apply (what the metadata store recorded).
    applied: AtomicI64,
}

impl MetadataLog {
    /// Reads the applied offset the metadata store recorded (0 for a new store).
    pub fn open(metadata: &MetadataStore) -> Result<MetadataLog, StoreError> {
        let applied = match metadata.get_kv(APPLIED_KEY)? {
            None => 0,
            Some(raw) => {
                let bytes: [u8; 8] = raw.as_slice().try_into().map_err(|_| {
                    StoreError::Metadata(format!(
                        "the applied metadata log offset has {} bytes, not 8",
                        raw.len()
                    ))
                })?;
                i64::from_be_bytes(bytes)
            }
        };
        Ok(MetadataLog {
            lane: tokio::sync::Mutex::new(()),
            apply: parking_lot::Mutex::new(()),
            applied: AtomicI64::new(applied),
        })
    }

    /// The next queue offset of [`METADATA_TOPIC`] this broker will apply.
    pub fn applied(&self) -> i64 {
        self.applied.load(Ordering::Acquire)
    }

    fn record_applied(&self, metadata: &MetadataStore, next: i64) -> Result<(), StoreError> {
        metadata.put_kv(APPLIED_KEY, &next.to_be_bytes(), true)?;
        self.applied.store(next, Ordering::Release);
        Ok(())
    }

    /// Commits a metadata change: `plan` validates the request and computes the resulting state
    /// from the applied metadata (an empty plan changes nothing). In controller mode the change
    /// is answered only once every SyncStateSet member holds its record (see the module docs).
    pub async fn commit(
        &self,
        inner: &BrokerInner,
        plan: impl FnOnce(&BrokerInner) -> Result<Vec<MetadataChange>, Refusal>,
    ) -> Result<(), Refusal> {
        let _lane = self.lane.lock().await;
        let Some(ha) = &inner.ha else {
            for change in plan(inner)? {
                apply_change(inner, &change, None)?;
            }
            return Ok(());
        };
        ha.check_writable().map_err(|e| {
            Refusal::new(
                response_code::SERVICE_NOT_AVAILABLE,
                format!("metadata changes go to the master of the broker set: {e}"),
            )
        })?;
        // Every policy below waits at most this long for the SyncStateSet.
        let policy = crate::ha::AckPolicy {
            all_ack_in_sync_state_set: true,
            ..inner.ack_policy()
        };
        self.settle(inner, ha, policy.timeout).await?;
        let changes = plan(inner)?;
        if changes.is_empty() {
            return Ok(());
        }
        let msgs = changes
            .iter()
            .map(|c| {
                let body = encode(c).map_err(|e| {
                    Refusal::system_error(format!(
                        "cannot encode the metadata change ({}): {e}",
                        c.describe()
                    ))
                })?;
                Ok(BrokerMessage::new(Message::new(METADATA_TOPIC, body), 0))
            })
            .collect::<Result<Vec<_>, Refusal>>()?;
        // Every SyncStateSet member must hold it, whatever the send ack policy.
        let result = inner.store_durably_with(msgs, &policy).await.map_err(|e| {
            let Refusal { code, remark } = Refusal::from(e);
            tracing::warn!(
                changes = ?changes.iter().map(MetadataChange::describe).collect::<Vec<_>>(),
                code,
                error = %remark,
                "metadata change not acknowledged by the SyncStateSet"
            );
            Refusal::new(
                code,
                format!(
                    "metadata change not acknowledged by the SyncStateSet, not applied: {remark}"
                ),
            )
        })?;
        // Every record up to `end` is held by every SyncStateSet member (logs are prefixes).
        let end = result.physical_offset + result.wrote_bytes as i64;
        self.apply_through_blocking(inner, end)?;
        if self.applied() < result.queue_offset + result.msg_num as i64 {
            return Err(Refusal::system_error(
                "the metadata change was replicated but is not applied yet",
            ));
        }
        Ok(())
    }

    /// Waits until every metadata record in this master's log is confirmed and applied, so
    /// that a plan sees them all: a record whose change was refused (not confirmed in time) may
    /// still be confirmed later, and after a restart the confirm offset starts from the
    /// checkpoint, below records that were acknowledged. Planning on top of a state without
    /// them would let the new record (a resulting state) undo them. Refuses like an unconfirmed
    /// change when they are not confirmed within `timeout`.
    async fn settle(
        &self,
        inner: &BrokerInner,
        ha: &crate::ha::HaState,
        timeout: Duration,
    ) -> Result<(), Refusal> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut arrivals = inner.store.subscribe_arrivals();
        loop {
            arrivals.borrow_and_update();
            self.apply_through_blocking(inner, inner.store.confirm_offset())?;
            let max = inner.store.get_max_offset_in_queue(METADATA_TOPIC, 0);
            if self.applied() >= max {
                return Ok(());
            }
            ha.check_writable().map_err(|e| {
                Refusal::new(
                    response_code::SERVICE_NOT_AVAILABLE,
                    format!("metadata changes go to the master of the broker set: {e}"),
                )
            })?;
            // The confirm offset moves with slave reports (and local appends).
            ha.on_local_append();
            let wait = tokio::time::timeout_at(deadline, arrivals.changed());
            if !matches!(wait.await, Ok(Ok(()))) {
                return Err(Refusal::new(
                    response_code::FLUSH_SLAVE_TIMEOUT,
                    format!(
                        "earlier metadata records (up to queue offset {max}, applied up to {}) are not confirmed by the SyncStateSet yet; change not applied",
                        self.applied()
                    ),
                ));
            }
        }
    }

    /// [`MetadataLog::apply_through`] from async code: applying does file and RocksDB I/O (an
    /// expiry rewrites ConsumeQueue files and deletes offsets), so on a multi-threaded runtime
    /// the worker hands its other tasks over while it blocks.
    fn apply_through_blocking(&self, inner: &BrokerInner, limit: i64) -> Result<usize, StoreError> {
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_thread {
            tokio::task::block_in_place(|| self.apply_through(inner, limit))
        } else {
            self.apply_through(inner, limit)
        }
    }

    /// Applies, in log order, every metadata record not applied yet whose end lies at or below
    /// `limit` (the confirm offset, or a record end the SyncStateSet acknowledged). Returns how
    /// many records were applied.
    pub fn apply_through(&self, inner: &BrokerInner, limit: i64) -> Result<usize, StoreError> {
        let _one = self.apply.lock();
        let store = &inner.store;
        let max = store.get_max_offset_in_queue(METADATA_TOPIC, 0);
        let mut next = self.applied();
        if next == max {
            return Ok(0);
        }
        if next > max {
            // Only an unclean election (a master outside the SyncStateSet) takes applied
            // records back; the periodic copy from the master catches up.
            tracing::warn!(
                applied = next,
                max,
                "the metadata log is shorter than what was applied (unclean election?)"
            );
            self.record_applied(&inner.metadata, max)?;
            return Ok(0);
        }
        let min = store.get_min_offset_in_queue(METADATA_TOPIC, 0);
        if next < min {
            tracing::warn!(
                applied = next,
                min,
                "metadata records were removed before this broker applied them; the copy from the master catches up"
            );
            next = min;
        }
        let mut applied = 0;
        while next < max {
            let Some(entry) = store.get_cq_entry(METADATA_TOPIC, 0, next) else {
                break;
            };
            if entry.is_valid() && entry.end() > limit {
                break;
            }
            if entry.is_valid() {
                match store.read_record(entry.commit_log_offset) {
                    None => break,
                    Some(rec) => match message::decode_message(&rec)
                        .map_err(MetalogError::from)
                        .and_then(|(m, _)| decode(&m.message.body))
                    {
                        Ok(change) => {
                            match apply_change(inner, &change, Some(entry.commit_log_offset)) {
                                Ok(()) => {
                                    tracing::info!(queue_offset = next, change = %change.describe(), "metadata change applied");
                                    applied += 1;
                                }
                                // An expiry only removes: one left unapplied keeps messages
                                // and offsets (the lite topic counts again, and a later check
                                // expires it again), so it must not hold back every later
                                // record behind a failing disk. Any other change is state the
                                // later records build on: retried until it applies.
                                Err(e) if matches!(change, MetadataChange::ExpireLite { .. }) => {
                                    tracing::error!(queue_offset = next, change = %change.describe(), error = %e, "lite topic expiry could not be applied; skipped (its lite topics stay)");
                                }
                                Err(e) => return Err(e),
                            }
                        }
                        Err(e) => tracing::error!(
                            queue_offset = next,
                            commit_log_offset = entry.commit_log_offset,
                            error = %e,
                            "unreadable metadata record skipped"
                        ),
                    },
                }
            }
            next += 1;
            self.record_applied(&inner.metadata, next)?;
        }
        Ok(applied)
    }

    /// Whether a slave may take the metadata its master answered with `master_offset` (the
    /// master's applied offset when it read the state): only if the master had applied at least
    /// what this broker has, so the copy never takes an applied change back. (The slave's own
    /// log replay then re-applies its later records, converging on the same state.) Returns the
    /// guard to hold while writing the copy.
    pub fn copy_allowed(
        &self,
        master_offset: Option<i64>,
    ) -> Option<parking_lot::MutexGuard<'_, ()>> {
        let guard = self.apply.lock();
        match master_offset {
            Some(m) if m < self.applied() => None,
            _ => Some(guard),
        }
    }
}

/// Applies one change to this broker's metadata (idempotent: a change is a resulting state).
/// `at` is the CommitLog offset of the change's record (`None` without replication: the change
/// is applied at the log's current end).
pub fn apply_change(
    inner: &BrokerInner,
    change: &MetadataChange,
    at: Option<i64>,
) -> Result<(), StoreError> {
    match change {
        MetadataChange::PutTopic { config } => {
            if inner.topics.get(&config.topic_name).as_ref() != Some(config) {
                inner.topics.upsert(config.clone())?;
                inner.register_trigger.notify_one();
            }
        }
        MetadataChange::DeleteTopic { topic } => {
            if inner.topics.delete(topic)? {
                inner.register_trigger.notify_one();
            }
        }
        MetadataChange::PutGroup { group, config } => {
            inner
                .metadata
                .put_subscription_group(group, config.as_bytes())?;
        }
        MetadataChange::DeleteGroup { group } => {
            inner.metadata.delete_subscription_group(group)?;
        }
        MetadataChange::ExpireLite { queues } => {
            let at = at.unwrap_or_else(|| inner.store.dispatched_phy_offset());
            inner.lite.apply_expiry(inner, queues, at)?;
        }
        MetadataChange::PutUser { .. }
        | MetadataChange::DeleteUser { .. }
        | MetadataChange::PutAcl { .. }
        | MetadataChange::DeleteAcl { .. } => {
            inner.acl.apply(change).map_err(|e| match e {
                crate::acl::AclStoreError::Store(e) => e,
                other => StoreError::Metadata(other.to_string()),
            })?;
        }
    }
    Ok(())
}

/// Applies confirmed metadata records as the confirm offset moves (every replica), and at least
/// every second.
pub async fn apply_loop(inner: Arc<BrokerInner>) {
    let mut arrivals = inner.store.subscribe_arrivals();
    loop {
        arrivals.borrow_and_update();
        // Most arrivals are messages: only go to the blocking pool when a record waits.
        let waiting =
            inner.store.get_max_offset_in_queue(METADATA_TOPIC, 0) != inner.metalog.applied();
        if waiting {
            let limit = inner.store.confirm_offset();
            let me = inner.clone();
            match tokio::task::spawn_blocking(move || me.metalog.apply_through(&me, limit)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot apply metadata records; retrying")
                }
                Err(e) => tracing::error!(error = %e, "metadata apply task failed"),
            }
        }
        tokio::select! {
            _ = arrivals.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_applied_offset_is_kept_and_gates_the_slave_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let metadata = MetadataStore::open(dir.path()).expect("open");
            let log = MetadataLog::open(&metadata).expect("log");
            assert_eq!(log.applied(), 0);
            log.record_applied(&metadata, 5).expect("record");
            // A master state read at an older offset would take applied changes back.
            assert!(log.copy_allowed(Some(4)).is_none());
            assert!(log.copy_allowed(Some(5)).is_some());
            assert!(log.copy_allowed(Some(9)).is_some());
            // A master that does not stamp its answers writes no metadata records.
            assert!(log.copy_allowed(None).is_some());
        }
        let metadata = MetadataStore::open(dir.path()).expect("reopen");
        assert_eq!(MetadataLog::open(&metadata).expect("log").applied(), 5);
        metadata
            .put_kv(APPLIED_KEY, b"bad", true)
            .expect("corrupt it");
        assert!(MetadataLog::open(&metadata).is_err());
    }

    #[test]
    fn records_round_trip_and_reject_foreign_bodies() {
        let changes = vec![
            MetadataChange::PutTopic {
                config: TopicConfig::new("T", 4),
            },
            MetadataChange::DeleteTopic { topic: "T".into() },
            MetadataChange::PutGroup {
                group: "G".into(),
                config: r#"{"groupName":"G","retryMaxTimes":3}"#.into(),
            },
            MetadataChange::DeleteGroup { group: "G".into() },
            MetadataChange::PutUser {
                user: UserInfo {
                    username: "alice".into(),
                    password: Some("pw".into()),
                    user_type: Some("Normal".into()),
                    user_status: None,
                },
            },
            MetadataChange::DeleteUser {
                username: "alice".into(),
            },
            MetadataChange::PutAcl {
                acl: AclInfo {
                    subject: "User:alice".into(),
                    policies: vec![],
                },
            },
            MetadataChange::DeleteAcl {
                subject: "User:alice".into(),
            },
            MetadataChange::ExpireLite {
                queues: vec![ExpiredQueue {
                    queue: "%LMQ%$P$a".into(),
                    next: 7,
                }],
            },
        ];
        for c in &changes {
            let body = encode(c).expect("encode");
            assert!(body.starts_with(b"RRMD\x01"));
            assert_eq!(&decode(&body).expect("decode"), c);
        }
        assert!(decode(b"hello").is_err());
        assert!(decode(b"RRMD").is_err());
        assert!(decode(b"RRMD\x02{}").is_err());
        assert!(decode(b"RRMD\x01{\"op\":\"nope\"}").is_err());
    }
}
