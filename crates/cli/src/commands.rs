//! What each subcommand does. Every command starts from the same [`compile::compile_file`], so
//! `validate`, `graph`, `--dry-run` and a real run agree on what the pipeline is.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dagrun_core::Diagnostics;
use dagrun_core::engine::Engines;

use dagrun_core::compile::{self, LoadError, PlanError, PlanOptions};
use dagrun_core::decisions::RunDecisions;
use dagrun_core::executor::{self, ExecutorOptions};
use dagrun_core::graph::{self, GraphFormat};
use dagrun_core::lease::{self, Holder, Lease, LeaseError, LeaseOptions, LeasePlace};
use dagrun_core::plan::{Action, Plan, join_path};
use dagrun_core::record::{LATEST, RUN_RECORD, RunRecord};
use dagrun_core::resume::{self, Force};
use dagrun_core::slice::SliceRequest;
use dagrun_core::spec::TableFormat;
use dagrun_core::storage::delta::Orphans;
use dagrun_core::storage::{Fence, Storages};
use dagrun_core::vars::VarInputs;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::auto::{describe, resolve};
use crate::cli::{GraphArgs, GraphFormatArg, HistoryArgs, LakeArgs, ReportArgs, RunArgs, SpillAbove, ValidateArgs};
use crate::exit::{Code, Exit};
use crate::ui::{ProgressObserver, Terminal};
use crate::{build, records, render, report};

/// What validation knows: every engine the file format has (a lean build still validates them),
/// and the folder in which the local engine would spill.
pub(crate) fn plan_options() -> PlanOptions {
    PlanOptions {
        engines: build::KNOWN_ENGINES.iter().chain(&[dagrun_core::auto::AUTO]).map(|e| e.to_string()).collect(),
        spill_dir: Some(std::env::temp_dir().display().to_string()),
        schema_check: build::schema_check(),
    }
}

/// Loads and validates a pipeline; problems become a located report and exit code 2.
pub(crate) fn load_plan(path: &Path, set: &[(String, String)], options: &PlanOptions) -> Result<Plan, Exit> {
    let inputs = VarInputs { overrides: set.to_vec(), ..Default::default() };
    match compile::compile_file(path, &inputs, options) {
        Ok(plan) => {
            if !plan.warnings().is_empty() {
                let report = Diagnostics::new(plan.source().clone(), plan.warnings().to_vec());
                eprint!("{}", report.render());
            }
            Ok(plan)
        }
        Err(LoadError::Read { path, error }) => {
            Err(Exit::config(format!("error: cannot read pipeline {path}: {error}")))
        }
        Err(LoadError::Plan(PlanError::Invalid(diags))) => Err(Exit::config(diags.render().trim_end().to_string())),
        Err(LoadError::Plan(e @ PlanError::UnknownOverrides(_))) => Err(Exit::config(format!("error: {e}"))),
    }
}

pub(crate) async fn validate(args: &ValidateArgs) -> Result<u8, Exit> {
    let plan = load_plan(&args.pipeline.pipeline, &args.pipeline.set, &plan_options())?;
    let count = dagrun_core::units::count;
    print_stdout(&format!(
        "{} is valid: pipeline {}, {} in {}\n",
        args.pipeline.pipeline.display(),
        plan.name(),
        count(plan.tasks().len() as u64, "task"),
        count(plan.waves().len() as u64, "wave")
    ));
    if !args.env {
        return Ok(Code::Ok.into());
    }
    // The environment: can every folder or bucket be read or written as the plan needs?
    let storages = build::storages(&plan).await;
    // S3 writes only need their bucket: check each bucket once.
    let mut checks: Vec<(String, bool, Vec<String>)> = Vec::new();
    for p in plan.paths() {
        let key = match dagrun_core::path::bucket_of(&p.path) {
            Some(bucket) if p.write => format!("s3://{bucket}"),
            _ => p.path.clone(),
        };
        match checks.iter_mut().find(|(k, w, _)| *k == key && *w == p.write) {
            Some((_, _, users)) => users.push(p.user),
            None => checks.push((key, p.write, vec![p.user])),
        }
    }
    let mut failed = 0;
    for (path, write, users) in checks {
        let storage = storages.for_path(&path).map_err(|e| Exit::failed(format!("error: {e}")))?;
        let check = storage.check_access(&path, write).await;
        let mode = if write { "write" } else { "read" };
        let mark = if check.ok { "ok  " } else { "FAIL" };
        print_stdout(&format!("  {mark} {mode:<5} {path} ({}): {}\n", users.join(", "), check.detail));
        if !check.ok {
            failed += 1;
        }
    }
    if failed > 0 {
        eprintln!("error: {failed} of the pipeline's paths cannot be used as needed");
        return Ok(1);
    }
    Ok(Code::Ok.into())
}

