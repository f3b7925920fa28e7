//! The state-machine side of a Raft group: applies committed entries to the application's state
//! machine, de-duplicates retried proposals, and builds, stores and installs snapshots.
//!
//! The application implements [`AppStateMachine`] (typed commands, responses and queries, and a
//! byte snapshot of its state). [`StateMachineStore`] wraps it for openraft.
//!
//! ## Snapshots on disk
//! The current snapshot lives in `<dir>/current.snap`: the magic `RRSNAP01`, a little-endian `u32`
//! length of a JSON envelope (the snapshot meta, the de-duplication table), the envelope, the
//! application's bytes, and a trailing CRC32 of everything before it. It is written to a temporary
//! file, synced, renamed over the old one and the directory synced, so a crash leaves either the
//! old or the new snapshot, never a torn one. At start the state machine is restored from it, and
//! openraft re-applies the log entries after it (the log keeps them: logs are purged only up to the
//! snapshot).
//!
//! ## A full disk (issue 15 item 3)
//! openraft treats an error from [`RaftSnapshotBuilder::build_snapshot`] or
//! [`RaftStateMachine::install_snapshot`] as fatal (the node stops). So a snapshot write that
//! fails with an I/O error (ENOSPC above all) is not returned: the partial temporary file is
//! removed (the previous snapshot stays in place, untouched), the store marks its snapshots
//! **stalled** ([`SnapshotWatch::stalled`] says why) and writes the same bytes again every
//! [`SNAPSHOT_RETRY`] until the disk takes them. A build waits in its own task (openraft builds in
//! the background and starts no second build meanwhile; the node keeps applying and serving, and
//! the log is not purged past the old snapshot, so nothing is lost); an install waits in the
//! state-machine worker (applying pauses, like a slow disk). Once space is freed the snapshot that
//! was due is written and reported. A snapshot older than the one already on disk (a build
//! overtaken by an install while it waited) is not written over it. [`SnapshotWatch::close`]
//! (node shutdown) ends a wait with an error.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
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
use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde::Serialize;

use crate::types::ApplyError;
use crate::types::Reply;
use crate::types::Request;
use crate::types::TypeConfig;

/// What failed in an application state machine, or in the JSON coding around it.
///
/// The texts are those the node reports (in [`crate::RaftClientError::Rejected`], in the
/// de-duplication table, and in start-up and snapshot errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateMachineError {
    /// A command is not JSON of the application's command type (`index`: of the log entry that
    /// carries it; `None` before it is proposed).
    #[error("undecodable command{}: {reason}", at_index(.index))]
    UndecodableCommand { index: Option<u64>, reason: String },
    /// A query is not JSON of the application's query type.
    #[error("undecodable query: {0}")]
    UndecodableQuery(String),
    /// A command, response or answer (`what`) could not be encoded as JSON.
    #[error("unencodable {what}: {reason}")]
    Unencodable { what: &'static str, reason: String },
    /// The application could not serialize its state.
    #[error("{0}")]
    Snapshot(String),
    /// The bytes are not a snapshot the application can restore.
    #[error("{0}")]
    InvalidSnapshot(String),
    /// The application refused a command (e.g. in a leader-side prepare), with its reason.
    #[error("{0}")]
    Rejected(String),
}

fn at_index(index: &Option<u64>) -> String {
    index.map(|i| format!(" at index {i}")).unwrap_or_default()
}

impl StateMachineError {
    /// [`StateMachineError::Snapshot`] with `reason`'s text.
    pub fn snapshot_failed(reason: impl fmt::Display) -> Self {
        StateMachineError::Snapshot(reason.to_string())
    }

    /// [`StateMachineError::InvalidSnapshot`] with `reason`'s text.
    pub fn invalid_snapshot(reason: impl fmt::Display) -> Self {
        StateMachineError::InvalidSnapshot(reason.to_string())
    }

    /// [`StateMachineError::Rejected`] with `reason`'s text.
    pub fn rejected(reason: impl fmt::Display) -> Self {
        StateMachineError::Rejected(reason.to_string())
    }

