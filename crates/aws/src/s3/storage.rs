//! `S3Storage` as a [`Storage`]: reads, writes, conditional writes, and publishing a table by
//! its manifest (begin, commit, abort, leftovers).

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use dagrun_core::storage::delta::DELTA_LOG;
use dagrun_core::storage::{
    AccessCheck, Fence, MANIFEST, ObjectMeta, Op, SUCCESS_MARKER, Storage, StorageError, StorageErrorKind,
    TABLE_MARKER, TableFile, TableManifest, TableWrite, Version, is_hidden_name, not_a_table_message,
};
use futures::{StreamExt, TryStreamExt, stream};
use tracing::warn;

use super::client::content_type;
use super::errors::{NO_CREDENTIALS, body_bytes};
use super::names::{dagrun_named, tagged_name};
use super::{S3Storage, S3Uri};

#[async_trait]
impl Storage for S3Storage {
    async fn list(&self, root: &str, glob: &globset::GlobMatcher) -> Result<Vec<ObjectMeta>, StorageError> {
        let uri = S3Uri::parse(root)?;
        let objects = self.list_all(&uri, root).await?;
        if objects.is_empty() {
            return Err(StorageError::new(
                StorageErrorKind::NotFound,
                Op::Listing,
                root,
                "no objects under this prefix",
            ));
        }
        let prefix = uri.prefix();
        let mut out: Vec<ObjectMeta> = objects
            .iter()
            .filter_map(|o| {
                let key = o.key()?;
                let relative = key.strip_prefix(&prefix)?.to_string();
                if relative.is_empty()
                    || relative.ends_with('/')
                    || relative.split('/').any(is_hidden_name)
                    || !glob.is_match(&relative)
                {
                    return None;
                }
                Some(ObjectMeta {
                    path: format!("s3://{}/{key}", uri.bucket),
                    relative,
                    size: o.size().unwrap_or(0).max(0) as u64,
                    modified: o.last_modified().and_then(|t| SystemTime::try_from(*t).ok()),
                    etag: o.e_tag().map(String::from),
                    identity: None,
                })
            })
            .collect();
        out.sort_by(|a, b| a.relative.cmp(&b.relative));
        Ok(out)
    }

    async fn read(&self, path: &str) -> Result<Vec<u8>, StorageError> {
        let uri = S3Uri::parse(path)?;
        self.retrying(|| async {
            let output = self
                .client_for(&uri.bucket)
                .await
                .get_object()
                .bucket(&uri.bucket)
                .key(&uri.key)
                .send()
                .await
                .map_err(|e| self.error(Op::Reading, path, &uri.bucket, e))?;
            body_bytes(output).await.map_err(|m| {
                StorageError::new(StorageErrorKind::Transient, Op::Reading, path, format!("the body broke off: {m}"))
            })
        })
        .await
    }

    async fn head(&self, path: &str) -> Result<ObjectMeta, StorageError> {
        let uri = S3Uri::parse(path)?;
        let out = self
            .retrying(|| async {
                self.client_for(&uri.bucket)
                    .await
                    .head_object()
                    .bucket(&uri.bucket)
                    .key(&uri.key)
                    .send()
                    .await
                    .map_err(|e| self.error(Op::Checking, path, &uri.bucket, e))
            })
            .await?;
        Ok(ObjectMeta {
            path: path.to_string(),
            relative: uri.key.rsplit('/').next().unwrap_or_default().to_string(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            modified: out.last_modified().and_then(|t| SystemTime::try_from(*t).ok()),
            etag: out.e_tag().map(str::to_string),
            identity: None,
        })
    }

    async fn delete(&self, path: &str) -> Result<(), StorageError> {
        let uri = S3Uri::parse(path)?;
        self.retrying(|| async {
            self.client_for(&uri.bucket)
                .await
                .delete_object()
                .bucket(&uri.bucket)
                .key(&uri.key)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.error(Op::Deleting, path, &uri.bucket, e))
        })
        .await
    }

