//! `/`: the NameServer's clusters and broker sets, each replica as it reports itself
//! (GET_BROKER_HA_STATUS: role, epochs, SyncStateSet, offsets; lag measured from the master),
//! its version and rates (GET_BROKER_RUNTIME_INFO), and the controller's view: every member of
//! the quorum as it reports itself (CONTROLLER_GET_METADATA_INFO: answered or unreachable, role,
//! term, leader) and each set's master, epochs and SyncStateSet as the leader has them
//! (CONTROLLER_GET_REPLICA_INFO).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Html;
use rocketraft_controller::client::ControllerClient;
use rocketraft_controller::ControllerStatus;
use rocketraft_remoting::api::ApiError;
use rocketraft_remoting::{request_code, response_code, RemotingCommand};
use serde_json::Value;

use super::html::{self, esc, num, role, td};
use super::throughput::{first_rate, runtime_info};
use super::{Console, PageError, CALL_TIMEOUT};

/// What one replica answered.
struct Replica {
    id: i64,
    addr: String,
    ha: Result<Value, String>,
    runtime: Result<BTreeMap<String, String>, String>,
}

/// A failed call as a short text for a table cell or a warning line.
pub(crate) fn call_failure(console: &Console, what: &str, server: &str, e: ApiError) -> String {
    match e {
        ApiError::Refused(r) if r.code == response_code::NO_PERMISSION => {
            console.denied(what, server, &r.remark)
        }
        ApiError::Refused(r) => format!("{what}: refused (code {}): {}", r.code, r.remark),
        other => format!("{what}: {other}"),
    }
}

async fn ha_status(console: &Console, addr: &str) -> Result<Value, String> {
    let request = RemotingCommand::request(request_code::GET_BROKER_HA_STATUS);
    let response = console
        .api
        .call(addr, request, &[response_code::SUCCESS])
        .await
        .map_err(|e| call_failure(console, "HA status", addr, e))?;
    serde_json::from_slice(&response.body).map_err(|e| format!("undecodable HA status: {e}"))
}

/// Asks every replica at once.
async fn query_replicas(console: &Console, replicas: &[(i64, String)]) -> Vec<Replica> {
    let mut tasks = tokio::task::JoinSet::new();
    for (index, (id, addr)) in replicas.iter().enumerate() {
        let console = console.clone();
        let (id, addr) = (*id, addr.clone());
        tasks.spawn(async move {
            let ha = ha_status(&console, &addr).await;
            let runtime = runtime_info(&console, &addr).await;
            (
                index,
                Replica {
                    id,
                    addr,
                    ha,
                    runtime,
                },
            )
        });
    }
    let mut out = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(r) => out.push(r),
            Err(e) => tracing::warn!(error = %e, "a replica query task failed"),
        }
    }
    out.sort_by_key(|(index, _)| *index);
    out.into_iter().map(|(_, r)| r).collect()
}

