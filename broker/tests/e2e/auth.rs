//! ACL 2.0 on the Remoting port (issue 16 item 1): a real NameServer and broker with
//! `authenticationEnabled` and `authorizationEnabled`, attacked and used through the client API.
//! Every refusal is NO_PERMISSION (16) and is followed by a check that nothing changed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use rocketraft_broker::store::FlushDiskType;
use rocketraft_broker::{Broker, BrokerConfig};
use rocketraft_common::acl::{AclInfo, PolicyEntryInfo, PolicyInfo, UserInfo};
use rocketraft_common::consts::pull_sys_flag;
use rocketraft_common::protocol::{ConsumerData, HeartbeatData, SubscriptionData};
use rocketraft_common::trust::ClusterSecret;
use rocketraft_common::TopicConfig;
use rocketraft_nameserver::{NameServer, NamesrvConfig};
use rocketraft_remoting::api::{ApiError, MqClientApi, PullRequest, PullStatus, SendRequest};
use rocketraft_remoting::auth::{sign, SessionCredentials};
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::{ClientConfig, RemotingClient, RemotingCommand};

const TOPIC: &str = "orders";
const ADMIN: (&str, &str) = ("admin", "admin-secret-1");
const INNER: (&str, &str) = ("rocketraft-inner", "inner-secret-1");

struct Secured {
    _namesrv: NameServer,
    _broker: Broker,
    namesrv: String,
    broker: String,
    admin: MqClientApi,
}

fn credentials((ak, sk): (&str, &str)) -> SessionCredentials {
    SessionCredentials::new(ak, sk).expect("credentials")
}

fn api_as(credentials: Option<SessionCredentials>) -> MqClientApi {
    MqClientApi::new(
        RemotingClient::new(ClientConfig {
            credentials,
            ..ClientConfig::default()
        }),
        Duration::from_secs(5),
    )
}

fn broker_config(dir: &std::path::Path, namesrv: SocketAddr) -> BrokerConfig {
    let mut config = BrokerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        namesrv_addr: namesrv.to_string(),
        auto_create_topic_enable: true,
        authentication_enabled: true,
        authorization_enabled: true,
        init_authentication_user: Some(credentials(ADMIN)),
        inner_client_authentication_credentials: Some(credentials(INNER)),
        ..BrokerConfig::default()
    };
    config.store.store_root = dir.to_path_buf();
    config.store.commitlog_segment_size = 256 * 1024;
    config.store.flush_disk_type = FlushDiskType::SyncFlush;
    config.store.pretouch = false;
    config
}

/// A NameServer and a broker, both with ACL on, sharing the inner credentials (no cluster
/// secret: the broker registers by signing), the topic, and users: `alice` (Normal, no ACL),
/// `bob` (disabled), `carol` (Sub on the topic and group `cg`), `dave` (Get on the cluster).
async fn start(dir: &std::path::Path) -> Secured {
    let namesrv = NameServer::start(NamesrvConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        authentication_enabled: true,
        authorization_enabled: true,
        init_authentication_user: Some(credentials(ADMIN)),
        inner_client_authentication_credentials: Some(credentials(INNER)),
        ..NamesrvConfig::default()
    })
    .await
    .expect("namesrv starts");
    let broker = Broker::start(broker_config(dir, namesrv.local_addr()))
        .await
        .expect("broker starts");
    let s = Secured {
        namesrv: namesrv.local_addr().to_string(),
        broker: broker.local_addr().to_string(),
        _namesrv: namesrv,
        _broker: broker,
        admin: api_as(Some(credentials(ADMIN))),
    };
    s.admin
        .create_topic(&s.broker, &TopicConfig::new(TOPIC, 1))
        .await
        .expect("the admin creates the topic");
    for (name, password, status) in [
        ("alice", "alice-secret", "enable"),
        ("bob", "bob-secret", "disable"),
        ("carol", "carol-secret", "enable"),
        ("dave", "dave-secret", "enable"),
    ] {
        let user = UserInfo {
            username: name.into(),
            password: Some(password.into()),
            user_type: Some("Normal".into()),
            user_status: Some(status.into()),
        };
        s.admin.create_user(&s.broker, &user).await.expect("user");
    }
    allow(&s, "carol", &[("Topic:orders", "Sub"), ("Group:cg", "Sub")]).await;
    allow(&s, "dave", &[("Cluster:DefaultCluster", "Get")]).await;
    s
}

