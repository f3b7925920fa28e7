//! The queue workload's gRPC half: producers and consumers that go through the `rocketraft
//! proxy` process (RocketMQ 5's `apache.rocketmq.v2.MessagingService`) instead of talking
//! Remoting to the brokers. They share the topics and consumer groups of the Remoting half
//! ([`crate::workload`]), so a value sent through the proxy may be delivered over Remoting
//! and the other way round, and the final drain (Remoting) covers both.
//!
//! Recorded like the Remoting operations, with `"path": "grpc"` (the Remoting ones carry
//! `"path": "remoting"`):
//! - `send`: `ok` when the entry's status is OK, with the queue `offset` the proxy answered.
//!   The proxy does not say which broker (or queue) stored the message, so a gRPC send has no
//!   `broker`/`queue` and the split-brain checker skips it (it counts them as *unattributed*).
//!   A non-OK status is `fail` only when it proves the message was not stored: the 400xx
//!   family (bad request, forbidden, topic not found... except 40800 request timeout),
//!   `HA_NOT_AVAILABLE` raised by the proxy before sending ("has no master now") or by the
//!   broker's in-sync check before appending, and a transport error that never got a TCP
//!   connection to the proxy (refused: the proxy is down). Other transport errors, `PROXY_TIMEOUT`,
//!   `MASTER/SLAVE_PERSISTENCE_TIMEOUT`, `INTERNAL_ERROR`, `TOO_MANY_REQUESTS` and the rest are
//!   `info` (unknown), and the worker continues as a new process.
//! - `pop` (a ReceiveMessage): `ok` with the delivered messages (value, queue, offset, group,
//!   the `store_host` the message was stored on), `ok` with `[]` on `MESSAGE_NOT_FOUND`, `fail`
//!   on another status or a transport error before any message arrived. What was received is
//!   then acked (AckMessage with the receipt handles); a failed ack only makes the message
//!   come back after its invisible time.
//!
//! FIFO: FIFO producers send with a `message_group` (one message at a time), FIFO consumers
//! receive through the FIFO consumer group, which [`setup`] creates with
//! `consumeMessageOrderly = true` (the proxy reads it to pop in order).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rocketraft_proxy::pb;
use rocketraft_proxy::pb::messaging_service_client::MessagingServiceClient;
use rocketraft_remoting::{request_code, response_code, RemotingCommand};
use serde_json::{json, Map, Value as Json};
use tonic::transport::{Channel, Endpoint};

use crate::cluster::Clients;
use crate::record::{Kind, Recorder};
use crate::workload::{FIFO_GROUP, FIFO_TOPIC, GROUP, INVISIBLE_MS, TOPIC};

/// Process numbers of the gRPC workers start here (Remoting workers count from 0).
pub const GRPC_PROCESS_BASE: u64 = 500_000;
/// Values sent through the proxy start here (the Remoting producers count from 1).
pub const GRPC_VALUE_BASE: i64 = 1_000_000_000;
const PATH: &str = "grpc";

/// Shape of the gRPC half.
#[derive(Debug, Clone)]
pub struct GrpcOptions {
    /// The proxies' gRPC addresses (`ip:port`): worker `i` starts on proxy `i` (mod their
    /// number) and moves to the next one after a transport error, as a client behind a load
    /// balancer reconnects to another proxy.
    pub proxies: Vec<String>,
    /// The broker sets a receive names, one after another (as a gRPC client does from
    /// QueryAssignment); empty: name none (the proxy takes the route's first set).
    pub sets: Vec<String>,
    pub producers: usize,
    pub fifo_producers: usize,
    pub consumers: usize,
    pub fifo_consumers: usize,
    pub interval: Duration,
}

impl GrpcOptions {
    /// Half of the default Remoting workload's workers, through `proxy`.
    pub fn new(proxy: &str) -> GrpcOptions {
        GrpcOptions {
            proxies: vec![proxy.to_string()],
            sets: Vec::new(),
            producers: 2,
            fifo_producers: 1,
            consumers: 1,
            fifo_consumers: 1,
            interval: Duration::from_millis(40),
        }
    }
}

