//! A typed Remoting client for the controller protocol (what a broker in controller mode, the
//! admin tool and the tests speak).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rocketraft_remoting::request_code as rc;
use rocketraft_remoting::response_code;
use rocketraft_remoting::Refusal;
use rocketraft_remoting::RemotingClient;
use rocketraft_remoting::RemotingCommand;

use crate::heartbeat::Heartbeat;
use crate::service::ControllerStatus;
use crate::wire::BrokerReplicasInfo;
use crate::wire::SyncStateSetBody;

/// Why a controller call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControllerCallError {
    /// The controller answered with a non-success code.
    #[error("controller answered {}: {}", .0.code, .0.remark)]
    Refused(Refusal),
    /// No answer (connection refused, timeout): the outcome of a write is unknown.
    #[error("no answer from the controller: {0}")]
    Transport(String),
    /// The answer could not be decoded.
    #[error("undecodable controller answer: {0}")]
    Decode(String),
}

impl ControllerCallError {
    /// The Remoting code of a remote rejection.
    pub fn code(&self) -> Option<i32> {
        match self {
            ControllerCallError::Refused(r) => Some(r.code),
            _ => None,
        }
    }
}

/// The master of a broker set as a controller reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterInfo {
    /// SUCCESS, or CONTROLLER_MASTER_STILL_EXIST / CONTROLLER_MASTER_NOT_AVAILABLE for elections.
    pub code: i32,
    pub master_broker_id: Option<i64>,
    pub master_address: Option<String>,
    pub master_epoch: i32,
    pub sync_state_set_epoch: i32,
    pub sync_state_set: BTreeSet<i64>,
}

/// What `CONTROLLER_GET_METADATA_INFO` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub group: String,
    pub leader_id: Option<String>,
    pub leader_address: Option<String>,
    pub is_leader: bool,
    pub peers: String,
    /// Rocketraft's extension: the node's Raft status.
    pub status: Option<ControllerStatus>,
}

/// What a controller answered to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatAck {
    /// The answering node is the Raft leader, recorded the heartbeat, and a quorum
    /// acknowledged its term recently (Rocketraft's `leaderConfirmed`).
    pub leader_confirmed: bool,
    /// Besides, the leader's settled state names this broker its set's master at the epoch
    /// the heartbeat reported (Rocketraft's `leaseConfirmed`): what renews a master's lease
    /// (`service::answer_heartbeat`).
    pub lease_confirmed: bool,
    /// The controller's `heartbeatTimeoutMills` (Rocketraft's `controllerHeartbeatTimeoutMills`;
    /// absent from other controllers).
    pub controller_timeout_ms: Option<u64>,
}

/// Escapes a key or value for properties text (`Properties.store`'s escapes), so that what an
/// operator types is one entry, whatever it holds.
fn escape_property(text: &str, out: &mut String) {
    for (i, c) in text.chars().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '=' | ':' | '#' | '!' => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == 0 => out.push_str("\\ "),
            c => out.push(c),
        }
    }
}

/// What [`ControllerTransport::invoke`] returns: the response whatever its code, or why none
/// came (connection refused, timeout, ...).
pub type TransportFuture<'a> =
    Pin<Box<dyn Future<Output = Result<RemotingCommand, String>> + Send + 'a>>;

/// How a [`ControllerClient`] reaches a controller: one request, one response, within a
/// deadline. Production uses the Remoting client ([`RemotingClient`], TCP); the deterministic
/// simulation (`rocketraft-sim`) its simulated network, answered by the simulated controller
/// nodes. Everything above it (the typed calls, their encoding and decoding, the broker's
/// `ControllerLink` and `ReplicaManager`) is the same code in both.
pub trait ControllerTransport: Send + Sync {
    /// Sends `request` to the controller at `addr` and waits at most `timeout` for its answer.
    fn invoke<'a>(
        &'a self,
        addr: &'a str,
        request: RemotingCommand,
        timeout: Duration,
    ) -> TransportFuture<'a>;
}

