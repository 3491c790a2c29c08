//! Where bytes live: the [`Storage`] trait (listing, reading, writing, publishing a table) with
//! the local disk in [`local`] and S3 in the aws crate; [`Storages`] picks one by path scheme.
//!
//! Publishing a table is a protocol, so that no reader ever sees a half-written table:
//! [`Storage::begin_table`], then every file written where [`Storage::table_file`] says, then
//! [`Storage::commit_table`] (or [`Storage::abort_table`] on failure). Each storage keeps the
//! promise its own way: a folder swap on disk, a manifest written last on S3.

pub mod delta;
pub mod local;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use futures::{StreamExt, stream};
use serde::{Deserialize, Serialize};

use crate::path::{compile_glob, is_s3, join_path};
use crate::slice::{Day, SliceTemplate};

pub use local::LocalStorage;

/// The marker written last into a complete table folder.
pub const SUCCESS_MARKER: &str = "_SUCCESS";
/// The manifest of a published table: which files it holds. Written before `_SUCCESS`. It is also
/// dagrun's mark on a table folder: publishing replaces only a folder that holds a manifest (or
/// [`TABLE_MARKER`], or nothing at all), so it never deletes what dagrun did not create.
pub const MANIFEST: &str = "_manifest.json";
/// Written into a table's place on S3 before its first file, so that the files of a first load
/// that was killed are known as dagrun's own.
pub const TABLE_MARKER: &str = "_dagrun_table";

/// Whether `bytes` are a manifest dagrun wrote.
pub fn is_manifest(bytes: &[u8]) -> bool {
    serde_json::from_slice::<TableManifest>(bytes).is_ok()
}

/// Why a place holding other files is not replaced, for both storages' errors.
pub fn not_a_table_message(first: &str) -> String {
    format!(
        "it holds files that dagrun did not publish (such as `{first}`) and no {MANIFEST}; \
         dagrun only replaces tables it created and never deletes anything else: \
         move those files away or choose another path"
    )
}

/// One listed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Full path or URI.
    pub path: String,
    /// Path relative to the listed root, with `/` separators.
    pub relative: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it last changed, where the storage says.
    pub modified: Option<SystemTime>,
    /// S3 ETag, when the storage has one.
    pub etag: Option<String>,
    /// A local file's identity short of its bytes (device, inode, change and modification
    /// times): while it is the same, so are the bytes (writing or `touch` moves the change
    /// time, which no one can set). Keys the cache of content fingerprints.
    pub identity: Option<String>,
}

/// What went wrong, so callers can tell a retry from a dead end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageErrorKind {
    /// The file, folder, object or bucket is not there.
    NotFound,
    /// The credentials or file permissions do not allow it.
    PermissionDenied,
    /// Throttling, timeouts, resets: worth retrying.
    Transient,
    /// [`Storage::create_new`] found something already there.
    AlreadyExists,
    /// A conditional write or delete found the object changed (S3's 412 Precondition Failed).
    Conflict,
    /// This run no longer holds the lake's lease, so it may not write there ([`Fence`]):
    /// another run took the lake over.
    Fenced,
    /// Anything else: not worth retrying.
    Other,
}

/// What a storage was doing when it failed: named in the message, and telling reads from writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Listing a folder or prefix.
    Listing,
    /// Reading a file or object.
    Reading,
    /// Writing a file or object.
    Writing,
    /// Checking that something is there (HeadBucket, a probe, a marker).
    Checking,
    /// Creating a folder, or an object only if absent.
    Creating,
    /// Swapping a staged table into its place.
    PublishingTo,
    /// Replacing a small object only if unchanged.
    Replacing,
    /// Removing a folder and what is in it.
    Removing,
    /// Removing the files of the table a publish replaced.
    RemovingPrevious,
    /// Making written files a table (the manifest, the marker).
    Publishing,
    /// Parsing a path or URI.
    Parsing,
    /// Taking the lock beside a small local file.
    Locking,
    /// Deleting one file or object.
    Deleting,
    /// Deleting many objects under a prefix.
    DeletingUnder,
    /// Uploading one part of a multipart upload.
    UploadingPart,
    /// Starting a multipart upload.
    StartingUpload,
    /// Refusing to replace a place that is not a table dagrun published.
    RefusingToReplace,
    /// Opening a storage for a path.
    Opening,
    /// Moving a table aside where no atomic swap exists.
    MovingAside,
    /// Following a symbolic link.
    Following,
    /// Reading a Delta table's log.
    DeltaReading,
    /// Creating a Delta table.
    DeltaCreating,
    /// Committing a version of a Delta table.
    DeltaCommitting,
    /// Deleting the files of a Delta table's old versions.
    DeltaVacuuming,
    /// Completing a multipart upload.
    CompletingUpload,
    /// Checking a staged file's size before it is published.
    CheckingStaged,
    /// Listing multipart uploads never completed.
    ListingUploads,
    /// Aborting a multipart upload a killed writer left.
    AbortingUpload,
}

