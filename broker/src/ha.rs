//! Native CommitLog replication (RocketMQ 5's `AutoSwitchHAService`): the master streams its
//! CommitLog to the slaves over TCP, the slaves append it, rebuild their ConsumeQueues and report
//! how far they are; the master counts those acks before a send succeeds and derives the confirm
//! offset (what consumers may see) from them.
//!
//! Wire (big-endian, as RocketMQ's):
//! - slave handshake, 16 B: `state i32 (1)`, `syncFromLastFile i16`, `asyncLearner i16`,
//!   `slaveBrokerId i64`;
//! - master handshake: `state i32 (1)`, `bodySize i32`, `offset i64` (master's max offset),
//!   `epoch i32`, then `bodySize / 12` epoch entries `epoch i32, startOffset i64`;
//! - slave report, 12 B: `state i32 (2)`, `maxOffset i64`, after each append and at least every
//!   heartbeat;
//! - master transfer, 36 B header: `state i32 (2)`, `bodySize i32`, `offset i64`, `epoch i32`,
//!   `epochStartOffset i64`, `confirmOffset i64`, then `bodySize` CommitLog bytes: whole records
//!   (or one 8-byte blank marker), at most 32 KiB unless one record is larger, never crossing an
//!   epoch boundary. An empty body is a heartbeat (every second when idle);
//! - master queue offsets (Rocketraft), the transfer header with `state i32 (3)`, `offset` the
//!   CommitLog offset it describes and the epoch and confirm fields 0, then per queue `topicLen
//!   u16`, the topic (UTF-8), `queueId i32`, `nextQueueOffset i64`: the queue offset of the
//!   queue's first record at or past `offset` (its max when it has none). Sent before the
//!   master streams from the slave's first report, and after it tells a slave behind its first
//!   offset to start over. A queue that a start-over left with no entry (its records before
//!   the cut, their queue files gone to retention) starts at that offset instead of 0, so its
//!   offsets are the master's before the master's next record of it, and a promotion goes on
//!   from them. The slave persists where such a queue starts (its ConsumeQueue file, with
//!   blanks before that offset), so that it still knows after a restart while its master is
//!   down; the master tells it again at every connection. The list goes in as many
//!   consecutive frames of the same `offset` as it needs (each body at most 1 MiB, whole
//!   queues: a broker with very many lite topics `%LMQ%...` would pass the 64 MiB frame limit
//!   in one), which the slave applies one after another.
//!
//! After the master's handshake the slave finds the last offset it shares with the master (the
//! highest epoch both have with the same start) and truncates its divergent tail before its
//! first report; the master streams from the reported offset.
//!
//! **Cluster trust** (Rocketraft; only with `cluster_secret` set, the same on both sides;
//! without it the wire is exactly the above). Before any of the frames above, master and slave
//! prove the secret to each other with HMAC-SHA256 over fresh nonces
//! ([`rocketraft_common::trust::ClusterSecret::prove`], length-prefixed parts):
//! 1. master, right after accepting: `masterNonce` (16 B);
//! 2. slave: its 16-byte handshake, then `slaveNonce` (16 B) and `slaveProof` (32 B) =
//!    HMAC(secret, "rocketraft-ha-slave", masterNonce, slaveNonce, handshake);
//! 3. master: `masterProof` (32 B) = HMAC(secret, "rocketraft-ha-master", slaveNonce,
//!    masterNonce), immediately followed by its handshake.
//!
//! A master that cannot verify the slave's proof (or gets none within 5 s) logs a warning with
//! the peer's address and closes the connection before sending anything else; a slave that
//! cannot verify the master's proof closes and retries later, logging why. The nonces are fresh
//! per connection, so a recorded exchange proves nothing on another one. (The frames after the
//! handshake are not signed: against an attacker on the path itself, use TLS.)
//!
//! **Checks on the master, with or without a secret**: a slave may not report an ack offset
//! beyond the master's own CommitLog end (such a report closes the connection with a warning
//! and is not counted); a slave may not claim the master's own broker id; and once the master
//! learned from the controller which broker ids belong to its set
//! ([`HaState::set_known_replicas`]), it serves only those (and its SyncStateSet), asking the
//! controller again (and waiting up to 2 s) before refusing an id it does not know.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rocketraft_common::trust::{nonce, ClusterSecret, NONCE_LEN};
use rocketraft_remoting::tls::{ClientTls, ServerTls, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
/// Every lease, report and office time here is on tokio's clock: in production the same
/// monotonic clock as `std::time::Instant`; under a paused runtime (the deterministic
/// simulation, `sim/`) the simulated one.
use tokio::time::Instant;

use crate::store::epoch::EpochEntry;
use crate::store::MessageStore;

const STATE_HANDSHAKE: i32 = 1;
const STATE_TRANSFER: i32 = 2;
/// A frame with the transfer head's layout (confirm, epoch fields unused) whose body lists the
/// master's next queue offsets at `offset` (see [`queue_offsets_frame`]): sent before the
/// master streams from `offset`, so a replica whose queues a start-over emptied knows where
/// they go on.
const STATE_QUEUE_OFFSETS: i32 = 3;
/// Largest chunk of records per transfer frame (RocketMQ: 32 KiB).
const CHUNK_BYTES: usize = 32 * 1024;
/// Largest frame body a slave accepts (a record is at most a segment, bounded by config).
const MAX_FRAME_BODY: usize = 64 << 20;
/// Largest body of one queue offsets frame the master sends: the list of every queue is split
/// into frames of at most this many bytes (whole queues; one queue is at most 14 + 65,535
/// bytes), far within [`MAX_FRAME_BODY`] and without one huge buffer per connection.
const QUEUE_OFFSETS_FRAME_BYTES: usize = 1 << 20;
/// A slave within this many bytes of the master's end counts as caught up (RocketMQ's
/// `haMaxGapNotInSync`, 256 KiB).
const CAUGHT_UP_GAP: i64 = 256 * 1024;
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A connection silent this long is dead (RocketMQ's housekeeping: 20 s).
const HOUSEKEEPING: Duration = Duration::from_secs(20);
/// With a cluster secret: how long either side waits for the other's part of the mutual proof.
const TRUST_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of an HMAC-SHA256 proof.
const PROOF_LEN: usize = 32;
/// The proof contexts of the slave and of the master.
const SLAVE_ROLE: &[u8] = b"rocketraft-ha-slave";
const MASTER_ROLE: &[u8] = b"rocketraft-ha-master";
/// How long the master waits for the controller's list of the set's broker ids to name an id
/// it does not know yet (a slave registered since the last read) before refusing it.
const UNKNOWN_REPLICA_WAIT: Duration = Duration::from_secs(2);

/// The role of this replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    /// Not yet told by the controller.
    None,
    Master,
    Slave,
}

/// What the master knows about one slave.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlaveInfo {
    pub broker_id: i64,
    pub addr: String,
    pub ack_offset: i64,
    pub lag: i64,
    pub in_sync: bool,
    pub connected: bool,
    #[serde(skip)]
    pub last_caught_up: Option<Instant>,
    /// When the slave last reported its offset (at least once a second while linked).
    #[serde(skip)]
    pub last_report: Option<Instant>,
}

/// TLS on the HA port ([`rocketraft_remoting::tls`]): the master serves its connections as
/// `server` says (the broker's `[tls]` mode: permissive takes both), the slave connects over
/// TLS when `client` is set (`[tls_client]`).
#[derive(Debug, Clone, Default)]
pub struct HaTls {
    pub server: Option<ServerTls>,
    pub client: Option<ClientTls>,
}

/// Replication state shared by the role manager, the send path and the HA connections.
pub struct HaState {
    pub store: Arc<MessageStore>,
    inner: Mutex<HaInner>,
    /// Bumped on every slave report; ack waiters watch it.
    acks: watch::Sender<u64>,
    /// The cluster's shared secret: with it, master and slave prove it to each other on the HA
    /// port before any frame (see the module doc).
    secret: Option<ClusterSecret>,
    /// TLS on the HA port: the master's (its `[tls]` mode) and the slave's (`[tls_client]`).
    tls: HaTls,
    /// Notified when the master meets a broker id it does not know: the role manager reads the
    /// set's broker ids from the controller again.
    replica_refresh: Notify,
    /// The largest body of a queue offsets frame this master sends
    /// ([`QUEUE_OFFSETS_FRAME_BYTES`]; the tests lower it to force a split).
    queue_offsets_frame_bytes: std::sync::atomic::AtomicUsize,
    /// The clock leases, reports and office times are read on ([`LeaseClock`]).
    clock: LeaseClock,
}

/// The clock `HaState` dates leases, slave reports, office times and master frames on: tokio's
/// (`LeaseClock::default()`: the monotonic clock in production, the paused one under a paused
/// runtime), or, for the deterministic simulation (`sim/`), a function of tokio's that gives
/// each replica a clock of its own (stepped forward, or running at another rate), so a lease can
/// be checked against clocks that disagree. The default adds one branch per read.
#[derive(Clone, Default)]
pub struct LeaseClock(Option<Arc<dyn Fn() -> Instant + Send + Sync>>);

impl LeaseClock {
    /// A clock that reads `now` (which must never go back).
    pub fn custom(now: impl Fn() -> Instant + Send + Sync + 'static) -> LeaseClock {
        LeaseClock(Some(Arc::new(now)))
    }

    #[inline]
    pub fn now(&self) -> Instant {
        match &self.0 {
            None => Instant::now(),
            Some(now) => now(),
        }
    }

    /// How long ago `t` was on this clock (zero for a `t` ahead of it).
    #[inline]
    fn since(&self, t: Instant) -> Duration {
        self.now().saturating_duration_since(t)
    }
}

impl std::fmt::Debug for LeaseClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "LeaseClock(custom)"
        } else {
            "LeaseClock(tokio)"
        })
    }
}

struct HaInner {
    role: Role,
    master_epoch: i32,
    sync_state_set_epoch: i32,
    sync_state_set: BTreeSet<i64>,
    /// A SyncStateSet change sent to the controller and not yet answered: acks count the union.
    pending_set: Option<BTreeSet<i64>>,
    slaves: BTreeMap<i64, SlaveInfo>,
    /// The master's Remoting address and id, for a slave.
    master_addr: Option<String>,
    master_id: Option<i64>,
    /// Until when this master may acknowledge writes (renewed by controller heartbeats).
    lease_until: Option<Instant>,
    /// Changes with every role change; connections of an older generation stop.
    connection_generation: u64,
    /// When this broker last became master.
    took_office: Option<Instant>,
    /// When this slave last received a frame from its master (a heartbeat at least every
    /// second while connected).
    last_master_frame: Option<Instant>,
    /// The current lapse of the lease was logged (reset by a renewal).
    lapse_logged: bool,
    /// Which caught-up slave the next expansion of the SyncStateSet proposes (a rotation, so a
    /// slave the controller refuses as not alive does not block the others).
    expand_turn: usize,
    /// The broker ids the controller knows for this set, once read: the master serves only
    /// these (and its SyncStateSet) on the HA port. `None`: not read yet, every id is served.
    known_replicas: Option<BTreeSet<i64>>,
}

