//! `dagrun emr ...`: `gc` lists the EMR clusters dagrun started that are still alive and
//! terminates those whose run is over (its run.json exists) or that are older than
//! `--older-than`; `specs` writes the step specs a run would submit, to run the Spark side anywhere.

use std::sync::Arc;
use std::time::Duration;

use dagrun_aws::S3Storage;
use dagrun_aws::emr::gc::{self, ClusterSummary};
use dagrun_aws::emr::step;
use dagrun_core::plan::{S3Settings, join_path};
use dagrun_core::record::RUN_RECORD;
use dagrun_core::spec::TaskKind;
use dagrun_core::storage::{Storages, is_s3};
use dagrun_core::units::format_duration;

use crate::cli::{GcArgs, SpecsArgs};
use crate::commands::{Exit, load_plan, plan_options, print_stdout};

/// Why a cluster is terminated, or `None` to keep it.
async fn verdict(cluster: &ClusterSummary, storages: &Storages, older_than: Option<Duration>) -> Option<String> {
    if let (Some(limit), Some(age)) = (older_than, cluster.age)
        && age > limit
    {
        return Some(format!("older than {}", format_duration(limit)));
    }
    if cluster.runs_dir().is_empty() || cluster.run().is_empty() {
        return None;
    }
    let record = join_path(cluster.runs_dir(), &format!("{}/{RUN_RECORD}", cluster.run()));
    let storage = storages.for_path(&record).ok()?;
    storage.read(&record).await.ok().map(|_| format!("its run is over ({record})"))
}

pub(crate) async fn gc(args: &GcArgs) -> Result<u8, Exit> {
    let fail = |e: dagrun_core::engine::TaskError| Exit { code: 1, message: format!("error: {}", e.message) };
    let client = dagrun_aws::emr::client(args.region.as_deref()).await;
    let clusters = gc::active_clusters(&client).await.map_err(fail)?;
    let mut storages = Storages::default();
    if clusters.iter().any(|c| is_s3(c.runs_dir())) {
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
        let why = verdict(c, &storages, args.older_than).await;
        let action = match &why {
            Some(why) if args.dry_run => format!("would terminate: {why}"),
            Some(why) => format!("terminating: {why}"),
            None => "kept: its run may still be going (use --older-than to end it anyway)".to_string(),
        };
        lines.push_str(&format!(
            "{}  {:<13} age {:<6} pipeline {} run {}  {action}\n",
            c.id,
            c.state,
            age,
            c.pipeline(),
            c.run()
        ));
        if why.is_some() {
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
    let fail =
        |what: &str, e: std::io::Error| Exit { code: 1, message: format!("error: {what} {}: {e}", args.out.display()) };
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
            .map_err(|e| Exit { code: 1, message: format!("error: {e}") })?;
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