impl Op {
    /// The words messages use: `reading s3://bucket/key: ...`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Op::Listing => "listing",
            Op::Reading => "reading",
            Op::Writing => "writing",
            Op::Checking => "checking",
            Op::Creating => "creating",
            Op::PublishingTo => "publishing to",
            Op::Replacing => "replacing",
            Op::Removing => "removing",
            Op::RemovingPrevious => "removing the previous table at",
            Op::Publishing => "publishing",
            Op::Parsing => "parsing",
            Op::Locking => "locking",
            Op::Deleting => "deleting",
            Op::DeletingUnder => "deleting under",
            Op::UploadingPart => "uploading a part of",
            Op::StartingUpload => "starting the upload of",
            Op::RefusingToReplace => "refusing to replace",
            Op::Opening => "opening",
            Op::MovingAside => "moving aside",
            Op::Following => "following",
            Op::CompletingUpload => "completing the upload of",
            Op::DeltaReading => "reading the Delta table",
            Op::DeltaCreating => "creating the Delta table",
            Op::DeltaCommitting => "committing to the Delta table",
            Op::DeltaVacuuming => "vacuuming the Delta table",
            Op::CheckingStaged => "checking the staged file",
            Op::ListingUploads => "listing the unfinished uploads under",
            Op::AbortingUpload => "aborting the unfinished upload of",
        }
    }

    /// Whether it only reads (so a denial means the credentials may not read).
    pub fn reads(&self) -> bool {
        matches!(
            self,
            Op::Checking
                | Op::CheckingStaged
                | Op::ListingUploads
                | Op::DeltaReading
                | Op::Following
                | Op::Listing
                | Op::Opening
                | Op::Parsing
                | Op::Reading
        )
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A storage failure, with the path and the action that failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{action} {path}: {message}")]
pub struct StorageError {
    /// What kind of failure, to tell a retry from a dead end.
    pub kind: StorageErrorKind,
    /// What was being done.
    pub action: Op,
    /// The file, folder or URI it was done to.
    pub path: String,
    /// What went wrong, in words.
    pub message: String,
}

impl StorageError {
    /// A failure of `action` on `path`.
    pub fn new(kind: StorageErrorKind, action: Op, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { kind, action, path: path.into(), message: message.into() }
    }
}

/// A table being published: where it goes, and the tag (run and attempt) that keeps this
/// attempt's files apart from any other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableWrite {
    /// Where the table is published.
    pub target: String,
    /// Unique to the run, process and attempt writing it.
    pub tag: String,
    /// Where the files go until the table is committed (local: a hidden staging folder).
    pub root: String,
    /// The version of the table's manifest when the write began (S3; `None`: none there): the
    /// commit replaces exactly that one, so that a run frozen meanwhile never publishes over a
    /// newer table.
    pub base: Option<Version>,
}

/// Where one file of a table is written, and its path relative to the table once published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFile {
    /// Where it is written now.
    pub path: String,
    /// Its path relative to the table once published.
    pub relative: String,
}

/// The manifest of a published table (`_manifest.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableManifest {
    /// The table's name.
    pub table: String,
    /// The run that published it.
    pub run_id: String,
    /// Rows in the table.
    pub rows: u64,
    /// Its hive partition columns, in order.
    pub partition_by: Vec<String>,
    /// Every file of the table; readers read exactly these.
    pub files: Vec<ManifestFile>,
    /// The fingerprint of everything the table was made from (inputs and configuration); a
    /// re-run with the same fingerprint can skip the load. See `crate::resume`.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// For a table fed by a sliced extract: the fingerprint of what each day it holds was made
    /// from (`2018-11-05` -> fingerprint). See `crate::slice`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slices: Option<std::collections::BTreeMap<String, String>>,
    /// For such a table: the fingerprint of each file day of the input its rows were read from
    /// (`2018-11-05` -> fingerprint), to tell a changed day's input from one that only grew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_days: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
