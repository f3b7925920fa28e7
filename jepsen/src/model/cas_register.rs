//! A compare-and-set register, initially nil: Knossos' `cas-register`, Porcupine's etcd model.
//!
//! | `f`     | invocation value | `ok` value      | meaning                                  |
//! |---------|------------------|-----------------|------------------------------------------|
//! | `read`  | ignored (nil)    | the value read  | legal iff the register holds that value  |
//! | `write` | the new value    | (same)          | always legal                             |
//! | `cas`   | `[old new]`      | (same)          | legal iff the register holds `old`       |
//!
//! `fail` means the operation did not happen (Jepsen), so failed operations are dropped, with one
//! exception chosen with [`CasRegister::failed_cas_observes`]: in Jepsen's etcd test a failed cas
//! means the compare failed, which tells us the register did *not* hold `old` at some point
//! within the operation. Porcupine checks the etcd histories that way, and some of their verdicts
//! depend on it.

use crate::history::{Operation, Outcome};
use crate::model::{Model, ModelError, Prepared};
use crate::value::Value;

#[derive(Debug, Clone, Default)]
pub struct CasRegister {
    /// Treat a failed `cas [old new]` as "the register did not hold `old`" instead of dropping it.
    pub failed_cas_observes: bool,
}

impl CasRegister {
    /// Jepsen's and Knossos' reading: failed operations did not happen.
    pub fn new() -> Self {
        Self::default()
    }

    /// Porcupine's etcd reading: a failed cas observed a value other than `old`.
    pub fn with_failed_cas_observing() -> Self {
        Self {
            failed_cas_observes: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOp {
    Read(Value),
    Write(Value),
    Cas {
        old: Value,
        new: Value,
    },
    /// A cas whose compare failed: the register did not hold `old`.
    CasFailed {
        old: Value,
    },
}

fn cas_args(op: &Operation) -> Result<(Value, Value), ModelError> {
    match op.input.as_list() {
        Some([old, new]) => Ok((old.clone(), new.clone())),
        _ => Err(ModelError::new(
            op,
            format!("a cas takes [old new], got {}", op.input),
        )),
    }
}

impl Model for CasRegister {
    type Op = CasOp;
    type State = Value;

    fn name(&self) -> &'static str {
        "cas-register"
    }

    fn init(&self) -> Value {
        Value::Nil
    }

    fn prepare(&self, op: &Operation) -> Result<Prepared<CasOp>, ModelError> {
        let prepared = match (op.f.as_str(), &op.outcome) {
            ("read", Outcome::Ok(value)) => Prepared::Check(CasOp::Read(value.clone())),
            ("read", _) => Prepared::Skip,
            ("write", Outcome::Failed(_)) => Prepared::Skip,
            ("write", _) => Prepared::Check(CasOp::Write(op.input.clone())),
            ("cas", Outcome::Failed(_)) => {
                let (old, _) = cas_args(op)?;
                if self.failed_cas_observes {
                    Prepared::Check(CasOp::CasFailed { old })
                } else {
                    Prepared::Skip
                }
            }
            ("cas", _) => {
                let (old, new) = cas_args(op)?;
                Prepared::Check(CasOp::Cas { old, new })
            }
            (f, _) => {
                return Err(ModelError::new(
                    op,
                    format!("the cas-register model knows read, write and cas, not {f}"),
                ))
            }
        };
        Ok(prepared)
    }

    fn step(&self, state: &Value, op: &CasOp) -> Option<Value> {
        match op {
            CasOp::Read(value) => (value == state).then(|| state.clone()),
            CasOp::Write(value) => Some(value.clone()),
            CasOp::Cas { old, new } => (old == state).then(|| new.clone()),
            CasOp::CasFailed { old } => (old != state).then(|| state.clone()),
        }
    }

    fn read_only(&self, _state: &Value, op: &CasOp) -> bool {
        // A read, and a cas that failed its compare, change no state.
        matches!(op, CasOp::Read(_) | CasOp::CasFailed { .. })
    }

    fn describe_op(&self, op: &CasOp) -> String {
        match op {
            CasOp::Read(value) => format!("read -> {value}"),
            CasOp::Write(value) => format!("write {value}"),
            CasOp::Cas { old, new } => format!("cas {old} -> {new}"),
            CasOp::CasFailed { old } => format!("cas from {old} failed"),
        }
    }

    fn describe_state(&self, state: &Value) -> String {
        state.to_string()
    }

    fn state_heap_bytes(&self, state: &Value) -> usize {
        state.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(f: &str, input: Value, outcome: Outcome) -> Operation {
        Operation {
            id: 0,
            process: 0,
            f: f.into(),
            key: None,
            input,
            outcome,
            call: 0,
            ret: None,
            index: 0,
        }
    }

    #[test]
    fn steps() {
        let model = CasRegister::new();
        let one = Value::Int(1);
        let two = Value::Int(2);
        assert_eq!(
            model.step(&Value::Nil, &CasOp::Read(Value::Nil)),
            Some(Value::Nil)
        );
        assert_eq!(model.step(&one, &CasOp::Read(two.clone())), None);
        assert_eq!(
            model.step(&one, &CasOp::Write(two.clone())),
            Some(two.clone())
        );
        let cas = CasOp::Cas {
            old: one.clone(),
            new: two.clone(),
        };
        assert_eq!(model.step(&one, &cas), Some(two.clone()));
        assert_eq!(model.step(&two, &cas), None);
        let failed = CasOp::CasFailed { old: one.clone() };
        assert_eq!(model.step(&one, &failed), None);
        assert_eq!(model.step(&two, &failed), Some(two));
    }

    #[test]
    fn prepares() {
        let model = CasRegister::new();
        let pair = Value::List(vec![Value::Int(1), Value::Int(2)]);
        assert_eq!(
            model.prepare(&op("read", Value::Nil, Outcome::Unknown)),
            Ok(Prepared::Skip)
        );
        assert_eq!(
            model.prepare(&op("cas", pair.clone(), Outcome::Failed(pair.clone()))),
            Ok(Prepared::Skip)
        );
        assert_eq!(
            CasRegister::with_failed_cas_observing().prepare(&op(
                "cas",
                pair.clone(),
                Outcome::Failed(pair.clone())
            )),
            Ok(Prepared::Check(CasOp::CasFailed { old: Value::Int(1) }))
        );
        assert_eq!(
            model.prepare(&op("write", Value::Int(3), Outcome::Unknown)),
            Ok(Prepared::Check(CasOp::Write(Value::Int(3))))
        );
        assert!(model
            .prepare(&op("cas", Value::Int(1), Outcome::Ok(Value::Int(1))))
            .is_err());
        assert!(model
            .prepare(&op("append", Value::Int(1), Outcome::Unknown))
            .is_err());
    }
}
