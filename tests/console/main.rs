//! `rocketraft console` against a real `rocketraft dev`: its pages show the cluster's real state
//! (the broker's address and role, a topic created with the admin CLI, its route and offsets, a
//! message by key and by id, a group's lag), its forms create and delete a topic and reset a
//! group's offsets (the POSTs a browser sends), bad input gets a 4xx page while the console keeps
//! serving, and a real headless Chromium renders the pages (and the throughput chart's JS table).
//! A group's dead letters are listed and resent (page and admin CLI) and pulled again from its
//! retry topic; the cluster page shows every controller of a quorum, dead ones unreachable; the
//! NameServer's console of `cluster up --auth` signs as the administrator.
//!
//! Set CONSOLE_SCREENSHOT_DIR (e.g. `docs`) to keep the screenshots
//! (`console-cluster.png`, `console-topics.png`); else they go to a temp dir.

#[path = "../support/mod.rs"]
mod support;
mod topic_stats;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketraft_common::consts::{property, pull_sys_flag};
use rocketraft_remoting::api::{MqClientApi, PullRequest, PullStatus, SendRequest};
use rocketraft_remoting::{
    request_code, response_code, ClientConfig, RemotingClient, RemotingCommand,
};

use support::{admin, file_turn, free_port, spawn_ready, Dev, Killed};

/// A dev and a console in front of it; both stopped when dropped.
struct Setup {
    dev: Dev,
    console: String,
    _process: Killed,
    _data: tempfile::TempDir,
}

fn start() -> Setup {
    start_with(&[], &[])
}

/// A dev started with `dev_extra` flags and a console with `console_extra` flags.
fn start_with(dev_extra: &[&str], console_extra: &[&str]) -> Setup {
    let data = tempfile::tempdir().expect("tempdir");
    let mut dev_args = vec!["--no-metrics", "--no-console"];
    dev_args.extend_from_slice(dev_extra);
    let dev = Dev::start(data.path(), free_port(), free_port(), &dev_args);
    let console = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        "console",
        "--namesrv",
        &dev.namesrv,
        "--listen",
        &console,
        "--threads",
        "2",
    ];
    args.extend_from_slice(console_extra);
    let process = spawn_ready(&args);
    Setup {
        dev,
        console,
        _process: process,
        _data: data,
    }
}

/// One HTTP/1.1 request (`extra` header lines end in CRLF): the status and the body.
fn http(addr: &str, method: &str, path: &str, extra: &str, body: &str) -> (u16, String) {
    support::http(addr, method, path, extra, body).expect("the console answers")
}

fn get(addr: &str, path: &str) -> (u16, String) {
    http(addr, "GET", path, "", "")
}

/// A POST as an HTML form sends it.
fn post_form(addr: &str, path: &str, form: &str) -> (u16, String) {
    http(
        addr,
        "POST",
        path,
        "Content-Type: application/x-www-form-urlencoded\r\n",
        form,
    )
}

