//! POP of one queue by concurrent consumers, against a real broker on loopback: a POP reserves
//! its messages under the queue's lock and stores their checkpoint after releasing it (shared
//! with the other POPs' checkpoints), so consumers of one queue overlap. No message may be
//! handed out twice, and a message whose POP was answered must survive a crash (the store left
//! as by `kill -9`) and come back after its invisible time, not before.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketraft_broker::store::FlushDiskType;
use rocketraft_broker::{Broker, BrokerConfig};
use rocketraft_common::message::MessageExt;
use rocketraft_common::TopicConfig;
use rocketraft_nameserver::{NameServer, NamesrvConfig};
use rocketraft_remoting::api::{MqClientApi, SendRequest};
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{ClientConfig, RemotingClient};

use crate::pop_copy::body;

const TOPIC: &str = "PopConcurrent";
/// Every message goes to this queue; consumers pop only it.
const QUEUE: i32 = 1;

fn config(dir: &Path, namesrv: std::net::SocketAddr, port: u16) -> BrokerConfig {
    let mut c = BrokerConfig {
        listen: format!("127.0.0.1:{port}").parse().expect("addr"),
        namesrv_addr: namesrv.to_string(),
        ..BrokerConfig::default()
    };
    c.store.store_root = dir.to_path_buf();
    c.store.commitlog_segment_size = 1 << 20;
    c.store.flush_disk_type = FlushDiskType::AsyncFlush;
    c.store.pretouch = false;
    c
}

struct Setup {
    namesrv: NameServer,
    broker: Option<Broker>,
    addr: String,
    port: u16,
    api: Arc<MqClientApi>,
}

async fn setup(dir: &Path) -> Setup {
    let namesrv = NameServer::start(NamesrvConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..NamesrvConfig::default()
    })
    .await
    .expect("namesrv");
    let port = rocketraft_common::net::free_loopback_port().expect("a free loopback port");
    let broker = Broker::start(config(dir, namesrv.local_addr(), port))
        .await
        .expect("broker");
    let addr = broker.local_addr().to_string();
    let api = Arc::new(MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(10),
    ));
    api.create_topic(&addr, &TopicConfig::new(TOPIC, 4))
        .await
        .expect("topic");
    Setup {
        namesrv,
        broker: Some(broker),
        addr,
        port,
        api,
    }
}

async fn send(s: &Setup, n: usize) {
    for i in 0..n {
        let r = s
            .api
            .send(
                &s.addr,
                &SendRequest {
                    producer_group: "pg".into(),
                    topic: TOPIC.into(),
                    queue_id: QUEUE,
                    body: Bytes::from(format!("m{i}")),
                    properties: BTreeMap::new(),
                    ..SendRequest::default()
                },
            )
            .await
            .expect("send");
        assert_eq!(r.code, response_code::SUCCESS);
    }
}

/// `consumers` tasks popping `QUEUE` (`max` per POP) until `total` messages were handed out
/// altogether or 20 s passed; answers every message each task got.
async fn pop_concurrently(
    s: &Setup,
    group: &str,
    consumers: usize,
    max: i32,
    invisible_ms: i64,
    total: usize,
) -> Vec<MessageExt> {
    let got = Arc::new(std::sync::Mutex::new(Vec::<MessageExt>::new()));
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let (api, addr, group, got) = (
            s.api.clone(),
            s.addr.clone(),
            group.to_string(),
            got.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            while got.lock().expect("lock").len() < total
                && started.elapsed() < Duration::from_secs(20)
            {
                let msgs = api
                    .pop(&addr, &group, TOPIC, QUEUE, max, invisible_ms, 0, false)
                    .await
                    .expect("pop");
                if msgs.is_empty() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                got.lock().expect("lock").extend(msgs);
            }
        }));
    }
    for t in tasks {
        t.await.expect("consumer task");
    }
    let out = got.lock().expect("lock").clone();
    out
}

/// The queue offsets handed out, each once (fails on a duplicate).
fn offsets_once(msgs: &[MessageExt]) -> BTreeSet<i64> {
    let mut seen = BTreeSet::new();
    for m in msgs {
        assert!(
            seen.insert(m.queue_offset),
            "offset {} ({}) handed out twice",
            m.queue_offset,
            body(m)
        );
    }
    seen
}