/// Creates the consumer groups (the FIFO one consuming orderly) on the master of every set of
/// `sets`, retrying until `timeout`. Slaves copy subscription groups from the master.
pub async fn setup(
    clients: &Clients,
    namesrv: &str,
    sets: &[String],
    timeout: Duration,
) -> anyhow::Result<()> {
    for set in sets {
        setup_set(clients, namesrv, set, timeout).await?;
    }
    Ok(())
}

async fn setup_set(
    clients: &Clients,
    namesrv: &str,
    set: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = format!("{set} has no master registered");
    while tokio::time::Instant::now() < deadline {
        if let Some((Some(master), _)) = clients.named_broker_set(namesrv, set).await {
            let mut all = true;
            for (group, fifo) in [(GROUP, false), (FIFO_GROUP, true)] {
                let body = json!({
                    "groupName": group,
                    "consumeEnable": true,
                    "consumeMessageOrderly": fifo,
                });
                let request =
                    RemotingCommand::request(request_code::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
                        .with_body(serde_json::to_vec(&body)?);
                if let Err(e) = clients
                    .api
                    .call(&master, request, &[response_code::SUCCESS])
                    .await
                {
                    last = e.to_string();
                    all = false;
                }
            }
            if all {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("cannot create the consumer groups on {set}: {last}")
}

/// The proxy's address is no valid URI authority: no request can be sent (nothing stored).
#[derive(Debug, thiserror::Error)]
#[error("bad proxy address {addr}: {error}")]
struct BadProxyAddress {
    addr: String,
    error: tonic::transport::Error,
}

/// A gRPC client of a proxy, rebuilt after a transport error (on the next proxy, when there
/// are several).
pub struct Proxy {
    addrs: Vec<String>,
    current: usize,
    client: Option<MessagingServiceClient<Channel>>,
}

impl Proxy {
    pub fn new(addr: &str) -> Proxy {
        Proxy::among(&[addr.to_string()], 0)
    }

    /// A client of one of `addrs`, starting at `first` (mod their number).
    pub fn among(addrs: &[String], first: usize) -> Proxy {
        Proxy {
            current: first % addrs.len().max(1),
            addrs: addrs.to_vec(),
            client: None,
        }
    }

    /// The proxy this client talks to now.
    pub fn addr(&self) -> &str {
        self.addrs.get(self.current).map_or("", String::as_str)
    }

    fn get(&mut self) -> Result<MessagingServiceClient<Channel>, BadProxyAddress> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let addr = self.addr().to_string();
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|error| BadProxyAddress {
                addr: addr.clone(),
                error,
            })?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true);
        let client = MessagingServiceClient::new(endpoint.connect_lazy());
        self.client = Some(client.clone());
        Ok(client)
    }

    fn broken(&mut self) {
        self.client = None;
        if self.addrs.len() > 1 {
            self.current = (self.current + 1) % self.addrs.len();
        }
    }
}

fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource {
        resource_namespace: String::new(),
        name: name.to_string(),
    })
}

fn code_name(code: i32) -> String {
    pb::Code::try_from(code)
        .map(|c| c.as_str_name().to_string())
        .unwrap_or_else(|_| code.to_string())
}

/// Whether a non-OK send status proves the message was not stored.
pub fn not_stored(status: &pb::Status) -> bool {
    let code = status.code;
    if (40_000..41_000).contains(&code) && code != pb::Code::RequestTimeout as i32 {
        return true;
    }
    if (41_000..50_000).contains(&code)
        && code != pb::Code::TooManyRequests as i32
        && code != pb::Code::RequestTimeout as i32
    {
        // Payload too large, precondition failed, header fields too large: refused up front.
        return true;
    }
    // The broker's in-sync check runs before it appends, whatever code carries it.
    status
        .message
        .contains(crate::workload::IN_SYNC_REPLICAS_NOT_ENOUGH)
        || (code == pb::Code::HaNotAvailable as i32 && status.message.contains("has no master now"))
}

