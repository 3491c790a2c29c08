//! The local file system: listing with globs, concurrent reads of many small files, and tables
//! published by swapping folders. A table is written completely under a hidden staging folder
//! beside its final place (`.songs.staging-<tag>`), with `_manifest.json` and a `_SUCCESS` marker
//! written last, then swapped in: on Linux with one `renameat2(RENAME_EXCHANGE)`, so a reader sees
//! the old table or the new one, never a mix and never nothing. The old files are deleted after.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use super::{
    AccessCheck, MANIFEST, ObjectMeta, SUCCESS_MARKER, Storage, StorageError, StorageErrorKind, TableFile,
    TableManifest, TableWrite, is_hidden_name,
};

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

/// An I/O error as a storage error, with the path and the action.
pub fn io_error(action: &'static str, path: &Path, error: &io::Error) -> StorageError {
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

/// Threads listing folders at once: listing is one system call per file (its size and time),
/// and on a slow disk or a virtual machine those calls wait more than they compute.
const LIST_THREADS: usize = 8;

/// Lists every file under `root` matching `glob`, sorted by relative path. Folders are read a
/// level at a time, the folders of one level spread over a few threads.
fn list_local(root: &Path, glob: &globset::GlobMatcher) -> Result<Vec<ObjectMeta>, StorageError> {
    let meta = std::fs::metadata(root).map_err(|e| io_error("listing", root, &e))?;
    if !meta.is_dir() {
        return Err(StorageError::new(StorageErrorKind::Other, "listing", root.display().to_string(), "not a folder"));
    }
    let mut out = Vec::new();
    let mut level = vec![(root.to_path_buf(), String::new())];
    while !level.is_empty() {
        let threads = LIST_THREADS.min(level.len());
        let share = level.len().div_ceil(threads);
        let results: Vec<Result<Listed, StorageError>> = if threads == 1 {
            vec![list_folders(&level, glob)]
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> =
                    level.chunks(share).map(|part| scope.spawn(move || list_folders(part, glob))).collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(StorageError::new(StorageErrorKind::Other, "listing", "", "a listing thread panicked"))
                        })
                    })
                    .collect()
            })
        };
        let mut next = Vec::new();
        for result in results {
            let (files, folders) = result?;
            out.extend(files);
            next.extend(folders);
        }
        level = next;
    }
    out.sort_by(|a, b| a.relative.cmp(&b.relative));
    Ok(out)
}

/// The matching files and the subfolders (path, relative path) of some folders.
type Listed = (Vec<ObjectMeta>, Vec<(PathBuf, String)>);

fn list_folders(folders: &[(PathBuf, String)], glob: &globset::GlobMatcher) -> Result<Listed, StorageError> {
    let mut files = Vec::new();
    let mut subfolders = Vec::new();
    for (dir, rel) in folders {
        let entries = std::fs::read_dir(dir).map_err(|e| io_error("listing", dir, &e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_error("listing", dir, &e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_hidden_name(&name) {
                continue;
            }
            let relative = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
            let path = entry.path();
            let file_type = entry.file_type().map_err(|e| io_error("listing", &path, &e))?;
            if file_type.is_dir() {
                subfolders.push((path, relative));
                continue;
            }
            if !glob.is_match(&relative) {
                continue;
            }
            let meta = if file_type.is_symlink() { std::fs::metadata(&path).ok() } else { entry.metadata().ok() };
            let Some(meta) = meta else { continue };
            if meta.is_dir() {
                subfolders.push((path, relative));
            } else {
                files.push(ObjectMeta {
                    path: path.display().to_string(),
                    relative,
                    size: meta.len(),
                    modified: meta.modified().ok(),
                    etag: None,
                });
            }
        }
    }
    Ok((files, subfolders))
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
            return std::fs::rename(staging, target).map_err(|e| io_error("publishing to", target, &e));
        }
        Err(e) => return Err(io_error("publishing to", target, &e)),
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
        Ok(()) => std::fs::remove_dir_all(staging).map_err(|e| io_error("removing the previous table at", staging, &e)),
        Err(_) => {
            // No atomic exchange here: move the old table aside, then the new one in. Readers may
            // briefly find no table, but never a mix.
            let aside = PathBuf::from(format!("{}.old", staging.display()));
            std::fs::rename(target, &aside).map_err(|e| io_error("moving aside", target, &e))?;
            if let Err(e) = std::fs::rename(staging, target) {
                let _ = std::fs::rename(&aside, target);
                return Err(io_error("publishing to", target, &e));
            }
            std::fs::remove_dir_all(&aside).map_err(|e| io_error("removing the previous table at", &aside, &e))
        }
    }
}

