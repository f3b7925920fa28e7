//! LITE_SUBSCRIPTION_CTL (200071): which client of an exclusive lite group owns each lite topic.
//!
//! A subscription group whose config says `liteSubExclusive: true` is exclusive (RocketMQ's
//! `LiteSubscriptionRegistryImpl` exclusive mode): a lite topic is consumed by one client of the
//! group at a time, the one that subscribed it last. The subscriptions live in the proxies, so
//! ownership is decided here, where every proxy serving the group meets. A proxy sends one
//! request per sync of an exclusive group: headers `consumerGroup`, `topic` (the LITE parent),
//! `clientId`, `takeOver` (`true`: the client takes each lite topic from whoever owns it, as a
//! SyncLiteSubscription PARTIAL_ADD or a lite topic newly added by COMPLETE_ADD does; `false`:
//! it claims only the lite topics nobody owns, as a COMPLETE_ADD re-listing its set does, so
//! ownership comes back after a restart without stealing), and in the body
//! `{"liteTopics":[..],"releasedLiteTopics":[..]}` (released: lite topics the client no longer
//! subscribes; dropped only where that client owns them). POP_LITE_MESSAGE
//! ([`super::pop_lite`]) never pops a lite topic owned by another client of an exclusive group
//! and names it in `evictedLiteTopics`, upon which the proxy tells its client
//! (NotifyUnsubscribeLiteCommand).
//!
//! The answer is SUCCESS with `exclusive` (whether the group is exclusive; nothing is recorded
//! for a group that is not). Bad input (no group, client id or lite topic, an illegal name,
//! too many names, a parent that is not a LITE topic) is refused with INVALID_PARAMETER
//! (TOPIC_NOT_EXIST for an unknown parent) and changes nothing.
//!
//! Ownership is kept in this broker's memory only: after a restart, or when the master epoch
//! changes (a failover), it is empty until the next claims (clients re-sync every 30 s). The
//! owners of a lite topic that expires are forgotten with it, and so is an owner that has not
//! claimed its lite topic for 2 minutes (a client re-syncs every 30 s; one that is gone stops).
//! (`resetOffsetInExclusiveMode` is not supported: an evicted lite topic keeps its offset.)

use std::collections::HashMap;
use std::sync::Mutex;

use rocketraft_common::lite::{self, LITE_SUBSCRIPTION_QUOTA};
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{Refusal, RemotingCommand};

use super::Handled;
use crate::BrokerInner;

/// The body of LITE_SUBSCRIPTION_CTL.
#[derive(serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct LiteCtlBody {
    #[serde(default)]
    pub lite_topics: Vec<String>,
    #[serde(default)]
    pub released_lite_topics: Vec<String>,
}

/// The owners of the lite topics of exclusive groups on one broker.
#[derive(Default)]
pub struct LiteOwners {
    state: Mutex<OwnerState>,
    /// Bumped at every change of ownership: a held POP_LITE_MESSAGE re-checks.
    changes: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct OwnerState {
    /// The master epoch the owners were recorded in.
    epoch: i64,
    /// `(group, LMQ)` → client id.
    owners: HashMap<(String, String), String>,
    /// When each owner last claimed its lite topic (clients re-sync every 30 s, which claims
    /// again): an owner silent for [`OWNER_IDLE`] (a client gone) is forgotten.
    claimed: HashMap<(String, String), std::time::Instant>,
    /// When idle owners were last looked for.
    swept: Option<std::time::Instant>,
}

/// An owner that has not claimed its lite topic for this long (four re-syncs) is forgotten.
const OWNER_IDLE: std::time::Duration = std::time::Duration::from_secs(120);
/// Idle owners are looked for at most this often.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl OwnerState {
    /// Forgets owners silent for [`OWNER_IDLE`] (at most every [`SWEEP_EVERY`]); answers
    /// whether any went.
    fn sweep(&mut self, now: std::time::Instant) -> bool {
        if self
            .swept
            .is_some_and(|at| now.duration_since(at) < SWEEP_EVERY)
        {
            return false;
        }
        self.swept = Some(now);
        let before = self.owners.len();
        let claimed = &self.claimed;
        self.owners.retain(|k, _| {
            claimed
                .get(k)
                .is_some_and(|at| now.duration_since(*at) < OWNER_IDLE)
        });
        let owners = &self.owners;
        self.claimed.retain(|k, _| owners.contains_key(k));
        self.owners.len() != before
    }
}

