//! The [`RemotingCommand`]: one request or response of the Remoting protocol.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
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
    pub ext_fields: ExtFields,
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
            ext_fields: ExtFields::new(),
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
    pub fn with_ext(mut self, key: impl Into<ExtStr>, value: impl fmt::Display) -> Self {
        self.set_ext(key, value);
        self
    }

    /// Adds (or replaces) an `extFields` entry in place.
    /// Short values (numbers, most names) are kept inline, without an allocation.
    pub fn set_ext(&mut self, key: impl Into<ExtStr>, value: impl fmt::Display) {
        self.ext_fields.insert(key, ExtStr::display(&value));
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
        self.ext_fields.get(key)
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

/// A string of a command's header: a name known at compile time, a slice of the frame it was
/// read from (no copy), a short string kept inline, or an owned string. Compares, orders and
/// hashes as its text. A slice keeps the bytes it was read from alive (the decoder gives it a
/// copy of the frame's header, not the connection's read buffer).
#[derive(Clone)]
pub struct ExtStr(Repr);

/// The longest string kept inline (an `ExtStr` is as large as its `Bytes` variant anyway).
const INLINE: usize = 22;

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    /// Valid UTF-8 (only [`ExtStr::shared`] makes one, from a `&str`).
    Shared(Bytes),
    /// The first `len` bytes are valid UTF-8 (only [`Inline::write_str`] fills them, whole
    /// `&str`s at a time).
    Inline(Inline),
    Owned(String),
}

#[derive(Clone, Copy)]
struct Inline {
    len: u8,
    buf: [u8; INLINE],
}

impl fmt::Write for Inline {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let at = usize::from(self.len);
        let end = at + s.len();
        if end > INLINE {
            return Err(fmt::Error);
        }
        self.buf[at..end].copy_from_slice(s.as_bytes());
        self.len = end as u8; // end <= INLINE
        Ok(())
    }
}

/// What [`ExtStr::display`] formats into: only `Inline` and `Owned`.
impl fmt::Write for Repr {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        match self {
            Repr::Inline(inline) => {
                if inline.write_str(s).is_err() {
                    let written = &inline.buf[..usize::from(inline.len)];
                    let mut owned = String::with_capacity((written.len() + s.len()) * 2);
                    // SAFETY: as in `ExtStr::as_str`, the first `len` bytes of an `Inline` are
                    // valid UTF-8.
                    owned.push_str(unsafe { std::str::from_utf8_unchecked(written) });
                    owned.push_str(s);
                    *self = Repr::Owned(owned);
                }
                Ok(())
            }
            Repr::Owned(owned) => {
                owned.push_str(s);
                Ok(())
            }
            Repr::Static(_) | Repr::Shared(_) => Err(fmt::Error),
        }
    }
}

impl ExtStr {
    /// `value`'s text: inline when short, else an owned string.
    /// Formats `value` once: into the inline buffer, moved to a `String` (with what was
    /// written so far) at the first piece that does not fit.
    pub fn display(value: &(impl fmt::Display + ?Sized)) -> Self {
        let mut text = Repr::Inline(Inline {
            len: 0,
            buf: [0; INLINE],
        });
        // Only `value`'s own `Display` can fail (writing never does): what it wrote is kept,
        // as far as it got.
        let _ = fmt::Write::write_fmt(&mut text, format_args!("{value}"));
        ExtStr(text)
    }

    /// A copy of `text`: inline when short.
    pub fn copied(text: &str) -> Self {
        if text.len() <= INLINE {
            Self::display(text)
        } else {
            ExtStr(Repr::Owned(text.to_owned()))
        }
    }

