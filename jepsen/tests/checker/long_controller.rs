//! Controller-sized histories: a simulated controller (one atomic replica-info register per
//! broker set, as the controller state machine keeps it) driven by clients that read, elect and
//! alter the SyncStateSet the way the controller workload does, with requests that end `fail`
//! (rejected: no effect) or `info` (the client gave up: the request took effect before, takes
//! effect much later, as one stuck in a partition does, or never), and elections the controller
//! makes on its own recorded as `elect` of unknown outcome. A 10-minute controller run has about
//! 15 000 operations per broker set; histories of that size must be decided well within the
//! run's 120 s budget: valid as recorded, invalid once one read is made stale.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rocketraft_jepsen::check_text;
use rocketraft_jepsen::history::Format;
use rocketraft_jepsen::linearizability::{CheckOptions, Report, Strategy, Verdict};
use rocketraft_jepsen::model::ModelName;
use serde_json::{json, Value as Json};

/// xorshift64*: deterministic, so a failing seed replays exactly.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub(super) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The controller's replica info for one broker set.
#[derive(Clone, Debug, PartialEq)]
struct Info {
    master_epoch: i64,
    master: Option<i64>,
    epoch: i64,
    set: BTreeSet<i64>,
}

impl Info {
    fn json(&self) -> Json {
        json!({
            "master_epoch": self.master_epoch,
            "master_id": self.master,
            "sync_state_set_epoch": self.epoch,
            "sync_state_set": self.set.iter().collect::<Vec<_>>(),
        })
    }
}

const BROKERS: i64 = 3;

#[derive(Clone)]
enum Request {
    Read,
    Elect(Option<i64>),
    /// The master's view it was sent with, and the new set.
    Alter(Info, BTreeSet<i64>),
}

impl Request {
    fn f(&self) -> &'static str {
        match self {
            Request::Read => "read",
            Request::Elect(_) => "elect",
            Request::Alter(..) => "alter",
        }
    }

    fn input(&self) -> Json {
        match self {
            Request::Read => Json::Null,
            Request::Elect(None) => Json::Null,
            Request::Elect(Some(id)) => json!({"broker_id": id}),
            Request::Alter(view, set) => json!({
                "master_id": view.master,
                "master_epoch": view.master_epoch,
                "sync_state_set_epoch": view.epoch,
                "sync_state_set": set.iter().collect::<Vec<_>>(),
            }),
        }
    }
}

enum Slot {
    Idle,
    Invoked(Request),
    /// Applied; the completion to report (`ok` or `fail`) and its value.
    Applied(Request, &'static str, Json),
}

pub(super) struct Controller {
    rng: Rng,
    info: Info,
    key: &'static str,
    pub(super) lines: Vec<Json>,
    /// Requests whose clients gave up before they took effect; each may still take effect.
    ghosts: Vec<Request>,
    /// What each client last read (alters are sent from a master's view, possibly stale).
    views: Vec<Info>,
}

impl Controller {
    fn emit(&mut self, process: u64, kind: &str, f: &str, value: Json) {
        self.lines.push(json!({
            "process": process, "type": kind, "f": f, "key": self.key, "value": value,
        }));
    }

    fn request(&mut self, client: usize) -> Request {
        match self.rng.below(100) {
            0..=59 => Request::Read,
            60..=74 => {
                let designated = self
                    .rng
                    .chance(30)
                    .then(|| 1 + self.rng.below(BROKERS as u64) as i64);
                Request::Elect(designated)
            }
            _ if self.views[client].master.is_none() => Request::Read,
            _ => {
                let view = self.views[client].clone();
                let mut set: BTreeSet<i64> =
                    (1..=BROKERS).filter(|_| self.rng.chance(60)).collect();
                if let Some(master) = view.master {
                    set.insert(master);
                }
                Request::Alter(view, set)
            }
        }
    }

