//! In-process dispatch: a [`crate::RemotingClient`] in the same process as the
//! [`crate::RemotingServer`] it calls hands its requests straight to the server's processors,
//! without encoding a frame, writing it to a socket, reading and decoding it (and the response
//! the same way back). Apache RocketMQ's proxy does the same in `ProxyMode.LOCAL`
//! (`LocalMessageService` calls the broker's processors).
//!
//! # How a client finds the server
//!
//! The client still dials the server over TCP (with TLS and cluster trust as configured) and
//! keeps that connection. While such a client exists, every connection a server of this
//! process accepts is registered here by its two addresses (none is when there is none); a client with [`crate::ClientConfig::in_process`] looks up the server
//! side of its own connection (its local address is the server connection's peer, its peer the
//! server connection's local address). When it is there, the server is in this process and the
//! client's requests are dispatched in-process *as requests of that connection*: the
//! processors see the same [`RequestContext`] as for a request that came over the socket (the
//! connection's peer address, which the broker records as the born host; its cluster trust;
//! the connection the broker keys a registered client by and pushes requests down). No address
//! is guessed: a server elsewhere (another process, another host) never matches.
//!
//! # What the server still does
//!
//! Everything it does for a request off the socket except the codec: the processor registered
//! for the code (wrapped by ACL/authentication and cluster-trust guards, so a signed request is
//! checked as over TCP), the request's size by code and header size ([`ServerLimits`]), the
//! bytes it may hold (the connection's own share and the server's total), the connection's own
//! in-flight limit (SYSTEM_BUSY beyond it), the shutdown's wait for requests in flight, the
//! `rocketmq_rpc_latency` record, a panicking processor answered SYSTEM_ERROR, and the response
//! given the request's opaque, flag and header encoding: the one code path
//! ([`crate::connection::start_request`]) a request off the socket takes. The byte share and
//! the in-flight permits are the connection's, shared by its requests of both paths. Each
//! in-process request is activity of the connection, as bytes off its socket are: its idle
//! timeout and the server's eviction of its longest idle connection see it. The processor
//! runs on its own task, as off the socket: a request whose caller gave up (timeout) still
//! completes.
//!
//! # What stays on TCP
//!
//! Requests the server sends to the client (CHECK_TRANSACTION_STATE, NOTIFY_CONSUMER_IDS_CHANGED)
//! go down the TCP connection, which the in-process requests name as theirs. Heartbeats and
//! client unregistrations ([`keeps_tcp`]) go over it too: a server closes a connection that
//! sends nothing for its idle time, and closing it would drop the clients registered by it and
//! the channel for those pushes. Oneway requests go over TCP as well.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::{timeout_at, Instant};
use tracing::{debug, error};

use crate::codes::request_code;
use crate::command::{RemotingCommand, SerializeType};
use crate::connection::{start_request, ConnectionHandle, ConnectionOptions, Dispatch, Started};
use crate::error::{CodecError, RemotingError};
use crate::header;
use crate::limits::ServerLimits;

/// The requests a client keeps sending over its TCP connection (see the module docs).
pub fn keeps_tcp(code: i32) -> bool {
    matches!(
        code,
        request_code::HEART_BEAT
            | request_code::UNREGISTER_CLIENT
            | request_code::TRUST_CHALLENGE
            | request_code::TRUST_PROVE
    )
}

/// A server connection of this process, by (its local address, its peer address).
struct Accepted {
    conn: ConnectionHandle,
    dispatch: Arc<dyn Dispatch>,
    options: ConnectionOptions,
}

type Registry = Mutex<HashMap<(SocketAddr, SocketAddr), Accepted>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

/// The clients of this process with [`crate::ClientConfig::in_process`]: servers register
/// the connections they accept only while there is one (a process without an in-process
/// proxy pays nothing for this module).
static LOCAL_CLIENTS: AtomicUsize = AtomicUsize::new(0);

