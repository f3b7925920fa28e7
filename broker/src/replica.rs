//! Controller mode (RocketMQ 5's `ReplicasManager`): the broker's identity and role come from
//! the controller quorum.
//!
//! - **Start**: identity (assigned once, kept in the store), CONTROLLER_REGISTER_BROKER, an
//!   election if the set has no master, then the role the controller reports.
//! - **Roles** change only for a higher master epoch (a same-epoch report only updates the
//!   SyncStateSet). Becoming master appends `(epoch, log end)` to the epoch file before the
//!   first write; becoming slave starts following the master (which truncates the divergent
//!   tail first, see [`crate::ha`]).
//! - **Learning**: NOTIFY_BROKER_ROLE_CHANGED from the controller at once, and
//!   CONTROLLER_GET_REPLICA_INFO every `sync_controller_metadata_period_ms`: from the leader,
//!   and from every controller's own applied copy (`readLocal`), so a broker cut off from the
//!   leader but not from a follower still learns a new master.
//! - **Heartbeats** to every controller every `controller_heartbeat_interval_ms`, one loop per
//!   controller with its own deadline (no head-of-line blocking). A master's **role lease** is
//!   renewed, from the send time of a heartbeat, for 3/4 of the shorter of its own and the
//!   controllers' heartbeat timeout, only when the controller leader confirmed that heartbeat
//!   with a quorum. A
//!   controller leader elects a new master only after a full timeout without heartbeats and
//!   after a full timeout in office, so an old master has stopped acknowledging writes before
//!   a new one can exist.
//! - **NameServer reach**: every NameServer is probed every two heartbeat intervals
//!   ([`crate::name_server_reach`]); heartbeats report how many answered lately, and the
//!   controllers' clean election prefers the replicas clients can find.
//! - **SyncStateSet**: the master checks its slaves every `check_sync_state_set_period_ms` and
//!   asks the controller (ALTER_SYNC_STATE_SET) to add caught-up slaves and drop lagging or
//!   disconnected ones; until the controller's state is known to have moved past the epoch a
//!   change was derived from, acks count the union of every set proposed from it.
//! - **Trust**: with `cluster_secret`, every connection to a controller, a NameServer or another
//!   broker proves it (`rocketraft_remoting::trust`); a master reads the broker ids the
//!   controller knows for its set so its HA port serves only those ([`crate::ha`]).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use rocketraft_controller::client::{ControllerCallError, ControllerClient, MasterInfo};
use rocketraft_controller::heartbeat::Heartbeat;
use rocketraft_controller::BrokerLiveInfo;
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::{Refusal, RemotingClient, RemotingCommand};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::BrokerConfig;
use crate::controller_link::{BrokerIdentity, ControllerLink, LinkError};
use crate::ha::{self, HaState, Role};
use crate::name_server_reach::{NameServerReach, ProbeIdentity};
use crate::store::MessageStore;

/// How soon a master whose lease missed a renewal heartbeats the controllers again.
const LEASE_RETRY: Duration = Duration::from_millis(100);

/// Unanswered heartbeats one controller may have at once (a round trip of up to this many
/// intervals still renews the lease every interval).
const HEARTBEATS_IN_FLIGHT: usize = 8;

/// How a replica reaches the other replicas of its set: a slave's replication from its master,
/// and the news of a new master to the old one. A broker uses [`RemotingPeers`]
/// (EXCHANGE_BROKER_HA_INFO, then the HA connection over TCP or TLS, and a oneway Remoting
/// request); the deterministic simulation (`rocketraft-sim`) its simulated streams, running the
/// same `ha` code over them.
pub trait ReplicaPeers: Send + Sync {
    /// Replicates from the master `master_id` at `master_addr` into `ha` (this broker, id `me`)
    /// until aborted, reconnecting as needed.
    fn follow(
        &self,
        ha: Arc<HaState>,
        me: i64,
        master_id: i64,
        master_addr: String,
    ) -> BoxFuture<'static, ()>;

    /// Delivers `request` (a NOTIFY_BROKER_ROLE_CHANGED) to the broker at `addr`, best effort.
    fn tell(&self, addr: String, request: RemotingCommand) -> BoxFuture<'static, ()>;
}

/// [`ReplicaPeers`] over Remoting and the HA port: what a broker runs.
pub struct RemotingPeers {
    remoting: RemotingClient,
    my_addr: String,
    my_ha: SocketAddr,
}

impl RemotingPeers {
    pub fn new(remoting: RemotingClient, my_addr: String, my_ha: SocketAddr) -> RemotingPeers {
        RemotingPeers {
            remoting,
            my_addr,
            my_ha,
        }
    }
}

impl ReplicaPeers for RemotingPeers {
    fn follow(
        &self,
        ha: Arc<HaState>,
        me: i64,
        _master_id: i64,
        master_addr: String,
    ) -> BoxFuture<'static, ()> {
        let remoting = self.remoting.clone();
        let my_addr = self.my_addr.clone();
        let my_ha = self.my_ha;
        Box::pin(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match exchange_ha_info(&remoting, &master_addr, &my_addr, my_ha).await {
                    Ok(ha_addr) => match ha::follow_once(&ha, me, &ha_addr).await {
                        Ok(()) => {}
                        Err(e) => {
                            tracing::warn!(master = %ha_addr, error = %e, "replication from the master interrupted; reconnecting")
                        }
                    },
                    Err(e) => {
                        tracing::warn!(master = %master_addr, error = %e, "cannot get the master's HA address")
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        })
    }

