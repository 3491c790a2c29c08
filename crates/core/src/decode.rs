//! Typed decoding of the located YAML tree into spec types, collecting *every* problem instead of
//! stopping at the first: unknown keys (with did-you-mean), missing keys, wrong types.
//!
//! [`Decode`] is implemented for scalars, lists, ordered maps and [`Located`]; [`decode_struct!`]
//! generates a struct and its `Decode` impl from a field list, so each spec type is declared once.

use std::ops::Deref;
use std::time::Duration;

use crate::diagnostic::{Diagnostic, Pos, SourceFile, suggestion};
use crate::units::{parse_duration, parse_size};
use crate::yaml::{Key, Node, Value};

/// A decoded value with the position it came from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Located<T> {
    pub value: T,
    pub pos: Pos,
}

impl<T> Located<T> {
    pub(crate) fn new(value: T, pos: Pos) -> Self {
        Self { value, pos }
    }
}

impl<T> Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// Collects diagnostics while decoding.
pub(crate) struct Decoder<'a> {
    pub source: &'a SourceFile,
    pub diagnostics: Vec<Diagnostic>,
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(source: &'a SourceFile) -> Self {
        Self { source, diagnostics: Vec::new() }
    }

    pub(crate) fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic::error(pos, message));
    }

    pub(crate) fn push(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    /// Reports "expected X, found Y" at `node`.
    pub(crate) fn expected(&mut self, node: &Node, expected: &str) {
        self.error(node.pos, format!("expected {expected}, found {}", node.value.describe()));
    }

    /// Opens `node` as a mapping whose keys must be among `allowed`; every other key is reported.
    pub(crate) fn map<'n>(&mut self, node: &'n Node, what: &str, allowed: &[&str]) -> Option<MapReader<'n>> {
        let Value::Map(entries) = &node.value else {
            self.expected(node, &format!("a mapping for {what}"));
            return None;
        };
        for (key, _) in entries {
            if !allowed.contains(&key.name.as_str()) {
                self.unknown_key(key, what, allowed);
            }
        }
        Some(MapReader { node, entries, what: what.to_string() })
    }

    pub(crate) fn unknown_key(&mut self, key: &Key, what: &str, allowed: &[&str]) {
        let hint = suggestion(&key.name, allowed.iter().copied())
            .unwrap_or_else(|| format!("expected one of: {}", allowed.join(", ")));
        let pos = Pos { len: key.name.len(), ..key.pos };
        self.push(Diagnostic::error(pos, format!("unknown key `{}` in {what}", key.name)).with_hint(hint));
    }

    /// The source text a scalar node was written as, when it can be recovered exactly.
    pub(crate) fn raw_text(&self, node: &Node) -> Option<&'a str> {
        let offset = node.pos.offset?;
        let text = self.source.text.get(offset..offset + node.pos.len)?;
        (!text.is_empty()).then_some(text)
    }
}

/// Reads fields of one mapping. Unknown keys were reported when it was opened.
pub(crate) struct MapReader<'n> {
    node: &'n Node,
    entries: &'n [(Key, Node)],
    what: String,
}

impl<'n> MapReader<'n> {
    pub(crate) fn pos(&self) -> Pos {
        self.node.pos
    }

    pub(crate) fn node(&self, name: &str) -> Option<&'n Node> {
        self.entries.iter().find(|(k, _)| k.name == name).map(|(_, v)| v)
    }

    pub(crate) fn key(&self, name: &str) -> Option<&'n Key> {
        self.entries.iter().find(|(k, _)| k.name == name).map(|(k, _)| k)
    }

    /// Decodes field `name`. A missing field is an error unless `T` has a missing value (`Option`).
    pub(crate) fn field<T: Decode>(&self, cx: &mut Decoder, name: &str) -> Option<T> {
        match self.node(name) {
            Some(node) => T::decode(node, cx),
            None => {
                let missing = T::when_missing();
                if missing.is_none() {
                    let pos = Pos { len: 0, ..self.node.pos };
                    cx.error(pos, format!("missing required key `{name}` in {}", self.what));
                }
                missing
            }
        }
    }
}

/// Decoding from a located YAML node. Problems are pushed to the decoder; `None` means "could not
/// decode" and a diagnostic has been recorded.
pub(crate) trait Decode: Sized {
    fn decode(node: &Node, cx: &mut Decoder) -> Option<Self>;

