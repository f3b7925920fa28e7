//! The per-version decomposition: a search for models whose states carry a version
//! ([`Model::state_version`], [`Model::observed_version`]), such as the replica info.
//!
//! # Why the search of [`super::Search`] blows up on a long controller history
//! A 5-minute controller run under every fault (12 648 ops on two broker sets, 205 of unknown
//! outcome; `jepsen/tests/data/controller-all-5min.jsonl.gz`) stayed *unknown* after 900 s of
//! that search. The culprits are the elections of unknown outcome (`elect` ending `info`, and
//! the nemesis' "the controller may elect on its own"): an `info` op may take effect at any
//! point after its invocation, so each stays a candidate for the rest of the history (about a
//! hundred per broker set, pending over thousands of ops). Wherever the master epoch moves on
//! with no `ok` election to move it (a read is the first to see the new epoch), the search must
//! pick which of the dozens of pending elections took effect there, and whether undesignated
//! (master unknown until pinned) or designated; every pick is a different set of optional ops
//! linearized, which the cache's subsumption cannot merge (the sets are incomparable), and a
//! wrong pick (one a later transition needed: the only designated one, or an `info` alter that
//! fits just one state) is found out only thousands of ops later, where the search backtracks
//! over every read and alter in between, each configuration new. The stuck point moved with the
//! run (858 ops linearized at best after 120 s in a debug build, 4 855 after 900 s).
//!
//! # The decomposition
//! Every completed op observed a full state with its version ([`Model::observed_version`]),
//! and (the contract of [`Model::state_version`]) leaves the model in exactly that state, while
//! every step keeps or raises the state's version and an op of unknown outcome that takes effect
//! raises it. So in any linearization the completed ops come in the order of their versions,
//! and the ops of one version `v` (its *group*) form one run: the first of them (the *entry*)
//! brings the state to `S_v`, the others leave it there (an op of unknown outcome taking effect
//! in between would raise the version for good). Between the group of `v` and that of the next
//! version `w` only ops of unknown outcome take effect: the *transition* from `S_v` to the state
//! from which `w`'s entry leads to `S_w`, or which is `S_w` already.
//!
//! Real time: an op `x` must be linearized before `y` if `x` completed before `y` was invoked.
//! For completed ops of different versions that is the versions' test
//! ([`super::version_refutation`], run first). Within a group, the entry must be invoked before
//! every other op of its group completed. An op of unknown outcome (completion at +infinity)
//! may be linearized in the transition into version `v_i` iff it was invoked before every
//! completed op of a version `>= v_i` completed: from its first transition on, it stays usable
//! until the end. So the history is linearizable iff the transitions can be made one after the
//! other, each with ops of unknown outcome usable there and not used before: the search goes
//! transition by transition (a few hundred to a thousand per broker set, each a handful of
//! model steps), and the only choice carried from one to the next is *how many* ops of each
//! kind (ops of unknown outcome that are equal, [`PartialEq`]) are used up: of one kind, all
//! usable in a transition stay usable in every later one, so which of them is used does not
//! matter. Configurations (transition, ops used per kind) that failed are remembered.
//!
//! A valid verdict carries its witness: the linearization is rebuilt op by op and checked
//! against the model and real time before the verdict is given (a checker bug cannot make an
//! invalid history valid). An invalid verdict means every choice failed: the counterexample
//! names an op of the furthest version no transition reached ([`Decomposition::counterexample`]).
//!
//! # Memory
//! `max_cache_bytes` bounds an estimate of everything the search holds: the configurations
//! that failed, the stack (each transition's ways, with the ops used after each), and the
//! breadth-first search of the transition under way (its states seen and its queue). Past it
//! the search ends [`Ended::OutOfMemory`], and the caller falls back to the WGL search.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use super::{
    Counterexample, Entry, OpReport, SearchOutcome, SearchResult, StepReport,
    COUNTEREXAMPLE_PENDING, COUNTEREXAMPLE_TAIL,
};
use crate::model::{Model, Version};

/// How many steps between two looks at the clock.
const CLOCK_EVERY: u64 = 1 << 10;

/// The completed ops of one version.
struct Group<S> {
    version: Version,
    state: S,
    /// Entries, by completion.
    members: Vec<usize>,
    /// Members that may be the entry (the first of the group linearized).
    candidates: Vec<usize>,
    /// A member that cannot leave the group's state unchanged, so must be the entry; `Some`
    /// with an empty `candidates` when none can be.
    forced: Option<usize>,
    /// Two members change the state: no transition reaches this group.
    impossible: bool,
}

