//! Which resources and actions a Remoting request needs: RocketMQ 5's
//! `DefaultAuthorizationContextBuilder.build(ChannelHandlerContext, RemotingCommand)` — its
//! explicit cases, and the `@RocketMQAction` / `@RocketMQResource` annotations of the request
//! headers for the rest — for the request codes brokers and NameServers here serve.
//!
//! Where RocketMQ names a resource we do the same: sends need `Pub` on the topic (a retry topic:
//! `Sub` on its group), pulls, POP, acks and offsets `Sub` on the topic and the group, reads
//! `Get`, topic creation `Create`, deletion `Delete`, and the `Cluster`-resource codes (users and
//! ACLs, KV config, registrations, role notifications) the named action on `Cluster:<cluster>`.
//! Where RocketMQ's builder finds no resource and would let any signed user through (admin
//! reads such as GET_ALL_TOPIC_CONFIG, GET_BROKER_RUNTIME_INFO, subscription-group creation,
//! BATCH_ACK_MESSAGE, unknown codes), we are stricter: the request needs a `Super` user, except
//! for the client plumbing in [`ANY_USER_CODES`]. BATCH_ACK_MESSAGE needs `Sub` on each group and
//! topic it acks. The headerless management codes GET/UPDATE_BROKER_CONFIG (26/25) and
//! GET_BROKER_EPOCH_CACHE (1007) are among those: RocketMQ lets any signed user read and change
//! the broker's configuration; here they need a `Super` user.
//!
//! A lite topic's queue `%LMQ%${parent}${lite}` is authorized as its parent topic (RocketMQ's
//! builder checks such a name literally, so a Deny on a parent would not cover its lite topics);
//! any other `%LMQ%` name is refused to `Normal` users.

use rocketraft_common::acl::{Action, ResourceKind};
use rocketraft_common::protocol::{from_json_body, HeartbeatData};

use crate::codes::request_code as rc;
use crate::RemotingCommand;

/// A permission: any one of `actions` on the resource `kind`:`name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub kind: ResourceKind,
    pub name: String,
    pub actions: &'static [Action],
}

/// What a request needs from a `Normal` user (`Super` users may do everything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// Every one of these (none: any authenticated user).
    Needs(Vec<Need>),
    /// Only a `Super` user.
    Super,
}

/// Codes any authenticated user may send: client plumbing without a resource of its own.
pub const ANY_USER_CODES: &[i32] = &[
    rc::QUERY_ASSIGNMENT,
    rc::SET_MESSAGE_REQUEST_MODE,
    rc::CHECK_CLIENT_CONFIG,
];

const PUB: &[Action] = &[Action::Pub];
const SUB: &[Action] = &[Action::Sub];
const GET: &[Action] = &[Action::Get];
const UPDATE: &[Action] = &[Action::Update];
const CREATE: &[Action] = &[Action::Create];
const DELETE: &[Action] = &[Action::Delete];
const SUB_GET: &[Action] = &[Action::Sub, Action::Get];
const SUB_UPDATE: &[Action] = &[Action::Sub, Action::Update];
const PUB_SUB_GET: &[Action] = &[Action::Pub, Action::Sub, Action::Get];

const RETRY_PREFIX: &str = "%RETRY%";
const DLQ_PREFIX: &str = "%DLQ%";

fn is_retry_topic(topic: &str) -> bool {
    topic.starts_with(RETRY_PREFIX)
}

/// `Resource.ofGroup`: a retry topic names its group.
fn group(name: &str, actions: &'static [Action]) -> Need {
    let name = name
        .strip_prefix(RETRY_PREFIX)
        .or_else(|| name.strip_prefix(DLQ_PREFIX))
        .unwrap_or(name);
    Need {
        kind: ResourceKind::Group,
        name: name.to_string(),
        actions,
    }
}

fn topic(name: &str, actions: &'static [Action]) -> Need {
    Need {
        kind: ResourceKind::Topic,
        name: name.to_string(),
        actions,
    }
}

