//! `kind: quality_check`: declarative data tests in the spirit of dbt's (`not_null`, `unique`,
//! `row_count`, `accepted_values`, `relationships`) plus SQL whose rows are failures. Each check
//! reports how many rows (or key groups) failed and a few of them. Nulls are ignored by `unique`,
//! `accepted_values` and `relationships`, as in dbt.

use std::collections::BTreeMap;

use dagrun_core::engine::CheckResult;
use dagrun_core::plan::{Check, CheckKind};
use polars::prelude::*;
use polars::sql::SQLContext;

use crate::error::{Error, Result};

/// How many failing rows a result keeps.
pub(crate) const SAMPLE_ROWS: usize = 5;

/// Runs one check against `table` (named `table_name`); `tables` holds every table the task reads.
pub(crate) fn run(check: &Check, table_name: &str, tables: &BTreeMap<String, DataFrame>) -> Result<CheckResult> {
    let df = tables.get(table_name).ok_or_else(|| Error::MissingTable(table_name.to_string()))?;
    let has = |column: &str| -> Result<()> {
        if df.schema().contains(column) { Ok(()) } else { Err(missing_column(table_name, column, df)) }
    };
    let (failing, sample_df, detail) = match &check.kind {
        CheckKind::NotNull { column } => {
            has(column)?;
            let nulls = df.column(column).map_err(|e| Error::polars("not_null", e))?.null_count();
            let sample =
                collect(df.clone().lazy().filter(col(column.as_str()).is_null()).limit(SAMPLE_ROWS as IdxSize))?;
            (nulls as u64, Some(sample), format!("{nulls} rows have a null `{column}`"))
        }
        CheckKind::Unique { columns } => {
            for c in columns {
                has(c)?;
            }
            let keys: Vec<Expr> = columns.iter().map(|c| col(c.as_str())).collect();
            let not_null =
                columns.iter().map(|c| col(c.as_str()).is_not_null()).reduce(|a, b| a.and(b)).expect("columns");
            let dups = collect(
                df.clone()
                    .lazy()
                    .filter(not_null)
                    .group_by_stable(keys)
                    .agg([len().alias("rows")])
                    .filter(col("rows").gt(lit(1)))
                    .sort(columns.iter().map(String::as_str).collect::<Vec<_>>(), SortMultipleOptions::default()),
            )?;
            let n = dups.height() as u64;
            (
                n,
                Some(dups.head(Some(SAMPLE_ROWS))),
                format!("{n} values of ({}) appear more than once", columns.join(", ")),
            )
        }
        CheckKind::RowCount { min, max } => {
            let rows = df.height() as u64;
            let low = min.is_some_and(|m| rows < m);
            let high = max.is_some_and(|m| rows > m);
            let detail = match (min, max) {
                (Some(lo), Some(hi)) => format!("{rows} rows, expected {lo} to {hi}"),
                (Some(lo), None) => format!("{rows} rows, expected at least {lo}"),
                (None, Some(hi)) => format!("{rows} rows, expected at most {hi}"),
                (None, None) => format!("{rows} rows"),
            };
            (u64::from(low || high), None, detail)
        }
        CheckKind::AcceptedValues { column, values } => {
            has(column)?;
            let accepted = Series::new("accepted".into(), values.clone());
            let as_text = col(column.as_str()).cast(DataType::String);
            let bad = collect(df.clone().lazy().filter(
                col(column.as_str()).is_not_null().and(as_text.is_in(lit(accepted).implode(false), false).not()),
            ))?;
            let n = bad.height() as u64;
            let distinct = collect(
                bad.clone().lazy().select([col(column.as_str())]).unique_stable(None, UniqueKeepStrategy::First),
            )?;
            (
                n,
                Some(bad.head(Some(SAMPLE_ROWS))),
                format!("{n} rows have a `{column}` outside [{}] ({} distinct)", values.join(", "), distinct.height()),
            )
        }
        CheckKind::Relationships { column, to, field } => {
            has(column)?;
            let other = tables.get(to).ok_or_else(|| Error::MissingTable(to.clone()))?;
            if !other.schema().contains(field) {
                return Err(missing_column(to, field, other));
            }
            let left_type = df.column(column).map_err(|e| Error::polars("relationships", e))?.dtype().clone();
            let keys = other
                .clone()
                .lazy()
                .select([col(field.as_str()).cast(left_type).alias(column.as_str())])
                .filter(col(column.as_str()).is_not_null())
                .unique(None, UniqueKeepStrategy::Any);
            let orphans = collect(df.clone().lazy().filter(col(column.as_str()).is_not_null()).join(
                keys,
                [col(column.as_str())],
                [col(column.as_str())],
                JoinArgs::new(JoinType::Anti),
            ))?;
            let n = orphans.height() as u64;
            (n, Some(orphans.head(Some(SAMPLE_ROWS))), format!("{n} rows have a `{column}` not found in {to}.{field}"))
        }
        CheckKind::Sql { sql } => {
            let mut cx = SQLContext::new();
            for (name, t) in tables {
                cx.register(name, t.clone().lazy());
            }
            let lf = cx.execute(sql).map_err(|e| Error::polars(format!("check `{}`: invalid SQL", check.name), e))?;
            let rows = collect(lf)?;
            let n = rows.height() as u64;
            (n, Some(rows.head(Some(SAMPLE_ROWS))), format!("the query returned {n} rows"))
        }
    };
    let passed = failing == 0;
    Ok(CheckResult {
        name: check.name.clone(),
        severity: check.severity,
        passed,
        failing,
        sample: if passed { Vec::new() } else { sample_df.map(|d| format_rows(&d)).unwrap_or_default() },
        detail: (!passed).then_some(detail),
    })
}

