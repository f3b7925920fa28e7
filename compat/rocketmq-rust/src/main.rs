//! Drives rocketmq-client-rust 1.0.0 (a third-party RocketMQ Remoting client) against a running
//! Rocketraft NameServer and broker, through the client's own public API only, and prints one JSON
//! line per event for the test that runs it (tests/compat/compat_rocketmq_rust.rs).
//!
//! `lookup-trace` (the one scenario): a producer with message trace on (`enable_trace`, the
//! client's `AsyncTraceDispatcher` writing to `RMQ_SYS_TRACE_TOPIC`) sends COUNT messages with
//! KEYS `order-<i> lookup-all`; a push consumer with trace on receives them; then the producer's
//! `query_message` (QUERY_MESSAGE by key) and `view_message` (VIEW_MESSAGE_BY_ID for the offset
//! message id; for the unique id the client falls back to QUERY_MESSAGE with the unique-key flag)
//! find them. Environment: NAMESRV, TOPIC, COUNT.
//!
//! `orderly`: an orderly push consumer (`MessageListenerOrderly`, which consumes a queue only
//! while it holds the queue's lock: LOCK_BATCH_MQ / UNLOCK_BATCH_MQ) of group
//! `rr_compat_orderly_cg` receives the first half of COUNT messages per queue over QUEUES queues
//! (sent with a queue selector, body `q<queue>-<n>`); a second consumer of the group joins, the
//! queues are rebalanced between the two, and the second half is sent. Every receipt is printed
//! with a global sequence number, the consumer's name and the queue.
//!
//! `lite-pull`: a `DefaultLitePullConsumer` in subscribe mode polls every one of COUNT messages
//! sent over the topic's queues, commits, and reports its committed offsets; a second one of
//! another group, in assign mode, takes queue 0, seeks to offset 2 and polls, seeks to the
//! beginning and polls again, and commits.
//!
//! `broadcast`: two push consumers of group `rr_compat_bcast_cg` in the BROADCASTING model each
//! receive every one of COUNT messages (their offsets are kept by the clients).
//!
//! `sql`: COUNT messages with the user property `a` = their index and tags `even`/`odd`; a push
//! consumer subscribed with `MessageSelector.bySql(SQL)` receives (EXPECT of them, then a second
//! more to catch extras), and a consumer with the invalid expression BAD_SQL fails to start (the
//! client checks its subscription with CHECK_CLIENT_CONFIG).
//!
//! `reset`: a push consumer of group `rr_compat_reset_cg` consumes COUNT messages, prints
//! `ready_for_reset`, and keeps consuming until it has received every message twice (the test
//! resets the group's offsets to the earliest meanwhile) or 60 s pass.
//!
//! `request-reply`: a responder (push consumer of `rr_compat_rr_cg` and a producer) answers each
//! request with `MessageUtil::create_reply_message` (SEND_REPLY_MESSAGE_V2); a requester's
//! `request` sends COUNT requests and prints each reply it gets back
//! (PUSH_REPLY_MESSAGE_TO_CLIENT).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cheetah_string::CheetahString;
use rocketmq_client_rust::{
    ClientConfig, ClientRuntime, ClientRuntimeConfig, ConsumeConcurrentlyContext,
    ConsumeConcurrentlyStatus, ConsumeOrderlyContext, ConsumeOrderlyStatus, DefaultMQProducer,
    DefaultMQPushConsumer, MQPushConsumer, MessageListenerConcurrently, MessageListenerOrderly,
};
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_single::Message;
use rocketmq_model::common::message::MessageTrait;
use rocketmq_runtime::{RuntimeConfig, RuntimeOwner};
use serde_json::json;

type Failure = Box<dyn std::error::Error + Send + Sync>;

fn emit(v: serde_json::Value) {
    println!("{v}");
}

fn env(name: &str) -> Result<String, Failure> {
    std::env::var(name).map_err(|_| format!("{name} is not set").into())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn describe(m: &MessageExt) -> serde_json::Value {
    let prop = |k: &'static str| {
        m.property(&CheetahString::from_static_str(k))
            .map(|v| v.to_string())
    };
    json!({
        "topic": m.topic().to_string(),
        "body": m.body().map(|b| String::from_utf8_lossy(&b).into_owned()),
        "keys": prop("KEYS"),
        "uniq": prop("UNIQ_KEY"),
        "msgId": m.msg_id().to_string(),
        "queueOffset": m.queue_offset(),
    })
}

