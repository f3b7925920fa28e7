//! Broker replicas in controller mode (issue 21 item 1, `--replicas`): three replicas of the
//! broker set [`SET`], each a real `rocketraft_broker::store::MessageStore` (CommitLog files in
//! a temporary directory, 64 KiB segments, SYNC_FLUSH, the store's `blocking_io` mode) with a
//! real `rocketraft_broker::ha::HaState`. Slaves follow their master with the real
//! `ha::follow_stream` against the real `ha::master_connection`, over simulated connections
//! ([`crate::stream`]). Roles come from the simulated controller quorum: each replica reads
//! `GET_REPLICA_INFO` (a linearizable read) and applies the answer as
//! `ReplicaManager::apply` does ([`Replicas::learn`]); a master asks the controllers to change
//! its SyncStateSet from `HaState::desired_sync_state_set`. A producer puts messages on a
//! replica that believes it is master and waits for the acks of the whole SyncStateSet
//! (`HaState::wait_for_acks`, `all_ack_in_sync_state_set`), as the broker's send path does.
//!
//! Crash models: `kill -9` (`MessageStore::crash_for_test`: the page cache survives), and
//! **power loss** ([`Replicas::power_loss`]): the disk model freezes (syncs made while the
//! process stops do not count), the process stops, then its files keep only what the store
//! synced, and past it what [`crate::disk`] draws per 4 KiB page (kept, lost, torn), with
//! unsynced lengths and directory entries perhaps undone, before the real recovery runs at the
//! next start. Either one replica at a time, or with
//! `SimOptions::power_loss_all` every running replica at once.
//!
//! Invariants, checked every sample ([`Replicas::sample`]):
//! - `[message-lost]`: every acknowledged message (its CommitLog offset and record bytes) is
//!   on every member of the SyncStateSet it was acknowledged under and on every later master;
//! - `[confirm-back]`: a replica's confirm offset never moves back within one master epoch
//!   (one process life);
//! - `[broker-two-masters]`: at most one replica is master, and at most one acknowledges, per
//!   master epoch (fires only if the controllers give one epoch to two brokers);
//! - `[lease-overlap]`: at most one replica is master with a valid lease (writable) at any
//!   sample, whatever the epochs (docs/safety.md Claim 1). Rarely exercised: a different replica
//!   becomes master almost only after the old one crashed (see sim/README.md);
//! - `[confirmed-lost]`: the bytes below every replica's confirm offset are one prefix of the
//!   log (the longest seen so far); a master with a valid lease holds all of it, and a master
//!   whose lease ran out the part written in epochs up to its own.
//!
//! A master's lease runs from the send time of the read that renewed it (as the broker renews
//! from the send time of the confirmed heartbeat), on the replica's own lease clock
//! ([`crate::lease_clock`], through the `HaState` seam `ha::LeaseClock`): each runs at a rate
//! within the documented bound and the nemesis steps one forward now and then.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use rocketraft_broker::config::BrokerConfig;
use rocketraft_broker::controller_link::BrokerIdentity;
use rocketraft_broker::ha::{self, AckPolicy, HaState, HaTls, Role};
use rocketraft_broker::replica::{ReplicaManager, ReplicaParts};
use rocketraft_broker::store::durability::{observe, Observing};
use rocketraft_broker::store::{BrokerMessage, FlushDiskType, MessageStore, StoreConfig};
use rocketraft_common::message::Message;
use rocketraft_controller::client::ControllerClient;
use rocketraft_controller::handler::GetReplicaInfoResponse;
use rocketraft_remoting::RemotingClient;
use tokio::task::JoinHandle;

use crate::bug::Bug;
use crate::check::Violation;
use crate::disk::{file_type, DiskModel, Loss};
use crate::lease_clock::{LeaseClocks, RATE_BOUND_PPM};
use crate::net::{Endpoint, BROKER_BASE};
use crate::rng::SimRng;
use crate::stream::{Conn, Wire};
use crate::world::World;

/// The broker set whose replicas run (the first of the simulated sets: its heartbeats to the
/// controllers are the replicas' own).
pub const SET: &str = "broker-a";
/// Replicas, ids `1..=REPLICAS`.
pub const REPLICAS: i64 = 3;
/// The role lease a confirmed read buys a master (3/4 of the simulated brokers' heartbeat
/// timeout, as `ReplicaManager::lease_for`).
const LEASE: Duration = Duration::from_millis(120);
/// A slave not caught up for this long leaves the SyncStateSet (`haMaxTimeSlaveNotCatchup`,
/// at the simulation's time scale).
pub const MAX_NOT_CAUGHT_UP: Duration = Duration::from_millis(200);
const SEGMENT: u64 = 64 * 1024;
/// The lease clocks' rate under the `slow-lease-clock` bug: a fifth of the simulated time's
/// (far outside [`RATE_BOUND_PPM`]): a lease of 120 ms lasts 600 ms.
const SLOW_LEASE_CLOCK_PPM: u64 = 200_000;
const TOPIC: &str = "SimTopic";

/// The endpoint of replica `id` (the simulated broker `SET`/`id`).
pub fn endpoint(id: i64) -> Endpoint {
    BROKER_BASE + id as Endpoint
}

fn name(id: i64) -> String {
    format!("a{id}")
}

