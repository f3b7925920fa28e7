//! Every handler path and rejection code of the pure controller state machine.

use std::collections::BTreeSet;

use rocketraft_controller::handler::*;
use rocketraft_controller::{
    apply_all, AliveBrokers, BrokerLiveInfo, ControllerState, DefaultElectPolicy, Event,
};
use rocketraft_remoting::response_code as code;

const SET: &str = "broker-a";

fn live(epoch: i32, max_offset: i64, election_priority: i32) -> BrokerLiveInfo {
    BrokerLiveInfo::new(epoch, max_offset, election_priority)
}

fn alive(ids: &[i64]) -> AliveBrokers {
    ids.iter()
        .fold(AliveBrokers::new(), |a, id| a.with(SET, *id, live(0, 0, 0)))
}

fn addr(id: i64) -> String {
    format!("10.0.0.{id}:10911")
}

fn check_code(id: i64) -> String {
    format!("{};{}", addr(id), 1000 + id)
}

/// Runs a handler result: applies its events and returns the response.
fn commit<R>(
    state: &mut ControllerState,
    handler: impl FnOnce(&ControllerState) -> HandlerResult<R>,
) -> R {
    let (response, events) = handler(state).expect("handler accepted");
    apply_all(state, &events);
    state.check_invariants().expect("invariants hold");
    response
}

/// Asserts a rejection with `expected` code (a rejection carries no events by construction).
fn rejected<R: std::fmt::Debug>(result: HandlerResult<R>, expected: i32) {
    match result {
        Err(error) => assert_eq!(error.code, expected, "{error}"),
        Ok(ok) => panic!("expected code {expected}, got {ok:?}"),
    }
}

fn apply_id(state: &mut ControllerState, id: i64) {
    let request = ApplyBrokerIdRequest {
        cluster: "c".into(),
        broker_name: SET.into(),
        applied_broker_id: id,
        register_check_code: check_code(id),
    };
    commit(state, |s| apply_broker_id(s, &request));
}

fn elect(id: Option<i64>, designate: bool) -> ElectMasterRequest {
    ElectMasterRequest {
        cluster: "c".into(),
        broker_name: SET.into(),
        broker_id: id,
        designate_elect: designate,
        depose_epoch: None,
    }
}

/// A set with ids 1..=n and broker 1 elected master (masterEpoch 1, SSS {1}, sssEpoch 1).
fn set_with_master(n: i64) -> ControllerState {
    let mut state = ControllerState::new();
    for id in 1..=n {
        apply_id(&mut state, id);
    }
    let policy = DefaultElectPolicy::default();
    commit(&mut state, |s| {
        elect_master(s, &elect(Some(1), false), &alive(&[1]), &policy)
    });
    state
}

fn alter(state: &ControllerState, master: i64, set: &[i64]) -> AlterSyncStateSetRequest {
    let sync = &state.broker_sets[SET].sync_state_info;
    AlterSyncStateSetRequest {
        broker_name: SET.into(),
        master_broker_id: master,
        master_epoch: sync.master_epoch,
        new_sync_state_set: set.iter().copied().collect(),
        sync_state_set_epoch: sync.sync_state_set_epoch,
        fence: false,
    }
}

fn sync_of(state: &ControllerState) -> &rocketraft_controller::SyncStateInfo {
    &state.broker_sets[SET].sync_state_info
}

// ---- GET_NEXT_BROKER_ID / APPLY_BROKER_ID

#[test]
fn next_broker_id_starts_at_one_and_follows_applied_ids() {
    let mut state = ControllerState::new();
    let request = GetNextBrokerIdRequest {
        cluster: "c".into(),
        broker_name: SET.into(),
    };
    let (response, events) = get_next_broker_id(&state, &request).unwrap();
    assert_eq!(response.next_broker_id, 1);
    assert!(events.is_empty());
    apply_id(&mut state, 1);
    apply_id(&mut state, 2);
    assert_eq!(
        get_next_broker_id(&state, &request)
            .unwrap()
            .0
            .next_broker_id,
        3
    );
}

