//! The management codes of mqadmin and dashboards on [`MqClientApi`] (`MQClientAPIImpl`'s
//! `getConsumerConnectionList`, `getProducerConnectionList`, `queryTopicConsumeByWho`,
//! `getConsumerRunningInfo`, `consumeMessageDirectly`, `getBrokerConfig`, `updateBrokerConfig`,
//! `getBrokerEpochCache`, `wipeWritePermOfBroker`, `addWritePermOfBroker`), with RocketMQ's
//! header names and bodies parsed into typed results.

use std::collections::BTreeMap;

use rocketraft_common::manage::{
    ConsumeMessageDirectlyResult, ConsumerConnection, ConsumerRunningInfo, EpochEntryCache,
    GroupList, ProducerConnection,
};
use rocketraft_common::properties::Properties;
use rocketraft_common::protocol::{from_json_body, DataVersion};

use crate::api::{ApiError, MqClientApi};
use crate::codes::{request_code, response_code};
use crate::RemotingCommand;

/// A broker's configuration as GET_BROKER_CONFIG (26) answers it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerConfigSnapshot {
    /// Every setting, by RocketMQ's key where it has one.
    pub properties: BTreeMap<String, String>,
    /// The configuration's version (the response header `version`), bumped by every update.
    pub version: Option<DataVersion>,
}

/// Properties text as `MixAll.properties2String` writes it (`key=value` lines), with the
/// backslashes and line breaks of values escaped so that `Properties.load` reads them back.
pub fn properties_text<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (key, value) in entries {
        out.push_str(key);
        out.push('=');
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                other => out.push(other),
            }
        }
        out.push('\n');
    }
    out
}

impl MqClientApi {
    /// GET_CONSUMER_CONNECTION_LIST: the connections of consumer group `group` on `broker` and
    /// its subscriptions. A group without a live client is refused with CONSUMER_NOT_ONLINE.
    pub async fn consumer_connections(
        &self,
        broker: &str,
        group: &str,
    ) -> Result<ConsumerConnection, ApiError> {
        let request = RemotingCommand::request(request_code::GET_CONSUMER_CONNECTION_LIST)
            .with_ext("consumerGroup", group);
        let response = self
            .call(broker, request, &[response_code::SUCCESS])
            .await?;
        from_json_body(&response.body).map_err(|e| {
            ApiError::Malformed(format!(
                "the ConsumerConnection of {group} does not parse: {e}"
            ))
        })
    }

    /// GET_PRODUCER_CONNECTION_LIST: the connections of producer group `group` on `broker`; a
    /// group without a live client is refused (SYSTEM_ERROR, "not exist").
    pub async fn producer_connections(
        &self,
        broker: &str,
        group: &str,
    ) -> Result<ProducerConnection, ApiError> {
        let request = RemotingCommand::request(request_code::GET_PRODUCER_CONNECTION_LIST)
            .with_ext("producerGroup", group);
        let response = self
            .call(broker, request, &[response_code::SUCCESS])
            .await?;
        from_json_body(&response.body).map_err(|e| {
            ApiError::Malformed(format!(
                "the ProducerConnection of {group} does not parse: {e}"
            ))
        })
    }

    /// QUERY_TOPIC_CONSUME_BY_WHO: the consumer groups of `topic` on `broker` (online consumers
    /// subscribed to it, and groups with committed offsets on it).
    pub async fn topic_consumed_by(
        &self,
        broker: &str,
        topic: &str,
    ) -> Result<GroupList, ApiError> {
        let request = RemotingCommand::request(request_code::QUERY_TOPIC_CONSUME_BY_WHO)
            .with_ext("topic", topic);
        let response = self
            .call(broker, request, &[response_code::SUCCESS])
            .await?;
        from_json_body(&response.body).map_err(|e| {
            ApiError::Malformed(format!("the GroupList of {topic} does not parse: {e}"))
        })
    }

    /// GET_CONSUMER_RUNNING_INFO: `broker` asks the consumer `client_id` of `group` over its own
    /// connection and relays the answer (with its thread dump when `jstack`).
    pub async fn consumer_running_info(
        &self,
        broker: &str,
        group: &str,
        client_id: &str,
        jstack: bool,
    ) -> Result<ConsumerRunningInfo, ApiError> {
        let request = RemotingCommand::request(request_code::GET_CONSUMER_RUNNING_INFO)
            .with_ext("consumerGroup", group)
            .with_ext("clientId", client_id)
            .with_ext("jstackEnable", jstack.to_string());
        let response = self
            .call(broker, request, &[response_code::SUCCESS])
            .await?;
        ConsumerRunningInfo::from_json(&response.body).map_err(|e| {
            ApiError::Malformed(format!(
                "the ConsumerRunningInfo of {client_id} does not parse: {e}"
            ))
        })
    }

