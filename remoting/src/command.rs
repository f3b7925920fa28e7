//! The [`RemotingCommand`]: one request or response of the Remoting protocol.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicI32, Ordering};

use bytes::Bytes;

use crate::error::HeaderError;

/// The protocol version we announce: the ordinal of `MQVersion.Version.V5_2_0` (453) in
/// Apache RocketMQ. Java peers use the version to pick wire details; everything at or
/// above `V4_9_4` (401), for instance, gets standard JSON (quoted numeric map keys) from
/// the NameServer.
pub const CURRENT_VERSION: i32 = 453;

/// Flag bit 0: the command is a response.
pub const RESPONSE_FLAG: i32 = 1;
/// Flag bit 1: the request expects no response.
pub const ONEWAY_FLAG: i32 = 1 << 1;

static NEXT_OPAQUE: AtomicI32 = AtomicI32::new(1);

/// A fresh request id, unique per process until it wraps around after 2^32 requests.
pub fn next_opaque() -> i32 {
    NEXT_OPAQUE.fetch_add(1, Ordering::Relaxed)
}

/// The implementation language of the sender (RocketMQ's `LanguageCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LanguageCode {
    Java,
    Cpp,
    Dotnet,
    Python,
    Delphi,
    Erlang,
    Ruby,
    #[default]
    Other,
    Http,
    Go,
    Php,
    Oms,
    Rust,
    NodeJs,
}

impl LanguageCode {
    /// Every language, in code order.
    pub const ALL: [LanguageCode; 14] = [
        Self::Java,
        Self::Cpp,
        Self::Dotnet,
        Self::Python,
        Self::Delphi,
        Self::Erlang,
        Self::Ruby,
        Self::Other,
        Self::Http,
        Self::Go,
        Self::Php,
        Self::Oms,
        Self::Rust,
        Self::NodeJs,
    ];

    /// The byte used in the binary header.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The language for a binary-header byte; unknown bytes map to [`LanguageCode::Other`].
    pub fn from_code(code: u8) -> Self {
        Self::ALL
            .get(usize::from(code))
            .copied()
            .unwrap_or(Self::Other)
    }

    /// The Java enum constant name, as used in JSON headers.
    pub fn name(self) -> &'static str {
        match self {
            Self::Java => "JAVA",
            Self::Cpp => "CPP",
            Self::Dotnet => "DOTNET",
            Self::Python => "PYTHON",
            Self::Delphi => "DELPHI",
            Self::Erlang => "ERLANG",
            Self::Ruby => "RUBY",
            Self::Other => "OTHER",
            Self::Http => "HTTP",
            Self::Go => "GO",
            Self::Php => "PHP",
            Self::Oms => "OMS",
            Self::Rust => "RUST",
            Self::NodeJs => "NODE_JS",
        }
    }

    /// The language for a JSON-header name; unknown names map to [`LanguageCode::Other`].
    pub fn from_name(name: &str) -> Self {
        Self::ALL
            .iter()
            .copied()
            .find(|l| l.name() == name)
            .unwrap_or(Self::Other)
    }
}

impl fmt::Display for LanguageCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the header of a frame is serialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SerializeType {
    /// A JSON object (type byte 0), what Java peers send by default.
    #[default]
    Json,
    /// RocketMQ's compact binary layout (type byte 1).
    RocketMq,
}

impl SerializeType {
    /// The byte stored in the top 8 bits of the frame's header-length word.
    pub fn code(self) -> u8 {
        match self {
            Self::Json => 0,
            Self::RocketMq => 1,
        }
    }

    /// The serialize type for a type byte, if it is a known one.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Json),
            1 => Some(Self::RocketMq),
            _ => None,
        }
    }

    /// The Java enum constant name (`JSON` / `ROCKETMQ`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "JSON",
            Self::RocketMq => "ROCKETMQ",
        }
    }
}

impl fmt::Display for SerializeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One Remoting request or response: a header (code, opaque, flags, `extFields`, ...)
/// and an opaque body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotingCommand {
    /// Request code for requests, response code for responses (see [`crate::codes`]).
    pub code: i32,
    pub language: LanguageCode,
    pub version: i32,
    /// Request id; a response carries the opaque of its request.
    pub opaque: i32,
    /// Bit 0: response, bit 1: oneway.
    pub flag: i32,
    pub remark: Option<String>,
    /// The custom header: request/response fields as strings.
    pub ext_fields: HashMap<String, String>,
    pub body: Bytes,
    /// How the header is (or will be) serialized on the wire.
    pub serialize_type: SerializeType,
}

impl RemotingCommand {
    fn new(code: i32, opaque: i32, flag: i32) -> Self {
        Self {
            code,
            language: LanguageCode::Rust,
            version: CURRENT_VERSION,
            opaque,
            flag,
            remark: None,
            ext_fields: HashMap::new(),
            body: Bytes::new(),
            serialize_type: SerializeType::Json,
        }
    }

    /// A new request with a fresh opaque, language RUST, [`CURRENT_VERSION`] and JSON header.
    pub fn request(code: i32) -> Self {
        Self::new(code, next_opaque(), 0)
    }