pub(crate) fn graph(args: &GraphArgs) -> Result<(), Exit> {
    let plan = load_plan(&args.pipeline.pipeline, &args.pipeline.set, &plan_options())?;
    let format = match args.format {
        GraphFormatArg::Ascii => GraphFormat::Ascii,
        GraphFormatArg::Dot => GraphFormat::Dot,
        GraphFormatArg::Mermaid => GraphFormat::Mermaid,
        GraphFormatArg::Svg => {
            print_stdout(&format!("{}\n", report::plan_svg(&plan)));
            return Ok(());
        }
        GraphFormatArg::Html => {
            print_stdout(&report::plan_html(&plan));
            return Ok(());
        }
    };
    print_stdout(&graph::render(&plan, format, 100));
    Ok(())
}

/// Prints to stdout, secrets hidden; a closed pipe (`dagrun graph | head`) is not an error.
pub(crate) fn print_stdout(text: &str) {
    let text = dagrun_core::redact::redact(text);
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn run_id() -> String {
    let now = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let suffix: u16 = rand::random();
    format!("{now}-{suffix:04x}")
}

pub(crate) async fn run(args: &RunArgs, terminal: &Terminal) -> Result<u8, Exit> {
    // Before anything else happens: from here on Ctrl-C and SIGTERM cancel the run (and let it
    // clean up) instead of killing the process.
    let cancel = CancellationToken::new();
    let signals = Signals::install().map_err(|e| Exit::failed(format!("error: {e}")))?;
    tokio::spawn(watch_signals(signals, cancel.clone()));

    let Some(path) = &args.pipeline else {
        return Err(Exit::config("error: no pipeline given; try `dagrun --help`"));
    };
    let mut plan = load_plan(path, &args.set, &plan_options())?;
    if !args.only.is_empty() {
        plan = plan.select(&args.only).map_err(|e| Exit::config(format!("error: {e}")))?;
    }
    // What this run decides beside the plan, which never changes.
    let mut decisions = RunDecisions::new(&plan);
    if let Some(request) = slice_request(args)? {
        decisions.scope(&plan, request).map_err(|e| Exit::config(format!("error: {e}")))?;
    }
    if let Some(max) = args.max_cost {
        decisions.set_budget(max);
    }
    let on_emr: Vec<&str> = decisions.tasks_on("emr").map(|i| plan.tasks()[i].id()).collect();
    if decisions.budget() == Some(0.0) && !on_emr.is_empty() {
        return Err(Exit::config(format!(
            "error: a budget of $0 forbids EMR (--max-cost 0 or budget.max_usd: 0), and {} run on emr: {}\n  = run them locally (engine: local, or --set engine=local for Sparkify), or allow a budget",
            dagrun_core::units::count(on_emr.len() as u64, "task"),
            on_emr.join(", ")
        )));
    }
    let jobs = args.jobs.map_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()), |j| j as usize);
    let force = force_of(&args.force, &plan)?;
    let storages = build::storages(&plan).await;
    // `engine: auto`: decided now, from listings, before engines are built for the plan.
    let choices = resolve(&plan, &mut decisions, &storages).await?;
    if !choices.is_empty() && !args.dry_run {
        print_stdout(&describe(&choices));
    }
    let spill_above = args.spill_above.map(|s| match s {
        SpillAbove::Bytes(n) => Some(n),
        SpillAbove::Never => None,
    });
    let kept = build::Kept::for_report(&plan);
    let local_flags = build::LocalFlags {
        spill_above,
        allow_breaking_schema: args.allow_breaking_schema,
        extract_cache: !args.no_cache,
    };
    let emr_options = build::EmrOptions { keep_staging: args.keep_staging, refresh_prices: args.refresh_prices };
    let engines = build::engines(&storages, &plan, &decisions, &kept, local_flags, emr_options).await?;
    if args.dry_run {
        // What is already published from the same inputs (reads listings and manifests only),
        // then the real executor walked with engines that only describe.
        // S3 that cannot be reached (no credentials) is said once, and nothing is listed there.
        let unreachable = match &storages.s3 {
            Some(s3) if plan.uses_s3() => s3.ready().await.err(),
            _ => None,
        };
        let freshness = match &unreachable {
            None => resume::assess(&plan, &decisions, &storages, &force, false).await,
            Some(why) => {
                print_stdout(&format!(
                    "note: could not check what is up to date on S3, so every task is shown as running: {why}\n"
                ));
                resume::Freshness::default()
            }
        };
        refuse(&freshness)?;
        if let Some(slice) = &freshness.slice {
            decisions.decide_slice(slice.clone());
        }
        let mut options = ExecutorOptions::new("dry-run");
        options.jobs = jobs;
        options.fail_fast = args.fail_fast;
        decisions.fresh = freshness.fresh.clone();
        if unreachable.is_none() {
            options.expected = records::last_durations(&plan, &storages).await;
        }
        let plan = Arc::new(plan);
        let decided = Arc::new(decisions.clone());
        let walk = dagrun_core::dry_run::walk(plan.clone(), decided, build::KNOWN_ENGINES, &options);
        print_stdout(&describe(&choices));
        print_stdout(&render::dry_run(&plan, &decisions, &engines, jobs, &freshness, &walk));
        if let Some(price) = engines.get("emr").and_then(|e| e.price()) {
            let (history, none) = match &unreachable {
                None => (records::latest(plan.runs_dir(), &storages).await, "the latest run record has no EMR cluster"),
                Some(_) => (None, "the run records could not be read"),
            };
            print_stdout(&render::emr_estimate(&price, history.as_ref(), none));
        }
        return Ok(Code::Ok.into());
    }

    let mut options = ExecutorOptions::new(args.run_id.clone().unwrap_or_else(run_id));
    options.jobs = jobs;
    options.fail_fast = args.fail_fast;

    build::check_engines(&plan, &decisions)?;
    if cancel.is_cancelled() {
        return Err(Exit::interrupted("interrupted before the run started: nothing was written"));
    }
    // One writing run per lake: nothing is written before the lease is ours.
    let mut places = Vec::new();
    for path in plan.lease_paths() {
        let storage = storages.for_path(&path).map_err(|e| Exit::failed(format!("error: {e}")))?;
        places.push(LeasePlace { path, storage: storage.clone() });
    }
    let me = Holder::this_process(&options.run_id, &options.instance, plan.name());
    let lease_options = LeaseOptions {
        ttl: args.lease_ttl.unwrap_or(lease::DEFAULT_TTL),
        wait: args.wait_for_lock,
        ..LeaseOptions::default()
    };
    let lease = match Lease::acquire(places, me, &lease_options, &cancel).await {
        Ok(lease) => lease,
        Err(LeaseError::Cancelled(_)) => {
            return Err(Exit::interrupted("interrupted while waiting for the lake's lease"));
        }
        Err(e @ LeaseError::Held { .. }) => {
            let advice = match &e {
                LeaseError::Held { waited: Some(w), .. } => {
                    format!("waited {} (--wait-for-lock); nothing was written", dagrun_core::units::format_duration(*w))
                }
                _ => "nothing was written; wait for it with --wait-for-lock DURATION, or, if that run is dead, run again once its lease expires".into(),
            };
            return Err(Exit::failed(format!("error: {e}\n  = {advice}")));
        }
        Err(e) => return Err(Exit::failed(format!("error: taking the lease on the lake: {e}"))),
    };
    // A lost lease stops the run like a signal, before anything more is published.
    {
        let lost = lease.lost();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            lost.cancelled().await;
            cancel.cancel();
        });
    }
    // Holders proven dead can never commit: what they left goes now. A holder whose lease only
    // expired may be frozen, and its files go only once this run has committed their table.
    let dead: Vec<String> =
        lease.took_over().iter().filter(|t| t.proven_dead).map(|t| t.holder.token.clone()).collect();
    let fence = lease.fence();
    options.fence = Some(fence.clone());
    let outcome = run_leased(
        &plan,
        decisions,
        args,
        terminal,
        &storages,
        &engines,
        &kept,
        options,
        force,
        cancel.clone(),
        &dead,
        &choices,
    )
    .await;
    // This run's own failed attempts removed their files; staging folders of earlier runs that
    // did not finish go, only while this run still holds the lake.
    if !lease.lost().is_cancelled()
        && let Err(e) = remove_leftovers(&plan, &storages, None, &[], fence.as_ref()).await
    {
        warn!("{e}");
    }
    let lost_to = lease.lost_to();
    if let Err(e) = lease.release().await {
        warn!("could not release the lease on the lake: {e}");
    }
    if let Some(holder) = lost_to {
        return Err(Exit::failed(format!(
            "error: the run lost its lease on the lake and was stopped; the lease is now held by {holder}"
        )));
    }
    match outcome {
        // A signal after the last task finished: everything is published and recorded, but the
        // exit code still says the run was told to stop (and the vacuum was skipped).
        Ok(0) if cancel.is_cancelled() => Err(Exit::interrupted(
            "interrupted after every task had finished: the tables are published and the run recorded",
        )),
        other => other,
    }
}

