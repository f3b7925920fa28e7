//! One Remoting connection, shared by the client and the server.
//!
//! Each connection runs two tasks: a reader that decodes frames, routes responses to the
//! requests waiting for them (by opaque) and hands requests to a processor, and a writer
//! fed by a bounded queue. Either side of a connection may send requests: the client
//! invokes the server, and the server can push requests (e.g. CHECK_TRANSACTION_STATE)
//! to the client through a [`ConnectionHandle`].

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{timeout, timeout_at, Instant};
use tracing::{debug, error, warn};

use crate::codec;
use crate::codes::response_code;
use crate::command::{RemotingCommand, SerializeType, ONEWAY_FLAG, RESPONSE_FLAG};
use crate::error::RemotingError;
use crate::limits::{
    ConnectionBudget, FrameBytes, ServerBudget, ServerLimits, Throttle, SMALL_FRAME,
};
use crate::server::{RequestContext, RequestProcessor};
use crate::tls::Transport;

/// How long a closing connection keeps trying to write what is already queued.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// The socket read granularity.
const READ_CHUNK: usize = 16 * 1024;
/// The read buffer of a connection until its first bytes arrive.
const FIRST_READ_CHUNK: usize = 512;
/// How many queued frames the writer coalesces before flushing.
const WRITE_BATCH: usize = 64;

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// Limits of one connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionOptions {
    /// Requests from the peer processed concurrently; beyond it they get SYSTEM_BUSY.
    pub max_in_flight_requests: usize,
    /// Frames queued for the writer before senders wait.
    pub send_queue_capacity: usize,
    /// Server side: the limits of what the peer sends ([`crate::limits`]).
    pub server: Option<ServerBudget>,
    /// Server side: TLS for accepted connections ([`crate::tls`]).
    pub tls: Option<crate::tls::ServerTls>,
}

/// Refused peers are logged at most once a second per kind.
static FRAME_TOO_LARGE: Throttle = Throttle::new();
static FRAME_TIMED_OUT: Throttle = Throttle::new();
const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Finds the processor for requests arriving on a connection.
pub(crate) trait Dispatch: Send + Sync + 'static {
    fn processor(&self, code: i32) -> Option<Arc<dyn RequestProcessor>>;

    /// A token held while a request is being processed (the server counts them to let
    /// in-flight requests finish on shutdown).
    fn in_flight_token(&self) -> Option<Arc<()>> {
        None
    }

    /// Where `rocketmq_rpc_latency` is recorded, when the server has metrics.
    fn rpc_metrics(&self) -> Option<&rocketraft_common::metrics::RpcMetrics> {
        None
    }
}

/// The request codes answered by long polling (their latency includes the wait).
fn is_long_polling(code: i32) -> bool {
    matches!(
        code,
        crate::codes::request_code::PULL_MESSAGE
            | crate::codes::request_code::POP_MESSAGE
            | crate::codes::request_code::LITE_PULL_MESSAGE
            | crate::codes::request_code::POP_LITE_MESSAGE
            | crate::codes::request_code::NOTIFICATION
            | crate::codes::request_code::POLLING_INFO
    )
}

/// Records one request in `rocketmq_rpc_latency` with RocketMQ's labels.
fn record_rpc(
    metrics: &rocketraft_common::metrics::RpcMetrics,
    code: i32,
    response_code: Option<i32>,
    result: &'static str,
    elapsed: std::time::Duration,
) {
    metrics.observe_remoting(
        code,
        response_code.unwrap_or(-1),
        is_long_polling(code),
        result,
        elapsed.as_secs_f64() * 1000.0,
    );
}

/// An encoded frame: the length words and header, then the body (not copied).
struct Outbound {
    head: Vec<u8>,
    body: Bytes,
}

fn encode_outbound(cmd: &RemotingCommand) -> Result<Outbound, RemotingError> {
    Ok(Outbound {
        head: codec::encode_head(cmd)?,
        body: cmd.body.clone(),
    })
}

