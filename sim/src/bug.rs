//! Deliberately broken modes, for the checker's self-tests: each one is a bug a real system
//! could have, and a run with it must be caught by the invariant it breaks (`sim/tests/sim.rs`
//! asserts that, and that the failing seed replays byte for byte).
//!
//! They live in the simulation's own parts (its log store, its client-facing read path): no
//! production code path knows about them. A run selects one with [`crate::SimOptions::bug`]
//! or `rocketraft-sim --break NAME`.

use std::fmt;
use std::str::FromStr;

use crate::check::Violation;

/// A bug the simulation can be told to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bug {
    /// The log store tells openraft an append is durable at once and never syncs it (only a
    /// vote or a truncation syncs the disk): a crash loses entries the node counted towards a
    /// commit, so a committed, acknowledged entry can vanish from a majority.
    LoseUnsyncedAck,
    /// The log store never makes a vote durable: a restarted node has forgotten whom it voted
    /// for (and its term), and can vote again for another leader it already turned down, or
    /// take appends from a leader it had left behind.
    ForgetVote,
    /// A node answers `GET_REPLICA_INFO` from its own state machine without the ReadIndex
    /// round (`ensure_linearizable`), follower or deposed leader alike: a stale read.
    StaleRead,
    /// Broker replicas (`--replicas`): the producer's send is acknowledged as soon as the
    /// master stored it, without waiting for the SyncStateSet's acks (the simulation's own send
    /// path; the broker's `wait_for_acks` is not touched).
    AckBeforeReplicas,
    /// Broker replicas (`--replicas`): every replica's lease clock runs at a fifth of the
    /// simulated time's rate, far outside the bound docs/safety.md assumes (a few percent): a
    /// master's lease of 3/4 of the controllers' heartbeat timeout lasts 3.75 timeouts, so a new
    /// master can be elected and take writes while the old one still holds its lease (the
    /// broker's `HaState` is untouched; only the clock the simulation hands it is wrong).
    SlowLeaseClock,
}

impl Bug {
    /// Every bug, in a fixed order.
    pub const ALL: [Bug; 5] = [
        Bug::LoseUnsyncedAck,
        Bug::ForgetVote,
        Bug::StaleRead,
        Bug::AckBeforeReplicas,
        Bug::SlowLeaseClock,
    ];

    /// The name `--break` takes.
    pub fn name(self) -> &'static str {
        match self {
            Bug::LoseUnsyncedAck => "lose-unsynced-ack",
            Bug::ForgetVote => "forget-vote",
            Bug::StaleRead => "stale-read",
            Bug::AckBeforeReplicas => "ack-before-replicas",
            Bug::SlowLeaseClock => "slow-lease-clock",
        }
    }

    /// The invariants a run with this bug is expected to break (any one of them will do: which
    /// one shows first depends on the schedule).
    pub fn caught_by(self) -> &'static [Violation] {
        match self {
            Bug::LoseUnsyncedAck => &[
                Violation::AckedLost,
                Violation::StateDiverged,
                Violation::TwoMasters,
                Violation::WentBack,
            ],
            // In openraft's leader-id mode a vote granted twice in one term is harmless (the
            // greater leader id wins the follower); the harm needs the forgetful node to take a
            // deposed leader's appends, and rarer still to lose an acknowledged entry. What the
            // runs tried show first: every node forgets at the final restart, a term-1 leader
            // holds term-8 entries, openraft's own assertion stops it and nothing recovers.
            Bug::ForgetVote => &[
                Violation::AckedLost,
                Violation::StateDiverged,
                Violation::TwoMasters,
                Violation::WentBack,
                Violation::NoRecovery,
            ],
            Bug::StaleRead => &[Violation::StaleRead],
            Bug::AckBeforeReplicas => &[Violation::MessageLost],
            Bug::SlowLeaseClock => &[Violation::LeaseOverlap],
        }
    }
}

impl fmt::Display for Bug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Bug {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Bug::ALL.into_iter().find(|b| b.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Bug::ALL.iter().map(|b| b.name()).collect();
            format!("unknown bug {s:?}; one of {}", names.join(", "))
        })
    }
}
