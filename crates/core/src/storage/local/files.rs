//! Single files: whole reads (huge pages for large ones), locked, atomic and exclusive writes,
//! and the content versions conditional writes compare.

use std::io;
use std::path::{Path, PathBuf};

use super::io_error;
use crate::storage::{Op, StorageError, StorageErrorKind, Version};

/// Reads a whole file. Large files go into memory backed by huge pages where the system offers
/// them (Linux, transparent huge pages on `madvise`): filling fresh memory then takes one page
/// fault per 2 MiB instead of one per 4 KiB, which is most of the cost of reading a log file that
/// is already in the page cache.
pub(super) fn read_file(path: &Path) -> Result<Vec<u8>, StorageError> {
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
pub(super) const HUGE_PAGE_READ: usize = 8 << 20;

#[cfg(target_os = "linux")]
pub(super) fn advise_huge_pages(data: &mut Vec<u8>) {
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
pub(super) fn advise_huge_pages(_: &mut Vec<u8>) {}

/// Runs `f` holding an exclusive lock on `.<name>.lock` beside `path`, so that the conditional
/// operations of several processes on one small file (the lake's lease) happen one at a time. The
/// kernel releases the lock if the process dies.
pub(super) fn with_file_lock<T>(path: &Path, f: impl FnOnce() -> Result<T, StorageError>) -> Result<T, StorageError> {
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
pub(super) fn lock_exclusive(file: &std::fs::File) -> io::Result<()> {
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
pub(super) fn lock_exclusive(_: &std::fs::File) -> io::Result<()> {
    Ok(())
}

pub(super) fn version_of(bytes: &[u8]) -> Version {
    use sha2::{Digest, Sha256};
    Version(Sha256::digest(bytes).iter().take(16).map(|b| format!("{b:02x}")).collect())
}

/// Writes a whole small file so that readers see the old content or the new, never a part: a
/// temporary file beside it, synced, then renamed over it.
pub(super) fn write_atomically(path: &Path, data: &[u8]) -> Result<(), StorageError> {
    let tmp = write_temporary(path, data).map_err(|e| io_error(Op::Writing, path, &e))?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error(Op::Writing, path, &e));
    }
    Ok(())
}

/// Writes `data` to a hidden temporary file beside `path`, synced; returns its path.
pub(super) fn write_temporary(path: &Path, data: &[u8]) -> io::Result<PathBuf> {
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

pub(super) fn already_exists(path: &Path) -> StorageError {
    StorageError::new(StorageErrorKind::AlreadyExists, Op::Creating, path.display().to_string(), "already exists")
}

/// Creates `path` with `data` only if nothing is there, complete or not at all: the data goes to a
/// temporary file that is then hard-linked into place, which fails if the name exists. No reader
/// ever sees a partial file, and no lock file is left beside it (other Delta writers on a local
/// disk create commit files the same way). Where hard links are not supported, the file's lock
/// serializes dagrun's own writers instead.
pub(super) fn create_exclusively(path: &Path, data: &[u8]) -> Result<(), StorageError> {
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
pub(super) fn current(path: &Path) -> Result<(Vec<u8>, Version), StorageError> {
    let bytes = std::fs::read(path).map_err(|e| io_error(Op::Reading, path, &e))?;
    let version = version_of(&bytes);
    Ok((bytes, version))
}

pub(super) fn changed(path: &Path) -> StorageError {
    StorageError::new(StorageErrorKind::Conflict, Op::Replacing, path.display().to_string(), "changed by someone else")
}
