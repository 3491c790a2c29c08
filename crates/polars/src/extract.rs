//! `kind: extract`: list files under a root by glob, read them concurrently in batches of bounded
//! size, parse each batch in parallel into one table, and quarantine what cannot be read. Small
//! files (song_data) are read together into memory and parsed in one pass per batch, not one
//! reader per file.

use std::sync::Arc;

use dagrun_core::engine::TaskContext;
use dagrun_core::plan::Extract;

use dagrun_core::spec::JsonFormat;
use dagrun_core::storage::{ObjectMeta, Storage, compile_glob};
use polars::prelude::*;
use rayon::prelude::*;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::json::{BadRecord, Batch, RecordSchema};
use crate::load::human_bytes;

/// Bytes read per batch: bounds memory on large inputs while keeping many reads in flight.
const BATCH_BYTES: u64 = 256 << 20;
/// Files per batch, whatever their size.
const BATCH_FILES: usize = 50_000;
/// JSON-lines files are split into chunks of about this size for parallel parsing.
const CHUNK_BYTES: usize = 4 << 20;

/// What an extract produced.
pub struct Extracted {
    pub table: DataFrame,
    pub files: usize,
    pub records: u64,
    pub bad: Vec<BadRecord>,
}

pub async fn run(
    spec: &Extract,
    storage: &Arc<dyn Storage>,
    cx: &TaskContext,
    read_concurrency: usize,
) -> Result<Extracted> {
    let glob =
        compile_glob(&spec.glob).map_err(|e| Error::InvalidOutput(format!("invalid glob `{}`: {e}", spec.glob)))?;
    let files = storage.list(&spec.path, &glob).await?;
    let schema = Arc::new(RecordSchema::new(spec.schema.clone()));
    if files.is_empty() {
        warn!(path = %spec.path, glob = %spec.glob, "no files matched; the table is empty");
        let table = DataFrame::empty_with_schema(&schema.polars_schema());
        return Ok(Extracted { table, files: 0, records: 0, bad: Vec::new() });
    }
    let total_bytes: u64 = files.iter().map(|f| f.size).sum();
    info!(files = files.len(), bytes = total_bytes, "reading");
    cx.progress.set_length(Some(files.len() as u64), "files");

    let mut frames = Vec::new();
    let mut bad = Vec::new();
    let mut records = 0u64;
    let mut bytes_read = 0u64;
    for batch in batches(&files) {
        if cx.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let paths: Vec<String> = batch.iter().map(|f| f.path.clone()).collect();
        let contents = storage.read_many(&paths, read_concurrency).await;
        let contents: Vec<Vec<u8>> = contents.into_iter().collect::<std::result::Result<_, _>>()?;
        bytes_read += contents.iter().map(|c| c.len() as u64).sum::<u64>();
        cx.progress.set_message(&format!("{} of {}", human_bytes(bytes_read), human_bytes(total_bytes)));
        let names: Vec<String> = batch.iter().map(|f| f.path.clone()).collect();
        let schema = schema.clone();
        let format = spec.format;
        let parsed = crate::on_workers(move || parse(&schema, format, &names, &contents)).await??;
        frames.push(parsed.0);
        bad.extend(parsed.1);
        records += parsed.2;
        cx.progress.inc(batch.len() as u64);
    }
    let table = concat(frames, &schema)?;
    Ok(Extracted { table, files: files.len(), records, bad })
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

/// One unit of parallel parsing.
enum Unit<'a> {
    /// Whole files of JSON documents.
    Documents(Vec<(&'a str, &'a [u8])>),
    /// A run of lines of one JSON-lines file, starting at `first_line`.
    Lines { file: &'a str, text: &'a [u8], first_line: u64 },
}

fn parse(
    schema: &RecordSchema,
    format: JsonFormat,
    names: &[String],
    contents: &[Vec<u8>],
) -> Result<(DataFrame, Vec<BadRecord>, u64)> {
    let mut units = Vec::new();
    match format {
        JsonFormat::Json => {
            let mut group = Vec::new();
            let mut size = 0;
            for (name, data) in names.iter().zip(contents) {
                group.push((name.as_str(), data.as_slice()));
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
            for (name, data) in names.iter().zip(contents) {
                let mut offset = 0;
                let mut line = 1u64;
                while offset < data.len() {
                    let mut end = (offset + CHUNK_BYTES).min(data.len());
                    if end < data.len() {
                        end = data[end..].iter().position(|&b| b == b'\n').map_or(data.len(), |p| end + p + 1);
                    }
                    let text = &data[offset..end];
                    units.push(Unit::Lines { file: name, text, first_line: line });
                    line += text.iter().filter(|&&b| b == b'\n').count() as u64;
                    offset = end;
                }
            }
        }
    }
    let results: Vec<Result<(DataFrame, Vec<BadRecord>, u64)>> = units
        .par_iter()
        .map(|unit| {
            let mut batch = Batch::new(schema, 1024);
            match unit {
                Unit::Documents(files) => {
                    for (name, data) in files {
                        batch.push_documents(name, data);
                    }
                }
                Unit::Lines { file, text, first_line } => batch.push_lines(file, text, *first_line),
            }
            let bad = std::mem::take(&mut batch.bad);
            let seen = batch.seen;
            let df = batch.finish().map_err(|e| Error::polars("building the table", e))?;
            Ok((df, bad, seen))
        })
        .collect();
    let mut frames = Vec::with_capacity(results.len());
    let mut bad = Vec::new();
    let mut seen = 0;
    for r in results {
        let (df, b, s) = r?;
        frames.push(df);
        bad.extend(b);
        seen += s;
    }
    Ok((concat(frames, schema)?, bad, seen))
}

fn concat(frames: Vec<DataFrame>, schema: &RecordSchema) -> Result<DataFrame> {
    let frames: Vec<DataFrame> = frames.into_iter().filter(|f| f.height() > 0).collect();
    if frames.is_empty() {
        return Ok(DataFrame::empty_with_schema(&schema.polars_schema()));
    }
    let mut frames = frames.into_iter();
    let mut df = frames.next().expect("not empty");
    for f in frames {
        df.vstack_mut_owned(f).map_err(|e| Error::polars("joining parsed batches", e))?;
    }
    df.rechunk_mut();
    Ok(df)
}
