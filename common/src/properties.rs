//! Java `.properties` files (RocketMQ's `broker.conf`, `namesrv.conf`) read into our serde
//! config structs.
//!
//! [`Properties::parse`] reads the text as `java.util.Properties.load` does: `key=value`,
//! `key:value` or `key value`; `#` and `!` comment lines; blank lines; a line ending in an odd
//! number of backslashes continues on the next (whose leading whitespace is dropped); `\t`, `\n`,
//! `\r`, `\f`, `\uXXXX` and `\c` (any other character: itself) escapes in keys and values; a
//! later key replaces an earlier one. Unlike Java, trailing unescaped whitespace of a value is
//! dropped (RocketMQ trims strings, and `48 ` is not a number to it either), and the text is
//! UTF-8 rather than ISO-8859-1.
//!
//! [`load`] then deserializes the flat keys into a config struct: every key is matched against
//! the serde field names and aliases of the struct and of the nested tables named as "flat"
//! (RocketMQ keeps its store and server settings in the same flat file), and `table.key` reaches
//! any nested table. Values are strings converted to the type the field asks for (bool, integers,
//! enums, socket addresses, ...); a value that does not convert is a [`PropertyError`] naming the
//! key, its line and the type expected. Keys no field takes are returned, not refused.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::value::StrDeserializer;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};

/// One `key=value` of a properties file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    /// The line (1-based) where the entry starts.
    pub line: usize,
}

/// The entries of a properties file, in file order (a repeated key keeps its first position and
/// its last value, as `java.util.Properties` keeps the last).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    entries: Vec<Entry>,
}

/// A properties file or value we cannot use: the key (when one is to blame), its line and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyError {
    pub key: Option<String>,
    pub line: Option<usize>,
    pub message: String,
}

impl PropertyError {
    /// An error about `entry`.
    pub fn at(entry: &Entry, message: impl Into<String>) -> Self {
        PropertyError {
            key: Some(entry.key.clone()),
            line: Some(entry.line),
            message: message.into(),
        }
    }

    /// Names the key and line unless an inner error named them already.
    fn within(mut self, key: &str, line: Option<usize>) -> Self {
        if self.key.is_none() {
            self.key = Some(key.to_string());
            self.line = line;
        }
        self
    }
}

impl fmt::Display for PropertyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for PropertyError {}

impl de::Error for PropertyError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        PropertyError {
            key: None,
            line: None,
            message: msg.to_string(),
        }
    }
}

const WHITESPACE: [char; 3] = [' ', '\t', '\x0c'];

/// Whether `s` ends with an odd number of backslashes (a continuation or a dangling escape).
fn ends_with_odd_backslashes(s: &str) -> bool {
    s.chars().rev().take_while(|&c| c == '\\').count() % 2 == 1
}

/// The natural lines of `text`: ended by `\n`, `\r\n` or `\r`.
fn natural_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                lines.push(&text[start..i]);
                start = i + 1;
            }
            b'\r' => {
                lines.push(&text[start..i]);
                if bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < text.len() {
        lines.push(&text[start..]);
    }
    lines
}

/// Resolves the escapes of a raw key or value; with `trim_end`, drops trailing whitespace that
/// was not escaped.
fn unescape(raw: &str, line: usize, trim_end: bool) -> Result<String, PropertyError> {
    let bad = |message: String| PropertyError {
        key: None,
        line: Some(line),
        message,
    };
    let mut out = String::with_capacity(raw.len());
    // Length of `out` up to its last character that is not unescaped whitespace.
    let mut keep = 0;
    let mut units: Vec<u16> = Vec::new();
    // Decodes the pending `\uXXXX` code units into `out`; they count as kept.
    let flush_units =
        |units: &mut Vec<u16>, out: &mut String, keep: &mut usize| -> Result<(), PropertyError> {
            if units.is_empty() {
                return Ok(());
            }
            for c in char::decode_utf16(units.drain(..)) {
                out.push(c.map_err(|e| bad(format!("\\u escape: {e}")))?);
            }
            *keep = out.len();
            Ok(())
        };
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            flush_units(&mut units, &mut out, &mut keep)?;
            out.push(c);
            if !WHITESPACE.contains(&c) {
                keep = out.len();
            }
            continue;
        }
        let Some(escaped) = chars.next() else {
            break; // a dangling backslash at the very end: Java drops it
        };
        if escaped == 'u' {
            let hex: String = chars.by_ref().take(4).collect();
            let unit = (hex.len() == 4)
                .then(|| u16::from_str_radix(&hex, 16).ok())
                .flatten()
                .ok_or_else(|| bad(format!("malformed \\uXXXX escape \\u{hex}")))?;
            units.push(unit);
            continue;
        }
        flush_units(&mut units, &mut out, &mut keep)?;
        out.push(match escaped {
            't' => '\t',
            'n' => '\n',
            'r' => '\r',
            'f' => '\x0c',
            other => other,
        });
        keep = out.len();
    }
    flush_units(&mut units, &mut out, &mut keep)?;
    if trim_end {
        out.truncate(keep);
    }
    Ok(out)
}