struct Inner {
    id: u64,
    remote: String,
    peer: SocketAddr,
    local: SocketAddr,
    tx: mpsc::Sender<Outbound>,
    pending: Mutex<HashMap<i32, oneshot::Sender<RemotingCommand>>>,
    closed: AtomicBool,
    closed_tx: watch::Sender<bool>,
    request_permits: Arc<Semaphore>,
    max_in_flight_requests: usize,
    /// A server connection's byte budget (its share and the server's total), which its
    /// requests off the socket and in-process ([`crate::local`]) take from.
    budget: Option<ConnectionBudget>,
    /// When the connection was opened (the base of `last_read_ms`).
    opened: Instant,
    /// Milliseconds after `opened` at which the last bytes arrived (0: none yet).
    last_read_ms: AtomicU64,
    /// Cluster trust of the peer (server side): the open challenge, and whether the peer
    /// proved the cluster secret ([`crate::trust`]).
    trust: Mutex<PeerTrust>,
    /// The peer answered with a TLS record on this plaintext connection (a server that takes
    /// TLS only): requests fail with [`RemotingError::PeerSpeaksTls`].
    peer_speaks_tls: AtomicBool,
}

/// What a server knows of a connection's peer under cluster trust.
#[derive(Default)]
pub(crate) struct PeerTrust {
    /// The (client nonce, server nonce) of the challenge answered, until the peer proves.
    pub challenge: Option<(Vec<u8>, Vec<u8>)>,
    /// The peer proved it holds the cluster secret.
    pub trusted: bool,
}

/// A cheap, cloneable handle to a live connection.
///
/// Processors get one in their [`RequestContext`] and may keep it to push requests to the
/// peer later (CHECK_TRANSACTION_STATE, NOTIFY_CONSUMER_IDS_CHANGED, ...). Holding a
/// handle does not keep the socket open.
#[derive(Clone)]
pub struct ConnectionHandle {
    inner: Arc<Inner>,
}

