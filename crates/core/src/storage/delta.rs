//! The seam to Delta Lake tables (`format: delta`). Core decides what to read and when to commit;
//! the `dagrun-delta` crate does it with delta-rs. Behind a trait, so that core stays free of
//! delta-rs and Arrow, and a build without the `delta` feature says so at the load that needs it.
//!
//! A Delta table is read here as a [`TableManifest`] of its current (or an older) version: the
//! same view the Parquet convention's `_manifest.json` gives, so that resume, relationship checks
//! and report queries read both formats one way.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::Fence;
use super::{StorageError, TableManifest};

/// The folder of a table's Delta log, relative to the table.
pub const DELTA_LOG: &str = "_delta_log";

/// One column of a table, typed in Delta's primitive type names (`string`, `long`, `integer`,
/// `short`, `byte`, `double`, `float`, `boolean`, `date`, `timestamp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaColumn {
    /// The column's name.
    pub name: String,
    /// Delta's name of its type.
    pub ty: String,
}

/// A data file written for a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaFile {
    /// Its path relative to the table, as named on disk (`year=2018/part-00000-<tag>.parquet`).
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its row count.
    pub rows: u64,
    /// Its partition values in `partition_by` order: the raw values (not escaped), `None` for null.
    pub partition_values: Vec<(String, Option<String>)>,
    /// The least and greatest values of some columns, written as the file's Delta statistics
    /// (readers skip files by them; dagrun finds the files that hold a day by them).
    pub bounds: Vec<ColumnBounds>,
}

/// A column's least and greatest value in one file, as Delta statistics write them (timestamps as
/// `2018-11-05T21:01:46.796Z`), and how many of its values are null.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnBounds {
    /// The column.
    pub column: String,
    /// Its least value.
    pub min: String,
    /// Its greatest value.
    pub max: String,
    /// How many of its values are null.
    pub nulls: u64,
}

/// Which files of the current version a commit removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removing {
    /// Every file: the commit's files become the table's whole content.
    All,
    /// These files (paths relative to the table); the rest stay, beside the commit's files.
    Files(Vec<String>),
}

/// A file of a published version, with what dagrun needs to rewrite part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedFile {
    /// Its path relative to the table.
    pub path: String,
    /// Its rows, when the log counts them.
    pub rows: Option<u64>,
    /// Its partition values (raw; `None` for null), by column.
    pub partition_values: Vec<(String, Option<String>)>,
    /// The bounds its statistics give, by column (`min`, `max` as written in the log).
    pub bounds: Vec<(String, String, String)>,
}

/// One load's change to a table, made in one Delta commit.
#[derive(Debug, Clone)]
pub struct DeltaCommit {
    /// The table's name (for messages and the commit's metadata).
    pub table: String,
    /// The run that commits.
    pub run_id: String,
    /// The fingerprint of the load (see [`crate::resume`]).
    pub fingerprint: Option<String>,
    /// The table's columns, partition columns included.
    pub columns: Vec<DeltaColumn>,
    /// The partition columns, in folder order.
    pub partition_by: Vec<String>,
    /// The files that become the table's content.
    pub files: Vec<DeltaFile>,
    /// Accept a schema that drops or retypes a column of the published table.
    pub allow_breaking_schema: bool,
    /// How long replaced files are kept: the table's `delta.deletedFileRetentionDuration`, which
    /// other tools' VACUUM respects too.
    pub retention: Duration,
    /// What of the current version goes.
    pub removing: Removing,
    /// The table's day fingerprints after this commit, when a sliced extract feeds it.
    pub slices: Option<std::collections::BTreeMap<String, String>>,
    /// The fingerprints of the input's file days its rows were read from, likewise.
    pub file_days: Option<std::collections::BTreeMap<String, String>>,
    /// What the commit replaces, in words, for the log's `operationParameters` (`start_time on
    /// 2018-11-05`).
    pub predicate: Option<String>,
    /// The version the load read (`None`: no table was there). The commit lands as exactly the
    /// next version or not at all: a table changed since is a conflict, never rebased over, and
    /// the task retries from the new version.
    pub base_version: Option<u64>,
    /// Checked right before the commit's log entry is written: the run still holds the lake.
    pub fence: Option<Arc<dyn Fence>>,
}

