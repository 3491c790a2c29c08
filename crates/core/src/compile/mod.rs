//! The compiler: a pipeline file in, a validated [`Plan`] out. It holds every rule of the file
//! format, collects every problem with its position before it answers, and is the only way to a
//! plan: `validate`, `graph`, `--dry-run` and a real run all start here.
//!
//! | module | checks |
//! | --- | --- |
//! | this one | the file, variables, tasks, dependencies and cycles, tables read, report queries |
//! | [`emr`] | the `engines.emr` section |
//! | [`places`] | that no output overlaps an input or another output |
//! | [`columns`] | the columns checks, loads and SQL name, derived from the declared schemas |

mod columns;
mod emr;
mod places;

pub use columns::{SchemaCheck, SchemaOracle};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::auto::AUTO;
use crate::decode::{Decode, Decoder, DurationValue, Located, OneOrMany};
use crate::diagnostic::{Diagnostic, Diagnostics, Pos, Severity, SourceFile, suggestion};
use crate::emr::{ENGINE, EmrSettings};
use crate::path::{is_s3, join_path};
use crate::plan::DEFAULT_RETENTION;
use crate::plan::{
    Action, Check, CheckKind, Column, DEFAULT_ENGINE, DEFAULT_TIMEOUT, Extract, Load, Plan, PlannedTask, QualityCheck,
    Replace, ReportQuery, S3Settings, Transform,
};
use crate::retry::RetryPolicy;
use crate::slice::SliceTemplate;
use crate::spec::{
    ChartKind, CheckKindSpec, CheckSeverity, ColumnType, Compression, DefaultsSpec, EnginesSpec, ExtractSpec, LoadMode,
    LoadSpec, NewFields, PipelineSpec, ReportQuerySpec, RetrySpec, S3Spec, ServerSideEncryption, StorageClass,
    TableFormat, TaskParams, TaskSpec,
};
use crate::sql;
use crate::units::format_duration;
use crate::vars::{self, BUILTIN_VARS, DeclaredVar, VarInputs, Vars};
use crate::yaml::{self, Node, Value};

/// What the caller knows that the file does not: engines available in this build, and where the
/// local engine would spill tables.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// The engines `engine:` may name.
    pub engines: Vec<String>,
    /// The folder (`TMPDIR`) in which spilled tables get a new folder of their own, if any.
    pub spill_dir: Option<String>,
    /// Derives transforms' columns from the declared schemas, so that unknown columns are found
    /// before a run (a build with the local engine sets it).
    pub schema_check: Option<SchemaCheck>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self { engines: vec![DEFAULT_ENGINE.to_string()], spill_dir: None, schema_check: None }
    }
}

/// A pipeline that could not be planned: located diagnostics, or `--set` misuse.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The file has problems; each diagnostic has a position.
    #[error("{0}")]
    Invalid(Diagnostics),
    /// `--set` named variables the pipeline does not declare.
    #[error("{}", .0.join("\n"))]
    UnknownOverrides(Vec<String>),
}

/// Reading the file failed, or its content is invalid.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The pipeline file could not be read.
    #[error("cannot read pipeline {path}: {error}")]
    Read {
        /// The file, as given.
        path: String,
        /// Why it could not be read.
        error: String,
    },
    /// The pipeline is invalid.
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// Reads and validates the pipeline at `path`.
pub fn compile_file(path: &Path, inputs: &VarInputs, options: &PlanOptions) -> Result<Plan, LoadError> {
    let bytes =
        std::fs::read(path).map_err(|e| LoadError::Read { path: path.display().to_string(), error: e.to_string() })?;
    let text = String::from_utf8(bytes).map_err(|e| not_utf8(path, e))?;
    let mut inputs = inputs.clone();
    if !inputs.builtins.contains_key("pipeline_dir") {
        let dir = path.parent().map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p });
        inputs.builtins.insert("pipeline_dir".into(), dir.unwrap_or(Path::new(".")).display().to_string());
    }
    compile(SourceFile::new(path.display().to_string(), text), &inputs, options).map_err(LoadError::Plan)
}

/// Validates a pipeline's text: the only way from a pipeline to a [`Plan`]. Every problem found
/// is reported, sorted by position.
pub fn compile(source: Arc<SourceFile>, inputs: &VarInputs, options: &PlanOptions) -> Result<Plan, PlanError> {
    let mut diags = Vec::new();
    let root = match yaml::parse(&source) {
        Ok(root) => root,
        Err(d) => return Err(PlanError::Invalid(Diagnostics::new(source, vec![d]))),
    };
    if !matches!(root.value, Value::Map(_)) {
        let d = Diagnostic::error(
            root.pos,
            format!("expected a mapping with `name` and `tasks`, found {}", root.value.describe()),
        );
        return Err(PlanError::Invalid(Diagnostics::new(source, vec![d])));
    }

    // Variables first: they are resolved before anything else is read.
    let declared = declared_vars(&root, &source, &mut diags);
    let (vars, unknown_overrides) = vars::resolve(&declared, inputs, &source, &mut diags);
    if !unknown_overrides.is_empty() {
        return Err(PlanError::UnknownOverrides(unknown_overrides));
    }
    let mut tree = root.clone();
    if let Value::Map(entries) = &mut tree.value {
        for (key, value) in entries.iter_mut() {
            // `engines` is read after the tasks: only a run that uses an engine needs its values.
            if key.name != "vars" && key.name != "engines" {
                vars::interpolate_tree(value, &vars, &declared, inputs, &source, &mut diags);
            }
        }
    }

    let mut cx = Decoder::new(&source);
    let top = PipelineSpec::decode(&tree, &mut cx);
    diags.append(&mut cx.diagnostics);

    let mut builder = Builder { source: &source, options, diags, warnings: Vec::new(), places: Vec::new() };
    let mut plan = top.and_then(|top| builder.build(top, vars.clone()));
    let Builder { mut diags, warnings, mut places, .. } = builder;
    if let Some(plan) = plan.as_mut() {
        let (emr, emr_places, unavailable) =
            engine_settings(plan, root.get("engines"), &vars, &declared, inputs, &source, &mut diags);
        plan.emr = emr;
        plan.emr_unavailable = unavailable;
        places.extend(emr_places);
        places::check(&places, &mut diags);
        let empty: Vec<&str> =
            vars.values.iter().filter(|(_, v)| v.as_deref() == Some("")).map(|(k, _)| k.as_str()).collect();
        places::check_local(&places, &source, &empty, &mut diags);
    }

    if diags.iter().any(|d| d.severity == Severity::Error) || plan.is_none() {
        let mut all = diags;
        all.extend(warnings);
        return Err(PlanError::Invalid(Diagnostics::new(source, all)));
    }
    let mut plan = plan.expect("checked above");
    plan.warnings = warnings;
    Ok(plan)
}

