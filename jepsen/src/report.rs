//! A run's report: statistics over the history (counts, unavailability windows, recovery after
//! the final heal), the fault windows, `verdicts.json`, and `index.html` with latency and
//! throughput over time as inline SVG (fault windows shaded), plus the smallest counterexample
//! when a checker failed.
//!
//! Per fault ([`fault_impacts`]): the unavailability each fault window caused, i.e. the gaps of
//! 2 s or more between acknowledged primary operations that overlap the window or begin within
//! [`AFTER_WINDOW_S`] after it, and the likeliest cause as the nodes' logs tell it: the log
//! line nearest to the gap's start among those that speak of a role lease, a route, an election
//! or a heartbeat timeout ("unknown" when none is near).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

use crate::queue_check::QueueReport;
use crate::record::{Event, Kind};
use crate::split_brain::SplitBrainReport;

const NS_PER_S: f64 = 1e9;
/// A gap this long without an acknowledged (primary) operation counts as unavailability.
const UNAVAILABLE_GAP_NS: u64 = 2_000_000_000;

/// A gap that begins this long after a fault window ends is still charged to it.
pub const AFTER_WINDOW_S: f64 = 5.0;

/// A fault window, from the nemesis events.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultSpan {
    pub kind: String,
    pub from_s: f64,
    pub to_s: f64,
    /// The start event's value (what was done).
    pub detail: Json,
    /// The stop event's value (what was undone, what was observed), null without one.
    #[serde(default, skip_serializing_if = "Json::is_null")]
    pub outcome: Json,
}

/// What one fault window cost: the unavailability it caused and why, as far as the logs tell.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FaultImpact {
    pub kind: String,
    /// Seconds from the start of the history.
    pub start: f64,
    pub end: f64,
    /// The start event's value.
    pub value: Json,
    /// The stop event's value.
    #[serde(skip_serializing_if = "Json::is_null")]
    pub outcome: Json,
    /// Total length of `gaps`.
    pub unavailable_s: f64,
    /// Gaps of 2 s or more between acknowledged primary operations that overlap the window or
    /// begin within [`AFTER_WINDOW_S`] after it.
    pub gaps: Vec<(f64, f64)>,
    /// The nearest log line (to the first gap's start) about a lease, a route, an election or a
    /// heartbeat timeout, or "unknown"; empty when there is no gap.
    pub cause: String,
    /// Partitions of a queue run: whether some side could keep writing at all, i.e. held a
    /// controller leader with a majority, a replica reachable from it and from the NameServer,
    /// and enough replicas connected to that one for `min_in_sync_replicas` (see
    /// [`partition_leaves_a_writable_side`]). Issue 22 bounds only these partitions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writable_side: Option<bool>,
}

/// Whether the partition `drops` (node -> nodes it drops packets from) leaves some controller
/// `L` connected (both ways) to a majority of the controllers counting itself, a broker `M`
/// connected to `L` and to the NameServer `ns` (when the cluster has one), and at least
/// `min_in_sync - 1` other brokers connected to `M`: the only sides on which a master can hold
/// its lease, be found by clients and acknowledge. Nodes are named as the harness names them
/// (`c*` controllers, `b*` brokers, `ns`); `nodes` lists every server of the run.
pub fn partition_leaves_a_writable_side(
    nodes: &[String],
    drops: &BTreeMap<String, Vec<String>>,
    min_in_sync: usize,
) -> bool {
    let cut = |x: &str, y: &str| {
        drops.get(x).is_some_and(|d| d.iter().any(|n| n == y))
            || drops.get(y).is_some_and(|d| d.iter().any(|n| n == x))
    };
    let connected = |x: &str, y: &str| x == y || !cut(x, y);
    let controllers: Vec<&str> = nodes
        .iter()
        .map(String::as_str)
        .filter(|n| n.starts_with('c'))
        .collect();
    let brokers: Vec<&str> = nodes
        .iter()
        .map(String::as_str)
        .filter(|n| n.starts_with('b'))
        .collect();
    let has_ns = nodes.iter().any(|n| n == "ns");
    let majority = controllers.len() / 2 + 1;
    controllers.iter().any(|leader| {
        let quorum = controllers.iter().filter(|c| connected(leader, c)).count();
        quorum >= majority
            && brokers.iter().any(|master| {
                let peers = brokers
                    .iter()
                    .filter(|b| *b != master && connected(master, b))
                    .count();
                connected(leader, master)
                    && (!has_ns || connected(master, "ns"))
                    && peers + 1 >= min_in_sync.max(1)
            })
    })
}

/// Marks every partition window of a queue run with [`FaultImpact::writable_side`].
pub fn mark_writable_sides(impacts: &mut [FaultImpact], nodes: &[String], min_in_sync: usize) {
    for f in impacts.iter_mut().filter(|f| f.kind == "partition") {
        let drops: BTreeMap<String, Vec<String>> = f
            .value
            .get("drops")
            .cloned()
            .and_then(|d| serde_json::from_value(d).ok())
            .unwrap_or_default();
        f.writable_side = Some(partition_leaves_a_writable_side(nodes, &drops, min_in_sync));
    }
}

/// A node log line that may explain unavailability, placed on the history's time axis.
#[derive(Debug, Clone, PartialEq)]
pub struct CauseLine {
    pub node: String,
    /// Seconds from the start of the history.
    pub t: f64,
    /// What kind of line: `lease`, `route`, `election`, `heartbeat-timeout`,
    /// `master-unreachable`.
    pub class: &'static str,
    /// Matched one of the precise phrases (not only a broad word such as "elect"): preferred.
    pub precise: bool,
    pub text: String,
}

/// Log phrases that explain unavailability, and their class (first match wins).
const CAUSE_PATTERNS: [(&str, &str); 11] = [
    ("role lease", "lease"),
    ("lease expired", "lease"),
    ("no route", "route"),
    ("heartbeat timed out", "heartbeat-timeout"),
    ("is now the master", "election"),
    ("cannot become master", "election"),
    ("could be elected", "election"),
    ("election request failed", "election"),
    ("elected new master", "election"),
    ("from the master interrupted", "master-unreachable"),
    ("cannot get the master", "master-unreachable"),
];

/// The class of a log line that may explain unavailability, and whether a precise phrase (not
/// only a broad word: lease, route, elect) matched.
pub fn classify_cause(line: &str) -> Option<(&'static str, bool)> {
    let lower = line.to_ascii_lowercase();
    CAUSE_PATTERNS
        .iter()
        .find(|(p, _)| lower.contains(p))
        .map(|(_, c)| (*c, true))
        .or_else(|| {
            [
                ("lease", "lease"),
                ("route", "route"),
                ("elect", "election"),
            ]
            .into_iter()
            .find(|(w, _)| lower.contains(w))
            .map(|(_, c)| (c, false))
        })
}

/// The class of a log line that may explain unavailability.
pub fn cause_class(line: &str) -> Option<&'static str> {
    classify_cause(line).map(|(class, _)| class)
}

