//! A typed RocketMQ client API over [`RemotingClient`] (`MQClientAPIImpl` in Java): routes and
//! cluster info from the NameServer; send, pull, offsets and topic administration on brokers.
//!
//! The admin CLI, the bench, the proxy and the tests all speak to servers through this one place,
//! so header names and response parsing are written once.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rocketraft_common::message::{decode_messages, encode_properties, MessageExt};
use rocketraft_common::protocol::{
    from_json_body, ClusterInfo, ConsumerIdList, HeartbeatData, TopicConfigSerializeWrapper,
    TopicList, TopicRouteData,
};
use rocketraft_common::time::now_ms;
use rocketraft_common::TopicConfig;

use crate::codes::{request_code, response_code};
use crate::{Refusal, RemotingClient, RemotingCommand, RemotingError};

/// What went wrong with an API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request did not get a response (connection, timeout).
    #[error(transparent)]
    Remoting(#[from] RemotingError),
    /// The server answered with an error code.
    #[error("server answered code {}: {}", .0.code, .0.remark)]
    Refused(Refusal),
    /// The server's answer could not be understood.
    #[error("malformed response: {0}")]
    Malformed(String),
}

impl ApiError {
    /// The refusal a response carries: its code and remark.
    pub fn refused(response: &RemotingCommand) -> Self {
        ApiError::Refused(Refusal::new(
            response.code,
            response.remark.clone().unwrap_or_default(),
        ))
    }

    /// The server's response code, if the server answered.
    pub fn code(&self) -> Option<i32> {
        match self {
            ApiError::Refused(refusal) => Some(refusal.code),
            _ => None,
        }
    }
}

/// One message to send.
#[derive(Debug, Clone, Default)]
pub struct SendRequest {
    pub producer_group: String,
    pub topic: String,
    /// The queue to send to; the broker picks one when negative.
    pub queue_id: i32,
    pub body: Bytes,
    pub properties: BTreeMap<String, String>,
    pub flag: i32,
    pub sys_flag: i32,
    pub reconsume_times: i32,
}

/// The broker's answer to a successful send (`SendResult`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendResult {
    /// SUCCESS, or FLUSH_DISK_TIMEOUT / FLUSH_SLAVE_TIMEOUT / SLAVE_NOT_AVAILABLE, which RocketMQ
    /// reports as stored-but-not-durable statuses.
    pub code: i32,
    /// The offset message id(s) (comma-separated for a batch).
    pub msg_id: String,
    pub queue_id: i32,
    pub queue_offset: i64,
    /// The handle that recalls a delayed message (RECALL_MESSAGE), when the broker gave one.
    pub recall_handle: Option<String>,
}

/// One PULL_MESSAGE request.
#[derive(Debug, Clone)]
pub struct PullRequest {
    pub consumer_group: String,
    pub topic: String,
    pub queue_id: i32,
    pub queue_offset: i64,
    pub max_msg_nums: i32,
    /// `PullSysFlag` bits.
    pub sys_flag: i32,
    pub commit_offset: i64,
    /// How long the broker may hold the request when there is nothing new (long polling).
    pub suspend_timeout_ms: i64,
    /// The subscription expression (`*` or `TagA || TagB`), sent when the SUBSCRIPTION flag is set.
    pub subscription: Option<String>,
}

/// Outcome of a pull (`PullStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullStatus {
    Found,
    NoNewMsg,
    NoMatchedMsg,
    OffsetIllegal,
}

/// The answer to a pull.
#[derive(Debug, Clone)]
pub struct PullResult {
    pub status: PullStatus,
    pub next_begin_offset: i64,
    pub min_offset: i64,
    pub max_offset: i64,
    pub messages: Vec<MessageExt>,
}

/// One POP_LITE_MESSAGE ([`MqClientApi::pop_lite`]).
#[derive(Debug, Clone)]
pub struct PopLiteRequest<'a> {
    pub group: &'a str,
    /// The LITE parent topic.
    pub topic: &'a str,
    pub lite_topics: &'a [String],
    /// The cut of the last expiry of each of `lite_topics` the subscription knows of (the
    /// broker's `FIRST_LOOK`, `i64::MIN`, before its first answer; -1: none); empty: not said.
    /// The broker reports only later expiries.
    pub known_cuts: &'a [i64],
    /// Whose turn it is first (an index into `lite_topics`).
    pub start_index: usize,
    pub max: i32,
    pub invisible_ms: i64,
    pub poll_ms: i64,
    /// A FIFO group.
    pub order: bool,
    /// `(type, expression)` as [`MqClientApi::pop_filtered`]'s.
    pub filter: Option<(&'a str, &'a str)>,
    /// The client received for (`clientId`): an exclusive group's broker then skips the lite
    /// topics other clients own and answers them as evicted.
    pub client_id: Option<&'a str>,
}

