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
//! step must be legal), removes the operation's two entries from the list and starts again from
//! the head; at a completion it has met an operation that had to be linearized before this point
//! and was not, so it backtracks: it undoes the last linearized operation (putting its entries
//! back) and tries the entry after it. Each (set of linearized operations, model state) reached
//! is remembered; reaching one again cannot lead anywhere new, so it is skipped. That cache is what
//! makes the search practical (Lowe, "Testing for linearizability", 2017).
//!
//! The history is split by `key` first and each part searched alone (P-compositionality:
//! a history is linearizable iff each key's sub-history is). A time budget bounds the whole check:
//! when it runs out the verdict is *unknown*, never a hang. So does a bound on the cache's size.
//!
//! On an invalid history the report gives a counterexample: the deepest partial linearization the
//! search reached, the operation whose completion it could not get past, and the operations that
//! were pending (invoked, not linearized) there.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::history::{Operation, Outcome};
use crate::model::{Model, ModelError, Prepared};

/// Limits of one check.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// After this long the verdict is [`Verdict::Unknown`].
    pub time_budget: Duration,
    /// After remembering this many (linearized set, state) pairs in one key's search, the verdict
    /// is [`Verdict::Unknown`]. Bounds memory.
    pub max_cached_configurations: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            time_budget: Duration::from_secs(60),
            // About 100 bytes each for small states and histories: ~1 GB at most.
            max_cached_configurations: 10_000_000,
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
    /// Configurations (linearized set, state) the search visited.
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

/// An operation ready for the search.
struct Entry<'a, O> {
    operation: &'a Operation,
    op: O,
    /// Must be linearized before `ret`; else (unknown outcome) may be left out.
    required: bool,
}

/// One key's operations.
type KeyPart<'a, O> = (Option<&'a str>, Vec<Entry<'a, O>>);

/// The configurations visited: (linearized operations as a bitset, model state).
type Cache<S> = HashSet<(Box<[u64]>, S), BuildHasherDefault<FxHasher>>;