impl fmt::Debug for ConnectionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionHandle")
            .field("id", &self.inner.id)
            .field("peer", &self.inner.peer)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl ConnectionHandle {
    /// A process-unique id of this connection.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.inner.peer
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Whether the peer proved the cluster secret on this connection ([`crate::trust`]).
    pub fn is_trusted(&self) -> bool {
        self.inner.trust.lock().trusted
    }

    pub(crate) fn trust(&self) -> parking_lot::MutexGuard<'_, PeerTrust> {
        self.inner.trust.lock()
    }

    /// Whether any bytes arrived from the peer at or after `at` (millisecond resolution).
    ///
    /// A connection that answered nothing for a whole request timeout is likely dead: a
    /// partition drops packets without a reset, and TCP's retransmission backoff then delays
    /// the first bytes after the network heals by seconds. The client closes such a
    /// connection so that the next request dials afresh (RocketMQ's
    /// `clientCloseSocketIfTimeout`).
    pub fn received_since(&self, at: Instant) -> bool {
        let last = self.inner.last_read_ms.load(Ordering::Acquire);
        if last == 0 {
            return false;
        }
        let since_open = at.saturating_duration_since(self.inner.opened).as_millis();
        u128::from(last) >= since_open
    }

    /// How long since the peer last sent a byte (or since the connection opened).
    pub(crate) fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.inner.last_read_ms.load(Ordering::Acquire));
        self.inner.opened.elapsed().saturating_sub(last)
    }

    /// A server connection's byte budget.
    pub(crate) fn budget(&self) -> Option<&ConnectionBudget> {
        self.inner.budget.as_ref()
    }

    /// Requests from the peer being processed now.
    pub(crate) fn requests_in_flight(&self) -> usize {
        let available = self.inner.request_permits.available_permits();
        self.inner.max_in_flight_requests.saturating_sub(available)
    }

    /// Records activity from the peer: bytes off the socket, or a request of this connection
    /// dispatched in-process ([`crate::local`]), which the idle timeout and the eviction of
    /// the longest idle connection must see too.
    pub(crate) fn note_read(&self) {
        let ms = self.inner.opened.elapsed().as_millis();
        let ms = u64::try_from(ms).unwrap_or(u64::MAX).max(1);
        self.inner.last_read_ms.store(ms, Ordering::Release);
    }

    /// Closes the connection: stops reading, fails every pending request with
    /// [`RemotingError::ConnectionClosed`], writes what is already queued (briefly) and
    /// shuts the socket down. Idempotent.
    pub fn close(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.closed_tx.send_replace(true);
        // Dropping the senders wakes every waiter with an error.
        let pending: Vec<_> = self.inner.pending.lock().drain().collect();
        drop(pending);
        debug!(conn = self.inner.id, peer = %self.inner.peer, "connection closed");
    }

    /// Resolves once the connection is closed.
    pub async fn closed(&self) {
        let mut rx = self.inner.closed_tx.subscribe();
        let _ = rx.wait_for(|closed| *closed).await;
    }

    /// Queues a oneway request (the oneway flag is set here) without waiting. Fails with
    /// [`RemotingError::SendQueueFull`] when the outbound queue is full.
    pub fn send_oneway(&self, mut cmd: RemotingCommand) -> Result<(), RemotingError> {
        cmd.flag = (cmd.flag & !RESPONSE_FLAG) | ONEWAY_FLAG;
        if self.is_closed() {
            return Err(self.closed_error());
        }
        let out = encode_outbound(&cmd)?;
        self.inner.tx.try_send(out).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => RemotingError::SendQueueFull {
                addr: self.inner.remote.clone(),
            },
            mpsc::error::TrySendError::Closed(_) => self.closed_error(),
        })
    }

    /// Sends a request to the peer and waits for its response.
    pub async fn invoke(
        &self,
        request: RemotingCommand,
        timeout: Duration,
    ) -> Result<RemotingCommand, RemotingError> {
        self.invoke_until(request, Instant::now() + timeout, timeout)
            .await
    }

    /// [`ConnectionHandle::invoke`] with an absolute deadline; `timeout` is only reported.
    pub(crate) async fn invoke_until(
        &self,
        mut request: RemotingCommand,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<RemotingCommand, RemotingError> {
        request.flag &= !(RESPONSE_FLAG | ONEWAY_FLAG);
        let out = encode_outbound(&request)?;
        let (tx, rx) = oneshot::channel();
        let _pending = self.register(request.opaque, tx)?;
        match timeout_at(deadline, self.inner.tx.send(out)).await {
            Err(_) => return Err(self.timeout_error(timeout)),
            Ok(Err(_)) => return Err(self.closed_error()),
            Ok(Ok(())) => {}
        }
        match timeout_at(deadline, rx).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(_)) => Err(self.closed_error()),
            Err(_) => Err(self.timeout_error(timeout)),
        }
    }

    /// Queues a oneway request, waiting for queue space until `deadline`.
    pub(crate) async fn send_oneway_until(
        &self,
        mut cmd: RemotingCommand,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), RemotingError> {
        cmd.flag = (cmd.flag & !RESPONSE_FLAG) | ONEWAY_FLAG;
        if self.is_closed() {
            return Err(self.closed_error());
        }
        let out = encode_outbound(&cmd)?;
        match timeout_at(deadline, self.inner.tx.send(out)).await {
            Err(_) => Err(self.timeout_error(timeout)),
            Ok(Err(_)) => Err(self.closed_error()),
            Ok(Ok(())) => Ok(()),
        }
    }

    fn register(
        &self,
        opaque: i32,
        tx: oneshot::Sender<RemotingCommand>,
    ) -> Result<PendingGuard<'_>, RemotingError> {
        let mut pending = self.inner.pending.lock();
        // Checked under the lock: `close` sets the flag before draining, so an entry
        // inserted here is either drained by `close` or refused.
        if self.is_closed() {
            return Err(self.closed_error());
        }
        if pending.contains_key(&opaque) {
            return Err(RemotingError::DuplicateOpaque {
                addr: self.inner.remote.clone(),
                opaque,
            });
        }
        pending.insert(opaque, tx);
        Ok(PendingGuard { conn: self, opaque })
    }

    /// Hands a response to the request waiting for it; late responses are dropped.
    fn complete(&self, response: RemotingCommand) {
        let waiter = self.inner.pending.lock().remove(&response.opaque);
        match waiter {
            Some(tx) => {
                let _ = tx.send(response);
            }
            None => debug!(
                conn = self.inner.id,
                peer = %self.inner.peer,
                opaque = response.opaque,
                code = response.code,
                "response matches no pending request (late or unknown); dropped"
            ),
        }
    }

    /// Queues a response, replacing it with SYSTEM_ERROR if it cannot be encoded.
    async fn send_response(&self, response: RemotingCommand) {
        let out = match encode_outbound(&response) {
            Ok(out) => out,
            Err(e) => {
                warn!(conn = self.inner.id, peer = %self.inner.peer, code = response.code, error = %e,
                    "failed to encode a response; answering SYSTEM_ERROR instead");
                let fallback = RemotingCommand::response(
                    response_code::SYSTEM_ERROR,
                    Some(format!("failed to encode the response: {e}")),
                )
                .with_opaque(response.opaque)
                .with_serialize_type(response.serialize_type);
                match encode_outbound(&fallback) {
                    Ok(out) => out,
                    Err(_) => return,
                }
            }
        };
        if self.inner.tx.send(out).await.is_err() {
            debug!(conn = self.inner.id, peer = %self.inner.peer, "connection closed before a response could be sent");
        }
    }

    fn closed_error(&self) -> RemotingError {
        let addr = self.inner.remote.clone();
        if self.inner.peer_speaks_tls.load(Ordering::Acquire) {
            return RemotingError::PeerSpeaksTls { addr };
        }
        RemotingError::ConnectionClosed { addr }
    }

    fn timeout_error(&self, timeout: Duration) -> RemotingError {
        RemotingError::Timeout {
            addr: self.inner.remote.clone(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// Removes a pending entry when its request completes, times out or is cancelled.
struct PendingGuard<'a> {
    conn: &'a ConnectionHandle,
    opaque: i32,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.conn.inner.pending.lock().remove(&self.opaque);
    }
}

/// Starts the reader and writer tasks of a freshly connected or accepted socket.
/// `remote` names the peer in errors (the address the client dialled, for instance).
pub(crate) fn spawn_connection(
    stream: Transport,
    remote: String,
    dispatch: Arc<dyn Dispatch>,
    options: ConnectionOptions,
) -> io::Result<ConnectionHandle> {
    let peer = stream.peer_addr()?;
    let local = stream.local_addr()?;
    if let Err(e) = stream.set_nodelay(true) {
        debug!(%peer, error = %e, "failed to set TCP_NODELAY");
    }
    let (read_half, write_half): (Reader, Writer) = match stream {
        // Plain TCP splits without a lock.
        Transport::Plain(tcp) => {
            let (r, w) = tcp.into_split();
            (Box::new(r), Box::new(w))
        }
        tls => {
            let (r, w) = tokio::io::split(tls);
            (Box::new(r), Box::new(w))
        }
    };
    let (tx, rx) = mpsc::channel(options.send_queue_capacity.max(1));
    let (closed_tx, _) = watch::channel(false);
    let max_in_flight = options.max_in_flight_requests.max(1);
    let guard = options.server.map(|server| Guard {
        budget: server.connection(),
        limits: server.limits,
    });
    let handle = ConnectionHandle {
        inner: Arc::new(Inner {
            id: NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
            remote,
            peer,
            local,
            tx,
            pending: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            closed_tx,
            request_permits: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight_requests: max_in_flight,
            budget: guard.as_ref().map(|g| g.budget.clone()),
            opened: Instant::now(),
            last_read_ms: AtomicU64::new(0),
            trust: Mutex::new(PeerTrust::default()),
            peer_speaks_tls: AtomicBool::new(false),
        }),
    };
    tokio::spawn(write_loop(write_half, rx, handle.clone()));
    tokio::spawn(read_loop(read_half, handle.clone(), dispatch, guard));
    Ok(handle)
}

async fn wait_closed(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|closed| *closed).await;
}

