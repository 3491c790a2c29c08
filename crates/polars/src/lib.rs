//! dagrun-polars: the `local` engine. Runs every task kind in this process with Polars:
//!
//! | module | task kind |
//! | --- | --- |
//! | [`extract`] (+ [`json`], `scan`, [`strings`]) | `extract`: JSON / JSON lines with a declared schema, quarantine |
//! | [`transform`] | `transform`: Polars SQL |
//! | [`checks`] | `quality_check` |
//! | [`load`] | `load`: partitioned Parquet, atomic publish |
//! | [`sql_schema`] | `validate`: a transform's columns, planned on empty tables |
//!
//! Tables live in memory between tasks, keyed by the id of the task that produced them, and are
//! dropped as soon as no remaining task reads them; a table larger than the spill threshold is
//! kept in a local Parquet file instead ([`spill`]).

mod cache;
mod checks;
mod days;
pub mod error;
mod extract;
mod hive;
mod json;
mod lean_parquet;
mod load;
pub mod published;
mod scan;
mod spill;
mod sql_schema;
mod strings;
mod transform;

pub use sql_schema::schema_check;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::sync::Arc;

use async_trait::async_trait;
use dagrun_core::engine::{Engine, Exchange, SourceDrift, TableExport, TaskContext, TaskError, TaskOutput};
use dagrun_core::plan::{Action, Extract, Load, PlannedTask};
use dagrun_core::spec::{CheckSeverity, Compression, NewFields, TableFormat};
use dagrun_core::storage::Storages;
use dagrun_core::units::{count, thousands};
use polars::prelude::{Column, DataFrame};
use tracing::{info, warn};

use crate::spill::Table;

pub use error::Error;

/// Settings of the local engine. Its worker threads are Polars' own pool, sized by
/// `POLARS_MAX_THREADS` (the CLI's `--threads`); parsing and encoding run there too, so Polars
/// code never waits on a second pool.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Files read at once.
    pub read_concurrency: usize,
    /// Files written at once.
    pub write_concurrency: usize,
    /// A table larger than this in memory (bytes) is kept in a local Parquet file between tasks;
    /// `None`: always in memory.
    pub spill_above: Option<u64>,
    /// Let a `format: delta` load drop or retype columns of the published table.
    pub allow_breaking_schema: bool,
    /// Read an extract whose files an earlier run read unchanged, or a transform of unchanged
    /// inputs, from the cache ([`cache`]).
    pub extract_cache: bool,
    /// Tables to keep once a load published them whole, for the report's answers.
    pub kept: Option<Arc<KeptTables>>,
}

/// Tables this run's loads published whole, kept for the report's answers, which the run computes
/// as its last step: the frames share the loaded table's memory, and spare reading the table back
/// from its files (a table of 98,000 one-row partitions takes seconds to read, the SQL over it
/// milliseconds). Only tables a report query reads are kept, and only when the load replaced the
/// whole table (a load of some days' rows publishes more than it loaded).
#[derive(Debug, Default)]
pub struct KeptTables {
    wanted: std::collections::BTreeSet<String>,
    frames: Mutex<HashMap<String, DataFrame>>,
}

impl KeptTables {
    /// Keeps the tables named `wanted` when a load publishes them.
    pub fn new(wanted: impl IntoIterator<Item = String>) -> Self {
        Self { wanted: wanted.into_iter().collect(), frames: Mutex::default() }
    }

    /// The table a load published whole in this run, if one did.
    pub fn get(&self, table: &str) -> Option<DataFrame> {
        self.frames.lock().expect("kept tables").get(table).cloned()
    }

    /// Lets the kept tables go.
    pub fn clear(&self) {
        self.frames.lock().expect("kept tables").clear();
    }
}

/// The default spill threshold: 1 GiB.
pub(crate) const DEFAULT_SPILL_ABOVE: u64 = 1 << 30;

impl Default for LocalOptions {
    fn default() -> Self {
        Self {
            read_concurrency: 64,
            write_concurrency: 64,
            spill_above: Some(DEFAULT_SPILL_ABOVE),
            allow_breaking_schema: false,
            extract_cache: true,
            kept: None,
        }
    }
}

