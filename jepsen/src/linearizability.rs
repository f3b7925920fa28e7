//! The linearizability checker: Wing & Gong's search with Lowe's memoization (WGL), as in
//! Porcupine and Knossos' `wgl`.
//!
//! A history is linearizable if every operation can be given a point between its invocation and
//! its completion such that, taken in the order of those points, the operations are legal for the
//! sequential [`Model`]. An operation of unknown outcome (`info`, or never completed) may take
//! effect at any point after its invocation, or never: its completion is at +infinity and the
//! search may leave it out. Failed operations are dropped unless the model keeps them
//! ([`Model::prepare`]).
//!
//! # The search
//! Invocations and completions are laid out in history order in a doubly linked list. The search
//! walks it from the start: at an invocation it tries to linearize that operation now (the model
//! step must be legal), removes the operation's entries from the list and starts again from the
//! head; at a completion it has met an operation that had to be linearized before this point and
//! was not, so it backtracks: it undoes the last linearized operation (putting its entries back)
//! and tries the entry after it. Each (set of linearized operations, model state) reached is
//! remembered; reaching one again cannot lead anywhere new, so it is skipped. That cache is what
//! makes the search practical (Lowe, "Testing for linearizability", 2017). States are stored once
//! and referred to by number, so big states (a kv store's strings) are not copied per entry.
//!
//! Two additions for operations of unknown outcome, which otherwise make every subset of the
//! pending `info` operations a configuration of its own:
//! - *Subsumption*: a configuration that differs from one already seen only by *more* such
//!   operations linearized is skipped too: from the one seen, the extra ones could simply never
//!   have taken effect.
//! - *Two orders*: the candidates for the next linearization point can be tried in history order
//!   ([`Strategy::RealTime`], Porcupine's), or the operations that must be linearized first and
//!   those of unknown outcome last ([`Strategy::RequiredFirst`], which lets subsumption prune
//!   most). Each is much faster than the other on some histories (the first on valid histories
//!   whose `info` operations did take effect, the second on invalid ones full of `info`), so by
//!   default both run, on two threads, and the first answer wins.
//!
//! Two more, for long histories:
//! - *Reads commute*: a candidate the model calls read-only ([`Model::read_only`]: a read, a
//!   failed cas, a replica-info read of a fully known state) that matches the current state is
//!   linearized at once, without a choice point: moving it earlier is always possible, so trying
//!   the alternatives first cannot find anything new.
//! - *Versions*: for a model whose states carry a version that every change raises (the replica
//!   info's epochs, [`Model::observed_version`]), each key's history is first tested in one
//!   pass: an op invoked after another completed must not have observed an older version, and
//!   one version must have one state. Either violation refutes the history at once; refuting
//!   such a stale read by search means exhausting every configuration before it, which in a
//!   10-minute controller history is beyond any budget.
//!
//! And one that replaces the search for such a model:
//! - *Per-version search* ([`versions`]): when every completed op observed a version and the
//!   model gives its states' versions ([`Model::state_version`]), the completed ops of one
//!   version form one run of the linearization, and between two runs only ops of unknown
//!   outcome take effect. The search then goes version by version, carrying only how many ops of
//!   unknown outcome of each kind are used up. The WGL search below cannot decide a 5-minute
//!   controller history under every fault in 900 s (its elections of unknown outcome stay
//!   candidates for the rest of the history; [`versions`] tells why); this decides it in under a
//!   second. Its valid verdicts carry a linearization checked op by op before they are given.
//!   It runs unless a [`Strategy`] is named ([`CheckOptions::strategy`]). When it reaches its
//!   memory limit the WGL search below runs in the time left; when the deadline passed the
//!   verdict is unknown.
//!
//! The history is split by `key` first and each part searched alone (P-compositionality:
//! a history is linearizable iff each key's sub-history is). A time budget bounds the whole check:
//! when it runs out the verdict is *unknown*, never a hang. So does a bound on the cache's memory.
//! Refuting an invalid history means exhausting every configuration before the violation, which
//! grows exponentially with the concurrency; with many operations of unknown outcome on a busy
//! key, *unknown* is the honest answer the budget gives.
//!
//! On an invalid history the report gives a counterexample: the deepest partial linearization the
//! search reached, the operation whose completion it could not get past, and the operations that
//! were pending (invoked, not linearized) there.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

mod versions;

use crate::history::{Operation, Outcome};
use crate::model::{Model, ModelError, Prepared};

/// Limits of one check.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// After this long the verdict is [`Verdict::Unknown`].
    pub time_budget: Duration,
    /// When the configurations remembered take about this many bytes, the verdict is
    /// [`Verdict::Unknown`]. Bounds memory (shared by the searches of a race, of which the
    /// required-first one may take a quarter; the per-version search counts its stack and its
    /// transition's search too).
    pub max_cache_bytes: usize,
    /// `None`: the per-version search when the model has versions ([`versions`]; the WGL
    /// search, raced, when it reaches `max_cache_bytes` with time left), else race
    /// both strategies on two threads and take the first answer (the default: each is much
    /// faster than the other on some histories). `Some`: only the WGL search in that order, on
    /// this thread. Without operations of unknown outcome the two orders are the same search,
    /// and only one runs.
    pub strategy: Option<Strategy>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            time_budget: Duration::from_secs(60),
            max_cache_bytes: 2 << 30,
            strategy: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Valid,
    Invalid,
    Unknown,
}

impl Verdict {
    /// The command line's exit code: 0 valid, 1 invalid, 2 unknown.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Valid => 0,
            Verdict::Invalid => 1,
            Verdict::Unknown => 2,
        }
    }
}

