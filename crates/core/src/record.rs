//! The run record (`run.json`): everything a 3 a.m. reader needs about one run, written beside
//! the run's outputs (`<runs>/<run-id>/run.json`, local or S3): the pipeline and its hash, the
//! variables (secrets redacted), times, and per task its state, attempts with their errors,
//! durations, rows, quarantine counts, check results and outputs. `dagrun report` renders it.
//! [`write`] puts it there and points `LATEST` at it while the run holds the lake; [`latest`]
//! reads the last one back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auto::AutoChoice;
use crate::executor::{RunReport, TaskState};
use crate::path::join_path;
use crate::plan::{Plan, ReportQuery, S3Settings};
use crate::redact::redact_bytes;
use crate::spec::ChartKind;
use crate::storage::{Fence, StorageError, Storages};

/// How a run ended, as its record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every task succeeded or was up to date.
    Succeeded,
    /// A task failed, or an engine could not clean up.
    Failed,
    /// Ctrl-C, SIGTERM or a lost lease stopped it.
    Interrupted,
}

impl Outcome {
    /// The outcome as records and reports spell it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The file name of a run record inside its run folder.
pub const RUN_RECORD: &str = "run.json";
/// A text file in the runs folder naming the latest run.
pub const LATEST: &str = "LATEST";

/// A run record. Versioned by `format`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// The record's format version.
    pub format: u32,
    /// The dagrun that ran it.
    pub dagrun_version: String,
    /// The pipeline file, as given.
    pub pipeline_file: String,
    /// SHA-256 of the pipeline file's text.
    pub pipeline_sha256: String,
    /// Variables after `--set`; secrets as `***`.
    pub vars: BTreeMap<String, String>,
    /// Where this record and the run's quarantine files live.
    pub run_dir: String,
    /// How the run ended.
    pub outcome: Outcome,
    /// The exit code dagrun gave.
    pub exit_code: i32,
    #[serde(flatten)]
    /// What the executor reported, task by task.
    pub report: RunReport,
    /// Published tables by name: where the load wrote them (for reports and readers).
    pub tables: BTreeMap<String, String>,
    /// The Delta version of each `format: delta` table as this run left it (committed, or found
    /// up to date): reading every table at its version sees the whole lake as of this run, even
    /// after later runs (`dagrun report` does; see `docs/delta.md` for Spark, DuckDB and Polars).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub versions: BTreeMap<String, u64>,
    /// The pipeline's `report:` queries, for `dagrun report`.
    #[serde(default)]
    pub queries: Vec<ReportQuery>,
    /// Where S3 was reached (never credentials), so `dagrun report` can read the tables back.
    #[serde(default)]
    pub s3_endpoint_url: Option<String>,
    #[serde(default)]
    /// The S3 region, when set.
    pub s3_region: Option<String>,
    #[serde(default)]
    /// Path-style S3 addressing, when set.
    pub s3_path_style: Option<bool>,
    /// Local input files whose bytes this run hashed (their content hash was not cached), and
    /// how long that took: what fingerprinting by content cost.
    #[serde(default)]
    pub inputs_hashed: InputsHashed,
    /// The answers to the `report:` queries, computed when the run ended, over the tables as the
    /// run left them: `dagrun report` shows these, whatever later runs did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<Answers>,
    /// Where each `engine: auto` task ran, and the numbers that chose it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auto: Vec<AutoChoice>,
}

/// The answers to a pipeline's `report:` queries, kept with the run they describe.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Answers {
    /// When they were computed, in epoch milliseconds.
    pub computed_at_ms: u64,
    /// How long computing them took, in seconds.
    pub seconds: f64,
    /// The version of each table they read: `v3` for a Delta table; for dagrun's Parquet
    /// convention, `run <id>` (the run that published it).
    pub tables: BTreeMap<String, String>,
    /// The earlier run these were computed in, when this run left every table they read as it
    /// found them (nothing was read again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carried_from: Option<String>,
    /// Why there are none (the run failed, ...), when there are none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_computed: Option<String>,
    /// One per query, in the pipeline's order.
    pub items: Vec<Answer>,
}

/// The answer to one report query: a small table, or why it could not be computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The query's title.
    pub title: String,
    /// How it is drawn.
    pub chart: ChartKind,
    /// The result's column names.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Its rows (at most 50), each value as text; null as an empty string.
    #[serde(default)]
    pub rows: Vec<Vec<String>>,
    /// Why the query failed, when it did (the report shows it; the run is not failed for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What fingerprinting local inputs by content cost a run (see `dagrun_core::content`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct InputsHashed {
    /// Files read and hashed.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Wall time spent, in seconds.
    pub seconds: f64,
}

