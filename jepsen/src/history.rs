//! Histories: what clients did and saw, read from our JSONL or from Jepsen's and Porcupine's files.
//!
//! A history is a sequence of events in real-time order. Each client *process* invokes an operation
//! (`invoke`) and later sees it complete: `ok` (it happened, with this result), `fail` (it certainly
//! did not happen) or `info` (unknown: it may have happened at any time after its invocation, or
//! never). A process has at most one operation in flight. This is Jepsen's model.
//!
//! # Our JSONL
//! One JSON object per line, in the order the events happened (the order of the lines is the
//! real-time order; `time` is informational):
//!
//! ```text
//! {"process":0,"type":"invoke","f":"write","key":"k","value":3,"time":123}
//! {"process":0,"type":"ok","f":"write","key":"k","value":3,"time":456}
//! ```
//!
//! - `process`: an integer. A string (`"nemesis"`) marks a line that is not a client operation;
//!   it is skipped, as Jepsen's nemesis operations are.
//! - `type`: `invoke`, `ok`, `fail` or `info`.
//! - `f`: the operation's name; each model says which it knows ([`crate::model`]).
//! - `key` (optional): operations on different keys are independent and checked separately.
//!   A string or a number (read as its decimal text).
//! - `value` (optional, default `null`): for an invocation its argument, for an `ok` its result
//!   (a read invokes `null` and completes with what it read; a cas invokes and completes `[old, new]`).
//! - `time` (optional, integer, any unit), `index` (optional): kept for reports.
//!
//! Empty lines are skipped. Unknown fields are ignored.
//!
//! # Other formats (detected from the content by [`Format::detect`])
//! - **EDN** (Jepsen, Knossos): a vector or list of op maps, or one map per line, with the same
//!   fields as keywords (`{:process 0, :type :invoke, :f :cas, :value [1 2]}`). Ops whose `:process`
//!   is not an integer (`:nemesis`) are skipped.
//! - **etcd log** (Porcupine's `test_data/jepsen`): `INFO  jepsen.util - <process>\t:<type>\t:<f>\t<value>`
//!   lines; other lines of the log are skipped.
//! - **Porcupine kv** (`test_data/kv`): EDN maps, one per line, with `:key` and `:f :get|:put|:append`.
//!   Read by the EDN reader; only the name differs.
//!
//! [`pair`] turns the events into [`Operation`]s, each an invocation with its completion.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::edn;
use crate::value::Value;

/// The kind of a history event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    Invoke,
    Ok,
    Fail,
    Info,
}

impl OpType {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "invoke" => Some(OpType::Invoke),
            "ok" => Some(OpType::Ok),
            "fail" => Some(OpType::Fail),
            "info" => Some(OpType::Info),
            _ => None,
        }
    }
}

impl fmt::Display for OpType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpType::Invoke => "invoke",
            OpType::Ok => "ok",
            OpType::Fail => "fail",
            OpType::Info => "info",
        })
    }
}

/// One event of a history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Op {
    /// Position in the history (0-based, client events only), or the file's own `index`.
    pub index: u64,
    pub process: u64,
    #[serde(rename = "type")]
    pub kind: OpType,
    pub f: String,
    pub key: Option<String>,
    #[serde(serialize_with = "serialize_value")]
    pub value: Value,
    pub time: Option<i64>,
    /// Line of the file the event was read from (1-based), for error messages.
    #[serde(skip)]
    pub line: usize,
}

fn serialize_value<S: serde::Serializer>(value: &Value, serializer: S) -> Result<S::Ok, S::Error> {
    serde_json::Value::from(value).serialize(serializer)
}

/// The history formats we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Edn,
    EtcdLog,
    PorcupineKv,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Edn => "edn",
            Format::EtcdLog => "etcd-log",
            Format::PorcupineKv => "porcupine-kv",
        }
    }

    /// Guesses the format from the content: a line holding `jepsen.util -` means an etcd log; a
    /// first form that is a JSON object means JSONL; EDN otherwise, called Porcupine kv when its
    /// first op has a `:key` and `:f` of `get`, `put` or `append`.
    pub fn detect(text: &str) -> Result<Format, HistoryError> {
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with(';'));
        let Some(first) = lines.next() else {
            return Err(HistoryError::at(0, "the history is empty"));
        };
        if text.lines().take(1000).any(is_etcd_log_line) {
            return Ok(Format::EtcdLog);
        }
        if first.starts_with('{') && serde_json::from_str::<serde_json::Value>(first).is_ok() {
            return Ok(Format::Jsonl);
        }
        if first.starts_with('{')
            || first.starts_with('[')
            || first.starts_with('(')
            || first.starts_with('#')
        {
            let kv_line = first.contains(":key")
                && [":get", ":put", ":append"]
                    .iter()
                    .any(|f| first.contains(f));
            return Ok(if kv_line && first.starts_with('{') {
                Format::PorcupineKv
            } else {
                Format::Edn
            });
        }
        Err(HistoryError::at(
            1,
            "unrecognised history format (expected JSONL, EDN, an etcd log or Porcupine kv)",
        ))
    }
}

