//! DefaultElectPolicy cases.

use std::collections::BTreeSet;

use rocketraft_controller::{AliveBrokers, BrokerLiveInfo, BrokerLiveness, DefaultElectPolicy};

const SET: &str = "broker-a";

fn live(epoch: i32, max_offset: i64, election_priority: i32) -> BrokerLiveInfo {
    BrokerLiveInfo::new(epoch, max_offset, election_priority)
}

fn ids(list: &[i64]) -> BTreeSet<i64> {
    list.iter().copied().collect()
}

#[test]
fn candidates_are_alive_sss_members() {
    let liveness = AliveBrokers::new()
        .with(SET, 2, live(1, 10, 0))
        .with(SET, 3, live(9, 999, 0));
    let policy = DefaultElectPolicy::default();
    // 3 has the best heartbeat but is outside the SSS; 1 is in it but dead.
    let elected = policy.elect(
        SET,
        &ids(&[1, 2]),
        &ids(&[1, 2, 3]),
        Some(1),
        None,
        &liveness,
    );
    assert_eq!(elected, Some(2));
    assert_eq!(
        policy.elect(SET, &ids(&[1]), &ids(&[1, 2, 3]), Some(1), None, &liveness),
        None
    );
}

#[test]
fn unclean_election_falls_back_to_all_alive_replicas() {
    let liveness = AliveBrokers::new()
        .with(SET, 2, live(1, 10, 0))
        .with(SET, 3, live(1, 20, 0));
    let policy = DefaultElectPolicy::new(true);
    let elected = policy.elect(SET, &ids(&[1]), &ids(&[1, 2, 3]), Some(1), None, &liveness);
    assert_eq!(elected, Some(3));
    // Unclean never overrides a clean candidate.
    let elected = policy.elect(SET, &ids(&[2]), &ids(&[1, 2, 3]), None, None, &liveness);
    assert_eq!(elected, Some(2));
}

#[test]
fn alive_old_master_is_kept() {
    let liveness = AliveBrokers::new()
        .with(SET, 1, live(0, 0, 5))
        .with(SET, 2, live(9, 999, 0));
    let policy = DefaultElectPolicy::default();
    let elected = policy.elect(SET, &ids(&[1, 2]), &ids(&[1, 2]), Some(1), None, &liveness);
    assert_eq!(elected, Some(1));
    // Designating the old master itself also keeps it.
    let elected = policy.elect(
        SET,
        &ids(&[1, 2]),
        &ids(&[1, 2]),
        Some(1),
        Some(1),
        &liveness,
    );
    assert_eq!(elected, Some(1));
}

#[test]
fn designated_broker_only_if_candidate() {
    let liveness = AliveBrokers::new()
        .with(SET, 1, live(0, 0, 0))
        .with(SET, 2, live(0, 0, 0))
        .with(SET, 3, live(9, 9, 0));
    let policy = DefaultElectPolicy::default();
    let sss = ids(&[1, 2]);
    let all = ids(&[1, 2, 3, 4]);
    assert_eq!(
        policy.elect(SET, &sss, &all, Some(1), Some(2), &liveness),
        Some(2)
    );
    // Not in the SSS, or dead: nobody, not even the best other candidate.
    assert_eq!(
        policy.elect(SET, &sss, &all, Some(1), Some(3), &liveness),
        None
    );
    assert_eq!(
        policy.elect(SET, &sss, &all, None, Some(4), &liveness),
        None
    );
}

