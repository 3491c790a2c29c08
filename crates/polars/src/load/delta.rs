//! `kind: load` with `format: delta`: the table's Parquet files are written into its hive folders
//! under names unique to this attempt (`year=2018/part-00000-<run>-<instance>-<attempt>.parquet`),
//! then made the table's new version in one Delta commit (see [`dagrun_core::storage::delta`]).
//! Until the commit, no Delta reader sees them; if anything fails before it, they are deleted at
//! once. The previous version's files stay for the table's `retention`, then a vacuum takes them.
//!
//! Columns are typed the way every Delta reader reads them: timestamps as microseconds in UTC
//! (Delta's `timestamp`), unsigned integers widened to signed ones.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use dagrun_core::decisions::RunDecisions;
use dagrun_core::engine::TaskContext;
use dagrun_core::path::{compile_glob, is_s3};
use dagrun_core::plan::{Load, Replace};
use dagrun_core::slice::{Day, describe_days};
use dagrun_core::storage::delta::{DeltaColumn, DeltaCommit, DeltaFile, DeltaSnapshot, DeltaTables, Orphans, Removing};
use dagrun_core::storage::{
    MANIFEST, SUCCESS_MARKER, Storage, StorageErrorKind, Storages, TABLE_MARKER, TableManifest, not_a_table_message,
};
use polars::prelude::*;
use tracing::{info, warn};

use super::Loaded;
use super::partition::{partition, write_parts};
use super::replace;
use crate::error::{Error, Result};
use crate::published::read_published;

/// Delta's name of a Polars type, and the type to cast the column to first (if any).
fn delta_type(column: &str, dtype: &DataType) -> Result<(&'static str, Option<DataType>)> {
    let utc_micros = DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC));
    Ok(match dtype {
        DataType::String => ("string", None),
        DataType::Boolean => ("boolean", None),
        DataType::Int64 => ("long", None),
        DataType::Int32 => ("integer", None),
        DataType::Int16 => ("short", None),
        DataType::Int8 => ("byte", None),
        DataType::UInt32 | DataType::UInt64 => ("long", Some(DataType::Int64)),
        DataType::UInt16 => ("integer", Some(DataType::Int32)),
        DataType::UInt8 => ("short", Some(DataType::Int16)),
        DataType::Float64 => ("double", None),
        DataType::Float32 => ("float", None),
        DataType::Date => ("date", None),
        DataType::Datetime(_, _) => ("timestamp", (dtype != &utc_micros).then_some(utc_micros)),
        DataType::Null => ("string", Some(DataType::String)),
        other => {
            return Err(Error::InvalidOutput(format!(
                "column `{column}` is of type {other}, which this dagrun does not write to Delta tables"
            )));
        }
    })
}

/// The table with Delta's types, and its Delta columns.
fn delta_ready(mut df: DataFrame) -> Result<(DataFrame, Vec<DeltaColumn>)> {
    let mut columns = Vec::with_capacity(df.width());
    let schema = df.schema().clone();
    for (name, dtype) in schema.iter() {
        let (ty, cast) = delta_type(name, dtype)?;
        if let Some(target) = cast {
            let converted = match (dtype, &target) {
                // A zone-less datetime holds UTC wall time: stamp it UTC, then widen to micros.
                (DataType::Datetime(unit, None), DataType::Datetime(_, _)) => df
                    .column(name)
                    .and_then(|c| c.cast(&DataType::Datetime(*unit, Some(TimeZone::UTC))))
                    .and_then(|c| c.cast(&target)),
                _ => df.column(name).and_then(|c| c.cast(&target)),
            }
            .map_err(|e| Error::polars(format!("converting column `{name}` for Delta"), e))?;
            df.with_column(converted).map_err(|e| Error::polars(format!("converting column `{name}` for Delta"), e))?;
        }
        columns.push(DeltaColumn { name: name.to_string(), ty: ty.to_string() });
    }
    Ok((df, columns))
}

/// Deletes the files of an attempt that did not commit.
async fn remove_own(storage: &Arc<dyn Storage>, paths: &[String]) {
    for path in paths {
        if let Err(e) = storage.delete(path).await {
            warn!(error = %e, "could not remove a file of the failed load");
        }
    }
}

