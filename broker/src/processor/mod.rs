//! Request processors: one file per request family, as RocketMQ names them
//! (`SendMessageProcessor`, `PullMessageProcessor`, `ConsumerManageProcessor`,
//! `AdminBrokerProcessor`, `ClientManageProcessor`). [`BrokerProcessor`] routes by request code.
//!
//! Every handler validates its input before touching the store: a bad request gets RocketMQ's
//! response code with a remark that says what was wrong, and stores nothing.

pub mod acl;
pub mod admin;
pub mod client;
pub mod ha;
pub mod lite_ctl;
pub mod manage;
pub mod offset;
pub mod pop;
pub mod pop_lite;
pub mod pull;
pub mod query;
pub mod reply;
pub mod retry;
pub mod send;
pub mod stats;

use std::sync::{Arc, OnceLock};

use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::server::{BoxFuture, RequestContext, RequestProcessor};
use rocketraft_remoting::{Refusal, RemotingCommand};

use crate::BrokerInner;

impl From<crate::store::StoreError> for Refusal {
    /// The store's refusals keep RocketMQ's codes; anything else is a SYSTEM_ERROR.
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::MessageIllegal(why) | StoreError::PropertiesSizeExceeded(why) => {
                Refusal::new(response_code::MESSAGE_ILLEGAL, why)
            }
            StoreError::ServiceNotAvailable(why) => {
                Refusal::new(response_code::SERVICE_NOT_AVAILABLE, why)
            }
            other => Refusal::system_error(format!("store error: {other}")),
        }
    }
}

/// A request handler's answer: the response, or the refusal the dispatcher answers with.
pub type Handled = Result<RemotingCommand, Refusal>;

/// The request codes the broker serves.
pub const HANDLED_CODES: &[i32] = &[
    request_code::SEND_MESSAGE,
    request_code::SEND_MESSAGE_V2,
    request_code::SEND_BATCH_MESSAGE,
    request_code::SEND_REPLY_MESSAGE,
    request_code::SEND_REPLY_MESSAGE_V2,
    request_code::PULL_MESSAGE,
    request_code::LITE_PULL_MESSAGE,
    request_code::QUERY_CONSUMER_OFFSET,
    request_code::UPDATE_CONSUMER_OFFSET,
    request_code::GET_MAX_OFFSET,
    request_code::GET_MIN_OFFSET,
    request_code::SEARCH_OFFSET_BY_TIMESTAMP,
    request_code::GET_EARLIEST_MSG_STORETIME,
    request_code::HEART_BEAT,
    request_code::UNREGISTER_CLIENT,
    request_code::GET_CONSUMER_LIST_BY_GROUP,
    request_code::LOCK_BATCH_MQ,
    request_code::CHECK_CLIENT_CONFIG,
    request_code::INVOKE_BROKER_TO_RESET_OFFSET,
    request_code::UNLOCK_BATCH_MQ,
    request_code::UPDATE_AND_CREATE_TOPIC,
    request_code::DELETE_TOPIC_IN_BROKER,
    request_code::GET_ALL_TOPIC_CONFIG,
    request_code::GET_ALL_CONSUMER_OFFSET,
    request_code::GET_BROKER_RUNTIME_INFO,
    request_code::DELETE_EXPIRED_COMMITLOG,
    request_code::CLEAN_EXPIRED_CONSUMEQUEUE,
    request_code::VIEW_MESSAGE_BY_ID,
    request_code::QUERY_MESSAGE,
    request_code::EXCHANGE_BROKER_HA_INFO,
    request_code::GET_BROKER_HA_STATUS,
    request_code::NOTIFY_BROKER_ROLE_CHANGED,
    request_code::POP_MESSAGE,
    request_code::POP_LITE_MESSAGE,
    request_code::LITE_SUBSCRIPTION_CTL,
    request_code::PEEK_MESSAGE,
    request_code::NOTIFICATION,
    request_code::ACK_MESSAGE,
    request_code::CHANGE_MESSAGE_INVISIBLETIME,
    request_code::BATCH_ACK_MESSAGE,
    request_code::CONSUMER_SEND_MSG_BACK,
    request_code::GET_CONSUME_STATS,
    request_code::END_TRANSACTION,
    request_code::RECALL_MESSAGE,
    request_code::GET_TOPIC_CONFIG,
    request_code::GET_SUBSCRIPTIONGROUP_CONFIG,
    request_code::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP,
    request_code::DELETE_SUBSCRIPTIONGROUP,
    request_code::GET_ALL_SUBSCRIPTIONGROUP_CONFIG,
    request_code::GET_TOPIC_STATS_INFO,
    request_code::VIEW_BROKER_STATS_DATA,
    request_code::UPDATE_BROKER_CONFIG,
    request_code::GET_BROKER_CONFIG,
    request_code::GET_CONSUMER_CONNECTION_LIST,
    request_code::GET_PRODUCER_CONNECTION_LIST,
    request_code::QUERY_TOPIC_CONSUME_BY_WHO,
    request_code::GET_CONSUMER_RUNNING_INFO,
    request_code::CONSUME_MESSAGE_DIRECTLY,
    request_code::GET_BROKER_EPOCH_CACHE,
];