#[test]
fn ranking_epoch_then_offset_then_priority_then_id() {
    let policy = DefaultElectPolicy::default();
    let sss = ids(&[1, 2, 3, 4]);
    let elect = |liveness: &AliveBrokers| policy.elect(SET, &sss, &sss, None, None, liveness);
    // Higher epoch beats higher offset.
    let liveness = AliveBrokers::new()
        .with(SET, 1, live(1, 1000, 0))
        .with(SET, 2, live(2, 10, 0));
    assert_eq!(elect(&liveness), Some(2));
    // Same epoch: higher offset wins, whatever the priority.
    let liveness = AliveBrokers::new()
        .with(SET, 1, live(2, 10, 0))
        .with(SET, 2, live(2, 20, 9));
    assert_eq!(elect(&liveness), Some(2));
    // Same epoch and offset: lower priority value wins.
    let liveness = AliveBrokers::new()
        .with(SET, 1, live(2, 20, 3))
        .with(SET, 2, live(2, 20, 1));
    assert_eq!(elect(&liveness), Some(2));
    // Full tie: lowest broker id.
    let liveness = AliveBrokers::new()
        .with(SET, 4, live(2, 20, 1))
        .with(SET, 3, live(2, 20, 1));
    assert_eq!(elect(&liveness), Some(3));
    // Liveness of another broker set does not count.
    let liveness = AliveBrokers::new().with("broker-b", 1, live(0, 0, 0));
    assert_eq!(elect(&liveness), None);
}

#[test]
fn clean_election_prefers_replicas_that_reach_the_name_servers() {
    // 2 has the better log but reaches no NameServer (a partition cut it from them but not
    // from the controller leader); clients could not find it, so 3 wins.
    let liveness = AliveBrokers::new()
        .with(SET, 2, live(2, 900, 0).with_name_servers_reached(0))
        .with(SET, 3, live(1, 800, 0).with_name_servers_reached(1));
    let policy = DefaultElectPolicy::default();
    let sss = ids(&[1, 2, 3]);
    assert_eq!(
        policy.elect(SET, &sss, &sss, Some(1), None, &liveness),
        Some(3)
    );
    // Reaching more NameServers beats reaching fewer.
    let liveness = AliveBrokers::new()
        .with(SET, 2, live(1, 900, 0).with_name_servers_reached(1))
        .with(SET, 3, live(1, 800, 0).with_name_servers_reached(2));
    assert_eq!(
        policy.elect(SET, &sss, &sss, Some(1), None, &liveness),
        Some(3)
    );
    // Equal reach: the heartbeat order decides as before.
    let liveness = AliveBrokers::new()
        .with(SET, 2, live(1, 900, 0).with_name_servers_reached(1))
        .with(SET, 3, live(1, 800, 0).with_name_servers_reached(1));
    assert_eq!(
        policy.elect(SET, &sss, &sss, Some(1), None, &liveness),
        Some(2)
    );
    // A broker that does not report it (Apache RocketMQ's) is not ranked below anyone.
    let liveness = AliveBrokers::new().with(SET, 2, live(1, 900, 0)).with(
        SET,
        3,
        live(1, 800, 0).with_name_servers_reached(1),
    );
    assert_eq!(
        policy.elect(SET, &sss, &sss, Some(1), None, &liveness),
        Some(2)
    );
}

#[test]
fn route_preference_never_overrides_the_old_master_or_a_designation() {
    let liveness = AliveBrokers::new()
        .with(SET, 1, live(1, 900, 0).with_name_servers_reached(0))
        .with(SET, 2, live(1, 900, 0).with_name_servers_reached(1));
    let policy = DefaultElectPolicy::default();
    let sss = ids(&[1, 2]);
    assert_eq!(
        policy.elect(SET, &sss, &sss, Some(1), None, &liveness),
        Some(1)
    );
    assert_eq!(
        policy.elect(SET, &sss, &sss, None, Some(1), &liveness),
        Some(1)
    );
}

#[test]
fn unclean_election_ranks_data_before_routes() {
    // Nobody of the SyncStateSet is alive: the replica with the most data wins even though it
    // reaches no NameServer (reachability only breaks ties after epoch and offset).
    let liveness = AliveBrokers::new()
        .with(SET, 2, live(1, 900, 0).with_name_servers_reached(0))
        .with(SET, 3, live(1, 800, 0).with_name_servers_reached(1))
        .with(SET, 4, live(1, 900, 0).with_name_servers_reached(1));
    let policy = DefaultElectPolicy::new(true);
    assert_eq!(
        policy.elect(
            SET,
            &ids(&[1]),
            &ids(&[1, 2, 3, 4]),
            Some(1),
            None,
            &liveness
        ),
        Some(4)
    );
}