/// A `@RocketMQResource(TOPIC)` field: a retry topic is its group.
fn topic_or_retry_group(name: &str, actions: &'static [Action]) -> Need {
    if is_retry_topic(name) {
        group(name, actions)
    } else {
        topic(name, actions)
    }
}

fn cluster(name: &str, actions: &'static [Action]) -> Need {
    Need {
        kind: ResourceKind::Cluster,
        name: name.to_string(),
        actions,
    }
}

fn field<'a>(request: &'a RemotingCommand, name: &str) -> Result<&'a str, String> {
    request
        .ext(name)
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| format!("the request has no `{name}` to authorize"))
}

fn present<'a>(request: &'a RemotingCommand, name: &str) -> Option<&'a str> {
    request.ext(name).filter(|v| !v.trim().is_empty())
}

/// What `request` needs; `cluster_name` names the `Cluster` resource. An error says why the
/// request cannot be authorized (a field it needs is missing or its body does not parse).
pub fn requirement(request: &RemotingCommand, cluster_name: &str) -> Result<Requirement, String> {
    if let Some(needs) = explicit(request)? {
        return Ok(Requirement::Needs(lite_parents(needs)?));
    }
    if let Some(needs) = annotated(request)? {
        return Ok(Requirement::Needs(lite_parents(needs)?));
    }
    if let Some(actions) = cluster_action(request.code) {
        let name = match request.code {
            rc::DELETE_TOPIC_IN_NAMESRV => present(request, "clusterName").unwrap_or(cluster_name),
            _ => cluster_name,
        };
        return Ok(Requirement::Needs(vec![cluster(name, actions)]));
    }
    if ANY_USER_CODES.contains(&request.code) {
        return Ok(Requirement::Needs(Vec::new()));
    }
    Ok(Requirement::Super)
}

/// Each topic need on a lite topic's queue (`%LMQ%${parent}${lite}`) becomes the same need on
/// its parent topic ([`rocketraft_common::lite::acl_topic`]): whoever may publish to or
/// subscribe to the parent may do so to its lite topics, a Deny on the parent covers them, and
/// any other `%LMQ%` name is refused whoever asks.
fn lite_parents(mut needs: Vec<Need>) -> Result<Vec<Need>, String> {
    for need in &mut needs {
        if need.kind == ResourceKind::Topic {
            let parent =
                rocketraft_common::lite::acl_topic(&need.name).map_err(|e| e.to_string())?;
            if parent.len() != need.name.len() {
                need.name = parent.to_string();
            }
        }
    }
    Ok(needs)
}

/// The cases `DefaultAuthorizationContextBuilder` writes out.
fn explicit(request: &RemotingCommand) -> Result<Option<Vec<Need>>, String> {
    let needs = match request.code {
        rc::GET_ROUTEINFO_BY_TOPIC => {
            let t = field(request, "topic")?;
            if is_retry_topic(t) {
                vec![group(t, SUB_GET)]
            } else {
                vec![topic(t, PUB_SUB_GET)]
            }
        }
        rc::SEND_MESSAGE => send(request, "topic", "group")?,
        rc::SEND_MESSAGE_V2 | rc::SEND_BATCH_MESSAGE | rc::SEND_REPLY_MESSAGE_V2 => {
            send(request, "b", "a")?
        }
        rc::SEND_REPLY_MESSAGE => send(request, "topic", "producerGroup")?,
        rc::RECALL_MESSAGE => vec![topic(field(request, "topic")?, PUB)],
        rc::END_TRANSACTION => present(request, "topic")
            .map(|t| vec![topic(t, PUB)])
            .unwrap_or_default(),
        rc::CONSUMER_SEND_MSG_BACK => vec![group(field(request, "group")?, SUB)],
        rc::PULL_MESSAGE | rc::LITE_PULL_MESSAGE => with_group(request, "consumerGroup", SUB, SUB)?,
        rc::QUERY_MESSAGE => vec![topic(field(request, "topic")?, SUB_GET)],
        rc::HEART_BEAT => heartbeat(request)?,
        rc::UNREGISTER_CLIENT => present(request, "consumerGroup")
            .map(|g| vec![group(g, SUB)])
            .unwrap_or_default(),
        rc::GET_CONSUMER_LIST_BY_GROUP => vec![group(field(request, "consumerGroup")?, SUB_GET)],
        rc::QUERY_CONSUMER_OFFSET => with_group(request, "consumerGroup", SUB_GET, SUB_GET)?,
        rc::UPDATE_CONSUMER_OFFSET => with_group(request, "consumerGroup", SUB_UPDATE, SUB_UPDATE)?,
        rc::BATCH_ACK_MESSAGE => batch_ack(request)?,
        rc::LOCK_BATCH_MQ | rc::UNLOCK_BATCH_MQ => lock_batch(request)?,
        _ => return Ok(None),
    };
    Ok(Some(needs))
}

