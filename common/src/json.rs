//! RocketMQ's JSON dialect.
//!
//! The Java NameServer and broker serialize with fastjson, which writes map keys that are numbers
//! without quotes (`{"brokerAddrs":{0:"127.0.0.1:10911"}}`) unless the peer asked for standard JSON.
//! We accept both when parsing ([`normalize`]) and can produce the fastjson form for old clients
//! ([`unquote_numeric_keys_of`]).

use std::borrow::Cow;

/// Quotes bare numeric object keys so that `serde_json` can parse fastjson output. Standard JSON
/// passes through unchanged (and without copying).
pub fn normalize(input: &str) -> Cow<'_, str> {
    let bytes = input.as_bytes();
    let mut out: Option<String> = None;
    let mut copied_to = 0;
    let mut in_string = false;
    let mut escaped = false;
    // The last significant character outside strings; a key can only follow `{` or `,`.
    let mut last_significant = b' ';
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
                last_significant = b'"';
            }
            i += 1;
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                i += 1;
            }
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'-' | b'0'..=b'9' if matches!(last_significant, b'{' | b',') => {
                // A number where a key belongs: find its end and check that a colon follows.
                let start = i;
                let mut end = i + 1;
                while end < bytes.len() && bytes[end].is_ascii_digit() {
                    end += 1;
                }
                let mut after = end;
                while after < bytes.len() && bytes[after].is_ascii_whitespace() {
                    after += 1;
                }
                if after < bytes.len() && bytes[after] == b':' {
                    let buf = out.get_or_insert_with(|| String::with_capacity(input.len() + 16));
                    buf.push_str(&input[copied_to..start]);
                    buf.push('"');
                    buf.push_str(&input[start..end]);
                    buf.push('"');
                    copied_to = end;
                }
                last_significant = b'0';
                i = end;
            }
            other => {
                last_significant = other;
                i += 1;
            }
        }
    }
    match out {
        Some(mut buf) => {
            buf.push_str(&input[copied_to..]);
            Cow::Owned(buf)
        }
        None => Cow::Borrowed(input),
    }
}

/// Rewrites the object that follows every `"field":` key so that its quoted numeric keys lose
/// their quotes, as fastjson writes a `Map<Long, String>` (`"brokerAddrs":{"0":"a"}` becomes
/// `"brokerAddrs":{0:"a"}`). Only keys made of digits are touched.
pub fn unquote_numeric_keys_of(json: &str, field: &str) -> String {
    let needle = format!("\"{field}\":{{");
    let mut out = String::with_capacity(json.len());
    let mut rest = json;
    while let Some(pos) = rest.find(&needle) {
        let body_start = pos + needle.len();
        out.push_str(&rest[..body_start]);
        rest = &rest[body_start..];
        // Walk the object until its closing brace, unquoting `"123":` keys at depth 0.
        let bytes = rest.as_bytes();
        let mut i = 0;
        let mut depth = 0usize;
        let mut expect_key = true;
        let mut copied_to = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'"' => {
                    let start = i;
                    i += 1;
                    while i < bytes.len() && bytes[i] != b'"' {
                        if bytes[i] == b'\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                    let end = i.min(bytes.len());
                    let inner = &rest[start + 1..end];
                    if depth == 0
                        && expect_key
                        && !inner.is_empty()
                        && inner.bytes().all(|c| c.is_ascii_digit())
                        && bytes.get(end + 1) == Some(&b':')
                    {
                        out.push_str(&rest[copied_to..start]);
                        out.push_str(inner);
                        copied_to = end + 1;
                    }
                    expect_key = false;
                    i = end + 1;
                }
                b'{' | b'[' => {
                    depth += 1;
                    i += 1;
                }
                b'}' | b']' if depth > 0 => {
                    depth -= 1;
                    i += 1;
                }
                b'}' => break,
                b',' => {
                    if depth == 0 {
                        expect_key = true;
                    }
                    i += 1;
                }
                _ => i += 1,
            }
        }
        out.push_str(&rest[copied_to..i.min(rest.len())]);
        rest = &rest[i.min(rest.len())..];
    }
    out.push_str(rest);
    out
}

