//! The queue workload over Remoting (its gRPC half, through the proxy, is
//! [`crate::grpc_queue`]): producers send unique integers to the broker set's master
//! (found through the NameServer), FIFO producers send one message group each (one message at a
//! time, so their acknowledgement order is the group's order), consumers POP and ack (FIFO
//! consumers with `order = true`); after the faults, a final drain pops until every
//! acknowledged value was seen or nothing new arrives for a while.
//!
//! With several broker sets (`--sets N`) the topics get queues on every set's master; a
//! producer sends to the sets in turn and leaves a set whose send failed (or that has no
//! master known) aside for 1 s, as RocketMQ's producer does with `sendLatencyFaultEnable`; a
//! FIFO producer's message group stays on one set (`g<k>` on set k), so its sends fail while
//! that set fails over; consumers and the drain pop every set in turn. Every Remoting
//! operation records its `set`.
//!
//! Every operation is recorded ([`crate::record`]): `send` (value; `ok` with the broker, topic,
//! queue and offset that acknowledged it), `pop` (`ok` with the delivered messages). A send
//! whose outcome is unknown (timeout, closed connection, an error after the broker may have
//! stored it, or a stored-but-not-durable status) is `info`; only a send that never reached a
//! broker (connection refused, no master known) is `fail`. A worker whose operation ended
//! `info` continues as a new process (Jepsen's convention), so a process never has two
//! operations in flight.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rocketraft_common::consts::property;
use rocketraft_common::message::MessageExt;
use rocketraft_common::TopicConfig;
use rocketraft_remoting::api::{ApiError, SendRequest};
use rocketraft_remoting::{response_code, RemotingError};
use serde_json::{json, Map, Value as Json};

use crate::cluster::Clients;
use crate::record::{extra, Kind, Process, Recorder};

pub const TOPIC: &str = "jepsen-queue";
pub const FIFO_TOPIC: &str = "jepsen-fifo";
pub const GROUP: &str = "jepsen-consumer";
pub const FIFO_GROUP: &str = "jepsen-fifo-consumer";
const PRODUCER_GROUP: &str = "jepsen-producer";
/// How long a popped message stays invisible before it is delivered again.
pub const INVISIBLE_MS: i64 = 8_000;

/// How a broker's remark starts when its in-sync check refused a send before appending it.
/// Apache RocketMQ answers IN_SYNC_REPLICAS_NOT_ENOUGH with the generic SYSTEM_ERROR code and
/// this remark (and the proxy passes the remark on in its gRPC status), so the remark is the
/// only sign on the wire that the message was not stored. Our broker words it the same
/// (`rocketraft_broker::ha::AckError`'s Display, which defines no constant of it).
pub(crate) const IN_SYNC_REPLICAS_NOT_ENOUGH: &str = "in-sync replicas not enough";

/// Shape of the workload.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    pub producers: usize,
    pub fifo_producers: usize,
    pub consumers: usize,
    pub fifo_consumers: usize,
    /// Pause between a worker's operations.
    pub interval: Duration,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            producers: 3,
            fifo_producers: 2,
            consumers: 2,
            fifo_consumers: 1,
            interval: Duration::from_millis(40),
        }
    }
}

/// Where a worker sends in one broker set: the NameServers' master of the set, or, after
/// failures, the next replica.
#[derive(Clone)]
pub struct Target {
    pub namesrv: String,
    /// The broker set.
    pub set: String,
    current: Option<String>,
    replicas: Vec<String>,
    rotation: usize,
    /// The last failure named the set's master ("a slave of ADDR"), which is now `current`.
    redirected: bool,
}

impl Target {
    /// A target in the classic shape's one set (`broker-a`).
    pub fn new(namesrv: &str, replicas: Vec<String>) -> Target {
        Target::in_set(namesrv, crate::cluster::BROKER_NAME, replicas)
    }

    /// A target in broker set `set`.
    pub fn in_set(namesrv: &str, set: &str, replicas: Vec<String>) -> Target {
        Target {
            namesrv: namesrv.to_string(),
            set: set.to_string(),
            current: None,
            replicas,
            rotation: 0,
            redirected: false,
        }
    }

