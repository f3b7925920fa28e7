//! `rocketraft cluster up|status|down` and `rocketraft admin broker replicas` as a user runs
//! them: real processes (three controllers, a NameServer, three brokers) on free loopback ports.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;

use serde_json::Value;

use crate::support;

/// The tests start seven processes each: one cluster at a time is enough for a small machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

pub(crate) fn rocketraft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rocketraft"))
        .args(args)
        .output()
        .expect("run rocketraft")
}

pub(crate) fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A cluster directory whose processes are stopped however the test ends.
pub(crate) struct Cluster {
    pub(crate) dir: tempfile::TempDir,
}

impl Cluster {
    pub(crate) fn new() -> Cluster {
        Cluster {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub(crate) fn dir(&self) -> &str {
        self.dir.path().to_str().expect("utf8 tempdir")
    }

    pub(crate) fn up(&self, extra: &[&str]) -> Output {
        rocketraft(&crate::up_args("2", self.dir(), extra))
    }

    /// `cluster up --dir DIR EXTRA...`, nothing else: a restart of a stopped cluster.
    fn restart(&self, extra: &[&str]) -> Output {
        let mut args = vec![
            "--threads",
            "2",
            "cluster",
            "up",
            "--dir",
            self.dir(),
            "--timeout-secs",
            "60",
        ];
        args.extend_from_slice(extra);
        rocketraft(&args)
    }

    pub(crate) fn status(&self) -> Vec<Value> {
        let out = rocketraft(&["cluster", "status", "--dir", self.dir(), "--json"]);
        assert!(out.status.success(), "status: {}", text(&out));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status JSON: {e}: {}", text(&out)))
    }

    fn file(&self) -> Value {
        let raw = std::fs::read(self.dir.path().join("cluster.json")).expect("cluster.json");
        serde_json::from_slice(&raw).expect("cluster.json is JSON")
    }

    pub(crate) fn namesrv(&self) -> String {
        self.file()["namesrv_addr"]
            .as_str()
            .expect("namesrv_addr")
            .to_string()
    }

    pub(crate) fn down(&self) -> Output {
        rocketraft(&["cluster", "down", "--dir", self.dir()])
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.dir.path().join("cluster.json").exists() {
            let _ = self.down();
        }
    }
}

fn count(rows: &[Value], key: &str, value: &str) -> usize {
    rows.iter().filter(|r| r[key] == value).count()
}

/// Gone, or a zombie nobody reaped yet: either way not running.
pub(crate) fn pid_gone(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

fn pids(rows: &[Value]) -> Vec<u64> {
    rows.iter()
        .map(|r| r["pid"].as_u64().expect("pid"))
        .collect()
}

/// The part that needs only this binary's processes: start (without waiting for the broker
/// set's registration), inspect, refuse a second start, stop, stop again.
#[test]
fn up_status_refuse_down() {
    let _turn = crate::support::file_turn(module_path!());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::new();
    let out = cluster.up(&["--wait-for", "started"]);
    assert!(out.status.success(), "cluster up: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("rocketraft cluster is up: NameServer 127.0.0.1:"),
        "{stdout}"
    );

    let rows = cluster.status();
    assert_eq!(rows.len(), 7, "{rows:#?}");
    assert!(rows.iter().all(|r| r["alive"] == true), "{rows:#?}");
    assert_eq!(count(&rows, "kind", "controller"), 3);
    assert_eq!(count(&rows, "kind", "namesrv"), 1);
    assert_eq!(count(&rows, "kind", "broker"), 3);
    for r in &rows {
        assert!(r["ports"]["remoting"].as_u64().is_some(), "{r}");
        let log = r["log"].as_str().expect("log path");
        assert!(Path::new(log).exists(), "{log}");
    }
    // Every process printed its ready line, the brokers included.
    for name in ["controller-1", "namesrv", "broker-3"] {
        let stdout = std::fs::read_to_string(cluster.dir.path().join(name).join("stdout.log"))
            .expect("stdout.log");
        assert!(stdout.contains(" is ready"), "{name}: {stdout}");
    }
    // The controllers elect a leader among themselves.
    let mut leaders = 0;
    for _ in 0..100 {
        leaders = count(&cluster.status(), "role", "leader");
        if leaders == 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(leaders, 1, "one controller leader");

    let again = cluster.up(&["--wait-for", "started"]);
    assert!(!again.status.success(), "a second up must refuse");
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("already up") && err.contains("cluster down --dir"),
        "{err}"
    );
    assert_eq!(
        pids(&cluster.status()),
        pids(&rows),
        "the refused up started nothing"
    );

    let out = cluster.down();
    assert!(out.status.success(), "down: {}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("stopped ")
            .count(),
        7,
        "{}",
        text(&out)
    );
    let after = cluster.status();
    assert!(
        after
            .iter()
            .all(|r| r["alive"] == false && r["role"] == "dead"),
        "{after:#?}"
    );
    for pid in pids(&rows) {
        assert!(pid_gone(pid), "pid {pid} still runs after cluster down");
    }
    let file = cluster.file();
    let processes = file["processes"].as_array().expect("processes");
    assert!(processes.iter().all(|p| p["stopped"] == true));

    let out = cluster.down();
    assert!(out.status.success(), "second down: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing to stop"),
        "{}",
        text(&out)
    );
}

/// The full readiness (the NameServer lists the set with a master and every replica) and the
/// brokers' own HA status: needs the brokers' controller mode.
#[test]
fn up_registers_one_master_and_replicas_report_ha_status() {
    let _turn = crate::support::file_turn(module_path!());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::new();
    let out = cluster.up(&[]);
    assert!(out.status.success(), "cluster up: {}", text(&out));

    let rows = cluster.status();
    assert_eq!(rows.len(), 7, "{rows:#?}");
    assert!(rows.iter().all(|r| r["alive"] == true), "{rows:#?}");
    let brokers: Vec<&Value> = rows.iter().filter(|r| r["kind"] == "broker").collect();
    assert_eq!(
        brokers.iter().filter(|r| r["role"] == "master").count(),
        1,
        "{rows:#?}"
    );
    assert_eq!(
        brokers.iter().filter(|r| r["role"] == "slave").count(),
        2,
        "{rows:#?}"
    );

    let namesrv = cluster.namesrv();
    let out = support::admin_output(
        &namesrv,
        &["broker", "replicas", "--broker", "broker-a", "--json"],
    );
    assert!(
        out.status.success(),
        "admin broker replicas: {}",
        text(&out)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("replicas JSON");
    let replicas = report["replicas"].as_array().expect("replicas");
    assert_eq!(replicas.len(), 3, "{report:#}");
    assert!(
        replicas.iter().all(|r| r["status"].is_object()),
        "every replica answers: {report:#}"
    );
    let masters = replicas
        .iter()
        .filter(|r| r["status"]["role"] == "MASTER")
        .count();
    assert_eq!(masters, 1, "{report:#}");

    let table = support::admin(&namesrv, &["broker", "replicas", "--broker", "broker-a"]);
    assert_eq!(table.matches("MASTER").count(), 1, "{table}");

    // The epochs of every replica (mqadmin getBrokerEpoch): the master has started one; a
    // replica holding data shares its first; the last epoch of each list is open (RocketMQ's
    // Long.MAX_VALUE); a slave that has not replicated a byte yet has none.
    let epochs: Value = serde_json::from_str(&support::admin(
        &namesrv,
        &["broker", "epoch", "--broker", "broker-a", "--json"],
    ))
    .expect("epoch JSON");
    let caches = epochs.as_object().expect("by address");
    assert_eq!(caches.len(), 3, "{epochs:#}");
    let with_epochs: Vec<&Value> = caches
        .values()
        .filter(|c| c["epochList"].as_array().is_some_and(|l| !l.is_empty()))
        .collect();
    assert!(
        !with_epochs.is_empty(),
        "the master has an epoch: {epochs:#}"
    );
    for c in caches.values() {
        assert_eq!(c["brokerName"], "broker-a", "{epochs:#}");
        match c["epochList"].as_array().map(Vec::as_slice) {
            Some([first, .., last]) | Some([first @ last]) => {
                assert!(first["epoch"].as_i64() >= Some(1), "{epochs:#}");
                assert_eq!(first, &with_epochs[0]["epochList"][0], "{epochs:#}");
                assert_eq!(last["endOffset"], i64::MAX, "{epochs:#}");
            }
            _ => assert_eq!(c["maxOffset"], 0, "{epochs:#}"),
        }
    }

    // mqadmin electMaster / cleanBrokerMetadata: a designated in-sync slave becomes master;
    // forgetting a set that has a master is refused and changes nothing; without the cluster
    // secret a state change is refused with the fix.
    let controller = rows
        .iter()
        .find(|r| r["kind"] == "controller")
        .and_then(|r| r["ports"]["remoting"].as_u64())
        .map(|p| format!("127.0.0.1:{p}"))
        .expect("a controller's Remoting port");
    let secret = cluster.dir.path().join("cluster-secret");
    let secret = secret.to_str().expect("utf8");
    let ctl = |args: &[&str]| {
        let mut all = vec![
            "--controller",
            controller.as_str(),
            "--cluster-secret-file",
            secret,
        ];
        all.extend_from_slice(args);
        support::admin_output(&namesrv, &all)
    };
    let replicas = |out: Output| -> Value {
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).expect("JSON")
    };
    // A slave joins the SyncStateSet once it has caught up with the master.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (before, slave) = loop {
        let before = replicas(ctl(&[
            "controller",
            "replicas",
            "--broker",
            "broker-a",
            "--json",
        ]));
        let master = before["masterBrokerId"].as_i64().expect("a master");
        let slave = before["inSyncReplicas"]
            .as_array()
            .expect("in sync")
            .iter()
            .filter_map(|r| r["brokerId"].as_i64())
            .find(|id| *id != master);
        if let Some(slave) = slave {
            break (before, slave);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no slave in the SyncStateSet: {before:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let unsigned = support::admin_output(
        &namesrv,
        &[
            "--controller",
            controller.as_str(),
            "controller",
            "elect",
            "--broker",
            "broker-a",
            "--broker-id",
            &slave.to_string(),
        ],
    );
    assert!(!unsigned.status.success());
    assert!(
        String::from_utf8_lossy(&unsigned.stderr).contains("--cluster-secret-file"),
        "{}",
        text(&unsigned)
    );
    let elected = replicas(ctl(&[
        "controller",
        "elect",
        "--broker",
        "broker-a",
        "--broker-id",
        &slave.to_string(),
        "--json",
    ]));
    assert_eq!(elected["masterBrokerId"], slave, "{elected:#}");
    assert!(
        elected["masterEpoch"].as_i64() > before["masterEpoch"].as_i64(),
        "{elected:#} after {before:#}"
    );
    let after = replicas(ctl(&[
        "controller",
        "replicas",
        "--broker",
        "broker-a",
        "--json",
    ]));
    assert_eq!(after["masterBrokerId"], slave, "{after:#}");
    let refused = ctl(&["controller", "clean", "--broker", "broker-a"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("still has a master"),
        "{}",
        text(&refused)
    );
    let unknown = ctl(&["controller", "clean", "--broker", "broker-z"]);
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("broker set broker-z does not exist"),
        "{}",
        text(&unknown)
    );
    let kept = replicas(ctl(&[
        "controller",
        "replicas",
        "--broker",
        "broker-a",
        "--json",
    ]));
    assert_eq!(kept["masterBrokerId"], slave, "nothing changed: {kept:#}");

    let out = cluster.down();
    assert!(out.status.success(), "down: {}", text(&out));
    for pid in pids(&rows) {
        assert!(pid_gone(pid), "pid {pid} still runs after cluster down");
    }

    // A restart keeps the ports, configs and data: the quorum and the broker set come back
    // with one master.
    let refused = cluster.restart(&["--replicas", "2"]);
    assert!(
        !refused.status.success(),
        "new options on a stopped cluster"
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("drop --replicas"),
        "{}",
        text(&refused)
    );
    let out = cluster.restart(&[]);
    assert!(out.status.success(), "restart: {}", text(&out));
    let again = cluster.status();
    assert!(again.iter().all(|r| r["alive"] == true), "{again:#?}");
    let ports = |rows: &[Value]| rows.iter().map(|r| r["ports"].clone()).collect::<Vec<_>>();
    assert_eq!(ports(&again), ports(&rows), "same ports after a restart");
    assert_eq!(count(&again, "role", "master"), 1, "{again:#?}");
    assert_eq!(count(&again, "role", "slave"), 2, "{again:#?}");
    let out = cluster.down();
    assert!(out.status.success(), "down: {}", text(&out));
    for pid in pids(&again) {
        assert!(pid_gone(pid), "pid {pid} still runs after cluster down");
    }
}

/// `rocketraft admin --namesrv NAMESRV ARGS...`, signed with `credentials` (access key, secret
/// key) through the environment, or unsigned.
fn admin_as(namesrv: &str, credentials: Option<(&str, &str)>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rocketraft"));
    cmd.args(["admin", "--namesrv", namesrv])
        .args(args)
        .env_remove("ROCKETRAFT_ACCESS_KEY")
        .env_remove("ROCKETRAFT_SECRET_KEY");
    if let Some((ak, sk)) = credentials {
        cmd.env("ROCKETRAFT_ACCESS_KEY", ak)
            .env("ROCKETRAFT_SECRET_KEY", sk);
    }
    cmd.output().expect("run admin")
}

/// The value of `export NAME=VALUE` in a credentials file.
fn exported<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("export {name}=")))
        .unwrap_or_else(|| panic!("no {name} in the credentials file"))
}

/// `cluster up --auth`: the administrator's keys in an owner-only file (never printed), unsigned
/// admin calls refused and nothing created by them, signed ones served; `up`'s readiness check
/// and `status` sign with the file, `down` stops it all; no node's log holds a secret (issue 16:
/// secrets are never logged), while the refusals are logged.
#[test]
fn up_with_auth_refuses_unsigned_admin_calls() {
    use std::os::unix::fs::PermissionsExt;
    let _turn = crate::support::file_turn(module_path!());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::new();
    let out = cluster.up(&["--auth", "--controllers", "1", "--replicas", "1"]);
    assert!(out.status.success(), "cluster up --auth: {}", text(&out));
    let path = cluster.dir.path().join("admin-credentials");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("authentication is on"), "{stdout}");
    assert!(
        stdout.contains(&format!(". {}", path.display())),
        "{stdout}"
    );
    let mode = std::fs::metadata(&path)
        .expect("credentials file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "credentials file mode {mode:o}");
    let file = std::fs::read_to_string(&path).expect("credentials file");
    let (ak, sk) = (
        exported(&file, "ROCKETRAFT_ACCESS_KEY"),
        exported(&file, "ROCKETRAFT_SECRET_KEY"),
    );
    assert_eq!(ak, "admin");
    assert!(!stdout.contains(sk), "the secret key was printed");
    for name in ["namesrv/namesrv.toml", "broker-1/broker.toml"] {
        let config = std::fs::read_to_string(cluster.dir.path().join(name)).expect("config");
        assert!(config.contains("authentication_enabled = true"), "{name}");
    }

    // status asks the NameServer (signed) which broker is the master.
    let rows = cluster.status();
    assert_eq!(count(&rows, "role", "master"), 1, "{rows:#?}");

    let namesrv = cluster.namesrv();
    let create = ["topic", "create", "AuthTopic", "--queues", "2"];
    let unsigned = admin_as(&namesrv, None, &create);
    assert!(
        !unsigned.status.success(),
        "unsigned create: {}",
        text(&unsigned)
    );
    let wrong = admin_as(&namesrv, Some((ak, "not-the-secret")), &create);
    assert!(
        !wrong.status.success(),
        "wrongly signed create: {}",
        text(&wrong)
    );
    let route = ["topic", "route", "AuthTopic"];
    let absent = admin_as(&namesrv, Some((ak, sk)), &route);
    assert!(
        !absent.status.success(),
        "the refused creates created nothing: {}",
        text(&absent)
    );
    let unsigned_list = admin_as(&namesrv, None, &["topic", "list"]);
    assert!(
        !unsigned_list.status.success(),
        "unsigned list: {}",
        text(&unsigned_list)
    );

    let signed = admin_as(&namesrv, Some((ak, sk)), &create);
    assert!(signed.status.success(), "signed create: {}", text(&signed));
    let mut shown = admin_as(&namesrv, Some((ak, sk)), &route);
    for _ in 0..50 {
        if shown.status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        shown = admin_as(&namesrv, Some((ak, sk)), &route);
    }
    assert!(shown.status.success(), "signed route: {}", text(&shown));
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("broker-a"),
        "{}",
        text(&shown)
    );

