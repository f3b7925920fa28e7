//! The ports of a cluster: the documented fixed layout from `--base-port`, or free loopback
//! ports picked at once (`--ports auto`).

use std::net::TcpListener;

use anyhow::{bail, Context};

/// Ports reserved per role in the fixed layout: two per member, so ten members at most.
const SLOTS_PER_ROLE: u16 = 10;
/// First port offset (from --base-port) of the brokers in the fixed layout.
const BROKER_PORT_OFFSET: u16 = 2 * SLOTS_PER_ROLE;
/// First port offset of the metrics endpoints in the fixed layout: the NameServer's, then one
/// per controller slot, then one per broker slot.
const METRICS_PORT_OFFSET: u16 = 2 * BROKER_PORT_OFFSET;
/// Offset of the web console (served by the NameServer process) in the fixed layout.
const CONSOLE_PORT_OFFSET: u16 = METRICS_PORT_OFFSET + 1 + 2 * SLOTS_PER_ROLE;
/// Ports the fixed layout spans from --base-port.
const LAYOUT_SPAN: u16 = CONSOLE_PORT_OFFSET + 1;

pub(super) fn check_port_free(port: u16, what: &str, fix: &str) -> anyhow::Result<()> {
    TcpListener::bind(("127.0.0.1", port))
        .map(drop)
        .with_context(|| format!("port {port} ({what}) is in use: {fix}"))
}

/// Every port of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortLayout {
    pub namesrv: u16,
    /// (Remoting, Raft) per controller, node id = index + 1.
    pub controllers: Vec<(u16, u16)>,
    /// (Remoting, HA) per broker replica, set after set: set `s` (0-based) holds
    /// `brokers[s * replicas..(s + 1) * replicas]`.
    pub brokers: Vec<(u16, u16)>,
    /// Broker sets, and replicas in each.
    pub sets: u16,
    pub replicas: u16,
    /// The metrics endpoints (`/metrics`): the NameServer's, then per controller, then per
    /// broker, in the order above.
    pub namesrv_metrics: u16,
    pub controller_metrics: Vec<u16>,
    pub broker_metrics: Vec<u16>,
    /// The web console, served by the NameServer process.
    pub console: u16,
    /// NameServers 2.. (`--namesrvs`): (Remoting, metrics) each. Every broker registers with
    /// every NameServer; the console is served by the first.
    pub more_namesrvs: Vec<(u16, u16)>,
}

/// Most NameServers a cluster may have.
pub(super) const MAX_NAMESRVS: u16 = 5;

/// Most broker sets a cluster may have (`broker-a` .. `broker-z`).
pub(super) const MAX_SETS: u16 = 26;

fn check_counts(controllers: u16, sets: u16, replicas: u16) -> anyhow::Result<()> {
    if !(1..=SLOTS_PER_ROLE).contains(&controllers) {
        bail!("--controllers {controllers}: use 1..={SLOTS_PER_ROLE} (3 tolerates one failure)");
    }
    if !(1..=SLOTS_PER_ROLE).contains(&replicas) {
        bail!("--replicas {replicas}: use 1..={SLOTS_PER_ROLE}");
    }
    if !(1..=MAX_SETS).contains(&sets) {
        bail!("--sets {sets}: use 1..={MAX_SETS} (broker-a .. broker-z)");
    }
    Ok(())
}

impl PortLayout {
    /// The documented fixed layout from `base`, one broker set.
    #[cfg(test)]
    pub fn fixed(
        namesrv: u16,
        base: u16,
        controllers: u16,
        replicas: u16,
    ) -> anyhow::Result<PortLayout> {
        Self::fixed_sets(namesrv, base, controllers, 1, replicas)
    }

