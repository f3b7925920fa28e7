//! `/groups`: the consumer groups the masters know (their subscription configs,
//! GET_ALL_SUBSCRIPTIONGROUP_CONFIG, and the groups with committed offsets,
//! GET_ALL_CONSUMER_OFFSET). `/groups/{name}`: per queue the broker's offset, the group's, the
//! lag and the POP messages in flight (GET_CONSUME_STATS, as `admin consumer progress`), and a
//! form that resets the group's offsets of a topic (INVOKE_BROKER_TO_RESET_OFFSET, forced, as
//! `admin consumer reset`).

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Html;
use rocketraft_remoting::{request_code, response_code, RemotingCommand};
use serde_json::Value;

use super::cluster::call_failure;
use super::form::{self, encode};
use super::html::{self, esc, link, num, td};
use super::topics::{masters, valid_name, Master};
use super::{is_topic_not_exist, Console, PageError};

/// What the masters know of one group.
#[derive(Default)]
struct Group {
    sets: BTreeSet<String>,
    retry_max_times: Option<i64>,
    fifo: Option<bool>,
    topics: BTreeSet<String>,
}

async fn json_call(
    console: &Console,
    m: &Master,
    request: RemotingCommand,
) -> Result<Value, String> {
    let code = request.code;
    let response = console
        .api
        .call(&m.addr, request, &[response_code::SUCCESS])
        .await
        .map_err(|e| {
            call_failure(
                console,
                &format!("request {code}"),
                &format!("{} ({})", m.name, m.addr),
                e,
            )
        })?;
    serde_json::from_slice(&response.body).map_err(|e| {
        format!(
            "{} ({}) answered request {code} with undecodable JSON: {e}",
            m.name, m.addr
        )
    })
}

/// Every group the masters know; with the problems met on the way.
async fn all_groups(
    console: &Console,
    masters: &[Master],
) -> (BTreeMap<String, Group>, Vec<String>) {
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    let mut problems = Vec::new();
    for m in masters {
        let configs = json_call(
            console,
            m,
            RemotingCommand::request(request_code::GET_ALL_SUBSCRIPTIONGROUP_CONFIG),
        )
        .await;
        match configs {
            Ok(v) => {
                if let Some(table) = v.get("subscriptionGroupTable").and_then(Value::as_object) {
                    for (name, c) in table {
                        let g = groups.entry(name.clone()).or_default();
                        g.sets.insert(m.name.clone());
                        g.retry_max_times = c.get("retryMaxTimes").and_then(Value::as_i64);
                        g.fifo = c.get("consumeMessageOrderly").and_then(Value::as_bool);
                    }
                }
            }
            Err(e) => problems.push(e),
        }
        let offsets = json_call(
            console,
            m,
            RemotingCommand::request(request_code::GET_ALL_CONSUMER_OFFSET),
        )
        .await;
        match offsets {
            Ok(v) => {
                if let Some(table) = v.get("offsetTable").and_then(Value::as_object) {
                    for key in table.keys() {
                        if let Some((topic, group)) = key.rsplit_once('@') {
                            let g = groups.entry(group.to_string()).or_default();
                            g.sets.insert(m.name.clone());
                            g.topics.insert(topic.to_string());
                        }
                    }
                }
            }
            Err(e) => problems.push(e),
        }
    }
    (groups, problems)
}

pub(crate) async fn list(
    State(console): State<Console>,
    RawQuery(query): RawQuery,
) -> Result<Html<String>, PageError> {
    let query = form::query(query.as_deref())?;
    let show_all = form::optional(&query, "all").is_some();
    let masters = masters(&console).await?;
    let (groups, problems) = all_groups(&console, &masters).await;
    let mut body = String::new();
    for p in &problems {
        body.push_str(&html::warning(p));
    }
    let mut rows = Vec::new();
    let mut hidden = 0;
    for (name, g) in &groups {
        if !show_all && rocketraft_broker::metrics::is_system_group(name) {
            hidden += 1;
            continue;
        }
        let show = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
        rows.push(vec![
            link(&format!("/groups/{}", encode(name)), name),
            td(g.topics.iter().cloned().collect::<Vec<_>>().join(", ")),
            num(show(g.retry_max_times.map(|r| r.to_string()))),
            td(show(
                g.fifo.map(|f| if f { "yes" } else { "no" }.to_string()),
            )),
            td(g.sets.iter().cloned().collect::<Vec<_>>().join(", ")),
        ]);
    }
    body.push_str(&format!(
        "<p>{} consumer group(s){}.</p>\n",
        rows.len(),
        if hidden > 0 {
            format!(", {hidden} system group(s) hidden (<a href=\"/groups?all=1\">show them</a>)")
        } else {
            String::new()
        }
    ));
    body.push_str(&html::table(
        &[
            "group",
            "topics with offsets",
            "retry max times",
            "FIFO",
            "broker sets",
        ],
        &rows,
    ));
    Ok(html::page("Consumer groups", "/groups", &body))
}