/// SEND_MESSAGE(_V2): `Pub` on the topic; a send to a retry topic needs `Sub` on the group.
fn send(request: &RemotingCommand, topic_key: &str, group_key: &str) -> Result<Vec<Need>, String> {
    let t = field(request, topic_key)?;
    if is_retry_topic(t) {
        let g = present(request, group_key).unwrap_or(t);
        return Ok(vec![group(g, SUB)]);
    }
    Ok(vec![topic(t, PUB)])
}

/// The topic (unless a retry topic) with `topic_actions`, and the group with `group_actions`.
fn with_group(
    request: &RemotingCommand,
    group_key: &str,
    topic_actions: &'static [Action],
    group_actions: &'static [Action],
) -> Result<Vec<Need>, String> {
    let mut needs = Vec::new();
    let t = field(request, "topic")?;
    if !is_retry_topic(t) {
        needs.push(topic(t, topic_actions));
    }
    needs.push(group(field(request, group_key)?, group_actions));
    Ok(needs)
}

/// LOCK_BATCH_MQ / UNLOCK_BATCH_MQ: `Sub` on the group and on each topic of the queues (not
/// retry topics).
fn lock_batch(request: &RemotingCommand) -> Result<Vec<Need>, String> {
    let body: rocketraft_common::protocol::LockBatchRequestBody = from_json_body(&request.body)
        .map_err(|e| format!("the queue lock body is not a LockBatchRequestBody: {e}"))?;
    if body.consumer_group.trim().is_empty() {
        return Err("the queue lock body names no consumerGroup".to_string());
    }
    let mut needs = vec![group(&body.consumer_group, SUB)];
    for mq in &body.mq_set {
        if !is_retry_topic(&mq.topic) {
            needs.push(topic(&mq.topic, SUB));
        }
    }
    Ok(needs)
}

/// HEART_BEAT: `Sub` on each consumer group and on each topic it subscribes (not retry topics).
fn heartbeat(request: &RemotingCommand) -> Result<Vec<Need>, String> {
    let data: HeartbeatData = from_json_body(&request.body)
        .map_err(|e| format!("the HEART_BEAT body is not HeartbeatData: {e}"))?;
    let mut needs = Vec::new();
    for consumer in &data.consumer_data_set {
        needs.push(group(&consumer.group_name, SUB));
        for sub in &consumer.subscription_data_set {
            if !is_retry_topic(&sub.topic) {
                needs.push(topic(&sub.topic, SUB));
            }
        }
    }
    Ok(needs)
}

#[derive(serde::Deserialize)]
struct BatchAckEntry {
    #[serde(alias = "consumerGroup")]
    c: String,
    #[serde(alias = "topic")]
    t: String,
}

#[derive(serde::Deserialize)]
struct BatchAckBody {
    #[serde(default)]
    acks: Vec<BatchAckEntry>,
}