/// Records what the push consumer received.
struct Collect(Arc<Mutex<Vec<serde_json::Value>>>);

impl MessageListenerConcurrently for Collect {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _context: &ConsumeConcurrentlyContext,
    ) -> rocketmq_client_rust::ClientResult<ConsumeConcurrentlyStatus> {
        let mut got = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for m in msgs {
            got.push(describe(m));
        }
        Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
    }
}

/// Records what an orderly consumer received: (global sequence, consumer, queue, body).
struct Ordered {
    name: &'static str,
    seq: Arc<std::sync::atomic::AtomicU64>,
    got: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl MessageListenerOrderly for Ordered {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        context: &mut ConsumeOrderlyContext,
    ) -> rocketmq_client_rust::ClientResult<ConsumeOrderlyStatus> {
        context.set_auto_commit(true);
        let mut got = self.got.lock().unwrap_or_else(|e| e.into_inner());
        for m in msgs {
            let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            got.push(json!({
                "event": "ordered",
                "seq": seq,
                "consumer": self.name,
                "queueId": m.queue_id(),
                "body": m.body().map(|b| String::from_utf8_lossy(&b).into_owned()),
            }));
        }
        Ok(ConsumeOrderlyStatus::Success)
    }
}

async fn orderly_consumer(
    runtime: Arc<ClientRuntime>,
    namesrv: &str,
    topic: &str,
    name: &'static str,
    seq: Arc<std::sync::atomic::AtomicU64>,
    got: Arc<Mutex<Vec<serde_json::Value>>>,
) -> Result<DefaultMQPushConsumer, Failure> {
    let mut consumer = DefaultMQPushConsumer::builder(runtime)
        .consumer_group("rr_compat_orderly_cg")
        .name_server_addr(namesrv.to_string())
        .consume_from_where(rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere::ConsumeFromFirstOffset)
        .build();
    consumer.subscribe(topic, "*").await?;
    consumer.register_message_listener_orderly(Ordered { name, seq, got });
    consumer.start().await?;
    Ok(consumer)
}

async fn wait_received(got: &Arc<Mutex<Vec<serde_json::Value>>>, want: usize, secs: u64) -> usize {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let distinct: BTreeSet<String> = got
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|m| m["body"].as_str().map(str::to_string))
            .collect();
        if distinct.len() >= want || Instant::now() > deadline {
            return distinct.len();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn orderly(runtime: Arc<ClientRuntime>) -> Result<(), Failure> {
    let namesrv = env("NAMESRV")?;
    let topic = env("TOPIC")?;
    let count: usize = env("COUNT")?.parse()?;
    let queues: usize = env("QUEUES")?.parse()?;
    let mut producer = started_producer(&runtime, &namesrv, "rr_compat_orderly_pg").await?;
    let send_half = |from: usize, to: usize| {
        let producer = &producer;
        let topic = topic.clone();
        async move {
            for n in from..to {
                for q in 0..queues {
                    let message = Message::builder()
                        .topic(topic.clone())
                        .body(format!("q{q}-{n}").into_bytes())
                        .build()?;
                    let r = producer
                        .send_with_selector(
                            message,
                            |mqs, _m, q: &usize| {
                                mqs.iter().find(|mq| mq.queue_id() as usize == *q).cloned()
                            },
                            q,
                        )
                        .await?
                        .ok_or("send returned no result")?;
                    emit(json!({"event": "sent", "queue": q, "n": n,
                        "queueId": r.message_queue.as_ref().map(|m| m.queue_id())}));
                }
            }
            Ok::<(), Failure>(())
        }
    };
    let seq = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut first = orderly_consumer(
        runtime.clone(),
        &namesrv,
        &topic,
        "first",
        seq.clone(),
        got.clone(),
    )
    .await?;
    send_half(0, count / 2).await?;
    let n = wait_received(&got, (count / 2) * queues, 60).await;
    emit(json!({"event": "first_half", "received": n}));
    let mut second = orderly_consumer(
        runtime.clone(),
        &namesrv,
        &topic,
        "second",
        seq.clone(),
        got.clone(),
    )
    .await?;
    // Both members rebalance: each holds the locks of its half of the queues.
    tokio::time::sleep(Duration::from_millis(
        std::env::var("REBALANCE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3000),
    ))
    .await;
    send_half(count / 2, count).await?;
    let n = wait_received(&got, count * queues, 90).await;
    emit(json!({"event": "all", "received": n}));
    for m in got.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        emit(m.clone());
    }
    second.shutdown().await;
    first.shutdown().await;
    producer.shutdown().await;
    emit(json!({"event": "done"}));
    Ok(())
}

/// A started producer of `group`.
async fn started_producer(
    runtime: &Arc<ClientRuntime>,
    namesrv: &str,
    group: &str,
) -> Result<DefaultMQProducer, Failure> {
    let mut producer = DefaultMQProducer::builder(runtime.clone())
        .producer_group(group.to_string())
        .name_server_addr(namesrv.to_string())
        .build();
    producer.start().await?;
    Ok(producer)
}

/// Sends `count` messages with bodies `{prefix}-{i}` to `topic`, then shuts the producer down.
async fn send_numbered(
    mut producer: DefaultMQProducer,
    topic: &str,
    count: usize,
    prefix: &str,
) -> Result<(), Failure> {
    for i in 0..count {
        let message = Message::builder()
            .topic(topic.to_string())
            .body(format!("{prefix}-{i}").into_bytes())
            .build()?;
        producer.send_with_timeout(message, 5000).await?;
    }
    producer.shutdown().await;
    Ok(())
}

async fn poll_until(
    consumer: &rocketmq_client_rust::DefaultLitePullConsumer,
    want: usize,
    secs: u64,
) -> Vec<MessageExt> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        got.extend(consumer.poll_with_timeout(500).await);
    }
    got
}