/// A [`PopLiteRequest::known_cuts`] entry of a subscription that has not looked at its lite
/// topic yet: the broker reports no expiry of it, and answers its cut to know from then on.
pub const LITE_FIRST_LOOK: i64 = i64::MIN;

/// What a POP_LITE_MESSAGE answered.
#[derive(Debug, Default)]
pub struct PopLiteResult {
    pub messages: Vec<MessageExt>,
    /// Lite topics asked for that expired and got no message since.
    pub expired: Vec<String>,
    /// The cut of each asked lite topic's last expiry (-1: never expired), in the order asked;
    /// empty from a broker that does not say.
    pub cuts: Vec<i64>,
    /// Lite topics asked for that another client of the (exclusive) group owns.
    pub evicted: Vec<String>,
}

/// One LITE_SUBSCRIPTION_CTL ([`MqClientApi::lite_subscription_ctl`]).
#[derive(Debug, Clone)]
pub struct LiteCtlRequest<'a> {
    pub group: &'a str,
    /// The LITE parent topic.
    pub topic: &'a str,
    pub client_id: &'a str,
    /// Lite topics the client claims.
    pub lite_topics: &'a [String],
    /// Lite topics the client no longer subscribes.
    pub released: &'a [String],
    /// Take the claimed lite topics from other clients (`false`: claim only unowned ones).
    pub take_over: bool,
}

/// A typed RocketMQ API client. Cheap to clone.
#[derive(Clone)]
pub struct MqClientApi {
    client: RemotingClient,
    timeout: Duration,
    /// Per NameServer list (`a;b`), the index of the one that answered last.
    preferred: Arc<Mutex<HashMap<String, usize>>>,
}

/// The error for a NameServer list with no address in it.
fn no_namesrv(namesrv: &str) -> ApiError {
    ApiError::Malformed(format!(
        "no NameServer address in {namesrv:?}: give host:port, or several separated by ';'"
    ))
}

/// The addresses of a NameServer list: `a;b` (RocketMQ's `namesrvAddr`), trimmed, empty ones
/// dropped.
pub fn namesrv_list(namesrv: &str) -> Vec<&str> {
    namesrv
        .split(';')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect()
}

impl MqClientApi {
    pub fn new(client: RemotingClient, timeout: Duration) -> Self {
        MqClientApi {
            client,
            timeout,
            preferred: Arc::default(),
        }
    }

    /// The underlying Remoting client.
    pub fn remoting(&self) -> &RemotingClient {
        &self.client
    }

    /// Sends `request` and returns the response if its code is one of `ok_codes`.
    pub async fn call(
        &self,
        addr: &str,
        request: RemotingCommand,
        ok_codes: &[i32],
    ) -> Result<RemotingCommand, ApiError> {
        let response = self.client.invoke(addr, request, self.timeout).await?;
        if ok_codes.contains(&response.code) {
            Ok(response)
        } else {
            Err(ApiError::refused(&response))
        }
    }

    /// A read from the NameServers of `namesrv` (one address, or several separated by `;`, as
    /// RocketMQ's `namesrvAddr`): the first that answers with one of `ok_codes`. A NameServer
    /// that is down, or that refuses (a NameServer restarted empty does not know a topic until
    /// the brokers register again), is passed over for the next; the last one that answered
    /// tried first next time. The last error when none answers.
    pub async fn call_namesrv(
        &self,
        namesrv: &str,
        request: RemotingCommand,
        ok_codes: &[i32],
    ) -> Result<RemotingCommand, ApiError> {
        let list = namesrv_list(namesrv);
        match list.as_slice() {
            [] => return Err(no_namesrv(namesrv)),
            [one] => return self.call(one, request, ok_codes).await,
            _ => {}
        }
        let first = self.preferred_namesrv(namesrv, list.len());
        let mut last = None;
        let mut refused = None;
        for i in 0..list.len() {
            let index = (first + i) % list.len();
            match self.call(list[index], request.clone(), ok_codes).await {
                Ok(response) => {
                    self.prefer_namesrv(namesrv, index);
                    return Ok(response);
                }
                // An answer beats a silence: report a refusal over a connection error.
                Err(e @ ApiError::Refused(_)) => refused = Some(e),
                Err(e) => {
                    tracing::debug!(namesrv = list[index], error = %e, "NameServer did not answer; trying the next");
                    last = Some(e);
                }
            }
        }
        Err(refused.or(last).unwrap_or_else(|| no_namesrv(namesrv)))
    }

