//! The Remoting server: accepts connections and dispatches requests to processors by
//! request code.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rocketraft_common::trust::ClusterSecret;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::auth::{AuthGuard, AuthMetadata, AuthSettings};
use crate::codes::request_code;
use crate::command::RemotingCommand;
use crate::connection::{spawn_connection, ConnectionOptions, Dispatch};
use crate::error::RemotingError;
use crate::limits::{ServerBudget, ServerLimits, Throttle};
use crate::tls::{ServerTls, Transport};

pub use crate::connection::ConnectionHandle;

/// A boxed, sendable future.
pub type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Handles the requests of one or more request codes.
pub trait RequestProcessor: Send + Sync + 'static {
    /// Returns the response, or `None` for oneway requests / no reply.
    ///
    /// The server fixes up the returned command: it gets the request's opaque, the
    /// response flag and the request's header encoding. Responses to oneway requests are
    /// dropped.
    fn process(
        &self,
        ctx: RequestContext,
        request: RemotingCommand,
    ) -> BoxFuture<Option<RemotingCommand>>;
}

/// A [`RequestProcessor`] made from an async closure; see [`processor_fn`].
pub struct FnProcessor<F>(F);

impl<F, Fut> RequestProcessor for FnProcessor<F>
where
    F: Fn(RequestContext, RemotingCommand) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<RemotingCommand>> + Send + 'static,
{
    fn process(
        &self,
        ctx: RequestContext,
        request: RemotingCommand,
    ) -> BoxFuture<Option<RemotingCommand>> {
        Box::pin((self.0)(ctx, request))
    }
}

/// Wraps an async closure as a processor:
/// `processor_fn(|_ctx, req| async move { Some(req.response_to(0, None)) })`.
pub fn processor_fn<F, Fut>(f: F) -> Arc<dyn RequestProcessor>
where
    F: Fn(RequestContext, RemotingCommand) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<RemotingCommand>> + Send + 'static,
{
    Arc::new(FnProcessor(f))
}

/// Where a request came from.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The connection the request arrived on; keep it to push requests to the peer later.
    pub connection: ConnectionHandle,
    /// For a request handed over in memory by a client of this process
    /// ([`crate::ClientConfig::in_process`]): the credentials that client holds, which vouch
    /// for the request's `AccessKey` in place of a signature (see [`crate::auth::check`]).
    /// Never set for a request read off a socket.
    pub attested: Option<Arc<crate::SessionCredentials>>,
}

struct ServerDispatch {
    processors: HashMap<i32, Arc<dyn RequestProcessor>>,
    default_processor: Option<Arc<dyn RequestProcessor>>,
    in_flight: Arc<()>,
    rpc_metrics: Option<rocketraft_common::metrics::RpcMetrics>,
}

impl Dispatch for ServerDispatch {
    fn processor(&self, code: i32) -> Option<Arc<dyn RequestProcessor>> {
        self.processors
            .get(&code)
            .or(self.default_processor.as_ref())
            .cloned()
    }

    fn in_flight_token(&self) -> Option<Arc<()>> {
        Some(self.in_flight.clone())
    }

    fn rpc_metrics(&self) -> Option<&rocketraft_common::metrics::RpcMetrics> {
        self.rpc_metrics.as_ref()
    }
}

/// Configures a [`RemotingServer`].
pub struct RemotingServerBuilder {
    processors: HashMap<i32, Arc<dyn RequestProcessor>>,
    default_processor: Option<Arc<dyn RequestProcessor>>,
    max_connections: usize,
    max_in_flight_per_connection: usize,
    send_queue_capacity: usize,
    shutdown_grace: Duration,
    /// The cluster secret and the codes only trusted connections may send.
    trust: Option<(ClusterSecret, Vec<i32>)>,
    limits: ServerLimits,
    tls: Option<ServerTls>,
    /// ACL checks in front of every processor.
    auth: Option<(AuthSettings, Arc<dyn AuthMetadata>)>,
    /// `rocketmq_rpc_latency` of every request.
    rpc_metrics: Option<rocketraft_common::metrics::RpcMetrics>,
}

