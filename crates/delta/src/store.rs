//! delta-rs reads and writes the `_delta_log` through an `object_store::ObjectStore`. This one is
//! dagrun's own [`Storage`] (the local disk, or S3 through aws-sdk-s3), so a Delta commit uses the
//! same client, endpoint, retries, credentials and conditional writes as everything else: a
//! commit file is created with `If-None-Match: *` on S3 and an exclusive create on disk, so two
//! writers can never both take one version, and no DynamoDB is needed.
//!
//! A commit's store carries the run's [`Fence`]: the log entry that makes a version (the only
//! write that publishes) is created only after the fence says this run still holds the lake.
//!
//! Paths: the store is rooted at a bucket (`s3://bucket`) or at the file system's root, the way
//! delta-rs maps a table URL's path onto its store.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use dagrun_core::path::compile_glob;
use dagrun_core::storage::Fence;
use dagrun_core::storage::delta::DELTA_LOG;
use dagrun_core::storage::{ObjectMeta as Meta, Storage, StorageError, StorageErrorKind, Version};
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyMode, CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// An [`ObjectStore`] over a dagrun [`Storage`].
#[derive(Clone)]
pub(crate) struct StorageStore {
    storage: Arc<dyn Storage>,
    /// `s3://bucket`, or empty for the local file system.
    root: String,
    /// Checked before a commit's log entry is created.
    fence: Option<Arc<dyn Fence>>,
    /// Why the fence stopped a commit, once it did.
    fenced: Arc<Mutex<Option<StorageError>>>,
}

impl fmt::Debug for StorageStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorageStore({})", self.display_root())
    }
}

impl fmt::Display for StorageStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dagrun storage at {}", self.display_root())
    }
}

const STORE: &str = "dagrun";

impl StorageStore {
    /// A store rooted at `root` (`s3://bucket`, or `""` for the local file system).
    pub(crate) fn new(storage: Arc<dyn Storage>, root: String) -> Self {
        Self { storage, root, fence: None, fenced: Arc::default() }
    }

    /// The store of a commit: its log entry waits for `fence`.
    pub(crate) fn fenced(storage: Arc<dyn Storage>, root: String, fence: Arc<dyn Fence>) -> Self {
        Self { storage, root, fence: Some(fence), fenced: Arc::default() }
    }

    /// Why the fence refused a commit, if it did.
    pub(crate) fn refusal(&self) -> Arc<Mutex<Option<StorageError>>> {
        self.fenced.clone()
    }

    fn display_root(&self) -> &str {
        if self.root.is_empty() { "/" } else { &self.root }
    }

    /// The storage's path of `location`.
    fn full(&self, location: &Path) -> String {
        if self.root.is_empty() { format!("/{location}") } else { format!("{}/{location}", self.root) }
    }

    fn meta(&self, location: Path, m: &Meta) -> ObjectMeta {
        ObjectMeta {
            location,
            last_modified: m.modified.map_or(DateTime::<Utc>::UNIX_EPOCH, DateTime::<Utc>::from),
            size: m.size,
            e_tag: m.etag.clone(),
            version: None,
        }
    }
}

/// object_store's error for a storage error, keeping the kinds delta-rs acts on.
fn error(path: &str, e: StorageError) -> object_store::Error {
    match e.kind {
        StorageErrorKind::NotFound => object_store::Error::NotFound { path: path.into(), source: Box::new(e) },
        StorageErrorKind::AlreadyExists => {
            object_store::Error::AlreadyExists { path: path.into(), source: Box::new(e) }
        }
        StorageErrorKind::Conflict => object_store::Error::Precondition { path: path.into(), source: Box::new(e) },
        StorageErrorKind::PermissionDenied => {
            object_store::Error::PermissionDenied { path: path.into(), source: Box::new(e) }
        }
        _ => object_store::Error::Generic { store: STORE, source: Box::new(e) },
    }
}

/// Whether `location` is a commit's entry in a Delta log (`.../_delta_log/00000000000000000003.json`).
fn is_commit_entry(location: &Path) -> bool {
    let text = location.as_ref();
    text.rsplit_once('/').is_some_and(|(dir, name)| {
        (dir == DELTA_LOG || dir.ends_with(&format!("/{DELTA_LOG}")))
            && name.strip_suffix(".json").is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
    })
}

fn payload_bytes(payload: PutPayload) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.content_length());
    for chunk in payload.iter() {
        out.extend_from_slice(chunk);
    }
    out
}

fn byte_range(range: Option<&GetRange>, size: u64) -> std::result::Result<Range<u64>, String> {
    let r = match range {
        None => 0..size,
        Some(GetRange::Bounded(r)) => r.start..r.end.min(size),
        Some(GetRange::Offset(o)) => *o..size,
        Some(GetRange::Suffix(n)) => size.saturating_sub(*n)..size,
    };
    if r.start > r.end || (r.start >= size && size > 0 && range.is_some()) {
        return Err(format!("range {r:?} is outside an object of {size} bytes"));
    }
    Ok(r)
}