/// Whether the master serves a slave's HA connection.
enum Admission {
    Admitted,
    /// This broker is not a master (a slave that has not yet learned the new master).
    NotMaster,
    /// A claim no replica of this set makes.
    Refused(String),
    /// The id is not among the set's broker ids the controller knows (these).
    Unknown(BTreeSet<i64>),
}

/// Why a send was not acknowledged by enough replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckError {
    /// This broker is not a master with a valid lease: it must not acknowledge writes.
    NotMaster(String),
    /// The SyncStateSet is smaller than `min_in_sync_replicas`.
    InSyncReplicasNotEnough { have: usize, need: usize },
    /// The acks did not arrive in time.
    Timeout { acked: usize, need: usize },
}

impl std::fmt::Display for AckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AckError::NotMaster(why) => write!(f, "not the master: {why}"),
            AckError::InSyncReplicasNotEnough { have, need } => write!(
                f,
                "in-sync replicas not enough: the SyncStateSet has {have}, min_in_sync_replicas is {need}"
            ),
            AckError::Timeout { acked, need } => write!(
                f,
                "replicas did not acknowledge in time: {acked} of {need} replicas hold the message"
            ),
        }
    }
}

/// Ack policy knobs (from the broker config).
#[derive(Debug, Clone, Copy)]
pub struct AckPolicy {
    pub min_in_sync_replicas: usize,
    pub all_ack_in_sync_state_set: bool,
    pub in_sync_replicas: usize,
    pub timeout: Duration,
}

/// A snapshot for status and decisions.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HaSnapshot {
    pub role: Role,
    pub master_epoch: i32,
    pub sync_state_set_epoch: i32,
    pub sync_state_set: BTreeSet<i64>,
    pub pending_sync_state_set: Option<BTreeSet<i64>>,
    pub master_broker_id: Option<i64>,
    pub master_addr: Option<String>,
    pub lease_valid: bool,
    pub slaves: Vec<SlaveInfo>,
}

impl HaState {
    /// Replication state without a cluster secret (the HA wire as RocketMQ's).
    pub fn new(store: Arc<MessageStore>) -> Arc<HaState> {
        Self::with_cluster_secret(store, None)
    }

    /// Replication state whose HA connections prove `secret`, if any (see the module doc).
    pub fn with_cluster_secret(
        store: Arc<MessageStore>,
        secret: Option<ClusterSecret>,
    ) -> Arc<HaState> {
        HaState::with_security(store, secret, HaTls::default())
    }

    /// [`HaState::with_cluster_secret`] with TLS on the HA port as `tls` says.
    pub fn with_security(
        store: Arc<MessageStore>,
        secret: Option<ClusterSecret>,
        tls: HaTls,
    ) -> Arc<HaState> {
        HaState::with_clock(store, secret, tls, LeaseClock::default())
    }

    /// [`HaState::with_security`] with leases and reports on `clock` (the simulation's
    /// per-replica clocks; a broker uses the default, tokio's).
    pub fn with_clock(
        store: Arc<MessageStore>,
        secret: Option<ClusterSecret>,
        tls: HaTls,
        clock: LeaseClock,
    ) -> Arc<HaState> {
        // Controller mode: consumers see only what the replicas confirmed, from the start
        // (before the controller names a role), starting at the confirm offset the store
        // persisted before its restart.
        store.set_gated(true);
        let (acks, _) = watch::channel(0);
        Arc::new(HaState {
            store,
            inner: Mutex::new(HaInner {
                role: Role::None,
                master_epoch: 0,
                sync_state_set_epoch: 0,
                sync_state_set: BTreeSet::new(),
                pending_set: None,
                slaves: BTreeMap::new(),
                master_addr: None,
                master_id: None,
                lease_until: None,
                lapse_logged: false,
                connection_generation: 0,
                took_office: None,
                last_master_frame: None,
                expand_turn: 0,
                known_replicas: None,
            }),
            acks,
            secret,
            tls,
            replica_refresh: Notify::new(),
            queue_offsets_frame_bytes: std::sync::atomic::AtomicUsize::new(
                QUEUE_OFFSETS_FRAME_BYTES,
            ),
            clock,
        })
    }

    /// Now on this replica's lease clock: a lease renewal must be dated on it
    /// (`renew_lease(now + lease)` with `now` read when the confirmed heartbeat was sent).
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// How long ago `t` (read from [`HaState::now`], as every instant this state stamps) was on
    /// this replica's lease clock; zero for a `t` ahead of it.
    pub fn since(&self, t: Instant) -> Duration {
        self.clock.since(t)
    }

    /// The broker ids the controller knows for this set (every registered replica): from now
    /// on the master serves only these, and its SyncStateSet, on the HA port.
    pub fn set_known_replicas(&self, ids: BTreeSet<i64>) {
        let mut g = self.inner.lock();
        if g.known_replicas.as_ref() != Some(&ids) {
            tracing::debug!(known = ?ids, "broker ids of this set, as the controller knows them");
            g.known_replicas = Some(ids);
        }
    }

    /// The broker ids the controller knows for this set, if read yet.
    pub fn known_replicas(&self) -> Option<BTreeSet<i64>> {
        self.inner.lock().known_replicas.clone()
    }

    /// Notified when the master needs the controller's list of the set's broker ids afresh
    /// (an unknown id asked to replicate).
    pub fn replica_refresh(&self) -> &Notify {
        &self.replica_refresh
    }

    /// Whether this broker, as master, serves a slave claiming `slave_id` now.
    fn admit(&self, slave_id: i64) -> Admission {
        let g = self.inner.lock();
        if g.role != Role::Master {
            return Admission::NotMaster;
        }
        if g.master_id == Some(slave_id) {
            return Admission::Refused(format!(
                "the peer claims this master's own broker id {slave_id}"
            ));
        }
        let Some(known) = &g.known_replicas else {
            return Admission::Admitted;
        };
        let member = known.contains(&slave_id)
            || g.sync_state_set.contains(&slave_id)
            || g.pending_set
                .as_ref()
                .is_some_and(|p| p.contains(&slave_id));
        if member {
            Admission::Admitted
        } else {
            Admission::Unknown(known.clone())
        }
    }

    pub fn role(&self) -> Role {
        self.inner.lock().role
    }

    pub fn master_epoch(&self) -> i32 {
        self.inner.lock().master_epoch
    }

    pub fn snapshot(&self) -> HaSnapshot {
        let g = self.inner.lock();
        let max = self.store.max_phy_offset();
        HaSnapshot {
            role: g.role,
            master_epoch: g.master_epoch,
            sync_state_set_epoch: g.sync_state_set_epoch,
            sync_state_set: g.sync_state_set.clone(),
            pending_sync_state_set: g.pending_set.clone(),
            master_broker_id: g.master_id,
            master_addr: g.master_addr.clone(),
            lease_valid: g.lease_until.is_some_and(|t| self.clock.now() < t),
            slaves: g
                .slaves
                .values()
                .map(|s| SlaveInfo {
                    lag: (max - s.ack_offset).max(0),
                    in_sync: g.sync_state_set.contains(&s.broker_id),
                    ..s.clone()
                })
                .collect(),
        }
    }

    /// Becomes master of `epoch`. The caller appended the epoch entry.
    pub fn set_master(
        &self,
        my_id: i64,
        my_addr: String,
        epoch: i32,
        sss_epoch: i32,
        sss: BTreeSet<i64>,
    ) {
        let mut g = self.inner.lock();
        g.role = Role::Master;
        g.master_epoch = epoch;
        g.sync_state_set_epoch = sss_epoch;
        g.sync_state_set = sss;
        g.pending_set = None;
        g.master_id = Some(my_id);
        g.master_addr = Some(my_addr);
        g.slaves.clear();
        g.connection_generation += 1;
        g.took_office = Some(self.clock.now());
        g.last_master_frame = None;
        drop(g);
        self.recompute_confirm();
    }

    /// Becomes (or stays) slave of the master `master_id` at `master_addr` in `epoch`.
    pub fn set_slave(
        &self,
        master_id: i64,
        master_addr: String,
        epoch: i32,
        sss_epoch: i32,
        sss: BTreeSet<i64>,
    ) {
        let mut g = self.inner.lock();
        g.role = Role::Slave;
        g.master_epoch = epoch;
        g.sync_state_set_epoch = sss_epoch;
        g.sync_state_set = sss;
        g.pending_set = None;
        g.master_id = Some(master_id);
        g.master_addr = Some(master_addr);
        g.lease_until = None;
        g.took_office = None;
        g.last_master_frame = None;
        g.slaves.clear();
        g.connection_generation += 1;
        drop(g);
        self.acks.send_modify(|v| *v += 1);
    }

    /// Updates the SyncStateSet as the controller reports it (only a newer epoch counts).
    pub fn update_sync_state_set(&self, sss_epoch: i32, sss: BTreeSet<i64>) {
        let mut g = self.inner.lock();
        if sss_epoch > g.sync_state_set_epoch {
            g.sync_state_set_epoch = sss_epoch;
            g.sync_state_set = sss;
            g.pending_set = None;
        }
        drop(g);
        self.recompute_confirm();
        self.acks.send_modify(|v| *v += 1);
    }

    /// A SyncStateSet change derived from the set of epoch `base_epoch` is being sent: until the
    /// controller's state is known to have moved past that epoch (an answer, or a read), acks
    /// and the confirm offset count the union of the current set and every set proposed from
    /// it, since any one of those proposals may have been committed (or still be, later).
    /// Only [`HaState::update_sync_state_set`] with a newer epoch, or a role change, settles it.
    pub fn add_pending(&self, base_epoch: i32, want: &BTreeSet<i64>) {
        let mut g = self.inner.lock();
        if base_epoch < g.sync_state_set_epoch {
            // Derived from an older set: every proposal from it will be refused.
            return;
        }
        g.pending_set
            .get_or_insert_with(BTreeSet::new)
            .extend(want.iter().copied());
        drop(g);
        self.recompute_confirm();
        self.acks.send_modify(|v| *v += 1);
    }