    /// Applies `request` atomically: the completion and its value.
    fn apply(&mut self, request: &Request) -> (&'static str, Json) {
        match request {
            Request::Read => ("ok", self.info.json()),
            Request::Elect(designated) => {
                if self.info.master.is_some() && designated.is_none() && self.rng.chance(50) {
                    // The master still lives: nothing changes.
                    return ("ok", self.info.json());
                }
                if designated.is_some_and(|d| self.info.master == Some(d)) {
                    return ("fail", json!("already master"));
                }
                self.info.master_epoch += 1;
                let elected = designated.or_else(|| {
                    (!self.rng.chance(15)).then(|| 1 + self.rng.below(BROKERS as u64) as i64)
                });
                self.info.master = elected;
                if let Some(master) = elected {
                    self.info.set = BTreeSet::from([master]);
                    self.info.epoch += 1;
                }
                ("ok", self.info.json())
            }
            Request::Alter(view, set) => {
                let current = view.master.is_some()
                    && view.master == self.info.master
                    && view.master_epoch == self.info.master_epoch
                    && view.epoch == self.info.epoch;
                if !current {
                    return ("fail", json!("stale epochs"));
                }
                self.info.epoch += 1;
                self.info.set = set.clone();
                ("ok", json!({"sync_state_set_epoch": self.info.epoch}))
            }
        }
    }

    /// `clients` clients for `steps` scheduling steps; `crash_percent` of the requests end
    /// `info`. Process numbers of clients that gave up are not reused (as in Jepsen).
    pub(super) fn run(
        seed: u64,
        key: &'static str,
        clients: usize,
        steps: u64,
        crash_percent: u64,
    ) -> Self {
        let initial = Info {
            master_epoch: 0,
            master: None,
            epoch: 0,
            set: BTreeSet::new(),
        };
        let mut sim = Controller {
            rng: Rng::new(seed),
            info: initial.clone(),
            key,
            lines: Vec::new(),
            ghosts: Vec::new(),
            views: vec![initial; clients],
        };
        let mut processes: Vec<u64> = (0..clients as u64).collect();
        let mut next_process = clients as u64;
        let mut slots: Vec<Slot> = (0..clients).map(|_| Slot::Idle).collect();
        // A slow request (its client's connection stuck in a partition) takes effect somewhere
        // in a long window and completes at its end, overlapping hundreds of others.
        let mut slow_until = vec![0u64; clients];
        for step in 0..steps {
            // A request stuck somewhere takes effect late.
            if !sim.ghosts.is_empty() && sim.rng.chance(2) {
                let ghost = sim
                    .ghosts
                    .remove(sim.rng.below(sim.ghosts.len() as u64) as usize);
                sim.apply(&ghost);
            }
            // The controller elects on its own (a master's heartbeats stopped): the harness
            // records the possibility as an elect of unknown outcome.
            if sim.rng.below(1000) < 3 {
                let process = next_process;
                next_process += 1;
                sim.emit(process, "invoke", "elect", Json::Null);
                sim.emit(process, "info", "elect", Json::Null);
                if sim.rng.chance(50) {
                    sim.ghosts.push(Request::Elect(None));
                }
            }
            let client = sim.rng.below(clients as u64) as usize;
            let process = processes[client];
            match std::mem::replace(&mut slots[client], Slot::Idle) {
                Slot::Idle => {
                    let request = sim.request(client);
                    sim.emit(process, "invoke", request.f(), request.input());
                    if sim.rng.chance(2) {
                        slow_until[client] = step + 200 + sim.rng.below(1500);
                    }
                    slots[client] = Slot::Invoked(request);
                }
                Slot::Invoked(request) if step < slow_until[client] && !sim.rng.chance(10) => {
                    slots[client] = Slot::Invoked(request);
                }
                Slot::Applied(request, kind, value) if step < slow_until[client] => {
                    slots[client] = Slot::Applied(request, kind, value);
                }
                Slot::Invoked(request) => {
                    if sim.rng.chance(crash_percent) {
                        // Gave up before it took effect: it may yet, or never.
                        sim.emit(process, "info", request.f(), request.input());
                        if !matches!(request, Request::Read) && sim.rng.chance(70) {
                            sim.ghosts.push(request);
                        }
                        processes[client] = next_process;
                        next_process += 1;
                    } else {
                        let (kind, value) = sim.apply(&request);
                        slots[client] = Slot::Applied(request, kind, value);
                    }
                }
                Slot::Applied(request, kind, value) => {
                    if matches!(request, Request::Read) && kind == "ok" {
                        sim.views[client] = sim.info_of(&value);
                    }
                    sim.emit(process, kind, request.f(), value);
                }
            }
        }
        sim
    }