/// Held by a client with [`crate::ClientConfig::in_process`] for its lifetime: while one is
/// held, servers of this process register the connections they accept. A client makes it
/// before it dials, so the server side of each of its connections is accepted after it.
pub(crate) struct LocalClient(());

impl LocalClient {
    pub(crate) fn new() -> LocalClient {
        LOCAL_CLIENTS.fetch_add(1, Ordering::SeqCst);
        LocalClient(())
    }
}

impl Drop for LocalClient {
    fn drop(&mut self) {
        LOCAL_CLIENTS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether a server should [`register`] the connections it accepts: a client of this process
/// may dispatch in-process.
pub(crate) fn wanted() -> bool {
    LOCAL_CLIENTS.load(Ordering::SeqCst) > 0
}

/// Records a connection a server of this process accepted (the server calls it when
/// [`wanted`]).
pub(crate) fn register(
    conn: &ConnectionHandle,
    dispatch: Arc<dyn Dispatch>,
    options: &ConnectionOptions,
) {
    registry().lock().insert(
        (conn.local_addr(), conn.peer_addr()),
        Accepted {
            conn: conn.clone(),
            dispatch,
            options: options.clone(),
        },
    );
}

/// Forgets a closed server connection (the server calls it).
pub(crate) fn unregister(conn: &ConnectionHandle) {
    let mut registry = registry().lock();
    let key = (conn.local_addr(), conn.peer_addr());
    if registry.get(&key).is_some_and(|a| a.conn.id() == conn.id()) {
        registry.remove(&key);
    }
}

/// The server side, in this process, of a client connection from `client_local` to
/// `client_peer`, if there is one.
pub(crate) fn find(client_local: SocketAddr, client_peer: SocketAddr) -> Option<LocalEndpoint> {
    let registry = registry().lock();
    let accepted = registry.get(&(client_peer, client_local))?;
    if accepted.conn.is_closed() {
        return None;
    }
    Some(LocalEndpoint {
        conn: accepted.conn.clone(),
        dispatch: Arc::downgrade(&accepted.dispatch),
        limits: accepted.options.server.as_ref().map(|s| s.limits.clone()),
    })
}

/// A server connection of this process that a client dispatches its requests to in-process.
pub(crate) struct LocalEndpoint {
    /// The server side of the client's TCP connection: the requests' connection.
    conn: ConnectionHandle,
    /// The server's processors; weak, so that a client holding this endpoint does not keep a
    /// stopped server's processors (and what they hold) alive.
    dispatch: Weak<dyn Dispatch>,
    /// The server's limits (a server always has them). The in-flight limit and the byte
    /// budget are the connection's own ([`ConnectionHandle`]), shared with its requests off
    /// the socket.
    limits: Option<Arc<ServerLimits>>,
}

/// The bytes a request takes as a frame: its encoded header (exactly, in the request's
/// serialize type) and the frame's length words and body: (header, frame).
fn request_len(request: &RemotingCommand) -> (usize, usize) {
    let header = encoded_header_len(request);
    (header, 4 + header + request.body.len())
}

/// The exact length of `cmd`'s header as [`header::encode_json`] or
/// [`header::encode_binary`] writes it, without writing it.
fn encoded_header_len(cmd: &RemotingCommand) -> usize {
    match cmd.serialize_type {
        // The binary header has no escapes: its size hint is exact.
        SerializeType::RocketMq => header::size_hint(cmd),
        SerializeType::Json => {
            let mut len = r#"{"code":"#.len()
                + decimal_len(cmd.code)
                + r#","language":"#.len()
                + json_str_len(cmd.language.name())
                + r#","version":"#.len()
                + decimal_len(cmd.version)
                + r#","opaque":"#.len()
                + decimal_len(cmd.opaque)
                + r#","flag":"#.len()
                + decimal_len(cmd.flag);
            if let Some(remark) = &cmd.remark {
                len += r#","remark":"#.len() + json_str_len(remark);
            }
            if !cmd.ext_fields.is_empty() {
                // `,"extFields":{` + `"k":"v"` joined by commas + `}`
                len += r#","extFields":{"#.len() + cmd.ext_fields.len() - 1 + 1;
                len += cmd
                    .ext_fields
                    .iter()
                    .map(|(k, v)| json_str_len(k) + 1 + json_str_len(v))
                    .sum::<usize>();
            }
            len + r#","serializeTypeCurrentRPC":"#.len()
                + json_str_len(SerializeType::Json.name())
                + 1
        }
    }
}

/// The digits (and sign) of `value` in decimal.
fn decimal_len(value: i32) -> usize {
    let digits = value
        .unsigned_abs()
        .checked_ilog10()
        .map_or(1, |d| d as usize + 1);
    digits + usize::from(value < 0)
}

/// The length of `s` as a JSON string, quotes included, with serde_json's escapes.
fn json_str_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | 0x08 | 0x09 | 0x0A | 0x0C | 0x0D => 2,
            0x00..=0x1F => 6,
            _ => 1,
        })
        .sum::<usize>()
}

