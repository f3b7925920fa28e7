//! The TOML config of each controller and broker of a new cluster: the config value built over
//! the defaults, `--extra-*-config` lines merged over its TOML, checked by parsing it back, and
//! written as the serialization of the config parsed back (every key under our name).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{bail, Context};
use rocketraft_broker::store::StoreConfig;
use rocketraft_broker::BrokerConfig;
use rocketraft_common::trust::ClusterSecret;
use rocketraft_controller::ControllerConfig;
use rocketraft_nameserver::NamesrvConfig;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::auth::ClusterAuth;
use super::layout::{loopback, PortLayout};
use super::ClusterSpec;
use crate::cmd::SMALL_SEGMENT_SIZE;

/// The TOML of `config` without the keys at their default value, for `--extra-*-config` lines
/// to merge over: a line may then name a key by its RocketMQ alias (`slaveTimeout = 5000`)
/// without the key also being there under our name (a duplicate). The full TOML when leaving
/// keys out would not parse back to `config`: a nested table whose own defaults differ from
/// its parent's (the controller's `[raft]` starts from `controller-data`, a `[raft]` table
/// from `raft-data`).
fn non_default_table<T>(config: &T) -> anyhow::Result<toml::Table>
where
    T: Serialize + DeserializeOwned + Default + PartialEq,
{
    let full = toml::Table::try_from(config).context("cannot encode a config")?;
    let defaults = toml::Table::try_from(T::default()).context("cannot encode a config")?;
    let mut table = full.clone();
    remove_defaults(&mut table, &defaults);
    let parses_back = toml::Value::Table(table.clone())
        .try_into::<T>()
        .is_ok_and(|back| back == *config);
    Ok(if parses_back { table } else { full })
}

fn remove_defaults(table: &mut toml::Table, defaults: &toml::Table) {
    table.retain(|key, value| match (value, defaults.get(key)) {
        (toml::Value::Table(inner), Some(toml::Value::Table(defaults))) => {
            remove_defaults(inner, defaults);
            !inner.is_empty()
        }
        (value, default) => default != Some(&*value),
    });
}

/// Parses `--extra-*-config` lines and merges them (deeply) over `table`.
fn merge_extra(table: &mut toml::Table, extra: &[String], flag: &str) -> anyhow::Result<()> {
    for line in extra {
        let parsed: toml::Table = toml::from_str(line).with_context(|| {
            format!(
                "{flag} {line:?} is not a TOML `key = value` line (quote strings: key = \"text\")"
            )
        })?;
        merge_table(table, parsed);
    }
    Ok(())
}

fn merge_table(into: &mut toml::Table, from: toml::Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(new)) => {
                merge_table(existing, new)
            }
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

pub(super) fn path_string(path: &Path) -> anyhow::Result<String> {
    path.to_str().map(str::to_string).with_context(|| {
        format!(
            "{} is not valid UTF-8: use a plain directory name",
            path.display()
        )
    })
}

fn loopback_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Node id (index + 1) -> the loopback address of one of each controller's ports.
fn members(layout: &PortLayout, port_of: fn(&(u16, u16)) -> u16) -> BTreeMap<u64, String> {
    layout
        .controllers
        .iter()
        .zip(1u64..)
        .map(|(ports, id)| (id, loopback(port_of(ports))))
        .collect()
}

