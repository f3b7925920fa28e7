//! The metadata RocksDB on a real full filesystem (issue 15 item 3): a small tmpfs, a ballast
//! file that fills it. Writes are refused with a clear SERVICE_NOT_AVAILABLE naming the full
//! disk, reads go on, nothing refused is served, writes are accepted again once space is freed
//! (without a restart), and every acknowledged write survives a reopen.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rocketraft_broker::store::{MetadataStore, StoreError};
use rocketraft_broker::topic::TopicConfigManager;
use rocketraft_common::testing::{grow_ballast, Tmpfs};
use rocketraft_common::TopicConfig;
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::Refusal;

fn assert_full_disk_refusal(err: StoreError) {
    let text = err.to_string();
    assert!(matches!(err, StoreError::ServiceNotAvailable(_)), "{text}");
    assert!(
        text.contains("no space left on the broker's disk"),
        "{text}"
    );
    let refusal = Refusal::from(err);
    assert_eq!(
        refusal.code,
        response_code::SERVICE_NOT_AVAILABLE,
        "{refusal:?}"
    );
    assert!(refusal.remark.contains("no space left"), "{refusal:?}");
}

fn group_json(name: &str) -> Vec<u8> {
    format!(r#"{{"groupName":"{name}","retryMaxTimes":16}}"#).into_bytes()
}

/// Retries `f` while the store waits between reopen attempts (a few hundred ms at most).
fn soon<T>(mut f: impl FnMut() -> Result<T, StoreError>) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("writes not accepted again after space was freed: {e}"),
        }
    }
}

#[test]
fn metadata_writes_on_a_full_disk_are_refused_and_accepted_again_once_space_is_freed() {
    let Some(fs) = Tmpfs::mount_or_skip("4m") else {
        return;
    };
    let path = fs.dir.join("metadata");
    let ballast = fs.dir.join("ballast");
    let md = Arc::new(MetadataStore::open(&path).expect("open"));
    let topics = TopicConfigManager::load(md.clone(), "C", "b", false, 4).expect("topics");
    let mut acked_topics = Vec::new();
    let mut acked_groups = Vec::new();
    let mut refused_topics = Vec::new();
    let mut refused_groups = Vec::new();
    // Create topics and groups while a ballast fills the disk, until it is full.
    for i in 0.. {
        assert!(i < 10_000, "the disk never filled");
        grow_ballast(&ballast, 64 * 1024);
        let topic = format!("Topic{i}");
        match topics.upsert(TopicConfig::new(&topic, 8)) {
            Ok(()) => acked_topics.push(topic),
            Err(e) => {
                assert_full_disk_refusal(e);
                refused_topics.push(topic);
            }
        }
        let group = format!("Group{i}");
        match md.put_subscription_group(&group, &group_json(&group)) {
            Ok(()) => acked_groups.push(group),
            Err(e) => {
                assert_full_disk_refusal(e);
                refused_groups.push(group);
            }
        }
        md.commit_offset("G", "Topic0", 0, i).ok();
        if refused_topics.len() >= 3 && refused_groups.len() >= 3 {
            break;
        }
    }
    eprintln!(
        "acknowledged {} topics and {} groups before the disk filled",
        acked_topics.len(),
        acked_groups.len()
    );
    assert!(!acked_topics.is_empty() && !acked_groups.is_empty());
    assert!(md.is_stopped());
    // Deleting is a write too: refused, the topic stays.
    assert_full_disk_refusal(topics.delete(&acked_topics[0]).expect_err("delete refused"));
    assert_full_disk_refusal(
        md.delete_subscription_group(&acked_groups[0])
            .expect_err("delete refused"),
    );
    assert_full_disk_refusal(md.put_kv(b"k", b"v", true).expect_err("kv refused"));
    // Reads go on while the disk is full; nothing refused is served.
    let check = |md: &MetadataStore, topics_present: &[String]| {
        let stored: Vec<String> = md
            .all_topics()
            .expect("all topics")
            .into_iter()
            .map(|t| t.topic_name)
            .filter(|t| t.starts_with("Topic"))
            .collect();
        let mut want = topics_present.to_vec();
        want.sort();
        let mut got = stored;
        got.sort();
        assert_eq!(got, want, "stored topics");
        for g in &acked_groups {
            assert_eq!(
                md.get_subscription_group(g).expect("get"),
                Some(group_json(g)),
                "{g} acknowledged"
            );
        }
        for g in &refused_groups {
            assert_eq!(
                md.get_subscription_group(g).expect("get"),
                None,
                "{g} refused"
            );
        }
        assert_eq!(md.get_kv(b"k").expect("get"), None);
    };
    check(&md, &acked_topics);
    for t in &refused_topics {
        assert!(
            topics.get(t).is_none(),
            "refused {t} served by the topic table"
        );
    }
    assert!(topics.get(&acked_topics[0]).is_some());

    // Space freed by someone else: writes are accepted again, no restart.
    std::fs::remove_file(&ballast).expect("free space");
    soon(|| topics.upsert(TopicConfig::new("TopicAfter", 2)));
    assert!(!md.is_stopped());
    md.put_subscription_group("GroupAfter", &group_json("GroupAfter"))
        .expect("group after");
    md.put_kv(b"k", b"v", true).expect("kv after");
    md.commit_offset("G", "Topic0", 0, 1_000_000)
        .expect("offset after");
    md.flush().expect("flush after");
    let mut present = acked_topics.clone();
    present.push("TopicAfter".into());
    check_after(&md, &present, &acked_groups, &refused_groups);
    drop(topics);
    drop(md);

    // Reopen: every acknowledged creation is there, nothing refused.
    let md = MetadataStore::open(&path).expect("reopen");
    check_after(&md, &present, &acked_groups, &refused_groups);
    assert_eq!(
        md.query_offset("G", "Topic0", 0).expect("offset"),
        Some(1_000_000)
    );
    drop(md);
    drop(fs);
}

fn check_after(md: &MetadataStore, topics: &[String], acked: &[String], refused: &[String]) {
    let mut got: Vec<String> = md
        .all_topics()
        .expect("all topics")
        .into_iter()
        .map(|t| t.topic_name)
        .filter(|t| t.starts_with("Topic"))
        .collect();
    got.sort();
    let mut want = topics.to_vec();
    want.sort();
    assert_eq!(got, want);
    for g in acked.iter().chain(["GroupAfter".to_string()].iter()) {
        assert_eq!(
            md.get_subscription_group(g).expect("get"),
            Some(group_json(g))
        );
    }
    for g in refused {
        assert_eq!(
            md.get_subscription_group(g).expect("get"),
            None,
            "{g} refused"
        );
    }
    assert_eq!(md.get_kv(b"k").expect("get"), Some(b"v".to_vec()));
}
