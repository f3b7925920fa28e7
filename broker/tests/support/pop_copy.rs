//! What the full-disk copy-forward tests of two crates share (broker/tests/e2e/retention_copy.rs
//! with an in-process broker and a simulated crash, tests/dev/pop_copy_kill9.rs with a
//! `rocketraft broker` process and `kill -9`): the broker configuration, filling a small tmpfs
//! past `diskSpaceWarningLevelRatio`, the POP scenario's phases, and POP, ack and
//! ChangeInvisibleTime over Remoting (ack and ChangeInvisibleTime also serve the other POP tests
//! of both binaries). Both include this file with `#[path]`, so nothing of it is a crate's public
//! API.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketraft_broker::store::clean::disk_used_percent;
use rocketraft_broker::store::FlushDiskType;
use rocketraft_broker::BrokerConfig;
use rocketraft_common::consts::property;
use rocketraft_common::message::{decode_messages, MessageExt};
use rocketraft_common::testing::{grow_ballast, Tmpfs};
use rocketraft_common::TopicConfig;
use rocketraft_remoting::api::{MqClientApi, SendRequest};
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::{RemotingClient, RemotingCommand};

pub const POP_TOPIC: &str = "PopKept";
pub const GROUP: &str = "g";
/// The CommitLog segment size: 1 MiB.
pub const SEGMENT: i64 = 1 << 20;

/// A broker on `port` storing under `root`: 1 MiB segments, SYNC_FLUSH, nothing expires, only
/// a full disk deletes (forcibly above 85 %, sends refused above 90 %).
pub fn config(root: &Path, namesrv: std::net::SocketAddr, port: u16) -> BrokerConfig {
    let mut c = BrokerConfig {
        listen: format!("127.0.0.1:{port}").parse().expect("addr"),
        namesrv_addr: namesrv.to_string(),
        ..BrokerConfig::default()
    };
    let s = &mut c.store;
    s.store_root = root.to_path_buf();
    s.commitlog_segment_size = SEGMENT as u64;
    s.consume_queue_entries_per_file = 1000;
    s.flush_disk_type = FlushDiskType::SyncFlush;
    s.pretouch = false;
    s.message_index_enable = false;
    s.file_reserved_time = 72;
    s.clean_file_forcibly_enable = true;
    s.disk_max_used_space_ratio = 75;
    s.disk_space_clean_forcibly_ratio = 85;
    s.disk_space_warning_level_ratio = 90;
    s.clean_resource_interval_ms = 200;
    s.delete_commit_log_files_interval_ms = 0;
    c
}

/// Percent of the tmpfs in use.
pub fn used(fs: &Tmpfs) -> f64 {
    disk_used_percent(&fs.dir).expect("statvfs of the tmpfs")
}

/// A 32 KiB message of topic `Filler`, which fills the disk.
pub fn filler() -> SendRequest {
    SendRequest {
        producer_group: "filler".into(),
        topic: "Filler".into(),
        queue_id: 0,
        body: Bytes::from(vec![b'x'; 32 * 1024]),
        ..SendRequest::default()
    }
}

/// Sends 32 KiB messages of another topic until the tmpfs is `percent` full, then grows a
/// ballast file in one go until it is at least 93 % full: the cleaner sees the disk full at
/// once (every send refused) and wants the oldest segment.
pub async fn fill_past_warning(api: &MqClientApi, addr: &str, fs: &Tmpfs, percent: f64) {
    api.create_topic(addr, &TopicConfig::new("Filler", 1))
        .await
        .expect("filler topic");
    let started = Instant::now();
    while used(fs) < percent {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "filling never reached {percent}%: {}%",
            used(fs)
        );
        let r = api.send(addr, &filler()).await.expect("fill");
        assert_eq!(
            r.code,
            response_code::SUCCESS,
            "fill refused at {}%",
            used(fs)
        );
    }
    let total = {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(fs.dir.as_os_str().as_bytes()).expect("path");
        // SAFETY: statvfs fills the zeroed struct; `c` is a valid NUL-terminated path.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0, "statvfs");
        st.f_blocks as u64 * st.f_frsize as u64
    };
    let missing = ((93.5 - used(fs)).max(0.0) / 100.0 * total as f64) as usize;
    let ballast = fs.dir.join("ballast");
    std::fs::write(&ballast, vec![1u8; missing]).expect("ballast");
    while used(fs) < 93.0 {
        grow_ballast(&ballast, 64 * 1024);
    }
}

pub async fn pop(client: &RemotingClient, addr: &str, invisible_ms: i64) -> Vec<MessageExt> {
    let request = RemotingCommand::request(request_code::POP_MESSAGE)
        .with_ext("consumerGroup", GROUP)
        .with_ext("topic", POP_TOPIC)
        .with_ext("queueId", -1)
        .with_ext("maxMsgNums", 32)
        .with_ext("invisibleTime", invisible_ms)
        .with_ext("pollTime", 0)
        .with_ext("bornTime", rocketraft_common::time::now_ms())
        .with_ext("initMode", 0);
    let r = client
        .invoke(addr, request, Duration::from_secs(10))
        .await
        .expect("pop");
    match r.code {
        response_code::SUCCESS => decode_messages(&r.body).expect("decodable pop body"),
        response_code::PULL_NOT_FOUND | response_code::POLLING_TIMEOUT => Vec::new(),
        other => panic!("pop answered {other} {:?}", r.remark),
    }
}

