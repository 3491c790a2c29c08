//! A run's staging folder, `<staging>/<run>/`: the step program, task specs and full copies of
//! the intermediate tables Spark reads and writes. It costs storage for as long as it lives, so:
//! - the run marks it as dagrun's (`dagrun-staging.json`, a name listings do not hide) before
//!   writing anything in it, and nothing without that marker is ever deleted;
//! - a successful run deletes it when it ends, unless `--keep-staging`;
//! - a failed (or killed) run keeps it for debugging, and a later run on the same staging prefix
//!   deletes it once `keep_failed_staging` has passed.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dagrun_core::plan::join_path;
use dagrun_core::storage::{Storage, StorageErrorKind};
use dagrun_core::units::format_duration;
use serde::{Deserialize, Serialize};
use tracing::warn;

/// The marker's file name in a run's staging folder.
pub(crate) const MARKER: &str = "dagrun-staging.json";

/// What the marker says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Marker {
    pub run_id: String,
    pub pipeline: String,
    pub instance: String,
    pub created_ms: u64,
    /// Set when the run ended without success: the folder is kept for debugging from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_ms: Option<u64>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn day(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map_or_else(|| "?".into(), |t| t.format("%Y-%m-%d %H:%M UTC").to_string())
}

/// Marks `folder` as this run's staging (first use in the run).
pub(crate) async fn mark(s3: &Arc<dyn Storage>, folder: &str, marker: &Marker) -> Result<(), String> {
    let json = serde_json::to_vec_pretty(marker).expect("a marker serializes");
    s3.write(&join_path(folder, MARKER), json).await.map_err(|e| e.to_string())
}

/// What happens to this run's staging folder when the run ends; returns a line for the summary.
pub(crate) async fn finish(
    s3: &Arc<dyn Storage>,
    folder: &str,
    succeeded: bool,
    keep: bool,
    keep_failed: Duration,
) -> Option<String> {
    let marker_path = join_path(folder, MARKER);
    let mut marker: Marker = match s3.read(&marker_path).await {
        Ok(bytes) => serde_json::from_slice(&bytes).ok()?,
        // Nothing was staged (no EMR task started) or it is not ours.
        Err(_) => return None,
    };
    if keep {
        return Some(format!("staging {folder}: kept (--keep-staging)"));
    }
    if !succeeded && !keep_failed.is_zero() {
        let failed = now_ms();
        marker.failed_ms = Some(failed);
        if let Err(e) = mark(s3, folder, &marker).await {
            warn!("could not mark the staging folder {folder} as a failed run's: {e}");
        }
        return Some(format!(
            "staging {folder}: kept for debugging until {} (keep_failed_staging {}; --keep-staging keeps it for good)",
            day(failed + keep_failed.as_millis() as u64),
            format_duration(keep_failed)
        ));
    }
    match s3.remove_all(folder).await {
        Ok(()) => Some(format!("staging {folder}: deleted")),
        Err(e) => {
            warn!("could not delete the staging folder {folder}: {e}");
            Some(format!("staging {folder}: could not be deleted ({e})"))
        }
    }
}

/// Deletes the staging folders of other runs that ended without success (or never ended) longer
/// than `keep_failed` ago. Only folders with dagrun's marker; returns the folders deleted.
pub(crate) async fn sweep(s3: &Arc<dyn Storage>, staging: &str, this_run: &str, keep_failed: Duration) -> Vec<String> {
    let glob = globset::Glob::new(&format!("*/{MARKER}")).expect("a valid glob").compile_matcher();
    let markers = match s3.list(staging, &glob).await {
        Ok(found) => found,
        Err(e) if e.kind == StorageErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            warn!("could not look for old staging folders under {staging}: {e}");
            return Vec::new();
        }
    };
    let now = now_ms();
    let mut deleted = Vec::new();
    for meta in markers {
        let Some(run) = meta.relative.strip_suffix(&format!("/{MARKER}")) else { continue };
        if run == this_run || run.contains('/') {
            continue;
        }
        let Ok(bytes) = s3.read(&meta.path).await else { continue };
        let Ok(marker) = serde_json::from_slice::<Marker>(&bytes) else { continue };
        let since = marker.failed_ms.unwrap_or(marker.created_ms);
        if now.saturating_sub(since) <= keep_failed.as_millis() as u64 {
            continue;
        }
        let folder = join_path(staging, run);
        match s3.remove_all(&folder).await {
            Ok(()) => deleted.push(folder),
            Err(e) => warn!("could not delete the old staging folder {folder}: {e}"),
        }
    }
    deleted
}
