//! The HTML run report: one self-contained file (inline CSS and script, no CDN) with the DAG as an
//! SVG drawn here, a Gantt timeline of attempts (drawn in the page from the embedded run data, so
//! retries show as separate bars), the task table, check results with failing samples, quarantine
//! counts, and the answers to the pipeline's `report:` queries over the published tables.

use std::collections::HashMap;
use std::fmt::Write;

use dagrun_core::executor::{TaskRecord, TaskState};
use dagrun_core::record::{Answer, Answers, RunRecord};
use dagrun_core::spec::ChartKind;
use dagrun_core::storage::Storages;
#[cfg(feature = "polars")]
use polars::prelude::*;
#[cfg(feature = "polars")]
use polars::sql::SQLContext;

use dagrun_core::units::{format_duration, format_elapsed, thousands};

use crate::build::Kept;
#[cfg(not(feature = "polars"))]
use crate::build::missing;

/// Computes the answers to `record`'s report queries over its tables as the run left them (a
/// Delta table at the version in `record.versions`, a Parquet-convention table through its
/// manifest), reading only the tables the queries name. When `previous` (the run before) kept
/// answers over the very same table versions, they are carried over and nothing is read.
/// A query that fails is an answer with its error: never a failed run.
pub(crate) async fn compute_answers(
    record: &RunRecord,
    storages: &Storages,
    previous: Option<&RunRecord>,
    kept: &Kept,
) -> Option<Answers> {
    if record.queries.is_empty() {
        return None;
    }
    let started = std::time::Instant::now();
    let computed_at_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let mut referenced = std::collections::BTreeSet::new();
    for q in &record.queries {
        referenced.extend(dagrun_core::sql::referenced_tables(&q.sql).unwrap_or_default());
    }
    let mut tables = std::collections::BTreeMap::new();
    for name in &referenced {
        let Some(path) = record.tables.get(name) else { continue };
        let label = match record.versions.get(name) {
            // A version number alone names no data: a table deleted and made again from other
            // input starts at v0 again. The run that made its last load tells them apart.
            Some(v) => match table_maker(storages, path).await {
                Some(run) => format!("v{v} by run {run}"),
                None => format!("v{v}"),
            },
            None => match table_run(storages, path).await {
                Some(run) => format!("run {run}"),
                None => "unreadable".to_string(),
            },
        };
        tables.insert(name.clone(), label);
    }
    if let Some(prev) = previous
        && let Some(kept) = &prev.answers
        && kept.not_computed.is_none()
        && kept.tables == tables
        && !tables.values().any(|v| v == "unreadable")
        && prev.queries == record.queries
        && kept.items.iter().all(|a| a.error.is_none())
    {
        return Some(Answers {
            carried_from: Some(kept.carried_from.clone().unwrap_or_else(|| prev.report.run_id.clone())),
            ..kept.clone()
        });
    }
    let items = answer_queries(record, storages, &tables, kept).await;
    Some(Answers {
        computed_at_ms,
        seconds: started.elapsed().as_secs_f64(),
        tables,
        carried_from: None,
        not_computed: None,
        items,
    })
}

/// The run whose load made a Delta table's latest version, from that commit alone.
async fn table_maker(storages: &Storages, path: &str) -> Option<String> {
    let delta = storages.delta(path).ok()?;
    delta.last_load(path).await.ok().flatten().map(|m| m.run_id).filter(|r| !r.is_empty())
}

/// The run that published a Parquet-convention table, from its manifest.
#[cfg(feature = "polars")]
async fn table_run(storages: &Storages, path: &str) -> Option<String> {
    dagrun_polars::published::published_manifest(storages, path, None).await.ok().map(|m| m.run_id)
}

#[cfg(not(feature = "polars"))]
async fn table_run(_storages: &Storages, _path: &str) -> Option<String> {
    None
}

/// Without the local engine, the answers say so (the rest of the report is drawn as usual).
#[cfg(not(feature = "polars"))]
async fn answer_queries(
    record: &RunRecord,
    _storages: &Storages,
    _versions: &std::collections::BTreeMap<String, String>,
    _kept: &Kept,
) -> Vec<Answer> {
    let why = missing("answering report queries", "polars");
    record
        .queries
        .iter()
        .map(|q| Answer {
            title: q.title.clone(),
            chart: q.chart,
            columns: Vec::new(),
            rows: Vec::new(),
            error: Some(why.clone()),
        })
        .collect()
}