/// The controller TOML of node `id` (1-based), checked by parsing it back.
pub fn controller_toml(
    id: usize,
    layout: &PortLayout,
    data_dir: &Path,
    secret: Option<&ClusterSecret>,
    extra: &[String],
) -> anyhow::Result<String> {
    let (remoting, raft) = layout
        .controllers
        .get(id.wrapping_sub(1))
        .copied()
        .with_context(|| format!("no controller {id} in the layout"))?;
    let raft = ControllerConfig::default()
        .raft
        .with_node_id(id as u64)
        .with_listen(loopback_addr(raft))
        .with_data_dir(path_string(data_dir)?)
        .with_initial_members(members(layout, |(_, raft)| *raft));
    let mut config = ControllerConfig::default()
        .with_listen(loopback_addr(remoting))
        .with_remoting_peers(members(layout, |(remoting, _)| *remoting))
        .with_raft(raft);
    config.cluster_secret = secret.cloned();
    let mut table = non_default_table(&config)?;
    merge_extra(&mut table, extra, "--extra-controller-config")?;
    let text = toml::to_string(&table).context("cannot encode a controller config")?;
    let config: ControllerConfig = toml::from_str(&text).with_context(|| {
        format!("the controller config would be invalid (check --extra-controller-config):\n{text}")
    })?;
    toml::to_string(&config).context("cannot encode a controller config")
}

/// The secrets of a new cluster that go into its configs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Secrets<'a> {
    /// The cluster secret (every NameServer, controller and broker).
    pub cluster: Option<&'a ClusterSecret>,
    /// `--auth`: authentication and authorization on every NameServer and broker, with the
    /// administrator as `initAuthenticationUser` and the servers' own user as
    /// `innerClientAuthenticationCredentials`.
    pub auth: Option<&'a ClusterAuth>,
}

/// A NameServer's TOML: its port, the cluster secret and, with `--auth`, the ACL keys.
pub fn namesrv_toml(port: u16, secrets: Secrets<'_>) -> anyhow::Result<String> {
    let mut config = NamesrvConfig::default().with_listen(loopback_addr(port));
    config.cluster_secret = secrets.cluster.cloned();
    if let Some(auth) = secrets.auth {
        config.authentication_enabled = true;
        config.authorization_enabled = true;
        config.init_authentication_user = Some(auth.admin.clone());
        config.inner_client_authentication_credentials = Some(auth.inner.clone());
    }
    let table = non_default_table(&config)?;
    toml::to_string(&table).context("cannot encode a NameServer config")
}

/// The broker TOML of broker `index` (1-based, over every set) in set `broker_name`, checked by
/// parsing and validating it back.
pub fn broker_toml(
    index: usize,
    broker_name: &str,
    spec: &ClusterSpec,
    layout: &PortLayout,
    store_root: &Path,
    secrets: Secrets<'_>,
) -> anyhow::Result<String> {
    let (remoting, ha) = layout
        .brokers
        .get(index.wrapping_sub(1))
        .copied()
        .with_context(|| format!("no broker {index} in the layout"))?;
    let controller_addr = layout
        .controllers
        .iter()
        .map(|(r, _)| loopback(*r))
        .collect::<Vec<_>>()
        .join(";");
    let mut config = BrokerConfig::default()
        .with_broker_name(broker_name)
        .with_cluster_name(spec.cluster_name())
        .with_listen(loopback_addr(remoting))
        .with_ha_port(ha)
        .with_namesrv_addr(layout.namesrv_addrs())
        .with_controller_mode(controller_addr)
        .with_store(store_config(spec, store_root)?);
    config.cluster_secret = secrets.cluster.cloned();
    if let Some(auth) = secrets.auth {
        config.authentication_enabled = true;
        config.authorization_enabled = true;
        config.init_authentication_user = Some(auth.admin.clone());
        config.inner_client_authentication_credentials = Some(auth.inner.clone());
    }
    if let Some(n) = spec.min_in_sync_replicas {
        let replicas = usize::from(layout.replicas);
        if n == 0 || n > replicas {
            bail!("--min-in-sync-replicas {n}: use 1..={replicas} (the replicas of a set)");
        }
        config = config.with_min_in_sync_replicas(n);
    }
    let mut table = non_default_table(&config)?;
    merge_extra(
        &mut table,
        &spec.extra_broker_config,
        "--extra-broker-config",
    )?;
    let text = toml::to_string(&table).context("cannot encode a broker config")?;
    let config = check_broker_config(&text)?;
    toml::to_string(&config).context("cannot encode a broker config")
}