/// A transport error with its causes (tonic's message alone hides them).
fn transport_error(status: &tonic::Status) -> String {
    let mut text = format!("transport: {}", status.message());
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(&format!(": {cause_text}"));
        }
        source = cause.source();
    }
    text
}

/// The channel never reached the proxy (refused or timed-out TCP connect): the request was not
/// sent, so nothing was stored.
fn never_connected(error: &str) -> bool {
    error.contains("tcp connect error") || error.contains("Connection refused")
}

/// What one gRPC send came to.
#[derive(Debug, Clone, PartialEq)]
pub enum SendOutcome {
    Ok { offset: i64 },
    Fail(String),
    Info(String),
}

/// Classifies a SendMessage answer (or transport error).
pub fn classify_send(result: Result<pb::SendMessageResponse, tonic::Status>) -> SendOutcome {
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            let why = transport_error(&e);
            return if never_connected(&why) {
                SendOutcome::Fail(why)
            } else {
                SendOutcome::Info(why)
            };
        }
    };
    let entry = response.entries.first();
    let status = entry
        .and_then(|e| e.status.clone())
        .or(response.status.clone())
        .unwrap_or(pb::Status {
            code: pb::Code::InternalError as i32,
            message: "no status".to_string(),
        });
    if status.code == pb::Code::Ok as i32 {
        return match entry {
            Some(e) => SendOutcome::Ok { offset: e.offset },
            None => SendOutcome::Info("OK without an entry".to_string()),
        };
    }
    let why = format!("{} {}", code_name(status.code), status.message);
    if not_stored(&status) {
        SendOutcome::Fail(why)
    } else {
        SendOutcome::Info(why)
    }
}

/// Sends one value through the proxy and records it. Returns false when the outcome is unknown
/// (the worker then becomes a new process).
pub async fn send_one(
    proxy: &mut Proxy,
    recorder: &Recorder,
    process: u64,
    value: i64,
    topic: &str,
    group: Option<&str>,
) -> bool {
    let mut e = crate::workload::invoke_send(recorder, process, value, topic, group, PATH);
    e.insert("proxy".into(), json!(proxy.addr()));
    let started = std::time::Instant::now();
    let mut client = match proxy.get() {
        Ok(c) => c,
        Err(why) => {
            e.insert("error".into(), json!(why.to_string()));
            recorder.complete(process, Kind::Fail, "send", json!(value), e);
            return true;
        }
    };
    let mut request = tonic::Request::new(pb::SendMessageRequest {
        messages: vec![pb::Message {
            topic: resource(topic),
            user_properties: HashMap::new(),
            system_properties: Some(pb::SystemProperties {
                message_id: format!("JEPSEN{value:020}"),
                keys: vec![value.to_string()],
                message_type: if group.is_some() {
                    pb::MessageType::Fifo as i32
                } else {
                    pb::MessageType::Normal as i32
                },
                message_group: group.map(str::to_string),
                ..pb::SystemProperties::default()
            }),
            body: value.to_string().into_bytes(),
        }],
    });
    request.set_timeout(Duration::from_secs(5));
    let result = client.send_message(request).await;
    if result.is_err() {
        proxy.broken();
    }
    e.insert(
        "latency_ms".into(),
        json!(started.elapsed().as_secs_f64() * 1000.0),
    );
    match classify_send(result.map(tonic::Response::into_inner)) {
        SendOutcome::Ok { offset } => {
            e.insert("offset".into(), json!(offset));
            recorder.complete(process, Kind::Ok, "send", json!(value), e);
            true
        }
        SendOutcome::Fail(why) => {
            e.insert("error".into(), json!(why));
            recorder.complete(process, Kind::Fail, "send", json!(value), e);
            true
        }
        SendOutcome::Info(why) => {
            e.insert("error".into(), json!(why));
            recorder.complete(process, Kind::Info, "send", json!(value), e);
            false
        }
    }
}

