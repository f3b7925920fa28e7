//! `rocketraft admin broker`: what the brokers of a set say about their own replication
//! (GET_BROKER_HA_STATUS, 907), next to what the NameServer and, optionally, the controller say.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use rocketraft_controller::client::{ControllerCallError, ControllerClient, MasterInfo};
use rocketraft_remoting::api::MqClientApi;
use rocketraft_remoting::{request_code, response_code, RemotingCommand};
use serde::{Deserialize, Serialize};

use super::id_and_addr;

/// Deadline of one broker's answer.
const BROKER_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Subcommand)]
pub enum BrokerCommand {
    /// Each replica of a broker set as it sees itself: role, master and SyncStateSet epochs,
    /// offsets and lag. Replica addresses come from the NameServer; with --controller, the
    /// controller's view is shown too.
    Replicas {
        /// Broker set name (brokerName).
        #[arg(long)]
        broker: String,
        #[arg(long)]
        json: bool,
    },
    /// Disk use, CommitLog min/max offsets and the next deletion of every replica of a broker
    /// set (or of the broker at --addr), from GET_BROKER_RUNTIME_INFO.
    Status {
        /// Broker set name (brokerName); every replica the NameServer knows is asked.
        #[arg(long, required_unless_present = "addr")]
        broker: Option<String>,
        /// One broker's address instead.
        #[arg(long, conflicts_with = "broker")]
        addr: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Deletes expired files now (mqadmin deleteExpiredCommitLog + cleanExpiredCQ): the next
    /// cleaning rounds delete expired CommitLog segments at any hour, and the ConsumeQueues
    /// follow. Files that have not reached fileReservedTime stay.
    Clean {
        /// Broker set name (brokerName); every replica the NameServer knows is asked.
        #[arg(long, required_unless_present = "addr")]
        broker: Option<String>,
        /// One broker's address instead.
        #[arg(long, conflicts_with = "broker")]
        addr: Option<String>,
    },
    /// The broker's settings (mqadmin getBrokerConfig / updateBrokerConfig).
    #[command(subcommand)]
    Config(super::clients::ConfigCommand),
    /// The epochs of each replica's CommitLog: where each master's epoch starts and ends, and
    /// the log's end (mqadmin getBrokerEpoch; GET_BROKER_EPOCH_CACHE). Replicas that agree on
    /// an epoch hold the same bytes up to its end.
    Epoch {
        /// Broker set name (brokerName); every replica the NameServer knows is asked.
        #[arg(long, required_unless_present = "addr")]
        broker: Option<String>,
        /// One broker's address instead.
        #[arg(long, conflicts_with = "broker")]
        addr: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// `admin broker epoch`: every asked replica's epoch cache, by address.
async fn epoch(
    api: &MqClientApi,
    namesrv: &str,
    broker: Option<String>,
    addr: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let mut caches = BTreeMap::new();
    for addr in target_addrs(api, namesrv, broker, addr).await? {
        let cache = api
            .broker_epoch_cache(&addr)
            .await
            .with_context(|| format!("the epochs of the broker at {addr}"))?;
        caches.insert(addr, cache);
    }
    super::print_as(json, &caches, |caches| {
        for (addr, c) in caches {
            println!(
                "{} id {} ({addr}): CommitLog ends at {}",
                c.broker_name, c.broker_id, c.max_offset
            );
            println!("  {:>6} {:>16} {:>16}", "epoch", "startOffset", "endOffset");
            for e in &c.epoch_list {
                // The last epoch is open: RocketMQ sends Long.MAX_VALUE as its end.
                let end = if e.end_offset == i64::MAX {
                    "-".to_string()
                } else {
                    e.end_offset.to_string()
                };
                println!("  {:>6} {:>16} {:>16}", e.epoch, e.start_offset, end);
            }
        }
    })
}

/// The retention keys of GET_BROKER_RUNTIME_INFO that `admin broker status` shows, in order.
const STATUS_KEYS: &[&str] = &[
    "commitLogDiskRatio",
    "diskFull",
    "commitLogMinOffset",
    "commitLogMaxOffset",
    "commitLogSegments",
    "nextSegmentExpireTimestamp",
    "deleteWhen",
    "fileReservedTime",
    "fileReservedTimeSecs",
    "segmentsDeleted",
    "consumeQueueFilesDeleted",
    "retentionPinnedAt",
];

/// The addresses a status or clean command goes to: the one given, or every replica of the set.
pub(super) async fn target_addrs(
    api: &MqClientApi,
    namesrv: &str,
    broker: Option<String>,
    addr: Option<String>,
) -> anyhow::Result<Vec<String>> {
    if let Some(a) = addr {
        return Ok(vec![a]);
    }
    let broker = broker.context("give --broker NAME or --addr HOST:PORT")?;
    let info = api
        .cluster_info(namesrv)
        .await
        .map_err(super::namesrv_error(namesrv))?;
    let Some(set) = info.broker_addr_table.get(&broker) else {
        let known: Vec<&String> = info.broker_addr_table.keys().collect();
        bail!(
            "the NameServer at {namesrv} knows no broker set {broker:?} (it knows {known:?}); list them with `rocketraft admin cluster list`"
        );
    };
    Ok(set.broker_addrs.values().cloned().collect())
}

/// GET_BROKER_RUNTIME_INFO of one broker: its `table`.
pub(crate) async fn runtime_info(
    api: &MqClientApi,
    addr: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let response = api
        .remoting()
        .invoke(
            addr,
            RemotingCommand::request(request_code::GET_BROKER_RUNTIME_INFO),
            BROKER_TIMEOUT,
        )
        .await
        .with_context(|| format!("no answer from the broker at {addr}"))?;
    if response.code != response_code::SUCCESS {
        bail!(
            "the broker at {addr} refused GET_BROKER_RUNTIME_INFO (code {}): {}",
            response.code,
            response.remark.unwrap_or_default()
        );
    }
    #[derive(Deserialize)]
    struct Table {
        table: BTreeMap<String, String>,
    }
    let t: Table = serde_json::from_slice(&response.body).with_context(|| {
        format!("the broker at {addr} answered runtime info this tool cannot read")
    })?;
    Ok(t.table)
}

/// A timestamp in ms as UTC text, "-" for none.
fn when(ms: &str) -> String {
    match ms.parse::<i64>() {
        Ok(t) if t > 0 => {
            let (y, m, d, hh, mm, ss) = rocketraft_common::time::utc_fields(t.div_euclid(1000));
            format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} UTC")
        }
        _ => "-".to_string(),
    }
}

async fn status(
    api: &MqClientApi,
    namesrv: &str,
    broker: Option<String>,
    addr: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let addrs = target_addrs(api, namesrv, broker, addr).await?;
    let mut out = BTreeMap::new();
    let mut failed = 0;
    for a in &addrs {
        match runtime_info(api, a).await {
            Ok(table) => {
                let shown: BTreeMap<String, String> = STATUS_KEYS
                    .iter()
                    .filter_map(|k| table.get(*k).map(|v| (k.to_string(), v.clone())))
                    .collect();
                out.insert(a.clone(), Ok(shown));
            }
            Err(e) => {
                failed += 1;
                out.insert(a.clone(), Err(format!("{e:#}")));
            }
        }
    }
    if json {
        let v: BTreeMap<&String, serde_json::Value> = out
            .iter()
            .map(|(a, r)| {
                let v = match r {
                    Ok(t) => serde_json::to_value(t).unwrap_or_default(),
                    Err(e) => serde_json::json!({ "error": e }),
                };
                (a, v)
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for (a, r) in &out {
            println!("{a}");
            match r {
                Err(e) => println!("  error: {e}"),
                Ok(t) => {
                    let get = |k: &str| t.get(k).map_or("-", String::as_str);
                    let ratio: f64 = get("commitLogDiskRatio").parse().unwrap_or(-1.0);
                    println!(
                        "  disk used          {:.1}%{}",
                        ratio * 100.0,
                        if get("diskFull") == "true" {
                            "  FULL: sends refused"
                        } else {
                            ""
                        }
                    );
                    println!(
                        "  CommitLog offsets  {} .. {} ({} segments)",
                        get("commitLogMinOffset"),
                        get("commitLogMaxOffset"),
                        get("commitLogSegments")
                    );
                    let reserved = match get("fileReservedTimeSecs") {
                        "-1" | "-" => format!("{} h", get("fileReservedTime")),
                        s => format!("{s} s"),
                    };
                    println!(
                        "  next deletion      oldest segment expires {} (fileReservedTime {reserved}, deleteWhen {:?})",
                        when(get("nextSegmentExpireTimestamp")),
                        get("deleteWhen")
                    );
                    println!(
                        "  deleted so far     {} segments, {} ConsumeQueue files",
                        get("segmentsDeleted"),
                        get("consumeQueueFilesDeleted")
                    );
                    match get("retentionPinnedAt") {
                        "-1" | "-" => {}
                        p => println!(
                            "  pinned at          {p} (live POP, timer or transaction state)"
                        ),
                    }
                }
            }
        }
    }
    if failed == addrs.len() {
        bail!("no broker answered");
    }
    Ok(())
}

async fn clean(
    api: &MqClientApi,
    namesrv: &str,
    broker: Option<String>,
    addr: Option<String>,
) -> anyhow::Result<()> {
    let addrs = target_addrs(api, namesrv, broker, addr).await?;
    let mut failed = Vec::new();
    for a in &addrs {
        let mut ok = true;
        for code in [
            request_code::DELETE_EXPIRED_COMMITLOG,
            request_code::CLEAN_EXPIRED_CONSUMEQUEUE,
        ] {
            match api
                .remoting()
                .invoke(a, RemotingCommand::request(code), BROKER_TIMEOUT)
                .await
            {
                Ok(r) if r.code == response_code::SUCCESS => {}
                Ok(r) => {
                    ok = false;
                    failed.push(format!(
                        "{a}: refused {code} (code {}): {}",
                        r.code,
                        r.remark.unwrap_or_default()
                    ));
                    break;
                }
                Err(e) => {
                    ok = false;
                    failed.push(format!("{a}: no answer: {e}"));
                    break;
                }
            }
        }
        if ok {
            println!("{a}: expired files are being deleted (see `rocketraft admin broker status`)");
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("\n"));
    }
    Ok(())
}

/// One entry of a replica's epoch file: the epoch began at this CommitLog offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EpochEntry {
    pub epoch: i64,
    pub start_offset: i64,
}

/// A slave as its master tracks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlaveStatus {
    pub broker_id: i64,
    pub addr: String,
    pub ack_offset: i64,
    pub lag: i64,
    pub in_sync: bool,
    pub connected: bool,
}

/// The body of a GET_BROKER_HA_STATUS answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HaStatus {
    pub broker_name: String,
    pub broker_id: i64,
    pub broker_addr: String,
    /// MASTER, SLAVE or NONE.
    pub role: String,
    pub master_epoch: i64,
    pub sync_state_set_epoch: i64,
    #[serde(default)]
    pub sync_state_set: Vec<i64>,
    #[serde(default)]
    pub master_broker_id: Option<i64>,
    #[serde(default)]
    pub master_addr: Option<String>,
    pub max_phy_offset: i64,
    pub confirm_offset: i64,
    pub flushed_offset: i64,
    pub lease_valid: bool,
    #[serde(default)]
    pub epochs: Vec<EpochEntry>,
    #[serde(default)]
    pub slaves: Vec<SlaveStatus>,
}

impl HaStatus {
    fn is_master(&self) -> bool {
        self.role.eq_ignore_ascii_case("MASTER")
    }
}

/// One replica: where the NameServer lists it and what it answered.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaRow {
    /// The id the NameServer registered it under.
    pub registered_id: i64,
    pub addr: String,
    /// Bytes behind the master's maxPhyOffset (None for the master, or without an answering
    /// master).
    pub lag: Option<i64>,
    pub status: Option<HaStatus>,
    pub error: Option<String>,
}

