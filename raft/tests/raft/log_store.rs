//! `RocksLogStore`: openraft's storage conformance suite, plus reopen, purge, truncate and
//! corruption tests.

use std::io;
use std::sync::Arc;

use crate::support::KvRequest;
use crate::support::KvStateMachine;
use crate::support::TestConfig;
use openraft::alias::EntryOf;
use openraft::alias::LogIdOf;
use openraft::alias::VoteOf;
use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use openraft::testing::log::StoreBuilder;
use openraft::testing::log::Suite;
use openraft::type_config::TypeConfigExt;
use openraft::vote::RaftLeaderIdExt;
use openraft::LogState;
use openraft::RaftLogReader;
use openraft::RaftTypeConfig;
use openraft::StorageError;
use rocketraft_raft::RocksLogStore;
use rocketraft_raft::CF_LOGS;
use rocketraft_raft::CF_META;
use tempfile::TempDir;

type Store = RocksLogStore<TestConfig>;

struct RocksBuilder;

impl StoreBuilder<TestConfig, Store, KvStateMachine, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, Store, KvStateMachine), StorageError<TestConfig>> {
        let dir = tempfile::tempdir().expect("create temp dir");
        let store = Store::open(dir.path()).expect("open log store");
        Ok((dir, store, KvStateMachine::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::<TestConfig, Store, KvStateMachine, RocksBuilder, TempDir>::test_all(RocksBuilder)
        .await
        .expect("openraft storage suite");
}

fn log_id(term: u64, index: u64) -> LogIdOf<TestConfig> {
    let leader = <TestConfig as RaftTypeConfig>::LeaderId::new_committed(term, 1);
    openraft::LogId::new(leader, index)
}

fn set(term: u64, index: u64) -> EntryOf<TestConfig> {
    EntryOf::<TestConfig>::new_normal(
        log_id(term, index),
        KvRequest::Set {
            key: format!("k{index}"),
            value: format!("v{index}@{term}"),
        },
    )
}

/// Appends and waits for the flush callback, which must report success.
async fn append_durable(store: &mut Store, entries: Vec<EntryOf<TestConfig>>) {
    let (tx, rx) = TestConfig::oneshot();
    store
        .append(entries, IOFlushed::signal(tx))
        .await
        .expect("append");
    rx.await
        .expect("callback called")
        .expect("append flushed without error");
}

async fn all_entries(store: &mut Store) -> Vec<EntryOf<TestConfig>> {
    store
        .get_log_reader()
        .await
        .try_get_log_entries(..)
        .await
        .expect("read entries")
}

#[tokio::test]
async fn reopen_keeps_vote_entries_and_committed() {
    let dir = tempfile::tempdir().unwrap();
    let entries: Vec<_> = (1..=5).map(|i| set(2, i)).collect();
    let vote = VoteOf::<TestConfig>::new_committed(2, 1);
    {
        let mut store = Store::open(dir.path()).unwrap();
        store.save_vote(&vote).await.unwrap();
        append_durable(&mut store, entries.clone()).await;
        store.save_committed(Some(log_id(2, 3))).await.unwrap();
    }

    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.get_log_reader().await.read_vote().await.unwrap(),
        Some(vote)
    );
    assert_eq!(all_entries(&mut store).await, entries);
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(2, 3)));
    assert_eq!(
        store.get_log_state().await.unwrap(),
        LogState {
            last_purged_log_id: None,
            last_log_id: Some(log_id(2, 5)),
        }
    );
}

#[tokio::test]
async fn empty_store_has_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(store.get_log_state().await.unwrap(), LogState::default());
    assert_eq!(
        store.get_log_reader().await.read_vote().await.unwrap(),
        None
    );
    assert_eq!(store.read_committed().await.unwrap(), None);
    assert!(all_entries(&mut store).await.is_empty());
}

