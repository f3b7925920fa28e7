//! `rocketraft console` against a real `rocketraft dev`: its pages show the cluster's real state
//! (the broker's address and role, a topic created with the admin CLI, its route and offsets, a
//! message by key and by id, a group's lag), its forms create and delete a topic and reset a
//! group's offsets (the POSTs a browser sends), bad input gets a 4xx page while the console keeps
//! serving, and a real headless Chromium renders the pages (and the throughput chart's JS table).
//!
//! Set CONSOLE_SCREENSHOT_DIR (e.g. `docs`) to keep the screenshots
//! (`console-cluster.png`, `console-topics.png`); else they go to a temp dir.

#[path = "../support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketraft_common::consts::property;
use rocketraft_remoting::api::{MqClientApi, SendRequest};
use rocketraft_remoting::{response_code, ClientConfig, RemotingClient};

use support::{admin, file_turn, free_port, spawn_ready, Dev, Killed};

/// A dev and a console in front of it; both stopped when dropped.
struct Setup {
    dev: Dev,
    console: String,
    _process: Killed,
    _data: tempfile::TempDir,
}

fn start() -> Setup {
    let data = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start(data.path(), free_port(), free_port(), &["--no-metrics"]);
    let console = format!("127.0.0.1:{}", free_port());
    let process = spawn_ready(&[
        "console",
        "--namesrv",
        &dev.namesrv,
        "--listen",
        &console,
        "--threads",
        "2",
    ]);
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
    assert!(
        has_row(&cluster, &["term", "1"]),
        "the controller's term: {cluster}"
    );
    assert!(
        cluster.contains("Leader"),
        "the controller leads: {cluster}"
    );

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
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is needed for this test: run scripts/setup.sh"
        );
        println!("SKIPPED: chromium is not installed (scripts/setup.sh installs it)");
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
