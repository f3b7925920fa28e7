//! Listen and advertised addresses, and the start-up check that an advertised address can be
//! reached by the peers a process is configured with.
//!
//! Every server port has two addresses: the one it binds (`listen`, often `0.0.0.0`) and the one
//! it tells others to connect to (the advertised address: RocketMQ's `brokerIP1` for a broker's
//! Remoting port, `brokerIP2` for its HA port, a Raft member's `advertise`, a proxy's
//! `advertised_host`). A wrong advertised address does not fail at start: it fails later and
//! elsewhere, when a client or a slave on another host is handed `127.0.0.1`. [`check`] catches
//! that at start:
//!
//! - an unspecified advertised IP (`0.0.0.0`, `::`) is refused: it is where a server listens,
//!   never where anyone can connect;
//! - a loopback advertised IP is refused when a configured peer (a NameServer, a controller, a
//!   Raft member) is on another host: that peer, and everyone it hands the address to, would
//!   connect to itself. The message names the key, the peer, and the address this host uses
//!   toward the peer as the likely fix;
//! - an advertised IP that no local interface holds is only a warning: behind NAT, a forwarded
//!   port or a Kubernetes Service that is exactly right.
//!
//! A peer is on this host when its IP is a loopback one (all of 127/8, `::1`) or one a local
//! interface holds (a socket can bind it). A peer given by a name that does not resolve at start
//! (DNS not ready yet) is left out of the check rather than refusing the start.
//!
//! The decision ([`check`]) is a pure function over what [`HostView`] says about the host, so
//! it is tested without touching the network; [`ThisHost`] answers for the real machine with
//! socket binds and unconnected UDP `connect`s (no packet is sent).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};

/// An address a server tells others to connect to, and the config key that sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised {
    /// The key an operator sets to change it, as the message should name it
    /// (`brokerIP1 (advertised_addr)`).
    pub key: String,
    /// The address advertised.
    pub addr: SocketAddr,
    /// Where the address came from when the key was not set (`taken from listen
    /// 0.0.0.0:10911`); `None` when the key set it.
    pub derived: Option<String>,
    /// The key that sets the IP the port binds, and that IP, when known: a port bound on a
    /// loopback IP only cannot be reached at an advertised IP of another interface.
    pub listen: Option<(String, IpAddr)>,
}

/// A configured peer: the key that names it and one of its addresses (`host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub key: String,
    pub addr: String,
}

impl Peer {
    pub fn new(key: impl Into<String>, addr: impl Into<String>) -> Peer {
        Peer {
            key: key.into(),
            addr: addr.into(),
        }
    }

    /// One peer per entry of a `;`- or `,`-separated list (`namesrvAddr`, `controllerAddr`).
    pub fn list(key: &str, list: &str) -> Vec<Peer> {
        list.split([';', ','])
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| Peer::new(key, a))
            .collect()
    }
}

/// What [`check`] needs to know about the host it runs on.
pub trait HostView {
    /// The IPs `addr` (`host:port`) resolves to; empty when it does not resolve.
    fn resolve(&self, addr: &str) -> Vec<IpAddr>;
    /// Whether a local interface holds `ip` (loopback IPs always count).
    fn is_local(&self, ip: IpAddr) -> bool;
    /// The local IP this host would send from toward `peer`, if it has a route.
    fn source_toward(&self, peer: IpAddr) -> Option<IpAddr>;
}

/// The machine this process runs on.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThisHost;

impl HostView for ThisHost {
    /// Blocking for names (a DNS lookup); IP literals resolve without one.
    fn resolve(&self, addr: &str) -> Vec<IpAddr> {
        match addr.to_socket_addrs() {
            Ok(addrs) => addrs.map(|a| a.ip()).collect(),
            Err(e) => {
                tracing::debug!(addr, error = %e, "peer address does not resolve; left out of the advertised-address check");
                Vec::new()
            }
        }
    }

    /// Asks the kernel for the interfaces' addresses (`getifaddrs`). A bind test would be
    /// fooled by `net.ipv4.ip_nonlocal_bind = 1`, which lets a socket bind any IP; when the
    /// interfaces cannot be listed the bind test is the fallback.
    fn is_local(&self, ip: IpAddr) -> bool {
        if ip.is_loopback() {
            return true;
        }
        match interface_ips() {
            Ok(ips) => ips.contains(&ip),
            Err(e) => {
                tracing::debug!(error = %e, "cannot list the interfaces' addresses; testing with a bind");
                UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
            }
        }
    }