/// The receipt handle of a popped message.
pub fn handle(m: &MessageExt) -> String {
    m.message
        .property(property::POP_CK)
        .expect("POP_CK on every popped message")
        .to_string()
}

/// The body of a message as text.
pub fn body(m: &MessageExt) -> String {
    String::from_utf8_lossy(&m.message.body).to_string()
}

/// ACK_MESSAGE of `m` (popped from `topic` by `group`) with receipt handle `handle`.
pub async fn ack(
    client: &RemotingClient,
    addr: &str,
    group: &str,
    topic: &str,
    m: &MessageExt,
    handle: &str,
) -> RemotingCommand {
    let request = RemotingCommand::request(request_code::ACK_MESSAGE)
        .with_ext("consumerGroup", group)
        .with_ext("topic", topic)
        .with_ext("queueId", m.queue_id)
        .with_ext("extraInfo", handle)
        .with_ext("offset", m.queue_offset);
    client
        .invoke(addr, request, Duration::from_secs(5))
        .await
        .expect("ack")
}

/// ChangeInvisibleTime of `m` (popped from `topic` by `group`); the new handle, built from the
/// answer as RocketMQ's clients do.
pub async fn change_invisible(
    client: &RemotingClient,
    addr: &str,
    group: &str,
    topic: &str,
    m: &MessageExt,
    invisible_ms: i64,
) -> String {
    let old = handle(m);
    let request = RemotingCommand::request(request_code::CHANGE_MESSAGE_INVISIBLETIME)
        .with_ext("consumerGroup", group)
        .with_ext("topic", topic)
        .with_ext("queueId", m.queue_id)
        .with_ext("extraInfo", old.clone())
        .with_ext("offset", m.queue_offset)
        .with_ext("invisibleTime", invisible_ms);
    let r = client
        .invoke(addr, request, Duration::from_secs(5))
        .await
        .expect("change");
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
    let mut parts: Vec<String> = old.split(' ').map(str::to_string).collect();
    parts[1] = r.ext("popTime").expect("popTime").to_string();
    parts[2] = r.ext("invisibleTime").expect("invisibleTime").to_string();
    parts.join(" ")
}

/// Creates [`POP_TOPIC`] on `addr`, sends "kept" and "expires" to it and pops both with a 30 s
/// invisible time (their originals, and checkpoints, in the first segment); "kept" is then kept
/// in flight longer (40 s) by ChangeInvisibleTime. The two popped messages, when they were
/// popped, and the handle "kept" has now (the one its consumer holds).
pub async fn pop_kept_and_expires(
    api: &MqClientApi,
    client: &RemotingClient,
    addr: &str,
) -> (Vec<MessageExt>, Instant, String) {
    api.create_topic(addr, &TopicConfig::new(POP_TOPIC, 1))
        .await
        .expect("topic");
    for b in ["kept", "expires"] {
        let r = api
            .send(
                addr,
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
    let popped_at = Instant::now();
    let popped = pop(client, addr, 30_000).await;
    assert_eq!(
        popped.iter().map(body).collect::<Vec<_>>(),
        vec!["kept".to_string(), "expires".to_string()]
    );
    let (kept, expires) = (&popped[0], &popped[1]);
    assert!(kept.commit_log_offset < SEGMENT && expires.commit_log_offset < SEGMENT);
    let kept_handle = change_invisible(client, addr, GROUP, POP_TOPIC, kept, 40_000).await;
    (popped, popped_at, kept_handle)
}

/// After the copy and a restart, still within the invisible time of the messages popped at
/// `popped_at`: nothing in flight (nor its original's queue entry) is handed out again, and
/// the handle from before the copy acks `kept`.
pub async fn ack_kept_after_restart(
    client: &RemotingClient,
    addr: &str,
    popped_at: Instant,
    kept: &MessageExt,
    kept_handle: &str,
) {
    assert!(
        popped_at.elapsed() < Duration::from_secs(28),
        "too slow to test before the invisible time ends: {:?}",
        popped_at.elapsed()
    );
    assert!(
        pop(client, addr, 30_000).await.is_empty(),
        "a message in flight (or its original's queue entry) handed out again"
    );
    let r = ack(client, addr, GROUP, POP_TOPIC, kept, kept_handle).await;
    assert_eq!(r.code, response_code::SUCCESS, "{:?}", r.remark);
}

/// Pops (and acks) until 46 s after `popped_at`: only "expires" comes back, once its 30 s
/// invisible time (kept across the copy) is over, exactly once; the acked one never does.
/// Returns it.
pub async fn only_expires_comes_back(
    client: &RemotingClient,
    addr: &str,
    popped_at: Instant,
) -> MessageExt {
    let mut back: Vec<(Duration, MessageExt)> = Vec::new();
    let until = popped_at + Duration::from_secs(46);
    while Instant::now() < until {
        for m in pop(client, addr, 60_000).await {
            let at = popped_at.elapsed();
            let r = ack(client, addr, GROUP, POP_TOPIC, &m, &handle(&m)).await;
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
    let (at, m) = back.remove(0);
    assert!(
        at >= Duration::from_secs(30),
        "came back {at:?} after the pop, before its invisible time"
    );
    assert_eq!(m.reconsume_times, 1);
    m
}
