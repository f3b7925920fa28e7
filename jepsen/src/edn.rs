//! A small EDN reader: enough of the format to read Jepsen and Knossos histories.
//!
//! Reads nil, booleans, integers (with an optional `N`), floats (with an optional `M`), ratios
//! (as floats), strings with escapes, characters, keywords, symbols, lists, vectors, maps and sets;
//! skips commas (whitespace in EDN), `;` comments, `#_` discarded forms and `^` metadata; and reads
//! a tagged form (`#inst "..."`, or a record literal such as `#jepsen.history.Op{...}`) as the
//! form it tags. Everything lands in a [`Value`]: keywords and symbols lose their colon, sets
//! become sorted lists, map keys become strings.

use std::collections::BTreeMap;

use crate::value::{Float, Value};

/// Forms nested deeper than this are refused, so a hostile file cannot overflow the stack.
const MAX_DEPTH: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("EDN, line {line}: {message}")]
pub struct EdnError {
    pub line: usize,
    pub message: String,
}

/// Reads every top-level form of `text`.
pub fn read_all(text: &str) -> Result<Vec<Value>, EdnError> {
    let mut reader = Reader::new(text);
    let mut forms = Vec::new();
    while let Some(form) = reader.next_form(0)? {
        forms.push(form);
    }
    Ok(forms)
}

/// Reads every top-level form of `text` with the line on which each starts (1-based).
pub fn read_all_with_lines(text: &str) -> Result<Vec<(usize, Value)>, EdnError> {
    let mut reader = Reader::new(text);
    let mut forms = Vec::new();
    loop {
        reader.skip_whitespace_and_comments();
        let line = reader.line;
        match reader.next_form(0)? {
            Some(form) => forms.push((line, form)),
            None => return Ok(forms),
        }
    }
}

/// Reads a history's forms with their lines: the items of a top-level vector or list when the
/// text is one, else every top-level form. Keeps each op's own line for error messages.
pub fn read_history_forms(text: &str) -> Result<Vec<(usize, Value)>, EdnError> {
    let mut reader = Reader::new(text);
    reader.skip_whitespace_and_comments();
    let close = match reader.peek() {
        Some(b'[') => b']',
        Some(b'(') => b')',
        _ => return read_all_with_lines(text),
    };
    reader.bump();
    let mut forms = Vec::new();
    loop {
        reader.skip_whitespace_and_comments();
        let line = reader.line;
        match reader.next_form_or_close(1, Some(close))? {
            Item::Form(form) => forms.push((line, form)),
            Item::Close => break,
            Item::End => return Err(reader.error("end of input inside the history")),
        }
    }
    if reader.next_form(0)?.is_some() {
        return Err(reader.error("more forms after the history's closing bracket"));
    }
    Ok(forms)
}

/// Reads exactly one form (surrounding whitespace and comments allowed).
pub fn read_one(text: &str) -> Result<Value, EdnError> {
    let mut reader = Reader::new(text);
    let Some(form) = reader.next_form(0)? else {
        return Err(reader.error("expected a form, found the end of the input"));
    };
    if reader.next_form(0)?.is_some() {
        return Err(reader.error("expected one form, found more"));
    }
    Ok(form)
}

struct Reader<'a> {
    bytes: &'a [u8],
    text: &'a str,
    pos: usize,
    line: usize,
}

/// What closes a collection, or `None` at the top level.
type Closer = Option<u8>;