/// The controller's view, for `--json`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct ControllerView {
    addr: String,
    master_broker_id: Option<i64>,
    master_address: Option<String>,
    master_epoch: i32,
    sync_state_set_epoch: i32,
    sync_state_set: Vec<i64>,
    error: Option<String>,
}

impl ControllerView {
    fn new(addr: &str, answer: Result<MasterInfo, ControllerCallError>) -> Self {
        match answer {
            Ok(m) => ControllerView {
                addr: addr.to_string(),
                master_broker_id: m.master_broker_id,
                master_address: m.master_address,
                master_epoch: m.master_epoch,
                sync_state_set_epoch: m.sync_state_set_epoch,
                sync_state_set: m.sync_state_set.into_iter().collect(),
                error: None,
            },
            Err(e) => ControllerView {
                addr: addr.to_string(),
                master_broker_id: None,
                master_address: None,
                master_epoch: 0,
                sync_state_set_epoch: 0,
                sync_state_set: Vec::new(),
                error: Some(e.to_string()),
            },
        }
    }
}

/// Asks one broker for its HA status.
async fn ha_status(api: &MqClientApi, addr: &str) -> anyhow::Result<HaStatus> {
    let response = api
        .remoting()
        .invoke(
            addr,
            RemotingCommand::request(request_code::GET_BROKER_HA_STATUS),
            BROKER_TIMEOUT,
        )
        .await
        .context("no answer")?;
    if response.code != response_code::SUCCESS {
        bail!(
            "answered code {}: {} (does this broker run in controller mode?)",
            response.code,
            response.remark.unwrap_or_default()
        );
    }
    serde_json::from_slice(&response.body).context("answered an HA status this tool cannot read")
}

