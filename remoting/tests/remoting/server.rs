//! Client and server against each other (and against raw sockets) on 127.0.0.1.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use rocketraft_remoting::codec::{decode, encode};
use rocketraft_remoting::response_code::{
    REQUEST_CODE_NOT_SUPPORTED, SUCCESS, SYSTEM_BUSY, SYSTEM_ERROR,
};
use rocketraft_remoting::{
    processor_fn, request_code, ClientConfig, CodecError, RemotingClient, RemotingCommand,
    RemotingError, RemotingServer, RequestProcessor, SerializeType, ServerHandle, MAX_FRAME_LEN,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout, Instant};

const ECHO: i32 = 1;
const SLOW: i32 = 2;
const CLOSE_CONNECTION: i32 = 3;
const PANIC: i32 = 4;

/// Echoes body and extFields, and reports the header encoding it received.
fn echo() -> Arc<dyn RequestProcessor> {
    processor_fn(|_ctx, req| async move {
        let mut resp = req
            .response_to(SUCCESS, None)
            .with_body(req.body.clone())
            .with_ext("seen", req.serialize_type.name());
        resp.ext_fields.extend(req.ext_fields.clone());
        Some(resp)
    })
}

/// Sleeps `sleepMs` (an extField) before echoing.
fn slow() -> Arc<dyn RequestProcessor> {
    processor_fn(|_ctx, req| async move {
        let ms: u64 = req.ext_parse("sleepMs").unwrap_or(0);
        sleep(Duration::from_millis(ms)).await;
        Some(req.response_to(SUCCESS, None).with_body(req.body.clone()))
    })
}

async fn start(builder: rocketraft_remoting::RemotingServerBuilder) -> (ServerHandle, String) {
    let server = builder
        .register(ECHO, echo())
        .register(SLOW, slow())
        .register(
            CLOSE_CONNECTION,
            processor_fn(|ctx, _req| async move {
                ctx.connection.close();
                None
            }),
        )
        .register(
            PANIC,
            processor_fn(|_ctx, _req| async move { panic!("processor bug (expected in a test)") }),
        )
        .bind("127.0.0.1:0")
        .await
        .unwrap()
        .spawn();
    let addr = server.local_addr().to_string();
    (server, addr)
}

async fn start_default() -> (ServerHandle, String) {
    start(RemotingServer::builder()).await
}

fn client_with(serialize_type: SerializeType) -> RemotingClient {
    RemotingClient::new(ClientConfig {
        serialize_type,
        ..ClientConfig::default()
    })
}

const T: Duration = Duration::from_secs(5);

async fn assert_echo_works(client: &RemotingClient, addr: &str) {
    let resp = client
        .invoke(addr, RemotingCommand::request(ECHO).with_body("ping"), T)
        .await
        .unwrap();
    assert_eq!(resp.code, SUCCESS);
    assert_eq!(&resp.body[..], b"ping");
}

