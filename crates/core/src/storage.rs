//! Where bytes live: the [`Storage`] trait (listing, reading, writing, atomic publish) and its
//! local-disk implementation. S3 lives in the aws crate; [`Storages`] picks one by path scheme.
//!
//! The publish convention: a table is written completely under a staging folder next to its final
//! place, with a `_SUCCESS` marker written last, then swapped in. On Linux the swap is one
//! `renameat2(RENAME_EXCHANGE)`, so a reader sees the old table or the new one, never a mix and
//! never nothing; the old files are deleted afterwards.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use futures::{StreamExt, stream};

use crate::engine::TaskError;

/// The marker written last into a complete table folder.
pub const SUCCESS_MARKER: &str = "_SUCCESS";

/// One listed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Full path or URI.
    pub path: String,
    /// Path relative to the listed root, with `/` separators.
    pub relative: String,
    pub size: u64,
    pub modified: Option<SystemTime>,
    /// S3 ETag, when the storage has one.
    pub etag: Option<String>,
}

/// What went wrong, so callers can tell a retry from a dead end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageErrorKind {
    NotFound,
    PermissionDenied,
    /// Throttling, timeouts, resets: worth retrying.
    Transient,
    Other,
}

/// A storage failure, with the path and the action that failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{action} {path}: {message}")]
pub struct StorageError {
    pub kind: StorageErrorKind,
    /// e.g. "reading", "listing", "publishing to".
    pub action: &'static str,
    pub path: String,
    pub message: String,
}

impl StorageError {
    pub fn new(
        kind: StorageErrorKind,
        action: &'static str,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self { kind, action, path: path.into(), message: message.into() }
    }

    pub fn from_io(action: &'static str, path: &Path, error: &io::Error) -> Self {
        let kind = match error.kind() {
            io::ErrorKind::NotFound => StorageErrorKind::NotFound,
            io::ErrorKind::PermissionDenied => StorageErrorKind::PermissionDenied,
            io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                StorageErrorKind::Transient
            }
            _ => StorageErrorKind::Other,
        };
        let message = match kind {
            StorageErrorKind::NotFound => "no such file or folder".to_string(),
            StorageErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => error.to_string(),
        };
        Self::new(kind, action, path.display().to_string(), message)
    }
}

impl From<StorageError> for TaskError {
    fn from(e: StorageError) -> Self {
        TaskError { retryable: e.kind == StorageErrorKind::Transient, message: e.to_string(), partial: None }
    }
}

/// Files and folders, local or remote.
#[async_trait]
pub trait Storage: Send + Sync {
    /// Files under `root` whose relative path matches `glob`, sorted by path. Names starting with
    /// `.` or `_` (hidden files, `_SUCCESS`, staging folders) are skipped, as Hadoop and Spark do.
    /// A missing root is an error; an empty one is not.
    async fn list(&self, root: &str, glob: &globset::GlobMatcher) -> Result<Vec<ObjectMeta>, StorageError>;

    async fn read(&self, path: &str) -> Result<Vec<u8>, StorageError>;

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

    /// Makes the complete table at `staging` the table at `target`, atomically for readers.
    async fn publish(&self, staging: &str, target: &str) -> Result<(), StorageError>;

    /// Deletes a folder (prefix) and everything under it; a missing one is fine.
    async fn remove_all(&self, path: &str) -> Result<(), StorageError>;

    async fn exists(&self, path: &str) -> Result<bool, StorageError>;
}

/// Picks the storage for a path: `s3://` URIs go to S3 (when available), the rest to local disk.
#[derive(Clone)]
pub struct Storages {
    pub local: Arc<dyn Storage>,
    pub s3: Option<Arc<dyn Storage>>,
}

impl Default for Storages {
    fn default() -> Self {
        Self { local: Arc::new(LocalStorage), s3: None }
    }
}

impl Storages {
    pub fn for_path(&self, path: &str) -> Result<&Arc<dyn Storage>, StorageError> {
        if path.starts_with("s3://") {
            self.s3.as_ref().ok_or_else(|| {
                StorageError::new(StorageErrorKind::Other, "opening", path, "S3 support is not available in this build")
            })
        } else {
            Ok(&self.local)
        }
    }
}

/// The staging folder for a table at `target`: a hidden sibling, so the final rename stays on one
/// file system and listings of the parent skip it.
pub fn staging_path(target: &str, run_id: &str) -> String {
    let trimmed = target.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some((parent, name)) => format!("{parent}/.{name}.staging-{run_id}"),
        None => format!(".{trimmed}.staging-{run_id}"),
    }
}

