//! The message model and the CommitLog record codec.
//!
//! A RocketMQ record has one layout on disk and on the wire: the broker appends it to the
//! CommitLog and a PULL response body is a concatenation of such records, byte for byte
//! (`MessageDecoder` / `CommitLog.calMsgLength` in RocketMQ). Every integer is big-endian:
//!
//! ```text
//! off  field
//!   0  i32 TOTALSIZE
//!   4  i32 MAGICCODE            (V1 0xDAA320A7; V2 0xDAA320AB has an i16 topic length)
//!   8  i32 BODYCRC              (crc32(body) & 0x7FFFFFFF)
//!  12  i32 QUEUEID
//!  16  i32 FLAG
//!  20  i64 QUEUEOFFSET          (assigned by the store's writer)
//!  28  i64 PHYSICALOFFSET       (assigned by the store's writer)
//!  36  i32 SYSFLAG
//!  40  i64 BORNTIMESTAMP
//!  48      BORNHOST             (IPv4 4 + i32 port = 8 bytes; IPv6 16 + 4 = 20, sys flag BORNHOST_V6)
//!      i64 STORETIMESTAMP
//!          STOREHOST            (8 or 20, sys flag STOREHOST_V6)
//!      i32 RECONSUMETIMES
//!      i64 PREPARED_TX_OFFSET
//!      i32 bodyLen + body
//!      i8  topicLen + topic     (V1: signed byte, so at most 127 bytes)
//!      i16 propsLen + properties (`key \x01 value \x02` repeated)
//! ```
//!
//! **Whole-record CRC.** The body CRC says nothing about the header, the topic or the
//! properties, so a torn or bit-flipped record can pass it. The store therefore ends every record
//! it writes with the property `__CRC32#` whose value is exactly ten decimal digits: the CRC32 of
//! the record bytes from offset 0 up to (not including) those digits, computed after the writer
//! has set the offsets and the store timestamp. Clients just see one more property; recovery uses
//! [`verify_record_crc`]. Records without the trailer fall back to the body CRC; a trailer whose
//! shape is mostly right but not exactly (a flipped byte in it) counts as damaged, not absent, so
//! corrupting the trailer cannot downgrade the check. The trailer is always the last property.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::{Deref, DerefMut, Range};

use bytes::Bytes;

use crate::consts::{property, sys_flag};

/// Magic of a V1 record (topic length is one signed byte).
pub const MESSAGE_MAGIC_CODE_V1: i32 = 0xDAA3_20A7_u32 as i32;
/// Magic of a V2 record (topic length is a signed short). Decoded, never written by us.
pub const MESSAGE_MAGIC_CODE_V2: i32 = 0xDAA3_20AB_u32 as i32;
/// Marks the unused end of a CommitLog segment: `[i32 remaining][i32 BLANK_MAGIC_CODE]`.
pub const BLANK_MAGIC_CODE: i32 = 0xCBD4_3194_u32 as i32;

/// Separates a property name from its value.
pub const NAME_VALUE_SEPARATOR: u8 = 1;
/// Ends one property.
pub const PROPERTY_SEPARATOR: u8 = 2;

/// Longest topic a V1 record can carry (its length is a signed byte).
pub const MAX_TOPIC_LEN: usize = 127;
/// Longest encoded properties a record can carry (their length is a signed short).
pub const MAX_PROPERTIES_LEN: usize = i16::MAX as usize;

/// Byte positions of the fixed-place fields of a record.
pub mod pos {
    pub const TOTAL_SIZE: usize = 0;
    pub const MAGIC: usize = 4;
    pub const BODY_CRC: usize = 8;
    pub const QUEUE_ID: usize = 12;
    pub const FLAG: usize = 16;
    pub const QUEUE_OFFSET: usize = 20;
    pub const PHYSICAL_OFFSET: usize = 28;
    pub const SYS_FLAG: usize = 36;
    pub const BORN_TIMESTAMP: usize = 40;
    pub const BORN_HOST: usize = 48;
}

/// Bytes of a record apart from hosts, body, topic and properties.
const FIXED_LEN: usize = 4 + 4 + 4 + 4 + 4 + 8 + 8 + 4 + 8 + 8 + 4 + 8 + 4 + 1 + 2;
/// The smallest record: IPv4 hosts, empty body, topic and properties.
pub const MIN_RECORD_LEN: usize = FIXED_LEN + 8 + 8;
/// Length of the CRC trailer `__CRC32#` `\x01` ten digits `\x02`.
pub const RECORD_CRC_TRAILER_LEN: usize = property::CRC32.len() + 1 + CRC_DIGITS + 1;
const CRC_DIGITS: usize = 10;

/// A message as a producer hands it over: topic, flag, properties and body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub flag: i32,
    pub properties: BTreeMap<String, String>,
    pub body: Bytes,
}