/// GET_CONSUME_STATS of `group` (one topic or all) on every master: the rows, the summed
/// consumeTps and the problems met.
async fn consume_stats(
    console: &Console,
    masters: &[Master],
    group: &str,
    topic: Option<&str>,
) -> (Vec<Value>, f64, Vec<String>) {
    let mut rows = Vec::new();
    let mut tps = 0.0;
    let mut problems = Vec::new();
    for m in masters {
        let mut request = RemotingCommand::request(request_code::GET_CONSUME_STATS)
            .with_ext("consumerGroup", group);
        if let Some(t) = topic {
            request = request.with_ext("topic", t);
        }
        match json_call(console, m, request).await {
            Ok(v) => {
                if let Some(table) = v.get("offsetTable").and_then(Value::as_array) {
                    rows.extend(table.iter().cloned());
                }
                tps += v.get("consumeTps").and_then(Value::as_f64).unwrap_or(0.0);
            }
            Err(e) => problems.push(e),
        }
    }
    rows.sort_by(|a, b| {
        let key = |v: &Value| {
            (
                v["topic"].as_str().unwrap_or("").to_string(),
                v["brokerName"].as_str().unwrap_or("").to_string(),
                v["queueId"].as_i64().unwrap_or(0),
            )
        };
        key(a).cmp(&key(b))
    });
    (rows, tps, problems)
}

fn stats_table(rows: &[Value]) -> String {
    let cell = |v: &Value, k: &str| match &v[k] {
        Value::Null => td("-"),
        Value::String(s) => td(s),
        other => num(other),
    };
    let mut lag = 0;
    let mut in_flight = 0;
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            lag += r["lag"].as_i64().unwrap_or(0);
            in_flight += r["inFlight"].as_i64().unwrap_or(0);
            vec![
                cell(r, "topic"),
                cell(r, "brokerName"),
                cell(r, "queueId"),
                cell(r, "brokerOffset"),
                cell(r, "consumerOffset"),
                cell(r, "lag"),
                cell(r, "inFlight"),
                td(html::when(r["lastTimestamp"].as_i64().unwrap_or(0))),
            ]
        })
        .collect();
    let mut out = html::table(
        &[
            "topic",
            "broker set",
            "queue",
            "broker offset",
            "consumer offset",
            "lag",
            "POP in flight",
            "last stored",
        ],
        &table,
    );
    out.push_str(&format!(
        "<p>Total lag <b>{lag}</b>, <b>{in_flight}</b> POP message(s) in flight.</p>\n"
    ));
    out
}

fn reset_form(group: &str, topics: &BTreeSet<String>) -> String {
    let mut options = String::new();
    for t in topics {
        options.push_str(&format!("<option value=\"{}\">", esc(t)));
    }
    format!(
        "<fieldset><legend>Reset the group's offsets of a topic</legend>\n\
         <form method=\"post\" action=\"/groups/{}/reset\">\n\
         <label>Topic <input name=\"topic\" list=\"topics\" required></label><datalist id=\"topics\">{options}</datalist>\n\
         <label><input type=\"radio\" name=\"to\" value=\"earliest\" checked> earliest</label>\n\
         <label><input type=\"radio\" name=\"to\" value=\"latest\"> latest</label>\n\
         <label><input type=\"radio\" name=\"to\" value=\"timestamp\"> the first message stored at or after</label>\n\
         <input name=\"timestamp\" placeholder=\"2025-01-31T12:00:00 (UTC) or ms\">\n\
         <button type=\"submit\">Reset</button></form>\n\
         <p class=\"muted\">Live consumers are told at once and read again from there.</p></fieldset>\n",
        esc(&encode(group))
    )
}

pub(crate) async fn detail(
    State(console): State<Console>,
    Path(group): Path<String>,
) -> Result<Html<String>, PageError> {
    valid_name(&group, "The group name")?;
    let masters = masters(&console).await?;
    let (rows, tps, problems) = consume_stats(&console, &masters, &group, None).await;
    let (groups, _) = all_groups(&console, &masters).await;
    if rows.is_empty() && !groups.contains_key(&group) && problems.is_empty() {
        return Err(PageError::new(
            StatusCode::NOT_FOUND,
            "Unknown consumer group",
            format!(
                "Consumer group {group} is unknown: no master has its subscription config or an offset of it."
            ),
        ));
    }
    let mut body = String::new();
    for p in &problems {
        body.push_str(&html::warning(p));
    }
    let mut online = BTreeSet::new();
    for m in &masters {
        if let Ok(ids) = console.api.consumer_list(&m.addr, &group).await {
            online.extend(ids);
        }
    }
    if let Some(g) = groups.get(&group) {
        body.push_str(&format!(
            "<p>Retry max times {}, FIFO {}, on {}.</p>\n",
            g.retry_max_times.map_or("-".to_string(), |r| r.to_string()),
            g.fifo.map_or("-", |f| if f { "yes" } else { "no" }),
            esc(&g.sets.iter().cloned().collect::<Vec<_>>().join(", "))
        ));
    }
    body.push_str(&format!(
        "<p>{} consumer(s) online{}; {tps:.2} message(s)/s delivered over the last minute.</p>\n",
        online.len(),
        if online.is_empty() {
            String::new()
        } else {
            format!(
                ": {}",
                esc(&online.into_iter().collect::<Vec<_>>().join(", "))
            )
        }
    ));
    body.push_str("<h2>Progress</h2>\n");
    if rows.is_empty() {
        body.push_str("<p>The group has no committed offset and nothing in flight.</p>\n");
    } else {
        body.push_str(&stats_table(&rows));
    }
    let topics: BTreeSet<String> = rows
        .iter()
        .filter_map(|r| r["topic"].as_str().map(str::to_string))
        .collect();
    body.push_str(&format!(
        "<p><a href=\"/groups/{}/dlq\">Dead-letter queue</a> ({}): the messages that ran out of retries, to resend.</p>\n",
        esc(&encode(&group)),
        esc(&format!("%DLQ%{group}"))
    ));
    body.push_str(&reset_form(&group, &topics));
    Ok(html::page(
        &format!("Consumer group {group}"),
        "/groups",
        &body,
    ))
}

