//! The official Apache RocketMQ 5 Rust client (`rocketmq` 5.0.0 from crates.io, apache/
//! rocketmq-clients) through the gRPC proxy of a real `rocketraft dev`, in every client type it
//! has: Producer (normal, FIFO, delay, transactions committed, rolled back and checked back)
//! and SimpleConsumer. The client program is `compat/rocketmq-official/`, a Cargo project of
//! its own built once into the shared target directory.

use std::process::Command;

#[test]
fn official_rust_client_producers_and_simple_consumers_work_through_the_proxy() {
    let _turn = crate::support::file_turn(module_path!());
    let probe = crate::compat_rocketmq_rust::build_compat_program(
        "rocketmq-official",
        "rmq-official-probe",
    );
    let events = crate::compat_python::run_official_suite(
        Command::new(&probe),
        "Rust",
        "rustg",
        &[
            "normal_ok",
            "fifo_ok",
            "delay_ok",
            "tx_checked",
            "tx_ok",
            "done",
        ],
    );
    let tx = events.iter().find(|e| e["event"] == "tx_ok").expect("tx");
    assert_eq!(
        tx["bodies"],
        serde_json::json!(["rust-tx-commit", "rust-tx-orphan"]),
        "{events:?}"
    );
}
