//! The validated plan: what [`crate::compile`] makes of a pipeline file, and what everything after
//! it reads. Tasks have their variables resolved, defaults filled in and retry policies computed;
//! dependencies are indices. A plan never changes once made: its fields are the crate's, and other
//! crates read them through methods; `--only` makes another plan of the same file ([`Plan::select`]),
//! and what a run decides (engines after `auto`, budget, days, what is up to date) travels beside
//! it in [`crate::decisions::RunDecisions`]. It answers the questions every later layer asks (which tables
//! a task reads, who reads a task's output, what depends on what, the waves, where quarantined
//! records go) so that each has one answer.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::diagnostic::{Diagnostic, Pos, SourceFile, suggestion};
use crate::emr::EmrSettings;
use crate::lease::{LAKE_LEASE, runs_lease};
pub use crate::path::join_path;
use crate::path::{is_s3, normalize_path, resolve};
use crate::retry::RetryPolicy;
use crate::slice::SliceTemplate;
use crate::spec::{
    ChartKind, CheckSeverity, ColumnType, Compression, JsonFormat, NewFields, ServerSideEncryption, StorageClass,
    TableFormat, TaskKind,
};
use crate::units::format_duration;
use crate::vars::Vars;

/// Built-in default timeout of one attempt.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Built-in default engine.
pub(crate) const DEFAULT_ENGINE: &str = "local";

/// A validated pipeline.
#[derive(Debug, Clone)]
pub struct Plan {
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    pub(crate) source: Arc<SourceFile>,
    pub(crate) vars: Vars,
    /// Tasks in file order; a task's `index` is its place here.
    pub(crate) tasks: Vec<PlannedTask>,
    /// For each task, the tasks that depend on it directly, in file order: the reverse of each
    /// task's `deps`, kept once so that walking down is as cheap as walking up.
    pub(crate) dependents: Vec<Vec<usize>>,
    /// Where run records and quarantined records go (`runs:`; default `${output}/_dagrun`).
    pub(crate) runs_dir: String,
    /// How to talk to S3, when any path is an `s3://` URI.
    pub(crate) s3: S3Settings,
    /// Questions the HTML report answers from the published tables (`report:`).
    pub(crate) report: Vec<ReportQuery>,
    /// How EMR clusters are made (`engines.emr`), when a task runs on `emr`.
    pub(crate) emr: Option<EmrSettings>,
    /// The most a run may spend on EMR, in USD (`budget.max_usd`, `--max-cost`).
    pub(crate) budget: Option<f64>,
    /// Why EMR cannot run this plan's `engine: auto` tasks, per task (a path that is not on S3)
    /// or for all of them (key `*`: no `engines.emr` section, or one that does not validate).
    pub(crate) emr_unavailable: std::collections::BTreeMap<String, String>,
    /// Problems worth knowing that do not stop a run.
    pub(crate) warnings: Vec<Diagnostic>,
    /// Whether an extract declares `slice_path`, so that runs may read some days of the input
    /// (see [`crate::slice`]; which days, a run decides: [`crate::decisions::RunDecisions`]).
    pub(crate) sliced: bool,
    /// Every table the pipeline publishes (table -> path), whichever tasks `--only` kept: the
    /// report's answers read them all.
    pub(crate) lake_tables: std::collections::BTreeMap<String, String>,
}

/// Each node's wave in a DAG given as each node's dependencies: the number of links of its longest
/// dependency chain. The plan's waves and the report's drawing of a run record both come from here.
/// Dependencies outside the list are ignored; the graph must be acyclic.
pub fn levels(deps: &[&[usize]]) -> Vec<usize> {
    let n = deps.len();
    let mut dependents = vec![Vec::new(); n];
    let mut remaining: Vec<usize> = vec![0; n];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds.iter().filter(|&&d| d < n) {
            dependents[d].push(i);
            remaining[i] += 1;
        }
    }
    let mut level = vec![0usize; n];
    let mut ready: Vec<usize> = (0..n).filter(|&i| remaining[i] == 0).collect();
    while let Some(i) = ready.pop() {
        for &d in &dependents[i] {
            level[d] = level[d].max(level[i] + 1);
            remaining[d] -= 1;
            if remaining[d] == 0 {
                ready.push(d);
            }
        }
    }
    level
}