impl Message {
    pub fn new(topic: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Message {
            topic: topic.into(),
            flag: 0,
            properties: BTreeMap::new(),
            body: body.into(),
        }
    }

    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties.get(key).map(String::as_str)
    }

    pub fn set_property(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.properties.insert(key.into(), value.into());
    }

    pub fn remove_property(&mut self, key: &str) -> Option<String> {
        self.properties.remove(key)
    }

    /// The `TAGS` property.
    pub fn tags(&self) -> Option<&str> {
        self.property(property::TAGS)
    }

    pub fn set_tags(&mut self, tags: impl Into<String>) {
        self.set_property(property::TAGS, tags);
    }

    /// The `KEYS` property (space-separated keys in RocketMQ).
    pub fn keys(&self) -> Option<&str> {
        self.property(property::KEYS)
    }

    pub fn set_keys(&mut self, keys: impl Into<String>) {
        self.set_property(property::KEYS, keys);
    }

    /// The client-generated message id (`UNIQ_KEY`).
    pub fn uniq_key(&self) -> Option<&str> {
        self.property(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX)
    }

    /// `tags.hashCode()` as RocketMQ stores it in the ConsumeQueue; 0 without tags.
    pub fn tags_code(&self) -> i64 {
        self.tags()
            .filter(|t| !t.is_empty())
            .map_or(0, |t| crate::hash::java_string_hash(t) as i64)
    }
}

/// A stored message as read back from the CommitLog or a PULL response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageExt {
    pub message: Message,
    pub queue_id: i32,
    pub store_size: i32,
    pub queue_offset: i64,
    pub sys_flag: i32,
    pub born_timestamp: i64,
    pub born_host: SocketAddr,
    pub store_timestamp: i64,
    pub store_host: SocketAddr,
    pub commit_log_offset: i64,
    pub body_crc: i32,
    pub reconsume_times: i32,
    pub prepared_transaction_offset: i64,
    /// The offset message id: store host and CommitLog offset, see [`offset_msg_id`].
    pub msg_id: String,
}

impl Deref for MessageExt {
    type Target = Message;
    fn deref(&self) -> &Message {
        &self.message
    }
}

impl DerefMut for MessageExt {
    fn deref_mut(&mut self) -> &mut Message {
        &mut self.message
    }
}

/// Everything a record holds besides the [`Message`]: where it sits and who sent and stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMeta {
    pub queue_id: i32,
    pub queue_offset: i64,
    pub physical_offset: i64,
    /// The `BORNHOST_V6` / `STOREHOST_V6` bits are set from the addresses when encoding.
    pub sys_flag: i32,
    pub born_timestamp: i64,
    pub born_host: SocketAddr,
    pub store_timestamp: i64,
    pub store_host: SocketAddr,
    pub reconsume_times: i32,
    pub prepared_transaction_offset: i64,
}

impl Default for RecordMeta {
    fn default() -> Self {
        let unspecified = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
        RecordMeta {
            queue_id: 0,
            queue_offset: 0,
            physical_offset: 0,
            sys_flag: 0,
            born_timestamp: 0,
            born_host: unspecified,
            store_timestamp: 0,
            store_host: unspecified,
            reconsume_times: 0,
            prepared_transaction_offset: 0,
        }
    }
}

/// Why a message cannot be laid out as a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("the topic is empty")]
    EmptyTopic,
    #[error("the topic is {0} bytes long; a record holds at most {MAX_TOPIC_LEN}")]
    TopicTooLong(usize),
    #[error("the properties encode to {0} bytes; a record holds at most {MAX_PROPERTIES_LEN}")]
    PropertiesTooLong(usize),
    #[error("property {0:?} contains a \\x01 or \\x02 separator byte")]
    IllegalPropertyChar(String),
    #[error("the record would be {0} bytes, more than an i32 can describe")]
    TooLarge(usize),
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{field} needs {need} bytes but only {have} remain")]
    Truncated {
        field: &'static str,
        need: usize,
        have: usize,
    },
    #[error("bad magic code {0:#010x}")]
    BadMagic(i32),
    #[error("a blank (end of segment) marker where a record was expected")]
    Blank,
    #[error("total size {total} is impossible with {have} bytes available")]
    BadTotalSize { total: i64, have: usize },
    #[error("negative length {len} for {field}")]
    NegativeLength { field: &'static str, len: i64 },
    #[error("the fields end at {end} but the total size says {total}")]
    SizeMismatch { end: usize, total: usize },
    #[error("body CRC mismatch: stored {stored:#x}, computed {computed:#x}")]
    BodyCrc { stored: i32, computed: i32 },
    #[error("whole-record CRC mismatch")]
    RecordCrc,
    #[error("{0} is not valid UTF-8")]
    Utf8(&'static str),
    #[error("malformed message id {0:?}")]
    BadMessageId(String),
}

/// `crc32(data) & 0x7FFFFFFF`, RocketMQ's stored body CRC.
pub fn body_crc(body: &[u8]) -> i32 {
    (crc32fast::hash(body) & 0x7FFF_FFFF) as i32
}

fn host_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    }
}

/// Length of the born host field for a sys flag.
pub fn born_host_len(sys_flag_value: i32) -> usize {
    if sys_flag_value & sys_flag::BORNHOST_V6 != 0 {
        20
    } else {
        8
    }
}

/// Length of the store host field for a sys flag.
pub fn store_host_len(sys_flag_value: i32) -> usize {
    if sys_flag_value & sys_flag::STOREHOST_V6 != 0 {
        20
    } else {
        8
    }
}

/// Where STORETIMESTAMP sits in a record with this sys flag.
pub fn store_timestamp_position(sys_flag_value: i32) -> usize {
    pos::BORN_HOST + born_host_len(sys_flag_value)
}

fn check_property(s: &str) -> Result<(), EncodeError> {
    if s.bytes()
        .any(|b| b == NAME_VALUE_SEPARATOR || b == PROPERTY_SEPARATOR)
    {
        return Err(EncodeError::IllegalPropertyChar(s.to_string()));
    }
    Ok(())
}

