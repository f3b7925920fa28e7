//! Consumer offsets and pulling by offset, on the master of the broker set a message queue
//! names: PullMessage, UpdateOffset, GetOffset, QueryOffset (beginning, end, by time).

use rocketraft_common::consts::pull_sys_flag;
use rocketraft_remoting::api::{PullRequest, PullResult};

use super::admission::{required_group, required_queue, required_topic};
use super::convert::{duration_ms, from_api, ok, status, timestamp_ms, to_pb, wrapped};
use super::route::queue_broker;
use super::{stream_of, BoxStream, Service};
use crate::pb;

type Item = pb::PullMessageResponse;

/// PULL_MESSAGE from the queue at the request's offset (long polling when asked).
pub(super) async fn pull_message(
    service: &Service,
    req: pb::PullMessageRequest,
) -> Result<BoxStream<Item>, pb::Status> {
    let group = required_group(req.group.as_ref())?;
    let (topic, addr, queue) = service.queue_target(req.message_queue.as_ref()).await?;
    let expression = req
        .filter_expression
        .as_ref()
        .map(|f| f.expression.clone())
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "*".into());
    let poll = req
        .long_polling_timeout
        .as_ref()
        .map(duration_ms)
        .unwrap_or(0)
        .clamp(0, service.config.max_long_polling.as_millis() as i64);
    let suspend = if poll > 0 { pull_sys_flag::SUSPEND } else { 0 };
    let pull = PullRequest {
        consumer_group: wrapped(group),
        topic,
        queue_id: queue,
        queue_offset: req.offset,
        max_msg_nums: req.batch_size.clamp(1, 32),
        sys_flag: pull_sys_flag::SUBSCRIPTION | suspend,
        commit_offset: 0,
        suspend_timeout_ms: poll,
        subscription: Some(expression),
    };
    let r = service
        .api
        .pull(&addr, &pull)
        .await
        .map_err(|e| from_api(&e))?;
    let namespace = req
        .message_queue
        .as_ref()
        .and_then(|q| q.topic.as_ref())
        .map(|t| t.resource_namespace.as_str())
        .unwrap_or_default();
    Ok(stream_of(pulled(&r, namespace)))
}

/// The stream's items: a status (MESSAGE_NOT_FOUND when nothing came), the messages, the next
/// offset.
fn pulled(r: &PullResult, namespace: &str) -> Vec<Item> {
    use pb::pull_message_response::Content;
    let first = if r.messages.is_empty() {
        status(pb::Code::MessageNotFound, "no new message")
    } else {
        ok()
    };
    let mut items = vec![Item {
        content: Some(Content::Status(first)),
    }];
    items.extend(r.messages.iter().map(|m| Item {
        content: Some(Content::Message(to_pb(m, namespace, 0))),
    }));
    items.push(Item {
        content: Some(Content::NextOffset(r.next_begin_offset)),
    });
    items
}

pub(super) async fn update_offset(
    service: &Service,
    req: pb::UpdateOffsetRequest,
) -> Result<pb::UpdateOffsetResponse, pb::Status> {
    let group = required_group(req.group.as_ref())?;
    if req.offset < 0 {
        return Err(status(pb::Code::IllegalOffset, "the offset is negative"));
    }
    let (topic, addr, queue) = service.queue_target(req.message_queue.as_ref()).await?;
    service
        .api
        .update_consumer_offset(&addr, &wrapped(group), &topic, queue, req.offset)
        .await
        .map_err(|e| from_api(&e))?;
    Ok(pb::UpdateOffsetResponse { status: Some(ok()) })
}

pub(super) async fn get_offset(
    service: &Service,
    req: pb::GetOffsetRequest,
) -> Result<pb::GetOffsetResponse, pb::Status> {
    let group = required_group(req.group.as_ref())?;
    let (topic, addr, queue) = service.queue_target(req.message_queue.as_ref()).await?;
    let offset = service
        .api
        .query_consumer_offset(&addr, &wrapped(group), &topic, queue)
        .await
        .map_err(|e| from_api(&e))?
        .ok_or_else(|| {
            status(
                pb::Code::OffsetNotFound,
                "the group has no offset for this queue",
            )
        })?;
    Ok(pb::GetOffsetResponse {
        status: Some(ok()),
        offset,
    })
}

pub(super) async fn query_offset(
    service: &Service,
    req: pb::QueryOffsetRequest,
) -> Result<pb::QueryOffsetResponse, pb::Status> {
    let (topic, addr, queue) = service.queue_target(req.message_queue.as_ref()).await?;
    let api = &service.api;
    let r = match pb::QueryOffsetPolicy::try_from(req.query_offset_policy) {
        Ok(pb::QueryOffsetPolicy::Beginning) => api.min_offset(&addr, &topic, queue).await,
        Ok(pb::QueryOffsetPolicy::End) => api.max_offset(&addr, &topic, queue).await,
        Ok(pb::QueryOffsetPolicy::Timestamp) => {
            let ts = req.timestamp.as_ref().ok_or_else(|| {
                status(
                    pb::Code::BadRequest,
                    "query_offset_policy TIMESTAMP needs a timestamp",
                )
            })?;
            api.search_offset(&addr, &topic, queue, timestamp_ms(ts))
                .await
        }
        Err(_) => return Err(status(pb::Code::BadRequest, "unknown query_offset_policy")),
    };
    Ok(pb::QueryOffsetResponse {
        status: Some(ok()),
        offset: r.map_err(|e| from_api(&e))?,
    })
}

impl Service {
    /// The topic, broker set master and queue id a request's message queue names.
    async fn queue_target(
        &self,
        mq: Option<&pb::MessageQueue>,
    ) -> Result<(String, String, i32), pb::Status> {
        let mq = required_queue(mq)?;
        let name = wrapped(required_topic(mq.topic.as_ref())?);
        let route = self.route(&name).await?;
        let addr = self.master_of(&route, &queue_broker(mq, &route))?;
        if mq.id < 0 {
            return Err(status(pb::Code::BadRequest, "a queue id is required"));
        }
        Ok((name, addr, mq.id))
    }
}
