//! The local file system: listing with globs, concurrent reads of many small files, and tables
//! published by swapping folders. A table is written completely under a hidden staging folder
//! beside its final place (`.songs.staging-<tag>`), with `_manifest.json` and a `_SUCCESS` marker
//! written last, then swapped in: on Linux with one `renameat2(RENAME_EXCHANGE)`, so a reader sees
//! the old table or the new one, never a mix and never nothing. The old files are deleted after.
//!
//! | module | owns |
//! | --- | --- |
//! | this one | [`LocalStorage`] as a `Storage`, I/O errors, access checks |
//! | `list` | listing folders with globs, links and loops |
//! | `files` | whole reads, locked, atomic and exclusive writes, versions |
//! | `publish` | swapping a staged table in, and what killed runs left beside it |

mod files;
mod list;
mod publish;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use super::{
    AccessCheck, Fence, MANIFEST, ObjectMeta, Op, SUCCESS_MARKER, Storage, StorageError, StorageErrorKind, TableFile,
    TableManifest, TableWrite, Version,
};

use files::{changed, create_exclusively, current, read_file, version_of, with_file_lock, write_atomically};
use list::{identity, list_local};
use publish::{check_replaceable, local_leftovers, publish_local, remove_local_leftovers};

/// The staging folder for a table at `target`: a hidden sibling, so the final rename stays on one
/// file system and listings of the parent skip it.
pub(crate) fn staging_path(target: &str, run_id: &str) -> String {
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

/// An I/O error as a storage error, with the path and the action.
pub(crate) fn io_error(action: Op, path: &Path, error: &io::Error) -> StorageError {
    let kind = match error.kind() {
        io::ErrorKind::NotFound => StorageErrorKind::NotFound,
        io::ErrorKind::PermissionDenied => StorageErrorKind::PermissionDenied,
        io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => StorageErrorKind::Transient,
        _ => StorageErrorKind::Other,
    };
    let message = match kind {
        StorageErrorKind::NotFound => "no such file or folder".to_string(),
        StorageErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => error.to_string(),
    };
    StorageError::new(kind, action, path.display().to_string(), message)
}

#[async_trait]
impl Storage for LocalStorage {
    async fn list(&self, root: &str, glob: &globset::GlobMatcher) -> Result<Vec<ObjectMeta>, StorageError> {
        let root_path = PathBuf::from(root);
        let glob = glob.clone();
        let (files, notes) = blocking(move || list_local(&root_path, &glob)).await?;
        for note in notes {
            tracing::warn!(path = %root, "{note}");
        }
        Ok(files)
    }

    async fn read(&self, path: &str) -> Result<Vec<u8>, StorageError> {
        let path = PathBuf::from(path);
        blocking(move || read_file(&path)).await
    }

    async fn head(&self, path: &str) -> Result<ObjectMeta, StorageError> {
        let path = PathBuf::from(path);
        blocking(move || {
            let meta = std::fs::metadata(&path).map_err(|e| io_error(Op::Checking, &path, &e))?;
            if meta.is_dir() {
                let e = io::Error::new(io::ErrorKind::NotFound, "a folder, not a file");
                return Err(io_error(Op::Checking, &path, &e));
            }
            Ok(ObjectMeta {
                path: path.display().to_string(),
                relative: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                size: meta.len(),
                modified: meta.modified().ok(),
                etag: None,
                identity: identity(&meta),
            })
        })
        .await
    }

    async fn delete(&self, path: &str) -> Result<(), StorageError> {
        let path = PathBuf::from(path);
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(Op::Deleting, &path, &e)),
        })
        .await
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
                paths[start..end].iter().map(|p| read_file(Path::new(p))).collect::<Vec<_>>()
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
                std::fs::create_dir_all(parent).map_err(|e| io_error(Op::Creating, parent, &e))?;
            }
            std::fs::write(&path, data).map_err(|e| io_error(Op::Writing, &path, &e))
        })
        .await
    }

    async fn write_many(&self, files: Vec<(String, Vec<u8>)>, concurrency: usize) -> Result<(), StorageError> {
        // Many small files (a partitioned table): a few threads, each taking a contiguous share
        // (files of one folder are neighbours), each making its files' folders as it meets them:
        // creating a folder costs as much as writing a small file, so it is spread too.
        blocking(move || {
            // Creating a file is kernel work that does not block on the disk (the page cache
            // takes it): more threads than cores only contend on the folders' locks.
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            let workers = concurrency.clamp(1, 2 * cores).min(files.len().max(1));
            let chunk = files.len().div_ceil(workers).max(1);
            std::thread::scope(|scope| {
                let handles: Vec<_> = files
                    .chunks(chunk)
                    .map(|part| {
                        scope.spawn(move || {
                            let mut made: Option<&Path> = None;
                            for (path, data) in part {
                                let parent = Path::new(path).parent();
                                if let Some(dir) = parent.filter(|d| Some(*d) != made) {
                                    // Tolerates a folder another thread made first.
                                    std::fs::create_dir_all(dir).map_err(|e| io_error(Op::Creating, dir, &e))?;
                                    made = Some(dir);
                                }
                                std::fs::write(path, data).map_err(|e| io_error(Op::Writing, Path::new(path), &e))?;
                            }
                            Ok(())
                        })
                    })
                    .collect();
                handles.into_iter().try_for_each(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(StorageError::new(StorageErrorKind::Other, Op::Writing, "", "a writer thread panicked"))
                    })
                })
            })
        })
        .await
    }

    async fn remove_all(&self, path: &str) -> Result<(), StorageError> {
        let path = PathBuf::from(path);
        blocking(move || match std::fs::remove_dir_all(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error(Op::Removing, &path, &e)),
            _ => Ok(()),
        })
        .await
    }

    async fn begin_table(&self, target: &str, tag: &str) -> Result<TableWrite, StorageError> {
        let checked = PathBuf::from(target.trim_end_matches('/'));
        blocking(move || check_replaceable(&checked)).await?;
        let root = staging_path(target, tag);
        self.remove_all(&root).await?;
        Ok(TableWrite { target: target.trim_end_matches('/').to_string(), tag: tag.to_string(), root, base: None })
    }

    fn table_file(&self, write: &TableWrite, relative: &str) -> TableFile {
        TableFile { path: format!("{}/{relative}", write.root), relative: relative.to_string() }
    }

    async fn commit_table(
        &self,
        write: &TableWrite,
        manifest: &TableManifest,
        fence: Option<&dyn Fence>,
    ) -> Result<(), StorageError> {
        // A run that took the lake over renames a frozen run's staging folder away before its own
        // loads: then the swap below finds nothing to swap.
        if let Some(fence) = fence {
            fence.check().await?;
        }
        manifest.check().map_err(|m| StorageError::new(StorageErrorKind::Other, Op::Publishing, &write.target, m))?;
        let staging = PathBuf::from(&write.root);
        let target = PathBuf::from(&write.target);
        let manifest_json = serde_json::to_vec_pretty(manifest).expect("a manifest serializes");
        let files: Vec<(String, u64)> = manifest.files.iter().map(|f| (f.path.clone(), f.size)).collect();
        blocking(move || {
            // Check what was staged before it becomes the table.
            for (relative, size) in &files {
                let path = staging.join(relative);
                let meta = std::fs::metadata(&path).map_err(|e| io_error(Op::CheckingStaged, &path, &e))?;
                if meta.len() != *size {
                    return Err(StorageError::new(
                        StorageErrorKind::Other,
                        Op::CheckingStaged,
                        path.display().to_string(),
                        format!("{} bytes on disk, {size} written", meta.len()),
                    ));
                }
            }
            let manifest_path = staging.join(MANIFEST);
            std::fs::write(&manifest_path, manifest_json).map_err(|e| io_error(Op::Writing, &manifest_path, &e))?;
            let marker = staging.join(SUCCESS_MARKER);
            std::fs::write(&marker, b"").map_err(|e| io_error(Op::Writing, &marker, &e))?;
            publish_local(&staging, &target)
        })
        .await
    }

    async fn abort_table(&self, write: &TableWrite, _files: &[TableFile]) -> Result<(), StorageError> {
        self.remove_all(&write.root).await
    }

    async fn create_new(&self, path: &str, data: Vec<u8>) -> Result<Version, StorageError> {
        let path = PathBuf::from(path);
        blocking(move || {
            create_exclusively(&path, &data)?;
            Ok(version_of(&data))
        })
        .await
    }

    async fn read_versioned(&self, path: &str) -> Result<(Vec<u8>, Version), StorageError> {
        let path = PathBuf::from(path);
        blocking(move || current(&path)).await
    }

    async fn replace_if(&self, path: &str, data: Vec<u8>, version: &Version) -> Result<Version, StorageError> {
        let path = PathBuf::from(path);
        let version = version.clone();
        blocking(move || {
            with_file_lock(&path, || {
                if current(&path)?.1 != version {
                    return Err(changed(&path));
                }
                write_atomically(&path, &data)?;
                Ok(version_of(&data))
            })
        })
        .await
    }

    async fn delete_if(&self, path: &str, version: &Version) -> Result<(), StorageError> {
        let path = PathBuf::from(path);
        let version = version.clone();
        blocking(move || {
            with_file_lock(&path, || {
                if current(&path)?.1 != version {
                    return Err(changed(&path));
                }
                std::fs::remove_file(&path).map_err(|e| io_error(Op::Deleting, &path, &e))
            })
        })
        .await
    }

    async fn remove_leftovers(
        &self,
        target: &str,
        _dead: &[String],
        fence: Option<&dyn Fence>,
    ) -> Result<Vec<String>, StorageError> {
        let target = PathBuf::from(target.trim_end_matches('/'));
        let (folders, temporaries) = blocking(move || local_leftovers(&target)).await?;
        if folders.is_empty() && temporaries.is_empty() {
            return Ok(Vec::new());
        }
        // Listed before the check: what a run that took the lake over after it writes is not
        // in the list.
        if let Some(fence) = fence {
            fence.check().await?;
        }
        blocking(move || remove_local_leftovers(&folders, &temporaries)).await
    }

    async fn check_access(&self, path: &str, write: bool) -> AccessCheck {
        let target = PathBuf::from(path);
        let result = blocking(move || check_local(&target, write)).await;
        match result {
            Ok(detail) => AccessCheck { path: path.to_string(), ok: true, detail },
            Err(detail) => AccessCheck { path: path.to_string(), ok: false, detail },
        }
    }
}