/// Fills each row's lag: a replica's distance behind the master that answered (the one with
/// the highest master epoch if, during a failover, two say MASTER).
pub fn compute_lag(rows: &mut [ReplicaRow]) {
    let master_offset = rows
        .iter()
        .filter_map(|r| r.status.as_ref())
        .filter(|s| s.is_master())
        .max_by_key(|s| s.master_epoch)
        .map(|s| (s.broker_addr.clone(), s.max_phy_offset));
    for row in rows.iter_mut() {
        row.lag = match (&row.status, &master_offset) {
            (Some(s), Some((master_addr, offset)))
                if !s.is_master() || s.broker_addr != *master_addr =>
            {
                Some(offset - s.max_phy_offset)
            }
            _ => None,
        };
    }
}

fn show_set(set: &[i64]) -> String {
    let ids: Vec<String> = set.iter().map(i64::to_string).collect();
    format!("{{{}}}", ids.join(","))
}

fn print_table(broker: &str, rows: &[ReplicaRow], controller: Option<&ControllerView>) {
    println!("broker set {broker}");
    println!(
        "{:>4} {:<22} {:<7} {:>6} {:>8} {:<12} {:>14} {:>14} {:>10}",
        "id", "address", "role", "epoch", "sse", "sync set", "max offset", "confirm", "lag"
    );
    for row in rows {
        match (&row.status, &row.error) {
            (Some(s), _) => println!(
                "{:>4} {:<22} {:<7} {:>6} {:>8} {:<12} {:>14} {:>14} {:>10}",
                s.broker_id,
                row.addr,
                s.role,
                s.master_epoch,
                s.sync_state_set_epoch,
                show_set(&s.sync_state_set),
                s.max_phy_offset,
                s.confirm_offset,
                row.lag.map_or("-".to_string(), |l| l.to_string())
            ),
            (None, error) => println!(
                "{:>4} {:<22} unreachable: {}",
                row.registered_id,
                row.addr,
                error.as_deref().unwrap_or("no answer")
            ),
        }
    }
    for s in rows
        .iter()
        .filter_map(|r| r.status.as_ref())
        .filter(|s| s.is_master())
    {
        print_slaves(s);
    }
    if let Some(c) = controller {
        match &c.error {
            Some(e) => println!("controller {}: unreachable: {e}", c.addr),
            None => println!(
                "controller {}: master {} epoch {}, SyncStateSet epoch {} {}",
                c.addr,
                id_and_addr(c.master_broker_id, c.master_address.as_ref()),
                c.master_epoch,
                c.sync_state_set_epoch,
                show_set(&c.sync_state_set)
            ),
        }
    }
}

