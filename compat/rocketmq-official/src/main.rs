//! The official Apache RocketMQ 5 Rust client (`rocketmq` 5.0.0 from crates.io) against a
//! Rocketraft gRPC proxy (`PROXY`), in every client type it has: Producer (normal, FIFO, delay,
//! transactions committed, rolled back and checked back) and SimpleConsumer (receive, ack).
//! Topics `{PREFIX}Normal|Fifo|Delay|Tx` and the groups `{GROUP}` and `{GROUP}-fifo` (FIFO)
//! exist before it runs. One JSON line per event on stdout; a failed check prints
//! `{"event":"failed"}` and exits 1.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::{MessageBuilder, MessageView};
use rocketmq::model::transaction::{Transaction, TransactionResolution};
use rocketmq::{Producer, SimpleConsumer};
use serde_json::json;

type Failure = Box<dyn std::error::Error + Send + Sync>;

fn emit(v: serde_json::Value) {
    println!("{v}");
}

fn check(ok: bool, what: &str, detail: impl std::fmt::Debug) -> Result<(), Failure> {
    if ok {
        return Ok(());
    }
    let detail = format!("{detail:?}");
    emit(json!({"event": "failed", "what": what, "detail": detail}));
    Err(format!("check failed: {what}: {detail}").into())
}

fn env(name: &str) -> Result<String, Failure> {
    std::env::var(name).map_err(|_| format!("{name} is not set").into())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn client_option(proxy: &str) -> ClientOption {
    let mut option = ClientOption::default();
    option.set_access_url(proxy);
    option.set_enable_tls(false);
    option
}

async fn producer(proxy: &str, topic: &str) -> Result<Producer, Failure> {
    let mut option = ProducerOption::default();
    option.set_topics(vec![topic]);
    let mut producer = Producer::new(option, client_option(proxy))?;
    producer.start().await?;
    Ok(producer)
}

async fn consumer(proxy: &str, topic: &str, group: &str) -> Result<SimpleConsumer, Failure> {
    let mut option = SimpleConsumerOption::default();
    option.set_topics(vec![topic]);
    option.set_consumer_group(group);
    let mut consumer = SimpleConsumer::new(option, client_option(proxy))?;
    consumer.start().await?;
    Ok(consumer)
}

/// Receives (acking each) until `want` messages came or `secs` passed.
async fn receive_all(
    consumer: &SimpleConsumer,
    topic: &str,
    want: usize,
    secs: u64,
) -> Result<Vec<MessageView>, Failure> {
    let all = FilterExpression::new(FilterType::Tag, "*");
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        // An empty long poll is an error of this client (MESSAGE_NOT_FOUND): nothing yet.
        let Ok(views) = consumer
            .receive_with(topic, &all, 16, Duration::from_secs(15))
            .await
        else {
            continue;
        };
        for view in views {
            consumer.ack(&view).await?;
            got.push(view);
        }
    }
    Ok(got)
}

fn body_of(view: &MessageView) -> String {
    String::from_utf8_lossy(view.body()).to_string()
}

async fn normal(proxy: &str, prefix: &str, group: &str) -> Result<(), Failure> {
    let topic = format!("{prefix}Normal");
    let producer = producer(proxy, &topic).await?;
    let mut sent = HashMap::new();
    for i in 0..5 {
        let message = MessageBuilder::builder()
            .set_topic(topic.clone())
            .set_body(format!("rust-normal-{i}").into_bytes())
            .set_tag("TagR")
            .set_keys(vec![format!("key-{i}")])
            .set_properties(HashMap::from([("origin".to_string(), format!("rust-{i}"))]))
            .build()?;
        let receipt = producer.send(message).await?;
        sent.insert(receipt.message_id().to_string(), i);
    }
    emit(json!({"event": "normal_sent", "count": sent.len()}));
    let consumer = consumer(proxy, &topic, group).await?;
    let got = receive_all(&consumer, &topic, 5, 30).await?;
    check(got.len() == 5, "five messages received", got.len())?;
    for view in &got {
        let Some(i) = sent.get(view.message_id()) else {
            return check(false, "a sent message id", view.message_id());
        };
        check(
            body_of(view) == format!("rust-normal-{i}"),
            "body",
            body_of(view),
        )?;
        check(view.tag() == Some("TagR"), "tag", view.tag())?;
        check(
            view.keys() == [format!("key-{i}")],
            "keys",
            view.keys().to_vec(),
        )?;
        check(
            view.properties().get("origin") == Some(&format!("rust-{i}")),
            "properties",
            view.properties(),
        )?;
    }
    let again = receive_all(&consumer, &topic, 1, 4).await?;
    check(
        again.is_empty(),
        "nothing comes back after the acks",
        again.len(),
    )?;
    emit(json!({"event": "normal_ok", "received": got.len()}));
    consumer.shutdown().await?;
    producer.shutdown().await?;
    Ok(())
}