/// GET that must answer 200.
fn page(addr: &str, path: &str) -> String {
    let (status, body) = get(addr, path);
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// Waits (at most 15 s) until `check` holds.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The text of every table row's cells (tags inside a cell dropped).
fn rows(html: &str) -> Vec<Vec<String>> {
    html.split("<tr>")
        .skip(1)
        .map(|row| {
            let row = row.split("</tr>").next().unwrap_or("");
            row.split("<td")
                .skip(1)
                .map(|cell| {
                    let inner = cell.split_once('>').map_or("", |(_, c)| c);
                    let inner = inner.split("</td>").next().unwrap_or("");
                    let mut text = String::new();
                    let mut in_tag = false;
                    for ch in inner.chars() {
                        match ch {
                            '<' => in_tag = true,
                            '>' => in_tag = false,
                            c if !in_tag => text.push(c),
                            _ => {}
                        }
                    }
                    text
                })
                .collect()
        })
        .collect()
}

/// Whether a table row of `html` has `cells` one after the other.
fn has_row(html: &str, cells: &[&str]) -> bool {
    rows(html).iter().any(|row| {
        row.windows(cells.len())
            .any(|w| w.iter().zip(cells).all(|(a, b)| a == b))
    })
}

/// The cells of the controller quorum table's row for member `addr`.
fn controller_row(html: &str, addr: &str) -> Option<Vec<String>> {
    rows(html)
        .into_iter()
        .find(|r| r.len() == 9 && r[0] == addr && (r[1] == "yes" || r[1] == "no"))
}

#[test]
fn pages_show_the_cluster_and_forms_change_it() {
    let _turn = file_turn(module_path!());
    let s = start();
    let c = s.console.as_str();
    let broker = s.dev.broker.as_str();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let api = MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(5),
    );

    // The cluster: the dev's broker, its id and role, the controller that leads.
    let cluster = page(c, "/");
    assert!(
        has_row(&cluster, &["0", broker, "master"]),
        "the broker {broker} as master with id 0: {cluster}"
    );
    assert!(cluster.contains("<td class=\"master\">master</td>"));
    assert!(cluster.contains("Broker set broker-a"), "{cluster}");
    assert!(cluster.contains(&format!("NameServer <b>{}</b>", s.dev.namesrv)));
    let member = controller_row(&cluster, &s.dev.namesrv).expect("the controller's row");
    assert_eq!(
        (member[1].as_str(), member[3].as_str(), member[4].as_str()),
        ("yes", "leader", "1"),
        "the embedded controller answered, leads, in term 1: {cluster}"
    );
    assert!(cluster.contains("1 of 1 member(s) answered"), "{cluster}");

    // A topic made with the admin CLI, and a message with a key and markup in its body.
    admin(
        &s.dev.namesrv,
        &["topic", "create", "ConsoleOrders", "--queues", "4"],
    );
    let sent = rt
        .block_on(api.send(
            broker,
            &SendRequest {
                producer_group: "console-test".into(),
                topic: "ConsoleOrders".into(),
                queue_id: 2,
                body: Bytes::from_static(b"hello <b>console</b> & co"),
                properties: BTreeMap::from([(property::KEYS.to_string(), "order-7".to_string())]),
                ..SendRequest::default()
            },
        ))
        .expect("send");
    assert_eq!(sent.code, response_code::SUCCESS);
    eventually("the topic on the topics page", || {
        get(c, "/topics")
            .1
            .contains("href=\"/topics/ConsoleOrders\"")
    });
    let topics = page(c, "/topics");
    assert!(
        has_row(&topics, &["ConsoleOrders", "4", "4", "any", "broker-a"]),
        "ConsoleOrders with 4 queues: {topics}"
    );

    // Its route and offsets: queue 2 holds the message.
    let detail = page(c, "/topics/ConsoleOrders");
    assert!(
        has_row(
            &detail,
            &["broker-a", "DefaultCluster", "0", broker, "master"]
        ),
        "the route names the broker: {detail}"
    );
    assert!(
        has_row(&detail, &["broker-a", "2", "0", "1", "1"]),
        "queue 2: min 0, max 1: {detail}"
    );
    assert!(has_row(&detail, &["broker-a", "3", "0", "0", "0"]));
    assert!(detail.contains("1 message(s) stored."), "{detail}");

    // The message by key and by id, its body escaped.
    let escaped = "hello &lt;b&gt;console&lt;/b&gt; &amp; co";
    let by_key = page(c, "/messages?topic=ConsoleOrders&key=order-7");
    assert!(
        by_key.contains("<b>1</b> message(s) with key order-7"),
        "{by_key}"
    );
    assert!(by_key.contains(escaped), "{by_key}");
    assert!(
        !by_key.contains("<b>console</b>"),
        "the body must be escaped"
    );
    assert!(has_row(&by_key, &["KEYS", "order-7"]), "{by_key}");
    let by_id = page(c, &format!("/messages?id={}", sent.msg_id));
    assert!(by_id.contains(escaped), "{by_id}");
    assert!(
        has_row(&by_id, &["queue", "2"]) && has_row(&by_id, &["queue offset", "0"]),
        "{by_id}"
    );

    // A group that committed nothing lags by the message; reset to latest, it lags by none.
    rt.block_on(api.update_consumer_offset(broker, "web-group", "ConsoleOrders", 2, 0))
        .expect("commit an offset");
    let groups = page(c, "/groups");
    assert!(groups.contains("href=\"/groups/web-group\""), "{groups}");
    let group = page(c, "/groups/web-group");
    assert!(
        has_row(
            &group,
            &["ConsoleOrders", "broker-a", "2", "1", "0", "1", "0"]
        ),
        "queue 2: broker offset 1, consumer 0, lag 1: {group}"
    );
    let (status, reset) = post_form(
        c,
        "/groups/web-group/reset",
        "topic=ConsoleOrders&to=latest&timestamp=",
    );
    assert_eq!(status, 200, "{reset}");
    assert!(reset.contains("reset to the latest offsets"), "{reset}");
    let offset = rt
        .block_on(api.query_consumer_offset(broker, "web-group", "ConsoleOrders", 2))
        .expect("query the offset");
    assert_eq!(offset, Some(1), "the reset moved the group to the end");
    assert!(
        has_row(
            &page(c, "/groups/web-group"),
            &["ConsoleOrders", "broker-a", "2", "1", "1", "0", "0"]
        ),
        "lag 0 after the reset"
    );

    // The create form, exactly as a browser posts it.
    let (status, created) = post_form(
        c,
        "/topics/create",
        "topic=WebMade&queues=3&message_type=FIFO&cluster=DefaultCluster",
    );
    assert_eq!(status, 200, "{created}");
    assert!(
        created.contains("Created topic WebMade with 3 queues"),
        "{created}"
    );
    eventually("WebMade in `admin topic list`", || {
        admin(&s.dev.namesrv, &["topic", "list"])
            .lines()
            .any(|l| l == "WebMade")
    });
    let configs = rt
        .block_on(api.broker_topics(broker))
        .expect("topic configs");
    let made = &configs.topic_config_table["WebMade"];
    assert_eq!((made.read_queue_nums, made.write_queue_nums), (3, 3));
    assert_eq!(
        made.attributes.get("message.type").map(String::as_str),
        Some("FIFO")
    );
    eventually("WebMade's page", || get(c, "/topics/WebMade").0 == 200);

    // The delete form.
    let (status, deleted) = post_form(c, "/topics/delete", "topic=WebMade");
    assert_eq!(status, 200, "{deleted}");
    assert!(deleted.contains("Deleted topic WebMade"), "{deleted}");
    assert!(!rt
        .block_on(api.broker_topics(broker))
        .expect("topic configs")
        .topic_config_table
        .contains_key("WebMade"));
    eventually("WebMade gone", || get(c, "/topics/WebMade").0 == 404);

    // The throughput endpoint: the broker and its rates (one message was put).
    let (status, json) = get(c, "/api/throughput");
    assert_eq!(status, 200, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let b = &v["brokers"][0];
    assert_eq!(b["addr"], broker, "{json}");
    assert_eq!(b["brokerName"], "broker-a");
    assert!(b["putTps"].as_f64().is_some_and(|t| t >= 0.0), "{json}");
    assert!(b["getTransferredTps"].as_f64().is_some(), "{json}");
    assert!(page(c, "/throughput").contains("/api/throughput"));
}

#[test]
fn bad_input_gets_a_clear_4xx_and_the_console_keeps_serving() {
    let _turn = file_turn(module_path!());
    let s = start();
    let c = s.console.as_str();

    let (status, body) = get(c, "/no/such/page");
    assert_eq!(status, 404);
    assert!(
        body.contains("There is no page at /no/such/page."),
        "{body}"
    );

    let (status, body) = get(c, "/topics/NoSuchTopic");
    assert_eq!(status, 404);
    assert!(
        body.contains("Topic NoSuchTopic does not exist"),
        "a message, not just a code: {body}"
    );
    let (status, body) = get(c, "/topics/%3Cscript%3Ealert(1)%3C%2Fscript%3E");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("&lt;script&gt;") && !body.contains("<script>"),
        "{body}"
    );
    let (status, body) = get(c, "/groups/no-such-group");
    assert_eq!(status, 404);
    assert!(
        body.contains("Consumer group no-such-group is unknown"),
        "{body}"
    );

    // Malformed forms.
    let (status, body) = post_form(c, "/topics/create", "topic=%zz&queues=8");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("does not parse"), "{body}");
    let (status, body) = post_form(c, "/topics/create", "queues=8");
    assert_eq!(status, 400);
    assert!(body.contains("lacks the field &quot;topic&quot;"), "{body}");
    let (status, body) = post_form(c, "/topics/create", "topic=Fine&queues=many");
    assert_eq!(status, 400);
    assert!(body.contains("Queues must be a number"), "{body}");
    let (status, body) = post_form(c, "/topics/create", "topic=bad+name%21");
    assert_eq!(status, 400, "{body}");
    let (status, body) = post_form(c, "/topics/create", "topic=Fine&message_type=WEIRD");
    assert_eq!(status, 400, "{body}");
    let (status, _) = post_form(c, "/topics/delete", "topic=NoSuchTopic");
    assert_eq!(status, 404);
    let (status, body) = post_form(c, "/groups/g/reset", "topic=T&to=yesterday");
    assert_eq!(status, 400, "{body}");
    let (status, body) = post_form(c, "/groups/g/reset", "topic=T&to=timestamp&timestamp=noon");
    assert_eq!(status, 400, "{body}");
    let (status, body) = http(
        c,
        "POST",
        "/topics/create",
        "Content-Type: application/json\r\n",
        "{\"topic\":\"X\"}",
    );
    assert_eq!(status, 415, "{body}");
    let (status, body) = get(c, "/topics/create");
    assert_eq!(status, 405, "{body}");
    let (status, body) = get(c, "/messages?id=%zz");
    assert_eq!(status, 400, "{body}");
    let (status, body) = get(c, "/messages?key=k");
    assert_eq!(status, 400, "{body}");

    // A form posted from another site's page (a browser names it in Origin) changes nothing;
    // one from the console's own page does.
    let form = "Content-Type: application/x-www-form-urlencoded\r\n";
    let (status, body) = http(
        c,
        "POST",
        "/topics/create",
        &format!("{form}Origin: http://evil.example\r\n"),
        "topic=Fine&queues=2",
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Cross-site request refused"), "{body}");
    let (status, body) = http(
        c,
        "POST",
        "/topics/create",
        &format!("{form}Sec-Fetch-Site: cross-site\r\n"),
        "topic=Fine&queues=2",
    );
    assert_eq!(status, 403, "{body}");
    let (status, body) = http(
        c,
        "POST",
        "/topics/delete",
        &format!("{form}Origin: http://{c}\r\nSec-Fetch-Site: same-origin\r\n"),
        "topic=NoSuchTopic",
    );
    assert_eq!(status, 404, "its own origin is served: {body}");

    // Huge headers.
    let big = format!("X-Big: {}\r\n", "a".repeat(20 * 1024));
    let (status, _) = http(c, "GET", "/", &big, "");
    assert_eq!(status, 431);

    // Still serving, and nothing was created by the bad forms.
    let cluster = page(c, "/");
    assert!(cluster.contains(&s.dev.broker));
    assert!(!page(c, "/topics").contains("Fine"));
}