/// An operation as a report shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpReport {
    /// The invocation's index in the history.
    pub index: u64,
    pub process: u64,
    /// `ok`, `info` (unknown outcome) or `fail` (kept by the model).
    pub outcome: &'static str,
    /// The operation as the model reads it.
    pub description: String,
}

/// One step of a partial linearization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepReport {
    pub op: OpReport,
    pub state_after: String,
}

/// Why a history is not linearizable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counterexample {
    /// The key whose sub-history is not linearizable (`None`: ops without a key).
    pub key: Option<String>,
    /// The operation that could not be linearized: the search could not get past its completion.
    pub op: OpReport,
    /// How many operations the deepest partial linearization held.
    pub linearized: usize,
    /// Its last steps (at most [`COUNTEREXAMPLE_TAIL`]), oldest first.
    pub tail: Vec<StepReport>,
    /// The model state after that partial linearization.
    pub state: String,
    /// Other operations invoked but not linearized at that point; the search tried each next, and
    /// none led to a full linearization (at most [`COUNTEREXAMPLE_PENDING`]).
    pub pending: Vec<OpReport>,
}

/// Steps of the partial linearization kept in a counterexample.
pub const COUNTEREXAMPLE_TAIL: usize = 12;
/// Pending operations listed in a counterexample.
pub const COUNTEREXAMPLE_PENDING: usize = 16;

/// The result of a check.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub verdict: Verdict,
    pub model: &'static str,
    /// Operations searched (after dropping those the model skips).
    pub operations: usize,
    /// Operations dropped (failed, or reads of unknown result).
    pub dropped: usize,
    /// Of the searched operations, those of unknown outcome.
    pub unknown_outcome: usize,
    /// Keys (independent sub-histories).
    pub keys: usize,
    /// Configurations (linearized set, state) the search visited (the per-version search:
    /// its steps).
    pub configurations: u64,
    #[serde(serialize_with = "serialize_seconds")]
    pub elapsed: Duration,
    /// Why the verdict is unknown.
    pub unknown_reason: Option<String>,
    pub counterexample: Option<Counterexample>,
}

fn serialize_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Runs both strategies on one key, each on its own thread, and takes the first definite answer.
fn race<M: Model>(
    model: &M,
    entries: Vec<Entry<'_, M::Op>>,
    deadline: Instant,
    max_cache_bytes: usize,
) -> SearchOutcome {
    let stop_flag = AtomicBool::new(false);
    let stop = &stop_flag;
    let cache_bytes = AtomicUsize::new(0);
    let limits = Limits {
        deadline,
        max_cache_bytes,
        own_max_cache_bytes: max_cache_bytes,
        cache_bytes: &cache_bytes,
        stop,
    };
    // Required-first is the second opinion (it wins on some invalid histories with operations
    // of unknown outcome); real-time, which solves most histories, keeps most of the memory.
    let other_limits = Limits {
        own_max_cache_bytes: max_cache_bytes / 4,
        ..limits
    };
    let definite = |outcome: &SearchOutcome| !matches!(outcome.result, SearchResult::Unknown(_));
    let (real_time, required_first) = std::thread::scope(|scope| {
        let other_entries = entries.clone();
        let other = scope.spawn(move || {
            let outcome =
                Search::new(model, other_entries, other_limits, Strategy::RequiredFirst).run();
            if definite(&outcome) {
                stop.store(true, Ordering::Relaxed);
            }
            outcome
        });
        let outcome = Search::new(model, entries, limits, Strategy::RealTime).run();
        if definite(&outcome) {
            stop.store(true, Ordering::Relaxed);
        }
        let other = other
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (outcome, other)
    });
    let configurations = real_time.configurations + required_first.configurations;
    let result = match (real_time.result, required_first.result) {
        (SearchResult::Valid, SearchResult::Invalid(_))
        | (SearchResult::Invalid(_), SearchResult::Valid) => {
            // Both searches are complete: they cannot disagree unless the checker is wrong.
            tracing::error!("the two search strategies disagree: a checker bug");
            SearchResult::Unknown("the two search strategies disagree (a checker bug)".into())
        }
        (SearchResult::Unknown(reason), SearchResult::Unknown(_)) => SearchResult::Unknown(reason),
        (SearchResult::Unknown(_), result) | (result, _) => result,
    };
    SearchOutcome {
        result,
        configurations,
    }
}

/// What bounds a search.
#[derive(Clone, Copy)]
struct Limits<'s> {
    deadline: Instant,
    /// For the caches of all the searches under way together.
    max_cache_bytes: usize,
    /// For this search's own cache.
    own_max_cache_bytes: usize,
    /// What their caches hold now, about.
    cache_bytes: &'s AtomicUsize,
    /// Set when the other search of a race has answered.
    stop: &'s AtomicBool,
}

/// An operation ready for the search.
#[derive(Clone)]
struct Entry<'a, O> {
    operation: &'a Operation,
    op: O,
    /// Must be linearized before `ret`; else (unknown outcome) may be left out.
    required: bool,
}

impl<O> Entry<'_, O> {
    /// The operation as a report shows it (index, process, outcome, the model's description).
    fn report<M: Model<Op = O>>(&self, model: &M) -> OpReport {
        OpReport {
            index: self.operation.index,
            process: self.operation.process,
            outcome: match self.operation.outcome {
                Outcome::Ok(_) => "ok",
                Outcome::Failed(_) => "fail",
                Outcome::Unknown => "info",
            },
            description: model.describe_op(&self.op),
        }
    }
}