/// The wall clock now, in milliseconds since the Unix epoch (the `plan` event records it, so
/// node log lines can be placed on the history's time axis).
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The wall clock (ms since the epoch) at history time 0, from the `plan` event.
pub fn history_origin_ms(events: &[Event]) -> Option<f64> {
    let plan = events.iter().find(|e| e.is_nemesis() && e.f == "plan")?;
    let wall = plan.value.get("wall_clock_unix_ms")?.as_f64()?;
    Some(wall - plan.time as f64 / 1e6)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Removes ANSI escape sequences (the nodes' logs are colored).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The timestamp (ms since the epoch) that starts a tracing log line
/// (`2026-05-09T07:29:33.186123Z ...`), if it starts with one.
pub fn log_line_time_ms(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?;
    let stamp = stamp.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut date = date.split('-').map(str::parse::<i64>);
    let (y, mo, d) = (date.next()?.ok()?, date.next()?.ok()?, date.next()?.ok()?);
    let mut time = time.split(':');
    let h: i64 = time.next()?.parse().ok()?;
    let mi: i64 = time.next()?.parse().ok()?;
    let sec: f64 = time.next()?.parse().ok()?;
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec >= 61.0 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    Some(((days * 24 + h) * 60 + mi) as f64 * 60_000.0 + sec * 1000.0)
}

/// The cause lines of every `nodes/<name>/node.log` under `dir`, on the history's time axis.
pub fn read_cause_lines(dir: &Path, events: &[Event]) -> Vec<CauseLine> {
    let Some(origin) = history_origin_ms(events) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir.join("nodes")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let node = entry.file_name().to_string_lossy().to_string();
        let Ok(bytes) = std::fs::read(entry.path().join("node.log")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        for raw in text.lines() {
            let line = strip_ansi(raw);
            let Some((class, precise)) = classify_cause(&line) else {
                continue;
            };
            let Some(ms) = log_line_time_ms(&line) else {
                continue;
            };
            out.push(CauseLine {
                node: node.clone(),
                t: (ms - origin) / 1000.0,
                class,
                precise,
                text: line.chars().take(240).collect(),
            });
        }
    }
    out.sort_by(|a, b| a.t.total_cmp(&b.t));
    out
}

/// Charges every unavailability gap to the fault windows it overlaps, or that it follows within
/// [`AFTER_WINDOW_S`] when no later window began before it ended (a gap that starts with the
/// last acknowledgement just before a later window and runs into it is that window's); names
/// the likeliest cause from `lines`: the cause line nearest to the first gap's start, from 5 s
/// before it to the gap's end, a precise phrase preferred over a broad word.
pub fn fault_impacts(
    faults: &[FaultSpan],
    unavailable: &[(f64, f64)],
    lines: &[CauseLine],
) -> Vec<FaultImpact> {
    faults
        .iter()
        .map(|f| {
            let gaps: Vec<(f64, f64)> = unavailable
                .iter()
                .copied()
                .filter(|&(a, b)| {
                    let overlaps = b > f.from_s && a <= f.to_s;
                    let follows = a > f.to_s
                        && a < f.to_s + AFTER_WINDOW_S
                        && !faults.iter().any(|g| g.from_s > f.from_s && g.from_s < b);
                    overlaps || follows
                })
                .collect();
            // `+ 0.0`: an empty sum is -0.0.
            let unavailable_s = gaps.iter().map(|(a, b)| b - a).sum::<f64>() + 0.0;
            let cause = match gaps.first() {
                None => String::new(),
                Some((a, b)) => lines
                    .iter()
                    .filter(|l| l.t >= a - 5.0 && l.t <= *b)
                    .min_by(|x, y| {
                        y.precise
                            .cmp(&x.precise)
                            .then((x.t - a).abs().total_cmp(&(y.t - a).abs()))
                    })
                    .map_or("unknown".to_string(), |l| {
                        format!("{} ({} at {:.1} s): {}", l.class, l.node, l.t, l.text)
                    }),
            };
            FaultImpact {
                kind: f.kind.clone(),
                start: f.from_s,
                end: f.to_s,
                value: f.detail.clone(),
                outcome: f.outcome.clone(),
                unavailable_s,
                gaps,
                cause,
                writable_side: None,
            }
        })
        .collect()
}

/// Why a `verdicts.json` gives no per-fault table.
#[derive(Debug, thiserror::Error)]
pub enum FaultTableError {
    #[error("no `stats` object: is this a rocketraft-jepsen verdicts.json?")]
    NoStats,
    #[error("no `stats.faults`: the run predates fault windows in verdicts.json")]
    NoFaults,
    #[error("`stats.faults` is not a list of fault windows: {0}")]
    BadFaults(serde_json::Error),
    #[error("no `stats.unavailable`")]
    NoUnavailable,
    #[error("`stats.unavailable` is not a list of [from, to] pairs: {0}")]
    BadUnavailable(serde_json::Error),
}

/// The per-fault table of a kept `verdicts.json` (its `stats.faults` windows and
/// `stats.unavailable` gaps), recomputed with today's rule. Kept runs have no node logs, so no
/// causes. Markdown rows when `markdown`.
pub fn per_fault_table(verdicts: &Json, markdown: bool) -> Result<String, FaultTableError> {
    let stats = verdicts.get("stats").ok_or(FaultTableError::NoStats)?;
    let faults: Vec<FaultSpan> = serde_json::from_value(
        stats
            .get("faults")
            .cloned()
            .ok_or(FaultTableError::NoFaults)?,
    )
    .map_err(FaultTableError::BadFaults)?;
    let unavailable: Vec<(f64, f64)> = serde_json::from_value(
        stats
            .get("unavailable")
            .cloned()
            .ok_or(FaultTableError::NoUnavailable)?,
    )
    .map_err(FaultTableError::BadUnavailable)?;
    let impacts = fault_impacts(&faults, &unavailable, &[]);
    let mut out = String::new();
    if markdown {
        out.push_str(
            "| fault | window (s) | unavailable (s) | gaps | cause |\n|---|---|---|---|---|\n",
        );
    }
    for f in &impacts {
        let gaps = f
            .gaps
            .iter()
            .map(|(a, b)| format!("{a:.1}-{b:.1}"))
            .collect::<Vec<_>>()
            .join(" ");
        if markdown {
            let _ = writeln!(
                out,
                "| {} | {:.1}-{:.1} | {:.1} | {} |",
                f.kind, f.start, f.end, f.unavailable_s, gaps
            );
        } else {
            let _ = writeln!(
                out,
                "{:<20} {:>6.1}-{:<6.1} unavailable {:>5.1} s {}",
                f.kind, f.start, f.end, f.unavailable_s, gaps
            );
        }
    }
    let total: f64 = impacts.iter().map(|f| f.unavailable_s).sum::<f64>() + 0.0;
    let longest = impacts
        .iter()
        .flat_map(|f| f.gaps.iter().map(|(a, b)| b - a))
        .fold(0.0f64, f64::max);
    let _ = writeln!(
        out,
        "{} fault windows; unavailability charged to faults {total:.1} s, longest gap {longest:.1} s",
        impacts.len()
    );
    Ok(out)
}

/// [`fault_impacts`] of a finished run: its windows and gaps, and the node logs under `dir`.
pub fn run_fault_impacts(events: &[Event], stats: &Stats, dir: &Path) -> Vec<FaultImpact> {
    let lines = read_cause_lines(dir, events);
    fault_impacts(&stats.faults, &stats.unavailable, &lines)
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Counts {
    pub invoke: usize,
    pub ok: usize,
    pub fail: usize,
    pub info: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub by_f: BTreeMap<String, Counts>,
    /// Gaps of 2 s or more between acknowledged sends (seconds from the start).
    pub unavailable: Vec<(f64, f64)>,
    /// From the final heal to the first acknowledged send after it.
    pub recovery_s: Option<f64>,
    pub faults: Vec<FaultSpan>,
    pub duration_s: f64,
}

fn secs(ns: u64) -> f64 {
    ns as f64 / NS_PER_S
}

/// Pairs `start-X`/`stop-X` nemesis events into windows; a start without a stop ends at the
/// next `heal-all` or at the end.
pub fn fault_spans(events: &[Event]) -> Vec<FaultSpan> {
    let end = events.last().map_or(0, |e| e.time);
    let mut open: BTreeMap<String, (u64, Json)> = BTreeMap::new();
    let mut out = Vec::new();
    for e in events.iter().filter(|e| e.is_nemesis()) {
        if let Some(kind) = e.f.strip_prefix("start-") {
            open.insert(kind.to_string(), (e.time, e.value.clone()));
        } else if let Some(kind) = e.f.strip_prefix("stop-") {
            if let Some((from, detail)) = open.remove(kind) {
                out.push(FaultSpan {
                    kind: kind.to_string(),
                    from_s: secs(from),
                    to_s: secs(e.time),
                    detail,
                    outcome: e.value.clone(),
                });
            }
        } else if e.f == "heal-all" {
            for (kind, (from, detail)) in std::mem::take(&mut open) {
                out.push(FaultSpan {
                    kind,
                    from_s: secs(from),
                    to_s: secs(e.time),
                    detail,
                    outcome: Json::Null,
                });
            }
        } else if e.f == "transfer" {
            out.push(FaultSpan {
                kind: "transfer".to_string(),
                from_s: secs(e.time),
                to_s: secs(e.time) + 0.5,
                detail: e.value.clone(),
                outcome: Json::Null,
            });
        }
    }
    for (kind, (from, detail)) in open {
        out.push(FaultSpan {
            kind,
            from_s: secs(from),
            to_s: secs(end),
            detail,
            outcome: Json::Null,
        });
    }
    out.sort_by(|a, b| a.from_s.total_cmp(&b.from_s));
    out
}

/// Statistics; availability and recovery are measured on acknowledged operations named in
/// `primary` (`send` for the queue workload).
pub fn stats(events: &[Event], primary: &[&str]) -> Stats {
    let mut by_f: BTreeMap<String, Counts> = BTreeMap::new();
    for e in events.iter().filter(|e| !e.is_nemesis()) {
        let c = by_f.entry(e.f.clone()).or_insert(Counts {
            invoke: 0,
            ok: 0,
            fail: 0,
            info: 0,
        });
        match e.kind {
            Kind::Invoke => c.invoke += 1,
            Kind::Ok => c.ok += 1,
            Kind::Fail => c.fail += 1,
            Kind::Info => c.info += 1,
        }
    }
    let oks: Vec<u64> = events
        .iter()
        .filter(|e| primary.contains(&e.f.as_str()) && e.kind == Kind::Ok && !e.is_nemesis())
        .map(|e| e.time)
        .collect();
    let first_invoke = events
        .iter()
        .find(|e| primary.contains(&e.f.as_str()) && e.kind == Kind::Invoke)
        .map_or(0, |e| e.time);
    let heal = events
        .iter()
        .rev()
        .find(|e| e.is_nemesis() && e.f == "heal-all")
        .map(|e| e.time);
    let last_client = events
        .iter()
        .rev()
        .find(|e| !e.is_nemesis())
        .map_or(0, |e| e.time);
    let mut unavailable = Vec::new();
    let mut previous = first_invoke;
    for &t in &oks {
        if t.saturating_sub(previous) >= UNAVAILABLE_GAP_NS {
            unavailable.push((secs(previous), secs(t)));
        }
        previous = t;
    }
    let recovery_s = heal.and_then(|h| oks.iter().find(|&&t| t >= h).map(|t| secs(t - h)));
    if let Some(h) = heal {
        if recovery_s.is_none() && last_client > previous {
            unavailable.push((secs(previous.max(h)), secs(last_client)));
        }
    }
    Stats {
        by_f,
        unavailable,
        recovery_s,
        faults: fault_spans(events),
        duration_s: secs(events.last().map_or(0, |e| e.time)),
    }
}

/// Per broker set (the `set` the Remoting operations and the gRPC receives that name a set
/// record): sends acknowledged, failed and unknown, messages delivered from it, and its
/// unavailability: the gaps of 2 s or more between its acknowledged sends (from the first send
/// of the run), their total and the longest. A producer leaves a set whose send failed aside
/// for 1 s, so a gap is at least that long once one send failed. `{}` for a history without
/// sets.
pub fn per_set(events: &[Event]) -> Json {
    #[derive(Default)]
    struct Set {
        ok: Vec<u64>,
        fail: usize,
        info: usize,
        delivered: usize,
    }
    let first_invoke = events
        .iter()
        .find(|e| e.f == "send" && e.kind == Kind::Invoke)
        .map_or(0, |e| e.time);
    let mut sets: BTreeMap<String, Set> = BTreeMap::new();
    for e in events.iter().filter(|e| !e.is_nemesis()) {
        let Some(set) = e.extra_str("set") else {
            continue;
        };
        let entry = sets.entry(set.to_string()).or_default();
        match (e.f.as_str(), e.kind) {
            ("send", Kind::Ok) => entry.ok.push(e.time),
            ("send", Kind::Fail) => entry.fail += 1,
            ("send", Kind::Info) => entry.info += 1,
            ("pop", Kind::Ok) => entry.delivered += e.value.as_array().map_or(0, Vec::len),
            _ => {}
        }
    }
    let mut out = serde_json::Map::new();
    for (name, set) in sets {
        let mut gaps = Vec::new();
        let mut previous = first_invoke;
        for &t in &set.ok {
            if t.saturating_sub(previous) >= UNAVAILABLE_GAP_NS {
                gaps.push((secs(previous), secs(t)));
            }
            previous = previous.max(t);
        }
        let total: f64 = gaps.iter().map(|(a, b)| b - a).fold(0.0, |x, y| x + y);
        let longest = gaps.iter().map(|(a, b)| b - a).fold(0.0f64, f64::max);
        let round = |x: f64| (x * 10.0).round() / 10.0;
        out.insert(
            name,
            serde_json::json!({
                "sends_ok": set.ok.len(),
                "sends_fail": set.fail,
                "sends_info": set.info,
                "delivered": set.delivered,
                "unavailable_s": round(total),
                "longest_gap_s": round(longest),
                "gaps": gaps.iter().map(|(a, b)| [round(*a), round(*b)]).collect::<Vec<_>>(),
            }),
        );
    }
    Json::Object(out)
}

/// The smallest evidence of each failure: for a lost value its send and the number of pops
/// that followed; for split brain the two acknowledgements; for order the two deliveries.
pub fn counterexample(
    events: &[Event],
    queue: &QueueReport,
    split: &SplitBrainReport,
) -> Option<Json> {
    if let Some(anomaly) = split.anomalies.first() {
        return Some(json!({
            "checker": "split-brain",
            "explanation": format!(
                "{}: value {} acknowledged by {} at {}:{} offset {}, and value {} acknowledged by {} at offset {}",
                anomaly.kind, anomaly.first.value, anomaly.first.broker, anomaly.first.topic,
                anomaly.first.queue, anomaly.first.offset, anomaly.second.value,
                anomaly.second.broker, anomaly.second.offset
            ),
            "events": [anomaly.first, anomaly.second],
        }));
    }
    if let Some(&lost) = queue.lost.first() {
        let send: Vec<&Event> = events
            .iter()
            .filter(|e| e.f == "send" && e.value.as_i64() == Some(lost))
            .collect();
        let after = send.last().map_or(0, |e| e.time);
        let pops_after = events
            .iter()
            .filter(|e| e.f == "pop" && e.kind == Kind::Ok && e.time > after)
            .count();
        return Some(json!({
            "checker": "queue",
            "explanation": format!(
                "value {lost} was acknowledged but never delivered by any of the {pops_after} pops after it (final drain included)"
            ),
            "events": send,
        }));
    }
    if let Some(v) = queue.order_violations.first() {
        return Some(json!({
            "checker": "queue-order",
            "explanation": format!(
                "group {}: value {} (acknowledged first) was first delivered after {} (acknowledged later)",
                v.group, v.value, v.delivered_after
            ),
            "events": events.iter().filter(|e| e.index == v.index).collect::<Vec<_>>(),
        }));
    }
    if let Some(&v) = queue.unexpected.first() {
        let mentions: Vec<&Event> = events
            .iter()
            .filter(|e| {
                e.value.as_i64() == Some(v)
                    || e.value.as_array().is_some_and(|a| {
                        a.iter()
                            .any(|m| m.get("value").and_then(Json::as_i64) == Some(v))
                    })
            })
            .take(5)
            .collect();
        return Some(json!({
            "checker": "queue",
            "explanation": format!("value {v} was delivered but its send failed or never happened"),
            "events": mentions,
        }));
    }
    None
}

/// Everything a run found.
#[derive(Debug, Clone, Serialize)]
pub struct Verdicts {
    pub valid: bool,
    pub workload: String,
    pub nemesis: String,
    pub seed: u64,
    pub time_limit_s: u64,
    pub queue: Option<QueueReport>,
    pub split_brain: Option<SplitBrainReport>,
    /// Other checkers (e.g. the controller workload's linearizability), by name.
    pub others: BTreeMap<String, Json>,
    pub stats: Stats,
    /// Each fault window's unavailability and its likeliest cause ([`fault_impacts`]).
    pub faults: Vec<FaultImpact>,
    pub counterexample: Option<Json>,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const W: f64 = 900.0;
const H: f64 = 260.0;
const LEFT: f64 = 60.0;
const BOTTOM: f64 = 30.0;

fn fault_color(kind: &str) -> &'static str {
    match kind {
        "partition" => "#f4c7c3",
        "kill" => "#c9daf8",
        "pause" => "#d9ead3",
        "loss" => "#fce5cd",
        "clock" | "clock-step" => "#ead1dc",
        "kill-controller" => "#c9daf8",
        "pause-controller" => "#d9ead3",
        _ => "#e0e0e0",
    }
}

/// The shaded fault windows and the x axis of a chart.
fn chart_frame(out: &mut String, faults: &[FaultSpan], duration: f64, y_label: &str) {
    let x = |t: f64| LEFT + (W - LEFT - 10.0) * (t / duration.max(1.0));
    for f in faults {
        let _ = write!(
            out,
            "<rect x=\"{:.1}\" y=\"5\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\" opacity=\"0.7\"><title>{} {:.1}-{:.1} s</title></rect>",
            x(f.from_s),
            (x(f.to_s) - x(f.from_s)).max(1.0),
            H - BOTTOM - 5.0,
            fault_color(&f.kind),
            escape(&f.kind),
            f.from_s,
            f.to_s
        );
    }
    let _ = write!(
        out,
        "<line x1=\"{LEFT}\" y1=\"{y}\" x2=\"{W}\" y2=\"{y}\" stroke=\"black\"/><line x1=\"{LEFT}\" y1=\"5\" x2=\"{LEFT}\" y2=\"{y}\" stroke=\"black\"/>",
        y = H - BOTTOM
    );
    let step = (duration / 10.0).max(1.0).ceil();
    let mut t = 0.0;
    while t <= duration {
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{t:.0}s</text>",
            x(t),
            H - BOTTOM + 14.0
        );
        t += step;
    }
    let _ = write!(
        out,
        "<text x=\"12\" y=\"{:.1}\" font-size=\"11\" transform=\"rotate(-90 12 {:.1})\" text-anchor=\"middle\">{}</text>",
        H / 2.0,
        H / 2.0,
        escape(y_label)
    );
}

/// Latency of every completed `f` operation, log scale, colored by outcome.
pub fn latency_svg(events: &[Event], f: &str, faults: &[FaultSpan], duration: f64) -> String {
    let mut invoked: BTreeMap<u64, u64> = BTreeMap::new();
    let mut points = Vec::new();
    for e in events.iter().filter(|e| e.f == f) {
        let Some(p) = e.process.client() else {
            continue;
        };
        if e.kind == Kind::Invoke {
            invoked.insert(p, e.time);
        } else if let Some(start) = invoked.remove(&p) {
            let ms = (e.time.saturating_sub(start)) as f64 / 1e6;
            points.push((secs(start), ms.max(0.1), e.kind));
        }
    }
    let max_ms = points.iter().map(|p| p.1).fold(10.0f64, f64::max);
    let (lo, hi) = (0.1f64.log10(), max_ms.log10().ceil());
    let y = |ms: f64| (H - BOTTOM) - (H - BOTTOM - 10.0) * ((ms.log10() - lo) / (hi - lo));
    let x = |t: f64| LEFT + (W - LEFT - 10.0) * (t / duration.max(1.0));
    let mut out =
        format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\">");
    chart_frame(
        &mut out,
        faults,
        duration,
        &format!("{f} latency (ms, log)"),
    );
    let mut decade = 0.1f64;
    while decade.log10() <= hi + 1e-9 {
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{decade}</text><line x1=\"{LEFT}\" x2=\"{W}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>",
            LEFT - 4.0,
            y(decade) + 3.0,
            y(decade),
            y(decade)
        );
        decade *= 10.0;
    }
    for (t, ms, kind) in points {
        let color = match kind {
            Kind::Ok => "#2a7a2a",
            Kind::Fail => "#c0392b",
            _ => "#e67e22",
        };
        let _ = write!(
            out,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"1.6\" fill=\"{color}\"/>",
            x(t),
            y(ms)
        );
    }
    out.push_str("</svg>");
    out
}