/// The chromium binary, or None (then the test is skipped, except under CI).
fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser"].into_iter().find(|b| {
        Command::new(b)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        rocketraft_common::testing::skip(
            "chromium is not installed (scripts/setup.sh installs it)",
        );
    }
    found
}

/// Runs headless Chromium with `args` on `url` (a fresh profile each time, removed after);
/// its stdout. Killed if it runs over a minute.
fn headless(chromium: &str, args: &[&str], url: &str) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut child = Killed(
        Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(args)
            .arg(url)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromium"),
    );
    let mut stdout = child.0.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match child.0.try_wait().expect("wait for chromium") {
            Some(status) => {
                assert!(status.success(), "chromium {args:?} {url}: {status}");
                break;
            }
            None if Instant::now() > deadline => panic!("chromium {args:?} {url} hung"),
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    reader.join().expect("stdout reader")
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).expect("the screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000,
        "{} is not a real screenshot ({} bytes)",
        path.display(),
        bytes.len()
    );
}

#[test]
fn headless_chromium_renders_the_pages() {
    let _turn = file_turn(module_path!());
    let Some(chromium) = chromium() else { return };
    let s = start();
    let c = s.console.as_str();
    admin(
        &s.dev.namesrv,
        &["topic", "create", "RenderedTopic", "--queues", "2"],
    );
    eventually("the topic's route", || {
        get(c, "/topics/RenderedTopic").0 == 200
    });

    let dom = headless(chromium, &["--dump-dom"], &format!("http://{c}/"));
    assert!(dom.contains("<h1>Cluster</h1>"), "{dom}");
    assert!(
        has_row(&dom, &["0", &s.dev.broker, "master"]),
        "the rendered cluster page shows the broker as master: {dom}"
    );
    let dom = headless(
        chromium,
        &["--dump-dom"],
        &format!("http://{c}/topics/RenderedTopic"),
    );
    assert!(dom.contains("<h1>Topic RenderedTopic</h1>"), "{dom}");
    assert!(has_row(
        &dom,
        &["broker-a", "DefaultCluster", "0", &s.dev.broker, "master"]
    ));
    assert!(has_row(&dom, &["broker-a", "1", "0", "0", "0"]), "{dom}");
    // The throughput page's script fills its table from /api/throughput.
    let dom = headless(
        chromium,
        &["--virtual-time-budget=5000", "--dump-dom"],
        &format!("http://{c}/throughput"),
    );
    assert!(
        dom.contains(&format!("<td>{}</td>", s.dev.broker)),
        "the script rendered the broker's rates: {dom}"
    );
    assert!(dom.contains("updated "), "{dom}");

    let shots = tempfile::tempdir().expect("screenshot dir");
    let dir = std::env::var_os("CONSOLE_SCREENSHOT_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| shots.path().to_path_buf());
    for (name, path) in [
        ("console-cluster.png", "/"),
        ("console-topics.png", "/topics"),
    ] {
        let file = dir.join(name);
        headless(
            chromium,
            &[
                &format!("--screenshot={}", file.display()),
                "--window-size=1280,900",
                "--hide-scrollbars",
            ],
            &format!("http://{c}{path}"),
        );
        assert_png(&file);
    }
}

const SUPER_USER: &str = "console-root";
const SUPER_SECRET: &str = "console-root-secret-0123456789";

/// Starts `rocketraft console` with the given access key (its secret in ROCKETRAFT_SECRET_KEY,
/// as an operator would pass it), or unsigned; waits for its ready line.
fn console_as(namesrv: &str, listen: &str, credentials: Option<(&str, &str)>) -> Killed {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rocketraft"));
    command
        .args(["console", "--namesrv", namesrv, "--listen", listen])
        .env_remove("ROCKETRAFT_ACCESS_KEY")
        .env_remove("ROCKETRAFT_SECRET_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some((ak, sk)) = credentials {
        command
            .args(["--access-key", ak])
            .env("ROCKETRAFT_SECRET_KEY", sk);
    }
    let mut child = Killed(command.spawn().expect("spawn the console"));
    let stdout = child.0.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
        .expect("a line from the console");
    assert!(line.contains("is ready"), "{line}");
    child
}

#[test]
fn with_acl_on_the_console_signs_its_requests_and_names_denials() {
    let _turn = file_turn(module_path!());
    let data = tempfile::tempdir().expect("tempdir");
    let creds = format!(
        "authentication_enabled = true\nauthorization_enabled = true\n\
         init_authentication_user = '{{\"username\":\"{SUPER_USER}\",\"password\":\"{SUPER_SECRET}\"}}'\n\
         inner_client_authentication_credentials = '{{\"accessKey\":\"console-inner\",\"secretKey\":\"console-inner-secret-0123456789\"}}'\n"
    );
    let config = data.path().join("dev.toml");
    std::fs::write(&config, format!("[namesrv]\n{creds}\n[broker]\n{creds}")).expect("write");
    let dev = Dev::start(
        data.path(),
        free_port(),
        free_port(),
        &[
            "--no-metrics",
            "--config",
            config.to_str().expect("utf8 path"),
        ],
    );
    let ns = dev.namesrv.as_str();
    let as_super = |args: &[&str]| {
        let mut all = vec!["--access-key", SUPER_USER, "--secret-key", SUPER_SECRET];
        all.extend_from_slice(args);
        admin(ns, &all)
    };
    as_super(&["topic", "create", "Guarded", "--queues", "1"]);
    as_super(&[
        "acl",
        "user",
        "create",
        "--username",
        "viewer",
        "--password",
        "viewer-secret",
    ]);

    // Unsigned: the NameServer refuses, and the page says why and what to do.
    let unsigned = format!("127.0.0.1:{}", free_port());
    let _unsigned = console_as(ns, &unsigned, None);
    let (status, body) = get(&unsigned, "/");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("permission denied"), "{body}");
    assert!(
        body.contains("not signed: start it with --access-key and ROCKETRAFT_SECRET_KEY"),
        "{body}"
    );

    // Signed as a user without grants: denials name the access key.
    let viewer = format!("127.0.0.1:{}", free_port());
    let _viewer = console_as(ns, &viewer, Some(("viewer", "viewer-secret")));
    let (status, body) = get(&viewer, "/messages?topic=Guarded&key=k");
    assert!(
        body.contains("permission denied") && body.contains("access key &quot;viewer&quot;"),
        "{status}: {body}"
    );

    // Signed as the super user: the real state, and the create form works.
    let root = format!("127.0.0.1:{}", free_port());
    let _root = console_as(ns, &root, Some((SUPER_USER, SUPER_SECRET)));
    let cluster = page(&root, "/");
    assert!(
        has_row(&cluster, &["0", &dev.broker, "master"]),
        "{cluster}"
    );
    assert!(cluster.contains(&format!("signed as access key {SUPER_USER}")));
    let (status, body) = post_form(&root, "/topics/create", "topic=SignedMade&queues=2");
    assert_eq!(status, 200, "{body}");
    eventually("SignedMade listed", || {
        as_super(&["topic", "list"])
            .lines()
            .any(|l| l == "SignedMade")
    });
    eventually("the topic page", || get(&root, "/topics/Guarded").0 == 200);
}

