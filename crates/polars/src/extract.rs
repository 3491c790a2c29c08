//! `kind: extract`: list files under a root by glob, read them concurrently in batches of bounded
//! size, parse each batch in parallel into one table, and quarantine what cannot be read. Small
//! files (song_data) are read together into memory and parsed in one pass per batch, not one
//! reader per file. The next batch is read while the current one is parsed.

use std::collections::HashMap;
use std::sync::Arc;

use dagrun_core::engine::TaskContext;
use dagrun_core::plan::Extract;
use dagrun_core::slice::Day;

use dagrun_core::spec::JsonFormat;
use dagrun_core::storage::{ObjectMeta, Storage, Storages};
use polars::prelude::*;
use rayon::prelude::*;
use tracing::{info, warn};

use crate::days::DayRule;
use crate::error::{Error, Result};
use crate::json::{BadRecord, Batch, RecordSchema, Tally};
use dagrun_core::units::format_size;

/// Bytes read per batch: bounds memory on large inputs while keeping many reads in flight.
const BATCH_BYTES: u64 = 256 << 20;
/// Files per batch, whatever their size.
const BATCH_FILES: usize = 50_000;
/// JSON-lines files are split into chunks of about this size for parallel parsing.
const CHUNK_BYTES: usize = 4 << 20;

/// What an extract produced.
pub(crate) struct Extracted {
    pub table: DataFrame,
    pub files: usize,
    pub records: u64,
    pub bad: Vec<BadRecord>,
    /// How the records differed from the declared schema, per field.
    pub tally: Tally,
}

/// What an attempt of an extract had done when it failed, for the next attempt of the same task
/// to go on from: the batches it parsed, and the files of the next batch it had read. A retry
/// after a transient failure then reads only what is missing, so under a sustained fault rate each
/// attempt makes progress instead of starting over. Kept only for the same listing.
#[derive(Default)]
pub(crate) struct Carry {
    listing: u64,
    batches_done: usize,
    frames: Vec<DataFrame>,
    bad: Vec<BadRecord>,
    records: u64,
    other_days: u64,
    tally: Tally,
    read: HashMap<String, Vec<u8>>,
}

impl Carry {
    /// Whether nothing is kept from an earlier attempt.
    fn is_empty(&self) -> bool {
        self.batches_done == 0 && self.read.is_empty()
    }
}

fn listing_hash(files: &[ObjectMeta]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in files {
        (&f.path, f.size, &f.etag, f.modified).hash(&mut h);
    }
    h.finish()
}

