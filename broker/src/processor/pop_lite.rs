//! POP_LITE_MESSAGE (200070): one receive of a lite consumer over the lite topics it names.
//!
//! The proxy that holds the client's subscription (its Telemetry stream) sends one request per
//! receive: `consumerGroup`, `topic` (the LITE parent topic), `maxMsgNums` (1..=32),
//! `invisibleTime`, `pollTime` (long polling, at most 60 s), `order` (a FIFO group),
//! `expType`/`exp` (the filter, as POP's), `startIndex` (which lite topic's turn it is), and in
//! the body the lite topics as JSON, `{"liteTopics":["a","b"]}`. The broker pops each lite
//! topic's queue (LMQ `%LMQ%${topic}${lite}`) in turn from `startIndex` through
//! [`crate::pop`] (so a FIFO group consumes each lite topic in order, with the same filter
//! handling as POP); when none has a message it holds the request until a store arrival gives
//! one (as POP's long polling) or the poll time passes.
//!
//! The answer is POP's (SUCCESS with the messages, each with its `POP_CK`; POLLING_TIMEOUT or
//! PULL_NOT_FOUND without), plus `expiredLiteTopics`: a JSON array of the named lite topics
//! that expired and have had no message since, so the proxy drops them from the client's set
//! and tells the client (NotifyUnsubscribeLiteCommand). A request naming one is answered at
//! once rather than held. Only an expiry the subscription does not know of is reported: the
//! body's `knownCuts` (one per lite topic) says which expiry's cut the client's subscription
//! knows ([`FIRST_LOOK`]: none yet, nothing reported; -1: none), and the answer's `liteCuts`
//! gives each lite topic's last cut (-1: never expired), which the proxy keeps from a
//! subscription's first look on. A lite topic expires again only after new messages, so its
//! cut only grows: a larger cut is an expiry after the subscription, and a client that
//! subscribes an expired lite topic again keeps it and waits for its next message. With `clientId` (the client the proxy receives for), a group whose
//! config says `liteSubExclusive: true` never pops a lite topic another client owns
//! ([`super::lite_ctl`]): it is named in `evictedLiteTopics` (a JSON array, answered at once as
//! the expired ones), so the proxy drops it from the client's set and tells the client. A held
//! request re-checks ownership when it changes. Bad input (no lite topic, more than
//! [`LITE_SUBSCRIPTION_QUOTA`], a name that is no lite topic, a parent that is not a LITE
//! topic, negative numbers) is refused with INVALID_PARAMETER (TOPIC_NOT_EXIST for an unknown
//! parent) and changes nothing.

use std::time::Duration;

use rocketraft_common::lite::{self, LITE_SUBSCRIPTION_QUOTA};
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::{Refusal, RemotingCommand};

use super::pull::MessageFilter;
use super::Handled;
use crate::BrokerInner;

/// Most messages one request returns (as POP).
const MAX_POP_NUMS: i32 = 32;
/// Bounds of `invisibleTime` (as POP).
const MAX_INVISIBLE_MS: i64 = 12 * 3600 * 1000;
/// The longest a request may be held (as POP).
const MAX_POLL_MS: i64 = 60_000;

/// The body of POP_LITE_MESSAGE.
#[derive(serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PopLiteBody {
    pub lite_topics: Vec<String>,
    /// The cut of the last expiry of each lite topic the client's subscription knows of
    /// (same order as `lite_topics`, or absent): [`FIRST_LOOK`] for a subscription that has
    /// not looked yet, -1 for one made before any expiry. Only a later expiry (a larger cut:
    /// a lite topic expires again only after new messages) is reported. See the module docs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known_cuts: Vec<i64>,
}

/// A [`PopLiteBody::known_cuts`] entry of a subscription that has not looked at its lite topic
/// yet: nothing is reported for it; the answer's `liteCuts` gives what to know from then on.
pub const FIRST_LOOK: i64 = rocketraft_remoting::api::LITE_FIRST_LOOK;

fn invalid(why: impl Into<String>) -> Refusal {
    Refusal::new(response_code::INVALID_PARAMETER, why)
}

/// What a request asks for, checked.
struct Asked {
    group: String,
    topic: String,
    lites: Vec<String>,
    /// [`PopLiteBody::known_cuts`] (empty, or one per lite topic).
    known_cuts: Vec<i64>,
    max_nums: i32,
    invisible_ms: i64,
    poll_ms: i64,
    start: usize,
    order: bool,
    filter: MessageFilter,
    /// The client the proxy receives for (`clientId`), when named.
    client: Option<String>,
}