/// Ops of unknown outcome that are equal: interchangeable.
struct Kind {
    /// An entry of this kind (its op).
    op: usize,
    /// Its entries with the first transition each may be used in, by that transition.
    members: Vec<(usize, usize)>,
}

/// How a transition is made: ops of unknown outcome, by kind, then the entry (if any).
#[derive(Clone)]
struct Way {
    kinds: Vec<usize>,
    entry: Option<usize>,
}

/// One transition on the search's stack.
struct Frame {
    /// What it holds, about ([`Decomposition::frame_bytes`]).
    bytes: usize,
    /// The group it leads to.
    group: usize,
    /// Ops used per kind before it.
    used: Vec<u32>,
    /// The ways to make it, each with the ops used per kind after it.
    ways: Vec<(Way, Vec<u32>)>,
    next: usize,
}

/// How the per-version search ended.
pub(super) enum Ended {
    /// Its verdict: `Unknown` only when the deadline passed (or its witness failed, a checker
    /// bug), so no other search has time left.
    Decided(SearchOutcome),
    /// It gave up at its memory limit (why, and its steps): another search may still decide,
    /// in the time left.
    OutOfMemory { reason: String, steps: u64 },
}

/// The decomposition's verdict on one key's entries, or `None` when it does not apply (the
/// model has no versions, or a completed op observed none). Ends undecided when the deadline
/// passed or what it holds outgrew `max_bytes` (the module's "Memory").
pub(super) fn search<M: Model>(
    model: &M,
    entries: &[Entry<'_, M::Op>],
    deadline: Instant,
    max_bytes: usize,
) -> Option<Ended> {
    let init = model.init();
    model.state_version(&init)?;
    let mut by_version: BTreeMap<Version, (M::State, Vec<usize>)> = BTreeMap::new();
    let mut unknown = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        if !entry.required {
            unknown.push(i);
            continue;
        }
        let (version, state) = model.observed_version(&entry.op)?;
        let group = by_version
            .entry(version)
            .or_insert_with(|| (state.clone(), Vec::new()));
        if group.0 != state {
            // Two states of one version: the versions' test refutes that first.
            return None;
        }
        group.1.push(i);
    }
    let ret = |i: usize| entries[i].operation.ret.unwrap_or(usize::MAX);
    let call = |i: usize| entries[i].operation.call;
    // reach[g]: the first completion among the groups from g on.
    let mut reach = vec![usize::MAX; by_version.len() + 1];
    for (g, (_, members)) in by_version.values().enumerate().rev() {
        let first = members.iter().map(|&i| ret(i)).min().unwrap_or(usize::MAX);
        reach[g] = reach[g + 1].min(first);
    }
    let mut groups = Vec::with_capacity(by_version.len());
    for (g, (version, (state, mut members))) in by_version.into_iter().enumerate() {
        members.sort_unstable_by_key(|&i| (ret(i), call(i)));
        let changing: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&i| model.step(&state, &entries[i].op).as_ref() != Some(&state))
            .collect();
        let first_ret = members.first().map_or(usize::MAX, |&i| ret(i));
        let second_ret = members.get(1).map_or(usize::MAX, |&i| ret(i));
        let may_enter = |i: usize| {
            let others = if members.first() == Some(&i) {
                second_ret
            } else {
                first_ret
            };
            call(i) < others.min(reach[g + 1])
        };
        let forced = changing.first().copied();
        let candidates: Vec<usize> = match forced {
            Some(i) => may_enter(i).then_some(i).into_iter().collect(),
            None => members.iter().copied().filter(|&i| may_enter(i)).collect(),
        };
        // Two members that change the state cannot both be its first; one that must be first
        // and cannot (another completed before it began) cannot be anywhere.
        let impossible = changing.len() > 1 || (forced.is_some() && candidates.is_empty());
        groups.push(Group {
            version,
            state,
            candidates,
            forced,
            impossible,
            members,
        });
    }
    let mut kinds: Vec<Kind> = Vec::new();
    for u in unknown {
        // The first transition it may be used in: before the group g, every completion from
        // group g on comes after its invocation.
        let first = reach.partition_point(|&r| r <= call(u));
        if first >= groups.len() {
            // Only after the last group: it may as well never have taken effect.
            continue;
        }
        match kinds
            .iter_mut()
            .find(|kind| entries[kind.op].op == entries[u].op)
        {
            Some(kind) => kind.members.push((u, first)),
            None => kinds.push(Kind {
                op: u,
                members: vec![(u, first)],
            }),
        }
    }
    for kind in &mut kinds {
        kind.members.sort_unstable_by_key(|&(u, first)| (first, u));
    }
    let decomposition = Decomposition {
        model,
        entries,
        init,
        groups,
        kinds,
        deadline,
        max_bytes,
        bytes: 0,
        steps: 0,
        deepest: 0,
    };
    Some(decomposition.run())
}

