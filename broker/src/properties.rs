//! RocketMQ's `broker.conf` (Java properties) read into a [`BrokerConfig`].
//!
//! Keys are matched against the serde names and aliases of [`BrokerConfig`] and of its store
//! ([`StoreConfig`]) and server limits tables, which RocketMQ writes flat in the same file
//! ([`rocketraft_common::properties::load`]): a key added later with an alias is read without
//! touching this file. A few RocketMQ keys mean something our fields do not hold as such, and
//! are interpreted here: `listenPort` and `bindAddress` (a port and an IP, our `listen` is both),
//! `brokerIP1` and `brokerIP2` (IPs, combined with the ports), `brokerRole`, `brokerId` under
//! the role rules of RocketMQ's `BrokerStartup`, and `aclEnable` and `enableDLegerCommitLog`
//! (ACL 1.0 and DLedger, not supported: refused when true rather than silently dropped).
//! Keys nothing takes are listed in [`FromProperties::unused_keys`] and logged as one warning.

use std::net::{IpAddr, SocketAddr};

use rocketraft_common::properties::{self, Entry, Properties, PropertyError};

use crate::config::BrokerConfig;

/// The nested tables of [`BrokerConfig`] whose keys RocketMQ writes flat in `broker.conf`
/// (MessageStoreConfig and NettyServerConfig settings); the other tables (`tls`, ...) are reached
/// with dotted keys (`tls.mode = enforcing`).
pub const FLAT_TABLES: &[&str] = &["store", "server_limits"];

/// A config read from a properties file, with what the reader could not use.
#[derive(Debug, Clone)]
pub struct FromProperties<T> {
    pub config: T,
    /// Keys no setting takes (RocketMQ settings Rocketraft does not have), in file order.
    pub unused_keys: Vec<String>,
    /// RocketMQ settings read with a different effect here (logged as warnings).
    pub notes: Vec<String>,
}

/// RocketMQ's `brokerRole`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BrokerRole {
    AsyncMaster,
    SyncMaster,
    Slave,
}

fn broker_role(entry: &Entry) -> Result<BrokerRole, PropertyError> {
    match entry.value.trim().to_ascii_uppercase().as_str() {
        "ASYNC_MASTER" => Ok(BrokerRole::AsyncMaster),
        "SYNC_MASTER" => Ok(BrokerRole::SyncMaster),
        "SLAVE" => Ok(BrokerRole::Slave),
        _ => Err(PropertyError::at(
            entry,
            format!(
                "expected ASYNC_MASTER, SYNC_MASTER or SLAVE, found {:?}",
                entry.value
            ),
        )),
    }
}

/// An IP (RocketMQ's `brokerIP1`/`brokerIP2`/`bindAddress`); an `ip:port` is taken too.
enum Host {
    Ip(IpAddr),
    Addr(SocketAddr),
}

fn host(entry: &Entry, what: &str) -> Result<Option<Host>, PropertyError> {
    let text = entry.value.trim();
    if text.is_empty() {
        return Ok(None);
    }
    // RocketMQ writes an IPv6 brokerIP1 in brackets (NetworkUtil.normalizeHostAddress).
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(Some(Host::Ip(ip)));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(Some(Host::Addr(addr)));
    }
    Err(PropertyError::at(
        entry,
        format!("expected an IP address ({what}), found {:?}", entry.value),
    ))
}

/// Checks a `;`-separated `host:port` list (`namesrvAddr`, `controllerAddr`) as RocketMQ's
/// `BrokerStartup` does, naming the key of `props` it came from.
fn check_addr_list(props: &Properties, keys: &[&str], list: &str) -> Result<(), PropertyError> {
    let Some(entry) = keys.iter().find_map(|k| props.get(k)) else {
        return Ok(());
    };
    for addr in list.split(';').map(str::trim).filter(|a| !a.is_empty()) {
        let port = addr.rsplit_once(':').map(|(_, port)| port.parse::<u16>());
        if !matches!(port, Some(Ok(p)) if p > 0) {
            return Err(PropertyError::at(
                entry,
                format!(
                    "expected host:port addresses separated by ';' \
                     (127.0.0.1:9876;192.168.0.1:9876), found {addr:?}"
                ),
            ));
        }
    }
    Ok(())
}