fn lite_event(kind: &str, m: &MessageExt) -> serde_json::Value {
    json!({
        "event": kind,
        "queueId": m.queue_id(),
        "queueOffset": m.queue_offset(),
        "body": m.body().map(|b| String::from_utf8_lossy(&b).into_owned()),
    })
}

async fn lite_pull(runtime: Arc<ClientRuntime>) -> Result<(), Failure> {
    let namesrv = env("NAMESRV")?;
    let topic = env("TOPIC")?;
    let count: usize = env("COUNT")?.parse()?;
    let producer = started_producer(&runtime, &namesrv, "rr_compat_lite_pg").await?;
    send_numbered(producer, &topic, count, "lite").await?;

    // Subscribe mode.
    let consumer = rocketmq_client_rust::DefaultLitePullConsumer::builder(runtime.clone())
        .consumer_group("rr_compat_lite_cg")
        .name_server_addr(namesrv.clone())
        .consume_from_where(
            rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere::ConsumeFromFirstOffset,
        )
        .auto_commit(false)
        .build()?;
    consumer.subscribe(&topic).await?;
    consumer.start().await?;
    for m in poll_until(&consumer, count, 60).await {
        emit(lite_event("polled", &m));
    }
    consumer.commit_sync().await;
    for mq in consumer.fetch_message_queues(&topic).await? {
        emit(json!({
            "event": "committed",
            "queueId": mq.queue_id(),
            "committed": consumer.committed(&mq).await?,
            "max": consumer.max_offset(&mq).await?,
        }));
    }
    consumer.shutdown().await;

    // Assign mode with seeks.
    let assigned = rocketmq_client_rust::DefaultLitePullConsumer::builder(runtime.clone())
        .consumer_group("rr_compat_lite_assign")
        .name_server_addr(namesrv.clone())
        .auto_commit(false)
        .build()?;
    assigned.start().await?;
    let mqs = assigned.fetch_message_queues(&topic).await?;
    let mq0 = mqs
        .iter()
        .find(|mq| mq.queue_id() == 0)
        .cloned()
        .ok_or("no queue 0")?;
    let max0 = assigned.max_offset(&mq0).await?;
    assigned.assign(vec![mq0.clone()]).await?;
    assigned.seek(&mq0, 2).await?;
    for m in poll_until(&assigned, (max0 - 2).max(0) as usize, 30).await {
        emit(lite_event("after_seek", &m));
    }
    assigned.seek_to_begin(&mq0).await?;
    for m in poll_until(&assigned, max0.max(0) as usize, 30).await {
        emit(lite_event("after_seek_to_begin", &m));
    }
    assigned.commit_sync().await;
    emit(json!({
        "event": "assigned_committed",
        "committed": assigned.committed(&mq0).await?,
        "max": max0,
    }));
    assigned.shutdown().await;
    emit(json!({"event": "done"}));
    Ok(())
}