impl<'a> Reader<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            bytes: text.as_bytes(),
            text,
            pos: 0,
            line: 1,
        }
    }

    fn error(&self, message: impl Into<String>) -> EdnError {
        EdnError {
            line: self.line,
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.pos += 1;
        if byte == b'\n' {
            self.line += 1;
        }
        Some(byte)
    }

    fn skip_whitespace_and_comments(&mut self) {
        while let Some(byte) = self.peek() {
            if byte.is_ascii_whitespace() || byte == b',' {
                self.bump();
            } else if byte == b';' {
                while let Some(byte) = self.bump() {
                    if byte == b'\n' {
                        break;
                    }
                }
            } else {
                break;
            }
        }
    }

    /// The next form at this level, or `None` at the end of the input.
    fn next_form(&mut self, depth: usize) -> Result<Option<Value>, EdnError> {
        match self.next_form_or_close(depth, None)? {
            Item::Form(form) => Ok(Some(form)),
            Item::End => Ok(None),
            Item::Close => Err(self.error("unexpected closing delimiter")),
        }
    }

    fn next_form_or_close(&mut self, depth: usize, closer: Closer) -> Result<Item, EdnError> {
        if depth > MAX_DEPTH {
            return Err(self.error(format!("forms nested deeper than {MAX_DEPTH}")));
        }
        loop {
            self.skip_whitespace_and_comments();
            let Some(byte) = self.peek() else {
                return match closer {
                    None => Ok(Item::End),
                    Some(close) => Err(self.error(format!(
                        "end of input inside a collection (expected '{}')",
                        close as char
                    ))),
                };
            };
            match byte {
                b')' | b']' | b'}' => {
                    if Some(byte) == closer {
                        self.bump();
                        return Ok(Item::Close);
                    }
                    return Err(self.error(format!("unexpected '{}'", byte as char)));
                }
                b'(' | b'[' => {
                    self.bump();
                    let close = if byte == b'(' { b')' } else { b']' };
                    return Ok(Item::Form(Value::List(self.read_seq(depth, close)?)));
                }
                b'{' => {
                    self.bump();
                    return Ok(Item::Form(self.read_map(depth)?));
                }
                b'"' => {
                    self.bump();
                    return Ok(Item::Form(Value::Str(self.read_string()?)));
                }
                b'\\' => {
                    self.bump();
                    return Ok(Item::Form(Value::Str(self.read_char()?)));
                }
                b'^' => {
                    // Metadata: read and drop the map (or keyword/symbol), keep the form after it.
                    self.bump();
                    self.expect_form(depth + 1)?;
                    continue;
                }
                b'#' => {
                    self.bump();
                    match self.read_dispatch(depth)? {
                        Some(form) => return Ok(Item::Form(form)),
                        // `#_`: the form after it is discarded.
                        None => continue,
                    }
                }
                _ => {
                    let token = self.read_token();
                    if token.is_empty() {
                        return Err(self.error(format!("unexpected character '{}'", byte as char)));
                    }
                    let token = token.to_string();
                    return Ok(Item::Form(self.atom(&token)?));
                }
            }
        }
    }

    /// What follows a '#': a set, a discarded form (`#_`: `None`), `##Inf`, `##-Inf`,
    /// `##NaN`, or a tagged form (the tag dropped).
    fn read_dispatch(&mut self, depth: usize) -> Result<Option<Value>, EdnError> {
        match self.peek() {
            Some(b'{') => {
                self.bump();
                let mut items = self.read_seq(depth, b'}')?;
                items.sort();
                items.dedup();
                Ok(Some(Value::List(items)))
            }
            Some(b'_') => {
                self.bump();
                self.expect_form(depth + 1)?;
                Ok(None)
            }
            Some(b'#') => {
                // ##Inf, ##-Inf, ##NaN
                self.bump();
                let token = self.read_token();
                let x = match token {
                    "Inf" => f64::INFINITY,
                    "-Inf" => f64::NEG_INFINITY,
                    "NaN" => f64::NAN,
                    other => return Err(self.error(format!("unknown ##{other}"))),
                };
                Ok(Some(Value::Float(Float(x))))
            }
            _ => {
                // A tag: `#inst "…"`, `#uuid "…"` or a record `#a.b.Rec{…}`.
                let tag = self.read_token();
                if tag.is_empty() {
                    return Err(self.error("'#' followed by nothing readable"));
                }
                Ok(Some(self.expect_form(depth + 1)?))
            }
        }
    }

    fn expect_form(&mut self, depth: usize) -> Result<Value, EdnError> {
        match self.next_form_or_close(depth, None)? {
            Item::Form(form) => Ok(form),
            _ => Err(self.error("expected a form")),
        }
    }

    fn read_seq(&mut self, depth: usize, close: u8) -> Result<Vec<Value>, EdnError> {
        let mut items = Vec::new();
        loop {
            match self.next_form_or_close(depth + 1, Some(close))? {
                Item::Form(form) => items.push(form),
                Item::Close => return Ok(items),
                Item::End => return Err(self.error("end of input inside a collection")),
            }
        }
    }

    fn read_map(&mut self, depth: usize) -> Result<Value, EdnError> {
        let items = self.read_seq(depth, b'}')?;
        if items.len() % 2 != 0 {
            return Err(self.error("a map with an odd number of forms"));
        }
        let mut map = BTreeMap::new();
        let mut iter = items.into_iter();
        while let (Some(key), Some(value)) = (iter.next(), iter.next()) {
            map.insert(key.to_key_string(), value);
        }
        Ok(Value::Map(map))
    }

    fn read_string(&mut self) -> Result<String, EdnError> {
        let mut out = String::new();
        loop {
            let start = self.pos;
            // Copy the run of plain characters in one go (keeps UTF-8 intact).
            while let Some(byte) = self.peek() {
                if byte == b'"' || byte == b'\\' {
                    break;
                }
                self.bump();
            }
            out.push_str(&self.text[start..self.pos]);
            match self.bump() {
                None => return Err(self.error("end of input inside a string")),
                Some(b'"') => return Ok(out),
                Some(_) => {
                    let escaped = match self.bump() {
                        Some(b'n') => '\n',
                        Some(b't') => '\t',
                        Some(b'r') => '\r',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'u') => {
                            let hex = self.take_ascii(4)?;
                            u32::from_str_radix(&hex, 16)
                                .ok()
                                .and_then(char::from_u32)
                                .ok_or_else(|| self.error(format!("bad escape \\u{hex}")))?
                        }
                        Some(other) => {
                            return Err(self.error(format!("bad escape \\{}", other as char)))
                        }
                        None => return Err(self.error("end of input inside a string")),
                    };
                    out.push(escaped);
                }
            }
        }
    }

    fn take_ascii(&mut self, count: usize) -> Result<String, EdnError> {
        let mut out = String::new();
        for _ in 0..count {
            match self.bump() {
                Some(byte) if byte.is_ascii() => out.push(byte as char),
                _ => return Err(self.error("truncated escape")),
            }
        }
        Ok(out)
    }

    fn read_char(&mut self) -> Result<String, EdnError> {
        // `\a`, `\newline`, `\space`, `\tab`, `\uXXXX`, or any single (possibly multi-byte) char.
        let start = self.pos;
        let Some(first) = self.text[start..].chars().next() else {
            return Err(self.error("end of input after '\\'"));
        };
        for _ in 0..first.len_utf8() {
            self.bump();
        }
        if first.is_ascii_alphabetic() {
            let rest = self.read_token();
            let name = format!("{first}{rest}");
            return Ok(match name.as_str() {
                "newline" => "\n".into(),
                "space" => " ".into(),
                "tab" => "\t".into(),
                "return" => "\r".into(),
                "formfeed" => "\u{c}".into(),
                "backspace" => "\u{8}".into(),
                _ if name.len() == 5 && name.starts_with('u') => {
                    u32::from_str_radix(&name[1..], 16)
                        .ok()
                        .and_then(char::from_u32)
                        .map(String::from)
                        .ok_or_else(|| self.error(format!("bad character \\{name}")))?
                }
                _ if name.chars().count() == 1 => name,
                _ => return Err(self.error(format!("unknown character \\{name}"))),
            });
        }
        Ok(first.to_string())
    }

    /// A run of symbol/number/keyword characters.
    fn read_token(&mut self) -> &'a str {
        let start = self.pos;
        while let Some(byte) = self.peek() {
            if byte.is_ascii_whitespace()
                || matches!(
                    byte,
                    b',' | b'(' | b')' | b'[' | b']' | b'{' | b'}' | b'"' | b';' | b'\\'
                )
            {
                break;
            }
            self.bump();
        }
        &self.text[start..self.pos]
    }

    fn atom(&self, token: &str) -> Result<Value, EdnError> {
        match token {
            "nil" => return Ok(Value::Nil),
            "true" => return Ok(Value::Bool(true)),
            "false" => return Ok(Value::Bool(false)),
            _ => {}
        }
        if let Some(keyword) = token.strip_prefix(':') {
            let keyword = keyword.strip_prefix(':').unwrap_or(keyword);
            if keyword.is_empty() {
                return Err(self.error("an empty keyword"));
            }
            return Ok(Value::Str(keyword.to_string()));
        }
        let bytes = token.as_bytes();
        let starts_numeric = bytes[0].is_ascii_digit()
            || (bytes.len() > 1
                && (bytes[0] == b'-' || bytes[0] == b'+')
                && bytes[1].is_ascii_digit());
        if starts_numeric {
            return self.number(token);
        }
        Ok(Value::Str(token.to_string()))
    }

    fn number(&self, token: &str) -> Result<Value, EdnError> {
        let bad = || self.error(format!("bad number {token:?}"));
        if let Some(int) = token.strip_suffix('N') {
            return int.parse::<i64>().map(Value::Int).map_err(|_| bad());
        }
        if let Some((numerator, denominator)) = token.split_once('/') {
            let n: f64 = numerator.parse().map_err(|_| bad())?;
            let d: f64 = denominator.parse().map_err(|_| bad())?;
            return Ok(Value::Float(Float(n / d)));
        }
        if let Ok(int) = token.parse::<i64>() {
            return Ok(Value::Int(int));
        }
        let float = token.strip_suffix('M').unwrap_or(token);
        float
            .parse::<f64>()
            .map(|x| Value::Float(Float(x)))
            .map_err(|_| bad())
    }
}

