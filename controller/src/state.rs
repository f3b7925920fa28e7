//! The controller's replicated state: for every broker set (keyed by `brokerName`) the replicas that
//! hold a broker id and the SyncStateSet with its master.
//!
//! Mirrors `ReplicasInfoManager`'s two tables (`replicaInfoTable`, `syncStateSetInfoTable`) but keeps
//! both halves of a broker set in one entry, so one can never exist without the other.
//! The state is `serde` so the Raft wrapper can snapshot it; every map is a `BTree*` so iteration
//! order (and thus every handler's answer) is deterministic.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The first broker id the controller hands out (`MixAll.FIRST_BROKER_CONTROLLER_ID`).
pub const FIRST_BROKER_CONTROLLER_ID: i64 = 1;

/// What the controller remembers about one broker id of a set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerIdentity {
    /// `host:port` the broker last registered with.
    pub address: String,
    /// `"address;timestamp"` the broker applied its id with; a broker that re-applies with the same
    /// code gets its id back (it crashed between applying and persisting its metadata file).
    pub register_check_code: String,
}

/// `BrokerReplicaInfo`: which broker ids a broker set has handed out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerReplicaInfo {
    pub cluster: String,
    pub broker_name: String,
    /// What `GET_NEXT_BROKER_ID` answers; always greater than every assigned id.
    pub next_assign_broker_id: i64,
    pub broker_id_info: BTreeMap<i64, BrokerIdentity>,
}

impl BrokerReplicaInfo {
    pub fn new(cluster: impl Into<String>, broker_name: impl Into<String>) -> Self {
        Self {
            cluster: cluster.into(),
            broker_name: broker_name.into(),
            next_assign_broker_id: FIRST_BROKER_CONTROLLER_ID,
            broker_id_info: BTreeMap::new(),
        }
    }

    pub fn contains(&self, broker_id: i64) -> bool {
        self.broker_id_info.contains_key(&broker_id)
    }

    pub fn address_of(&self, broker_id: i64) -> Option<&str> {
        self.broker_id_info
            .get(&broker_id)
            .map(|identity| identity.address.as_str())
    }
}

/// `SyncStateInfo`: the master and the replicas in sync with it, each change fenced by an epoch.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SyncStateInfo {
    /// Bumped on every master change, including "master lost, none elected". 0 = never elected.
    pub master_epoch: i32,
    /// Bumped on every change of `sync_state_set`.
    pub sync_state_set_epoch: i32,
    pub sync_state_set: BTreeSet<i64>,
    /// Invariant: if set, it is a member of `sync_state_set`.
    pub master_broker_id: Option<i64>,
}

impl SyncStateInfo {
    /// No master was ever elected in this set (`isFirstTimeForElect`).
    pub fn is_first_time_for_elect(&self) -> bool {
        self.master_epoch == 0
    }
}

/// One broker set: both halves of the Java tables for one `brokerName`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerSet {
    pub replica_info: BrokerReplicaInfo,
    pub sync_state_info: SyncStateInfo,
}

impl BrokerSet {
    /// The recorded master's address, alive or not.
    pub fn master_address(&self) -> Option<String> {
        self.sync_state_info
            .master_broker_id
            .and_then(|master| self.replica_info.address_of(master))
            .map(str::to_string)
    }
}

/// The whole controller state. Changed only by [`crate::event::apply`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ControllerState {
    pub broker_sets: BTreeMap<String, BrokerSet>,
}

impl ControllerState {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn broker_set(&self, broker_name: &str) -> Option<&BrokerSet> {
        self.broker_sets.get(broker_name)
    }

    /// Checks the invariants every reachable state keeps; returns the first one broken.
    /// Meant for tests and for the Raft wrapper to assert after restoring a snapshot.
    pub fn check_invariants(&self) -> Result<(), InvariantBroken> {
        for (name, set) in &self.broker_sets {
            let broken = |what| InvariantBroken {
                broker_name: name.clone(),
                what,
            };
            if set.replica_info.broker_name != *name {
                return Err(broken(Broken::FiledUnderWrongName));
            }
            let sync = &set.sync_state_info;
            if let Some(master) = sync.master_broker_id {
                if !sync.sync_state_set.contains(&master) {
                    return Err(broken(Broken::MasterOutsideSyncStateSet(master)));
                }
            }
            if let Some(unknown) = sync
                .sync_state_set
                .iter()
                .find(|id| !set.replica_info.contains(**id))
            {
                return Err(broken(Broken::MemberWithoutBrokerId(*unknown)));
            }
            if let Some(max_id) = set.replica_info.broker_id_info.keys().next_back() {
                if set.replica_info.next_assign_broker_id <= *max_id {
                    return Err(broken(Broken::NextBrokerIdAssigned(
                        set.replica_info.next_assign_broker_id,
                    )));
                }
            }
        }
        Ok(())
    }
}

/// A state invariant that does not hold ([`ControllerState::check_invariants`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{broker_name}: {what}")]
pub struct InvariantBroken {
    pub broker_name: String,
    pub what: Broken,
}

/// Which invariant of a broker set is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Broken {
    #[error("the broker set is filed under the wrong name")]
    FiledUnderWrongName,
    #[error("master {0} is not in the SyncStateSet")]
    MasterOutsideSyncStateSet(i64),
    #[error("SyncStateSet member {0} holds no broker id")]
    MemberWithoutBrokerId(i64),
    #[error("next broker id {0} is already assigned")]
    NextBrokerIdAssigned(i64),
}
