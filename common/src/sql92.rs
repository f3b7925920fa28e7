//! RocketMQ's SQL92 message filter (`MessageSelector.bySql`, expression type `SQL92`): the
//! grammar of its `SelectorParser.jj` and the semantics of its `filter` module's expressions,
//! evaluated over a message's properties (user properties and system ones such as `TAGS`).
//!
//! Grammar: `OR`, `AND`, `NOT`; comparisons `=`, `<>`, `>`, `>=`, `<`, `<=`; `[NOT] BETWEEN x
//! AND y`; `[NOT] IN ('a', 'b')`; `IS [NOT] NULL`; `[NOT] CONTAINS | STARTSWITH | ENDSWITH
//! 'text'`; unary `+` / `-`; parentheses; literals: strings in single quotes (`''` is a quote),
//! decimal integers (an `L` suffix allowed), decimals with `.` and exponents, `TRUE`, `FALSE`,
//! `NULL`; identifiers `[a-zA-Z_$][a-zA-Z0-9_$]*` name properties. Keywords are case-insensitive.
//! The whole expression must be boolean, and `>`/`<` comparisons take numeric constants only,
//! as RocketMQ's parser checks.
//!
//! Semantics (three-valued, as RocketMQ): a missing property is NULL; a comparison with NULL is
//! unknown, and a message matches only when the expression is TRUE. A property (always a
//! string) compared with a number or a boolean is converted to that type (RocketMQ's
//! `convertStringExpressions`), and a property that does not convert makes the message not
//! match; two strings compare with `>`/`<` only when both are numbers.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

