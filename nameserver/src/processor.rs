//! Remoting request handlers of the NameServer (`DefaultRequestProcessor`).

use std::sync::Arc;

use parking_lot::RwLock;
use rocketraft_common::json::unquote_numeric_keys_of;
use rocketraft_common::protocol::{from_json_body, DataVersion, RegisterBrokerBody, TopicList};
use rocketraft_common::time::now_ms;
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::server::{BoxFuture, RequestContext, RequestProcessor};
use rocketraft_remoting::{Refusal, RemotingCommand};
use serde::Serialize;

use crate::kv::{KvTable, ORDER_TOPIC_CONFIG};
use crate::route::{Registration, RouteTable};

/// The request version from which Java clients expect standard JSON (quoted numeric keys):
/// `MQVersion.Version.V4_9_4.ordinal()`.
const STANDARD_JSON_SINCE_VERSION: i32 = 401;

/// Shared state of one NameServer.
pub struct NamesrvState {
    pub routes: RwLock<RouteTable>,
    pub kv: RwLock<KvTable>,
    pub default_broker_expire_ms: i64,
    /// Events counted for `/metrics`.
    pub metrics: crate::metrics::NamesrvMetrics,
}

/// Handles every NameServer request code; unknown codes never reach it (the server answers them).
pub struct NamesrvProcessor {
    pub state: Arc<NamesrvState>,
}

/// The request codes this processor is registered for.
pub const HANDLED_CODES: &[i32] = &[
    request_code::PUT_KV_CONFIG,
    request_code::GET_KV_CONFIG,
    request_code::DELETE_KV_CONFIG,
    request_code::REGISTER_BROKER,
    request_code::UNREGISTER_BROKER,
    request_code::GET_ROUTEINFO_BY_TOPIC,
    request_code::GET_BROKER_CLUSTER_INFO,
    request_code::GET_ALL_TOPIC_LIST_FROM_NAMESERVER,
    request_code::GET_TOPICS_BY_CLUSTER,
    request_code::DELETE_TOPIC_IN_NAMESRV,
    request_code::QUERY_DATA_VERSION,
    request_code::WIPE_WRITE_PERM_OF_BROKER,
    request_code::ADD_WRITE_PERM_OF_BROKER,
];

impl RequestProcessor for NamesrvProcessor {
    fn process(
        &self,
        _ctx: RequestContext,
        request: RemotingCommand,
    ) -> BoxFuture<Option<RemotingCommand>> {
        let response = self.handle(&request);
        Box::pin(async move {
            if request.is_oneway() {
                None
            } else {
                Some(response)
            }
        })
    }
}

impl NamesrvProcessor {
    fn handle(&self, request: &RemotingCommand) -> RemotingCommand {
        let result = match request.code {
            request_code::REGISTER_BROKER => self.register_broker(request),
            request_code::UNREGISTER_BROKER => self.unregister_broker(request),
            request_code::GET_ROUTEINFO_BY_TOPIC => self.route_by_topic(request),
            request_code::GET_BROKER_CLUSTER_INFO => {
                let info = self.state.routes.read().cluster_info();
                json_response(request, &info)
            }
            request_code::GET_ALL_TOPIC_LIST_FROM_NAMESERVER => {
                let list = TopicList {
                    topic_list: self.state.routes.read().topics(),
                    broker_addr: None,
                };
                json_response(request, &list)
            }
            request_code::GET_TOPICS_BY_CLUSTER => self.topics_by_cluster(request),
            request_code::DELETE_TOPIC_IN_NAMESRV => self.delete_topic(request),
            request_code::QUERY_DATA_VERSION => self.query_data_version(request),
            request_code::WIPE_WRITE_PERM_OF_BROKER => self.wipe_write_perm(request),
            request_code::ADD_WRITE_PERM_OF_BROKER => self.add_write_perm(request),
            request_code::PUT_KV_CONFIG => self.put_kv(request),
            request_code::GET_KV_CONFIG => self.get_kv(request),
            request_code::DELETE_KV_CONFIG => self.delete_kv(request),
            other => Err(Refusal::new(
                response_code::REQUEST_CODE_NOT_SUPPORTED,
                format!("request code {other} is not served by the NameServer"),
            )),
        };
        match result {
            Ok(response) => response,
            Err(refusal) => refusal.response_to(request),
        }
    }