/// Reads a whole file. Large files go into memory backed by huge pages where the system offers
/// them (Linux, transparent huge pages on `madvise`): filling fresh memory then takes one page
/// fault per 2 MiB instead of one per 4 KiB, which is most of the cost of reading a log file that
/// is already in the page cache.
fn read_file(path: &Path) -> Result<Vec<u8>, StorageError> {
    use std::io::Read;
    let fail = |e: std::io::Error| io_error("reading", path, &e);
    let mut file = std::fs::File::open(path).map_err(fail)?;
    let size = file.metadata().map_err(fail)?.len() as usize;
    let mut data = Vec::with_capacity(size + 1);
    if size >= HUGE_PAGE_READ {
        advise_huge_pages(&mut data);
    }
    file.read_to_end(&mut data).map_err(fail)?;
    Ok(data)
}

/// Files at least this large are read into huge pages.
const HUGE_PAGE_READ: usize = 8 << 20;

#[cfg(target_os = "linux")]
fn advise_huge_pages(data: &mut Vec<u8>) {
    const HUGE: usize = 2 << 20;
    let start = data.as_mut_ptr() as usize;
    let first = start.next_multiple_of(HUGE);
    let end = (start + data.capacity()) / HUGE * HUGE;
    if end > first {
        // SAFETY: the range lies inside the vector's own allocation; the advice changes how the
        // kernel backs those pages, never their contents or ownership. Failure is harmless.
        unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE) };
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_: &mut Vec<u8>) {}

#[async_trait]
impl Storage for LocalStorage {
    async fn list(&self, root: &str, glob: &globset::GlobMatcher) -> Result<Vec<ObjectMeta>, StorageError> {
        let root = PathBuf::from(root);
        let glob = glob.clone();
        blocking(move || list_local(&root, &glob)).await
    }