/// Reads until the server closes the socket (EOF or reset); panics after 5 s.
async fn expect_closed(stream: &mut TcpStream) {
    let mut buf = vec![0u8; 4096];
    let closed = timeout(T, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server did not close the connection");
}

#[tokio::test]
async fn round_trip_in_both_encodings() {
    let (_server, addr) = start_default().await;
    for serialize_type in [SerializeType::Json, SerializeType::RocketMq] {
        let client = client_with(serialize_type);
        let req = RemotingCommand::request(ECHO)
            .with_ext("topic", "TopicTest")
            .with_ext("queueId", 3)
            .with_remark("hello")
            .with_body(Bytes::from_static(b"\x00\x01body\xff"));
        let opaque = req.opaque;
        let resp = client.invoke(&addr, req, T).await.unwrap();
        assert!(resp.is_response());
        assert_eq!(resp.opaque, opaque);
        assert_eq!(resp.code, SUCCESS);
        assert_eq!(
            resp.serialize_type, serialize_type,
            "answered in the request's encoding"
        );
        assert_eq!(resp.ext("seen"), Some(serialize_type.name()));
        assert_eq!(resp.ext("topic"), Some("TopicTest"));
        assert_eq!(resp.ext_parse::<i32>("queueId"), Ok(3));
        assert_eq!(&resp.body[..], b"\x00\x01body\xff");
    }
}

#[tokio::test]
async fn many_concurrent_requests_answered_out_of_order_on_one_connection() {
    let connections = Arc::new(Mutex::new(HashSet::new()));
    let seen = connections.clone();
    let server = RemotingServer::builder().default_processor(processor_fn(move |ctx, req| {
        seen.lock().insert(ctx.connection.id());
        async move {
            // A pseudo-random 0..64 ms delay so responses overtake each other.
            let ms = (req.opaque as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58;
            sleep(Duration::from_millis(ms)).await;
            Some(req.response_to(SUCCESS, None).with_body(req.body.clone()))
        }
    }));
    let (_server, addr) = start(server).await;
    let client = RemotingClient::default();
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let client = client.clone();
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let body = format!("request-{i}");
            let resp = client
                .invoke(
                    &addr,
                    RemotingCommand::request(77).with_body(body.clone()),
                    T,
                )
                .await
                .unwrap();
            assert_eq!(resp.body, Bytes::from(body));
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        connections.lock().len(),
        1,
        "all requests shared one connection"
    );
}

#[tokio::test]
async fn unknown_code_is_not_supported() {
    let (_server, addr) = start_default().await;
    for serialize_type in [SerializeType::Json, SerializeType::RocketMq] {
        let client = client_with(serialize_type);
        let resp = client
            .invoke(&addr, RemotingCommand::request(12345), T)
            .await
            .unwrap();
        assert_eq!(resp.code, REQUEST_CODE_NOT_SUPPORTED);
        assert_eq!(
            resp.remark.as_deref(),
            Some("request type 12345 not supported")
        );
        assert_eq!(resp.serialize_type, serialize_type);
    }
}

#[tokio::test]
async fn oneway_requests_get_no_response() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = RemotingServer::builder().register(
        50,
        processor_fn(move |_ctx, req| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(req.clone());
                // Even if a processor answers, a oneway request gets nothing back.
                Some(req.response_to(SUCCESS, None))
            }
        }),
    );
    let (_server, addr) = start(server).await;

    // Through the client.
    let client = RemotingClient::default();
    client
        .invoke_oneway(&addr, RemotingCommand::request(50).with_body("one"))
        .await
        .unwrap();
    let got = timeout(T, rx.recv()).await.unwrap().unwrap();
    assert!(got.is_oneway());
    assert_eq!(&got.body[..], b"one");

    // Through a raw socket: nothing comes back, not even for an unknown code.
    let mut raw = TcpStream::connect(&addr).await.unwrap();
    let mut buf = BytesMut::new();
    let mut known = RemotingCommand::request(50);
    known.mark_oneway();
    let mut unknown = RemotingCommand::request(4242);
    unknown.mark_oneway();
    encode(&known, &mut buf).unwrap();
    encode(&unknown, &mut buf).unwrap();
    raw.write_all(&buf).await.unwrap();
    timeout(T, rx.recv()).await.unwrap().unwrap();
    let mut byte = [0u8; 1];
    let read = timeout(Duration::from_millis(300), raw.read(&mut byte)).await;
    assert!(read.is_err(), "no bytes may arrive for oneway requests");
}