/// Reads need the folder. Writes need the nearest existing folder on the way to be writable, and
/// that is proven, not guessed from mode bits (a read-only mount, another owner, an ACL): a probe
/// file is created there and removed.
fn check_local(path: &Path, write: bool) -> Result<String, String> {
    if !write {
        return match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => Ok("folder exists".into()),
            Ok(_) => Err("exists but is not a folder".into()),
            Err(e) => Err(io_error(Op::Reading, path, &e).message),
        };
    }
    let mut probe = path.to_path_buf();
    loop {
        match std::fs::metadata(&probe) {
            Ok(m) if m.is_dir() => {
                // A folder that exists is written into (a Delta table's files and log, run
                // records), and staging goes beside a table, in its parent: both are probed.
                probe_write(&probe)?;
                if probe == path
                    && let Some(parent) = path.parent().filter(|p| p.is_dir())
                {
                    probe_write(parent)?;
                }
                return if probe == path {
                    Ok("folder exists and is writable".into())
                } else {
                    Ok(format!("will be created under {}, which is writable", probe.display()))
                };
            }
            Ok(_) => return Err(format!("{} is a file, not a folder", probe.display())),
            Err(_) => match probe.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => probe = parent.to_path_buf(),
                _ => {
                    probe_write(Path::new("."))?;
                    return Ok("will be created in the current folder, which is writable".into());
                }
            },
        }
    }
}

/// Creates and removes a hidden file in `folder`.
fn probe_write(folder: &Path) -> Result<(), String> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let file = folder.join(format!(".dagrun-probe-{}-{nanos}", std::process::id()));
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&file) {
        Ok(_) => {
            let _ = std::fs::remove_file(&file);
            Ok(())
        }
        Err(e) => {
            let why = match e.raw_os_error() {
                Some(libc::EROFS) => "is on a read-only file system".to_string(),
                _ if e.kind() == io::ErrorKind::PermissionDenied => "is not writable by this user".to_string(),
                _ => format!("cannot be written: {e}"),
            };
            Err(format!("{} {why} (a probe file could not be created)", folder.display()))
        }
    }
}

#[cfg(test)]
mod tests;