struct Decomposition<'m, 'e, 'a, M: Model> {
    model: &'m M,
    entries: &'e [Entry<'a, M::Op>],
    init: M::State,
    groups: Vec<Group<M::State>>,
    kinds: Vec<Kind>,
    deadline: Instant,
    /// Bounds the estimate of what the search holds (the module's "Memory").
    max_bytes: usize,
    /// What the configurations that failed and the stack hold, about.
    bytes: usize,
    steps: u64,
    /// The furthest group a transition was tried into.
    deepest: usize,
}

/// Why the search stopped undecided.
enum Stop {
    /// The deadline passed.
    Time,
    /// What it holds outgrew `max_bytes`.
    Memory,
}

/// Allocator overhead, about, per allocation.
const ALLOCATION: usize = 16;
/// A hash table's control byte and spare room per entry, about.
const HASH_SLOT: usize = 16;

impl<M: Model> Decomposition<'_, '_, '_, M> {
    fn run(mut self) -> Ended {
        let result = match self.search() {
            Ok(result) => result,
            Err(Stop::Time) => SearchResult::Unknown(format!(
                "time budget exhausted after {} steps of the per-version search, {} of {} versions reached",
                self.steps,
                self.deepest,
                self.groups.len()
            )),
            Err(Stop::Memory) => {
                return Ended::OutOfMemory {
                    reason: format!(
                        "the per-version search reached its memory limit of {} bytes after {} steps, {} of {} versions reached",
                        self.max_bytes,
                        self.steps,
                        self.deepest,
                        self.groups.len()
                    ),
                    steps: self.steps,
                }
            }
        };
        Ended::Decided(SearchOutcome {
            configurations: self.steps,
            result,
        })
    }

    fn tick(&mut self) -> Result<(), Stop> {
        self.steps += 1;
        if self.steps.is_multiple_of(CLOCK_EVERY) && Instant::now() >= self.deadline {
            return Err(Stop::Time);
        }
        Ok(())
    }

    /// `Err` when what the search holds, with `more` bytes besides, outgrows its limit.
    fn within_limit(&self, more: usize) -> Result<(), Stop> {
        if self.bytes.saturating_add(more) > self.max_bytes {
            return Err(Stop::Memory);
        }
        Ok(())
    }

    /// A vector of ops used per kind, about.
    fn counts_bytes(&self) -> usize {
        std::mem::size_of::<Vec<u32>>() + 4 * self.kinds.len() + ALLOCATION
    }

    /// One way of a transition, with the ops used after it, about.
    fn way_bytes(&self, way: &Way) -> usize {
        std::mem::size_of::<Way>()
            + std::mem::size_of::<usize>() * way.kinds.len()
            + ALLOCATION
            + self.counts_bytes()
    }

    /// A frame of the stack, about.
    fn frame_bytes(&self, ways: &[(Way, Vec<u32>)]) -> usize {
        std::mem::size_of::<Frame>()
            + self.counts_bytes()
            + ALLOCATION
            + ways
                .iter()
                .map(|(way, _)| self.way_bytes(way))
                .sum::<usize>()
    }

    /// How many ops of `kind` may be used in the transition into group `g`.
    fn usable(&self, kind: usize, g: usize) -> u32 {
        let members = &self.kinds[kind].members;
        let count = members.partition_point(|&(_, first)| first <= g);
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    fn search(&mut self) -> Result<SearchResult, Stop> {
        if self.groups.is_empty() {
            // No completed op: every op of unknown outcome may never have taken effect.
            return Ok(SearchResult::Valid);
        }
        let mut failed: HashSet<(usize, Vec<u32>)> = HashSet::new();
        // A failed configuration: its group, its counts, and the table's slot.
        let failed_bytes =
            std::mem::size_of::<(usize, Vec<u32>)>() + HASH_SLOT + self.counts_bytes();
        let start = vec![0u32; self.kinds.len()];
        let ways = self.ways(0, &start)?;
        let bytes = self.frame_bytes(&ways);
        self.within_limit(bytes)?;
        self.bytes += bytes;
        let mut stack = vec![Frame {
            bytes,
            group: 0,
            used: start,
            ways,
            next: 0,
        }];
        loop {
            let Some(frame) = stack.last_mut() else {
                return Ok(SearchResult::Invalid(self.counterexample(self.deepest)));
            };
            if frame.next == frame.ways.len() {
                failed.insert((frame.group, std::mem::take(&mut frame.used)));
                self.bytes = self.bytes - frame.bytes + failed_bytes;
                stack.pop();
                self.within_limit(0)?;
                continue;
            }
            let (_, used) = &frame.ways[frame.next];
            frame.next += 1;
            let group = frame.group + 1;
            if group == self.groups.len() {
                let path: Vec<Way> = stack
                    .iter()
                    .map(|frame| frame.ways[frame.next - 1].0.clone())
                    .collect();
                return Ok(self.witness(&path));
            }
            self.deepest = self.deepest.max(group);
            if failed.contains(&(group, used.clone())) {
                continue;
            }
            let used = used.clone();
            let ways = self.ways(group, &used)?;
            let bytes = self.frame_bytes(&ways);
            self.within_limit(bytes)?;
            self.bytes += bytes;
            stack.push(Frame {
                bytes,
                group,
                used,
                ways,
                next: 0,
            });
        }
    }

    /// The ways to make the transition into group `g` with `used` ops of each kind used before
    /// it, each with the ops used after it (distinct), fewest ops of unknown outcome first.
    /// What its breadth-first search holds counts towards the memory limit.
    fn ways(&mut self, g: usize, used: &[u32]) -> Result<Vec<(Way, Vec<u32>)>, Stop> {
        if self.groups[g].impossible {
            return Ok(Vec::new());
        }
        let from = match g {
            0 => self.init.clone(),
            _ => self.groups[g - 1].state.clone(),
        };
        let room: Vec<u32> = (0..self.kinds.len())
            .map(|kind| self.usable(kind, g).saturating_sub(used[kind]))
            .collect();
        let mut found: Vec<(Way, Vec<u32>)> = Vec::new();
        let mut seen: HashSet<(M::State, Vec<u32>)> = HashSet::new();
        // What the queue, `seen` and `found` hold, about.
        let queued_bytes = |model: &M, state: &M::State, kinds: &[usize]| {
            std::mem::size_of::<(M::State, Vec<usize>)>()
                + model.state_heap_bytes(state)
                + std::mem::size_of_val(kinds)
                + ALLOCATION
        };
        let mut bytes = queued_bytes(self.model, &from, &[]);
        // Breadth first: fewest ops of unknown outcome first.
        let mut queue = std::collections::VecDeque::from([(from, Vec::<usize>::new())]);
        let mut extra = vec![0u32; self.kinds.len()];
        while let Some((state, kinds)) = queue.pop_front() {
            self.tick()?;
            bytes -= queued_bytes(self.model, &state, &kinds);
            extra.iter_mut().for_each(|count| *count = 0);
            for &kind in &kinds {
                extra[kind] += 1;
            }
            if !seen.insert((state.clone(), extra.clone())) {
                continue;
            }
            bytes += std::mem::size_of::<(M::State, Vec<u32>)>()
                + HASH_SLOT
                + self.model.state_heap_bytes(&state)
                + self.counts_bytes();
            self.within_limit(bytes)?;
            let after: Vec<u32> = used.iter().zip(&extra).map(|(u, e)| u + e).collect();
            if !found.iter().any(|(_, seen_after)| *seen_after == after) {
                if let Some(entry) = self.entry(g, &state) {
                    let way = Way {
                        kinds: kinds.clone(),
                        entry,
                    };
                    bytes += self.way_bytes(&way);
                    self.within_limit(bytes)?;
                    found.push((way, after));
                }
            }
            let group = &self.groups[g];
            for kind in 0..self.kinds.len() {
                if extra[kind] >= room[kind] {
                    continue;
                }
                let op = &self.entries[self.kinds[kind].op].op;
                let Some(next) = self.model.step(&state, op) else {
                    continue;
                };
                // Every step keeps or raises the version: past the group's, no way back.
                if self
                    .model
                    .state_version(&next)
                    .is_some_and(|version| version > group.version)
                {
                    continue;
                }
                let mut longer = kinds.clone();
                longer.push(kind);
                bytes += queued_bytes(self.model, &next, &longer);
                self.within_limit(bytes)?;
                queue.push_back((next, longer));
            }
        }
        Ok(found)
    }

    /// From `state` (after the transition's ops of unknown outcome), the group's entry that
    /// leads to its state: `Some(None)` when the state is the group's already.
    fn entry(&self, g: usize, state: &M::State) -> Option<Option<usize>> {
        let group = &self.groups[g];
        if group.forced.is_none() && *state == group.state {
            return Some(None);
        }
        group
            .candidates
            .iter()
            .copied()
            .find(|&i| self.model.step(state, &self.entries[i].op).as_ref() == Some(&group.state))
            .map(Some)
    }

    /// The linearization `path` describes, checked op by op against the model and real time:
    /// valid only if it holds.
    fn witness(&self, path: &[Way]) -> SearchResult {
        let mut order: Vec<usize> = Vec::with_capacity(self.entries.len());
        let mut taken = vec![0usize; self.kinds.len()];
        for (g, way) in path.iter().enumerate() {
            for &kind in &way.kinds {
                let Some(&(u, _)) = self.kinds[kind].members.get(taken[kind]) else {
                    return witness_failed("an op of unknown outcome used twice");
                };
                taken[kind] += 1;
                order.push(u);
            }
            order.extend(way.entry);
            order.extend(
                self.groups[g]
                    .members
                    .iter()
                    .copied()
                    .filter(|&i| Some(i) != way.entry),
            );
        }
        let required = self.entries.iter().filter(|entry| entry.required).count();
        let mut seen = vec![false; self.entries.len()];
        let mut linearized_required = 0;
        let mut state = self.init.clone();
        for &i in &order {
            if std::mem::replace(&mut seen[i], true) {
                return witness_failed("an op linearized twice");
            }
            if self.entries[i].required {
                linearized_required += 1;
            }
            match self.model.step(&state, &self.entries[i].op) {
                Some(next) => state = next,
                None => return witness_failed("a step the model rejects"),
            }
        }
        if linearized_required != required {
            return witness_failed("a completed op left out");
        }
        // Real time: no op completed before the invocation of one linearized before it.
        let mut first_ret = usize::MAX;
        for &i in order.iter().rev() {
            let operation = self.entries[i].operation;
            if operation.call > first_ret {
                return witness_failed("an op linearized after one that completed before it began");
            }
            if self.entries[i].required {
                first_ret = first_ret.min(operation.ret.unwrap_or(usize::MAX));
            }
        }
        SearchResult::Valid
    }

    fn report(&self, i: usize) -> OpReport {
        self.entries[i].report(self.model)
    }

    /// No transition reached group `g`, the furthest version the search reached: from the
    /// state of the group before, no ops of unknown outcome usable there (listed as pending)
    /// lead to a state from which one of its ops enters it, whatever was used before.
    ///
    /// The op reported is the group's member that must enter it (the one that changes the
    /// state) if any, else its first to complete: an op of the version that could not be
    /// reached, not necessarily the one at fault. The cause may be another member (two that
    /// change the state, or one that must come first but was invoked after another completed),
    /// a missing op of unknown outcome, or a choice made at an earlier version (the ops of
    /// unknown outcome used up there); `linearized`, `tail` and `state` describe the versions
    /// before `g` as observed, not one particular partial linearization.
    fn counterexample(&self, g: usize) -> Counterexample {
        let group = &self.groups[g];
        let stuck = group.forced.unwrap_or(group.members[0]);
        let (state, tail) = match g.checked_sub(1) {
            None => (self.init.clone(), Vec::new()),
            Some(before) => {
                let previous = &self.groups[before];
                let first = previous.members.len().saturating_sub(COUNTEREXAMPLE_TAIL);
                let tail = previous.members[first..]
                    .iter()
                    .map(|&i| StepReport {
                        op: self.report(i),
                        state_after: self.model.describe_state(&previous.state),
                    })
                    .collect();
                (previous.state.clone(), tail)
            }
        };
        let pending = self
            .kinds
            .iter()
            .flat_map(|kind| kind.members.iter())
            .filter(|&&(_, first)| first <= g)
            .map(|&(u, _)| u)
            .chain(group.members.iter().copied().filter(|&i| i != stuck))
            .take(COUNTEREXAMPLE_PENDING)
            .map(|i| self.report(i))
            .collect();
        Counterexample {
            key: None,
            op: self.report(stuck),
            linearized: self.groups[..g].iter().map(|g| g.members.len()).sum(),
            tail,
            state: self.model.describe_state(&state),
            pending,
        }
    }
}

fn witness_failed(why: &str) -> SearchResult {
    tracing::error!("the per-version search's linearization does not hold ({why}): a checker bug");
    SearchResult::Unknown(format!(
        "the per-version search's linearization does not hold ({why}): a checker bug"
    ))
}