fn parse(inner: &BrokerInner, request: &RemotingCommand) -> Result<Asked, Refusal> {
    let group = request.require_ext("consumerGroup")?.to_string();
    let topic = request.require_ext("topic")?.to_string();
    let max_nums: i32 = request.ext_parse("maxMsgNums")?;
    let invisible_ms: i64 = request.ext_parse("invisibleTime")?;
    let poll_ms: i64 = request.ext_parse_opt("pollTime")?.unwrap_or(0);
    let start: i64 = request.ext_parse_opt("startIndex")?.unwrap_or(0);
    let order = request.ext("order").is_some_and(|v| v == "true");
    let client = request
        .ext("clientId")
        .filter(|c| !c.trim().is_empty())
        .map(str::to_string);
    if !(1..=MAX_POP_NUMS).contains(&max_nums) {
        return Err(invalid(format!(
            "maxMsgNums {max_nums} must be within 1..={MAX_POP_NUMS}"
        )));
    }
    if !(1..=MAX_INVISIBLE_MS).contains(&invisible_ms) {
        return Err(invalid(format!(
            "invisibleTime {invisible_ms} ms is out of range (1 ms to 12 h)"
        )));
    }
    if poll_ms < 0 {
        return Err(invalid(format!("pollTime {poll_ms} must not be negative")));
    }
    if start < 0 {
        return Err(invalid(format!("startIndex {start} must not be negative")));
    }
    let body: PopLiteBody = serde_json::from_slice(&request.body).map_err(|e| {
        invalid(format!(
            "POP_LITE_MESSAGE body is not {{\"liteTopics\":[...]}}: {e}"
        ))
    })?;
    if body.lite_topics.is_empty() {
        return Err(invalid("POP_LITE_MESSAGE names no lite topic"));
    }
    if body.lite_topics.len() > LITE_SUBSCRIPTION_QUOTA {
        return Err(invalid(format!(
            "POP_LITE_MESSAGE names {} lite topics, at most {LITE_SUBSCRIPTION_QUOTA}",
            body.lite_topics.len()
        )));
    }
    if !body.known_cuts.is_empty() && body.known_cuts.len() != body.lite_topics.len() {
        return Err(invalid(format!(
            "POP_LITE_MESSAGE names {} lite topics but {} known cuts",
            body.lite_topics.len(),
            body.known_cuts.len()
        )));
    }
    super::lite_ctl::check_lite_names(&topic, &body.lite_topics)?;
    let parent = super::existing_topic(inner, &topic)?;
    if !lite::is_lite_parent(&parent) {
        return Err(invalid(format!(
            "topic[{topic}] is not of message type LITE: it has no lite topics"
        )));
    }
    crate::pop::check_consume_enable(inner, &group)?;
    let filter = match request.ext("exp") {
        Some(exp) => MessageFilter::of_type(inner, request.ext("expType"), exp)?,
        None => MessageFilter::parse("*"),
    };
    let start = (start as u64 % body.lite_topics.len() as u64) as usize;
    Ok(Asked {
        group,
        topic,
        lites: body.lite_topics,
        known_cuts: body.known_cuts,
        max_nums,
        invisible_ms,
        poll_ms,
        start,
        order,
        filter,
        client,
    })
}

