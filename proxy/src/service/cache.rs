//! What the proxy reads from the NameServer and the brokers and keeps a little while: topic
//! routes (a second, dropped when a broker call on the topic fails), topic message types and
//! group FIFO flags (a few seconds).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rocketraft_common::protocol::TopicRouteData;
use rocketraft_remoting::api::ApiError;
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::RemotingCommand;

use super::convert::{accepted_types, from_api, status};
use super::Service;
use crate::pb;

/// How long a topic's message type or a group's FIFO flag is trusted before it is asked again.
const META_TTL: Duration = Duration::from_secs(3);

/// How long a topic route is reused (a failed broker call drops it at once).
const ROUTE_TTL: Duration = Duration::from_secs(1);

/// A group's `(consumeMessageOrderly, liteSubExclusive)`.
type GroupFlags = (bool, bool);

/// Topic routes, topic message types and group FIFO flags read from the NameServer and brokers.
#[derive(Default)]
pub(super) struct MetaCache {
    /// Shared, not copied: every send looks its topic's route up.
    routes: Mutex<HashMap<String, (Instant, Arc<TopicRouteData>)>>,
    topic_types: Mutex<HashMap<String, (Instant, Vec<i32>)>>,
    group_flags: Mutex<HashMap<String, (Instant, GroupFlags)>>,
    /// Broker sets whose send failed lately, left aside by the round robin.
    pub(super) faults: rocketraft_remoting::api_produce::FaultTolerance,
    /// Wakes the producer heartbeats when a producer announced its topics.
    pub(super) heartbeat_now: tokio::sync::Notify,
}

fn cached<V: Clone>(
    map: &Mutex<HashMap<String, (Instant, V)>>,
    key: &str,
    ttl: Duration,
) -> Option<V> {
    let map = map.lock().unwrap_or_else(|e| e.into_inner());
    map.get(key)
        .filter(|(at, _)| at.elapsed() < ttl)
        .map(|(_, v)| v.clone())
}

fn remember<V>(map: &Mutex<HashMap<String, (Instant, V)>>, key: &str, value: V) {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() > 10_000 {
        map.retain(|_, (at, _)| at.elapsed() < META_TTL);
    }
    map.insert(key.to_string(), (Instant::now(), value));
}

impl Service {
    /// A topic's route from the NameServer, reused for up to [`ROUTE_TTL`] unless a broker
    /// call on it failed since (see [`Service::broker_failed`]), so a failover is followed at
    /// the next request.
    pub(super) async fn route(&self, topic: &str) -> Result<Arc<TopicRouteData>, pb::Status> {
        if let Some(r) = cached(&self.meta.routes, topic, ROUTE_TTL) {
            return Ok(r);
        }
        let mut last = status(pb::Code::InternalError, "no NameServer configured");
        for ns in self.namesrvs() {
            match self.api.topic_route(&ns, topic).await {
                Ok(r) => {
                    let r = Arc::new(r);
                    remember(&self.meta.routes, topic, r.clone());
                    return Ok(r);
                }
                Err(ApiError::Refused(r)) if r.code == response_code::TOPIC_NOT_EXIST => {
                    return Err(status(
                        pb::Code::TopicNotFound,
                        format!("topic {topic} does not exist"),
                    ))
                }
                Err(e) => last = from_api(&e),
            }
        }
        Err(last)
    }

    fn namesrvs(&self) -> Vec<String> {
        self.config
            .namesrv_addr
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Forgets `topic`'s route: the next request asks the NameServer again.
    pub(super) fn forget_route(&self, topic: &str) {
        let mut routes = self.meta.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes.remove(topic);
    }

    /// A broker call on `topic` failed: forget its route (the master may have changed) and
    /// answer the protocol's status.
    pub(super) fn broker_failed(&self, topic: &str, e: &ApiError) -> pb::Status {
        let mut routes = self.meta.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes.remove(topic);
        from_api(e)
    }

    /// The message types a topic accepts, from its `message.type` attribute on a master
    /// (GET_TOPIC_CONFIG), cached a few seconds. Every type when no master answers.
    pub(super) async fn topic_types(&self, name: &str, route: &TopicRouteData) -> Vec<i32> {
        if let Some(t) = cached(&self.meta.topic_types, name, META_TTL) {
            return t;
        }
        let request =
            || RemotingCommand::request(request_code::GET_TOPIC_CONFIG).with_ext("topic", name);
        let Some(r) = self
            .ask_masters(route, request, &[response_code::SUCCESS], "topic config")
            .await
        else {
            return accepted_types(None);
        };
        let config: Option<rocketraft_common::TopicConfig> = serde_json::from_slice(&r.body).ok();
        let types = accepted_types(
            config
                .as_ref()
                .and_then(|c| c.attributes.get("message.type"))
                .map(String::as_str),
        );
        remember(&self.meta.topic_types, name, types.clone());
        types
    }

    /// Whether a consumer group consumes in order (`consumeMessageOrderly` of its
    /// subscription group on a master), cached a few seconds; false for an unknown group.
    pub(super) async fn group_is_fifo(&self, group: &str, route: &TopicRouteData) -> bool {
        self.group_flags(group, route).await.0
    }

    /// Whether a consumer group's lite topics are exclusive to one client
    /// (`liteSubExclusive`), cached as [`Self::group_is_fifo`].
    pub(super) async fn group_is_lite_exclusive(
        &self,
        group: &str,
        route: &TopicRouteData,
    ) -> bool {
        self.group_flags(group, route).await.1
    }

    /// `(consumeMessageOrderly, liteSubExclusive)` of a group's config on a master.
    async fn group_flags(&self, group: &str, route: &TopicRouteData) -> GroupFlags {
        if let Some(f) = cached(&self.meta.group_flags, group, META_TTL) {
            return f;
        }
        let request = || {
            RemotingCommand::request(request_code::GET_SUBSCRIPTIONGROUP_CONFIG)
                .with_ext("group", group)
        };
        let codes = [
            response_code::SUCCESS,
            response_code::SUBSCRIPTION_GROUP_NOT_EXIST,
        ];
        let Some(r) = self
            .ask_masters(route, request, &codes, "group config")
            .await
        else {
            return (false, false);
        };
        let config = (r.code == response_code::SUCCESS)
            .then(|| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
            .flatten();
        let flag = |key: &str| {
            config
                .as_ref()
                .and_then(|v| v[key].as_bool())
                .unwrap_or(false)
        };
        let flags = (flag("consumeMessageOrderly"), flag("liteSubExclusive"));
        remember(&self.meta.group_flags, group, flags);
        flags
    }

    /// The first answer (with one of `codes`) to `request` from the masters of `route`, asked
    /// in turn; `None` when none answers.
    async fn ask_masters(
        &self,
        route: &TopicRouteData,
        request: impl Fn() -> RemotingCommand,
        codes: &[i32],
        what: &str,
    ) -> Option<RemotingCommand> {
        for b in &route.broker_datas {
            let Some(addr) = b.master_addr() else {
                continue;
            };
            match self.api.call(addr, request(), codes).await {
                Ok(r) => return Some(r),
                Err(e) => tracing::debug!(broker = %addr, error = %e, "{what} not read"),
            }
        }
        None
    }
}