/// One running process of a replica.
struct Process {
    store: Arc<MessageStore>,
    ha: Arc<HaState>,
    incarnation: u64,
    follower: Option<JoinHandle<()>>,
    /// Master-side connection tasks serving slaves.
    serving: Vec<JoinHandle<()>>,
    /// (master epoch, confirm offset) at the last sample.
    confirm_seen: Option<(i32, i64)>,
    /// With the controller link: the broker's ReplicaManager once registered, its start task
    /// and its loops.
    manager: Option<Arc<ReplicaManager>>,
    link: Vec<JoinHandle<()>>,
    /// With the controller link: (role, master epoch, master) at the last sample, for the trace.
    role_seen: Option<(Role, i32, Option<i64>, bool)>,
}

impl Process {
    fn stop_tasks(&mut self) {
        for t in self.link.drain(..) {
            t.abort();
        }
        if let Some(m) = self.manager.take() {
            m.stop();
        }
        if let Some(f) = self.follower.take() {
            f.abort();
        }
        for t in self.serving.drain(..) {
            t.abort();
        }
    }
}

struct Replica {
    dir: PathBuf,
    proc: Option<Process>,
    incarnations: u64,
}

/// An acknowledged message.
#[derive(Debug, Clone)]
struct AckedMsg {
    n: u64,
    offset: i64,
    record: Bytes,
    epoch: i32,
    master: i64,
    /// The SyncStateSet (with any pending proposal, and the master) it was acknowledged under.
    members: BTreeSet<i64>,
}

/// The replicas of one run.
pub struct Replicas {
    replicas: Mutex<BTreeMap<i64, Replica>>,
    conns: Mutex<Vec<Conn>>,
    /// The simulated connections (its delivery task runs from [`Replicas::wire`]).
    wire: Wire,
    rng: Mutex<SimRng>,
    acked: Mutex<Vec<AckedMsg>>,
    /// Master epoch -> the replica that acknowledged under it.
    ackers: Mutex<BTreeMap<i32, i64>>,
    sent: Mutex<u64>,
    /// `[confirmed-lost]`: the longest CommitLog prefix any replica has had below its confirm
    /// offset at a sample, and who first confirmed its end.
    confirmed: Mutex<Confirmed>,
    /// The draws the replicas' own faults take (power loss or kill, lease clock steps, what a
    /// power loss keeps): a stream of its own, so the nemesis draws as it did without them.
    side: Mutex<SimRng>,
    /// Each replica's lease clock.
    clocks: LeaseClocks,
    /// Each replica's disk: what its store made durable.
    disks: BTreeMap<i64, Arc<DiskModel>>,
    /// The disks' registrations with the store's durability reports.
    _observing: Vec<Observing>,
    /// SYNC_FLUSH, or ASYNC_FLUSH with `SimOptions::async_flush`.
    flush: FlushDiskType,
}

/// The confirmed CommitLog prefix, `[0, bytes.len())`.
#[derive(Default)]
struct Confirmed {
    bytes: Vec<u8>,
    /// (replica, its master epoch, simulated ms) that confirmed the current end.
    by: Option<(i64, i32, u128)>,
    /// Per master epoch, how far the prefix was confirmed with its end written in that epoch
    /// (the epoch entry whose start offset covers it): a master of epoch `E` whose lease ran
    /// out must hold the prefix up to the longest of epochs `<= E`. (A deposed master that has
    /// not heard of the next epoch, cut from the controllers, holds no lease and is not a later
    /// master: it cannot hold what the next epoch wrote.) A master with a valid lease must
    /// hold all of it.
    by_epoch: BTreeMap<i32, i64>,
}

/// Replica `store`'s CommitLog bytes `[from, to)`, `None` if it does not hold them all.
fn log_bytes(store: &MessageStore, from: i64, to: i64) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity((to - from).max(0) as usize);
    let mut at = from;
    while at < to {
        let chunk = store.read_commit_log(at, (to - at) as usize)?;
        if chunk.is_empty() {
            return None;
        }
        at += chunk.len() as i64;
        out.extend_from_slice(&chunk);
    }
    Some(out)
}

/// Which replica, process life and state a producer talks to.
type Target = (i64, u64, Arc<MessageStore>, Arc<HaState>);

