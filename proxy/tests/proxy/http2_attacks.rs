//! Hostile HTTP/2 clients against the proxy with its default [`GrpcLimits`], in front of a
//! real NameServer and broker on loopback: a client that ignores SETTINGS_MAX_CONCURRENT_STREAMS,
//! a rapid-reset flood (open + RST_STREAM in a loop, CVE-2023-44487), oversized header blocks
//! (one too large, one that never ends: a CONTINUATION flood), and requests whose gRPC length
//! prefix declares more than the inbound limit with no body behind it. Each is refused with the
//! protocol's own answer (REFUSED_STREAM, GOAWAY ENHANCE_YOUR_CALM, 431, gRPC OUT_OF_RANGE),
//! the process's resident memory stays bounded, and an honest gRPC client on another connection
//! sends a message and receives it back during and after every attack. Streams that declare
//! exactly the limit and stall cost address space (tonic reserves the declared length), not
//! resident memory.
//!
//! The attacks that break the protocol (too many streams, resets, endless header blocks) write
//! raw frames, since a conforming client (the `h2` crate's) will not; the others use `h2`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use rocketraft_broker::Broker;
use rocketraft_common::TopicConfig;
use rocketraft_nameserver::NameServer;
use rocketraft_proxy::pb;
use rocketraft_proxy::pb::messaging_service_client::MessagingServiceClient;
use rocketraft_proxy::{GrpcLimits, Proxy, ProxyConfig, SecurityConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tonic::codegen::http;

const TOPIC: &str = "H2AttackTopic";
const GROUP: &str = "H2AttackGroup";
const SEND_PATH: &str = "/apache.rocketmq.v2.MessagingService/SendMessage";

// HTTP/2 frame types, flags and error codes (RFC 9113).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const CANCEL: u32 = 0x8;
const REFUSED_STREAM: u32 = 0x7;
const ENHANCE_YOUR_CALM: u32 = 0xb;
const COMPRESSION_ERROR: u32 = 0x9;

/// The resident set growth each attack may cause in this process (proxy, broker, NameServer
/// and the attacker together).
const MEMORY_BOUND_KIB: u64 = 256 * 1024;

struct Setup {
    _dir: tempfile::TempDir,
    namesrv: NameServer,
    broker: Broker,
    proxy: Proxy,
}

impl Setup {
    async fn start() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let (namesrv, broker) = crate::support::start_backend(dir.path(), |_| {}).await;
        crate::support::create_topic(&namesrv, &broker, &TopicConfig::new(TOPIC, 1)).await;
        let proxy = Proxy::start_secure(
            ProxyConfig {
                listen: "127.0.0.1:0".parse().expect("addr"),
                advertised_host: None,
                namesrv_addr: namesrv.local_addr().to_string(),
                ..ProxyConfig::default()
            },
            SecurityConfig {
                limits: GrpcLimits::default(),
                ..SecurityConfig::default()
            },
        )
        .await
        .expect("proxy");
        Setup {
            _dir: dir,
            namesrv,
            broker,
            proxy,
        }
    }

    fn addr(&self) -> String {
        self.proxy.local_addr().to_string()
    }

    async fn stop(self) {
        self.proxy.shutdown().await;
        self.broker.shutdown().await;
        self.namesrv.shutdown().await;
    }
}

/// This process's resident set, KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

fn assert_memory_bounded(before: u64, attack: &str) {
    let after = rss_kib();
    eprintln!("{attack}: resident memory {before} KiB before, {after} KiB after");
    assert!(
        after.saturating_sub(before) < MEMORY_BOUND_KIB,
        "{attack}: resident memory grew from {before} KiB to {after} KiB"
    );
}

fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource {
        resource_namespace: String::new(),
        name: name.to_string(),
    })
}

