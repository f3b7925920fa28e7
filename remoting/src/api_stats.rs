//! Topic and broker statistics on [`MqClientApi`] (`MQClientAPIImpl.getTopicStatsInfo` and
//! `viewBrokerStatsData`): GET_TOPIC_STATS_INFO (202) and VIEW_BROKER_STATS_DATA (315), with
//! RocketMQ's header names and fastjson bodies parsed into typed results.

use rocketraft_common::protocol::{from_json_body, BrokerStatsData, TopicStatsTable};

use crate::api::{ApiError, MqClientApi};
use crate::codes::{request_code, response_code};
use crate::RemotingCommand;

/// How a broker (RocketMQ's or ours) says that a statistic has no item: SYSTEM_ERROR with this
/// remark (there is no other signal; the item appears with the key's first use).
const NO_SUCH_STATS_PREFIX: &str = "The stats <";

impl MqClientApi {
    /// GET_TOPIC_STATS_INFO: each queue of `topic` on `broker` (min and max offset, store time
    /// of its last message) and its puts per second over the last minute. A topic the broker
    /// does not have is refused with TOPIC_NOT_EXIST.
    pub async fn topic_stats(
        &self,
        broker: &str,
        topic: &str,
    ) -> Result<TopicStatsTable, ApiError> {
        let request =
            RemotingCommand::request(request_code::GET_TOPIC_STATS_INFO).with_ext("topic", topic);
        let response = self
            .call(broker, request, &[response_code::SUCCESS])
            .await?;
        TopicStatsTable::from_json(&response.body).map_err(|e| {
            ApiError::Malformed(format!(
                "the TopicStatsTable of {topic} does not parse: {e}"
            ))
        })
    }

    /// VIEW_BROKER_STATS_DATA: the minute, hour and day of the statistic `name` (RocketMQ's
    /// `TOPIC_PUT_NUMS`, `TOPIC_PUT_SIZE` keyed by topic; `GROUP_GET_NUMS`, `GROUP_GET_SIZE`
    /// keyed by `topic@group`; `BROKER_PUT_NUMS`, `BROKER_GET_NUMS` keyed by cluster name).
    /// `None` when the broker has no such item (the key was never used since it started).
    pub async fn broker_stats(
        &self,
        broker: &str,
        name: &str,
        key: &str,
    ) -> Result<Option<BrokerStatsData>, ApiError> {
        let request = RemotingCommand::request(request_code::VIEW_BROKER_STATS_DATA)
            .with_ext("statsName", name)
            .with_ext("statsKey", key);
        match self.call(broker, request, &[response_code::SUCCESS]).await {
            Ok(response) => from_json_body(&response.body).map(Some).map_err(|e| {
                ApiError::Malformed(format!(
                    "the BrokerStatsData of {name} {key} does not parse: {e}"
                ))
            }),
            Err(ApiError::Refused(r))
                if r.code == response_code::SYSTEM_ERROR
                    && r.remark.starts_with(NO_SUCH_STATS_PREFIX) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}