pub(crate) async fn run(
    spec: &Extract,
    storages: &Storages,
    storage: &Arc<dyn Storage>,
    cx: &TaskContext,
    read_concurrency: usize,
    carry: &mut Carry,
) -> Result<Extracted> {
    let mut files = storages.list_once(&spec.path, &spec.glob).await?;
    // A run scoped to some days reads only the files that may hold their rows: those of the days
    // and of `slice_tolerance` days around them.
    let tolerance = spec.slice_tolerance.unwrap_or(0);
    if let (Some(template), Some(slice)) = (&spec.slice, cx.decisions.slice()) {
        files.retain(|f| slice.reads(template, &f.relative, tolerance));
        info!(days = slice.days.len(), files = files.len(), "reading the run's days only");
    }
    let rule: Option<Arc<DayRule>> = match (&spec.slice, &spec.slice_column) {
        (Some(_), Some(column)) => spec.schema.iter().position(|c| &c.name == column).map(|index| {
            Arc::new(DayRule {
                column: index,
                name: column.clone(),
                tolerance,
                keep: cx.decisions.slice().and_then(|s| s.kept_days()).map(|d| Arc::new(d.clone())),
            })
        }),
        _ => None,
    };
    let mut schema = RecordSchema::new(spec.schema.clone());
    if !spec.on_new_fields.is_ignore() {
        schema = schema.tracking_drift(&spec.ignore_fields);
    }
    let schema = Arc::new(schema);
    if files.is_empty() {
        warn!(path = %spec.path, glob = %spec.glob, "no files matched; the table is empty");
        let table = DataFrame::empty_with_schema(&schema.polars_schema());
        return Ok(Extracted { table, files: 0, records: 0, bad: Vec::new(), tally: Tally::default() });
    }
    let listing = listing_hash(&files);
    if carry.listing != listing {
        *carry = Carry { listing, ..Carry::default() };
    } else if !carry.is_empty() {
        info!(
            batches = carry.batches_done,
            files = carry.read.len(),
            "going on from the last attempt: its parsed batches and read files are kept"
        );
    }
    let total_bytes: u64 = files.iter().map(|f| f.size).sum();
    info!(files = files.len(), bytes = total_bytes, "reading");
    cx.progress.set_length(Some(files.len() as u64), "files");

    let mut bytes_read = 0u64;
    let batches = batches(&files);
    // Reads the files of a batch not read yet; on a failure, hands back what was read.
    let read = |batch: &[ObjectMeta], mut have: HashMap<String, Vec<u8>>| {
        let paths: Vec<String> = batch.iter().map(|f| f.path.clone()).collect();
        let missing: Vec<String> = paths.iter().filter(|p| !have.contains_key(*p)).cloned().collect();
        async move {
            let results = storage.read_many(&missing, read_concurrency).await;
            let mut failure = None;
            for (path, result) in missing.into_iter().zip(results) {
                match result {
                    Ok(bytes) => {
                        have.insert(path, bytes);
                    }
                    Err(e) => {
                        failure.get_or_insert(e);
                    }
                }
            }
            match failure {
                Some(e) => Err((e, have)),
                None => {
                    let contents: Vec<Vec<u8>> =
                        paths.iter().map(|p| have.remove(p).expect("every file was read")).collect();
                    Ok::<_, (dagrun_core::storage::StorageError, HashMap<String, Vec<u8>>)>((paths, contents))
                }
            }
        }
    };
    let start = carry.batches_done.min(batches.len());
    if start > 0 {
        cx.progress.inc(batches[..start].iter().map(|b| b.len() as u64).sum());
    }
    let mut current = match batches.get(start) {
        Some(first) => match read(first, std::mem::take(&mut carry.read)).await {
            Ok(read) => Some(read),
            Err((e, have)) => {
                carry.read = have;
                return Err(e.into());
            }
        },
        None => None,
    };
    for (i, batch) in batches.iter().enumerate().skip(start) {
        if cx.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let (names, contents) = current.take().expect("each batch is read before it is parsed");
        bytes_read += contents.iter().map(|c| c.len() as u64).sum::<u64>();
        cx.progress.set_message(&format!("{} of {}", format_size(bytes_read), format_size(total_bytes)));
        let schema = schema.clone();
        let format = spec.format;
        let file_days: Vec<Option<Day>> =
            batch.iter().map(|f| spec.slice.as_ref().and_then(|t| t.day_of(&f.relative))).collect();
        let rule = rule.clone();
        let parsing = crate::on_workers(move || parse(&schema, format, &names, &contents, &file_days, rule.as_deref()));
        let (parsed, following) = match batches.get(i + 1) {
            Some(following) => {
                let (parsed, following) = tokio::join!(parsing, read(following, HashMap::new()));
                (parsed, Some(following))
            }
            None => (parsing.await, None),
        };
        let parsed = parsed??;
        // The batch's bytes are gone; give their pages back before the next read.
        crate::release_free_memory();
        carry.frames.push(parsed.table);
        carry.bad.extend(parsed.bad);
        carry.tally.merge(parsed.tally);
        carry.records += parsed.seen;
        carry.other_days += parsed.other_days;
        carry.batches_done = i + 1;
        cx.progress.inc(batch.len() as u64);
        match following {
            Some(Ok(read)) => current = Some(read),
            Some(Err((e, have))) => {
                carry.read = have;
                return Err(e.into());
            }
            None => {}
        }
    }
    let done = std::mem::take(carry);
    let table = crate::rechunk(stack(done.frames, &schema)?);
    if done.other_days > 0 {
        info!(
            rows = done.other_days,
            "rows of the neighbouring days' files that are of other days: left for their runs"
        );
    }
    Ok(Extracted { table, files: files.len(), records: done.records, bad: done.bad, tally: done.tally })
}