/// BATCH_ACK_MESSAGE: `Sub` on each group and topic acked (as ACK_MESSAGE needs).
fn batch_ack(request: &RemotingCommand) -> Result<Vec<Need>, String> {
    let body: BatchAckBody = from_json_body(&request.body)
        .map_err(|e| format!("the BATCH_ACK_MESSAGE body does not parse: {e}"))?;
    let mut needs = Vec::new();
    for ack in &body.acks {
        needs.push(group(&ack.c, SUB));
        needs.push(topic_or_retry_group(&ack.t, SUB));
    }
    Ok(needs)
}

/// Codes whose request header has `@RocketMQAction` with `@RocketMQResource` fields.
fn annotated(request: &RemotingCommand) -> Result<Option<Vec<Need>>, String> {
    let topic_get = |key: &str| -> Result<Vec<Need>, String> {
        Ok(vec![topic_or_retry_group(field(request, key)?, GET)])
    };
    let needs = match request.code {
        rc::GET_MAX_OFFSET
        | rc::GET_MIN_OFFSET
        | rc::SEARCH_OFFSET_BY_TIMESTAMP
        | rc::GET_EARLIEST_MSG_STORETIME
        | rc::GET_TOPIC_CONFIG
        | rc::GET_TOPIC_STATS_INFO
        | rc::QUERY_TOPIC_CONSUME_BY_WHO => topic_get("topic")?,
        rc::GET_CONSUMER_CONNECTION_LIST | rc::GET_CONSUMER_RUNNING_INFO => {
            vec![group(field(request, "consumerGroup")?, GET)]
        }
        // `ConsumeMessageDirectlyResultRequestHeader`: Sub on the group and, when named, the
        // topic.
        rc::CONSUME_MESSAGE_DIRECTLY => {
            let mut needs = vec![group(field(request, "consumerGroup")?, SUB)];
            if let Some(t) = present(request, "topic") {
                needs.push(topic_or_retry_group(t, SUB));
            }
            needs
        }
        // Without a topic RocketMQ checks nothing; we leave that to Super users.
        rc::VIEW_MESSAGE_BY_ID => match present(request, "topic") {
            Some(t) => vec![topic_or_retry_group(t, GET)],
            None => return Ok(None),
        },
        rc::UPDATE_AND_CREATE_TOPIC => vec![topic_or_retry_group(field(request, "topic")?, CREATE)],
        rc::DELETE_TOPIC_IN_BROKER => vec![topic_or_retry_group(field(request, "topic")?, DELETE)],
        // POP_LITE_MESSAGE and LITE_SUBSCRIPTION_CTL name the parent topic; its lite topics'
        // queues are the parent's.
        rc::POP_MESSAGE
        | rc::POP_LITE_MESSAGE
        | rc::LITE_SUBSCRIPTION_CTL
        | rc::ACK_MESSAGE
        | rc::CHANGE_MESSAGE_INVISIBLETIME
        | rc::PEEK_MESSAGE => {
            vec![
                group(field(request, "consumerGroup")?, SUB),
                topic_or_retry_group(field(request, "topic")?, SUB),
            ]
        }
        rc::GET_CONSUME_STATS => consume_stats(request),
        rc::GET_SUBSCRIPTIONGROUP_CONFIG => vec![group(field(request, "group")?, GET)],
        rc::DELETE_SUBSCRIPTIONGROUP => vec![group(field(request, "groupName")?, DELETE)],
        rc::INVOKE_BROKER_TO_RESET_OFFSET => vec![
            group(field(request, "group")?, UPDATE),
            topic_or_retry_group(field(request, "topic")?, UPDATE),
        ],
        _ => return Ok(None),
    };
    if needs.is_empty() {
        return Ok(None);
    }
    Ok(Some(needs))
}

