//! Security of the gRPC proxy over real gRPC, in front of a real NameServer and broker on
//! loopback: users and ACLs written to the broker (AUTH_* Remoting requests), requests signed as
//! the official clients sign them (`MQv2-HMAC-SHA1` over `x-mq-date-time`), wrong signatures,
//! unknown access keys and denied topics refused with UNAUTHORIZED / FORBIDDEN and nothing
//! stored, the header ignored when authentication is off, and a TLS round trip.

use std::collections::HashMap;
use std::time::Duration;

use rocketraft_broker::Broker;
use rocketraft_common::acl::{AclInfo, PolicyEntryInfo, PolicyInfo, UserInfo};
use rocketraft_common::TopicConfig;
use rocketraft_nameserver::NameServer;
use rocketraft_proxy::auth::{
    authorization_header, date_time_now, format_date_time, parse_date_time, AuthConfig,
    DateTimeZones,
};
use rocketraft_proxy::metrics::ProxyMode;
use rocketraft_proxy::pb;
use rocketraft_proxy::pb::messaging_service_client::MessagingServiceClient;
use rocketraft_proxy::{Proxy, ProxyConfig, RemotingSecurity, SecurityConfig, TlsConfig};
use rocketraft_remoting::api::MqClientApi;
use rocketraft_remoting::{ClientConfig, RemotingClient, SessionCredentials};
use tonic::transport::Channel;

const OPEN: &str = "AuthOpen";
const SECRET: &str = "AuthSecret";
const GROUP: &str = "AuthGroup";

struct Cluster {
    _dir: tempfile::TempDir,
    namesrv: NameServer,
    broker: Broker,
    proxy: Proxy,
    api: MqClientApi,
}

impl Cluster {
    async fn start(security: SecurityConfig) -> Cluster {
        Cluster::start_in(ProxyMode::Cluster, security).await
    }

    /// The same with the proxy in `mode` (local: its Remoting requests go to the broker of
    /// this process in-process once the broker registered its connection).
    async fn start_in(mode: ProxyMode, security: SecurityConfig) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        // The proxy signs its Remoting requests with the broker's inner credentials: the broker
        // shows users' secret keys only to a Super user.
        let (namesrv, broker) = crate::support::start_backend(dir.path(), |b| {
            b.inner_client_authentication_credentials = Some(inner());
        })
        .await;
        let api = MqClientApi::new(
            RemotingClient::new(ClientConfig::default()),
            Duration::from_secs(5),
        );
        for topic in [OPEN, SECRET] {
            crate::support::create_topic(&namesrv, &broker, &TopicConfig::new(topic, 2)).await;
        }
        let proxy = Proxy::start_secure(
            ProxyConfig {
                listen: "127.0.0.1:0".parse().expect("addr"),
                advertised_host: None,
                namesrv_addr: namesrv.local_addr().to_string(),
                proxy_mode: mode,
                ..ProxyConfig::default()
            },
            security,
        )
        .await
        .expect("proxy");
        Cluster {
            _dir: dir,
            namesrv,
            broker,
            proxy,
            api,
        }
    }

    fn broker_addr(&self) -> String {
        self.broker.local_addr().to_string()
    }

    /// Messages stored in `topic` (the sum of its queues' max offsets).
    async fn stored(&self, topic: &str) -> i64 {
        let mut sum = 0;
        for q in 0..2 {
            sum += self
                .api
                .max_offset(&self.broker_addr(), topic, q)
                .await
                .expect("max offset");
        }
        sum
    }

    async fn client(&self) -> MessagingServiceClient<Channel> {
        MessagingServiceClient::connect(format!("http://{}", self.proxy.local_addr()))
            .await
            .expect("connect")
    }

    async fn stop(self) {
        self.proxy.shutdown().await;
        self.broker.shutdown().await;
        self.namesrv.shutdown().await;
    }
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

/// `message` with the headers an official client sends for `ak` / `sk`.
fn signed<T>(message: T, ak: &str, sk: &str) -> tonic::Request<T> {
    signed_at(message, ak, sk, &date_time_now())
}

