//! The private network of a run: one bridge in its own network namespace, and one namespace per
//! process (node), each joined to the bridge by a veth pair and given a `10.77.0.x` address.
//! Faults are nftables rules inside the nodes' namespaces (table `inet jepsen`), so nothing of
//! the host's own network is touched.
//!
//! Namespace names are `rrj<pid>-<node>` (the harness's PID), the bridge's `rrj<pid>-br`:
//! [`clean_stale`] removes the namespaces of a harness that is no longer running (a crashed or
//! SIGKILLed run), after killing the processes still inside them.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// Prefix of every namespace a harness creates.
pub const PREFIX: &str = "rrj";
/// The nftables table the harness owns in each node namespace.
pub const TABLE: &str = "jepsen";

/// One node of the network.
#[derive(Debug, Clone)]
pub struct NetNode {
    pub name: String,
    pub ns: String,
    pub ip: Ipv4Addr,
}

/// The network of one run. Dropping it deletes every namespace it created.
#[derive(Debug)]
pub struct Network {
    pub bridge_ns: String,
    pub nodes: Vec<NetNode>,
    torn_down: bool,
}

/// Runs a command and fails with its stderr when it fails.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program} (is it installed?)"))?;
    if !output.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `nft -f -` inside namespace `ns` with `script` on stdin.
fn nft(ns: &str, script: &str) -> anyhow::Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run `ip netns exec ... nft`")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .context("cannot write the nft script")?;
    }
    let output = child.wait_with_output().context("nft did not finish")?;
    if !output.status.success() {
        bail!(
            "nft in {ns} failed ({}): {}\nscript:\n{script}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Makes sure `ip` works and `nft` is installed, installing nftables (and faketime, for clock
/// skew) with apt-get when missing.
pub fn ensure_tools() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the harness needs root (network namespaces, nftables): run it as root");
    }
    run("ip", &["netns", "list"]).context("`ip netns` does not work here")?;
    let missing: Vec<&str> = [("nft", "nftables"), ("faketime", "faketime")]
        .into_iter()
        .filter(|(tool, _)| !on_path(tool))
        .map(|(_, package)| package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    tracing::info!(packages = ?missing, "installing missing tools with apt-get");
    eprintln!("installing {} with apt-get", missing.join(" "));
    let install = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let mut args = vec!["install", "-y", "-qq"];
    args.extend(&missing);
    let installed = install(&args) || (install(&["update", "-qq"]) && install(&args));
    if !installed {
        bail!(
            "cannot install {} (apt-get install -y {} failed)",
            missing.join(" "),
            missing.join(" ")
        );
    }
    if !on_path("nft") {
        bail!("nft is still missing after installing nftables");
    }
    Ok(())
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false)
}

/// Why this machine cannot create network namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NetnsUnavailable {
    #[error("not root")]
    NotRoot,
    /// `ip netns add` of a probe namespace failed (its message, without the causes).
    #[error("{0}")]
    Probe(anyhow::Error),
}

/// Whether this machine can create network namespaces (root and a working `ip netns`).
pub fn netns_available() -> Result<(), NetnsUnavailable> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(NetnsUnavailable::NotRoot);
    }
    let probe = format!("{PREFIX}probe{}", std::process::id());
    run("ip", &["netns", "add", &probe]).map_err(NetnsUnavailable::Probe)?;
    let _ = run("ip", &["netns", "del", &probe]);
    Ok(())
}

/// The PID embedded in one of our namespace names.
fn owner_pid(ns: &str) -> Option<u32> {
    let rest = ns.strip_prefix(PREFIX)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() || !rest[digits.len()..].starts_with('-') {
        return None;
    }
    digits.parse().ok()
}

/// Is the harness that made a namespace still running? Any live process with its PID counts
/// (the harness also runs inside test binaries, whose command line is not `rocketraft-jepsen`):
/// a reused PID only keeps a stale namespace until a later run.
fn harness_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Our namespaces (by name), from `ip netns list`.
fn our_namespaces() -> anyhow::Result<Vec<String>> {
    let listing = run("ip", &["netns", "list"])?;
    Ok(listing
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| owner_pid(name).is_some())
        .map(str::to_string)
        .collect())
}

/// Removes the namespaces (and kills the processes inside them) of harness runs that are no
/// longer running. Returns the namespaces removed.
pub fn clean_stale() -> anyhow::Result<Vec<String>> {
    let mut removed = Vec::new();
    for ns in our_namespaces()? {
        let Some(pid) = owner_pid(&ns) else { continue };
        if pid == std::process::id() || harness_alive(pid) {
            continue;
        }
        kill_inside(&ns);
        match run("ip", &["netns", "del", &ns]) {
            Ok(_) => removed.push(ns),
            Err(e) => tracing::warn!(ns, error = %e, "cannot delete a stale namespace"),
        }
    }
    Ok(removed)
}