    /// The documented fixed layout from `base` with `sets` broker sets of `replicas` each: the
    /// brokers of every set share the ten broker slots, set after set.
    pub fn fixed_sets(
        namesrv: u16,
        base: u16,
        controllers: u16,
        sets: u16,
        replicas: u16,
    ) -> anyhow::Result<PortLayout> {
        check_counts(controllers, sets, replicas)?;
        let brokers = u32::from(sets) * u32::from(replicas);
        if brokers > u32::from(SLOTS_PER_ROLE) {
            bail!(
                "--sets {sets} --replicas {replicas}: {brokers} brokers, the fixed port layout has room for {SLOTS_PER_ROLE}; use --ports auto, or fewer sets or replicas"
            );
        }
        let brokers = sets * replicas;
        if base == 0 || u32::from(base) + u32::from(LAYOUT_SPAN) > u32::from(u16::MAX) + 1 {
            bail!(
                "--base-port {base}: the layout needs {LAYOUT_SPAN} ports from it below 65536; pick e.g. 30000"
            );
        }
        if namesrv == 0 {
            bail!("--namesrv-port 0: give a port, or use --ports auto");
        }
        let last = u32::from(base) + u32::from(LAYOUT_SPAN) - 1;
        if (u32::from(base)..=last).contains(&u32::from(namesrv)) {
            bail!(
                "--namesrv-port {namesrv} lies inside the layout {base}..={last}; move --base-port or --namesrv-port"
            );
        }
        let pair = |offset: u16, i: u16| (base + offset + 2 * i, base + offset + 2 * i + 1);
        let metrics = base + METRICS_PORT_OFFSET;
        Ok(PortLayout {
            namesrv,
            controllers: (0..controllers).map(|i| pair(0, i)).collect(),
            brokers: (0..brokers).map(|i| pair(BROKER_PORT_OFFSET, i)).collect(),
            sets,
            replicas,
            namesrv_metrics: metrics,
            controller_metrics: (0..controllers).map(|i| metrics + 1 + i).collect(),
            broker_metrics: (0..brokers)
                .map(|i| metrics + 1 + SLOTS_PER_ROLE + i)
                .collect(),
            console: base + CONSOLE_PORT_OFFSET,
            more_namesrvs: Vec::new(),
        })
    }

    /// Free loopback ports below the kernel's ephemeral range (see
    /// [`rocketraft_common::net::free_loopback_port`]), none repeated.
    #[cfg(test)]
    pub fn auto(namesrv: Option<u16>, controllers: u16, replicas: u16) -> anyhow::Result<Self> {
        Self::auto_sets(namesrv, controllers, 1, replicas)
    }

    /// Free loopback ports for `sets` broker sets of `replicas` each.
    pub fn auto_sets(
        namesrv: Option<u16>,
        controllers: u16,
        sets: u16,
        replicas: u16,
    ) -> anyhow::Result<Self> {
        check_counts(controllers, sets, replicas)?;
        let brokers = sets * replicas;
        let wanted = 3 * usize::from(controllers) + 3 * usize::from(brokers) + 3;
        let mut ports = Vec::with_capacity(wanted);
        while ports.len() < wanted {
            let port = rocketraft_common::net::free_loopback_port()
                .context("cannot find free loopback ports")?;
            if Some(port) != namesrv {
                ports.push(port);
            }
        }
        let mut next = ports.into_iter();
        let mut take = || next.next().context("ran out of picked ports");
        let namesrv = match namesrv {
            Some(p) => p,
            None => take()?,
        };
        let mut layout = PortLayout {
            namesrv,
            controllers: Vec::new(),
            brokers: Vec::new(),
            sets,
            replicas,
            namesrv_metrics: take()?,
            controller_metrics: Vec::new(),
            broker_metrics: Vec::new(),
            console: take()?,
            more_namesrvs: Vec::new(),
        };
        for _ in 0..controllers {
            layout.controllers.push((take()?, take()?));
            layout.controller_metrics.push(take()?);
        }
        for _ in 0..brokers {
            layout.brokers.push((take()?, take()?));
            layout.broker_metrics.push(take()?);
        }
        Ok(layout)
    }

    /// With `count` NameServers in all: the ports of NameServers 2..=count. In the fixed layout
    /// from `base` they follow the console (Remoting, metrics, two ports each); otherwise free
    /// loopback ports picked now.
    pub fn with_namesrvs(mut self, count: u16, fixed_base: Option<u16>) -> anyhow::Result<Self> {
        if !(1..=MAX_NAMESRVS).contains(&count) {
            bail!("--namesrvs {count}: use 1..={MAX_NAMESRVS} (2 survives the loss of one)");
        }
        let extra = count - 1;
        match fixed_base {
            Some(base) => {
                let first = u32::from(base) + u32::from(LAYOUT_SPAN);
                let last = first + 2 * u32::from(extra);
                if extra > 0 && last > u32::from(u16::MAX) + 1 {
                    bail!("--base-port {base}: {count} NameServers need ports up to {last}, past 65535; pick a lower --base-port");
                }
                if extra > 0 && (first..last).contains(&u32::from(self.namesrv)) {
                    bail!("--namesrv-port {} lies among the extra NameServers' ports {first}..{last}; move --base-port or --namesrv-port", self.namesrv);
                }
                self.more_namesrvs = (0..u32::from(extra))
                    .map(|i| ((first + 2 * i) as u16, (first + 2 * i + 1) as u16))
                    .collect();
            }
            None => {
                let mut taken: Vec<u16> = self.labelled().iter().map(|(_, p)| *p).collect();
                let mut pick = || -> anyhow::Result<u16> {
                    loop {
                        let port = rocketraft_common::net::free_loopback_port()
                            .context("cannot find free loopback ports")?;
                        if !taken.contains(&port) {
                            taken.push(port);
                            return Ok(port);
                        }
                    }
                };
                self.more_namesrvs = (0..extra)
                    .map(|_| Ok((pick()?, pick()?)))
                    .collect::<anyhow::Result<_>>()?;
            }
        }
        Ok(self)
    }

