//! Counters for GET_BROKER_RUNTIME_INFO and the admin CLI.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct BrokerStats {
    put_messages: AtomicU64,
    put_bytes: AtomicU64,
    get_messages: AtomicU64,
    get_bytes: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
pub struct StatsSnapshot {
    pub put_messages: u64,
    pub put_bytes: u64,
    pub get_messages: u64,
    pub get_bytes: u64,
}

impl BrokerStats {
    pub fn record_put(&self, messages: u64, bytes: u64) {
        self.put_messages.fetch_add(messages, Ordering::Relaxed);
        self.put_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn record_get(&self, messages: u64, bytes: u64) {
        self.get_messages.fetch_add(messages, Ordering::Relaxed);
        self.get_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            put_messages: self.put_messages.load(Ordering::Relaxed),
            put_bytes: self.put_bytes.load(Ordering::Relaxed),
            get_messages: self.get_messages.load(Ordering::Relaxed),
            get_bytes: self.get_bytes.load(Ordering::Relaxed),
        }
    }
}
