//! Issue 13, hole 5 with real processes: a `rocketraft namesrv` with the controller embedded and
//! three `rocketraft broker` processes of one set. Topic, subscription group and ACL changes
//! acknowledged by the master survive its kill -9, also while changes are in flight, and the
//! old master, restarted, converges on the same metadata.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rocketraft_common::acl::{AclInfo, PolicyEntryInfo, PolicyInfo, UserInfo};
use rocketraft_common::TopicConfig;
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::{ClientConfig, RemotingClient, RemotingCommand};

use crate::procs::{api, find_master, status, BrokerProc, NameSrv};

async fn invoke(addr: &str, request: RemotingCommand) -> Option<RemotingCommand> {
    RemotingClient::new(ClientConfig::default())
        .invoke(addr, request, Duration::from_secs(5))
        .await
        .ok()
}

async fn eventually(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn user(name: &str) -> UserInfo {
    UserInfo {
        username: name.into(),
        password: Some(format!("{name}-pw")),
        user_type: None,
        user_status: None,
    }
}

fn grant(subject: &str, resources: &[&str]) -> AclInfo {
    AclInfo {
        subject: subject.into(),
        policies: vec![PolicyInfo {
            policy_type: None,
            entries: resources
                .iter()
                .map(|r| PolicyEntryInfo {
                    resource: r.to_string(),
                    actions: vec!["Pub".into()],
                    source_ips: vec![],
                    decision: "Allow".into(),
                })
                .collect(),
        }],
    }
}

async fn has_topic(addr: &str, topic: &str) -> Option<bool> {
    let r = invoke(
        addr,
        RemotingCommand::request(request_code::GET_TOPIC_CONFIG).with_ext("topic", topic),
    )
    .await?;
    match r.code {
        response_code::SUCCESS => Some(true),
        response_code::TOPIC_NOT_EXIST => Some(false),
        _ => None,
    }
}

async fn has_group(addr: &str, group: &str) -> Option<bool> {
    let r = invoke(
        addr,
        RemotingCommand::request(request_code::GET_SUBSCRIPTIONGROUP_CONFIG)
            .with_ext("group", group),
    )
    .await?;
    match r.code {
        response_code::SUCCESS => Some(true),
        response_code::SUBSCRIPTION_GROUP_NOT_EXIST => Some(false),
        _ => None,
    }
}

/// What the master acknowledged before its kill -9 is what the next master (and the old one,
/// restarted) holds: the listed changes, and every topic of a stream of creations cut by the
/// kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_metadata_survives_kill9_of_the_master() {
    let _turn = crate::support::file_turn(module_path!());
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = NameSrv::start(&dir.path().join("namesrv"));
    let mut brokers: Vec<BrokerProc> = (0..3)
        .map(|i| BrokerProc::new(dir.path(), i, &ns.addr, ""))
        .collect();
    for b in &mut brokers {
        b.start(None);
    }
    let m = find_master(&brokers, Duration::from_secs(30)).await;
    let master = brokers[m].addr();
    eventually("3 in sync", Duration::from_secs(30), async || {
        status(&master)
            .await
            .is_some_and(|s| s["syncStateSet"].as_array().is_some_and(|a| a.len() == 3))
    })
    .await;
    let api = api();
    api.create_user(&master, &user("alice"))
        .await
        .expect("alice");
    api.create_user(&master, &user("bob")).await.expect("bob");
    api.create_acl(&master, &grant("User:bob", &["Topic:Keep", "Topic:Revoke"]))
        .await
        .expect("grant");

    // A stream of topic creations; the master is killed in the middle of it.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stream = {
        let (acked, master, api) = (acked.clone(), master.clone(), api.clone());
        tokio::spawn(async move {
            for i in 0.. {
                let name = format!("Stream{i}");
                match api.create_topic(&master, &TopicConfig::new(&name, 2)).await {
                    Ok(()) => acked.lock().expect("lock").push(name),
                    Err(_) => return,
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.create_topic(&master, &TopicConfig::new("MetaTopic", 4))
        .await
        .expect("topic");
    let r = invoke(
        &master,
        RemotingCommand::request(request_code::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP).with_body(
            serde_json::to_vec(&serde_json::json!({"groupName": "MetaGroup"})).expect("json"),
        ),
    )
    .await
    .expect("group answer");
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    api.delete_user(&master, "alice")
        .await
        .expect("delete alice");
    api.delete_acl(&master, "User:bob", None, Some("Topic:Revoke"))
        .await
        .expect("revoke");
    brokers[m].kill9();
    let _ = stream.await;
    let acked = acked.lock().expect("lock").clone();
    eprintln!("{} stream topics acknowledged before the kill", acked.len());
    assert!(!acked.is_empty());

    let n = find_master(&brokers, Duration::from_secs(30)).await;
    let new_master = brokers[n].addr();
    let check = async |addr: &str| -> Result<(), String> {
        for topic in acked.iter().map(String::as_str).chain(["MetaTopic"]) {
            if has_topic(addr, topic).await != Some(true) {
                return Err(format!("topic {topic} missing"));
            }
        }
        if has_group(addr, "MetaGroup").await != Some(true) {
            return Err("group MetaGroup missing".into());
        }
        let reader = self::api();
        match reader.get_user(addr, "alice").await {
            Ok(None) => {}
            other => return Err(format!("deleted user alice: {other:?}")),
        }
        match reader.get_acl(addr, "User:bob").await {
            Ok(Some(acl)) => {
                let resources: Vec<&str> = acl
                    .policies
                    .iter()
                    .flat_map(|p| p.entries.iter().map(|e| e.resource.as_str()))
                    .collect();
                if resources != ["Topic:Keep"] {
                    return Err(format!("bob's rules {resources:?}"));
                }
            }
            other => return Err(format!("bob's ACL: {other:?}")),
        }
        Ok(())
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match check(&new_master).await {
            Ok(()) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "the new master lost acknowledged metadata: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The old master restarts as a slave and converges on the same metadata.
    brokers[m].start(None);
    let old = brokers[m].addr();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let slave = status(&old).await.is_some_and(|s| s["role"] == "SLAVE");
        match check(&old).await {
            Ok(()) if slave => break,
            Ok(()) => {}
            Err(e) => assert!(
                Instant::now() < deadline,
                "the restarted old master differs: {e}"
            ),
        }
        assert!(Instant::now() < deadline, "the old master is no slave");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(brokers);
    drop(ns);
}
