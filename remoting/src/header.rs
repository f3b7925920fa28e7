//! The two header encodings of a Remoting frame: JSON (type 0) and the binary ROCKETMQ
//! layout (type 1).
//!
//! Decoders return a [`RemotingCommand`] with an empty body; the codec attaches the body.

use std::collections::{BTreeMap, HashMap};

use bytes::{BufMut, Bytes};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::command::{LanguageCode, RemotingCommand, SerializeType};
use crate::error::CodecError;

// ---------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------

#[derive(Serialize)]
struct JsonHeaderOut<'a> {
    code: i32,
    language: &'static str,
    version: i32,
    opaque: i32,
    flag: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    remark: Option<&'a str>,
    #[serde(rename = "extFields", skip_serializing_if = "BTreeMap::is_empty")]
    ext_fields: BTreeMap<&'a str, &'a str>,
    #[serde(rename = "serializeTypeCurrentRPC")]
    serialize_type_current_rpc: &'static str,
}

/// Appends the JSON header of `cmd` to `dst`. `extFields` keys are written sorted so the
/// output is deterministic; an absent remark and empty `extFields` are omitted, like Java.
pub fn encode_json(cmd: &RemotingCommand, dst: &mut Vec<u8>) -> Result<(), CodecError> {
    let out = JsonHeaderOut {
        code: cmd.code,
        language: cmd.language.name(),
        version: cmd.version,
        opaque: cmd.opaque,
        flag: cmd.flag,
        remark: cmd.remark.as_deref(),
        ext_fields: cmd
            .ext_fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        serialize_type_current_rpc: SerializeType::Json.name(),
    };
    serde_json::to_writer(dst, &out).map_err(|e| CodecError::JsonHeader(e.to_string()))
}

/// Decodes a JSON header leniently: missing fields take their defaults, an unknown
/// language becomes OTHER, numbers and booleans in `extFields` become strings, and
/// `extFields` may be absent or null.
pub fn decode_json(bytes: &[u8]) -> Result<RemotingCommand, CodecError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| CodecError::JsonHeader(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(CodecError::JsonHeader(
            "the header is not a JSON object".into(),
        ));
    };
    let mut cmd = RemotingCommand {
        code: json_int(&obj, "code")?,
        language: json_language(obj.get("language")),
        version: json_int(&obj, "version")?,
        opaque: json_int(&obj, "opaque")?,
        flag: json_int(&obj, "flag")?,
        remark: None,
        ext_fields: json_ext_fields(obj.get("extFields"))?,
        body: Bytes::new(),
        serialize_type: SerializeType::Json,
    };
    cmd.remark = match obj.get("remark") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };
    Ok(cmd)
}

fn json_int(obj: &Map<String, Value>, field: &str) -> Result<i32, CodecError> {
    let bad = || CodecError::JsonHeader(format!("field `{field}` is not a 32-bit integer"));
    match obj.get(field) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|v| i32::try_from(v).ok())
            .ok_or_else(bad),
        Some(Value::String(s)) => s.trim().parse().map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

fn json_language(value: Option<&Value>) -> LanguageCode {
    match value {
        Some(Value::String(name)) => LanguageCode::from_name(name),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|v| u8::try_from(v).ok())
            .map_or(LanguageCode::Other, LanguageCode::from_code),
        _ => LanguageCode::Other,
    }
}