#[tokio::test]
async fn purge_survives_reopen_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path()).unwrap();
        append_durable(&mut store, (1..=10).map(|i| set(1, i)).collect()).await;
        store.purge(log_id(1, 4)).await.unwrap();

        let left = all_entries(&mut store).await;
        assert_eq!(
            left.iter().map(|e| e.index()).collect::<Vec<_>>(),
            (5..=10).collect::<Vec<_>>()
        );
        // A synced append after the purge makes the purge durable too.
        append_durable(&mut store, vec![set(1, 11)]).await;
    }

    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.get_log_state().await.unwrap(),
        LogState {
            last_purged_log_id: Some(log_id(1, 4)),
            last_log_id: Some(log_id(1, 11)),
        }
    );
    let left = all_entries(&mut store).await;
    assert_eq!(left.first().map(|e| e.index()), Some(5));
    assert_eq!(left.len(), 7);

    // Purging everything leaves the purged id as the last log id.
    store.purge(log_id(1, 11)).await.unwrap();
    assert!(all_entries(&mut store).await.is_empty());
    assert_eq!(
        store.get_log_state().await.unwrap(),
        LogState {
            last_purged_log_id: Some(log_id(1, 11)),
            last_log_id: Some(log_id(1, 11)),
        }
    );
}

#[tokio::test]
async fn truncate_after_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path()).unwrap();
        append_durable(&mut store, (1..=8).map(|i| set(1, i)).collect()).await;
        store.truncate_after(Some(log_id(1, 5))).await.unwrap();
        assert_eq!(
            store.get_log_state().await.unwrap().last_log_id,
            Some(log_id(1, 5))
        );
    }
    let mut store = Store::open(dir.path()).unwrap();
    let left = all_entries(&mut store).await;
    assert_eq!(
        left.iter().map(|e| e.index()).collect::<Vec<_>>(),
        (1..=5).collect::<Vec<_>>()
    );

    // A new leader's entries replace the truncated suffix.
    append_durable(&mut store, (6..=7).map(|i| set(3, i)).collect()).await;
    let ids: Vec<_> = all_entries(&mut store)
        .await
        .iter()
        .map(|e| e.log_id())
        .collect();
    assert_eq!(ids[5], log_id(3, 6));
    assert_eq!(ids[6], log_id(3, 7));

    store.truncate_after(None).await.unwrap();
    assert!(all_entries(&mut store).await.is_empty());
}

#[tokio::test]
async fn range_reads_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    append_durable(&mut store, (1..=10).map(|i| set(1, i)).collect()).await;
    let mut reader = store.get_log_reader().await;
    let idx = |v: Vec<EntryOf<TestConfig>>| v.iter().map(|e| e.index()).collect::<Vec<_>>();
    assert_eq!(
        idx(reader.try_get_log_entries(3..6).await.unwrap()),
        vec![3, 4, 5]
    );
    assert_eq!(
        idx(reader.try_get_log_entries(8..=20).await.unwrap()),
        vec![8, 9, 10]
    );
    assert!(reader.try_get_log_entries(11..).await.unwrap().is_empty());
    assert!(reader.try_get_log_entries(5..5).await.unwrap().is_empty());
}

#[tokio::test]
async fn corrupted_entry_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path()).unwrap();
        append_durable(&mut store, (1..=3).map(|i| set(1, i)).collect()).await;
    }

    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(false);
    let db = rocksdb::DB::open_cf(&opts, dir.path(), [CF_META, CF_LOGS]).unwrap();
    let logs = db.cf_handle(CF_LOGS).unwrap();
    db.put_cf(logs, 2u64.to_be_bytes(), b"\x01{not json")
        .unwrap();
    db.put_cf(logs, b"short", b"\x01{}").unwrap();
    let mut store = Store::from_db(Arc::new(db)).unwrap();

    let err = store
        .get_log_reader()
        .await
        .try_get_log_entries(1..=3)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    // The last key is not an 8-byte index: the log state cannot be trusted.
    let err = store.get_log_state().await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    // Entry 1 is still intact.
    let one = store
        .get_log_reader()
        .await
        .try_get_log_entries(1..2)
        .await
        .unwrap();
    assert_eq!(one, vec![set(1, 1)]);
}

#[tokio::test]
async fn from_db_requires_column_families() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    let db = rocksdb::DB::open(&opts, dir.path()).unwrap();
    let err = Store::from_db(Arc::new(db)).unwrap_err();
    assert!(
        matches!(err, rocketraft_raft::LogStoreError::MissingColumnFamily(_)),
        "{err}"
    );
}
