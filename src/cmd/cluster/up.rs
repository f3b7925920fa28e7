//! `rocketraft cluster up`: start a new cluster, or restart a stopped one as recorded.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use rocketraft_common::trust::ClusterSecret;

use super::auth::{self, ClusterAuth};
use super::config::{path_string, Secrets};
use super::file::{ClusterFile, CLUSTER_FILE};
use super::plan::{plan, restart_plan};
use super::process::{running, stop_all, STOP_GRACE};
use super::readiness::Starter;
use super::{check_port_free, Inherited, UpArgs};

pub(super) async fn up(args: UpArgs, inherited: Inherited) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create the cluster directory {}", args.dir.display()))?;
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", args.dir.display()))?;
    let exe = std::env::current_exe().context("cannot find this binary to start the processes")?;
    let exe = path_string(&exe)?;
    let file = match ClusterFile::load(&dir)? {
        Some(existing) => prepare_restart(existing, &args, &dir, &exe, &inherited)?,
        None => prepare_new(&args, &dir, &exe, &inherited)?,
    };
    let count = file.processes.len();
    let mut starter = Starter {
        dir: dir.clone(),
        file,
        children: (0..count).map(|_| None).collect(),
    };
    starter.file.save(&dir)?;
    let result = starter
        .run(args.wait_for, Duration::from_secs(args.timeout_secs))
        .await;
    if let Err(e) = result {
        return Err(give_up(&mut starter, e).await);
    }
    let sets: Vec<String> = starter
        .file
        .broker_sets()
        .iter()
        .map(|(name, members)| format!("{name} with {} replicas", members.len()))
        .collect();
    println!(
        "rocketraft cluster is up: NameServer {} ({} controllers at {}, broker set{} {}; {} in {})",
        starter.file.namesrv_addr,
        starter.file.controller_addrs.len(),
        starter.file.controller_addrs.join(";"),
        if sets.len() == 1 { "" } else { "s" },
        sets.join(", "),
        CLUSTER_FILE,
        dir.display()
    );
    if auth::credentials_path(&dir).is_file() {
        println!("{}", auth::usage(&dir, &starter.file.namesrv_addr));
    }
    Ok(())
}

/// The file of a stopped cluster in `dir`, ready to start again: refused while any of its
/// processes runs, when options were given, or when a recorded port is taken.
fn prepare_restart(
    existing: ClusterFile,
    args: &UpArgs,
    dir: &Path,
    exe: &str,
    inherited: &Inherited,
) -> anyhow::Result<ClusterFile> {
    let alive = running(&existing);
    if !alive.is_empty() {
        bail!(
            "the cluster in {} is already up ({}); run `rocketraft cluster down --dir {}` first",
            dir.display(),
            alive.join(", "),
            dir.display()
        );
    }
    let given = args.spec.given();
    if !given.is_empty() {
        bail!(
            "{} holds a stopped cluster, which restarts with its recorded ports and config files; drop {} (edit the TOML files under {} to change settings), or remove {} to start afresh",
            dir.display(),
            given.join(", "),
            dir.display(),
            dir.display()
        );
    }
    let file = restart_plan(existing, dir, exe, inherited)?;
    for p in &file.processes {
        let check = |port: u16, what: &str| {
            check_port_free(
                port,
                &format!("{} {what}", p.name),
                "stop what uses it; the cluster's ports are recorded in cluster.json",
            )
        };
        check(p.ports.remoting, "Remoting")?;
        if let Some(port) = p.ports.raft {
            check(port, "Raft")?;
        }
        if let Some(port) = p.ports.ha {
            check(port, "HA")?;
        }
    }
    println!(
        "restarting the cluster recorded in {}",
        ClusterFile::path(dir).display()
    );
    Ok(file)
}

/// The file of a new cluster in `dir`, its directories and config files written.
fn prepare_new(
    args: &UpArgs,
    dir: &Path,
    exe: &str,
    inherited: &Inherited,
) -> anyhow::Result<ClusterFile> {
    let layout = args.spec.layout()?;
    let secret = (!args.spec.no_cluster_secret).then(ClusterSecret::generate);
    let cluster_auth = args.spec.auth.then(ClusterAuth::generate).transpose()?;
    let secrets = Secrets {
        cluster: secret.as_ref(),
        auth: cluster_auth.as_ref(),
    };
    let plan = plan(&args.spec, &layout, dir, exe, inherited, secrets)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if let Some(cluster_auth) = &cluster_auth {
        write_private(&auth::credentials_path(dir), &cluster_auth.file_text(dir))?;
    }
    if let Some(secret) = &secret {
        let path = dir.join(SECRET_FILE);
        write_private(&path, secret.expose())?;
        println!(
            "cluster secret in {} (admin commands that change the controllers take --cluster-secret-file {})",
            path.display(),
            path.display()
        );
    }
    for p in &plan.processes {
        let home = dir.join(&p.record.name);
        std::fs::create_dir_all(&home)
            .with_context(|| format!("cannot create {}", home.display()))?;
        if let (Some(path), Some(text)) = (&p.record.config, &p.config_text) {
            write_private(path, text)?;
        }
    }
    Ok(plan.file)
}

/// Where a new cluster keeps its secret, for the admin CLI.
pub const SECRET_FILE: &str = "cluster-secret";

/// Writes `text` to `path` readable by its owner only (config files hold the cluster secret).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// After a failed start: stops what was started, records it, and says what to do next.
async fn give_up(starter: &mut Starter, e: anyhow::Error) -> anyhow::Error {
    let children = &mut starter.children;
    let stopped = stop_all(&mut starter.file, STOP_GRACE, &mut || {
        Starter::reap(children)
    })
    .await;
    Starter::reap(&mut starter.children);
    if let Err(save) = starter.file.save(&starter.dir) {
        tracing::warn!(error = %save, "cannot record the stopped processes");
    }
    let names: Vec<String> = stopped.iter().map(|(n, _, _)| n.clone()).collect();
    anyhow::anyhow!(
        "{e:#}\ncluster up in {} failed; stopped what it had started: {}. The next `cluster up --dir {}` restarts it as recorded; remove the directory to start afresh with other options",
        starter.dir.display(),
        if names.is_empty() {
            "nothing was running".to_string()
        } else {
            names.join(", ")
        },
        starter.dir.display()
    )
}