    /// The union of the SyncStateSets proposed from the current epoch whose outcome is not yet
    /// known, if any.
    pub fn pending(&self) -> Option<BTreeSet<i64>> {
        self.inner.lock().pending_set.clone()
    }

    /// A slave received a frame (data or heartbeat) from its master.
    pub fn note_master_frame(&self) {
        self.inner.lock().last_master_frame = Some(self.clock.now());
    }

    /// Whether this slave received a frame from its master within `within` (its replication
    /// link is up). Reported in controller heartbeats: a candidate still linked to the old
    /// master can replicate to it once it is elected (see `rocketraft_controller::elect`).
    pub fn master_link_fresh(&self, within: Duration) -> bool {
        let g = self.inner.lock();
        g.role == Role::Slave
            && g.last_master_frame
                .is_some_and(|t| self.clock.since(t) <= within)
    }

    /// Whether this master, in office for at least `grace`, heard within `within` from fewer
    /// than `min_in_sync` SyncStateSet members (itself included): it cannot acknowledge
    /// anything. Reported in controller heartbeats (`inSyncReplicasUnreachable`) so the
    /// controller can put another member in its place (see `rocketraft_controller::elect`).
    pub fn in_sync_unreachable(
        &self,
        within: Duration,
        min_in_sync: usize,
        grace: Duration,
    ) -> bool {
        let g = self.inner.lock();
        if g.role != Role::Master || g.took_office.is_none_or(|t| self.clock.since(t) < grace) {
            return false;
        }
        let master = g.master_id.unwrap_or(-1);
        let heard = g
            .sync_state_set
            .iter()
            .filter(|id| **id != master)
            .filter(|id| {
                g.slaves.get(id).is_some_and(|s| {
                    s.connected && s.last_report.is_some_and(|t| self.clock.since(t) <= within)
                })
            })
            .count();
        heard + 1 < min_in_sync
    }

    /// Renews the master's lease until `until` (a `std::time::Instant` converts into tokio's:
    /// the same clock outside a paused runtime).
    pub fn renew_lease(&self, until: impl Into<Instant>) {
        let until = until.into();
        let mut g = self.inner.lock();
        if g.lease_until.is_none_or(|t| t < until) {
            g.lease_until = Some(until);
        }
        if g.lapse_logged && self.clock.now() < until {
            g.lapse_logged = false;
            tracing::warn!(
                epoch = g.master_epoch,
                "role lease renewed: accepting writes again"
            );
        }
    }

    /// Until when the master's role lease runs, if it was ever renewed in this role.
    pub fn lease_until(&self) -> Option<Instant> {
        self.inner.lock().lease_until
    }

    pub fn lease_valid(&self) -> bool {
        self.inner
            .lock()
            .lease_until
            .is_some_and(|t| self.clock.now() < t)
    }

    /// Whether this broker may take a write now.
    pub fn check_writable(&self) -> Result<(), AckError> {
        let mut g = self.inner.lock();
        match g.role {
            Role::Master => {}
            Role::Slave => {
                return Err(AckError::NotMaster(format!(
                    "this broker is a slave of {} (epoch {})",
                    g.master_addr.as_deref().unwrap_or("?"),
                    g.master_epoch
                )))
            }
            Role::None => {
                return Err(AckError::NotMaster(
                    "the controller has not assigned a role yet".into(),
                ))
            }
        }
        if g.lease_until.is_none_or(|t| self.clock.now() >= t) {
            if !g.lapse_logged {
                g.lapse_logged = true;
                tracing::warn!(
                    epoch = g.master_epoch,
                    "role lease expired: no controller leader confirmed a heartbeat in time; refusing writes"
                );
            }
            return Err(AckError::NotMaster(format!(
                "the master lease of epoch {} expired: the controllers are unreachable",
                g.master_epoch
            )));
        }
        Ok(())
    }

    /// Refuses before writing when the SyncStateSet is below `min_in_sync_replicas`
    /// (RocketMQ's IN_SYNC_REPLICAS_NOT_ENOUGH).
    pub fn check_in_sync(&self, policy: &AckPolicy) -> Result<(), AckError> {
        let g = self.inner.lock();
        self.ack_count(&g, i64::MIN, policy).map(|_| ())
    }

    /// The replicas (master included) that must hold `end` for `policy`, and how many do.
    fn ack_count(
        &self,
        g: &HaInner,
        end: i64,
        policy: &AckPolicy,
    ) -> Result<(usize, usize), AckError> {
        let mut members = g.sync_state_set.clone();
        if let Some(p) = &g.pending_set {
            members.extend(p.iter().copied());
        }
        let master = g.master_id.unwrap_or(-1);
        members.insert(master);
        let set_size = g.sync_state_set.len().max(1);
        if set_size < policy.min_in_sync_replicas {
            return Err(AckError::InSyncReplicasNotEnough {
                have: set_size,
                need: policy.min_in_sync_replicas,
            });
        }
        let holds = |id: &i64| {
            *id == master
                || g.slaves
                    .get(id)
                    .is_some_and(|s| s.connected && s.ack_offset >= end)
        };
        if policy.all_ack_in_sync_state_set {
            let need = members.len().max(policy.min_in_sync_replicas);
            let acked = members.iter().filter(|id| holds(id)).count();
            Ok((acked, need))
        } else {
            let need = policy.in_sync_replicas.max(policy.min_in_sync_replicas);
            let acked = members.iter().filter(|id| holds(id)).count();
            Ok((acked, need))
        }
    }

    /// Waits until the replicas `policy` asks for hold the log up to `end`, while this broker
    /// stays a master with a valid lease.
    pub async fn wait_for_acks(&self, end: i64, policy: &AckPolicy) -> Result<(), AckError> {
        let deadline = tokio::time::Instant::now() + policy.timeout;
        let mut rx = self.acks.subscribe();
        loop {
            rx.borrow_and_update();
            self.check_writable()?;
            let (acked, need) = {
                let g = self.inner.lock();
                self.ack_count(&g, end, policy)?
            };
            if acked >= need {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(AckError::Timeout { acked, need }),
            }
        }
    }

    /// The master's confirm offset: the least ack of the SyncStateSet slaves, connected or not,
    /// and its own end.
    fn recompute_confirm(&self) {
        let g = self.inner.lock();
        if g.role != Role::Master {
            return;
        }
        let mut confirm = self.store.max_phy_offset();
        let master = g.master_id.unwrap_or(-1);
        let mut members = g.sync_state_set.clone();
        if let Some(p) = &g.pending_set {
            members.extend(p.iter().copied());
        }
        for id in members.iter().filter(|id| **id != master) {
            match g.slaves.get(id) {
                // Connected or not: a member that may be elected must hold what consumers saw
                // (RocketMQ counts connected members only, so a consumer could read a message
                // that a failover to a disconnected member then loses).
                Some(s) => confirm = confirm.min(s.ack_offset),
                // Never heard from since this broker took office: hold the offset where it is.
                None => confirm = confirm.min(self.store.confirm_offset()),
            }
        }
        drop(g);
        self.store.set_confirm_offset(confirm);
    }

    /// Recomputes the confirm offset after local appends (a master with no slaves).
    pub fn on_local_append(&self) {
        self.recompute_confirm();
    }

    /// Counts a slave's report that it holds the log up to `offset`. A report beyond this
    /// master's own CommitLog end is a lie (a slave holds only what its master sent, and the
    /// master never truncates while in office): it is not counted, and the error closes the
    /// connection.
    fn slave_report(
        &self,
        generation: u64,
        broker_id: i64,
        addr: &str,
        offset: i64,
    ) -> std::io::Result<()> {
        let mut g = self.inner.lock();
        if g.connection_generation != generation {
            return Ok(());
        }
        let max = self.store.max_phy_offset();
        if offset > max {
            drop(g);
            tracing::warn!(
                peer = %addr,
                slave_id = broker_id,
                reported = offset,
                master_end = max,
                "a slave reported an ack offset beyond this master's CommitLog end; not counted, closing its connection"
            );
            return Err(std::io::Error::other(format!(
                "ack offset {offset} beyond the master's end {max}"
            )));
        }
        let s = g.slaves.entry(broker_id).or_insert_with(|| SlaveInfo {
            broker_id,
            addr: addr.to_string(),
            ack_offset: offset,
            lag: 0,
            in_sync: false,
            connected: true,
            last_caught_up: None,
            last_report: None,
        });
        s.ack_offset = offset;
        s.connected = true;
        s.last_report = Some(self.clock.now());
        s.addr = addr.to_string();
        if offset >= max - CAUGHT_UP_GAP {
            s.last_caught_up = Some(self.clock.now());
        }
        drop(g);
        self.recompute_confirm();
        self.acks.send_modify(|v| *v += 1);
        Ok(())
    }

    fn slave_disconnected(&self, generation: u64, broker_id: i64) {
        let mut g = self.inner.lock();
        if g.connection_generation != generation {
            return;
        }
        if let Some(s) = g.slaves.get_mut(&broker_id) {
            s.connected = false;
        }
        drop(g);
        self.recompute_confirm();
        self.acks.send_modify(|v| *v += 1);
    }

