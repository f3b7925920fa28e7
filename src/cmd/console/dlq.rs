//! `/groups/{name}/dlq`: what a consumer group's dead-letter queue (`%DLQ%{group}`) holds on
//! every master, each message with a checkbox; `POST /groups/{name}/dlq/resend` sends the
//! checked ones (or all) again to the group alone, through its retry topic `%RETRY%{group}`.
//! Both go through the admin CLI's code (`admin message dlq [--resend ID,...|--resend-all]`):
//! [`read_dlq`] and [`resend_dlq`].

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Html;
use rocketraft_common::consts::{DLQ_GROUP_TOPIC_PREFIX, RETRY_GROUP_TOPIC_PREFIX};

use super::form::{self, encode};
use super::html::{self, esc, num, td};
use super::topics::{masters, valid_name};
use super::{Console, PageError};
use crate::cmd::admin::consumer::{read_dlq, resend_dlq, DlqMessage, Pick, ResendError, ResendTo};

/// Messages listed per broker set.
const LISTED_PER_BROKER: usize = 200;
/// Characters of a body shown.
const PREVIEW_CHARS: usize = 80;
/// The longest message id the resend form takes.
const MAX_ID_LEN: usize = 128;
/// The most ids one resend form may check.
const MAX_IDS: usize = 10_000;

