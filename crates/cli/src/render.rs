//! Text the CLI prints on stdout: the dry-run plan and the end-of-run summary table.

use std::fmt::Write;

use crate::build::{KNOWN_ENGINES, feature_of, has_engine, missing};
use dagrun_core::decisions::RunDecisions;
use dagrun_core::dry_run::Walk;
use dagrun_core::engine::Engines;
use dagrun_core::executor::{RunReport, TaskState};
use dagrun_core::plan::{Action, Plan, Replace};
use dagrun_core::resume::Freshness;
use dagrun_core::slice::{RunSlice, describe_days};
use dagrun_core::spec::CheckSeverity;
use dagrun_core::units::{self, format_duration, format_elapsed, thousands};

/// The dry run: what a run would do, in the order it would do it. Reads and writes nothing.
pub(crate) fn dry_run(
    plan: &Plan,
    decisions: &RunDecisions,
    engines: &Engines,
    jobs: usize,
    freshness: &Freshness,
    walk: &Walk,
) -> String {
    let mut out = String::new();
    let waves = plan.waves();
    let _ = writeln!(
        out,
        "dry run of {}: {} in {}, up to {jobs} at a time; no data is read or written (only listings and manifests)",
        plan.name(),
        units::count(plan.tasks().len() as u64, "task"),
        units::count(waves.len() as u64, "wave")
    );
    if let Some(d) = &plan.description() {
        let _ = writeln!(out, "{}", d.trim());
    }
    let vars: Vec<String> = plan
        .vars()
        .values
        .keys()
        .map(|k| {
            let mark = if plan.vars().overridden.contains(k) { " (--set)" } else { "" };
            format!("{k}={}{mark}", plan.vars().shown(k))
        })
        .collect();
    if !vars.is_empty() {
        let _ = writeln!(out, "vars: {}", vars.join("  "));
    }
    let _ = writeln!(out, "run records: {}/<run-id>/", plan.runs_dir());
    if let Some(line) = decisions.slice().and_then(|s| slice_line(plan, s, &freshness.fresh)) {
        out.push_str(&line);
    }
    for name in KNOWN_ENGINES {
        if !has_engine(name) && decisions.tasks_on(name).next().is_some() {
            let what = format!("the `{name}` engine, which a run of this plan needs,");
            let _ = writeln!(out, "note: {}", missing(&what, feature_of(name)));
        }
    }
    let used = engines.iter().filter(|e| decisions.tasks_on(e.name()).next().is_some()).count();
    for engine in engines.iter() {
        let here: Vec<&str> = decisions.tasks_on(engine.name()).map(|i| plan.tasks()[i].id()).collect();
        if here.is_empty() {
            continue;
        }
        if used == 1 {
            let _ = writeln!(out, "every task runs on {}", engine.name());
        } else {
            let _ = writeln!(out, "on {}: {}", engine.name(), here.join(", "));
        }

        for line in engine.describe_run(plan) {
            let _ = writeln!(out, "  {line}");
        }
    }

    // As the executor starts them: a task starts once its own dependencies are done and a slot
    // of --jobs is free.
    let mut sections: Vec<(String, Vec<usize>)> = Vec::new();
    if !walk.up_to_date.is_empty() {
        sections.push(("up to date: not run".into(), walk.up_to_date.clone()));
    }
    for (s, step) in walk.steps.iter().enumerate() {
        let running = if step.len() == 1 { "1 task starts".to_string() } else { format!("{} tasks start", step.len()) };
        sections.push((format!("step {}: {running}", s + 1), step.clone()));
    }
    for (heading, tasks) in sections {
        let _ = writeln!(out, "\n{heading}");
        for i in tasks {
            let task = &plan.tasks()[i];
            let deps: Vec<&str> = task.deps().iter().map(|&d| plan.tasks()[d].id()).collect();
            let after = if deps.is_empty() { String::new() } else { format!("  after {}", deps.join(", ")) };
            let _ = writeln!(out, "  {} ({} on {}){after}", task.id(), task.kind(), decisions.engine(i));
            if let Some(reason) = freshness.fresh.get(&i) {
                let _ = writeln!(out, "      skipped, {reason}");
            } else if let Some(reason) = freshness.stale.get(&i) {
                let _ = writeln!(out, "      runs: {reason}");
            }
            let _ = writeln!(out, "      timeout {}; retry: {}", format_duration(task.timeout()), task.retry());
            for input in task.inputs() {
                let _ = writeln!(out, "      reads   {input}");
            }
            for output in task.outputs() {
                let _ = writeln!(out, "      writes  {output}");
            }
            if let Action::QualityCheck(q) = &task.action() {
                for check in &q.checks {
                    let warn = if check.severity == CheckSeverity::Warn { " (warn)" } else { "" };
                    let _ = writeln!(out, "      checks  {}{warn}", check.name);
                }
            }
            if let Some(engine) = engines.get(decisions.engine(i)) {
                for line in engine.describe(task) {
                    let _ = writeln!(out, "      {line}");
                }
            }
        }
    }
    out
}