const DLQ_TOPIC: &str = "DlqOrders";
const DLQ_GROUP: &str = "dlq-group";

/// The body of dead letter `i` (markup in it, to see it escaped).
fn dead_body(i: usize) -> String {
    format!("dead <i>{i}</i> & gone")
}

/// Every message of `topic`'s queue 0 on `broker` from offset 0 (pulled as `group`); none if
/// the topic does not exist.
fn pull_all(
    rt: &tokio::runtime::Runtime,
    api: &MqClientApi,
    broker: &str,
    group: &str,
    topic: &str,
) -> Vec<rocketraft_common::message::MessageExt> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let r = rt.block_on(api.pull(
            broker,
            &PullRequest {
                consumer_group: group.to_string(),
                topic: topic.to_string(),
                queue_id: 0,
                queue_offset: offset,
                max_msg_nums: 32,
                sys_flag: pull_sys_flag::SUBSCRIPTION,
                commit_offset: 0,
                suspend_timeout_ms: 0,
                subscription: Some("*".into()),
            },
        ));
        let r = match r {
            // Not there (yet): nothing in it.
            Err(e) if e.code() == Some(response_code::TOPIC_NOT_EXIST) => return out,
            other => other.expect("pull"),
        };
        if r.status != PullStatus::Found || r.messages.is_empty() {
            return out;
        }
        offset = r.next_begin_offset;
        out.extend(r.messages);
    }
}