    fn tell(&self, addr: String, request: RemotingCommand) -> BoxFuture<'static, ()> {
        let remoting = self.remoting.clone();
        Box::pin(async move {
            if let Err(e) = remoting.invoke_oneway(&addr, request).await {
                tracing::debug!(%addr, error = %e, "the old master was not told of the new one");
            }
        })
    }
}

/// What [`ReplicaManager::start_with`] builds a manager from, the identity already known: the
/// deterministic simulation's way in (its store, `HaState`, controller transport and streams).
pub struct ReplicaParts {
    pub config: BrokerConfig,
    pub store: Arc<MessageStore>,
    pub ha: Arc<HaState>,
    pub identity: BrokerIdentity,
    pub broker_addr: String,
    pub ha_addr: SocketAddr,
    pub register_trigger: Arc<Notify>,
    /// The link to the controllers (`start` passes on the one it obtained the identity
    /// through, with the controller it found answering preferred).
    pub link: ControllerLink,
    /// For the NameServer probes (none without NameServers in the config).
    pub remoting: RemotingClient,
    pub peers: Arc<dyn ReplicaPeers>,
}

/// The controller-mode side of a broker.
pub struct ReplicaManager {
    config: BrokerConfig,
    store: Arc<MessageStore>,
    pub ha: Arc<HaState>,
    link: ControllerLink,
    pub identity: BrokerIdentity,
    broker_addr: String,
    ha_addr: SocketAddr,
    register_trigger: Arc<Notify>,
    /// Bumped to make every per-controller heartbeat loop send at once (a new master wants
    /// its lease before its first write).
    heartbeat_now: tokio::sync::watch::Sender<u64>,
    poll_now: Notify,
    /// The controllers' `heartbeatTimeoutMills` as they reported it (least seen), once known.
    controller_timeout_ms: Mutex<Option<u64>>,
    role_lock: tokio::sync::Mutex<()>,
    follower: Mutex<Option<JoinHandle<()>>>,
    /// NameServer probes.
    remoting: RemotingClient,
    /// Replication from the master and the news to an old master.
    peers: Arc<dyn ReplicaPeers>,
    /// Which NameServers answer (reported in heartbeats for the route-aware election).
    name_servers: NameServerReach,
    probe_identity: ProbeIdentity,
}

fn link_err(e: LinkError) -> anyhow::Error {
    anyhow::anyhow!("controller: {e}")
}

impl ReplicaManager {
    /// Obtains the identity, registers, and applies the role the controller reports. The
    /// returned manager's loops are started by [`ReplicaManager::spawn_loops`].
    pub async fn start(
        config: BrokerConfig,
        store: Arc<MessageStore>,
        ha: Arc<HaState>,
        broker_addr: String,
        ha_addr: SocketAddr,
        register_trigger: Arc<Notify>,
    ) -> anyhow::Result<Arc<ReplicaManager>> {
        let client = ControllerClient::new(
            RemotingClient::new(config.internal_client_config()),
            Duration::from_secs(5),
        );
        let link = ControllerLink::new(&config.controller_addr, client);
        let identity = link
            .obtain_identity(
                &config.store.store_root,
                &config.cluster_name,
                &config.broker_name,
                &broker_addr,
            )
            .await
            .map_err(link_err)?;
        tracing::info!(broker = %config.broker_name, id = identity.broker_id, "controller mode: identity");
        let remoting = RemotingClient::new(config.internal_client_config());
        let peers = Arc::new(RemotingPeers::new(
            remoting.clone(),
            broker_addr.clone(),
            ha_addr,
        ));
        ReplicaManager::start_with(ReplicaParts {
            config,
            store,
            ha,
            identity,
            broker_addr,
            ha_addr,
            register_trigger,
            link,
            remoting,
            peers,
        })
        .await
    }

    /// [`ReplicaManager::start`] from `parts`: registers with the controllers and applies the
    /// role they report. Loops as for `start` ([`ReplicaManager::spawn_loops`]).
    pub async fn start_with(parts: ReplicaParts) -> anyhow::Result<Arc<ReplicaManager>> {
        let ReplicaParts {
            config,
            store,
            ha,
            identity,
            broker_addr,
            ha_addr,
            register_trigger,
            link,
            remoting,
            peers,
        } = parts;
        let name_servers = NameServerReach::new(
            config.namesrv_addrs(),
            Duration::from_millis(config.controller_heartbeat_timeout_ms / 2),
        );
        let probe_identity = ProbeIdentity {
            cluster: config.cluster_name.clone(),
            broker_name: config.broker_name.clone(),
            broker_addr: broker_addr.clone(),
            broker_id: identity.broker_id,
        };
        let manager = Arc::new(ReplicaManager {
            peers,
            config,
            store,
            ha,
            link,
            identity,
            broker_addr,
            ha_addr,
            register_trigger,
            heartbeat_now: tokio::sync::watch::channel(0).0,
            poll_now: Notify::new(),
            controller_timeout_ms: Mutex::new(None),
            role_lock: tokio::sync::Mutex::new(()),
            follower: Mutex::new(None),
            remoting,
            name_servers,
            probe_identity,
        });
        manager.register().await?;
        Ok(manager)
    }

    /// Finds which NameServers answer and heartbeats once before registering, so the
    /// controller counts this broker alive (and knows whether clients can find it) in the
    /// election that registration may trigger; then registers and applies the role.
    async fn register(&self) -> anyhow::Result<()> {
        self.name_servers
            .probe_all(&self.remoting, &self.probe_identity, self.probe_timeout())
            .await;
        self.heartbeat_once().await;
        let info = self
            .link
            .register(&self.identity, &self.broker_addr)
            .await
            .map_err(link_err)?;
        self.apply(info).await;
        Ok(())
    }

