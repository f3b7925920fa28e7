//! HEART_BEAT (34), UNREGISTER_CLIENT (35), GET_CONSUMER_LIST_BY_GROUP (38)
//! (`ClientManageProcessor`, `ConsumerManageProcessor`).

use rocketraft_common::protocol::{from_json_body, ConsumerIdList, HeartbeatData};
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
