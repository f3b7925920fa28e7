//! The queue checker (Jepsen's `total-queue`, plus per-group FIFO order), over a history
//! recorded by [`crate::record`].
//!
//! Operations it reads:
//! - `send`: invoked with a unique integer value (and `"group"` for FIFO sends), completed `ok`
//!   (acknowledged), `fail` (certainly not stored) or `info` (unknown).
//! - `pop`: completed `ok` with a list of delivered messages, `[{"value": 3, ...}, ...]` (or bare
//!   integers). Deliveries of the final drain are pops too.
//!
//! After a final drain: every acknowledged send must have been delivered (else **lost**);
//! nothing that was never sent, or whose send certainly failed, may be delivered
//! (**unexpected**); deliveries of one value more than once are **duplicated** (allowed:
//! at-least-once); an unknown send that was delivered is **recovered**. For FIFO groups the
//! first deliveries of a group's acknowledged values must follow the order in which they were
//! acknowledged (the group's producer sends one at a time): a new value delivered after a later
//! one of its group is an **order violation**. Redeliveries of older values are not.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use serde_json::Value as Json;

use crate::record::{Event, Kind};

/// Lists in the report are cut to this many entries (counts stay exact).
const SAMPLE: usize = 50;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OrderViolation {
    pub group: String,
    /// The value delivered late.
    pub value: i64,
    /// A value of the same group acknowledged after `value` but delivered before it.
    pub delivered_after: i64,
    /// History index of the delivery.
    pub index: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QueueReport {
    pub valid: bool,
    pub attempted: usize,
    pub acknowledged: usize,
    pub failed: usize,
    pub unknown: usize,
    pub delivered: usize,
    pub delivered_unique: usize,
    pub lost_count: usize,
    pub lost: Vec<i64>,
    pub unexpected_count: usize,
    pub unexpected: Vec<i64>,
    pub duplicated_count: usize,
    pub duplicated: Vec<(i64, usize)>,
    pub recovered_count: usize,
    pub order_violation_count: usize,
    pub order_violations: Vec<OrderViolation>,
    pub fifo_groups: usize,
}

fn values_of(delivery: &Json) -> Vec<i64> {
    match delivery {
        Json::Array(items) => items
            .iter()
            .filter_map(|item| match item {
                Json::Number(n) => n.as_i64(),
                Json::Object(map) => map.get("value").and_then(Json::as_i64),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum SendOutcome {
    Pending,
    Ok,
    Fail,
    Info,
}

/// What the checks need of a history: every send's outcome, the acknowledged values of each
/// FIFO group in acknowledgement order, and every delivery.
#[derive(Default)]
struct Sends {
    /// value -> outcome.
    outcome: HashMap<i64, SendOutcome>,
    /// group -> acknowledged values in acknowledgement order.
    group_acks: BTreeMap<String, Vec<i64>>,
    /// (event index, value) of every delivery.
    deliveries: Vec<(u64, i64)>,
}

/// Reads `events` (in history order) into [`Sends`].
fn read_sends(events: &[Event]) -> Sends {
    let mut sends = Sends::default();
    // value -> group.
    let mut group_of: HashMap<i64, String> = HashMap::new();
    // process -> value of its send in flight.
    let mut in_flight: HashMap<u64, i64> = HashMap::new();
    for event in events {
        let Some(process) = event.process.client() else {
            continue;
        };
        match (event.f.as_str(), event.kind) {
            ("send", Kind::Invoke) => {
                if let Some(v) = event.value.as_i64() {
                    sends.outcome.entry(v).or_insert(SendOutcome::Pending);
                    if let Some(g) = event.extra_str("group") {
                        group_of.insert(v, g.to_string());
                    }
                    in_flight.insert(process, v);
                }
            }
            ("send", kind) => {
                let Some(v) = in_flight.remove(&process).or(event.value.as_i64()) else {
                    continue;
                };
                let outcome = match kind {
                    Kind::Ok => SendOutcome::Ok,
                    Kind::Fail => SendOutcome::Fail,
                    _ => SendOutcome::Info,
                };
                sends.outcome.insert(v, outcome);
                if outcome == SendOutcome::Ok {
                    if let Some(g) = group_of.get(&v) {
                        sends.group_acks.entry(g.clone()).or_default().push(v);
                    }
                }
            }
            ("pop", Kind::Ok) => {
                for v in values_of(&event.value) {
                    sends.deliveries.push((event.index, v));
                }
            }
            _ => {}
        }
    }
    sends
}

/// FIFO order: the first deliveries of a group's acknowledged values follow their order.
fn order_violations(
    group_acks: &BTreeMap<String, Vec<i64>>,
    deliveries: &[(u64, i64)],
) -> Vec<OrderViolation> {
    let mut position: HashMap<i64, (String, usize)> = HashMap::new();
    for (group, values) in group_acks {
        for (i, v) in values.iter().enumerate() {
            position.insert(*v, (group.clone(), i));
        }
    }
    let mut highest: HashMap<String, (usize, i64)> = HashMap::new();
    let mut seen: BTreeSet<i64> = BTreeSet::new();
    let mut order_violations = Vec::new();
    for (index, v) in deliveries {
        if !seen.insert(*v) {
            continue;
        }
        let Some((group, pos)) = position.get(v) else {
            continue;
        };
        match highest.get(group) {
            Some((top, top_value)) if *top > *pos => order_violations.push(OrderViolation {
                group: group.clone(),
                value: *v,
                delivered_after: *top_value,
                index: *index,
            }),
            _ => {
                highest.insert(group.clone(), (*pos, *v));
            }
        }
    }
    order_violations
}

/// Checks `events` (in history order).
pub fn check(events: &[Event]) -> QueueReport {
    let Sends {
        outcome: sends,
        group_acks,
        deliveries,
    } = read_sends(events);
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for (_, v) in &deliveries {
        *counts.entry(*v).or_default() += 1;
    }
    let ok: BTreeSet<i64> = sends
        .iter()
        .filter(|(_, o)| **o == SendOutcome::Ok)
        .map(|(v, _)| *v)
        .collect();
    let lost: Vec<i64> = ok
        .iter()
        .filter(|v| !counts.contains_key(v))
        .copied()
        .collect();
    let unexpected: Vec<i64> = counts
        .keys()
        .filter(|v| matches!(sends.get(v), None | Some(SendOutcome::Fail)))
        .copied()
        .collect();
    let duplicated: Vec<(i64, usize)> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(v, n)| (*v, *n))
        .collect();
    let recovered = counts
        .keys()
        .filter(|v| matches!(sends.get(v), Some(SendOutcome::Info | SendOutcome::Pending)))
        .count();
    let order_violations = order_violations(&group_acks, &deliveries);

    let count = |o: SendOutcome| sends.values().filter(|x| **x == o).count();
    let valid = lost.is_empty() && unexpected.is_empty() && order_violations.is_empty();
    QueueReport {
        valid,
        attempted: sends.len(),
        acknowledged: ok.len(),
        failed: count(SendOutcome::Fail),
        unknown: count(SendOutcome::Info) + count(SendOutcome::Pending),
        delivered: deliveries.len(),
        delivered_unique: counts.len(),
        lost_count: lost.len(),
        lost: lost.into_iter().take(SAMPLE).collect(),
        unexpected_count: unexpected.len(),
        unexpected: unexpected.into_iter().take(SAMPLE).collect(),
        duplicated_count: duplicated.len(),
        duplicated: duplicated.into_iter().take(SAMPLE).collect(),
        recovered_count: recovered,
        order_violation_count: order_violations.len(),
        order_violations: order_violations.into_iter().take(SAMPLE).collect(),
        fifo_groups: group_acks.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{extra, Recorder};
    use serde_json::json;

    fn send(r: &Recorder, p: u64, v: i64, kind: Kind) {
        r.invoke(p, "send", json!(v));
        r.complete(p, kind, "send", json!(v), serde_json::Map::new());
    }

    fn fifo_send(r: &Recorder, p: u64, v: i64, group: &str) {
        r.record(
            crate::record::Process::Client(p),
            Kind::Invoke,
            "send",
            json!(v),
            extra([("group", json!(group))]),
        );
        r.complete(
            p,
            Kind::Ok,
            "send",
            json!(v),
            extra([("group", json!(group))]),
        );
    }

    fn pop(r: &Recorder, p: u64, values: &[i64]) {
        r.invoke(p, "pop", Json::Null);
        let msgs: Vec<Json> = values.iter().map(|v| json!({"value": v})).collect();
        r.complete(
            p,
            Kind::Ok,
            "pop",
            Json::Array(msgs),
            serde_json::Map::new(),
        );
    }

    #[test]
    fn a_clean_history_is_valid() {
        let r = Recorder::in_memory();
        send(&r, 0, 1, Kind::Ok);
        send(&r, 0, 2, Kind::Info);
        send(&r, 0, 3, Kind::Fail);
        send(&r, 0, 4, Kind::Info);
        pop(&r, 1, &[1, 2]);
        pop(&r, 1, &[1]);
        let report = check(&r.events());
        assert!(report.valid, "{report:?}");
        assert_eq!(report.acknowledged, 1);
        assert_eq!(report.unknown, 2);
        assert_eq!(report.failed, 1);
        assert_eq!(report.recovered_count, 1);
        assert_eq!(report.duplicated, vec![(1, 2)]);
        assert_eq!(report.delivered, 3);
        assert_eq!(report.delivered_unique, 2);
    }

    #[test]
    fn a_lost_acknowledged_message_is_caught() {
        let r = Recorder::in_memory();
        send(&r, 0, 1, Kind::Ok);
        send(&r, 0, 2, Kind::Ok);
        pop(&r, 1, &[2]);
        let report = check(&r.events());
        assert!(!report.valid);
        assert_eq!(report.lost, vec![1]);
        assert_eq!(report.lost_count, 1);
    }

    #[test]
    fn unexpected_and_failed_deliveries_are_caught() {
        let r = Recorder::in_memory();
        send(&r, 0, 1, Kind::Fail);
        pop(&r, 1, &[1, 99]);
        let report = check(&r.events());
        assert!(!report.valid);
        assert_eq!(report.unexpected, vec![1, 99]);
    }

    #[test]
    fn fifo_order_violations_are_caught_but_redeliveries_are_not() {
        let r = Recorder::in_memory();
        for v in [10, 11, 12] {
            fifo_send(&r, 0, v, "g1");
        }
        fifo_send(&r, 2, 20, "g2");
        // Redelivering 10 after 11 is fine; 12 then 11 is not (11 is new after 12)...
        pop(&r, 1, &[10, 20]);
        pop(&r, 1, &[10]);
        let ok = check(&r.events());
        assert!(!ok.valid, "11 and 12 are not delivered yet: lost");
        assert!(ok.order_violations.is_empty());
        pop(&r, 1, &[12, 11]);
        let report = check(&r.events());
        assert_eq!(report.lost_count, 0);
        assert_eq!(report.fifo_groups, 2);
        assert_eq!(
            report.order_violations,
            vec![OrderViolation {
                group: "g1".to_string(),
                value: 11,
                delivered_after: 12,
                index: report.order_violations[0].index,
            }]
        );
        assert!(!report.valid);
    }
}
