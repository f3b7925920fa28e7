//! A broker's link to the controller quorum (controller mode, issue 4 groundwork): the broker's
//! identity, obtained once from the controller and kept on disk, and the registration sequence
//! RocketMQ's `ReplicasManager` follows.
//!
//! Obtaining an id: `GET_NEXT_BROKER_ID`, then write a temporary identity (id and check code),
//! then `APPLY_BROKER_ID` with that check code, then write the identity file and remove the
//! temporary one. A crash after the apply leaves the temporary file; the next start applies the
//! same id with the same check code again, which the controller accepts (idempotent), so an id is
//! never applied twice under two codes. Both files are written atomically.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use rocketraft_controller::client::ControllerCallError;
use rocketraft_controller::client::ControllerClient;
use rocketraft_controller::client::HeartbeatAck;
use rocketraft_controller::client::MasterInfo;
use rocketraft_controller::heartbeat::Heartbeat;
use rocketraft_remoting::{response_code, Refusal};
use serde::Deserialize;
use serde::Serialize;

/// Who this broker is in its broker set, as the controller assigned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerIdentity {
    pub cluster_name: String,
    pub broker_name: String,
    pub broker_id: i64,
    pub register_check_code: String,
}

const IDENTITY_FILE: &str = "broker_identity.json";
const TEMP_IDENTITY_FILE: &str = "broker_identity.applying.json";

/// Why the link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("identity file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("identity file {path} is not valid: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "identity file {path} is for {found}, not {expected}: point the broker at its own store"
    )]
    Foreign {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("no controller answered ({tried}): {last}")]
    NoController { tried: String, last: String },
    #[error("the controller refused: {0}")]
    Refused(ControllerCallError),
}

