//! What a Delta load replaces when its run reads only some days of a sliced extract
//! ([`dagrun_core::slice`]): `mode: partitions` deletes the rows of the run's days and appends
//! the new ones in one commit, rewriting only the files that held such rows; `mode: merge` keeps,
//! for every key, the latest of the published row and the new one.
//!
//! Files carry the bounds of their `slice_column` as Delta statistics, so that the files holding a
//! day are found without reading the others (and other readers skip files by them too).

use std::collections::BTreeSet;
use std::io::Cursor;
use std::sync::Arc;

use dagrun_core::slice::Day;
use dagrun_core::storage::Storage;
use dagrun_core::storage::delta::{ColumnBounds, DeltaSnapshot};
use polars::prelude::*;

use super::partition::Part;
use crate::error::{Error, Result};

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The values of a timestamp (or date) column as epoch microseconds.
fn micros(df: &DataFrame, column: &str) -> Result<Vec<Option<i64>>> {
    let col = df.column(column).map_err(|_| {
        let available: Vec<String> = df.get_column_names().iter().map(|c| c.to_string()).collect();
        Error::InvalidOutput(format!(
            "`slice_column` `{column}` is not a column of the table (it has {})",
            available.join(", ")
        ))
    })?;
    let as_micros = match col.dtype() {
        DataType::Datetime(unit, _) => {
            let factor = match unit {
                TimeUnit::Nanoseconds => -1000,
                TimeUnit::Microseconds => 1,
                TimeUnit::Milliseconds => 1000,
            };
            let raw = col.cast(&DataType::Int64).map_err(|e| Error::polars("reading the slice column", e))?;
            raw.i64()
                .map_err(|e| Error::polars("reading the slice column", e))?
                .iter()
                .map(|v| v.map(|v| if factor < 0 { v.div_euclid(1000) } else { v * factor }))
                .collect()
        }
        DataType::Date => {
            let raw = col.cast(&DataType::Int32).map_err(|e| Error::polars("reading the slice column", e))?;
            raw.i32()
                .map_err(|e| Error::polars("reading the slice column", e))?
                .iter()
                .map(|v| v.map(|d| i64::from(d) * MICROS_PER_DAY))
                .collect()
        }
        other => {
            return Err(Error::InvalidOutput(format!(
                "`slice_column` `{column}` is of type {other}: it must be a timestamp or a date"
            )));
        }
    };
    Ok(as_micros)
}

fn day_of_micros(us: i64) -> Day {
    Day(us.div_euclid(MICROS_PER_DAY) as i32)
}

