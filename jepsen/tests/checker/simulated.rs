//! Randomized self-tests: histories recorded from a simulated *atomic* store are linearizable by
//! construction, so the checker must call every one valid; the same histories with one read
//! changed to a value nobody wrote must be called invalid.
//!
//! The simulation is Jepsen-like: clients invoke, the store applies each operation at one instant
//! between invocation and completion, and some operations end `fail` (no effect) or `info` (the
//! client crashed; the operation took effect before, takes effect later, or never). A crashed
//! client comes back as a new process, as in Jepsen.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rocketraft_jepsen::check_text;
use rocketraft_jepsen::history::Format;
use rocketraft_jepsen::linearizability::{CheckOptions, Strategy, Verdict};
use rocketraft_jepsen::model::ModelName;
use serde_json::{json, Value as Json};

/// xorshift64*: deterministic, so a failing seed replays exactly.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Store {
    Register,
    Kv,
}

#[derive(Clone)]
struct Call {
    f: &'static str,
    key: Option<String>,
    value: Json,
}

enum Slot {
    Idle,
    Invoked(Call),
    /// Applied; the result to report.
    Applied(Call, Json, &'static str),
}

struct Simulation {
    store: Store,
    /// Chance (percent) that a client crashes before, and again after, the store applies its op.
    crash_percent: u64,
    rng: Rng,
    register: Json,
    kv: HashMap<String, String>,
    lines: Vec<Json>,
    /// Operations of crashed clients that have not taken effect (yet).
    ghosts: Vec<Call>,
    appends: u64,
}

impl Simulation {
    fn new(store: Store, seed: u64, crash_percent: u64) -> Self {
        Self {
            store,
            crash_percent,
            rng: Rng::new(seed),
            register: Json::Null,
            kv: HashMap::new(),
            lines: Vec::new(),
            ghosts: Vec::new(),
            appends: 0,
        }
    }

    fn emit(&mut self, process: u64, kind: &str, call: &Call, value: Json) {
        let mut line = json!({"process": process, "type": kind, "f": call.f, "value": value});
        if let Some(key) = &call.key {
            line["key"] = json!(key);
        }
        self.lines.push(line);
    }

    fn new_call(&mut self, keys: u64) -> Call {
        match self.store {
            Store::Register => match self.rng.below(3) {
                0 => Call {
                    f: "read",
                    key: None,
                    value: Json::Null,
                },
                1 => Call {
                    f: "write",
                    key: None,
                    value: json!(self.rng.below(5)),
                },
                _ => Call {
                    f: "cas",
                    key: None,
                    value: json!([self.rng.below(5), self.rng.below(5)]),
                },
            },
            Store::Kv => {
                let key = Some(self.rng.below(keys).to_string());
                match self.rng.below(10) {
                    0..=4 => Call {
                        f: "get",
                        key,
                        value: Json::Null,
                    },
                    5 => Call {
                        f: "put",
                        key,
                        value: json!(format!("p{} ", self.rng.below(1000))),
                    },
                    _ => {
                        self.appends += 1;
                        Call {
                            f: "append",
                            key,
                            value: json!(format!("x{} ", self.appends)),
                        }
                    }
                }
            }
        }
    }

    /// Applies `call` to the store at this instant: its result and completion type.
    fn apply(&mut self, call: &Call) -> (Json, &'static str) {
        match (self.store, call.f) {
            (Store::Register, "read") => (self.register.clone(), "ok"),
            (Store::Register, "write") => {
                self.register = call.value.clone();
                (call.value.clone(), "ok")
            }
            (Store::Register, _) => {
                if self.register == call.value[0] {
                    self.register = call.value[1].clone();
                    (call.value.clone(), "ok")
                } else {
                    (call.value.clone(), "fail")
                }
            }
            (Store::Kv, f) => {
                let key = call.key.clone().unwrap_or_default();
                let current = self.kv.entry(key).or_default();
                match f {
                    "get" => (json!(current.clone()), "ok"),
                    "put" => {
                        *current = call.value.as_str().unwrap_or_default().to_string();
                        (call.value.clone(), "ok")
                    }
                    _ => {
                        current.push_str(call.value.as_str().unwrap_or_default());
                        (call.value.clone(), "ok")
                    }
                }
            }
        }
    }

