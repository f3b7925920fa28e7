//! The `MessagingService` in cluster mode: a stateless translation of RocketMQ 5's gRPC protocol
//! to the brokers' Remoting protocol, with routes from the NameServer.
//!
//! What works in this slice:
//! - QueryRoute (queues of every broker set, this proxy as their endpoint),
//! - Heartbeat, NotifyClientTermination,
//! - SendMessage (tags, keys, message id, FIFO message group to a queue by hash, delivery
//!   timestamp to a timer message),
//! - QueryAssignment (every readable queue),
//! - ReceiveMessage (POP with the client's batch size and invisible duration, long polling that
//!   answers before the client's deadline, a status first then the messages, receipt handles,
//!   delivery attempts, CRC32 body digests),
//! - AckMessage, ChangeInvisibleDuration (new handle; the old one stops working),
//! - Telemetry (settings answered at once with the server's side).
//!
//! - ForwardMessageToDeadLetterQueue (the message copied to `%DLQ%{group}`, then acked),
//! - UpdateOffset, GetOffset, QueryOffset (beginning, end, by time), PullMessage.
//!
//! The other RPCs answer `NOT_IMPLEMENTED` in their status: transactions, recall and lite
//! subscriptions are the next slices.
//!
//! A receipt handle is the broker's POP handle (it names the broker set), so any proxy can ack.

use std::collections::{BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use rocketraft_common::consts::{perm, property, sys_flag};
use rocketraft_common::hash::java_string_hash;
use rocketraft_common::message::MessageExt;
use rocketraft_common::protocol::{HeartbeatData, ProducerData, TopicRouteData};
use rocketraft_remoting::api::{ApiError, MqClientApi, SendRequest};
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::server::{processor_fn, RequestProcessor};
use rocketraft_remoting::RemotingCommand;
use tonic::{Request, Response, Status as GrpcStatus};

use crate::pb;
use crate::pb::messaging_service_server::MessagingService;
use crate::session::{Sessions, TransactionId};

/// Properties the protocol carries in `SystemProperties` (not shown as user properties).
const SYSTEM_KEYS: &[&str] = &[
    property::TAGS,
    property::KEYS,
    property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX,
    property::POP_CK,
    property::SHARDING_KEY,
    property::TIMER_DELIVER_MS,
    property::TIMER_DELAY_SEC,
    property::TIMER_DELAY_MS,
    property::DELAY_TIME_LEVEL,
    property::TRANSACTION_PREPARED,
    property::PRODUCER_GROUP,
    property::RETRY_TOPIC,
    property::REAL_TOPIC,
    property::REAL_QUEUE_ID,
    property::MIN_OFFSET,
    property::MAX_OFFSET,
    property::CONSUME_START_TIMESTAMP,
    property::CRC32,
    property::WAIT_STORE_MSG_OK,
    property::MSG_REGION,
    property::TRACE_SWITCH,
    property::ORIGIN_MESSAGE_ID,
    property::FIRST_POP_TIME,
    property::CLUSTER,
    property::RECONSUME_TIME,
    property::MAX_RECONSUME_TIMES,
];

/// A gRPC receipt handle: the broker's POP handle (`ckOffset popTime invisibleTime reviveQid
/// topicType brokerName queueId queueOffset`) plus the message's CommitLog offset.
struct ReceiptHandle {
    fields: Vec<String>,
}

impl ReceiptHandle {
    fn parse(text: &str) -> Result<ReceiptHandle, pb::Status> {
        let fields: Vec<String> = text.split(' ').map(str::to_string).collect();
        if fields.len() < 8 || fields[5].is_empty() {
            return Err(status(
                pb::Code::InvalidReceiptHandle,
                "the receipt handle is malformed",
            ));
        }
        Ok(ReceiptHandle { fields })
    }

    fn broker(&self) -> &str {
        &self.fields[5]
    }

    fn queue_id(&self) -> &str {
        &self.fields[6]
    }

    fn queue_offset(&self) -> &str {
        &self.fields[7]
    }

    /// The CommitLog offset (absent from handles the broker made alone).
    fn commit_log_offset(&self) -> Result<&str, pb::Status> {
        self.fields.get(8).map(String::as_str).ok_or_else(|| {
            status(
                pb::Code::InvalidReceiptHandle,
                "the receipt handle has no CommitLog offset",
            )
        })
    }

    /// The handle after a ChangeInvisibleTime answered `pop_time` and `invisible`.
    fn renewed(mut self, pop_time: &str, invisible: &str) -> String {
        self.fields[1] = pop_time.to_string();
        self.fields[2] = invisible.to_string();
        self.fields.join(" ")
    }
}

/// How the proxy behaves.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// NameServer addresses, `;`-separated.
    pub namesrv_addr: String,
    /// The address clients reach this proxy on (returned as every queue's endpoint).
    pub endpoint: (String, u16),
    /// Invisible duration when a simple consumer does not give one.
    pub default_invisible: Duration,
    /// The longest long polling of a receive.
    pub max_long_polling: Duration,
    /// Largest message body accepted.
    pub max_body_size: usize,
}

/// The proxy's service. Cloning shares everything (the Telemetry sessions and caches).
#[derive(Clone)]
pub struct Service {
    config: ServiceConfig,
    api: MqClientApi,
    round_robin: Arc<AtomicU32>,
    sessions: Arc<Sessions>,
    meta: Arc<MetaCache>,
    /// Authentication and permissions (off unless [`Service::with_auth`] turns them on).
    auth: Arc<crate::auth::Auth>,
}

/// How long a topic's message type or a group's FIFO flag is trusted before it is asked again.
const META_TTL: Duration = Duration::from_secs(3);

/// Topic message types and group FIFO flags read from brokers, kept a few seconds.
#[derive(Default)]
struct MetaCache {
    routes: Mutex<HashMap<String, (Instant, TopicRouteData)>>,
    topic_types: Mutex<HashMap<String, (Instant, Vec<i32>)>>,
    group_fifo: Mutex<HashMap<String, (Instant, bool)>>,
    /// Wakes the producer heartbeats when a producer announced its topics.
    heartbeat_now: tokio::sync::Notify,
}

/// How long a topic route is reused (a failed broker call drops it at once).
const ROUTE_TTL: Duration = Duration::from_secs(1);

fn cached<V: Clone>(map: &Mutex<HashMap<String, (Instant, V)>>, key: &str) -> Option<V> {
    cached_for(map, key, META_TTL)
}