async fn allow(s: &Secured, user: &str, entries: &[(&str, &str)]) {
    let acl = AclInfo {
        subject: format!("User:{user}"),
        policies: vec![PolicyInfo {
            policy_type: None,
            entries: entries
                .iter()
                .map(|(resource, action)| PolicyEntryInfo {
                    resource: resource.to_string(),
                    actions: vec![action.to_string()],
                    source_ips: vec![],
                    decision: "Allow".into(),
                })
                .collect(),
        }],
    };
    s.admin.create_acl(&s.broker, &acl).await.expect("acl");
}

fn message(body: &str) -> SendRequest {
    SendRequest {
        producer_group: "pg".into(),
        topic: TOPIC.into(),
        queue_id: 0,
        body: Bytes::from(body.to_string()),
        properties: BTreeMap::new(),
        ..SendRequest::default()
    }
}

fn pull_request() -> PullRequest {
    PullRequest {
        consumer_group: "cg".into(),
        topic: TOPIC.into(),
        queue_id: 0,
        queue_offset: 0,
        max_msg_nums: 32,
        sys_flag: pull_sys_flag::SUBSCRIPTION,
        commit_offset: -1,
        suspend_timeout_ms: 0,
        subscription: Some("*".into()),
    }
}

/// The refusal's remark, after checking it is NO_PERMISSION.
fn refused<T: std::fmt::Debug>(result: Result<T, ApiError>) -> String {
    match result {
        Err(ApiError::Refused(r)) if r.code == response_code::NO_PERMISSION => r.remark,
        other => panic!("expected NO_PERMISSION, got {other:?}"),
    }
}

async fn stored(s: &Secured) -> i64 {
    s.admin
        .max_offset(&s.broker, TOPIC, 0)
        .await
        .expect("max offset")
}

#[tokio::test]
async fn unsigned_wrongly_signed_unknown_and_disabled_callers_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path()).await;
    let before = stored(&s).await;

    let remark = refused(api_as(None).send(&s.broker, &message("unsigned")).await);
    assert!(remark.contains("not signed"), "{remark}");
    let wrong = credentials(("alice", "not-alices-secret"));
    let remark = refused(
        api_as(Some(wrong))
            .send(&s.broker, &message("forged"))
            .await,
    );
    assert!(remark.contains("check signature failed"), "{remark}");
    let unknown = credentials(("mallory", "whatever"));
    let remark = refused(api_as(Some(unknown)).send(&s.broker, &message("x")).await);
    assert!(remark.contains("User:mallory is not found"), "{remark}");
    let bob = credentials(("bob", "bob-secret"));
    let remark = refused(api_as(Some(bob)).send(&s.broker, &message("x")).await);
    assert!(remark.contains("disabled"), "{remark}");
    // Unsigned admin requests change nothing either.
    let evil = UserInfo {
        username: "evil".into(),
        password: Some("evil-secret".into()),
        user_type: Some("Super".into()),
        user_status: None,
    };
    refused(api_as(None).create_user(&s.broker, &evil).await);
    assert_eq!(stored(&s).await, before, "a refused send stored nothing");
    let evil = s.admin.get_user(&s.broker, "evil").await.expect("get user");
    assert!(evil.is_none(), "a refused AUTH_CREATE_USER created nothing");
}

#[tokio::test]
async fn a_request_changed_after_signing_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path()).await;
    let before = stored(&s).await;
    let mut request = RemotingCommand::request(request_code::UPDATE_AND_CREATE_TOPIC)
        .with_ext("topic", "harmless")
        .with_ext("readQueueNums", 1)
        .with_ext("writeQueueNums", 1)
        .with_ext("perm", 6);
    sign(&mut request, &credentials(ADMIN));
    // A man in the middle renames the topic; the signature no longer covers the content.
    request.set_ext("topic", TOPIC);
    request.set_ext("writeQueueNums", 64);
    let raw = RemotingClient::new(ClientConfig::default());
    let response = raw
        .invoke(&s.broker, request, Duration::from_secs(5))
        .await
        .expect("answered");
    assert_eq!(response.code, response_code::NO_PERMISSION, "{response:?}");
    let topics = s.admin.broker_topics(&s.broker).await.expect("topics");
    let config = topics.topic_config_table.get(TOPIC).expect("topic kept");
    assert_eq!(config.write_queue_nums, 1, "the topic was not changed");
    assert!(!topics.topic_config_table.contains_key("harmless"));
    assert_eq!(stored(&s).await, before);
}