fn collect(lf: LazyFrame) -> Result<DataFrame> {
    lf.collect().map_err(|e| Error::polars("running a check", e))
}

fn missing_column(table: &str, column: &str, df: &DataFrame) -> Error {
    let available: Vec<String> = df.get_column_names().iter().map(|c| c.to_string()).collect();
    Error::MissingColumn { table: table.to_string(), column: column.to_string(), available: available.join(", ") }
}

/// Rows as `col=value, col=value`, strings quoted.
pub(crate) fn format_rows(df: &DataFrame) -> Vec<String> {
    let names: Vec<String> = df.get_column_names().iter().map(|c| c.to_string()).collect();
    (0..df.height())
        .filter_map(|i| df.get_row(i).ok())
        .map(|row| {
            row.0.iter().zip(&names).map(|(v, n)| format!("{n}={}", format_value(v))).collect::<Vec<_>>().join(", ")
        })
        .collect()
}

fn format_value(v: &AnyValue) -> String {
    match v {
        AnyValue::Null => "null".into(),
        AnyValue::String(s) => format!("{s:?}"),
        AnyValue::StringOwned(s) => format!("{:?}", s.as_str()),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dagrun_core::spec::CheckSeverity;

    fn tables() -> BTreeMap<String, DataFrame> {
        let songs =
            df!("song_id" => [Some("S1"), Some("S2"), Some("S2"), None], "level" => ["free", "paid", "gold", "free"])
                .unwrap();
        let plays = df!("song_id" => [Some("S1"), Some("S9"), None]).unwrap();
        BTreeMap::from([("songs".to_string(), songs), ("plays".to_string(), plays)])
    }

    fn check(kind: CheckKind) -> Check {
        Check { name: "c".into(), severity: CheckSeverity::Error, kind }
    }

    #[test]
    fn not_null_counts_nulls_and_shows_them() {
        let r = run(&check(CheckKind::NotNull { column: "song_id".into() }), "songs", &tables()).unwrap();
        assert_eq!((r.passed, r.failing), (false, 1));
        assert_eq!(r.sample, vec!["song_id=null, level=\"free\""]);
    }

    #[test]
    fn unique_reports_duplicate_keys_and_ignores_nulls() {
        let r = run(&check(CheckKind::Unique { columns: vec!["song_id".into()] }), "songs", &tables()).unwrap();
        assert_eq!(r.failing, 1);
        assert_eq!(r.sample, vec!["song_id=\"S2\", rows=2"]);
        let r = run(&check(CheckKind::Unique { columns: vec!["song_id".into(), "level".into()] }), "songs", &tables())
            .unwrap();
        assert!(r.passed);
    }

    #[test]
    fn accepted_values_and_row_count() {
        let values = vec!["free".to_string(), "paid".to_string()];
        let r = run(&check(CheckKind::AcceptedValues { column: "level".into(), values }), "songs", &tables()).unwrap();
        assert_eq!(r.failing, 1);
        let r = run(&check(CheckKind::RowCount { min: Some(5), max: None }), "songs", &tables()).unwrap();
        assert_eq!(r.detail.as_deref(), Some("4 rows, expected at least 5"));
    }

    #[test]
    fn relationships_find_orphans_but_not_nulls() {
        let kind = CheckKind::Relationships { column: "song_id".into(), to: "songs".into(), field: "song_id".into() };
        let r = run(&check(kind), "plays", &tables()).unwrap();
        assert_eq!(r.failing, 1);
        assert_eq!(r.sample, vec!["song_id=\"S9\""]);
    }

    #[test]
    fn sql_rows_are_failures() {
        let r =
            run(&check(CheckKind::Sql { sql: "SELECT * FROM songs WHERE level = 'gold'".into() }), "songs", &tables())
                .unwrap();
        assert_eq!(r.failing, 1);
    }

    #[test]
    fn a_missing_column_is_a_clear_error() {
        let err = run(&check(CheckKind::NotNull { column: "nope".into() }), "songs", &tables()).unwrap_err();
        assert_eq!(err.to_string(), "table `songs` has no column `nope` (columns: song_id, level)");
    }
}