    fn source_toward(&self, peer: IpAddr) -> Option<IpAddr> {
        let any: IpAddr = match peer {
            IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let socket = UdpSocket::bind(SocketAddr::new(any, 0)).ok()?;
        // A UDP connect only picks the route and the source address; nothing is sent.
        socket.connect(SocketAddr::new(peer, 9)).ok()?;
        let ip = socket.local_addr().ok()?.ip();
        (!ip.is_unspecified()).then_some(ip)
    }
}

/// The IPs the interfaces of this host hold (IPv4 and IPv6), from `getifaddrs(3)`.
pub fn interface_ips() -> std::io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list it allocates, freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut ips = Vec::new();
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed; its
        // `ifa_addr` is null or points at a sockaddr of the family it names.
        unsafe {
            let ifa = &*cursor;
            if !ifa.ifa_addr.is_null() {
                match i32::from((*ifa.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        ips.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            sin.sin_addr.s_addr,
                        ))));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        ips.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            cursor = ifa.ifa_next;
        }
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(ips)
}

/// Why an advertised address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `0.0.0.0` or `::`.
    Unspecified,
    /// A loopback IP while a peer is on another host.
    Loopback,
}

/// An advertised address the process refuses to start with; the text names the key, the
/// peer and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AddressError {
    pub refused: Refused,
    message: String,
}

/// Why an advertised address is accepted with a doubt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Doubt {
    /// No interface of this host holds the IP.
    NotLocal,
    /// An IP of another interface of this host while the port binds this loopback IP only:
    /// right when something forwards that IP's port to loopback (a TLS sidecar, a DNAT rule).
    LoopbackListen {
        listen_key: String,
        listen_ip: IpAddr,
    },
}

/// An advertised address accepted with a doubt, logged at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressWarning {
    pub key: String,
    pub addr: SocketAddr,
    pub doubt: Doubt,
}

impl fmt::Display for AddressWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (key, addr) = (&self.key, self.addr);
        match &self.doubt {
            Doubt::NotLocal => write!(
                f,
                "{key} is {addr}, an IP no interface of this host holds: right behind NAT, a \
                 forwarded port or a load balancer; otherwise peers cannot reach this server"
            ),
            Doubt::LoopbackListen {
                listen_key,
                listen_ip,
            } => {
                let ip = addr.ip();
                write!(
                    f,
                    "{key} is {addr}, but the port binds {listen_ip} only (loopback): right when \
                     something forwards {ip}'s port to it; otherwise nobody connects to it at \
                     {ip}: set {listen_key} to 0.0.0.0 or to {ip}"
                )
            }
        }
    }
}

/// Checks `advertised` against the `peers` (see the module documentation): `Ok(None)` when it
/// is fine, `Ok(Some(_))` when it should be logged as a warning, an error when the process must
/// not start.
pub fn check(
    host: &impl HostView,
    advertised: &Advertised,
    peers: &[Peer],
) -> Result<Option<AddressWarning>, AddressError> {
    let ip = advertised.addr.ip();
    let derived = advertised
        .derived
        .as_ref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default();
    // The peers on other hosts, with their IPs.
    let remote: Vec<(&Peer, Vec<IpAddr>)> = peers
        .iter()
        .map(|p| (p, host.resolve(&p.addr)))
        .filter(|(_, ips)| !ips.is_empty() && ips.iter().all(|ip| !host.is_local(*ip)))
        .collect();
    let suggestion = |toward: Option<&(&Peer, Vec<IpAddr>)>| -> String {
        toward
            .and_then(|(p, ips)| {
                let source = ips.iter().find_map(|ip| host.source_toward(*ip))?;
                Some(format!(" (this host reaches {} from {source})", p.addr))
            })
            .unwrap_or_default()
    };
    let key = &advertised.key;
    let addr = advertised.addr;
    if ip.is_unspecified() {
        let suggestion = suggestion(remote.first());
        return Err(AddressError {
            refused: Refused::Unspecified,
            message: format!(
                "{key} is {addr}{derived}: an unspecified IP is where a server listens, not an \
                 address anyone can connect to; set {key} to an IP of this host that its peers \
                 reach{suggestion}"
            ),
        });
    }
    if ip.is_loopback() {
        if let Some(first) = remote.first() {
            let (peer_key, peer) = (&first.0.key, &first.0.addr);
            let suggestion = suggestion(Some(first));
            return Err(AddressError {
                refused: Refused::Loopback,
                message: format!(
                    "{key} is {addr}{derived}, a loopback address, but {peer_key} names {peer} \
                     on another host, which cannot reach it there: set {key} to an IP of this \
                     host that {peer} reaches{suggestion}"
                ),
            });
        }
        return Ok(None);
    }
    if !host.is_local(ip) {
        return Ok(Some(AddressWarning {
            key: advertised.key.clone(),
            addr: advertised.addr,
            doubt: Doubt::NotLocal,
        }));
    }
    if let Some((listen_key, listen_ip)) = &advertised.listen {
        if listen_ip.is_loopback() {
            return Ok(Some(AddressWarning {
                key: advertised.key.clone(),
                addr: advertised.addr,
                doubt: Doubt::LoopbackListen {
                    listen_key: listen_key.clone(),
                    listen_ip: *listen_ip,
                },
            }));
        }
    }
    Ok(None)
}