    pub(crate) fn undecodable_command(index: Option<u64>, e: serde_json::Error) -> Self {
        StateMachineError::UndecodableCommand {
            index,
            reason: e.to_string(),
        }
    }

    pub(crate) fn unencodable(what: &'static str, e: serde_json::Error) -> Self {
        StateMachineError::Unencodable {
            what,
            reason: e.to_string(),
        }
    }
}

/// An application state machine replicated by Raft.
///
/// `apply` must be deterministic: every replica applies the same commands in the same order and
/// must reach the same state and answer. Anything time- or environment-dependent belongs in the
/// command, decided by the proposer.
pub trait AppStateMachine: Send + Sync + 'static {
    /// A state-changing command (a log entry).
    type Command: Serialize + DeserializeOwned + Send + 'static;
    /// What applying a command answers.
    type Response: Serialize + DeserializeOwned + Send + 'static;
    /// A read-only query.
    type Query: Serialize + DeserializeOwned + Send + 'static;
    /// What a query answers.
    type QueryResponse: Serialize + DeserializeOwned + Send + 'static;

    /// Applies `command`, committed at log `index`.
    fn apply(&mut self, index: u64, command: Self::Command) -> Self::Response;
    /// Answers a query from the current state.
    fn query(&self, query: &Self::Query) -> Self::QueryResponse;
    /// Serializes the whole state.
    fn snapshot(&self) -> Result<Vec<u8>, StateMachineError>;
    /// Replaces the whole state with a snapshot made by [`AppStateMachine::snapshot`]; on an
    /// error ([`StateMachineError::InvalidSnapshot`]) the state is unchanged.
    fn restore(&mut self, bytes: &[u8]) -> Result<(), StateMachineError>;
}

/// Object-safe, JSON-level view of an [`AppStateMachine`].
pub(crate) trait ErasedApp: Send + Sync {
    fn apply_json(&mut self, index: u64, command: &str) -> Result<String, StateMachineError>;
    fn query_json(&self, query: &str) -> Result<String, StateMachineError>;
    fn snapshot_bytes(&self) -> Result<Vec<u8>, StateMachineError>;
    fn restore_bytes(&mut self, bytes: &[u8]) -> Result<(), StateMachineError>;
}

impl<S: AppStateMachine> ErasedApp for S {
    fn apply_json(&mut self, index: u64, command: &str) -> Result<String, StateMachineError> {
        let command: S::Command = serde_json::from_str(command)
            .map_err(|e| StateMachineError::undecodable_command(Some(index), e))?;
        let response = self.apply(index, command);
        serde_json::to_string(&response).map_err(|e| StateMachineError::unencodable("response", e))
    }

    fn query_json(&self, query: &str) -> Result<String, StateMachineError> {
        let query: S::Query = serde_json::from_str(query)
            .map_err(|e| StateMachineError::UndecodableQuery(e.to_string()))?;
        serde_json::to_string(&self.query(&query))
            .map_err(|e| StateMachineError::unencodable("answer", e))
    }

    fn snapshot_bytes(&self) -> Result<Vec<u8>, StateMachineError> {
        self.snapshot()
    }

    fn restore_bytes(&mut self, bytes: &[u8]) -> Result<(), StateMachineError> {
        self.restore(bytes)
    }
}

/// How many answered serials are remembered per client for de-duplication.
const SESSION_WINDOW: usize = 1024;
/// How many clients are remembered; the least recently active is forgotten first.
const MAX_SESSIONS: usize = 4096;

/// Answers remembered for one client: serial -> reply.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Session {
    last_index: u64,
    replies: BTreeMap<u64, Reply>,
}

/// Everything besides the application state that a snapshot must carry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Envelope {
    last_applied: Option<LogIdOf<TypeConfig>>,
    last_membership: StoredMembershipOf<TypeConfig>,
    sessions: HashMap<u64, Session>,
}

pub(crate) struct SmInner {
    app: Box<dyn ErasedApp>,
    env: Envelope,
}

