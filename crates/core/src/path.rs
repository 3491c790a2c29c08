//! Paths as dagrun names and compares them: local folders and `s3://bucket/prefix` URIs. Two
//! spellings of one place (`out/./songs/`, `out/songs`) compare equal after [`normalize_path`], and
//! [`resolve`] also resolves symbolic links on local disk, so that a folder reached through a link
//! is recognised as the folder it is. Folder semantics everywhere: `out/songs` is not inside
//! `out/son`.
//!
//! Globs ([`compile_glob`]) match paths relative to a listed root.
//!
//! A leaf module: it knows text and, for [`resolve`], where the file system's links point. It never
//! reads or writes data.

use std::path::{Component, Path, PathBuf};

/// Whether a path is an `s3://` URI.
pub fn is_s3(path: &str) -> bool {
    path.starts_with("s3://")
}

/// Compiles a glob the way listings match it: `*` stays within one folder, `**` crosses folders.
pub fn compile_glob(glob: &str) -> Result<globset::GlobMatcher, globset::Error> {
    Ok(globset::GlobBuilder::new(glob).literal_separator(true).build()?.compile_matcher())
}

/// The bucket of an `s3://bucket/prefix` URI.
pub fn bucket_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("s3://")?;
    let bucket = rest.split('/').next().unwrap_or("");
    (!bucket.is_empty()).then_some(bucket)
}

/// Joins a root and a relative part with exactly one `/`.
pub fn join_path(root: &str, rest: &str) -> String {
    if rest.is_empty() {
        return root.to_string();
    }
    format!("{}/{}", root.trim_end_matches('/'), rest.trim_start_matches('/'))
}