/// The ReceiveMessage request of one pop: up to 16 messages, long polling for `poll`.
fn receive_request(
    topic: &str,
    group: &str,
    set: Option<&str>,
    poll: Duration,
) -> tonic::Request<pb::ReceiveMessageRequest> {
    let mut request = tonic::Request::new(pb::ReceiveMessageRequest {
        group: resource(group),
        message_queue: Some(pb::MessageQueue {
            topic: resource(topic),
            id: -1,
            broker: set.map(|name| pb::Broker {
                name: name.to_string(),
                id: 0,
                endpoints: None,
            }),
            ..pb::MessageQueue::default()
        }),
        filter_expression: Some(pb::FilterExpression {
            r#type: pb::FilterType::Tag as i32,
            expression: "*".into(),
        }),
        batch_size: 16,
        invisible_duration: Some(prost_types::Duration {
            seconds: INVISIBLE_MS / 1000,
            nanos: 0,
        }),
        auto_renew: false,
        long_polling_timeout: Some(prost_types::Duration {
            seconds: poll.as_secs() as i64,
            nanos: poll.subsec_nanos() as i32,
        }),
        attempt_id: None,
    });
    request.set_timeout(poll + Duration::from_secs(5));
    request
}

/// What one ReceiveMessage stream brought.
#[derive(Default)]
struct Received {
    /// The delivered messages, as the history records them.
    delivered: Vec<Json>,
    /// (message id, receipt handle) of each delivered message that can be acked.
    handles: Vec<(String, String)>,
    status: Option<pb::Status>,
    /// The transport error that ended the stream, if one did.
    broken: Option<String>,
}

/// A delivered message as the history records it, and its (message id, receipt handle).
fn delivered_entry(m: pb::Message) -> (Json, Option<(String, String)>) {
    let p = m.system_properties.unwrap_or_default();
    let value = std::str::from_utf8(&m.body)
        .ok()
        .and_then(|s| s.parse::<i64>().ok());
    let mut entry = Map::new();
    entry.insert("value".into(), value.map_or(Json::Null, |v| json!(v)));
    entry.insert("queue".into(), json!(p.queue_id));
    entry.insert("offset".into(), json!(p.queue_offset));
    entry.insert("store_host".into(), json!(p.store_host));
    if let Some(g) = &p.message_group {
        entry.insert("group".into(), json!(g));
    }
    let handle = p.receipt_handle.map(|h| (p.message_id, h));
    (Json::Object(entry), handle)
}

/// Reads a ReceiveMessage stream to its end (or its transport error).
async fn read_stream(
    stream: &mut tonic::Streaming<pb::ReceiveMessageResponse>,
    proxy: &mut Proxy,
) -> Received {
    let mut received = Received::default();
    loop {
        match stream.message().await {
            Ok(Some(item)) => match item.content {
                Some(pb::receive_message_response::Content::Status(s)) => received.status = Some(s),
                Some(pb::receive_message_response::Content::Message(m)) => {
                    let (entry, handle) = delivered_entry(m);
                    received.delivered.push(entry);
                    received.handles.extend(handle);
                }
                _ => {}
            },
            Ok(None) => break,
            Err(s) => {
                proxy.broken();
                received.broken = Some(transport_error(&s));
                break;
            }
        }
    }
    received
}

