//! What a run tidies and records of the lake around its tasks: what dead runs left (staging,
//! unfinished uploads, data files no version names), the version each Delta table was left at,
//! and the vacuum of files past their retention.

use std::collections::BTreeMap;

use tracing::{info, warn};

use crate::decisions::RunDecisions;
use crate::path::is_s3;
use crate::plan::{Action, Plan};
use crate::record::RunRecord;
use crate::spec::TableFormat;
use crate::storage::delta::Orphans;
use crate::storage::{Fence, Storages};
use crate::units::count;

/// The version of each Delta table of the plan as the run left it: what its load committed, else
/// (up to date, failed, skipped) the table's current version, read before the vacuum commits.
pub(super) async fn delta_versions(plan: &Plan, record: &RunRecord, storages: &Storages) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Some(delta) = &storages.delta else { return out };
    for task in plan.tasks() {
        let Action::Load(load) = &task.action() else { continue };
        if load.format != TableFormat::Delta {
            continue;
        }
        let committed = record
            .report
            .tasks
            .iter()
            .find(|t| t.id == task.id())
            .and_then(|t| t.output.as_ref())
            .and_then(|o| o.details.get("delta_version").and_then(|v| v.parse::<u64>().ok()));
        if let Some(version) = committed {
            out.insert(load.table.clone(), version);
            continue;
        }
        match delta.latest_version(&load.path).await {
            Ok(Some(version)) => {
                out.insert(load.table.clone(), version);
            }
            Ok(None) => {}
            Err(e) => warn!("could not read the version of {}: {e}", load.path),
        }
    }
    // The tables of loads a run of some tasks (`--only`) did not keep, as they are.
    for (table, path) in plan.lake_tables() {
        if out.contains_key(table)
            || plan.tasks().iter().any(|t| matches!(t.action(), Action::Load(l) if &l.table == table))
        {
            continue;
        }
        if let Ok(Some(version)) = delta.latest_version(path).await {
            out.insert(table.clone(), version);
        }
    }
    out
}

/// After a successful run: deletes the files of Delta versions older than each table's retention.
pub(super) async fn vacuum(
    plan: &Plan,
    storages: &Storages,
    versions: &BTreeMap<String, u64>,
    fence: Option<&dyn Fence>,
) {
    for task in plan.tasks() {
        let Action::Load(load) = &task.action() else { continue };
        // Version 0 has removed nothing yet.
        if load.format != TableFormat::Delta || versions.get(&load.table).is_none_or(|v| *v == 0) {
            continue;
        }
        let Some(delta) = &storages.delta else { continue };
        match delta.vacuum(&load.path, load.retention, fence).await {
            Ok(0) => {}
            Ok(n) => info!(table = %load.table, files = n, "vacuumed the files of versions past retention"),
            Err(e) => warn!("could not vacuum {}: {e}", load.path),
        }
    }
}

/// Aborts the multipart uploads that killed runs left under dagrun's S3 prefixes (the tables it
/// loads, its runs folder, the EMR staging): their parts are billed until aborted. The lease is
/// held, so no other run writes there; an EMR step of a killed run may still be going, so under
/// what EMR writes only uploads older than the longest EMR task timeout (each step's bound on
/// the cluster) are taken.
pub(super) async fn abort_stale_uploads(plan: &Plan, decisions: &RunDecisions, storages: &Storages) {
    let now = std::time::SystemTime::now();
    let emr_bound =
        decisions.tasks_on("emr").map(|i| plan.tasks()[i].timeout() + std::time::Duration::from_secs(60)).max();
    let mut places: Vec<(String, std::time::SystemTime)> = Vec::new();
    for task in plan.tasks() {
        if let Action::Load(load) = &task.action() {
            let before =
                if decisions.engine(task.index()) == "emr" { now - emr_bound.unwrap_or_default() } else { now };
            places.push((load.path.clone(), before));
        }
    }
    places.push((plan.runs_dir().to_string(), now));
    if let (Some(emr), Some(bound)) = (plan.emr(), emr_bound) {
        places.push((emr.staging.clone(), now - bound));
    }
    for (path, before) in places {
        if !is_s3(&path) {
            continue;
        }
        let Ok(storage) = storages.for_path(&path) else { continue };
        match storage.abort_stale_uploads(&path, before).await {
            Ok(aborted) if aborted.is_empty() => {}
            Ok(aborted) => info!(
                "aborted {} a killed run left under {path} (their parts were billed), such as {}",
                count(aborted.len() as u64, "unfinished upload"),
                aborted[0]
            ),
            Err(e) => warn!("could not look for unfinished uploads under {path}: {e}"),
        }
    }
}

/// Removes what earlier runs that did not finish left beside the tables of the loads `loading`
/// (all loads: `None`; every load once holders were proven `dead`): staging folders, and the data
/// files of the processes in `dead` (lease holders proven dead, which can never commit them) that
/// no version or manifest names. Only while holding the lease: then no live run's files are taken.
pub(super) async fn remove_leftovers(
    plan: &Plan,
    storages: &Storages,
    loading: Option<&[usize]>,
    dead: &[String],
    fence: &dyn Fence,
) -> Result<(), String> {
    for task in plan.tasks() {
        let Action::Load(load) = &task.action() else { continue };
        let mut removed = Vec::new();
        // After holders proven dead, every table: they may have left files in any of them.
        if !dead.is_empty() || loading.is_none_or(|l| l.contains(&task.index())) {
            let storage = storages.for_path(&load.path).map_err(|e| e.to_string())?;
            removed = storage
                .remove_leftovers(&load.path, dead, Some(fence))
                .await
                .map_err(|e| format!("removing what unfinished runs left of {}: {e}", load.path))?;
        }
        if !dead.is_empty()
            && load.format == TableFormat::Delta
            && let Some(delta) = &storages.delta
        {
            // A table whose log cannot be read is left alone: its load says why.
            match delta.remove_orphans(&load.path, Orphans::OfDead(dead), Some(fence)).await {
                Ok(orphans) => removed.extend(orphans),
                Err(e) => warn!("could not look for what unfinished runs left of {}: {e}", load.path),
            }
        }
        match removed.len() {
            0 => {}
            1 => info!(table = %load.table, "removed what an unfinished run left: {}", removed[0]),
            n => {
                info!(table = %load.table, "removed {n} files and folders unfinished runs left, such as {}", removed[0])
            }
        }
    }
    Ok(())
}
