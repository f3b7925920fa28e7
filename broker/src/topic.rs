//! The broker's topic table (`TopicConfigManager`): what topics exist here, with how many queues
//! and which permissions. The table lives in memory for every request and is written through to
//! RocksDB (the `topics` column family) before a change is visible, so a change that was answered
//! survives a crash.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rocketraft_common::consts::{perm, AUTO_CREATE_TOPIC_KEY_TOPIC, SELF_TEST_TOPIC};
use rocketraft_common::protocol::{DataVersion, TopicConfigSerializeWrapper};
use rocketraft_common::time::now_ms;
use rocketraft_common::TopicConfig;

use crate::store::metadata::MetadataStore;
use crate::store::StoreError;

/// Topics of one broker.
pub struct TopicConfigManager {
    topics: RwLock<BTreeMap<String, TopicConfig>>,
    data_version: Mutex<DataVersion>,
    metadata: Arc<MetadataStore>,
    /// Serializes creations so two sends to a new topic create it once.
    create_lock: Mutex<()>,
}

impl TopicConfigManager {
    /// Loads the stored topics and makes sure the system topics exist: `TBW102` (the template of
    /// auto-created topics, only when auto creation is on), `SELF_TEST_TOPIC`, the trace topic
    /// `RMQ_SYS_TRACE_TOPIC` (clients with `enableMsgTrace` send their trace records to it),
    /// `{cluster}_REPLY_TOPIC` (replies of request-reply),
    /// and topics named after the cluster and the broker set (clients route admin requests by
    /// them).
    pub fn load(
        metadata: Arc<MetadataStore>,
        cluster_name: &str,
        broker_name: &str,
        auto_create: bool,
        default_queue_nums: i32,
    ) -> Result<Self, StoreError> {
        let mut topics = BTreeMap::new();
        for config in metadata.all_topics()? {
            topics.insert(config.topic_name.clone(), config);
        }
        let manager = TopicConfigManager {
            topics: RwLock::new(topics),
            data_version: Mutex::new(DataVersion {
                state_version: 0,
                timestamp: now_ms(),
                counter: 0,
            }),
            metadata,
            create_lock: Mutex::new(()),
        };
        let mut system = vec![
            TopicConfig::new(SELF_TEST_TOPIC, 1),
            TopicConfig::new(rocketraft_common::trace::TRACE_TOPIC, 1),
            TopicConfig::new(crate::processor::reply::reply_topic(cluster_name), 1),
            with_perm(
                TopicConfig::new(cluster_name, 16),
                perm::READ | perm::WRITE | perm::INHERIT,
            ),
            with_perm(
                TopicConfig::new(broker_name, 1),
                perm::READ | perm::WRITE | perm::INHERIT,
            ),
        ];
        if auto_create {
            system.push(with_perm(
                TopicConfig::new(AUTO_CREATE_TOPIC_KEY_TOPIC, default_queue_nums),
                perm::READ | perm::WRITE | perm::INHERIT,
            ));
        } else if manager.get(AUTO_CREATE_TOPIC_KEY_TOPIC).is_some() {
            // Auto creation was switched off: stop advertising the template.
            manager.delete(AUTO_CREATE_TOPIC_KEY_TOPIC)?;
        }
        for config in system {
            if manager.get(&config.topic_name).is_none() {
                manager.upsert(config)?;
            }
        }
        Ok(manager)
    }

    /// A topic's configuration; a lite topic's queue (LMQ) is served while its parent is a
    /// LITE topic here ([`crate::lite::lmq_config`]).
    pub fn get(&self, topic: &str) -> Option<TopicConfig> {
        if let Some(config) = self.topics.read().get(topic) {
            return Some(config.clone());
        }
        crate::lite::lmq_config(self, topic)
    }

    /// Creates or replaces a topic; durable before it returns.
    pub fn upsert(&self, config: TopicConfig) -> Result<(), StoreError> {
        self.metadata.put_topic(&config)?;
        self.topics
            .write()
            .insert(config.topic_name.clone(), config);
        self.bump_version();
        Ok(())
    }

    /// Deletes a topic's configuration; returns whether it existed.
    pub fn delete(&self, topic: &str) -> Result<bool, StoreError> {
        self.metadata.delete_topic(topic)?;
        let existed = self.topics.write().remove(topic).is_some();
        if existed {
            self.bump_version();
        }
        Ok(existed)
    }

    /// The topic a send names, created from `default_topic` when it does not exist and the
    /// template allows it (`createTopicInSendMessageMethod`). `None`: no such topic, not created.
    pub fn get_or_create_on_send(
        &self,
        topic: &str,
        default_topic: &str,
        requested_queue_nums: i32,
        auto_create_enabled: bool,
    ) -> Result<Option<(TopicConfig, bool)>, StoreError> {
        if let Some(config) = self.get(topic) {
            return Ok(Some((config, false)));
        }
        if !auto_create_enabled {
            return Ok(None);
        }
        let _guard = self.create_lock.lock();
        if let Some(config) = self.get(topic) {
            return Ok(Some((config, false)));
        }
        let Some(template) = self.get(default_topic) else {
            return Ok(None);
        };
        if template.perm & perm::INHERIT == 0 {
            return Ok(None);
        }
        let queue_nums = requested_queue_nums.clamp(1, template.write_queue_nums.max(1));
        let mut config = TopicConfig::new(topic, queue_nums);
        config.perm = template.perm & !perm::INHERIT;
        config.topic_sys_flag = template.topic_sys_flag;
        self.upsert(config.clone())?;
        tracing::info!(topic, queue_nums, "topic auto-created on send");
        Ok(Some((config, true)))
    }

    /// Every topic, with the version the NameServer compares.
    pub fn wrapper(&self) -> TopicConfigSerializeWrapper {
        TopicConfigSerializeWrapper {
            topic_config_table: self.topics.read().clone(),
            data_version: self.data_version.lock().clone(),
        }
    }

    pub fn all(&self) -> Vec<TopicConfig> {
        self.topics.read().values().cloned().collect()
    }

    fn bump_version(&self) {
        let mut version = self.data_version.lock();
        version.counter += 1;
        version.timestamp = now_ms();
    }
}

fn with_perm(mut config: TopicConfig, perm: i32) -> TopicConfig {
    config.perm = perm;
    config
}
