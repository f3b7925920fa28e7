//! Lite topics (RocketMQ 5's LiteTopic, RIP-83): lightweight sub-channels of a parent topic whose
//! `message.type` is `LITE`. A message sent to the parent topic with a lite topic (the
//! `__LITE_TOPIC` property over Remoting, `SystemProperties.lite_topic` over gRPC) is stored in
//! the lite topic's own queue, the light message queue (LMQ) `%LMQ%${parent}${lite}` with one
//! queue (id 0) on the broker it was sent to. A lite topic exists from its first message on.

use crate::TopicConfig;

/// The message property naming a message's lite topic (`MessageConst.PROPERTY_LITE_TOPIC`).
pub const PROPERTY_LITE_TOPIC: &str = "__LITE_TOPIC";
/// The prefix of every lite topic's queue name (`LiteUtil`'s LMQ prefix).
pub const LMQ_PREFIX: &str = "%LMQ%$";
/// Between the parent topic and the lite topic in an LMQ name.
pub const SEPARATOR: char = '$';
/// The `message.type` attribute value of a parent topic.
pub const LITE_MESSAGE_TYPE: &str = "LITE";
/// Longest lite topic name (the clients' default `maxLiteTopicSize`).
pub const MAX_LITE_TOPIC_SIZE: usize = 64;
/// Most lite topics one client may subscribe per group and parent topic (the clients' default
/// `liteSubscriptionQuota` is 100; the server's answer replaces it).
pub const LITE_SUBSCRIPTION_QUOTA: usize = 100;

/// The attribute of a LITE topic saying after how many minutes without a message its lite
/// topics expire (`TopicAttributes.LITE_EXPIRATION_ATTRIBUTE`); -1 (the default): never.
pub const LITE_EXPIRATION_ATTRIBUTE: &str = "lite.topic.expiration";
/// The longest `lite.topic.expiration`: 30 days, in minutes.
pub const MAX_LITE_EXPIRATION_MINUTES: i64 = 30 * 24 * 60;

/// A LITE topic's `lite.topic.expiration` in minutes; `None` when its lite topics never
/// expire (the attribute absent, -1, or not a number from 1 to 30 days: RocketMQ refuses such
/// a value when the topic is created, and a value here read from an older config is ignored).
pub fn lite_topic_expiration_minutes(config: &TopicConfig) -> Option<i64> {
    let value = config.attributes.get(LITE_EXPIRATION_ATTRIBUTE)?;
    let minutes: i64 = value.trim().parse().ok()?;
    (1..=MAX_LITE_EXPIRATION_MINUTES)
        .contains(&minutes)
        .then_some(minutes)
}

/// Whether a topic's configuration makes it a parent of lite topics.
pub fn is_lite_parent(config: &TopicConfig) -> bool {
    config
        .attributes
        .get("message.type")
        .is_some_and(|t| t.eq_ignore_ascii_case(LITE_MESSAGE_TYPE))
}

/// The LMQ name of `lite` under `parent`.
pub fn lmq_name(parent: &str, lite: &str) -> String {
    format!("{LMQ_PREFIX}{parent}{SEPARATOR}{lite}")
}

/// `(parent, lite)` of an LMQ name; `None` for any other name.
pub fn parse_lmq(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(LMQ_PREFIX)?;
    let (parent, lite) = rest.split_once(SEPARATOR)?;
    if parent.is_empty() || lite.is_empty() || lite.contains(SEPARATOR) {
        return None;
    }
    Some((parent, lite))
}

/// Any light message queue's name starts so (RocketMQ's `MixAll.LMQ_PREFIX`); only lite topics'
/// queues ([`LMQ_PREFIX`]) are served here.
pub const ANY_LMQ_PREFIX: &str = "%LMQ%";

/// Why a topic name cannot be authorized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not the queue of a lite topic (%LMQ%$<parent topic>$<lite topic>): refused")]
pub struct IllegalLmqName(pub String);

/// The topic whose ACL entries govern a topic name: the parent topic of a lite topic's queue
/// `%LMQ%${parent}${lite}` (rights on a parent are rights on its lite topics, and a Deny on it
/// covers them), the name itself for any other topic. Any other name starting with `%LMQ%` (a
/// lite topic that is not a lite topic name, a parent that is blank, not a topic name, or
/// itself a retry, dead-letter or LMQ name) is refused, so no crafted name reaches a topic
/// its caller has no rights on.
pub fn acl_topic(name: &str) -> Result<&str, IllegalLmqName> {
    if !name.starts_with(ANY_LMQ_PREFIX) {
        return Ok(name);
    }
    let refused = || IllegalLmqName(name.to_string());
    let (parent, lite) = parse_lmq(name).ok_or_else(refused)?;
    validate_lite_topic(lite).map_err(|_| refused())?;
    crate::topic::validate_topic_name(parent).map_err(|_| refused())?;
    if [
        crate::consts::RETRY_GROUP_TOPIC_PREFIX,
        crate::consts::DLQ_GROUP_TOPIC_PREFIX,
        ANY_LMQ_PREFIX,
    ]
    .iter()
    .any(|p| parent.starts_with(p))
    {
        return Err(refused());
    }
    Ok(parent)
}