/// Routes each request to its handler. The broker's state is set once the store is open (the
/// port is bound first so that the advertised address is known when the store opens).
pub struct BrokerProcessor {
    pub inner: Arc<OnceLock<Arc<BrokerInner>>>,
}

impl RequestProcessor for BrokerProcessor {
    fn process(
        &self,
        ctx: RequestContext,
        request: RemotingCommand,
    ) -> BoxFuture<Option<RemotingCommand>> {
        let inner = self.inner.get().cloned();
        Box::pin(async move {
            let Some(inner) = inner else {
                return (!request.is_oneway()).then(|| {
                    request.response_to(
                        response_code::SYSTEM_BUSY,
                        "the broker is still starting".to_string(),
                    )
                });
            };
            let result = route(&inner, &ctx, &request).await;
            if request.is_oneway() {
                return None;
            }
            Some(match result {
                Ok(response) => response,
                Err(refusal) => {
                    tracing::debug!(code = request.code, response = refusal.code, remark = %refusal.remark, peer = %ctx.peer, "request refused");
                    refusal.response_to(&request)
                }
            })
        })
    }
}

/// Runs the handler of a request's code: the messaging codes (produce, consume, offsets,
/// clients, transactions) here, the others in [`route_admin`].
async fn route(inner: &BrokerInner, ctx: &RequestContext, request: &RemotingCommand) -> Handled {
    match request.code {
        request_code::SEND_MESSAGE
        | request_code::SEND_MESSAGE_V2
        | request_code::SEND_BATCH_MESSAGE => send::handle(inner, ctx, request).await,
        request_code::SEND_REPLY_MESSAGE | request_code::SEND_REPLY_MESSAGE_V2 => {
            reply::handle(inner, ctx, request).await
        }
        request_code::PULL_MESSAGE | request_code::LITE_PULL_MESSAGE => {
            pull::handle(inner, ctx, request).await
        }
        request_code::QUERY_CONSUMER_OFFSET => offset::query_consumer_offset(inner, request),
        request_code::UPDATE_CONSUMER_OFFSET => offset::update_consumer_offset(inner, request),
        request_code::GET_MAX_OFFSET => offset::max_offset(inner, request),
        request_code::GET_MIN_OFFSET => offset::min_offset(inner, request),
        request_code::SEARCH_OFFSET_BY_TIMESTAMP => offset::search_by_timestamp(inner, request),
        request_code::GET_EARLIEST_MSG_STORETIME => offset::earliest_store_time(inner, request),
        request_code::HEART_BEAT => client::heartbeat(inner, ctx, request),
        request_code::UNREGISTER_CLIENT => client::unregister(inner, request),
        request_code::GET_CONSUMER_LIST_BY_GROUP => client::consumer_list(inner, request),
        request_code::LOCK_BATCH_MQ => client::lock_batch(inner, request),
        request_code::CHECK_CLIENT_CONFIG => client::check_client_config(inner, request),
        request_code::INVOKE_BROKER_TO_RESET_OFFSET => offset::reset_offset(inner, request),
        request_code::UNLOCK_BATCH_MQ => client::unlock_batch(inner, request),
        request_code::POP_MESSAGE => pop::pop(inner, request).await,
        request_code::POP_LITE_MESSAGE => pop_lite::pop_lite(inner, request).await,
        request_code::LITE_SUBSCRIPTION_CTL => lite_ctl::lite_ctl(inner, request),
        request_code::PEEK_MESSAGE => pop::peek(inner, ctx, request).await,
        request_code::NOTIFICATION => pop::notification(inner, ctx, request).await,
        request_code::ACK_MESSAGE => pop::ack(inner, request).await,
        request_code::BATCH_ACK_MESSAGE => pop::batch_ack(inner, request).await,
        request_code::CHANGE_MESSAGE_INVISIBLETIME => pop::change_invisible(inner, request).await,
        request_code::CONSUMER_SEND_MSG_BACK => retry::send_back(inner, request).await,
        request_code::END_TRANSACTION => inner.transactions.end(inner, request).await,
        request_code::RECALL_MESSAGE => recall(inner, request).await,
        _ => route_admin(inner, request).await,
    }
}

/// Whether a handler answered SUCCESS (RocketMQ's `invocation_status` of a create).
fn succeeded(handled: &Handled) -> bool {
    matches!(handled, Ok(response) if response.code == response_code::SUCCESS)
}

