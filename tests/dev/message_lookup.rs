//! Message lookup against the real `rocketraft dev` binary: QUERY_MESSAGE by key and by unique
//! key (`_UNIQUE_KEY_QUERY=true`) and VIEW_MESSAGE_BY_ID over a raw Remoting client, then
//! `rocketraft admin message query` and `admin message get` (offset id and unique id), and the
//! index rebuilt after a restart.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketraft_common::consts::property;
use rocketraft_common::message::decode_messages;
use rocketraft_common::TopicConfig;
use rocketraft_remoting::api::{MqClientApi, SendRequest};
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::{ClientConfig, RemotingClient, RemotingCommand};

use crate::support::{admin, admin_output, free_port, Dev};

fn query(topic: &str, key: &str, max: i32) -> RemotingCommand {
    RemotingCommand::request(request_code::QUERY_MESSAGE)
        .with_ext("topic", topic)
        .with_ext("key", key)
        .with_ext("maxNum", max)
        .with_ext("beginTimestamp", 0)
        .with_ext("endTimestamp", i64::MAX)
}

/// QUERY_MESSAGE until it finds something (the index follows the CommitLog in the background).
async fn query_until_found(
    client: &RemotingClient,
    broker: &str,
    request: RemotingCommand,
) -> RemotingCommand {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = client
            .invoke(broker, request.clone(), Duration::from_secs(5))
            .await
            .expect("query");
        if r.code == response_code::SUCCESS || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_by_key_and_unique_key_through_the_broker_and_the_admin_cli() {
    let _turn = crate::support::file_turn(module_path!());
    let dir = tempfile::tempdir().expect("tempdir");
    let (ns_port, broker_port) = (free_port(), free_port());
    let mut dev = Dev::start(dir.path(), ns_port, broker_port, &[]);
    let client = RemotingClient::new(ClientConfig::default());
    let api = MqClientApi::new(client.clone(), Duration::from_secs(5));
    api.create_topic(&dev.broker, &TopicConfig::new("Lookup", 2))
        .await
        .expect("topic");
    api.create_topic(&dev.broker, &TopicConfig::new("Elsewhere", 1))
        .await
        .expect("topic");
    let mut sent = Vec::new();
    for i in 0..6 {
        let uniq = format!("7F00000100002A9F0000000000{i:06}");
        let r = api
            .send(
                &dev.broker,
                &SendRequest {
                    producer_group: "pg".into(),
                    topic: "Lookup".into(),
                    queue_id: i % 2,
                    body: Bytes::from(format!("lookup-{i}")),
                    properties: BTreeMap::from([
                        (property::KEYS.to_string(), format!("order-{i} shared")),
                        (
                            property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX.to_string(),
                            uniq.clone(),
                        ),
                    ]),
                    ..SendRequest::default()
                },
            )
            .await
            .expect("send");
        assert_eq!(r.code, response_code::SUCCESS);
        sent.push((r.msg_id.clone(), uniq));
    }
    // The same key in another topic is never an answer for this one.
    api.send(
        &dev.broker,
        &SendRequest {
            producer_group: "pg".into(),
            topic: "Elsewhere".into(),
            queue_id: 0,
            body: Bytes::from("elsewhere"),
            properties: BTreeMap::from([(property::KEYS.to_string(), "order-1".to_string())]),
            ..SendRequest::default()
        },
    )
    .await
    .expect("send elsewhere");

    // By key, over a raw Remoting client.
    let r = query_until_found(&client, &dev.broker, query("Lookup", "order-1", 32)).await;
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    let found = decode_messages(&r.body).expect("store encoding");
    assert_eq!(found.len(), 1);
    assert_eq!(&found[0].message.body[..], b"lookup-1");
    assert_eq!(found[0].message.topic, "Lookup");
    let phy: i64 = r
        .ext("indexLastUpdatePhyoffset")
        .and_then(|v| v.parse().ok())
        .expect("indexLastUpdatePhyoffset");
    assert!(phy > found[0].commit_log_offset, "{phy}");
    assert!(r
        .ext("indexLastUpdateTimestamp")
        .and_then(|v| v.parse::<i64>().ok())
        .is_some_and(|t| t > 0));
    // The index is built behind the CommitLog: wait until it holds the last send too (the
    // query for order-1 only waited for lookup-1).
    let deadline = Instant::now() + Duration::from_secs(10);
    let shared = loop {
        let r = query_until_found(&client, &dev.broker, query("Lookup", "shared", 4)).await;
        let shared = decode_messages(&r.body).expect("decode");
        let newest = shared.last().map(|m| m.message.body.clone());
        if newest.as_deref() == Some(&b"lookup-5"[..]) || Instant::now() > deadline {
            break shared;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let bodies: Vec<&[u8]> = shared.iter().map(|m| &m.message.body[..]).collect();
    assert_eq!(
        bodies,
        [&b"lookup-2"[..], b"lookup-3", b"lookup-4", b"lookup-5"],
        "the newest maxNum, ascending"
    );
    // Runtime info says how far the index is: everything sent is indexed.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = client
            .invoke(
                &dev.broker,
                RemotingCommand::request(request_code::GET_BROKER_RUNTIME_INFO),
                Duration::from_secs(5),
            )
            .await
            .expect("runtime info");
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        let num = |k: &str| -> i64 {
            v["table"][k]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{k} missing from the runtime info: {v}"))
        };
        if num("indexBehindBytes") == 0 {
            assert_eq!(num("indexProgressOffset"), num("commitLogMaxOffset"), "{v}");
            assert!(num("indexedRecords") >= 7, "{v}");
            // Two keys and a unique key for each of the six, one key for the seventh.
            assert!(num("indexEntries") > 6 * 3, "{v}");
            assert_eq!(num("indexErrors"), 0, "{v}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "index still behind: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // By unique key: maxNum is the broker's default (32), whatever the request says.
    let r = query_until_found(
        &client,
        &dev.broker,
        query("Lookup", &sent[4].1, 0).with_ext("_UNIQUE_KEY_QUERY", "true"),
    )
    .await;
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    let found = decode_messages(&r.body).expect("decode");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].message.uniq_key(), Some(sent[4].1.as_str()));
    // Not found, a time range that excludes it, a bad header.
    let r = client
        .invoke(
            &dev.broker,
            query("Lookup", "nope", 32),
            Duration::from_secs(5),
        )
        .await
        .expect("query");
    assert_eq!(r.code, response_code::QUERY_NOT_FOUND);
    let stored = found[0].store_timestamp;
    let r = client
        .invoke(
            &dev.broker,
            query("Lookup", "order-4", 32).with_ext("endTimestamp", stored - 1),
            Duration::from_secs(5),
        )
        .await
        .expect("query");
    assert_eq!(r.code, response_code::QUERY_NOT_FOUND);
    let r = client
        .invoke(
            &dev.broker,
            RemotingCommand::request(request_code::QUERY_MESSAGE).with_ext("topic", "Lookup"),
            Duration::from_secs(5),
        )
        .await
        .expect("query");
    assert_ne!(r.code, response_code::SUCCESS);
    assert!(
        r.remark.as_deref().unwrap_or("").contains("key"),
        "{:?}",
        r.remark
    );
    let r = client
        .invoke(
            &dev.broker,
            query("Lookup", "order-1", 32).with_ext("maxNum", "many"),
            Duration::from_secs(5),
        )
        .await
        .expect("query");
    assert_ne!(r.code, response_code::SUCCESS);
    // VIEW_MESSAGE_BY_ID still serves offset ids.
    let (_, offset) =
        rocketraft_common::message::decode_offset_msg_id(&sent[2].0).expect("offset id");
    let viewed = api
        .view_message(&dev.broker, offset, Some("Lookup"))
        .await
        .expect("view");
    assert_eq!(&viewed.message.body[..], b"lookup-2");

    // The admin CLI.
    let out = admin(
        &dev.namesrv,
        &["message", "query", "--topic", "Lookup", "--key", "order-3"],
    );
    assert!(out.contains("\"lookup-3\""), "{out}");
    assert!(
        out.contains("1 message(s) with key order-3 in Lookup"),
        "{out}"
    );
    let out = admin(
        &dev.namesrv,
        &[
            "message", "query", "--topic", "Lookup", "--key", "shared", "--max", "2", "--json",
        ],
    );
    let list: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{out}");
    assert_eq!(list[1]["body"], "lookup-5", "{out}");
    let out = admin(
        &dev.namesrv,
        &[
            "message",
            "query",
            "--topic",
            "Elsewhere",
            "--key",
            "order-1",
        ],
    );
    assert!(out.contains("\"elsewhere\""), "{out}");
    assert!(out.contains("1 message(s)"), "{out}");
    // By offset id (no topic needed), by unique id with --topic.
    let out = admin(&dev.namesrv, &["message", "get", "--id", &sent[0].0]);
    assert!(out.contains("\"lookup-0\""), "{out}");
    assert!(out.contains(&sent[0].1), "{out}");
    let out = admin(
        &dev.namesrv,
        &[
            "message", "get", "--id", &sent[5].1, "--topic", "Lookup", "--json",
        ],
    );
    let list: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(list[0]["body"], "lookup-5", "{out}");
    assert_eq!(list[0]["offsetMsgId"], sent[5].0.as_str(), "{out}");
    // A unique id without --topic: a clear error.
    let out = admin_output(&dev.namesrv, &["message", "get", "--id", &sent[5].1]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs --topic"), "{err}");
    let out = admin_output(
        &dev.namesrv,
        &["message", "get", "--id", "not-an-id", "--topic", "Lookup"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no message found for id not-an-id"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // After kill -9 and a restart without the index directory, the index is rebuilt.
    let _ = dev.child.kill();
    let _ = dev.child.wait();
    let index_dirs: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "index") && p.is_dir())
        .collect();
    assert_eq!(index_dirs.len(), 1, "{index_dirs:?}");
    std::fs::remove_dir_all(&index_dirs[0]).expect("remove the index");
    let dev = Dev::start(dir.path(), ns_port, broker_port, &[]);
    let r = query_until_found(&client, &dev.broker, query("Lookup", "order-5", 32)).await;
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    let found = decode_messages(&r.body).expect("decode");
    assert_eq!(&found[0].message.body[..], b"lookup-5");
    drop(dev);
}

/// Every directory under `root`.
fn walk(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p.clone());
                    out.push(p);
                }
            }
        }
    }
    out
}