impl LocalEndpoint {
    /// Whether the connection the requests are made on is still open.
    pub(crate) fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// Processes `request` in-process and answers its response, or an error as the TCP path
    /// would give (a closed connection, a timeout at `deadline`, a request too large).
    pub(crate) async fn invoke(
        &self,
        addr: &str,
        request: RemotingCommand,
        attested: Option<Arc<crate::SessionCredentials>>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<RemotingCommand, RemotingError> {
        let closed = || RemotingError::ConnectionClosed {
            addr: addr.to_owned(),
        };
        let timed_out = || RemotingError::Timeout {
            addr: addr.to_owned(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        if self.conn.is_closed() {
            return Err(closed());
        }
        // A server that stopped is gone with its processors: as a closed connection.
        let Some(dispatch) = self.dispatch.upgrade() else {
            return Err(closed());
        };
        // Activity of the connection, as bytes off its socket: its idle timeout and the
        // server's eviction of the longest idle connection see it.
        self.conn.note_read();
        let code = request.code;
        let mut bytes = None;
        if let Some(limits) = &self.limits {
            // What the server's reader refuses before reading a frame's body.
            let (header, len) = request_len(&request);
            let max = limits.max_request_len(code);
            if header > limits.max_header_len {
                return Err(RemotingError::Codec(CodecError::HeaderTooLarge(header)));
            }
            if len > max {
                return Err(RemotingError::Codec(CodecError::FrameTooLarge { len, max }));
            }
            if let Some(budget) = self.conn.budget() {
                bytes = match timeout_at(deadline, budget.reserve(len)).await {
                    Ok(Some(bytes)) => Some(bytes),
                    Ok(None) => return Err(closed()),
                    Err(_) => return Err(timed_out()),
                };
            }
        }
        let run = match start_request(&self.conn, &dispatch, request, bytes, attested) {
            Started::Answered(response) => return Ok(response),
            Started::Running(run) => run,
        };
        // Its own task, as a request off the socket: it completes even if the caller gives up.
        let conn_id = self.conn.id();
        let task = tokio::spawn(async move {
            let (response, in_flight) = run.await;
            drop(in_flight);
            response
        });
        match timeout_at(deadline, task).await {
            Ok(Ok(Some(response))) => Ok(response),
            // No answer: over TCP the caller would wait for its whole timeout.
            Ok(Ok(None)) => Err(timed_out()),
            // The task was cancelled: the runtime is shutting down, as a connection closing.
            Ok(Err(e)) if e.is_cancelled() => {
                debug!(conn = conn_id, code, "in-process request cancelled");
                Err(closed())
            }
            // A processor's panic is answered SYSTEM_ERROR inside the run; this is a bug here.
            Ok(Err(e)) => {
                error!(conn = conn_id, code, error = %e, "in-process request task failed");
                Err(closed())
            }
            Err(_) => Err(timed_out()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::codes::response_code;
    use crate::command::ONEWAY_FLAG;
    use crate::server::RequestContext;
    use crate::{processor_fn, ClientConfig, RemotingClient, RemotingServer};

    const ECHO: i32 = 9001;
    const PANIC: i32 = 9002;
    const SLOW: i32 = 9004;
    /// Held until the test releases it ([`HELD_RELEASE`]); sets [`HELD_DONE`] when it ends.
    const HELD: i32 = 9005;
    static HELD_RELEASE: tokio::sync::Notify = tokio::sync::Notify::const_new();
    static HELD_DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    /// A server whose ECHO answers the peer address it saw in the remark, and whose PANIC
    /// panics; a client of it with `in_process`, after its requests went in-process.
    async fn server_and_client() -> (crate::ServerHandle, RemotingClient, String) {
        server_and_client_with(crate::ServerLimits::default(), 1024).await
    }

    async fn server_and_client_with(
        limits: crate::ServerLimits,
        max_in_flight: usize,
    ) -> (crate::ServerHandle, RemotingClient, String) {
        let echoes = processor_fn(|ctx: RequestContext, req: RemotingCommand| async move {
            Some(req.response_to(response_code::SUCCESS, Some(ctx.peer.to_string())))
        });
        let panics = processor_fn(|_ctx: RequestContext, _req: RemotingCommand| async move {
            panic!("a processor bug");
        });
        let server = RemotingServer::builder()
            .register(ECHO, echoes)
            .register(PANIC, panics)
            .register(
                SLOW,
                processor_fn(|_ctx: RequestContext, _req: RemotingCommand| async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    None
                }),
            )
            .register(
                HELD,
                processor_fn(|_ctx: RequestContext, req: RemotingCommand| async move {
                    HELD_RELEASE.notified().await;
                    HELD_DONE.store(true, std::sync::atomic::Ordering::SeqCst);
                    Some(req.response_to(response_code::SUCCESS, None))
                }),
            )
            .limits(limits)
            .max_in_flight_per_connection(max_in_flight)
            .bind("127.0.0.1:0")
            .await
            .expect("bind")
            .spawn();
        let addr = server.local_addr().to_string();
        let client = RemotingClient::new(ClientConfig {
            in_process: true,
            ..ClientConfig::default()
        });
        let started = std::time::Instant::now();
        while client.local_dispatches() == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "never in-process"
            );
            echo(&client, &addr).await;
        }
        (server, client, addr)
    }

    /// Polls `done` every `every` until it holds; fails the test with `what` after `limit`.
    async fn wait_until(
        what: &str,
        limit: Duration,
        every: Duration,
        mut done: impl FnMut() -> bool,
    ) {
        let started = std::time::Instant::now();
        while !done() {
            assert!(started.elapsed() < limit, "{what}");
            tokio::time::sleep(every).await;
        }
    }

    /// One ECHO request (5 s timeout).
    async fn echo(client: &RemotingClient, addr: &str) -> RemotingCommand {
        client
            .invoke(addr, RemotingCommand::request(ECHO), Duration::from_secs(5))
            .await
            .expect("echo")
    }

    #[tokio::test]
    async fn in_process_requests_are_attested_not_signed() {
        // The processor reports what authenticates each request: its Signature field and the
        // credentials its context carries.
        const WHO: i32 = 9006;
        let who = processor_fn(|ctx: RequestContext, req: RemotingCommand| async move {
            let attested = ctx
                .attested
                .as_ref()
                .map(|c| format!("{}/{}", c.access_key, c.secret_key));
            Some(
                req.response_to(response_code::SUCCESS, None)
                    .with_ext("signature", req.ext(crate::auth::SIGNATURE).unwrap_or("-"))
                    .with_ext("accessKey", req.ext(crate::auth::ACCESS_KEY).unwrap_or("-"))
                    .with_ext("attested", attested.unwrap_or_else(|| "-".into())),
            )
        });
        let server = RemotingServer::builder()
            .register(WHO, who)
            .bind("127.0.0.1:0")
            .await
            .expect("bind")
            .spawn();
        let addr = server.local_addr().to_string();
        let credentials = crate::SessionCredentials::new("inner", "s3cret").expect("credentials");
        let ask = |client: RemotingClient| {
            let addr = addr.clone();
            async move {
                client
                    .invoke(&addr, RemotingCommand::request(WHO), Duration::from_secs(5))
                    .await
                    .expect("who")
            }
        };
        let local = RemotingClient::new(ClientConfig {
            in_process: true,
            credentials: Some(credentials.clone()),
            ..ClientConfig::default()
        });
        // Until the server registered the connection, requests go over TCP, signed.
        let first = ask(local.clone()).await;
        if local.local_dispatches() == 0 {
            assert_ne!(first.ext("signature"), Some("-"), "over TCP: signed");
            assert_eq!(first.ext("attested"), Some("-"));
        }
        let started = std::time::Instant::now();
        let mut r = first;
        while local.local_dispatches() == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "never in-process"
            );
            r = ask(local.clone()).await;
        }
        assert_eq!(r.ext("signature"), Some("-"), "in-process: no HMAC");
        assert_eq!(
            r.ext("accessKey"),
            Some("inner"),
            "the request names its user"
        );
        assert_eq!(r.ext("attested"), Some("inner/s3cret"));

        // A client of another process (TCP only) signs, and its requests carry no attestation.
        let remote = RemotingClient::new(ClientConfig {
            credentials: Some(credentials),
            ..ClientConfig::default()
        });
        let r = ask(remote.clone()).await;
        assert_eq!(remote.local_dispatches(), 0);
        assert_ne!(r.ext("signature"), Some("-"));
        assert_eq!(r.ext("accessKey"), Some("inner"));
        assert_eq!(r.ext("attested"), Some("-"));
        server.shutdown().await;
    }

    #[tokio::test]
    async fn requests_run_in_process_as_requests_of_the_connection() {
        let (server, client, addr) = server_and_client().await;
        let handle = client.connection_handle(&addr).await.expect("connection");
        let before = client.local_dispatches();
        let request = RemotingCommand::request(ECHO);
        let opaque = request.opaque;
        let r = client
            .invoke(&addr, request, Duration::from_secs(5))
            .await
            .expect("echo");
        assert_eq!(client.local_dispatches(), before + 1);
        assert!(r.is_response());
        assert_eq!(r.opaque, opaque);
        assert_eq!(
            r.remark.as_deref(),
            Some(handle.local_addr().to_string().as_str())
        );

        // A panicking processor answers SYSTEM_ERROR, an unknown code REQUEST_CODE_NOT_SUPPORTED.
        let r = client
            .invoke(
                &addr,
                RemotingCommand::request(PANIC),
                Duration::from_secs(5),
            )
            .await
            .expect("an answer");
        assert_eq!(r.code, response_code::SYSTEM_ERROR);
        let r = client
            .invoke(
                &addr,
                RemotingCommand::request(9003),
                Duration::from_secs(5),
            )
            .await
            .expect("an answer");
        assert_eq!(r.code, response_code::REQUEST_CODE_NOT_SUPPORTED);

        // A request larger than the server takes for its code is refused, as its frame would be.
        let large = RemotingCommand::request(ECHO).with_body(vec![0u8; 5 << 20]);
        let e = client
            .invoke(&addr, large, Duration::from_secs(5))
            .await
            .expect_err("too large");
        assert!(
            matches!(e, RemotingError::Codec(CodecError::FrameTooLarge { .. })),
            "{e}"
        );

        // Heartbeats keep to the socket.
        assert!(keeps_tcp(request_code::HEART_BEAT));
        assert!(!keeps_tcp(request_code::SEND_MESSAGE_V2));

        // A closed connection is dialled again and found again.
        client.close(&addr);
        let started = std::time::Instant::now();
        let before = client.local_dispatches();
        while client.local_dispatches() == before {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "never in-process again"
            );
            echo(&client, &addr).await;
        }
        server.shutdown().await;
    }