/// A parse error, with what went wrong and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// A compiled SQL92 filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Sql92 {
    expr: Expr,
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Null,
    Bool(bool),
    Long(i64),
    Double(f64),
    Str(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cmp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum StrOp {
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Const(Value),
    Prop(String),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(Cmp, Box<Expr>, Box<Expr>),
    IsNull(Box<Expr>, bool),
    In(Box<Expr>, Vec<String>, bool),
    Str(StrOp, Box<Expr>, String, bool),
}

impl Expr {
    fn is_boolean(&self) -> bool {
        matches!(
            self,
            Expr::Const(Value::Bool(_))
                | Expr::Not(_)
                | Expr::And(..)
                | Expr::Or(..)
                | Expr::Compare(..)
                | Expr::IsNull(..)
                | Expr::In(..)
                | Expr::Str(..)
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Id(String),
    Kw(&'static str),
    Str(String),
    Long(i64),
    Double(f64),
    Op(&'static str),
}

const KEYWORDS: &[&str] = &[
    "NOT",
    "AND",
    "OR",
    "BETWEEN",
    "IN",
    "TRUE",
    "FALSE",
    "NULL",
    "IS",
    "CONTAINS",
    "STARTSWITH",
    "ENDSWITH",
];

fn lex(text: &str) -> Result<Vec<Tok>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(ParseError("unterminated string literal".into())),
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        s.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        s.push(*ch);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(s));
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let mut float = false;
            if chars.get(i) == Some(&'.') {
                float = true;
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if matches!(chars.get(i), Some('e' | 'E')) {
                let mut j = i + 1;
                if matches!(chars.get(j), Some('+' | '-')) {
                    j += 1;
                }
                if chars.get(j).is_some_and(char::is_ascii_digit) {
                    float = true;
                    i = j;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let literal: String = chars[start..i].iter().collect();
            if float {
                let v = literal
                    .parse::<f64>()
                    .map_err(|_| ParseError(format!("bad number {literal}")))?;
                out.push(Tok::Double(v));
            } else {
                if matches!(chars.get(i), Some('l' | 'L')) {
                    i += 1;
                }
                if literal.len() > 1 && literal.starts_with('0') {
                    return Err(ParseError(format!(
                        "bad number {literal}: decimal literals do not start with 0"
                    )));
                }
                let v = literal
                    .parse::<i64>()
                    .map_err(|_| ParseError(format!("number {literal} is out of range")))?;
                out.push(Tok::Long(v));
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == '$' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let upper = word.to_ascii_uppercase();
            match KEYWORDS.iter().find(|k| **k == upper) {
                Some(k) => out.push(Tok::Kw(k)),
                None => out.push(Tok::Id(word)),
            }
        } else {
            let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let op = match two.as_str() {
                "<>" => Some("<>"),
                ">=" => Some(">="),
                "<=" => Some("<="),
                _ => None,
            };
            if let Some(op) = op {
                out.push(Tok::Op(op));
                i += 2;
                continue;
            }
            let op = match c {
                '=' => "=",
                '>' => ">",
                '<' => "<",
                '(' => "(",
                ')' => ")",
                ',' => ",",
                '+' => "+",
                '-' => "-",
                _ => {
                    return Err(ParseError(format!(
                        "unexpected character {c:?} at position {i}"
                    )))
                }
            };
            out.push(Tok::Op(op));
            i += 1;
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn peek_at(&self, n: usize) -> Option<&Tok> {
        self.toks.get(self.pos + n)
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Kw(k)) if *k == kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_op(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Op(o)) if *o == op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_op(&mut self, op: &str) -> Result<(), ParseError> {
        if self.eat_op(op) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("'{op}'")))
        }
    }

    fn unexpected(&self, wanted: &str) -> ParseError {
        match self.peek() {
            None => ParseError(format!("expected {wanted} but the expression ended")),
            Some(t) => ParseError(format!("expected {wanted}, found {}", describe(t))),
        }
    }

    fn string(&mut self) -> Result<String, ParseError> {
        match self.peek().cloned() {
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(s)
            }
            _ => Err(self.unexpected("a string literal")),
        }
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.and()?;
        while self.eat_kw("OR") {
            let right = self.and()?;
            left = Expr::Or(Box::new(boolean(left)?), Box::new(boolean(right)?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.equality()?;
        while self.eat_kw("AND") {
            let right = self.equality()?;
            left = Expr::And(Box::new(boolean(left)?), Box::new(boolean(right)?));
        }
        Ok(left)
    }

    fn equality(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.comparison()?;
        loop {
            if self.eat_op("=") {
                let right = self.comparison()?;
                left = equal(Cmp::Eq, left, right)?;
            } else if self.eat_op("<>") {
                let right = self.comparison()?;
                left = equal(Cmp::Ne, left, right)?;
            } else if self.eat_kw("IS") {
                let not = self.eat_kw("NOT");
                if !self.eat_kw("NULL") {
                    return Err(self.unexpected("NULL"));
                }
                left = Expr::IsNull(Box::new(left), not);
            } else {
                return Ok(left);
            }
        }
    }

    fn comparison(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.unary()?;
        loop {
            let cmp = [
                (">", Cmp::Gt),
                (">=", Cmp::Ge),
                ("<", Cmp::Lt),
                ("<=", Cmp::Le),
            ]
            .into_iter()
            .find(|(op, _)| matches!(self.peek(), Some(Tok::Op(o)) if o == op));
            if let Some((_, cmp)) = cmp {
                self.pos += 1;
                let right = self.unary()?;
                left = ordered(cmp, left, right)?;
                continue;
            }
            let not = matches!(self.peek(), Some(Tok::Kw("NOT")))
                && matches!(
                    self.peek_at(1),
                    Some(Tok::Kw(
                        "BETWEEN" | "IN" | "CONTAINS" | "STARTSWITH" | "ENDSWITH"
                    ))
                );
            if not {
                self.pos += 1;
            }
            if self.eat_kw("BETWEEN") {
                let low = self.unary()?;
                if !self.eat_kw("AND") {
                    return Err(self.unexpected("AND"));
                }
                let high = self.unary()?;
                left = if not {
                    Expr::Or(
                        Box::new(ordered(Cmp::Lt, left.clone(), low)?),
                        Box::new(ordered(Cmp::Gt, left, high)?),
                    )
                } else {
                    Expr::And(
                        Box::new(ordered(Cmp::Ge, left.clone(), low)?),
                        Box::new(ordered(Cmp::Le, left, high)?),
                    )
                };
            } else if self.eat_kw("IN") {
                self.expect_op("(")?;
                let mut list = vec![self.string()?];
                while self.eat_op(",") {
                    list.push(self.string()?);
                }
                self.expect_op(")")?;
                left = Expr::In(Box::new(left), list, not);
            } else if let Some(op) = [
                ("CONTAINS", StrOp::Contains),
                ("STARTSWITH", StrOp::StartsWith),
                ("ENDSWITH", StrOp::EndsWith),
            ]
            .into_iter()
            .find_map(|(kw, op)| self.eat_kw(kw).then_some(op))
            {
                let text = self.string()?;
                left = Expr::Str(op, Box::new(left), text, not);
            } else if not {
                return Err(self.unexpected("BETWEEN, IN, CONTAINS, STARTSWITH or ENDSWITH"));
            } else {
                return Ok(left);
            }
        }
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.eat_op("+") {
            return self.unary();
        }
        if self.eat_op("-") {
            return Ok(match self.unary()? {
                Expr::Const(Value::Long(v)) => Expr::Const(Value::Long(v.wrapping_neg())),
                Expr::Const(Value::Double(v)) => Expr::Const(Value::Double(-v)),
                e => Expr::Neg(Box::new(e)),
            });
        }
        if self.eat_kw("NOT") {
            let e = self.unary()?;
            return Ok(Expr::Not(Box::new(boolean(e)?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let tok = self.peek().cloned();
        let e = match tok {
            Some(Tok::Str(s)) => Expr::Const(Value::Str(s)),
            Some(Tok::Long(v)) => Expr::Const(Value::Long(v)),
            Some(Tok::Double(v)) => Expr::Const(Value::Double(v)),
            Some(Tok::Kw("TRUE")) => Expr::Const(Value::Bool(true)),
            Some(Tok::Kw("FALSE")) => Expr::Const(Value::Bool(false)),
            Some(Tok::Kw("NULL")) => Expr::Const(Value::Null),
            Some(Tok::Id(name)) => Expr::Prop(name),
            Some(Tok::Op("(")) => {
                self.pos += 1;
                let e = self.or()?;
                self.expect_op(")")?;
                return Ok(e);
            }
            _ => return Err(self.unexpected("a literal, a property or '('")),
        };
        self.pos += 1;
        Ok(e)
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Id(s) => format!("identifier {s}"),
        Tok::Kw(k) => (*k).to_string(),
        Tok::Str(s) => format!("'{s}'"),
        Tok::Long(v) => v.to_string(),
        Tok::Double(v) => v.to_string(),
        Tok::Op(o) => format!("'{o}'"),
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Bool(true) => f.write_str("TRUE"),
            Value::Bool(false) => f.write_str("FALSE"),
            Value::Long(v) => write!(f, "{v}"),
            Value::Double(v) => write!(f, "{v}"),
            Value::Str(s) => write!(f, "'{}'", s.replace('\'', "''")),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Const(v) => write!(f, "{v}"),
            Expr::Prop(name) => f.write_str(name),
            Expr::Neg(e) => write!(f, "-{e}"),
            _ => f.write_str("a condition"),
        }
    }
}

fn boolean(e: Expr) -> Result<Expr, ParseError> {
    // A property may hold a boolean; constants and arithmetic may not.
    if e.is_boolean() || matches!(e, Expr::Prop(_)) {
        Ok(e)
    } else {
        Err(ParseError(format!("{e} is not a boolean expression")))
    }
}

fn equal(cmp: Cmp, left: Expr, right: Expr) -> Result<Expr, ParseError> {
    for e in [&left, &right] {
        if matches!(e, Expr::Const(Value::Null)) {
            return Err(ParseError(
                "NULL cannot be compared with = or <>: use IS NULL / IS NOT NULL".into(),
            ));
        }
    }
    if let (Expr::Const(l), Expr::Const(r)) = (&left, &right) {
        if matches!(l, Value::Bool(_)) != matches!(r, Value::Bool(_)) {
            return Err(ParseError(format!("{l} cannot be compared with {r}")));
        }
    }
    Ok(Expr::Compare(cmp, Box::new(left), Box::new(right)))
}

fn ordered(cmp: Cmp, left: Expr, right: Expr) -> Result<Expr, ParseError> {
    for e in [&left, &right] {
        match e {
            Expr::Const(Value::Long(_) | Value::Double(_)) | Expr::Prop(_) | Expr::Neg(_) => {}
            Expr::Const(v) => {
                return Err(ParseError(format!(
                    "{v} cannot be compared with >, >=, < or <=: only numbers can"
                )))
            }
            other => {
                return Err(ParseError(format!(
                    "{other} cannot be compared with >, >=, < or <="
                )))
            }
        }
    }
    Ok(Expr::Compare(cmp, Box::new(left), Box::new(right)))
}

impl Sql92 {
    /// Compiles an expression; an error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Sql92, ParseError> {
        if text.trim().is_empty() {
            return Err(ParseError("the SQL92 expression is empty".into()));
        }
        let toks = lex(text)?;
        let mut p = Parser { toks, pos: 0 };
        let expr = p.or()?;
        if let Some(t) = p.peek() {
            return Err(ParseError(format!(
                "unexpected {} after the expression",
                describe(t)
            )));
        }
        if !expr.is_boolean() {
            return Err(ParseError(format!(
                "the filter expression {text:?} is not a boolean expression"
            )));
        }
        Ok(Sql92 { expr })
    }

    /// Whether a message with these properties matches (the expression is TRUE).
    pub fn matches(&self, properties: &BTreeMap<String, String>) -> bool {
        matches!(eval(&self.expr, properties), Ok(Value::Bool(true)))
    }
}

/// An evaluation failure (a property that does not convert): the message does not match.
struct Mismatch;

fn eval(e: &Expr, props: &BTreeMap<String, String>) -> Result<Value, Mismatch> {
    Ok(match e {
        Expr::Const(v) => v.clone(),
        Expr::Prop(name) => props
            .get(name)
            .map_or(Value::Null, |v| Value::Str(v.clone())),
        Expr::Neg(inner) => match eval(inner, props)? {
            Value::Long(v) => Value::Long(v.wrapping_neg()),
            Value::Double(v) => Value::Double(-v),
            Value::Str(s) => match number(&s) {
                Some(Value::Long(v)) => Value::Long(v.wrapping_neg()),
                Some(Value::Double(v)) => Value::Double(-v),
                _ => return Err(Mismatch),
            },
            Value::Null => Value::Null,
            Value::Bool(_) => return Err(Mismatch),
        },
        Expr::Not(inner) => match truth(eval(inner, props)?)? {
            Some(b) => Value::Bool(!b),
            None => Value::Null,
        },
        Expr::And(l, r) => {
            let lv = truth(eval(l, props)?)?;
            if lv == Some(false) {
                return Ok(Value::Bool(false));
            }
            let rv = truth(eval(r, props)?)?;
            if rv == Some(false) {
                return Ok(Value::Bool(false));
            }
            if lv.is_none() || rv.is_none() {
                Value::Null
            } else {
                Value::Bool(true)
            }
        }
        Expr::Or(l, r) => {
            let lv = truth(eval(l, props)?)?;
            if lv == Some(true) {
                return Ok(Value::Bool(true));
            }
            let rv = truth(eval(r, props)?)?;
            if rv == Some(true) {
                return Ok(Value::Bool(true));
            }
            if lv.is_none() || rv.is_none() {
                Value::Null
            } else {
                Value::Bool(false)
            }
        }
        Expr::Compare(cmp, l, r) => {
            let lv = eval(l, props)?;
            if lv == Value::Null {
                return Ok(Value::Null);
            }
            let rv = eval(r, props)?;
            if rv == Value::Null {
                return Ok(Value::Null);
            }
            let ordering = compare(*cmp, lv, rv)?;
            Value::Bool(match cmp {
                Cmp::Eq => ordering == Ordering::Equal,
                Cmp::Ne => ordering != Ordering::Equal,
                Cmp::Gt => ordering == Ordering::Greater,
                Cmp::Ge => ordering != Ordering::Less,
                Cmp::Lt => ordering == Ordering::Less,
                Cmp::Le => ordering != Ordering::Greater,
            })
        }
        Expr::IsNull(inner, not) => {
            let is_null = eval(inner, props)? == Value::Null;
            Value::Bool(is_null != *not)
        }
        Expr::In(inner, list, not) => match eval(inner, props)? {
            Value::Str(s) => Value::Bool(list.contains(&s) != *not),
            _ => Value::Null,
        },
        Expr::Str(op, inner, text, not) => match eval(inner, props)? {
            Value::Str(s) => {
                let hit = match op {
                    StrOp::Contains => s.contains(text.as_str()),
                    StrOp::StartsWith => s.starts_with(text.as_str()),
                    StrOp::EndsWith => s.ends_with(text.as_str()),
                };
                Value::Bool(hit != *not)
            }
            _ => Value::Null,
        },
    })
}

fn truth(v: Value) -> Result<Option<bool>, Mismatch> {
    match v {
        Value::Bool(b) => Ok(Some(b)),
        Value::Null => Ok(None),
        // A property used as a condition: Java's Boolean.valueOf.
        Value::Str(s) => Ok(Some(s.eq_ignore_ascii_case("true"))),
        _ => Err(Mismatch),
    }
}

/// A string as RocketMQ converts it for a numeric comparison: Long, else Double.
fn number(s: &str) -> Option<Value> {
    let t = s.trim();
    if let Ok(v) = t.parse::<i64>() {
        return Some(Value::Long(v));
    }
    t.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .map(Value::Double)
}

fn compare(cmp: Cmp, lv: Value, rv: Value) -> Result<Ordering, Mismatch> {
    use Value::*;
    let ordered = !matches!(cmp, Cmp::Eq | Cmp::Ne);
    Ok(match (lv, rv) {
        (Long(a), Long(b)) => a.cmp(&b),
        (Long(a), Double(b)) => (a as f64).partial_cmp(&b).ok_or(Mismatch)?,
        (Double(a), Long(b)) => a.partial_cmp(&(b as f64)).ok_or(Mismatch)?,
        (Double(a), Double(b)) => a.partial_cmp(&b).ok_or(Mismatch)?,
        (Str(a), Str(b)) if ordered => {
            // Two strings order only as numbers.
            let a: f64 = a.trim().parse().map_err(|_| Mismatch)?;
            let b: f64 = b.trim().parse().map_err(|_| Mismatch)?;
            a.partial_cmp(&b).ok_or(Mismatch)?
        }
        (Str(a), Str(b)) => a.cmp(&b),
        (Str(a), other @ (Long(_) | Double(_))) => {
            return compare(cmp, convert(&a, &other)?, other)
        }
        (other @ (Long(_) | Double(_)), Str(b)) => {
            let converted = convert(&b, &other)?;
            return compare(cmp, other, converted);
        }
        (Str(a), Bool(b)) => a.eq_ignore_ascii_case("true").cmp(&b),
        (Bool(a), Str(b)) => a.cmp(&b.eq_ignore_ascii_case("true")),
        (Bool(a), Bool(b)) => a.cmp(&b),
        // Different kinds that do not convert: unequal (RocketMQ answers -1).
        _ => Ordering::Less,
    })
}

/// `s` converted to the kind of `like` (Long or Double), as Java's `Long.valueOf` /
/// `Double.valueOf` would.
fn convert(s: &str, like: &Value) -> Result<Value, Mismatch> {
    match like {
        Value::Long(_) => s
            .trim()
            .parse::<i64>()
            .map(Value::Long)
            .or_else(|_| s.trim().parse::<f64>().map(Value::Double))
            .map_err(|_| Mismatch),
        Value::Double(_) => s
            .trim()
            .parse::<f64>()
            .map(Value::Double)
            .map_err(|_| Mismatch),
        _ => Err(Mismatch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn check(sql: &str, pairs: &[(&str, &str)]) -> bool {
        Sql92::parse(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .matches(&props(pairs))
    }

    #[test]
    fn comparisons_convert_properties_to_the_literal_type() {
        let m = [("a", "5"), ("b", "2.5"), ("TAGS", "TagA"), ("s", "abc")];
        assert!(check("a > 3", &m));
        assert!(!check("a < 3", &m));
        assert!(check("a = 5", &m));
        assert!(check("a >= 5 AND a <= 5", &m));
        assert!(check("b > 2", &m));
        assert!(check("b < 2.6", &m));
        assert!(check("a <> 4", &m));
        assert!(check("TAGS = 'TagA'", &m));
        assert!(!check("TAGS = 'taga'", &m));
        assert!(check("s <> 'abd'", &m));
        // A property that is not a number never matches a numeric comparison, either way.
        assert!(!check("s > 1", &m));
        assert!(!check("s < 1", &m));
        assert!(!check("s = 1", &m));
        assert!(check("a > -1", &m));
        assert!(check("-a < 0", &m));
    }

    #[test]
    fn null_is_unknown_and_logic_is_three_valued() {
        let m = [("a", "1")];
        assert!(!check("missing > 1", &m));
        assert!(!check("NOT (missing > 1)", &m));
        assert!(check("missing IS NULL", &m));
        assert!(check("a IS NOT NULL", &m));
        assert!(check("missing > 1 OR a = 1", &m));
        assert!(!check("missing > 1 AND a = 1", &m));
        assert!(!check("missing = 'x' OR missing <> 'x'", &m));
        assert!(check("TRUE", &m));
        assert!(!check("FALSE", &m));
        assert!(check("NOT FALSE", &m));
    }

    #[test]
    fn between_in_and_string_operators() {
        let m = [("a", "3"), ("region", "eu-west"), ("t", "it's")];
        assert!(check("a BETWEEN 1 AND 3", &m));
        assert!(!check("a BETWEEN 4 AND 9", &m));
        assert!(check("a NOT BETWEEN 4 AND 9", &m));
        assert!(check("region IN ('us', 'eu-west')", &m));
        assert!(!check("region NOT IN ('us', 'eu-west')", &m));
        assert!(!check("missing IN ('x')", &m));
        assert!(!check("missing NOT IN ('x')", &m));
        assert!(check("region CONTAINS 'west'", &m));
        assert!(check("region STARTSWITH 'eu'", &m));
        assert!(check("region ENDSWITH 'west'", &m));
        assert!(check("region NOT ENDSWITH 'east'", &m));
        assert!(check("t = 'it''s'", &m));
        assert!(check("(a = 3 OR a = 4) AND region STARTSWITH 'eu'", &m));
        assert!(check("a between 1 and 3 and region is not null", &m));
    }

    #[test]
    fn bad_expressions_are_refused_with_a_reason() {
        for (sql, why) in [
            ("", "empty"),
            ("a >", "ended"),
            ("a > 'x'", "only numbers"),
            ("a = NULL", "IS NULL"),
            ("a", "not a boolean"),
            ("1 + 2", "after the expression"),
            ("a IN (1, 2)", "string literal"),
            ("a = 'unterminated", "unterminated"),
            ("a # 1", "unexpected character"),
            ("(a = 1", "')'"),
            ("a = 1 b = 2", "after the expression"),
            ("TRUE = 1", "cannot be compared"),
            ("a NOT 1", "after the expression"),
            ("a = 012", "do not start with 0"),
        ] {
            let e = Sql92::parse(sql).expect_err(sql);
            assert!(e.0.contains(why), "{sql}: {e}");
        }
    }
}
