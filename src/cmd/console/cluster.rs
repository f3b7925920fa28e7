//! `/`: the NameServer's clusters and broker sets, each replica as it reports itself
//! (GET_BROKER_HA_STATUS: role, epochs, SyncStateSet, offsets; lag measured from the master),
//! its version and rates (GET_BROKER_RUNTIME_INFO), and the controller's view: the quorum's
//! leader and term (CONTROLLER_GET_METADATA_INFO) and each set's master, epochs and
//! SyncStateSet (CONTROLLER_GET_REPLICA_INFO).

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

/// The controller's own status, or why there is none.
async fn controller_status(console: &Console) -> Result<ControllerStatus, String> {
    let request = RemotingCommand::request(request_code::CONTROLLER_GET_METADATA_INFO);
    let response = console
        .api
        .call(&console.controller, request, &[response_code::SUCCESS])
        .await
        .map_err(|e| {
            call_failure(
                console,
                "controller status",
                &format!("the controller at {}", console.controller),
                e,
            )
        })?;
    serde_json::from_slice(&response.body)
        .map_err(|e| format!("the controller's status is not Rocketraft's: {e}"))
}

fn controller_section(console: &Console, status: &Result<ControllerStatus, String>) -> String {
    let mut out = String::from("<h2>Controller</h2>\n");
    match status {
        Err(e) => out.push_str(&html::warning(&format!(
            "No controller status from {}: {e}",
            console.controller
        ))),
        Ok(s) => {
            let r = &s.raft;
            let leader = match (&r.leader, &r.leader_addr) {
                (Some(id), Some(a)) => format!("{id} ({a})"),
                (Some(id), None) => id.to_string(),
                _ => "none".to_string(),
            };
            let voters: Vec<String> = r.voters.iter().map(|(i, a)| format!("{i} {a}")).collect();
            let learners: Vec<String> =
                r.learners.iter().map(|(i, a)| format!("{i} {a}")).collect();
            let rows = vec![
                vec![td("asked"), td(&console.controller)],
                vec![
                    td("this node"),
                    td(format!("{} ({}) {}", r.id, r.addr, r.state)),
                ],
                vec![td("leader"), td(leader)],
                vec![td("term"), num(r.term)],
                vec![td("voters"), td(voters.join(", "))],
                vec![
                    td("learners"),
                    td(if learners.is_empty() {
                        "none".to_string()
                    } else {
                        learners.join(", ")
                    }),
                ],
                vec![
                    td("last applied"),
                    num(show(r.last_applied.map(|v| v as i64))),
                ],
                vec![td("broker sets"), num(s.broker_sets)],
            ];
            out.push_str(&html::table(&["", "controller"], &rows));
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
    let status = controller_status(&console).await;
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
        if status.is_ok() {
            match controller.get_replica_info(&console.controller, name).await {
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
    body.push_str(&controller_section(&console, &status));
    Ok(html::page("Cluster", "/", &body))
}
