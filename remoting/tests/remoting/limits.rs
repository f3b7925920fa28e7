//! What one peer may cost a server ([`rocketraft_remoting::limits`]): requests larger than
//! their code allows, half-sent frames, idle connections, bytes in flight per connection and a
//! flood of connections at the limit. Each is refused or bounded, and honest clients go on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rocketraft_remoting::response_code::SUCCESS;
use rocketraft_remoting::{
    processor_fn, ClientConfig, RemotingClient, RemotingCommand, RemotingServer, RequestProcessor,
    ServerHandle, ServerLimits, MAX_FRAME_LEN,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};

const ECHO: i32 = 1;
const SLOW: i32 = 2;
const T: Duration = Duration::from_secs(5);

fn echo() -> Arc<dyn RequestProcessor> {
    processor_fn(|_ctx, req| async move {
        Some(req.response_to(SUCCESS, None).with_body(req.body.clone()))
    })
}

/// Sleeps 300 ms, counting how many requests it holds at once (the most in `max`).
fn counting(now: Arc<AtomicUsize>, max: Arc<AtomicUsize>) -> Arc<dyn RequestProcessor> {
    processor_fn(move |_ctx, req| {
        let (now, max) = (now.clone(), max.clone());
        async move {
            let held = now.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(held, Ordering::SeqCst);
            sleep(Duration::from_millis(300)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            Some(req.response_to(SUCCESS, None))
        }
    })
}

async fn start(limits: ServerLimits, max_connections: usize) -> (ServerHandle, String) {
    start_with(limits, max_connections, echo()).await
}

async fn start_with(
    limits: ServerLimits,
    max_connections: usize,
    slow: Arc<dyn RequestProcessor>,
) -> (ServerHandle, String) {
    let server = RemotingServer::builder()
        .register(ECHO, echo())
        .register(SLOW, slow)
        .max_connections(max_connections)
        .limits(limits)
        .bind("127.0.0.1:0")
        .await
        .expect("bind")
        .spawn();
    let addr = server.local_addr().to_string();
    (server, addr)
}

async fn echo_works(client: &RemotingClient, addr: &str) {
    let resp = client
        .invoke(addr, RemotingCommand::request(ECHO).with_body("ping"), T)
        .await
        .expect("an honest request is served");
    assert_eq!(resp.code, SUCCESS);
    assert_eq!(&resp.body[..], b"ping");
}

/// Whether the server closes `stream` within `within` (EOF or reset).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

/// The length prefix and JSON header of an ECHO request whose body of `body_len` bytes is
/// announced but not sent.
fn announced(body_len: usize) -> Vec<u8> {
    let header = br#"{"code":1,"language":"JAVA","version":0,"opaque":7,"flag":0}"#;
    let total = 4 + header.len() + body_len;
    let mut frame = (i32::try_from(total).expect("fits")).to_be_bytes().to_vec();
    frame.extend_from_slice(&(u32::try_from(header.len()).expect("fits")).to_be_bytes());
    frame.extend_from_slice(header);
    frame
}

#[tokio::test]
async fn a_request_larger_than_its_code_allows_is_refused_before_its_body() {
    let (_server, addr) = start(ServerLimits::default(), 100).await;
    let client = RemotingClient::new(ClientConfig::default());
    // 8 MiB announced for a code held to 4 MiB: closed once the header is in, body unsent.
    let mut raw = TcpStream::connect(&addr).await.expect("connect");
    raw.write_all(&announced(8 << 20)).await.expect("write");
    assert!(
        closed_within(&mut raw, T).await,
        "the oversized request was waited for"
    );
    // Through the client: 5 MiB of ECHO is refused, 3 MiB is served.
    let big = RemotingCommand::request(ECHO).with_body(Bytes::from(vec![7u8; 5 << 20]));
    let refused = client.invoke(&addr, big, T).await;
    assert!(refused.is_err(), "5 MiB of ECHO was served: {refused:?}");
    let fits = RemotingCommand::request(ECHO).with_body(Bytes::from(vec![7u8; 3 << 20]));
    let served = client.invoke(&addr, fits, T).await.expect("3 MiB fits");
    assert_eq!(served.body.len(), 3 << 20);

    // A code given the whole frame takes 5 MiB.
    let mut limits = ServerLimits::default();
    limits.max_request_len_by_code.insert(ECHO, MAX_FRAME_LEN);
    let (_large, large_addr) = start(limits, 100).await;
    let big = RemotingCommand::request(ECHO).with_body(Bytes::from(vec![7u8; 5 << 20]));
    let served = client
        .invoke(&large_addr, big, T)
        .await
        .expect("5 MiB allowed");
    assert_eq!(served.body.len(), 5 << 20);
}

#[tokio::test]
async fn half_sent_frames_are_closed_after_the_frame_timeout() {
    let limits = ServerLimits {
        frame_timeout: Duration::from_millis(300),
        ..ServerLimits::default()
    };
    let (_server, addr) = start(limits, 100).await;
    let client = RemotingClient::new(ClientConfig::default());
    // Half a frame, then nothing.
    let mut stalled = TcpStream::connect(&addr).await.expect("connect");
    stalled
        .write_all(&announced(100)[..6])
        .await
        .expect("write");
    // A slowloris: one byte every 50 ms never finishes its frame in time.
    let mut trickle = TcpStream::connect(&addr).await.expect("connect");
    let frame = announced(4000);
    let mut closed = false;
    for byte in frame.iter().cycle().take(200) {
        if trickle.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        sleep(Duration::from_millis(50)).await;
    }
    assert!(
        closed || closed_within(&mut trickle, T).await,
        "the slowloris kept its connection"
    );
    assert!(
        closed_within(&mut stalled, T).await,
        "the stalled frame kept its connection"
    );
    echo_works(&client, &addr).await;
}

#[tokio::test]
async fn idle_connections_are_closed_and_busy_ones_kept() {
    let limits = ServerLimits {
        idle_timeout: Some(Duration::from_millis(300)),
        ..ServerLimits::default()
    };
    let now = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let (_server, addr) = start_with(limits, 100, counting(now, max)).await;
    let mut idle = TcpStream::connect(&addr).await.expect("connect");
    assert!(
        closed_within(&mut idle, T).await,
        "the idle connection was kept"
    );
    // A request in flight longer than the idle timeout keeps its connection.
    let client = RemotingClient::new(ClientConfig::default());
    for _ in 0..3 {
        let resp = client
            .invoke(&addr, RemotingCommand::request(SLOW), T)
            .await
            .expect("answered on a busy connection");
        assert_eq!(resp.code, SUCCESS);
    }
    echo_works(&client, &addr).await;
}

#[tokio::test]
async fn bytes_in_flight_are_bounded_per_connection() {
    let limits = ServerLimits {
        default_max_request_len: MAX_FRAME_LEN,
        buffered_per_connection: MAX_FRAME_LEN,
        ..ServerLimits::default()
    };
    let now = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let (_server, addr) = start_with(limits, 100, counting(now, max.clone())).await;
    let client = RemotingClient::new(ClientConfig::default());
    // Four 6 MiB requests on one connection: at most two fit in 16 MiB at once; all are served.
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let (client, addr) = (client.clone(), addr.clone());
            let body = Bytes::from(vec![1u8; 6 << 20]);
            tokio::spawn(async move {
                let request = RemotingCommand::request(SLOW).with_body(body);
                client.invoke(&addr, request, T).await
            })
        })
        .collect();
    for call in calls {
        let resp = call.await.expect("the call task");
        assert_eq!(resp.expect("served in turn").code, SUCCESS);
    }
    let most = max.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&most),
        "{most} requests of 6 MiB held at once"
    );
}

#[tokio::test]
async fn at_the_connection_limit_the_longest_idle_connection_gives_way() {
    let limits = ServerLimits {
        evict_idle_after: Duration::from_millis(100),
        ..ServerLimits::default()
    };
    let (_server, addr) = start(limits, 3).await;
    let mut oldest = TcpStream::connect(&addr).await.expect("connect");
    sleep(Duration::from_millis(50)).await;
    let mut others = Vec::new();
    for _ in 0..2 {
        others.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    sleep(Duration::from_millis(300)).await;
    // The server is full of idle connections; an honest client still gets in.
    let client = RemotingClient::new(ClientConfig::default());
    echo_works(&client, &addr).await;
    assert!(
        closed_within(&mut oldest, T).await,
        "the longest idle connection was kept"
    );
    for other in &mut others {
        assert!(!closed_within(other, Duration::from_millis(200)).await);
    }
}