/// The `local` engine.
pub struct LocalEngine {
    storages: Storages,
    options: LocalOptions,
    tables: Mutex<HashMap<String, Table>>,
    /// Tables another engine (EMR) published: read from there when not in memory.
    exchange: Arc<Exchange>,
    /// The run's folder for spilled tables, made when the first table spills, removed with
    /// the engine.
    spill_dir: Mutex<Option<tempfile::TempDir>>,
    spills: AtomicU64,
    /// What failed extract attempts had read, by task, for their retries.
    carries: Mutex<HashMap<String, extract::Carry>>,
}

/// Runs CPU work on Polars' thread pool from a blocking thread, off the async runtime.
pub(crate) async fn on_workers<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> Result<R, Error> {
    tokio::task::spawn_blocking(move || polars_core::runtime::THREAD_POOL.install(work))
        .await
        .map_err(|e| Error::Internal(format!("a worker thread failed: {e}")))
}

/// One chunk per column, made a column at a time so that only one column is ever held twice;
/// the pieces of each column go back to the system before the next is joined.
pub(crate) fn rechunk(df: DataFrame) -> DataFrame {
    let height = df.height();
    let columns: Vec<Column> = df
        .into_columns()
        .into_iter()
        .map(|c| {
            if c.n_chunks() <= 1 {
                return c;
            }
            let joined = c.rechunk();
            drop(c);
            release_free_memory();
            joined
        })
        .collect();
    // SAFETY: the same columns with the same lengths; only their chunking changed.
    unsafe { DataFrame::new_unchecked(height, columns) }
}

/// Hands memory the allocator holds free back to the system. Allocators keep freed memory in
/// per-thread caches, where the small allocations of concurrent tasks (thousands of partition
/// files) pin it; after a large table is dropped or spilled, that would keep the peak RSS as if
/// the table were still there. The binary owns the global allocator and says how to release its
/// memory with [`set_memory_release`]; without that, glibc's `malloc_trim` is called.
pub(crate) fn release_free_memory() {
    if let Some(release) = MEMORY_RELEASE.get() {
        release();
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns whole free pages of the allocator's own heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}

static MEMORY_RELEASE: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets how the engine hands free memory back to the system after dropping a large table: the
/// global allocator's own call (the binary chooses the allocator). Only the first call counts.
pub fn set_memory_release(release: fn()) {
    let _ = MEMORY_RELEASE.set(release);
}

/// Spill folders are `<TMPDIR>/dagrun-spill-<pid>-<random>`.
const SPILL_PREFIX: &str = "dagrun-spill-";

/// Removes the spill folders of dagrun processes on this host that no longer exist (killed
/// before they could clean up).
pub fn remove_dead_spills() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(SPILL_PREFIX).and_then(|rest| rest.split('-').next()?.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !dagrun_core::lease::process_alive(pid) {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => {
                    info!(path = %entry.path().display(), "removed the spill folder of a dagrun process that is gone")
                }
                Err(e) => warn!(path = %entry.path().display(), error = %e, "could not remove an old spill folder"),
            }
        }
    }
}

impl LocalEngine {
    /// A local engine reading and writing through `storages`.
    pub fn new(storages: Storages, options: LocalOptions) -> Result<Self, Error> {
        Ok(Self {
            storages,
            options,
            tables: Mutex::new(HashMap::new()),
            exchange: Arc::default(),
            spill_dir: Mutex::new(None),
            spills: AtomicU64::new(0),
            carries: Mutex::new(HashMap::new()),
        })
    }

    /// Shares the run's table exchange with other engines.
    pub fn with_exchange(mut self, exchange: Arc<Exchange>) -> Self {
        self.exchange = exchange;
        self
    }

    /// An input table as it is kept: in memory or spilled, or read back from where another
    /// engine published it.
    async fn entry(&self, name: &str) -> Result<Table, Error> {
        if let Some(table) = self.tables.lock().expect("table store").get(name).cloned() {
            return Ok(table);
        }
        match self.exchange.location(name) {
            Some(location) => Ok(Table::Memory(published::read_published(&self.storages, &location, None).await?)),
            None => Err(Error::MissingTable(name.to_string())),
        }
    }

    /// An input table, whole in memory.
    async fn table(&self, name: &str) -> Result<DataFrame, Error> {
        match self.entry(name).await? {
            Table::Memory(df) => Ok(df),
            spilled => on_workers(move || spilled.materialize()).await?,
        }
    }