#[tokio::test]
async fn timeout_fires_and_the_connection_stays_usable() {
    let (_server, addr) = start_default().await;
    let client = RemotingClient::default();
    assert_echo_works(&client, &addr).await;
    let before = client.connection_handle(&addr).await.unwrap().id();

    let started = Instant::now();
    let err = client
        .invoke(
            &addr,
            RemotingCommand::request(SLOW).with_ext("sleepMs", 1500),
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(
            err,
            RemotingError::Timeout {
                timeout_ms: 200,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(elapsed < Duration::from_millis(1000), "took {elapsed:?}");

    assert_echo_works(&client, &addr).await;
    // Let the late response arrive; it must be dropped quietly.
    sleep(Duration::from_millis(1500)).await;
    assert_echo_works(&client, &addr).await;
    assert_eq!(client.connection_handle(&addr).await.unwrap().id(), before);
}

fn raw_frame(total_len: i32, mark: u32, rest: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_i32(total_len);
    b.put_u32(mark);
    b.put_slice(rest);
    b.to_vec()
}

#[tokio::test]
async fn malformed_frames_close_only_their_connection() {
    let (_server, addr) = start_default().await;
    let client = RemotingClient::default();
    assert_echo_works(&client, &addr).await;

    let garbage_binary = {
        let header = [
            0u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x7f, 0xff, 0xff, 0xff,
        ];
        raw_frame(
            4 + header.len() as i32,
            (1 << 24) | header.len() as u32,
            &header,
        )
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bad serialize type", raw_frame(8, (7 << 24) | 4, b"{}{}")),
        ("total length 0x7fffffff", raw_frame(0x7fff_ffff, 0, b"")),
        (
            "17 MiB length prefix",
            (17 * 1024 * 1024i32).to_be_bytes().to_vec(),
        ),
        ("negative length", (-1i32).to_be_bytes().to_vec()),
        ("header longer than frame", raw_frame(8, 100, b"{}{}")),
        ("garbage binary header", garbage_binary),
        ("garbage JSON header", raw_frame(9, 5, b"{\"cod")),
    ];
    for (name, bytes) in cases {
        let mut raw = TcpStream::connect(&addr).await.unwrap();
        raw.write_all(&bytes).await.unwrap();
        expect_closed(&mut raw).await;
        // The other connection is untouched.
        assert_echo_works(&client, &addr).await;
        println!("{name}: closed");
    }
}

#[tokio::test]
async fn oversized_frames_are_refused_by_the_client() {
    // ECHO may use the whole frame here, as sends do (other codes are held to 4 MiB).
    let mut limits = rocketraft_remoting::ServerLimits::default();
    limits.max_request_len_by_code.insert(ECHO, MAX_FRAME_LEN);
    let (_server, addr) = start(RemotingServer::builder().limits(limits)).await;
    let client = RemotingClient::default();
    let huge = RemotingCommand::request(ECHO).with_body(vec![0u8; MAX_FRAME_LEN]);
    let err = client.invoke(&addr, huge, T).await.unwrap_err();
    assert!(
        matches!(err, RemotingError::Codec(CodecError::FrameTooLarge { .. })),
        "{err:?}"
    );
    let err = client
        .invoke_oneway(
            &addr,
            RemotingCommand::request(ECHO).with_body(vec![0u8; MAX_FRAME_LEN]),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RemotingError::Codec(_)), "{err:?}");
    assert_echo_works(&client, &addr).await;

    // A large frame just under the limit goes through.
    let big = vec![7u8; MAX_FRAME_LEN - 1024];
    let resp = client
        .invoke(
            &addr,
            RemotingCommand::request(ECHO).with_body(big.clone()),
            T,
        )
        .await
        .unwrap();
    assert_eq!(resp.body.len(), big.len());
}

#[tokio::test]
async fn binary_headers_cannot_carry_pop_codes() {
    let (_server, addr) = start_default().await;
    let client = client_with(SerializeType::RocketMq);
    let err = client
        .invoke(
            &addr,
            RemotingCommand::request(request_code::POP_MESSAGE),
            T,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RemotingError::Codec(CodecError::FieldOutOfRange { field: "code", .. })
        ),
        "{err:?}"
    );
    // JSON carries them fine.
    let resp = RemotingClient::default()
        .invoke(
            &addr,
            RemotingCommand::request(request_code::POP_MESSAGE),
            T,
        )
        .await
        .unwrap();
    assert_eq!(resp.code, REQUEST_CODE_NOT_SUPPORTED);
}

#[tokio::test]
async fn pending_requests_fail_promptly_when_the_server_dies() {
    let (server, addr) =
        start(RemotingServer::builder().shutdown_grace(Duration::from_millis(50))).await;
    let client = RemotingClient::default();
    let pending = {
        let client = client.clone();
        let addr = addr.clone();
        tokio::spawn(async move {
            client
                .invoke(
                    &addr,
                    RemotingCommand::request(SLOW).with_ext("sleepMs", 60_000),
                    Duration::from_secs(60),
                )
                .await
        })
    };
    sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    server.shutdown().await;
    let result = timeout(Duration::from_secs(3), pending)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(result, Err(RemotingError::ConnectionClosed { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    // Nobody listens any more.
    let err = client
        .invoke(&addr, RemotingCommand::request(ECHO), T)
        .await
        .unwrap_err();
    assert!(matches!(err, RemotingError::Connect { .. }), "{err:?}");
}

#[tokio::test]
async fn reconnects_after_the_server_drops_the_connection() {
    let (_server, addr) = start_default().await;
    let client = RemotingClient::default();
    assert_echo_works(&client, &addr).await;
    let first = client.connection_handle(&addr).await.unwrap();

    let err = client
        .invoke(&addr, RemotingCommand::request(CLOSE_CONNECTION), T)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RemotingError::ConnectionClosed { .. }),
        "{err:?}"
    );
    assert!(first.is_closed());

    assert_echo_works(&client, &addr).await;
    let second = client.connection_handle(&addr).await.unwrap();
    assert_ne!(first.id(), second.id());

    // An explicit close also reconnects on the next request.
    client.close(&addr);
    assert_echo_works(&client, &addr).await;
    assert_ne!(
        client.connection_handle(&addr).await.unwrap().id(),
        second.id()
    );
}

#[tokio::test]
async fn client_in_flight_limit_waits_for_a_slot() {
    let (_server, addr) = start_default().await;
    let client = RemotingClient::new(ClientConfig {
        max_in_flight_per_connection: 2,
        ..ClientConfig::default()
    });
    assert_echo_works(&client, &addr).await;
    let slow_request = || RemotingCommand::request(SLOW).with_ext("sleepMs", 400);
    let mut slow = Vec::new();
    for _ in 0..2 {
        let client = client.clone();
        let addr = addr.clone();
        let req = slow_request();
        slow.push(tokio::spawn(
            async move { client.invoke(&addr, req, T).await },
        ));
    }
    sleep(Duration::from_millis(100)).await;

    // A short timeout gives up while both slots are taken.
    let err = client
        .invoke(
            &addr,
            RemotingCommand::request(ECHO),
            Duration::from_millis(100),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RemotingError::TooManyInFlight { limit: 2, .. }),
        "{err:?}"
    );

    // A longer one waits for a slot and completes.
    let started = Instant::now();
    assert_echo_works(&client, &addr).await;
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "the third request should have waited, took {:?}",
        started.elapsed()
    );
    for task in slow {
        assert_eq!(task.await.unwrap().unwrap().code, SUCCESS);
    }
}