fn cached_for<V: Clone>(
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

/// Every message type (a topic without `message.type`, or MIXED).
const ALL_TYPES: [pb::MessageType; 4] = [
    pb::MessageType::Normal,
    pb::MessageType::Fifo,
    pb::MessageType::Delay,
    pb::MessageType::Transaction,
];

/// The message types a topic's `message.type` attribute accepts.
fn accepted_types(attribute: Option<&str>) -> Vec<i32> {
    match attribute.map(|t| t.to_ascii_uppercase()).as_deref() {
        Some("NORMAL") => vec![pb::MessageType::Normal as i32],
        Some("FIFO") => vec![pb::MessageType::Fifo as i32],
        Some("DELAY") => vec![pb::MessageType::Delay as i32],
        Some("TRANSACTION") => vec![pb::MessageType::Transaction as i32],
        _ => ALL_TYPES.iter().map(|t| *t as i32).collect(),
    }
}

/// The namespace a request names in its `x-mq-namespace` header ("" when none).
pub fn header_namespace(metadata: &tonic::metadata::MetadataMap) -> String {
    metadata
        .get("x-mq-namespace")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or_default()
        .to_string()
}

/// Puts the header's namespace into a resource that does not carry its own.
fn in_namespace(resource: &mut Option<pb::Resource>, namespace: &str) {
    if let Some(r) = resource.as_mut() {
        if r.resource_namespace.is_empty() {
            r.resource_namespace = namespace.to_string();
        }
    }
}

fn status(code: pb::Code, message: impl Into<String>) -> pb::Status {
    pb::Status {
        code: code as i32,
        message: message.into(),
    }
}

fn ok() -> pb::Status {
    status(pb::Code::Ok, "OK")
}

/// A Remoting failure as the protocol's code.
fn from_api(e: &ApiError) -> pb::Status {
    match e {
        ApiError::Server { code, remark } => {
            let c = match *code {
                response_code::TOPIC_NOT_EXIST => pb::Code::TopicNotFound,
                response_code::MESSAGE_ILLEGAL => pb::Code::BadRequest,
                response_code::NO_PERMISSION => pb::Code::Forbidden,
                response_code::NO_MESSAGE => pb::Code::InvalidReceiptHandle,
                response_code::FLUSH_DISK_TIMEOUT => pb::Code::MasterPersistenceTimeout,
                response_code::FLUSH_SLAVE_TIMEOUT | response_code::SLAVE_NOT_AVAILABLE => {
                    pb::Code::SlavePersistenceTimeout
                }
                response_code::SERVICE_NOT_AVAILABLE => pb::Code::HaNotAvailable,
                response_code::SYSTEM_BUSY => pb::Code::TooManyRequests,
                _ => pb::Code::InternalError,
            };
            status(c, format!("broker answered {code}: {remark}"))
        }
        other => status(
            pb::Code::ProxyTimeout,
            format!("broker unreachable: {other}"),
        ),
    }
}

fn duration_ms(d: &prost_types::Duration) -> i64 {
    d.seconds.saturating_mul(1000) + (d.nanos / 1_000_000) as i64
}

fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn timestamp_ms(t: &prost_types::Timestamp) -> i64 {
    t.seconds.saturating_mul(1000) + (t.nanos / 1_000_000) as i64
}

fn pb_duration(ms: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: ms / 1000,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

/// `{namespace}%{name}` as RocketMQ wraps namespaced resources.
fn wrapped(resource: &pb::Resource) -> String {
    if resource.resource_namespace.is_empty() {
        resource.name.clone()
    } else {
        format!("{}%{}", resource.resource_namespace, resource.name)
    }
}

impl Service {
    pub fn new(config: ServiceConfig, api: MqClientApi) -> Service {
        Service {
            config,
            auth: Arc::new(crate::auth::Auth::disabled(api.clone())),
            api,
            round_robin: Arc::new(AtomicU32::new(0)),
            sessions: Arc::new(Sessions::default()),
            meta: Arc::new(MetaCache::default()),
        }
    }

    /// Checks every call's credentials and permissions with `auth`.
    pub fn with_auth(mut self, auth: Arc<crate::auth::Auth>) -> Service {
        self.auth = auth;
        self
    }

    /// The Telemetry streams connected to this proxy.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    pub fn api(&self) -> &MqClientApi {
        &self.api
    }

    /// Registers this proxy, as a Remoting producer of each topic its connected producers
    /// publish (the topic is a gRPC half message's producer group), with every master of the
    /// topic: every 5 s and whenever a producer announces its topics. Runs until aborted.
    pub async fn producer_heartbeats(self, client_id: String) {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.meta.heartbeat_now.notified() => {}
            }
            let topics = self.sessions.published_topics();
            let mut per_broker: HashMap<String, BTreeSet<String>> = HashMap::new();
            for topic in &topics {
                match self.route(topic).await {
                    Ok(route) => {
                        for b in &route.broker_datas {
                            if let Some(addr) = b.master_addr() {
                                per_broker
                                    .entry(addr.to_string())
                                    .or_default()
                                    .insert(topic.clone());
                            }
                        }
                    }
                    Err(s) => {
                        tracing::debug!(topic, why = %s.message, "no route for a producer heartbeat")
                    }
                }
            }
            for (addr, groups) in per_broker {
                let data = HeartbeatData {
                    client_id: client_id.clone(),
                    producer_data_set: groups
                        .into_iter()
                        .map(|group_name| ProducerData { group_name })
                        .collect(),
                    consumer_data_set: vec![],
                };
                if let Err(e) = self.api.heartbeat(&addr, &data).await {
                    tracing::debug!(broker = %addr, error = %e, "producer heartbeat failed");
                }
            }
        }
    }

    /// Turns a broker's CHECK_TRANSACTION_STATE into a RecoverOrphanedTransaction pushed to a
    /// connected producer of the half message's topic. Without one, the check is dropped: the
    /// broker checks again later and rolls back after its maximum checks.
    pub fn transaction_check_handler(&self) -> Arc<dyn RequestProcessor> {
        let service = self.clone();
        processor_fn(move |_ctx, request: RemotingCommand| {
            let service = service.clone();
            async move {
                if request.code == request_code::CHECK_TRANSACTION_STATE {
                    service.recover_orphaned(&request);
                }
                None
            }
        })
    }

    fn recover_orphaned(&self, request: &RemotingCommand) {
        let m = match rocketraft_common::message::decode_message(&request.body) {
            Ok((m, _)) => m,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable transaction check from a broker");
                return;
            }
        };
        let group = m
            .message
            .property(property::PRODUCER_GROUP)
            .unwrap_or(&m.message.topic)
            .to_string();
        let Some(session) = self.sessions.publisher_of(&group) else {
            tracing::debug!(%group, "no producer of the topic on this proxy to check a transaction");
            return;
        };
        let parse = |key: &str| request.ext(key).and_then(|v| v.parse::<i64>().ok());
        let (Some(queue_offset), Some(commit_log_offset)) =
            (parse("tranStateTableOffset"), parse("commitLogOffset"))
        else {
            tracing::warn!("transaction check without offsets");
            return;
        };
        let message_id = m
            .message
            .uniq_key()
            .or(request.ext("msgId"))
            .unwrap_or_default()
            .to_string();
        let transaction_id = TransactionId {
            broker_name: request.ext("brokerName").unwrap_or_default().to_string(),
            queue_offset,
            commit_log_offset,
            message_id,
        }
        .encode();
        let namespace = match m.message.topic.split_once('%') {
            Some((ns, _)) if !ns.is_empty() => ns.to_string(),
            _ => String::new(),
        };
        let command = pb::TelemetryCommand {
            status: Some(ok()),
            command: Some(
                pb::telemetry_command::Command::RecoverOrphanedTransactionCommand(
                    pb::RecoverOrphanedTransactionCommand {
                        message: Some(self.to_pb(&m, &namespace, 0)),
                        transaction_id,
                    },
                ),
            ),
        };
        if let Err(e) = session.sender.try_send(Ok(command)) {
            tracing::debug!(client = %session.client_id, error = %e, "transaction check not pushed");
        } else {
            tracing::debug!(client = %session.client_id, %group, "transaction check pushed");
        }
    }

    /// The message types a topic accepts, from its `message.type` attribute on a master
    /// (GET_TOPIC_CONFIG), cached a few seconds. Every type when no master answers.
    async fn topic_types(&self, name: &str, route: &TopicRouteData) -> Vec<i32> {
        if let Some(t) = cached(&self.meta.topic_types, name) {
            return t;
        }
        for b in &route.broker_datas {
            let Some(addr) = b.master_addr() else {
                continue;
            };
            let request =
                RemotingCommand::request(request_code::GET_TOPIC_CONFIG).with_ext("topic", name);
            match self
                .api
                .call(addr, request, &[response_code::SUCCESS])
                .await
            {
                Ok(r) => {
                    let config: Option<rocketraft_common::TopicConfig> =
                        serde_json::from_slice(&r.body).ok();
                    let types = accepted_types(
                        config
                            .as_ref()
                            .and_then(|c| c.attributes.get("message.type"))
                            .map(String::as_str),
                    );
                    remember(&self.meta.topic_types, name, types.clone());
                    return types;
                }
                Err(e) => tracing::debug!(topic = name, error = %e, "topic config not read"),
            }
        }
        accepted_types(None)
    }

    /// Whether a consumer group consumes in order (`consumeMessageOrderly` of its
    /// subscription group on a master), cached a few seconds; false for an unknown group.
    async fn group_is_fifo(&self, group: &str, route: &TopicRouteData) -> bool {
        if let Some(f) = cached(&self.meta.group_fifo, group) {
            return f;
        }
        for b in &route.broker_datas {
            let Some(addr) = b.master_addr() else {
                continue;
            };
            let request = RemotingCommand::request(request_code::GET_SUBSCRIPTIONGROUP_CONFIG)
                .with_ext("group", group);
            let fifo = match self
                .api
                .call(
                    addr,
                    request,
                    &[
                        response_code::SUCCESS,
                        response_code::SUBSCRIPTION_GROUP_NOT_EXIST,
                    ],
                )
                .await
            {
                Ok(r) if r.code == response_code::SUCCESS => {
                    serde_json::from_slice::<serde_json::Value>(&r.body)
                        .ok()
                        .and_then(|v| v["consumeMessageOrderly"].as_bool())
                        .unwrap_or(false)
                }
                Ok(_) => false,
                Err(e) => {
                    tracing::debug!(group, error = %e, "group config not read");
                    continue;
                }
            };
            remember(&self.meta.group_fifo, group, fifo);
            return fifo;
        }
        false
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

    /// A topic's route from the NameServer, reused for up to [`ROUTE_TTL`] unless a broker
    /// call on it failed since (see [`Service::broker_failed`]), so a failover is followed at
    /// the next request.
    async fn route(&self, topic: &str) -> Result<TopicRouteData, pb::Status> {
        if let Some(r) = cached_for(&self.meta.routes, topic, ROUTE_TTL) {
            return Ok(r);
        }
        let mut last = status(pb::Code::InternalError, "no NameServer configured");
        for ns in self.namesrvs() {
            match self.api.topic_route(&ns, topic).await {
                Ok(r) => {
                    remember(&self.meta.routes, topic, r.clone());
                    return Ok(r);
                }
                Err(ApiError::Server { code, .. }) if code == response_code::TOPIC_NOT_EXIST => {
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

    /// A broker call on `topic` failed: forget its route (the master may have changed) and
    /// answer the protocol's status.
    fn broker_failed(&self, topic: &str, e: &ApiError) -> pb::Status {
        let mut routes = self.meta.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes.remove(topic);
        from_api(e)
    }

    /// The master address of a broker set; HA_NOT_AVAILABLE while it has none (a failover).
    fn master_of(&self, route: &TopicRouteData, broker: &str) -> Result<String, pb::Status> {
        route
            .broker_datas
            .iter()
            .find(|b| b.broker_name == broker)
            .and_then(|b| b.master_addr().map(str::to_string))
            .ok_or_else(|| {
                status(
                    pb::Code::HaNotAvailable,
                    format!("broker set {broker} has no master now"),
                )
            })
    }

    fn endpoints(&self) -> pb::Endpoints {
        pb::Endpoints {
            scheme: pb::AddressScheme::IPv4 as i32,
            addresses: vec![pb::Address {
                host: self.config.endpoint.0.clone(),
                port: self.config.endpoint.1 as i32,
            }],
        }
    }

    fn queues(
        &self,
        topic: &pb::Resource,
        route: &TopicRouteData,
        accept: &[i32],
    ) -> Vec<pb::MessageQueue> {
        let mut out = Vec::new();
        for q in &route.queue_datas {
            let n = q.read_queue_nums.max(q.write_queue_nums);
            for id in 0..n {
                let read = perm::is_readable(q.perm) && id < q.read_queue_nums;
                let write = perm::is_writeable(q.perm) && id < q.write_queue_nums;
                let permission = match (read, write) {
                    (true, true) => pb::Permission::ReadWrite,
                    (true, false) => pb::Permission::Read,
                    (false, true) => pb::Permission::Write,
                    (false, false) => pb::Permission::None,
                };
                out.push(pb::MessageQueue {
                    topic: Some(topic.clone()),
                    id,
                    permission: permission as i32,
                    broker: Some(pb::Broker {
                        name: q.broker_name.clone(),
                        id: 0,
                        endpoints: Some(self.endpoints()),
                    }),
                    accept_message_types: accept.to_vec(),
                });
            }
        }
        out
    }

    async fn send_one(&self, message: &pb::Message) -> Result<pb::SendResultEntry, pb::Status> {
        let topic = message
            .topic
            .as_ref()
            .filter(|t| !t.name.is_empty())
            .ok_or_else(|| status(pb::Code::IllegalTopic, "the message has no topic"))?;
        let sys = message.system_properties.clone().unwrap_or_default();
        if sys.message_id.is_empty() {
            return Err(status(
                pb::Code::IllegalMessageId,
                "the message has no message_id",
            ));
        }
        if message.body.is_empty() {
            return Err(status(
                pb::Code::MessageBodyEmpty,
                "the message body is empty",
            ));
        }
        if message.body.len() > self.config.max_body_size {
            return Err(status(
                pb::Code::MessageBodyTooLarge,
                format!(
                    "the body of {} bytes exceeds the maximum of {}",
                    message.body.len(),
                    self.config.max_body_size
                ),
            ));
        }
        let group = sys.message_group.as_deref().filter(|g| !g.is_empty());
        let transactional = sys.message_type == pb::MessageType::Transaction as i32;
        let message_type = if sys.message_type != pb::MessageType::Unspecified as i32 {
            sys.message_type
        } else if group.is_some() {
            pb::MessageType::Fifo as i32
        } else if sys.delivery_timestamp.is_some() {
            pb::MessageType::Delay as i32
        } else {
            pb::MessageType::Normal as i32
        };
        if transactional && (group.is_some() || sys.delivery_timestamp.is_some()) {
            return Err(status(
                pb::Code::MessagePropertyConflictWithType,
                "a transactional message cannot have a message group or a delivery timestamp",
            ));
        }
        if group.is_some() && sys.delivery_timestamp.is_some() {
            return Err(status(
                pb::Code::MessagePropertyConflictWithType,
                "a message cannot have both a message group and a delivery timestamp",
            ));
        }
        let name = wrapped(topic);
        let route = self.route(&name).await?;
        let accepted = self.topic_types(&name, &route).await;
        if !accepted.contains(&message_type) {
            let type_name = |t: i32| {
                pb::MessageType::try_from(t)
                    .map(|t| t.as_str_name())
                    .unwrap_or("UNKNOWN")
            };
            return Err(status(
                pb::Code::MessagePropertyConflictWithType,
                format!(
                    "topic {name} accepts {} messages, not {}",
                    accepted
                        .iter()
                        .map(|t| type_name(*t))
                        .collect::<Vec<_>>()
                        .join("/"),
                    type_name(message_type)
                ),
            ));
        }
        let writable: Vec<(String, i32)> = route
            .queue_datas
            .iter()
            .filter(|q| perm::is_writeable(q.perm))
            .flat_map(|q| (0..q.write_queue_nums).map(move |i| (q.broker_name.clone(), i)))
            .collect();
        if writable.is_empty() {
            return Err(status(
                pb::Code::Forbidden,
                format!("topic {name} has no writable queue"),
            ));
        }
        let pick = match group {
            Some(group) => java_string_hash(group).unsigned_abs() as usize % writable.len(),
            None => self.round_robin.fetch_add(1, Ordering::Relaxed) as usize % writable.len(),
        };
        let (broker, queue_id) = writable[pick].clone();
        let addr = self.master_of(&route, &broker)?;
        let mut properties: std::collections::BTreeMap<String, String> = message
            .user_properties
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(bad) = properties
            .keys()
            .find(|k| SYSTEM_KEYS.contains(&k.as_str()))
        {
            return Err(status(
                pb::Code::IllegalMessagePropertyKey,
                format!("user property {bad:?} is reserved"),
            ));
        }
        if let Some(tag) = sys.tag.as_ref().filter(|t| !t.is_empty()) {
            properties.insert(property::TAGS.into(), tag.clone());
        }
        if !sys.keys.is_empty() {
            properties.insert(property::KEYS.into(), sys.keys.join(" "));
        }
        properties.insert(
            property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX.into(),
            sys.message_id.clone(),
        );
        if let Some(group) = sys.message_group.as_ref().filter(|g| !g.is_empty()) {
            properties.insert(property::SHARDING_KEY.into(), group.clone());
        }
        if let Some(at) = &sys.delivery_timestamp {
            properties.insert(
                property::TIMER_DELIVER_MS.into(),
                timestamp_ms(at).to_string(),
            );
        }
        // A gRPC producer has no group: a half message's producer group is its topic (see
        // `crate::session`).
        let sys_flag = if transactional {
            properties.insert(property::TRANSACTION_PREPARED.into(), "true".into());
            properties.insert(property::PRODUCER_GROUP.into(), name.clone());
            sys_flag::TRANSACTION_PREPARED_TYPE
        } else {
            0
        };
        let request = SendRequest {
            producer_group: if transactional {
                name.clone()
            } else {
                "proxy".into()
            },
            topic: name,
            queue_id,
            body: bytes::Bytes::from(message.body.clone()),
            properties,
            sys_flag,
            ..SendRequest::default()
        };
        let topic_name = request.topic.clone();
        let r = self
            .api
            .send(&addr, &request)
            .await
            .map_err(|e| self.broker_failed(&topic_name, &e))?;
        let transaction_id = if transactional {
            let (_, phy) =
                rocketraft_common::message::decode_offset_msg_id(&r.msg_id).map_err(|e| {
                    status(
                        pb::Code::InternalError,
                        format!("the broker answered an undecodable message id: {e}"),
                    )
                })?;
            TransactionId {
                broker_name: broker.clone(),
                queue_offset: r.queue_offset,
                commit_log_offset: phy,
                message_id: sys.message_id.clone(),
            }
            .encode()
        } else {
            String::new()
        };
        let s = if r.code == response_code::SUCCESS {
            ok()
        } else {
            from_api(&ApiError::Server {
                code: r.code,
                remark: "stored but not confirmed".into(),
            })
        };
        Ok(pb::SendResultEntry {
            status: Some(s),
            message_id: sys.message_id,
            transaction_id,
            offset: r.queue_offset,
            recall_handle: r.recall_handle.unwrap_or_default(),
        })
    }

    /// A popped Remoting message as the protocol's message.
    fn to_pb(&self, m: &MessageExt, namespace: &str, invisible_ms: i64) -> pb::Message {
        let props = &m.message.properties;
        let topic_name = m
            .message
            .topic
            .strip_prefix(&format!("{namespace}%"))
            .filter(|_| !namespace.is_empty())
            .unwrap_or(&m.message.topic)
            .to_string();
        let user_properties: HashMap<String, String> = props
            .iter()
            .filter(|(k, _)| !SYSTEM_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let group = props.get(property::SHARDING_KEY).cloned();
        let delivery = props
            .get(property::TIMER_DELIVER_MS)
            .and_then(|v| v.parse::<i64>().ok());
        let message_type = if group.is_some() {
            pb::MessageType::Fifo
        } else if delivery.is_some() {
            pb::MessageType::Delay
        } else if sys_flag::transaction_value(m.sys_flag) == sys_flag::TRANSACTION_COMMIT_TYPE {
            pb::MessageType::Transaction
        } else {
            pb::MessageType::Normal
        };
        let body = m.message.body.to_vec();
        pb::Message {
            topic: Some(pb::Resource {
                resource_namespace: namespace.to_string(),
                name: topic_name,
            }),
            user_properties,
            system_properties: Some(pb::SystemProperties {
                tag: props.get(property::TAGS).cloned(),
                keys: props
                    .get(property::KEYS)
                    .map(|k| {
                        k.split(' ')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
                message_id: props
                    .get(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX)
                    .cloned()
                    .unwrap_or_else(|| m.msg_id.clone()),
                body_digest: Some(pb::Digest {
                    r#type: pb::DigestType::Crc32 as i32,
                    checksum: format!("{:08X}", crc32fast::hash(&body)),
                }),
                body_encoding: pb::Encoding::Identity as i32,
                message_type: message_type as i32,
                born_timestamp: Some(timestamp(m.born_timestamp)),
                born_host: m.born_host.ip().to_string(),
                store_timestamp: Some(timestamp(m.store_timestamp)),
                store_host: m.store_host.to_string(),
                delivery_timestamp: delivery.map(timestamp),
                // The broker's POP handle plus the message's CommitLog offset (for
                // ForwardMessageToDeadLetterQueue); the broker reads the first eight fields.
                receipt_handle: props
                    .get(property::POP_CK)
                    .map(|h| format!("{h} {}", m.commit_log_offset)),
                queue_id: m.queue_id,
                queue_offset: Some(m.queue_offset),
                invisible_duration: Some(pb_duration(invisible_ms)),
                delivery_attempt: Some(m.reconsume_times + 1),
                message_group: group,
                ..pb::SystemProperties::default()
            }),
            body,
        }
    }

    /// The master of the broker set a receipt handle names.
    async fn handle_master(
        &self,
        topic: &str,
        handle: &ReceiptHandle,
    ) -> Result<String, pb::Status> {
        let route = self.route(topic).await?;
        self.master_of(&route, handle.broker())
    }

    /// ACK_MESSAGE of a handle on its broker set's master.
    async fn ack_on_broker(
        &self,
        addr: &str,
        group: &str,
        topic: &str,
        handle: &ReceiptHandle,
        raw: &str,
    ) -> Result<(), pb::Status> {
        let cmd = RemotingCommand::request(request_code::ACK_MESSAGE)
            .with_ext("consumerGroup", group)
            .with_ext("topic", topic)
            .with_ext("queueId", handle.queue_id())
            .with_ext("offset", handle.queue_offset())
            .with_ext("extraInfo", raw);
        self.api
            .call(addr, cmd, &[response_code::SUCCESS])
            .await
            .map(|_| ())
            .map_err(|e| self.broker_failed(topic, &e))
    }

    /// The topic, broker set master and queue id a request's message queue names.
    async fn queue_target(
        &self,
        mq: Option<&pb::MessageQueue>,
    ) -> Result<(String, String, i32), pb::Status> {
        let mq = mq.ok_or_else(|| status(pb::Code::BadRequest, "message_queue is required"))?;
        let topic = mq
            .topic
            .as_ref()
            .filter(|t| !t.name.is_empty())
            .ok_or_else(|| status(pb::Code::IllegalTopic, "topic is required"))?;
        let name = wrapped(topic);
        let route = self.route(&name).await?;
        let broker = mq
            .broker
            .as_ref()
            .map(|b| b.name.clone())
            .filter(|b| !b.is_empty())
            .or_else(|| route.broker_datas.first().map(|b| b.broker_name.clone()))
            .unwrap_or_default();
        let addr = self.master_of(&route, &broker)?;
        if mq.id < 0 {
            return Err(status(pb::Code::BadRequest, "a queue id is required"));
        }
        Ok((name, addr, mq.id))
    }

    /// The server's settings for a client's Settings, with the namespace of its stream; a
    /// subscription's FIFO flag comes from its group's configuration.
    async fn settings_for(&self, client: &pb::Settings, namespace: &str) -> pb::Settings {
        let mut fifo = false;
        if let Some(pb::settings::PubSub::Subscription(sub)) = &client.pub_sub {
            let mut group = sub.group.clone();
            in_namespace(&mut group, namespace);
            let topic = sub.subscriptions.first().and_then(|e| {
                let mut t = e.topic.clone();
                in_namespace(&mut t, namespace);
                t
            });
            if let (Some(group), Some(topic)) = (group, topic) {
                if let Ok(route) = self.route(&wrapped(&topic)).await {
                    fifo = self.group_is_fifo(&wrapped(&group), &route).await;
                }
            }
        }
        self.settings_reply(client, fifo)
    }

    fn settings_reply(&self, client: &pb::Settings, fifo: bool) -> pb::Settings {
        let consumer = client.client_type == Some(pb::ClientType::PushConsumer as i32)
            || client.client_type == Some(pb::ClientType::SimpleConsumer as i32);
        let backoff = if consumer {
            pb::RetryPolicy {
                max_attempts: 17,
                strategy: Some(pb::retry_policy::Strategy::CustomizedBackoff(
                    pb::CustomizedBackoff {
                        next: [
                            1, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200,
                            1800, 3600, 7200,
                        ]
                        .iter()
                        .map(|s| pb_duration(s * 1000))
                        .collect(),
                    },
                )),
            }
        } else {
            pb::RetryPolicy {
                max_attempts: 3,
                strategy: Some(pb::retry_policy::Strategy::ExponentialBackoff(
                    pb::ExponentialBackoff {
                        initial: Some(pb_duration(10)),
                        max: Some(pb_duration(1000)),
                        multiplier: 2.0,
                    },
                )),
            }
        };
        let pub_sub = match &client.pub_sub {
            Some(pb::settings::PubSub::Publishing(p)) => {
                Some(pb::settings::PubSub::Publishing(pb::Publishing {
                    topics: p.topics.clone(),
                    max_body_size: self.config.max_body_size as i32,
                    validate_message_type: true,
                }))
            }
            Some(pb::settings::PubSub::Subscription(s)) => {
                Some(pb::settings::PubSub::Subscription(pb::Subscription {
                    group: s.group.clone(),
                    subscriptions: s.subscriptions.clone(),
                    fifo: Some(fifo),
                    receive_batch_size: Some(32),
                    long_polling_timeout: Some(pb_duration(
                        self.config.max_long_polling.as_millis() as i64,
                    )),
                    ..pb::Subscription::default()
                }))
            }
            None => None,
        };
        pb::Settings {
            client_type: client.client_type,
            access_point: client.access_point.clone(),
            backoff_policy: Some(backoff),
            request_timeout: Some(pb_duration(3000)),
            user_agent: client.user_agent.clone(),
            metric: Some(pb::Metric {
                on: false,
                endpoints: None,
            }),
            pub_sub,
        }
    }
}

/// A response that is only its status when the request is refused before any work.
trait StatusOnly: Default {
    fn set_status(&mut self, status: pb::Status);
}

macro_rules! status_only {
    ($($t:ty,)*) => {
        $(impl StatusOnly for $t {
            fn set_status(&mut self, status: pb::Status) {
                self.status = Some(status);
            }
        })*
    };
}

status_only!(
    pb::AckMessageResponse,
    pb::ChangeInvisibleDurationResponse,
    pb::EndTransactionResponse,
    pb::ForwardMessageToDeadLetterQueueResponse,
    pb::GetOffsetResponse,
    pb::QueryAssignmentResponse,
    pb::QueryOffsetResponse,
    pb::QueryRouteResponse,
    pb::RecallMessageResponse,
    pb::SendMessageResponse,
    pb::UpdateOffsetResponse,
);

/// The unary answer to a refused request.
fn refused<R: StatusOnly>(status: pb::Status) -> Result<Response<R>, GrpcStatus> {
    let mut r = R::default();
    r.set_status(status);
    Ok(Response::new(r))
}

/// The streamed answer to a refused request: the status item alone.
fn refused_stream<T: Send + 'static>(item: T) -> Result<Response<BoxStream<T>>, GrpcStatus> {
    Ok(Response::new(Box::pin(futures::stream::iter(vec![Ok(
        item,
    )]))))
}

/// Requests whose resources take the `x-mq-namespace` header's namespace when they carry none.
trait Namespaced {
    fn fill(&mut self, namespace: &str);
}

macro_rules! namespaced {
    ($t:ty, [$($field:ident),*], [$($queue:ident),*]) => {
        impl Namespaced for $t {
            fn fill(&mut self, namespace: &str) {
                $(in_namespace(&mut self.$field, namespace);)*
                $(if let Some(q) = self.$queue.as_mut() {
                    in_namespace(&mut q.topic, namespace);
                })*
            }
        }
    };
}

namespaced!(pb::QueryRouteRequest, [topic], []);
namespaced!(pb::QueryAssignmentRequest, [topic, group], []);
namespaced!(pb::ReceiveMessageRequest, [group], [message_queue]);
namespaced!(pb::AckMessageRequest, [group, topic], []);
namespaced!(
    pb::ForwardMessageToDeadLetterQueueRequest,
    [group, topic],
    []
);
namespaced!(pb::PullMessageRequest, [group], [message_queue]);
namespaced!(pb::UpdateOffsetRequest, [group], [message_queue]);
namespaced!(pb::GetOffsetRequest, [group], [message_queue]);
namespaced!(pb::QueryOffsetRequest, [], [message_queue]);
namespaced!(pb::EndTransactionRequest, [topic], []);
namespaced!(pb::ChangeInvisibleDurationRequest, [group, topic], []);
namespaced!(pb::RecallMessageRequest, [topic], []);

impl Namespaced for pb::SendMessageRequest {
    fn fill(&mut self, namespace: &str) {
        for m in &mut self.messages {
            in_namespace(&mut m.topic, namespace);
        }
    }
}

/// The request with the header's namespace applied.
fn take<T: Namespaced>(request: Request<T>) -> T {
    let namespace = header_namespace(request.metadata());
    let mut inner = request.into_inner();
    inner.fill(&namespace);
    inner
}

impl Service {
    /// [`take`], after checking the caller's credentials and the permissions `needs` lists for
    /// the request (nothing to check when authentication is off).
    async fn admit<T: Namespaced>(
        &self,
        request: Request<T>,
        needs: impl FnOnce(&T) -> Vec<crate::auth::Need>,
    ) -> Result<T, pb::Status> {
        if !self.auth.enabled() {
            return Ok(take(request));
        }
        let peer = request.remote_addr();
        let metadata = request.metadata().clone();
        let inner = take(request);
        self.auth.check(&metadata, peer, &needs(&inner)).await?;
        Ok(inner)
    }
}

/// `Sub` on a consumer's topic and group: what consuming needs.
fn consuming(group: Option<&pb::Resource>, topic: Option<&pb::Resource>) -> Vec<crate::auth::Need> {
    let mut needs = Vec::with_capacity(2);
    if let Some(t) = topic {
        needs.push(crate::auth::Need::subscribe(wrapped(t)));
    }
    if let Some(g) = group {
        needs.push(crate::auth::Need::group(wrapped(g)));
    }
    needs
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, GrpcStatus>> + Send + 'static>>;

fn not_implemented(what: &str) -> pb::Status {
    status(
        pb::Code::NotImplemented,
        format!("{what} is not implemented by this proxy yet"),
    )
}

#[tonic::async_trait]
impl MessagingService for Service {
    async fn query_route(
        &self,
        request: Request<pb::QueryRouteRequest>,
    ) -> Result<Response<pb::QueryRouteResponse>, GrpcStatus> {
        let req = match self
            .admit(request, |r| {
                r.topic
                    .iter()
                    .map(|t| crate::auth::Need::publish_or_subscribe(wrapped(t)))
                    .collect()
            })
            .await
        {
            Ok(req) => req,
            Err(s) => return refused(s),
        };
        let Some(topic) = req.topic.filter(|t| !t.name.is_empty()) else {
            return Ok(Response::new(pb::QueryRouteResponse {
                status: Some(status(pb::Code::IllegalTopic, "topic is required")),
                message_queues: vec![],
            }));
        };
        let name = wrapped(&topic);
        Ok(Response::new(match self.route(&name).await {
            Ok(route) => pb::QueryRouteResponse {
                status: Some(ok()),
                message_queues: self.queues(&topic, &route, &self.topic_types(&name, &route).await),
            },
            Err(s) => pb::QueryRouteResponse {
                status: Some(s),
                message_queues: vec![],
            },
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, GrpcStatus> {
        if let Err(s) = self
            .auth
            .check(request.metadata(), request.remote_addr(), &[])
            .await
        {
            return Ok(Response::new(pb::HeartbeatResponse { status: Some(s) }));
        }
        Ok(Response::new(pb::HeartbeatResponse { status: Some(ok()) }))
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, GrpcStatus> {
        let req = match self
            .admit(request, |r| {
                r.messages
                    .iter()
                    .filter_map(|m| m.topic.as_ref())
                    .map(|t| crate::auth::Need::publish(wrapped(t)))
                    .collect()
            })
            .await
        {
            Ok(req) => req,
            Err(s) => return refused(s),
        };
        if req.messages.is_empty() {
            return Ok(Response::new(pb::SendMessageResponse {
                status: Some(status(pb::Code::BadRequest, "no message to send")),
                entries: vec![],
            }));
        }
        let mut entries = Vec::with_capacity(req.messages.len());
        let mut first_error = None;
        for m in &req.messages {
            match self.send_one(m).await {
                Ok(e) => entries.push(e),
                Err(s) => {
                    first_error.get_or_insert(s.clone());
                    entries.push(pb::SendResultEntry {
                        status: Some(s),
                        message_id: m
                            .system_properties
                            .as_ref()
                            .map(|p| p.message_id.clone())
                            .unwrap_or_default(),
                        ..pb::SendResultEntry::default()
                    });
                }
            }
        }
        Ok(Response::new(pb::SendMessageResponse {
            status: Some(first_error.unwrap_or_else(ok)),
            entries,
        }))
    }

    async fn query_assignment(
        &self,
        request: Request<pb::QueryAssignmentRequest>,
    ) -> Result<Response<pb::QueryAssignmentResponse>, GrpcStatus> {
        let req = match self
            .admit(request, |r| consuming(r.group.as_ref(), r.topic.as_ref()))
            .await
        {
            Ok(req) => req,
            Err(s) => return refused(s),
        };
        let Some(topic) = req.topic.filter(|t| !t.name.is_empty()) else {
            return Ok(Response::new(pb::QueryAssignmentResponse {
                status: Some(status(pb::Code::IllegalTopic, "topic is required")),
                assignments: vec![],
            }));
        };
        Ok(Response::new(match self.route(&wrapped(&topic)).await {
            Ok(route) => pb::QueryAssignmentResponse {
                status: Some(ok()),
                assignments: self
                    .queues(
                        &topic,
                        &route,
                        &self.topic_types(&wrapped(&topic), &route).await,
                    )
                    .into_iter()
                    .filter(|q| {
                        q.permission == pb::Permission::Read as i32
                            || q.permission == pb::Permission::ReadWrite as i32
                    })
                    .map(|q| pb::Assignment {
                        message_queue: Some(q),
                    })
                    .collect(),
            },
            Err(s) => pb::QueryAssignmentResponse {
                status: Some(s),
                assignments: vec![],
            },
        }))
    }

    type ReceiveMessageStream = BoxStream<pb::ReceiveMessageResponse>;

    async fn receive_message(
        &self,
        request: Request<pb::ReceiveMessageRequest>,
    ) -> Result<Response<Self::ReceiveMessageStream>, GrpcStatus> {
        // Answer before the client's own deadline (grpc-timeout), keeping a margin.
        let client_deadline = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let req = match self
            .admit(request, |r| {
                consuming(
                    r.group.as_ref(),
                    r.message_queue.as_ref().and_then(|q| q.topic.as_ref()),
                )
            })
            .await
        {
            Ok(req) => req,
            Err(s) => {
                return refused_stream(pb::ReceiveMessageResponse {
                    content: Some(pb::receive_message_response::Content::Status(s)),
                })
            }
        };
        let one = |s: pb::Status| -> Result<Response<Self::ReceiveMessageStream>, GrpcStatus> {
            let item = pb::ReceiveMessageResponse {
                content: Some(pb::receive_message_response::Content::Status(s)),
            };
            Ok(Response::new(Box::pin(futures::stream::iter(vec![Ok(
                item,
            )]))))
        };
        let Some(group) = req.group.filter(|g| !g.name.is_empty()) else {
            return one(status(pb::Code::IllegalConsumerGroup, "group is required"));
        };
        let Some(mq) = req.message_queue else {
            return one(status(pb::Code::BadRequest, "message_queue is required"));
        };
        let Some(topic) = mq.topic.clone().filter(|t| !t.name.is_empty()) else {
            return one(status(pb::Code::IllegalTopic, "topic is required"));
        };
        let invisible_ms = req
            .invisible_duration
            .as_ref()
            .map(duration_ms)
            .unwrap_or(self.config.default_invisible.as_millis() as i64);
        if !(1_000..=12 * 3600 * 1000).contains(&invisible_ms) {
            return one(status(
                pb::Code::IllegalInvisibleTime,
                format!("invisible duration {invisible_ms} ms is outside 1 s .. 12 h"),
            ));
        }
        let batch = req.batch_size.clamp(1, 32);
        let mut poll = req
            .long_polling_timeout
            .as_ref()
            .map(duration_ms)
            .unwrap_or(self.config.max_long_polling.as_millis() as i64)
            .min(self.config.max_long_polling.as_millis() as i64);
        if let Some(d) = client_deadline {
            poll = poll.min((d.as_millis() as i64 - 2_000).max(0));
        }
        let name = wrapped(&topic);
        let route = match self.route(&name).await {
            Ok(r) => r,
            Err(s) => return one(s),
        };
        let broker = mq
            .broker
            .as_ref()
            .map(|b| b.name.clone())
            .filter(|b| !b.is_empty())
            .or_else(|| route.broker_datas.first().map(|b| b.broker_name.clone()))
            .unwrap_or_default();
        let addr = match self.master_of(&route, &broker) {
            Ok(addr) => addr,
            Err(s) => return one(s),
        };
        let group_name = wrapped(&group);
        // The queue only names the broker set: POP takes from every queue of the topic there,
        // as RocketMQ's proxy does, so a consumer never waits on an empty queue it happened to
        // pick.
        let expression = match req.filter_expression.as_ref() {
            Some(f) if f.r#type == pb::FilterType::Sql as i32 => {
                return one(status(
                    pb::Code::IllegalFilterExpression,
                    "SQL92 filters are not supported by this proxy; use a TAG expression",
                ))
            }
            Some(f) => f.expression.clone(),
            None => "*".to_string(),
        };
        // A FIFO group gets one message group's messages one at a time (the broker's order
        // gate).
        let fifo = self.group_is_fifo(&group_name, &route).await;
        let popped = self
            .api
            .pop_filtered(
                &addr,
                &group_name,
                &name,
                -1,
                batch,
                invisible_ms,
                poll,
                fifo,
                Some(&expression),
            )
            .await;
        let messages = match popped {
            Ok(m) => m,
            Err(e) => return one(self.broker_failed(&name, &e)),
        };
        if messages.is_empty() {
            return one(status(pb::Code::MessageNotFound, "no new message"));
        }
        let mut items = vec![Ok(pb::ReceiveMessageResponse {
            content: Some(pb::receive_message_response::Content::Status(ok())),
        })];
        for m in &messages {
            items.push(Ok(pb::ReceiveMessageResponse {
                content: Some(pb::receive_message_response::Content::Message(self.to_pb(
                    m,
                    &topic.resource_namespace,
                    invisible_ms,
                ))),
            }));
        }
        items.push(Ok(pb::ReceiveMessageResponse {
            content: Some(pb::receive_message_response::Content::DeliveryTimestamp(
                timestamp(rocketraft_common::time::now_ms()),
            )),
        }));
        Ok(Response::new(Box::pin(futures::stream::iter(items))))
    }

    async fn ack_message(
        &self,
        request: Request<pb::AckMessageRequest>,
    ) -> Result<Response<pb::AckMessageResponse>, GrpcStatus> {
        let req = match self
            .admit(request, |r| consuming(r.group.as_ref(), r.topic.as_ref()))
            .await
        {
            Ok(req) => req,
            Err(s) => return refused(s),
        };
        let (Some(group), Some(topic)) = (req.group, req.topic) else {
            return Ok(Response::new(pb::AckMessageResponse {
                status: Some(status(pb::Code::BadRequest, "group and topic are required")),
                entries: vec![],
            }));
        };
        let name = wrapped(&topic);
        let group_name = wrapped(&group);
        // The entries are acked concurrently; each answers for itself.
        let results = futures::future::join_all(req.entries.iter().map(|e| async {
            let handle = ReceiptHandle::parse(&e.receipt_handle)?;
            let addr = self.handle_master(&name, &handle).await?;
            self.ack_on_broker(&addr, &group_name, &name, &handle, &e.receipt_handle)
                .await
        }))
        .await;
        let mut entries = Vec::new();
        let mut first_error = None;
        for (e, result) in req.entries.iter().zip(results) {
            let s = match result {
                Ok(()) => ok(),
                Err(s) => {
                    first_error.get_or_insert(s.clone());
                    s
                }
            };
            entries.push(pb::AckMessageResultEntry {
                message_id: e.message_id.clone(),
                receipt_handle: e.receipt_handle.clone(),
                status: Some(s),
            });
        }
        Ok(Response::new(pb::AckMessageResponse {
            status: Some(first_error.unwrap_or_else(ok)),
            entries,
        }))
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        request: Request<pb::ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<pb::ForwardMessageToDeadLetterQueueResponse>, GrpcStatus> {
        let req = match self
            .admit(request, |r| consuming(r.group.as_ref(), r.topic.as_ref()))
            .await
        {
            Ok(req) => req,
            Err(s) => return refused(s),
        };
        let result = async {
            let (Some(group), Some(topic)) = (req.group.as_ref(), req.topic.as_ref()) else {
                return Err(status(pb::Code::BadRequest, "group and topic are required"));
            };
            let name = wrapped(topic);
            let handle = ReceiptHandle::parse(&req.receipt_handle)?;
            let addr = self.handle_master(&name, &handle).await?;
            let phy = handle.commit_log_offset()?;
            // Copy to %DLQ%{group} (delay level -1), then ack the POP handle.
            let back = RemotingCommand::request(request_code::CONSUMER_SEND_MSG_BACK)
                .with_ext("offset", phy.to_string())
                .with_ext("group", wrapped(group))
                .with_ext("delayLevel", -1)
                .with_ext("originMsgId", req.message_id.clone())
                .with_ext("maxReconsumeTimes", req.max_delivery_attempts.max(1) - 1);
            self.api
                .call(&addr, back, &[response_code::SUCCESS])
                .await
                .map_err(|e| from_api(&e))?;
            self.ack_on_broker(&addr, &wrapped(group), &name, &handle, &req.receipt_handle)
                .await
        }
        .await;
        Ok(Response::new(pb::ForwardMessageToDeadLetterQueueResponse {
            status: Some(result.err().unwrap_or_else(ok)),
        }))
    }

    type PullMessageStream = BoxStream<pb::PullMessageResponse>;

    async fn pull_message(
        &self,
        request: Request<pb::PullMessageRequest>,
    ) -> Result<Response<Self::PullMessageStream>, GrpcStatus> {
        let req = match self
            .admit(request, |r| {
                consuming(
                    r.group.as_ref(),
                    r.message_queue.as_ref().and_then(|q| q.topic.as_ref()),
                )
            })
            .await
        {
            Ok(req) => req,
            Err(s) => {
                return refused_stream(pb::PullMessageResponse {
                    content: Some(pb::pull_message_response::Content::Status(s)),
                })
            }
        };
        let namespace = req
            .message_queue
            .as_ref()
            .and_then(|q| q.topic.as_ref())
            .map(|t| t.resource_namespace.clone())
            .unwrap_or_default();
        let result = async {
            let group = req
                .group
                .as_ref()
                .filter(|g| !g.name.is_empty())
                .ok_or_else(|| status(pb::Code::IllegalConsumerGroup, "group is required"))?;
            let (topic, addr, queue) = self.queue_target(req.message_queue.as_ref()).await?;
            let expression = req
                .filter_expression
                .as_ref()
                .map(|f| f.expression.clone())
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "*".into());
            let poll = req
                .long_polling_timeout
                .as_ref()
                .map(duration_ms)
                .unwrap_or(0)
                .clamp(0, self.config.max_long_polling.as_millis() as i64);
            let suspend = if poll > 0 {
                rocketraft_common::consts::pull_sys_flag::SUSPEND
            } else {
                0
            };
            self.api
                .pull(
                    &addr,
                    &rocketraft_remoting::api::PullRequest {
                        consumer_group: wrapped(group),
                        topic,
                        queue_id: queue,
                        queue_offset: req.offset,
                        max_msg_nums: req.batch_size.clamp(1, 32),
                        sys_flag: rocketraft_common::consts::pull_sys_flag::SUBSCRIPTION | suspend,
                        commit_offset: 0,
                        suspend_timeout_ms: poll,
                        subscription: Some(expression),
                    },
                )
                .await
                .map_err(|e| from_api(&e))
        }
        .await;
        let items: Vec<Result<pb::PullMessageResponse, GrpcStatus>> = match result {
            Err(s) => vec![Ok(pb::PullMessageResponse {
                content: Some(pb::pull_message_response::Content::Status(s)),
            })],
            Ok(r) => {
                let first = if r.messages.is_empty() {
                    status(pb::Code::MessageNotFound, "no new message")
                } else {
                    ok()
                };
                let mut items = vec![Ok(pb::PullMessageResponse {
                    content: Some(pb::pull_message_response::Content::Status(first)),
                })];
                for m in &r.messages {
                    items.push(Ok(pb::PullMessageResponse {
                        content: Some(pb::pull_message_response::Content::Message(
                            self.to_pb(m, &namespace, 0),
                        )),
                    }));
                }
                items.push(Ok(pb::PullMessageResponse {
                    content: Some(pb::pull_message_response::Content::NextOffset(
                        r.next_begin_offset,
                    )),
                }));
                items
            }
        };
        Ok(Response::new(Box::pin(futures::stream::iter(items))))
    }

    async fn update_offset(
        &self,
        request: Request<pb::UpdateOffsetRequest>,
    ) -> Result<Response<pb::UpdateOffsetResponse>, GrpcStatus> {
        let req = match self
            .admit(request, |r| {
                consuming(
                    r.group.as_ref(),
                    r.message_queue.as_ref().and_then(|q| q.topic.as_ref()),
                )
            })
            .await
        {
            Ok(req) => req,
            Err(s) => return refused(s),
        };
        let result = async {
            let group = req
                .group
                .as_ref()
                .filter(|g| !g.name.is_empty())
                .ok_or_else(|| status(pb::Code::IllegalConsumerGroup, "group is required"))?;
            if req.offset < 0 {
                return Err(status(pb::Code::IllegalOffset, "the offset is negative"));
            }
            let (topic, addr, queue) = self.queue_target(req.message_queue.as_ref()).await?;
            self.api
                .update_consumer_offset(&addr, &wrapped(group), &topic, queue, req.offset)
                .await
                .map_err(|e| from_api(&e))
        }
        .await;
        Ok(Response::new(pb::UpdateOffsetResponse {
            status: Some(result.err().unwrap_or_else(ok)),
        }))
    }

    async fn get_offset(
        &self,
        request: Request<pb::GetOffsetRequest>,
    ) -> Result<Response<pb::GetOffsetResponse>, GrpcStatus> {
        let req = match self
            .admit(request, |r| {
                consuming(
                    r.group.as_ref(),
                    r.message_queue.as_ref().and_then(|q| q.topic.as_ref()),
                )
            })
            .await
        {
            Ok(req) => req,
            Err(s) => return refused(s),
        };
        let result = async {
            let group = req
                .group
                .as_ref()
                .filter(|g| !g.name.is_empty())
                .ok_or_else(|| status(pb::Code::IllegalConsumerGroup, "group is required"))?;
            let (topic, addr, queue) = self.queue_target(req.message_queue.as_ref()).await?;
            self.api
                .query_consumer_offset(&addr, &wrapped(group), &topic, queue)
                .await
                .map_err(|e| from_api(&e))?
                .ok_or_else(|| {
                    status(
                        pb::Code::OffsetNotFound,
                        "the group has no offset for this queue",
                    )
                })
        }
        .await;
        Ok(Response::new(match result {
            Ok(offset) => pb::GetOffsetResponse {
                status: Some(ok()),
                offset,
            },
            Err(s) => pb::GetOffsetResponse {
                status: Some(s),
                offset: 0,
            },
        }))
    }

    async fn query_offset(
        &self,
        request: Request<pb::QueryOffsetRequest>,
    ) -> Result<Response<pb::QueryOffsetResponse>, GrpcStatus> {
        let req = match self
            .admit(request, |r| {
                consuming(
                    None,
                    r.message_queue.as_ref().and_then(|q| q.topic.as_ref()),
                )
            })
            .await
        {
            Ok(req) => req,
            Err(s) => return refused(s),
        };
        let result = async {
            let (topic, addr, queue) = self.queue_target(req.message_queue.as_ref()).await?;
            let r = match pb::QueryOffsetPolicy::try_from(req.query_offset_policy) {
                Ok(pb::QueryOffsetPolicy::Beginning) => {
                    self.api.min_offset(&addr, &topic, queue).await
                }
                Ok(pb::QueryOffsetPolicy::End) => self.api.max_offset(&addr, &topic, queue).await,
                Ok(pb::QueryOffsetPolicy::Timestamp) => {
                    let ts = req.timestamp.as_ref().ok_or_else(|| {
                        status(
                            pb::Code::BadRequest,
                            "query_offset_policy TIMESTAMP needs a timestamp",
                        )
                    })?;
                    self.api
                        .search_offset(&addr, &topic, queue, timestamp_ms(ts))
                        .await
                }
                Err(_) => return Err(status(pb::Code::BadRequest, "unknown query_offset_policy")),
            };
            r.map_err(|e| from_api(&e))
        }
        .await;
        Ok(Response::new(match result {
            Ok(offset) => pb::QueryOffsetResponse {
                status: Some(ok()),
                offset,
            },
            Err(s) => pb::QueryOffsetResponse {
                status: Some(s),
                offset: 0,
            },
        }))
    }

    async fn end_transaction(
        &self,
        request: Request<pb::EndTransactionRequest>,
    ) -> Result<Response<pb::EndTransactionResponse>, GrpcStatus> {
        let req = match self
            .admit(request, |r| {
                r.topic
                    .iter()
                    .map(|t| crate::auth::Need::publish(wrapped(t)))
                    .collect()
            })
            .await
        {
            Ok(req) => req,
            Err(s) => return refused(s),
        };
        let result = async {
            let topic = req
                .topic
                .as_ref()
                .filter(|t| !t.name.is_empty())
                .ok_or_else(|| status(pb::Code::IllegalTopic, "topic is required"))?;
            let tx = TransactionId::parse(&req.transaction_id)
                .map_err(|why| status(pb::Code::InvalidTransactionId, why))?;
            let decision = match pb::TransactionResolution::try_from(req.resolution) {
                Ok(pb::TransactionResolution::Commit) => sys_flag::TRANSACTION_COMMIT_TYPE,
                Ok(pb::TransactionResolution::Rollback) => sys_flag::TRANSACTION_ROLLBACK_TYPE,
                _ => {
                    return Err(status(
                        pb::Code::BadRequest,
                        "resolution must be COMMIT or ROLLBACK",
                    ))
                }
            };
            let name = wrapped(topic);
            let route = self.route(&name).await?;
            let addr = self.master_of(&route, &tx.broker_name)?;
            let cmd = RemotingCommand::request(request_code::END_TRANSACTION)
                .with_ext("producerGroup", name)
                .with_ext("tranStateTableOffset", tx.queue_offset)
                .with_ext("commitLogOffset", tx.commit_log_offset)
                .with_ext("commitOrRollback", decision)
                .with_ext(
                    "fromTransactionCheck",
                    req.source == pb::TransactionSource::SourceServerCheck as i32,
                )
                .with_ext("msgId", req.message_id.clone())
                .with_ext("transactionId", tx.message_id.clone());
            match self.api.call(&addr, cmd, &[response_code::SUCCESS]).await {
                Ok(_) => Ok(()),
                // The broker refuses a transaction it has no undecided half message for.
                Err(ApiError::Server { code, remark }) if code == response_code::SYSTEM_ERROR => {
                    Err(status(pb::Code::InvalidTransactionId, remark))
                }
                Err(e) => Err(from_api(&e)),
            }
        }
        .await;
        Ok(Response::new(pb::EndTransactionResponse {
            status: Some(result.err().unwrap_or_else(ok)),
        }))
    }

    type TelemetryStream = BoxStream<pb::TelemetryCommand>;

    async fn telemetry(
        &self,
        request: Request<tonic::Streaming<pb::TelemetryCommand>>,
    ) -> Result<Response<Self::TelemetryStream>, GrpcStatus> {
        if let Err(s) = self
            .auth
            .check(request.metadata(), request.remote_addr(), &[])
            .await
        {
            return Err(if s.code == pb::Code::Unauthorized as i32 {
                GrpcStatus::unauthenticated(s.message)
            } else {
                GrpcStatus::unavailable(s.message)
            });
        }
        let namespace = header_namespace(request.metadata());
        let client_id = request
            .metadata()
            .get("x-mq-client-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let header = |name: &str| {
            request
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?")
                .to_string()
        };
        tracing::debug!(
            client = %client_id,
            language = %header("x-mq-language"),
            version = %header("x-mq-client-version"),
            protocol = %header("x-mq-protocol"),
            namespace = %namespace,
            "telemetry stream opened"
        );
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::TelemetryCommand, GrpcStatus>>(16);
        let key = self.sessions.open(client_id.clone(), tx.clone());
        let service = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(cmd)) = inbound.message().await {
                if let Some(pb::telemetry_command::Command::Settings(s)) = cmd.command {
                    if let Some(pb::settings::PubSub::Publishing(p)) = &s.pub_sub {
                        let topics: BTreeSet<String> = p
                            .topics
                            .iter()
                            .map(|t| {
                                let mut t = Some(t.clone());
                                in_namespace(&mut t, &namespace);
                                t.map(|t| wrapped(&t)).unwrap_or_default()
                            })
                            .filter(|t| !t.is_empty())
                            .collect();
                        tracing::debug!(client = %client_id, ?topics, "producer settings");
                        service.sessions.set_topics(key, topics);
                        service.meta.heartbeat_now.notify_one();
                    }
                    let reply = pb::TelemetryCommand {
                        status: Some(ok()),
                        command: Some(pb::telemetry_command::Command::Settings(
                            service.settings_for(&s, &namespace).await,
                        )),
                    };
                    if tx.send(Ok(reply)).await.is_err() {
                        break;
                    }
                }
            }
            service.sessions.close(key);
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn notify_client_termination(
        &self,
        request: Request<pb::NotifyClientTerminationRequest>,
    ) -> Result<Response<pb::NotifyClientTerminationResponse>, GrpcStatus> {
        if let Err(s) = self
            .auth
            .check(request.metadata(), request.remote_addr(), &[])
            .await
        {
            return Ok(Response::new(pb::NotifyClientTerminationResponse {
                status: Some(s),
            }));
        }
        if let Some(client) = request
            .metadata()
            .get("x-mq-client-id")
            .and_then(|v| v.to_str().ok())
        {
            let closed = self.sessions.close_client(client);
            tracing::debug!(client, closed, "client terminated");
            if closed > 0 {
                self.meta.heartbeat_now.notify_one();
            }
        }
        Ok(Response::new(pb::NotifyClientTerminationResponse {
            status: Some(ok()),
        }))
    }

    async fn change_invisible_duration(
        &self,
        request: Request<pb::ChangeInvisibleDurationRequest>,
    ) -> Result<Response<pb::ChangeInvisibleDurationResponse>, GrpcStatus> {
        let req = match self
            .admit(request, |r| consuming(r.group.as_ref(), r.topic.as_ref()))
            .await
        {
            Ok(req) => req,
            Err(s) => return refused(s),
        };
        let reply = |s: pb::Status, handle: String| {
            Ok(Response::new(pb::ChangeInvisibleDurationResponse {
                status: Some(s),
                receipt_handle: handle,
            }))
        };
        let (Some(group), Some(topic)) = (req.group, req.topic) else {
            return reply(
                status(pb::Code::BadRequest, "group and topic are required"),
                String::new(),
            );
        };
        let invisible_ms = req
            .invisible_duration
            .as_ref()
            .map(duration_ms)
            .unwrap_or(0);
        if !(1_000..=12 * 3600 * 1000).contains(&invisible_ms) {
            return reply(
                status(
                    pb::Code::IllegalInvisibleTime,
                    format!("invisible duration {invisible_ms} ms is outside 1 s .. 12 h"),
                ),
                String::new(),
            );
        }
        let name = wrapped(&topic);
        let handle = match ReceiptHandle::parse(&req.receipt_handle) {
            Ok(h) => h,
            Err(s) => return reply(s, String::new()),
        };
        let addr = match self.handle_master(&name, &handle).await {
            Ok(a) => a,
            Err(s) => return reply(s, String::new()),
        };
        let cmd = RemotingCommand::request(request_code::CHANGE_MESSAGE_INVISIBLETIME)
            .with_ext("consumerGroup", wrapped(&group))
            .with_ext("topic", name)
            .with_ext("queueId", handle.queue_id())
            .with_ext("offset", handle.queue_offset())
            .with_ext("extraInfo", req.receipt_handle.clone())
            .with_ext("invisibleTime", invisible_ms);
        match self.api.call(&addr, cmd, &[response_code::SUCCESS]).await {
            Ok(r) => {
                let renewed = handle.renewed(
                    r.ext("popTime").unwrap_or_default(),
                    r.ext("invisibleTime").unwrap_or_default(),
                );
                reply(ok(), renewed)
            }
            Err(e) => reply(from_api(&e), String::new()),
        }
    }

    async fn recall_message(
        &self,
        request: Request<pb::RecallMessageRequest>,
    ) -> Result<Response<pb::RecallMessageResponse>, GrpcStatus> {
        let req = match self
            .admit(request, |r| {
                r.topic
                    .iter()
                    .map(|t| crate::auth::Need::publish(wrapped(t)))
                    .collect()
            })
            .await
        {
            Ok(req) => req,
            Err(s) => return refused(s),
        };
        let result = async {
            let topic = req
                .topic
                .as_ref()
                .filter(|t| !t.name.is_empty())
                .ok_or_else(|| status(pb::Code::IllegalTopic, "topic is required"))?;
            // The broker's handle: base64 of `v1 topic brokerName deliveryTime messageId
            // timerOffset`; the proxy only needs the broker set.
            let broker = rocketraft_common::base64::decode(&req.recall_handle)
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|t| {
                    let f: Vec<&str> = t.split(' ').collect();
                    (f.len() == 6 && f[0] == "v1").then(|| f[2].to_string())
                })
                .ok_or_else(|| {
                    status(
                        pb::Code::BadRequest,
                        "recall_handle is not a handle from a delayed message's send result",
                    )
                })?;
            let name = wrapped(topic);
            let route = self.route(&name).await?;
            let addr = self.master_of(&route, &broker)?;
            let cmd = RemotingCommand::request(request_code::RECALL_MESSAGE)
                .with_ext("topic", name)
                .with_ext("producerGroup", "proxy")
                .with_ext("recallHandle", req.recall_handle.clone());
            match self.api.call(&addr, cmd, &[response_code::SUCCESS]).await {
                Ok(r) => Ok(r.ext("msgId").unwrap_or_default().to_string()),
                Err(ApiError::Server { code, remark }) if code == response_code::NO_MESSAGE => {
                    Err(status(pb::Code::NotFound, remark))
                }
                Err(e) => Err(from_api(&e)),
            }
        }
        .await;
        Ok(Response::new(match result {
            Ok(message_id) => pb::RecallMessageResponse {
                status: Some(ok()),
                message_id,
            },
            Err(s) => pb::RecallMessageResponse {
                status: Some(s),
                message_id: String::new(),
            },
        }))
    }

    async fn sync_lite_subscription(
        &self,
        _request: Request<pb::SyncLiteSubscriptionRequest>,
    ) -> Result<Response<pb::SyncLiteSubscriptionResponse>, GrpcStatus> {
        Ok(Response::new(pb::SyncLiteSubscriptionResponse {
            status: Some(not_implemented("SyncLiteSubscription")),
        }))
    }
}

/// `grpc-timeout`: digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn grpc_timeouts_parse() {
        use std::time::Duration;
        assert_eq!(
            super::parse_grpc_timeout("30S"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            super::parse_grpc_timeout("1500m"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(super::parse_grpc_timeout("x"), None);
    }
}
