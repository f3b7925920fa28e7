//! `/messages`: messages by topic and key (QUERY_MESSAGE on a broker of every set serving the
//! topic, as `admin message query`) or by id (an offset message id is asked of its broker with
//! VIEW_MESSAGE_BY_ID; a unique id, with its topic, is looked up with QUERY_MESSAGE and
//! `_UNIQUE_KEY_QUERY`, as `admin message get`). Properties and body are shown escaped.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Html;
use rocketraft_common::message::{decode_offset_msg_id, MessageExt};

use super::form::{self, encode};
use super::html::{self, esc, num, td};
use super::topics::valid_name;
use super::{is_topic_not_exist, Console, PageError};

/// Messages shown per broker at most.
const MAX_PER_BROKER: i32 = 32;
/// Body characters shown at most.
const MAX_BODY_CHARS: usize = 16 * 1024;

fn forms(topic: &str, key: &str, id: &str) -> String {
    format!(
        "<fieldset><legend>By key</legend><form method=\"get\" action=\"/messages\">\n\
         <label>Topic <input name=\"topic\" value=\"{t}\" required></label>\n\
         <label>Key <input name=\"key\" value=\"{k}\" required></label>\n\
         <button type=\"submit\">Find</button></form></fieldset>\n\
         <fieldset><legend>By message id</legend><form method=\"get\" action=\"/messages\">\n\
         <label>Id <input name=\"id\" value=\"{i}\" size=\"40\" required></label>\n\
         <label>Topic <input name=\"topic\" value=\"{t}\" placeholder=\"needed for a unique id\"></label>\n\
         <button type=\"submit\">Find</button></form></fieldset>\n",
        t = esc(topic),
        k = esc(key),
        i = esc(id)
    )
}

/// A broker of each set serving `topic`: (set name, address), the master if it is live.
async fn topic_brokers(console: &Console, topic: &str) -> Result<Vec<(String, String)>, PageError> {
    let route = console
        .api
        .topic_route(&console.namesrv, topic)
        .await
        .map_err(|e| {
            if is_topic_not_exist(&e) {
                PageError::new(
                    StatusCode::NOT_FOUND,
                    "Unknown topic",
                    format!("Topic {topic} does not exist: the NameServer has no route for it."),
                )
            } else {
                console.namesrv_error(&format!("Routing topic {topic}"), e)
            }
        })?;
    Ok(route
        .broker_datas
        .iter()
        .filter_map(|b| {
            b.master_addr()
                .or_else(|| b.broker_addrs.values().next().map(String::as_str))
                .map(|a| (b.broker_name.clone(), a.to_string()))
        })
        .collect())
}

/// QUERY_MESSAGE for `key` (or the unique id) on every broker of `topic`.
async fn query(
    console: &Console,
    topic: &str,
    key: &str,
    unique: bool,
) -> Result<(Vec<(String, MessageExt)>, Vec<String>), PageError> {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for (name, addr) in topic_brokers(console, topic).await? {
        match console
            .api
            .query_message(&addr, topic, key, MAX_PER_BROKER, 0, i64::MAX, unique)
            .await
        {
            Ok(messages) => found.extend(
                messages
                    .into_iter()
                    .filter(|m| {
                        m.message.topic == topic
                            && if unique {
                                m.message.uniq_key() == Some(key)
                            } else {
                                m.message
                                    .keys()
                                    .is_some_and(|keys| keys.split(' ').any(|k| k == key))
                            }
                    })
                    .map(|m| (name.clone(), m)),
            ),
            Err(e) => problems.push(super::cluster::call_failure(
                console,
                "QUERY_MESSAGE",
                &format!("{name} ({addr})"),
                e,
            )),
        }
    }
    Ok((found, problems))
}