    /// A change on every NameServer of `namesrv` (RocketMQ's admin tools do the same: each
    /// NameServer keeps its own routes). The answers in list order; an error naming the
    /// NameServers that did not take it.
    pub async fn call_every_namesrv(
        &self,
        namesrv: &str,
        request: RemotingCommand,
        ok_codes: &[i32],
    ) -> Result<Vec<RemotingCommand>, ApiError> {
        let list = namesrv_list(namesrv);
        if list.is_empty() {
            return Err(no_namesrv(namesrv));
        }
        let mut answers = Vec::new();
        let mut failed = Vec::new();
        let mut refusal = None;
        for addr in list {
            match self.call(addr, request.clone(), ok_codes).await {
                Ok(r) => answers.push(r),
                Err(e) => {
                    failed.push(format!("{addr}: {e}"));
                    if let ApiError::Refused(r) = e {
                        refusal = Some(r);
                    }
                }
            }
        }
        if failed.is_empty() {
            return Ok(answers);
        }
        let remark = format!("not done on every NameServer: {}", failed.join("; "));
        Err(match refusal {
            Some(r) => ApiError::Refused(Refusal::new(r.code, remark)),
            None => ApiError::Malformed(remark),
        })
    }

    fn preferred_namesrv(&self, list: &str, len: usize) -> usize {
        let preferred = self.preferred.lock().unwrap_or_else(|e| e.into_inner());
        preferred.get(list).copied().unwrap_or(0) % len.max(1)
    }

    fn prefer_namesrv(&self, list: &str, index: usize) {
        let mut preferred = self.preferred.lock().unwrap_or_else(|e| e.into_inner());
        if preferred.get(list) != Some(&index) {
            // Bounded: a process speaks to few NameServer lists.
            if preferred.len() >= 64 {
                preferred.clear();
            }
            preferred.insert(list.to_string(), index);
        }
    }

    /// GET_ROUTEINFO_BY_TOPIC, from the first NameServer of `namesrv` (a `;` list) that knows
    /// the topic.
    pub async fn topic_route(
        &self,
        namesrv: &str,
        topic: &str,
    ) -> Result<TopicRouteData, ApiError> {
        let request =
            RemotingCommand::request(request_code::GET_ROUTEINFO_BY_TOPIC).with_ext("topic", topic);
        let response = self
            .call_namesrv(namesrv, request, &[response_code::SUCCESS])
            .await?;
        parse_json(&response.body)
    }

    /// GET_BROKER_CLUSTER_INFO, from the first NameServer of `namesrv` that answers.
    pub async fn cluster_info(&self, namesrv: &str) -> Result<ClusterInfo, ApiError> {
        let request = RemotingCommand::request(request_code::GET_BROKER_CLUSTER_INFO);
        let response = self
            .call_namesrv(namesrv, request, &[response_code::SUCCESS])
            .await?;
        parse_json(&response.body)
    }

    /// GET_ALL_TOPIC_LIST_FROM_NAMESERVER, from the first NameServer of `namesrv` that answers.
    pub async fn all_topics(&self, namesrv: &str) -> Result<TopicList, ApiError> {
        let request = RemotingCommand::request(request_code::GET_ALL_TOPIC_LIST_FROM_NAMESERVER);
        let response = self
            .call_namesrv(namesrv, request, &[response_code::SUCCESS])
            .await?;
        parse_json(&response.body)
    }

    /// UPDATE_AND_CREATE_TOPIC on one broker.
    pub async fn create_topic(&self, broker: &str, config: &TopicConfig) -> Result<(), ApiError> {
        let attributes = serde_json::to_string(&config.attributes)
            .map_err(|e| ApiError::Malformed(e.to_string()))?;
        let request = RemotingCommand::request(request_code::UPDATE_AND_CREATE_TOPIC)
            .with_ext("topic", config.topic_name.clone())
            .with_ext(
                "defaultTopic",
                rocketraft_common::consts::AUTO_CREATE_TOPIC_KEY_TOPIC,
            )
            .with_ext("readQueueNums", config.read_queue_nums.to_string())
            .with_ext("writeQueueNums", config.write_queue_nums.to_string())
            .with_ext("perm", config.perm.to_string())
            .with_ext("topicFilterType", config.topic_filter_type.clone())
            .with_ext("topicSysFlag", config.topic_sys_flag.to_string())
            .with_ext("order", config.order.to_string())
            .with_ext("attributes", attributes);
        self.call(broker, request, &[response_code::SUCCESS])
            .await?;
        Ok(())
    }

    /// GET_ALL_TOPIC_CONFIG from one broker.
    pub async fn broker_topics(
        &self,
        broker: &str,
    ) -> Result<TopicConfigSerializeWrapper, ApiError> {
        let request = RemotingCommand::request(request_code::GET_ALL_TOPIC_CONFIG);
        let response = self
            .call(broker, request, &[response_code::SUCCESS])
            .await?;
        parse_json(&response.body)
    }

