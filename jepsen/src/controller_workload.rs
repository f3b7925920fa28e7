//! The controller workload: concurrent clients issue the real controller operations over
//! Remoting against broker sets that only the workload uses (so that every change of their
//! replica info comes from an operation of the history), and the history is checked for
//! linearizability with the `replica-info` model ([`crate::model::replica_info`]), one key per
//! broker set.
//!
//! Setup: for each set, three fake brokers (ids 1-3, addresses in the client namespace where
//! nothing listens) apply for their ids (ApplyBrokerId) and register (RegisterBroker); a
//! background task heartbeats them to every controller each second, so the controller counts
//! them alive (elections and AlterSyncStateSet need live replicas).
//!
//! Operations (to a random controller, so reads on followers are tested too):
//! - `read`: GetReplicaInfo.
//! - `elect`: ElectMaster, designating a random broker or (without one) as the controller does
//!   when a master's heartbeats stop.
//! - `alter`: the master's AlterSyncStateSet with the epochs of a read just before (recorded),
//!   to the master plus a random subset of the others: stale epochs must be refused.
//!
//! A refusal is `fail` (the controller validates before it proposes); no answer, or an
//! internal error after proposing, is `info`. The controller may also elect on its own when it
//! misses heartbeats (a paused or restarted leader): at every fault the nemesis records, per
//! set, an `elect` of unknown outcome (`info`) so the model allows one such election.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use rocketraft_controller::client::{ControllerCallError, MasterInfo};
use rocketraft_controller::heartbeat::Heartbeat;
use rocketraft_controller::BrokerLiveInfo;
use rocketraft_remoting::response_code;
use serde_json::{json, Value as Json};

use crate::cluster::Clients;
use crate::record::{extra, Kind, Process, Recorder};
use crate::rng::Rng;

/// The broker sets of the workload (the linearizability keys).
pub const SETS: [&str; 2] = ["jepsen-ctl-a", "jepsen-ctl-b"];
const IDS: [i64; 3] = [1, 2, 3];
const CLUSTER: &str = "JepsenControllerCluster";
/// Process ids of the pseudo-operations that stand for elections the controller may make on
/// its own.
pub const AUTO_ELECT_PROCESS_BASE: u64 = 1_000_000;

fn fake_addr(set: usize, id: i64) -> String {
    format!("10.77.0.2:{}", 20000 + set as i64 * 10 + id)
}

fn snapshot(info: &MasterInfo) -> Json {
    json!({
        "master_epoch": info.master_epoch,
        "master_id": info.master_broker_id,
        "sync_state_set_epoch": info.sync_state_set_epoch,
        "sync_state_set": info.sync_state_set.iter().collect::<Vec<_>>(),
    })
}

/// Refusals that prove the request changed nothing.
fn is_refusal(error: &ControllerCallError) -> bool {
    match error {
        ControllerCallError::Refused(r) => !matches!(
            r.code,
            response_code::CONTROLLER_JRAFT_INTERNAL_ERROR | response_code::SYSTEM_ERROR
        ),
        _ => false,
    }
}

/// Registers the fake brokers (retrying through leader changes, up to `timeout`), then sends
/// them a first heartbeat round. Without it an ElectMaster could reach the controller before any
/// heartbeat: it finds no live replica, records a masterless epoch, and from then on only the
/// (empty) SyncStateSet may be elected, so the set never gets a master (as in RocketMQ).
pub async fn setup(
    clients: &Clients,
    controllers: &[String],
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    for (s, set) in SETS.iter().enumerate() {
        for id in IDS {
            let addr = fake_addr(s, id);
            loop {
                if tokio::time::Instant::now() > deadline {
                    bail!("cannot register fake broker {id} of {set} with the controllers");
                }
                let Some(leader) = clients.controller_leader(controllers).await else {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                };
                // Applying twice (a retry) is refused; registering tells whether it took.
                let _ = clients
                    .controller
                    .apply_broker_id(&leader, CLUSTER, set, id, &format!("{addr};{id}"))
                    .await;
                match clients
                    .controller
                    .register_broker(&leader, CLUSTER, set, id, &addr)
                    .await
                {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::debug!(set, id, error = %e, "register failed; retrying");
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                }
            }
        }
    }
    heartbeat_round(clients, controllers).await;
    Ok(())
}

/// Heartbeats every fake broker to every controller each second until `stop`.
pub async fn heartbeats(
    clients: Clients,
    controllers: Vec<String>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        heartbeat_round(&clients, &controllers).await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
}