/// A pipeline file that is not UTF-8: where the first bad byte is, as offset, line and column.
fn not_utf8(path: &Path, error: std::string::FromUtf8Error) -> LoadError {
    let at = error.utf8_error().valid_up_to();
    let bytes = error.into_bytes();
    let byte = bytes[at];
    let source = SourceFile::new(path.display().to_string(), String::from_utf8_lossy(&bytes).into_owned());
    let before = String::from_utf8_lossy(&bytes[..at]);
    let line = before.matches('\n').count() as u32 + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u32 + 1;
    let pos = Pos { line, col, offset: Some(at), len: 1 };
    let d = Diagnostic::error(
        pos,
        format!("the file is not UTF-8 text: byte 0x{byte:02X} at offset {at} starts no character"),
    )
    .with_hint("save the pipeline as UTF-8");
    LoadError::Plan(PlanError::Invalid(Diagnostics::new(source, vec![d])))
}

/// The `engines:` section, read once the tasks say which engines the run uses. The EMR settings
/// are interpolated and checked in full only when a task runs on `emr` (roles and log URI are
/// variables a local run may leave unset); otherwise only their keys are checked.
fn engine_settings(
    plan: &Plan,
    node: Option<&Node>,
    vars: &Vars,
    declared: &[DeclaredVar],
    inputs: &VarInputs,
    source: &SourceFile,
    diags: &mut Vec<Diagnostic>,
) -> (Option<EmrSettings>, Vec<places::Place>, BTreeMap<String, String>) {
    let mut emr_places = Vec::new();
    // `engine: auto` tasks may go to EMR: what would stop them is noted, not an error.
    let mut unavailable = BTreeMap::new();
    let auto: Vec<&PlannedTask> = plan.tasks.iter().filter(|t| t.engine == AUTO).collect();
    for t in &auto {
        let why = match &t.action {
            Action::QualityCheck(_) => {
                let message = format!("task `{}`: quality checks run on the local engine, not on auto", t.id);
                diags.push(Diagnostic::error(t.pos, message));
                continue;
            }
            Action::Extract(e) if !is_s3(&e.path) => {
                format!("it reads `{}`, not an s3:// path", e.path)
            }
            Action::Load(l) if l.format == TableFormat::Delta => "a Delta load commits in dagrun's process".into(),
            Action::Load(l) if !is_s3(&l.path) => format!("it writes `{}`, not an s3:// path", l.path),
            _ => continue,
        };
        unavailable.insert(t.id.clone(), why);
    }
    let on_emr: Vec<&PlannedTask> = plan.tasks.iter().filter(|t| t.engine == ENGINE).collect();
    for t in &on_emr {
        let (verb, path) = match &t.action {
            Action::QualityCheck(_) => {
                let message = format!("task `{}`: quality checks run on the local engine, not on emr", t.id);
                diags.push(Diagnostic::error(t.pos, message));
                continue;
            }
            Action::Extract(e) => ("reads", &e.path),
            Action::Load(l) if l.format == TableFormat::Delta => {
                let message = format!(
                    "task `{}`: a `format: delta` load runs on the local engine, not on emr (dagrun commits \
                     Delta versions itself; Spark steps never write Delta)",
                    t.id
                );
                diags.push(Diagnostic::error(t.pos, message).with_hint(
                    "drop `engine:` from the load: it reads the table its upstream task made on EMR and commits it",
                ));
                continue;
            }
            Action::Load(l) => ("writes", &l.path),
            Action::Transform(_) => continue,
        };
        if !is_s3(path) {
            let message = format!("task `{}` runs on emr and {verb} `{path}`: EMR steps use s3:// paths only", t.id);
            diags.push(
                Diagnostic::error(t.pos, message).with_hint("pass an s3:// URI with --set, or run the task on local"),
            );
        }
    }

    let mut cx = Decoder::new(source);
    let settings = match node {
        Some(node) if !on_emr.is_empty() => {
            let mut node = node.clone();
            vars::interpolate_tree(&mut node, vars, declared, inputs, source, diags);
            let spec = EnginesSpec::decode(&node, &mut cx);
            spec.and_then(|s| s.emr).map(|emr| {
                let settings = emr::validate(&emr, plan, diags);
                emr_places.push(places::Place::output("engines.emr.staging", &settings.staging, emr.staging.pos));
                emr_places.push(places::Place::output(
                    "engines.emr.log_uri (where EMR writes logs)",
                    &settings.log_uri,
                    emr.log_uri.pos,
                ));
                settings
            })
        }
        Some(node) if !auto.is_empty() => {
            // Validated apart: an EMR section that does not validate (variables only EMR needs
            // left unset) keeps the auto tasks local, and says why.
            emr::check_keys_only(node, &mut cx);
            let mut scratch = Vec::new();
            let mut node = node.clone();
            vars::interpolate_tree(&mut node, vars, declared, inputs, source, &mut scratch);
            let mut apart = Decoder::new(source);
            let spec = EnginesSpec::decode(&node, &mut apart);
            let settings = spec.and_then(|s| s.emr).map(|emr| emr::validate(&emr, plan, &mut scratch));
            scratch.append(&mut apart.diagnostics);
            match scratch.iter().find(|d| d.severity == Severity::Error) {
                Some(first) => {
                    unavailable.insert("*".into(), format!("engines.emr does not validate: {}", first.message));
                    None
                }
                None if settings.is_none() => {
                    unavailable.insert("*".into(), "the pipeline has no engines.emr section".into());
                    None
                }
                None => settings,
            }
        }
        Some(node) => {
            emr::check_keys_only(node, &mut cx);
            None
        }
        None => {
            if !auto.is_empty() {
                unavailable.insert("*".into(), "the pipeline has no engines.emr section".into());
            }
            None
        }
    };
    diags.append(&mut cx.diagnostics);
    if settings.is_none()
        && let Some(first) = on_emr.first()
        && !diags.iter().any(|d| d.severity == Severity::Error)
    {
        diags.push(Diagnostic::error(
            first.pos,
            format!("task `{}` runs on emr, but the pipeline has no `engines.emr` section", first.id),
        ));
    }
    (settings, emr_places, unavailable)
}