#[test]
fn apply_broker_id_unknown_set_accepts_only_id_one() {
    let state = ControllerState::new();
    let request = ApplyBrokerIdRequest {
        cluster: "c".into(),
        broker_name: SET.into(),
        applied_broker_id: 2,
        register_check_code: check_code(2),
    };
    rejected(
        apply_broker_id(&state, &request),
        code::CONTROLLER_BROKER_ID_INVALID,
    );
    let (_, events) = apply_broker_id(
        &state,
        &ApplyBrokerIdRequest {
            applied_broker_id: 1,
            register_check_code: check_code(1),
            ..request
        },
    )
    .unwrap();
    assert_eq!(
        events,
        vec![Event::ApplyBrokerId {
            cluster: "c".into(),
            broker_name: SET.into(),
            broker_id: 1,
            address: addr(1),
            register_check_code: check_code(1),
        }]
    );
}

#[test]
fn apply_broker_id_known_set_unused_id_or_same_check_code() {
    let mut state = ControllerState::new();
    apply_id(&mut state, 1);
    // Unused id, even out of order: granted, and next id moves past it.
    apply_id(&mut state, 5);
    assert_eq!(state.broker_sets[SET].replica_info.next_assign_broker_id, 6);
    // Same broker retrying with its check code: granted, nothing changes.
    let before = state.clone();
    apply_id(&mut state, 1);
    assert_eq!(state, before);
    // Another broker wanting a taken id: 2014.
    let request = ApplyBrokerIdRequest {
        cluster: "c".into(),
        broker_name: SET.into(),
        applied_broker_id: 1,
        register_check_code: "10.0.0.9:10911;77".into(),
    };
    rejected(
        apply_broker_id(&state, &request),
        code::CONTROLLER_BROKER_ID_INVALID,
    );
    // Non-positive ids are never granted.
    for id in [0, -1] {
        let request = ApplyBrokerIdRequest {
            applied_broker_id: id,
            ..request.clone()
        };
        rejected(
            apply_broker_id(&state, &request),
            code::CONTROLLER_BROKER_ID_INVALID,
        );
    }
}

// ---- CONTROLLER_REGISTER_BROKER

fn register(id: i64, address: String) -> RegisterBrokerRequest {
    RegisterBrokerRequest {
        cluster: "c".into(),
        broker_name: SET.into(),
        broker_id: id,
        broker_address: address,
    }
}

#[test]
fn register_unknown_set_or_id_needs_registration() {
    let mut state = ControllerState::new();
    rejected(
        register_broker(&state, &register(1, addr(1)), &alive(&[1])),
        code::CONTROLLER_BROKER_NEED_TO_BE_REGISTERED,
    );
    apply_id(&mut state, 1);
    rejected(
        register_broker(&state, &register(2, addr(2)), &alive(&[1])),
        code::CONTROLLER_BROKER_NEED_TO_BE_REGISTERED,
    );
}

#[test]
fn register_returns_master_only_if_alive() {
    let state = set_with_master(2);
    let (response, events) =
        register_broker(&state, &register(2, addr(2)), &alive(&[1, 2])).unwrap();
    assert!(events.is_empty());
    assert_eq!(response.master_broker_id, Some(1));
    assert_eq!(response.master_address, Some(addr(1)));
    assert_eq!(response.master_epoch, Some(1));
    assert_eq!(response.sync_state_set, BTreeSet::from([1]));

    let (response, _) = register_broker(&state, &register(2, addr(2)), &alive(&[2])).unwrap();
    assert_eq!(response.master_broker_id, None);
    assert_eq!(response.master_address, None);
    assert_eq!(response.master_epoch, None);
    assert_eq!(response.sync_state_set_epoch, 1);
}

#[test]
fn register_on_new_address_updates_it() {
    let mut state = set_with_master(2);
    let moved = "10.9.9.9:10911".to_string();
    let response = commit(&mut state, |s| {
        register_broker(s, &register(2, moved.clone()), &alive(&[1, 2]))
    });
    assert_eq!(response.master_broker_id, Some(1));
    let identity = &state.broker_sets[SET].replica_info.broker_id_info[&2];
    assert_eq!(identity.address, moved);
    assert_eq!(identity.register_check_code, check_code(2));
}