/// What is at a load's place before it writes: the Delta table there (the version the load
/// reads, and commits right after), or a table in dagrun's Parquet convention (whose files go once
/// the Delta table holds the data), or nothing.
struct Place {
    snapshot: Option<DeltaSnapshot>,
    parquet: Option<TableManifest>,
}

/// Whether a Delta table may be committed at `path`: nothing there, a Delta table (whose owner the
/// commit checks), or a table in dagrun's Parquet convention. Anything else is refused before a
/// byte is written: dagrun never mixes its files with files it did not create.
async fn place_check(storage: &Arc<dyn Storage>, delta: &Arc<dyn DeltaTables>, path: &str) -> Result<Place> {
    if !is_s3(path) && storage.head(path).await.is_ok() {
        return Err(Error::InvalidOutput(format!("refusing to replace {path}: it exists and is not a folder")));
    }
    if let Some(snapshot) = delta.snapshot(path, None).await? {
        return Ok(Place { snapshot: Some(snapshot), parquet: None });
    }
    let glob = compile_glob("**").map_err(|e| Error::Internal(e.to_string()))?;
    let listed = match storage.list(path, &glob).await {
        Ok(listed) => listed,
        Err(e) if e.kind == StorageErrorKind::NotFound => return Ok(Place { snapshot: None, parquet: None }),
        Err(e) => return Err(e.into()),
    };
    let Some(first) = listed.first() else { return Ok(Place { snapshot: None, parquet: None }) };
    let root = path.trim_end_matches('/');
    let refused =
        || Error::InvalidOutput(format!("refusing to replace {root}: {}", not_a_table_message(&first.relative)));
    match storage.read(&format!("{root}/{MANIFEST}")).await {
        Ok(bytes) => match serde_json::from_slice::<TableManifest>(&bytes) {
            Ok(manifest) => Ok(Place { snapshot: None, parquet: Some(manifest) }),
            Err(_) => Err(refused()),
        },
        Err(_) => Err(refused()),
    }
}

/// What a load of a run scoped to some days replaces (see [`dagrun_core::slice`]).
struct Scope {
    days: BTreeSet<Day>,
    whole: bool,
    record: BTreeMap<String, String>,
    file_record: Option<BTreeMap<String, String>>,
}

impl Scope {
    fn of(decisions: &RunDecisions, task_index: usize) -> Option<Scope> {
        let slice = decisions.slice().filter(|s| s.decided)?;
        let record = slice.records.get(&task_index)?.clone();
        Some(Scope {
            days: slice.days.clone(),
            whole: slice.whole.contains(&task_index),
            record,
            file_record: slice.file_records.get(&task_index).cloned(),
        })
    }
}

/// Whether the load of task `task_index` replaces its whole table in this run (not only some
/// days' rows): then the table it loads is the table it publishes.
pub(crate) fn replaces_whole(decisions: &RunDecisions, task_index: usize) -> bool {
    Scope::of(decisions, task_index).is_none_or(|s| s.whole)
}

