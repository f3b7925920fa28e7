//! `/topics`: every topic the NameServer knows, with its queues and message type as the masters
//! hold them (GET_ALL_TOPIC_CONFIG); forms to create a topic on every master of a cluster
//! (UPDATE_AND_CREATE_TOPIC, as `admin topic create`) and to delete one (DELETE_TOPIC_IN_BROKER
//! on its masters, then DELETE_TOPIC_IN_NAMESRV). `/topics/{name}`: the route, each queue's
//! min and max offsets and last store time (GET_TOPIC_STATS_INFO) and the topic's puts over the
//! last minute, hour and day on each master (VIEW_BROKER_STATS_DATA).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Html;
use rocketraft_common::consts::DEFAULT_CLUSTER;
use rocketraft_common::TopicConfig;

use super::form::{self, encode};
use super::html::{self, esc, link, num, role, td};
use super::{is_topic_not_exist, Console, PageError};

/// The message types a topic may be limited to (`message.type`).
const MESSAGE_TYPES: &[&str] = &["NORMAL", "FIFO", "DELAY", "TRANSACTION", "MIXED"];

/// A live master: (cluster, broker set name, address).
pub(crate) struct Master {
    pub cluster: String,
    pub name: String,
    pub addr: String,
}

/// The master of every broker set the NameServer knows.
pub(crate) async fn masters(console: &Console) -> Result<Vec<Master>, PageError> {
    let info = console
        .api
        .cluster_info(&console.namesrv)
        .await
        .map_err(|e| console.namesrv_error("Listing the brokers", e))?;
    let mut out = Vec::new();
    for (name, set) in &info.broker_addr_table {
        if let Some(addr) = set.master_addr() {
            out.push(Master {
                cluster: set.cluster.clone(),
                name: name.clone(),
                addr: addr.to_string(),
            });
        }
    }
    Ok(out)
}

/// A topic name from a form or a path: 400 unless it is a valid topic name.
pub(crate) fn valid_name(name: &str, what: &str) -> Result<(), PageError> {
    rocketraft_common::topic::validate_topic_name(name)
        .map_err(|e| PageError::bad_request(format!("{what} {name:?} is not valid: {e}.")))
}

fn message_type(config: &TopicConfig) -> &str {
    config
        .attributes
        .get("message.type")
        .map_or("any", String::as_str)
}

fn create_form() -> String {
    let mut types = String::from("<option value=\"\">any</option>");
    for t in MESSAGE_TYPES {
        types.push_str(&format!("<option value=\"{t}\">{t}</option>"));
    }
    format!(
        "<fieldset><legend>Create a topic on every master of a cluster</legend>\n\
         <form method=\"post\" action=\"/topics/create\">\n\
         <label>Topic <input name=\"topic\" required maxlength=\"127\"></label>\n\
         <label>Queues <input name=\"queues\" type=\"number\" value=\"8\" min=\"1\" max=\"1024\"></label>\n\
         <label>Message type <select name=\"message_type\">{types}</select></label>\n\
         <label>Cluster <input name=\"cluster\" value=\"{}\"></label>\n\
         <button type=\"submit\">Create</button></form></fieldset>\n",
        esc(DEFAULT_CLUSTER)
    )
}

fn delete_form(topic: Option<&str>) -> String {
    let field = match topic {
        Some(t) => format!(
            "<input type=\"hidden\" name=\"topic\" value=\"{}\"><b>{}</b>",
            esc(t),
            esc(t)
        ),
        None => "<label>Topic <input name=\"topic\" required></label>".to_string(),
    };
    format!(
        "<fieldset><legend>Delete a topic from its masters and the NameServer</legend>\n\
         <form method=\"post\" action=\"/topics/delete\" \
         onsubmit=\"return confirm('Delete this topic and its messages?')\">\n\
         {field} <button type=\"submit\">Delete</button></form></fieldset>\n"
    )
}

