//! Per-node clocks, and the clock steps the nemesis makes.
//!
//! Every simulated process shares tokio's paused clock, which is global: openraft's timers
//! (election timeouts, heartbeats, its leader lease) run on it and cannot be stepped per node
//! without a seam inside openraft. What the simulation can step is the clock **our** code reads
//! to decide something, and on the controller that is one clock: the monotonic milliseconds
//! (`rocketraft_common::time::mono_ms`) at which the heartbeat table records a broker's
//! heartbeat and against which the leader judges who is alive when it fills in a command's
//! liveness (`rocketraft_controller::service::alive_for_at`). Each node here reads that clock as
//! the simulated time plus an offset of its own, and a clock step moves the offset forward or
//! back. (A real monotonic clock is never stepped back; a forward jump is what a paused process,
//! a stalled VM or a suspended host sees. The simulation steps both ways, the back step being
//! the harder case for the heartbeat table: entries recorded "in the future" stay alive longer.)
//! The wall clock (`rocketraft_common::time::now_ms`) is read by no code path the simulation
//! runs (see `sim/README.md`, Clock steps).

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use rocketraft_raft::NodeId;

/// Where every node's monotonic clock starts: far enough from 0 that a back step stays positive.
const CLOCK_BASE_MS: i64 = 1_000_000;

/// The nodes' clocks of one run; cheap to clone.
#[derive(Debug, Clone)]
pub struct Clocks {
    inner: Arc<Mutex<ClocksInner>>,
}

#[derive(Debug)]
struct ClocksInner {
    /// The simulated instant the run began (set inside the run's runtime).
    start: Option<tokio::time::Instant>,
    /// Per node: how far its clock is ahead of the simulated time (negative: behind).
    offsets: BTreeMap<NodeId, i64>,
}

impl Default for Clocks {
    fn default() -> Self {
        Self::new()
    }
}

impl Clocks {
    pub fn new() -> Self {
        Clocks {
            inner: Arc::new(Mutex::new(ClocksInner {
                start: None,
                offsets: BTreeMap::new(),
            })),
        }
    }

    /// Starts the clocks: call inside the run's runtime.
    pub fn start(&self) {
        self.inner.lock().start = Some(tokio::time::Instant::now());
    }

    /// Node `id`'s monotonic clock now, in ms.
    pub fn now_ms(&self, id: NodeId) -> u64 {
        let g = self.inner.lock();
        let elapsed = g
            .start
            .map_or(0, |s| (tokio::time::Instant::now() - s).as_millis() as i64);
        let offset = g.offsets.get(&id).copied().unwrap_or(0);
        (CLOCK_BASE_MS + elapsed + offset).max(0) as u64
    }

    /// Steps node `id`'s clock by `by_ms` (negative: back); returns its new offset.
    pub fn step(&self, id: NodeId, by_ms: i64) -> i64 {
        let mut g = self.inner.lock();
        let offset = g.offsets.entry(id).or_insert(0);
        *offset = (*offset + by_ms).max(-CLOCK_BASE_MS / 2);
        *offset
    }

    /// Node `id`'s clock, for the code running on it.
    pub fn of(&self, id: NodeId) -> NodeClock {
        NodeClock {
            clocks: self.clone(),
            id,
        }
    }
}

/// One node's clock.
#[derive(Debug, Clone)]
pub struct NodeClock {
    clocks: Clocks,
    id: NodeId,
}

impl NodeClock {
    pub fn now_ms(&self) -> u64 {
        self.clocks.now_ms(self.id)
    }
}