/// The store of a broker: its root, flush type and segment size (64 MiB unless `--segment-size`
/// says otherwise, so a local cluster fits a laptop; a production broker keeps RocketMQ's 1 GiB).
fn store_config(spec: &ClusterSpec, store_root: &Path) -> anyhow::Result<StoreConfig> {
    let store = StoreConfig::new(path_string(store_root)?).with_flush_disk_type(spec.flush());
    let size = spec.segment_size.unwrap_or(SMALL_SEGMENT_SIZE);
    i64::try_from(size).context("--segment-size is too large")?;
    Ok(store.with_commitlog_segment_size(size))
}

/// Parses a broker TOML back and validates it as the broker would at start.
fn check_broker_config(text: &str) -> anyhow::Result<BrokerConfig> {
    let config: BrokerConfig = toml::from_str(text).with_context(|| {
        format!("the broker config would be invalid (check --extra-broker-config):\n{text}")
    })?;
    config
        .validate()
        .context("the broker config would be invalid")?;
    config
        .store
        .validate()
        .map_err(|e| anyhow::anyhow!("the broker store config would be invalid: {e}"))?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    use super::super::tests::up_args;

    #[test]
    fn controller_config_forms_a_quorum() {
        let l = PortLayout::fixed(9876, 30000, 3, 3).expect("layout");
        let text = controller_toml(
            2,
            &l,
            Path::new("/d/controller-2/data"),
            None,
            &[
                "scan_interval_ms = 700".to_string(),
                "raft.heartbeat_interval_ms = 111".to_string(),
            ],
        )
        .expect("toml");
        let c: ControllerConfig = toml::from_str(&text).expect("parses");
        assert_eq!(c.listen.to_string(), "127.0.0.1:30002");
        assert_eq!(c.raft.node_id, 2);
        assert_eq!(c.raft.listen.to_string(), "127.0.0.1:30003");
        assert_eq!(c.raft.data_dir, PathBuf::from("/d/controller-2/data"));
        assert_eq!(
            c.raft.initial_members,
            BTreeMap::from([
                (1, "127.0.0.1:30001".to_string()),
                (2, "127.0.0.1:30003".to_string()),
                (3, "127.0.0.1:30005".to_string()),
            ])
        );
        assert_eq!(
            c.remoting_peers.get(&3).map(String::as_str),
            Some("127.0.0.1:30004")
        );
        assert_eq!(c.scan_interval_ms, 700);
        assert_eq!(c.raft.heartbeat_interval_ms, 111);
        assert!(controller_toml(4, &l, Path::new("/d"), None, &[]).is_err());
        assert!(controller_toml(0, &l, Path::new("/d"), None, &[]).is_err());
        assert!(controller_toml(1, &l, Path::new("/d"), None, &["not toml".to_string()]).is_err());
    }

    #[test]
    fn written_configs_are_serialized_config_values() {
        let l = PortLayout::fixed(9876, 30000, 3, 3).expect("layout");
        let text =
            controller_toml(1, &l, Path::new("/d/controller-1/data"), None, &[]).expect("toml");
        let c: ControllerConfig = toml::from_str(&text).expect("parses");
        assert_eq!(toml::to_string(&c).expect("encodes"), text);
        let members = |first: u16| {
            (0..3u16)
                .map(|i| (u64::from(i) + 1, format!("127.0.0.1:{}", first + 2 * i)))
                .collect::<BTreeMap<_, _>>()
        };
        let raft = ControllerConfig::default()
            .raft
            .with_listen(loopback_addr(30001))
            .with_data_dir("/d/controller-1/data")
            .with_initial_members(members(30001));
        let expected = ControllerConfig::default()
            .with_listen(loopback_addr(30000))
            .with_remoting_peers(members(30000))
            .with_raft(raft);
        assert_eq!(c, expected);

        let spec = up_args(&[]).spec;
        let text = broker_toml(
            1,
            "broker-a",
            &spec,
            &l,
            Path::new("/d/broker-1/store"),
            Secrets::default(),
        )
        .expect("toml");
        let b: BrokerConfig = toml::from_str(&text).expect("parses");
        assert_eq!(toml::to_string(&b).expect("encodes"), text);
        let expected = BrokerConfig::default()
            .with_listen(loopback_addr(30020))
            .with_ha_port(30021)
            .with_namesrv_addr("127.0.0.1:9876")
            .with_controller_mode("127.0.0.1:30000;127.0.0.1:30002;127.0.0.1:30004")
            .with_store(
                StoreConfig::new("/d/broker-1/store")
                    .with_commitlog_segment_size(SMALL_SEGMENT_SIZE),
            );
        assert_eq!(b, expected);
    }

    #[test]
    fn auth_turns_acl_on_with_the_generated_users() {
        let l = PortLayout::fixed(9876, 30000, 3, 3).expect("layout");
        let auth = ClusterAuth::generate().expect("auth");
        let secret = ClusterSecret::generate();
        let secrets = Secrets {
            cluster: Some(&secret),
            auth: Some(&auth),
        };
        let spec = up_args(&["--auth"]).spec;
        assert_eq!(spec.given(), ["--auth"]);
        let text = broker_toml(2, "broker-a", &spec, &l, Path::new("/d"), secrets).expect("toml");
        let b = check_broker_config(&text).expect("valid");
        assert!(b.authentication_enabled && b.authorization_enabled);
        assert_eq!(b.init_authentication_user.as_ref(), Some(&auth.admin));
        assert_eq!(
            b.inner_client_authentication_credentials.as_ref(),
            Some(&auth.inner)
        );
        assert_eq!(
            b.cluster_secret.as_ref().map(|s| s.expose()),
            Some(secret.expose())
        );
        // The broker's own calls (registration, controller heartbeats) sign as the inner user.
        assert_eq!(
            b.internal_client_config().credentials,
            Some(auth.inner.clone())
        );

        let text = namesrv_toml(l.namesrv, secrets).expect("toml");
        let n: NamesrvConfig = toml::from_str(&text).expect("parses");
        n.validate().expect("valid");
        assert!(n.authentication_enabled && n.authorization_enabled);
        assert_eq!(n.init_authentication_user.as_ref(), Some(&auth.admin));
        assert_eq!(
            n.inner_client_authentication_credentials.as_ref(),
            Some(&auth.inner)
        );

        // Without --auth: off, as in RocketMQ.
        let plain = Secrets {
            cluster: Some(&secret),
            auth: None,
        };
        let b = check_broker_config(
            &broker_toml(2, "broker-a", &spec, &l, Path::new("/d"), plain).expect("toml"),
        )
        .expect("valid");
        assert!(!b.authentication_enabled && b.init_authentication_user.is_none());
        let n: NamesrvConfig =
            toml::from_str(&namesrv_toml(l.namesrv, plain).expect("toml")).expect("parses");
        assert!(!n.authentication_enabled && n.inner_client_authentication_credentials.is_none());
    }

    #[test]
    fn extra_config_may_use_rocketmq_names() {
        let l = PortLayout::fixed(9876, 30000, 3, 3).expect("layout");
        let extra = ["scanNotActiveBrokerInterval = 700".to_string()];
        let text = controller_toml(1, &l, Path::new("/d"), None, &extra).expect("toml");
        let c: ControllerConfig = toml::from_str(&text).expect("parses");
        assert_eq!(c.scan_interval_ms, 700);
        assert_eq!(c.raft.data_dir, PathBuf::from("/d"));
        let args = up_args(&[
            "--extra-broker-config",
            "slaveTimeout = 4000",
            "--extra-broker-config",
            "store.flushIntervalCommitLog = 100",
        ]);
        let text = broker_toml(
            1,
            "broker-a",
            &args.spec,
            &l,
            Path::new("/d"),
            Secrets::default(),
        )
        .expect("toml");
        let b: BrokerConfig = toml::from_str(&text).expect("parses");
        assert_eq!(b.slave_timeout_ms, 4000);
        assert_eq!(b.store.flush_interval_ms, 100);
        assert!(!text.contains("slaveTimeout"), "{text}");
        assert!(b.enable_controller_mode);

        // A nested table whose defaults are not its parent's is kept whole.
        let raft = ControllerConfig::default().raft.with_node_id(2);
        let config = ControllerConfig::default().with_raft(raft);
        let table = non_default_table(&config).expect("table");
        assert_eq!(
            toml::Value::Table(table)
                .try_into::<ControllerConfig>()
                .ok(),
            Some(config)
        );
    }

    #[test]
    fn broker_config_joins_the_controllers() {
        let args = up_args(&[
            "--flush",
            "sync",
            "--segment-size",
            "1048576",
            "--min-in-sync-replicas",
            "2",
            "--extra-broker-config",
            "slave_timeout_ms = 4000",
            "--extra-broker-config",
            "store.flush_interval_ms = 100",
        ]);
        let l = PortLayout::fixed(9876, 30000, 3, 3).expect("layout");
        let text = broker_toml(
            3,
            "broker-a",
            &args.spec,
            &l,
            Path::new("/d/broker-3/store"),
            Secrets::default(),
        )
        .expect("toml");
        let b: BrokerConfig = toml::from_str(&text).expect("parses");
        assert_eq!(b.broker_name, "broker-a");
        assert_eq!(b.cluster_name, "DefaultCluster");
        assert_eq!(b.listen.to_string(), "127.0.0.1:30024");
        assert_eq!(b.ha_port, 30025);
        assert_eq!(b.namesrv_addr, "127.0.0.1:9876");
        assert!(b.enable_controller_mode);
        assert_eq!(
            b.controller_addr,
            "127.0.0.1:30000;127.0.0.1:30002;127.0.0.1:30004"
        );
        assert_eq!(b.min_in_sync_replicas, 2);
        assert_eq!(b.slave_timeout_ms, 4000);
        assert_eq!(b.store.store_root, PathBuf::from("/d/broker-3/store"));
        assert_eq!(
            b.store.flush_disk_type,
            rocketraft_broker::store::FlushDiskType::SyncFlush
        );
        assert_eq!(b.store.commitlog_segment_size, 1 << 20);
        assert_eq!(b.store.flush_interval_ms, 100);

        let bad = up_args(&["--extra-broker-config", "no_such_key = 1"]);
        assert!(broker_toml(
            1,
            "broker-a",
            &bad.spec,
            &l,
            Path::new("/d"),
            Secrets::default()
        )
        .is_err());
        let bad = up_args(&["--min-in-sync-replicas", "4"]);
        assert!(broker_toml(
            1,
            "broker-a",
            &bad.spec,
            &l,
            Path::new("/d"),
            Secrets::default()
        )
        .is_err());
        let small = up_args(&[]);
        let text = broker_toml(
            1,
            "broker-a",
            &small.spec,
            &l,
            Path::new("/d"),
            Secrets::default(),
        )
        .expect("toml");
        let b: BrokerConfig = toml::from_str(&text).expect("parses");
        assert_eq!(b.store.commitlog_segment_size, SMALL_SEGMENT_SIZE);
        let bad = up_args(&["--segment-size", "1000"]);
        assert!(broker_toml(
            1,
            "broker-a",
            &bad.spec,
            &l,
            Path::new("/d"),
            Secrets::default()
        )
        .is_err());
        assert_eq!(
            up_args(&[]).spec.flush(),
            rocketraft_broker::store::FlushDiskType::AsyncFlush
        );
        assert!(up_args(&[]).spec.given().is_empty());
        assert_eq!(
            up_args(&["--replicas", "2", "--extra-controller-config", "a = 1"])
                .spec
                .given(),
            ["--replicas", "--extra-controller-config"]
        );
    }
}
