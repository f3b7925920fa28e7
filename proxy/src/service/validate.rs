//! Validation of a message to send: pure functions of the message, the proxy's limit and the
//! topic's configuration, with no network call inside. A send runs them in three steps around
//! its two lookups, so a message with several faults is refused for the one it always was:
//! 1. [`check_message`], before the topic's route is looked up: a topic, a message id, a body
//!    neither empty nor too large, no property that conflicts with the message's type;
//! 2. [`check_type`], once the topic's accepted message types are known;
//! 3. [`check_properties`], once a writable queue with a master is chosen: no user property
//!    with a reserved (system) key.

use super::convert::{status, wrapped, SYSTEM_KEYS};
use crate::pb;

/// A message that passed [`check_message`]: what the rest of a send needs of it.
pub(super) struct Outgoing<'a> {
    /// The namespaced topic name (`{namespace}%{topic}`).
    pub topic: String,
    pub sys: &'a pb::SystemProperties,
    /// The FIFO message group (none when empty).
    pub group: Option<&'a str>,
    /// The declared message type, or the one its properties imply (a group: FIFO, a delivery
    /// timestamp: DELAY, else NORMAL).
    pub message_type: i32,
    pub transactional: bool,
}

/// What the message alone decides: its topic, message id, body (not empty, at most
/// `max_body_size` bytes) and whether its properties fit its type.
pub(super) fn check_message(
    message: &pb::Message,
    max_body_size: usize,
) -> Result<Outgoing<'_>, pb::Status> {
    let topic = message
        .topic
        .as_ref()
        .filter(|t| !t.name.is_empty())
        .ok_or_else(|| status(pb::Code::IllegalTopic, "the message has no topic"))?;
    let sys = message
        .system_properties
        .as_ref()
        .filter(|s| !s.message_id.is_empty())
        .ok_or_else(|| status(pb::Code::IllegalMessageId, "the message has no message_id"))?;
    if message.body.is_empty() {
        return Err(status(
            pb::Code::MessageBodyEmpty,
            "the message body is empty",
        ));
    }
    if message.body.len() > max_body_size {
        return Err(status(
            pb::Code::MessageBodyTooLarge,
            format!(
                "the body of {} bytes exceeds the maximum of {}",
                message.body.len(),
                max_body_size
            ),
        ));
    }
    let group = sys.message_group.as_deref().filter(|g| !g.is_empty());
    let transactional = sys.message_type == pb::MessageType::Transaction as i32;
    let lite = sys.lite_topic.as_deref().filter(|l| !l.is_empty());
    let message_type = if sys.message_type != pb::MessageType::Unspecified as i32 {
        sys.message_type
    } else if lite.is_some() {
        pb::MessageType::Lite as i32
    } else if group.is_some() {
        pb::MessageType::Fifo as i32
    } else if sys.delivery_timestamp.is_some() {
        pb::MessageType::Delay as i32
    } else {
        pb::MessageType::Normal as i32
    };
    if transactional && (group.is_some() || sys.delivery_timestamp.is_some()) {
        return Err(status(
            pb::Code::MessagePropertyConflictWithType,
            "a transactional message cannot have a message group or a delivery timestamp",
        ));
    }
    if let Some(l) = lite {
        rocketraft_common::lite::validate_lite_topic(l)
            .map_err(|e| status(pb::Code::IllegalLiteTopic, e.to_string()))?;
        if transactional || group.is_some() || sys.delivery_timestamp.is_some() {
            return Err(status(
                pb::Code::MessagePropertyConflictWithType,
                "a lite message cannot be transactional or have a message group or a delivery timestamp",
            ));
        }
    } else if message_type == pb::MessageType::Lite as i32 {
        return Err(status(
            pb::Code::IllegalLiteTopic,
            "a message of type LITE needs a lite topic",
        ));
    }
    if group.is_some() && sys.delivery_timestamp.is_some() {
        return Err(status(
            pb::Code::MessagePropertyConflictWithType,
            "a message cannot have both a message group and a delivery timestamp",
        ));
    }
    Ok(Outgoing {
        topic: wrapped(topic),
        sys,
        group,
        message_type,
        transactional,
    })
}

