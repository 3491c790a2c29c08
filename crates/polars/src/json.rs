//! Schema-driven JSON record parsing: raw bytes of JSON documents or JSON lines in, Polars columns
//! and quarantined records out. Only declared columns are kept; numbers where strings are declared
//! become their exact source text; missing fields become null; a record with a value that cannot
//! be cast is quarantined whole (never half-loaded) with its file, line and reason.
//!
//! String values are kept byte-exact as JSON decodes them (double-encoded UTF-8 stays as it is).

use std::borrow::Cow;
use std::fmt;

use dagrun_core::plan::Column as ColumnDecl;
use dagrun_core::slice::Day;
use dagrun_core::spec::ColumnType;
use polars::prelude::*;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::days::{DayRule, Verdict};
use crate::scan::{self, Span};
use crate::strings::StringColumn;

/// A record set aside because it could not be parsed or cast.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct BadRecord {
    pub file: String,
    /// 1-based line where the record starts.
    pub line: u64,
    pub reason: String,
    /// The record's text, cut to [`MAX_RECORD_TEXT`] bytes.
    pub record: String,
}

/// How much of a bad record's text is kept.
pub(crate) const MAX_RECORD_TEXT: usize = 4096;

/// The declared schema, prepared for fast field lookup.
#[derive(Debug, Clone)]
pub(crate) struct RecordSchema {
    pub columns: Vec<ColumnDecl>,
    /// Source field -> the columns read from it (a field may feed several columns). Ignored
    /// fields (`ignore_fields`) feed none.
    fields: Vec<(String, Vec<usize>)>,
    /// Whether undeclared fields and missing declared ones are counted (`on_new_fields`).
    track_drift: bool,
}

impl RecordSchema {
    pub(crate) fn new(columns: Vec<ColumnDecl>) -> Self {
        let mut fields: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, c) in columns.iter().enumerate() {
            match fields.iter_mut().find(|(f, _)| *f == c.from) {
                Some((_, cols)) => cols.push(i),
                None => fields.push((c.from.clone(), vec![i])),
            }
        }
        Self { columns, fields, track_drift: false }
    }

    /// Counts undeclared fields other than `ignored`, and records without a declared field.
    /// Costs a little per record, so only extracts with `on_new_fields: warn | fail` do.
    pub(crate) fn tracking_drift(mut self, ignored: &[String]) -> Self {
        self.track_drift = true;
        for field in ignored {
            if self.lookup(field).is_none() {
                self.fields.push((field.clone(), Vec::new()));
            }
        }
        self
    }

    fn lookup(&self, key: &str) -> Option<&[usize]> {
        self.lookup_bytes(key.as_bytes())
    }

    fn lookup_bytes(&self, key: &[u8]) -> Option<&[usize]> {
        self.fields.iter().find(|(f, _)| f.len() == key.len() && f.as_bytes() == key).map(|(_, c)| c.as_slice())
    }

    /// The Polars schema of the columns this produces.
    pub(crate) fn polars_schema(&self) -> Schema {
        self.columns.iter().map(|c| Field::new(c.name.as_str().into(), dtype(c.ty))).collect()
    }
}

pub(crate) fn dtype(ty: ColumnType) -> DataType {
    match ty {
        ColumnType::String => DataType::String,
        ColumnType::Int => DataType::Int64,
        ColumnType::Float => DataType::Float64,
        ColumnType::Bool => DataType::Boolean,
        ColumnType::TimestampMs => DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC)),
    }
}

/// A typed value of one cell before it is appended.
#[derive(Debug, Clone, PartialEq)]
enum Cell<'a> {
    Null,
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
}

enum Builder {
    Str(StringColumn),
    Int(PrimitiveChunkedBuilder<Int64Type>),
    Float(PrimitiveChunkedBuilder<Float64Type>),
    Bool(BooleanChunkedBuilder),
}

/// Per-field counts of how records differed from the declared schema (see
/// [`dagrun_core::engine::SourceDrift`]). Locations are `(file, line)`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tally {
    /// Undeclared fields, in order of first sight: name, records, first location.
    pub new_fields: Vec<(String, u64, (String, u64))>,
    /// Per declared column: records that lacked its field (counted when drift is tracked).
    pub missing: Vec<u64>,
    /// Per declared column: records quarantined for its value's type, and the first.
    pub mismatched: Vec<(u64, Option<(String, u64)>)>,
}

impl Tally {
    fn new(columns: usize) -> Self {
        Self { new_fields: Vec::new(), missing: vec![0; columns], mismatched: vec![(0, None); columns] }
    }

