//! The controller's replica info for one broker set: who is master, in which epoch, and which
//! replicas are in sync. Checked per broker set: use the broker name as the op's `key`.
//!
//! The state mirrors the controller's `SyncStateInfo`: `master_epoch` (bumped by every election,
//! including "master lost, none elected"), `master_id` (or none), `sync_state_set_epoch` (bumped by
//! every change of the set) and `sync_state_set`. Initially: epochs 0, no master, an empty set.
//!
//! # Operations (our JSONL, `"key":"<broker name>"`)
//! A *replica info* value is `{"master_epoch":2,"master_id":1,"sync_state_set_epoch":3,"sync_state_set":[1,2]}`
//! (`master_id` null when there is no master; EDN may spell the fields `:master-epoch` etc.).
//!
//! - `read`: invoke `null`; `ok` with the replica info read. Legal iff it is the current state.
//! - `elect`: invoke `null`, or `{"broker_id":2}` to designate the candidate; `ok` with the replica
//!   info after the election. Legal iff either nothing changed (the master still lives: the value
//!   is the current state), or `master_epoch` is one more than now and either a master `m` was
//!   elected (the designated one if any), the set is `[m]` and `sync_state_set_epoch` is one more,
//!   or no master was elected and the set and its epoch are unchanged.
//! - `alter`: invoke `{"master_id":1,"master_epoch":2,"sync_state_set_epoch":3,"sync_state_set":[1,2]}`
//!   (the master's request: its view of the epochs, and the new set); `ok` with
//!   `{"sync_state_set_epoch":4}` (or that number alone, or null). Legal iff the master and both
//!   epochs are current; the set becomes the new one and its epoch one more (and equal to the
//!   `ok`'s epoch, when given).
//!
//! `fail` must mean the state did not change (a rejected request); a request whose effect is not
//! known is `info`. The controller also elects on its own when a master's heartbeats stop: a
//! harness records such a possibility as an `elect` of unknown outcome (`info`), invoked when it
//! kills or isolates the master, since every change of the state must come from an operation of
//! the history.
//!
//! An election of unknown outcome leaves the new master and set unknown (and the set's epoch one
//! of two values) until a later read or alter pins them: the model then accepts any values
//! consistent with what is known. That over-approximates (it may accept a history a more precise
//! model would reject) but never rejects a linearizable history.

use std::collections::BTreeSet;
use std::fmt;

use crate::history::{Operation, Outcome};
use crate::model::{Model, ModelError, Prepared, Version};
use crate::value::Value;

#[derive(Debug, Clone, Copy, Default)]
pub struct ReplicaInfo;

/// The master, as far as the model knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Master {
    /// After an election of unknown outcome, before anything pinned it.
    Unknown,
    Absent,
    Broker(i64),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReplicaState {
    pub master_epoch: i64,
    pub master: Master,
    /// The set's epoch is in this inclusive range: one value, or two after an election of
    /// unknown outcome (a master elected bumps it, none elected does not).
    pub sync_state_set_epoch: (i64, i64),
    /// `None`: unknown.
    pub sync_state_set: Option<BTreeSet<i64>>,
}

