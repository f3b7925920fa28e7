//! Which NameServers this broker reaches right now: the input of the controllers' route-aware
//! election (`nameServersReached` in BROKER_HEARTBEAT, see `rocketraft_controller::elect`).
//!
//! Clients find a master only through a NameServer. A partition can cut a replica from the
//! NameServers but not from the controller leader; elected, it would take writes nobody can
//! send. Registration (every `register_interval_ms`, with a 6 s timeout) is far too slow to tell,
//! so each controller-mode broker probes every NameServer on its own loop with a light
//! QUERY_DATA_VERSION (the request Apache RocketMQ's broker sends before re-registering; the
//! NameServer only refreshes the broker's liveness) and counts a NameServer as reached while
//! its last answer is younger than the window. Any answer counts, a refusal too: it proves the
//! path.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rocketraft_remoting::codes::request_code;
use rocketraft_remoting::{RemotingClient, RemotingCommand};

/// Who this broker is, as the probe names it.
#[derive(Debug, Clone)]
pub struct ProbeIdentity {
    pub cluster: String,
    pub broker_name: String,
    pub broker_addr: String,
    pub broker_id: i64,
}

/// The last answer of each NameServer.
pub struct NameServerReach {
    addrs: Vec<String>,
    window: Duration,
    last_answer: Mutex<HashMap<String, Instant>>,
}

impl NameServerReach {
    /// Tracks `addrs`; a NameServer counts as reached for `window` after an answer.
    pub fn new(addrs: Vec<String>, window: Duration) -> Self {
        NameServerReach {
            addrs,
            window,
            last_answer: Mutex::new(HashMap::new()),
        }
    }

    /// The NameServers probed.
    pub fn addresses(&self) -> &[String] {
        &self.addrs
    }

    /// How many NameServers answered within the window; `None` if none is configured (nothing
    /// to report, and the election then does not rank this broker for it).
    pub fn reached(&self) -> Option<u32> {
        if self.addrs.is_empty() {
            return None;
        }
        let now = Instant::now();
        let last = self.last_answer.lock();
        let n = self
            .addrs
            .iter()
            .filter(|a| {
                last.get(*a)
                    .is_some_and(|t| now.saturating_duration_since(*t) <= self.window)
            })
            .count();
        Some(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// One QUERY_DATA_VERSION to `addr`, answered within `timeout` or not counted.
    pub async fn probe(
        &self,
        client: &RemotingClient,
        addr: &str,
        me: &ProbeIdentity,
        timeout: Duration,
    ) -> bool {
        let request = RemotingCommand::request(request_code::QUERY_DATA_VERSION)
            .with_ext("brokerName", &me.broker_name)
            .with_ext("brokerAddr", &me.broker_addr)
            .with_ext("clusterName", &me.cluster)
            .with_ext("brokerId", me.broker_id);
        let sent = Instant::now();
        match client.invoke(addr, request, timeout).await {
            Ok(_) => {
                let mut last = self.last_answer.lock();
                let t = last.entry(addr.to_string()).or_insert(sent);
                *t = (*t).max(sent);
                true
            }
            Err(e) => {
                tracing::debug!(namesrv = addr, error = %e, "NameServer probe unanswered");
                false
            }
        }
    }

    /// Probes every NameServer at once.
    pub async fn probe_all(&self, client: &RemotingClient, me: &ProbeIdentity, timeout: Duration) {
        let calls = self
            .addrs
            .iter()
            .map(|addr| self.probe(client, addr, me, timeout));
        futures::future::join_all(calls).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_configured_reports_nothing() {
        let reach = NameServerReach::new(Vec::new(), Duration::from_secs(1));
        assert_eq!(reach.reached(), None);
    }

    #[test]
    fn an_answer_counts_for_the_window_only() {
        let reach =
            NameServerReach::new(vec!["a:1".into(), "b:1".into()], Duration::from_millis(50));
        assert_eq!(reach.reached(), Some(0));
        reach
            .last_answer
            .lock()
            .insert("a:1".into(), Instant::now());
        assert_eq!(reach.reached(), Some(1));
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(reach.reached(), Some(0));
    }
}