/// The part of a run that writes, while the lease is held.
#[allow(clippy::too_many_arguments)]
async fn run_leased(
    plan: &Plan,
    mut decisions: RunDecisions,
    args: &RunArgs,
    terminal: &Terminal,
    storages: &Storages,
    engines: &Engines,
    kept: &build::Kept,
    mut options: ExecutorOptions,
    force: Force,
    cancel: CancellationToken,
    dead: &[String],
    choices: &[dagrun_core::auto::AutoChoice],
) -> Result<u8, Exit> {
    build::remove_dead_spills();
    // What is already published from the same inputs (reads listings and manifests only).
    let freshness = resume::assess(plan, &decisions, storages, &force, true).await;
    let inputs_hashed = freshness.inputs_hashed;
    refuse(&freshness)?;
    // What killed runs left beside the tables this run loads (a 100,000-file table that is up
    // to date is not listed), and in every Delta table what holders proven dead wrote.
    let loading: Vec<usize> = plan
        .tasks()
        .iter()
        .filter(|t| matches!(t.action(), Action::Load(_)) && !freshness.fresh.contains_key(&t.index()))
        .map(|t| t.index())
        .collect();
    let fence = options.fence.clone().expect("a writing run holds the lake");
    remove_leftovers(plan, storages, Some(&loading), dead, fence.as_ref())
        .await
        .map_err(|e| Exit::failed(format!("error: {e}")))?;
    abort_stale_uploads(plan, &decisions, storages).await;
    if let Some(slice) = &freshness.slice {
        decisions.decide_slice(slice.clone());
        if let Some(line) = render::slice_line(plan, slice, &freshness.fresh) {
            print_stdout(&line);
        }
    }
    decisions.fresh = freshness.fresh;
    decisions.fingerprints = freshness.fingerprints;
    options.expected = records::last_durations(plan, storages).await;
    let plan = Arc::new(plan.clone());
    let decisions = Arc::new(decisions);
    info!(pipeline = %plan.name(), run = %options.run_id, tasks = plan.tasks().len(), jobs = options.jobs, "run started");

    let id_width = plan.tasks().iter().map(|t| t.id().len() + 2).max().unwrap_or(8);
    let observer = Arc::new(ProgressObserver::new(terminal.clone(), id_width));
    let report = executor::execute(plan.clone(), decisions, engines, &options, observer, cancel.clone()).await;
    terminal.multi.clear().ok();
    print_stdout(&render::summary(&report));
    let code = report.exit_code() as u8;
    let mut record = RunRecord::new(&plan, report, join_path(plan.runs_dir(), &options.run_id));
    record.auto = choices.to_vec();
    record.inputs_hashed = inputs_hashed;
    record.versions = delta_versions(&plan, &record, storages).await;
    if code == 0 && !cancel.is_cancelled() {
        vacuum(&plan, storages, &record.versions, options.fence.as_deref()).await;
    }
    // The report's answers are part of the run: computed now, over the tables as this run left
    // them, and kept in its record (a failed query is an answer with its error, not a failure).
    if !plan.report().is_empty() {
        record.answers = if code == 0 && !cancel.is_cancelled() {
            let previous = records::latest(plan.runs_dir(), storages).await;
            let answers = report::compute_answers(&record, storages, previous.as_ref(), kept).await;
            if let Some(a) = &answers {
                let failed = a.items.iter().filter(|i| i.error.is_some()).count();
                match &a.carried_from {
                    Some(run) => info!("report answers carried from run {run}: the tables they read are unchanged"),
                    None => info!(seconds = a.seconds, "report answers computed"),
                }
                if failed > 0 {
                    warn!(
                        "{} could not be answered (see the report)",
                        dagrun_core::units::count(failed as u64, "report query")
                    );
                }
            }
            kept.release();
            answers
        } else {
            Some(dagrun_core::record::Answers {
                not_computed: Some("the run did not succeed, so its tables may not all be as planned".into()),
                items: Vec::new(),
                ..Default::default()
            })
        };
    }

    match records::write(&record, storages, plan.runs_dir(), options.fence.as_ref()).await {
        Ok(path) => print_stdout(&format!("run record: {path}\n")),
        Err(e) => error!("could not write the run record: {e}"),
    }
    if let Some(path) = &args.junit {
        write_local(path, records::junit(&record).as_bytes())?;
    }
    if let Some(summary) = std::env::var_os("GITHUB_STEP_SUMMARY") {
        use std::io::Write as _;
        let appended =
            std::fs::OpenOptions::new().create(true).append(true).open(&summary).and_then(|mut f| {
                f.write_all(&dagrun_core::redact::redact_bytes(records::markdown(&record).as_bytes()))
            });
        if let Err(e) = appended {
            error!("could not append to GITHUB_STEP_SUMMARY: {e}");
        }
    }
    if let Some(path) = &args.report {
        write_local(path, report::render(&record, record.answers.as_ref(), None).as_bytes())?;
        print_stdout(&format!("report: {}\n", path.display()));
    }
    Ok(code)
}