    pub fn broker_id(&self) -> i64 {
        self.identity.broker_id
    }

    /// The HA address slaves connect to.
    pub fn ha_addr(&self) -> SocketAddr {
        self.ha_addr
    }

    /// How often each NameServer is probed: twice per heartbeat interval's worth of time, so
    /// a NameServer counts as reached (for half a heartbeat timeout) only while it answers.
    fn probe_every(&self) -> Duration {
        Duration::from_millis((self.config.controller_heartbeat_interval_ms * 2).max(100))
    }

    /// How long one probe may wait: a probe unanswered that long closes its connection (the
    /// Remoting client's dead-connection rule), so the next one dials afresh after a heal.
    fn probe_timeout(&self) -> Duration {
        Duration::from_millis((self.config.controller_heartbeat_timeout_ms / 3).max(1_000))
    }

    /// The heartbeat, NameServer probe, poll and SyncStateSet loops.
    pub fn spawn_loops(self: &Arc<Self>) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        // One probe loop per NameServer, so an unreachable one delays no other's answer.
        for addr in self.name_servers.addresses().to_vec() {
            let me = self.clone();
            tasks.push(tokio::spawn(async move {
                let (every, timeout) = (me.probe_every(), me.probe_timeout());
                loop {
                    let started = tokio::time::Instant::now();
                    me.name_servers
                        .probe(&me.remoting, &addr, &me.probe_identity, timeout)
                        .await;
                    tokio::time::sleep_until(started + every).await;
                }
            }));
        }
        // One heartbeat loop per controller, each with its own deadline: a slow, paused or
        // unreachable controller never delays the heartbeats (and so the lease renewals) that
        // go to the others. Within a loop heartbeats are pipelined: one leaves every interval
        // whether or not the previous one was answered (up to HEARTBEATS_IN_FLIGHT), so a
        // round trip longer than the interval (a slow network) still renews the lease every
        // interval instead of once per round trip.
        for addr in self.link.addresses().to_vec() {
            let me = self.clone();
            tasks.push(tokio::spawn(async move { me.heartbeat_loop(addr).await }));
        }
        let me = self.clone();
        tasks.push(tokio::spawn(async move {
            let every = Duration::from_millis(me.config.sync_controller_metadata_period_ms);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = me.poll_now.notified() => {}
                }
                me.poll_once().await;
            }
        }));
        // Every controller's own copy of the set too (`readLocal`), each on its own: a broker
        // cut off from the leader but not from a follower learns a new master at once.
        for addr in self.link.addresses().to_vec() {
            let me = self.clone();
            tasks.push(tokio::spawn(async move {
                let every = Duration::from_millis(me.config.sync_controller_metadata_period_ms);
                loop {
                    let started = tokio::time::Instant::now();
                    me.poll_local(&addr, every.max(Duration::from_millis(500)))
                        .await;
                    tokio::time::sleep_until(started + every).await;
                }
            }));
        }
        // A master reads which broker ids the controller knows for its set, so its HA port
        // serves no one else (at once when an unknown id asks to replicate).
        let me = self.clone();
        tasks.push(tokio::spawn(async move {
            let every = Duration::from_millis(me.config.sync_controller_metadata_period_ms);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = me.ha.replica_refresh().notified() => {}
                }
                if me.ha.role() == Role::Master {
                    me.refresh_known_replicas().await;
                }
                // At most one read per 100 ms, however many unknown ids knock.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
        let me = self.clone();
        tasks.push(tokio::spawn(async move {
            let every = Duration::from_millis(me.config.check_sync_state_set_period_ms);
            loop {
                tokio::time::sleep(every).await;
                me.ha.on_local_append();
                me.check_sync_state_set().await;
            }
        }));
        tasks
    }

    /// Heartbeats the controller at `addr` forever: one heartbeat leaves every interval (every
    /// 100 ms while the lease is at risk) whether or not the previous one was answered, up to
    /// [`HEARTBEATS_IN_FLIGHT`]. In-flight heartbeats are aborted with the loop's task.
    async fn heartbeat_loop(self: Arc<Self>, addr: String) {
        let every = Duration::from_millis(self.config.controller_heartbeat_interval_ms.max(1));
        let mut kick = self.heartbeat_now.subscribe();
        let mut in_flight = tokio::task::JoinSet::new();
        loop {
            let started = tokio::time::Instant::now();
            while in_flight.try_join_next().is_some() {}
            if in_flight.len() < HEARTBEATS_IN_FLIGHT {
                let (me, addr) = (self.clone(), addr.clone());
                in_flight.spawn(async move { me.heartbeat_to(&addr).await });
            }
            // A master whose lease missed a renewal (the controller leader died, was paused or
            // lost its quorum) asks every controller again soon, so it hears the next leader
            // within ~100 ms of its election, not one interval later.
            let next = if self.lease_at_risk(every) {
                every.min(LEASE_RETRY)
            } else {
                every
            };
            tokio::select! {
                _ = tokio::time::sleep_until(started + next) => {}
                _ = kick.changed() => {}
            }
        }
    }

    /// Stops following a master (shutdown).
    pub fn stop(&self) {
        if let Some(f) = self.follower.lock().take() {
            f.abort();
        }
    }

    fn heartbeat(&self) -> Heartbeat {
        let timeout = self.config.controller_heartbeat_timeout_ms;
        Heartbeat {
            cluster: self.config.cluster_name.clone(),
            broker_name: self.config.broker_name.clone(),
            broker_id: self.identity.broker_id,
            broker_addr: self.broker_addr.clone(),
            timeout_ms: timeout,
            info: BrokerLiveInfo {
                epoch: self.store.last_epoch().map_or(0, |e| e.epoch),
                max_offset: self.store.max_phy_offset(),
                confirm_offset: self.store.confirm_offset(),
                election_priority: 0,
                name_servers_reached: self.name_servers.reached(),
                master_link_fresh: (self.ha.role() == Role::Slave).then(|| {
                    self.ha
                        .master_link_fresh(Duration::from_millis(timeout / 2))
                }),
                // Only where every member must hold an acknowledged write: then a member the
                // controller elects in this master's place holds all of them (docs/safety.md).
                in_sync_unreachable: (self.ha.role() == Role::Master
                    && self.config.all_ack_in_sync_state_set)
                    .then(|| {
                        self.ha.in_sync_unreachable(
                            Duration::from_millis(timeout / 2),
                            self.config.min_in_sync_replicas,
                            Duration::from_millis(timeout),
                        )
                    }),
                // A transfer away from a master that counts acks is refused while it lives.
                all_ack_in_sync_state_set: Some(self.config.all_ack_in_sync_state_set),
                heard_recently: None,
            },
        }
    }

    /// Whether this broker is master and its lease was not renewed for more than one and a half
    /// heartbeat intervals (so a renewal was missed).
    fn lease_at_risk(&self, every: Duration) -> bool {
        if self.ha.role() != Role::Master {
            return false;
        }
        let full = self.lease_for(None);
        match self.ha.lease_until() {
            None => true,
            Some(until) => {
                let left = until.saturating_duration_since(self.ha.now());
                left + every + every / 2 < full
            }
        }
    }

    /// How long one heartbeat may wait for its answer: the lease it would buy (an answer after
    /// that renews nothing). Heartbeats are pipelined, so a slow answer delays no other.
    fn heartbeat_deadline(&self) -> Duration {
        self.lease_for(None).max(Duration::from_millis(200))
    }

    /// The role lease a confirmed heartbeat buys, counted from its send time: 3/4 of the
    /// shorter of this broker's heartbeat timeout and the controllers' (which is how long a
    /// controller leader waits in office before it elects; see docs/safety.md).
    fn lease_for(&self, controller_timeout_ms: Option<u64>) -> Duration {
        let mine = self.config.controller_heartbeat_timeout_ms;
        if let Some(theirs) = controller_timeout_ms {
            let mut known = self.controller_timeout_ms.lock();
            if *known != Some(theirs) {
                if theirs != mine {
                    tracing::warn!(
                        broker_timeout_ms = mine,
                        controller_timeout_ms = theirs,
                        "the controllers' heartbeat timeout differs from controller_heartbeat_timeout_ms; the role lease follows the shorter"
                    );
                }
                *known = Some(theirs);
            }
        }
        let known = *self.controller_timeout_ms.lock();
        let t = known.map_or(mine, |c| c.min(mine));
        Duration::from_millis(t * 3 / 4)
    }

    /// One heartbeat to every controller at once (before registering).
    async fn heartbeat_once(&self) {
        let hb = self.heartbeat();
        // On the lease clock the lease is judged on (`HaState::now`).
        let sent = self.ha.now();
        let outcome = self
            .link
            .heartbeat_all(&hb, self.heartbeat_deadline())
            .await;
        // Only a leader that names this broker its set's master at the epoch the heartbeat
        // carried renews the lease (`leaseConfirmed`, `service::answer_heartbeat`).
        if outcome.lease_confirmed {
            self.ha
                .renew_lease(sent + self.lease_for(outcome.controller_timeout_ms));
        }
    }

    /// One heartbeat to one controller; a confirmation renews the lease from the send time.
    async fn heartbeat_to(&self, addr: &str) {
        let hb = self.heartbeat();
        // On the lease clock the lease is judged on (`HaState::now`).
        let sent = self.ha.now();
        if let Ok(ack) = self
            .link
            .heartbeat_one(addr, &hb, self.heartbeat_deadline())
            .await
        {
            let lease = self.lease_for(ack.controller_timeout_ms);
            if ack.lease_confirmed {
                self.ha.renew_lease(sent + lease);
            }
            if ack.leader_confirmed {
                self.link.prefer(addr);
            }
        }
    }

    async fn poll_once(&self) {
        let name = self.config.broker_name.clone();
        let client = self.link.client().clone();
        let info = self
            .link
            .any(|a| {
                let client = client.clone();
                let name = name.clone();
                async move { client.get_replica_info(&a, &name).await }
            })
            .await;
        match info {
            Ok(info) => self.apply(info).await,
            Err(e) => tracing::debug!(error = %e, "cannot read the replica info"),
        }
    }

    /// Reads the broker ids the controller knows for this set (CONTROLLER_GET_SYNC_STATE_DATA:
    /// every registered replica, in the SyncStateSet or not) into [`HaState::set_known_replicas`].
    /// A failed read keeps the last list.
    async fn refresh_known_replicas(&self) {
        let name = self.config.broker_name.clone();
        let client = self.link.client().clone();
        let data = self
            .link
            .any(|a| {
                let (client, name) = (client.clone(), name.clone());
                async move { client.get_sync_state_data(&a, &[name.as_str()]).await }
            })
            .await;
        match data {
            Ok(data) => {
                if let Some(set) = data.replicas_info_table.get(&name) {
                    let ids = set
                        .in_sync_replicas
                        .iter()
                        .chain(&set.not_in_sync_replicas)
                        .map(|r| r.broker_id)
                        .collect();
                    self.ha.set_known_replicas(ids);
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the broker ids of this set"),
        }
    }

    /// One controller's applied copy of the set (leader or not). Only an answer naming a
    /// master is applied (`apply` takes nothing older than what this broker knows); a
    /// masterless one is left to the leader's read, which asks for an election.
    async fn poll_local(&self, addr: &str, timeout: Duration) {
        match self
            .link
            .client()
            .get_replica_info_local(addr, &self.config.broker_name, timeout)
            .await
        {
            Ok(info) if info.master_broker_id.is_some() => self.apply(info).await,
            Ok(_) => {}
            Err(e) => tracing::debug!(%addr, error = %e, "cannot read a controller's copy"),
        }
    }

    /// A NOTIFY_BROKER_ROLE_CHANGED from a controller.
    pub async fn on_notification(self: &Arc<Self>, info: MasterInfo) {
        self.apply(info).await;
    }

    /// Applies what the controller reports about the set.
    async fn apply(&self, info: MasterInfo) {
        let _serial = self.role_lock.lock().await;
        let Some(master_id) = info.master_broker_id else {
            drop(_serial);
            self.elect_if_masterless().await;
            return;
        };
        let current_epoch = self.ha.master_epoch();
        let role = self.ha.role();
        if info.master_epoch < current_epoch {
            tracing::debug!(
                reported = info.master_epoch,
                current = current_epoch,
                "ignoring an older master epoch"
            );
            return;
        }
        let me = self.identity.broker_id;
        let same_epoch = info.master_epoch == current_epoch;
        if master_id == me {
            if role == Role::Master && same_epoch {
                self.ha
                    .update_sync_state_set(info.sync_state_set_epoch, info.sync_state_set);
                return;
            }
            if let Err(e) = self.become_master(&info).await {
                tracing::error!(error = %e, epoch = info.master_epoch, "cannot become master");
            }
        } else {
            let Some(master_addr) = info.master_address.clone() else {
                return;
            };
            if role == Role::Slave && same_epoch {
                self.ha
                    .update_sync_state_set(info.sync_state_set_epoch, info.sync_state_set);
                return;
            }
            self.become_slave(master_id, master_addr, &info);
        }
    }

    async fn become_master(&self, info: &MasterInfo) -> anyhow::Result<()> {
        let follower = self.follower.lock().take();
        if let Some(f) = follower {
            // Wait until it has stopped: no frame of the old master is appended, and no ack
            // sent to it, after this epoch starts (a deposed master may still be alive and
            // count this broker's acks; docs/safety.md).
            f.abort();
            let _ = f.await;
        }
        let snap = self.ha.snapshot();
        let old_master = snap
            .master_addr
            .filter(|a| snap.role == Role::Slave && *a != self.broker_addr);
        let end = self.store.max_phy_offset();
        match self.store.last_epoch() {
            // This process was the master of this epoch before a restart: its log already is
            // the epoch's log (nobody else was master in between, or the epoch would be higher).
            Some(last) if last.epoch == info.master_epoch => {}
            Some(last) if last.epoch > info.master_epoch => anyhow::bail!(
                "the log holds epoch {} but the controller names this broker master of the older epoch {}",
                last.epoch,
                info.master_epoch
            ),
            _ => self.store.append_epoch(info.master_epoch, end)?,
        }
        self.store.set_gated(true);
        self.ha.set_master(
            self.identity.broker_id,
            self.broker_addr.clone(),
            info.master_epoch,
            info.sync_state_set_epoch,
            info.sync_state_set.clone(),
        );
        tracing::warn!(
            broker = %self.config.broker_name,
            id = self.identity.broker_id,
            epoch = info.master_epoch,
            start_offset = end,
            sync_state_set = ?info.sync_state_set,
            "this broker is now the master"
        );
        // A lease before the first write, the NameServers learn the new master at once, and the
        // HA port learns which broker ids may replicate.
        self.heartbeat_now.send_modify(|n| *n += 1);
        self.ha.replica_refresh().notify_one();
        self.register_trigger.notify_one();
        if let Some(addr) = old_master {
            self.tell_old_master(addr, info);
        }
        Ok(())
    }

    /// Tells the master this broker followed what the controllers decided (the same
    /// NOTIFY_BROKER_ROLE_CHANGED they send): a partition may cut the old master off from the
    /// controller leader and leave it only followers whose copy of the log lags, while it still
    /// reaches this broker; it then joins this broker's set at once instead of at the heal. The
    /// news is committed controller state, and a broker takes no master epoch older than its own.
    fn tell_old_master(&self, addr: String, info: &MasterInfo) {
        let request = role_notification(info);
        tokio::spawn(self.peers.tell(addr, request));
    }

    fn become_slave(&self, master_id: i64, master_addr: String, info: &MasterInfo) {
        if let Some(f) = self.follower.lock().take() {
            f.abort();
        }
        self.store.set_gated(true);
        self.ha.set_slave(
            master_id,
            master_addr.clone(),
            info.master_epoch,
            info.sync_state_set_epoch,
            info.sync_state_set.clone(),
        );
        tracing::warn!(
            broker = %self.config.broker_name,
            id = self.identity.broker_id,
            master = %master_addr,
            master_id,
            epoch = info.master_epoch,
            "this broker is now a slave"
        );
        let handle = tokio::spawn(self.peers.follow(
            self.ha.clone(),
            self.identity.broker_id,
            master_id,
            master_addr,
        ));
        *self.follower.lock() = Some(handle);
        self.register_trigger.notify_one();
    }

    async fn elect_if_masterless(&self) {
        let cluster = self.config.cluster_name.clone();
        let name = self.config.broker_name.clone();
        let me = self.identity.broker_id;
        let client = self.link.client().clone();
        let elected = self
            .link
            .any(|a| {
                let (client, cluster, name) = (client.clone(), cluster.clone(), name.clone());
                async move {
                    client
                        .elect_master(&a, &cluster, &name, Some(me), false)
                        .await
                }
            })
            .await;
        match elected {
            Ok(info) if info.master_broker_id.is_some() => {
                Box::pin(self.apply(info)).await;
            }
            Ok(_) => tracing::warn!("the set has no master and none could be elected yet"),
            Err(e) => tracing::warn!(error = %e, "election request failed"),
        }
    }

    /// Asks the controller to change the SyncStateSet when the master wants another one. A
    /// proposal whose outcome is not known keeps the union of the sets counted (see
    /// [`HaState::add_pending`]) until a read of the controller's state shows its epoch moved;
    /// when nothing is left to change, a fence (the same set, a new epoch) settles it, so no
    /// late copy of the proposal can be committed afterwards.
    async fn check_sync_state_set(&self) {
        let max_gap = Duration::from_millis(self.config.ha_max_time_slave_not_catchup_ms);
        if self.ha.pending().is_some() {
            // A linearizable read: if the controller's epoch moved, `apply` takes its set and
            // the union is settled.
            self.poll_once().await;
        }
        let Some((master, epoch, sss_epoch, want, fence)) = self.sync_state_set_change(max_gap)
        else {
            return;
        };
        tracing::info!(
            epoch,
            sync_state_set_epoch = sss_epoch,
            want = ?want,
            fence,
            "asking the controller to change the SyncStateSet"
        );
        self.ha.add_pending(sss_epoch, &want);
        let name = self.config.broker_name.clone();
        let client = self.link.client().clone();
        let result = self
            .link
            .any(|a| {
                let (client, name, want) = (client.clone(), name.clone(), want.clone());
                async move {
                    client
                        .alter_sync_state_set_fenced(
                            &a, &name, master, epoch, &want, sss_epoch, fence,
                        )
                        .await
                }
            })
            .await;
        match result {
            Ok((new_epoch, set)) => {
                tracing::info!(sync_state_set_epoch = new_epoch, set = ?set, "SyncStateSet changed");
                self.ha.update_sync_state_set(new_epoch, set);
            }
            Err(LinkError::Refused(ControllerCallError::Refused(Refusal { code, remark }))) => {
                // A refusal proves nothing about earlier proposals (or a late copy of this one
                // under another live-broker view): the union stays until a read settles it.
                tracing::warn!(code, %remark, "the controller refused the SyncStateSet change; re-reading");
                self.poll_once().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "SyncStateSet change outcome unknown; re-reading");
                self.poll_once().await;
            }
        }
    }

    /// The SyncStateSet change to propose now, if any: (master, master epoch, the set epoch it
    /// derives from, the set, whether it is a fence). Members never leave while this master's
    /// lease is at risk (a renewal missed): the controllers may be about to elect in its place,
    /// from the set as it stands, and a member a partition cut off from this master may be the
    /// only one their leader hears (docs/safety.md, "Deposing a master that cannot acknowledge").
    fn sync_state_set_change(
        &self,
        max_gap: Duration,
    ) -> Option<(i64, i32, i32, BTreeSet<i64>, bool)> {
        let min_in_sync = self.config.min_in_sync_replicas;
        if let Some((master, epoch, sss_epoch, want)) =
            self.ha.desired_sync_state_set(max_gap, min_in_sync)
        {
            let every = Duration::from_millis(self.config.controller_heartbeat_interval_ms);
            let current = self.ha.snapshot().sync_state_set;
            if !want.is_superset(&current) && self.lease_at_risk(every) {
                tracing::debug!(want = ?want, "not shrinking the SyncStateSet while the lease is at risk");
                return None;
            }
            return Some((master, epoch, sss_epoch, want, false));
        }
        // Nothing to change, but an earlier proposal is unsettled: a fence.
        self.ha.pending()?;
        let snap = self.ha.snapshot();
        let master = snap
            .master_broker_id
            .filter(|_| snap.role == Role::Master)?;
        let mut want = snap.sync_state_set;
        want.insert(master);
        Some((
            master,
            snap.master_epoch,
            snap.sync_state_set_epoch,
            want,
            true,
        ))
    }

    /// The broker id to register with the NameServers: 0 for the master (RocketMQ's
    /// `MASTER_ID`), the own id for a slave, `None` until the controller gave a role.
    pub fn registered_id(&self) -> Option<i64> {
        match self.ha.role() {
            Role::Master => Some(0),
            Role::Slave => Some(self.identity.broker_id),
            Role::None => None,
        }
    }
}

/// EXCHANGE_BROKER_HA_INFO (906) to the master's Remoting address: its HA address.
async fn exchange_ha_info(
    remoting: &RemotingClient,
    master_addr: &str,
    my_addr: &str,
    my_ha: SocketAddr,
) -> anyhow::Result<String> {
    let request = RemotingCommand::request(request_code::EXCHANGE_BROKER_HA_INFO)
        .with_ext("masterAddress", my_addr)
        .with_ext("masterHaAddress", my_ha.to_string());
    let response = remoting
        .invoke(master_addr, request, Duration::from_secs(3))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if response.code != response_code::SUCCESS {
        anyhow::bail!(
            "code {}: {}",
            response.code,
            response.remark.unwrap_or_default()
        );
    }
    response
        .ext("masterHaAddress")
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no masterHaAddress in the answer"))
}

/// A NOTIFY_BROKER_ROLE_CHANGED request carrying `info` (the inverse of
/// [`parse_role_notification`]).
pub fn role_notification(info: &MasterInfo) -> RemotingCommand {
    let mut cmd = RemotingCommand::request(request_code::NOTIFY_BROKER_ROLE_CHANGED);
    if let Some(id) = info.master_broker_id {
        cmd.set_ext("masterBrokerId", id);
    }
    if let Some(addr) = &info.master_address {
        cmd.set_ext("masterAddress", addr);
    }
    cmd.set_ext("masterEpoch", info.master_epoch);
    cmd.set_ext("syncStateSetEpoch", info.sync_state_set_epoch);
    let body = serde_json::json!({
        "syncStateSet": info.sync_state_set,
        "syncStateSetEpoch": info.sync_state_set_epoch,
    });
    cmd.with_body(serde_json::to_vec(&body).unwrap_or_default())
}

/// Parses a NOTIFY_BROKER_ROLE_CHANGED request into the master info it carries.
pub fn parse_role_notification(cmd: &RemotingCommand) -> Option<MasterInfo> {
    let master_broker_id = cmd.ext("masterBrokerId").and_then(|v| v.parse().ok());
    let master_epoch = cmd.ext("masterEpoch")?.parse().ok()?;
    let sync_state_set_epoch = cmd
        .ext("syncStateSetEpoch")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        #[serde(default)]
        sync_state_set: BTreeSet<i64>,
    }
    let sync_state_set = serde_json::from_slice::<Body>(&cmd.body)
        .map(|b| b.sync_state_set)
        .unwrap_or_default();
    Some(MasterInfo {
        code: response_code::SUCCESS,
        master_broker_id,
        master_address: cmd.ext("masterAddress").map(str::to_string),
        master_epoch,
        sync_state_set_epoch,
        sync_state_set,
    })
}

