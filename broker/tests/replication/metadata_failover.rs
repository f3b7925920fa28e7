//! Issue 13, hole 5: metadata changes (topics, subscription groups, ACL users and rules) are
//! acknowledged only once every SyncStateSet member holds them, as records of the replicated
//! CommitLog, so a failover right after the acknowledgement loses none of them; a change the
//! SyncStateSet does not confirm is refused and not applied; a restarted broker applies the
//! records its metadata store had not applied yet.
//!
//! Real brokers on loopback with a NameServer that embeds the controller, in one process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use rocketraft_broker::ha::Role;
use rocketraft_broker::metalog::{self, MetadataChange, METADATA_TOPIC};
use rocketraft_broker::store::{BrokerMessage, FlushDiskType, MessageStore};
use rocketraft_broker::{Broker, BrokerConfig};
use rocketraft_common::acl::{AclInfo, PolicyEntryInfo, PolicyInfo, UserInfo};
use rocketraft_common::message::Message;
use rocketraft_common::TopicConfig;
use rocketraft_controller::ControllerConfig;
use rocketraft_nameserver::{NameServer, NamesrvConfig};
use rocketraft_remoting::api::{MqClientApi, SendRequest};
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::{ClientConfig, RemotingClient, RemotingCommand};

use crate::relay::HoldingRelay;

fn free_port() -> u16 {
    rocketraft_common::net::free_loopback_port().expect("a free loopback port")
}

async fn namesrv(dir: &Path) -> NameServer {
    let raft_port = free_port();
    let mut c = ControllerConfig::default();
    c.raft.node_id = 1;
    c.raft.listen = format!("127.0.0.1:{raft_port}").parse().expect("addr");
    c.raft.data_dir = dir.join("controller");
    c.raft.initial_members = BTreeMap::from([(1, format!("127.0.0.1:{raft_port}"))]);
    c.raft.election_timeout_min_ms = 300;
    c.raft.election_timeout_max_ms = 600;
    c.raft.heartbeat_interval_ms = 100;
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.heartbeat_timeout_ms = 2000;
    c.scan_interval_ms = 200;
    NameServer::start(NamesrvConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        enable_controller_in_namesrv: true,
        controller: c,
        ..NamesrvConfig::default()
    })
    .await
    .expect("namesrv with controller")
}

fn broker_config(dir: &Path, namesrv: SocketAddr, port: u16) -> BrokerConfig {
    let mut config = BrokerConfig {
        listen: format!("127.0.0.1:{port}").parse().expect("addr"),
        namesrv_addr: namesrv.to_string(),
        ha_port: 0,
        enable_controller_mode: true,
        controller_addr: namesrv.to_string(),
        controller_heartbeat_interval_ms: 300,
        controller_heartbeat_timeout_ms: 2000,
        sync_controller_metadata_period_ms: 500,
        check_sync_state_set_period_ms: 200,
        ha_max_time_slave_not_catchup_ms: 2000,
        min_in_sync_replicas: 1,
        slave_timeout_ms: 3000,
        ..BrokerConfig::default()
    };
    config.store.store_root = dir.to_path_buf();
    config.store.commitlog_segment_size = 64 * 1024;
    config.store.flush_disk_type = FlushDiskType::AsyncFlush;
    config.store.pretouch = false;
    config.store.max_message_size = 16 * 1024;
    config
}

fn api() -> MqClientApi {
    MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(10),
    )
}

async fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn master_of(brokers: &[Option<Broker>]) -> Option<usize> {
    brokers.iter().position(|b| {
        b.as_ref().is_some_and(|b| {
            let ha = b.inner().ha.as_ref().expect("controller mode");
            ha.role() == Role::Master && ha.lease_valid()
        })
    })
}

fn in_sync(b: &Broker) -> usize {
    b.inner()
        .ha
        .as_ref()
        .expect("controller mode")
        .snapshot()
        .sync_state_set
        .len()
}

/// Starts two replicas of one broker set (in `dir/{prefix}0` and `dir/{prefix}1`) and waits
/// until one is master and both are in its SyncStateSet: the brokers and the master's index.
async fn master_and_slave(
    dir: &Path,
    prefix: &str,
    ns_addr: SocketAddr,
) -> (Vec<Option<Broker>>, usize) {
    let mut brokers: Vec<Option<Broker>> = Vec::new();
    for i in 0..2 {
        let cfg = broker_config(&dir.join(format!("{prefix}{i}")), ns_addr, free_port());
        brokers.push(Some(Broker::start(cfg).await.expect("broker starts")));
    }
    let m = wait_for("a master", Duration::from_secs(20), || master_of(&brokers)).await;
    wait_for("both in the SyncStateSet", Duration::from_secs(20), || {
        (in_sync(brokers[m].as_ref()?) == 2).then_some(())
    })
    .await;
    (brokers, m)
}