impl RunRecord {
    /// The record of a run of `plan`, kept in `run_dir`.
    pub fn new(plan: &Plan, report: RunReport, run_dir: String) -> Self {
        let outcome = if report.interrupted {
            Outcome::Interrupted
        } else if report.succeeded() {
            Outcome::Succeeded
        } else {
            Outcome::Failed
        };
        // Every table of the pipeline, also those a run of some tasks (`--only`) left as they
        // were: the report's answers read them all.
        let tables = plan.lake_tables.clone();
        Self {
            format: 1,
            dagrun_version: env!("CARGO_PKG_VERSION").to_string(),
            pipeline_file: plan.source.name.clone(),
            pipeline_sha256: Sha256::digest(plan.source.text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect(),
            vars: plan.vars.values.keys().map(|k| (k.clone(), plan.vars.shown(k))).collect(),
            run_dir,
            outcome,
            exit_code: report.exit_code(),
            report,
            tables,
            versions: BTreeMap::new(),
            queries: plan.report.clone(),
            s3_endpoint_url: plan.s3.endpoint_url.clone(),
            s3_region: plan.s3.region.clone(),
            s3_path_style: plan.s3.path_style,
            inputs_hashed: InputsHashed::default(),
            answers: None,
            auto: Vec::new(),
        }
    }

    /// The S3 settings to read this run's tables back with.
    pub fn s3_settings(&self) -> S3Settings {
        S3Settings {
            endpoint_url: self.s3_endpoint_url.clone(),
            region: self.s3_region.clone(),
            path_style: self.s3_path_style,
            ..S3Settings::default()
        }
    }

    /// The pipeline's name.
    pub fn pipeline(&self) -> &str {
        &self.report.pipeline
    }

    /// How many tasks ended in `state`.
    pub fn count(&self, state: TaskState) -> usize {
        self.report.tasks.iter().filter(|t| t.state == state).count()
    }
}
// --- the record on the lake's storage ---------------------------------------------------------

/// Writes `run.json` into the run's folder and, while `fence` says the run still holds the lake,
/// points `LATEST` at it. Returns the record's path.
pub async fn write(
    record: &RunRecord,
    storages: &Storages,
    runs_dir: &str,
    fence: Option<&dyn Fence>,
) -> Result<String, StorageError> {
    let path = join_path(&record.run_dir, RUN_RECORD);
    let storage = storages.for_path(&path)?;
    let json = serde_json::to_vec_pretty(record).expect("a run record serializes");
    let json = redact_bytes(&json).into_owned();
    storage.write(&path, json).await?;
    // `LATEST` says which run describes the lake: only a run that still holds it may say so.
    if let Some(fence) = fence {
        fence.check().await?;
    }
    storage.write(&join_path(runs_dir, LATEST), format!("{}\n", record.report.run_id).into_bytes()).await?;
    Ok(path)
}

/// The latest run record in `runs_dir` (the one `LATEST` names), if there is one and it reads.
pub async fn latest(runs_dir: &str, storages: &Storages) -> Option<RunRecord> {
    let storage = storages.for_path(runs_dir).ok()?;
    let latest = storage.read(&join_path(runs_dir, LATEST)).await.ok()?;
    let id = String::from_utf8_lossy(&latest).trim().to_string();
    let bytes = storage.read(&join_path(runs_dir, &format!("{id}/{RUN_RECORD}"))).await.ok()?;
    serde_json::from_slice::<RunRecord>(&bytes).ok()
}

/// How long each task of `plan` took when it last ran, from the latest run record in the
/// plan's runs folder: the executor starts the task with the most work ahead first. Tasks that
/// did not run there (up to date, skipped, failed) have no entry; no record gives none.
pub async fn last_durations(
    plan: &Plan,
    storages: &Storages,
) -> std::collections::BTreeMap<usize, std::time::Duration> {
    let mut out = std::collections::BTreeMap::new();
    let Some(record) = latest(plan.runs_dir(), storages).await else { return out };
    for task in &record.report.tasks {
        if let (TaskState::Succeeded, Some(planned), Some(last)) =
            (task.state, plan.task(&task.id), task.attempts.last())
        {
            out.insert(planned.index(), last.duration);
        }
    }
    out
}
