//! S3 as a [`Storage`](dagrun_core::storage::Storage), with the official aws-sdk-s3 client: the standard credential chain and
//! region, S3-compatible endpoints (`storage.s3.endpoint_url`, `AWS_ENDPOINT_URL_S3`,
//! `AWS_ENDPOINT_URL`), path-style addressing for IP or `localhost` endpoints, paged listings,
//! bounded concurrent GETs, multipart uploads for large files, SSE and storage classes.
//!
//! Transient failures (SlowDown, 500/503, resets, timeouts) are retried at two levels: each request
//! by the SDK's standard retry mode (`max_attempts`, exponential backoff with jitter), and each
//! object by a budget of `OBJECT_ROUNDS` such requests with longer pauses between them, so that a
//! sustained fault rate slows a run down instead of failing it. Permanent failures (403, 404, no
//! such bucket) fail at once, naming the bucket and key.
//!
//! Publishing a table (the convention readers follow): files are written beside the current ones
//! under names that carry the run's tag (`part-00000-<tag>.parquet`) and are invisible to readers
//! until named by `_manifest.json`. Commit checks every file, replaces `_manifest.json` in one PUT
//! (the instant the new table becomes current), rewrites `_SUCCESS`, and only then deletes the
//! files the new manifest does not name. A failed or killed run leaves the previous manifest and
//! all of its files in place.
//!
//! | module | owns |
//! | --- | --- |
//! | `client` | connecting, per-region clients, retry rounds, PUTs, multipart uploads, listings, deletes |
//! | `storage` | the [`Storage`](dagrun_core::storage::Storage) methods: reads, writes, conditional writes, publishing a table |
//! | `errors` | SDK errors classified into located storage errors; missing credentials |
//! | `names` | the run-tagged names of data files, and knowing them again |

mod client;
mod errors;
mod names;
mod storage;

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_s3::Client;
use dagrun_core::plan::S3Settings;
use dagrun_core::storage::{Op, StorageError, StorageErrorKind};
use tokio::sync::OnceCell;

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
}