/// One key's operations.
type KeyPart<'a, O> = (Option<&'a str>, Vec<Entry<'a, O>>);

/// Operations by key.
type ByKey<'a, O> = BTreeMap<Option<&'a str>, Vec<Entry<'a, O>>>;

/// The operations the model checks, split by key, and how many it skips.
fn by_key<'a, M: Model>(
    model: &M,
    operations: &'a [Operation],
) -> Result<(ByKey<'a, M::Op>, usize), ModelError> {
    let mut by_key: ByKey<'a, M::Op> = BTreeMap::new();
    let mut dropped = 0;
    for operation in operations {
        let op = match model.prepare(operation)? {
            Prepared::Check(op) => op,
            Prepared::Skip => {
                dropped += 1;
                continue;
            }
        };
        let required = !matches!(operation.outcome, Outcome::Unknown);
        by_key
            .entry(operation.key.as_deref())
            .or_default()
            .push(Entry {
                operation,
                op,
                required,
            });
    }
    Ok((by_key, dropped))
}

/// The versions' test ([`Model::observed_version`]), on one key's completed ops: in history
/// order, an op invoked after another completed must not have observed an older version, and
/// one version must have one state. The counterexample of the first violation: the op that
/// cannot be linearized, after the one (in `tail`) that must precede it.
fn version_refutation<M: Model>(model: &M, entries: &[Entry<'_, M::Op>]) -> Option<Counterexample> {
    use crate::model::Version;
    // (position, is a completion, entry): completions at one position sort before invocations
    // (they cannot share one).
    let mut events: Vec<(usize, bool, usize, Version, M::State)> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        if !entry.required {
            continue;
        }
        let (Some(ret), Some((version, state))) =
            (entry.operation.ret, model.observed_version(&entry.op))
        else {
            continue;
        };
        events.push((entry.operation.call, false, i, version, state.clone()));
        events.push((ret, true, i, version, state));
    }
    events.sort_unstable_by_key(|&(position, _, i, _, _)| (position, i));
    let report = |i: usize| {
        let entry = &entries[i];
        OpReport {
            index: entry.operation.index,
            process: entry.operation.process,
            outcome: "ok",
            description: model.describe_op(&entry.op),
        }
    };
    let mut newest_done: Option<(Version, usize)> = None;
    let mut state_of: HashMap<Version, (M::State, usize)> = HashMap::new();
    for (_, is_return, i, version, state) in events {
        if is_return {
            if newest_done.is_none_or(|(newest, _)| version > newest) {
                newest_done = Some((version, i));
            }
            continue;
        }
        let earlier = match newest_done {
            Some((newest, before)) if newest > version => Some(before),
            _ => match state_of.get(&version) {
                Some((seen, other)) if *seen != state => Some(*other),
                _ => None,
            },
        };
        if let Some(before) = earlier {
            let (_, before_state) = model
                .observed_version(&entries[before].op)
                .expect("the op observed a version");
            return Some(Counterexample {
                key: None,
                op: report(i),
                linearized: 0,
                tail: vec![StepReport {
                    op: report(before),
                    state_after: model.describe_state(&before_state),
                }],
                state: model.describe_state(&before_state),
                pending: Vec::new(),
            });
        }
        state_of.entry(version).or_insert((state, i));
    }
    None
}

/// One key's search: in the order `options` asks for, else both orders raced.
fn search_key<M: Model>(
    model: &M,
    entries: Vec<Entry<'_, M::Op>>,
    options: &CheckOptions,
    deadline: Instant,
) -> SearchOutcome {
    // Without operations of unknown outcome both orders are the same: no race.
    let strategy = match options.strategy {
        None if entries.iter().all(|entry| entry.required) => Some(Strategy::RealTime),
        strategy => strategy,
    };
    match strategy {
        Some(strategy) => {
            let limits = Limits {
                deadline,
                max_cache_bytes: options.max_cache_bytes,
                own_max_cache_bytes: options.max_cache_bytes,
                cache_bytes: &AtomicUsize::new(0),
                stop: &AtomicBool::new(false),
            };
            Search::new(model, entries, limits, strategy).run()
        }
        None => race(model, entries, deadline, options.max_cache_bytes),
    }
}