async fn broadcast(runtime: Arc<ClientRuntime>) -> Result<(), Failure> {
    let namesrv = env("NAMESRV")?;
    let topic = env("TOPIC")?;
    let count: usize = env("COUNT")?.parse()?;
    let mut consumers = Vec::new();
    let mut received = Vec::new();
    for name in ["one", "two"] {
        let got = Arc::new(Mutex::new(Vec::new()));
        // Two clients in one process: each its own instance (a client id per consumer).
        let mut config = ClientConfig::default();
        config.set_namesrv_addr(CheetahString::from_string(namesrv.clone()));
        config.set_instance_name(CheetahString::from_static_str(name));
        let mut consumer = DefaultMQPushConsumer::builder(runtime.clone())
            .client_config(config)
            .consumer_group("rr_compat_bcast_cg")
            .name_server_addr(namesrv.clone())
            .message_model(
                rocketmq_protocol::protocol::heartbeat::message_model::MessageModel::Broadcasting,
            )
            .consume_from_where(
                rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere::ConsumeFromFirstOffset,
            )
            .build();
        consumer.subscribe(topic.as_str(), "*").await?;
        consumer.register_message_listener_concurrently(Collect(got.clone()));
        consumer.start().await?;
        consumers.push(consumer);
        received.push((name, got));
    }
    let producer = started_producer(&runtime, &namesrv, "rr_compat_bcast_pg").await?;
    send_numbered(producer, &topic, count, "bcast").await?;
    for (name, got) in &received {
        let n = wait_received(got, count, 60).await;
        emit(json!({"event": "broadcast_received", "consumer": name, "distinct": n}));
        for m in got.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            emit(json!({"event": "broadcast", "consumer": name, "body": m["body"]}));
        }
    }
    for mut c in consumers {
        c.shutdown().await;
    }
    emit(json!({"event": "done"}));
    Ok(())
}

async fn sql(runtime: Arc<ClientRuntime>) -> Result<(), Failure> {
    let namesrv = env("NAMESRV")?;
    let topic = env("TOPIC")?;
    let count: usize = env("COUNT")?.parse()?;
    let expect: usize = env("EXPECT")?.parse()?;
    let sql = env("SQL")?;
    let bad_sql = env("BAD_SQL")?;
    let mut producer = started_producer(&runtime, &namesrv, "rr_compat_sql_pg").await?;
    for i in 0..count {
        let message = Message::builder()
            .topic(topic.clone())
            .tags(if i % 2 == 0 { "even" } else { "odd" })
            .body(format!("sql-{i}").into_bytes())
            .raw_property("a", i.to_string())?
            .build()?;
        producer.send_with_timeout(message, 5000).await?;
    }
    producer.shutdown().await;

    let got = Arc::new(Mutex::new(Vec::new()));
    let mut consumer = DefaultMQPushConsumer::builder(runtime.clone())
        .consumer_group("rr_compat_sql_cg")
        .name_server_addr(namesrv.clone())
        .consume_from_where(
            rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere::ConsumeFromFirstOffset,
        )
        .build();
    consumer
        .subscribe_with_selector(
            &topic,
            Some(rocketmq_client_rust::MessageSelector::by_sql(sql.clone())),
        )
        .await?;
    consumer.register_message_listener_concurrently(Collect(got.clone()));
    consumer.start().await?;
    let n = wait_received(&got, expect, 60).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    emit(json!({"event": "sql_received", "distinct": n}));
    for m in got.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        emit(json!({"event": "sql", "body": m["body"]}));
    }
    consumer.shutdown().await;

    let mut bad = DefaultMQPushConsumer::builder(runtime.clone())
        .consumer_group("rr_compat_sql_bad")
        .name_server_addr(namesrv.clone())
        .build();
    bad.subscribe_with_selector(
        &topic,
        Some(rocketmq_client_rust::MessageSelector::by_sql(bad_sql)),
    )
    .await?;
    bad.register_message_listener_concurrently(Collect(Arc::new(Mutex::new(Vec::new()))));
    match bad.start().await {
        Ok(()) => {
            emit(json!({"event": "bad_sql_started"}));
            bad.shutdown().await;
        }
        Err(e) => emit(json!({"event": "bad_sql_refused", "error": format!("{e:?}")})),
    }
    emit(json!({"event": "done"}));
    Ok(())
}