/// The local file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalStorage;

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

fn skipped_name(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('_')
}

fn list_local(root: &Path, glob: &globset::GlobMatcher) -> Result<Vec<ObjectMeta>, StorageError> {
    let meta = std::fs::metadata(root).map_err(|e| StorageError::from_io("listing", root, &e))?;
    if !meta.is_dir() {
        return Err(StorageError::new(StorageErrorKind::Other, "listing", root.display().to_string(), "not a folder"));
    }
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| StorageError::from_io("listing", &dir, &e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::from_io("listing", &dir, &e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if skipped_name(&name) {
                continue;
            }
            let relative = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
            let path = entry.path();
            let file_type = entry.file_type().map_err(|e| StorageError::from_io("listing", &path, &e))?;
            let meta = if file_type.is_symlink() { std::fs::metadata(&path).ok() } else { entry.metadata().ok() };
            let Some(meta) = meta else { continue };
            if meta.is_dir() {
                stack.push((path, relative));
            } else if glob.is_match(&relative) {
                out.push(ObjectMeta {
                    path: path.display().to_string(),
                    relative,
                    size: meta.len(),
                    modified: meta.modified().ok(),
                    etag: None,
                });
            }
        }
    }
    out.sort_by(|a, b| a.relative.cmp(&b.relative));
    Ok(out)
}

/// Swaps two folders atomically (Linux `renameat2(RENAME_EXCHANGE)`).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let a = CString::new(a.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let b = CString::new(b.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

fn publish_local(staging: &Path, target: &Path) -> Result<(), StorageError> {
    if !staging.join(SUCCESS_MARKER).exists() {
        return Err(StorageError::new(
            StorageErrorKind::Other,
            "publishing",
            staging.display().to_string(),
            "the staged table is incomplete (no _SUCCESS marker)",
        ));
    }
    match std::fs::symlink_metadata(target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return std::fs::rename(staging, target).map_err(|e| StorageError::from_io("publishing to", target, &e));
        }
        Err(e) => return Err(StorageError::from_io("publishing to", target, &e)),
        Ok(meta) if !meta.is_dir() => {
            return Err(StorageError::new(
                StorageErrorKind::Other,
                "publishing to",
                target.display().to_string(),
                "exists and is not a folder",
            ));
        }
        Ok(_) => {}
    }
    match exchange(staging, target) {
        // `staging` now holds the previous table.
        Ok(()) => std::fs::remove_dir_all(staging)
            .map_err(|e| StorageError::from_io("removing the previous table at", staging, &e)),
        Err(_) => {
            // No atomic exchange here: move the old table aside, then the new one in. Readers may
            // briefly find no table, but never a mix.
            let aside = PathBuf::from(format!("{}.old", staging.display()));
            std::fs::rename(target, &aside).map_err(|e| StorageError::from_io("moving aside", target, &e))?;
            if let Err(e) = std::fs::rename(staging, target) {
                let _ = std::fs::rename(&aside, target);
                return Err(StorageError::from_io("publishing to", target, &e));
            }
            std::fs::remove_dir_all(&aside)
                .map_err(|e| StorageError::from_io("removing the previous table at", &aside, &e))
        }
    }
}

#[async_trait]
impl Storage for LocalStorage {
    async fn list(&self, root: &str, glob: &globset::GlobMatcher) -> Result<Vec<ObjectMeta>, StorageError> {
        let root = PathBuf::from(root);
        let glob = glob.clone();
        blocking(move || list_local(&root, &glob)).await
    }

    async fn read(&self, path: &str) -> Result<Vec<u8>, StorageError> {
        let path = PathBuf::from(path);
        blocking(move || std::fs::read(&path).map_err(|e| StorageError::from_io("reading", &path, &e))).await
    }