    /// CONSUME_MESSAGE_DIRECTLY: `broker` hands the message `msg_id` (an offset message id of
    /// that broker) to the consumer `client_id` of `group`, which consumes it and says how.
    pub async fn consume_message_directly(
        &self,
        broker: &str,
        group: &str,
        client_id: &str,
        topic: &str,
        msg_id: &str,
    ) -> Result<ConsumeMessageDirectlyResult, ApiError> {
        let request = RemotingCommand::request(request_code::CONSUME_MESSAGE_DIRECTLY)
            .with_ext("consumerGroup", group)
            .with_ext("clientId", client_id)
            .with_ext("topic", topic)
            .with_ext("msgId", msg_id);
        let response = self
            .call(broker, request, &[response_code::SUCCESS])
            .await?;
        from_json_body(&response.body).map_err(|e| {
            ApiError::Malformed(format!(
                "the ConsumeMessageDirectlyResult of {client_id} does not parse: {e}"
            ))
        })
    }

    /// GET_BROKER_CONFIG: every setting of `broker` and the configuration's version.
    pub async fn broker_config(&self, broker: &str) -> Result<BrokerConfigSnapshot, ApiError> {
        let request = RemotingCommand::request(request_code::GET_BROKER_CONFIG);
        let response = self
            .call(broker, request, &[response_code::SUCCESS])
            .await?;
        let text = String::from_utf8_lossy(&response.body);
        let parsed = Properties::parse(&text)
            .map_err(|e| ApiError::Malformed(format!("the broker's config does not parse: {e}")))?;
        let version = match response.ext("version").filter(|v| !v.is_empty()) {
            Some(v) => Some(from_json_body(v.as_bytes()).map_err(|e| {
                ApiError::Malformed(format!("the config version {v:?} does not parse: {e}"))
            })?),
            None => None,
        };
        Ok(BrokerConfigSnapshot {
            properties: parsed
                .entries()
                .iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect(),
            version,
        })
    }

    /// UPDATE_BROKER_CONFIG: changes the settings `entries` (RocketMQ's keys) on `broker`. The
    /// broker applies all of them or, refusing one, none.
    pub async fn update_broker_config(
        &self,
        broker: &str,
        entries: &[(&str, &str)],
    ) -> Result<(), ApiError> {
        let request = RemotingCommand::request(request_code::UPDATE_BROKER_CONFIG)
            .with_body(properties_text(entries.iter().copied()).into_bytes());
        self.call(broker, request, &[response_code::SUCCESS])
            .await?;
        Ok(())
    }

    /// GET_BROKER_EPOCH_CACHE: the epochs of `broker`'s CommitLog (controller mode).
    pub async fn broker_epoch_cache(&self, broker: &str) -> Result<EpochEntryCache, ApiError> {
        let request = RemotingCommand::request(request_code::GET_BROKER_EPOCH_CACHE);
        let response = self
            .call(broker, request, &[response_code::SUCCESS])
            .await?;
        from_json_body(&response.body)
            .map_err(|e| ApiError::Malformed(format!("the EpochEntryCache does not parse: {e}")))
    }

    /// WIPE_WRITE_PERM_OF_BROKER on a NameServer: the topics of broker set `broker_name` become
    /// read-only in its routes; answers how many topics changed (`wipeTopicCount`).
    pub async fn wipe_write_perm(&self, namesrv: &str, broker_name: &str) -> Result<i32, ApiError> {
        self.write_perm(
            namesrv,
            request_code::WIPE_WRITE_PERM_OF_BROKER,
            broker_name,
            "wipeTopicCount",
        )
        .await
    }

    /// ADD_WRITE_PERM_OF_BROKER on a NameServer: the topics of broker set `broker_name` are
    /// readable and writable again in its routes; answers how many (`addTopicCount`).
    pub async fn add_write_perm(&self, namesrv: &str, broker_name: &str) -> Result<i32, ApiError> {
        self.write_perm(
            namesrv,
            request_code::ADD_WRITE_PERM_OF_BROKER,
            broker_name,
            "addTopicCount",
        )
        .await
    }

    async fn write_perm(
        &self,
        namesrv: &str,
        code: i32,
        broker_name: &str,
        count_field: &str,
    ) -> Result<i32, ApiError> {
        let request = RemotingCommand::request(code).with_ext("brokerName", broker_name);
        // Every NameServer keeps its own routes: all of them change, and the count is the
        // largest any reports (RocketMQ's admin asks each in turn the same way).
        let responses = self
            .call_every_namesrv(namesrv, request, &[response_code::SUCCESS])
            .await?;
        let mut most = 0;
        for response in responses {
            let count: i32 = response
                .ext(count_field)
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| {
                    ApiError::Malformed(format!(
                        "the answer has no numeric {count_field}: {:?}",
                        response.ext(count_field)
                    ))
                })?;
            most = most.max(count);
        }
        Ok(most)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_text_escapes_what_load_would_eat() {
        let text = properties_text([("deleteWhen", "04;16"), ("storePathRootDir", "C:\\x\ny")]);
        assert_eq!(text, "deleteWhen=04;16\nstorePathRootDir=C:\\\\x\\ny\n");
        let back = Properties::parse(&text).expect("parses");
        assert_eq!(
            back.get("storePathRootDir").map(|e| e.value.as_str()),
            Some("C:\\x\ny")
        );
    }
}
