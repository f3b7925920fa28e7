//! `rocketraft admin consumer connections`, `admin producer connections`, `admin broker
//! config get|set` and `admin controller config get|set` against the real `rocketraft dev`
//! binary, with a real client connection heartbeating as a consumer and a producer.

use std::time::Duration;

use rocketraft_common::protocol::{ConsumerData, HeartbeatData, ProducerData, SubscriptionData};
use rocketraft_remoting::api::MqClientApi;
use rocketraft_remoting::{ClientConfig, RemotingClient};

use crate::support::{admin, admin_output, free_port, Dev};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_and_broker_config_from_the_cli() {
    let _turn = crate::support::file_turn(module_path!());
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start(dir.path(), free_port(), free_port(), &["--no-console"]);
    let api = MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(5),
    );

    // Nobody connected: the commands fail and say so.
    let out = admin_output(
        &dev.namesrv,
        &["consumer", "connections", "--group", "cli-cg"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cli-cg is not online"), "{err}");

    api.heartbeat(
        &dev.broker,
        &HeartbeatData {
            client_id: "10.1.2.3@cli".into(),
            producer_data_set: vec![ProducerData {
                group_name: "cli-pg".into(),
            }],
            consumer_data_set: vec![ConsumerData {
                group_name: "cli-cg".into(),
                consume_type: Some("CONSUME_ACTIVELY".into()),
                message_model: Some("BROADCASTING".into()),
                consume_from_where: Some("CONSUME_FROM_FIRST_OFFSET".into()),
                subscription_data_set: vec![SubscriptionData {
                    topic: "CliTopic".into(),
                    sub_string: "TagA || TagB".into(),
                    ..SubscriptionData::default()
                }],
                unit_mode: false,
            }],
        },
    )
    .await
    .expect("heartbeat");
    let local = api
        .remoting()
        .connection_handle(&dev.broker)
        .await
        .expect("connected")
        .local_addr()
        .to_string();

    let table = admin(
        &dev.namesrv,
        &["consumer", "connections", "--group", "cli-cg"],
    );
    let row = table
        .lines()
        .find(|l| l.contains("10.1.2.3@cli"))
        .unwrap_or_else(|| panic!("the client is listed: {table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..4],
        ["1", "10.1.2.3@cli", local.as_str(), "RUST"],
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["CliTopic", "TagA", "||", "TagB"]),
        "{table}"
    );
    assert!(table.contains("ConsumeType: CONSUME_ACTIVELY"), "{table}");
    assert!(table.contains("MessageModel: BROADCASTING"), "{table}");
    let json: serde_json::Value = serde_json::from_str(&admin(
        &dev.namesrv,
        &["consumer", "connections", "--group", "cli-cg", "--json"],
    ))
    .expect("json");
    assert_eq!(json["connectionSet"][0]["clientAddr"], local.as_str());
    assert_eq!(
        json["subscriptionTable"]["CliTopic"]["subString"],
        "TagA || TagB"
    );

    let producers = admin(
        &dev.namesrv,
        &[
            "producer",
            "connections",
            "--group",
            "cli-pg",
            "--addr",
            &dev.broker,
            "--json",
        ],
    );
    let json: serde_json::Value = serde_json::from_str(&producers).expect("json");
    assert_eq!(
        json["connectionSet"][0]["clientId"], "10.1.2.3@cli",
        "{producers}"
    );
    let out = admin_output(
        &dev.namesrv,
        &["producer", "connections", "--group", "nope"],
    );
    assert!(!out.status.success());

    // Broker config: read, change a retention key, and a refused change that changes nothing.
    let get = |extra: &[&str]| {
        let mut args = vec!["broker", "config", "get", "--addr", dev.broker.as_str()];
        args.extend_from_slice(extra);
        admin(&dev.namesrv, &args)
    };
    let before = get(&[]);
    assert!(
        before.lines().any(|l| l == "brokerName=broker-a"),
        "{before}"
    );
    assert!(before.lines().any(|l| l == "deleteWhen=04"), "{before}");
    let set: serde_json::Value = serde_json::from_str(&admin(
        &dev.namesrv,
        &[
            "broker",
            "config",
            "set",
            "--broker",
            "broker-a",
            "deleteWhen=03",
            "fileReservedTime=48",
            "--json",
        ],
    ))
    .expect("set --json");
    assert_eq!(set["updated"][0], dev.broker.as_str(), "{set}");
    assert_eq!(set["settings"]["deleteWhen"], "03", "{set}");
    let json: serde_json::Value = serde_json::from_str(&get(&["--json"])).expect("json");
    let props = &json[dev.broker.as_str()]["properties"];
    assert_eq!(props["deleteWhen"], "03", "{json}");
    assert_eq!(props["fileReservedTime"], "48", "{json}");
    assert_eq!(json[dev.broker.as_str()]["version"]["counter"], 1, "{json}");
    let out = admin_output(
        &dev.namesrv,
        &[
            "broker",
            "config",
            "set",
            "--addr",
            &dev.broker,
            "deleteWhen=05",
            "listenPort=1",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Can not update config at runtime: listenPort"),
        "{err}"
    );
    let after = get(&[]);
    assert!(after.lines().any(|l| l == "deleteWhen=03"), "{after}");

    // Controller config (the controller inside the dev NameServer): read, change a live key,
    // and a key fixed at start refused by name, changing nothing.
    let ctl = |extra: &[&str]| {
        let mut args = vec!["controller", "config"];
        args.extend_from_slice(extra);
        admin(&dev.namesrv, &args)
    };
    let before = ctl(&["get"]);
    assert!(
        before
            .lines()
            .any(|l| l == "enableElectUncleanMaster=false"),
        "{before}"
    );
    let out = ctl(&[
        "set",
        "enableElectUncleanMaster=true",
        "scanNotActiveBrokerInterval=500",
    ]);
    assert!(out.contains("updated"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&ctl(&["get", "--json"])).expect("json");
    let props = &json[dev.namesrv.as_str()];
    assert_eq!(props["enableElectUncleanMaster"], "true", "{json}");
    assert_eq!(props["scanNotActiveBrokerInterval"], "500", "{json}");
    let out = admin_output(
        &dev.namesrv,
        &[
            "controller",
            "config",
            "set",
            "enableElectUncleanMaster=false",
            "heartbeat_timeout_ms=1",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Can not update config at runtime: heartbeat_timeout_ms"),
        "{err}"
    );
    let json: serde_json::Value = serde_json::from_str(&ctl(&["get", "--json"])).expect("json");
    assert_eq!(
        json[dev.namesrv.as_str()]["enableElectUncleanMaster"],
        "true",
        "{json}"
    );
}