    /// The broker to talk to now.
    pub async fn get(&mut self, clients: &Clients) -> Option<String> {
        if self.current.is_none() {
            if let Some((master, replicas)) =
                clients.named_broker_set(&self.namesrv, &self.set).await
            {
                if !replicas.is_empty() {
                    for r in replicas {
                        if !self.replicas.contains(&r) {
                            self.replicas.push(r);
                        }
                    }
                }
                self.current = master;
            }
        }
        if self.current.is_none() && !self.replicas.is_empty() {
            self.rotation = (self.rotation + 1) % self.replicas.len();
            self.current = self.replicas.get(self.rotation).cloned();
        }
        self.current.clone()
    }

    /// Whether the last failure named the set's master (and clears it): the set is not down,
    /// the next send goes to its master.
    pub fn take_redirect(&mut self) -> bool {
        std::mem::take(&mut self.redirected)
    }

    /// The broker failed us with `error`: go to the master it names ("... a slave of ADDR"),
    /// else try the next replica.
    pub fn failed(&mut self, broker: &str, error: &str) {
        if let Some(rest) = error.split("slave of ").nth(1) {
            let addr: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect();
            if addr.contains(':') && addr != broker && self.replicas.contains(&addr) {
                self.current = Some(addr);
                self.redirected = true;
                return;
            }
        }
        if self.current.as_deref() == Some(broker) {
            self.current = None;
            if !self.replicas.is_empty() {
                self.rotation = (self.rotation + 1) % self.replicas.len();
                self.current = self.replicas.get(self.rotation).cloned();
            }
        }
    }
}

/// Errors that prove the send was not stored: no connection, or the in-sync check that the
/// broker makes before it appends.
fn is_definite_failure(error: &ApiError) -> bool {
    match error {
        ApiError::Remoting(RemotingError::Connect { .. }) => true,
        ApiError::Refused(r) => r.remark.starts_with(IN_SYNC_REPLICAS_NOT_ENOUGH),
        _ => false,
    }
}

/// Records the invocation of a send of `value` to `topic` (in FIFO `group`, if any) through
/// `path`; returns the invocation's extra fields, which its completion carries too.
pub(crate) fn invoke_send(
    recorder: &Recorder,
    process: u64,
    value: i64,
    topic: &str,
    group: Option<&str>,
    path: &str,
) -> Map<String, Json> {
    let mut invoke_extra = extra([("topic", json!(topic)), ("path", json!(path))]);
    if let Some(g) = group {
        invoke_extra.insert("group".into(), json!(g));
    }
    recorder.record(
        Process::Client(process),
        Kind::Invoke,
        "send",
        json!(value),
        invoke_extra.clone(),
    );
    invoke_extra
}

/// The Remoting send of `value` (keyed by it, sharded by its FIFO group if any).
fn send_request(value: i64, topic: &str, group: Option<&str>) -> SendRequest {
    let mut properties = BTreeMap::new();
    if let Some(g) = group {
        properties.insert(property::SHARDING_KEY.to_string(), g.to_string());
    }
    properties.insert("KEYS".to_string(), value.to_string());
    SendRequest {
        producer_group: PRODUCER_GROUP.to_string(),
        topic: topic.to_string(),
        queue_id: -1,
        body: Bytes::from(value.to_string()),
        properties,
        ..SendRequest::default()
    }
}

/// How a send ended, for the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Ok,
    /// Certainly not stored (or no broker to send to).
    Failed,
    /// Unknown: the worker becomes a new process.
    Unknown,
}

