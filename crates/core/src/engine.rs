//! Where a task runs: the [`Engine`] trait (local Polars, EMR), the context an attempt gets, and
//! what it reports back. Engines own their resources; the executor calls [`Engine::release`] when
//! no remaining task needs an engine and [`Engine::shutdown`] on every exit path (success, failure,
//! Ctrl-C, SIGTERM), so an engine holding a cluster can always give it back.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::cost::{ClusterCost, ClusterPrice};
use crate::decisions::RunDecisions;
use crate::plan::{Plan, PlannedTask};
use crate::spec::CheckSeverity;
use crate::storage::{Fence, StorageError, StorageErrorKind};

/// Why an attempt failed, and whether trying again could help.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct TaskError {
    /// One line for the summary; details may follow on later lines.
    pub message: String,
    /// A transient failure (throttling, a reset connection, a timeout) worth another attempt.
    pub retryable: bool,
    /// What the attempt found before failing (failed checks, quarantine counts), for the record.
    pub partial: Option<Box<TaskOutput>>,
}

impl TaskError {
    /// A failure that another attempt cannot fix (bad data, a failed check, a missing file).
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: false, partial: None }
    }

    /// A transient failure: the retry policy applies.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: true, partial: None }
    }

    /// Attaches what the attempt found before failing.
    pub fn with_partial(mut self, output: TaskOutput) -> Self {
        self.partial = Some(Box::new(output));
        self
    }

    /// The first line, for one-line summaries.
    pub fn summary(&self) -> &str {
        self.message.lines().next().unwrap_or("")
    }
}

impl From<StorageError> for TaskError {
    fn from(e: StorageError) -> Self {
        TaskError { retryable: e.kind == StorageErrorKind::Transient, message: e.to_string(), partial: None }
    }
}

/// Progress of one running task, drawn by the CLI (a bar or spinner) or ignored.
pub trait TaskProgress: Send + Sync {
    /// Sets the total amount of work in `unit` (files, rows, objects); `None` for a spinner.
    fn set_length(&self, total: Option<u64>, unit: &str);
    /// Adds done work.
    fn inc(&self, delta: u64);
    /// A short status such as "parsing 71 files".
    fn set_message(&self, message: &str);
}

/// Progress that goes nowhere (tests, `--quiet`).
pub(crate) struct NoProgress;

impl TaskProgress for NoProgress {
    fn set_length(&self, _: Option<u64>, _: &str) {}
    fn inc(&self, _: u64) {}
    fn set_message(&self, _: &str) {}
}

/// What one attempt of a task can see.
#[derive(Clone)]
pub struct TaskContext {
    /// The plan being run.
    pub plan: Arc<Plan>,
    /// What the run decided beside it: each task's engine, the days it reads, what is fresh.
    pub decisions: Arc<RunDecisions>,
    /// The run's id.
    pub run_id: String,
    /// Unique to this process: what it writes in passing (staging) carries it, so two processes
    /// never share a staging folder, even with one run id.
    pub instance: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// What the task's output is made from ([`crate::resume`]); a load records it in its
    /// table's manifest, so that an unchanged re-run can skip it.
    pub fingerprint: Option<String>,
    /// What a load checks right before it publishes: that the run still holds the lake's lease
    /// ([`crate::storage::Fence`]). `None` where no lease is held.
    pub fence: Option<Arc<dyn Fence>>,
    /// Cancelled on Ctrl-C, SIGTERM, `--fail-fast` or when the attempt times out. Long-running
    /// engines should watch it and clean up; the executor stops waiting after a grace period.
    pub cancel: CancellationToken,
    /// Where to report progress.
    pub progress: Arc<dyn TaskProgress>,
}

/// The result of one quality check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The check's name.
    pub name: String,
    /// `error` fails the task; `warn` only reports.
    pub severity: CheckSeverity,
    /// Whether it passed.
    pub passed: bool,
    /// How many rows (or groups) failed.
    pub failing: u64,
    /// A few failing rows, already formatted.
    pub sample: Vec<String>,
    /// Why it failed, in one line, when it did.
    pub detail: Option<String>,
}

/// What a successful attempt reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskOutput {
    /// Rows read (an extract's parsed records, a transform's input rows, a load's table rows).
    pub rows_in: Option<u64>,
    /// Rows produced (a table's row count; a load's rows written).
    pub rows_out: Option<u64>,
    /// Records set aside as unreadable, with where they were written.
    pub quarantined: u64,
    /// Where those records were written.
    pub quarantine_path: Option<String>,
    /// Files read or written.
    pub files: Option<u64>,
    /// Paths (or tables) this attempt published.
    pub outputs: Vec<String>,
    /// The results of a quality check task's checks.
    pub checks: Vec<CheckResult>,
    /// Engine-specific facts for the run record (cluster id, step id, ...).
    pub details: BTreeMap<String, String>,
    /// How an extract's source differed from its declared schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<Box<SourceDrift>>,
}

/// How an extract's records differed from its declared schema in one run (schema drift): source
/// fields it neither declares nor ignores, declared columns whose values could not be cast, and
/// declared fields that records lack. Counted per field, for the run record, summary and report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SourceDrift {
    /// Undeclared fields (`on_new_fields: warn | fail` only), most frequent first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub new_fields: Vec<FieldCount>,
    /// Records quarantined because a declared column's value had the wrong type, per column.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mismatched: Vec<FieldCount>,
    /// Records without a declared field (loaded as null), per column (`on_new_fields: warn |
    /// fail` only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<FieldCount>,
}

