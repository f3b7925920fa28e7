//! The gRPC health checking protocol on the proxy's port (`grpc.health.v1.Health`), as a load
//! balancer or a Kubernetes gRPC probe uses it: SERVING while a NameServer of the proxy's list
//! answers (the first may be down), NOT_SERVING once none does, SERVING again when one is back;
//! Watch streams the changes; an unknown service is NOT_FOUND. Real NameServer, broker, proxy.

use std::time::{Duration, Instant};

use rocketraft_nameserver::{NameServer, NamesrvConfig};
use rocketraft_proxy::health::MESSAGING_SERVICE;
use rocketraft_proxy::{Proxy, ProxyConfig};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

async fn status(client: &mut HealthClient<Channel>, service: &str) -> Result<i32, tonic::Status> {
    client
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .map(|r| r.into_inner().status)
}

/// Waits until `service` reports `want` (10 s at most).
async fn wait_for(client: &mut HealthClient<Channel>, service: &str, want: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = status(client, service).await.expect("check");
        if got == want as i32 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{service:?} reports {got}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_reports_serving_while_a_namesrv_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (namesrv, _broker) = crate::support::start_backend(dir.path(), |_| {}).await;
    let addr = namesrv.local_addr();
    // The first NameServer of the list is down: the proxy serves through the second.
    let dead = rocketraft_common::net::free_loopback_port().expect("port");
    let proxy = Proxy::start(ProxyConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        namesrv_addr: format!("127.0.0.1:{dead};{addr}"),
        health_check_interval: Duration::from_millis(100),
        ..ProxyConfig::default()
    })
    .await
    .expect("proxy");
    let channel = Channel::from_shared(format!("http://{}", proxy.local_addr()))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut client = HealthClient::new(channel);
    wait_for(&mut client, "", ServingStatus::Serving).await;
    wait_for(&mut client, MESSAGING_SERVICE, ServingStatus::Serving).await;
    let unknown = status(&mut client, "no.such.Service")
        .await
        .expect_err("unknown service");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let mut watch = client
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.expect("stream").expect("a status");
    assert_eq!(first.status, ServingStatus::Serving as i32);

    // No NameServer answers: NOT_SERVING, on Check and on Watch.
    namesrv.shutdown().await;
    wait_for(&mut client, "", ServingStatus::NotServing).await;
    wait_for(&mut client, MESSAGING_SERVICE, ServingStatus::NotServing).await;
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("a change within 10 s")
        .expect("stream")
        .expect("a status");
    assert_eq!(next.status, ServingStatus::NotServing as i32);

    // One is back on the same port: SERVING again.
    let again = NameServer::start(NamesrvConfig {
        listen: addr,
        ..NamesrvConfig::default()
    })
    .await
    .expect("namesrv again");
    wait_for(&mut client, "", ServingStatus::Serving).await;
    proxy.shutdown().await;
    again.shutdown().await;
}