/// Why a lite topic name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IllegalLiteTopic {
    #[error("the lite topic is blank")]
    Blank,
    #[error("the lite topic {0:?} is longer than {MAX_LITE_TOPIC_SIZE} characters")]
    TooLong(String),
    #[error(
        "the lite topic {0:?} has characters other than letters, digits, '%', '|', '_' and '-'"
    )]
    IllegalCharacters(String),
}

/// A lite topic name: 1 to [`MAX_LITE_TOPIC_SIZE`] characters of a topic name's alphabet
/// (letters, digits, `%`, `|`, `_`, `-`); never the separator `$`.
pub fn validate_lite_topic(lite: &str) -> Result<(), IllegalLiteTopic> {
    if lite.trim().is_empty() {
        return Err(IllegalLiteTopic::Blank);
    }
    if lite.len() > MAX_LITE_TOPIC_SIZE {
        return Err(IllegalLiteTopic::TooLong(lite.to_string()));
    }
    if !lite
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'%' | b'|' | b'_' | b'-'))
    {
        return Err(IllegalLiteTopic::IllegalCharacters(lite.to_string()));
    }
    Ok(())
}

/// The configuration an LMQ is served with: one read-write queue, derived from its parent's
/// (`None` when the parent is not a lite topic's parent).
pub fn lmq_config(name: &str, parent: &TopicConfig) -> Option<TopicConfig> {
    if !is_lite_parent(parent) {
        return None;
    }
    let mut config = TopicConfig::new(name, 1);
    config.perm = parent.perm;
    Some(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lmq_names_round_trip() {
        let name = lmq_name("Parent", "chat-1");
        assert_eq!(name, "%LMQ%$Parent$chat-1");
        assert_eq!(parse_lmq(&name), Some(("Parent", "chat-1")));
        assert_eq!(parse_lmq("Parent"), None);
        assert_eq!(parse_lmq("%LMQ%$Parent"), None);
        assert_eq!(parse_lmq("%LMQ%$$x"), None);
        assert_eq!(parse_lmq("%LMQ%$P$a$b"), None);
    }

    #[test]
    fn acl_checks_a_lite_topic_on_its_parent() {
        assert_eq!(acl_topic("orders"), Ok("orders"));
        assert_eq!(acl_topic("%RETRY%G"), Ok("%RETRY%G"));
        assert_eq!(acl_topic("%LMQ%$Parent$chat-1"), Ok("Parent"));
        assert_eq!(acl_topic("%LMQ%$ns%Parent$a"), Ok("ns%Parent"));
        for crafted in [
            "%LMQ%",
            "%LMQ%Parent",
            "%LMQ%$Parent",
            "%LMQ%$Parent$",
            "%LMQ%$$a",
            "%LMQ%$P$a$b",
            "%LMQ%$P$a b",
            "%LMQ%$%RETRY%G$a",
            "%LMQ%$%DLQ%G$a",
            "%LMQ%$%LMQ%x$a",
            "%LMQ%$P q$a",
        ] {
            assert!(acl_topic(crafted).is_err(), "{crafted} accepted");
        }
    }

    #[test]
    fn lite_topic_names_are_checked() {
        assert!(validate_lite_topic("user-42_a").is_ok());
        assert_eq!(validate_lite_topic(" "), Err(IllegalLiteTopic::Blank));
        assert!(matches!(
            validate_lite_topic(&"x".repeat(65)),
            Err(IllegalLiteTopic::TooLong(_))
        ));
        assert!(matches!(
            validate_lite_topic("a$b"),
            Err(IllegalLiteTopic::IllegalCharacters(_))
        ));
    }

    #[test]
    fn lite_topic_expiration_is_in_minutes_up_to_30_days() {
        let mut parent = TopicConfig::new("P", 1);
        assert_eq!(lite_topic_expiration_minutes(&parent), None);
        for (value, minutes) in [
            ("-1", None),
            ("0", None),
            ("30", Some(30)),
            ("43200", Some(43200)),
            ("43201", None),
            ("soon", None),
        ] {
            parent
                .attributes
                .insert(LITE_EXPIRATION_ATTRIBUTE.into(), value.into());
            assert_eq!(lite_topic_expiration_minutes(&parent), minutes, "{value}");
        }
    }

    #[test]
    fn only_lite_parents_have_lmqs() {
        let mut parent = TopicConfig::new("P", 4);
        assert!(lmq_config("%LMQ%$P$a", &parent).is_none());
        parent
            .attributes
            .insert("message.type".into(), "LITE".into());
        let c = lmq_config("%LMQ%$P$a", &parent).expect("an LMQ");
        assert_eq!((c.read_queue_nums, c.write_queue_nums), (1, 1));
    }
}
