//! The pipeline file as a located YAML tree: every mapping key and every value carries its line and
//! column, so later stages can report *all* problems with a position, not just the first one serde
//! trips over.
//!
//! Parsing is done by `serde-saphyr` (a maintained, panic-free YAML 1.2 deserializer whose
//! `Spanned<T>` reports line, column and byte offsets). This module owns only the tree and the
//! conversion from saphyr's spans to [`Pos`].

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::diagnostic::{Diagnostic, Pos, SourceFile};

/// A YAML node with its position.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub pos: Pos,
    pub value: Value,
}

/// A mapping key with its position.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Key {
    pub name: String,
    pub pos: Pos,
}

/// The value of a YAML node. Mappings keep their keys in file order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

impl Value {
    /// How this value is named in "expected X, found Y" messages.
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            Value::Null => "nothing (null)",
            Value::Bool(_) => "true/false",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "text",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    /// The value of key `name` when this node is a mapping.
    pub(crate) fn get(&self, name: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == name).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The key `name` itself (with its position) when this node is a mapping.
    #[cfg(test)]
    pub(crate) fn key(&self, name: &str) -> Option<&Key> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == name).map(|(k, _)| k),
            _ => None,
        }
    }
}

/// Parses a whole pipeline file. A syntax error comes back as one located diagnostic.
pub(crate) fn parse(source: &SourceFile) -> Result<Node, Diagnostic> {
    if source.text.trim().is_empty() {
        return Ok(Node { pos: Pos { line: 1, col: 1, offset: Some(0), len: 0 }, value: Value::Null });
    }
    // The default budget stops at 250,000 nodes, about 15,000 tasks; pipelines of 100,000 tasks
    // fit in this one. Anchors and aliases keep their default limits, which stop YAML bombs.
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_nodes: 2_000_000,
            max_events: 8_000_000,
        },
    };
    match serde_saphyr::from_str_with_options::<Spanned<RawValue>>(&source.text, options) {
        Ok(spanned) => Ok(into_node(spanned, source)),
        Err(err) => {
            let pos = err.location().map_or(Pos::UNKNOWN, |loc| location_pos(&loc, source));
            let message = plain_message(&err);
            // serde-saphyr names an option of its own API here, which users cannot set.
            if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
                let key = rest.split(", set DuplicateKeyPolicy").next().unwrap_or(rest).trim();
                return Err(Diagnostic::error(
                    pos,
                    format!("duplicate key `{key}`: a key may appear only once in a mapping"),
                )
                .with_hint("remove one of them, or merge the two"));
            }
            Err(Diagnostic::error(pos, format!("invalid YAML: {message}")))
        }
    }
}

/// serde-saphyr's message without its own snippet rendering (we draw our own).
fn plain_message(err: &serde_saphyr::Error) -> String {
    let rendered = err.without_snippet().to_string();
    let first = rendered.lines().next().unwrap_or("").trim();
    // Strip a trailing " at line X, column Y" that duplicates our own position.
    let cut = first.find(" at line ").map_or(first, |i| &first[..i]);
    cut.trim_end_matches(':').to_string()
}

fn location_pos(loc: &serde_saphyr::Location, source: &SourceFile) -> Pos {
    let span = loc.span();
    match span.byte_offset() {
        Some(offset) => {
            let len = span.byte_len().unwrap_or(0) as usize;
            source.pos_of_offset(offset as usize, len)
        }
        None => Pos { line: loc.line() as u32, col: loc.column() as u32, offset: None, len: 0 },
    }
}

fn into_node(spanned: Spanned<RawValue>, source: &SourceFile) -> Node {
    let pos = location_pos(&spanned.referenced, source);
    let value = match spanned.value {
        RawValue::Null => Value::Null,
        RawValue::Bool(b) => Value::Bool(b),
        RawValue::Int(i) => Value::Int(i),
        RawValue::Float(f) => Value::Float(f),
        RawValue::Str(s) => Value::Str(s),
        RawValue::Seq(items) => Value::Seq(items.into_iter().map(|n| into_node(n, source)).collect()),
        RawValue::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let key = Key { name: k.value.0, pos: location_pos(&k.referenced, source) };
                    (key, into_node(v, source))
                })
                .collect(),
        ),
    };
    Node { pos, value }
}

/// What serde-saphyr hands us; converted to [`Node`] once positions are known.
enum RawValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<RawValue>>),
    Map(Vec<(Spanned<KeyText>, Spanned<RawValue>)>),
}

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = RawValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<RawValue, E> {
        Ok(RawValue::Null)
    }
    fn visit_none<E>(self) -> Result<RawValue, E> {
        Ok(RawValue::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawValue, D::Error> {
        RawValue::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<RawValue, E> {
        Ok(RawValue::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<RawValue, E> {
        Ok(RawValue::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<RawValue, E> {
        Ok(i64::try_from(v).map_or(RawValue::Float(v as f64), RawValue::Int))
    }
    fn visit_i128<E>(self, v: i128) -> Result<RawValue, E> {
        Ok(i64::try_from(v).map_or(RawValue::Float(v as f64), RawValue::Int))
    }
    fn visit_u128<E>(self, v: u128) -> Result<RawValue, E> {
        Ok(i64::try_from(v).map_or(RawValue::Float(v as f64), RawValue::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<RawValue, E> {
        Ok(RawValue::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<RawValue, E> {
        Ok(RawValue::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<RawValue, E> {
        Ok(RawValue::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<RawValue>>()? {
            items.push(item);
        }
        Ok(RawValue::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<KeyText>>()? {
            let value = map.next_value::<Spanned<RawValue>>()?;
            entries.push((key, value));
        }
        Ok(RawValue::Map(entries))
    }
}

/// A mapping key. Scalars of any type are accepted and kept as text (`1: x` has key "1").
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a plain mapping key")
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<KeyText, E> {
                Err(E::custom("a mapping key cannot be null"))
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Node {
        parse(&SourceFile::new("t.yaml", text)).unwrap()
    }

    #[test]
    fn keys_and_values_carry_line_and_column() {
        let node = parse_text("name: demo\ntasks:\n  - id: a\n    depends_on: [b, c]\n");
        let tasks = node.get("tasks").unwrap();
        let Value::Seq(items) = &tasks.value else { panic!("tasks is a list") };
        let deps = items[0].get("depends_on").unwrap();
        let Value::Seq(deps) = &deps.value else { panic!("deps is a list") };
        assert_eq!((deps[1].pos.line, deps[1].pos.col), (4, 21));
        let key = items[0].key("depends_on").unwrap();
        assert_eq!((key.pos.line, key.pos.col), (4, 5));
    }

    #[test]
    fn syntax_error_is_located() {
        let err = parse(&SourceFile::new("t.yaml", "name: demo\ntasks: [a, b\n")).unwrap_err();
        assert!(err.pos.line >= 2, "{err:?}");
        assert!(err.message.starts_with("invalid YAML"), "{}", err.message);
    }

    #[test]
    fn scalars_keep_their_types() {
        let node = parse_text("a: 1\nb: 1.5\nc: true\nd: text\ne: ~\nf: '2'\n");
        assert_eq!(node.get("a").unwrap().value, Value::Int(1));
        assert_eq!(node.get("b").unwrap().value, Value::Float(1.5));
        assert_eq!(node.get("c").unwrap().value, Value::Bool(true));
        assert_eq!(node.get("d").unwrap().value, Value::Str("text".into()));
        assert_eq!(node.get("e").unwrap().value, Value::Null);
        assert_eq!(node.get("f").unwrap().value, Value::Str("2".into()));
    }
}