fn int(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

fn show(v: Option<i64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// The (address, maxPhyOffset) of the replica that says MASTER with the highest epoch.
fn master_offset(replicas: &[Replica]) -> Option<(String, i64)> {
    replicas
        .iter()
        .filter_map(|r| r.ha.as_ref().ok())
        .filter(|s| {
            s.get("role")
                .and_then(Value::as_str)
                .is_some_and(|r| r.eq_ignore_ascii_case("MASTER"))
        })
        .max_by_key(|s| int(s, "masterEpoch"))
        .and_then(|s| {
            Some((
                s.get("brokerAddr")?.as_str()?.to_string(),
                int(s, "maxPhyOffset")?,
            ))
        })
}

fn set_table(replicas: &[Replica]) -> String {
    let master = master_offset(replicas);
    let mut rows = Vec::new();
    let mut problems = String::new();
    for r in replicas {
        let mut row = vec![num(r.id), td(&r.addr)];
        match &r.ha {
            Ok(s) => {
                let said = s.get("role").and_then(Value::as_str).unwrap_or("?");
                row.push(role(said));
                row.push(num(show(int(s, "masterEpoch"))));
                row.push(num(show(int(s, "syncStateSetEpoch"))));
                let set: Vec<i64> = s
                    .get("syncStateSet")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_i64).collect())
                    .unwrap_or_default();
                row.push(td(html::id_set(set)));
                row.push(num(show(int(s, "maxPhyOffset"))));
                row.push(num(show(int(s, "confirmOffset"))));
                let lag = match (&master, int(s, "maxPhyOffset")) {
                    (Some((addr, offset)), Some(mine)) if *addr != r.addr => {
                        (offset - mine).to_string()
                    }
                    (Some(_), Some(_)) => "0 (master)".to_string(),
                    _ => "-".to_string(),
                };
                row.push(num(lag));
            }
            Err(e) => {
                // The NameServer's view: id 0 is the master.
                row.push(role(if r.id == 0 { "master" } else { "slave" }));
                for _ in 0..6 {
                    row.push(td("-"));
                }
                // A broker outside controller mode has no HA state: a note, not an alarm.
                problems.push_str(&html::note(&format!("{}: {e}", r.addr)));
            }
        }
        match &r.runtime {
            Ok(t) => {
                row.push(td(t.get("brokerVersionDesc").map_or("-", String::as_str)));
                row.push(num(first_rate(t, "putTps")));
                row.push(num(first_rate(t, "getTransferredTps")));
            }
            Err(e) => {
                row.extend([td("-"), td("-"), td("-")]);
                problems.push_str(&html::warning(&format!("{}: {e}", r.addr)));
            }
        }
        rows.push(row);
    }
    let mut out = html::table(
        &[
            "broker id (NameServer)",
            "address",
            "role",
            "master epoch",
            "SyncStateSet epoch",
            "SyncStateSet",
            "max offset",
            "confirm offset",
            "lag (bytes)",
            "version",
            "put TPS",
            "get TPS",
        ],
        &rows,
    );
    out.push_str(&problems);
    // The slaves as each master tracks them (ack offsets, in sync or not).
    for s in replicas.iter().filter_map(|r| r.ha.as_ref().ok()) {
        let slaves = s.get("slaves").and_then(Value::as_array);
        let Some(slaves) = slaves.filter(|l| !l.is_empty()) else {
            continue;
        };
        out.push_str(&format!(
            "<p>Slaves as master {} tracks them:</p>\n",
            esc(&show(int(s, "brokerId")))
        ));
        let rows: Vec<Vec<String>> = slaves
            .iter()
            .map(|sl| {
                let flag = |k: &str| {
                    if sl.get(k).and_then(Value::as_bool).unwrap_or(false) {
                        "yes"
                    } else {
                        "no"
                    }
                };
                vec![
                    num(show(int(sl, "brokerId"))),
                    td(sl.get("addr").and_then(Value::as_str).unwrap_or("-")),
                    num(show(int(sl, "ackOffset"))),
                    num(show(int(sl, "lag"))),
                    td(flag("inSync")),
                    td(flag("connected")),
                ]
            })
            .collect();
        out.push_str(&html::table(
            &[
                "broker id",
                "address",
                "ack offset",
                "lag",
                "in sync",
                "connected",
            ],
            &rows,
        ));
    }
    out
}

/// What one member of the controller quorum said of itself (CONTROLLER_GET_METADATA_INFO), or
/// why it said nothing.
pub(crate) struct Member {
    pub addr: String,
    pub status: Result<ControllerStatus, String>,
}

impl Member {
    /// Leader, Follower, Candidate, Learner or Shutdown, as the member reports its Raft state.
    fn state(&self) -> Option<&str> {
        self.status.as_ref().ok().map(|s| s.raft.state.as_str())
    }
}

