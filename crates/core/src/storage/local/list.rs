//! Listing local folders: a level at a time over a few threads, following links as `find -L`
//! does, each folder and file taken once by its (device, inode).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::io_error;
use crate::storage::{ObjectMeta, Op, StorageError, StorageErrorKind, is_hidden_name};

/// Threads listing folders at once: listing is one system call per file (its size and time),
/// and on a slow disk or a virtual machine those calls wait more than they compute.
pub(super) const LIST_THREADS: usize = 8;

/// Lists every file under `root` matching `glob`, sorted by relative path, with what the caller
/// should warn about. Folders are read a level at a time, the folders of one level spread over a
/// few threads. Symbolic links are followed whatever their name, as `find -L`, Spark and DuckDB
/// do: a linked folder is listed like any other. Each folder and each file is taken once, by its
/// (device, inode), so a link loop is listed once and a file reached through two links is read
/// once; both are reported.
pub(super) fn list_local(
    root: &Path,
    glob: &globset::GlobMatcher,
) -> Result<(Vec<ObjectMeta>, Vec<String>), StorageError> {
    let meta = std::fs::metadata(root).map_err(|e| io_error(Op::Listing, root, &e))?;
    if !meta.is_dir() {
        return Err(StorageError::new(
            StorageErrorKind::Other,
            Op::Listing,
            root.display().to_string(),
            "not a folder",
        ));
    }
    let mut notes = Vec::new();
    let mut folders_seen: HashMap<FileId, String> = HashMap::new();
    folders_seen.insert(file_id(&meta), String::new());
    let mut found: Vec<(ObjectMeta, FileId)> = Vec::new();
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
                            Err(StorageError::new(
                                StorageErrorKind::Other,
                                Op::Listing,
                                "",
                                "a listing thread panicked",
                            ))
                        })
                    })
                    .collect()
            })
        };
        let mut candidates = Vec::new();
        for result in results {
            let listed = result?;
            found.extend(listed.files);
            candidates.extend(listed.folders);
            notes.extend(listed.notes);
        }
        // Each folder once, the first name in path order winning.
        candidates.sort_by(|a, b| a.1.cmp(&b.1));
        let mut next = Vec::with_capacity(candidates.len());
        for (path, relative, id) in candidates {
            match folders_seen.get(&id) {
                Some(first) => notes.push(format!(
                    "{} leads to a folder already listed ({}): read once",
                    shown_relative(&relative),
                    shown_relative(first)
                )),
                None => {
                    folders_seen.insert(id, relative.clone());
                    next.push((path, relative));
                }
            }
        }
        level = next;
    }
    found.sort_by(|a, b| a.0.relative.cmp(&b.0.relative));
    let mut files_seen: HashMap<FileId, String> = HashMap::new();
    let mut out = Vec::with_capacity(found.len());
    let mut twice = Vec::new();
    for (file, id) in found {
        match files_seen.get(&id) {
            Some(first) => twice.push((file.relative, first.clone())),
            None => {
                files_seen.insert(id, file.relative.clone());
                out.push(file);
            }
        }
    }
    if let Some((again, first)) = twice.first() {
        let more = match twice.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        notes.push(format!("{again} is the same file as {first}{more}: read once"));
    }
    Ok((out, notes))
}

/// A file's identity on its file system.
type FileId = (u64, u64);

#[cfg(unix)]
pub(super) fn file_id(meta: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
pub(super) fn file_id(_: &std::fs::Metadata) -> FileId {
    // No inode numbers: every file and folder counts as distinct.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    (0, NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// See [`ObjectMeta::identity`]. Only regular files have one: a FIFO or a device is never read
/// to fingerprint it (reading could block forever).
#[cfg(unix)]
pub(super) fn identity(meta: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    if !meta.is_file() {
        return None;
    }
    Some(format!(
        "{}:{}:{}.{}:{}.{}:{}",
        meta.dev(),
        meta.ino(),
        meta.ctime(),
        meta.ctime_nsec(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.len()
    ))
}

#[cfg(not(unix))]
pub(super) fn identity(_: &std::fs::Metadata) -> Option<String> {
    // No change time to trust: files keep their modification time in fingerprints.
    None
}

pub(super) fn shown_relative(relative: &str) -> &str {
    if relative.is_empty() { "the listed folder itself" } else { relative }
}

/// What listing some folders found: matching files, subfolders (path, relative path, identity),
/// and problems worth a warning.
pub(super) struct Listed {
    files: Vec<(ObjectMeta, FileId)>,
    folders: Vec<(PathBuf, String, FileId)>,
    notes: Vec<String>,
}

pub(super) fn list_folders(folders: &[(PathBuf, String)], glob: &globset::GlobMatcher) -> Result<Listed, StorageError> {
    let mut listed = Listed { files: Vec::new(), folders: Vec::new(), notes: Vec::new() };
    for (dir, rel) in folders {
        let entries = std::fs::read_dir(dir).map_err(|e| io_error(Op::Listing, dir, &e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_error(Op::Listing, dir, &e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_hidden_name(&name) {
                continue;
            }
            let relative = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
            let path = entry.path();
            let file_type = entry.file_type().map_err(|e| io_error(Op::Listing, &path, &e))?;
            let meta = if file_type.is_symlink() {
                match std::fs::metadata(&path) {
                    Ok(meta) => meta,
                    Err(e) => {
                        if glob.is_match(&relative) {
                            let why = io_error(Op::Following, &path, &e).message;
                            listed.notes.push(format!("{relative} is a link that cannot be followed ({why}): skipped"));
                        }
                        continue;
                    }
                }
            } else if file_type.is_dir() || glob.is_match(&relative) {
                entry.metadata().map_err(|e| io_error(Op::Listing, &path, &e))?
            } else {
                continue;
            };
            if meta.is_dir() {
                listed.folders.push((path, relative, file_id(&meta)));
            } else if glob.is_match(&relative) {
                let file = ObjectMeta {
                    path: path.display().to_string(),
                    relative,
                    size: meta.len(),
                    modified: meta.modified().ok(),
                    etag: None,
                    identity: identity(&meta),
                };
                listed.files.push((file, file_id(&meta)));
            }
        }
    }
    Ok(listed)
}
