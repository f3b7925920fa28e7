//! Issue 20, multi-host addressing: brokers started from a RocketMQ-style `broker.conf`
//! (`brokerIP1` and `brokerIP2` as bare IPs, `listenPort`, `haListenPort`, no `bindAddress`)
//! listen on 0.0.0.0 and advertise what the file says. Each broker is a "host" of its own: its
//! Remoting address on one 127/8 IP, its HA address on another (Linux answers on all of
//! 127/8), the NameServer with the embedded controller on 127.0.0.1.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rocketraft_broker::{Broker, BrokerConfig};
use rocketraft_remoting::codes::response_code;

use crate::replication::{api, free_port, master_of, message, namesrv_secured, wait_for};

/// A broker.conf as an operator copies it from RocketMQ's controller quick start, with this
/// broker's IPs and ports.
fn broker_conf(dir: &Path, ns: SocketAddr, ip1: &str, ip2: &str, port: u16, ha: u16) -> String {
    format!(
        "brokerClusterName = DefaultCluster\n\
         brokerName = broker-hosts\n\
         brokerId = -1\n\
         brokerRole = ASYNC_MASTER\n\
         flushDiskType = ASYNC_FLUSH\n\
         brokerIP1 = {ip1}\n\
         brokerIP2 = {ip2}\n\
         listenPort = {port}\n\
         haListenPort = {ha}\n\
         namesrvAddr = {ns}\n\
         enableControllerMode = true\n\
         controllerAddr = {ns}\n\
         storePathRootDir = {}\n\
         mappedFileSizeCommitLog = 65536\n\
         maxMessageSize = 16384\n",
        dir.display()
    )
}

