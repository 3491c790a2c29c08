//! Delta Lake tables (`format: delta`) with delta-rs: reading a table's version as a manifest,
//! committing a load as one Delta commit, history and vacuum. The `_delta_log` goes through
//! dagrun's own storages (see [`store`]), so commits on S3 are conditional writes through
//! aws-sdk-s3, with no DynamoDB.
//!
//! The data files are written by the engine that made the table (Polars, Parquet); this crate
//! only makes them a version. A table is dagrun's when its metadata carries
//! [`TABLE_PROPERTY`]; a table written by another tool is read, but never committed to.

mod error;
mod history;
mod schema;
mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dagrun_core::path::is_s3;
use dagrun_core::storage::Fence;
use dagrun_core::storage::delta::{
    ColumnBounds, Committed, DeltaCommit, DeltaFile, DeltaSnapshot, DeltaTables, DeltaVersion, Orphans, PublishedFile,
    Removing, in_partition_folders,
};
use dagrun_core::storage::{ManifestFile, Op, Storage, StorageError, StorageErrorKind, Storages, TableManifest};
use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties, TableReference};
use deltalake_core::kernel::{Action, Add, Remove};
use deltalake_core::logstore::{StorageConfig, default_logstore};
use deltalake_core::operations::vacuum::VacuumMode;
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use deltalake_core::table::config::TablePropertiesExt;
use deltalake_core::{DeltaTable, ObjectStore};
use futures::TryStreamExt;
use object_store::prefix::PrefixStore;
use url::Url;

pub use error::Error;
use error::Result;

/// The table property that marks a Delta table as dagrun's: its value is the table's name.
pub const TABLE_PROPERTY: &str = "dagrun.table";
/// Delta's table property for how long removed files are kept (other tools' VACUUM reads it).
const RETENTION_PROPERTY: &str = "delta.deletedFileRetentionDuration";

/// `retention` as a Delta interval.
fn interval(retention: Duration) -> String {
    format!("interval {} seconds", retention.as_secs())
}

/// The key of dagrun's entry in a commit's `commitInfo`.
pub(crate) const COMMIT_INFO_KEY: &str = "dagrun";

/// Delta tables on the storages of a run.
pub struct DeltaLake {
    local: Arc<dyn Storage>,
    s3: Option<Arc<dyn Storage>>,
}

impl DeltaLake {
    /// Delta tables on `storages`' local disk and S3.
    pub fn new(storages: &Storages) -> Self {
        Self { local: storages.local.clone(), s3: storages.s3.clone() }
    }

    fn storage(&self, path: &str) -> Result<&Arc<dyn Storage>> {
        if is_s3(path) {
            self.s3.as_ref().ok_or_else(|| Error::refused(Op::Opening, path, "S3 is not configured for this run"))
        } else {
            Ok(&self.local)
        }
    }

    /// The table at `path`, not yet loaded.
    fn open(&self, path: &str) -> Result<DeltaTable> {
        let storage = self.storage(path)?.clone();
        let (root, _) = table_url(path)?;
        self.open_on(path, store::StorageStore::new(storage, root))
    }

    /// The table at `path`, not yet loaded, on a store whose commits first check `fence`; and
    /// where the fence's refusal is kept, if it refuses.
    fn open_fenced(
        &self,
        path: &str,
        fence: Option<Arc<dyn Fence>>,
    ) -> Result<(DeltaTable, Arc<Mutex<Option<StorageError>>>)> {
        let storage = self.storage(path)?.clone();
        let (root, _) = table_url(path)?;
        let store = match fence {
            Some(fence) => store::StorageStore::fenced(storage, root, fence),
            None => store::StorageStore::new(storage, root),
        };
        let refusal = store.refusal();
        Ok((self.open_on(path, store)?, refusal))
    }

    fn open_on(&self, path: &str, store: store::StorageStore) -> Result<DeltaTable> {
        let (_, url) = table_url(path)?;
        let store: Arc<dyn ObjectStore> = Arc::new(store);
        let prefix = object_store::path::Path::from_url_path(url.path())
            .map_err(|e| Error::refused(Op::Opening, path, format!("not a usable table path: {e}")))?;
        let prefixed: Arc<dyn ObjectStore> = Arc::new(PrefixStore::new(store.clone(), prefix));
        let log_store = default_logstore(prefixed, store, &url, &StorageConfig::default());
        Ok(DeltaTable::new(log_store))
    }

