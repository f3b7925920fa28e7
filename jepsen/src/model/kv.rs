//! A key-value store of strings: Porcupine's kv model, checked one key at a time.
//!
//! | `f`      | invocation value | `ok` value     | meaning                                      |
//! |----------|------------------|----------------|----------------------------------------------|
//! | `get`    | ignored (nil)    | the value read | legal iff the key holds it                   |
//! | `put`    | the new value    | (ignored)      | the key now holds the value                  |
//! | `append` | a suffix         | (ignored)      | the key now holds its old value + the suffix |
//!
//! A key that was never written holds the empty string, as in Porcupine; a `get` of nil reads it
//! too (an absent key). Values are strings; integers are taken as their decimal text. Failed
//! operations did not happen; gets of unknown outcome are dropped.

use crate::history::{Operation, Outcome};
use crate::model::{Model, ModelError, Prepared};
use crate::value::Value;

#[derive(Debug, Clone, Copy, Default)]
pub struct Kv;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOp {
    Get(String),
    Put(String),
    Append(String),
}

fn text(op: &Operation, value: &Value, what: &str) -> Result<String, ModelError> {
    match value {
        Value::Str(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        Value::Nil if what == "get" => Ok(String::new()),
        other => Err(ModelError::new(
            op,
            format!("the kv model stores strings; {what} has {other}"),
        )),
    }
}

impl Model for Kv {
    type Op = KvOp;
    type State = String;

    fn name(&self) -> &'static str {
        "kv"
    }

    fn init(&self) -> String {
        String::new()
    }

    fn prepare(&self, op: &Operation) -> Result<Prepared<KvOp>, ModelError> {
        let prepared = match (op.f.as_str(), &op.outcome) {
            (_, Outcome::Failed(_)) if ["get", "put", "append"].contains(&op.f.as_str()) => {
                Prepared::Skip
            }
            ("get", Outcome::Ok(value)) => Prepared::Check(KvOp::Get(text(op, value, "get")?)),
            ("get", _) => Prepared::Skip,
            ("put", _) => Prepared::Check(KvOp::Put(text(op, &op.input, "put")?)),
            ("append", _) => Prepared::Check(KvOp::Append(text(op, &op.input, "append")?)),
            (f, _) => {
                return Err(ModelError::new(
                    op,
                    format!("the kv model knows get, put and append, not {f}"),
                ))
            }
        };
        Ok(prepared)
    }

    fn step(&self, state: &String, op: &KvOp) -> Option<String> {
        match op {
            KvOp::Get(value) => (value == state).then(|| state.clone()),
            KvOp::Put(value) => Some(value.clone()),
            KvOp::Append(suffix) => Some(format!("{state}{suffix}")),
        }
    }

    fn read_only(&self, _state: &String, op: &KvOp) -> bool {
        matches!(op, KvOp::Get(_))
    }

    fn describe_op(&self, op: &KvOp) -> String {
        match op {
            KvOp::Get(value) => format!("get -> {value:?}"),
            KvOp::Put(value) => format!("put {value:?}"),
            KvOp::Append(value) => format!("append {value:?}"),
        }
    }

    fn describe_state(&self, state: &String) -> String {
        format!("{state:?}")
    }

    fn state_heap_bytes(&self, state: &String) -> usize {
        state.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_like_porcupine() {
        let kv = Kv;
        let state = kv.init();
        let state = kv
            .step(&state, &KvOp::Append("x 0 0 y".into()))
            .expect("append is always legal");
        assert_eq!(
            kv.step(&state, &KvOp::Get("x 0 0 y".into())),
            Some(state.clone())
        );
        assert_eq!(kv.step(&state, &KvOp::Get(String::new())), None);
        let state = kv
            .step(&state, &KvOp::Append("x 1 0 y".into()))
            .expect("append is always legal");
        assert_eq!(state, "x 0 0 yx 1 0 y");
        assert_eq!(kv.step(&state, &KvOp::Put("z".into())), Some("z".into()));
    }
}