// ---- CONTROLLER_ELECT_MASTER

#[test]
fn first_elect_requester_wins() {
    let mut state = ControllerState::new();
    apply_id(&mut state, 1);
    apply_id(&mut state, 2);
    let policy = DefaultElectPolicy::default();
    // Broker 2 has the better heartbeat, but broker 1 asked first.
    let liveness = AliveBrokers::new()
        .with(SET, 1, live(0, 0, 0))
        .with(SET, 2, live(5, 500, 0));
    let response = commit(&mut state, |s| {
        elect_master(s, &elect(Some(1), false), &liveness, &policy)
    });
    assert_eq!(response.outcome, ElectOutcome::Elected);
    assert_eq!(response.code(), code::SUCCESS);
    assert_eq!(response.master_broker_id, Some(1));
    assert_eq!(response.master_address, Some(addr(1)));
    assert_eq!(
        (response.master_epoch, response.sync_state_set_epoch),
        (1, 1)
    );
    let sync = sync_of(&state);
    assert_eq!(sync.master_broker_id, Some(1));
    assert_eq!(sync.sync_state_set, BTreeSet::from([1]));
    assert_eq!((sync.master_epoch, sync.sync_state_set_epoch), (1, 1));
}

#[test]
fn elect_rejects_unknown_set_and_unknown_requester() {
    let policy = DefaultElectPolicy::default();
    let state = ControllerState::new();
    rejected(
        elect_master(&state, &elect(Some(1), false), &alive(&[1]), &policy),
        code::CONTROLLER_BROKER_NEED_TO_BE_REGISTERED,
    );
    let state = set_with_master(1);
    rejected(
        elect_master(&state, &elect(Some(7), false), &alive(&[1, 7]), &policy),
        code::CONTROLLER_BROKER_NEED_TO_BE_REGISTERED,
    );
}

#[test]
fn elect_with_alive_master_is_master_still_exist() {
    let state = set_with_master(2);
    let policy = DefaultElectPolicy::default();
    let (response, events) =
        elect_master(&state, &elect(Some(2), false), &alive(&[1, 2]), &policy).unwrap();
    assert!(events.is_empty());
    assert_eq!(response.outcome, ElectOutcome::MasterStillExist);
    assert_eq!(response.code(), code::CONTROLLER_MASTER_STILL_EXIST);
    assert_eq!(response.master_broker_id, Some(1));
    assert_eq!(response.master_epoch, 1);
}

#[test]
fn broker_requested_elect_without_candidate_fails() {
    let state = set_with_master(2);
    let policy = DefaultElectPolicy::default();
    // Master 1 dead; broker 2 alive but not in the SSS.
    rejected(
        elect_master(&state, &elect(Some(2), false), &alive(&[2]), &policy),
        code::CONTROLLER_ELECT_MASTER_FAILED,
    );
}

#[test]
fn controller_triggered_elect_without_candidate_clears_master_keeps_sss() {
    let mut state = set_with_master(2);
    let policy = DefaultElectPolicy::default();
    let response = commit(&mut state, |s| {
        elect_master(s, &elect(None, false), &alive(&[2]), &policy)
    });
    assert_eq!(response.outcome, ElectOutcome::MasterNotAvailable);
    assert_eq!(response.code(), code::CONTROLLER_MASTER_NOT_AVAILABLE);
    let sync = sync_of(&state);
    assert_eq!(sync.master_broker_id, None);
    assert_eq!(sync.master_epoch, 2);
    assert_eq!(sync.sync_state_set, BTreeSet::from([1]));
    assert_eq!(sync.sync_state_set_epoch, 1);
    // Broker 1 comes back: the controller re-elects it from the kept SSS.
    let response = commit(&mut state, |s| {
        elect_master(s, &elect(None, false), &alive(&[1, 2]), &policy)
    });
    assert_eq!(response.master_broker_id, Some(1));
    assert_eq!(
        (
            sync_of(&state).master_epoch,
            sync_of(&state).sync_state_set_epoch
        ),
        (3, 2)
    );
}