#[tokio::test]
async fn normal_users_cannot_call_admin_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path()).await;
    let alice = api_as(Some(credentials(("alice", "alice-secret"))));
    let remark = refused(
        alice
            .create_topic(&s.broker, &TopicConfig::new("mine", 4))
            .await,
    );
    assert!(remark.contains("User:alice"), "{remark}");
    let promote = UserInfo {
        username: "alice".into(),
        password: None,
        user_type: Some("Super".into()),
        user_status: None,
    };
    refused(alice.update_user(&s.broker, &promote).await);
    refused(alice.broker_topics(&s.broker).await);

    let topics = s.admin.broker_topics(&s.broker).await.expect("topics");
    assert!(
        !topics.topic_config_table.contains_key("mine"),
        "no topic was created"
    );
    let user = s.admin.get_user(&s.broker, "alice").await.expect("get");
    assert_eq!(user.and_then(|u| u.user_type).as_deref(), Some("Normal"));
}

#[tokio::test]
async fn sub_without_pub_pulls_but_cannot_send() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path()).await;
    s.admin
        .send(&s.broker, &message("from-admin"))
        .await
        .expect("the admin's signed send is served");
    let before = stored(&s).await;
    let carol = api_as(Some(credentials(("carol", "carol-secret"))));
    let remark = refused(carol.send(&s.broker, &message("from-carol")).await);
    assert!(
        remark.contains("User:carol") && remark.contains("Pub") && remark.contains("Topic:orders"),
        "{remark}"
    );
    assert_eq!(stored(&s).await, before, "the refused send stored nothing");

    let pulled = carol.pull(&s.broker, &pull_request()).await.expect("pull");
    assert_eq!(pulled.status, PullStatus::Found);
    let bodies: Vec<&[u8]> = pulled.messages.iter().map(|m| &m.body[..]).collect();
    assert_eq!(bodies, vec![&b"from-admin"[..]]);
    // Sub on another group is not granted.
    let mut other_group = pull_request();
    other_group.consumer_group = "other".into();
    let remark = refused(carol.pull(&s.broker, &other_group).await);
    assert!(remark.contains("Group:other"), "{remark}");
}

#[tokio::test]
async fn management_codes_need_what_rocketmq_maps_them_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path()).await;
    let erin = UserInfo {
        username: "erin".into(),
        password: Some("erin-secret".into()),
        user_type: Some("Normal".into()),
        user_status: Some("enable".into()),
    };
    s.admin.create_user(&s.broker, &erin).await.expect("erin");
    allow(&s, "erin", &[("Group:cg", "Get"), ("Topic:orders", "Get")]).await;
    // carol (Sub on the topic and cg) keeps a consumer of cg connected.
    let carol = api_as(Some(credentials(("carol", "carol-secret"))));
    let heartbeat = HeartbeatData {
        client_id: "carol-client".into(),
        producer_data_set: vec![],
        consumer_data_set: vec![ConsumerData {
            group_name: "cg".into(),
            consume_type: Some("CONSUME_PASSIVELY".into()),
            message_model: Some("CLUSTERING".into()),
            consume_from_where: Some("CONSUME_FROM_LAST_OFFSET".into()),
            subscription_data_set: vec![SubscriptionData {
                topic: TOPIC.into(),
                sub_string: "*".into(),
                sub_version: 1,
                expression_type: Some("TAG".into()),
                ..SubscriptionData::default()
            }],
            unit_mode: false,
        }],
    };
    carol
        .heartbeat(&s.broker, &heartbeat)
        .await
        .expect("carol's consumer heartbeats");

    // GET_CONSUMER_CONNECTION_LIST (203): Get on the group.
    let erin = api_as(Some(credentials(("erin", "erin-secret"))));
    let connections = erin
        .consumer_connections(&s.broker, "cg")
        .await
        .expect("Get on Group:cg lists its connections");
    assert_eq!(connections.connection_set.len(), 1);
    assert_eq!(connections.connection_set[0].client_id, "carol-client");
    // Sub is not Get: carol may consume from cg but not list it.
    let remark = refused(carol.consumer_connections(&s.broker, "cg").await);
    assert!(
        remark.contains("User:carol") && remark.contains("Get") && remark.contains("Group:cg"),
        "{remark}"
    );
    // Get on cg is not Get on another group.
    let remark = refused(erin.consumer_connections(&s.broker, "other").await);
    assert!(remark.contains("Group:other"), "{remark}");
    // QUERY_TOPIC_CONSUME_BY_WHO (300): Get on the topic.
    let groups = erin
        .topic_consumed_by(&s.broker, TOPIC)
        .await
        .expect("Get on Topic:orders asks who consumes it");
    assert!(groups.group_list.contains("cg"), "{groups:?}");
    refused(carol.topic_consumed_by(&s.broker, TOPIC).await);
    // GET_PRODUCER_CONNECTION_LIST (204) needs Get on the cluster, as RocketMQ maps it.
    let dave = api_as(Some(credentials(("dave", "dave-secret"))));
    let remark = refused(erin.producer_connections(&s.broker, "pg").await);
    assert!(remark.contains("Cluster:DefaultCluster"), "{remark}");
    let not_permission = dave.producer_connections(&s.broker, "pg").await;
    assert!(
        !matches!(&not_permission, Err(ApiError::Refused(r)) if r.code == response_code::NO_PERMISSION),
        "Get on the cluster passes the ACL: {not_permission:?}"
    );

    // UPDATE_BROKER_CONFIG (25) and GET_BROKER_CONFIG (26) need a Super user, even one with
    // Get on the cluster.
    let before = s.admin.broker_config(&s.broker).await.expect("config");
    let remark = refused(
        dave.update_broker_config(&s.broker, &[("deleteWhen", "01")])
            .await,
    );
    assert!(remark.contains("only Super users"), "{remark}");
    refused(dave.broker_config(&s.broker).await);
    let after = s.admin.broker_config(&s.broker).await.expect("config");
    assert_eq!(
        after.properties.get("deleteWhen"),
        before.properties.get("deleteWhen"),
        "the refused update changed nothing"
    );
}

