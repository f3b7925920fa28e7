//! Routes and clients: QueryRoute, QueryAssignment, Heartbeat, NotifyClientTermination,
//! SyncLiteSubscription; and which broker set and master a request's queue or handle names.

use rocketraft_common::consts::perm;
use rocketraft_common::protocol::TopicRouteData;

use super::admission::required_topic;
use super::convert::{ok, status, wrapped};
use super::Service;
use crate::pb;

pub(super) async fn query_route(
    service: &Service,
    req: pb::QueryRouteRequest,
) -> Result<pb::QueryRouteResponse, pb::Status> {
    let topic = required_topic(req.topic.as_ref())?;
    Ok(pb::QueryRouteResponse {
        status: Some(ok()),
        message_queues: service.topic_queues(topic).await?,
    })
}

/// Every readable queue of the topic; of a LITE topic, one per broker set (a receive there
/// pops the client's lite topics of that broker set, whatever queue it names).
pub(super) async fn query_assignment(
    service: &Service,
    req: pb::QueryAssignmentRequest,
) -> Result<pb::QueryAssignmentResponse, pb::Status> {
    let topic = required_topic(req.topic.as_ref())?;
    let mut brokers = std::collections::BTreeSet::new();
    let assignments = service
        .topic_queues(topic)
        .await?
        .into_iter()
        .filter(|q| {
            q.permission == pb::Permission::Read as i32
                || q.permission == pb::Permission::ReadWrite as i32
        })
        .filter(|q| {
            q.accept_message_types != [pb::MessageType::Lite as i32]
                || brokers.insert(q.broker.as_ref().map(|b| b.name.clone()))
        })
        .map(|q| pb::Assignment {
            message_queue: Some(q),
        })
        .collect();
    Ok(pb::QueryAssignmentResponse {
        status: Some(ok()),
        assignments,
    })
}

/// A client whose credentials pass is alive; the proxy keeps nothing about it.
pub(super) async fn heartbeat(
    _service: &Service,
    _req: pb::HeartbeatRequest,
) -> Result<pb::HeartbeatResponse, pb::Status> {
    Ok(pb::HeartbeatResponse { status: Some(ok()) })
}

/// Closes the Telemetry streams of the client (`x-mq-client-id`) on this proxy.
pub(super) async fn notify_client_termination(
    service: &Service,
    client: Option<String>,
) -> Result<pb::NotifyClientTerminationResponse, pb::Status> {
    if let Some(client) = client {
        service.lite.drop_client(&client);
        let closed = service.sessions.close_client(&client);
        tracing::debug!(client, closed, "client terminated");
        if closed > 0 {
            service.meta.heartbeat_now.notify_one();
        }
    }
    Ok(pb::NotifyClientTerminationResponse { status: Some(ok()) })
}

/// The broker set a request's queue names: its `broker`, else the route's first.
pub(super) fn queue_broker(mq: &pb::MessageQueue, route: &TopicRouteData) -> String {
    mq.broker
        .as_ref()
        .map(|b| b.name.clone())
        .filter(|b| !b.is_empty())
        .or_else(|| route.broker_datas.first().map(|b| b.broker_name.clone()))
        .unwrap_or_default()
}

impl Service {
    /// The master address of a broker set; HA_NOT_AVAILABLE while it has none (a failover).
    pub(super) fn master_of(
        &self,
        route: &TopicRouteData,
        broker: &str,
    ) -> Result<String, pb::Status> {
        route
            .broker_datas
            .iter()
            .find(|b| b.broker_name == broker)
            .and_then(|b| b.master_addr().map(str::to_string))
            .ok_or_else(|| {
                status(
                    pb::Code::HaNotAvailable,
                    format!("broker set {broker} has no master now"),
                )
            })
    }

    /// The master of a broker set of `topic` (a namespaced name), from the topic's route.
    pub(super) async fn master(&self, topic: &str, broker: &str) -> Result<String, pb::Status> {
        let route = self.route(topic).await?;
        self.master_of(&route, broker)
    }

    /// Every queue of a topic, this proxy as their endpoint, with the message types the topic
    /// accepts.
    async fn topic_queues(
        &self,
        topic: &pb::Resource,
    ) -> Result<Vec<pb::MessageQueue>, pb::Status> {
        let name = wrapped(topic);
        let route = self.route(&name).await?;
        let accept = self.topic_types(&name, &route).await;
        Ok(self.queues(topic, &route, &accept))
    }

    fn endpoints(&self) -> pb::Endpoints {
        pb::Endpoints {
            scheme: pb::AddressScheme::IPv4 as i32,
            addresses: vec![pb::Address {
                host: self.config.endpoint.0.clone(),
                port: self.config.endpoint.1 as i32,
            }],
        }
    }

    fn queues(
        &self,
        topic: &pb::Resource,
        route: &TopicRouteData,
        accept: &[i32],
    ) -> Vec<pb::MessageQueue> {
        let mut out = Vec::new();
        for q in &route.queue_datas {
            let n = q.read_queue_nums.max(q.write_queue_nums);
            for id in 0..n {
                let read = perm::is_readable(q.perm) && id < q.read_queue_nums;
                let write = perm::is_writeable(q.perm) && id < q.write_queue_nums;
                let permission = match (read, write) {
                    (true, true) => pb::Permission::ReadWrite,
                    (true, false) => pb::Permission::Read,
                    (false, true) => pb::Permission::Write,
                    (false, false) => pb::Permission::None,
                };
                out.push(pb::MessageQueue {
                    topic: Some(topic.clone()),
                    id,
                    permission: permission as i32,
                    broker: Some(pb::Broker {
                        name: q.broker_name.clone(),
                        id: 0,
                        endpoints: Some(self.endpoints()),
                    }),
                    accept_message_types: accept.to_vec(),
                });
            }
        }
        out
    }
}
