//! The `MessagingService` in cluster mode: a stateless translation of RocketMQ 5's gRPC protocol
//! to the brokers' Remoting protocol, with routes from the NameServer.
//!
//! What works, by handler file:
//! - `route.rs`: QueryRoute (queues of every broker set, this proxy as their endpoint),
//!   QueryAssignment (every readable queue), Heartbeat, NotifyClientTermination;
//! - `send.rs`: SendMessage (tags, keys, message id, FIFO message group to a queue by hash,
//!   delivery timestamp to a timer message, transactional half messages), each message checked
//!   first by the pure functions of `validate.rs`;
//! - `receive.rs`: ReceiveMessage (POP with the client's batch size and invisible duration, long
//!   polling that answers before the client's deadline, a status first then the messages,
//!   receipt handles, delivery attempts, CRC32 body digests);
//! - `ack.rs`: AckMessage, ChangeInvisibleDuration (new handle; the old one stops working),
//!   ForwardMessageToDeadLetterQueue (the message the handle names copied to `%DLQ%{group}`
//!   and acked by the broker in one request bound to the handle);
//! - `offset.rs`: UpdateOffset, GetOffset, QueryOffset (beginning, end, by time), PullMessage;
//! - `transaction.rs`: EndTransaction, brokers' transaction checks pushed to a connected
//!   producer as RecoverOrphanedTransaction, RecallMessage of a delayed message;
//! - `telemetry.rs`: Telemetry (settings answered at once with the server's side);
//! - `lite.rs`: SyncLiteSubscription (each client's lite topics, kept in this proxy) and the
//!   receive of a LITE topic, which pops only the client's lite topics.
//!
//! The `MessagingService` impl below is a small dispatcher: every RPC but Telemetry goes
//! through one refusal prologue (`admission.rs`: the namespace header, credentials,
//! permissions), then its handler; a refusal there or in the handler is
//! the response's status. A receipt handle is the broker's POP handle (`receipt.rs`: it names
//! the broker set), so any proxy can ack. Routes, topic message types and group FIFO flags are
//! kept briefly (`cache.rs`); `convert.rs` translates between the protocol and Remoting.

mod ack;
mod admission;
mod cache;
mod convert;
mod lite;
mod offset;
mod receipt;
mod receive;
mod route;
mod send;
mod telemetry;
mod trace;
mod transaction;
mod validate;

use std::pin::Pin;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use rocketraft_remoting::api::MqClientApi;
use tonic::{Request, Response, Status as GrpcStatus};

use self::cache::MetaCache;
use self::convert::header;
pub use self::convert::header_namespace;
use crate::pb;
use crate::pb::messaging_service_server::MessagingService;
use crate::session::Sessions;

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
    /// What Telemetry's `Settings.metric` tells clients (`crate::metrics::client_metric`;
    /// off: `on: false`).
    pub client_metric: pb::Metric,
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
    /// ReceiveMessage calls in progress, for `/metrics`.
    receiving: Arc<std::sync::atomic::AtomicI64>,
    lite: Arc<lite::LiteSubscriptions>,
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
            receiving: Arc::new(std::sync::atomic::AtomicI64::new(0)),
            lite: Arc::new(lite::LiteSubscriptions::default()),
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

    /// ReceiveMessage calls in progress.
    pub fn receives_in_flight(&self) -> &Arc<std::sync::atomic::AtomicI64> {
        &self.receiving
    }

    pub fn api(&self) -> &MqClientApi {
        &self.api
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, GrpcStatus>> + Send + 'static>>;

/// A streamed answer of these items.
fn stream_of<T: Send + 'static>(items: Vec<T>) -> BoxStream<T> {
    Box::pin(futures::stream::iter(items.into_iter().map(Ok)))
}