/// A table of more files than this is kept in the answers cache once read: its next reads at the
/// same version take one file instead of thousands.
#[cfg(feature = "polars")]
const CACHE_ABOVE_FILES: u64 = 256;

/// Runs the record's report queries over the tables they name (`versions`: each one's version
/// label). Each table comes from the cheapest place that holds it as the run left it: the frame a
/// load of this run published whole ([`crate::build::Kept`]), the answers cache at the same
/// version, or its published files.
#[cfg(feature = "polars")]
async fn answer_queries(
    record: &RunRecord,
    storages: &Storages,
    versions: &std::collections::BTreeMap<String, String>,
    kept: &Kept,
) -> Vec<Answer> {
    let cache = record.run_dir.rsplit_once('/').map(|(runs, _)| format!("{runs}/_cache/answers"));
    let mut tables: std::collections::BTreeMap<String, Result<DataFrame, String>> = Default::default();
    for (name, label) in versions {
        let Some(path) = record.tables.get(name) else { continue };
        let here = kept.tables.as_ref().and_then(|k| k.get(name));
        let (loaded, files) = match here {
            Some(df) => {
                let files = record
                    .report
                    .tasks
                    .iter()
                    .filter_map(|t| t.output.as_ref())
                    .find(|o| o.outputs.iter().any(|p| p == path))
                    .and_then(|o| o.files)
                    .unwrap_or(0);
                tracing::debug!(table = %name, version = %label, "answers read the table this run published, from memory");
                (Ok(df), files)
            }
            None => match cached(storages, cache.as_deref(), name, label).await {
                Some(df) => {
                    tracing::debug!(table = %name, version = %label, "answers read the table from the answers cache");
                    (Ok(df), 0)
                }
                None => match dagrun_polars::published::read_published_with_files(
                    storages,
                    path,
                    record.versions.get(name).copied(),
                )
                .await
                {
                    Ok((df, files)) => {
                        tracing::debug!(table = %name, version = %label, files, "answers read the table's files");
                        (Ok(df), files as u64)
                    }
                    Err(e) => (Err(e.to_string()), 0),
                },
            },
        };
        if let (Ok(df), Some(cache)) = (&loaded, &cache)
            && files > CACHE_ABOVE_FILES
            && label != "unreadable"
        {
            keep_cached(storages, cache, name, label, df).await;
        }
        tables.insert(name.clone(), loaded);
    }
    let mut out = Vec::new();
    for q in &record.queries {
        let result = (|| {
            let mut cx = SQLContext::new();
            let referenced = dagrun_core::sql::referenced_tables(&q.sql).map_err(|e| e.message)?;
            for name in referenced {
                match tables.get(&name) {
                    Some(Ok(df)) => cx.register(&name, df.clone().lazy()),
                    Some(Err(e)) => return Err(format!("table `{name}` could not be read: {e}")),
                    None => return Err(format!("no published table `{name}`")),
                }
            }
            let df = cx.execute(&q.sql).and_then(|lf| lf.limit(50).collect()).map_err(|e| e.to_string())?;
            Ok(rows_of(&df))
        })();
        let (columns, rows, error) = match result {
            Ok((columns, rows)) => (columns, rows, None),
            Err(e) => (Vec::new(), Vec::new(), Some(e)),
        };
        out.push(Answer { title: q.title.clone(), chart: q.chart, columns, rows, error });
    }
    out
}

/// The answers cache's copy of `table` at version `label`, if it holds that version.
#[cfg(feature = "polars")]
async fn cached(storages: &Storages, cache: Option<&str>, table: &str, label: &str) -> Option<DataFrame> {
    let cache = cache?;
    let storage = storages.for_path(cache).ok()?;
    let kept = storage.read(&format!("{cache}/{table}.version")).await.ok()?;
    if kept != label.as_bytes() {
        return None;
    }
    let bytes = storage.read(&format!("{cache}/{table}.parquet")).await.ok()?;
    ParquetReader::new(std::io::Cursor::new(bytes)).finish().ok()
}