crate::decode_struct! {
    /// A variable declared as a mapping: `db_password: {value: "${env:DB_PASSWORD}", secret: true}`.
    pub struct VarSpec as "a variable" {
        value: Option<String>,
        secret: Option<bool>,
    }
}

fn declared_vars(root: &Node, source: &SourceFile, diags: &mut Vec<Diagnostic>) -> Vec<DeclaredVar> {
    let Some(vars_node) = root.get("vars") else {
        return Vec::new();
    };
    if vars_node.value == Value::Null {
        return Vec::new();
    }
    let mut cx = Decoder::new(source);
    let Value::Map(nodes) = &vars_node.value else {
        cx.expected(vars_node, "a mapping of variables");
        diags.append(&mut cx.diagnostics);
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, node) in nodes {
        let pos = Pos { len: key.name.len(), ..key.pos };
        let decoded = match &node.value {
            Value::Map(_) => VarSpec::decode(node, &mut cx)
                .map(|spec| (spec.value, spec.secret, node.get("value").cloned().or_else(|| Some(node.clone())))),
            _ => Option::<String>::decode(node, &mut cx).map(|value| (value, None, Some(node.clone()))),
        };
        let Some((raw, secret, value_node)) = decoded else {
            continue;
        };
        if !vars::is_identifier(&key.name) {
            cx.error(pos, format!("invalid variable name `{}`: use letters, digits and _", key.name));
            continue;
        }
        if BUILTIN_VARS.contains(&key.name.as_str()) {
            cx.error(pos, format!("`{}` is a built-in variable and cannot be declared", key.name));
            continue;
        }
        out.push(DeclaredVar { name: key.name.clone(), name_pos: key.pos, raw, value_node, secret });
    }
    diags.append(&mut cx.diagnostics);
    out
}

struct Builder<'a> {
    source: &'a SourceFile,
    options: &'a PlanOptions,
    diags: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    /// The folders the plan reads and writes, checked once the EMR section is read too.
    places: Vec<places::Place>,
}