/// The values of the DLQ page's checkboxes (`name="id" value="..."`), in page order.
fn checkbox_ids(html: &str) -> Vec<String> {
    html.split("<input")
        .skip(1)
        .filter_map(|tag| {
            let tag = tag.split('>').next()?;
            if !tag.contains("name=\"id\"") {
                return None;
            }
            let value = tag.split_once("value=\"")?.1;
            Some(value.split('"').next()?.to_string())
        })
        .collect()
}

/// The bodies of `messages` as text, sorted.
fn bodies(messages: &[rocketraft_common::message::MessageExt]) -> Vec<String> {
    let mut out: Vec<String> = messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.message.body).to_string())
        .collect();
    out.sort();
    out
}

/// A group with no retries consumes four messages and fails each (hands it back as a push
/// consumer does): all four land in its DLQ. The DLQ page (rendered by Chromium) lists them; the
/// page's resend form sends two of them to %RETRY%group, `admin message dlq --resend` one more
/// and `--resend-all` all four: the group pulls exactly those bodies again from its retry topic,
/// with their keys, tags, properties and original topic and a fresh reconsume count. The
/// broker refuses auto-creation here: the retry topic is made as CONSUMER_SEND_MSG_BACK makes
/// it (one queue).
#[test]
fn dead_letters_are_listed_and_resent_to_the_group() {
    let _turn = file_turn(module_path!());
    let s = start_with(&["--no-auto-create-topic"], &[]);
    let c = s.console.as_str();
    let broker = s.dev.broker.as_str();
    let ns = s.dev.namesrv.as_str();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = RemotingClient::new(ClientConfig::default());
    let api = MqClientApi::new(client.clone(), Duration::from_secs(5));

    admin(ns, &["topic", "create", DLQ_TOPIC, "--queues", "1"]);
    admin(
        ns,
        &[
            "consumer",
            "create-group",
            DLQ_GROUP,
            "--retry-max-times",
            "0",
        ],
    );
    for i in 0..4 {
        let sent = rt
            .block_on(api.send(
                broker,
                &SendRequest {
                    producer_group: "dlq-producer".into(),
                    topic: DLQ_TOPIC.into(),
                    queue_id: 0,
                    body: Bytes::from(dead_body(i)),
                    properties: BTreeMap::from([
                        (property::KEYS.to_string(), format!("dlq-key-{i}")),
                        (property::TAGS.to_string(), "TagA".to_string()),
                        ("color".to_string(), format!("blue-{i}")),
                    ]),
                    ..SendRequest::default()
                },
            ))
            .expect("send");
        assert_eq!(sent.code, response_code::SUCCESS);
    }
    // The group consumes them and fails each: with no retries left, CONSUMER_SEND_MSG_BACK
    // moves it to %DLQ%dlq-group.
    let consumed = pull_all(&rt, &api, broker, DLQ_GROUP, DLQ_TOPIC);
    assert_eq!(bodies(&consumed), (0..4).map(dead_body).collect::<Vec<_>>());
    // The message ids (UNIQ_KEY), in send order.
    let ids: Vec<String> = consumed
        .iter()
        .map(|m| m.message.uniq_key().expect("uniq key").to_string())
        .collect();
    for m in &consumed {
        let r = rt
            .block_on(
                client.invoke(
                    broker,
                    RemotingCommand::request(request_code::CONSUMER_SEND_MSG_BACK)
                        .with_ext("offset", m.commit_log_offset)
                        .with_ext("group", DLQ_GROUP)
                        .with_ext("delayLevel", 0)
                        .with_ext("originMsgId", m.message.uniq_key().expect("uniq key")),
                    Duration::from_secs(5),
                ),
            )
            .expect("send back");
        assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    }
    let dlq_path = format!("/groups/{DLQ_GROUP}/dlq");
    eventually("four dead letters on the DLQ page", || {
        get(c, &dlq_path)
            .1
            .contains("<b>4</b> message(s) in %DLQ%dlq-group")
    });
    assert!(
        page(c, &format!("/groups/{DLQ_GROUP}")).contains(&format!("href=\"{dlq_path}\"")),
        "the group page links its DLQ"
    );

    // The page as a browser renders it: each message, escaped, with a checkbox.
    let html = match chromium() {
        Some(chromium) => headless(chromium, &["--dump-dom"], &format!("http://{c}{dlq_path}")),
        None => page(c, &dlq_path),
    };
    assert!(
        html.contains("<h1>Dead-letter queue of dlq-group</h1>"),
        "{html}"
    );
    for (i, id) in ids.iter().enumerate() {
        let key = format!("dlq-key-{i}");
        let escaped = format!("dead &lt;i&gt;{i}&lt;/i&gt; &amp; gone");
        assert!(
            has_row(
                &html,
                &["broker-a", &i.to_string(), id, DLQ_TOPIC, "1", &key]
            ),
            "dead letter {i} (DLQ offset {i}, id {id}, from {DLQ_TOPIC}, reconsumed once): {html}"
        );
        assert!(html.contains(&escaped), "{escaped}: {html}");
    }
    assert!(!html.contains("<i>0</i>"), "bodies are escaped");
    let boxes = checkbox_ids(&html);
    assert_eq!(boxes.len(), 4, "{html}");

    // Bad resend forms change nothing.
    let resend_path = format!("/groups/{DLQ_GROUP}/dlq/resend");
    let (status, body) = post_form(c, &resend_path, "id=%zz");
    assert_eq!(status, 400, "{body}");
    let (status, body) = post_form(c, &resend_path, "");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Check at least one message"), "{body}");
    let (status, body) = post_form(c, &resend_path, "id=NOT-A-DEAD-LETTER");
    assert_eq!(status, 404, "{body}");
    assert!(
        body.contains("message id NOT-A-DEAD-LETTER is not in %DLQ%dlq-group"),
        "{body}"
    );
    let form = "Content-Type: application/x-www-form-urlencoded\r\n";
    let (status, body) = http(
        c,
        "POST",
        &resend_path,
        &format!("{form}Origin: http://evil.example\r\n"),
        &format!("id={}", boxes[0]),
    );
    assert_eq!(status, 403, "{body}");
    let retry = format!("%RETRY%{DLQ_GROUP}");
    assert!(
        pull_all(&rt, &api, broker, DLQ_GROUP, &retry).is_empty(),
        "nothing was resent by the refused forms"
    );

    // The page's form as the browser posts it, two boxes checked.
    let (status, body) = http(
        c,
        "POST",
        &resend_path,
        &format!("{form}Origin: http://{c}\r\nSec-Fetch-Site: same-origin\r\n"),
        &format!("id={}&id={}", boxes[0], boxes[1]),
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("Resent 2 message(s) of %DLQ%dlq-group to %RETRY%dlq-group"),
        "{body}"
    );
    assert!(
        has_row(&body, &[&ids[0], "broker-a", "0", DLQ_TOPIC, &retry]),
        "{body}"
    );
    let again = pull_all(&rt, &api, broker, DLQ_GROUP, &retry);
    assert_eq!(bodies(&again), [dead_body(0), dead_body(1)]);
    for m in &again {
        let i: usize = m.message.keys().expect("keys")["dlq-key-".len()..]
            .parse()
            .expect("key index");
        assert_eq!(m.message.property(property::RETRY_TOPIC), Some(DLQ_TOPIC));
        assert_eq!(m.message.tags(), Some("TagA"));
        assert_eq!(
            m.message.property("color"),
            Some(format!("blue-{i}").as_str())
        );
        assert_eq!(m.message.uniq_key(), Some(ids[i].as_str()));
        assert_eq!(m.reconsume_times, 0, "a fresh reconsume count");
        assert_eq!(m.message.property(property::DELAY_TIME_LEVEL), None);
    }
    let configs = rt.block_on(api.broker_topics(broker)).expect("topics");
    let made = &configs.topic_config_table[&retry];
    assert_eq!(
        (made.read_queue_nums, made.write_queue_nums),
        (1, 1),
        "the retry topic is made as send-back makes it"
    );

    // The admin CLI: one message by id, an id not in the DLQ, then all of them.
    let out = admin(
        ns,
        &["message", "dlq", "--group", DLQ_GROUP, "--resend", &ids[2]],
    );
    assert!(
        out.contains(&format!(
            "resent {} from broker-a (DLQ offset 2, original topic {DLQ_TOPIC}) to {retry}",
            ids[2]
        )),
        "{out}"
    );
    assert!(
        out.contains("1 message(s) resent to %RETRY%dlq-group"),
        "{out}"
    );
    let refused = support::admin_output(
        ns,
        &[
            "message",
            "dlq",
            "--group",
            DLQ_GROUP,
            "--resend",
            &format!("{},NOPE", ids[3]),
        ],
    );
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("message id NOPE is not in %DLQ%dlq-group; nothing was resent"),
        "{err}"
    );
    let out = admin(
        ns,
        &["message", "dlq", "--group", DLQ_GROUP, "--resend-all"],
    );
    assert!(
        out.contains("4 message(s) resent to %RETRY%dlq-group"),
        "{out}"
    );
    let again = pull_all(&rt, &api, broker, DLQ_GROUP, &retry);
    let mut want: Vec<String> = [0, 1, 2, 0, 1, 2, 3].into_iter().map(dead_body).collect();
    want.sort();
    assert_eq!(bodies(&again), want, "the ones resent, nothing else");
    // The DLQ keeps its copies.
    let listed = admin(ns, &["message", "dlq", "--group", DLQ_GROUP]);
    assert!(
        listed.contains("4 message(s) in %DLQ%dlq-group"),
        "{listed}"
    );
}

