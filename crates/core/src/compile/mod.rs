//! The compiler: a pipeline file in, a validated [`Plan`] out. It holds every rule of the file
//! format, collects every problem with its position before it answers, and is the only way to a
//! plan: `validate`, `graph`, `--dry-run` and a real run all start here.
//!
//! | module | checks |
//! | --- | --- |
//! | this one | the file, variables, the task list, dependencies and cycles |
//! | [`tasks`] | each task kind's spec into its action: paths, load modes, day rules |
//! | [`settings`] | `engines:`, `storage.s3`, each task's engine, timeout and retries |
//! | [`tables`] | tables read have producers upstream, report queries, unique outputs, places |
//! | [`emr`] | the `engines.emr` section |
//! | [`places`] | that no output overlaps an input or another output |
//! | [`columns`] | the columns checks, loads and SQL name, derived from the declared schemas |

mod columns;
mod emr;
mod places;
mod settings;
mod tables;
mod tasks;

use settings::engine_settings;

pub use columns::{SchemaCheck, SchemaOracle};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::decode::{Decode, Decoder, Located};
use crate::diagnostic::{Diagnostic, Diagnostics, Pos, Severity, SourceFile, suggestion};
use crate::path::join_path;
use crate::plan::{Action, DEFAULT_ENGINE, DEFAULT_TIMEOUT, Plan, PlannedTask, ReportQuery};
use crate::retry::RetryPolicy;
use crate::spec::{ChartKind, DefaultsSpec, PipelineSpec, TaskSpec};
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

    /// Reports every dependency cycle among `nodes` (each task's id and `depends_on`), naming its
    /// whole chain at the dependency entry that closes it. Returns whether there was one.
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