    async fn read(&self, path: &str) -> Result<Vec<u8>, StorageError> {
        let path = PathBuf::from(path);
        blocking(move || read_file(&path)).await
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
                std::fs::create_dir_all(parent).map_err(|e| io_error("creating", parent, &e))?;
            }
            std::fs::write(&path, data).map_err(|e| io_error("writing", &path, &e))
        })
        .await
    }

    async fn write_many(&self, files: Vec<(String, Vec<u8>)>, concurrency: usize) -> Result<(), StorageError> {
        // Many small files (a partitioned table): create every folder once, parents first and
        // from one thread (folders in one parent contend on its lock anyway), then write the files
        // with a few threads, each taking a contiguous share.
        blocking(move || {
            let mut dirs: Vec<&Path> = files.iter().filter_map(|(p, _)| Path::new(p).parent()).collect();
            dirs.sort_unstable();
            dirs.dedup();
            for dir in dirs {
                std::fs::create_dir_all(dir).map_err(|e| io_error("creating", dir, &e))?;
            }
            let workers = concurrency.clamp(1, 8).min(files.len().max(1));
            let chunk = files.len().div_ceil(workers).max(1);
            std::thread::scope(|scope| {
                let handles: Vec<_> = files
                    .chunks(chunk)
                    .map(|part| {
                        scope.spawn(move || {
                            for (path, data) in part {
                                std::fs::write(path, data).map_err(|e| io_error("writing", Path::new(path), &e))?;
                            }
                            Ok(())
                        })
                    })
                    .collect();
                handles.into_iter().try_for_each(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(StorageError::new(StorageErrorKind::Other, "writing", "", "a writer thread panicked"))
                    })
                })
            })
        })
        .await
    }

    async fn remove_all(&self, path: &str) -> Result<(), StorageError> {
        let path = PathBuf::from(path);
        blocking(move || match std::fs::remove_dir_all(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error("removing", &path, &e)),
            _ => Ok(()),
        })
        .await
    }

    async fn begin_table(&self, target: &str, tag: &str) -> Result<TableWrite, StorageError> {
        let root = staging_path(target, tag);
        self.remove_all(&root).await?;
        Ok(TableWrite { target: target.trim_end_matches('/').to_string(), tag: tag.to_string(), root })
    }

    fn table_file(&self, write: &TableWrite, relative: &str) -> TableFile {
        TableFile { path: format!("{}/{relative}", write.root), relative: relative.to_string() }
    }

    async fn commit_table(&self, write: &TableWrite, manifest: &TableManifest) -> Result<(), StorageError> {
        let staging = PathBuf::from(&write.root);
        let target = PathBuf::from(&write.target);
        let manifest_json = serde_json::to_vec_pretty(manifest).expect("a manifest serializes");
        let files: Vec<(String, u64)> = manifest.files.iter().map(|f| (f.path.clone(), f.size)).collect();
        blocking(move || {
            // Check what was staged before it becomes the table.
            for (relative, size) in &files {
                let path = staging.join(relative);
                let meta = std::fs::metadata(&path).map_err(|e| io_error("checking the staged file", &path, &e))?;
                if meta.len() != *size {
                    return Err(StorageError::new(
                        StorageErrorKind::Other,
                        "checking the staged file",
                        path.display().to_string(),
                        format!("{} bytes on disk, {size} written", meta.len()),
                    ));
                }
            }
            let manifest_path = staging.join(MANIFEST);
            std::fs::write(&manifest_path, manifest_json).map_err(|e| io_error("writing", &manifest_path, &e))?;
            let marker = staging.join(SUCCESS_MARKER);
            std::fs::write(&marker, b"").map_err(|e| io_error("writing", &marker, &e))?;
            publish_local(&staging, &target)
        })
        .await
    }

    async fn abort_table(&self, write: &TableWrite, _files: &[TableFile]) -> Result<(), StorageError> {
        self.remove_all(&write.root).await
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

/// Reads need the folder; writes need its nearest existing ancestor to be a writable folder.
fn check_local(path: &Path, write: bool) -> Result<String, String> {
    if !write {
        return match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => Ok("folder exists".into()),
            Ok(_) => Err("exists but is not a folder".into()),
            Err(e) => Err(io_error("reading", path, &e).message),
        };
    }
    let mut probe = path.to_path_buf();
    loop {
        match std::fs::metadata(&probe) {
            Ok(m) if m.is_dir() => {
                return if m.permissions().readonly() {
                    Err(format!("{} is read-only", probe.display()))
                } else if probe == path {
                    Ok("folder exists and is writable".into())
                } else {
                    Ok(format!("will be created under {}", probe.display()))
                };
            }
            Ok(_) => return Err(format!("{} is a file, not a folder", probe.display())),
            Err(_) => match probe.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => probe = parent.to_path_buf(),
                _ => return Ok("will be created in the current folder".into()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{ManifestFile, compile_glob};

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

    fn manifest(files: &[(&str, u64)]) -> TableManifest {
        TableManifest {
            table: "t".into(),
            run_id: "r1".into(),
            rows: 1,
            partition_by: Vec::new(),
            files: files.iter().map(|(p, s)| ManifestFile { path: p.to_string(), size: *s }).collect(),
            fingerprint: None,
        }
    }

    #[tokio::test]
    async fn a_committed_table_replaces_the_old_one_whole() {
        let dir = tree(&["t/old.parquet"]);
        let target = dir.path().join("t").display().to_string();
        let write = LocalStorage.begin_table(&target, "r1").await.unwrap();
        let file = LocalStorage.table_file(&write, "a=1/new.parquet");
        LocalStorage.write(&file.path, b"data".to_vec()).await.unwrap();
        // Until the commit the old table is what readers see.
        assert!(dir.path().join("t/old.parquet").exists());
        LocalStorage.commit_table(&write, &manifest(&[("a=1/new.parquet", 4)])).await.unwrap();
        let files: Vec<_> = ["a=1/new.parquet", "_manifest.json", "_SUCCESS"]
            .iter()
            .map(|f| dir.path().join("t").join(f).exists())
            .collect();
        assert_eq!(files, vec![true, true, true]);
        assert!(!dir.path().join("t/old.parquet").exists());
        assert!(!dir.path().join(".t.staging-r1").exists());
    }

    #[tokio::test]
    async fn a_commit_with_a_short_file_keeps_the_old_table() {
        let dir = tree(&["t/old.parquet"]);
        let target = dir.path().join("t").display().to_string();
        let write = LocalStorage.begin_table(&target, "r1").await.unwrap();
        LocalStorage.write(&LocalStorage.table_file(&write, "new.parquet").path, b"da".to_vec()).await.unwrap();
        let err = LocalStorage.commit_table(&write, &manifest(&[("new.parquet", 4)])).await.unwrap_err();
        assert!(err.message.contains("2 bytes on disk, 4 written"), "{err}");
        assert!(dir.path().join("t/old.parquet").exists());
        LocalStorage.abort_table(&write, &[]).await.unwrap();
        assert!(!dir.path().join(".t.staging-r1").exists());
    }

    #[tokio::test]
    async fn access_checks_explain_what_they_found() {
        let dir = tree(&["file"]);
        let root = dir.path().display().to_string();
        assert!(LocalStorage.check_access(&root, false).await.ok);
        assert!(!LocalStorage.check_access(&format!("{root}/nope"), false).await.ok);
        let later = LocalStorage.check_access(&format!("{root}/a/b"), true).await;
        assert!(later.ok && later.detail.starts_with("will be created under"), "{later:?}");
        assert!(!LocalStorage.check_access(&format!("{root}/file/x"), true).await.ok);
    }

    #[test]
    fn staging_is_a_hidden_sibling() {
        assert_eq!(staging_path("out/songs/", "r1"), "out/.songs.staging-r1");
        assert_eq!(staging_path("s3://b/lake/songs", "r1"), "s3://b/lake/.songs.staging-r1");
    }
}