    async fn read_many(&self, paths: &[String], _concurrency: usize) -> Vec<Result<Vec<u8>, StorageError>> {
        let reads: Vec<_> = paths.iter().map(|p| self.read(p)).collect();
        stream::iter(reads).buffered(self.settings.max_concurrency).collect().await
    }

    async fn write(&self, path: &str, data: Vec<u8>) -> Result<(), StorageError> {
        let uri = S3Uri::parse(path)?;
        if data.len() as u64 >= self.settings.multipart_threshold {
            return self.put_multipart(&uri, &data).await;
        }
        self.retrying(|| self.put(&uri, &data)).await
    }

    async fn write_many(&self, files: Vec<(String, Vec<u8>)>, _concurrency: usize) -> Result<(), StorageError> {
        let mut writes = Vec::with_capacity(files.len());
        for (path, data) in files {
            writes.push(async move { self.write(&path, data).await });
        }
        stream::iter(writes).buffer_unordered(self.settings.max_concurrency).try_collect::<Vec<()>>().await.map(|_| ())
    }

    async fn remove_all(&self, path: &str) -> Result<(), StorageError> {
        let uri = S3Uri::parse(path)?;
        let keys: Vec<String> =
            self.list_all(&uri, path).await?.iter().filter_map(|o| o.key().map(String::from)).collect();
        self.delete_keys(&uri.bucket, keys, path).await
    }

    async fn abort_stale_uploads(&self, path: &str, before: SystemTime) -> Result<Vec<String>, StorageError> {
        let uri = S3Uri::parse(path)?;
        let prefix = uri.prefix();
        let mut stale = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .retrying(|| async {
                    self.client_for(&uri.bucket)
                        .await
                        .list_multipart_uploads()
                        .bucket(&uri.bucket)
                        .prefix(&prefix)
                        .set_key_marker(key_marker.clone())
                        .set_upload_id_marker(id_marker.clone())
                        .send()
                        .await
                        .map_err(|e| self.error(Op::ListingUploads, path, &uri.bucket, e))
                })
                .await?;
            for upload in page.uploads() {
                let begun = upload.initiated().and_then(|t| SystemTime::try_from(*t).ok());
                if let (Some(key), Some(id), Some(begun)) = (upload.key(), upload.upload_id(), begun)
                    && begun < before
                {
                    stale.push((key.to_string(), id.to_string()));
                }
            }
            if !page.is_truncated().unwrap_or(false) {
                break;
            }
            key_marker = page.next_key_marker().map(String::from);
            id_marker = page.next_upload_id_marker().map(String::from);
            if key_marker.is_none() && id_marker.is_none() {
                break;
            }
        }
        let mut aborted = Vec::new();
        for (key, id) in stale {
            let full = format!("s3://{}/{key}", uri.bucket);
            let done = self
                .retrying(|| async {
                    self.client_for(&uri.bucket)
                        .await
                        .abort_multipart_upload()
                        .bucket(&uri.bucket)
                        .key(&key)
                        .upload_id(&id)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| self.error(Op::AbortingUpload, &full, &uri.bucket, e))
                })
                .await;
            match done {
                Ok(()) => aborted.push(full),
                // Completed or aborted in between: nothing is billed any more.
                Err(e) if e.kind == StorageErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(aborted)
    }

    async fn begin_table(&self, target: &str, tag: &str) -> Result<TableWrite, StorageError> {
        let uri = S3Uri::parse(target)?;
        let target = target.trim_end_matches('/').to_string();
        let base = self.claim_table(&uri, &target).await?;
        Ok(TableWrite { root: target.clone(), target, tag: tag.to_string(), base })
    }

    fn table_file(&self, write: &TableWrite, relative: &str) -> TableFile {
        let relative = tagged_name(relative, &write.tag);
        TableFile { path: format!("{}/{relative}", write.root), relative }
    }

