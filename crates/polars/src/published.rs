//! Reading a published table back: for a Delta table, the files of its current version (or of
//! `as_of`); in dagrun's Parquet convention, the files its `_manifest.json` names. Hive partition
//! columns are restored from folder names (`%XX` decoded, `__HIVE_DEFAULT_PARTITION__` as null,
//! whole numbers as integers).

use std::io::Cursor;

use dagrun_core::storage::{MANIFEST, Storages, TableManifest};
use polars::prelude::*;

use crate::error::{Error, Result};
use crate::hive::{DEFAULT_PARTITION, unescape_partition_value};

/// What is published at `path`: the Delta table's version (the latest, or `as_of`), else the
/// manifest of dagrun's Parquet convention.
pub async fn published_manifest(storages: &Storages, path: &str, as_of: Option<u64>) -> Result<TableManifest> {
    let root = path.trim_end_matches('/');
    if let Some(delta) = &storages.delta
        && let Some(snapshot) = delta.snapshot(root, as_of).await?
    {
        return Ok(snapshot.manifest);
    }
    if let Some(v) = as_of {
        return Err(Error::InvalidOutput(format!(
            "{root} is not a Delta table, so it has no version {v} to read (only `format: delta` tables keep versions)"
        )));
    }
    let manifest_bytes = storages.for_path(root)?.read(&format!("{root}/{MANIFEST}")).await?;
    serde_json::from_slice(&manifest_bytes)
        .map_err(|e| Error::InvalidOutput(format!("the manifest of {root} is unreadable: {e}")))
}

/// The published table at `path` (at version `as_of` of a Delta table) as one DataFrame.
pub async fn read_published(storages: &Storages, path: &str, as_of: Option<u64>) -> Result<DataFrame> {
    read_published_with_files(storages, path, as_of).await.map(|(df, _)| df)
}

/// [`read_published`], and how many files the table has.
pub async fn read_published_with_files(
    storages: &Storages,
    path: &str,
    as_of: Option<u64>,
) -> Result<(DataFrame, usize)> {
    let root = path.trim_end_matches('/');
    let manifest = published_manifest(storages, root, as_of).await?;
    let storage = storages.for_path(root)?;
    let files = manifest.files.len();
    let paths: Vec<String> = manifest.files.iter().map(|f| format!("{root}/{}", f.path)).collect();
    let contents = storage.read_many(&paths, 32).await;
    let mut frames = Vec::with_capacity(paths.len());
    let mut keys: Vec<Vec<(String, Option<String>)>> = Vec::with_capacity(paths.len());
    for (file, data) in manifest.files.iter().zip(contents) {
        let data = data?;
        let df = ParquetReader::new(Cursor::new(data))
            .finish()
            .map_err(|e| Error::polars(format!("reading {root}/{}", file.path), e))?;
        let segments: Vec<(String, Option<String>)> = file
            .path
            .split('/')
            .filter_map(|s| s.split_once('='))
            .map(|(k, v)| (unescape_partition_value(k), (v != DEFAULT_PARTITION).then(|| unescape_partition_value(v))))
            .collect();
        frames.push(df);
        keys.push(segments);
    }
    // A partition column is an integer when every value is a whole number.
    let names: Vec<String> = manifest.partition_by.clone();
    let integer: Vec<bool> = names
        .iter()
        .map(|n| {
            keys.iter()
                .flat_map(|k| k.iter().filter(|(c, _)| c == n))
                .all(|(_, v)| v.as_deref().is_none_or(|v| v.parse::<i64>().is_ok()))
        })
        .collect();
    let mut out: Option<DataFrame> = None;
    for (mut df, segments) in frames.into_iter().zip(keys) {
        let height = df.height();
        for (n, is_int) in names.iter().zip(&integer) {
            let value = segments.iter().find(|(c, _)| c == n).and_then(|(_, v)| v.clone());
            let column = if *is_int {
                let v: Option<i64> = value.and_then(|v| v.parse().ok());
                Column::new_scalar(
                    n.as_str().into(),
                    Scalar::new(DataType::Int64, v.map_or(AnyValue::Null, AnyValue::Int64)),
                    height,
                )
            } else {
                Column::new_scalar(
                    n.as_str().into(),
                    Scalar::new(DataType::String, value.map_or(AnyValue::Null, |v| AnyValue::StringOwned(v.into()))),
                    height,
                )
            };
            df.with_column(column).map_err(|e| Error::polars("adding partition columns", e))?;
        }
        match &mut out {
            None => out = Some(df),
            Some(acc) => {
                acc.vstack_mut_owned(df).map_err(|e| Error::polars(format!("joining the files of {root}"), e))?;
            }
        }
    }
    let mut df = out.unwrap_or_default();
    df.rechunk_mut();
    Ok((df, files))
}