    /// SEND_MESSAGE_V2 (the single-letter header that Java producers use).
    pub async fn send(&self, broker: &str, message: &SendRequest) -> Result<SendResult, ApiError> {
        let mut properties = message.properties.clone();
        properties
            .entry(rocketraft_common::consts::property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX.to_string())
            .or_insert_with(unique_message_id);
        let request = RemotingCommand::request(request_code::SEND_MESSAGE_V2)
            .with_ext("a", message.producer_group.clone())
            .with_ext("b", message.topic.clone())
            .with_ext("c", rocketraft_common::consts::AUTO_CREATE_TOPIC_KEY_TOPIC)
            .with_ext("d", "4")
            .with_ext("e", message.queue_id.to_string())
            .with_ext("f", message.sys_flag.to_string())
            .with_ext("g", now_ms().to_string())
            .with_ext("h", message.flag.to_string())
            .with_ext("i", encode_properties(&properties))
            .with_ext("j", message.reconsume_times.to_string())
            .with_ext("k", "false")
            .with_ext("m", "false")
            .with_body(message.body.clone());
        self.send_command(broker, request).await
    }

    /// SEND_BATCH_MESSAGE: every message goes to `topic`/`queue_id`, stored contiguously.
    /// [`ApiError::Malformed`], nothing sent, when a message cannot go in a batch (see
    /// [`encode_batch_entry`]).
    pub async fn send_batch(
        &self,
        broker: &str,
        producer_group: &str,
        topic: &str,
        queue_id: i32,
        messages: &[(Bytes, BTreeMap<String, String>)],
    ) -> Result<SendResult, ApiError> {
        let mut body = Vec::new();
        for (payload, props) in messages {
            let mut props = props.clone();
            props
                .entry(
                    rocketraft_common::consts::property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX.to_string(),
                )
                .or_insert_with(unique_message_id);
            encode_batch_entry(&mut body, payload, &encode_properties(&props))?;
        }
        let request = RemotingCommand::request(request_code::SEND_BATCH_MESSAGE)
            .with_ext("a", producer_group)
            .with_ext("b", topic)
            .with_ext("c", rocketraft_common::consts::AUTO_CREATE_TOPIC_KEY_TOPIC)
            .with_ext("d", "4")
            .with_ext("e", queue_id.to_string())
            .with_ext("f", "0")
            .with_ext("g", now_ms().to_string())
            .with_ext("h", "0")
            .with_ext("i", "")
            .with_ext("j", "0")
            .with_ext("k", "false")
            .with_ext("m", "true")
            .with_body(body);
        self.send_command(broker, request).await
    }

    async fn send_command(
        &self,
        broker: &str,
        request: RemotingCommand,
    ) -> Result<SendResult, ApiError> {
        let response = self
            .call(
                broker,
                request,
                &[
                    response_code::SUCCESS,
                    response_code::FLUSH_DISK_TIMEOUT,
                    response_code::FLUSH_SLAVE_TIMEOUT,
                    response_code::SLAVE_NOT_AVAILABLE,
                ],
            )
            .await?;
        Ok(SendResult {
            code: response.code,
            msg_id: response.ext("msgId").unwrap_or_default().to_string(),
            queue_id: parse_ext(&response, "queueId")?,
            queue_offset: parse_ext(&response, "queueOffset")?,
            recall_handle: response
                .ext("recallHandle")
                .filter(|h| !h.is_empty())
                .map(str::to_string),
        })
    }

    /// PULL_MESSAGE.
    pub async fn pull(&self, broker: &str, pull: &PullRequest) -> Result<PullResult, ApiError> {
        let mut request = RemotingCommand::request(request_code::PULL_MESSAGE)
            .with_ext("consumerGroup", pull.consumer_group.clone())
            .with_ext("topic", pull.topic.clone())
            .with_ext("queueId", pull.queue_id.to_string())
            .with_ext("queueOffset", pull.queue_offset.to_string())
            .with_ext("maxMsgNums", pull.max_msg_nums.to_string())
            .with_ext("sysFlag", pull.sys_flag.to_string())
            .with_ext("commitOffset", pull.commit_offset.to_string())
            .with_ext("suspendTimeoutMillis", pull.suspend_timeout_ms.to_string())
            .with_ext("subVersion", "0")
            .with_ext("expressionType", "TAG");
        if let Some(sub) = &pull.subscription {
            request = request.with_ext("subscription", sub.clone());
        }
        // The broker may hold the request for the suspend time: wait a little longer than that.
        let wait = self.timeout + Duration::from_millis(pull.suspend_timeout_ms.max(0) as u64);
        let response = self.client.invoke(broker, request, wait).await?;
        let status = match response.code {
            response_code::SUCCESS => PullStatus::Found,
            response_code::PULL_NOT_FOUND => PullStatus::NoNewMsg,
            response_code::PULL_RETRY_IMMEDIATELY => PullStatus::NoMatchedMsg,
            response_code::PULL_OFFSET_MOVED => PullStatus::OffsetIllegal,
            _ => return Err(ApiError::refused(&response)),
        };
        let messages = if status == PullStatus::Found {
            decode_messages(&response.body).map_err(|e| ApiError::Malformed(e.to_string()))?
        } else {
            Vec::new()
        };
        Ok(PullResult {
            status,
            next_begin_offset: parse_ext(&response, "nextBeginOffset")?,
            min_offset: parse_ext(&response, "minOffset")?,
            max_offset: parse_ext(&response, "maxOffset")?,
            messages,
        })
    }