/// A server connection's limits and byte budget.
struct Guard {
    limits: Arc<ServerLimits>,
    budget: ConnectionBudget,
}

/// The frame being received: when its first byte arrived and the bytes reserved for it.
#[derive(Default)]
struct Frame {
    started: Option<Instant>,
    bytes: Option<FrameBytes>,
}

/// What the reader does with the frame at the head of its buffer.
enum Admit {
    /// Decode it (or what of it has arrived).
    Decode,
    /// Read more bytes first.
    NeedMore,
    /// Close the connection.
    Close,
}

/// The reading half of a connection's stream (plain TCP or TLS).
type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half.
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

async fn read_loop(
    mut reader: Reader,
    conn: ConnectionHandle,
    dispatch: Arc<dyn Dispatch>,
    guard: Option<Guard>,
) {
    let mut buf = BytesMut::new();
    let mut closed = conn.inner.closed_tx.subscribe();
    let mut frame = Frame::default();
    let mut active = Instant::now();
    let mut active_once = false;
    loop {
        loop {
            if let Some(guard) = &guard {
                match admit(&buf, guard, &mut frame, &conn, &mut closed).await {
                    Admit::Decode => {}
                    Admit::NeedMore => break,
                    Admit::Close => return conn.close(),
                }
            }
            match codec::decode(&mut buf) {
                Ok(Some(cmd)) if cmd.is_response() => {
                    frame = Frame::default();
                    conn.complete(cmd);
                }
                Ok(Some(cmd)) => {
                    let bytes = std::mem::take(&mut frame).bytes;
                    handle_request(&conn, &dispatch, cmd, bytes).await;
                }
                Ok(None) => break,
                Err(e) => {
                    if crate::tls::is_tls_record(&buf) {
                        // Before the close wakes the waiters: they report it.
                        conn.inner.peer_speaks_tls.store(true, Ordering::Release);
                        warn!(conn = conn.id(), peer = %conn.peer_addr(),
                            "the peer speaks TLS on this plaintext connection; closing it");
                    } else {
                        warn!(conn = conn.id(), peer = %conn.peer_addr(), error = %e,
                            "malformed frame; closing the connection");
                    }
                    conn.close();
                    return;
                }
            }
        }
        if !buf.is_empty() && frame.started.is_none() {
            frame.started = Some(Instant::now());
        }
        // A connection that never sent anything gets a small buffer: a flood of idle
        // connections costs little memory.
        buf.reserve(if active_once {
            READ_CHUNK
        } else {
            FIRST_READ_CHUNK
        });
        let deadline = guard
            .as_ref()
            .and_then(|g| read_deadline(&g.limits, &frame, active));
        let read = tokio::select! {
            biased;
            _ = wait_closed(&mut closed) => return,
            read = reader.read_buf(&mut buf) => read,
            _ = sleep_until_some(deadline) => {
                if frame.started.is_some() {
                    return frame_timed_out(&conn);
                }
                if conn.requests_in_flight() == 0 {
                    // In-process requests of this connection (crate::local) are activity too.
                    let noted = Instant::now().checked_sub(conn.idle_for());
                    if let Some(noted) = noted.filter(|&noted| noted > active) {
                        active = noted;
                        continue;
                    }
                    debug!(conn = conn.id(), peer = %conn.peer_addr(), "idle connection closed");
                    return conn.close();
                }
                active = Instant::now();
                continue;
            }
        };
        match read {
            Ok(0) => {
                debug!(conn = conn.id(), peer = %conn.peer_addr(), "peer closed the connection");
                conn.close();
                return;
            }
            Ok(_) => {
                active = Instant::now();
                active_once = true;
                conn.note_read();
            }
            Err(e) => {
                debug!(conn = conn.id(), peer = %conn.peer_addr(), error = %e, "read failed");
                conn.close();
                return;
            }
        }
    }
}

