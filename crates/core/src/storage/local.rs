//! The local file system: listing with globs, concurrent reads of many small files, and tables
//! published by swapping folders. A table is written completely under a hidden staging folder
//! beside its final place (`.songs.staging-<tag>`), with `_manifest.json` and a `_SUCCESS` marker
//! written last, then swapped in: on Linux with one `renameat2(RENAME_EXCHANGE)`, so a reader sees
//! the old table or the new one, never a mix and never nothing. The old files are deleted after.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use super::{
    AccessCheck, Fence, MANIFEST, ObjectMeta, Op, SUCCESS_MARKER, Storage, StorageError, StorageErrorKind, TableFile,
    TableManifest, TableWrite, Version, is_hidden_name,
};

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

/// Threads listing folders at once: listing is one system call per file (its size and time),
/// and on a slow disk or a virtual machine those calls wait more than they compute.
const LIST_THREADS: usize = 8;

/// Lists every file under `root` matching `glob`, sorted by relative path, with what the caller
/// should warn about. Folders are read a level at a time, the folders of one level spread over a
/// few threads. Symbolic links are followed whatever their name, as `find -L`, Spark and DuckDB
/// do: a linked folder is listed like any other. Each folder and each file is taken once, by its
/// (device, inode), so a link loop is listed once and a file reached through two links is read
/// once; both are reported.
fn list_local(root: &Path, glob: &globset::GlobMatcher) -> Result<(Vec<ObjectMeta>, Vec<String>), StorageError> {
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
fn file_id(meta: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn file_id(_: &std::fs::Metadata) -> FileId {
    // No inode numbers: every file and folder counts as distinct.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    (0, NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// See [`ObjectMeta::identity`]. Only regular files have one: a FIFO or a device is never read
/// to fingerprint it (reading could block forever).
#[cfg(unix)]
fn identity(meta: &std::fs::Metadata) -> Option<String> {
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
fn identity(_: &std::fs::Metadata) -> Option<String> {
    // No change time to trust: files keep their modification time in fingerprints.
    None
}

fn shown_relative(relative: &str) -> &str {
    if relative.is_empty() { "the listed folder itself" } else { relative }
}

/// What listing some folders found: matching files, subfolders (path, relative path, identity),
/// and problems worth a warning.
struct Listed {
    files: Vec<(ObjectMeta, FileId)>,
    folders: Vec<(PathBuf, String, FileId)>,
    notes: Vec<String>,
}

fn list_folders(folders: &[(PathBuf, String)], glob: &globset::GlobMatcher) -> Result<Listed, StorageError> {
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

/// Refuses to replace a folder that is not a table dagrun published: it must be missing, empty,
/// or hold a dagrun manifest. Checked before the first file is written and again at the swap.
fn check_replaceable(target: &Path) -> Result<(), StorageError> {
    let refuse = |message: String| {
        Err(StorageError::new(StorageErrorKind::Other, Op::RefusingToReplace, target.display().to_string(), message))
    };
    match std::fs::symlink_metadata(target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(Op::Checking, target, &e)),
        Ok(meta) if !meta.is_dir() => return refuse("it exists and is not a folder".into()),
        Ok(_) => {}
    }
    if let Ok(bytes) = std::fs::read(target.join(MANIFEST))
        && let Ok(manifest) = serde_json::from_slice::<TableManifest>(&bytes)
    {
        // dagrun's table, but the folder goes whole: only if everything in it is dagrun's.
        let named: std::collections::HashSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
        let mut stack = vec![target.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).map_err(|e| io_error(Op::Checking, &dir, &e))?.flatten() {
                let path = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(path);
                    continue;
                }
                let relative = path.strip_prefix(target).unwrap_or(&path).to_string_lossy().replace('\\', "/");
                if !named.contains(relative.as_str()) && ![MANIFEST, SUCCESS_MARKER].contains(&relative.as_str()) {
                    return refuse(super::not_a_table_message(&relative));
                }
            }
        }
        return Ok(());
    }
    let first = std::fs::read_dir(target).map_err(|e| io_error(Op::Checking, target, &e))?.next();
    match first {
        None => Ok(()),
        Some(entry) => {
            let name = entry.map_or_else(|_| "?".into(), |e| e.file_name().to_string_lossy().into_owned());
            refuse(super::not_a_table_message(&name))
        }
    }
}

fn publish_local(staging: &Path, target: &Path) -> Result<(), StorageError> {
    check_replaceable(target)?;
    if !staging.join(SUCCESS_MARKER).exists() {
        return Err(StorageError::new(
            StorageErrorKind::Other,
            Op::Publishing,
            staging.display().to_string(),
            "the staged table is incomplete (no _SUCCESS marker)",
        ));
    }
    match std::fs::symlink_metadata(target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return std::fs::rename(staging, target).map_err(|e| io_error(Op::PublishingTo, target, &e));
        }
        Err(e) => return Err(io_error(Op::PublishingTo, target, &e)),
        Ok(meta) if !meta.is_dir() => {
            return Err(StorageError::new(
                StorageErrorKind::Other,
                Op::PublishingTo,
                target.display().to_string(),
                "exists and is not a folder",
            ));
        }
        Ok(_) => {}
    }
    match exchange(staging, target) {
        // `staging` now holds the previous table.
        Ok(()) => std::fs::remove_dir_all(staging).map_err(|e| io_error(Op::RemovingPrevious, staging, &e)),
        Err(_) => {
            // No atomic exchange here: move the old table aside, then the new one in. Readers may
            // briefly find no table, but never a mix.
            let aside = PathBuf::from(format!("{}.old", staging.display()));
            std::fs::rename(target, &aside).map_err(|e| io_error(Op::MovingAside, target, &e))?;
            if let Err(e) = std::fs::rename(staging, target) {
                let _ = std::fs::rename(&aside, target);
                return Err(io_error(Op::PublishingTo, target, &e));
            }
            std::fs::remove_dir_all(&aside).map_err(|e| io_error(Op::RemovingPrevious, &aside, &e))
        }
    }
}

/// Reads a whole file. Large files go into memory backed by huge pages where the system offers
/// them (Linux, transparent huge pages on `madvise`): filling fresh memory then takes one page
/// fault per 2 MiB instead of one per 4 KiB, which is most of the cost of reading a log file that
/// is already in the page cache.
fn read_file(path: &Path) -> Result<Vec<u8>, StorageError> {
    use std::io::Read;
    let fail = |e: std::io::Error| io_error(Op::Reading, path, &e);
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

/// Runs `f` holding an exclusive lock on `.<name>.lock` beside `path`, so that the conditional
/// operations of several processes on one small file (the lake's lease) happen one at a time. The
/// kernel releases the lock if the process dies.
fn with_file_lock<T>(path: &Path, f: impl FnOnce() -> Result<T, StorageError>) -> Result<T, StorageError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io_error(Op::Creating, dir, &e))?;
    let name = path.file_name().map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let lock_path = dir.join(format!(".{name}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| io_error(Op::Locking, &lock_path, &e))?;
    lock_exclusive(&file).map_err(|e| io_error(Op::Locking, &lock_path, &e))?;
    let result = f();
    drop(file);
    result
}

#[cfg(unix)]
fn lock_exclusive(file: &std::fs::File) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    loop {
        // SAFETY: a valid open file descriptor; flock only changes its lock.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

#[cfg(not(unix))]
fn lock_exclusive(_: &std::fs::File) -> io::Result<()> {
    Ok(())
}

fn version_of(bytes: &[u8]) -> Version {
    use sha2::{Digest, Sha256};
    Version(Sha256::digest(bytes).iter().take(16).map(|b| format!("{b:02x}")).collect())
}

/// Writes a whole small file so that readers see the old content or the new, never a part: a
/// temporary file beside it, synced, then renamed over it.
fn write_atomically(path: &Path, data: &[u8]) -> Result<(), StorageError> {
    let tmp = write_temporary(path, data).map_err(|e| io_error(Op::Writing, path, &e))?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error(Op::Writing, path, &e));
    }
    Ok(())
}

/// Writes `data` to a hidden temporary file beside `path`, synced; returns its path.
fn write_temporary(path: &Path, data: &[u8]) -> io::Result<PathBuf> {
    use std::io::Write;
    let name = path.file_name().map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let tmp = path.with_file_name(format!(".{name}.tmp-{}-{nanos}", std::process::id()));
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(data)?;
        f.sync_all()
    });
    match written {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn already_exists(path: &Path) -> StorageError {
    StorageError::new(StorageErrorKind::AlreadyExists, Op::Creating, path.display().to_string(), "already exists")
}

/// Creates `path` with `data` only if nothing is there, complete or not at all: the data goes to a
/// temporary file that is then hard-linked into place, which fails if the name exists. No reader
/// ever sees a partial file, and no lock file is left beside it (other Delta writers on a local
/// disk create commit files the same way). Where hard links are not supported, the file's lock
/// serializes dagrun's own writers instead.
fn create_exclusively(path: &Path, data: &[u8]) -> Result<(), StorageError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| io_error(Op::Creating, parent, &e))?;
    }
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(already_exists(path));
    }
    let tmp = write_temporary(path, data).map_err(|e| io_error(Op::Creating, path, &e))?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(already_exists(path)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOTSUP)) => with_file_lock(path, || {
            if std::fs::symlink_metadata(path).is_ok() {
                return Err(already_exists(path));
            }
            write_atomically(path, data)
        }),
        Err(e) => Err(io_error(Op::Creating, path, &e)),
    }
}