    /// The SyncStateSet the master wants now. Slaves not caught up for `max_not_caught_up`
    /// or disconnected leave first, all in one change; then caught-up slaves (their ack reached
    /// the master's confirm offset and the current epoch's start) join **one per change**, as
    /// RocketMQ's master expands its set per slave: the controller refuses a whole change when
    /// one new member is not alive in its own view (a slave it cannot hear in a partition), so
    /// a change that named several would keep every other slave out, and a change that also
    /// removed a member would keep a dead member in. Successive calls rotate through the
    /// candidates. `None` when the set is right.
    pub fn desired_sync_state_set(
        &self,
        max_not_caught_up: Duration,
        min_in_sync: usize,
    ) -> Option<(i64, i32, i32, BTreeSet<i64>)> {
        let mut g = self.inner.lock();
        if g.role != Role::Master {
            return None;
        }
        let master = g.master_id?;
        let now = self.clock.now();
        let epoch_start = self.store.last_epoch().map_or(0, |e| e.start_offset);
        let mut want = g.sync_state_set.clone();
        want.insert(master);
        let mut joining = Vec::new();
        for s in g.slaves.values() {
            let caught_up_recently = s
                .last_caught_up
                .is_some_and(|t| now.duration_since(t) < max_not_caught_up);
            if want.contains(&s.broker_id) {
                if !s.connected || !caught_up_recently {
                    want.remove(&s.broker_id);
                }
            } else if s.connected
                && caught_up_recently
                // It holds every message acknowledged so far (they all lie below the confirm
                // offset) and this epoch's history.
                && s.ack_offset >= self.store.confirm_offset()
                && s.ack_offset >= epoch_start
            {
                joining.push(s.broker_id);
            }
        }
        // SyncStateSet members the master never heard from since it took office leave too,
        // once a catch-up period has passed.
        if g.took_office
            .is_some_and(|t| now.duration_since(t) >= max_not_caught_up)
        {
            want.retain(|id| *id == master || g.slaves.contains_key(id));
        }
        // Never below `min_in_sync_replicas` by removals: such a set acknowledges nothing
        // anyway, and the members it would drop are the ones a controller could elect in this
        // master's place (a master cut off from its slaves but not from the controllers is
        // deposed only in favour of a SyncStateSet member; docs/safety.md).
        let mut current = g.sync_state_set.clone();
        current.insert(master);
        if want.len() < min_in_sync && want.len() < current.len() {
            want = current;
        }
        if want == g.sync_state_set && !joining.is_empty() {
            let pick = joining[g.expand_turn % joining.len()];
            g.expand_turn = g.expand_turn.wrapping_add(1);
            want.insert(pick);
        }
        (want != g.sync_state_set).then(|| (master, g.master_epoch, g.sync_state_set_epoch, want))
    }
}

// ------------------------------------------------------------------------------------------
// Master side
// ------------------------------------------------------------------------------------------

/// Most connections the HA port holds at once (replicas of one set, plus those reconnecting);
/// beyond it new connections are closed at once, so a flood cannot exhaust the master.
pub const MAX_HA_CONNECTIONS: usize = 256;

/// Accepts slave connections on the HA port.
pub async fn serve(listener: TcpListener, ha: Arc<HaState>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HA_CONNECTIONS));
    let refused = rocketraft_remoting::limits::Throttle::new();
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "HA accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if let Some(skipped) = refused.allow(Duration::from_secs(1)) {
                tracing::warn!(%peer, skipped, limit = MAX_HA_CONNECTIONS,
                    "HA connection limit reached; closing the new connection");
            }
            continue;
        };
        let _ = sock.set_nodelay(true);
        let ha = ha.clone();
        tokio::spawn(async move {
            let sock = match &ha.tls.server {
                None => Ok(Transport::Plain(sock)),
                Some(tls) => tls.accept(sock, TRUST_TIMEOUT).await,
            };
            let result = match sock {
                Ok(sock) => master_connection(sock, &peer.to_string(), ha).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::info!(%peer, error = %e, "HA connection closed");
            }
            drop(slot);
        });
    }
}

async fn read_exact_timeout(
    sock: &mut (impl AsyncReadExt + Unpin),
    buf: &mut [u8],
) -> std::io::Result<()> {
    read_exact_within(sock, buf, HOUSEKEEPING).await
}

async fn read_exact_within(
    sock: &mut (impl AsyncReadExt + Unpin),
    buf: &mut [u8],
    limit: Duration,
) -> std::io::Result<()> {
    match tokio::time::timeout(limit, sock.read_exact(buf)).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("peer silent for {} s", limit.as_secs_f32()),
        )),
    }
}

fn encode_epochs(entries: &[EpochEntry]) -> Vec<u8> {
    let mut body = Vec::with_capacity(entries.len() * 12);
    for e in entries {
        body.extend_from_slice(&e.epoch.to_be_bytes());
        body.extend_from_slice(&e.start_offset.to_be_bytes());
    }
    body
}

// ------------------------------------------------------------------------------------------
// Frame parsing (pure: what the connections read, checked before it is used)
// ------------------------------------------------------------------------------------------

/// Bytes of the slave's handshake.
pub const SLAVE_HANDSHAKE_LEN: usize = 16;
/// Bytes of the master's handshake before its epoch entries.
pub const MASTER_HANDSHAKE_HEAD_LEN: usize = 20;
/// Bytes of a slave's offset report.
pub const REPORT_LEN: usize = 12;
/// Bytes of a transfer frame's header.
pub const TRANSFER_HEAD_LEN: usize = 36;
/// Bytes of one epoch entry in the master's handshake.
const EPOCH_ENTRY_LEN: usize = 12;

/// A malformed HA frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("an HA frame part of {expected} bytes arrived with {got}")]
    Length { expected: usize, got: usize },
    #[error("expected HA state {expected}, got state {got}")]
    State { expected: i32, got: i32 },
    #[error("bad frame body size {0} (0 to {MAX_FRAME_BODY} bytes)")]
    BodySize(i32),
    #[error("epoch entries of {0} bytes are not whole {EPOCH_ENTRY_LEN}-byte entries")]
    EpochBody(usize),
    #[error("negative offset {0} in a slave's report")]
    NegativeOffset(i64),
    #[error("a queue offsets body is cut or malformed at byte {0}")]
    QueueOffsets(usize),
}

/// The slave's handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlaveHandshake {
    pub sync_from_last_file: i16,
    pub async_learner: i16,
    pub slave_id: i64,
}

/// The master's handshake before its `body_size` bytes of epoch entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MasterHandshakeHead {
    pub body_size: usize,
    /// The master's CommitLog end.
    pub master_max: i64,
    pub epoch: i32,
}

/// A transfer frame's header; `body_size` CommitLog bytes follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferHead {
    pub body_size: usize,
    pub offset: i64,
    pub epoch: i32,
    pub epoch_start: i64,
    pub confirm: i64,
}

fn exact(frame: &[u8], expected: usize) -> Result<(), FrameError> {
    if frame.len() == expected {
        Ok(())
    } else {
        Err(FrameError::Length {
            expected,
            got: frame.len(),
        })
    }
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(x)
}

fn expect_state(got: i32, expected: i32) -> Result<(), FrameError> {
    if got == expected {
        Ok(())
    } else {
        Err(FrameError::State { expected, got })
    }
}

/// A body size within 0..=[`MAX_FRAME_BODY`].
fn body_size(size: i32) -> Result<usize, FrameError> {
    usize::try_from(size)
        .ok()
        .filter(|s| *s <= MAX_FRAME_BODY)
        .ok_or(FrameError::BodySize(size))
}

/// The slave's 16-byte handshake: `state (1)`, `syncFromLastFile`, `asyncLearner`, its id.
pub fn parse_slave_handshake(frame: &[u8]) -> Result<SlaveHandshake, FrameError> {
    exact(frame, SLAVE_HANDSHAKE_LEN)?;
    expect_state(be_i32(frame, 0), STATE_HANDSHAKE)?;
    Ok(SlaveHandshake {
        sync_from_last_file: be_i16(frame, 4),
        async_learner: be_i16(frame, 6),
        slave_id: be_i64(frame, 8),
    })
}

/// The slave's handshake frame for `slave_id` (neither flag set).
fn slave_handshake_frame(slave_id: i64) -> Vec<u8> {
    let mut hs = Vec::with_capacity(SLAVE_HANDSHAKE_LEN);
    hs.extend_from_slice(&STATE_HANDSHAKE.to_be_bytes());
    hs.extend_from_slice(&0i16.to_be_bytes());
    hs.extend_from_slice(&0i16.to_be_bytes());
    hs.extend_from_slice(&slave_id.to_be_bytes());
    hs
}

/// The master's 20-byte handshake head: `state (1)`, `bodySize` (whole epoch entries, at most
/// [`MAX_FRAME_BODY`]), the master's log end, its epoch.
pub fn parse_master_handshake_head(frame: &[u8]) -> Result<MasterHandshakeHead, FrameError> {
    exact(frame, MASTER_HANDSHAKE_HEAD_LEN)?;
    expect_state(be_i32(frame, 0), STATE_HANDSHAKE)?;
    let size = be_i32(frame, 4);
    let body_size = body_size(size)?;
    if !body_size.is_multiple_of(EPOCH_ENTRY_LEN) {
        return Err(FrameError::EpochBody(body_size));
    }
    Ok(MasterHandshakeHead {
        body_size,
        master_max: be_i64(frame, 8),
        epoch: be_i32(frame, 16),
    })
}

