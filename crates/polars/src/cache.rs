//! The task cache: the table an extract read or a transform made, kept as one Parquet file in the
//! runs folder (`<runs>/_cache/<task>-<fingerprint>.parquet`, named by `<task>.json`) so that the
//! next run whose task has the same fingerprint (the same files, by path, size and modification
//! time or ETag, the same configuration, the same upstream; see [`dagrun_core::resume`]) reads
//! that one file instead of reading every input file or running the SQL again. An incremental run
//! that adds one day of logs still needs all of song_data, and the songs and artists made from
//! it, for its joins and checks: this is what keeps it a small fraction of a full run.
//!
//! Only tasks that no sliced extract feeds are cached (their tables change with the days), and
//! only extracts that set no record aside. A cache that cannot be read or written is skipped with
//! a warning; it never fails a run.

use std::io::Cursor;

use dagrun_core::engine::TaskContext;
use dagrun_core::path::join_path;
use dagrun_core::plan::{Plan, PlannedTask};
use dagrun_core::storage::Storages;
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

/// What `<task>.json` says of the cached table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Cached {
    /// The extract's fingerprint when it was read.
    pub fingerprint: String,
    /// The Parquet file holding it, relative to the cache folder.
    pub file: String,
    /// The run that read it.
    pub run_id: String,
    /// Its rows, records and files, as that run reported them.
    pub rows: u64,
    pub records: u64,
    pub files: usize,
}

fn folder(plan: &Plan) -> String {
    join_path(plan.runs_dir(), "_cache")
}

/// The cached table of `task` if it was read with `fingerprint`.
pub(crate) async fn read(
    storages: &Storages,
    plan: &Plan,
    task: &str,
    fingerprint: &str,
) -> Option<(Cached, DataFrame)> {
    let dir = folder(plan);
    let storage = storages.for_path(&dir).ok()?;
    let meta = storage.read(&join_path(&dir, &format!("{task}.json"))).await.ok()?;
    let cached: Cached = serde_json::from_slice(&meta).ok()?;
    if cached.fingerprint != fingerprint {
        debug!("the extract cache was read from other files");
        return None;
    }
    let bytes = match storage.read(&join_path(&dir, &cached.file)).await {
        Ok(bytes) => bytes,
        Err(e) => {
            warn!(error = %e, "could not read the extract cache; reading the input");
            return None;
        }
    };
    match ParquetReader::new(Cursor::new(bytes)).finish() {
        Ok(df) if df.height() as u64 == cached.rows => Some((cached, df)),
        Ok(_) => None,
        Err(e) => {
            warn!(error = %e, "the extract cache is unreadable; reading the input");
            None
        }
    }
}

/// Keeps `table`, made by `task` from `records` records in `files` files, for the next run with
/// the same fingerprint.
pub(crate) async fn keep(
    storages: &Storages,
    task: &PlannedTask,
    cx: &TaskContext,
    table: &DataFrame,
    records: u64,
    files: usize,
) {
    let Some(fingerprint) = &cx.fingerprint else { return };
    let cached = Cached {
        fingerprint: fingerprint.clone(),
        file: format!("{}-{}.parquet", task.id(), &fingerprint[..fingerprint.len().min(16)]),
        run_id: cx.run_id.clone(),
        rows: table.height() as u64,
        records,
        files,
    };
    write(storages, &cx.plan, task.id(), cached, table).await;
}

/// Writes `table` as the cache of `task`; the previous cache file is removed once the new one is
/// named.
async fn write(storages: &Storages, plan: &Plan, task: &str, cached: Cached, table: &DataFrame) {
    let dir = folder(plan);
    let Ok(storage) = storages.for_path(&dir) else { return };
    let meta_path = join_path(&dir, &format!("{task}.json"));
    let previous: Option<Cached> = storage.read(&meta_path).await.ok().and_then(|b| serde_json::from_slice(&b).ok());
    let mut table = table.clone();
    let encoded = crate::on_workers(move || -> std::result::Result<Vec<u8>, PolarsError> {
        let mut buffer = Vec::new();
        ParquetWriter::new(&mut buffer).with_compression(ParquetCompression::Lz4Raw).finish(&mut table)?;
        Ok(buffer)
    })
    .await;
    let bytes = match encoded {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => return warn!(error = %e, "could not encode the extract cache"),
        Err(e) => return warn!(error = %e, "could not encode the extract cache"),
    };
    let written = async {
        storage.write(&join_path(&dir, &cached.file), bytes).await?;
        storage.write(&meta_path, serde_json::to_vec_pretty(&cached).expect("serializes")).await
    }
    .await;
    if let Err(e) = written {
        return warn!(error = %e, "could not keep the extract's table for the next run");
    }
    if let Some(old) = previous.filter(|p| p.file != cached.file)
        && let Err(e) = storage.delete(&join_path(&dir, &old.file)).await
    {
        debug!(error = %e, "could not remove the previous extract cache");
    }
}