impl Properties {
    /// Reads properties text (see the module documentation for the format).
    pub fn parse(text: &str) -> Result<Properties, PropertyError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let lines = natural_lines(text);
        let mut props = Properties::default();
        let mut i = 0;
        while i < lines.len() {
            let line = i + 1;
            let first = lines[i].trim_start_matches(WHITESPACE);
            i += 1;
            if first.is_empty() || first.starts_with('#') || first.starts_with('!') {
                continue;
            }
            let mut logical = String::new();
            let mut current = first;
            while ends_with_odd_backslashes(current) {
                logical.push_str(&current[..current.len() - 1]);
                if i == lines.len() {
                    current = "";
                    break;
                }
                current = lines[i].trim_start_matches(WHITESPACE);
                i += 1;
            }
            logical.push_str(current);
            let (raw_key, raw_value) = split_key_value(&logical);
            let key = unescape(raw_key, line, false)?;
            let value = unescape(raw_value, line, true)?;
            props.insert(Entry { key, value, line });
        }
        Ok(props)
    }

    fn insert(&mut self, entry: Entry) {
        match self.entries.iter_mut().find(|e| e.key == entry.key) {
            Some(old) => *old = entry,
            None => self.entries.push(entry),
        }
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Takes `key` out, for a key the caller interprets itself.
    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        let at = self.entries.iter().position(|e| e.key == key)?;
        Some(self.entries.remove(at))
    }
}

/// Splits a logical line at the first unescaped `=`, `:` or whitespace (whitespace around the
/// separator is skipped); returns the raw key and raw value.
fn split_key_value(logical: &str) -> (&str, &str) {
    let mut escaped = false;
    let mut end = logical.len();
    for (at, c) in logical.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '=' || c == ':' || WHITESPACE.contains(&c) {
            end = at;
            break;
        }
    }
    let key = &logical[..end];
    let mut rest = logical[end..].trim_start_matches(WHITESPACE);
    if let Some(after) = rest.strip_prefix(['=', ':']) {
        rest = after.trim_start_matches(WHITESPACE);
    }
    (key, rest)
}

// ---------------------------------------------------------------------------------------------
// Field names of a serde struct (names and aliases), found by asking its Deserialize impl.

/// The error of the probing deserializers: never shown.
#[derive(Debug)]
struct Probed;

impl fmt::Display for Probed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("probed")
    }
}

impl std::error::Error for Probed {}

impl de::Error for Probed {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Probed
    }
}

/// Records the field list a struct's `Deserialize` passes to `deserialize_struct` (serde's
/// derive lists every name and alias there), looking through `Option` and newtypes.
struct StructProbe<'a>(&'a RefCell<Option<&'static [&'static str]>>);

