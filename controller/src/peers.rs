//! What the other controllers hear (issue 22: partitions where the leader's own heartbeat
//! table is not the whole story).
//!
//! In a majority ring the controller leader may hear a replica that clients cannot use while
//! another controller hears the one that could take writes. Before it elects, or when the master
//! it hears cannot acknowledge and it has no replacement of its own, a leader asks its peers for
//! their own heartbeat tables (CONTROLLER_GET_SYNC_STATE_DATA with `readLocal=true`, which
//! reports `heardRecently`, `nameServersReached` and `inSyncReplicasUnreachable` per replica) and
//! follows [`advise`]:
//!
//! - a peer hears the master, which can acknowledge: hand Raft leadership to that peer, which
//!   confirms the master's heartbeats;
//! - the master is stuck (it says so to this leader, or to a peer that heard it recently) and
//!   this leader hears a usable replacement: depose the master now;
//! - the master is stuck or lost and this leader hears no usable replacement, but a peer does:
//!   hand leadership to that peer, which deposes or elects it.
//!
//! Every step is safe whatever the answers say: a hand-over is a Raft leadership transfer (a
//! new term, so Claim 1 of docs/safety.md holds for whatever the new leader elects), and a
//! depose elects only a SyncStateSet member of a master that acknowledges only what every
//! member holds (Claim 2). The answers only decide where availability comes back first.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::client::ControllerClient;
use crate::wire::WireReplicaIdentity;

/// One peer's own view of one broker set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    /// The peer's Raft node id.
    pub id: u64,
    /// Every replica of the set as the peer's heartbeat table has it.
    pub replicas: Vec<WireReplicaIdentity>,
}

impl PeerView {
    fn replica(&self, broker_id: i64) -> Option<&WireReplicaIdentity> {
        self.replicas.iter().find(|r| r.broker_id == broker_id)
    }

    /// The peer heard the master recently and the master said it cannot acknowledge.
    fn hears_stuck(&self, master: i64) -> bool {
        self.replica(master)
            .is_some_and(|r| r.heard_recently == Some(true) && r.in_sync_unreachable == Some(true))
    }

    /// The peer heard the master recently and the master did not say it is stuck.
    fn hears_working(&self, master: i64) -> bool {
        self.replica(master)
            .is_some_and(|r| r.heard_recently == Some(true) && r.in_sync_unreachable != Some(true))
    }

    /// The peer recently heard a SyncStateSet member other than the master that reaches a
    /// NameServer (or does not say): a master clients could find.
    fn hears_a_replacement(&self, master: i64, sync_state_set: &BTreeSet<i64>) -> bool {
        self.replicas.iter().any(|r| {
            r.broker_id != master
                && sync_state_set.contains(&r.broker_id)
                && r.heard_recently == Some(true)
                && r.name_servers_reached != Some(0)
        })
    }
}

/// What the leader knows about one set before it asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Situation<'a> {
    pub master: i64,
    pub sync_state_set: &'a BTreeSet<i64>,
    /// The master's heartbeat timed out on this leader.
    pub timed_out_here: bool,
    /// This leader has not heard the master within a quarter of its timeout (or it timed out):
    /// a peer's word that the master is stuck then counts.
    pub unheard_here: bool,
    /// The master's last heartbeat to this leader said it cannot acknowledge.
    pub stuck_here: bool,
    /// This leader heard recently a SyncStateSet member other than the master that reaches a
    /// NameServer (`DefaultElectPolicy::elect_replacement` finds one).
    pub replacement_here: bool,
}

/// What to do after reading the peers' views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advice {
    /// Nothing the peers said changes this leader's own course.
    Nothing,
    /// Hand Raft leadership to this peer: it hears the master, which can acknowledge.
    HandOverToMaster(u64),
    /// Depose the master now: it cannot acknowledge and this leader hears a replacement.
    DeposeNow,
    /// Hand Raft leadership to this peer: it hears a replacement this leader does not.
    HandOverToReplacement(u64),
}

/// The decision described in the module docs; pure, so it is tested on its own.
pub fn advise(s: &Situation<'_>, views: &[PeerView]) -> Advice {
    if s.timed_out_here {
        if let Some(peer) = views.iter().find(|v| v.hears_working(s.master)) {
            return Advice::HandOverToMaster(peer.id);
        }
    }
    let stuck = s.stuck_here || (s.unheard_here && views.iter().any(|v| v.hears_stuck(s.master)));
    if stuck && s.replacement_here {
        return Advice::DeposeNow;
    }
    if (stuck || s.timed_out_here) && !s.replacement_here {
        if let Some(peer) = views
            .iter()
            .find(|v| v.hears_a_replacement(s.master, s.sync_state_set))
        {
            return Advice::HandOverToReplacement(peer.id);
        }
    }
    Advice::Nothing
}