#[test]
fn elect_new_master_from_sss_resets_sss() {
    let mut state = set_with_master(3);
    commit(&mut state, |s| {
        alter_sync_state_set(s, &alter(s, 1, &[1, 2, 3]))
    });
    let policy = DefaultElectPolicy::default();
    let liveness = AliveBrokers::new()
        .with(SET, 2, live(1, 100, 0))
        .with(SET, 3, live(1, 200, 0));
    let response = commit(&mut state, |s| {
        elect_master(s, &elect(None, false), &liveness, &policy)
    });
    assert_eq!(response.master_broker_id, Some(3));
    let sync = sync_of(&state);
    assert_eq!(sync.sync_state_set, BTreeSet::from([3]));
    assert_eq!((sync.master_epoch, sync.sync_state_set_epoch), (2, 3));
}

#[test]
fn designated_elect_replaces_alive_master_only_with_a_candidate() {
    let mut state = set_with_master(3);
    commit(&mut state, |s| {
        alter_sync_state_set(s, &alter(s, 1, &[1, 2]))
    });
    let policy = DefaultElectPolicy::default();
    // 3 is alive but not in the SSS: no clean candidate.
    rejected(
        elect_master(&state, &elect(Some(3), true), &alive(&[1, 2, 3]), &policy),
        code::CONTROLLER_ELECT_MASTER_FAILED,
    );
    // Unclean election allows it.
    let unclean = DefaultElectPolicy::new(true);
    let (response, _) =
        elect_master(&state, &elect(Some(3), true), &alive(&[1, 2, 3]), &unclean).unwrap();
    assert_eq!(response.master_broker_id, Some(3));
    // 2 is in the SSS and alive: it replaces the alive master 1.
    let response = commit(&mut state, |s| {
        elect_master(s, &elect(Some(2), true), &alive(&[1, 2, 3]), &policy)
    });
    assert_eq!(response.outcome, ElectOutcome::Elected);
    assert_eq!(sync_of(&state).master_broker_id, Some(2));
}

/// A master that counts acks (`allAckInSyncStateSet=false`) can acknowledge a write that
/// `inSyncReplicas` replicas other than the designated one hold, until it learns of the
/// election: a transfer away from it while it lives is refused. Once it is dead, or when it
/// acknowledges only with every member (or does not say: Apache RocketMQ's broker), the
/// designated member is elected.
#[test]
fn a_transfer_away_from_a_live_master_that_counts_acks_is_refused() {
    let policy = DefaultElectPolicy::default();
    let mut state = set_with_master(3);
    commit(&mut state, |s| {
        alter_sync_state_set(s, &alter(s, 1, &[1, 2, 3]))
    });
    let with_master = |all_ack: Option<bool>| {
        let master = match all_ack {
            Some(a) => live(1, 0, 0).with_all_ack_in_sync_state_set(a),
            None => live(1, 0, 0),
        };
        AliveBrokers::new()
            .with(SET, 1, master)
            .with(SET, 2, live(1, 0, 0))
            .with(SET, 3, live(1, 0, 0))
    };
    let refusal = elect_master(
        &state,
        &elect(Some(2), true),
        &with_master(Some(false)),
        &policy,
    )
    .expect_err("a transfer away from a live master that counts acks");
    assert_eq!(refusal.code, code::CONTROLLER_ELECT_MASTER_FAILED);
    assert!(
        refusal.remark.contains("allAckInSyncStateSet=false"),
        "{}",
        refusal.remark
    );
    // Not designated: the live master stays, as before.
    let (kept, _) = elect_master(
        &state,
        &elect(Some(2), false),
        &with_master(Some(false)),
        &policy,
    )
    .expect("an undesignated election");
    assert_eq!(kept.outcome, ElectOutcome::MasterStillExist);
    // The master dead: its flag is not known any more, and the designated member is elected.
    let (dead, _) = elect_master(&state, &elect(Some(2), true), &alive(&[2, 3]), &policy)
        .expect("the master is dead");
    assert_eq!(dead.master_broker_id, Some(2));
    // A master that waits for every member, or does not say, can be transferred away from.
    for all_ack in [Some(true), None] {
        let (moved, _) = elect_master(
            &state,
            &elect(Some(2), true),
            &with_master(all_ack),
            &policy,
        )
        .expect("a transfer");
        assert_eq!(moved.master_broker_id, Some(2), "{all_ack:?}");
    }
}

