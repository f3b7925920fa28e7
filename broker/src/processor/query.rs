//! QUERY_MESSAGE (12), RocketMQ's `QueryMessageProcessor.queryMessage`: messages of a topic by
//! one of their `KEYS`, or by their unique id (`UNIQ_KEY`, the id the producer printed) when
//! the ext field `_UNIQUE_KEY_QUERY` is `true`, from the store's key index
//! ([`crate::store::index`]).
//!
//! Request header (`QueryMessageRequestHeader`): `topic`, `key`, `maxNum`, `beginTimestamp`,
//! `endTimestamp` (store timestamps, ms, both included). Response header
//! (`QueryMessageResponseHeader`): `indexLastUpdateTimestamp`, `indexLastUpdatePhyoffset`; body:
//! the records in the store encoding, concatenated, ascending by CommitLog offset. QUERY_NOT_FOUND
//! (22) when nothing matches. A unique-key query returns up to `defaultQueryMaxNum` (32)
//! whatever `maxNum` says, as RocketMQ does.
//!
//! Permissions: the Remoting ACL check (`remoting::auth_map`) asks Sub on `topic` for both kinds
//! of query, and only records of that topic are ever returned (the index is keyed by topic and
//! every record's topic is checked again). Records not wholly below the confirm offset are not
//! returned, nor records of the broker's reserved metadata topic.

use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{Refusal, RemotingCommand};

use super::Handled;
use crate::BrokerInner;

/// `MixAll.UNIQUE_MSG_QUERY_FLAG`.
pub const UNIQUE_MSG_QUERY_FLAG: &str = "_UNIQUE_KEY_QUERY";
/// `MessageStoreConfig.defaultQueryMaxNum`: what a unique-key query returns at most.
pub const DEFAULT_QUERY_MAX_NUM: usize = 32;
/// The records of one answer stop growing past this many bytes (a frame holds 16 MiB).
const MAX_BODY_BYTES: usize = 12 << 20;

pub async fn query_message(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let topic = request.require_ext("topic")?.to_string();
    let key = request.require_ext("key")?.to_string();
    let max_num: i32 = request.ext_parse("maxNum")?;
    let begin: i64 = request.ext_parse("beginTimestamp")?;
    let end: i64 = request.ext_parse("endTimestamp")?;
    let unique = request.ext(UNIQUE_MSG_QUERY_FLAG) == Some("true");
    let max = if unique {
        DEFAULT_QUERY_MAX_NUM
    } else {
        max_num.max(0) as usize
    };
    rocketraft_common::topic::validate_topic_name(&topic)
        .map_err(|e| Refusal::system_error(format!("topic {topic:?}: {e}")))?;
    let not_found = |remark: &str| {
        Ok(request
            .response_to(response_code::QUERY_NOT_FOUND, remark.to_string())
            .with_ext("indexLastUpdateTimestamp", "0")
            .with_ext("indexLastUpdatePhyoffset", "0"))
    };
    if crate::metalog::is_reserved(&topic) {
        return not_found("can not find message, maybe time range not correct");
    }
    let store = inner.store.clone();
    let lookup_topic = topic.clone();
    let lookup_key = key.clone();
    let found = tokio::task::spawn_blocking(move || {
        store.query_by_key(&lookup_topic, &lookup_key, max, begin, end)
    })
    .await
    .map_err(|e| Refusal::system_error(format!("the index lookup failed: {e}")))??;
    let Some(found) = found else {
        return not_found(
            "the message index is disabled on this broker (messageIndexEnable=false)",
        );
    };
    tracing::debug!(%topic, %key, unique, max, found = found.messages.len(), "query message");
    if found.messages.is_empty() {
        return Ok(request
            .response_to(
                response_code::QUERY_NOT_FOUND,
                "can not find message, maybe time range not correct".to_string(),
            )
            .with_ext(
                "indexLastUpdateTimestamp",
                found.index_last_update_timestamp,
            )
            .with_ext(
                "indexLastUpdatePhyoffset",
                found.index_last_update_phy_offset,
            ));
    }
    let mut body = Vec::new();
    for rec in &found.messages {
        if !body.is_empty() && body.len() + rec.len() > MAX_BODY_BYTES {
            break;
        }
        body.extend_from_slice(rec);
    }
    Ok(request
        .response_to(response_code::SUCCESS, None)
        .with_ext(
            "indexLastUpdateTimestamp",
            found.index_last_update_timestamp,
        )
        .with_ext(
            "indexLastUpdatePhyoffset",
            found.index_last_update_phy_offset,
        )
        .with_body(body))
}