fn user(name: &str) -> UserInfo {
    UserInfo {
        username: name.into(),
        password: Some(format!("{name}-secret")),
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
                    actions: vec!["Pub".into(), "Sub".into()],
                    source_ips: vec![],
                    decision: "Allow".into(),
                })
                .collect(),
        }],
    }
}

fn resources(acl: &AclInfo) -> Vec<String> {
    let mut out: Vec<String> = acl
        .policies
        .iter()
        .flat_map(|p| p.entries.iter().map(|e| e.resource.clone()))
        .collect();
    out.sort();
    out
}

async fn invoke(addr: &str, request: RemotingCommand) -> RemotingCommand {
    RemotingClient::new(ClientConfig::default())
        .invoke(addr, request, Duration::from_secs(10))
        .await
        .expect("an answer")
}

fn group_request(group: &str) -> RemotingCommand {
    RemotingCommand::request(request_code::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP).with_body(
        serde_json::to_vec(&serde_json::json!({"groupName": group, "retryMaxTimes": 5}))
            .expect("json"),
    )
}

fn topic_config(name: &str) -> TopicConfig {
    TopicConfig::new(name, 4)
}

/// The acknowledged topic creation, subscription group, user deletion and ACL revocation all
/// survive the master dying right after they were answered, long before the periodic copy
/// could have carried them (before the fix they reached the slave only by that copy: the new
/// master lacked the topic and the group and still had the deleted user and the revoked rule).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_metadata_survives_an_immediate_failover() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = namesrv(dir.path()).await;
    let ns_addr = ns.local_addr();
    let (mut brokers, m) = master_and_slave(dir.path(), "b", ns_addr).await;
    let s = 1 - m;
    let master = brokers[m].as_ref().expect("master");
    let api = api();
    let master_addr = master.local_addr().to_string();
    let slave = brokers[s].as_ref().expect("slave");

    // Users and rules that both replicas hold (before the fix: once the periodic copy ran).
    api.create_user(&master_addr, &user("alice"))
        .await
        .expect("create alice");
    api.create_acl(&master_addr, &grant("User:alice", &["Topic:A"]))
        .await
        .expect("grant alice");
    api.create_user(&master_addr, &user("bob"))
        .await
        .expect("create bob");
    api.create_acl(
        &master_addr,
        &grant("User:bob", &["Topic:Keep", "Topic:Revoke"]),
    )
    .await
    .expect("grant bob");
    wait_for("the users on the slave", Duration::from_secs(15), || {
        let acl = &slave.inner().acl;
        let bob = acl.get_acl("User:bob").ok().flatten()?;
        (acl.get_user("alice").ok().flatten().is_some() && resources(&bob).len() == 2).then_some(())
    })
    .await;

    // The changes under test, then the master dies at once.
    api.create_topic(&master_addr, &topic_config("MetaTopic"))
        .await
        .expect("create topic");
    let r = invoke(&master_addr, group_request("MetaGroup")).await;
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    api.delete_user(&master_addr, "alice")
        .await
        .expect("delete alice");
    api.delete_acl(&master_addr, "User:bob", None, Some("Topic:Revoke"))
        .await
        .expect("revoke bob's rule");
    let answered = Instant::now();
    let old = brokers[m].take().expect("master");
    let old_epoch = old.inner().ha.as_ref().expect("ha").master_epoch();
    old.shutdown().await;
    eprintln!(
        "master stopped {:?} after the last answer",
        answered.elapsed()
    );

    let n = wait_for("the slave elected", Duration::from_secs(30), || {
        master_of(&brokers)
    })
    .await;
    assert_eq!(n, s);
    let new_master = brokers[n].as_ref().expect("new master");
    assert!(new_master.inner().ha.as_ref().expect("ha").master_epoch() > old_epoch);
    let new_addr = new_master.local_addr().to_string();
    // Applied once the new master's confirm offset covers the records (at once: its
    // SyncStateSet is itself). Read through the wire, as a client would.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let topic = invoke(
            &new_addr,
            RemotingCommand::request(request_code::GET_TOPIC_CONFIG).with_ext("topic", "MetaTopic"),
        )
        .await;
        let group = invoke(
            &new_addr,
            RemotingCommand::request(request_code::GET_SUBSCRIPTIONGROUP_CONFIG)
                .with_ext("group", "MetaGroup"),
        )
        .await;
        let alice = api.get_user(&new_addr, "alice").await.expect("get user");
        let bob = api
            .get_acl(&new_addr, "User:bob")
            .await
            .expect("get acl")
            .expect("bob keeps an ACL");
        let ok = topic.code == response_code::SUCCESS
            && group.code == response_code::SUCCESS
            && alice.is_none()
            && resources(&bob) == ["Topic:Keep"];
        if ok {
            let config: TopicConfig = serde_json::from_slice(&topic.body).expect("topic json");
            assert_eq!(config.read_queue_nums, 4);
            let g: serde_json::Value = serde_json::from_slice(&group.body).expect("group json");
            assert_eq!(g["retryMaxTimes"], 5);
            assert!(api
                .get_acl(&new_addr, "User:alice")
                .await
                .expect("get acl")
                .is_none());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new master lost acknowledged metadata: topic {} {:?}, group {} {:?}, deleted user alice present: {}, bob's rules {:?}",
            topic.code,
            topic.remark,
            group.code,
            group.remark,
            alice.is_some(),
            resources(&bob)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "metadata complete on the new master {:?} after the last answer",
        answered.elapsed()
    );

    // The topic is routed to the new master; the metadata topic stays hidden.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(route) = api.topic_route(&ns_addr.to_string(), "MetaTopic").await {
            let routed = route
                .broker_datas
                .iter()
                .any(|b| b.broker_addrs.get(&0).map(String::as_str) == Some(new_addr.as_str()));
            if routed {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "MetaTopic not routed to the new master"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_hidden(&api, &ns_addr.to_string(), &new_addr).await;

    for b in brokers.into_iter().flatten() {
        b.shutdown().await;
    }
    ns.shutdown().await;
}

