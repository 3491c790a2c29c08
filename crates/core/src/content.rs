//! Content fingerprints of local input files: what decides that an input is unchanged is its
//! bytes, not its clock. `touch` reruns nothing; a copy that keeps the size and modification
//! time but not the bytes is seen as changed.
//!
//! Each file's bytes are hashed once (xxh3-128) and the hash is kept in the runs folder
//! (`_cache/content-hashes.bin`), keyed by the file's path and identity (device, inode, change
//! and modification times, size: see [`ObjectMeta::identity`]); a file whose identity is
//! unchanged is not read again. S3 objects keep their ETags.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::{xxh3_64, xxh3_128};

use crate::storage::ObjectMeta;

/// Where the cache lives inside the runs folder.
pub const CACHE_FILE: &str = "_cache/content-hashes.bin";

/// The cache file's first bytes (its format's version).
const MAGIC: &[u8; 8] = b"dgrch\x00\x00\x01";

/// One record: xxh3-128 of the path, xxh3-64 of the identity, xxh3-128 of the bytes.
const RECORD: usize = 16 + 8 + 16;

/// Hashes of local files by path, with the identity each was computed for. The file is a list of
/// fixed-size records, appended to as files are hashed (a later record of a path wins); it is
/// rewritten with only the files still listed once it holds more than twice as many.
#[derive(Debug, Default)]
pub struct ContentHashes {
    file: Option<PathBuf>,
    /// Path key -> (identity key, content hash).
    known: HashMap<u128, (u64, u128)>,
    /// Records in the file as read.
    records: usize,
    /// Path keys this run found in the cache, unchanged.
    hits: Vec<u128>,
    /// Records this run computed (new or changed files).
    fresh: Vec<(u128, u64, u128)>,
    /// Files read and hashed by this run (the rest came from the cache).
    pub hashed: usize,
    /// Their bytes.
    pub hashed_bytes: u64,
    /// The wall time spent reading and hashing them.
    pub hashing: std::time::Duration,
}

impl ContentHashes {
    /// The cache of a local runs folder (`None`: no cache, every file is read). A cache file
    /// that is not in this format, or cut short, is ignored (and replaced when saved).
    pub fn open(runs_dir: Option<&Path>) -> Self {
        let file = runs_dir.map(|d| d.join(CACHE_FILE));
        let mut known = HashMap::new();
        let mut records = 0;
        if let Some(bytes) = file.as_ref().and_then(|f| std::fs::read(f).ok())
            && let Some(body) = bytes.strip_prefix(MAGIC)
            // A record cut short (a killed run) would misalign every later one: start over.
            && body.len() % RECORD == 0
        {
            known.reserve(body.len() / RECORD);
            for record in body.chunks_exact(RECORD) {
                let path = u128::from_le_bytes(record[..16].try_into().expect("16 bytes"));
                let identity = u64::from_le_bytes(record[16..24].try_into().expect("8 bytes"));
                let hash = u128::from_le_bytes(record[24..].try_into().expect("16 bytes"));
                known.insert(path, (identity, hash));
                records += 1;
            }
        }
        Self { file, known, records, ..Self::default() }
    }