enum Item {
    Form(Value),
    Close,
    End,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, Value)]) -> Value {
        Value::Map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn reads_a_knossos_op_map() {
        let form = read_one(r#"{:process 22  :type :invoke, :f :cas, :value [3 0], :key "k"}"#)
            .expect("valid EDN");
        assert_eq!(
            form,
            map(&[
                ("process", Value::Int(22)),
                ("type", Value::Str("invoke".into())),
                ("f", Value::Str("cas".into())),
                ("value", Value::List(vec![Value::Int(3), Value::Int(0)])),
                ("key", Value::Str("k".into())),
            ])
        );
    }

    #[test]
    fn reads_atoms() {
        let forms = read_all(
            r#"nil true false -12 7N 2.5 1.5M 1/4 "a\"b\n\u0041" \x \newline :ns/kw ::auto sym ##Inf"#,
        )
        .expect("valid EDN");
        assert_eq!(
            forms,
            vec![
                Value::Nil,
                Value::Bool(true),
                Value::Bool(false),
                Value::Int(-12),
                Value::Int(7),
                Value::Float(Float(2.5)),
                Value::Float(Float(1.5)),
                Value::Float(Float(0.25)),
                Value::Str("a\"b\nA".into()),
                Value::Str("x".into()),
                Value::Str("\n".into()),
                Value::Str("ns/kw".into()),
                Value::Str("auto".into()),
                Value::Str("sym".into()),
                Value::Float(Float(f64::INFINITY)),
            ]
        );
    }

    #[test]
    fn skips_comments_discards_metadata_and_tags() {
        let forms = read_all(
            "; a comment\n(1 #_ 2 3) ^{:meta 1} [4] #{3 1 3} #inst \"2015-01-01\" #jepsen.history.Op{:index 0}",
        )
        .expect("valid EDN");
        assert_eq!(
            forms,
            vec![
                Value::List(vec![Value::Int(1), Value::Int(3)]),
                Value::List(vec![Value::Int(4)]),
                Value::List(vec![Value::Int(1), Value::Int(3)]),
                Value::Str("2015-01-01".into()),
                map(&[("index", Value::Int(0))]),
            ]
        );
    }

    #[test]
    fn reports_lines_of_errors_and_forms() {
        let err = read_all("[1 2\n 3").expect_err("unterminated vector");
        assert_eq!(err.line, 2);
        let err = read_all("{:a 1\n:b}").expect_err("odd map");
        assert!(err.message.contains("odd"), "{err}");
        let err = read_all("\n\n]").expect_err("stray closer");
        assert_eq!(err.line, 3);
        let forms = read_all_with_lines("{:a 1}\n\n{:b 2}\n").expect("valid EDN");
        assert_eq!(
            forms.iter().map(|(line, _)| *line).collect::<Vec<_>>(),
            vec![1, 3]
        );
    }

    #[test]
    fn refuses_absurd_nesting() {
        let deep = "[".repeat(10_000);
        assert!(read_all(&deep).is_err());
    }

    #[test]
    fn keeps_utf8_in_strings() {
        assert_eq!(
            read_one("\"héllo ✓\"").expect("valid EDN"),
            Value::Str("héllo ✓".into())
        );
    }
}
