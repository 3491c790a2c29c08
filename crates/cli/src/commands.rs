//! What each subcommand does. Every command starts from the same [`compile::compile_file`], so
//! `validate`, `graph`, `--dry-run` and a real run agree on what the pipeline is.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use dagrun_core::Diagnostics;

use dagrun_core::compile::{self, LoadError, PlanError, PlanOptions};
use dagrun_core::decisions::RunDecisions;
use dagrun_core::executor::{ExecutorOptions, Observer, RunReport};
use dagrun_core::graph::{self, GraphFormat};
use dagrun_core::lease::{self, LeaseError, LeaseOptions};
use dagrun_core::plan::{Plan, join_path};
use dagrun_core::record::{self, Answers, LATEST, RUN_RECORD, RunRecord};
use dagrun_core::resume::{self, Force};
use dagrun_core::run::{RunError, RunHooks, RunRequest};
use dagrun_core::slice::{RunSlice, SliceRequest};
use dagrun_core::storage::Storages;
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
            options.expected = record::last_durations(&plan, &storages).await;
        }
        let plan = Arc::new(plan);
        let decided = Arc::new(decisions.clone());
        let walk = dagrun_core::dry_run::walk(plan.clone(), decided, build::KNOWN_ENGINES, &options);
        print_stdout(&describe(&choices));
        print_stdout(&render::dry_run(&plan, &decisions, &engines, jobs, &freshness, &walk));
        if let Some(price) = engines.get("emr").and_then(|e| e.price()) {
            let (history, none) = match &unreachable {
                None => (record::latest(plan.runs_dir(), &storages).await, "the latest run record has no EMR cluster"),
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
    build::remove_dead_spills();
    decisions.auto = choices;
    let request = RunRequest {
        options,
        force,
        lease: LeaseOptions {
            ttl: args.lease_ttl.unwrap_or(lease::DEFAULT_TTL),
            wait: args.wait_for_lock,
            ..LeaseOptions::default()
        },
    };
    let plan = Arc::new(plan);
    let hooks = CliHooks { terminal: terminal.clone(), storages: storages.clone(), kept };
    let outcome = match dagrun_core::run::run(
        plan.clone(),
        decisions,
        request,
        &engines,
        &storages,
        &hooks,
        cancel.clone(),
    )
    .await
    {
        Ok(outcome) => outcome,
        Err(e) => return Err(exit_of(e)),
    };
    match &outcome.written {
        Ok(path) => print_stdout(&format!("run record: {path}\n")),
        Err(e) => error!("could not write the run record: {e}"),
    }
    let record = &outcome.record;
    if let Some(path) = &args.junit {
        write_local(path, records::junit(record).as_bytes())?;
    }
    if let Some(summary) = std::env::var_os("GITHUB_STEP_SUMMARY") {
        use std::io::Write as _;
        let appended =
            std::fs::OpenOptions::new().create(true).append(true).open(&summary).and_then(|mut f| {
                f.write_all(&dagrun_core::redact::redact_bytes(records::markdown(record).as_bytes()))
            });
        if let Err(e) = appended {
            error!("could not append to GITHUB_STEP_SUMMARY: {e}");
        }
    }
    if let Some(path) = &args.report {
        write_local(path, report::render(record, record.answers.as_ref(), None).as_bytes())?;
        print_stdout(&format!("report: {}\n", path.display()));
    }
    Exit::of_outcome(&outcome)
}

/// What the command line does at the points where a run meets the terminal, and the report's
/// answers (computed by the local engine's Polars, in builds that carry it).
struct CliHooks {
    terminal: Terminal,
    storages: Storages,
    kept: build::Kept,
}

#[async_trait]
impl RunHooks for CliHooks {
    fn days_decided(&self, plan: &Plan, slice: &RunSlice, fresh: &std::collections::BTreeMap<usize, String>) {
        if let Some(line) = render::slice_line(plan, slice, fresh) {
            print_stdout(&line);
        }
    }

    fn observer(&self, plan: &Plan) -> Arc<dyn Observer> {
        let id_width = plan.tasks().iter().map(|t| t.id().len() + 2).max().unwrap_or(8);
        Arc::new(ProgressObserver::new(self.terminal.clone(), id_width))
    }

    fn executed(&self, report: &RunReport) {
        self.terminal.multi.clear().ok();
        print_stdout(&render::summary(report));
    }

    async fn answers(&self, record: &RunRecord, previous: Option<&RunRecord>) -> Option<Answers> {
        let answers = report::compute_answers(record, &self.storages, previous, &self.kept).await;
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
        self.kept.release();
        answers
    }
}

/// The exit of a run that did not start: its message, with what to do.
fn exit_of(e: RunError) -> Exit {
    match e {
        RunError::Interrupted | RunError::InterruptedWaiting => Exit::interrupted(e.to_string()),
        RunError::Held(held) => {
            let advice = match &held {
                LeaseError::Held { waited: Some(w), .. } => {
                    format!("waited {} (--wait-for-lock); nothing was written", dagrun_core::units::format_duration(*w))
                }
                _ => "nothing was written; wait for it with --wait-for-lock DURATION, or, if that run is dead, run again once its lease expires".into(),
            };
            Exit::failed(format!("error: {held}\n  = {advice}"))
        }
        RunError::Refused(reasons) => {
            Exit::failed(reasons.iter().map(|r| format!("error: {r}")).collect::<Vec<_>>().join("\n"))
        }
        RunError::Lease(_) | RunError::Leftovers(_) => Exit::failed(format!("error: {e}")),
    }
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
