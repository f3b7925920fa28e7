//! The official Apache RocketMQ 5 Rust client (`rocketmq` 5.0.0 from crates.io, apache/
//! rocketmq-clients) through the gRPC proxy of a real `rocketraft dev`, in every client type it
//! has: Producer (normal, FIFO, delay, transactions committed, rolled back and checked back)
//! and SimpleConsumer. The client program is `compat/rocketmq-official/`, a Cargo project of
//! its own built once into the shared target directory.

use std::process::Command;

use crate::support::{free_port, Dev};

#[test]
fn official_rust_client_producers_and_simple_consumers_work_through_the_proxy() {
    let _turn = crate::support::file_turn(module_path!());
    let probe = crate::compat_rocketmq_rust::build_compat_program(
        "rocketmq-official",
        "rmq-official-probe",
    );
    let data = tempfile::tempdir().expect("tempdir");
    let mut dev = Dev::start(
        data.path(),
        free_port(),
        free_port(),
        &crate::compat_python::FAST_TX,
    );
    let (namesrv, proxy) = (dev.namesrv.clone(), dev.proxy.clone());
    let setup =
        std::panic::catch_unwind(|| crate::compat_python::suite_topics(&namesrv, "Rust", "rustg"));
    let out = setup.as_ref().ok().map(|()| {
        Command::new(&probe)
            .env("PROXY", &proxy)
            .env("PREFIX", "Rust")
            .env("GROUP", "rustg")
            // The client logs under $HOME/logs.
            .env("HOME", data.path())
            .output()
            .expect("run the official Rust client")
    });
    let _ = dev.child.kill();
    let _ = dev.child.wait();
    if let Err(e) = setup {
        std::panic::resume_unwind(e);
    }
    let out = out.expect("ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the official Rust client failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    for want in [
        "normal_ok",
        "fifo_ok",
        "delay_ok",
        "tx_checked",
        "tx_ok",
        "done",
    ] {
        assert!(kinds.contains(&want), "no {want} event in:\n{stdout}");
    }
    let tx = events.iter().find(|e| e["event"] == "tx_ok").expect("tx");
    assert_eq!(
        tx["bodies"],
        serde_json::json!(["rust-tx-commit", "rust-tx-orphan"]),
        "{stdout}"
    );
}
