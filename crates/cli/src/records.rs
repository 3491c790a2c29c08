//! A run written down for people and CI: a JUnit XML file of tasks and checks, and a Markdown
//! summary for GitHub's job summary (`run.json` itself and `LATEST` are core's:
//! [`dagrun_core::record`]).

use std::fmt::Write;

use dagrun_core::executor::TaskState;
use dagrun_core::record::RunRecord;
use dagrun_core::spec::CheckSeverity;

use crate::report::escape;
use dagrun_core::units::{format_elapsed, thousands};

/// JUnit XML: one suite of tasks, one of checks. Failed tasks and error checks are failures,
/// skipped and up-to-date tasks are skipped, warning checks pass with their detail as output.
pub(crate) fn junit(record: &RunRecord) -> String {
    let name = escape(record.pipeline());
    let tasks = &record.report.tasks;
    let failures = tasks.iter().filter(|t| matches!(t.state, TaskState::Failed | TaskState::Cancelled)).count();
    let skipped = tasks.iter().filter(|t| matches!(t.state, TaskState::Skipped | TaskState::UpToDate)).count();
    let checks: Vec<_> =
        tasks.iter().flat_map(|t| t.output.iter().flat_map(move |o| o.checks.iter().map(move |c| (t, c)))).collect();
    let check_failures = checks.iter().filter(|(_, c)| !c.passed && c.severity == CheckSeverity::Error).count();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        r#"<testsuites name="dagrun {name}" tests="{}" failures="{}" skipped="{skipped}" time="{:.3}">"#,
        tasks.len() + checks.len(),
        failures + check_failures,
        record.report.duration.as_secs_f64()
    );
    let _ = writeln!(
        x,
        r#"  <testsuite name="{name}.tasks" tests="{}" failures="{failures}" skipped="{skipped}" time="{:.3}">"#,
        tasks.len(),
        record.report.duration.as_secs_f64()
    );
    for t in tasks {
        let _ = write!(
            x,
            r#"    <testcase classname="{name}.{}" name="{}" time="{:.3}""#,
            escape(t.kind.as_str()),
            escape(&t.id),
            t.duration.as_secs_f64()
        );
        let reason = escape(t.reason.as_deref().unwrap_or(""));
        match t.state {
            TaskState::Succeeded => x.push_str("/>\n"),
            TaskState::Skipped | TaskState::UpToDate => {
                let _ = writeln!(x, ">\n      <skipped message=\"{reason}\"/>\n    </testcase>");
            }
            TaskState::Failed | TaskState::Cancelled => {
                let detail: Vec<String> = t
                    .attempts
                    .iter()
                    .filter_map(|a| a.error.as_ref().map(|e| format!("attempt {}: {e}", a.number)))
                    .collect();
                let _ = writeln!(
                    x,
                    ">\n      <failure message=\"{reason}\" type=\"{}\">{}</failure>\n    </testcase>",
                    t.state.as_str(),
                    escape(&detail.join("\n"))
                );
            }
        }
    }
    x.push_str("  </testsuite>\n");
    let _ = writeln!(
        x,
        r#"  <testsuite name="{name}.checks" tests="{}" failures="{check_failures}" skipped="0">"#,
        checks.len()
    );
    for (t, c) in &checks {
        let _ = write!(x, r#"    <testcase classname="{name}.{}" name="{}""#, escape(&t.id), escape(&c.name));
        let detail = escape(c.detail.as_deref().unwrap_or(""));
        let sample = escape(&c.sample.join("\n"));
        match (c.passed, c.severity.as_str()) {
            (true, _) => x.push_str("/>\n"),
            (false, "warn") => {
                let _ = writeln!(x, ">\n      <system-out>warning: {detail}\n{sample}</system-out>\n    </testcase>");
            }
            (false, _) => {
                let _ = writeln!(x, ">\n      <failure message=\"{detail}\">{sample}</failure>\n    </testcase>");
            }
        }
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

/// A Markdown summary for `$GITHUB_STEP_SUMMARY`.
pub(crate) fn markdown(record: &RunRecord) -> String {
    let r = &record.report;
    let mut md = format!(
        "### dagrun `{}`: {} in {}\n\nrun `{}` · exit code {}\n\n| task | kind | state | attempts | time | rows out | note |\n| --- | --- | --- | ---: | ---: | ---: | --- |\n",
        record.pipeline(),
        record.outcome,
        format_elapsed(r.duration),
        r.run_id,
        record.exit_code
    );
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    for t in &r.tasks {
        let o = t.output.as_ref();
        let mut note = t.reason.clone().unwrap_or_default();
        if let Some(o) = o
            && o.quarantined > 0
        {
            note = format!("{} quarantined {note}", dagrun_core::units::count(o.quarantined, "record"));
        }
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            cell(&t.id),
            t.kind,
            t.state.as_str(),
            t.attempts.len(),
            if t.attempts.is_empty() { String::new() } else { format_elapsed(t.duration) },
            o.and_then(|o| o.rows_out).map(thousands).unwrap_or_default(),
            cell(&note)
        );
    }
    let failed: Vec<String> = r
        .tasks
        .iter()
        .flat_map(|t| t.output.iter().flat_map(|o| o.checks.iter()))
        .filter(|c| !c.passed)
        .map(|c| format!("- **{}** ({}): {}", c.name, c.severity, c.detail.as_deref().unwrap_or("")))
        .collect();
    if !failed.is_empty() {
        md.push_str("\n**Checks that did not pass**\n\n");
        md.push_str(&failed.join("\n"));
        md.push('\n');
    }
    md.push('\n');
    md
}
