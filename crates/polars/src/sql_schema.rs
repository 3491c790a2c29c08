//! The local engine's [`SchemaOracle`]: plans a transform's SQL with Polars on empty tables of the
//! declared extract schemas, the way [`crate::transform`] runs it on data, so that `validate`
//! learns each transform's columns (and finds unknown columns and type errors) before a run.

use std::collections::HashMap;
use std::sync::Arc;

use dagrun_core::compile::{SchemaCheck, SchemaOracle};
use dagrun_core::plan::Column as ColumnDecl;
use polars::prelude::*;
use polars::sql::SQLContext;

use crate::json::RecordSchema;

/// Empty tables by name: the extracts' declared schemas, then each planned transform's result.
#[derive(Default)]
struct PolarsSchemas {
    tables: HashMap<String, DataFrame>,
}

impl SchemaOracle for PolarsSchemas {
    fn declare(&mut self, table: &str, columns: &[ColumnDecl]) {
        let schema = RecordSchema::new(columns.to_vec()).polars_schema();
        self.tables.insert(table.to_string(), DataFrame::empty_with_schema(&schema));
    }

    fn plan(&mut self, sql: &str, tables: &[String], keep_as: Option<&str>) -> Result<Vec<String>, String> {
        let mut cx = SQLContext::new();
        for name in tables {
            if let Some(df) = self.tables.get(name) {
                cx.register(name, df.clone().lazy());
            }
        }
        let df = cx.execute(sql).and_then(|lf| lf.collect()).map_err(|e| e.to_string())?;
        let columns = df.get_column_names().iter().map(|c| c.to_string()).collect();
        if let Some(name) = keep_as {
            self.tables.insert(name.to_string(), df);
        }
        Ok(columns)
    }
}

/// What `PlanOptions::schema_check` is set to in builds with the local engine.
pub fn schema_check() -> SchemaCheck {
    SchemaCheck(Arc::new(|| Box::new(PolarsSchemas::default())))
}

#[cfg(test)]
mod tests {
    use dagrun_core::spec::ColumnType;

    use super::*;

    #[test]
    fn a_transform_gets_the_columns_its_sql_gives_and_unknown_ones_are_named() {
        let mut oracle = PolarsSchemas::default();
        let decl = |name: &str, ty| ColumnDecl { name: name.into(), ty, from: name.into() };
        oracle.declare("events", &[decl("ts", ColumnType::TimestampMs), decl("page", ColumnType::String)]);
        let events = ["events".to_string()];
        let columns =
            oracle.plan("SELECT page, COUNT(*) AS n FROM events GROUP BY page", &events, Some("pages")).unwrap();
        assert_eq!(columns, vec!["page", "n"]);
        assert_eq!(oracle.plan("SELECT n FROM pages", &["pages".to_string()], None).unwrap(), vec!["n"]);
        let err = oracle.plan("SELECT pgae FROM events", &events, None).unwrap_err();
        assert!(err.contains("pgae"), "{err}");
    }
}
