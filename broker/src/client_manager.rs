//! Producers and consumers that sent HEART_BEAT (`ProducerManager` + `ConsumerManager`): which
//! clients are in which group, over which connection, with which subscriptions.
//!
//! A client is forgotten when its connection closes or it stays silent for the expiry time; when
//! a consumer group's membership changes, the group's consumers are told (NOTIFY_CONSUMER_IDS_CHANGED)
//! so they rebalance at once instead of at their next 20 s rebalance.

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;
use rocketraft_common::protocol::{ConsumerData, SubscriptionData};
use rocketraft_remoting::codes::request_code;
use rocketraft_remoting::server::ConnectionHandle;
use rocketraft_remoting::RemotingCommand;

/// One client connection.
#[derive(Clone)]
pub struct ClientChannel {
    pub client_id: String,
    pub connection: ConnectionHandle,
    pub last_update_ms: i64,
    /// The client's language as RocketMQ's metrics write it (`java`, `cpp`, ...).
    pub language: String,
    /// The client's protocol version (the request header's `version`).
    pub version: i32,
}

/// A consumer group's members and subscriptions.
#[derive(Clone, Default)]
pub struct ConsumerGroupInfo {
    pub clients: BTreeMap<String, ClientChannel>,
    pub subscriptions: BTreeMap<String, SubscriptionData>,
    pub consume_type: Option<String>,
    pub message_model: Option<String>,
    pub consume_from_where: Option<String>,
}

/// Live client connections, counted as RocketMQ's connection gauges label them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConnectionCounts {
    /// `(language, version)` -> producer connections.
    pub producers: BTreeMap<(String, i32), usize>,
    /// `(group, language, version, consume mode)` -> consumer connections.
    pub consumers: BTreeMap<(String, String, i32, String), usize>,
}

/// `ConsumeType.getTypeCN().toLowerCase()`: `pull`, `push` or `pop`.
fn consume_mode(consume_type: Option<&str>) -> String {
    match consume_type {
        Some("CONSUME_ACTIVELY") => "pull",
        Some("CONSUME_POP") => "pop",
        Some("CONSUME_PASSIVELY") => "push",
        _ => "unknown",
    }
    .to_string()
}

#[derive(Default)]
pub struct ClientManager {
    consumers: Mutex<HashMap<String, ConsumerGroupInfo>>,
    producers: Mutex<HashMap<String, BTreeMap<String, ClientChannel>>>,
}

impl ClientManager {
    /// Records a producer's heartbeat.
    pub fn register_producer(&self, group: &str, channel: ClientChannel) {
        self.producers
            .lock()
            .entry(group.to_string())
            .or_default()
            .insert(channel.client_id.clone(), channel);
    }

    /// The live connections of a producer group's clients, most recently seen first.
    pub fn producer_channels(&self, group: &str) -> Vec<ClientChannel> {
        let mut out: Vec<ClientChannel> = self
            .producers
            .lock()
            .get(group)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        out.sort_by_key(|c| std::cmp::Reverse(c.last_update_ms));
        out
    }

    /// The connection of the producer client `client_id` (any group), if it is connected.
    pub fn producer_channel_of(&self, client_id: &str) -> Option<ClientChannel> {
        self.producers
            .lock()
            .values()
            .filter_map(|clients| clients.get(client_id))
            .filter(|c| !c.connection.is_closed())
            .max_by_key(|c| c.last_update_ms)
            .cloned()
    }

    /// Records a consumer's heartbeat; returns whether the group's membership changed.
    pub fn register_consumer(&self, data: &ConsumerData, channel: ClientChannel) -> bool {
        let mut consumers = self.consumers.lock();
        let group = consumers.entry(data.group_name.clone()).or_default();
        group.consume_type = data.consume_type.clone();
        group.message_model = data.message_model.clone();
        group.consume_from_where = data.consume_from_where.clone();
        // The newest heartbeat states the whole subscription of the group (`updateSubscription`).
        group.subscriptions = data
            .subscription_data_set
            .iter()
            .map(|s| (s.topic.clone(), s.clone()))
            .collect();
        let client_id = channel.client_id.clone();
        let previous = group.clients.insert(client_id, channel.clone());
        match previous {
            None => true,
            Some(old) => old.connection.id() != channel.connection.id(),
        }
    }