    #[tokio::test]
    async fn in_process_requests_keep_the_connection_from_idling_out() {
        let idle = Duration::from_millis(500);
        let (server, client, addr) = server_and_client_with(
            crate::ServerLimits {
                idle_timeout: Some(idle),
                ..crate::ServerLimits::default()
            },
            1024,
        )
        .await;
        let handle = client.connection_handle(&addr).await.expect("connection");
        let before = client.local_dispatches_to(&addr);
        // Four idle timeouts of in-process requests only: the connection stays.
        let started = std::time::Instant::now();
        while started.elapsed() < idle * 4 {
            echo(&client, &addr).await;
            tokio::time::sleep(idle / 5).await;
        }
        assert!(client.local_dispatches_to(&addr) > before + 10);
        assert!(
            !handle.is_closed(),
            "the server closed a connection busy in-process"
        );
        let again = client.connection_handle(&addr).await.expect("connection");
        assert_eq!(again.id(), handle.id(), "the connection was dialled again");
        // Silent for longer than the idle timeout: the server closes it (the timeout is live).
        wait_until(
            "an idle connection was not closed",
            idle * 6,
            idle / 10,
            || handle.is_closed(),
        )
        .await;
        server.shutdown().await;
    }

    #[tokio::test]
    async fn in_process_requests_share_the_connections_in_flight_limit() {
        let (server, client, addr) =
            server_and_client_with(crate::ServerLimits::default(), 1).await;
        let handle = client.connection_handle(&addr).await.expect("connection");
        let endpoint = find(handle.local_addr(), handle.peer_addr()).expect("in this process");
        // A oneway request over the socket holds the connection's one permit while its
        // processor runs: an in-process request is refused as a second one off the socket.
        client
            .invoke_oneway(&addr, RemotingCommand::request(SLOW))
            .await
            .expect("oneway");
        let (limit, every) = (Duration::from_secs(5), Duration::from_millis(5));
        wait_until("the oneway never ran", limit, every, || {
            endpoint.conn.requests_in_flight() > 0
        })
        .await;
        let r = client
            .invoke(
                &addr,
                RemotingCommand::request(ECHO),
                Duration::from_secs(5),
            )
            .await
            .expect("an answer");
        assert_eq!(r.code, response_code::SYSTEM_BUSY);
        wait_until("the oneway never ended", limit, every, || {
            endpoint.conn.requests_in_flight() == 0
        })
        .await;
        let r = client
            .invoke(
                &addr,
                RemotingCommand::request(ECHO),
                Duration::from_secs(5),
            )
            .await
            .expect("an answer");
        assert_eq!(r.code, response_code::SUCCESS);
        server.shutdown().await;
    }

