//! `kind: transform`: one SQL query (Polars SQL) over upstream tables, each registered under the
//! name of the task that produced it. The query stays portable to Spark SQL where it can, since
//! the EMR engine runs the same text.

use polars::prelude::*;
use polars::sql::SQLContext;

use crate::error::{Error, Result};
use crate::spill::Table;

/// Runs `sql` with `tables` registered by name and collects the result. A spilled table is
/// scanned, so the query's filters and columns reach into its file.
pub(crate) fn run(task_id: &str, sql: &str, tables: Vec<(String, Table)>) -> Result<DataFrame> {
    let mut cx = SQLContext::new();
    for (name, table) in &tables {
        cx.register(name, table.lazy()?);
    }
    let lf = cx.execute(sql).map_err(|e| Error::polars(format!("SQL of task `{task_id}` is invalid"), e))?;
    let df = lf.collect().map_err(|e| Error::polars(format!("SQL of task `{task_id}` failed"), e))?;
    // Spilled inputs stay on disk until here.
    drop(tables);
    Ok(crate::rechunk(df))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_sql_over_named_tables() {
        let events = df!("name" => ["a", "b", "a"], "n" => [1i64, 2, 3]).unwrap();
        let out = run(
            "t",
            "SELECT name, SUM(n) AS total FROM events GROUP BY name ORDER BY name",
            vec![("events".into(), Table::Memory(events))],
        )
        .unwrap();
        assert_eq!(out.height(), 2);
        assert_eq!(out.column("total").unwrap().i64().unwrap().get(0), Some(4));
    }

    #[test]
    fn a_bad_query_names_the_task() {
        let events = df!("name" => ["a"]).unwrap();
        let err = run("users", "SELECT nope FROM events", vec![("events".into(), Table::Memory(events))]).unwrap_err();
        assert!(err.to_string().starts_with("SQL of task `users`"), "{err}");
    }
}
