//! Starting a cluster in order (controllers and the NameServer, then the brokers) and waiting
//! until every process printed its ready line and the NameServer lists every broker set.

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::bail;
use rocketraft_common::protocol::ClusterInfo;
use rocketraft_remoting::api::MqClientApi;
use rocketraft_remoting::{ClientConfig, RemotingClient};

use super::auth::admin_credentials;
use super::file::{ClusterFile, Kind, ProcessRecord};
use super::layout::loopback;
use super::process::{printed_ready, spawn, tail, TAIL_LINES};
use super::{WaitFor, QUERY_TIMEOUT};

/// How often readiness and process exit are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// What the NameServer shows of every broker set, against what `up` started: the first set
/// that is not listed, has no master, or misses a replica.
pub(super) fn registration_gap(info: &ClusterInfo, file: &ClusterFile) -> Option<String> {
    file.broker_sets()
        .into_iter()
        .find_map(|(name, members)| set_gap(info, &name, &members))
}

fn set_gap(info: &ClusterInfo, name: &str, members: &[&ProcessRecord]) -> Option<String> {
    let Some(set) = info.broker_addr_table.get(name) else {
        return Some(format!("the NameServer lists no broker set {name:?} yet"));
    };
    if set.master_addr().is_none() {
        return Some(format!(
            "broker set {name:?} has no master (brokerId 0) registered; registered: {:?}",
            set.broker_addrs
        ));
    }
    let missing: Vec<String> = members
        .iter()
        .map(|p| loopback(p.ports.remoting))
        .filter(|addr| !set.broker_addrs.values().any(|a| a == addr))
        .collect();
    if missing.is_empty() {
        None
    } else {
        Some(format!(
            "broker set {name:?} misses replicas {missing:?}; registered: {:?}",
            set.broker_addrs
        ))
    }
}

/// Why the cluster is not ready yet, naming the process to look at.
enum NotReady {
    /// The process has not printed its ready line.
    Process(usize),
    /// The NameServer does not show the broker set complete.
    Registration(String),
}

pub(super) struct Starter {
    pub(super) dir: PathBuf,
    pub(super) file: ClusterFile,
    /// Our children, by index in `file.processes`.
    pub(super) children: Vec<Option<Child>>,
}

impl Starter {
    /// Collects exited children (they would stay zombies while `up` runs).
    pub(super) fn reap(children: &mut [Option<Child>]) {
        for child in children.iter_mut().flatten() {
            let _ = child.try_wait();
        }
    }

    fn start(&mut self, index: usize) -> anyhow::Result<()> {
        let child = spawn(&self.file.processes[index])?;
        self.file.processes[index].pid = child.id();
        self.file.processes[index].stopped = false;
        tracing::info!(
            name = %self.file.processes[index].name,
            pid = child.id(),
            "started"
        );
        self.children[index] = Some(child);
        // Recorded at once: if `up` itself dies now, `down` still finds this process.
        self.file.save(&self.dir)
    }

