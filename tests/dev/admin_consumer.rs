//! `rocketraft admin consumer progress` and `rocketraft admin message dlq` against the real
//! `rocketraft dev` binary, after POP consumption with messages in flight and a message handed
//! back to the dead-letter queue.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use rocketraft_common::consts::property;
use rocketraft_common::message::decode_messages;
use rocketraft_common::TopicConfig;
use rocketraft_remoting::api::{MqClientApi, SendRequest};
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::{ClientConfig, RemotingClient, RemotingCommand};

use crate::pop_copy::{ack, handle};
use crate::support::{admin, free_port, Dev};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_and_dlq_after_pop() {
    let _turn = crate::support::file_turn(module_path!());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut dev = Dev::start(dir.path(), free_port(), free_port(), &[]);
    let client = RemotingClient::new(ClientConfig::default());
    let api = MqClientApi::new(client.clone(), Duration::from_secs(5));
    api.create_topic(&dev.broker, &TopicConfig::new("Progress", 1))
        .await
        .expect("topic");
    for i in 0..10 {
        let r = api
            .send(
                &dev.broker,
                &SendRequest {
                    producer_group: "pg".into(),
                    topic: "Progress".into(),
                    queue_id: 0,
                    body: Bytes::from(format!("body-{i}")),
                    properties: BTreeMap::from([(property::KEYS.to_string(), format!("key-{i}"))]),
                    ..SendRequest::default()
                },
            )
            .await
            .expect("send");
        assert_eq!(r.code, response_code::SUCCESS);
    }
    // POP 4, ack 2: the group's offset stops at the first one still in flight.
    let r = client
        .invoke(
            &dev.broker,
            RemotingCommand::request(request_code::POP_MESSAGE)
                .with_ext("consumerGroup", "cg")
                .with_ext("topic", "Progress")
                .with_ext("queueId", 0)
                .with_ext("maxMsgNums", 4)
                .with_ext("invisibleTime", 60_000),
            Duration::from_secs(5),
        )
        .await
        .expect("pop");
    let popped = decode_messages(&r.body).expect("body");
    assert_eq!(popped.len(), 4);
    for m in &popped[..2] {
        let r = ack(&client, &dev.broker, "cg", "Progress", m, &handle(m)).await;
        assert_eq!(r.code, response_code::SUCCESS);
    }
    let progress = admin(
        &dev.namesrv,
        &[
            "consumer", "progress", "--group", "cg", "--topic", "Progress", "--json",
        ],
    );
    let rows: serde_json::Value = serde_json::from_str(&progress).expect("json");
    let row = &rows[0];
    assert_eq!(row["brokerOffset"], 10, "{progress}");
    assert_eq!(row["consumerOffset"], 2, "{progress}");
    assert_eq!(row["lag"], 8, "{progress}");
    assert_eq!(row["inFlight"], 2, "{progress}");
    let table = admin(&dev.namesrv, &["consumer", "progress", "--group", "cg"]);
    assert!(table.contains("total lag: 8"), "{table}");

    // Hand one message back with delay level -1: straight to %DLQ%cg, listed by the admin tool.
    let r = client
        .invoke(
            &dev.broker,
            RemotingCommand::request(request_code::CONSUMER_SEND_MSG_BACK)
                .with_ext("offset", popped[2].commit_log_offset)
                .with_ext("group", "cg")
                .with_ext("delayLevel", -1)
                .with_ext("originMsgId", "ORIGIN-2"),
            Duration::from_secs(5),
        )
        .await
        .expect("send back");
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    let dlq = admin(&dev.namesrv, &["message", "dlq", "--group", "cg"]);
    assert!(dlq.contains("1 message(s) in %DLQ%cg"), "{dlq}");
    assert!(dlq.contains("origin ORIGIN-2"), "{dlq}");
    assert!(dlq.contains("topic Progress"), "{dlq}");
    assert!(dlq.contains("keys key-2"), "{dlq}");
    let _ = dev.child.kill();
    let _ = dev.child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pop_in_flight_survives_kill_9() {
    let _turn = crate::support::file_turn(module_path!());
    let dir = tempfile::tempdir().expect("tempdir");
    let (ns_port, broker_port) = (free_port(), free_port());
    let mut dev = Dev::start(dir.path(), ns_port, broker_port, &["--flush", "SYNC_FLUSH"]);
    let client = RemotingClient::new(ClientConfig::default());
    let api = MqClientApi::new(client.clone(), Duration::from_secs(5));
    api.create_topic(&dev.broker, &TopicConfig::new("Crash", 2))
        .await
        .expect("topic");
    for i in 0..20 {
        let r = api
            .send(
                &dev.broker,
                &SendRequest {
                    producer_group: "pg".into(),
                    topic: "Crash".into(),
                    queue_id: i % 2,
                    body: Bytes::from(format!("c{i}")),
                    ..SendRequest::default()
                },
            )
            .await
            .expect("send");
        assert_eq!(r.code, response_code::SUCCESS);
    }
    let popped = api
        .pop(&dev.broker, "kg", "Crash", -1, 32, 2000, 0, false)
        .await
        .expect("pop");
    assert_eq!(popped.len(), 20);
    let (acked, pending) = popped.split_at(8);
    for m in acked {
        api.ack(&dev.broker, "kg", "Crash", m).await.expect("ack");
    }
    // SAFETY: plain syscall on our child.
    unsafe { libc::kill(dev.child.id() as libc::pid_t, libc::SIGKILL) };
    let _ = dev.child.wait();
    let mut dev = Dev::start(dir.path(), ns_port, broker_port, &["--flush", "SYNC_FLUSH"]);
    let mut seen = std::collections::BTreeSet::new();
    let started = std::time::Instant::now();
    let want: std::collections::BTreeSet<String> = pending
        .iter()
        .map(|m| String::from_utf8_lossy(&m.message.body).to_string())
        .collect();
    while !want.is_subset(&seen) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "lost after kill -9: {:?}",
            want.difference(&seen).collect::<Vec<_>>()
        );
        for m in api
            .pop(&dev.broker, "kg", "Crash", -1, 32, 60_000, 1000, false)
            .await
            .unwrap_or_default()
        {
            let b = String::from_utf8_lossy(&m.message.body).to_string();
            assert!(
                !acked.iter().any(|a| a.message.body == m.message.body),
                "an acknowledged message came back: {b}"
            );
            seen.insert(b);
        }
    }
    let _ = dev.child.kill();
    let _ = dev.child.wait();
}