/// Keeps `df` as the answers cache's copy of `table` at version `label` (the version is written
/// last, so a copy cut short is never taken for one). A failure costs only the next read.
#[cfg(feature = "polars")]
async fn keep_cached(storages: &Storages, cache: &str, table: &str, label: &str, df: &DataFrame) {
    let Ok(storage) = storages.for_path(cache) else { return };
    let mut bytes = Vec::new();
    if ParquetWriter::new(&mut bytes).finish(&mut df.clone()).is_err() {
        return;
    }
    let version = format!("{cache}/{table}.version");
    let _ = storage.delete(&version).await;
    if storage.write(&format!("{cache}/{table}.parquet"), bytes).await.is_ok() {
        let _ = storage.write(&version, label.as_bytes().to_vec()).await;
    }
}

#[cfg(feature = "polars")]
fn rows_of(df: &DataFrame) -> (Vec<String>, Vec<Vec<String>>) {
    let header: Vec<String> = df.get_column_names().iter().map(|c| c.to_string()).collect();
    let rows = (0..df.height())
        .filter_map(|i| df.get_row(i).ok())
        .map(|row| {
            row.0
                .iter()
                .map(|v| match v {
                    AnyValue::Null => String::new(),
                    AnyValue::String(s) => s.to_string(),
                    AnyValue::StringOwned(s) => s.to_string(),
                    other => other.to_string(),
                })
                .collect()
        })
        .collect();
    (header, rows)
}

pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn state_color(state: TaskState) -> (&'static str, &'static str) {
    match state {
        TaskState::Succeeded => ("#dcfce7", "#15803d"),
        TaskState::UpToDate => ("#e0f2fe", "#0369a1"),
        TaskState::Failed => ("#fee2e2", "#b91c1c"),
        TaskState::Skipped => ("#f3f4f6", "#6b7280"),
        TaskState::Cancelled => ("#fef3c7", "#b45309"),
    }
}

/// One box of the DAG picture: a task, its kind, what it waits for and, after a run, its state.
pub(crate) struct DagNode<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    pub engine: &'a str,
    pub deps: Vec<String>,
    /// The state and its reason, for a run's picture; `None` for the pipeline's own.
    pub state: Option<(TaskState, Option<&'a str>)>,
}

/// The pipeline's DAG before any run: `dagrun graph --format svg`, or a page around it (`html`).
pub(crate) fn plan_svg(plan: &dagrun_core::plan::Plan) -> String {
    let tasks = plan.tasks();
    let nodes: Vec<DagNode<'_>> = tasks
        .iter()
        .map(|t| DagNode {
            id: t.id(),
            kind: t.kind().as_str(),
            engine: t.engine(),
            deps: t.deps().iter().map(|&d| tasks[d].id().to_string()).collect(),
            state: None,
        })
        .collect();
    dag_svg_of(&nodes)
}

