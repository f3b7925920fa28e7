//! Delayed and timed messages, and CONSUMER_SEND_MSG_BACK, against a real broker on loopback:
//! nothing arrives before its time and everything within about a second after; timers survive a
//! restart; the 3-day limit; sent-back messages go to the retry topic after their delay or to the
//! DLQ.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketraft_broker::store::FlushDiskType;
use rocketraft_broker::{Broker, BrokerConfig};
use rocketraft_common::consts::property;
use rocketraft_common::TopicConfig;
use rocketraft_nameserver::{NameServer, NamesrvConfig};
use rocketraft_remoting::api::{MqClientApi, SendRequest};
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::{ClientConfig, RemotingClient, RemotingCommand};

const TOPIC: &str = "Delayed";

fn free_port() -> u16 {
    rocketraft_common::net::free_loopback_port().expect("a free loopback port")
}

fn config(dir: &Path, namesrv: std::net::SocketAddr, port: u16) -> BrokerConfig {
    let mut c = BrokerConfig {
        listen: format!("127.0.0.1:{port}").parse().expect("addr"),
        namesrv_addr: namesrv.to_string(),
        ..BrokerConfig::default()
    };
    c.store.store_root = dir.to_path_buf();
    c.store.commitlog_segment_size = 1 << 20;
    c.store.flush_disk_type = FlushDiskType::SyncFlush;
    c.store.pretouch = false;
    c
}

async fn namesrv() -> NameServer {
    NameServer::start(NamesrvConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..NamesrvConfig::default()
    })
    .await
    .expect("namesrv")
}

fn api() -> MqClientApi {
    MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(5),
    )
}

async fn send(addr: &str, body: &str, key: &str, value: &str) -> i32 {
    let r = api()
        .send(
            addr,
            &SendRequest {
                producer_group: "pg".into(),
                topic: TOPIC.into(),
                queue_id: 0,
                body: Bytes::from(body.to_string()),
                properties: BTreeMap::from([(key.to_string(), value.to_string())]),
                ..SendRequest::default()
            },
        )
        .await
        .map(|r| r.code)
        .unwrap_or_else(|e| match e {
            rocketraft_remoting::api::ApiError::Refused(r) => r.code,
            other => panic!("send failed: {other}"),
        });
    r
}

/// Queue offsets of `topic`/0 that hold messages, by body.
fn bodies(b: &Broker, topic: &str) -> Vec<(String, i32)> {
    let store = &b.inner().store;
    (0..store.get_max_offset_in_queue(topic, 0))
        .filter_map(|o| store.get_commit_log_offset_in_queue(topic, 0, o))
        .filter_map(|phy| store.look_message_by_offset(phy))
        .map(|m| {
            (
                String::from_utf8_lossy(&m.message.body).to_string(),
                m.reconsume_times,
            )
        })
        .collect()
}

