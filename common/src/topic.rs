//! Topic configuration (`TopicConfig`) and topic name validation (`TopicValidator`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::consts::perm;

/// Longest topic name RocketMQ accepts (`TopicValidator.TOPIC_MAX_LENGTH`).
pub const TOPIC_MAX_LENGTH: usize = 127;

/// The configuration of one topic on one broker, serialized with RocketMQ's JSON field names so it
/// can travel inside REGISTER_BROKER bodies and UPDATE_AND_CREATE_TOPIC headers unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicConfig {
    pub topic_name: String,
    #[serde(default = "default_queue_nums")]
    pub read_queue_nums: i32,
    #[serde(default = "default_queue_nums")]
    pub write_queue_nums: i32,
    #[serde(default = "default_perm")]
    pub perm: i32,
    #[serde(default = "default_filter_type")]
    pub topic_filter_type: String,
    #[serde(default)]
    pub topic_sys_flag: i32,
    #[serde(default)]
    pub order: bool,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

fn default_queue_nums() -> i32 {
    TopicConfig::DEFAULT_QUEUE_NUMS
}
fn default_perm() -> i32 {
    perm::READ | perm::WRITE
}
fn default_filter_type() -> String {
    "SINGLE_TAG".to_string()
}

impl TopicConfig {
    /// `defaultTopicQueueNums` of the broker.
    pub const DEFAULT_QUEUE_NUMS: i32 = 4;
    /// The most queues a topic may have on one broker (a sanity bound on user input).
    pub const MAX_QUEUE_NUMS: i32 = 1024;

    pub fn new(name: impl Into<String>, queue_nums: i32) -> Self {
        TopicConfig {
            topic_name: name.into(),
            read_queue_nums: queue_nums,
            write_queue_nums: queue_nums,
            perm: default_perm(),
            topic_filter_type: default_filter_type(),
            topic_sys_flag: 0,
            order: false,
            attributes: BTreeMap::new(),
        }
    }

    /// The number of queues that exist on disk for this topic.
    pub fn queue_nums(&self) -> i32 {
        self.read_queue_nums.max(self.write_queue_nums)
    }

    /// Checks the queue counts and permission of a config that came from a user or the network.
    pub fn validate(&self) -> Result<(), TopicValidationError> {
        validate_topic_name(&self.topic_name)?;
        for n in [self.read_queue_nums, self.write_queue_nums] {
            if !(1..=Self::MAX_QUEUE_NUMS).contains(&n) {
                return Err(TopicValidationError::QueueNums(n));
            }
        }
        if !(0..=0xF).contains(&self.perm) {
            return Err(TopicValidationError::Perm(self.perm));
        }
        Ok(())
    }
}

/// Why a topic name or config was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicValidationError {
    #[error("the topic name is empty")]
    Empty,
    #[error("the topic name is {0} characters long; the limit is {TOPIC_MAX_LENGTH}")]
    TooLong(usize),
    #[error("the topic name {0:?} has characters outside [%|a-zA-Z0-9_-]")]
    IllegalCharacters(String),
    #[error("queue count {0} is outside 1..=1024")]
    QueueNums(i32),
    #[error("permission {0} is outside 0..=15")]
    Perm(i32),
}

/// `TopicValidator.validateTopic`: non-empty, at most 127 characters of `[%|a-zA-Z0-9_-]`.
pub fn validate_topic_name(name: &str) -> Result<(), TopicValidationError> {
    if name.is_empty() {
        return Err(TopicValidationError::Empty);
    }
    if name.len() > TOPIC_MAX_LENGTH {
        return Err(TopicValidationError::TooLong(name.len()));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'%' | b'|' | b'_' | b'-'))
    {
        return Err(TopicValidationError::IllegalCharacters(name.to_string()));
    }
    Ok(())
}

/// Longest name the store keeps records of when it has a `$` (lite topics' queues).
pub const STORED_NAME_MAX_LENGTH: usize = 255;

/// A name the store keeps records of: a topic name, or a lite topic's queue
/// `%LMQ%${parent}${lite}` and the POP retry topic of one, which also have `$` (up to
/// [`STORED_NAME_MAX_LENGTH`] characters).
pub fn validate_stored_topic_name(name: &str) -> Result<(), TopicValidationError> {
    if !name.contains('$') {
        return validate_topic_name(name);
    }
    if name.len() > STORED_NAME_MAX_LENGTH {
        return Err(TopicValidationError::TooLong(name.len()));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'%' | b'|' | b'_' | b'-' | b'$'))
    {
        return Err(TopicValidationError::IllegalCharacters(name.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lite_queue_names_are_stored_names() {
        assert!(validate_stored_topic_name("%LMQ%$P$a").is_ok());
        assert!(validate_stored_topic_name("%RETRY%G_%LMQ%$P$a").is_ok());
        assert!(validate_stored_topic_name("P").is_ok());
        assert!(validate_stored_topic_name("P$a b").is_err());
        assert!(validate_topic_name("%LMQ%$P$a").is_err());
    }

    #[test]
    fn json_uses_rocketmq_field_names() {
        let t = TopicConfig::new("T", 8);
        let json = serde_json::to_string(&t).expect("serialize");
        assert!(json.contains("\"topicName\":\"T\""));
        assert!(json.contains("\"readQueueNums\":8"));
        let back: TopicConfig = serde_json::from_str(
            r#"{"topicName":"X","readQueueNums":2,"writeQueueNums":2,"perm":6}"#,
        )
        .expect("parse");
        assert_eq!(back.topic_name, "X");
        assert_eq!(back.topic_filter_type, "SINGLE_TAG");
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_topic_name("Topic_A-1%x|y").is_ok());
        assert_eq!(validate_topic_name(""), Err(TopicValidationError::Empty));
        assert!(matches!(
            validate_topic_name("a b"),
            Err(TopicValidationError::IllegalCharacters(_))
        ));
        assert!(matches!(
            validate_topic_name(&"x".repeat(128)),
            Err(TopicValidationError::TooLong(128))
        ));
        let mut t = TopicConfig::new("ok", 0);
        assert_eq!(t.validate(), Err(TopicValidationError::QueueNums(0)));
        t.read_queue_nums = 4;
        t.write_queue_nums = 4;
        assert!(t.validate().is_ok());
    }
}