    async fn commit_table(
        &self,
        write: &TableWrite,
        manifest: &TableManifest,
        fence: Option<&dyn Fence>,
    ) -> Result<(), StorageError> {
        manifest.check().map_err(|m| StorageError::new(StorageErrorKind::Other, Op::Publishing, &write.target, m))?;
        let uri = S3Uri::parse(&write.target)?;
        let listed = self.list_all(&uri, &write.target).await?;
        let prefix = uri.prefix();
        // The last line of defence: the place must still be marked as dagrun's.
        let ours = [format!("{prefix}{MANIFEST}"), format!("{prefix}{TABLE_MARKER}")];
        if !listed.iter().any(|o| o.key().is_some_and(|k| ours.iter().any(|m| m == k))) {
            let named: std::collections::HashSet<String> =
                manifest.files.iter().map(|f| format!("{prefix}{}", f.path)).collect();
            if let Some(foreign) = listed.iter().filter_map(|o| o.key()).find(|k| !named.contains(*k)) {
                return Err(StorageError::new(
                    StorageErrorKind::Other,
                    Op::RefusingToReplace,
                    &write.target,
                    not_a_table_message(foreign.strip_prefix(&prefix).unwrap_or(foreign)),
                ));
            }
        }
        let sizes: std::collections::HashMap<&str, i64> =
            listed.iter().filter_map(|o| Some((o.key()?.strip_prefix(&prefix)?, o.size().unwrap_or(-1)))).collect();
        // Check every file of the new table before it becomes current.
        for file in &manifest.files {
            match sizes.get(file.path.as_str()) {
                Some(&size) if size as u64 == file.size => {}
                Some(&size) => {
                    return Err(StorageError::new(
                        StorageErrorKind::Other,
                        Op::Checking,
                        uri.child(&file.path),
                        format!("{size} bytes stored, {} written", file.size),
                    ));
                }
                None => {
                    return Err(StorageError::new(
                        StorageErrorKind::Other,
                        Op::Checking,
                        uri.child(&file.path),
                        "missing after upload",
                    ));
                }
            }
        }
        let json = serde_json::to_vec_pretty(manifest).expect("a manifest serializes");
        let manifest_path = uri.child(MANIFEST);
        // The files of the table this one replaces: the previous manifest names them.
        let previous: std::collections::HashSet<String> = match self.read(&manifest_path).await {
            Ok(bytes) => serde_json::from_slice::<TableManifest>(&bytes)
                .map(|m| m.files.into_iter().map(|f| format!("{prefix}{}", f.path)).collect())
                .unwrap_or_default(),
            Err(_) => std::collections::HashSet::new(),
        };
        // Listed above, before the check: what a run that took the lake over writes is not in it.
        if let Some(fence) = fence {
            fence.check().await?;
        }
        // Exactly over the table this write began from: a run frozen meanwhile, whose lake was
        // taken over and published, never publishes over the newer table (its files may be gone).
        let published = match &write.base {
            Some(version) => self.replace_if(&manifest_path, json, version).await,
            None => self.create_new(&manifest_path, json).await,
        };
        if let Err(e) = published {
            return Err(match e.kind {
                StorageErrorKind::Conflict | StorageErrorKind::AlreadyExists | StorageErrorKind::NotFound => {
                    StorageError::new(
                        StorageErrorKind::Conflict,
                        Op::Publishing,
                        &write.target,
                        "another run published this table after this load began; nothing of this load was published",
                    )
                }
                _ => e,
            });
        }
        let marker = S3Uri { bucket: uri.bucket.clone(), key: format!("{prefix}{SUCCESS_MARKER}") };
        self.retrying(|| self.put(&marker, b"")).await?;
        // The new table is current; the old files go: those the previous manifest named, and
        // files dagrun names that loads which never published left. Hidden names (`_SUCCESS`,
        // the manifest, dagrun's marker) and other tools' files stay.
        let keep: std::collections::HashSet<String> =
            manifest.files.iter().map(|f| format!("{prefix}{}", f.path)).collect();
        let stale: Vec<String> = listed
            .iter()
            .filter_map(|o| o.key())
            .filter(|k| !keep.contains(*k))
            .filter(|k| {
                previous.contains(*k)
                    || k.strip_prefix(&prefix)
                        .is_some_and(|rel| !rel.split('/').any(is_hidden_name) && dagrun_named(rel))
            })
            .map(String::from)
            .collect();
        if let Err(e) = self.delete_keys(&uri.bucket, stale, &write.target).await {
            // The table is published; stale files are ignored by manifest readers and go next time.
            warn!(error = %e, "published, but old files could not all be deleted");
        }
        Ok(())
    }

