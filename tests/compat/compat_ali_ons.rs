//! A third-party RocketMQ Remoting client, ali-ons (Node.js, from the npm registry), produces to
//! and consumes from a real `rocketraft dev` process. `scripts/setup.sh` installs Node.js when it
//! is missing; the client itself is installed from `compat/ali-ons/package-lock.json`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::support::{admin, admin_output, free_port, Dev};

fn ensure_ali_ons(dir: &Path) {
    crate::support::npm_ci_once(dir, "node_modules/ali-ons/package.json");
}

#[test]
fn ali_ons_produces_and_consumes_through_rocketraft_dev() {
    let _turn = crate::support::file_turn(module_path!());
    let compat = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/ali-ons");
    ensure_ali_ons(&compat);

    let data = tempfile::tempdir().expect("tempdir");
    let (namesrv_port, broker_port) = (free_port(), free_port());
    let mut dev = Dev::start(data.path(), namesrv_port, broker_port, &[]);
    let namesrv = dev.namesrv.clone();
    create_routed_topic(&namesrv, "CompatTopic", "4");

    let count = 40;
    let out = Command::new("node")
        .arg("roundtrip.js")
        .current_dir(&compat)
        .env("NAMESRV", &namesrv)
        .env("TOPIC", "CompatTopic")
        .env("COUNT", count.to_string())
        .output()
        .expect("node is needed for this test: run scripts/setup.sh");
    let _ = dev.child.kill();
    let _ = dev.child.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ali-ons run failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );

    let events: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let sent: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "sent").collect();
    assert_eq!(sent.len(), count);
    let queues: BTreeSet<i64> = sent.iter().filter_map(|e| e["queueId"].as_i64()).collect();
    assert!(
        queues.len() > 1,
        "ali-ons spread sends over the queues: {queues:?}"
    );
    for e in &sent {
        assert_eq!(
            e["msgId"].as_str().map(str::len),
            Some(32),
            "offset msg id: {e}"
        );
    }
    let received: BTreeSet<String> = events
        .iter()
        .filter(|e| e["event"] == "received")
        .filter_map(|e| e["body"].as_str().map(str::to_string))
        .collect();
    let expected: BTreeSet<String> = (0..count).map(|i| format!("compat-body-{i}")).collect();
    assert_eq!(
        received, expected,
        "every message sent by ali-ons came back to its consumer"
    );
    for e in events.iter().filter(|e| e["event"] == "received") {
        let body = e["body"].as_str().unwrap_or_default();
        let i: usize = body
            .trim_start_matches("compat-body-")
            .parse()
            .expect("index");
        let tag = if i.is_multiple_of(2) { "TagA" } else { "TagB" };
        assert_eq!(e["tags"].as_str(), Some(tag), "tags survive: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// With authentication and authorization on
// ---------------------------------------------------------------------------------------------
//
// ali-ons signs like RocketMQ's `AclClientRPCHook` (lib/channel.js, `beforeRequest`): it puts
// `AccessKey` and `OnsChannel` ("ALIYUN") next to the request's custom header fields, signs
// Base64(HMAC-SHA1(secretKey, the values of all of them sorted by key, then the body)) and adds
// `Signature`. Our verifier (remoting/src/auth.rs) rebuilds the content from every ext field but
// `Signature`, `OnsChannel` included, as RocketMQ's server does, so the signatures agree. Its
// header values go out as JSON numbers and booleans where the header has them; the decoder
// turns those into the same text JavaScript's `toString` signed (integers, true/false).

const SUPER_USER: &str = "ali-admin";
const SUPER_SECRET: &str = "ali-admin-secret-0123456789";

/// `rocketraft admin` signed by the Super user.
fn admin_super(namesrv: &str, args: &[&str]) -> String {
    let mut all = vec!["--access-key", SUPER_USER, "--secret-key", SUPER_SECRET];
    all.extend_from_slice(args);
    admin(namesrv, &all)
}

/// Runs `node SCRIPT` in `dir` with `envs`; returns its JSON lines, asserting it exited 0.
fn run_node(dir: &Path, script: &str, envs: &[(&str, &str)]) -> Vec<serde_json::Value> {
    let out = Command::new("node")
        .arg(script)
        .current_dir(dir)
        .envs(envs.iter().copied())
        .output()
        .expect("node is needed for this test: run scripts/setup.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The attempt of `refused.js` named `where`.
fn attempt<'a>(events: &'a [serde_json::Value], place: &str) -> &'a serde_json::Value {
    events
        .iter()
        .find(|e| e["where"] == place)
        .unwrap_or_else(|| panic!("no attempt {place} in {events:?}"))
}

fn assert_refused(events: &[serde_json::Value], place: &str, remark: &str) {
    let e = attempt(events, place);
    assert_eq!(e["event"], "refused", "{place}: {e}");
    assert_eq!(e["code"], 16, "NO_PERMISSION for {place}: {e}");
    assert!(
        e["message"].as_str().unwrap_or_default().contains(remark),
        "{place}: {e}"
    );
}

#[test]
fn ali_ons_with_credentials_against_rocketraft_dev_with_auth() {
    let _turn = crate::support::file_turn(module_path!());
    let compat = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/ali-ons");
    ensure_ali_ons(&compat);
    let data = tempfile::tempdir().expect("tempdir");
    // Authentication and authorization on in the NameServer and the broker, `SUPER_USER` their
    // init user.
    let mut dev = Dev::start_with_auth(data.path(), (SUPER_USER, SUPER_SECRET), "");
    let (ns, broker) = (dev.namesrv.clone(), dev.broker.clone());
    let unsigned = admin_output(&ns, &["topic", "create", "AliAuthTopic"]);
    assert!(
        !unsigned.status.success(),
        "an unsigned admin call is refused"
    );

    admin_super(&ns, &["topic", "create", "AliAuthTopic", "--queues", "4"]);
    for (user, secret, topic_actions) in [
        ("aliuser", "ali-user-secret", "Pub,Sub"),
        ("alireader", "ali-reader-secret", "Sub"),
    ] {
        admin_super(
            &ns,
            &[
                "acl",
                "user",
                "create",
                "--username",
                user,
                "--password",
                secret,
            ],
        );
        let subject = format!("User:{user}");
        for (resource, actions) in [
            ("Topic:AliAuthTopic", topic_actions),
            ("Group:ali_auth_cg", "Sub"),
        ] {
            admin_super(
                &ns,
                &[
                    "acl",
                    "grant",
                    "--subject",
                    &subject,
                    "--resource",
                    resource,
                    "--actions",
                    actions,
                ],
            );
        }
    }
    wait_for_route(
        &ns,
        &["--access-key", SUPER_USER, "--secret-key", SUPER_SECRET],
        "AliAuthTopic",
    );

    let refused = |user: &str, secret: &str, body: &str| {
        run_node(
            &compat,
            "refused.js",
            &[
                ("NAMESRV", ns.as_str()),
                ("BROKER", broker.as_str()),
                ("BROKER_NAME", "broker-a"),
                ("TOPIC", "AliAuthTopic"),
                ("GROUP", "ali_auth_cg"),
                ("ACCESS_KEY", user),
                ("SECRET_KEY", secret),
                ("BODY", body),
            ],
        )
    };
    // A wrong secret key: the NameServer and the broker refuse every request.
    let wrong = refused("aliuser", "not-the-secret", "refused-wrong-secret");
    for place in ["namesrv-route", "broker-send", "broker-offset"] {
        assert_refused(&wrong, place, "check signature failed");
    }
    // The right key of a user who may only subscribe: reads pass, the send is refused.
    let reader = refused("alireader", "ali-reader-secret", "refused-no-pub");
    assert_eq!(attempt(&reader, "namesrv-route")["event"], "accepted");
    assert_eq!(attempt(&reader, "broker-offset")["event"], "accepted");
    assert_refused(
        &reader,
        "broker-send",
        "no permission to Pub on Topic:AliAuthTopic",
    );

    // The producer and the push consumer with the right credentials.
    let count = 20;
    let count_text = count.to_string();
    let events = run_node(
        &compat,
        "roundtrip.js",
        &[
            ("NAMESRV", ns.as_str()),
            ("TOPIC", "AliAuthTopic"),
            ("COUNT", count_text.as_str()),
            ("ACCESS_KEY", "aliuser"),
            ("SECRET_KEY", "ali-user-secret"),
            ("PRODUCER_GROUP", "ali_auth_pg"),
            ("CONSUMER_GROUP", "ali_auth_cg"),
        ],
    );
    let _ = dev.child.kill();
    let _ = dev.child.wait();
    let received: BTreeSet<String> = events
        .iter()
        .filter(|e| e["event"] == "received")
        .filter_map(|e| e["body"].as_str().map(str::to_string))
        .collect();
    let expected: BTreeSet<String> = (0..count).map(|i| format!("compat-body-{i}")).collect();
    assert_eq!(
        received, expected,
        "the signed consumer got exactly what the signed producer sent (no refused message)"
    );
    // Nothing refused was stored: every queue's offsets start at 0 with the signed sends.
    let mut per_queue: std::collections::BTreeMap<i64, Vec<i64>> = Default::default();
    for e in events.iter().filter(|e| e["event"] == "sent") {
        let (q, o) = (e["queueId"].as_i64(), e["offset"].as_i64());
        per_queue
            .entry(q.expect("queueId"))
            .or_default()
            .push(o.expect("offset"));
    }
    assert_eq!(per_queue.values().map(Vec::len).sum::<usize>(), count);
    for (queue, offsets) in &per_queue {
        let want: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(offsets, &want, "queue {queue} held nothing before");
    }
}

/// Waits until the NameServer routes `topic` (the broker's re-registration reached it),
/// asking with `rocketraft admin AUTH... topic route TOPIC` (`auth`: credentials or nothing).
fn wait_for_route(namesrv: &str, auth: &[&str], topic: &str) {
    let mut args = auth.to_vec();
    args.extend_from_slice(&["topic", "route", topic]);
    for _ in 0..100 {
        if admin_output(namesrv, &args).status.success() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("no route for {topic}");
}

/// Creates `topic` with `queues` queues (no credentials) and waits until it is routed.
fn create_routed_topic(namesrv: &str, topic: &str, queues: &str) {
    let created = admin(namesrv, &["topic", "create", topic, "--queues", queues]);
    assert!(created.contains("created topic"), "{created}");
    wait_for_route(namesrv, &[], topic);
}

// ---------------------------------------------------------------------------------------------
// Lookup by key and by id
// ---------------------------------------------------------------------------------------------
//
// ali-ons has no queryMessage/viewMessage API (its MQClientAPI.viewMessage is commented out), so
// `lookup.js` drives its lower layers: its Producer sends (with KEYS and a UNIQ_KEY), its
// RemotingCommand codec and connection carry QUERY_MESSAGE (by key, and by unique key with
// `_UNIQUE_KEY_QUERY=true`) and VIEW_MESSAGE_BY_ID, its decodeMessageId splits the offset message
// id the broker answered the send with, and its MessageDecoder reads our answers.

#[test]
fn ali_ons_looks_messages_up_by_key_unique_key_and_offset_id() {
    let _turn = crate::support::file_turn(module_path!());
    let compat = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/ali-ons");
    ensure_ali_ons(&compat);
    let data = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start(data.path(), free_port(), free_port(), &[]);
    let namesrv = dev.namesrv.clone();
    create_routed_topic(&namesrv, "LookupTopic", "2");
    let events = run_node(
        &compat,
        "lookup.js",
        &[
            ("NAMESRV", namesrv.as_str()),
            ("TOPIC", "LookupTopic"),
            ("COUNT", "10"),
        ],
    );
    let event = |name: &str| {
        events
            .iter()
            .find(|e| e["event"] == name)
            .unwrap_or_else(|| panic!("no {name} event in {events:?}"))
            .clone()
    };
    let sent: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "sent").collect();
    assert_eq!(sent.len(), 10);
    let by_key = event("by_key");
    assert_eq!(by_key["code"], 0, "{by_key}");
    let found = by_key["messages"].as_array().expect("messages");
    assert_eq!(found.len(), 1, "{by_key}");
    assert_eq!(found[0]["body"], "lookup-body-3");
    assert_eq!(found[0]["topic"], "LookupTopic");
    assert_eq!(found[0]["keys"], "order-3 lookup-all");
    assert_eq!(found[0]["uniq"], sent[3]["uniq"]);
    assert_eq!(event("by_shared_key")["count"], 10);
    let by_uniq = event("by_unique_key");
    assert_eq!(by_uniq["code"], 0, "{by_uniq}");
    assert_eq!(by_uniq["messages"][0]["body"], "lookup-body-3");
    assert_eq!(event("missing")["code"], 22, "QUERY_NOT_FOUND");
    let view = event("view");
    assert_eq!(view["code"], 0, "{view}");
    assert_eq!(view["message"]["body"], "lookup-body-3");
    // The admin CLI finds what ali-ons sent, by its unique id.
    let uniq = sent[7]["uniq"].as_str().expect("uniq");
    let out = admin(
        &namesrv,
        &["message", "get", "--id", uniq, "--topic", "LookupTopic"],
    );
    assert!(out.contains("\"lookup-body-7\""), "{out}");
    drop(dev);
}