/// `plan_svg` in a self-contained page.
pub(crate) fn plan_html(plan: &dagrun_core::plan::Plan) -> String {
    format!(
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>dagrun · {name} · task graph</title><style>body{{font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px;color:#111827;background:#f8fafc}}</style></head><body><h1>{name}</h1><p>{count}, left to right by dependency.</p>{svg}</body></html>
"#,
        name = escape(plan.name()),
        count = dagrun_core::units::count(plan.tasks().len() as u64, "task"),
        svg = plan_svg(plan),
    )
}

/// A run's DAG, nodes colored by state.
pub(crate) fn dag_svg(tasks: &[TaskRecord]) -> String {
    let nodes: Vec<DagNode<'_>> = tasks
        .iter()
        .map(|t| DagNode {
            id: &t.id,
            kind: t.kind.as_str(),
            engine: &t.engine,
            deps: t.deps.clone(),
            state: Some((t.state, t.reason.as_deref())),
        })
        .collect();
    dag_svg_of(&nodes)
}

/// The DAG, left to right by dependency depth, without Graphviz.
pub(crate) fn dag_svg_of(tasks: &[DagNode<'_>]) -> String {
    let index: HashMap<&str, usize> = tasks.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
    let deps: Vec<Vec<usize>> =
        tasks.iter().map(|t| t.deps.iter().filter_map(|d| index.get(d.as_str()).copied()).collect()).collect();
    let level = dagrun_core::plan::levels(&deps.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let depth = level.iter().copied().max().map_or(0, |m| m + 1);
    let mut columns: Vec<Vec<usize>> = vec![Vec::new(); depth];
    let mut row = vec![0f64; tasks.len()];
    for (l, column) in columns.iter_mut().enumerate() {
        let mut members: Vec<usize> = (0..tasks.len()).filter(|&i| level[i] == l).collect();
        // Order by the mean row of the dependencies: fewer crossings.
        members.sort_by(|&a, &b| {
            let center = |i: usize| {
                let rows: Vec<f64> =
                    tasks[i].deps.iter().filter_map(|d| index.get(d.as_str())).map(|&d| row[d]).collect();
                if rows.is_empty() { i as f64 } else { rows.iter().sum::<f64>() / rows.len() as f64 }
            };
            center(a).partial_cmp(&center(b)).unwrap_or(std::cmp::Ordering::Equal)
        });
        for (r, &i) in members.iter().enumerate() {
            row[i] = r as f64;
        }
        *column = members;
    }
    let (w, h, gap_x, gap_y, pad) = (170.0, 38.0, 60.0, 14.0, 12.0);
    let rows_max = columns.iter().map(Vec::len).max().unwrap_or(1) as f64;
    let width = pad * 2.0 + depth as f64 * (w + gap_x) - gap_x;
    let height = pad * 2.0 + rows_max * (h + gap_y) - gap_y;
    let pos = |i: usize| (pad + level[i] as f64 * (w + gap_x), pad + row[i] * (h + gap_y));
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg class="dag" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0} {height:.0}" width="{width:.0}" height="{height:.0}" role="img" aria-label="task graph" font-family="-apple-system,'Segoe UI',Helvetica,Arial,sans-serif"><defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#94a3b8"/></marker></defs>"##
    );
    for (i, t) in tasks.iter().enumerate() {
        for d in t.deps.iter().filter_map(|d| index.get(d.as_str())) {
            let (x1, y1) = pos(*d);
            let (x2, y2) = pos(i);
            let (x1, y1, x2, y2) = (x1 + w, y1 + h / 2.0, x2, y2 + h / 2.0);
            let _ = write!(
                svg,
                r##"<path class="edge" d="M{x1:.1},{y1:.1} C{:.1},{y1:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}" fill="none" stroke="#94a3b8" stroke-width="1.4" marker-end="url(#arrow)"/>"##,
                x1 + gap_x / 2.0,
                x2 - gap_x / 2.0
            );
        }
    }
    for (i, t) in tasks.iter().enumerate() {
        let (x, y) = pos(i);
        let ((fill, stroke), state, tip, subtitle) = match t.state {
            Some((state, reason)) => (
                state_color(state),
                state.as_str(),
                format!(
                    "{} ({}): {}{}",
                    t.id,
                    t.kind,
                    state.as_str(),
                    reason.map(|r| format!(" - {r}")).unwrap_or_default()
                ),
                format!("{} · {}", t.kind, state.as_str()),
            ),
            None => (
                ("#f8fafc", "#475569"),
                "planned",
                format!("{} ({}, {} engine)", t.id, t.kind, t.engine),
                format!("{} · {}", t.kind, t.engine),
            ),
        };
        let _ = write!(
            svg,
            r##"<g class="node" data-task="{id}" data-state="{state}"><title>{tip}</title><rect x="{x:.1}" y="{y:.1}" width="{w}" height="{h}" rx="7" fill="{fill}" stroke="{stroke}" stroke-width="1.5"/><text x="{tx:.1}" y="{ty:.1}" font-size="12.5" font-weight="600" fill="#111827">{id}</text><text x="{tx:.1}" y="{ty2:.1}" font-size="10.5" fill="{stroke}">{subtitle}</text></g>"##,
            id = escape(t.id),
            tip = escape(&tip),
            tx = x + 10.0,
            ty = y + 16.0,
            ty2 = y + 30.0,
            subtitle = escape(&subtitle),
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Horizontal bars: the first column labels, the last column lengths.
fn bar_svg(header: &[String], rows: &[Vec<String>]) -> Option<String> {
    let values: Vec<(String, f64)> =
        rows.iter().take(30).filter_map(|r| Some((r.first()?.clone(), r.last()?.parse::<f64>().ok()?))).collect();
    if values.is_empty() || header.len() < 2 {
        return None;
    }
    let max = values.iter().map(|(_, v)| *v).fold(0.0, f64::max).max(1e-9);
    let (label_w, bar_w, row_h) = (260.0, 420.0, 22.0);
    let height = values.len() as f64 * row_h + 10.0;
    let mut svg = format!(
        r#"<svg class="bars" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {:.0} {height:.0}" width="{:.0}" height="{height:.0}">"#,
        label_w + bar_w + 80.0,
        label_w + bar_w + 80.0
    );
    for (i, (label, v)) in values.iter().enumerate() {
        let y = 5.0 + i as f64 * row_h;
        let len = (v / max * bar_w).max(1.0);
        let short: String = label.chars().take(38).collect();
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="end" fill="#374151">{}</text><rect x="{label_w:.1}" y="{y:.1}" width="{len:.1}" height="{:.1}" rx="3" fill="#6366f1"/><text x="{:.1}" y="{:.1}" font-size="12" fill="#111827">{}</text>"##,
            label_w - 8.0,
            y + 14.0,
            escape(&short),
            row_h - 6.0,
            label_w + len + 6.0,
            y + 14.0,
            escape(&trim_number(*v))
        );
    }
    svg.push_str("</svg>");
    Some(svg)
}

fn trim_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { thousands(v as u64) } else { format!("{v:.2}") }
}

fn table_html(header: &[String], rows: &[Vec<String>], class: &str) -> String {
    let mut out = format!(r#"<table class="{class}"><thead><tr>"#);
    for h in header {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr></thead><tbody>");
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            let _ = write!(out, "<td>{}</td>", escape(c));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

const STYLE: &str = r#"
body{font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#111827;background:#f8fafc}
header{background:#1e293b;color:#f8fafc;padding:18px 28px}
header h1{margin:0 0 4px;font-size:22px}
header .meta{font-size:13px;color:#cbd5e1}
.outcome{display:inline-block;padding:2px 10px;border-radius:12px;font-weight:600;font-size:13px;margin-left:8px}
.outcome.succeeded{background:#16a34a;color:white}.outcome.failed{background:#dc2626;color:white}.outcome.interrupted{background:#d97706;color:white}
main{padding:8px 28px 40px}
section{background:white;border:1px solid #e5e7eb;border-radius:8px;padding:14px 18px;margin:16px 0;overflow-x:auto}
h2{font-size:16px;margin:0 0 10px}
table{border-collapse:collapse;font-size:13px}
th,td{border-bottom:1px solid #e5e7eb;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f1f5f9}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.state-failed{color:#b91c1c;font-weight:600}.state-succeeded{color:#15803d}.state-skipped{color:#6b7280}.state-cancelled{color:#b45309}.state-up-to-date{color:#0369a1}
.pass{color:#15803d}.fail{color:#b91c1c;font-weight:600}.warn{color:#b45309;font-weight:600}
pre{background:#f8fafc;border:1px solid #e5e7eb;padding:6px 8px;font-size:12px;white-space:pre-wrap;margin:4px 0}
.vars code{background:#f1f5f9;padding:1px 5px;border-radius:4px;margin-right:6px}
.node:hover rect{stroke-width:3}
#gantt .attempt:hover{opacity:.8}
"#;

/// Draws the Gantt chart from the embedded run data (one row per task, one bar per attempt).
const SCRIPT: &str = r#"
(function(){
  var data = JSON.parse(document.getElementById('run-data').textContent);
  var tasks = data.tasks.filter(function(t){ return t.attempts.length > 0; });
  var holder = document.getElementById('gantt');
  if (!tasks.length) { holder.textContent = 'No task ran in this run.'; return; }
  var start = data.started_at_ms, end = start;
  tasks.forEach(function(t){ t.attempts.forEach(function(a){ end = Math.max(end, a.started_at_ms + a.duration_s*1000); }); });
  var span = Math.max(end - start, 1), labelW = 170, width = 900, rowH = 22;
  var ns = 'http://www.w3.org/2000/svg';
  var svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('width', labelW + width + 20); svg.setAttribute('height', tasks.length*rowH + 30);
  svg.setAttribute('class', 'gantt');
  function el(name, attrs, text){ var e = document.createElementNS(ns, name); for (var k in attrs) e.setAttribute(k, attrs[k]); if (text) e.textContent = text; svg.appendChild(e); return e; }
  for (var i = 0; i <= 4; i++) {
    var x = labelW + width*i/4;
    el('line', {x1:x, y1:0, x2:x, y2:tasks.length*rowH, stroke:'#e5e7eb'});
    el('text', {x:x, y:tasks.length*rowH+16, 'font-size':11, fill:'#6b7280', 'text-anchor':'middle'}, (span*i/4/1000).toFixed(2)+'s');
  }
  tasks.forEach(function(t, row){
    var y = row*rowH;
    el('text', {x:labelW-8, y:y+15, 'font-size':12, 'text-anchor':'end', fill:'#111827'}, t.id);
    t.attempts.forEach(function(a){
      var x = labelW + (a.started_at_ms - start)/span*width;
      var w = Math.max(a.duration_s*1000/span*width, 2);
      var color = a.error ? (a.error === 'cancelled' ? '#f59e0b' : '#ef4444') : '#22c55e';
      var r = el('rect', {x:x, y:y+4, width:w, height:rowH-8, rx:3, fill:color, 'class':'attempt', 'data-task':t.id, 'data-attempt':a.number});
      var tip = document.createElementNS(ns, 'title');
      tip.textContent = t.id + ' attempt ' + a.number + ': ' + a.duration_s.toFixed(3) + 's' + (a.error ? ' - ' + a.error : '');
      r.appendChild(tip);
    });
  });
  holder.appendChild(svg);
  document.getElementById('attempt-count').textContent = String(tasks.reduce(function(n, t){ return n + t.attempts.length; }, 0));
})();
"#;

/// The whole page. `answers` are the record's own, or (`answers_note` says how) ones computed
/// when the report was drawn.
pub(crate) fn render(record: &RunRecord, answers: Option<&Answers>, answers_note: Option<&str>) -> String {
    let report = &record.report;
    let mut html = String::with_capacity(64 * 1024);
    let ended = report.started_at + report.duration;
    let fmt_time =
        |t: std::time::SystemTime| chrono::DateTime::<chrono::Utc>::from(t).format("%Y-%m-%d %H:%M:%S UTC").to_string();
    let _ = write!(
        html,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>dagrun · {name} · {run}</title><style>{STYLE}</style></head><body><header><h1>{name} <span class="outcome {outcome}">{outcome}</span></h1><div class="meta">run <b>{run}</b> · {start} → {end} ({dur}) · exit code {code} · pipeline <code>{file}</code> (sha256 {hash}) · dagrun {version}</div></header><main>"#,
        name = escape(record.pipeline()),
        run = escape(&report.run_id),
        outcome = escape(record.outcome.as_str()),
        start = fmt_time(report.started_at),
        end = fmt_time(ended),
        dur = format_elapsed(report.duration),
        code = record.exit_code,
        file = escape(&record.pipeline_file),
        hash = &record.pipeline_sha256[..12.min(record.pipeline_sha256.len())],
        version = escape(&record.dagrun_version),
    );
    // Summary counts.
    let counts: Vec<String> =
        [TaskState::Succeeded, TaskState::UpToDate, TaskState::Failed, TaskState::Skipped, TaskState::Cancelled]
            .iter()
            .filter(|s| record.count(**s) > 0)
            .map(|s| format!(r#"<span class="state-{0}">{1} {0}</span>"#, s.as_str(), record.count(*s)))
            .collect();
    let _ = write!(
        html,
        r#"<section id="summary"><h2>Summary</h2><p>{} tasks: {} · <span id="attempt-count">?</span> attempts</p><p class="vars">"#,
        report.tasks.len(),
        counts.join(" · ")
    );
    for (k, v) in &record.vars {
        let _ = write!(html, "<code>{}={}</code>", escape(k), escape(v));
    }
    html.push_str("</p></section>");

    let _ = write!(html, r#"<section id="dag"><h2>Task graph</h2>{}</section>"#, dag_svg(&report.tasks));
    html.push_str(r#"<section><h2>Timeline</h2><div id="gantt"></div><p style="font-size:12px;color:#6b7280">One bar per attempt: green succeeded, red failed, amber cancelled.</p></section>"#);

    // Tasks.
    html.push_str(r#"<section id="tasks"><h2>Tasks</h2><table><thead><tr><th>task</th><th>kind</th><th>engine</th><th>state</th><th>attempts</th><th>time</th><th>rows in</th><th>rows out</th><th>quarantined</th><th>files</th><th>outputs / reason</th></tr></thead><tbody>"#);
    for t in &report.tasks {
        let o = t.output.as_ref();
        let num = |v: Option<u64>| v.map(thousands).unwrap_or_default();
        let note = match (&t.reason, o) {
            (Some(r), _) => escape(r),
            (None, Some(o)) => escape(&o.outputs.join(", ")),
            _ => String::new(),
        };
        let _ = write!(
            html,
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td class="state-{}">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td>{note}</td></tr>"#,
            escape(&t.id),
            escape(t.kind.as_str()),
            escape(&t.engine),
            t.state.as_str(),
            t.state.as_str(),
            t.attempts.len(),
            if t.attempts.is_empty() { String::new() } else { format_elapsed(t.duration) },
            num(o.and_then(|o| o.rows_in)),
            num(o.and_then(|o| o.rows_out)),
            o.map(|o| o.quarantined).filter(|q| *q > 0).map(thousands).unwrap_or_default(),
            num(o.and_then(|o| o.files)),
        );
    }
    html.push_str("</tbody></table>");
    let failures: Vec<&TaskRecord> =
        report.tasks.iter().filter(|t| t.attempts.iter().any(|a| a.error.is_some())).collect();
    for t in failures {
        for a in t.attempts.iter().filter(|a| a.error.is_some()) {
            let _ = write!(
                html,
                "<p><b>{} attempt {}</b>:</p><pre>{}</pre>",
                escape(&t.id),
                a.number,
                escape(a.error.as_deref().unwrap_or(""))
            );
        }
    }
    html.push_str("</section>");

    // Checks.
    let checks: Vec<(&TaskRecord, &dagrun_core::engine::CheckResult)> = report
        .tasks
        .iter()
        .flat_map(|t| t.output.iter().flat_map(move |o| o.checks.iter().map(move |c| (t, c))))
        .collect();
    if !checks.is_empty() {
        html.push_str(r#"<section id="checks"><h2>Quality checks</h2><table><thead><tr><th>task</th><th>check</th><th>severity</th><th>result</th><th>failing</th><th>detail and sample</th></tr></thead><tbody>"#);
        for (t, c) in checks {
            let (class, verdict) = match (c.passed, c.severity.as_str()) {
                (true, _) => ("pass", "passed"),
                (false, "warn") => ("warn", "warning"),
                (false, _) => ("fail", "failed"),
            };
            let mut detail = c.detail.as_deref().map(escape).unwrap_or_default();
            if !c.sample.is_empty() {
                let _ = write!(detail, "<pre>{}</pre>", escape(&c.sample.join("\n")));
            }
            let _ = write!(
                html,
                r#"<tr><td>{}</td><td>{}</td><td>{}</td><td class="{class}">{verdict}</td><td class="num">{}</td><td>{detail}</td></tr>"#,
                escape(&t.id),
                escape(&c.name),
                escape(c.severity.as_str()),
                thousands(c.failing),
            );
        }
        html.push_str("</tbody></table></section>");
    }

    // Quarantine.
    let quarantined: Vec<&TaskRecord> =
        report.tasks.iter().filter(|t| t.output.as_ref().is_some_and(|o| o.quarantined > 0)).collect();
    html.push_str(r#"<section id="quarantine"><h2>Quarantine</h2>"#);
    if quarantined.is_empty() {
        html.push_str("<p>No record was quarantined.</p>");
    } else {
        html.push_str("<ul>");
        for t in quarantined {
            let o = t.output.as_ref().expect("filtered");
            let _ = write!(
                html,
                "<li><b>{}</b>: {} set aside in <code>{}</code></li>",
                escape(&t.id),
                dagrun_core::units::count(o.quarantined, "record"),
                escape(o.quarantine_path.as_deref().unwrap_or("?"))
            );
        }
        html.push_str("</ul>");
    }
    html.push_str("</section>");

    // Source drift: how extracts' records differed from their declared schemas.
    let drifted: Vec<(&TaskRecord, &dagrun_core::engine::SourceDrift)> = report
        .tasks
        .iter()
        .filter_map(|t| t.output.as_ref().and_then(|o| o.drift.as_deref()).map(|d| (t, d)))
        .collect();
    if !drifted.is_empty() {
        html.push_str(r#"<section id="drift"><h2>Source drift</h2><table><thead><tr><th>task</th><th>what</th><th>field</th><th>records</th><th>first at</th></tr></thead><tbody>"#);
        for (t, d) in drifted {
            let groups = [
                ("not in the schema", &d.new_fields),
                ("wrong type (quarantined)", &d.mismatched),
                ("missing (loaded as null)", &d.missing),
            ];
            for (what, fields) in groups {
                for f in fields {
                    let _ = write!(
                        html,
                        "<tr><td>{}</td><td>{what}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                        escape(&t.id),
                        escape(&f.field),
                        thousands(f.records),
                        escape(f.first.as_deref().unwrap_or(""))
                    );
                }
            }
        }
        html.push_str("</tbody></table></section>");
    }

    // What the run cost: each EMR cluster, and what local tasks took of this machine.
    let local: Vec<&TaskRecord> = report
        .tasks
        .iter()
        .filter(|t| t.output.as_ref().is_some_and(|o| o.details.contains_key("cpu_seconds")))
        .collect();
    if !report.costs.is_empty() || !local.is_empty() {
        html.push_str(r#"<section id="cost"><h2>Cost</h2>"#);
        for c in &report.costs {
            let _ = write!(html, "<p>{}</p>", escape(&c.describe()));
            if let Some(why) = &c.stopped {
                let _ = write!(html, "<p><b>Stopped by the budget:</b> {}</p>", escape(why));
            }
            if !c.tasks.is_empty() {
                html.push_str("<table><thead><tr><th>EMR task</th><th>share (by step time)</th></tr></thead><tbody>");
                for (task, usd) in &c.tasks {
                    let _ = write!(html, "<tr><td>{}</td><td>${usd:.2}</td></tr>", escape(task));
                }
                html.push_str("</tbody></table>");
            }
        }
        if !local.is_empty() {
            html.push_str("<table><thead><tr><th>local task</th><th>wall</th><th>process CPU while it ran</th><th>process peak memory</th></tr></thead><tbody>");
            for t in local {
                let details = &t.output.as_ref().expect("filtered on output").details;
                let _ = write!(
                    html,
                    "<tr><td>{}</td><td>{}</td><td>{} s</td><td>{} MiB</td></tr>",
                    escape(&t.id),
                    format_duration(t.duration),
                    escape(details.get("cpu_seconds").map_or("", String::as_str)),
                    escape(details.get("peak_rss_mib").map_or("", String::as_str))
                );
            }
            html.push_str("</tbody></table>");
        }
        html.push_str("</section>");
    }

    // Answers from the published tables, as the run left them.
    if let Some(answers) = answers {
        html.push_str(r#"<section id="answers"><h2>From the published tables</h2>"#);
        let versions: Vec<String> =
            answers.tables.iter().map(|(t, v)| format!("{} {}", escape(t), escape(v))).collect();
        let when = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(answers.computed_at_ms as i64)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_default();
        let provenance = match (&answers.not_computed, answers_note, &answers.carried_from) {
            (Some(why), ..) => format!("Not computed: {}.", escape(why)),
            (None, Some(note), _) => format!("{} ({when}), from {}.", escape(note), versions.join(", ")),
            (None, None, Some(run)) => format!(
                "Computed at the end of run <b>{}</b> ({when}) over the same table versions this run left: {}.",
                escape(run),
                versions.join(", ")
            ),
            (None, None, None) => format!(
                "Computed at the end of this run ({when}, {:.1} s) from {}.",
                answers.seconds,
                versions.join(", ")
            ),
        };
        let _ = write!(html, r#"<p class="provenance">{provenance}</p>"#);
        for a in &answers.items {
            let _ = write!(html, r#"<div class="answer"><h3>{}</h3>"#, escape(&a.title));
            match &a.error {
                Some(e) => {
                    let _ = write!(html, r#"<p class="fail">Could not answer: {}</p>"#, escape(e));
                }
                None if a.rows.is_empty() => html.push_str("<p>No rows.</p>"),
                None => {
                    if a.chart == ChartKind::Bar
                        && let Some(svg) = bar_svg(&a.columns, &a.rows)
                    {
                        html.push_str(&svg);
                    }
                    html.push_str(&table_html(&a.columns, &a.rows, "answer-table"));
                }
            }
            html.push_str("</div>");
        }
        html.push_str("</section>");
    }

    // The run data, for the timeline script (and anyone who saves the page).
    let data = serde_json::to_string(report).unwrap_or_else(|_| "{}".into()).replace("</", "<\\/");
    let _ = write!(
        html,
        r#"</main><script type="application/json" id="run-data">{data}</script><script>{SCRIPT}</script></body></html>"#
    );
    html
}