impl SmInner {
    fn apply_request(&mut self, index: u64, req: &Request) -> Reply {
        if let Some(session) = self.env.sessions.get(&req.client) {
            if let Some(reply) = session.replies.get(&req.serial) {
                tracing::debug!(
                    client = req.client,
                    serial = req.serial,
                    "duplicate proposal not re-applied"
                );
                return reply.clone();
            }
        }
        let reply = Reply {
            result: self
                .app
                .apply_json(index, &req.payload)
                .map_err(ApplyError::from),
        };
        let session = self.env.sessions.entry(req.client).or_default();
        session.last_index = index;
        session.replies.insert(req.serial, reply.clone());
        while session.replies.len() > SESSION_WINDOW {
            session.replies.pop_first();
        }
        if self.env.sessions.len() > MAX_SESSIONS {
            // Deterministic: the session with the oldest activity (ties by client id).
            if let Some(oldest) = self
                .env
                .sessions
                .iter()
                .min_by_key(|(client, s)| (s.last_index, **client))
                .map(|(client, _)| *client)
            {
                self.env.sessions.remove(&oldest);
            }
        }
        reply
    }

    pub(crate) fn query(&self, query: &str) -> Result<String, StateMachineError> {
        self.app.query_json(query)
    }
}

/// The openraft state machine around an application state machine.
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<RwLock<SmInner>>,
    dir: PathBuf,
    snaps: Arc<SnapShared>,
}

/// How often a snapshot write that failed (full disk) is tried again.
pub const SNAPSHOT_RETRY: Duration = Duration::from_millis(250);

/// The snapshot files' writer state shared by the store, its builders and the node.
struct SnapShared {
    /// The last log id of the snapshot in `current.snap`; held while a write replaces it.
    written: parking_lot::Mutex<Option<LogIdOf<TypeConfig>>>,
    /// Why a snapshot write waits (`None`: none does).
    stall: tokio::sync::watch::Sender<Option<String>>,
    /// Set by [`SnapshotWatch::close`]: a waiting write gives up.
    closing: AtomicBool,
    /// Where snapshot files are read and written.
    io: SnapshotIo,
}

/// Where a [`StateMachineStore`] does its snapshot file I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotIo {
    /// On tokio's blocking pool, off the async workers (what a node uses).
    BlockingPool,
    /// On the calling task: for a single-threaded deterministic simulation, where a pool
    /// thread's completion would interleave with the other tasks in an order no seed decides.
    Inline,
}

impl SnapshotIo {
    /// Runs `f` here; `Err` only if the pool lost it (a panic or shutdown).
    async fn run<T: Send + 'static>(self, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
        match self {
            SnapshotIo::BlockingPool => tokio::task::spawn_blocking(f)
                .await
                .map_err(io::Error::other),
            SnapshotIo::Inline => Ok(f()),
        }
    }
}

/// What a node keeps of its snapshot store: whether a snapshot write waits for the disk, and the
/// switch that ends the wait at shutdown.
#[derive(Clone)]
pub struct SnapshotWatch {
    shared: Arc<SnapShared>,
}

impl SnapshotWatch {
    /// Why a snapshot write waits (the disk is full or failing), if one does.
    pub fn stalled(&self) -> Option<String> {
        self.shared.stall.borrow().clone()
    }

    /// Makes a waiting snapshot write give up (with an error, fatal to the Raft node): for
    /// shutdown.
    pub fn close(&self) {
        self.shared.closing.store(true, Ordering::Release);
    }
}

const MAGIC: &[u8; 8] = b"RRSNAP01";
const SNAPSHOT_FILE: &str = "current.snap";

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn encode_snapshot(env: &Envelope, app: &[u8]) -> io::Result<Vec<u8>> {
    let header = serde_json::to_vec(env).map_err(invalid)?;
    let header_len =
        u32::try_from(header.len()).map_err(|_| invalid("snapshot envelope over 4 GiB"))?;
    let mut out = Vec::with_capacity(8 + 4 + header.len() + app.len() + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(app);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

fn decode_snapshot(bytes: &[u8]) -> io::Result<(Envelope, &[u8])> {
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(invalid(
            "not a Rocketraft snapshot (bad magic or too short)",
        ));
    }
    let (body, crc_bytes) = bytes.split_at(bytes.len() - 4);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(crc_bytes);
    if crc32fast::hash(body) != u32::from_le_bytes(crc) {
        return Err(invalid("snapshot checksum mismatch"));
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&body[8..12]);
    let header_len = u32::from_le_bytes(len) as usize;
    let header_end = 12usize
        .checked_add(header_len)
        .filter(|end| *end <= body.len())
        .ok_or_else(|| invalid("snapshot envelope length out of range"))?;
    let env: Envelope = serde_json::from_slice(&body[12..header_end])
        .map_err(|e| invalid(format!("snapshot envelope: {e}")))?;
    Ok((env, &body[header_end..]))
}

fn tmp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.tmp"))
}