/// One controller's own status, or why there is none.
async fn controller_status(console: &Console, addr: &str) -> Result<ControllerStatus, String> {
    let request = RemotingCommand::request(request_code::CONTROLLER_GET_METADATA_INFO);
    let response = console
        .api
        .call(addr, request, &[response_code::SUCCESS])
        .await
        .map_err(|e| {
            call_failure(
                console,
                "controller status",
                &format!("the controller at {addr}"),
                e,
            )
        })?;
    serde_json::from_slice(&response.body)
        .map_err(|e| format!("the controller's status is not Rocketraft's: {e}"))
}

/// Every member of the quorum asked at once, in the order given.
pub(crate) async fn quorum(console: &Console) -> Vec<Member> {
    let mut tasks = tokio::task::JoinSet::new();
    for (index, addr) in console.controllers.iter().enumerate() {
        let (console, addr) = (console.clone(), addr.clone());
        tasks.spawn(async move {
            let status = controller_status(&console, &addr).await;
            (index, Member { addr, status })
        });
    }
    let mut out = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(m) => out.push(m),
            Err(e) => tracing::warn!(error = %e, "a controller query task failed"),
        }
    }
    out.sort_by_key(|(index, _)| *index);
    out.into_iter().map(|(_, m)| m).collect()
}

/// The member to ask about broker sets: the one that says it leads (the highest term if
/// several do, as during a leader change), else the first that answered (it forwards); `None`
/// when no member answered.
pub(crate) fn leader(members: &[Member]) -> Option<(&Member, bool)> {
    let leading = members
        .iter()
        .filter(|m| m.state().is_some_and(|s| s.eq_ignore_ascii_case("Leader")))
        .max_by_key(|m| m.status.as_ref().map_or(0, |s| s.raft.term));
    match leading {
        Some(m) => Some((m, true)),
        None => members
            .iter()
            .find(|m| m.status.is_ok())
            .map(|m| (m, false)),
    }
}

