//! The async Remoting client: one multiplexed connection per address, requests matched
//! to responses by opaque.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::net::TcpStream;
use tokio::sync::{Mutex as AsyncMutex, Semaphore};
use tokio::time::{timeout_at, Instant};
use tracing::{debug, info};

use crate::auth::SessionCredentials;
use crate::command::{RemotingCommand, SerializeType};
use crate::connection::{spawn_connection, ConnectionHandle, ConnectionOptions, Dispatch};
use crate::error::RemotingError;
use crate::local::LocalEndpoint;
use crate::server::RequestProcessor;
use crate::tls::{ClientTls, Transport};
use rocketraft_common::trust::ClusterSecret;

/// Settings of a [`RemotingClient`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Upper bound for establishing a TCP connection (default 3 s); the request's own
    /// timeout applies too.
    pub connect_timeout: Duration,
    /// Requests awaiting a response per connection. Beyond it, `invoke` waits for a slot
    /// until its timeout and then fails with [`RemotingError::TooManyInFlight`]
    /// (default 4096).
    pub max_in_flight_per_connection: usize,
    /// The header encoding of every request this client sends (default JSON).
    pub serialize_type: SerializeType,
    /// How long `invoke_oneway` waits for room in the outbound queue (default 3 s).
    pub oneway_timeout: Duration,
    /// Server-initiated requests processed concurrently per connection (default 64).
    pub max_server_requests_per_connection: usize,
    /// Outbound frames queued per connection before senders wait (default 4096).
    pub send_queue_capacity: usize,
    /// With a cluster secret, every new connection first proves it and checks the server's
    /// proof ([`crate::trust`]); a server that cannot is not talked to.
    pub cluster_secret: Option<ClusterSecret>,
    /// With credentials, every request is signed as RocketMQ's `AclClientRPCHook` signs it
    /// ([`crate::auth::sign`]): for servers with `authenticationEnabled`.
    pub credentials: Option<SessionCredentials>,
    /// With TLS, every connection runs its TLS handshake first ([`crate::tls`]).
    pub tls: Option<ClientTls>,
    /// Requests to a server in this process go straight to its processors, as requests of
    /// this client's connection, without the codec and the socket ([`crate::local`]); the
    /// connection is still dialled and keeps heartbeats and the server's requests to the
    /// client. Off by default; a server in another process is always reached over TCP.
    pub in_process: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            max_in_flight_per_connection: 4096,
            serialize_type: SerializeType::Json,
            oneway_timeout: Duration::from_secs(3),
            max_server_requests_per_connection: 64,
            send_queue_capacity: 4096,
            cluster_secret: None,
            credentials: None,
            tls: None,
            in_process: false,
        }
    }
}

type HandlerSlot = Arc<RwLock<Option<Arc<dyn RequestProcessor>>>>;

/// Routes server-initiated requests to the client's handler, if any.
struct ClientDispatch {
    handler: HandlerSlot,
}

impl Dispatch for ClientDispatch {
    fn processor(&self, _code: i32) -> Option<Arc<dyn RequestProcessor>> {
        self.handler.read().clone()
    }
}

#[derive(Clone)]
struct ClientConnection {
    handle: ConnectionHandle,
    in_flight: Arc<Semaphore>,
    /// The server side of this connection when the server is in this process
    /// ([`ClientConfig::in_process`]).
    local: Arc<LocalSlot>,
}

/// How long after a dial the client looks for the server side of its connection in this
/// process: a server registers a connection once it has accepted it, which may be just after
/// the client's connect returned. Each request looks once (a hash lookup) until then.
const LOCAL_LOOKUP_FOR: Duration = Duration::from_secs(1);

/// What the client found of the server side of a connection.
struct LocalSlot {
    dialled: Instant,
    found: OnceLock<Option<LocalEndpoint>>,
}

