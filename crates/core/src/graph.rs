//! Renders a plan's DAG: a terminal picture (waves of tasks with their inputs, fits 100 columns),
//! Graphviz DOT and Mermaid. All three are plain strings; no Graphviz is needed.

use std::fmt::Write;

use crate::plan::Plan;
use crate::spec::TaskKind;
use crate::units::count;

/// Output format of `dagrun graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    /// A picture for the terminal.
    Ascii,
    /// Graphviz DOT.
    Dot,
    /// A Mermaid flowchart.
    Mermaid,
}

/// The plan's DAG in `format`; the terminal picture fits `width` columns.
pub fn render(plan: &Plan, format: GraphFormat, width: usize) -> String {
    match format {
        GraphFormat::Ascii => ascii(plan, width),
        GraphFormat::Dot => dot(plan),
        GraphFormat::Mermaid => mermaid(plan),
    }
}

fn kind_glyph(kind: TaskKind) -> &'static str {
    match kind {
        TaskKind::Extract => "◆",
        TaskKind::Transform => "●",
        TaskKind::QualityCheck => "✓",
        TaskKind::Load => "▲",
    }
}

/// Waves top to bottom; each task with its kind, engine and the tasks it waits for.
///
/// ```text
/// wave 2 ┬ ● songs      transform  ◀── staging_songs
///        └ ● users      transform  ◀── staging_events
/// ```
pub fn ascii(plan: &Plan, width: usize) -> String {
    let width = width.max(60);
    let mut out = String::new();
    let waves = plan.waves();
    let _ = writeln!(
        out,
        "{}: {} in {}   ◆ extract  ● transform  ✓ quality_check  ▲ load",
        plan.name,
        count(plan.tasks.len() as u64, "task"),
        count(waves.len() as u64, "wave")
    );
    let id_width = plan.tasks.iter().map(|t| t.id.chars().count()).max().unwrap_or(4).min(28);
    let kind_width = plan
        .tasks
        .iter()
        .map(|t| t.kind.as_str().len() + if t.engine == "local" { 0 } else { t.engine.len() + 3 })
        .max()
        .unwrap_or(7);
    let label_width = format!("wave {}", waves.len()).len();
    for (w, wave) in waves.iter().enumerate() {
        out.push('\n');
        for (j, &i) in wave.iter().enumerate() {
            let task = &plan.tasks[i];
            let head =
                if j == 0 { format!("{:<label_width$}", format!("wave {}", w + 1)) } else { " ".repeat(label_width) };
            let branch = match (wave.len(), j) {
                (1, _) => "─",
                (_, 0) => "┬",
                (n, j) if j + 1 == n => "└",
                _ => "├",
            };
            let kind = if task.engine == "local" {
                task.kind.as_str().to_string()
            } else {
                format!("{} @{}", task.kind.as_str(), task.engine)
            };
            let mut line =
                format!("{head} {branch} {} {:<id_width$}  {:<kind_width$}", kind_glyph(task.kind), task.id, kind);
            let deps: Vec<&str> = task.deps.iter().map(|&d| plan.tasks[d].id.as_str()).collect();
            if !deps.is_empty() {
                line.push_str("  ◀── ");
                let indent = line.chars().count();
                let mut col = indent;
                for (k, dep) in deps.iter().enumerate() {
                    let piece = if k + 1 < deps.len() { format!("{dep}, ") } else { dep.to_string() };
                    if col + piece.chars().count() > width && col > indent {
                        let continuation = if j + 1 < wave.len() { "│" } else { " " };
                        line = line.trim_end().to_string();
                        line.push('\n');
                        let pad = format!("{} {continuation}", " ".repeat(label_width));
                        line.push_str(&pad);
                        line.push_str(&" ".repeat(indent - pad.chars().count()));
                        col = indent;
                    }
                    line.push_str(&piece);
                    col += piece.chars().count();
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    out
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn fill(kind: TaskKind) -> &'static str {
    match kind {
        TaskKind::Extract => "#dbeafe",
        TaskKind::Transform => "#fef3c7",
        TaskKind::QualityCheck => "#dcfce7",
        TaskKind::Load => "#ede9fe",
    }
}

/// Graphviz DOT, left to right, one color per task kind.
pub fn dot(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", dot_escape(&plan.name));
    let _ = writeln!(out, "  rankdir=LR;");
    let _ = writeln!(out, "  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\"];");
    for task in &plan.tasks {
        let engine = if task.engine == "local" { String::new() } else { format!(" @{}", task.engine) };
        let _ = writeln!(
            out,
            "  \"{}\" [label=\"{}\\n{}{}\", fillcolor=\"{}\"];",
            dot_escape(&task.id),
            dot_escape(&task.id),
            task.kind,
            dot_escape(&engine),
            fill(task.kind)
        );
    }
    for task in &plan.tasks {
        for &d in &task.deps {
            let _ = writeln!(out, "  \"{}\" -> \"{}\";", dot_escape(&plan.tasks[d].id), dot_escape(&task.id));
        }
    }
    out.push_str("}\n");
    out
}

/// A Mermaid node id: task ids are identifiers, but a few words are reserved by Mermaid.
fn mermaid_id(id: &str) -> String {
    const RESERVED: &[&str] = &[
        "end",
        "graph",
        "subgraph",
        "flowchart",
        "style",
        "class",
        "classdef",
        "click",
        "linkstyle",
        "default",
        "direction",
    ];
    if RESERVED.contains(&id.to_ascii_lowercase().as_str()) { format!("{id}_") } else { id.to_string() }
}

/// A Mermaid flowchart, left to right, one class per task kind.
pub fn mermaid(plan: &Plan) -> String {
    let mut out = String::from("flowchart LR\n");
    for task in &plan.tasks {
        let engine = if task.engine == "local" { String::new() } else { format!(" @{}", task.engine) };
        let _ = writeln!(out, "  {}[\"{}<br/><small>{}{}</small>\"]", mermaid_id(&task.id), task.id, task.kind, engine);
    }
    for task in &plan.tasks {
        for &d in &task.deps {
            let _ = writeln!(out, "  {} --> {}", mermaid_id(&plan.tasks[d].id), mermaid_id(&task.id));
        }
    }
    for kind in TaskKind::ALL {
        let members: Vec<String> = plan.tasks.iter().filter(|t| t.kind == kind).map(|t| mermaid_id(&t.id)).collect();
        if !members.is_empty() {
            let _ = writeln!(out, "  classDef {} fill:{},stroke:#555", kind.as_str(), fill(kind));
            let _ = writeln!(out, "  class {} {}", members.join(","), kind.as_str());
        }
    }
    out
}
