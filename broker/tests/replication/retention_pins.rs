//! Retention on the slaves of a controller-mode set keeps what a failover needs: neither a
//! message in flight under POP nor a timer an hour away keeps its segment for good (the master
//! copies the message, with its checkpoint, and rolls the timer to the head of the log, and the
//! slaves see both: a slave computes its pin from the replicated revive and timer topics, as it
//! would serve them after a failover), so every replica deletes its expired segments while the
//! message is still in flight. The new master after a failover still has the message in flight
//! (its old receipt handle acks it there) and the rolled timer pending.

use std::time::Duration;

use rocketraft_broker::Broker;
use rocketraft_common::consts::property;
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::{ClientConfig, RemotingClient, RemotingCommand};

use crate::replication::{api, broker_config, free_port, in_sync, master_of, message, wait_for};

const SEGMENT: i64 = 64 * 1024;

fn pop(invisible_ms: i64) -> RemotingCommand {
    RemotingCommand::request(request_code::POP_MESSAGE)
        .with_ext("consumerGroup", "cg")
        .with_ext("topic", "Replicated")
        .with_ext("queueId", 0)
        .with_ext("maxMsgNums", 1)
        .with_ext("invisibleTime", invisible_ms)
        .with_ext("pollTime", 0)
}

fn mins(brokers: &[Option<Broker>]) -> Vec<i64> {
    brokers
        .iter()
        .flatten()
        .map(|b| b.inner().store.min_phy_offset())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slaves_keep_what_a_failover_needs_and_delete_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = crate::replication::namesrv_secured(dir.path(), None, |_| {}).await;
    let ns_addr = ns.local_addr();
    let mut brokers: Vec<Option<Broker>> = Vec::new();
    for i in 0..3 {
        let mut cfg = broker_config(&dir.path().join(format!("r{i}")), ns_addr, free_port());
        cfg.store.file_reserved_time_secs = Some(1);
        cfg.store.delete_when = (0..24)
            .map(|h| format!("{h:02}"))
            .collect::<Vec<_>>()
            .join(";");
        cfg.store.clean_resource_interval_ms = 200;
        cfg.store.delete_commit_log_files_interval_ms = 0;
        brokers.push(Some(Broker::start(cfg).await.expect("broker")));
    }
    let m = wait_for("a master", Duration::from_secs(20), || master_of(&brokers)).await;
    let master = brokers[m].as_ref().expect("master");
    wait_for("3 in sync", Duration::from_secs(20), || {
        (in_sync(master) == 3).then_some(())
    })
    .await;
    let api = api();
    let addr = master.local_addr().to_string();
    let client = RemotingClient::new(ClientConfig::default());

    // In the first segment: a message popped for ten minutes and a timer an hour away.
    let r = api.send(&addr, &message(0)).await.expect("send");
    assert_eq!(r.code, response_code::SUCCESS);
    let mut timer = message(1);
    timer
        .properties
        .insert(property::TIMER_DELAY_SEC.to_string(), "3600".to_string());
    let r = api.send(&addr, &timer).await.expect("timer send");
    assert_eq!(r.code, response_code::SUCCESS);
    let r = client
        .invoke(&addr, pop(600_000), Duration::from_secs(5))
        .await
        .expect("pop");
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    let popped = rocketraft_common::message::decode_messages(&r.body).expect("body");
    assert_eq!(popped.len(), 1);
    let in_flight = &popped[0];

    // Five more segments; they expire after a second.
    let mut i = 2;
    while master.inner().store.max_phy_offset() < 6 * SEGMENT {
        let r = api.send(&addr, &message(i)).await.expect("send");
        assert_eq!(r.code, response_code::SUCCESS);
        i += 1;
    }
    let end = master.inner().store.max_phy_offset();
    wait_for("the slaves to catch up", Duration::from_secs(20), || {
        brokers
            .iter()
            .flatten()
            .all(|b| b.inner().store.max_phy_offset() >= end)
            .then_some(())
    })
    .await;
    // The timer is rolled and the message in flight copied (the master wants the segment
    // gone); every replica sees both.
    wait_for(
        "the timer's roll to replicate",
        Duration::from_secs(20),
        || {
            brokers
                .iter()
                .flatten()
                .all(|b| {
                    let s = &b.inner().store;
                    (0..s.get_max_offset_in_queue("rmq_sys_wheel_timer", 0)).any(|o| {
                        s.get_commit_log_offset_in_queue("rmq_sys_wheel_timer", 0, o)
                            .and_then(|phy| s.look_message_by_offset(phy))
                            .is_some_and(|m| m.message.property("TIMER_ROLLED_FROM") == Some("0"))
                    }) && {
                        let revive =
                            rocketraft_broker::pop::revive_topic(&b.inner().config.cluster_name);
                        (0..s.get_max_offset_in_queue(&revive, 0)).any(|o| {
                            s.get_commit_log_offset_in_queue(&revive, 0, o)
                                .and_then(|phy| s.look_message_by_offset(phy))
                                .is_some_and(|m| {
                                    m.message
                                        .property(rocketraft_broker::pop::POP_COPY_OF)
                                        .is_some()
                                })
                        })
                    }
                })
                .then_some(())
        },
    )
    .await;
    // Nothing pins the first segment any more: every replica deletes its expired segments
    // while the message is still in flight.
    wait_for("every replica to delete", Duration::from_secs(30), || {
        mins(&brokers)
            .iter()
            .all(|m| *m >= 4 * SEGMENT)
            .then_some(())
    })
    .await;
    assert_eq!(
        brokers[m]
            .as_ref()
            .expect("master")
            .inner()
            .pop
            .in_flight("cg"),
        vec![("Replicated".to_string(), 0, 1)]
    );

    // The master dies; the new one still has the timer pending, from the rolled record, and
    // the message in flight, from its copy: the handle the consumer holds acks it there.
    brokers[m].take().expect("master").shutdown().await;
    let n = wait_for("a new master", Duration::from_secs(30), || {
        master_of(&brokers)
    })
    .await;
    let new_master = brokers[n].as_ref().expect("new master");
    wait_for(
        "the timer pending on the new master",
        Duration::from_secs(20),
        || (new_master.inner().timers.pending_count() == 1).then_some(()),
    )
    .await;
    wait_for(
        "the message in flight on the new master",
        Duration::from_secs(20),
        || {
            (new_master.inner().pop.in_flight("cg") == vec![("Replicated".to_string(), 0, 1)])
                .then_some(())
        },
    )
    .await;
    let addr = new_master.local_addr().to_string();
    let ack = RemotingCommand::request(request_code::ACK_MESSAGE)
        .with_ext("consumerGroup", "cg")
        .with_ext("topic", "Replicated")
        .with_ext("queueId", in_flight.queue_id)
        .with_ext(
            "extraInfo",
            in_flight
                .message
                .property(property::POP_CK)
                .expect("handle"),
        )
        .with_ext("offset", in_flight.queue_offset);
    // Acknowledged once the surviving slave is back in the SyncStateSet.
    let started = std::time::Instant::now();
    let r = loop {
        let r = client
            .invoke(&addr, ack.clone(), Duration::from_secs(5))
            .await
            .expect("ack");
        if r.code == response_code::SUCCESS || started.elapsed() > Duration::from_secs(30) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    assert!(new_master
        .inner()
        .pop
        .in_flight("cg")
        .iter()
        .all(|(_, _, n)| *n == 0));
    for b in brokers.into_iter().flatten() {
        b.shutdown().await;
    }
    ns.shutdown().await;
}