/// A named query over published tables, shown in the HTML report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportQuery {
    /// The heading the report shows above the answer.
    pub title: String,
    /// One SELECT over published tables, by the names their loads give them.
    pub sql: String,
    /// `bar` draws the first column as labels and the last as bar lengths; `table` only lists.
    pub chart: ChartKind,
}

/// How to talk to S3 (`storage.s3`), with defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Settings {
    /// An S3-compatible endpoint; `None`: AWS (or `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`).
    pub endpoint_url: Option<String>,
    /// The region; `None`: the AWS configuration chain.
    pub region: Option<String>,
    /// `None`: decide from the endpoint (IP address or localhost: path style).
    pub path_style: Option<bool>,
    /// Requests in flight at once.
    pub max_concurrency: usize,
    /// Attempts per request (the SDK's standard retry mode).
    pub max_attempts: u32,
    /// Files at least this large (bytes) are uploaded in parts.
    pub multipart_threshold: u64,
    /// The size of each part of a multipart upload, in bytes.
    pub part_size: u64,
    /// How objects dagrun writes are encrypted at rest, if asked.
    pub server_side_encryption: Option<ServerSideEncryption>,
    /// The KMS key for `aws:kms` encryption; `None`: the bucket's default key.
    pub kms_key_id: Option<String>,
    /// The storage class of the objects dagrun writes; `None`: the bucket's default.
    pub storage_class: Option<StorageClass>,
}

impl Default for S3Settings {
    fn default() -> Self {
        Self {
            endpoint_url: None,
            region: None,
            path_style: None,
            max_concurrency: 64,
            max_attempts: 6,
            multipart_threshold: 16 << 20,
            part_size: 8 << 20,
            server_side_encryption: None,
            kms_key_id: None,
            storage_class: None,
        }
    }
}

/// A path a plan reads or writes, for access checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanPath {
    /// A local folder or an `s3://bucket/prefix` URI.
    pub path: String,
    /// Whether the plan writes there (else it only reads).
    pub write: bool,
    /// The task (or `runs`) that uses it.
    pub user: String,
}

/// One validated task.
#[derive(Debug, Clone)]
pub struct PlannedTask {
    pub(crate) index: usize,
    pub(crate) id: String,
    pub(crate) description: Option<String>,
    pub(crate) kind: TaskKind,
    pub(crate) action: Action,
    /// Direct dependencies, as indices into the plan's tasks, in the order the file names them.
    pub(crate) deps: Vec<usize>,
    pub(crate) engine: String,
    pub(crate) retry: RetryPolicy,
    pub(crate) timeout: Duration,
    /// Where the task is declared.
    pub(crate) pos: Pos,
}

/// What a task does, with everything resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Action {
    /// `kind: extract`: files in, a table out.
    Extract(Extract),
    /// `kind: transform`: SQL over upstream tables.
    Transform(Transform),
    /// `kind: quality_check`: checks that gate what depends on them.
    QualityCheck(QualityCheck),
    /// `kind: load`: a table published as partitioned Parquet.
    Load(Load),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