    let out = cluster.down();
    assert!(out.status.success(), "down: {}", text(&out));
    for pid in pids(&rows) {
        assert!(pid_gone(pid), "pid {pid} still runs after cluster down");
    }
    assert_no_secret_logged(cluster.dir.path(), sk);
}

/// The value of `key` in a server's TOML config: the secret key of a credentials value (a table,
/// or RocketMQ's JSON string), or the string itself.
fn config_secret(config: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(config).expect("config");
    let table: toml::Table = toml::from_str(&text).expect("config parses");
    let value = table
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {}", config.display()));
    let secret = match value {
        toml::Value::Table(t) => t
            .get("secretKey")
            .and_then(|v| v.as_str())
            .map(String::from),
        toml::Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(json) => json["secretKey"].as_str().map(String::from),
            Err(_) => Some(s.clone()),
        },
        _ => None,
    };
    secret.unwrap_or_else(|| panic!("{key} of {} holds no secret: {value}", config.display()))
}

/// Reads every log of every process of the cluster in `dir` (the stdout and stderr files
/// `cluster.json` names, and their rotated generation) and asserts that none holds the
/// administrator's secret key `admin_secret`, the inner credentials' secret key or the cluster
/// secret (as `cluster up` wrote them into its files); that every process logged something (the
/// check is not vacuous); and that the refused calls were logged.
fn assert_no_secret_logged(dir: &Path, admin_secret: &str) {
    let file: Value =
        serde_json::from_slice(&std::fs::read(dir.join("cluster.json")).expect("cluster.json"))
            .expect("cluster.json parses");
    let processes = file["processes"].as_array().expect("processes");
    let cluster_secret = std::fs::read_to_string(dir.join("cluster-secret"))
        .expect("cluster-secret")
        .trim()
        .to_string();
    let broker = processes
        .iter()
        .find(|p| p["role"] == "broker")
        .expect("a broker");
    let broker_config = Path::new(broker["config"].as_str().expect("broker config"));
    let inner_secret = config_secret(broker_config, "inner_client_authentication_credentials");
    assert_eq!(
        config_secret(broker_config, "cluster_secret"),
        cluster_secret,
        "the cluster-secret file and the broker's config agree"
    );
    let secrets = [
        ("the administrator's secret key", admin_secret),
        ("the inner credentials' secret key", inner_secret.as_str()),
        ("the cluster secret", cluster_secret.as_str()),
    ];
    for (what, secret) in secrets {
        assert!(secret.len() >= 16, "{what} is too short to search for");
    }
    let mut refusals = Vec::new();
    for p in processes {
        let name = p["name"].as_str().expect("name");
        let mut logged = 0;
        for key in ["stdout_log", "stderr_log"] {
            let log = p[key].as_str().expect("log path");
            for path in [log.to_string(), format!("{log}.1")] {
                let Ok(bytes) = std::fs::read(&path) else {
                    continue;
                };
                let log_text = String::from_utf8_lossy(&bytes);
                logged += log_text.len();
                for (what, secret) in secrets {
                    assert!(!log_text.contains(secret), "{what} is in {path} of {name}");
                }
                refusals.extend(
                    strip_ansi(&log_text)
                        .lines()
                        .filter(|l| l.contains("request refused by ACL"))
                        .map(|l| format!("{name}: {l}")),
                );
            }
        }
        assert!(
            logged > 0,
            "{name} logged nothing: the check would be vacuous"
        );
    }
    assert!(
        refusals.iter().any(|l| l.contains(r#"access_key="admin""#)),
        "the wrongly signed call's refusal was not logged: {refusals:#?}"
    );
    assert!(
        refusals.iter().any(|l| l.contains(r#"access_key="""#)),
        "the unsigned calls' refusals were not logged: {refusals:#?}"
    );
}

/// `text` without the terminal colour codes tracing's text format writes around field names.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ parameters... final letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