/// `--controller` names a quorum of two, one of them dead: the page still renders, shows the
/// live one leading and the dead one unreachable, and the broker set's master from the leader.
#[test]
fn the_cluster_page_shows_each_controller_and_a_dead_one_as_unreachable() {
    let _turn = file_turn(module_path!());
    let dead = format!("127.0.0.1:{}", free_port());
    let data = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start(
        data.path(),
        free_port(),
        free_port(),
        &["--no-metrics", "--no-console"],
    );
    let c = format!("127.0.0.1:{}", free_port());
    let list = format!("{},{dead}", dev.namesrv);
    let _console = spawn_ready(&[
        "console",
        "--namesrv",
        &dev.namesrv,
        "--controller",
        &list,
        "--listen",
        &c,
    ]);
    let html = page(&c, "/");
    assert!(html.contains("1 of 2 member(s) answered"), "{html}");
    let live = controller_row(&html, &dev.namesrv).expect("the live member's row");
    assert_eq!(
        (live[1].as_str(), live[3].as_str()),
        ("yes", "leader"),
        "{html}"
    );
    let gone = controller_row(&html, &dead).expect("the dead member's row");
    assert_eq!(
        (gone[1].as_str(), gone[3].as_str()),
        ("no", "unreachable"),
        "{html}"
    );
    assert!(
        html.contains(&format!("Controller {dead} is unreachable")),
        "{html}"
    );
    assert!(
        html.contains(&format!(
            "Broker sets as the controller leader at {} sees them.",
            dev.namesrv
        )),
        "the broker sets asked from the leader: {html}"
    );
    assert!(has_row(&html, &["0", &dev.broker, "master"]), "{html}");
}