/// An extract: which files to read and how to turn their records into a table.
pub struct Extract {
    /// A local folder or an `s3://bucket/prefix` URI.
    pub path: String,
    /// Glob relative to `path` (`**` for every file).
    pub glob: String,
    /// JSON documents per file, or one object per line.
    pub format: JsonFormat,
    /// The declared columns, in order.
    pub schema: Vec<Column>,
    /// How many records may be quarantined before the task fails.
    pub max_bad_records: u64,
    /// Where the files of one day are (`slice_path`), when runs may be scoped to some days.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slice: Option<SliceTemplate>,
    /// With `slice`: the `timestamp_ms` column whose UTC day a row is of (`slice_column`). A run
    /// of some days keeps the rows of those days, from whichever file they came in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slice_column: Option<String>,
    /// With `slice`: how many days a row's day may be from its file's day (`slice_tolerance`). A
    /// run of a day reads the files of that many days before and after it; a row farther from its
    /// file's day is quarantined, in every run, so that slices always equal a full run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slice_tolerance: Option<u32>,
    /// What to do about undeclared source fields (`on_new_fields`). Left out of the record (and
    /// so of fingerprints) at its default, so that pipelines without it keep their fingerprints.
    #[serde(skip_serializing_if = "NewFields::is_ignore")]
    pub on_new_fields: NewFields,
    /// Source fields never reported as new (`ignore_fields`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignore_fields: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
/// One declared column of an extract.
pub struct Column {
    /// The column's name in the table.
    pub name: String,
    /// Its type; a value that cannot be cast quarantines its record.
    pub ty: ColumnType,
    /// The JSON field this column is read from.
    pub from: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
/// A transform: one SQL SELECT over the tables of tasks it depends on.
pub struct Transform {
    /// The query, as written (Polars SQL locally, Spark SQL on EMR).
    pub sql: String,
    /// Upstream tables the query reads.
    pub tables: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
/// A quality check task: checks over one table, with its relationships.
pub struct QualityCheck {
    /// The table checked.
    pub table: String,
    /// The checks, each with its name and severity.
    pub checks: Vec<Check>,
    /// Every table the checks read (`table`, relationship targets, tables in SQL checks).
    pub tables: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
/// One check of a quality check task.
pub struct Check {
    /// Its name in summaries and records (`unique(song_id)`, or as given).
    pub name: String,
    /// `error` fails the task; `warn` only reports.
    pub severity: CheckSeverity,
    /// What it checks.
    pub kind: CheckKind,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
/// What a check checks. Nulls are ignored by `unique`, `accepted_values` and `relationships`, as in
/// dbt.
pub enum CheckKind {
    /// No value of `column` is null.
    NotNull {
        /// The column checked.
        column: String,
    },
    /// No two rows share the values of `columns` (a list means the combination).
    Unique {
        /// The columns whose combined values must be unique.
        columns: Vec<String>,
    },
    /// The table's row count lies within the bounds.
    RowCount {
        /// The fewest rows allowed.
        min: Option<u64>,
        /// The most rows allowed.
        max: Option<u64>,
    },
    /// Every value of `column` is one of `values`.
    AcceptedValues {
        /// The column checked.
        column: String,
        /// The values allowed, as text.
        values: Vec<String>,
    },
    /// Every value of `column` appears in `field` of table `to`.
    Relationships {
        /// The column checked.
        column: String,
        /// The table it refers to.
        to: String,
        /// The column of `to` it must match.
        field: String,
    },
    /// Custom SQL: every row it returns is a failure.
    Sql {
        /// The query.
        sql: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
/// A load: where a table is published and how its files are laid out.
pub struct Load {
    /// The table published (the id of the task that produces it).
    pub table: String,
    /// A local folder or an `s3://bucket/prefix` URI; the table's files live under it.
    pub path: String,
    /// How the table is published: dagrun's Parquet convention or a Delta Lake table.
    pub format: TableFormat,
    /// Columns that become hive folders (`year=2018/`), in order.
    pub partition_by: Vec<String>,
    /// The Parquet compression.
    pub compression: Compression,
    /// Delta only: how long files that a newer version replaced are kept (so that readers of an
    /// older version can finish, and `--as-of` can read it) before a successful run vacuums them.
    pub retention: Duration,
    /// What a run scoped to some days replaces.
    #[serde(skip_serializing_if = "Replace::is_overwrite")]
    pub mode: Replace,
}

/// What a load replaces when its run reads only some days of a sliced extract (`mode:`). Runs over
/// every day replace the whole table whatever the mode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub enum Replace {
    /// The whole table: such a load refuses runs scoped to some days.
    #[default]
    Overwrite,
    /// The rows whose `slice_column` falls on one of the run's days are deleted and the new rows
    /// appended, in one commit.
    Partitions {
        /// The timestamp column that places a row on a day (UTC).
        slice_column: String,
    },
    /// The published rows and the new ones, one per `keys`: the greatest by `order_by` (the new
    /// one on a tie). Keys are never deleted.
    Merge {
        /// The columns that identify a row.
        keys: Vec<String>,
        /// The columns that order two rows with one key.
        order_by: Vec<String>,
    },
}

impl Replace {
    /// `mode: overwrite`.
    pub fn is_overwrite(&self) -> bool {
        matches!(self, Replace::Overwrite)
    }

    /// Its name in the pipeline file.
    pub fn name(&self) -> &'static str {
        match self {
            Replace::Overwrite => "overwrite",
            Replace::Partitions { .. } => "partitions",
            Replace::Merge { .. } => "merge",
        }
    }
}

/// Files of replaced Delta versions are kept for a week unless the load says otherwise (Delta's
/// own default for `delta.deletedFileRetentionDuration`).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

impl PlannedTask {
    /// Its place in the plan's tasks.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Its id: also the name of the table it produces, if any.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its `description:`, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// Which kind of task it is.
    pub fn kind(&self) -> TaskKind {
        self.kind
    }

