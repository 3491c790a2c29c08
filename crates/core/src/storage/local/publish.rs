//! Swapping a staged table into place (`renameat2(RENAME_EXCHANGE)` on Linux), refusing folders
//! dagrun did not publish, and finding and removing what killed runs left beside a table.

use std::io;
use std::path::{Path, PathBuf};

use super::io_error;
use crate::storage::{MANIFEST, Op, SUCCESS_MARKER, StorageError, StorageErrorKind, TableManifest};

/// Swaps two folders atomically (Linux `renameat2(RENAME_EXCHANGE)`).
#[cfg(target_os = "linux")]
pub(super) fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let a = CString::new(a.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let b = CString::new(b.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[cfg(not(target_os = "linux"))]
pub(super) fn exchange(_: &Path, _: &Path) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Refuses to replace a folder that is not a table dagrun published: it must be missing, empty,
/// or hold a dagrun manifest. Checked before the first file is written and again at the swap.
pub(super) fn check_replaceable(target: &Path) -> Result<(), StorageError> {
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
                    return refuse(crate::storage::not_a_table_message(&relative));
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
            refuse(crate::storage::not_a_table_message(&name))
        }
    }
}

pub(super) fn publish_local(staging: &Path, target: &Path) -> Result<(), StorageError> {
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

/// What killed runs left of the table at `target`: staging folders beside it, and the
/// temporaries of Delta log entries never linked (`_delta_log/.00000000000000000003.json.tmp-<pid>-<nanos>`).
/// Listed only; [`remove_local_leftovers`] removes them.
pub(super) fn local_leftovers(target: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>), StorageError> {
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
    let log = target.join(crate::storage::delta::DELTA_LOG);
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
pub(super) fn remove_local_leftovers(
    folders: &[PathBuf],
    temporaries: &[PathBuf],
) -> Result<Vec<String>, StorageError> {
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
pub(super) const REMOVING: &str = ".removing";

/// Whether `name` is how [`write_temporary`] names its files: `.<name>.tmp-<pid>-<nanos>`.
pub(super) fn is_temporary_name(name: &str) -> bool {
    let Some((_, tail)) = name.strip_prefix('.').and_then(|n| n.rsplit_once(".tmp-")) else { return false };
    tail.split_once('-').is_some_and(|(pid, nanos)| {
        !pid.is_empty()
            && !nanos.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && nanos.bytes().all(|b| b.is_ascii_digit())
    })
}