#[async_trait]
impl ObjectStore for StorageStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let path = self.full(location);
        let data = payload_bytes(payload);
        let version = match opts.mode {
            PutMode::Overwrite => {
                self.storage.write(&path, data).await.map_err(|e| error(&path, e))?;
                None
            }
            PutMode::Create => {
                if let Some(fence) = self.fence.as_ref().filter(|_| is_commit_entry(location))
                    && let Err(e) = fence.check().await
                {
                    *self.fenced.lock().expect("fence") = Some(e.clone());
                    return Err(error(&path, e));
                }
                Some(self.storage.create_new(&path, data).await.map_err(|e| error(&path, e))?)
            }
            PutMode::Update(v) => {
                let Some(etag) = v.e_tag else {
                    return Err(object_store::Error::NotImplemented {
                        operation: "an update without an ETag".into(),
                        implementer: STORE.into(),
                    });
                };
                Some(self.storage.replace_if(&path, data, &Version(etag)).await.map_err(|e| error(&path, e))?)
            }
        };
        Ok(PutResult { e_tag: version.map(|v| v.0), version: None })
    }

    async fn put_multipart_opts(
        &self,
        _location: &Path,
        _opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        Err(object_store::Error::NotImplemented { operation: "multipart uploads".into(), implementer: STORE.into() })
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let path = self.full(location);
        let head = self.storage.head(&path).await.map_err(|e| error(&path, e))?;
        let meta = self.meta(location.clone(), &head);
        if options.head {
            return Ok(GetResult {
                payload: GetResultPayload::Stream(stream::empty().boxed()),
                range: 0..meta.size,
                meta,
                attributes: Default::default(),
            });
        }
        let data = self.storage.read(&path).await.map_err(|e| error(&path, e))?;
        let size = data.len() as u64;
        let range = byte_range(options.range.as_ref(), size)
            .map_err(|m| object_store::Error::Generic { store: STORE, source: m.into() })?;
        let bytes = Bytes::from(data).slice(range.start as usize..range.end as usize);
        let meta = ObjectMeta { size, ..meta };
        Ok(GetResult {
            payload: GetResultPayload::Stream(stream::once(async move { Ok(bytes) }).boxed()),
            range,
            meta,
            attributes: Default::default(),
        })
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let this = self.clone();
        locations
            .then(move |location| {
                let this = this.clone();
                async move {
                    let location = location?;
                    let path = this.full(&location);
                    this.storage.delete(&path).await.map_err(|e| error(&path, e))?;
                    Ok(location)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let this = self.clone();
        let prefix = prefix.cloned().unwrap_or_default();
        stream::once(async move { this.list_under(&prefix, "**").await })
            .map(|r| match r {
                Ok(items) => stream::iter(items.into_iter().map(Ok)).boxed(),
                Err(e) => stream::once(async move { Err(e) }).boxed(),
            })
            .flatten()
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let prefix = prefix.cloned().unwrap_or_default();
        let objects = self.list_under(&prefix, "*").await?;
        Ok(ListResult { common_prefixes: Vec::new(), objects })
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let source = self.full(from);
        let target = self.full(to);
        let data = self.storage.read(&source).await.map_err(|e| error(&source, e))?;
        match options.mode {
            CopyMode::Overwrite => self.storage.write(&target, data).await.map_err(|e| error(&target, e)),
            CopyMode::Create => self.storage.create_new(&target, data).await.map(|_| ()).map_err(|e| error(&target, e)),
        }
    }
}

impl StorageStore {
    /// Files under `prefix` matching `glob`; a missing prefix lists nothing, as object stores do.
    async fn list_under(&self, prefix: &Path, glob: &str) -> Result<Vec<ObjectMeta>> {
        let root = self.full(prefix);
        let matcher =
            compile_glob(glob).map_err(|e| object_store::Error::Generic { store: STORE, source: Box::new(e) })?;
        let listed = match self.storage.list(&root, &matcher).await {
            Ok(listed) => listed,
            Err(e) if e.kind == StorageErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(error(&root, e)),
        };
        Ok(listed
            .iter()
            .map(|m| {
                let text =
                    if prefix.as_ref().is_empty() { m.relative.clone() } else { format!("{prefix}/{}", m.relative) };
                let location = Path::parse(&text).unwrap_or_else(|_| Path::from(text.as_str()));
                self.meta(location, m)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_commits_log_entry_waits_for_the_fence() {
        assert!(is_commit_entry(&Path::from("lake/songs/_delta_log/00000000000000000003.json")));
        assert!(!is_commit_entry(&Path::from("lake/songs/_delta_log/00000000000000000010.checkpoint.parquet")));
        assert!(!is_commit_entry(&Path::from("lake/songs/_delta_log/_last_checkpoint")));
        assert!(!is_commit_entry(&Path::from("lake/songs/year=2018/part-00000-r-p-1.parquet")));
    }

    #[test]
    fn ranges_follow_object_store_semantics() {
        assert_eq!(byte_range(None, 10).unwrap(), 0..10);
        assert_eq!(byte_range(Some(&GetRange::Bounded(2..5)), 10).unwrap(), 2..5);
        assert_eq!(byte_range(Some(&GetRange::Bounded(2..50)), 10).unwrap(), 2..10);
        assert_eq!(byte_range(Some(&GetRange::Offset(4)), 10).unwrap(), 4..10);
        assert_eq!(byte_range(Some(&GetRange::Suffix(3)), 10).unwrap(), 7..10);
        assert!(byte_range(Some(&GetRange::Offset(11)), 10).is_err());
    }
}