/// The end-of-run table: state, attempts, duration, rows and a one-line reason per task.
pub(crate) fn summary(report: &RunReport) -> String {
    let mut rows: Vec<[String; 8]> = vec![[
        "TASK".into(),
        "KIND".into(),
        "STATE".into(),
        "ATTEMPTS".into(),
        "TIME".into(),
        "ROWS IN".into(),
        "ROWS OUT".into(),
        "QUARANTINED".into(),
    ]];
    for t in &report.tasks {
        let out = t.output.as_ref();
        let num = |v: Option<u64>| v.map(thousands).unwrap_or_default();
        rows.push([
            t.id.clone(),
            t.kind.to_string(),
            t.state.as_str().to_string(),
            if t.attempts.is_empty() { String::new() } else { t.attempts.len().to_string() },
            if t.attempts.is_empty() { String::new() } else { format_elapsed(t.duration) },
            num(out.and_then(|o| o.rows_in)),
            num(out.and_then(|o| o.rows_out)),
            out.map(|o| if o.quarantined > 0 { thousands(o.quarantined) } else { String::new() }).unwrap_or_default(),
        ]);
    }
    let widths: Vec<usize> = (0..8).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let numeric = [false, false, false, true, true, true, true, true];
    let mut out = String::new();
    let _ = writeln!(out, "\nrun {} of {} took {}", report.run_id, report.pipeline, format_elapsed(report.duration));
    for row in &rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            if numeric[c] {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            }
            line.push_str("  ");
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let notes: Vec<String> = report
        .tasks
        .iter()
        .filter(|t| {
            !matches!(t.state, TaskState::Succeeded | TaskState::UpToDate)
                || t.output
                    .as_ref()
                    .is_some_and(|o| o.quarantined > 0 || o.drift.is_some() || o.checks.iter().any(|c| !c.passed))
        })
        .filter_map(|t| {
            let mut note = t.reason.clone().unwrap_or_default();
            if let Some(o) = &t.output {
                if t.state == TaskState::Succeeded && o.quarantined > 0 {
                    note = format!(
                        "{} record{} quarantined in {}",
                        thousands(o.quarantined),
                        if o.quarantined == 1 { "" } else { "s" },
                        o.quarantine_path.as_deref().unwrap_or("?")
                    );
                }
                let warned: Vec<&str> = o
                    .checks
                    .iter()
                    .filter(|c| !c.passed && c.severity == CheckSeverity::Warn)
                    .map(|c| c.name.as_str())
                    .collect();
                if t.state == TaskState::Succeeded && !warned.is_empty() {
                    note = format!("warnings: {}", warned.join(", "));
                }
                if let Some(drift) = &o.drift {
                    let drift = format!("source drift: {}", drift.describe());
                    note = if note.is_empty() { drift } else { format!("{note}; {drift}") };
                }
            }
            (!note.is_empty()).then(|| format!("  {:<w$}  {note}", t.id, w = widths[0]))
        })
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(out, "\nnotes:");
        for n in notes {
            let _ = writeln!(out, "{n}");
        }
    }
    if !report.engine_notes.is_empty() {
        let _ = writeln!(out, "\nclusters and steps:");
        for line in &report.engine_notes {
            let _ = writeln!(out, "  {line}");
        }
    }
    for e in &report.shutdown_errors {
        let _ = writeln!(out, "engine cleanup failed: {e}");
    }

    let count = |s: TaskState| report.tasks.iter().filter(|t| t.state == s).count();
    let total = report.tasks.len();
    let tasks = |n: usize| units::count(n as u64, "task");
    let verdict = if report.interrupted {
        format!(
            "interrupted: {} succeeded, {} cancelled, {} not started",
            count(TaskState::Succeeded),
            count(TaskState::Cancelled),
            count(TaskState::Skipped)
        )
    } else if report.succeeded() && count(TaskState::UpToDate) == total && total == 1 {
        "the task is up to date: nothing to do (--force reruns)".to_string()
    } else if report.succeeded() && count(TaskState::UpToDate) == total {
        format!("all {total} tasks up to date: nothing to do (--force reruns)")
    } else if report.succeeded() && count(TaskState::UpToDate) > 0 {
        format!("{} succeeded, {} up to date", tasks(count(TaskState::Succeeded)), count(TaskState::UpToDate))
    } else if report.succeeded() && total == 1 {
        "the task succeeded".to_string()
    } else if report.succeeded() {
        format!("all {total} tasks succeeded")
    } else {
        format!(
            "{} failed, {} skipped, {} succeeded of {}",
            count(TaskState::Failed),
            count(TaskState::Skipped) + count(TaskState::Cancelled),
            count(TaskState::Succeeded),
            tasks(total)
        )
    };
    let _ = writeln!(out, "\n{verdict}");
    out
}

