//! Resume: which tasks need not run because everything they lead to is already published from
//! the same inputs and configuration.
//!
//! Every task gets a fingerprint: a SHA-256 of dagrun's version, the task's resolved
//! configuration, its dependencies' fingerprints, and for an extract the listing of its input
//! files (path, size, and modification time or ETag). A load writes its fingerprint into the
//! table's `_manifest.json`. On the next run a load is up to date when the published manifest
//! has the same fingerprint and every file it names is there with its size; a half-written table
//! has no manifest, so it never counts. Tasks that lead only to up-to-date loads are skipped too;
//! anything that feeds a stale load runs, so a run that failed in the middle resumes by running
//! again. `--force` reruns everything, `--force TASK` that task and what depends on it.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use crate::plan::{Action, Plan};
use crate::spec::TableFormat;
use crate::storage::{MANIFEST, Storages, TableManifest, compile_glob};

/// What to rerun regardless of fingerprints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Force {
    #[default]
    /// Only what is stale runs.
    Nothing,
    /// Everything runs.
    All,
    /// These tasks and everything downstream of them.
    Tasks(Vec<String>),
}

/// The outcome of [`assess`].
#[derive(Debug, Clone, Default)]
pub struct Freshness {
    /// Task index -> fingerprint.
    pub fingerprints: BTreeMap<usize, String>,
    /// Tasks that need not run, with the reason shown in plans and summaries.
    pub fresh: BTreeMap<usize, String>,
    /// Why each load that runs must run (no table yet, inputs changed, forced...).
    pub stale: BTreeMap<usize, String>,
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Computes fingerprints and decides what is up to date. Reads listings and manifests only.
pub async fn assess(plan: &Plan, storages: &Storages, force: &Force) -> Freshness {
    let mut out = Freshness::default();
    let order = plan.topological_order();

    // Fingerprints, dependencies first.
    for &i in &order {
        let task = &plan.tasks[i];
        let mut h = Sha256::new();
        h.update(format!("dagrun {}\n", env!("CARGO_PKG_VERSION")));
        // A stable serialization: field names and values, not Rust's Debug output, which may change
        // with any compiler or refactor.
        let action = serde_json::to_string(&task.action).expect("an action serializes");
        h.update(format!("task {} {}\n{action}\n", task.id, task.kind));
        let mut deps: Vec<(&str, &String)> =
            task.deps.iter().map(|&d| (plan.tasks[d].id.as_str(), &out.fingerprints[&d])).collect();
        deps.sort();
        for (id, fp) in deps {
            h.update(format!("dep {id} {fp}\n"));
        }
        if let Action::Extract(e) = &task.action {
            h.update(input_listing(storages, &e.path, &e.glob).await);
        }
        out.fingerprints.insert(i, hex(&h.finalize()));
    }
    let forced: BTreeSet<usize> = match force {
        Force::Nothing => BTreeSet::new(),
        Force::All => (0..plan.tasks.len()).collect(),
        Force::Tasks(ids) => {
            let mut set = BTreeSet::new();
            for id in ids {
                if let Some(t) = plan.task(id) {
                    set.insert(t.index);
                    set.extend(plan.descendants(t.index));
                }
            }
            set
        }
    };

    // Loads: up to date when the published manifest carries the same fingerprint.
    let mut fresh_loads: BTreeMap<usize, String> = BTreeMap::new();
    for task in &plan.tasks {
        let Action::Load(load) = &task.action else { continue };
        if forced.contains(&task.index) {
            out.stale.insert(task.index, "forced".into());
            continue;
        }
        match published(storages, load).await {
            Ok(manifest) if manifest.fingerprint.as_deref() == Some(out.fingerprints[&task.index].as_str()) => {
                fresh_loads.insert(task.index, manifest.run_id);
            }
            Ok(_) => {
                out.stale.insert(task.index, "inputs or configuration changed since it was published".into());
            }
            Err(why) => {
                out.stale.insert(task.index, why);
            }
        }
    }

    // What must run: stale loads, forced tasks, tasks whose results nothing records (no load
    // downstream), and everything those depend on. The rest is up to date.
    let order = plan.topological_order();
    // Whether a load lies downstream of each task, from the last tasks back.
    let mut leads_to_load = vec![false; plan.tasks.len()];
    for &i in order.iter().rev() {
        leads_to_load[i] =
            plan.dependents(i).iter().any(|&d| matches!(plan.tasks[d].action, Action::Load(_)) || leads_to_load[d]);
    }
    let mut run: BTreeSet<usize> = BTreeSet::new();
    for task in &plan.tasks {
        let i = task.index;
        let is_load = matches!(task.action, Action::Load(_));
        if forced.contains(&i) || (is_load && !fresh_loads.contains_key(&i)) || (!is_load && !leads_to_load[i]) {
            // The task and everything upstream of it not yet marked.
            let mut stack = vec![i];
            while let Some(j) = stack.pop() {
                if run.insert(j) {
                    stack.extend(plan.tasks[j].deps.iter().copied());
                }
            }
        }
    }
    for task in &plan.tasks {
        let i = task.index;
        if run.contains(&i) {
            continue;
        }
        let reason = match fresh_loads.get(&i) {
            Some(run_id) => format!("up to date: published by run {run_id} from the same inputs"),
            None => {
                let loads: Vec<&str> = plan
                    .descendants(i)
                    .into_iter()
                    .filter(|&d| matches!(plan.tasks[d].action, Action::Load(_)))
                    .map(|d| plan.tasks[d].id.as_str())
                    .collect();
                format!("up to date: only feeds {}, already published", loads.join(", "))
            }
        };
        out.fresh.insert(i, reason);
    }
    out
}

/// A stable digest of an extract's input files; a listing error gives a digest that matches
/// nothing, so the task runs (and reports the error).
async fn input_listing(storages: &Storages, path: &str, glob: &str) -> String {
    let listed = storages.list_and_keep(path, glob).await.map_err(|e| e.to_string());
    match listed {
        Ok(files) => {
            let mut h = Sha256::new();
            for f in files {
                let stamp = match (&f.etag, f.modified) {
                    (Some(etag), _) => etag.clone(),
                    (None, Some(t)) => t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()).to_string(),
                    (None, None) => String::new(),
                };
                h.update(format!("{}\t{}\t{stamp}\n", f.relative, f.size));
            }
            format!("inputs {}\n", hex(&h.finalize()))
        }
        Err(e) => format!("inputs unavailable {e} {:?}\n", std::time::SystemTime::now()),
    }
}

