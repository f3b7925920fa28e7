//! Trace records the proxy writes for the clients that ask for tracing, in RocketMQ's
//! `TraceDataEncoder` format ([`rocketraft_common::trace`]), to `RMQ_SYS_TRACE_TOPIC` with the
//! traced message's id and keys as `KEYS` (what `rocketraft admin message trace --id` looks up).
//!
//! A gRPC client asks for tracing per message: the official clients fill
//! `SystemProperties.trace_context` (a W3C `traceparent`) when their tracing is on. RocketMQ's
//! proxy only carries that context (as the `TRACE_CONTEXT` property, back to consumers); ours
//! also records what it did with such a message:
//!
//! - a `Pub` record after each SendMessage of a traced message it handles (success or not,
//!   the cost, the broker's offset id);
//! - a `SubAfter` record for each AckMessage of a traced message this proxy delivered (it
//!   remembers the ids of the last [`REMEMBERED`] traced messages it handed out, since an ack
//!   names a message only by id and handle).
//!
//! A trace write never fails the client's request: it is best effort and logged when refused.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use rocketraft_common::consts::perm;
use rocketraft_common::time::now_ms;
use rocketraft_common::trace::{trace_keys, PubTrace, SubAfterTrace, TRACE_TOPIC};
use rocketraft_remoting::api::{SendRequest, SendResult};
use rocketraft_remoting::codes::response_code;

use super::validate::Outgoing;
use super::Service;
use crate::pb;

/// Traced deliveries remembered for their acks.
pub(super) const REMEMBERED: usize = 65_536;

/// Traced deliveries by message id: (keys, delivered at); and the ids, oldest first.
type Remembered = (HashMap<String, (String, Instant)>, VecDeque<String>);

/// The traced messages this proxy delivered, oldest forgotten first.
#[derive(Default)]
pub(super) struct TracedDeliveries {
    inner: Mutex<Remembered>,
}

impl TracedDeliveries {
    /// Remembers a delivered message if it carries a trace context.
    pub(super) fn delivered(&self, m: &pb::Message) {
        let Some(sys) = m.system_properties.as_ref() else {
            return;
        };
        if sys.trace_context.as_deref().is_none_or(str::is_empty) {
            return;
        }
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *guard;
        if map
            .insert(sys.message_id.clone(), (sys.keys.join(" "), Instant::now()))
            .is_none()
        {
            order.push_back(sys.message_id.clone());
        }
        while order.len() > REMEMBERED {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }

    /// The keys and delivery time of a traced message, forgetting it.
    fn take(&self, message_id: &str) -> Option<(String, Instant)> {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *guard;
        let found = map.remove(message_id)?;
        order.retain(|id| id != message_id);
        Some(found)
    }
}

/// Whether a message asks for tracing.
pub(super) fn traced(message: &pb::Message) -> bool {
    message
        .system_properties
        .as_ref()
        .and_then(|s| s.trace_context.as_deref())
        .is_some_and(|t| !t.is_empty())
}

/// RocketMQ's `MessageType` ordinal of a gRPC message type.
fn message_type_ordinal(out: &Outgoing<'_>) -> usize {
    if out.transactional {
        return 1;
    }
    match pb::MessageType::try_from(out.message_type) {
        Ok(pb::MessageType::Fifo) => 4,
        Ok(pb::MessageType::Delay) => 3,
        Ok(pb::MessageType::Transaction) => 1,
        _ => 0,
    }
}

impl Service {
    /// The `Pub` record of a traced send: `result` is the broker's answer (`None`: the send
    /// failed).
    pub(super) async fn trace_send(
        &self,
        message: &pb::Message,
        out: &Outgoing<'_>,
        store_host: &str,
        result: Option<&SendResult>,
        started: Instant,
    ) {
        let keys = out.sys.keys.join(" ");
        let record = PubTrace {
            timestamp: now_ms(),
            region_id: "DefaultRegion".into(),
            group_name: "proxy".into(),
            topic: out.topic.clone(),
            msg_id: out.sys.message_id.clone(),
            tags: out.sys.tag.clone().unwrap_or_default(),
            keys: keys.clone(),
            store_host: store_host.to_string(),
            body_length: message.body.len(),
            cost_time_ms: started.elapsed().as_millis() as i64,
            msg_type: message_type_ordinal(out),
            offset_msg_id: result.map(|r| r.msg_id.clone()).unwrap_or_default(),
            success: result.is_some_and(|r| r.code == response_code::SUCCESS),
        };
        self.write_trace(&out.sys.message_id, &keys, record.encode())
            .await;
    }

    /// The `SubAfter` record of an ack, if this proxy delivered the message with a trace
    /// context.
    pub(super) async fn trace_ack(&self, group: &str, message_id: &str, success: bool) {
        let Some((keys, delivered)) = self.traced.take(message_id) else {
            return;
        };
        let record = SubAfterTrace {
            request_id: format!("proxy-ack-{}", now_ms()),
            msg_id: message_id.to_string(),
            cost_time_ms: delivered.elapsed().as_millis() as i64,
            success,
            keys: keys.clone(),
            context_code: if success { 0 } else { 2 },
            timestamp: now_ms(),
            group_name: group.to_string(),
        };
        self.write_trace(message_id, &keys, record.encode()).await;
    }

    /// Sends one trace message to a writable queue of the trace topic.
    async fn write_trace(&self, message_id: &str, keys: &str, body: String) {
        let target = async {
            let route = self.route(TRACE_TOPIC).await.ok()?;
            let queue = route
                .queue_datas
                .iter()
                .find(|q| perm::is_writeable(q.perm) && q.write_queue_nums > 0)?;
            let addr = self.master_of(&route, &queue.broker_name).ok()?;
            Some(addr)
        }
        .await;
        let Some(addr) = target else {
            tracing::warn!(
                message_id,
                "no writable {TRACE_TOPIC} queue: trace record dropped"
            );
            return;
        };
        let request = SendRequest {
            producer_group: "_INNER_TRACE_PRODUCER-proxy".into(),
            topic: TRACE_TOPIC.into(),
            queue_id: 0,
            body: bytes::Bytes::from(body),
            properties: [(
                rocketraft_common::consts::property::KEYS.to_string(),
                trace_keys(message_id, keys),
            )]
            .into_iter()
            .collect(),
            ..SendRequest::default()
        };
        match self.api.send(&addr, &request).await {
            Ok(r) if r.code == response_code::SUCCESS => {}
            Ok(r) => tracing::warn!(message_id, code = r.code, "trace record refused"),
            Err(e) => tracing::warn!(message_id, error = %e, "trace record not written"),
        }
    }
}