#[tokio::test]
async fn only_super_users_see_passwords() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path()).await;
    let dave = api_as(Some(credentials(("dave", "dave-secret"))));
    let seen = dave
        .get_user(&s.broker, "alice")
        .await
        .expect("dave may read users");
    let seen = seen.expect("alice exists");
    assert_eq!(seen.username, "alice");
    assert_eq!(seen.password, None, "a Normal user never sees a password");
    let listed = dave.list_users(&s.broker, None).await.expect("list");
    assert!(!listed.is_empty() && listed.iter().all(|u| u.password.is_none()));

    let by_admin = s.admin.get_user(&s.broker, "alice").await.expect("get");
    assert_eq!(
        by_admin.and_then(|u| u.password).as_deref(),
        Some("alice-secret")
    );
    let carol = api_as(Some(credentials(("carol", "carol-secret"))));
    refused(carol.get_user(&s.broker, "alice").await);
}

#[tokio::test]
async fn with_authentication_off_passwords_go_only_to_super_callers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = ClusterSecret::new("auth-off-cluster-secret-0123").expect("secret");
    let namesrv = NameServer::start(
        NamesrvConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ..NamesrvConfig::default()
        }
        .with_cluster_secret(secret.clone()),
    )
    .await
    .expect("namesrv starts");
    let mut config = broker_config(dir.path(), namesrv.local_addr());
    config.authentication_enabled = false;
    config.authorization_enabled = false;
    config.init_authentication_user = None;
    config.inner_client_authentication_credentials = None;
    let broker = Broker::start(config.with_cluster_secret(secret.clone()))
        .await
        .expect("broker starts");
    let addr = broker.local_addr().to_string();
    // With authentication off anyone may create users, a Super one included...
    let anyone = api_as(None);
    for (name, password, kind) in [
        ("alice", "alice-secret", "Normal"),
        ("root", "root-secret", "Super"),
    ] {
        let user = UserInfo {
            username: name.into(),
            password: Some(password.into()),
            user_type: Some(kind.into()),
            user_status: None,
        };
        anyone.create_user(&addr, &user).await.expect("user");
    }
    // ... but reads the users without their passwords: unsigned, signed by a Normal user, or
    // with a forged Super signature.
    let forged = api_as(Some(credentials(("root", "not-roots-secret"))));
    let alice = api_as(Some(credentials(("alice", "alice-secret"))));
    for (who, api) in [
        ("unsigned", &anyone),
        ("Normal", &alice),
        ("forged", &forged),
    ] {
        let user = api
            .get_user(&addr, "alice")
            .await
            .expect("get user")
            .expect("alice exists");
        assert_eq!(user.username, "alice");
        assert_eq!(user.user_type.as_deref(), Some("Normal"));
        assert_eq!(user.password, None, "{who} saw a password");
        let users = api.list_users(&addr, None).await.expect("list users");
        assert_eq!(users.len(), 2, "{who}: {users:?}");
        assert!(
            users.iter().all(|u| u.password.is_none()),
            "{who} saw a password"
        );
    }
    // A Super user's signature, or a connection that proved the cluster secret, sees them.
    let root = api_as(Some(credentials(("root", "root-secret"))));
    let trusted = MqClientApi::new(
        RemotingClient::new(ClientConfig {
            cluster_secret: Some(secret),
            ..ClientConfig::default()
        }),
        Duration::from_secs(5),
    );
    for (who, api) in [("Super", &root), ("cluster secret", &trusted)] {
        let user = api
            .get_user(&addr, "alice")
            .await
            .expect("get user")
            .expect("alice exists");
        assert_eq!(user.password.as_deref(), Some("alice-secret"), "{who}");
        let users = api.list_users(&addr, None).await.expect("list users");
        assert!(
            users.iter().all(|u| u.password.is_some()),
            "{who}: {users:?}"
        );
    }
    // A captured Super read replayed, or one signed long ago, shows no password.
    let read = |request: RemotingCommand| {
        let addr = addr.clone();
        async move {
            let response = raw(&addr, request).await;
            assert_eq!(response.code, response_code::SUCCESS, "{response:?}");
            let user: UserInfo = serde_json::from_slice(&response.body).expect("a user");
            user.password
        }
    };
    let get_alice =
        || RemotingCommand::request(request_code::AUTH_GET_USER).with_ext("username", "alice");
    let mut captured = get_alice();
    sign(&mut captured, &credentials(("root", "root-secret")));
    assert_eq!(
        read(captured.clone()).await.as_deref(),
        Some("alice-secret")
    );
    assert_eq!(read(captured).await, None, "a replay shows no password");
    let mut old = get_alice();
    old.set_ext(
        rocketraft_remoting::auth::SIGNED_AT,
        format!("{}.t", rocketraft_common::time::now_ms() - 600_000),
    );
    rocketraft_remoting::auth::sign_without_time(&mut old, &credentials(("root", "root-secret")));
    assert_eq!(
        read(old).await,
        None,
        "an expired signature shows no password"
    );
    broker.shutdown().await;
    namesrv.shutdown().await;
}

