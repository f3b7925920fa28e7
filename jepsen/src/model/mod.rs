//! Sequential specifications the linearizability checker checks histories against.
//!
//! A [`Model`] is a deterministic state machine: [`Model::step`] says whether an operation, with
//! the result the client saw, is legal in a state, and what state follows. The checker memoizes
//! on states, so they are `Eq + Hash` and should be small.
//!
//! Models shipped here, each named by its `--model` on the command line:
//! - [`cas_register::CasRegister`] (`cas-register`): one register, initially nil; `read`, `write`,
//!   `cas [old new]`. Porcupine's etcd model and Knossos' `cas-register`.
//! - [`kv::Kv`] (`kv`): a string per key, initially empty; `get`, `put`, `append`. Porcupine's kv model.
//! - [`replica_info::ReplicaInfo`] (`replica-info`): the controller's view of one broker set
//!   (master, epochs, SyncStateSet); `read`, `elect`, `alter`.
//!
//! Every model is checked per key: operations on different keys are independent
//! (P-compositionality), so the checker splits the history by the op's `key` before searching.

pub mod cas_register;
pub mod kv;
pub mod replica_info;

use std::fmt;
use std::hash::Hash;

use crate::history::Operation;

/// A state's version ([`Model::observed_version`]), compared lexicographically.
pub type Version = (i64, i64);

/// What a model makes of one paired operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared<O> {
    /// Check it: linearize it somewhere between its invocation and its completion (anywhere after
    /// its invocation, or nowhere, when its outcome is unknown).
    Check(O),
    /// It cannot constrain anything (a failed write, a read whose result is unknown): drop it.
    Skip,
}

/// An operation the model cannot interpret; the history cannot be checked against this model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("operation {index} (process {process}, {f}): {message}")]
pub struct ModelError {
    pub index: u64,
    pub process: u64,
    pub f: String,
    pub message: String,
}

impl ModelError {
    pub fn new(op: &Operation, message: impl Into<String>) -> Self {
        Self {
            index: op.index,
            process: op.process,
            f: op.f.clone(),
            message: message.into(),
        }
    }
}

/// A sequential specification.
///
/// Contract for [`Model::step`] with an operation whose outcome is unknown (`info`): return the
/// state the operation would produce if it took effect now, or `None` if taking effect now is
/// impossible or indistinguishable from not taking effect (a cas whose compare fails). The checker
/// already tries "it never took effect".
///
/// `Sync` and `Send` because the checker may search with two threads at once.
pub trait Model: Sync {
    /// The model's own, typed operation (parsed once by [`Model::prepare`]).
    /// `PartialEq`: equal ops of unknown outcome are interchangeable to the per-version search.
    type Op: Clone + fmt::Debug + PartialEq + Send + Sync;
    type State: Clone + Eq + Hash + fmt::Debug + Send;

    /// The name used on the command line and in reports.
    fn name(&self) -> &'static str;

    fn init(&self) -> Self::State;

    /// Interprets a paired operation. Failed operations (`fail`) come here too: a model drops
    /// them (Jepsen's reading: they did not happen) unless their failure is itself an observation.
    fn prepare(&self, op: &Operation) -> Result<Prepared<Self::Op>, ModelError>;

    /// The state after `op`, or `None` if `op` (with its observed result) is illegal in `state`.
    fn step(&self, state: &Self::State, op: &Self::Op) -> Option<Self::State>;

    fn describe_op(&self, op: &Self::Op) -> String;

    /// Whether `op` only observes `state`: if it is legal there and leaves it unchanged, any
    /// linearization that takes it later could take it now instead (it is legal now, and taking it
    /// out of its later place changes no state). The checker then linearizes it at once without
    /// trying the alternatives (reads commute). True for an op that never changes any state (a
    /// register's read); a model whose reads refine a partly unknown state answers for the
    /// states where that holds. Default: never.
    fn read_only(&self, _state: &Self::State, _op: &Self::Op) -> bool {
        false
    }

    fn describe_state(&self, state: &Self::State) -> String {
        format!("{state:?}")
    }

    /// For a model whose states carry a *version* that no step ever lowers and every change of
    /// state raises (the replica info's epochs): the version and the full state a completed
    /// `op` observed (a read's, or the state its change led to). Then in any linearization the
    /// ops' versions never go down, and ops that observed one version observed one state. The
    /// checker tests both on the whole history before it searches ([`crate::linearizability`]):
    /// an op invoked after another completed that observed an older version, or two states of
    /// one version, refute the history at once, however long it is. Default: no versions.
    fn observed_version(&self, _op: &Self::Op) -> Option<(Version, Self::State)> {
        None
    }

    /// The least version `state` may have, for a model with [`Model::observed_version`]s; with
    /// it the checker searches version by version ([`crate::linearizability`]). The contract,
    /// on which that search's invalid verdicts rest:
    /// - for every op and state with `step(state, op) == Some(next)`,
    ///   `state_version(next) >= state_version(state)`, and strictly greater when the op's
    ///   outcome is unknown (an op of unknown outcome that takes effect changes the version);
    /// - a completed op that observed `(version, observed)` leads from any state to exactly
    ///   `observed`, whose `state_version` is `version`;
    /// - ops of unknown outcome that are equal ([`PartialEq`] on [`Model::Op`]) are
    ///   interchangeable: `step` treats them alike (the search counts how many of a kind are
    ///   used, not which), so equality must not ignore anything `step` reads;
    /// - one version has one observed state: ops that observed the same version observed the
    ///   same state. A history that breaks this is not linearizable under the first two points;
    ///   the checker tests it itself before searching, so the model need not ensure it.
    ///
    /// Default: none.
    fn state_version(&self, _state: &Self::State) -> Option<Version> {
        None
    }

    /// About how many bytes `state` holds on the heap: the checker bounds its cache's memory.
    fn state_heap_bytes(&self, _state: &Self::State) -> usize {
        0
    }
}

/// The models [`crate::linearizability`] knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelName {
    CasRegister,
    Kv,
    ReplicaInfo,
}

impl ModelName {
    pub const ALL: [ModelName; 3] = [
        ModelName::CasRegister,
        ModelName::Kv,
        ModelName::ReplicaInfo,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ModelName::CasRegister => "cas-register",
            ModelName::Kv => "kv",
            ModelName::ReplicaInfo => "replica-info",
        }
    }

    /// The model whose operations these are, judged by their names: `read`/`write`/`cas` is a
    /// register, `get`/`put`/`append` a kv store, `elect`/`alter` replica info.
    pub fn infer(operations: &[Operation]) -> Option<ModelName> {
        let only = |names: &[&str]| operations.iter().all(|op| names.contains(&op.f.as_str()));
        if operations.is_empty() {
            None
        } else if only(&["read", "write", "cas"]) {
            Some(ModelName::CasRegister)
        } else if only(&["get", "put", "append"]) {
            Some(ModelName::Kv)
        } else if only(&["read", "elect", "alter"]) {
            Some(ModelName::ReplicaInfo)
        } else {
            None
        }
    }
}

/// A `--model` name that is none of [`ModelName::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown model {0:?} (cas-register, kv, replica-info)")]
pub struct UnknownModel(pub String);

impl std::str::FromStr for ModelName {
    type Err = UnknownModel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelName::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownModel(s.to_string()))
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