pub(crate) async fn list(
    State(console): State<Console>,
    RawQuery(query): RawQuery,
) -> Result<Html<String>, PageError> {
    let query = form::query(query.as_deref())?;
    let show_all = form::optional(&query, "all").is_some();
    let topics = console
        .api
        .all_topics(&console.namesrv)
        .await
        .map_err(|e| console.namesrv_error("Listing the topics", e))?;
    let masters = masters(&console).await?;
    // Topic -> (broker set, config) as each master holds it.
    let mut configs: BTreeMap<String, Vec<(String, TopicConfig)>> = BTreeMap::new();
    let mut warnings = String::new();
    for m in &masters {
        match console.api.broker_topics(&m.addr).await {
            Ok(wrapper) => {
                for (topic, config) in wrapper.topic_config_table {
                    configs
                        .entry(topic)
                        .or_default()
                        .push((m.name.clone(), config));
                }
            }
            Err(e) => warnings.push_str(&html::warning(&super::cluster::call_failure(
                &console,
                "topic configs",
                &format!("{} ({})", m.name, m.addr),
                e,
            ))),
        }
    }
    let internal = |t: &str| {
        rocketraft_broker::metrics::is_system_topic(t)
            || masters.iter().any(|m| m.name == t || m.cluster == t)
            || t == rocketraft_common::consts::AUTO_CREATE_TOPIC_KEY_TOPIC
    };
    let mut rows = Vec::new();
    let mut hidden = 0;
    for topic in &topics.topic_list {
        if !show_all && internal(topic) {
            hidden += 1;
            continue;
        }
        let held = configs.get(topic).map(Vec::as_slice).unwrap_or(&[]);
        let (read, write): (i32, i32) = held.iter().fold((0, 0), |(r, w), (_, c)| {
            (r + c.read_queue_nums, w + c.write_queue_nums)
        });
        let types: Vec<&str> = held.iter().map(|(_, c)| message_type(c)).collect();
        let mut types_shown = types.clone();
        types_shown.dedup();
        let sets: Vec<&str> = held.iter().map(|(n, _)| n.as_str()).collect();
        rows.push(vec![
            link(&format!("/topics/{}", encode(topic)), topic),
            num(if held.is_empty() {
                "-".to_string()
            } else {
                read.to_string()
            }),
            num(if held.is_empty() {
                "-".to_string()
            } else {
                write.to_string()
            }),
            td(if types_shown.is_empty() {
                "-".to_string()
            } else {
                types_shown.join(", ")
            }),
            td(sets.join(", ")),
        ]);
    }
    let mut body = create_form();
    body.push_str(&warnings);
    body.push_str(&format!(
        "<p>{} topic(s){}.</p>\n",
        rows.len(),
        if hidden > 0 {
            format!(", {hidden} system topic(s) hidden (<a href=\"/topics?all=1\">show them</a>)")
        } else {
            String::new()
        }
    ));
    body.push_str(&html::table(
        &[
            "topic",
            "read queues",
            "write queues",
            "message type",
            "broker sets",
        ],
        &rows,
    ));
    body.push_str(&delete_form(None));
    Ok(html::page("Topics", "/topics", &body))
}