    /// POP_MESSAGE: up to `max` messages of the topic (all queues when `queue_id < 0`), invisible
    /// for `invisible_ms`; each carries its receipt handle in the `POP_CK` property. Empty when
    /// nothing is there (after `poll_ms` of long polling).
    #[allow(clippy::too_many_arguments)]
    pub async fn pop(
        &self,
        broker: &str,
        group: &str,
        topic: &str,
        queue_id: i32,
        max: i32,
        invisible_ms: i64,
        poll_ms: i64,
        order: bool,
    ) -> Result<Vec<MessageExt>, ApiError> {
        self.pop_filtered(
            broker,
            group,
            topic,
            queue_id,
            max,
            invisible_ms,
            poll_ms,
            order,
            None,
        )
        .await
    }

    /// [`pop`](Self::pop) with a filter: `(type, expression)`, type `TAG` (`tagA || tagB`, `*`
    /// for all) or `SQL92`.
    #[allow(clippy::too_many_arguments)]
    pub async fn pop_filtered(
        &self,
        broker: &str,
        group: &str,
        topic: &str,
        queue_id: i32,
        max: i32,
        invisible_ms: i64,
        poll_ms: i64,
        order: bool,
        filter: Option<(&str, &str)>,
    ) -> Result<Vec<MessageExt>, ApiError> {
        let mut request = RemotingCommand::request(request_code::POP_MESSAGE)
            .with_ext("consumerGroup", group)
            .with_ext("topic", topic)
            .with_ext("queueId", queue_id)
            .with_ext("maxMsgNums", max)
            .with_ext("invisibleTime", invisible_ms)
            .with_ext("pollTime", poll_ms)
            .with_ext("bornTime", now_ms())
            .with_ext("initMode", 0)
            .with_ext("order", order);
        if let Some((kind, e)) = filter.filter(|(_, e)| !e.trim().is_empty()) {
            request = request.with_ext("expType", kind).with_ext("exp", e);
        }
        let wait = self.timeout + Duration::from_millis(poll_ms.max(0) as u64);
        let response = self.client.invoke(broker, request, wait).await?;
        match response.code {
            response_code::SUCCESS => {
                decode_messages(&response.body).map_err(|e| ApiError::Malformed(e.to_string()))
            }
            response_code::PULL_NOT_FOUND | response_code::POLLING_TIMEOUT => Ok(Vec::new()),
            _ => Err(ApiError::refused(&response)),
        }
    }

    /// POP_LITE_MESSAGE (200070): one receive over the lite topics of `request` (each in
    /// turn from `start_index`), held up to `poll_ms` until one has a message. Answers the
    /// messages (each with its `POP_CK`) and the lite topics the broker reports expired with no
    /// message since.
    pub async fn pop_lite(
        &self,
        broker: &str,
        request: &PopLiteRequest<'_>,
    ) -> Result<PopLiteResult, ApiError> {
        let body = if request.known_cuts.is_empty() {
            serde_json::json!({ "liteTopics": request.lite_topics })
        } else {
            serde_json::json!({
                "liteTopics": request.lite_topics,
                "knownCuts": request.known_cuts,
            })
        }
        .to_string();
        let mut command = RemotingCommand::request(request_code::POP_LITE_MESSAGE)
            .with_ext("consumerGroup", request.group)
            .with_ext("topic", request.topic)
            .with_ext("maxMsgNums", request.max)
            .with_ext("invisibleTime", request.invisible_ms)
            .with_ext("pollTime", request.poll_ms)
            .with_ext("bornTime", now_ms())
            .with_ext("startIndex", request.start_index)
            .with_ext("order", request.order)
            .with_body(Bytes::from(body));
        if let Some(c) = request.client_id {
            command = command.with_ext("clientId", c);
        }
        if let Some((kind, e)) = request.filter.filter(|(_, e)| !e.trim().is_empty()) {
            command = command.with_ext("expType", kind).with_ext("exp", e);
        }
        let wait = self.timeout + Duration::from_millis(request.poll_ms.max(0) as u64);
        let response = self.client.invoke(broker, command, wait).await?;
        let messages = match response.code {
            response_code::SUCCESS => {
                decode_messages(&response.body).map_err(|e| ApiError::Malformed(e.to_string()))?
            }
            response_code::PULL_NOT_FOUND | response_code::POLLING_TIMEOUT => Vec::new(),
            _ => return Err(ApiError::refused(&response)),
        };
        // A malformed list loses only itself: the messages popped are handed out (failing the
        // call would leave them invisible until their invisible time).
        fn list<T: serde::de::DeserializeOwned>(response: &RemotingCommand, key: &str) -> Vec<T> {
            match response.ext(key) {
                None => Vec::new(),
                Some(v) => serde_json::from_str(v).unwrap_or_else(|e| {
                    tracing::warn!(key, value = v, error = %e, "POP_LITE_MESSAGE answer: not a JSON list; ignored");
                    Vec::new()
                }),
            }
        }
        let expired: Vec<String> = list(&response, "expiredLiteTopics");
        let mut cuts: Vec<i64> = list(&response, "liteCuts");
        if cuts.len() != request.lite_topics.len() {
            cuts.clear();
        }
        let evicted = list(&response, "evictedLiteTopics");
        Ok(PopLiteResult {
            messages,
            expired,
            cuts,
            evicted,
        })
    }

