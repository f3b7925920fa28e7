//! The TOML config of each controller and broker of a new cluster, checked by parsing it back.

use std::path::Path;

use anyhow::{bail, Context};
use rocketraft_broker::BrokerConfig;
use rocketraft_controller::ControllerConfig;

use super::layout::{loopback, PortLayout};
use super::ClusterSpec;

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

fn members_table(members: impl Iterator<Item = (usize, String)>) -> toml::Table {
    members
        .map(|(id, addr)| (id.to_string(), toml::Value::String(addr)))
        .collect()
}

/// The controller TOML of node `id` (1-based), checked by parsing it back.
pub fn controller_toml(
    id: usize,
    layout: &PortLayout,
    data_dir: &Path,
    extra: &[String],
) -> anyhow::Result<String> {
    let (remoting, raft) = layout
        .controllers
        .get(id.wrapping_sub(1))
        .copied()
        .with_context(|| format!("no controller {id} in the layout"))?;
    let mut raft_table = toml::Table::new();
    raft_table.insert("node_id".into(), toml::Value::Integer(id as i64));
    raft_table.insert("listen".into(), toml::Value::String(loopback(raft)));
    raft_table.insert(
        "data_dir".into(),
        toml::Value::String(path_string(data_dir)?),
    );
    raft_table.insert(
        "initial_members".into(),
        toml::Value::Table(members_table(
            layout
                .controllers
                .iter()
                .enumerate()
                .map(|(i, (_, raft))| (i + 1, loopback(*raft))),
        )),
    );
    let mut table = toml::Table::new();
    table.insert("listen".into(), toml::Value::String(loopback(remoting)));
    table.insert(
        "remoting_peers".into(),
        toml::Value::Table(members_table(
            layout
                .controllers
                .iter()
                .enumerate()
                .map(|(i, (remoting, _))| (i + 1, loopback(*remoting))),
        )),
    );
    table.insert("raft".into(), toml::Value::Table(raft_table));
    merge_extra(&mut table, extra, "--extra-controller-config")?;
    let text = toml::to_string(&table).context("cannot encode a controller config")?;
    let _: ControllerConfig = toml::from_str(&text).with_context(|| {
        format!("the controller config would be invalid (check --extra-controller-config):\n{text}")
    })?;
    Ok(text)
}

/// The broker TOML of replica `index` (1-based), checked by parsing and validating it back.
pub fn broker_toml(
    index: usize,
    spec: &ClusterSpec,
    layout: &PortLayout,
    store_root: &Path,
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
    let store = store_table(spec, store_root)?;
    let mut table = toml::Table::new();
    let mut put = |k: &str, v: toml::Value| {
        table.insert(k.to_string(), v);
    };
    put(
        "broker_name",
        toml::Value::String(spec.broker_name().to_string()),
    );
    put(
        "cluster_name",
        toml::Value::String(spec.cluster_name().to_string()),
    );
    put("listen", toml::Value::String(loopback(remoting)));
    put("ha_port", toml::Value::Integer(i64::from(ha)));
    put(
        "namesrv_addr",
        toml::Value::String(loopback(layout.namesrv)),
    );
    put("enable_controller_mode", toml::Value::Boolean(true));
    put("controller_addr", toml::Value::String(controller_addr));
    if let Some(n) = spec.min_in_sync_replicas {
        if n == 0 || n > layout.brokers.len() {
            bail!(
                "--min-in-sync-replicas {n}: use 1..={} (the replicas of the set)",
                layout.brokers.len()
            );
        }
        put("min_in_sync_replicas", toml::Value::Integer(n as i64));
    }
    put("store", toml::Value::Table(store));
    merge_extra(
        &mut table,
        &spec.extra_broker_config,
        "--extra-broker-config",
    )?;
    let text = toml::to_string(&table).context("cannot encode a broker config")?;
    check_broker_config(&text)?;
    Ok(text)
}

/// The `[store]` table of a broker: its root, flush type and segment size.
fn store_table(spec: &ClusterSpec, store_root: &Path) -> anyhow::Result<toml::Table> {
    let mut store = toml::Table::new();
    store.insert(
        "store_root".into(),
        toml::Value::String(path_string(store_root)?),
    );
    store.insert(
        "flush_disk_type".into(),
        toml::Value::String(spec.flush().to_string()),
    );
    if let Some(size) = spec.segment_size {
        let size = i64::try_from(size).context("--segment-size is too large")?;
        store.insert("commitlog_segment_size".into(), toml::Value::Integer(size));
    }
    Ok(store)
}

/// Parses a broker TOML back and validates it as the broker would at start.
fn check_broker_config(text: &str) -> anyhow::Result<()> {
    let config: BrokerConfig = toml::from_str(text).with_context(|| {
        format!("the broker config would be invalid (check --extra-broker-config):\n{text}")
    })?;
    config
        .validate()
        .map_err(anyhow::Error::msg)
        .context("the broker config would be invalid")?;
    config
        .store
        .validate()
        .map_err(|e| anyhow::anyhow!("the broker store config would be invalid: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::super::tests::up_args;

    #[test]
    fn controller_config_forms_a_quorum() {
        let l = PortLayout::fixed(9876, 30000, 3, 3).expect("layout");
        let text = controller_toml(
            2,
            &l,
            Path::new("/d/controller-2/data"),
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
        assert!(controller_toml(4, &l, Path::new("/d"), &[]).is_err());
        assert!(controller_toml(0, &l, Path::new("/d"), &[]).is_err());
        assert!(controller_toml(1, &l, Path::new("/d"), &["not toml".to_string()]).is_err());
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
        let text = broker_toml(3, &args.spec, &l, Path::new("/d/broker-3/store")).expect("toml");
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
        assert!(broker_toml(1, &bad.spec, &l, Path::new("/d")).is_err());
        let bad = up_args(&["--min-in-sync-replicas", "4"]);
        assert!(broker_toml(1, &bad.spec, &l, Path::new("/d")).is_err());
        let bad = up_args(&["--segment-size", "1000"]);
        assert!(broker_toml(1, &bad.spec, &l, Path::new("/d")).is_err());
        assert_eq!(up_args(&[]).spec.flush(), "ASYNC_FLUSH");
        assert!(up_args(&[]).spec.given().is_empty());
        assert_eq!(
            up_args(&["--replicas", "2", "--extra-controller-config", "a = 1"])
                .spec
                .given(),
            ["--replicas", "--extra-controller-config"]
        );
    }
}