impl Default for RemotingServerBuilder {
    fn default() -> Self {
        Self {
            processors: HashMap::new(),
            default_processor: None,
            max_connections: crate::limits::DEFAULT_MAX_CONNECTIONS,
            max_in_flight_per_connection: 1024,
            send_queue_capacity: 1024,
            shutdown_grace: Duration::from_secs(3),
            trust: None,
            limits: ServerLimits::default(),
            tls: None,
            auth: None,
            rpc_metrics: None,
        }
    }
}

impl fmt::Debug for RemotingServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut codes: Vec<_> = self.processors.keys().copied().collect();
        codes.sort_unstable();
        f.debug_struct("RemotingServerBuilder")
            .field("codes", &codes)
            .field("default_processor", &self.default_processor.is_some())
            .field("max_connections", &self.max_connections)
            .field(
                "max_in_flight_per_connection",
                &self.max_in_flight_per_connection,
            )
            .field("send_queue_capacity", &self.send_queue_capacity)
            .field("shutdown_grace", &self.shutdown_grace)
            .finish()
    }
}

impl RemotingServerBuilder {
    /// Routes requests with `code` to `processor` (replacing an earlier registration).
    pub fn register(mut self, code: i32, processor: Arc<dyn RequestProcessor>) -> Self {
        self.processors.insert(code, processor);
        self
    }

    /// Handles every code without its own processor. Without one, such requests get
    /// REQUEST_CODE_NOT_SUPPORTED.
    pub fn default_processor(mut self, processor: Arc<dyn RequestProcessor>) -> Self {
        self.default_processor = Some(processor);
        self
    }

    /// Connections beyond this are closed right after accept (default 10 000).
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// Requests processed concurrently per connection; beyond it the server answers
    /// SYSTEM_BUSY (default 1024).
    pub fn max_in_flight_per_connection(mut self, max: usize) -> Self {
        self.max_in_flight_per_connection = max.max(1);
        self
    }

    /// Outbound frames queued per connection before writers wait (default 1024).
    pub fn send_queue_capacity(mut self, capacity: usize) -> Self {
        self.send_queue_capacity = capacity.max(1);
        self
    }

    /// How long shutdown waits for in-flight requests before closing connections
    /// (default 3 s).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// With a cluster secret, serves the `protected` codes only on connections whose peer
    /// proved the secret ([`crate::trust`]); without one (`None`), changes nothing.
    pub fn cluster_trust(mut self, secret: Option<ClusterSecret>, protected: &[i32]) -> Self {
        self.trust = secret.map(|s| (s, protected.to_vec()));
        self
    }

    /// Serves TLS as `tls` says ([`crate::tls`]); plaintext only without it.
    pub fn tls(mut self, tls: Option<ServerTls>) -> Self {
        self.tls = tls;
        self
    }

    /// What one peer may send ([`crate::limits`]); [`ServerLimits::default`] unless set.
    pub fn limits(mut self, limits: ServerLimits) -> Self {
        self.limits = limits;
        self
    }

    /// With authentication or authorization on in `settings`, checks every request against the
    /// users and ACLs of `metadata` before its processor runs ([`crate::auth`]); connections that
    /// proved the cluster secret are not checked. With both off, changes nothing.
    pub fn auth(mut self, settings: AuthSettings, metadata: Arc<dyn AuthMetadata>) -> Self {
        self.auth = settings.enabled().then_some((settings, metadata));
        self
    }

    /// Wraps every processor in an [`AuthGuard`].
    fn guard_all(&mut self) {
        let Some((settings, metadata)) = self.auth.take() else {
            return;
        };
        let replay = Arc::new(crate::auth::ReplayGuard::new(&settings));
        let settings = Arc::new(settings);
        let guard = |inner: Arc<dyn RequestProcessor>| -> Arc<dyn RequestProcessor> {
            Arc::new(AuthGuard {
                inner,
                settings: settings.clone(),
                metadata: metadata.clone(),
                replay: replay.clone(),
            })
        };
        for processor in self.processors.values_mut() {
            *processor = guard(processor.clone());
        }
        self.default_processor = self.default_processor.take().map(guard);
    }