/// RocketMQ's `messageProperties2String`: `key \x01 value \x02` for every property.
pub fn encode_properties(props: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(props.iter().map(|(k, v)| k.len() + v.len() + 2).sum());
    for (k, v) in props {
        out.push_str(k);
        out.push(NAME_VALUE_SEPARATOR as char);
        out.push_str(v);
        out.push(PROPERTY_SEPARATOR as char);
    }
    out
}

/// RocketMQ's `string2messageProperties`. Tolerates a missing trailing `\x02` and skips items
/// without a `\x01` (Java does the same).
pub fn decode_properties(s: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for item in s.split(PROPERTY_SEPARATOR as char) {
        if let Some((k, v)) = item.split_once(NAME_VALUE_SEPARATOR as char) {
            map.insert(k.to_string(), v.to_string());
        }
    }
    map
}

/// The user properties that go into a record: every property, except a `__CRC32#` when the
/// store appends its own trailer (a client must not be able to forge it).
fn record_properties(
    msg: &Message,
    append_crc: bool,
) -> impl Iterator<Item = (&String, &String)> + '_ {
    msg.properties
        .iter()
        .filter(move |(k, _)| !(append_crc && k.as_str() == property::CRC32))
}

fn properties_len(msg: &Message, append_crc: bool) -> Result<usize, EncodeError> {
    let mut len = 0usize;
    for (k, v) in record_properties(msg, append_crc) {
        check_property(k)?;
        check_property(v)?;
        len += k.len() + v.len() + 2;
    }
    if append_crc {
        len += RECORD_CRC_TRAILER_LEN;
    }
    if len > MAX_PROPERTIES_LEN {
        return Err(EncodeError::PropertiesTooLong(len));
    }
    Ok(len)
}

/// The size of the record `msg` would occupy (`CommitLog.calMsgLength`), after checking the topic
/// and properties fit a V1 record.
pub fn record_len(
    msg: &Message,
    born_host: &SocketAddr,
    store_host: &SocketAddr,
    append_crc: bool,
) -> Result<usize, EncodeError> {
    if msg.topic.is_empty() {
        return Err(EncodeError::EmptyTopic);
    }
    if msg.topic.len() > MAX_TOPIC_LEN {
        return Err(EncodeError::TopicTooLong(msg.topic.len()));
    }
    let props = properties_len(msg, append_crc)?;
    let total = FIXED_LEN
        + host_len(born_host)
        + host_len(store_host)
        + msg.body.len()
        + msg.topic.len()
        + props;
    if total > i32::MAX as usize {
        return Err(EncodeError::TooLarge(total));
    }
    Ok(total)
}

fn put_host(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
    out.extend_from_slice(&(addr.port() as i32).to_be_bytes());
}

/// The sys flag with its host-version bits set from the addresses.
pub fn sys_flag_for_hosts(
    sys_flag_value: i32,
    born_host: &SocketAddr,
    store_host: &SocketAddr,
) -> i32 {
    let mut f = sys_flag_value & !(sys_flag::BORNHOST_V6 | sys_flag::STOREHOST_V6);
    if born_host.is_ipv6() {
        f |= sys_flag::BORNHOST_V6;
    }
    if store_host.is_ipv6() {
        f |= sys_flag::STOREHOST_V6;
    }
    f
}

/// Appends the V1 record of `msg` to `out` and returns its length.
///
/// With `append_crc` the record ends with the `__CRC32#` trailer, already sealed for the offsets
/// in `meta`; a writer that patches offsets or the store timestamp afterwards must call
/// [`seal_record_crc`] again.
pub fn encode_record(
    msg: &Message,
    meta: &RecordMeta,
    append_crc: bool,
    out: &mut Vec<u8>,
) -> Result<usize, EncodeError> {
    let total = record_len(msg, &meta.born_host, &meta.store_host, append_crc)?;
    let props_len = properties_len(msg, append_crc)?;
    let start = out.len();
    out.reserve(total);
    let flag = sys_flag_for_hosts(meta.sys_flag, &meta.born_host, &meta.store_host);
    out.extend_from_slice(&(total as i32).to_be_bytes());
    out.extend_from_slice(&MESSAGE_MAGIC_CODE_V1.to_be_bytes());
    out.extend_from_slice(&body_crc(&msg.body).to_be_bytes());
    out.extend_from_slice(&meta.queue_id.to_be_bytes());
    out.extend_from_slice(&msg.flag.to_be_bytes());
    out.extend_from_slice(&meta.queue_offset.to_be_bytes());
    out.extend_from_slice(&meta.physical_offset.to_be_bytes());
    out.extend_from_slice(&flag.to_be_bytes());
    out.extend_from_slice(&meta.born_timestamp.to_be_bytes());
    put_host(out, &meta.born_host);
    out.extend_from_slice(&meta.store_timestamp.to_be_bytes());
    put_host(out, &meta.store_host);
    out.extend_from_slice(&meta.reconsume_times.to_be_bytes());
    out.extend_from_slice(&meta.prepared_transaction_offset.to_be_bytes());
    out.extend_from_slice(&(msg.body.len() as i32).to_be_bytes());
    out.extend_from_slice(&msg.body);
    out.push(msg.topic.len() as u8);
    out.extend_from_slice(msg.topic.as_bytes());
    out.extend_from_slice(&(props_len as i16).to_be_bytes());
    for (k, v) in record_properties(msg, append_crc) {
        out.extend_from_slice(k.as_bytes());
        out.push(NAME_VALUE_SEPARATOR);
        out.extend_from_slice(v.as_bytes());
        out.push(PROPERTY_SEPARATOR);
    }
    if append_crc {
        out.extend_from_slice(property::CRC32.as_bytes());
        out.push(NAME_VALUE_SEPARATOR);
        out.extend_from_slice(&[b'0'; CRC_DIGITS]);
        out.push(PROPERTY_SEPARATOR);
    }
    debug_assert_eq!(out.len() - start, total);
    if append_crc {
        seal_record_crc(&mut out[start..]);
    }
    Ok(total)
}