async fn reset(runtime: Arc<ClientRuntime>) -> Result<(), Failure> {
    let namesrv = env("NAMESRV")?;
    let topic = env("TOPIC")?;
    let count: usize = env("COUNT")?.parse()?;
    let producer = started_producer(&runtime, &namesrv, "rr_compat_reset_pg").await?;
    send_numbered(producer, &topic, count, "reset").await?;
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut consumer = DefaultMQPushConsumer::builder(runtime.clone())
        .consumer_group("rr_compat_reset_cg")
        .name_server_addr(namesrv.clone())
        .consume_from_where(
            rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere::ConsumeFromFirstOffset,
        )
        .build();
    consumer.subscribe(topic.as_str(), "*").await?;
    consumer.register_message_listener_concurrently(Collect(got.clone()));
    consumer.start().await?;
    let n = wait_received(&got, count, 60).await;
    // Let the consumer commit its offsets before the reset moves them back.
    tokio::time::sleep(Duration::from_millis(
        std::env::var("SETTLE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(6000),
    ))
    .await;
    emit(json!({"event": "ready_for_reset", "distinct": n}));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let total = got.lock().unwrap_or_else(|e| e.into_inner()).len();
        if total >= 2 * count || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for m in got.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        emit(json!({"event": "reset_received", "body": m["body"]}));
    }
    consumer.shutdown().await;
    emit(json!({"event": "done"}));
    Ok(())
}

/// Hands each request to the task that answers it.
struct Requests(tokio::sync::mpsc::UnboundedSender<MessageExt>);

impl MessageListenerConcurrently for Requests {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _context: &ConsumeConcurrentlyContext,
    ) -> rocketmq_client_rust::ClientResult<ConsumeConcurrentlyStatus> {
        for m in msgs {
            let _ = self.0.send((*m).clone());
        }
        Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
    }
}