impl LiteOwners {
    fn lock(&self, epoch: i64) -> std::sync::MutexGuard<'_, OwnerState> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.epoch != epoch {
            // Another master term: what the old one recorded may be stale.
            st.owners.clear();
            st.claimed.clear();
            st.epoch = epoch;
        }
        st
    }

    /// The owner of `lmq` in `group`, if any.
    pub fn owner(&self, epoch: i64, group: &str, lmq: &str) -> Option<String> {
        self.lock(epoch)
            .owners
            .get(&(group.to_string(), lmq.to_string()))
            .cloned()
    }

    /// Forgets the owners of `lmqs` in every group (their lite topics expired: a lite topic
    /// made again by a later message is claimed again by the clients' syncs).
    pub fn forget(&self, lmqs: &[&str]) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let before = st.owners.len();
        st.owners
            .retain(|(_, lmq), _| !lmqs.contains(&lmq.as_str()));
        st.claimed
            .retain(|(_, lmq), _| !lmqs.contains(&lmq.as_str()));
        let changed = st.owners.len() != before;
        drop(st);
        if changed {
            self.changes.send_modify(|n| *n += 1);
        }
    }

    /// A receiver that changes whenever ownership changes.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// The current master epoch (0 without HA).
pub fn epoch(inner: &BrokerInner) -> i64 {
    inner.ha.as_ref().map_or(0, |ha| ha.master_epoch() as i64)
}

/// Whether `group`'s stored config says `liteSubExclusive: true`.
pub fn is_exclusive(inner: &BrokerInner, group: &str) -> bool {
    const KEY: &str = "liteSubExclusive";
    inner
        .metadata
        .get_subscription_group(group)
        .ok()
        .flatten()
        .filter(|raw| raw.windows(KEY.len()).any(|w| w == KEY.as_bytes()))
        .and_then(|raw| serde_json::from_slice::<serde_json::Value>(&raw).ok())
        .and_then(|v| v[KEY].as_bool())
        .unwrap_or(false)
}

fn invalid(why: impl Into<String>) -> Refusal {
    Refusal::new(response_code::INVALID_PARAMETER, why)
}

/// Checks lite topic names of `topic` (legal, each LMQ name within a topic name's length).
pub(super) fn check_lite_names(topic: &str, lites: &[String]) -> Result<(), Refusal> {
    for l in lites {
        lite::validate_lite_topic(l).map_err(|e| invalid(e.to_string()))?;
        let lmq = lite::lmq_name(topic, l);
        if lmq.len() > rocketraft_common::topic::TOPIC_MAX_LENGTH {
            return Err(invalid(format!(
                "the queue name {lmq:?} of lite topic {l:?} is too long"
            )));
        }
    }
    Ok(())
}