/// Acknowledged operations per second, one line per `f`.
pub fn throughput_svg(
    events: &[Event],
    fs: &[&str],
    faults: &[FaultSpan],
    duration: f64,
) -> String {
    let buckets = duration.ceil().max(1.0) as usize;
    let mut series: Vec<Vec<u32>> = vec![vec![0; buckets + 1]; fs.len()];
    for e in events.iter().filter(|e| e.kind == Kind::Ok) {
        if let Some(i) = fs.iter().position(|f| *f == e.f) {
            let b = (secs(e.time) as usize).min(buckets);
            series[i][b] += 1;
        }
    }
    let max = series.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let x = |t: f64| LEFT + (W - LEFT - 10.0) * (t / duration.max(1.0));
    let y = |n: f64| (H - BOTTOM) - (H - BOTTOM - 10.0) * (n / max);
    let mut out =
        format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\">");
    chart_frame(&mut out, faults, duration, "ok ops / s");
    let _ = write!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{max:.0}</text>",
        LEFT - 4.0,
        y(max) + 3.0
    );
    let colors = ["#1f77b4", "#9467bd", "#8c564b"];
    for (i, s) in series.iter().enumerate() {
        let points: Vec<String> = s
            .iter()
            .enumerate()
            .map(|(b, n)| format!("{:.1},{:.1}", x(b as f64 + 0.5), y(f64::from(*n))))
            .collect();
        let color = colors[i % colors.len()];
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"{color}\">{}</text>",
            points.join(" "),
            W - 120.0,
            20.0 + 14.0 * i as f64,
            escape(fs[i])
        );
    }
    out.push_str("</svg>");
    out
}