    /// Runs `clients` clients for `steps` scheduling steps; returns the JSONL history.
    fn run(mut self, clients: u64, steps: u64, keys: u64) -> Vec<Json> {
        let mut slots: Vec<(u64, Slot)> = (0..clients).map(|p| (p, Slot::Idle)).collect();
        let mut next_process = clients;
        for _ in 0..steps {
            if !self.ghosts.is_empty() && self.rng.chance(3) {
                let ghost = self
                    .ghosts
                    .swap_remove(self.rng.below(self.ghosts.len() as u64) as usize);
                if self.rng.chance(50) {
                    self.apply(&ghost);
                }
            }
            let index = self.rng.below(clients) as usize;
            let process = slots[index].0;
            let slot = std::mem::replace(&mut slots[index].1, Slot::Idle);
            slots[index].1 = match slot {
                Slot::Idle => {
                    let call = self.new_call(keys);
                    self.emit(process, "invoke", &call, call.value.clone());
                    Slot::Invoked(call)
                }
                Slot::Invoked(call) => {
                    if self.rng.chance(self.crash_percent) {
                        // Crashed before the store saw it; it may still arrive later.
                        self.emit(process, "info", &call, Json::Null);
                        self.ghosts.push(call);
                        slots[index].0 = next_process;
                        next_process += 1;
                        Slot::Idle
                    } else if self.rng.chance(3) && call.f != "cas" {
                        // Refused outright: no effect.
                        self.emit(process, "fail", &call, call.value.clone());
                        Slot::Idle
                    } else {
                        let (result, kind) = self.apply(&call);
                        Slot::Applied(call, result, kind)
                    }
                }
                Slot::Applied(call, result, kind) => {
                    if self.rng.chance(self.crash_percent) {
                        // Took effect, but the client crashed before hearing so.
                        self.emit(process, "info", &call, Json::Null);
                        slots[index].0 = next_process;
                        next_process += 1;
                    } else {
                        self.emit(process, kind, &call, result);
                    }
                    Slot::Idle
                }
            };
        }
        self.lines
    }
}

fn to_text(lines: &[Json]) -> String {
    lines.iter().map(|l| l.to_string() + "\n").collect()
}

/// Changes the first `ok` read at or after a random point to a value nobody wrote.
fn corrupt(lines: &mut [Json], rng: &mut Rng) -> bool {
    let start = rng.below(lines.len() as u64) as usize;
    let reads = |line: &Json| line["type"] == "ok" && (line["f"] == "read" || line["f"] == "get");
    let Some(position) = (start..lines.len())
        .chain(0..start)
        .find(|&i| reads(&lines[i]))
    else {
        return false;
    };
    let line = &mut lines[position];
    line["value"] = if line["f"] == "read" {
        json!(99)
    } else {
        json!(format!(
            "{}never",
            line["value"].as_str().unwrap_or_default()
        ))
    };
    true
}

fn check(text: &str, model: ModelName, budget: Duration) -> (Verdict, Duration) {
    check_with(text, model, budget, None)
}

fn check_with(
    text: &str,
    model: ModelName,
    budget: Duration,
    strategy: Option<Strategy>,
) -> (Verdict, Duration) {
    let options = CheckOptions {
        time_budget: budget,
        strategy,
        ..CheckOptions::default()
    };
    let started = Instant::now();
    let checked = check_text(text, Some(Format::Jsonl), Some(model), &options)
        .unwrap_or_else(|e| panic!("cannot check: {e}"));
    (checked.report.verdict, started.elapsed())
}

/// The shape of the simulated runs.
struct Runs {
    store: Store,
    model: ModelName,
    seeds: u64,
    clients: u64,
    steps: u64,
    keys: u64,
    crash_percent: u64,
    /// Refuting a corrupted history may be beyond the budget (the search is exponential in the
    /// concurrency, and more so with operations of unknown outcome): then *unknown* is accepted,
    /// but never *valid*.
    corrupted_may_be_unknown: bool,
}

/// With `SIMULATED_HISTORIES_DIR` set, writes each history there, to replay with the command line.
fn dump(runs: &Runs, seed: u64, suffix: &str, lines: &[Json]) {
    let Some(dir) = std::env::var_os("SIMULATED_HISTORIES_DIR") else {
        return;
    };
    let name = format!(
        "{}-c{}-s{}-x{}-seed{seed}{suffix}.jsonl",
        runs.model, runs.clients, runs.steps, runs.crash_percent
    );
    let path = std::path::Path::new(&dir).join(name);
    std::fs::write(&path, to_text(lines))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn run(runs: Runs) {
    let budget = Duration::from_secs(if runs.corrupted_may_be_unknown { 5 } else { 60 });
    let (mut slowest, mut unknown) = (Duration::ZERO, 0);
    for seed in 0..runs.seeds {
        let mut lines = Simulation::new(runs.store, seed, runs.crash_percent).run(
            runs.clients,
            runs.steps,
            runs.keys,
        );
        dump(&runs, seed, "", &lines);
        let (verdict, took) = check(&to_text(&lines), runs.model, Duration::from_secs(60));
        slowest = slowest.max(took);
        assert_eq!(
            verdict,
            Verdict::Valid,
            "seed {seed}: a history of an atomic store must be valid"
        );
        let mut rng = Rng::new(seed ^ 0xdead_beef);
        if corrupt(&mut lines, &mut rng) {
            dump(&runs, seed, "-corrupted", &lines);
            let (verdict, took) = check(&to_text(&lines), runs.model, budget);
            slowest = slowest.max(took);
            if verdict == Verdict::Unknown && runs.corrupted_may_be_unknown {
                unknown += 1;
                continue;
            }
            assert_eq!(
                verdict,
                Verdict::Invalid,
                "seed {seed}: a read of a value nobody wrote must be caught"
            );
        }
    }
    println!(
        "{} seeds, {} clients, {} steps, {}% crashes: slowest check {:.3} s, {unknown} unknown",
        runs.seeds,
        runs.clients,
        runs.steps,
        runs.crash_percent,
        slowest.as_secs_f64()
    );
}

#[test]
fn simulated_register_histories_with_crashes() {
    run(Runs {
        store: Store::Register,
        model: ModelName::CasRegister,
        seeds: 30,
        clients: 8,
        steps: 400,
        keys: 1,
        crash_percent: 4,
        corrupted_may_be_unknown: false,
    });
}

#[test]
fn simulated_kv_histories_with_fifty_clients() {
    // The shape of Porcupine's c50 files: 50 clients over 10 keys, no crashes.
    run(Runs {
        store: Store::Kv,
        model: ModelName::Kv,
        seeds: 4,
        clients: 50,
        steps: 4000,
        keys: 10,
        crash_percent: 0,
        corrupted_may_be_unknown: false,
    });
}

#[test]
fn simulated_kv_histories_with_crashes() {
    run(Runs {
        store: Store::Kv,
        model: ModelName::Kv,
        seeds: 10,
        clients: 15,
        steps: 1500,
        keys: 4,
        crash_percent: 3,
        corrupted_may_be_unknown: true,
    });
}

#[test]
fn both_search_orders_agree() {
    // Each order alone is a complete search: on histories both can finish, they must agree.
    let budget = Duration::from_secs(60);
    for seed in 0..12 {
        let mut lines = Simulation::new(Store::Register, seed, 4).run(6, 300, 1);
        for _ in 0..2 {
            let text = to_text(&lines);
            let real_time = check_with(
                &text,
                ModelName::CasRegister,
                budget,
                Some(Strategy::RealTime),
            )
            .0;
            let required_first = check_with(
                &text,
                ModelName::CasRegister,
                budget,
                Some(Strategy::RequiredFirst),
            )
            .0;
            assert_eq!(real_time, required_first, "seed {seed}");
            assert_ne!(real_time, Verdict::Unknown, "seed {seed}");
            corrupt(&mut lines, &mut Rng::new(seed));
        }
    }
}