impl LocalSlot {
    fn new(enabled: bool) -> LocalSlot {
        let found = OnceLock::new();
        if !enabled {
            let _ = found.set(None);
        }
        LocalSlot {
            dialled: Instant::now(),
            found,
        }
    }

    /// The in-process endpoint of `handle`'s connection, when its server is in this process.
    fn endpoint(&self, handle: &ConnectionHandle) -> Option<&LocalEndpoint> {
        if let Some(found) = self.found.get() {
            return found.as_ref();
        }
        match crate::local::find(handle.local_addr(), handle.peer_addr()) {
            Some(endpoint) => {
                debug!(conn = handle.id(), peer = %handle.peer_addr(),
                    "the server is in this process: requests are dispatched in-process");
                self.found.get_or_init(|| Some(endpoint)).as_ref()
            }
            None if self.dialled.elapsed() >= LOCAL_LOOKUP_FOR => {
                self.found.get_or_init(|| None).as_ref()
            }
            None => None,
        }
    }
}

type Slot = Arc<AsyncMutex<Option<ClientConnection>>>;

struct ClientInner {
    config: ClientConfig,
    slots: Mutex<HashMap<String, Slot>>,
    handler: HandlerSlot,
    /// Requests dispatched in-process ([`ClientConfig::in_process`]).
    local_dispatches: AtomicU64,
    /// The same, by server address.
    local_dispatches_to: Mutex<HashMap<String, u64>>,
    /// With [`ClientConfig::in_process`]: servers of this process register their connections.
    _local: Option<crate::local::LocalClient>,
    /// [`ClientConfig::credentials`], shared with the servers its in-process requests reach.
    attesting: Option<Arc<SessionCredentials>>,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        for slot in self.slots.get_mut().values() {
            if let Ok(guard) = slot.try_lock() {
                if let Some(conn) = guard.as_ref() {
                    conn.handle.close();
                }
            }
        }
    }
}

/// A request that waited at least this long without a single byte from the peer closes its
/// connection (see [`ConnectionHandle::received_since`]); shorter timeouts say too little.
const DEAD_AFTER: Duration = Duration::from_secs(1);

/// A Remoting client. Cheap to clone; clones share connections. Dropping the last clone
/// closes its connections.
#[derive(Clone)]
pub struct RemotingClient {
    inner: Arc<ClientInner>,
}

impl fmt::Debug for RemotingClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemotingClient")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Default for RemotingClient {
    fn default() -> Self {
        Self::new(ClientConfig::default())
    }
}

impl RemotingClient {
    fn count_local_dispatch(&self, addr: &str) {
        let mut by_addr = self.inner.local_dispatches_to.lock();
        match by_addr.get_mut(addr) {
            Some(n) => *n += 1,
            None => {
                by_addr.insert(addr.to_owned(), 1);
            }
        }
    }