/// An instant as Delta statistics write timestamps: `2018-11-05T21:01:46.796Z` (milliseconds).
fn delta_timestamp(us: i64) -> String {
    let day = day_of_micros(us);
    let of_day = us - i64::from(day.0) * MICROS_PER_DAY;
    let ms = of_day / 1000;
    format!("{day}T{:02}:{:02}:{:02}.{:03}Z", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

/// The bounds of `column` in one file's rows.
pub(crate) fn bounds(data: &DataFrame, column: &str) -> Result<Option<ColumnBounds>> {
    let values = micros(data, column)?;
    let nulls = values.iter().filter(|v| v.is_none()).count() as u64;
    let (min, max) = (values.iter().flatten().min(), values.iter().flatten().max());
    Ok(match (min, max) {
        (Some(&lo), Some(&hi)) => {
            Some(ColumnBounds { column: column.to_string(), min: delta_timestamp(lo), max: delta_timestamp(hi), nulls })
        }
        _ => None,
    })
}

/// Refuses rows that the run's days do not hold: deleting those days and appending them would
/// leave such a row twice after the run of its own day.
pub(crate) fn check_rows_in_days(df: &DataFrame, column: &str, days: &BTreeSet<Day>, table: &str) -> Result<()> {
    let values = micros(df, column)?;
    let nulls = values.iter().filter(|v| v.is_none()).count();
    let outside: BTreeSet<Day> =
        values.iter().flatten().map(|&us| day_of_micros(us)).filter(|d| !days.contains(d)).collect();
    if nulls > 0 || !outside.is_empty() {
        let what = if nulls > 0 {
            format!("{nulls} row(s) have no `{column}`")
        } else {
            format!(
                "rows fall on {} day(s) the run does not read, such as {}",
                outside.len(),
                outside.iter().next().expect("not empty")
            )
        };
        return Err(Error::InvalidOutput(format!(
            "table `{table}`: {what}, so no slice holds them and a later run could publish them twice; nothing \
             was committed. Each file of the sliced extract must hold only rows of the day its path names"
        )));
    }
    Ok(())
}

/// The files of the published version that hold rows of `days` (by their bounds; a file without
/// bounds may hold any day), read and cut: the paths to remove and the rows to keep, as parts to
/// write back under new names (`part-NNNNN-<tag>.parquet` beside the old file).
pub(crate) async fn cut_days(
    snapshot: &DeltaSnapshot,
    storage: &Arc<dyn Storage>,
    root: &str,
    column: &str,
    days: &BTreeSet<Day>,
    tag: &str,
) -> Result<(Vec<String>, Vec<Part>, u64)> {
    let (Some(&first), Some(&last)) = (days.first(), days.last()) else { return Ok((Vec::new(), Vec::new(), 0)) };
    let candidates: Vec<_> = snapshot
        .files
        .iter()
        .filter(|f| {
            let Some((_, lo, hi)) = f.bounds.iter().find(|(c, _, _)| c == column) else { return true };
            let (Some(lo), Some(hi)) = (lo.get(..10).and_then(Day::parse), hi.get(..10).and_then(Day::parse)) else {
                return true;
            };
            hi >= first && lo <= last && days.range(lo..=hi).next().is_some()
        })
        .collect();
    let paths: Vec<String> = candidates.iter().map(|f| format!("{root}/{}", f.path)).collect();
    let contents = storage.read_many(&paths, 16).await;
    let mut removed = Vec::new();
    let mut kept_parts = Vec::new();
    let mut deleted_rows = 0u64;
    for (n, (file, data)) in candidates.iter().zip(contents).enumerate() {
        let data = data?;
        let df = ParquetReader::new(Cursor::new(data))
            .finish()
            .map_err(|e| Error::polars(format!("reading {root}/{}", file.path), e))?;
        let values = micros(&df, column)?;
        let keep: BooleanChunked =
            values.iter().map(|v| Some(v.is_none_or(|us| !days.contains(&day_of_micros(us))))).collect();
        let kept = df.filter(&keep).map_err(|e| Error::polars("cutting the run's days out of a file", e))?;
        if kept.height() == df.height() {
            continue;
        }
        deleted_rows += (df.height() - kept.height()) as u64;
        removed.push(file.path.clone());
        if kept.height() > 0 {
            let folder = file.path.rsplit_once('/').map_or(String::new(), |(dir, _)| format!("{dir}/"));
            kept_parts.push(Part {
                path: format!("{folder}part-{:05}-{tag}.parquet", n + 1),
                values: file.partition_values.clone(),
                data: kept,
            });
        }
    }
    Ok((removed, kept_parts, deleted_rows))
}

/// `mode: merge`: the published rows and the new ones, one row per key: the greatest by
/// `order_by`, the new one on a tie. Published columns the new rows lack are dropped (a breaking
/// change the commit then refuses), and types follow the new rows.
pub(crate) fn merge(new: DataFrame, published: DataFrame, keys: &[String], order_by: &[String]) -> Result<DataFrame> {
    const MARK: &str = "__dagrun_new";
    let err = |e| Error::polars("merging with the published rows", e);
    for column in keys.iter().chain(order_by) {
        if !new.schema().contains(column) {
            return Err(Error::InvalidOutput(format!("merge column `{column}` is not a column of the table")));
        }
    }
    let schema = new.schema().clone();
    let mut old_columns = Vec::with_capacity(schema.len());
    for (name, dtype) in schema.iter() {
        let column = match published.column(name) {
            Ok(c) => c.cast(dtype).map_err(err)?,
            Err(_) => Column::full_null(name.clone(), published.height(), dtype),
        };
        old_columns.push(column);
    }
    let mut old = DataFrame::new(published.height(), old_columns).map_err(err)?;
    old.with_column(Column::new(MARK.into(), vec![false; old.height()])).map_err(err)?;
    let mut new = new;
    new.with_column(Column::new(MARK.into(), vec![true; new.height()])).map_err(err)?;
    new.vstack_mut_owned(old).map_err(err)?;
    let mut by: Vec<PlSmallStr> = order_by.iter().map(|c| c.as_str().into()).collect();
    by.push(MARK.into());
    let sorted = new
        .sort(
            by.clone(),
            SortMultipleOptions::default().with_order_descending(true).with_nulls_last(true).with_maintain_order(true),
        )
        .map_err(err)?;
    let mut merged = sorted.unique_stable(Some(keys), UniqueKeepStrategy::First, None).map_err(err)?;
    merged = merged.drop(MARK).map_err(err)?;
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_written_the_way_delta_statistics_write_them() {
        assert_eq!(delta_timestamp(1_542_837_407_796_000), "2018-11-21T21:56:47.796Z");
        assert_eq!(delta_timestamp(-1000), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn merging_keeps_the_latest_row_per_key_and_the_new_one_on_a_tie() {
        let new = df!("id" => [1i64, 2], "v" => ["new1", "new2"], "t" => [5i64, 3]).unwrap();
        let old = df!("id" => [1i64, 2, 3], "v" => ["old1", "old2", "old3"], "t" => [4i64, 3, 9]).unwrap();
        let merged = merge(new, old, &["id".into()], &["t".into()]).unwrap();
        let merged = merged.sort(["id"], SortMultipleOptions::default()).unwrap();
        let v: Vec<&str> = merged.column("v").unwrap().str().unwrap().iter().flatten().collect();
        assert_eq!(v, ["new1", "new2", "old3"]);
    }

    #[test]
    fn rows_outside_the_runs_days_are_refused() {
        let ts = Column::new("t".into(), [1_541_030_400_000i64, 1_541_116_800_000])
            .cast(&DataType::Datetime(TimeUnit::Milliseconds, None))
            .unwrap();
        let df = DataFrame::new(2, vec![ts]).unwrap();
        let one: BTreeSet<Day> = [Day::parse("2018-11-01").unwrap()].into();
        let err = check_rows_in_days(&df, "t", &one, "plays").unwrap_err().to_string();
        assert!(err.contains("1 day(s) the run does not read, such as 2018-11-02"), "{err}");
        let both: BTreeSet<Day> = one.iter().copied().chain([Day::parse("2018-11-02").unwrap()]).collect();
        check_rows_in_days(&df, "t", &both, "plays").unwrap();
        let b = bounds(&df, "t").unwrap().unwrap();
        assert_eq!(
            (b.min.as_str(), b.max.as_str(), b.nulls),
            ("2018-11-01T00:00:00.000Z", "2018-11-02T00:00:00.000Z", 0)
        );
    }
}
