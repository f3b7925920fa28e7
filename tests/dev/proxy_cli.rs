//! `rocketraft proxy` as a real process in front of `rocketraft dev`: a gRPC client gets the
//! route of a topic with the proxy as its endpoint, sends, and receives through it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use rocketraft_common::TopicConfig;
use rocketraft_proxy::pb;
use rocketraft_proxy::pb::messaging_service_client::MessagingServiceClient;
use rocketraft_remoting::api::MqClientApi;
use rocketraft_remoting::{ClientConfig, RemotingClient};

use crate::support::{free_port, resource, Dev};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_process_routes_sends_and_receives() {
    let _turn = crate::support::file_turn(module_path!());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut dev = Dev::start(dir.path(), free_port(), free_port(), &[]);
    MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(5),
    )
    .create_topic(&dev.broker, &TopicConfig::new("ViaProxy", 2))
    .await
    .expect("topic");
    let port = free_port();
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_rocketraft"))
        .args([
            "proxy",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--namesrv",
            &dev.namesrv,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn proxy");
    let ready = BufReader::new(proxy.stdout.take().expect("stdout"))
        .lines()
        .next()
        .expect("a line")
        .expect("readable");
    assert!(ready.contains("rocketraft proxy is ready"), "{ready}");
    let mut client = MessagingServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect");
    let route = client
        .query_route(pb::QueryRouteRequest {
            topic: resource("ViaProxy"),
            endpoints: None,
        })
        .await
        .expect("route")
        .into_inner();
    assert_eq!(
        route.status.as_ref().map(|s| s.code),
        Some(pb::Code::Ok as i32)
    );
    assert_eq!(route.message_queues.len(), 2);
    let sent = client
        .send_message(pb::SendMessageRequest {
            messages: vec![pb::Message {
                topic: resource("ViaProxy"),
                system_properties: Some(pb::SystemProperties {
                    message_id: "PROXYMSG1".into(),
                    ..pb::SystemProperties::default()
                }),
                body: b"through the proxy".to_vec(),
                ..pb::Message::default()
            }],
        })
        .await
        .expect("send")
        .into_inner();
    assert_eq!(
        sent.status.as_ref().map(|s| s.code),
        Some(pb::Code::Ok as i32),
        "{:?}",
        sent.status
    );
    let mut stream = client
        .receive_message(pb::ReceiveMessageRequest {
            group: resource("pg"),
            message_queue: Some(pb::MessageQueue {
                topic: resource("ViaProxy"),
                id: -1,
                ..pb::MessageQueue::default()
            }),
            batch_size: 8,
            invisible_duration: Some(prost_types::Duration {
                seconds: 30,
                nanos: 0,
            }),
            ..pb::ReceiveMessageRequest::default()
        })
        .await
        .expect("receive")
        .into_inner();
    let mut bodies = Vec::new();
    while let Some(item) = stream.message().await.expect("item") {
        if let Some(pb::receive_message_response::Content::Message(m)) = item.content {
            bodies.push(m.body);
        }
    }
    assert_eq!(bodies, vec![b"through the proxy".to_vec()]);
    let _ = proxy.kill();
    let _ = proxy.wait();
    let _ = dev.child.kill();
    let _ = dev.child.wait();
}

/// `rocketraft dev` with authentication on and no `innerClientAuthenticationCredentials` in its
/// config: the broker still registers with the NameServer and the in-process proxy is still
/// served, because dev makes random inner credentials that its servers and its proxy share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_with_auth_and_no_inner_credentials_serves_its_own_proxy() {
    let _turn = crate::support::file_turn(module_path!());
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = "authentication_enabled = true\nauthorization_enabled = true\n\
         init_authentication_user = '{\"username\":\"root\",\"password\":\"root-secret-0123\"}'\n";
    let config = dir.path().join("dev.toml");
    std::fs::write(&config, format!("[namesrv]\n{auth}\n[broker]\n{auth}")).expect("write");
    let mut dev = Dev::start(
        dir.path(),
        free_port(),
        free_port(),
        &["--config", config.to_str().expect("utf8 path")],
    );
    let api = |credentials| {
        MqClientApi::new(
            RemotingClient::new(ClientConfig {
                credentials,
                ..ClientConfig::default()
            }),
            Duration::from_secs(5),
        )
    };
    let root = api(Some(
        rocketraft_remoting::SessionCredentials::new("root", "root-secret-0123").expect("creds"),
    ));
    // Unsigned Remoting calls are refused: authentication is on.
    let unsigned = api(None)
        .create_topic(&dev.broker, &TopicConfig::new("DevAuth", 1))
        .await;
    assert!(unsigned.is_err(), "{unsigned:?}");
    root.create_topic(&dev.broker, &TopicConfig::new("DevAuth", 1))
        .await
        .expect("topic");
    // The broker registered (signed with the inner credentials): the NameServer routes it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while root.topic_route(&dev.namesrv, "DevAuth").await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the topic is never routed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The in-process proxy's Remoting requests are signed too: its send is stored.
    let mut client = MessagingServiceClient::connect(format!("http://{}", dev.proxy))
        .await
        .expect("connect");
    let sent = client
        .send_message(pb::SendMessageRequest {
            messages: vec![pb::Message {
                topic: resource("DevAuth"),
                system_properties: Some(pb::SystemProperties {
                    message_id: "DEVAUTHMSG1".into(),
                    ..pb::SystemProperties::default()
                }),
                body: b"through dev's own proxy".to_vec(),
                ..pb::Message::default()
            }],
        })
        .await
        .expect("send")
        .into_inner();
    assert_eq!(
        sent.status.as_ref().map(|s| s.code),
        Some(pb::Code::Ok as i32),
        "{:?}",
        sent.status
    );
    assert_eq!(
        root.max_offset(&dev.broker, "DevAuth", 0)
            .await
            .expect("max offset"),
        1
    );
    let _ = dev.child.kill();
    let _ = dev.child.wait();
}

/// `rocketraft proxy --auth` reads users' secret keys from the brokers, which show them only to
/// a Super user or a holder of the cluster secret: it starts with `--cluster-secret-file` in
/// place of `--remoting-access-key`, and refuses a secret too short to be one.
#[test]
fn proxy_with_auth_starts_with_the_cluster_secret_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |secret: &str| {
        let file = dir.path().join("cluster-secret");
        std::fs::write(&file, secret).expect("write");
        let mut child = crate::support::Killed(
            Command::new(env!("CARGO_BIN_EXE_rocketraft"))
                .args([
                    "proxy",
                    "--listen",
                    &format!("127.0.0.1:{}", free_port()),
                    "--namesrv",
                    &format!("127.0.0.1:{}", free_port()),
                    "--auth",
                    "--cluster-secret-file",
                    file.to_str().expect("utf8 path"),
                ])
                .env_remove("ROCKETRAFT_CLUSTER_SECRET")
                .env_remove("ROCKETRAFT_PROXY_SECRET_KEY")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn proxy"),
        );
        let first = BufReader::new(child.0.stdout.take().expect("stdout"))
            .lines()
            .next()
            .and_then(Result::ok);
        let mut err = String::new();
        if first.is_none() {
            use std::io::Read;
            let _ = child
                .0
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut err);
        }
        (first, err)
    };
    let (ready, _) = run("0123456789abcdef0123456789abcdef\n");
    let ready = ready.expect("a ready line");
    assert!(ready.contains("authentication on"), "{ready}");
    let (none, err) = run("short");
    assert!(none.is_none(), "a weak secret was taken: {none:?}");
    assert!(err.contains("cluster_secret"), "{err}");
}