#[tokio::test]
async fn server_answers_system_busy_beyond_its_in_flight_limit() {
    let (_server, addr) = start(RemotingServer::builder().max_in_flight_per_connection(2)).await;
    let client = RemotingClient::default();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let client = client.clone();
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            client
                .invoke(
                    &addr,
                    RemotingCommand::request(SLOW).with_ext("sleepMs", 300),
                    T,
                )
                .await
                .unwrap()
                .code
        }));
    }
    let mut codes = Vec::new();
    for task in tasks {
        codes.push(task.await.unwrap());
    }
    codes.sort_unstable();
    assert_eq!(codes, vec![SUCCESS, SUCCESS, SYSTEM_BUSY]);
    assert_echo_works(&client, &addr).await;
}

#[tokio::test]
async fn a_panicking_processor_yields_system_error() {
    let (_server, addr) = start_default().await;
    let client = RemotingClient::default();
    let resp = client
        .invoke(&addr, RemotingCommand::request(PANIC), T)
        .await
        .unwrap();
    assert_eq!(resp.code, SYSTEM_ERROR);
    assert_echo_works(&client, &addr).await;
}

#[tokio::test]
async fn server_pushes_requests_to_the_client() {
    // The server keeps the connection of a HEART_BEAT and later asks the client things.
    let (conn_tx, mut conn_rx) = mpsc::unbounded_channel();
    let server = RemotingServer::builder().register(
        request_code::HEART_BEAT,
        processor_fn(move |ctx, req| {
            let _ = conn_tx.send(ctx.connection.clone());
            async move { Some(req.response_to(SUCCESS, None)) }
        }),
    );
    let (_server, addr) = start(server).await;

    let client = RemotingClient::default();
    // Without a handler, a server request gets REQUEST_CODE_NOT_SUPPORTED.
    client
        .invoke(&addr, RemotingCommand::request(request_code::HEART_BEAT), T)
        .await
        .unwrap();
    let conn = timeout(T, conn_rx.recv()).await.unwrap().unwrap();
    let resp = conn
        .invoke(
            RemotingCommand::request(request_code::GET_CONSUMER_RUNNING_INFO),
            T,
        )
        .await
        .unwrap();
    assert_eq!(resp.code, REQUEST_CODE_NOT_SUPPORTED);

    let (check_tx, mut check_rx) = mpsc::unbounded_channel();
    client.set_request_handler(processor_fn(move |_ctx, req| {
        let _ = check_tx.send(req.clone());
        async move { Some(req.response_to(SUCCESS, None).with_body("running")) }
    }));
    conn.send_oneway(
        RemotingCommand::request(request_code::CHECK_TRANSACTION_STATE)
            .with_ext("tranStateTableOffset", 5),
    )
    .unwrap();
    let check = timeout(T, check_rx.recv()).await.unwrap().unwrap();
    assert_eq!(check.code, request_code::CHECK_TRANSACTION_STATE);
    assert!(check.is_oneway());
    assert_eq!(check.ext("tranStateTableOffset"), Some("5"));

    let resp = conn
        .invoke(
            RemotingCommand::request(request_code::GET_CONSUMER_RUNNING_INFO),
            T,
        )
        .await
        .unwrap();
    assert_eq!(resp.code, SUCCESS);
    assert_eq!(&resp.body[..], b"running");

    // The server side notices when the client goes away.
    drop(client);
    timeout(T, conn.closed()).await.unwrap();
    assert!(conn.is_closed());
    assert!(matches!(
        conn.send_oneway(RemotingCommand::request(1)),
        Err(RemotingError::ConnectionClosed { .. })
    ));
}