/// Acks the delivered messages `handles`; a refused or failed ack only brings them back later.
async fn ack(
    client: &mut MessagingServiceClient<Channel>,
    proxy: &mut Proxy,
    topic: &str,
    group: &str,
    handles: Vec<(String, String)>,
) {
    let request = pb::AckMessageRequest {
        group: resource(group),
        topic: resource(topic),
        entries: handles
            .into_iter()
            .map(|(message_id, receipt_handle)| pb::AckMessageEntry {
                message_id,
                receipt_handle,
                lite_topic: None,
            })
            .collect(),
    };
    let mut request = tonic::Request::new(request);
    request.set_timeout(Duration::from_secs(5));
    match client.ack_message(request).await {
        Ok(r) => {
            let r = r.into_inner();
            let bad = r
                .entries
                .iter()
                .filter(|x| {
                    x.status
                        .as_ref()
                        .is_none_or(|s| s.code != pb::Code::Ok as i32)
                })
                .count();
            if bad > 0 {
                tracing::debug!(bad, "acks refused; the messages will come back");
            }
        }
        Err(s) => {
            proxy.broken();
            tracing::debug!(error = %s, "ack failed; the messages will come back");
        }
    }
}

/// Records a failed pop (with its latency since `started`).
fn fail_pop<T>(
    recorder: &Recorder,
    process: u64,
    mut e: Map<String, Json>,
    why: String,
    started: std::time::Instant,
) -> Option<T> {
    e.insert("error".into(), json!(why));
    e.insert(
        "latency_ms".into(),
        json!(started.elapsed().as_secs_f64() * 1000.0),
    );
    recorder.complete(process, Kind::Fail, "pop", Json::Null, e);
    None
}

/// Records a pop's completion from what its stream brought: the number of messages delivered
/// and the handles to ack, or `None` when it failed.
fn complete_receive(
    recorder: &Recorder,
    process: u64,
    mut e: Map<String, Json>,
    received: Received,
    started: std::time::Instant,
) -> Option<(usize, Vec<(String, String)>)> {
    let Received {
        delivered,
        handles,
        status,
        broken,
    } = received;
    let latency = started.elapsed().as_secs_f64() * 1000.0;
    let code = status.as_ref().map(|s| s.code);
    if delivered.is_empty() {
        if code == Some(pb::Code::MessageNotFound as i32) && broken.is_none() {
            e.insert("latency_ms".into(), json!(latency));
            recorder.complete(process, Kind::Ok, "pop", Json::Array(vec![]), e);
            return Some((0, handles));
        }
        let why = broken.unwrap_or_else(|| match &status {
            Some(s) => format!("{} {}", code_name(s.code), s.message),
            None => "no status".to_string(),
        });
        return fail_pop(recorder, process, e, why, started);
    }
    // Messages arrived: they were delivered, whatever came after them.
    let count = delivered.len();
    e.insert("latency_ms".into(), json!(latency));
    if let Some(why) = broken {
        e.insert("error".into(), json!(why));
    }
    recorder.complete(process, Kind::Ok, "pop", Json::Array(delivered), e);
    Some((count, handles))
}

/// One ReceiveMessage (and the acks of what it got). Returns the number of messages delivered,
/// or `None` when it failed.
pub async fn receive_one(
    proxy: &mut Proxy,
    recorder: &Recorder,
    process: u64,
    topic: &str,
    group: &str,
    set: Option<&str>,
    poll: Duration,
) -> Option<usize> {
    let mut e = crate::workload::invoke_pop(recorder, process, topic, group, PATH);
    if let Some(set) = set {
        e.insert("set".into(), json!(set));
    }
    e.insert("proxy".into(), json!(proxy.addr()));
    let started = std::time::Instant::now();
    let mut client = match proxy.get() {
        Ok(c) => c,
        Err(why) => return fail_pop(recorder, process, e, why.to_string(), started),
    };
    let request = receive_request(topic, group, set, poll);
    let mut stream = match client.receive_message(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            proxy.broken();
            return fail_pop(recorder, process, e, transport_error(&status), started);
        }
    };
    let received = read_stream(&mut stream, proxy).await;
    let (count, handles) = complete_receive(recorder, process, e, received, started)?;
    if !handles.is_empty() {
        ack(&mut client, proxy, topic, group, handles).await;
    }
    Some(count)
}