    /// An exited child, as an error with its stderr tail.
    fn check_exited(&mut self, indices: &[usize]) -> anyhow::Result<()> {
        for &i in indices {
            if let Some(child) = self.children[i].as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let r = &self.file.processes[i];
                    bail!(
                        "{} exited ({status}) before it was ready; last lines of {}:\n{}",
                        r.name,
                        r.stderr_log.display(),
                        tail(&r.stderr_log, TAIL_LINES)
                    );
                }
            }
        }
        Ok(())
    }

    /// What some NameServer of the cluster (each is asked on its own) still lacks: a broker
    /// set not whole or without a master, or no answer.
    async fn registration_gap_anywhere(&self, api: &MqClientApi) -> Option<NotReady> {
        for addr in rocketraft_remoting::api::namesrv_list(&self.file.namesrv_addr) {
            let gap = match api.cluster_info(addr).await {
                Ok(info) => registration_gap(&info, &self.file)
                    .map(|gap| format!("the NameServer at {addr}: {gap}")),
                Err(e) => Some(format!("the NameServer at {addr} does not answer: {e}")),
            };
            if let Some(gap) = gap {
                return Some(NotReady::Registration(gap));
            }
        }
        None
    }

    /// Waits until every process in `indices` printed its ready line and, if `registered`,
    /// until the NameServer lists every broker set whole, with a master.
    async fn wait_ready(
        &mut self,
        indices: &[usize],
        registered: bool,
        (deadline, timeout): (Instant, Duration),
        api: &MqClientApi,
    ) -> anyhow::Result<()> {
        loop {
            self.check_exited(indices)?;
            let pending = indices
                .iter()
                .copied()
                .find(|&i| !printed_ready(&self.file.processes[i]));
            let not_ready = match pending {
                Some(i) => Some(NotReady::Process(i)),
                None if registered => self.registration_gap_anywhere(api).await,
                None => None,
            };
            let Some(not_ready) = not_ready else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                bail!(self.describe(not_ready, timeout));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    fn describe(&self, not_ready: NotReady, timeout: Duration) -> String {
        let secs = timeout.as_secs();
        match not_ready {
            NotReady::Process(i) => {
                let r = &self.file.processes[i];
                format!(
                    "{} (pid {}) did not print its ready line within {secs} s (raise --timeout-secs if the machine is slow); last lines of {}:\n{}",
                    r.name,
                    r.pid,
                    r.stderr_log.display(),
                    tail(&r.stderr_log, TAIL_LINES)
                )
            }
            NotReady::Registration(gap) => {
                let mut text = format!(
                    "the broker sets are not registered within {secs} s: {gap} (raise --timeout-secs, or pass --wait-for started to skip this check)"
                );
                for r in self
                    .file
                    .processes
                    .iter()
                    .filter(|p| p.role == Kind::Broker)
                {
                    text.push_str(&format!(
                        "\nlast lines of {} ({}):\n{}",
                        r.name,
                        r.stderr_log.display(),
                        tail(&r.stderr_log, TAIL_LINES / 2)
                    ));
                }
                text
            }
        }
    }

    pub(super) async fn run(&mut self, wait_for: WaitFor, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        // Signed as the administrator when the cluster runs with `--auth`.
        let client = RemotingClient::new(ClientConfig {
            credentials: admin_credentials(&self.dir)?,
            ..ClientConfig::default()
        });
        let api = MqClientApi::new(client, QUERY_TIMEOUT);
        // Controllers and the NameServer first: a broker registers once at start and then
        // only every 30 s, so the NameServer must be up before the brokers.
        let first: Vec<usize> = (0..self.file.processes.len())
            .filter(|&i| self.file.processes[i].role != Kind::Broker)
            .collect();
        let brokers: Vec<usize> = (0..self.file.processes.len())
            .filter(|&i| self.file.processes[i].role == Kind::Broker)
            .collect();
        for &i in &first {
            self.start(i)?;
        }
        self.wait_ready(&first, false, (deadline, timeout), &api)
            .await?;
        for &i in &brokers {
            self.start(i)?;
        }
        let all: Vec<usize> = (0..self.file.processes.len()).collect();
        self.wait_ready(
            &all,
            wait_for == WaitFor::Registered,
            (deadline, timeout),
            &api,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::super::layout::PortLayout;
    use super::super::plan::plan;
    use super::super::tests::up_args;
    use super::super::Inherited;

    #[test]
    fn registration_gap_wants_a_master_and_every_replica() {
        let args = up_args(&[]);
        let l = PortLayout::fixed(9876, 30000, 3, 3).expect("layout");
        let plan = plan(
            &args.spec,
            &l,
            Path::new("/d"),
            "/x",
            &Inherited::default(),
            super::super::config::Secrets::default(),
        )
        .expect("plan");
        let mut info = ClusterInfo::default();
        assert!(registration_gap(&info, &plan.file).is_some());
        let set = rocketraft_common::protocol::BrokerData {
            cluster: "DefaultCluster".to_string(),
            broker_name: "broker-a".to_string(),
            broker_addrs: BTreeMap::from([
                (1, "127.0.0.1:30020".to_string()),
                (2, "127.0.0.1:30022".to_string()),
                (3, "127.0.0.1:30024".to_string()),
            ]),
            zone_name: None,
            enable_acting_master: false,
        };
        info.broker_addr_table
            .insert("broker-a".to_string(), set.clone());
        let gap = registration_gap(&info, &plan.file).expect("no master");
        assert!(gap.contains("no master"), "{gap}");
        let mut with_master = set;
        with_master.broker_addrs.remove(&1);
        with_master
            .broker_addrs
            .insert(0, "127.0.0.1:30020".to_string());
        info.broker_addr_table
            .insert("broker-a".to_string(), with_master.clone());
        assert_eq!(registration_gap(&info, &plan.file), None);
        with_master.broker_addrs.remove(&3);
        info.broker_addr_table
            .insert("broker-a".to_string(), with_master);
        let gap = registration_gap(&info, &plan.file).expect("missing one");
        assert!(gap.contains("127.0.0.1:30024"), "{gap}");
    }

    #[test]
    fn registration_gap_wants_every_set() {
        let args = up_args(&["--sets", "2", "--replicas", "1"]);
        let l = PortLayout::fixed_sets(9876, 30000, 1, 2, 1).expect("layout");
        let plan = plan(
            &args.spec,
            &l,
            Path::new("/d"),
            "/x",
            &Inherited::default(),
            super::super::config::Secrets::default(),
        )
        .expect("plan");
        let set = |name: &str, addr: &str| rocketraft_common::protocol::BrokerData {
            cluster: "DefaultCluster".to_string(),
            broker_name: name.to_string(),
            broker_addrs: BTreeMap::from([(0, addr.to_string())]),
            zone_name: None,
            enable_acting_master: false,
        };
        let mut info = ClusterInfo::default();
        info.broker_addr_table
            .insert("broker-a".to_string(), set("broker-a", "127.0.0.1:30020"));
        let gap = registration_gap(&info, &plan.file).expect("broker-b missing");
        assert!(gap.contains("broker-b"), "{gap}");
        // broker-b's master must be its own process, not broker-a's.
        info.broker_addr_table
            .insert("broker-b".to_string(), set("broker-b", "127.0.0.1:30020"));
        let gap = registration_gap(&info, &plan.file).expect("wrong replica");
        assert!(gap.contains("127.0.0.1:30022"), "{gap}");
        info.broker_addr_table
            .insert("broker-b".to_string(), set("broker-b", "127.0.0.1:30022"));
        assert_eq!(registration_gap(&info, &plan.file), None);
    }
}
