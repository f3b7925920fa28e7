//! Live state copied forward under a full disk (issue 15): the store root is a small real tmpfs,
//! filled by sends and then pushed past `diskSpaceWarningLevelRatio` (90 %) by a ballast file at
//! once, so every send is refused and forced deletion wants the oldest CommitLog segment. That
//! segment holds POP messages in flight (one kept in flight by ChangeInvisibleTime) or undecided
//! half messages: the broker stores them again at the head of the log (accepted while the disk
//! is marked full), the segment goes and the disk is usable again. A crash (the store stopped as
//! by `kill -9`) and a restart follow the copy; then the old receipt handle acks its message
//! (which never comes back), the other one comes back exactly once after its invisible time,
//! and the transactions keep their identity (a commit naming the original offsets, a check-back
//! of the other one).

use std::path::Path;
use std::time::{Duration, Instant};

use rocketraft_broker::pop::POP_COPY_OF;
use rocketraft_broker::{Broker, BrokerConfig};
use rocketraft_common::consts::sys_flag;
use rocketraft_common::testing::Tmpfs;
use rocketraft_common::TopicConfig;
use rocketraft_nameserver::{NameServer, NamesrvConfig};
use rocketraft_remoting::api::MqClientApi;
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{ClientConfig, RemotingClient};

use crate::pop_copy::{
    self, ack_kept_after_restart, fill_past_warning, only_expires_comes_back, pop_kept_and_expires,
    used, GROUP, POP_TOPIC, SEGMENT,
};
use crate::transaction::{committing_producer, end, prepare, visible};

/// The broker of [`pop_copy::config`], with no transaction check-back before the restart.
fn config(root: &Path, namesrv: std::net::SocketAddr, port: u16) -> BrokerConfig {
    let mut c = pop_copy::config(root, namesrv, port);
    c.transaction_timeout_ms = 600_000;
    c.transaction_check_interval_ms = 600_000;
    c.transaction_check_max = 15;
    c
}

fn free_port() -> u16 {
    rocketraft_common::net::free_loopback_port().expect("a free loopback port")
}

async fn namesrv() -> NameServer {
    NameServer::start(NamesrvConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..NamesrvConfig::default()
    })
    .await
    .expect("namesrv")
}