#[tokio::test]
async fn raw_java_style_client_gets_a_decodable_reply() {
    let (_server, addr) = start_default().await;
    let mut raw = TcpStream::connect(&addr).await.unwrap();
    let header = br#"{"code":1,"extFields":{"k":"v"},"flag":0,"language":"JAVA","opaque":99,"serializeTypeCurrentRPC":"JSON","version":479}"#;
    let mut frame = BytesMut::new();
    frame.put_i32(4 + header.len() as i32 + 3);
    frame.put_u32(header.len() as u32);
    frame.put_slice(header);
    frame.put_slice(b"abc");
    raw.write_all(&frame).await.unwrap();

    let mut buf = BytesMut::new();
    let resp = timeout(T, async {
        loop {
            if let Some(cmd) = decode(&mut buf).unwrap() {
                return cmd;
            }
            let n = raw.read_buf(&mut buf).await.unwrap();
            assert!(n > 0, "closed before replying");
        }
    })
    .await
    .unwrap();
    assert!(resp.is_response());
    assert_eq!(resp.opaque, 99);
    assert_eq!(resp.serialize_type, SerializeType::Json);
    assert_eq!(resp.ext("k"), Some("v"));
    assert_eq!(&resp.body[..], b"abc");
}

#[tokio::test]
async fn connect_errors_are_reported() {
    // Bind and drop to get a port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = RemotingClient::default();
    let err = client
        .invoke(&format!("127.0.0.1:{port}"), RemotingCommand::request(1), T)
        .await
        .unwrap_err();
    assert!(matches!(err, RemotingError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("failed to connect to 127.0.0.1"));
}

/// A peer that accepts and reads but never answers, as a partitioned one looks (packets
/// dropped, no reset): a request that hears nothing for its whole timeout closes the
/// connection, so the next request dials afresh instead of waiting behind TCP's
/// retransmission backoff on the old socket.
#[tokio::test]
async fn a_silent_connection_is_closed_after_a_timeout_and_the_next_request_redials() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let silent = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    let client = RemotingClient::default();
    let timeout_of = Duration::from_millis(1200);
    let err = client
        .invoke(&addr, RemotingCommand::request(ECHO), timeout_of)
        .await
        .unwrap_err();
    assert!(matches!(err, RemotingError::Timeout { .. }), "{err:?}");
    assert!(
        client.connection_handle(&addr).await.is_none(),
        "the silent connection is still kept"
    );
    let err = client
        .invoke(&addr, RemotingCommand::request(ECHO), timeout_of)
        .await
        .unwrap_err();
    assert!(matches!(err, RemotingError::Timeout { .. }), "{err:?}");
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the second request did not dial a new connection"
    );
    silent.abort();
}

/// A slow request that times out on a connection that keeps answering other requests does
/// not close it: only silence for a whole timeout counts as a dead connection.
#[tokio::test]
async fn a_timeout_on_a_talking_connection_keeps_it() {
    let (_server, addr) = start_default().await;
    let client = RemotingClient::default();
    assert_echo_works(&client, &addr).await;
    let before = client.connection_handle(&addr).await.unwrap().id();
    let chatter = {
        let (client, addr) = (client.clone(), addr.clone());
        tokio::spawn(async move {
            for _ in 0..20 {
                assert_echo_works(&client, &addr).await;
                sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let err = client
        .invoke(
            &addr,
            RemotingCommand::request(SLOW).with_ext("sleepMs", 3000),
            Duration::from_millis(1200),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RemotingError::Timeout { .. }), "{err:?}");
    chatter.await.unwrap();
    assert_eq!(client.connection_handle(&addr).await.unwrap().id(), before);
}
