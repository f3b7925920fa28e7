//! Pure request handlers: `(state, request, liveness) -> (response, events)` or a rejection.
//!
//! Each mirrors the `ReplicasInfoManager` method of the same name (RocketMQ 5.3). A handler never
//! mutates the state: the caller replicates the returned events and applies them with
//! [`crate::event::apply`]. A rejection ([`Refusal`]) carries no events, so it never changes
//! the state.
//!
//! `ELECT_MASTER` has two outcomes that travel with a non-zero code yet are not plain rejections:
//! `CONTROLLER_MASTER_STILL_EXIST` (the broker needs the master's identity in the reply) and
//! `CONTROLLER_MASTER_NOT_AVAILABLE` (controller-triggered; it still emits an event that clears the
//! master). They are `Ok` results; [`ElectMasterResponse::code`] gives the wire code.

use std::collections::{BTreeMap, BTreeSet};

use rocketraft_remoting::{response_code, Refusal};
use serde::{Deserialize, Serialize};

use crate::elect::DefaultElectPolicy;
use crate::event::Event;
use crate::liveness::BrokerLiveness;
use crate::state::{ControllerState, FIRST_BROKER_CONTROLLER_ID};

/// A rejection is a [`Refusal`]: the Remoting response code and remark. Rejections never carry
/// events.
/// A handler's answer: the response and the events to replicate (possibly none).
pub type HandlerResult<R> = Result<(R, Vec<Event>), Refusal>;

