//! The local engine's one error type. Each variant says whether another attempt could help; the
//! conversion to [`TaskError`] carries that through to the retry loop.

use dagrun_core::engine::TaskError;
use dagrun_core::storage::{Op, StorageError, StorageErrorKind};

/// Why the local engine could not do a task.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing files failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Polars refused an operation (bad SQL, a type mismatch, ...).
    #[error("{context}: {source}")]
    Polars {
        /// What was being done.
        context: String,
        /// What Polars said.
        #[source]
        source: polars::prelude::PolarsError,
    },
    /// A task read a table that is not in memory (its producer did not run in this process).
    #[error("table `{0}` is not available: its task did not run in this run")]
    MissingTable(String),
    /// A column named in the pipeline is not in the table.
    #[error("table `{table}` has no column `{column}` (columns: {available})")]
    MissingColumn {
        /// The table.
        table: String,
        /// The column it lacks.
        column: String,
        /// The columns it has, comma-separated.
        available: String,
    },
    /// A partition value or path cannot be written safely.
    #[error("{0}")]
    InvalidOutput(String),
    /// Too many records were quarantined.
    #[error("{0}")]
    TooManyBadRecords(String),
    /// Source records carry fields the schema does not know (`on_new_fields: fail`).
    #[error("{0}")]
    NewFields(String),
    /// The run was cancelled while this task ran.
    #[error("cancelled")]
    Cancelled,
    /// A worker thread failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A Polars failure while doing `context`.
    pub fn polars(context: impl Into<String>, source: polars::prelude::PolarsError) -> Self {
        Error::Polars { context: context.into(), source }
    }

    /// Whether another attempt could help: a transient storage failure, or a Delta version
    /// another writer took first (the next attempt reads it and commits after it).
    pub fn retryable(&self) -> bool {
        matches!(self, Error::Storage(e) if e.kind == StorageErrorKind::Transient
            || (e.kind == StorageErrorKind::Conflict && matches!(e.action, Op::DeltaCommitting | Op::DeltaCreating)))
    }
}

impl From<Error> for TaskError {
    fn from(e: Error) -> Self {
        TaskError { retryable: e.retryable(), message: e.to_string(), partial: None }
    }
}

/// The local engine's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
