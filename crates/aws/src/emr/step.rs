//! The task spec a Spark step runs (`deploy/emr/dagrun_step.py` reads it): what to read, the SQL,
//! where to publish. Built from the same plan the local engine runs, so the two agree on schemas,
//! SQL and output layout.

use std::collections::BTreeMap;

use dagrun_core::plan::{Action, Plan, PlannedTask, join_path};
use serde::Serialize;

/// The step program, shipped inside dagrun and uploaded once per run.
pub const RUNNER: &str = include_str!("../../../../deploy/emr/dagrun_step.py");

#[derive(Debug, Clone, PartialEq, Serialize)]
/// What one Spark step does: the JSON the step program (`deploy/emr/dagrun_step.py`) reads.
pub struct StepSpec {
    /// The spec's format version.
    pub format: u32,
    /// The pipeline's name.
    pub pipeline: String,
    /// The run's id; it tags what the step publishes.
    pub run_id: String,
    /// The task's id.
    pub task: String,
    /// The attempt, from 1.
    pub attempt: u32,
    /// `extract`, `transform` or `load`.
    pub kind: String,
    /// Table name -> published location, for the tables the task reads.
    pub inputs: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// For an extract: what to read and how.
    pub extract: Option<ExtractStep>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// For a transform: the query.
    pub sql: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// For a load: where and how to publish.
    pub load: Option<LoadStep>,
    /// Where an extract or transform publishes its table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// For an extract: where quarantined records go.
    pub quarantine: Option<String>,
    /// Where the step writes its row counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// What the output is made from, recorded in a load's manifest.
    pub fingerprint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
/// An extract, as the step program reads it.
pub struct ExtractStep {
    /// The `s3://` prefix (or folder) to read.
    pub path: String,
    /// Which files under it.
    pub glob: String,
    /// `json` or `jsonl`.
    pub format: String,
    /// The declared columns.
    pub columns: Vec<ColumnStep>,
    /// How many records may be quarantined.
    pub max_bad_records: u64,
    /// `ignore`, `warn` or `fail`: what to do about undeclared source fields.
    pub on_new_fields: String,
    /// Fields never reported as new.
    pub ignore_fields: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
/// One declared column.
pub struct ColumnStep {
    /// The column's name.
    pub name: String,
    #[serde(rename = "type")]
    /// Its type, as the pipeline file names it.
    pub ty: String,
    /// The JSON field it is read from.
    pub from: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
/// A load, as the step program reads it.
pub struct LoadStep {
    /// The table to publish.
    pub table: String,
    /// Where.
    pub path: String,
    /// Its hive partition columns.
    pub partition_by: Vec<String>,
    /// The Parquet compression.
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
                on_new_fields: e.on_new_fields.to_string(),
                ignore_fields: e.ignore_fields.clone(),
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
