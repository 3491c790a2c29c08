//! `dagrun emr gc`: finds clusters dagrun started (by their `dagrun:` tags) that are still alive
//! and terminates those whose run is over or that are older than a limit. The safety net behind
//! the safety net: the idle auto-termination ends a forgotten cluster too, but only after its
//! idle timeout, and only if nothing keeps it busy.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_emr::types::ClusterState;

use super::requests::{TAG_PIPELINE, TAG_RUN, TAG_RUNS};
use super::{age, sdk_error};
use dagrun_core::engine::TaskError;

/// A live cluster that dagrun started.
#[derive(Debug, Clone)]
pub struct ClusterSummary {
    /// The cluster id (`j-...`).
    pub id: String,
    /// The cluster's name.
    pub name: String,
    /// Its state (`WAITING`, `RUNNING`, ...).
    pub state: String,
    /// Its tags, dagrun's among them.
    pub tags: BTreeMap<String, String>,
    /// How long ago it was created.
    pub age: Option<Duration>,
}

impl ClusterSummary {
    /// The pipeline that started it (`dagrun:pipeline`).
    pub fn pipeline(&self) -> &str {
        self.tags.get(TAG_PIPELINE).map_or("", String::as_str)
    }

    /// The run that started it (`dagrun:run`).
    pub fn run(&self) -> &str {
        self.tags.get(TAG_RUN).map_or("", String::as_str)
    }

    /// Where the run's records live (`run.json` says whether the run is over).
    pub fn runs_dir(&self) -> &str {
        self.tags.get(TAG_RUNS).map_or("", String::as_str)
    }
}

/// Every cluster that is not terminated and carries dagrun's run tag.
pub async fn active_clusters(client: &aws_sdk_emr::Client) -> Result<Vec<ClusterSummary>, TaskError> {
    let states =
        vec![ClusterState::Starting, ClusterState::Bootstrapping, ClusterState::Running, ClusterState::Waiting];
    let mut ids = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let out = client
            .list_clusters()
            .set_cluster_states(Some(states.clone()))
            .set_marker(marker.clone())
            .send()
            .await
            .map_err(|e| sdk_error("listing EMR clusters", e))?;
        ids.extend(out.clusters().iter().filter_map(|c| c.id().map(String::from)));
        marker = out.marker().map(String::from);
        if marker.is_none() {
            break;
        }
    }
    let mut found = Vec::new();
    for id in ids {
        let out = client
            .describe_cluster()
            .cluster_id(&id)
            .send()
            .await
            .map_err(|e| sdk_error("describing an EMR cluster", e))?;
        let Some(cluster) = out.cluster() else { continue };
        let tags: BTreeMap<String, String> = cluster
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
            .collect();
        if !tags.contains_key(TAG_RUN) {
            continue;
        }
        let status = cluster.status();
        found.push(ClusterSummary {
            id,
            name: cluster.name().unwrap_or("").to_string(),
            state: status.and_then(|s| s.state()).map_or("", |s| s.as_str()).to_string(),
            age: age(status.and_then(|s| s.timeline()).and_then(|t| t.creation_date_time())),
            tags,
        });
    }
    Ok(found)
}

/// Terminates clusters by id.
pub async fn terminate(client: &aws_sdk_emr::Client, ids: &[String]) -> Result<(), TaskError> {
    if ids.is_empty() {
        return Ok(());
    }
    client
        .terminate_job_flows()
        .set_job_flow_ids(Some(ids.to_vec()))
        .send()
        .await
        .map_err(|e| sdk_error("terminating EMR clusters", e))?;
    Ok(())
}