/// `dagrun history`: one line per version, newest first.
pub(crate) fn history(versions: &[dagrun_core::storage::delta::DeltaVersion]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:>7}  {:<24}  {:<14}  {:<24}  {:>10}", "VERSION", "TIME (UTC)", "OPERATION", "RUN", "ROWS");
    for v in versions {
        let time = v
            .timestamp_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map_or_else(|| "-".to_string(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string());
        let _ = writeln!(
            out,
            "{:>7}  {:<24}  {:<14}  {:<24}  {:>10}",
            v.version,
            time,
            v.operation,
            v.run_id.as_deref().unwrap_or("-"),
            v.rows.map_or_else(|| "-".to_string(), thousands)
        );
    }
    out
}

/// The days a run reads and what each load fed by them replaces, in a few lines.
pub(crate) fn slice_line(
    plan: &Plan,
    slice: &RunSlice,
    fresh: &std::collections::BTreeMap<usize, String>,
) -> Option<String> {
    if !slice.decided {
        return None;
    }
    let days = |n: usize| if n == 1 { "1 day".to_string() } else { format!("{n} days") };
    let asked = match slice.requested {
        Some(r) => format!("asked {} ({})", r.describe(), days(r.days().len())),
        None => "every day of the input".to_string(),
    };
    let mut out = String::new();
    if slice.days.is_empty() {
        let _ = writeln!(out, "days: {asked}; nothing to run: every day is published from the same inputs");
        return Some(out);
    }
    let _ = writeln!(out, "days: {asked}; running {} ({})", slice.days.len(), describe_days(&slice.days));
    if let Some(why) = &slice.rebuilt {
        let _ = writeln!(out, "  every day: {why}");
    }
    for task in plan.tasks() {
        let (Some(_), Action::Load(load)) = (slice.records.get(&task.index()), task.action()) else { continue };
        if fresh.contains_key(&task.index()) {
            continue;
        }
        let what = if slice.whole.contains(&task.index()) {
            "replaces the whole table".to_string()
        } else {
            match &load.mode {
                Replace::Partitions { slice_column } => format!("replaces the rows of those days (by {slice_column})"),
                Replace::Merge { keys, order_by } => {
                    format!("merges by {}, the latest by {} kept", keys.join(", "), order_by.join(", "))
                }
                Replace::Overwrite => "replaces the whole table".to_string(),
            }
        };
        let _ = writeln!(out, "  {}: {what}", task.id());
    }
    Some(out)
}

