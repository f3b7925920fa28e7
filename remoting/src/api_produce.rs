//! Sending to a topic spread over several broker sets, as RocketMQ's producer does
//! (`MQFaultStrategy` with `sendLatencyFaultEnable`): the writable queues of every set in one
//! stable order (set name, then queue id), round robin over them, a set whose send failed or
//! that has no master left aside for a while, and a failed send retried on another set.
//! A FIFO message group always maps to the same queue by its hash over the whole list, so it
//! never moves to another set (while its set fails over, its sends fail, as in RocketMQ).
//!
//! [`TopicProducer`] does all of it over Remoting; the proxy uses the same queue choice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rocketraft_common::consts::perm;
use rocketraft_common::hash::java_string_hash;
use rocketraft_common::protocol::TopicRouteData;

use crate::api::{ApiError, MqClientApi, SendRequest, SendResult};
use crate::codes::response_code;

/// How long a set whose send failed is left aside (RocketMQ isolates a failed broker for 30 s
/// at most; a failover here takes a few seconds).
pub const FAULT_ISOLATION: Duration = Duration::from_secs(3);

/// Sends tried per message: the first set and up to two others (RocketMQ's
/// `retryTimesWhenSendFailed` = 2).
pub const SEND_ATTEMPTS: usize = 3;

/// Every writable queue of a route as (broker set, queue id), sorted by set name then id, so
/// that the list (and a message group's place in it) does not depend on the route's order.
pub fn writable_queues(route: &TopicRouteData) -> Vec<(String, i32)> {
    let mut queues: Vec<(String, i32)> = route
        .queue_datas
        .iter()
        .filter(|q| perm::is_writeable(q.perm))
        .flat_map(|q| (0..q.write_queue_nums).map(move |i| (q.broker_name.clone(), i)))
        .collect();
    queues.sort();
    queues.dedup();
    queues
}

/// A message group's queue: its Java string hash over every writable queue of every set.
pub fn group_queue<'a>(queues: &'a [(String, i32)], group: &str) -> Option<&'a (String, i32)> {
    if queues.is_empty() {
        return None;
    }
    queues.get(java_string_hash(group).unsigned_abs() as usize % queues.len())
}

/// Whether a broker set of the route has a master to send to.
pub fn has_master(route: &TopicRouteData, broker: &str) -> bool {
    route
        .broker_datas
        .iter()
        .any(|b| b.broker_name == broker && b.master_addr().is_some())
}

/// Whether a failed send may go to another set: no answer at all, or one of the codes
/// RocketMQ's producer retries on (`retryResponseCodes`).
pub fn worth_another_set(e: &ApiError) -> bool {
    match e {
        ApiError::Refused(r) => matches!(
            r.code,
            response_code::SYSTEM_ERROR
                | response_code::SYSTEM_BUSY
                | response_code::SERVICE_NOT_AVAILABLE
                | response_code::NO_PERMISSION
                | response_code::TOPIC_NOT_EXIST
        ),
        ApiError::Remoting(_) => true,
        ApiError::Malformed(_) => false,
    }
}

/// Broker sets left aside after a failure, until a deadline (`LatencyFaultTolerance`).
#[derive(Debug, Default)]
pub struct FaultTolerance {
    down_until: Mutex<HashMap<String, Instant>>,
}

impl FaultTolerance {
    /// Leaves `broker` aside for `FAULT_ISOLATION`.
    pub fn failed(&self, broker: &str) {
        let mut map = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(broker.to_string(), Instant::now() + FAULT_ISOLATION);
    }

    /// A send to `broker` succeeded: it is available again.
    pub fn succeeded(&self, broker: &str) {
        let mut map = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(broker);
    }

    /// Whether `broker` is not left aside now.
    pub fn available(&self, broker: &str) -> bool {
        let map = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        map.get(broker).is_none_or(|until| Instant::now() >= *until)
    }

