//! The controller's real scanner on the simulated controller nodes (`--controller-link`,
//! issue 21: real code paths, not models of them).
//!
//! Every node process runs `rocketraft_controller::scanner::scan_round` every [`SCAN_MS`] of
//! simulated time with a [`ScannerMemory`] of its own, lost when the process crashes (a
//! restart starts with an empty one, as a controller process does). The environment,
//! [`SimScanEnv`], is that node's parts:
//!
//! - the clock: the node's own (stepped) clock, the one its heartbeat table records at;
//! - the tenure: a watch on the node's openraft metrics, as `Controller`'s tenure watch: a term
//!   in which the node leads starts a tenure at the node's clock, and it ends when the node
//!   stops leading (so L1 -> L2 -> L1 between two rounds is a new tenure);
//! - quorum freshness: `service::quorum_fresh_at` over the node's quorum-ack age, as the
//!   heartbeat answers use it;
//! - the heartbeat table: the node's real `HeartbeatTracker`, the one the brokers' heartbeats
//!   reach over the simulated network;
//! - the applied state: the node's own state machine (a stale read, as production's);
//! - an election: the link's write path (`link::write`: `world::serve_write`, with the
//!   leader-side liveness and the count of writes in flight, forwarded once if the node no
//!   longer leads), checked and logged like any acknowledged write, and followed by the role
//!   notification to the replicas;
//! - a hand-over: openraft's `trigger().transfer_leader` on the node;
//! - the peers' views: `peers::ask` with a real `ControllerClient` over [`SimTransport`] from
//!   the node's endpoint, answered by the peers through `link::serve` (the same `route` the
//!   nodes answer brokers with), under the nemesis's partitions, delays and losses.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use openraft::type_config::async_runtime::WatchReceiver;
use parking_lot::Mutex;
use rocketraft_controller::client::ControllerClient;
use rocketraft_controller::heartbeat::HeartbeatTracker;
use rocketraft_controller::peers::PeerView;
use rocketraft_controller::replicated::CommandResult;
use rocketraft_controller::scanner::{scan_round, ScanEnv, ScannerMemory};
use rocketraft_controller::service::{quorum_fresh_at, Tenure};
use rocketraft_controller::state::ControllerState;
use rocketraft_controller::{
    ControllerQuery, ControllerQueryResponse, ControllerRequest, ControllerStateMachine,
    DefaultElectPolicy,
};
use rocketraft_raft::NodeId;
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::Refusal;
use tokio::task::JoinHandle;

use crate::link::{controller_addr, SimTransport, CONTROLLER_TIMEOUT_MS};
use crate::net::NodeHandle;
use crate::world::World;

/// The scanner's period (`scanNotActiveBrokerInterval`): production scans every 250 ms
/// against a 3 s heartbeat timeout, a twelfth of it; the same twelfth of the simulation's
/// 160 ms.
pub const SCAN_MS: u64 = CONTROLLER_TIMEOUT_MS * 250 / 3_000;

/// What the scanner of one node process reads and does (module docs).
struct SimScanEnv {
    world: Weak<World>,
    id: NodeId,
    node: NodeHandle,
    tenure: Arc<Mutex<Option<Tenure>>>,
    client: ControllerClient,
    peers: BTreeMap<u64, String>,
}

impl ScanEnv for SimScanEnv {
    fn now_ms(&self) -> u64 {
        self.node.clock.now_ms()
    }

    fn tenure(&self) -> Option<Tenure> {
        *self.tenure.lock()
    }

    fn is_leader(&self) -> bool {
        self.node.raft.metrics().borrow_watched().current_leader == Some(self.id)
    }

    fn quorum_fresh(&self) -> bool {
        quorum_fresh_at(
            crate::link::quorum_ack_age(self.id, &self.node.raft),
            CONTROLLER_TIMEOUT_MS,
        )
    }

    fn heartbeat_timeout_ms(&self) -> u64 {
        CONTROLLER_TIMEOUT_MS
    }

    fn heartbeats(&self) -> &HeartbeatTracker {
        &self.node.heartbeats
    }

    fn policy(&self) -> DefaultElectPolicy {
        DefaultElectPolicy::default()
    }