/// Checks `operations` (from [`crate::history::pair`]) against `model`.
pub fn check<M: Model>(
    model: &M,
    operations: &[Operation],
    options: &CheckOptions,
) -> Result<Report, ModelError> {
    let started = Instant::now();
    let deadline = started + options.time_budget;
    let (by_key, dropped) = by_key(model, operations)?;
    let searched: usize = by_key.values().map(Vec::len).sum();
    let unknown_outcome = by_key
        .values()
        .flatten()
        .filter(|entry| !entry.required)
        .count();
    let mut report = Report {
        verdict: Verdict::Valid,
        model: model.name(),
        operations: searched,
        dropped,
        unknown_outcome,
        keys: by_key.len(),
        configurations: 0,
        elapsed: Duration::ZERO,
        unknown_reason: None,
        counterexample: None,
    };
    // Small keys first: an invalid key found early is a definite answer even if a big key would
    // exhaust the budget.
    let mut parts: Vec<KeyPart<'_, M::Op>> = by_key.into_iter().collect();
    parts.sort_by_key(|(_, entries)| entries.len());
    for (key, entries) in parts {
        let outcome = match version_refutation(model, &entries) {
            Some(counterexample) => SearchOutcome {
                result: SearchResult::Invalid(counterexample),
                configurations: 0,
            },
            // A named strategy asks for the WGL search in that order.
            None => {
                let versions = match options.strategy {
                    None => versions::search(model, &entries, deadline, options.max_cache_bytes),
                    Some(_) => None,
                };
                match versions {
                    Some(versions::Ended::Decided(outcome)) => outcome,
                    None => search_key(model, entries, options, deadline),
                    // Its memory is freed: the WGL search may still decide in the time left.
                    Some(versions::Ended::OutOfMemory { reason, steps }) => {
                        tracing::info!("{reason}; falling back to the WGL search");
                        let mut outcome = search_key(model, entries, options, deadline);
                        outcome.configurations += steps;
                        if let SearchResult::Unknown(wgl) = &mut outcome.result {
                            *wgl = format!("{reason}; then the WGL search: {wgl}");
                        }
                        outcome
                    }
                }
            }
        };
        report.configurations += outcome.configurations;
        match outcome.result {
            SearchResult::Valid => {}
            SearchResult::Invalid(mut counterexample) => {
                counterexample.key = key.map(str::to_string);
                report.verdict = Verdict::Invalid;
                report.counterexample = Some(counterexample);
                report.unknown_reason = None;
                break;
            }
            SearchResult::Unknown(reason) => {
                report.verdict = Verdict::Unknown;
                let place = key.map_or(String::new(), |k| format!(" (key {k:?})"));
                report
                    .unknown_reason
                    .get_or_insert_with(|| format!("{reason}{place}"));
            }
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

enum SearchResult {
    Valid,
    Invalid(Counterexample),
    Unknown(String),
}

/// The search's cache outgrew its memory bound (the smaller of its own and the shared one).
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {mib} MiB reached after {configurations} configurations")]
struct MemoryLimitReached {
    mib: usize,
    configurations: u64,
}

struct SearchOutcome {
    result: SearchResult,
    configurations: u64,
}

/// Sentinel heads of the two lists, and the "no node" mark.
///
/// The main list holds the invocations and completions of the operations that must be
/// linearized, in history order. The optional list holds the invocations of the operations of
/// unknown outcome (their completions would all be at +infinity, so they need none).
const HEAD: usize = 0;
const OPTIONAL_HEAD: usize = 1;
const NIL: usize = usize::MAX;
/// How many search steps between two looks at the clock.
const CLOCK_EVERY_STEPS: u64 = 1 << 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeKind {
    Head,
    Call,
    Return,
    OptionalCall,
}

/// Where the scan for the next operation to linearize is.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// In the main list, before its first completion.
    Required,
    /// In the optional list, among the invocations before `first_return` (the main list's first
    /// completion).
    Optional { first_return: usize },
}

/// In which order the search tries the candidates for the next linearization point. Both are
/// complete; they differ in speed, by history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// In history order, optional operations among the others (Porcupine's and Knossos' order).
    RealTime,
    /// Operations that must be linearized first, those of unknown outcome last.
    RequiredFirst,
}

/// One key's WGL search.
struct Search<'m, 'a, M: Model> {
    model: &'m M,
    strategy: Strategy,
    entries: Vec<Entry<'a, M::Op>>,
    node_op: Vec<usize>,
    node_kind: Vec<NodeKind>,
    /// The event's position in the history.
    node_position: Vec<usize>,
    /// For a `Call` node, its `Return` node.
    node_match: Vec<usize>,
    next: Vec<usize>,
    prev: Vec<usize>,
    limits: Limits<'m>,
}

/// A linearized operation on the search stack, with what it takes to undo it.
struct Frame<S> {
    node: usize,
    state_before: S,
    /// For an optional operation: the main list's first completion when it was linearized.
    first_return: usize,
    /// Linearized without a choice (a read-only op that matched the state, see
    /// [`Model::read_only`]): when what follows fails, so does the configuration before it, and
    /// the backtrack goes on past it instead of trying another candidate there.
    forced: bool,
}

/// The deepest dead end seen, for the counterexample.
struct DeadEnd<S> {
    depth: usize,
    /// (op, state after) of the last steps.
    tail: Vec<(usize, S)>,
    op: usize,
    state: S,
    pending: Vec<usize>,
}

/// The mutable state of one search: what is linearized, the cache of configurations seen, the
/// stack, and where the scan for the next candidate is.
struct Walk<S> {
    /// Each op's bit, numbered apart among the required and the optional ops.
    bit_of: Vec<usize>,
    /// The linearized required and optional ops, one bit each.
    required: Vec<u64>,
    optional: Vec<u64>,
    /// Required ops not linearized yet.
    required_left: usize,
    cache: Cache<S>,
    stack: Vec<Frame<S>>,
    state: S,
    dead_end: Option<DeadEnd<S>>,
    steps: u64,
    phase: Phase,
    node: usize,
    /// The scan is at a configuration just reached: look for read-only candidates to linearize
    /// first ([`Search::linearize_read_only`]).
    fresh: bool,
}

impl<S> Walk<S> {
    /// Flips op's bit in its set.
    fn flip(&mut self, required: bool, op: usize) {
        let set = if required {
            &mut self.required
        } else {
            &mut self.optional
        };
        flip(set, self.bit_of[op]);
    }
}

impl<'m, 'a, M: Model> Search<'m, 'a, M> {
    fn new(
        model: &'m M,
        entries: Vec<Entry<'a, M::Op>>,
        limits: Limits<'m>,
        strategy: Strategy,
    ) -> Self {
        let mut main: Vec<(usize, usize, NodeKind)> = Vec::new();
        let mut optional: Vec<(usize, usize, NodeKind)> = Vec::new();
        for (op, entry) in entries.iter().enumerate() {
            let call = entry.operation.call;
            if entry.required {
                main.push((call, op, NodeKind::Call));
                let ret = entry.operation.ret.unwrap_or(usize::MAX);
                main.push((ret, op, NodeKind::Return));
            } else if strategy == Strategy::RealTime {
                main.push((call, op, NodeKind::OptionalCall));
            } else {
                optional.push((call, op, NodeKind::OptionalCall));
            }
        }
        main.sort_unstable_by_key(|&(position, op, _)| (position, op));
        optional.sort_unstable_by_key(|&(position, op, _)| (position, op));
        let nodes = 2 + main.len() + optional.len();
        let mut node_op = vec![NIL; nodes];
        let mut node_kind = vec![NodeKind::Head; nodes];
        let mut node_position = vec![0; nodes];
        let mut node_match = vec![NIL; nodes];
        let mut next = vec![NIL; nodes];
        let mut prev = vec![NIL; nodes];
        let mut call_node = vec![NIL; entries.len()];
        let mut node = 2;
        for (head, events) in [(HEAD, &main), (OPTIONAL_HEAD, &optional)] {
            let mut last = head;
            for &(position, op, kind) in events {
                node_op[node] = op;
                node_kind[node] = kind;
                node_position[node] = position;
                match kind {
                    NodeKind::Return => node_match[call_node[op]] = node,
                    _ => call_node[op] = node,
                }
                next[last] = node;
                prev[node] = last;
                last = node;
                node += 1;
            }
        }
        Self {
            model,
            strategy,
            entries,
            node_op,
            node_kind,
            node_position,
            node_match,
            next,
            prev,
            limits,
        }
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != NIL {
            self.prev[next] = node;
        }
    }

    /// Takes a linearized operation's nodes out of the lists.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        if self.node_kind[call] == NodeKind::Call {
            self.unlink(self.node_match[call]);
        }
    }

    /// Puts them back (in the reverse order of [`Self::lift`]).
    fn unlift(&mut self, call: usize) {
        if self.node_kind[call] == NodeKind::Call {
            self.relink(self.node_match[call]);
        }
        self.relink(call);
    }

    /// The search. Candidates for the next linearization point are the invocations before the
    /// main list's first completion: first the required ones, then the optional ones. Trying
    /// the optional ones last means configurations are first reached with as few of them as
    /// possible, which is what lets the cache's subsumption prune the others.
    fn run(mut self) -> SearchOutcome {
        let mut walk = self.walk();
        let result = loop {
            if walk.required_left == 0 {
                // Every operation that had to happen has; the rest may never have.
                break SearchResult::Valid;
            }
            walk.steps += 1;
            if walk.steps.is_multiple_of(CLOCK_EVERY_STEPS) {
                if let Some(reason) = self.out_of_time(&walk) {
                    break SearchResult::Unknown(reason);
                }
            }
            if walk.fresh {
                walk.fresh = false;
                match self.linearize_read_only(&mut walk) {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(reason) => break SearchResult::Unknown(reason.to_string()),
                }
            }
            let candidate = match walk.phase {
                Phase::Required => {
                    if walk.node == NIL {
                        // Unreachable: a required op left means its completion is in the list.
                        break SearchResult::Valid;
                    }
                    if self.node_kind[walk.node] == NodeKind::Return {
                        walk.phase = Phase::Optional {
                            first_return: walk.node,
                        };
                        walk.node = match self.strategy {
                            Strategy::RequiredFirst => self.next[OPTIONAL_HEAD],
                            // The optional ops are in the main list: none left to try.
                            Strategy::RealTime => NIL,
                        };
                        continue;
                    }
                    Some(walk.node)
                }
                Phase::Optional { first_return } => (walk.node != NIL
                    && self.node_position[walk.node] < self.node_position[first_return])
                    .then_some(walk.node),
            };
            if let Some(call) = candidate {
                if let Err(reason) = self.try_linearize(&mut walk, call) {
                    break SearchResult::Unknown(reason.to_string());
                }
                continue;
            }
            if let Some(counterexample) = self.backtrack(&mut walk) {
                break SearchResult::Invalid(counterexample);
            }
        };
        // The cache is dropped on return: its memory is the other search's to use.
        self.limits
            .cache_bytes
            .fetch_sub(walk.cache.bytes, Ordering::Relaxed);
        SearchOutcome {
            result,
            configurations: walk.cache.visited,
        }
    }

    /// The search's starting point: nothing linearized, the model's initial state, the scan at
    /// the main list's head.
    fn walk(&self) -> Walk<M::State> {
        // Each op's bit, numbered apart among the required and the optional (unknown outcome) ops.
        let mut counts = [0usize; 2];
        let bit_of: Vec<usize> = self
            .entries
            .iter()
            .map(|entry| {
                let count = &mut counts[usize::from(entry.required)];
                *count += 1;
                *count - 1
            })
            .collect();
        let [optional_count, required_left] = counts;
        Walk {
            bit_of,
            optional: vec![0u64; optional_count.div_ceil(64)],
            required: vec![0u64; required_left.div_ceil(64)],
            required_left,
            cache: Cache::default(),
            stack: Vec::new(),
            state: self.model.init(),
            dead_end: None,
            steps: 0,
            phase: Phase::Required,
            node: self.next[HEAD],
            fresh: true,
        }
    }

    /// Why the search must stop now (stopped by the other search, or past the deadline).
    fn out_of_time(&self, walk: &Walk<M::State>) -> Option<String> {
        if self.limits.stop.load(Ordering::Relaxed) {
            return Some("stopped".into());
        }
        if Instant::now() >= self.limits.deadline {
            return Some(format!(
                "time budget exhausted after {} configurations, {} of {} operations linearized at best",
                walk.cache.visited,
                walk.dead_end.as_ref().map_or(0, |d| d.depth),
                self.entries.len()
            ));
        }
        None
    }

    /// Remembers the configuration (the walk's sets with `state`): `false` if it was seen (or is
    /// subsumed by one seen). `Err` when the cache outgrows its memory limit.
    fn remember(
        &self,
        walk: &mut Walk<M::State>,
        state: &M::State,
    ) -> Result<bool, MemoryLimitReached> {
        let heap_bytes = self.model.state_heap_bytes(state);
        let bytes_before = walk.cache.bytes;
        if !walk
            .cache
            .insert(&walk.required, &walk.optional, state, heap_bytes)
        {
            return Ok(false);
        }
        let grown = walk.cache.bytes - bytes_before;
        let total = self.limits.cache_bytes.fetch_add(grown, Ordering::Relaxed) + grown;
        if total > self.limits.max_cache_bytes || walk.cache.bytes > self.limits.own_max_cache_bytes
        {
            return Err(MemoryLimitReached {
                mib: self
                    .limits
                    .own_max_cache_bytes
                    .min(self.limits.max_cache_bytes)
                    >> 20,
                configurations: walk.cache.visited,
            });
        }
        Ok(true)
    }

    /// Linearizes `call` (its bit already set, the configuration remembered): onto the stack,
    /// out of the lists, and the scan restarts at the head.
    fn push(&mut self, walk: &mut Walk<M::State>, call: usize, next_state: M::State, forced: bool) {
        let op = self.node_op[call];
        walk.stack.push(Frame {
            node: call,
            state_before: std::mem::replace(&mut walk.state, next_state),
            first_return: match walk.phase {
                Phase::Optional { first_return } => first_return,
                Phase::Required => NIL,
            },
            forced,
        });
        if self.entries[op].required {
            walk.required_left -= 1;
        }
        self.lift(call);
        walk.phase = Phase::Required;
        walk.node = self.next[HEAD];
        walk.fresh = true;
    }

    /// Reads commute: a candidate the model calls read-only ([`Model::read_only`]) that matches
    /// the current state can be linearized now without trying the alternatives. Whatever
    /// linearization from here places it later, moving it to now is one too (it changes no state,
    /// and no operation still to be linearized completed before its invocation, or it would not
    /// be a candidate). So it is linearized without a choice point; if what follows fails, the
    /// configuration before it fails too. `true` when one was linearized.
    fn linearize_read_only(
        &mut self,
        walk: &mut Walk<M::State>,
    ) -> Result<bool, MemoryLimitReached> {
        let mut node = self.next[HEAD];
        while node != NIL && self.node_kind[node] != NodeKind::Return {
            let op = self.node_op[node];
            if self.node_kind[node] == NodeKind::Call
                && self.model.read_only(&walk.state, &self.entries[op].op)
                && self
                    .model
                    .step(&walk.state, &self.entries[op].op)
                    .is_some_and(|next| next == walk.state)
            {
                walk.flip(true, op);
                let state = walk.state.clone();
                if self.remember(walk, &state)? {
                    self.push(walk, node, state, true);
                    return Ok(true);
                }
                walk.flip(true, op);
            }
            node = self.next[node];
        }
        Ok(false)
    }

    /// Tries candidate `call` as the next linearization point: linearizes it when the model
    /// accepts it from a configuration not seen yet (the scan restarts), else moves the scan on.
    /// `Err` when the cache outgrows its memory limit.
    fn try_linearize(
        &mut self,
        walk: &mut Walk<M::State>,
        call: usize,
    ) -> Result<(), MemoryLimitReached> {
        let op = self.node_op[call];
        if let Some(next_state) = self.model.step(&walk.state, &self.entries[op].op) {
            let is_required = self.entries[op].required;
            walk.flip(is_required, op);
            if self.remember(walk, &next_state)? {
                self.push(walk, call, next_state, false);
                return Ok(());
            }
            walk.flip(is_required, op);
        }
        walk.node = self.next[call];
        Ok(())
    }

    /// Every candidate tried: the first completion's operation cannot be linearized in time
    /// from here. Undoes the last linearized operation and resumes the scan after it; the
    /// counterexample when there is none left to undo.
    fn backtrack(&mut self, walk: &mut Walk<M::State>) -> Option<Counterexample> {
        let Phase::Optional { first_return } = walk.phase else {
            unreachable!("only the optional phase runs out of candidates");
        };
        if walk
            .dead_end
            .as_ref()
            .is_none_or(|d| walk.stack.len() > d.depth)
        {
            walk.dead_end = Some(self.dead_end(&walk.stack, &walk.state, first_return));
        }
        loop {
            let Some(frame) = walk.stack.pop() else {
                let dead_end = walk
                    .dead_end
                    .take()
                    .unwrap_or_else(|| self.dead_end(&walk.stack, &walk.state, first_return));
                return Some(self.counterexample(dead_end));
            };
            let undone = self.node_op[frame.node];
            let is_required = self.entries[undone].required;
            walk.flip(is_required, undone);
            if is_required {
                walk.required_left += 1;
            }
            walk.phase = if frame.first_return == NIL {
                Phase::Required
            } else {
                Phase::Optional {
                    first_return: frame.first_return,
                }
            };
            walk.state = frame.state_before;
            self.unlift(frame.node);
            walk.node = self.next[frame.node];
            walk.fresh = false;
            if !frame.forced {
                return None;
            }
        }
    }

    fn dead_end(
        &self,
        stack: &[Frame<M::State>],
        state: &M::State,
        ret_node: usize,
    ) -> DeadEnd<M::State> {
        let first = stack.len().saturating_sub(COUNTEREXAMPLE_TAIL);
        let tail = (first..stack.len())
            .map(|i| {
                let after = stack
                    .get(i + 1)
                    .map_or_else(|| state.clone(), |f| f.state_before.clone());
                (self.node_op[stack[i].node], after)
            })
            .collect();
        let stuck = self.node_op[ret_node];
        let deadline = self.node_position[ret_node];
        let mut pending = Vec::new();
        for head in [HEAD, OPTIONAL_HEAD] {
            let mut node = self.next[head];
            while node != NIL
                && self.node_position[node] < deadline
                && pending.len() < COUNTEREXAMPLE_PENDING
            {
                if self.node_kind[node] != NodeKind::Return && self.node_op[node] != stuck {
                    pending.push(self.node_op[node]);
                }
                node = self.next[node];
            }
        }
        DeadEnd {
            depth: stack.len(),
            tail,
            op: stuck,
            state: state.clone(),
            pending,
        }
    }

    fn op_report(&self, op: usize) -> OpReport {
        self.entries[op].report(self.model)
    }

    fn counterexample(&self, dead_end: DeadEnd<M::State>) -> Counterexample {
        Counterexample {
            key: None,
            op: self.op_report(dead_end.op),
            linearized: dead_end.depth,
            tail: dead_end
                .tail
                .iter()
                .map(|(op, state)| StepReport {
                    op: self.op_report(*op),
                    state_after: self.model.describe_state(state),
                })
                .collect(),
            state: self.model.describe_state(&dead_end.state),
            pending: dead_end
                .pending
                .iter()
                .map(|op| self.op_report(*op))
                .collect(),
        }
    }
}

