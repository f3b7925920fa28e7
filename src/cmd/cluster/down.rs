//! `rocketraft cluster down`: stop every process of a cluster, brokers first.

use std::path::Path;

use anyhow::bail;

use super::file::ClusterFile;
use super::process::{running, stop_all, Stopped, STOP_GRACE};

pub(super) async fn down(dir: &Path) -> anyhow::Result<()> {
    let mut file = ClusterFile::load_existing(dir)?;
    let stopped = stop_all(&mut file, STOP_GRACE, &mut || {}).await;
    file.save(dir)?;
    if stopped.is_empty() {
        println!(
            "nothing to stop: no process of the cluster in {} is running",
            dir.display()
        );
        return Ok(());
    }
    for (name, pid, how) in &stopped {
        println!(
            "stopped {name} (pid {pid}){}",
            match how {
                Stopped::Term => "",
                Stopped::Kill => " with SIGKILL: it ignored SIGTERM for 15 s",
            }
        );
    }
    let still = running(&file);
    if !still.is_empty() {
        bail!(
            "still running after SIGKILL: {}; check them with `ps` (another user's process?)",
            still.join(", ")
        );
    }
    Ok(())
}