    async fn read_many(&self, paths: &[String], concurrency: usize) -> Vec<Result<Vec<u8>, StorageError>> {
        // Small local files: a few threads each reading a contiguous share beats one task per file.
        let paths: Arc<Vec<String>> = Arc::new(paths.to_vec());
        let workers = concurrency.clamp(1, 16).min(paths.len().max(1));
        let chunk = paths.len().div_ceil(workers).max(1);
        let mut handles = Vec::new();
        for w in 0..workers {
            let paths = paths.clone();
            handles.push(tokio::task::spawn_blocking(move || {
                let start = (w * chunk).min(paths.len());
                let end = ((w + 1) * chunk).min(paths.len());
                paths[start..end]
                    .iter()
                    .map(|p| std::fs::read(p).map_err(|e| StorageError::from_io("reading", Path::new(p), &e)))
                    .collect::<Vec<_>>()
            }));
        }
        let mut out = Vec::with_capacity(paths.len());
        for h in handles {
            match h.await {
                Ok(mut part) => out.append(&mut part),
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
        out
    }

    async fn write(&self, path: &str, data: Vec<u8>) -> Result<(), StorageError> {
        let path = PathBuf::from(path);
        blocking(move || {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| StorageError::from_io("creating", parent, &e))?;
            }
            std::fs::write(&path, data).map_err(|e| StorageError::from_io("writing", &path, &e))
        })
        .await
    }

    async fn publish(&self, staging: &str, target: &str) -> Result<(), StorageError> {
        let staging = PathBuf::from(staging);
        let target = PathBuf::from(target.trim_end_matches('/'));
        blocking(move || publish_local(&staging, &target)).await
    }

    async fn remove_all(&self, path: &str) -> Result<(), StorageError> {
        let path = PathBuf::from(path);
        blocking(move || match std::fs::remove_dir_all(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StorageError::from_io("removing", &path, &e)),
            _ => Ok(()),
        })
        .await
    }

    async fn exists(&self, path: &str) -> Result<bool, StorageError> {
        let path = PathBuf::from(path);
        blocking(move || Ok(path.exists())).await
    }
}

/// Compiles a glob the way listings match it: `*` stays within one folder, `**` crosses folders.
pub fn compile_glob(glob: &str) -> Result<globset::GlobMatcher, globset::Error> {
    Ok(globset::GlobBuilder::new(glob).literal_separator(true).build()?.compile_matcher())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, f.as_bytes()).unwrap();
        }
        dir
    }

    #[tokio::test]
    async fn lists_matching_files_sorted_and_skips_hidden_ones() {
        let dir = tree(&["b/x.json", "a/y.json", "a/.DS_Store", "_SUCCESS", "a/z.txt", "a/deep/w.json"]);
        let root = dir.path().display().to_string();
        let found = LocalStorage.list(&root, &compile_glob("*/*.json").unwrap()).await.unwrap();
        let rel: Vec<_> = found.iter().map(|o| o.relative.as_str()).collect();
        assert_eq!(rel, vec!["a/y.json", "b/x.json"]);
        let all = LocalStorage.list(&root, &compile_glob("**").unwrap()).await.unwrap();
        assert_eq!(all.len(), 4);
    }

    #[tokio::test]
    async fn missing_root_is_not_found_but_empty_root_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let glob = compile_glob("**").unwrap();
        assert!(LocalStorage.list(&dir.path().display().to_string(), &glob).await.unwrap().is_empty());
        let err = LocalStorage.list(&dir.path().join("nope").display().to_string(), &glob).await.unwrap_err();
        assert_eq!(err.kind, StorageErrorKind::NotFound);
        assert!(err.to_string().starts_with("listing "), "{err}");
    }

    #[tokio::test]
    async fn publish_swaps_in_the_new_table_and_drops_the_old() {
        let dir = tree(&["t/old.parquet", ".t.staging-r1/new.parquet", ".t.staging-r1/_SUCCESS"]);
        let target = dir.path().join("t").display().to_string();
        LocalStorage.publish(&staging_path(&target, "r1"), &target).await.unwrap();
        let names: Vec<_> = std::fs::read_dir(&target).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2);
        assert!(dir.path().join("t/new.parquet").exists());
        assert!(!dir.path().join(".t.staging-r1").exists());
    }

    #[tokio::test]
    async fn publish_refuses_an_incomplete_staging_folder() {
        let dir = tree(&["t/old.parquet", ".t.staging-r1/new.parquet"]);
        let target = dir.path().join("t").display().to_string();
        let err = LocalStorage.publish(&staging_path(&target, "r1"), &target).await.unwrap_err();
        assert!(err.message.contains("incomplete"));
        assert!(dir.path().join("t/old.parquet").exists());
    }

    #[test]
    fn staging_is_a_hidden_sibling() {
        assert_eq!(staging_path("out/songs/", "r1"), "out/.songs.staging-r1");
        assert_eq!(staging_path("s3://b/lake/songs", "r1"), "s3://b/lake/.songs.staging-r1");
    }
}