fn flip(set: &mut [u64], bit: usize) {
    set[bit / 64] ^= 1u64 << (bit % 64);
}

/// `small` ⊆ `large` (bitsets of the same length).
fn is_subset(small: &[u64], large: &[u64]) -> bool {
    small.iter().zip(large).all(|(s, l)| s & !l == 0)
}

/// The configurations visited, with subsumption for operations of unknown outcome.
///
/// A configuration is (required ops linearized, optional ops linearized, model state). Reaching a
/// configuration seen before cannot lead anywhere new. Neither can reaching one that differs
/// only by *more* optional ops linearized: from the one seen, every continuation of the new one
/// was available too (the extra optional ops can simply never take effect, and their completions,
/// at +infinity, constrain nothing). Without this, every subset of the pending `info` ops makes a
/// configuration of its own, and refuting a history with a dozen of them takes millions of steps.
struct Cache<S> {
    /// Every distinct state met, stored once; configurations refer to states by number. Big
    /// states (a kv store's strings) are shared by many configurations.
    states: HashMap<S, u32, BuildHasherDefault<FxHasher>>,
    /// By hash of (required set, state number); Porcupine's layout, which needs no key clone to
    /// look up.
    buckets: HashMap<u64, Vec<CacheEntry>, BuildHasherDefault<FxHasher>>,
    /// Configurations inserted so far (the work done; some may since have been subsumed).
    visited: u64,
    /// About how much memory the cache holds.
    bytes: usize,
}