/// The metadata topic is no topic a client can see, create, send to or read.
async fn assert_hidden(api: &MqClientApi, ns: &str, broker: &str) {
    let all = invoke(
        broker,
        RemotingCommand::request(request_code::GET_ALL_TOPIC_CONFIG),
    )
    .await;
    assert_eq!(all.code, response_code::SUCCESS);
    let wrapper: rocketraft_common::protocol::TopicConfigSerializeWrapper =
        serde_json::from_slice(&all.body).expect("topics");
    assert!(wrapper.topic_config_table.contains_key("MetaTopic"));
    assert!(!wrapper.topic_config_table.contains_key(METADATA_TOPIC));
    let listed = api.all_topics(ns).await.expect("topic list");
    assert!(!listed.topic_list.iter().any(|t| t == METADATA_TOPIC));
    assert!(api.topic_route(ns, METADATA_TOPIC).await.is_err());
    let refused = api
        .create_topic(broker, &topic_config(METADATA_TOPIC))
        .await
        .expect_err("the metadata topic cannot be created");
    assert_eq!(
        refused.code(),
        Some(response_code::SYSTEM_ERROR),
        "{refused}"
    );
    let refused = api
        .send(
            broker,
            &SendRequest {
                producer_group: "pg".into(),
                topic: METADATA_TOPIC.into(),
                queue_id: 0,
                body: metalog::encode(&MetadataChange::DeleteTopic {
                    topic: "MetaTopic".into(),
                })
                .expect("encode")
                .into(),
                ..SendRequest::default()
            },
        )
        .await
        .expect_err("a client cannot write metadata records");
    assert_eq!(
        refused.code(),
        Some(response_code::NO_PERMISSION),
        "{refused}"
    );
    let pull = invoke(
        broker,
        RemotingCommand::request(request_code::GET_MAX_OFFSET)
            .with_ext("topic", METADATA_TOPIC)
            .with_ext("queueId", 0),
    )
    .await;
    assert_eq!(
        pull.code,
        response_code::TOPIC_NOT_EXIST,
        "{:?}",
        pull.remark
    );
}