    /// Every NameServer's Remoting address, `;`-separated (RocketMQ's `namesrvAddr`).
    pub fn namesrv_addrs(&self) -> String {
        std::iter::once(self.namesrv)
            .chain(self.more_namesrvs.iter().map(|(r, _)| *r))
            .map(loopback)
            .collect::<Vec<_>>()
            .join(";")
    }

    /// The broker set (0-based) of broker `i` (an index into `brokers`).
    pub(super) fn set_of(&self, i: usize) -> usize {
        i / usize::from(self.replicas.max(1))
    }

    /// The process name (and directory) of broker `i`: `broker-1`.. with one set, else
    /// `broker-a-1`, `broker-a-2`, `broker-b-1`...
    pub(super) fn broker_process(&self, i: usize) -> String {
        let replica = i % usize::from(self.replicas.max(1)) + 1;
        if self.sets <= 1 {
            format!("broker-{replica}")
        } else {
            format!("{}-{replica}", set_name(self.set_of(i)))
        }
    }

    /// (what, port) for every port, for messages.
    pub(super) fn labelled(&self) -> Vec<(String, u16)> {
        let mut out = vec![
            ("namesrv Remoting".to_string(), self.namesrv),
            ("namesrv metrics".to_string(), self.namesrv_metrics),
            ("namesrv console".to_string(), self.console),
        ];
        for (i, (r, raft)) in self.controllers.iter().enumerate() {
            out.push((format!("controller-{} Remoting", i + 1), *r));
            out.push((format!("controller-{} Raft", i + 1), *raft));
        }
        for (i, m) in self.controller_metrics.iter().enumerate() {
            out.push((format!("controller-{} metrics", i + 1), *m));
        }
        for (i, (r, ha)) in self.brokers.iter().enumerate() {
            out.push((format!("{} Remoting", self.broker_process(i)), *r));
            out.push((format!("{} HA", self.broker_process(i)), *ha));
        }
        for (i, m) in self.broker_metrics.iter().enumerate() {
            out.push((format!("{} metrics", self.broker_process(i)), *m));
        }
        for (i, (r, m)) in self.more_namesrvs.iter().enumerate() {
            out.push((format!("namesrv-{} Remoting", i + 2), *r));
            out.push((format!("namesrv-{} metrics", i + 2), *m));
        }
        out
    }
}

/// RocketMQ's name of broker set `s` (0-based): `broker-a`, `broker-b`, ...
pub(super) fn set_name(s: usize) -> String {
    let letter = (b'a' + (s % 26) as u8) as char;
    format!("broker-{letter}")
}

