//! HEART_BEAT (34), UNREGISTER_CLIENT (35), GET_CONSUMER_LIST_BY_GROUP (38)
//! (`ClientManageProcessor`, `ConsumerManageProcessor`), and the orderly consumers' queue locks
//! LOCK_BATCH_MQ (41) / UNLOCK_BATCH_MQ (42) (`AdminBrokerProcessor`, see
//! [`crate::rebalance_lock`]), and CHECK_CLIENT_CONFIG (46).

use rocketraft_common::protocol::{
    from_json_body, CheckClientRequestBody, ConsumerIdList, HeartbeatData, LockBatchRequestBody,
    LockBatchResponseBody,
};
use rocketraft_common::time::now_ms;
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::server::RequestContext;
use rocketraft_remoting::{Refusal, RemotingCommand};

use super::Handled;
use crate::client_manager::ClientChannel;
use crate::BrokerInner;

pub fn heartbeat(inner: &BrokerInner, ctx: &RequestContext, request: &RemotingCommand) -> Handled {
    let data: HeartbeatData = from_json_body(&request.body).map_err(|e| {
        Refusal::system_error(format!("the HEART_BEAT body is not a HeartbeatData: {e}"))
    })?;
    if data.client_id.is_empty() {
        return Err(Refusal::system_error("the heartbeat has no clientID"));
    }
    let channel = ClientChannel {
        client_id: data.client_id.clone(),
        connection: ctx.connection.clone(),
        last_update_ms: now_ms(),
        language: request.language.name().to_ascii_lowercase(),
        version: request.version,
    };
    for producer in &data.producer_data_set {
        inner
            .clients
            .register_producer(&producer.group_name, channel.clone());
    }
    for consumer in &data.consumer_data_set {
        if consumer.group_name.is_empty() {
            continue;
        }
        if inner.clients.register_consumer(consumer, channel.clone()) {
            tracing::info!(group = %consumer.group_name, client = %data.client_id, "consumer joined");
            inner.clients.notify_ids_changed(&consumer.group_name);
        }
    }
    Ok(request.response_to(response_code::SUCCESS, None))
}

pub fn unregister(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let client_id = request.require_ext("clientID")?;
    let changed = inner.clients.unregister(
        client_id,
        request.ext("producerGroup").filter(|g| !g.is_empty()),
        request.ext("consumerGroup").filter(|g| !g.is_empty()),
    );
    if let Some(group) = changed {
        tracing::info!(group, client = client_id, "consumer left");
        inner.clients.notify_ids_changed(&group);
    }
    if let Some(group) = request.ext("consumerGroup").filter(|g| !g.is_empty()) {
        let released = inner.locks.release_client(group, client_id);
        if released > 0 {
            tracing::info!(group, client = client_id, released, "queue locks released");
        }
    }
    Ok(request.response_to(response_code::SUCCESS, None))
}

/// The body of LOCK_BATCH_MQ / UNLOCK_BATCH_MQ, refused with a remark when it does not parse or
/// names no group or client.
fn lock_body(request: &RemotingCommand, what: &str) -> Result<LockBatchRequestBody, Refusal> {
    let body: LockBatchRequestBody = from_json_body(&request.body).map_err(|e| {
        Refusal::system_error(format!("the {what} body is not a {what} request body: {e}"))
    })?;
    if body.consumer_group.is_empty() || body.client_id.is_empty() {
        return Err(Refusal::system_error(format!(
            "the {what} body names no consumerGroup or clientId"
        )));
    }
    Ok(body)
}

/// LOCK_BATCH_MQ: locks (or renews) the queues for the client; answers the queues it holds.
pub fn lock_batch(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let body = lock_body(request, "LOCK_BATCH_MQ")?;
    let held = inner.locks.try_lock_batch(
        &body.consumer_group,
        &body.mq_set,
        &body.client_id,
        now_ms(),
        inner.config.rebalance_lock_max_live_time_ms,
    );
    let answer = serde_json::to_vec(&LockBatchResponseBody {
        lock_ok_mq_set: held,
    })
    .map_err(|e| Refusal::system_error(e.to_string()))?;
    Ok(request
        .response_to(response_code::SUCCESS, None)
        .with_body(answer))
}

/// UNLOCK_BATCH_MQ: releases the client's locks on the queues.
pub fn unlock_batch(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let body = lock_body(request, "UNLOCK_BATCH_MQ")?;
    inner
        .locks
        .unlock_batch(&body.consumer_group, &body.mq_set, &body.client_id);
    Ok(request.response_to(response_code::SUCCESS, None))
}

pub fn consumer_list(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let group = request.require_ext("consumerGroup")?;
    let ids = inner.clients.consumer_ids(group);
    if ids.is_empty() {
        return Err(Refusal::system_error(format!(
            "no consumer for this group, {group}"
        )));
    }
    let body = serde_json::to_vec(&ConsumerIdList {
        consumer_id_list: ids,
    })
    .map_err(|e| Refusal::system_error(e.to_string()))?;
    Ok(request
        .response_to(response_code::SUCCESS, None)
        .with_body(body))
}

/// CHECK_CLIENT_CONFIG: a consumer checks its subscription before it starts (the Java client does
/// for SQL92 selectors). A TAG subscription passes; an SQL92 one passes when the broker filters
/// by properties and the expression compiles, else the answer says why, as RocketMQ's
/// `ClientManageProcessor.checkClientConfig` does.
pub fn check_client_config(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let body: CheckClientRequestBody = from_json_body(&request.body).map_err(|e| {
        Refusal::system_error(format!(
            "the CHECK_CLIENT_CONFIG body is not a CheckClientRequestBody: {e}"
        ))
    })?;
    let sub = &body.subscription_data;
    super::pull::MessageFilter::of_type(inner, sub.expression_type.as_deref(), &sub.sub_string)
        .map_err(|mut refusal| {
            tracing::info!(group = %body.group, client = %body.client_id, remark = %refusal.remark, "client config refused");
            if refusal.code == response_code::SUBSCRIPTION_PARSE_FAILED {
                refusal.remark = refusal
                    .remark
                    .trim_start_matches("parse the consumer's subscription failed: ")
                    .to_string();
            }
            refusal
        })?;
    Ok(request.response_to(response_code::SUCCESS, None))
}