    /// Sets each local file's `etag` to `xxh3:<hash of its bytes>`, from the cache where the
    /// file's identity is unchanged, else by reading it (on up to `threads` threads). A file
    /// that cannot be read, or has no identity, keeps no tag (its modification time counts).
    pub fn stamp(&mut self, files: &mut [ObjectMeta], threads: usize) {
        let mut missing: Vec<(usize, u128, u64)> = Vec::new();
        for (i, f) in files.iter_mut().enumerate() {
            // No identity (not a regular file, or no change time on this system): the file
            // keeps its modification time in the fingerprint and is never read here.
            let Some(identity) = f.identity.as_deref().map(|id| xxh3_64(id.as_bytes())) else {
                continue;
            };
            let key = xxh3_128(f.path.as_bytes());
            match self.known.get(&key) {
                Some(&(known, hash)) if known == identity => {
                    f.etag = Some(format!("xxh3:{hash:032x}"));
                    self.hits.push(key);
                }
                _ => missing.push((i, key, identity)),
            }
        }
        if missing.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        let threads = threads.clamp(1, 16).min(missing.len());
        let share = missing.len().div_ceil(threads);
        let paths: Vec<(&str, u64)> =
            missing.iter().map(|&(i, _, _)| (files[i].path.as_str(), files[i].size)).collect();
        let hashes: Vec<Option<u128>> = std::thread::scope(|scope| {
            let handles: Vec<_> = paths
                .chunks(share)
                .map(|part| {
                    scope.spawn(move || {
                        let mut buf = Vec::new();
                        part.iter().map(|(p, size)| hash_file(Path::new(p), *size, &mut buf)).collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
        });
        for (&(i, key, identity), hash) in missing.iter().zip(hashes) {
            let Some(hash) = hash else { continue };
            let f = &mut files[i];
            f.etag = Some(format!("xxh3:{hash:032x}"));
            self.hashed += 1;
            self.hashed_bytes += f.size;
            self.fresh.push((key, identity, hash));
        }
        self.hashing += started.elapsed();
    }

    /// Keeps what this run hashed: appended to the cache file, or, once the file holds more
    /// than twice the files this run saw, the file rewritten with only those (in one rename).
    /// Nothing is written when nothing was hashed. A failure is only a warning: the next run
    /// hashes again.
    pub fn save(&self) {
        let Some(file) = &self.file else { return };
        let live = self.hits.len() + self.fresh.len();
        let compact = self.records + self.fresh.len() > 2 * live + 1024;
        if self.fresh.is_empty() && !compact {
            return;
        }
        let record = |out: &mut Vec<u8>, (path, identity, hash): (u128, u64, u128)| {
            out.extend_from_slice(&path.to_le_bytes());
            out.extend_from_slice(&identity.to_le_bytes());
            out.extend_from_slice(&hash.to_le_bytes());
        };
        let written = (|| {
            let parent = file.parent().ok_or_else(|| std::io::Error::other("no folder"))?;
            std::fs::create_dir_all(parent)?;
            if !compact && self.records > 0 {
                let mut out = Vec::with_capacity(self.fresh.len() * RECORD);
                for &r in &self.fresh {
                    record(&mut out, r);
                }
                return std::fs::OpenOptions::new().append(true).open(file)?.write_all(&out);
            }
            let mut out = Vec::with_capacity(MAGIC.len() + live * RECORD);
            out.extend_from_slice(MAGIC);
            for key in &self.hits {
                if let Some(&(identity, hash)) = self.known.get(key) {
                    record(&mut out, (*key, identity, hash));
                }
            }
            for &r in &self.fresh {
                record(&mut out, r);
            }
            let tmp = parent.join(format!(".content-hashes.{}.tmp", std::process::id()));
            std::fs::write(&tmp, out)?;
            std::fs::rename(&tmp, file)
        })();
        if let Err(e) = written {
            tracing::warn!(path = %file.display(), "could not keep the inputs' content hashes: {e}");
        }
    }
}

/// The xxh3-128 of a file's bytes, in hex. `size` is the listed size: the buffer is made for it
/// so that a small file costs one read (and one more to see its end), with no `fstat`.
fn hash_file(path: &Path, size: u64, buf: &mut Vec<u8>) -> Option<u128> {
    buf.clear();
    buf.resize(usize::try_from(size).unwrap_or(0).saturating_add(1), 0);
    let mut file = std::fs::File::open(path).ok()?;
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(xxh3_128(&buf[..filled]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Storage;
    use crate::storage::local::LocalStorage;

    fn listed(dir: &Path) -> Vec<ObjectMeta> {
        let storage = LocalStorage;
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let glob = globset::Glob::new("**").unwrap().compile_matcher();
        rt.block_on(Storage::list(&storage, dir.to_str().unwrap(), &glob)).unwrap()
    }

    #[test]
    fn bytes_decide_not_clocks_and_unchanged_files_are_not_read_again() {
        let tmp = tempfile::tempdir().unwrap();
        let input = tmp.path().join("in");
        let runs = tmp.path().join("runs");
        std::fs::create_dir_all(&input).unwrap();
        std::fs::write(input.join("a.json"), "{\"a\":1}").unwrap();
        std::fs::write(input.join("b.json"), "{\"b\":2}").unwrap();
        let tags = |files: &[ObjectMeta]| files.iter().map(|f| f.etag.clone().unwrap()).collect::<Vec<_>>();

        let mut cache = ContentHashes::open(Some(&runs));
        let mut files = listed(&input);
        cache.stamp(&mut files, 2);
        assert_eq!(cache.hashed, 2);
        cache.save();
        let first = tags(&files);

        // Nothing changed: nothing is read.
        let mut cache = ContentHashes::open(Some(&runs));
        let mut files = listed(&input);
        cache.stamp(&mut files, 2);
        assert_eq!((cache.hashed, tags(&files)), (0, first.clone()));

        // A new modification time, same bytes: read again, same fingerprint.
        let a = std::fs::File::options().write(true).open(input.join("a.json")).unwrap();
        a.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60)).unwrap();
        let mut cache = ContentHashes::open(Some(&runs));
        let mut files = listed(&input);
        cache.stamp(&mut files, 2);
        assert_eq!((cache.hashed, tags(&files)), (1, first.clone()));
        cache.save();

        // Other bytes of the same size, the old modification time put back: seen as changed.
        let before = std::fs::metadata(input.join("b.json")).unwrap().modified().unwrap();
        std::fs::write(input.join("b.json"), "{\"b\":3}").unwrap();
        let b = std::fs::File::options().write(true).open(input.join("b.json")).unwrap();
        b.set_modified(before).unwrap();
        let mut cache = ContentHashes::open(Some(&runs));
        let mut files = listed(&input);
        cache.stamp(&mut files, 2);
        assert_eq!(cache.hashed, 1);
        assert_eq!(tags(&files)[0], first[0]);
        assert_ne!(tags(&files)[1], first[1]);
    }
}
