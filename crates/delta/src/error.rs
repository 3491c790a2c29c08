//! The delta crate's one error type; it becomes a [`StorageError`] at the [`DeltaTables`] seam,
//! naming the table and what was being done to it.
//!
//! [`DeltaTables`]: dagrun_core::storage::delta::DeltaTables

use dagrun_core::storage::{Op, StorageError, StorageErrorKind};

/// What went wrong with a Delta table.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Something done to a table failed, or a table cannot be used as asked (foreign, corrupt, a
    /// schema that would break it).
    #[error("{op} {table}: {message}")]
    Table {
        /// What was being done.
        op: Op,
        /// The table's path.
        table: String,
        /// What is wrong, and what to do.
        message: String,
        /// Conflict when another writer took the version first; NotFound; Other.
        kind: StorageErrorKind,
    },
    /// The storage underneath failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The delta crate's results.
pub(crate) type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A table that cannot be used as asked.
    pub(crate) fn refused(op: Op, table: &str, message: impl Into<String>) -> Self {
        Error::Table { op, table: table.into(), message: message.into(), kind: StorageErrorKind::Other }
    }

    /// delta-rs failed at `op`.
    pub(crate) fn delta(op: Op, table: &str, e: deltalake_core::DeltaTableError) -> Self {
        use deltalake_core::DeltaTableError as E;
        let kind = match &e {
            E::VersionAlreadyExists(_) | E::Transaction { .. } | E::CommitValidation { .. } => {
                StorageErrorKind::Conflict
            }
            E::ObjectStore { source: object_store::Error::NotFound { .. } } => StorageErrorKind::NotFound,
            // dagrun's own storage error inside: keep its kind (a retry only where it helps).
            E::ObjectStore { source: object_store::Error::Generic { source, .. } } => {
                source.downcast_ref::<StorageError>().map_or(StorageErrorKind::Other, |s| s.kind)
            }
            _ => StorageErrorKind::Other,
        };
        // The first line only: kernel errors carry a backtrace when RUST_BACKTRACE is set.
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default().trim_end();
        let message = match &e {
            E::InvalidJsonLog { .. }
            | E::InvalidStatsJson { .. }
            | E::SerializeLogJson { .. }
            | E::KernelError(_)
            | E::Kernel { .. } => {
                format!("its _delta_log is corrupt or not one dagrun can read ({first}); it is left as it is")
            }
            _ if kind == StorageErrorKind::Conflict => format!(
                "{first}: another writer committed to the table first; nothing of this load was published \
                 (run again to write on top of its version)"
            ),
            _ => first.to_string(),
        };
        Error::Table { op, table: table.into(), message, kind }
    }
}

impl From<Error> for StorageError {
    fn from(e: Error) -> Self {
        match e {
            Error::Storage(e) => e,
            Error::Table { op, table, message, kind } => StorageError::new(kind, op, table, message),
        }
    }
}
