//! [`Value`]: the data an operation carries, whatever format its history came in.
//!
//! JSON and EDN values both land here. Unlike `serde_json::Value` it is `Eq + Hash + Ord`, because
//! model states are made of values and the checker memoizes on states. EDN keywords and symbols
//! become strings without their colon (`:timed-out` -> `"timed-out"`), sets become sorted lists,
//! and map keys become strings.

use std::collections::BTreeMap;
use std::fmt;

/// A float compared and hashed by its bits, so that [`Value`] can be `Eq + Hash`.
#[derive(Debug, Clone, Copy)]
pub struct Float(pub f64);

impl PartialEq for Float {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}
impl Eq for Float {}
impl std::hash::Hash for Float {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}
impl PartialOrd for Float {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Float {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A JSON/EDN datum.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Value {
    #[default]
    Nil,
    Bool(bool),
    Int(i64),
    Float(Float),
    /// Strings, and EDN keywords, symbols and characters.
    Str(String),
    /// JSON arrays and EDN vectors, lists and (sorted) sets.
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
}

impl Value {
    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&BTreeMap<String, Value>> {
        match self {
            Value::Map(map) => Some(map),
            _ => None,
        }
    }

    /// A map field by name; `snake_case` names also match their `kebab-case` spelling, which is
    /// how the same field usually looks in EDN.
    pub fn field(&self, name: &str) -> Option<&Value> {
        let map = self.as_map()?;
        map.get(name)
            .or_else(|| map.get(name.replace('_', "-").as_str()))
    }

    /// About how many bytes the value holds on the heap (for memory bounds).
    pub fn heap_bytes(&self) -> usize {
        match self {
            Value::Nil | Value::Bool(_) | Value::Int(_) | Value::Float(_) => 0,
            Value::Str(s) => s.capacity(),
            Value::List(items) => {
                items.capacity() * std::mem::size_of::<Value>()
                    + items.iter().map(Value::heap_bytes).sum::<usize>()
            }
            Value::Map(map) => map
                .iter()
                .map(|(k, v)| 16 + k.capacity() + std::mem::size_of::<Value>() + v.heap_bytes())
                .sum(),
        }
    }

    /// The text used as a map key or a partition key: strings as they are, anything else printed.
    pub fn to_key_string(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

impl From<&serde_json::Value> for Value {
    fn from(json: &serde_json::Value) -> Self {
        match json {
            serde_json::Value::Null => Value::Nil,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(Float(n.as_f64().unwrap_or(f64::NAN))),
            },
            serde_json::Value::String(s) => Value::Str(s.clone()),
            serde_json::Value::Array(items) => Value::List(items.iter().map(Value::from).collect()),
            serde_json::Value::Object(map) => Value::Map(
                map.iter()
                    .map(|(k, v)| (k.clone(), Value::from(v)))
                    .collect(),
            ),
        }
    }
}

impl From<&Value> for serde_json::Value {
    fn from(value: &Value) -> Self {
        match value {
            Value::Nil => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(f.0)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::List(items) => {
                serde_json::Value::Array(items.iter().map(serde_json::Value::from).collect())
            }
            Value::Map(map) => serde_json::Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::from(v)))
                    .collect(),
            ),
        }
    }
}

/// Compact, JSON-like printing (`nil` for null, as in Jepsen output).
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Nil => write!(f, "nil"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{}", x.0),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::List(items) => {
                write!(f, "[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, " ")?;
                    }
                    write!(f, "{item}")?;
                }
                write!(f, "]")
            }
            Value::Map(map) => {
                write!(f, "{{")?;
                for (i, (k, v)) in map.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{k} {v}")?;
                }
                write!(f, "}}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip() {
        let json: serde_json::Value =
            serde_json::from_str(r#"{"a":[1,2.5,"x",null,true],"b":{"c":-3}}"#)
                .expect("valid JSON");
        let value = Value::from(&json);
        assert_eq!(
            value.field("b").and_then(|b| b.field("c")),
            Some(&Value::Int(-3))
        );
        assert_eq!(serde_json::Value::from(&value), json);
    }

    #[test]
    fn field_accepts_kebab_case() {
        let value = Value::Map(BTreeMap::from([(
            "master-epoch".to_string(),
            Value::Int(2),
        )]));
        assert_eq!(value.field("master_epoch"), Some(&Value::Int(2)));
    }

    #[test]
    fn display_is_compact() {
        let value = Value::List(vec![Value::Int(1), Value::Nil, Value::Str("a".into())]);
        assert_eq!(value.to_string(), r#"[1 nil "a"]"#);
    }
}