    /// The bytes of `text`, which lies inside `frame`, as a slice of `frame` (no copy); a copy
    /// when it does not lie inside it.
    pub fn shared(frame: &Bytes, text: &str) -> Self {
        let start = frame.as_ptr() as usize;
        let at = text.as_ptr() as usize;
        if at >= start && at + text.len() <= start + frame.len() {
            let offset = at - start;
            ExtStr(Repr::Shared(frame.slice(offset..offset + text.len())))
        } else {
            Self::copied(text)
        }
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            // SAFETY: `Shared` is only made by `ExtStr::shared`, from the bytes of a `&str`
            // (valid UTF-8), and `Bytes` never changes its bytes.
            Repr::Shared(b) => unsafe { std::str::from_utf8_unchecked(b) },
            // SAFETY: `Inline::write_str` copies whole `&str`s only, so its first `len` bytes
            // are valid UTF-8; nothing else writes them.
            Repr::Inline(i) => unsafe {
                std::str::from_utf8_unchecked(&i.buf[..usize::from(i.len)])
            },
            Repr::Owned(s) => s,
        }
    }
}

impl Deref for ExtStr {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for ExtStr {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for ExtStr {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for ExtStr {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ExtStr {}

impl PartialEq<str> for ExtStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ExtStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialOrd for ExtStr {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ExtStr {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for ExtStr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl fmt::Debug for ExtStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ExtStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&'static str> for ExtStr {
    fn from(s: &'static str) -> Self {
        ExtStr(Repr::Static(s))
    }
}

impl From<String> for ExtStr {
    fn from(s: String) -> Self {
        ExtStr(Repr::Owned(s))
    }
}

impl From<&String> for ExtStr {
    fn from(s: &String) -> Self {
        Self::copied(s)
    }
}

impl From<ExtStr> for String {
    fn from(s: ExtStr) -> Self {
        match s.0 {
            Repr::Owned(s) => s,
            other => ExtStr(other).as_str().to_owned(),
        }
    }
}

/// Above this many entries, collecting with duplicates removed goes through a hash set
/// instead of a scan per entry (a header of many thousand fields stays linear).
const SCAN_LIMIT: usize = 32;

/// A command's `extFields`: a map from names to strings, kept as a vector of entries (a
/// request has about a dozen; a lookup scans them, cheaper than hashing at this size, and the
/// decoder adds them without a hash table, its keys and values slices of the frame). Keys are
/// unique; iteration order is unspecified (the encoders sort). Equality ignores the order.
#[derive(Clone, Default)]
pub struct ExtFields {
    entries: Vec<(ExtStr, ExtStr)>,
}

impl ExtFields {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: Vec::with_capacity(capacity),
        }
    }