/// The manifest of the table `load` publishes, in its format, if it is complete: every file it
/// names is present with its size.
async fn published(storages: &Storages, load: &crate::plan::Load) -> Result<TableManifest, String> {
    let path = load.path.as_str();
    let storage = storages.for_path(path).map_err(|e| e.to_string())?;
    let manifest = match load.format {
        TableFormat::Delta => {
            let delta = storages.delta(path).map_err(|e| e.to_string())?;
            match delta.snapshot(path, None).await {
                Ok(Some(snapshot)) => snapshot.manifest,
                Ok(None) => return Err("not published yet".to_string()),
                Err(e) => return Err(format!("its Delta log cannot be read ({e})")),
            }
        }
        TableFormat::Parquet => {
            let manifest_path = format!("{}/{MANIFEST}", path.trim_end_matches('/'));
            let bytes = storage.read(&manifest_path).await.map_err(|_| "not published yet".to_string())?;
            serde_json::from_slice(&bytes).map_err(|e| format!("its manifest is unreadable ({e})"))?
        }
    };
    let glob = compile_glob("**").map_err(|e| e.to_string())?;
    let present: BTreeMap<String, u64> =
        storage.list(path, &glob).await.map_err(|e| e.to_string())?.into_iter().map(|o| (o.relative, o.size)).collect();
    for file in &manifest.files {
        if present.get(&file.path) != Some(&file.size) {
            return Err(format!("the published table is incomplete ({} is missing or changed)", file.path));
        }
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::PlanOptions;
    use crate::diagnostic::SourceFile;
    use crate::storage::{ManifestFile, Storage};
    use crate::vars::VarInputs;

    fn plan(root: &std::path::Path) -> Plan {
        let text = format!(
            r#"name: t
vars: {{root: "{}"}}
tasks:
  - {{id: a, kind: extract, path: "${{root}}/in_a", format: jsonl, schema: {{x: int}}}}
  - {{id: b, kind: extract, path: "${{root}}/in_b", format: jsonl, schema: {{x: int}}}}
  - {{id: load_a, kind: load, depends_on: [a], table: a, path: "${{root}}/out/a"}}
  - {{id: load_b, kind: load, depends_on: [b], table: b, path: "${{root}}/out/b"}}
  - {{id: both, kind: transform, depends_on: [a, b], sql: "SELECT * FROM a UNION ALL SELECT * FROM b"}}
"#,
            root.display()
        );
        let inputs = VarInputs { env: Some(BTreeMap::new()), ..Default::default() };
        crate::compile::compile(SourceFile::new("t.yaml", text), &inputs, &PlanOptions::default()).unwrap()
    }

    /// Publishes a one-file table at `path` carrying `fingerprint`.
    async fn publish(path: &std::path::Path, fingerprint: &str) {
        let storage = crate::storage::LocalStorage;
        let target = path.display().to_string();
        let write = storage.begin_table(&target, "r0-1").await.unwrap();
        storage.write(&storage.table_file(&write, "part-00000.parquet").path, b"data".to_vec()).await.unwrap();
        let manifest = TableManifest {
            table: "t".into(),
            run_id: "r0".into(),
            rows: 1,
            partition_by: Vec::new(),
            files: vec![ManifestFile { path: "part-00000.parquet".into(), size: 4, rows: None }],
            fingerprint: Some(fingerprint.into()),
        };
        storage.commit_table(&write, &manifest).await.unwrap();
    }

    fn setup() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for input in ["in_a", "in_b"] {
            std::fs::create_dir_all(dir.path().join(input)).unwrap();
            std::fs::write(dir.path().join(input).join("1.json"), "{\"x\": 1}").unwrap();
        }
        dir
    }

    fn ids(plan: &Plan, set: &BTreeMap<usize, String>) -> Vec<String> {
        set.keys().map(|&i| plan.tasks[i].id.clone()).collect()
    }

    #[tokio::test]
    async fn nothing_published_means_everything_runs() {
        let dir = setup();
        let p = plan(dir.path());
        let f = assess(&p, &Storages::default(), &Force::Nothing).await;
        assert!(f.fresh.is_empty());
        assert_eq!(f.stale.values().next().unwrap(), "not published yet");
        assert_eq!(f.fingerprints.len(), p.tasks.len(), "every task has a fingerprint");
    }

    #[tokio::test]
    async fn a_load_published_from_the_same_inputs_is_skipped_with_what_only_feeds_it() {
        let dir = setup();
        let p = plan(dir.path());
        let first = assess(&p, &Storages::default(), &Force::Nothing).await;
        let load_a = p.task("load_a").unwrap().index;
        publish(&dir.path().join("out/a"), &first.fingerprints[&load_a]).await;

        let p = plan(dir.path());
        let again = assess(&p, &Storages::default(), &Force::Nothing).await;
        // `a` also feeds `both`, which records nothing and so always runs: `a` must run too.
        assert_eq!(ids(&p, &again.fresh), vec!["load_a"]);
        assert_eq!(again.fresh[&load_a], "up to date: published by run r0 from the same inputs");
    }

    #[tokio::test]
    async fn changed_inputs_forcing_and_missing_files_make_a_load_stale() {
        let dir = setup();
        let p = plan(dir.path());
        let first = assess(&p, &Storages::default(), &Force::Nothing).await;
        let load_b = p.task("load_b").unwrap().index;
        publish(&dir.path().join("out/b"), &first.fingerprints[&load_b]).await;

        let p = plan(dir.path());
        let unchanged = assess(&p, &Storages::default(), &Force::Nothing).await;
        assert_eq!(ids(&p, &unchanged.fresh), vec!["load_b"]);

        let forced = assess(&p, &Storages::default(), &Force::Tasks(vec!["b".into()])).await;
        assert!(forced.fresh.is_empty());
        assert_eq!(forced.stale[&load_b], "forced");

        std::fs::write(dir.path().join("in_b/1.json"), "{\"x\": 2}\n").unwrap();
        let changed = assess(&p, &Storages::default(), &Force::Nothing).await;
        assert!(changed.fresh.is_empty());
        assert_eq!(changed.stale[&load_b], "inputs or configuration changed since it was published");

        std::fs::remove_file(dir.path().join("out/b/part-00000.parquet")).unwrap();
        let broken = assess(&p, &Storages::default(), &Force::Nothing).await;
        assert!(broken.stale[&load_b].starts_with("the published table is incomplete"), "{:?}", broken.stale);
    }
}