/// The master's handshake head and its epoch entries.
fn master_handshake_frame(entries: &[EpochEntry], master_max: i64, epoch: i32) -> Vec<u8> {
    let body = encode_epochs(entries);
    let mut frame = Vec::with_capacity(MASTER_HANDSHAKE_HEAD_LEN + body.len());
    frame.extend_from_slice(&STATE_HANDSHAKE.to_be_bytes());
    frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
    frame.extend_from_slice(&master_max.to_be_bytes());
    frame.extend_from_slice(&epoch.to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// The epoch entries of the master's handshake: `epoch i32, startOffset i64` each.
pub fn decode_epochs(body: &[u8]) -> Result<Vec<EpochEntry>, FrameError> {
    if !body.len().is_multiple_of(EPOCH_ENTRY_LEN) {
        return Err(FrameError::EpochBody(body.len()));
    }
    Ok(body
        .chunks_exact(EPOCH_ENTRY_LEN)
        .map(|c| EpochEntry {
            epoch: be_i32(c, 0),
            start_offset: be_i64(c, 4),
        })
        .collect())
}

/// The master's next queue offsets at `at` (`(topic, queue id, next queue offset)`), in a
/// frame with the transfer head's layout and state [`STATE_QUEUE_OFFSETS`]; each queue is a
/// big-endian u16 topic length, the topic's UTF-8 bytes, an i32 queue id and an i64 offset.
fn queue_offsets_frame(at: i64, queues: &[(String, i32, i64)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (topic, queue_id, next) in queues {
        let Ok(len) = u16::try_from(topic.len()) else {
            continue;
        };
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(topic.as_bytes());
        body.extend_from_slice(&queue_id.to_be_bytes());
        body.extend_from_slice(&next.to_be_bytes());
    }
    let mut frame = Vec::with_capacity(TRANSFER_HEAD_LEN + body.len());
    frame.extend_from_slice(&STATE_QUEUE_OFFSETS.to_be_bytes());
    frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
    frame.extend_from_slice(&at.to_be_bytes());
    frame.extend_from_slice(&0i32.to_be_bytes());
    frame.extend_from_slice(&0i64.to_be_bytes());
    frame.extend_from_slice(&0i64.to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// The master's next queue offsets at `at` in as many queue offsets frames as it takes for
/// each body to stay within `body_limit` bytes (whole queues, in order; a queue larger than
/// the limit alone in its frame). One empty frame when there is no queue: the slave learns
/// there is nothing to seed.
fn queue_offsets_frames(at: i64, queues: &[(String, i32, i64)], body_limit: usize) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut from = 0;
    let mut body = 0;
    for (i, (topic, _, _)) in queues.iter().enumerate() {
        let size = 14 + topic.len();
        if body > 0 && body + size > body_limit {
            frames.push(queue_offsets_frame(at, &queues[from..i]));
            from = i;
            body = 0;
        }
        body += size;
    }
    if from < queues.len() || frames.is_empty() {
        frames.push(queue_offsets_frame(at, &queues[from..]));
    }
    frames
}

/// Sends the master's next queue offsets at `at` to a slave (see [`queue_offsets_frames`]).
async fn send_queue_offsets(
    ha: &HaState,
    wr: &mut (impl AsyncWrite + Unpin),
    at: i64,
) -> std::io::Result<()> {
    let limit = ha
        .queue_offsets_frame_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    let queues = ha.store.queue_offsets_at(at);
    for frame in queue_offsets_frames(at, &queues, limit) {
        wr.write_all(&frame).await?;
    }
    Ok(())
}

/// Whether a frame head of [`TRANSFER_HEAD_LEN`] bytes is a queue offsets frame; then its
/// body size and offset.
pub fn parse_queue_offsets_head(frame: &[u8]) -> Result<Option<(usize, i64)>, FrameError> {
    exact(frame, TRANSFER_HEAD_LEN)?;
    if be_i32(frame, 0) != STATE_QUEUE_OFFSETS {
        return Ok(None);
    }
    Ok(Some((body_size(be_i32(frame, 4))?, be_i64(frame, 8))))
}

/// The queues of a queue offsets frame's body (see [`queue_offsets_frame`]).
pub fn decode_queue_offsets(body: &[u8]) -> Result<Vec<(String, i32, i64)>, FrameError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let cut = FrameError::QueueOffsets(at);
        let len = body
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
            .ok_or(cut.clone())?;
        let topic = body
            .get(at + 2..at + 2 + len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .ok_or(cut.clone())?;
        let rest = body.get(at + 2 + len..at + 14 + len).ok_or(cut.clone())?;
        let (queue_id, next) = (be_i32(rest, 0), be_i64(rest, 4));
        if queue_id < 0
            || next < 0
            || rocketraft_common::topic::validate_stored_topic_name(topic).is_err()
        {
            return Err(cut);
        }
        out.push((topic.to_string(), queue_id, next));
        at += 14 + len;
    }
    Ok(out)
}

/// A transfer frame's 36-byte header: `state (2)`, `bodySize` (at most [`MAX_FRAME_BODY`]),
/// offset, epoch, epoch start, confirm offset.
pub fn parse_transfer_head(frame: &[u8]) -> Result<TransferHead, FrameError> {
    exact(frame, TRANSFER_HEAD_LEN)?;
    expect_state(be_i32(frame, 0), STATE_TRANSFER)?;
    Ok(TransferHead {
        body_size: body_size(be_i32(frame, 4))?,
        offset: be_i64(frame, 8),
        epoch: be_i32(frame, 16),
        epoch_start: be_i64(frame, 20),
        confirm: be_i64(frame, 28),
    })
}

/// A slave's 12-byte report: `state (2)` and the end of its log (not negative).
pub fn parse_report(frame: &[u8]) -> Result<i64, FrameError> {
    exact(frame, REPORT_LEN)?;
    expect_state(be_i32(frame, 0), STATE_TRANSFER)?;
    let offset = be_i64(frame, 4);
    if offset < 0 {
        return Err(FrameError::NegativeOffset(offset));
    }
    Ok(offset)
}

fn frame_error(e: FrameError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

/// Runs every HA frame parser on arbitrary bytes (the fuzz target `ha_frames` in
/// `broker/fuzz` and a property test): none may panic, and whatever parses must encode back
/// to the same bytes.
pub fn fuzz_ha_frames(data: &[u8]) {
    let prefix = |n: usize| data.get(..n).unwrap_or(data);
    if let Ok(hs) = parse_slave_handshake(prefix(SLAVE_HANDSHAKE_LEN)) {
        if hs.sync_from_last_file == 0 && hs.async_learner == 0 {
            assert_eq!(
                slave_handshake_frame(hs.slave_id),
                prefix(SLAVE_HANDSHAKE_LEN)
            );
        }
    }
    if let Ok(head) = parse_master_handshake_head(prefix(MASTER_HANDSHAKE_HEAD_LEN)) {
        let end = MASTER_HANDSHAKE_HEAD_LEN + head.body_size;
        if let Some(frame) = data.get(..end) {
            let entries = decode_epochs(&frame[MASTER_HANDSHAKE_HEAD_LEN..])
                .expect("a parsed head announces whole epoch entries");
            assert_eq!(
                master_handshake_frame(&entries, head.master_max, head.epoch),
                frame
            );
        }
    }
    if let Ok(entries) = decode_epochs(data) {
        assert_eq!(encode_epochs(&entries), data);
    }
    if let Ok(queues) = decode_queue_offsets(data) {
        let frame = queue_offsets_frame(0, &queues);
        assert_eq!(
            parse_queue_offsets_head(&frame[..TRANSFER_HEAD_LEN]),
            Ok(Some((frame.len() - TRANSFER_HEAD_LEN, 0)))
        );
        assert_eq!(
            decode_queue_offsets(&frame[TRANSFER_HEAD_LEN..]),
            Ok(queues)
        );
    }
    if let Ok(offset) = parse_report(prefix(REPORT_LEN)) {
        assert_eq!(report_frame(offset), prefix(REPORT_LEN));
    }
    // A stream of transfer frames, as a slave reads it.
    let mut rest = data;
    while let Some(head) = rest.get(..TRANSFER_HEAD_LEN) {
        let Ok(head) = parse_transfer_head(head) else {
            break;
        };
        let Some(frame) = rest.get(..TRANSFER_HEAD_LEN + head.body_size) else {
            break;
        };
        let ep = EpochEntry {
            epoch: head.epoch,
            start_offset: head.epoch_start,
        };
        let body = &frame[TRANSFER_HEAD_LEN..];
        assert_eq!(transfer_frame(head.offset, ep, head.confirm, body), frame);
        rest = &rest[frame.len()..];
    }
}

/// One slave's connection to this master: handshake, then a task reading the slave's offset
/// reports while this one streams the CommitLog from where the slave's first report says, until
/// an error or this broker stops being master of the connection's generation.
///
/// `sock` is any byte stream: [`serve`] hands it an accepted TCP connection (or TLS over one),
/// the deterministic simulation (`sim/`) a simulated one; `peer` names the slave in logs and
/// in [`SlaveInfo::addr`].
pub async fn master_connection<S>(mut sock: S, peer: &str, ha: Arc<HaState>) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (slave_id, generation) = master_handshake(&mut sock, peer, &ha).await?;

    // First report: where to stream from.
    let mut rep = [0u8; REPORT_LEN];
    read_exact_timeout(&mut sock, &mut rep).await?;
    let next = parse_report(&rep).map_err(frame_error)?;
    let addr = peer.to_string();
    ha.slave_report(generation, slave_id, &addr, next)?;

    let (mut rd, wr) = tokio::io::split(sock);
    let reader_ha = ha.clone();
    let reader_addr = addr.clone();
    let reader: JoinHandle<std::io::Result<()>> = tokio::spawn(async move {
        let mut rep = [0u8; REPORT_LEN];
        loop {
            read_exact_timeout(&mut rd, &mut rep).await?;
            let offset = parse_report(&rep).map_err(frame_error)?;
            reader_ha.slave_report(generation, slave_id, &reader_addr, offset)?;
        }
    });
    let result = stream_to_slave(&ha, wr, next, generation, &reader).await;
    reader.abort();
    ha.slave_disconnected(generation, slave_id);
    result
}

/// The master's side of the handshake: with a cluster secret, sends its nonce and checks the
/// slave's proof; reads the slave's handshake (its broker id), refuses it unless this broker is
/// master and the id may replicate ([`HaState::admit`]), and answers (after its own proof, with
/// a secret) with the epoch entries, the log end and the epoch. Returns the slave's id and the
/// connection generation it is served under.
async fn master_handshake(
    sock: &mut (impl AsyncRead + AsyncWrite + Unpin),
    peer: &str,
    ha: &HaState,
) -> std::io::Result<(i64, u64)> {
    let master_nonce = match &ha.secret {
        Some(_) => {
            let n = nonce();
            sock.write_all(&n).await?;
            Some(n)
        }
        None => None,
    };
    let mut hs = [0u8; SLAVE_HANDSHAKE_LEN];
    let first_wait = if master_nonce.is_some() {
        TRUST_TIMEOUT
    } else {
        HOUSEKEEPING
    };
    read_exact_within(sock, &mut hs, first_wait).await?;
    let parsed = parse_slave_handshake(&hs);
    let claimed_slave_id = be_i64(&hs, 8);
    let mut answer = Vec::new();
    if let (Some(secret), Some(master_nonce)) = (&ha.secret, master_nonce) {
        let mut proof = [0u8; NONCE_LEN + PROOF_LEN];
        let read = read_exact_within(sock, &mut proof, TRUST_TIMEOUT).await;
        let (slave_nonce, slave_proof) = proof.split_at(NONCE_LEN);
        if read.is_err()
            || !secret.verify(SLAVE_ROLE, &[&master_nonce, slave_nonce, &hs], slave_proof)
        {
            tracing::warn!(
                %peer,
                claimed_slave_id,
                "an HA peer did not prove the cluster secret; closing its connection (check cluster_secret on both brokers)"
            );
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "the peer did not prove the cluster secret",
            ));
        }
        answer.extend_from_slice(&secret.prove(MASTER_ROLE, &[slave_nonce, &master_nonce]));
    }
    let slave_id = parsed.map_err(frame_error)?.slave_id;
    let deadline = tokio::time::Instant::now() + UNKNOWN_REPLICA_WAIT;
    loop {
        match ha.admit(slave_id) {
            Admission::Admitted => break,
            Admission::NotMaster => {
                return Err(std::io::Error::other("not a master: refusing a slave"))
            }
            Admission::Refused(why) => {
                tracing::warn!(%peer, slave_id, %why, "refusing an HA connection");
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    why,
                ));
            }
            Admission::Unknown(known) => {
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(
                        %peer,
                        slave_id,
                        known = ?known,
                        "refusing an HA connection from a broker id the controller does not know for this set"
                    );
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        format!("broker id {slave_id} is not a replica of this set"),
                    ));
                }
                // A slave registered since the last read: ask the controller again.
                ha.replica_refresh.notify_one();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let (generation, epoch) = {
        let g = ha.inner.lock();
        if g.role != Role::Master {
            return Err(std::io::Error::other("not a master: refusing a slave"));
        }
        (g.connection_generation, g.master_epoch)
    };
    let entries = ha.store.epoch_entries();
    answer.extend_from_slice(&master_handshake_frame(
        &entries,
        ha.store.max_phy_offset(),
        epoch,
    ));
    sock.write_all(&answer).await?;
    tracing::info!(%peer, slave_id, "slave connected; handshake sent");
    Ok((slave_id, generation))
}

