//! dagrun's Parquet convention: the table's files written to a staging folder beside it, then
//! published whole (a folder swap on disk, a manifest written last on S3; see
//! [`dagrun_core::storage`]). File names are deterministic, so a re-run replaces the table with
//! identical file names and no duplicates.

use std::sync::Arc;

use dagrun_core::engine::TaskContext;
use dagrun_core::plan::Load;
use dagrun_core::storage::{ManifestFile, Storage, TableFile, TableManifest};
use polars::prelude::*;
use tracing::info;

use super::Loaded;
use super::partition::{FILE_NAME, partition, write_parts};
use crate::error::{Error, Result};

/// Writes `df` to a staging folder next to `spec.path`, then publishes it atomically. Files are
/// encoded a slice at a time on the workers while the slice before is being written.
pub(super) async fn run(
    fingerprint: Option<String>,
    df: DataFrame,
    spec: &Load,
    storage: &Arc<dyn Storage>,
    cx: &TaskContext,
    write_concurrency: usize,
) -> Result<Loaded> {
    let table_name = spec.table.as_str();
    let rows = df.height() as u64;
    let name = table_name.to_string();
    let load = spec.clone();
    cx.progress.set_message("partitioning");
    let parts = crate::on_workers(move || partition(&name, &df, &load, FILE_NAME)).await??;
    if cx.cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    let count = parts.len();
    let partitions = if spec.partition_by.is_empty() { 0 } else { count };
    info!(files = count, rows, "writing");
    cx.progress.set_length(Some(count as u64), "files");

    // The tag is unique per attempt: an abandoned attempt (timed out, still finishing in the
    // background) never shares files with its retry.
    let write = storage.begin_table(&spec.path, &format!("{}-{}-{}", cx.run_id, cx.instance, cx.attempt)).await?;
    let targets: Vec<TableFile> = parts.iter().map(|p| storage.table_file(&write, &p.path)).collect();
    let result = async {
        let mut attempted = Vec::new();
        let written = write_parts(
            parts,
            storage,
            |rel| storage.table_file(&write, rel).path,
            spec.compression,
            cx,
            write_concurrency,
            &mut attempted,
        )
        .await?;
        let files: Vec<ManifestFile> = written
            .into_iter()
            .map(|w| ManifestFile {
                path: storage.table_file(&write, &w.relative).relative,
                size: w.size,
                rows: Some(w.rows),
            })
            .collect();
        // The last moment to back out: a cancelled or timed-out attempt publishes nothing.
        if cx.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let manifest = TableManifest {
            table: table_name.to_string(),
            run_id: cx.run_id.clone(),
            rows,
            partition_by: spec.partition_by.clone(),
            files,
            fingerprint,
            slices: None,
            file_days: None,
        };
        // Before the table becomes current: every row written once, every file named once.
        manifest.check().map_err(|e| Error::Internal(format!("refusing to publish `{table_name}`: {e}")))?;
        // Only while the run still holds the lake.
        storage.commit_table(&write, &manifest, cx.fence.as_deref()).await?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        // Leave nothing half-written behind; the published table was never touched.
        if let Err(cleanup) = storage.abort_table(&write, &targets).await {
            tracing::warn!(error = %cleanup, "could not remove the files of the failed load");
        }
        return Err(e);
    }
    Ok(Loaded { rows, files: count, partitions, version: None })
}