/// The conf read as `rocketraft broker --config broker.conf` reads it, with the test's short
/// failure-detection times (not RocketMQ keys).
fn config_from_conf(text: &str) -> BrokerConfig {
    let mut config = BrokerConfig::from_properties(text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .config;
    config.controller_heartbeat_interval_ms = 300;
    config.controller_heartbeat_timeout_ms = 2000;
    config.sync_controller_metadata_period_ms = 500;
    config.check_sync_state_set_period_ms = 200;
    config.ha_max_time_slave_not_catchup_ms = 2000;
    config.min_in_sync_replicas = 2;
    config.store.pretouch = false;
    config.validate().expect("valid");
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rocketmq_broker_ips_register_and_replicate_at_the_advertised_addresses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = namesrv_secured(dir.path(), None, |_| {}).await;
    let ns_addr = ns.local_addr();
    // (brokerIP1, brokerIP2, listenPort, haListenPort) of two hosts.
    let hosts = [
        ("127.0.0.2", "127.0.0.3", free_port(), free_port()),
        ("127.0.0.4", "127.0.0.5", free_port(), free_port()),
    ];
    let mut brokers: Vec<Option<Broker>> = Vec::new();
    for (i, (ip1, ip2, port, ha)) in hosts.iter().enumerate() {
        let text = broker_conf(
            &dir.path().join(format!("b{i}")),
            ns_addr,
            ip1,
            ip2,
            *port,
            *ha,
        );
        let config = config_from_conf(&text);
        assert_eq!(config.listen, SocketAddr::from(([0, 0, 0, 0], *port)));
        let broker = Broker::start(config).await.expect("broker starts");
        // brokerIP1 with listenPort, brokerIP2 with haListenPort.
        assert_eq!(
            broker.advertised_addr().to_string(),
            format!("{ip1}:{port}")
        );
        assert_eq!(broker.inner().ha_addr(), format!("{ip2}:{ha}"));
        brokers.push(Some(broker));
    }
    let m = wait_for("a master", Duration::from_secs(20), || master_of(&brokers)).await;
    let s = 1 - m;
    let master = brokers[m].as_ref().expect("master");
    let slave = brokers[s].as_ref().expect("slave");
    wait_for("both in the SyncStateSet", Duration::from_secs(20), || {
        (crate::replication::in_sync(master) == 2).then_some(())
    })
    .await;

    // Sends to the advertised address are acknowledged once the slave holds them: it follows
    // the master at brokerIP2:haListenPort, the HA address the master hands it.
    let api = api();
    let master_addr = format!("{}:{}", hosts[m].0, hosts[m].2);
    for i in 0..20 {
        let r = api.send(&master_addr, &message(i)).await.expect("send");
        assert_eq!(r.code, response_code::SUCCESS, "send {i}");
    }
    let end = master.inner().store.max_phy_offset();
    assert!(end > 0);
    wait_for("the slave caught up", Duration::from_secs(10), || {
        (slave.inner().store.max_phy_offset() == end).then_some(())
    })
    .await;
    let slave_view = slave.inner().ha.as_ref().expect("ha").snapshot();
    assert_eq!(
        slave_view.master_addr.as_deref(),
        Some(master_addr.as_str()),
        "the slave knows its master by the master's brokerIP1"
    );

    // The NameServer has both at brokerIP1:listenPort: the master as id 0, the slave by its id.
    let route = wait_for_route(&api, ns_addr, &master_addr, hosts[s].0, hosts[s].2).await;
    let data = route
        .broker_datas
        .iter()
        .find(|b| b.broker_name == "broker-hosts")
        .expect("the set is in the route");
    assert_eq!(data.broker_addrs.get(&0), Some(&master_addr));
    let slave_addr = format!("{}:{}", hosts[s].0, hosts[s].2);
    assert!(
        data.broker_addrs
            .iter()
            .any(|(id, addr)| *id > 0 && *addr == slave_addr),
        "{:?}",
        data.broker_addrs
    );
    for b in brokers.into_iter().flatten() {
        b.shutdown().await;
    }
    ns.shutdown().await;
}

/// The route of the test topic once the NameServer lists the master and the slave.
async fn wait_for_route(
    api: &rocketraft_remoting::api::MqClientApi,
    ns: SocketAddr,
    master: &str,
    slave_ip: &str,
    slave_port: u16,
) -> rocketraft_common::protocol::TopicRouteData {
    let slave = format!("{slave_ip}:{slave_port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(route) = api.topic_route(&ns.to_string(), "Replicated").await {
            let listed = route.broker_datas.iter().any(|b| {
                b.broker_addrs.values().any(|a| a == master)
                    && b.broker_addrs.values().any(|a| *a == slave)
            });
            if listed {
                return route;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the NameServer never listed {master} and {slave}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_loopback_address_with_a_nameserver_on_another_host_is_refused_before_binding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    // A NameServer on another host (TEST-NET-3: never this host; nothing is sent to it).
    let text = format!(
        "brokerName = broker-far\nlistenPort = {port}\nnamesrvAddr = 203.0.113.10:9876\n\
         storePathRootDir = {}\nmappedFileSizeCommitLog = 65536\n",
        dir.path().join("store").display()
    );
    let config = BrokerConfig::from_properties(&text).expect("reads").config;
    let err = match Broker::start(config.clone()).await {
        Ok(b) => {
            b.shutdown().await;
            panic!("a broker advertising 127.0.0.1 to a remote NameServer started");
        }
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.starts_with(&format!(
            "brokerIP1 (advertised_addr) is 127.0.0.1:{port} (not set, taken from listen \
             0.0.0.0:{port}), a loopback address, but namesrvAddr names 203.0.113.10:9876 on \
             another host"
        )),
        "{err}"
    );
    // Nothing was bound, and the store was not created.
    std::net::TcpListener::bind(("0.0.0.0", port)).expect("the port is still free");
    assert!(!dir.path().join("store").exists());
    // An unspecified brokerIP1 is refused whatever the peers.
    let mut unspecified = config;
    unspecified.advertised_addr = Some("0.0.0.0:0".parse().expect("addr"));
    let err = match Broker::start(unspecified).await {
        Ok(b) => {
            b.shutdown().await;
            panic!("a broker advertising 0.0.0.0 started");
        }
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.starts_with(&format!(
            "brokerIP1 (advertised_addr) is 0.0.0.0:{port}: an unspecified IP"
        )),
        "{err}"
    );
}