    async fn abort_table(&self, write: &TableWrite, files: &[TableFile]) -> Result<(), StorageError> {
        let uri = S3Uri::parse(&write.target)?;
        let keys: Vec<String> = files.iter().filter_map(|f| S3Uri::parse(&f.path).ok().map(|u| u.key)).collect();
        self.delete_keys(&uri.bucket, keys, &write.target).await
    }

    async fn create_new(&self, path: &str, data: Vec<u8>) -> Result<Version, StorageError> {
        let uri = S3Uri::parse(path)?;
        let result = self
            .retrying(|| async {
                self.client_for(&uri.bucket)
                    .await
                    .put_object()
                    .bucket(&uri.bucket)
                    .key(&uri.key)
                    .content_type(content_type(&uri.key))
                    .if_none_match("*")
                    .body(ByteStream::from(data.clone()))
                    .send()
                    .await
                    .map_err(|e| self.error(Op::Creating, path, &uri.bucket, e))
            })
            .await;
        match result {
            Ok(out) => Ok(Version(out.e_tag().unwrap_or_default().to_string())),
            Err(e) if e.kind == StorageErrorKind::Conflict => {
                Err(StorageError::new(StorageErrorKind::AlreadyExists, Op::Creating, path, "already exists"))
            }
            Err(e) => Err(e),
        }
    }

    async fn read_versioned(&self, path: &str) -> Result<(Vec<u8>, Version), StorageError> {
        let uri = S3Uri::parse(path)?;
        self.retrying(|| async {
            let output = self
                .client_for(&uri.bucket)
                .await
                .get_object()
                .bucket(&uri.bucket)
                .key(&uri.key)
                .send()
                .await
                .map_err(|e| self.error(Op::Reading, path, &uri.bucket, e))?;
            let version = Version(output.e_tag().unwrap_or_default().to_string());
            let body = body_bytes(output).await.map_err(|m| {
                StorageError::new(StorageErrorKind::Transient, Op::Reading, path, format!("the body broke off: {m}"))
            })?;
            Ok((body, version))
        })
        .await
    }

    async fn replace_if(&self, path: &str, data: Vec<u8>, version: &Version) -> Result<Version, StorageError> {
        let uri = S3Uri::parse(path)?;
        let out = self
            .retrying(|| async {
                self.client_for(&uri.bucket)
                    .await
                    .put_object()
                    .bucket(&uri.bucket)
                    .key(&uri.key)
                    .content_type(content_type(&uri.key))
                    .if_match(&version.0)
                    .body(ByteStream::from(data.clone()))
                    .send()
                    .await
                    .map_err(|e| self.error(Op::Replacing, path, &uri.bucket, e))
            })
            .await?;
        Ok(Version(out.e_tag().unwrap_or_default().to_string()))
    }