/// One file of a published table.
pub struct ManifestFile {
    /// Relative to the table folder.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Rows in the file, when the writer counted them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

impl TableManifest {
    /// What must hold before a table is published: no file is named twice, and where the files'
    /// rows are known they add up to the table's rows.
    pub fn check(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::with_capacity(self.files.len());
        for f in &self.files {
            if !seen.insert(f.path.as_str()) {
                return Err(format!("the file {} is listed twice", f.path));
            }
        }
        if self.files.iter().all(|f| f.rows.is_some()) {
            let written: u64 = self.files.iter().filter_map(|f| f.rows).sum();
            if written != self.rows {
                return Err(format!("its files hold {written} rows, but the table has {}", self.rows));
            }
        }
        Ok(())
    }
}

/// The check a run makes before each write that publishes to the lake (a Delta commit, a table
/// swap, `LATEST`): `Ok` only while this process holds the lake's lease with time to spare.
#[async_trait]
pub trait Fence: Send + Sync + std::fmt::Debug {
    /// Fails with [`StorageErrorKind::Fenced`], saying who holds the lake now, once this run may
    /// no longer write there; with the storage's error when the lease cannot be read.
    async fn check(&self) -> Result<(), StorageError>;
}

/// A version of a small object, to change it only if nobody else did in between: an S3 ETag, or
/// a hash of a local file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(pub String);

/// What `validate --env` found for one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessCheck {
    /// The path checked.
    pub path: String,
    /// Whether it can be used as the plan needs.
    pub ok: bool,
    /// What was found, in words.
    pub detail: String,
}

/// Files and folders, local or remote.
#[async_trait]
pub trait Storage: Send + Sync {
    /// Files under `root` whose relative path matches `glob`, sorted by path. Names starting with
    /// `.` or `_` (hidden files, `_SUCCESS`, staging folders) are skipped, as Hadoop and Spark do.
    /// A missing root is an error; an existing root with no matching file is not.
    async fn list(&self, root: &str, glob: &globset::GlobMatcher) -> Result<Vec<ObjectMeta>, StorageError>;

    /// Reads a whole file.
    async fn read(&self, path: &str) -> Result<Vec<u8>, StorageError>;

    /// The size, modification time and version of one file (`relative` is its name).
    async fn head(&self, path: &str) -> Result<ObjectMeta, StorageError>;

    /// Deletes one file; a missing one is fine.
    async fn delete(&self, path: &str) -> Result<(), StorageError>;

    /// Reads many files with at most `concurrency` in flight; results in input order.
    async fn read_many(&self, paths: &[String], concurrency: usize) -> Vec<Result<Vec<u8>, StorageError>> {
        let reads: Vec<_> = paths.iter().map(|p| self.read(p)).collect();
        stream::iter(reads).buffered(concurrency.max(1)).collect().await
    }

    /// Writes a whole file, creating parent folders.
    async fn write(&self, path: &str, data: Vec<u8>) -> Result<(), StorageError>;

    /// Writes many files with at most `concurrency` in flight.
    async fn write_many(&self, files: Vec<(String, Vec<u8>)>, concurrency: usize) -> Result<(), StorageError> {
        let mut writes = Vec::with_capacity(files.len());
        for (path, data) in files {
            writes.push(async move { self.write(&path, data).await });
        }
        let results: Vec<Result<(), StorageError>> =
            stream::iter(writes).buffer_unordered(concurrency.max(1)).collect().await;
        results.into_iter().collect()
    }

    /// Deletes a folder (prefix) and everything under it; a missing one is fine.
    async fn remove_all(&self, path: &str) -> Result<(), StorageError>;

    /// Aborts the multipart uploads under the folder `path` that began before `before` (a killed
    /// writer's: their parts are billed until aborted); returns their paths. A storage without
    /// multipart uploads has none.
    async fn abort_stale_uploads(
        &self,
        _path: &str,
        _before: std::time::SystemTime,
    ) -> Result<Vec<String>, StorageError> {
        Ok(Vec::new())
    }

