//! The two header encodings of a Remoting frame: JSON (type 0) and the binary ROCKETMQ
//! layout (type 1).
//!
//! Decoders return a [`RemotingCommand`] with an empty body; the codec attaches the body.

use bytes::{BufMut, Bytes};
use serde::de::DeserializeSeed;
use serde_json::{Map, Value};

use crate::command::{ExtFields, ExtStr, LanguageCode, LastWins, RemotingCommand, SerializeType};
use crate::error::CodecError;

// ---------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------

/// Appends the JSON header of `cmd` to `dst`. `extFields` keys are written sorted so the
/// output is deterministic; an absent remark and empty `extFields` are omitted, like Java.
///
/// Written by hand, byte for byte what serializing the header struct with `serde_json` gives
/// (field order `code, language, version, opaque, flag, remark, extFields,
/// serializeTypeCurrentRPC`, compact, serde_json's string escapes): every request and response
/// goes through here, and the serde path (a sorted map built per call, the serializer's
/// machinery) cost a tenth of the broker's time under `bench produce`. The unit tests compare
/// the two on arbitrary commands.
pub fn encode_json(cmd: &RemotingCommand, dst: &mut Vec<u8>) -> Result<(), CodecError> {
    // Sorted entries without a heap allocation for the usual few fields.
    const INLINE: usize = 16;
    let mut inline = [("", ""); INLINE];
    let mut spilled = Vec::new();
    let entries: &mut [(&str, &str)] = if cmd.ext_fields.len() <= INLINE {
        for (slot, entry) in inline.iter_mut().zip(&cmd.ext_fields) {
            *slot = entry;
        }
        &mut inline[..cmd.ext_fields.len()]
    } else {
        spilled.extend(cmd.ext_fields.iter());
        &mut spilled
    };
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));

    dst.reserve(size_hint(cmd));
    dst.extend_from_slice(b"{\"code\":");
    push_i32(dst, cmd.code);
    dst.extend_from_slice(b",\"language\":");
    push_json_str(dst, cmd.language.name())?;
    dst.extend_from_slice(b",\"version\":");
    push_i32(dst, cmd.version);
    dst.extend_from_slice(b",\"opaque\":");
    push_i32(dst, cmd.opaque);
    dst.extend_from_slice(b",\"flag\":");
    push_i32(dst, cmd.flag);
    if let Some(remark) = &cmd.remark {
        dst.extend_from_slice(b",\"remark\":");
        push_json_str(dst, remark)?;
    }
    if !entries.is_empty() {
        dst.extend_from_slice(b",\"extFields\":{");
        for (i, (key, value)) in entries.iter().enumerate() {
            if i > 0 {
                dst.push(b',');
            }
            push_json_str(dst, key)?;
            dst.push(b':');
            push_json_str(dst, value)?;
        }
        dst.push(b'}');
    }
    dst.extend_from_slice(b",\"serializeTypeCurrentRPC\":");
    push_json_str(dst, SerializeType::Json.name())?;
    dst.push(b'}');
    Ok(())
}

/// The length of `cmd`'s header in its serialize type, exact unless JSON escapes lengthen it.
pub fn size_hint(cmd: &RemotingCommand) -> usize {
    let remark = cmd.remark.as_ref().map_or(0, String::len);
    let ext: usize = cmd.ext_fields.iter().map(|(k, v)| k.len() + v.len()).sum();
    match cmd.serialize_type {
        // The fixed fields at their longest, then `"key":"value",` per entry.
        SerializeType::Json => 176 + remark + ext + 6 * cmd.ext_fields.len(),
        // code..flag, the two lengths, then keyLen and valLen per entry.
        SerializeType::RocketMq => 21 + remark + ext + 6 * cmd.ext_fields.len(),
    }
}

/// Appends `value` in decimal.
fn push_i32(dst: &mut Vec<u8>, value: i32) {
    let mut digits = [0u8; 11];
    let mut at = digits.len();
    let mut n = value.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if value < 0 {
        at -= 1;
        digits[at] = b'-';
    }
    dst.extend_from_slice(&digits[at..]);
}

/// Appends `s` as a JSON string: as is between quotes when nothing in it needs escaping (the
/// usual case), else through serde_json's escaping.
fn push_json_str(dst: &mut Vec<u8>, s: &str) -> Result<(), CodecError> {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        dst.push(b'"');
        dst.extend_from_slice(s.as_bytes());
        dst.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(&mut *dst, s).map_err(|e| CodecError::JsonHeader(e.to_string()))
    }
}

/// Decodes a JSON header leniently: missing fields take their defaults, an unknown
/// language becomes OTHER, numbers and booleans in `extFields` become strings, and
/// `extFields` may be absent or null.
///
/// The header is first read straight into the command by a hand-written scanner (module
/// `scan`: one pass, no `serde_json::Value` tree, each escaped string unescaped once) accepting
/// only the usual shapes: integers for the numeric fields, a name or a number for the
/// language, strings, integers, booleans and nulls in `extFields`.
/// Anything else (a number sent as a string, a nested value, a syntax error) is decoded again
/// by the general path, which decides the result and the error. One difference: an unknown
/// top-level field is skipped unread, so invalid UTF-8, a lone surrogate or an out-of-range
/// number inside it is not refused (the general path refused them; the field is dropped
/// either way, as RocketMQ's Java server does).
///
/// The `extFields` strings are copied; [`decode_json_frame`] keeps them as slices of the frame.
pub fn decode_json(bytes: &[u8]) -> Result<RemotingCommand, CodecError> {
    decode_json_in(bytes, None)
}

/// [`decode_json`] of a header held in `frame`: the `extFields` keys and values without JSON
/// escapes (nearly all) are slices of `frame`, not copies.
pub fn decode_json_frame(frame: &Bytes) -> Result<RemotingCommand, CodecError> {
    decode_json_in(frame, Some(frame))
}

fn decode_json_in(bytes: &[u8], frame: Option<&Bytes>) -> Result<RemotingCommand, CodecError> {
    match scan::header(bytes, frame) {
        Some(cmd) => Ok(cmd),
        None => decode_json_value(bytes),
    }
}

/// The JSON header decoder [`decode_json_frame`] replaced: serde visitors driven by
/// serde_json (module `fast`), then the `Value` path for what they refuse. Kept as the
/// reference the scanner is tested against and as the baseline of `benches/header.rs`.
#[doc(hidden)]
pub fn decode_json_serde(frame: &Bytes) -> Result<RemotingCommand, CodecError> {
    decode_json_serde_in(frame, Some(frame))
}

fn decode_json_serde_in(
    bytes: &[u8],
    frame: Option<&Bytes>,
) -> Result<RemotingCommand, CodecError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let fast = fast::HeaderSeed { frame }
        .deserialize(&mut de)
        .and_then(|header| de.end().map(|()| header));
    match fast {
        Ok(fast::Header(cmd)) => Ok(cmd),
        Err(_) => decode_json_value(bytes),
    }
}

/// The general (and reference) JSON header decoder: through a `serde_json::Value`.
/// What the fast JSON decoders fill in: every field at its value for a header that omits it.
fn blank_json_command() -> RemotingCommand {
    RemotingCommand {
        code: 0,
        language: LanguageCode::Other,
        version: 0,
        opaque: 0,
        flag: 0,
        remark: None,
        ext_fields: ExtFields::new(),
        body: Bytes::new(),
        serialize_type: SerializeType::Json,
    }
}

