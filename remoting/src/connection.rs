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
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::time::{timeout, timeout_at, Instant};
use tracing::{debug, error, warn};

use crate::codec;
use crate::codes::response_code;
use crate::command::{RemotingCommand, SerializeType, ONEWAY_FLAG, RESPONSE_FLAG};
use crate::error::RemotingError;
use crate::server::{RequestContext, RequestProcessor};

/// How long a closing connection keeps trying to write what is already queued.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// The socket read granularity.
const READ_CHUNK: usize = 16 * 1024;
/// How many queued frames the writer coalesces before flushing.
const WRITE_BATCH: usize = 64;

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// Limits of one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionOptions {
    /// Requests from the peer processed concurrently; beyond it they get SYSTEM_BUSY.
    pub max_in_flight_requests: usize,
    /// Frames queued for the writer before senders wait.
    pub send_queue_capacity: usize,
}

/// Finds the processor for requests arriving on a connection.
pub(crate) trait Dispatch: Send + Sync + 'static {
    fn processor(&self, code: i32) -> Option<Arc<dyn RequestProcessor>>;

    /// A token held while a request is being processed (the server counts them to let
    /// in-flight requests finish on shutdown).
    fn in_flight_token(&self) -> Option<Arc<()>> {
        None
    }
}

/// An encoded frame: the length words and header, then the body (not copied).
struct Outbound {
    head: Bytes,
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
    /// When the connection was opened (the base of `last_read_ms`).
    opened: Instant,
    /// Milliseconds after `opened` at which the last bytes arrived (0: none yet).
    last_read_ms: AtomicU64,
    /// Cluster trust of the peer (server side): the open challenge, and whether the peer
    /// proved the cluster secret ([`crate::trust`]).
    trust: Mutex<PeerTrust>,
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

    fn note_read(&self) {
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
        RemotingError::ConnectionClosed {
            addr: self.inner.remote.clone(),
        }
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
    stream: TcpStream,
    remote: String,
    dispatch: Arc<dyn Dispatch>,
    options: ConnectionOptions,
) -> io::Result<ConnectionHandle> {
    let peer = stream.peer_addr()?;
    let local = stream.local_addr()?;
    if let Err(e) = stream.set_nodelay(true) {
        debug!(%peer, error = %e, "failed to set TCP_NODELAY");
    }
    let (read_half, write_half) = stream.into_split();
    let (tx, rx) = mpsc::channel(options.send_queue_capacity.max(1));
    let (closed_tx, _) = watch::channel(false);
    let max_in_flight = options.max_in_flight_requests.max(1);
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
            opened: Instant::now(),
            last_read_ms: AtomicU64::new(0),
            trust: Mutex::new(PeerTrust::default()),
        }),
    };
    tokio::spawn(write_loop(write_half, rx, handle.clone()));
    tokio::spawn(read_loop(read_half, handle.clone(), dispatch));
    Ok(handle)
}

async fn wait_closed(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|closed| *closed).await;
}

async fn read_loop(mut reader: OwnedReadHalf, conn: ConnectionHandle, dispatch: Arc<dyn Dispatch>) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut closed = conn.inner.closed_tx.subscribe();
    loop {
        loop {
            match codec::decode(&mut buf) {
                Ok(Some(cmd)) if cmd.is_response() => conn.complete(cmd),
                Ok(Some(cmd)) => handle_request(&conn, &dispatch, cmd).await,
                Ok(None) => break,
                Err(e) => {
                    warn!(conn = conn.id(), peer = %conn.peer_addr(), error = %e,
                        "malformed frame; closing the connection");
                    conn.close();
                    return;
                }
            }
        }
        buf.reserve(READ_CHUNK);
        let read = tokio::select! {
            biased;
            _ = wait_closed(&mut closed) => return,
            read = reader.read_buf(&mut buf) => read,
        };
        match read {
            Ok(0) => {
                debug!(conn = conn.id(), peer = %conn.peer_addr(), "peer closed the connection");
                conn.close();
                return;
            }
            Ok(_) => conn.note_read(),
            Err(e) => {
                debug!(conn = conn.id(), peer = %conn.peer_addr(), error = %e, "read failed");
                conn.close();
                return;
            }
        }
    }
}

async fn write_one(w: &mut BufWriter<OwnedWriteHalf>, out: Outbound) -> io::Result<()> {
    w.write_all(&out.head).await?;
    if !out.body.is_empty() {
        w.write_all(&out.body).await?;
    }
    Ok(())
}

async fn write_batch(
    w: &mut BufWriter<OwnedWriteHalf>,
    first: Outbound,
    rx: &mut mpsc::Receiver<Outbound>,
) -> io::Result<()> {
    write_one(w, first).await?;
    for _ in 1..WRITE_BATCH {
        match rx.try_recv() {
            Ok(out) => write_one(w, out).await?,
            Err(_) => break,
        }
    }
    w.flush().await
}

async fn write_loop(
    writer: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Outbound>,
    conn: ConnectionHandle,
) {
    let mut w = BufWriter::with_capacity(64 * 1024, writer);
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
) {
    let oneway = request.is_oneway();
    let Some(processor) = dispatch.processor(request.code) else {
        debug!(conn = conn.id(), peer = %conn.peer_addr(), code = request.code, oneway,
            "no processor for request code");
        if !oneway {
            let remark = format!("request type {} not supported", request.code);
            conn.send_response(
                request.response_to(response_code::REQUEST_CODE_NOT_SUPPORTED, Some(remark)),
            )
            .await;
        }
        return;
    };
    let Ok(permit) = conn.inner.request_permits.clone().try_acquire_owned() else {
        let limit = conn.inner.max_in_flight_requests;
        warn!(conn = conn.id(), peer = %conn.peer_addr(), code = request.code, limit,
            "too many requests in flight on the connection; rejecting");
        if !oneway {
            let remark = format!("too many requests in flight on this connection (limit {limit})");
            conn.send_response(request.response_to(response_code::SYSTEM_BUSY, Some(remark)))
                .await;
        }
        return;
    };
    let token = dispatch.in_flight_token();
    let conn = conn.clone();
    tokio::spawn(async move {
        let (code, opaque, serialize_type) = (request.code, request.opaque, request.serialize_type);
        let ctx = RequestContext {
            peer: conn.peer_addr(),
            local: conn.local_addr(),
            connection: conn.clone(),
        };
        let outcome = CatchUnwind(processor.process(ctx, request)).await;
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
        if let Some(response) = response {
            conn.send_response(finish_response(response, opaque, serialize_type))
                .await;
        }
        drop(permit);
        drop(token);
    });
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