/// When the reader gives up waiting: the end of the frame timeout for a frame under way,
/// otherwise the end of the idle timeout.
fn read_deadline(limits: &ServerLimits, frame: &Frame, active: Instant) -> Option<Instant> {
    match frame.started {
        Some(started) => Some(started + limits.frame_timeout),
        None => limits.idle_timeout.map(|idle| active + idle),
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn frame_timed_out(conn: &ConnectionHandle) {
    if let Some(skipped) = FRAME_TIMED_OUT.allow(LOG_INTERVAL) {
        warn!(conn = conn.id(), peer = %conn.peer_addr(), skipped,
            "a frame was not completed within the frame timeout; closing the connection");
    }
    conn.close();
}

/// Checks the frame at the head of `buf` against the limits (its size for its code, once
/// its header is in) and reserves its bytes, waiting (not reading) while the connection or
/// the server is over its budget.
async fn admit(
    buf: &BytesMut,
    guard: &Guard,
    frame: &mut Frame,
    conn: &ConnectionHandle,
    closed: &mut watch::Receiver<bool>,
) -> Admit {
    if frame.bytes.is_some() {
        return Admit::Decode;
    }
    let len = match codec::frame_len(buf) {
        Ok(Some(len)) => len,
        Ok(None) => return Admit::NeedMore,
        // The decoder reports it and closes the connection.
        Err(_) => return Admit::Decode,
    };
    if len > SMALL_FRAME {
        match codec::peek_code(buf, guard.limits.max_header_len) {
            Ok(Some((code, false))) if len - 4 > guard.limits.max_request_len(code) => {
                if let Some(skipped) = FRAME_TOO_LARGE.allow(LOG_INTERVAL) {
                    warn!(conn = conn.id(), peer = %conn.peer_addr(), code, len,
                        max = guard.limits.max_request_len(code), skipped,
                        "request larger than its code allows; closing the connection");
                }
                return Admit::Close;
            }
            Ok(Some(_)) => {}
            Ok(None) => return Admit::NeedMore,
            Err(e) => {
                warn!(conn = conn.id(), peer = %conn.peer_addr(), error = %e,
                    "malformed frame header; closing the connection");
                return Admit::Close;
            }
        }
    }
    let reserved = tokio::select! {
        biased;
        _ = wait_closed(closed) => None,
        bytes = guard.budget.reserve(len) => bytes,
    };
    match reserved {
        Some(bytes) => {
            frame.bytes = Some(bytes);
            // Waiting for the budget is the server's doing, not the peer's.
            frame.started = Some(Instant::now());
            Admit::Decode
        }
        None => Admit::Close,
    }
}

async fn write_one(w: &mut OutBuf, out: Outbound) -> io::Result<()> {
    w.put(&out.head).await?;
    if !out.body.is_empty() {
        w.put(&out.body).await?;
    }
    Ok(())
}

/// Writes `first` and whatever else is queued, up to [`WRITE_BATCH`] frames, in one flush.
///
/// When the queue runs dry the writer yields to the scheduler before flushing, as long as the
/// last yield found more frames: the answers of one group commit complete together, each in its
/// own task, and without the yield the writer flushed as soon as the first was queued (one
/// `send` per answer, 0.7 per message under `bench produce`). A lone frame waits until the
/// worker runs the writer again (under load, after the other tasks ready on that worker).
async fn write_batch(
    w: &mut OutBuf,
    first: Outbound,
    rx: &mut mpsc::Receiver<Outbound>,
) -> io::Result<()> {
    write_one(w, first).await?;
    let mut written = 1;
    let mut gathered_since_yield = true;
    while written < WRITE_BATCH {
        match rx.try_recv() {
            Ok(out) => {
                write_one(w, out).await?;
                written += 1;
                gathered_since_yield = true;
            }
            Err(_) if gathered_since_yield => {
                gathered_since_yield = false;
                tokio::task::yield_now().await;
            }
            Err(_) => break,
        }
    }
    w.flush().await
}

/// The write buffer's largest size. It is allocated when the connection first writes and
/// grows with what it buffers: an idle connection (a flood of them, say) holds none, one that
/// got a few small answers a small one. mimalloc commits what it hands out, so an eager 64 KiB
/// buffer per connection cost 640 MiB under 10 000 idle connections.
const WRITE_BUFFER: usize = 64 * 1024;

/// What a connection's write buffer keeps between flushes.
const KEPT_BUFFER: usize = 8 * 1024;

/// The connection's writing half with a write buffer allocated on first use (a `BufWriter`
/// allocates its buffer up front).
struct OutBuf {
    writer: Writer,
    buf: Vec<u8>,
}

impl OutBuf {
    fn new(writer: Writer) -> Self {
        OutBuf {
            writer,
            buf: Vec::new(),
        }
    }

    /// Buffers `bytes`, writing the buffer out first when they do not fit; what is as large
    /// as the buffer goes straight to the socket.
    async fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.buf.len() + bytes.len() > WRITE_BUFFER {
            self.write_out().await?;
        }
        if bytes.len() >= WRITE_BUFFER {
            return self.writer.write_all(bytes).await;
        }
        // Grown as needed (doubling, never past the buffer's size): a connection that only
        // ever got small answers (an ACL refusal, say) holds a small buffer.
        let need = self.buf.len() + bytes.len();
        if need > self.buf.capacity() {
            let target = (self.buf.capacity() * 2).max(need).min(WRITE_BUFFER);
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    async fn write_out(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.writer.write_all(&self.buf).await?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Writes everything out; a buffer a burst grew past [`KEPT_BUFFER`] is given back, so a
    /// connection that once got a burst of answers does not hold 64 KiB for good.
    async fn flush(&mut self) -> io::Result<()> {
        self.write_out().await?;
        if self.buf.capacity() > KEPT_BUFFER {
            self.buf.shrink_to(KEPT_BUFFER);
        }
        self.writer.flush().await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.flush().await?;
        self.writer.shutdown().await
    }
}

async fn write_loop(writer: Writer, mut rx: mpsc::Receiver<Outbound>, conn: ConnectionHandle) {
    let mut w = OutBuf::new(writer);
    let mut closed = conn.inner.closed_tx.subscribe();
    loop {
        let first = tokio::select! {
            biased;
            _ = wait_closed(&mut closed) => break,
            out = rx.recv() => match out {
                Some(out) => out,
                None => break,
            },
        };
        // A write in progress when the connection closes gets DRAIN_TIMEOUT to finish.
        let result = tokio::select! {
            result = write_batch(&mut w, first, &mut rx) => result,
            _ = async {
                wait_closed(&mut closed).await;
                tokio::time::sleep(DRAIN_TIMEOUT).await;
            } => Err(io::Error::new(io::ErrorKind::TimedOut, "write stalled while closing")),
        };
        if let Err(e) = result {
            debug!(conn = conn.id(), peer = %conn.peer_addr(), error = %e, "write failed");
            conn.close();
            return;
        }
    }
    // Closed while idle: write what was queued before the close, then shut down.
    let drained = timeout(DRAIN_TIMEOUT, async {
        while let Ok(out) = rx.try_recv() {
            write_one(&mut w, out).await?;
        }
        w.flush().await?;
        w.shutdown().await
    })
    .await;
    if let Ok(Err(e)) = drained {
        debug!(conn = conn.id(), peer = %conn.peer_addr(), error = %e, "failed to flush on close");
    }
}

/// Dispatches one request from the peer: runs its processor in its own task (bounded by
/// the connection's in-flight limit) and sends the response in the request's encoding.
async fn handle_request(
    conn: &ConnectionHandle,
    dispatch: &Arc<dyn Dispatch>,
    request: RemotingCommand,
    bytes: Option<FrameBytes>,
) {
    let oneway = request.is_oneway();
    match start_request(conn, dispatch, request, bytes, None) {
        Started::Answered(response) => {
            if !oneway {
                conn.send_response(response).await;
            }
        }
        Started::Running(run) => {
            let conn = conn.clone();
            tokio::spawn(async move {
                let (response, in_flight) = run.await;
                if let Some(response) = response {
                    conn.send_response(response).await;
                }
                drop(in_flight);
            });
        }
    }
}

/// A request started by [`start_request`].
pub(crate) enum Started<F> {
    /// Answered without running a processor: REQUEST_CODE_NOT_SUPPORTED, or SYSTEM_BUSY beyond
    /// the connection's in-flight limit (not to be sent for a oneway request).
    Answered(RemotingCommand),
    /// Its processor, to be run (on a task of its own): the finished response, if one is to
    /// be sent, and what the request holds until it is sent (its in-flight permit, the
    /// server's shutdown token, its bytes).
    Running(F),
}

/// What a request holds while it is processed and answered.
pub(crate) struct InFlight {
    _permit: OwnedSemaphorePermit,
    _token: Option<Arc<()>>,
    _bytes: Option<FrameBytes>,
}

/// Starts one request of `conn`, off the socket or in-process ([`crate::local`]): the
/// processor for its code (else REQUEST_CODE_NOT_SUPPORTED), a permit of the connection's
/// in-flight limit (else SYSTEM_BUSY), and the run: the processor with a panic answered
/// SYSTEM_ERROR, the `rocketmq_rpc_latency` record, and the response tied to the request
/// (opaque, flag, header encoding); nothing for a oneway request.
pub(crate) fn start_request(
    conn: &ConnectionHandle,
    dispatch: &Arc<dyn Dispatch>,
    request: RemotingCommand,
    bytes: Option<FrameBytes>,
    attested: Option<Arc<crate::SessionCredentials>>,
) -> Started<impl Future<Output = (Option<RemotingCommand>, InFlight)> + Send + 'static> {
    let oneway = request.is_oneway();
    let (code, opaque, serialize_type) = (request.code, request.opaque, request.serialize_type);
    let Some(processor) = dispatch.processor(code) else {
        debug!(conn = conn.id(), peer = %conn.peer_addr(), code, oneway,
            "no processor for request code");
        let remark = format!("request type {code} not supported");
        return Started::Answered(finish_response(
            request.response_to(response_code::REQUEST_CODE_NOT_SUPPORTED, Some(remark)),
            opaque,
            serialize_type,
        ));
    };
    let Ok(permit) = conn.inner.request_permits.clone().try_acquire_owned() else {
        let limit = conn.inner.max_in_flight_requests;
        warn!(conn = conn.id(), peer = %conn.peer_addr(), code, limit,
            "too many requests in flight on the connection; rejecting");
        let remark = format!("too many requests in flight on this connection (limit {limit})");
        return Started::Answered(finish_response(
            request.response_to(response_code::SYSTEM_BUSY, Some(remark)),
            opaque,
            serialize_type,
        ));
    };
    let in_flight = InFlight {
        _permit: permit,
        _token: dispatch.in_flight_token(),
        _bytes: bytes,
    };
    let conn = conn.clone();
    let dispatch = dispatch.clone();
    Started::Running(async move {
        let ctx = RequestContext {
            peer: conn.peer_addr(),
            local: conn.local_addr(),
            connection: conn.clone(),
            attested,
        };
        let started = std::time::Instant::now();
        let outcome = CatchUnwind(processor.process(ctx, request)).await;
        if let Some(family) = dispatch.rpc_metrics() {
            let (response_code, result) = match &outcome {
                Ok(Some(r)) if !oneway => (Some(r.code), "success"),
                Ok(_) if oneway => (None, "oneway"),
                Ok(_) => (None, "cancelled"),
                Err(()) => (None, "process_request_failed"),
            };
            record_rpc(family, code, response_code, result, started.elapsed());
        }
        let response = match outcome {
            Ok(Some(response)) if !oneway => Some(response),
            Ok(Some(_)) => {
                debug!(
                    code,
                    "processor answered a oneway request; response dropped"
                );
                None
            }
            Ok(None) => {
                if !oneway {
                    debug!(code, opaque, "processor returned no response");
                }
                None
            }
            Err(()) => {
                error!(conn = conn.id(), peer = %conn.peer_addr(), code, "request processor panicked");
                (!oneway).then(|| {
                    RemotingCommand::response(
                        response_code::SYSTEM_ERROR,
                        Some(format!(
                            "internal error while processing request type {code}"
                        )),
                    )
                })
            }
        };
        (
            response.map(|r| finish_response(r, opaque, serialize_type)),
            in_flight,
        )
    })
}

/// Ties a processor's response to its request: same opaque, response flag, and the
/// request's header encoding.
fn finish_response(
    mut response: RemotingCommand,
    opaque: i32,
    serialize_type: SerializeType,
) -> RemotingCommand {
    response.opaque = opaque;
    response.flag = (response.flag | RESPONSE_FLAG) & !ONEWAY_FLAG;
    response.serialize_type = serialize_type;
    response
}

/// Turns a panic while polling the inner future into an error.
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(&mut *inner).poll(cx))) {
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    }
}