/// The slaves as `master` tracks them.
fn print_slaves(master: &HaStatus) {
    if master.slaves.is_empty() {
        println!("master {} tracks no slaves", master.broker_id);
        return;
    }
    println!("slaves as master {} sees them:", master.broker_id);
    println!(
        "{:>4} {:<22} {:>14} {:>10} {:<8} connected",
        "id", "address", "ack offset", "lag", "in sync"
    );
    for slave in &master.slaves {
        println!(
            "{:>4} {:<22} {:>14} {:>10} {:<8} {}",
            slave.broker_id,
            slave.addr,
            slave.ack_offset,
            slave.lag,
            if slave.in_sync { "yes" } else { "no" },
            if slave.connected { "yes" } else { "no" }
        );
    }
}

pub async fn run(
    api: &MqClientApi,
    namesrv: &str,
    controller: Option<&str>,
    command: BrokerCommand,
) -> anyhow::Result<()> {
    let (broker, json) = match command {
        BrokerCommand::Replicas { broker, json } => (broker, json),
        BrokerCommand::Status { broker, addr, json } => {
            return status(api, namesrv, broker, addr, json).await
        }
        BrokerCommand::Clean { broker, addr } => return clean(api, namesrv, broker, addr).await,
        BrokerCommand::Epoch { broker, addr, json } => {
            return epoch(api, namesrv, broker, addr, json).await
        }
        BrokerCommand::Config(command) => {
            return super::clients::run_config(api, namesrv, command).await
        }
    };
    let info = api
        .cluster_info(namesrv)
        .await
        .map_err(super::namesrv_error(namesrv))?;
    let Some(set) = info.broker_addr_table.get(&broker) else {
        let known: Vec<&String> = info.broker_addr_table.keys().collect();
        bail!(
            "the NameServer at {namesrv} knows no broker set {broker:?} (it knows {known:?}); list them with `rocketraft admin cluster list`"
        );
    };
    let mut rows = query_replicas(api, &set.broker_addrs).await?;
    compute_lag(&mut rows);

    let controller_view = match controller {
        Some(addr) => {
            let client = ControllerClient::new(api.remoting().clone(), Duration::from_secs(5));
            let answer = client.get_replica_info(addr, &broker).await;
            Some(ControllerView::new(addr, answer))
        }
        None => None,
    };

    if json {
        let out = serde_json::json!({
            "brokerName": broker,
            "replicas": rows,
            "controller": controller_view,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_table(&broker, &rows, controller_view.as_ref());
    }
    if rows.iter().all(|r| r.status.is_none()) {
        bail!(
            "no replica of broker set {broker:?} answered GET_BROKER_HA_STATUS; are the brokers running (`rocketraft cluster status`)?"
        );
    }
    Ok(())
}

/// Asks every replica (registered id -> address) for its HA status at once; one row each, in
/// the order given.
async fn query_replicas(
    api: &MqClientApi,
    replicas: &BTreeMap<i64, String>,
) -> anyhow::Result<Vec<ReplicaRow>> {
    let mut tasks = tokio::task::JoinSet::new();
    for (index, (id, addr)) in replicas.iter().enumerate() {
        let api = api.clone();
        let addr = addr.clone();
        let id = *id;
        tasks.spawn(async move {
            let answer = ha_status(&api, &addr).await;
            (index, id, addr, answer)
        });
    }
    let mut rows: Vec<(usize, ReplicaRow)> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (index, registered_id, addr, answer) = joined.context("a replica query task failed")?;
        let (status, error) = match answer {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        rows.push((
            index,
            ReplicaRow {
                registered_id,
                addr,
                lag: None,
                status,
                error,
            },
        ));
    }
    rows.sort_by_key(|(index, _)| *index);
    Ok(rows.into_iter().map(|(_, r)| r).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &str = r#"{"brokerName":"broker-a","brokerId":1,"brokerAddr":"127.0.0.1:10911","role":"MASTER",
 "masterEpoch":3,"syncStateSetEpoch":5,"syncStateSet":[1,2,3],"masterBrokerId":1,"masterAddr":"127.0.0.1:10911",
 "maxPhyOffset":1234,"confirmOffset":1200,"flushedOffset":1234,"leaseValid":true,
 "epochs":[{"epoch":1,"startOffset":0}],
 "slaves":[{"brokerId":2,"addr":"127.0.0.1:10921","ackOffset":1200,"lag":34,"inSync":true,"connected":true}]}"#;

    fn row(status: Option<HaStatus>) -> ReplicaRow {
        ReplicaRow {
            registered_id: 0,
            addr: String::new(),
            lag: None,
            error: status.is_none().then(|| "refused".to_string()),
            status,
        }
    }

    #[test]
    fn decodes_the_documented_shape() {
        let s: HaStatus = serde_json::from_str(MASTER).expect("decodes");
        assert!(s.is_master());
        assert_eq!(s.sync_state_set, [1, 2, 3]);
        assert_eq!(s.slaves[0].lag, 34);
        assert_eq!(s.epochs[0].start_offset, 0);
        let minimal = r#"{"brokerName":"b","brokerId":2,"brokerAddr":"x","role":"NONE","masterEpoch":0,
            "syncStateSetEpoch":0,"masterBrokerId":null,"masterAddr":null,"maxPhyOffset":0,
            "confirmOffset":0,"flushedOffset":0,"leaseValid":false}"#;
        let s: HaStatus = serde_json::from_str(minimal).expect("optional parts may be absent");
        assert!(s.slaves.is_empty() && s.master_broker_id.is_none());
        assert!(serde_json::from_str::<HaStatus>(r#"{"role":"MASTER"}"#).is_err());
    }

    #[test]
    fn lag_is_measured_from_the_newest_master() {
        let master: HaStatus = serde_json::from_str(MASTER).expect("decodes");
        let mut slave = master.clone();
        slave.role = "SLAVE".to_string();
        slave.broker_id = 2;
        slave.broker_addr = "127.0.0.1:10921".to_string();
        slave.max_phy_offset = 1000;
        let mut stale = master.clone();
        stale.master_epoch = 2;
        stale.broker_addr = "127.0.0.1:10931".to_string();
        stale.max_phy_offset = 5000;
        let mut rows = vec![
            row(Some(master)),
            row(Some(slave)),
            row(None),
            row(Some(stale)),
        ];
        compute_lag(&mut rows);
        assert_eq!(rows[0].lag, None, "the master lags nobody");
        assert_eq!(rows[1].lag, Some(234));
        assert_eq!(rows[2].lag, None, "no answer, no lag");
        assert_eq!(
            rows[3].lag,
            Some(1234 - 5000),
            "a deposed master is measured too"
        );
    }

    #[test]
    fn timestamps_print_as_utc() {
        assert_eq!(when("0"), "-");
        assert_eq!(when("-1"), "-");
        assert_eq!(when("86400000"), "1970-01-02 00:00:00 UTC");
        assert_eq!(when("1796169600000"), "2026-12-02 00:00:00 UTC");
        assert_eq!(when("951782400000"), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn no_master_no_lag() {
        let mut s: HaStatus = serde_json::from_str(MASTER).expect("decodes");
        s.role = "SLAVE".to_string();
        let mut rows = vec![row(Some(s))];
        compute_lag(&mut rows);
        assert_eq!(rows[0].lag, None);
    }
}