    /// The table at `path` loaded at its latest version (or `as_of`); `None` when none is there.
    async fn load(&self, path: &str, as_of: Option<u64>) -> Result<Option<DeltaTable>> {
        let mut table = self.open(path)?;
        let exists = table.verify_deltatable_existence().await.map_err(|e| Error::delta(Op::DeltaReading, path, e))?;
        if !exists {
            return Ok(None);
        }
        match as_of {
            None => table.load().await.map_err(|e| Error::delta(Op::DeltaReading, path, e))?,
            Some(v) => table.load_version(v).await.map_err(|e| Error::delta(Op::DeltaReading, path, e))?,
        }
        Ok(Some(table))
    }

    async fn manifest(&self, path: &str, table: &DeltaTable) -> Result<(TableManifest, Vec<PublishedFile>)> {
        let state = table.snapshot().map_err(|e| Error::delta(Op::DeltaReading, path, e))?;
        let partition_by: Vec<String> = state.metadata().partition_columns().to_vec();
        let name = state.metadata().configuration().get(TABLE_PROPERTY).cloned();
        let views: Vec<_> = table
            .get_active_add_actions_by_partitions(&[])
            .try_collect()
            .await
            .map_err(|e| Error::delta(Op::DeltaReading, path, e))?;
        let mut files = Vec::with_capacity(views.len());
        let mut published = Vec::with_capacity(views.len());
        let mut rows = 0u64;
        let mut counted = true;
        for view in &views {
            let n = view.num_records().map(|n| n as u64);
            match n {
                Some(n) => rows += n,
                None => counted = false,
            }
            let file_path = view.path().into_owned();
            let values = view.partition_values_map();
            published.push(PublishedFile {
                path: file_path.clone(),
                rows: n,
                partition_values: partition_by.iter().map(|c| (c.clone(), values.get(c).cloned().flatten())).collect(),
                bounds: view.stats().map(|s| bounds_of(&s)).unwrap_or_default(),
            });
            files.push(ManifestFile { path: file_path, size: view.size().max(0) as u64, rows: n });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let version = table.version().unwrap_or(0);
        let latest = history::latest_dagrun_commit(self.storage(path)?, path, version).await?;
        let manifest = TableManifest {
            table: name.unwrap_or_else(|| path.rsplit('/').next().unwrap_or(path).to_string()),
            run_id: latest.as_ref().and_then(|c| c.run_id.clone()).unwrap_or_default(),
            rows: if counted { rows } else { 0 },
            partition_by,
            files,
            fingerprint: latest.as_ref().and_then(|c| c.fingerprint.clone()),
            file_days: latest.as_ref().and_then(|c| c.file_days.clone()),
            slices: latest.and_then(|c| c.slices),
        };
        Ok((manifest, published))
    }

    async fn commit_inner(&self, path: &str, commit: DeltaCommit) -> Result<Committed> {
        // A run that lost the lake writes nothing (checked again right before the log entry).
        if let Some(fence) = &commit.fence {
            fence.check().await?;
        }
        let (opened, refusal) = self.open_fenced(path, commit.fence.clone())?;
        // The version the load read, and nothing newer: the commit is exactly the next one.
        let table = match commit.base_version {
            Some(base) => {
                let mut table = opened;
                table.load_version(base).await.map_err(|e| Error::delta(Op::DeltaReading, path, e))?;
                Some(table)
            }
            None => {
                let storage = self.storage(path)?;
                if let Some(latest) = history::version_numbers(storage, path).await?.first() {
                    return Err(conflict(
                        path,
                        format!("a table was created there (version {latest}) after this load found none"),
                    ));
                }
                None
            }
        };
        let new_schema =
            schema::struct_type(&commit.columns).map_err(|m| Error::refused(Op::DeltaCommitting, path, m))?;
        let now = chrono::Utc::now().timestamp_millis();
        let added_rows: u64 = commit.files.iter().map(|f| f.rows).sum();
        let adds: Vec<Action> = commit.files.iter().map(|f| Action::Add(add_action(f, now))).collect();
        // The table's rows after the commit: what stays plus what is added.
        let kept_rows: u64 = match (&table, &commit.removing) {
            (Some(table), Removing::Files(gone)) => {
                let views: Vec<_> = table
                    .get_active_add_actions_by_partitions(&[])
                    .try_collect()
                    .await
                    .map_err(|e| Error::delta(Op::DeltaReading, path, e))?;
                views
                    .iter()
                    .filter(|v| !gone.iter().any(|g| g.as_str() == v.path().as_ref()))
                    .map(|v| v.num_records().unwrap_or(0) as u64)
                    .sum()
            }
            _ => 0,
        };
        let mut info = HashMap::new();
        info.insert(
            COMMIT_INFO_KEY.to_string(),
            serde_json::json!({
                "run_id": commit.run_id,
                "fingerprint": commit.fingerprint,
                "table": commit.table,
                "rows": kept_rows + added_rows,
                "files": commit.files.len(),
                "slices": commit.slices,
                "file_days": commit.file_days,
            }),
        );
        let properties = CommitProperties::default().with_metadata(info);
        let Some(table) = table else {
            let retention = interval(commit.retention);
            let (protocol, metadata) = schema::new_table(
                &new_schema,
                &commit.table,
                &commit.partition_by,
                &[(TABLE_PROPERTY, commit.table.as_str()), (RETENTION_PROPERTY, retention.as_str())],
            )
            .map_err(|m| Error::refused(Op::DeltaCreating, path, m))?;
            let (created, refusal) = self.open_fenced(path, commit.fence.clone())?;
            let log_store = created.log_store();
            let operation = DeltaOperation::Create {
                mode: SaveMode::ErrorIfExists,
                location: log_store.root_url().clone(),
                protocol: protocol.clone(),
                metadata: metadata.clone(),
            };
            let mut actions = vec![Action::Protocol(protocol), Action::Metadata(metadata)];
            actions.extend(adds);
            let version = commit_actions(None, log_store, actions, properties, operation)
                .await
                .map_err(|e| commit_error(Op::DeltaCreating, path, e, &refusal, None))?;
            return Ok(Committed { version, removed_files: 0, added_columns: Vec::new() });
        };
        let state = table.snapshot().map_err(|e| Error::delta(Op::DeltaReading, path, e))?;
        if state.metadata().configuration().get(TABLE_PROPERTY).is_none() {
            return Err(Error::refused(
                Op::DeltaCommitting,
                path,
                format!(
                    "it is a Delta table that dagrun did not create (its metadata has no `{TABLE_PROPERTY}` property); \
                     dagrun never commits to another tool's table: choose another path"
                ),
            ));
        }
        let change = schema::compare(
            state.schema().as_ref(),
            &new_schema,
            state.metadata().partition_columns(),
            &commit.partition_by,
        );
        if !change.breaking.is_empty() && !commit.allow_breaking_schema {
            return Err(Error::refused(
                Op::DeltaCommitting,
                path,
                format!(
                    "the new schema breaks the published one: {}; nothing was committed \
                     (pass --allow-breaking-schema to replace it)",
                    change.breaking.join("; ")
                ),
            ));
        }
        let current: Vec<_> = table
            .get_active_add_actions_by_partitions(&[])
            .try_collect()
            .await
            .map_err(|e| Error::delta(Op::DeltaReading, path, e))?;
        let current: Vec<_> = match &commit.removing {
            Removing::All => current,
            Removing::Files(gone) => {
                let found: Vec<_> =
                    current.into_iter().filter(|f| gone.iter().any(|g| g.as_str() == f.path().as_ref())).collect();
                if found.len() != gone.len() {
                    return Err(Error::refused(
                        Op::DeltaCommitting,
                        path,
                        "a file this load replaces is no longer in the table's current version (another writer \
                         changed it); nothing was committed"
                            .to_string(),
                    ));
                }
                found
            }
        };
        let removed_files = current.len();
        let mut actions: Vec<Action> = current
            .iter()
            .map(|f| {
                let mut remove: Remove = f.remove_action(true);
                remove.deletion_timestamp = Some(now);
                Action::Remove(remove)
            })
            .collect();
        let retention = interval(commit.retention);
        let retention_changed = state.metadata().configuration().get(RETENTION_PROPERTY) != Some(&retention);
        if !change.added.is_empty() || !change.breaking.is_empty() || retention_changed {
            let metadata = schema::metadata(
                state.metadata(),
                &new_schema,
                &commit.partition_by,
                &[(RETENTION_PROPERTY, retention.as_str())],
            )
            .map_err(|m| Error::refused(Op::DeltaCommitting, path, m))?;
            actions.push(Action::Metadata(metadata));
        }
        actions.extend(adds);
        let operation = DeltaOperation::Write {
            mode: match commit.removing {
                Removing::All => SaveMode::Overwrite,
                Removing::Files(_) => SaveMode::Append,
            },
            partition_by: (!commit.partition_by.is_empty()).then(|| commit.partition_by.clone()),
            predicate: commit.predicate.clone(),
        };
        let version = commit_actions(Some(&table), table.log_store(), actions, properties, operation)
            .await
            .map_err(|e| commit_error(Op::DeltaCommitting, path, e, &refusal, commit.base_version))?;
        Ok(Committed { version, removed_files, added_columns: change.added })
    }
}

impl DeltaLake {
    async fn remove_orphans_inner(
        &self,
        path: &str,
        which: Orphans<'_>,
        fence: Option<&dyn Fence>,
    ) -> Result<Vec<String>> {
        // The files first: one that appears after this listing is never taken.
        let storage = self.storage(path)?;
        let glob = dagrun_core::path::compile_glob("**").expect("a valid glob");
        let root = path.trim_end_matches('/');
        let listed = match storage.list(root, &glob).await {
            Ok(listed) => listed,
            Err(e) if e.kind == StorageErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let candidates: Vec<_> =
            listed.into_iter().filter(|o| which.takes(o.relative.rsplit('/').next().unwrap_or_default())).collect();
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        // Then the log: a file committed since the listing is named there.
        let Some(table) = self.load(path, None).await? else { return Ok(Vec::new()) };
        let state = table.snapshot().map_err(|e| Error::delta(Op::DeltaReading, path, e))?;
        if state.metadata().configuration().get(TABLE_PROPERTY).is_none() {
            return Ok(Vec::new());
        }
        let partition_by: Vec<String> = state.metadata().partition_columns().to_vec();
        let mut known: std::collections::HashSet<String> = table
            .get_active_add_actions_by_partitions(&[])
            .map_ok(|f| f.path().into_owned())
            .try_collect()
            .await
            .map_err(|e| Error::delta(Op::DeltaReading, path, e))?;
        let log_store = table.log_store();
        let removed: Vec<String> = state
            .all_tombstones(log_store.as_ref())
            .map_ok(|t| t.path().into_owned())
            .try_collect()
            .await
            .map_err(|e| Error::delta(Op::DeltaReading, path, e))?;
        known.extend(removed);
        let orphans: Vec<String> = candidates
            .into_iter()
            .filter(|o| in_partition_folders(&o.relative, &partition_by))
            .filter(|o| !known.contains(&o.relative))
            .map(|o| format!("{root}/{}", o.relative))
            .collect();
        // Last, the lake must still be this run's.
        if let (Some(fence), false) = (fence, orphans.is_empty()) {
            fence.check().await?;
        }
        for orphan in &orphans {
            storage.delete(orphan).await?;
        }
        Ok(orphans)
    }
}

/// A commit that did not land: refused by the fence (the run lost the lake), taken first by
/// another writer (a conflict the task retries from the new version), or failed.
fn commit_error(
    op: Op,
    path: &str,
    e: deltalake_core::DeltaTableError,
    refusal: &Mutex<Option<StorageError>>,
    base: Option<u64>,
) -> Error {
    if let Some(refused) = refusal.lock().expect("fence").take() {
        return Error::Storage(refused);
    }
    let error = Error::delta(op, path, e);
    match (&error, base) {
        (Error::Table { kind: StorageErrorKind::Conflict, .. }, Some(base)) => conflict(
            path,
            format!("version {} was committed by another writer after this load read version {base}", base + 1),
        ),
        (Error::Table { kind: StorageErrorKind::Conflict, .. }, None) => {
            conflict(path, "another writer created the table first".to_string())
        }
        _ => error,
    }
}

fn conflict(path: &str, what: String) -> Error {
    Error::Table {
        op: Op::DeltaCommitting,
        table: path.to_string(),
        message: format!("{what}; nothing of this load was committed, and it is tried again on the new version"),
        kind: StorageErrorKind::Conflict,
    }
}

/// The store root (`s3://bucket`, or `""` for the local file system) and the table's URL.
/// Commits `actions` as the next version of `table` (or version 0 of a new table) and returns
/// it. delta-rs's post-commit step reloads the table's state to the new version, which parses
/// every action just written (98,000 adds of a table with a file per artist take seconds): that
/// step runs only when it has work to do, a checkpoint being due (every
/// `delta.checkpointInterval` versions). Expired log files are cleaned up at those commits too,
/// which is the only time there is something to clean: logs go only once a checkpoint follows.
async fn commit_actions(
    table: Option<&DeltaTable>,
    log_store: deltalake_core::logstore::LogStoreRef,
    actions: Vec<Action>,
    properties: CommitProperties,
    operation: DeltaOperation,
) -> deltalake_core::DeltaResult<u64> {
    let reference = match table {
        Some(table) => Some(table.snapshot()? as &dyn TableReference),
        None => None,
    };
    let interval = match table {
        Some(table) => table.snapshot()?.config().checkpoint_interval().get(),
        None => u64::MAX,
    };
    // No rebase over versions this load did not read: a version taken first is a conflict.
    let committed = CommitBuilder::from(properties)
        .with_max_retries(0)
        .with_actions(actions)
        .build(reference, log_store, operation)
        .into_prepared_commit_future()
        .await?
        .await?;
    let version = committed.version;
    if (version + 1).is_multiple_of(interval) {
        committed.await?;
    }
    Ok(version as u64)
}

fn table_url(path: &str) -> Result<(String, Url)> {
    let bad = |m: String| Error::refused(Op::Opening, path, m);
    if let Some(rest) = path.strip_prefix("s3://") {
        let bucket = rest.split('/').next().unwrap_or_default();
        let url = Url::parse(&format!("{}/", path.trim_end_matches('/')))
            .map_err(|e| bad(format!("not a valid S3 URI: {e}")))?;
        return Ok((format!("s3://{bucket}"), url));
    }
    let absolute = std::path::absolute(path).map_err(|e| bad(format!("cannot make it absolute: {e}")))?;
    let url = Url::from_directory_path(&absolute).map_err(|()| bad("cannot be a file URL".into()))?;
    Ok((String::new(), url))
}

fn add_action(file: &DeltaFile, now: i64) -> Add {
    Add {
        // The path as named on disk; delta-rs percent-encodes it into the log (a folder named
        // `a%2Fb` is `a%252Fb` there) and readers decode it back.
        path: file.path.clone(),
        partition_values: file.partition_values.iter().cloned().collect(),
        size: file.size as i64,
        modification_time: now,
        data_change: true,
        stats: Some(stats(file)),
        tags: None,
        deletion_vector: None,
        base_row_id: None,
        default_row_commit_version: None,
        clustering_provider: None,
    }
}

/// A file's Delta statistics: its row count, and the bounds dagrun knows.
fn stats(file: &DeltaFile) -> String {
    let mut stats = serde_json::json!({ "numRecords": file.rows });
    if !file.bounds.is_empty() {
        let pick = |f: &dyn Fn(&ColumnBounds) -> serde_json::Value| -> serde_json::Map<String, serde_json::Value> {
            file.bounds.iter().map(|b| (b.column.clone(), f(b))).collect()
        };
        stats["minValues"] = pick(&|b| b.min.clone().into()).into();
        stats["maxValues"] = pick(&|b| b.max.clone().into()).into();
        stats["nullCount"] = pick(&|b| b.nulls.into()).into();
    }
    stats.to_string()
}

/// The text bounds of a file's statistics: (column, min, max) for top-level string-valued ones.
fn bounds_of(stats: &str) -> Vec<(String, String, String)> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(stats) else { return Vec::new() };
    let (Some(min), Some(max)) =
        (v.get("minValues").and_then(|m| m.as_object()), v.get("maxValues").and_then(|m| m.as_object()))
    else {
        return Vec::new();
    };
    min.iter()
        .filter_map(|(k, lo)| {
            let hi = max.get(k)?;
            Some((k.clone(), lo.as_str()?.to_string(), hi.as_str()?.to_string()))
        })
        .collect()
}

#[async_trait]
impl DeltaTables for DeltaLake {
    async fn snapshot(
        &self,
        path: &str,
        as_of: Option<u64>,
    ) -> std::result::Result<Option<DeltaSnapshot>, StorageError> {
        let Some(table) = self.load(path, as_of).await? else { return Ok(None) };
        let (manifest, files) = self.manifest(path, &table).await?;
        Ok(Some(DeltaSnapshot { version: table.version().unwrap_or(0), manifest, files }))
    }