/// The current content and version of a small file, under its lock.
fn current(path: &Path) -> Result<(Vec<u8>, Version), StorageError> {
    let bytes = std::fs::read(path).map_err(|e| io_error(Op::Reading, path, &e))?;
    let version = version_of(&bytes);
    Ok((bytes, version))
}

fn changed(path: &Path) -> StorageError {
    StorageError::new(StorageErrorKind::Conflict, Op::Replacing, path.display().to_string(), "changed by someone else")
}

/// The staging folders (and folders moved aside) that loads of the table at `target` leave
/// beside it when they do not finish.
/// What killed runs left of the table at `target`: staging folders beside it, and the
/// temporaries of Delta log entries never linked (`_delta_log/.00000000000000000003.json.tmp-<pid>-<nanos>`).
/// Listed only; [`remove_local_leftovers`] removes them.
fn local_leftovers(target: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>), StorageError> {
    let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else { return Ok(Default::default()) };
    let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
    let prefix = format!(".{}.staging-", name.to_string_lossy());
    let entries = match std::fs::read_dir(parent) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(io_error(Op::Listing, parent, &e)),
    };
    let folders: Vec<PathBuf> =
        entries.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(&prefix)).map(|e| e.path()).collect();
    let log = target.join(super::delta::DELTA_LOG);
    let temporaries: Vec<PathBuf> = match std::fs::read_dir(&log) {
        Ok(entries) => entries
            .flatten()
            .filter(|e| is_temporary_name(&e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .collect(),
        Err(_) => Vec::new(),
    };
    Ok((folders, temporaries))
}

/// Removes what [`local_leftovers`] listed.
fn remove_local_leftovers(folders: &[PathBuf], temporaries: &[PathBuf]) -> Result<Vec<String>, StorageError> {
    let mut removed = Vec::new();
    for path in folders {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // Earlier removals cut short (killed in the middle) are finished.
        let doomed = if name.ends_with(REMOVING) {
            path.clone()
        } else {
            // Renamed out of the way first, atomically: a frozen run that wakes and swaps its
            // staging folder into place either did so before (and this finds nothing) or finds
            // nothing to swap; what is deleted is never a folder that just became the table.
            let doomed = path.with_file_name(format!("{name}{REMOVING}"));
            match std::fs::rename(path, &doomed) {
                Ok(()) => doomed,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(Op::Removing, path, &e)),
            }
        };
        // A writer abandoned mid-slice may still be adding files: try a few times.
        let mut result = std::fs::remove_dir_all(&doomed);
        for _ in 0..5 {
            match &result {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    result = std::fs::remove_dir_all(&doomed);
                }
                _ => break,
            }
        }
        match result {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_error(Op::Removing, &doomed, &e)),
            _ => removed.push(path.display().to_string()),
        }
    }
    for path in temporaries {
        if std::fs::remove_file(path).is_ok() {
            removed.push(path.display().to_string());
        }
    }
    removed.sort();
    Ok(removed)
}