const SUPER_USER: &str = "lookup-admin";
const SUPER_SECRET: &str = "lookup-admin-secret-0123456789";

/// `rocketraft admin` signed by the Super user.
fn admin_super(namesrv: &str, args: &[&str]) -> String {
    let mut all = vec!["--access-key", SUPER_USER, "--secret-key", SUPER_SECRET];
    all.extend_from_slice(args);
    admin(namesrv, &all)
}

fn signed_api(ak: &str, sk: &str) -> MqClientApi {
    MqClientApi::new(
        RemotingClient::new(ClientConfig {
            credentials: Some(rocketraft_remoting::SessionCredentials::new(ak, sk).expect("creds")),
            ..ClientConfig::default()
        }),
        Duration::from_secs(5),
    )
}

/// With ACLs on, a lookup by key or by unique id needs Sub on the topic it names, and neither a
/// query nor VIEW_MESSAGE_BY_ID hands out a message of another topic than the one checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_need_sub_on_the_topic_and_serve_only_that_topic() {
    let _turn = crate::support::file_turn(module_path!());
    let dir = tempfile::tempdir().expect("tempdir");
    let creds = format!(
        "authentication_enabled = true\nauthorization_enabled = true\n\
         init_authentication_user = '{{\"username\":\"{SUPER_USER}\",\"password\":\"{SUPER_SECRET}\"}}'\n\
         inner_client_authentication_credentials = '{{\"accessKey\":\"lookup-inner\",\"secretKey\":\"lookup-inner-secret-0123456789\"}}'\n"
    );
    let config = dir.path().join("dev.toml");
    std::fs::write(&config, format!("[namesrv]\n{creds}\n[broker]\n{creds}")).expect("write");
    let dev = Dev::start(
        dir.path(),
        free_port(),
        free_port(),
        &["--config", config.to_str().expect("utf8 path")],
    );
    let ns = dev.namesrv.clone();
    for topic in ["Mine", "Theirs"] {
        admin_super(&ns, &["topic", "create", topic, "--queues", "1"]);
    }
    admin_super(
        &ns,
        &[
            "acl",
            "user",
            "create",
            "--username",
            "reader",
            "--password",
            "reader-secret",
        ],
    );
    admin_super(
        &ns,
        &[
            "acl",
            "grant",
            "--subject",
            "User:reader",
            "--resource",
            "Topic:Mine",
            "--actions",
            "Sub",
        ],
    );
    let root = signed_api(SUPER_USER, SUPER_SECRET);
    let mut ids = BTreeMap::new();
    for topic in ["Mine", "Theirs"] {
        let r = root
            .send(
                &dev.broker,
                &SendRequest {
                    producer_group: "pg".into(),
                    topic: topic.into(),
                    queue_id: 0,
                    body: Bytes::from(format!("in {topic}")),
                    properties: BTreeMap::from([
                        (property::KEYS.to_string(), "shared-key".to_string()),
                        (
                            property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX.to_string(),
                            format!("UNIQ-{topic}"),
                        ),
                    ]),
                    ..SendRequest::default()
                },
            )
            .await
            .expect("send");
        assert_eq!(r.code, response_code::SUCCESS);
        ids.insert(topic, r.msg_id);
    }
    let reader = signed_api("reader", "reader-secret");
    // Allowed: by key and by unique id on its topic (after the index caught up).
    let deadline = Instant::now() + Duration::from_secs(10);
    let found = loop {
        let found = reader
            .query_message(&dev.broker, "Mine", "shared-key", 32, 0, i64::MAX, false)
            .await
            .expect("query Mine");
        if !found.is_empty() || Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].message.topic, "Mine");
    let found = reader
        .query_message(&dev.broker, "Mine", "UNIQ-Mine", 32, 0, i64::MAX, true)
        .await
        .expect("unique query Mine");
    assert_eq!(found.len(), 1);
    // The other topic's id under its own topic name finds nothing.
    let found = reader
        .query_message(&dev.broker, "Mine", "UNIQ-Theirs", 32, 0, i64::MAX, true)
        .await
        .expect("unique query");
    assert!(found.is_empty());
    // Refused: the other topic, by key and by unique id.
    for unique in [false, true] {
        let key = if unique { "UNIQ-Theirs" } else { "shared-key" };
        let err = reader
            .query_message(&dev.broker, "Theirs", key, 32, 0, i64::MAX, unique)
            .await
            .expect_err("no Sub on Theirs");
        assert_eq!(
            err.code(),
            Some(response_code::NO_PERMISSION),
            "unique {unique}: {err}"
        );
    }
    // VIEW_MESSAGE_BY_ID naming its own topic does not serve a record of the other one (and
    // without a topic only Super users pass).
    let (_, theirs) =
        rocketraft_common::message::decode_offset_msg_id(&ids["Theirs"]).expect("offset id");
    let (_, mine) =
        rocketraft_common::message::decode_offset_msg_id(&ids["Mine"]).expect("offset id");
    assert!(reader
        .view_message(&dev.broker, theirs, Some("Mine"))
        .await
        .is_err());
    assert!(reader
        .view_message(&dev.broker, theirs, None)
        .await
        .is_err());
    assert!(
        reader
            .view_message(&dev.broker, mine, Some("Mine"))
            .await
            .is_err(),
        "VIEW_MESSAGE_BY_ID asks Get, which reader lacks"
    );
    let viewed = root
        .view_message(&dev.broker, theirs, Some("Theirs"))
        .await
        .expect("the Super user views it");
    assert_eq!(&viewed.message.body[..], b"in Theirs");
    drop(dev);
}