/// Writes `bytes` to `dir/name` through a synced temporary file renamed over it; on an error
/// the temporary file is removed and `dir/name` is as before.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(dir, name);
    let written = fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, dir.join(name))) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::File::open(dir)?.sync_all()
}

impl SnapShared {
    /// Replaces the snapshot file with `bytes` (of the snapshot at `last`) unless the file already
    /// holds a snapshot at least as recent; waits while the disk refuses it. Returns whether it
    /// wrote.
    async fn write(
        self: &Arc<Self>,
        dir: &Path,
        last: Option<LogIdOf<TypeConfig>>,
        bytes: Arc<Vec<u8>>,
        what: &'static str,
    ) -> io::Result<bool> {
        let mut failures = 0u64;
        loop {
            let this = self.clone();
            let dir2 = dir.to_path_buf();
            let bytes2 = bytes.clone();
            let attempt: io::Result<bool> = self
                .io
                .run(move || {
                    let mut written = this.written.lock();
                    if written.is_some() && last <= *written {
                        return Ok(false);
                    }
                    write_atomically(&dir2, SNAPSHOT_FILE, &bytes2)?;
                    *written = last;
                    Ok(true)
                })
                .await?;
            match attempt {
                Ok(wrote) => {
                    if failures > 0 {
                        tracing::info!(
                            ?last,
                            failures,
                            "{what}: snapshot written after the disk had room again"
                        );
                    }
                    self.stall.send_if_modified(|s| s.take().is_some());
                    return Ok(wrote);
                }
                Err(e) => {
                    if self.closing.load(Ordering::Acquire) {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("{what}: snapshot not written ({e}) and the node is stopping"),
                        ));
                    }
                    failures += 1;
                    let why = format!(
                        "{what} at {last:?} cannot be written to {} ({e}); the previous snapshot stays in place and the write is retried until the disk has room",
                        dir.display()
                    );
                    if failures == 1 {
                        tracing::warn!("{why}");
                    }
                    self.stall.send_if_modified(|s| {
                        let changed = s.is_none();
                        if changed {
                            *s = Some(why);
                        }
                        changed
                    });
                    tokio::time::sleep(SNAPSHOT_RETRY).await;
                }
            }
        }
    }
}