impl SourceDrift {
    /// Whether nothing drifted.
    pub fn is_empty(&self) -> bool {
        self.new_fields.is_empty() && self.mismatched.is_empty() && self.missing.is_empty()
    }

    /// One line for summaries: `2 new fields not in the schema: a (12 records), b (1 record); ...`.
    pub fn describe(&self) -> String {
        use crate::units::count;
        let list = |fields: &[FieldCount]| {
            fields
                .iter()
                .map(|f| format!("{} ({})", f.field, count(f.records, "record")))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = Vec::new();
        if !self.new_fields.is_empty() {
            let n = self.new_fields.len();
            parts.push(format!("{} not in the schema: {}", count(n as u64, "new field"), list(&self.new_fields)));
        }
        if !self.mismatched.is_empty() {
            let total: u64 = self.mismatched.iter().map(|f| f.records).sum();
            parts.push(format!(
                "{} with a value of the wrong type: {}",
                count(total, "record"),
                list(&self.mismatched)
            ));
        }
        if !self.missing.is_empty() {
            parts.push(format!("declared fields missing: {}", list(&self.missing)));
        }
        parts.join("; ")
    }
}

/// A source field and how many records it concerns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FieldCount {
    /// The field (or, for type mismatches and missing fields, the declared column).
    pub field: String,
    /// Records concerned.
    pub records: u64,
    /// Where the first such record is (`file:line`), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
}

/// An error from engine setup or teardown.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EngineError(pub String);

/// How a run ended, for an engine's [`Engine::shutdown`] (e.g. keep a failed run's staging).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEnd {
    /// The run's id.
    pub run_id: String,
    /// Every task succeeded or was up to date, and nothing interrupted the run.
    pub succeeded: bool,
}

/// Where tasks run.
#[async_trait]
pub trait Engine: Send + Sync {
    /// The name used in `engine:` (`local`, `emr`).
    fn name(&self) -> &'static str;

    /// Runs one attempt of `task`. Errors say whether they are worth retrying.
    async fn run(&self, task: &PlannedTask, cx: TaskContext) -> Result<TaskOutput, TaskError>;

    /// Called once no remaining task of the run needs this engine (e.g. terminate a cluster early).
    async fn release(&self) -> Result<(), EngineError> {
        Ok(())
    }

    /// Called exactly once when the run ends, however it ends. Must be idempotent with `release`.
    async fn shutdown(&self, _end: &RunEnd) -> Result<(), EngineError> {
        Ok(())
    }

    /// A task's upstream output that will not be read again (free memory, delete temp files).
    fn forget(&self, _task: &PlannedTask) {}

    /// How long a cancelled attempt may take to clean up before the executor stops waiting.
    fn cancel_grace(&self) -> Duration {
        CANCEL_GRACE
    }

    /// Extra lines for `--dry-run` (e.g. the exact requests a remote engine would send).
    fn describe(&self, _task: &PlannedTask) -> Vec<String> {
        Vec::new()
    }

    /// Lines for `--dry-run` about the whole run on this engine (e.g. the cluster it would start).
    fn describe_run(&self, _plan: &Plan) -> Vec<String> {
        Vec::new()
    }

    /// What the engine's clusters cost in this run, once it was shut down.
    fn costs(&self) -> Vec<ClusterCost> {
        Vec::new()
    }

    /// What the engine's resources cost per hour, for a dry run's estimate.
    fn price(&self) -> Option<ClusterPrice> {
        None
    }

    /// Lines about the engine's own resources for the summary and the run record (cluster ids,
    /// their states with times).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The engines available to a run, by name.
#[derive(Clone, Default)]
pub struct Engines {
    engines: BTreeMap<&'static str, Arc<dyn Engine>>,
}

impl Engines {
    /// No engines yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an engine under its name.
    pub fn with(mut self, engine: Arc<dyn Engine>) -> Self {
        self.engines.insert(engine.name(), engine);
        self
    }

    /// The engine called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Engine>> {
        self.engines.get(name)
    }

    /// The engines' names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.engines.keys().copied().collect()
    }

    /// The engines, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Engine>> {
        self.engines.values()
    }
}

impl fmt::Debug for Engines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.engines.keys()).finish()
    }
}

/// Where tables that left an engine's memory live: a table name -> the folder (usually
/// `s3://...`) it was published to with dagrun's convention. Engines share one per run, so a
/// table made on EMR can be read locally and the other way round.
#[derive(Debug, Default)]
pub struct Exchange {
    locations: std::sync::Mutex<BTreeMap<String, String>>,
}

impl Exchange {
    /// Where `table` was published for another engine, if it was.
    pub fn location(&self, table: &str) -> Option<String> {
        self.locations.lock().expect("exchange").get(table).cloned()
    }

    /// Notes that `table` is published at `location`.
    pub fn set(&self, table: &str, location: &str) {
        self.locations.lock().expect("exchange").insert(table.to_string(), location.to_string());
    }
}

/// An engine that can publish a table it holds to a folder, for another engine to read.
#[async_trait]
pub trait TableExport: Send + Sync {
    /// Publishes `table` at `location` with dagrun's convention.
    async fn export(&self, table: &str, location: &str, cx: &TaskContext) -> Result<(), TaskError>;
}

/// How long the executor waits for a cancelled task before giving up on it.
pub(crate) const CANCEL_GRACE: Duration = Duration::from_secs(30);
