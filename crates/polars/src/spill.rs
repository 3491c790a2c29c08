//! Tables between tasks: held in memory, or, when larger than the engine's spill threshold,
//! written once to a local Parquet file in a temporary folder of the run. A transform reads a
//! spilled table lazily, so its filter and its choice of columns reach into the file and only
//! what it needs is loaded; the file is deleted when the last task that reads the table is done,
//! and the folder when the run ends.

use std::path::PathBuf;
use std::sync::Arc;

use polars::prelude::*;

use crate::error::{Error, Result};

/// A table produced by a task of this run.
#[derive(Clone)]
pub(crate) enum Table {
    Memory(DataFrame),
    Spilled(Arc<Spilled>),
}

/// A table kept in a local Parquet file; the file goes when the last reference does.
pub(crate) struct Spilled {
    pub path: PathBuf,
    pub rows: usize,
}

impl Drop for Spilled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Table {
    pub(crate) fn height(&self) -> usize {
        match self {
            Table::Memory(df) => df.height(),
            Table::Spilled(s) => s.rows,
        }
    }

    /// The table as a lazy query: a spilled table is scanned, so filters and projections are
    /// pushed into the read.
    pub(crate) fn lazy(&self) -> Result<LazyFrame> {
        match self {
            Table::Memory(df) => Ok(df.clone().lazy()),
            Table::Spilled(s) => {
                let path = PlRefPath::try_from_path(&s.path)
                    .map_err(|e| Error::polars(format!("reading the spilled table {}", s.path.display()), e))?;
                // The scan must not outlive the file: readers hold the `Arc` while they run.
                LazyFrame::scan_parquet(path, ScanArgsParquet::default())
                    .map_err(|e| Error::polars(format!("reading the spilled table {}", s.path.display()), e))
            }
        }
    }

    /// The whole table in memory (blocking: call it on the workers).
    pub(crate) fn materialize(&self) -> Result<DataFrame> {
        match self {
            Table::Memory(df) => Ok(df.clone()),
            Table::Spilled(s) => {
                let df = self
                    .lazy()?
                    .collect()
                    .map_err(|e| Error::polars(format!("reading the spilled table {}", s.path.display()), e))?;
                Ok(crate::rechunk(df))
            }
        }
    }
}

/// Rows per row group of a spill file: written one at a time, so writing holds one row group's
/// pages rather than a second copy of the table.
const ROW_GROUP_ROWS: usize = 256 * 1024;

/// Writes `df` to `path` (blocking: call it on the workers). LZ4 keeps it fast to write and read;
/// statistics let a filter skip row groups.
pub(crate) fn spill(df: DataFrame, path: PathBuf) -> Result<Spilled> {
    let rows = df.height();
    let file = std::fs::File::create(&path)
        .map_err(|e| Error::Internal(format!("spilling a table to {}: {e}", path.display())))?;
    // From here on the file is removed if anything fails.
    let spilled = Spilled { path, rows };
    let fail = |e| Error::polars(format!("spilling a table to {}", spilled.path.display()), e);
    let mut writer = ParquetWriter::new(std::io::BufWriter::with_capacity(1 << 20, file))
        .with_compression(ParquetCompression::Lz4Raw)
        .with_statistics(StatisticsOptions::default())
        .batched(df.schema())
        .map_err(fail)?;
    let mut offset = 0;
    while offset < rows {
        let n = ROW_GROUP_ROWS.min(rows - offset);
        writer.write_batch(&df.slice(offset as i64, n)).map_err(fail)?;
        offset += n;
    }
    writer.finish().map_err(fail)?;
    Ok(spilled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spilled_table_reads_back_equal_filters_into_the_file_and_is_deleted_with_its_last_reader() {
        let dir = tempfile::tempdir().unwrap();
        let df = df!(
            "page" => ["NextSong", "Home", "NextSong", "Logout"],
            "agent" => ["\"Mozilla/5.0 (X11)\"", "a", "\"Mozilla/5.0 (X11)\"", "b"],
            "n" => [1i64, 2, 3, 4]
        )
        .unwrap();
        let path = dir.path().join("events.parquet");
        let table = Table::Spilled(Arc::new(spill(df.clone(), path.clone()).unwrap()));
        assert_eq!(table.height(), 4);
        assert!(table.materialize().unwrap().equals(&df));
        let plays = table.lazy().unwrap().filter(col("page").eq(lit("NextSong"))).select([col("n")]).collect().unwrap();
        assert_eq!(plays.column("n").unwrap().i64().unwrap().to_vec(), vec![Some(1), Some(3)]);
        let reader = table.clone();
        drop(table);
        assert!(path.exists(), "a reader still holds it");
        drop(reader);
        assert!(!path.exists());
    }
}