    fn register_broker(&self, request: &RemotingCommand) -> Result<RemotingCommand, Refusal> {
        let cluster = request.require_ext("clusterName")?.to_string();
        let broker_addr = request.require_ext("brokerAddr")?.to_string();
        let broker_name = request.require_ext("brokerName")?.to_string();
        let broker_id: i64 = request.ext_parse("brokerId")?;
        let ha_server_addr = request.ext("haServerAddr").unwrap_or_default().to_string();
        let timeout_ms: i64 = request
            .ext_parse_opt("heartbeatTimeoutMillis")?
            .filter(|t: &i64| *t > 0)
            .unwrap_or(self.state.default_broker_expire_ms);
        if request.ext("compressed") == Some("true") {
            return Err(Refusal::new(
                response_code::SYSTEM_ERROR,
                "compressed REGISTER_BROKER bodies are not supported; set compressedRegister=false on the broker",
            ));
        }
        if let Some(expected) = request.ext_parse_opt::<i32>("bodyCrc32")? {
            let actual = (crc32(&request.body) & 0x7FFF_FFFF) as i32;
            if expected != 0 && expected != actual {
                return Err(Refusal::new(
                    response_code::SYSTEM_ERROR,
                    format!(
                        "the body CRC {actual} does not match the header's bodyCrc32 {expected}"
                    ),
                ));
            }
        }
        let body: RegisterBrokerBody = if request.body.is_empty() {
            RegisterBrokerBody::default()
        } else {
            from_json_body(&request.body).map_err(|e| {
                Refusal::new(
                    response_code::SYSTEM_ERROR,
                    format!("the REGISTER_BROKER body is not a RegisterBrokerBody: {e}"),
                )
            })?
        };
        for config in body
            .topic_config_serialize_wrapper
            .topic_config_table
            .values()
        {
            config.validate().map_err(|e| {
                Refusal::new(
                    response_code::SYSTEM_ERROR,
                    format!("topic {:?} in the registration: {e}", config.topic_name),
                )
            })?;
        }
        let result = self.state.routes.write().register(
            Registration {
                cluster,
                broker_addr: broker_addr.clone(),
                broker_name: broker_name.clone(),
                broker_id,
                ha_server_addr,
                timeout_ms,
                topics: body.topic_config_serialize_wrapper,
            },
            now_ms(),
        );
        tracing::debug!(broker = %broker_name, id = broker_id, addr = %broker_addr, "broker registered");
        let mut response = request.response_to(response_code::SUCCESS, None);
        if let Some(ha) = result.ha_server_addr {
            response = response.with_ext("haServerAddr", ha);
        }
        if let Some(master) = result.master_addr {
            response = response.with_ext("masterAddr", master);
        }
        if let Some(order) = self.state.kv.read().namespace(ORDER_TOPIC_CONFIG) {
            let table = serde_json::json!({ "table": order });
            response = response.with_body(table.to_string().into_bytes());
        }
        Ok(response)
    }

    fn unregister_broker(&self, request: &RemotingCommand) -> Result<RemotingCommand, Refusal> {
        let cluster = request.require_ext("clusterName")?;
        let broker_addr = request.require_ext("brokerAddr")?;
        let broker_name = request.require_ext("brokerName")?;
        let broker_id: i64 = request.ext_parse("brokerId")?;
        self.state
            .routes
            .write()
            .unregister(cluster, broker_addr, broker_name, broker_id);
        tracing::info!(broker = %broker_name, id = broker_id, addr = %broker_addr, "broker unregistered");
        Ok(request.response_to(response_code::SUCCESS, None))
    }

    fn route_by_topic(&self, request: &RemotingCommand) -> Result<RemotingCommand, Refusal> {
        let topic = request.require_ext("topic")?;
        let route = self.state.routes.read().route(topic);
        self.state.metrics.route_query(route.is_some());
        let Some(mut route) = route else {
            return Err(Refusal::new(
                response_code::TOPIC_NOT_EXIST,
                format!("No topic route info in name server for the topic: {topic}"),
            ));
        };
        if let Some(conf) = self.state.kv.read().get(ORDER_TOPIC_CONFIG, topic) {
            route.order_topic_conf = Some(conf.to_string());
        }
        json_response(request, &route)
    }

    fn topics_by_cluster(&self, request: &RemotingCommand) -> Result<RemotingCommand, Refusal> {
        let cluster = request.require_ext("cluster")?;
        let list = TopicList {
            topic_list: self.state.routes.read().topics_of_cluster(cluster),
            broker_addr: None,
        };
        json_response(request, &list)
    }