/// An honest client on a connection of its own: sends a message with id `id` and receives it
/// back (POP through the proxy), then acks it. Panics if either fails within 20 s.
async fn honest_round_trip(addr: &str, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("the honest client connects");
    let mut client = MessagingServiceClient::new(channel);
    let body = format!("honest {id}").into_bytes();
    let sent = client
        .send_message(pb::SendMessageRequest {
            messages: vec![pb::Message {
                topic: resource(TOPIC),
                user_properties: HashMap::new(),
                system_properties: Some(pb::SystemProperties {
                    message_id: id.to_string(),
                    message_type: pb::MessageType::Normal as i32,
                    ..pb::SystemProperties::default()
                }),
                body: body.clone(),
            }],
        })
        .await
        .expect("the honest send is served")
        .into_inner();
    let code = sent.status.as_ref().map_or(-1, |s| s.code);
    assert_eq!(code, pb::Code::Ok as i32, "honest send: {:?}", sent.status);
    loop {
        assert!(
            Instant::now() < deadline,
            "the honest client never received {id}"
        );
        let mut stream = client
            .receive_message(pb::ReceiveMessageRequest {
                group: resource(GROUP),
                message_queue: Some(pb::MessageQueue {
                    topic: resource(TOPIC),
                    id: -1,
                    ..pb::MessageQueue::default()
                }),
                filter_expression: None,
                batch_size: 32,
                invisible_duration: Some(prost_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
                auto_renew: false,
                long_polling_timeout: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
                attempt_id: None,
            })
            .await
            .expect("the honest receive is served")
            .into_inner();
        let mut mine = None;
        while let Some(item) = stream.message().await.expect("a receive item") {
            if let Some(pb::receive_message_response::Content::Message(m)) = item.content {
                let sys = m.system_properties.unwrap_or_default();
                if sys.message_id == id {
                    assert_eq!(m.body, body, "the honest message's body");
                    mine = sys.receipt_handle;
                }
            }
        }
        if let Some(handle) = mine {
            let acked = client
                .ack_message(pb::AckMessageRequest {
                    group: resource(GROUP),
                    topic: resource(TOPIC),
                    entries: vec![pb::AckMessageEntry {
                        message_id: id.to_string(),
                        receipt_handle: handle,
                        lite_topic: None,
                    }],
                })
                .await
                .expect("the honest ack is served")
                .into_inner();
            let code = acked.status.as_ref().map_or(-1, |s| s.code);
            assert_eq!(code, pb::Code::Ok as i32, "honest ack: {:?}", acked.status);
            return;
        }
    }
}

/// Honest round trips one after another until `stop` says so; how many succeeded.
fn honest_meanwhile(
    addr: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut n = 0;
        while !stop.load(std::sync::atomic::Ordering::Acquire) {
            honest_round_trip(&addr, &format!("HONEST-DURING-{n}")).await;
            n += 1;
        }
        n
    })
}

// ---------------------------------------------------------------------------------------------
// A raw HTTP/2 connection: frames written as the test says, whatever the server's settings.

/// What the server sent on a raw connection.
#[derive(Debug, Default)]
struct Seen {
    /// RST_STREAM frames: (stream id, error code).
    resets: Vec<(u32, u32)>,
    /// GOAWAY: (last stream id, error code, debug data).
    goaway: Option<(u32, u32, String)>,
    /// Streams the server sent HEADERS on.
    headers: Vec<u32>,
    /// The server's SETTINGS_MAX_CONCURRENT_STREAMS, if it sent one.
    max_concurrent_streams: Option<u32>,
    /// The connection ended (EOF or error).
    closed: bool,
    /// This side acknowledged the server's SETTINGS (its reply is written).
    settings_acked: bool,
}

struct RawConn {
    writer: Arc<Mutex<OwnedWriteHalf>>,
    seen: Arc<std::sync::Mutex<Seen>>,
    reader: tokio::task::JoinHandle<()>,
}

fn frame(out: &mut BytesMut, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("frame length");
    out.put_slice(&len.to_be_bytes()[1..]);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream & 0x7fff_ffff);
    out.put_slice(payload);
}

/// An HPACK integer with an `prefix`-bit prefix, the first byte's other bits being `first`.
fn hpack_int(out: &mut Vec<u8>, first: u8, prefix: u32, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A header as an HPACK literal without indexing, new name, no Huffman coding.
fn hpack_literal(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.push(0x00);
    hpack_int(out, 0, 7, name.len());
    out.extend_from_slice(name.as_bytes());
    hpack_int(out, 0, 7, value.len());
    out.extend_from_slice(value);
}

/// The header block of a gRPC SendMessage request to `authority`.
fn grpc_request_block(authority: &str) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", SEND_PATH),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        hpack_literal(&mut block, name, value.as_bytes());
    }
    block
}

