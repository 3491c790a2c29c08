//! A table's files, whatever its format: rows split into hive partitions
//! (`year=2018/month=11/part-00000.parquet`, values escaped by [`crate::hive`]), each file
//! encoded as Parquet (the lean writer for tiny files), and written a slice at a time while the
//! next slice is encoded.

use std::sync::Arc;

use dagrun_core::engine::TaskContext;
use dagrun_core::plan::Load;
use dagrun_core::spec::Compression;
use dagrun_core::storage::Storage;
use dagrun_core::units::format_size;
use polars::prelude::*;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::hive::{DEFAULT_PARTITION, escape_partition_value};
use crate::lean_parquet::LeanWriter;

const MAX_SEGMENT_BYTES: usize = 255;

/// The folder segment `column=value` for one partition key value.
pub(crate) fn partition_segment(column: &str, value: Option<&str>) -> Result<String> {
    let value = value.map_or_else(|| DEFAULT_PARTITION.to_string(), escape_partition_value);
    let segment = format!("{}={value}", escape_partition_value(column));
    if segment.len() > MAX_SEGMENT_BYTES {
        return Err(Error::InvalidOutput(format!(
            "partition folder `{}...` would be {} bytes long; file systems allow {MAX_SEGMENT_BYTES}",
            &segment[..segment.char_indices().nth(40).map_or(segment.len(), |(i, _)| i)],
            segment.len()
        )));
    }
    Ok(segment)
}

/// A partition key value as text, as Spark and Hive write it; `None` for null.
fn key_text(value: &AnyValue) -> Option<String> {
    match value {
        AnyValue::Null => None,
        AnyValue::String(s) => Some(s.to_string()),
        AnyValue::StringOwned(s) => Some(s.to_string()),
        AnyValue::Boolean(b) => Some(b.to_string()),
        other => {
            let text = other.to_string();
            Some(text.trim_matches('"').to_string())
        }
    }
}

fn parquet_compression(c: Compression) -> ParquetCompression {
    match c {
        Compression::Zstd => ParquetCompression::Zstd(None),
        Compression::Snappy => ParquetCompression::Snappy,
        Compression::Uncompressed => ParquetCompression::Uncompressed,
    }
}

pub(crate) fn encode(mut df: DataFrame, compression: Compression) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    ParquetWriter::new(&mut buf)
        .with_compression(parquet_compression(compression))
        .with_statistics(StatisticsOptions::default())
        .finish(&mut df)
        .map_err(|e| Error::polars("writing parquet", e))?;
    Ok(buf)
}

/// The file of each partition in dagrun's Parquet convention (a load replaces the whole folder).
pub(super) const FILE_NAME: &str = "part-00000.parquet";

/// Files encoded and written per slice: the next slice is encoded while this one is written.
const SLICE_FILES: usize = 1024;

/// One file of a table: where it goes, its partition values and its rows.
pub(crate) struct Part {
    /// Relative path, `year=2018/artist_id=AR1/part-00000.parquet`.
    pub path: String,
    /// The raw partition values in `partition_by` order; `None` for null or empty.
    pub values: Vec<(String, Option<String>)>,
    /// Its rows, without the partition columns.
    pub data: DataFrame,
}