/// A metadata change that a SyncStateSet member does not confirm in time is refused with
/// FLUSH_SLAVE_TIMEOUT and not applied anywhere; it is applied (on every replica) only if the
/// replicas confirm its record later, as a send that timed out may still be delivered, and no
/// later change is planned before that.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_metadata_change_the_sync_state_set_does_not_confirm_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = namesrv(dir.path()).await;
    let ns_addr = ns.local_addr();
    let mut relays = Vec::new();
    let mut brokers: Vec<Option<Broker>> = Vec::new();
    for i in 0..2 {
        let ha_port = free_port();
        let relay =
            HoldingRelay::start(format!("127.0.0.1:{ha_port}").parse().expect("addr")).await;
        let mut cfg = broker_config(&dir.path().join(format!("r{i}")), ns_addr, free_port());
        cfg.ha_port = ha_port;
        cfg.ha_advertised_addr = Some(relay.addr);
        // A silent slave stays in the SyncStateSet for the whole test.
        cfg.ha_max_time_slave_not_catchup_ms = 60_000;
        cfg.slave_timeout_ms = 1500;
        relays.push(relay);
        brokers.push(Some(Broker::start(cfg).await.expect("broker starts")));
    }
    let m = wait_for("a master", Duration::from_secs(20), || master_of(&brokers)).await;
    let master = brokers[m].as_ref().expect("master");
    let slave = brokers[1 - m].as_ref().expect("slave");
    wait_for("both in the SyncStateSet", Duration::from_secs(20), || {
        (in_sync(master) == 2).then_some(())
    })
    .await;
    let api = api();
    let addr = master.local_addr().to_string();
    // Confirmed while the slave answers.
    api.create_topic(&addr, &topic_config("Confirmed"))
        .await
        .expect("create while the slave confirms");
    assert!(slave_has_topic(slave, "Confirmed").await);

    // The slave stays connected but confirms nothing.
    relays[m].set_hold(true);
    let started = Instant::now();
    let refused = api
        .create_topic(&addr, &topic_config("Unconfirmed"))
        .await
        .expect_err("an unconfirmed topic creation is refused");
    assert_eq!(
        refused.code(),
        Some(response_code::FLUSH_SLAVE_TIMEOUT),
        "{refused}"
    );
    assert!(started.elapsed() >= Duration::from_millis(1400));
    // The next changes wait for that record first (a plan must see it): refused as well, before
    // their own records are written.
    let refused = api
        .create_user(&addr, &user("carol"))
        .await
        .expect_err("an unconfirmed user creation is refused");
    assert_eq!(
        refused.code(),
        Some(response_code::FLUSH_SLAVE_TIMEOUT),
        "{refused}"
    );
    let r = invoke(&addr, group_request("UnconfirmedGroup")).await;
    assert_eq!(r.code, response_code::FLUSH_SLAVE_TIMEOUT, "{:?}", r.remark);
    // Not visible anywhere while unconfirmed.
    for b in [master, slave] {
        assert!(b.inner().topics.get("Unconfirmed").is_none());
        assert!(b.inner().acl.get_user("carol").expect("read").is_none());
        assert!(b
            .inner()
            .metadata
            .get_subscription_group("UnconfirmedGroup")
            .expect("read")
            .is_none());
        assert_eq!(b.inner().metalog.applied(), 1);
    }
    let topic = invoke(
        &addr,
        RemotingCommand::request(request_code::GET_TOPIC_CONFIG).with_ext("topic", "Unconfirmed"),
    )
    .await;
    assert_eq!(topic.code, response_code::TOPIC_NOT_EXIST);

    // The slave confirms again: the record written for the refused topic creation is applied on
    // every replica (as a send that timed out may still be delivered); the changes refused
    // before their records were written never are.
    relays[m].set_hold(false);
    wait_for("the late record applied", Duration::from_secs(15), || {
        [master, slave]
            .iter()
            // A replica shows the topic a moment before it records the record as applied.
            .all(|b| {
                b.inner().topics.get("Unconfirmed").is_some() && b.inner().metalog.applied() >= 2
            })
            .then_some(())
    })
    .await;
    for b in [master, slave] {
        assert_eq!(b.inner().metalog.applied(), 2);
        assert!(b.inner().acl.get_user("carol").expect("read").is_none());
        assert!(b
            .inner()
            .metadata
            .get_subscription_group("UnconfirmedGroup")
            .expect("read")
            .is_none());
    }
    // And new changes are acknowledged again.
    api.create_user(&addr, &user("carol"))
        .await
        .expect("carol, confirmed");
    wait_for("carol on the slave", Duration::from_secs(5), || {
        slave
            .inner()
            .acl
            .get_user("carol")
            .ok()
            .flatten()
            .map(|_| ())
    })
    .await;
    for b in brokers.into_iter().flatten() {
        b.shutdown().await;
    }
    ns.shutdown().await;
}

