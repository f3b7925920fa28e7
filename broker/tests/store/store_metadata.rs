//! RocksDB metadata: column families, topics and offsets survive a reopen.

use rocketraft_broker::store::metadata::COLUMN_FAMILIES;
use rocketraft_broker::store::MetadataStore;
use rocketraft_common::TopicConfig;

#[test]
fn topics_and_offsets_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metadata");
    {
        let md = MetadataStore::open(&path).expect("open");
        let mut t = TopicConfig::new("TopicA", 8);
        t.order = true;
        md.put_topic(&t).expect("put topic");
        md.put_topic(&TopicConfig::new("TopicB", 4))
            .expect("put topic");
        md.put_topic(&TopicConfig::new("Gone", 1))
            .expect("put topic");
        md.delete_topic("Gone").expect("delete");
        md.commit_offset("g1", "TopicA", 0, 10).expect("commit");
        md.commit_offset("g1", "TopicA", 1, 11).expect("commit");
        md.commit_offset("g1", "TopicA", 1, 5)
            .expect("backwards commit overwrites");
        md.commit_offset("g10", "TopicA", 0, 99).expect("commit");
        md.commit_offset("g2", "TopicB", 3, 7).expect("commit");
        md.put_subscription_group("g1", br#"{"groupName":"g1"}"#)
            .expect("group");
        md.put_kv(b"pop/ck/1", b"a", true).expect("kv");
        md.put_kv(b"pop/ck/2", b"b", false).expect("kv");
        md.put_kv(b"other", b"c", false).expect("kv");
        md.flush().expect("flush");
    }
    let mut cfs = MetadataStore::list_column_families(&path).expect("list");
    cfs.sort();
    for cf in COLUMN_FAMILIES {
        assert!(cfs.iter().any(|c| c == cf), "{cf} missing in {cfs:?}");
    }

    let md = MetadataStore::open(&path).expect("reopen");
    let a = md.get_topic("TopicA").expect("get").expect("present");
    assert_eq!(a.read_queue_nums, 8);
    assert!(a.order);
    assert_eq!(md.get_topic("Gone").expect("get"), None);
    let mut names: Vec<String> = md
        .all_topics()
        .expect("all")
        .into_iter()
        .map(|t| t.topic_name)
        .collect();
    names.sort();
    assert_eq!(names, vec!["TopicA", "TopicB"]);

    assert_eq!(md.query_offset("g1", "TopicA", 0).expect("q"), Some(10));
    assert_eq!(md.query_offset("g1", "TopicA", 1).expect("q"), Some(5));
    assert_eq!(md.query_offset("g1", "TopicA", 2).expect("q"), None);
    let mut g1 = md.offsets_of_group("g1").expect("group");
    g1.sort();
    assert_eq!(
        g1,
        vec![("TopicA".to_string(), 0, 10), ("TopicA".to_string(), 1, 5)],
        "g10 is not g1"
    );
    assert_eq!(md.all_offsets().expect("all").len(), 4);
    md.delete_offset("g2", "TopicB", 3).expect("delete");
    assert_eq!(md.query_offset("g2", "TopicB", 3).expect("q"), None);

    assert_eq!(
        md.get_subscription_group("g1").expect("group").as_deref(),
        Some(&br#"{"groupName":"g1"}"#[..])
    );
    assert_eq!(md.all_subscription_groups().expect("groups").len(), 1);
    let scanned = md.scan_kv(b"pop/").expect("scan");
    assert_eq!(
        scanned,
        vec![
            (b"pop/ck/1".to_vec(), b"a".to_vec()),
            (b"pop/ck/2".to_vec(), b"b".to_vec())
        ]
    );
    md.delete_kv(b"pop/ck/1").expect("delete");
    assert_eq!(md.get_kv(b"pop/ck/1").expect("get"), None);
}

#[test]
fn second_open_of_the_same_db_fails_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _md = MetadataStore::open(dir.path()).expect("open");
    assert!(
        MetadataStore::open(dir.path()).is_err(),
        "RocksDB's LOCK protects the directory"
    );
}