/// The gRPC workers of the main phase; they run until `stop` fires.
pub async fn run(
    recorder: Recorder,
    options: GrpcOptions,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let next_value = Arc::new(AtomicI64::new(GRPC_VALUE_BASE));
    let producers = options.producers + options.fifo_producers;
    let workers = producers + options.consumers + options.fifo_consumers;
    let stride = workers.max(1) as u64;
    let mut tasks = Vec::new();
    for i in 0..workers {
        let (recorder, stop, next_value) = (recorder.clone(), stop.clone(), next_value.clone());
        let interval = options.interval;
        let mut proxy = Proxy::among(&options.proxies, i);
        let first = GRPC_PROCESS_BASE + i as u64;
        if i < producers {
            let fifo = i >= options.producers;
            let group = fifo.then(|| format!("grpc-g{}", i - options.producers));
            tasks.push(tokio::spawn(async move {
                let mut process = first;
                let topic = if fifo { FIFO_TOPIC } else { TOPIC };
                while !*stop.borrow() {
                    let value = next_value.fetch_add(1, Ordering::Relaxed);
                    if !send_one(
                        &mut proxy,
                        &recorder,
                        process,
                        value,
                        topic,
                        group.as_deref(),
                    )
                    .await
                    {
                        process += stride;
                    }
                    tokio::time::sleep(interval).await;
                }
            }));
        } else {
            let fifo = i >= producers + options.consumers;
            let sets = options.sets.clone();
            tasks.push(tokio::spawn(async move {
                let (topic, group) = if fifo {
                    (FIFO_TOPIC, FIFO_GROUP)
                } else {
                    (TOPIC, GROUP)
                };
                let mut turn = i;
                while !*stop.borrow() {
                    // Every set in turn (none named in the classic shape).
                    let set = (!sets.is_empty()).then(|| sets[turn % sets.len()].as_str());
                    turn += 1;
                    let got = receive_one(
                        &mut proxy,
                        &recorder,
                        first,
                        topic,
                        group,
                        set,
                        Duration::from_secs(1),
                    )
                    .await;
                    if got.is_none() {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    tokio::time::sleep(interval).await;
                }
            }));
        }
    }
    for task in tasks {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "a gRPC workload task panicked");
        }
    }
}