async fn fifo(proxy: &str, prefix: &str, group: &str) -> Result<(), Failure> {
    let topic = format!("{prefix}Fifo");
    let producer = producer(proxy, &topic).await?;
    for i in 0..8 {
        let message = MessageBuilder::fifo_message_builder(
            topic.clone(),
            format!("rust-fifo-{i}").into_bytes(),
            format!("g{}", i % 2),
        )
        .build()?;
        producer.send(message).await?;
    }
    let consumer = consumer(proxy, &topic, &format!("{group}-fifo")).await?;
    let got = receive_all(&consumer, &topic, 8, 60).await?;
    check(got.len() == 8, "eight FIFO messages", got.len())?;
    let mut order: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for view in &got {
        let n = body_of(view)
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(usize::MAX);
        order
            .entry(view.message_group().unwrap_or("").to_string())
            .or_default()
            .push(n);
    }
    check(
        order.get("g0") == Some(&vec![0, 2, 4, 6]) && order.get("g1") == Some(&vec![1, 3, 5, 7]),
        "each message group in send order",
        &order,
    )?;
    emit(json!({"event": "fifo_ok", "order": order}));
    consumer.shutdown().await?;
    producer.shutdown().await?;
    Ok(())
}

async fn delay(proxy: &str, prefix: &str, group: &str) -> Result<(), Failure> {
    let topic = format!("{prefix}Delay");
    let producer = producer(proxy, &topic).await?;
    // This client's delivery time is in whole seconds since the epoch.
    let deliver_at_s = now_ms() / 1000 + 4;
    let message =
        MessageBuilder::delay_message_builder(topic.clone(), b"rust-delay".to_vec(), deliver_at_s)
            .build()?;
    producer.send(message).await?;
    let consumer = consumer(proxy, &topic, group).await?;
    let got = receive_all(&consumer, &topic, 1, 15).await?;
    let after = now_ms() - deliver_at_s * 1000;
    check(got.len() == 1, "the delayed message arrived", got.len())?;
    check(after >= -100, "not before its delivery time", after)?;
    emit(json!({"event": "delay_ok", "msAfterDeliveryTime": after}));
    consumer.shutdown().await?;
    producer.shutdown().await?;
    Ok(())
}

async fn transactions(proxy: &str, prefix: &str, group: &str) -> Result<(), Failure> {
    let topic = format!("{prefix}Tx");
    let checked = Arc::new(Mutex::new(Vec::new()));
    let seen = checked.clone();
    let mut option = ProducerOption::default();
    option.set_topics(vec![topic.as_str()]);
    let mut producer = Producer::new_transaction_producer(
        option,
        client_option(proxy),
        Box::new(move |_transaction_id, view: MessageView| {
            let body = String::from_utf8_lossy(view.body()).to_string();
            emit(json!({"event": "tx_checked", "body": body}));
            seen.lock().unwrap_or_else(|e| e.into_inner()).push(body);
            TransactionResolution::COMMIT
        }),
    )?;
    producer.start().await?;
    let half = |body: &str| {
        MessageBuilder::transaction_message_builder(topic.clone(), body.as_bytes().to_vec()).build()
    };
    producer
        .send_transaction_message(half("rust-tx-commit")?)
        .await?
        .commit()
        .await?;
    producer
        .send_transaction_message(half("rust-tx-rollback")?)
        .await?
        .rollback()
        .await?;
    // Left undecided: the broker checks it back through the producer's telemetry stream.
    let orphan = producer
        .send_transaction_message(half("rust-tx-orphan")?)
        .await?;
    emit(json!({"event": "tx_orphan_sent", "messageId": orphan.message_id()}));
    let consumer = consumer(proxy, &topic, group).await?;
    let mut bodies: BTreeSet<String> = receive_all(&consumer, &topic, 2, 40)
        .await?
        .iter()
        .map(body_of)
        .collect();
    bodies.extend(
        receive_all(&consumer, &topic, 1, 4)
            .await?
            .iter()
            .map(body_of),
    );
    let checked = checked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    check(
        checked.iter().any(|b| b == "rust-tx-orphan"),
        "the server asked the checker about the orphan",
        &checked,
    )?;
    check(
        bodies == BTreeSet::from(["rust-tx-commit".to_string(), "rust-tx-orphan".to_string()]),
        "exactly the committed and the checked-and-committed arrived",
        &bodies,
    )?;
    emit(json!({"event": "tx_ok", "bodies": bodies}));
    consumer.shutdown().await?;
    producer.shutdown().await?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Failure> {
    let proxy = env("PROXY")?;
    let prefix = env("PREFIX")?;
    let group = env("GROUP")?;
    let result = async {
        normal(&proxy, &prefix, &group).await?;
        fifo(&proxy, &prefix, &group).await?;
        delay(&proxy, &prefix, &group).await?;
        transactions(&proxy, &prefix, &group).await
    }
    .await;
    match result {
        Ok(()) => {
            emit(json!({"event": "done"}));
            Ok(())
        }
        Err(e) => {
            emit(json!({"event": "error", "error": e.to_string()}));
            std::process::exit(1);
        }
    }
}