/// Consecutive runs of files of at most [`BATCH_BYTES`] / [`BATCH_FILES`].
fn batches(files: &[ObjectMeta]) -> Vec<&[ObjectMeta]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (i, f) in files.iter().enumerate() {
        if i > start && (bytes + f.size > BATCH_BYTES || i - start >= BATCH_FILES) {
            out.push(&files[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += f.size;
    }
    out.push(&files[start..]);
    out
}

/// Records parsed into a table, and those quarantined.
struct Parsed {
    table: DataFrame,
    bad: Vec<BadRecord>,
    /// Records seen, good and bad.
    seen: u64,
    tally: Tally,
    /// Rows of days another run replaces.
    other_days: u64,
}

/// One unit of parallel parsing.
enum Unit<'a> {
    /// Whole files of JSON documents, with the day each holds (sliced extracts).
    Documents(Vec<(&'a str, &'a [u8], Option<Day>)>),
    /// A run of whole lines of one JSON-lines file; `part` counts from 0 within the file.
    Lines { file: &'a str, text: &'a [u8], part: usize, day: Option<Day> },
}

/// A file's text without the UTF-8 byte order mark some editors put first.
fn without_bom(data: &[u8]) -> &[u8] {
    data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data)
}

/// Parses a batch of files; `days` holds each file's day (sliced extracts), which `rule` sorts
/// rows by.
fn parse(
    schema: &RecordSchema,
    format: JsonFormat,
    names: &[String],
    contents: &[Vec<u8>],
    days: &[Option<Day>],
    rule: Option<&DayRule>,
) -> Result<Parsed> {
    let mut units = Vec::new();
    let day_of = |i: usize| days.get(i).copied().flatten();
    match format {
        JsonFormat::Json => {
            let mut group = Vec::new();
            let mut size = 0;
            for (i, (name, data)) in names.iter().zip(contents).enumerate() {
                let data = without_bom(data);
                group.push((name.as_str(), data, day_of(i)));
                size += data.len();
                if size >= CHUNK_BYTES || group.len() >= 2048 {
                    units.push(Unit::Documents(std::mem::take(&mut group)));
                    size = 0;
                }
            }
            if !group.is_empty() {
                units.push(Unit::Documents(group));
            }
        }
        JsonFormat::JsonLines => {
            for (i, (name, data)) in names.iter().zip(contents).enumerate() {
                let data = without_bom(data);
                let day = day_of(i);
                let mut offset = 0;
                let mut part = 0;
                while offset < data.len() {
                    let mut end = (offset + CHUNK_BYTES).min(data.len());
                    if end < data.len() {
                        end = memchr::memchr(b'\n', &data[end..]).map_or(data.len(), |p| end + p + 1);
                    }
                    units.push(Unit::Lines { file: name, text: &data[offset..end], part, day });
                    part += 1;
                    offset = end;
                }
            }
        }
    }
    // Units of one file are parsed apart, each numbering its lines from 1; the line breaks each
    // unit holds put its quarantined records' lines right afterwards.
    let results: Vec<Result<(Parsed, u64)>> = units
        .par_iter()
        .map(|unit| {
            let mut batch = Batch::new(schema, 1024);
            let mut line_breaks = 0;
            match unit {
                Unit::Documents(files) => {
                    for (name, data, day) in files {
                        batch.set_file_day(rule, *day);
                        batch.push_documents(name, data);
                    }
                }
                Unit::Lines { file, text, day, .. } => {
                    batch.set_file_day(rule, *day);
                    line_breaks = batch.push_lines(file, text, 1);
                }
            }
            let bad = std::mem::take(&mut batch.bad);
            let tally = std::mem::take(&mut batch.tally);
            let (seen, other_days) = (batch.seen, batch.other_days);
            let table = batch.finish().map_err(|e| Error::polars("building the table", e))?;
            Ok((Parsed { table, bad, seen, tally, other_days }, line_breaks))
        })
        .collect();
    let mut frames = Vec::with_capacity(results.len());
    let mut bad = Vec::new();
    let mut seen = 0;
    let mut other_days = 0;
    let mut tally = Tally::default();
    let mut lines_before = 0;
    for (unit, r) in units.iter().zip(results) {
        let (Parsed { table: df, bad: mut b, seen: s, tally: mut t, other_days: o }, line_breaks) = r?;
        other_days += o;
        if let Unit::Lines { part, .. } = unit {
            if *part == 0 {
                lines_before = 0;
            }
            for record in &mut b {
                record.line += lines_before;
            }
            t.shift_lines(lines_before);
            lines_before += line_breaks;
        }
        frames.push(df);
        bad.extend(b);
        tally.merge(t);
        seen += s;
    }
    Ok(Parsed { table: stack(frames, schema)?, bad, seen, tally, other_days })
}