/// `message` signed for `ak` / `sk` at `date`.
fn signed_at<T>(message: T, ak: &str, sk: &str, date: &str) -> tonic::Request<T> {
    with_headers(message, &authorization_header(ak, sk, date), date)
}

/// Seconds since the epoch now, UTC.
fn now_s() -> i64 {
    rocketraft_common::time::now_ms() / 1000
}

fn with_headers<T>(message: T, authorization: &str, date: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let m = request.metadata_mut();
    m.insert("authorization", authorization.parse().expect("ascii"));
    m.insert("x-mq-date-time", date.parse().expect("ascii"));
    m.insert("x-mq-client-id", "auth-test-client".parse().expect("ascii"));
    request
}

async fn send(
    client: &mut MessagingServiceClient<Channel>,
    request: tonic::Request<pb::SendMessageRequest>,
) -> pb::Status {
    client
        .send_message(request)
        .await
        .expect("send rpc")
        .into_inner()
        .status
        .expect("status")
}

fn user(name: &str, password: &str, user_type: &str) -> UserInfo {
    UserInfo {
        username: name.into(),
        password: Some(password.into()),
        user_type: Some(user_type.into()),
        user_status: None,
    }
}

fn grant(subject: &str, entries: &[(&str, &[&str], &str)]) -> AclInfo {
    AclInfo {
        subject: subject.into(),
        policies: vec![PolicyInfo {
            policy_type: Some("Custom".into()),
            entries: entries
                .iter()
                .map(|(resource, actions, decision)| PolicyEntryInfo {
                    resource: resource.to_string(),
                    actions: actions.iter().map(|a| a.to_string()).collect(),
                    source_ips: vec![],
                    decision: decision.to_string(),
                })
                .collect(),
        }],
    }
}

/// The broker's `innerClientAuthenticationCredentials`, which the proxy signs with.
fn inner() -> SessionCredentials {
    SessionCredentials::new("rocketraft-inner", "inner-secret").expect("credentials")
}

fn auth_on() -> SecurityConfig {
    SecurityConfig {
        auth: AuthConfig {
            enabled: true,
            cache_ttl: Duration::from_millis(300),
            ..AuthConfig::default()
        },
        remoting: RemotingSecurity {
            credentials: Some(inner()),
            ..RemotingSecurity::default()
        },
        ..SecurityConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn authentication_without_a_super_remoting_identity_is_refused_at_start() {
    // Brokers show users' secret keys only to a Super user or a holder of the cluster secret:
    // a proxy with neither could verify no signature, so it does not start.
    let mut security = auth_on();
    security.remoting.credentials = None;
    let refused = Proxy::start_secure(
        ProxyConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            advertised_host: None,
            namesrv_addr: "127.0.0.1:1".into(),
            ..ProxyConfig::default()
        },
        security.clone(),
    )
    .await;
    let Err(e) = refused else {
        panic!("a proxy that cannot read secret keys started")
    };
    assert!(
        e.to_string().contains("Super user") && e.to_string().contains("cluster secret"),
        "{e}"
    );
    // With the cluster secret instead of credentials it starts.
    security.remoting.cluster_secret = Some(
        rocketraft_common::trust::ClusterSecret::new("a-cluster-secret-long-enough-1234")
            .expect("secret"),
    );
    let proxy = Proxy::start_secure(
        ProxyConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            advertised_host: None,
            namesrv_addr: "127.0.0.1:1".into(),
            ..ProxyConfig::default()
        },
        security,
    )
    .await
    .expect("a proxy holding the cluster secret starts");
    proxy.shutdown().await;
}