    /// Adds `other`, which comes after `self` in input order.
    pub(crate) fn merge(&mut self, other: Tally) {
        for (name, n, first) in other.new_fields {
            match self.new_fields.iter_mut().find(|(f, ..)| *f == name) {
                Some((_, total, _)) => *total += n,
                None => self.new_fields.push((name, n, first)),
            }
        }
        if self.missing.len() < other.missing.len() {
            self.missing.resize(other.missing.len(), 0);
            self.mismatched.resize(other.mismatched.len(), (0, None));
        }
        for (total, n) in self.missing.iter_mut().zip(other.missing) {
            *total += n;
        }
        for (mine, (n, first)) in self.mismatched.iter_mut().zip(other.mismatched) {
            mine.0 += n;
            if mine.1.is_none() {
                mine.1 = first;
            }
        }
    }

    /// Moves every line number by `lines` (a chunk parsed apart from the start of its file).
    pub(crate) fn shift_lines(&mut self, lines: u64) {
        for (.., (_, line)) in &mut self.new_fields {
            *line += lines;
        }
        for (_, first) in &mut self.mismatched {
            if let Some((_, line)) = first {
                *line += lines;
            }
        }
    }

    /// The counts, by field name, for the run record; `None` when nothing drifted.
    pub(crate) fn drift(&self, schema: &RecordSchema) -> Option<dagrun_core::engine::SourceDrift> {
        use dagrun_core::engine::{FieldCount, SourceDrift};
        let at = |(file, line): &(String, u64)| Some(format!("{file}:{line}"));
        let mut new_fields: Vec<FieldCount> = self
            .new_fields
            .iter()
            .map(|(field, records, first)| FieldCount { field: field.clone(), records: *records, first: at(first) })
            .collect();
        new_fields.sort_by(|a, b| b.records.cmp(&a.records).then_with(|| a.field.cmp(&b.field)));
        let per_column = |counts: &mut dyn Iterator<Item = (u64, Option<String>)>| -> Vec<FieldCount> {
            counts
                .zip(&schema.columns)
                .filter(|((n, _), _)| *n > 0)
                .map(|((records, first), c)| FieldCount { field: c.name.clone(), records, first })
                .collect()
        };
        let drift = SourceDrift {
            new_fields,
            mismatched: per_column(&mut self.mismatched.iter().map(|(n, first)| (*n, first.as_ref().and_then(at)))),
            missing: per_column(&mut self.missing.iter().map(|n| (*n, None))),
        };
        (!drift.is_empty()).then_some(drift)
    }
}

/// Parses records into columns. One per worker; results are concatenated in input order.
pub(crate) struct Batch<'s> {
    schema: &'s RecordSchema,
    builders: Vec<Builder>,
    /// Where each column's value is in the record being parsed (fast path).
    slots: Vec<Option<Span>>,
    /// Undeclared keys of the record being parsed (fast path: spans in it; full parser: names).
    unknown_spans: Vec<(usize, usize)>,
    unknown_names: Vec<String>,
    rows: usize,
    pub bad: Vec<BadRecord>,
    /// Records seen (good and bad), but those of days another run replaces.
    pub seen: u64,
    pub tally: Tally,
    /// A sliced extract's rule for the day of a row, and the day of the file being parsed.
    days: Option<(&'s DayRule, Day)>,
    /// Rows of days another run replaces, left for it.
    pub other_days: u64,
}

impl<'s> Batch<'s> {
    pub(crate) fn new(schema: &'s RecordSchema, capacity: usize) -> Self {
        let builders = schema
            .columns
            .iter()
            .map(|c| {
                let name: PlSmallStr = c.name.as_str().into();
                match c.ty {
                    ColumnType::String => Builder::Str(StringColumn::new(name, capacity)),
                    ColumnType::Int | ColumnType::TimestampMs => {
                        Builder::Int(PrimitiveChunkedBuilder::new(name, capacity))
                    }
                    ColumnType::Float => Builder::Float(PrimitiveChunkedBuilder::new(name, capacity)),
                    ColumnType::Bool => Builder::Bool(BooleanChunkedBuilder::new(name, capacity)),
                }
            })
            .collect();
        Self {
            schema,
            builders,
            slots: vec![None; schema.columns.len()],
            unknown_spans: Vec::new(),
            unknown_names: Vec::new(),
            rows: 0,
            bad: Vec::new(),
            seen: 0,
            tally: Tally::new(schema.columns.len()),
            days: None,
            other_days: 0,
        }
    }

