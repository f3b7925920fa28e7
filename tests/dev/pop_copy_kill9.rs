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

use bytes::Bytes;
use rocketraft_common::message::MessageExt;
use rocketraft_common::testing::Tmpfs;
use rocketraft_common::TopicConfig;
use rocketraft_nameserver::{NameServer, NamesrvConfig};
use rocketraft_remoting::api::{MqClientApi, SendRequest};
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{ClientConfig, RemotingClient};

use crate::pop_copy::{
    ack, body, change_invisible, config, fill_past_warning, filler, handle, pop, used, POP_TOPIC,
    SEGMENT,
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
    api.create_topic(&addr, &TopicConfig::new(POP_TOPIC, 1))
        .await
        .expect("topic");
    for b in ["kept", "expires"] {
        let r = api
            .send(
                &addr,
                &SendRequest {
                    producer_group: "pg".into(),
                    topic: POP_TOPIC.into(),
                    queue_id: 0,
                    body: Bytes::from(b),
                    ..SendRequest::default()
                },
            )
            .await
            .expect("send");
        assert_eq!(r.code, response_code::SUCCESS);
    }
    // Both in flight, their originals (and checkpoints) in the first segment.
    let popped_at = Instant::now();
    let popped = pop(&client, &addr, 30_000).await;
    assert_eq!(
        popped.iter().map(body).collect::<Vec<_>>(),
        vec!["kept".to_string(), "expires".to_string()]
    );
    let (kept, expires) = (&popped[0], &popped[1]);
    assert!(kept.commit_log_offset < SEGMENT && expires.commit_log_offset < SEGMENT);
    let kept_handle = change_invisible(&client, &addr, kept, 40_000).await;

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
    assert!(
        popped_at.elapsed() < Duration::from_secs(28),
        "too slow to test before the invisible time ends: {:?}",
        popped_at.elapsed()
    );
    assert!(
        pop(&client, &addr, 30_000).await.is_empty(),
        "a message in flight (or its original's queue entry) handed out again"
    );

    // The handle from before the copy (and the kill) acks its message.
    let r = ack(&client, &addr, kept, &kept_handle).await;
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);

    // The other one comes back once its invisible time is over, exactly once; the acked one
    // never does.
    let mut back: Vec<(Duration, MessageExt)> = Vec::new();
    let until = popped_at + Duration::from_secs(46);
    while Instant::now() < until {
        for m in pop(&client, &addr, 60_000).await {
            let at = popped_at.elapsed();
            let r = ack(&client, &addr, &m, &handle(&m)).await;
            assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
            back.push((at, m));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        back.iter().map(|(_, m)| body(m)).collect::<Vec<_>>(),
        vec!["expires".to_string()],
        "only the unacked message comes back, once"
    );
    assert!(
        back[0].0 >= Duration::from_secs(30),
        "came back {:?} after the pop, before its invisible time",
        back[0].0
    );
    assert_eq!(back[0].1.reconsume_times, 1);
    ns.shutdown().await;
}