// ---------------------------------------------------------------------------------------------
// GET_NEXT_BROKER_ID (1012)

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetNextBrokerIdRequest {
    pub cluster: String,
    pub broker_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetNextBrokerIdResponse {
    pub cluster: String,
    pub broker_name: String,
    pub next_broker_id: i64,
}

pub fn get_next_broker_id(
    state: &ControllerState,
    request: &GetNextBrokerIdRequest,
) -> HandlerResult<GetNextBrokerIdResponse> {
    let next_broker_id = state
        .broker_set(&request.broker_name)
        .map_or(FIRST_BROKER_CONTROLLER_ID, |set| {
            set.replica_info.next_assign_broker_id
        });
    Ok((
        GetNextBrokerIdResponse {
            cluster: request.cluster.clone(),
            broker_name: request.broker_name.clone(),
            next_broker_id,
        },
        Vec::new(),
    ))
}

// ---------------------------------------------------------------------------------------------
// APPLY_BROKER_ID (1013)

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyBrokerIdRequest {
    pub cluster: String,
    pub broker_name: String,
    pub applied_broker_id: i64,
    /// `"address;timestamp"`; the part before the first `;` is the broker's address.
    pub register_check_code: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyBrokerIdResponse {
    pub cluster: String,
    pub broker_name: String,
}

/// Grants `applied_broker_id` if the set is unknown and the id is 1, or the set is known and the id is
/// unused or was granted before with the same check code (the same broker retrying).
/// Ids below 1 are always refused (Java would accept 0 in a known set; 0 means "master" to a broker).
pub fn apply_broker_id(
    state: &ControllerState,
    request: &ApplyBrokerIdRequest,
) -> HandlerResult<ApplyBrokerIdResponse> {
    let id = request.applied_broker_id;
    let broker_name = &request.broker_name;
    let granted = if id < FIRST_BROKER_CONTROLLER_ID {
        false
    } else {
        match state.broker_set(broker_name) {
            None => id == FIRST_BROKER_CONTROLLER_ID,
            Some(set) => match set.replica_info.broker_id_info.get(&id) {
                None => true,
                Some(identity) => identity.register_check_code == request.register_check_code,
            },
        }
    };
    if !granted {
        let remark = if state.broker_set(broker_name).is_none() {
            format!("broker set {broker_name} is not registered yet; only broker id {FIRST_BROKER_CONTROLLER_ID} can be applied, not {id}")
        } else {
            format!("cannot apply broker id {id} in broker set {broker_name}")
        };
        return Err(Refusal::new(
            response_code::CONTROLLER_BROKER_ID_INVALID,
            remark,
        ));
    }
    let address = request
        .register_check_code
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    Ok((
        ApplyBrokerIdResponse {
            cluster: request.cluster.clone(),
            broker_name: broker_name.clone(),
        },
        vec![Event::ApplyBrokerId {
            cluster: request.cluster.clone(),
            broker_name: broker_name.clone(),
            broker_id: id,
            address,
            register_check_code: request.register_check_code.clone(),
        }],
    ))
}

// ---------------------------------------------------------------------------------------------
// CONTROLLER_REGISTER_BROKER (1003)

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterBrokerRequest {
    pub cluster: String,
    pub broker_name: String,
    pub broker_id: i64,
    pub broker_address: String,
}

/// The master fields are set only when the master exists and is alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterBrokerResponse {
    pub cluster: String,
    pub broker_name: String,
    pub master_broker_id: Option<i64>,
    pub master_address: Option<String>,
    pub master_epoch: Option<i32>,
    pub sync_state_set_epoch: i32,
    pub sync_state_set: BTreeSet<i64>,
}

/// A broker that holds an id reports for duty. An unknown set or id gets
/// `CONTROLLER_BROKER_NEED_TO_BE_REGISTERED` (apply for an id first); a known id on a new address
/// is accepted and emits `UpdateBrokerAddress`, as Java does.
pub fn register_broker(
    state: &ControllerState,
    request: &RegisterBrokerRequest,
    liveness: &dyn BrokerLiveness,
) -> HandlerResult<RegisterBrokerResponse> {
    let broker_name = &request.broker_name;
    let Some(set) = state.broker_set(broker_name) else {
        return Err(Refusal::new(
            response_code::CONTROLLER_BROKER_NEED_TO_BE_REGISTERED,
            format!("broker set {broker_name} has not been registered in the controller"),
        ));
    };
    let Some(known_address) = set.replica_info.address_of(request.broker_id) else {
        return Err(Refusal::new(
            response_code::CONTROLLER_BROKER_NEED_TO_BE_REGISTERED,
            format!(
                "broker id {} has not been registered in broker set {broker_name}",
                request.broker_id
            ),
        ));
    };
    let sync = &set.sync_state_info;
    let alive_master = sync
        .master_broker_id
        .filter(|master| liveness.is_alive(broker_name, *master));
    let mut events = Vec::new();
    if known_address != request.broker_address {
        events.push(Event::UpdateBrokerAddress {
            broker_name: broker_name.clone(),
            broker_id: request.broker_id,
            address: request.broker_address.clone(),
        });
    }
    Ok((
        RegisterBrokerResponse {
            cluster: request.cluster.clone(),
            broker_name: broker_name.clone(),
            master_broker_id: alive_master,
            master_address: alive_master
                .and_then(|master| set.replica_info.address_of(master))
                .map(str::to_string),
            master_epoch: alive_master.map(|_| sync.master_epoch),
            sync_state_set_epoch: sync.sync_state_set_epoch,
            sync_state_set: sync.sync_state_set.clone(),
        },
        events,
    ))
}

// ---------------------------------------------------------------------------------------------
// CONTROLLER_ELECT_MASTER (1002)

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectMasterRequest {
    pub cluster: String,
    pub broker_name: String,
    /// The requesting (or designated) broker; `None` when the controller itself triggers the
    /// election because the master's heartbeat timed out.
    pub broker_id: Option<i64>,
    /// An admin asks for `broker_id` to become master.
    pub designate_elect: bool,
    /// Rocketraft (controller-triggered only, never on the wire): depose the master of this
    /// master epoch. It still heartbeats but reports that it cannot gather
    /// `minInSyncReplicas` (`BrokerLiveInfo::in_sync_unreachable`); another live member of
    /// the SyncStateSet replaces it, chosen by the clean election order. The old master is
    /// never re-elected by such a request, and nothing changes when the epoch moved or no
    /// other member qualifies (docs/safety.md, "Deposing a master that cannot acknowledge").
    #[serde(default)]
    pub depose_epoch: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectOutcome {
    /// A new master; code `SUCCESS`.
    Elected,
    /// The old master is alive and stays; code `CONTROLLER_MASTER_STILL_EXIST`, no events.
    MasterStillExist,
    /// Controller-triggered, nobody to elect: the master is cleared; code
    /// `CONTROLLER_MASTER_NOT_AVAILABLE`, one `ElectMaster { new_master: None }` event.
    MasterNotAvailable,
}

/// The master as it will be once the returned events are applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectMasterResponse {
    pub outcome: ElectOutcome,
    pub master_broker_id: Option<i64>,
    pub master_address: Option<String>,
    pub master_epoch: i32,
    pub sync_state_set_epoch: i32,
    pub sync_state_set: BTreeSet<i64>,
}

impl ElectMasterResponse {
    /// The Remoting response code for this outcome.
    pub fn code(&self) -> i32 {
        match self.outcome {
            ElectOutcome::Elected => response_code::SUCCESS,
            ElectOutcome::MasterStillExist => response_code::CONTROLLER_MASTER_STILL_EXIST,
            ElectOutcome::MasterNotAvailable => response_code::CONTROLLER_MASTER_NOT_AVAILABLE,
        }
    }
}

/// Elects a master. The first requester of a set that never had a master wins outright; otherwise
/// [`DefaultElectPolicy`] decides. A broker-requested election that finds nobody is rejected with
/// `CONTROLLER_ELECT_MASTER_FAILED`. Unlike Java, a requester whose id is not registered in the set is
/// rejected with `CONTROLLER_BROKER_NEED_TO_BE_REGISTERED` (it could otherwise become an unknown master).
/// A designated election away from a live master that counts acks (it reports
/// `allAckInSyncStateSet=false`) is rejected with `CONTROLLER_ELECT_MASTER_FAILED`: that master
/// keeps acknowledging, until it learns of the election, writes that `inSyncReplicas` replicas
/// other than the designated one hold, and the new master's log lacks them (docs/safety.md,
/// Claim 2).
pub fn elect_master(
    state: &ControllerState,
    request: &ElectMasterRequest,
    liveness: &dyn BrokerLiveness,
    policy: &DefaultElectPolicy,
) -> HandlerResult<ElectMasterResponse> {
    let broker_name = &request.broker_name;
    let Some(set) = state.broker_set(broker_name) else {
        return Err(Refusal::new(
            response_code::CONTROLLER_BROKER_NEED_TO_BE_REGISTERED,
            format!("broker set {broker_name} has not been registered in the controller"),
        ));
    };
    if let Some(id) = request.broker_id {
        if !set.replica_info.contains(id) {
            return Err(Refusal::new(
                response_code::CONTROLLER_BROKER_NEED_TO_BE_REGISTERED,
                format!("broker id {id} has not been registered in broker set {broker_name}"),
            ));
        }
    }
    let sync = &set.sync_state_info;
    let old_master = sync.master_broker_id;

    if let Some(epoch) = request.depose_epoch {
        return Ok(depose_master(set, epoch, liveness, policy));
    }
    if let (Some(old), Some(wanted)) = (old_master, request.broker_id) {
        let counts_acks = liveness
            .live_info(broker_name, old)
            .is_some_and(|i| i.all_ack_in_sync_state_set == Some(false));
        if request.designate_elect && wanted != old && counts_acks {
            return Err(Refusal::new(
                response_code::CONTROLLER_ELECT_MASTER_FAILED,
                format!(
                    "broker set {broker_name}: master {old} is alive and acknowledges when inSyncReplicas replicas hold a write (allAckInSyncStateSet=false), so it may acknowledge writes broker {wanted} lacks until it learns of the election; stop broker {old} first (the controllers replace it once its heartbeat times out), or run the set with allAckInSyncStateSet=true"
                ),
            ));
        }
    }
    let first_requester = request.broker_id.filter(|_| sync.is_first_time_for_elect());
    let new_master = first_requester.or_else(|| {
        let all_replicas: BTreeSet<i64> = set.replica_info.broker_id_info.keys().copied().collect();
        let designated = request.broker_id.filter(|_| request.designate_elect);
        policy.elect(
            broker_name,
            &sync.sync_state_set,
            &all_replicas,
            old_master,
            designated,
            liveness,
        )
    });

    match new_master {
        Some(master) if Some(master) == old_master => Ok((master_stays(set), Vec::new())),
        Some(master) => {
            tracing::info!(broker_name, master, "elected new master");
            Ok(elected(set, master))
        }
        None if request.broker_id.is_none() => Ok((
            ElectMasterResponse {
                outcome: ElectOutcome::MasterNotAvailable,
                master_broker_id: None,
                master_address: None,
                master_epoch: sync.master_epoch + 1,
                sync_state_set_epoch: sync.sync_state_set_epoch,
                sync_state_set: sync.sync_state_set.clone(),
            },
            vec![Event::ElectMaster {
                broker_name: broker_name.clone(),
                new_master: None,
            }],
        )),
        None => Err(Refusal::new(
            response_code::CONTROLLER_ELECT_MASTER_FAILED,
            format!("failed to elect a new master for broker set {broker_name}"),
        )),
    }
}

/// The answer when the set's master stays (`CONTROLLER_MASTER_STILL_EXIST`, no events).
fn master_stays(set: &crate::state::BrokerSet) -> ElectMasterResponse {
    let GetReplicaInfoResponse {
        master_broker_id,
        master_address,
        master_epoch,
        sync_state_set_epoch,
        sync_state_set,
    } = GetReplicaInfoResponse::of(set);
    ElectMasterResponse {
        outcome: ElectOutcome::MasterStillExist,
        master_broker_id,
        master_address,
        master_epoch,
        sync_state_set_epoch,
        sync_state_set,
    }
}

/// `master` becomes the set's master in the next master epoch, alone in a new SyncStateSet.
fn elected(set: &crate::state::BrokerSet, master: i64) -> (ElectMasterResponse, Vec<Event>) {
    let sync = &set.sync_state_info;
    (
        ElectMasterResponse {
            outcome: ElectOutcome::Elected,
            master_broker_id: Some(master),
            master_address: set.replica_info.address_of(master).map(str::to_string),
            master_epoch: sync.master_epoch + 1,
            sync_state_set_epoch: sync.sync_state_set_epoch + 1,
            sync_state_set: BTreeSet::from([master]),
        },
        vec![Event::ElectMaster {
            broker_name: set.replica_info.broker_name.clone(),
            new_master: Some(master),
        }],
    )
}

/// Deposes the master of `epoch` if another live SyncStateSet member can replace it (see
/// [`ElectMasterRequest::depose_epoch`]); otherwise the master stays and nothing changes.
fn depose_master(
    set: &crate::state::BrokerSet,
    epoch: i32,
    liveness: &dyn BrokerLiveness,
    policy: &DefaultElectPolicy,
) -> (ElectMasterResponse, Vec<Event>) {
    let sync = &set.sync_state_info;
    let broker_name = &set.replica_info.broker_name;
    let replacement = sync
        .master_broker_id
        .filter(|_| sync.master_epoch == epoch)
        .and_then(|old| policy.elect_replacement(broker_name, &sync.sync_state_set, old, liveness));
    let Some(master) = replacement else {
        return (master_stays(set), Vec::new());
    };
    tracing::warn!(
        broker_name = %broker_name,
        old_master = ?sync.master_broker_id,
        master,
        "deposed a master that cannot gather minInSyncReplicas; elected a new one"
    );
    elected(set, master)
}

// ---------------------------------------------------------------------------------------------
// CONTROLLER_ALTER_SYNC_STATE_SET (1001)

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterSyncStateSetRequest {
    pub broker_name: String,
    pub master_broker_id: i64,
    pub master_epoch: i32,
    /// The proposed set and the epoch of the set it was derived from.
    pub new_sync_state_set: BTreeSet<i64>,
    pub sync_state_set_epoch: i32,
    /// Rocketraft extension (`fence=true`): a proposal equal to the current set is accepted and
    /// only raises the SyncStateSet epoch. A master whose earlier change has an unknown outcome
    /// sends one, so that no late copy of that change (still in some leader's log or on the
    /// wire) can apply afterwards: once the epoch moved, every proposal derived from the old
    /// epoch is refused.
    #[serde(default)]
    pub fence: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterSyncStateSetResponse {
    pub new_sync_state_set_epoch: i32,
    pub new_sync_state_set: BTreeSet<i64>,
}

/// The master proposes a new SyncStateSet. Checks run in Java's order: unknown set (2013), set
/// unchanged (2013), not the master (2002), master epoch (2000), SSS epoch (2001), each member
/// registered (2003), master kept in the set (2013); no liveness check of the members.
pub fn alter_sync_state_set(
    state: &ControllerState,
    request: &AlterSyncStateSetRequest,
) -> HandlerResult<AlterSyncStateSetResponse> {
    let broker_name = &request.broker_name;
    let reject = |code: i32, remark: String| Err(Refusal::new(code, remark));
    let Some(set) = state.broker_set(broker_name) else {
        return reject(
            response_code::CONTROLLER_ALTER_SYNC_STATE_SET_FAILED,
            format!("broker set {broker_name} does not exist"),
        );
    };
    let sync = &set.sync_state_info;
    let new_set = &request.new_sync_state_set;
    // Checked before everything else, as RocketMQ does; a fence passes on to the epoch checks.
    if *new_set == sync.sync_state_set && !request.fence {
        return reject(
            response_code::CONTROLLER_ALTER_SYNC_STATE_SET_FAILED,
            "the new SyncStateSet equals the current one".to_string(),
        );
    }
    if sync.master_broker_id != Some(request.master_broker_id) {
        return reject(
            response_code::CONTROLLER_INVALID_MASTER,
            format!(
                "the current master is {:?}, not {}",
                sync.master_broker_id, request.master_broker_id
            ),
        );
    }
    if request.master_epoch != sync.master_epoch {
        return reject(
            response_code::CONTROLLER_FENCED_MASTER_EPOCH,
            format!(
                "the current master epoch is {}, not {}",
                sync.master_epoch, request.master_epoch
            ),
        );
    }
    if request.sync_state_set_epoch != sync.sync_state_set_epoch {
        return reject(
            response_code::CONTROLLER_FENCED_SYNC_STATE_SET_EPOCH,
            format!(
                "the current SyncStateSet epoch is {}, not {}",
                sync.sync_state_set_epoch, request.sync_state_set_epoch
            ),
        );
    }
    // A fence (an unchanged set; only `fence` gets this far) has nobody joining: it skips the
    // member checks and only raises the epoch.
    if *new_set != sync.sync_state_set {
        for replica in new_set {
            if !set.replica_info.contains(*replica) {
                return reject(
                    response_code::CONTROLLER_INVALID_REPLICAS,
                    format!("replica {replica} is not registered in broker set {broker_name}"),
                );
            }
            // No member must be heard by this leader (Java checks that every member is
            // alive). The master vouches for the members it adds: it replicates to them and
            // saw them catch up. A member that stays already holds every acknowledged message.
            // A member this leader cannot hear is simply no candidate in its elections. A
            // partition that cuts slaves from the leader but not from the master (which the
            // leader hears) would otherwise keep them out of the set and stall every
            // acknowledgement until it heals.
        }
        if !new_set.contains(&request.master_broker_id) {
            return reject(
                response_code::CONTROLLER_ALTER_SYNC_STATE_SET_FAILED,
                format!(
                    "the new SyncStateSet lacks the master {}",
                    request.master_broker_id
                ),
            );
        }
    }
    Ok((
        AlterSyncStateSetResponse {
            new_sync_state_set_epoch: sync.sync_state_set_epoch + 1,
            new_sync_state_set: new_set.clone(),
        },
        vec![Event::AlterSyncStateSet {
            broker_name: broker_name.clone(),
            new_sync_state_set: new_set.clone(),
        }],
    ))
}

// ---------------------------------------------------------------------------------------------
// CONTROLLER_GET_REPLICA_INFO (1004)

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetReplicaInfoRequest {
    pub broker_name: String,
}

/// The master as recorded, alive or not (as in Java).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetReplicaInfoResponse {
    pub master_broker_id: Option<i64>,
    pub master_address: Option<String>,
    pub master_epoch: i32,
    pub sync_state_set_epoch: i32,
    pub sync_state_set: BTreeSet<i64>,
}

pub fn get_replica_info(
    state: &ControllerState,
    request: &GetReplicaInfoRequest,
) -> HandlerResult<GetReplicaInfoResponse> {
    let Some(set) = state.broker_set(&request.broker_name) else {
        return Err(Refusal::new(
            response_code::CONTROLLER_BROKER_METADATA_NOT_EXIST,
            format!("broker set {} does not exist", request.broker_name),
        ));
    };
    Ok((GetReplicaInfoResponse::of(set), Vec::new()))
}

impl GetReplicaInfoResponse {
    /// The set's master and SyncStateSet as recorded, the master alive or not.
    pub fn of(set: &crate::state::BrokerSet) -> Self {
        let sync = &set.sync_state_info;
        GetReplicaInfoResponse {
            master_broker_id: sync.master_broker_id,
            master_address: set.master_address(),
            master_epoch: sync.master_epoch,
            sync_state_set_epoch: sync.sync_state_set_epoch,
            sync_state_set: sync.sync_state_set.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CONTROLLER_GET_SYNC_STATE_DATA (1006)

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetSyncStateDataRequest {
    pub broker_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaIdentity {
    pub broker_name: String,
    pub broker_id: i64,
    pub address: String,
    pub alive: bool,
    /// Rocketraft extension (`heardRecently`): the answering controller heard the broker
    /// within a quarter of its heartbeat timeout (`BrokerLiveInfo::heard_recently`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heard_recently: Option<bool>,
    /// Rocketraft extension (`nameServersReached`): what the broker's last heartbeat to the
    /// answering controller reported (`BrokerLiveInfo::name_servers_reached`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_servers_reached: Option<u32>,
    /// Rocketraft extension (`inSyncReplicasUnreachable`): what the broker's last heartbeat to
    /// the answering controller reported (`BrokerLiveInfo::in_sync_unreachable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_sync_unreachable: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicasInfo {
    pub master_broker_id: Option<i64>,
    pub master_address: Option<String>,
    pub master_epoch: i32,
    pub sync_state_set_epoch: i32,
    pub in_sync_replicas: Vec<ReplicaIdentity>,
    pub not_in_sync_replicas: Vec<ReplicaIdentity>,
}

/// `BrokerReplicasInfo`: one entry per requested broker set that exists; unknown names are skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetSyncStateDataResponse {
    pub replicas_info_table: BTreeMap<String, ReplicasInfo>,
}

pub fn get_sync_state_data(
    state: &ControllerState,
    request: &GetSyncStateDataRequest,
    liveness: &dyn BrokerLiveness,
) -> HandlerResult<GetSyncStateDataResponse> {
    let mut replicas_info_table = BTreeMap::new();
    for broker_name in &request.broker_names {
        let Some(set) = state.broker_set(broker_name) else {
            continue;
        };
        let sync = &set.sync_state_info;
        let (mut in_sync_replicas, mut not_in_sync_replicas) = (Vec::new(), Vec::new());
        for (id, identity) in &set.replica_info.broker_id_info {
            let info = liveness.live_info(broker_name, *id);
            let replica = ReplicaIdentity {
                broker_name: broker_name.clone(),
                broker_id: *id,
                address: identity.address.clone(),
                alive: info.is_some(),
                heard_recently: info.and_then(|i| i.heard_recently),
                name_servers_reached: info.and_then(|i| i.name_servers_reached),
                in_sync_unreachable: info.and_then(|i| i.in_sync_unreachable),
            };
            if sync.sync_state_set.contains(id) {
                in_sync_replicas.push(replica);
            } else {
                not_in_sync_replicas.push(replica);
            }
        }
        replicas_info_table.insert(
            broker_name.clone(),
            ReplicasInfo {
                master_broker_id: sync.master_broker_id,
                master_address: set.master_address(),
                master_epoch: sync.master_epoch,
                sync_state_set_epoch: sync.sync_state_set_epoch,
                in_sync_replicas,
                not_in_sync_replicas,
            },
        );
    }
    Ok((
        GetSyncStateDataResponse {
            replicas_info_table,
        },
        Vec::new(),
    ))
}

// ---------------------------------------------------------------------------------------------
// CLEAN_BROKER_DATA (1011)

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanBrokerDataRequest {
    pub cluster: String,
    pub broker_name: String,
    /// `brokerControllerIdsToClean`: `"1;2;3"`; empty or `None` means the whole broker set.
    pub broker_controller_ids_to_clean: Option<String>,
    /// `isCleanLivingBroker`: skip the liveness checks.
    pub clean_living_broker: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanBrokerDataResponse;

/// Removes a broker set, or some of its ids. Unless `clean_living_broker`, refuses (2009) to drop a
/// whole set that still has a master, or any listed id that is alive.
pub fn clean_broker_data(
    state: &ControllerState,
    request: &CleanBrokerDataRequest,
    liveness: &dyn BrokerLiveness,
) -> HandlerResult<CleanBrokerDataResponse> {
    let broker_name = &request.broker_name;
    let invalid = |remark: String| {
        Err(Refusal::new(
            response_code::CONTROLLER_INVALID_CLEAN_BROKER_METADATA,
            remark,
        ))
    };
    let ids_text = request
        .broker_controller_ids_to_clean
        .as_deref()
        .map(str::trim)
        .filter(|text| !text.is_empty());
    let broker_ids = match ids_text {
        None => None,
        Some(text) => {
            let mut ids = BTreeSet::new();
            for part in text.split(';') {
                match part.trim().parse::<i64>() {
                    Ok(id) => {
                        ids.insert(id);
                    }
                    Err(error) => {
                        return invalid(format!(
                            "brokerControllerIdsToClean must look like \"1;2;3\": {part:?}: {error}"
                        ))
                    }
                }
            }
            Some(ids)
        }
    };
    if !request.clean_living_broker {
        match &broker_ids {
            None => {
                let has_master = state
                    .broker_set(broker_name)
                    .is_some_and(|set| set.sync_state_info.master_broker_id.is_some());
                if has_master {
                    return invalid(format!(
                        "broker set {broker_name} still has a master, clean up refused"
                    ));
                }
            }
            Some(ids) => {
                if let Some(alive) = ids.iter().find(|id| liveness.is_alive(broker_name, **id)) {
                    return invalid(format!(
                        "broker {broker_name} id {alive} is still alive, clean up refused"
                    ));
                }
            }
        }
    }
    if state.broker_set(broker_name).is_none() {
        return invalid(format!("broker set {broker_name} does not exist"));
    }
    Ok((
        CleanBrokerDataResponse,
        vec![Event::CleanBrokerData {
            broker_name: broker_name.clone(),
            broker_ids,
        }],
    ))
}

// ---------------------------------------------------------------------------------------------
// Dispatch

/// Every request the pure state machine answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerRequest {
    GetNextBrokerId(GetNextBrokerIdRequest),
    ApplyBrokerId(ApplyBrokerIdRequest),
    RegisterBroker(RegisterBrokerRequest),
    ElectMaster(ElectMasterRequest),
    AlterSyncStateSet(AlterSyncStateSetRequest),
    GetReplicaInfo(GetReplicaInfoRequest),
    GetSyncStateData(GetSyncStateDataRequest),
    CleanBrokerData(CleanBrokerDataRequest),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerResponse {
    GetNextBrokerId(GetNextBrokerIdResponse),
    ApplyBrokerId(ApplyBrokerIdResponse),
    RegisterBroker(RegisterBrokerResponse),
    ElectMaster(ElectMasterResponse),
    AlterSyncStateSet(AlterSyncStateSetResponse),
    GetReplicaInfo(GetReplicaInfoResponse),
    GetSyncStateData(GetSyncStateDataResponse),
    CleanBrokerData(CleanBrokerDataResponse),
}

impl ControllerResponse {
    /// The Remoting response code of a successful handler result.
    pub fn code(&self) -> i32 {
        match self {
            Self::ElectMaster(response) => response.code(),
            _ => response_code::SUCCESS,
        }
    }
}

/// Routes a request to its handler.
pub fn handle(
    state: &ControllerState,
    request: &ControllerRequest,
    liveness: &dyn BrokerLiveness,
    policy: &DefaultElectPolicy,
) -> HandlerResult<ControllerResponse> {
    fn wrap<R>(
        result: HandlerResult<R>,
        into: impl FnOnce(R) -> ControllerResponse,
    ) -> HandlerResult<ControllerResponse> {
        result.map(|(response, events)| (into(response), events))
    }
    match request {
        ControllerRequest::GetNextBrokerId(r) => wrap(
            get_next_broker_id(state, r),
            ControllerResponse::GetNextBrokerId,
        ),
        ControllerRequest::ApplyBrokerId(r) => {
            wrap(apply_broker_id(state, r), ControllerResponse::ApplyBrokerId)
        }
        ControllerRequest::RegisterBroker(r) => wrap(
            register_broker(state, r, liveness),
            ControllerResponse::RegisterBroker,
        ),
        ControllerRequest::ElectMaster(r) => wrap(
            elect_master(state, r, liveness, policy),
            ControllerResponse::ElectMaster,
        ),
        ControllerRequest::AlterSyncStateSet(r) => wrap(
            alter_sync_state_set(state, r),
            ControllerResponse::AlterSyncStateSet,
        ),
        ControllerRequest::GetReplicaInfo(r) => wrap(
            get_replica_info(state, r),
            ControllerResponse::GetReplicaInfo,
        ),
        ControllerRequest::GetSyncStateData(r) => wrap(
            get_sync_state_data(state, r, liveness),
            ControllerResponse::GetSyncStateData,
        ),
        ControllerRequest::CleanBrokerData(r) => wrap(
            clean_broker_data(state, r, liveness),
            ControllerResponse::CleanBrokerData,
        ),
    }
}