fn show_message(broker: &str, m: &MessageExt) -> String {
    let mut out = format!(
        "<h2>{} <span class=\"muted\">({})</span></h2>\n",
        esc(m.message.uniq_key().unwrap_or(&m.msg_id)),
        esc(broker)
    );
    let rows = vec![
        vec![td("topic"), td(&m.message.topic)],
        vec![td("offset message id"), td(&m.msg_id)],
        vec![td("unique id"), td(m.message.uniq_key().unwrap_or("-"))],
        vec![td("keys"), td(m.message.keys().unwrap_or("-"))],
        vec![td("tags"), td(m.message.tags().unwrap_or("-"))],
        vec![td("queue"), num(m.queue_id)],
        vec![td("queue offset"), num(m.queue_offset)],
        vec![td("CommitLog offset"), num(m.commit_log_offset)],
        vec![
            td("born"),
            td(format!(
                "{} from {}",
                html::when(m.born_timestamp),
                m.born_host
            )),
        ],
        vec![
            td("stored"),
            td(format!(
                "{} on {}",
                html::when(m.store_timestamp),
                m.store_host
            )),
        ],
        vec![td("reconsume times"), num(m.reconsume_times)],
        vec![
            td("body size"),
            num(format!("{} bytes", m.message.body.len())),
        ],
    ];
    out.push_str(&html::table(&["", ""], &rows));
    let props: Vec<Vec<String>> = m
        .message
        .properties
        .iter()
        .map(|(k, v)| vec![td(k), td(v)])
        .collect();
    out.push_str(&html::table(&["property", "value"], &props));
    let text = String::from_utf8_lossy(&m.message.body);
    let shown: String = text.chars().take(MAX_BODY_CHARS).collect();
    out.push_str(&format!("<pre class=\"body\">{}</pre>\n", esc(&shown)));
    if shown.len() < text.len() {
        out.push_str(&format!(
            "<p class=\"muted\">The body is cut after {MAX_BODY_CHARS} characters.</p>\n"
        ));
    }
    out
}

pub(crate) async fn page(
    State(console): State<Console>,
    RawQuery(raw): RawQuery,
) -> Result<Html<String>, PageError> {
    let q = form::query(raw.as_deref())?;
    let topic = form::optional(&q, "topic");
    let key = form::optional(&q, "key");
    let id = form::optional(&q, "id");
    let mut body = forms(topic.unwrap_or(""), key.unwrap_or(""), id.unwrap_or(""));
    if let Some(t) = topic {
        valid_name(t, "The topic name")?;
    }
    let (found, problems, what) = match (id, key, topic) {
        (Some(id), _, topic) => {
            if id.len() > 128 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(PageError::bad_request(format!(
                    "{id:?} is not a message id (hex digits)."
                )));
            }
            let mut found = Vec::new();
            let mut problems = Vec::new();
            // An offset message id names its broker and CommitLog offset.
            if let Ok((addr, offset)) = decode_offset_msg_id(id) {
                let addr = addr.to_string();
                match console.api.view_message(&addr, offset, topic).await {
                    Ok(m) => found.push((addr.clone(), m)),
                    Err(e) => problems.push(super::cluster::call_failure(
                        &console,
                        "VIEW_MESSAGE_BY_ID",
                        &addr,
                        e,
                    )),
                }
            }
            if found.is_empty() {
                match topic {
                    Some(t) => {
                        let (more, more_problems) = query(&console, t, id, true).await?;
                        found.extend(more);
                        problems.extend(more_problems);
                    }
                    None => problems.push(
                        "Not found as an offset message id; give the topic to look it up as a unique id."
                            .to_string(),
                    ),
                }
            }
            (found, problems, format!("id {id}"))
        }
        (None, Some(key), Some(topic)) => {
            let (found, problems) = query(&console, topic, key, false).await?;
            (found, problems, format!("key {key} in topic {topic}"))
        }
        (None, Some(_), None) => {
            return Err(PageError::bad_request(
                "A lookup by key needs the topic too.",
            ))
        }
        (None, None, _) => {
            return Ok(html::page("Messages", "/messages", &body));
        }
    };
    for p in &problems {
        body.push_str(&html::warning(p));
    }
    body.push_str(&format!(
        "<p><b>{}</b> message(s) with {}.</p>\n",
        found.len(),
        esc(&what)
    ));
    for (broker, m) in &found {
        body.push_str(&show_message(broker, m));
    }
    if let Some(t) = topic {
        body.push_str(&format!(
            "<p><a href=\"/topics/{}\">Topic {}</a></p>\n",
            esc(&encode(t)),
            esc(t)
        ));
    }
    Ok(html::page("Messages", "/messages", &body))
}