    /// The value of an absent field, or `None` if the field is required.
    fn when_missing() -> Option<Self> {
        None
    }
}

impl<T: Decode> Decode for Option<T> {
    fn decode(node: &Node, cx: &mut Decoder) -> Option<Self> {
        if node.value == Value::Null {
            return Some(None);
        }
        T::decode(node, cx).map(Some)
    }
    fn when_missing() -> Option<Self> {
        Some(None)
    }
}

impl<T: Decode> Decode for Located<T> {
    fn decode(node: &Node, cx: &mut Decoder) -> Option<Self> {
        T::decode(node, cx).map(|value| Located { value, pos: node.pos })
    }
}

impl Decode for String {
    fn decode(node: &Node, cx: &mut Decoder) -> Option<Self> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(_) | Value::Float(_) | Value::Bool(_) => match cx.raw_text(node) {
                Some(raw) => Some(raw.to_string()),
                None => Some(scalar_text(&node.value)),
            },
            _ => {
                cx.expected(node, "text");
                None
            }
        }
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Str(s) => s.clone(),
        _ => String::new(),
    }
}

impl Decode for bool {
    fn decode(node: &Node, cx: &mut Decoder) -> Option<Self> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            Value::Str(s) if s == "true" || s == "false" => Some(s == "true"),
            _ => {
                cx.expected(node, "true or false");
                None
            }
        }
    }
}

macro_rules! decode_integer {
    ($($t:ty),*) => {$(
        impl Decode for $t {
            fn decode(node: &Node, cx: &mut Decoder) -> Option<Self> {
                let parsed = match &node.value {
                    Value::Int(i) => <$t>::try_from(*i).ok(),
                    Value::Str(s) => s.trim().parse::<$t>().ok(),
                    _ => None,
                };
                if parsed.is_none() {
                    let what = if <$t>::MIN == 0 { "a non-negative whole number" } else { "a whole number" };
                    match &node.value {
                        Value::Int(i) => cx.error(node.pos, format!("{i} is out of range: expected {what} up to {}", <$t>::MAX)),
                        _ => cx.expected(node, what),
                    }
                }
                parsed
            }
        }
    )*};
}
decode_integer!(u32, u64, i64, usize);