fn get_i32(buf: &[u8], at: usize) -> i32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    i32::from_be_bytes(b)
}

fn get_i64(buf: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(b)
}

/// Reads a big-endian i32 at `at`, `None` if out of bounds.
pub fn read_i32(buf: &[u8], at: usize) -> Option<i32> {
    (at.checked_add(4)? <= buf.len()).then(|| get_i32(buf, at))
}

/// Reads a big-endian i64 at `at`, `None` if out of bounds.
pub fn read_i64(buf: &[u8], at: usize) -> Option<i64> {
    (at.checked_add(8)? <= buf.len()).then(|| get_i64(buf, at))
}

/// Sets QUEUEOFFSET (position 20) and PHYSICALOFFSET (position 28) of an encoded record.
/// The caller re-seals the CRC trailer afterwards.
pub fn set_record_offsets(record: &mut [u8], queue_offset: i64, physical_offset: i64) {
    record[pos::QUEUE_OFFSET..pos::QUEUE_OFFSET + 8].copy_from_slice(&queue_offset.to_be_bytes());
    record[pos::PHYSICAL_OFFSET..pos::PHYSICAL_OFFSET + 8]
        .copy_from_slice(&physical_offset.to_be_bytes());
}

/// Sets STORETIMESTAMP of an encoded record (its place depends on the born host's version).
pub fn set_store_timestamp(record: &mut [u8], store_timestamp: i64) {
    let at = store_timestamp_position(get_i32(record, pos::SYS_FLAG));
    record[at..at + 8].copy_from_slice(&store_timestamp.to_be_bytes());
}

/// The store timestamp of an encoded record, `None` if the bytes are too short.
pub fn record_store_timestamp(record: &[u8]) -> Option<i64> {
    let flag = read_i32(record, pos::SYS_FLAG)?;
    read_i64(record, store_timestamp_position(flag))
}

/// What the last bytes of a record say about the `__CRC32#` trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trailer {
    /// No trailer: a record written without one.
    Absent,
    /// `__CRC32#` `\x01` ten digits `\x02`, exactly.
    Intact,
    /// Mostly the trailer's bytes, but not exactly: a trailer that was damaged. Treating it as
    /// absent would let a flipped trailer byte silently downgrade the check to the body CRC.
    Damaged,
}

/// Classifies the last [`RECORD_CRC_TRAILER_LEN`] bytes of the properties. The trailer is
/// always the last property of a record the store writes (a client's own `__CRC32#` is dropped).
fn trailer(record: &[u8], props: &Range<usize>) -> Trailer {
    if props.len() < RECORD_CRC_TRAILER_LEN || props.end != record.len() {
        return Trailer::Absent;
    }
    let t = &record[props.end - RECORD_CRC_TRAILER_LEN..props.end];
    let key = property::CRC32.as_bytes();
    let mut matching = key.iter().zip(t).filter(|(a, b)| a == b).count();
    matching += usize::from(t[key.len()] == NAME_VALUE_SEPARATOR);
    matching += usize::from(t[RECORD_CRC_TRAILER_LEN - 1] == PROPERTY_SEPARATOR);
    let digits_ok = t[key.len() + 1..key.len() + 1 + CRC_DIGITS]
        .iter()
        .all(u8::is_ascii_digit);
    let fixed = key.len() + 2;
    if matching == fixed && digits_ok {
        Trailer::Intact
    } else if matching + 3 >= fixed {
        Trailer::Damaged
    } else {
        Trailer::Absent
    }
}

/// Computes and writes the ten CRC digits of a record that ends with the `__CRC32#` trailer.
/// Returns false (and writes nothing) if the record has no trailer.
pub fn seal_record_crc(record: &mut [u8]) -> bool {
    let Ok(layout) = locate(record) else {
        return false;
    };
    if trailer(record, &layout.properties) != Trailer::Intact {
        return false;
    }
    let digits_at = record.len() - 1 - CRC_DIGITS;
    let crc = crc32fast::hash(&record[..digits_at]);
    let mut text = String::with_capacity(CRC_DIGITS);
    let _ = write!(text, "{crc:010}");
    record[digits_at..digits_at + CRC_DIGITS].copy_from_slice(text.as_bytes());
    true
}

/// The integrity verdict on one record's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordCheck {
    /// The whole-record CRC trailer matched.
    RecordCrcOk,
    /// No trailer; the body CRC matched.
    BodyCrcOk,
    /// The bytes are not a complete, intact record.
    Bad,
}

