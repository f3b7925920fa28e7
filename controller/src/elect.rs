//! The election policy (`DefaultElectPolicy`).
//!
//! 1. Try the alive members of the SyncStateSet; if that yields nobody and unclean election is
//!    enabled, try every alive registered replica (may lose acknowledged messages).
//! 2. Within a candidate group: keep the old master if it is a candidate (and no other broker is
//!    designated); a designated broker wins only if it is a candidate, else nobody does;
//!    otherwise the best heartbeat wins: epoch desc, max offset desc, election priority asc, and
//!    broker id asc so ties never depend on iteration order.
//! 3. Route-aware (a Rocketraft addition): in a clean election, before the heartbeat order, the
//!    candidates the leader heard recently win (`BrokerLiveInfo::heard_recently`: a broker a
//!    partition just cut off is still alive for a whole heartbeat timeout), then those that
//!    reach the most NameServers win (`BrokerLiveInfo::name_servers_reached`;
//!    a broker that does not report it is not ranked below anyone for it), then those still
//!    linked to the old master (`BrokerLiveInfo::master_link_fresh`: once elected, the old
//!    master turns slave and replicates from them; a candidate cut off from it and from the
//!    others would never gather `min_in_sync_replicas`). Every SyncStateSet
//!    member holds every acknowledged message, so any of them is safe; one that clients cannot
//!    find through a NameServer is useless as master (a partition that cuts a replica from the
//!    NameServer but not from the controller leader would otherwise stall writes until it
//!    heals). An unclean election keeps epoch and offset first (they decide how much is lost)
//!    and ranks reachability after them.

use std::cmp::Reverse;
use std::collections::BTreeSet;

use crate::liveness::{BrokerLiveInfo, BrokerLiveness};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct DefaultElectPolicy {
    /// `enableElectUncleanMaster` (default false).
    pub enable_elect_unclean_master: bool,
}

impl DefaultElectPolicy {
    pub fn new(enable_elect_unclean_master: bool) -> Self {
        Self {
            enable_elect_unclean_master,
        }
    }

    /// Picks the new master of `broker_name`, or `None` if nobody qualifies.
    ///
    /// `all_replicas` are the set's registered ids, used only for unclean election;
    /// `designated` is the broker an admin asked to elect.
    pub fn elect(
        &self,
        broker_name: &str,
        sync_state_set: &BTreeSet<i64>,
        all_replicas: &BTreeSet<i64>,
        old_master: Option<i64>,
        designated: Option<i64>,
        liveness: &dyn BrokerLiveness,
    ) -> Option<i64> {
        let clean = try_elect(
            broker_name,
            sync_state_set,
            old_master,
            designated,
            liveness,
            Order::RoutesFirst,
        );
        if clean.is_some() || !self.enable_elect_unclean_master {
            return clean;
        }
        try_elect(
            broker_name,
            all_replicas,
            old_master,
            designated,
            liveness,
            Order::DataFirst,
        )
    }
}

impl DefaultElectPolicy {
    /// Picks a live SyncStateSet member other than `old_master` to replace it (a master that is
    /// alive but cannot acknowledge), in the clean election order; `None` if nobody qualifies.
    /// Never unclean: the old master is alive and may still hold acknowledged messages no
    /// replica outside the set has. A member that reports reaching no NameServer is no
    /// replacement (clients could not find it).
    pub fn elect_replacement(
        &self,
        broker_name: &str,
        sync_state_set: &BTreeSet<i64>,
        old_master: i64,
        liveness: &dyn BrokerLiveness,
    ) -> Option<i64> {
        let others: BTreeSet<i64> = sync_state_set
            .iter()
            .copied()
            .filter(|id| *id != old_master)
            .filter(|id| {
                liveness
                    .live_info(broker_name, *id)
                    .is_some_and(|info| info.name_servers_reached != Some(0))
            })
            .collect();
        try_elect(
            broker_name,
            &others,
            None,
            None,
            liveness,
            Order::RoutesFirst,
        )
    }
}

/// Where NameServer reachability ranks among the heartbeat fields.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Clean election: every candidate holds every acknowledged message.
    RoutesFirst,
    /// Unclean election: the candidate with the most data first.
    DataFirst,
}

fn try_elect(
    broker_name: &str,
    brokers: &BTreeSet<i64>,
    old_master: Option<i64>,
    designated: Option<i64>,
    liveness: &dyn BrokerLiveness,
    order: Order,
) -> Option<i64> {
    let candidates: Vec<_> = brokers
        .iter()
        .filter_map(|id| liveness.live_info(broker_name, *id).map(|info| (*id, info)))
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let is_candidate = |id: i64| candidates.iter().any(|(candidate, _)| *candidate == id);
    if let Some(old) = old_master {
        if is_candidate(old) && designated.is_none_or(|wanted| wanted == old) {
            return Some(old);
        }
    }
    if let Some(wanted) = designated {
        return is_candidate(wanted).then_some(wanted);
    }
    // Heard recently by the leader, then reaches the most NameServers, then still linked to
    // the old master (so it has a replica to replicate to once elected).
    let reach = |info: &BrokerLiveInfo| {
        (
            Reverse(info.heard_recently.unwrap_or(true)),
            Reverse(info.name_servers_reached.unwrap_or(u32::MAX)),
            Reverse(info.master_link_fresh.unwrap_or(true)),
        )
    };
    let none = (Reverse(false), Reverse(0), Reverse(false));
    candidates
        .iter()
        .min_by_key(|(id, info)| {
            let (first, last) = match order {
                Order::RoutesFirst => (reach(info), none),
                Order::DataFirst => (none, reach(info)),
            };
            (
                first,
                Reverse(info.epoch),
                Reverse(info.max_offset),
                last,
                info.election_priority,
                *id,
            )
        })
        .map(|(id, _)| *id)
}
