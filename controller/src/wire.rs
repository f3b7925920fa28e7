//! The controller's Remoting protocol: request headers and bodies to [`ControllerRequest`]s and
//! responses back, with the field names of RocketMQ 5's `*RequestHeader` / `*ResponseHeader`
//! classes and JSON bodies (`SyncStateSet`, `ElectMasterResponseBody`, `BrokerReplicasInfo`).

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;

use rocketraft_remoting::request_code as rc;
use rocketraft_remoting::response_code;
use rocketraft_remoting::BoxFuture;
use rocketraft_remoting::RemotingCommand;
use rocketraft_remoting::RequestContext;
use rocketraft_remoting::RequestProcessor;
use serde::Deserialize;
use serde::Serialize;

use crate::handler::AlterSyncStateSetRequest;
use crate::handler::ApplyBrokerIdRequest;
use crate::handler::CleanBrokerDataRequest;
use crate::handler::ControllerRequest;
use crate::handler::ControllerResponse;
use crate::handler::ElectMasterRequest;
use crate::handler::GetNextBrokerIdRequest;
use crate::handler::GetReplicaInfoRequest;
use crate::handler::GetSyncStateDataRequest;
use crate::handler::RegisterBrokerRequest;
use crate::handler::ReplicaIdentity;
use crate::heartbeat::Heartbeat;
use crate::liveness::BrokerLiveInfo;
use crate::service::Controller;
use crate::state::BrokerSet;
use rocketraft_remoting::Refusal;

/// `SyncStateSet` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncStateSetBody {
    pub sync_state_set: BTreeSet<i64>,
    pub sync_state_set_epoch: i32,
}

/// `BrokerMemberGroup` (inside `ElectMasterResponseBody`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerMemberGroup {
    pub cluster: String,
    pub broker_name: String,
    pub broker_addrs: BTreeMap<i64, String>,
}

/// `ElectMasterResponseBody`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ElectMasterResponseBody {
    pub broker_member_group: Option<BrokerMemberGroup>,
    pub sync_state_set: BTreeSet<i64>,
}

/// `BrokerReplicasInfo.ReplicaIdentity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireReplicaIdentity {
    pub broker_name: String,
    pub broker_id: i64,
    pub broker_address: String,
    pub alive: bool,
    /// Rocketraft extension: see `handler::ReplicaIdentity::heard_recently`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heard_recently: Option<bool>,
    /// Rocketraft extension: see `handler::ReplicaIdentity::name_servers_reached`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_servers_reached: Option<u32>,
    /// Rocketraft extension (`inSyncReplicasUnreachable`): see
    /// `handler::ReplicaIdentity::in_sync_unreachable`.
    #[serde(
        default,
        rename = "inSyncReplicasUnreachable",
        skip_serializing_if = "Option::is_none"
    )]
    pub in_sync_unreachable: Option<bool>,
}

/// `BrokerReplicasInfo.ReplicasInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireReplicasInfo {
    pub master_broker_id: Option<i64>,
    pub master_address: Option<String>,
    pub master_epoch: i32,
    pub sync_state_set_epoch: i32,
    pub in_sync_replicas: Vec<WireReplicaIdentity>,
    pub not_in_sync_replicas: Vec<WireReplicaIdentity>,
}

/// `BrokerReplicasInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerReplicasInfo {
    pub replicas_info_table: BTreeMap<String, WireReplicasInfo>,
}

fn identity(r: &ReplicaIdentity) -> WireReplicaIdentity {
    WireReplicaIdentity {
        broker_name: r.broker_name.clone(),
        broker_id: r.broker_id,
        broker_address: r.address.clone(),
        alive: r.alive,
        heard_recently: r.heard_recently,
        name_servers_reached: r.name_servers_reached,
        in_sync_unreachable: r.in_sync_unreachable,
    }
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

fn invalid(e: impl std::fmt::Display) -> Refusal {
    Refusal::new(response_code::CONTROLLER_INVALID_REQUEST, e.to_string())
}

fn required(cmd: &RemotingCommand, key: &str) -> Result<String, Refusal> {
    match cmd.ext(key) {
        Some(v) if !v.is_empty() => Ok(v.to_string()),
        _ => Err(invalid(format!(
            "the request header field {key} is required"
        ))),
    }
}

fn parse<T: std::str::FromStr>(cmd: &RemotingCommand, key: &str) -> Result<T, Refusal> {
    let text = required(cmd, key)?;
    text.parse().map_err(|_| {
        invalid(format!(
            "the request header field {key} is not a number: {text:?}"
        ))
    })
}

fn parse_opt<T: std::str::FromStr>(cmd: &RemotingCommand, key: &str) -> Result<Option<T>, Refusal> {
    match cmd.ext(key) {
        None | Some("") | Some("null") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            invalid(format!(
                "the request header field {key} is not a number: {text:?}"
            ))
        }),
    }
}

