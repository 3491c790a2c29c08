//! Column checks before any data is read. Each extract's declared schema is a table; each
//! transform's columns are derived by planning its SQL on empty tables of those schemas, through
//! an engine's [`SchemaOracle`] (the local engine's Polars, in builds that carry it). Then every
//! column a quality check or a load names is looked up in its table, and report queries are
//! planned over the published tables. Unknown columns and type errors are located at their place
//! in the SQL, with did-you-mean, at `validate` rather than after the extracts ran.
//!
//! EMR tasks get the same check, since their SQL is kept portable; but Spark SQL accepts things
//! Polars SQL does not, so there a failure is a warning. A report query that fails is a warning
//! too: at run time it fails only its answer.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use super::Builder;
use crate::decode::Located;
use crate::diagnostic::{Diagnostic, Pos, Severity, suggestion};
use crate::emr::ENGINE;
use crate::plan::{Action, Column, Plan, PlannedTask};
use crate::spec::{CheckKindSpec, ReportQuerySpec, TaskParams, TaskSpec};
use crate::sql;

/// Derives the columns a SQL query gives over tables of known columns, without data.
pub trait SchemaOracle {
    /// Adds a table with the declared columns (an extract's schema).
    fn declare(&mut self, table: &str, columns: &[Column]);

    /// Plans `sql` over `tables` (those it reads, declared or kept so far), and with `keep_as`,
    /// keeps its result as a table of that name. Returns the result's column names, or what the
    /// engine said (first line first). Only the tables read are given to the engine, so that
    /// checking a pipeline of many tasks stays near-linear.
    fn plan(&mut self, sql: &str, tables: &[String], keep_as: Option<&str>) -> Result<Vec<String>, String>;
}

/// Makes a fresh [`SchemaOracle`] for one compile ([`super::PlanOptions::schema_check`]).
#[derive(Clone)]
pub struct SchemaCheck(pub Arc<dyn Fn() -> Box<dyn SchemaOracle> + Send + Sync>);

impl fmt::Debug for SchemaCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SchemaCheck")
    }
}

