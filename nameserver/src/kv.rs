//! The NameServer's namespaced key/value table (`KVConfigManager`): PUT/GET/DELETE_KV_CONFIG.
//! `ORDER_TOPIC_CONFIG` entries are returned to clients as a topic route's `orderTopicConf`.

use std::collections::BTreeMap;

/// The namespace whose values describe ordered topics.
pub const ORDER_TOPIC_CONFIG: &str = "ORDER_TOPIC_CONFIG";

#[derive(Debug, Default)]
pub struct KvTable {
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

impl KvTable {
    pub fn put(&mut self, namespace: &str, key: &str, value: &str) {
        self.namespaces
            .entry(namespace.to_string())
            .or_default()
            .insert(key.to_string(), value.to_string());
    }

    pub fn get(&self, namespace: &str, key: &str) -> Option<&str> {
        self.namespaces.get(namespace)?.get(key).map(String::as_str)
    }

    pub fn delete(&mut self, namespace: &str, key: &str) {
        if let Some(ns) = self.namespaces.get_mut(namespace) {
            ns.remove(key);
            if ns.is_empty() {
                self.namespaces.remove(namespace);
            }
        }
    }

    pub fn namespace(&self, namespace: &str) -> Option<&BTreeMap<String, String>> {
        self.namespaces.get(namespace)
    }
}