    /// The entries in order, the last of each key winning and `None` removing what an earlier
    /// same key set (a JSON null); linear for any size.
    pub fn from_last_wins(items: Vec<(ExtStr, Option<ExtStr>)>) -> Self {
        let mut fields = LastWins::with_capacity(items.len());
        for (key, value) in items {
            fields.push(key, value);
        }
        fields.finish()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn reserve(&mut self, additional: usize) {
        self.entries.reserve(additional);
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.entries.iter().position(|(k, _)| k.as_str() == key)
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// Sets `key` to `value`, returning the value it replaced.
    pub fn insert(&mut self, key: impl Into<ExtStr>, value: impl Into<ExtStr>) -> Option<ExtStr> {
        let key = key.into();
        let value = value.into();
        match self.position(&key) {
            Some(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            None => {
                self.entries.push((key, value));
                None
            }
        }
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<ExtStr> {
        self.position(key).map(|i| self.entries.swap_remove(i).1)
    }

    /// Keeps the entries `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        self.entries.retain(|(k, v)| keep(k, v));
    }

    /// The entries, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    pub fn values(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries.iter().map(|(_, v)| v.as_str())
    }

    /// The entries as a `HashMap` of owned strings.
    pub fn to_hash_map(&self) -> HashMap<String, String> {
        self.iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

/// Builds [`ExtFields`] from entries in order, the last of each key winning and `None` removing
/// what an earlier same key set (a JSON null): up to [`SCAN_LIMIT`] entries straight into the
/// fields (a scan per entry), past that collected and resolved through a hash set at the end,
/// so it stays linear for any size.
pub struct LastWins {
    fields: ExtFields,
    spilled: Vec<(ExtStr, Option<ExtStr>)>,
}

impl LastWins {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            fields: ExtFields::with_capacity(capacity.min(SCAN_LIMIT)),
            spilled: Vec::new(),
        }
    }

    pub fn push(&mut self, key: ExtStr, value: Option<ExtStr>) {
        if self.spilled.is_empty() && self.fields.len() < SCAN_LIMIT {
            match value {
                Some(value) => {
                    self.fields.insert(key, value);
                }
                None => {
                    self.fields.remove(&key);
                }
            }
            return;
        }
        if self.spilled.is_empty() {
            self.spilled = std::mem::take(&mut self.fields.entries)
                .into_iter()
                .map(|(k, v)| (k, Some(v)))
                .collect();
        }
        self.spilled.push((key, value));
    }

    pub fn finish(self) -> ExtFields {
        if self.spilled.is_empty() {
            return self.fields;
        }
        let mut seen: HashSet<ExtStr> = HashSet::with_capacity(self.spilled.len());
        let mut entries = Vec::with_capacity(self.spilled.len());
        for (key, value) in self.spilled.into_iter().rev() {
            if seen.insert(key.clone()) {
                if let Some(value) = value {
                    entries.push((key, value));
                }
            }
        }
        entries.reverse();
        ExtFields { entries }
    }
}

impl PartialEq for ExtFields {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl Eq for ExtFields {}

impl fmt::Debug for ExtFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut entries: Vec<(&str, &str)> = self.iter().collect();
        entries.sort_unstable();
        f.debug_map().entries(entries).finish()
    }
}

impl<K: Into<ExtStr>, V: Into<ExtStr>> Extend<(K, V)> for ExtFields {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        let mut items: Vec<(ExtStr, Option<ExtStr>)> = std::mem::take(&mut self.entries)
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
        items.extend(iter.into_iter().map(|(k, v)| (k.into(), Some(v.into()))));
        *self = Self::from_last_wins(items);
    }
}

impl<K: Into<ExtStr>, V: Into<ExtStr>> FromIterator<(K, V)> for ExtFields {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut fields = Self::new();
        fields.extend(iter);
        fields
    }
}

impl From<HashMap<String, String>> for ExtFields {
    fn from(map: HashMap<String, String>) -> Self {
        Self {
            entries: map
                .into_iter()
                .map(|(k, v)| (ExtStr::from(k), ExtStr::from(v)))
                .collect(),
        }
    }
}

impl<K: Into<ExtStr>, V: Into<ExtStr>, const N: usize> From<[(K, V); N]> for ExtFields {
    fn from(entries: [(K, V); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl IntoIterator for ExtFields {
    type Item = (ExtStr, ExtStr);
    type IntoIter = std::vec::IntoIter<(ExtStr, ExtStr)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<'a> IntoIterator for &'a ExtFields {
    type Item = (&'a str, &'a str);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (ExtStr, ExtStr)>,
        fn(&'a (ExtStr, ExtStr)) -> (&'a str, &'a str),
    >;

    fn into_iter(self) -> Self::IntoIter {
        fn pair(entry: &(ExtStr, ExtStr)) -> (&str, &str) {
            (entry.0.as_str(), entry.1.as_str())
        }
        self.entries.iter().map(pair)
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

    /// Builds the same map as a `HashMap` fed the same entries (`None` removes).
    fn last_wins_model(items: &[(String, Option<String>)]) -> HashMap<String, String> {
        let mut model = HashMap::new();
        for (k, v) in items {
            match v {
                Some(v) => model.insert(k.clone(), v.clone()),
                None => model.remove(k),
            };
        }
        model
    }

    #[test]
    fn ext_fields_last_one_wins_small_and_large() {
        // Few keys, many repeats (the scan), and many distinct keys (past SCAN_LIMIT: the set).
        for (keys, n) in [(3usize, 10usize), (5, 40), (200, 1000), (40, 41)] {
            let items: Vec<(String, Option<String>)> = (0..n)
                .map(|i| {
                    let key = format!("k{}", (i * 7) % keys);
                    let value = (i % 5 != 3).then(|| format!("v{i}"));
                    (key, value)
                })
                .collect();
            let fields = ExtFields::from_last_wins(
                items
                    .iter()
                    .map(|(k, v)| (ExtStr::from(k), v.as_ref().map(ExtStr::from)))
                    .collect(),
            );
            let model = last_wins_model(&items);
            assert_eq!(fields.to_hash_map(), model, "{keys} keys, {n} entries");
            assert_eq!(fields.len(), model.len());
            assert_eq!(fields, ExtFields::from(model));
        }
    }

    #[test]
    fn ext_fields_map_operations() {
        let mut fields = ExtFields::from([("a", "1"), ("b", "2")]);
        assert_eq!(fields.insert("a", "3").as_deref(), Some("1"));
        assert_eq!(fields.get("a"), Some("3"));
        assert!(fields.contains_key("b"));
        assert_eq!(fields.remove("b").as_deref(), Some("2"));
        assert_eq!(fields.remove("b"), None);
        fields.extend([("c", "4"), ("a", "5")]);
        assert_eq!(fields.len(), 2);
        assert_eq!(fields.get("a"), Some("5"));
        // Equality ignores the order; Debug is sorted.
        assert_eq!(fields, ExtFields::from([("c", "4"), ("a", "5")]));
        assert_ne!(fields, ExtFields::from([("c", "4"), ("a", "6")]));
        assert_eq!(format!("{fields:?}"), r#"{"a": "5", "c": "4"}"#);
    }

    #[test]
    fn shared_ext_str_is_a_slice_of_the_frame_or_a_copy() {
        let frame = Bytes::from_static(b"{\"k\":\"value\"}");
        let inside = std::str::from_utf8(&frame[6..11]).unwrap();
        let s = ExtStr::shared(&frame, inside);
        assert_eq!(s, "value");
        assert!(matches!(s.0, Repr::Shared(_)));
        let elsewhere = String::from("value");
        let copied = ExtStr::shared(&frame, &elsewhere);
        assert_eq!(copied, "value");
        assert!(matches!(copied.0, Repr::Inline(_)));
        assert_eq!(String::from(s), "value");
        let long = "x".repeat(INLINE + 1);
        let copied = ExtStr::shared(&frame, &long);
        assert_eq!(copied, long.as_str());
        assert!(matches!(copied.0, Repr::Owned(_)));
    }

    #[test]
    fn short_values_are_inline() {
        for (value, inline) in [
            (ExtStr::display(&i64::MIN), true),
            (ExtStr::display("é中😀abcdefghijklm"), true),
            (ExtStr::display("é中😀abcdefghijklmn"), false),
            (ExtStr::copied(""), true),
            (ExtStr::copied(&"y".repeat(INLINE)), true),
        ] {
            assert_eq!(matches!(value.0, Repr::Inline(_)), inline, "{value}");
        }
        assert_eq!(ExtStr::display(&i64::MIN), "-9223372036854775808");
        assert_eq!(
            ExtStr::display("é中😀abcdefghijklmn"),
            "é中😀abcdefghijklmn"
        );
        let cmd = RemotingCommand::request(10).with_ext("queueOffset", 12345678901234i64);
        assert_eq!(cmd.ext("queueOffset"), Some("12345678901234"));
    }

    /// A value longer than the inline buffer is formatted once, its pieces kept in order
    /// across the move from the buffer to a `String`.
    #[test]
    fn long_values_are_formatted_once() {
        struct Pieces<'a>(&'a std::cell::Cell<u32>);
        impl fmt::Display for Pieces<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.set(self.0.get() + 1);
                for piece in ["0123456789", "abcdefghij", "ABCDEFGHIJ", "xyz"] {
                    f.write_str(piece)?;
                }
                Ok(())
            }
        }
        let calls = std::cell::Cell::new(0);
        let value = ExtStr::display(&Pieces(&calls));
        assert_eq!(value, "0123456789abcdefghijABCDEFGHIJxyz");
        assert!(matches!(value.0, Repr::Owned(_)));
        assert_eq!(calls.get(), 1);
        let value = ExtStr::display(&format_args!("{}-{}", "a".repeat(20), 1234));
        assert_eq!(value.as_str(), format!("{}-1234", "a".repeat(20)));
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