/// A slave copies its master's topic configurations, subscription groups, users and ACLs and
/// consumer offsets (RocketMQ's `SlaveSynchronize`) every few seconds.
///
/// Topics, groups and ACLs reach the slaves first through the metadata log ([`crate::metalog`]):
/// a change is acknowledged only once every SyncStateSet member holds its record, so a failover
/// never loses one. This copy is the catch-up for what the log does not carry (metadata older
/// than the slave's log, topics created on send) and for consumer offsets. It never takes an
/// applied change back: it is taken only when the master had applied at least as much of the
/// metadata log as this slave (see [`crate::metalog::MetadataLog::copy_allowed`]).
pub async fn slave_sync_loop(inner: Arc<crate::BrokerInner>) {
    let client = RemotingClient::new(inner.config.internal_client_config());
    let mut ticker = tokio::time::interval(Duration::from_secs(3));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(ha) = &inner.ha else { return };
        let snap = ha.snapshot();
        if snap.role != Role::Slave {
            continue;
        }
        let Some(master) = snap.master_addr else {
            continue;
        };
        adopt_store_topics(&inner);
        if let Err(e) = sync_from(&inner, &client, &master).await {
            tracing::debug!(%master, error = %e, "metadata sync from the master failed");
        }
    }
}

/// Whether [`sync_from`] said once that it cannot copy users without their secret keys.
static ACL_COPY_WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Copies the master's metadata to this slave: topics, subscription groups, consumer offsets,
/// users and ACLs. Everything is read first; each part is then applied only if the master's
/// state is not older than what this slave applied (see `MetadataLog::copy_allowed`).
async fn sync_from(
    inner: &crate::BrokerInner,
    client: &RemotingClient,
    master: &str,
) -> anyhow::Result<()> {
    let get = |code| fetch_from_master(client, master, code);
    let (body, topics_at) = get(request_code::GET_ALL_TOPIC_CONFIG).await?;
    let wrapper: rocketraft_common::protocol::TopicConfigSerializeWrapper =
        serde_json::from_slice(&body)?;
    let (body, groups_at) = get(request_code::GET_ALL_SUBSCRIPTIONGROUP_CONFIG).await?;
    let groups: serde_json::Value = serde_json::from_slice(&body)?;
    let (body, _) = get(request_code::GET_ALL_CONSUMER_OFFSET).await?;
    let offsets: Offsets = serde_json::from_slice(&body)?;
    // ACL 2.0 users and ACLs: the slave mirrors its master, so the proxy may read either.
    let (body, users_at) = get(request_code::AUTH_LIST_USER).await?;
    let users: Vec<rocketraft_common::acl::UserInfo> = serde_json::from_slice(&body)?;
    let (body, acls_at) = get(request_code::AUTH_LIST_ACL).await?;
    let acls: Vec<rocketraft_common::acl::AclInfo> = serde_json::from_slice(&body)?;

    // Each part only if the master's state is not older than what this slave applied, and
    // without the metadata log being applied meanwhile.
    if let Some(_applying) = inner.metalog.copy_allowed(topics_at) {
        copy_topics(inner, wrapper)?;
    } else {
        tracing::debug!(%master, ?topics_at, "the master's topics are older than this slave's; not copied");
    }
    if let Some(_applying) = inner.metalog.copy_allowed(groups_at) {
        copy_groups(inner, &groups)?;
    }
    copy_offsets(inner, offsets)?;
    // Users and ACLs together (an ACL needs its user), from the older of the two reads.
    let acl_at = match (users_at, acls_at) {
        (Some(u), Some(a)) => Some(u.min(a)),
        _ => None,
    };
    // The master shows passwords only to a Super caller (the inner credentials, or a
    // connection that proved the cluster secret): without them the users come without their
    // secret keys, and copying those would leave users nobody can sign in as.
    if users.iter().any(|u| u.password.is_none()) {
        if !ACL_COPY_WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(%master, "users and ACLs are not copied from the master: it shows secret keys only to a Super caller; configure the cluster secret or innerClientAuthenticationCredentials on every broker of the set (the metadata log still replicates every change)");
        }
    } else if let Some(_applying) = inner.metalog.copy_allowed(acl_at) {
        if inner.acl.replace_all(&users, &acls)? {
            tracing::info!(%master, users = users.len(), acls = acls.len(), "ACL metadata copied from the master");
        }
    }
    Ok(())
}