impl<'de> de::Deserializer<'de> for StructProbe<'_> {
    type Error = Probed;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Probed> {
        Err(Probed)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Probed> {
        *self.0.borrow_mut() = Some(fields);
        Err(Probed)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Probed> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Probed> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// A one-key map whose value is a [`StructProbe`]: what a struct's field is, if a struct.
struct OneFieldProbe<'a> {
    key: Option<&'static str>,
    seen: &'a RefCell<Option<&'static [&'static str]>>,
}

impl<'de> MapAccess<'de> for OneFieldProbe<'_> {
    type Error = Probed;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Probed> {
        match self.key.take() {
            Some(key) => seed.deserialize(key.into_deserializer()).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Probed> {
        seed.deserialize(StructProbe(self.seen))
    }
}

struct MapProbe<'a>(OneFieldProbe<'a>);

impl<'de> de::Deserializer<'de> for MapProbe<'_> {
    type Error = Probed;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Probed> {
        visitor.visit_map(self.0)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier
        ignored_any
    }
}

/// The keys a config struct accepts: each field's name and aliases, and for the fields that are
/// structs themselves, their keys (one level down).
#[derive(Debug, Clone, Default)]
pub struct Schema {
    pub fields: Vec<&'static str>,
    pub tables: BTreeMap<&'static str, Vec<&'static str>>,
}

impl Schema {
    /// Asks `T`'s `Deserialize` impl for its keys.
    pub fn of<T: DeserializeOwned>() -> Schema {
        let seen = RefCell::new(None);
        let _ = T::deserialize(StructProbe(&seen));
        let fields: Vec<&'static str> = seen.take().unwrap_or_default().to_vec();
        let mut tables = BTreeMap::new();
        for &field in &fields {
            let seen = RefCell::new(None);
            let _ = T::deserialize(MapProbe(OneFieldProbe {
                key: Some(field),
                seen: &seen,
            }));
            if let Some(inner) = seen.take() {
                tables.insert(field, inner.to_vec());
            }
        }
        Schema { fields, tables }
    }

    /// Whether `key` is a field that holds a plain value (not a table).
    pub fn has_value(&self, key: &str) -> bool {
        self.fields.contains(&key) && !self.tables.contains_key(key)
    }

    /// Whether `key` is a key of the nested table `table`.
    pub fn table_has(&self, table: &str, key: &str) -> bool {
        self.tables
            .get(table)
            .is_some_and(|keys| keys.contains(&key))
    }
}

// ---------------------------------------------------------------------------------------------
// Routing the flat keys and deserializing them.

/// What [`load`] made of a properties file: the config, and the keys no field took.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    pub config: T,
    pub unused_keys: Vec<String>,
}

/// A tree of keys: values at the leaves, nested tables for the struct fields.
#[derive(Debug, Default)]
struct Table {
    entries: BTreeMap<String, Node>,
}

#[derive(Debug)]
enum Node {
    Value(Entry),
    Table(Table),
}

impl Table {
    fn insert(&mut self, path: &[&str], entry: &Entry) {
        match path {
            [] => {}
            [last] => {
                self.entries
                    .insert((*last).to_string(), Node::Value(entry.clone()));
            }
            [first, rest @ ..] => {
                let node = self
                    .entries
                    .entry((*first).to_string())
                    .or_insert_with(|| Node::Table(Table::default()));
                if let Node::Table(table) = node {
                    table.insert(rest, entry);
                }
            }
        }
    }
}

/// Deserializes `props` into `T`. A key goes to every place that takes it, as RocketMQ sets a
/// property on each of its config objects that has it: a field of `T` holding a value, and a
/// field of each nested table named in `flat_tables` (the tables whose keys RocketMQ writes
/// flat, such as the store's). `table.key` (dotted) reaches a key of any nested table of `T`.
/// Keys nothing takes are returned in `unused_keys`, in file order.
pub fn load<T: DeserializeOwned>(
    props: &Properties,
    flat_tables: &[&str],
) -> Result<Loaded<T>, PropertyError> {
    let schema = Schema::of::<T>();
    let mut root = Table::default();
    let mut unused_keys = Vec::new();
    for entry in props.entries() {
        let key = entry.key.as_str();
        let mut used = false;
        if schema.fields.contains(&key) {
            // A table named as a flat key fails with the way to write it.
            root.insert(&[key], entry);
            used = true;
        }
        for table in flat_tables {
            if schema.table_has(table, key) {
                root.insert(&[table, key], entry);
                used = true;
            }
        }
        if let Some((table, inner)) = key.split_once('.') {
            if schema.table_has(table, inner) {
                root.insert(&[table, inner], entry);
                used = true;
            }
        }
        if !used {
            unused_keys.push(entry.key.clone());
        }
    }
    let config = T::deserialize(TableDeserializer {
        table: &root,
        path: "",
    })?;
    Ok(Loaded {
        config,
        unused_keys,
    })
}

struct TableDeserializer<'a> {
    table: &'a Table,
    /// The dotted path of this table (empty at the root), for error messages.
    path: &'a str,
}

struct TableAccess<'a> {
    iter: std::collections::btree_map::Iter<'a, String, Node>,
    value: Option<(&'a String, &'a Node)>,
    path: &'a str,
}

impl TableAccess<'_> {
    fn full_key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