/// The path with `.`, empty segments and trailing `/` removed and `..` applied lexically.
pub(crate) fn normalize_path(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    let mut parts: Vec<&str> = Vec::new();
    let (prefix, rest) = match trimmed.strip_prefix("s3://") {
        Some(rest) => ("s3://", rest),
        None => ("", trimmed),
    };
    for part in rest.split('/') {
        match part {
            "" | "." if !parts.is_empty() => {}
            ".." if parts.last().is_some_and(|p| *p != ".." && !p.is_empty()) => {
                parts.pop();
            }
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    if joined.is_empty() && path.starts_with('/') { "/".to_string() } else { format!("{prefix}{joined}") }
}

/// Whether `inner` lies strictly inside the folder `outer` (both normalized).
pub(crate) fn is_inside(inner: &str, outer: &str) -> bool {
    if outer == "/" {
        return inner.len() > 1 && inner.starts_with('/');
    }
    inner.len() > outer.len() && inner.starts_with(outer) && inner.as_bytes()[outer.len()] == b'/'
}

/// How two places relate, seen from the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overlap {
    /// The same folder.
    Same,
    /// The first lies inside the second.
    Inside,
    /// The first contains the second.
    Contains,
}

/// How `a` and `b` (both from [`resolve`]) overlap, if they do.
pub(crate) fn overlap(a: &str, b: &str) -> Option<Overlap> {
    if a == b {
        Some(Overlap::Same)
    } else if is_inside(a, b) {
        Some(Overlap::Inside)
    } else if is_inside(b, a) {
        Some(Overlap::Contains)
    } else {
        None
    }
}

/// A local path made absolute against the current folder and normalized, links left as they are;
/// S3 URIs normalized.
pub(crate) fn absolute(path: &str) -> String {
    if is_s3(path) || path.starts_with('/') {
        return normalize_path(path);
    }
    match std::env::current_dir() {
        Ok(cwd) => normalize_path(&cwd.join(path).display().to_string()),
        Err(_) => normalize_path(path),
    }
}

/// The place a path names, comparable with [`overlap`]: S3 URIs normalized; local paths made
/// absolute, with every symbolic link along the part that exists resolved (as the kernel would),
/// and the part that does not exist yet normalized lexically.
pub(crate) fn resolve(path: &str) -> String {
    if is_s3(path) {
        return normalize_path(path);
    }
    let raw = Path::new(if path.is_empty() { "." } else { path });
    let absolute = if raw.is_absolute() {
        raw.to_path_buf()
    } else {
        std::env::current_dir().map(|cwd| cwd.join(raw)).unwrap_or_else(|_| raw.to_path_buf())
    };
    // The longest prefix that exists is canonicalized; the rest is appended as written.
    let components: Vec<Component> = absolute.components().collect();
    for split in (1..=components.len()).rev() {
        let head: PathBuf = components[..split].iter().collect();
        if let Ok(real) = std::fs::canonicalize(&head) {
            let mut out = real;
            for c in &components[split..] {
                match c {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::CurDir => {}
                    other => out.push(other.as_os_str()),
                }
            }
            return normalize_path(&out.display().to_string());
        }
    }
    normalize_path(&absolute.display().to_string())
}

/// The folders that contain `resolved`, nearest last, ending with `resolved` itself:
/// `/a/b/c` gives `/`, `/a`, `/a/b`, `/a/b/c`; `s3://b/x/y` gives `s3://b`, `s3://b/x`, `s3://b/x/y`.
pub(crate) fn ancestors_and_self(resolved: &str) -> Vec<&str> {
    let start = if let Some(rest) = resolved.strip_prefix("s3://") {
        let bucket_end = rest.find('/').map_or(resolved.len(), |i| i + 5);
        let mut out = vec![&resolved[..bucket_end]];
        out.extend(resolved[bucket_end..].match_indices('/').skip(1).map(|(i, _)| &resolved[..bucket_end + i]));
        if bucket_end < resolved.len() {
            out.push(resolved);
        }
        return out;
    } else if resolved.starts_with('/') {
        1
    } else {
        0
    };
    let mut out = Vec::new();
    if start == 1 {
        out.push("/");
    }
    out.extend(resolved.match_indices('/').filter(|(i, _)| *i >= start && *i > 0).map(|(i, _)| &resolved[..i]));
    if resolved != "/" {
        out.push(resolved);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizing_makes_spellings_of_one_place_equal() {
        assert_eq!(normalize_path("out/./songs/"), "out/songs");
        assert_eq!(normalize_path("out//songs/../users"), "out/users");
        assert_eq!(normalize_path("s3://lake/a/./b/"), "s3://lake/a/b");
        assert_eq!(normalize_path("/"), "/");
        assert_eq!(normalize_path("/a/.."), "/");
    }

    #[test]
    fn inside_means_a_whole_folder_name_deeper() {
        assert!(is_inside("out/songs/x", "out/songs"));
        assert!(!is_inside("out/songs2", "out/songs"));
        assert!(!is_inside("out/songs", "out/songs"));
        assert!(is_inside("/tmp", "/"));
        assert_eq!(overlap("s3://b/lake", "s3://b/lake/songs"), Some(Overlap::Contains));
        assert_eq!(overlap("s3://b/lake/songs", "s3://b/lake"), Some(Overlap::Inside));
        assert_eq!(overlap("s3://b/lake", "s3://c/lake"), None);
    }

    #[test]
    fn resolving_follows_links_and_keeps_the_missing_part() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir_all(real.join("songs")).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap().display().to_string();
        let via_link = resolve(&format!("{}/link/songs", dir.path().display()));
        assert_eq!(via_link, format!("{base}/real/songs"));
        let missing = resolve(&format!("{}/link/new/./x/../y", dir.path().display()));
        assert_eq!(missing, format!("{base}/real/new/y"));
        assert_eq!(resolve("s3://b/x/"), "s3://b/x");
    }

    #[test]
    fn ancestors_run_from_the_root_to_the_place() {
        assert_eq!(ancestors_and_self("/a/b"), vec!["/", "/a", "/a/b"]);
        assert_eq!(ancestors_and_self("/"), vec!["/"]);
        assert_eq!(ancestors_and_self("s3://b/x/y"), vec!["s3://b", "s3://b/x", "s3://b/x/y"]);
        assert_eq!(ancestors_and_self("s3://b"), vec!["s3://b"]);
        assert_eq!(ancestors_and_self("rel/a"), vec!["rel", "rel/a"]);
    }
}