/// Writes `df`'s files and commits them as the table's new version.
pub(crate) async fn run(
    fingerprint: Option<String>,
    df: DataFrame,
    spec: &Load,
    storages: &Storages,
    cx: &TaskContext,
    options: &crate::LocalOptions,
    task_index: usize,
) -> Result<Loaded> {
    let write_concurrency = options.write_concurrency;
    let delta = storages.delta(&spec.path)?.clone();
    let storage = storages.for_path(&spec.path)?.clone();
    let Place { snapshot, parquet: previous } = place_check(&storage, &delta, &spec.path).await?;
    let base_version = snapshot.as_ref().map(|s| s.version);
    let scope = Scope::of(&cx.decisions, task_index);
    // Only part of the table is replaced: rows of some days, or rows merged by key.
    let partial = scope.as_ref().filter(|s| !s.whole);
    if partial.is_some() && previous.is_some() {
        return Err(Error::InvalidOutput(format!(
            "{} is a table in dagrun's Parquet convention, which a run of some days cannot update in place: run \
             once over the whole input to make it a Delta table; nothing was written",
            spec.path
        )));
    }
    let root = spec.path.trim_end_matches('/').to_string();
    let name = spec.table.clone();
    let tag = format!("{}-{}-{}", cx.run_id, cx.instance, cx.attempt);
    let mut df = df;
    if let (Some(_), Replace::Merge { keys, order_by }) = (partial, &spec.mode) {
        cx.progress.set_message("merging");
        let published = read_published(storages, &root, base_version).await?;
        let before = published.height();
        let (keys, order_by) = (keys.clone(), order_by.clone());
        df = crate::on_workers(move || -> Result<DataFrame> {
            let (df, _) = delta_ready(df)?;
            replace::merge(df, published, &keys, &order_by)
        })
        .await??;
        info!(published = before, merged = df.height(), "merged with the published rows");
    }
    let rows = df.height() as u64;
    let load = spec.clone();
    let file_name = format!("part-00000-{tag}.parquet");
    let slice_column = match &spec.mode {
        Replace::Partitions { slice_column } => Some(slice_column.clone()),
        _ => None,
    };
    let check_days = partial.filter(|_| slice_column.is_some()).map(|s| s.days.clone());
    cx.progress.set_message("partitioning");
    let (mut parts, columns, bounds) = crate::on_workers(move || -> Result<_> {
        let (df, columns) = delta_ready(df)?;
        if let (Some(column), Some(days)) = (&slice_column, &check_days) {
            replace::check_rows_in_days(&df, column, days, &name)?;
        }
        let parts = partition(&name, &df, &load, &file_name)?;
        let mut bounds = BTreeMap::new();
        if let Some(column) = &slice_column {
            for part in &parts {
                if let Some(b) = replace::bounds(&part.data, column)? {
                    bounds.insert(part.path.clone(), b);
                }
            }
        }
        Ok((parts, columns, bounds))
    })
    .await??;
    let mut bounds = bounds;
    // `mode: partitions` on some days: the files holding those days are cut, the rest stay.
    let mut removing = Removing::All;
    let mut kept_rows = 0u64;
    let mut predicate = None;
    if let (Some(scope), Replace::Partitions { slice_column }) = (partial, &spec.mode) {
        cx.progress.set_message("finding the run's days in the table");
        let (removed, kept, deleted) = match &snapshot {
            Some(snapshot) => replace::cut_days(snapshot, &storage, &root, slice_column, &scope.days, &tag).await?,
            None => (Vec::new(), Vec::new(), 0),
        };
        for part in &kept {
            kept_rows += part.data.height() as u64;
            if let Some(b) = replace::bounds(&part.data, slice_column)? {
                bounds.insert(part.path.clone(), b);
            }
        }
        info!(
            days = scope.days.len(),
            files_cut = removed.len(),
            rows_deleted = deleted,
            rows_kept = kept_rows,
            "replacing the run's days"
        );
        predicate = Some(format!("{slice_column} on {}", describe_days(&scope.days)));
        parts.extend(kept);
        removing = Removing::Files(removed);
    }
    let count = parts.len();
    let partitions = if spec.partition_by.is_empty() { 0 } else { count };
    info!(files = count, rows, "writing");
    cx.progress.set_length(Some(count as u64), "files");
    let mut attempted = Vec::with_capacity(count);
    let writing = std::time::Instant::now();
    let written = write_parts(
        parts,
        &storage,
        |rel| format!("{root}/{rel}"),
        spec.compression,
        cx,
        write_concurrency,
        &mut attempted,
    )
    .await;
    let written = match written {
        Ok(w) if !cx.cancel.is_cancelled() => w,
        Ok(_) => {
            remove_own(&storage, &attempted).await;
            return Err(Error::Cancelled);
        }
        Err(e) => {
            remove_own(&storage, &attempted).await;
            return Err(e);
        }
    };
    let files: Vec<DeltaFile> = written
        .into_iter()
        .map(|w| DeltaFile {
            bounds: bounds.remove(&w.relative).into_iter().collect(),
            path: w.relative,
            size: w.size,
            rows: w.rows,
            partition_values: w.values,
        })
        .collect();
    let commit = DeltaCommit {
        table: spec.table.clone(),
        run_id: cx.run_id.clone(),
        fingerprint: fingerprint.clone(),
        columns,
        partition_by: spec.partition_by.clone(),
        files: files.clone(),
        allow_breaking_schema: options.allow_breaking_schema,
        retention: spec.retention,
        removing,
        slices: scope.as_ref().map(|s| s.record.clone()),
        file_days: scope.as_ref().and_then(|s| s.file_record.clone()),
        predicate,
        base_version,
        fence: cx.fence.clone(),
    };
    let write_s = writing.elapsed().as_secs_f64();
    cx.progress.set_message("committing");
    let committing = std::time::Instant::now();
    match delta.commit(&spec.path, commit).await {
        Ok(committed) => {
            if !committed.added_columns.is_empty() {
                warn!(
                    table = %spec.table,
                    columns = %committed.added_columns.join(", "),
                    "the table's schema evolved: new nullable columns were added"
                );
            }
            info!(
                version = committed.version,
                removed = committed.removed_files,
                write_s = format!("{write_s:.2}"),
                commit_s = format!("{:.2}", committing.elapsed().as_secs_f64()),
                "committed"
            );
            // No writer that lost the lake can commit to this table any more: what such writers
            // (and this run's earlier attempts) left in it can go.
            match delta.remove_orphans(&spec.path, Orphans::AfterCommit { tag: &tag }, cx.fence.as_deref()).await {
                Ok(removed) if removed.is_empty() => {}
                Ok(removed) => info!(
                    files = removed.len(),
                    "removed what loads that never committed left in the table, such as {}", removed[0]
                ),
                Err(e) => warn!(error = %e, "could not look for what loads that never committed left in the table"),
            }
            if let Some(old) = previous {
                // The table was in dagrun's Parquet convention: its files are not the Delta table's.
                let root = spec.path.trim_end_matches('/');
                let mut old_files: Vec<String> = old.files.iter().map(|f| format!("{root}/{}", f.path)).collect();
                old_files.push(format!("{root}/{MANIFEST}"));
                old_files.push(format!("{root}/{SUCCESS_MARKER}"));
                old_files.push(format!("{root}/{TABLE_MARKER}"));
                remove_own(&storage, &old_files).await;
                info!(files = old.files.len(), "converted from dagrun's Parquet convention to Delta");
            }
            Ok(Loaded { rows, files: count, partitions, version: Some(committed.version) })
        }
        Err(e) => {
            // A commit whose answer was lost may still have landed: only files no version names
            // are removed.
            let landed = match delta.snapshot(&spec.path, None).await {
                Ok(Some(s)) => {
                    s.manifest.fingerprint == fingerprint
                        && s.manifest.run_id == cx.run_id
                        && files.iter().all(|f| s.manifest.files.iter().any(|m| m.path == f.path))
                }
                _ => false,
            };
            if landed && e.kind != StorageErrorKind::Conflict {
                warn!(error = %e, "the commit's answer was lost, but the table holds it");
                return Ok(Loaded { rows, files: count, partitions, version: None });
            }
            remove_own(&storage, &attempted).await;
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_get_the_types_delta_readers_read() {
        let df = df!(
            "id" => [1i64],
            "n" => [1u32],
            "name" => ["a"],
            "x" => [1.5f64],
        )
        .unwrap();
        let ts = Column::new("t".into(), [1_541_105_830_796i64])
            .cast(&DataType::Datetime(TimeUnit::Milliseconds, None))
            .unwrap();
        let mut df = df;
        df.with_column(ts).unwrap();
        let (df, columns) = delta_ready(df).unwrap();
        let types: Vec<(&str, &str)> = columns.iter().map(|c| (c.name.as_str(), c.ty.as_str())).collect();
        assert_eq!(types, vec![("id", "long"), ("n", "long"), ("name", "string"), ("x", "double"), ("t", "timestamp")]);
        assert_eq!(df.column("t").unwrap().dtype(), &DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)));
        // The instant is kept: epoch milliseconds become the same epoch microseconds.
        let micros = df.column("t").unwrap().cast(&DataType::Int64).unwrap().i64().unwrap().get(0).unwrap();
        assert_eq!(micros, 1_541_105_830_796_000);
    }
}