    /// Records every request's latency (`rocketmq_rpc_latency`, labelled by request code,
    /// response code, long polling and result, as RocketMQ's RemotingMetricsManager does).
    pub fn rpc_metrics(mut self, metrics: Option<rocketraft_common::metrics::RpcMetrics>) -> Self {
        self.rpc_metrics = metrics;
        self
    }

    /// Binds the listening socket.
    pub async fn bind(mut self, addr: impl ToSocketAddrs) -> Result<RemotingServer, RemotingError> {
        self.guard_all();
        if let Some((secret, protected)) = self.trust.take() {
            for code in protected {
                let inner = self
                    .processors
                    .get(&code)
                    .or(self.default_processor.as_ref())
                    .cloned();
                if let Some(inner) = inner {
                    self.processors
                        .insert(code, Arc::new(crate::trust::Guarded { inner }));
                }
            }
            let handshake: Arc<dyn RequestProcessor> = Arc::new(crate::trust::Handshake { secret });
            self.processors
                .insert(request_code::TRUST_CHALLENGE, handshake.clone());
            self.processors.insert(request_code::TRUST_PROVE, handshake);
        }
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        Ok(RemotingServer {
            listener,
            local_addr,
            dispatch: Arc::new(ServerDispatch {
                processors: self.processors,
                default_processor: self.default_processor,
                in_flight: Arc::new(()),
                rpc_metrics: self.rpc_metrics,
            }),
            options: ConnectionOptions {
                max_in_flight_requests: self.max_in_flight_per_connection,
                send_queue_capacity: self.send_queue_capacity,
                server: Some(ServerBudget::new(self.limits)),
                tls: self.tls,
            },
            connection_limit: Arc::new(Semaphore::new(self.max_connections)),
            connections: Arc::new(Mutex::new(HashMap::new())),
            shutdown_grace: self.shutdown_grace,
        })
    }
}

type Registry = Arc<Mutex<HashMap<u64, ConnectionHandle>>>;

/// A bound Remoting server; run it with [`RemotingServer::serve`] or
/// [`RemotingServer::spawn`].
pub struct RemotingServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    dispatch: Arc<ServerDispatch>,
    options: ConnectionOptions,
    connection_limit: Arc<Semaphore>,
    connections: Registry,
    shutdown_grace: Duration,
}