impl Replicas {
    pub fn new(rng: SimRng, dir: PathBuf, bug: Option<Bug>, async_flush: bool) -> Replicas {
        // Derived without drawing from `rng`: the replicas' other draws stay as they were.
        let mut side = SimRng::new(rng.clone().next_u64() ^ 0x51de_5eed_c10c_d15c);
        let rates = (1..=REPLICAS)
            .map(|id| {
                let rate = if bug == Some(Bug::SlowLeaseClock) {
                    SLOW_LEASE_CLOCK_PPM
                } else {
                    1_000_000 - RATE_BOUND_PPM + side.range(0, 2 * RATE_BOUND_PPM)
                };
                (id, rate)
            })
            .collect();
        let mut disks = BTreeMap::new();
        let mut observing = Vec::new();
        for id in 1..=REPLICAS {
            let disk = Arc::new(DiskModel::default());
            let root = dir.join(format!("replica-{id}"));
            // Nothing there yet (a fresh temporary directory): the model starts from an empty
            // disk, and a baseline of a directory that does not exist reads nothing, so it
            // cannot fail.
            let _empty = disk.baseline(&root);
            observing.push(observe(root, disk.clone()));
            disks.insert(id, disk);
        }
        let replicas = (1..=REPLICAS)
            .map(|id| {
                (
                    id,
                    Replica {
                        dir: dir.join(format!("replica-{id}")),
                        proc: None,
                        incarnations: 0,
                    },
                )
            })
            .collect();
        Replicas {
            replicas: Mutex::new(replicas),
            conns: Mutex::new(Vec::new()),
            wire: Wire::new(),
            rng: Mutex::new(rng),
            acked: Mutex::new(Vec::new()),
            ackers: Mutex::new(BTreeMap::new()),
            sent: Mutex::new(0),
            confirmed: Mutex::new(Confirmed::default()),
            side: Mutex::new(side),
            clocks: LeaseClocks::new(rates),
            disks,
            _observing: observing,
            flush: if async_flush {
                FlushDiskType::AsyncFlush
            } else {
                FlushDiskType::SyncFlush
            },
        }
    }

    /// Replica `id`'s lease clock now (what its `HaState` reads).
    pub fn lease_now(&self, id: i64) -> tokio::time::Instant {
        self.clocks.now(id)
    }

    /// One nemesis step in ten: the replica that is master now, to be cut from the controllers
    /// (a failover while the old master still runs: what `[lease-overlap]` guards).
    pub(crate) fn isolation_fault(&self) -> Option<i64> {
        if !self.side.lock().chance(100) {
            return None;
        }
        (1..=REPLICAS).find(|id| self.ha(*id).is_some_and(|ha| ha.role() == Role::Master))
    }

    /// Whether the next crash of a running replica is a power loss (one in two).
    pub(crate) fn draw_power_loss(&self) -> bool {
        self.side.lock().chance(500)
    }

    /// Sometimes (one time in two) steps a replica's lease clock forward by 5-200 ms, the
    /// master's half the time: a paused or stalled process. Returns whether it did.
    pub(crate) fn lease_clock_fault(&self, w: &Arc<World>) -> bool {
        let master =
            (1..=REPLICAS).find(|id| self.ha(*id).is_some_and(|ha| ha.role() == Role::Master));
        let (id, by) = {
            let mut side = self.side.lock();
            if !side.chance(500) {
                return false;
            }
            let id = match master {
                Some(m) if side.chance(500) => m,
                _ => side.range(1, REPLICAS as u64) as i64,
            };
            (id, Duration::from_millis(side.range(5, 200)))
        };
        let total = self.clocks.step(id, by);
        w.log(format!(
            "{} lease clock step +{} ms (ahead {} ms in all, rate {} ppm)",
            name(id),
            by.as_millis(),
            total.as_millis(),
            self.clocks.rate_ppm(id)
        ));
        true
    }

    /// Replicas `ids` lose power at once: every one's disk stops taking syncs first (what a
    /// store syncs while it stops is not durable), then each process stops, then its files keep
    /// what was synced and past it what the disk model draws (see [`crate::disk`]). Each
    /// restarts later through the real recovery, as after a kill. Returns the losses, per file
    /// type and kind (`commitlog lost`, ...), for the run's counts.
    pub(crate) fn power_loss(&self, w: &Arc<World>, ids: &[i64]) -> Vec<String> {
        let ids: Vec<i64> = ids.iter().copied().filter(|id| self.is_up(*id)).collect();
        for id in &ids {
            if let Some(disk) = self.disks.get(id) {
                disk.freeze();
            }
        }
        let mut counted = Vec::new();
        for id in ids {
            self.crash(w, id);
            let Some(disk) = self.disks.get(&id) else {
                continue;
            };
            let late = disk.take_late();
            if !late.is_empty() {
                w.fail(
                    Violation::Harness,
                    format!(
                        "{} synced after its power went (store I/O beside the simulation's thread): {}",
                        name(id),
                        late.join("; ")
                    ),
                );
            }
            let dir = match self.replicas.lock().get(&id) {
                Some(r) => r.dir.clone(),
                None => continue,
            };
            let seed = self.side.lock().next_u64();
            match disk.power_loss(&dir, seed) {
                Ok(losses) => {
                    // Every file here is the seed's: the store prepares segments on the
                    // writer's thread (`blocking_io`), so no `.tmp` of a creation in progress.
                    let shown: Vec<(&PathBuf, &Loss)> =
                        losses.iter().map(|(p, l)| (p, l)).collect();
                    counted.extend(
                        shown
                            .iter()
                            .map(|(p, l)| format!("{} {}", file_type(p), l.kind())),
                    );
                    let lines: Vec<String> = shown
                        .iter()
                        .map(|(p, l)| format!("{} {l:?}", p.display()))
                        .collect();
                    w.log(format!(
                        "{} power loss: {}",
                        name(id),
                        if lines.is_empty() {
                            "everything was synced".to_string()
                        } else {
                            lines.join("; ")
                        }
                    ));
                }
                Err(e) => w.fail(
                    Violation::Harness,
                    format!("{} power loss could not rewrite its files: {e}", name(id)),
                ),
            }
        }
        counted
    }