/// The dispatcher. `rpc(Request) -> Answer = handler;` serves the RPC with `handler` behind
/// [`Service::serve`], the refusal prologue; the block after the table is written out.
macro_rules! dispatch {
    ($($rpc:ident($req:ty) -> $answer:ty = $handler:path;)* { $($rest:tt)* }) => {
        #[tonic::async_trait]
        impl MessagingService for Service {
            $(async fn $rpc(
                &self,
                request: Request<$req>,
            ) -> Result<Response<$answer>, GrpcStatus> {
                self.serve(request, |r| $handler(self, r)).await
            })*

            $($rest)*
        }
    };
}

dispatch! {
    query_route(pb::QueryRouteRequest) -> pb::QueryRouteResponse = route::query_route;
    heartbeat(pb::HeartbeatRequest) -> pb::HeartbeatResponse = route::heartbeat;
    query_assignment(pb::QueryAssignmentRequest) -> pb::QueryAssignmentResponse =
        route::query_assignment;
    send_message(pb::SendMessageRequest) -> pb::SendMessageResponse = send::send_message;
    ack_message(pb::AckMessageRequest) -> pb::AckMessageResponse = ack::ack_message;
    change_invisible_duration(pb::ChangeInvisibleDurationRequest)
        -> pb::ChangeInvisibleDurationResponse = ack::change_invisible_duration;
    forward_message_to_dead_letter_queue(pb::ForwardMessageToDeadLetterQueueRequest)
        -> pb::ForwardMessageToDeadLetterQueueResponse = ack::forward_message_to_dead_letter_queue;
    pull_message(pb::PullMessageRequest) -> BoxStream<pb::PullMessageResponse> =
        offset::pull_message;
    update_offset(pb::UpdateOffsetRequest) -> pb::UpdateOffsetResponse = offset::update_offset;
    get_offset(pb::GetOffsetRequest) -> pb::GetOffsetResponse = offset::get_offset;
    query_offset(pb::QueryOffsetRequest) -> pb::QueryOffsetResponse = offset::query_offset;
    end_transaction(pb::EndTransactionRequest) -> pb::EndTransactionResponse =
        transaction::end_transaction;
    recall_message(pb::RecallMessageRequest) -> pb::RecallMessageResponse =
        transaction::recall_message;
    {
        type ReceiveMessageStream = BoxStream<pb::ReceiveMessageResponse>;
        type PullMessageStream = BoxStream<pb::PullMessageResponse>;
        type TelemetryStream = BoxStream<pb::TelemetryCommand>;

        /// Behind the prologue too, with the client's deadline (`grpc-timeout`) to answer
        /// before.
        async fn receive_message(
            &self,
            request: Request<pb::ReceiveMessageRequest>,
        ) -> Result<Response<Self::ReceiveMessageStream>, GrpcStatus> {
            let client_deadline =
                header(request.metadata(), "grpc-timeout").and_then(receive::parse_grpc_timeout);
            let client = header(request.metadata(), "x-mq-client-id").map(str::to_string);
            let _in_flight = crate::metrics::InFlight::new(&self.receiving);
            self.serve(request, |r| {
                receive::receive_message(self, r, client_deadline, client.as_deref())
            })
            .await
        }

        /// Behind the prologue too, with the client id (`x-mq-client-id`).
        async fn notify_client_termination(
            &self,
            request: Request<pb::NotifyClientTerminationRequest>,
        ) -> Result<Response<pb::NotifyClientTerminationResponse>, GrpcStatus> {
            let client = header(request.metadata(), "x-mq-client-id").map(str::to_string);
            self.serve(request, |_| route::notify_client_termination(self, client))
                .await
        }

        async fn telemetry(
            &self,
            request: Request<tonic::Streaming<pb::TelemetryCommand>>,
        ) -> Result<Response<Self::TelemetryStream>, GrpcStatus> {
            telemetry::telemetry(self, request).await
        }

        async fn sync_lite_subscription(
            &self,
            request: Request<pb::SyncLiteSubscriptionRequest>,
        ) -> Result<Response<pb::SyncLiteSubscriptionResponse>, GrpcStatus> {
            let client = header(request.metadata(), "x-mq-client-id").map(str::to_string);
            self.serve(request, |r| lite::sync_lite_subscription(self, client, r))
                .await
        }
    }
}
