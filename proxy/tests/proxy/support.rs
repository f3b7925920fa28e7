//! What the proxy tests share: a real NameServer and broker on loopback ports.

#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use rocketraft_broker::store::FlushDiskType;
use rocketraft_broker::{Broker, BrokerConfig};
use rocketraft_common::TopicConfig;
use rocketraft_nameserver::{NameServer, NamesrvConfig};
use rocketraft_proxy::pb::messaging_service_client::MessagingServiceClient;
use rocketraft_proxy::{Proxy, ProxyConfig};
use rocketraft_remoting::api::MqClientApi;
use rocketraft_remoting::{ClientConfig, RemotingClient};

/// Starts a NameServer and a broker (1 MiB segments, SYNC_FLUSH, data in `dir`) registered
/// with it; `tweak` adjusts the broker's configuration first.
pub async fn start_backend(
    dir: &Path,
    tweak: impl FnOnce(&mut BrokerConfig),
) -> (NameServer, Broker) {
    let namesrv = NameServer::start(NamesrvConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..NamesrvConfig::default()
    })
    .await
    .expect("namesrv");
    let mut bc = BrokerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        namesrv_addr: namesrv.local_addr().to_string(),
        ..BrokerConfig::default()
    };
    bc.store.store_root = dir.to_path_buf();
    bc.store.commitlog_segment_size = 1 << 20;
    bc.store.flush_disk_type = FlushDiskType::SyncFlush;
    bc.store.pretouch = false;
    tweak(&mut bc);
    let broker = Broker::start(bc).await.expect("broker");
    (namesrv, broker)
}

/// Creates `config`'s topic on `broker` and waits until `namesrv` routes it: the broker
/// registers a new topic with the NameServer right after, not before it answers.
pub async fn create_topic(namesrv: &NameServer, broker: &Broker, config: &TopicConfig) {
    let api = MqClientApi::new(
        RemotingClient::new(ClientConfig::default()),
        Duration::from_secs(5),
    );
    api.create_topic(&broker.local_addr().to_string(), config)
        .await
        .expect("topic");
    let namesrv = namesrv.local_addr().to_string();
    let started = Instant::now();
    while api.topic_route(&namesrv, &config.topic_name).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no route for {}",
            config.topic_name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A proxy on a loopback port in local mode, as in `rocketraft dev`: the broker of this
/// process is called in-process (a transaction check-back still reaches the proxy over its TCP
/// connection).
pub fn local_proxy_config(namesrv: &NameServer) -> ProxyConfig {
    ProxyConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        advertised_host: None,
        namesrv_addr: namesrv.local_addr().to_string(),
        proxy_mode: rocketraft_proxy::metrics::ProxyMode::Local,
        ..ProxyConfig::default()
    }
}

/// A gRPC client of `proxy`.
pub async fn grpc_client(proxy: &Proxy) -> MessagingServiceClient<tonic::transport::Channel> {
    MessagingServiceClient::connect(format!("http://{}", proxy.local_addr()))
        .await
        .expect("connect")
}