struct CacheEntry {
    required: Box<[u64]>,
    state: u32,
    /// The optional sets seen with this (required set, state): an antichain (none is a subset of
    /// another).
    optional: Vec<Box<[u64]>>,
}

impl<S> Default for Cache<S> {
    fn default() -> Self {
        Self {
            states: HashMap::default(),
            buckets: HashMap::default(),
            visited: 0,
            bytes: 0,
        }
    }
}

impl<S: Clone + Eq + Hash> Cache<S> {
    /// Remembers the configuration; `false` if it was seen, or is subsumed by one seen.
    /// `state_heap_bytes` is what the state holds on the heap, for the memory estimate.
    fn insert(
        &mut self,
        required: &[u64],
        optional: &[u64],
        state: &S,
        state_heap_bytes: usize,
    ) -> bool {
        const WORD: usize = std::mem::size_of::<u64>();
        // A boxed slice's pointer and length, and allocator overhead.
        const BOX: usize = 32;
        // A slot of a hash table at its typical load.
        const SLOT: usize = 64;
        let state = match self.states.get(state) {
            Some(&number) => number,
            None => {
                let number = u32::try_from(self.states.len()).unwrap_or(u32::MAX);
                self.states.insert(state.clone(), number);
                self.bytes += SLOT + std::mem::size_of::<S>() + state_heap_bytes;
                number
            }
        };
        let mut hasher = FxHasher::default();
        required.hash(&mut hasher);
        hasher.write_u32(state);
        // Nearly every bucket holds one entry: do not let `Vec` round up to four.
        let bucket = self
            .buckets
            .entry(hasher.finish())
            .or_insert_with(|| Vec::with_capacity(1));
        match bucket
            .iter_mut()
            .find(|entry| entry.state == state && *entry.required == *required)
        {
            Some(entry) => {
                if entry.optional.iter().any(|seen| is_subset(seen, optional)) {
                    return false;
                }
                // Those with more optional ops than this one are now subsumed by it.
                entry.optional.retain(|seen| !is_subset(optional, seen));
                entry.optional.push(optional.into());
                self.bytes += optional.len() * WORD + BOX;
            }
            None => {
                bucket.push(CacheEntry {
                    required: required.into(),
                    state,
                    optional: vec![optional.into()],
                });
                self.bytes += SLOT
                    + std::mem::size_of::<CacheEntry>()
                    + (required.len() + optional.len()) * WORD
                    + 3 * BOX;
            }
        }
        self.visited += 1;
        true
    }
}

