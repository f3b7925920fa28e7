//! Latency without `tc netem` (missing from this kernel): a TCP relay per namespace.
//!
//! For each node whose outgoing traffic may be slowed, the harness runs a relay *inside that
//! node's namespace* (a thread that entered the namespace and runs its own single-threaded
//! tokio runtime, so every socket it creates lives there) listening on `127.0.0.1:RELAY_PORT`,
//! and installs an nftables `redirect` rule in the namespace's `nat output` hook: new TCP
//! connections from the node to the selected ports of `10.77.0.0/24` land on the relay, which
//! reads their original destination (`SO_ORIGINAL_DST`), connects there itself (its sockets
//! carry the mark [`RELAY_MARK`], which the rule exempts, so they are not redirected again),
//! and copies both directions. The peer still sees the node's own IP as the source.
//!
//! The relays are in place from the start of the run and pass bytes through at once; the
//! `latency` nemesis raises a relay's delay for its window ([`RelayControl::set_delay`]) and
//! sets it back to zero at the end. A delayed chunk is held for the delay, in order (a queue
//! per direction, not a throttle: throughput stays, every byte arrives late). Fault rules
//! (`input`/`output` chains) and the relay rule (`nat_out` chain) are separate, so healing a
//! partition leaves the relays alone.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Where every relay listens, on the loopback of its namespace.
pub const RELAY_PORT: u16 = 23_456;
/// The mark of the relay's own outgoing sockets (exempt from the redirect).
pub const RELAY_MARK: u32 = 0x4a52;
/// Chunks in flight per direction before the reader waits (back-pressure).
const QUEUE: usize = 1024;

/// The nft script that sends the node's new TCP connections to `ports` of the cluster network
/// through the relay.
pub fn redirect_rules(ports: &[u16]) -> String {
    let table = crate::net::TABLE;
    let ports = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "add chain inet {table} nat_out {{ type nat hook output priority -100; policy accept; }}\n\
         add rule inet {table} nat_out meta mark != {RELAY_MARK:#x} ip daddr 10.77.0.0/24 tcp dport {{ {ports} }} redirect to :{RELAY_PORT}\n"
    )
}

/// The delay of one relay, shared with the nemesis.
#[derive(Debug, Default)]
pub struct RelayControl {
    delay_ms: AtomicU64,
    connections: AtomicU64,
    stop: AtomicBool,
}

impl RelayControl {
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms.load(Ordering::Relaxed))
    }

    /// Connections relayed so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

/// A running relay (its thread stops when this is dropped).
pub struct Relay {
    pub node: String,
    pub control: Arc<RelayControl>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    /// Starts a relay listening in namespace `ns` (the rules are installed by the caller).
    pub fn start(node: &str, ns: &str) -> anyhow::Result<Relay> {
        let control = Arc::new(RelayControl::default());
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let ns_owned = ns.to_string();
        let node_owned = node.to_string();
        let thread_control = control.clone();
        let thread = std::thread::Builder::new()
            .name(format!("relay-{node}"))
            .spawn(move || {
                let setup = crate::net::enter(&ns_owned).and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("cannot build the relay's runtime")
                });
                let runtime = match setup {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, RELAY_PORT)).await
                    {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(anyhow::Error::new(e).context(format!(
                                "cannot listen on 127.0.0.1:{RELAY_PORT} in {ns_owned}"
                            ))));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    tokio::select! {
                        _ = accept_loop(listener, thread_control.clone(), node_owned) => {}
                        _ = shutdown_rx => {}
                    }
                    thread_control.stop.store(true, Ordering::Relaxed);
                });
                runtime.shutdown_timeout(Duration::from_millis(500));
            })
            .context("cannot start a relay thread")?;
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(Relay {
                node: node.to_string(),
                control,
                shutdown: Some(shutdown),
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => anyhow::bail!("the relay of {node} did not start within 10 s"),
        }
    }

    /// Stops the relay's thread (connections through it are closed).
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::warn!(node = self.node, "the relay thread panicked");
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(listener: TcpListener, control: Arc<RelayControl>, node: String) {
    loop {
        let (inbound, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(node, error = %e, "relay accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        control.connections.fetch_add(1, Ordering::Relaxed);
        let control = control.clone();
        let node = node.clone();
        tokio::spawn(async move {
            if let Err(e) = relay_connection(inbound, control).await {
                tracing::debug!(node, %peer, error = %e, "relayed connection ended");
            }
        });
    }
}

/// The destination a redirected connection was headed for.
fn original_destination(stream: &TcpStream) -> std::io::Result<SocketAddr> {
    // SAFETY: sockaddr_in is plain old data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `addr`, a properly sized sockaddr_in;
    // the fd is a live TCP socket owned by `stream`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_IP,
            libc::SO_ORIGINAL_DST,
            (&mut addr as *mut libc::sockaddr_in).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
    Ok(SocketAddr::V4(SocketAddrV4::new(
        ip,
        u16::from_be(addr.sin_port),
    )))
}

fn set_mark(socket: &TcpSocket, mark: u32) -> std::io::Result<()> {
    // SAFETY: setsockopt reads `size_of::<u32>()` bytes from a valid u32; the fd is a live
    // socket owned by `socket`.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

async fn relay_connection(inbound: TcpStream, control: Arc<RelayControl>) -> anyhow::Result<()> {
    let destination = original_destination(&inbound).context("no original destination")?;
    let socket = TcpSocket::new_v4().context("cannot create the outgoing socket")?;
    set_mark(&socket, RELAY_MARK).context("cannot mark the outgoing socket")?;
    let outbound = tokio::time::timeout(Duration::from_secs(3), socket.connect(destination))
        .await
        .map_err(|_| anyhow::anyhow!("connect to {destination} timed out"))?
        .with_context(|| format!("cannot connect to {destination}"))?;
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let up = pump(in_read, out_write, control.clone());
    let down = pump(out_read, in_write, control);
    let (a, b) = tokio::join!(up, down);
    a.and(b)
}

/// Copies one direction, holding each chunk for the relay's current delay (in order).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    control: Arc<RelayControl>,
) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            to.write_all(&chunk).await?;
        }
        to.shutdown().await?;
        Ok::<(), std::io::Error>(())
    };
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut last_due = Instant::now();
        loop {
            if control.stop.load(Ordering::Relaxed) {
                break;
            }
            let n = from.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            // Never before the previous chunk: the delay may drop at the end of a window.
            let due = (Instant::now() + control.delay()).max(last_due);
            last_due = due;
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
        Ok::<(), std::io::Error>(())
    };
    let (r, w) = tokio::join!(reader, writer);
    r.and(w).context("relay i/o")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_exempts_the_relays_own_sockets() {
        let rules = redirect_rules(&[10911, 10912]);
        assert!(rules.contains("type nat hook output"), "{rules}");
        assert!(rules.contains("meta mark != 0x4a52"), "{rules}");
        assert!(rules.contains("tcp dport { 10911, 10912 }"), "{rules}");
        assert!(
            rules.contains(&format!("redirect to :{RELAY_PORT}")),
            "{rules}"
        );
    }

    #[test]
    fn the_delay_is_shared() {
        let c = RelayControl::default();
        assert_eq!(c.delay(), Duration::ZERO);
        c.set_delay(Duration::from_millis(250));
        assert_eq!(c.delay(), Duration::from_millis(250));
    }
}