/// The frames one after another, their chunks kept.
fn stack(frames: Vec<DataFrame>, schema: &RecordSchema) -> Result<DataFrame> {
    let frames: Vec<DataFrame> = frames.into_iter().filter(|f| f.height() > 0).collect();
    if frames.is_empty() {
        return Ok(DataFrame::empty_with_schema(&schema.polars_schema()));
    }
    let mut frames = frames.into_iter();
    let mut df = frames.next().expect("not empty");
    for f in frames {
        df.vstack_mut_owned(f).map_err(|e| Error::polars("joining parsed batches", e))?;
    }
    Ok(df)
}

#[cfg(test)]
mod tests {
    use dagrun_core::plan::Column as ColumnDecl;
    use dagrun_core::spec::ColumnType;

    use super::*;

    #[test]
    fn a_byte_order_mark_costs_no_record() {
        let schema = RecordSchema::new(vec![ColumnDecl { name: "n".into(), ty: ColumnType::Int, from: "n".into() }]);
        let names = vec!["a.json".to_string()];
        for format in [JsonFormat::Json, JsonFormat::JsonLines] {
            let contents = vec![b"\xEF\xBB\xBF{\"n\": 1}\n{\"n\": 2}".to_vec()];
            let parsed = parse(&schema, format, &names, &contents, &[], None).unwrap();
            assert!(parsed.bad.is_empty(), "{format:?}: {:?}", parsed.bad);
            assert_eq!(parsed.table.height(), 2, "{format:?}");
        }
    }

    #[test]
    fn quarantined_lines_are_numbered_in_their_file_across_parallel_chunks() {
        let schema = RecordSchema::new(vec![ColumnDecl { name: "n".into(), ty: ColumnType::Int, from: "n".into() }]);
        let mut big = String::new();
        let mut lines = 0u64;
        while big.len() < 3 * CHUNK_BYTES {
            lines += 1;
            big.push_str(&format!("{{\"n\": {lines}, \"pad\": \"{}\"}}\n", "x".repeat(100)));
        }
        big.push_str("{\"n\": \"late\"}\n\n{\"n\": 1}");
        let names = vec!["a.json".to_string(), "b.json".to_string()];
        let contents = vec![big.into_bytes(), b"{\"n\": 1}\n{\"n\": oops}".to_vec()];
        let Parsed { table: df, bad, seen, .. } =
            parse(&schema, JsonFormat::JsonLines, &names, &contents, &[], None).unwrap();
        assert_eq!(df.height() as u64, lines + 2);
        assert_eq!(seen, lines + 4);
        let found: Vec<(&str, u64)> = bad.iter().map(|b| (b.file.as_str(), b.line)).collect();
        assert_eq!(found, vec![("a.json", lines + 1), ("b.json", 2)]);
    }
}