fn depose(epoch: i32) -> ElectMasterRequest {
    ElectMasterRequest {
        depose_epoch: Some(epoch),
        ..elect(None, false)
    }
}

/// Issue 22: a live master that cannot gather minInSyncReplicas is replaced by another live
/// SyncStateSet member (clean order), never by itself, only in the epoch it was asked for, and
/// never by a member that reaches no NameServer.
#[test]
fn a_depose_elects_another_member_of_the_set_and_only_in_its_epoch() {
    let policy = DefaultElectPolicy::default();
    let mut state = set_with_master(3);
    commit(&mut state, |s| {
        alter_sync_state_set(s, &alter(s, 1, &[1, 2, 3]))
    });
    let epoch = sync_of(&state).master_epoch;
    // The old master is alive and the best by the heartbeat order: still not re-elected.
    let all = AliveBrokers::new()
        .with(SET, 1, live(1, 999, 0))
        .with(SET, 2, live(1, 500, 0).with_name_servers_reached(0))
        .with(SET, 3, live(1, 400, 0).with_name_servers_reached(1));
    // A stale epoch changes nothing.
    let (r, events) = elect_master(&state, &depose(epoch - 1), &all, &policy).unwrap();
    assert_eq!(r.outcome, ElectOutcome::MasterStillExist);
    assert!(events.is_empty());
    // Only members reaching no NameServer besides the master: nothing changes.
    let unreachable = AliveBrokers::new().with(SET, 1, live(1, 999, 0)).with(
        SET,
        2,
        live(1, 500, 0).with_name_servers_reached(0),
    );
    let (r, events) = elect_master(&state, &depose(epoch), &unreachable, &policy).unwrap();
    assert_eq!(r.outcome, ElectOutcome::MasterStillExist);
    assert_eq!(r.master_broker_id, Some(1));
    assert!(events.is_empty());
    // 3 reaches the NameServer: it replaces 1, in a new epoch, alone in its set.
    let r = commit(&mut state, |s| {
        elect_master(s, &depose(epoch), &all, &policy)
    });
    assert_eq!(r.outcome, ElectOutcome::Elected);
    assert_eq!(r.master_broker_id, Some(3));
    assert_eq!(sync_of(&state).master_epoch, epoch + 1);
    assert_eq!(sync_of(&state).sync_state_set, BTreeSet::from([3]));
    // A late copy of the same request (the epoch moved) changes nothing.
    let (r, events) = elect_master(&state, &depose(epoch), &all, &policy).unwrap();
    assert_eq!(r.outcome, ElectOutcome::MasterStillExist);
    assert_eq!(r.master_broker_id, Some(3));
    assert!(events.is_empty());
}

/// A depose never elects outside the SyncStateSet, even with unclean election enabled: the
/// old master is alive and may hold acknowledged messages only the set's members have.
#[test]
fn a_depose_is_never_unclean() {
    let policy = DefaultElectPolicy::new(true);
    let state = set_with_master(3);
    let epoch = sync_of(&state).master_epoch;
    let (r, events) = elect_master(&state, &depose(epoch), &alive(&[1, 2, 3]), &policy).unwrap();
    assert_eq!(r.outcome, ElectOutcome::MasterStillExist);
    assert_eq!(r.master_broker_id, Some(1));
    assert!(events.is_empty());
}