    /// The next queue in round robin (`counter`) whose set has a master, is not left aside and
    /// is not in `skip`; when every set is left aside, any set with a master not in `skip`; and
    /// when none has a master, any queue not in `skip` (the send then reports the set's state).
    pub fn next_queue(
        &self,
        queues: &[(String, i32)],
        route: &TopicRouteData,
        counter: &AtomicU32,
        skip: &[String],
    ) -> Option<(String, i32)> {
        if queues.is_empty() {
            return None;
        }
        let start = counter.fetch_add(1, Ordering::Relaxed) as usize;
        let in_order = (0..queues.len()).map(|i| &queues[(start + i) % queues.len()]);
        let fresh = |q: &&(String, i32)| !skip.contains(&q.0);
        // First a set with a master that did not fail lately, then any set with a master,
        // then any set.
        (0..3).find_map(|tier| {
            in_order
                .clone()
                .filter(fresh)
                .find(|q| match tier {
                    0 => has_master(route, &q.0) && self.available(&q.0),
                    1 => has_master(route, &q.0),
                    _ => true,
                })
                .cloned()
        })
    }
}

/// A producer over Remoting for topics spread over several broker sets: routes from the
/// NameServers (kept a second, dropped after a failure), round robin over every set's
/// writable queues with failed sets left aside, a failed send retried on other sets, and
/// message groups kept on their queue.
pub struct TopicProducer {
    api: MqClientApi,
    namesrvs: Vec<String>,
    faults: FaultTolerance,
    counter: AtomicU32,
    routes: Mutex<HashMap<String, (Instant, TopicRouteData)>>,
}

/// How long a route is reused.
const ROUTE_TTL: Duration = Duration::from_secs(1);

impl TopicProducer {
    /// `namesrv`: one address or several separated by `;`.
    pub fn new(api: MqClientApi, namesrv: &str) -> Self {
        TopicProducer {
            api,
            namesrvs: namesrv
                .split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            faults: FaultTolerance::default(),
            counter: AtomicU32::new(0),
            routes: Mutex::new(HashMap::new()),
        }
    }

    /// The sets left aside now, for reporting.
    pub fn faults(&self) -> &FaultTolerance {
        &self.faults
    }