/// The suffix of a staging folder being removed.
const REMOVING: &str = ".removing";

/// Whether `name` is how [`write_temporary`] names its files: `.<name>.tmp-<pid>-<nanos>`.
fn is_temporary_name(name: &str) -> bool {
    let Some((_, tail)) = name.strip_prefix('.').and_then(|n| n.rsplit_once(".tmp-")) else { return false };
    tail.split_once('-').is_some_and(|(pid, nanos)| {
        !pid.is_empty()
            && !nanos.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && nanos.bytes().all(|b| b.is_ascii_digit())
    })
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
mod tests {
    use super::*;
    use crate::path::compile_glob;
    use crate::storage::ManifestFile;

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, f.as_bytes()).unwrap();
        }
        dir
    }

    #[test]
    fn leftovers_are_staging_folders_and_commit_temporaries_of_dagrun_only() {
        let dir = tree(&[
            ".songs.staging-r-p-1/year=2018/part-00000.parquet",
            "songs/_delta_log/00000000000000000000.json",
            "songs/_delta_log/.00000000000000000001.json.tmp-4242-123456789",
            "songs/_delta_log/.my-notes.tmp",
            "songs/_delta_log/.00000000000000000001.json.tmp-x-1",
            "songs/year=2018/part-00000-r-p-1.parquet",
        ]);
        let (folders, temporaries) = local_leftovers(&dir.path().join("songs")).unwrap();
        let removed = remove_local_leftovers(&folders, &temporaries).unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        let left = files(dir.path());
        assert_eq!(
            left,
            [
                "songs/_delta_log/.00000000000000000001.json.tmp-x-1",
                "songs/_delta_log/.my-notes.tmp",
                "songs/_delta_log/00000000000000000000.json",
                "songs/year=2018/part-00000-r-p-1.parquet",
            ]
        );
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap().flatten() {
                if entry.path().is_dir() {
                    stack.push(entry.path());
                } else {
                    out.push(entry.path().strip_prefix(dir).unwrap().display().to_string());
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn of_many_writers_creating_one_file_exactly_one_wins_and_it_is_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("_delta_log/00000000000000000001.json");
        let winners: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|i| {
                    let path = path.clone();
                    s.spawn(move || match create_exclusively(&path, format!("writer {i}\n").repeat(1000).as_bytes()) {
                        Ok(()) => true,
                        Err(e) if e.kind == StorageErrorKind::AlreadyExists => false,
                        Err(e) => panic!("{e}"),
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(winners.iter().filter(|w| **w).count(), 1);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1000, "complete, and one writer's");
        assert_eq!(text.lines().collect::<std::collections::BTreeSet<_>>().len(), 1);
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file or lock file is left beside it");
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

    #[cfg(unix)]
    #[tokio::test]
    async fn linked_folders_are_listed_whatever_their_name_and_loops_once() {
        use std::os::unix::fs::symlink;
        let dir = tree(&["in/2018/11/a.json", "elsewhere/late/b.json", "elsewhere/late/c.txt"]);
        let root = dir.path().join("in");
        symlink(dir.path().join("elsewhere/late"), root.join("2018/late")).unwrap();
        symlink(".", root.join("2018/11/loop.json")).unwrap();
        symlink(root.join("2018/11/a.json"), root.join("2018/11/again.json")).unwrap();
        symlink(dir.path().join("nowhere"), root.join("2018/11/broken.json")).unwrap();
        let glob = compile_glob("**/*.json").unwrap();
        let (files, notes) = list_local(&root, &glob).unwrap();
        let rel: Vec<_> = files.iter().map(|o| o.relative.as_str()).collect();
        assert_eq!(rel, vec!["2018/11/a.json", "2018/late/b.json"]);
        assert_eq!(
            notes,
            vec![
                "2018/11/broken.json is a link that cannot be followed (no such file or folder): skipped",
                "2018/11/loop.json leads to a folder already listed (2018/11): read once",
                "2018/11/again.json is the same file as 2018/11/a.json: read once",
            ]
        );
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
            files: files.iter().map(|(p, s)| ManifestFile { path: p.to_string(), size: *s, rows: None }).collect(),
            fingerprint: None,
            slices: None,
            file_days: None,
        }
    }

    /// A folder holding the table `t` as an earlier run published it.
    fn published() -> tempfile::TempDir {
        let dir = tree(&["t/old.parquet"]);
        let json = serde_json::to_vec(&manifest(&[("old.parquet", 13)])).unwrap();
        std::fs::write(dir.path().join("t").join(MANIFEST), json).unwrap();
        dir
    }

    #[tokio::test]
    async fn a_committed_table_replaces_the_old_one_whole() {
        let dir = published();
        let target = dir.path().join("t").display().to_string();
        let write = LocalStorage.begin_table(&target, "r1").await.unwrap();
        let file = LocalStorage.table_file(&write, "a=1/new.parquet");
        LocalStorage.write(&file.path, b"data".to_vec()).await.unwrap();
        // Until the commit the old table is what readers see.
        assert!(dir.path().join("t/old.parquet").exists());
        LocalStorage.commit_table(&write, &manifest(&[("a=1/new.parquet", 4)]), None).await.unwrap();
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
        let dir = published();
        let target = dir.path().join("t").display().to_string();
        let write = LocalStorage.begin_table(&target, "r1").await.unwrap();
        LocalStorage.write(&LocalStorage.table_file(&write, "new.parquet").path, b"da".to_vec()).await.unwrap();
        let err = LocalStorage.commit_table(&write, &manifest(&[("new.parquet", 4)]), None).await.unwrap_err();
        assert!(err.message.contains("2 bytes on disk, 4 written"), "{err}");
        assert!(dir.path().join("t/old.parquet").exists());
        LocalStorage.abort_table(&write, &[]).await.unwrap();
        assert!(!dir.path().join(".t.staging-r1").exists());
    }

    #[tokio::test]
    async fn a_folder_dagrun_did_not_publish_is_never_replaced() {
        let dir = tree(&["t/input.json"]);
        let target = dir.path().join("t").display().to_string();
        let err = LocalStorage.begin_table(&target, "r1").await.unwrap_err();
        assert!(err.to_string().contains("refusing to replace"), "{err}");
        assert!(err.message.contains("such as `input.json`"), "{err}");
        // Even when the folder appears between the start and the swap.
        let dir = tree(&[]);
        let target = dir.path().join("t").display().to_string();
        let write = LocalStorage.begin_table(&target, "r1").await.unwrap();
        LocalStorage.write(&LocalStorage.table_file(&write, "new.parquet").path, b"data".to_vec()).await.unwrap();
        std::fs::create_dir_all(dir.path().join("t")).unwrap();
        std::fs::write(dir.path().join("t/mine.txt"), "user data").unwrap();
        let err = LocalStorage.commit_table(&write, &manifest(&[("new.parquet", 4)]), None).await.unwrap_err();
        assert!(err.message.contains("such as `mine.txt`"), "{err}");
        assert_eq!(std::fs::read_to_string(dir.path().join("t/mine.txt")).unwrap(), "user data");
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