/// One heartbeat of every fake broker to every controller, concurrently, each bounded by 900 ms.
async fn heartbeat_round(clients: &Clients, controllers: &[String]) {
    let mut calls = Vec::new();
    for (s, set) in SETS.iter().enumerate() {
        for id in IDS {
            for controller in controllers {
                let hb = Heartbeat {
                    cluster: CLUSTER.to_string(),
                    broker_name: set.to_string(),
                    broker_id: id,
                    broker_addr: fake_addr(s, id),
                    timeout_ms: 6000,
                    info: BrokerLiveInfo::new(0, 0, 0),
                };
                let clients = clients.clone();
                let controller = controller.clone();
                calls.push(tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        Duration::from_millis(900),
                        clients.controller.heartbeat(&controller, &hb),
                    )
                    .await;
                }));
            }
        }
    }
    for call in calls {
        let _ = call.await;
    }
}

fn with_key(key: &str) -> serde_json::Map<String, Json> {
    extra([("key", json!(key))])
}

struct Worker {
    clients: Clients,
    recorder: Recorder,
    controllers: Vec<String>,
    process: u64,
    stride: u64,
    rng: Rng,
}

impl Worker {
    fn complete(&mut self, kind: Kind, f: &str, key: &str, value: Json, error: Option<String>) {
        let mut e = with_key(key);
        if let Some(error) = error {
            e.insert("error".into(), json!(error));
        }
        self.recorder.complete(self.process, kind, f, value, e);
        if kind == Kind::Info {
            self.process += self.stride;
        }
    }

    fn outcome_of(error: &ControllerCallError) -> Kind {
        if is_refusal(error) {
            Kind::Fail
        } else {
            Kind::Info
        }
    }

    async fn read(&mut self, key: &str, controller: &str) -> Option<MasterInfo> {
        self.recorder.record(
            Process::Client(self.process),
            Kind::Invoke,
            "read",
            Json::Null,
            with_key(key),
        );
        match self
            .clients
            .controller
            .get_replica_info(controller, key)
            .await
        {
            Ok(info) => {
                self.complete(Kind::Ok, "read", key, snapshot(&info), None);
                Some(info)
            }
            Err(e) => {
                let kind = Self::outcome_of(&e);
                self.complete(kind, "read", key, Json::Null, Some(e.to_string()));
                None
            }
        }
    }

    async fn elect(&mut self, key: &str, controller: &str) {
        let designated = self
            .rng
            .chance(0.7)
            .then(|| IDS[self.rng.below(3) as usize]);
        self.elect_with(key, controller, designated).await;
    }

    /// ElectMaster, designating `designated` when given; whether it answered with a master.
    async fn elect_with(&mut self, key: &str, controller: &str, designated: Option<i64>) -> bool {
        let input = designated.map_or(Json::Null, |d| json!({"broker_id": d}));
        self.recorder.record(
            Process::Client(self.process),
            Kind::Invoke,
            "elect",
            input,
            with_key(key),
        );
        let result = self
            .clients
            .controller
            .elect_master(controller, CLUSTER, key, designated, designated.is_some())
            .await;
        match result {
            Ok(info) => {
                let elected = info.master_broker_id.is_some();
                self.complete(Kind::Ok, "elect", key, snapshot(&info), None);
                elected
            }
            Err(e) => {
                let kind = Self::outcome_of(&e);
                self.complete(kind, "elect", key, Json::Null, Some(e.to_string()));
                false
            }
        }
    }

    async fn alter(&mut self, key: &str, controller: &str) {
        let Some(info) = self.read(key, controller).await else {
            return;
        };
        let Some(master) = info.master_broker_id else {
            return;
        };
        let mut set: BTreeSet<i64> = BTreeSet::from([master]);
        for id in IDS {
            if id != master && self.rng.chance(0.5) {
                set.insert(id);
            }
        }
        let input = json!({
            "master_id": master,
            "master_epoch": info.master_epoch,
            "sync_state_set_epoch": info.sync_state_set_epoch,
            "sync_state_set": set.iter().collect::<Vec<_>>(),
        });
        self.recorder.record(
            Process::Client(self.process),
            Kind::Invoke,
            "alter",
            input,
            with_key(key),
        );
        let result = self
            .clients
            .controller
            .alter_sync_state_set(
                controller,
                key,
                master,
                info.master_epoch,
                &set,
                info.sync_state_set_epoch,
            )
            .await;
        match result {
            Ok((epoch, _)) => self.complete(
                Kind::Ok,
                "alter",
                key,
                json!({"sync_state_set_epoch": epoch}),
                None,
            ),
            Err(e) => {
                let kind = Self::outcome_of(&e);
                self.complete(kind, "alter", key, Json::Null, Some(e.to_string()));
            }
        }
    }
}