/// Checks `operations` (from [`crate::history::pair`]) against `model`.
pub fn check<M: Model>(
    model: &M,
    operations: &[Operation],
    options: &CheckOptions,
) -> Result<Report, ModelError> {
    let started = Instant::now();
    let deadline = started + options.time_budget;
    let mut by_key: BTreeMap<Option<&str>, Vec<Entry<'_, M::Op>>> = BTreeMap::new();
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
        let outcome = Search::new(model, entries, deadline, options).run();
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

struct SearchOutcome {
    result: SearchResult,
    configurations: u64,
}

/// The list's sentinel head and the "no node" mark.
const HEAD: usize = 0;
const NIL: usize = usize::MAX;
/// How many search steps between two looks at the clock.
const CLOCK_EVERY_STEPS: u64 = 1 << 12;

/// One key's WGL search.
struct Search<'m, 'a, M: Model> {
    model: &'m M,
    entries: Vec<Entry<'a, M::Op>>,
    /// Node `n` (1-based; 0 is the head): the op it belongs to.
    node_op: Vec<usize>,
    /// For an invocation node, its completion node; `NIL` for completion nodes.
    node_match: Vec<usize>,
    next: Vec<usize>,
    prev: Vec<usize>,
    deadline: Instant,
    max_cached: usize,
}

/// A linearized operation on the search stack, with the state before it.
struct Frame<S> {
    node: usize,
    state_before: S,
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

impl<'m, 'a, M: Model> Search<'m, 'a, M> {
    fn new(
        model: &'m M,
        entries: Vec<Entry<'a, M::Op>>,
        deadline: Instant,
        options: &CheckOptions,
    ) -> Self {
        // Events in history order; completions of unknown outcome at +infinity, in call order.
        let mut events: Vec<(usize, usize, usize, bool)> = Vec::with_capacity(entries.len() * 2);
        for (i, entry) in entries.iter().enumerate() {
            let call = entry.operation.call;
            events.push((call, 0, i, true));
            let ret = if entry.required {
                entry.operation.ret.unwrap_or(usize::MAX)
            } else {
                usize::MAX
            };
            events.push((ret, call, i, false));
        }
        events.sort_unstable();
        let nodes = events.len() + 1;
        let mut node_op = vec![NIL; nodes];
        let mut node_match = vec![NIL; nodes];
        let mut call_node = vec![NIL; entries.len()];
        for (position, &(_, _, op, is_call)) in events.iter().enumerate() {
            let node = position + 1;
            node_op[node] = op;
            if is_call {
                call_node[op] = node;
            } else {
                node_match[call_node[op]] = node;
            }
        }
        let next = (0..nodes)
            .map(|n| if n + 1 < nodes { n + 1 } else { NIL })
            .collect();
        let prev = (0..nodes).map(|n| n.wrapping_sub(1)).collect();
        Self {
            model,
            entries,
            node_op,
            node_match,
            next,
            prev,
            deadline,
            max_cached: options.max_cached_configurations,
        }
    }

    fn is_call(&self, node: usize) -> bool {
        self.node_match[node] != NIL
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

    /// Takes an invocation and its completion out of the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.node_match[call]);
    }

    /// Puts them back (in the reverse order of [`Self::lift`]).
    fn unlift(&mut self, call: usize) {
        self.relink(self.node_match[call]);
        self.relink(call);
    }

    fn run(mut self) -> SearchOutcome {
        let n = self.entries.len();
        let mut required_left = self.entries.iter().filter(|e| e.required).count();
        let mut linearized = vec![0u64; n.div_ceil(64)];
        let mut cache: Cache<M::State> = HashSet::default();
        let mut stack: Vec<Frame<M::State>> = Vec::new();
        let mut state = self.model.init();
        let mut dead_end: Option<DeadEnd<M::State>> = None;
        let mut steps: u64 = 0;
        let mut node = self.next[HEAD];
        let outcome = |result, cache: &HashSet<_, _>| SearchOutcome {
            result,
            configurations: cache.len() as u64,
        };
        loop {
            if required_left == 0 {
                // Every operation that had to happen has; the rest may never have.
                return outcome(SearchResult::Valid, &cache);
            }
            steps += 1;
            if steps.is_multiple_of(CLOCK_EVERY_STEPS) && Instant::now() >= self.deadline {
                let reason = format!(
                    "time budget exhausted after {} configurations, {} of {} operations linearized at best",
                    cache.len(),
                    dead_end.as_ref().map_or(0, |d| d.depth),
                    n
                );
                return outcome(SearchResult::Unknown(reason), &cache);
            }
            if node == NIL {
                // Only completions at +infinity follow the required ones, so the scan meets a
                // required completion first; reaching the end means nothing is left to try.
                return outcome(SearchResult::Valid, &cache);
            }
            let op = self.node_op[node];
            if self.is_call(node) {
                if let Some(next_state) = self.model.step(&state, &self.entries[op].op) {
                    let (word, bit) = (op / 64, 1u64 << (op % 64));
                    linearized[word] |= bit;
                    if cache.insert((linearized.clone().into_boxed_slice(), next_state.clone())) {
                        if cache.len() > self.max_cached {
                            let reason = format!(
                                "state cache limit of {} configurations reached",
                                self.max_cached
                            );
                            return outcome(SearchResult::Unknown(reason), &cache);
                        }
                        stack.push(Frame {
                            node,
                            state_before: std::mem::replace(&mut state, next_state),
                        });
                        if self.entries[op].required {
                            required_left -= 1;
                        }
                        self.lift(node);
                        node = self.next[HEAD];
                        continue;
                    }
                    linearized[word] &= !bit;
                }
                node = self.next[node];
            } else {
                // A completion: its operation had to be linearized by now. Backtrack.
                if dead_end.as_ref().is_none_or(|d| stack.len() > d.depth) {
                    dead_end = Some(self.dead_end(&stack, &state, node));
                }
                let Some(frame) = stack.pop() else {
                    let dead_end = dead_end.unwrap_or_else(|| self.dead_end(&stack, &state, node));
                    return outcome(SearchResult::Invalid(self.counterexample(dead_end)), &cache);
                };
                let undone = self.node_op[frame.node];
                linearized[undone / 64] &= !(1u64 << (undone % 64));
                if self.entries[undone].required {
                    required_left += 1;
                }
                state = frame.state_before;
                self.unlift(frame.node);
                node = self.next[frame.node];
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
        let mut pending = Vec::new();
        let mut node = self.next[HEAD];
        let stuck = self.node_op[ret_node];
        while node != ret_node && node != NIL && pending.len() < COUNTEREXAMPLE_PENDING {
            if self.is_call(node) && self.node_op[node] != stuck {
                pending.push(self.node_op[node]);
            }
            node = self.next[node];
        }
        DeadEnd {
            depth: stack.len(),
            tail,
            op: self.node_op[ret_node],
            state: state.clone(),
            pending,
        }
    }

    fn op_report(&self, op: usize) -> OpReport {
        let entry = &self.entries[op];
        OpReport {
            index: entry.operation.index,
            process: entry.operation.process,
            outcome: match entry.operation.outcome {
                Outcome::Ok(_) => "ok",
                Outcome::Failed(_) => "fail",
                Outcome::Unknown => "info",
            },
            description: self.model.describe_op(&entry.op),
        }
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
