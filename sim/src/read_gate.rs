//! The ReadIndex reads' wait for the apply, in an order the seed decides.
//!
//! openraft's `Raft::ensure_linearizable` takes a read's ReadIndex (`get_read_linearizer`) and
//! then waits, in `Linearizer::await_ready`, on the node's metrics `watch` until the state
//! machine has applied up to it. A `tokio::sync::watch` wakes its receivers in an order drawn
//! from the runtime's own RNG, which no seed reaches: two reads waiting for the same apply were
//! answered at the same simulated millisecond in either order (seed 17, `--controller-link
//! --fault-ms 3000`, at 452 ms; seed 4 at 1365 ms), and the trace with them.
//!
//! Here a read takes openraft's linearizer and waits on a [`ReadGate`] of its node instead: one
//! task per node process watches the metrics and, whenever the applied index moves, wakes the
//! reads it covers in the order they began waiting (their sequence number at this node), each
//! through a `oneshot` of its own. The current-thread runtime then runs them in that order, at
//! the same simulated instant openraft's own wait would have woken them. What is read, and when,
//! is openraft's: the ReadIndex, the applied index (the same metrics), and the error of a node
//! that stopped (a read left waiting when the gate closes falls back to `await_ready`).

use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::errors::Fatal;
use openraft::raft::linearizable_read::Linearizer;
use openraft::type_config::async_runtime::WatchReceiver;
use parking_lot::Mutex;
use rocketraft_raft::types::Raft;
use rocketraft_raft::TypeConfig;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One node process's reads waiting for the apply; cheap to clone.
#[derive(Clone, Default)]
pub struct ReadGate {
    state: Arc<Mutex<GateState>>,
}

#[derive(Default)]
struct GateState {
    /// Sequence numbers given so far.
    next: u64,
    /// Waiting reads by sequence number: the index each needs applied, and its wake-up.
    waiting: BTreeMap<u64, (u64, oneshot::Sender<()>)>,
    /// The node's metrics ended (its Raft stopped): nothing is released any more.
    closed: bool,
}

impl ReadGate {
    /// Starts the gate's task on `raft`'s metrics, for the life of the process; it ends when
    /// the metrics do (the Raft stopped).
    pub fn spawn(raft: &Raft) -> (ReadGate, JoinHandle<()>) {
        let gate = ReadGate::default();
        let mut rx = raft.metrics();
        let watcher = gate.clone();
        let task = tokio::spawn(async move {
            loop {
                let applied = rx.borrow_watched().last_applied.map(|l| l.index);
                watcher.release(applied);
                if rx.changed().await.is_err() {
                    watcher.close();
                    return;
                }
            }
        });
        (gate, task)
    }

    /// Wakes every read the applied index now covers, in sequence order.
    fn release(&self, applied: Option<u64>) {
        let mut st = self.state.lock();
        let Some(applied) = applied else {
            return;
        };
        let ready: Vec<u64> = st
            .waiting
            .iter()
            .filter(|(_, (index, _))| *index <= applied)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in ready {
            if let Some((_, wake)) = st.waiting.remove(&seq) {
                // A read whose caller gave up (a network deadline) dropped its receiver.
                let _ignored = wake.send(());
            }
        }
    }

    fn close(&self) {
        let mut st = self.state.lock();
        st.closed = true;
        // Dropping the senders sends each waiting read to openraft's own wait.
        st.waiting.clear();
    }

    /// Waits until `raft`'s state machine has applied up to the linearizer's ReadIndex, as
    /// `Linearizer::await_ready` does (and with its error once the Raft stopped).
    pub async fn await_ready(
        &self,
        raft: &Raft,
        linearizer: Linearizer<TypeConfig>,
    ) -> Result<(), Fatal<TypeConfig>> {
        // openraft's fast path: applied up to the ReadIndex when the linearizer was made.
        if linearizer.applied() >= Some(linearizer.read_log_id().log_id()) {
            return Ok(());
        }
        let index = linearizer.read_log_id().index();
        let woken = {
            let mut st = self.state.lock();
            // The current value, as openraft's wait checks first (the gate's task may not
            // have run since the last change).
            let applied = raft
                .metrics()
                .borrow_watched()
                .last_applied
                .map(|l| l.index);
            if applied.is_some_and(|a| a >= index) {
                return Ok(());
            }
            if st.closed {
                None
            } else {
                let seq = st.next;
                st.next += 1;
                let (tx, rx) = oneshot::channel();
                st.waiting.insert(seq, (index, tx));
                Some(rx)
            }
        };
        if let Some(rx) = woken {
            if rx.await.is_ok() {
                return Ok(());
            }
        }
        linearizer.await_ready(raft).await.map(|_| ())
    }
}