fn write_atomically(path: &Path, value: &BrokerIdentity) -> Result<(), LinkError> {
    let io = |source| LinkError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| io(std::io::Error::other(e)))?;
    {
        let mut f = fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    fs::rename(&tmp, path).map_err(io)?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

fn read(path: &Path) -> Result<Option<BrokerIdentity>, LinkError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| LinkError::Corrupt {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LinkError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// What one heartbeat round achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeartbeatOutcome {
    pub delivered: usize,
    pub leader_confirmed: bool,
    /// A leader also confirmed this broker as its set's master at its epoch (renews the lease).
    pub lease_confirmed: bool,
    /// The least `heartbeatTimeoutMills` the answering controllers reported.
    pub controller_timeout_ms: Option<u64>,
}

/// Talks to the controllers listed in `controllerAddr`, trying each in turn.
pub struct ControllerLink {
    controllers: Vec<String>,
    client: ControllerClient,
    /// The controller that answered last: tried first next time, so a dead or paused
    /// controller early in the list does not cost every call a timeout.
    preferred: std::sync::atomic::AtomicUsize,
}

impl ControllerLink {
    /// `controllers`: `host:port` addresses separated by `;` (RocketMQ's `controllerAddr`).
    pub fn new(controllers: &str, client: ControllerClient) -> ControllerLink {
        ControllerLink {
            controllers: controllers
                .split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            client,
            preferred: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Tries `addr` first from now on: the heartbeat loop calls this for the controller that
    /// confirmed a heartbeat as leader, so a SyncStateSet change or a read goes straight to
    /// the leader instead of timing out on unreachable controllers first.
    pub fn prefer(&self, addr: &str) {
        if let Some(at) = self.controllers.iter().position(|a| a == addr) {
            self.preferred
                .store(at, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The controllers' addresses, as configured.
    pub fn addresses(&self) -> &[String] {
        &self.controllers
    }

    /// Runs `call` against each controller until one answers; a rejection is final.
    async fn first_answer<T, F, Fut>(&self, call: F) -> Result<T, LinkError>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, ControllerCallError>>,
    {
        let mut last = String::from("no controller address configured");
        use std::sync::atomic::Ordering;
        let n = self.controllers.len();
        for round in 0..3u64 {
            let first = self.preferred.load(Ordering::Relaxed);
            for i in 0..n {
                let at = (first + i) % n;
                let addr = &self.controllers[at];
                match call(addr.clone()).await {
                    Ok(v) => {
                        self.preferred.store(at, Ordering::Relaxed);
                        return Ok(v);
                    }
                    Err(ControllerCallError::Refused(r))
                        if r.code != response_code::SYSTEM_BUSY =>
                    {
                        self.preferred.store(at, Ordering::Relaxed);
                        return Err(LinkError::Refused(ControllerCallError::Refused(r)));
                    }
                    Err(e) => last = format!("{addr}: {e}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(200 * (round + 1))).await;
        }
        Err(LinkError::NoController {
            tried: self.controllers.join(";"),
            last,
        })
    }

    /// This broker's identity: from `store_root` if it was assigned before, otherwise assigned
    /// by the controller now (see the module docs for the crash-safe sequence).
    pub async fn obtain_identity(
        &self,
        store_root: &Path,
        cluster: &str,
        broker_name: &str,
        broker_addr: &str,
    ) -> Result<BrokerIdentity, LinkError> {
        let path = store_root.join(IDENTITY_FILE);
        let expected = format!("{cluster}/{broker_name}");
        if let Some(identity) = read(&path)? {
            let found = format!("{}/{}", identity.cluster_name, identity.broker_name);
            if found != expected {
                return Err(LinkError::Foreign {
                    path,
                    found,
                    expected,
                });
            }
            return Ok(identity);
        }
        let temp_path = store_root.join(TEMP_IDENTITY_FILE);
        loop {
            let pending = self
                .pending_identity(&temp_path, cluster, broker_name, broker_addr)
                .await?;
            let applied = self.apply(&pending, cluster, broker_name).await;
            match applied {
                Ok(()) => {
                    write_atomically(&path, &pending)?;
                    let _ = fs::remove_file(&temp_path);
                    tracing::info!(
                        broker = broker_name,
                        id = pending.broker_id,
                        "broker id assigned by the controller"
                    );
                    return Ok(pending);
                }
                // Another broker took the id in between: ask for a new one.
                Err(LinkError::Refused(e))
                    if e.code() == Some(response_code::CONTROLLER_BROKER_ID_INVALID) =>
                {
                    tracing::warn!(
                        id = pending.broker_id,
                        "broker id taken meanwhile; asking again"
                    );
                    fs::remove_file(&temp_path).map_err(|source| LinkError::Io {
                        path: temp_path.clone(),
                        source,
                    })?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The identity being assigned: the one recorded in the temporary file by an interrupted
    /// assignment of this broker, or else a new id from the controller (GET_NEXT_BROKER_ID),
    /// recorded there before it is applied.
    async fn pending_identity(
        &self,
        temp_path: &Path,
        cluster: &str,
        broker_name: &str,
        broker_addr: &str,
    ) -> Result<BrokerIdentity, LinkError> {
        Ok(match read(temp_path)? {
            Some(p) if p.cluster_name == cluster && p.broker_name == broker_name => p,
            _ => {
                let id = self
                    .first_answer(|a| async move {
                        self.client
                            .get_next_broker_id(&a, cluster, broker_name)
                            .await
                    })
                    .await?;
                let pending = BrokerIdentity {
                    cluster_name: cluster.to_string(),
                    broker_name: broker_name.to_string(),
                    broker_id: id,
                    register_check_code: format!(
                        "{broker_addr};{}",
                        rocketraft_common::time::now_ms()
                    ),
                };
                write_atomically(temp_path, &pending)?;
                pending
            }
        })
    }

    /// APPLY_BROKER_ID: asks the controller to give `pending`'s id to this broker.
    async fn apply(
        &self,
        pending: &BrokerIdentity,
        cluster: &str,
        broker_name: &str,
    ) -> Result<(), LinkError> {
        self.first_answer(|a| async move {
            self.client
                .apply_broker_id(
                    &a,
                    cluster,
                    broker_name,
                    pending.broker_id,
                    &pending.register_check_code,
                )
                .await
        })
        .await
    }

    /// CONTROLLER_REGISTER_BROKER, then, if the set has no master, CONTROLLER_ELECT_MASTER as a
    /// broker trigger (MASTER_STILL_EXIST is an answer too). Returns the set's master.
    pub async fn register(
        &self,
        identity: &BrokerIdentity,
        broker_addr: &str,
    ) -> Result<MasterInfo, LinkError> {
        let registered = self
            .first_answer(|a| async move {
                self.client
                    .register_broker(
                        &a,
                        &identity.cluster_name,
                        &identity.broker_name,
                        identity.broker_id,
                        broker_addr,
                    )
                    .await
            })
            .await?;
        if registered.master_broker_id.is_some() {
            return Ok(registered);
        }
        let elected = self
            .first_answer(|a| async move {
                self.client
                    .elect_master(
                        &a,
                        &identity.cluster_name,
                        &identity.broker_name,
                        Some(identity.broker_id),
                        false,
                    )
                    .await
            })
            .await;
        match elected {
            // Nobody may be elected yet (this broker is outside the SyncStateSet and its
            // members are still down, e.g. the whole set restarting): start without a role,
            // as RocketMQ's broker does; the poll loop keeps asking for an election.
            Err(LinkError::Refused(ControllerCallError::Refused(Refusal { code, remark })))
                if code == response_code::CONTROLLER_ELECT_MASTER_FAILED
                    || code == response_code::CONTROLLER_MASTER_NOT_AVAILABLE =>
            {
                tracing::warn!(code, %remark, "no master could be elected yet; starting without a role and retrying");
                Ok(registered)
            }
            other => other,
        }
    }

    /// BROKER_HEARTBEAT to every controller (each keeps its own table), concurrently, each with
    /// its own deadline; returns how many took it and whether the leader confirmed it (see
    /// [`ControllerClient::heartbeat_ack`]).
    pub async fn heartbeat_all(
        &self,
        heartbeat: &Heartbeat,
        deadline: Duration,
    ) -> HeartbeatOutcome {
        let calls = self
            .controllers
            .iter()
            .map(|addr| self.heartbeat_one(addr, heartbeat, deadline));
        let mut out = HeartbeatOutcome::default();
        for ack in futures::future::join_all(calls).await.into_iter().flatten() {
            out.delivered += 1;
            out.leader_confirmed |= ack.leader_confirmed;
            out.lease_confirmed |= ack.lease_confirmed;
            if let Some(t) = ack.controller_timeout_ms {
                out.controller_timeout_ms =
                    Some(out.controller_timeout_ms.map_or(t, |o: u64| o.min(t)));
            }
        }
        out
    }

    /// BROKER_HEARTBEAT to one controller, answered within `deadline` or failed.
    pub async fn heartbeat_one(
        &self,
        addr: &str,
        heartbeat: &Heartbeat,
        deadline: Duration,
    ) -> Result<HeartbeatAck, ControllerCallError> {
        let r = self.client.heartbeat_ack(addr, heartbeat, deadline).await;
        if let Err(e) = &r {
            tracing::debug!(%addr, error = %e, "heartbeat not delivered");
        }
        r
    }

    /// Runs a call against the controllers until one answers (see `first_answer`).
    pub async fn any<T, F, Fut>(&self, call: F) -> Result<T, LinkError>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, ControllerCallError>>,
    {
        self.first_answer(call).await
    }

    /// The controller client.
    pub fn client(&self) -> &ControllerClient {
        &self.client
    }
}