    /// The records pushed next are of a file of `file_day`, sorted into days by `rule`.
    pub(crate) fn set_file_day(&mut self, rule: Option<&'s DayRule>, file_day: Option<Day>) {
        self.days = rule.zip(file_day);
    }

    /// Parses every non-blank line of `text` as one record; `first_line` is the line number of
    /// the first line of `text` in its file. Returns the number of line breaks in `text`.
    pub(crate) fn push_lines(&mut self, file: &str, text: &[u8], first_line: u64) -> u64 {
        let mut line_no = first_line;
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', text).chain(std::iter::once(text.len())) {
            let line = trim_ascii(&text[start..end]);
            if !line.is_empty() {
                self.push_record(file, line_no, line);
            }
            line_no += 1;
            start = end + 1;
        }
        line_no - first_line - 1
    }

    /// Parses a whole file holding JSON documents: one object, several concatenated objects, or
    /// arrays of objects. An unparseable tail is quarantined as one record.
    pub(crate) fn push_documents(&mut self, file: &str, text: &[u8]) {
        let mut stream = serde_json::Deserializer::from_slice(text).into_iter::<&RawValue>();
        loop {
            let start = skip_ws(text, stream.byte_offset());
            match stream.next() {
                None => break,
                Some(Ok(value)) => {
                    let raw = value.get().as_bytes();
                    if raw.first() == Some(&b'[') {
                        match serde_json::from_slice::<Vec<&RawValue>>(raw) {
                            Ok(items) => {
                                for item in items {
                                    let offset = item.get().as_ptr() as usize - text.as_ptr() as usize;
                                    self.push_record(file, line_of(text, offset), item.get().as_bytes());
                                }
                            }
                            Err(e) => self.quarantine(file, line_of(text, start), raw, format!("invalid JSON: {e}")),
                        }
                    } else {
                        self.push_record(file, line_of(text, start), raw);
                    }
                }
                Some(Err(e)) => {
                    let rest = &text[start.min(text.len())..];
                    let reason =
                        format!("invalid JSON at line {} column {}: {}", e.line(), e.column(), describe_json_error(&e));
                    self.quarantine(file, line_of(text, start), rest, reason);
                    break;
                }
            }
        }
    }

    fn quarantine(&mut self, file: &str, line: u64, raw: &[u8], reason: String) {
        self.seen += 1;
        let cut = raw.len().min(MAX_RECORD_TEXT);
        let mut record = String::from_utf8_lossy(&raw[..cut]).into_owned();
        if cut < raw.len() {
            record.push_str("...");
        }
        self.bad.push(BadRecord { file: file.to_string(), line, reason, record });
    }

    /// Parses one record. It is appended only if every declared column converts. Flat objects
    /// take the fast path ([`scan`]); everything else, errors included, the full parser.
    pub(crate) fn push_record(&mut self, file: &str, line: u64, raw: &[u8]) {
        let schema = self.schema;
        let track = schema.track_drift;
        let mut slots = std::mem::take(&mut self.slots);
        slots.fill(None);
        let mut spans = std::mem::take(&mut self.unknown_spans);
        spans.clear();
        self.unknown_names.clear();
        let text = simdutf8::basic::from_utf8(raw).ok();
        let wanted = |key: &[u8]| {
            let found = schema.lookup_bytes(key);
            if track && found.is_none() {
                let at = key.as_ptr() as usize - raw.as_ptr() as usize;
                spans.push((at, at + key.len()));
            }
            found
        };
        let converted = match text {
            Some(text) if scan::flat_object(raw, wanted, &mut slots) => {
                if track {
                    for (c, slot) in slots.iter().enumerate() {
                        self.tally.missing[c] += u64::from(slot.is_none());
                    }
                }
                convert_all(schema, slots.iter().map(|s| s.map(|(a, b)| &text[a as usize..b as usize])))
            }
            _ => {
                spans.clear();
                let unknown = track.then_some(&mut self.unknown_names);
                match parse_full(schema, raw, unknown) {
                    Ok(values) => {
                        if track {
                            for (c, value) in values.iter().enumerate() {
                                self.tally.missing[c] += u64::from(value.is_none());
                            }
                        }
                        convert_all(schema, values.iter().map(|v| v.map(RawValue::get)))
                    }
                    Err(reason) => {
                        self.slots = slots;
                        self.unknown_spans = spans;
                        self.quarantine(file, line, raw, reason);
                        return;
                    }
                }
            }
        };
        self.slots = slots;
        if track {
            for &(a, b) in &spans {
                self.note_new_field(&raw[a..b], file, line);
            }
            for name in std::mem::take(&mut self.unknown_names) {
                self.note_new_field(name.as_bytes(), file, line);
            }
        }
        self.unknown_spans = spans;
        match converted {
            Ok(cells) => {
                if let Some((rule, file_day)) = self.days {
                    let millis = match &cells[rule.column] {
                        Cell::Int(ms) => Some(*ms),
                        _ => None,
                    };
                    match rule.verdict(millis, file_day) {
                        Verdict::Keep => {}
                        Verdict::OtherDay => {
                            self.other_days += 1;
                            return;
                        }
                        Verdict::Bad(reason) => return self.quarantine(file, line, raw, reason),
                    }
                }
                for (builder, cell) in self.builders.iter_mut().zip(cells) {
                    append(builder, cell);
                }
                self.rows += 1;
                self.seen += 1;
            }
            Err((column, reason)) => {
                let (n, first) = &mut self.tally.mismatched[column];
                *n += 1;
                first.get_or_insert_with(|| (file.to_string(), line));
                self.quarantine(file, line, raw, reason)
            }
        }
    }

    fn note_new_field(&mut self, key: &[u8], file: &str, line: u64) {
        match self.tally.new_fields.iter_mut().find(|(f, ..)| f.as_bytes() == key) {
            Some((_, n, _)) => *n += 1,
            None => {
                self.tally.new_fields.push((String::from_utf8_lossy(key).into_owned(), 1, (file.to_string(), line)))
            }
        }
    }

    /// The parsed rows as a DataFrame with the declared column types.
    pub(crate) fn finish(self) -> PolarsResult<DataFrame> {
        let columns: Vec<Column> = self
            .builders
            .into_iter()
            .zip(&self.schema.columns)
            .map(|(b, decl)| {
                let series = match b {
                    Builder::Str(b) => b.finish().into_series(),
                    Builder::Int(b) => {
                        let ca = b.finish();
                        if decl.ty == ColumnType::TimestampMs {
                            ca.into_datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC)).into_series()
                        } else {
                            ca.into_series()
                        }
                    }
                    Builder::Float(b) => b.finish().into_series(),
                    Builder::Bool(b) => b.finish().into_series(),
                };
                series.into_column()
            })
            .collect();
        DataFrame::new(self.rows, columns)
    }

    #[cfg(test)]
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }
}