/// A `cluster up` directory whose processes are stopped however the test ends.
struct UpCluster {
    dir: tempfile::TempDir,
}

impl UpCluster {
    fn path(&self) -> &str {
        self.dir.path().to_str().expect("utf8 tempdir")
    }

    fn status(&self) -> Vec<serde_json::Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_rocketraft"))
            .args(["cluster", "status", "--dir", self.path(), "--json"])
            .output()
            .expect("run cluster status");
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }
}

impl Drop for UpCluster {
    fn drop(&mut self) {
        if self.dir.path().join("cluster.json").exists() {
            let _ = Command::new(env!("CARGO_BIN_EXE_rocketraft"))
                .args(["cluster", "down", "--dir", self.path()])
                .output();
        }
    }
}

/// `cluster up --auth` with three controllers: the NameServer's console signs as the
/// administrator `up` created (the credentials file's path on its command line, never the
/// secret), so its pages show the cluster, not a permission error; it asks every controller,
/// and after kill -9 of a follower shows that one unreachable and the rest still serving.
#[test]
fn the_console_of_cluster_up_auth_signs_as_the_admin_and_sees_the_quorum() {
    let _turn = file_turn(module_path!());
    let cluster = UpCluster {
        dir: tempfile::tempdir().expect("tempdir"),
    };
    let out = Command::new(env!("CARGO_BIN_EXE_rocketraft"))
        .args([
            "--threads",
            "2",
            "cluster",
            "up",
            "--dir",
            cluster.path(),
            "--ports",
            "auto",
            "--segment-size",
            "4194304",
            "--timeout-secs",
            "90",
            "--auth",
            "--controllers",
            "3",
            "--replicas",
            "1",
        ])
        .output()
        .expect("run cluster up");
    assert!(out.status.success(), "cluster up --auth: {out:?}");
    let rows = cluster.status();
    let namesrv = rows
        .iter()
        .find(|r| r["kind"] == "namesrv")
        .expect("the NameServer");
    let console = namesrv["console"]
        .as_str()
        .expect("cluster status --json lists the console")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let controllers: Vec<String> = rows
        .iter()
        .filter(|r| r["kind"] == "controller")
        .map(|r| format!("127.0.0.1:{}", r["ports"]["remoting"]))
        .collect();
    assert_eq!(controllers.len(), 3, "{rows:#?}");

    // No secret on the NameServer's command line: the console reads the file.
    let secret = std::fs::read_to_string(cluster.dir.path().join("admin-credentials"))
        .expect("credentials file")
        .lines()
        .find_map(|l| {
            l.strip_prefix("export ROCKETRAFT_SECRET_KEY=")
                .map(str::to_string)
        })
        .expect("a secret key");
    let pid = namesrv["pid"].as_u64().expect("pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(!cmdline.contains(&secret), "the secret on a command line");
    assert!(cmdline.contains("--console-credentials-file"), "{cmdline}");

    // The cluster, signed as admin: the broker set, its master, every controller answering.
    let mut html = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let (status, body) = get(&console, "/");
        assert_eq!(status, 200, "{body}");
        html = body;
        if html.contains("3 of 3 member(s) answered")
            && html.contains("Controller: master <b>")
            && html.contains("Broker sets as the controller leader at")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(html.contains("Broker set broker-a"), "{html}");
    assert!(html.contains("signed as access key admin"), "{html}");
    assert!(html.contains("3 of 3 member(s) answered"), "{html}");
    assert!(!html.contains("permission denied"), "{html}");
    let roles: Vec<String> = controllers
        .iter()
        .map(|a| controller_row(&html, a).expect("a member's row")[3].clone())
        .collect();
    assert_eq!(
        roles.iter().filter(|r| *r == "leader").count(),
        1,
        "{roles:?}: {html}"
    );
    assert_eq!(
        roles.iter().filter(|r| *r == "follower").count(),
        2,
        "{roles:?}"
    );
    let (status, groups) = get(&console, "/groups");
    assert_eq!(status, 200, "signed admin calls to the broker: {groups}");

    // kill -9 of a follower: shown unreachable, the page still whole.
    let index = roles
        .iter()
        .position(|r| r == "follower")
        .expect("a follower");
    let victim = rows
        .iter()
        .filter(|r| r["kind"] == "controller")
        .nth(index)
        .expect("its status row");
    let victim_pid = victim["pid"].as_u64().expect("pid") as libc::pid_t;
    // SAFETY: plain syscall on a process this test started (through cluster up).
    unsafe { libc::kill(victim_pid, libc::SIGKILL) };
    let dead = &controllers[index];
    eventually("the killed controller shown unreachable", || {
        let (status, body) = get(&console, "/");
        status == 200
            && body.contains("2 of 3 member(s) answered")
            && controller_row(&body, dead).is_some_and(|r| r[3] == "unreachable")
            && body.contains("Controller: master <b>")
    });
    let rows = cluster.status();
    assert!(
        rows.iter().any(|r| r["console"].as_str().is_some()),
        "cluster status --json still lists the console: {rows:#?}"
    );
}
