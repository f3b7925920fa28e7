//! `rocketraft cluster restart --rolling`: every process of a running cluster stopped and
//! started again one at a time, so that the cluster keeps serving; with a new binary it is a
//! rolling upgrade (each process restarts as the binary that runs this command).
//!
//! The order, and why:
//! 1. **Controllers**, one at a time, followers first. Before the leader stops, its leadership
//!    is handed to a follower that holds the whole log (Raft `TransferLeader`), so brokers'
//!    role leases keep being renewed; after each restart the member must see a leader again
//!    and have applied everything the quorum had committed before it stopped. Two members are
//!    never down together, so a quorum of three (or more) always stands.
//! 2. **NameServers**, one at a time. A NameServer keeps no routes on disk: it is complete
//!    again once every broker registered with it (within one registration interval), and the
//!    next one stops only then, so clients always have a NameServer that knows every route.
//! 3. **Broker sets**, one set after another, and within a set: the slaves first, each waited
//!    for until it is back in the SyncStateSet; then mastership moves to an in-sync slave
//!    (CONTROLLER_ELECT_MASTER naming it: with `allAckInSyncStateSet` every acknowledged
//!    message is on it) and the new master is waited for until it takes writes (master role on
//!    the broker, brokerId 0 on every NameServer); only then the old master, a slave by now,
//!    restarts and is waited for until it is in sync again.
//!
//! Controllers and NameServers go before the brokers because the brokers talk to them: a newer
//! broker can then count on a newer controller and NameServer, and older brokers keep working
//! with them (the protocols do not change within a release line).
//!
//! The cluster must be healthy before anything stops (every process alive, every broker set
//! with a master and a whole SyncStateSet); a step that does not complete in `--timeout-secs`
//! stops the restart there, with the process to look at, and leaves the rest alone.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rocketraft_common::consts::MASTER_ID;
use rocketraft_common::trust::ClusterSecret;
use rocketraft_controller::client::ControllerClient;
use rocketraft_controller::wire::WireReplicasInfo;
use rocketraft_remoting::api::MqClientApi;
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::{ClientConfig, RemotingClient, RemotingCommand};

use super::auth::admin_credentials;
use super::config::path_string;
use super::file::{ClusterFile, Kind};
use super::layout::loopback;
use super::process::{is_alive, printed_ready, spawn, stop_group, tail, Stopped, STOP_GRACE};
use super::readiness::registration_gap;
use super::up::SECRET_FILE;
use super::QUERY_TIMEOUT;

/// How often a wait polls.
const POLL: Duration = Duration::from_millis(200);
/// How long a controller leadership transfer may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a failed controller leadership transfer is tried before the leader stops anyway.
const TRANSFER_ATTEMPTS: u32 = 3;

/// The cluster being restarted and the clients that watch it.
struct Rolling {
    dir: PathBuf,
    file: ClusterFile,
    /// This binary: each process restarts as it (a rolling upgrade when it is a new one).
    exe: String,
    /// How long each step may take.
    step_timeout: Duration,
    api: MqClientApi,
    controllers: ControllerClient,
    secret: Option<ClusterSecret>,
    /// The processes started here, kept to collect them should they exit while we wait.
    children: Vec<Child>,
}

pub(super) async fn restart_rolling(dir: &Path, step_timeout: Duration) -> anyhow::Result<()> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let file = ClusterFile::load_existing(&dir)?;
    let exe = std::env::current_exe().context("cannot find this binary to restart processes")?;
    let secret = read_secret(&dir)?;
    let remoting = RemotingClient::new(ClientConfig {
        credentials: admin_credentials(&dir)?,
        cluster_secret: secret.clone(),
        ..ClientConfig::default()
    });
    let mut rolling = Rolling {
        dir,
        file,
        exe: path_string(&exe)?,
        step_timeout,
        api: MqClientApi::new(remoting.clone(), QUERY_TIMEOUT),
        controllers: ControllerClient::new(remoting, QUERY_TIMEOUT),
        secret,
        children: Vec::new(),
    };
    let started = Instant::now();
    let result = rolling.run().await;
    for child in &mut rolling.children {
        let _ = child.try_wait();
    }
    result?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "rolling restart done"
    );
    println!(
        "rolling restart of the cluster in {} done in {:.1} s: {} processes restarted one at a time",
        rolling.dir.display(),
        started.elapsed().as_secs_f64(),
        rolling.file.processes.len()
    );
    Ok(())
}