    async fn entries_of(&self, names: &[String]) -> Result<Vec<(String, Table)>, Error> {
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            out.push((name.clone(), self.entry(name).await?));
        }
        Ok(out)
    }

    async fn tables_of(&self, names: &[String]) -> Result<Vec<(String, DataFrame)>, Error> {
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            out.push((name.clone(), self.table(name).await?));
        }
        Ok(out)
    }

    /// Keeps a task's table (in a local Parquet file when it is larger than the spill
    /// threshold), unless its attempt was cancelled (a timed-out attempt that finishes in the
    /// background must not overwrite its retry's result).
    async fn put(&self, name: &str, df: DataFrame, cx: &TaskContext) -> Result<(), Error> {
        if cx.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let size = df.estimated_size() as u64;
        let table = match self.options.spill_above {
            Some(limit) if size > limit => {
                let path = self.spill_path(name)?;
                cx.progress.set_message("spilling to disk");
                let spilled = on_workers(move || spill::spill(df, path)).await??;
                info!(
                    table = name,
                    rows = spilled.rows,
                    bytes = size,
                    path = %spilled.path.display(),
                    "larger than the spill threshold: kept in a local Parquet file until its readers are done"
                );
                Table::Spilled(Arc::new(spilled))
            }
            _ => Table::Memory(df),
        };
        // What the task built and dropped on the way (parsed batches, sort buffers, the table
        // itself when spilled) goes back to the system now.
        release_free_memory();
        if cx.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        self.tables.lock().expect("table store").insert(name.to_string(), table);
        Ok(())
    }

    /// A new file name in the run's spill folder.
    fn spill_path(&self, name: &str) -> Result<std::path::PathBuf, Error> {
        let mut dir = self.spill_dir.lock().expect("spill folder");
        if dir.is_none() {
            let made = tempfile::Builder::new()
                .prefix(&format!("{SPILL_PREFIX}{}-", std::process::id()))
                .tempdir()
                .map_err(|e| Error::Internal(format!("making a folder for spilled tables: {e}")))?;
            *dir = Some(made);
        }
        let n = self.spills.fetch_add(1, Ordering::Relaxed);
        Ok(dir.as_ref().expect("made above").path().join(format!("{name}-{n}.parquet")))
    }

    /// The task's table made from the same inputs by an earlier run ([`cache`]), put in place,
    /// with what that run reported of it.
    async fn cached_output(&self, task: &PlannedTask, cx: &TaskContext) -> Result<Option<TaskOutput>, TaskError> {
        let Some(fingerprint) = &cx.fingerprint else { return Ok(None) };
        let Some((cached, table)) = cache::read(&self.storages, &cx.plan, task.id(), fingerprint).await else {
            return Ok(None);
        };
        let extract = matches!(task.action(), Action::Extract(_));
        let what = if extract {
            format!("the same files as run {} read", cached.run_id)
        } else {
            format!("made from the same inputs by run {}", cached.run_id)
        };
        info!(rows = cached.rows, "read from the cache: {what}");
        self.put(task.id(), table, cx).await?;
        Ok(Some(TaskOutput {
            rows_in: Some(cached.records),
            rows_out: Some(cached.rows),
            files: extract.then_some(cached.files as u64),
            outputs: vec![format!("table {}", task.id())],
            details: BTreeMap::from([("cache".to_string(), what)]),
            ..Default::default()
        }))
    }

    async fn run_task(&self, task: &PlannedTask, cx: &TaskContext) -> Result<TaskOutput, TaskError> {
        match &task.action() {
            Action::Extract(spec) => {
                // The same files as an earlier run read: its table, from the task cache.
                let cacheable = spec.slice.is_none() && self.options.extract_cache;
                if cacheable && let Some(output) = self.cached_output(task, cx).await? {
                    return Ok(output);
                }
                let storage = self.storages.for_path(&spec.path).map_err(Error::from)?;
                let mut carry = self.carries.lock().expect("carries").remove(task.id()).unwrap_or_default();
                let result =
                    extract::run(spec, &self.storages, storage, cx, self.options.read_concurrency, &mut carry).await;
                let out = match result {
                    Ok(out) => out,
                    Err(e) => {
                        let error = TaskError::from(e);
                        if error.retryable {
                            self.carries.lock().expect("carries").insert(task.id().to_string(), carry);
                        }
                        return Err(error);
                    }
                };
                let rows = out.table.height() as u64;
                let mut output = TaskOutput {
                    rows_in: Some(out.records),
                    rows_out: Some(rows),
                    quarantined: out.bad.len() as u64,
                    files: Some(out.files as u64),
                    outputs: vec![format!("table {}", task.id())],
                    drift: out.tally.drift(&json::RecordSchema::new(spec.schema.clone())).map(Box::new),
                    ..Default::default()
                };
                if let Some(message) = new_fields_message(spec, output.drift.as_deref(), out.records) {
                    if spec.on_new_fields == NewFields::Fail {
                        return Err(TaskError::from(Error::NewFields(message)).with_partial(output));
                    }
                    warn!("{message}");
                }
                if !out.bad.is_empty() {
                    let path = cx.plan.quarantine_path(&cx.run_id, task.id());
                    write_quarantine(&self.storages, &path, &out.bad).await?;
                    output.quarantine_path = Some(path.clone());
                    let first = &out.bad[0];
                    let message = format!(
                        "{} of {} records quarantined in {} (first: {}:{}: {})",
                        out.bad.len(),
                        out.records,
                        path,
                        first.file,
                        first.line,
                        first.reason
                    );
                    if out.bad.len() as u64 > spec.max_bad_records {
                        let message = format!("{message}; more than max_bad_records ({})", spec.max_bad_records);
                        return Err(TaskError::from(Error::TooManyBadRecords(message)).with_partial(output));
                    }
                    warn!("{message}");
                }
                // A cached table would hide its drift from the next runs: only clean ones are kept.
                if cacheable && out.bad.is_empty() && output.drift.is_none() {
                    cache::keep(&self.storages, task, cx, &out.table, out.records, out.files).await;
                }
                self.put(task.id(), out.table, cx).await?;
                Ok(output)
            }
            Action::Transform(spec) => {
                // Made from the same inputs by the same SQL as an earlier run: its table, cached.
                let cacheable = self.options.extract_cache && cx.plan.sliced_extracts_of(task.index()).is_empty();
                if cacheable && let Some(output) = self.cached_output(task, cx).await? {
                    return Ok(output);
                }
                let inputs = self.entries_of(&spec.tables).await?;
                let rows_in: u64 = inputs.iter().map(|(_, t)| t.height() as u64).sum();
                let id = task.id().to_string();
                let sql = spec.sql.clone();
                cx.progress.set_message("running SQL");
                let df = on_workers(move || transform::run(&id, &sql, inputs)).await??;
                let rows = df.height() as u64;
                if cacheable {
                    cache::keep(&self.storages, task, cx, &df, rows_in, 0).await;
                }
                self.put(task.id(), df, cx).await?;
                Ok(TaskOutput {
                    rows_in: Some(rows_in),
                    rows_out: Some(rows),
                    outputs: vec![format!("table {}", task.id())],
                    ..Default::default()
                })
            }
            Action::QualityCheck(spec) => {
                let tables: BTreeMap<String, DataFrame> = self.tables_of(&spec.tables).await?.into_iter().collect();
                let rows = tables.get(&spec.table).map_or(0, |t| t.height() as u64);
                let checks = spec.checks.clone();
                let table = spec.table.clone();
                cx.progress.set_length(Some(checks.len() as u64), "checks");
                let results = on_workers(move || {
                    checks.iter().map(|c| checks::run(c, &table, &tables)).collect::<Result<Vec<_>, _>>()
                })
                .await??;
                cx.progress.inc(results.len() as u64);
                let failed: Vec<_> = results.iter().filter(|r| !r.passed).collect();
                let errors: Vec<_> = failed.iter().filter(|r| r.severity == CheckSeverity::Error).collect();
                for r in failed.iter().filter(|r| r.severity != CheckSeverity::Error) {
                    warn!(check = %r.name, failing = r.failing, "check failed (warn): {}", r.detail.as_deref().unwrap_or(""));
                }
                let output = TaskOutput { rows_in: Some(rows), checks: results.clone(), ..Default::default() };
                if errors.is_empty() {
                    return Ok(output);
                }
                let mut message = format!(
                    "{} of {} checks failed on `{}`: {}",
                    errors.len(),
                    results.len(),
                    spec.table,
                    errors.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ")
                );
                for r in &errors {
                    message.push_str(&format!("\n  {}: {}", r.name, r.detail.as_deref().unwrap_or("")));
                    for row in &r.sample {
                        message.push_str(&format!("\n    {row}"));
                    }
                }
                Err(TaskError::permanent(message).with_partial(output))
            }
            Action::Load(spec) => {
                let df = self.table(&spec.table).await?;
                let keep = self
                    .options
                    .kept
                    .as_ref()
                    .filter(|k| k.wanted.contains(&spec.table) && load::replaces_whole(&cx.decisions, task.index()))
                    .map(|k| (k.clone(), df.clone()));
                let out = load::run(cx.fingerprint.clone(), df, spec, &self.storages, cx, &self.options, task.index())
                    .await?;
                if let Some((kept, df)) = keep {
                    kept.frames.lock().expect("kept tables").insert(spec.table.clone(), df);
                }
                let mut details = BTreeMap::new();
                if out.partitions > 0 {
                    details.insert("partitions".to_string(), out.partitions.to_string());
                }
                if let Some(version) = out.version {
                    details.insert("delta_version".to_string(), version.to_string());
                }
                Ok(TaskOutput {
                    rows_in: Some(out.rows),
                    rows_out: Some(out.rows),
                    files: Some(out.files as u64),
                    outputs: vec![spec.path.clone()],
                    details,
                    ..Default::default()
                })
            }
        }
    }
}

