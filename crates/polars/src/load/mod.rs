//! `kind: load`: publishes a table, in its format. [`parquet`] is dagrun's Parquet convention (a
//! staging folder swapped in whole, or a manifest written last on S3); [`delta`] a Delta table
//! (files under names unique to the attempt, then one commit), with what a load of some days
//! replaces in [`replace`]. Both write their files through [`partition`].

mod delta;
mod parquet;
pub(crate) mod partition;
mod replace;

use dagrun_core::engine::TaskContext;
use dagrun_core::plan::Load;
use dagrun_core::spec::TableFormat;
use dagrun_core::storage::Storages;
use polars::prelude::*;

pub(crate) use delta::replaces_whole;

use crate::LocalOptions;
use crate::error::Result;

/// What a load wrote.
pub(crate) struct Loaded {
    pub rows: u64,
    pub files: usize,
    pub partitions: usize,
    /// The Delta version committed, for `format: delta`.
    pub version: Option<u64>,
}

/// Publishes `df` as the table `spec` describes, in its format.
pub(crate) async fn run(
    fingerprint: Option<String>,
    df: DataFrame,
    spec: &Load,
    storages: &Storages,
    cx: &TaskContext,
    options: &LocalOptions,
    task_index: usize,
) -> Result<Loaded> {
    match spec.format {
        TableFormat::Parquet => {
            let storage = storages.for_path(&spec.path)?;
            parquet::run(fingerprint, df, spec, storage, cx, options.write_concurrency).await
        }
        TableFormat::Delta => delta::run(fingerprint, df, spec, storages, cx, options, task_index).await,
    }
}