/// GET_CONSUME_STATS: `Get` on the group, the topic and each topic of `topicList` (`;`).
fn consume_stats(request: &RemotingCommand) -> Vec<Need> {
    let mut needs = Vec::new();
    if let Some(g) = present(request, "consumerGroup") {
        needs.push(group(g, GET));
    }
    if let Some(t) = present(request, "topic") {
        needs.push(topic_or_retry_group(t, GET));
    }
    for t in present(request, "topicList")
        .unwrap_or("")
        .split(';')
        .filter(|t| !t.is_empty())
    {
        needs.push(topic_or_retry_group(t, GET));
    }
    needs
}

/// Codes whose header has `@RocketMQAction(resource = CLUSTER, action = ...)`.
fn cluster_action(code: i32) -> Option<&'static [Action]> {
    Some(match code {
        rc::AUTH_CREATE_USER
        | rc::AUTH_UPDATE_USER
        | rc::AUTH_DELETE_USER
        | rc::AUTH_CREATE_ACL
        | rc::AUTH_UPDATE_ACL
        | rc::AUTH_DELETE_ACL
        | rc::PUT_KV_CONFIG
        | rc::DELETE_KV_CONFIG
        | rc::DELETE_TOPIC_IN_NAMESRV
        | rc::REGISTER_BROKER
        | rc::UNREGISTER_BROKER
        | rc::REGISTER_TOPIC_IN_NAMESRV
        | rc::WIPE_WRITE_PERM_OF_BROKER
        | rc::ADD_WRITE_PERM_OF_BROKER
        | rc::BROKER_HEARTBEAT
        | rc::NOTIFY_BROKER_ROLE_CHANGED
        | rc::NOTIFY_MIN_BROKER_ID_CHANGE
        | rc::EXCHANGE_BROKER_HA_INFO
        | rc::ADD_BROKER
        | rc::REMOVE_BROKER
        | rc::RESET_MASTER_FLUSH_OFFSET
        | rc::CONTROLLER_ALTER_SYNC_STATE_SET
        | rc::CONTROLLER_ELECT_MASTER
        | rc::CONTROLLER_REGISTER_BROKER
        | rc::CONTROLLER_APPLY_BROKER_ID
        | rc::CLEAN_BROKER_DATA => UPDATE,
        rc::AUTH_GET_USER
        | rc::AUTH_LIST_USER
        | rc::AUTH_GET_ACL
        | rc::AUTH_LIST_ACL
        | rc::GET_KV_CONFIG
        | rc::GET_KVLIST_BY_NAMESPACE
        | rc::QUERY_DATA_VERSION
        | rc::GET_BROKER_CONSUME_STATS
        | rc::GET_PRODUCER_CONNECTION_LIST
        | rc::GET_ALL_PRODUCER_INFO
        | rc::VIEW_BROKER_STATS_DATA
        | rc::CONTROLLER_GET_REPLICA_INFO
        | rc::CONTROLLER_GET_NEXT_BROKER_ID => GET,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(request: &RemotingCommand) -> Vec<(ResourceKind, String, Vec<Action>)> {
        match requirement(request, "C").unwrap() {
            Requirement::Needs(n) => n
                .into_iter()
                .map(|n| (n.kind, n.name, n.actions.to_vec()))
                .collect(),
            Requirement::Super => panic!("needs Super"),
        }
    }

    #[test]
    fn sends_need_pub_and_retry_sends_need_the_group() {
        let send = RemotingCommand::request(rc::SEND_MESSAGE_V2)
            .with_ext("a", "pg")
            .with_ext("b", "orders");
        assert_eq!(
            needs(&send),
            vec![(ResourceKind::Topic, "orders".into(), vec![Action::Pub])]
        );
        let retry = RemotingCommand::request(rc::SEND_MESSAGE_V2)
            .with_ext("a", "cg")
            .with_ext("b", "%RETRY%cg");
        assert_eq!(
            needs(&retry),
            vec![(ResourceKind::Group, "cg".into(), vec![Action::Sub])]
        );
        let no_topic = RemotingCommand::request(rc::SEND_MESSAGE_V2).with_ext("a", "pg");
        assert!(requirement(&no_topic, "C").is_err());
    }

    #[test]
    fn pulls_and_pops_need_sub_on_topic_and_group() {
        let pull = RemotingCommand::request(rc::PULL_MESSAGE)
            .with_ext("consumerGroup", "cg")
            .with_ext("topic", "orders");
        assert_eq!(
            needs(&pull),
            vec![
                (ResourceKind::Topic, "orders".into(), vec![Action::Sub]),
                (ResourceKind::Group, "cg".into(), vec![Action::Sub]),
            ]
        );
        let pop = RemotingCommand::request(rc::POP_MESSAGE)
            .with_ext("consumerGroup", "cg")
            .with_ext("topic", "%RETRY%cg");
        assert_eq!(
            needs(&pop),
            vec![
                (ResourceKind::Group, "cg".into(), vec![Action::Sub]),
                (ResourceKind::Group, "cg".into(), vec![Action::Sub]),
            ]
        );
    }

    #[test]
    fn lite_topic_queues_need_rights_on_their_parent() {
        let pop = RemotingCommand::request(rc::POP_MESSAGE)
            .with_ext("consumerGroup", "cg")
            .with_ext("topic", "%LMQ%$chats$room-1");
        assert_eq!(
            needs(&pop),
            vec![
                (ResourceKind::Group, "cg".into(), vec![Action::Sub]),
                (ResourceKind::Topic, "chats".into(), vec![Action::Sub]),
            ]
        );
        // POP_LITE_MESSAGE names the parent; its lite topics' queues are the parent's.
        let pop_lite = RemotingCommand::request(rc::POP_LITE_MESSAGE)
            .with_ext("consumerGroup", "cg")
            .with_ext("topic", "chats");
        assert_eq!(
            needs(&pop_lite),
            vec![
                (ResourceKind::Group, "cg".into(), vec![Action::Sub]),
                (ResourceKind::Topic, "chats".into(), vec![Action::Sub]),
            ]
        );
        let send = RemotingCommand::request(rc::SEND_MESSAGE_V2)
            .with_ext("a", "pg")
            .with_ext("b", "%LMQ%$chats$room-1");
        assert_eq!(
            needs(&send),
            vec![(ResourceKind::Topic, "chats".into(), vec![Action::Pub])]
        );
        let offsets = RemotingCommand::request(rc::UPDATE_CONSUMER_OFFSET)
            .with_ext("consumerGroup", "cg")
            .with_ext("topic", "%LMQ%$chats$room-1");
        assert_eq!(needs(&offsets)[0].1, "chats");
        // A crafted name is refused before any ACL is looked at.
        for crafted in [
            "%LMQ%$chats$a$b",
            "%LMQ%$$a",
            "%LMQ%$%RETRY%cg$a",
            "%LMQ%chats",
        ] {
            let pull = RemotingCommand::request(rc::PULL_MESSAGE)
                .with_ext("consumerGroup", "cg")
                .with_ext("topic", crafted);
            assert!(requirement(&pull, "C").is_err(), "{crafted} accepted");
        }
    }

    #[test]
    fn admin_codes_need_super_or_the_cluster() {
        let runtime = RemotingCommand::request(rc::GET_BROKER_RUNTIME_INFO);
        assert_eq!(requirement(&runtime, "C"), Ok(Requirement::Super));
        let all = RemotingCommand::request(rc::GET_ALL_TOPIC_CONFIG);
        assert_eq!(requirement(&all, "C"), Ok(Requirement::Super));
        let create_user = RemotingCommand::request(rc::AUTH_CREATE_USER);
        assert_eq!(
            needs(&create_user),
            vec![(ResourceKind::Cluster, "C".into(), vec![Action::Update])]
        );
        let assignment = RemotingCommand::request(rc::QUERY_ASSIGNMENT);
        assert_eq!(needs(&assignment), vec![]);
        // mqadmin topicStatus and statsAll: Get on the topic, Get on the cluster.
        let topic_stats = RemotingCommand::request(rc::GET_TOPIC_STATS_INFO).with_ext("topic", "T");
        assert_eq!(
            needs(&topic_stats),
            vec![(ResourceKind::Topic, "T".into(), vec![Action::Get])]
        );
        // mqadmin consumerConnection / consumerStatus / topicConsumeByWho: Get on the group or
        // topic; consumeMessage directly: Sub on the group and the topic.
        let connections = RemotingCommand::request(rc::GET_CONSUMER_CONNECTION_LIST)
            .with_ext("consumerGroup", "G");
        assert_eq!(
            needs(&connections),
            vec![(ResourceKind::Group, "G".into(), vec![Action::Get])]
        );
        let running = RemotingCommand::request(rc::GET_CONSUMER_RUNNING_INFO)
            .with_ext("consumerGroup", "G")
            .with_ext("clientId", "c");
        assert_eq!(
            needs(&running),
            vec![(ResourceKind::Group, "G".into(), vec![Action::Get])]
        );
        let by_who =
            RemotingCommand::request(rc::QUERY_TOPIC_CONSUME_BY_WHO).with_ext("topic", "%RETRY%G");
        assert_eq!(
            needs(&by_who),
            vec![(ResourceKind::Group, "G".into(), vec![Action::Get])]
        );
        let directly = RemotingCommand::request(rc::CONSUME_MESSAGE_DIRECTLY)
            .with_ext("consumerGroup", "G")
            .with_ext("topic", "T")
            .with_ext("msgId", "m");
        assert_eq!(
            needs(&directly),
            vec![
                (ResourceKind::Group, "G".into(), vec![Action::Sub]),
                (ResourceKind::Topic, "T".into(), vec![Action::Sub]),
            ]
        );
        let no_group = RemotingCommand::request(rc::GET_CONSUMER_CONNECTION_LIST);
        assert!(requirement(&no_group, "C").is_err());
        let producers = RemotingCommand::request(rc::GET_PRODUCER_CONNECTION_LIST)
            .with_ext("producerGroup", "P");
        assert_eq!(
            needs(&producers),
            vec![(ResourceKind::Cluster, "C".into(), vec![Action::Get])]
        );
        for headerless in [
            rc::GET_BROKER_CONFIG,
            rc::UPDATE_BROKER_CONFIG,
            rc::GET_BROKER_EPOCH_CACHE,
        ] {
            let request = RemotingCommand::request(headerless);
            assert_eq!(requirement(&request, "C"), Ok(Requirement::Super));
        }
        let view = RemotingCommand::request(rc::VIEW_BROKER_STATS_DATA)
            .with_ext("statsName", "TOPIC_PUT_NUMS")
            .with_ext("statsKey", "T");
        assert_eq!(
            needs(&view),
            vec![(ResourceKind::Cluster, "C".into(), vec![Action::Get])]
        );
    }

    #[test]
    fn heartbeats_need_sub_on_groups_and_subscribed_topics() {
        let body = br#"{"clientID":"c","producerDataSet":[{"groupName":"pg"}],"consumerDataSet":[{"groupName":"cg","subscriptionDataSet":[{"topic":"orders","subString":"*"},{"topic":"%RETRY%cg","subString":"*"}]}]}"#;
        let hb = RemotingCommand::request(rc::HEART_BEAT).with_body(&body[..]);
        assert_eq!(
            needs(&hb),
            vec![
                (ResourceKind::Group, "cg".into(), vec![Action::Sub]),
                (ResourceKind::Topic, "orders".into(), vec![Action::Sub]),
            ]
        );
        let bad = RemotingCommand::request(rc::HEART_BEAT).with_body(&b"{"[..]);
        assert!(requirement(&bad, "C").is_err());
    }
}
