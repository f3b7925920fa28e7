//! Picking free loopback ports for a server that a test, a benchmark or `rocketraft cluster`
//! starts a moment later.
//!
//! Binding port 0 and closing the socket again hands out a port of the kernel's ephemeral range
//! (`net.ipv4.ip_local_port_range`, 32768-60999 by default). The same range serves every outgoing
//! connection of the machine, so between the pick and the server's own bind another process can
//! take the port for a client socket and the server fails with `AddrInUse`. Ports are therefore
//! picked below the ephemeral range, where the kernel never assigns a port on its own; a port
//! handed out once is not handed out again by this process, and the start of the search is
//! spread so that concurrent processes rarely probe the same ports.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The lowest port picked.
const LOWEST: u16 = 20_000;
/// Ports from here on are left alone even when the ephemeral range starts higher: tests use
/// `31000 + id` as addresses where nobody listens.
const HIGHEST_EXCLUSIVE: u16 = 31_000;
/// Below this many candidate ports the search falls back to the kernel's choice.
const MIN_CANDIDATES: u16 = 1_000;

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static HANDED: std::sync::OnceLock<Mutex<HashSet<u16>>> = std::sync::OnceLock::new();
    HANDED.get_or_init(|| Mutex::new(HashSet::new()))
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A pseudo-random start for the search, different between processes and between calls.
fn spread() -> u64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ CALLS
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A loopback TCP port that is free now, outside the ephemeral range, and not handed out before
/// by this process.
pub fn free_loopback_port() -> std::io::Result<u16> {
    let high = ephemeral_low().min(HIGHEST_EXCLUSIVE);
    let mut handed = handed_out()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if high < LOWEST.saturating_add(MIN_CANDIDATES) {
        // An unusual ephemeral range leaves no room below it: take the kernel's choice.
        loop {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
                .local_addr()?
                .port();
            if handed.insert(port) {
                return Ok(port);
            }
        }
    }
    let span = u64::from(high - LOWEST);
    let start = spread() % span;
    for step in 0..span {
        let port = LOWEST + ((start + step) % span) as u16;
        if handed.contains(&port) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            handed.insert(port);
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no free loopback port in {LOWEST}..{high}"),
    ))
}

/// `n` distinct free loopback ports (see [`free_loopback_port`]).
pub fn free_loopback_ports(n: usize) -> std::io::Result<Vec<u16>> {
    (0..n).map(|_| free_loopback_port()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports = free_loopback_ports(50).expect("ports");
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        let low = ephemeral_low();
        for p in ports {
            if low >= LOWEST + MIN_CANDIDATES {
                assert!((LOWEST..low.min(HIGHEST_EXCLUSIVE)).contains(&p), "{p}");
            }
            TcpListener::bind((Ipv4Addr::LOCALHOST, p)).expect("the picked port binds");
        }
    }

    #[test]
    fn a_bound_port_is_skipped() {
        let p = free_loopback_port().expect("port");
        let _held = TcpListener::bind((Ipv4Addr::LOCALHOST, p)).expect("bind");
        for _ in 0..20 {
            assert_ne!(free_loopback_port().expect("port"), p);
        }
    }
}
