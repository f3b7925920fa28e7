//! `rocketraft admin acl` against the real `rocketraft dev` binary: users and grants are created,
//! listed, refused with clear messages, revoked and deleted; they survive a `kill -9` of the
//! broker; and a real `rocketraft proxy --auth` admits a signed send only while the grant holds.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use rocketraft_proxy::auth::{authorization_header, date_time_now};
use rocketraft_proxy::pb;
use rocketraft_proxy::pb::messaging_service_client::MessagingServiceClient;

use crate::support::{admin, admin_output, free_port, Dev};

fn fails(namesrv: &str, args: &[&str]) -> String {
    let out = admin_output(namesrv, args);
    assert!(
        !out.status.success(),
        "admin {args:?} should fail but printed {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn send_request(topic: &str, id: &str) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        messages: vec![pb::Message {
            topic: Some(pb::Resource {
                resource_namespace: String::new(),
                name: topic.to_string(),
            }),
            user_properties: HashMap::new(),
            system_properties: Some(pb::SystemProperties {
                message_id: id.to_string(),
                message_type: pb::MessageType::Normal as i32,
                ..pb::SystemProperties::default()
            }),
            body: id.as_bytes().to_vec(),
        }],
    }
}

fn signed(id: &str, ak: &str, sk: &str) -> tonic::Request<pb::SendMessageRequest> {
    // The proxy refuses date-times outside its freshness window: sign with now.
    let date = date_time_now();
    let date = date.as_str();
    let mut request = tonic::Request::new(send_request("AclCliTopic", id));
    let m = request.metadata_mut();
    m.insert(
        "authorization",
        authorization_header(ak, sk, date).parse().expect("ascii"),
    );
    m.insert("x-mq-date-time", date.parse().expect("ascii"));
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_grants_through_the_cli_and_a_proxy_with_auth() {
    let _turn = crate::support::file_turn(module_path!());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut dev = Dev::start(dir.path(), free_port(), free_port(), &[]);
    let ns = dev.namesrv.clone();

    let out = admin(
        &ns,
        &[
            "acl",
            "user",
            "create",
            "--username",
            "alice",
            "--password",
            "s3cret",
        ],
    );
    assert!(out.contains("created user alice (Normal)"), "{out}");
    let err = fails(
        &ns,
        &[
            "acl",
            "user",
            "create",
            "--username",
            "alice",
            "--password",
            "x",
        ],
    );
    assert!(err.contains("already exists"), "{err}");
    let err = fails(
        &ns,
        &[
            "acl",
            "user",
            "create",
            "--username",
            "bad name",
            "--password",
            "x",
        ],
    );
    assert!(err.contains("bad name"), "{err}");
    let err = fails(
        &ns,
        &[
            "acl",
            "grant",
            "--subject",
            "User:alice",
            "--resource",
            "Queue:x",
            "--actions",
            "Pub",
        ],
    );
    assert!(err.contains("Queue"), "{err}");
    let err = fails(
        &ns,
        &[
            "acl",
            "grant",
            "--subject",
            "User:nobody",
            "--resource",
            "Topic:t",
            "--actions",
            "Pub",
        ],
    );
    assert!(err.contains("does not exist"), "{err}");

    let out = admin(
        &ns,
        &[
            "acl",
            "grant",
            "--subject",
            "User:alice",
            "--resource",
            "Topic:AclCliTopic",
            "--actions",
            "Pub,Sub",
        ],
    );
    assert!(out.contains("granted User:alice"), "{out}");
    admin(
        &ns,
        &[
            "acl",
            "grant",
            "--subject",
            "User:alice",
            "--resource",
            "Topic:audit-*",
            "--actions",
            "Pub",
            "--decision",
            "Deny",
        ],
    );
    let list = admin(&ns, &["acl", "list"]);
    assert!(list.contains("Topic:AclCliTopic"), "{list}");
    assert!(list.contains("Pub,Sub"), "{list}");
    assert!(list.contains("Topic:audit-*"), "{list}");
    assert!(list.contains("Deny"), "{list}");
    let users = admin(&ns, &["acl", "user", "list"]);
    assert!(users.contains("alice"), "{users}");
    assert!(
        !users.contains("s3cret"),
        "passwords are not printed: {users}"
    );

    // Users and grants are durable: kill -9 and restart on the same data.
    dev.child.kill().expect("kill");
    let _ = dev.child.wait();
    let mut dev = Dev::start(dir.path(), free_port(), free_port(), &[]);
    let ns = dev.namesrv.clone();
    let list = admin(&ns, &["acl", "list", "--subject", "alice"]);
    assert!(list.contains("Topic:AclCliTopic"), "{list}");
    // Authentication is off in dev, yet an unsigned caller is not shown the password...
    let got = admin(&ns, &["acl", "user", "get", "--username", "alice"]);
    assert!(got.contains("alice") && got.contains("(hidden"), "{got}");
    // ... while a Super user's signed request is (the CLI prints only that it is set).
    admin(
        &ns,
        &[
            "acl",
            "user",
            "create",
            "--username",
            "reader",
            "--password",
            "reader-s3cret",
            "--user-type",
            "Super",
        ],
    );
    let as_reader = [
        "--access-key",
        "reader",
        "--secret-key",
        "reader-s3cret",
        "acl",
        "user",
        "get",
        "--username",
        "alice",
    ];
    let got = admin(&ns, &as_reader);
    assert!(got.contains("alice") && got.contains("(set)"), "{got}");
    assert!(!got.contains("s3cret"), "passwords are not printed: {got}");
    admin(&ns, &["topic", "create", "AclCliTopic", "--queues", "2"]);

    // A proxy with --auth must be able to read passwords: without a Super user's credentials
    // or the cluster secret it refuses to start, naming the flag.
    let refused = Command::new(env!("CARGO_BIN_EXE_rocketraft"))
        .args([
            "proxy",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--namesrv",
            &ns,
            "--auth",
        ])
        .env_remove("ROCKETRAFT_CLUSTER_SECRET")
        .output()
        .expect("run proxy");
    assert!(!refused.status.success(), "{refused:?}");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("--remoting-access-key") && err.contains("--cluster-secret-file"),
        "{err}"
    );

    // A real proxy with --auth admits alice's signed send and refuses an unsigned one.
    let proxy_port = free_port();
    // Killed: stopped even if an assertion below fails.
    let mut proxy = crate::support::Killed(
        Command::new(env!("CARGO_BIN_EXE_rocketraft"))
            .args([
                "proxy",
                "--listen",
                &format!("127.0.0.1:{proxy_port}"),
                "--namesrv",
                &ns,
                "--auth",
                "--auth-cache-ms",
                "100",
                "--remoting-access-key",
                "reader",
            ])
            .env("ROCKETRAFT_PROXY_SECRET_KEY", "reader-s3cret")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn proxy"),
    );
    let ready = BufReader::new(proxy.0.stdout.take().expect("stdout"))
        .lines()
        .next()
        .expect("a line")
        .expect("readable");
    assert!(ready.contains("authentication on"), "{ready}");
    let mut client = MessagingServiceClient::connect(format!("http://127.0.0.1:{proxy_port}"))
        .await
        .expect("connect");
    let mut ok = None;
    // The topic's route reaches the NameServer within a moment.
    for _ in 0..50 {
        let status = client
            .send_message(signed("M1", "alice", "s3cret"))
            .await
            .expect("send")
            .into_inner()
            .status
            .expect("status");
        if status.code == pb::Code::Ok as i32 {
            ok = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok.is_some(), "a signed send never succeeded");
    let unsigned = client
        .send_message(send_request("AclCliTopic", "M2"))
        .await
        .expect("send")
        .into_inner()
        .status
        .expect("status");
    assert_eq!(unsigned.code, pb::Code::Unauthorized as i32);

    // Revoke: the proxy forbids the topic once its short cache expires.
    let out = admin(
        &ns,
        &[
            "acl",
            "revoke",
            "--subject",
            "User:alice",
            "--resource",
            "Topic:AclCliTopic",
        ],
    );
    assert!(
        out.contains("revoked User:alice on Topic:AclCliTopic"),
        "{out}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let revoked = client
        .send_message(signed("M3", "alice", "s3cret"))
        .await
        .expect("send")
        .into_inner()
        .status
        .expect("status");
    assert_eq!(
        revoked.code,
        pb::Code::Forbidden as i32,
        "{}",
        revoked.message
    );
    let err = fails(
        &ns,
        &[
            "acl",
            "revoke",
            "--subject",
            "User:alice",
            "--resource",
            "Topic:AclCliTopic",
        ],
    );
    assert!(err.contains("no ACL entry"), "{err}");

    let out = admin(&ns, &["acl", "user", "delete", "--username", "alice"]);
    assert!(out.contains("deleted user alice"), "{out}");
    let err = fails(&ns, &["acl", "user", "get", "--username", "alice"]);
    assert!(err.contains("no user"), "{err}");
    let list = admin(&ns, &["acl", "list"]);
    assert!(
        !list.contains("alice"),
        "the user's ACL went with it: {list}"
    );

    drop(proxy);
    let _ = dev.child.kill();
    let _ = dev.child.wait();
}
