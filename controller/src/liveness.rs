//! Broker liveness as an *input* to the handlers.
//!
//! The heartbeat tracker ([`crate::heartbeat::HeartbeatTracker`], given the time by the running
//! controller) decides which brokers are alive and what they last reported. Handlers only read a
//! snapshot of that through [`BrokerLiveness`], so the same request against the same state and
//! the same liveness always yields the same answer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a broker's last heartbeat (`BROKER_HEARTBEAT`, 904) told the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BrokerLiveInfo {
    /// The broker's highest epoch in its epoch file.
    pub epoch: i32,
    pub max_offset: i64,
    pub confirm_offset: i64,
    /// Lower is preferred.
    pub election_priority: i32,
    /// Rocketraft extension (`nameServersReached`): how many of its NameServers the broker
    /// reached within its last probe window. Clients find a master only through a NameServer,
    /// so a clean election prefers the candidates that reach the most. `None` for a broker that
    /// does not report it (Apache RocketMQ's), which is not ranked below anyone for it.
    #[serde(default)]
    pub name_servers_reached: Option<u32>,
    /// Rocketraft extension (`masterLinkFresh`): for a slave, whether it received from its
    /// master within half a heartbeat timeout. When the controllers lose the master, a slave
    /// still linked to it can replicate to it as soon as it is elected (the old master turns
    /// slave); one cut off from it may have no replica to replicate to. `None` when not
    /// reported (a master, or Apache RocketMQ's broker), which is not ranked below anyone.
    #[serde(default)]
    pub master_link_fresh: Option<bool>,
    /// Rocketraft extension (`inSyncReplicasUnreachable`): for a master that acknowledges only
    /// when every SyncStateSet member holds a write (`allAckInSyncStateSet`), whether it has
    /// heard from fewer than `minInSyncReplicas` members (itself included) for half a heartbeat
    /// timeout: it is alive but cannot acknowledge anything. The controller leader may then
    /// depose it in favour of another SyncStateSet member (see `scanner.rs`, `decide`, and
    /// docs/safety.md). `None` when not reported (a slave, a master counting acks, Apache
    /// RocketMQ's broker): such a master is never deposed while it heartbeats.
    #[serde(default)]
    pub in_sync_unreachable: Option<bool>,
    /// Rocketraft extension (`allAckInSyncStateSet`, the broker's config key): whether the
    /// broker acknowledges a write only when every SyncStateSet member holds it (`true`) or
    /// when `inSyncReplicas` of them do (`false`). A master counting acks can acknowledge a
    /// write a designated successor lacks, so a transfer away from it while it lives is
    /// refused (`handler.rs`, `elect_master`; docs/safety.md). `None` when not reported
    /// (Apache RocketMQ's broker).
    #[serde(default)]
    pub all_ack_in_sync_state_set: Option<bool>,
    /// Not on the wire: whether the controller that took this snapshot heard the broker within
    /// a quarter of its heartbeat timeout (`HeartbeatTracker::alive`). A broker a partition
    /// just cut off stays alive for a whole timeout; a clean election ranks the recently heard
    /// first, so it does not pick a master its leader cannot hear. `None`: not known (tests,
    /// entries written before this field), not ranked below anyone.
    #[serde(default)]
    pub heard_recently: Option<bool>,
}

impl BrokerLiveInfo {
    /// A heartbeat with these election inputs and no confirm offset.
    pub fn new(epoch: i32, max_offset: i64, election_priority: i32) -> Self {
        BrokerLiveInfo {
            epoch,
            max_offset,
            confirm_offset: 0,
            election_priority,
            name_servers_reached: None,
            master_link_fresh: None,
            in_sync_unreachable: None,
            all_ack_in_sync_state_set: None,
            heard_recently: None,
        }
    }

    /// Builder: whether the master reports that it cannot gather `minInSyncReplicas`.
    pub fn with_in_sync_unreachable(mut self, unreachable: bool) -> Self {
        self.in_sync_unreachable = Some(unreachable);
        self
    }

    /// Builder: whether the broker acknowledges only when every SyncStateSet member holds a
    /// write.
    pub fn with_all_ack_in_sync_state_set(mut self, all_ack: bool) -> Self {
        self.all_ack_in_sync_state_set = Some(all_ack);
        self
    }

    /// Builder: whether the slave's replication link to its master is up.
    pub fn with_master_link_fresh(mut self, fresh: bool) -> Self {
        self.master_link_fresh = Some(fresh);
        self
    }

    /// Builder: the number of NameServers the broker reports it reaches.
    pub fn with_name_servers_reached(mut self, reached: u32) -> Self {
        self.name_servers_reached = Some(reached);
        self
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliveBrokers {
    /// broker name -> broker id -> last heartbeat.
    alive: BTreeMap<String, BTreeMap<i64, BrokerLiveInfo>>,
}

impl AliveBrokers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks a broker alive with this heartbeat (replacing any earlier one).
    pub fn insert(&mut self, broker_name: impl Into<String>, broker_id: i64, info: BrokerLiveInfo) {
        self.alive
            .entry(broker_name.into())
            .or_default()
            .insert(broker_id, info);
    }

    /// Builder form of [`AliveBrokers::insert`].
    pub fn with(mut self, broker_name: &str, broker_id: i64, info: BrokerLiveInfo) -> Self {
        self.insert(broker_name, broker_id, info);
        self
    }

    pub fn remove(&mut self, broker_name: &str, broker_id: i64) {
        if let Some(set) = self.alive.get_mut(broker_name) {
            set.remove(&broker_id);
            if set.is_empty() {
                self.alive.remove(broker_name);
            }
        }
    }

    /// Only the brokers of one broker set (what a request about that set needs).
    pub fn only(&self, broker_name: &str) -> AliveBrokers {
        let mut out = AliveBrokers::new();
        if let Some(set) = self.alive.get(broker_name) {
            out.alive.insert(broker_name.to_string(), set.clone());
        }
        out
    }

    /// Only the brokers of the named sets.
    pub fn only_sets<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> AliveBrokers {
        let mut out = AliveBrokers::new();
        for name in names {
            if let Some(set) = self.alive.get(name) {
                out.alive.insert(name.to_string(), set.clone());
            }
        }
        out
    }

    /// Every live broker: (broker name, broker id, heartbeat).
    pub fn iter(&self) -> impl Iterator<Item = (&str, i64, &BrokerLiveInfo)> {
        self.alive
            .iter()
            .flat_map(|(name, set)| set.iter().map(move |(id, info)| (name.as_str(), *id, info)))
    }
}

impl BrokerLiveness for AliveBrokers {
    fn live_info(&self, broker_name: &str, broker_id: i64) -> Option<BrokerLiveInfo> {
        self.alive.get(broker_name)?.get(&broker_id).copied()
    }
}