/// A proxy in local mode reads users' secret keys from its broker in-process, where its
/// requests are attested rather than signed: the broker must still show them to it (its inner
/// credentials are a Super user's), or every signed gRPC client would be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_local_proxy_reads_secret_keys_in_process() {
    let cluster = Cluster::start_in(ProxyMode::Local, auth_on()).await;
    let broker = cluster.broker_addr();
    cluster
        .api
        .create_user(&broker, &user("alice", "alice-secret", "Normal"))
        .await
        .expect("alice");
    cluster
        .api
        .create_acl(
            &broker,
            &grant("User:alice", &[("Topic:AuthOpen", &["Pub"], "Allow")]),
        )
        .await
        .expect("grant");
    let mut client = cluster.client().await;
    // The first requests may go over TCP, until the broker registered the proxy's connection.
    let started = std::time::Instant::now();
    let mut n = 0;
    while cluster.proxy.local_dispatches_to(&broker) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never in-process"
        );
        let ok = send(
            &mut client,
            signed(
                send_request(OPEN, &format!("MSG-WARM-{n}")),
                "alice",
                "alice-secret",
            ),
        )
        .await;
        assert_eq!(ok.code, pb::Code::Ok as i32, "{}", ok.message);
        n += 1;
    }
    // Past the proxy's user cache (300 ms): the next send reads alice again, in-process.
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let before = cluster.proxy.local_dispatches_to(&broker);
        let ok = send(
            &mut client,
            signed(
                send_request(OPEN, &format!("MSG-LOCAL-{i}")),
                "alice",
                "alice-secret",
            ),
        )
        .await;
        assert_eq!(ok.code, pb::Code::Ok as i32, "{}", ok.message);
        assert!(cluster.proxy.local_dispatches_to(&broker) > before);
        // A wrong secret key is still refused.
        let refused = send(
            &mut client,
            signed(
                send_request(OPEN, &format!("MSG-BAD-{i}")),
                "alice",
                "wrong",
            ),
        )
        .await;
        assert_eq!(
            refused.code,
            pb::Code::Unauthorized as i32,
            "{}",
            refused.message
        );
    }
    assert_eq!(cluster.stored(OPEN).await, n + 3);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signatures_and_permissions_are_checked_and_refusals_store_nothing() {
    let cluster = Cluster::start(auth_on()).await;
    let broker = cluster.broker_addr();
    let api = &cluster.api;
    api.create_user(&broker, &user("alice", "alice-secret", "Normal"))
        .await
        .expect("alice");
    api.create_user(&broker, &user("root", "root-secret", "Super"))
        .await
        .expect("root");
    api.create_acl(
        &broker,
        &grant(
            "User:alice",
            &[
                ("Topic:AuthOpen", &["Pub", "Sub"], "Allow"),
                ("Topic:AuthSecret", &["Pub"], "Deny"),
                ("Group:AuthGroup", &["Sub"], "Allow"),
            ],
        ),
    )
    .await
    .expect("grant");
    let mut client = cluster.client().await;

    // A correctly signed send to an allowed topic is stored.
    let ok = send(
        &mut client,
        signed(send_request(OPEN, "MSG-OK"), "alice", "alice-secret"),
    )
    .await;
    assert_eq!(ok.code, pb::Code::Ok as i32, "{}", ok.message);
    assert_eq!(cluster.stored(OPEN).await, 1);
    // The official clients write hex in lowercase; the Java server also takes uppercase.
    let date = date_time_now();
    let header = authorization_header("alice", "alice-secret", &date);
    let next_second = format_date_time(parse_date_time(&date).expect("date") + 1);
    let (head, sig) = header.rsplit_once("Signature=").expect("signature");
    let upper = format!("{head}Signature={}", sig.to_uppercase());
    let ok = send(
        &mut client,
        with_headers(send_request(OPEN, "MSG-UPPER"), &upper, &date),
    )
    .await;
    assert_eq!(ok.code, pb::Code::Ok as i32, "{}", ok.message);
    assert_eq!(cluster.stored(OPEN).await, 2);

    // Wrong secret key, a signature over another date-time, an unknown access key, no header, a
    // garbled header: UNAUTHORIZED, nothing stored.
    let refusals = [
        signed(send_request(OPEN, "MSG-BADSIG"), "alice", "wrong-secret"),
        with_headers(send_request(OPEN, "MSG-OTHERDATE"), &header, &next_second),
        signed(send_request(OPEN, "MSG-UNKNOWN"), "mallory", "alice-secret"),
        tonic::Request::new(send_request(OPEN, "MSG-NOHEADER")),
        with_headers(
            send_request(OPEN, "MSG-GARBLED"),
            "MQv2-HMAC-SHA1 ???",
            &date,
        ),
        with_headers(
            send_request(OPEN, "MSG-NOTHEX"),
            "MQv2-HMAC-SHA1 Credential=alice, SignedHeaders=x-mq-date-time, Signature=xyz",
            &date,
        ),
    ];
    for request in refusals {
        let status = send(&mut client, request).await;
        assert_eq!(
            status.code,
            pb::Code::Unauthorized as i32,
            "{}",
            status.message
        );
        assert!(!status.message.is_empty());
    }
    assert_eq!(
        cluster.stored(OPEN).await,
        2,
        "a refused send stored nothing"
    );

    // A denied topic: FORBIDDEN naming the user, the resource and the action; nothing stored.
    let denied = send(
        &mut client,
        signed(send_request(SECRET, "MSG-DENIED"), "alice", "alice-secret"),
    )
    .await;
    assert_eq!(
        denied.code,
        pb::Code::Forbidden as i32,
        "{}",
        denied.message
    );
    for part in ["User:alice", "Topic:AuthSecret", "Pub"] {
        assert!(denied.message.contains(part), "{}", denied.message);
    }
    assert_eq!(cluster.stored(SECRET).await, 0);
    // A super user may do everything.
    let root = send(
        &mut client,
        signed(send_request(SECRET, "MSG-ROOT"), "root", "root-secret"),
    )
    .await;
    assert_eq!(root.code, pb::Code::Ok as i32, "{}", root.message);
    assert_eq!(cluster.stored(SECRET).await, 1);

    // Consuming needs Sub on the topic and on the group.
    let assignment = |group: &str, ak: &str, sk: &str| {
        signed(
            pb::QueryAssignmentRequest {
                topic: resource(OPEN),
                group: resource(group),
                endpoints: None,
            },
            ak,
            sk,
        )
    };
    let allowed = client
        .query_assignment(assignment(GROUP, "alice", "alice-secret"))
        .await
        .expect("assignment")
        .into_inner();
    assert_eq!(
        allowed.status.as_ref().map(|s| s.code),
        Some(pb::Code::Ok as i32)
    );
    assert!(!allowed.assignments.is_empty());
    let other_group = client
        .query_assignment(assignment("OtherGroup", "alice", "alice-secret"))
        .await
        .expect("assignment")
        .into_inner()
        .status
        .expect("status");
    assert_eq!(other_group.code, pb::Code::Forbidden as i32);
    assert!(other_group.message.contains("Group:OtherGroup"));
    let mut receive = signed(
        pb::ReceiveMessageRequest {
            group: resource("OtherGroup"),
            message_queue: Some(pb::MessageQueue {
                topic: resource(OPEN),
                id: -1,
                ..pb::MessageQueue::default()
            }),
            filter_expression: Some(pb::FilterExpression {
                r#type: pb::FilterType::Tag as i32,
                expression: "*".into(),
            }),
            batch_size: 16,
            invisible_duration: Some(prost_types::Duration {
                seconds: 30,
                nanos: 0,
            }),
            auto_renew: false,
            long_polling_timeout: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            attempt_id: None,
        },
        "alice",
        "alice-secret",
    );
    receive.set_timeout(Duration::from_secs(10));
    let mut stream = client
        .receive_message(receive)
        .await
        .expect("receive")
        .into_inner();
    let first = stream.message().await.expect("item").expect("a status");
    match first.content {
        Some(pb::receive_message_response::Content::Status(s)) => {
            assert_eq!(s.code, pb::Code::Forbidden as i32, "{}", s.message)
        }
        other => panic!("expected a FORBIDDEN status, got {other:?}"),
    }
    assert!(stream.message().await.expect("end").is_none());

    // Telemetry with a wrong signature is refused as a gRPC status.
    let (_tx, rx) = tokio::sync::mpsc::channel::<pb::TelemetryCommand>(1);
    let refused = client
        .telemetry(signed(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            "alice",
            "wrong-secret",
        ))
        .await
        .expect_err("telemetry refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    // A revoke reaches the proxy once its cache expires (it keeps no state of its own).
    api.delete_acl(&broker, "User:alice", None, Some("Topic:AuthOpen"))
        .await
        .expect("revoke");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let revoked = send(
        &mut client,
        signed(send_request(OPEN, "MSG-REVOKED"), "alice", "alice-secret"),
    )
    .await;
    assert_eq!(
        revoked.code,
        pb::Code::Forbidden as i32,
        "{}",
        revoked.message
    );
    assert_eq!(cluster.stored(OPEN).await, 2);
    // A disabled user cannot sign in.
    api.update_user(
        &broker,
        &UserInfo {
            username: "root".into(),
            password: None,
            user_type: None,
            user_status: Some("disable".into()),
        },
    )
    .await
    .expect("disable");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let disabled = send(
        &mut client,
        signed(send_request(SECRET, "MSG-DISABLED"), "root", "root-secret"),
    )
    .await;
    assert_eq!(disabled.code, pb::Code::Unauthorized as i32);
    assert_eq!(cluster.stored(SECRET).await, 1);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_authentication_the_header_is_ignored() {
    let cluster = Cluster::start(SecurityConfig::default()).await;
    let mut client = cluster.client().await;
    for request in [
        signed(send_request(OPEN, "MSG-A"), "nobody", "whatever"),
        with_headers(send_request(OPEN, "MSG-B"), "garbage", "not a date"),
        tonic::Request::new(send_request(OPEN, "MSG-C")),
    ] {
        let status = send(&mut client, request).await;
        assert_eq!(status.code, pb::Code::Ok as i32, "{}", status.message);
    }
    assert_eq!(cluster.stored(OPEN).await, 3);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_round_trip_with_a_private_ca() {
    // A CA, and a certificate for localhost / 127.0.0.1 signed by it.
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "rocketraft test CA");
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let leaf =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("leaf params")
            .signed_by(&leaf_key, &ca, &ca_key)
            .expect("leaf cert");
    let pem_dir = tempfile::tempdir().expect("tempdir");
    let cert = pem_dir.path().join("proxy.pem");
    let key = pem_dir.path().join("proxy.key");
    std::fs::write(&cert, leaf.pem()).expect("write cert");
    std::fs::write(&key, leaf_key.serialize_pem()).expect("write key");

    // A key that is not PEM is refused at start, with the file names in the error.
    let bad_key = pem_dir.path().join("bad.key");
    std::fs::write(&bad_key, "not a key").expect("write");
    let refused = Proxy::start_secure(
        ProxyConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            advertised_host: None,
            namesrv_addr: "127.0.0.1:1".into(),
            ..ProxyConfig::default()
        },
        SecurityConfig {
            tls: Some(TlsConfig {
                cert: cert.clone(),
                key: bad_key,
            }),
            ..SecurityConfig::default()
        },
    )
    .await;
    let Err(e) = refused else {
        panic!("a proxy with a bad key started")
    };
    assert!(e.to_string().contains("bad.key"), "{e}");

    let cluster = Cluster::start(SecurityConfig {
        tls: Some(TlsConfig { cert, key }),
        ..SecurityConfig::default()
    })
    .await;
    let port = cluster.proxy.local_addr().port();
    let channel = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .expect("endpoint")
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca.pem()))
                .domain_name("localhost"),
        )
        .expect("tls config")
        .connect()
        .await
        .expect("TLS connect");
    let mut client = MessagingServiceClient::new(channel);
    let route = client
        .query_route(pb::QueryRouteRequest {
            topic: resource(OPEN),
            endpoints: None,
        })
        .await
        .expect("route over TLS")
        .into_inner();
    assert_eq!(route.status.map(|s| s.code), Some(pb::Code::Ok as i32));
    let status = send(
        &mut client,
        tonic::Request::new(send_request(OPEN, "MSG-TLS")),
    )
    .await;
    assert_eq!(status.code, pb::Code::Ok as i32, "{}", status.message);
    assert_eq!(cluster.stored(OPEN).await, 1);

    // A plaintext client gets no answer from the TLS port.
    let mut plain = MessagingServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("tcp connect");
    let mut request = tonic::Request::new(pb::QueryRouteRequest {
        topic: resource(OPEN),
        endpoints: None,
    });
    request.set_timeout(Duration::from_secs(3));
    assert!(plain.query_route(request).await.is_err());
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_date_times_are_refused_and_fresh_ones_served() {
    // The default accepts any zone's local time (the Java and Python clients sign local time).
    let cluster = Cluster::start(auth_on()).await;
    cluster
        .api
        .create_user(
            &cluster.broker_addr(),
            &user("root", "root-secret", "Super"),
        )
        .await
        .expect("root");
    let mut client = cluster.client().await;
    let send_at = |id: &'static str, offset_s: i64| {
        signed_at(
            send_request(OPEN, id),
            "root",
            "root-secret",
            &format_date_time(now_s() + offset_s),
        )
    };
    for (id, offset_s) in [
        ("MSG-NOW", 0),
        ("MSG-UTC+8", 8 * 3600),
        ("MSG-UTC-5", -5 * 3600),
    ] {
        let status = send(&mut client, send_at(id, offset_s)).await;
        assert_eq!(status.code, pb::Code::Ok as i32, "{id}: {}", status.message);
    }
    assert_eq!(cluster.stored(OPEN).await, 3);
    for (id, offset_s) in [("MSG-DAY-OLD", -86_400), ("MSG-2-DAYS-AHEAD", 2 * 86_400)] {
        let status = send(&mut client, send_at(id, offset_s)).await;
        assert_eq!(
            status.code,
            pb::Code::Unauthorized as i32,
            "{id}: {}",
            status.message
        );
        assert!(
            status.message.contains("refused as stale or replayed"),
            "{}",
            status.message
        );
    }
    assert_eq!(cluster.stored(OPEN).await, 3);

    // Clients in UTC: a second proxy holds them to the 15-minute window itself.
    let mut utc = auth_on();
    utc.auth.date_time_zones = DateTimeZones::Utc;
    let strict = Proxy::start_secure(
        ProxyConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            advertised_host: None,
            namesrv_addr: cluster.namesrv.local_addr().to_string(),
            ..ProxyConfig::default()
        },
        utc,
    )
    .await
    .expect("strict proxy");
    let mut strict_client =
        MessagingServiceClient::connect(format!("http://{}", strict.local_addr()))
            .await
            .expect("connect");
    for (id, offset_s) in [
        ("MSG-20-MIN-OLD", -20 * 60),
        ("MSG-20-MIN-AHEAD", 20 * 60),
        ("MSG-UTC+8-STRICT", 8 * 3600),
    ] {
        let status = send(&mut strict_client, send_at(id, offset_s)).await;
        assert_eq!(
            status.code,
            pb::Code::Unauthorized as i32,
            "{id}: {}",
            status.message
        );
        assert!(
            status.message.contains("900 s window"),
            "{}",
            status.message
        );
    }
    assert_eq!(cluster.stored(OPEN).await, 3);
    for (id, offset_s) in [("MSG-10-MIN-OLD", -10 * 60), ("MSG-FRESH", 0)] {
        let status = send(&mut strict_client, send_at(id, offset_s)).await;
        assert_eq!(status.code, pb::Code::Ok as i32, "{id}: {}", status.message);
    }
    assert_eq!(cluster.stored(OPEN).await, 5);
    strict.shutdown().await;
    cluster.stop().await;
}

