//! `application/x-www-form-urlencoded` (what HTML forms POST and what a GET form puts in the
//! query), parsed strictly: a bad `%` escape or text that is not UTF-8 is an error, not a guess.

use std::collections::BTreeMap;

use axum::http::{header, HeaderMap};

use super::PageError;

/// The fields of a form body or query string; a repeated name keeps its last value.
pub(crate) fn parse(text: &str) -> Result<BTreeMap<String, String>, String> {
    Ok(parse_pairs(text)?.into_iter().collect())
}

/// Every (name, value) of a form body or query string in order, repeated names included (a
/// form's checkboxes of one name).
pub(crate) fn parse_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        out.push((decode(name)?, decode(value)?));
    }
    Ok(out)
}

/// One percent-decoded component (`+` is a space).
fn decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent escape in {text:?}"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} does not decode to UTF-8 text"))
}

/// A POSTed form: 415 unless the body is `application/x-www-form-urlencoded`, 400 if it does
/// not parse.
pub(crate) fn posted(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<BTreeMap<String, String>, PageError> {
    Ok(posted_pairs(headers, body)?.into_iter().collect())
}

/// A POSTed form's fields in order, repeated names included; refused as [`posted`] refuses.
pub(crate) fn posted_pairs(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<(String, String)>, PageError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(PageError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Not a form",
            format!(
                "This address takes an HTML form (application/x-www-form-urlencoded), not {:?}.",
                content_type
            ),
        ));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| PageError::bad_request("The form is not UTF-8 text."))?;
    parse_pairs(text).map_err(|e| PageError::bad_request(format!("The form does not parse: {e}.")))
}

/// The query string of a GET (none is an empty form); 400 if it does not parse.
pub(crate) fn query(raw: Option<&str>) -> Result<BTreeMap<String, String>, PageError> {
    parse(raw.unwrap_or(""))
        .map_err(|e| PageError::bad_request(format!("The query string does not parse: {e}.")))
}

/// A required, non-empty (after trimming) field.
pub(crate) fn required<'a>(
    form: &'a BTreeMap<String, String>,
    name: &str,
) -> Result<&'a str, PageError> {
    match form.get(name).map(|v| v.trim()) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(PageError::bad_request(format!(
            "The form lacks the field {name:?}."
        ))),
    }
}

/// A field that is absent, empty or whitespace reads as `None`.
pub(crate) fn optional<'a>(form: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    form.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// `text` for a URL path segment or a query value: everything but unreserved characters
/// percent-encoded.
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_browsers_send() {
        let f = parse("topic=Orders+EU&queues=8&message_type=&x=%25RETRY%25g").expect("parses");
        assert_eq!(f["topic"], "Orders EU");
        assert_eq!(f["queues"], "8");
        assert_eq!(f["message_type"], "");
        assert_eq!(f["x"], "%RETRY%g");
        assert!(parse("topic=%zz").is_err());
        assert!(parse("topic=%4").is_err());
        assert!(parse("topic=%ff").is_err(), "not UTF-8");
        assert_eq!(parse("").expect("empty").len(), 0);
        assert_eq!(parse("a").expect("bare name")["a"], "");
        assert_eq!(parse("id=1&id=2").expect("repeated")["id"], "2");
        assert_eq!(
            parse_pairs("id=1&all&id=2").expect("pairs"),
            [
                ("id".to_string(), "1".to_string()),
                ("all".to_string(), String::new()),
                ("id".to_string(), "2".to_string())
            ]
        );
    }

    #[test]
    fn encodes_what_it_decodes() {
        for s in ["%RETRY%group", "a b/c?d&e=f", "ünï"] {
            assert_eq!(decode(&encode(s)).expect("round trip"), s);
        }
    }
}