impl BrokerConfig {
    /// Reads a RocketMQ `broker.conf` (see the module documentation). The result is not
    /// validated: call [`BrokerConfig::validate`].
    pub fn from_properties(text: &str) -> Result<FromProperties<BrokerConfig>, PropertyError> {
        let mut props = Properties::parse(text)?;
        // The keys interpreted here, taken out before the generic pass.
        let listen_port = props.remove("listenPort");
        let bind_address = props.remove("bindAddress");
        let ip1 = props.remove("brokerIP1");
        let ip2 = props.remove("brokerIP2");
        let role = props.remove("brokerRole");
        let acl = props.remove("aclEnable");
        let dledger = props.remove("enableDLegerCommitLog");
        let ha_port_given = props.contains_key("haListenPort") || props.contains_key("ha_port");

        let loaded = properties::load::<BrokerConfig>(&props, FLAT_TABLES)?;
        let mut config = loaded.config;
        check_addr_list(
            &props,
            &["namesrvAddr", "namesrv_addr"],
            &config.namesrv_addr,
        )?;
        check_addr_list(
            &props,
            &["controllerAddr", "controller_addr"],
            &config.controller_addr,
        )?;
        let mut notes = Vec::new();

        if let Some(entry) = &acl {
            if properties::value::<bool>(entry)? {
                return Err(PropertyError::at(
                    entry,
                    "ACL 1.0 (plain_acl.yml) is not supported: remove aclEnable and set \
                     authenticationEnabled = true and authorizationEnabled = true (ACL 2.0; users \
                     and ACLs with `rocketraft admin acl`)",
                ));
            }
        }

        if let Some(entry) = &dledger {
            if properties::value::<bool>(entry)? {
                return Err(PropertyError::at(
                    entry,
                    "DLedger CommitLog replication is not supported: remove \
                     enableDLegerCommitLog and use controller mode (enableControllerMode = true, \
                     controllerAddr), where the controller picks the master and the CommitLog \
                     is replicated to the slaves",
                ));
            }
        }

        // listenPort and bindAddress make our `listen`; without haListenPort, RocketMQ listens
        // for HA on listenPort + 1.
        if let Some(entry) = &bind_address {
            match host(entry, "the IP to listen on")? {
                Some(Host::Ip(ip)) => config.listen.set_ip(ip),
                Some(Host::Addr(_)) => {
                    return Err(PropertyError::at(
                        entry,
                        "expected an IP address without a port (the port is listenPort)",
                    ))
                }
                None => {}
            }
        }
        if let Some(entry) = &listen_port {
            let port: u16 = properties::value(entry)?;
            config.listen.set_port(port);
            if !ha_port_given {
                config.ha_port = if port == 0 { 0 } else { port.saturating_add(1) };
            }
        }

        // brokerIP1 is the advertised IP; the advertised address is brokerIP1:listenPort.
        if let Some(entry) = &ip1 {
            match host(entry, "the advertised IP; the port is listenPort")? {
                // With listenPort = 0 the port is the one bound at start.
                Some(Host::Ip(ip)) => {
                    config.advertised_addr = Some(SocketAddr::new(ip, config.listen.port()));
                }
                Some(Host::Addr(addr)) => config.advertised_addr = Some(addr),
                None => {}
            }
        }
        // brokerIP2 is the IP slaves reach the master's HA port on.
        if let Some(entry) = &ip2 {
            match host(entry, "the HA IP; the port is haListenPort")? {
                // With haListenPort = 0 the port is the one bound at start.
                Some(Host::Ip(ip)) => {
                    config.ha_advertised_addr = Some(SocketAddr::new(ip, config.ha_port));
                }
                Some(Host::Addr(addr)) => config.ha_advertised_addr = Some(addr),
                None => {}
            }
        }

        // Roles, as RocketMQ's BrokerStartup decides them.
        let role = role
            .as_ref()
            .map(|e| broker_role(e).map(|r| (e, r)))
            .transpose()?;
        if config.enable_controller_mode {
            if role.is_some() {
                notes.push(
                    "brokerRole is ignored in controller mode: the controller gives each broker \
                     its role"
                        .to_string(),
                );
            }
            if config.broker_id < 0 {
                // RocketMQ's controller-mode examples say brokerId = -1: "assigned".
                config.broker_id = 0;
            }
        } else {
            match role {
                Some((entry, BrokerRole::Slave)) => {
                    return Err(PropertyError::at(
                        entry,
                        "a SLAVE needs controller mode: Rocketraft replicates only under a \
                         controller, and a slave outside it would copy nothing from its master. \
                         Set enableControllerMode = true and controllerAddr (the controller \
                         gives each broker its role), or run this broker as a master \
                         (brokerRole = ASYNC_MASTER)",
                    ));
                }
                Some((_, BrokerRole::SyncMaster)) => notes.push(
                    "brokerRole = SYNC_MASTER outside controller mode: this broker has no \
                     slaves (Rocketraft replicates only in controller mode), so sends are \
                     acknowledged once stored here (per flushDiskType)"
                        .to_string(),
                ),
                Some((_, BrokerRole::AsyncMaster)) | None => {}
            }
            if config.broker_id != 0 {
                notes.push(format!(
                    "brokerId = {} ignored: a master's id is 0 (as in RocketMQ)",
                    config.broker_id
                ));
                config.broker_id = 0;
            }
        }

        if !loaded.unused_keys.is_empty() {
            tracing::warn!(
                keys = %loaded.unused_keys.join(", "),
                "broker config: RocketMQ settings Rocketraft does not use, ignored"
            );
        }
        for note in &notes {
            tracing::warn!("broker config: {note}");
        }
        Ok(FromProperties {
            config,
            unused_keys: loaded.unused_keys,
            notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FlushDiskType;

    fn parse_ok(text: &str) -> FromProperties<BrokerConfig> {
        BrokerConfig::from_properties(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn refused(text: &str) -> PropertyError {
        BrokerConfig::from_properties(text).expect_err(text)
    }

    #[test]
    fn broker_and_store_keys_land_in_their_fields() {
        let read = parse_ok(
            "brokerClusterName = C1\nbrokerName = broker-b\nbrokerId = 0\n\
             namesrvAddr = 10.0.0.1:9876;10.0.0.2:9876\nautoCreateTopicEnable = false\n\
             storePathRootDir = /data/store\nstorePathCommitLog = /data/commitlog\n\
             mappedFileSizeCommitLog = 1048576\nfileReservedTime = 48\ndeleteWhen = 04\n\
             diskMaxUsedSpaceRatio = 80\nflushDiskType = SYNC_FLUSH\nmaxMessageSize = 65536\n\
             serverChannelMaxIdleTimeSeconds = 60\nauthenticationEnabled = true\n\
             initAuthenticationUser = {\"username\":\"root\",\"password\":\"12345678\"}\n\
             tls.mode = permissive\nmaxTransferCountOnMessageInMemory = 64\n\
             sendMessageThreadPoolNums = 16\n",
        );
        let c = &read.config;
        assert_eq!(c.cluster_name, "C1");
        assert_eq!(c.broker_name, "broker-b");
        assert_eq!(c.namesrv_addrs(), vec!["10.0.0.1:9876", "10.0.0.2:9876"]);
        assert!(!c.auto_create_topic_enable);
        assert_eq!(c.store.store_root, std::path::PathBuf::from("/data/store"));
        assert_eq!(
            c.store.commitlog_dir(),
            std::path::PathBuf::from("/data/commitlog")
        );
        assert_eq!(c.store.commitlog_segment_size, 1 << 20);
        assert_eq!(c.store.file_reserved_time, 48);
        assert_eq!(c.store.delete_when, "04");
        assert_eq!(c.store.disk_max_used_space_ratio, 80);
        assert_eq!(c.store.flush_disk_type, FlushDiskType::SyncFlush);
        assert_eq!(c.store.max_message_size, 65536);
        assert_eq!(c.server_limits.idle_seconds, 60);
        // A MessageStoreConfig key of RocketMQ's that is a broker key here.
        assert_eq!(c.max_transfer_count, 64);
        assert!(c.authentication_enabled);
        assert!(c.init_authentication_user.is_some());
        assert_eq!(c.tls.mode, rocketraft_remoting::tls::TlsMode::Permissive);
        assert_eq!(read.unused_keys, vec!["sendMessageThreadPoolNums"]);
        assert!(read.notes.is_empty(), "{:?}", read.notes);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn listen_port_and_broker_ips() {
        let c = parse_ok("listenPort = 30911\nbrokerIP1 = 192.168.0.7\n").config;
        assert_eq!(c.listen, "0.0.0.0:30911".parse().expect("addr"));
        assert_eq!(
            c.advertised_addr,
            Some("192.168.0.7:30911".parse().expect("addr"))
        );
        // Without haListenPort, HA is on listenPort + 1 (RocketMQ's rule).
        assert_eq!(c.ha_port, 30912);
        let c = parse_ok(
            "bindAddress = 127.0.0.1\nlistenPort = 30911\nhaListenPort = 40000\n\
             brokerIP1 = 10.0.0.1\nbrokerIP2 = 10.0.0.2\n",
        )
        .config;
        assert_eq!(c.listen, "127.0.0.1:30911".parse().expect("addr"));
        assert_eq!(c.ha_port, 40000);
        assert_eq!(
            c.advertised_addr,
            Some("10.0.0.1:30911".parse().expect("addr"))
        );
        assert_eq!(
            c.ha_advertised_addr,
            Some("10.0.0.2:40000".parse().expect("addr"))
        );
        // Defaults without them: RocketMQ's ports.
        let c = parse_ok("brokerName = b\n").config;
        assert_eq!(c.listen.port(), 10911);
        assert_eq!(c.ha_port, 10912);
        assert_eq!(c.advertised_addr, None);

        let err = refused("listenPort = 70000\n");
        assert_eq!(
            err.to_string(),
            "line 1: listenPort: expected an integer from 0 to 65535, found \"70000\""
        );
        let err = refused("brokerIP1 = broker.example.com\n");
        assert!(
            err.to_string()
                .contains("brokerIP1: expected an IP address"),
            "{err}"
        );
        // listenPort = 0: the advertised port is the one bound at start.
        let c = parse_ok("listenPort = 0\nbrokerIP1 = 10.0.0.1\nbrokerIP2 = 10.0.0.2\n").config;
        assert_eq!(c.advertised_addr, Some("10.0.0.1:0".parse().expect("addr")));
        assert_eq!(
            c.advertised_for(30911),
            "10.0.0.1:30911".parse().expect("addr")
        );
        assert_eq!(c.ha_port, 0);
        assert_eq!(
            c.ha_advertised_for(c.advertised_for(30911), 30999),
            "10.0.0.2:30999".parse().expect("addr")
        );
    }

    #[test]
    fn roles_follow_rocketmq_broker_startup() {
        for role in ["ASYNC_MASTER", "SYNC_MASTER"] {
            let read = parse_ok(&format!("brokerRole = {role}\nbrokerId = 0\n"));
            assert_eq!(read.config.broker_id, 0);
            assert_eq!(
                read.notes.len(),
                usize::from(role == "SYNC_MASTER"),
                "{:?}",
                read.notes
            );
        }
        // A master's id is 0 whatever brokerId says.
        let read = parse_ok("brokerRole = ASYNC_MASTER\nbrokerId = 3\n");
        assert_eq!(read.config.broker_id, 0);
        assert!(
            read.notes[0].contains("brokerId = 3 ignored"),
            "{:?}",
            read.notes
        );
        // A slave needs controller mode.
        let err = refused("brokerId = 1\nbrokerRole = SLAVE\n");
        assert_eq!(err.key.as_deref(), Some("brokerRole"));
        assert_eq!(err.line, Some(2));
        assert!(
            err.to_string().contains("enableControllerMode = true"),
            "{err}"
        );
        let err = refused("brokerRole = LEADER\n");
        assert!(
            err.to_string()
                .contains("expected ASYNC_MASTER, SYNC_MASTER or SLAVE"),
            "{err}"
        );
        // In controller mode the role and the id come from the controller.
        let read = parse_ok(
            "brokerId = -1\nbrokerRole = SLAVE\nenableControllerMode = true\n\
             controllerAddr = 127.0.0.1:9878\n",
        );
        assert!(read.config.enable_controller_mode);
        assert_eq!(read.config.controller_addr, "127.0.0.1:9878");
        assert_eq!(read.config.broker_id, 0);
        assert!(
            read.notes[0].contains("ignored in controller mode"),
            "{:?}",
            read.notes
        );
        assert_eq!(read.config.validate(), Ok(()));
    }

    #[test]
    fn acl_1_is_refused_and_bad_values_are_named() {
        let err = refused("aclEnable = true\n");
        assert!(
            err.to_string().contains("authenticationEnabled = true"),
            "{err}"
        );
        assert!(parse_ok("aclEnable = false\n").unused_keys.is_empty());
        let err = refused("brokerName = b\nfileReservedTime = 48h\n");
        assert_eq!(
            err.to_string(),
            "line 2: fileReservedTime: expected a non-negative integer, found \"48h\""
        );
        let err = refused("namesrvAddr = 127.0.0.1:9876;127.0.0.1\n");
        assert!(
            err.to_string()
                .starts_with("line 1: namesrvAddr: expected host:port addresses"),
            "{err}"
        );
        assert!(err.to_string().contains("found \"127.0.0.1\""), "{err}");
        let err = refused("enableControllerMode = true\ncontrollerAddr = ctl:port\n");
        assert_eq!(err.key.as_deref(), Some("controllerAddr"));
        let err = refused("flushDiskType = SOMETIMES\n");
        assert!(
            err.to_string()
                .starts_with("line 1: flushDiskType: unknown variant"),
            "{err}"
        );
        let err = refused("enableControllerMode = yes\n");
        assert!(err.to_string().contains("expected a boolean"), "{err}");
    }

    /// RocketMQ's own example files (broker/tests/fixtures/rocketmq), as shipped.
    fn fixture(name: &str) -> &'static str {
        match name {
            "broker.conf" => include_str!("../tests/fixtures/rocketmq/broker.conf"),
            "async-a" => include_str!("../tests/fixtures/rocketmq/2m-2s-async_broker-a.properties"),
            "async-a-s" => {
                include_str!("../tests/fixtures/rocketmq/2m-2s-async_broker-a-s.properties")
            }
            "sync-a" => include_str!("../tests/fixtures/rocketmq/2m-2s-sync_broker-a.properties"),
            "controller-n0" => {
                include_str!("../tests/fixtures/rocketmq/controller_quick-start_broker-n0.conf")
            }
            "container" => include_str!(
                "../tests/fixtures/rocketmq/container_2container-2m-2s_broker-a-in-container1.conf"
            ),
            "dledger" => include_str!("../tests/fixtures/rocketmq/dledger_broker-n0.conf"),
            other => panic!("no fixture {other}"),
        }
    }

    #[test]
    fn rocketmq_example_configs() {
        // distribution/conf/broker.conf and 2m-2s-async/broker-a.properties: the same keys,
        // spaced differently.
        for name in ["broker.conf", "async-a"] {
            let read = parse_ok(fixture(name));
            let c = &read.config;
            assert_eq!(c.cluster_name, "DefaultCluster", "{name}");
            assert_eq!(c.broker_name, "broker-a");
            assert_eq!(c.broker_id, 0);
            assert_eq!(c.store.delete_when, "04");
            assert_eq!(c.store.file_reserved_time, 48);
            assert_eq!(c.store.flush_disk_type, FlushDiskType::AsyncFlush);
            assert!(!c.enable_controller_mode);
            assert!(read.unused_keys.is_empty(), "{:?}", read.unused_keys);
            assert!(read.notes.is_empty(), "{:?}", read.notes);
            assert_eq!(c.validate(), Ok(()));
        }
        // A SYNC_MASTER runs, with a note that it has no slaves here.
        let read = parse_ok(fixture("sync-a"));
        assert_eq!(read.config.broker_id, 0);
        assert!(read.notes[0].contains("SYNC_MASTER"), "{:?}", read.notes);
        // Its slave, outside controller mode, is refused with the way out.
        let err = refused(fixture("async-a-s"));
        assert_eq!(err.key.as_deref(), Some("brokerRole"));
        assert!(err.to_string().contains("controller mode"), "{err}");

        // controller/quick-start/broker-n0.conf.
        let read = parse_ok(fixture("controller-n0"));
        let c = &read.config;
        assert!(c.enable_controller_mode);
        assert_eq!(c.controller_addr, "127.0.0.1:9878");
        assert_eq!(c.namesrv_addr, "127.0.0.1:9876");
        assert!(c.all_ack_in_sync_state_set);
        assert_eq!(c.broker_id, 0);
        assert_eq!(c.listen, "0.0.0.0:30911".parse().expect("addr"));
        assert_eq!(c.ha_port, 30912);
        assert_eq!(
            c.store.store_root,
            std::path::PathBuf::from("/tmp/rmqstore/node00")
        );
        assert_eq!(
            c.store.commitlog_dir(),
            std::path::PathBuf::from("/tmp/rmqstore/node00/commitlog")
        );
        assert!(read.unused_keys.is_empty(), "{:?}", read.unused_keys);
        assert_eq!(c.validate(), Ok(()));

        // container/2container-2m-2s: RocketMQ 5 keys we do not have are listed, not refused.
        let read = parse_ok(fixture("container"));
        let c = &read.config;
        assert_eq!(c.listen.port(), 10911);
        assert_eq!(c.ha_port, 10912);
        assert_eq!(c.in_sync_replicas, 2);
        assert_eq!(c.min_in_sync_replicas, 1);
        assert_eq!(
            c.store.store_root,
            std::path::PathBuf::from("/root/broker-a/store")
        );
        assert_eq!(
            read.unused_keys,
            vec![
                "totalReplicas",
                "enableAutoInSyncReplicas",
                "slaveReadEnable",
                "brokerHeartbeatInterval",
                "brokerNotActiveTimeoutMillis",
                "sendHeartbeatTimeoutMillis",
                "enableSlaveActingMaster",
            ]
        );
        assert_eq!(c.validate(), Ok(()));

        // dledger/broker-n0.conf: DLedger replication is refused, not silently dropped.
        let err = refused(fixture("dledger"));
        assert_eq!(err.key.as_deref(), Some("enableDLegerCommitLog"));
        assert!(err.to_string().contains("controller mode"), "{err}");
    }
}