/// Splits the table into its files in a deterministic order. Rows are grouped by the folder their
/// values are written to, not by the values: a null and an empty value (both
/// `__HIVE_DEFAULT_PARTITION__`) share one file, so neither overwrites the other. `file_name`
/// names each partition's file.
pub(crate) fn partition(table_name: &str, df: &DataFrame, spec: &Load, file_name: &str) -> Result<Vec<Part>> {
    for column in &spec.partition_by {
        if !df.schema().contains(column) {
            let available: Vec<String> = df.get_column_names().iter().map(|c| c.to_string()).collect();
            return Err(Error::MissingColumn {
                table: table_name.into(),
                column: column.clone(),
                available: available.join(", "),
            });
        }
    }
    if spec.partition_by.is_empty() {
        return Ok(vec![Part { path: file_name.to_string(), values: Vec::new(), data: df.clone() }]);
    }
    let sorted = df
        .sort(
            spec.partition_by.iter().map(String::as_str).collect::<Vec<_>>(),
            SortMultipleOptions::default().with_maintain_order(true),
        )
        .map_err(|e| Error::polars("sorting by partition columns", e))?;
    // Sorted, each partition is a run of rows: slice the frame (no copy) at each change of key.
    let keys: Vec<Series> = spec
        .partition_by
        .iter()
        .map(|c| Ok(sorted.column(c).map_err(|e| Error::polars("partitioning", e))?.as_materialized_series().rechunk()))
        .collect::<Result<_>>()?;
    let height = sorted.height();
    let mut starts: Vec<usize> = if height == 0 { Vec::new() } else { vec![0] };
    for row in 1..height {
        let changed = keys.iter().any(|k| match (k.get(row), k.get(row - 1)) {
            (Ok(a), Ok(b)) => a != b,
            _ => true,
        });
        if changed {
            starts.push(row);
        }
    }
    let data = sorted.drop_many(spec.partition_by.iter().map(String::as_str));
    let named: Vec<Part> = (0..starts.len())
        .into_par_iter()
        .map(|g| {
            let start = starts[g];
            let end = starts.get(g + 1).copied().unwrap_or(height);
            let mut segments = Vec::with_capacity(keys.len());
            let mut values = Vec::with_capacity(keys.len());
            for (column, key) in spec.partition_by.iter().zip(&keys) {
                let value = key.get(start).map_err(|e| Error::polars("partitioning", e))?;
                let text = key_text(&value);
                segments.push(partition_segment(column, text.as_deref())?);
                values.push((column.clone(), text.filter(|t| !t.is_empty())));
            }
            let rows = data.slice(start as i64, end - start);
            Ok(Part { path: format!("{}/{file_name}", segments.join("/")), values, data: rows })
        })
        .collect::<Result<_>>()?;
    merge_same_paths(named)
}