    fn config(&self, dir: &std::path::Path) -> StoreConfig {
        StoreConfig {
            commitlog_segment_size: SEGMENT,
            flush_disk_type: self.flush,
            pretouch: false,
            message_index_enable: false,
            // The flusher, the checkpoint and the cleaner run on wall-clock schedules of their
            // own threads: none of them may act within a run (a checkpoint only at open and by
            // a truncation, both on the simulation's thread).
            flush_interval_ms: 3_600_000,
            checkpoint_interval_ms: 3_600_000,
            clean_resource_interval_ms: 3_600_000,
            // A SYNC_FLUSH put waits for the flusher at most this long, measured on the real
            // clock (`store/flush.rs`): a slow fsync on a busy machine must not time a put out
            // and change a seed's trace.
            sync_flush_timeout_ms: 3_600_000,
            blocking_io: true,
            ..StoreConfig::new(dir)
        }
    }

    /// The wire whose delivery task the run spawns.
    pub fn wire(&self) -> Wire {
        self.wire.clone()
    }

    pub fn is_up(&self, id: i64) -> bool {
        self.replicas
            .lock()
            .get(&id)
            .is_some_and(|r| r.proc.is_some())
    }

    /// Replica `id`'s state, if it runs.
    pub fn ha(&self, id: i64) -> Option<Arc<HaState>> {
        self.replicas
            .lock()
            .get(&id)
            .and_then(|r| r.proc.as_ref().map(|p| p.ha.clone()))
    }

    /// The replica's last epoch and log end, for its heartbeats (`None`: it is down).
    pub fn live_info(&self, id: i64) -> Option<(i32, i64)> {
        let ha = self.ha(id)?;
        let epoch = ha.store.last_epoch().map_or(0, |e| e.epoch);
        Some((epoch, ha.store.max_phy_offset()))
    }

    /// Starts replica `id`'s process on its directory (recovering what it holds).
    pub(crate) fn start(&self, w: &Arc<World>, id: i64) {
        let mut g = self.replicas.lock();
        let Some(r) = g.get_mut(&id) else {
            return;
        };
        if r.proc.is_some() {
            return;
        }
        match MessageStore::open(self.config(&r.dir)) {
            Ok(store) => {
                r.incarnations += 1;
                let ha = HaState::with_clock(
                    store.clone(),
                    None,
                    HaTls::default(),
                    self.clocks.handle(id),
                );
                let line = format!(
                    "{} up (log {}..{}, epochs {:?}, confirm {})",
                    name(id),
                    store.min_phy_offset(),
                    store.max_phy_offset(),
                    store
                        .epoch_entries()
                        .iter()
                        .map(|e| (e.epoch, e.start_offset))
                        .collect::<Vec<_>>(),
                    store.confirm_offset()
                );
                let link = if w.opts.controller_link {
                    vec![self.start_manager(w, id, r.incarnations, &store, &ha)]
                } else {
                    Vec::new()
                };
                r.proc = Some(Process {
                    store,
                    ha,
                    incarnation: r.incarnations,
                    follower: None,
                    serving: Vec::new(),
                    confirm_seen: None,
                    manager: None,
                    link,
                    role_seen: None,
                });
                drop(g);
                w.brokers_down.lock().remove(&endpoint(id));
                w.log(line);
            }
            Err(e) => {
                drop(g);
                w.fail(
                    Violation::Harness,
                    format!("{} does not open its store: {e}", name(id)),
                );
            }
        }
    }