pub(crate) async fn create(
    State(console): State<Console>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Html<String>, PageError> {
    let fields = form::posted(&headers, &body)?;
    let topic = form::required(&fields, "topic")?;
    valid_name(topic, "The topic name")?;
    let queues: i32 = match form::optional(&fields, "queues") {
        None => TopicConfig::DEFAULT_QUEUE_NUMS,
        Some(q) => q
            .parse()
            .ok()
            .filter(|q| (1..=1024).contains(q))
            .ok_or_else(|| {
                PageError::bad_request(format!(
                    "Queues must be a number from 1 to 1024, not {q:?}."
                ))
            })?,
    };
    let mut config = TopicConfig::new(topic.to_string(), queues);
    if let Some(t) = form::optional(&fields, "message_type") {
        if !MESSAGE_TYPES.contains(&t) {
            return Err(PageError::bad_request(format!(
                "The message type must be one of {MESSAGE_TYPES:?} (or empty for any), not {t:?}."
            )));
        }
        config
            .attributes
            .insert("message.type".to_string(), t.to_string());
    }
    config
        .validate()
        .map_err(|e| PageError::bad_request(format!("Topic {topic:?}: {e}.")))?;
    let cluster = form::optional(&fields, "cluster").unwrap_or(DEFAULT_CLUSTER);
    let targets: Vec<Master> = masters(&console)
        .await?
        .into_iter()
        .filter(|m| m.cluster == cluster)
        .collect();
    if targets.is_empty() {
        return Err(PageError::bad_request(format!(
            "Cluster {cluster:?} has no live master (see the cluster page)."
        )));
    }
    let mut rows = Vec::new();
    for m in &targets {
        console
            .api
            .create_topic(&m.addr, &config)
            .await
            .map_err(|e| {
                console.api_error(
                    &format!("Creating topic {topic}"),
                    &format!("broker {} ({})", m.name, m.addr),
                    e,
                )
            })?;
        rows.push(vec![td(&m.name), td(&m.addr), num(queues)]);
    }
    let mut body = html::notice(&format!(
        "Created topic {topic} with {queues} queues on {} master(s) of cluster {cluster}.",
        targets.len()
    ));
    body.push_str(&html::table(&["broker set", "address", "queues"], &rows));
    body.push_str(&format!(
        "<p><a href=\"/topics/{}\">Its route and queues</a> · <a href=\"/topics\">All topics</a></p>\n",
        esc(&encode(topic))
    ));
    Ok(html::page("Topic created", "/topics", &body))
}

pub(crate) async fn delete(
    State(console): State<Console>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Html<String>, PageError> {
    let fields = form::posted(&headers, &body)?;
    let topic = form::required(&fields, "topic")?;
    valid_name(topic, "The topic name")?;
    let route = console
        .api
        .topic_route(&console.namesrv, topic)
        .await
        .map_err(|e| {
            if is_topic_not_exist(&e) {
                unknown_topic(topic)
            } else {
                console.namesrv_error(&format!("Routing topic {topic}"), e)
            }
        })?;
    let mut rows = Vec::new();
    for b in &route.broker_datas {
        let Some(addr) = b.master_addr() else {
            rows.push(vec![td(&b.broker_name), td("-"), td("no live master")]);
            continue;
        };
        console
            .api
            .delete_topic_in_broker(addr, topic)
            .await
            .map_err(|e| {
                console.api_error(
                    &format!("Deleting topic {topic}"),
                    &format!("broker {} ({addr})", b.broker_name),
                    e,
                )
            })?;
        rows.push(vec![td(&b.broker_name), td(addr), td("deleted")]);
    }
    console
        .api
        .delete_topic_in_namesrv(&console.namesrv, topic)
        .await
        .map_err(|e| console.namesrv_error(&format!("Deleting the route of {topic}"), e))?;
    let mut body = html::notice(&format!(
        "Deleted topic {topic} from its masters and the NameServer."
    ));
    body.push_str(&html::table(&["broker set", "address", "result"], &rows));
    body.push_str("<p><a href=\"/topics\">All topics</a></p>\n");
    Ok(html::page("Topic deleted", "/topics", &body))
}

/// A rate per second as the page shows it: 0, or 4 decimals below 1 (a few messages an hour
/// still show), or 2.
fn rate(tps: f64) -> String {
    if tps == 0.0 {
        "0".to_string()
    } else if tps < 1.0 {
        format!("{tps:.4}")
    } else {
        format!("{tps:.2}")
    }
}

fn unknown_topic(topic: &str) -> PageError {
    PageError::new(
        StatusCode::NOT_FOUND,
        "Unknown topic",
        format!("Topic {topic} does not exist: the NameServer has no route for it."),
    )
}

pub(crate) async fn detail(
    State(console): State<Console>,
    Path(topic): Path<String>,
) -> Result<Html<String>, PageError> {
    valid_name(&topic, "The topic name")?;
    let route = console
        .api
        .topic_route(&console.namesrv, &topic)
        .await
        .map_err(|e| {
            if is_topic_not_exist(&e) {
                unknown_topic(&topic)
            } else {
                console.namesrv_error(&format!("Routing topic {topic}"), e)
            }
        })?;
    let mut body = String::from("<h2>Route</h2>\n");
    let mut broker_rows = Vec::new();
    for b in &route.broker_datas {
        for (id, addr) in &b.broker_addrs {
            broker_rows.push(vec![
                td(&b.broker_name),
                td(&b.cluster),
                num(id),
                td(addr),
                role(if *id == 0 { "master" } else { "slave" }),
            ]);
        }
    }
    body.push_str(&html::table(
        &["broker set", "cluster", "broker id", "address", "role"],
        &broker_rows,
    ));
    let queue_rows: Vec<Vec<String>> = route
        .queue_datas
        .iter()
        .map(|q| {
            vec![
                td(&q.broker_name),
                num(q.read_queue_nums),
                num(q.write_queue_nums),
                num(q.perm),
            ]
        })
        .collect();
    body.push_str(&html::table(
        &["broker set", "read queues", "write queues", "perm"],
        &queue_rows,
    ));

    body.push_str("<h2>Queues</h2>\n");
    let mut rows = Vec::new();
    let mut put_rows = Vec::new();
    let mut total = 0i64;
    let mut warnings = String::new();
    for q in &route.queue_datas {
        let master = route
            .broker_datas
            .iter()
            .find(|b| b.broker_name == q.broker_name)
            .and_then(|b| b.master_addr());
        let Some(addr) = master else {
            warnings.push_str(&html::warning(&format!(
                "Broker set {} has no live master: its queues are not shown.",
                q.broker_name
            )));
            continue;
        };
        if let Ok(w) = console.api.broker_topics(addr).await {
            if let Some(c) = w.topic_config_table.get(&topic) {
                body.push_str(&format!(
                    "<p>On {}: message type <b>{}</b>, perm {}, order {}.</p>\n",
                    esc(&q.broker_name),
                    esc(message_type(c)),
                    c.perm,
                    c.order
                ));
            }
        }
        // Every queue's offsets and last store time in one GET_TOPIC_STATS_INFO.
        match console.api.topic_stats(addr, &topic).await {
            Ok(table) => {
                let mut queues = table.offset_table;
                queues.sort_by_key(|(mq, _)| mq.queue_id);
                for (mq, o) in queues {
                    let messages = (o.max_offset - o.min_offset).max(0);
                    total += messages;
                    rows.push(vec![
                        td(&q.broker_name),
                        num(mq.queue_id),
                        num(o.min_offset),
                        num(o.max_offset),
                        num(messages),
                        td(html::when(o.last_update_timestamp)),
                    ]);
                }
            }
            Err(e) => {
                let text = super::cluster::call_failure(&console, "queue offsets", addr, e);
                rows.push(vec![
                    td(&q.broker_name),
                    td("-"),
                    td("-"),
                    td("-"),
                    td("-"),
                    td(text),
                ]);
            }
        }
        // Its puts over the last minute, hour and day (VIEW_BROKER_STATS_DATA TOPIC_PUT_NUMS;
        // no item yet: nothing put since the broker started).
        match console
            .api
            .broker_stats(addr, "TOPIC_PUT_NUMS", &topic)
            .await
        {
            Ok(data) => {
                let d = data.unwrap_or_default();
                let mut row = vec![td(&q.broker_name), td(addr)];
                for item in [d.stats_minute, d.stats_hour, d.stats_day] {
                    row.push(num(item.sum));
                    row.push(num(rate(item.tps)));
                }
                put_rows.push(row);
            }
            Err(e) => warnings.push_str(&html::warning(&super::cluster::call_failure(
                &console,
                "put statistics",
                addr,
                e,
            ))),
        }
    }
    body.push_str(&html::table(
        &[
            "broker set",
            "queue",
            "min offset",
            "max offset",
            "messages",
            "last updated",
        ],
        &rows,
    ));
    body.push_str(&format!("<p>{total} message(s) stored.</p>\n"));
    body.push_str("<h2>Puts</h2>\n");
    body.push_str(&html::table(
        &[
            "broker set",
            "address",
            "last minute",
            "tps",
            "last hour",
            "tps",
            "last day",
            "tps",
        ],
        &put_rows,
    ));
    body.push_str(&warnings);
    body.push_str(&format!(
        "<p><a href=\"/messages?topic={}\">Look up its messages</a></p>\n",
        esc(&encode(&topic))
    ));
    body.push_str(&delete_form(Some(&topic)));
    Ok(html::page(&format!("Topic {topic}"), "/topics", &body))
}