/// kill -9 right after the last acknowledged send (the index a few batches behind, its WAL not
/// synced): after the restart every acknowledged message is found by its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_is_found_by_key_after_kill_9() {
    let _turn = crate::support::file_turn(module_path!());
    let dir = tempfile::tempdir().expect("tempdir");
    let (ns_port, broker_port) = (free_port(), free_port());
    let mut dev = Dev::start(dir.path(), ns_port, broker_port, &[]);
    let client = RemotingClient::new(ClientConfig::default());
    let api = MqClientApi::new(client.clone(), Duration::from_secs(5));
    api.create_topic(&dev.broker, &TopicConfig::new("Crashy", 4))
        .await
        .expect("topic");
    let count = 300;
    for i in 0..count {
        let r = api
            .send(
                &dev.broker,
                &SendRequest {
                    producer_group: "pg".into(),
                    topic: "Crashy".into(),
                    queue_id: i % 4,
                    body: Bytes::from(format!("crashy-{i}")),
                    properties: BTreeMap::from([(property::KEYS.to_string(), format!("ck-{i}"))]),
                    ..SendRequest::default()
                },
            )
            .await
            .expect("send");
        assert_eq!(r.code, response_code::SUCCESS);
    }
    let _ = dev.child.kill();
    let _ = dev.child.wait();
    let dev = Dev::start(dir.path(), ns_port, broker_port, &[]);
    for i in 0..count {
        let r = query_until_found(
            &client,
            &dev.broker,
            query("Crashy", &format!("ck-{i}"), 32),
        )
        .await;
        assert_eq!(r.code, response_code::SUCCESS, "ck-{i}: {:?}", r.remark);
        let found = decode_messages(&r.body).expect("decode");
        assert_eq!(found.len(), 1, "ck-{i}");
        assert_eq!(found[0].message.body, Bytes::from(format!("crashy-{i}")));
    }
    drop(dev);
}
