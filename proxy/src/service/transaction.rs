//! Transactions and recall. EndTransaction commits or rolls back a half message on the master
//! that stored it (the transaction id names it); a broker's CHECK_TRANSACTION_STATE becomes a
//! RecoverOrphanedTransaction pushed to a connected producer of the topic, which the proxy
//! registers with the topic's masters ([`Service::producer_heartbeats`]). RecallMessage takes
//! back a delayed message by the recall handle its send answered.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rocketraft_common::consts::{property, sys_flag};
use rocketraft_common::message::MessageExt;
use rocketraft_common::protocol::{HeartbeatData, ProducerData};
use rocketraft_remoting::api::ApiError;
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::server::{processor_fn, RequestProcessor};
use rocketraft_remoting::RemotingCommand;

use super::admission::required_topic;
use super::convert::{from_api, ok, status, to_pb, wrapped};
use super::Service;
use crate::pb;
use crate::session::TransactionId;

/// END_TRANSACTION (commit or rollback) on the master the transaction id names. The half
/// message's producer group is its topic (see `crate::session`).
pub(super) async fn end_transaction(
    service: &Service,
    req: pb::EndTransactionRequest,
) -> Result<pb::EndTransactionResponse, pb::Status> {
    let topic = required_topic(req.topic.as_ref())?;
    let tx = TransactionId::parse(&req.transaction_id)
        .map_err(|why| status(pb::Code::InvalidTransactionId, why.to_string()))?;
    let decision = match pb::TransactionResolution::try_from(req.resolution) {
        Ok(pb::TransactionResolution::Commit) => sys_flag::TRANSACTION_COMMIT_TYPE,
        Ok(pb::TransactionResolution::Rollback) => sys_flag::TRANSACTION_ROLLBACK_TYPE,
        _ => {
            return Err(status(
                pb::Code::BadRequest,
                "resolution must be COMMIT or ROLLBACK",
            ))
        }
    };
    let name = wrapped(topic);
    let addr = service.master(&name, &tx.broker_name).await?;
    let from_check = req.source == pb::TransactionSource::SourceServerCheck as i32;
    let cmd = RemotingCommand::request(request_code::END_TRANSACTION)
        .with_ext("producerGroup", name.as_str())
        .with_ext("tranStateTableOffset", tx.queue_offset)
        .with_ext("commitLogOffset", tx.commit_log_offset)
        .with_ext("commitOrRollback", decision)
        .with_ext("fromTransactionCheck", from_check)
        .with_ext("msgId", req.message_id.clone())
        .with_ext("transactionId", tx.message_id.clone());
    match service
        .api
        .call(&addr, cmd, &[response_code::SUCCESS])
        .await
    {
        Ok(_) => {
            let commit = decision == sys_flag::TRANSACTION_COMMIT_TYPE;
            service
                .trace_end_transaction(&addr, &name, &tx, commit, from_check)
                .await;
            Ok(pb::EndTransactionResponse { status: Some(ok()) })
        }
        // The broker refuses a transaction it has no undecided half message for.
        Err(ApiError::Refused(r)) if r.code == response_code::SYSTEM_ERROR => {
            Err(status(pb::Code::InvalidTransactionId, r.remark))
        }
        Err(e) => Err(from_api(&e)),
    }
}

/// RECALL_MESSAGE on the master of the broker set the recall handle names.
pub(super) async fn recall_message(
    service: &Service,
    req: pb::RecallMessageRequest,
) -> Result<pb::RecallMessageResponse, pb::Status> {
    let topic = required_topic(req.topic.as_ref())?;
    let broker = recall_broker(&req.recall_handle).ok_or_else(|| {
        status(
            pb::Code::BadRequest,
            "recall_handle is not a handle from a delayed message's send result",
        )
    })?;
    let name = wrapped(topic);
    let addr = service.master(&name, &broker).await?;
    let cmd = RemotingCommand::request(request_code::RECALL_MESSAGE)
        .with_ext("topic", name)
        .with_ext("producerGroup", "proxy")
        .with_ext("recallHandle", req.recall_handle.clone());
    match service
        .api
        .call(&addr, cmd, &[response_code::SUCCESS])
        .await
    {
        Ok(r) => Ok(pb::RecallMessageResponse {
            status: Some(ok()),
            message_id: r.ext("msgId").unwrap_or_default().to_string(),
        }),
        Err(ApiError::Refused(r)) if r.code == response_code::NO_MESSAGE => {
            Err(status(pb::Code::NotFound, r.remark))
        }
        Err(e) => Err(from_api(&e)),
    }
}

