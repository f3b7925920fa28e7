//! POP copy-forward (issue 15) across a real `kill -9`: a `rocketraft broker` process on a small
//! tmpfs, two messages popped (one kept in flight by ChangeInvisibleTime), the disk filled past
//! `diskSpaceWarningLevelRatio` so that forced deletion wants the segment they are in: the broker
//! stores them again at the head (POP copy-forward, `RKT_POP_COPY_OF`) and the segment goes. The
//! process is then killed with SIGKILL and started again: the old receipt handle acks its message,
//! which never comes back, and the other one comes back exactly once after its invisible time.
//! (broker/tests/e2e/retention_copy.rs checks the copies themselves, with an in-process crash;
//! the two share broker/tests/support/pop_copy.rs.)

use std::path::Path;
use std::time::{Duration, Instant};

use rocketraft_common::testing::Tmpfs;
use rocketraft_nameserver::{NameServer, NamesrvConfig};
use rocketraft_remoting::api::MqClientApi;
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{ClientConfig, RemotingClient};

use crate::pop_copy::{
    ack_kept_after_restart, config, fill_past_warning, filler, only_expires_comes_back,
    pop_kept_and_expires, used,
};
use crate::support::{free_port, spawn_ready, Killed};

/// Starts `rocketraft broker --config FILE` (the config written as TOML) and waits until it is
/// ready.
fn start_broker(config_file: &Path) -> Killed {
    spawn_ready(&[
        "broker",
        "--config",
        config_file.to_str().expect("utf8 path"),
    ])
}

/// SIGKILL, then reaps the process.
fn kill_9(mut broker: Killed) {
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped yet.
    let rc = unsafe { libc::kill(broker.0.id() as libc::pid_t, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill -9");
    broker.0.wait().expect("reap the killed broker");
}

/// Waits until `path` (a CommitLog segment) is deleted, within 30 s.
async fn wait_gone(path: &Path, what: &str) {
    let started = Instant::now();
    while path.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what}: {} never went: the state it holds pins it",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pop_copy_forward_survives_kill_9_of_the_broker_process() {
    let _turn = crate::support::file_turn(module_path!());
    let Some(fs) = Tmpfs::mount_or_skip("48m") else {
        return;
    };
    let conf_dir = tempfile::tempdir().expect("tempdir");
    let root = fs.dir.join("store");
    let ns = NameServer::start(NamesrvConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..NamesrvConfig::default()
    })
    .await
    .expect("namesrv");
    let port = free_port();
    let cfg = config(&root, ns.local_addr(), port);
    let first_segment = cfg.store.commitlog_dir().join("00000000000000000000");
    let config_file = conf_dir.path().join("broker.toml");
    std::fs::write(
        &config_file,
        toml::to_string(&cfg).expect("the broker config as TOML"),
    )
    .expect("write the config");
    let broker = start_broker(&config_file);
    let addr = format!("127.0.0.1:{port}");
    let client = RemotingClient::new(ClientConfig::default());
    let api = MqClientApi::new(client.clone(), Duration::from_secs(5));
    // Both in flight, their originals in the first segment; "kept" kept in flight longer.
    let (popped, popped_at, kept_handle) = pop_kept_and_expires(&api, &client, &addr).await;

    // The full disk wants the first segment: it goes only once both are copied forward.
    fill_past_warning(&api, &addr, &fs, 70.0).await;
    wait_gone(&first_segment, "POP in flight").await;
    // The disk is usable again (the copies let forced deletion free it).
    let started = Instant::now();
    loop {
        let sent = api.send(&addr, &filler()).await;
        if matches!(&sent, Ok(r) if r.code == response_code::SUCCESS) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "sends still refused at {}%: {sent:?}",
            used(&fs)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // kill -9 after the copy, then the same broker again.
    kill_9(broker);
    let _broker = start_broker(&config_file);
    // The handle from before the copy (and the kill) acks its message.
    ack_kept_after_restart(&client, &addr, popped_at, &popped[0], &kept_handle).await;

    // The other one comes back once its invisible time is over, exactly once; the acked one
    // never does.
    only_expires_comes_back(&client, &addr, popped_at).await;
    ns.shutdown().await;
}
