//! Test scaffolding: a Raft type config and a small, real in-memory key-value state machine with
//! serde snapshots, so openraft's storage suite can run against `RocksLogStore`.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::Mutex;

use futures::StreamExt;
use openraft::alias::LogIdOf;
use openraft::alias::SnapshotMetaOf;
use openraft::alias::SnapshotOf;
use openraft::alias::StoredMembershipOf;
use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use openraft::Snapshot;
use openraft::SnapshotMeta;
use openraft::StoredMembership;
use serde::Deserialize;
use serde::Serialize;

/// A client command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvRequest {
    /// Set `key` to `value`.
    Set { key: String, value: String },
}

impl fmt::Display for KvRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvRequest::Set { key, value } => write!(f, "set {key}={value}"),
        }
    }
}

/// The answer to a command: the previous value of the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvResponse {
    pub previous: Option<String>,
}

openraft::declare_raft_types!(
    /// Type config for the tests.
    pub TestConfig:
        D = KvRequest,
        R = KvResponse,
);

/// Everything the state machine holds; also the snapshot body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KvData {
    pub last_applied: Option<LogIdOf<TestConfig>>,
    pub last_membership: StoredMembershipOf<TestConfig>,
    pub kv: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
struct StoredSnapshot {
    meta: SnapshotMetaOf<TestConfig>,
    data: Vec<u8>,
}

/// In-memory key-value state machine.
#[derive(Debug, Default)]
pub struct KvStateMachine {
    pub data: KvData,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
}

/// Builds a snapshot from a point-in-time copy of the state machine.
pub struct KvSnapshotBuilder {
    data: KvData,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
}

fn invalid(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl RaftSnapshotBuilder<TestConfig> for KvSnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TestConfig, Vec<u8>>, io::Error> {
        let bytes = serde_json::to_vec(&self.data).map_err(invalid)?;
        let meta = SnapshotMeta {
            last_log_id: self.data.last_applied,
            last_membership: self.data.last_membership.clone(),
        };
        *self.current.lock().expect("snapshot lock") = Some(StoredSnapshot {
            meta: meta.clone(),
            data: bytes.clone(),
        });
        Ok(Snapshot {
            meta,
            snapshot: bytes,
        })
    }
}

impl RaftStateMachine<TestConfig> for KvStateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = KvSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TestConfig>>, StoredMembershipOf<TestConfig>), io::Error> {
        Ok((self.data.last_applied, self.data.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<TestConfig>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            self.data.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => KvResponse { previous: None },
                EntryPayload::Normal(KvRequest::Set { key, value }) => KvResponse {
                    previous: self.data.kv.insert(key, value),
                },
                EntryPayload::Membership(m) => {
                    self.data.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    KvResponse { previous: None }
                }
            };
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        KvSnapshotBuilder {
            data: self.data.clone(),
            current: self.current.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TestConfig>,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        let data: KvData = serde_json::from_slice(&snapshot).map_err(invalid)?;
        if data.last_applied != meta.last_log_id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "snapshot body is at {:?} but its meta says {:?}",
                    data.last_applied, meta.last_log_id
                ),
            ));
        }
        self.data = data;
        *self.current.lock().expect("snapshot lock") = Some(StoredSnapshot {
            meta: meta.clone(),
            data: snapshot,
        });
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TestConfig, Vec<u8>>>, io::Error> {
        let current = self.current.lock().expect("snapshot lock").clone();
        Ok(current.map(|s| Snapshot {
            meta: s.meta,
            snapshot: s.data,
        }))
    }
}
