//! Lite topics on the broker ([`rocketraft_common::lite`]): a send to a parent topic of type
//! `LITE` names its lite topic in the `__LITE_TOPIC` property and is stored in that lite topic's
//! own queue, the LMQ `%LMQ%${parent}${lite}` (one queue, id 0), created by its first message.
//! Everything that names a topic (POP, ACK, PULL, offsets, the retry topic of a POP group) works
//! on an LMQ as on any topic: [`lmq_config`] answers for it while its parent is a LITE topic, so
//! a consumer group has its own offset and in-flight state per lite topic, and a FIFO group's
//! order gate (one queue) orders each lite topic on its own.

use rocketraft_common::consts::property;
use rocketraft_common::lite::{self, PROPERTY_LITE_TOPIC};
use rocketraft_common::TopicConfig;
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::Refusal;

use crate::store::BrokerMessage;
use crate::topic::TopicConfigManager;

/// The configuration of an LMQ name whose parent is a LITE topic here; `None` otherwise.
pub fn lmq_config(topics: &TopicConfigManager, name: &str) -> Option<TopicConfig> {
    let (parent, _) = lite::parse_lmq(name)?;
    let parent = topics.get(parent)?;
    lite::lmq_config(name, &parent)
}

fn illegal(why: String) -> Refusal {
    Refusal::new(response_code::MESSAGE_ILLEGAL, why)
}

/// Properties that make a message delayed; a lite message is delivered at once.
const DELAY_KEYS: [&str; 4] = [
    property::TIMER_DELIVER_MS,
    property::TIMER_DELAY_SEC,
    property::TIMER_DELAY_MS,
    property::DELAY_TIME_LEVEL,
];

/// A send's messages routed to their lite topic's LMQ when `config` is a LITE topic: each
/// message names the same valid lite topic, is neither delayed nor transactional, and is
/// stored in queue 0 of the LMQ. Answers the queue id the messages go to. A message with a lite
/// topic sent to a topic of another type, or a message without one sent to a LITE topic, is
/// refused with MESSAGE_ILLEGAL, as RocketMQ refuses a message whose type its topic does not
/// accept.
pub fn route_send(
    config: &TopicConfig,
    sys_flag: i32,
    queue_id: i32,
    messages: &mut [BrokerMessage],
) -> Result<i32, Refusal> {
    let parent = lite::is_lite_parent(config);
    let mut lite_topic: Option<String> = None;
    for m in messages.iter() {
        let named = m.message.properties.get(PROPERTY_LITE_TOPIC);
        match (parent, named) {
            (false, None) => continue,
            (false, Some(l)) => {
                return Err(illegal(format!(
                    "topic[{}] is not of message type LITE; the lite topic {l:?} cannot be sent to it",
                    config.topic_name
                )))
            }
            (true, None) => {
                return Err(illegal(format!(
                    "topic[{}] is of message type LITE: a message sent to it needs a lite topic ({PROPERTY_LITE_TOPIC})",
                    config.topic_name
                )))
            }
            (true, Some(l)) => {
                lite::validate_lite_topic(l).map_err(|e| illegal(e.to_string()))?;
                if lite_topic.as_deref().is_some_and(|first| first != l) {
                    return Err(illegal(
                        "the messages of a batch must share one lite topic".to_string(),
                    ));
                }
                if DELAY_KEYS.iter().any(|k| m.message.properties.contains_key(*k))
                    || crate::transaction::is_prepared(&m.message, sys_flag)
                {
                    return Err(illegal(format!(
                        "a lite message (lite topic {l:?}) cannot be delayed or transactional"
                    )));
                }
                lite_topic = Some(l.clone());
            }
        }
    }
    let Some(lite_topic) = lite_topic else {
        return Ok(queue_id);
    };
    let lmq = lite::lmq_name(&config.topic_name, &lite_topic);
    if lmq.len() > rocketraft_common::topic::TOPIC_MAX_LENGTH {
        return Err(illegal(format!(
            "the queue name {lmq:?} of lite topic {lite_topic:?} is longer than {} characters",
            rocketraft_common::topic::TOPIC_MAX_LENGTH
        )));
    }
    for m in messages.iter_mut() {
        m.message.topic = lmq.clone();
        m.queue_id = 0;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rocketraft_common::message::Message;

    fn lite_parent() -> TopicConfig {
        let mut c = TopicConfig::new("P", 4);
        c.attributes.insert("message.type".into(), "LITE".into());
        c
    }

    fn message(lite: Option<&str>) -> BrokerMessage {
        let mut m = Message::new("P", b"x".to_vec());
        if let Some(l) = lite {
            m.properties.insert(PROPERTY_LITE_TOPIC.into(), l.into());
        }
        BrokerMessage::new(m, 2)
    }

    fn code(r: Result<i32, Refusal>) -> i32 {
        match r {
            Ok(_) => panic!("accepted"),
            Err(r) => r.code,
        }
    }

    #[test]
    fn lite_messages_go_to_their_lmq() {
        let mut ms = vec![message(Some("a")), message(Some("a"))];
        assert_eq!(route_send(&lite_parent(), 0, 2, &mut ms).ok(), Some(0));
        for m in &ms {
            assert_eq!(m.message.topic, "%LMQ%$P$a");
            assert_eq!(m.queue_id, 0);
        }
    }

    #[test]
    fn wrong_kinds_are_refused() {
        let normal = TopicConfig::new("P", 4);
        let mut plain = vec![message(None)];
        assert_eq!(route_send(&normal, 0, 2, &mut plain).ok(), Some(2));
        assert_eq!(plain[0].message.topic, "P");
        let illegal = response_code::MESSAGE_ILLEGAL;
        assert_eq!(
            code(route_send(&normal, 0, 2, &mut [message(Some("a"))])),
            illegal
        );
        assert_eq!(
            code(route_send(&lite_parent(), 0, 2, &mut [message(None)])),
            illegal
        );
        assert_eq!(
            code(route_send(
                &lite_parent(),
                0,
                2,
                &mut [message(Some("a$b"))]
            )),
            illegal
        );
        assert_eq!(
            code(route_send(
                &lite_parent(),
                0,
                2,
                &mut [message(Some("a")), message(Some("b"))]
            )),
            illegal
        );
        let mut delayed = message(Some("a"));
        delayed
            .message
            .properties
            .insert(property::DELAY_TIME_LEVEL.into(), "3".into());
        assert_eq!(
            code(route_send(&lite_parent(), 0, 2, &mut [delayed])),
            illegal
        );
    }
}
