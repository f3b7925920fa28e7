//! RocketMQ's `namesrv.conf` (Java properties) read into a [`NamesrvConfig`]: the keys we
//! share by name or alias (`enableControllerInNamesrv`, the ACL keys,
//! `serverChannelMaxIdleTimeSeconds`, ...) through [`rocketraft_common::properties::load`], and
//! `listenPort` / `bindAddress`, a port and an IP that make our `listen`. Keys nothing takes
//! (the DLedger controller keys, ...) are returned and logged as one warning.

use std::net::IpAddr;

use rocketraft_common::properties::{self, Loaded, Properties, PropertyError};

use crate::config::NamesrvConfig;

/// The nested tables whose keys RocketMQ writes flat (NettyServerConfig's).
pub const FLAT_TABLES: &[&str] = &["server_limits"];

impl NamesrvConfig {
    /// Reads a RocketMQ `namesrv.conf`. The result is not validated: call
    /// [`NamesrvConfig::validate`].
    pub fn from_properties(text: &str) -> Result<Loaded<NamesrvConfig>, PropertyError> {
        let mut props = Properties::parse(text)?;
        let listen_port = props.remove("listenPort");
        let bind_address = props.remove("bindAddress");
        let mut loaded = properties::load::<NamesrvConfig>(&props, FLAT_TABLES)?;
        if let Some(entry) = &bind_address {
            if !entry.value.trim().is_empty() {
                let ip: IpAddr = entry.value.trim().parse().map_err(|_| {
                    PropertyError::at(
                        entry,
                        format!("expected an IP address, found {:?}", entry.value),
                    )
                })?;
                loaded.config.listen.set_ip(ip);
            }
        }
        if let Some(entry) = &listen_port {
            loaded.config.listen.set_port(properties::value(entry)?);
        }
        if loaded.config.enable_controller_in_namesrv {
            let entry = props
                .get("enableControllerInNamesrv")
                .or_else(|| props.get("enable_controller_in_namesrv"));
            let message = "the embedded controller's Raft member (node id, peers, data \
                           directory) is not expressible in a properties file (RocketMQ's \
                           controllerDLeger* keys are DLedger's): write this NameServer's config \
                           in TOML with a [controller.raft] table (docs/configuration.md, The \
                           controller inside the NameServer), or run `rocketraft controller`";
            return Err(match entry {
                Some(entry) => PropertyError::at(entry, message),
                None => PropertyError {
                    key: Some("enableControllerInNamesrv".into()),
                    line: None,
                    message: message.into(),
                },
            });
        }
        if !loaded.unused_keys.is_empty() {
            tracing::warn!(
                keys = %loaded.unused_keys.join(", "),
                "NameServer config: RocketMQ settings Rocketraft does not use, ignored"
            );
        }
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rocketmq_namesrv_conf() {
        // controller/cluster-3n-namesrv-plugin/namesrv-n0.conf, less its licence header, first
        // without the embedded controller, which a properties file cannot configure here.
        let loaded = NamesrvConfig::from_properties(
            "listenPort = 9876\nenableControllerInNamesrv = false\n\n\
             controllerDLegerGroup = group1\n\
             controllerDLegerPeers = n0-127.0.0.1:9878;n1-127.0.0.1:9868;n2-127.0.0.1:9858\n\
             controllerDLegerSelfId = n0\nbindAddress = 127.0.0.1\n\
             serverChannelMaxIdleTimeSeconds = 30\n",
        )
        .expect("reads");
        let c = &loaded.config;
        assert_eq!(c.listen, "127.0.0.1:9876".parse().expect("addr"));
        assert!(!c.enable_controller_in_namesrv);
        assert_eq!(c.server_limits.idle_seconds, 30);
        assert_eq!(
            loaded.unused_keys,
            vec![
                "controllerDLegerGroup",
                "controllerDLegerPeers",
                "controllerDLegerSelfId"
            ]
        );
        let err =
            NamesrvConfig::from_properties("listenPort = 9876\nenableControllerInNamesrv = true\n")
                .expect_err("no Raft member");
        assert!(
            err.to_string()
                .starts_with("line 2: enableControllerInNamesrv: the embedded controller"),
            "{err}"
        );
        assert!(err.to_string().contains("[controller.raft]"), "{err}");
        let err = NamesrvConfig::from_properties("listenPort = nine\n").expect_err("bad port");
        assert_eq!(
            err.to_string(),
            "line 1: listenPort: expected an integer from 0 to 65535, found \"nine\""
        );
    }
}