fn parse_bool(cmd: &RemotingCommand, key: &str) -> bool {
    cmd.ext(key).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn body_json<T: serde::de::DeserializeOwned>(
    cmd: &RemotingCommand,
    what: &str,
) -> Result<T, Refusal> {
    if cmd.body.is_empty() {
        return Err(invalid(format!("the request body ({what}) is missing")));
    }
    serde_json::from_slice(&cmd.body)
        .map_err(|e| invalid(format!("the request body is not a {what}: {e}")))
}

/// Decodes a state-changing or read-only controller request.
pub fn decode_request(cmd: &RemotingCommand) -> Result<ControllerRequest, Refusal> {
    Ok(match cmd.code {
        rc::CONTROLLER_GET_NEXT_BROKER_ID => {
            ControllerRequest::GetNextBrokerId(GetNextBrokerIdRequest {
                cluster: required(cmd, "clusterName")?,
                broker_name: required(cmd, "brokerName")?,
            })
        }
        rc::CONTROLLER_APPLY_BROKER_ID => ControllerRequest::ApplyBrokerId(ApplyBrokerIdRequest {
            cluster: required(cmd, "clusterName")?,
            broker_name: required(cmd, "brokerName")?,
            applied_broker_id: parse(cmd, "appliedBrokerId")?,
            register_check_code: required(cmd, "registerCheckCode")?,
        }),
        rc::CONTROLLER_REGISTER_BROKER => {
            ControllerRequest::RegisterBroker(RegisterBrokerRequest {
                cluster: required(cmd, "clusterName")?,
                broker_name: required(cmd, "brokerName")?,
                broker_id: parse(cmd, "brokerId")?,
                broker_address: required(cmd, "brokerAddress")?,
            })
        }
        rc::CONTROLLER_ELECT_MASTER => ControllerRequest::ElectMaster(ElectMasterRequest {
            cluster: cmd.ext("clusterName").unwrap_or_default().to_string(),
            broker_name: required(cmd, "brokerName")?,
            // -1 is Java's "no broker" (a controller-triggered election).
            broker_id: parse_opt::<i64>(cmd, "brokerId")?.filter(|id| *id >= 0),
            designate_elect: parse_bool(cmd, "designateElect"),
            depose_epoch: None,
        }),
        rc::CONTROLLER_ALTER_SYNC_STATE_SET => {
            let body: SyncStateSetBody = body_json(cmd, "SyncStateSet")?;
            ControllerRequest::AlterSyncStateSet(AlterSyncStateSetRequest {
                broker_name: required(cmd, "brokerName")?,
                master_broker_id: parse(cmd, "masterBrokerId")?,
                master_epoch: parse(cmd, "masterEpoch")?,
                new_sync_state_set: body.sync_state_set,
                sync_state_set_epoch: body.sync_state_set_epoch,
                fence: cmd.ext("fence") == Some("true"),
            })
        }
        rc::CONTROLLER_GET_REPLICA_INFO => {
            ControllerRequest::GetReplicaInfo(GetReplicaInfoRequest {
                broker_name: required(cmd, "brokerName")?,
            })
        }
        rc::CONTROLLER_GET_SYNC_STATE_DATA => {
            let broker_names: Vec<String> = body_json(cmd, "JSON list of broker names")?;
            ControllerRequest::GetSyncStateData(GetSyncStateDataRequest { broker_names })
        }
        rc::CLEAN_BROKER_DATA => ControllerRequest::CleanBrokerData(CleanBrokerDataRequest {
            cluster: cmd.ext("clusterName").unwrap_or_default().to_string(),
            broker_name: required(cmd, "brokerName")?,
            broker_controller_ids_to_clean: cmd
                .ext("brokerControllerIdsToClean")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            clean_living_broker: parse_bool(cmd, "isCleanLivingBroker"),
        }),
        other => {
            return Err(Refusal::new(
                response_code::REQUEST_CODE_NOT_SUPPORTED,
                format!("request code {other} is not a controller request"),
            ))
        }
    })
}

fn set_master(out: &mut RemotingCommand, id: Option<i64>, addr: Option<&str>) {
    if let Some(id) = id {
        out.set_ext("masterBrokerId", id);
    }
    if let Some(addr) = addr {
        out.set_ext("masterAddress", addr);
    }
}

/// Encodes a handler's answer as the Remoting response to `req`.
pub fn encode_response(req: &RemotingCommand, response: &ControllerResponse) -> RemotingCommand {
    let code = response.code();
    let mut out = req.response_to(code, None);
    match response {
        ControllerResponse::GetNextBrokerId(r) => {
            out.set_ext("clusterName", &r.cluster);
            out.set_ext("brokerName", &r.broker_name);
            out.set_ext("nextBrokerId", r.next_broker_id);
        }
        ControllerResponse::ApplyBrokerId(r) => {
            out.set_ext("clusterName", &r.cluster);
            out.set_ext("brokerName", &r.broker_name);
        }
        ControllerResponse::RegisterBroker(r) => {
            out.set_ext("clusterName", &r.cluster);
            out.set_ext("brokerName", &r.broker_name);
            set_master(&mut out, r.master_broker_id, r.master_address.as_deref());
            if let Some(epoch) = r.master_epoch {
                out.set_ext("masterEpoch", epoch);
            }
            out.set_ext("syncStateSetEpoch", r.sync_state_set_epoch);
            out = out.with_body(json(&SyncStateSetBody {
                sync_state_set: r.sync_state_set.clone(),
                sync_state_set_epoch: r.sync_state_set_epoch,
            }));
        }
        ControllerResponse::ElectMaster(r) => {
            set_master(&mut out, r.master_broker_id, r.master_address.as_deref());
            out.set_ext("masterEpoch", r.master_epoch);
            out.set_ext("syncStateSetEpoch", r.sync_state_set_epoch);
            out = out.with_body(json(&ElectMasterResponseBody {
                broker_member_group: None,
                sync_state_set: r.sync_state_set.clone(),
            }));
        }
        ControllerResponse::AlterSyncStateSet(r) => {
            out.set_ext("newSyncStateSetEpoch", r.new_sync_state_set_epoch);
            out = out.with_body(json(&SyncStateSetBody {
                sync_state_set: r.new_sync_state_set.clone(),
                sync_state_set_epoch: r.new_sync_state_set_epoch,
            }));
        }
        ControllerResponse::GetReplicaInfo(r) => {
            set_master(&mut out, r.master_broker_id, r.master_address.as_deref());
            out.set_ext("masterEpoch", r.master_epoch);
            out = out.with_body(json(&SyncStateSetBody {
                sync_state_set: r.sync_state_set.clone(),
                sync_state_set_epoch: r.sync_state_set_epoch,
            }));
        }
        ControllerResponse::GetSyncStateData(r) => {
            let table = r
                .replicas_info_table
                .iter()
                .map(|(name, info)| {
                    (
                        name.clone(),
                        WireReplicasInfo {
                            master_broker_id: info.master_broker_id,
                            master_address: info.master_address.clone(),
                            master_epoch: info.master_epoch,
                            sync_state_set_epoch: info.sync_state_set_epoch,
                            in_sync_replicas: info.in_sync_replicas.iter().map(identity).collect(),
                            not_in_sync_replicas: info
                                .not_in_sync_replicas
                                .iter()
                                .map(identity)
                                .collect(),
                        },
                    )
                })
                .collect();
            out = out.with_body(json(&BrokerReplicasInfo {
                replicas_info_table: table,
            }));
        }
        ControllerResponse::CleanBrokerData(_) => {}
    }
    out
}

/// `NOTIFY_BROKER_ROLE_CHANGED` for a broker set's current master.
pub fn notify_broker_role_changed(set: &BrokerSet) -> RemotingCommand {
    let sync = &set.sync_state_info;
    let mut cmd = RemotingCommand::request(rc::NOTIFY_BROKER_ROLE_CHANGED);
    if let Some(id) = sync.master_broker_id {
        cmd.set_ext("masterBrokerId", id);
        if let Some(addr) = set.replica_info.address_of(id) {
            cmd.set_ext("masterAddress", addr);
        }
    }
    cmd.set_ext("masterEpoch", sync.master_epoch);
    cmd.set_ext("syncStateSetEpoch", sync.sync_state_set_epoch);
    cmd.with_body(json(&SyncStateSetBody {
        sync_state_set: sync.sync_state_set.clone(),
        sync_state_set_epoch: sync.sync_state_set_epoch,
    }))
}

pub(crate) fn decode_heartbeat(cmd: &RemotingCommand) -> Result<Heartbeat, Refusal> {
    Ok(Heartbeat {
        cluster: cmd.ext("clusterName").unwrap_or_default().to_string(),
        broker_name: required(cmd, "brokerName")?,
        broker_id: parse(cmd, "brokerId")?,
        broker_addr: required(cmd, "brokerAddr")?,
        timeout_ms: parse_opt::<u64>(cmd, "heartbeatTimeoutMills")?.unwrap_or(0),
        info: BrokerLiveInfo {
            epoch: parse_opt(cmd, "epoch")?.unwrap_or(0),
            max_offset: parse_opt(cmd, "maxOffset")?.unwrap_or(0),
            confirm_offset: parse_opt(cmd, "confirmOffset")?.unwrap_or(0),
            election_priority: parse_opt(cmd, "electionPriority")?.unwrap_or(i32::MAX),
            name_servers_reached: parse_opt(cmd, "nameServersReached")?,
            master_link_fresh: parse_opt(cmd, "masterLinkFresh")?,
            in_sync_unreachable: parse_opt(cmd, "inSyncReplicasUnreachable")?,
            all_ack_in_sync_state_set: parse_opt(cmd, "allAckInSyncStateSet")?,
            heard_recently: None,
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Fuzzing
// ---------------------------------------------------------------------------------------------

/// Every header field the controller codes read (requests and `BROKER_HEARTBEAT`).
const FUZZ_FIELDS: &[&str] = &[
    "clusterName",
    "brokerName",
    "brokerId",
    "appliedBrokerId",
    "registerCheckCode",
    "brokerAddress",
    "designateElect",
    "masterBrokerId",
    "masterEpoch",
    "fence",
    "brokerControllerIdsToClean",
    "isCleanLivingBroker",
    "brokerAddr",
    "heartbeatTimeoutMills",
    "epoch",
    "maxOffset",
    "confirmOffset",
    "electionPriority",
    "nameServersReached",
    "masterLinkFresh",
    "inSyncReplicasUnreachable",
    "allAckInSyncStateSet",
];

/// The codes [`decode_request`] and the heartbeat decoder serve.
const FUZZ_CODES: &[i32] = &[
    rc::CONTROLLER_GET_NEXT_BROKER_ID,
    rc::CONTROLLER_APPLY_BROKER_ID,
    rc::CONTROLLER_REGISTER_BROKER,
    rc::CONTROLLER_ELECT_MASTER,
    rc::CONTROLLER_ALTER_SYNC_STATE_SET,
    rc::CONTROLLER_GET_REPLICA_INFO,
    rc::CONTROLLER_GET_SYNC_STATE_DATA,
    rc::CLEAN_BROKER_DATA,
    rc::BROKER_HEARTBEAT,
];

/// Decodes every controller request type from arbitrary bytes (the fuzz target
/// `controller_request` in `controller/fuzz` and a property test): `data` as the body, as the
/// values of every header field (one line each, cycling), and as a whole Remoting frame. Nothing
/// may panic; a decoded request goes through the pure state machine ([`crate::handle`]) on a
/// state that accumulates the events of the ones accepted, which must keep its invariants, and
/// its response is encoded. The JSON bodies brokers decode from the controller must parse back
/// to what they serialize to.
pub fn fuzz_controller_request(data: &[u8]) {
    fuzz_requests(data);
    fuzz_json_roundtrip::<SyncStateSetBody>(data);
    fuzz_json_roundtrip::<ElectMasterResponseBody>(data);
    fuzz_json_roundtrip::<BrokerReplicasInfo>(data);
}

/// The request part of [`fuzz_controller_request`]; returns the state the accepted requests
/// built.
fn fuzz_requests(data: &[u8]) -> crate::ControllerState {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.split('\n').collect();
    let bare = RemotingCommand::request(0).with_body(data.to_vec());
    let mut with_fields = bare.clone();
    for (i, key) in FUZZ_FIELDS.iter().enumerate() {
        with_fields.set_ext(*key, lines[i % lines.len()]);
    }
    let mut framed = bytes::BytesMut::from(data);
    let framed = rocketraft_remoting::decode(&mut framed).ok().flatten();
    let arbitrary_code = data
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, i32::from_be_bytes);
    let mut state = crate::ControllerState::default();
    for code in FUZZ_CODES.iter().copied().chain([arbitrary_code]) {
        for base in [&bare, &with_fields].into_iter().chain(framed.as_ref()) {
            let mut cmd = base.clone();
            cmd.code = code;
            fuzz_one(&mut state, &cmd);
        }
    }
    state
}

fn fuzz_one(state: &mut crate::ControllerState, cmd: &RemotingCommand) {
    if cmd.code == rc::BROKER_HEARTBEAT {
        if let Ok(heartbeat) = decode_heartbeat(cmd) {
            assert!(!heartbeat.broker_name.is_empty() && !heartbeat.broker_addr.is_empty());
        }
        return;
    }
    let request = match decode_request(cmd) {
        Ok(request) => request,
        Err(refusal) => {
            assert_ne!(refusal.code, response_code::SUCCESS);
            return;
        }
    };
    let alive = crate::AliveBrokers::default();
    let policy = crate::DefaultElectPolicy::default();
    match crate::handle(state, &request, &alive, &policy) {
        Ok((response, events)) => {
            crate::apply_all(state, &events);
            if let Err(broken) = state.check_invariants() {
                panic!("{request:?} broke the controller state: {broken}");
            }
            let _ = encode_response(cmd, &response);
        }
        Err(refusal) => assert_ne!(refusal.code, response_code::SUCCESS),
    }
}

fn fuzz_json_roundtrip<T>(data: &[u8])
where
    T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = serde_json::from_slice::<T>(data) {
        let again: T = serde_json::from_slice(&json(&value)).expect("our own JSON parses");
        assert_eq!(again, value);
    }
}

/// The Remoting processor for the controller codes.
pub struct ControllerProcessor {
    controller: Arc<Controller>,
}

impl ControllerProcessor {
    pub fn new(controller: Arc<Controller>) -> Self {
        ControllerProcessor { controller }
    }

    async fn process_request(&self, cmd: &RemotingCommand) -> Result<RemotingCommand, Refusal> {
        let c = &self.controller;
        match cmd.code {
            // Recorded in this node's table; `leaderConfirmed` and why a master may renew its
            // lease on it: `service::answer_heartbeat`.
            rc::BROKER_HEARTBEAT => crate::service::answer_heartbeat(
                &c.heartbeats,
                cmd,
                c.config.heartbeat_timeout_ms,
                rocketraft_common::time::mono_ms(),
                || c.quorum_fresh(),
                |hb| c.lease_confirmed(hb),
            ),
            rc::GET_CONTROLLER_CONFIG => {
                let text = crate::runtime_config::config_text(&c.config, &c.live)?;
                Ok(cmd
                    .response_to(response_code::SUCCESS, None)
                    .with_body(text.into_bytes()))
            }
            rc::UPDATE_CONTROLLER_CONFIG => {
                crate::runtime_config::update(&c.live, &cmd.body)?;
                Ok(cmd.response_to(response_code::SUCCESS, None))
            }
            rc::CONTROLLER_GET_METADATA_INFO => {
                let status = c.node.status();
                let mut out = cmd.response_to(response_code::SUCCESS, None);
                out.set_ext("group", &c.config.raft.cluster_name);
                let leader_remoting = match status.leader {
                    Some(l) if l == status.id => Some(c.remoting_addr()),
                    Some(l) => c.config.remoting_peers.get(&l).cloned(),
                    None => None,
                };
                if let Some(l) = status.leader {
                    out.set_ext("controllerLeaderId", format!("n{l}"));
                    // Every node forwards, so this node is a valid entry point if the leader's
                    // Remoting address is not configured.
                    out.set_ext(
                        "controllerLeaderAddress",
                        leader_remoting.unwrap_or_else(|| c.remoting_addr()),
                    );
                }
                out.set_ext("isLeader", status.leader == Some(status.id));
                let peers: Vec<String> = status
                    .voters
                    .keys()
                    .map(|id| {
                        let addr = if *id == status.id {
                            c.remoting_addr()
                        } else {
                            c.config
                                .remoting_peers
                                .get(id)
                                .cloned()
                                .unwrap_or_else(|| status.voters[id].clone())
                        };
                        format!("n{id}:{addr};")
                    })
                    .collect();
                out.set_ext("peers", peers.concat());
                out.set_ext("controllerType", "Raft");
                // Beyond Java's header: term, members and indexes for `admin controller status`.
                Ok(out.with_body(json(&c.status().await)))
            }
            _ => {
                let (result, group) = match crate::service::route(cmd)? {
                    crate::service::Route::ReadLocal(request) => {
                        (c.read_local(request).await, None)
                    }
                    crate::service::Route::Read(request) => (c.read(request).await, None),
                    crate::service::Route::Write(request) => c.execute_elect_aware(request).await,
                };
                let result = result?;
                let mut out = encode_response(cmd, &result);
                if let (ControllerResponse::ElectMaster(r), Some(group)) = (&result, group) {
                    // The new master's set, for the broker's BrokerMemberGroup.
                    out = out.with_body(json(&ElectMasterResponseBody {
                        broker_member_group: Some(group),
                        sync_state_set: r.sync_state_set.clone(),
                    }));
                }
                Ok(out)
            }
        }
    }
}

impl RequestProcessor for ControllerProcessor {
    fn process(
        &self,
        _ctx: RequestContext,
        request: RemotingCommand,
    ) -> BoxFuture<Option<RemotingCommand>> {
        let this = ControllerProcessor {
            controller: self.controller.clone(),
        };
        Box::pin(async move {
            let started = std::time::Instant::now();
            let response = match this.process_request(&request).await {
                Ok(r) => r,
                Err(e) => request.response_to(e.code, Some(e.remark)),
            };
            this.controller
                .count_request(request.code, response.code, started.elapsed());
            Some(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Lines that often parse: small numbers, names, booleans, JSON lists.
    fn line() -> impl Strategy<Value = String> {
        prop_oneof![
            "-?[0-9]{1,3}",
            "[a-c]{1,2}",
            Just("true".to_string()),
            Just(String::new()),
            Just("null".to_string()),
            "\\[(-?[0-9]{1,2},?){0,3}\\]",
            any::<String>(),
        ]
    }

    #[test]
    fn plausible_fields_reach_the_state_machine() {
        // Fields for GET_NEXT_BROKER_ID, APPLY and REGISTER: cluster c, set b, id 1.
        let lines = [
            "c",
            "b",
            "1",
            "1",
            "code",
            "127.0.0.1:1",
            "false",
            "1",
            "1",
            "false",
            "",
            "false",
            "127.0.0.1:1",
            "1000",
            "0",
            "0",
            "0",
            "1",
            "1",
            "true",
            "false",
        ];
        let data = lines.join("\n");
        let cmd = {
            let mut cmd = RemotingCommand::request(rc::CONTROLLER_APPLY_BROKER_ID);
            for (key, value) in FUZZ_FIELDS.iter().zip(lines) {
                cmd.set_ext(*key, value);
            }
            cmd
        };
        match decode_request(&cmd) {
            Ok(ControllerRequest::ApplyBrokerId(r)) => {
                assert_eq!((r.cluster.as_str(), r.broker_name.as_str()), ("c", "b"));
                assert_eq!(r.applied_broker_id, 1);
            }
            other => panic!("{other:?}"),
        }
        let state = fuzz_requests(data.as_bytes());
        let set = state.broker_set("b").expect("broker id 1 applied in set b");
        assert!(set.replica_info.contains(1), "{set:?}");
        fuzz_controller_request(data.as_bytes());
    }

    #[test]
    fn bodies_that_are_not_json_are_refused_as_invalid() {
        let cmd = RemotingCommand::request(rc::CONTROLLER_GET_SYNC_STATE_DATA).with_body("[1,");
        let refusal = decode_request(&cmd).expect_err("not JSON");
        assert_eq!(refusal.code, response_code::CONTROLLER_INVALID_REQUEST);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn fuzz_entry_survives_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            fuzz_controller_request(&data);
        }

        #[test]
        fn fuzz_entry_survives_plausible_fields(lines in proptest::collection::vec(line(), 1..24)) {
            fuzz_controller_request(lines.join("\n").as_bytes());
        }
    }
}