/// A `--format` name that is no [`Format`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format {0:?} (jsonl, edn, etcd-log, porcupine-kv)")]
pub struct UnknownFormat(pub String);

impl std::str::FromStr for Format {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "jsonl" => Ok(Format::Jsonl),
            "edn" => Ok(Format::Edn),
            "etcd-log" => Ok(Format::EtcdLog),
            "porcupine-kv" => Ok(Format::PorcupineKv),
            other => Err(UnknownFormat(other.to_string())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("line {line}: {message}")]
    Malformed { line: usize, message: String },
    #[error(transparent)]
    Edn(#[from] edn::EdnError),
}

impl HistoryError {
    fn at(line: usize, message: impl Into<String>) -> Self {
        HistoryError::Malformed {
            line,
            message: message.into(),
        }
    }
}

/// A parsed history: its client events and what was skipped.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub ops: Vec<Op>,
    /// Events that are not client operations (nemesis) or lines of a log that hold no event.
    pub skipped: usize,
}

/// Parses `text` in `format` (use [`Format::detect`] to pick one).
pub fn parse(text: &str, format: Format) -> Result<History, HistoryError> {
    match format {
        Format::Jsonl => parse_jsonl(text),
        Format::Edn | Format::PorcupineKv => parse_edn(text),
        Format::EtcdLog => parse_etcd_log(text),
    }
}

/// Detects the format, then parses.
pub fn parse_auto(text: &str) -> Result<(Format, History), HistoryError> {
    let format = Format::detect(text)?;
    Ok((format, parse(text, format)?))
}

/// Our JSONL (see the module documentation).
pub fn parse_jsonl(text: &str) -> Result<History, HistoryError> {
    let mut history = History::default();
    for (number, line) in text.lines().enumerate() {
        let line_no = number + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let json: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| HistoryError::at(line_no, format!("not JSON: {e}")))?;
        let value = Value::from(&json);
        if value.as_map().is_none() {
            return Err(HistoryError::at(line_no, "expected a JSON object"));
        }
        push_map_op(&mut history, &value, line_no)?;
    }
    Ok(history)
}

/// Jepsen/Knossos EDN: a vector (or list) of op maps, or op maps one after another.
pub fn parse_edn(text: &str) -> Result<History, HistoryError> {
    let forms = edn::read_history_forms(text)?;
    let mut history = History::default();
    for (line, value) in &forms {
        if value.as_map().is_none() {
            return Err(HistoryError::at(
                *line,
                format!("expected an op map, found {value}"),
            ));
        }
        push_map_op(&mut history, value, *line)?;
    }
    Ok(history)
}

/// Reads one op map (JSON or EDN) into the history.
fn push_map_op(history: &mut History, map: &Value, line: usize) -> Result<(), HistoryError> {
    let process = match map.field("process") {
        Some(Value::Int(p)) if *p >= 0 => *p as u64,
        Some(Value::Int(p)) => {
            return Err(HistoryError::at(line, format!("negative process {p}")));
        }
        // `:nemesis` and other named processes are not clients.
        Some(Value::Str(_)) => {
            history.skipped += 1;
            return Ok(());
        }
        Some(other) => {
            return Err(HistoryError::at(line, format!("bad process {other}")));
        }
        None => return Err(HistoryError::at(line, "missing process")),
    };
    let kind = match map.field("type") {
        Some(Value::Str(t)) => {
            OpType::parse(t).ok_or_else(|| HistoryError::at(line, format!("unknown type {t:?}")))?
        }
        Some(other) => return Err(HistoryError::at(line, format!("bad type {other}"))),
        None => return Err(HistoryError::at(line, "missing type")),
    };
    let f = match map.field("f") {
        Some(Value::Str(f)) => f.clone(),
        Some(other) => return Err(HistoryError::at(line, format!("bad f {other}"))),
        None => return Err(HistoryError::at(line, "missing f")),
    };
    let key = match map.field("key") {
        None | Some(Value::Nil) => None,
        Some(Value::Str(k)) => Some(k.clone()),
        Some(Value::Int(k)) => Some(k.to_string()),
        Some(other) => return Err(HistoryError::at(line, format!("bad key {other}"))),
    };
    let value = map.field("value").cloned().unwrap_or(Value::Nil);
    let time = map.field("time").and_then(Value::as_int);
    let index = match map.field("index").and_then(Value::as_int) {
        Some(i) if i >= 0 => i as u64,
        _ => history.ops.len() as u64,
    };
    history.ops.push(Op {
        index,
        process,
        kind,
        f,
        key,
        value,
        time,
        line,
    });
    Ok(())
}