    async fn route(&self, topic: &str) -> Result<TopicRouteData, ApiError> {
        {
            let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, r)) = routes.get(topic) {
                if at.elapsed() < ROUTE_TTL {
                    return Ok(r.clone());
                }
            }
        }
        let mut last = ApiError::Malformed("no NameServer address given".to_string());
        for ns in &self.namesrvs {
            match self.api.topic_route(ns, topic).await {
                Ok(r) => {
                    let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
                    routes.insert(topic.to_string(), (Instant::now(), r.clone()));
                    return Ok(r);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn forget_route(&self, topic: &str) {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes.remove(topic);
    }

    /// Sends `request` (its `queue_id` is chosen here) to its topic: on the queue of `group`
    /// when given, else round robin, trying up to [`SEND_ATTEMPTS`] sets. Answers the set and
    /// queue it was stored on with the broker's result; the last error when every try failed.
    pub async fn send(
        &self,
        request: &SendRequest,
        group: Option<&str>,
    ) -> Result<(String, i32, SendResult), ApiError> {
        let mut tried: Vec<String> = Vec::new();
        let mut last = None;
        let attempts = if group.is_some() { 1 } else { SEND_ATTEMPTS };
        for _ in 0..attempts {
            let route = self.route(&request.topic).await?;
            let queues = writable_queues(&route);
            let pick = match group {
                Some(g) => group_queue(&queues, g).cloned(),
                None => self
                    .faults
                    .next_queue(&queues, &route, &self.counter, &tried),
            };
            let Some((broker, queue_id)) = pick else {
                break;
            };
            tried.push(broker.clone());
            let Some(addr) = route
                .broker_datas
                .iter()
                .find(|b| b.broker_name == broker)
                .and_then(|b| b.master_addr())
            else {
                self.faults.failed(&broker);
                self.forget_route(&request.topic);
                last = Some(ApiError::Refused(crate::Refusal::new(
                    response_code::SERVICE_NOT_AVAILABLE,
                    format!("broker set {broker} has no master now"),
                )));
                continue;
            };
            let mut one = request.clone();
            one.queue_id = queue_id;
            match self.api.send(addr, &one).await {
                Ok(r) => {
                    self.faults.succeeded(&broker);
                    return Ok((broker, queue_id, r));
                }
                Err(e) => {
                    let again = worth_another_set(&e);
                    // A refusal of this message (too large, a quota, a bad property) says
                    // nothing about the set: only silence or a set in trouble leaves it aside.
                    if again {
                        self.faults.failed(&broker);
                        self.forget_route(&request.topic);
                    }
                    last = Some(e);
                    if !again {
                        break;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            ApiError::Refused(crate::Refusal::new(
                response_code::NO_PERMISSION,
                format!("topic {} has no writable queue", request.topic),
            ))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rocketraft_common::protocol::{BrokerData, QueueData};
    use std::collections::BTreeMap;

    fn route(masters: &[(&str, bool)]) -> TopicRouteData {
        let mut r = TopicRouteData::default();
        // Listed in reverse: the queue order must not follow the route's.
        for (name, master) in masters.iter().rev() {
            r.queue_datas.push(QueueData {
                broker_name: name.to_string(),
                read_queue_nums: 2,
                write_queue_nums: 2,
                perm: 6,
                topic_sys_flag: 0,
            });
            let id = if *master { 0 } else { 1 };
            r.broker_datas.push(BrokerData {
                cluster: "c".to_string(),
                broker_name: name.to_string(),
                broker_addrs: BTreeMap::from([(id, format!("{name}:1"))]),
                zone_name: None,
                enable_acting_master: false,
            });
        }
        r
    }

    #[test]
    fn round_robin_spreads_over_sets_and_leaves_failed_ones_aside() {
        let r = route(&[("broker-a", true), ("broker-b", true)]);
        let queues = writable_queues(&r);
        assert_eq!(
            queues,
            [
                ("broker-a".to_string(), 0),
                ("broker-a".to_string(), 1),
                ("broker-b".to_string(), 0),
                ("broker-b".to_string(), 1)
            ]
        );
        let faults = FaultTolerance::default();
        let counter = AtomicU32::new(0);
        let picks: Vec<(String, i32)> = (0..4)
            .filter_map(|_| faults.next_queue(&queues, &r, &counter, &[]))
            .collect();
        assert_eq!(picks, queues);
        faults.failed("broker-a");
        for _ in 0..4 {
            let (b, _) = faults.next_queue(&queues, &r, &counter, &[]).expect("one");
            assert_eq!(b, "broker-b");
        }
        // Every set aside: still a set with a master; a retry skips the set just tried.
        faults.failed("broker-b");
        assert!(faults.next_queue(&queues, &r, &counter, &[]).is_some());
        let (b, _) = faults
            .next_queue(&queues, &r, &counter, &["broker-a".to_string()])
            .expect("one");
        assert_eq!(b, "broker-b");
        faults.succeeded("broker-a");
        assert!(faults.available("broker-a"));
        // A set without a master is passed over.
        let r = route(&[("broker-a", false), ("broker-b", true)]);
        let faults = FaultTolerance::default();
        for _ in 0..4 {
            let (b, _) = faults.next_queue(&queues, &r, &counter, &[]).expect("one");
            assert_eq!(b, "broker-b");
        }
    }

    #[test]
    fn a_group_keeps_its_queue_whatever_the_route_order() {
        let a = writable_queues(&route(&[("broker-a", true), ("broker-b", true)]));
        let mut shuffled = route(&[("broker-a", true), ("broker-b", true)]);
        shuffled.queue_datas.reverse();
        let b = writable_queues(&shuffled);
        for g in ["g1", "order-42", "x"] {
            assert_eq!(group_queue(&a, g), group_queue(&b, g));
        }
        assert!(group_queue(&[], "g").is_none());
        assert!(worth_another_set(&ApiError::Refused(crate::Refusal::new(
            response_code::SYSTEM_BUSY,
            "busy"
        ))));
        assert!(!worth_another_set(&ApiError::Refused(crate::Refusal::new(
            response_code::MESSAGE_ILLEGAL,
            "bad"
        ))));
    }
}