    fn count_heartbeat_timeouts(&self, brokers: usize) {
        if let Some(w) = self.world.upgrade() {
            w.stats.lock().scanner_timeouts += brokers as u64;
        }
    }

    async fn applied_state(&self) -> Result<ControllerState, Refusal> {
        match self
            .node
            .sm
            .query_app::<ControllerStateMachine>(&ControllerQuery::State)
        {
            Ok(ControllerQueryResponse::State { state, .. }) => Ok(state),
            Ok(other) => Err(Refusal::new(
                response_code::SYSTEM_ERROR,
                format!("unexpected answer to a state read: {other:?}"),
            )),
            Err(e) => Err(Refusal::new(response_code::SYSTEM_ERROR, e.to_string())),
        }
    }

    async fn elect(&self, request: ControllerRequest) -> CommandResult {
        let Some(w) = self.world.upgrade() else {
            return Err(Refusal::new(response_code::SYSTEM_BUSY, "the run is over"));
        };
        let who = format!("scanner n{}", self.id);
        let result = crate::link::write(&w, self.id, self.node.clone(), request, &who).await;
        if let Ok(response) = &result {
            if crate::world::acked(response).elected.is_some() {
                w.stats.lock().scanner_elections += 1;
            }
        }
        result
    }

    async fn transfer_leader(&self, to: u64) -> Result<(), String> {
        let Some(w) = self.world.upgrade() else {
            return Err("the run is over".to_string());
        };
        w.stats.lock().scanner_hand_overs += 1;
        let result = self
            .node
            .raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| e.to_string());
        w.log(format!(
            "scanner n{} hands leadership to n{to}: {}",
            self.id,
            match &result {
                Ok(()) => "triggered".to_string(),
                Err(e) => format!("failed: {e}"),
            }
        ));
        result
    }

    async fn ask_peers(&self, broker_name: &str, wait: Duration) -> Vec<PeerView> {
        rocketraft_controller::peers::ask(&self.client, &self.peers, self.id, broker_name, wait)
            .await
    }
}

/// Starts node `id`'s tenure watch and scanner for the life of its process `node`; the caller
/// aborts both when the process ends.
pub(crate) fn spawn(w: &Arc<World>, id: NodeId, node: NodeHandle) -> Vec<JoinHandle<()>> {
    let tenure: Arc<Mutex<Option<Tenure>>> = Arc::new(Mutex::new(None));
    let watch = {
        let tenure = tenure.clone();
        let mut rx = node.raft.metrics();
        let clock = node.clock.clone();
        let weak = Arc::downgrade(w);
        tokio::spawn(async move {
            loop {
                let (term, leads) = {
                    let m = rx.borrow_and_update();
                    (
                        m.current_term,
                        m.current_leader == Some(id) && m.state.is_leader(),
                    )
                };
                let began = {
                    let mut t = tenure.lock();
                    match (*t, leads) {
                        (Some(cur), true) if cur.term == term => None,
                        (_, true) => {
                            let since_ms = clock.now_ms();
                            *t = Some(Tenure { term, since_ms });
                            Some(since_ms)
                        }
                        (Some(_), false) => {
                            *t = None;
                            None
                        }
                        (None, false) => None,
                    }
                };
                if let (Some(since_ms), Some(w)) = (began, weak.upgrade()) {
                    w.log(format!(
                        "n{id} tenure of term {term} begins (clock {since_ms} ms)"
                    ));
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
    };
    let peers: BTreeMap<u64, String> = (1..=w.opts.nodes)
        .map(|n| (n, controller_addr(n)))
        .collect();
    let env = SimScanEnv {
        world: Arc::downgrade(w),
        id,
        client: ControllerClient::with_transport(
            Arc::new(SimTransport::new(w, id)),
            Duration::from_millis(CONTROLLER_TIMEOUT_MS),
        ),
        node,
        tenure,
        peers,
    };
    let scanner = tokio::spawn(async move {
        let memory = ScannerMemory::new();
        loop {
            tokio::time::sleep(Duration::from_millis(SCAN_MS)).await;
            scan_round(&env, &memory).await;
        }
    });
    vec![watch, scanner]
}
