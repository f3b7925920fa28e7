//! Transactional messages against a real broker on loopback: commit delivers, rollback never
//! does, a second decision is refused, an undecided half message is checked back with a live
//! producer (which commits it), and one nobody answers is rolled back after the maximum checks.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketraft_broker::store::FlushDiskType;
use rocketraft_broker::{Broker, BrokerConfig};
use rocketraft_common::consts::{property, sys_flag};
use rocketraft_common::message::decode_message;
use rocketraft_common::protocol::{HeartbeatData, ProducerData};
use rocketraft_common::TopicConfig;
use rocketraft_nameserver::{NameServer, NamesrvConfig};
use rocketraft_remoting::api::{MqClientApi, SendRequest};
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::server::processor_fn;
use rocketraft_remoting::{ClientConfig, RemotingClient, RemotingCommand};

const TOPIC: &str = "Tx";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

async fn start(dir: &Path) -> (NameServer, Broker) {
    let ns = NameServer::start(NamesrvConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..NamesrvConfig::default()
    })
    .await
    .expect("namesrv");
    let mut c = BrokerConfig {
        listen: format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
        namesrv_addr: ns.local_addr().to_string(),
        transaction_timeout_ms: 300,
        transaction_check_interval_ms: 300,
        transaction_check_max: 3,
        ..BrokerConfig::default()
    };
    c.store.store_root = dir.to_path_buf();
    c.store.commitlog_segment_size = 1 << 20;
    c.store.flush_disk_type = FlushDiskType::SyncFlush;
    c.store.pretouch = false;
    let broker = Broker::start(c).await.expect("broker");
    (ns, broker)
}

fn visible(b: &Broker) -> Vec<String> {
    let store = &b.inner().store;
    (0..store.get_max_offset_in_queue(TOPIC, 0))
        .filter_map(|o| store.get_commit_log_offset_in_queue(TOPIC, 0, o))
        .filter_map(|phy| store.look_message_by_offset(phy))
        .map(|m| String::from_utf8_lossy(&m.message.body).to_string())
        .collect()
}

/// Sends a prepared message; returns (half queue offset, commit log offset).
async fn prepare(api: &MqClientApi, addr: &str, body: &str, group: &str) -> (i64, i64) {
    let r = api
        .send(
            addr,
            &SendRequest {
                producer_group: group.into(),
                topic: TOPIC.into(),
                queue_id: 0,
                body: Bytes::from(body.to_string()),
                properties: BTreeMap::from([
                    (
                        property::TRANSACTION_PREPARED.to_string(),
                        "true".to_string(),
                    ),
                    (property::PRODUCER_GROUP.to_string(), group.to_string()),
                ]),
                sys_flag: sys_flag::TRANSACTION_PREPARED_TYPE,
                ..SendRequest::default()
            },
        )
        .await
        .expect("prepare");
    assert_eq!(r.code, response_code::SUCCESS);
    let (_, phy) = rocketraft_common::message::decode_offset_msg_id(&r.msg_id).expect("offset id");
    (r.queue_offset, phy)
}

fn end(offset: i64, phy: i64, decision: i32, from_check: bool) -> RemotingCommand {
    RemotingCommand::request(request_code::END_TRANSACTION)
        .with_ext("producerGroup", "tg")
        .with_ext("tranStateTableOffset", offset)
        .with_ext("commitLogOffset", phy)
        .with_ext("commitOrRollback", decision)
        .with_ext("fromTransactionCheck", from_check)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commit_delivers_rollback_never_and_undecided_are_checked_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ns, broker) = start(dir.path()).await;
    let addr = broker.local_addr().to_string();
    let client = RemotingClient::new(ClientConfig::default());
    let api = MqClientApi::new(client.clone(), Duration::from_secs(5));
    api.create_topic(&addr, &TopicConfig::new(TOPIC, 1))
        .await
        .expect("topic");

    // Commit and rollback.
    let (c_off, c_phy) = prepare(&api, &addr, "commit-me", "other").await;
    let (r_off, r_phy) = prepare(&api, &addr, "roll-me-back", "other").await;
    assert!(visible(&broker).is_empty(), "half messages are invisible");
    let r = client
        .invoke(
            &addr,
            end(c_off, c_phy, sys_flag::TRANSACTION_COMMIT_TYPE, false),
            Duration::from_secs(5),
        )
        .await
        .expect("end");
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    let r = client
        .invoke(
            &addr,
            end(r_off, r_phy, sys_flag::TRANSACTION_ROLLBACK_TYPE, false),
            Duration::from_secs(5),
        )
        .await
        .expect("end");
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    assert_eq!(visible(&broker), vec!["commit-me".to_string()]);
    // A second decision is refused and changes nothing.
    let again = client
        .invoke(
            &addr,
            end(r_off, r_phy, sys_flag::TRANSACTION_COMMIT_TYPE, false),
            Duration::from_secs(5),
        )
        .await
        .expect("end");
    assert_eq!(again.code, response_code::SYSTEM_ERROR);
    assert_eq!(visible(&broker), vec!["commit-me".to_string()]);

    // A producer of group "tg" that answers check-backs with COMMIT on a separate connection.
    let producer = RemotingClient::new(ClientConfig::default());
    let answer = RemotingClient::new(ClientConfig::default());
    let broker_addr = addr.clone();
    let checked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = checked.clone();
    producer.set_request_handler(processor_fn(move |_ctx, req: RemotingCommand| {
        let (answer, broker_addr, seen) = (answer.clone(), broker_addr.clone(), seen.clone());
        async move {
            if req.code == request_code::CHECK_TRANSACTION_STATE {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (m, _) = decode_message(&req.body).expect("check body is the message");
                assert_eq!(m.message.topic, TOPIC, "the check shows the real topic");
                let offset: i64 = req
                    .ext("tranStateTableOffset")
                    .expect("offset")
                    .parse()
                    .expect("n");
                let phy: i64 = req.ext("commitLogOffset").expect("phy").parse().expect("n");
                let _ = answer
                    .invoke(
                        &broker_addr,
                        end(offset, phy, sys_flag::TRANSACTION_COMMIT_TYPE, true),
                        Duration::from_secs(5),
                    )
                    .await;
            }
            None
        }
    }));
    let hb = HeartbeatData {
        client_id: "producer-1".into(),
        producer_data_set: vec![ProducerData {
            group_name: "tg".into(),
        }],
        consumer_data_set: vec![],
    };
    MqClientApi::new(producer.clone(), Duration::from_secs(5))
        .heartbeat(&addr, &hb)
        .await
        .expect("heartbeat");
    let started = Instant::now();
    prepare(&api, &addr, "decided-by-check", "tg").await;
    loop {
        if visible(&broker).contains(&"decided-by-check".to_string()) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "never checked back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "checked before the timeout"
    );
    assert!(checked.load(std::sync::atomic::Ordering::SeqCst) >= 1);

    // A half message whose group has no producer is rolled back after the maximum checks.
    prepare(&api, &addr, "orphan", "nobody").await;
    let started = Instant::now();
    while broker.inner().transactions.pending_count() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "orphan never rolled back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!visible(&broker).contains(&"orphan".to_string()));

    // Restart: decided transactions stay decided, nothing is delivered twice.
    broker.shutdown().await;
    let (ns2, broker) = start(dir.path()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut v = visible(&broker);
    v.sort();
    assert_eq!(
        v,
        vec!["commit-me".to_string(), "decided-by-check".to_string()]
    );
    assert_eq!(broker.inner().transactions.pending_count(), 0);
    broker.shutdown().await;
    ns.shutdown().await;
    ns2.shutdown().await;
}