pub(super) fn loopback(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_layout_is_the_documented_one() {
        let l = PortLayout::fixed(9876, 30000, 3, 3).expect("layout");
        assert_eq!(l.namesrv, 9876);
        assert_eq!(
            l.controllers,
            vec![(30000, 30001), (30002, 30003), (30004, 30005)]
        );
        assert_eq!(
            l.brokers,
            vec![(30020, 30021), (30022, 30023), (30024, 30025)]
        );
        assert_eq!(l.namesrv_metrics, 30040);
        assert_eq!(l.controller_metrics, vec![30041, 30042, 30043]);
        assert_eq!(l.broker_metrics, vec![30051, 30052, 30053]);
        let l = PortLayout::fixed(9876, 40000, 10, 10).expect("layout");
        assert_eq!(l.controllers[9], (40018, 40019));
        assert_eq!(l.brokers[9], (40038, 40039));
        assert_eq!(l.broker_metrics[9], 40060);
        let mut all: Vec<u16> = l.labelled().iter().map(|(_, p)| *p).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(l.console, 40061);
        assert_eq!(all.len(), 63, "no port is used twice");
    }

    #[test]
    fn fixed_layout_rejects_bad_input() {
        assert!(PortLayout::fixed(9876, 30000, 0, 3).is_err());
        assert!(PortLayout::fixed(9876, 30000, 3, 11).is_err());
        assert!(PortLayout::fixed(9876, 65500, 3, 3).is_err());
        assert!(PortLayout::fixed(9876, 0, 3, 3).is_err());
        assert!(PortLayout::fixed(30010, 30000, 3, 3).is_err());
        assert!(PortLayout::fixed(9876, 65474, 3, 3).is_ok());
        assert!(PortLayout::fixed(9876, 65475, 3, 3).is_err());
        // Sets share the ten broker slots.
        let l = PortLayout::fixed_sets(9876, 30000, 3, 2, 5).expect("layout");
        assert_eq!(l.brokers.len(), 10);
        assert_eq!(l.brokers[5], (30030, 30031));
        assert_eq!(l.broker_metrics[9], 30060);
        let e = PortLayout::fixed_sets(9876, 30000, 3, 4, 3).expect_err("12 brokers");
        assert!(e.to_string().contains("--ports auto"), "{e}");
        assert!(PortLayout::fixed_sets(9876, 30000, 3, 0, 1).is_err());
        assert!(PortLayout::auto_sets(None, 1, 27, 1).is_err());
        let l = PortLayout::fixed_sets(9876, 30000, 1, 2, 2).expect("layout");
        let names: Vec<String> = (0..4).map(|i| l.broker_process(i)).collect();
        assert_eq!(
            names,
            ["broker-a-1", "broker-a-2", "broker-b-1", "broker-b-2"]
        );
        assert_eq!(
            PortLayout::fixed(9876, 30000, 1, 2)
                .expect("one")
                .broker_process(1),
            "broker-2"
        );
        let l = PortLayout::auto_sets(None, 1, 4, 3).expect("auto");
        assert_eq!((l.brokers.len(), l.broker_metrics.len()), (12, 12));
    }

    #[test]
    fn extra_namesrvs_follow_the_console_or_are_picked() {
        let l = PortLayout::fixed(9876, 30000, 3, 3)
            .expect("layout")
            .with_namesrvs(3, Some(30000))
            .expect("3 NameServers");
        assert_eq!(l.more_namesrvs, vec![(30062, 30063), (30064, 30065)]);
        assert_eq!(
            l.namesrv_addrs(),
            "127.0.0.1:9876;127.0.0.1:30062;127.0.0.1:30064"
        );
        let mut all: Vec<u16> = l.labelled().iter().map(|(_, p)| *p).collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "no port is used twice");
        assert!(PortLayout::fixed(9876, 30000, 3, 3)
            .expect("layout")
            .with_namesrvs(0, Some(30000))
            .is_err());
        assert!(PortLayout::fixed(9876, 30000, 3, 3)
            .expect("layout")
            .with_namesrvs(6, Some(30000))
            .is_err());
        let e = PortLayout::fixed(9876, 65474, 3, 3)
            .expect("layout")
            .with_namesrvs(2, Some(65474))
            .expect_err("past 65535");
        assert!(e.to_string().contains("--base-port"), "{e}");
        let e = PortLayout::fixed(30062, 30000, 3, 3)
            .expect("layout")
            .with_namesrvs(2, Some(30000))
            .expect_err("clash");
        assert!(e.to_string().contains("--namesrv-port"), "{e}");
        let l = PortLayout::auto(None, 1, 1)
            .expect("auto")
            .with_namesrvs(2, None)
            .expect("auto NameServers");
        let mut all: Vec<u16> = l.labelled().iter().map(|(_, p)| *p).collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "no port is used twice");
        assert_eq!(l.namesrv_addrs().split(';').count(), 2);
    }

    #[test]
    fn auto_layout_picks_distinct_ports() {
        let l = PortLayout::auto(None, 3, 3).expect("layout");
        let mut all: Vec<u16> = l.labelled().iter().map(|(_, p)| *p).collect();
        assert_eq!(all.len(), 21);
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 21);
        let l = PortLayout::auto(Some(9876), 1, 1).expect("layout");
        assert_eq!(l.namesrv, 9876);
        assert!(!l.controllers.iter().any(|(a, b)| *a == 9876 || *b == 9876));
    }
}