    /// What it does, with everything resolved.
    pub fn action(&self) -> &Action {
        &self.action
    }

    /// Its direct dependencies, as indices into the plan's tasks.
    pub fn deps(&self) -> &[usize] {
        &self.deps
    }

    /// The engine it runs on (`local`, `emr`).
    pub fn engine(&self) -> &str {
        &self.engine
    }

    /// Its retry policy (its own `retry:` over `defaults.retry`).
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// How long one attempt may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Where the task is declared in the pipeline file.
    pub fn pos(&self) -> Pos {
        self.pos
    }

    /// The names of the tables it reads: a transform's SQL, a check's tables, a load's table.
    pub fn tables_read(&self) -> Vec<&str> {
        match &self.action {
            Action::Transform(t) => t.tables.iter().map(String::as_str).collect(),
            Action::QualityCheck(q) => q.tables.iter().map(String::as_str).collect(),
            Action::Load(l) => vec![l.table.as_str()],
            Action::Extract(_) => Vec::new(),
        }
    }

    /// The name of the table this task produces, if any (extracts and transforms).
    pub fn table(&self) -> Option<&str> {
        match self.action {
            Action::Extract(_) | Action::Transform(_) => Some(&self.id),
            _ => None,
        }
    }

    /// What the task reads, for plans and dry runs.
    pub fn inputs(&self) -> Vec<String> {
        match &self.action {
            Action::Extract(e) => vec![join_path(&e.path, &e.glob)],
            Action::Transform(t) => t.tables.iter().map(|t| format!("table {t}")).collect(),
            Action::QualityCheck(q) => q.tables.iter().map(|t| format!("table {t}")).collect(),
            Action::Load(l) => vec![format!("table {}", l.table)],
        }
    }

    /// What the task writes, for plans and dry runs.
    pub fn outputs(&self) -> Vec<String> {
        match &self.action {
            Action::Extract(_) | Action::Transform(_) => vec![format!("table {}", self.id)],
            Action::QualityCheck(_) => Vec::new(),

            Action::Load(l) => {
                let parts = if l.partition_by.is_empty() {
                    String::new()
                } else {
                    format!(" partitioned by {}", l.partition_by.join(", "))
                };
                let format = match l.format {
                    TableFormat::Parquet => "parquet".to_string(),
                    TableFormat::Delta => {
                        format!("delta, keeps replaced files {}", format_duration(l.retention))
                    }
                };
                let mode = match &l.mode {
                    Replace::Overwrite => String::new(),
                    Replace::Partitions { slice_column } => format!(", a slice replaces its days by {slice_column}"),
                    Replace::Merge { keys, .. } => format!(", a slice merges by {}", keys.join(", ")),
                };
                vec![format!("{} ({format}, {}{mode}){parts}", l.path, l.compression)]
            }
        }
    }
}

impl Plan {
    /// Fills in what is derived from the tasks (the reverse edges). Only the compiler and
    /// [`Plan::select`] make plans.
    pub(crate) fn indexed(mut self) -> Self {
        let mut dependents = vec![Vec::new(); self.tasks.len()];
        for task in &self.tasks {
            for &d in &task.deps {
                dependents[d].push(task.index);
            }
        }
        self.dependents = dependents;
        self
    }

    /// The pipeline's `name:`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pipeline's `description:`, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The pipeline file the plan was made from.
    pub fn source(&self) -> &Arc<SourceFile> {
        &self.source
    }

    /// The variables, resolved.
    pub fn vars(&self) -> &Vars {
        &self.vars
    }

    /// The tasks in file order; a task's [`PlannedTask::index`] is its place here.
    pub fn tasks(&self) -> &[PlannedTask] {
        &self.tasks
    }

    /// Where run records, quarantined records and the lake's lease go.
    pub fn runs_dir(&self) -> &str {
        &self.runs_dir
    }

    /// How to talk to S3.
    pub fn s3(&self) -> &S3Settings {
        &self.s3
    }

    /// The questions the HTML report answers (`report:`).
    pub fn report(&self) -> &[ReportQuery] {
        &self.report
    }

    /// How EMR clusters are made, when a task runs on `emr`.
    pub fn emr(&self) -> Option<&EmrSettings> {
        self.emr.as_ref()
    }

    /// The most a run may spend on EMR, in USD; `Some(0.0)` forbids EMR.
    pub fn budget(&self) -> Option<f64> {
        self.budget
    }