    fn delete_topic(&self, request: &RemotingCommand) -> Result<RemotingCommand, Refusal> {
        let topic = request.require_ext("topic")?;
        let cluster = request.ext("clusterName").filter(|c| !c.is_empty());
        self.state.routes.write().delete_topic(topic, cluster);
        Ok(request.response_to(response_code::SUCCESS, None))
    }

    fn query_data_version(&self, request: &RemotingCommand) -> Result<RemotingCommand, Refusal> {
        let cluster = request.require_ext("clusterName")?;
        let broker_addr = request.require_ext("brokerAddr")?;
        let version: Option<DataVersion> = if request.body.is_empty() {
            None
        } else {
            Some(from_json_body(&request.body).map_err(|e| {
                Refusal::new(
                    response_code::SYSTEM_ERROR,
                    format!("the body is not a DataVersion: {e}"),
                )
            })?)
        };
        let changed =
            self.state
                .routes
                .write()
                .touch(cluster, broker_addr, version.as_ref(), now_ms());
        Ok(request
            .response_to(response_code::SUCCESS, None)
            .with_ext("changed", changed.to_string()))
    }

    /// WIPE_WRITE_PERM_OF_BROKER (205), header `brokerName`: the broker set's topics become
    /// read-only in the routes served from now on (producers stop sending to it, consumers keep
    /// reading); answers `wipeTopicCount`. An unknown broker set touches nothing and answers 0.
    fn wipe_write_perm(&self, request: &RemotingCommand) -> Result<RemotingCommand, Refusal> {
        let broker_name = request.require_ext("brokerName")?;
        let count = self.state.routes.write().wipe_write_perm(broker_name);
        tracing::info!(broker = %broker_name, topics = count, "write permission of broker wiped");
        Ok(request
            .response_to(response_code::SUCCESS, None)
            .with_ext("wipeTopicCount", count))
    }

    /// ADD_WRITE_PERM_OF_BROKER (327), header `brokerName`: the broker set's topics are readable
    /// and writable again; answers `addTopicCount`.
    fn add_write_perm(&self, request: &RemotingCommand) -> Result<RemotingCommand, Refusal> {
        let broker_name = request.require_ext("brokerName")?;
        let count = self.state.routes.write().add_write_perm(broker_name);
        tracing::info!(broker = %broker_name, topics = count, "write permission of broker added");
        Ok(request
            .response_to(response_code::SUCCESS, None)
            .with_ext("addTopicCount", count))
    }

    fn put_kv(&self, request: &RemotingCommand) -> Result<RemotingCommand, Refusal> {
        let namespace = request.require_ext("namespace")?;
        let key = request.require_ext("key")?;
        let value = request.require_ext("value")?;
        self.state.kv.write().put(namespace, key, value);
        Ok(request.response_to(response_code::SUCCESS, None))
    }

    fn get_kv(&self, request: &RemotingCommand) -> Result<RemotingCommand, Refusal> {
        let namespace = request.require_ext("namespace")?;
        let key = request.require_ext("key")?;
        match self.state.kv.read().get(namespace, key) {
            Some(value) => Ok(request
                .response_to(response_code::SUCCESS, None)
                .with_ext("value", value)),
            None => Err(Refusal::new(
                response_code::QUERY_NOT_FOUND,
                format!("No config item, Namespace: {namespace} Key: {key}"),
            )),
        }
    }

    fn delete_kv(&self, request: &RemotingCommand) -> Result<RemotingCommand, Refusal> {
        let namespace = request.require_ext("namespace")?;
        let key = request.require_ext("key")?;
        self.state.kv.write().delete(namespace, key);
        Ok(request.response_to(response_code::SUCCESS, None))
    }
}

/// A SUCCESS response with a JSON body in the dialect the requester reads: fastjson's bare
/// numeric `brokerAddrs` keys for old clients, standard JSON for new ones.
fn json_response<T: Serialize>(
    request: &RemotingCommand,
    value: &T,
) -> Result<RemotingCommand, Refusal> {
    let json = serde_json::to_string(value).map_err(|e| {
        Refusal::new(
            response_code::SYSTEM_ERROR,
            format!("could not encode the response: {e}"),
        )
    })?;
    let standard = request.version >= STANDARD_JSON_SINCE_VERSION
        || request.ext("acceptStandardJsonOnly") == Some("true");
    let json = if standard {
        json
    } else {
        unquote_numeric_keys_of(&json, "brokerAddrs")
    };
    Ok(request
        .response_to(response_code::SUCCESS, None)
        .with_body(json.into_bytes()))
}

fn crc32(data: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(data);
    hasher.finalize()
}
