//! `rocketraft dev` with TLS enforcing on its NameServer and broker (certificates from a
//! private CA, issue 16 item 3): the broker registers over TLS, `rocketraft admin
//! --tls-trust-cert` creates and lists topics, a plaintext admin call and one that trusts
//! nothing it can verify get nothing; `rocketraft bench --tls-trust-cert` loads it, and loads
//! a `rocketraft proxy` serving TLS in front of it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{admin_output, free_port, spawn_ready, Dev};

/// A CA and a certificate for 127.0.0.1 signed by it: (CA, certificate, key) PEM files.
fn private_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("cert");
    let paths = (
        dir.join(format!("{name}-ca.pem")),
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&paths.0, ca.pem()).expect("write");
    std::fs::write(&paths.1, cert.pem()).expect("write");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write");
    paths
}

/// A dev config with `[tls]` enforcing and `[tls_client]` trusting `ca` on both servers.
fn dev_toml(ca: &Path, cert: &Path, key: &Path) -> String {
    let tables = format!(
        "mode = \"enforcing\"\ncert = {cert:?}\nkey = {key:?}\n",
        cert = cert.display().to_string(),
        key = key.display().to_string()
    );
    let client = format!(
        "enable = true\ntrust_cert = {ca:?}\n",
        ca = ca.display().to_string()
    );
    format!(
        "[namesrv]\n[namesrv.tls]\n{tables}[namesrv.tls_client]\n{client}\
         [broker]\n[broker.tls]\n{tables}[broker.tls_client]\n{client}"
    )
}

#[test]
fn admin_reaches_a_tls_only_dev_with_its_ca() {
    let _turn = crate::support::file_turn(module_path!());
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = private_ca(dir.path(), "dev");
    let (other_ca, _, _) = private_ca(dir.path(), "other");
    let config = dir.path().join("dev.toml");
    std::fs::write(&config, dev_toml(&ca, &cert, &key)).expect("write config");
    let store = dir.path().join("store");
    let mut dev = Dev::start(
        dir.path(),
        free_port(),
        free_port(),
        &[
            "--config",
            config.to_str().expect("utf8"),
            "--store-dir",
            store.to_str().expect("utf8"),
            "--no-proxy",
        ],
    );
    let ns = dev.namesrv.clone();
    let trusted = ["--tls-trust-cert", ca.to_str().expect("utf8")];
    let run = |extra: &[&str], args: &[&str]| {
        let all: Vec<&str> = extra.iter().chain(args).copied().collect();
        admin_output(&ns, &all)
    };
    let created = run(&trusted, &["topic", "create", "OverTls", "--queues", "2"]);
    let listed = (0..100).find_map(|_| {
        let out = run(&trusted, &["topic", "list"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.lines().any(|l| l == "OverTls") {
            return Some(text);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        None
    });
    let plain = run(&[], &["topic", "list"]);
    let untrusted = run(
        &["--tls-trust-cert", other_ca.to_str().expect("utf8")],
        &["topic", "list"],
    );
    let _ = dev.child.kill();
    let _ = dev.child.wait();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    assert!(
        listed.is_some(),
        "the topic never reached the NameServer over TLS"
    );
    assert!(!plain.status.success(), "a plaintext admin call was served");
    assert!(
        !untrusted.status.success(),
        "a server the admin CLI cannot verify was talked to"
    );
}

/// Runs `rocketraft bench ARGS...` and returns its output whatever its status.
fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rocketraft"))
        .arg("bench")
        .args(args)
        .output()
        .expect("run bench")
}

/// The arguments of `parts`, in order.
fn args<'a>(parts: &[&[&'a str]]) -> Vec<&'a str> {
    parts.concat()
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn bench_runs_over_tls_against_a_tls_only_dev() {
    let _turn = crate::support::file_turn(module_path!());
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = private_ca(dir.path(), "dev");
    let config = dir.path().join("dev.toml");
    std::fs::write(&config, dev_toml(&ca, &cert, &key)).expect("write config");
    let store = dir.path().join("store");
    let dev = Dev::start(
        dir.path(),
        free_port(),
        free_port(),
        &[
            "--config",
            config.to_str().expect("utf8"),
            "--store-dir",
            store.to_str().expect("utf8"),
            "--no-proxy",
        ],
    );
    let (ca, cert, key) = (
        ca.to_str().expect("utf8"),
        cert.to_str().expect("utf8"),
        key.to_str().expect("utf8"),
    );
    let ns = dev.namesrv.as_str();
    // A standalone proxy serving TLS, reaching the dev's servers over TLS.
    let proxy = format!("127.0.0.1:{}", free_port());
    let _proxy = spawn_ready(&[
        "proxy",
        "--listen",
        &proxy,
        "--namesrv",
        ns,
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--remoting-tls-trust-cert",
        ca,
    ]);
    let target = ["--namesrv", ns, "--topic", "BenchOverTls"];
    let tls = ["--tls-trust-cert", ca];
    let produce = [
        "--count",
        "200",
        "--window",
        "8",
        "--size",
        "256",
        "--duration",
        "60",
        "--baseline-secs",
        "1",
    ];

    // Without --tls the bench fails, saying why.
    let plain = bench(&args(&[&["produce"], &target, &produce]));
    assert!(
        !plain.status.success(),
        "plaintext bench ran: {}",
        text(&plain)
    );
    assert!(
        text(&plain).contains("takes TLS only"),
        "no clear refusal: {}",
        text(&plain)
    );
    // With the CA it sends (creating the topic) and pulls everything back.
    let produced = bench(&args(&[&["produce"], &target, &tls, &produce]));
    let out = text(&produced);
    assert!(produced.status.success(), "{out}");
    assert!(out.contains("produce: 200 msgs"), "{out}");
    assert!(out.contains("errors 0"), "{out}");
    let consumed = bench(&args(&[&["consume", "--duration", "30"], &target, &tls]));
    let out = text(&consumed);
    assert!(consumed.status.success(), "{out}");
    assert!(out.contains("consume: 200 msgs"), "{out}");
    // Benches that start their own plaintext servers refuse --tls instead of ignoring it.
    let unused = dir.path().join("metrics-bench");
    let own = bench(&args(&[
        &["metrics", "--dir", unused.to_str().expect("utf8")],
        &tls,
    ]));
    assert!(!own.status.success(), "{}", text(&own));
    assert!(
        text(&own).contains("starts its own plaintext servers"),
        "{}",
        text(&own)
    );

    // The proxy bench: Remoting over TLS (--tls-trust-cert), gRPC to the proxy over TLS
    // (--proxy-tls-trust-cert); every message sent both ways is received and acked.
    let proxy_bench = [
        "proxy",
        "--namesrv",
        ns,
        "--proxy",
        &proxy,
        "--topic",
        "BenchProxyOverTls",
        "--count",
        "100",
        "--window",
        "4",
        "--consumers",
        "1",
    ];
    let proxied = bench(&args(&[
        &proxy_bench,
        &tls,
        &["--proxy-tls-trust-cert", ca],
    ]));
    let out = text(&proxied);
    assert!(proxied.status.success(), "{out}");
    assert!(
        out.contains("send through the proxy (gRPC): 100 msgs"),
        "{out}"
    );
    assert!(
        out.contains("receive + ack through the proxy, 1 consumers: 200 msgs"),
        "{out}"
    );
    // Plaintext gRPC to the TLS proxy gets nothing through.
    let plain_grpc = bench(&args(&[&proxy_bench, &tls]));
    assert!(!plain_grpc.status.success(), "{}", text(&plain_grpc));
    drop(dev);
}
