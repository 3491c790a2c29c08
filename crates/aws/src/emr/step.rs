//! The task spec a Spark step runs (`deploy/emr/dagrun_step.py` reads it): what to read, the SQL,
//! where to publish. Built from the same plan the local engine runs, so the two agree on schemas,
//! SQL and output layout.

use std::collections::BTreeMap;

use dagrun_core::plan::{Action, Plan, PlannedTask, join_path};
use serde::Serialize;

/// The step program, shipped inside dagrun and uploaded once per run.
pub const RUNNER: &str = include_str!("../../../../deploy/emr/dagrun_step.py");

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepSpec {
    pub format: u32,
    pub pipeline: String,
    pub run_id: String,
    pub task: String,
    pub attempt: u32,
    pub kind: String,
    /// Table name -> published location, for the tables the task reads.
    pub inputs: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extract: Option<ExtractStep>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadStep>,
    /// Where an extract or transform publishes its table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<String>,
    /// Where the step writes its row counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExtractStep {
    pub path: String,
    pub glob: String,
    pub format: String,
    pub columns: Vec<ColumnStep>,
    pub max_bad_records: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnStep {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub from: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadStep {
    pub table: String,
    pub path: String,
    pub partition_by: Vec<String>,
    pub compression: String,
}

/// Where the run's intermediate tables go under a staging root.
pub fn table_location(tables_root: &str, table: &str) -> String {
    join_path(tables_root, table)
}

/// The spec of one attempt of `task`. `location` says where each input table is published;
/// `run_root` is the run's folder for outputs, results and quarantine files.
pub fn spec(
    plan: &Plan,
    task: &PlannedTask,
    run_id: &str,
    attempt: u32,
    fingerprint: Option<String>,
    run_root: &str,
    location: &dyn Fn(&str) -> String,
) -> Result<StepSpec, String> {
    let tables_root = join_path(run_root, "tables");
    let mut spec = StepSpec {
        format: 1,
        pipeline: plan.name().to_string(),
        run_id: run_id.to_string(),
        task: task.id().to_string(),
        attempt,
        kind: task.kind().to_string(),
        inputs: task.tables_read().into_iter().map(|t| (t.to_string(), location(t))).collect(),
        extract: None,
        sql: None,
        load: None,
        output: None,
        quarantine: None,
        result: Some(join_path(run_root, &format!("results/{}-{attempt}.json", task.id()))),
        fingerprint,
    };
    match &task.action() {
        Action::Extract(e) => {
            spec.extract = Some(ExtractStep {
                path: e.path.clone(),
                glob: e.glob.clone(),
                format: e.format.to_string(),
                columns: e
                    .schema
                    .iter()
                    .map(|c| ColumnStep { name: c.name.clone(), ty: c.ty.to_string(), from: c.from.clone() })
                    .collect(),
                max_bad_records: e.max_bad_records,
            });
            spec.output = Some(table_location(&tables_root, task.id()));
            spec.quarantine = Some(plan.quarantine_path(run_id, task.id()));
        }
        Action::Transform(t) => {
            spec.sql = Some(t.sql.clone());
            spec.output = Some(table_location(&tables_root, task.id()));
        }
        Action::Load(l) => {
            spec.load = Some(LoadStep {
                table: l.table.clone(),
                path: l.path.clone(),
                partition_by: l.partition_by.clone(),
                compression: l.compression.to_string(),
            });
        }
        Action::QualityCheck(_) => return Err(format!("task `{}`: quality checks run on the local engine", task.id())),
    }
    Ok(spec)
}