async fn slave_has_topic(slave: &Broker, topic: &str) -> bool {
    // The creation was acknowledged once the slave held the record; it applies it when its
    // confirm offset (from the master's next frame) covers it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if slave.inner().topics.get(topic).is_some() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A broker whose store holds metadata records its metadata store never applied (a crash
/// between the log and the metadata store) applies them when it starts, before it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_applies_the_records_its_metadata_store_missed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = BrokerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        namesrv_addr: String::new(),
        ..BrokerConfig::default()
    };
    cfg.store.store_root = dir.path().to_path_buf();
    cfg.store.commitlog_segment_size = 64 * 1024;
    cfg.store.pretouch = false;
    let broker = Broker::start(cfg.clone()).await.expect("broker");
    let addr = broker.local_addr().to_string();
    let api = api();
    api.create_topic(&addr, &topic_config("Before"))
        .await
        .expect("create");
    broker.shutdown().await;

    // Records appended to the log without being applied.
    let store = MessageStore::open(cfg.store.clone()).expect("store");
    for change in [
        MetadataChange::PutTopic {
            config: topic_config("FromTheLog"),
        },
        MetadataChange::PutUser {
            user: user("dave").normalized(true).expect("valid"),
        },
        MetadataChange::DeleteTopic {
            topic: "Before".into(),
        },
    ] {
        let body = metalog::encode(&change).expect("encode");
        store
            .put_message(BrokerMessage::new(Message::new(METADATA_TOPIC, body), 0))
            .await
            .expect("append");
    }
    store.shutdown().expect("store shutdown");
    drop(store);

    let broker = Broker::start(cfg.clone()).await.expect("broker restarts");
    assert!(broker.inner().topics.get("FromTheLog").is_some());
    assert!(broker.inner().topics.get("Before").is_none());
    assert!(broker.inner().acl.get_user("dave").expect("read").is_some());
    assert_eq!(broker.inner().metalog.applied(), 3);
    broker.shutdown().await;
}

const LITE_PARENT: &str = "LiteFailover";
const LITE_GROUP: &str = "lite-failover-cg";

fn lmq(lite: &str) -> String {
    format!("%LMQ%${LITE_PARENT}${lite}")
}

async fn send_lite(api: &MqClientApi, addr: &str, lite: &str, body: &str) {
    let mut properties = BTreeMap::new();
    properties.insert("__LITE_TOPIC".to_string(), lite.to_string());
    api.send(
        addr,
        &SendRequest {
            producer_group: "lite-failover-pg".into(),
            topic: LITE_PARENT.into(),
            queue_id: 0,
            body: bytes::Bytes::from(body.to_string()),
            properties,
            ..SendRequest::default()
        },
    )
    .await
    .expect("lite send");
}

