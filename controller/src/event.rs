//! Events: the only way [`ControllerState`] changes.
//!
//! Handlers never mutate the state; they return events, the Raft layer replicates them, and every
//! controller applies them in log order with [`apply`]. `apply` is deterministic (no clock, no
//! randomness, no hash-order iteration), so replicas that apply the same log hold equal states.
//! An event that no longer fits the state (its broker set was cleaned in between) is ignored, as
//! `ReplicasInfoManager.applyEvent` does.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::state::{BrokerIdentity, BrokerReplicaInfo, BrokerSet, ControllerState, SyncStateInfo};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A broker took `broker_id`; creates the broker set on its first id.
    ApplyBrokerId {
        cluster: String,
        broker_name: String,
        broker_id: i64,
        address: String,
        register_check_code: String,
    },
    /// `Some(id)`: `id` becomes master, masterEpoch+1, SSS = {id}, sssEpoch+1.
    /// `None`: the master is gone and nobody could replace it: master cleared, masterEpoch+1, SSS kept.
    ElectMaster {
        broker_name: String,
        new_master: Option<i64>,
    },
    /// The master's new SyncStateSet; sssEpoch+1.
    AlterSyncStateSet {
        broker_name: String,
        new_sync_state_set: BTreeSet<i64>,
    },
    /// `None` removes the whole broker set; `Some(ids)` removes those ids.
    CleanBrokerData {
        broker_name: String,
        broker_ids: Option<BTreeSet<i64>>,
    },
    /// A registered broker came back on a different address.
    UpdateBrokerAddress {
        broker_name: String,
        broker_id: i64,
        address: String,
    },
}

/// Applies one event. The only function that mutates a [`ControllerState`].
pub fn apply(state: &mut ControllerState, event: &Event) {
    match event {
        Event::ApplyBrokerId {
            cluster,
            broker_name,
            broker_id,
            address,
            register_check_code,
        } => {
            let set = state
                .broker_sets
                .entry(broker_name.clone())
                .or_insert_with(|| BrokerSet {
                    replica_info: BrokerReplicaInfo::new(cluster.clone(), broker_name.clone()),
                    sync_state_info: SyncStateInfo::default(),
                });
            let replicas = &mut set.replica_info;
            if !replicas.contains(*broker_id) {
                replicas.broker_id_info.insert(
                    *broker_id,
                    BrokerIdentity {
                        address: address.clone(),
                        register_check_code: register_check_code.clone(),
                    },
                );
                // Java increments by one per added id; taking the max keeps `next` unassigned even
                // when a broker applied an id out of order.
                replicas.next_assign_broker_id = replicas
                    .next_assign_broker_id
                    .max(broker_id.saturating_add(1));
            }
        }
        Event::ElectMaster {
            broker_name,
            new_master,
        } => {
            let Some(set) = state.broker_sets.get_mut(broker_name) else {
                tracing::warn!(
                    broker_name,
                    "ElectMaster event for an unknown broker set ignored"
                );
                return;
            };
            let sync = &mut set.sync_state_info;
            sync.master_broker_id = *new_master;
            sync.master_epoch += 1;
            if let Some(master) = new_master {
                sync.sync_state_set = BTreeSet::from([*master]);
                sync.sync_state_set_epoch += 1;
            }
        }
        Event::AlterSyncStateSet {
            broker_name,
            new_sync_state_set,
        } => {
            let Some(set) = state.broker_sets.get_mut(broker_name) else {
                tracing::warn!(
                    broker_name,
                    "AlterSyncStateSet event for an unknown broker set ignored"
                );
                return;
            };
            let sync = &mut set.sync_state_info;
            sync.sync_state_set = new_sync_state_set.clone();
            sync.sync_state_set_epoch += 1;
        }
        Event::CleanBrokerData {
            broker_name,
            broker_ids,
        } => {
            let Some(ids) = broker_ids.as_ref().filter(|ids| !ids.is_empty()) else {
                state.broker_sets.remove(broker_name);
                return;
            };
            let Some(set) = state.broker_sets.get_mut(broker_name) else {
                return;
            };
            let sync = &mut set.sync_state_info;
            let sync_state_set_before = sync.sync_state_set.len();
            for id in ids {
                set.replica_info.broker_id_info.remove(id);
                sync.sync_state_set.remove(id);
                // Java leaves a cleaned master in place; we clear it (a master change, so
                // masterEpoch+1) to keep "the master is a registered SSS member".
                if sync.master_broker_id == Some(*id) {
                    sync.master_broker_id = None;
                    sync.master_epoch += 1;
                }
            }
            // Java does not bump the epoch here; we do, so a request built on the old set is fenced.
            if sync.sync_state_set.len() != sync_state_set_before {
                sync.sync_state_set_epoch += 1;
            }
            if set.replica_info.broker_id_info.is_empty() {
                state.broker_sets.remove(broker_name);
            }
        }
        Event::UpdateBrokerAddress {
            broker_name,
            broker_id,
            address,
        } => {
            if let Some(identity) = state
                .broker_sets
                .get_mut(broker_name)
                .and_then(|set| set.replica_info.broker_id_info.get_mut(broker_id))
            {
                identity.address = address.clone();
            }
        }
    }
}

/// Applies events in order.
pub fn apply_all<'a>(state: &mut ControllerState, events: impl IntoIterator<Item = &'a Event>) {
    for event in events {
        apply(state, event);
    }
}
