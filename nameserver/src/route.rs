//! The route table (`RouteInfoManager`): which brokers are alive, which broker sets serve which
//! topics, and the cluster each set belongs to.
//!
//! It is plain data behind one `RwLock`, so every operation is a pure step that tests can drive
//! with an explicit clock (`now_ms` arguments) instead of sleeping.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rocketraft_common::consts::perm::{READ as PERM_READ, WRITE as PERM_WRITE};
use rocketraft_common::consts::MASTER_ID;
use rocketraft_common::protocol::{
    BrokerData, ClusterInfo, DataVersion, QueueData, TopicConfigSerializeWrapper, TopicRouteData,
};

/// A broker process is identified by its cluster and address (`BrokerAddrInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BrokerAddrInfo {
    pub cluster: String,
    pub addr: String,
}

/// Liveness of one broker process (`BrokerLiveInfo`).
#[derive(Debug, Clone)]
pub struct BrokerLiveInfo {
    pub broker_name: String,
    pub broker_id: i64,
    pub last_update_ms: i64,
    pub timeout_ms: i64,
    pub data_version: DataVersion,
    pub ha_server_addr: String,
}

/// What a registration tells the registering broker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterResult {
    /// The master's HA address, for a slave.
    pub ha_server_addr: Option<String>,
    /// The master's address, for a slave.
    pub master_addr: Option<String>,
}

/// One REGISTER_BROKER request, decoded.
#[derive(Debug, Clone)]
pub struct Registration {
    pub cluster: String,
    pub broker_addr: String,
    pub broker_name: String,
    pub broker_id: i64,
    pub ha_server_addr: String,
    pub timeout_ms: i64,
    pub topics: TopicConfigSerializeWrapper,
}

/// The NameServer's tables.
#[derive(Debug, Default)]
pub struct RouteTable {
    topic_queue_table: BTreeMap<String, BTreeMap<String, QueueData>>,
    broker_addr_table: BTreeMap<String, BrokerData>,
    cluster_addr_table: BTreeMap<String, BTreeSet<String>>,
    broker_live_table: HashMap<BrokerAddrInfo, BrokerLiveInfo>,
}

