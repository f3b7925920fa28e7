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
}