fn append(builder: &mut Builder, cell: Cell) {
    match (builder, cell) {
        (Builder::Str(b), Cell::Str(s)) => b.push(s.as_ref()),
        (Builder::Str(b), _) => b.push_null(),
        (Builder::Int(b), Cell::Int(i)) => b.append_value(i),
        (Builder::Int(b), _) => b.append_null(),
        (Builder::Float(b), Cell::Float(f)) => b.append_value(f),
        (Builder::Float(b), _) => b.append_null(),
        (Builder::Bool(b), Cell::Bool(v)) => b.append_value(v),
        (Builder::Bool(b), _) => b.append_null(),
    }
}

/// Parses a record that is not a flat object with the full parser: the raw values of the declared
/// columns, or why the record is not one JSON object.
/// With `unknown`, the record's undeclared keys are added to it.
fn parse_full<'r>(
    schema: &RecordSchema,
    raw: &'r [u8],
    unknown: Option<&mut Vec<String>>,
) -> Result<Vec<Option<&'r RawValue>>, String> {
    let mut slots: Vec<Option<&RawValue>> = vec![None; schema.columns.len()];
    let parsed = {
        let mut de = serde_json::Deserializer::from_slice(raw);
        let seed = RecordSeed { schema, slots: &mut slots, unknown };
        seed.deserialize(&mut de).and_then(|()| de.end())
    };
    match parsed {
        Ok(()) => Ok(slots),
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            Err(e.to_string().split(" at line ").next().unwrap_or("").to_string())
        }
        Err(e) => Err(format!("invalid JSON: {}", describe_json_error(&e))),
    }
}

/// Converts the raw values of one record (JSON text, in column order), or says which column
/// (by index) cannot be, and why.
fn convert_all<'r>(
    schema: &RecordSchema,
    values: impl Iterator<Item = Option<&'r str>>,
) -> Result<Vec<Cell<'r>>, (usize, String)> {
    let mut cells = Vec::with_capacity(schema.columns.len());
    for (i, (column, value)) in schema.columns.iter().zip(values).enumerate() {
        match convert(column.ty, value) {
            Ok(cell) => cells.push(cell),
            Err(why) => {
                let shown = value.map_or("nothing".to_string(), shorten);
                let field =
                    if column.from == column.name { String::new() } else { format!(" (field `{}`)", column.from) };
                return Err((i, format!("column `{}`{field}: {why}, found {shown}", column.name)));
            }
        }
    }
    Ok(cells)
}