/// A double as Java's `Double.toString` (and fastjson) writes it: `0.0`, `12.5`, `1.0E-4`,
/// `1.2345678E7` (scientific below 10^-3 and from 10^7), `null` for NaN and the infinities (as
/// fastjson writes them).
pub fn java_double(v: f64) -> String {
    if !v.is_finite() {
        return "null".to_string();
    }
    let abs = v.abs();
    if v == 0.0 || (1e-3..1e7).contains(&abs) {
        // Rust's shortest round-trip digits, with at least one decimal as Java writes them.
        let s = format!("{v}");
        return if s.contains('.') { s } else { s + ".0" };
    }
    // `{:e}` gives the shortest digits as `d.ddde-x` (or `de-x`): Java writes `d.dddE-x`.
    let s = format!("{v:e}");
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let mantissa = if mantissa.contains('.') {
        mantissa.to_string()
    } else {
        format!("{mantissa}.0")
    };
    format!("{mantissa}E{exp}")
}

/// A string as a JSON string literal.
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// A `MessageQueue` as fastjson writes it, fields in alphabetical order:
/// `{"brokerName":"b","queueId":0,"topic":"T"}`.
pub fn message_queue_json(mq: &crate::protocol::MessageQueue) -> String {
    format!(
        "{{\"brokerName\":{},\"queueId\":{},\"topic\":{}}}",
        quoted(&mq.broker_name),
        mq.queue_id,
        quoted(&mq.topic)
    )
}