/// A raw client (no credentials of its own): sends requests exactly as given.
async fn raw(addr: &str, request: RemotingCommand) -> RemotingCommand {
    RemotingClient::new(ClientConfig::default())
        .invoke(addr, request, Duration::from_secs(5))
        .await
        .expect("answered")
}

fn send_command(body: &str) -> RemotingCommand {
    RemotingCommand::request(request_code::SEND_MESSAGE_V2)
        .with_ext("a", "pg")
        .with_ext("b", TOPIC)
        .with_ext("c", "TBW102")
        .with_ext("d", 4)
        .with_ext("e", 0)
        .with_ext("f", 0)
        .with_ext("g", rocketraft_common::time::now_ms())
        .with_ext("h", 0)
        .with_ext("i", "")
        .with_ext("j", 0)
        .with_ext("k", "false")
        .with_ext("m", "false")
        .with_body(Bytes::from(body.to_string()))
}

/// The opt-in signed time: replayed and expired requests are refused, fresh ones served;
/// without a signed time a request is refused only where `authRequireSignedTimestamp` is on.
#[tokio::test]
async fn replayed_expired_and_untimed_requests_are_refused_where_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let namesrv = NameServer::start(NamesrvConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        authentication_enabled: true,
        authorization_enabled: true,
        auth_require_signed_timestamp: true,
        auth_signed_timestamp_window_seconds: 60,
        init_authentication_user: Some(credentials(ADMIN)),
        inner_client_authentication_credentials: Some(credentials(INNER)),
        ..NamesrvConfig::default()
    })
    .await
    .expect("namesrv starts");
    let mut config = broker_config(dir.path(), namesrv.local_addr());
    config.auth_require_signed_timestamp = true;
    config.auth_signed_timestamp_window_seconds = 60;
    let broker = Broker::start(config).await.expect("broker starts");
    let addr = broker.local_addr().to_string();
    let ns = namesrv.local_addr().to_string();
    let admin = api_as(Some(credentials(ADMIN)));
    // Our own signers add the time: the admin works, and the broker registered with the
    // NameServer (signed with the inner credentials) so that the route exists.
    admin
        .create_topic(&addr, &TopicConfig::new(TOPIC, 1))
        .await
        .expect("the admin's timed request is served");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while admin.topic_route(&ns, TOPIC).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "never routed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored_here = || async { admin.max_offset(&addr, TOPIC, 0).await.expect("offset") };

    // A fresh signed send is served once; the same bytes again are a replay.
    let mut send = send_command("once");
    sign(&mut send, &credentials(ADMIN));
    let first = raw(&addr, send.clone()).await;
    assert_eq!(first.code, response_code::SUCCESS, "{first:?}");
    let again = raw(&addr, send).await;
    assert_eq!(again.code, response_code::NO_PERMISSION, "{again:?}");
    let remark = again.remark.unwrap_or_default();
    assert!(remark.contains("replay"), "{remark}");
    assert_eq!(stored_here().await, 1, "the replay stored nothing");

    // Signed 10 minutes ago (the signature is valid, the time outside the 60 s window).
    let mut old = send_command("old");
    old.set_ext(
        rocketraft_remoting::auth::SIGNED_AT,
        format!("{}.t", rocketraft_common::time::now_ms() - 600_000),
    );
    rocketraft_remoting::auth::sign_without_time(&mut old, &credentials(ADMIN));
    let expired = raw(&addr, old).await;
    assert_eq!(expired.code, response_code::NO_PERMISSION, "{expired:?}");
    assert!(
        expired.remark.unwrap_or_default().contains("outside"),
        "expired"
    );
    // Signed as RocketMQ's AclClientRPCHook signs (no time): refused by name, at the broker
    // and at the NameServer.
    let mut untimed = send_command("untimed");
    rocketraft_remoting::auth::sign_without_time(&mut untimed, &credentials(ADMIN));
    let refused = raw(&addr, untimed).await;
    assert_eq!(refused.code, response_code::NO_PERMISSION, "{refused:?}");
    assert!(
        refused
            .remark
            .unwrap_or_default()
            .contains("authRequireSignedTimestamp"),
        "names the key"
    );
    let mut route =
        RemotingCommand::request(request_code::GET_ROUTEINFO_BY_TOPIC).with_ext("topic", TOPIC);
    rocketraft_remoting::auth::sign_without_time(&mut route, &credentials(ADMIN));
    let refused = raw(&ns, route.clone()).await;
    assert_eq!(refused.code, response_code::NO_PERMISSION, "{refused:?}");
    assert_eq!(stored_here().await, 1, "nothing refused was stored");
    broker.shutdown().await;
    namesrv.shutdown().await;

    // The default (switch off): RocketMQ-style untimed requests are served; timed ones are
    // still checked.
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path()).await;
    let mut untimed = send_command("untimed, switch off");
    rocketraft_remoting::auth::sign_without_time(&mut untimed, &credentials(ADMIN));
    let served = raw(&s.broker, untimed).await;
    assert_eq!(served.code, response_code::SUCCESS, "{served:?}");
    let mut timed = send_command("timed, switch off");
    sign(&mut timed, &credentials(ADMIN));
    assert_eq!(
        raw(&s.broker, timed.clone()).await.code,
        response_code::SUCCESS
    );
    assert_eq!(
        raw(&s.broker, timed).await.code,
        response_code::NO_PERMISSION,
        "a replay is refused with the switch off too"
    );
    assert_eq!(stored(&s).await, 2);
}