impl RawConn {
    /// Connects, writes the client preface and an empty SETTINGS frame, and reads the
    /// server's frames in the background (answering its SETTINGS and PINGs).
    async fn open(addr: &str) -> RawConn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (mut read, write) = stream.into_split();
        let writer = Arc::new(Mutex::new(write));
        let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
        let mut preface = BytesMut::from(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..]);
        frame(&mut preface, SETTINGS, 0, 0, &[]);
        writer
            .lock()
            .await
            .write_all(&preface)
            .await
            .expect("write the preface");
        let reader = {
            let (writer, seen) = (writer.clone(), seen.clone());
            tokio::spawn(async move {
                let mut head = [0u8; 9];
                loop {
                    if read.read_exact(&mut head).await.is_err() {
                        break;
                    }
                    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                    let (kind, flags) = (head[3], head[4]);
                    let stream =
                        u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                    let mut payload = vec![0u8; len];
                    if read.read_exact(&mut payload).await.is_err() {
                        break;
                    }
                    let word = |at: usize| {
                        payload
                            .get(at..at + 4)
                            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(0)
                    };
                    let mut reply = BytesMut::new();
                    {
                        let mut seen = seen.lock().expect("seen");
                        match kind {
                            RST_STREAM => seen.resets.push((stream, word(0))),
                            GOAWAY => {
                                let debug =
                                    String::from_utf8_lossy(payload.get(8..).unwrap_or_default());
                                seen.goaway =
                                    Some((word(0) & 0x7fff_ffff, word(4), debug.into_owned()));
                            }
                            HEADERS => seen.headers.push(stream),
                            SETTINGS if flags & ACK == 0 => {
                                for setting in payload.chunks_exact(6) {
                                    if u16::from_be_bytes([setting[0], setting[1]]) == 0x3 {
                                        seen.max_concurrent_streams = Some(u32::from_be_bytes([
                                            setting[2], setting[3], setting[4], setting[5],
                                        ]));
                                    }
                                }
                                frame(&mut reply, SETTINGS, ACK, 0, &[]);
                            }
                            PING if flags & ACK == 0 => frame(&mut reply, PING, ACK, 0, &payload),
                            _ => {}
                        }
                    }
                    if !reply.is_empty() {
                        if writer.lock().await.write_all(&reply).await.is_err() {
                            break;
                        }
                        if kind == SETTINGS {
                            seen.lock().expect("seen").settings_acked = true;
                        }
                    }
                }
                seen.lock().expect("seen").closed = true;
            })
        };
        RawConn {
            writer,
            seen,
            reader,
        }
    }

    /// Writes `bytes`; false once the server closed the connection.
    async fn write(&self, bytes: &[u8]) -> bool {
        self.writer.lock().await.write_all(bytes).await.is_ok()
    }

    /// Waits up to `within` for `done` to hold of what the server sent.
    async fn wait_for(&self, within: Duration, done: impl Fn(&Seen) -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if done(&self.seen.lock().expect("seen")) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().expect("seen"))
    }
}

impl Drop for RawConn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_beyond_the_limit_are_refused() {
    let setup = Setup::start().await;
    let addr = setup.addr();
    honest_round_trip(&addr, "HONEST-BEFORE").await;
    let before = rss_kib();
    let limit = GrpcLimits::default().max_concurrent_streams;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let honest = honest_meanwhile(addr.clone(), stop.clone());

