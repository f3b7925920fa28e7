//! The split-brain checker: did two masters of one broker set acknowledge writes at the same
//! time?
//!
//! Every acknowledged `send` records the broker that acknowledged it (`"broker"`), and where it
//! put the message (`"topic"`, `"queue"`, `"offset"`: the queue offset the broker answered; with
//! several broker sets also `"set"`, queues of different sets being different logs). One
//! broker set keeps one log per queue, so:
//!
//! 1. **Conflicting positions**: two acknowledged sends of different values at the same
//!    (topic, queue, offset) mean two logs diverged. At most one survives; the other's
//!    acknowledged messages are lost. Different brokers: two masters at once.
//! 2. **Offsets going back in real time**: if send `a` was acknowledged before send `b` was
//!    invoked, in the same queue, `b`'s offset must be greater than `a`'s. When it is not, `b`
//!    was written on a log that did not hold `a`: a deposed master still acknowledging (when
//!    the brokers differ) or a log that lost `a` (truncation).
//!
//! Acknowledged sends that do not say which broker stored them are skipped and counted as
//! *unattributed*: the gRPC sends of [`crate::grpc_queue`] (the proxy answers an offset, not
//! the broker or the queue). The queue checker still covers them (lost, unexpected, order).
//!
//! It also reports each broker's *tenures*: maximal runs of consecutive acknowledgements (in
//! completion order) by one broker, with their time spans, for the report.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::record::{Event, Kind};