#[tokio::test]
async fn the_nameserver_checks_with_the_brokers_users() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path()).await;
    // The broker registered by signing with the inner credentials.
    let route = s.admin.topic_route(&s.namesrv, TOPIC).await.expect("route");
    assert_eq!(route.broker_datas.len(), 1);

    refused(api_as(None).topic_route(&s.namesrv, TOPIC).await);
    let wrong = credentials(("carol", "wrong"));
    refused(api_as(Some(wrong)).topic_route(&s.namesrv, TOPIC).await);
    // carol is a user of the broker: the NameServer asks it, and her Sub allows the route.
    let carol = api_as(Some(credentials(("carol", "carol-secret"))));
    let route = carol
        .topic_route(&s.namesrv, TOPIC)
        .await
        .expect("carol's route");
    assert_eq!(route.broker_datas.len(), 1);
    // alice has no ACL.
    let alice = api_as(Some(credentials(("alice", "alice-secret"))));
    let remark = refused(alice.topic_route(&s.namesrv, TOPIC).await);
    assert!(remark.contains("User:alice"), "{remark}");
    // An unsigned registration of a forged broker is refused and changes no route.
    let forged = RemotingCommand::request(request_code::UNREGISTER_BROKER)
        .with_ext("brokerAddr", s.broker.clone())
        .with_ext("clusterName", "DefaultCluster")
        .with_ext("brokerName", "broker-a")
        .with_ext("brokerId", 0);
    let response = RemotingClient::new(ClientConfig::default())
        .invoke(&s.namesrv, forged, Duration::from_secs(5))
        .await
        .expect("answered");
    assert_eq!(response.code, response_code::NO_PERMISSION);
    let route = s.admin.topic_route(&s.namesrv, TOPIC).await.expect("route");
    assert_eq!(
        route.broker_datas.len(),
        1,
        "the broker is still registered"
    );
}

