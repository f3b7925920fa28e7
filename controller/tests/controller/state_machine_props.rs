//! Random request sequences against random liveness: the state machine's invariants.

use std::collections::BTreeSet;

use proptest::prelude::*;
use rocketraft_controller::handler::*;
use rocketraft_controller::{
    apply_all, handle, AliveBrokers, BrokerLiveInfo, ControllerRequest, ControllerResponse,
    ControllerState, DefaultElectPolicy, Event,
};
use rocketraft_remoting::response_code as code;

const NAMES: [&str; 2] = ["broker-a", "broker-b"];
const MAX_ID: i64 = 5;

/// A request recipe; epochs are taken from the state at run time, optionally skewed, so both fresh
/// and stale alters occur.
#[derive(Debug, Clone)]
enum Op {
    GetNext(usize),
    Apply {
        name: usize,
        id: i64,
        /// Which of two brokers claims the id (different check codes).
        claimant: u8,
    },
    Register {
        name: usize,
        id: i64,
        moved: bool,
    },
    Elect {
        name: usize,
        id: Option<i64>,
        designate: bool,
    },
    Alter {
        name: usize,
        master: Option<i64>,
        members: BTreeSet<i64>,
        master_epoch_skew: i32,
        sss_epoch_skew: i32,
    },
    GetReplicaInfo(usize),
    GetSyncStateData,
    Clean {
        name: usize,
        ids: Option<BTreeSet<i64>>,
        living: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let name = 0..NAMES.len();
    let id = 0..=MAX_ID;
    let ids = prop::collection::btree_set(0..=MAX_ID, 0..4);
    prop_oneof![
        1 => name.clone().prop_map(Op::GetNext),
        4 => (name.clone(), id.clone(), 0u8..2)
            .prop_map(|(name, id, claimant)| Op::Apply { name, id, claimant }),
        2 => (name.clone(), id.clone(), any::<bool>())
            .prop_map(|(name, id, moved)| Op::Register { name, id, moved }),
        3 => (name.clone(), prop::option::of(id.clone()), any::<bool>())
            .prop_map(|(name, id, designate)| Op::Elect { name, id, designate }),
        4 => (name.clone(), prop::option::of(id), ids.clone(), epoch_skew(), epoch_skew()).prop_map(
            |(name, master, members, master_epoch_skew, sss_epoch_skew)| Op::Alter {
                name,
                master,
                members,
                master_epoch_skew,
                sss_epoch_skew,
            }
        ),
        1 => name.clone().prop_map(Op::GetReplicaInfo),
        1 => Just(Op::GetSyncStateData),
        1 => (name, prop::option::of(ids), prop::bool::weighted(0.2))
            .prop_map(|(name, ids, living)| Op::Clean { name, ids, living }),
    ]
}

/// Per step, which (set, id) are alive (each with probability 0.7) and their heartbeat.
fn liveness() -> impl Strategy<Value = AliveBrokers> {
    let per_broker = (prop::bool::weighted(0.7), 0i32..3, 0i64..3, 0i32..2);
    prop::collection::vec(per_broker, NAMES.len() * MAX_ID as usize).prop_map(|brokers| {
        let mut alive = AliveBrokers::new();
        for (index, (is_alive, epoch, max_offset, election_priority)) in
            brokers.into_iter().enumerate()
        {
            if is_alive {
                alive.insert(
                    NAMES[index / MAX_ID as usize],
                    index as i64 % MAX_ID + 1,
                    BrokerLiveInfo {
                        epoch,
                        max_offset,
                        confirm_offset: 0,
                        election_priority,
                        name_servers_reached: None,
                        master_link_fresh: None,
                        in_sync_unreachable: None,
                        all_ack_in_sync_state_set: None,
                        heard_recently: None,
                    },
                );
            }
        }
        alive
    })
}

/// Mostly the current epoch, sometimes one off either way.
fn epoch_skew() -> impl Strategy<Value = i32> {
    prop_oneof![3 => Just(0), 1 => -1i32..=1]
}

fn build(state: &ControllerState, op: &Op) -> ControllerRequest {
    let cluster = "c".to_string();
    match op {
        Op::GetNext(name) => ControllerRequest::GetNextBrokerId(GetNextBrokerIdRequest {
            cluster,
            broker_name: NAMES[*name].into(),
        }),
        Op::Apply { name, id, claimant } => {
            ControllerRequest::ApplyBrokerId(ApplyBrokerIdRequest {
                cluster,
                broker_name: NAMES[*name].into(),
                applied_broker_id: *id,
                register_check_code: format!("10.0.{claimant}.{id}:10911;{claimant}"),
            })
        }
        Op::Register { name, id, moved } => {
            ControllerRequest::RegisterBroker(RegisterBrokerRequest {
                cluster,
                broker_name: NAMES[*name].into(),
                broker_id: *id,
                broker_address: format!("10.0.{}.{id}:10911", u8::from(*moved) + 5),
            })
        }
        Op::Elect {
            name,
            id,
            designate,
        } => ControllerRequest::ElectMaster(ElectMasterRequest {
            cluster,
            broker_name: NAMES[*name].into(),
            broker_id: *id,
            designate_elect: *designate,
            depose_epoch: None,
        }),
        Op::Alter {
            name,
            master,
            members,
            master_epoch_skew,
            sss_epoch_skew,
        } => {
            let broker_name = NAMES[*name];
            let sync = state
                .broker_set(broker_name)
                .map(|set| set.sync_state_info.clone())
                .unwrap_or_default();
            let master_broker_id = master.or(sync.master_broker_id).unwrap_or(1);
            let mut new_sync_state_set = members.clone();
            // Usually keep the master in the proposal so the happy path is reached.
            if master.is_none() {
                new_sync_state_set.insert(master_broker_id);
            }
            ControllerRequest::AlterSyncStateSet(AlterSyncStateSetRequest {
                broker_name: broker_name.into(),
                master_broker_id,
                master_epoch: sync.master_epoch + master_epoch_skew,
                new_sync_state_set,
                sync_state_set_epoch: sync.sync_state_set_epoch + sss_epoch_skew,
                fence: false,
            })
        }
        Op::GetReplicaInfo(name) => ControllerRequest::GetReplicaInfo(GetReplicaInfoRequest {
            broker_name: NAMES[*name].into(),
        }),
        Op::GetSyncStateData => ControllerRequest::GetSyncStateData(GetSyncStateDataRequest {
            broker_names: NAMES.iter().map(|name| name.to_string()).collect(),
        }),
        Op::Clean { name, ids, living } => {
            ControllerRequest::CleanBrokerData(CleanBrokerDataRequest {
                cluster,
                broker_name: NAMES[*name].into(),
                broker_controller_ids_to_clean: ids
                    .as_ref()
                    .map(|ids| ids.iter().map(i64::to_string).collect::<Vec<_>>().join(";")),
                clean_living_broker: *living,
            })
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_requests_keep_invariants(
        steps in prop::collection::vec((op(), liveness()), 1..60),
        unclean in any::<bool>(),
    ) {
        let policy = DefaultElectPolicy::new(unclean);
        let mut state = ControllerState::new();
        // A second replica that only ever sees the events.
        let mut replica = ControllerState::new();
        // Every run starts with both broker sets holding id 1, so most requests reach past the
        // "unknown broker set" checks.
        let seed = (0..NAMES.len()).map(|name| {
            (Op::Apply { name, id: 1, claimant: 0 }, AliveBrokers::new())
        });
        let steps: Vec<(Op, AliveBrokers)> = seed.chain(steps).collect();
        for (step, (op, alive)) in steps.iter().enumerate() {
            let request = build(&state, op);
            let before = state.clone();
            match handle(&state, &request, alive, &policy) {
                Err(error) => {
                    prop_assert!(step >= NAMES.len(), "seed step rejected: {}", error);
                    prop_assert!(
                        (code::CONTROLLER_FENCED_MASTER_EPOCH..=code::CONTROLLER_BROKER_LIVE_INFO_NOT_EXISTS)
                            .contains(&error.code),
                        "unexpected code {}", error.code
                    );
                }
                Ok((response, events)) => {
                    apply_all(&mut state, &events);
                    apply_all(&mut replica, &events);
                    // The response to an election describes the state once its events are applied.
                    if let ControllerResponse::ElectMaster(elect) = &response {
                        let name = match op { Op::Elect { name, .. } => NAMES[*name], _ => unreachable!() };
                        let sync = &state.broker_sets[name].sync_state_info;
                        prop_assert_eq!(elect.master_broker_id, sync.master_broker_id);
                        prop_assert_eq!(elect.master_epoch, sync.master_epoch);
                        prop_assert_eq!(elect.sync_state_set_epoch, sync.sync_state_set_epoch);
                        prop_assert_eq!(&elect.sync_state_set, &sync.sync_state_set);
                    }
                }
            }
            // Deterministic apply: the event-only replica is identical.
            prop_assert_eq!(&state, &replica);
            // The master is always a registered SSS member; next id is never assigned.
            if let Err(broken) = state.check_invariants() {
                prop_assert!(false, "invariant broken after {:?}: {}", op, broken);
            }
            // Epochs never decrease while a broker set lives.
            for (name, old) in &before.broker_sets {
                if let Some(new) = state.broker_sets.get(name) {
                    let (old, new) = (&old.sync_state_info, &new.sync_state_info);
                    prop_assert!(new.master_epoch >= old.master_epoch);
                    prop_assert!(new.sync_state_set_epoch >= old.sync_state_set_epoch);
                }
            }
            // Snapshot round trip.
            let json = serde_json::to_string(&state).unwrap();
            let restored: ControllerState = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&restored, &state);
        }
    }

    #[test]
    fn apply_is_deterministic_for_arbitrary_events(
        events in prop::collection::vec(arbitrary_event(), 0..40)
    ) {
        let mut first = ControllerState::new();
        let mut second = ControllerState::new();
        apply_all(&mut first, &events);
        for event in &events {
            rocketraft_controller::apply(&mut second, event);
        }
        prop_assert_eq!(&first, &second);
        let restored: ControllerState =
            serde_json::from_str(&serde_json::to_string(&first).unwrap()).unwrap();
        prop_assert_eq!(&restored, &first);
        // Events themselves survive the Raft log encoding.
        let decoded: Vec<Event> =
            serde_json::from_str(&serde_json::to_string(&events).unwrap()).unwrap();
        prop_assert_eq!(decoded, events);
    }
}

fn arbitrary_event() -> impl Strategy<Value = Event> {
    let name = (0..NAMES.len()).prop_map(|i| NAMES[i].to_string());
    let id = 1..=MAX_ID;
    prop_oneof![
        (name.clone(), id.clone()).prop_map(|(broker_name, broker_id)| Event::ApplyBrokerId {
            cluster: "c".into(),
            broker_name,
            broker_id,
            address: format!("a{broker_id}"),
            register_check_code: format!("a{broker_id};1"),
        }),
        (name.clone(), prop::option::of(id.clone())).prop_map(|(broker_name, new_master)| {
            Event::ElectMaster {
                broker_name,
                new_master,
            }
        }),
        (name.clone(), prop::collection::btree_set(id.clone(), 0..4)).prop_map(
            |(broker_name, new_sync_state_set)| Event::AlterSyncStateSet {
                broker_name,
                new_sync_state_set,
            }
        ),
        (
            name.clone(),
            prop::option::of(prop::collection::btree_set(id.clone(), 0..3))
        )
            .prop_map(|(broker_name, broker_ids)| Event::CleanBrokerData {
                broker_name,
                broker_ids
            }),
        (name, id).prop_map(|(broker_name, broker_id)| Event::UpdateBrokerAddress {
            broker_name,
            broker_id,
            address: "moved".into(),
        }),
    ]
}

/// The generators above are only worth their invariants if they reach the interesting paths: run a
/// fixed-seed batch and check every event kind and the main rejection codes occur.
#[test]
fn random_requests_reach_every_path() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use std::collections::BTreeSet;

    let mut runner = TestRunner::deterministic();
    let strategy = prop::collection::vec((op(), liveness()), 1..60);
    let policy = DefaultElectPolicy::default();
    let mut event_kinds = BTreeSet::new();
    let mut codes = BTreeSet::new();
    for _ in 0..300 {
        let steps = strategy.new_tree(&mut runner).unwrap().current();
        let mut state = ControllerState::new();
        for name in 0..NAMES.len() {
            let seed = build(
                &state,
                &Op::Apply {
                    name,
                    id: 1,
                    claimant: 0,
                },
            );
            let (_, events) = handle(&state, &seed, &AliveBrokers::new(), &policy).unwrap();
            apply_all(&mut state, &events);
        }
        for (op, alive) in &steps {
            match handle(&state, &build(&state, op), alive, &policy) {
                Ok((response, events)) => {
                    codes.insert(response.code());
                    for event in &events {
                        event_kinds.insert(match event {
                            Event::ApplyBrokerId { .. } => "apply",
                            Event::ElectMaster {
                                new_master: Some(_),
                                ..
                            } => "elected",
                            Event::ElectMaster {
                                new_master: None, ..
                            } => "master lost",
                            Event::AlterSyncStateSet { .. } => "alter",
                            Event::CleanBrokerData { .. } => "clean",
                            Event::UpdateBrokerAddress { .. } => "address",
                        });
                    }
                    apply_all(&mut state, &events);
                }
                Err(error) => {
                    codes.insert(error.code);
                }
            }
        }
    }
    let expected_kinds = [
        "apply",
        "elected",
        "master lost",
        "alter",
        "clean",
        "address",
    ];
    for kind in expected_kinds {
        assert!(
            event_kinds.contains(kind),
            "never produced {kind}: {event_kinds:?}"
        );
    }
    for expected in [
        code::SUCCESS,
        code::CONTROLLER_FENCED_MASTER_EPOCH,
        code::CONTROLLER_FENCED_SYNC_STATE_SET_EPOCH,
        code::CONTROLLER_INVALID_MASTER,
        code::CONTROLLER_INVALID_REPLICAS,
        code::CONTROLLER_MASTER_NOT_AVAILABLE,
        code::CONTROLLER_BROKER_NEED_TO_BE_REGISTERED,
        code::CONTROLLER_MASTER_STILL_EXIST,
        code::CONTROLLER_ELECT_MASTER_FAILED,
        code::CONTROLLER_ALTER_SYNC_STATE_SET_FAILED,
        code::CONTROLLER_BROKER_ID_INVALID,
        code::CONTROLLER_INVALID_CLEAN_BROKER_METADATA,
        code::CONTROLLER_BROKER_METADATA_NOT_EXIST,
    ] {
        assert!(
            codes.contains(&expected),
            "never answered {expected}: {codes:?}"
        );
    }
}