/// Streams the CommitLog to a slave from `next`: chunks (each within one epoch) while behind,
/// else a heartbeat with the confirm offset and a wait for new data. Ends with an error when
/// the report reader stops or this broker is no longer master of `generation`.
async fn stream_to_slave<S: AsyncWrite>(
    ha: &HaState,
    mut wr: tokio::io::WriteHalf<S>,
    mut next: i64,
    generation: u64,
    reader: &JoinHandle<std::io::Result<()>>,
) -> std::io::Result<()> {
    let mut arrivals = ha.store.subscribe_arrivals();
    if next >= ha.store.min_phy_offset() {
        // Where this slave's queues go on, before the records from `next`: a queue a
        // start-over emptied has no other way to learn it until its next record.
        send_queue_offsets(ha, &mut wr, next).await?;
    }
    loop {
        if reader.is_finished() {
            return Err(std::io::Error::other("slave report stream ended"));
        }
        {
            let g = ha.inner.lock();
            if g.role != Role::Master || g.connection_generation != generation {
                return Err(std::io::Error::other("no longer master of this epoch"));
            }
        }
        let max = ha.store.max_phy_offset();
        let entries = ha.store.epoch_entries();
        let confirm = ha.store.confirm_offset();
        let min = ha.store.min_phy_offset();
        if next < min && min <= max {
            // Retention deleted what this slave needs next: tell it to start over at this
            // log's first offset (an empty frame whose offset is past the slave's end), then
            // stream from there.
            tracing::warn!(
                slave_next = next,
                min_phy_offset = min,
                "a slave is behind this master's first offset: it starts over there"
            );
            let (ep, _) = epoch_at(&entries, min, max);
            wr.write_all(&transfer_frame(min, ep, confirm, &[])).await?;
            send_queue_offsets(ha, &mut wr, min).await?;
            next = min;
            continue;
        }
        if next < max {
            let (ep, limit) = epoch_at(&entries, next, max);
            let chunk = ha
                .store
                .replication_chunk(next, CHUNK_BYTES, limit)
                .ok_or_else(|| {
                    std::io::Error::other(format!(
                        "cannot read the CommitLog at {next} for a slave"
                    ))
                })?;
            wr.write_all(&transfer_frame(next, ep, confirm, &chunk))
                .await?;
            next += chunk_advance(
                &chunk,
                next,
                ha.store.config().commitlog_segment_size as i64,
            );
            continue;
        }
        // Idle: heartbeat with the confirm offset, then wait for new data.
        let ep = entries.last().copied().unwrap_or(EpochEntry {
            epoch: 0,
            start_offset: 0,
        });
        wr.write_all(&transfer_frame(next, ep, confirm, &[]))
            .await?;
        arrivals.borrow_and_update();
        if ha.store.max_phy_offset() <= next {
            let _ = tokio::time::timeout(HEARTBEAT, arrivals.changed()).await;
        }
    }
}

/// A transfer frame: state, body length, offset, the epoch and its start, the confirm offset,
/// then the CommitLog bytes (none for a heartbeat).
fn transfer_frame(offset: i64, ep: EpochEntry, confirm: i64, chunk: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(TRANSFER_HEAD_LEN + chunk.len());
    frame.extend_from_slice(&STATE_TRANSFER.to_be_bytes());
    frame.extend_from_slice(&(chunk.len() as i32).to_be_bytes());
    frame.extend_from_slice(&offset.to_be_bytes());
    frame.extend_from_slice(&ep.epoch.to_be_bytes());
    frame.extend_from_slice(&ep.start_offset.to_be_bytes());
    frame.extend_from_slice(&confirm.to_be_bytes());
    frame.extend_from_slice(chunk);
    frame
}

/// The epoch holding `offset` and where the next epoch starts (or `max`).
fn epoch_at(entries: &[EpochEntry], offset: i64, max: i64) -> (EpochEntry, i64) {
    let mut found = EpochEntry {
        epoch: 0,
        start_offset: 0,
    };
    let mut limit = max;
    for (i, e) in entries.iter().enumerate() {
        if e.start_offset <= offset {
            found = *e;
            limit = entries.get(i + 1).map_or(max, |n| n.start_offset.min(max));
        }
    }
    (found, limit)
}

/// How far a chunk moves the stream: its length, or to the segment end for a blank marker.
fn chunk_advance(chunk: &[u8], at: i64, segment_size: i64) -> i64 {
    let magic = rocketraft_common::message::read_i32(chunk, 4);
    if chunk.len() == 8 && magic == Some(rocketraft_common::message::BLANK_MAGIC_CODE) {
        at - at.rem_euclid(segment_size) + segment_size - at
    } else {
        chunk.len() as i64
    }
}

// ------------------------------------------------------------------------------------------
// Slave side
// ------------------------------------------------------------------------------------------

/// One session of following a master at `master` (its HA address): handshake, truncation of
/// the divergent tail, then appending the stream and reporting offsets until an error.
pub async fn follow_once(ha: &Arc<HaState>, my_id: i64, master: &str) -> anyhow::Result<()> {
    let tcp = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(master))
        .await
        .map_err(|_| anyhow::anyhow!("connect timed out"))??;
    let _ = tcp.set_nodelay(true);
    let sock = match &ha.tls.client {
        None => Transport::Plain(tcp),
        Some(tls) => tokio::time::timeout(TRUST_TIMEOUT, tls.connect(tcp, master))
            .await
            .map_err(|_| anyhow::anyhow!("TLS handshake with the master timed out"))??,
    };
    follow_stream(ha, my_id, master, sock).await
}

/// [`follow_once`] after the connection is made: the same session over any byte stream (the
/// deterministic simulation, `sim/`, hands it a simulated one). `master` names the master in
/// logs.
pub async fn follow_stream<S>(
    ha: &Arc<HaState>,
    my_id: i64,
    master: &str,
    mut sock: S,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (master_epochs, master_max) = slave_handshake(&mut sock, my_id, ha.secret.as_ref()).await?;
    let store = &ha.store;
    truncate_divergent(store, &master_epochs, master_max).await?;
    let mut next = store.max_phy_offset();
    sock.write_all(&report_frame(next)).await?;
    tracing::info!(%master, from = next, master_max, "replicating from the master");
    let mut raw = [0u8; TRANSFER_HEAD_LEN];
    loop {
        read_exact_timeout(&mut sock, &mut raw).await?;
        ha.note_master_frame();
        if let Some((size, at)) = parse_queue_offsets_head(&raw)
            .map_err(|e| anyhow::anyhow!("bad queue offsets frame: {e}"))?
        {
            let mut body = vec![0u8; size];
            read_exact_timeout(&mut sock, &mut body).await?;
            let queues = decode_queue_offsets(&body)
                .map_err(|e| anyhow::anyhow!("bad queue offsets frame: {e}"))?;
            store.seed_queue_offsets(at, queues).await?;
            continue;
        }
        let TransferHead {
            body_size,
            offset,
            epoch,
            epoch_start,
            confirm,
        } = parse_transfer_head(&raw).map_err(|e| anyhow::anyhow!("bad transfer frame: {e}"))?;
        let mut body = vec![0u8; body_size];
        read_exact_timeout(&mut sock, &mut body).await?;
        if body_size == 0 && offset > next {
            // The master no longer stores [next, offset) (retention): start over at its first
            // offset. Not caught up, this replica is not counted in the SyncStateSet until its
            // acks reach the master's end again.
            tracing::warn!(
                %master,
                local_end = next,
                master_min = offset,
                "this replica is behind its master's first offset: starting over there"
            );
            store.reset_to(offset).await?;
            next = store.max_phy_offset();
        }
        if body_size > 0 {
            if offset != next {
                anyhow::bail!("master sent offset {offset}, this replica's log ends at {next}");
            }
            if store.last_epoch().is_none_or(|e| e.epoch != epoch) {
                store.append_epoch(epoch, epoch_start)?;
            }
            next = store.append_replicated(offset, body).await?;
        }
        // Never back across sessions; only a truncate/reset lowers it: what was confirmed
        // stays held by every SyncStateSet member. A master restarted in the same epoch starts
        // from the confirm offset of its last checkpoint, below what it confirmed before,
        // until its members report again (found by the deterministic simulation, `sim/`, seed
        // 50 with `--replicas --fault-ms 500`: a slave's confirm offset went from 2617 to 0).
        // Holding the stored confirm offset across sessions and master epochs is safe because
        // the store lowers it wherever this replica's log changes below it: `truncate_divergent`
        // (the store's `cut_tail`) lowers it to the truncation point and `reset_to` sets it to
        // the new start, so bytes of a new epoch at or past that point are confirmed only when
        // the master says so; and `.min(next)` never confirms past what this replica holds.
        let held = store.confirm_offset().min(next);
        store.set_confirm_offset(confirm.min(next).max(held));
        sock.write_all(&report_frame(next)).await?;
    }
}

