//! `rocketraft admin topic status` and `rocketraft admin topic stats` against the real
//! `rocketraft dev` binary after real sends and a pull: exact offsets per queue with their last
//! store time, and the puts and gets of the last minute, hour and day.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use rocketraft_common::consts::pull_sys_flag;
use rocketraft_common::time::now_ms;
use rocketraft_common::TopicConfig;
use rocketraft_remoting::api::{MqClientApi, PullRequest, PullStatus, SendRequest};
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{ClientConfig, RemotingClient};

use crate::support::{admin, admin_output, free_port, Dev};

const TOPIC: &str = "StatusTopic";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_status_and_stats_show_offsets_puts_and_gets() {
    let _turn = crate::support::file_turn(module_path!());
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start(dir.path(), free_port(), free_port(), &["--no-console"]);
    let api = MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(5),
    );
    api.create_topic(&dev.broker, &TopicConfig::new(TOPIC, 2))
        .await
        .expect("topic");
    // 5 messages: 3 in queue 0, 2 in queue 1.
    let before = now_ms();
    for i in 0..5 {
        let r = api
            .send(
                &dev.broker,
                &SendRequest {
                    producer_group: "pg".into(),
                    topic: TOPIC.into(),
                    queue_id: i % 2,
                    body: Bytes::from(format!("body-{i}")),
                    properties: BTreeMap::new(),
                    ..SendRequest::default()
                },
            )
            .await
            .expect("send");
        assert_eq!(r.code, response_code::SUCCESS);
    }
    let after = now_ms();
    // The group takes queue 0's three.
    let pulled = api
        .pull(
            &dev.broker,
            &PullRequest {
                consumer_group: "cg".into(),
                topic: TOPIC.into(),
                queue_id: 0,
                queue_offset: 0,
                max_msg_nums: 32,
                sys_flag: pull_sys_flag::SUBSCRIPTION,
                commit_offset: -1,
                suspend_timeout_ms: 0,
                subscription: Some("*".into()),
            },
        )
        .await
        .expect("pull");
    assert_eq!(pulled.status, PullStatus::Found);
    assert_eq!(pulled.messages.len(), 3);

    // The route reaches the NameServer with the broker's next registration.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !admin_output(&dev.namesrv, &["topic", "route", TOPIC])
        .status
        .success()
    {
        assert!(std::time::Instant::now() < deadline, "no route for {TOPIC}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let status = admin(
        &dev.namesrv,
        &["topic", "status", "--topic", TOPIC, "--json"],
    );
    let rows: serde_json::Value = serde_json::from_str(&status).expect("json");
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{status}");
    for (row, max) in rows.iter().zip([3, 2]) {
        assert_eq!(row["brokerName"], "broker-a", "{status}");
        assert_eq!(row["brokerAddr"], dev.broker.as_str(), "{status}");
        assert_eq!(row["minOffset"], 0, "{status}");
        assert_eq!(row["maxOffset"], max, "{status}");
        let last = row["lastUpdateTimestamp"].as_i64().expect("a time");
        assert!(
            (before..=after).contains(&last),
            "{last} not in {before}..={after}"
        );
    }
    assert_eq!(rows[1]["queueId"], 1);
    let table = admin(&dev.namesrv, &["topic", "status", "--topic", TOPIC]);
    let line = table
        .lines()
        .find(|l| l.starts_with("broker-a") && l.split_whitespace().nth(1) == Some("0"))
        .unwrap_or_else(|| panic!("queue 0 listed: {table}"));
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cells[..5], ["broker-a", "0", "0", "3", "3"], "{table}");
    assert!(line.ends_with(" UTC"), "{table}");
    assert!(
        table.contains("2 queue(s) on 1 master(s), 5 message(s) stored"),
        "{table}"
    );

    let stats = admin(
        &dev.namesrv,
        &[
            "topic", "stats", "--topic", TOPIC, "--group", "cg", "--json",
        ],
    );
    let rows: serde_json::Value = serde_json::from_str(&stats).expect("json");
    let puts = &rows[0];
    assert_eq!(puts["statsName"], "TOPIC_PUT_NUMS", "{stats}");
    assert_eq!(puts["statsKey"], TOPIC, "{stats}");
    for window in ["statsMinute", "statsHour", "statsDay"] {
        assert_eq!(puts[window]["sum"], 5, "{window}: {stats}");
        assert!(puts[window]["tps"].as_f64().expect("tps") > 0.0, "{stats}");
    }
    let gets = &rows[1];
    assert_eq!(gets["statsName"], "GROUP_GET_NUMS", "{stats}");
    assert_eq!(gets["statsKey"], "StatusTopic@cg", "{stats}");
    assert_eq!(gets["statsMinute"]["sum"], 3, "{stats}");
    assert_eq!(gets["statsDay"]["sum"], 3, "{stats}");
    let table = admin(
        &dev.namesrv,
        &["topic", "stats", "--topic", TOPIC, "--group", "cg"],
    );
    assert!(
        table.contains("StatusTopic: put 5 message(s) in the last minute"),
        "{table}"
    );
    assert!(
        table.contains("StatusTopic@cg: got 3 message(s) in the last minute"),
        "{table}"
    );
    // A group that took nothing: zeros, not an error.
    let idle = admin(
        &dev.namesrv,
        &[
            "topic", "stats", "--topic", TOPIC, "--group", "idle", "--json",
        ],
    );
    let rows: serde_json::Value = serde_json::from_str(&idle).expect("json");
    assert_eq!(rows[1]["statsMinute"]["sum"], 0, "{idle}");

    // An unknown topic: a clear failure naming it.
    let out = admin_output(&dev.namesrv, &["topic", "status", "--topic", "NoSuchTopic"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no route for topic NoSuchTopic"), "{err}");
}