fn decode_json_value(bytes: &[u8]) -> Result<RemotingCommand, CodecError> {
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

/// The single-letter names of `SendMessageRequestHeaderV2` and friends, shared by every
/// command that has them.
const LETTERS: [&str; 26] = [
    "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s",
    "t", "u", "v", "w", "x", "y", "z",
];

/// The JSON header decoder: one pass over the bytes, building the command as it goes. It
/// accepts exactly what the serde fast path ([`fast`], kept as [`decode_json_serde`]) accepts,
/// with the same results, and returns `None` (the [`decode_json_value`] path decides) for
/// everything else: a nested or fractional value where it is not skipped, an integer out of
/// range, an invalid escape or lone surrogate, invalid UTF-8, a syntax error, truncation.
mod scan {
    use std::ops::Range;

    use bytes::Bytes;

    use super::LETTERS;
    use crate::command::{ExtFields, ExtStr, LanguageCode, LastWins, RemotingCommand};

    /// The command in `bytes`, or `None` when the general path must decide.
    pub(super) fn header(bytes: &[u8], frame: Option<&Bytes>) -> Option<RemotingCommand> {
        let mut s = Scanner {
            buf: bytes,
            // Nearly always valid: then each string is a slice of it, no check of its own.
            text: std::str::from_utf8(bytes).ok(),
            at: 0,
            frame,
        };
        let mut cmd = super::blank_json_command();
        s.ws();
        s.expect(b'{')?;
        s.ws();
        if s.peek()? == b'}' {
            s.at += 1;
        } else {
            loop {
                s.expect(b'"')?;
                let key = s.string()?;
                s.ws();
                s.expect(b':')?;
                s.ws();
                // A repeated key: the last one wins, as in the general path's map.
                match key.as_str() {
                    "code" => cmd.code = s.int()?,
                    "language" => cmd.language = s.language()?,
                    "version" => cmd.version = s.int()?,
                    "opaque" => cmd.opaque = s.int()?,
                    "flag" => cmd.flag = s.int()?,
                    "remark" => cmd.remark = s.remark()?,
                    "extFields" => cmd.ext_fields = s.ext_fields()?,
                    _ => s.skip_value()?,
                }
                s.ws();
                match s.next()? {
                    b',' => s.ws(),
                    b'}' => break,
                    _ => return None,
                }
            }
        }
        s.ws();
        (s.at == s.buf.len()).then_some(cmd)
    }

    /// A decoded string: a slice of the input when it has no escapes, else unescaped.
    enum Text<'a> {
        Raw(&'a str),
        Unescaped(String),
    }

    impl Text<'_> {
        fn as_str(&self) -> &str {
            match self {
                Text::Raw(s) => s,
                Text::Unescaped(s) => s,
            }
        }
    }

    struct Scanner<'a> {
        buf: &'a [u8],
        /// `buf` when it is valid UTF-8 (a JSON string in it then is too: its quotes are
        /// ASCII, so they lie on character boundaries).
        text: Option<&'a str>,
        at: usize,
        frame: Option<&'a Bytes>,
    }

    impl<'a> Scanner<'a> {
        /// Skips JSON whitespace.
        fn ws(&mut self) {
            while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.buf.get(self.at) {
                self.at += 1;
            }
        }

        fn peek(&self) -> Option<u8> {
            self.buf.get(self.at).copied()
        }

        fn next(&mut self) -> Option<u8> {
            let b = self.peek()?;
            self.at += 1;
            Some(b)
        }

        fn expect(&mut self, b: u8) -> Option<()> {
            (self.next()? == b).then_some(())
        }

        /// `word` (`null`, `true` or `false`) at the cursor.
        fn literal(&mut self, word: &[u8]) -> Option<()> {
            let end = self.at.checked_add(word.len())?;
            (self.buf.get(self.at..end)? == word).then(|| self.at = end)
        }

        /// Where the raw bytes of a string whose opening quote was read lie (the cursor moves
        /// past its closing quote) and whether they hold an escape. A control character: `None`.
        #[inline]
        fn raw_string(&mut self) -> Option<(Range<usize>, bool)> {
            let start = self.at;
            let mut escaped = false;
            loop {
                self.at += find_special(self.buf.get(self.at..)?);
                match self.next()? {
                    b'"' => return Some((start..self.at - 1, escaped)),
                    // The escaped byte never ends the string; the escape is checked later.
                    b'\\' => {
                        escaped = true;
                        self.at += 1;
                    }
                    _ => return None,
                }
            }
        }

        /// The text at `range`, if valid UTF-8.
        #[inline]
        fn str(&self, range: Range<usize>) -> Option<&'a str> {
            match self.text {
                Some(text) => text.get(range),
                None => std::str::from_utf8(self.buf.get(range)?).ok(),
            }
        }

        /// A string whose opening quote was read, decoded as serde_json does: valid UTF-8,
        /// valid escapes, surrogates paired.
        #[inline]
        fn string(&mut self) -> Option<Text<'a>> {
            let (range, escaped) = self.raw_string()?;
            let raw = self.str(range)?;
            if escaped {
                unescape(raw).map(Text::Unescaped)
            } else {
                Some(Text::Raw(raw))
            }
        }

        /// An `extFields` string whose opening quote was read: a slice of the frame when it
        /// has no escapes and a frame is at hand.
        fn ext_str(&mut self) -> Option<ExtStr> {
            Some(match self.string()? {
                Text::Raw(s) => match self.frame {
                    Some(frame) => ExtStr::shared(frame, s),
                    None => ExtStr::copied(s),
                },
                Text::Unescaped(s) => ExtStr::from(s),
            })
        }

        /// An integer as serde_json reads it without a fraction or exponent: its sign, its
        /// magnitude (which fits a u64, and is at most 2^63 and not 0 when negative) and its
        /// text (the number's decimal form: no leading zero, no `-0`).
        fn integer(&mut self) -> Option<(bool, u64, &'a str)> {
            let start = self.at;
            let negative = self.peek()? == b'-';
            if negative {
                self.at += 1;
            }
            let mut magnitude: u64 = match self.next()? {
                b'0' => 0,
                d @ b'1'..=b'9' => u64::from(d - b'0'),
                _ => return None,
            };
            if magnitude != 0 {
                while let Some(d @ b'0'..=b'9') = self.peek() {
                    magnitude = magnitude
                        .checked_mul(10)?
                        .checked_add(u64::from(d - b'0'))?;
                    self.at += 1;
                }
            }
            // A leading zero followed by a digit, a fraction or an exponent: not for us.
            if let Some(b'0'..=b'9' | b'.' | b'e' | b'E') = self.peek() {
                return None;
            }
            if negative && !(1..=1u64 << 63).contains(&magnitude) {
                return None;
            }
            // ASCII digits and a sign.
            let text = self.str(start..self.at)?;
            Some((negative, magnitude, text))
        }

        /// A 32-bit integer.
        fn int(&mut self) -> Option<i32> {
            let (negative, magnitude, _) = self.integer()?;
            let value = if negative {
                // magnitude <= 2^63: i64::MIN wraps to itself.
                (magnitude as i64).wrapping_neg()
            } else {
                i64::try_from(magnitude).ok()?
            };
            i32::try_from(value).ok()
        }

        /// A language name, or its code as a non-negative integer.
        fn language(&mut self) -> Option<LanguageCode> {
            if self.peek()? == b'"' {
                self.at += 1;
                return Some(LanguageCode::from_name(self.string()?.as_str()));
            }
            match self.integer()? {
                (false, code, _) => {
                    Some(u8::try_from(code).map_or(LanguageCode::Other, LanguageCode::from_code))
                }
                (true, ..) => None,
            }
        }

        /// The remark: a string or null.
        fn remark(&mut self) -> Option<Option<String>> {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    Some(Some(match self.string()? {
                        Text::Raw(s) => s.to_owned(),
                        Text::Unescaped(s) => s,
                    }))
                }
                b'n' => self.literal(b"null").map(|()| None),
                _ => None,
            }
        }

        /// `extFields`: null, or an object of strings, integers, booleans and nulls.
        fn ext_fields(&mut self) -> Option<ExtFields> {
            match self.next()? {
                b'n' => {
                    self.at -= 1;
                    self.literal(b"null")?;
                    return Some(ExtFields::new());
                }
                b'{' => {}
                _ => return None,
            }
            // Last one wins; a null removes what an earlier same key set.
            let mut fields = LastWins::with_capacity(16);
            self.ws();
            if self.peek()? == b'}' {
                self.at += 1;
                return Some(fields.finish());
            }
            loop {
                self.expect(b'"')?;
                let key = match self.string()? {
                    Text::Raw(s) => match s.as_bytes() {
                        [letter @ b'a'..=b'z'] => ExtStr::from(LETTERS[usize::from(letter - b'a')]),
                        _ => match self.frame {
                            Some(frame) => ExtStr::shared(frame, s),
                            None => ExtStr::copied(s),
                        },
                    },
                    Text::Unescaped(s) => ExtStr::from(s),
                };
                self.ws();
                self.expect(b':')?;
                self.ws();
                let value = match self.peek()? {
                    b'"' => {
                        self.at += 1;
                        Some(self.ext_str()?)
                    }
                    b't' => self.literal(b"true").map(|()| Some(ExtStr::from("true")))?,
                    b'f' => self
                        .literal(b"false")
                        .map(|()| Some(ExtStr::from("false")))?,
                    b'n' => self.literal(b"null").map(|()| None)?,
                    _ => Some(ExtStr::copied(self.integer()?.2)),
                };
                fields.push(key, value);
                self.ws();
                match self.next()? {
                    b',' => self.ws(),
                    b'}' => return Some(fields.finish()),
                    _ => return None,
                }
            }
        }

        /// Skips a value unread, as serde_json's `IgnoredAny` does: checked for syntax only
        /// (escapes not decoded, UTF-8 and number ranges not checked), nested to any depth.
        fn skip_value(&mut self) -> Option<()> {
            // The closing brackets of the arrays and objects the cursor is in.
            let mut open = Vec::new();
            loop {
                // A value.
                self.ws();
                match self.next()? {
                    b'"' => self.skip_string()?,
                    b'n' => self.skip_literal(b"null")?,
                    b't' => self.skip_literal(b"true")?,
                    b'f' => self.skip_literal(b"false")?,
                    b'-' | b'0'..=b'9' => {
                        self.at -= 1;
                        self.skip_number()?;
                    }
                    b'[' => {
                        self.ws();
                        if self.peek()? == b']' {
                            self.at += 1;
                        } else {
                            open.push(b']');
                            continue;
                        }
                    }
                    b'{' => {
                        self.ws();
                        if self.peek()? == b'}' {
                            self.at += 1;
                        } else {
                            open.push(b'}');
                            self.skip_key()?;
                            continue;
                        }
                    }
                    _ => return None,
                }
                // After a value: the end of the enclosing arrays and objects, or a comma.
                loop {
                    let Some(&close) = open.last() else {
                        return Some(());
                    };
                    self.ws();
                    match self.next()? {
                        b',' => {
                            if close == b'}' {
                                self.ws();
                                self.skip_key()?;
                            }
                            break;
                        }
                        b if b == close => {
                            open.pop();
                        }
                        _ => return None,
                    }
                }
            }
        }

        /// `"key":` inside a skipped object.
        fn skip_key(&mut self) -> Option<()> {
            self.expect(b'"')?;
            self.skip_string()?;
            self.ws();
            self.expect(b':')
        }

        /// The rest of a literal whose first byte was read.
        fn skip_literal(&mut self, word: &[u8]) -> Option<()> {
            self.at -= 1;
            self.literal(word)
        }

        /// A string whose opening quote was read, escapes checked for syntax only.
        fn skip_string(&mut self) -> Option<()> {
            let (range, escaped) = self.raw_string()?;
            let raw = &self.buf[range];
            if !escaped {
                return Some(());
            }
            let mut i = 0;
            while i < raw.len() {
                if raw[i] != b'\\' {
                    i += 1;
                    continue;
                }
                match raw.get(i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                    b'u' => {
                        hex4(raw.get(i + 2..i + 6)?)?;
                        i += 6;
                    }
                    _ => return None,
                }
            }
            Some(())
        }

        /// A number of any size, fraction and exponent included.
        fn skip_number(&mut self) -> Option<()> {
            if self.peek()? == b'-' {
                self.at += 1;
            }
            match self.next()? {
                b'0' => {
                    if let Some(b'0'..=b'9') = self.peek() {
                        return None;
                    }
                }
                b'1'..=b'9' => self.skip_digits(),
                _ => return None,
            }
            if self.peek() == Some(b'.') {
                self.at += 1;
                self.digits()?;
            }
            if let Some(b'e' | b'E') = self.peek() {
                self.at += 1;
                if let Some(b'+' | b'-') = self.peek() {
                    self.at += 1;
                }
                self.digits()?;
            }
            Some(())
        }

        fn skip_digits(&mut self) {
            while let Some(b'0'..=b'9') = self.peek() {
                self.at += 1;
            }
        }

        /// At least one digit.
        fn digits(&mut self) -> Option<()> {
            let start = self.at;
            self.skip_digits();
            (self.at > start).then_some(())
        }
    }

    /// The value of four hex digits.
    fn hex4(digits: &[u8]) -> Option<u16> {
        let mut value = 0u16;
        for &d in digits {
            let nibble = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return None,
            };
            value = value << 4 | u16::from(nibble);
        }
        Some(value)
    }

    /// The character of the escape at the start of `rest` (which begins with a backslash) and
    /// the escape's length; `None` for an invalid escape or an unpaired surrogate.
    fn escape(rest: &[u8]) -> Option<(char, usize)> {
        let simple = match rest.get(1)? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = hex4(rest.get(2..6)?)?;
                return match unit {
                    0xD800..=0xDBFF => {
                        // A high surrogate: a low one must follow at once.
                        if rest.get(6..8)? != b"\\u" {
                            return None;
                        }
                        let low = hex4(rest.get(8..12)?)?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return None;
                        }
                        let c = 0x1_0000
                            + ((u32::from(unit) - 0xD800) << 10)
                            + (u32::from(low) - 0xDC00);
                        Some((char::from_u32(c)?, 12))
                    }
                    _ => Some((char::from_u32(u32::from(unit))?, 6)),
                };
            }
            _ => return None,
        };
        Some((simple, 2))
    }

    /// `raw` (valid UTF-8) with its escapes decoded, into a string of exactly its length.
    pub(super) fn unescape(raw: &str) -> Option<String> {
        let bytes = raw.as_bytes();
        // First the length (and the escapes checked), then the text.
        let mut len = 0;
        let mut i = 0;
        while let Some(at) = bytes[i..].iter().position(|&b| b == b'\\') {
            let (c, n) = escape(&bytes[i + at..])?;
            len += at + c.len_utf8();
            i += at + n;
        }
        len += bytes.len() - i;
        let mut out = String::with_capacity(len);
        let mut i = 0;
        while let Some(at) = bytes[i..].iter().position(|&b| b == b'\\') {
            let (c, n) = escape(&bytes[i + at..])?;
            // Escapes are ASCII, so `i` and `i + at` are character boundaries.
            out.push_str(raw.get(i..i + at)?);
            out.push(c);
            i += at + n;
        }
        out.push_str(raw.get(i..)?);
        Some(out)
    }

    /// The index of the first `"`, `\` or control character of `s`, or its length: eight
    /// bytes at a time.
    #[inline]
    fn find_special(s: &[u8]) -> usize {
        const ONES: u64 = u64::MAX / 255;
        const HIGH: u64 = ONES << 7;
        let mut chunks = s.chunks_exact(8);
        let mut at = 0;
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let x = u64::from_le_bytes(word);
            // Each test flags the lowest matching byte exactly (a borrow only reaches the
            // bytes above a match), so the lowest flag of the three is the first match.
            let control = x.wrapping_sub(ONES * 0x20) & !x;
            let q = x ^ (ONES * u64::from(b'"'));
            let quote = q.wrapping_sub(ONES) & !q;
            let b = x ^ (ONES * u64::from(b'\\'));
            let backslash = b.wrapping_sub(ONES) & !b;
            let found = (control | quote | backslash) & HIGH;
            if found != 0 {
                return at + found.trailing_zeros() as usize / 8;
            }
            at += 8;
        }
        at + chunks
            .remainder()
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            .unwrap_or(chunks.remainder().len())
    }
}