impl fmt::Debug for RemotingServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemotingServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl RemotingServer {
    pub fn builder() -> RemotingServerBuilder {
        RemotingServerBuilder::default()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves; then stops accepting, gives in-flight requests
    /// up to the shutdown grace period to finish, closes every connection and returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let RemotingServer {
            listener,
            local_addr,
            dispatch,
            options,
            connection_limit,
            connections,
            shutdown_grace,
        } = self;
        info!(%local_addr, "remoting server listening");
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => accept(
                        stream,
                        peer,
                        &dispatch,
                        &options,
                        &connection_limit,
                        &connections,
                    ),
                    Err(e) => {
                        // Usually EMFILE/ENFILE: back off instead of spinning.
                        warn!(%local_addr, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        drop(listener);
        info!(%local_addr, "remoting server shutting down");

        let deadline = Instant::now() + shutdown_grace;
        while Arc::strong_count(&dispatch.in_flight) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let open: Vec<ConnectionHandle> = connections.lock().drain().map(|(_, c)| c).collect();
        for conn in open {
            conn.close();
        }
        info!(%local_addr, "remoting server stopped");
    }

    /// Runs the server on a task. Dropping the returned handle shuts the server down.
    pub fn spawn(self) -> ServerHandle {
        let local_addr = self.local_addr;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(self.serve(async move {
            let _ = rx.await;
        }));
        ServerHandle {
            local_addr,
            shutdown: Some(tx),
            task: Some(task),
        }
    }
}

/// Refused connections are logged at most once a second.
static CONNECTION_REFUSED: Throttle = Throttle::new();

fn accept(
    stream: TcpStream,
    peer: SocketAddr,
    dispatch: &Arc<ServerDispatch>,
    options: &ConnectionOptions,
    connection_limit: &Arc<Semaphore>,
    connections: &Registry,
) {
    let (dispatch, options) = (dispatch.clone(), options.clone());
    let (connection_limit, connections) = (connection_limit.clone(), connections.clone());
    if let Ok(permit) = connection_limit.clone().try_acquire_owned() {
        return admit_connection(stream, peer, dispatch, options, permit, &connections);
    }
    // At the limit: the longest idle connection gives way, if one is idle long enough.
    let idle_enough = options
        .server
        .as_ref()
        .map_or(Duration::MAX, |s| s.limits.evict_idle_after);
    let Some(victim) = longest_idle(&connections, idle_enough) else {
        if let Some(skipped) = CONNECTION_REFUSED.allow(Duration::from_secs(1)) {
            warn!(%peer, skipped, "connection limit reached and no connection is idle; closing the new connection");
        }
        return;
    };
    debug!(conn = victim.id(), idle = ?victim.idle_for(), %peer,
        "connection limit reached; closing the longest idle connection");
    victim.close();
    tokio::spawn(async move {
        let permit =
            tokio::time::timeout(Duration::from_secs(1), connection_limit.acquire_owned()).await;
        match permit {
            Ok(Ok(permit)) => {
                admit_connection(stream, peer, dispatch, options, permit, &connections)
            }
            _ => debug!(%peer, "no connection slot freed in time; closing the new connection"),
        }
    });
}

/// The open connection idle the longest, at least `at_least`, with no request in flight.
fn longest_idle(connections: &Registry, at_least: Duration) -> Option<ConnectionHandle> {
    connections
        .lock()
        .values()
        .filter(|c| !c.is_closed() && c.requests_in_flight() == 0)
        .map(|c| (c.idle_for(), c))
        .filter(|(idle, _)| *idle >= at_least)
        .max_by_key(|(idle, _)| *idle)
        .map(|(_, c)| c.clone())
}

/// Failed TLS handshakes are logged at most once a second.
static TLS_FAILED: Throttle = Throttle::new();

/// Opens an accepted connection: plaintext at once, or after its TLS handshake (on its own
/// task, within the frame timeout).
fn admit_connection(
    stream: TcpStream,
    peer: SocketAddr,
    dispatch: Arc<ServerDispatch>,
    options: ConnectionOptions,
    permit: OwnedSemaphorePermit,
    connections: &Registry,
) {
    let Some(tls) = options.tls.clone() else {
        let stream = Transport::Plain(stream);
        return open_connection(stream, peer, dispatch, options, permit, connections);
    };
    let within = options
        .server
        .as_ref()
        .map_or(Duration::from_secs(30), |s| s.limits.frame_timeout);
    let connections = connections.clone();
    tokio::spawn(async move {
        match tls.accept(stream, within).await {
            Ok(stream) => open_connection(stream, peer, dispatch, options, permit, &connections),
            Err(e) => {
                if let Some(skipped) = TLS_FAILED.allow(Duration::from_secs(1)) {
                    warn!(%peer, error = %e, mode = ?tls.mode(), skipped,
                        "TLS handshake failed; closing the connection");
                }
            }
        }
    });
}

fn open_connection(
    stream: Transport,
    peer: SocketAddr,
    dispatch: Arc<ServerDispatch>,
    options: ConnectionOptions,
    permit: OwnedSemaphorePermit,
    connections: &Registry,
) {
    let dispatch: Arc<dyn Dispatch> = dispatch;
    // Only while a client of this process may dispatch in-process (see `local`).
    let in_process = crate::local::wanted().then(|| (dispatch.clone(), options.clone()));
    let conn = match spawn_connection(stream, peer.to_string(), dispatch, options) {
        Ok(conn) => conn,
        Err(e) => {
            debug!(%peer, error = %e, "failed to set up an accepted connection");
            return;
        }
    };
    debug!(conn = conn.id(), %peer, "accepted connection");
    connections.lock().insert(conn.id(), conn.clone());
    let registered = in_process.is_some();
    if let Some((dispatch, options)) = in_process {
        crate::local::register(&conn, dispatch, &options);
    }
    let connections = connections.clone();
    tokio::spawn(async move {
        conn.closed().await;
        if registered {
            crate::local::unregister(&conn);
        }
        connections.lock().remove(&conn.id());
        drop(permit);
    });
}

/// A server running on its own task.
#[must_use = "dropping a ServerHandle shuts the server down"]
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the server and waits until it has shut down.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