    /// The caller's future dropped while its request is in the processor: the processor
    /// still completes on its own task, the connection's in-flight permit and its byte share
    /// come back, and the connection keeps answering in-process.
    #[tokio::test]
    async fn a_cancelled_in_process_request_gives_back_its_permit_and_bytes() {
        let limits = crate::ServerLimits {
            buffered_per_connection: 4096,
            ..crate::ServerLimits::default()
        };
        let (server, client, addr) = server_and_client_with(limits, 1).await;
        let handle = client.connection_handle(&addr).await.expect("connection");
        let endpoint = find(handle.local_addr(), handle.peer_addr()).expect("in this process");
        let dispatched = client.local_dispatches();
        // 3,000 of the connection's 4,096 bytes and its only permit, held by HELD until the
        // test releases it (no race with a timer on a busy machine).
        let body = vec![7u8; 3000];
        let caller = tokio::spawn({
            let client = client.clone();
            let addr = addr.clone();
            let body = body.clone();
            async move {
                client
                    .invoke(
                        &addr,
                        RemotingCommand::request(HELD).with_body(body),
                        Duration::from_secs(5),
                    )
                    .await
            }
        });
        let (limit, every) = (Duration::from_secs(5), Duration::from_millis(2));
        wait_until("the request never ran", limit, every, || {
            endpoint.conn.requests_in_flight() > 0
        })
        .await;
        caller.abort();
        let cancelled = caller.await.expect_err("the caller was cancelled");
        assert!(cancelled.is_cancelled());
        assert_eq!(client.local_dispatches(), dispatched + 1);
        // The request outlives its caller: it still holds the permit, on its own task, and
        // finishes once released.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(endpoint.conn.requests_in_flight(), 1);
        assert!(!HELD_DONE.load(std::sync::atomic::Ordering::SeqCst));
        HELD_RELEASE.notify_one();
        wait_until("the permit never came back", limit, every, || {
            endpoint.conn.requests_in_flight() == 0
        })
        .await;
        // Another 3,000 bytes fit only if the cancelled request's came back, and one more
        // request runs only if its permit did.
        let r = client
            .invoke(
                &addr,
                RemotingCommand::request(ECHO).with_body(body),
                Duration::from_secs(2),
            )
            .await
            .expect("an answer");
        assert_eq!(r.code, response_code::SUCCESS);
        assert!(HELD_DONE.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(client.local_dispatches(), dispatched + 2);
        assert!(!handle.is_closed());
        server.shutdown().await;
    }

    #[test]
    fn the_header_length_is_the_encoded_length() {
        let mut commands = vec![
            RemotingCommand::request(ECHO),
            RemotingCommand::request(-7).with_ext("a", "b"),
            RemotingCommand::request(-32_768)
                .with_ext("i", "KEYS\u{1}k1 k2\u{2}TAGS\u{1}t\u{2}")
                .with_ext(
                    "quote\"back\\slash",
                    "tab\tnew\nline\r\u{8}\u{c}\u{1f}\u{7f}é",
                )
                .with_ext("topic", "T"),
            RemotingCommand::response(response_code::SYSTEM_ERROR, Some("a \"remark\"\n".into())),
        ];
        commands[0].opaque = i32::MAX;
        commands[0].flag = ONEWAY_FLAG;
        commands[2].opaque = i32::MIN;
        for serialize_type in [SerializeType::Json, SerializeType::RocketMq] {
            for cmd in &commands {
                let mut cmd = cmd.clone();
                cmd.serialize_type = serialize_type;
                let mut encoded = Vec::new();
                match serialize_type {
                    SerializeType::Json => header::encode_json(&cmd, &mut encoded),
                    SerializeType::RocketMq => header::encode_binary(&cmd, &mut encoded),
                }
                .expect("encode");
                assert_eq!(encoded_header_len(&cmd), encoded.len(), "{cmd:?}");
            }
        }
    }

    #[tokio::test]
    async fn a_stopped_servers_processors_are_not_held_by_its_clients() {
        let (server, client, addr) = server_and_client().await;
        assert!(client.local_dispatches_to(&addr) > 0);
        assert_eq!(client.local_dispatches_to("127.0.0.1:1"), 0);
        let endpoint = {
            let handle = client.connection_handle(&addr).await.expect("connection");
            find(handle.local_addr(), handle.peer_addr()).expect("in this process")
        };
        server.shutdown().await;
        wait_until(
            "the stopped server's processors are still alive",
            Duration::from_secs(5),
            Duration::from_millis(10),
            || endpoint.dispatch.upgrade().is_none(),
        )
        .await;
        let e = endpoint
            .invoke(
                &addr,
                RemotingCommand::request(ECHO),
                None,
                Instant::now() + Duration::from_secs(1),
                Duration::from_secs(1),
            )
            .await
            .expect_err("a stopped server");
        assert!(matches!(e, RemotingError::ConnectionClosed { .. }), "{e}");
    }

    #[tokio::test]
    async fn a_client_without_in_process_goes_over_tcp() {
        let (server, _local, addr) = server_and_client().await;
        let client = RemotingClient::default();
        for _ in 0..3 {
            echo(&client, &addr).await;
        }
        assert_eq!(client.local_dispatches(), 0);
        server.shutdown().await;
    }
}