async fn request_reply(runtime: Arc<ClientRuntime>) -> Result<(), Failure> {
    let namesrv = env("NAMESRV")?;
    let topic = env("TOPIC")?;
    let count: usize = env("COUNT")?.parse()?;
    // The responder.
    let mut config = ClientConfig::default();
    config.set_namesrv_addr(CheetahString::from_string(namesrv.clone()));
    config.set_instance_name(CheetahString::from_static_str("responder"));
    let mut responder = DefaultMQProducer::builder(runtime.clone())
        .client_config(config.clone())
        .producer_group("rr_compat_rr_responder")
        .name_server_addr(namesrv.clone())
        .build();
    responder.start().await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<MessageExt>();
    let mut consumer = DefaultMQPushConsumer::builder(runtime.clone())
        .client_config(config)
        .consumer_group("rr_compat_rr_cg")
        .name_server_addr(namesrv.clone())
        .build();
    consumer.subscribe(topic.as_str(), "*").await?;
    consumer.register_message_listener_concurrently(Requests(tx));
    consumer.start().await?;
    let answering = tokio::spawn(async move {
        while let Some(request) = rx.recv().await {
            let body = request
                .message
                .get_body()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            let reply = match rocketmq_client_rust::MessageUtil::create_reply_message(
                &request.message,
                format!("reply-to-{body}").as_bytes(),
            ) {
                Ok(r) => r,
                Err(e) => {
                    emit(json!({"event": "reply_not_built", "error": format!("{e:?}")}));
                    continue;
                }
            };
            match responder.send_with_timeout(reply, 5000).await {
                Ok(_) => emit(json!({"event": "replied", "to": body})),
                Err(e) => {
                    emit(json!({"event": "reply_failed", "to": body, "error": format!("{e:?}")}))
                }
            }
        }
        responder.shutdown().await;
    });

    // The requester.
    let mut requester = started_producer(&runtime, &namesrv, "rr_compat_rr_requester").await?;
    for i in 0..count {
        let message = Message::builder()
            .topic(topic.clone())
            .body(format!("question-{i}").into_bytes())
            .build()?;
        // The callback form of the client's request: its blocking `request` waits on a
        // `tokio::sync::Notify` woken with `notify_waiters`, which keeps no permit, so a reply
        // that arrives before the requester starts waiting (a loaded machine) is dropped and the
        // request times out although the reply was delivered. The callback runs on delivery.
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<Option<String>, String>>();
        let tx = std::sync::Mutex::new(Some(tx));
        let callback =
            move |reply: Option<&dyn MessageTrait>,
                  error: Option<&rocketmq_client_rust::ClientError>| {
                let outcome = match (reply, error) {
                    (Some(reply), _) => Ok(reply
                        .get_body()
                        .map(|b| String::from_utf8_lossy(b).into_owned())),
                    (None, Some(e)) => Err(format!("{e:?}")),
                    // This client also calls back when the request is sent, with neither a
                    // reply nor an error; the reply comes in a later call.
                    (None, None) => return,
                };
                if let Some(tx) = tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    let _ = tx.send(outcome);
                }
            };
        let outcome = match requester
            .request_with_callback(message, callback, 15_000)
            .await
        {
            Err(e) => Err(format!("{e:?}")),
            Ok(()) => match tokio::time::timeout(std::time::Duration::from_secs(20), rx).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(_)) => Err("the request callback was dropped".to_string()),
                Err(_) => Err("no reply or error within 20 s".to_string()),
            },
        };
        match outcome {
            Ok(body) => emit(json!({"event": "reply", "i": i, "body": body})),
            Err(e) => emit(json!({"event": "request_failed", "i": i, "error": e})),
        }
    }
    requester.shutdown().await;
    consumer.shutdown().await;
    answering.abort();
    emit(json!({"event": "done"}));
    Ok(())
}

fn traced_config(namesrv: &str) -> ClientConfig {
    let mut config = ClientConfig::default();
    config.set_namesrv_addr(CheetahString::from_string(namesrv.to_string()));
    config.set_enable_trace(true);
    config
}

