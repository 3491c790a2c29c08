//! The SDK client of an `S3Storage`: connecting (region, endpoint, path style, retries),
//! a client per bucket region, the object-level retry rounds, PUTs and multipart uploads, paged
//! listings, the conditional claim of a table and batched deletes.

use std::future::Future;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::Region;
use aws_sdk_s3::config::retry::{RetryPartition, TokenBucket};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use dagrun_core::plan::S3Settings;
use dagrun_core::retry::RetryPolicy;
use dagrun_core::spec::{Jitter, ServerSideEncryption};
use dagrun_core::storage::{
    MANIFEST, Op, Storage, StorageError, StorageErrorKind, TABLE_MARKER, Version, is_manifest, not_a_table_message,
};
use futures::{StreamExt, TryStreamExt, stream};
use tracing::debug;

use super::errors::classify;
use super::{OBJECT_ROUNDS, S3Storage, S3Uri, effective_endpoint, wants_path_style};

impl S3Storage {
    /// Builds the client from the standard AWS configuration chain plus `settings`.
    pub async fn connect(settings: &S3Settings) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let sdk = crate::load_sdk_config(loader).await;
        let endpoint = effective_endpoint(settings);
        let path_style = settings.path_style.unwrap_or_else(|| endpoint.as_deref().is_some_and(wants_path_style));
        let mut builder = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(path_style)
            // Each request: the SDK's standard mode. Its shared retry quota would stop retrying
            // under a sustained fault rate; the per-object budget (`retrying`) bounds the work
            // instead.
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(settings.max_attempts.max(1))
                    .with_initial_backoff(Duration::from_millis(100))
                    .with_max_backoff(Duration::from_secs(5)),
            )
            .retry_partition(RetryPartition::custom("dagrun-s3").token_bucket(TokenBucket::unlimited()).build())
            .timeout_config(
                // A stalled connection fails the attempt (and is retried) instead of hanging.
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .read_timeout(Duration::from_secs(60))
                    .operation_attempt_timeout(Duration::from_secs(900))
                    .build(),
            );
        if sdk.region().is_none() && settings.region.is_none() {
            // An S3-compatible server does not care; AWS itself answers with a redirect we report.
            builder = builder.region(Region::new("us-east-1"));
        }
        if let Some(url) = &settings.endpoint_url {
            builder = builder.endpoint_url(url.clone());
        }
        let config = builder.build();
        let region = config.region().map_or_else(|| "us-east-1".to_string(), |r| r.to_string());
        let client = Client::from_conf(config);
        let endpoint = endpoint.unwrap_or_else(|| "AWS S3".to_string());
        debug!(endpoint = %endpoint, path_style, region = %region, "S3 client ready");
        let credentials = sdk.credentials_provider();
        Self {
            client,
            region,
            by_bucket: Default::default(),
            by_region: Default::default(),
            settings: settings.clone(),
            endpoint,
            credentials,
        }
    }

    /// The client for `bucket`, in the bucket's region. The region is asked once per bucket with
    /// HeadBucket, which S3 answers with `x-amz-bucket-region`, also when it refuses the request
    /// (301 from another region's endpoint, 400 for a request signed for another region, 403).
    /// The Rust SDK follows no cross-region redirect itself. When S3 does not say (an
    /// S3-compatible server, a bucket that does not exist), the configured region is used.
    pub(super) async fn client_for(&self, bucket: &str) -> Client {
        let cell = self.by_bucket.lock().expect("bucket regions").entry(bucket.to_string()).or_default().clone();
        let resolved = cell
            .get_or_try_init(|| async {
                let answer = self.client.head_bucket().bucket(bucket).send().await;
                let region = match &answer {
                    Ok(out) => out.bucket_region().map(String::from),
                    Err(e) => e.raw_response().and_then(|r| r.headers().get("x-amz-bucket-region")).map(String::from),
                };
                // No answer at all (the network, no credentials): ask again next time.
                if region.is_none() && matches!(answer, Err(SdkError::DispatchFailure(_) | SdkError::TimeoutError(_))) {
                    return Err(());
                }
                Ok(match region {
                    Some(region) if region != self.region => {
                        debug!(bucket, region = %region, "the bucket is in another region than the client's");
                        self.regional(&region)
                    }
                    _ => self.client.clone(),
                })
            })
            .await;
        resolved.cloned().unwrap_or_else(|()| self.client.clone())
    }

    /// The client for another region: the same settings, signed for and sent to that region.
    pub(super) fn regional(&self, region: &str) -> Client {
        let mut clients = self.by_region.lock().expect("regional clients");
        clients
            .entry(region.to_string())
            .or_insert_with(|| {
                let config = self.client.config().to_builder().region(Region::new(region.to_string())).build();
                Client::from_conf(config)
            })
            .clone()
    }

    /// Runs `op` (one request, which the SDK retries itself) until it succeeds, fails
    /// permanently, or the object's budget of [`OBJECT_ROUNDS`] requests is spent, pausing longer
    /// after each transient failure (1 s, 2 s, with full jitter).
    pub(super) async fn retrying<T, F, Fut>(&self, op: F) -> Result<T, StorageError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, StorageError>>,
    {
        let budget = RetryPolicy {
            max_attempts: OBJECT_ROUNDS,
            initial_delay: Duration::from_secs(1),
            multiplier: 2.0,
            max_delay: Duration::from_secs(2),
            jitter: Jitter::Full,
        };
        let mut round = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.kind == StorageErrorKind::Transient && round < budget.max_attempts => {
                    let wait = budget.delay(round + 1, &mut rand::rng());
                    debug!(error = %e, round, wait_ms = wait.as_millis() as u64, "transient S3 failure; trying again");
                    tokio::time::sleep(wait).await;
                    round += 1;
                }
                Err(mut e) => {
                    if e.kind == StorageErrorKind::Transient {
                        let tries = OBJECT_ROUNDS * self.settings.max_attempts.max(1);
                        e.message = format!("{} (tried {tries} times)", e.message);
                    }
                    return Err(e);
                }
            }
        }
    }

    pub(super) fn error<E>(
        &self,
        action: Op,
        uri: &str,
        bucket: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let kms = (self.settings.server_side_encryption == Some(ServerSideEncryption::AwsKms))
            .then(|| self.settings.kms_key_id.clone().unwrap_or_else(|| "aws/s3 (the AWS managed key)".into()));
        classify(action, uri, bucket, &self.endpoint, kms.as_deref(), err)
    }

    /// The storage class of an object: `storage_class` for table data (Parquet files); dagrun's
    /// own small objects (manifests, markers, run records, the lease, step specs) stay in
    /// STANDARD, where reading them back is immediate and no minimum size or duration is billed.
    pub(super) fn storage_class(&self, key: &str) -> Option<dagrun_core::spec::StorageClass> {
        self.settings.storage_class.filter(|_| key.ends_with(".parquet"))
    }

    pub(super) async fn put(&self, uri: &S3Uri, data: &[u8]) -> Result<(), StorageError> {
        let full = format!("s3://{}/{}", uri.bucket, uri.key);
        let mut request = self
            .client_for(&uri.bucket)
            .await
            .put_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .content_type(content_type(&uri.key))
            .body(ByteStream::from(data.to_vec()));
        if let Some(sse) = self.settings.server_side_encryption {
            request = request.server_side_encryption(sse_of(sse));
            if let Some(key) = &self.settings.kms_key_id {
                request = request.ssekms_key_id(key);
            }
        }
        if let Some(class) = self.storage_class(&uri.key) {
            request = request.storage_class(class.as_str().into());
        }
        request.send().await.map(|_| ()).map_err(|e| self.error(Op::Writing, &full, &uri.bucket, e))
    }

    pub(super) async fn put_multipart(&self, uri: &S3Uri, data: &[u8]) -> Result<(), StorageError> {
        let full = format!("s3://{}/{}", uri.bucket, uri.key);
        let mut create = self
            .client_for(&uri.bucket)
            .await
            .create_multipart_upload()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .content_type(content_type(&uri.key))
            // The parts carry CRC32 checksums and the completion repeats them: S3 (and servers
            // like it) accept that only if the upload named the algorithm when it began.
            .checksum_algorithm(ChecksumAlgorithm::Crc32);
        if let Some(sse) = self.settings.server_side_encryption {
            create = create.server_side_encryption(sse_of(sse));
            if let Some(key) = &self.settings.kms_key_id {
                create = create.ssekms_key_id(key);
            }
        }
        if let Some(class) = self.storage_class(&uri.key) {
            create = create.storage_class(class.as_str().into());
        }
        let upload = self
            .retrying(|| async {
                create.clone().send().await.map_err(|e| self.error(Op::StartingUpload, &full, &uri.bucket, e))
            })
            .await?;
        let upload_id = upload.upload_id().unwrap_or_default().to_string();
        let mut uploads = Vec::new();
        for (i, chunk) in data.chunks(self.settings.part_size as usize).enumerate() {
            let number = i as i32 + 1;
            let (upload_id, full) = (&upload_id, &full);
            uploads.push(async move {
                self.retrying(|| async {
                    let out = self
                        .client_for(&uri.bucket)
                        .await
                        .upload_part()
                        .bucket(&uri.bucket)
                        .key(&uri.key)
                        .upload_id(upload_id)
                        .part_number(number)
                        .checksum_algorithm(ChecksumAlgorithm::Crc32)
                        .body(ByteStream::from(chunk.to_vec()))
                        .send()
                        .await
                        .map_err(|e| self.error(Op::UploadingPart, full, &uri.bucket, e))?;
                    // The SDK checksums each part; completing the upload must repeat the checksums.
                    Ok(CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag().map(String::from))
                        .set_checksum_crc32(out.checksum_crc32().map(String::from))
                        .set_checksum_crc32_c(out.checksum_crc32_c().map(String::from))
                        .set_checksum_crc64_nvme(out.checksum_crc64_nvme().map(String::from))
                        .set_checksum_sha1(out.checksum_sha1().map(String::from))
                        .set_checksum_sha256(out.checksum_sha256().map(String::from))
                        .build())
                })
                .await
            });
        }
        let result: Result<Vec<CompletedPart>, StorageError> = stream::iter(uploads).buffered(4).try_collect().await;

        let completed = match result {
            Ok(parts) => parts,
            Err(e) => {
                let _ = self
                    .client_for(&uri.bucket)
                    .await
                    .abort_multipart_upload()
                    .bucket(&uri.bucket)
                    .key(&uri.key)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                return Err(e);
            }
        };
        let body = CompletedMultipartUpload::builder().set_parts(Some(completed)).build();
        let completed = self
            .retrying(|| async {
                self.client_for(&uri.bucket)
                    .await
                    .complete_multipart_upload()
                    .bucket(&uri.bucket)
                    .key(&uri.key)
                    .upload_id(&upload_id)
                    .multipart_upload(body.clone())
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| self.error(Op::CompletingUpload, &full, &uri.bucket, e))
            })
            .await;
        // An upload never completed keeps its parts, billed, until it is aborted.
        if completed.is_err() {
            let _ = self
                .client_for(&uri.bucket)
                .await
                .abort_multipart_upload()
                .bucket(&uri.bucket)
                .key(&uri.key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        completed
    }

    /// Every object under a prefix (nothing skipped), paging through any number.
    pub(super) async fn list_all(
        &self,
        root: &S3Uri,
        display: &str,
    ) -> Result<Vec<aws_sdk_s3::types::Object>, StorageError> {
        let prefix = root.prefix();
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .retrying(|| async {
                    self.client_for(&root.bucket)
                        .await
                        .list_objects_v2()
                        .bucket(&root.bucket)
                        .prefix(&prefix)
                        .set_continuation_token(token.clone())
                        .send()
                        .await
                        .map_err(|e| self.error(Op::Listing, display, &root.bucket, e))
                })
                .await?;
            out.extend(page.contents().iter().cloned());
            token = page.next_continuation_token().map(String::from);
            if token.is_none() || !page.is_truncated().unwrap_or(false) {
                return Ok(out);
            }
        }
    }

    /// Makes sure a table's place is dagrun's before anything is written there: it holds a dagrun
    /// manifest, or dagrun's marker (a first load that did not finish), or nothing, in which case
    /// the marker is written now. Anything else is refused: publishing deletes what the new
    /// manifest does not name, and that must never be someone else's data.
    pub(super) async fn claim_table(&self, uri: &S3Uri, display: &str) -> Result<Option<Version>, StorageError> {
        let prefix = uri.prefix();
        let manifest = uri.child(MANIFEST);
        match self.read_versioned(&manifest).await {
            Ok((bytes, version)) if is_manifest(&bytes) => return Ok(Some(version)),
            Ok(_) => {
                return Err(StorageError::new(
                    StorageErrorKind::Other,
                    Op::RefusingToReplace,
                    display,
                    format!("its {MANIFEST} was not written by dagrun; dagrun only replaces tables it created"),
                ));
            }
            Err(e) if e.kind == StorageErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        match self.read(&uri.child(TABLE_MARKER)).await {
            Ok(_) => return Ok(None),
            Err(e) if e.kind == StorageErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let page = self
            .retrying(|| async {
                self.client_for(&uri.bucket)
                    .await
                    .list_objects_v2()
                    .bucket(&uri.bucket)
                    .prefix(&prefix)
                    .max_keys(1)
                    .send()
                    .await
                    .map_err(|e| self.error(Op::Checking, display, &uri.bucket, e))
            })
            .await?;
        if let Some(first) = page.contents().first().and_then(|o| o.key()) {
            let name = first.strip_prefix(&prefix).unwrap_or(first);
            return Err(StorageError::new(
                StorageErrorKind::Other,
                Op::RefusingToReplace,
                display,
                not_a_table_message(name),
            ));
        }
        let marker = S3Uri { bucket: uri.bucket.clone(), key: format!("{prefix}{TABLE_MARKER}") };
        self.retrying(|| self.put(&marker, b"")).await?;
        Ok(None)
    }

    pub(super) async fn delete_keys(&self, bucket: &str, keys: Vec<String>, display: &str) -> Result<(), StorageError> {
        for chunk in keys.chunks(1000) {
            let objects: Vec<ObjectIdentifier> =
                chunk.iter().filter_map(|k| ObjectIdentifier::builder().key(k).build().ok()).collect();
            let delete =
                Delete::builder().set_objects(Some(objects)).quiet(true).build().map_err(|e| {
                    StorageError::new(StorageErrorKind::Other, Op::DeletingUnder, display, e.to_string())
                })?;
            let out = self
                .retrying(|| async {
                    self.client_for(bucket)
                        .await
                        .delete_objects()
                        .bucket(bucket)
                        .delete(delete.clone())
                        .send()
                        .await
                        .map_err(|e| self.error(Op::DeletingUnder, display, bucket, e))
                })
                .await?;
            if let Some(first) = out.errors().first() {
                return Err(StorageError::new(
                    StorageErrorKind::Other,
                    Op::Deleting,
                    format!("s3://{bucket}/{}", first.key().unwrap_or("")),
                    first.message().unwrap_or("refused").to_string(),
                ));
            }
        }
        Ok(())
    }
}

pub(super) fn sse_of(sse: ServerSideEncryption) -> aws_sdk_s3::types::ServerSideEncryption {
    match sse {
        ServerSideEncryption::Aes256 => aws_sdk_s3::types::ServerSideEncryption::Aes256,
        ServerSideEncryption::AwsKms => aws_sdk_s3::types::ServerSideEncryption::AwsKms,
    }
}

pub(super) fn content_type(key: &str) -> &'static str {
    match key.rsplit_once('.').map(|(_, ext)| ext) {
        Some("parquet") => "application/vnd.apache.parquet",
        Some("json") => "application/json",
        Some("jsonl") => "application/x-ndjson",
        Some("html") => "text/html; charset=utf-8",
        Some("xml") => "application/xml",
        _ => "application/octet-stream",
    }
}