/// Verifies a complete record (`record.len()` must equal its TOTALSIZE): layout, the
/// whole-record CRC if the record has the trailer, and the body CRC in every case.
pub fn check_record(record: &[u8]) -> RecordCheck {
    let Ok(layout) = locate(record) else {
        return RecordCheck::Bad;
    };
    if layout.total != record.len() {
        return RecordCheck::Bad;
    }
    if body_crc(&record[layout.body.clone()]) != get_i32(record, pos::BODY_CRC) {
        return RecordCheck::Bad;
    }
    match trailer(record, &layout.properties) {
        Trailer::Absent => return RecordCheck::BodyCrcOk,
        Trailer::Damaged => return RecordCheck::Bad,
        Trailer::Intact => {}
    }
    let digits_at = record.len() - 1 - CRC_DIGITS;
    let stored = std::str::from_utf8(&record[digits_at..digits_at + CRC_DIGITS])
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    match stored {
        Some(v) if v == crc32fast::hash(&record[..digits_at]) as u64 => RecordCheck::RecordCrcOk,
        _ => RecordCheck::Bad,
    }
}

/// True if `record` is one complete, intact record (see [`check_record`]).
pub fn verify_record_crc(record: &[u8]) -> bool {
    check_record(record) != RecordCheck::Bad
}

/// Field ranges of one record, found by walking its lengths.
#[derive(Debug, Clone)]
struct Layout {
    total: usize,
    magic: i32,
    body: Range<usize>,
    topic: Range<usize>,
    properties: Range<usize>,
}

fn need(buf: &[u8], field: &'static str, at: usize, len: usize) -> Result<(), DecodeError> {
    if at + len > buf.len() {
        return Err(DecodeError::Truncated {
            field,
            need: at + len,
            have: buf.len(),
        });
    }
    Ok(())
}

/// Checks the sizes of the record at the start of `buf` against each other and against the
/// bytes available, without looking at CRCs.
fn locate(buf: &[u8]) -> Result<Layout, DecodeError> {
    need(buf, "header", 0, 8)?;
    let total_raw = get_i32(buf, pos::TOTAL_SIZE);
    let magic = get_i32(buf, pos::MAGIC);
    if magic == BLANK_MAGIC_CODE {
        return Err(DecodeError::Blank);
    }
    if magic != MESSAGE_MAGIC_CODE_V1 && magic != MESSAGE_MAGIC_CODE_V2 {
        return Err(DecodeError::BadMagic(magic));
    }
    if total_raw < MIN_RECORD_LEN as i32 || total_raw as usize > buf.len() {
        return Err(DecodeError::BadTotalSize {
            total: total_raw as i64,
            have: buf.len(),
        });
    }
    let total = total_raw as usize;
    let rec = &buf[..total];
    let flag = get_i32(rec, pos::SYS_FLAG);
    let mut at = pos::BORN_HOST + born_host_len(flag) + 8 + store_host_len(flag) + 4 + 8;
    need(rec, "body length", at, 4)?;
    let body_len = get_i32(rec, at);
    if body_len < 0 {
        return Err(DecodeError::NegativeLength {
            field: "body",
            len: body_len as i64,
        });
    }
    at += 4;
    need(rec, "body", at, body_len as usize)?;
    let body = at..at + body_len as usize;
    at = body.end;
    let topic_len = if magic == MESSAGE_MAGIC_CODE_V1 {
        need(rec, "topic length", at, 1)?;
        let l = rec[at] as i8;
        at += 1;
        l as i64
    } else {
        need(rec, "topic length", at, 2)?;
        let l = i16::from_be_bytes([rec[at], rec[at + 1]]);
        at += 2;
        l as i64
    };
    if topic_len < 0 {
        return Err(DecodeError::NegativeLength {
            field: "topic",
            len: topic_len,
        });
    }
    need(rec, "topic", at, topic_len as usize)?;
    let topic = at..at + topic_len as usize;
    at = topic.end;
    need(rec, "properties length", at, 2)?;
    let props_len = i16::from_be_bytes([rec[at], rec[at + 1]]);
    if props_len < 0 {
        return Err(DecodeError::NegativeLength {
            field: "properties",
            len: props_len as i64,
        });
    }
    at += 2;
    need(rec, "properties", at, props_len as usize)?;
    let properties = at..at + props_len as usize;
    if properties.end != total {
        return Err(DecodeError::SizeMismatch {
            end: properties.end,
            total,
        });
    }
    Ok(Layout {
        total,
        magic,
        body,
        topic,
        properties,
    })
}

fn get_host(buf: &[u8], at: usize, v6: bool) -> SocketAddr {
    if v6 {
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&buf[at..at + 16]);
        let port = get_i32(buf, at + 16);
        SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port as u16)
    } else {
        let ip = Ipv4Addr::new(buf[at], buf[at + 1], buf[at + 2], buf[at + 3]);
        let port = get_i32(buf, at + 4);
        SocketAddr::new(IpAddr::V4(ip), port as u16)
    }
}

/// The TOTALSIZE of the record at the start of `buf` after checking its layout, or the reason
/// it is not a record. Does not check CRCs.
pub fn record_size(buf: &[u8]) -> Result<usize, DecodeError> {
    locate(buf).map(|l| l.total)
}

/// Decodes the record at the start of `buf`; returns it and the bytes it occupied. Checks the
/// magic and every length against the bytes available, not the CRCs.
pub fn decode_message(buf: &[u8]) -> Result<(MessageExt, usize), DecodeError> {
    decode_message_with(buf, false)
}

