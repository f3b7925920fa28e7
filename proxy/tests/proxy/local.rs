//! Local mode (`rocketraft dev`, `rocketraft broker --proxy-listen`): a proxy in the broker's
//! process hands its requests to the broker's processors in-process
//! ([`rocketraft_remoting::local`]), still as requests of its own connection, so the broker's
//! authentication and ACLs judge them as they judge requests off the socket; a proxy in cluster
//! mode in the same process goes over TCP.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rocketraft_broker::store::FlushDiskType;
use rocketraft_broker::{Broker, BrokerConfig};
use rocketraft_common::acl::{AclInfo, PolicyEntryInfo, PolicyInfo, UserInfo};
use rocketraft_common::TopicConfig;
use rocketraft_nameserver::{NameServer, NamesrvConfig};
use rocketraft_proxy::metrics::ProxyMode;
use rocketraft_proxy::pb;
use rocketraft_proxy::{Proxy, ProxyConfig, RemotingSecurity, SecurityConfig};
use rocketraft_remoting::api::MqClientApi;
use rocketraft_remoting::{ClientConfig, RemotingClient, SessionCredentials};

const OPEN: &str = "LocalOpen";
const SECRET: &str = "LocalSecret";
const ADMIN: (&str, &str) = ("local-admin", "local-admin-secret");
const INNER: (&str, &str) = ("local-inner", "local-inner-secret");
const PUBLISHER: (&str, &str) = ("publisher", "publisher-secret");

fn credentials((ak, sk): (&str, &str)) -> SessionCredentials {
    SessionCredentials::new(ak, sk).expect("credentials")
}

fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource {
        resource_namespace: String::new(),
        name: name.to_string(),
    })
}

fn send_request(topic: &str, id: &str) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        messages: vec![pb::Message {
            topic: resource(topic),
            user_properties: HashMap::new(),
            system_properties: Some(pb::SystemProperties {
                message_id: id.to_string(),
                message_type: pb::MessageType::Normal as i32,
                ..pb::SystemProperties::default()
            }),
            body: format!("body of {id}").into_bytes(),
        }],
    }
}

/// A NameServer and a broker with authentication and authorization on; the topics; the user
/// `publisher`, allowed to publish to [`OPEN`] only.
struct Secured {
    _dir: tempfile::TempDir,
    namesrv: NameServer,
    broker: Broker,
    admin: MqClientApi,
}

impl Secured {
    async fn start() -> Secured {
        let dir = tempfile::tempdir().expect("tempdir");
        let namesrv = NameServer::start(NamesrvConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ..NamesrvConfig::default()
        })
        .await
        .expect("namesrv");
        let mut config = BrokerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            namesrv_addr: namesrv.local_addr().to_string(),
            authentication_enabled: true,
            authorization_enabled: true,
            init_authentication_user: Some(credentials(ADMIN)),
            inner_client_authentication_credentials: Some(credentials(INNER)),
            ..BrokerConfig::default()
        };
        config.store.store_root = dir.path().to_path_buf();
        config.store.commitlog_segment_size = 1 << 20;
        config.store.flush_disk_type = FlushDiskType::SyncFlush;
        config.store.pretouch = false;
        let broker = Broker::start(config).await.expect("broker");
        let admin = MqClientApi::new(
            RemotingClient::new(ClientConfig {
                credentials: Some(credentials(ADMIN)),
                ..ClientConfig::default()
            }),
            Duration::from_secs(5),
        );
        let s = Secured {
            _dir: dir,
            namesrv,
            broker,
            admin,
        };
        for topic in [OPEN, SECRET] {
            s.admin
                .create_topic(&s.broker_addr(), &TopicConfig::new(topic, 1))
                .await
                .expect("topic");
            let started = Instant::now();
            while s
                .admin
                .topic_route(&s.namesrv.local_addr().to_string(), topic)
                .await
                .is_err()
            {
                assert!(started.elapsed() < Duration::from_secs(10), "no route");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let user = UserInfo {
            username: PUBLISHER.0.into(),
            password: Some(PUBLISHER.1.into()),
            user_type: Some("Normal".into()),
            user_status: None,
        };
        s.admin
            .create_user(&s.broker_addr(), &user)
            .await
            .expect("user");
        let acl = AclInfo {
            subject: format!("User:{}", PUBLISHER.0),
            policies: vec![PolicyInfo {
                policy_type: None,
                entries: vec![PolicyEntryInfo {
                    resource: format!("Topic:{OPEN}"),
                    actions: vec!["Pub".into()],
                    source_ips: vec![],
                    decision: "Allow".into(),
                }],
            }],
        };
        s.admin
            .create_acl(&s.broker_addr(), &acl)
            .await
            .expect("acl");
        s
    }

    fn broker_addr(&self) -> String {
        self.broker.local_addr().to_string()
    }

    /// A proxy in `mode` whose Remoting requests are signed as `user`.
    async fn proxy(&self, mode: ProxyMode, user: (&str, &str)) -> Proxy {
        Proxy::start_secure(
            ProxyConfig {
                listen: "127.0.0.1:0".parse().expect("addr"),
                namesrv_addr: self.namesrv.local_addr().to_string(),
                proxy_mode: mode,
                ..ProxyConfig::default()
            },
            SecurityConfig {
                remoting: RemotingSecurity {
                    credentials: Some(credentials(user)),
                    ..RemotingSecurity::default()
                },
                ..SecurityConfig::default()
            },
        )
        .await
        .expect("proxy")
    }

    /// Messages stored in `topic`'s one queue.
    async fn stored(&self, topic: &str) -> i64 {
        self.admin
            .max_offset(&self.broker_addr(), topic, 0)
            .await
            .expect("max offset")
    }

    async fn stop(self) {
        self.broker.shutdown().await;
        self.namesrv.shutdown().await;
    }
}