/// Replica info as a client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub master_epoch: i64,
    pub master_id: Option<i64>,
    pub sync_state_set_epoch: i64,
    pub sync_state_set: BTreeSet<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterRequest {
    pub master_id: i64,
    pub master_epoch: i64,
    pub sync_state_set_epoch: i64,
    pub new_sync_state_set: BTreeSet<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaOp {
    Read(Snapshot),
    /// `result` is `None` when the outcome is unknown.
    Elect {
        designated: Option<i64>,
        result: Option<Snapshot>,
    },
    /// `new_epoch`: the set's epoch the `ok` reported, if any.
    Alter {
        request: AlterRequest,
        new_epoch: Option<i64>,
    },
}

impl ReplicaState {
    fn epoch_in_range(&self, epoch: i64) -> bool {
        self.sync_state_set_epoch.0 <= epoch && epoch <= self.sync_state_set_epoch.1
    }

    fn master_may_be(&self, master_id: Option<i64>) -> bool {
        match self.master {
            Master::Unknown => true,
            Master::Absent => master_id.is_none(),
            Master::Broker(id) => master_id == Some(id),
        }
    }

    fn set_may_be(&self, set: &BTreeSet<i64>) -> bool {
        self.sync_state_set
            .as_ref()
            .is_none_or(|known| known == set)
    }

    /// Could a read now return `snapshot`?
    fn admits(&self, snapshot: &Snapshot) -> bool {
        snapshot.master_epoch == self.master_epoch
            && self.epoch_in_range(snapshot.sync_state_set_epoch)
            && self.master_may_be(snapshot.master_id)
            && self.set_may_be(&snapshot.sync_state_set)
    }

    fn known(snapshot: &Snapshot) -> Self {
        Self {
            master_epoch: snapshot.master_epoch,
            master: snapshot.master_id.map_or(Master::Absent, Master::Broker),
            sync_state_set_epoch: (snapshot.sync_state_set_epoch, snapshot.sync_state_set_epoch),
            sync_state_set: Some(snapshot.sync_state_set.clone()),
        }
    }
}

impl fmt::Display for ReplicaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "master epoch {}, master ", self.master_epoch)?;
        match self.master {
            Master::Unknown => write!(f, "unknown")?,
            Master::Absent => write!(f, "none")?,
            Master::Broker(id) => write!(f, "{id}")?,
        }
        let (low, high) = self.sync_state_set_epoch;
        write!(f, ", SyncStateSet ")?;
        match &self.sync_state_set {
            Some(set) => write!(f, "{set:?}")?,
            None => write!(f, "unknown")?,
        }
        if low == high {
            write!(f, " epoch {low}")
        } else {
            write!(f, " epoch {low}..={high}")
        }
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&ReplicaState::known(self).to_string())
    }
}

fn int_field(op: &Operation, value: &Value, name: &str) -> Result<i64, ModelError> {
    value
        .field(name)
        .and_then(Value::as_int)
        .ok_or_else(|| ModelError::new(op, format!("expected an integer {name} in {value}")))
}

fn broker_id(op: &Operation, value: Option<&Value>, name: &str) -> Result<Option<i64>, ModelError> {
    match value {
        None | Some(Value::Nil) => Ok(None),
        Some(Value::Int(id)) if *id < 0 => Ok(None),
        Some(Value::Int(id)) => Ok(Some(*id)),
        Some(other) => Err(ModelError::new(
            op,
            format!("{name} must be a broker id or null, got {other}"),
        )),
    }
}

fn id_set(op: &Operation, value: Option<&Value>, name: &str) -> Result<BTreeSet<i64>, ModelError> {
    match value {
        None | Some(Value::Nil) => Ok(BTreeSet::new()),
        Some(Value::List(items)) => items
            .iter()
            .map(|item| {
                item.as_int()
                    .ok_or_else(|| ModelError::new(op, format!("{name} holds a non-id {item}")))
            })
            .collect(),
        Some(other) => Err(ModelError::new(
            op,
            format!("{name} must be a list of broker ids, got {other}"),
        )),
    }
}

fn snapshot(op: &Operation, value: &Value) -> Result<Snapshot, ModelError> {
    if value.as_map().is_none() {
        return Err(ModelError::new(
            op,
            format!("expected replica info {{master_epoch, master_id, sync_state_set_epoch, sync_state_set}}, got {value}"),
        ));
    }
    Ok(Snapshot {
        master_epoch: int_field(op, value, "master_epoch")?,
        master_id: broker_id(op, value.field("master_id"), "master_id")?,
        sync_state_set_epoch: int_field(op, value, "sync_state_set_epoch")?,
        sync_state_set: id_set(op, value.field("sync_state_set"), "sync_state_set")?,
    })
}