/// The handlers of the administration codes (topics, subscription groups, runtime and HA
/// information); any other code is not supported.
async fn route_admin(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    match request.code {
        request_code::UPDATE_AND_CREATE_TOPIC => {
            let started = std::time::Instant::now();
            let handled = admin::create_topic(inner, request).await;
            let system = request
                .ext("topic")
                .is_some_and(crate::metrics::is_system_topic);
            inner
                .metrics
                .topic_created(succeeded(&handled), system, started.elapsed());
            handled
        }
        request_code::DELETE_TOPIC_IN_BROKER => admin::delete_topic(inner, request).await,
        request_code::GET_ALL_TOPIC_CONFIG => admin::all_topic_config(inner, request),
        request_code::GET_ALL_CONSUMER_OFFSET => admin::all_consumer_offsets(inner, request),
        request_code::GET_BROKER_RUNTIME_INFO => admin::runtime_info(inner, request),
        request_code::DELETE_EXPIRED_COMMITLOG => admin::delete_expired_commitlog(inner, request),
        request_code::CLEAN_EXPIRED_CONSUMEQUEUE => {
            admin::clean_expired_consume_queue(inner, request).await
        }
        request_code::VIEW_MESSAGE_BY_ID => admin::view_message_by_id(inner, request),
        request_code::QUERY_MESSAGE => query::query_message(inner, request).await,
        request_code::EXCHANGE_BROKER_HA_INFO => ha::exchange_ha_info(inner, request),
        request_code::GET_BROKER_HA_STATUS => ha::ha_status(inner, request),
        request_code::NOTIFY_BROKER_ROLE_CHANGED => ha::role_changed(inner, request),
        request_code::GET_CONSUME_STATS => admin::consume_stats(inner, request),
        request_code::GET_TOPIC_STATS_INFO => stats::topic_stats(inner, request),
        request_code::VIEW_BROKER_STATS_DATA => stats::view_stats(inner, request),
        request_code::GET_TOPIC_CONFIG => admin::topic_config(inner, request),
        request_code::GET_SUBSCRIPTIONGROUP_CONFIG => admin::subscription_group(inner, request),
        request_code::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP => {
            let started = std::time::Instant::now();
            let handled = admin::update_subscription_group(inner, request).await;
            let system = serde_json::from_slice::<serde_json::Value>(&request.body)
                .ok()
                .and_then(|v| v["groupName"].as_str().map(crate::metrics::is_system_group))
                .unwrap_or(false);
            inner
                .metrics
                .group_created(succeeded(&handled), system, started.elapsed());
            handled
        }
        request_code::DELETE_SUBSCRIPTIONGROUP => {
            admin::delete_subscription_group(inner, request).await
        }
        request_code::GET_ALL_SUBSCRIPTIONGROUP_CONFIG => {
            admin::all_subscription_groups(inner, request)
        }
        request_code::UPDATE_BROKER_CONFIG => manage::update_broker_config(inner, request),
        request_code::GET_BROKER_CONFIG => manage::broker_config(inner, request),
        request_code::GET_CONSUMER_CONNECTION_LIST => manage::consumer_connections(inner, request),
        request_code::GET_PRODUCER_CONNECTION_LIST => manage::producer_connections(inner, request),
        request_code::QUERY_TOPIC_CONSUME_BY_WHO => manage::topic_consumed_by(inner, request),
        request_code::GET_CONSUMER_RUNNING_INFO => {
            manage::consumer_running_info(inner, request).await
        }
        request_code::CONSUME_MESSAGE_DIRECTLY => {
            manage::consume_message_directly(inner, request).await
        }
        request_code::GET_BROKER_EPOCH_CACHE => manage::epoch_cache(inner, request),
        other => Err(Refusal::new(
            response_code::REQUEST_CODE_NOT_SUPPORTED,
            format!("request code {other} is not supported by this broker"),
        )),
    }
}

/// RECALL_MESSAGE (370): `topic`, `recallHandle`; answers the message id in `msgId`.
async fn recall(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let topic = request.require_ext("topic")?;
    let handle = request.require_ext("recallHandle")?;
    let id = inner.timers.recall(inner, topic, handle).await?;
    Ok(request
        .response_to(response_code::SUCCESS, None)
        .with_ext("msgId", id))
}

/// Looks up a topic for reading or writing offsets; TOPIC_NOT_EXIST otherwise.
pub(crate) fn existing_topic(
    inner: &BrokerInner,
    topic: &str,
) -> Result<rocketraft_common::TopicConfig, Refusal> {
    inner.topics.get(topic).ok_or_else(|| {
        Refusal::new(
            response_code::TOPIC_NOT_EXIST,
            format!("topic[{topic}] not exist, apply first please!"),
        )
    })
}

/// Checks a queue id against a topic's queue count.
pub(crate) fn check_queue_id(
    config: &rocketraft_common::TopicConfig,
    queue_id: i32,
    read: bool,
) -> Result<(), Refusal> {
    let nums = if read {
        config.read_queue_nums
    } else {
        config.write_queue_nums
    };
    if queue_id < 0 || queue_id >= nums {
        return Err(Refusal::system_error(format!(
            "queueId[{queue_id}] is illegal, topic:[{}] topicConfig.{}QueueNums:[{nums}]",
            config.topic_name,
            if read { "read" } else { "write" }
        )));
    }
    Ok(())
}