/// Sends one value and records it.
#[allow(clippy::too_many_arguments)]
async fn send_one(
    clients: &Clients,
    recorder: &Recorder,
    target: &mut Target,
    process: u64,
    value: i64,
    topic: &str,
    group: Option<&str>,
) -> Sent {
    let invoke_extra = invoke_send(recorder, process, value, topic, group, "remoting");
    let started = std::time::Instant::now();
    let Some(broker) = target.get(clients).await else {
        let mut e = invoke_extra;
        e.insert("error".into(), json!("no master known"));
        e.insert("set".into(), json!(target.set));
        recorder.complete(process, Kind::Fail, "send", json!(value), e);
        return Sent::Failed;
    };
    let result = clients
        .api
        .send(&broker, &send_request(value, topic, group))
        .await;
    let mut e = invoke_extra;
    e.insert("broker".into(), json!(broker));
    e.insert("set".into(), json!(target.set));
    e.insert(
        "latency_ms".into(),
        json!(started.elapsed().as_secs_f64() * 1000.0),
    );
    match result {
        Ok(sent) if sent.code == response_code::SUCCESS => {
            e.insert("queue".into(), json!(sent.queue_id));
            e.insert("offset".into(), json!(sent.queue_offset));
            recorder.complete(process, Kind::Ok, "send", json!(value), e);
            Sent::Ok
        }
        Ok(sent) => {
            // Stored on the master, not (yet) durable as asked: unknown.
            e.insert("error".into(), json!(format!("status {}", sent.code)));
            recorder.complete(process, Kind::Info, "send", json!(value), e);
            Sent::Unknown
        }
        Err(error) => {
            target.failed(&broker, &error.to_string());
            e.insert("error".into(), json!(error.to_string()));
            if is_definite_failure(&error) {
                recorder.complete(process, Kind::Fail, "send", json!(value), e);
                Sent::Failed
            } else {
                recorder.complete(process, Kind::Info, "send", json!(value), e);
                Sent::Unknown
            }
        }
    }
}

/// A popped message as the history records it.
fn delivered_entry(m: &MessageExt) -> Json {
    let value = std::str::from_utf8(&m.message.body)
        .ok()
        .and_then(|s| s.parse::<i64>().ok());
    let mut entry = Map::new();
    entry.insert("value".into(), value.map_or(Json::Null, |v| json!(v)));
    entry.insert("queue".into(), json!(m.queue_id));
    entry.insert("offset".into(), json!(m.queue_offset));
    if let Some(g) = m.message.property(property::SHARDING_KEY) {
        entry.insert("group".into(), json!(g));
    }
    Json::Object(entry)
}

/// Records the invocation of a pop of `topic` for consumer `group` through `path`; returns the
/// invocation's extra fields.
pub(crate) fn invoke_pop(
    recorder: &Recorder,
    process: u64,
    topic: &str,
    group: &str,
    path: &str,
) -> Map<String, Json> {
    let e = extra([
        ("topic", json!(topic)),
        ("group", json!(group)),
        ("path", json!(path)),
    ]);
    recorder.record(
        Process::Client(process),
        Kind::Invoke,
        "pop",
        Json::Null,
        e.clone(),
    );
    e
}

/// Acks every popped message; a failed ack only brings the message back later.
async fn ack_all(
    clients: &Clients,
    broker: &str,
    group: &str,
    topic: &str,
    messages: &[MessageExt],
) {
    for m in messages {
        if let Err(e) = clients.api.ack(broker, group, topic, m).await {
            tracing::debug!(error = %e, "ack failed; the message will come back");
        }
    }
}

/// Pops once (and acks what it got). Returns the number of messages delivered, or `None` when
/// the pop failed (recorded `fail`: a pop that fails delivers nothing we count).
#[allow(clippy::too_many_arguments)]
pub async fn pop_one(
    clients: &Clients,
    recorder: &Recorder,
    target: &mut Target,
    process: u64,
    topic: &str,
    group: &str,
    order: bool,
    poll_ms: i64,
) -> Option<usize> {
    invoke_pop(recorder, process, topic, group, "remoting");
    let started = std::time::Instant::now();
    let Some(broker) = target.get(clients).await else {
        recorder.complete(
            process,
            Kind::Fail,
            "pop",
            Json::Null,
            extra([
                ("error", json!("no master known")),
                ("path", json!("remoting")),
            ]),
        );
        return None;
    };
    let result = clients
        .api
        .pop(&broker, group, topic, -1, 16, INVISIBLE_MS, poll_ms, order)
        .await;
    let latency = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(messages) => {
            let delivered = messages.iter().map(delivered_entry).collect();
            recorder.complete(
                process,
                Kind::Ok,
                "pop",
                Json::Array(delivered),
                extra([
                    ("broker", json!(broker)),
                    ("set", json!(target.set)),
                    ("topic", json!(topic)),
                    ("path", json!("remoting")),
                    ("latency_ms", json!(latency)),
                ]),
            );
            ack_all(clients, &broker, group, topic, &messages).await;
            Some(messages.len())
        }
        Err(error) => {
            target.failed(&broker, &error.to_string());
            recorder.complete(
                process,
                Kind::Fail,
                "pop",
                Json::Null,
                extra([
                    ("broker", json!(broker)),
                    ("error", json!(error.to_string())),
                    ("path", json!("remoting")),
                    ("latency_ms", json!(latency)),
                ]),
            );
            None
        }
    }
}