/// A lite topic's queue (`%LMQ%${parent}${lite}`) named as a topic is authorized as its parent:
/// rights on the parent reach it, a Deny on the parent covers it even for a user allowed every
/// topic, and a crafted `%LMQ%` name is FORBIDDEN whatever the user's rights.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lite_topic_queues_are_authorized_as_their_parent() {
    const LITE: &str = "AuthLite";
    let cluster = Cluster::start(auth_on()).await;
    let broker = cluster.broker_addr();
    let api = &cluster.api;
    let mut parent = TopicConfig::new(LITE, 2);
    parent
        .attributes
        .insert("message.type".into(), "LITE".into());
    crate::support::create_topic(&cluster.namesrv, &cluster.broker, &parent).await;
    for (name, entries) in [
        (
            "erin",
            &[
                ("Topic:AuthLite", &["Sub"][..], "Allow"),
                ("Group:AuthGroup", &["Sub"][..], "Allow"),
            ][..],
        ),
        (
            "frank",
            &[
                ("Topic:*", &["Sub"][..], "Allow"),
                ("Topic:AuthLite", &["Sub"][..], "Deny"),
                ("Group:AuthGroup", &["Sub"][..], "Allow"),
            ][..],
        ),
        ("grace", &[("Group:AuthGroup", &["Sub"][..], "Allow")][..]),
    ] {
        api.create_user(&broker, &user(name, &format!("{name}-secret"), "Normal"))
            .await
            .expect("user");
        api.create_acl(&broker, &grant(&format!("User:{name}"), entries))
            .await
            .expect("grant");
    }
    let mut client = cluster.client().await;
    let query = |topic: &str| pb::QueryOffsetRequest {
        message_queue: Some(pb::MessageQueue {
            topic: resource(topic),
            id: 0,
            permission: pb::Permission::ReadWrite as i32,
            broker: Some(pb::Broker {
                name: "broker-a".into(),
                id: 0,
                endpoints: None,
            }),
            accept_message_types: vec![],
        }),
        query_offset_policy: pb::QueryOffsetPolicy::End as i32,
        timestamp: None,
    };
    let ask = |topic: &str, who: &str| {
        let request = signed(query(topic), who, &format!("{who}-secret"));
        let mut client = client.clone();
        async move {
            client
                .query_offset(request)
                .await
                .expect("query offset rpc")
                .into_inner()
                .status
                .expect("status")
        }
    };
    let queue = "%LMQ%$AuthLite$room-1";
    // erin's Sub on the parent reaches its lite topic's queue (whatever the route answers, it is
    // not a refusal of permission).
    let erin = ask(queue, "erin").await;
    assert_ne!(erin.code, pb::Code::Forbidden as i32, "{}", erin.message);
    // frank may Sub on every topic but the parent: its Deny covers the lite topic.
    let frank = ask(queue, "frank").await;
    assert_eq!(frank.code, pb::Code::Forbidden as i32, "{}", frank.message);
    assert!(
        frank.message.contains("Topic:AuthLite"),
        "{}",
        frank.message
    );
    // grace has no right on the parent.
    let grace = ask(queue, "grace").await;
    assert_eq!(grace.code, pb::Code::Forbidden as i32, "{}", grace.message);
    assert!(
        grace.message.contains("Topic:AuthLite"),
        "{}",
        grace.message
    );
    // Crafted names are refused even to frank, whom `Topic:*` would allow them literally.
    for crafted in [
        "%LMQ%$AuthLite$a$b",
        "%LMQ%$$room-1",
        "%LMQ%AuthLite",
        "%LMQ%$%RETRY%AuthGroup$a",
    ] {
        let status = ask(crafted, "frank").await;
        assert_eq!(
            status.code,
            pb::Code::Forbidden as i32,
            "{crafted}: {}",
            status.message
        );
    }
    // A lite subscription names the parent and is served with the parent's rights.
    let mut sync = signed(
        pb::SyncLiteSubscriptionRequest {
            action: pb::LiteSubscriptionAction::PartialAdd as i32,
            topic: resource(LITE),
            group: resource(GROUP),
            lite_topic_set: vec!["room-1".into()],
            version: None,
            offset_option: None,
        },
        "erin",
        "erin-secret",
    );
    sync.metadata_mut()
        .insert("x-mq-client-id", "erin-client".parse().expect("ascii"));
    let synced = client
        .sync_lite_subscription(sync)
        .await
        .expect("sync rpc")
        .into_inner()
        .status
        .expect("status");
    assert_eq!(synced.code, pb::Code::Ok as i32, "{}", synced.message);
    cluster.stop().await;
}
