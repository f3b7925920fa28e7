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

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cheetah_string::CheetahString;
use rocketmq_client_rust::{
    ClientConfig, ClientRuntime, ClientRuntimeConfig, ConsumeConcurrentlyContext,
    ConsumeConcurrentlyStatus, DefaultMQProducer, DefaultMQPushConsumer, MQPushConsumer,
    MessageListenerConcurrently,
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
            other => Err(format!("unknown scenario {other:?}; try lookup-trace").into()),
        };
        let _ = runtime.shutdown().await;
        let _ = owner.shutdown_tasks().await;
        r
    });
    let _ = telemetry.shutdown();
    result
}