/// `a-b<unit>` for every span of seconds, joined by `sep`.
fn spans(list: &[(f64, f64)], unit: &str, sep: &str) -> String {
    list.iter()
        .map(|(a, b)| format!("{a:.1}-{b:.1}{unit}"))
        .collect::<Vec<_>>()
        .join(sep)
}

/// The HTML page.
pub fn html(
    events: &[Event],
    verdicts: &Verdicts,
    fs: &[&str],
    logs: &[(String, String)],
) -> String {
    let duration = verdicts.stats.duration_s.max(1.0);
    let faults = &verdicts.stats.faults;
    let mut out = String::new();
    html_header(&mut out, events, verdicts, duration);
    html_operations(&mut out, verdicts);
    out.push_str("<h2>Throughput</h2>");
    out.push_str(&throughput_svg(events, fs, faults, duration));
    for f in fs {
        let _ = write!(out, "<h2>Latency of {}</h2>", escape(f));
        out.push_str(&latency_svg(events, f, faults, duration));
    }
    out.push_str("<p>Shaded: <span style=\"background:#f4c7c3\">partition</span> <span style=\"background:#c9daf8\">kill</span> <span style=\"background:#d9ead3\">pause</span> <span style=\"background:#fce5cd\">loss</span> <span style=\"background:#ead1dc\">clock</span> <span style=\"background:#e0e0e0\">transfer</span>; dots: <span class=\"ok\">ok</span>, <span style=\"color:#e67e22\">info</span>, <span class=\"bad\">fail</span>.</p>");
    out.push_str(
        "<h2>Faults</h2><table><tr><th>kind</th><th>from</th><th>to</th><th>what</th></tr>",
    );
    for f in faults {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{:.1}</td><td>{:.1}</td><td><code>{}</code></td></tr>",
            escape(&f.kind),
            f.from_s,
            f.to_s,
            escape(&f.detail.to_string())
        );
    }
    out.push_str("</table>");
    out.push_str(&impact_table(&verdicts.faults));
    html_verdicts_and_files(&mut out, verdicts, logs);
    out
}