/// Which data files of a table no version names may be deleted. Only files dagrun names
/// (`part-NNNNN-<run>-<process>-<attempt>.parquet`), in the table's partition folders (none
/// other: another tool's files, or a lake someone put inside the table, are never touched), and
/// only those of writers that can no longer commit them.
#[derive(Debug, Clone, Copy)]
pub enum Orphans<'a> {
    /// Files written by these processes (lease tokens): their lease was taken over with proof
    /// that they are dead.
    OfDead(&'a [String]),
    /// Files of every writer but this attempt (its `<run>-<process>-<attempt>` tag), right after
    /// this run committed the table under the lake's lease: a writer that lost the lease read an
    /// older version and can only commit the version after it, which is taken now.
    AfterCommit {
        /// This attempt's tag.
        tag: &'a str,
    },
}

impl Orphans<'_> {
    /// Whether a file named `name` (no folder) is one these orphans take.
    pub fn takes(&self, name: &str) -> bool {
        let Some((run, process, attempt)) = parse_data_file(name) else { return false };
        match self {
            Orphans::OfDead(dead) => dead.iter().any(|d| d == process),
            Orphans::AfterCommit { tag } => format!("{run}-{process}-{attempt}") != *tag,
        }
    }
}

/// The (run, process, attempt) of a data file named the way dagrun names them:
/// `part-00000-20261202T015837Z-0c8e-f179a0b8-1.parquet`.
pub fn parse_data_file(name: &str) -> Option<(&str, &str, &str)> {
    let rest = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let (number, tag) = rest.split_once('-')?;
    if number.len() != 5 || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (head, attempt) = tag.rsplit_once('-')?;
    let (run, process) = head.rsplit_once('-')?;
    let ok =
        !attempt.is_empty() && attempt.bytes().all(|b| b.is_ascii_digit()) && !process.is_empty() && !run.is_empty();
    ok.then_some((run, process, attempt))
}

/// Whether `relative` (a path inside a table) lies in the table's partition folders: exactly one
/// `column=value` folder per partition column, in order (a file at the top for an unpartitioned
/// table).
pub fn in_partition_folders(relative: &str, partition_by: &[String]) -> bool {
    let mut parts: Vec<&str> = relative.split('/').collect();
    parts.pop();
    parts.len() == partition_by.len()
        && parts
            .iter()
            .zip(partition_by)
            .all(|(folder, column)| folder.strip_prefix(column.as_str()).is_some_and(|rest| rest.starts_with('=')))
}

/// What a commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The table's new version.
    pub version: u64,
    /// Files of the previous version that the commit removed.
    pub removed_files: usize,
    /// Columns added to the published schema (a schema that only adds nullable columns evolves).
    pub added_columns: Vec<String>,
}

/// A published Delta version, as `dagrun history` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaVersion {
    /// The version number.
    pub version: u64,
    /// When it was committed, in milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
    /// The operation (`CREATE TABLE`, `WRITE`, `VACUUM START`, ...).
    pub operation: String,
    /// The dagrun run that committed it, if dagrun did.
    pub run_id: Option<String>,
    /// The rows of the table after it, if dagrun committed it.
    pub rows: Option<u64>,
}

/// A table at one version.
#[derive(Debug, Clone)]
pub struct DeltaSnapshot {
    /// The version read.
    pub version: u64,
    /// Its files, rows and, for dagrun's commits, run and fingerprint.
    pub manifest: TableManifest,
    /// Its files with their partition values and statistics.
    pub files: Vec<PublishedFile>,
}

/// Reads and commits Delta tables, on disk and on S3.
#[async_trait]
pub trait DeltaTables: Send + Sync {
    /// The table at `path` at its latest version, or at `as_of`. `Ok(None)` when no Delta table is
    /// there; an error when one is there but cannot be read (a corrupt or foreign log), naming it.
    async fn snapshot(&self, path: &str, as_of: Option<u64>) -> Result<Option<DeltaSnapshot>, StorageError>;

