//! What `cluster up` writes and starts: every process's record and config for a new cluster,
//! or a stopped cluster's records refreshed for a restart.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};

use super::config::{broker_toml, controller_toml, namesrv_toml, path_string, Secrets};
use super::file::{ClusterFile, Kind, Ports, ProcessRecord, CLUSTER_FILE, FILE_VERSION};
use super::layout::{loopback, PortLayout};
use super::{ClusterSpec, Inherited};
use rocketraft_common::trust::ClusterSecret;

/// A process to start: its record (pid 0) and the config file to write first.
#[derive(Debug, Clone)]
pub struct PlannedProcess {
    pub record: ProcessRecord,
    pub config_text: Option<String>,
}

/// The whole cluster to start, computed without touching the disk or the network.
#[derive(Debug, Clone)]
pub struct Plan {
    pub file: ClusterFile,
    pub processes: Vec<PlannedProcess>,
}

/// Where the NameServer's console finds the credentials to sign with: the cluster's
/// administrator file, when the cluster runs with `--auth`.
fn console_credentials(dir: &Path) -> Option<PathBuf> {
    let path = super::auth::credentials_path(dir);
    path.is_file().then_some(path)
}

/// The command line of `record`'s process: this binary, the inherited global flags, and the
/// subcommand with the record's config file (or, for the NameServer, its listen address). The
/// NameServer's console gets the whole controller quorum and, with `--auth`, the path of the
/// administrator's credentials file (never the secret itself).
fn command_line(
    record: &ProcessRecord,
    exe: &str,
    inherited: &Inherited,
    controllers: &[String],
    credentials: Option<&Path>,
) -> anyhow::Result<Vec<String>> {
    let mut argv = vec![exe.to_string()];
    if !inherited.log.is_empty() {
        argv.extend(["--log".to_string(), inherited.log.clone()]);
    }
    if inherited.log_format != crate::LogFormat::Text {
        argv.extend([
            "--log-format".to_string(),
            inherited.log_format.as_str().to_string(),
        ]);
    }
    if let Some(threads) = inherited.threads {
        argv.extend(["--threads".to_string(), threads.to_string()]);
    }
    match (record.role, &record.config) {
        // A cluster file from before NameServers had a config file.
        (Kind::Namesrv, None) => argv.extend([
            "namesrv".to_string(),
            "--listen".to_string(),
            loopback(record.ports.remoting),
        ]),
        (kind, Some(config)) => argv.extend([
            kind.as_str().to_string(),
            "--config".to_string(),
            path_string(config)?,
        ]),
        (kind, None) => bail!(
            "{} in {CLUSTER_FILE} has no config file, which a {} needs: remove the directory to start afresh",
            record.name,
            kind.as_str()
        ),
    }
    if let Some(port) = record.ports.metrics {
        argv.extend(["--metrics-listen".to_string(), loopback(port)]);
    }
    if let Some(port) = record.ports.console {
        argv.extend(["--console-listen".to_string(), loopback(port)]);
        // The console asks every member of the controller quorum.
        if !controllers.is_empty() {
            argv.extend(["--console-controller".to_string(), controllers.join(",")]);
        }
        if let Some(path) = credentials {
            argv.extend(["--console-credentials-file".to_string(), path_string(path)?]);
        }
    }
    Ok(argv)
}