impl Builder<'_> {
    /// Runs the column checks; a plan with other errors is not checked (its tables may be wrong).
    pub(super) fn check_columns(&mut self, plan: &Plan, specs: &[TaskSpec], report: &[ReportQuerySpec]) {
        let Some(check) = self.options.schema_check.clone() else { return };
        let mut oracle = (check.0)();
        let mut columns: HashMap<String, Vec<String>> = HashMap::new();
        for i in plan.waves().into_iter().flatten() {
            let task = &plan.tasks[i];
            let spec = &specs[task.index];
            match (&task.action, &spec.params) {
                (Action::Extract(e), _) => {
                    oracle.declare(&task.id, &e.schema);
                    columns.insert(task.id.clone(), e.schema.iter().map(|c| c.name.clone()).collect());
                }
                (Action::Transform(t), TaskParams::Transform(s)) => {
                    // An upstream table that could not be planned was reported already.
                    if !t.tables.iter().all(|n| columns.contains_key(n)) {
                        continue;
                    }
                    match oracle.plan(&t.sql, &t.tables, Some(&task.id)) {
                        Ok(cols) => {
                            columns.insert(task.id.clone(), cols);
                        }
                        Err(message) => {
                            let what = format!("the SQL of task `{}`", task.id);
                            self.sql_problem(task, &s.sql, &what, &message, &t.tables, &columns);
                        }
                    }
                }
                (Action::QualityCheck(q), TaskParams::QualityCheck(s)) => {
                    for c in &s.checks {
                        match &c.check {
                            CheckKindSpec::NotNull(cols) | CheckKindSpec::Unique(cols) => {
                                for col in cols {
                                    self.column_in(task, &q.table, col, "a check", &columns);
                                }
                            }
                            CheckKindSpec::AcceptedValues { column, .. } => {
                                self.column_in(task, &q.table, column, "a check", &columns);
                            }
                            CheckKindSpec::Relationships { column, to, field } => {
                                self.column_in(task, &q.table, column, "a check", &columns);
                                self.column_in(task, to, field, "a check", &columns);
                            }
                            CheckKindSpec::Sql(query) => {
                                let tables = sql::referenced_tables(query).unwrap_or_default();
                                if tables.iter().all(|n| columns.contains_key(n))
                                    && let Err(message) = oracle.plan(query, &tables, None)
                                {
                                    let what = format!("the SQL check of task `{}`", task.id);
                                    self.sql_problem(task, query, &what, &message, &tables, &columns);
                                }
                            }
                            CheckKindSpec::RowCount { .. } => {}
                        }
                    }
                }
                (Action::Load(l), TaskParams::Load(s)) => {
                    let named = [("partition_by", &s.partition_by), ("keys", &s.keys), ("order_by", &s.order_by)];
                    for (key, cols) in named {
                        for col in cols.iter().flat_map(|c| &c.0) {
                            self.column_in(task, &l.table, col, key, &columns);
                        }
                    }
                }
                _ => {}
            }
        }
        for q in report {
            let tables = sql::referenced_tables(&q.sql).unwrap_or_default();
            if !tables.iter().all(|n| columns.contains_key(n)) {
                continue;
            }
            if let Err(message) = oracle.plan(&q.sql, &tables, None) {
                let (pos, hint) = self.locate_problem(&q.sql, &message, &tables, &columns);
                let mut d = Diagnostic::warning(
                    pos,
                    format!("report query `{}` will fail: {}", q.title.value, first_line(&message)),
                );
                d.hint = hint;
                self.warnings.push(d);
            }
        }
    }

    /// `column`, named by `task` under `key`, must be a column of `table` (when its columns are
    /// known).
    fn column_in(
        &mut self,
        task: &PlannedTask,
        table: &str,
        column: &Located<String>,
        key: &str,
        columns: &HashMap<String, Vec<String>>,
    ) {
        let Some(known) = columns.get(table) else { return };
        if known.iter().any(|c| c == column.as_str()) {
            return;
        }
        let pos = Pos { len: column.len(), ..column.pos };
        let hint = suggestion(column, known.iter().map(String::as_str))
            .unwrap_or_else(|| format!("its columns: {}", known.join(", ")));
        let message =
            format!("{key} of task `{}` names column `{}`, which table `{table}` does not have", task.id, column.value);
        self.error(pos, message).hint = Some(hint);
    }

    /// A transform's or check's SQL that the engine could not plan: an error, or on EMR a warning.
    fn sql_problem(
        &mut self,
        task: &PlannedTask,
        sql: &Located<String>,
        what: &str,
        message: &str,
        tables: &[String],
        columns: &HashMap<String, Vec<String>>,
    ) {
        let (pos, hint) = self.locate_problem(sql, message, tables, columns);
        let text = format!("{what} fails on the declared schemas: {}", first_line(message));
        let mut d = if task.engine == ENGINE {
            Diagnostic::warning(pos, format!("{text} (in Polars SQL; Spark SQL on EMR may accept it)"))
        } else {
            Diagnostic::error(pos, text)
        };
        d.hint = hint;
        if d.severity == Severity::Error {
            self.diags.push(d);
        } else {
            self.warnings.push(d);
        }
    }

    /// Where in `sql` the engine's `message` points: the first quoted name it gives that is a
    /// word of the SQL, with did-you-mean among the columns of the tables read.
    fn locate_problem(
        &self,
        sql: &Located<String>,
        message: &str,
        tables: &[String],
        columns: &HashMap<String, Vec<String>>,
    ) -> (Pos, Option<String>) {
        let available: Vec<&str> = tables.iter().filter_map(|t| columns.get(t)).flatten().map(String::as_str).collect();
        for name in quoted(first_line(message)) {
            // Functions are quoted in lower case (`sum`) but often written in upper case.
            for word in [name.to_string(), name.to_uppercase()] {
                let pos = sql::locate_word(self.source, sql, &word);
                if pos != sql.pos && pos.len > 0 {
                    let known = available.contains(&name);
                    let hint = if known { None } else { suggestion(name, available.iter().copied()) };
                    return (pos, hint);
                }
            }
        }
        (sql.pos, None)
    }
}

/// The first line of an engine's message (Polars adds the plan it resolved below).
fn first_line(message: &str) -> &str {
    message.lines().find(|l| !l.trim().is_empty()).unwrap_or(message).trim()
}

/// The names a message quotes, in `"…"`, `'…'` or backticks.
fn quoted(message: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for quote in ['"', '\'', '`'] {
        let parts: Vec<&str> = message.split(quote).collect();
        out.extend(parts.iter().skip(1).step_by(2).filter(|p| !p.is_empty() && p.len() < 128).copied());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_an_engine_quotes_are_found_in_any_quotes() {
        assert_eq!(quoted(r#"unable to find column "nope"; valid columns: ["a"]"#), vec!["nope", "a"]);
        assert_eq!(quoted("column 'x' and `y`"), vec!["x", "y"]);
        assert_eq!(first_line("\n  first\nsecond"), "first");
    }
}