    // 1000 requests opened at once, none finished (no END_STREAM: the proxy waits for their
    // bodies), written without waiting for the server's SETTINGS.
    let conn = RawConn::open(&addr).await;
    let block = grpc_request_block(&addr);
    let opened: u32 = 1000;
    let mut out = BytesMut::new();
    for i in 0..opened {
        frame(&mut out, HEADERS, END_HEADERS, 2 * i + 1, &block);
    }
    assert!(
        conn.write(&out).await,
        "the proxy closed before reading the streams"
    );
    let expected_refusals = (opened - limit) as usize;
    let refused = |seen: &Seen| {
        seen.resets
            .iter()
            .filter(|(_, code)| *code == REFUSED_STREAM)
            .count()
    };
    let limited = conn
        .wait_for(Duration::from_secs(10), |seen| {
            refused(seen) >= expected_refusals || seen.goaway.is_some()
        })
        .await;
    let (refusals, goaway, announced) =
        conn.seen(|s| (refused(s), s.goaway.clone(), s.max_concurrent_streams));
    assert_eq!(announced, Some(limit), "SETTINGS_MAX_CONCURRENT_STREAMS");
    assert!(
        limited,
        "{refusals} of the {expected_refusals} streams beyond the limit were refused, no GOAWAY"
    );
    // Every stream beyond the limit is refused (a GOAWAY may end the connection instead);
    // nothing past the limit was taken.
    match goaway {
        None => assert_eq!(refusals, expected_refusals, "REFUSED_STREAM resets"),
        Some((last, code, _)) => {
            assert_eq!(code, ENHANCE_YOUR_CALM, "GOAWAY code");
            let taken = last.div_ceil(2) - refusals as u32;
            assert!(taken <= limit, "{taken} streams taken, limit {limit}");
        }
    }
    assert_memory_bounded(before, "streams beyond the limit");
    stop.store(true, std::sync::atomic::Ordering::Release);
    let during = honest.await.expect("honest task");
    assert!(
        during >= 1,
        "no honest round trip finished during the attack"
    );
    drop(conn);
    honest_round_trip(&addr, "HONEST-AFTER").await;
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rapid_reset_flood_is_cut_off() {
    let setup = Setup::start().await;
    let addr = setup.addr();
    honest_round_trip(&addr, "HONEST-BEFORE").await;
    let before = rss_kib();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let honest = honest_meanwhile(addr.clone(), stop.clone());

    // HEADERS + RST_STREAM(CANCEL) for stream after stream, in batches of 100, until the proxy
    // says GOAWAY or closes, or 100 000 streams were opened and reset.
    let conn = RawConn::open(&addr).await;
    let block = grpc_request_block(&addr);
    let mut stream_id = 1u32;
    let started = Instant::now();
    while stream_id < 200_000 && !conn.seen(|s| s.goaway.is_some() || s.closed) {
        let mut out = BytesMut::new();
        for _ in 0..100 {
            frame(&mut out, HEADERS, END_HEADERS, stream_id, &block);
            frame(&mut out, RST_STREAM, 0, stream_id, &CANCEL.to_be_bytes());
            stream_id += 2;
        }
        if !conn.write(&out).await {
            break;
        }
    }
    let streams = stream_id / 2;
    // Cut off: a GOAWAY(ENHANCE_YOUR_CALM), or the connection closed. hyper sends the GOAWAY
    // and closes; when the attacker is still writing, the close of a socket with unread data
    // is a TCP reset, which may reach the attacker before the GOAWAY it overtook (seen in CI:
    // 500 streams written, then the connection gone without a GOAWAY read).
    let cut_off = conn
        .wait_for(Duration::from_secs(10), |s| s.goaway.is_some() || s.closed)
        .await;
    let (goaway, closed) = conn.seen(|s| (s.goaway.clone(), s.closed));
    assert!(
        cut_off,
        "{streams} streams opened and reset in {:?}: neither a GOAWAY nor a close",
        started.elapsed()
    );
    match goaway {
        Some((last, code, debug)) => {
            assert_eq!(code, ENHANCE_YOUR_CALM, "GOAWAY code ({debug})");
            assert!(
                last < 20_000,
                "the proxy took {} streams before it cut the flood off",
                last.div_ceil(2)
            );
            eprintln!(
                "rapid reset: GOAWAY {debug} with last stream {last}, after {streams} streams written"
            );
        }
        None => {
            assert!(closed, "cut off without a close");
            assert!(
                streams < 20_000,
                "the proxy closed only after {streams} streams were written"
            );
            eprintln!("rapid reset: connection closed (reset) after {streams} streams written");
        }
    }
    assert_memory_bounded(before, "rapid reset");
    stop.store(true, std::sync::atomic::Ordering::Release);
    let during = honest.await.expect("honest task");
    assert!(
        during >= 1,
        "no honest round trip finished during the attack"
    );
    drop(conn);
    honest_round_trip(&addr, "HONEST-AFTER").await;
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_and_endless_header_blocks_are_refused() {
    let setup = Setup::start().await;
    let addr = setup.addr();
    honest_round_trip(&addr, "HONEST-BEFORE").await;
    let before = rss_kib();
    let limit = GrpcLimits::default().max_header_list_size as usize;

    // A request whose metadata is twice the limit (h2 does not stop a client from sending
    // more than the server's SETTINGS_MAX_HEADER_LIST_SIZE): 431 on that stream.
    let tcp = TcpStream::connect(&addr).await.expect("connect");
    let (mut h2, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let driver = tokio::spawn(connection);
    let big = "x".repeat(2 * limit);
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{SEND_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-oversized", big.as_str())
        .body(())
        .expect("request");
    h2 = h2.ready().await.expect("ready");
    let (response, _body) = h2.send_request(request, true).expect("send the request");
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("an answer to the oversized header block");
    match response {
        Ok(r) => assert_eq!(
            r.status(),
            http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        ),
        Err(e) => panic!("no 431 for the oversized header block: {e}"),
    }
    driver.abort();

    // A header block that never ends: HEADERS without END_HEADERS, then CONTINUATION frames
    // of 16 KiB for ever (a CONTINUATION flood, CVE-2024-27316 and kin). The proxy must not
    // buffer it: GOAWAY after a few frames.
    let conn = RawConn::open(&addr).await;
    // Nothing may come between a header block's frames, the SETTINGS ACK neither.
    assert!(
        conn.wait_for(Duration::from_secs(5), |s| s.settings_acked)
            .await,
        "the proxy sent no SETTINGS"
    );
    let flood_len = 64 * 1024 * 1024;
    let mut out = BytesMut::new();
    frame(&mut out, HEADERS, 0, 1, &grpc_request_block(&addr));
    assert!(conn.write(&out).await);
    // Each CONTINUATION frame: 140 small, well-formed headers (15 KiB, under the 16 KiB frame).
    let mut chunk = Vec::new();
    for i in 0..140 {
        hpack_literal(&mut chunk, &format!("x-flood-{i}"), &[b'y'; 96]);
    }
    assert!(chunk.len() <= 16 * 1024, "{} bytes in a frame", chunk.len());
    let mut sent = 0usize;
    while sent < flood_len && !conn.seen(|s| s.goaway.is_some() || s.closed) {
        let mut out = BytesMut::new();
        frame(&mut out, CONTINUATION, 0, 1, &chunk);
        if !conn.write(&out).await {
            break;
        }
        sent += chunk.len();
        // Paced, so that the proxy has read everything when it refuses: a socket closed with
        // unread bytes resets the connection, and the reset can overtake the GOAWAY.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let refused = conn
        .wait_for(Duration::from_secs(10), |s| s.goaway.is_some())
        .await;
    let goaway = conn.seen(|s| s.goaway.clone());
    let state = conn.seen(|s| format!("{s:?}"));
    assert!(
        refused,
        "{sent} bytes of an endless header block without a GOAWAY: {state}"
    );
    let (_, code, debug) = goaway.unwrap_or_default();
    assert!(
        code == ENHANCE_YOUR_CALM || code == COMPRESSION_ERROR,
        "GOAWAY code {code} ({debug})"
    );
    assert!(
        sent < 4 * 1024 * 1024,
        "the proxy read {sent} bytes of one header block before refusing it"
    );
    assert_memory_bounded(before, "oversized header blocks");
    drop(conn);
    honest_round_trip(&addr, "HONEST-AFTER").await;
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_declared_length_above_the_limit_is_refused_without_its_body() {
    let setup = Setup::start().await;
    let addr = setup.addr();
    honest_round_trip(&addr, "HONEST-BEFORE").await;
    let before = rss_kib();
    let limits = GrpcLimits::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let honest = honest_meanwhile(addr.clone(), stop.clone());

    // Every stream the connection may have: a length prefix of 1 GiB (above the inbound
    // limit of 130 MiB), then nothing. Each is answered at once, before any body arrives.
    let tcp = TcpStream::connect(&addr).await.expect("connect");
    let (h2, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let driver = tokio::spawn(connection);
    let declared: u32 = 1 << 30;
    assert!(declared as usize > limits.max_inbound_message_size);
    let mut prefix = BytesMut::new();
    prefix.put_u8(0);
    prefix.put_u32(declared);
    let prefix = prefix.freeze();
    let mut calls = Vec::new();
    let mut bodies = Vec::new();
    let started = Instant::now();
    for _ in 0..limits.max_concurrent_streams {
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("http://{addr}{SEND_PATH}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
        let mut h2 = h2.clone().ready().await.expect("ready");
        let (response, mut body) = h2.send_request(request, false).expect("send the request");
        body.send_data(prefix.clone(), false)
            .expect("send the prefix");
        bodies.push(body);
        calls.push(response);
    }
    for response in calls {
        let response = tokio::time::timeout(Duration::from_secs(10), response)
            .await
            .expect("an answer before the body")
            .expect("a response");
        let grpc_status = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let message = response
            .headers()
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        // tonic's answer to a length prefix above the limit (grpc-java says
        // RESOURCE_EXHAUSTED).
        assert_eq!(
            grpc_status.as_deref(),
            Some((tonic::Code::OutOfRange as i32).to_string().as_str()),
            "grpc-status ({message})"
        );
        assert!(
            message.contains("too%20large") || message.contains("too large"),
            "{message}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the refusals waited for bodies: {:?}",
        started.elapsed()
    );
    assert_memory_bounded(before, "declared lengths above the limit");
    drop(bodies);
    driver.abort();
    stop.store(true, std::sync::atomic::Ordering::Release);
    let during = honest.await.expect("honest task");
    assert!(
        during >= 1,
        "no honest round trip finished during the attack"
    );
    honest_round_trip(&addr, "HONEST-AFTER").await;
    // Nothing of the attack was stored: the honest messages only.
    let stored = setup.broker.inner().store.get_max_offset_in_queue(TOPIC, 0);
    assert_eq!(stored, 2 + during as i64, "messages stored");
    setup.stop().await;
}

#[test]
fn raw_frames_and_hpack_integers_are_encoded_as_the_rfcs_say() {
    let mut out = BytesMut::new();
    frame(&mut out, DATA, END_STREAM, 3, b"abc");
    assert_eq!(&out[..], &[0, 0, 3, 0, 1, 0, 0, 0, 3, b'a', b'b', b'c']);
    let mut int = Vec::new();
    hpack_int(&mut int, 0, 5, 1337);
    assert_eq!(int, vec![31, 154, 10], "RFC 7541 C.1.2");
    let mut literal = Vec::new();
    hpack_literal(&mut literal, "te", b"trailers");
    assert_eq!(&literal[..4], &[0x00, 2, b't', b'e']);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn declared_lengths_at_the_limit_without_bodies_stay_cheap() {
    let setup = Setup::start().await;
    let addr = setup.addr();
    honest_round_trip(&addr, "HONEST-BEFORE").await;
    let before = rss_kib();
    let limits = GrpcLimits::default();
    // Every stream of a connection declares a message of exactly the inbound limit (130 MiB)
    // and sends 1 KiB of it: tonic reserves the declared length up front, address space the
    // process never touches; the resident set must not grow by it.
    let tcp = TcpStream::connect(&addr).await.expect("connect");
    let (h2, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let driver = tokio::spawn(connection);
    let declared = u32::try_from(limits.max_inbound_message_size).expect("limit fits");
    let mut start = BytesMut::new();
    start.put_u8(0);
    start.put_u32(declared);
    start.put_slice(&[0x0a; 1024]);
    let start = start.freeze();
    let mut calls = Vec::new();
    for _ in 0..limits.max_concurrent_streams {
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("http://{addr}{SEND_PATH}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
        let mut h2 = h2.clone().ready().await.expect("ready");
        let (response, mut body) = h2.send_request(request, false).expect("send the request");
        body.send_data(start.clone(), false)
            .expect("send the start");
        calls.push((response, body));
    }
    // Give the proxy time to read every stream's start.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_memory_bounded(before, "declared lengths at the limit");
    honest_round_trip(&addr, "HONEST-DURING").await;
    drop(calls);
    driver.abort();
    honest_round_trip(&addr, "HONEST-AFTER").await;
    setup.stop().await;
}
