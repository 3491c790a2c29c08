//! A table's versions, read from its commit files: `dagrun history TABLE` and the fingerprint of
//! the last load. Each `_delta_log/<version>.json` holds a `commitInfo` line, into which dagrun
//! writes its run, fingerprint and row count under [`COMMIT_INFO_KEY`].

use std::sync::Arc;

use dagrun_core::path::compile_glob;
use dagrun_core::storage::delta::{DELTA_LOG, DeltaVersion};
use dagrun_core::storage::{Storage, StorageErrorKind};
use serde_json::Value;

use crate::COMMIT_INFO_KEY;
use crate::error::Result;

/// Commits that leave a table's content as it was.
const MAINTENANCE: &[&str] = &["VACUUM START", "VACUUM END", "CHECKPOINT"];

/// What dagrun recorded in a commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DagrunCommit {
    pub run_id: Option<String>,
    pub fingerprint: Option<String>,
    pub slices: Option<std::collections::BTreeMap<String, String>>,
    pub file_days: Option<std::collections::BTreeMap<String, String>>,
    pub rows: Option<u64>,
    pub table: Option<String>,
}

/// The `commitInfo` of the commit file `bytes`. Only the line that holds it is parsed: a first
/// commit of a 100,000-file table is 100,000 `add` lines.
fn commit_info(bytes: &[u8]) -> Option<Value> {
    const KEY: &[u8] = b"\"commitInfo\"";
    bytes
        .split(|b| *b == b'\n')
        .filter(|line| line.windows(KEY.len()).take(64).any(|w| w == KEY))
        .filter_map(|line| serde_json::from_slice::<Value>(line).ok())
        .find_map(|v| v.get("commitInfo").cloned())
}

fn commit_path(table: &str, version: u64) -> String {
    format!("{}/{DELTA_LOG}/{version:020}.json", table.trim_end_matches('/'))
}

/// The dagrun load that made the content of `version`: the newest commit at or before it that
/// changed content, if dagrun made it. `None` when another writer changed the table since.
pub(crate) async fn latest_dagrun_commit(
    storage: &Arc<dyn Storage>,
    table: &str,
    version: u64,
) -> Result<Option<DagrunCommit>> {
    for v in (0..=version).rev().take(64) {
        let bytes = match storage.read(&commit_path(table, v)).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind == StorageErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some(info) = commit_info(&bytes) else { return Ok(None) };
        let operation = info.get("operation").and_then(Value::as_str).unwrap_or_default();
        if MAINTENANCE.contains(&operation) {
            continue;
        }
        return Ok(info.get(COMMIT_INFO_KEY).map(|d| DagrunCommit {
            run_id: d.get("run_id").and_then(Value::as_str).map(str::to_string),
            fingerprint: d.get("fingerprint").and_then(Value::as_str).map(str::to_string),
            slices: d.get("slices").and_then(|s| serde_json::from_value(s.clone()).ok()),
            file_days: d.get("file_days").and_then(|s| serde_json::from_value(s.clone()).ok()),
            rows: d.get("rows").and_then(Value::as_u64),
            table: d.get("table").and_then(Value::as_str).map(str::to_string),
        }));
    }
    Ok(None)
}

/// The numbers of the table's commit files, newest first (empty: no log).
pub(crate) async fn version_numbers(storage: &Arc<dyn Storage>, table: &str) -> Result<Vec<u64>> {
    let log = format!("{}/{DELTA_LOG}", table.trim_end_matches('/'));
    let glob = compile_glob("*.json").expect("a valid glob");
    let listed = match storage.list(&log, &glob).await {
        Ok(listed) => listed,
        Err(e) if e.kind == StorageErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut numbers: Vec<u64> = listed
        .iter()
        .filter_map(|o| o.relative.strip_suffix(".json"))
        .filter(|n| n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|n| n.parse().ok())
        .collect();
    numbers.sort_unstable_by(|a, b| b.cmp(a));
    Ok(numbers)
}

/// The table's versions, newest first, at most `limit`.
pub(crate) async fn versions(
    storage: &Arc<dyn Storage>,
    table: &str,
    limit: Option<usize>,
) -> Result<Vec<DeltaVersion>> {
    let mut numbers = version_numbers(storage, table).await?;
    numbers.truncate(limit.unwrap_or(usize::MAX));
    let mut out = Vec::with_capacity(numbers.len());
    for version in numbers {
        let bytes = storage.read(&commit_path(table, version)).await?;
        let info = commit_info(&bytes).unwrap_or(Value::Null);
        let dagrun = info.get(COMMIT_INFO_KEY);
        out.push(DeltaVersion {
            version,
            timestamp_ms: info.get("timestamp").and_then(Value::as_i64),
            operation: info.get("operation").and_then(Value::as_str).unwrap_or("(no commitInfo)").to_string(),
            run_id: dagrun.and_then(|d| d.get("run_id")).and_then(Value::as_str).map(str::to_string),
            rows: dagrun.and_then(|d| d.get("rows")).and_then(Value::as_u64),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_info_line_is_found_among_the_actions() {
        let file =
            b"{\"add\":{\"path\":\"a\"}}\n{\"commitInfo\":{\"operation\":\"WRITE\",\"dagrun\":{\"run_id\":\"r1\"}}}";
        let info = commit_info(file).unwrap();
        assert_eq!(info["operation"], "WRITE");
        assert_eq!(info["dagrun"]["run_id"], "r1");
        assert!(commit_info(b"{\"add\":{}}").is_none());
    }
}