/// The slave's side of the handshake: with a cluster secret, reads the master's nonce and
/// proves the secret; sends its broker id; with a secret, checks the master's proof; reads the
/// master's answer. Returns the master's epoch entries and log end.
async fn slave_handshake(
    sock: &mut (impl AsyncRead + AsyncWrite + Unpin),
    my_id: i64,
    secret: Option<&ClusterSecret>,
) -> anyhow::Result<(Vec<EpochEntry>, i64)> {
    let hs = slave_handshake_frame(my_id);
    match secret {
        None => sock.write_all(&hs).await?,
        Some(secret) => {
            let mut master_nonce = [0u8; NONCE_LEN];
            read_exact_within(sock, &mut master_nonce, TRUST_TIMEOUT)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "the master sent no challenge ({e}): is the same cluster_secret set on it?"
                    )
                })?;
            let slave_nonce = nonce();
            let proof = secret.prove(SLAVE_ROLE, &[&master_nonce, &slave_nonce, &hs]);
            let mut out = hs.clone();
            out.extend_from_slice(&slave_nonce);
            out.extend_from_slice(&proof);
            sock.write_all(&out).await?;
            let mut master_proof = [0u8; PROOF_LEN];
            read_exact_within(sock, &mut master_proof, TRUST_TIMEOUT)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "the master refused this slave or did not prove the cluster secret ({e}): check cluster_secret on both brokers, and that the controller knows this broker"
                    )
                })?;
            if !secret.verify(MASTER_ROLE, &[&slave_nonce, &master_nonce], &master_proof) {
                anyhow::bail!(
                    "the master's proof of the cluster secret does not match: it holds another secret, or it is not ours"
                );
            }
        }
    }
    let mut raw = [0u8; MASTER_HANDSHAKE_HEAD_LEN];
    read_exact_timeout(sock, &mut raw).await?;
    let head = parse_master_handshake_head(&raw)
        .map_err(|e| anyhow::anyhow!("bad master handshake: {e}"))?;
    let mut body = vec![0u8; head.body_size];
    read_exact_timeout(sock, &mut body).await?;
    Ok((decode_epochs(&body)?, head.master_max))
}

/// Cuts the local tail the master does not share (found from both epoch histories; a log never
/// written under any epoch keeps nothing past its start unless empty). With nothing to cut it
/// still truncates at the local end, which drops epochs this replica started there.
///
/// When that point lies below this replica's first offset (its retention deleted the segments
/// where it diverged), or no epoch is shared at all (the divergence lies at or below the
/// master's first epoch), the whole log is suspect: it starts over at the segment start at or
/// below that point (see the store writer's `reset_to`). An empty log forgets its epochs (they
/// describe no byte: an interrupted start-over, or a master that never wrote).
async fn truncate_divergent(
    store: &MessageStore,
    master_epochs: &[EpochEntry],
    master_max: i64,
) -> anyhow::Result<()> {
    let local_end = store.max_phy_offset();
    let local_min = store.min_phy_offset();
    let local_epochs = store.epoch_entries();
    let segment = (store.config().commitlog_segment_size as i64).max(1);
    if local_end == local_min && !local_epochs.is_empty() && local_end.rem_euclid(segment) == 0 {
        store.reset_to(local_end).await?;
        return Ok(());
    }
    let keep = if local_epochs.is_empty() {
        // A log this replica never wrote under any epoch: keep nothing past its start unless
        // it is empty.
        local_min.max(0).min(local_end)
    } else {
        match crate::store::epoch::consistent_point(
            &local_epochs,
            local_end,
            master_epochs,
            master_max,
        ) {
            Some(point) => point,
            None => {
                let below = master_epochs
                    .first()
                    .map_or(local_min, |e| e.start_offset.min(local_min))
                    .max(0);
                let start = below - below.rem_euclid(segment);
                tracing::warn!(
                    local_min,
                    local_end,
                    start_over_at = start,
                    "this replica shares no epoch with the master: its whole log is suspect"
                );
                store.reset_to(start).await?;
                return Ok(());
            }
        }
    };
    if keep < local_end {
        tracing::warn!(
            local_end,
            keep,
            local_min,
            master_max,
            "this replica has a tail the master does not share; truncating it"
        );
        store.truncate_to(keep).await?;
    } else {
        store.truncate_to(local_end).await?;
    }
    Ok(())
}