const SAMPLE: usize = 50;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ack {
    pub value: i64,
    pub broker: String,
    /// The broker set (empty in histories that do not record it: one set). Queues of
    /// different sets are different logs.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub set: String,
    pub topic: String,
    pub queue: i64,
    pub offset: i64,
    /// Nanoseconds since the start: invocation and acknowledgement.
    pub invoked: u64,
    pub acked: u64,
    pub index: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Anomaly {
    /// `conflicting-position` or `offset-regression`.
    pub kind: &'static str,
    /// Whether the two acknowledgements came from different brokers.
    pub two_masters: bool,
    pub first: Ack,
    pub second: Ack,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tenure {
    pub broker: String,
    pub from_ns: u64,
    pub to_ns: u64,
    pub acks: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitBrainReport {
    pub valid: bool,
    pub acks: usize,
    /// Acknowledged sends without a broker (through the gRPC proxy), not checked here.
    pub unattributed: usize,
    pub brokers: Vec<String>,
    pub two_masters: bool,
    pub anomaly_count: usize,
    pub anomalies: Vec<Anomaly>,
    pub tenures: Vec<Tenure>,
}

/// The acknowledged sends of `events` that say where they went.
pub fn acks(events: &[Event]) -> Vec<Ack> {
    let mut invoked: HashMap<u64, u64> = HashMap::new();
    let mut out = Vec::new();
    for event in events {
        let Some(process) = event.process.client() else {
            continue;
        };
        if event.f != "send" {
            continue;
        }
        match event.kind {
            Kind::Invoke => {
                invoked.insert(process, event.time);
            }
            Kind::Ok => {
                let start = invoked.remove(&process).unwrap_or(event.time);
                let (Some(value), Some(broker), Some(queue), Some(offset)) = (
                    event.value.as_i64(),
                    event.extra_str("broker"),
                    event.extra_i64("queue"),
                    event.extra_i64("offset"),
                ) else {
                    continue;
                };
                out.push(Ack {
                    value,
                    broker: broker.to_string(),
                    set: event.extra_str("set").unwrap_or_default().to_string(),
                    topic: event.extra_str("topic").unwrap_or_default().to_string(),
                    queue,
                    offset,
                    invoked: start,
                    acked: event.time,
                    index: event.index,
                });
            }
            _ => {
                invoked.remove(&process);
            }
        }
    }
    out
}

/// Anomaly 1, conflicting positions: two different values acknowledged at one queue position.
fn conflicting_positions(acks: &[Ack], anomalies: &mut Vec<Anomaly>) {
    let mut at: HashMap<(&str, &str, i64, i64), &Ack> = HashMap::new();
    for ack in acks {
        match at.get(&(ack.set.as_str(), ack.topic.as_str(), ack.queue, ack.offset)) {
            Some(first) if first.value != ack.value => anomalies.push(Anomaly {
                kind: "conflicting-position",
                two_masters: first.broker != ack.broker,
                first: (*first).clone(),
                second: ack.clone(),
            }),
            Some(_) => {}
            None => {
                at.insert(
                    (ack.set.as_str(), ack.topic.as_str(), ack.queue, ack.offset),
                    ack,
                );
            }
        }
    }
}

/// Anomaly 2, offsets going back in real time, per queue: sweep the acknowledgements in order
/// of acknowledgement, keeping the highest offset acknowledged so far; each send must land
/// above the highest acknowledged before it was invoked.
fn offset_regressions(acks: &[Ack], anomalies: &mut Vec<Anomaly>) {
    let mut by_queue: BTreeMap<(&str, &str, i64), Vec<&Ack>> = BTreeMap::new();
    for ack in acks {
        by_queue
            .entry((ack.set.as_str(), ack.topic.as_str(), ack.queue))
            .or_default()
            .push(ack);
    }
    for list in by_queue.values_mut() {
        list.sort_by_key(|a| a.acked);
        // prefix[i] = the ack with the highest offset among list[..=i].
        let mut prefix: Vec<&Ack> = Vec::with_capacity(list.len());
        for ack in list.iter() {
            let best = match prefix.last() {
                Some(top) if top.offset >= ack.offset => *top,
                _ => *ack,
            };
            prefix.push(best);
        }
        for ack in list.iter() {
            // Acknowledged strictly before this one was invoked.
            let before = list.partition_point(|a| a.acked < ack.invoked);
            if before == 0 {
                continue;
            }
            let top = prefix[before - 1];
            if top.offset >= ack.offset && top.value != ack.value {
                anomalies.push(Anomaly {
                    kind: "offset-regression",
                    two_masters: top.broker != ack.broker,
                    first: top.clone(),
                    second: (*ack).clone(),
                });
            }
        }
    }
}

/// Tenures, in acknowledgement order.
fn tenures(acks: &[Ack]) -> Vec<Tenure> {
    let mut ordered: Vec<&Ack> = acks.iter().collect();
    ordered.sort_by_key(|a| a.acked);
    let mut tenures: Vec<Tenure> = Vec::new();
    for ack in ordered {
        match tenures.last_mut() {
            Some(t) if t.broker == ack.broker => {
                t.to_ns = ack.acked;
                t.acks += 1;
            }
            _ => tenures.push(Tenure {
                broker: ack.broker.clone(),
                from_ns: ack.acked,
                to_ns: ack.acked,
                acks: 1,
            }),
        }
    }
    tenures
}

pub fn check(events: &[Event]) -> SplitBrainReport {
    let acks = acks(events);
    let unattributed = events
        .iter()
        .filter(|e| {
            e.f == "send"
                && e.kind == Kind::Ok
                && !e.is_nemesis()
                && e.extra_str("broker").is_none()
        })
        .count();
    let mut anomalies = Vec::new();
    conflicting_positions(&acks, &mut anomalies);
    offset_regressions(&acks, &mut anomalies);
    let tenures = tenures(&acks);
    let mut brokers: Vec<String> = acks.iter().map(|a| a.broker.clone()).collect();
    brokers.sort();
    brokers.dedup();
    let two_masters = anomalies.iter().any(|a| a.two_masters);
    SplitBrainReport {
        valid: anomalies.is_empty(),
        acks: acks.len(),
        unattributed,
        brokers,
        two_masters,
        anomaly_count: anomalies.len(),
        anomalies: anomalies.into_iter().take(SAMPLE).collect(),
        tenures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{extra, Event, Process};
    use serde_json::json;

    /// A send of `value` by `process`, invoked at `from` ms and acknowledged at `to` ms by
    /// `broker` at queue 0, `offset`.
    fn acked(
        out: &mut Vec<Event>,
        process: u64,
        value: i64,
        broker: &str,
        offset: i64,
        from: u64,
        to: u64,
    ) {
        let n = out.len() as u64;
        out.push(Event {
            index: n,
            time: from * 1_000_000,
            process: Process::Client(process),
            kind: Kind::Invoke,
            f: "send".to_string(),
            key: None,
            value: json!(value),
            extra: Default::default(),
        });
        out.push(Event {
            index: n + 1,
            time: to * 1_000_000,
            process: Process::Client(process),
            kind: Kind::Ok,
            f: "send".to_string(),
            key: None,
            value: json!(value),
            extra: extra([
                ("broker", json!(broker)),
                ("topic", json!("t")),
                ("queue", json!(0)),
                ("offset", json!(offset)),
            ]),
        });
    }

    fn sorted(mut events: Vec<Event>) -> Vec<Event> {
        events.sort_by_key(|e| e.time);
        for (i, e) in events.iter_mut().enumerate() {
            e.index = i as u64;
        }
        events
    }

    #[test]
    fn one_master_then_a_failover_is_fine() {
        let mut h = Vec::new();
        acked(&mut h, 0, 1, "A", 0, 0, 1);
        acked(&mut h, 0, 2, "A", 1, 2, 3);
        acked(&mut h, 0, 3, "B", 2, 10, 11);
        acked(&mut h, 1, 4, "B", 3, 12, 13);
        // A send through the proxy: acknowledged, but no broker to attribute it to.
        let n = h.len() as u64;
        h.push(Event {
            index: n,
            time: 20_000_000,
            process: Process::Client(5),
            kind: Kind::Ok,
            f: "send".to_string(),
            key: None,
            value: json!(9),
            extra: extra([("path", json!("grpc")), ("offset", json!(4))]),
        });
        let report = check(&sorted(h));
        assert!(report.valid, "{report:?}");
        assert_eq!(report.acks, 4);
        assert_eq!(report.unattributed, 1);
        assert_eq!(report.tenures.len(), 2);
        assert_eq!(report.brokers, vec!["A".to_string(), "B".to_string()]);
    }

    #[test]
    fn two_masters_writing_the_same_position_are_caught() {
        let mut h = Vec::new();
        acked(&mut h, 0, 1, "A", 0, 0, 1);
        // A and B both acknowledge offset 1, concurrently.
        acked(&mut h, 0, 2, "A", 1, 10, 12);
        acked(&mut h, 1, 3, "B", 1, 11, 13);
        let report = check(&sorted(h));
        assert!(!report.valid);
        assert!(report.two_masters);
        assert_eq!(report.anomalies[0].kind, "conflicting-position");
        assert_eq!(report.anomalies[0].first.value, 2);
        assert_eq!(report.anomalies[0].second.value, 3);
    }

    #[test]
    fn a_deposed_master_acknowledging_behind_the_new_one_is_caught() {
        let mut h = Vec::new();
        acked(&mut h, 0, 1, "A", 0, 0, 1);
        acked(&mut h, 1, 2, "B", 1, 5, 6);
        acked(&mut h, 1, 3, "B", 2, 7, 8);
        // A, cut off, still acknowledges offset 1 after B acknowledged 2.
        acked(&mut h, 0, 4, "A", 1, 9, 10);
        let report = check(&sorted(h));
        assert!(!report.valid);
        assert!(report.two_masters);
        assert!(report
            .anomalies
            .iter()
            .any(|a| a.kind == "offset-regression" && a.second.value == 4));
    }

    #[test]
    fn the_same_queue_position_in_two_broker_sets_is_no_conflict() {
        let mut h = Vec::new();
        acked(&mut h, 0, 1, "A", 0, 0, 1);
        acked(&mut h, 1, 2, "X", 0, 2, 3);
        acked(&mut h, 0, 3, "A", 1, 4, 5);
        let mut h = sorted(h);
        for e in h.iter_mut().filter(|e| e.kind == Kind::Ok) {
            let set = if e.extra_str("broker") == Some("X") {
                "broker-b"
            } else {
                "broker-a"
            };
            e.extra.insert("set".into(), json!(set));
        }
        let report = check(&h);
        assert!(report.valid, "{report:?}");
        // Without the sets, the same positions are two masters at once.
        for e in h.iter_mut() {
            e.extra.remove("set");
        }
        assert!(!check(&h).valid);
    }
}