/// The version of each Delta table of the plan as the run left it: what its load committed, else
/// (up to date, failed, skipped) the table's current version, read before the vacuum commits.
async fn delta_versions(
    plan: &Plan,
    record: &RunRecord,
    storages: &Storages,
) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
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
async fn vacuum(
    plan: &Plan,
    storages: &Storages,
    versions: &std::collections::BTreeMap<String, u64>,
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
async fn abort_stale_uploads(plan: &Plan, decisions: &RunDecisions, storages: &Storages) {
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
        if !dagrun_core::path::is_s3(&path) {
            continue;
        }
        let Ok(storage) = storages.for_path(&path) else { continue };
        match storage.abort_stale_uploads(&path, before).await {
            Ok(aborted) if aborted.is_empty() => {}
            Ok(aborted) => info!(
                "aborted {} a killed run left under {path} (their parts were billed), such as {}",
                dagrun_core::units::count(aborted.len() as u64, "unfinished upload"),
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
async fn remove_leftovers(
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

/// Writes a file for people (JUnit, report, summary), secrets hidden.
fn write_local(path: &Path, data: &[u8]) -> Result<(), Exit> {
    let data = dagrun_core::redact::redact_bytes(data);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| Exit::failed(format!("error: creating {}: {e}", parent.display())))?;
    }
    std::fs::write(path, &data).map_err(|e| Exit::failed(format!("error: writing {}: {e}", path.display())))
}

/// The days asked for by `--partition` or `--since/--until`, if any.
fn slice_request(args: &RunArgs) -> Result<Option<SliceRequest>, Exit> {
    let request = match (&args.partition, &args.since) {
        (Some(p), _) => SliceRequest::partition(p),
        (None, Some(since)) => {
            let today = dagrun_core::slice::Day::of_epoch_ms(chrono::Utc::now().timestamp_millis());
            SliceRequest::range(Some(since), args.until.as_deref(), today)
        }
        (None, None) => return Ok(None),
    };
    request.map(Some).map_err(|e| Exit::config(format!("error: {e}")))
}

/// Stops a run whose input does not cover what its loads would replace, before anything is written.
fn refuse(freshness: &resume::Freshness) -> Result<(), Exit> {
    if freshness.refused.is_empty() {
        return Ok(());
    }
    let reasons: Vec<String> = freshness.refused.iter().map(|r| format!("error: {r}")).collect();
    Err(Exit::failed(reasons.join("\n")))
}

/// `--force` flags: empty means everything, names must be tasks of the plan.
fn force_of(flags: &[String], plan: &Plan) -> Result<Force, Exit> {
    if flags.is_empty() {
        return Ok(Force::Nothing);
    }
    if flags.iter().any(String::is_empty) {
        return Ok(Force::All);
    }
    for id in flags {
        if plan.task(id).is_none() {
            let hint = dagrun_core::diagnostic::suggestion(id, plan.tasks().iter().map(|t| t.id()))
                .map(|h| format!("; {h}"))
                .unwrap_or_default();
            return Err(Exit::config(format!("error: --force={id}: no task `{id}` in {}{hint}", plan.name())));
        }
    }
    Ok(Force::Tasks(flags.to_vec()))
}

/// `dagrun history TABLE`: a Delta table's versions, newest first.
pub(crate) async fn history(args: &HistoryArgs) -> Result<u8, Exit> {
    let fail = |message: String| Exit::failed(format!("error: {message}"));
    let path = args.table.trim_end_matches('/').to_string();
    let mut storages = Storages::default();
    if dagrun_core::path::is_s3(&path) {
        storages.s3 = build::s3(&dagrun_core::plan::S3Settings::default()).await;
        if storages.s3.is_none() {
            return Err(fail(build::missing("reading tables on S3", "aws")));
        }
    }
    let storages = build::with_delta(storages);
    let delta = storages.delta(&path).map_err(|e| fail(e.to_string()))?;
    let versions = delta.history(&path, args.limit).await.map_err(|e| fail(e.to_string()))?;
    if versions.is_empty() {
        return Err(fail(format!("{path} is not a Delta table (it has no _delta_log with commits)")));
    }
    if args.json {
        let rows: Vec<serde_json::Value> = versions
            .iter()
            .map(|v| {
                serde_json::json!({
                    "version": v.version,
                    "timestamp_ms": v.timestamp_ms,
                    "operation": v.operation,
                    "run_id": v.run_id,
                    "rows": v.rows,
                })
            })
            .collect();
        print_stdout(&format!("{}\n", serde_json::to_string_pretty(&rows).unwrap_or_default()));
    } else {
        print_stdout(&render::history(&versions));
    }
    Ok(Code::Ok.into())
}

/// `dagrun report RUN`: renders a run record as HTML.
/// A run record named as `dagrun report` and `dagrun lake` take it (a run.json, a run's folder or
/// a runs folder, local or S3), with where it was found and storages that reach its tables.
async fn find_record(run: &str) -> Result<(RunRecord, String, Storages), Exit> {
    let fail = |message: String| Exit::failed(format!("error: {message}"));
    let run = run.trim_end_matches('/').to_string();
    let candidates =
        if run.ends_with(".json") { vec![run.clone()] } else { vec![join_path(&run, RUN_RECORD), run.clone()] };
    let mut storages = Storages::default();
    if dagrun_core::path::is_s3(&run) {
        storages.s3 = build::s3(&dagrun_core::plan::S3Settings::default()).await;
        if storages.s3.is_none() {
            return Err(fail(build::missing("reading run records on S3", "aws")));
        }
    }
    let storage = storages.for_path(&run).map_err(|e| fail(e.to_string()))?.clone();
    let mut record_path = None;
    for candidate in &candidates {
        if candidate.ends_with(".json") {
            if storage.read(candidate).await.is_ok() {
                record_path = Some(candidate.clone());
                break;
            }
        } else if let Ok(latest) = storage.read(&join_path(candidate, LATEST)).await {
            // A runs folder: its latest run.
            let id = String::from_utf8_lossy(&latest).trim().to_string();
            record_path = Some(join_path(candidate, &format!("{id}/{RUN_RECORD}")));
            break;
        }
    }
    let record_path = record_path
        .ok_or_else(|| fail(format!("no run record at {run} (expected a run.json, a run folder or a runs folder)")))?;
    let bytes = storage.read(&record_path).await.map_err(|e| fail(e.to_string()))?;
    let record: RunRecord =
        serde_json::from_slice(&bytes).map_err(|e| fail(format!("{record_path} is not a run record: {e}")))?;
    if record.tables.values().any(|p| dagrun_core::path::is_s3(p)) {
        storages.s3 = build::s3(&record.s3_settings()).await;
    }
    Ok((record, record_path, storages))
}

/// `dagrun lake RUN`: every table as the run left it (path and Delta version), and how to read
/// them together.
pub(crate) async fn lake(args: &LakeArgs) -> Result<u8, Exit> {
    let (record, record_path, _) = find_record(&args.run).await?;
    print_stdout(&render::lake(&record, &record_path, args.json));
    Ok(Code::Ok.into())
}

pub(crate) async fn report(args: &ReportArgs) -> Result<u8, Exit> {
    let (record, record_path, storages) = find_record(&args.run).await?;
    let storages = build::with_delta(storages);
    let mut record = record;
    for (table, version) in &args.as_of {
        if !record.tables.contains_key(table) {
            let known: Vec<&str> = record.tables.keys().map(String::as_str).collect();
            return Err(Exit::config(format!(
                "error: --as-of names `{table}`, which this run did not publish (its tables: {})",
                known.join(", ")
            )));
        }
        // A version the table never had is said as such (not as a log that cannot be read).
        let path = &record.tables[table];
        let latest = match storages.delta(path) {
            Ok(delta) => delta.latest_version(path).await.map_err(|e| Exit::failed(format!("error: {e}")))?,
            Err(e) => return Err(Exit::failed(format!("error: {e}"))),
        };
        match latest {
            None => {
                return Err(Exit::config(format!(
                    "error: --as-of {table}={version}: {path} is not a Delta table (it has no _delta_log with commits)"
                )));
            }
            Some(latest) if *version > latest => {
                return Err(Exit::config(format!(
                    "error: --as-of {table}={version}: table `{table}` has versions 0 to {latest} ({path}); there is no \
                     version {version}"
                )));
            }
            Some(_) => {}
        }
        record.versions.insert(table.clone(), *version);
    }
    // The answers the run kept; computed now only for `--as-of` or a record that has none.
    let now;
    let (answers, note) = match &record.answers {
        Some(kept) if args.as_of.is_empty() => (Some(kept), None),
        _ => {
            now = report::compute_answers(&record, &storages, None, &build::Kept::default()).await;
            let note = if args.as_of.is_empty() {
                "Computed when this report was drawn (the run record keeps no answers)"
            } else {
                "Computed when this report was drawn, at the versions --as-of names"
            };
            (now.as_ref(), Some(note))
        }
    };
    let output = args.output.clone().unwrap_or_else(|| {
        if dagrun_core::path::is_s3(&record_path) {
            PathBuf::from(format!("report-{}.html", record.report.run_id))
        } else {
            Path::new(&record_path).with_file_name("report.html")
        }
    });
    write_local(&output, report::render(&record, answers, note).as_bytes())?;
    print_stdout(&format!("{}\n", output.display()));
    Ok(Code::Ok.into())
}

/// The signals that cancel a run, registered with the runtime at once (not when a task first
/// polls them), so that no signal between here and the first poll kills the process.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self { interrupt: signal(SignalKind::interrupt())?, terminate: signal(SignalKind::terminate())? })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "Ctrl-C",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

/// First Ctrl-C or SIGTERM: cancel the run (tasks clean up). A second one: exit at once.
async fn watch_signals(mut signals: Signals, cancel: CancellationToken) {
    let mut count = 0;
    loop {
        let name = signals.next().await;
        count += 1;
        if count == 1 {
            warn!("{name} received: cancelling the run (again to exit at once)");
            cancel.cancel();
        } else {
            eprintln!("{name} received again: exiting now");
            std::process::exit(i32::from(u8::from(Code::Interrupted)));
        }
    }
}