/// Asks every peer (all of `peers` but `me`) for its own view of `broker_name`, concurrently,
/// each waiting at most `wait`. A peer that does not answer in time is left out.
pub async fn ask(
    client: &ControllerClient,
    peers: &BTreeMap<u64, String>,
    me: u64,
    broker_name: &str,
    wait: Duration,
) -> Vec<PeerView> {
    let asks = peers
        .iter()
        .filter(|(id, _)| **id != me)
        .map(|(id, addr)| async move {
            let info = client
                .get_sync_state_data_local(addr, &[broker_name], wait)
                .await
                .ok()?;
            let set = info.replicas_info_table.get(broker_name)?;
            Some(PeerView {
                id: *id,
                replicas: set
                    .in_sync_replicas
                    .iter()
                    .chain(&set.not_in_sync_replicas)
                    .cloned()
                    .collect(),
            })
        });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(
        id: i64,
        heard: bool,
        reached: Option<u32>,
        stuck: Option<bool>,
    ) -> WireReplicaIdentity {
        WireReplicaIdentity {
            broker_name: "broker-a".into(),
            broker_id: id,
            broker_address: format!("127.0.0.1:{}", 30000 + id),
            alive: true,
            heard_recently: Some(heard),
            name_servers_reached: reached,
            in_sync_unreachable: stuck,
        }
    }

    fn view(id: u64, replicas: Vec<WireReplicaIdentity>) -> PeerView {
        PeerView { id, replicas }
    }

    fn situation(
        sss: &BTreeSet<i64>,
        timed_out: bool,
        stuck: bool,
        replacement: bool,
    ) -> Situation<'_> {
        Situation {
            master: 1,
            sync_state_set: sss,
            timed_out_here: timed_out,
            unheard_here: timed_out,
            stuck_here: stuck,
            replacement_here: replacement,
        }
    }

    #[test]
    fn a_peer_that_hears_a_working_master_takes_over() {
        let sss = BTreeSet::from([1, 2, 3]);
        let views = [
            view(2, vec![replica(1, false, Some(1), None)]),
            view(3, vec![replica(1, true, Some(1), Some(false))]),
        ];
        assert_eq!(
            advise(&situation(&sss, true, false, true), &views),
            Advice::HandOverToMaster(3)
        );
        // Not while this leader still hears the master itself.
        assert_eq!(
            advise(&situation(&sss, false, false, true), &views),
            Advice::Nothing
        );
    }

    #[test]
    fn a_stuck_master_heard_by_a_peer_is_deposed_here() {
        let sss = BTreeSet::from([1, 2, 3]);
        let views = [view(3, vec![replica(1, true, Some(1), Some(true))])];
        // It is not handed to the peer (its master cannot acknowledge there either).
        assert_eq!(
            advise(&situation(&sss, true, false, true), &views),
            Advice::DeposeNow
        );
        // Also before it timed out here, once this leader stopped hearing it.
        let unheard = Situation {
            unheard_here: true,
            ..situation(&sss, false, false, true)
        };
        assert_eq!(advise(&unheard, &views), Advice::DeposeNow);
        // A peer that heard it long ago is no evidence.
        let old = [view(3, vec![replica(1, false, Some(1), Some(true))])];
        assert_eq!(
            advise(&situation(&sss, true, false, true), &old),
            Advice::Nothing
        );
        // Nor is a peer's word while this leader still hears the master working.
        assert_eq!(
            advise(&situation(&sss, false, false, true), &views),
            Advice::Nothing
        );
    }

    #[test]
    fn leadership_goes_where_a_usable_replacement_is_heard() {
        let sss = BTreeSet::from([1, 2, 3]);
        // Seed 11's first ring: this leader hears the stuck master and slave 3, which reaches
        // no NameServer; peer 2 hears slave 2, which does.
        let views = [
            view(3, vec![replica(3, true, Some(0), None)]),
            view(2, vec![replica(2, true, Some(1), None)]),
        ];
        assert_eq!(
            advise(&situation(&sss, false, true, false), &views),
            Advice::HandOverToReplacement(2)
        );
        // The same when the master is lost here.
        assert_eq!(
            advise(&situation(&sss, true, false, false), &views),
            Advice::HandOverToReplacement(2)
        );
        // Not for a master that works, and not toward a replica outside the SyncStateSet.
        assert_eq!(
            advise(&situation(&sss, false, false, false), &views),
            Advice::Nothing
        );
        let small = BTreeSet::from([1, 3]);
        assert_eq!(
            advise(&situation(&small, false, true, false), &views),
            Advice::Nothing
        );
    }

    #[test]
    fn with_a_replacement_here_a_lost_master_is_elected_as_usual() {
        let sss = BTreeSet::from([1, 2]);
        let views = [view(2, vec![replica(2, true, Some(1), None)])];
        assert_eq!(
            advise(&situation(&sss, true, false, true), &views),
            Advice::Nothing
        );
    }
}