    /// Starts publishing a table at `target`; `tag` is unique to this run and attempt.
    async fn begin_table(&self, target: &str, tag: &str) -> Result<TableWrite, StorageError>;

    /// Where the file `relative` (e.g. `year=2018/part-00000.parquet`) of a table is written.
    fn table_file(&self, write: &TableWrite, relative: &str) -> TableFile;

    /// Makes the written files the table, atomically for readers, then removes the old files.
    /// `fence` is checked right before the table becomes current.
    async fn commit_table(
        &self,
        write: &TableWrite,
        manifest: &TableManifest,
        fence: Option<&dyn Fence>,
    ) -> Result<(), StorageError>;

    /// Forgets a table that will not be committed; the published table is untouched.
    async fn abort_table(&self, write: &TableWrite, files: &[TableFile]) -> Result<(), StorageError>;

    /// Whether `path` can be read (`write` false) or written (`write` true), without listing
    /// anything unrelated.
    async fn check_access(&self, path: &str, write: bool) -> AccessCheck;

    /// Whether this storage can be reached at all, asked once before a dry run lists anything
    /// (an S3 client without credentials cannot); `Err` says why, once, instead of a failure per
    /// request.
    async fn ready(&self) -> Result<(), String> {
        Ok(())
    }

    /// Creates the small object `path` only if nothing is there (S3 `If-None-Match: *`, on disk an
    /// exclusive create); fails with [`StorageErrorKind::AlreadyExists`] otherwise.
    async fn create_new(&self, path: &str, data: Vec<u8>) -> Result<Version, StorageError>;

    /// Reads a small object and its version.
    async fn read_versioned(&self, path: &str) -> Result<(Vec<u8>, Version), StorageError>;

    /// Replaces `path` only if it is still at `version` (S3 `If-Match`); fails with
    /// [`StorageErrorKind::Conflict`] if it changed, [`StorageErrorKind::NotFound`] if it is gone.
    async fn replace_if(&self, path: &str, data: Vec<u8>, version: &Version) -> Result<Version, StorageError>;

    /// Deletes `path` only if it is still at `version`.
    async fn delete_if(&self, path: &str, version: &Version) -> Result<(), StorageError>;

    /// Removes what runs that ended without finishing (killed, or stopped mid-load) left of the
    /// table at `target`: staging folders and unlinked log temporaries on disk; on S3, Spark's
    /// staging and the data files of the processes in `dead` (lease holders proven dead, which
    /// can never publish them; other writers' unpublished files go when the table is next
    /// published). Only while holding the lake's lease: what is there is listed first, then
    /// `fence` is checked, then only what was listed goes, so that a run frozen anywhere in between
    /// never takes what the run that took the lake over writes. Returns what was removed.
    async fn remove_leftovers(
        &self,
        target: &str,
        dead: &[String],
        fence: Option<&dyn Fence>,
    ) -> Result<Vec<String>, StorageError>;
}

/// Picks the storage for a path: `s3://` URIs go to S3 (when available), the rest to local disk.
#[derive(Clone)]
pub struct Storages {
    /// The local disk.
    pub local: Arc<dyn Storage>,
    /// S3, when a path of the run is on S3 and this build has it.
    pub s3: Option<Arc<dyn Storage>>,
    /// Delta Lake tables, when this build has them.
    pub delta: Option<Arc<dyn delta::DeltaTables>>,
    /// Listings made before the run (to fingerprint inputs), kept for the extract that reads them.
    pub(crate) listings: Arc<Mutex<KeptListings>>,
}

/// Listings by (path, glob).
type KeptListings = HashMap<(String, String), Vec<ObjectMeta>>;

impl Default for Storages {
    fn default() -> Self {
        Self { local: Arc::new(LocalStorage), s3: None, delta: None, listings: Arc::default() }
    }
}

impl Storages {
    /// The storage of `path`: S3 for `s3://` URIs, else the local disk.
    pub fn for_path(&self, path: &str) -> Result<&Arc<dyn Storage>, StorageError> {
        if is_s3(path) {
            self.s3.as_ref().ok_or_else(|| {
                StorageError::new(StorageErrorKind::Other, Op::Opening, path, "S3 is not configured for this run")
            })
        } else {
            Ok(&self.local)
        }
    }