/// LITE_SUBSCRIPTION_CTL; see the module documentation.
pub fn lite_ctl(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let group = request.require_ext("consumerGroup")?.to_string();
    let topic = request.require_ext("topic")?.to_string();
    let client = request.require_ext("clientId")?.to_string();
    if group.trim().is_empty() {
        return Err(invalid("LITE_SUBSCRIPTION_CTL names no consumer group"));
    }
    if client.trim().is_empty() {
        return Err(invalid("LITE_SUBSCRIPTION_CTL names no client id"));
    }
    let take_over = match request.ext("takeOver") {
        None | Some("false") => false,
        Some("true") => true,
        Some(v) => return Err(invalid(format!("takeOver {v:?} is neither true nor false"))),
    };
    let body: LiteCtlBody = serde_json::from_slice(&request.body).map_err(|e| {
        invalid(format!(
            "LITE_SUBSCRIPTION_CTL body is not {{\"liteTopics\":[...],\"releasedLiteTopics\":[...]}}: {e}"
        ))
    })?;
    if body.lite_topics.is_empty() && body.released_lite_topics.is_empty() {
        return Err(invalid("LITE_SUBSCRIPTION_CTL names no lite topic"));
    }
    for (what, list) in [
        ("liteTopics", &body.lite_topics),
        ("releasedLiteTopics", &body.released_lite_topics),
    ] {
        if list.len() > LITE_SUBSCRIPTION_QUOTA {
            return Err(invalid(format!(
                "LITE_SUBSCRIPTION_CTL names {} {what}, at most {LITE_SUBSCRIPTION_QUOTA}",
                list.len()
            )));
        }
        check_lite_names(&topic, list)?;
    }
    let parent = super::existing_topic(inner, &topic)?;
    if !lite::is_lite_parent(&parent) {
        return Err(invalid(format!(
            "topic[{topic}] is not of message type LITE: it has no lite topics"
        )));
    }
    let exclusive = is_exclusive(inner, &group);
    if exclusive {
        let owners = &inner.lite_owners;
        let mut changed = 0usize;
        let mut taken = Vec::new();
        {
            let mut st = owners.lock(epoch(inner));
            let now = std::time::Instant::now();
            if st.sweep(now) {
                changed += 1;
            }
            for l in &body.released_lite_topics {
                let k = (group.clone(), lite::lmq_name(&topic, l));
                if st.owners.get(&k) == Some(&client) {
                    st.owners.remove(&k);
                    st.claimed.remove(&k);
                    changed += 1;
                }
            }
            for l in &body.lite_topics {
                let k = (group.clone(), lite::lmq_name(&topic, l));
                match st.owners.get(&k) {
                    Some(o) if *o == client => {
                        st.claimed.insert(k, now);
                    }
                    Some(o) if !take_over => {
                        tracing::debug!(%group, lite_topic = %l, owner = %o, client = %client, "lite topic owned by another client: not claimed");
                    }
                    previous => {
                        if let Some(o) = previous {
                            taken.push((l.clone(), o.clone()));
                        }
                        st.owners.insert(k.clone(), client.clone());
                        st.claimed.insert(k, now);
                        changed += 1;
                    }
                }
            }
        }
        for (l, from) in &taken {
            tracing::info!(%group, %topic, lite_topic = %l, from = %from, to = %client, "exclusive lite group: lite topic taken over by another client");
        }
        if changed > 0 {
            owners.changes.send_modify(|n| *n += 1);
        }
    }
    Ok(request
        .response_to(response_code::SUCCESS, None)
        .with_ext("exclusive", exclusive))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_silent_past_the_idle_time_are_forgotten() {
        let mut st = OwnerState::default();
        let t0 = std::time::Instant::now();
        let (a, b) = (
            ("g".to_string(), "%LMQ%$T$a".to_string()),
            ("g".to_string(), "%LMQ%$T$b".to_string()),
        );
        st.owners.insert(a.clone(), "A".into());
        st.claimed.insert(a.clone(), t0);
        st.owners.insert(b.clone(), "B".into());
        st.claimed.insert(b.clone(), t0 + OWNER_IDLE / 2);
        assert!(!st.sweep(t0 + OWNER_IDLE / 2), "nobody idle yet");
        // Within SWEEP_EVERY of the last sweep: not looked at again.
        assert!(!st.sweep(t0 + OWNER_IDLE / 2 + SWEEP_EVERY / 2));
        assert!(st.sweep(t0 + OWNER_IDLE + SWEEP_EVERY));
        assert_eq!(st.owners.keys().collect::<Vec<_>>(), vec![&b]);
        assert_eq!(st.claimed.len(), 1);
    }
}