    /// With the controller link: starts replica `id`'s `ReplicaManager` (process life
    /// `incarnation`): APPLY_BROKER_ID through the real controller client (the identity file's
    /// step; its check code fixed, as the simulation's is), then `ReplicaManager::start_with`
    /// (a heartbeat, CONTROLLER_REGISTER_BROKER, an election if the set has no master, the role
    /// applied) and its loops; retried every 50 ms while it fails.
    fn start_manager(
        &self,
        w: &Arc<World>,
        id: i64,
        incarnation: u64,
        store: &Arc<MessageStore>,
        ha: &Arc<HaState>,
    ) -> JoinHandle<()> {
        let (w, store, ha) = (w.clone(), store.clone(), ha.clone());
        let rng = self.rng.lock().fork();
        let controllers: Vec<String> = (1..=w.opts.nodes)
            .map(crate::link::controller_addr)
            .collect();
        let config = BrokerConfig {
            cluster_name: "sim".to_string(),
            broker_name: SET.to_string(),
            namesrv_addr: String::new(),
            controller_addr: controllers.join(";"),
            controller_heartbeat_interval_ms: 20,
            controller_heartbeat_timeout_ms: crate::link::CONTROLLER_TIMEOUT_MS,
            sync_controller_metadata_period_ms: 40,
            check_sync_state_set_period_ms: 20,
            ha_max_time_slave_not_catchup_ms: MAX_NOT_CAUGHT_UP.as_millis() as u64,
            min_in_sync_replicas: 1,
            all_ack_in_sync_state_set: true,
            ..BrokerConfig::default()
        };
        tokio::spawn(async move {
            let transport = Arc::new(crate::link::SimTransport::new(&w, endpoint(id)));
            let client = ControllerClient::with_transport(transport, Duration::from_millis(150));
            let addr = format!("{SET}-{id}:10911");
            let identity = BrokerIdentity {
                cluster_name: "sim".to_string(),
                broker_name: SET.to_string(),
                broker_id: id,
                register_check_code: format!("{addr};0"),
            };
            let peers = Arc::new(crate::link::SimPeers {
                world: Arc::downgrade(&w),
                id,
                incarnation,
                rng: Mutex::new(rng),
            });
            loop {
                let mut applied = false;
                for c in &controllers {
                    match client
                        .apply_broker_id(c, "sim", SET, id, &identity.register_check_code)
                        .await
                    {
                        Ok(()) => {
                            applied = true;
                            break;
                        }
                        Err(e)
                            if e.code().is_some_and(|c| {
                                c != rocketraft_remoting::response_code::SYSTEM_BUSY
                            }) =>
                        {
                            w.log(format!("{} apply refused: {e}", name(id)));
                            break;
                        }
                        Err(_) => {}
                    }
                }
                if applied {
                    let parts = ReplicaParts {
                        config: config.clone(),
                        store: store.clone(),
                        ha: ha.clone(),
                        identity: identity.clone(),
                        broker_addr: addr.clone(),
                        ha_addr: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
                        register_trigger: Arc::new(tokio::sync::Notify::new()),
                        link: rocketraft_broker::controller_link::ControllerLink::new(
                            &config.controller_addr,
                            client.clone(),
                        ),
                        remoting: RemotingClient::new(config.internal_client_config()),
                        peers: peers.clone(),
                    };
                    match ReplicaManager::start_with(parts).await {
                        Ok(manager) => {
                            let loops = manager.spawn_loops();
                            let Some(replicas) = &w.replicas else { return };
                            let mut g = replicas.replicas.lock();
                            match g
                                .get_mut(&id)
                                .and_then(|r| r.proc.as_mut())
                                .filter(|p| p.incarnation == incarnation)
                            {
                                Some(p) => {
                                    p.manager = Some(manager);
                                    p.link.extend(loops);
                                }
                                None => {
                                    manager.stop();
                                    for t in loops {
                                        t.abort();
                                    }
                                }
                            }
                            drop(g);
                            w.log(format!("{} registered (controller link)", name(id)));
                            return;
                        }
                        Err(e) => w.log(format!("{} did not register: {e}", name(id))),
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    }

    /// Replica `id`'s ReplicaManager, if it runs and registered (controller link).
    pub(crate) fn manager(&self, id: i64) -> Option<Arc<ReplicaManager>> {
        self.replicas
            .lock()
            .get(&id)
            .and_then(|r| r.proc.as_ref().and_then(|p| p.manager.clone()))
    }

    /// Kills replica `id`'s process (`kill -9`: its files keep what it wrote).
    pub(crate) fn crash(&self, w: &Arc<World>, id: i64) {
        let proc = self
            .replicas
            .lock()
            .get_mut(&id)
            .and_then(|r| r.proc.take());
        let Some(mut proc) = proc else {
            return;
        };
        proc.stop_tasks();
        self.kill_conns(|c| c.a == endpoint(id) || c.b == endpoint(id));
        let (role, epoch, end) = (
            proc.ha.role(),
            proc.ha.master_epoch(),
            proc.store.max_phy_offset(),
        );
        proc.store.crash_for_test();
        w.brokers_down.lock().insert(endpoint(id));
        w.log(format!(
            "{} crash ({role:?} of epoch {epoch}, log end {end})",
            name(id)
        ));
    }

    /// Stops every replica at the end of a run.
    pub fn stop_all(&self) {
        let procs: Vec<Process> = self
            .replicas
            .lock()
            .values_mut()
            .filter_map(|r| r.proc.take())
            .collect();
        self.kill_conns(|_| true);
        for mut p in procs {
            p.stop_tasks();
            p.store.crash_for_test();
        }
    }

    fn kill_conns(&self, which: impl Fn(&Conn) -> bool) {
        let mut conns = self.conns.lock();
        conns.retain(|c| !c.is_dead());
        for c in conns.iter().filter(|c| which(c)) {
            c.kill();
        }
    }

    /// The network changed: connections over a link that is now cut reset at once.
    pub(crate) fn network_changed(&self, w: &Arc<World>) {
        self.kill_conns(|c| !w.net.reachable(c.a, c.b) || !w.net.reachable(c.b, c.a));
    }

    /// Replica `id` learned the controller's view of its set (`ReplicaManager::apply`).
    ///
    /// `sent` is when the read that answered was sent: a master's lease runs `LEASE` from it,
    /// as the broker renews its lease from the send time of the heartbeat a controller leader
    /// confirmed (`renew_lease(sent + lease)` in the broker's `heartbeat_to`), never from when
    /// the answer arrived.
    pub(crate) fn learn(
        &self,
        w: &Arc<World>,
        id: i64,
        info: &GetReplicaInfoResponse,
        sent: tokio::time::Instant,
    ) {
        let Some(master) = info.master_broker_id else {
            return;
        };
        let mut g = self.replicas.lock();
        let Some(proc) = g.get_mut(&id).and_then(|r| r.proc.as_mut()) else {
            return;
        };
        let ha = proc.ha.clone();
        let current = ha.master_epoch();
        if info.master_epoch < current {
            return;
        }
        let same = info.master_epoch == current;
        let role = ha.role();
        let sss = info.sync_state_set.clone();
        if master == id {
            if role == Role::Master && same {
                ha.update_sync_state_set(info.sync_state_set_epoch, sss);
                ha.renew_lease(sent + LEASE);
                return;
            }
            // become_master: the follower stops first (no frame of the old master after this).
            proc.stop_tasks();
            let end = proc.store.max_phy_offset();
            match proc.store.last_epoch() {
                Some(last) if last.epoch == info.master_epoch => {}
                Some(last) if last.epoch > info.master_epoch => {
                    drop(g);
                    w.log(format!(
                        "{} refuses to be master of epoch {}: its log holds epoch {}",
                        name(id),
                        info.master_epoch,
                        last.epoch
                    ));
                    return;
                }
                _ => {
                    if let Err(e) = proc.store.append_epoch(info.master_epoch, end) {
                        drop(g);
                        w.fail(
                            Violation::Harness,
                            format!("{} cannot append its epoch: {e}", name(id)),
                        );
                        return;
                    }
                }
            }
            ha.set_master(
                id,
                name(id),
                info.master_epoch,
                info.sync_state_set_epoch,
                sss.clone(),
            );
            ha.renew_lease(sent + LEASE);
            // Its confirm offset against the others' (a master back in its epoch starts from
            // its checkpoint's, below what its slaves confirmed: tests/replicas.rs).
            let confirm = proc.store.confirm_offset();
            let slaves_max = g
                .iter()
                .filter(|(other, _)| **other != id)
                .filter_map(|(_, r)| r.proc.as_ref().map(|p| p.store.confirm_offset()))
                .max()
                .unwrap_or(0);
            drop(g);
            self.kill_conns(|c| c.a == endpoint(id) || c.b == endpoint(id));
            w.log(format!(
                "{} master of epoch {} from offset {end}, set {sss:?} sss-epoch {}, confirm {confirm}, others' highest confirm {slaves_max}",
                name(id),
                info.master_epoch,
                info.sync_state_set_epoch
            ));
        } else {
            if role == Role::Slave && same {
                ha.update_sync_state_set(info.sync_state_set_epoch, sss);
                return;
            }
            proc.stop_tasks();
            ha.set_slave(
                master,
                name(master),
                info.master_epoch,
                info.sync_state_set_epoch,
                sss,
            );
            let incarnation = proc.incarnation;
            let rng = self.rng.lock().fork();
            let w2 = w.clone();
            proc.follower = Some(tokio::spawn(async move {
                follow_loop(w2, id, incarnation, master, rng).await;
            }));
            drop(g);
            self.kill_conns(|c| c.a == endpoint(id) || c.b == endpoint(id));
            w.log(format!(
                "{} slave of {} in epoch {}",
                name(id),
                name(master),
                info.master_epoch
            ));
        }
    }

    /// A replica that believes it is master, drawn by the producer.
    fn pick_master(&self, rng: &mut SimRng) -> Option<Target> {
        let g = self.replicas.lock();
        let masters: Vec<Target> = g
            .iter()
            .filter_map(|(id, r)| r.proc.as_ref().map(|p| (*id, p)))
            .filter(|(_, p)| p.ha.role() == Role::Master)
            .map(|(id, p)| (id, p.incarnation, p.store.clone(), p.ha.clone()))
            .collect();
        if masters.is_empty() {
            return None;
        }
        let i = rng.pick(masters.len());
        masters.into_iter().nth(i)
    }

    /// Which process life of replica `id` runs now, if any.
    pub fn incarnation(&self, id: i64) -> Option<u64> {
        self.replicas
            .lock()
            .get(&id)
            .and_then(|r| r.proc.as_ref().map(|p| p.incarnation))
    }

    fn still_running(&self, id: i64, incarnation: u64) -> bool {
        self.replicas
            .lock()
            .get(&id)
            .and_then(|r| r.proc.as_ref())
            .is_some_and(|p| p.incarnation == incarnation)
    }

    /// Sends one message as the broker's send path does: the fencing checks, the put, then the
    /// acks of the whole SyncStateSet. An acknowledged message is recorded for the checks.
    pub(crate) async fn send_one(&self, w: &Arc<World>, rng: &mut SimRng) {
        let Some((id, incarnation, store, ha)) = self.pick_master(rng) else {
            return;
        };
        let policy = AckPolicy {
            min_in_sync_replicas: 1,
            all_ack_in_sync_state_set: true,
            in_sync_replicas: 1,
            timeout: Duration::from_millis(100),
        };
        if ha.check_writable().is_err() || ha.check_in_sync(&policy).is_err() {
            return;
        }
        let n = {
            let mut s = self.sent.lock();
            *s += 1;
            *s
        };
        let body = format!("message {n} {}", "x".repeat(rng.range(10, 300) as usize));
        let put = store
            .put_message(BrokerMessage::new(
                Message::new(TOPIC, body.into_bytes()),
                0,
            ))
            .await;
        let r = match put {
            Ok(r) => r,
            Err(e) => {
                w.log(format!(
                    "send {n} to {} refused by its store: {e}",
                    name(id)
                ));
                return;
            }
        };
        ha.on_local_append();
        let end = r.physical_offset + r.wrote_bytes as i64;
        if w.opts.bug != Some(Bug::AckBeforeReplicas) {
            if let Err(e) = ha.wait_for_acks(end, &policy).await {
                w.log(format!(
                    "send {n} to {} at {} not acknowledged: {e}",
                    name(id),
                    r.physical_offset
                ));
                return;
            }
        }
        // The answer reaches the producer only from a process still alive.
        if !self.still_running(id, incarnation) {
            return;
        }
        let snap = ha.snapshot();
        let mut members = snap.sync_state_set.clone();
        members.extend(snap.pending_sync_state_set.iter().flatten().copied());
        members.insert(id);
        let Some(record) = store.read_record(r.physical_offset) else {
            w.fail(
                Violation::Harness,
                format!(
                    "{} cannot read back message {n} at {}",
                    name(id),
                    r.physical_offset
                ),
            );
            return;
        };
        w.stats.lock().acked_messages += 1;
        let epoch = snap.master_epoch;
        let other = *self.ackers.lock().entry(epoch).or_insert(id);
        if other != id {
            w.fail(
                Violation::BrokerTwoMasters,
                format!(
                    "{} and {} both acknowledged messages as master of epoch {epoch}",
                    name(other),
                    name(id)
                ),
            );
        }
        self.acked.lock().push(AckedMsg {
            n,
            offset: r.physical_offset,
            record,
            epoch,
            master: id,
            members,
        });
    }

    /// Checks the invariants on every running replica.
    pub(crate) fn sample(&self, w: &Arc<World>) {
        let now = w.check.lock().now_ms();
        let mut g = self.replicas.lock();
        let mut failures = Vec::new();
        let mut masters: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        let mut writable: Vec<(i64, i32)> = Vec::new();
        let acked = self.acked.lock();
        let mut roles = Vec::new();
        for (id, r) in g.iter_mut() {
            let Some(p) = r.proc.as_mut() else {
                continue;
            };
            let role = p.ha.role();
            let epoch = p.ha.master_epoch();
            if w.opts.controller_link {
                // The ReplicaManager changes roles on its own: the trace shows what each
                // sample finds.
                let leased = role == Role::Master && p.ha.lease_valid();
                let seen = (role, epoch, p.ha.snapshot().master_broker_id, leased);
                if p.role_seen != Some(seen) {
                    p.role_seen = Some(seen);
                    roles.push(format!(
                        "{} is {role:?} of epoch {epoch}{} (master {:?}, set {:?} sss-epoch {}, confirm {}, log end {})",
                        name(*id),
                        if leased { " with a lease" } else { "" },
                        seen.2,
                        p.ha.snapshot().sync_state_set,
                        p.ha.snapshot().sync_state_set_epoch,
                        p.store.confirm_offset(),
                        p.store.max_phy_offset()
                    ));
                }
            }
            if role == Role::Master {
                masters.entry(epoch).or_default().push(*id);
                if p.ha.lease_valid() {
                    writable.push((*id, epoch));
                }
            }
            let confirm = p.store.confirm_offset();
            let leased = role == Role::Master && p.ha.lease_valid();
            self.check_confirmed(now, *id, (role, leased), epoch, &p.store, &mut failures);
            if let Some((e, c)) = p.confirm_seen {
                if e == epoch && confirm < c {
                    failures.push((
                        Violation::ConfirmBack,
                        format!(
                            "{}'s confirm offset went back from {c} to {confirm} in epoch {epoch}",
                            name(*id)
                        ),
                    ));
                }
            }
            p.confirm_seen = Some((epoch, confirm));
            for m in acked.iter() {
                let later_master = role == Role::Master && epoch > m.epoch;
                if !m.members.contains(id) && !later_master {
                    continue;
                }
                if p.store.read_record(m.offset).as_ref() != Some(&m.record) {
                    let why = if later_master {
                        format!("{} (master of epoch {epoch})", name(*id))
                    } else {
                        format!("{} (a member when it was acknowledged)", name(*id))
                    };
                    failures.push((
                        Violation::MessageLost,
                        format!(
                            "message {} acknowledged by {} in epoch {} at {} under {:?} is missing on {why}; its log ends at {}",
                            m.n,
                            name(m.master),
                            m.epoch,
                            m.offset,
                            m.members,
                            p.store.max_phy_offset()
                        ),
                    ));
                }
            }
        }
        drop(acked);
        drop(g);
        for line in roles {
            w.log(line);
        }
        for (epoch, ids) in masters {
            if ids.len() > 1 {
                failures.push((
                    Violation::BrokerTwoMasters,
                    format!("replicas {ids:?} are all master of epoch {epoch}"),
                ));
            }
        }
        if writable.len() > 1 {
            let who: Vec<String> = writable
                .iter()
                .map(|(id, e)| format!("{} (epoch {e})", name(*id)))
                .collect();
            failures.push((
                Violation::LeaseOverlap,
                format!(
                    "{} are all master with a valid lease at once",
                    who.join(" and ")
                ),
            ));
        }
        for (kind, line) in failures {
            w.fail(kind, line);
        }
    }

    /// `[confirmed-lost]` for one replica at a sample: the bytes below its confirm offset are
    /// the confirmed prefix's (a longer one extends it), and a master holds the whole prefix.
    fn check_confirmed(
        &self,
        now: u128,
        id: i64,
        (role, leased): (Role, bool),
        epoch: i32,
        store: &MessageStore,
        failures: &mut Vec<(Violation, String)>,
    ) {
        let mut conf = self.confirmed.lock();
        let known = conf.bytes.len() as i64;
        let confirm = store.confirm_offset();
        let from = store.min_phy_offset().max(0);
        // A master with a valid lease (it may acknowledge) must hold everything confirmed; a
        // master whose lease ran out (deposed, perhaps without having heard of it) what was
        // confirmed in the epochs up to its own; any replica what it confirms itself.
        let upto = if leased {
            confirm.max(known)
        } else if role == Role::Master {
            let required = conf
                .by_epoch
                .range(..=epoch)
                .map(|(_, l)| *l)
                .max()
                .unwrap_or(0);
            confirm.max(required)
        } else {
            confirm
        };
        if upto <= from {
            return;
        }
        let by = conf.by.map_or_else(String::new, |(b, e, t)| {
            format!(
                " (up to {known} first confirmed by {} in epoch {e} at {t} ms)",
                name(b)
            )
        });
        let Some(bytes) = log_bytes(store, from, upto) else {
            failures.push((
                Violation::ConfirmedLost,
                format!(
                    "{} ({role:?} of epoch {epoch}, confirm {confirm}) does not hold [{from}, {upto}) of the confirmed log{by}; its log ends at {}",
                    name(id),
                    store.max_phy_offset()
                ),
            ));
            return;
        };
        let common = upto.min(known);
        if common > from {
            let mine = &bytes[..(common - from) as usize];
            let theirs = &conf.bytes[from as usize..common as usize];
            if mine != theirs {
                let at = from
                    + mine
                        .iter()
                        .zip(theirs)
                        .position(|(a, b)| a != b)
                        .unwrap_or(0) as i64;
                failures.push((
                    Violation::ConfirmedLost,
                    format!(
                        "{} ({role:?} of epoch {epoch}, confirm {confirm}) holds other bytes at {at} than were confirmed{by}",
                        name(id)
                    ),
                ));
                return;
            }
        }
        if confirm > known && from <= known {
            let tail = &bytes[(known - from) as usize..(confirm - from) as usize];
            conf.bytes.extend_from_slice(tail);
            conf.by = Some((id, epoch, now));
            // Keyed by the epoch the confirmed end's last byte was written in (the epoch entry
            // whose start covers it), not by the confirming replica's epoch.
            let written_in = store
                .epoch_entries()
                .iter()
                .filter(|e| e.start_offset < confirm)
                .map(|e| e.epoch)
                .max()
                .unwrap_or(epoch);
            let e = conf.by_epoch.entry(written_in).or_insert(0);
            *e = (*e).max(confirm);
        }
    }

    /// A summary line for the end of a run.
    pub fn summary(&self) -> String {
        let g = self.replicas.lock();
        let ends: Vec<String> = g
            .iter()
            .map(|(id, r)| match &r.proc {
                Some(p) => format!(
                    "{} {:?} epoch {} end {} confirm {}",
                    name(*id),
                    p.ha.role(),
                    p.ha.master_epoch(),
                    p.store.max_phy_offset(),
                    p.store.confirm_offset()
                ),
                None => format!("{} down", name(*id)),
            })
            .collect();
        format!(
            "replicas: {} messages sent, {} acknowledged; {}",
            *self.sent.lock(),
            self.acked.lock().len(),
            ends.join("; ")
        )
    }
}

/// A slave's replication loop: connects to its master over a simulated connection when both
/// run and the link is up, runs the real `follow_stream` against the real `master_connection`
/// until the session ends, and tries again after a seeded pause.
pub(crate) async fn follow_loop(
    w: Arc<World>,
    id: i64,
    incarnation: u64,
    master: i64,
    mut rng: SimRng,
) {
    let Some(replicas) = w.replicas.as_ref() else {
        return;
    };
    loop {
        tokio::time::sleep(Duration::from_millis(rng.range(2, 10))).await;
        if !replicas.still_running(id, incarnation) {
            return;
        }
        let Some(ha) = replicas.ha(id) else {
            return;
        };
        let Some(master_ha) = replicas.ha(master) else {
            continue;
        };
        let (me, them) = (endpoint(id), endpoint(master));
        if !w.net.reachable(me, them) || !w.net.reachable(them, me) {
            continue;
        }
        let (mine, theirs, conn) = replicas.wire.connect(me, them, &replicas.rng);
        replicas.conns.lock().push(conn.clone());
        let peer = name(id);
        let serving = tokio::spawn(async move {
            let _ended = ha::master_connection(theirs, &peer, master_ha).await;
        });
        {
            let mut g = replicas.replicas.lock();
            match g.get_mut(&master).and_then(|r| r.proc.as_mut()) {
                Some(p) => {
                    p.serving.retain(|t| !t.is_finished());
                    p.serving.push(serving);
                }
                None => serving.abort(),
            }
        }
        let _ended = ha::follow_stream(&ha, id, &name(master), mine).await;
        conn.kill();
    }
}