/// The broker set of a recall handle: base64 of `v1 topic brokerName deliveryTime messageId
/// timerOffset` (the proxy only needs the broker set).
fn recall_broker(handle: &str) -> Option<String> {
    let text = rocketraft_common::base64::decode(handle).and_then(|b| String::from_utf8(b).ok())?;
    let f: Vec<&str> = text.split(' ').collect();
    (f.len() == 6 && f[0] == "v1").then(|| f[2].to_string())
}

impl Service {
    /// Registers this proxy, as a Remoting producer of each topic its connected producers
    /// publish (the topic is a gRPC half message's producer group), with every master of the
    /// topic: every 5 s and whenever a producer announces its topics. Runs until aborted.
    pub async fn producer_heartbeats(self, client_id: String) {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.meta.heartbeat_now.notified() => {}
            }
            for (addr, groups) in self.published_per_master().await {
                let data = HeartbeatData {
                    client_id: client_id.clone(),
                    producer_data_set: groups
                        .into_iter()
                        .map(|group_name| ProducerData { group_name })
                        .collect(),
                    consumer_data_set: vec![],
                };
                if let Err(e) = self.api.heartbeat(&addr, &data).await {
                    tracing::debug!(broker = %addr, error = %e, "producer heartbeat failed");
                }
            }
        }
    }

    /// The topics connected producers publish, by the address of each master of theirs.
    async fn published_per_master(&self) -> HashMap<String, BTreeSet<String>> {
        let mut per_broker: HashMap<String, BTreeSet<String>> = HashMap::new();
        for topic in &self.sessions.published_topics() {
            match self.route(topic).await {
                Ok(route) => {
                    for b in &route.broker_datas {
                        if let Some(addr) = b.master_addr() {
                            per_broker
                                .entry(addr.to_string())
                                .or_default()
                                .insert(topic.clone());
                        }
                    }
                }
                Err(s) => {
                    tracing::debug!(topic, why = %s.message, "no route for a producer heartbeat")
                }
            }
        }
        per_broker
    }

    /// Turns a broker's CHECK_TRANSACTION_STATE into a RecoverOrphanedTransaction pushed to a
    /// connected producer of the half message's topic. Without one, the check is dropped: the
    /// broker checks again later and rolls back after its maximum checks.
    pub fn transaction_check_handler(&self) -> Arc<dyn RequestProcessor> {
        let service = self.clone();
        processor_fn(move |_ctx, request: RemotingCommand| {
            let service = service.clone();
            async move {
                if request.code == request_code::CHECK_TRANSACTION_STATE {
                    service.recover_orphaned(&request);
                }
                None
            }
        })
    }

    fn recover_orphaned(&self, request: &RemotingCommand) {
        let m = match rocketraft_common::message::decode_message(&request.body) {
            Ok((m, _)) => m,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable transaction check from a broker");
                return;
            }
        };
        let group = m
            .message
            .property(property::PRODUCER_GROUP)
            .unwrap_or(&m.message.topic)
            .to_string();
        let Some(session) = self.sessions.publisher_of(&group) else {
            tracing::debug!(%group, "no producer of the topic on this proxy to check a transaction");
            return;
        };
        let Some(command) = recover_command(&m, request) else {
            tracing::warn!("transaction check without offsets");
            return;
        };
        if let Err(e) = session.sender.try_send(Ok(command)) {
            tracing::debug!(client = %session.client_id, error = %e, "transaction check not pushed");
        } else {
            tracing::debug!(client = %session.client_id, %group, "transaction check pushed");
        }
    }
}

/// The RecoverOrphanedTransaction of a broker's check of the half message `m`; `None` when the
/// check has no offsets.
fn recover_command(m: &MessageExt, request: &RemotingCommand) -> Option<pb::TelemetryCommand> {
    let parse = |key: &str| request.ext(key).and_then(|v| v.parse::<i64>().ok());
    let queue_offset = parse("tranStateTableOffset")?;
    let commit_log_offset = parse("commitLogOffset")?;
    let message_id = m
        .message
        .uniq_key()
        .or(request.ext("msgId"))
        .unwrap_or_default()
        .to_string();
    let transaction_id = TransactionId {
        broker_name: request.ext("brokerName").unwrap_or_default().to_string(),
        queue_offset,
        commit_log_offset,
        message_id,
        traced: m
            .message
            .property(super::convert::TRACE_CONTEXT)
            .is_some_and(|t| !t.is_empty()),
    }
    .encode();
    let namespace = match m.message.topic.split_once('%') {
        Some((ns, _)) if !ns.is_empty() => ns,
        _ => "",
    };
    Some(pb::TelemetryCommand {
        status: Some(ok()),
        command: Some(
            pb::telemetry_command::Command::RecoverOrphanedTransactionCommand(
                pb::RecoverOrphanedTransactionCommand {
                    message: Some(to_pb(m, namespace, 0)),
                    transaction_id,
                },
            ),
        ),
    })
}