/// RocketMQ's controller checks no credentials (neither standalone nor in the NameServer); here
/// a controller embedded in a NameServer with ACL on serves its codes through the NameServer's
/// checks: without a cluster secret, an unsigned caller or an unknown user changes nothing,
/// and a Super user (`admin --access-key/--secret-key`) may register, read and clean.
#[tokio::test]
async fn the_embedded_controller_answers_only_proven_callers() {
    use rocketraft_controller::client::ControllerClient;
    let dir = tempfile::tempdir().expect("tempdir");
    let raft_port = rocketraft_common::net::free_loopback_port().expect("port");
    let mut c = rocketraft_controller::ControllerConfig::default();
    c.raft.node_id = 1;
    c.raft.listen = format!("127.0.0.1:{raft_port}").parse().expect("addr");
    c.raft.data_dir = dir.path().join("controller");
    c.raft.initial_members =
        std::collections::BTreeMap::from([(1, format!("127.0.0.1:{raft_port}"))]);
    c.raft.election_timeout_min_ms = 300;
    c.raft.election_timeout_max_ms = 600;
    c.raft.heartbeat_interval_ms = 100;
    c.listen = "127.0.0.1:0".parse().expect("addr");
    let namesrv = NameServer::start(NamesrvConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        enable_controller_in_namesrv: true,
        controller: c,
        authentication_enabled: true,
        authorization_enabled: true,
        init_authentication_user: Some(credentials(ADMIN)),
        ..NamesrvConfig::default()
    })
    .await
    .expect("namesrv with controller");
    let ns = namesrv.local_addr().to_string();
    let client = |creds: Option<SessionCredentials>| {
        ControllerClient::new(
            RemotingClient::new(ClientConfig {
                credentials: creds,
                ..ClientConfig::default()
            }),
            Duration::from_secs(5),
        )
    };
    let admin = client(Some(credentials(ADMIN)));
    let (cluster, set, broker) = ("DefaultCluster", "broker-a", "127.0.0.1:10911");
    // The Super user sets up a broker set (once the controller has a leader).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        match admin
            .apply_broker_id(&ns, cluster, set, 1, &format!("{broker};1"))
            .await
        {
            Ok(()) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "controller not ready");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the controller never served the admin: {e}"),
        }
    }
    admin
        .register_broker(&ns, cluster, set, 1, broker)
        .await
        .expect("the admin registers");
    let before = admin
        .get_replica_info(&ns, set)
        .await
        .expect("replica info");
    let before_b = admin.get_replica_info(&ns, "broker-b").await;

    // An unknown user is looked up on the brokers, and none is registered here: the NameServer
    // cannot check and refuses with SYSTEM_ERROR saying so.
    for (who, c, code) in [
        ("unsigned", client(None), response_code::NO_PERMISSION),
        (
            "unknown user",
            client(Some(credentials(("mallory", "x")))),
            response_code::SYSTEM_ERROR,
        ),
        (
            "wrong secret",
            client(Some(credentials(("admin", "guess")))),
            response_code::NO_PERMISSION,
        ),
    ] {
        let refused = |what: &str, e: Option<i32>| {
            assert_eq!(e, Some(code), "{who}: {what}");
        };
        let e = c.clean_broker_data(&ns, cluster, set, None, true).await;
        refused("clean", e.err().and_then(|e| e.code()));
        let e = c.elect_master(&ns, cluster, set, Some(1), true).await;
        refused("elect", e.err().and_then(|e| e.code()));
        let e = c
            .apply_broker_id(&ns, cluster, "broker-b", 1, "127.0.0.1:1;1")
            .await;
        refused("apply", e.err().and_then(|e| e.code()));
        let e = c.register_broker(&ns, cluster, set, 2, "127.0.0.1:2").await;
        refused("register", e.err().and_then(|e| e.code()));
    }
    let after = admin
        .get_replica_info(&ns, set)
        .await
        .expect("replica info");
    assert_eq!(after, before, "nothing changed");
    assert_eq!(
        admin.get_replica_info(&ns, "broker-b").await,
        before_b,
        "no broker-b was applied"
    );
    // The Super user may clean the set's metadata.
    admin
        .clean_broker_data(&ns, cluster, set, None, true)
        .await
        .expect("the admin cleans");
    namesrv.shutdown().await;
}