fn alter_request(op: &Operation) -> Result<AlterRequest, ModelError> {
    let value = &op.input;
    let master_id = broker_id(op, value.field("master_id"), "master_id")?
        .ok_or_else(|| ModelError::new(op, format!("an alter needs its master_id, got {value}")))?;
    Ok(AlterRequest {
        master_id,
        master_epoch: int_field(op, value, "master_epoch")?,
        sync_state_set_epoch: int_field(op, value, "sync_state_set_epoch")?,
        new_sync_state_set: id_set(op, value.field("sync_state_set"), "sync_state_set")?,
    })
}

impl Model for ReplicaInfo {
    type Op = ReplicaOp;
    type State = ReplicaState;

    fn name(&self) -> &'static str {
        "replica-info"
    }

    fn init(&self) -> ReplicaState {
        ReplicaState {
            master_epoch: 0,
            master: Master::Absent,
            sync_state_set_epoch: (0, 0),
            sync_state_set: Some(BTreeSet::new()),
        }
    }

    fn prepare(&self, op: &Operation) -> Result<Prepared<ReplicaOp>, ModelError> {
        let prepared = match (op.f.as_str(), &op.outcome) {
            ("read" | "elect" | "alter", Outcome::Failed(_)) => Prepared::Skip,
            ("read", Outcome::Ok(value)) => Prepared::Check(ReplicaOp::Read(snapshot(op, value)?)),
            ("read", _) => Prepared::Skip,
            ("elect", outcome) => {
                let designated = match &op.input {
                    Value::Map(_) => broker_id(op, op.input.field("broker_id"), "broker_id")?,
                    other => broker_id(op, Some(other), "the elect's value")?,
                };
                let result = match outcome {
                    Outcome::Ok(value) => Some(snapshot(op, value)?),
                    _ => None,
                };
                Prepared::Check(ReplicaOp::Elect { designated, result })
            }
            ("alter", outcome) => {
                let request = alter_request(op)?;
                let new_epoch = match outcome {
                    Outcome::Ok(Value::Int(epoch)) => Some(*epoch),
                    Outcome::Ok(Value::Nil) | Outcome::Unknown | Outcome::Failed(_) => None,
                    Outcome::Ok(value) => Some(int_field(op, value, "sync_state_set_epoch")?),
                };
                Prepared::Check(ReplicaOp::Alter { request, new_epoch })
            }
            (f, _) => {
                return Err(ModelError::new(
                    op,
                    format!("the replica-info model knows read, elect and alter, not {f}"),
                ))
            }
        };
        Ok(prepared)
    }

    fn step(&self, state: &ReplicaState, op: &ReplicaOp) -> Option<ReplicaState> {
        match op {
            ReplicaOp::Read(snapshot) => state
                .admits(snapshot)
                .then(|| ReplicaState::known(snapshot)),
            ReplicaOp::Elect {
                designated,
                result: Some(after),
            } => {
                if state.admits(after) {
                    // The master still lives: nothing changed.
                    return Some(ReplicaState::known(after));
                }
                if after.master_epoch != state.master_epoch + 1 {
                    return None;
                }
                let legal = match after.master_id {
                    Some(master) => {
                        designated.is_none_or(|d| d == master)
                            && after.sync_state_set == BTreeSet::from([master])
                            && state.epoch_in_range(after.sync_state_set_epoch - 1)
                    }
                    None => {
                        state.epoch_in_range(after.sync_state_set_epoch)
                            && state.set_may_be(&after.sync_state_set)
                    }
                };
                legal.then(|| ReplicaState::known(after))
            }
            ReplicaOp::Elect {
                designated,
                result: None,
            } => {
                let (low, high) = state.sync_state_set_epoch;
                Some(match designated {
                    Some(master) => ReplicaState {
                        master_epoch: state.master_epoch + 1,
                        master: Master::Broker(*master),
                        sync_state_set_epoch: (low + 1, high + 1),
                        sync_state_set: Some(BTreeSet::from([*master])),
                    },
                    None => ReplicaState {
                        master_epoch: state.master_epoch + 1,
                        master: Master::Unknown,
                        sync_state_set_epoch: (low, high + 1),
                        sync_state_set: None,
                    },
                })
            }
            ReplicaOp::Alter { request, new_epoch } => {
                let next_epoch = request.sync_state_set_epoch + 1;
                let legal = request.master_epoch == state.master_epoch
                    && state.master_may_be(Some(request.master_id))
                    && state.epoch_in_range(request.sync_state_set_epoch)
                    && new_epoch.is_none_or(|epoch| epoch == next_epoch);
                legal.then(|| ReplicaState {
                    master_epoch: state.master_epoch,
                    master: Master::Broker(request.master_id),
                    sync_state_set_epoch: (next_epoch, next_epoch),
                    sync_state_set: Some(request.new_sync_state_set.clone()),
                })
            }
        }
    }

    /// A read, or an election answered with the current state (the master still lives), in a
    /// state known in full (no election of unknown outcome left anything open). Every step keeps
    /// or raises the epochs (`master_epoch`, then `sync_state_set_epoch`) and every state change
    /// raises one, so the only states in which such an op is legal later are this one, unchanged
    /// until then: taking it now instead is the same linearization.
    fn read_only(&self, state: &ReplicaState, op: &ReplicaOp) -> bool {
        let known = state.master != Master::Unknown
            && state.sync_state_set_epoch.0 == state.sync_state_set_epoch.1
            && state.sync_state_set.is_some();
        known
            && matches!(
                op,
                ReplicaOp::Read(_)
                    | ReplicaOp::Elect {
                        result: Some(_),
                        ..
                    }
            )
    }

    /// `(master_epoch, sync_state_set_epoch)`: an election raises the first, an alter the
    /// second, a read or an election that changed nothing neither, and an election of unknown
    /// outcome leaves the second at or above what it was. Every completed op observed a full
    /// snapshot: a read or election its result, an alter the set it installed.
    fn observed_version(&self, op: &ReplicaOp) -> Option<(Version, ReplicaState)> {
        let snapshot = match op {
            ReplicaOp::Read(snapshot)
            | ReplicaOp::Elect {
                result: Some(snapshot),
                ..
            } => snapshot.clone(),
            ReplicaOp::Elect { result: None, .. } => return None,
            ReplicaOp::Alter { request, .. } => Snapshot {
                master_epoch: request.master_epoch,
                master_id: Some(request.master_id),
                sync_state_set_epoch: request.sync_state_set_epoch + 1,
                sync_state_set: request.new_sync_state_set.clone(),
            },
        };
        Some((
            (snapshot.master_epoch, snapshot.sync_state_set_epoch),
            ReplicaState::known(&snapshot),
        ))
    }

    /// `(master_epoch, least sync_state_set_epoch)`. An election raises the master epoch (an
    /// `ok` one that changed nothing keeps the state), an alter keeps it and sets the set's
    /// epoch to one more than an epoch the state may have, and a completed op leads to the
    /// state it observed ([`ReplicaState::known`]): the contract of [`Model::state_version`].
    fn state_version(&self, state: &ReplicaState) -> Option<Version> {
        Some((state.master_epoch, state.sync_state_set_epoch.0))
    }

    fn describe_op(&self, op: &ReplicaOp) -> String {
        match op {
            ReplicaOp::Read(snapshot) => format!("read -> {snapshot}"),
            ReplicaOp::Elect { designated, result } => {
                let target = designated.map_or(String::new(), |d| format!(" {d}"));
                match result {
                    Some(after) => format!("elect{target} -> {after}"),
                    None => format!("elect{target} -> unknown"),
                }
            }
            ReplicaOp::Alter { request, new_epoch } => format!(
                "alter by master {} (master epoch {}, SyncStateSet epoch {}) to {:?} -> {}",
                request.master_id,
                request.master_epoch,
                request.sync_state_set_epoch,
                request.new_sync_state_set,
                new_epoch.map_or("unknown".to_string(), |e| format!("epoch {e}")),
            ),
        }
    }

    fn describe_state(&self, state: &ReplicaState) -> String {
        state.to_string()
    }

    fn state_heap_bytes(&self, state: &ReplicaState) -> usize {
        // A B-tree node per few ids; a generous 32 bytes per id.
        state
            .sync_state_set
            .as_ref()
            .map_or(0, |set| 32 * set.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(master_epoch: i64, master_id: Option<i64>, epoch: i64, set: &[i64]) -> Snapshot {
        Snapshot {
            master_epoch,
            master_id,
            sync_state_set_epoch: epoch,
            sync_state_set: set.iter().copied().collect(),
        }
    }

    fn elect(result: Snapshot) -> ReplicaOp {
        ReplicaOp::Elect {
            designated: None,
            result: Some(result),
        }
    }

    #[test]
    fn elections_bump_the_epochs() {
        let model = ReplicaInfo;
        let s0 = model.init();
        let s1 = model
            .step(&s0, &elect(snap(1, Some(1), 1, &[1])))
            .expect("first election");
        // A second master in the same epoch is impossible.
        assert_eq!(model.step(&s1, &elect(snap(1, Some(2), 1, &[2]))), None);
        // The same answer again: the master still lives.
        assert_eq!(
            model.step(&s1, &elect(snap(1, Some(1), 1, &[1]))),
            Some(s1.clone())
        );
        // Skipping an epoch is impossible.
        assert_eq!(model.step(&s1, &elect(snap(3, Some(2), 2, &[2]))), None);
        // Master lost and none elected: the set stays.
        let s2 = model
            .step(&s1, &elect(snap(2, None, 1, &[1])))
            .expect("no master elected");
        assert_eq!(s2.master, Master::Absent);
        // The designated candidate, and no other, may win.
        let designated = ReplicaOp::Elect {
            designated: Some(3),
            result: Some(snap(3, Some(2), 2, &[2])),
        };
        assert_eq!(model.step(&s2, &designated), None);
    }

    #[test]
    fn alters_need_current_epochs() {
        let model = ReplicaInfo;
        let s1 = model
            .step(&model.init(), &elect(snap(1, Some(1), 1, &[1])))
            .expect("first election");
        let alter = |master_epoch, epoch, new_epoch| ReplicaOp::Alter {
            request: AlterRequest {
                master_id: 1,
                master_epoch,
                sync_state_set_epoch: epoch,
                new_sync_state_set: BTreeSet::from([1, 2]),
            },
            new_epoch,
        };
        let s2 = model
            .step(&s1, &alter(1, 1, Some(2)))
            .expect("current epochs");
        assert_eq!(s2.sync_state_set, Some(BTreeSet::from([1, 2])));
        assert_eq!(model.step(&s1, &alter(0, 1, Some(2))), None);
        assert_eq!(model.step(&s1, &alter(1, 0, Some(1))), None);
        assert_eq!(model.step(&s1, &alter(1, 1, Some(5))), None);
        assert_eq!(
            model.step(&s2, &ReplicaOp::Read(snap(1, Some(1), 2, &[1, 2]))),
            Some(s2.clone())
        );
    }

    #[test]
    fn an_unknown_election_is_pinned_by_a_read() {
        let model = ReplicaInfo;
        let s1 = model
            .step(&model.init(), &elect(snap(1, Some(1), 1, &[1])))
            .expect("first election");
        let unknown = model
            .step(
                &s1,
                &ReplicaOp::Elect {
                    designated: None,
                    result: None,
                },
            )
            .expect("an unknown election may take effect");
        assert_eq!(unknown.master, Master::Unknown);
        let read = |s| ReplicaOp::Read(s);
        assert!(model
            .step(&unknown, &read(snap(2, Some(3), 2, &[3])))
            .is_some());
        assert!(model
            .step(&unknown, &read(snap(2, None, 1, &[1])))
            .is_some());
        assert!(model
            .step(&unknown, &read(snap(2, Some(3), 3, &[3])))
            .is_none());
        assert!(model
            .step(&unknown, &read(snap(1, Some(1), 1, &[1])))
            .is_none());
    }
}