    /// A new response (opaque 0; the server sets it to the request's). Prefer
    /// [`RemotingCommand::response_to`] when the request is at hand.
    pub fn response(code: i32, remark: impl Into<Option<String>>) -> Self {
        let mut cmd = Self::new(code, 0, RESPONSE_FLAG);
        cmd.remark = remark.into();
        cmd
    }

    /// The response to this request: same opaque, same header encoding, response flag set.
    pub fn response_to(&self, code: i32, remark: impl Into<Option<String>>) -> Self {
        let mut cmd = Self::response(code, remark);
        cmd.opaque = self.opaque;
        cmd.serialize_type = self.serialize_type;
        cmd
    }

    pub fn is_response(&self) -> bool {
        self.flag & RESPONSE_FLAG != 0
    }

    pub fn is_oneway(&self) -> bool {
        self.flag & ONEWAY_FLAG != 0
    }

    pub fn mark_response(&mut self) {
        self.flag |= RESPONSE_FLAG;
    }

    pub fn mark_oneway(&mut self) {
        self.flag |= ONEWAY_FLAG;
    }

    /// Adds (or replaces) an `extFields` entry.
    pub fn with_ext(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.set_ext(key, value);
        self
    }

    /// Adds (or replaces) an `extFields` entry in place.
    pub fn set_ext(&mut self, key: impl Into<String>, value: impl ToString) {
        self.ext_fields.insert(key.into(), value.to_string());
    }

    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    pub fn with_remark(mut self, remark: impl Into<String>) -> Self {
        self.remark = Some(remark.into());
        self
    }

    pub fn with_serialize_type(mut self, serialize_type: SerializeType) -> Self {
        self.serialize_type = serialize_type;
        self
    }

    pub fn with_opaque(mut self, opaque: i32) -> Self {
        self.opaque = opaque;
        self
    }

    /// The `extFields` entry `key`, if present.
    pub fn ext(&self, key: &str) -> Option<&str> {
        self.ext_fields.get(key).map(String::as_str)
    }

    /// The `extFields` entry `key`, or [`HeaderError::Missing`].
    pub fn require_ext(&self, key: &str) -> Result<&str, HeaderError> {
        self.ext(key).ok_or_else(|| HeaderError::Missing {
            field: key.to_owned(),
        })
    }

    /// The `extFields` entry `key` parsed as `T`; missing and unparseable are distinct errors.
    pub fn ext_parse<T: FromStr>(&self, key: &str) -> Result<T, HeaderError> {
        self.ext_parse_opt(key)?
            .ok_or_else(|| HeaderError::Missing {
                field: key.to_owned(),
            })
    }

    /// The `extFields` entry `key` parsed as `T`, `None` when absent.
    pub fn ext_parse_opt<T: FromStr>(&self, key: &str) -> Result<Option<T>, HeaderError> {
        match self.ext(key) {
            None => Ok(None),
            Some(raw) => raw
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| HeaderError::Invalid {
                    field: key.to_owned(),
                    value: raw.to_owned(),
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_codes_round_trip() {
        for (i, lang) in LanguageCode::ALL.iter().enumerate() {
            assert_eq!(usize::from(lang.code()), i);
            assert_eq!(LanguageCode::from_code(lang.code()), *lang);
            assert_eq!(LanguageCode::from_name(lang.name()), *lang);
        }
        assert_eq!(LanguageCode::Rust.code(), 12);
        assert_eq!(LanguageCode::NodeJs.code(), 13);
        assert_eq!(LanguageCode::from_code(200), LanguageCode::Other);
        assert_eq!(LanguageCode::from_name("COBOL"), LanguageCode::Other);
    }

    #[test]
    fn flags_and_response_to() {
        let mut req = RemotingCommand::request(10).with_serialize_type(SerializeType::RocketMq);
        assert!(!req.is_response() && !req.is_oneway());
        req.mark_oneway();
        assert!(req.is_oneway());
        let resp = req.response_to(0, Some("ok".to_owned()));
        assert!(resp.is_response());
        assert!(!resp.is_oneway());
        assert_eq!(resp.opaque, req.opaque);
        assert_eq!(resp.serialize_type, SerializeType::RocketMq);
        assert_eq!(resp.remark.as_deref(), Some("ok"));
        assert_eq!(RemotingCommand::response(1, None).remark, None);
        assert_ne!(
            RemotingCommand::request(1).opaque,
            RemotingCommand::request(1).opaque
        );
    }

    #[test]
    fn ext_accessors() {
        let cmd = RemotingCommand::request(10)
            .with_ext("topic", "T")
            .with_ext("queueId", 3)
            .with_ext("bad", "x1");
        assert_eq!(cmd.ext("topic"), Some("T"));
        assert_eq!(cmd.require_ext("topic"), Ok("T"));
        assert_eq!(cmd.ext_parse::<i32>("queueId"), Ok(3));
        assert_eq!(cmd.ext_parse_opt::<i64>("nope"), Ok(None));
        let missing = cmd.ext_parse::<i32>("group").unwrap_err();
        assert_eq!(
            missing.to_string(),
            "the request header field `group` is missing"
        );
        let invalid = cmd.ext_parse::<i32>("bad").unwrap_err();
        assert_eq!(
            invalid,
            HeaderError::Invalid {
                field: "bad".into(),
                value: "x1".into()
            }
        );
        assert!(cmd.require_ext("group").is_err());
    }
}