/// A `Map<MessageQueue, V>` as fastjson writes it: an object whose keys are the queues'
/// objects (`{{"brokerName":"b","queueId":0,"topic":"T"}:5,...}`), which Java clients parse.
/// `entries` pairs each queue with its value's JSON text. [`object_keys_as_pairs`] reads it back.
pub fn message_queue_map<'a>(
    entries: impl IntoIterator<Item = (&'a crate::protocol::MessageQueue, String)>,
) -> String {
    let parts: Vec<String> = entries
        .into_iter()
        .map(|(mq, value)| format!("{}:{value}", message_queue_json(mq)))
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// Rewrites every object whose keys are objects (fastjson's maps keyed by `MessageQueue`,
/// `{{"queueId":0}:5,{"queueId":1}:7}`) into a standard JSON array of `[key, value]` pairs
/// (`[[{"queueId":0},5],[{"queueId":1},7]]`), so that `serde_json` can read it. Anything else,
/// strings included, is copied unchanged; an empty map stays `{}`. Malformed input comes out
/// malformed (the JSON parser then says where).
pub fn object_keys_as_pairs(input: &str) -> Cow<'_, str> {
    #[derive(Clone, Copy)]
    enum Frame {
        Object,
        /// An object keyed by objects; `in_value` once its current key's `:` has passed.
        Pairs {
            in_value: bool,
        },
        Array,
    }
    let bytes = input.as_bytes();
    let next_significant = |from: usize| {
        bytes[from..]
            .iter()
            .copied()
            .find(|b| !b.is_ascii_whitespace())
    };
    if !input.contains('{') {
        return Cow::Borrowed(input);
    }
    let mut out = String::with_capacity(input.len() + 16);
    let mut stack: Vec<Frame> = Vec::new();
    let mut rewrote = false;
    let mut i = 0;
    let mut copied_to = 0;
    // Replaces input[i..i + len] with `with` in the output.
    let replace = |out: &mut String, copied_to: &mut usize, at: usize, len: usize, with: &str| {
        out.push_str(&input[*copied_to..at]);
        out.push_str(with);
        *copied_to = at + len;
    };
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                continue;
            }
            b'{' => {
                let key_of_pairs = matches!(stack.last(), Some(Frame::Pairs { in_value: false }));
                let pairs = next_significant(i + 1) == Some(b'{');
                let with = match (key_of_pairs, pairs) {
                    (true, true) => "[[",
                    (true, false) => "[{",
                    (false, true) => "[",
                    (false, false) => "{",
                };
                if with != "{" {
                    replace(&mut out, &mut copied_to, i, 1, with);
                    rewrote = true;
                }
                stack.push(if pairs {
                    Frame::Pairs { in_value: false }
                } else {
                    Frame::Object
                });
            }
            b'}' => {
                if let Some(Frame::Pairs { .. }) = stack.pop() {
                    // Closes the last pair and the array.
                    replace(&mut out, &mut copied_to, i, 1, "]]");
                }
            }
            b'[' => stack.push(Frame::Array),
            b']' => {
                stack.pop();
            }
            b':' => {
                if let Some(Frame::Pairs { in_value }) = stack.last_mut() {
                    *in_value = true;
                    replace(&mut out, &mut copied_to, i, 1, ",");
                }
            }
            b',' => {
                if let Some(Frame::Pairs { in_value }) = stack.last_mut() {
                    *in_value = false;
                    replace(&mut out, &mut copied_to, i, 1, "],");
                }
            }
            _ => {}
        }
        i += 1;
    }
    if !rewrote {
        return Cow::Borrowed(input);
    }
    out.push_str(&input[copied_to.min(input.len())..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_bare_numeric_keys() {
        let s = r#"{"brokerAddrs":{0:"a:1", 1 :"b:2"},"n":5,"arr":[1,2],"s":"{0:1}"}"#;
        let n = normalize(s);
        assert_eq!(
            n,
            r#"{"brokerAddrs":{"0":"a:1", "1" :"b:2"},"n":5,"arr":[1,2],"s":"{0:1}"}"#
        );
        let v: serde_json::Value = serde_json::from_str(&n).expect("valid json");
        assert_eq!(v["brokerAddrs"]["1"], "b:2");
        assert!(matches!(normalize(r#"{"a":1}"#), Cow::Borrowed(_)));
    }

    #[test]
    fn unquotes_only_the_named_map() {
        let s = r#"{"x":{"1":"y"},"brokerAddrs":{"0":"a:1","12":"b:2"},"brokerName":"b"}"#;
        let u = unquote_numeric_keys_of(s, "brokerAddrs");
        assert_eq!(
            u,
            r#"{"x":{"1":"y"},"brokerAddrs":{0:"a:1",12:"b:2"},"brokerName":"b"}"#
        );
        assert_eq!(normalize(&u), s);
    }

    #[test]
    fn java_doubles() {
        for (v, text) in [
            (0.0, "0.0"),
            (1.5, "1.5"),
            (100.0, "100.0"),
            (0.016666666666666666, "0.016666666666666666"),
            (0.001, "0.001"),
            (0.0001, "1.0E-4"),
            (1.25e-5, "1.25E-5"),
            (9999999.0, "9999999.0"),
            (1e7, "1.0E7"),
            (12345678.9, "1.23456789E7"),
            (-2.5, "-2.5"),
            (f64::NAN, "null"),
        ] {
            assert_eq!(java_double(v), text, "{v}");
        }
    }

    #[test]
    fn queue_keyed_maps_round_trip() {
        use crate::protocol::MessageQueue;
        let q = |id| MessageQueue {
            topic: "T\"x".to_string(),
            broker_name: "b".to_string(),
            queue_id: id,
        };
        let (q0, q1) = (q(0), q(1));
        let text = message_queue_map([(&q0, "5".to_string()), (&q1, "{\"a\":{}}".to_string())]);
        assert_eq!(
            text,
            r#"{{"brokerName":"b","queueId":0,"topic":"T\"x"}:5,{"brokerName":"b","queueId":1,"topic":"T\"x"}:{"a":{}}}"#
        );
        let wrapped = format!("{{\"offsetTable\":{text},\"n\":[1,{{}}],\"s\":\"{{{{:\"}}");
        let pairs = object_keys_as_pairs(&wrapped);
        assert_eq!(
            pairs,
            r#"{"offsetTable":[[{"brokerName":"b","queueId":0,"topic":"T\"x"},5],[{"brokerName":"b","queueId":1,"topic":"T\"x"},{"a":{}}]],"n":[1,{}],"s":"{{:"}"#
        );
        let v: serde_json::Value = serde_json::from_str(&pairs).expect("valid json");
        assert_eq!(v["offsetTable"][1][0]["queueId"], 1);
        assert_eq!(v["offsetTable"][1][1]["a"], serde_json::json!({}));
        // Standard JSON and empty maps pass through untouched.
        for plain in [r#"{"offsetTable":{},"x":{"y":[{}]}}"#, "[]", "5"] {
            assert!(
                matches!(object_keys_as_pairs(plain), Cow::Borrowed(_)),
                "{plain}"
            );
        }
        // Whitespace as a pretty printer writes it.
        let pretty = "{\"t\":{ {\"queueId\":0} : 1 , {\"queueId\":1}:2 }}";
        let v: serde_json::Value =
            serde_json::from_str(&object_keys_as_pairs(pretty)).expect("valid json");
        assert_eq!(
            v["t"],
            serde_json::json!([[{"queueId": 0}, 1], [{"queueId": 1}, 2]])
        );
    }
}