impl Builder<'_> {
    fn error(&mut self, pos: Pos, message: impl Into<String>) -> &mut Diagnostic {
        self.diags.push(Diagnostic::error(pos, message));
        self.diags.last_mut().expect("just pushed")
    }

    fn build(&mut self, top: PipelineSpec, vars: Vars) -> Option<Plan> {
        let name = top.name.map(|n| {
            if n.trim().is_empty() {
                self.error(n.pos, "the pipeline name is empty");
            }
            n.value
        });

        let defaults =
            top.defaults.unwrap_or(DefaultsSpec { engine: None, timeout: None, retry: None, pos: Pos::UNKNOWN });
        let default_engine = defaults.engine.clone().map(|e| {
            self.check_engine(&e);
            e.value
        });
        let default_timeout = defaults.timeout.map(|t| self.check_timeout(t)).unwrap_or(DEFAULT_TIMEOUT);
        let default_retry = match &defaults.retry {
            Some(r) => self.retry_policy(&RetryPolicy::default(), r),
            None => RetryPolicy::default(),
        };

        if top.tasks.is_empty() && top.has_tasks_key {
            self.error(top.tasks_pos, "the pipeline has no tasks");
        }

        // Ids: every readable id counts as known, even for tasks with other errors, so their
        // dependents do not get a second, misleading "unknown dependency" error.
        let mut known: BTreeMap<String, Pos> = BTreeMap::new();
        for raw in &top.tasks {
            let Some(id) = &raw.id else { continue };
            let pos = Pos { len: id.len(), ..id.pos };
            if !is_task_id(id) {
                self.error(pos, format!("invalid task id `{}`", id.value)).hint =
                    Some("ids are table names in SQL: start with a letter or _, then letters, digits, _".into());
            }
            if let Some(first) = known.get(id.as_str()) {
                let line = first.line;
                self.error(pos, format!("duplicate task id `{}`", id.value)).hint =
                    Some(format!("first declared on line {line}"));
            } else {
                known.insert(id.value.clone(), id.pos);
            }
        }
        let all_decoded = top.tasks.iter().all(|t| t.spec.is_some());
        // The graph as written, every task with a readable id in it (decoded or not), so that
        // one task's typo does not hide dependency errors or cycles.
        let graph_nodes: Vec<(&Located<String>, &[Located<String>])> = top
            .tasks
            .iter()
            .filter_map(|t| match &t.spec {
                Some(spec) => Some((&spec.id, spec.depends_on.as_slice())),
                None => t.id.as_ref().map(|id| (id, t.depends_on.as_slice())),
            })
            .collect();
        let mut node_of: HashMap<&str, usize> = HashMap::new();
        for (i, (id, _)) in graph_nodes.iter().enumerate() {
            node_of.entry(id.as_str()).or_insert(i);
        }
        let mut graph_deps: Vec<Vec<usize>> = Vec::with_capacity(graph_nodes.len());
        for (id, depends_on) in &graph_nodes {
            let mut mine: Vec<usize> = Vec::new();
            for dep in *depends_on {
                let pos = Pos { len: dep.len(), ..dep.pos };
                if dep.value == id.value {
                    self.error(pos, format!("task `{}` depends on itself", id.value));
                    continue;
                }
                match node_of.get(dep.as_str()) {
                    Some(&i) if mine.contains(&i) => {
                        self.error(pos, format!("`{}` is listed twice in depends_on", dep.value));
                    }
                    Some(&i) => mine.push(i),
                    None => {
                        let hint = suggestion(dep, known.keys().map(String::as_str));
                        self.error(pos, format!("unknown dependency `{}` of task `{}`", dep.value, id.value)).hint =
                            hint;
                    }
                }
            }
            graph_deps.push(mine);
        }
        let has_cycle = self.check_cycles(&graph_nodes, &graph_deps);

        let specs: Vec<TaskSpec> = top.tasks.into_iter().filter_map(|t| t.spec).collect();
        let mut index_of: HashMap<String, usize> = HashMap::new();
        for (i, spec) in specs.iter().enumerate() {
            index_of.entry(spec.id.value.clone()).or_insert(i);
        }
        // Dependencies between decoded tasks (their errors were reported above).
        let deps: Vec<Vec<usize>> = specs
            .iter()
            .map(|spec| {
                let mut mine: Vec<usize> = Vec::new();
                for dep in &spec.depends_on {
                    if let Some(&i) = index_of.get(dep.as_str())
                        && dep.value != spec.id.value
                        && !mine.contains(&i)
                    {
                        mine.push(i);
                    }
                }
                mine
            })
            .collect();

        // Per-task settings and actions.
        let mut tasks = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let engine = match &spec.engine {
                Some(e) => {
                    self.check_engine(e);
                    e.value.clone()
                }
                None => default_engine.clone().unwrap_or_else(|| DEFAULT_ENGINE.to_string()),
            };
            let retry = match &spec.retry {
                Some(r) => self.retry_policy(&default_retry, r),
                None => default_retry,
            };
            let timeout = spec.timeout.clone().map(|t| self.check_timeout(t)).unwrap_or(default_timeout);
            let Some(action) = self.action(spec) else {
                continue;
            };
            tasks.push(PlannedTask {
                index: i,
                id: spec.id.value.clone(),
                description: spec.description.as_ref().map(|d| d.value.clone()),
                kind: spec.kind.value,
                action,
                deps: deps[i].clone(),
                engine,
                retry,
                timeout,
                pos: spec.pos,
            });
        }
        if !all_decoded || tasks.len() != specs.len() || has_cycle {
            return None;
        }

        let runs_dir = match &top.runs {
            Some(runs) => {
                self.check_path(runs, "runs");
                runs.value.clone()
            }
            None => match vars.get("output") {
                Some("") => {
                    self.error(
                        Pos::UNKNOWN,
                        "`${output}` is empty, so the runs folder would be /_dagrun, at the file system's root",
                    )
                    .hint = Some("give `output` a folder (`--set output=DIR`), or set `runs:`".into());
                    "_dagrun".to_string()
                }
                Some(output) => join_path(output, "_dagrun"),
                None => "_dagrun".to_string(),
            },
        };
        let s3 = self.s3_settings(top.storage.as_ref().and_then(|s| s.s3.as_ref()));
        let report_specs = top.report.unwrap_or_default();
        let mut plan = Plan {
            name: name?,
            description: top.description.map(|d| d.value),
            runs_dir,
            s3,
            report: report_specs
                .iter()
                .map(|q| ReportQuery {
                    title: q.title.value.clone(),
                    sql: q.sql.value.clone(),
                    chart: q.chart.as_ref().map_or(ChartKind::Table, |c| c.value),
                })
                .collect(),
            source: Arc::new(self.source.clone()),
            vars,
            tasks,
            dependents: Vec::new(),
            warnings: Vec::new(),
            emr: None,
            emr_unavailable: Default::default(),
            budget: top.budget.as_ref().map(|b| {
                if !b.max_usd.value.is_finite() || b.max_usd.value < 0.0 {
                    self.error(b.max_usd.pos, "budget.max_usd must be a number of USD, at least 0 (0 forbids EMR)");
                }
                b.max_usd.value.max(0.0)
            }),
            sliced: false,
            lake_tables: Default::default(),
        }
        .indexed();
        plan.lake_tables = plan
            .tasks
            .iter()
            .filter_map(|t| match &t.action {
                Action::Load(l) => Some((l.table.clone(), l.path.clone())),
                _ => None,
            })
            .collect();
        if plan.tasks.iter().any(|t| matches!(&t.action, Action::Extract(e) if e.slice.is_some())) {
            plan.sliced = true;
        }
        self.check_tables(&plan, &specs);
        self.check_report(&plan, &report_specs);
        self.check_outputs(&plan, &specs);
        if !self.diags.iter().any(|d| d.severity == Severity::Error) {
            self.check_columns(&plan, &specs, &report_specs);
        }
        self.places = self.places(&plan, &specs, top.runs.as_ref());
        Some(plan)
    }

    fn s3_settings(&mut self, spec: Option<&S3Spec>) -> S3Settings {
        let mut settings = S3Settings::default();
        let Some(spec) = spec else { return settings };
        let text = |v: &Option<Located<String>>| v.as_ref().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        settings.endpoint_url = text(&spec.endpoint_url);
        if let (Some(url), Some(node)) = (&settings.endpoint_url, &spec.endpoint_url)
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            self.error(node.pos, format!("endpoint_url `{url}` must start with http:// or https://"));
        }
        settings.region = text(&spec.region);
        settings.path_style = spec.path_style.as_ref().map(|p| p.value);
        if let Some(c) = &spec.max_concurrency {
            if !(1..=1024).contains(&c.value) {
                self.error(c.pos, format!("max_concurrency must be between 1 and 1024, found {}", c.value));
            }
            settings.max_concurrency = c.value.clamp(1, 1024) as usize;
        }
        if let Some(a) = &spec.max_attempts {
            if a.value == 0 {
                self.error(a.pos, "max_attempts must be at least 1");
            }
            settings.max_attempts = a.value.max(1);
        }
        if let Some(size) = &spec.part_size {
            if size.value.0 < 5 << 20 {
                self.error(size.pos, "part_size must be at least 5MiB (S3's smallest part)");
            }
            settings.part_size = size.value.0.max(5 << 20);
        }
        if let Some(size) = &spec.multipart_threshold {
            settings.multipart_threshold = size.value.0;
        }
        if settings.multipart_threshold < settings.part_size {
            let pos = spec.multipart_threshold.as_ref().or(spec.part_size.as_ref()).map_or(spec.pos, |s| s.pos);
            self.error(pos, "multipart_threshold must be at least part_size");
        }
        settings.server_side_encryption = spec.server_side_encryption.as_ref().map(|s| s.value);

        settings.kms_key_id = text(&spec.kms_key_id);
        if let Some(key) = &spec.kms_key_id
            && settings.server_side_encryption != Some(ServerSideEncryption::AwsKms)
        {
            self.error(key.pos, "kms_key_id needs `server_side_encryption: aws:kms`");
        }
        settings.storage_class = spec.storage_class.as_ref().map(|s| s.value);
        if let Some(class) = &spec.storage_class {
            match class.value {
                StorageClass::Glacier | StorageClass::DeepArchive => {
                    self.error(
                        class.pos,
                        format!(
                            "storage_class {}: its objects must be restored before anyone reads them, and dagrun reads its tables back (checks, merges, report answers), as do your analysts' engines",
                            class.value.as_str()
                        ),
                    )
                    .hint = Some("archive old partitions with an S3 lifecycle rule instead".into());
                }
                StorageClass::StandardIa | StorageClass::OnezoneIa | StorageClass::GlacierIr => {
                    self.warnings.push(
                        Diagnostic::warning(
                            class.pos,
                            format!(
                                "storage_class {} bills each object as at least 128 KB for at least {} days: a table's small files (a Sparkify song partition is about 2 KB) and a table replaced nightly cost more than in STANDARD",
                                class.value.as_str(),
                                if class.value == StorageClass::GlacierIr { 90 } else { 30 }
                            ),
                        )
                        .with_hint("INTELLIGENT_TIERING has no minimum duration and does not bill small objects as 128 KB"),
                    );
                }
                _ => {}
            }
        }
        settings
    }

    fn check_engine(&mut self, engine: &Located<String>) {
        if !self.options.engines.iter().any(|e| e == engine.as_str()) {
            let hint = suggestion(engine, self.options.engines.iter().map(String::as_str))
                .unwrap_or_else(|| format!("available engines: {}", self.options.engines.join(", ")));
            let pos = Pos { len: engine.len(), ..engine.pos };
            self.error(pos, format!("unknown engine `{}`", engine.value)).hint = Some(hint);
        }
    }

    fn check_timeout(&mut self, t: Located<DurationValue>) -> Duration {
        if t.value.0.is_zero() {
            self.error(t.pos, "timeout must be longer than zero");
        }
        t.value.0
    }

    fn retry_policy(&mut self, base: &RetryPolicy, spec: &RetrySpec) -> RetryPolicy {
        let mut policy = *base;
        if let Some(n) = &spec.max_attempts {
            if n.value == 0 {
                self.error(n.pos, "max_attempts must be at least 1 (1 means no retries)");
            }
            policy.max_attempts = n.value.max(1);
        }
        if let Some(d) = &spec.initial_delay {
            policy.initial_delay = d.value.0;
        }
        if let Some(m) = &spec.multiplier {
            if m.value < 1.0 {
                self.error(m.pos, format!("multiplier must be at least 1, found {}", m.value));
            }
            policy.multiplier = m.value;
        }
        if let Some(d) = &spec.max_delay {
            policy.max_delay = d.value.0;
        }
        if let Some(j) = &spec.jitter {
            policy.jitter = j.value;
        }
        if policy.max_delay < policy.initial_delay {
            let pos = spec
                .max_delay
                .as_ref()
                .map(|d| d.pos)
                .or(spec.initial_delay.as_ref().map(|d| d.pos))
                .unwrap_or(spec.pos);
            self.error(
                pos,
                format!(
                    "max_delay ({}) is shorter than initial_delay ({})",
                    format_duration(policy.max_delay),
                    format_duration(policy.initial_delay)
                ),
            );
        }
        policy
    }

    /// Reports every dependency cycle, naming its whole chain. Returns whether there was one.
    /// Reports every cycle among `nodes` (each task's id and `depends_on`), at the dependency
    /// entry that closes it.
    fn check_cycles(&mut self, nodes: &[(&Located<String>, &[Located<String>])], deps: &[Vec<usize>]) -> bool {
        let mut graph: DiGraph<usize, ()> = DiGraph::new();
        for i in 0..nodes.len() {
            graph.add_node(i);
        }
        for (i, ds) in deps.iter().enumerate() {
            for &d in ds {
                graph.add_edge(NodeIndex::new(i), NodeIndex::new(d), ());
            }
        }
        let mut found = false;
        let mut sccs = tarjan_scc(&graph);
        sccs.sort_by_key(|c| c.iter().map(|n| n.index()).min());
        for scc in sccs {
            if scc.len() < 2 {
                continue;
            }
            found = true;
            let members: BTreeSet<usize> = scc.iter().map(|n| n.index()).collect();
            let start = *members.first().expect("non-empty");
            let mut chain = cycle_through(start, &members, deps);
            // Point at the dependency entry that closes the loop.
            let last = chain[chain.len() - 2];
            let closing = nodes[last].1.iter().find(|d| d.value == nodes[start].0.value);
            let pos = closing.map_or(nodes[last].0.pos, |d| Pos { len: d.len(), ..d.pos });
            // Name the chain in data-flow order, like the graph: `a -> b` means b depends on a.
            chain.reverse();
            let names: Vec<&str> = chain.iter().map(|&i| nodes[i].0.as_str()).collect();
            self.error(pos, format!("dependency cycle: {}", names.join(" -> "))).hint =
                Some("a task cannot depend, directly or not, on its own result".into());
        }
        found
    }

    fn action(&mut self, spec: &TaskSpec) -> Option<Action> {
        match &spec.params {
            TaskParams::Extract(e) => {
                let glob = e.glob.as_ref().map_or("**".to_string(), |g| g.value.clone());
                if let Some(g) = &e.glob
                    && let Err(err) = globset::Glob::new(g)
                {
                    self.error(g.pos, format!("invalid glob `{}`: {}", g.value, err.kind()));
                }
                self.check_path(&e.path, "path");
                if e.schema.0.is_empty() {
                    self.error(spec.pos, format!("task `{}` declares an empty schema", spec.id.value));
                }
                let schema: Vec<Column> = e
                    .schema
                    .0
                    .iter()
                    .map(|(key, col)| Column {
                        name: key.name.clone(),
                        ty: col.ty.value,
                        from: col.from.as_ref().map_or(key.name.clone(), |f| f.value.clone()),
                    })
                    .collect();
                let slice = e.slice_path.as_ref().and_then(|t| match SliceTemplate::parse(t) {
                    Ok(template) => Some(template),
                    Err(message) => {
                        self.error(t.pos, format!("invalid `slice_path`: {message}"));
                        None
                    }
                });
                let (slice_column, slice_tolerance) = self.slice_rule(e, &schema);
                let mut ignore_fields: Vec<String> = Vec::new();
                for field in e.ignore_fields.iter().flat_map(|f| &f.0) {
                    if let Some(column) = schema.iter().find(|c| c.from == field.value) {
                        self.error(
                            field.pos,
                            format!(
                                "field `{}` is both loaded (column `{}`) and in `ignore_fields`: keep one",
                                field.value, column.name
                            ),
                        );
                    } else if ignore_fields.contains(&field.value) {
                        self.error(field.pos, format!("field `{}` is listed twice in `ignore_fields`", field.value));
                    } else {
                        ignore_fields.push(field.value.clone());
                    }
                }
                Some(Action::Extract(Extract {
                    path: e.path.value.clone(),
                    glob,
                    format: e.format.value,
                    schema,
                    max_bad_records: e.max_bad_records.as_ref().map_or(0, |m| m.value),
                    slice,
                    slice_column,
                    slice_tolerance,
                    on_new_fields: e.on_new_fields.as_ref().map_or(NewFields::Ignore, |p| p.value),
                    ignore_fields,
                }))
            }
            TaskParams::Transform(t) => {
                let tables = match sql::referenced_tables(&t.sql) {
                    Ok(tables) => tables,
                    Err(err) => {
                        let pos = sql::locate(self.source, &t.sql, err.line, err.column);
                        self.error(pos, format!("SQL of task `{}` does not parse: {}", spec.id.value, err.message));
                        Vec::new()
                    }
                };
                Some(Action::Transform(Transform { sql: t.sql.value.clone(), tables }))
            }
            TaskParams::QualityCheck(q) => {
                let mut checks = Vec::new();
                let mut tables = vec![q.table.value.clone()];
                if q.checks.is_empty() {
                    self.error(spec.pos, format!("task `{}` has no checks", spec.id.value));
                }
                for c in &q.checks {
                    let severity = c.severity.as_ref().map_or(CheckSeverity::Error, |s| s.value);
                    let kinds: Vec<(String, CheckKind)> = match &c.check {
                        CheckKindSpec::NotNull(cols) if cols.is_empty() => {
                            self.error(c.pos, "not_null needs at least one column");
                            Vec::new()
                        }
                        CheckKindSpec::Unique(cols) if cols.is_empty() => {
                            self.error(
                                c.pos,
                                "unique needs at least one column (a list means the combination is unique)",
                            );
                            Vec::new()
                        }
                        CheckKindSpec::NotNull(cols) => cols
                            .iter()
                            .map(|col| {
                                (format!("not_null({})", col.value), CheckKind::NotNull { column: col.value.clone() })
                            })
                            .collect(),
                        CheckKindSpec::Unique(cols) => {
                            let columns: Vec<String> = cols.iter().map(|c| c.value.clone()).collect();
                            vec![(format!("unique({})", columns.join(", ")), CheckKind::Unique { columns })]
                        }
                        CheckKindSpec::RowCount { min, max } => {
                            if let (Some(lo), Some(hi)) = (min, max)
                                && lo.value > hi.value
                            {
                                self.error(hi.pos, format!("row_count max ({}) is below min ({})", hi.value, lo.value));
                            }
                            let name = match (min, max) {
                                (Some(lo), Some(hi)) => {
                                    format!("row_count({}..{})", lo.value, hi.value)
                                }
                                (Some(lo), None) => format!("row_count(>= {})", lo.value),
                                (None, Some(hi)) => format!("row_count(<= {})", hi.value),
                                (None, None) => {
                                    self.error(c.pos, "row_count needs `min`, `max` or both");
                                    "row_count".into()
                                }
                            };
                            vec![(
                                name,
                                CheckKind::RowCount {
                                    min: min.as_ref().map(|m| m.value),
                                    max: max.as_ref().map(|m| m.value),
                                },
                            )]
                        }
                        CheckKindSpec::AcceptedValues { column, values } => vec![(
                            format!("accepted_values({})", column.value),
                            CheckKind::AcceptedValues {
                                column: column.value.clone(),
                                values: values.iter().map(|v| v.value.clone()).collect(),
                            },
                        )],
                        CheckKindSpec::Relationships { column, to, field } => {
                            tables.push(to.value.clone());
                            vec![(
                                format!("relationships({} -> {}.{})", column.value, to.value, field.value),
                                CheckKind::Relationships {
                                    column: column.value.clone(),
                                    to: to.value.clone(),
                                    field: field.value.clone(),
                                },
                            )]
                        }
                        CheckKindSpec::Sql(query) => {
                            match sql::referenced_tables(query) {
                                Ok(t) => tables.extend(t),
                                Err(err) => {
                                    let pos = sql::locate(self.source, query, err.line, err.column);
                                    self.error(pos, format!("SQL check does not parse: {}", err.message));
                                }
                            }
                            vec![("sql".into(), CheckKind::Sql { sql: query.value.clone() })]
                        }
                    };
                    for (default_name, kind) in kinds {
                        let name = c.name.as_ref().map_or(default_name, |n| n.value.clone());
                        checks.push(Check { name, severity, kind });
                    }
                }
                let mut seen = BTreeSet::new();
                tables.retain(|t| seen.insert(t.clone()));
                Some(Action::QualityCheck(QualityCheck { table: q.table.value.clone(), checks, tables }))
            }
            TaskParams::Load(l) => {
                self.check_path(&l.path, "path");
                let partition_by: Vec<String> =
                    l.partition_by.as_ref().map(|p| p.0.iter().map(|c| c.value.clone()).collect()).unwrap_or_default();
                if let Some(p) = &l.partition_by {
                    let mut seen = BTreeSet::new();
                    for col in &p.0 {
                        if col.trim().is_empty() {
                            self.error(col.pos, "empty partition column name");
                        } else if !seen.insert(col.value.clone()) {
                            self.error(col.pos, format!("partition column `{}` is listed twice", col.value));
                        }
                    }
                }
                let format = l.format.as_ref().map_or(TableFormat::Parquet, |f| f.value);
                if let Some(r) = &l.retention
                    && format != TableFormat::Delta
                {
                    self.error(r.pos, "`retention` applies to `format: delta` tables only");
                }
                let mode = self.load_mode(l, &partition_by);
                Some(Action::Load(Load {
                    table: l.table.value.clone(),
                    path: l.path.value.clone(),
                    format,
                    partition_by,
                    compression: l.compression.as_ref().map_or(Compression::Zstd, |c| c.value),
                    retention: l.retention.as_ref().map_or(DEFAULT_RETENTION, |r| r.value.0),
                    mode,
                }))
            }
        }
    }

    /// A load's `mode` with the keys it needs, each misuse located.
    fn load_mode(&mut self, l: &LoadSpec, partition_by: &[String]) -> Replace {
        let names = |v: &Option<OneOrMany<Located<String>>>| -> Vec<String> {
            v.as_ref().map(|v| v.0.iter().map(|c| c.value.clone()).collect()).unwrap_or_default()
        };
        let mode = l.mode.as_ref().map_or(LoadMode::Overwrite, |m| m.value);
        let stray = |key: &str, used_by: &str| format!("`{key}` applies to `mode: {used_by}` loads only");
        if mode != LoadMode::Partitions
            && let Some(c) = &l.slice_column
        {
            self.error(c.pos, stray("slice_column", "partitions"));
        }
        if mode != LoadMode::Merge {
            for (key, v) in [("keys", &l.keys), ("order_by", &l.order_by)] {
                if let Some(v) = v {
                    let pos = v.0.first().map_or(l.pos, |c| c.pos);
                    self.error(pos, stray(key, "merge"));
                }
            }
        }
        let at = l.mode.as_ref().map_or(l.pos, |m| m.pos);
        match mode {
            LoadMode::Overwrite => Replace::Overwrite,
            LoadMode::Partitions => match &l.slice_column {
                Some(c) if partition_by.contains(&c.value) => {
                    self.error(
                        c.pos,
                        format!(
                            "`slice_column` `{}` is a partition column: name a timestamp column of the rows",
                            c.value
                        ),
                    );
                    Replace::Overwrite
                }
                Some(c) => Replace::Partitions { slice_column: c.value.clone() },
                None => {
                    self.error(at, "`mode: partitions` needs `slice_column`: the timestamp column whose day places each row in a slice");
                    Replace::Overwrite
                }
            },
            LoadMode::Merge => {
                let (keys, order_by) = (names(&l.keys), names(&l.order_by));
                if keys.is_empty() {
                    self.error(at, "`mode: merge` needs `keys`: the columns that identify a row");
                }
                if order_by.is_empty() {
                    self.error(
                        at,
                        "`mode: merge` needs `order_by`: the columns whose greatest values make a row the latest",
                    );
                }
                Replace::Merge { keys, order_by }
            }
        }
    }

    /// A sliced extract's day rule: the column whose UTC day a row is of, and how many days from
    /// its file's day it may be (default 1).
    fn slice_rule(&mut self, e: &ExtractSpec, schema: &[Column]) -> (Option<String>, Option<u32>) {
        let column = match (&e.slice_path, &e.slice_column) {
            (Some(_), Some(c)) => match schema.iter().find(|s| s.name == c.value) {
                Some(s) if s.ty == ColumnType::TimestampMs => Some(c.value.clone()),
                Some(s) => {
                    self.error(
                        c.pos,
                        format!("`slice_column` `{}` is of type {}: it must be a timestamp_ms column", c.value, s.ty),
                    );
                    None
                }
                None => {
                    let hint = suggestion(&c.value, schema.iter().map(|s| s.name.as_str()));
                    self.error(c.pos, format!("`slice_column` `{}` is not a column of the schema", c.value)).hint =
                        hint;
                    None
                }
            },
            (Some(p), None) => {
                self.error(
                    p.pos,
                    "`slice_path` needs `slice_column`: the timestamp_ms column whose UTC day a row is of \
                     (a run of a day keeps that day's rows, from whichever file they came in)",
                )
                .hint = Some("e.g. `slice_column: start_time`".into());
                None
            }
            (None, Some(c)) => {
                self.error(c.pos, "`slice_column` needs `slice_path`: where the files of one day are");
                None
            }
            (None, None) => None,
        };
        let tolerance = match (&e.slice_path, &e.slice_tolerance) {
            (Some(_), Some(t)) => {
                let secs = t.value.0.as_secs_f64();
                let days = secs / 86_400.0;
                if days.fract() != 0.0 || days > 31.0 {
                    self.error(t.pos, "`slice_tolerance` is whole days, at most 31: e.g. 0d, 1d or 2d");
                    None
                } else {
                    Some(days as u32)
                }
            }
            (Some(_), None) => Some(1),
            (None, Some(t)) => {
                self.error(t.pos, "`slice_tolerance` needs `slice_path`");
                None
            }
            (None, None) => None,
        };
        (column, tolerance)
    }

    fn check_path(&mut self, path: &Located<String>, key: &str) {
        if path.trim().is_empty() {
            self.error(path.pos, format!("`{key}` is empty"));
        } else if let Some(rest) = path.strip_prefix("s3://")
            && rest.split('/').next().is_none_or(str::is_empty)
        {
            self.error(path.pos, format!("`{}` names no bucket: expected s3://bucket/prefix", path.value));
        } else if let Some(rest) = path.strip_prefix("s3://")
            && let Some(segment) = rest.trim_end_matches('/').split('/').skip(1).find(|s| matches!(*s, "" | "." | ".."))
        {
            let shown = if segment.is_empty() { "an empty segment (`//`)".to_string() } else { format!("`{segment}`") };
            self.error(
                path.pos,
                format!("`{}` holds {shown}: S3 keys are literal, so it is not a folder step there", path.value),
            )
            .hint = Some("write the prefix as S3 stores it, without `.`, `..` or `//`".into());
        } else if path.contains("://") && !path.starts_with("s3://") {
            let scheme = path.split("://").next().unwrap_or("");
            self.error(path.pos, format!("unsupported scheme `{scheme}://` in `{}`", path.value)).hint =
                Some("use a local path or s3://bucket/prefix".into());
        }
    }

    /// Every table a task reads must be produced by a task it depends on (directly or not).
    fn check_tables(&mut self, plan: &Plan, specs: &[TaskSpec]) {
        let producers: BTreeMap<&str, usize> =
            plan.tasks.iter().filter_map(|t| t.table().map(|name| (name, t.index))).collect();
        let levels = plan.levels();
        for task in &plan.tasks {
            let spec = &specs[task.index];
            let reads: Vec<(String, Pos)> = match (&task.action, &spec.params) {
                (Action::Transform(t), TaskParams::Transform(s)) => {
                    t.tables.iter().map(|name| (name.clone(), sql::locate_word(self.source, &s.sql, name))).collect()
                }
                (Action::QualityCheck(_), TaskParams::QualityCheck(s)) => {
                    let mut reads = vec![(s.table.value.clone(), s.table.pos)];
                    for c in &s.checks {
                        match &c.check {
                            CheckKindSpec::Relationships { to, .. } => reads.push((to.value.clone(), to.pos)),
                            CheckKindSpec::Sql(query) => {
                                for name in sql::referenced_tables(query).unwrap_or_default() {
                                    let pos = sql::locate_word(self.source, query, &name);
                                    reads.push((name, pos));
                                }
                            }
                            _ => {}
                        }
                    }
                    reads
                }
                (Action::Load(l), TaskParams::Load(s)) => vec![(l.table.clone(), s.table.pos)],
                _ => Vec::new(),
            };
            for (name, pos) in reads {
                let pos = Pos { len: if pos.len == 0 { name.len() } else { pos.len }, ..pos };
                match producers.get(name.as_str()) {
                    None => {
                        let hint = suggestion(&name, producers.keys().copied()).unwrap_or_else(|| {
                            "tables are named after the extract and transform tasks that produce them".into()
                        });
                        self.error(pos, format!("task `{}` reads unknown table `{name}`", task.id)).hint = Some(hint);
                    }
                    Some(&producer) if producer == task.index => {
                        self.error(pos, format!("task `{}` reads its own table `{name}`", task.id));
                    }
                    Some(&producer) if !plan.depends_on(task.index, producer, &levels) => {
                        self.error(
                            pos,
                            format!("task `{}` reads table `{name}` but does not depend on task `{name}`", task.id),
                        )
                        .hint = Some(format!("add `{name}` to its depends_on"));
                    }
                    Some(_) => {}
                }
            }
        }
    }

    /// Report queries read published tables only (by the name their load gives them).
    fn check_report(&mut self, plan: &Plan, queries: &[ReportQuerySpec]) {
        let published: Vec<&str> = plan
            .tasks
            .iter()
            .filter_map(|t| match &t.action {
                Action::Load(l) => Some(l.table.as_str()),
                _ => None,
            })
            .collect();
        for q in queries {
            match sql::referenced_tables(&q.sql) {
                Ok(tables) => {
                    for name in tables {
                        if !published.contains(&name.as_str()) {
                            let pos = sql::locate_word(self.source, &q.sql, &name);
                            let hint = suggestion(&name, published.iter().copied())
                                .unwrap_or_else(|| format!("published tables: {}", published.join(", ")));
                            self.error(
                                Pos { len: name.len(), ..pos },
                                format!("report query `{}` reads `{name}`, which no load publishes", q.title.value),
                            )
                            .hint = Some(hint);
                        }
                    }
                }
                Err(err) => {
                    let pos = sql::locate(self.source, &q.sql, err.line, err.column);
                    self.error(pos, format!("report query `{}` does not parse: {}", q.title.value, err.message));
                }
            }
        }
    }

    /// A table should not be published unchecked. (Where loads write is checked with every other
    /// place in [`places`].)
    fn check_outputs(&mut self, plan: &Plan, specs: &[TaskSpec]) {
        let mut checks_of: HashMap<&str, Vec<&PlannedTask>> = HashMap::new();
        for check in &plan.tasks {
            if let Action::QualityCheck(q) = &check.action {
                checks_of.entry(q.table.as_str()).or_default().push(check);
            }
        }
        let levels = plan.levels();
        for task in &plan.tasks {
            let Action::Load(load) = &task.action else { continue };
            let Some(checks) = checks_of.get(load.table.as_str()) else { continue };
            for check in checks {
                if !plan.depends_on(task.index, check.index, &levels) {
                    self.warnings.push(
                        Diagnostic::warning(
                            specs[task.index].id.pos,
                            format!(
                                "task `{}` publishes `{}` without waiting for its checks in `{}`",
                                task.id, load.table, check.id
                            ),
                        )
                        .with_hint(format!("add `{}` to its depends_on", check.id)),
                    );
                }
            }
        }
    }

    /// Every folder the plan reads or writes, with where the file says so.
    fn places(&self, plan: &Plan, specs: &[TaskSpec], runs: Option<&Located<String>>) -> Vec<places::Place> {
        let mut out = Vec::new();
        for spec in specs {
            match &spec.params {
                TaskParams::Extract(e) => out.push(places::Place::extract(&spec.id, &e.path, e.path.pos)),
                TaskParams::Load(l) => out.push(places::Place::load(&spec.id, &l.path, l.path.pos)),
                _ => {}
            }
        }
        let (name, pos) = match runs {
            Some(r) => ("the runs folder", r.pos),
            None => ("the runs folder (by default `${output}/_dagrun`)", Pos::UNKNOWN),
        };
        out.push(places::Place::output(name, &plan.runs_dir, pos));
        if let Some(dir) = &self.options.spill_dir {
            let mut spill = places::Place::output("the spill folder (TMPDIR)", dir, Pos::UNKNOWN);
            spill.fresh_child = true;
            out.push(spill);
        }
        out
    }
}

/// A cycle through `start` inside one strongly connected component, as a closed chain of indices.
fn cycle_through(start: usize, members: &BTreeSet<usize>, deps: &[Vec<usize>]) -> Vec<usize> {
    // Depth-first search from `start` along dependency edges until we come back to it.
    let mut stack = vec![(start, 0usize)];
    let mut path = vec![start];
    let mut visited = BTreeSet::from([start]);
    while let Some((node, next)) = stack.pop() {
        let edges: Vec<usize> = deps[node].iter().copied().filter(|d| members.contains(d)).collect();
        if next < edges.len() {
            stack.push((node, next + 1));
            let d = edges[next];
            if d == start {
                path.push(start);
                return path;
            }
            if visited.insert(d) {
                path.push(d);
                stack.push((d, 0));
            }
        } else {
            path.pop();
        }
    }
    vec![start, start]
}

fn is_task_id(id: &str) -> bool {
    vars::is_identifier(id)
}

#[cfg(test)]
mod tests;