/// The Firefox/rustc hash: much faster than SipHash on the cache's small keys, and the keys are
/// not chosen by an adversary who could make it collide.
#[derive(Default, Clone, Copy)]
struct FxHasher {
    hash: u64,
}

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        for &byte in chunks.remainder() {
            self.add(u64::from(byte));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_skips_seen_and_subsumed_configurations() {
        let mut cache: Cache<i64> = Cache::default();
        let (r1, r2) = ([0b01u64], [0b11u64]);
        assert!(cache.insert(&r1, &[0b000], &7, 0));
        assert!(!cache.insert(&r1, &[0b000], &7, 0), "seen");
        assert!(
            !cache.insert(&r1, &[0b010], &7, 0),
            "more optional ops: subsumed"
        );
        assert!(cache.insert(&r1, &[0b010], &8, 0), "another state");
        assert!(cache.insert(&r2, &[0b010], &7, 0), "another required set");
        // Fewer optional ops than a configuration seen: new, and it now subsumes that one.
        assert!(cache.insert(&r1, &[0b001], &8, 0));
        assert!(cache.insert(&r1, &[0b000], &8, 0));
        assert!(!cache.insert(&r1, &[0b011], &8, 0));
        assert_eq!(cache.visited, 5);
        assert_eq!(cache.states.len(), 2, "each state stored once");
    }

    /// The per-version search gives up at its memory limit on a history the WGL search decides
    /// within the same limit: the check falls back to it and decides. Past the limits of both,
    /// the reason names both.
    #[test]
    fn the_wgl_search_decides_when_the_per_version_search_runs_out_of_memory() {
        use crate::model::replica_info::ReplicaInfo;
        let info = |master_epoch: i64, master: i64, epoch: i64| {
            format!(
                r#"{{"master_epoch":{master_epoch},"master_id":{master},"sync_state_set_epoch":{epoch},"sync_state_set":[{master}]}}"#
            )
        };
        let line = |process: u64, kind: &str, f: &str, value: &str| {
            format!(
                r#"{{"process":{process},"type":"{kind}","f":"{f}","key":"set","value":{value}}}"#
            )
        };
        // Master 1 elected in epoch 1, then 20 alters one after the other, while 200 alters of
        // unknown outcome (from a view no state has: none can take effect) stay pending. Each
        // version's search holds counts of 200 kinds; the WGL search's optional sets are bits.
        let mut lines = vec![line(0, "invoke", "elect", r#"{"broker_id":1}"#)];
        for i in 0..200 {
            let request = format!(
                r#"{{"master_id":9,"master_epoch":1,"sync_state_set_epoch":{},"sync_state_set":[9]}}"#,
                100 + i
            );
            lines.push(line(100 + i, "invoke", "alter", &request));
            lines.push(line(100 + i, "info", "alter", "null"));
        }
        lines.push(line(0, "ok", "elect", &info(1, 1, 1)));
        for epoch in 1..=20 {
            let set = if epoch % 2 == 1 { "[1,2]" } else { "[1]" };
            let request = format!(
                r#"{{"master_id":1,"master_epoch":1,"sync_state_set_epoch":{epoch},"sync_state_set":{set}}}"#
            );
            lines.push(line(0, "invoke", "alter", &request));
            lines.push(line(0, "ok", "alter", &format!("{}", epoch + 1)));
        }
        let text = lines.join("\n");
        let parsed = crate::history::parse_jsonl(&text).expect("a history");
        let (operations, _) = crate::history::pair(&parsed.ops).expect("paired");
        let model = ReplicaInfo;
        let (by_key, _) = by_key(&model, &operations).expect("the model's ops");
        let entries = by_key.into_values().next().expect("one key");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut fell_back = Vec::new();
        for max_cache_bytes in (10..22).map(|shift| 1usize << shift) {
            let gave_up = matches!(
                versions::search(&model, &entries, deadline, max_cache_bytes),
                Some(versions::Ended::OutOfMemory { .. })
            );
            let options = CheckOptions {
                max_cache_bytes,
                ..CheckOptions::default()
            };
            let report = check(&model, &operations, &options).expect("checked");
            if gave_up && report.verdict == Verdict::Valid {
                fell_back.push(max_cache_bytes);
            }
            if !gave_up {
                assert_eq!(report.verdict, Verdict::Valid, "{report:#?}");
            }
            if report.verdict == Verdict::Unknown {
                // Both gave up: the reason says so.
                let reason = report.unknown_reason.unwrap_or_default();
                assert!(
                    reason.contains("per-version search reached its memory limit")
                        && reason.contains("then the WGL search: memory limit"),
                    "{reason}"
                );
            }
        }
        assert!(
            !fell_back.is_empty(),
            "no limit under which the per-version search gives up and the WGL search decides"
        );
    }

    #[test]
    fn subset() {
        assert!(is_subset(&[0b0101, 0], &[0b0111, 1]));
        assert!(!is_subset(&[0b1000, 0], &[0b0111, 1]));
        assert!(!is_subset(&[0, 2], &[0b0111, 1]));
    }
}