    /// LITE_SUBSCRIPTION_CTL (200071): records on `broker` which client of an exclusive lite
    /// group owns the lite topics of `request`. Answers whether the group is exclusive there.
    pub async fn lite_subscription_ctl(
        &self,
        broker: &str,
        request: &LiteCtlRequest<'_>,
    ) -> Result<bool, ApiError> {
        let body = serde_json::json!({
            "liteTopics": request.lite_topics,
            "releasedLiteTopics": request.released,
        })
        .to_string();
        let command = RemotingCommand::request(request_code::LITE_SUBSCRIPTION_CTL)
            .with_ext("consumerGroup", request.group)
            .with_ext("topic", request.topic)
            .with_ext("clientId", request.client_id)
            .with_ext("takeOver", request.take_over)
            .with_body(Bytes::from(body));
        let response = self
            .call(broker, command, &[response_code::SUCCESS])
            .await?;
        Ok(response.ext("exclusive") == Some("true"))
    }

    /// ACK_MESSAGE of a popped message (by its `POP_CK` receipt handle).
    pub async fn ack(
        &self,
        broker: &str,
        group: &str,
        topic: &str,
        message: &MessageExt,
    ) -> Result<(), ApiError> {
        let handle = message
            .message
            .property(rocketraft_common::consts::property::POP_CK)
            .ok_or_else(|| {
                ApiError::Malformed("the message has no POP_CK receipt handle".into())
            })?;
        let request = RemotingCommand::request(request_code::ACK_MESSAGE)
            .with_ext("consumerGroup", group)
            .with_ext("topic", topic)
            .with_ext("queueId", message.queue_id)
            .with_ext("offset", message.queue_offset)
            .with_ext("extraInfo", handle);
        self.call(broker, request, &[response_code::SUCCESS])
            .await
            .map(|_| ())
    }