fn is_etcd_log_line(line: &str) -> bool {
    etcd_log_fields(line).is_some()
}

/// `INFO  jepsen.util - 3\t:invoke\t:cas\t[1 2]` -> ("3", ":invoke", ":cas", "[1 2]").
fn etcd_log_fields(line: &str) -> Option<(&str, &str, &str, &str)> {
    let (_, rest) = line.split_once("jepsen.util - ")?;
    let mut fields = rest.trim_start().splitn(2, char::is_whitespace);
    let process = fields.next()?;
    let rest = fields.next()?.trim_start();
    let mut fields = rest.splitn(2, char::is_whitespace);
    let kind = fields.next()?;
    let rest = fields.next()?.trim_start();
    let mut fields = rest.splitn(2, char::is_whitespace);
    let f = fields.next()?;
    let value = fields.next().unwrap_or("nil").trim();
    kind.starts_with(':').then_some((process, kind, f, value))
}

/// Porcupine's etcd logs (Jepsen's log lines): `INFO  jepsen.util - <process>\t:<type>\t:<f>\t<value>`.
/// Lines without `jepsen.util - ` are skipped, and so are those of a named process (`:nemesis`).
pub fn parse_etcd_log(text: &str) -> Result<History, HistoryError> {
    let mut history = History::default();
    for (number, line) in text.lines().enumerate() {
        let line_no = number + 1;
        let Some((process, kind, f, value)) = etcd_log_fields(line) else {
            if !line.trim().is_empty() {
                history.skipped += 1;
            }
            continue;
        };
        let Ok(process) = process.parse::<u64>() else {
            history.skipped += 1;
            continue;
        };
        let kind = OpType::parse(&kind[1..])
            .ok_or_else(|| HistoryError::at(line_no, format!("unknown type {kind}")))?;
        let f = f
            .strip_prefix(':')
            .ok_or_else(|| HistoryError::at(line_no, format!("bad f {f:?}")))?;
        let value = edn::read_one(value).map_err(|e| {
            HistoryError::at(line_no, format!("bad value {value:?}: {}", e.message))
        })?;
        history.ops.push(Op {
            index: history.ops.len() as u64,
            process,
            kind,
            f: f.to_string(),
            key: None,
            value,
            time: None,
            line: line_no,
        });
    }
    Ok(history)
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It happened; the completion's value (a read's result, a cas's `[old new]`...).
    Ok(Value),
    /// It certainly did not happen; the completion's value.
    Failed(Value),
    /// `info`, or never completed: it may have happened at any time after its invocation, or never.
    Unknown,
}

/// An invocation paired with its completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    /// Dense id, in invocation order.
    pub id: usize,
    pub process: u64,
    pub f: String,
    pub key: Option<String>,
    /// The invocation's value (the argument).
    pub input: Value,
    pub outcome: Outcome,
    /// Position of the invocation among the history's events.
    pub call: usize,
    /// Position of the completion; `None` for an unknown outcome (its return is at +infinity).
    pub ret: Option<usize>,
    /// The invocation's `index` (from the file, or its position), for reports.
    pub index: u64,
}

impl Operation {
    /// The value that says what the operation observed: the completion's for `ok`/`fail`, else the
    /// invocation's.
    pub fn output(&self) -> Option<&Value> {
        match &self.outcome {
            Outcome::Ok(v) | Outcome::Failed(v) => Some(v),
            Outcome::Unknown => None,
        }
    }
}

/// What [`pair`] noticed while pairing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairStats {
    /// Invocations never completed (treated as `info`).
    pub incomplete: usize,
    /// Invocations superseded by a new invocation of the same process before completing (treated
    /// as `info`; Jepsen never does this, a malformed history might).
    pub superseded: usize,
}