/// Waits until the CommitLog's first offset is past `phy` (its segment deleted).
async fn wait_deleted(broker: &Broker, phy: i64, what: &str) {
    let started = Instant::now();
    while broker.inner().store.min_phy_offset() <= phy {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what}: the segment at {phy} never went (min offset {}, disk full: {}): the state it holds pins it",
            broker.inner().store.min_phy_offset(),
            broker.inner().store.is_disk_full()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The copies of POP messages in flight stored in the revive topic: (queue offset of the
/// message in its queue, CommitLog offset of the copy, body).
fn pop_copies(b: &Broker) -> Vec<(i64, i64, String)> {
    let store = &b.inner().store;
    let revive = rocketraft_broker::pop::revive_topic(&b.inner().config.cluster_name);
    (store.get_min_offset_in_queue(&revive, 0)..store.get_max_offset_in_queue(&revive, 0))
        .filter_map(|o| store.get_commit_log_offset_in_queue(&revive, 0, o))
        .filter_map(|phy| store.look_message_by_offset(phy))
        .filter_map(|m| {
            let state: serde_json::Value =
                serde_json::from_str(m.message.property(POP_COPY_OF)?).ok()?;
            Some((
                state["o"].as_i64()?,
                m.commit_log_offset,
                String::from_utf8_lossy(&m.message.body).to_string(),
            ))
        })
        .collect()
}

/// Stops the broker as `kill -9` would leave its store (no final flush, no checkpoint, the
/// abort marker kept: the restart recovers as after a crash and replays the POP and
/// transaction state from the CommitLog), then closes the rest.
async fn crash(broker: Broker) {
    broker.inner().store.crash_for_test();
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pop_messages_in_flight_are_copied_forward_under_a_full_disk_and_their_old_handles_work() {
    let Some(fs) = Tmpfs::mount_or_skip("48m") else {
        return;
    };
    let root = fs.dir.join("store");
    let ns = namesrv().await;
    let port = free_port();
    let broker = Broker::start(config(&root, ns.local_addr(), port))
        .await
        .expect("broker");
    let addr = broker.local_addr().to_string();
    let client = RemotingClient::new(ClientConfig::default());
    let api = MqClientApi::new(client.clone(), Duration::from_secs(5));
    // Both in flight, their originals (and checkpoints) in the first segment; "kept" kept in
    // flight longer by ChangeInvisibleTime.
    let (popped, popped_at, kept_handle) = pop_kept_and_expires(&api, &client, &addr).await;
    let kept = &popped[0];

    fill_past_warning(&api, &addr, &fs, 70.0).await;
    wait_deleted(&broker, SEGMENT - 1, "POP in flight").await;

    // Each message in flight was stored again (once per roll: never two copies of one message
    // in one segment), and is still in flight.
    let copies = pop_copies(&broker);
    for b in ["kept", "expires"] {
        let mut segments: Vec<i64> = copies
            .iter()
            .filter(|(_, _, body)| body == b)
            .map(|(_, phy, _)| phy / SEGMENT)
            .collect();
        assert!(!segments.is_empty(), "no copy of {b}: {copies:?}");
        let n = segments.len();
        segments.dedup();
        assert_eq!(
            segments.len(),
            n,
            "two copies of {b} in one roll: {copies:?}"
        );
    }
    assert_eq!(
        broker.inner().pop.in_flight(GROUP),
        vec![(POP_TOPIC.to_string(), 0, 2)]
    );
    // The disk is usable again: the copies let forced deletion free it.
    let started = Instant::now();
    while broker.inner().store.is_disk_full() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still full: {}%",
            used(&fs)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A crash between the copy and the ack; the restart replays the state from the copies.
    crash(broker).await;
    let broker = Broker::start(config(&root, ns.local_addr(), port))
        .await
        .expect("restart");
    let addr = broker.local_addr().to_string();
    // The handle from before the copy acks the message.
    ack_kept_after_restart(&client, &addr, popped_at, kept, &kept_handle).await;
    assert_eq!(
        broker.inner().pop.in_flight(GROUP),
        vec![(POP_TOPIC.to_string(), 0, 1)]
    );

    // The other one comes back once its invisible time is over, exactly once, not a copy.
    let back = only_expires_comes_back(&client, &addr, popped_at).await;
    assert_eq!(back.message.property(POP_COPY_OF), None);
    broker.shutdown().await;
    ns.shutdown().await;
    drop(fs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn undecided_half_messages_are_copied_forward_under_a_full_disk_and_keep_their_identity() {
    let Some(fs) = Tmpfs::mount_or_skip("48m") else {
        return;
    };
    let root = fs.dir.join("store");
    let ns = namesrv().await;
    let port = free_port();
    let broker = Broker::start(config(&root, ns.local_addr(), port))
        .await
        .expect("broker");
    let addr = broker.local_addr().to_string();
    let client = RemotingClient::new(ClientConfig::default());
    let api = MqClientApi::new(client.clone(), Duration::from_secs(5));
    api.create_topic(&addr, &TopicConfig::new(crate::transaction::TOPIC, 1))
        .await
        .expect("topic");
    let (c_off, c_phy) = prepare(&api, &addr, "committed-after-copy", "tg").await;
    let (k_off, k_phy) = prepare(&api, &addr, "checked-after-copy", "tg").await;
    assert!(c_phy < SEGMENT && k_phy < SEGMENT);

    fill_past_warning(&api, &addr, &fs, 70.0).await;
    wait_deleted(&broker, SEGMENT - 1, "undecided transactions").await;
    assert_eq!(broker.inner().transactions.pending_count(), 2);

    // The commit names the original offsets; the message is visible once.
    let started = Instant::now();
    let r = loop {
        let r = client
            .invoke(
                &addr,
                end(c_off, c_phy, sys_flag::TRANSACTION_COMMIT_TYPE, false),
                Duration::from_secs(5),
            )
            .await
            .expect("end");
        // The commit is an ordinary send: it waits for the disk to leave the full mark.
        if r.code != response_code::SERVICE_NOT_AVAILABLE
            || started.elapsed() > Duration::from_secs(20)
        {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    assert_eq!(visible(&broker), vec!["committed-after-copy".to_string()]);

    // A crash; after the restart the other one is checked back under its original offsets and
    // committed by the producer's answer; the first is not committed again.
    crash(broker).await;
    let mut c = config(&root, ns.local_addr(), port);
    c.transaction_timeout_ms = 300;
    c.transaction_check_interval_ms = 300;
    let broker = Broker::start(c).await.expect("restart");
    let addr = broker.local_addr().to_string();
    let r = client
        .invoke(
            &addr,
            end(c_off, c_phy, sys_flag::TRANSACTION_COMMIT_TYPE, false),
            Duration::from_secs(5),
        )
        .await
        .expect("end");
    assert_eq!(
        r.code,
        response_code::SYSTEM_ERROR,
        "decided before the crash: {:?}",
        r.remark
    );
    let (_producer, checks) = committing_producer(&addr, "tg", "producer-full-disk").await;
    let started = Instant::now();
    while broker.inner().transactions.pending_count() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never checked back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let checks = checks.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(
        checks.first().map(|(o, p, _)| (*o, *p)),
        Some((k_off, k_phy)),
        "the check names the original: {checks:?}"
    );
    let mut v = visible(&broker);
    v.sort();
    assert_eq!(
        v,
        vec![
            "checked-after-copy".to_string(),
            "committed-after-copy".to_string()
        ]
    );
    broker.shutdown().await;
    ns.shutdown().await;
    drop(fs);
}
