//! What an S3 failure is called: SDK errors classified into storage errors (retryable or
//! not, with bucket, key and the likely cause), the missing-credentials message and GET bodies.

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use dagrun_core::storage::{Op, StorageError, StorageErrorKind};
use tracing::debug;

/// Turns an SDK error into a storage error that says what happened and whether to retry.
/// `kms` is the key writes are encrypted with (`server_side_encryption: aws:kms`), so that a
/// denial it may cause is not reported as a bucket permission only.
pub(super) fn classify<E>(
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
pub(super) fn is_missing_credentials(err: &(dyn std::error::Error + 'static)) -> bool {
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
pub(super) fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
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

pub(super) fn verb(action: Op) -> &'static str {
    if action.reads() { "read" } else { "write to" }
}

/// A GET's body as one buffer, sized from Content-Length.
pub(super) async fn body_bytes(output: aws_sdk_s3::operation::get_object::GetObjectOutput) -> Result<Vec<u8>, String> {
    let mut buf = Vec::with_capacity(output.content_length().unwrap_or(0).max(0) as usize);
    let mut body = output.body;
    while let Some(chunk) = body.try_next().await.map_err(|e| DisplayErrorContext(&e).to_string())? {
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}