/// One of the master's metadata tables (request `code`): its body, and the master's applied
/// metadata log offset when it read it (if it says).
async fn fetch_from_master(
    client: &RemotingClient,
    master: &str,
    code: i32,
) -> anyhow::Result<(bytes::Bytes, Option<i64>)> {
    let r = client
        .invoke(
            master,
            RemotingCommand::request(code),
            Duration::from_secs(3),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if r.code != response_code::SUCCESS {
        anyhow::bail!("code {}: {}", r.code, r.remark.unwrap_or_default());
    }
    // The master's applied metadata log offset when it read the state.
    let at = r
        .ext(crate::metalog::OFFSET_HEADER)
        .and_then(|v| v.parse::<i64>().ok());
    Ok((r.body, at))
}

/// The master's consumer offsets (GET_ALL_CONSUMER_OFFSET): `topic@group` -> queue -> offset.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Offsets {
    #[serde(default)]
    offset_table: std::collections::BTreeMap<String, std::collections::BTreeMap<i32, i64>>,
}

/// Takes the master's topic configurations that differ from this slave's (reserved topics
/// excepted, they come through the metadata log), telling the NameServers when any changed.
fn copy_topics(
    inner: &crate::BrokerInner,
    wrapper: rocketraft_common::protocol::TopicConfigSerializeWrapper,
) -> anyhow::Result<()> {
    let mut changed = false;
    for (name, config) in wrapper.topic_config_table {
        if crate::metalog::is_reserved(&name) {
            continue;
        }
        if inner.topics.get(&name).as_ref() != Some(&config) {
            inner.topics.upsert(config)?;
            changed = true;
        }
    }
    if changed {
        inner.register_trigger.notify_one();
    }
    Ok(())
}