/// The page's head and title line.
fn html_header(out: &mut String, events: &[Event], verdicts: &Verdicts, duration: f64) {
    let _ = write!(
        out,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>rocketraft-jepsen {} / {} (seed {})</title>\
         <style>body{{font-family:sans-serif;margin:20px}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px}}\
         .ok{{color:#2a7a2a}}.bad{{color:#c0392b;font-weight:bold}}pre{{background:#f6f6f6;padding:8px;overflow:auto}}</style></head><body>",
        escape(&verdicts.workload),
        escape(&verdicts.nemesis),
        verdicts.seed
    );
    let _ = write!(
        out,
        "<h1>{} under {} — <span class=\"{}\">{}</span></h1><p>seed {}, time limit {} s, {} events, {:.1} s in all.</p>",
        escape(&verdicts.workload),
        escape(&verdicts.nemesis),
        if verdicts.valid { "ok" } else { "bad" },
        verdict_label(verdicts),
        verdicts.seed,
        verdicts.time_limit_s,
        events.len(),
        duration
    );
}

/// The operations table, the recovery and the unavailability.
fn html_operations(out: &mut String, verdicts: &Verdicts) {
    out.push_str("<h2>Operations</h2><table><tr><th>f</th><th>invoked</th><th>ok</th><th>fail</th><th>info</th></tr>");
    for (f, c) in &verdicts.stats.by_f {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(f),
            c.invoke,
            c.ok,
            c.fail,
            c.info
        );
    }
    out.push_str("</table>");
    let _ = write!(
        out,
        "<p>Recovery after the final heal: {}. Unavailability (2 s or more without an acknowledged operation): {}.</p>",
        verdicts
            .stats
            .recovery_s
            .map_or("none observed".to_string(), |s| format!("{s:.1} s")),
        if verdicts.stats.unavailable.is_empty() {
            "none".to_string()
        } else {
            spans(&verdicts.stats.unavailable, " s", ", ")
        }
    );
}

/// The counterexample, the verdicts (without it) and the links to the files.
fn html_verdicts_and_files(out: &mut String, verdicts: &Verdicts, logs: &[(String, String)]) {
    if let Some(c) = &verdicts.counterexample {
        let _ = write!(
            out,
            "<h2 class=\"bad\">Counterexample</h2><pre>{}</pre>",
            escape(&serde_json::to_string_pretty(c).unwrap_or_default())
        );
    }
    out.push_str("<h2>Verdicts</h2><pre>");
    let mut shown = serde_json::to_value(verdicts).unwrap_or(Json::Null);
    if let Some(map) = shown.as_object_mut() {
        map.remove("counterexample");
    }
    out.push_str(&escape(
        &serde_json::to_string_pretty(&shown).unwrap_or_default(),
    ));
    out.push_str("</pre><h2>Files</h2><ul><li><a href=\"history.jsonl\">history.jsonl</a></li><li><a href=\"verdicts.json\">verdicts.json</a></li>");
    for (name, path) in logs {
        let _ = write!(
            out,
            "<li><a href=\"{}\">{} log</a></li>",
            escape(path),
            escape(name)
        );
    }
    out.push_str("</ul></body></html>\n");
}

