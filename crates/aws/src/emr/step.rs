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
    /// A sliced extract's day rule: where a file's day is in its path (`slice_path`), the column
    /// whose day a row is of, and how far from its file's day that may be. Rows outside it are
    /// quarantined, as on the local engine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slice: Option<SliceStep>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// See `slice`.
    pub slice_column: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// See `slice`.
    pub slice_tolerance: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
/// Where a sliced extract's files of one day are.
pub struct SliceStep {
    /// The `slice_path` template.
    pub text: String,
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
                slice: e.slice.as_ref().map(|t| SliceStep { text: t.text.clone() }),
                slice_column: e.slice_column.clone(),
                slice_tolerance: e.slice_tolerance,
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

/// The error in a failed step's stderr, which in client mode is the driver's: Spark logs INFO lines
/// around and after it, so the tail alone often shows only the shutdown. In order of preference:
/// the step program's own `dagrun: error:` lines; the last Python traceback's exception (with its
/// innermost frame); else the last lines that are not log lines.
pub fn driver_error(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    let ours: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with("dagrun: error:")).collect();
    if !ours.is_empty() {
        return ours.join("\n");
    }
    let is_log = |l: &str| {
        let b = l.as_bytes();
        // log4j's `24/12/01 10:00:00 INFO ...` and `2024-12-01 10:00:00,000 INFO ...`.
        (b.len() > 17 && b[2] == b'/' && b[5] == b'/' && b[8] == b' ' && b[11] == b':')
            || (b.len() > 19 && b[4] == b'-' && b[7] == b'-' && b[10] == b' ' && b[13] == b':')
    };
    if let Some(start) = lines.iter().rposition(|l| l.starts_with("Traceback (most recent call last):")) {
        let after = &lines[start + 1..];
        // The frames are indented; the exception starts at the first line that is not.
        if let Some(at) = after.iter().position(|l| !l.starts_with(' ') && !l.is_empty()) {
            let frame = after[..at].iter().rev().find(|l| l.trim_start().starts_with("File ")).map(|l| l.trim());
            let mut out: Vec<&str> = frame.into_iter().collect();
            for l in after[at..].iter().take(12) {
                if is_log(l) || l.trim() == "JVM stacktrace:" {
                    break;
                }
                out.push(l);
            }
            return out.join("\n");
        }
    }
    let kept: Vec<&str> = lines.iter().copied().filter(|l| !is_log(l) && !l.trim().is_empty()).collect();
    kept[kept.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod driver_error_tests {
    use super::driver_error;

    #[test]
    fn the_step_programs_own_error_lines_win() {
        let text = "24/12/01 10:00:00 INFO SparkContext: Running Spark\ndagrun: error: task `plays`: no rows\n24/12/01 10:00:01 INFO SparkContext: Successfully stopped SparkContext";
        assert_eq!(driver_error(text), "dagrun: error: task `plays`: no rows");
    }

    #[test]
    fn a_traceback_gives_its_exception_and_innermost_frame_without_the_log_lines_after_it() {
        let text = "24/12/01 10:00:00 INFO SparkContext: Running Spark\nTraceback (most recent call last):\n  File \"/mnt/dagrun_step.py\", line 480, in <module>\n    sys.exit(main(sys.argv))\n  File \"/mnt/dagrun_step.py\", line 300, in transform\n    df = spark.sql(sql)\npyspark.errors.exceptions.captured.AnalysisException: [UNRESOLVED_COLUMN.WITH_SUGGESTION] `user_idd` cannot be resolved.\nJVM stacktrace:\norg.apache.spark.sql.AnalysisException: ...\n24/12/01 10:00:02 INFO ShutdownHookManager: Shutdown hook called\n24/12/01 10:00:02 INFO ShutdownHookManager: Deleting directory /mnt/tmp/spark-1";
        assert_eq!(
            driver_error(text),
            "File \"/mnt/dagrun_step.py\", line 300, in transform\npyspark.errors.exceptions.captured.AnalysisException: [UNRESOLVED_COLUMN.WITH_SUGGESTION] `user_idd` cannot be resolved."
        );
    }

    #[test]
    fn without_a_traceback_the_last_lines_that_are_not_log_lines_are_kept() {
        let text = "2024-12-01 10:00:00,000 INFO Client: Application report\nError: Could not find or load main class\n2024-12-01 10:00:01,000 INFO Client: done";
        assert_eq!(driver_error(text), "Error: Could not find or load main class");
    }
}
