//! Recording a run's history as JSONL (the format [`crate::history`] documents): every client
//! operation as an `invoke` and its completion (`ok`, `fail`, or `info` when the outcome is
//! unknown), every nemesis action as a `"process":"nemesis"` `info` event. Extra fields
//! (`broker`, `queue`, `offset`, `latency_ms`...) ride along; the linearizability checker
//! ignores them, the queue and split-brain checkers read them.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

/// Who did it: a client process number, or the nemesis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Process {
    Client(u64),
    Named(String),
}

impl Process {
    pub fn nemesis() -> Self {
        Process::Named("nemesis".to_string())
    }
    pub fn client(&self) -> Option<u64> {
        match self {
            Process::Client(p) => Some(*p),
            Process::Named(_) => None,
        }
    }
}

/// One event of a recorded history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub index: u64,
    /// Nanoseconds since the run started.
    pub time: u64,
    pub process: Process,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub f: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default)]
    pub value: Json,
    /// Anything else (broker, queue, offset, error...).
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Invoke,
    Ok,
    Fail,
    Info,
}

impl Event {
    pub fn extra_str(&self, key: &str) -> Option<&str> {
        self.extra.get(key).and_then(Json::as_str)
    }
    pub fn extra_i64(&self, key: &str) -> Option<i64> {
        self.extra.get(key).and_then(Json::as_i64)
    }
    pub fn is_nemesis(&self) -> bool {
        self.process.client().is_none()
    }
}

struct Inner {
    out: Option<BufWriter<std::fs::File>>,
    events: Vec<Event>,
    next_index: u64,
}

/// A shared, thread-safe recorder. Events are appended to the file as they happen (flushed on
/// every nemesis event and at the end) and kept in memory for the checkers.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Mutex<Inner>>,
    start: Instant,
}

impl Recorder {
    /// Records into `path` (created or truncated).
    pub fn create(path: &Path) -> anyhow::Result<Recorder> {
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Recorder {
            inner: Arc::new(Mutex::new(Inner {
                out: Some(BufWriter::new(file)),
                events: Vec::new(),
                next_index: 0,
            })),
            start: Instant::now(),
        })
    }

    /// Records in memory only (tests).
    pub fn in_memory() -> Recorder {
        Recorder {
            inner: Arc::new(Mutex::new(Inner {
                out: None,
                events: Vec::new(),
                next_index: 0,
            })),
            start: Instant::now(),
        }
    }

    /// Nanoseconds since the run started.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn start_instant(&self) -> Instant {
        self.start
    }

    /// Appends one event; returns its index.
    pub fn record(
        &self,
        process: Process,
        kind: Kind,
        f: &str,
        value: Json,
        extra: Map<String, Json>,
    ) -> u64 {
        let mut inner = match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let index = inner.next_index;
        inner.next_index += 1;
        let event = Event {
            index,
            time: self.now(),
            process,
            kind,
            f: f.to_string(),
            key: None,
            value,
            extra,
        };
        let nemesis = event.is_nemesis();
        if let Some(out) = inner.out.as_mut() {
            let line = serde_json::to_string(&event).unwrap_or_default();
            let written =
                writeln!(out, "{line}").and_then(|()| if nemesis { out.flush() } else { Ok(()) });
            if let Err(e) = written {
                tracing::error!(error = %e, "cannot write the history; keeping it in memory only");
                inner.out = None;
            }
        }
        inner.events.push(event);
        index
    }

    pub fn invoke(&self, process: u64, f: &str, value: Json) -> u64 {
        self.record(Process::Client(process), Kind::Invoke, f, value, Map::new())
    }

    pub fn complete(
        &self,
        process: u64,
        kind: Kind,
        f: &str,
        value: Json,
        extra: Map<String, Json>,
    ) -> u64 {
        self.record(Process::Client(process), kind, f, value, extra)
    }

    /// A nemesis action (`start-...`/`stop-...`).
    pub fn nemesis(&self, f: &str, value: Json) -> u64 {
        tracing::info!(f, %value, "nemesis");
        self.record(Process::nemesis(), Kind::Info, f, value, Map::new())
    }

    pub fn flush(&self) {
        let mut inner = match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(out) = inner.out.as_mut() {
            if let Err(e) = out.flush() {
                tracing::error!(error = %e, "cannot flush the history");
            }
        }
    }

    /// A copy of every event so far.
    pub fn events(&self) -> Vec<Event> {
        match self.inner.lock() {
            Ok(guard) => guard.events.clone(),
            Err(poisoned) => poisoned.into_inner().events.clone(),
        }
    }
}

/// Reads a history file written by [`Recorder`].
pub fn read_events(text: &str) -> anyhow::Result<Vec<Event>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("line {}: not a history event", i + 1))
        })
        .collect()
}

/// Builds an `extra` map from pairs.
pub fn extra<const N: usize>(pairs: [(&str, Json); N]) -> Map<String, Json> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_round_trip_through_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("history.jsonl");
        let r = Recorder::create(&path).expect("create");
        r.invoke(3, "send", json!(7));
        r.complete(
            3,
            Kind::Ok,
            "send",
            json!(7),
            extra([("broker", json!("10.77.0.31:10911")), ("offset", json!(5))]),
        );
        r.nemesis("start-partition", json!({"kind": "halves"}));
        r.flush();
        let text = std::fs::read_to_string(&path).expect("read");
        let events = read_events(&text).expect("parse");
        assert_eq!(events, r.events());
        assert_eq!(events[1].extra_str("broker"), Some("10.77.0.31:10911"));
        assert_eq!(events[1].extra_i64("offset"), Some(5));
        assert!(events[2].is_nemesis());
        assert_eq!(events[2].process, Process::nemesis());
        assert!(text.contains("\"process\":\"nemesis\""), "{text}");
        // The linearizability checker's reader accepts the same file and skips the nemesis.
        let parsed = crate::history::parse_jsonl(&text).expect("history reader");
        assert_eq!(parsed.ops.len(), 2);
        assert_eq!(parsed.skipped, 1);
        assert!(read_events("{").is_err());
    }
}