/// POP_LITE_MESSAGE; see the module documentation.
pub async fn pop_lite(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let a = parse(inner, request)?;
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(a.poll_ms.clamp(0, MAX_POLL_MS) as u64);
    let mut arrivals = inner.store.subscribe_arrivals();
    // An exclusive group's requests naming their client skip what other clients own.
    let exclusive = a
        .client
        .as_ref()
        .filter(|_| super::lite_ctl::is_exclusive(inner, &a.group))
        .map(|c| (c, &inner.lite_owners));
    let mut ownership = exclusive.as_ref().map(|(_, o)| o.subscribe());
    let n = a.lites.len();
    loop {
        arrivals.borrow_and_update();
        if let Some(o) = ownership.as_mut() {
            o.borrow_and_update();
        }
        let evicted: Vec<&String> = match &exclusive {
            None => Vec::new(),
            Some((client, owners)) => {
                let epoch = super::lite_ctl::epoch(inner);
                a.lites
                    .iter()
                    .filter(|l| {
                        owners
                            .owner(epoch, &a.group, &lite::lmq_name(&a.topic, l))
                            .is_some_and(|o| o != **client)
                    })
                    .collect()
            }
        };
        let mut popped = Vec::new();
        let mut rest = 0;
        let mut pop_time = rocketraft_common::time::now_ms();
        for i in 0..n {
            let left = a.max_nums as usize - popped.len();
            if left == 0 {
                break;
            }
            let l = &a.lites[(a.start + i) % n];
            if evicted.contains(&l) {
                continue;
            }
            let lmq = lite::lmq_name(&a.topic, l);
            // A lite topic with no message here and no retry topic has nothing to pop: not
            // asked, so names a client subscribed ahead of any message (or made up) leave no
            // POP state behind. (A queue started over past its records has a retry topic if
            // anything of it was popped: still asked.)
            if inner.store.get_max_offset_in_queue(&lmq, 0) <= 0
                && inner
                    .topics
                    .get(&crate::pop::retry_topic(&a.group, &lmq))
                    .is_none()
            {
                continue;
            }
            let result = inner
                .pop
                .pop(
                    inner,
                    &a.group,
                    &lmq,
                    -1,
                    left,
                    a.invisible_ms,
                    false,
                    a.order,
                    &a.filter,
                )
                .await;
            let result = match result {
                Ok(r) => r,
                // What earlier lite topics gave is answered: failing would leave it invisible.
                Err(e) if !popped.is_empty() => {
                    tracing::warn!(lite_queue = %lmq, code = e.code, error = %e.remark, "POP of a lite topic failed; answering with the messages popped before it");
                    break;
                }
                Err(e) => return Err(e),
            };
            rest += result.rest;
            if !result.messages.is_empty() {
                super::pop::record_out(inner, &a.group, &lmq, &result.messages);
                pop_time = result.pop_time;
                popped.extend(result.messages);
            }
        }
        // Expired with no message since, and (when the proxy says which expiry its
        // subscription knows of) an expiry after that one: a lite topic subscribed again after
        // its expiry is waited on like any other, not reported (nor answered at once) again
        // and again. Ordered by the cuts, which only grow, never by clocks.
        let cuts: Vec<i64> = a
            .lites
            .iter()
            .map(|l| {
                inner
                    .lite
                    .expired_at(&lite::lmq_name(&a.topic, l))
                    .unwrap_or(-1)
            })
            .collect();
        let expired: Vec<&String> = a
            .lites
            .iter()
            .enumerate()
            .filter(|(i, l)| {
                let lmq = lite::lmq_name(&a.topic, l);
                let known = a.known_cuts.get(*i).copied().unwrap_or(-1);
                known != FIRST_LOOK
                    && cuts[*i] > known
                    && inner.lite.is_expired_idle(&inner.store, &lmq)
            })
            .map(|(_, l)| l)
            .collect();
        let expired_json = serde_json::to_string(&expired).unwrap_or_else(|_| "[]".to_string());
        let cuts_json = serde_json::to_string(&cuts).unwrap_or_else(|_| "[]".to_string());
        let evicted_json = serde_json::to_string(&evicted).unwrap_or_else(|_| "[]".to_string());
        if !popped.is_empty() {
            return Ok(request
                .response_to(response_code::SUCCESS, None)
                .with_ext("popTime", pop_time)
                .with_ext("invisibleTime", a.invisible_ms)
                .with_ext("reviveQid", 0)
                .with_ext("restNum", rest)
                .with_ext("expiredLiteTopics", expired_json)
                .with_ext("liteCuts", cuts_json)
                .with_ext("evictedLiteTopics", evicted_json)
                .with_body(crate::pop::body(&popped)));
        }
        if a.poll_ms == 0
            || !expired.is_empty()
            || !evicted.is_empty()
            || tokio::time::Instant::now() >= deadline
        {
            inner.stats.record_get(&a.topic, &a.group, 0, 0);
            let code = if a.poll_ms > 0 {
                response_code::POLLING_TIMEOUT
            } else {
                response_code::PULL_NOT_FOUND
            };
            return Ok(request
                .response_to(code, Some("no new message".to_string()))
                .with_ext("popTime", pop_time)
                .with_ext("invisibleTime", a.invisible_ms)
                .with_ext("reviveQid", 0)
                .with_ext("restNum", rest)
                .with_ext("expiredLiteTopics", expired_json)
                .with_ext("liteCuts", cuts_json)
                .with_ext("evictedLiteTopics", evicted_json));
        }
        // Wake on new messages (or a revive into a retry topic) or a change of ownership, at
        // the latest at the deadline.
        let owned_changed = async {
            match ownership.as_mut() {
                Some(o) => {
                    if o.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        let _ = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                _ = arrivals.changed() => {}
                _ = owned_changed => {}
            }
        })
        .await;
    }
}