/// SIGKILLs every process inside namespace `ns` (only used on namespaces we created), except
/// this harness itself (whose threads live in the client namespace).
fn kill_inside(ns: &str) {
    let me = std::process::id() as i32;
    if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
        for pid in pids
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
            .filter(|pid| *pid != me)
        {
            tracing::info!(ns, pid, "killing a leftover process of a crashed run");
            // SAFETY: kill has no memory preconditions; the PID lives in our namespace.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

impl Network {
    /// Creates the bridge namespace and one namespace per name, node `i` at `10.77.0.{first_host + i}`.
    pub fn create(names: &[(&str, u8)]) -> anyhow::Result<Network> {
        let pid = std::process::id();
        let bridge_ns = format!("{PREFIX}{pid}-br");
        let mut network = Network {
            bridge_ns: bridge_ns.clone(),
            nodes: Vec::new(),
            torn_down: false,
        };
        run("ip", &["netns", "add", &bridge_ns])?;
        run("ip", &["-n", &bridge_ns, "link", "set", "lo", "up"])?;
        run(
            "ip",
            &["-n", &bridge_ns, "link", "add", "br0", "type", "bridge"],
        )?;
        run("ip", &["-n", &bridge_ns, "link", "set", "br0", "up"])?;
        for (i, (name, host)) in names.iter().enumerate() {
            let ns = format!("{PREFIX}{pid}-{name}");
            let ip = Ipv4Addr::new(10, 77, 0, *host);
            run("ip", &["netns", "add", &ns])?;
            network.nodes.push(NetNode {
                name: name.to_string(),
                ns: ns.clone(),
                ip,
            });
            let bridge_end = format!("vb{i}");
            let node_end = format!("vn{i}");
            run(
                "ip",
                &[
                    "-n",
                    &bridge_ns,
                    "link",
                    "add",
                    &bridge_end,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &node_end,
                ],
            )?;
            run(
                "ip",
                &["-n", &bridge_ns, "link", "set", &node_end, "netns", &ns],
            )?;
            run(
                "ip",
                &[
                    "-n",
                    &bridge_ns,
                    "link",
                    "set",
                    &bridge_end,
                    "master",
                    "br0",
                ],
            )?;
            run("ip", &["-n", &bridge_ns, "link", "set", &bridge_end, "up"])?;
            run("ip", &["-n", &ns, "link", "set", &node_end, "name", "eth0"])?;
            run(
                "ip",
                &["-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
            )?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            nft(&ns, &base_table())?;
        }
        Ok(network)
    }

    pub fn node(&self, name: &str) -> anyhow::Result<&NetNode> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .with_context(|| format!("no node {name} in the network"))
    }

    /// Node `name` drops every packet arriving from `from` (by IP).
    pub fn drop_from(&self, name: &str, from: &[&str]) -> anyhow::Result<()> {
        let node = self.node(name)?;
        let ips = from
            .iter()
            .map(|f| self.node(f).map(|n| n.ip.to_string()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if ips.is_empty() {
            return Ok(());
        }
        nft(
            &node.ns,
            &format!(
                "add rule inet {TABLE} input ip saddr {{ {} }} drop\n",
                ips.join(", ")
            ),
        )
    }

    /// Node `name` drops `percent` % of the packets it receives and sends (nft `numgen random`).
    pub fn lossy(&self, name: &str, percent: u8) -> anyhow::Result<()> {
        let node = self.node(name)?;
        let percent = percent.min(100);
        nft(
            &node.ns,
            &format!(
                "add rule inet {TABLE} input ip saddr 10.77.0.0/24 numgen random mod 100 < {percent} drop\n\
                 add rule inet {TABLE} output ip daddr 10.77.0.0/24 numgen random mod 100 < {percent} drop\n"
            ),
        )
    }

    /// Runs an nft `script` in node `name`'s namespace (its rules go into table `inet jepsen`).
    pub fn add_rules(&self, name: &str, script: &str) -> anyhow::Result<()> {
        nft(&self.node(name)?.ns, script)
    }

    /// Removes every fault rule of node `name`.
    pub fn heal_node(&self, name: &str) -> anyhow::Result<()> {
        let node = self.node(name)?;
        nft(
            &node.ns,
            &format!("flush chain inet {TABLE} input\nflush chain inet {TABLE} output\n"),
        )
    }

    /// Removes every fault rule of every node.
    pub fn heal_all(&self) -> anyhow::Result<()> {
        let mut first_error = None;
        for node in &self.nodes {
            if let Err(e) = self.heal_node(&node.name) {
                tracing::warn!(node = node.name, error = %e, "cannot heal");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Kills whatever still runs inside our namespaces and deletes them (the bridge namespace
    /// last; deleting a namespace deletes its veth ends). Idempotent.
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        for node in &self.nodes {
            kill_inside(&node.ns);
            if let Err(e) = run("ip", &["netns", "del", &node.ns]) {
                tracing::warn!(ns = node.ns, error = %e, "cannot delete a namespace");
            }
        }
        kill_inside(&self.bridge_ns);
        if let Err(e) = run("ip", &["netns", "del", &self.bridge_ns]) {
            tracing::warn!(ns = self.bridge_ns, error = %e, "cannot delete the bridge namespace");
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn base_table() -> String {
    format!(
        "add table inet {TABLE}\n\
         add chain inet {TABLE} input {{ type filter hook input priority 0; policy accept; }}\n\
         add chain inet {TABLE} output {{ type filter hook output priority 0; policy accept; }}\n"
    )
}

/// Moves the calling thread into namespace `ns`. Threads it creates afterwards (a tokio runtime
/// built after this call) start there too, so every socket the harness opens is inside.
pub fn enter(ns: &str) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let path = format!("/var/run/netns/{ns}");
    let file = std::fs::File::open(&path).with_context(|| format!("cannot open {path}"))?;
    // SAFETY: setns on a valid namespace fd only changes this thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!("setns into {ns}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_carry_the_owner() {
        assert_eq!(owner_pid("rrj1234-c1"), Some(1234));
        assert_eq!(owner_pid("rrj1234-br"), Some(1234));
        assert_eq!(owner_pid("rrjx-c1"), None);
        assert_eq!(owner_pid("rrj1234"), None);
        assert_eq!(owner_pid("other-ns"), None);
    }

    #[test]
    fn the_base_table_has_both_hooks() {
        let t = base_table();
        assert!(t.contains("hook input"), "{t}");
        assert!(t.contains("hook output"), "{t}");
    }
}
