//! What the proxy tests share: a real NameServer and broker on loopback ports.

#![allow(dead_code)]

use std::path::Path;

use rocketraft_broker::store::FlushDiskType;
use rocketraft_broker::{Broker, BrokerConfig};
use rocketraft_nameserver::{NameServer, NamesrvConfig};

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