fn preview(body: &str) -> String {
    let mut out: String = body.chars().take(PREVIEW_CHARS).collect();
    if body.chars().nth(PREVIEW_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// The masters as the admin code takes them: (broker set, address).
async fn master_addrs(console: &Console) -> Result<Vec<(String, String)>, PageError> {
    Ok(masters(console)
        .await?
        .into_iter()
        .map(|m| (m.name, m.addr))
        .collect())
}

fn message_row(m: &DlqMessage) -> Vec<String> {
    let e = &m.message;
    vec![
        format!(
            "<td><input type=\"checkbox\" name=\"id\" value=\"{}\" aria-label=\"resend {}\"></td>",
            esc(m.offset_id()),
            esc(m.id())
        ),
        td(&m.broker),
        num(e.queue_offset),
        td(m.id()),
        td(m.origin_topic().unwrap_or("-")),
        num(e.reconsume_times),
        td(e.message.keys().unwrap_or("-")),
        td(html::when(e.store_timestamp)),
        td(preview(&m.body_text())),
    ]
}

pub(crate) async fn page(
    State(console): State<Console>,
    Path(group): Path<String>,
) -> Result<Html<String>, PageError> {
    valid_name(&group, "The group name")?;
    let masters = master_addrs(&console).await?;
    let read = read_dlq(&console.api, &masters, &group, Some(LISTED_PER_BROKER)).await;
    let dlq = format!("{DLQ_GROUP_TOPIC_PREFIX}{group}");
    let retry = format!("{RETRY_GROUP_TOPIC_PREFIX}{group}");
    let back = format!("/groups/{}", encode(&group));
    let mut body = format!(
        "<p><a href=\"{}\">Consumer group {}</a></p>\n",
        esc(&back),
        esc(&group)
    );
    for p in &read.problems {
        body.push_str(&html::warning(p));
    }
    body.push_str(&format!(
        "<p><b>{}</b> message(s) in {}{}.</p>\n",
        read.messages.len(),
        esc(&dlq),
        if read.more {
            format!(" shown, at most {LISTED_PER_BROKER} per broker set (there are more)")
        } else {
            String::new()
        }
    ));
    if read.messages.is_empty() {
        body.push_str(&html::note(
            "Nothing here: the group's messages have not run out of retries (or nothing was read).",
        ));
        return Ok(html::page(
            &format!("Dead-letter queue of {group}"),
            "/groups",
            &body,
        ));
    }
    let rows: Vec<Vec<String>> = read.messages.iter().map(message_row).collect();
    body.push_str(&format!(
        "<form method=\"post\" action=\"/groups/{}/dlq/resend\">\n",
        esc(&encode(&group))
    ));
    body.push_str(&html::table(
        &[
            "",
            "broker set",
            "queue offset",
            "message id",
            "original topic",
            "reconsume times",
            "keys",
            "stored",
            "body",
        ],
        &rows,
    ));
    body.push_str(&format!(
        "<p><label for=\"to\">Resend to</label> <select id=\"to\" name=\"to\">\n\
         <option value=\"auto\" selected>auto: the POP retry topic if the group POP-consumes the message's topic there, else {retry}</option>\n\
         <option value=\"push\">{retry} (Remoting push and pull consumers)</option>\n\
         <option value=\"pop\">{retry}_TOPIC (POP consumers: RocketMQ 5 gRPC clients)</option>\n\
         </select></p>\n\
         <button type=\"submit\">Resend the checked messages</button>\n\
         <button type=\"submit\" name=\"all\" value=\"1\">Resend every message of the DLQ</button>\n\
         </form>\n\
         <p class=\"muted\">Resent messages go to one of this group's retry topics on the broker set that holds them: \
         only this group gets them again, with their body, keys, tags and properties, the original topic in RETRY_TOPIC \
         and a fresh reconsume count. Push consumers (Remoting) read {retry}; POP consumers of a topic read \
         {retry}_TOPIC. The DLQ keeps its copies.</p>\n",
        retry = esc(&retry)
    ));
    Ok(html::page(
        &format!("Dead-letter queue of {group}"),
        "/groups",
        &body,
    ))
}

/// What the resend form asks: every message, or the checked ones.
fn pick(fields: &[(String, String)]) -> Result<Pick, PageError> {
    if fields
        .iter()
        .any(|(name, v)| name == "all" && !v.trim().is_empty())
    {
        return Ok(Pick::All);
    }
    let ids: Vec<String> = fields
        .iter()
        .filter(|(name, _)| name == "id")
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if ids.is_empty() {
        return Err(PageError::bad_request(
            "Check at least one message to resend (or resend every message).",
        ));
    }
    if ids.len() > MAX_IDS {
        return Err(PageError::bad_request(format!(
            "{} message ids in one form: at most {MAX_IDS}.",
            ids.len()
        )));
    }
    if let Some(bad) = ids
        .iter()
        .find(|id| id.len() > MAX_ID_LEN || id.chars().any(|c| c.is_control()))
    {
        return Err(PageError::bad_request(format!(
            "{:?} is not a message id.",
            bad.chars().take(MAX_ID_LEN).collect::<String>()
        )));
    }
    Ok(Pick::Ids(ids))
}

pub(crate) async fn resend(
    State(console): State<Console>,
    Path(group): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Html<String>, PageError> {
    valid_name(&group, "The group name")?;
    let fields = form::posted_pairs(&headers, &body)?;
    let pick = pick(&fields)?;
    let to = match fields.iter().find(|(name, _)| name == "to") {
        None => ResendTo::Auto,
        Some((_, v)) => ResendTo::parse(v.trim()).ok_or_else(|| {
            PageError::bad_request(format!(
                "{:?} is not a place to resend to (auto, push or pop).",
                v.chars().take(32).collect::<String>()
            ))
        })?,
    };
    let masters = master_addrs(&console).await?;
    let resent = resend_dlq(&console.api, &masters, &group, &pick, to)
        .await
        .map_err(|e| match e {
            ResendError::NotInDlq { .. } => PageError::new(
                StatusCode::NOT_FOUND,
                "Not in the dead-letter queue",
                format!("{e}."),
            ),
            other => PageError::new(
                StatusCode::BAD_GATEWAY,
                "Resend failed",
                format!("Resending {group}'s dead letters: {other}."),
            ),
        })?;
    let topics: std::collections::BTreeSet<&str> =
        resent.iter().map(|r| r.retry_topic.as_str()).collect();
    let retry = topics.into_iter().collect::<Vec<_>>().join(", ");
    let mut body = html::notice(&format!(
        "Resent {} message(s) of {DLQ_GROUP_TOPIC_PREFIX}{group} to {retry}: group {group} gets them again.",
        resent.len()
    ));
    let rows: Vec<Vec<String>> = resent
        .iter()
        .map(|r| {
            vec![
                td(&r.id),
                td(&r.broker),
                num(r.dlq_offset),
                td(r.origin_topic.as_deref().unwrap_or("-")),
                td(&r.retry_topic),
                num(r.queue_id),
                num(r.queue_offset),
                td(preview(&String::from_utf8_lossy(&r.body))),
            ]
        })
        .collect();
    body.push_str(&html::table(
        &[
            "message id",
            "broker set",
            "DLQ offset",
            "original topic",
            "sent to",
            "queue",
            "queue offset",
            "body",
        ],
        &rows,
    ));
    body.push_str(&format!(
        "<p><a href=\"/groups/{g}/dlq\">Back to the dead-letter queue</a> · <a href=\"/groups/{g}\">the group</a></p>\n",
        g = esc(&encode(&group))
    ));
    Ok(html::page("Dead letters resent", "/groups", &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        form::parse_pairs(text).expect("parses")
    }

    #[test]
    fn the_form_picks_checked_ids_or_all() {
        match pick(&pairs("id=A&id=B&id=")).expect("ids") {
            Pick::Ids(ids) => assert_eq!(ids, ["A", "B"]),
            Pick::All => panic!("not all"),
        }
        assert!(matches!(
            pick(&pairs("id=A&all=1")).expect("all"),
            Pick::All
        ));
        assert_eq!(pick(&pairs("")).expect_err("none").status, 400);
        assert_eq!(pick(&pairs("id=%0A")).expect_err("blank").status, 400);
        assert_eq!(pick(&pairs("id=a%0Ab")).expect_err("control").status, 400);
        let long = format!("id={}", "x".repeat(MAX_ID_LEN + 1));
        assert_eq!(pick(&pairs(&long)).expect_err("long").status, 400);
    }

    #[test]
    fn previews_are_cut() {
        assert_eq!(preview("short"), "short");
        let long = "é".repeat(PREVIEW_CHARS + 5);
        assert_eq!(preview(&long).chars().count(), PREVIEW_CHARS + 1);
    }
}