fn json_ext_fields(value: Option<&Value>) -> Result<HashMap<String, String>, CodecError> {
    let obj = match value {
        None | Some(Value::Null) => return Ok(HashMap::new()),
        Some(Value::Object(obj)) => obj,
        Some(_) => {
            return Err(CodecError::JsonHeader(
                "field `extFields` is not a JSON object".into(),
            ))
        }
    };
    let mut fields = HashMap::with_capacity(obj.len());
    for (key, value) in obj {
        let value = match value {
            Value::Null => continue,
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        fields.insert(key.clone(), value);
    }
    Ok(fields)
}

// ---------------------------------------------------------------------------------------
// Binary (ROCKETMQ)
// ---------------------------------------------------------------------------------------

/// Appends the binary header of `cmd` to `dst` (all integers big-endian):
///
/// ```text
/// code i16 | language u8 | version i16 | opaque i32 | flag i32
/// | remarkLen i32 | remark utf8            (len 0 = no remark)
/// | extLen i32 | { keyLen i16 | key | valLen i32 | val }*
/// ```
///
/// `code` and `version` must fit in an i16: Java silently truncates them, we refuse.
pub fn encode_binary(cmd: &RemotingCommand, dst: &mut Vec<u8>) -> Result<(), CodecError> {
    let code = narrow_i16("code", cmd.code)?;
    let version = narrow_i16("version", cmd.version)?;
    dst.put_i16(code);
    dst.put_u8(cmd.language.code());
    dst.put_i16(version);
    dst.put_i32(cmd.opaque);
    dst.put_i32(cmd.flag);

    let remark = cmd.remark.as_deref().unwrap_or("");
    dst.put_i32(len_i32("remark", remark.len())?);
    dst.put_slice(remark.as_bytes());

    let mut entries: Vec<(&String, &String)> = cmd.ext_fields.iter().collect();
    entries.sort_unstable();
    let mut ext_len = 0usize;
    for (key, value) in &entries {
        if i16::try_from(key.len()).is_err() {
            return Err(CodecError::FieldOutOfRange {
                field: "extFields key length",
                value: key.len() as i64,
            });
        }
        ext_len += 2 + key.len() + 4 + value.len();
    }
    dst.put_i32(len_i32("extFields length", ext_len)?);
    for (key, value) in entries {
        dst.put_i16(key.len() as i16); // checked above
        dst.put_slice(key.as_bytes());
        dst.put_i32(len_i32("extFields value length", value.len())?);
        dst.put_slice(value.as_bytes());
    }
    Ok(())
}

fn narrow_i16(field: &'static str, value: i32) -> Result<i16, CodecError> {
    i16::try_from(value).map_err(|_| CodecError::FieldOutOfRange {
        field,
        value: i64::from(value),
    })
}

fn len_i32(field: &'static str, len: usize) -> Result<i32, CodecError> {
    i32::try_from(len).map_err(|_| CodecError::FieldOutOfRange {
        field,
        value: len as i64,
    })
}

/// Decodes a binary header. Every length is checked against the bytes that remain, so
/// garbage yields an error and never a large allocation. Strings are decoded as UTF-8
/// with invalid sequences replaced, as Java's `new String(bytes, UTF_8)` does. Bytes
/// after the `extFields` section are ignored.
pub fn decode_binary(bytes: &[u8]) -> Result<RemotingCommand, CodecError> {
    let mut r = Reader::new(bytes);
    let code = i32::from(r.i16("code")?);
    let language = LanguageCode::from_code(r.u8("language")?);
    let version = i32::from(r.i16("version")?);
    let opaque = r.i32("opaque")?;
    let flag = r.i32("flag")?;

    let remark_len = r.len_i32("remark length")?;
    let remark = match remark_len {
        0 => None,
        n => Some(lossy(r.take(n, "remark")?)),
    };

    let ext_len = r.len_i32("extFields length")?;
    let mut ext = Reader::new(r.take(ext_len, "extFields")?);
    let mut ext_fields = HashMap::new();
    while !ext.is_empty() {
        let key_len = ext.i16("extFields key length")?;
        let key_len = usize::try_from(key_len)
            .map_err(|_| bad_binary(format!("negative extFields key length {key_len}")))?;
        let key = lossy(ext.take(key_len, "extFields key")?);
        let value_len = ext.len_i32("extFields value length")?;
        let value = lossy(ext.take(value_len, "extFields value")?);
        ext_fields.insert(key, value);
    }

    Ok(RemotingCommand {
        code,
        language,
        version,
        opaque,
        flag,
        remark,
        ext_fields,
        body: Bytes::new(),
        serialize_type: SerializeType::RocketMq,
    })
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn bad_binary(msg: String) -> CodecError {
    CodecError::BinaryHeader(msg)
}

/// A bounds-checked big-endian cursor over a byte slice.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], CodecError> {
        if n > self.buf.len() {
            return Err(bad_binary(format!(
                "{what} needs {n} bytes but only {} remain",
                self.buf.len()
            )));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, CodecError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn i16(&mut self, what: &str) -> Result<i16, CodecError> {
        self.array(what).map(i16::from_be_bytes)
    }

    fn i32(&mut self, what: &str) -> Result<i32, CodecError> {
        self.array(what).map(i32::from_be_bytes)
    }

    /// An i32 length that must be non-negative and fit in what remains.
    fn len_i32(&mut self, what: &str) -> Result<usize, CodecError> {
        let len = self.i32(what)?;
        let len = usize::try_from(len).map_err(|_| bad_binary(format!("negative {what} {len}")))?;
        if len > self.buf.len() {
            return Err(bad_binary(format!(
                "{what} {len} exceeds the {} bytes that remain",
                self.buf.len()
            )));
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_decoding_is_lenient() {
        let cmd = decode_json(
            br#"{"code":"12","language":"KLINGON","extFields":{"a":1,"b":true,"c":null,"d":"x","e":[1]},"unknown":{}}"#,
        )
        .unwrap();
        assert_eq!(cmd.code, 12);
        assert_eq!(cmd.language, LanguageCode::Other);
        assert_eq!(cmd.version, 0);
        assert_eq!(cmd.ext("a"), Some("1"));
        assert_eq!(cmd.ext("b"), Some("true"));
        assert_eq!(cmd.ext("c"), None);
        assert_eq!(cmd.ext("d"), Some("x"));
        assert_eq!(cmd.ext("e"), Some("[1]"));
        assert!(decode_json(br#"{"extFields":null}"#)
            .unwrap()
            .ext_fields
            .is_empty());
        assert!(decode_json(br#"{"code":1.5}"#).is_err());
        assert!(decode_json(br#"{"code":4294967296}"#).is_err());
        assert!(decode_json(br#"[1,2]"#).is_err());
        assert!(decode_json(br#"{"extFields":[]}"#).is_err());
        assert!(decode_json(b"\xff").is_err());
    }

    #[test]
    fn binary_rejects_out_of_range_fields() {
        let pop = RemotingCommand::request(crate::codes::request_code::POP_MESSAGE);
        let err = encode_binary(&pop, &mut Vec::new()).unwrap_err();
        assert!(matches!(
            err,
            CodecError::FieldOutOfRange { field: "code", .. }
        ));
    }

    #[test]
    fn binary_rejects_truncated_and_inconsistent_headers() {
        let mut good = Vec::new();
        let cmd = RemotingCommand::request(10)
            .with_remark("r")
            .with_ext("k", "v");
        encode_binary(&cmd, &mut good).unwrap();
        for cut in 0..good.len() {
            assert!(decode_binary(&good[..cut]).is_err(), "cut at {cut}");
        }
        // remark length pointing far past the end
        let mut bad = good.clone();
        bad[13..17].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode_binary(&bad).is_err());
        // negative remark length
        bad[13..17].copy_from_slice(&(-1i32).to_be_bytes());
        assert!(decode_binary(&bad).is_err());
    }
}