/// The HTML table of the per-fault unavailability.
fn impact_table(faults: &[FaultImpact]) -> String {
    let mut out = String::from(
        "<h2>Unavailability per fault</h2><p>Gaps of 2 s or more between acknowledged operations that overlap a fault window or begin within 5 s after it; the cause is the nearest node log line about a lease, a route, an election or a heartbeat timeout.</p>\
         <table><tr><th>kind</th><th>window (s)</th><th>what</th><th>unavailable (s)</th><th>gaps (s)</th><th>cause</th></tr>",
    );
    for f in faults {
        let gaps = spans(&f.gaps, "", ", ");
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{:.1}-{:.1}</td><td><code>{}</code></td><td class=\"{}\">{:.1}</td><td>{}</td><td>{}</td></tr>",
            escape(&f.kind),
            f.start,
            f.end,
            escape(&f.value.to_string()),
            if f.gaps.is_empty() { "ok" } else { "bad" },
            f.unavailable_s,
            escape(&gaps),
            escape(&match f.writable_side {
                Some(false) => format!("no side could write; {}", f.cause),
                _ => f.cause.clone(),
            })
        );
    }
    out.push_str("</table>");
    out
}

/// `VALID`, `INVALID`, or `UNKNOWN` when nothing failed but the linearizability checker ran
/// out of its time or memory budget (the history is neither proven valid nor invalid).
pub fn verdict_label(verdicts: &Verdicts) -> &'static str {
    if verdicts.valid {
        return "VALID";
    }
    let failed_elsewhere = verdicts.queue.as_ref().is_some_and(|q| !q.valid)
        || verdicts.split_brain.as_ref().is_some_and(|s| !s.valid)
        || verdicts.others.get("recovered") == Some(&Json::Bool(false));
    let unknown = verdicts
        .others
        .get("linearizability")
        .and_then(|l| l.get("verdict"))
        .and_then(Json::as_str)
        == Some("Unknown");
    if unknown && !failed_elsewhere {
        "UNKNOWN"
    } else {
        "INVALID"
    }
}

/// A fault window's line of the summary: its unavailability, gaps and likely cause.
fn fault_line(f: &FaultImpact) -> String {
    format!(
        "  {:<20} {:>6.1}-{:<6.1} unavailable {:>5.1} s{}{}",
        f.kind,
        f.start,
        f.end,
        f.unavailable_s,
        if f.gaps.is_empty() {
            String::new()
        } else {
            format!(" gaps {}", spans(&f.gaps, "", " "))
        },
        match (f.writable_side, f.cause.is_empty()) {
            (Some(false), _) => format!(
                "; no side could write (a controller majority, {} and the NameServer \
                 together){}",
                "enough connected replicas",
                if f.cause.is_empty() {
                    String::new()
                } else {
                    format!("; cause: {}", f.cause.chars().take(120).collect::<String>())
                }
            ),
            (_, true) => String::new(),
            (_, false) => {
                format!("; cause: {}", f.cause.chars().take(160).collect::<String>())
            }
        }
    )
}

/// The queue and split-brain checkers' lines of the summary.
fn summary_checks(out: &mut String, verdicts: &Verdicts) {
    if let Some(q) = &verdicts.queue {
        let _ = writeln!(
            out,
            "queue: {} acknowledged, {} unknown, {} failed; {} delivered ({} unique); lost {}, unexpected {}, duplicated {}, recovered {}, FIFO order violations {} ({} groups) -> {}",
            q.acknowledged, q.unknown, q.failed, q.delivered, q.delivered_unique, q.lost_count,
            q.unexpected_count, q.duplicated_count, q.recovered_count, q.order_violation_count,
            q.fifo_groups, if q.valid { "valid" } else { "INVALID" }
        );
    }
    if let Some(s) = &verdicts.split_brain {
        let _ = writeln!(
            out,
            "split-brain: {} acknowledged sends from {} broker(s) in {} tenure(s) ({} through the proxy, not attributable: skipped); {} anomalies{} -> {}",
            s.acks,
            s.brokers.len(),
            s.tenures.len(),
            s.unattributed,
            s.anomaly_count,
            if s.two_masters { " (two masters)" } else { "" },
            if s.valid { "valid" } else { "INVALID" }
        );
    }
}