/// The cluster secret `cluster up` wrote, if it made one (state changes need it).
fn read_secret(dir: &Path) -> anyhow::Result<Option<ClusterSecret>> {
    let path = dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => ClusterSecret::new(text.trim())
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

impl Rolling {
    async fn run(&mut self) -> anyhow::Result<()> {
        let dead: Vec<String> = self
            .file
            .processes
            .iter()
            .filter(|p| !is_alive(p))
            .map(|p| p.name.clone())
            .collect();
        if !dead.is_empty() {
            bail!(
                "not every process of the cluster in {} runs ({} not running): a rolling restart needs a whole cluster; start it with `rocketraft cluster up --dir {}` (after `cluster down`)",
                self.dir.display(),
                dead.join(", "),
                self.dir.display()
            );
        }
        self.wait_sets_whole("before the restart").await?;
        self.restart_controllers().await?;
        self.restart_namesrvs().await?;
        let sets: Vec<String> = self
            .file
            .broker_sets()
            .into_iter()
            .map(|(set, _)| set)
            .collect();
        for set in sets {
            self.restart_set(&set).await?;
        }
        Ok(())
    }

    fn indices(&self, kind: Kind) -> Vec<usize> {
        (0..self.file.processes.len())
            .filter(|&i| self.file.processes[i].role == kind)
            .collect()
    }

    /// Polls `check` until it answers `Ok(None)`; `Ok(Some(why))` is "not yet", an error ends
    /// the wait at once. Fails with the last reason after the step timeout.
    async fn wait_until<F, Fut>(&self, what: &str, mut check: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Option<String>>>,
    {
        let deadline = Instant::now() + self.step_timeout;
        loop {
            let why = match check().await? {
                None => return Ok(()),
                Some(why) => why,
            };
            if Instant::now() >= deadline {
                bail!(
                    "{what}: not done within {} s (raise --timeout-secs if the machine is slow): {why}",
                    self.step_timeout.as_secs()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops process `index` gracefully (SIGTERM; SIGKILL only after the grace period), starts
    /// it again as this binary with its config, and waits for its ready line.
    async fn restart_process(&mut self, index: usize) -> anyhow::Result<()> {
        let record = self.file.processes[index].clone();
        tracing::info!(name = %record.name, pid = record.pid, "stopping (SIGTERM)");
        let children = &mut self.children;
        let stopped = stop_group(&[&record], STOP_GRACE, &mut || {
            for child in children.iter_mut() {
                let _ = child.try_wait();
            }
        })
        .await;
        if stopped.iter().any(|(_, _, how)| *how == Stopped::Kill) {
            tracing::warn!(name = %record.name, "it ignored SIGTERM for {} s: killed", STOP_GRACE.as_secs());
        }
        if is_alive(&record) {
            bail!(
                "{} (pid {}) is still running after SIGKILL; check it with `ps`",
                record.name,
                record.pid
            );
        }
        let mut next = record;
        if let Some(program) = next.argv.first_mut() {
            *program = self.exe.clone();
        }
        let mut child = spawn(&next)?;
        next.pid = child.id();
        next.stopped = false;
        tracing::info!(name = %next.name, pid = next.pid, "started");
        self.file.processes[index] = next.clone();
        // Recorded at once: if this command dies now, `status` and `down` still find it.
        self.file.save(&self.dir)?;
        let deadline = Instant::now() + self.step_timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "{} exited ({status}) before it was ready; last lines of {}:\n{}",
                    next.name,
                    next.stderr_log.display(),
                    tail(&next.stderr_log, super::process::TAIL_LINES)
                );
            }
            if printed_ready(&next) {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} (pid {}) did not print its ready line within {} s; last lines of {}:\n{}",
                    next.name,
                    next.pid,
                    self.step_timeout.as_secs(),
                    next.stderr_log.display(),
                    tail(&next.stderr_log, super::process::TAIL_LINES)
                );
            }
            tokio::time::sleep(POLL).await;
        }
        self.children.push(child);
        Ok(())
    }

    // ---- controllers ----------------------------------------------------------------------

    /// Each controller's Raft status, by process index (`None`: no answer).
    async fn controller_statuses(
        &self,
    ) -> Vec<(
        usize,
        Option<rocketraft_controller::service::ControllerStatus>,
    )> {
        let mut out = Vec::new();
        for i in self.indices(Kind::Controller) {
            let addr = loopback(self.file.processes[i].ports.remoting);
            let status = self
                .controllers
                .metadata(&addr)
                .await
                .ok()
                .and_then(|m| m.status);
            out.push((i, status));
        }
        out
    }

    /// The leader's process index and its committed log index, once every controller answers
    /// and agrees on one leader.
    async fn controller_leader(&self) -> anyhow::Result<Result<(usize, u64), String>> {
        let statuses = self.controller_statuses().await;
        let mut leader = None;
        for (i, status) in &statuses {
            let name = &self.file.processes[*i].name;
            let Some(status) = status else {
                return Ok(Err(format!("{name} does not answer")));
            };
            if status.raft.state == "Leader" {
                leader = Some((*i, status.raft.committed.unwrap_or(0)));
            } else if status.raft.leader.is_none() {
                return Ok(Err(format!("{name} knows no leader")));
            }
        }
        Ok(leader.ok_or_else(|| "no controller is leader".to_string()))
    }

    async fn restart_controllers(&mut self) -> anyhow::Result<()> {
        let members = self.indices(Kind::Controller);
        if members.is_empty() {
            return Ok(());
        }
        // Followers first, the leader last: one leadership change instead of several.
        let mut order = Vec::new();
        let mut leader_last = Vec::new();
        let (leader, _) = self
            .wait_controller_leader("before restarting the controllers")
            .await?;
        for i in members {
            if i == leader {
                leader_last.push(i);
            } else {
                order.push(i);
            }
        }
        order.extend(leader_last);
        for i in order {
            let (leader, committed) = self
                .wait_controller_leader("a controller leader before the next restart")
                .await?;
            if i == leader && self.indices(Kind::Controller).len() > 1 {
                self.transfer_controller_leadership(i).await?;
            }
            let name = self.file.processes[i].name.clone();
            tracing::info!(controller = %name, committed, "restarting controller");
            self.restart_process(i).await?;
            let addr = loopback(self.file.processes[i].ports.remoting);
            let controllers = self.controllers.clone();
            self.wait_until(&format!("{name} catching up with the quorum"), || {
                let controllers = controllers.clone();
                let addr = addr.clone();
                async move {
                    Ok(match controllers.metadata(&addr).await {
                        Err(e) => Some(format!("no answer: {e}")),
                        Ok(m) => match m.status {
                            None => Some("no Raft status in its answer".to_string()),
                            Some(s) if s.raft.leader.is_none() => {
                                Some("it knows no leader".to_string())
                            }
                            Some(s) if s.raft.last_applied.unwrap_or(0) < committed => {
                                Some(format!(
                                    "applied {:?}, the quorum had committed {committed}",
                                    s.raft.last_applied
                                ))
                            }
                            Some(_) => None,
                        },
                    })
                }
            })
            .await?;
            self.wait_controller_leader(&format!("a controller leader after restarting {name}"))
                .await?;
            tracing::info!(controller = %name, "controller back in the quorum");
        }
        Ok(())
    }

    async fn wait_controller_leader(&self, what: &str) -> anyhow::Result<(usize, u64)> {
        let deadline = Instant::now() + self.step_timeout;
        loop {
            let why = match self.controller_leader().await? {
                Ok(found) => return Ok(found),
                Err(why) => why,
            };
            if Instant::now() >= deadline {
                bail!(
                    "{what}: none within {} s: {why}",
                    self.step_timeout.as_secs()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Hands the leadership of controller `leader` to the follower that applied the most, and
    /// waits until another member leads.
    async fn transfer_controller_leadership(&self, leader: usize) -> anyhow::Result<()> {
        let statuses = self.controller_statuses().await;
        let leader_status = statuses
            .iter()
            .find(|(i, _)| *i == leader)
            .and_then(|(_, s)| s.clone())
            .context("the controller leader stopped answering")?;
        let Some(to) = statuses
            .iter()
            .filter(|(i, _)| *i != leader)
            .filter_map(|(_, s)| s.as_ref())
            .max_by_key(|s| s.raft.last_applied)
            .map(|s| s.raft.id)
        else {
            return Ok(());
        };
        tracing::info!(
            from = leader_status.raft.id,
            to,
            "handing controller leadership over"
        );
        for attempt in 1..=TRANSFER_ATTEMPTS {
            // An attempt that timed out may have handed leadership over all the same.
            if attempt > 1
                && matches!(self.controller_leader().await, Ok(Ok((now, _))) if now != leader)
            {
                break;
            }
            match rocketraft_raft::remote_admin(
                &leader_status.raft.addr,
                &rocketraft_raft::AdminRequest::TransferLeader { to },
                TRANSFER_TIMEOUT,
                self.secret.as_ref(),
            )
            .await
            {
                Ok(answer) => {
                    tracing::info!(%answer, "leadership transferred");
                    break;
                }
                // The target may still be catching up after its own restart: try again.
                Err(e) if attempt < TRANSFER_ATTEMPTS => {
                    tracing::info!(error = %e, attempt, "leadership transfer failed; retrying");
                    tokio::time::sleep(POLL * 5).await;
                }
                // Not fatal: stopping the leader makes the others elect one anyway, an
                // election timeout later (the brokers retry their controller calls meanwhile).
                Err(e) => tracing::warn!(
                    error = %e,
                    attempts = TRANSFER_ATTEMPTS,
                    "leadership transfer failed; the leader stops anyway"
                ),
            }
        }
        let deadline = Instant::now() + self.step_timeout;
        while Instant::now() < deadline {
            if let Ok(Ok((now, _))) = self.controller_leader().await {
                if now != leader {
                    return Ok(());
                }
            }
            tokio::time::sleep(POLL).await;
        }
        tracing::warn!("the controller leader did not change; it stops anyway");
        Ok(())
    }

    // ---- NameServers ----------------------------------------------------------------------

    async fn restart_namesrvs(&mut self) -> anyhow::Result<()> {
        for i in self.indices(Kind::Namesrv) {
            let name = self.file.processes[i].name.clone();
            tracing::info!(namesrv = %name, "restarting NameServer");
            self.restart_process(i).await?;
            let addr = loopback(self.file.processes[i].ports.remoting);
            let api = self.api.clone();
            let file = self.file.clone();
            self.wait_until(
                &format!("{name} listing every broker set again (brokers re-register every registration interval)"),
                || {
                    let api = api.clone();
                    let addr = addr.clone();
                    let file = &file;
                    async move {
                        Ok(match api.cluster_info(&addr).await {
                            Err(e) => Some(format!("no answer: {e}")),
                            Ok(info) => registration_gap(&info, file),
                        })
                    }
                },
            )
            .await?;
            tracing::info!(namesrv = %name, "NameServer complete again");
        }
        Ok(())
    }

    // ---- broker sets ----------------------------------------------------------------------

    /// The controllers' view of broker set `set`, from whichever controller leads.
    async fn replicas(&self, set: &str) -> anyhow::Result<WireReplicasInfo> {
        let mut last = String::new();
        for addr in &self.file.controller_addrs {
            match self.controllers.get_sync_state_data(addr, &[set]).await {
                Ok(mut info) => {
                    return info
                        .replicas_info_table
                        .remove(set)
                        .with_context(|| format!("the controllers know no broker set {set}"));
                }
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        bail!("no controller answered for broker set {set}: {last}")
    }

    /// The broker id the controllers gave the broker at process `index`.
    fn broker_id(&self, info: &WireReplicasInfo, index: usize) -> Option<i64> {
        let addr = loopback(self.file.processes[index].ports.remoting);
        info.in_sync_replicas
            .iter()
            .chain(&info.not_in_sync_replicas)
            .find(|r| r.broker_address == addr)
            .map(|r| r.broker_id)
    }

    fn members(&self, set: &str) -> Vec<usize> {
        (0..self.file.processes.len())
            .filter(|&i| {
                let p = &self.file.processes[i];
                p.role == Kind::Broker && self.file.set_of(p) == set
            })
            .collect()
    }

    /// Why broker set `set` is not whole: a replica missing from the SyncStateSet, no master,
    /// or a NameServer that does not list it whole.
    async fn set_gap(&self, set: &str) -> anyhow::Result<Option<String>> {
        let info = match self.replicas(set).await {
            Ok(info) => info,
            Err(e) => return Ok(Some(format!("{e:#}"))),
        };
        if info.master_broker_id.is_none() {
            return Ok(Some(format!("broker set {set} has no master")));
        }
        for i in self.members(set) {
            let name = &self.file.processes[i].name;
            let in_sync = self.broker_id(&info, i).is_some_and(|id| {
                info.in_sync_replicas
                    .iter()
                    .any(|r| r.broker_id == id && r.alive)
            });
            if !in_sync {
                return Ok(Some(format!(
                    "{name} is not in the SyncStateSet of {set} (in sync: {:?})",
                    info.in_sync_replicas
                        .iter()
                        .map(|r| r.broker_address.as_str())
                        .collect::<Vec<_>>()
                )));
            }
        }
        Ok(self.namesrv_gap().await)
    }

    /// What some NameServer still lacks of the broker sets.
    async fn namesrv_gap(&self) -> Option<String> {
        for i in self.indices(Kind::Namesrv) {
            let addr = loopback(self.file.processes[i].ports.remoting);
            match self.api.cluster_info(&addr).await {
                Ok(info) => {
                    if let Some(gap) = registration_gap(&info, &self.file) {
                        return Some(format!("the NameServer at {addr}: {gap}"));
                    }
                }
                Err(e) => return Some(format!("the NameServer at {addr} does not answer: {e}")),
            }
        }
        None
    }

    async fn wait_set_whole(&self, set: &str, what: &str) -> anyhow::Result<()> {
        self.wait_until(what, || self.set_gap(set)).await
    }

    async fn wait_sets_whole(&self, when: &str) -> anyhow::Result<()> {
        for (set, _) in self.file.broker_sets() {
            self.wait_set_whole(
                &set,
                &format!("broker set {set} whole (a master, every replica in sync) {when}"),
            )
            .await?;
        }
        Ok(())
    }

    async fn restart_set(&mut self, set: &str) -> anyhow::Result<()> {
        let info = self.replicas(set).await?;
        let master_id = info
            .master_broker_id
            .with_context(|| format!("broker set {set} has no master"))?;
        let members = self.members(set);
        let mut master = None;
        let mut slaves = Vec::new();
        for i in members {
            match self.broker_id(&info, i) {
                Some(id) if id == master_id => master = Some(i),
                Some(id) => slaves.push((i, id)),
                None => bail!(
                    "the controllers do not know {} (at {}) as a replica of {set}",
                    self.file.processes[i].name,
                    loopback(self.file.processes[i].ports.remoting)
                ),
            }
        }
        let master = master.with_context(|| {
            format!("the master of {set} (broker id {master_id}) is not a process of this cluster")
        })?;
        for &(i, id) in &slaves {
            let name = self.file.processes[i].name.clone();
            tracing::info!(broker = %name, set, broker_id = id, "restarting slave");
            self.restart_process(i).await?;
            self.wait_set_whole(set, &format!("{name} back in the SyncStateSet of {set}"))
                .await?;
            // The controllers' view can still be the one from before the restart (the master
            // has not yet dropped the slave, its heartbeats have not yet timed out): the slave
            // must also hold everything the master held once it was back.
            self.wait_caught_up(set, master, i).await?;
            tracing::info!(broker = %name, set, "slave back in sync");
        }
        let old = self.file.processes[master].name.clone();
        if let Some(&(target, target_id)) = slaves.first() {
            self.transfer_master(set, master, target, target_id).await?;
        } else {
            tracing::warn!(
                broker = %old,
                set,
                "a set with one replica: it is unavailable while it restarts"
            );
        }
        tracing::info!(broker = %old, set, "restarting the old master");
        self.restart_process(master).await?;
        self.wait_set_whole(set, &format!("{old} back in broker set {set}"))
            .await?;
        tracing::info!(broker = %old, set, "broker set whole again");
        Ok(())
    }

    /// A broker's CommitLog end (`commitLogMaxOffset` of GET_BROKER_RUNTIME_INFO).
    async fn commitlog_end(&self, addr: &str) -> anyhow::Result<i64> {
        let table = crate::cmd::admin::broker::runtime_info(&self.api, addr).await?;
        let end = table
            .get("commitLogMaxOffset")
            .with_context(|| format!("the broker at {addr} reports no commitLogMaxOffset"))?;
        end.parse()
            .with_context(|| format!("the broker at {addr} reports commitLogMaxOffset {end:?}"))
    }

    /// Waits until the restarted slave `slave` of `set` holds the master's CommitLog up to the
    /// end the master had once the slave was back: what was acknowledged before and during the
    /// restart has reached it.
    async fn wait_caught_up(&self, set: &str, master: usize, slave: usize) -> anyhow::Result<()> {
        let name = &self.file.processes[slave].name;
        let master_addr = loopback(self.file.processes[master].ports.remoting);
        let slave_addr = loopback(self.file.processes[slave].ports.remoting);
        let deadline = Instant::now() + self.step_timeout;
        let target = loop {
            match self.commitlog_end(&master_addr).await {
                Ok(end) => break end,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %format!("{e:#}"), "the master's CommitLog end: retrying");
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => {
                    return Err(e.context(format!(
                        "the CommitLog end of {set}'s master, for {name} to reach"
                    )))
                }
            }
        };
        self.wait_until(
            &format!("{name} replicating the master of {set} up to offset {target}"),
            || async {
                Ok(match self.commitlog_end(&slave_addr).await {
                    Ok(end) if end >= target => None,
                    Ok(end) => Some(format!("its CommitLog ends at {end}")),
                    Err(e) => Some(format!("{e:#}")),
                })
            },
        )
        .await?;
        tracing::info!(broker = %name, set, offset = target, "slave caught up with the master");
        Ok(())
    }

    /// Moves the mastership of `set` from process `master` to the in-sync slave `target`, and
    /// waits until `target` takes writes.
    async fn transfer_master(
        &self,
        set: &str,
        master: usize,
        target: usize,
        target_id: i64,
    ) -> anyhow::Result<()> {
        let from = self.file.processes[master].name.clone();
        let to = self.file.processes[target].name.clone();
        tracing::info!(set, %from, %to, broker_id = target_id, "electing a new master");
        let transfer_started = Instant::now();
        let mut last = String::new();
        let mut elected = false;
        for addr in &self.file.controller_addrs {
            match self
                .controllers
                .elect_master(addr, &self.file.cluster_name, set, Some(target_id), true)
                .await
            {
                Ok(info) if info.master_broker_id == Some(target_id) => {
                    tracing::info!(
                        set,
                        master_epoch = info.master_epoch,
                        "the controllers elected {to}"
                    );
                    elected = true;
                    break;
                }
                Ok(info) => {
                    last = format!(
                        "{addr} answered code {} with master {:?}",
                        info.code, info.master_broker_id
                    );
                }
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        if !elected {
            bail!("no controller elected {to} master of {set}: {last}");
        }
        let target_addr = loopback(self.file.processes[target].ports.remoting);
        self.wait_until(&format!("{to} taking writes as master of {set}"), || {
            self.master_gap(&target_addr, set)
        })
        .await?;
        tracing::info!(
            set,
            master = %to,
            elapsed_ms = transfer_started.elapsed().as_millis() as u64,
            "new master takes writes"
        );
        Ok(())
    }

    /// Why the broker at `addr` does not take writes as master of `set` yet: it does not say
    /// it is master, or some NameServer does not list it as brokerId 0 (clients would not find
    /// it).
    async fn master_gap(&self, addr: &str, set: &str) -> anyhow::Result<Option<String>> {
        let request = RemotingCommand::request(request_code::GET_BROKER_CONFIG);
        match self
            .api
            .call(addr, request, &[response_code::SUCCESS])
            .await
        {
            Err(e) => return Ok(Some(format!("{addr} does not answer: {e}"))),
            Ok(response) => {
                let text = String::from_utf8_lossy(&response.body);
                let master = text.lines().any(|l| l.trim() == "brokerRole=SYNC_MASTER");
                if !master {
                    return Ok(Some(format!("{addr} is not master yet")));
                }
            }
        }
        for i in self.indices(Kind::Namesrv) {
            let ns = loopback(self.file.processes[i].ports.remoting);
            let listed = match self.api.cluster_info(&ns).await {
                Ok(info) => info
                    .broker_addr_table
                    .get(set)
                    .and_then(|b| b.broker_addrs.get(&MASTER_ID))
                    .is_some_and(|a| a == addr),
                Err(_) => false,
            };
            if !listed {
                return Ok(Some(format!(
                    "the NameServer at {ns} does not list {addr} as master of {set} yet"
                )));
            }
        }
        Ok(None)
    }
}