impl<'de, 'a> MapAccess<'de> for TableAccess<'a> {
    type Error = PropertyError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, PropertyError> {
        let Some((key, node)) = self.iter.next() else {
            return Ok(None);
        };
        self.value = Some((key, node));
        let line = match node {
            Node::Value(entry) => Some(entry.line),
            Node::Table(_) => None,
        };
        let name: StrDeserializer<'_, PropertyError> = key.as_str().into_deserializer();
        seed.deserialize(name)
            .map(Some)
            .map_err(|e| e.within(&self.full_key(key), line))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, PropertyError> {
        let Some((key, node)) = self.value.take() else {
            return Err(de::Error::custom("a value without its key"));
        };
        match node {
            Node::Value(entry) => seed
                .deserialize(ValueDeserializer { entry })
                .map_err(|e| e.within(&entry.key, Some(entry.line))),
            Node::Table(table) => {
                let path = self.full_key(key);
                seed.deserialize(TableDeserializer { table, path: &path })
                    .map_err(|e| e.within(&path, None))
            }
        }
    }
}

impl<'de> de::Deserializer<'de> for TableDeserializer<'_> {
    type Error = PropertyError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PropertyError> {
        visitor.visit_map(TableAccess {
            iter: self.table.entries.iter(),
            value: None,
            path: self.path,
        })
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PropertyError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, PropertyError> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// One value: a string, converted to what the field asks for.
struct ValueDeserializer<'a> {
    entry: &'a Entry,
}

impl ValueDeserializer<'_> {
    fn text(&self) -> &str {
        self.entry.value.trim()
    }

    fn expected(&self, what: &str) -> PropertyError {
        PropertyError::at(
            self.entry,
            format!("expected {what}, found {:?}", self.entry.value),
        )
    }
}

