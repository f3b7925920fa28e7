//! POP_MESSAGE (200050), ACK_MESSAGE (200051) and CHANGE_MESSAGE_INVISIBLETIME (200053) over
//! Remoting; the logic is in [`crate::pop`].

use std::time::Duration;

use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::RemotingCommand;

use super::pull::TagFilter;
use super::{Handled, Refusal};
use crate::pop::{Handle, PopError};
use crate::BrokerInner;

/// Most messages one POP returns (RocketMQ caps `maxMsgNums` at 32).
const MAX_POP_NUMS: i32 = 32;
/// Bounds of `invisibleTime` (RocketMQ's proxy allows 10 s to 12 h; the broker takes shorter ones).
const MAX_INVISIBLE_MS: i64 = 12 * 3600 * 1000;
/// The longest a POP may be held for long polling.
const MAX_POLL_MS: i64 = 60_000;

fn refusal(e: PopError) -> Refusal {
    let PopError::Refused(code, why) = e;
    Refusal(code, why)
}

fn bad(why: impl Into<String>) -> Refusal {
    Refusal(response_code::SYSTEM_ERROR, why.into())
}

fn check_invisible(ms: i64) -> Result<(), Refusal> {
    if !(1..=MAX_INVISIBLE_MS).contains(&ms) {
        return Err(bad(format!(
            "invisibleTime {ms} ms is out of range (1 ms to 12 h)"
        )));
    }
    Ok(())
}

pub async fn pop(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let group = request.require_ext("consumerGroup")?.to_string();
    let topic = request.require_ext("topic")?.to_string();
    let queue_id: i32 = request.ext_parse("queueId")?;
    let max_nums: i32 = request.ext_parse("maxMsgNums")?;
    let invisible_ms: i64 = request.ext_parse("invisibleTime")?;
    let poll_ms: i64 = request.ext_parse_opt("pollTime")?.unwrap_or(0);
    let init_mode: i32 = request.ext_parse_opt("initMode")?.unwrap_or(0);
    let order = request.ext("order").is_some_and(|v| v == "true");
    if !(1..=MAX_POP_NUMS).contains(&max_nums) {
        return Err(bad(format!("maxMsgNums {max_nums} must be within 1..=32")));
    }
    check_invisible(invisible_ms)?;
    if order {
        return Err(Refusal(
            response_code::REQUEST_CODE_NOT_SUPPORTED,
            "FIFO (order = true) POP is not supported by this broker yet".into(),
        ));
    }
    let filter = match request.ext("exp") {
        Some(exp)
            if request
                .ext("expType")
                .is_none_or(|t| t.eq_ignore_ascii_case("TAG")) =>
        {
            TagFilter::parse(exp)
        }
        Some(_) => {
            return Err(Refusal(
                response_code::SUBSCRIPTION_PARSE_FAILED,
                "only TAG expressions are supported".into(),
            ))
        }
        None => TagFilter::parse("*"),
    };
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(poll_ms.clamp(0, MAX_POLL_MS) as u64);
    let mut arrivals = inner.store.subscribe_arrivals();
    loop {
        arrivals.borrow_and_update();
        let result = inner
            .pop
            .pop(
                inner,
                &group,
                &topic,
                queue_id,
                max_nums as usize,
                invisible_ms,
                init_mode == 1,
                &filter,
            )
            .await
            .map_err(refusal)?;
        if !result.messages.is_empty() {
            return Ok(request
                .response_to(response_code::SUCCESS, None)
                .with_ext("popTime", result.pop_time)
                .with_ext("invisibleTime", result.invisible_ms)
                .with_ext("reviveQid", 0)
                .with_ext("restNum", result.rest)
                .with_body(crate::pop::body(&result.messages)));
        }
        if poll_ms <= 0 || tokio::time::Instant::now() >= deadline {
            let code = if poll_ms > 0 {
                response_code::POLLING_TIMEOUT
            } else {
                response_code::PULL_NOT_FOUND
            };
            return Ok(request
                .response_to(code, Some("no new message".to_string()))
                .with_ext("popTime", result.pop_time)
                .with_ext("invisibleTime", invisible_ms)
                .with_ext("reviveQid", 0)
                .with_ext("restNum", result.rest));
        }
        // Wake on new messages (or a revive into the retry topic), at the latest at the deadline.
        let _ = tokio::time::timeout_at(deadline, arrivals.changed()).await;
    }
}

fn handle_of(request: &RemotingCommand) -> Result<Handle, Refusal> {
    let extra = request.require_ext("extraInfo")?;
    let handle = Handle::parse(extra).map_err(|e| Refusal(response_code::SYSTEM_ERROR, e))?;
    if let Some(q) = request.ext_parse_opt::<i32>("queueId")? {
        if q != handle.queue_id {
            return Err(bad(format!(
                "queueId {q} does not match the receipt handle's queue {}",
                handle.queue_id
            )));
        }
    }
    if let Some(o) = request.ext_parse_opt::<i64>("offset")? {
        if o != handle.queue_offset {
            return Err(bad(format!(
                "offset {o} does not match the receipt handle's offset {}",
                handle.queue_offset
            )));
        }
    }
    Ok(handle)
}

pub async fn ack(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let group = request.require_ext("consumerGroup")?.to_string();
    let topic = request.require_ext("topic")?.to_string();
    let handle = handle_of(request)?;
    inner
        .pop
        .ack(inner, &group, &topic, &handle)
        .await
        .map_err(refusal)?;
    Ok(request.response_to(response_code::SUCCESS, None))
}

pub async fn change_invisible(inner: &BrokerInner, request: &RemotingCommand) -> Handled {
    let group = request.require_ext("consumerGroup")?.to_string();
    let topic = request.require_ext("topic")?.to_string();
    let invisible_ms: i64 = request.ext_parse("invisibleTime")?;
    check_invisible(invisible_ms)?;
    let handle = handle_of(request)?;
    let pop_time = inner
        .pop
        .change_invisible(inner, &group, &topic, &handle, invisible_ms)
        .await
        .map_err(refusal)?;
    Ok(request
        .response_to(response_code::SUCCESS, None)
        .with_ext("popTime", pop_time)
        .with_ext("invisibleTime", invisible_ms)
        .with_ext("reviveQid", 0))
}
