//! The mqadmin verbs of issue 17 item 9 against the real `rocketraft dev` binary: `admin topic
//! list|update-perm|delete`, `admin group list|delete`, `admin consumer status` (with a live
//! client that answers the relayed GET_CONSUMER_RUNNING_INFO) and `admin broker epoch` (refused
//! outside controller mode), each with `--json`, and their refusals of bad input.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use rocketraft_common::protocol::{ConsumerData, HeartbeatData, SubscriptionData};
use rocketraft_remoting::api::{ApiError, MqClientApi, SendRequest};
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::{processor_fn, ClientConfig, RemotingClient};

use crate::support::{admin, admin_output, free_port, Dev};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn failed(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8_lossy(&out.stderr).to_string()
}

async fn send(api: &MqClientApi, broker: &str, topic: &str) -> i32 {
    api.send(
        broker,
        &SendRequest {
            producer_group: "groups_pg".into(),
            topic: topic.into(),
            queue_id: 0,
            body: Bytes::from_static(b"x"),
            properties: BTreeMap::new(),
            ..SendRequest::default()
        },
    )
    .await
    .map_or_else(
        |e| match e {
            ApiError::Refused(r) => r.code,
            other => panic!("send: {other}"),
        },
        |r| r.code,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_groups_consumer_status_and_epochs_from_the_cli() {
    let _turn = crate::support::file_turn(module_path!());
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start(dir.path(), free_port(), free_port(), &["--no-console"]);
    let api = MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(5),
    );
    admin(
        &dev.namesrv,
        &["topic", "create", "AdminT", "--queues", "2"],
    );
    let topics = json(&admin(&dev.namesrv, &["topic", "list", "--json"]));
    assert!(
        topics
            .as_array()
            .expect("a list")
            .iter()
            .any(|t| t == "AdminT"),
        "{topics}"
    );

    // Read only: sends are refused until the permission is back.
    let changed = json(&admin(
        &dev.namesrv,
        &[
            "topic",
            "update-perm",
            "--topic",
            "AdminT",
            "--perm",
            "4",
            "--json",
        ],
    ));
    assert_eq!(changed[0]["brokerName"], "broker-a", "{changed}");
    assert_eq!(changed[0]["perm"], 4, "{changed}");
    assert_eq!(
        send(&api, &dev.broker, "AdminT").await,
        response_code::NO_PERMISSION
    );
    let text = admin(
        &dev.namesrv,
        &["topic", "update-perm", "--topic", "AdminT", "--perm", "6"],
    );
    assert!(text.contains("perm 4 -> 6"), "{text}");
    assert_eq!(
        send(&api, &dev.broker, "AdminT").await,
        response_code::SUCCESS
    );
    let err = failed(&admin_output(
        &dev.namesrv,
        &["topic", "update-perm", "--topic", "AdminT", "--perm", "7"],
    ));
    assert!(err.contains("invalid value '7'"), "{err}");
    let err = failed(&admin_output(
        &dev.namesrv,
        &["topic", "update-perm", "--topic", "NoSuchT", "--perm", "4"],
    ));
    assert!(err.contains("topic NoSuchT does not exist"), "{err}");

    // Groups: created, listed, deleted.
    admin(
        &dev.namesrv,
        &[
            "consumer",
            "create-group",
            "admin_g1",
            "--retry-max-times",
            "3",
        ],
    );
    let groups = json(&admin(&dev.namesrv, &["group", "list", "--json"]));
    let g1 = groups
        .as_array()
        .expect("a list")
        .iter()
        .find(|g| g["group"] == "admin_g1")
        .unwrap_or_else(|| panic!("admin_g1 listed: {groups}"));
    assert_eq!(g1["retryMaxTimes"], 3, "{g1}");
    assert_eq!(g1["brokers"][0], dev.broker.as_str(), "{g1}");
    let table = admin(&dev.namesrv, &["group", "list"]);
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().take(2).collect::<Vec<_>>() == ["admin_g1", "3"]),
        "{table}"
    );
    let deleted = json(&admin(
        &dev.namesrv,
        &["group", "delete", "--group", "admin_g1", "--json"],
    ));
    assert_eq!(deleted["brokers"][0], dev.broker.as_str(), "{deleted}");
    let groups = json(&admin(&dev.namesrv, &["group", "list", "--json"]));
    assert!(
        !groups
            .as_array()
            .expect("a list")
            .iter()
            .any(|g| g["group"] == "admin_g1"),
        "{groups}"
    );

    // Consumer status: nobody online, then a client that answers what the broker relays.
    let err = failed(&admin_output(
        &dev.namesrv,
        &["consumer", "status", "--group", "admin_cg"],
    ));
    assert!(err.contains("admin_cg is not online"), "{err}");
    let client = RemotingClient::new(ClientConfig::default());
    client.set_request_handler(processor_fn(|_ctx, request| async move {
        if request.code != request_code::GET_CONSUMER_RUNNING_INFO {
            return None;
        }
        let body = r#"{"mqPopTable":{},"mqTable":{{"brokerName":"broker-a","queueId":1,"topic":"AdminT"}:{"cachedMsgCount":3,"commitOffset":5,"droped":false,"locked":false}},"properties":{"PROP_CONSUME_TYPE":"CONSUME_PASSIVELY","PROP_CLIENT_VERSION":"V5_3_0"},"statusTable":{"AdminT":{"consumeOKTPS":2.5,"pullTPS":1.0}},"subscriptionSet":[{"subString":"*","topic":"AdminT"}]}"#;
        Some(
            request
                .response_to(response_code::SUCCESS, None)
                .with_body(body.as_bytes().to_vec()),
        )
    }));
    let client_api = MqClientApi::new(client, Duration::from_secs(5));
    client_api
        .heartbeat(
            &dev.broker,
            &HeartbeatData {
                client_id: "10.9.8.7@status".into(),
                producer_data_set: vec![],
                consumer_data_set: vec![ConsumerData {
                    group_name: "admin_cg".into(),
                    consume_type: Some("CONSUME_PASSIVELY".into()),
                    message_model: Some("CLUSTERING".into()),
                    consume_from_where: Some("CONSUME_FROM_LAST_OFFSET".into()),
                    subscription_data_set: vec![SubscriptionData {
                        topic: "AdminT".into(),
                        sub_string: "*".into(),
                        ..SubscriptionData::default()
                    }],
                    unit_mode: false,
                }],
            },
        )
        .await
        .expect("heartbeat");
    let status = json(&admin(
        &dev.namesrv,
        &["consumer", "status", "--group", "admin_cg", "--json"],
    ));
    assert_eq!(status[0]["clientId"], "10.9.8.7@status", "{status}");
    assert_eq!(status[0]["broker"], dev.broker.as_str(), "{status}");
    let info = &status[0]["runningInfo"];
    assert_eq!(
        info["properties"]["PROP_CLIENT_VERSION"], "V5_3_0",
        "{info}"
    );
    assert_eq!(info["mqTable"][0][0]["queueId"], 1, "{info}");
    assert_eq!(info["mqTable"][0][1]["commitOffset"], 5, "{info}");
    let text = admin(&dev.namesrv, &["consumer", "status", "--group", "admin_cg"]);
    assert!(text.contains("client 10.9.8.7@status"), "{text}");
    assert!(text.contains("PROP_CLIENT_VERSION: V5_3_0"), "{text}");
    assert!(text.contains("consumed OK 2.50/s"), "{text}");
    let err = failed(&admin_output(
        &dev.namesrv,
        &[
            "consumer",
            "status",
            "--group",
            "admin_cg",
            "--client-id",
            "nobody",
        ],
    ));
    assert!(err.contains("no client nobody"), "{err}");

    // Epochs exist in controller mode only (tests/cluster/cluster_cli.rs reads them from a
    // three-replica set); dev's broker refuses as RocketMQ does, and the CLI says which broker.
    let err = failed(&admin_output(
        &dev.namesrv,
        &["broker", "epoch", "--broker", "broker-a", "--json"],
    ));
    assert!(
        err.contains(&format!("the epochs of the broker at {}", dev.broker))
            && err.contains("only for controllerMode"),
        "{err}"
    );
    let err = failed(&admin_output(
        &dev.namesrv,
        &["broker", "epoch", "--broker", "broker-z"],
    ));
    assert!(err.contains("no broker set \"broker-z\""), "{err}");

    // Delete: the route goes, sends are refused, a second delete says the topic is gone.
    let deleted = json(&admin(
        &dev.namesrv,
        &["topic", "delete", "--topic", "AdminT", "--json"],
    ));
    assert_eq!(deleted[0]["addr"], dev.broker.as_str(), "{deleted}");
    let err = failed(&admin_output(&dev.namesrv, &["topic", "route", "AdminT"]));
    assert!(err.contains("AdminT"), "{err}");
    let topics = json(&admin(&dev.namesrv, &["topic", "list", "--json"]));
    assert!(
        !topics
            .as_array()
            .expect("a list")
            .iter()
            .any(|t| t == "AdminT"),
        "{topics}"
    );
    let err = failed(&admin_output(
        &dev.namesrv,
        &["topic", "delete", "--topic", "AdminT"],
    ));
    assert!(err.contains("topic AdminT does not exist"), "{err}");
    drop(dev);
}