/// [`check`] on this machine for every address of a process: logs the warnings, returns the
/// first refusal. Resolves peer names (blocking): call it off the async runtime.
pub fn check_all(advertised: &[Advertised], peers: &[Peer]) -> Result<(), AddressError> {
    for a in advertised {
        if let Some(warning) = check(&ThisHost, a, peers)? {
            tracing::warn!("{warning}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A host that holds `local` and reaches everything from `source`; names resolve by `dns`.
    struct FakeHost {
        local: Vec<IpAddr>,
        source: Option<IpAddr>,
        dns: BTreeMap<&'static str, IpAddr>,
    }

    impl HostView for FakeHost {
        fn resolve(&self, addr: &str) -> Vec<IpAddr> {
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            match host.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => self.dns.get(host).copied().into_iter().collect(),
            }
        }
        fn is_local(&self, ip: IpAddr) -> bool {
            ip.is_loopback() || self.local.contains(&ip)
        }
        fn source_toward(&self, _peer: IpAddr) -> Option<IpAddr> {
            self.source
        }
    }

    fn host() -> FakeHost {
        FakeHost {
            local: vec!["10.0.0.7".parse().expect("ip")],
            source: Some("10.0.0.7".parse().expect("ip")),
            dns: BTreeMap::from([("ns.remote", "10.0.0.1".parse().expect("ip"))]),
        }
    }

    fn advertised(addr: &str, derived: Option<&str>) -> Advertised {
        Advertised {
            key: "brokerIP1 (advertised_addr)".to_string(),
            addr: addr.parse().expect("addr"),
            derived: derived.map(str::to_string),
            listen: None,
        }
    }

    #[test]
    fn peers_come_from_either_separator() {
        assert_eq!(
            Peer::list("namesrvAddr", " a:1;b:2 ,c:3;"),
            vec![
                Peer::new("namesrvAddr", "a:1"),
                Peer::new("namesrvAddr", "b:2"),
                Peer::new("namesrvAddr", "c:3"),
            ]
        );
    }

    #[test]
    fn an_unspecified_address_is_refused_whatever_the_peers() {
        let err = check(
            &host(),
            &advertised("0.0.0.0:10911", None),
            &Peer::list("namesrvAddr", "127.0.0.1:9876"),
        )
        .expect_err("0.0.0.0 is never advertised");
        let text = err.to_string();
        assert!(
            text.starts_with("brokerIP1 (advertised_addr) is 0.0.0.0:10911: an unspecified IP"),
            "{text}"
        );
        assert_eq!(err.refused, Refused::Unspecified);
        // With a remote peer the message suggests the address toward it.
        let err = check(
            &host(),
            &advertised("[::]:10911", None),
            &Peer::list("namesrvAddr", "10.0.0.1:9876"),
        )
        .expect_err("refused");
        assert!(
            err.to_string()
                .ends_with("(this host reaches 10.0.0.1:9876 from 10.0.0.7)"),
            "{err}"
        );
    }

    #[test]
    fn loopback_is_refused_only_with_a_peer_on_another_host() {
        let a = advertised("127.0.0.1:10911", Some("taken from listen 0.0.0.0:10911"));
        // Every peer on this host: loopback is right (one-machine clusters).
        let local_peers = [
            Peer::new("namesrvAddr", "127.0.0.1:9876"),
            Peer::new("namesrvAddr", "127.0.0.5:9876"),
            Peer::new("controllerAddr", "10.0.0.7:9878"),
        ];
        assert_eq!(check(&host(), &a, &local_peers), Ok(None));
        assert_eq!(check(&host(), &a, &[]), Ok(None));
        // One NameServer elsewhere, named by a host name: refused, naming key, peer and fix.
        let mut peers = local_peers.to_vec();
        peers.push(Peer::new("namesrvAddr", "ns.remote:9876"));
        let err = check(&host(), &a, &peers).expect_err("loopback with a remote peer");
        assert_eq!(
            err.to_string(),
            "brokerIP1 (advertised_addr) is 127.0.0.1:10911 (taken from listen 0.0.0.0:10911), \
             a loopback address, but namesrvAddr names ns.remote:9876 on another host, which \
             cannot reach it there: set brokerIP1 (advertised_addr) to an IP of this host that \
             ns.remote:9876 reaches (this host reaches ns.remote:9876 from 10.0.0.7)"
        );
        // A name that does not resolve (yet) is left out, not refused.
        let unresolved = [Peer::new("namesrvAddr", "ns.later:9876")];
        assert_eq!(check(&host(), &a, &unresolved), Ok(None));
        // Without a route toward the peer there is no suggestion, still a refusal.
        let no_route = FakeHost {
            source: None,
            ..host()
        };
        let err = check(
            &no_route,
            &a,
            &[Peer::new("controllerAddr", "10.9.9.9:9878")],
        )
        .expect_err("refused");
        assert!(
            err.to_string().ends_with("that 10.9.9.9:9878 reaches"),
            "{err}"
        );
    }

    #[test]
    fn an_address_no_interface_holds_is_a_warning_and_a_local_one_is_fine() {
        let peers = Peer::list("namesrvAddr", "10.0.0.1:9876");
        assert_eq!(
            check(&host(), &advertised("10.0.0.7:10911", None), &peers),
            Ok(None)
        );
        let warning = check(&host(), &advertised("203.0.113.9:10911", None), &peers)
            .expect("accepted")
            .expect("with a warning");
        assert!(
            warning.to_string().starts_with(
                "brokerIP1 (advertised_addr) is 203.0.113.9:10911, an IP no interface"
            ),
            "{warning}"
        );
    }

    #[test]
    fn an_interface_ip_advertised_for_a_port_bound_on_loopback_is_a_warning() {
        let peers = Peer::list("namesrvAddr", "10.0.0.1:9876");
        let on = |listen: &str| Advertised {
            listen: Some(("listen".to_string(), listen.parse().expect("ip"))),
            ..advertised("10.0.0.7:10911", None)
        };
        // Something may forward 10.0.0.7's port to loopback (a sidecar): warned, not refused.
        let warning = check(&host(), &on("127.0.0.1"), &peers)
            .expect("a forwarded port is allowed")
            .expect("but warned about");
        assert!(matches!(warning.doubt, Doubt::LoopbackListen { .. }));
        assert_eq!(
            warning.to_string(),
            "brokerIP1 (advertised_addr) is 10.0.0.7:10911, but the port binds 127.0.0.1 only \
             (loopback): right when something forwards 10.0.0.7's port to it; otherwise nobody \
             connects to it at 10.0.0.7: set listen to 0.0.0.0 or to 10.0.0.7"
        );
        assert_eq!(check(&host(), &on("0.0.0.0"), &peers), Ok(None));
        assert_eq!(check(&host(), &on("10.0.0.7"), &peers), Ok(None));
        // An IP of no interface (NAT in front): the NAT warning, as without a listen IP.
        let nat = Advertised {
            listen: Some(("listen".to_string(), "127.0.0.1".parse().expect("ip"))),
            ..advertised("203.0.113.9:10911", None)
        };
        let warning = check(&host(), &nat, &peers)
            .expect("allowed")
            .expect("warned");
        assert_eq!(warning.doubt, Doubt::NotLocal);
    }

    #[test]
    fn this_host_knows_its_loopback_and_routes() {
        let h = ThisHost;
        assert!(h.is_local("127.0.0.1".parse().expect("ip")));
        assert!(h.is_local("127.0.0.9".parse().expect("ip")));
        // The interfaces are listed, not bind-tested: lo holds 127.0.0.1.
        let listed = interface_ips().expect("getifaddrs");
        assert!(
            listed.contains(&"127.0.0.1".parse().expect("ip")),
            "{listed:?}"
        );
        // TEST-NET-3 is never assigned to a host.
        assert!(!h.is_local("203.0.113.77".parse().expect("ip")));
        assert_eq!(
            h.resolve("127.0.0.3:9876"),
            vec!["127.0.0.3".parse::<IpAddr>().expect("ip")]
        );
        assert_eq!(
            h.source_toward("127.0.0.1".parse().expect("ip")),
            Some("127.0.0.1".parse().expect("ip"))
        );
    }
}
