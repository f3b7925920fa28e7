//! Broker liveness as an *input* to the handlers.
//!
//! The heartbeat tracker (not built yet) owns the clock: it decides which brokers are alive and what
//! they last reported. Handlers only read a snapshot of that through [`BrokerLiveness`], so the same
//! request against the same state and the same liveness always yields the same answer.

use std::collections::BTreeMap;

/// What a broker's last heartbeat (`BROKER_HEARTBEAT`, 904) told the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BrokerLiveInfo {
    /// The broker's highest epoch in its epoch file.
    pub epoch: i32,
    pub max_offset: i64,
    pub confirm_offset: i64,
    /// Lower is preferred.
    pub election_priority: i32,
}

impl BrokerLiveInfo {
    /// A heartbeat with these election inputs and no confirm offset.
    pub fn new(epoch: i32, max_offset: i64, election_priority: i32) -> Self {
        BrokerLiveInfo {
            epoch,
            max_offset,
            confirm_offset: 0,
            election_priority,
        }
    }
}

/// Who is alive right now, and with what heartbeat.
pub trait BrokerLiveness {
    /// The last heartbeat of a live broker; `None` if the broker is not alive.
    fn live_info(&self, broker_name: &str, broker_id: i64) -> Option<BrokerLiveInfo>;

    fn is_alive(&self, broker_name: &str, broker_id: i64) -> bool {
        self.live_info(broker_name, broker_id).is_some()
    }
}

/// A plain table of live brokers; what the heartbeat tracker will hand the handlers, and what tests use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AliveBrokers {
    alive: BTreeMap<(String, i64), BrokerLiveInfo>,
}

impl AliveBrokers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks a broker alive with this heartbeat (replacing any earlier one).
    pub fn insert(&mut self, broker_name: impl Into<String>, broker_id: i64, info: BrokerLiveInfo) {
        self.alive.insert((broker_name.into(), broker_id), info);
    }

    /// Builder form of [`AliveBrokers::insert`].
    pub fn with(mut self, broker_name: &str, broker_id: i64, info: BrokerLiveInfo) -> Self {
        self.insert(broker_name, broker_id, info);
        self
    }

    pub fn remove(&mut self, broker_name: &str, broker_id: i64) {
        self.alive.remove(&(broker_name.to_string(), broker_id));
    }
}

impl BrokerLiveness for AliveBrokers {
    fn live_info(&self, broker_name: &str, broker_id: i64) -> Option<BrokerLiveInfo> {
        self.alive
            .get(&(broker_name.to_string(), broker_id))
            .copied()
    }
}