impl ControllerTransport for RemotingClient {
    fn invoke<'a>(
        &'a self,
        addr: &'a str,
        request: RemotingCommand,
        timeout: Duration,
    ) -> TransportFuture<'a> {
        Box::pin(async move {
            RemotingClient::invoke(self, addr, request, timeout)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Typed controller calls over a [`ControllerTransport`] (the [`RemotingClient`] in production).
#[derive(Clone)]
pub struct ControllerClient {
    transport: Arc<dyn ControllerTransport>,
    timeout: Duration,
}

fn opt_i64(cmd: &RemotingCommand, key: &str) -> Option<i64> {
    cmd.ext(key).and_then(|v| v.parse().ok())
}

fn i32_or_zero(cmd: &RemotingCommand, key: &str) -> i32 {
    cmd.ext(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

impl ControllerClient {
    pub fn new(remoting: RemotingClient, timeout: Duration) -> Self {
        ControllerClient::with_transport(Arc::new(remoting), timeout)
    }

    /// A client over another transport (the simulation's network).
    pub fn with_transport(transport: Arc<dyn ControllerTransport>, timeout: Duration) -> Self {
        ControllerClient { transport, timeout }
    }

    /// Sends `request` and returns the response whatever its code.
    pub async fn call(
        &self,
        addr: &str,
        request: RemotingCommand,
    ) -> Result<RemotingCommand, ControllerCallError> {
        self.call_within(addr, request, self.timeout).await
    }

    async fn call_within(
        &self,
        addr: &str,
        request: RemotingCommand,
        timeout: Duration,
    ) -> Result<RemotingCommand, ControllerCallError> {
        self.transport
            .invoke(addr, request, timeout)
            .await
            .map_err(ControllerCallError::Transport)
    }

    async fn call_ok(
        &self,
        addr: &str,
        request: RemotingCommand,
        also_ok: &[i32],
    ) -> Result<RemotingCommand, ControllerCallError> {
        self.call_ok_within(addr, request, also_ok, self.timeout)
            .await
    }

    /// [`ControllerClient::call_ok`] with its own deadline.
    async fn call_ok_within(
        &self,
        addr: &str,
        request: RemotingCommand,
        also_ok: &[i32],
        timeout: Duration,
    ) -> Result<RemotingCommand, ControllerCallError> {
        let response = self.call_within(addr, request, timeout).await?;
        if response.code == response_code::SUCCESS || also_ok.contains(&response.code) {
            Ok(response)
        } else {
            Err(ControllerCallError::Refused(Refusal::new(
                response.code,
                response.remark.unwrap_or_default(),
            )))
        }
    }

    fn master_info(response: &RemotingCommand) -> Result<MasterInfo, ControllerCallError> {
        /// `SyncStateSet`, or `ElectMasterResponseBody` (which carries no epoch).
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct SetBody {
            #[serde(default)]
            sync_state_set: BTreeSet<i64>,
            sync_state_set_epoch: Option<i32>,
        }
        let body: Option<SetBody> = if response.body.is_empty() {
            None
        } else {
            Some(
                serde_json::from_slice(&response.body)
                    .map_err(|e| ControllerCallError::Decode(format!("SyncStateSet body: {e}")))?,
            )
        };
        Ok(MasterInfo {
            code: response.code,
            master_broker_id: opt_i64(response, "masterBrokerId"),
            master_address: response.ext("masterAddress").map(str::to_string),
            master_epoch: i32_or_zero(response, "masterEpoch"),
            sync_state_set_epoch: response
                .ext("syncStateSetEpoch")
                .and_then(|v| v.parse().ok())
                .or(body.as_ref().and_then(|b| b.sync_state_set_epoch))
                .unwrap_or(0),
            sync_state_set: body.map(|b| b.sync_state_set).unwrap_or_default(),
        })
    }

    /// CONTROLLER_GET_NEXT_BROKER_ID (1012).
    pub async fn get_next_broker_id(
        &self,
        addr: &str,
        cluster: &str,
        broker_name: &str,
    ) -> Result<i64, ControllerCallError> {
        let request = RemotingCommand::request(rc::CONTROLLER_GET_NEXT_BROKER_ID)
            .with_ext("clusterName", cluster)
            .with_ext("brokerName", broker_name);
        let response = self.call_ok(addr, request, &[]).await?;
        opt_i64(&response, "nextBrokerId")
            .ok_or_else(|| ControllerCallError::Decode("no nextBrokerId".into()))
    }

    /// CONTROLLER_APPLY_BROKER_ID (1013).
    pub async fn apply_broker_id(
        &self,
        addr: &str,
        cluster: &str,
        broker_name: &str,
        broker_id: i64,
        register_check_code: &str,
    ) -> Result<(), ControllerCallError> {
        let request = RemotingCommand::request(rc::CONTROLLER_APPLY_BROKER_ID)
            .with_ext("clusterName", cluster)
            .with_ext("brokerName", broker_name)
            .with_ext("appliedBrokerId", broker_id)
            .with_ext("registerCheckCode", register_check_code);
        self.call_ok(addr, request, &[]).await.map(|_| ())
    }

    /// CONTROLLER_REGISTER_BROKER (1003).
    pub async fn register_broker(
        &self,
        addr: &str,
        cluster: &str,
        broker_name: &str,
        broker_id: i64,
        broker_address: &str,
    ) -> Result<MasterInfo, ControllerCallError> {
        let request = RemotingCommand::request(rc::CONTROLLER_REGISTER_BROKER)
            .with_ext("clusterName", cluster)
            .with_ext("brokerName", broker_name)
            .with_ext("brokerId", broker_id)
            .with_ext("brokerAddress", broker_address);
        let response = self.call_ok(addr, request, &[]).await?;
        Self::master_info(&response)
    }

    /// BROKER_HEARTBEAT (904). Returns whether the answering node is the leader and confirmed
    /// it with a quorum (Rocketraft's `leaderConfirmed`; false from other controllers).
    pub async fn heartbeat(&self, addr: &str, hb: &Heartbeat) -> Result<bool, ControllerCallError> {
        self.heartbeat_ack(addr, hb, self.timeout)
            .await
            .map(|a| a.leader_confirmed)
    }

    /// BROKER_HEARTBEAT (904) with its own deadline, and everything the answer says: whether
    /// the leader confirmed it with a quorum, and the controller's own heartbeat timeout (a
    /// master's role lease must be shorter than what the controllers wait, see
    /// `docs/safety.md`).
    pub async fn heartbeat_ack(
        &self,
        addr: &str,
        hb: &Heartbeat,
        timeout: Duration,
    ) -> Result<HeartbeatAck, ControllerCallError> {
        let request = RemotingCommand::request(rc::BROKER_HEARTBEAT)
            .with_ext("clusterName", &hb.cluster)
            .with_ext("brokerName", &hb.broker_name)
            .with_ext("brokerId", hb.broker_id)
            .with_ext("brokerAddr", &hb.broker_addr)
            .with_ext("heartbeatTimeoutMills", hb.timeout_ms)
            .with_ext("epoch", hb.info.epoch)
            .with_ext("maxOffset", hb.info.max_offset)
            .with_ext("confirmOffset", hb.info.confirm_offset)
            .with_ext("electionPriority", hb.info.election_priority);
        let request = match hb.info.name_servers_reached {
            // Rocketraft extension: see `BrokerLiveInfo::name_servers_reached`.
            Some(n) => request.with_ext("nameServersReached", n),
            None => request,
        };
        let request = match hb.info.master_link_fresh {
            // Rocketraft extension: see `BrokerLiveInfo::master_link_fresh`.
            Some(fresh) => request.with_ext("masterLinkFresh", fresh),
            None => request,
        };
        let request = match hb.info.in_sync_unreachable {
            // Rocketraft extension: see `BrokerLiveInfo::in_sync_unreachable`.
            Some(unreachable) => request.with_ext("inSyncReplicasUnreachable", unreachable),
            None => request,
        };
        let request = match hb.info.all_ack_in_sync_state_set {
            // Rocketraft extension: see `BrokerLiveInfo::all_ack_in_sync_state_set`.
            Some(all_ack) => request.with_ext("allAckInSyncStateSet", all_ack),
            None => request,
        };
        let response = self.call_ok_within(addr, request, &[], timeout).await?;
        Ok(HeartbeatAck {
            leader_confirmed: response.ext("leaderConfirmed") == Some("true"),
            lease_confirmed: response.ext("leaseConfirmed") == Some("true"),
            controller_timeout_ms: response
                .ext("controllerHeartbeatTimeoutMills")
                .and_then(|v| v.parse().ok()),
        })
    }

    /// CONTROLLER_ELECT_MASTER (1002). `MASTER_STILL_EXIST` and `MASTER_NOT_AVAILABLE` are
    /// answers (in [`MasterInfo::code`]), not errors.
    pub async fn elect_master(
        &self,
        addr: &str,
        cluster: &str,
        broker_name: &str,
        broker_id: Option<i64>,
        designate_elect: bool,
    ) -> Result<MasterInfo, ControllerCallError> {
        let mut request = RemotingCommand::request(rc::CONTROLLER_ELECT_MASTER)
            .with_ext("clusterName", cluster)
            .with_ext("brokerName", broker_name)
            .with_ext("designateElect", designate_elect)
            .with_ext("invokeTime", rocketraft_common::time::now_ms());
        if let Some(id) = broker_id {
            request.set_ext("brokerId", id);
        }
        let response = self
            .call_ok(
                addr,
                request,
                &[
                    response_code::CONTROLLER_MASTER_STILL_EXIST,
                    response_code::CONTROLLER_MASTER_NOT_AVAILABLE,
                ],
            )
            .await?;
        Self::master_info(&response)
    }

    /// CONTROLLER_ALTER_SYNC_STATE_SET (1001): returns the new SyncStateSet epoch and set.
    pub async fn alter_sync_state_set(
        &self,
        addr: &str,
        broker_name: &str,
        master_broker_id: i64,
        master_epoch: i32,
        new_set: &BTreeSet<i64>,
        sync_state_set_epoch: i32,
    ) -> Result<(i32, BTreeSet<i64>), ControllerCallError> {
        self.alter_sync_state_set_fenced(
            addr,
            broker_name,
            master_broker_id,
            master_epoch,
            new_set,
            sync_state_set_epoch,
            false,
        )
        .await
    }

    /// CONTROLLER_ALTER_SYNC_STATE_SET (1001), optionally as a fence (Rocketraft's `fence`
    /// extension: a set equal to the current one only raises the epoch).
    #[allow(clippy::too_many_arguments)]
    pub async fn alter_sync_state_set_fenced(
        &self,
        addr: &str,
        broker_name: &str,
        master_broker_id: i64,
        master_epoch: i32,
        new_set: &BTreeSet<i64>,
        sync_state_set_epoch: i32,
        fence: bool,
    ) -> Result<(i32, BTreeSet<i64>), ControllerCallError> {
        let body = serde_json::to_vec(&SyncStateSetBody {
            sync_state_set: new_set.clone(),
            sync_state_set_epoch,
        })
        .map_err(|e| ControllerCallError::Decode(e.to_string()))?;
        let request = RemotingCommand::request(rc::CONTROLLER_ALTER_SYNC_STATE_SET)
            .with_ext("brokerName", broker_name)
            .with_ext("masterBrokerId", master_broker_id)
            .with_ext("masterEpoch", master_epoch)
            .with_ext("invokeTime", rocketraft_common::time::now_ms())
            .with_body(body);
        let request = if fence {
            request.with_ext("fence", true)
        } else {
            request
        };
        let response = self.call_ok(addr, request, &[]).await?;
        let set: SyncStateSetBody = serde_json::from_slice(&response.body)
            .map_err(|e| ControllerCallError::Decode(format!("SyncStateSet body: {e}")))?;
        Ok((
            response
                .ext("newSyncStateSetEpoch")
                .and_then(|v| v.parse().ok())
                .unwrap_or(set.sync_state_set_epoch),
            set.sync_state_set,
        ))
    }

    /// CONTROLLER_GET_REPLICA_INFO (1004).
    pub async fn get_replica_info(
        &self,
        addr: &str,
        broker_name: &str,
    ) -> Result<MasterInfo, ControllerCallError> {
        let request = RemotingCommand::request(rc::CONTROLLER_GET_REPLICA_INFO)
            .with_ext("brokerName", broker_name);
        let response = self.call_ok(addr, request, &[]).await?;
        Self::master_info(&response)
    }

    /// CONTROLLER_GET_REPLICA_INFO answered from `addr`'s own applied state, leader or not
    /// (Rocketraft extension `readLocal`), within `timeout`.
    pub async fn get_replica_info_local(
        &self,
        addr: &str,
        broker_name: &str,
        timeout: Duration,
    ) -> Result<MasterInfo, ControllerCallError> {
        let request = RemotingCommand::request(rc::CONTROLLER_GET_REPLICA_INFO)
            .with_ext("brokerName", broker_name)
            .with_ext("readLocal", "true");
        let response = self.call_ok_within(addr, request, &[], timeout).await?;
        Self::master_info(&response)
    }

    /// CONTROLLER_GET_SYNC_STATE_DATA (1006).
    pub async fn get_sync_state_data(
        &self,
        addr: &str,
        broker_names: &[&str],
    ) -> Result<BrokerReplicasInfo, ControllerCallError> {
        let body = serde_json::to_vec(broker_names)
            .map_err(|e| ControllerCallError::Decode(e.to_string()))?;
        let request = RemotingCommand::request(rc::CONTROLLER_GET_SYNC_STATE_DATA).with_body(body);
        let response = self.call_ok(addr, request, &[]).await?;
        serde_json::from_slice(&response.body)
            .map_err(|e| ControllerCallError::Decode(format!("BrokerReplicasInfo: {e}")))
    }

    /// CONTROLLER_GET_SYNC_STATE_DATA with Rocketraft's `readLocal=true`: the sets as the
    /// controller at `addr` has applied them, with liveness from its own heartbeat table (what
    /// that controller hears), within `timeout`.
    pub async fn get_sync_state_data_local(
        &self,
        addr: &str,
        broker_names: &[&str],
        timeout: Duration,
    ) -> Result<BrokerReplicasInfo, ControllerCallError> {
        let body = serde_json::to_vec(broker_names)
            .map_err(|e| ControllerCallError::Decode(e.to_string()))?;
        let request = RemotingCommand::request(rc::CONTROLLER_GET_SYNC_STATE_DATA)
            .with_ext("readLocal", "true")
            .with_body(body);
        let response = self.call_ok_within(addr, request, &[], timeout).await?;
        serde_json::from_slice(&response.body)
            .map_err(|e| ControllerCallError::Decode(format!("BrokerReplicasInfo: {e}")))
    }

    /// CLEAN_BROKER_DATA (1011).
    pub async fn clean_broker_data(
        &self,
        addr: &str,
        cluster: &str,
        broker_name: &str,
        ids: Option<&str>,
        clean_living_broker: bool,
    ) -> Result<(), ControllerCallError> {
        let mut request = RemotingCommand::request(rc::CLEAN_BROKER_DATA)
            .with_ext("clusterName", cluster)
            .with_ext("brokerName", broker_name)
            .with_ext("isCleanLivingBroker", clean_living_broker)
            .with_ext("invokeTime", rocketraft_common::time::now_ms());
        if let Some(ids) = ids {
            request.set_ext("brokerControllerIdsToClean", ids);
        }
        self.call_ok(addr, request, &[]).await.map(|_| ())
    }

    /// GET_CONTROLLER_CONFIG (1010): the controller's configuration as `key=value` pairs.
    pub async fn get_config(
        &self,
        addr: &str,
    ) -> Result<BTreeMap<String, String>, ControllerCallError> {
        let request = RemotingCommand::request(rc::GET_CONTROLLER_CONFIG);
        let response = self.call_ok(addr, request, &[]).await?;
        let text = std::str::from_utf8(&response.body)
            .map_err(|_| ControllerCallError::Decode("the config is not UTF-8".into()))?;
        let props = rocketraft_common::properties::Properties::parse(text)
            .map_err(|e| ControllerCallError::Decode(format!("the config: {e}")))?;
        Ok(props
            .entries()
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect())
    }

    /// UPDATE_CONTROLLER_CONFIG (1009) with `entries` as properties text.
    pub async fn update_config(
        &self,
        addr: &str,
        entries: &[(&str, &str)],
    ) -> Result<(), ControllerCallError> {
        let mut body = String::new();
        for (key, value) in entries {
            escape_property(key, &mut body);
            body.push('=');
            escape_property(value, &mut body);
            body.push('\n');
        }
        let request =
            RemotingCommand::request(rc::UPDATE_CONTROLLER_CONFIG).with_body(body.into_bytes());
        self.call_ok(addr, request, &[]).await.map(|_| ())
    }

    /// CONTROLLER_GET_METADATA_INFO (1005).
    pub async fn metadata(&self, addr: &str) -> Result<Metadata, ControllerCallError> {
        let request = RemotingCommand::request(rc::CONTROLLER_GET_METADATA_INFO);
        let response = self.call_ok(addr, request, &[]).await?;
        Ok(Metadata {
            group: response.ext("group").unwrap_or_default().to_string(),
            leader_id: response.ext("controllerLeaderId").map(str::to_string),
            leader_address: response.ext("controllerLeaderAddress").map(str::to_string),
            is_leader: response.ext("isLeader") == Some("true"),
            peers: response.ext("peers").unwrap_or_default().to_string(),
            status: serde_json::from_slice(&response.body).ok(),
        })
    }
}
