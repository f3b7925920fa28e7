//! Broker heartbeats (`BROKER_HEARTBEAT`, 904), kept in memory by every controller node.
//!
//! Brokers heartbeat every controller, so a newly elected controller leader already knows who is
//! alive. Liveness is never replicated: the leader takes a snapshot of it ([`AliveBrokers`]) into
//! each command it proposes, which keeps `apply` deterministic.

use std::collections::BTreeMap;

use parking_lot::Mutex;

use crate::liveness::AliveBrokers;
use crate::liveness::BrokerLiveInfo;

/// One heartbeat as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub cluster: String,
    pub broker_name: String,
    pub broker_id: i64,
    pub broker_addr: String,
    /// How long this broker counts as alive after this heartbeat (`heartbeatTimeoutMills`).
    pub timeout_ms: u64,
    pub info: BrokerLiveInfo,
}

#[derive(Debug, Clone)]
struct Entry {
    heartbeat: Heartbeat,
    last_ms: u64,
}

impl Entry {
    /// What the broker last reported, if it is alive at `now_ms`; `heard_recently` says whether
    /// it was heard within a quarter of its heartbeat timeout.
    fn live_at(&self, now_ms: u64) -> Option<BrokerLiveInfo> {
        let since = |timeout_ms: u64| now_ms < self.last_ms.saturating_add(timeout_ms);
        since(self.heartbeat.timeout_ms).then(|| BrokerLiveInfo {
            heard_recently: Some(since(self.heartbeat.timeout_ms / 4)),
            ..self.heartbeat.info
        })
    }
}

/// A broker whose heartbeat timed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub cluster: String,
    pub broker_name: String,
    pub broker_id: i64,
    pub broker_addr: String,
}

/// The table of last heartbeats. All methods take the current time (monotonic ms, see
/// `rocketraft_common::time::mono_ms`), so tests drive the clock.
#[derive(Debug, Default)]
pub struct HeartbeatTracker {
    table: Mutex<BTreeMap<(String, i64), Entry>>,
}

impl HeartbeatTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a heartbeat received at `now_ms`.
    pub fn record(&self, heartbeat: Heartbeat, now_ms: u64) {
        let key = (heartbeat.broker_name.clone(), heartbeat.broker_id);
        self.table.lock().insert(
            key,
            Entry {
                heartbeat,
                last_ms: now_ms,
            },
        );
    }

    /// Whether the broker's last heartbeat is younger than its timeout.
    pub fn is_alive(&self, broker_name: &str, broker_id: i64, now_ms: u64) -> bool {
        self.table
            .lock()
            .get(&(broker_name.to_string(), broker_id))
            .is_some_and(|e| now_ms < e.last_ms.saturating_add(e.heartbeat.timeout_ms))
    }

    /// The heartbeat timeout the broker announced in its last heartbeat, if one is recorded.
    pub fn timeout_of(&self, broker_name: &str, broker_id: i64) -> Option<u64> {
        self.table
            .lock()
            .get(&(broker_name.to_string(), broker_id))
            .map(|e| e.heartbeat.timeout_ms)
    }

    /// Whether a heartbeat of this broker was ever recorded (and not yet expired away).
    pub fn knows(&self, broker_name: &str, broker_id: i64) -> bool {
        self.table
            .lock()
            .contains_key(&(broker_name.to_string(), broker_id))
    }

    /// The live brokers at `now_ms`.
    pub fn alive(&self, now_ms: u64) -> AliveBrokers {
        let mut out = AliveBrokers::new();
        for ((name, id), e) in self.table.lock().iter() {
            if let Some(info) = e.live_at(now_ms) {
                out.insert(name.clone(), *id, info);
            }
        }
        out
    }

    /// One broker's entry of [`HeartbeatTracker::alive`], without copying the whole table.
    pub fn live_info(
        &self,
        broker_name: &str,
        broker_id: i64,
        now_ms: u64,
    ) -> Option<BrokerLiveInfo> {
        self.table
            .lock()
            .get(&(broker_name.to_string(), broker_id))
            .and_then(|e| e.live_at(now_ms))
    }

    /// The brokers heard within a quarter of their heartbeat timeout at `now_ms` (no more than
    /// a couple of heartbeats missed): the candidates a depose may pick. A broker the leader
    /// stopped hearing when a partition began is still alive for a whole timeout, and electing
    /// it in a live master's place would put in a master the leader cannot hear.
    pub fn heard_recently(&self, now_ms: u64) -> AliveBrokers {
        let mut out = AliveBrokers::new();
        for ((name, id), e) in self.table.lock().iter() {
            if now_ms < e.last_ms.saturating_add(e.heartbeat.timeout_ms / 4) {
                out.insert(name.clone(), *id, e.heartbeat.info);
            }
        }
        out
    }

    /// Removes and returns the brokers whose heartbeat timed out by `now_ms`.
    pub fn take_expired(&self, now_ms: u64) -> Vec<Expired> {
        let mut table = self.table.lock();
        let expired: Vec<(String, i64)> = table
            .iter()
            .filter(|(_, e)| now_ms >= e.last_ms.saturating_add(e.heartbeat.timeout_ms))
            .map(|(k, _)| k.clone())
            .collect();
        expired
            .into_iter()
            .filter_map(|k| table.remove(&k))
            .map(|e| Expired {
                cluster: e.heartbeat.cluster,
                broker_name: e.heartbeat.broker_name,
                broker_id: e.heartbeat.broker_id,
                broker_addr: e.heartbeat.broker_addr,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::liveness::BrokerLiveness;

    fn hb(name: &str, id: i64, timeout_ms: u64) -> Heartbeat {
        Heartbeat {
            cluster: "c".into(),
            broker_name: name.into(),
            broker_id: id,
            broker_addr: format!("127.0.0.1:{}", 10000 + id),
            timeout_ms,
            info: BrokerLiveInfo::new(1, 100 * id, 0),
        }
    }

    #[test]
    fn heartbeats_expire_after_their_timeout() {
        let t = HeartbeatTracker::new();
        t.record(hb("b", 1, 1000), 0);
        t.record(hb("b", 2, 3000), 0);
        assert!(t.is_alive("b", 1, 999));
        assert!(!t.is_alive("b", 1, 1000));
        let alive = t.alive(1500);
        assert!(!alive.is_alive("b", 1));
        assert_eq!(alive.live_info("b", 2).map(|i| i.max_offset), Some(200));
        let expired = t.take_expired(1500);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].broker_id, 1);
        assert!(!t.knows("b", 1));
        assert!(t.knows("b", 2));
        // A later heartbeat revives.
        t.record(hb("b", 1, 1000), 2000);
        assert!(t.is_alive("b", 1, 2500));
        // Heard recently: within a quarter of the timeout.
        assert!(t.heard_recently(2249).is_alive("b", 1));
        assert!(!t.heard_recently(2250).is_alive("b", 1));
        assert!(t.alive(2250).is_alive("b", 1));
    }
}
