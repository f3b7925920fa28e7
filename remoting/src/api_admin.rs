//! Topic and group administration on [`MqClientApi`] as mqadmin does it (`MQClientAPIImpl`'s
//! `deleteTopicInBroker`, `deleteTopicInNameServer`, `getAllSubscriptionGroup`,
//! `deleteSubscriptionGroup`), shared by the admin CLI and the console.

use std::collections::BTreeMap;

use crate::api::{ApiError, MqClientApi};
use crate::codes::{request_code, response_code};
use crate::RemotingCommand;

impl MqClientApi {
    /// DELETE_TOPIC_IN_BROKER: `broker` forgets `topic` (its config; in controller mode through
    /// the broker set's metadata log). Refused for the broker's system topics.
    pub async fn delete_topic_in_broker(&self, broker: &str, topic: &str) -> Result<(), ApiError> {
        let request =
            RemotingCommand::request(request_code::DELETE_TOPIC_IN_BROKER).with_ext("topic", topic);
        self.call(broker, request, &[response_code::SUCCESS])
            .await
            .map(|_| ())
    }

    /// DELETE_TOPIC_IN_NAMESRV on every NameServer of `namesrv` (a `;` list): each drops
    /// `topic`'s route (brokers that still have it bring it back with their next registration).
    pub async fn delete_topic_in_namesrv(
        &self,
        namesrv: &str,
        topic: &str,
    ) -> Result<(), ApiError> {
        let request = RemotingCommand::request(request_code::DELETE_TOPIC_IN_NAMESRV)
            .with_ext("topic", topic);
        self.call_every_namesrv(namesrv, request, &[response_code::SUCCESS])
            .await
            .map(|_| ())
    }

    /// GET_ALL_SUBSCRIPTIONGROUP_CONFIG: every subscription group `broker` has, by name, as its
    /// `SubscriptionGroupConfig` JSON (`retryMaxTimes`, `consumeEnable`, ...).
    pub async fn subscription_groups(
        &self,
        broker: &str,
    ) -> Result<BTreeMap<String, serde_json::Value>, ApiError> {
        let request = RemotingCommand::request(request_code::GET_ALL_SUBSCRIPTIONGROUP_CONFIG);
        let response = self
            .call(broker, request, &[response_code::SUCCESS])
            .await?;
        let mut body: serde_json::Value = serde_json::from_slice(&response.body).map_err(|e| {
            ApiError::Malformed(format!("the subscription group table does not parse: {e}"))
        })?;
        match body
            .get_mut("subscriptionGroupTable")
            .map(serde_json::Value::take)
        {
            Some(serde_json::Value::Object(table)) => Ok(table.into_iter().collect()),
            Some(serde_json::Value::Null) | None => Ok(BTreeMap::new()),
            Some(other) => Err(ApiError::Malformed(format!(
                "subscriptionGroupTable is not an object: {other}"
            ))),
        }
    }

    /// DELETE_SUBSCRIPTIONGROUP: `broker` forgets group `group`'s config (SUCCESS also when it
    /// had none, as RocketMQ answers). Its consumer offsets stay.
    pub async fn delete_subscription_group(
        &self,
        broker: &str,
        group: &str,
    ) -> Result<(), ApiError> {
        let request = RemotingCommand::request(request_code::DELETE_SUBSCRIPTIONGROUP)
            .with_ext("groupName", group);
        self.call(broker, request, &[response_code::SUCCESS])
            .await
            .map(|_| ())
    }
}