    pub fn new(config: ClientConfig) -> Self {
        Self {
            inner: Arc::new(ClientInner {
                _local: config.in_process.then(crate::local::LocalClient::new),
                attesting: config.credentials.clone().map(Arc::new),
                config,
                slots: Mutex::new(HashMap::new()),
                handler: Arc::new(RwLock::new(None)),
                local_dispatches: AtomicU64::new(0),
                local_dispatches_to: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// How many requests this client (and its clones) dispatched in-process to a server of
    /// this process ([`ClientConfig::in_process`]) rather than over TCP.
    pub fn local_dispatches(&self) -> u64 {
        self.inner.local_dispatches.load(Ordering::Relaxed)
    }

    /// How many requests this client (and its clones) dispatched in-process to the server at
    /// `addr` (as given to [`RemotingClient::invoke`]).
    pub fn local_dispatches_to(&self, addr: &str) -> u64 {
        self.inner
            .local_dispatches_to
            .lock()
            .get(addr)
            .copied()
            .unwrap_or(0)
    }

    /// Sets the processor for requests the server sends to this client (e.g.
    /// CHECK_TRANSACTION_STATE). Without one, oneway requests are ignored and others are
    /// answered REQUEST_CODE_NOT_SUPPORTED.
    pub fn set_request_handler(&self, handler: Arc<dyn RequestProcessor>) {
        *self.inner.handler.write() = Some(handler);
    }

    /// Sends `request` to `addr` ("host:port") and waits for the response.
    ///
    /// `timeout` covers everything: connecting, waiting for an in-flight slot, sending
    /// and the response. The request's header is encoded with the configured
    /// [`ClientConfig::serialize_type`].
    pub async fn invoke(
        &self,
        addr: &str,
        mut request: RemotingCommand,
        timeout: Duration,
    ) -> Result<RemotingCommand, RemotingError> {
        let deadline = Instant::now() + timeout;
        request.serialize_type = self.inner.config.serialize_type;
        let conn = self.connection(addr, deadline, timeout).await?;
        let _permit = match timeout_at(deadline, conn.in_flight.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            // The semaphore is never closed; treat it like a closed connection anyway.
            Ok(Err(_)) => {
                return Err(RemotingError::ConnectionClosed {
                    addr: addr.to_owned(),
                })
            }
            Err(_) => {
                return Err(RemotingError::TooManyInFlight {
                    addr: addr.to_owned(),
                    limit: self.inner.config.max_in_flight_per_connection,
                })
            }
        };
        if !crate::local::keeps_tcp(request.code) {
            if let Some(local) = conn.local.endpoint(&conn.handle) {
                if !local.is_closed() {
                    self.inner.local_dispatches.fetch_add(1, Ordering::Relaxed);
                    self.count_local_dispatch(addr);
                    // Handed over in memory: the request names its user and the server's
                    // guard checks the credentials this client holds, not a signature (an
                    // HMAC of the whole request, a tenth of a proxied send's CPU).
                    let attested = self.inner.attesting.clone();
                    if let Some(credentials) = &attested {
                        crate::auth::attest(&mut request, credentials);
                    }
                    return local
                        .invoke(addr, request, attested, deadline, timeout)
                        .await;
                }
            }
        }
        self.sign(&mut request);
        let sent = Instant::now();
        let result = conn.handle.invoke_until(request, deadline, timeout).await;
        if matches!(result, Err(RemotingError::Timeout { .. }))
            && sent.elapsed() >= DEAD_AFTER
            && !conn.handle.received_since(sent)
        {
            // Nothing at all came back while this request waited: the connection is likely
            // dead (a partition drops packets without a reset). Close it so the next request
            // dials afresh instead of queueing behind TCP's retransmission backoff.
            info!(
                addr,
                conn = conn.handle.id(),
                timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                "no byte from the peer for a whole request timeout; closing the connection"
            );
            // `connection` redials once it finds the handle closed.
            conn.handle.close();
        }
        result
    }

    /// Sends `request` to `addr` with the oneway flag set; no response is expected.
    pub async fn invoke_oneway(
        &self,
        addr: &str,
        mut request: RemotingCommand,
    ) -> Result<(), RemotingError> {
        let timeout = self.inner.config.oneway_timeout;
        let deadline = Instant::now() + timeout;
        self.prepare(&mut request);
        let conn = self.connection(addr, deadline, timeout).await?;
        conn.handle
            .send_oneway_until(request, deadline, timeout)
            .await
    }

    /// Sets the configured header encoding and signs the request when credentials are set.
    fn prepare(&self, request: &mut RemotingCommand) {
        request.serialize_type = self.inner.config.serialize_type;
        self.sign(request);
    }

    /// Signs the request when credentials are set.
    fn sign(&self, request: &mut RemotingCommand) {
        if let Some(credentials) = &self.inner.config.credentials {
            crate::auth::sign(request, credentials);
        }
    }

    /// Closes the connection to `addr`, if any; pending requests on it fail with
    /// [`RemotingError::ConnectionClosed`]. The next request reconnects.
    pub fn close(&self, addr: &str) {
        let slot = self.inner.slots.lock().remove(addr);
        let Some(slot) = slot else { return };
        let closed_now = match slot.try_lock() {
            Ok(mut guard) => {
                if let Some(conn) = guard.take() {
                    conn.handle.close();
                }
                true
            }
            Err(_) => false,
        };
        if closed_now {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            // A dial is in progress: close whatever it produces.
            runtime.spawn(async move {
                if let Some(conn) = slot.lock().await.take() {
                    conn.handle.close();
                }
            });
        }
    }

    /// The live connection to `addr`, if there is one (e.g. to watch for its closing).
    pub async fn connection_handle(&self, addr: &str) -> Option<ConnectionHandle> {
        let slot = self.inner.slots.lock().get(addr).cloned()?;
        let guard = slot.lock().await;
        guard
            .as_ref()
            .filter(|c| !c.handle.is_closed())
            .map(|c| c.handle.clone())
    }

    /// The connection to `addr`, reusing a live one or dialling a new one. Concurrent
    /// callers for the same address share one dial.
    async fn connection(
        &self,
        addr: &str,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<ClientConnection, RemotingError> {
        let slot = self
            .inner
            .slots
            .lock()
            .entry(addr.to_owned())
            .or_default()
            .clone();
        let mut guard = match timeout_at(deadline, slot.lock()).await {
            Ok(guard) => guard,
            Err(_) => return Err(timeout_error(addr, timeout)),
        };
        if let Some(conn) = guard.as_ref() {
            if !conn.handle.is_closed() {
                return Ok(conn.clone());
            }
            debug!(addr, "connection is closed; reconnecting");
        }
        let conn = self.dial(addr, deadline, timeout).await?;
        *guard = Some(conn.clone());
        Ok(conn)
    }

    async fn dial(
        &self,
        addr: &str,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<ClientConnection, RemotingError> {
        let config = &self.inner.config;
        let connect_deadline = deadline.min(Instant::now() + config.connect_timeout);
        let stream = match timeout_at(connect_deadline, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => {
                return Err(RemotingError::Connect {
                    addr: addr.to_owned(),
                    source,
                })
            }
            Err(_) if connect_deadline >= deadline => return Err(timeout_error(addr, timeout)),
            Err(_) => {
                return Err(RemotingError::Connect {
                    addr: addr.to_owned(),
                    source: io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
                })
            }
        };
        let stream = match &config.tls {
            None => Transport::Plain(stream),
            Some(tls) => match timeout_at(connect_deadline, tls.connect(stream, addr)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(source)) => {
                    return Err(RemotingError::Connect {
                        addr: addr.to_owned(),
                        source,
                    })
                }
                Err(_) => return Err(timeout_error(addr, timeout)),
            },
        };
        let dispatch: Arc<dyn Dispatch> = Arc::new(ClientDispatch {
            handler: self.inner.handler.clone(),
        });
        let options = ConnectionOptions {
            max_in_flight_requests: config.max_server_requests_per_connection,
            send_queue_capacity: config.send_queue_capacity,
            server: None,
            tls: None,
        };
        let handle =
            spawn_connection(stream, addr.to_owned(), dispatch, options).map_err(|source| {
                RemotingError::Connect {
                    addr: addr.to_owned(),
                    source,
                }
            })?;
        debug!(addr, conn = handle.id(), "connected");
        if let Some(secret) = &config.cluster_secret {
            if let Err(e) = crate::trust::authenticate(&handle, secret, deadline, timeout).await {
                handle.close();
                return Err(e);
            }
        }
        Ok(ClientConnection {
            handle,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight_per_connection.max(1))),
            local: Arc::new(LocalSlot::new(config.in_process)),
        })
    }
}

fn timeout_error(addr: &str, timeout: Duration) -> RemotingError {
    RemotingError::Timeout {
        addr: addr.to_owned(),
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
    }
}