/// `dagrun lake`: each table of a run with its path and Delta version, and the code that reads
/// them all as that run left them.
pub(crate) fn lake(record: &dagrun_core::record::RunRecord, record_path: &str, json: bool) -> String {
    if json {
        let tables: serde_json::Map<String, serde_json::Value> = record
            .tables
            .iter()
            .map(|(t, p)| (t.clone(), serde_json::json!({"path": p, "version": record.versions.get(t)})))
            .collect();
        let value = serde_json::json!({"run_id": record.report.run_id, "run_record": record_path, "tables": tables});
        return format!("{}\n", serde_json::to_string_pretty(&value).expect("serializes"));
    }
    let mut out = String::new();
    let _ = writeln!(out, "the lake as run {} left it ({record_path}):", record.report.run_id);
    let width = record.tables.keys().map(String::len).max().unwrap_or(5).max(5);
    let _ = writeln!(out, "  {:<width$}  {:>7}  path", "table", "version");
    for (table, path) in &record.tables {
        let version = record.versions.get(table).map_or("-".to_string(), u64::to_string);
        let _ = writeln!(out, "  {table:<width$}  {version:>7}  {path}");
    }
    let delta: Vec<(&String, &String, u64)> =
        record.tables.iter().filter_map(|(t, p)| record.versions.get(t).map(|v| (t, p, *v))).collect();
    if delta.is_empty() {
        let _ = writeln!(out, "no Delta tables: these are in dagrun's Parquet convention, which keeps no versions");
        return out;
    }
    let _ = writeln!(out, "read them together, as this run left them, even after later runs:");
    let _ = writeln!(out, "  # PySpark (delta-spark)");
    for (t, p, v) in &delta {
        let _ = writeln!(out, "  {t} = spark.read.format(\"delta\").option(\"versionAsOf\", {v}).load(\"{p}\")");
    }
    let _ = writeln!(out, "  # Polars");
    for (t, p, v) in &delta {
        let _ = writeln!(out, "  {t} = pl.read_delta(\"{p}\", version={v})");
    }
    let _ = writeln!(out, "  # Python deltalake");
    for (t, p, v) in &delta {
        let _ = writeln!(out, "  {t} = DeltaTable(\"{p}\", version={v}).to_pyarrow_table()");
    }
    out
}

/// What an EMR run will cost, for the dry run: the cluster's hourly price, and an estimate from
/// the wall time of the cluster of the latest run that used EMR (the run record keeps it).
pub(crate) fn emr_estimate(
    price: &dagrun_core::cost::ClusterPrice,
    history: Option<&dagrun_core::record::RunRecord>,
    why_none: &str,
) -> String {
    let mut out = String::from("EMR cost estimate:\n");
    let per_hour = price.usd_per_hour();
    let spot = price.lines.iter().any(|l| l.spot);
    match history.and_then(|r| r.report.costs.first().map(|c| (r, c))) {
        Some((record, last)) => {
            let _ = writeln!(
                out,
                "  ${:.2} for this run: the cluster of run {} lived {} (start-up {}, steps {}), at ${per_hour:.3}/h",
                per_hour * last.wall_seconds / 3600.0,
                record.report.run_id,
                format_duration(std::time::Duration::from_secs_f64(last.wall_seconds)),
                format_duration(std::time::Duration::from_secs_f64(last.startup_seconds)),
                format_duration(std::time::Duration::from_secs_f64(last.steps_seconds)),
            );
        }
        None => {
            let _ = writeln!(out, "  no history ({why_none}): ${per_hour:.3} per hour of cluster time");
        }
    }
    if spot {
        let _ = writeln!(out, "  spot capacity is priced at on-demand: an upper bound");
    }
    if !price.complete() {
        let _ =
            writeln!(out, "  not counted: {} (no price; add it under engines.emr.prices)", price.unpriced.join(", "));
    }
    out
}