    async fn commit(&self, path: &str, commit: DeltaCommit) -> std::result::Result<Committed, StorageError> {
        Ok(self.commit_inner(path, commit).await?)
    }

    async fn latest_version(&self, path: &str) -> std::result::Result<Option<u64>, StorageError> {
        let storage = self.storage(path).map_err(StorageError::from)?;
        Ok(history::version_numbers(storage, path).await?.first().copied())
    }

    async fn last_load(&self, path: &str) -> std::result::Result<Option<TableManifest>, StorageError> {
        let storage = self.storage(path).map_err(StorageError::from)?;
        let Some(version) = history::version_numbers(storage, path).await?.first().copied() else { return Ok(None) };
        let latest = history::latest_dagrun_commit(storage, path, version).await?;
        Ok(Some(TableManifest {
            table: latest.as_ref().and_then(|c| c.table.clone()).unwrap_or_default(),
            run_id: latest.as_ref().and_then(|c| c.run_id.clone()).unwrap_or_default(),
            rows: latest.as_ref().and_then(|c| c.rows).unwrap_or(0),
            partition_by: Vec::new(),
            files: Vec::new(),
            fingerprint: latest.as_ref().and_then(|c| c.fingerprint.clone()),
            file_days: latest.as_ref().and_then(|c| c.file_days.clone()),
            slices: latest.and_then(|c| c.slices),
        }))
    }