macro_rules! parse_number {
    ($($method:ident $visit:ident $ty:ty, $what:expr;)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PropertyError> {
                match self.text().parse::<$ty>() {
                    Ok(n) => visitor.$visit(n),
                    Err(_) => Err(self.expected($what)),
                }
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for ValueDeserializer<'_> {
    type Error = PropertyError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PropertyError> {
        visitor.visit_str(&self.entry.value)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PropertyError> {
        let text = self.text();
        if text.eq_ignore_ascii_case("true") {
            visitor.visit_bool(true)
        } else if text.eq_ignore_ascii_case("false") {
            visitor.visit_bool(false)
        } else {
            Err(self.expected("a boolean (true or false)"))
        }
    }

    parse_number! {
        deserialize_i8 visit_i8 i8, "an integer from -128 to 127";
        deserialize_i16 visit_i16 i16, "an integer from -32768 to 32767";
        deserialize_i32 visit_i32 i32, "an integer from -2147483648 to 2147483647";
        deserialize_i64 visit_i64 i64, "an integer (64-bit)";
        deserialize_i128 visit_i128 i128, "an integer";
        deserialize_u8 visit_u8 u8, "an integer from 0 to 255";
        deserialize_u16 visit_u16 u16, "an integer from 0 to 65535";
        deserialize_u32 visit_u32 u32, "an integer from 0 to 4294967295";
        deserialize_u64 visit_u64 u64, "a non-negative integer";
        deserialize_u128 visit_u128 u128, "a non-negative integer";
        deserialize_f32 visit_f32 f32, "a number";
        deserialize_f64 visit_f64 f64, "a number";
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PropertyError> {
        let mut chars = self.text().chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => visitor.visit_char(c),
            _ => Err(self.expected("one character")),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PropertyError> {
        visitor.visit_str(&self.entry.value)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PropertyError> {
        visitor.visit_str(&self.entry.value)
    }

    fn deserialize_identifier<V: Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, PropertyError> {
        visitor.visit_str(self.text())
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PropertyError> {
        visitor.visit_bytes(self.entry.value.as_bytes())
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PropertyError> {
        visitor.visit_bytes(self.entry.value.as_bytes())
    }

    /// An empty value is "not set".
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PropertyError> {
        if self.text().is_empty() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PropertyError> {
        if self.text().is_empty() {
            visitor.visit_unit()
        } else {
            Err(self.expected("nothing"))
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, PropertyError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, PropertyError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, _: V) -> Result<V::Value, PropertyError> {
        Err(self.expected("a list, which a properties file cannot hold (use the TOML format)"))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, PropertyError> {
        Err(self.expected("a list, which a properties file cannot hold (use the TOML format)"))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        _: V,
    ) -> Result<V::Value, PropertyError> {
        Err(self.expected("a list, which a properties file cannot hold (use the TOML format)"))
    }

    fn deserialize_map<V: Visitor<'de>>(self, _: V) -> Result<V::Value, PropertyError> {
        let key = &self.entry.key;
        Err(self.expected(&format!("a table: write its keys as {key}.NAME = VALUE")))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, PropertyError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, PropertyError> {
        let name: StrDeserializer<'_, PropertyError> = self.text().into_deserializer();
        visitor.visit_enum(name)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, PropertyError> {
        visitor.visit_unit()
    }
}

/// Deserializes one value as `T` (for a key the caller interprets itself), with the key and
/// line in the error.
pub fn value<T: DeserializeOwned>(entry: &Entry) -> Result<T, PropertyError> {
    T::deserialize(ValueDeserializer { entry }).map_err(|e| e.within(&entry.key, Some(entry.line)))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        Properties::parse(text)
            .expect("parses")
            .entries()
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect()
    }

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn separators_comments_and_blank_lines() {
        let text = "# a comment\n! another\n\n   \nbrokerName=broker-a\nbrokerId : 0\n\
                    deleteWhen 04\n  fileReservedTime   =   48  \nflag\nempty=\n";
        assert_eq!(
            pairs(text),
            vec![
                pair("brokerName", "broker-a"),
                pair("brokerId", "0"),
                pair("deleteWhen", "04"),
                pair("fileReservedTime", "48"),
                pair("flag", ""),
                pair("empty", ""),
            ]
        );
        // Only the first separator splits; the rest belongs to the value.
        assert_eq!(pairs("a=b=c:d"), vec![pair("a", "b=c:d")]);
        assert_eq!(pairs("a = = b"), vec![pair("a", "= b")]);
        // Windows and old Mac line ends, and a byte-order mark.
        assert_eq!(
            pairs("\u{feff}a=1\r\nb=2\rc=3"),
            vec![pair("a", "1"), pair("b", "2"), pair("c", "3")]
        );
        // A later key wins, keeping its first position.
        assert_eq!(pairs("a=1\nb=2\na=3"), vec![pair("a", "3"), pair("b", "2")]);
        let props = Properties::parse("x=1\n\n# c\ny=2").expect("parses");
        assert_eq!(props.get("y").map(|e| e.line), Some(4));
    }

    #[test]
    fn continuation_lines() {
        let text = "namesrvAddr=127.0.0.1:9876;\\\n    127.0.0.1:9877\nnext=1\n";
        assert_eq!(
            pairs(text),
            vec![
                pair("namesrvAddr", "127.0.0.1:9876;127.0.0.1:9877"),
                pair("next", "1")
            ]
        );
        // An even number of backslashes is an escaped backslash, not a continuation.
        assert_eq!(
            pairs("a=x\\\\\nb=y"),
            vec![pair("a", "x\\"), pair("b", "y")]
        );
        // A continued line that looks like a comment is still part of the value.
        assert_eq!(pairs("a=1\\\n# 2\n"), vec![pair("a", "1# 2")]);
        // A backslash on the last line ends the value.
        assert_eq!(pairs("a=1\\"), vec![pair("a", "1")]);
        // The entry's line is its first line.
        let props = Properties::parse("a=1\\\n2\nb=3").expect("parses");
        assert_eq!(props.get("b").map(|e| e.line), Some(3));
    }

    #[test]
    fn escapes() {
        assert_eq!(
            pairs("k\\ e\\=y\\:z = a\\tb\\nc\\u0041\\\\d\\e"),
            vec![pair("k e=y:z", "a\tb\ncA\\de")]
        );
        // A surrogate pair, an escaped trailing space kept, unescaped ones dropped.
        assert_eq!(
            pairs("smile=\\uD83D\\uDE00\nspace=x\\ \ntrail=y  \t"),
            vec![pair("smile", "😀"), pair("space", "x "), pair("trail", "y")]
        );
        let bad = Properties::parse("a=1\nb=\\u12G4").expect_err("bad escape");
        assert_eq!(bad.line, Some(2));
        assert!(bad.to_string().contains("\\uXXXX"), "{bad}");
        let lone = Properties::parse("a=\\uD83D").expect_err("lone surrogate");
        assert_eq!(lone.line, Some(1));
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Top {
        #[serde(alias = "brokerName")]
        name: String,
        #[serde(alias = "brokerId")]
        id: i64,
        #[serde(alias = "autoCreateTopicEnable")]
        auto: bool,
        addr: Option<std::net::SocketAddr>,
        mode: Mode,
        store: Inner,
        limits: Limits,
    }

    impl Default for Top {
        fn default() -> Self {
            Top {
                name: "default".into(),
                id: 7,
                auto: true,
                addr: None,
                mode: Mode::Async,
                store: Inner::default(),
                limits: Limits::default(),
            }
        }
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    enum Mode {
        #[default]
        #[serde(rename = "ASYNC_FLUSH")]
        Async,
        #[serde(rename = "SYNC_FLUSH")]
        Sync,
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(default)]
    struct Inner {
        #[serde(alias = "fileReservedTime")]
        hours: u64,
        #[serde(alias = "brokerName")]
        owner: String,
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(default, deny_unknown_fields)]
    struct Limits {
        max: u32,
    }

    fn load_top(text: &str) -> Result<Loaded<Top>, PropertyError> {
        load(&Properties::parse(text)?, &["store"])
    }

    #[test]
    fn the_schema_lists_names_aliases_and_tables() {
        let schema = Schema::of::<Top>();
        for key in ["name", "brokerName", "id", "brokerId", "store", "limits"] {
            assert!(schema.fields.contains(&key), "{key}: {schema:?}");
        }
        assert!(schema.has_value("brokerName"));
        assert!(!schema.has_value("store"));
        assert!(schema.table_has("store", "fileReservedTime"));
        assert!(schema.table_has("limits", "max"));
        assert_eq!(schema.tables.len(), 2, "{schema:?}");
    }

    #[test]
    fn keys_are_routed_converted_and_the_unused_listed() {
        let loaded = load_top(
            "brokerName = b1\nbrokerId=3\nautoCreateTopicEnable=FALSE\naddr=10.0.0.1:10911\n\
             mode=SYNC_FLUSH\nfileReservedTime=48\nlimits.max=5\nsendThreads=16\nstore.nope=1\n",
        )
        .expect("loads");
        assert_eq!(
            loaded.config,
            Top {
                name: "b1".into(),
                id: 3,
                auto: false,
                addr: Some("10.0.0.1:10911".parse().expect("addr")),
                mode: Mode::Sync,
                // brokerName is a key of both: it goes to both, as in RocketMQ.
                store: Inner {
                    hours: 48,
                    owner: "b1".into()
                },
                limits: Limits { max: 5 },
            }
        );
        assert_eq!(loaded.unused_keys, vec!["sendThreads", "store.nope"]);
        // Missing keys keep their defaults; an empty optional value is unset.
        let defaults = load_top("addr=\n").expect("loads");
        assert_eq!(defaults.config, Top::default());
        assert!(defaults.unused_keys.is_empty());
    }

    #[test]
    fn a_bad_value_names_the_key_the_line_and_the_type() {
        let err = load_top("brokerName=b\n\nbrokerId=one\n").expect_err("not a number");
        assert_eq!(err.key.as_deref(), Some("brokerId"));
        assert_eq!(err.line, Some(3));
        let text = err.to_string();
        assert!(
            text.starts_with("line 3: brokerId: expected an integer"),
            "{text}"
        );
        assert!(text.contains("\"one\""), "{text}");

        let err = load_top("autoCreateTopicEnable=yes").expect_err("not a bool");
        assert!(
            err.to_string()
                .contains("autoCreateTopicEnable: expected a boolean"),
            "{err}"
        );
        let err = load_top("fileReservedTime=-1").expect_err("negative");
        assert!(
            err.to_string()
                .contains("fileReservedTime: expected a non-negative"),
            "{err}"
        );
        let err = load_top("mode=FAST").expect_err("no such variant");
        assert_eq!(err.key.as_deref(), Some("mode"));
        assert!(err.to_string().contains("ASYNC_FLUSH"), "{err}");
        let err = load_top("addr=somewhere").expect_err("not an address");
        assert_eq!(err.key.as_deref(), Some("addr"));
        assert!(err.to_string().contains("socket address"), "{err}");
        let err = load_top("limits=3").expect_err("a table");
        assert!(err.to_string().contains("limits.NAME = VALUE"), "{err}");
    }

    #[test]
    fn a_single_value_is_converted_with_its_key() {
        let props = Properties::parse("listenPort=70000").expect("parses");
        let entry = props.get("listenPort").expect("there");
        let err = value::<u16>(entry).expect_err("too big");
        assert_eq!(
            err.to_string(),
            "line 1: listenPort: expected an integer from 0 to 65535, found \"70000\""
        );
    }
}
