//! Simulated TCP connections for the broker replicas' HA streams ([`Wire::connect`]): byte
//! streams that implement `AsyncRead + AsyncWrite`, handed to the real
//! `rocketraft_broker::ha::master_connection` and `follow_stream`.
//!
//! Every chunk written is delivered 1-4 ms later (drawn from its direction's own [`SimRng`]),
//! never before the chunk written before it (TCP never reorders, and a lost segment is only a
//! delay). One delivery task serves every connection, in the order (delivery time, connection,
//! direction, sequence): the order in which tasks at one simulated instant happen to write
//! (tokio wakes the waiters of one `watch` channel, as the master's connections waiting on its
//! store's arrivals, in an order drawn from its own unseeded RNG) does not change what is
//! delivered when. A chunk meeting a cut link, a [`Conn::kill`] (a crash of either end, a
//! partition the nemesis just made) or either end dropping its stream resets the connection:
//! what is in flight is dropped, both sides read end-of-stream and their writes fail.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::net::{Endpoint, Net};
use crate::rng::SimRng;

/// One direction of a connection: what its reader has received and not read yet.
struct Pipe {
    from: Endpoint,
    to: Endpoint,
    buf: VecDeque<u8>,
    waker: Option<Waker>,
    closed: bool,
    rng: SimRng,
    last: Instant,
    seq: u64,
}

#[derive(Default)]
struct WireState {
    next_conn: u64,
    /// (delivery time, connection, direction, sequence) -> bytes.
    queue: BTreeMap<(Instant, u64, u8, u64), Vec<u8>>,
    /// (connection, direction) -> its pipe; direction 0 is `a -> b`, 1 is `b -> a`.
    pipes: BTreeMap<(u64, u8), Pipe>,
}

impl WireState {
    /// Resets connection `conn`: in-flight bytes dropped, both readers see end-of-stream.
    fn reset(&mut self, conn: u64, wakers: &mut Vec<Waker>) {
        self.queue.retain(|k, _| k.1 != conn);
        for dir in [0u8, 1] {
            if let Some(p) = self.pipes.get_mut(&(conn, dir)) {
                p.closed = true;
                wakers.extend(p.waker.take());
            }
        }
    }
}

/// The simulated network of the HA connections of one run.
#[derive(Clone)]
pub struct Wire {
    state: Arc<Mutex<WireState>>,
    notify: Arc<Notify>,
}

/// A live connection's handle.
#[derive(Clone)]
pub struct Conn {
    pub a: Endpoint,
    pub b: Endpoint,
    id: u64,
    wire: Wire,
}

impl Conn {
    /// Resets the connection (both directions).
    pub fn kill(&self) {
        self.wire.reset(self.id);
    }

    pub fn is_dead(&self) -> bool {
        let st = self.wire.state.lock();
        st.pipes.get(&(self.id, 0)).is_none_or(|p| p.closed)
    }
}

/// One end of a simulated connection.
pub struct SimStream {
    wire: Wire,
    conn: u64,
    /// The direction this end writes (it reads the other one).
    out: u8,
}

impl Default for Wire {
    fn default() -> Self {
        Wire::new()
    }
}

impl Wire {
    /// A wire with no connection; [`Wire::deliver`] must run for anything to arrive.
    pub fn new() -> Wire {
        Wire {
            state: Arc::new(Mutex::new(WireState::default())),
            notify: Arc::new(Notify::new()),
        }
    }

    fn reset(&self, conn: u64) {
        let mut wakers = Vec::new();
        self.state.lock().reset(conn, &mut wakers);
        for w in wakers {
            w.wake();
        }
    }

    /// Opens a connection between endpoints `a` and `b`: `a`'s end, `b`'s end and its handle.
    /// Each direction draws its delays from its own fork of `rng`.
    pub fn connect(
        &self,
        a: Endpoint,
        b: Endpoint,
        rng: &Mutex<SimRng>,
    ) -> (SimStream, SimStream, Conn) {
        let (rng_ab, rng_ba) = {
            let mut r = rng.lock();
            (r.fork(), r.fork())
        };
        let now = Instant::now();
        let mut st = self.state.lock();
        st.next_conn += 1;
        let id = st.next_conn;
        for (dir, from, to, rng) in [(0u8, a, b, rng_ab), (1u8, b, a, rng_ba)] {
            st.pipes.insert(
                (id, dir),
                Pipe {
                    from,
                    to,
                    buf: VecDeque::new(),
                    waker: None,
                    closed: false,
                    rng,
                    last: now,
                    seq: 0,
                },
            );
        }
        drop(st);
        let end = |out| SimStream {
            wire: self.clone(),
            conn: id,
            out,
        };
        (
            end(0),
            end(1),
            Conn {
                a,
                b,
                id,
                wire: self.clone(),
            },
        )
    }

    /// Delivers every chunk at its time, in (time, connection, direction, sequence) order;
    /// the run spawns it once.
    pub async fn deliver(self, net: Net) {
        loop {
            let next = self.state.lock().queue.keys().next().map(|k| k.0);
            match next {
                None => self.notify.notified().await,
                Some(at) if at > Instant::now() => {
                    tokio::select! {
                        biased;
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.notify.notified() => {}
                    }
                }
                Some(_) => {
                    let mut wakers = Vec::new();
                    let mut st = self.state.lock();
                    let now = Instant::now();
                    while let Some(entry) = st.queue.first_entry() {
                        if entry.key().0 > now {
                            break;
                        }
                        let ((_, conn, dir, _), bytes) = entry.remove_entry();
                        let Some(pipe) = st.pipes.get_mut(&(conn, dir)) else {
                            continue;
                        };
                        if pipe.closed {
                            continue;
                        }
                        if !net.reachable(pipe.from, pipe.to) {
                            st.reset(conn, &mut wakers);
                            continue;
                        }
                        pipe.buf.extend(bytes);
                        wakers.extend(pipe.waker.take());
                    }
                    st.pipes.retain(|_, p| !(p.closed && p.buf.is_empty()));
                    drop(st);
                    for w in wakers {
                        w.wake();
                    }
                }
            }
        }
    }
}

impl AsyncRead for SimStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut st = self.wire.state.lock();
        let Some(pipe) = st.pipes.get_mut(&(self.conn, 1 - self.out)) else {
            // Reset and drained: end-of-stream.
            return Poll::Ready(Ok(()));
        };
        if !pipe.buf.is_empty() {
            let n = buf.remaining().min(pipe.buf.len());
            let (front, back) = pipe.buf.as_slices();
            let from_front = n.min(front.len());
            buf.put_slice(&front[..from_front]);
            buf.put_slice(&back[..n - from_front]);
            pipe.buf.drain(..n);
            return Poll::Ready(Ok(()));
        }
        if pipe.closed {
            return Poll::Ready(Ok(()));
        }
        pipe.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut st = self.wire.state.lock();
        let key = match st.pipes.get_mut(&(self.conn, self.out)) {
            Some(pipe) if !pipe.closed => {
                let delay = Duration::from_millis(pipe.rng.range(1, 4));
                let at = (Instant::now() + delay).max(pipe.last);
                pipe.last = at;
                pipe.seq += 1;
                (at, self.conn, self.out, pipe.seq)
            }
            _ => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "simulated connection reset",
                )))
            }
        };
        st.queue.insert(key, buf.to_vec());
        drop(st);
        self.wire.notify.notify_one();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Drop for SimStream {
    /// Closing an end resets the connection (the peer reads end-of-stream).
    fn drop(&mut self) {
        self.wire.reset(self.conn);
    }
}