    /// Why EMR cannot run task `id` if it were chosen for it (`engine: auto`), if it cannot: the
    /// pipeline's reasons (no `engines.emr` section, a path not on S3, a `budget.max_usd` of 0).
    /// A run's `--max-cost` is the run's: [`crate::decisions::RunDecisions::emr_unavailable`].
    pub fn emr_unavailable(&self, id: &str) -> Option<String> {
        if self.budget == Some(0.0) {
            return Some("a budget of $0 forbids EMR (--max-cost 0 or budget.max_usd: 0)".into());
        }
        self.emr_unavailable.get("*").or_else(|| self.emr_unavailable.get(id)).cloned()
    }

    /// Problems worth knowing that do not stop a run.
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// Where the records an extract quarantines in run `run_id` are written.
    pub fn quarantine_path(&self, run_id: &str, task: &str) -> String {
        join_path(&self.runs_dir, &format!("{run_id}/quarantine/{task}.jsonl"))
    }

    /// For each task, the producers of the tables it reads.
    pub(crate) fn producers_read(&self) -> Vec<Vec<usize>> {
        let producers: HashMap<&str, usize> =
            self.tasks.iter().filter_map(|t| t.table().map(|name| (name, t.index))).collect();
        self.tasks.iter().map(|t| t.tables_read().iter().filter_map(|n| producers.get(n).copied()).collect()).collect()
    }

    /// For each task, the tasks that read its output: its direct dependents and every task that
    /// names its table.
    pub fn readers(&self) -> Vec<BTreeSet<usize>> {
        let mut out: Vec<BTreeSet<usize>> = self.dependents.iter().map(|d| d.iter().copied().collect()).collect();
        for (reader, producers) in self.producers_read().into_iter().enumerate() {
            for producer in producers {
                out[producer].insert(reader);
            }
        }
        out
    }

    /// The lease files a run of this plan takes (see [`crate::lease`]): its runs folder's, and one
    /// in each folder that holds one of its tables (`<folder>/_dagrun/lease.json`), so that two
    /// pipelines writing one table exclude each other whatever their runs folders. Spellings of
    /// one place (`out/`, `./out`, a link to it) give one file. Ordered by the place, not the
    /// spelling: the order every run takes them in.
    pub fn lease_paths(&self) -> Vec<String> {
        let mut folders: Vec<String> = vec![runs_lease(&self.runs_dir)];
        for t in &self.tasks {
            if let Action::Load(load) = &t.action {
                let table = normalize_path(&load.path);
                let parent = match table.rsplit_once('/') {
                    Some((parent, _)) if !parent.is_empty() && parent != "s3:/" => parent.to_string(),
                    Some(_) if table.starts_with('/') => "/".to_string(),
                    _ => ".".to_string(),
                };
                folders.push(join_path(&parent, LAKE_LEASE));
            }
        }
        let mut seen = std::collections::BTreeMap::new();
        for path in folders {
            seen.entry(resolve(&path)).or_insert(path);
        }
        // In the order of the places they name, whatever their spelling: every run takes them so.
        seen.into_values().collect()
    }

    /// Every table the pipeline publishes (table -> path), whichever tasks `--only` kept.
    pub fn lake_tables(&self) -> &std::collections::BTreeMap<String, String> {
        &self.lake_tables
    }

    /// Every folder or prefix the plan reads or writes, in plan order.
    pub fn paths(&self) -> Vec<PlanPath> {
        let mut out = Vec::new();
        for t in &self.tasks {
            match &t.action {
                Action::Extract(e) => out.push(PlanPath { path: e.path.clone(), write: false, user: t.id.clone() }),
                Action::Load(l) => out.push(PlanPath { path: l.path.clone(), write: true, user: t.id.clone() }),
                _ => {}
            }
        }
        out.push(PlanPath { path: self.runs_dir.clone(), write: true, user: "runs".into() });
        if let Some(emr) = &self.emr {
            out.push(PlanPath { path: emr.staging.clone(), write: true, user: "engines.emr.staging".into() });
            out.push(PlanPath { path: emr.log_uri.clone(), write: false, user: "engines.emr.log_uri".into() });
        }
        out
    }

    /// Whether any path is on S3.
    pub fn uses_s3(&self) -> bool {
        self.paths().iter().any(|p| is_s3(&p.path))
    }

    /// The task with this id.
    pub fn task(&self, id: &str) -> Option<&PlannedTask> {
        self.tasks.iter().find(|t| t.id == id)
    }