// ---- CONTROLLER_ALTER_SYNC_STATE_SET

#[test]
fn alter_sync_state_set_success() {
    let mut state = set_with_master(2);
    let response = commit(&mut state, |s| {
        alter_sync_state_set(s, &alter(s, 1, &[1, 2]))
    });
    assert_eq!(response.new_sync_state_set_epoch, 2);
    assert_eq!(response.new_sync_state_set, BTreeSet::from([1, 2]));
    assert_eq!(sync_of(&state).sync_state_set, BTreeSet::from([1, 2]));
    assert_eq!(sync_of(&state).sync_state_set_epoch, 2);
    assert_eq!(sync_of(&state).master_epoch, 1);
}

/// Issue 22: the leader need not hear the members. A master shrinks its set while a member
/// that stays is cut off from the leader (alive only to the master), and a slave the leader
/// cannot hear joins back (the master vouches for it: it saw it catch up), so neither a shrink
/// nor a growth stalls while a partition cuts slaves from the leader but not from the master.
#[test]
fn alter_sync_state_set_does_not_need_the_leader_to_hear_the_members() {
    let mut state = set_with_master(3);
    commit(&mut state, |s| {
        alter_sync_state_set(s, &alter(s, 1, &[1, 2, 3]))
    });
    // 3 is cut off from the leader; the master drops 2 and keeps 3.
    let response = commit(&mut state, |s| {
        alter_sync_state_set(s, &alter(s, 1, &[1, 3]))
    });
    assert_eq!(response.new_sync_state_set, BTreeSet::from([1, 3]));
    // 2 joins back (the handler takes no liveness view: the master vouches for it).
    let response = commit(&mut state, |s| {
        alter_sync_state_set(s, &alter(s, 1, &[1, 2, 3]))
    });
    assert_eq!(response.new_sync_state_set, BTreeSet::from([1, 2, 3]));
}

#[test]
fn alter_sync_state_set_rejections_in_order() {
    let state = set_with_master(3);
    let good = alter(&state, 1, &[1, 2]);
    let case = |request: AlterSyncStateSetRequest, expected: i32| {
        rejected(alter_sync_state_set(&state, &request), expected)
    };
    case(
        AlterSyncStateSetRequest {
            broker_name: "nope".into(),
            ..good.clone()
        },
        code::CONTROLLER_ALTER_SYNC_STATE_SET_FAILED,
    );
    // Identical set is checked before everything else, even a wrong master and stale epochs.
    case(
        AlterSyncStateSetRequest {
            new_sync_state_set: BTreeSet::from([1]),
            master_broker_id: 2,
            master_epoch: 9,
            ..good.clone()
        },
        code::CONTROLLER_ALTER_SYNC_STATE_SET_FAILED,
    );
    // Wrong master before a stale master epoch.
    case(
        AlterSyncStateSetRequest {
            master_broker_id: 2,
            master_epoch: 9,
            ..good.clone()
        },
        code::CONTROLLER_INVALID_MASTER,
    );
    // Master epoch before sss epoch.
    case(
        AlterSyncStateSetRequest {
            master_epoch: 0,
            sync_state_set_epoch: 9,
            ..good.clone()
        },
        code::CONTROLLER_FENCED_MASTER_EPOCH,
    );
    // Sss epoch before member checks.
    case(
        AlterSyncStateSetRequest {
            sync_state_set_epoch: 0,
            new_sync_state_set: BTreeSet::from([1, 9]),
            ..good.clone()
        },
        code::CONTROLLER_FENCED_SYNC_STATE_SET_EPOCH,
    );
    case(
        AlterSyncStateSetRequest {
            new_sync_state_set: BTreeSet::from([1, 9]),
            ..good.clone()
        },
        code::CONTROLLER_INVALID_REPLICAS,
    );
    // Members fine, but the master is dropped: checked last.
    case(
        AlterSyncStateSetRequest {
            new_sync_state_set: BTreeSet::from([2]),
            ..good.clone()
        },
        code::CONTROLLER_ALTER_SYNC_STATE_SET_FAILED,
    );
    // A set without a master rejects every alter as "wrong master".
    let mut no_master = state.clone();
    apply_all(
        &mut no_master,
        &[Event::ElectMaster {
            broker_name: SET.into(),
            new_master: None,
        }],
    );
    rejected(
        alter_sync_state_set(&no_master, &good),
        code::CONTROLLER_INVALID_MASTER,
    );
}