async fn pop_once(client: &RemotingClient, broker: &str, group: &str, topic: &str) -> Vec<String> {
    let r = client
        .invoke(
            broker,
            RemotingCommand::request(request_code::POP_MESSAGE)
                .with_ext("consumerGroup", group)
                .with_ext("topic", topic)
                .with_ext("queueId", -1)
                .with_ext("maxMsgNums", 8)
                .with_ext("invisibleTime", 1000)
                .with_ext("pollTime", 0),
            Duration::from_secs(5),
        )
        .await
        .expect("pop");
    if r.code != response_code::SUCCESS {
        return Vec::new();
    }
    decode_messages(&r.body)
        .expect("body")
        .iter()
        .map(|m| String::from_utf8_lossy(&m.message.body).into_owned())
        .collect()
}

/// A POP consumer's dead letter (popped and never acked until its retries ran out) is resent
/// by default to the group's POP retry topic of its original topic, where the next POP of that
/// topic finds it; `--to push` sends it to %RETRY%GROUP instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pop_dead_letters_are_resent_where_pop_consumers_read() {
    let _turn = crate::support::file_turn(module_path!());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut dev = Dev::start(dir.path(), free_port(), free_port(), &[]);
    let client = RemotingClient::new(ClientConfig::default());
    let api = MqClientApi::new(client.clone(), Duration::from_secs(5));
    let (topic, group) = ("PopDead", "pop-dead-cg");
    api.create_topic(&dev.broker, &TopicConfig::new(topic, 1))
        .await
        .expect("topic");
    admin(
        &dev.namesrv,
        &["consumer", "create-group", group, "--retry-max-times", "1"],
    );
    let r = api
        .send(
            &dev.broker,
            &SendRequest {
                producer_group: "pg".into(),
                topic: topic.into(),
                queue_id: 0,
                body: Bytes::from_static(b"dead-pop"),
                ..SendRequest::default()
            },
        )
        .await
        .expect("send");
    assert_eq!(r.code, response_code::SUCCESS);
    // Popped and never acked: back once through the POP retry topic, then into the DLQ.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        pop_once(&client, &dev.broker, group, topic).await;
        let dlq = admin(&dev.namesrv, &["message", "dlq", "--group", group]);
        if dlq.contains("1 message(s) in %DLQ%pop-dead-cg") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never dead-lettered: {dlq}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let pop_retry = format!("%RETRY%{group}_{topic}");
    let out = admin(
        &dev.namesrv,
        &["message", "dlq", "--group", group, "--resend-all"],
    );
    assert!(
        out.contains(&format!("1 message(s) resent to {pop_retry}")),
        "{out}"
    );
    // The next POPs of the topic find it again.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if pop_once(&client, &dev.broker, group, topic)
            .await
            .contains(&"dead-pop".to_string())
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the resent message never came back to POP"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = admin(
        &dev.namesrv,
        &[
            "message",
            "dlq",
            "--group",
            group,
            "--resend-all",
            "--to",
            "push",
        ],
    );
    assert!(
        out.contains(&format!("1 message(s) resent to %RETRY%{group}\n")),
        "{out}"
    );
    let bad = crate::support::admin_output(
        &dev.namesrv,
        &[
            "message",
            "dlq",
            "--group",
            group,
            "--resend-all",
            "--to",
            "nowhere",
        ],
    );
    assert!(!bad.status.success());
    let _ = dev.child.kill();
    let _ = dev.child.wait();
}