/// The JSON header decoder before the scanner: serde visitors that build the command directly
/// and refuse (so that [`decode_json_value`] decides) every shape they do not handle exactly as
/// it does. Only [`decode_json_serde`] (the benchmark's baseline) and the tests use it now.
mod fast {
    use std::fmt;

    use bytes::Bytes;
    use serde::de::{
        self, Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor,
    };

    use super::LETTERS;
    use crate::command::{ExtFields, ExtStr, LanguageCode, LastWins, RemotingCommand};

    pub(super) struct Header(pub(super) RemotingCommand);

    /// Decodes a [`Header`]; with a `frame` (which holds the bytes decoded), the `extFields`
    /// strings without escapes are slices of it.
    pub(super) struct HeaderSeed<'f> {
        pub(super) frame: Option<&'f Bytes>,
    }

    impl<'de> DeserializeSeed<'de> for HeaderSeed<'_> {
        type Value = Header;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Header, D::Error> {
            d.deserialize_map(HeaderVisitor { frame: self.frame })
        }
    }

    #[cfg(test)]
    impl<'de> Deserialize<'de> for Header {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            HeaderSeed { frame: None }.deserialize(d)
        }
    }

    struct HeaderVisitor<'f> {
        frame: Option<&'f Bytes>,
    }

    impl<'de> Visitor<'de> for HeaderVisitor<'_> {
        type Value = Header;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a Remoting JSON header")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Header, A::Error> {
            let mut cmd = super::blank_json_command();
            // A repeated key: the last one wins, as in the general path's map.
            while let Some(key) = map.next_key::<Key>()? {
                match key {
                    Key::Code => cmd.code = map.next_value::<Int>()?.0,
                    Key::Version => cmd.version = map.next_value::<Int>()?.0,
                    Key::Opaque => cmd.opaque = map.next_value::<Int>()?.0,
                    Key::Flag => cmd.flag = map.next_value::<Int>()?.0,
                    Key::Language => cmd.language = map.next_value::<Language>()?.0,
                    Key::Remark => cmd.remark = map.next_value::<Remark>()?.0,
                    Key::ExtFields => {
                        cmd.ext_fields = map.next_value_seed(FieldsSeed { frame: self.frame })?
                    }
                    Key::Other => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(Header(cmd))
        }
    }

    enum Key {
        Code,
        Language,
        Version,
        Opaque,
        Flag,
        Remark,
        ExtFields,
        Other,
    }

    impl<'de> Deserialize<'de> for Key {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct KeyVisitor;
            impl Visitor<'_> for KeyVisitor {
                type Value = Key;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a header field name")
                }

                fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                    Ok(match v {
                        "code" => Key::Code,
                        "language" => Key::Language,
                        "version" => Key::Version,
                        "opaque" => Key::Opaque,
                        "flag" => Key::Flag,
                        "remark" => Key::Remark,
                        "extFields" => Key::ExtFields,
                        _ => Key::Other,
                    })
                }
            }
            d.deserialize_str(KeyVisitor)
        }
    }

    /// A JSON integer that fits in an i32 (anything else: the general path).
    struct Int(i32);

    impl<'de> Deserialize<'de> for Int {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct IntVisitor;
            impl Visitor<'_> for IntVisitor {
                type Value = Int;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a 32-bit integer")
                }

                fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
                    i32::try_from(v)
                        .map(Int)
                        .map_err(|_| E::custom("out of range"))
                }

                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
                    i32::try_from(v)
                        .map(Int)
                        .map_err(|_| E::custom("out of range"))
                }
            }
            d.deserialize_any(IntVisitor)
        }
    }

    /// A language name, or its code as a number.
    struct Language(LanguageCode);

    impl<'de> Deserialize<'de> for Language {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct LanguageVisitor;
            impl Visitor<'_> for LanguageVisitor {
                type Value = Language;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a language name or code")
                }

                fn visit_str<E: de::Error>(self, v: &str) -> Result<Language, E> {
                    Ok(Language(LanguageCode::from_name(v)))
                }

                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Language, E> {
                    Ok(Language(
                        u8::try_from(v).map_or(LanguageCode::Other, LanguageCode::from_code),
                    ))
                }
            }
            d.deserialize_any(LanguageVisitor)
        }
    }

    /// The remark: a string or null.
    struct Remark(Option<String>);

    impl<'de> Deserialize<'de> for Remark {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct RemarkVisitor;
            impl Visitor<'_> for RemarkVisitor {
                type Value = Remark;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a string or null")
                }

                fn visit_str<E: de::Error>(self, v: &str) -> Result<Remark, E> {
                    Ok(Remark(Some(v.to_owned())))
                }

                fn visit_string<E: de::Error>(self, v: String) -> Result<Remark, E> {
                    Ok(Remark(Some(v)))
                }

                fn visit_unit<E: de::Error>(self) -> Result<Remark, E> {
                    Ok(Remark(None))
                }
            }
            d.deserialize_any(RemarkVisitor)
        }
    }

    /// A string of `extFields`: a slice of the frame when the text is in it (no escapes).
    fn text(frame: Option<&Bytes>, v: &str) -> ExtStr {
        match frame {
            Some(frame) => ExtStr::shared(frame, v),
            None => ExtStr::copied(v),
        }
    }

    /// `extFields`: an object (or null) of strings, integers, booleans and nulls.
    struct FieldsSeed<'f> {
        frame: Option<&'f Bytes>,
    }

    impl<'de> DeserializeSeed<'de> for FieldsSeed<'_> {
        type Value = ExtFields;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ExtFields, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for FieldsSeed<'_> {
        type Value = ExtFields;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object or null")
        }

        fn visit_unit<E: de::Error>(self) -> Result<ExtFields, E> {
            Ok(ExtFields::new())
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ExtFields, A::Error> {
            // Last one wins; a null removes what an earlier same key set.
            let mut fields = LastWins::with_capacity(map.size_hint().unwrap_or(16));
            let frame = self.frame;
            while let Some(key) = map.next_key_seed(KeySeed { frame })? {
                let value = map.next_value_seed(ValueSeed { frame })?;
                fields.push(key, value);
            }
            Ok(fields.finish())
        }
    }

    /// An `extFields` key.
    struct KeySeed<'f> {
        frame: Option<&'f Bytes>,
    }

    impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
        type Value = ExtStr;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ExtStr, D::Error> {
            d.deserialize_str(self)
        }
    }

    impl<'de> Visitor<'de> for KeySeed<'_> {
        type Value = ExtStr;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }

        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<ExtStr, E> {
            if let [letter @ b'a'..=b'z'] = v.as_bytes() {
                return Ok(ExtStr::from(LETTERS[usize::from(letter - b'a')]));
            }
            Ok(text(self.frame, v))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<ExtStr, E> {
            Ok(ExtStr::copied(v))
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<ExtStr, E> {
            Ok(ExtStr::from(v))
        }
    }

    /// One `extFields` value as its string (`None`: null, skipped).
    struct ValueSeed<'f> {
        frame: Option<&'f Bytes>,
    }

    impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
        type Value = Option<ExtStr>;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<ExtStr>, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for ValueSeed<'_> {
        type Value = Option<ExtStr>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string, an integer, a boolean or null")
        }

        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Option<ExtStr>, E> {
            Ok(Some(text(self.frame, v)))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<ExtStr>, E> {
            Ok(Some(ExtStr::copied(v)))
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<Option<ExtStr>, E> {
            Ok(Some(ExtStr::from(v)))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<ExtStr>, E> {
            Ok(Some(ExtStr::display(&v)))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<ExtStr>, E> {
            Ok(Some(ExtStr::display(&v)))
        }

        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Option<ExtStr>, E> {
            Ok(Some(ExtStr::from(if v { "true" } else { "false" })))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Option<ExtStr>, E> {
            Ok(None)
        }
    }
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

fn json_ext_fields(value: Option<&Value>) -> Result<ExtFields, CodecError> {
    let obj = match value {
        None | Some(Value::Null) => return Ok(ExtFields::new()),
        Some(Value::Object(obj)) => obj,
        Some(_) => {
            return Err(CodecError::JsonHeader(
                "field `extFields` is not a JSON object".into(),
            ))
        }
    };
    // The object's keys are unique: the last of a repeated key won when it was parsed.
    let mut items = Vec::with_capacity(obj.len());
    for (key, value) in obj {
        let value = match value {
            Value::Null => continue,
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        items.push((ExtStr::from(key.clone()), Some(ExtStr::from(value))));
    }
    Ok(ExtFields::from_last_wins(items))
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

    let mut entries: Vec<(&str, &str)> = cmd.ext_fields.iter().collect();
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
///
/// The `extFields` strings are copied; [`decode_binary_frame`] keeps them as slices of the frame.
pub fn decode_binary(bytes: &[u8]) -> Result<RemotingCommand, CodecError> {
    decode_binary_in(bytes, None)
}

/// [`decode_binary`] of a header held in `frame`: the `extFields` keys and values that are
/// valid UTF-8 (nearly all) are slices of `frame`, not copies.
pub fn decode_binary_frame(frame: &Bytes) -> Result<RemotingCommand, CodecError> {
    decode_binary_in(frame, Some(frame))
}

fn decode_binary_in(bytes: &[u8], frame: Option<&Bytes>) -> Result<RemotingCommand, CodecError> {
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
    // A repeated key: the last one wins, as in Java's `HashMap.put`.
    let mut fields = LastWins::with_capacity(16);
    while !ext.is_empty() {
        let key_len = ext.i16("extFields key length")?;
        let key_len = usize::try_from(key_len)
            .map_err(|_| bad_binary(format!("negative extFields key length {key_len}")))?;
        let key = ext_text(frame, ext.take(key_len, "extFields key")?);
        let value_len = ext.len_i32("extFields value length")?;
        let value = ext_text(frame, ext.take(value_len, "extFields value")?);
        fields.push(key, Some(value));
    }
    let ext_fields = fields.finish();

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

/// An `extFields` string of a binary header: a slice of `frame` when it is valid UTF-8 and a
/// frame is at hand, else (lossily decoded) a copy.
fn ext_text(frame: Option<&Bytes>, bytes: &[u8]) -> ExtStr {
    match (frame, std::str::from_utf8(bytes)) {
        (Some(frame), Ok(text)) => ExtStr::shared(frame, text),
        _ => ExtStr::from(lossy(bytes)),
    }
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
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde::Serialize;

    use super::*;

    /// The serde encoding [`encode_json`] reproduces.
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

    fn encode_json_serde(cmd: &RemotingCommand) -> Vec<u8> {
        let out = JsonHeaderOut {
            code: cmd.code,
            language: cmd.language.name(),
            version: cmd.version,
            opaque: cmd.opaque,
            flag: cmd.flag,
            remark: cmd.remark.as_deref(),
            ext_fields: cmd.ext_fields.iter().collect(),
            serialize_type_current_rpc: SerializeType::Json.name(),
        };
        serde_json::to_vec(&out).expect("serde encoding")
    }

    /// Strings with the characters JSON escapes (quotes, backslashes, controls) and beyond ASCII.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9_%]{0,12}",
            proptest::collection::vec(
                prop_oneof![
                    Just('"'),
                    Just('\\'),
                    Just('\u{1}'),
                    Just('\u{2}'),
                    Just('\n'),
                    Just('\u{7f}'),
                    Just('é'),
                    Just('中'),
                    Just('😀'),
                    proptest::char::range('\u{0}', '\u{20}'),
                    proptest::char::any(),
                ],
                0..12
            )
            .prop_map(|chars| chars.into_iter().collect()),
        ]
    }

    fn json_command() -> impl Strategy<Value = RemotingCommand> {
        (
            any::<i32>(),
            proptest::sample::select(LanguageCode::ALL.to_vec()),
            any::<i32>(),
            any::<i32>(),
            any::<i32>(),
            proptest::option::of(text()),
            proptest::collection::hash_map(text(), text(), 0..20),
        )
            .prop_map(|(code, language, version, opaque, flag, remark, ext)| {
                let mut cmd = RemotingCommand::request(code);
                cmd.language = language;
                cmd.version = version;
                cmd.opaque = opaque;
                cmd.flag = flag;
                cmd.remark = remark;
                cmd.ext_fields = ext.into();
                cmd
            })
    }

    proptest! {
        #[test]
        fn json_encoding_is_the_serde_encoding(cmd in json_command()) {
            let mut ours = Vec::new();
            encode_json(&cmd, &mut ours).unwrap();
            let theirs = encode_json_serde(&cmd);
            prop_assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs));
            prop_assert_eq!(&ours, &theirs);
            // And both decoders read it back the same.
            prop_assert!(scan::header(&ours, None).is_some(), "the scanner refused our encoding");
            prop_assert_eq!(decode_json(&ours), decode_json_serde_in(&ours, None));
            prop_assert_eq!(decode_json(&ours), decode_json_value(&ours));
            prop_assert_eq!(decode_json(&ours).unwrap(), cmd.clone());
            // Read from a frame (strings as slices of it): the same command.
            prop_assert_eq!(decode_json_frame(&Bytes::from(ours)).unwrap(), cmd.clone());
            if let (Ok(code), Ok(version)) = (i16::try_from(cmd.code), i16::try_from(cmd.version)) {
                let mut binary = Vec::new();
                let mut narrow = cmd.clone();
                narrow.code = i32::from(code);
                narrow.version = i32::from(version);
                narrow.serialize_type = SerializeType::RocketMq;
                encode_binary(&narrow, &mut binary).unwrap();
                prop_assert_eq!(decode_binary(&binary).unwrap(), narrow.clone());
                prop_assert_eq!(decode_binary_frame(&Bytes::from(binary)).unwrap(), narrow);
            }
        }

        /// Headers of arbitrary shapes (fields of every JSON type, repeated keys) decode the same
        /// through the fast path as through the `Value` path, errors included.
        #[test]
        fn json_decoding_matches_the_value_path(
            fields in proptest::collection::vec((
                proptest::sample::select(vec!["code", "language", "version", "opaque", "flag", "remark", "extFields", "other"]),
                json_value(),
            ), 0..10)
        ) {
            let mut text = String::from("{");
            for (i, (key, value)) in fields.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                text.push_str(&format!("{}:{}", serde_json::to_string(key).unwrap(), value));
            }
            text.push('}');
            prop_assert_eq!(decode_json(text.as_bytes()), decode_json_value(text.as_bytes()), "{}", text);
            // The decoder over a frame, whose strings are slices of it, agrees too.
            let frame = bytes::Bytes::copy_from_slice(text.as_bytes());
            prop_assert_eq!(decode_json_frame(&frame), decode_json_value(text.as_bytes()), "{}", text);
        }
    }

    /// JSON texts of every type, extFields-like objects with repeated keys among them.
    fn json_value() -> impl Strategy<Value = String> {
        let scalar = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            Just("1.5".to_string()),
            Just("-0".to_string()),
            Just("1e3".to_string()),
            Just("4294967296".to_string()),
            Just("18446744073709551615".to_string()),
            Just("-9223372036854775808".to_string()),
            any::<i32>().prop_map(|v| v.to_string()),
            any::<u8>().prop_map(|v| v.to_string()),
            text().prop_map(|s| serde_json::to_string(&s).unwrap()),
            Just("\"JAVA\"".to_string()),
            Just("\" 12 \"".to_string()),
            Just("[1,\"a\"]".to_string()),
        ];
        let entry = (
            prop_oneof![
                proptest::sample::select(vec!["a", "b", "k", "\\u0061"]).prop_map(str::to_string),
                (0u8..48).prop_map(|i| format!("k{i}")),
            ],
            scalar.clone(),
        );
        prop_oneof![
            3 => scalar,
            // Up to 40 entries: past the decoder's scan limit (32), where repeated keys are
            // found through a hash set.
            1 => proptest::collection::vec(entry, 0..40).prop_map(|entries| {
                let inner: Vec<String> = entries.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", inner.join(","))
            }),
        ]
    }

    /// The serde fast path alone: `None` where it refused (and the `Value` path decided).
    fn serde_fast(bytes: &[u8]) -> Option<RemotingCommand> {
        serde_json::from_slice::<fast::Header>(bytes)
            .ok()
            .map(|fast::Header(cmd)| cmd)
    }

    /// The scanner and the serde fast path accept the same headers with the same result, and
    /// the decoders built on them agree, errors included; over a frame too.
    fn assert_scanner_is_the_serde_path(bytes: &[u8]) -> Result<(), TestCaseError> {
        let text = String::from_utf8_lossy(bytes);
        prop_assert_eq!(scan::header(bytes, None), serde_fast(bytes), "{}", text);
        prop_assert_eq!(
            decode_json(bytes),
            decode_json_serde_in(bytes, None),
            "{}",
            text
        );
        let frame = Bytes::copy_from_slice(bytes);
        prop_assert_eq!(
            decode_json_frame(&frame),
            decode_json_serde(&frame),
            "{}",
            text
        );
        Ok(())
    }

    /// JSON whitespace, often none.
    fn ws() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => Just(String::new()),
            1 => "[ \t\r\n]{1,3}",
        ]
    }

    /// String tokens the scanner decodes: every escape, surrogate pairs, text beyond ASCII.
    fn good_escapes() -> impl Strategy<Value = String> {
        proptest::sample::select(vec![
            r#""\"\\\/\b\f\n\r\t""#,
            r#""UNIQ_KEY\u0001C0A80001\u0002WAIT\u0001true\u0002""#,
            r#""\u00e9\u4E2D\u0000\u007f""#,
            r#""\ud83d\ude00 \uD83D\uDE00""#,
            "\"é中😀\"",
        ])
        .prop_map(str::to_string)
    }

    /// String tokens the scanner refuses: lone surrogates, invalid escapes, a raw control.
    fn bad_escapes() -> impl Strategy<Value = String> {
        proptest::sample::select(vec![
            r#""x\ud800""#,
            r#""\udc00y""#,
            r#""\ud800\u0041""#,
            r#""\ud800\n""#,
            r#""\ud800\ud800\udc00""#,
            r#""\uDBFF\uE000""#,
            r#""\x""#,
            r#""\u12""#,
            r#""\u12G4""#,
            r#""\'""#,
            "\"raw\u{1}control\"",
        ])
        .prop_map(str::to_string)
    }

    /// Values the scanner reads in `extFields` (and mostly elsewhere).
    fn good_value() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => text().prop_map(|s| serde_json::to_string(&s).unwrap()),
            2 => good_escapes(),
            2 => any::<i32>().prop_map(|v| v.to_string()),
            1 => any::<i64>().prop_map(|v| v.to_string()),
            1 => any::<u64>().prop_map(|v| v.to_string()),
            1 => any::<u8>().prop_map(|v| v.to_string()),
            1 => proptest::sample::select(vec![
                "null", "true", "false", "0", "\"JAVA\"", "\" 12 \"", "2147483648",
                "-2147483649", "-9223372036854775808", "18446744073709551615",
            ])
            .prop_map(str::to_string),
        ]
    }

    /// Values the scanner refuses somewhere: fractions, out-of-range numbers, bad literals,
    /// lone surrogates and invalid escapes, nested values (skipped in unknown fields).
    fn bad_value() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => proptest::sample::select(vec![
                "-0", "01", "-01", "00", "-", "1.", "1e", "1e+5", "-1.5e-3", "2E2", "1.5",
                "9223372036854775808", "-9223372036854775809", "18446744073709551616",
                "tru", "nul", "falsey", "nulll", "\"", "'a'", "", "[]", "{}", "[1,]",
                "{\"a\":1,}", "[", "{\"a\"}", "[1,[2,{\"a\":[]}]]", "[\"\\x\"]",
                "{\"a\":{\"b\":\"\\ud800\"},\"c\":[1e400,\"\\u0041\"]}",
            ])
            .prop_map(str::to_string),
            4 => bad_escapes(),
            1 => (1usize..200)
                .prop_map(|depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth))),
        ]
    }

    /// Arrays and objects of any values, with whitespace, now and then a syntax error (a
    /// trailing comma, a missing colon): what an unknown field's value is skipped over.
    fn nested_value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![8 => good_value(), 1 => bad_value()];
        leaf.prop_recursive(4, 32, 6, |inner| {
            let sep = prop_oneof![10 => Just(","), 1 => Just(""), 1 => Just(",,")];
            let end = prop_oneof![10 => Just(""), 1 => Just(",")];
            let colon = prop_oneof![10 => Just(":"), 1 => Just(""), 1 => Just("::")];
            prop_oneof![
                (
                    proptest::collection::vec((ws(), inner.clone(), ws()), 0..5),
                    sep.clone(),
                    end.clone()
                )
                    .prop_map(|(items, sep, end)| {
                        let items: Vec<String> =
                            items.iter().map(|(a, v, b)| format!("{a}{v}{b}")).collect();
                        format!("[{}{end}]", items.join(sep))
                    }),
                (
                    proptest::collection::vec((ws(), text(), colon, ws(), inner), 0..5),
                    sep,
                    end,
                )
                    .prop_map(|(items, sep, end)| {
                        let items: Vec<String> = items
                            .iter()
                            .map(|(a, k, c, b, v)| {
                                format!("{a}{}{c}{b}{v}", serde_json::to_string(k).unwrap())
                            })
                            .collect();
                        format!("{{{}{end}}}", items.join(sep))
                    }),
            ]
        })
    }

    /// A value for the scanner, mostly one it reads, with whitespace around it.
    fn scanner_value() -> impl Strategy<Value = String> {
        let value = prop_oneof![20 => good_value(), 2 => bad_value()];
        (ws(), value, ws()).prop_map(|(a, v, b)| format!("{a}{v}{b}"))
    }

    /// A header: an object of the header's fields (keys escaped sometimes) with values
    /// mostly of their usual types, `extFields` objects with repeated keys, nulls and escapes,
    /// whitespace everywhere JSON allows it; now and then a value the scanner refuses.
    fn scanner_header() -> impl Strategy<Value = String> {
        let int = prop_oneof![
            8 => any::<i32>().prop_map(|v| v.to_string()),
            1 => good_value(),
        ];
        let language = prop_oneof![
            4 => proptest::sample::select(LanguageCode::ALL.to_vec())
                .prop_map(|l| format!("\"{}\"", l.name())),
            2 => any::<u8>().prop_map(|v| v.to_string()),
            1 => good_value(),
        ];
        let remark = prop_oneof![
            4 => text().prop_map(|s| serde_json::to_string(&s).unwrap()),
            2 => good_escapes(),
            1 => good_value(),
        ];
        let ext_key = prop_oneof![
            20 => proptest::sample::select(vec!["a", "b", "n", "\\u0061", "\\ud83d\\ude00", "k\\n"])
                .prop_map(str::to_string),
            20 => (0u8..40).prop_map(|i| format!("k{i}")),
            1 => Just("\\ud800".to_string()),
        ];
        let ext = prop_oneof![
            8 => proptest::collection::vec((ws(), ext_key.clone(), ws(), scanner_value()), 0..8),
            2 => proptest::collection::vec((ws(), ext_key, ws(), scanner_value()), 0..40),
        ]
        .prop_map(|entries| {
            let inner: Vec<String> = entries
                .iter()
                .map(|(a, k, b, v)| format!("{a}\"{k}\"{b}:{v}"))
                .collect();
            format!("{{{}}}", inner.join(","))
        });
        let ext = prop_oneof![10 => ext, 1 => Just("null".to_string())];
        let other = prop_oneof![
            2 => good_value(),
            1 => bad_value(),
            1 => json_value(),
            2 => nested_value(),
        ];
        let field = prop_oneof![
            4 => (
                proptest::sample::select(vec!["code", "version", "opaque", "flag", "\\u0063ode"]),
                int,
            ).boxed(),
            2 => (Just("language"), language).boxed(),
            2 => (Just("remark"), remark).boxed(),
            4 => (proptest::sample::select(vec!["extFields", "ext\\u0046ields"]), ext).boxed(),
            2 => (proptest::sample::select(vec!["other", "", "remarks"]), other).boxed(),
            1 => (
                proptest::sample::select(vec![
                    "code", "language", "remark", "extFields", "\\ud800",
                ]),
                bad_value(),
            ).boxed(),
        ];
        (
            ws(),
            proptest::collection::vec((ws(), field, ws(), ws()), 0..8),
            ws(),
        )
            .prop_map(|(before, fields, after)| {
                let inner: Vec<String> = fields
                    .iter()
                    .map(|(a, (k, v), b, c)| format!("{a}\"{k}\"{b}:{c}{v}{a}"))
                    .collect();
                format!("{before}{{{}}}{after}", inner.join(","))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// The scanner against the serde path it replaced: arbitrary headers, then every
        /// prefix of them (truncated input), then single bytes replaced.
        #[test]
        fn scanner_matches_the_serde_path(
            header in scanner_header(),
            edits in proptest::collection::vec((
                any::<prop::sample::Index>(),
                proptest::sample::select(vec![
                    b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b'0', b'-', b'.', b'e', b'u',
                    b' ', b'\n', 0x01, 0x7f, 0xc3, 0xff,
                ]),
            ), 1..4),
        ) {
            let bytes = header.as_bytes();
            assert_scanner_is_the_serde_path(bytes)?;
            for cut in 0..bytes.len() {
                assert_scanner_is_the_serde_path(&bytes[..cut])?;
            }
            let mut edited = bytes.to_vec();
            if !edited.is_empty() {
                for (at, byte) in edits {
                    let at = at.index(edited.len());
                    edited[at] = byte;
                    assert_scanner_is_the_serde_path(&edited)?;
                }
            }
        }

        /// Our own encoding of arbitrary commands, whitespace added between every token:
        /// the scanner reads it (no fallback) and the command comes back.
        #[test]
        fn scanner_reads_spaced_encodings(
            cmd in json_command(),
            spaces in proptest::collection::vec(ws(), 64),
        ) {
            let mut compact = Vec::new();
            encode_json(&cmd, &mut compact).unwrap();
            // Whitespace after each structural byte outside strings.
            let mut spaced = Vec::new();
            let mut in_string = false;
            let mut escaped = false;
            let mut n = 0;
            for &b in &compact {
                spaced.push(b);
                if in_string {
                    match (escaped, b) {
                        (true, _) => escaped = false,
                        (false, b'\\') => escaped = true,
                        (false, b'"') => in_string = false,
                        _ => {}
                    }
                } else if b == b'"' {
                    in_string = true;
                } else if matches!(b, b'{' | b'}' | b':' | b',') {
                    spaced.extend_from_slice(spaces[n % spaces.len()].as_bytes());
                    n += 1;
                }
            }
            prop_assert_eq!(scan::header(&spaced, None), Some(cmd.clone()));
            prop_assert_eq!(decode_json_frame(&Bytes::from(spaced)).unwrap(), cmd);
        }
    }

    /// Every escape JSON has, each decoded by the scanner itself (no fallback) as by the
    /// `Value` path and serde_json's own string decoding.
    #[test]
    fn scanner_decodes_each_escape() {
        for (escaped, decoded) in [
            (r#"\""#, "\""),
            (r#"\\"#, "\\"),
            (r#"\/"#, "/"),
            (r#"\b"#, "\u{8}"),
            (r#"\f"#, "\u{c}"),
            (r#"\n"#, "\n"),
            (r#"\r"#, "\r"),
            (r#"\t"#, "\t"),
            (r#"\u0001"#, "\u{1}"),
            (r#"\u0000"#, "\u{0}"),
            (r#"\u00e9"#, "é"),
            (r#"\u4E2D"#, "中"),
            (r#"\uffff"#, "\u{ffff}"),
            (r#"\ud83d\ude00"#, "😀"),
            (r#"\uDBFF\uDFFF"#, "\u{10ffff}"),
            (r#"a\u0001b\u0002"#, "a\u{1}b\u{2}"),
        ] {
            for header in [
                format!(r#"{{"extFields":{{"k":"{escaped}"}}}}"#),
                format!(r#"{{"extFields":{{"{escaped}":"v"}}}}"#),
                format!(r#"{{"remark":"{escaped}"}}"#),
            ] {
                let cmd = scan::header(header.as_bytes(), None)
                    .unwrap_or_else(|| panic!("the scanner refused {header}"));
                assert_eq!(
                    Ok(cmd.clone()),
                    decode_json_value(header.as_bytes()),
                    "{header}"
                );
                let value = cmd
                    .ext("k")
                    .or(cmd.ext_fields.get(decoded).map(|_| decoded))
                    .or(cmd.remark.as_deref());
                assert_eq!(value, Some(decoded), "{header}");
                let serde: String = serde_json::from_str(&format!("\"{escaped}\"")).unwrap();
                assert_eq!(serde, decoded);
            }
        }
    }

    /// Lone surrogates and invalid escapes are left to the `Value` path, which refuses them.
    #[test]
    fn scanner_leaves_bad_escapes_to_the_value_path() {
        for escaped in [
            r#"\ud800"#,
            r#"\udc00"#,
            r#"\ud800x"#,
            r#"\ud800\u0041"#,
            r#"\ud800\ud800"#,
            r#"\x"#,
            r#"\u12"#,
            r#"\u12g4"#,
            r#"\"#,
        ] {
            let header = format!(r#"{{"code":1,"extFields":{{"k":"{escaped}"}}}}"#);
            assert_eq!(scan::header(header.as_bytes(), None), None, "{header}");
            assert!(decode_json(header.as_bytes()).is_err(), "{header}");
        }
    }

    /// Cases the property test found when the scanner was broken on purpose: each decides as
    /// the serde path did.
    #[test]
    fn scanner_edge_cases_match_the_serde_path() {
        for (header, scanned) in [
            (&br#"{"version":-0}"#[..], false),
            (br#"{"extFields":{"a":"\ud800\u0041"}}"#, false),
            (br#"{"other":[[1,]]}"#, false),
            (
                br#"{"other":[[1],{"a":"\ud800","b":1e400}],"code":5}"#,
                true,
            ),
            (
                b"{\"other\":\"\xff\",\"extFields\":{\"a\":\"\xc3\xa9\"}}",
                true,
            ),
            (
                br#"{"\u0063ode":7,"extFields":{"a":-9223372036854775808}}"#,
                true,
            ),
        ] {
            let text = String::from_utf8_lossy(header);
            assert_eq!(scan::header(header, None).is_some(), scanned, "{text}");
            assert_eq!(scan::header(header, None), serde_fast(header), "{text}");
            assert_eq!(
                decode_json(header),
                decode_json_serde_in(header, None),
                "{text}"
            );
        }
    }

    /// A truncated or invalid header is an error, never a panic; the scanner refuses it.
    #[test]
    fn truncated_and_invalid_headers_are_errors() {
        let mut cmd = RemotingCommand::request(310)
            .with_ext("a", "group")
            .with_ext("e", "properties\u{1}x\u{2}");
        cmd.opaque = -7;
        let mut header = Vec::new();
        encode_json(&cmd, &mut header).unwrap();
        assert_eq!(decode_json(&header), Ok(cmd));
        for cut in 0..header.len() {
            assert_eq!(scan::header(&header[..cut], None), None, "cut at {cut}");
            assert!(decode_json(&header[..cut]).is_err(), "cut at {cut}");
        }
        for bad in [
            &b""[..],
            b"   ",
            b"{",
            b"{\"code\"",
            b"{\"code\":",
            b"{\"code\":1,}",
            b"{\"code\":1}}",
            b"{\"code\":1} x",
            b"{code:1}",
            b"{\"extFields\":{\"a\":\"b\",}}",
            b"{\"extFields\":{\"a\"}}",
            b"{\"extFields\":{\"a\":\"\xff\"}}",
            b"{\"remark\":\"\\",
            b"{\"extFields\":{\"a\":\"x\x01y\"}}",
            b"{\"extFields\":{\"a\":[1]",
            b"\xef\xbb\xbf{}",
        ] {
            assert_eq!(
                scan::header(bad, None),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
            assert!(
                decode_json(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// From a frame, unescaped `extFields` strings are slices of it; escaped ones are decoded
    /// into strings of exactly their length.
    #[test]
    fn scanner_shares_the_frame_and_sizes_unescaped_strings() {
        let header = br#"{ "code" : 310 , "extFields" : { "bb" : "BenchTopic" , "e" : "U\u0001K\u0002" , "n" : 12 } }"#;
        let frame = Bytes::copy_from_slice(header);
        let cmd = scan::header(&frame, Some(&frame)).expect("the scanner takes it");
        let inside = |s: &str| {
            let start = frame.as_ptr() as usize;
            let at = s.as_ptr() as usize;
            at >= start && at + s.len() <= start + frame.len()
        };
        let (key, value) = cmd.ext_fields.iter().find(|(k, _)| *k == "bb").unwrap();
        assert!(inside(key) && inside(value));
        assert_eq!(value, "BenchTopic");
        assert_eq!(cmd.ext("e"), Some("U\u{1}K\u{2}"));
        assert!(!inside(cmd.ext("e").unwrap()));
        assert_eq!(cmd.ext("n"), Some("12"));
        assert_eq!(
            scan::unescape(r"U\u0001K\u0002\ud83d\ude00").map(|s| (s.len(), s.capacity())),
            Some((8, 8))
        );
    }

    /// An unknown top-level field is skipped unread: what the general path refused inside it
    /// is dropped with it; inside a known field the same is still refused.
    #[test]
    fn an_unknown_field_is_skipped_unread() {
        for header in [
            &b"{\"code\":10,\"x\":\"\xff\xfe\"}"[..],
            br#"{"code":10,"x":"\ud800"}"#,
            br#"{"code":10,"x":1e400}"#,
        ] {
            let cmd = decode_json(header).expect("an unknown field is dropped");
            assert_eq!(cmd.code, 10);
            assert!(cmd.ext_fields.is_empty());
        }
        assert!(decode_json(br#"{"code":10,"extFields":{"a":1e400}}"#).is_err());
        assert!(decode_json(b"{\"code\":10,\"remark\":\"\xff\"}").is_err());
    }

    #[test]
    fn a_java_send_header_takes_the_fast_path() {
        let header = br#"{"code":310,"extFields":{"a":"ProducerGroup","b":"TopicTest","d":4,"k":false,"n":null},"flag":0,"language":"JAVA","opaque":42,"remark":null,"serializeTypeCurrentRPC":"JSON","version":479}"#;
        let cmd = scan::header(header, None).expect("the scanner takes it");
        assert_eq!(Ok(cmd.clone()), decode_json_value(header));
        assert_eq!(Some(cmd.clone()), serde_fast(header));
        assert_eq!(cmd.code, 310);
        assert_eq!(cmd.language, LanguageCode::Java);
        assert_eq!(cmd.ext("d"), Some("4"));
        assert_eq!(cmd.ext("k"), Some("false"));
        assert_eq!(cmd.ext("n"), None);
    }

    /// The size hint is at least the header's length when nothing needs escaping.
    #[test]
    fn size_hint_covers_unescaped_headers() {
        let mut cmd = RemotingCommand::request(i32::MIN)
            .with_remark("remark")
            .with_ext("a", "ProducerGroup")
            .with_ext("topic", "TopicTest");
        cmd.version = i32::MIN;
        cmd.opaque = i32::MIN;
        cmd.flag = i32::MIN;
        cmd.language = LanguageCode::NodeJs;
        for serialize_type in [SerializeType::Json, SerializeType::RocketMq] {
            cmd.serialize_type = serialize_type;
            if serialize_type == SerializeType::RocketMq {
                cmd.code = i32::from(i16::MIN);
                cmd.version = i32::from(i16::MIN);
            }
            let mut out = Vec::new();
            match serialize_type {
                SerializeType::Json => encode_json(&cmd, &mut out).unwrap(),
                SerializeType::RocketMq => encode_binary(&cmd, &mut out).unwrap(),
            }
            assert!(
                size_hint(&cmd) >= out.len(),
                "{serialize_type}: {}",
                out.len()
            );
        }
    }

    /// Decoding from a frame keeps unescaped strings as slices of it, escaped ones decoded;
    /// a repeated key and a null behave as in the copying decoder.
    #[test]
    fn frame_decoding_matches_copying_decoding() {
        let header: &[u8] = br#"{"code":310,"extFields":{"a":"G","b":"T\u0041","b":"T\nB","n":null,"a":null,"k":7},"opaque":1}"#;
        let frame = Bytes::copy_from_slice(header);
        let cmd = decode_json_frame(&frame).unwrap();
        assert_eq!(Ok(cmd.clone()), decode_json(header));
        assert_eq!(cmd.ext("a"), None);
        assert_eq!(cmd.ext("b"), Some("T\nB"));
        assert_eq!(cmd.ext("k"), Some("7"));
        assert_eq!(cmd.ext_fields.len(), 2);
        let mut binary = Vec::new();
        let cmd = RemotingCommand::request(10)
            .with_ext("a", "G")
            .with_ext("bad", "x")
            .with_serialize_type(SerializeType::RocketMq);
        encode_binary(&cmd, &mut binary).unwrap();
        // Invalid UTF-8 in a value: replaced, as Java does, in both decoders.
        let at = binary.iter().rposition(|b| *b == b'x').unwrap();
        binary[at] = 0xff;
        let frame = Bytes::from(binary.clone());
        assert_eq!(decode_binary_frame(&frame), decode_binary(&binary));
        assert_eq!(decode_binary(&binary).unwrap().ext("bad"), Some("\u{fffd}"));
    }

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