/// Completed `send`/`pop` operations per path (`grpc`, `remoting`): `{path: {f: {ok, fail,
/// info}}}`, plus the values acknowledged through one path and delivered through the other.
pub fn path_counts(events: &[crate::record::Event]) -> Json {
    use std::collections::BTreeMap;
    let mut counts: BTreeMap<String, BTreeMap<String, [usize; 3]>> = BTreeMap::new();
    let mut sent_by: HashMap<i64, String> = HashMap::new();
    let mut crossed = 0usize;
    let mut crossed_seen = std::collections::HashSet::new();
    for e in events.iter().filter(|e| !e.is_nemesis()) {
        let slot = match e.kind {
            Kind::Ok => 0,
            Kind::Fail => 1,
            Kind::Info => 2,
            Kind::Invoke => continue,
        };
        if e.f != "send" && e.f != "pop" {
            continue;
        }
        let path = e.extra_str("path").unwrap_or("remoting").to_string();
        counts
            .entry(path.clone())
            .or_default()
            .entry(e.f.clone())
            .or_default()[slot] += 1;
        if e.f == "send" && e.kind == Kind::Ok {
            if let Some(v) = e.value.as_i64() {
                sent_by.insert(v, path);
            }
        } else if e.f == "pop" && e.kind == Kind::Ok {
            for m in e.value.as_array().into_iter().flatten() {
                if let Some(v) = m.get("value").and_then(Json::as_i64) {
                    if sent_by.get(&v).is_some_and(|p| *p != path) && crossed_seen.insert(v) {
                        crossed += 1;
                    }
                }
            }
        }
    }
    let mut out = Map::new();
    for (path, fs) in counts {
        let mut m = Map::new();
        for (f, [ok, fail, info]) in fs {
            m.insert(f, json!({"ok": ok, "fail": fail, "info": info}));
        }
        out.insert(path, Json::Object(m));
    }
    out.insert("delivered_through_the_other_path".into(), json!(crossed));
    Json::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::extra;

    fn response(code: pb::Code, message: &str, offset: i64) -> pb::SendMessageResponse {
        let s = pb::Status {
            code: code as i32,
            message: message.to_string(),
        };
        pb::SendMessageResponse {
            status: Some(s.clone()),
            entries: vec![pb::SendResultEntry {
                status: Some(s),
                offset,
                ..pb::SendResultEntry::default()
            }],
        }
    }

    #[test]
    fn paths_are_counted_apart() {
        let r = Recorder::in_memory();
        r.complete(
            0,
            Kind::Ok,
            "send",
            json!(1),
            extra([("path", json!("remoting"))]),
        );
        r.complete(
            GRPC_PROCESS_BASE,
            Kind::Ok,
            "send",
            json!(GRPC_VALUE_BASE),
            extra([("path", json!("grpc"))]),
        );
        r.complete(
            GRPC_PROCESS_BASE + 1,
            Kind::Info,
            "send",
            json!(GRPC_VALUE_BASE + 1),
            extra([("path", json!("grpc"))]),
        );
        r.complete(
            3,
            Kind::Ok,
            "pop",
            json!([{"value": GRPC_VALUE_BASE}, {"value": 1}]),
            extra([("path", json!("remoting"))]),
        );
        let c = path_counts(&r.events());
        assert_eq!(c["grpc"]["send"]["ok"], 1);
        assert_eq!(c["grpc"]["send"]["info"], 1);
        assert_eq!(c["remoting"]["send"]["ok"], 1);
        assert_eq!(c["remoting"]["pop"]["ok"], 1);
        assert_eq!(c["delivered_through_the_other_path"], 1);
    }

    #[test]
    fn send_statuses_map_to_ok_fail_and_info() {
        assert_eq!(
            classify_send(Ok(response(pb::Code::Ok, "OK", 42))),
            SendOutcome::Ok { offset: 42 }
        );
        for (code, message) in [
            (pb::Code::BadRequest, "x"),
            (pb::Code::TopicNotFound, "x"),
            (pb::Code::Forbidden, "x"),
            (pb::Code::MessagePropertyConflictWithType, "x"),
            (
                pb::Code::HaNotAvailable,
                "broker set broker-a has no master now",
            ),
            (
                pb::Code::HaNotAvailable,
                "broker answered 14: in-sync replicas not enough: 1 < 2",
            ),
        ] {
            assert!(
                matches!(
                    classify_send(Ok(response(code, message, 0))),
                    SendOutcome::Fail(_)
                ),
                "{code:?} {message}"
            );
        }
        for (code, message) in [
            (pb::Code::ProxyTimeout, "broker unreachable"),
            (pb::Code::MasterPersistenceTimeout, "x"),
            (pb::Code::SlavePersistenceTimeout, "x"),
            (pb::Code::InternalError, "x"),
            (pb::Code::TooManyRequests, "x"),
            (pb::Code::RequestTimeout, "x"),
            (
                pb::Code::HaNotAvailable,
                "broker answered 14: some other reason",
            ),
        ] {
            assert!(
                matches!(
                    classify_send(Ok(response(code, message, 0))),
                    SendOutcome::Info(_)
                ),
                "{code:?} {message}"
            );
        }
        assert!(matches!(
            classify_send(Err(tonic::Status::unavailable("connection reset by peer"))),
            SendOutcome::Info(_)
        ));
        assert!(matches!(
            classify_send(Err(tonic::Status::unavailable(
                "error trying to connect: tcp connect error: Connection refused (os error 111)"
            ))),
            SendOutcome::Fail(_)
        ));
    }
}
