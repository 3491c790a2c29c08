//! What each task kind's spec becomes: an extract, transform, quality check or load [`Action`],
//! with its paths, load mode and day rule checked.

use std::collections::BTreeSet;

use crate::decode::{Located, OneOrMany};
use crate::diagnostic::suggestion;
use crate::plan::DEFAULT_RETENTION;
use crate::plan::{Action, Check, CheckKind, Column, Extract, Load, QualityCheck, Replace, Transform};
use crate::slice::SliceTemplate;
use crate::spec::{
    CheckKindSpec, CheckSeverity, ColumnType, Compression, ExtractSpec, LoadMode, LoadSpec, NewFields, TableFormat,
    TaskParams, TaskSpec,
};
use crate::sql;

use super::Builder;

impl Builder<'_> {
    pub(super) fn action(&mut self, spec: &TaskSpec) -> Option<Action> {
        match &spec.params {
            TaskParams::Extract(e) => {
                let glob = e.glob.as_ref().map_or("**".to_string(), |g| g.value.clone());
                if let Some(g) = &e.glob
                    && let Err(err) = globset::Glob::new(g)
                {
                    self.error(g.pos, format!("invalid glob `{}`: {}", g.value, err.kind()));
                }
                self.check_path(&e.path, "path");
                if e.schema.0.is_empty() {
                    self.error(spec.pos, format!("task `{}` declares an empty schema", spec.id.value));
                }
                let schema: Vec<Column> = e
                    .schema
                    .0
                    .iter()
                    .map(|(key, col)| Column {
                        name: key.name.clone(),
                        ty: col.ty.value,
                        from: col.from.as_ref().map_or(key.name.clone(), |f| f.value.clone()),
                    })
                    .collect();
                let slice = e.slice_path.as_ref().and_then(|t| match SliceTemplate::parse(t) {
                    Ok(template) => Some(template),
                    Err(message) => {
                        self.error(t.pos, format!("invalid `slice_path`: {message}"));
                        None
                    }
                });
                let (slice_column, slice_tolerance) = self.slice_rule(e, &schema);
                let mut ignore_fields: Vec<String> = Vec::new();
                for field in e.ignore_fields.iter().flat_map(|f| &f.0) {
                    if let Some(column) = schema.iter().find(|c| c.from == field.value) {
                        self.error(
                            field.pos,
                            format!(
                                "field `{}` is both loaded (column `{}`) and in `ignore_fields`: keep one",
                                field.value, column.name
                            ),
                        );
                    } else if ignore_fields.contains(&field.value) {
                        self.error(field.pos, format!("field `{}` is listed twice in `ignore_fields`", field.value));
                    } else {
                        ignore_fields.push(field.value.clone());
                    }
                }
                Some(Action::Extract(Extract {
                    path: e.path.value.clone(),
                    glob,
                    format: e.format.value,
                    schema,
                    max_bad_records: e.max_bad_records.as_ref().map_or(0, |m| m.value),
                    slice,
                    slice_column,
                    slice_tolerance,
                    on_new_fields: e.on_new_fields.as_ref().map_or(NewFields::Ignore, |p| p.value),
                    ignore_fields,
                }))
            }
            TaskParams::Transform(t) => {
                let tables = match sql::referenced_tables(&t.sql) {
                    Ok(tables) => tables,
                    Err(err) => {
                        let pos = sql::locate(self.source, &t.sql, err.line, err.column);
                        self.error(pos, format!("SQL of task `{}` does not parse: {}", spec.id.value, err.message));
                        Vec::new()
                    }
                };
                Some(Action::Transform(Transform { sql: t.sql.value.clone(), tables }))
            }
            TaskParams::QualityCheck(q) => {
                let mut checks = Vec::new();
                let mut tables = vec![q.table.value.clone()];
                if q.checks.is_empty() {
                    self.error(spec.pos, format!("task `{}` has no checks", spec.id.value));
                }
                for c in &q.checks {
                    let severity = c.severity.as_ref().map_or(CheckSeverity::Error, |s| s.value);
                    let kinds: Vec<(String, CheckKind)> = match &c.check {
                        CheckKindSpec::NotNull(cols) if cols.is_empty() => {
                            self.error(c.pos, "not_null needs at least one column");
                            Vec::new()
                        }
                        CheckKindSpec::Unique(cols) if cols.is_empty() => {
                            self.error(
                                c.pos,
                                "unique needs at least one column (a list means the combination is unique)",
                            );
                            Vec::new()
                        }
                        CheckKindSpec::NotNull(cols) => cols
                            .iter()
                            .map(|col| {
                                (format!("not_null({})", col.value), CheckKind::NotNull { column: col.value.clone() })
                            })
                            .collect(),
                        CheckKindSpec::Unique(cols) => {
                            let columns: Vec<String> = cols.iter().map(|c| c.value.clone()).collect();
                            vec![(format!("unique({})", columns.join(", ")), CheckKind::Unique { columns })]
                        }
                        CheckKindSpec::RowCount { min, max } => {
                            if let (Some(lo), Some(hi)) = (min, max)
                                && lo.value > hi.value
                            {
                                self.error(hi.pos, format!("row_count max ({}) is below min ({})", hi.value, lo.value));
                            }
                            let name = match (min, max) {
                                (Some(lo), Some(hi)) => {
                                    format!("row_count({}..{})", lo.value, hi.value)
                                }
                                (Some(lo), None) => format!("row_count(>= {})", lo.value),
                                (None, Some(hi)) => format!("row_count(<= {})", hi.value),
                                (None, None) => {
                                    self.error(c.pos, "row_count needs `min`, `max` or both");
                                    "row_count".into()
                                }
                            };
                            vec![(
                                name,
                                CheckKind::RowCount {
                                    min: min.as_ref().map(|m| m.value),
                                    max: max.as_ref().map(|m| m.value),
                                },
                            )]
                        }
                        CheckKindSpec::AcceptedValues { column, values } => vec![(
                            format!("accepted_values({})", column.value),
                            CheckKind::AcceptedValues {
                                column: column.value.clone(),
                                values: values.iter().map(|v| v.value.clone()).collect(),
                            },
                        )],
                        CheckKindSpec::Relationships { column, to, field } => {
                            tables.push(to.value.clone());
                            vec![(
                                format!("relationships({} -> {}.{})", column.value, to.value, field.value),
                                CheckKind::Relationships {
                                    column: column.value.clone(),
                                    to: to.value.clone(),
                                    field: field.value.clone(),
                                },
                            )]
                        }
                        CheckKindSpec::Sql(query) => {
                            match sql::referenced_tables(query) {
                                Ok(t) => tables.extend(t),
                                Err(err) => {
                                    let pos = sql::locate(self.source, query, err.line, err.column);
                                    self.error(pos, format!("SQL check does not parse: {}", err.message));
                                }
                            }
                            vec![("sql".into(), CheckKind::Sql { sql: query.value.clone() })]
                        }
                    };
                    for (default_name, kind) in kinds {
                        let name = c.name.as_ref().map_or(default_name, |n| n.value.clone());
                        checks.push(Check { name, severity, kind });
                    }
                }
                let mut seen = BTreeSet::new();
                tables.retain(|t| seen.insert(t.clone()));
                Some(Action::QualityCheck(QualityCheck { table: q.table.value.clone(), checks, tables }))
            }
            TaskParams::Load(l) => {
                self.check_path(&l.path, "path");
                let partition_by: Vec<String> =
                    l.partition_by.as_ref().map(|p| p.0.iter().map(|c| c.value.clone()).collect()).unwrap_or_default();
                if let Some(p) = &l.partition_by {
                    let mut seen = BTreeSet::new();
                    for col in &p.0 {
                        if col.trim().is_empty() {
                            self.error(col.pos, "empty partition column name");
                        } else if !seen.insert(col.value.clone()) {
                            self.error(col.pos, format!("partition column `{}` is listed twice", col.value));
                        }
                    }
                }
                let format = l.format.as_ref().map_or(TableFormat::Parquet, |f| f.value);
                if let Some(r) = &l.retention
                    && format != TableFormat::Delta
                {
                    self.error(r.pos, "`retention` applies to `format: delta` tables only");
                }
                let mode = self.load_mode(l, &partition_by);
                Some(Action::Load(Load {
                    table: l.table.value.clone(),
                    path: l.path.value.clone(),
                    format,
                    partition_by,
                    compression: l.compression.as_ref().map_or(Compression::Zstd, |c| c.value),
                    retention: l.retention.as_ref().map_or(DEFAULT_RETENTION, |r| r.value.0),
                    mode,
                }))
            }
        }
    }

    /// A load's `mode` with the keys it needs, each misuse located.
    pub(super) fn load_mode(&mut self, l: &LoadSpec, partition_by: &[String]) -> Replace {
        let names = |v: &Option<OneOrMany<Located<String>>>| -> Vec<String> {
            v.as_ref().map(|v| v.0.iter().map(|c| c.value.clone()).collect()).unwrap_or_default()
        };
        let mode = l.mode.as_ref().map_or(LoadMode::Overwrite, |m| m.value);
        let stray = |key: &str, used_by: &str| format!("`{key}` applies to `mode: {used_by}` loads only");
        if mode != LoadMode::Partitions
            && let Some(c) = &l.slice_column
        {
            self.error(c.pos, stray("slice_column", "partitions"));
        }
        if mode != LoadMode::Merge {
            for (key, v) in [("keys", &l.keys), ("order_by", &l.order_by)] {
                if let Some(v) = v {
                    let pos = v.0.first().map_or(l.pos, |c| c.pos);
                    self.error(pos, stray(key, "merge"));
                }
            }
        }
        let at = l.mode.as_ref().map_or(l.pos, |m| m.pos);
        match mode {
            LoadMode::Overwrite => Replace::Overwrite,
            LoadMode::Partitions => match &l.slice_column {
                Some(c) if partition_by.contains(&c.value) => {
                    self.error(
                        c.pos,
                        format!(
                            "`slice_column` `{}` is a partition column: name a timestamp column of the rows",
                            c.value
                        ),
                    );
                    Replace::Overwrite
                }
                Some(c) => Replace::Partitions { slice_column: c.value.clone() },
                None => {
                    self.error(at, "`mode: partitions` needs `slice_column`: the timestamp column whose day places each row in a slice");
                    Replace::Overwrite
                }
            },
            LoadMode::Merge => {
                let (keys, order_by) = (names(&l.keys), names(&l.order_by));
                if keys.is_empty() {
                    self.error(at, "`mode: merge` needs `keys`: the columns that identify a row");
                }
                if order_by.is_empty() {
                    self.error(
                        at,
                        "`mode: merge` needs `order_by`: the columns whose greatest values make a row the latest",
                    );
                }
                Replace::Merge { keys, order_by }
            }
        }
    }

    /// A sliced extract's day rule: the column whose UTC day a row is of, and how many days from
    /// its file's day it may be (default 1).
    pub(super) fn slice_rule(&mut self, e: &ExtractSpec, schema: &[Column]) -> (Option<String>, Option<u32>) {
        let column = match (&e.slice_path, &e.slice_column) {
            (Some(_), Some(c)) => match schema.iter().find(|s| s.name == c.value) {
                Some(s) if s.ty == ColumnType::TimestampMs => Some(c.value.clone()),
                Some(s) => {
                    self.error(
                        c.pos,
                        format!("`slice_column` `{}` is of type {}: it must be a timestamp_ms column", c.value, s.ty),
                    );
                    None
                }
                None => {
                    let hint = suggestion(&c.value, schema.iter().map(|s| s.name.as_str()));
                    self.error(c.pos, format!("`slice_column` `{}` is not a column of the schema", c.value)).hint =
                        hint;
                    None
                }
            },
            (Some(p), None) => {
                self.error(
                    p.pos,
                    "`slice_path` needs `slice_column`: the timestamp_ms column whose UTC day a row is of \
                     (a run of a day keeps that day's rows, from whichever file they came in)",
                )
                .hint = Some("e.g. `slice_column: start_time`".into());
                None
            }
            (None, Some(c)) => {
                self.error(c.pos, "`slice_column` needs `slice_path`: where the files of one day are");
                None
            }
            (None, None) => None,
        };
        let tolerance = match (&e.slice_path, &e.slice_tolerance) {
            (Some(_), Some(t)) => {
                let secs = t.value.0.as_secs_f64();
                let days = secs / 86_400.0;
                if days.fract() != 0.0 || days > 31.0 {
                    self.error(t.pos, "`slice_tolerance` is whole days, at most 31: e.g. 0d, 1d or 2d");
                    None
                } else {
                    Some(days as u32)
                }
            }
            (Some(_), None) => Some(1),
            (None, Some(t)) => {
                self.error(t.pos, "`slice_tolerance` needs `slice_path`");
                None
            }
            (None, None) => None,
        };
        (column, tolerance)
    }

    pub(super) fn check_path(&mut self, path: &Located<String>, key: &str) {
        if path.trim().is_empty() {
            self.error(path.pos, format!("`{key}` is empty"));
        } else if let Some(rest) = path.strip_prefix("s3://")
            && rest.split('/').next().is_none_or(str::is_empty)
        {
            self.error(path.pos, format!("`{}` names no bucket: expected s3://bucket/prefix", path.value));
        } else if let Some(rest) = path.strip_prefix("s3://")
            && let Some(segment) = rest.trim_end_matches('/').split('/').skip(1).find(|s| matches!(*s, "" | "." | ".."))
        {
            let shown = if segment.is_empty() { "an empty segment (`//`)".to_string() } else { format!("`{segment}`") };
            self.error(
                path.pos,
                format!("`{}` holds {shown}: S3 keys are literal, so it is not a folder step there", path.value),
            )
            .hint = Some("write the prefix as S3 stores it, without `.`, `..` or `//`".into());
        } else if path.contains("://") && !path.starts_with("s3://") {
            let scheme = path.split("://").next().unwrap_or("");
            self.error(path.pos, format!("unsupported scheme `{scheme}://` in `{}`", path.value)).hint =
                Some("use a local path or s3://bucket/prefix".into());
        }
    }
}