// ---- CONTROLLER_GET_REPLICA_INFO / CONTROLLER_GET_SYNC_STATE_DATA

#[test]
fn get_replica_info_reports_recorded_master() {
    let state = set_with_master(2);
    let (response, events) = get_replica_info(
        &state,
        &GetReplicaInfoRequest {
            broker_name: SET.into(),
        },
    )
    .unwrap();
    assert!(events.is_empty());
    assert_eq!(response.master_broker_id, Some(1));
    assert_eq!(response.master_address, Some(addr(1)));
    assert_eq!(
        (response.master_epoch, response.sync_state_set_epoch),
        (1, 1)
    );
    assert_eq!(response.sync_state_set, BTreeSet::from([1]));
    rejected(
        get_replica_info(
            &state,
            &GetReplicaInfoRequest {
                broker_name: "nope".into(),
            },
        ),
        code::CONTROLLER_BROKER_METADATA_NOT_EXIST,
    );
}

#[test]
fn get_sync_state_data_splits_replicas_and_skips_unknown_sets() {
    let mut state = set_with_master(3);
    commit(&mut state, |s| {
        alter_sync_state_set(s, &alter(s, 1, &[1, 2]))
    });
    let (response, events) = get_sync_state_data(
        &state,
        &GetSyncStateDataRequest {
            broker_names: vec![SET.into(), "nope".into()],
        },
        &alive(&[1, 3]),
    )
    .unwrap();
    assert!(events.is_empty());
    assert_eq!(response.replicas_info_table.len(), 1);
    let info = &response.replicas_info_table[SET];
    assert_eq!(info.master_broker_id, Some(1));
    assert_eq!(info.sync_state_set_epoch, 2);
    let summary = |replicas: &[ReplicaIdentity]| {
        replicas
            .iter()
            .map(|r| (r.broker_id, r.alive))
            .collect::<Vec<_>>()
    };
    assert_eq!(summary(&info.in_sync_replicas), vec![(1, true), (2, false)]);
    assert_eq!(summary(&info.not_in_sync_replicas), vec![(3, true)]);
    assert_eq!(info.not_in_sync_replicas[0].address, addr(3));
}

// ---- CLEAN_BROKER_DATA

fn clean(ids: Option<&str>, living: bool) -> CleanBrokerDataRequest {
    CleanBrokerDataRequest {
        cluster: "c".into(),
        broker_name: SET.into(),
        broker_controller_ids_to_clean: ids.map(str::to_string),
        clean_living_broker: living,
    }
}

#[test]
fn clean_whole_set_refused_while_master_recorded() {
    let state = set_with_master(2);
    rejected(
        clean_broker_data(&state, &clean(None, false), &alive(&[])),
        code::CONTROLLER_INVALID_CLEAN_BROKER_METADATA,
    );
    rejected(
        clean_broker_data(&state, &clean(Some("  "), false), &alive(&[])),
        code::CONTROLLER_INVALID_CLEAN_BROKER_METADATA,
    );
    let mut state = state;
    commit(&mut state, |s| {
        clean_broker_data(s, &clean(None, true), &alive(&[1]))
    });
    assert!(state.broker_sets.is_empty());
}

#[test]
fn clean_ids_refused_while_alive_or_malformed_or_unknown_set() {
    let state = set_with_master(2);
    rejected(
        clean_broker_data(&state, &clean(Some("2"), false), &alive(&[2])),
        code::CONTROLLER_INVALID_CLEAN_BROKER_METADATA,
    );
    rejected(
        clean_broker_data(&state, &clean(Some("2;x"), false), &alive(&[])),
        code::CONTROLLER_INVALID_CLEAN_BROKER_METADATA,
    );
    rejected(
        clean_broker_data(&ControllerState::new(), &clean(None, false), &alive(&[])),
        code::CONTROLLER_INVALID_CLEAN_BROKER_METADATA,
    );
}