/// A lite topic's queue (`%LMQ%${parent}${lite}`) is authorized as its parent topic over
/// Remoting: Sub on the parent pulls the lite topic's messages, a user without it (or with a
/// Deny on the parent and an Allow on every topic) is refused naming the parent, and a crafted
/// `%LMQ%` name is refused to anyone but a Super user.
#[tokio::test]
async fn lite_topic_queues_need_rights_on_their_parent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path()).await;
    let mut parent = TopicConfig::new("lites", 1);
    parent
        .attributes
        .insert("message.type".into(), "LITE".into());
    s.admin
        .create_topic(&s.broker, &parent)
        .await
        .expect("the admin creates the LITE topic");
    let mut lite = message("for-room-1");
    lite.topic = "lites".into();
    lite.properties
        .insert("__LITE_TOPIC".into(), "room-1".into());
    s.admin
        .send(&s.broker, &lite)
        .await
        .expect("the admin sends a lite message");
    for (name, entries) in [
        ("erin", &[("Topic:lites", "Sub"), ("Group:cg", "Sub")][..]),
        ("frank", &[("Topic:*", "Sub"), ("Group:cg", "Sub")][..]),
    ] {
        let user = UserInfo {
            username: name.into(),
            password: Some(format!("{name}-secret")),
            user_type: Some("Normal".into()),
            user_status: None,
        };
        s.admin.create_user(&s.broker, &user).await.expect("user");
        allow(&s, name, entries).await;
    }
    let deny = AclInfo {
        subject: "User:frank".into(),
        policies: vec![PolicyInfo {
            policy_type: None,
            entries: vec![PolicyEntryInfo {
                resource: "Topic:lites".into(),
                actions: vec!["Sub".into()],
                source_ips: vec![],
                decision: "Deny".into(),
            }],
        }],
    };
    s.admin.create_acl(&s.broker, &deny).await.expect("deny");
    let pull_of = |topic: &str| PullRequest {
        topic: topic.into(),
        ..pull_request()
    };
    let queue = "%LMQ%$lites$room-1";

    let erin = api_as(Some(credentials(("erin", "erin-secret"))));
    let pulled = erin.pull(&s.broker, &pull_of(queue)).await.expect("pull");
    assert_eq!(pulled.status, PullStatus::Found);
    let bodies: Vec<&[u8]> = pulled.messages.iter().map(|m| &m.body[..]).collect();
    assert_eq!(bodies, vec![&b"for-room-1"[..]]);

    // carol may Sub on `orders` only; frank on every topic but `lites`, which denies him.
    let carol = api_as(Some(credentials(("carol", "carol-secret"))));
    let frank = api_as(Some(credentials(("frank", "frank-secret"))));
    for who in [&carol, &frank] {
        let remark = refused(who.pull(&s.broker, &pull_of(queue)).await);
        assert!(remark.contains("Topic:lites"), "{remark}");
    }
    // Crafted names: refused even to frank, whom `Topic:*` would allow them literally.
    for crafted in ["%LMQ%$lites$room-1$x", "%LMQ%$$room-1", "%LMQ%lites"] {
        let remark = refused(frank.pull(&s.broker, &pull_of(crafted)).await);
        assert!(remark.contains("lite topic"), "{crafted}: {remark}");
    }
}
