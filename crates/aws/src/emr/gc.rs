//! `dagrun emr gc`: finds clusters dagrun started (by their `dagrun:` tags) that are still alive,
//! for the CLI to terminate those whose run is not live: a run is live while it holds an unexpired
//! lease on its lake (renewed every quarter of its length), so a reused run id, an overlapping run
//! or a slow step never makes gc take a live run's cluster. The safety net behind the safety net:
//! the idle auto-termination ends a forgotten cluster too, but only after its idle timeout, and
//! only if nothing keeps it busy.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_emr::types::ClusterState;

use super::requests::{TAG_INSTANCE, TAG_PIPELINE, TAG_RUN, TAG_RUNS};
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

    /// The process that started it (`dagrun:instance`; empty for clusters of older dagruns).
    pub fn instance(&self) -> &str {
        self.tags.get(TAG_INSTANCE).map_or("", String::as_str)
    }

    /// Where the run's lease and records live: the `dagrun:runs` tag, or, when it holds a hash
    /// (the URI broke EMR's tag rules), the one of `candidates` with that hash.
    pub fn runs_dir(&self, candidates: &[String]) -> Option<String> {
        let tag = self.tags.get(TAG_RUNS)?;
        if !tag.starts_with("sha256:") {
            return Some(tag.clone());
        }
        candidates.iter().find(|c| &dagrun_core::emr::runs_tag_value(c) == tag).cloned()
    }

    /// The raw `dagrun:runs` tag.
    pub fn runs_tag(&self) -> &str {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(runs: &str) -> ClusterSummary {
        let tags = [(TAG_RUN.to_string(), "r1".to_string()), (TAG_RUNS.to_string(), runs.to_string())];
        ClusterSummary { id: "j-1".into(), name: String::new(), state: "WAITING".into(), tags: tags.into(), age: None }
    }

    #[test]
    fn a_hashed_runs_tag_is_matched_to_the_runs_folder_given() {
        let long = format!("s3://lake/{}/_dagrun", "x".repeat(300));
        let c = cluster(&dagrun_core::emr::runs_tag_value(&long));
        assert_eq!(c.runs_dir(&[]), None);
        assert_eq!(c.runs_dir(&["s3://other/_dagrun".into(), long.clone()]), Some(long));
        assert_eq!(cluster("s3://lake/_dagrun").runs_dir(&[]).as_deref(), Some("s3://lake/_dagrun"));
    }
}