    /// UNREGISTER_CLIENT: returns the consumer group whose membership changed, if any.
    pub fn unregister(
        &self,
        client_id: &str,
        producer_group: Option<&str>,
        consumer_group: Option<&str>,
    ) -> Option<String> {
        if let Some(group) = producer_group {
            if let Some(clients) = self.producers.lock().get_mut(group) {
                clients.remove(client_id);
            }
        }
        let group = consumer_group?;
        let mut consumers = self.consumers.lock();
        let info = consumers.get_mut(group)?;
        let removed = info.clients.remove(client_id).is_some();
        if info.clients.is_empty() {
            consumers.remove(group);
        }
        removed.then(|| group.to_string())
    }

    /// Forgets clients whose connection closed or that went silent; returns the consumer groups
    /// whose membership changed.
    pub fn expire(&self, now_ms: i64, expire_ms: i64) -> Vec<String> {
        let dead = |c: &ClientChannel| {
            c.connection.is_closed() || c.last_update_ms.saturating_add(expire_ms) < now_ms
        };
        for clients in self.producers.lock().values_mut() {
            clients.retain(|_, c| !dead(c));
        }
        self.producers.lock().retain(|_, c| !c.is_empty());
        let mut changed = Vec::new();
        let mut consumers = self.consumers.lock();
        for (group, info) in consumers.iter_mut() {
            let before = info.clients.len();
            info.clients.retain(|_, c| !dead(c));
            if info.clients.len() != before {
                changed.push(group.clone());
            }
        }
        consumers.retain(|_, info| !info.clients.is_empty());
        changed
    }

    /// The open producer and consumer connections, counted by their metrics labels.
    pub fn connection_counts(&self) -> ConnectionCounts {
        let mut counts = ConnectionCounts::default();
        for c in self.producers.lock().values().flat_map(|m| m.values()) {
            if !c.connection.is_closed() {
                *counts
                    .producers
                    .entry((c.language.clone(), c.version))
                    .or_default() += 1;
            }
        }
        for (group, info) in self.consumers.lock().iter() {
            let mode = consume_mode(info.consume_type.as_deref());
            for c in info.clients.values().filter(|c| !c.connection.is_closed()) {
                *counts
                    .consumers
                    .entry((group.clone(), c.language.clone(), c.version, mode.clone()))
                    .or_default() += 1;
            }
        }
        counts
    }

    /// Whether consumer group `group` consumes in the BROADCASTING model (its last heartbeat).
    pub fn is_broadcasting(&self, group: &str) -> bool {
        self.consumers
            .lock()
            .get(group)
            .is_some_and(|info| info.message_model.as_deref() == Some("BROADCASTING"))
    }

    /// Whether `client_id` is a live member of consumer group `group`.
    pub fn is_member(&self, group: &str, client_id: &str) -> bool {
        self.consumers
            .lock()
            .get(group)
            .is_some_and(|info| info.clients.contains_key(client_id))
    }

    /// The client ids of a consumer group, sorted (what every member rebalances over).
    pub fn consumer_ids(&self, group: &str) -> Vec<String> {
        self.consumers
            .lock()
            .get(group)
            .map(|info| info.clients.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The subscription a consumer group declared for a topic.
    pub fn subscription(&self, group: &str, topic: &str) -> Option<SubscriptionData> {
        self.consumers
            .lock()
            .get(group)
            .and_then(|info| info.subscriptions.get(topic).cloned())
    }

    /// The consumer groups with a client connected whose subscription names `topic`
    /// (`ConsumerManager.queryTopicConsumeByWho`).
    pub fn groups_subscribed_to(&self, topic: &str) -> Vec<String> {
        self.consumers
            .lock()
            .iter()
            .filter(|(_, info)| info.subscriptions.contains_key(topic))
            .map(|(group, _)| group.clone())
            .collect()
    }

    /// A snapshot of a consumer group.
    pub fn group(&self, group: &str) -> Option<ConsumerGroupInfo> {
        self.consumers.lock().get(group).cloned()
    }

    /// Tells every member of `group` that membership changed (oneway, best effort).
    pub fn notify_ids_changed(&self, group: &str) {
        let channels: Vec<ClientChannel> = self
            .consumers
            .lock()
            .get(group)
            .map(|info| info.clients.values().cloned().collect())
            .unwrap_or_default();
        for channel in channels {
            let notify = RemotingCommand::request(request_code::NOTIFY_CONSUMER_IDS_CHANGED)
                .with_ext("consumerGroup", group);
            if let Err(e) = channel.connection.send_oneway(notify) {
                tracing::debug!(group, client = %channel.client_id, error = %e, "could not notify consumer");
            }
        }
    }
}