/// A slave's offset report: the transfer state and the end of its log.
fn report_frame(offset: i64) -> Vec<u8> {
    let mut r = Vec::with_capacity(REPORT_LEN);
    r.extend_from_slice(&STATE_TRANSFER.to_be_bytes());
    r.extend_from_slice(&offset.to_be_bytes());
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn queue_offsets_round_trip_and_bad_entries_are_refused() {
        let queues = vec![
            ("TopicA".to_string(), 0, 7),
            ("%LMQ%$Parent$lite".to_string(), 0, 3),
        ];
        let frame = queue_offsets_frame(42, &queues);
        assert_eq!(
            parse_queue_offsets_head(&frame[..TRANSFER_HEAD_LEN]).expect("head"),
            Some((frame.len() - TRANSFER_HEAD_LEN, 42))
        );
        assert_eq!(
            decode_queue_offsets(&frame[TRANSFER_HEAD_LEN..]).expect("body"),
            queues
        );
        for bad in [
            ("TopicA", -1, 7),
            ("TopicA", 0, -7),
            ("", 0, 7),
            ("bad topic", 0, 7),
        ] {
            let frame = queue_offsets_frame(0, &[(bad.0.to_string(), bad.1, bad.2)]);
            assert!(
                decode_queue_offsets(&frame[TRANSFER_HEAD_LEN..]).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn queue_offsets_split_into_frames_within_the_limit() {
        let queues: Vec<(String, i32, i64)> = (0..100)
            .map(|i| (format!("%LMQ%$Parent$lite{i}"), i % 3, i as i64 + 1))
            .collect();
        for limit in [1, 64, 200, 1000, QUEUE_OFFSETS_FRAME_BYTES] {
            let frames = queue_offsets_frames(9, &queues, limit);
            let mut got = Vec::new();
            for frame in &frames {
                let (size, at) = parse_queue_offsets_head(&frame[..TRANSFER_HEAD_LEN])
                    .expect("head")
                    .expect("a queue offsets frame");
                assert_eq!((size, at), (frame.len() - TRANSFER_HEAD_LEN, 9));
                let part = decode_queue_offsets(&frame[TRANSFER_HEAD_LEN..]).expect("body");
                assert!(!part.is_empty(), "limit {limit}: an empty frame");
                assert!(
                    size <= limit || part.len() == 1,
                    "limit {limit}: a body of {size} bytes with {} queues",
                    part.len()
                );
                got.extend(part);
            }
            assert_eq!(got, queues, "limit {limit}: every queue, in order");
            let whole = 100 * 14 + queues.iter().map(|q| q.0.len()).sum::<usize>();
            assert_eq!(frames.len() == 1, limit >= whole, "limit {limit}");
        }
        let empty = queue_offsets_frames(9, &[], 64);
        assert_eq!(empty.len(), 1, "one empty frame: nothing to seed");
        assert_eq!(empty[0].len(), TRANSFER_HEAD_LEN);
    }

    /// A master whose queue offsets take many frames (the limit lowered): a fresh replica that
    /// starts over at the master's first offset seeds every one of its queues.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slave_applies_every_queue_offsets_frame_of_a_split_list() {
        use crate::store::{BrokerMessage, StoreConfig};
        use rocketraft_common::message::Message;
        const SEGMENT: u64 = 64 * 1024;
        const LITE: usize = 300;
        let open = |dir: &std::path::Path| {
            MessageStore::open(StoreConfig {
                commitlog_segment_size: SEGMENT,
                pretouch: false,
                flush_interval_ms: 10,
                checkpoint_interval_ms: 20,
                file_reserved_time_secs: Some(1),
                delete_when: (0..24)
                    .map(|h| format!("{h:02}"))
                    .collect::<Vec<_>>()
                    .join(";"),
                clean_resource_interval_ms: 3_600_000,
                delete_commit_log_files_interval_ms: 0,
                ..StoreConfig::new(dir)
            })
            .expect("store")
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let master = open(&dir.path().join("master"));
        master.append_epoch(1, 0).expect("epoch");
        // A record in each of many lite topics, then others past them for four segments;
        // retention deletes the lite topics' records: no queue of them has an entry left.
        for i in 0..LITE {
            let topic = format!("%LMQ%$Parent$lite{i}");
            master
                .put_message(BrokerMessage::new(Message::new(&topic, vec![b'l'; 10]), 0))
                .await
                .expect("put");
        }
        while master.max_phy_offset() < 4 * SEGMENT as i64 + 1000 {
            master
                .put_message(BrokerMessage::new(Message::new("T", vec![b't'; 1000]), 0))
                .await
                .expect("put");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while master.flushed_phy_offset() < master.max_phy_offset() {
            assert!(Instant::now() < deadline, "never flushed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        master.clean_now().expect("cleaning round");
        let min = master.min_phy_offset();
        assert!(min >= SEGMENT as i64, "expired segments deleted: min {min}");
        let queues = master.queue_offsets_at(min);
        assert_eq!(
            queues.iter().filter(|q| q.0.starts_with("%LMQ%")).count(),
            LITE
        );
        const LIMIT: usize = 512;
        let frames = queue_offsets_frames(min, &queues, LIMIT).len();
        assert!(frames > 10, "the list takes {frames} frames");

        let ha = HaState::new(master.clone());
        ha.queue_offsets_frame_bytes
            .store(LIMIT, std::sync::atomic::Ordering::Relaxed);
        ha.set_master(1, "127.0.0.1:1".into(), 1, 1, BTreeSet::from([1, 2]));
        ha.renew_lease(Instant::now() + Duration::from_secs(600));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let server = tokio::spawn(serve(listener, ha.clone()));

        let slave = open(&dir.path().join("slave"));
        let slave_ha = HaState::new(slave.clone());
        slave_ha.set_slave(1, "127.0.0.1:1".into(), 1, 1, BTreeSet::from([1]));
        let session = follow_once(&slave_ha, 2, &addr);
        tokio::pin!(session);
        let end = master.max_phy_offset();
        let deadline = Instant::now() + Duration::from_secs(20);
        let outcome = loop {
            tokio::select! {
                r = &mut session => break Err(format!("replication ended early: {r:?}")),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {
                    if slave.max_phy_offset() >= end {
                        break Ok(());
                    }
                    if Instant::now() > deadline {
                        break Err(format!("slave at {} of {end} after 20 s", slave.max_phy_offset()));
                    }
                }
            }
        };
        server.abort();
        outcome.expect("the slave caught up");
        assert_eq!(slave.min_phy_offset(), min, "started over there");
        for (topic, queue_id, next) in queues.iter().filter(|q| q.0.starts_with("%LMQ%")) {
            assert_eq!(
                slave.get_max_offset_in_queue(topic, *queue_id),
                *next,
                "{topic}/{queue_id}"
            );
        }
    }

    /// A master that comes back in the same epoch with a lower confirm offset (its last
    /// checkpoint's) does not move its slave's confirm offset back (found by the simulation).
    /// Also runs the HA session over an in-memory stream (`tokio::io::duplex`).
    #[tokio::test]
    async fn a_slave_keeps_its_confirm_offset_when_its_master_restarts_lower() {
        use crate::store::{BrokerMessage, StoreConfig};
        use rocketraft_common::message::Message;
        let dir = tempfile::tempdir().expect("tempdir");
        let open = |name: &str| {
            MessageStore::open(StoreConfig {
                commitlog_segment_size: 64 * 1024,
                pretouch: false,
                message_index_enable: false,
                ..StoreConfig::new(dir.path().join(name))
            })
            .expect("store")
        };
        let master = open("master");
        master.append_epoch(1, 0).expect("epoch");
        let ha = HaState::new(master.clone());
        ha.set_master(1, "m".into(), 1, 1, BTreeSet::from([1, 2]));
        ha.renew_lease(Instant::now() + Duration::from_secs(600));
        for _ in 0..10 {
            master
                .put_message(BrokerMessage::new(Message::new("T", vec![b'x'; 100]), 0))
                .await
                .expect("put");
        }
        ha.on_local_append();
        let end = master.max_phy_offset();
        let slave = open("slave");
        let slave_ha = HaState::new(slave.clone());
        slave_ha.set_slave(1, "m".into(), 1, 1, BTreeSet::from([1, 2]));

        // One session: connect, replicate until the slave confirms the whole log.
        let session = |ha: Arc<HaState>| {
            let (mine, theirs) = tokio::io::duplex(1 << 20);
            let server = tokio::spawn(master_connection(theirs, "s", ha));
            let slave_ha = slave_ha.clone();
            let follower =
                tokio::spawn(async move { follow_stream(&slave_ha, 2, "m", mine).await });
            (server, follower)
        };
        let (server, follower) = session(ha.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        while slave.confirm_offset() < end {
            assert!(Instant::now() < deadline, "the slave never confirmed {end}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        follower.abort();
        server.abort();

        // The master "restarts" in the same epoch: its confirm offset is its checkpoint's, 0,
        // and a member (3) it has not heard from since holds it there.
        master.set_confirm_offset(0);
        ha.set_master(1, "m".into(), 1, 1, BTreeSet::from([1, 2, 3]));
        slave_ha.set_slave(1, "m".into(), 1, 1, BTreeSet::from([1, 2, 3]));
        let (server, follower) = session(ha.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !slave_ha.master_link_fresh(Duration::from_secs(5)) {
            assert!(Instant::now() < deadline, "no frame from the master");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Its frames carry confirm 0. The slave's first report (right after the handshake)
        // comes before any frame; every later one is sent after it applied a frame's confirm
        // offset. Wait for a report newer than the first one seen.
        let report = || {
            ha.snapshot()
                .slaves
                .iter()
                .find(|s| s.broker_id == 2)
                .and_then(|s| s.last_report)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let first = loop {
            if let Some(t) = report() {
                break t;
            }
            assert!(Instant::now() < deadline, "no report from the slave");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        while report().is_none_or(|t| t <= first) {
            assert!(
                Instant::now() < deadline,
                "no report from the slave after a frame"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(master.confirm_offset(), 0);
        assert_eq!(
            slave.confirm_offset(),
            end,
            "the slave's confirm offset went back"
        );
        follower.abort();
        server.abort();
    }

    /// A slave that confirmed C in an old epoch and is truncated to P < C by a new master whose
    /// log diverges at P holds confirm <= P until the master says more: frames confirming less
    /// than C do not confirm the new epoch's bytes in [P, C). Guards the store's `cut_tail`,
    /// which lowers the stored confirm offset to the truncation point (the session's
    /// `held = confirm_offset().min(next)` would otherwise carry C over).
    #[tokio::test]
    async fn a_truncated_slave_does_not_confirm_new_epoch_bytes_below_its_old_confirm() {
        use crate::store::{BrokerMessage, StoreConfig};
        use rocketraft_common::message::Message;
        let dir = tempfile::tempdir().expect("tempdir");
        let open = |name: &str| {
            MessageStore::open(StoreConfig {
                commitlog_segment_size: 64 * 1024,
                pretouch: false,
                message_index_enable: false,
                ..StoreConfig::new(dir.path().join(name))
            })
            .expect("store")
        };
        let put = |store: Arc<MessageStore>| async move {
            let r = store
                .put_message(BrokerMessage::new(Message::new("T", vec![b'x'; 100]), 0))
                .await
                .expect("put");
            r.physical_offset + r.wrote_bytes as i64
        };
        // The slave: epoch 1 up to C, all of it confirmed (it was that epoch's master).
        let slave = open("slave");
        slave.append_epoch(1, 0).expect("epoch");
        let mut slave_ends = Vec::new();
        for _ in 0..10 {
            slave_ends.push(put(slave.clone()).await);
        }
        let c = slave.max_phy_offset();
        // The new master: the same 4 records of epoch 1 (up to P), then epoch 2 past C.
        let master = open("master");
        master.append_epoch(1, 0).expect("epoch");
        let mut p = 0;
        for _ in 0..4 {
            p = put(master.clone()).await;
        }
        assert_eq!(p, slave_ends[3], "P is a record boundary on both logs");
        master.append_epoch(2, p).expect("epoch");
        while master.max_phy_offset() <= c + 500 {
            put(master.clone()).await;
        }
        let end = master.max_phy_offset();
        // The master's confirm offset is P and stays there: member 3 has not reported.
        master.set_confirm_offset(p);
        let ha = HaState::new(master.clone());
        ha.set_master(1, "m".into(), 2, 1, BTreeSet::from([1, 2, 3]));
        ha.renew_lease(Instant::now() + Duration::from_secs(600));
        let slave_ha = HaState::new(slave.clone());
        slave.set_confirm_offset(c);
        assert_eq!(slave.confirm_offset(), c);
        slave_ha.set_slave(1, "m".into(), 2, 1, BTreeSet::from([1, 2, 3]));

        let (mine, theirs) = tokio::io::duplex(1 << 20);
        let server = tokio::spawn(master_connection(theirs, "s", ha.clone()));
        let follower = {
            let slave_ha = slave_ha.clone();
            tokio::spawn(async move { follow_stream(&slave_ha, 2, "m", mine).await })
        };
        // The slave reports the master's end only after applying the last frame's confirm.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ha
            .snapshot()
            .slaves
            .iter()
            .any(|s| s.broker_id == 2 && s.ack_offset == end)
        {
            assert!(
                Instant::now() < deadline,
                "the slave never caught up to {end}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        follower.abort();
        server.abort();
        assert_eq!(slave.max_phy_offset(), end);
        assert_eq!(slave.epoch_entries().last().map(|e| e.epoch), Some(2));
        assert_eq!(
            master.confirm_offset(),
            p,
            "the master never said more than P"
        );
        assert!(
            slave.confirm_offset() <= p,
            "the slave confirmed {} (its old confirm was {c}, the truncation point {p}): new-epoch bytes the master never confirmed",
            slave.confirm_offset()
        );
    }

    #[test]
    fn frames_parse_what_the_encoders_write() {
        let hs = slave_handshake_frame(7);
        assert_eq!(parse_slave_handshake(&hs).map(|h| h.slave_id), Ok(7));
        let entries = [
            EpochEntry {
                epoch: 1,
                start_offset: 0,
            },
            EpochEntry {
                epoch: 3,
                start_offset: 4096,
            },
        ];
        let frame = master_handshake_frame(&entries, 9000, 3);
        let head = parse_master_handshake_head(&frame[..MASTER_HANDSHAKE_HEAD_LEN]);
        assert_eq!(
            head,
            Ok(MasterHandshakeHead {
                body_size: 24,
                master_max: 9000,
                epoch: 3
            })
        );
        assert_eq!(
            decode_epochs(&frame[MASTER_HANDSHAKE_HEAD_LEN..]),
            Ok(entries.to_vec())
        );
        assert_eq!(parse_report(&report_frame(42)), Ok(42));
        let t = transfer_frame(100, entries[1], 90, b"abc");
        let head = parse_transfer_head(&t[..TRANSFER_HEAD_LEN]);
        assert_eq!(
            head,
            Ok(TransferHead {
                body_size: 3,
                offset: 100,
                epoch: 3,
                epoch_start: 4096,
                confirm: 90
            })
        );
    }

    #[test]
    fn malformed_frames_are_typed_errors() {
        assert_eq!(
            parse_slave_handshake(&[0; 15]),
            Err(FrameError::Length {
                expected: 16,
                got: 15
            })
        );
        let mut hs = slave_handshake_frame(1);
        hs[3] = 2;
        assert_eq!(
            parse_slave_handshake(&hs),
            Err(FrameError::State {
                expected: 1,
                got: 2
            })
        );
        let mut head = master_handshake_frame(&[], 0, 1);
        head[4..8].copy_from_slice(&13i32.to_be_bytes());
        assert_eq!(
            parse_master_handshake_head(&head),
            Err(FrameError::EpochBody(13))
        );
        head[4..8].copy_from_slice(&(-12i32).to_be_bytes());
        assert_eq!(
            parse_master_handshake_head(&head),
            Err(FrameError::BodySize(-12))
        );
        assert_eq!(decode_epochs(&[0; 13]), Err(FrameError::EpochBody(13)));
        let mut t = transfer_frame(
            0,
            EpochEntry {
                epoch: 1,
                start_offset: 0,
            },
            0,
            &[],
        );
        let too_big = (MAX_FRAME_BODY + 1) as i32;
        t[4..8].copy_from_slice(&too_big.to_be_bytes());
        assert_eq!(parse_transfer_head(&t), Err(FrameError::BodySize(too_big)));
        t[3] = 1;
        assert!(matches!(
            parse_transfer_head(&t),
            Err(FrameError::State { .. })
        ));
        assert_eq!(
            parse_report(&report_frame(-1)),
            Err(FrameError::NegativeOffset(-1))
        );
        let mut r = report_frame(5);
        r[3] = 1;
        assert!(parse_report(&r).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Arbitrary bytes, and valid frames with arbitrary fields, never panic the parsers.
        #[test]
        fn fuzz_entry_survives_random_bytes(
            data in proptest::collection::vec(any::<u8>(), 0..200),
            offset in any::<i64>(),
            epoch in any::<i32>(),
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            fuzz_ha_frames(&data);
            let ep = EpochEntry { epoch, start_offset: offset };
            let mut stream = transfer_frame(offset, ep, offset, &body);
            stream.extend_from_slice(&data);
            fuzz_ha_frames(&stream);
            fuzz_ha_frames(&master_handshake_frame(&[ep], offset, epoch));
            fuzz_ha_frames(&report_frame(offset));
        }
    }
}