/// Runs `workers` clients until `stop`.
pub async fn run(
    clients: Clients,
    recorder: Recorder,
    controllers: Vec<String>,
    workers: usize,
    seed: u64,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    // Each set's first election, as its first broker asks for it when it registers (recorded
    // like any operation). A first ElectMaster that names nobody finds an empty SyncStateSet,
    // records a masterless epoch, and leaves the set without a master for good (as in
    // RocketMQ), so the workload must not start with one.
    // Its own process ids, below the auto-election ones and far above the workers'.
    let mut first = Worker {
        clients: clients.clone(),
        recorder: recorder.clone(),
        controllers: controllers.clone(),
        process: AUTO_ELECT_PROCESS_BASE - 1_000,
        stride: 1,
        rng: Rng::new(seed),
    };
    for key in SETS {
        for _ in 0..20 {
            if *stop.borrow() {
                break;
            }
            let Some(controller) = first.rng.pick(&first.controllers).cloned() else {
                break;
            };
            if first.elect_with(key, &controller, Some(IDS[0])).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut tasks = Vec::new();
    for w in 0..workers {
        let mut worker = Worker {
            clients: clients.clone(),
            recorder: recorder.clone(),
            controllers: controllers.clone(),
            process: w as u64,
            stride: workers as u64,
            rng: Rng::new(seed ^ (w as u64 + 1).wrapping_mul(0x9E37_79B9)),
        };
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            while !*stop.borrow() {
                let key = SETS[worker.rng.below(SETS.len() as u64) as usize];
                let Some(controller) = worker.rng.pick(&worker.controllers).cloned() else {
                    break;
                };
                let roll = worker.rng.below(100);
                if roll < 50 {
                    worker.read(key, &controller).await;
                } else if roll < 70 {
                    worker.elect(key, &controller).await;
                } else {
                    worker.alter(key, &controller).await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    for task in tasks {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "a controller workload task panicked");
        }
    }
}

/// Records, per set, an `elect` of unknown outcome: the controller may elect on its own after
/// a fault (see the module docs).
pub fn record_possible_auto_elections(recorder: &Recorder, counter: &Arc<AtomicU64>) {
    for set in SETS {
        let process = AUTO_ELECT_PROCESS_BASE + counter.fetch_add(1, Ordering::Relaxed);
        recorder.record(
            Process::Client(process),
            Kind::Invoke,
            "elect",
            Json::Null,
            with_key(set),
        );
        recorder.record(
            Process::Client(process),
            Kind::Info,
            "elect",
            Json::Null,
            extra([
                ("key", json!(set)),
                ("error", json!("possible controller-triggered election")),
            ]),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_ops_are_what_the_replica_info_model_reads() {
        let r = Recorder::in_memory();
        r.record(
            Process::Client(0),
            Kind::Invoke,
            "elect",
            json!({"broker_id": 2}),
            with_key("s"),
        );
        let info = MasterInfo {
            code: 200,
            master_broker_id: Some(2),
            master_address: None,
            master_epoch: 1,
            sync_state_set_epoch: 1,
            sync_state_set: BTreeSet::from([2]),
        };
        r.complete(0, Kind::Ok, "elect", snapshot(&info), with_key("s"));
        r.record(
            Process::Client(1),
            Kind::Invoke,
            "read",
            Json::Null,
            with_key("s"),
        );
        r.complete(1, Kind::Ok, "read", snapshot(&info), with_key("s"));
        let counter = Arc::new(AtomicU64::new(0));
        record_possible_auto_elections(&r, &counter);
        // A stale read after the election: not linearizable.
        let stale = MasterInfo {
            master_broker_id: None,
            master_epoch: 0,
            sync_state_set_epoch: 0,
            sync_state_set: BTreeSet::new(),
            ..info
        };
        let good: String = r
            .events()
            .iter()
            .map(|e| serde_json::to_string(e).expect("json") + "\n")
            .collect();
        let options = crate::linearizability::CheckOptions::default();
        let checked = crate::check_text(
            &good,
            Some(crate::history::Format::Jsonl),
            Some(crate::model::ModelName::ReplicaInfo),
            &options,
        )
        .expect("checks");
        assert_eq!(
            checked.report.verdict,
            crate::linearizability::Verdict::Valid
        );
        assert_eq!(checked.report.keys, 3);
        r.record(
            Process::Client(1),
            Kind::Invoke,
            "read",
            Json::Null,
            with_key("s"),
        );
        r.complete(1, Kind::Ok, "read", snapshot(&stale), with_key("s"));
        let bad: String = r
            .events()
            .iter()
            .map(|e| serde_json::to_string(e).expect("json") + "\n")
            .collect();
        let checked = crate::check_text(
            &bad,
            Some(crate::history::Format::Jsonl),
            Some(crate::model::ModelName::ReplicaInfo),
            &options,
        )
        .expect("checks");
        assert_eq!(
            checked.report.verdict,
            crate::linearizability::Verdict::Invalid
        );
    }
}
