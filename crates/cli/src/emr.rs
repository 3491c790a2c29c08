//! `dagrun emr ...`: `gc` lists the EMR clusters dagrun started that are still alive and
//! terminates those whose run is not live (no unexpired lease of that run on its lake), or, when
//! the lease cannot be read, that are older than `--older-than`; `specs` writes the step specs a
//! run would submit, to run the Spark side anywhere.

use std::sync::Arc;
use std::time::Duration;

use dagrun_aws::S3Storage;
use dagrun_aws::emr::gc::{self, ClusterSummary};
use dagrun_aws::emr::step;
use dagrun_core::lease;
use dagrun_core::path::is_s3;
use dagrun_core::plan::{S3Settings, join_path};
use dagrun_core::spec::TaskKind;
use dagrun_core::storage::Storages;
use dagrun_core::units::format_duration;

use crate::cli::{GcArgs, SpecsArgs};
use crate::commands::{load_plan, plan_options, print_stdout};
use crate::exit::Exit;

/// Why a cluster is terminated (`Ok`), or why it is kept (`Err`).
async fn verdict(
    cluster: &ClusterSummary,
    storages: &Storages,
    older_than: Option<Duration>,
    runs: &[String],
) -> Result<String, String> {
    let old = match (older_than, cluster.age) {
        (Some(limit), Some(age)) if age > limit => Some(format!("older than {}", format_duration(limit))),
        _ => None,
    };
    let unknown = |why: String| match &old {
        Some(old) => Ok(format!("{old}, and {why}")),
        None => Err(format!("kept: {why} (use --older-than to end it anyway)")),
    };
    let Some(runs_dir) = cluster.runs_dir(runs) else {
        return unknown(match cluster.runs_tag() {
            "" => "it has no dagrun:runs tag to find its run's lease".to_string(),
            tag => format!("its runs folder is stored as {tag} (its URI is too long for a tag): pass it with --runs"),
        });
    };
    let storage = match storages.for_path(&runs_dir) {
        Ok(storage) => storage,
        Err(e) => return unknown(format!("its run's lease cannot be read: {e}")),
    };
    match lease::current(storage.as_ref(), &runs_dir).await {
        Ok(Some(holder)) if holder.run_id == cluster.run() && holder.is_live() => {
            let by = if holder.token == cluster.instance() || cluster.instance().is_empty() {
                String::new()
            } else {
                format!(", reattached by instance {}", holder.token)
            };
            Err(format!(
                "kept: its run is live (its lease was renewed {} ago by host {} pid {}{by}){}",
                format_duration(holder.renewed_ago()),
                holder.host,
                holder.pid,
                old.map(|o| format!("; {o}, but a live run's cluster is never taken")).unwrap_or_default()
            ))
        }
        Ok(Some(holder)) if holder.run_id == cluster.run() => {
            Ok(format!("its run stopped renewing its lease {} ago", format_duration(holder.renewed_ago())))
        }
        Ok(Some(holder)) => Ok(format!("its run no longer holds the lake (run {} does)", holder.run_id)),
        Ok(None) => Ok(format!("its run is over (no lease in {runs_dir})")),
        Err(e) => unknown(format!("its run's lease cannot be read: {e}")),
    }
}

pub(crate) async fn gc(args: &GcArgs) -> Result<u8, Exit> {
    let fail = |e: dagrun_core::engine::TaskError| Exit::failed(format!("error: {}", e.message));
    let client = dagrun_aws::emr::client(args.region.as_deref()).await;
    let clusters = gc::active_clusters(&client).await.map_err(fail)?;
    let mut storages = Storages::default();
    if clusters.iter().any(|c| c.runs_dir(&args.runs).is_some_and(|r| is_s3(&r))) {
        storages.s3 = Some(Arc::new(S3Storage::connect(&S3Settings::default()).await));
    }
    if clusters.is_empty() {
        print_stdout("no live clusters started by dagrun\n");
        return Ok(0);
    }
    let mut doomed = Vec::new();
    let mut lines = String::new();
    for c in &clusters {
        let age = c.age.map_or_else(|| "?".to_string(), format_duration);
        let why = verdict(c, &storages, args.older_than, &args.runs).await;
        let action = match &why {
            Ok(why) if args.dry_run => format!("would terminate: {why}"),
            Ok(why) => format!("terminating: {why}"),
            Err(kept) => kept.clone(),
        };
        lines.push_str(&format!(
            "{}  {:<13} age {:<6} pipeline {} run {}  {action}\n",
            c.id,
            c.state,
            age,
            c.pipeline(),
            c.run()
        ));
        if why.is_ok() {
            doomed.push(c.id.clone());
        }
    }
    print_stdout(&lines);
    if !args.dry_run {
        gc::terminate(&client, &doomed).await.map_err(fail)?;
        print_stdout(&format!("{} cluster(s) terminated, {} kept\n", doomed.len(), clusters.len() - doomed.len()));
    }
    Ok(0)
}

/// `dagrun emr specs`: the step specs of every Spark-capable task, in run order.
pub(crate) fn specs(args: &SpecsArgs) -> Result<u8, Exit> {
    let plan = load_plan(&args.pipeline.pipeline, &args.pipeline.set, &plan_options())?;
    let fail = |what: &str, e: std::io::Error| Exit::failed(format!("error: {what} {}: {e}", args.out.display()));
    std::fs::create_dir_all(&args.out).map_err(|e| fail("creating", e))?;
    let out = std::fs::canonicalize(&args.out).map_err(|e| fail("resolving", e))?;
    let root = out.display().to_string();
    let tables = join_path(&root, "tables");
    let mut specs = Vec::new();
    for i in plan.waves().into_iter().flatten() {
        let task = &plan.tasks()[i];
        if task.kind() == TaskKind::QualityCheck {
            continue;
        }
        let spec = step::spec(&plan, task, &args.run_id, 1, None, &root, &|t| step::table_location(&tables, t))
            .map_err(|e| Exit::failed(format!("error: {e}")))?;
        specs.push(spec);
    }
    let json = serde_json::to_vec_pretty(&specs).expect("step specs serialize");
    std::fs::write(out.join("steps.json"), json).map_err(|e| fail("writing steps.json in", e))?;
    std::fs::write(out.join("dagrun_step.py"), step::RUNNER).map_err(|e| fail("writing dagrun_step.py in", e))?;
    print_stdout(&format!(
        "wrote {} step specs ({}) to {root}/steps.json\nrun them with: spark-submit {root}/dagrun_step.py {root}/steps.json\n",
        specs.len(),
        specs.iter().map(|s| s.task.as_str()).collect::<Vec<_>>().join(", ")
    ));
    Ok(0)
}