#[test]
fn clean_dead_ids_and_dead_master() {
    let mut state = set_with_master(3);
    commit(&mut state, |s| {
        alter_sync_state_set(s, &alter(s, 1, &[1, 2]))
    });
    commit(&mut state, |s| {
        clean_broker_data(s, &clean(Some("3"), false), &alive(&[1, 2]))
    });
    assert!(!state.broker_sets[SET].replica_info.contains(3));
    assert_eq!(sync_of(&state).sync_state_set_epoch, 2);
    // Cleaning the dead master clears it and fences both epochs.
    commit(&mut state, |s| {
        clean_broker_data(s, &clean(Some("1"), false), &alive(&[2]))
    });
    let sync = sync_of(&state);
    assert_eq!(sync.master_broker_id, None);
    assert_eq!(sync.sync_state_set, BTreeSet::from([2]));
    assert_eq!((sync.master_epoch, sync.sync_state_set_epoch), (2, 3));
    // Next id stays past every id ever handed out.
    assert_eq!(state.broker_sets[SET].replica_info.next_assign_broker_id, 4);
    // Cleaning the last id removes the set.
    commit(&mut state, |s| {
        clean_broker_data(s, &clean(Some("2"), false), &alive(&[]))
    });
    assert!(state.broker_sets.is_empty());
}

// ---- dispatch

#[test]
fn handle_dispatches_and_reports_codes() {
    let state = set_with_master(2);
    let policy = DefaultElectPolicy::default();
    let (response, _) = handle(
        &state,
        &ControllerRequest::ElectMaster(elect(Some(2), false)),
        &alive(&[1, 2]),
        &policy,
    )
    .unwrap();
    assert_eq!(response.code(), code::CONTROLLER_MASTER_STILL_EXIST);
    let (response, _) = handle(
        &state,
        &ControllerRequest::GetReplicaInfo(GetReplicaInfoRequest {
            broker_name: SET.into(),
        }),
        &alive(&[]),
        &policy,
    )
    .unwrap();
    assert_eq!(response.code(), code::SUCCESS);
    assert!(matches!(response, ControllerResponse::GetReplicaInfo(_)));
}

/// Issue 13, hole 1: a master whose SyncStateSet change has an unknown outcome fences it with
/// the same set (Rocketraft's `fence`). The fence only raises the epoch, even when a member is
/// not alive (nobody joins), and afterwards the late copy of the original change is refused.
#[test]
fn a_fence_raises_the_epoch_and_refuses_late_copies() {
    let mut state = set_with_master(3);
    // The master (1) proposed adding 2 from epoch 1; the outcome is unknown to it.
    let late_copy = alter(&state, 1, &[1, 2]);
    let mut fence = alter(&state, 1, &[1]);
    // Without the flag an unchanged set is refused, as in RocketMQ.
    rejected(
        alter_sync_state_set(&state, &fence),
        code::CONTROLLER_ALTER_SYNC_STATE_SET_FAILED,
    );
    fence.fence = true;
    let response = commit(&mut state, |s| alter_sync_state_set(s, &fence));
    assert_eq!(response.new_sync_state_set_epoch, 2);
    assert_eq!(sync_of(&state).sync_state_set, BTreeSet::from([1]));
    assert_eq!(sync_of(&state).sync_state_set_epoch, 2);
    // The late copy (derived from epoch 1) can never apply now.
    rejected(
        alter_sync_state_set(&state, &late_copy),
        code::CONTROLLER_FENCED_SYNC_STATE_SET_EPOCH,
    );
    // A fence is fenced too: from a stale epoch or master epoch it is refused.
    rejected(
        alter_sync_state_set(&state, &fence),
        code::CONTROLLER_FENCED_SYNC_STATE_SET_EPOCH,
    );
}
