//! The whole-plan checks once every task is built: tables read have producers upstream, report
//! queries name tables that exist, outputs are unique, and every folder the plan touches.

use std::collections::{BTreeMap, HashMap};

use crate::decode::Located;
use crate::diagnostic::{Diagnostic, Pos, suggestion};
use crate::plan::{Action, Plan, PlannedTask};
use crate::spec::{CheckKindSpec, ReportQuerySpec, TaskParams, TaskSpec};
use crate::sql;

use super::{Builder, places};

impl Builder<'_> {
    /// Every table a task reads must be produced by a task it depends on (directly or not).
    pub(super) fn check_tables(&mut self, plan: &Plan, specs: &[TaskSpec]) {
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
    pub(super) fn check_report(&mut self, plan: &Plan, queries: &[ReportQuerySpec]) {
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
    pub(super) fn check_outputs(&mut self, plan: &Plan, specs: &[TaskSpec]) {
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
    pub(super) fn places(&self, plan: &Plan, specs: &[TaskSpec], runs: Option<&Located<String>>) -> Vec<places::Place> {
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