    /// QUERY_CONSUMER_OFFSET: `None` when the group has no committed offset for the queue.
    pub async fn query_consumer_offset(
        &self,
        broker: &str,
        group: &str,
        topic: &str,
        queue_id: i32,
    ) -> Result<Option<i64>, ApiError> {
        let request = RemotingCommand::request(request_code::QUERY_CONSUMER_OFFSET)
            .with_ext("consumerGroup", group)
            .with_ext("topic", topic)
            .with_ext("queueId", queue_id.to_string());
        let response = self
            .call(
                broker,
                request,
                &[response_code::SUCCESS, response_code::QUERY_NOT_FOUND],
            )
            .await?;
        if response.code == response_code::QUERY_NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(parse_ext(&response, "offset")?))
    }

    /// UPDATE_CONSUMER_OFFSET.
    pub async fn update_consumer_offset(
        &self,
        broker: &str,
        group: &str,
        topic: &str,
        queue_id: i32,
        offset: i64,
    ) -> Result<(), ApiError> {
        let request = RemotingCommand::request(request_code::UPDATE_CONSUMER_OFFSET)
            .with_ext("consumerGroup", group)
            .with_ext("topic", topic)
            .with_ext("queueId", queue_id.to_string())
            .with_ext("commitOffset", offset.to_string());
        self.call(broker, request, &[response_code::SUCCESS])
            .await?;
        Ok(())
    }

    /// GET_MAX_OFFSET: the queue offset one past the last message.
    pub async fn max_offset(
        &self,
        broker: &str,
        topic: &str,
        queue_id: i32,
    ) -> Result<i64, ApiError> {
        self.offset_query(broker, request_code::GET_MAX_OFFSET, topic, queue_id, None)
            .await
    }

    /// GET_MIN_OFFSET: the first queue offset still stored.
    pub async fn min_offset(
        &self,
        broker: &str,
        topic: &str,
        queue_id: i32,
    ) -> Result<i64, ApiError> {
        self.offset_query(broker, request_code::GET_MIN_OFFSET, topic, queue_id, None)
            .await
    }

    /// SEARCH_OFFSET_BY_TIMESTAMP.
    pub async fn search_offset(
        &self,
        broker: &str,
        topic: &str,
        queue_id: i32,
        timestamp_ms: i64,
    ) -> Result<i64, ApiError> {
        self.offset_query(
            broker,
            request_code::SEARCH_OFFSET_BY_TIMESTAMP,
            topic,
            queue_id,
            Some(timestamp_ms),
        )
        .await
    }

    async fn offset_query(
        &self,
        broker: &str,
        code: i32,
        topic: &str,
        queue_id: i32,
        timestamp_ms: Option<i64>,
    ) -> Result<i64, ApiError> {
        let mut request = RemotingCommand::request(code)
            .with_ext("topic", topic)
            .with_ext("queueId", queue_id.to_string());
        if let Some(ts) = timestamp_ms {
            request = request.with_ext("timestamp", ts.to_string());
        }
        let response = self
            .call(broker, request, &[response_code::SUCCESS])
            .await?;
        parse_ext(&response, "offset")
    }

    /// HEART_BEAT with a client's producer and consumer groups.
    pub async fn heartbeat(&self, broker: &str, data: &HeartbeatData) -> Result<(), ApiError> {
        let body = serde_json::to_vec(data).map_err(|e| ApiError::Malformed(e.to_string()))?;
        let request = RemotingCommand::request(request_code::HEART_BEAT).with_body(body);
        self.call(broker, request, &[response_code::SUCCESS])
            .await?;
        Ok(())
    }

    /// GET_CONSUMER_LIST_BY_GROUP.
    pub async fn consumer_list(&self, broker: &str, group: &str) -> Result<Vec<String>, ApiError> {
        let request = RemotingCommand::request(request_code::GET_CONSUMER_LIST_BY_GROUP)
            .with_ext("consumerGroup", group);
        let response = self
            .call(broker, request, &[response_code::SUCCESS])
            .await?;
        let list: ConsumerIdList = parse_json(&response.body)?;
        Ok(list.consumer_id_list)
    }

    /// QUERY_MESSAGE: the messages of `topic` whose `KEYS` hold `key` (or, with `unique`, whose
    /// `UNIQ_KEY` is `key`: ext field `_UNIQUE_KEY_QUERY=true`) stored within `[begin, end]`
    /// (ms). Empty when the broker answers QUERY_NOT_FOUND.
    #[allow(clippy::too_many_arguments)]
    pub async fn query_message(
        &self,
        broker: &str,
        topic: &str,
        key: &str,
        max_num: i32,
        begin: i64,
        end: i64,
        unique: bool,
    ) -> Result<Vec<MessageExt>, ApiError> {
        let mut request = RemotingCommand::request(request_code::QUERY_MESSAGE)
            .with_ext("topic", topic)
            .with_ext("key", key)
            .with_ext("maxNum", max_num)
            .with_ext("beginTimestamp", begin)
            .with_ext("endTimestamp", end);
        if unique {
            request = request.with_ext("_UNIQUE_KEY_QUERY", "true");
        }
        let response = self
            .call(
                broker,
                request,
                &[response_code::SUCCESS, response_code::QUERY_NOT_FOUND],
            )
            .await?;
        if response.code == response_code::QUERY_NOT_FOUND {
            return Ok(Vec::new());
        }
        decode_messages(&response.body).map_err(|e| ApiError::Malformed(e.to_string()))
    }

    /// VIEW_MESSAGE_BY_ID: the message at a CommitLog offset (`offset`, as an offset message
    /// id decodes), with `topic` when known (brokers with ACLs check Get on it).
    pub async fn view_message(
        &self,
        broker: &str,
        offset: i64,
        topic: Option<&str>,
    ) -> Result<MessageExt, ApiError> {
        let mut request =
            RemotingCommand::request(request_code::VIEW_MESSAGE_BY_ID).with_ext("offset", offset);
        if let Some(t) = topic {
            request = request.with_ext("topic", t);
        }
        let response = self
            .call(broker, request, &[response_code::SUCCESS])
            .await?;
        let mut messages =
            decode_messages(&response.body).map_err(|e| ApiError::Malformed(e.to_string()))?;
        if messages.len() != 1 {
            return Err(ApiError::Malformed(format!(
                "VIEW_MESSAGE_BY_ID answered {} messages",
                messages.len()
            )));
        }
        Ok(messages.remove(0))
    }
}

/// The bytes one message takes in a SEND_BATCH_MESSAGE body: 22 bytes of fixed fields, its
/// body and its encoded properties (what the broker counts against its largest message).
pub fn batch_entry_len(body_len: usize, properties_len: usize) -> usize {
    4 + 4 + 4 + 4 + 4 + body_len + 2 + properties_len
}

/// The longest encoded properties a batch entry can carry (their length is an `i16`).
pub const MAX_BATCH_PROPERTIES_LEN: usize = i16::MAX as usize;