    fn info_of(&self, value: &Json) -> Info {
        Info {
            master_epoch: value["master_epoch"].as_i64().unwrap_or(0),
            master: value["master_id"].as_i64(),
            epoch: value["sync_state_set_epoch"].as_i64().unwrap_or(0),
            set: value["sync_state_set"]
                .as_array()
                .map(|ids| ids.iter().filter_map(Json::as_i64).collect())
                .unwrap_or_default(),
        }
    }
}

pub(super) fn to_text(lines: &[Json]) -> String {
    lines.iter().map(|l| l.to_string() + "\n").collect()
}

pub(super) fn check(text: &str, strategy: Option<Strategy>, budget: Duration) -> Report {
    let options = CheckOptions {
        time_budget: budget,
        strategy,
        ..CheckOptions::default()
    };
    check_text(
        text,
        Some(Format::Jsonl),
        Some(ModelName::ReplicaInfo),
        &options,
    )
    .unwrap_or_else(|e| panic!("cannot check: {e}"))
    .report
}

/// Makes the `ok` read at or after about `at` (a fraction of the history) return the state
/// before the last change it could have seen: a stale read, an anomaly the checker must find.
fn make_a_read_stale(lines: &mut [Json], at: f64) -> bool {
    let start = (lines.len() as f64 * at) as usize;
    let read = (start..lines.len()).find(|&i| {
        lines[i]["type"] == "ok"
            && lines[i]["f"] == "read"
            && lines[i]["value"]["master_epoch"].as_i64() > Some(2)
    });
    let Some(read) = read else {
        return false;
    };
    // A master epoch the set had long before: no state of the history has it now.
    let value = &mut lines[read]["value"];
    let epoch = value["master_epoch"].as_i64().unwrap_or(0);
    value["master_epoch"] = json!(epoch - 2);
    true
}

/// With `SIMULATED_HISTORIES_DIR` set, writes the history there, to replay with the command line.
fn dump(name: &str, text: &str) {
    if let Some(dir) = std::env::var_os("SIMULATED_HISTORIES_DIR") {
        let path = std::path::Path::new(&dir).join(name);
        std::fs::write(&path, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
}

/// Two broker sets of about 15 000 operations each, eight clients per set, 1 % of the requests
/// of unknown outcome, 2 % slow (pending over hundreds of others), and the controller's own
/// elections: decided as the run's checker decides them (both search orders raced), within the
/// run's 120 s budget.
#[test]
fn ten_minute_controller_histories_are_decided() {
    const BUDGET: Duration = Duration::from_secs(120);
    for seed in [1, 2] {
        let mut lines = Controller::run(seed, "set-a", 8, 100_000, 1).lines;
        lines.extend(Controller::run(seed + 100, "set-b", 8, 100_000, 1).lines);
        let text = to_text(&lines);
        dump(&format!("controller-seed{seed}.jsonl"), &text);
        let started = Instant::now();
        let report = check(&text, None, BUDGET);
        let took = started.elapsed();
        println!(
            "seed {seed}: {} operations ({} of unknown outcome), {:?} in {:.1} s, {} configurations",
            report.operations,
            report.unknown_outcome,
            report.verdict,
            took.as_secs_f64(),
            report.configurations
        );
        assert!(
            report.operations > 28_000,
            "seed {seed}: a controller-sized history, got {} operations",
            report.operations
        );
        assert_eq!(
            report.verdict,
            Verdict::Valid,
            "seed {seed}: a history of an atomic controller: {:?}",
            report.unknown_reason
        );

        assert!(make_a_read_stale(&mut lines, 0.8), "seed {seed}: a read");
        let text = to_text(&lines);
        dump(&format!("controller-seed{seed}-stale.jsonl"), &text);
        let started = Instant::now();
        let report = check(&text, None, BUDGET);
        println!(
            "seed {seed}, one read made stale: {:?} in {:.1} s",
            report.verdict,
            started.elapsed().as_secs_f64()
        );
        assert_eq!(
            report.verdict,
            Verdict::Invalid,
            "seed {seed}: a stale read must be caught: {:?}",
            report.unknown_reason
        );
        let counterexample = report.counterexample.expect("an invalid verdict explains");
        assert!(
            counterexample.op.description.starts_with("read"),
            "the stale read is the op that cannot be linearized: {counterexample:?}"
        );
    }
}