async fn send(proxy: &Proxy, topic: &str, id: &str) -> pb::SendMessageResponse {
    let mut client = crate::support::grpc_client(proxy).await;
    client
        .send_message(send_request(topic, id))
        .await
        .expect("send")
        .into_inner()
}

fn code(r: &pb::SendMessageResponse) -> i32 {
    r.status.as_ref().map_or(-1, |s| s.code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_mode_calls_the_broker_in_process_and_its_acls_still_refuse() {
    let s = Secured::start().await;
    let proxy = s.proxy(ProxyMode::Local, PUBLISHER).await;

    // Allowed: stored, and the broker was called in-process. The proxy's first request to the
    // broker may go over TCP, before the broker registered the new connection: one send first.
    let broker = s.broker_addr();
    let warm = send(&proxy, OPEN, "LOCAL-OPEN-0").await;
    assert_eq!(code(&warm), pb::Code::Ok as i32, "{:?}", warm.status);
    let before = proxy.local_dispatches_to(&broker);
    let sent = send(&proxy, OPEN, "LOCAL-OPEN-1").await;
    assert_eq!(code(&sent), pb::Code::Ok as i32, "{:?}", sent.status);
    assert!(
        proxy.local_dispatches_to(&broker) > before,
        "the send did not reach the broker in-process"
    );
    assert_eq!(s.stored(OPEN).await, 2);

    // Denied by the broker's ACL, through the in-process path: nothing stored.
    let before = proxy.local_dispatches_to(&broker);
    let denied = send(&proxy, SECRET, "LOCAL-SECRET-1").await;
    assert_ne!(code(&denied), pb::Code::Ok as i32, "{:?}", denied.status);
    assert!(
        proxy.local_dispatches_to(&broker) > before,
        "the refused send did not reach the broker in-process"
    );
    assert_eq!(s.stored(SECRET).await, 0);

    // A wrong secret key is refused by the broker's authentication, in-process too (after
    // the first request, which may have gone over TCP).
    let impostor = s
        .proxy(ProxyMode::Local, (PUBLISHER.0, "not-the-secret"))
        .await;
    for i in 0..2 {
        let refused = send(&impostor, OPEN, &format!("LOCAL-OPEN-IMPOSTOR-{i}")).await;
        assert_ne!(code(&refused), pb::Code::Ok as i32, "{:?}", refused.status);
    }
    assert!(impostor.local_dispatches_to(&broker) > 0);
    assert_eq!(s.stored(OPEN).await, 2);

    // Cluster mode in the same process: over TCP, with the same outcome.
    let remote = s.proxy(ProxyMode::Cluster, PUBLISHER).await;
    let sent = send(&remote, OPEN, "LOCAL-OPEN-3").await;
    assert_eq!(code(&sent), pb::Code::Ok as i32, "{:?}", sent.status);
    let denied = send(&remote, SECRET, "LOCAL-SECRET-2").await;
    assert_ne!(code(&denied), pb::Code::Ok as i32, "{:?}", denied.status);
    assert_eq!(remote.local_dispatches(), 0);
    assert_eq!(s.stored(OPEN).await, 3);
    assert_eq!(s.stored(SECRET).await, 0);

    for p in [proxy, impostor, remote] {
        p.shutdown().await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_process_requests_are_requests_of_the_client_connection() {
    // The broker records the proxy's connection as the sender (the born host), as over TCP,
    // and a request the server has no processor for is answered as over TCP.
    let s = Secured::start().await;
    let client = RemotingClient::new(ClientConfig {
        credentials: Some(credentials(ADMIN)),
        in_process: true,
        ..ClientConfig::default()
    });
    let api = MqClientApi::new(client.clone(), Duration::from_secs(5));
    let broker = s.broker_addr();
    // The first requests may go over TCP until the server has registered the connection.
    let started = Instant::now();
    while client.local_dispatches_to(&broker) == 0 {
        assert!(started.elapsed() < Duration::from_secs(5), "never local");
        api.max_offset(&broker, OPEN, 0).await.expect("max offset");
    }
    let r = api
        .send(
            &broker,
            &rocketraft_remoting::api::SendRequest {
                producer_group: "local_pg".into(),
                topic: OPEN.into(),
                queue_id: 0,
                body: bytes::Bytes::from_static(b"local"),
                ..Default::default()
            },
        )
        .await
        .expect("send");
    let handle = client
        .connection_handle(&broker)
        .await
        .expect("the TCP connection is still there");
    let dispatched = client.local_dispatches_to(&broker);
    let (_, offset) =
        rocketraft_common::message::decode_offset_msg_id(&r.msg_id).expect("offset message id");
    let stored = api
        .view_message(&broker, offset, Some(OPEN))
        .await
        .expect("view message");
    assert!(client.local_dispatches_to(&broker) > dispatched);
    let born: SocketAddr = handle.local_addr();
    assert_eq!(stored.born_host, born, "the broker recorded another sender");

    let unknown = client
        .invoke(
            &broker,
            rocketraft_remoting::RemotingCommand::request(31_999),
            Duration::from_secs(5),
        )
        .await
        .expect("an answer");
    assert_eq!(
        unknown.code,
        rocketraft_remoting::response_code::REQUEST_CODE_NOT_SUPPORTED
    );
    assert!(unknown.is_response());
    drop(api);
    drop(client);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proxy_busy_in_process_keeps_its_connection_and_registrations() {
    // The broker closes a connection idle for a second; the proxy heartbeats its producers
    // every 5 s over TCP and sends in-process in between: those sends are the connection's
    // activity, so it stays, and with it the producer registered by it.
    const TOPIC: &str = "LocalIdleTopic";
    let dir = tempfile::tempdir().expect("tempdir");
    let (namesrv, broker) = crate::support::start_backend(dir.path(), |c| {
        c.server_limits.idle_seconds = 1;
    })
    .await;
    crate::support::create_topic(&namesrv, &broker, &TopicConfig::new(TOPIC, 1)).await;
    let proxy = Proxy::start(ProxyConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        namesrv_addr: namesrv.local_addr().to_string(),
        proxy_mode: ProxyMode::Local,
        ..ProxyConfig::default()
    })
    .await
    .expect("proxy");
    let mut client = crate::support::grpc_client(&proxy).await;
    // A producer of the topic: the proxy registers it with the broker (its group is the topic).
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::TelemetryCommand {
        status: None,
        command: Some(pb::telemetry_command::Command::Settings(pb::Settings {
            client_type: Some(pb::ClientType::Producer as i32),
            pub_sub: Some(pb::settings::PubSub::Publishing(pb::Publishing {
                topics: vec![pb::Resource {
                    resource_namespace: String::new(),
                    name: TOPIC.into(),
                }],
                max_body_size: 0,
                validate_message_type: true,
            })),
            ..pb::Settings::default()
        })),
    })
    .await
    .expect("settings");
    let outbound =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let mut req = tonic::Request::new(outbound);
    req.metadata_mut().insert(
        "x-mq-client-id",
        "local-idle-producer".parse().expect("ascii"),
    );
    let telemetry = client.telemetry(req).await.expect("telemetry").into_inner();
    // Registered on an open connection (the broker forgets the closed ones only later).
    let registered = || {
        broker
            .inner()
            .clients
            .producer_channels(TOPIC)
            .iter()
            .any(|c| !c.connection.is_closed())
    };
    let started = Instant::now();
    while !registered() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the proxy never registered its producer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Four idle timeouts of in-process sends, well within one heartbeat interval.
    let broker_addr = broker.local_addr().to_string();
    let before = proxy.local_dispatches_to(&broker_addr);
    let started = Instant::now();
    let mut i = 0u64;
    while started.elapsed() < Duration::from_secs(4) {
        let r = client
            .send_message(send_request(TOPIC, &format!("LOCAL-IDLE-{i}")))
            .await
            .expect("send")
            .into_inner();
        assert_eq!(code(&r), pb::Code::Ok as i32, "{:?}", r.status);
        assert!(
            registered(),
            "the producer registration was dropped after {:?} of in-process sends",
            started.elapsed()
        );
        i += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(proxy.local_dispatches_to(&broker_addr) >= before + i);

    drop(telemetry);
    proxy.shutdown().await;
    broker.shutdown().await;
    namesrv.shutdown().await;
}