/// Takes the master's subscription group configurations that differ from this slave's.
fn copy_groups(inner: &crate::BrokerInner, groups: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(table) = groups["subscriptionGroupTable"].as_object() {
        for (group, config) in table {
            let raw = serde_json::to_vec(config)?;
            let current = inner.metadata.get_subscription_group(group)?;
            let same = current
                .and_then(|c| serde_json::from_slice::<serde_json::Value>(&c).ok())
                .is_some_and(|c| &c == config);
            if !same {
                inner.metadata.put_subscription_group(group, &raw)?;
            }
        }
    }
    Ok(())
}

/// Takes the master's consumer offsets that differ from this slave's.
fn copy_offsets(inner: &crate::BrokerInner, offsets: Offsets) -> anyhow::Result<()> {
    for (key, queues) in offsets.offset_table {
        let Some((topic, group)) = key.split_once('@') else {
            continue;
        };
        // An expired lite topic's offsets at or below its cut: the expiry (a record this
        // slave applied) deleted them, and a copy read before the master applied it would
        // bring them back.
        let expired = inner.lite.expired_at(topic);
        for (queue_id, offset) in queues {
            if expired.is_some_and(|cut| offset <= cut) {
                continue;
            }
            if inner.metadata.query_offset(group, topic, queue_id)? != Some(offset) {
                inner
                    .metadata
                    .commit_offset(group, topic, queue_id, offset)?;
            }
        }
    }
    Ok(())
}