    /// Indices of tasks that depend directly on `index`, in file order.
    pub(crate) fn dependents(&self, index: usize) -> &[usize] {
        &self.dependents[index]
    }

    /// Whether an extract declares `slice_path`: runs may then read some days of the input.
    pub fn is_sliced(&self) -> bool {
        self.sliced
    }

    /// The extracts upstream of task `index` (itself included) that declare `slice_path`.
    pub fn sliced_extracts_of(&self, index: usize) -> Vec<usize> {
        let mut up = self.ancestors(index);
        up.insert(index);
        up.into_iter().filter(|&i| matches!(&self.tasks[i].action, Action::Extract(e) if e.slice.is_some())).collect()
    }

    /// Every task `index` depends on, directly or not.
    pub(crate) fn ancestors(&self, index: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack = self.tasks[index].deps.clone();
        while let Some(i) = stack.pop() {
            if seen.insert(i) {
                stack.extend(self.tasks[i].deps.iter().copied());
            }
        }
        seen
    }

    /// Every task that depends on `index`, directly or not.
    pub(crate) fn descendants(&self, index: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack = self.dependents(index).to_vec();
        while let Some(i) = stack.pop() {
            if seen.insert(i) {
                stack.extend(self.dependents(i));
            }
        }
        seen
    }

    /// Each task's wave: the number of links of its longest dependency chain.
    pub fn levels(&self) -> Vec<usize> {
        levels(&self.tasks.iter().map(|t| t.deps.as_slice()).collect::<Vec<_>>())
    }

    /// Whether `task` depends on `ancestor`, directly or not. `levels` is [`Plan::levels`]: no task
    /// at or below the ancestor's level can lead to it, so the search never goes there, and a
    /// direct dependency is found at once.
    pub fn depends_on(&self, task: usize, ancestor: usize, levels: &[usize]) -> bool {
        let mut stack = vec![task];
        let mut seen = std::collections::HashSet::new();
        while let Some(i) = stack.pop() {
            for &d in &self.tasks[i].deps {
                if d == ancestor {
                    return true;
                }
                if levels[d] > levels[ancestor] && seen.insert(d) {
                    stack.push(d);
                }
            }
        }
        false
    }

    /// Tasks grouped into waves: wave n holds tasks whose longest dependency chain has n links.
    /// Tasks of one wave can run at the same time.
    pub fn waves(&self) -> Vec<Vec<usize>> {
        let level = self.levels();
        let depth = level.iter().copied().max().map_or(0, |m| m + 1);
        let mut waves = vec![Vec::new(); depth];
        for (i, l) in level.into_iter().enumerate() {
            waves[l].push(i);
        }
        waves
    }

    /// Task indices with every task after its dependencies; ties keep file order.
    pub(crate) fn topological_order(&self) -> Vec<usize> {
        let mut remaining: Vec<usize> = self.tasks.iter().map(|t| t.deps.len()).collect();
        let mut ready: BTreeSet<usize> = (0..self.tasks.len()).filter(|&i| remaining[i] == 0).collect();
        let mut order = Vec::with_capacity(self.tasks.len());
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for &d in self.dependents(i) {
                remaining[d] -= 1;
                if remaining[d] == 0 {
                    ready.insert(d);
                }
            }
        }
        order
    }

    /// The plan restricted to `ids` and everything they depend on (`--only`).
    pub fn select(&self, ids: &[String]) -> Result<Plan, String> {
        let mut keep = BTreeSet::new();
        for id in ids {
            let Some(task) = self.task(id) else {
                let hint = suggestion(id, self.tasks.iter().map(|t| t.id.as_str()))
                    .map(|h| format!("; {h}"))
                    .unwrap_or_default();
                return Err(format!("--only {id}: no task `{id}` in {}{hint}", self.name));
            };
            keep.insert(task.index);
            keep.extend(self.ancestors(task.index));
        }
        let new_index: HashMap<usize, usize> = keep.iter().enumerate().map(|(new, &old)| (old, new)).collect();
        let tasks: Vec<PlannedTask> = keep
            .iter()
            .map(|&old| {
                let mut t = self.tasks[old].clone();
                t.index = new_index[&old];
                t.deps = t.deps.iter().map(|d| new_index[d]).collect();
                t
            })
            .collect();
        Ok(Plan { tasks, dependents: Vec::new(), ..self.clone() }.indexed())
    }
}
