//! S3 as a [`Storage`], with the official aws-sdk-s3 client: the standard credential chain and
//! region, S3-compatible endpoints (`storage.s3.endpoint_url`, `AWS_ENDPOINT_URL_S3`,
//! `AWS_ENDPOINT_URL`), path-style addressing for IP or `localhost` endpoints, paged listings,
//! bounded concurrent GETs, multipart uploads for large files, SSE and storage classes.
//!
//! Transient failures (SlowDown, 500/503, resets, timeouts) are retried at two levels: each request
//! by the SDK's standard retry mode (`max_attempts`, exponential backoff with jitter), and each
//! object by a budget of [`OBJECT_ROUNDS`] such requests with longer pauses between them, so that a
//! sustained fault rate slows a run down instead of failing it. Permanent failures (403, 404, no
//! such bucket) fail at once, naming the bucket and key.
//!
//! Publishing a table (the convention readers follow): files are written beside the current ones
//! under names that carry the run's tag (`part-00000-<tag>.parquet`) and are invisible to readers
//! until named by `_manifest.json`. Commit checks every file, replaces `_manifest.json` in one PUT
//! (the instant the new table becomes current), rewrites `_SUCCESS`, and only then deletes the
//! files the new manifest does not name. A failed or killed run leaves the previous manifest and
//! all of its files in place.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::Region;
use aws_sdk_s3::config::retry::{RetryPartition, TokenBucket};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use dagrun_core::plan::S3Settings;
use dagrun_core::retry::RetryPolicy;
use dagrun_core::spec::{Jitter, ServerSideEncryption};
use dagrun_core::storage::delta::DELTA_LOG;
use dagrun_core::storage::{
    AccessCheck, Fence, MANIFEST, ObjectMeta, Op, SUCCESS_MARKER, Storage, StorageError, StorageErrorKind,
    TABLE_MARKER, TableFile, TableManifest, TableWrite, Version, is_hidden_name, is_manifest, not_a_table_message,
};
use futures::{StreamExt, TryStreamExt, stream};
use tokio::sync::OnceCell;
use tracing::{debug, warn};

/// An `s3://bucket/key` URI, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct S3Uri {
    pub bucket: String,
    /// The key or prefix, without a leading `/`.
    pub key: String,
}

impl S3Uri {
    pub(crate) fn parse(uri: &str) -> Result<Self, StorageError> {
        let rest = uri
            .strip_prefix("s3://")
            .ok_or_else(|| StorageError::new(StorageErrorKind::Other, Op::Parsing, uri, "not an s3:// URI"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StorageError::new(StorageErrorKind::Other, Op::Parsing, uri, "no bucket name"));
        }
        Ok(Self { bucket: bucket.to_string(), key: key.trim_start_matches('/').to_string() })
    }

    /// The key as a folder prefix: empty, or ending with `/`.
    pub(crate) fn prefix(&self) -> String {
        let key = self.key.trim_end_matches('/');
        if key.is_empty() { String::new() } else { format!("{key}/") }
    }

    pub(crate) fn child(&self, relative: &str) -> String {
        format!("s3://{}/{}{}", self.bucket, self.prefix(), relative)
    }
}

/// Requests (each retried by the SDK up to `max_attempts` times) made for one object before its
/// failure is given up as transient: the per-object budget.
pub(crate) const OBJECT_ROUNDS: u32 = 3;

/// The S3 storage. Buckets may live in different regions (the public input in us-west-2, the lake
/// in eu-west-1): each bucket's region is asked once, and each region has its own client.
pub struct S3Storage {
    /// The client of the configured region (`storage.s3.region`, else the AWS chain, else
    /// us-east-1): the fallback, and the one that asks buckets for their region.
    client: Client,
    /// The fallback client's region.
    region: String,
    /// Each bucket's client, once its region is known.
    by_bucket: std::sync::Mutex<HashMap<String, Arc<OnceCell<Client>>>>,
    /// One client per region other than the fallback's.
    by_region: std::sync::Mutex<HashMap<String, Client>>,
    settings: S3Settings,
    /// Where requests go, for messages (never credentials).
    endpoint: String,
    /// The credential chain the client signs with, to ask once whether it finds anything.
    credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
}