    async fn delete_if(&self, path: &str, version: &Version) -> Result<(), StorageError> {
        let uri = S3Uri::parse(path)?;
        self.retrying(|| async {
            self.client_for(&uri.bucket)
                .await
                .delete_object()
                .bucket(&uri.bucket)
                .key(&uri.key)
                .if_match(&version.0)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.error(Op::Deleting, path, &uri.bucket, e))
        })
        .await
    }

    async fn remove_leftovers(
        &self,
        target: &str,
        dead: &[String],
        fence: Option<&dyn Fence>,
    ) -> Result<Vec<String>, StorageError> {
        let uri = S3Uri::parse(target)?;
        let prefix = uri.prefix();
        let listed = match self.list_all(&uri, target).await {
            Ok(listed) => listed,
            Err(e) if e.kind == StorageErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let keys: Vec<&str> = listed.iter().filter_map(|o| o.key()).collect();
        if keys.iter().any(|k| k.starts_with(&format!("{prefix}{DELTA_LOG}/"))) {
            // A Delta table: its log says which files are its own, not a manifest.
            return Ok(Vec::new());
        }
        let manifest_key = format!("{prefix}{MANIFEST}");
        let named: std::collections::HashSet<String> = if keys.contains(&manifest_key.as_str()) {
            let bytes = self.read(&uri.child(MANIFEST)).await?;
            match serde_json::from_slice::<TableManifest>(&bytes) {
                Ok(m) => m.files.into_iter().map(|f| format!("{prefix}{}", f.path)).collect(),
                // Not dagrun's table: nothing here is dagrun's to remove.
                Err(_) => return Ok(Vec::new()),
            }
        } else if keys.contains(&format!("{prefix}{TABLE_MARKER}").as_str()) {
            std::collections::HashSet::new()
        } else {
            return Ok(Vec::new());
        };
        // The staging folders of Spark steps that did not finish, and what processes proven dead
        // wrote. Other data files of loads that never published go when this run publishes the
        // table (`commit_table`), not before: a run frozen before its publish may still name
        // them, until a newer manifest fences it. Anything else (another tool's files, a folder
        // someone keeps there) stays.
        let of_dead = |rel: &str| {
            dagrun_named(rel)
                && dagrun_core::storage::delta::parse_data_file(rel.rsplit('/').next().unwrap_or(rel))
                    .is_some_and(|(_, process, _)| dead.iter().any(|d| d == process))
        };
        let leftovers: Vec<String> = keys
            .iter()
            .filter(|k| !named.contains(**k))
            .filter(|k| k.strip_prefix(&prefix).is_some_and(|rel| rel.starts_with("_staging-") || of_dead(rel)))
            .map(|k| k.to_string())
            .collect();
        if leftovers.is_empty() {
            return Ok(Vec::new());
        }
        // Listed before the check: what a run that took the lake over writes is not in the list.
        if let Some(fence) = fence {
            fence.check().await?;
        }
        self.delete_keys(&uri.bucket, leftovers.clone(), target).await?;
        Ok(leftovers.into_iter().map(|k| format!("s3://{}/{k}", uri.bucket)).collect())
    }

    async fn ready(&self) -> Result<(), String> {
        use aws_credential_types::provider::ProvideCredentials;
        use aws_credential_types::provider::error::CredentialsError;
        let Some(provider) = &self.credentials else {
            return Err(NO_CREDENTIALS.to_string());
        };
        match tokio::time::timeout(Duration::from_secs(5), provider.provide_credentials()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(CredentialsError::CredentialsNotLoaded(_))) => Err(NO_CREDENTIALS.to_string()),
            Ok(Err(e)) => Err(format!("the AWS credentials could not be loaded: {}", DisplayErrorContext(&e))),
            Err(_) => Err("the AWS credential chain found nothing within 5 s".to_string()),
        }
    }

    async fn check_access(&self, path: &str, write: bool) -> AccessCheck {
        let result: Result<String, StorageError> = async {
            let uri = S3Uri::parse(path)?;
            self.retrying(|| async {
                self.client_for(&uri.bucket)
                    .await
                    .head_bucket()
                    .bucket(&uri.bucket)
                    .send()
                    .await
                    .map_err(|e| self.error(Op::Checking, path, &uri.bucket, e))
            })
            .await?;
            if write {
                return Ok(format!("bucket `{}` reachable", uri.bucket));
            }
            let page = self
                .retrying(|| async {
                    self.client_for(&uri.bucket)
                        .await
                        .list_objects_v2()
                        .bucket(&uri.bucket)
                        .prefix(uri.prefix())
                        .max_keys(1)
                        .send()
                        .await
                        .map_err(|e| self.error(Op::Checking, path, &uri.bucket, e))
                })
                .await?;
            if page.contents().is_empty() {
                Err(StorageError::new(StorageErrorKind::NotFound, Op::Checking, path, "no objects under this prefix"))
            } else {
                Ok(format!("bucket `{}` reachable, prefix holds objects", uri.bucket))
            }
        }
        .await;
        match result {
            Ok(detail) => AccessCheck { path: path.to_string(), ok: true, detail },
            Err(e) => AccessCheck { path: path.to_string(), ok: false, detail: e.message },
        }
    }
}