/// [`decode_message`], also verifying the body CRC (and the whole-record CRC if present) when
/// `verify_crc` is set.
pub fn decode_message_with(
    buf: &[u8],
    verify_crc: bool,
) -> Result<(MessageExt, usize), DecodeError> {
    let layout = locate(buf)?;
    let rec = &buf[..layout.total];
    let stored_crc = get_i32(rec, pos::BODY_CRC);
    if verify_crc {
        let computed = body_crc(&rec[layout.body.clone()]);
        if computed != stored_crc {
            return Err(DecodeError::BodyCrc {
                stored: stored_crc,
                computed,
            });
        }
        if check_record(rec) == RecordCheck::Bad {
            return Err(DecodeError::RecordCrc);
        }
    }
    let flag = get_i32(rec, pos::SYS_FLAG);
    let born_v6 = flag & sys_flag::BORNHOST_V6 != 0;
    let store_v6 = flag & sys_flag::STOREHOST_V6 != 0;
    let born_host = get_host(rec, pos::BORN_HOST, born_v6);
    let mut at = pos::BORN_HOST + born_host_len(flag);
    let store_timestamp = get_i64(rec, at);
    at += 8;
    let store_host = get_host(rec, at, store_v6);
    at += store_host_len(flag);
    let reconsume_times = get_i32(rec, at);
    let prepared_transaction_offset = get_i64(rec, at + 4);
    let topic = std::str::from_utf8(&rec[layout.topic.clone()])
        .map_err(|_| DecodeError::Utf8("topic"))?
        .to_string();
    let props = std::str::from_utf8(&rec[layout.properties.clone()])
        .map_err(|_| DecodeError::Utf8("properties"))?;
    let commit_log_offset = get_i64(rec, pos::PHYSICAL_OFFSET);
    let _ = layout.magic;
    let ext = MessageExt {
        message: Message {
            topic,
            flag: get_i32(rec, pos::FLAG),
            properties: decode_properties(props),
            body: Bytes::copy_from_slice(&rec[layout.body.clone()]),
        },
        queue_id: get_i32(rec, pos::QUEUE_ID),
        store_size: layout.total as i32,
        queue_offset: get_i64(rec, pos::QUEUE_OFFSET),
        sys_flag: flag,
        born_timestamp: get_i64(rec, pos::BORN_TIMESTAMP),
        born_host,
        store_timestamp,
        store_host,
        commit_log_offset,
        body_crc: stored_crc,
        reconsume_times,
        prepared_transaction_offset,
        msg_id: offset_msg_id(store_host, commit_log_offset),
    };
    Ok((ext, layout.total))
}

/// Decodes a concatenation of records, e.g. the body of a PULL response.
pub fn decode_messages(mut buf: &[u8]) -> Result<Vec<MessageExt>, DecodeError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (m, used) = decode_message(buf)?;
        out.push(m);
        buf = &buf[used..];
    }
    Ok(out)
}

/// The properties string of an encoded record without decoding the rest, `None` if malformed.
pub fn record_properties_str(record: &[u8]) -> Option<&str> {
    let layout = locate(record).ok()?;
    std::str::from_utf8(&record[layout.properties]).ok()
}

/// The topic of an encoded record without decoding the rest, `None` if malformed.
pub fn record_topic(record: &[u8]) -> Option<&str> {
    let layout = locate(record).ok()?;
    std::str::from_utf8(&record[layout.topic]).ok()
}

/// The tags code (`tags.hashCode()`, 0 without tags) of an encoded record.
pub fn record_tags_code(record: &[u8]) -> Option<i64> {
    let props = record_properties_str(record)?;
    for item in props.split(PROPERTY_SEPARATOR as char) {
        if let Some((k, v)) = item.split_once(NAME_VALUE_SEPARATOR as char) {
            if k == property::TAGS {
                return Some(if v.is_empty() {
                    0
                } else {
                    crate::hash::java_string_hash(v) as i64
                });
            }
        }
    }
    Some(0)
}

/// The offset message id (`MessageDecoder.createMessageId`): uppercase hex of the store host's
/// address, its port as i32 and the CommitLog offset as i64; 32 characters for IPv4, 56 for IPv6.
pub fn offset_msg_id(store_host: SocketAddr, commit_log_offset: i64) -> String {
    let mut bytes = [0u8; 28];
    let ip_len = match store_host.ip() {
        IpAddr::V4(ip) => {
            bytes[..4].copy_from_slice(&ip.octets());
            4
        }
        IpAddr::V6(ip) => {
            bytes[..16].copy_from_slice(&ip.octets());
            16
        }
    };
    bytes[ip_len..ip_len + 4].copy_from_slice(&(store_host.port() as i32).to_be_bytes());
    bytes[ip_len + 4..ip_len + 12].copy_from_slice(&commit_log_offset.to_be_bytes());
    upper_hex(&bytes[..ip_len + 12])
}

/// `bytes` as upper-case hex, two digits a byte (Java's `UtilAll.bytes2string`), from a table
/// rather than a formatter per byte (one per message on the send path).
pub fn upper_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    s
}