async fn arrival(b: &Broker, topic: &str, body: &str, limit: Duration) -> Instant {
    let started = Instant::now();
    loop {
        if bodies(b, topic).iter().any(|(x, _)| x == body) {
            return Instant::now();
        }
        assert!(started.elapsed() < limit, "{body} never arrived in {topic}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_messages_arrive_on_time_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = namesrv().await;
    let port = free_port();
    let broker = Broker::start(config(dir.path(), ns.local_addr(), port))
        .await
        .expect("broker");
    let addr = broker.local_addr().to_string();
    api()
        .create_topic(&addr, &TopicConfig::new(TOPIC, 1))
        .await
        .expect("topic");

    let sent = Instant::now();
    let now = rocketraft_common::time::now_ms();
    assert_eq!(
        send(&addr, "ms", property::TIMER_DELAY_MS, "1500").await,
        response_code::SUCCESS
    );
    assert_eq!(
        send(&addr, "sec", property::TIMER_DELAY_SEC, "1").await,
        response_code::SUCCESS
    );
    assert_eq!(
        send(
            &addr,
            "at",
            property::TIMER_DELIVER_MS,
            &(now + 2000).to_string()
        )
        .await,
        response_code::SUCCESS
    );
    assert_eq!(
        send(&addr, "level1", property::DELAY_TIME_LEVEL, "1").await,
        response_code::SUCCESS
    );
    assert_eq!(send(&addr, "now", "k", "v").await, response_code::SUCCESS);
    assert!(bodies(&broker, TOPIC).iter().any(|(b, _)| b == "now"));
    for (body, delay_ms) in [
        ("sec", 1000u64),
        ("level1", 1000),
        ("ms", 1500),
        ("at", 2000),
    ] {
        let at = arrival(&broker, TOPIC, body, Duration::from_secs(10)).await - sent;
        assert!(
            at >= Duration::from_millis(delay_ms - 50),
            "{body} early: {at:?}"
        );
        assert!(
            at <= Duration::from_millis(delay_ms + 1000),
            "{body} late: {at:?}"
        );
    }
    // The 3-day limit.
    assert_eq!(
        send(
            &addr,
            "far",
            property::TIMER_DELAY_SEC,
            &(4 * 24 * 3600).to_string()
        )
        .await,
        response_code::MESSAGE_ILLEGAL
    );

    // A timer pending at shutdown fires after the restart, once.
    assert_eq!(
        send(&addr, "restart", property::TIMER_DELAY_MS, "2000").await,
        response_code::SUCCESS
    );
    let sent = Instant::now();
    broker.shutdown().await;
    let broker = Broker::start(config(dir.path(), ns.local_addr(), port))
        .await
        .expect("restart");
    let at = arrival(&broker, TOPIC, "restart", Duration::from_secs(10)).await - sent;
    assert!(
        at >= Duration::from_millis(1950),
        "early after restart: {at:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = bodies(&broker, TOPIC);
    for body in ["ms", "sec", "at", "level1", "now", "restart"] {
        assert_eq!(
            all.iter().filter(|(b, _)| b == body).count(),
            1,
            "{body} delivered once"
        );
    }
    broker.shutdown().await;
    ns.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_back_messages_are_retried_after_a_delay_or_dead_lettered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = namesrv().await;
    let broker = Broker::start(config(dir.path(), ns.local_addr(), free_port()))
        .await
        .expect("broker");
    let addr = broker.local_addr().to_string();
    api()
        .create_topic(&addr, &TopicConfig::new(TOPIC, 1))
        .await
        .expect("topic");
    for body in ["retry-me", "dlq-me", "exhausted"] {
        assert_eq!(
            send(&addr, body, "KEYS", body).await,
            response_code::SUCCESS
        );
    }
    let store = broker.inner().store.clone();
    let phy = |o: i64| {
        store
            .get_commit_log_offset_in_queue(TOPIC, 0, o)
            .expect("offset")
    };
    let client = RemotingClient::new(ClientConfig::default());
    let back = |offset: i64, level: i32, max: i32| {
        RemotingCommand::request(request_code::CONSUMER_SEND_MSG_BACK)
            .with_ext("offset", offset)
            .with_ext("group", "cg")
            .with_ext("delayLevel", level)
            .with_ext("originMsgId", "ORIGIN")
            .with_ext("maxReconsumeTimes", max)
    };
    let sent = Instant::now();
    let r = client
        .invoke(&addr, back(phy(0), 1, 16), Duration::from_secs(5))
        .await
        .expect("back");
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    let r = client
        .invoke(&addr, back(phy(1), -1, 16), Duration::from_secs(5))
        .await
        .expect("back");
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    let r = client
        .invoke(&addr, back(phy(2), 1, 0), Duration::from_secs(5))
        .await
        .expect("back");
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    // Delay level 1 = 1 s, into %RETRY%cg with the delivery counted.
    let at = arrival(&broker, "%RETRY%cg", "retry-me", Duration::from_secs(10)).await - sent;
    assert!(at >= Duration::from_millis(950), "retried early: {at:?}");
    let retried = bodies(&broker, "%RETRY%cg");
    assert_eq!(retried, vec![("retry-me".to_string(), 1)]);
    let dlq = bodies(&broker, "%DLQ%cg");
    assert_eq!(dlq.len(), 2, "{dlq:?}");
    let m = store
        .look_message_by_offset(
            store
                .get_commit_log_offset_in_queue("%DLQ%cg", 0, 0)
                .expect("dlq"),
        )
        .expect("dlq message");
    assert_eq!(m.message.property(property::RETRY_TOPIC), Some(TOPIC));
    assert_eq!(
        m.message.property(property::ORIGIN_MESSAGE_ID),
        Some("ORIGIN")
    );
    assert_eq!(m.message.property("KEYS"), Some("dlq-me"));
    // A bad offset is a clear error and stores nothing.
    let r = client
        .invoke(&addr, back(123_456_789, 1, 16), Duration::from_secs(5))
        .await
        .expect("back");
    assert_eq!(r.code, response_code::SYSTEM_ERROR);
    broker.shutdown().await;
    ns.shutdown().await;
}