/// Issue 17 item 8: a lite topic's expiry is a record of the metadata log, so the slave
/// applies it too: after the master dies right after the expiry was answered, the new master
/// has neither the expired lite topic's entries nor the group's offset of it (before, the slave
/// kept the offsets and counted the lite topic, and they came back with the failover), the
/// periodic copy before the failover did not bring them back, the lite topic that did not
/// expire is untouched, and a message to the expired one is stored after the cut and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lite_topic_expiry_reaches_the_slave_and_survives_a_failover() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = namesrv(dir.path()).await;
    let ns_addr = ns.local_addr();
    let (mut brokers, m) = master_and_slave(dir.path(), "l", ns_addr).await;
    let s = 1 - m;
    let master = brokers[m].as_ref().expect("master");
    let api = api();
    let master_addr = master.local_addr().to_string();
    let slave = brokers[s].as_ref().expect("slave");

    let mut parent = TopicConfig::new(LITE_PARENT, 2);
    parent
        .attributes
        .insert("message.type".into(), "LITE".into());
    parent
        .attributes
        .insert("lite.topic.expiration".into(), "1".into());
    api.create_topic(&master_addr, &parent)
        .await
        .expect("LITE topic");
    for i in 0..3 {
        send_lite(&api, &master_addr, "gone", &format!("gone-{i}")).await;
    }
    send_lite(&api, &master_addr, "stays", "stays-0").await;
    api.update_consumer_offset(&master_addr, LITE_GROUP, &lmq("gone"), 0, 3)
        .await
        .expect("commit");
    api.update_consumer_offset(&master_addr, LITE_GROUP, &lmq("stays"), 0, 1)
        .await
        .expect("commit");
    // The slave holds the messages and (by its periodic copy) the offsets.
    wait_for("the slave's copy", Duration::from_secs(15), || {
        let inner = slave.inner();
        let offsets = [lmq("gone"), lmq("stays")].map(|q| {
            inner
                .metadata
                .query_offset(LITE_GROUP, &q, 0)
                .expect("query")
        });
        (inner.store.get_max_offset_in_queue(&lmq("gone"), 0) == 3 && offsets == [Some(3), Some(1)])
            .then_some(())
    })
    .await;

    // The master's check, two minutes on, for `gone` only.
    let inner = master.inner();
    let found: Vec<_> = inner
        .lite
        .find_expired(
            &inner.store,
            &inner.topics,
            0,
            rocketraft_common::time::now_ms() + 2 * 60_000,
        )
        .into_iter()
        .filter(|q| q.queue == lmq("gone"))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    let report = inner.lite.expire(inner, found).await.expect("expire");
    assert_eq!(report.cleaned, vec![lmq("gone")]);
    assert_eq!(report.offsets_deleted, 1);
    // Answered: the slave holds the record; it applies it once its confirm offset covers it.
    wait_for(
        "the expiry applied on the slave",
        Duration::from_secs(10),
        || {
            let inner = slave.inner();
            (inner.lite.expired_at(&lmq("gone")) == Some(3)).then_some(())
        },
    )
    .await;
    // A periodic copy (every 3 s) does not bring the offset back.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    {
        let inner = slave.inner();
        assert_eq!(
            inner
                .metadata
                .query_offset(LITE_GROUP, &lmq("gone"), 0)
                .expect("query"),
            None
        );
        assert_eq!(inner.store.get_min_offset_in_queue(&lmq("gone"), 0), 3);
        assert_eq!(inner.store.get_cq_entry(&lmq("gone"), 0, 2), None);
    }

    let old = brokers[m].take().expect("master");
    let old_epoch = old.inner().ha.as_ref().expect("ha").master_epoch();
    old.shutdown().await;
    let n = wait_for("the slave elected", Duration::from_secs(30), || {
        master_of(&brokers)
    })
    .await;
    assert_eq!(n, s);
    let new_master = brokers[n].as_ref().expect("new master");
    let new_inner = new_master.inner();
    let new_epoch = new_inner.ha.as_ref().expect("ha").master_epoch();
    assert!(new_epoch > old_epoch);
    let new_addr = new_master.local_addr().to_string();
    assert_eq!(
        new_inner
            .metadata
            .query_offset(LITE_GROUP, &lmq("gone"), 0)
            .expect("query"),
        None,
        "the expired lite topic's offset stays gone after the failover"
    );
    // A client asking for it (QUERY_CONSUMER_OFFSET) is told the cut, where the queue starts.
    assert_eq!(
        api.query_consumer_offset(&new_addr, LITE_GROUP, &lmq("gone"), 0)
            .await
            .expect("query"),
        Some(3)
    );
    assert_eq!(
        api.query_consumer_offset(&new_addr, LITE_GROUP, &lmq("stays"), 0)
            .await
            .expect("query"),
        Some(1)
    );
    assert_eq!(
        new_inner
            .lite
            .live_count(&new_inner.store, new_epoch as i64),
        1,
        "only the lite topic that did not expire is counted"
    );
    assert_eq!(new_inner.store.get_min_offset_in_queue(&lmq("gone"), 0), 3);
    assert_eq!(new_inner.store.get_max_offset_in_queue(&lmq("gone"), 0), 3);

    // A message to the expired lite topic starts it again after the cut, and the group (no
    // offset: from the queue's start) gets exactly it.
    send_lite(&api, &new_addr, "gone", "gone-after").await;
    let got = api
        .pop(
            &new_addr,
            LITE_GROUP,
            &lmq("gone"),
            -1,
            32,
            30_000,
            0,
            false,
        )
        .await
        .expect("pop");
    let bodies: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(&m.message.body).to_string())
        .collect();
    assert_eq!(bodies, vec!["gone-after".to_string()]);
    assert_eq!(got[0].queue_offset, 3);

    for b in brokers.into_iter().flatten() {
        b.shutdown().await;
    }
    ns.shutdown().await;
}