async fn lookup_trace(runtime: Arc<ClientRuntime>) -> Result<(), Failure> {
    let namesrv = env("NAMESRV")?;
    let topic = env("TOPIC")?;
    let count: usize = env("COUNT")?.parse()?;

    let mut producer = DefaultMQProducer::builder(runtime.clone())
        .client_config(traced_config(&namesrv))
        .producer_group("rr_compat_rust_pg")
        .name_server_addr(namesrv.clone())
        .build();
    producer.start().await?;

    let mut sent = Vec::new();
    for i in 0..count {
        let message = Message::builder()
            .topic(topic.clone())
            .tags("TagR")
            .keys(vec![format!("order-{i}"), "lookup-all".to_string()])
            .body(format!("rust-body-{i}").into_bytes())
            .build()?;
        let r = producer
            .send_with_timeout(message, 5000)
            .await?
            .ok_or("send returned no result")?;
        let event = json!({
            "event": "sent",
            "i": i,
            "status": format!("{:?}", r.send_status),
            "msgId": r.msg_id.as_ref().map(|s| s.to_string()),
            "offsetMsgId": r.offset_msg_id,
            "queueId": r.message_queue.as_ref().map(|q| q.queue_id()),
            "queueOffset": r.queue_offset,
            "traceOn": r.trace_on,
        });
        emit(event.clone());
        sent.push(event);
    }

    let received = Arc::new(Mutex::new(Vec::new()));
    let mut consumer = DefaultMQPushConsumer::builder(runtime.clone())
        .client_config(traced_config(&namesrv))
        .consumer_group("rr_compat_rust_cg")
        .name_server_addr(namesrv.clone())
        .consume_from_where(rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere::ConsumeFromFirstOffset)
        .build();
    consumer.subscribe(topic.as_str(), "*").await?;
    consumer.register_message_listener_concurrently(Collect(received.clone()));
    consumer.start().await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let bodies: BTreeSet<String> = received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|m| m["body"].as_str().map(str::to_string))
            .collect();
        if bodies.len() >= count || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for m in received.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        emit(json!({"event": "received", "message": m}));
    }

    // The index is written behind the CommitLog: a query may briefly find nothing yet.
    let end = now_ms() + 60_000;
    let deadline = Instant::now() + Duration::from_secs(20);
    let all = loop {
        match producer
            .query_message(&topic, "lookup-all", 64, 0, end)
            .await
        {
            Ok(r) if r.message_list().len() >= count || Instant::now() > deadline => break Ok(r),
            Err(e) if Instant::now() > deadline => break Err(e),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    match all {
        Ok(r) => emit(json!({
            "event": "by_key", "key": "lookup-all",
            "messages": r.message_list().iter().map(describe).collect::<Vec<_>>(),
        })),
        Err(e) => {
            emit(json!({"event": "by_key_failed", "key": "lookup-all", "error": format!("{e:?}")}))
        }
    }
    let key = format!("order-{}", count / 2);
    match producer.query_message(&topic, &key, 32, 0, end).await {
        Ok(r) => emit(json!({
            "event": "by_key", "key": key,
            "messages": r.message_list().iter().map(describe).collect::<Vec<_>>(),
        })),
        Err(e) => emit(json!({"event": "by_key_failed", "key": key, "error": format!("{e:?}")})),
    }
    match producer
        .query_message(&topic, "no-such-key", 32, 0, end)
        .await
    {
        Ok(r) => emit(json!({
            "event": "by_key", "key": "no-such-key",
            "messages": r.message_list().iter().map(describe).collect::<Vec<_>>(),
        })),
        Err(e) => {
            emit(json!({"event": "by_key_failed", "key": "no-such-key", "error": format!("{e:?}")}))
        }
    }
    let probe = &sent[count / 2];
    for (kind, id) in [
        ("offset", probe["offsetMsgId"].as_str()),
        ("unique", probe["msgId"].as_str()),
    ] {
        let id = id.ok_or("the send result had no id")?;
        match producer.view_message(&topic, id).await {
            Ok(m) => {
                emit(json!({"event": "by_id", "kind": kind, "id": id, "message": describe(&m)}))
            }
            Err(e) => emit(
                json!({"event": "by_id_failed", "kind": kind, "id": id, "error": format!("{e:?}")}),
            ),
        }
    }

    // The trace dispatchers send their batches from a background worker; give it time.
    tokio::time::sleep(Duration::from_millis(
        std::env::var("HOLD_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    ))
    .await;
    consumer.shutdown().await;
    producer.shutdown().await;
    emit(json!({"event": "done"}));
    Ok(())
}

fn main() -> Result<(), Failure> {
    let scenario = std::env::args().nth(1).unwrap_or_default();
    let owner = RuntimeOwner::plan(RuntimeConfig {
        thread_name: "rr-compat-rust".to_string(),
        ..Default::default()
    })?
    .build()?;
    let telemetry = rocketmq_observability::install_global(
        &rocketmq_observability::TelemetryBootstrapConfig::default(),
    )?;
    let runtime = ClientRuntime::try_new(
        owner.root_context().component("client"),
        ClientRuntimeConfig::default(),
        telemetry.handle(),
    )?;
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = tokio_rt.block_on(async {
        let r = match scenario.as_str() {
            "lookup-trace" => lookup_trace(runtime.clone()).await,
            "orderly" => orderly(runtime.clone()).await,
            "lite-pull" => lite_pull(runtime.clone()).await,
            "broadcast" => broadcast(runtime.clone()).await,
            "sql" => sql(runtime.clone()).await,
            "reset" => reset(runtime.clone()).await,
            "request-reply" => request_reply(runtime.clone()).await,
            other => Err(format!(
                "unknown scenario {other:?}; try lookup-trace, orderly, lite-pull or broadcast"
            )
            .into()),
        };
        let _ = runtime.shutdown().await;
        let _ = owner.shutdown_tasks().await;
        r
    });
    let _ = telemetry.shutdown();
    result
}
