//! Broker metadata in RocksDB at `{store_root}/metadata/`: topic configs, consumer offsets,
//! subscription groups and a generic key-value space, one column family each.
//!
//! Durability: topic configs and subscription groups are written with a synced WAL (a created
//! topic must survive a crash the moment the admin is told it exists). Consumer offsets are
//! plain WAL writes without sync: they reach disk with the OS's writeback or the next synced
//! write; RocketMQ itself only persists offsets every 5 s, and a lost offset commit means
//! re-delivery, never loss. Call [`MetadataStore::flush`] to force them out (shutdown does).
//!
//! Sized for a small box: two background jobs, no compression (the crate is built without
//! compression libraries), small write buffers.

use std::path::Path;

use rocketraft_common::TopicConfig;
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Direction, IteratorMode, Options,
    WriteOptions, DB,
};

use super::error::StoreError;

pub const CF_TOPICS: &str = "topics";
pub const CF_CONSUMER_OFFSETS: &str = "consumer_offsets";
pub const CF_SUBSCRIPTION_GROUPS: &str = "subscription_groups";
pub const CF_KV: &str = "kv";
/// Every column family the store creates (besides RocksDB's `default`).
pub const COLUMN_FAMILIES: [&str; 4] = [
    CF_TOPICS,
    CF_CONSUMER_OFFSETS,
    CF_SUBSCRIPTION_GROUPS,
    CF_KV,
];

/// A key and its value from the `kv` column family.
pub type KvPair = (Vec<u8>, Vec<u8>);

pub struct MetadataStore {
    db: DB,
}

impl std::fmt::Debug for MetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataStore")
            .field("path", &self.db.path())
            .finish()
    }
}

/// The consumer offset key `group@topic@queueId`.
pub fn offset_key(group: &str, topic: &str, queue_id: i32) -> String {
    format!("{group}@{topic}@{queue_id}")
}

fn parse_offset_key(key: &[u8]) -> Option<(String, String, i32)> {
    let s = std::str::from_utf8(key).ok()?;
    let mut it = s.rsplitn(3, '@');
    let qid = it.next()?.parse().ok()?;
    let topic = it.next()?.to_string();
    let group = it.next()?.to_string();
    Some((group, topic, qid))
}

fn decode_i64(v: &[u8]) -> Option<i64> {
    let b: [u8; 8] = v.try_into().ok()?;
    Some(i64::from_be_bytes(b))
}

fn synced() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}

impl MetadataStore {
    /// Opens (creating if needed) the database and its column families.
    pub fn open(path: impl AsRef<Path>) -> Result<MetadataStore, StoreError> {
        let path = path.as_ref();
        super::mapped_file::create_dir_all_durable(path).map_err(|e| StoreError::io(path, e))?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        opts.set_compression_type(DBCompressionType::None);
        opts.set_write_buffer_size(8 << 20);
        opts.set_keep_log_file_num(4);
        let cfs = COLUMN_FAMILIES.iter().map(|name| {
            let mut o = Options::default();
            o.set_compression_type(DBCompressionType::None);
            o.set_write_buffer_size(8 << 20);
            ColumnFamilyDescriptor::new(*name, o)
        });
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(MetadataStore { db })
    }