/// Milliseconds since the epoch from `ms` digits or a UTC `YYYY-MM-DD[T ]HH:MM[:SS]`.
fn parse_timestamp(text: &str) -> Option<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return (ms >= 0).then_some(ms);
    }
    let text = text.trim_end_matches('Z');
    let (date, time) = text.split_once(['T', ' '])?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm) = (t.next()??, t.next()??);
    let ss = t.next().unwrap_or(Some(0))?;
    if d.next().is_some()
        || t.next().is_some()
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || !(0..24).contains(&hh)
        || !(0..60).contains(&mm)
        || !(0..61).contains(&ss)
    {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms = ((days * 86_400) + hh * 3600 + mm * 60 + ss) * 1000;
    (ms >= 0).then_some(ms)
}

pub(crate) async fn reset(
    State(console): State<Console>,
    Path(group): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Html<String>, PageError> {
    valid_name(&group, "The group name")?;
    let fields = form::posted(&headers, &body)?;
    let topic = form::required(&fields, "topic")?;
    valid_name(topic, "The topic name")?;
    let (timestamp, said) = match form::required(&fields, "to")? {
        "earliest" => (0, "the earliest offsets".to_string()),
        "latest" => (-1, "the latest offsets".to_string()),
        "timestamp" => {
            let text = form::required(&fields, "timestamp")?;
            let ms = parse_timestamp(text).ok_or_else(|| {
                PageError::bad_request(format!(
                    "{text:?} is not a time: give milliseconds since the epoch or YYYY-MM-DDTHH:MM[:SS] (UTC)."
                ))
            })?;
            (
                ms,
                format!("the first messages stored at or after {}", html::when(ms)),
            )
        }
        other => {
            return Err(PageError::bad_request(format!(
                "Reset to {other:?}? Choose earliest, latest or timestamp."
            )))
        }
    };
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
    let mut reset_on = Vec::new();
    for b in &route.broker_datas {
        let Some(addr) = b.master_addr() else {
            continue;
        };
        let request = RemotingCommand::request(request_code::INVOKE_BROKER_TO_RESET_OFFSET)
            .with_ext("topic", topic)
            .with_ext("group", &group)
            .with_ext("timestamp", timestamp)
            .with_ext("isForce", true);
        console
            .api
            .call(addr, request, &[response_code::SUCCESS])
            .await
            .map_err(|e| {
                console.api_error(
                    &format!("Resetting {group} on {topic}"),
                    &format!("broker {} ({addr})", b.broker_name),
                    e,
                )
            })?;
        reset_on.push(b.broker_name.clone());
    }
    if reset_on.is_empty() {
        return Err(PageError::new(
            StatusCode::BAD_GATEWAY,
            "No master",
            format!("No live master serves topic {topic}."),
        ));
    }
    let masters = masters(&console).await?;
    let (rows, _, problems) = consume_stats(&console, &masters, &group, Some(topic)).await;
    let mut body = html::notice(&format!(
        "Group {group} reset to {said} of topic {topic} on {}.",
        reset_on.join(", ")
    ));
    for p in &problems {
        body.push_str(&html::warning(p));
    }
    body.push_str(&stats_table(&rows));
    body.push_str(&format!(
        "<p><a href=\"/groups/{}\">Back to the group</a></p>\n",
        esc(&encode(&group))
    ));
    Ok(html::page("Offsets reset", "/groups", &body))
}

#[cfg(test)]
mod tests {
    use super::parse_timestamp;

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("1700000000000"), Some(1_700_000_000_000));
        assert_eq!(parse_timestamp("1970-01-02T00:00"), Some(86_400_000));
        assert_eq!(
            parse_timestamp("2000-02-29 12:30:15"),
            Some(951_827_415_000)
        );
        assert_eq!(
            parse_timestamp("2026-12-02T00:00:00Z"),
            Some(1_796_169_600_000)
        );
        for bad in [
            "",
            "-5",
            "yesterday",
            "2024-13-01T00:00",
            "2024-01-01",
            "2024-01-01T25:00",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }
}
