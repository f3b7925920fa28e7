//! `rocketraft cluster status`: each process alive or dead, its broker set, and its role as the
//! controllers and the NameServer see it.

use std::path::{Path, PathBuf};

use rocketraft_controller::client::ControllerClient;
use rocketraft_remoting::api::MqClientApi;
use rocketraft_remoting::{ClientConfig, RemotingClient};
use serde::{Deserialize, Serialize};

use super::auth::admin_credentials;
use super::file::{ClusterFile, Kind, Ports};
use super::layout::loopback;
use super::process::is_alive;
use super::QUERY_TIMEOUT;

/// One row of `cluster status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRow {
    pub name: String,
    pub kind: Kind,
    /// controller: leader|follower; broker: master|slave|unregistered; namesrv: serving;
    /// dead: dead; unknown when the question got no answer.
    pub role: String,
    /// A broker's set (brokerName).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_name: Option<String>,
    /// The id the NameServer registered a broker under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_id: Option<i64>,
    pub pid: u32,
    pub alive: bool,
    pub ports: Ports,
    pub data_dir: PathBuf,
    /// The stderr log (where the process logs).
    pub log: PathBuf,
    pub config: Option<PathBuf>,
    /// The process's metrics endpoint, `http://127.0.0.1:PORT/metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    /// The web console's URL, on the process that serves it (the NameServer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<String>,
}

async fn status_rows(dir: &Path, file: &ClusterFile) -> anyhow::Result<Vec<StatusRow>> {
    // Signed as the administrator when the cluster runs with `--auth`.
    let remoting = RemotingClient::new(ClientConfig {
        credentials: admin_credentials(dir)?,
        ..ClientConfig::default()
    });
    let api = MqClientApi::new(remoting.clone(), QUERY_TIMEOUT);
    let controllers = ControllerClient::new(remoting, QUERY_TIMEOUT);
    let namesrv_alive = file
        .processes
        .iter()
        .any(|p| p.role == Kind::Namesrv && is_alive(p));
    let info = if namesrv_alive {
        api.cluster_info(&file.namesrv_addr).await.ok()
    } else {
        None
    };
    let mut rows = Vec::new();
    for p in &file.processes {
        let alive = is_alive(p);
        let mut broker_id = None;
        let role = if !alive {
            "dead".to_string()
        } else {
            match p.role {
                Kind::Namesrv => "serving".to_string(),
                Kind::Controller => match controllers.metadata(&loopback(p.ports.remoting)).await {
                    Ok(m) if m.is_leader => "leader".to_string(),
                    Ok(_) => "follower".to_string(),
                    Err(_) => "unknown".to_string(),
                },
                Kind::Broker => match &info {
                    None => "unknown".to_string(),
                    Some(info) => {
                        let addr = loopback(p.ports.remoting);
                        broker_id = info.broker_addr_table.get(file.set_of(p)).and_then(|set| {
                            set.broker_addrs
                                .iter()
                                .find(|(_, a)| **a == addr)
                                .map(|(id, _)| *id)
                        });
                        match broker_id {
                            Some(rocketraft_common::consts::MASTER_ID) => "master".to_string(),
                            Some(_) => "slave".to_string(),
                            None => "unregistered".to_string(),
                        }
                    }
                },
            }
        };
        rows.push(StatusRow {
            name: p.name.clone(),
            kind: p.role,
            broker_name: (p.role == Kind::Broker).then(|| file.set_of(p).to_string()),
            role,
            broker_id,
            pid: p.pid,
            alive,
            ports: p.ports,
            data_dir: p.data_dir.clone(),
            log: p.stderr_log.clone(),
            config: p.config.clone(),
            metrics: p
                .ports
                .metrics
                .map(|port| format!("http://{}/metrics", loopback(port))),
            console: p
                .ports
                .console
                .map(|port| format!("http://{}/", loopback(port))),
        });
    }
    Ok(rows)
}

pub(super) async fn status(dir: &Path, json: bool) -> anyhow::Result<()> {
    let file = ClusterFile::load_existing(dir)?;
    let rows = status_rows(dir, &file).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "cluster {} in {}: NameServer {}",
        file.cluster_name,
        file.dir.display(),
        file.namesrv_addr
    );
    println!(
        "{:<14} {:<10} {:<10} {:<12} {:>8} {:<6} {:<24} log",
        "name", "kind", "set", "role", "pid", "alive", "ports"
    );
    for r in &rows {
        let mut ports = format!("remoting {}", r.ports.remoting);
        if let Some(p) = r.ports.raft {
            ports.push_str(&format!(" raft {p}"));
        }
        if let Some(p) = r.ports.ha {
            ports.push_str(&format!(" ha {p}"));
        }
        if let Some(p) = r.ports.metrics {
            ports.push_str(&format!(" metrics {p}"));
        }
        if let Some(p) = r.ports.console {
            ports.push_str(&format!(" console {p}"));
        }
        println!(
            "{:<14} {:<10} {:<10} {:<12} {:>8} {:<6} {:<24} {}",
            r.name,
            r.kind.as_str(),
            r.broker_name.as_deref().unwrap_or("-"),
            r.role,
            r.pid,
            if r.alive { "yes" } else { "no" },
            ports,
            r.log.display()
        );
    }
    Ok(())
}