    fn cf(&self, name: &str) -> Result<&ColumnFamily, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StoreError::Metadata(format!("column family {name} missing")))
    }

    /// Names of the column families present in the database at `path`.
    pub fn list_column_families(path: impl AsRef<Path>) -> Result<Vec<String>, StoreError> {
        Ok(DB::list_cf(&Options::default(), path)?)
    }

    pub fn put_topic(&self, config: &TopicConfig) -> Result<(), StoreError> {
        let json = serde_json::to_vec(config).map_err(|e| StoreError::Metadata(e.to_string()))?;
        self.db.put_cf_opt(
            self.cf(CF_TOPICS)?,
            config.topic_name.as_bytes(),
            json,
            &synced(),
        )?;
        Ok(())
    }

    pub fn get_topic(&self, topic: &str) -> Result<Option<TopicConfig>, StoreError> {
        match self.db.get_cf(self.cf(CF_TOPICS)?, topic.as_bytes())? {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Metadata(format!("topic {topic}: {e}"))),
            None => Ok(None),
        }
    }

    pub fn delete_topic(&self, topic: &str) -> Result<(), StoreError> {
        self.db
            .delete_cf_opt(self.cf(CF_TOPICS)?, topic.as_bytes(), &synced())?;
        Ok(())
    }

    /// Every topic config; an entry that does not parse is logged and skipped.
    pub fn all_topics(&self) -> Result<Vec<TopicConfig>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_TOPICS)?, IteratorMode::Start)
        {
            let (k, v) = item?;
            match serde_json::from_slice::<TopicConfig>(&v) {
                Ok(t) => out.push(t),
                Err(e) => {
                    tracing::error!(key = %String::from_utf8_lossy(&k), error = %e, "unreadable topic config skipped")
                }
            }
        }
        Ok(out)
    }

    /// Stores a consumer offset (overwrites, also backwards, as Java does).
    pub fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        queue_id: i32,
        offset: i64,
    ) -> Result<(), StoreError> {
        self.db.put_cf(
            self.cf(CF_CONSUMER_OFFSETS)?,
            offset_key(group, topic, queue_id).as_bytes(),
            offset.to_be_bytes(),
        )?;
        Ok(())
    }

    pub fn query_offset(
        &self,
        group: &str,
        topic: &str,
        queue_id: i32,
    ) -> Result<Option<i64>, StoreError> {
        Ok(self
            .db
            .get_cf(
                self.cf(CF_CONSUMER_OFFSETS)?,
                offset_key(group, topic, queue_id).as_bytes(),
            )?
            .and_then(|v| decode_i64(&v)))
    }

    pub fn delete_offset(&self, group: &str, topic: &str, queue_id: i32) -> Result<(), StoreError> {
        self.db.delete_cf(
            self.cf(CF_CONSUMER_OFFSETS)?,
            offset_key(group, topic, queue_id).as_bytes(),
        )?;
        Ok(())
    }

    fn scan_offsets(&self, prefix: &[u8]) -> Result<Vec<(String, String, i32, i64)>, StoreError> {
        let mut out = Vec::new();
        let mode = IteratorMode::From(prefix, Direction::Forward);
        for item in self.db.iterator_cf(self.cf(CF_CONSUMER_OFFSETS)?, mode) {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            if let (Some((g, t, q)), Some(o)) = (parse_offset_key(&k), decode_i64(&v)) {
                out.push((g, t, q, o));
            }
        }
        Ok(out)
    }

    /// `(topic, queue id, offset)` of every queue `group` committed.
    pub fn offsets_of_group(&self, group: &str) -> Result<Vec<(String, i32, i64)>, StoreError> {
        let prefix = format!("{group}@");
        Ok(self
            .scan_offsets(prefix.as_bytes())?
            .into_iter()
            .filter(|(g, ..)| g == group)
            .map(|(_, t, q, o)| (t, q, o))
            .collect())
    }

    /// `(group, topic, queue id, offset)` of every committed offset.
    pub fn all_offsets(&self) -> Result<Vec<(String, String, i32, i64)>, StoreError> {
        self.scan_offsets(b"")
    }

    pub fn put_subscription_group(&self, group: &str, value: &[u8]) -> Result<(), StoreError> {
        self.db.put_cf_opt(
            self.cf(CF_SUBSCRIPTION_GROUPS)?,
            group.as_bytes(),
            value,
            &synced(),
        )?;
        Ok(())
    }

    pub fn get_subscription_group(&self, group: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .db
            .get_cf(self.cf(CF_SUBSCRIPTION_GROUPS)?, group.as_bytes())?)
    }

    pub fn delete_subscription_group(&self, group: &str) -> Result<(), StoreError> {
        self.db.delete_cf_opt(
            self.cf(CF_SUBSCRIPTION_GROUPS)?,
            group.as_bytes(),
            &synced(),
        )?;
        Ok(())
    }

    pub fn all_subscription_groups(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_SUBSCRIPTION_GROUPS)?, IteratorMode::Start)
        {
            let (k, v) = item?;
            out.push((String::from_utf8_lossy(&k).into_owned(), v.into_vec()));
        }
        Ok(out)
    }

    /// Generic key-value write; `sync` = synced WAL.
    pub fn put_kv(&self, key: &[u8], value: &[u8], sync: bool) -> Result<(), StoreError> {
        let mut w = WriteOptions::default();
        w.set_sync(sync);
        self.db.put_cf_opt(self.cf(CF_KV)?, key, value, &w)?;
        Ok(())
    }

    pub fn get_kv(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(CF_KV)?, key)?)
    }

    pub fn delete_kv(&self, key: &[u8]) -> Result<(), StoreError> {
        self.db.delete_cf(self.cf(CF_KV)?, key)?;
        Ok(())
    }

    /// Every `(key, value)` whose key starts with `prefix`, in key order.
    pub fn scan_kv(&self, prefix: &[u8]) -> Result<Vec<KvPair>, StoreError> {
        let mut out = Vec::new();
        let mode = IteratorMode::From(prefix, Direction::Forward);
        for item in self.db.iterator_cf(self.cf(CF_KV)?, mode) {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }

    /// Syncs the WAL (makes unsynced offset commits durable).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_wal(true)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_keys() {
        assert_eq!(offset_key("g", "T", 3), "g@T@3");
        assert_eq!(
            parse_offset_key(b"g@T@3"),
            Some(("g".into(), "T".into(), 3))
        );
        assert_eq!(parse_offset_key(b"bad"), None);
    }
}