/// Whether an endpoint's host is an IP address or `localhost` (path-style addressing is needed).
pub(crate) fn wants_path_style(endpoint: &str) -> bool {
    let without_scheme = endpoint.split_once("://").map_or(endpoint, |(_, rest)| rest);
    let authority = without_scheme.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok()
}

/// The endpoint a client will use: the pipeline setting, then the standard variables.
fn effective_endpoint(settings: &S3Settings) -> Option<String> {
    settings
        .endpoint_url
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL_S3").ok())
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .filter(|e| !e.trim().is_empty())
}

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
    async fn client_for(&self, bucket: &str) -> Client {
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
    fn regional(&self, region: &str) -> Client {
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
    async fn retrying<T, F, Fut>(&self, op: F) -> Result<T, StorageError>
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

    fn error<E>(
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
    fn storage_class(&self, key: &str) -> Option<dagrun_core::spec::StorageClass> {
        self.settings.storage_class.filter(|_| key.ends_with(".parquet"))
    }

    async fn put(&self, uri: &S3Uri, data: &[u8]) -> Result<(), StorageError> {
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

    async fn put_multipart(&self, uri: &S3Uri, data: &[u8]) -> Result<(), StorageError> {
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
    async fn list_all(&self, root: &S3Uri, display: &str) -> Result<Vec<aws_sdk_s3::types::Object>, StorageError> {
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
    async fn claim_table(&self, uri: &S3Uri, display: &str) -> Result<Option<Version>, StorageError> {
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

    async fn delete_keys(&self, bucket: &str, keys: Vec<String>, display: &str) -> Result<(), StorageError> {
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

fn sse_of(sse: ServerSideEncryption) -> aws_sdk_s3::types::ServerSideEncryption {
    match sse {
        ServerSideEncryption::Aes256 => aws_sdk_s3::types::ServerSideEncryption::Aes256,
        ServerSideEncryption::AwsKms => aws_sdk_s3::types::ServerSideEncryption::AwsKms,
    }
}

fn content_type(key: &str) -> &'static str {
    match key.rsplit_once('.').map(|(_, ext)| ext) {
        Some("parquet") => "application/vnd.apache.parquet",
        Some("json") => "application/json",
        Some("jsonl") => "application/x-ndjson",
        Some("html") => "text/html; charset=utf-8",
        Some("xml") => "application/xml",
        _ => "application/octet-stream",
    }
}

/// Turns an SDK error into a storage error that says what happened and whether to retry.
/// `kms` is the key writes are encrypted with (`server_side_encryption: aws:kms`), so that a
/// denial it may cause is not reported as a bucket permission only.
fn classify<E>(
    action: Op,
    uri: &str,
    bucket: &str,
    endpoint: &str,
    kms: Option<&str>,
    err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    debug!(action = action.as_str(), uri, error = %DisplayErrorContext(&err), "S3 request failed");
    let status = err.raw_response().map(|r| r.status().as_u16());

    let code = err.code().map(String::from);
    let (kind, message) = match (&err, status, code.as_deref()) {
        (SdkError::ServiceError(_), _, Some("NoSuchBucket")) => {
            (StorageErrorKind::NotFound, format!("bucket `{bucket}` does not exist"))
        }
        // HeadBucket has no body: a bare 404 "NotFound" is the bucket itself.
        (SdkError::ServiceError(_), Some(404), Some("NotFound")) if action == Op::Checking => {
            (StorageErrorKind::NotFound, format!("bucket `{bucket}` does not exist"))
        }
        (SdkError::ServiceError(_), Some(404), Some("NoSuchKey" | "NotFound") | None) => {
            (StorageErrorKind::NotFound, "no such object".into())
        }

        (SdkError::ServiceError(_), Some(412), _) | (SdkError::ServiceError(_), _, Some("PreconditionFailed")) => {
            (StorageErrorKind::Conflict, "changed by someone else (412 Precondition Failed)".into())
        }
        // Two conditional writes of one key at once: S3 asks to try again.
        (SdkError::ServiceError(_), Some(409), Some("ConditionalRequestConflict")) => {
            (StorageErrorKind::Transient, "409 ConditionalRequestConflict".into())
        }
        // KMS refused the key (S3 names it, or answers with a `KMS.` code): say which key and what
        // SSE-KMS needs, not "may not write to bucket".
        (SdkError::ServiceError(se), _, c)
            if c.is_some_and(|c| c.starts_with("KMS."))
                || (matches!(status, Some(403)) || c == Some("AccessDenied"))
                    && se.err().message().is_some_and(|m| m.contains("kms:")) =>
        {
            let said = se.err().message().unwrap_or_default();
            let key = said
                .split_whitespace()
                .find(|w| w.starts_with("arn:") && w.contains(":kms:"))
                .map(|w| w.trim_end_matches(['.', ',']).to_string())
                .or_else(|| kms.map(String::from))
                .unwrap_or_else(|| "the bucket's default key".into());
            (
                StorageErrorKind::PermissionDenied,
                format!(
                    "KMS key `{key}` refused these credentials ({}: {said}): SSE-KMS needs kms:GenerateDataKey \
                     and kms:Decrypt on the key, in the IAM policy and the key policy",
                    c.unwrap_or("AccessDenied")
                ),
            )
        }
        (SdkError::ServiceError(_), Some(403), _) | (SdkError::ServiceError(_), _, Some("AccessDenied")) => (
            StorageErrorKind::PermissionDenied,
            match kms {
                Some(key) if !action.reads() || action == Op::Reading => format!(
                    "access denied by {endpoint}: the credentials may not {} bucket `{bucket}`, or may not use KMS key \
                     `{key}` (SSE-KMS needs kms:GenerateDataKey and kms:Decrypt on it)",
                    verb(action)
                ),
                _ => format!("access denied by {endpoint}: the credentials may not {} bucket `{bucket}`", verb(action)),
            },
        ),
        (SdkError::ServiceError(_), Some(301), _) | (SdkError::ServiceError(_), _, Some("PermanentRedirect")) => (
            StorageErrorKind::Other,
            format!("bucket `{bucket}` is in another region: set storage.s3.region or AWS_REGION"),
        ),
        (SdkError::ServiceError(_), Some(s), c)
            if matches!(s, 500 | 502 | 503 | 504)
                || matches!(c, Some("SlowDown" | "Throttling" | "RequestTimeout" | "InternalError")) =>
        {
            (
                StorageErrorKind::Transient,
                format!(
                    "{} {}",
                    status.map_or(String::new(), |s| s.to_string()),
                    code.clone().unwrap_or_else(|| "server error".into())
                )
                .trim()
                .to_string(),
            )
        }
        (SdkError::ServiceError(se), s, c) => (
            StorageErrorKind::Other,
            format!(
                "{} {}{}",
                s.map_or(String::new(), |s| s.to_string()),
                c.unwrap_or("error"),
                se.err().message().map(|m| format!(": {m}")).unwrap_or_default()
            )
            .trim()
            .to_string(),
        ),
        (SdkError::TimeoutError(_), _, _) => (StorageErrorKind::Transient, format!("timed out talking to {endpoint}")),
        // No credentials anywhere in the chain: no retry will find some.
        (SdkError::DispatchFailure(_), _, _) if is_missing_credentials(&err) => {
            (StorageErrorKind::PermissionDenied, NO_CREDENTIALS.to_string())
        }
        (SdkError::DispatchFailure(_) | SdkError::ResponseError(_), _, _) => {
            (StorageErrorKind::Transient, format!("cannot reach {endpoint}: {}", root_cause(&err)))
        }
        (_, _, _) => (StorageErrorKind::Other, DisplayErrorContext(&err).to_string()),
    };
    StorageError::new(kind, action, uri, message)
}

/// What a run without AWS credentials is told: where the standard chain looks, in its order.
pub(crate) const NO_CREDENTIALS: &str = "no AWS credentials were found. The standard chain looks, in order, at \
     AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (with AWS_SESSION_TOKEN), the profile in ~/.aws/config and \
     ~/.aws/credentials (AWS_PROFILE; SSO and credential_process included), a web identity token \
     (AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN), the ECS container's credentials and the EC2 instance's \
     role; set one of them (an S3-compatible server takes any key pair it accepts)";

/// Whether a request failed because the credential chain found nothing (not a network error).
fn is_missing_credentials(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        let debug = format!("{e:?}");
        if debug.starts_with("CredentialsNotLoaded") || e.to_string().starts_with("no credentials found in chain") {
            return true;
        }
        source = e.source();
    }
    false
}

/// The innermost message of an error chain ("Connection refused (os error 111)").
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut last = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !text.is_empty() {
            last = text;
        }
        source = e.source();
    }
    last
}

fn verb(action: Op) -> &'static str {
    if action.reads() { "read" } else { "write to" }
}

/// A GET's body as one buffer, sized from Content-Length.
async fn body_bytes(output: aws_sdk_s3::operation::get_object::GetObjectOutput) -> Result<Vec<u8>, String> {
    let mut buf = Vec::with_capacity(output.content_length().unwrap_or(0).max(0) as usize);
    let mut body = output.body;
    while let Some(chunk) = body.try_next().await.map_err(|e| DisplayErrorContext(&e).to_string())? {
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// `part-00000.parquet` -> `part-00000-<tag>.parquet`: the name a tagged file has on S3.
/// Whether `relative` (inside a table) is a data file as dagrun names them in its hive folders:
/// `year=2018/part-00000-<run>-<process>-<attempt>.parquet`.
fn dagrun_named(relative: &str) -> bool {
    let (dirs, name) = relative.rsplit_once('/').unwrap_or(("", relative));
    dagrun_core::storage::delta::parse_data_file(name).is_some()
        && (dirs.is_empty() || dirs.split('/').all(|d| d.split_once('=').is_some_and(|(k, _)| !k.is_empty())))
}

pub(crate) fn tagged_name(relative: &str, tag: &str) -> String {
    let (dir, file) = relative.rsplit_once('/').map_or(("", relative), |(d, f)| (d, f));
    let tagged = match file.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}-{tag}.{ext}"),
        None => format!("{file}-{tag}"),
    };
    if dir.is_empty() { tagged } else { format!("{dir}/{tagged}") }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_split_into_bucket_and_prefix() {
        let u = S3Uri::parse("s3://lake/raw/song_data/").unwrap();
        assert_eq!((u.bucket.as_str(), u.prefix().as_str()), ("lake", "raw/song_data/"));
        assert_eq!(S3Uri::parse("s3://lake").unwrap().prefix(), "");
        assert_eq!(u.child("a.json"), "s3://lake/raw/song_data/a.json");
        assert!(S3Uri::parse("s3:///x").is_err());
    }

    #[test]
    fn path_style_for_ip_and_localhost_endpoints() {
        assert!(wants_path_style("http://127.0.0.1:5000"));
        assert!(wants_path_style("http://localhost:9000/"));
        assert!(wants_path_style("http://[::1]:9000"));
        assert!(!wants_path_style("https://s3.eu-west-1.amazonaws.com"));
        assert!(!wants_path_style("https://minio.internal:9000"));
    }

    #[test]
    fn only_files_dagrun_names_in_hive_folders_are_dagruns() {
        assert!(dagrun_named("year=2018/part-00000-r1-abcd1234-1.parquet"));
        assert!(dagrun_named("part-00003-r1-abcd1234-2.parquet"));
        assert!(!dagrun_named("exports/2018/part-00000-1c2d3e4f-c000.snappy.parquet"));
        assert!(!dagrun_named("year=2018/notes.parquet"));
        assert!(!dagrun_named("exports/part-00000-r1-abcd1234-1.parquet"));
    }

    #[test]
    fn tagged_names_keep_folders_and_extensions() {
        assert_eq!(tagged_name("year=2018/part-00000.parquet", "r1-1"), "year=2018/part-00000-r1-1.parquet");
        assert_eq!(tagged_name("part-00000.parquet", "r1-1"), "part-00000-r1-1.parquet");
    }
}
