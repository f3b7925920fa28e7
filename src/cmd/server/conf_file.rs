//! Which format a `--config` file is in, and reading the broker's and the NameServer's in
//! either.
//!
//! TOML is the native format. RocketMQ's properties format (`broker.conf`, `namesrv.conf`) is
//! read too: a file named `*.conf` or `*.properties` is properties, `*.toml` is TOML, and a file
//! with any other name is TOML if it parses as a TOML document, properties otherwise (a
//! RocketMQ file with unquoted names such as `brokerName = broker-a` is not TOML).

use std::path::Path;

use anyhow::Context;
use rocketraft_broker::BrokerConfig;
use rocketraft_nameserver::NamesrvConfig;
use serde::de::DeserializeOwned;

/// The format of a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Properties,
}

/// The format of the file at `path` holding `text` (see the module documentation).
pub fn format_of(path: &Path, text: &str) -> Format {
    match path.extension().and_then(|e| e.to_str()) {
        Some(ext) if ext.eq_ignore_ascii_case("toml") => Format::Toml,
        Some(ext) if ext.eq_ignore_ascii_case("conf") || ext.eq_ignore_ascii_case("properties") => {
            Format::Properties
        }
        _ if text.parse::<toml::Table>().is_ok() => Format::Toml,
        _ => Format::Properties,
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))
}

fn from_toml<T: DeserializeOwned>(path: &Path, text: &str) -> anyhow::Result<T> {
    toml::from_str(text).with_context(|| {
        format!(
            "{} is not a valid config: fix the key or value named above (see README.md, Configuration)",
            path.display()
        )
    })
}

/// The error for a properties file: the key, its line and the fix are in `e`.
fn properties_error(path: &Path, e: rocketraft_common::properties::PropertyError) -> anyhow::Error {
    anyhow::anyhow!(
        "{}, {e} (read as a RocketMQ properties file; see docs/configuration.md, RocketMQ's broker.conf)",
        path.display()
    )
}

/// A broker config from `path` (TOML or RocketMQ's `broker.conf`), or the defaults.
pub fn load_broker(path: Option<&Path>) -> anyhow::Result<BrokerConfig> {
    let Some(path) = path else {
        return Ok(BrokerConfig::default());
    };
    let text = read(path)?;
    match format_of(path, &text) {
        Format::Toml => from_toml(path, &text),
        Format::Properties => BrokerConfig::from_properties(&text)
            .map(|read| read.config)
            .map_err(|e| properties_error(path, e)),
    }
}

/// A NameServer config from `path` (TOML or RocketMQ's `namesrv.conf`), or the defaults.
pub fn load_namesrv(path: Option<&Path>) -> anyhow::Result<NamesrvConfig> {
    let Some(path) = path else {
        return Ok(NamesrvConfig::default());
    };
    let text = read(path)?;
    match format_of(path, &text) {
        Format::Toml => from_toml(path, &text),
        Format::Properties => NamesrvConfig::from_properties(&text)
            .map(|read| read.config)
            .map_err(|e| properties_error(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_follows_the_extension_then_the_content() {
        let toml_text = "broker_name = \"b\"\n[store]\nstore_root = \"/d\"\n";
        let conf_text = "brokerName = broker-a\nbrokerId = 0\n";
        assert_eq!(
            format_of(Path::new("a/broker.conf"), toml_text),
            Format::Properties
        );
        assert_eq!(
            format_of(Path::new("b.PROPERTIES"), toml_text),
            Format::Properties
        );
        assert_eq!(format_of(Path::new("broker.toml"), conf_text), Format::Toml);
        assert_eq!(format_of(Path::new("broker.cfg"), toml_text), Format::Toml);
        assert_eq!(
            format_of(Path::new("broker"), conf_text),
            Format::Properties
        );
        assert_eq!(
            format_of(Path::new("broker.ini"), "deleteWhen = 04\n"),
            Format::Properties
        );
    }

    #[test]
    fn a_bad_properties_value_names_the_file_the_line_and_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("broker.conf");
        std::fs::write(&path, "brokerName = b\nbrokerId = zero\n").expect("write");
        let err = load_broker(Some(&path)).expect_err("bad id");
        let text = format!("{err:#}");
        assert!(
            text.contains("broker.conf, line 2: brokerId: expected an integer"),
            "{text}"
        );
        std::fs::write(&path, "brokerName = b\nlistenPort = 30911\nnoSuchKey = 1\n")
            .expect("write");
        let config = load_broker(Some(&path)).expect("reads");
        assert_eq!(config.listen.port(), 30911);
        let ns = dir.path().join("namesrv.conf");
        std::fs::write(&ns, "listenPort = 19876\n").expect("write");
        assert_eq!(load_namesrv(Some(&ns)).expect("reads").listen.port(), 19876);
    }
}