/// Everything `cluster up` will write and start for a new cluster. `dir` must be absolute
/// (configs name paths).
pub fn plan(
    spec: &ClusterSpec,
    layout: &PortLayout,
    dir: &Path,
    exe: &str,
    inherited: &Inherited,
    secrets: Secrets<'_>,
) -> anyhow::Result<Plan> {
    let mut wanted = controllers(spec, layout, dir, secrets.cluster)?;
    let home = dir.join("namesrv");
    wanted.push(Wanted {
        name: "namesrv".to_string(),
        role: Kind::Namesrv,
        broker_name: None,
        ports: Ports {
            remoting: layout.namesrv,
            raft: None,
            ha: None,
            metrics: Some(layout.namesrv_metrics),
            console: Some(layout.console),
        },
        data_dir: home.clone(),
        config: Some((
            home.join("namesrv.toml"),
            namesrv_toml(layout.namesrv, secrets)?,
        )),
    });
    // NameServers 2..: the same, without the console.
    for (i, (remoting, metrics)) in layout.more_namesrvs.iter().enumerate() {
        let name = format!("namesrv-{}", i + 2);
        let home = dir.join(&name);
        wanted.push(Wanted {
            name,
            role: Kind::Namesrv,
            broker_name: None,
            ports: Ports {
                remoting: *remoting,
                raft: None,
                ha: None,
                metrics: Some(*metrics),
                console: None,
            },
            data_dir: home.clone(),
            config: Some((home.join("namesrv.toml"), namesrv_toml(*remoting, secrets)?)),
        });
    }
    wanted.extend(brokers(spec, layout, dir, secrets)?);
    let controller_addrs: Vec<String> = layout
        .controllers
        .iter()
        .map(|(r, _)| loopback(*r))
        .collect();
    let credentials = secrets.auth.map(|_| super::auth::credentials_path(dir));
    let processes = wanted
        .into_iter()
        .map(|w| {
            w.planned(
                dir,
                exe,
                inherited,
                &controller_addrs,
                credentials.as_deref(),
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let file = ClusterFile {
        version: FILE_VERSION,
        dir: dir.to_path_buf(),
        cluster_name: spec.cluster_name().to_string(),
        broker_name: spec.broker_name().to_string(),
        namesrv_addr: layout.namesrv_addrs(),
        controller_addrs,
        started_at_ms: now_ms(),
        processes: processes.iter().map(|p| p.record.clone()).collect(),
    };
    Ok(Plan { file, processes })
}

/// A process of a new cluster, before its logs and command line are filled in.
struct Wanted {
    name: String,
    role: Kind,
    /// A broker's set.
    broker_name: Option<String>,
    ports: Ports,
    data_dir: PathBuf,
    /// The config file and its text.
    config: Option<(PathBuf, String)>,
}

impl Wanted {
    /// Its record (logs under `dir/<name>/`, the command line of `exe`) and config text.
    fn planned(
        self,
        dir: &Path,
        exe: &str,
        inherited: &Inherited,
        controllers: &[String],
        credentials: Option<&Path>,
    ) -> anyhow::Result<PlannedProcess> {
        let (config, config_text) = self.config.unzip();
        let mut record = ProcessRecord {
            stdout_log: dir.join(&self.name).join("stdout.log"),
            stderr_log: dir.join(&self.name).join("stderr.log"),
            name: self.name,
            role: self.role,
            broker_name: self.broker_name,
            pid: 0,
            ports: self.ports,
            data_dir: self.data_dir,
            config,
            argv: Vec::new(),
            stopped: false,
        };
        record.argv = command_line(&record, exe, inherited, controllers, credentials)?;
        Ok(PlannedProcess {
            record,
            config_text,
        })
    }
}

/// `controller-N`: data in `data/`, config `controller.toml`.
fn controllers(
    spec: &ClusterSpec,
    layout: &PortLayout,
    dir: &Path,
    secret: Option<&ClusterSecret>,
) -> anyhow::Result<Vec<Wanted>> {
    let mut out = Vec::new();
    for (i, (remoting, raft)) in layout.controllers.iter().enumerate() {
        let id = i + 1;
        let name = format!("controller-{id}");
        let home = dir.join(&name);
        let data_dir = home.join("data");
        let text = controller_toml(id, layout, &data_dir, secret, &spec.extra_controller_config)?;
        out.push(Wanted {
            name,
            role: Kind::Controller,
            broker_name: None,
            ports: Ports {
                remoting: *remoting,
                raft: Some(*raft),
                ha: None,
                metrics: layout.controller_metrics.get(i).copied(),
                console: None,
            },
            data_dir,
            config: Some((home.join("controller.toml"), text)),
        });
    }
    Ok(out)
}

/// `broker-N` (one set) or `broker-a-N`, `broker-b-N`... (`--sets`): store in `store/`, config
/// `broker.toml`.
fn brokers(
    spec: &ClusterSpec,
    layout: &PortLayout,
    dir: &Path,
    secrets: Secrets<'_>,
) -> anyhow::Result<Vec<Wanted>> {
    let set_names = spec.broker_names()?;
    let mut out = Vec::new();
    for (i, (remoting, ha)) in layout.brokers.iter().enumerate() {
        let index = i + 1;
        let name = layout.broker_process(i);
        let set = set_names
            .get(layout.set_of(i))
            .with_context(|| format!("no broker set for {name}"))?
            .clone();
        let home = dir.join(&name);
        let store_root = home.join("store");
        let text = broker_toml(index, &set, spec, layout, &store_root, secrets)?;
        out.push(Wanted {
            name,
            role: Kind::Broker,
            broker_name: Some(set),
            ports: Ports {
                remoting: *remoting,
                raft: None,
                ha: Some(*ha),
                metrics: layout.broker_metrics.get(i).copied(),
                console: None,
            },
            data_dir: store_root,
            config: Some((home.join("broker.toml"), text)),
        });
    }
    Ok(out)
}

/// Prepares a stopped cluster's file for a restart: same processes, ports and config files,
/// command lines refreshed for this binary and these global flags.
pub fn restart_plan(
    mut file: ClusterFile,
    dir: &Path,
    exe: &str,
    inherited: &Inherited,
) -> anyhow::Result<ClusterFile> {
    if file.dir != dir {
        bail!(
            "{} was written for {}, not {}: move the directory back, or remove {} to start afresh",
            ClusterFile::path(dir).display(),
            file.dir.display(),
            dir.display(),
            ClusterFile::path(dir).display()
        );
    }
    let credentials = console_credentials(dir);
    for p in &mut file.processes {
        if let Some(config) = &p.config {
            if !config.is_file() {
                bail!(
                    "{} of {} is missing: restore it, or remove {} to start afresh",
                    config.display(),
                    p.name,
                    dir.display()
                );
            }
        }
        p.argv = command_line(
            p,
            exe,
            inherited,
            &file.controller_addrs,
            credentials.as_deref(),
        )?;
        p.pid = 0;
        p.stopped = false;
    }
    file.started_at_ms = now_ms();
    Ok(file)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::super::tests::up_args;
    use super::*;

    #[test]
    fn plan_and_cluster_file_round_trip() {
        let args = up_args(&[]);
        let secret = ClusterSecret::generate();
        let l = PortLayout::fixed(9876, 30000, 3, 3).expect("layout");
        let inherited = Inherited {
            log: "warn".to_string(),
            log_format: crate::LogFormat::Text,
            threads: Some(2),
        };
        let plan = plan(
            &args.spec,
            &l,
            Path::new("/d"),
            "/bin/rocketraft",
            &inherited,
            Secrets {
                cluster: Some(&secret),
                auth: None,
            },
        )
        .expect("plan");
        // Every config carries the secret.
        for p in &plan.processes {
            let text = p.config_text.as_deref().expect("a config");
            assert!(
                text.contains(&format!("cluster_secret = \"{}\"", secret.expose())),
                "{}: {text}",
                p.record.name
            );
        }
        let names: Vec<&str> = plan
            .file
            .processes
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "controller-1",
                "controller-2",
                "controller-3",
                "namesrv",
                "broker-1",
                "broker-2",
                "broker-3"
            ]
        );
        let b2 = &plan.file.processes[5];
        assert_eq!(b2.role, Kind::Broker);
        assert_eq!(
            b2.argv,
            [
                "/bin/rocketraft",
                "--log",
                "warn",
                "--threads",
                "2",
                "broker",
                "--config",
                "/d/broker-2/broker.toml",
                "--metrics-listen",
                "127.0.0.1:30052"
            ]
        );
        assert_eq!(b2.stderr_log, PathBuf::from("/d/broker-2/stderr.log"));
        assert_eq!(b2.data_dir, PathBuf::from("/d/broker-2/store"));
        assert_eq!(
            b2.ports,
            Ports {
                remoting: 30022,
                raft: None,
                ha: Some(30023),
                metrics: Some(30052),
                console: None,
            }
        );
        let ns = &plan.file.processes[3];
        assert_eq!(
            &ns.argv[5..],
            [
                "namesrv",
                "--config",
                "/d/namesrv/namesrv.toml",
                "--metrics-listen",
                "127.0.0.1:30040",
                "--console-listen",
                "127.0.0.1:30061",
                "--console-controller",
                "127.0.0.1:30000,127.0.0.1:30002,127.0.0.1:30004"
            ]
        );

        let dir = tempfile::tempdir().expect("tempdir");
        assert!(ClusterFile::load(dir.path())
            .expect("no file is fine")
            .is_none());
        assert!(ClusterFile::load_existing(dir.path()).is_err());
        plan.file.save(dir.path()).expect("save");
        let back = ClusterFile::load(dir.path())
            .expect("load")
            .expect("present");
        assert_eq!(back, plan.file);
        let text = std::fs::read_to_string(dir.path().join(CLUSTER_FILE)).expect("read");
        assert!(text.contains("\"role\": \"controller\""), "{text}");
        std::fs::write(dir.path().join(CLUSTER_FILE), "{").expect("write");
        assert!(ClusterFile::load(dir.path()).is_err());
    }

    #[test]
    fn sets_are_named_like_rocketmq_and_each_broker_joins_its_own() {
        let args = up_args(&[
            "--sets",
            "2",
            "--replicas",
            "2",
            "--min-in-sync-replicas",
            "2",
        ]);
        let l = PortLayout::fixed_sets(9876, 30000, 1, 2, 2).expect("layout");
        let plan = plan(
            &args.spec,
            &l,
            Path::new("/d"),
            "/bin/rocketraft",
            &Inherited::default(),
            Secrets::default(),
        )
        .expect("plan");
        let brokers: Vec<(&str, Option<&str>)> = plan
            .file
            .processes
            .iter()
            .filter(|p| p.role == Kind::Broker)
            .map(|p| (p.name.as_str(), p.broker_name.as_deref()))
            .collect();
        assert_eq!(
            brokers,
            [
                ("broker-a-1", Some("broker-a")),
                ("broker-a-2", Some("broker-a")),
                ("broker-b-1", Some("broker-b")),
                ("broker-b-2", Some("broker-b")),
            ]
        );
        for p in plan
            .processes
            .iter()
            .filter(|p| p.record.role == Kind::Broker)
        {
            let text = p.config_text.as_deref().expect("config");
            let set = p.record.broker_name.as_deref().expect("set");
            assert!(
                text.contains(&format!("broker_name = \"{set}\"")),
                "{}: {text}",
                p.record.name
            );
        }
        let sets: Vec<(String, usize)> = plan
            .file
            .broker_sets()
            .into_iter()
            .map(|(n, m)| (n, m.len()))
            .collect();
        assert_eq!(
            sets,
            [("broker-a".to_string(), 2), ("broker-b".to_string(), 2)]
        );
        // --broker-name names one set only; min in-sync counts a set's replicas.
        let named = up_args(&["--sets", "2", "--broker-name", "x"]);
        let e = plan_err(&named.spec, &l);
        assert!(e.contains("--broker-name x"), "{e}");
        let too_many = up_args(&[
            "--sets",
            "2",
            "--replicas",
            "2",
            "--min-in-sync-replicas",
            "3",
        ]);
        let e = plan_err(&too_many.spec, &l);
        assert!(e.contains("1..=2"), "{e}");
    }

    fn plan_err(spec: &ClusterSpec, l: &PortLayout) -> String {
        let e = plan(
            spec,
            l,
            Path::new("/d"),
            "/x",
            &Inherited::default(),
            Secrets::default(),
        )
        .expect_err("refused");
        format!("{e:#}")
    }

    #[test]
    fn with_auth_the_console_reads_the_credentials_file_named_on_its_command_line() {
        let args = up_args(&["--auth"]);
        let auth = super::super::auth::ClusterAuth::generate().expect("auth");
        let l = PortLayout::fixed(9876, 30000, 1, 1).expect("layout");
        let plan = plan(
            &args.spec,
            &l,
            Path::new("/d"),
            "/bin/rocketraft",
            &Inherited {
                log: String::new(),
                log_format: crate::LogFormat::Text,
                threads: None,
            },
            Secrets {
                cluster: None,
                auth: Some(&auth),
            },
        )
        .expect("plan");
        let ns = plan
            .file
            .processes
            .iter()
            .find(|p| p.role == Kind::Namesrv)
            .expect("a NameServer");
        let at = ns
            .argv
            .iter()
            .position(|a| a == "--console-credentials-file")
            .expect("the console gets the credentials file");
        assert_eq!(ns.argv[at + 1], "/d/admin-credentials");
        for p in &plan.file.processes {
            assert!(
                !p.argv.iter().any(|a| a.contains(&auth.admin.secret_key)),
                "{}: the secret on a command line",
                p.name
            );
        }
    }

    #[test]
    fn restart_keeps_ports_and_configs_and_refreshes_command_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let args = up_args(&[]);
        let l = PortLayout::auto(None, 1, 2).expect("layout");
        let old = Inherited {
            log: "debug".to_string(),
            log_format: crate::LogFormat::Text,
            threads: None,
        };
        let mut file = plan(
            &args.spec,
            &l,
            root,
            "/old/rocketraft",
            &old,
            Secrets::default(),
        )
        .expect("plan")
        .file;
        for (i, p) in file.processes.iter_mut().enumerate() {
            p.pid = 1000 + i as u32;
            p.stopped = true;
        }
        // The config files must still be there.
        let missing = restart_plan(file.clone(), root, "/new/rocketraft", &old);
        assert!(missing.is_err());
        for p in &file.processes {
            if let Some(config) = &p.config {
                std::fs::create_dir_all(config.parent().expect("parent")).expect("mkdir");
                std::fs::write(config, "").expect("write");
            }
        }
        let new = Inherited {
            log: "warn".to_string(),
            log_format: crate::LogFormat::Text,
            threads: Some(1),
        };
        let again = restart_plan(file.clone(), root, "/new/rocketraft", &new).expect("restart");
        assert_eq!(again.processes.len(), 4);
        for (before, after) in file.processes.iter().zip(&again.processes) {
            assert_eq!(before.ports, after.ports);
            assert_eq!(before.config, after.config);
            assert_eq!(after.pid, 0);
            assert!(!after.stopped);
            assert_eq!(
                &after.argv[..5],
                ["/new/rocketraft", "--log", "warn", "--threads", "1"]
            );
            assert_eq!(after.argv[5..], before.argv[3..], "same subcommand");
        }
        assert!(restart_plan(file, Path::new("/elsewhere"), "/x", &new).is_err());
    }
}