    async fn history(&self, path: &str, limit: Option<usize>) -> std::result::Result<Vec<DeltaVersion>, StorageError> {
        Ok(history::versions(self.storage(path)?, path, limit).await?)
    }

    async fn remove_orphans(
        &self,
        path: &str,
        which: Orphans<'_>,
        fence: Option<&dyn Fence>,
    ) -> std::result::Result<Vec<String>, StorageError> {
        Ok(self.remove_orphans_inner(path, which, fence).await?)
    }

    async fn vacuum(
        &self,
        path: &str,
        retention: Duration,
        fence: Option<&dyn Fence>,
    ) -> std::result::Result<usize, StorageError> {
        let Some(table) = self.load(path, None).await? else { return Ok(0) };
        // Only files the log removed go, which no later version brings back; still, only while
        // the lake is this run's.
        if let Some(fence) = fence {
            fence.check().await?;
        }
        let (_, metrics) = table
            .vacuum()
            .with_mode(VacuumMode::Lite)
            .with_retention_period(chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(7)))
            .with_enforce_retention_duration(false)
            .await
            .map_err(|e| Error::delta(Op::DeltaVacuuming, path, e))?;
        Ok(metrics.files_deleted.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_urls_put_local_tables_under_the_file_system_root() {
        let (root, url) = table_url("/tmp/lake/songs").unwrap();
        assert_eq!(root, "");
        assert_eq!(url.as_str(), "file:///tmp/lake/songs/");
        let (root, url) = table_url("s3://lake/out/songs").unwrap();
        assert_eq!(root, "s3://lake");
        assert_eq!(url.as_str(), "s3://lake/out/songs/");
    }
}