/// Inverse of [`offset_msg_id`].
pub fn decode_offset_msg_id(id: &str) -> Result<(SocketAddr, i64), DecodeError> {
    let bad = || DecodeError::BadMessageId(id.to_string());
    if !(id.len() == 32 || id.len() == 56) || !id.is_ascii() {
        return Err(bad());
    }
    let bytes = (0..id.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&id[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| bad())?;
    let ip_len = bytes.len() - 12;
    let ip = if ip_len == 4 {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        let mut a = [0u8; 16];
        a.copy_from_slice(&bytes[..16]);
        IpAddr::V6(Ipv6Addr::from(a))
    };
    let port = get_i32(&bytes, ip_len);
    let offset = get_i64(&bytes, ip_len + 4);
    Ok((SocketAddr::new(ip, port as u16), offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meta(born: SocketAddr, store: SocketAddr) -> RecordMeta {
        RecordMeta {
            queue_id: 3,
            queue_offset: 42,
            physical_offset: 1 << 33,
            sys_flag: 0,
            born_timestamp: 1_700_000_000_000,
            born_host: born,
            store_timestamp: 1_700_000_000_123,
            store_host: store,
            reconsume_times: 2,
            prepared_transaction_offset: 7,
        }
    }

    fn v4(a: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port)
    }

    #[test]
    fn magic_values_match_java() {
        assert_eq!(MESSAGE_MAGIC_CODE_V1, -626843481);
        assert_eq!(MESSAGE_MAGIC_CODE_V2, -626843477);
        assert_eq!(BLANK_MAGIC_CODE, -875286124);
        assert_eq!(RECORD_CRC_TRAILER_LEN, 20);
        assert_eq!(MIN_RECORD_LEN, 91);
    }

    #[test]
    fn encode_decode_fixed_positions() {
        let mut m = Message::new("TopicA", &b"hello"[..]);
        m.set_tags("TagA");
        m.set_keys("k1 k2");
        let mut buf = Vec::new();
        let mt = meta(v4([10, 0, 0, 1], 1234), v4([192, 168, 1, 2], 10911));
        let n = encode_record(&m, &mt, true, &mut buf).expect("encode");
        assert_eq!(n, buf.len());
        assert_eq!(read_i32(&buf, 0), Some(n as i32));
        assert_eq!(read_i64(&buf, pos::QUEUE_OFFSET), Some(42));
        assert_eq!(read_i64(&buf, pos::PHYSICAL_OFFSET), Some(1 << 33));
        assert_eq!(check_record(&buf), RecordCheck::RecordCrcOk);
        set_record_offsets(&mut buf, 9, 100);
        assert_eq!(check_record(&buf), RecordCheck::Bad, "patch without reseal");
        assert!(seal_record_crc(&mut buf));
        set_store_timestamp(&mut buf, 5);
        assert!(seal_record_crc(&mut buf));
        assert!(verify_record_crc(&buf));
        let (ext, used) = decode_message_with(&buf, true).expect("decode");
        assert_eq!(used, n);
        assert_eq!(ext.queue_offset, 9);
        assert_eq!(ext.commit_log_offset, 100);
        assert_eq!(ext.store_timestamp, 5);
        assert_eq!(record_store_timestamp(&buf), Some(5));
        assert_eq!(ext.tags(), Some("TagA"));
        assert_eq!(ext.keys(), Some("k1 k2"));
        assert_eq!(ext.body.as_ref(), b"hello");
        assert_eq!(ext.msg_id, offset_msg_id(mt.store_host, 100));
        assert!(ext.property(property::CRC32).is_some());
        assert_eq!(record_tags_code(&buf), Some(m.tags_code()));
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let mut m = Message::new("T", &b"payload-bytes"[..]);
        m.set_property("a", "b");
        let mut buf = Vec::new();
        encode_record(
            &m,
            &meta(v4([1, 2, 3, 4], 5), v4([6, 7, 8, 9], 10)),
            true,
            &mut buf,
        )
        .expect("encode");
        for i in 0..buf.len() {
            let mut c = buf.clone();
            c[i] ^= 0x10;
            assert!(!verify_record_crc(&c), "flip at {i} undetected");
        }
    }

    #[test]
    fn without_trailer_body_crc_is_checked() {
        let m = Message::new("T", &b"abc"[..]);
        let mut buf = Vec::new();
        encode_record(&m, &RecordMeta::default(), false, &mut buf).expect("encode");
        assert_eq!(check_record(&buf), RecordCheck::BodyCrcOk);
        let body_at = buf.len() - 2 - 1 - 1 - 3;
        buf[body_at] ^= 1;
        assert_eq!(check_record(&buf), RecordCheck::Bad);
    }

    #[test]
    fn client_crc_property_is_replaced() {
        let mut m = Message::new("T", &b"abc"[..]);
        m.set_property(property::CRC32, "0000000000");
        let mut buf = Vec::new();
        encode_record(&m, &RecordMeta::default(), true, &mut buf).expect("encode");
        assert_eq!(check_record(&buf), RecordCheck::RecordCrcOk);
    }

    #[test]
    fn limits_are_enforced() {
        let m = Message::new("x".repeat(128), &b""[..]);
        let h = v4([0, 0, 0, 0], 0);
        assert_eq!(
            record_len(&m, &h, &h, true),
            Err(EncodeError::TopicTooLong(128))
        );
        let mut m = Message::new("t", &b""[..]);
        m.set_property("k", "v".repeat(40_000));
        assert!(matches!(
            record_len(&m, &h, &h, false),
            Err(EncodeError::PropertiesTooLong(_))
        ));
        let mut m = Message::new("t", &b""[..]);
        m.set_property("k", "a\u{1}b");
        assert!(matches!(
            record_len(&m, &h, &h, false),
            Err(EncodeError::IllegalPropertyChar(_))
        ));
        assert_eq!(
            record_len(&Message::new("", &b""[..]), &h, &h, false),
            Err(EncodeError::EmptyTopic)
        );
    }

    #[test]
    fn decode_rejects_bad_input() {
        let mut buf = Vec::new();
        encode_record(
            &Message::new("T", &b"abc"[..]),
            &RecordMeta::default(),
            true,
            &mut buf,
        )
        .expect("encode");
        for cut in 0..buf.len() {
            assert!(decode_message(&buf[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = buf.clone();
        bad[4] = 0;
        assert!(matches!(
            decode_message(&bad),
            Err(DecodeError::BadMagic(_))
        ));
        let mut bad = buf.clone();
        bad[..4].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(
            decode_message(&bad),
            Err(DecodeError::BadTotalSize { .. })
        ));
        let mut blank = vec![0u8; 16];
        blank[4..8].copy_from_slice(&BLANK_MAGIC_CODE.to_be_bytes());
        assert_eq!(decode_message(&blank).err(), Some(DecodeError::Blank));
        // A body length that points past the record.
        let mut bad = buf.clone();
        let body_len_at = pos::BORN_HOST + 8 + 8 + 8 + 4 + 8;
        bad[body_len_at..body_len_at + 4].copy_from_slice(&1000i32.to_be_bytes());
        assert!(decode_message(&bad).is_err());
        bad[body_len_at..body_len_at + 4].copy_from_slice(&(-1i32).to_be_bytes());
        assert!(decode_message(&bad).is_err());
    }

    #[test]
    fn properties_round_trip_and_tolerance() {
        let mut p = BTreeMap::new();
        p.insert("TAGS".to_string(), "a".to_string());
        p.insert("ключ".to_string(), "значение 🎉".to_string());
        let s = encode_properties(&p);
        assert_eq!(decode_properties(&s), p);
        assert_eq!(decode_properties(s.trim_end_matches('\u{2}')), p);
        assert!(decode_properties("").is_empty());
        assert_eq!(decode_properties("junk\u{2}a\u{1}b").len(), 1);
    }

    #[test]
    fn msg_id_matches_java_layout() {
        let id = offset_msg_id(v4([127, 0, 0, 1], 10911), 0x1234);
        assert_eq!(id, "7F00000100002A9F0000000000001234");
        assert_eq!(
            decode_offset_msg_id(&id).expect("decode"),
            (v4([127, 0, 0, 1], 10911), 0x1234)
        );
        let v6: SocketAddr = "[::1]:8080".parse().expect("addr");
        let id6 = offset_msg_id(v6, 99);
        assert_eq!(id6.len(), 56);
        assert_eq!(decode_offset_msg_id(&id6).expect("decode"), (v6, 99));
        assert!(decode_offset_msg_id("XYZ").is_err());
        assert!(decode_offset_msg_id(&"G".repeat(32)).is_err());
    }

    fn addr_strategy() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(a, p)| v4(a, p)),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(a, p)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), p)),
        ]
    }

    fn prop_text() -> impl Strategy<Value = String> {
        "[^\u{1}\u{2}]{0,12}"
    }

    proptest! {
        #[test]
        fn record_round_trip(
            topic in "[A-Za-z0-9_%|-]{1,127}",
            body in proptest::collection::vec(any::<u8>(), 0..512),
            props in proptest::collection::btree_map(
                "[^\u{1}\u{2}]{1,12}", prop_text(), 0..6),
            flag in any::<i32>(),
            born in addr_strategy(),
            store in addr_strategy(),
            qid in 0i32..1024,
            qoff in 0i64..i64::MAX,
            phy in 0i64..i64::MAX,
            crc in any::<bool>(),
        ) {
            let mut m = Message::new(topic, body);
            m.flag = flag;
            m.properties = props.into_iter().filter(|(k, _)| k != property::CRC32).collect();
            let mut mt = meta(born, store);
            mt.queue_id = qid;
            mt.queue_offset = qoff;
            mt.physical_offset = phy;
            let mut buf = Vec::new();
            let n = encode_record(&m, &mt, crc, &mut buf).expect("encode");
            prop_assert!(verify_record_crc(&buf));
            // Two records back to back, as in a PULL body.
            let copy = buf.clone();
            buf.extend_from_slice(&copy);
            let all = decode_messages(&buf).expect("decode");
            prop_assert_eq!(all.len(), 2);
            let ext = &all[0];
            prop_assert_eq!(ext.store_size as usize, n);
            prop_assert_eq!(&ext.topic, &m.topic);
            prop_assert_eq!(&ext.body, &m.body);
            prop_assert_eq!(ext.flag, m.flag);
            prop_assert_eq!(ext.born_host, born);
            prop_assert_eq!(ext.store_host, store);
            prop_assert_eq!(ext.queue_id, qid);
            prop_assert_eq!(ext.queue_offset, qoff);
            prop_assert_eq!(ext.commit_log_offset, phy);
            let mut got = ext.properties.clone();
            if crc {
                prop_assert!(got.remove(property::CRC32).is_some());
            }
            prop_assert_eq!(got, m.properties.clone());
            let (host, off) = decode_offset_msg_id(&ext.msg_id).expect("id");
            prop_assert_eq!((host, off), (store, phy));
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_messages(&bytes);
            let _ = check_record(&bytes);
        }
    }
}