fn controller_section(members: &[Member]) -> String {
    let mut out = String::from("<h2>Controller quorum</h2>\n");
    let answered = members.iter().filter(|m| m.status.is_ok()).count();
    out.push_str(&format!(
        "<p>{answered} of {} member(s) answered.</p>\n",
        members.len()
    ));
    let mut rows = Vec::new();
    let mut problems = String::new();
    for m in members {
        match &m.status {
            Ok(s) => {
                let r = &s.raft;
                let leader = match (&r.leader, &r.leader_addr) {
                    (Some(id), Some(a)) => format!("{id} ({a})"),
                    (Some(id), None) => id.to_string(),
                    _ => "none".to_string(),
                };
                let state = r.state.to_ascii_lowercase();
                let class = if state == "leader" { "master" } else { "slave" };
                rows.push(vec![
                    td(&m.addr),
                    td("yes"),
                    num(r.id),
                    format!("<td class=\"{class}\">{}</td>", esc(&state)),
                    num(r.term),
                    td(leader),
                    td(&r.addr),
                    num(show(r.last_applied.map(|v| v as i64))),
                    num(s.broker_sets),
                ]);
            }
            Err(e) => {
                rows.push(vec![
                    td(&m.addr),
                    td("no"),
                    td("-"),
                    "<td class=\"muted\">unreachable</td>".to_string(),
                    td("-"),
                    td("-"),
                    td("-"),
                    td("-"),
                    td("-"),
                ]);
                problems.push_str(&html::warning(&format!(
                    "Controller {} is unreachable: {e}",
                    m.addr
                )));
            }
        }
    }
    out.push_str(&html::table(
        &[
            "address",
            "answered",
            "node id",
            "role",
            "term",
            "leader",
            "Raft address",
            "last applied",
            "broker sets",
        ],
        &rows,
    ));
    out.push_str(&problems);
    // The membership as the leader (or whoever answered) knows it.
    if let Some((m, _)) = leader(members) {
        if let Ok(s) = &m.status {
            let list = |nodes: &BTreeMap<u64, String>| {
                if nodes.is_empty() {
                    "none".to_string()
                } else {
                    nodes
                        .iter()
                        .map(|(i, a)| format!("{i} {a}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            out.push_str(&format!(
                "<p>Raft membership as {} knows it: voters {}; learners {}.</p>\n",
                esc(&m.addr),
                esc(&list(&s.raft.voters)),
                esc(&list(&s.raft.learners))
            ));
        }
    }
    out
}

pub(crate) async fn page(State(console): State<Console>) -> Result<Html<String>, PageError> {
    let info = console
        .api
        .cluster_info(&console.namesrv)
        .await
        .map_err(|e| console.namesrv_error("Listing the brokers", e))?;
    let members = quorum(&console).await;
    let asked = leader(&members).map(|(m, _)| m.addr.clone());
    let controller = ControllerClient::new(console.api.remoting().clone(), CALL_TIMEOUT);

    let mut body = format!(
        "<p>NameServer <b>{}</b>: {} cluster(s), {} broker set(s).</p>\n",
        esc(&console.namesrv),
        info.cluster_addr_table.len(),
        info.broker_addr_table.len()
    );
    if let Some(ak) = &console.access_key {
        body.push_str(&format!(
            "<p class=\"muted\">Requests are signed as access key {}.</p>\n",
            esc(ak)
        ));
    }
    // Every set under its cluster; sets in no cluster at the end.
    let mut listed: Vec<(String, String)> = Vec::new();
    for (cluster, names) in &info.cluster_addr_table {
        for name in names {
            listed.push((cluster.clone(), name.clone()));
        }
    }
    for name in info.broker_addr_table.keys() {
        if !listed.iter().any(|(_, n)| n == name) {
            listed.push(("(none)".to_string(), name.clone()));
        }
    }
    if listed.is_empty() {
        body.push_str(&html::warning(
            "The NameServer knows no broker: none has registered (yet).",
        ));
    }
    for (cluster, name) in &listed {
        body.push_str(&format!(
            "<h2>Broker set {} <span class=\"muted\">(cluster {})</span></h2>\n",
            esc(name),
            esc(cluster)
        ));
        let replicas: Vec<(i64, String)> = info
            .broker_addr_table
            .get(name)
            .map(|b| {
                b.broker_addrs
                    .iter()
                    .map(|(i, a)| (*i, a.clone()))
                    .collect()
            })
            .unwrap_or_default();
        if replicas.is_empty() {
            body.push_str(&html::warning("No live replica is registered."));
            continue;
        }
        let answers = query_replicas(&console, &replicas).await;
        body.push_str(&set_table(&answers));
        if let Some(asked) = &asked {
            match controller.get_replica_info(asked, name).await {
                Ok(m) => {
                    let master = match (m.master_broker_id, &m.master_address) {
                        (Some(id), Some(a)) => format!("{id} ({a})"),
                        (Some(id), None) => id.to_string(),
                        _ => "none".to_string(),
                    };
                    body.push_str(&format!(
                        "<p>Controller: master <b>{}</b>, master epoch <b>{}</b>, SyncStateSet epoch {}, SyncStateSet <b>{}</b></p>\n",
                        esc(&master),
                        m.master_epoch,
                        m.sync_state_set_epoch,
                        esc(&html::id_set(m.sync_state_set))
                    ));
                }
                Err(e) => body.push_str(&html::note(&format!(
                    "The controller has no replica info for {name}: {e}"
                ))),
            }
        }
    }
    match leader(&members) {
        Some((m, true)) => body.push_str(&html::note(&format!(
            "Broker sets as the controller leader at {} sees them.",
            m.addr
        ))),
        Some((m, false)) => body.push_str(&html::warning(&format!(
            "No controller says it leads (an election?): broker sets as {} answers.",
            m.addr
        ))),
        None => body.push_str(&html::warning(&format!(
            "No controller answered ({}): the broker sets' masters are shown as the replicas report themselves.",
            console.controllers.join(", ")
        ))),
    }
    body.push_str(&controller_section(&members));
    Ok(html::page("Cluster", "/", &body))
}