/// What an extract with `on_new_fields: warn | fail` says about undeclared fields and declared
/// fields that no record had; `None` when there is nothing to say.
fn new_fields_message(spec: &Extract, drift: Option<&SourceDrift>, records: u64) -> Option<String> {
    if spec.on_new_fields.is_ignore() {
        return None;
    }
    let drift = drift?;
    let mut parts = Vec::new();
    if !drift.new_fields.is_empty() {
        let fields: Vec<String> = drift
            .new_fields
            .iter()
            .map(|f| {
                let at = f.first.as_deref().map(|a| format!(", first at {a}")).unwrap_or_default();
                format!("`{}` ({} of {}{at})", f.field, thousands(f.records), count(records, "record"))
            })
            .collect();
        parts.push(format!(
            "{} not in the schema: {}; declare {} under `schema`, list {} in `ignore_fields`, or set \
             `on_new_fields: ignore`",
            count(fields.len() as u64, "source field"),
            fields.join(", "),
            if fields.len() == 1 { "it" } else { "them" },
            if fields.len() == 1 { "it" } else { "them" },
        ));
    }
    // A declared field that no record has is drift too (a rename shows as one new, one absent).
    let absent: Vec<String> = drift
        .missing
        .iter()
        .filter(|f| records > 0 && f.records == records)
        .map(|f| format!("`{}`", f.field))
        .collect();
    if !absent.is_empty() {
        parts.push(format!("declared but in none of the records (all null): {}", absent.join(", ")));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

async fn write_quarantine(storages: &Storages, path: &str, bad: &[json::BadRecord]) -> Result<(), Error> {
    let mut text = Vec::new();
    for record in bad {
        serde_json::to_writer(&mut text, record).map_err(|e| Error::Internal(e.to_string()))?;
        text.push(b'\n');
    }
    storages.for_path(path)?.write(path, text).await?;
    Ok(())
}

#[async_trait]
impl Engine for LocalEngine {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn run(&self, task: &PlannedTask, cx: TaskContext) -> Result<TaskOutput, TaskError> {
        self.run_task(task, &cx).await
    }

    /// Local work holds nothing remote: a cancelled task only needs a moment to drop its staging folder.
    fn cancel_grace(&self) -> Duration {
        Duration::from_secs(2)
    }

    fn forget(&self, task: &PlannedTask) {
        let table = self.tables.lock().expect("table store").remove(task.id());
        if table.is_some() {
            drop(table);
            release_free_memory();
        }
    }
}

/// Publishes a table held in memory (unpartitioned, zstd, dagrun's manifest convention) for an
/// engine elsewhere (EMR) to read.
#[async_trait]
impl TableExport for LocalEngine {
    async fn export(&self, table: &str, location: &str, cx: &TaskContext) -> Result<(), TaskError> {
        let df = self.table(table).await?;
        let spec = Load {
            table: table.to_string(),
            path: location.to_string(),
            partition_by: Vec::new(),
            compression: Compression::Zstd,
            format: TableFormat::Parquet,
            retention: dagrun_core::plan::DEFAULT_RETENTION,
            mode: dagrun_core::plan::Replace::Overwrite,
        };
        load::run(None, df, &spec, &self.storages, cx, &self.options, usize::MAX).await?;
        Ok(())
    }
}