/// Appends one message of a SEND_BATCH_MESSAGE body (`MessageDecoder.encodeMessage`):
/// `totalSize i32, magic i32 (0), bodyCRC i32, flag i32, bodyLen i32 + body, propsLen i16 + props`.
/// Fails, appending nothing, when the properties are longer than an `i16` holds
/// ([`MAX_BATCH_PROPERTIES_LEN`]) or the entry longer than an `i32`: such a message cannot go
/// in a batch (a cast would store it with its properties cut short).
pub fn encode_batch_entry(
    out: &mut Vec<u8>,
    body: &[u8],
    properties: &str,
) -> Result<(), ApiError> {
    let props_len = i16::try_from(properties.len()).map_err(|_| {
        ApiError::Malformed(format!(
            "a batch entry's properties take {} bytes, more than the {MAX_BATCH_PROPERTIES_LEN} a batch can carry",
            properties.len()
        ))
    })?;
    let too_large = || {
        ApiError::Malformed(format!(
            "a batch entry of {} bytes is larger than a batch can carry",
            batch_entry_len(body.len(), properties.len())
        ))
    };
    let total =
        i32::try_from(batch_entry_len(body.len(), properties.len())).map_err(|_| too_large())?;
    let body_len = i32::try_from(body.len()).map_err(|_| too_large())?;
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    let crc = (crc32fast::hash(body) & 0x7FFF_FFFF) as i32;
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&body_len.to_be_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&props_len.to_be_bytes());
    out.extend_from_slice(properties.as_bytes());
    Ok(())
}

/// A client-side unique message id in the layout of Java's `MessageClientIDSetter`: 16 bytes as
/// 32 uppercase hex digits (IPv4, pid, a per-process salt, milliseconds, a counter).
pub fn unique_message_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    // (salt, pid): the pid read once (`getpid` is a system call each time).
    static FIXED: OnceLock<(u32, u16)> = OnceLock::new();
    let (salt, pid) = *FIXED.get_or_init(|| {
        let pid = std::process::id();
        (
            (now_ms() as u32) ^ pid.rotate_left(16),
            (pid & 0xFFFF) as u16,
        )
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let millis = now_ms() as u32;
    unique_id(pid, salt, millis, n as u16)
}

/// `7F000001{pid:04X}{salt:08X}{millis:08X}{n:04X}`, without a formatter (one per message).
fn unique_id(pid: u16, salt: u32, millis: u32, n: u16) -> String {
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&[0x7F, 0, 0, 1]);
    bytes[4..6].copy_from_slice(&pid.to_be_bytes());
    bytes[6..10].copy_from_slice(&salt.to_be_bytes());
    bytes[10..14].copy_from_slice(&millis.to_be_bytes());
    bytes[14..].copy_from_slice(&n.to_be_bytes());
    rocketraft_common::message::upper_hex(&bytes)
}

fn parse_ext<T: std::str::FromStr>(response: &RemotingCommand, field: &str) -> Result<T, ApiError> {
    response
        .ext_parse(field)
        .map_err(|e| ApiError::Malformed(e.to_string()))
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    from_json_body(body).map_err(|e| ApiError::Malformed(e.to_string()))
}

/// The address a broker should advertise when it listens on `listen` (the unspecified address
/// becomes loopback, which is what a single-machine cluster needs).
pub fn advertised(listen: SocketAddr) -> SocketAddr {
    if listen.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], listen.port()))
    } else {
        listen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_ids_are_the_java_client_layout() {
        for (pid, salt, millis, n) in [
            (0u16, 0u32, 0u32, 0u16),
            (0x1234, 0xDEAD_BEEF, 0x0102_0304, 0xFFFF),
            (u16::MAX, u32::MAX, 7, 42),
        ] {
            assert_eq!(
                unique_id(pid, salt, millis, n),
                format!("7F000001{pid:04X}{salt:08X}{millis:08X}{n:04X}")
            );
        }
        let id = unique_message_id();
        assert_eq!(id.len(), 32);
        assert!(id.starts_with("7F000001"));
        assert_ne!(id, unique_message_id(), "the counter moves");
    }

    #[test]
    fn a_batch_entry_whose_properties_overflow_an_i16_is_refused_not_cut_short() {
        let mut out = Vec::new();
        encode_batch_entry(&mut out, b"body", "KEYS\u{1}k\u{2}").expect("fits");
        assert_eq!(out.len(), batch_entry_len(4, 7));
        assert_eq!(&out[out.len() - 9..out.len() - 7], &7i16.to_be_bytes());

        let long = "x".repeat(MAX_BATCH_PROPERTIES_LEN);
        let before = out.len();
        encode_batch_entry(&mut out, b"", &long).expect("the longest that fits");
        assert_eq!(
            out.len() - before,
            batch_entry_len(0, MAX_BATCH_PROPERTIES_LEN)
        );

        let huge = "x".repeat(70_000);
        let before = out.clone();
        let e = encode_batch_entry(&mut out, b"body", &huge).expect_err("too long");
        assert!(e.to_string().contains("70000"), "{e}");
        assert_eq!(out, before, "a refused entry appended bytes");
    }
}