impl StateMachineStore {
    /// Opens the state machine, restoring `app` from the snapshot in `dir` if there is one.
    pub(crate) fn open(
        dir: &Path,
        mut app: Box<dyn ErasedApp>,
        io: SnapshotIo,
    ) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let path = dir.join(SNAPSHOT_FILE);
        // A temporary file left by a crash mid-write is garbage (the snapshot is the old file).
        match fs::remove_file(tmp_path(dir, SNAPSHOT_FILE)) {
            Ok(()) => tracing::info!(dir = %dir.display(), "removed a partial snapshot file"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut env = Envelope::default();
        match fs::read(&path) {
            Ok(bytes) => {
                let (e, app_bytes) = decode_snapshot(&bytes)
                    .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
                app.restore_bytes(app_bytes)
                    .map_err(|e| invalid(format!("{}: restoring state: {e}", path.display())))?;
                tracing::info!(last_applied = ?e.last_applied, "state machine restored from snapshot");
                env = e;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let snaps = Arc::new(SnapShared {
            written: parking_lot::Mutex::new(env.last_applied),
            stall: tokio::sync::watch::Sender::new(None),
            closing: AtomicBool::new(false),
            io,
        });
        Ok(StateMachineStore {
            inner: Arc::new(RwLock::new(SmInner { app, env })),
            dir: dir.to_path_buf(),
            snaps,
        })
    }

    /// Opens the state machine around `app`, restoring it from the snapshot in `dir` if there
    /// is one: for a harness that runs openraft itself with its own log store and network (the
    /// deterministic simulation, `rocketraft-sim`); [`crate::RaftNode`] opens it internally.
    pub fn open_app<S: AppStateMachine>(dir: &Path, app: S, io: SnapshotIo) -> io::Result<Self> {
        Self::open(dir, Box::new(app), io)
    }

    /// Answers `query` from the applied state as it is now (a stale read: nothing linearizes
    /// it). `S` must be the type the store was opened with, else the JSON does not decode.
    pub fn query_app<S: AppStateMachine>(
        &self,
        query: &S::Query,
    ) -> Result<S::QueryResponse, StateMachineError> {
        let json =
            serde_json::to_string(query).map_err(|e| StateMachineError::unencodable("query", e))?;
        let answer = self.inner.read().query(&json)?;
        serde_json::from_str(&answer)
            .map_err(|e| StateMachineError::UndecodableQuery(e.to_string()))
    }

    /// The snapshot writer's stall state and shutdown switch.
    pub(crate) fn watch(&self) -> SnapshotWatch {
        SnapshotWatch {
            shared: self.snaps.clone(),
        }
    }

    pub(crate) fn shared(&self) -> Arc<RwLock<SmInner>> {
        self.inner.clone()
    }

    fn stored_snapshot(&self) -> io::Result<Option<SnapshotOf<TypeConfig, Vec<u8>>>> {
        let bytes = match fs::read(self.dir.join(SNAPSHOT_FILE)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let (env, _) = decode_snapshot(&bytes)?;
        Ok(Some(Snapshot {
            meta: SnapshotMeta {
                last_log_id: env.last_applied,
                last_membership: env.last_membership,
            },
            snapshot: bytes,
        }))
    }
}

/// Builds a snapshot of the state at the moment it was created.
pub struct SnapshotBuilder {
    store: StateMachineStore,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, Vec<u8>>, io::Error> {
        let (env, bytes) = {
            let inner = self.store.inner.read();
            let app = inner.app.snapshot_bytes().map_err(invalid)?;
            let env = inner.env.clone();
            let bytes = encode_snapshot(&env, &app)?;
            (env, bytes)
        };
        let bytes = Arc::new(bytes);
        let wrote = self
            .store
            .snaps
            .write(
                &self.store.dir,
                env.last_applied,
                bytes.clone(),
                "snapshot build",
            )
            .await?;
        if wrote {
            tracing::info!(last_applied = ?env.last_applied, bytes = bytes.len(), "snapshot built");
        } else {
            // openraft ignores a snapshot older than the one it has.
            tracing::info!(last_applied = ?env.last_applied, "snapshot built but not stored: a newer one is on disk");
        }
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_log_id: env.last_applied,
                last_membership: env.last_membership,
            },
            snapshot: Arc::try_unwrap(bytes).unwrap_or_else(|b| (*b).clone()),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>), io::Error> {
        let inner = self.inner.read();
        Ok((inner.env.last_applied, inner.env.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let reply = {
                let mut inner = self.inner.write();
                inner.env.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => Reply::empty(),
                    EntryPayload::Normal(ref req) => inner.apply_request(entry.log_id.index, req),
                    EntryPayload::Membership(m) => {
                        inner.env.last_membership = StoredMembership::new(Some(entry.log_id), m);
                        Reply::empty()
                    }
                }
            };
            if let Some(responder) = responder {
                responder.send(reply);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            store: self.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        let (env, app_bytes) = decode_snapshot(&snapshot)?;
        if env.last_applied != meta.last_log_id {
            return Err(invalid(format!(
                "snapshot body is at {:?} but its meta says {:?}",
                env.last_applied, meta.last_log_id
            )));
        }
        // Persist first: if restoring fails the old state stays, and after a crash the new
        // snapshot is what the node restarts from.
        self.snaps
            .write(
                &self.dir,
                meta.last_log_id,
                Arc::new(snapshot.clone()),
                "snapshot install",
            )
            .await?;
        let mut inner = self.inner.write();
        inner.app.restore_bytes(app_bytes).map_err(invalid)?;
        inner.env = env;
        tracing::info!(last_applied = ?meta.last_log_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, Vec<u8>>>, io::Error> {
        let store = self.clone();
        self.snaps.io.run(move || store.stored_snapshot()).await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_codec_round_trips_and_detects_corruption() {
        let mut env = Envelope::default();
        env.sessions.insert(7, Session::default());
        let bytes = encode_snapshot(&env, b"app-state").expect("encode");
        let (back, app) = decode_snapshot(&bytes).expect("decode");
        assert!(back.sessions.contains_key(&7));
        assert_eq!(app, b"app-state");
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(decode_snapshot(&bad).is_err(), "flip at {i} undetected");
        }
        assert!(decode_snapshot(&bytes[..bytes.len() - 1]).is_err());
    }

    /// Adds its command to a counter.
    #[derive(Default)]
    struct Counter(i64);

    impl AppStateMachine for Counter {
        type Command = i64;
        type Response = i64;
        type Query = ();
        type QueryResponse = i64;
        fn apply(&mut self, _index: u64, command: i64) -> i64 {
            self.0 += command;
            self.0
        }
        fn query(&self, _: &()) -> i64 {
            self.0
        }
        fn snapshot(&self) -> Result<Vec<u8>, StateMachineError> {
            Ok(self.0.to_le_bytes().to_vec())
        }
        fn restore(&mut self, bytes: &[u8]) -> Result<(), StateMachineError> {
            let b: [u8; 8] = bytes
                .try_into()
                .map_err(|_| StateMachineError::invalid_snapshot("8 bytes"))?;
            self.0 = i64::from_le_bytes(b);
            Ok(())
        }
    }

    fn inner() -> SmInner {
        SmInner {
            app: Box::new(Counter::default()),
            env: Envelope::default(),
        }
    }

    fn req(client: u64, serial: u64, payload: &str) -> Request {
        Request {
            client,
            serial,
            payload: payload.to_string(),
        }
    }

    #[test]
    fn a_retried_proposal_is_applied_once_and_answers_the_same() {
        let mut sm = inner();
        let first = sm.apply_request(1, &req(7, 1, "5"));
        assert_eq!(first.result, Ok("5".to_string()));
        // The same (client, serial) committed again, e.g. a forwarded retry after a timeout.
        let again = sm.apply_request(2, &req(7, 1, "5"));
        assert_eq!(again, first);
        // Out-of-order serials of one client are each applied once.
        assert_eq!(
            sm.apply_request(3, &req(7, 3, "1")).result,
            Ok("6".to_string())
        );
        assert_eq!(
            sm.apply_request(4, &req(7, 2, "1")).result,
            Ok("7".to_string())
        );
        assert_eq!(
            sm.apply_request(5, &req(7, 3, "1")).result,
            Ok("6".to_string())
        );
        // Another client with the same serial is a different proposal.
        assert_eq!(
            sm.apply_request(6, &req(8, 1, "5")).result,
            Ok("12".to_string())
        );
        assert_eq!(sm.query("null"), Ok("12".to_string()));
        // An undecodable command is answered with an error, deterministically, and changes nothing.
        let bad = sm.apply_request(7, &req(9, 1, "not json"));
        let reason = bad.result.expect_err("undecodable");
        assert!(
            reason
                .reason()
                .starts_with("undecodable command at index 7: "),
            "{reason}"
        );
        assert_eq!(sm.query("null"), Ok("12".to_string()));
    }

    #[test]
    fn the_session_table_is_bounded() {
        let mut sm = inner();
        for serial in 1..=(SESSION_WINDOW as u64 + 10) {
            sm.apply_request(serial, &req(1, serial, "1"));
        }
        assert_eq!(sm.env.sessions[&1].replies.len(), SESSION_WINDOW);
        for client in 0..(MAX_SESSIONS as u64 + 5) {
            sm.apply_request(10_000 + client, &req(100 + client, 1, "0"));
        }
        assert!(sm.env.sessions.len() <= MAX_SESSIONS);
    }

    fn log_id(index: u64) -> LogIdOf<TypeConfig> {
        use openraft::vote::RaftLeaderIdExt;
        let leader = <TypeConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(1, 1);
        openraft::LogId::new(leader, index)
    }

    async fn wait_stalled(watch: &SnapshotWatch) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(why) = watch.stalled() {
                return why;
            }
            assert!(std::time::Instant::now() < deadline, "never stalled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Snapshot writes on a real full tmpfs: an install waits for space (state and previous
    /// snapshot unchanged meanwhile) and completes once space is freed; a build that waits gives
    /// up at shutdown with an error and leaves no partial file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshot_writes_on_a_full_disk_wait_for_space_and_keep_the_previous_snapshot() {
        use rocketraft_common::testing::{fill_disk, Tmpfs};
        let Some(fs) = Tmpfs::mount_or_skip("2m") else {
            return;
        };
        let dir = fs.dir.join("snapshot");
        let ballast = fs.dir.join("ballast");
        let mut store =
            StateMachineStore::open(&dir, Box::new(Counter::default()), SnapshotIo::BlockingPool)
                .expect("open");
        let watch = store.watch();
        {
            let mut inner = store.inner.write();
            inner.apply_request(1, &req(7, 1, "5"));
            inner.env.last_applied = Some(log_id(1));
        }
        let mut builder = store.get_snapshot_builder().await;
        builder.build_snapshot().await.expect("first snapshot");
        let first = fs::read(dir.join(SNAPSHOT_FILE)).expect("first snapshot file");

        // An install from the leader while the disk is full waits.
        fill_disk(&ballast);
        let env = Envelope {
            last_applied: Some(log_id(10)),
            ..Envelope::default()
        };
        let bytes = encode_snapshot(&env, &42i64.to_le_bytes()).expect("encode");
        let meta = SnapshotMeta {
            last_log_id: Some(log_id(10)),
            last_membership: StoredMembership::default(),
        };
        let mut installer = store.clone();
        let install = tokio::spawn(async move { installer.install_snapshot(&meta, bytes).await });
        let why = wait_stalled(&watch).await;
        assert!(why.contains("No space left"), "{why}");
        assert!(why.contains("previous snapshot stays in place"), "{why}");
        tokio::time::sleep(SNAPSHOT_RETRY * 2).await;
        assert!(!install.is_finished(), "the install waits for space");
        assert_eq!(store.inner.read().query("null"), Ok("5".to_string()));
        assert_eq!(fs::read(dir.join(SNAPSHOT_FILE)).expect("file"), first);

        // Space freed: the install completes by itself.
        fs::remove_file(&ballast).expect("free space");
        install.await.expect("join").expect("installed");
        assert_eq!(watch.stalled(), None);
        assert_eq!(store.inner.read().query("null"), Ok("42".to_string()));
        let current = store
            .get_current_snapshot()
            .await
            .expect("read")
            .expect("some");
        assert_eq!(current.meta.last_log_id, Some(log_id(10)));

        // A build that waits on a full disk gives up at shutdown; no partial file is left and
        // the installed snapshot is what a restart finds.
        store.inner.write().env.last_applied = Some(log_id(11));
        fill_disk(&ballast);
        let mut builder = store.get_snapshot_builder().await;
        let build = tokio::spawn(async move { builder.build_snapshot().await.map(|_| ()) });
        wait_stalled(&watch).await;
        watch.close();
        let err = build.await.expect("join").expect_err("gave up");
        assert!(err.to_string().contains("node is stopping"), "{err}");
        assert!(!tmp_path(&dir, SNAPSHOT_FILE).exists(), "partial file left");
        drop(store);
        fs::remove_file(&ballast).expect("free space");
        let reopened =
            StateMachineStore::open(&dir, Box::new(Counter::default()), SnapshotIo::BlockingPool)
                .expect("reopen");
        assert_eq!(reopened.inner.read().query("null"), Ok("42".to_string()));
        drop(fs);
    }
}