impl Decode for f64 {
    fn decode(node: &Node, cx: &mut Decoder) -> Option<Self> {
        let parsed = match &node.value {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Str(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match parsed {
            Some(f) if f.is_finite() => Some(f),
            _ => {
                cx.expected(node, "a number");
                None
            }
        }
    }
}

impl<T: Decode> Decode for Vec<T> {
    fn decode(node: &Node, cx: &mut Decoder) -> Option<Self> {
        let Value::Seq(items) = &node.value else {
            cx.expected(node, "a list");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in items {
            match T::decode(item, cx) {
                Some(v) => out.push(v),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

/// One name or a list of names: `not_null: user_id` and `not_null: [user_id, ts]` both decode.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OneOrMany<T>(pub Vec<T>);

impl<T: Decode> Decode for OneOrMany<T> {
    fn decode(node: &Node, cx: &mut Decoder) -> Option<Self> {
        match &node.value {
            Value::Seq(_) => Vec::<T>::decode(node, cx).map(OneOrMany),
            _ => T::decode(node, cx).map(|v| OneOrMany(vec![v])),
        }
    }
}

/// A mapping with free-form keys, kept in file order (column order in a schema matters).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entries<T>(pub Vec<(Key, T)>);

impl<T: Decode> Decode for Entries<T> {
    fn decode(node: &Node, cx: &mut Decoder) -> Option<Self> {
        let Value::Map(entries) = &node.value else {
            cx.expected(node, "a mapping");
            return None;
        };
        let mut out = Vec::with_capacity(entries.len());
        let mut ok = true;
        for (key, value) in entries {
            match T::decode(value, cx) {
                Some(v) => out.push((key.clone(), v)),
                None => ok = false,
            }
        }
        ok.then_some(Entries(out))
    }
}

/// A duration written as `250ms`, `30s`, `5m`, `1h30m`, `2d`, or a bare number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DurationValue(pub Duration);

impl Decode for DurationValue {
    fn decode(node: &Node, cx: &mut Decoder) -> Option<Self> {
        let parsed = match &node.value {
            Value::Int(secs) if *secs >= 0 => Ok(Duration::from_secs(*secs as u64)),
            Value::Float(secs) if *secs >= 0.0 && secs.is_finite() => Ok(Duration::from_secs_f64(*secs)),
            Value::Str(s) => parse_duration(s),
            _ => Err(format!("expected a duration such as 30s, 5m or 1h30m, found {}", node.value.describe())),
        };
        match parsed {
            Ok(d) => Some(DurationValue(d)),
            Err(message) => {
                cx.error(Pos { len: node.pos.len, ..node.pos }, message);
                None
            }
        }
    }
}

/// A size in bytes written as `16MiB`, `8 MB`, `512KiB` or a bare number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ByteSize(pub u64);

impl Decode for ByteSize {
    fn decode(node: &Node, cx: &mut Decoder) -> Option<Self> {
        let parsed = match &node.value {
            Value::Int(n) if *n >= 0 => Ok(*n as u64),
            Value::Str(s) => parse_size(s),
            _ => Err(format!("expected a size such as 16MiB, found {}", node.value.describe())),
        };
        match parsed {
            Ok(n) => Some(ByteSize(n)),
            Err(message) => {
                cx.error(node.pos, message);
                None
            }
        }
    }
}

/// Declares a spec struct whose fields are decoded from a mapping with exactly these keys.
///
/// ```ignore
/// decode_struct! {
///     /// Retry settings as written.
///     pub struct RetrySpec as "retry settings" {
///         max_attempts: Option<Located<u32>>,
///     }
/// }
/// ```
#[macro_export]
macro_rules! decode_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident as $what:literal {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub(crate) struct $name {
            $( $(#[$fmeta])* pub(crate) $field: $ty, )*
            /// Where this mapping starts in the file.
            pub(crate) pos: $crate::diagnostic::Pos,
        }

        impl $name {
            /// The keys this mapping accepts.
            pub(crate) const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];

            /// Reads the fields from an opened mapping whose keys were already checked (a task's
            /// kind parameters share the task's mapping).
            pub(crate) fn decode_from(map: &$crate::decode::MapReader<'_>, cx: &mut $crate::decode::Decoder) -> Option<Self> {
                $( let $field = map.field::<$ty>(cx, stringify!($field)); )*
                Some(Self { $( $field: $field?, )* pos: map.pos() })
            }
        }

        impl $crate::decode::Decode for $name {
            fn decode(node: &$crate::yaml::Node, cx: &mut $crate::decode::Decoder) -> Option<Self> {
                let map = cx.map(node, $what, Self::KEYS)?;
                Self::decode_from(&map, cx)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml;

    decode_struct! {
        /// A test struct.
        pub struct Sample as "sample" {
            name: String,
            count: Option<u32>,
            tags: Option<Vec<Located<String>>>,
        }
    }

    fn decode<T: Decode>(text: &str) -> (Option<T>, Vec<Diagnostic>) {
        let source = SourceFile::new("t.yaml", text);
        let node = yaml::parse(&source).unwrap();
        let mut cx = Decoder::new(&source);
        let value = T::decode(&node, &mut cx);
        (value, cx.diagnostics)
    }

    #[test]
    fn reports_every_unknown_key_and_missing_field_at_once() {
        let (value, diags) = decode::<Sample>("nme: x\ncount: -1\ntagz: [a]\n");
        assert!(value.is_none());
        let messages: Vec<_> = diags.iter().map(|d| (d.pos.line, d.message.as_str())).collect();
        assert_eq!(
            messages,
            vec![
                (1, "unknown key `nme` in sample"),
                (3, "unknown key `tagz` in sample"),
                (1, "missing required key `name` in sample"),
                (2, "-1 is out of range: expected a non-negative whole number up to 4294967295"),
            ]
        );
        assert_eq!(diags[0].hint.as_deref(), Some("did you mean `name`?"));
        assert_eq!(diags[1].hint.as_deref(), Some("did you mean `tags`?"));
    }

    #[test]
    fn numbers_are_accepted_as_text_with_their_spelling() {
        let (value, diags) = decode::<Sample>("name: 6.10\n");
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(value.unwrap().name, "6.10");
    }
}
