//! Admission: the one refusal prologue every RPC but Telemetry goes
//! through ([`Service::serve`]): the `x-mq-namespace` header's namespace put into the request,
//! the caller's credentials and permissions checked, and any refusal, there or in the handler,
//! answered as the response's status alone.

use std::future::Future;

use tonic::{Request, Response, Status as GrpcStatus};

use super::convert::{header_namespace, in_namespace, status, wrapped};
use super::{stream_of, BoxStream, Service};
use crate::auth::Need;
use crate::pb;

/// Requests whose resources take the `x-mq-namespace` header's namespace when they carry none.
pub(super) trait Namespaced {
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
namespaced!(pb::SyncLiteSubscriptionRequest, [topic, group], []);

impl Namespaced for pb::SendMessageRequest {
    fn fill(&mut self, namespace: &str) {
        for m in &mut self.messages {
            in_namespace(&mut m.topic, namespace);
        }
    }
}

/// Heartbeat and NotifyClientTermination: the proxy reads no resource of theirs.
macro_rules! names_nothing {
    ($($t:ty),*) => {
        $(impl Namespaced for $t {
            fn fill(&mut self, _namespace: &str) {}
        })*
    };
}

names_nothing!(pb::HeartbeatRequest, pb::NotifyClientTerminationRequest);

/// The permissions a request needs (checked when authentication is on).
pub(super) trait Needs {
    fn needs(&self) -> Vec<Need>;
}

macro_rules! needs {
    ($($t:ty),* => |$r:ident| $needs:expr) => {
        $(impl Needs for $t {
            fn needs(&self) -> Vec<Need> {
                let $r = self;
                $needs
            }
        })*
    };
}

// Authentication alone.
needs!(pb::HeartbeatRequest, pb::NotifyClientTerminationRequest => |_r| Vec::new());
needs!(pb::QueryRouteRequest => |r| routing(r.topic.as_ref()));
needs!(pb::SendMessageRequest => |r| publishing(r.messages.iter().filter_map(|m| m.topic.as_ref())));
needs!(pb::EndTransactionRequest, pb::RecallMessageRequest => |r| publishing(r.topic.as_ref()));
needs!(
    pb::QueryAssignmentRequest,
    pb::AckMessageRequest,
    pb::ForwardMessageToDeadLetterQueueRequest,
    pb::ChangeInvisibleDurationRequest,
    pb::SyncLiteSubscriptionRequest
    => |r| consuming(r.group.as_ref(), r.topic.as_ref())
);
needs!(
    pb::ReceiveMessageRequest,
    pb::PullMessageRequest,
    pb::UpdateOffsetRequest,
    pb::GetOffsetRequest
    => |r| consuming_queue(r.group.as_ref(), r.message_queue.as_ref())
);
needs!(pb::QueryOffsetRequest => |r| consuming_queue(None, r.message_queue.as_ref()));

/// The request with the header's namespace applied.
fn take<T: Namespaced>(request: Request<T>) -> T {
    let namespace = header_namespace(request.metadata());
    let mut inner = request.into_inner();
    inner.fill(&namespace);
    inner
}

/// An answer that can say "refused" alone: a unary response with only its status, or a
/// stream whose one item is the status.
pub(super) trait Refusal: Sized {
    fn refusal(status: pb::Status) -> Self;
    /// The answer and the `Status.code` it carries (for `rocketmq_rpc_latency`): a unary
    /// response's status, or the status a stream starts with when that item is ready at once
    /// (every stream the handlers build is; another counts as OK).
    fn answered(self) -> (Self, i32);
}

/// A unary response: its status and default (empty) everything else.
trait StatusOnly: Default {
    fn status_mut(&mut self) -> &mut Option<pb::Status>;
    fn status_ref(&self) -> Option<&pb::Status>;
}

macro_rules! status_only {
    ($($t:ty,)*) => {
        $(impl StatusOnly for $t {
            fn status_mut(&mut self) -> &mut Option<pb::Status> {
                &mut self.status
            }

            fn status_ref(&self) -> Option<&pb::Status> {
                self.status.as_ref()
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
    pb::HeartbeatResponse,
    pb::NotifyClientTerminationResponse,
    pb::QueryAssignmentResponse,
    pb::QueryOffsetResponse,
    pb::QueryRouteResponse,
    pb::RecallMessageResponse,
    pb::SendMessageResponse,
    pb::SyncLiteSubscriptionResponse,
    pb::UpdateOffsetResponse,
);

impl<R: StatusOnly> Refusal for R {
    fn refusal(status: pb::Status) -> R {
        let mut r = R::default();
        *r.status_mut() = Some(status);
        r
    }

    fn answered(self) -> (Self, i32) {
        let code = self
            .status_ref()
            .map_or(pb::Code::Unspecified as i32, |s| s.code);
        (self, code)
    }
}

/// An item of a streamed response that can carry a status.
pub(super) trait StatusItem: Send + 'static {
    fn status_item(status: pb::Status) -> Self;
    /// The code of the status this item is, if it is one.
    fn status_code(&self) -> Option<i32>;
}

impl StatusItem for pb::ReceiveMessageResponse {
    fn status_item(status: pb::Status) -> Self {
        pb::ReceiveMessageResponse {
            content: Some(pb::receive_message_response::Content::Status(status)),
        }
    }

    fn status_code(&self) -> Option<i32> {
        match &self.content {
            Some(pb::receive_message_response::Content::Status(s)) => Some(s.code),
            _ => None,
        }
    }
}

impl StatusItem for pb::PullMessageResponse {
    fn status_item(status: pb::Status) -> Self {
        pb::PullMessageResponse {
            content: Some(pb::pull_message_response::Content::Status(status)),
        }
    }

    fn status_code(&self) -> Option<i32> {
        match &self.content {
            Some(pb::pull_message_response::Content::Status(s)) => Some(s.code),
            _ => None,
        }
    }
}

impl<T: StatusItem> Refusal for BoxStream<T> {
    fn refusal(status: pb::Status) -> Self {
        stream_of(vec![T::status_item(status)])
    }

    fn answered(mut self) -> (Self, i32) {
        use futures::{FutureExt, StreamExt};
        let ok = pb::Code::Ok as i32;
        match self.next().now_or_never() {
            Some(Some(first)) => {
                let code = match &first {
                    Ok(item) => item.status_code().unwrap_or(ok),
                    Err(e) => e.code() as i32,
                };
                let stream: BoxStream<T> =
                    Box::pin(futures::stream::once(async move { first }).chain(self));
                (stream, code)
            }
            Some(None) => (stream_of(Vec::new()), ok),
            None => (self, ok),
        }
    }
}

impl Service {
    /// The refusal prologue: admits the request ([`Service::admit`]) and runs `handle` on it;
    /// a refusal by either is the answer's status alone ([`Refusal`]). Refusals are answers,
    /// never gRPC errors, as the protocol wants.
    pub(super) async fn serve<T, R, F>(
        &self,
        request: Request<T>,
        handle: impl FnOnce(T) -> F,
    ) -> Result<Response<R>, GrpcStatus>
    where
        T: Namespaced + Needs,
        R: Refusal,
        F: Future<Output = Result<R, pb::Status>>,
    {
        let answer = match self.admit(request).await {
            Ok(req) => handle(req).await.unwrap_or_else(R::refusal),
            Err(s) => R::refusal(s),
        };
        let (answer, code) = answer.answered();
        Ok(crate::metrics::with_code(Response::new(answer), code))
    }

    /// [`take`], after checking the caller's credentials and the permissions the request
    /// [`Needs`] (nothing to check when authentication is off).
    async fn admit<T: Namespaced + Needs>(&self, request: Request<T>) -> Result<T, pb::Status> {
        if !self.auth.enabled() {
            return Ok(take(request));
        }
        let peer = request.remote_addr();
        let metadata = request.metadata().clone();
        let inner = take(request);
        self.auth.check(&metadata, peer, &inner.needs()).await?;
        Ok(inner)
    }
}

/// `Pub` on each topic: what producing needs.
fn publishing<'a>(topics: impl IntoIterator<Item = &'a pb::Resource>) -> Vec<Need> {
    topics
        .into_iter()
        .map(|t| Need::publish(wrapped(t)))
        .collect()
}

/// `Pub` or `Sub` on the topic: what reading its route needs.
fn routing(topic: Option<&pb::Resource>) -> Vec<Need> {
    topic
        .iter()
        .map(|t| Need::publish_or_subscribe(wrapped(t)))
        .collect()
}

/// `Sub` on a consumer's topic and group: what consuming needs.
fn consuming(group: Option<&pb::Resource>, topic: Option<&pb::Resource>) -> Vec<Need> {
    let mut needs = Vec::with_capacity(2);
    if let Some(t) = topic {
        needs.push(Need::subscribe(wrapped(t)));
    }
    if let Some(g) = group {
        needs.push(Need::group(wrapped(g)));
    }
    needs
}

/// [`consuming`] the topic of a message queue.
fn consuming_queue(group: Option<&pb::Resource>, queue: Option<&pb::MessageQueue>) -> Vec<Need> {
    consuming(group, queue.and_then(|q| q.topic.as_ref()))
}

/// The request's topic; ILLEGAL_TOPIC when it names none.
pub(super) fn required_topic(topic: Option<&pb::Resource>) -> Result<&pb::Resource, pb::Status> {
    topic
        .filter(|t| !t.name.is_empty())
        .ok_or_else(|| status(pb::Code::IllegalTopic, "topic is required"))
}

/// The request's consumer group; ILLEGAL_CONSUMER_GROUP when it names none.
pub(super) fn required_group(group: Option<&pb::Resource>) -> Result<&pb::Resource, pb::Status> {
    group
        .filter(|g| !g.name.is_empty())
        .ok_or_else(|| status(pb::Code::IllegalConsumerGroup, "group is required"))
}

/// The request's message queue; BAD_REQUEST without one.
pub(super) fn required_queue(
    queue: Option<&pb::MessageQueue>,
) -> Result<&pb::MessageQueue, pb::Status> {
    queue.ok_or_else(|| status(pb::Code::BadRequest, "message_queue is required"))
}