/// Whether the topic accepts the message's type (`accepted`: from its `message.type`
/// attribute).
pub(super) fn check_type(out: &Outgoing<'_>, accepted: &[i32]) -> Result<(), pb::Status> {
    if accepted.contains(&out.message_type) {
        return Ok(());
    }
    let type_name = |t: i32| {
        pb::MessageType::try_from(t)
            .map(|t| t.as_str_name())
            .unwrap_or("UNKNOWN")
    };
    Err(status(
        pb::Code::MessagePropertyConflictWithType,
        format!(
            "topic {} accepts {} messages, not {}",
            out.topic,
            accepted
                .iter()
                .map(|t| type_name(*t))
                .collect::<Vec<_>>()
                .join("/"),
            type_name(out.message_type)
        ),
    ))
}

/// No user property may use a key the protocol carries in `SystemProperties` (the first such
/// key in sorted order is named).
pub(super) fn check_properties(message: &pb::Message) -> Result<(), pb::Status> {
    match message
        .user_properties
        .keys()
        .filter(|k| SYSTEM_KEYS.contains(&k.as_str()))
        .min()
    {
        Some(bad) => Err(status(
            pb::Code::IllegalMessagePropertyKey,
            format!("user property {bad:?} is reserved"),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::convert::accepted_types;

    const MAX: usize = 16;

    /// A valid NORMAL message to topic `t`.
    fn message() -> pb::Message {
        pb::Message {
            topic: Some(pb::Resource {
                resource_namespace: String::new(),
                name: "t".into(),
            }),
            system_properties: Some(pb::SystemProperties {
                message_id: "id-1".into(),
                ..pb::SystemProperties::default()
            }),
            body: b"hello".to_vec(),
            ..pb::Message::default()
        }
    }

    /// [`message`] changed by `change`.
    fn with(change: impl FnOnce(&mut pb::Message)) -> pb::Message {
        let mut m = message();
        change(&mut m);
        m
    }

    fn sys(m: &mut pb::Message) -> &mut pb::SystemProperties {
        m.system_properties.as_mut().expect("system properties")
    }

    /// The code and message of a refusal.
    fn refusal<T>(r: Result<T, pb::Status>) -> (pb::Code, String) {
        match r {
            Ok(_) => panic!("accepted"),
            Err(s) => (pb::Code::try_from(s.code).expect("a code"), s.message),
        }
    }

    fn refused(m: &pb::Message) -> (pb::Code, String) {
        refusal(check_message(m, MAX))
    }

    fn is(code: pb::Code, message: &str) -> (pb::Code, String) {
        (code, message.to_string())
    }

    #[test]
    fn a_plain_message_is_a_normal_one() {
        let m = message();
        let out = check_message(&m, MAX).expect("valid");
        assert_eq!(out.topic, "t");
        assert_eq!(out.message_type, pb::MessageType::Normal as i32);
        assert!(out.group.is_none());
        assert!(!out.transactional);
        assert!(check_type(&out, &accepted_types(None)).is_ok());
        assert!(check_properties(&m).is_ok());
    }

    #[test]
    fn the_topic_is_namespaced() {
        let m = with(|m| m.topic.as_mut().expect("topic").resource_namespace = "ns".into());
        assert_eq!(check_message(&m, MAX).expect("valid").topic, "ns%t");
    }

    #[test]
    fn a_message_without_topic_is_refused() {
        let no_topic = is(pb::Code::IllegalTopic, "the message has no topic");
        assert_eq!(refused(&with(|m| m.topic = None)), no_topic);
        assert_eq!(
            refused(&with(|m| m.topic = Some(pb::Resource::default()))),
            no_topic
        );
        // Before the message id.
        assert_eq!(
            refused(&with(|m| {
                m.topic = None;
                m.system_properties = None;
            })),
            no_topic
        );
    }

    #[test]
    fn a_message_without_message_id_is_refused() {
        let no_id = is(pb::Code::IllegalMessageId, "the message has no message_id");
        assert_eq!(refused(&with(|m| sys(m).message_id.clear())), no_id);
        assert_eq!(refused(&with(|m| m.system_properties = None)), no_id);
    }

    #[test]
    fn an_empty_body_is_refused() {
        assert_eq!(
            refused(&with(|m| m.body.clear())),
            is(pb::Code::MessageBodyEmpty, "the message body is empty")
        );
    }

    #[test]
    fn a_body_over_the_maximum_is_refused() {
        let largest = with(|m| m.body = vec![0; MAX]);
        assert!(
            check_message(&largest, MAX).is_ok(),
            "the maximum itself is fine"
        );
        assert_eq!(
            refused(&with(|m| m.body = vec![0; MAX + 1])),
            is(
                pb::Code::MessageBodyTooLarge,
                "the body of 17 bytes exceeds the maximum of 16"
            )
        );
    }

    #[test]
    fn a_transactional_message_with_a_group_or_a_delivery_time_is_refused() {
        for (group, delivery) in [(true, false), (false, true), (true, true)] {
            let m = with(|m| {
                let s = sys(m);
                s.message_type = pb::MessageType::Transaction as i32;
                s.message_group = group.then(|| "g".to_string());
                s.delivery_timestamp = delivery.then(prost_types::Timestamp::default);
            });
            assert_eq!(
                refused(&m),
                is(
                    pb::Code::MessagePropertyConflictWithType,
                    "a transactional message cannot have a message group or a delivery timestamp"
                ),
                "group {group}, delivery {delivery}"
            );
        }
    }

    #[test]
    fn a_group_and_a_delivery_time_together_are_refused() {
        let m = with(|m| {
            sys(m).message_group = Some("g".into());
            sys(m).delivery_timestamp = Some(prost_types::Timestamp::default());
        });
        assert_eq!(
            refused(&m),
            is(
                pb::Code::MessagePropertyConflictWithType,
                "a message cannot have both a message group and a delivery timestamp"
            )
        );
    }

    #[test]
    fn the_type_is_inferred_from_the_properties() {
        let fifo = with(|m| sys(m).message_group = Some("g".into()));
        let out = check_message(&fifo, MAX).expect("valid");
        assert_eq!(
            (out.message_type, out.group),
            (pb::MessageType::Fifo as i32, Some("g"))
        );

        let delay = with(|m| {
            sys(m).message_group = Some(String::new());
            sys(m).delivery_timestamp = Some(prost_types::Timestamp::default());
        });
        let out = check_message(&delay, MAX).expect("an empty group is no group");
        assert_eq!(
            (out.message_type, out.group),
            (pb::MessageType::Delay as i32, None)
        );

        let transaction = with(|m| sys(m).message_type = pb::MessageType::Transaction as i32);
        let out = check_message(&transaction, MAX).expect("valid");
        assert_eq!(out.message_type, pb::MessageType::Transaction as i32);
        assert!(out.transactional);
    }

    #[test]
    fn a_type_the_topic_does_not_accept_is_refused() {
        let fifo = with(|m| sys(m).message_group = Some("g".into()));
        let out = check_message(&fifo, MAX).expect("valid");
        assert_eq!(
            refusal(check_type(&out, &accepted_types(Some("normal")))),
            is(
                pb::Code::MessagePropertyConflictWithType,
                "topic t accepts NORMAL messages, not FIFO"
            )
        );
        for accepting in [Some("FIFO"), Some("MIXED"), None] {
            assert!(
                check_type(&out, &accepted_types(accepting)).is_ok(),
                "{accepting:?}"
            );
        }
    }

    #[test]
    fn a_reserved_property_key_is_refused() {
        let mut m = with(|m| {
            m.user_properties.insert("mine".into(), "x".into());
        });
        assert!(check_properties(&m).is_ok());
        m.user_properties.insert("TAGS".into(), "x".into());
        m.user_properties.insert("KEYS".into(), "x".into());
        assert_eq!(
            refusal(check_properties(&m)),
            is(
                pb::Code::IllegalMessagePropertyKey,
                "user property \"KEYS\" is reserved"
            )
        );
    }
}