/// Gives every topic that has messages in the store but no configuration one (a topic the old
/// master created moments before a failover, before the periodic copy reached this slave).
/// System topics (revive, retry, DLQ) get as many queues as they use; others at least the
/// default count.
pub fn adopt_store_topics(inner: &crate::BrokerInner) {
    for topic in inner.store.topics() {
        if inner.topics.get(&topic).is_some() || crate::metalog::is_reserved(&topic) {
            continue;
        }
        let used = inner
            .store
            .queue_ids(&topic)
            .into_iter()
            .max()
            .map_or(1, |q| q + 1);
        let system = topic.starts_with("rmq_sys_")
            || topic.starts_with(rocketraft_common::consts::RETRY_GROUP_TOPIC_PREFIX)
            || topic.starts_with(rocketraft_common::consts::DLQ_GROUP_TOPIC_PREFIX);
        let queues = if system {
            used
        } else {
            used.max(inner.config.default_topic_queue_nums)
        };
        match inner
            .topics
            .upsert(rocketraft_common::TopicConfig::new(topic.clone(), queues))
        {
            Ok(()) => {
                tracing::info!(%topic, queues, "topic configuration adopted from the replicated log")
            }
            Err(e) => tracing::warn!(%topic, error = %e, "cannot adopt a topic from the log"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_notification_round_trips() {
        let info = MasterInfo {
            code: response_code::SUCCESS,
            master_broker_id: Some(3),
            master_address: Some("10.0.0.3:10911".into()),
            master_epoch: 7,
            sync_state_set_epoch: 9,
            sync_state_set: BTreeSet::from([3]),
        };
        let cmd = role_notification(&info);
        assert_eq!(cmd.code, request_code::NOTIFY_BROKER_ROLE_CHANGED);
        assert_eq!(parse_role_notification(&cmd), Some(info));
    }
}