/// Converts one raw JSON value to the declared type, or says why not.
fn convert(ty: ColumnType, text: Option<&str>) -> Result<Cell<'_>, &'static str> {
    let Some(text) = text else { return Ok(Cell::Null) };
    let first = text.as_bytes().first().copied().unwrap_or(b'n');
    if first == b'n' {
        return Ok(Cell::Null);
    }
    match ty {
        ColumnType::String => match first {
            b'"' => Ok(Cell::Str(json_str(text).ok_or("expected text")?)),
            b't' | b'f' | b'-' | b'0'..=b'9' => Ok(Cell::Str(Cow::Borrowed(text))),
            _ => Err("expected text"),
        },
        ColumnType::Int | ColumnType::TimestampMs => {
            let what = if ty == ColumnType::Int { "expected a whole number" } else { "expected epoch milliseconds" };
            let number: Cow<str> = match first {
                b'"' => {
                    let s = json_str(text).ok_or(what)?;
                    if s.trim().is_empty() {
                        return Ok(Cell::Null);
                    }
                    Cow::Owned(s.trim().to_string())
                }
                b'-' | b'0'..=b'9' => Cow::Borrowed(text),
                _ => return Err(what),
            };
            let value = parse_whole(&number).ok_or(what)?;
            if ty == ColumnType::TimestampMs && !(MIN_TIMESTAMP_MS..=MAX_TIMESTAMP_MS).contains(&value) {
                return Err("epoch milliseconds outside the years 0001 to 9999 that Parquet readers accept");
            }
            Ok(Cell::Int(value))
        }
        ColumnType::Float => {
            let what = "expected a number";
            match first {
                b'"' => {
                    let s = json_str(text).ok_or(what)?;
                    if s.trim().is_empty() {
                        return Ok(Cell::Null);
                    }
                    s.trim().parse::<f64>().map(Cell::Float).map_err(|_| what)
                }
                b'-' | b'0'..=b'9' => text.parse::<f64>().map(Cell::Float).map_err(|_| what),
                _ => Err(what),
            }
        }
        ColumnType::Bool => match text {
            "true" | "\"true\"" => Ok(Cell::Bool(true)),
            "false" | "\"false\"" => Ok(Cell::Bool(false)),
            "\"\"" => Ok(Cell::Null),
            _ => Err("expected true or false"),
        },
    }
}

/// 0001-01-01T00:00:00Z in epoch milliseconds: the first instant common readers (DuckDB, Spark,
/// pyarrow) accept.
pub(crate) const MIN_TIMESTAMP_MS: i64 = -62_135_596_800_000;
/// 9999-12-31T23:59:59.999Z in epoch milliseconds: the last one.
pub(crate) const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// An integer, or a float with no fractional part (`1540919166796.0`), within i64.
fn parse_whole(text: &str) -> Option<i64> {
    if let Ok(i) = text.parse::<i64>() {
        return Some(i);
    }
    let f: f64 = text.parse().ok()?;
    (f.fract() == 0.0 && f.abs() < 9.2e18).then_some(f as i64)
}

/// The value of a JSON string literal; borrowed when it has no escapes. `None` where serde_json
/// would not decode it either (an unknown escape; a lone surrogate, which serde_json decides).
fn json_str(text: &str) -> Option<Cow<'_, str>> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    let mut out = String::with_capacity(inner.len());
    let mut rest = inner;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let escape = rest.as_bytes().get(at + 1)?;
        rest = &rest[at + 2..];
        out.push(match escape {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let code = rest.get(..4).and_then(|h| u32::from_str_radix(h, 16).ok())?;
                match char::from_u32(code) {
                    Some(c) if !rest.as_bytes()[..4].contains(&b'+') => {
                        rest = &rest[4..];
                        c
                    }
                    // Surrogates (pairs or lone): serde_json's rules decide.
                    _ => return serde_json::from_str::<String>(text).ok().map(Cow::Owned),
                }
            }
            _ => return None,
        });
    }
    out.push_str(rest);
    Some(Cow::Owned(out))
}