    /// Adds `commit.files` to the table in one commit that also removes `commit.removing` (all
    /// files of the current version, or some). Creates the table when none is there. A table whose log
    /// dagrun did not write, or whose schema `commit` would break, is refused, naming the table.
    async fn commit(&self, path: &str, commit: DeltaCommit) -> Result<Committed, StorageError>;

    /// The table's latest version, from the names in its log alone (no replay), or `None` when
    /// no Delta table is there.
    async fn latest_version(&self, path: &str) -> Result<Option<u64>, StorageError>;

    /// What dagrun recorded of the load that made the table's latest version (run, fingerprint,
    /// days, rows), read from that commit alone, without replaying the log: what resume needs.
    /// Its `files` are empty. `None` when no Delta table is there.
    async fn last_load(&self, path: &str) -> Result<Option<TableManifest>, StorageError>;

    /// The table's versions, newest first, at most `limit`.
    async fn history(&self, path: &str, limit: Option<usize>) -> Result<Vec<DeltaVersion>, StorageError>;

    /// Deletes the files that versions older than `retention` removed; returns how many. Only
    /// while `fence` says the run holds the lake.
    async fn vacuum(&self, path: &str, retention: Duration, fence: Option<&dyn Fence>) -> Result<usize, StorageError>;

    /// Deletes the data files that loads which never committed left in dagrun's table at `path`
    /// (a run killed, or frozen and taken over, before its commit): the files `which` takes that
    /// neither the current version nor a removal the log still keeps knows. Only while holding
    /// the lake's lease: the files are listed first, the log read next, `fence` checked last, and
    /// only listed files go, so that a run frozen anywhere in between never takes a file the run
    /// that took the lake over writes or commits. Returns what was deleted.
    async fn remove_orphans(
        &self,
        path: &str,
        which: Orphans<'_>,
        fence: Option<&dyn Fence>,
    ) -> Result<Vec<String>, StorageError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_dagrun_named_in_partition_folders_of_writers_that_cannot_commit_are_orphans() {
        let name = "part-00000-20261202T015837Z-0c8e-f179a0b8-1.parquet";
        assert_eq!(parse_data_file(name), Some(("20261202T015837Z-0c8e", "f179a0b8", "1")));
        assert_eq!(parse_data_file("part-00003-my-run-id-f179a0b8-12.parquet"), Some(("my-run-id", "f179a0b8", "12")));
        assert_eq!(parse_data_file("part-00000.parquet"), None, "the Parquet convention's name");
        assert_eq!(parse_data_file("part-00000-1c2d-c000.snappy.parquet"), None, "Spark's");
        assert_eq!(parse_data_file("part-00000-x.csv"), None);
        assert_eq!(parse_data_file("part-0000a-r-p-1.parquet"), None);
        let dead = ["f179a0b8".to_string()];
        assert!(Orphans::OfDead(&dead).takes(name));
        assert!(!Orphans::OfDead(&dead).takes("part-00000-r-aaaaaaaa-1.parquet"));
        let mine = Orphans::AfterCommit { tag: "20261202T015837Z-0c8e-f179a0b8-2" };
        assert!(mine.takes(name), "an earlier attempt of this run is done");
        assert!(!mine.takes("part-00007-20261202T015837Z-0c8e-f179a0b8-2.parquet"), "this attempt's own");
        let by = ["year".to_string(), "month".to_string()];
        assert!(in_partition_folders("year=2018/month=11/x.parquet", &by));
        assert!(!in_partition_folders("exports/2018/x.parquet", &by));
        assert!(!in_partition_folders("songplays/year=2018/month=11/x.parquet", &by), "a lake inside the table");
        assert!(!in_partition_folders("year=2018/x.parquet", &by));
        assert!(in_partition_folders("x.parquet", &[]));
        assert!(!in_partition_folders("sub/x.parquet", &[]));
    }
}
