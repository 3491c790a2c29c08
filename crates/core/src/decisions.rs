//! What a run decides before its first task starts, beside the immutable [`Plan`]: the engine of
//! each task once `engine: auto` chose, the budget (`--max-cost`), the days of the input it reads
//! ([`RunSlice`]), what is up to date, and each task's fingerprint. The compiler makes the plan and
//! never changes it; a [`RunDecisions`] is filled in (by `auto`, the flags,
//! [`crate::resume::assess`]) and then travels, shared and unchanged, with the plan into the
//! executor and every task's context.

use std::collections::BTreeMap;

use crate::auto::AutoChoice;
use crate::plan::{Action, DEFAULT_ENGINE, Plan};
use crate::slice::{RunSlice, SliceRequest};
use crate::spec::TableFormat;

/// The run-time choices of one run of a plan.
#[derive(Debug, Clone, Default)]
pub struct RunDecisions {
    /// The engine of each task, by index: the plan's, or `auto`'s choice.
    engines: Vec<String>,
    /// The most the run may spend on EMR, in USD; `Some(0.0)` forbids EMR.
    budget: Option<f64>,
    /// The days of the sliced extracts the run reads (`None`: no extract declares `slice_path`).
    slice: Option<RunSlice>,
    /// Tasks not to run because their outputs are up to date, with the reason.
    pub fresh: BTreeMap<usize, String>,
    /// What each task's output is made from, handed to its attempts.
    pub fingerprints: BTreeMap<usize, String>,
    /// What `engine: auto` chose, and why, for the run record.
    pub auto: Vec<AutoChoice>,
}

impl RunDecisions {
    /// The decisions a run of `plan` starts from: the plan's engines and budget, no day decided,
    /// nothing up to date.
    pub fn new(plan: &Plan) -> Self {
        Self {
            engines: plan.tasks().iter().map(|t| t.engine().to_string()).collect(),
            budget: plan.budget(),
            slice: plan.is_sliced().then(RunSlice::default),
            fresh: BTreeMap::new(),
            fingerprints: BTreeMap::new(),
            auto: Vec::new(),
        }
    }

    /// The engine task `index` runs on.
    pub fn engine(&self, index: usize) -> &str {
        self.engines.get(index).map_or(DEFAULT_ENGINE, String::as_str)
    }

    /// Runs task `index` on `engine` (the choice for an `engine: auto` task).
    pub fn set_engine(&mut self, index: usize, engine: &str) {
        if let Some(slot) = self.engines.get_mut(index) {
            *slot = engine.to_string();
        }
    }

    /// The indices of the tasks that run on `engine`.
    pub fn tasks_on<'a>(&'a self, engine: &'a str) -> impl Iterator<Item = usize> + 'a {
        self.engines.iter().enumerate().filter(move |(_, e)| *e == engine).map(|(i, _)| i)
    }

    /// The most the run may spend on EMR, in USD; `Some(0.0)` forbids EMR.
    pub fn budget(&self) -> Option<f64> {
        self.budget
    }

    /// Replaces the budget (`--max-cost`).
    pub fn set_budget(&mut self, usd: f64) {
        self.budget = Some(usd);
    }

    /// Why EMR cannot run task `id` of `plan` if it were chosen for it (`engine: auto`), if it
    /// cannot.
    pub fn emr_unavailable(&self, plan: &Plan, id: &str) -> Option<String> {
        if self.budget == Some(0.0) {
            return Some("a budget of $0 forbids EMR (--max-cost 0 or budget.max_usd: 0)".into());
        }
        plan.emr_unavailable(id)
    }

    /// What the run does with the days of its sliced extracts (`None`: no extract declares
    /// `slice_path`).
    pub fn slice(&self) -> Option<&RunSlice> {
        self.slice.as_ref()
    }

    /// Records the days [`crate::resume::assess`] decided.
    pub fn decide_slice(&mut self, slice: RunSlice) {
        if self.slice.is_some() {
            self.slice = Some(slice);
        }
    }

    /// Scopes the run to some days (`--partition`, `--since/--until`). Refused when no extract
    /// declares `slice_path`, when a sliced extract runs elsewhere than in this process, and when
    /// a load downstream of one would replace its whole table from some days of its input.
    pub fn scope(&mut self, plan: &Plan, request: SliceRequest) -> Result<(), String> {
        let what = format!("this run is scoped to {}", request.describe());
        let Some(slice) = self.slice.as_mut() else {
            return Err(format!(
                "{what}, but no extract of {} declares `slice_path` (where the files of one day are)",
                plan.name()
            ));
        };
        slice.requested = Some(request);
        for task in plan.tasks() {
            let sliced = plan.sliced_extracts_of(task.index());
            let Some(&first) = sliced.first() else { continue };
            let source = plan.tasks()[first].id();
            let engine = self.engines.get(task.index()).map_or(DEFAULT_ENGINE, String::as_str);
            if let Action::Extract(_) = task.action()
                && engine != DEFAULT_ENGINE
            {
                return Err(format!(
                    "{what}, but extract `{}` runs on engine `{engine}`: only the local engine reads some days of an input yet",
                    task.id()
                ));
            }
            if let Action::Load(load) = task.action()
                && !load.mode.is_overwrite()
                && load.format != TableFormat::Delta
            {
                return Err(format!(
                    "{what}, but load `{}` (`mode: {}`) publishes in dagrun's Parquet convention, which can only \
                     replace a whole table: use `format: delta` for it, or run without a slice",
                    task.id(),
                    load.mode.name()
                ));
            }
            if let Action::Load(load) = task.action()
                && load.mode.is_overwrite()
            {
                return Err(format!(
                    "{what}, but load `{}` replaces its whole table (`mode: overwrite`) from `{source}`, which the \
                     run reads only some days of: that would drop every other day. Declare `mode: partitions` (with \
                     `slice_column`) or `mode: merge` (with `keys` and `order_by`) on it, or run without a slice",
                    task.id()
                ));
            }
        }
        Ok(())
    }
}