/// Joins the groups whose values map to the same folder, keeping the first one's place.
fn merge_same_paths(named: Vec<Part>) -> Result<Vec<Part>> {
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::with_capacity(named.len());
    let mut out: Vec<Part> = Vec::with_capacity(named.len());
    for part in named {
        match at.get(&part.path) {
            Some(&i) => {
                out[i]
                    .data
                    .vstack_mut_owned(part.data)
                    .map_err(|e| Error::polars("joining rows of one partition", e))?;
            }
            None => {
                at.insert(part.path.clone(), out.len());
                out.push(part);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
/// Encodes files in parallel: `(relative path, Parquet bytes)`, in the same order.
fn encode_all(parts: Vec<(String, DataFrame)>, compression: Compression) -> Result<Vec<(String, Vec<u8>)>> {
    parts.into_par_iter().map(|(path, df)| Ok((path, encode(df, compression)?))).collect()
}

#[cfg(test)]
/// Encodes the table into files: `(relative path, bytes)` in a deterministic order.
pub(crate) fn encode_files(table_name: &str, df: &DataFrame, spec: &Load) -> Result<Vec<(String, Vec<u8>)>> {
    let parts = partition(table_name, df, spec, FILE_NAME)?;
    encode_all(parts.into_iter().map(|p| (p.path, p.data)).collect(), spec.compression)
}

/// A file written by [`write_parts`].
pub(crate) struct Written {
    /// Relative to the table.
    pub relative: String,
    pub size: u64,
    pub rows: u64,
    pub values: Vec<(String, Option<String>)>,
}

/// Encodes `parts` a slice at a time on the workers while the slice before is written to
/// `place(relative)`. Every path it may have written is pushed to `attempted` first, so that a
/// failure can remove them.
pub(crate) async fn write_parts(
    parts: Vec<Part>,
    storage: &Arc<dyn Storage>,
    place: impl Fn(&str) -> String,
    compression: Compression,
    cx: &TaskContext,
    write_concurrency: usize,
    attempted: &mut Vec<String>,
) -> Result<Vec<Written>> {
    let count = parts.len();
    // Tiny partitions (a file per artist) take the lean writer; the rest Polars' writer.
    let lean = Arc::new(parts.first().and_then(|p| LeanWriter::new(p.data.schema())));
    let mut slices: Vec<Vec<Part>> = Vec::new();
    let mut rest = parts.into_iter().peekable();
    while rest.peek().is_some() {
        slices.push(rest.by_ref().take(SLICE_FILES).collect());
    }
    let encode_slice = |slice: Vec<Part>| {
        let lean = Arc::clone(&lean);
        crate::on_workers(move || {
            slice
                .into_par_iter()
                .map(|p| {
                    let rows = p.data.height() as u64;
                    let data = match lean.as_ref().as_ref().and_then(|w| w.encode(&p.data)) {
                        Some(data) => data,
                        None => encode(p.data, compression)?,
                    };
                    Ok((data, p.path, p.values, rows))
                })
                .collect::<Result<Vec<_>>>()
        })
    };
    let mut files = Vec::with_capacity(count);
    let mut written = 0u64;
    let mut slices = slices.into_iter();
    let mut current = match slices.next() {
        Some(first) => Some(encode_slice(first).await??),
        None => None,
    };
    while let Some(encoded) = current.take() {
        if cx.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let n = encoded.len() as u64;
        written += encoded.iter().map(|(d, ..)| d.len() as u64).sum::<u64>();
        let batch: Vec<(String, Vec<u8>)> = encoded
            .into_iter()
            .map(|(data, relative, values, rows)| {
                let path = place(&relative);
                attempted.push(path.clone());
                files.push(Written { relative, size: data.len() as u64, rows, values });
                (path, data)
            })
            .collect();
        let writing = storage.write_many(batch, write_concurrency);
        match slices.next() {
            Some(next) => {
                let (wrote, encoded) = tokio::join!(writing, encode_slice(next));
                wrote?;
                current = Some(encoded??);
            }
            None => writing.await?,
        }
        cx.progress.inc(n);
        cx.progress.set_message(&format!("{} written", format_size(written)));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use dagrun_core::spec::TableFormat;

    use super::*;

    #[test]
    fn escaping_keeps_every_value_inside_its_folder() {
        assert_eq!(escape_partition_value("AR/../x"), "AR%2F..%2Fx");
        assert_eq!(escape_partition_value(".."), "..");
        assert_eq!(escape_partition_value("a=b:c%"), "a%3Db%3Ac%25");
        assert_eq!(escape_partition_value(""), DEFAULT_PARTITION);
        assert_eq!(escape_partition_value("Café Zürich"), "Café Zürich");
        assert_eq!(partition_segment("year", None).unwrap(), "year=__HIVE_DEFAULT_PARTITION__");
        assert_eq!(partition_segment("artist_id", Some("..")).unwrap(), "artist_id=..");
        assert!(partition_segment("a", Some(&"x".repeat(300))).is_err());
    }

    #[test]
    fn values_that_map_to_one_folder_share_its_file() {
        let df = df!(
            "artist" => [None, Some(""), Some(DEFAULT_PARTITION), Some("a")],
            "v" => [1i64, 2, 3, 4]
        )
        .unwrap();
        let spec = Load {
            table: "t".into(),
            path: "out/t".into(),
            partition_by: vec!["artist".into()],
            compression: Compression::Zstd,
            format: TableFormat::Parquet,
            retention: dagrun_core::plan::DEFAULT_RETENTION,
            mode: dagrun_core::plan::Replace::Overwrite,
        };
        let parts = partition("t", &df, &spec, FILE_NAME).unwrap();
        let found: Vec<(&str, usize)> = parts.iter().map(|p| (p.path.as_str(), p.data.height())).collect();
        assert_eq!(
            found,
            vec![
                ("artist=__HIVE_DEFAULT_PARTITION__/part-00000.parquet", 2),
                ("artist=%5F_HIVE_DEFAULT_PARTITION__/part-00000.parquet", 1),
                ("artist=a/part-00000.parquet", 1),
            ]
        );
    }

    #[test]
    fn files_are_named_deterministically_per_partition() {
        let df = df!(
            "year" => [Some(2018i64), Some(2018), None],
            "artist" => ["a/b", "c", "c"],
            "v" => [1i64, 2, 3]
        )
        .unwrap();
        let spec = Load {
            table: "t".into(),
            path: "out/t".into(),
            partition_by: vec!["year".into(), "artist".into()],
            compression: Compression::Zstd,
            format: TableFormat::Parquet,
            retention: dagrun_core::plan::DEFAULT_RETENTION,
            mode: dagrun_core::plan::Replace::Overwrite,
        };
        let files = encode_files("t", &df, &spec).unwrap();
        let paths: Vec<_> = files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "year=__HIVE_DEFAULT_PARTITION__/artist=c/part-00000.parquet",
                "year=2018/artist=a%2Fb/part-00000.parquet",
                "year=2018/artist=c/part-00000.parquet",
            ]
        );
    }
}
