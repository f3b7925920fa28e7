//! Telemetry: a client's stream, kept in [`crate::session::Sessions`] while it is open. Each
//! Settings the client sends is answered at once with the server's side; a producer's settings
//! name the topics it publishes (for transaction checks).

use std::collections::BTreeSet;

use tonic::{Request, Response, Status as GrpcStatus};

use super::convert::{header, header_namespace, in_namespace, ok, pb_duration, wrapped};
use super::{BoxStream, Service};
use crate::pb;
use crate::session::TelemetrySender;

/// Opens the stream. A caller whose credentials fail gets a gRPC error (UNAUTHENTICATED, or
/// UNAVAILABLE when they could not be checked): a stream has no status of its own to refuse
/// with.
pub(super) async fn telemetry(
    service: &Service,
    request: Request<tonic::Streaming<pb::TelemetryCommand>>,
) -> Result<Response<BoxStream<pb::TelemetryCommand>>, GrpcStatus> {
    if let Err(s) = service
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
    let metadata = request.metadata();
    let namespace = header_namespace(metadata);
    let client_id = header(metadata, "x-mq-client-id")
        .unwrap_or_default()
        .to_string();
    let about = |name: &str| header(metadata, name).unwrap_or("?");
    tracing::debug!(
        client = %client_id,
        language = %about("x-mq-language"),
        version = %about("x-mq-client-version"),
        protocol = %about("x-mq-protocol"),
        namespace = %namespace,
        "telemetry stream opened"
    );
    let inbound = request.into_inner();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::TelemetryCommand, GrpcStatus>>(16);
    let key = service.sessions.open(client_id.clone(), tx.clone());
    tokio::spawn(
        service
            .clone()
            .answer_settings(inbound, tx, key, client_id, namespace),
    );
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(Response::new(Box::pin(stream)))
}

/// The namespaced topics of a producer's Publishing settings.
fn published_topics(publishing: &pb::Publishing, namespace: &str) -> BTreeSet<String> {
    publishing
        .topics
        .iter()
        .map(|t| {
            let mut t = Some(t.clone());
            in_namespace(&mut t, namespace);
            t.map(|t| wrapped(&t)).unwrap_or_default()
        })
        .filter(|t| !t.is_empty())
        .collect()
}

impl Service {
    /// Answers each Settings of the stream (session `key`) until the client closes it, then
    /// closes the session.
    async fn answer_settings(
        self,
        mut inbound: tonic::Streaming<pb::TelemetryCommand>,
        tx: TelemetrySender,
        key: u64,
        client_id: String,
        namespace: String,
    ) {
        while let Ok(Some(cmd)) = inbound.message().await {
            let Some(pb::telemetry_command::Command::Settings(s)) = cmd.command else {
                continue;
            };
            if is_lite_consumer(s.client_type) {
                // Where NotifyUnsubscribeLiteCommand reaches the client (`lite.rs`).
                self.lite.attach(key, &client_id, tx.clone());
            }
            if let Some(pb::settings::PubSub::Publishing(p)) = &s.pub_sub {
                let topics = published_topics(p, &namespace);
                tracing::debug!(client = %client_id, ?topics, "producer settings");
                self.sessions.set_topics(key, topics);
                self.meta.heartbeat_now.notify_one();
            }
            let reply = pb::TelemetryCommand {
                status: Some(ok()),
                command: Some(pb::telemetry_command::Command::Settings(
                    self.settings_for(&s, &namespace).await,
                )),
            };
            if tx.send(Ok(reply)).await.is_err() {
                break;
            }
        }
        self.sessions.close(key);
        self.lite.detach(key);
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
        let lite = is_lite_consumer(client.client_type);
        let consumer = lite
            || client.client_type == Some(pb::ClientType::PushConsumer as i32)
            || client.client_type == Some(pb::ClientType::SimpleConsumer as i32);
        let pub_sub = match &client.pub_sub {
            Some(pb::settings::PubSub::Publishing(p)) => {
                Some(pb::settings::PubSub::Publishing(pb::Publishing {
                    topics: p.topics.clone(),
                    max_body_size: self.config.max_body_size as i32,
                    validate_message_type: true,
                }))
            }
            Some(pb::settings::PubSub::Subscription(s)) => {
                let mut sub = pb::Subscription {
                    group: s.group.clone(),
                    subscriptions: s.subscriptions.clone(),
                    fifo: Some(fifo),
                    receive_batch_size: Some(32),
                    long_polling_timeout: Some(pb_duration(
                        self.config.max_long_polling.as_millis() as i64,
                    )),
                    ..pb::Subscription::default()
                };
                if lite {
                    super::lite::lite_settings(&mut sub);
                }
                Some(pb::settings::PubSub::Subscription(sub))
            }
            None => None,
        };
        pb::Settings {
            client_type: client.client_type,
            access_point: client.access_point.clone(),
            backoff_policy: Some(retry_policy(consumer)),
            request_timeout: Some(pb_duration(3000)),
            user_agent: client.user_agent.clone(),
            metric: Some(self.config.client_metric.clone()),
            pub_sub,
        }
    }
}

/// A LitePushConsumer or a LiteSimpleConsumer: told its lite quota, notified of expired lite
/// topics.
fn is_lite_consumer(client_type: Option<i32>) -> bool {
    client_type == Some(pb::ClientType::LitePushConsumer as i32)
        || client_type == Some(pb::ClientType::LiteSimpleConsumer as i32)
}

/// A consumer's redelivery backoff (RocketMQ's 1 s .. 2 h ladder, 17 attempts), or a
/// producer's send retries (3, exponential from 10 ms to 1 s).
fn retry_policy(consumer: bool) -> pb::RetryPolicy {
    if consumer {
        pb::RetryPolicy {
            max_attempts: 17,
            strategy: Some(pb::retry_policy::Strategy::CustomizedBackoff(
                pb::CustomizedBackoff {
                    next: [
                        1, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800,
                        3600, 7200,
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
    }
}