/// Pairs each invocation with the next completion of the same process.
///
/// A completion without an invocation is an error (with its line); an invocation without a
/// completion is treated as `info`.
pub fn pair(ops: &[Op]) -> Result<(Vec<Operation>, PairStats), HistoryError> {
    let mut operations: Vec<Operation> = Vec::new();
    let mut pending: BTreeMap<u64, usize> = BTreeMap::new();
    let mut stats = PairStats::default();
    for (position, op) in ops.iter().enumerate() {
        match op.kind {
            OpType::Invoke => {
                if pending.contains_key(&op.process) {
                    stats.superseded += 1;
                    tracing::warn!(
                        line = op.line,
                        process = op.process,
                        "process invoked again before its previous operation completed; \
                         treating the previous one as info"
                    );
                }
                pending.insert(op.process, operations.len());
                operations.push(Operation {
                    id: operations.len(),
                    process: op.process,
                    f: op.f.clone(),
                    key: op.key.clone(),
                    input: op.value.clone(),
                    outcome: Outcome::Unknown,
                    call: position,
                    ret: None,
                    index: op.index,
                });
            }
            OpType::Ok | OpType::Fail | OpType::Info => {
                let Some(id) = pending.remove(&op.process) else {
                    return Err(HistoryError::at(
                        op.line,
                        format!(
                            "process {} completes ({} {}) an operation it never invoked",
                            op.process, op.kind, op.f
                        ),
                    ));
                };
                let operation = &mut operations[id];
                if operation.f != op.f {
                    return Err(HistoryError::at(
                        op.line,
                        format!(
                            "process {} invoked {} but completes {}",
                            op.process, operation.f, op.f
                        ),
                    ));
                }
                match op.kind {
                    OpType::Ok => {
                        operation.outcome = Outcome::Ok(op.value.clone());
                        operation.ret = Some(position);
                    }
                    OpType::Fail => {
                        operation.outcome = Outcome::Failed(op.value.clone());
                        operation.ret = Some(position);
                    }
                    _ => {}
                }
            }
        }
    }
    stats.incomplete = pending.len();
    Ok((operations, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_jsonl_and_skips_the_nemesis() {
        let text = r#"{"process":0,"type":"invoke","f":"write","key":"k","value":3,"time":123}

{"process":"nemesis","type":"info","f":"start","value":null}
{"process":0,"type":"ok","f":"write","key":7,"value":3,"time":456,"index":9}
"#;
        assert_eq!(Format::detect(text), Ok(Format::Jsonl));
        let history = parse_jsonl(text).expect("valid history");
        assert_eq!(history.skipped, 1);
        assert_eq!(history.ops.len(), 2);
        assert_eq!(history.ops[0].kind, OpType::Invoke);
        assert_eq!(history.ops[0].key.as_deref(), Some("k"));
        assert_eq!(history.ops[0].time, Some(123));
        assert_eq!(history.ops[1].key.as_deref(), Some("7"));
        assert_eq!(history.ops[1].index, 9);
        assert_eq!(history.ops[1].line, 4);
    }

    #[test]
    fn jsonl_errors_name_the_line() {
        let err = parse_jsonl("{\"process\":0,\"type\":\"invoke\",\"f\":\"read\"}\n{oops")
            .expect_err("bad JSON");
        assert!(err.to_string().starts_with("line 2:"), "{err}");
        let err = parse_jsonl(r#"{"process":0,"type":"begin","f":"read"}"#).expect_err("bad type");
        assert!(err.to_string().contains("unknown type"), "{err}");
        let err = parse_jsonl(r#"{"type":"ok","f":"read"}"#).expect_err("no process");
        assert!(err.to_string().contains("missing process"), "{err}");
    }

    #[test]
    fn parses_edn_vectors_and_lines() {
        let vector = "[{:process 0, :type :invoke, :f :cas, :value [1 2]}\n ; comment\n {:process :nemesis :type :info :f :start}\n {:process 0 :type :fail :f :cas :value [1 2]}]";
        assert_eq!(Format::detect(vector), Ok(Format::Edn));
        let history = parse_edn(vector).expect("valid history");
        assert_eq!(history.ops.len(), 2);
        assert_eq!(history.skipped, 1);
        assert_eq!(
            history.ops[0].value,
            Value::List(vec![Value::Int(1), Value::Int(2)])
        );
        assert_eq!(history.ops[1].kind, OpType::Fail);
        // Each op of a vector keeps its own line, for error messages.
        assert_eq!(history.ops[1].line, 4);
        let err =
            parse_edn("[{:process 0 :type :invoke :f :read}\n {:process 0 :type :done :f :read}]")
                .expect_err("bad type");
        assert!(err.to_string().starts_with("line 2:"), "{err}");

        let lines = "{:process 1, :type :invoke, :f :read, :value nil}\n{:process 1, :type :ok, :f :read, :value 5}\n";
        let history = parse_edn(lines).expect("valid history");
        assert_eq!(history.ops[1].value, Value::Int(5));
        assert_eq!(history.ops[1].line, 2);
    }

    #[test]
    fn parses_porcupine_kv() {
        let text = "{:process 0, :type :invoke, :f :append, :key \"4\", :value \"x 0 1 y\"}\n{:process 0, :type :ok, :f :append, :key \"4\", :value \"x 0 1 y\"}\n";
        assert_eq!(Format::detect(text), Ok(Format::PorcupineKv));
        let history = parse(text, Format::PorcupineKv).expect("valid history");
        assert_eq!(history.ops[0].f, "append");
        assert_eq!(history.ops[0].key.as_deref(), Some("4"));
        assert_eq!(history.ops[0].value, Value::Str("x 0 1 y".into()));
    }

    #[test]
    fn parses_etcd_logs() {
        let text = "INFO  jepsen.core - Worker 0 starting\nINFO  jepsen.util - 2\t:invoke\t:cas\t[3 0]\nINFO  jepsen.util - :nemesis\t:info\t:start\tnil\nINFO  jepsen.util - 2\t:info\t:cas\t:timed-out\nINFO  jepsen.util - 0\t:ok\t:read\tnil\n";
        assert_eq!(Format::detect(text), Ok(Format::EtcdLog));
        let history = parse_etcd_log(text).expect("valid history");
        assert_eq!(history.skipped, 2);
        assert_eq!(history.ops.len(), 3);
        assert_eq!(history.ops[0].process, 2);
        assert_eq!(history.ops[0].f, "cas");
        assert_eq!(
            history.ops[0].value,
            Value::List(vec![Value::Int(3), Value::Int(0)])
        );
        assert_eq!(history.ops[1].kind, OpType::Info);
        assert_eq!(history.ops[1].value, Value::Str("timed-out".into()));
        assert_eq!(history.ops[2].value, Value::Nil);
        let err =
            parse_etcd_log("INFO  jepsen.util - 1\t:invoke\t:write\t[1").expect_err("bad value");
        assert!(err.to_string().starts_with("line 1:"), "{err}");
    }

    #[test]
    fn detect_refuses_garbage_and_empty_input() {
        assert!(Format::detect("").is_err());
        assert!(Format::detect("hello world\n").is_err());
    }

    #[test]
    fn pairs_invocations_with_completions() {
        let text = r#"{"process":0,"type":"invoke","f":"write","value":1}
{"process":1,"type":"invoke","f":"read","value":null}
{"process":2,"type":"invoke","f":"write","value":2}
{"process":3,"type":"invoke","f":"write","value":3}
{"process":1,"type":"ok","f":"read","value":1}
{"process":0,"type":"ok","f":"write","value":1}
{"process":2,"type":"fail","f":"write","value":2}
{"process":3,"type":"info","f":"write","value":3}
{"process":4,"type":"invoke","f":"write","value":4}
"#;
        let history = parse_jsonl(text).expect("valid history");
        let (ops, stats) = pair(&history.ops).expect("pairs");
        assert_eq!(ops.len(), 5);
        assert_eq!(stats.incomplete, 1);
        assert_eq!((ops[0].call, ops[0].ret), (0, Some(5)));
        assert_eq!(ops[1].outcome, Outcome::Ok(Value::Int(1)));
        assert_eq!(ops[1].input, Value::Nil);
        assert_eq!(ops[2].outcome, Outcome::Failed(Value::Int(2)));
        assert_eq!(
            (ops[3].outcome.clone(), ops[3].ret),
            (Outcome::Unknown, None)
        );
        assert_eq!(
            (ops[4].outcome.clone(), ops[4].ret),
            (Outcome::Unknown, None)
        );
    }

    #[test]
    fn pairing_refuses_orphan_completions() {
        let history = parse_jsonl(r#"{"process":5,"type":"ok","f":"read","value":1}"#)
            .expect("valid history");
        let err = pair(&history.ops).expect_err("orphan");
        assert!(err.to_string().contains("never invoked"), "{err}");
    }
}