/// Creates both topics on every set's master (retrying until `timeout`): a topic's queues
/// spread over every set, as `rocketraft admin topic create` puts them.
pub async fn create_topics(
    clients: &Clients,
    namesrv: &str,
    sets: &[String],
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pending: Vec<String> = sets.to_vec();
    let mut last = String::from("no master registered");
    while tokio::time::Instant::now() < deadline {
        let mut still = Vec::new();
        for set in pending {
            let Some((Some(master), _)) = clients.named_broker_set(namesrv, &set).await else {
                last = format!("{set} has no master registered");
                still.push(set);
                continue;
            };
            let mut fifo = TopicConfig::new(FIFO_TOPIC, 4);
            fifo.order = true;
            let a = clients
                .api
                .create_topic(&master, &TopicConfig::new(TOPIC, 4))
                .await;
            let b = clients.api.create_topic(&master, &fifo).await;
            match (a, b) {
                (Ok(()), Ok(())) => {}
                (Err(e), _) | (_, Err(e)) => {
                    last = format!("{set}: {e}");
                    still.push(set);
                }
            }
        }
        pending = still;
        if pending.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("cannot create the workload's topics: {last}")
}

/// How long a set whose send failed is left aside by a producer (RocketMQ's producer
/// isolates a failed broker for a while: `sendLatencyFaultEnable`). Short, so that a set's
/// gaps between acknowledged sends measure its own unavailability, not this backoff.
const SET_ISOLATION: Duration = Duration::from_secs(1);

/// One worker's targets, one per broker set, and the sets it left aside.
#[derive(Clone)]
pub struct Sets {
    targets: Vec<Target>,
    down_until: Vec<Option<tokio::time::Instant>>,
    next: usize,
}

impl Sets {
    /// `sets`: (set name, its replicas) for every set; the worker starts at set `first`.
    pub fn new(namesrv: &str, sets: &[(String, Vec<String>)], first: usize) -> Sets {
        let targets: Vec<Target> = sets
            .iter()
            .map(|(set, replicas)| Target::in_set(namesrv, set, replicas.clone()))
            .collect();
        let n = targets.len().max(1);
        Sets {
            down_until: vec![None; targets.len()],
            targets,
            next: first % n,
        }
    }

    /// The next set in round robin that was not left aside lately (any, when all were).
    fn next_index(&mut self) -> usize {
        let n = self.targets.len().max(1);
        let now = tokio::time::Instant::now();
        let start = self.next;
        self.next = (self.next + 1) % n;
        (0..n)
            .map(|i| (start + i) % n)
            .find(|i| {
                self.down_until
                    .get(*i)
                    .copied()
                    .flatten()
                    .is_none_or(|until| now >= until)
            })
            .unwrap_or(start)
    }

    /// The target of the next set a send goes to.
    fn for_send(&mut self) -> usize {
        self.next_index()
    }

    /// The target of the next set a pop asks (every set in turn).
    fn for_pop(&mut self) -> usize {
        let n = self.targets.len().max(1);
        let i = self.next;
        self.next = (self.next + 1) % n;
        i
    }

    /// Leaves set `i` aside for [`SET_ISOLATION`].
    fn failed(&mut self, i: usize) {
        if let Some(slot) = self.down_until.get_mut(i) {
            *slot = Some(tokio::time::Instant::now() + SET_ISOLATION);
        }
    }

    fn succeeded(&mut self, i: usize) {
        if let Some(slot) = self.down_until.get_mut(i) {
            *slot = None;
        }
    }

    fn target(&mut self, i: usize) -> Option<&mut Target> {
        self.targets.get_mut(i)
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

/// What every worker of the main phase shares.
#[derive(Clone)]
struct Workers {
    clients: Clients,
    recorder: Recorder,
    sets: Sets,
    stop: tokio::sync::watch::Receiver<bool>,
    interval: Duration,
}

impl Workers {
    /// A producer: sends the next value until `stop`, becoming process `+ stride` after every
    /// send of unknown outcome. A plain producer spreads its sends over every set in turn and
    /// leaves a set whose send failed aside for a while; a FIFO producer (`group`) stays on
    /// `fifo_set`, as a message group stays on one queue across sets (its sends fail while its
    /// set fails over).
    fn spawn_producer(
        self,
        first: u64,
        stride: u64,
        next_value: Arc<AtomicI64>,
        group: Option<String>,
        fifo_set: usize,
    ) -> tokio::task::JoinHandle<()> {
        let mut w = self;
        tokio::spawn(async move {
            let mut process = first;
            let topic = if group.is_some() { FIFO_TOPIC } else { TOPIC };
            while !*w.stop.borrow() {
                let value = next_value.fetch_add(1, Ordering::Relaxed);
                let group = group.as_deref();
                let i = if group.is_some() {
                    fifo_set
                } else {
                    w.sets.for_send()
                };
                let Some(target) = w.sets.target(i) else {
                    return;
                };
                let outcome = send_one(
                    &w.clients,
                    &w.recorder,
                    target,
                    process,
                    value,
                    topic,
                    group,
                )
                .await;
                // A slave that names the new master is a redirect, not a set in trouble.
                let redirected = w.sets.target(i).is_some_and(Target::take_redirect);
                match outcome {
                    Sent::Ok => w.sets.succeeded(i),
                    Sent::Failed if redirected => {}
                    Sent::Failed => w.sets.failed(i),
                    Sent::Unknown => {
                        if !redirected {
                            w.sets.failed(i);
                        }
                        process += stride;
                    }
                }
                tokio::time::sleep(w.interval).await;
            }
        })
    }

    /// A consumer: pops (in order when `fifo`) until `stop`, from every set in turn.
    fn spawn_consumer(self, process: u64, fifo: bool) -> tokio::task::JoinHandle<()> {
        let mut w = self;
        tokio::spawn(async move {
            let (topic, group) = if fifo {
                (FIFO_TOPIC, FIFO_GROUP)
            } else {
                (TOPIC, GROUP)
            };
            while !*w.stop.borrow() {
                let i = w.sets.for_pop();
                let Some(target) = w.sets.target(i) else {
                    return;
                };
                let popped = pop_one(
                    &w.clients,
                    &w.recorder,
                    target,
                    process,
                    topic,
                    group,
                    fifo,
                    500,
                )
                .await;
                if popped.is_none() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                tokio::time::sleep(w.interval).await;
            }
        })
    }
}

/// The workers of the main phase; they run until `stop` fires. `sets`: (set name, replicas)
/// of every broker set.
pub async fn run_queue(
    clients: Clients,
    recorder: Recorder,
    namesrv: String,
    sets: Vec<(String, Vec<String>)>,
    options: QueueOptions,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let next_value = Arc::new(AtomicI64::new(1));
    let workers =
        options.producers + options.fifo_producers + options.consumers + options.fifo_consumers;
    let stride = workers as u64;
    let mut tasks = Vec::new();
    let mut id = 0u64;
    let base = |first: usize| Workers {
        clients: clients.clone(),
        recorder: recorder.clone(),
        sets: Sets::new(&namesrv, &sets, first),
        stop: stop.clone(),
        interval: options.interval,
    };
    for i in 0..(options.producers + options.fifo_producers) {
        let fifo = i >= options.producers;
        let group = fifo.then(|| format!("g{}", i - options.producers));
        // FIFO group g<k> lives on set k (mod the sets).
        let fifo_set = i.saturating_sub(options.producers) % sets.len().max(1);
        tasks.push(base(i).spawn_producer(id, stride, next_value.clone(), group, fifo_set));
        id += 1;
    }
    for i in 0..(options.consumers + options.fifo_consumers) {
        let fifo = i >= options.consumers;
        tasks.push(base(i).spawn_consumer(id, fifo));
        id += 1;
    }
    for task in tasks {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "a workload task panicked");
        }
    }
}

/// The final drain: pops both topics from every set until every acknowledged value was
/// delivered, or nothing new arrived for `quiet` (longer than the invisible time, so un-acked
/// messages come back), or `limit` passed. Process ids from `first_process`.
pub async fn drain(
    clients: &Clients,
    recorder: &Recorder,
    namesrv: &str,
    sets: Vec<(String, Vec<String>)>,
    first_process: u64,
    quiet: Duration,
    limit: Duration,
) {
    let start = tokio::time::Instant::now();
    let mut last_new = start;
    let mut targets = Sets::new(namesrv, &sets, 0);
    loop {
        let acked = acknowledged_undelivered(recorder);
        if acked == 0 {
            eprintln!("  drain: every acknowledged message delivered");
            break;
        }
        if last_new.elapsed() > quiet || start.elapsed() > limit {
            eprintln!("  drain: giving up with {acked} acknowledged message(s) not delivered");
            break;
        }
        let mut got = 0;
        for _ in 0..targets.len() {
            let i = targets.for_pop();
            let Some(target) = targets.target(i) else {
                break;
            };
            for (j, (topic, group, order)) in
                [(TOPIC, GROUP, false), (FIFO_TOPIC, FIFO_GROUP, true)]
                    .into_iter()
                    .enumerate()
            {
                got += pop_one(
                    clients,
                    recorder,
                    target,
                    first_process + j as u64,
                    topic,
                    group,
                    order,
                    300,
                )
                .await
                .unwrap_or(0);
            }
        }
        if got > 0 {
            last_new = tokio::time::Instant::now();
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Acknowledged sends not delivered yet.
fn acknowledged_undelivered(recorder: &Recorder) -> usize {
    crate::queue_check::check(&recorder.events()).lost_count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_go_round_the_sets_and_leave_a_failed_one_aside() {
        let sets = vec![
            ("broker-a".to_string(), Vec::new()),
            ("broker-b".to_string(), Vec::new()),
            ("broker-c".to_string(), Vec::new()),
        ];
        let mut s = Sets::new("ns:9876", &sets, 1);
        assert_eq!(s.len(), 3);
        let order: Vec<usize> = (0..4).map(|_| s.for_send()).collect();
        assert_eq!(order, [1, 2, 0, 1]);
        s.failed(2);
        let order: Vec<usize> = (0..4).map(|_| s.for_send()).collect();
        assert!(!order.contains(&2), "{order:?}");
        s.succeeded(2);
        let order: Vec<usize> = (0..3).map(|_| s.for_send()).collect();
        assert!(order.contains(&2), "{order:?}");
        // Every set left aside: sends still go somewhere.
        for i in 0..3 {
            s.failed(i);
        }
        assert!(s.for_send() < 3);
        // Pops ask every set in turn, failed or not.
        let pops: std::collections::BTreeSet<usize> = (0..3).map(|_| s.for_pop()).collect();
        assert_eq!(pops.len(), 3);
        assert_eq!(
            s.target(1).map(|t| t.set.clone()).as_deref(),
            Some("broker-b")
        );
    }

    #[test]
    fn a_slave_naming_the_master_is_a_redirect() {
        let (a, b) = ("10.77.0.41:10911", "10.77.0.42:10911");
        let mut t = Target::in_set("ns:9876", "broker-b", vec![a.to_string(), b.to_string()]);
        t.failed(
            a,
            &format!(
                "server answered code 14: not the master: this broker is a slave of {b} (epoch 2)"
            ),
        );
        assert!(t.take_redirect());
        assert!(!t.take_redirect());
        assert_eq!(t.current.as_deref(), Some(b));
        // A broker that is gone is no redirect: the replicas are tried in turn.
        t.failed(b, "failed to connect: Connection refused");
        assert!(!t.take_redirect());
        assert!(t.current.as_deref().is_some_and(|c| c == a || c == b));
    }
}