#[test]
fn clean_election_prefers_a_slave_still_linked_to_the_old_master() {
    // Both reach the NameServer; 2 has the longer log but lost its link to the old master 1
    // (cut off from it and, here, from 3): elected, it would have nobody to replicate to.
    let liveness = AliveBrokers::new()
        .with(
            SET,
            2,
            live(1, 900, 0)
                .with_name_servers_reached(1)
                .with_master_link_fresh(false),
        )
        .with(
            SET,
            3,
            live(1, 800, 0)
                .with_name_servers_reached(1)
                .with_master_link_fresh(true),
        );
    let policy = DefaultElectPolicy::default();
    let sss = ids(&[1, 2, 3]);
    assert_eq!(
        policy.elect(SET, &sss, &sss, Some(1), None, &liveness),
        Some(3)
    );
    // Reaching a NameServer still ranks first: clients must find the master.
    let liveness = AliveBrokers::new()
        .with(
            SET,
            2,
            live(1, 900, 0)
                .with_name_servers_reached(1)
                .with_master_link_fresh(false),
        )
        .with(
            SET,
            3,
            live(1, 800, 0)
                .with_name_servers_reached(0)
                .with_master_link_fresh(true),
        );
    assert_eq!(
        policy.elect(SET, &sss, &sss, Some(1), None, &liveness),
        Some(2)
    );
    // Every link down (the master was killed): the heartbeat order decides.
    let liveness = AliveBrokers::new()
        .with(SET, 2, live(1, 900, 0).with_master_link_fresh(false))
        .with(SET, 3, live(1, 800, 0).with_master_link_fresh(false));
    assert_eq!(
        policy.elect(SET, &sss, &sss, Some(1), None, &liveness),
        Some(2)
    );
}

/// Issue 22: a broker a partition just cut off from the leader is still alive for a heartbeat
/// timeout; a clean election ranks the candidates the leader heard recently first (seed-5 ring:
/// the leader elected a slave it had stopped hearing 2.7 s before, and nobody wrote until the
/// heal).
#[test]
fn clean_election_prefers_replicas_heard_recently() {
    let recent = |info: BrokerLiveInfo, heard: bool| BrokerLiveInfo {
        heard_recently: Some(heard),
        ..info
    };
    let policy = DefaultElectPolicy::default();
    let sss = ids(&[1, 2, 3]);
    // Replica 2 ranks first (epoch 2, two NameServers) unless only 3 was heard recently.
    let heard_recently = |two: bool, three: bool| {
        AliveBrokers::new()
            .with(
                SET,
                2,
                recent(live(2, 900, 0).with_name_servers_reached(2), two),
            )
            .with(
                SET,
                3,
                recent(live(1, 800, 0).with_name_servers_reached(1), three),
            )
    };
    assert_eq!(
        policy.elect(SET, &sss, &sss, Some(1), None, &heard_recently(false, true)),
        Some(3)
    );
    // Both heard recently: the usual order.
    assert_eq!(
        policy.elect(SET, &sss, &sss, Some(1), None, &heard_recently(true, true)),
        Some(2)
    );
    // The heartbeat table marks it: within a quarter of the timeout.
    let tracker = rocketraft_controller::heartbeat::HeartbeatTracker::new();
    tracker.record(
        rocketraft_controller::heartbeat::Heartbeat {
            cluster: "c".into(),
            broker_name: SET.into(),
            broker_id: 2,
            broker_addr: "127.0.0.1:1".into(),
            timeout_ms: 3000,
            info: live(1, 1, 0),
        },
        0,
    );
    let heard = |now| {
        let one = tracker.live_info(SET, 2, now);
        assert_eq!(one, tracker.alive(now).live_info(SET, 2));
        one.and_then(|i| i.heard_recently)
    };
    assert_eq!(heard(749), Some(true));
    assert_eq!(heard(750), Some(false));
    assert_eq!(heard(3000), None);
}