/// Eight consumers pop one queue of 600 messages, 4 at a time, concurrently: every message
/// is handed out exactly once, each acks, and nothing comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_consumers_of_one_queue_never_get_the_same_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = setup(dir.path()).await;
    send(&s, 600).await;
    let got = pop_concurrently(&s, "gc", 8, 4, 60_000, 600).await;
    let offsets = offsets_once(&got);
    assert_eq!(offsets, (0..600).collect::<BTreeSet<i64>>());
    for m in &got {
        s.api
            .ack(&s.addr, "gc", TOPIC, m)
            .await
            .expect("every handle acks once");
    }
    let more = s
        .api
        .pop(&s.addr, "gc", TOPIC, QUEUE, 32, 60_000, 0, false)
        .await
        .expect("pop");
    assert!(more.is_empty(), "{} messages came again", more.len());
    s.broker.expect("broker").shutdown().await;
    drop(s.namesrv);
}

/// Concurrent POPs of one queue are answered, then the broker crashes (its store left as by
/// `kill -9`). After the restart the answered messages stay invisible until their invisible
/// time has passed (their checkpoints were stored before the answers), then come back; the
/// rest of the queue is popped as usual; nothing is lost, nothing handed out twice before its
/// time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pops_answered_before_a_crash_come_back_after_their_invisible_time() {
    // Long enough that a restart on a loaded 2-core CI machine fits inside it.
    const INVISIBLE_MS: i64 = 10_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = setup(dir.path()).await;
    send(&s, 200).await;
    // Every answer's invisible time runs from after this instant.
    let pops_started = Instant::now();
    let answered = pop_concurrently(&s, "gk", 6, 8, INVISIBLE_MS, 120).await;
    let popped_at = Instant::now();
    offsets_once(&answered);
    assert!(answered.len() >= 120, "popped {}", answered.len());

    let broker = s.broker.take().expect("broker");
    broker.inner().store.crash_for_test();
    broker.shutdown().await;
    let broker = Broker::start(config(dir.path(), s.namesrv.local_addr(), s.port))
        .await
        .expect("restart");
    s.addr = broker.local_addr().to_string();
    s.broker = Some(broker);

    // Before the invisible time: only messages no answer carried.
    let mut rest = Vec::new();
    loop {
        let msgs = s
            .api
            .pop(&s.addr, "gk", TOPIC, -1, 32, 60_000, 0, false)
            .await
            .expect("pop after the restart");
        if msgs.is_empty() {
            break;
        }
        rest.extend(msgs);
    }
    assert!(
        popped_at.elapsed() < Duration::from_millis(INVISIBLE_MS as u64),
        "the restart took longer than the invisible time; the test proves nothing"
    );
    let answered_bodies: BTreeSet<String> = answered.iter().map(body).collect();
    for m in &rest {
        assert!(
            !answered_bodies.contains(&body(m)),
            "{} handed out again before its invisible time",
            body(m)
        );
    }
    offsets_once(&rest);
    let all: BTreeSet<String> = answered.iter().chain(&rest).map(body).collect();
    assert_eq!(
        all,
        (0..200).map(|i| format!("m{i}")).collect::<BTreeSet<_>>(),
        "messages lost"
    );

    // After it: each answered message comes back (from the retry topic), once.
    let started = Instant::now();
    let mut back = Vec::new();
    while back.len() < answered.len() && started.elapsed() < Duration::from_secs(30) {
        let msgs = s
            .api
            .pop(&s.addr, "gk", TOPIC, -1, 32, 60_000, 1000, false)
            .await
            .expect("pop");
        if !msgs.is_empty() {
            // Even the earliest answered POP was sent after `pops_started`.
            assert!(
                pops_started.elapsed() >= Duration::from_millis(INVISIBLE_MS as u64),
                "came back before the invisible time"
            );
        }
        back.extend(msgs);
    }
    let mut want: Vec<String> = answered.iter().map(body).collect();
    want.sort();
    let mut got: Vec<String> = back.iter().map(body).collect();
    got.sort();
    assert_eq!(got, want, "the messages answered before the crash, revived");
    s.broker.take().expect("broker").shutdown().await;
    drop(s.namesrv);
}