fn shorten(text: &str) -> String {
    if text.len() <= 60 {
        return text.to_string();
    }
    let mut end = 57;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

fn describe_json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    text.split(" at line ").next().unwrap_or(&text).to_string()
}

fn trim_ascii(line: &[u8]) -> &[u8] {
    let start = line.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(line.len());
    let end = line.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &line[start..end]
}

fn skip_ws(text: &[u8], mut offset: usize) -> usize {
    while offset < text.len() && text[offset].is_ascii_whitespace() {
        offset += 1;
    }
    offset
}

fn line_of(text: &[u8], offset: usize) -> u64 {
    text[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() as u64 + 1
}

/// Reads one JSON object, keeping raw values of wanted fields only.
struct RecordSeed<'a, 'de> {
    schema: &'a RecordSchema,
    slots: &'a mut Vec<Option<&'de RawValue>>,
    /// Where undeclared keys go, when they are counted.
    unknown: Option<&'a mut Vec<String>>,
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'_, 'de> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RecordSeed<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match self.schema.lookup(&key) {
                Some(cols) => {
                    let value: &'de RawValue = map.next_value()?;
                    for &c in cols {
                        self.slots[c] = Some(value);
                    }
                }
                None => {
                    if let Some(unknown) = self.unknown.as_mut() {
                        unknown.push(key.into_owned());
                    }
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(cols: &[(&str, ColumnType, &str)]) -> RecordSchema {
        RecordSchema::new(
            cols.iter().map(|(n, t, f)| ColumnDecl { name: n.to_string(), ty: *t, from: f.to_string() }).collect(),
        )
    }

    fn song_schema() -> RecordSchema {
        schema(&[
            ("artist_name", ColumnType::String, "artist_name"),
            ("year", ColumnType::Int, "year"),
            ("artist_latitude", ColumnType::Float, "artist_latitude"),
        ])
    }

    #[test]
    fn numbers_become_text_where_text_is_declared_and_missing_fields_null() {
        let s = song_schema();
        let mut b = Batch::new(&s, 4);
        b.push_documents("a.json", br#"{"artist_name": 311, "year": 0, "extra": [1,2]}"#);
        b.push_documents("b.json", br#"{"artist_name": "Caf\u00e9", "artist_latitude": null}"#);
        assert!(b.bad.is_empty(), "{:?}", b.bad);
        let df = b.finish().unwrap();
        let names: Vec<_> = df.column("artist_name").unwrap().str().unwrap().iter().collect();
        assert_eq!(names, vec![Some("311"), Some("Café")]);
        let years: Vec<_> = df.column("year").unwrap().i64().unwrap().iter().collect();
        assert_eq!(years, vec![Some(0), None]);
    }

    #[test]
    fn a_record_that_cannot_be_cast_is_quarantined_whole() {
        let s = song_schema();
        let mut b = Batch::new(&s, 4);
        b.push_lines("log.json", b"{\"artist_name\": \"a\", \"year\": 1999}\n{\"artist_name\": \"b\", \"year\": \"soon\"}\n\n{\"year\": 2001}", 1);
        assert_eq!(b.rows(), 2);
        assert_eq!(b.bad.len(), 1);
        assert_eq!(b.bad[0].line, 2);
        assert_eq!(b.bad[0].reason, "column `year`: expected a whole number, found \"soon\"");
        assert_eq!(b.seen, 3);
    }

    #[test]
    fn malformed_json_is_quarantined_with_its_line() {
        let s = song_schema();
        let mut b = Batch::new(&s, 4);
        b.push_lines("log.json", b"{\"year\": 1}\n{\"year\": 2,\n[1]\n\"text\"", 7);
        assert_eq!(b.rows(), 1);
        let lines: Vec<_> = b.bad.iter().map(|r| (r.line, r.reason.as_str())).collect();
        assert_eq!(lines[0].0, 8);
        assert!(lines[0].1.starts_with("invalid JSON: EOF while parsing"), "{lines:?}");
        assert_eq!(lines[1], (9, "invalid type: sequence, expected a JSON object"));
        assert_eq!(lines[2], (10, "invalid type: string \"text\", expected a JSON object"));
    }

    #[test]
    fn documents_may_be_pretty_printed_arrays_or_several_objects() {
        let s = song_schema();
        let mut b = Batch::new(&s, 4);
        b.push_documents("a.json", b"{\n  \"year\": 1\n}\n{\"year\": 2}");
        b.push_documents("b.json", b"[{\"year\": 3},\n {\"year\": 4}]");
        b.push_documents("empty.json", b"");
        b.push_documents("broken.json", b"{\"year\": 5}\n{\"year\": ");
        assert_eq!(b.rows(), 5);
        assert_eq!(b.bad.len(), 1);
        assert_eq!((b.bad[0].file.as_str(), b.bad[0].line), ("broken.json", 2));
    }

    #[test]
    fn epoch_milliseconds_and_float_encoded_integers() {
        let s = schema(&[
            ("ts", ColumnType::Int, "ts"),
            ("start_time", ColumnType::TimestampMs, "ts"),
            ("registration", ColumnType::Int, "registration"),
            ("user_id", ColumnType::String, "userId"),
        ]);
        let mut b = Batch::new(&s, 4);
        b.push_lines("l", br#"{"ts":1541105830796,"registration":1540919166796.0,"userId":""}"#, 1);
        let df = b.finish().unwrap();
        assert_eq!(df.column("registration").unwrap().i64().unwrap().get(0), Some(1540919166796));
        let ts = df.column("start_time").unwrap();
        assert_eq!(ts.dtype(), &DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC)));
        assert_eq!(df.column("user_id").unwrap().str().unwrap().get(0), Some(""));
    }

    #[test]
    fn timestamps_that_parquet_readers_cannot_read_are_quarantined() {
        let s = schema(&[("start_time", ColumnType::TimestampMs, "ts")]);
        let mut b = Batch::new(&s, 4);
        let text = format!(
            "{{\"ts\": {MIN_TIMESTAMP_MS}}}\n{{\"ts\": {MAX_TIMESTAMP_MS}}}\n{{\"ts\": 1000000000000000000}}\n{{\"ts\": {}}}",
            MIN_TIMESTAMP_MS - 1
        );
        b.push_lines("l", text.as_bytes(), 1);
        assert_eq!(b.rows(), 2);
        let bad: Vec<_> = b.bad.iter().map(|r| (r.line, r.reason.as_str())).collect();
        let why = "column `start_time` (field `ts`): epoch milliseconds outside the years 0001 to 9999 that \
                   Parquet readers accept, found";
        assert_eq!(bad, vec![(3, &*format!("{why} 1000000000000000000")), (4, &*format!("{why} -62135596800001"))]);
    }

    #[test]
    fn text_with_literal_quotes_and_double_encoded_utf8_is_kept_byte_exact() {
        let s = schema(&[("ua", ColumnType::String, "userAgent"), ("loc", ColumnType::String, "location")]);
        let mut b = Batch::new(&s, 4);
        let line = "{\"userAgent\":\"\\\"Mozilla\\/5.0\\\"\",\"location\":\"Ã\u{83}Â©\"}";
        b.push_lines("l", line.as_bytes(), 1);
        let df = b.finish().unwrap();
        assert_eq!(df.column("ua").unwrap().str().unwrap().get(0), Some("\"Mozilla/5.0\""));
        assert_eq!(df.column("loc").unwrap().str().unwrap().get(0), Some("Ã\u{83}Â©"));
    }

    /// A small deterministic generator of records: flat objects of every value kind, nested
    /// values, escapes, and damaged copies of them.
    fn random_record(seed: &mut u64) -> Vec<u8> {
        let mut next = |n: u64| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed % n
        };
        let keys = ["year", "artist_name", "artist_latitude", "other", "year\\u0041", ""];
        let values = [
            "1999",
            "-0",
            "0.5",
            "1e3",
            "-2.5E-2",
            "01",
            "1.",
            "true",
            "false",
            "null",
            "nul",
            "\"text\"",
            "\"esc\\\"aped\\/\"",
            "\"\\u00e9\"",
            "\"\\q\"",
            "[1, {\"a\": 2}]",
            "{\"x\": [null]}",
            "\"Ã\u{83}Â©\"",
            "311",
            "\"tab\there\"",
            "-",
            "2e",
            "\"\"",
        ];
        let mut text = String::from(if next(20) == 0 { "[" } else { "{" });
        let fields = next(5);
        for f in 0..fields {
            if f > 0 {
                text.push_str([",", ", ", " ,\n"][next(3) as usize]);
            }
            text.push_str(&format!(
                "\"{}\"{}{}",
                keys[next(keys.len() as u64) as usize],
                [":", " : "][next(2) as usize],
                values[next(values.len() as u64) as usize]
            ));
        }
        text.push_str(if next(20) == 0 { "]" } else { "}" });
        let mut bytes = text.into_bytes();
        match next(6) {
            0 if !bytes.is_empty() => {
                let at = next(bytes.len() as u64) as usize;
                bytes.remove(at);
            }
            1 => {
                let at = next(bytes.len() as u64 + 1) as usize;
                bytes.insert(at, b",:{}\"\\ x\x01\xff"[next(10) as usize]);
            }
            _ => {}
        }
        bytes
    }

    #[test]
    fn the_fast_path_finds_what_the_full_parser_finds_and_nothing_it_rejects() {
        let s = song_schema();
        let mut seed = 0x9e3779b97f4a7c15u64;
        let mut fast = 0;
        for _ in 0..200_000 {
            let raw = random_record(&mut seed);
            let full = parse_full(&s, &raw, None);
            let mut slots = vec![None; s.columns.len()];
            let Ok(text) = std::str::from_utf8(&raw) else { continue };
            if scan::flat_object(&raw, |k| s.lookup_bytes(k), &mut slots) {
                fast += 1;
                let full = full.unwrap_or_else(|e| panic!("the fast path accepted {text:?}, the full parser said {e}"));
                let full: Vec<Option<&str>> = full.iter().map(|v| v.map(RawValue::get)).collect();
                let found: Vec<Option<&str>> =
                    slots.iter().map(|s| s.map(|(a, b)| &text[a as usize..b as usize])).collect();
                assert_eq!(found, full, "{text:?}");
            }
        }
        assert!(fast > 20_000, "the fast path took only {fast} records");
    }

    #[test]
    fn undeclared_fields_are_counted_per_field_on_both_paths_unless_ignored() {
        let s = song_schema().tracking_drift(&["known".to_string()]);
        let mut b = Batch::new(&s, 4);
        // Flat (fast path), nested (full parser), a cast failure, and invalid JSON (not counted).
        b.push_lines(
            "log.json",
            b"{\"year\": 1, \"genre\": \"x\", \"known\": 1}\n\
              {\"year\": 2, \"genre\": {\"a\": 1}, \"mood\": [1]}\n\
              {\"year\": \"soon\", \"genre\": \"y\"}\n\
              {\"genre\": ",
            1,
        );
        let drift = b.tally.drift(&s).expect("drift");
        let new: Vec<_> = drift.new_fields.iter().map(|f| (f.field.as_str(), f.records, f.first.as_deref())).collect();
        assert_eq!(new, vec![("genre", 3, Some("log.json:1")), ("mood", 1, Some("log.json:2"))]);
        let mismatched: Vec<_> =
            drift.mismatched.iter().map(|f| (f.field.as_str(), f.records, f.first.as_deref())).collect();
        assert_eq!(mismatched, vec![("year", 1, Some("log.json:3"))]);
        // Three records parsed as objects, none with artist_name or artist_latitude.
        let missing: Vec<_> = drift.missing.iter().map(|f| (f.field.as_str(), f.records)).collect();
        assert_eq!(missing, vec![("artist_name", 3), ("artist_latitude", 3)]);
    }

    #[test]
    fn without_tracking_only_type_mismatches_are_counted() {
        let s = song_schema();
        let mut b = Batch::new(&s, 4);
        b.push_lines("log.json", b"{\"year\": 1, \"genre\": \"x\"}\n{\"year\": true}", 1);
        let drift = b.tally.drift(&s).expect("drift");
        assert!(drift.new_fields.is_empty() && drift.missing.is_empty(), "{drift:?}");
        assert_eq!(drift.mismatched.len(), 1);
        assert_eq!(drift.describe(), "1 record with a value of the wrong type: year (1 record)");
    }

    #[test]
    fn escaped_text_decodes_like_serde_json() {
        for text in [
            r#""plain""#,
            r#""\"q\" \/ \\ \b\f\n\r\t""#,
            r#""\u00e9 \u00C3\u0083 \ud83d\ude00 end""#,
            r#""lone \ud800 x""#,
            r#""lone \udc00""#,
            r#""\u+0e9""#,
            r#""Ã\u0083""#,
            r#""\\u0041""#,
        ] {
            let ours = json_str(text).map(|c| c.into_owned());
            assert_eq!(ours, serde_json::from_str::<String>(text).ok(), "{text}");
        }
        assert_eq!(json_str(r#""\q""#), None);
    }

    #[test]
    fn line_numbers_count_from_the_first_line_of_the_text() {
        let s = song_schema();
        let mut b = Batch::new(&s, 4);
        let breaks = b.push_lines("l", b"{\"year\": 1}\n\n{\"year\": x}\n", 1);
        assert_eq!(breaks, 3);
        assert_eq!(b.bad[0].line, 3);
    }
}