/// The summary table printed at the end of a run.
pub fn summary(verdicts: &Verdicts, dir: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n== rocketraft-jepsen: workload {}, nemesis {}, seed {}, {:.0} s ==",
        verdicts.workload, verdicts.nemesis, verdicts.seed, verdicts.stats.duration_s
    );
    let _ = writeln!(
        out,
        "{:<8} {:>8} {:>8} {:>8} {:>8}",
        "op", "invoked", "ok", "fail", "info"
    );
    for (f, c) in &verdicts.stats.by_f {
        let _ = writeln!(
            out,
            "{:<8} {:>8} {:>8} {:>8} {:>8}",
            f, c.invoke, c.ok, c.fail, c.info
        );
    }
    summary_checks(&mut out, verdicts);
    for (name, value) in &verdicts.others {
        let _ = writeln!(out, "{name}: {value}");
    }
    let _ = writeln!(
        out,
        "faults: {}; unavailable: {}; recovery after heal: {}",
        verdicts.stats.faults.len(),
        if verdicts.stats.unavailable.is_empty() {
            "none".to_string()
        } else {
            spans(&verdicts.stats.unavailable, "s", " ")
        },
        verdicts
            .stats
            .recovery_s
            .map_or("not observed".to_string(), |s| format!("{s:.1} s"))
    );
    if !verdicts.faults.is_empty() {
        let _ = writeln!(
            out,
            "unavailability per fault (gaps >= 2 s overlapping the window or within 5 s after it):"
        );
        for f in &verdicts.faults {
            let _ = writeln!(out, "{}", fault_line(f));
        }
    }
    if let Some(c) = &verdicts.counterexample {
        let _ = writeln!(
            out,
            "counterexample: {}",
            c.get("explanation")
                .and_then(Json::as_str)
                .unwrap_or("see verdicts.json")
        );
    }
    let _ = writeln!(
        out,
        "VERDICT: {}   (report: {dir}/index.html)",
        verdict_label(verdicts)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{extra, Process, Recorder};

    #[test]
    fn an_exhausted_checker_budget_is_unknown_not_invalid() {
        let r = Recorder::in_memory();
        r.invoke(0, "read", json!(null));
        r.complete(0, Kind::Ok, "read", json!(1), extra([]));
        let mut v = Verdicts {
            valid: true,
            workload: "controller".to_string(),
            nemesis: "all".to_string(),
            seed: 1,
            time_limit_s: 1,
            queue: None,
            split_brain: None,
            others: [
                ("recovered".to_string(), json!(true)),
                ("linearizability".to_string(), json!({"verdict": "Valid"})),
            ]
            .into_iter()
            .collect(),
            stats: stats(&r.events(), &["read"]),
            faults: Vec::new(),
            counterexample: None,
        };
        assert_eq!(verdict_label(&v), "VALID");
        v.valid = false;
        v.others
            .insert("linearizability".to_string(), json!({"verdict": "Unknown"}));
        assert_eq!(verdict_label(&v), "UNKNOWN");
        assert!(summary(&v, "/d").contains("VERDICT: UNKNOWN"));
        v.others.insert("recovered".to_string(), json!(false));
        assert_eq!(verdict_label(&v), "INVALID");
        v.others.insert("recovered".to_string(), json!(true));
        v.others
            .insert("linearizability".to_string(), json!({"verdict": "Invalid"}));
        assert_eq!(verdict_label(&v), "INVALID");
    }

    #[test]
    fn stats_find_faults_gaps_and_recovery() {
        let r = Recorder::in_memory();
        r.invoke(0, "send", json!(1));
        r.complete(0, Kind::Ok, "send", json!(1), extra([]));
        r.nemesis("start-kill", json!({"nodes": ["b1"]}));
        std::thread::sleep(std::time::Duration::from_millis(20));
        r.nemesis("stop-kill", json!({"nodes": ["b1"]}));
        r.nemesis("start-partition", json!({}));
        r.nemesis("heal-all", json!({}));
        r.invoke(0, "send", json!(2));
        r.complete(0, Kind::Info, "send", json!(2), extra([]));
        r.invoke(1, "send", json!(3));
        r.complete(1, Kind::Ok, "send", json!(3), extra([]));
        let events = r.events();
        let s = stats(&events, &["send"]);
        assert_eq!(s.by_f["send"].invoke, 3);
        assert_eq!(s.by_f["send"].ok, 2);
        assert_eq!(s.by_f["send"].info, 1);
        assert_eq!(s.faults.len(), 2);
        assert_eq!(s.faults[0].kind, "kill");
        assert!(s.faults[0].to_s > s.faults[0].from_s);
        assert_eq!(s.faults[1].kind, "partition");
        assert!(s.recovery_s.is_some());
        let svg = latency_svg(&events, "send", &s.faults, 1.0);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 3);
        assert_eq!(svg.matches("<rect").count(), 2);
        let svg = throughput_svg(&events, &["send", "pop"], &s.faults, 1.0);
        assert_eq!(svg.matches("<polyline").count(), 2);
    }

    fn event(index: u64, t_s: f64, process: Process, kind: Kind, f: &str, value: Json) -> Event {
        Event {
            index,
            time: (t_s * 1e9) as u64,
            process,
            kind,
            f: f.to_string(),
            key: None,
            value,
            extra: Default::default(),
        }
    }

    #[test]
    fn each_fault_is_charged_the_gaps_it_caused_with_the_nearest_logged_cause() {
        // Sends acknowledged every 0.5 s from 0 to 30 s, except 10.0-13.5 (a 3.5 s gap inside
        // the kill window 9-15) and 22.0-24.5 (a 2.5 s gap that starts 2 s after the pause
        // window 18-20); a 1.5 s gap at 27.0-28.5 is too short to count. The transfer window
        // 4-5 caused nothing.
        let mut events = vec![event(
            0,
            0.0,
            Process::nemesis(),
            Kind::Info,
            "plan",
            json!({"wall_clock_unix_ms": 1_000_000_000_000u64}),
        )];
        let mut t = 0.5;
        let mut p = 0u64;
        while t <= 30.0 {
            let skipped =
                (t > 10.0 && t < 13.5) || (t > 22.0 && t < 24.5) || (t > 27.0 && t < 28.5);
            if !skipped {
                let n = events.len() as u64;
                events.push(event(
                    n,
                    t - 0.01,
                    Process::Client(p % 4),
                    Kind::Invoke,
                    "send",
                    json!(p),
                ));
                events.push(event(
                    n + 1,
                    t,
                    Process::Client(p % 4),
                    Kind::Ok,
                    "send",
                    json!(p),
                ));
                p += 1;
            }
            t += 0.5;
        }
        for (t, f, v) in [
            (
                4.0,
                "start-transfer-controller",
                json!({"from": "c1", "to": "c2"}),
            ),
            (
                5.0,
                "stop-transfer-controller",
                json!({"nodes": ["c1", "c2"]}),
            ),
            (9.0, "start-kill-controller", json!({"nodes": ["c1"]})),
            (15.0, "stop-kill-controller", json!({"nodes": ["c1"]})),
            (18.0, "start-pause-controller", json!({"nodes": ["c2"]})),
            (20.0, "stop-pause-controller", json!({"nodes": ["c2"]})),
        ] {
            let n = events.len() as u64;
            events.push(event(n, t, Process::nemesis(), Kind::Info, f, v));
        }
        events.sort_by_key(|e| e.time);
        let s = stats(&events, &["send"]);
        assert_eq!(s.unavailable.len(), 2, "{:?}", s.unavailable);
        assert_eq!(s.faults.len(), 3);

        // Log lines, as the node logs print them, 1 000 000 000 s after the epoch = history 0.
        let origin = history_origin_ms(&events).expect("plan has the wall clock");
        assert!((origin - 1e12).abs() < 1.0);
        let stamp = |t: f64| {
            // 2001-09-09T01:46:40Z is 1e9 s after the epoch.
            let total = 46.0 * 60.0 + 40.0 + t;
            let minutes = (total / 60.0).floor();
            format!(
                "2001-09-09T01:{minutes:02}:{:09.6}Z",
                total - minutes * 60.0
            )
        };
        let raw = [
            (9.6, "b1", "\u{1b}[2m{}\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m rocketraft_broker::ha: role lease expired: refusing writes"),
            (10.4, "c2", "{}  INFO rocketraft_controller: something unrelated"),
            (16.0, "b2", "{}  WARN rocketraft_broker::replica: election request failed"),
            (21.5, "c3", "{}  WARN rocketraft_controller::service: broker heartbeat timed out"),
        ];
        let mut lines = Vec::new();
        for (t, node, text) in raw {
            let line = strip_ansi(&text.replace("{}", &stamp(t)));
            let ms = log_line_time_ms(&line).expect("a timestamp");
            assert!(((ms - origin) / 1000.0 - t).abs() < 0.001, "{line}");
            if let Some((class, precise)) = classify_cause(&line) {
                lines.push(CauseLine {
                    node: node.to_string(),
                    t: (ms - origin) / 1000.0,
                    class,
                    precise,
                    text: line,
                });
            }
        }
        assert_eq!(lines.len(), 3, "the unrelated line is no cause");

        let impacts = fault_impacts(&s.faults, &s.unavailable, &lines);
        assert_eq!(impacts.len(), 3);
        let transfer = &impacts[0];
        assert_eq!(transfer.kind, "transfer-controller");
        assert!(transfer.gaps.is_empty() && transfer.unavailable_s == 0.0);
        assert_eq!(transfer.cause, "");
        assert_eq!(transfer.value["to"], "c2");
        assert_eq!(transfer.outcome["nodes"][1], "c2");

        let kill = &impacts[1];
        assert_eq!(kill.kind, "kill-controller");
        assert_eq!(kill.gaps.len(), 1);
        assert!((kill.gaps[0].0 - 10.0).abs() < 0.02 && (kill.gaps[0].1 - 13.5).abs() < 0.02);
        assert!((kill.unavailable_s - 3.5).abs() < 0.02);
        assert!(
            kill.cause.starts_with("lease (b1 at 9.6 s)"),
            "{}",
            kill.cause
        );
        assert!(kill.cause.contains("role lease expired"), "{}", kill.cause);

        let pause = &impacts[2];
        assert_eq!(
            pause.gaps.len(),
            1,
            "a gap starting 2 s after the window is charged to it"
        );
        assert!((pause.unavailable_s - 2.5).abs() < 0.02);
        assert!(
            pause.cause.starts_with("heartbeat-timeout (c3 at 21.5 s)"),
            "{}",
            pause.cause
        );

        // Without any log line the cause is unknown.
        let bare = fault_impacts(&s.faults, &s.unavailable, &[]);
        assert_eq!(bare[1].cause, "unknown");

        // A gap that begins in a later window is that window's, not the earlier one's (whose
        // 5 s tail it also falls in); a precise phrase beats a nearer broad word.
        let span = |kind: &str, from_s: f64, to_s: f64| FaultSpan {
            kind: kind.to_string(),
            from_s,
            to_s,
            detail: Json::Null,
            outcome: Json::Null,
        };
        let line = |t: f64, text: &str| {
            let (class, precise) = classify_cause(text).expect("a cause line");
            CauseLine {
                node: "c1".to_string(),
                t,
                class,
                precise,
                text: text.to_string(),
            }
        };
        let two = fault_impacts(
            &[span("kill", 0.0, 10.0), span("pause", 12.0, 20.0)],
            &[(12.5, 15.0)],
            &[
                line(12.6, "openraft: election timeout expired"),
                line(13.5, "replication from the master interrupted"),
            ],
        );
        assert!(two[0].gaps.is_empty(), "{two:?}");
        assert_eq!(two[1].gaps, vec![(12.5, 15.0)]);
        // The same when the gap's last acknowledgement came just before the later window.
        let early = fault_impacts(
            &[span("kill", 0.0, 10.0), span("kill", 12.0, 20.0)],
            &[(11.9, 15.0)],
            &[],
        );
        assert!(early[0].gaps.is_empty(), "{early:?}");
        assert_eq!(early[1].gaps, vec![(11.9, 15.0)]);
        assert!(
            two[1]
                .cause
                .starts_with("master-unreachable (c1 at 13.5 s)"),
            "{}",
            two[1].cause
        );

        // The summary and the page show them.
        let v = Verdicts {
            valid: true,
            workload: "queue".to_string(),
            nemesis: "kill-controller".to_string(),
            seed: 1,
            time_limit_s: 30,
            queue: None,
            split_brain: None,
            others: BTreeMap::new(),
            stats: s,
            faults: impacts,
            counterexample: None,
        };
        let text = summary(&v, "/d");
        assert!(
            text.contains("kill-controller") && text.contains("unavailable   3.5 s"),
            "{text}"
        );
        let page = html(&events, &v, &["send"], &[]);
        assert!(page.contains("Unavailability per fault"));
        assert_eq!(page.matches("<td class=\"bad\">").count(), 2);
        let json = serde_json::to_value(&v).expect("verdicts encode");
        assert_eq!(
            json["faults"][1]["gaps"][0].as_array().map(Vec::len),
            Some(2)
        );
        assert!(json["faults"][1]["unavailable_s"].as_f64().is_some());
    }

    #[test]
    fn log_timestamps_parse() {
        assert_eq!(log_line_time_ms("1970-01-01T00:00:01.5Z x"), Some(1500.0));
        assert_eq!(
            log_line_time_ms("2026-05-09T07:29:33.000000Z  INFO"),
            Some(1_778_311_773_000.0)
        );
        assert_eq!(
            log_line_time_ms("===== harness: start #1 of b1 ====="),
            None
        );
        assert_eq!(log_line_time_ms("2026-13-09T07:29:33Z x"), None);
        assert_eq!(strip_ansi("\u{1b}[2mA\u{1b}[0m B"), "A B");
        assert_eq!(cause_class("no route to broker-a"), Some("route"));
        assert_eq!(cause_class("INFO: nothing"), None);
    }

    #[test]
    fn a_kept_verdicts_file_gives_the_per_fault_table() {
        let v = json!({
            "stats": {
                "faults": [
                    {"kind": "kill", "from_s": 10.0, "to_s": 16.0, "detail": {"nodes": ["b1"]}},
                    {"kind": "pause", "from_s": 30.0, "to_s": 35.0, "detail": null}
                ],
                "unavailable": [[10.2, 14.4], [50.0, 53.0]]
            }
        });
        let plain = per_fault_table(&v, false).expect("table");
        assert!(plain.contains("kill"), "{plain}");
        assert!(plain.contains("unavailable   4.2 s 10.2-14.4"), "{plain}");
        assert!(plain.contains("unavailable   0.0 s"), "{plain}");
        assert!(
            plain.ends_with(
                "2 fault windows; unavailability charged to faults 4.2 s, longest gap 4.2 s\n"
            ),
            "{plain}"
        );
        let md = per_fault_table(&v, true).expect("markdown");
        assert!(md.starts_with("| fault | window (s) |"), "{md}");
        assert!(
            md.contains("| kill | 10.0-16.0 | 4.2 | 10.2-14.4 |"),
            "{md}"
        );
        let err = per_fault_table(&json!({"stats": {}}), false)
            .expect_err("no faults")
            .to_string();
        assert!(err.contains("stats.faults"), "{err}");
    }

    /// The two partitions of the kept 10-minute run (`jepsen/runs/queue-all-seed2026-defaults`)
    /// that cost 13.5 and 13.7 s: the majority ring leaves a writable side (leader c2 with c1,
    /// master b2 with b3, b2 reaches the NameServer); the bridge does not (the controller
    /// majority c1, c3 sees only b2, which reaches no other replica).
    #[test]
    fn writable_sides_of_a_ring_and_a_bridge() {
        let nodes: Vec<String> = ["c1", "c2", "c3", "ns", "b1", "b2", "b3", "proxy"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let drops = |pairs: &[(&str, &[&str])]| -> BTreeMap<String, Vec<String>> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect()
        };
        let ring = drops(&[
            ("b1", &["b2", "ns"]),
            ("b2", &["b1", "c1"]),
            ("b3", &["c1", "c2"]),
            ("c1", &["b2", "b3"]),
            ("c2", &["b3", "c3"]),
            ("c3", &["c2", "ns"]),
            ("ns", &["b1", "c3"]),
        ]);
        assert!(partition_leaves_a_writable_side(&nodes, &ring, 2));
        let bridge = drops(&[
            ("b1", &["b2", "c1", "c3"]),
            ("b2", &["b1", "b3", "c2"]),
            ("b3", &["b2", "c1", "c3"]),
            ("c1", &["b1", "b3", "c2"]),
            ("c2", &["b2", "c1", "c3"]),
            ("c3", &["b1", "b3", "c2"]),
        ]);
        assert!(!partition_leaves_a_writable_side(&nodes, &bridge, 2));
        // With one replica enough, b2 alone on the majority side can write.
        assert!(partition_leaves_a_writable_side(&nodes, &bridge, 1));
        // Brokers cut from every controller: nobody can hold a lease.
        let split = drops(&[
            ("b1", &["c1", "c2", "c3"]),
            ("b2", &["c1", "c2", "c3"]),
            ("b3", &["c1", "c2", "c3"]),
        ]);
        assert!(!partition_leaves_a_writable_side(&nodes, &split, 2));
        // A one-way partition cuts both directions for TCP.
        let one_way = drops(&[("ns", &["c1", "c2", "c3", "b1", "b2", "b3"])]);
        assert!(!partition_leaves_a_writable_side(&nodes, &one_way, 2));
        assert!(partition_leaves_a_writable_side(
            &nodes,
            &BTreeMap::new(),
            2
        ));
    }
}
