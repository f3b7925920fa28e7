//! Per-replica lease clocks: the clock each broker replica's `HaState` dates its role lease,
//! slave reports and office time on (`rocketraft_broker::ha::LeaseClock`, a seam whose default
//! is tokio's clock).
//!
//! Replica `id`'s clock reads `anchor + (simulated time since anchor_sim) * rate`: it runs at a
//! rate of its own, drawn per run within [`RATE_BOUND_PPM`] of the simulated time (the bound
//! docs/safety.md assumes: monotonic clocks of two processes run at the same rate within a few
//! percent; its margins are worked out for 5 %), and the nemesis steps it **forward** (a paused
//! process, a stalled VM: a monotonic clock never goes back). A forward step of a master's
//! clock ends its lease early in real time; a slow rate makes it last longer, which the lease's
//! margin (3/4 of the controllers' heartbeat timeout) must absorb. The `slow-lease-clock` bug
//! (`crate::bug`) runs every replica's clock at a fifth of the rate, far outside the bound.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rocketraft_broker::ha::LeaseClock;
use tokio::time::Instant;

/// How far a lease clock's rate may be from the simulated time's, in parts per million
/// (docs/safety.md, "Actors and clocks": within a few percent; the role lease margins absorb 5 %).
pub const RATE_BOUND_PPM: u64 = 50_000;
const PPM: u128 = 1_000_000;

#[derive(Debug, Clone, Copy)]
struct State {
    /// The simulated instant of the last anchor (`None`: not read yet; anchored at the first
    /// read, inside the run's runtime).
    anchor_sim: Option<Instant>,
    /// The clock's reading at `anchor_sim`.
    anchor: Option<Instant>,
    /// Parts per million of the simulated time's rate.
    rate_ppm: u64,
    /// Forward steps so far, in total.
    stepped: Duration,
}

impl State {
    fn now(&mut self) -> Instant {
        let sim = Instant::now();
        let (Some(anchor_sim), Some(anchor)) = (self.anchor_sim, self.anchor) else {
            self.anchor_sim = Some(sim);
            self.anchor = Some(sim);
            return sim;
        };
        let real = sim.saturating_duration_since(anchor_sim).as_nanos();
        let mine = real * u128::from(self.rate_ppm) / PPM;
        anchor + Duration::from_nanos(u64::try_from(mine).unwrap_or(u64::MAX))
    }
}

/// The replicas' lease clocks of one run; cheap to clone.
#[derive(Debug, Clone)]
pub struct LeaseClocks {
    inner: Arc<Mutex<BTreeMap<i64, State>>>,
}

impl LeaseClocks {
    /// Clocks for the replicas `rates` names, each at its rate (parts per million).
    pub fn new(rates: BTreeMap<i64, u64>) -> LeaseClocks {
        let states = rates
            .into_iter()
            .map(|(id, rate_ppm)| {
                (
                    id,
                    State {
                        anchor_sim: None,
                        anchor: None,
                        rate_ppm,
                        stepped: Duration::ZERO,
                    },
                )
            })
            .collect();
        LeaseClocks {
            inner: Arc::new(Mutex::new(states)),
        }
    }

    /// Replica `id`'s clock now (the simulated time for an unknown id).
    pub fn now(&self, id: i64) -> Instant {
        self.inner
            .lock()
            .get_mut(&id)
            .map_or_else(Instant::now, State::now)
    }

    /// Steps replica `id`'s clock forward by `by`; returns its forward steps in total.
    pub fn step(&self, id: i64, by: Duration) -> Duration {
        let mut g = self.inner.lock();
        let Some(s) = g.get_mut(&id) else {
            return Duration::ZERO;
        };
        let now = s.now();
        s.anchor_sim = Some(Instant::now());
        s.anchor = Some(now + by);
        s.stepped += by;
        s.stepped
    }

    /// Replica `id`'s rate, parts per million.
    pub fn rate_ppm(&self, id: i64) -> u64 {
        self.inner
            .lock()
            .get(&id)
            .map_or(PPM as u64, |s| s.rate_ppm)
    }

    /// The handle `HaState` reads replica `id`'s clock through.
    pub fn handle(&self, id: i64) -> LeaseClock {
        let clocks = self.clone();
        LeaseClock::custom(move || clocks.now(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rates_and_forward_steps() {
        let clocks = LeaseClocks::new(BTreeMap::from([(1, 1_000_000), (2, 950_000), (3, 500_000)]));
        let t0: Vec<Instant> = (1..=3).map(|id| clocks.now(id)).collect();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let ran = |id: i64| clocks.now(id) - t0[id as usize - 1];
        assert_eq!(ran(1), Duration::from_millis(1000));
        assert_eq!(ran(2), Duration::from_millis(950));
        assert_eq!(ran(3), Duration::from_millis(500));
        assert_eq!(
            clocks.step(2, Duration::from_millis(300)),
            Duration::from_millis(300)
        );
        assert_eq!(ran(2), Duration::from_millis(1250));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(ran(2), Duration::from_millis(1345));
        // The seam: a lease renewed on replica 3's slow clock lasts twice as long.
        let ha_clock = clocks.handle(3);
        let until = ha_clock.now() + Duration::from_millis(120);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(ha_clock.now() < until);
        tokio::time::sleep(Duration::from_millis(41)).await;
        assert!(ha_clock.now() >= until);
    }
}