impl RouteTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// REGISTER_BROKER: records the broker as alive and, for a master whose topic configs changed,
    /// makes the topic table match the configs it sent (topics it no longer has lose its queues).
    pub fn register(&mut self, reg: Registration, now_ms: i64) -> RegisterResult {
        self.cluster_addr_table
            .entry(reg.cluster.clone())
            .or_default()
            .insert(reg.broker_name.clone());

        let broker = self
            .broker_addr_table
            .entry(reg.broker_name.clone())
            .or_insert_with(|| BrokerData {
                cluster: reg.cluster.clone(),
                broker_name: reg.broker_name.clone(),
                broker_addrs: BTreeMap::new(),
                zone_name: None,
                enable_acting_master: false,
            });
        broker.cluster = reg.cluster.clone();
        // The same address under another id means the process changed role (slave -> master):
        // forget the old id so the address is not listed twice.
        broker
            .broker_addrs
            .retain(|id, addr| *id == reg.broker_id || *addr != reg.broker_addr);
        let first_registration = broker
            .broker_addrs
            .insert(reg.broker_id, reg.broker_addr.clone())
            .as_ref()
            != Some(&reg.broker_addr);

        let key = BrokerAddrInfo {
            cluster: reg.cluster.clone(),
            addr: reg.broker_addr.clone(),
        };
        let version_changed = self
            .broker_live_table
            .get(&key)
            .map(|live| live.data_version != reg.topics.data_version)
            .unwrap_or(true);

        if reg.broker_id == MASTER_ID && (first_registration || version_changed) {
            self.replace_topics_of(&reg.broker_name, &reg.topics);
        }

        self.broker_live_table.insert(
            key,
            BrokerLiveInfo {
                broker_name: reg.broker_name.clone(),
                broker_id: reg.broker_id,
                last_update_ms: now_ms,
                timeout_ms: reg.timeout_ms,
                data_version: reg.topics.data_version.clone(),
                ha_server_addr: reg.ha_server_addr.clone(),
            },
        );

        let mut result = RegisterResult::default();
        if reg.broker_id != MASTER_ID {
            if let Some(master) = self
                .broker_addr_table
                .get(&reg.broker_name)
                .and_then(|b| b.master_addr())
                .map(str::to_string)
            {
                let master_key = BrokerAddrInfo {
                    cluster: reg.cluster.clone(),
                    addr: master.clone(),
                };
                result.ha_server_addr = self
                    .broker_live_table
                    .get(&master_key)
                    .map(|l| l.ha_server_addr.clone());
                result.master_addr = Some(master);
            }
        }
        result
    }

    fn replace_topics_of(&mut self, broker_name: &str, topics: &TopicConfigSerializeWrapper) {
        for (name, config) in &topics.topic_config_table {
            let queue = QueueData {
                broker_name: broker_name.to_string(),
                read_queue_nums: config.read_queue_nums,
                write_queue_nums: config.write_queue_nums,
                perm: config.perm,
                topic_sys_flag: config.topic_sys_flag,
            };
            self.topic_queue_table
                .entry(name.clone())
                .or_default()
                .insert(broker_name.to_string(), queue);
        }
        self.topic_queue_table.retain(|topic, brokers| {
            if !topics.topic_config_table.contains_key(topic) {
                brokers.remove(broker_name);
            }
            !brokers.is_empty()
        });
    }

    /// QUERY_DATA_VERSION / a heartbeat: refreshes liveness; returns whether the version differs.
    pub fn touch(
        &mut self,
        cluster: &str,
        addr: &str,
        version: Option<&DataVersion>,
        now_ms: i64,
    ) -> bool {
        let key = BrokerAddrInfo {
            cluster: cluster.to_string(),
            addr: addr.to_string(),
        };
        match self.broker_live_table.get_mut(&key) {
            Some(live) => {
                live.last_update_ms = now_ms;
                version.is_some_and(|v| *v != live.data_version)
            }
            None => true,
        }
    }

    /// UNREGISTER_BROKER, and what happens to a broker whose liveness expired.
    pub fn unregister(&mut self, cluster: &str, addr: &str, broker_name: &str, broker_id: i64) {
        self.broker_live_table.remove(&BrokerAddrInfo {
            cluster: cluster.to_string(),
            addr: addr.to_string(),
        });
        let mut set_removed = false;
        if let Some(broker) = self.broker_addr_table.get_mut(broker_name) {
            broker
                .broker_addrs
                .retain(|id, a| !(*id == broker_id && a == addr));
            if broker.broker_addrs.is_empty() {
                self.broker_addr_table.remove(broker_name);
                set_removed = true;
            }
        }
        if set_removed {
            if let Some(names) = self.cluster_addr_table.get_mut(cluster) {
                names.remove(broker_name);
                if names.is_empty() {
                    self.cluster_addr_table.remove(cluster);
                }
            }
            self.topic_queue_table.retain(|_, brokers| {
                brokers.remove(broker_name);
                !brokers.is_empty()
            });
        }
    }

    /// Removes every broker whose last registration is older than its timeout; returns them.
    pub fn expire(&mut self, now_ms: i64) -> Vec<(BrokerAddrInfo, BrokerLiveInfo)> {
        let expired: Vec<(BrokerAddrInfo, BrokerLiveInfo)> = self
            .broker_live_table
            .iter()
            .filter(|(_, live)| live.last_update_ms.saturating_add(live.timeout_ms) < now_ms)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, live) in &expired {
            self.unregister(&key.cluster, &key.addr, &live.broker_name, live.broker_id);
        }
        expired
    }

    /// GET_ROUTEINFO_BY_TOPIC: `None` when no live broker serves the topic.
    pub fn route(&self, topic: &str) -> Option<TopicRouteData> {
        let queues = self.topic_queue_table.get(topic)?;
        let mut route = TopicRouteData::default();
        for (broker_name, queue) in queues {
            if let Some(broker) = self.broker_addr_table.get(broker_name) {
                route.queue_datas.push(queue.clone());
                route.broker_datas.push(broker.clone());
            }
        }
        if route.broker_datas.is_empty() {
            return None;
        }
        Some(route)
    }

    /// GET_BROKER_CLUSTER_INFO.
    pub fn cluster_info(&self) -> ClusterInfo {
        ClusterInfo {
            broker_addr_table: self.broker_addr_table.clone(),
            cluster_addr_table: self.cluster_addr_table.clone(),
        }
    }

    /// GET_ALL_TOPIC_LIST_FROM_NAMESERVER.
    pub fn topics(&self) -> BTreeSet<String> {
        self.topic_queue_table.keys().cloned().collect()
    }

    /// GET_TOPICS_BY_CLUSTER.
    pub fn topics_of_cluster(&self, cluster: &str) -> BTreeSet<String> {
        let Some(names) = self.cluster_addr_table.get(cluster) else {
            return BTreeSet::new();
        };
        self.topic_queue_table
            .iter()
            .filter(|(_, brokers)| brokers.keys().any(|b| names.contains(b)))
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// DELETE_TOPIC_IN_NAMESRV (optionally only for one cluster's brokers).
    pub fn delete_topic(&mut self, topic: &str, cluster: Option<&str>) {
        match cluster.and_then(|c| self.cluster_addr_table.get(c)) {
            Some(names) => {
                let names = names.clone();
                if let Some(brokers) = self.topic_queue_table.get_mut(topic) {
                    brokers.retain(|b, _| !names.contains(b));
                    if brokers.is_empty() {
                        self.topic_queue_table.remove(topic);
                    }
                }
            }
            None => {
                self.topic_queue_table.remove(topic);
            }
        }
    }

    /// WIPE_WRITE_PERM_OF_BROKER: clears the write permission of every topic's queues of broker
    /// set `broker_name`; returns how many topics it touched (RocketMQ's
    /// `operateWritePermOfBroker`). The wipe lasts while the broker keeps registering the same
    /// topic-config version: [`RouteTable::register`] takes a broker's topic configs again only
    /// when their version changed or at its first registration, as RocketMQ does.
    pub fn wipe_write_perm(&mut self, broker_name: &str) -> i32 {
        self.operate_write_perm(broker_name, |perm| perm & !PERM_WRITE)
    }

    /// ADD_WRITE_PERM_OF_BROKER: every topic's queues of broker set `broker_name` become
    /// readable and writable (RocketMQ sets `PERM_READ | PERM_WRITE`, whatever they were);
    /// returns how many topics it touched.
    pub fn add_write_perm(&mut self, broker_name: &str) -> i32 {
        self.operate_write_perm(broker_name, |_| PERM_READ | PERM_WRITE)
    }

    fn operate_write_perm(&mut self, broker_name: &str, change: impl Fn(i32) -> i32) -> i32 {
        let mut count = 0;
        for queues in self.topic_queue_table.values_mut() {
            if let Some(queue) = queues.get_mut(broker_name) {
                queue.perm = change(queue.perm);
                count += 1;
            }
        }
        count
    }

    /// How many broker processes are alive.
    pub fn live_brokers(&self) -> usize {
        self.broker_live_table.len()
    }

    /// How many broker sets (`brokerName`s) have a registered broker.
    pub fn broker_sets(&self) -> usize {
        self.broker_addr_table.len()
    }

    /// How many topics some broker set serves.
    pub fn topic_count(&self) -> usize {
        self.topic_queue_table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rocketraft_common::TopicConfig;

    fn reg(name: &str, id: i64, addr: &str, topics: &[&str], counter: i64) -> Registration {
        let mut wrapper = TopicConfigSerializeWrapper::default();
        for t in topics {
            wrapper
                .topic_config_table
                .insert(t.to_string(), TopicConfig::new(*t, 4));
        }
        wrapper.data_version.counter = counter;
        Registration {
            cluster: "C".into(),
            broker_addr: addr.into(),
            broker_name: name.into(),
            broker_id: id,
            ha_server_addr: format!("{addr}-ha"),
            timeout_ms: 1000,
            topics: wrapper,
        }
    }

    #[test]
    fn register_route_and_expire() {
        let mut t = RouteTable::new();
        t.register(reg("a", 0, "m:1", &["T1", "T2"], 1), 0);
        let slave = t.register(reg("a", 1, "s:1", &["T1", "T2"], 1), 0);
        assert_eq!(slave.master_addr.as_deref(), Some("m:1"));
        assert_eq!(slave.ha_server_addr.as_deref(), Some("m:1-ha"));
        let route = t.route("T1").expect("route");
        assert_eq!(route.broker_datas[0].broker_addrs.len(), 2);
        assert!(t.route("nope").is_none());

        // The master drops T2 in a new version: T2 disappears.
        t.register(reg("a", 0, "m:1", &["T1"], 2), 10);
        assert!(t.route("T2").is_none());

        // The slave keeps registering, the master goes silent and expires.
        t.touch("C", "s:1", None, 1500);
        let gone = t.expire(1500);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0.addr, "m:1");
        let route = t.route("T1").expect("slave still serves");
        assert_eq!(route.broker_datas[0].master_addr(), None);
        t.expire(5000);
        assert!(t.route("T1").is_none());
        assert!(t.cluster_info().cluster_addr_table.is_empty());
    }

    #[test]
    fn address_switching_role_is_listed_once() {
        let mut t = RouteTable::new();
        t.register(reg("a", 1, "x:1", &["T"], 1), 0);
        t.register(reg("a", 0, "x:1", &["T"], 1), 0);
        let route = t.route("T").expect("route");
        assert_eq!(route.broker_datas[0].broker_addrs.len(), 1);
        assert_eq!(route.broker_datas[0].master_addr(), Some("x:1"));
    }

    #[test]
    fn wiped_write_perm_survives_registrations_of_the_same_version() {
        let mut t = RouteTable::new();
        t.register(reg("a", 0, "m:1", &["T", "U"], 1), 0);
        t.register(reg("b", 0, "n:1", &["T"], 1), 0);
        assert_eq!(t.wipe_write_perm("a"), 2);
        let perm_of = |t: &RouteTable, topic: &str, broker: &str| {
            t.route(topic)
                .and_then(|r| r.queue_datas.into_iter().find(|q| q.broker_name == broker))
                .map(|q| q.perm)
        };
        assert_eq!(perm_of(&t, "T", "a"), Some(PERM_READ));
        assert_eq!(perm_of(&t, "T", "b"), Some(PERM_READ | PERM_WRITE));
        // The periodic registration with an unchanged version keeps the wipe.
        t.register(reg("a", 0, "m:1", &["T", "U"], 1), 30_000);
        assert_eq!(perm_of(&t, "U", "a"), Some(PERM_READ));
        assert_eq!(t.add_write_perm("a"), 2);
        assert_eq!(perm_of(&t, "U", "a"), Some(PERM_READ | PERM_WRITE));
        assert_eq!(t.wipe_write_perm("nobody"), 0);
        // A new topic-config version is the broker's word again (RocketMQ's rule).
        t.wipe_write_perm("a");
        t.register(reg("a", 0, "m:1", &["T", "U"], 2), 60_000);
        assert_eq!(perm_of(&t, "T", "a"), Some(PERM_READ | PERM_WRITE));
    }

    #[test]
    fn unregister_removes_topics_of_an_empty_set() {
        let mut t = RouteTable::new();
        t.register(reg("a", 0, "m:1", &["T"], 1), 0);
        t.register(reg("b", 0, "n:1", &["T", "U"], 1), 0);
        t.unregister("C", "m:1", "a", 0);
        let route = t.route("T").expect("b still serves T");
        assert_eq!(route.queue_datas.len(), 1);
        assert_eq!(route.queue_datas[0].broker_name, "b");
        assert_eq!(t.topics_of_cluster("C").len(), 2);
        t.delete_topic("U", None);
        assert_eq!(t.topics().len(), 1);
    }
}