    /// Delta Lake tables, or an error saying this build has none.
    pub fn delta(&self, path: &str) -> Result<&Arc<dyn delta::DeltaTables>, StorageError> {
        self.delta.as_ref().ok_or_else(|| {
            StorageError::new(
                StorageErrorKind::Other,
                Op::Opening,
                path,
                "this build of dagrun has no Delta Lake support (build it with the `delta` feature)",
            )
        })
    }

    /// Lists `path` by `glob` and keeps the listing for one [`Storages::list_once`] of the same
    /// path and glob: the listing that fingerprints an extract's inputs is the one it reads, so
    /// 100,000 small files are listed once per run, and the fingerprint names exactly what was read.
    pub(crate) async fn list_and_keep(&self, path: &str, glob: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let matcher = compile_glob(glob)
            .map_err(|e| StorageError::new(StorageErrorKind::Other, Op::Listing, path, format!("invalid glob: {e}")))?;
        let files = self.for_path(path)?.list(path, &matcher).await?;
        self.listings.lock().expect("listings").insert((path.to_string(), glob.to_string()), files.clone());
        Ok(files)
    }

    /// [`Storages::list_and_keep`] for an extract that may be sliced: with `days`, only the files
    /// of those days (by `template`), found by listing only the folders that hold them.
    pub(crate) async fn list_days_and_keep(
        &self,
        path: &str,
        glob: &str,
        template: Option<&SliceTemplate>,
        days: Option<&std::collections::BTreeSet<Day>>,
    ) -> Result<Vec<ObjectMeta>, StorageError> {
        let (Some(template), Some(days)) = (template, days) else { return self.list_and_keep(path, glob).await };
        let matcher = compile_glob(glob)
            .map_err(|e| StorageError::new(StorageErrorKind::Other, Op::Listing, path, format!("invalid glob: {e}")))?;
        let everything = compile_glob("**").expect("a valid glob");
        let folders: std::collections::BTreeSet<String> = days.iter().map(|d| template.folder_for(*d)).collect();
        let storage = self.for_path(path)?;
        let mut files = Vec::new();
        for folder in folders {
            let listed = match storage.list(&join_path(path, &folder), &everything).await {
                Ok(listed) => listed,
                // A day with no folder has no files.
                Err(e) if e.kind == StorageErrorKind::NotFound && !folder.is_empty() => continue,
                Err(e) => return Err(e),
            };
            for mut f in listed {
                f.relative = format!("{folder}{}", f.relative);
                if matcher.is_match(&f.relative) && template.day_of(&f.relative).is_some_and(|d| days.contains(&d)) {
                    files.push(f);
                }
            }
        }
        files.sort_by(|a, b| a.relative.cmp(&b.relative));
        self.listings.lock().expect("listings").insert((path.to_string(), glob.to_string()), files.clone());
        Ok(files)
    }

    /// The listing kept by [`Storages::list_and_keep`], used once (a retry lists again), or a
    /// fresh one.
    pub async fn list_once(&self, path: &str, glob: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        if let Some(files) = self.listings.lock().expect("listings").remove(&(path.to_string(), glob.to_string())) {
            return Ok(files);
        }
        let matcher = compile_glob(glob)
            .map_err(|e| StorageError::new(StorageErrorKind::Other, Op::Listing, path, format!("invalid glob: {e}")))?;
        self.for_path(path)?.list(path, &matcher).await
    }
}

/// Whether a path component is hidden from readers (`_SUCCESS`, `.staging`, `_dagrun`).
pub fn is_hidden_name(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_kept_listing_serves_one_read_then_listing_is_fresh_again() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("in");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::write(root.join("a/1.json"), "{}").unwrap();
        let root = root.display().to_string();
        let storages = Storages::default();
        let names = |files: Vec<ObjectMeta>| files.into_iter().map(|f| f.relative).collect::<Vec<_>>();

        assert_eq!(names(storages.list_and_keep(&root, "**/*.json").await.unwrap()), ["a/1.json"]);
        std::fs::write(dir.path().join("in/a/2.json"), "{}").unwrap();
        assert_eq!(names(storages.list_once(&root, "**/*.json").await.unwrap()), ["a/1.json"], "the kept listing");
        assert_eq!(names(storages.list_once(&root, "**/*.json").await.unwrap()), ["a/1.json", "a/2.json"]);
        assert_eq!(names(storages.list_once(&root, "*.json").await.unwrap()), Vec::<String>::new(), "per glob");
    }
}
