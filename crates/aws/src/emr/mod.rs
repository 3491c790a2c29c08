//! The `emr` engine: runs a run's `engine: emr` tasks as Spark steps on one EMR cluster, and
//! always gives the cluster back.
//!
//! Lifecycle, in one place:
//! - The cluster is created (RunJobFlow, tagged with the pipeline and run id, with an idle
//!   auto-termination as a safety net) when the first EMR task becomes ready, or found again by
//!   its run tag after dagrun restarts with the same `--run-id`. Waiting polls with backoff and
//!   no attempt limit: the task's timeout bounds it.
//! - Each task attempt uploads its spec (and, once per run, the step program) under the run's
//!   staging prefix, publishes the local tables it reads there, and adds one step named
//!   `dagrun:<pipeline>:<run>:<task>:<attempt>` (or reattaches to a pending/running step of that
//!   name), then follows it. Only COMPLETED succeeds; a failure carries the step's failure details
//!   and the tail of its stderr from the log URI. A cancelled or timed-out attempt cancels its
//!   step; a retry first cancels a previous attempt still running.
//! - The cluster is terminated as soon as no remaining task needs it (`release`) and on every
//!   exit path (`shutdown`): success, failure, Ctrl-C, SIGTERM, timeouts, panics in tasks.
//! - If dagrun itself is killed, the cluster still ends: each step runs under `timeout` with the
//!   task's timeout (cluster side), then the idle auto-termination follows; `dagrun emr gc` ends it
//!   sooner once the run's lease on the lake has expired.
//! - A task's timeout counts everything it waits for: the cluster's start-up, its step's wait in
//!   the queue and its run. Each is recorded apart (`cluster_wait_seconds`, `queue_seconds`,
//!   `step_seconds`); the cluster-side `timeout` counts the run only.
//! - The run's staging folder is deleted at the end of a successful run (see `staging`).
//! - Cost: the cluster's price per hour comes from [`dagrun_core::cost`]; a `CostClock` times
//!   its start-up, steps and idle time. With a budget, every poll projects the spend (so far, plus
//!   the idle timeout EMR would bill after the last step); past the budget the running step is
//!   cancelled and the cluster terminated. The run record keeps a [`ClusterCost`].

pub mod gc;
mod requests;
mod staging;
pub mod step;

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use aws_sdk_emr::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_emr::types::{ClusterState, StepState};
use dagrun_core::cost::{ClusterCost, ClusterPrice, PRICES_AS_OF, cluster_price};
use dagrun_core::emr::EmrSettings;
use dagrun_core::engine::{Engine, EngineError, Exchange, RunEnd, TableExport, TaskContext, TaskError, TaskOutput};
use dagrun_core::plan::{Action, Plan, PlannedTask, join_path};
use dagrun_core::retry::RetryPolicy;
use dagrun_core::spec::Jitter;
use dagrun_core::storage::Storage;
use tokio::sync::OnceCell;
use tracing::{info, warn};

use self::requests::{TAG_RUN, add_step, run_job_flow, step_name};
use crate::pricing::refresh;

/// How the EMR engine is wired into a run.
pub struct EmrEngine {
    client: aws_sdk_emr::Client,
    /// S3, for the staging prefix and the log URI.
    s3: Arc<dyn Storage>,
    settings: EmrSettings,
    pipeline: String,
    runs_dir: String,
    exchange: Arc<Exchange>,
    exporter: Arc<dyn TableExport>,
    cluster: tokio::sync::Mutex<Option<Cluster>>,
    runner: OnceCell<String>,
    /// Cluster states and steps as they happened, for the summary and the run record.
    history: Mutex<Vec<String>>,
    poll_max: Duration,
    /// `--keep-staging`: the run's staging folder is kept whatever the outcome.
    keep_staging: bool,
    /// What the cluster costs per hour, in the EMR region.
    price: ClusterPrice,
    /// The most the run may spend on EMR (`budget.max_usd`, `--max-cost`).
    budget: Option<f64>,
    clock: Mutex<CostClock>,
    /// What the run's cluster cost, once it was let go.
    cost: Mutex<Option<ClusterCost>>,
}

/// When the cluster was requested, ready and let go, and when steps ran: its cost's measure.
#[derive(Debug, Default)]
struct CostClock {
    cluster: String,
    requested: Option<Instant>,
    ready: Option<Instant>,
    ended: Option<Instant>,
    /// Steps running now, and since when at least one has been.
    running: usize,
    busy_since: Option<Instant>,
    busy: Duration,
    /// Each task's steps' running seconds.
    tasks: std::collections::BTreeMap<String, f64>,
    /// Why the budget stopped the cluster.
    stopped: Option<String>,
}

impl CostClock {
    fn step_started(&mut self) {
        if self.running == 0 {
            self.busy_since = Some(Instant::now());
        }
        self.running += 1;
    }

    fn step_ended(&mut self, task: &str, ran: Duration) {
        *self.tasks.entry(task.to_string()).or_default() += ran.as_secs_f64();
        self.running = self.running.saturating_sub(1);
        if self.running == 0
            && let Some(since) = self.busy_since.take()
        {
            self.busy += since.elapsed();
        }
    }

    fn elapsed(&self) -> Duration {
        match (self.requested, self.ended) {
            (Some(r), Some(e)) => e.duration_since(r),
            (Some(r), None) => r.elapsed(),
            _ => Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone)]
struct Cluster {
    id: String,
    ready: bool,
    terminated: bool,
    last_state: String,
}

fn now() -> String {
    chrono::Utc::now().format("%H:%M:%S").to_string()
}

/// An SDK error as a task error: throttling and transport failures are worth retrying.
fn sdk_error<E>(action: &str, err: SdkError<E, aws_sdk_emr::config::http::HttpResponse>) -> TaskError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = err.code().unwrap_or("").to_string();
    let retryable =
        matches!(err, SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_))
            || code.contains("Throttl")
            || code == "InternalServerError"
            || code == "InternalFailure";
    let message = match err.message() {
        Some(m) => format!("{action}: {code} {m}").replace("  ", " "),
        None => format!("{action}: {}", DisplayErrorContext(&err)),
    };
    TaskError { message, retryable, partial: None }
}

impl EmrEngine {
    /// The EMR engine of a run: its client (in the settings' region), S3 for staging, and how to
    /// publish local tables for Spark to read.
    pub async fn connect(
        settings: EmrSettings,
        s3: Arc<dyn Storage>,
        exporter: Arc<dyn TableExport>,
        exchange: Arc<Exchange>,
        plan: &Plan,
        budget: Option<f64>,
        refresh_prices: bool,
    ) -> Self {
        let poll_max = settings.poll_interval;
        let client = client(settings.region.as_deref()).await;
        let region = client.config().region().map_or_else(|| "us-east-1".to_string(), |r| r.to_string());
        let mut refreshed = std::collections::BTreeMap::new();
        if refresh_prices {
            match refresh(&dagrun_core::cost::instance_types(&settings), &region).await {
                Ok(found) => refreshed = found,
                Err(e) => warn!("could not refresh prices from the AWS Price List API, using dagrun's table: {e}"),
            }
        }
        let price = cluster_price(&settings, &region, &refreshed);
        Self {
            client,
            price,
            budget,
            clock: Mutex::new(CostClock::default()),
            cost: Mutex::new(None),
            s3,
            pipeline: plan.name().to_string(),
            runs_dir: plan.runs_dir().to_string(),
            settings,
            exchange,
            exporter,
            cluster: tokio::sync::Mutex::new(None),
            runner: OnceCell::new(),
            history: Mutex::new(Vec::new()),
            poll_max,
            keep_staging: false,
        }
    }

    /// Keeps the run's staging folder whatever the outcome (`--keep-staging`).
    pub fn keep_staging(mut self, keep: bool) -> Self {
        self.keep_staging = keep;
        self
    }

    fn note(&self, line: String) {
        info!("{line}");
        self.history.lock().expect("history").push(line);
    }

    fn run_root(&self, run_id: &str) -> String {
        join_path(&self.settings.staging, run_id)
    }

    /// How status polls back off: 1s doubling up to the configured longest pause, with no jitter
    /// (one poller per cluster or step) and no attempt limit (each task's timeout bounds a wait).
    fn polls(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: u32::MAX,
            initial_delay: Duration::from_secs(1).min(self.poll_max),
            multiplier: 2.0,
            max_delay: self.poll_max,
            jitter: Jitter::None,
        }
    }

    /// The run's cluster, created or found again, and ready for steps.
    async fn ready_cluster(&self, cx: &TaskContext) -> Result<String, TaskError> {
        let mut guard = self.cluster.lock().await;
        let mut cluster = match guard.clone() {
            Some(_) if self.clock.lock().expect("cost clock").stopped.is_some() => {
                let why = self.clock.lock().expect("cost clock").stopped.clone().unwrap_or_default();
                return Err(TaskError::permanent(format!("not run on EMR: {why}")));
            }
            Some(c) if c.terminated => {
                return Err(TaskError::permanent(format!("the run's cluster {} was already terminated", c.id)));
            }
            Some(c) => c,
            None => {
                let id = match self.find_cluster(&cx.run_id).await? {
                    Some(id) => {
                        self.note(format!("cluster {id}: found again for run {} at {}", cx.run_id, now()));
                        id
                    }
                    None => {
                        self.affordable_start()?;
                        let request =
                            run_job_flow(&self.settings, &self.pipeline, &cx.run_id, &cx.instance, &self.runs_dir);
                        let out = request
                            .send_with(&self.client)
                            .send()
                            .await
                            .map_err(|e| sdk_error("starting the EMR cluster", e))?;
                        let id = out.job_flow_id().unwrap_or_default().to_string();
                        self.note(format!("cluster {id}: requested at {} ({})", now(), request.release_label));
                        let mut clock = self.clock.lock().expect("cost clock");
                        clock.cluster = id.clone();
                        clock.requested = Some(Instant::now());
                        drop(clock);
                        id
                    }
                };
                let c = Cluster { id, ready: false, terminated: false, last_state: String::new() };
                *guard = Some(c.clone());
                c
            }
        };
        let polls = self.polls();
        let mut poll = 1;
        while !cluster.ready {
            let out = self
                .client
                .describe_cluster()
                .cluster_id(&cluster.id)
                .send()
                .await
                .map_err(|e| sdk_error("checking the EMR cluster", e))?;
            let status = out.cluster().and_then(|c| c.status());
            let state = status.and_then(|s| s.state()).cloned().unwrap_or(ClusterState::Starting);
            if state.as_str() != cluster.last_state {
                self.note(format!("cluster {}: {} at {}", cluster.id, state.as_str(), now()));
                cluster.last_state = state.as_str().to_string();
            }
            match state {
                ClusterState::Waiting | ClusterState::Running => {
                    cluster.ready = true;
                    let mut clock = self.clock.lock().expect("cost clock");
                    if clock.ready.is_none() {
                        clock.ready = Some(Instant::now());
                        // A cluster found again: its cost is counted from now.
                        clock.requested.get_or_insert_with(Instant::now);
                        if clock.cluster.is_empty() {
                            clock.cluster = cluster.id.clone();
                        }
                    }
                }
                ClusterState::Terminating | ClusterState::Terminated | ClusterState::TerminatedWithErrors => {
                    let reason = status
                        .and_then(|s| s.state_change_reason())
                        .map(|r| {
                            format!("{} {}", r.code().map(|c| c.as_str()).unwrap_or(""), r.message().unwrap_or(""))
                        })
                        .unwrap_or_default();
                    cluster.terminated = true;
                    *guard = Some(cluster.clone());
                    return Err(TaskError::permanent(format!(
                        "the EMR cluster {} ended before it was ready: {}",
                        cluster.id,
                        reason.trim()
                    )));
                }
                _ => {
                    if let Some(over) = self.over_budget() {
                        *guard = Some(cluster.clone());
                        drop(guard);
                        return Err(self.stop_for_budget(over, None).await);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(polls.backoff(poll + 1)) => {}
                        _ = cx.cancel.cancelled() => {
                            *guard = Some(cluster.clone());
                            return Err(TaskError::permanent("cancelled while the cluster was starting"));
                        }
                    }
                    poll += 1;
                }
            }
        }
        *guard = Some(cluster.clone());
        Ok(cluster.id)
    }

    /// An active cluster tagged with this run (a restarted dagrun reattaches to it).
    async fn find_cluster(&self, run_id: &str) -> Result<Option<String>, TaskError> {
        for summary in gc::active_clusters(&self.client).await? {
            if summary.tags.get(TAG_RUN).map(String::as_str) == Some(run_id) {
                return Ok(Some(summary.id));
            }
        }
        Ok(None)
    }

    /// The step of this name that is still pending or running, if any.
    async fn active_step(&self, cluster: &str, name: &str) -> Result<Option<String>, TaskError> {
        let mut marker: Option<String> = None;
        loop {
            let out = self
                .client
                .list_steps()
                .cluster_id(cluster)
                .set_step_states(Some(vec![StepState::Pending, StepState::Running]))
                .set_marker(marker.clone())
                .send()
                .await
                .map_err(|e| sdk_error("listing the cluster's steps", e))?;
            if let Some(s) = out.steps().iter().find(|s| s.name() == Some(name)) {
                return Ok(s.id().map(String::from));
            }
            marker = out.marker().map(String::from);
            if marker.is_none() {
                return Ok(None);
            }
        }
    }

    async fn cancel_step(&self, cluster: &str, step: &str) {
        match self.client.cancel_steps().cluster_id(cluster).step_ids(step).send().await {
            Ok(_) => self.note(format!("step {step}: cancel requested at {}", now())),
            Err(e) => warn!(step, error = %DisplayErrorContext(&e), "could not cancel the step"),
        }
    }

    /// The step program's place on S3, uploaded once per run into the run's staging folder,
    /// which is marked as dagrun's first. Old failed runs' folders are swept then too.
    async fn runner_uri(&self, cx: &TaskContext) -> Result<String, TaskError> {
        let root = self.run_root(&cx.run_id);
        let uri = join_path(&root, "dagrun_step.py");
        self.runner
            .get_or_try_init(|| async {
                let marker = staging::Marker {
                    run_id: cx.run_id.clone(),
                    pipeline: self.pipeline.clone(),
                    instance: cx.instance.clone(),
                    created_ms: SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis())
                        as u64,
                    failed_ms: None,
                };
                staging::mark(&self.s3, &root, &marker).await.map_err(TaskError::permanent)?;
                self.s3.write(&uri, step::RUNNER.as_bytes().to_vec()).await.map_err(TaskError::from)?;
                let swept =
                    staging::sweep(&self.s3, &self.settings.staging, &cx.run_id, self.settings.keep_failed_staging)
                        .await;
                if !swept.is_empty() {
                    self.note(format!(
                        "staging: deleted {} of failed runs past keep_failed_staging ({})",
                        dagrun_core::units::count(swept.len() as u64, "folder"),
                        swept.join(", ")
                    ));
                }
                Ok::<_, TaskError>(uri.clone())
            })
            .await
            .cloned()
    }

    /// The driver's error from a failed step's stderr, if the cluster logs to S3 and it arrived.
    /// Steps run Spark in client mode, so the step's stderr is the driver's.
    async fn driver_error(&self, cluster: &str, step: &str) -> Result<String, String> {
        let uri = join_path(&self.settings.log_uri, &format!("{cluster}/steps/{step}/stderr.gz"));
        let bytes = self.s3.read(&uri).await.map_err(|_| uri.clone())?;
        let mut text = String::new();
        flate2::read::GzDecoder::new(&bytes[..]).read_to_string(&mut text).map_err(|_| uri.clone())?;
        Ok(step::driver_error(&text))
    }

    async fn terminate(&self, why: &str) -> Result<(), EngineError> {
        let mut guard = self.cluster.lock().await;
        let Some(cluster) = guard.as_mut() else { return Ok(()) };
        if cluster.terminated {
            return Ok(());
        }
        self.client
            .terminate_job_flows()
            .job_flow_ids(&cluster.id)
            .send()
            .await
            .map_err(|e| EngineError(format!("terminating EMR cluster {}: {}", cluster.id, DisplayErrorContext(&e))))?;
        cluster.terminated = true;
        let id = cluster.id.clone();
        drop(guard);
        self.clock.lock().expect("cost clock").ended.get_or_insert_with(Instant::now);
        self.note(format!("cluster {id}: termination requested at {} ({why})", now()));
        Ok(())
    }

    /// Refuses to request a cluster whose idle timeout alone would pass the budget.
    fn affordable_start(&self) -> Result<(), TaskError> {
        let Some(max) = self.budget else { return Ok(()) };
        if !self.price.complete() {
            return Err(TaskError::permanent(format!(
                "a budget of ${max:.2} is set, but {} has no price in {}: add it under engines.emr.prices",
                self.price.unpriced.join(", "),
                self.price.region
            )));
        }
        let committed = self.price.usd_per_hour() * self.settings.idle_timeout.as_secs_f64() / 3600.0;
        if committed > max {
            return Err(TaskError::permanent(format!(
                "EMR budget: the cluster's idle timeout of {} alone costs ${committed:.2} at ${:.3}/h, more than the budget of ${max:.2}; no cluster was started",
                dagrun_core::units::format_duration(self.settings.idle_timeout),
                self.price.usd_per_hour()
            )));
        }
        Ok(())
    }

    /// Why the spend so far, plus the idle time EMR would bill after the last step, passes the
    /// budget, if it does.
    fn over_budget(&self) -> Option<String> {
        let max = self.budget?;
        let per_hour = self.price.usd_per_hour();
        let elapsed = self.clock.lock().expect("cost clock").elapsed();
        let spent = per_hour * elapsed.as_secs_f64() / 3600.0;
        let committed = per_hour * self.settings.idle_timeout.as_secs_f64() / 3600.0;
        (spent + committed > max).then(|| {
            format!(
                "EMR budget: ${spent:.2} spent in {} at ${per_hour:.3}/h, plus ${committed:.2} for the {} idle timeout, passes the budget of ${max:.2}",
                dagrun_core::units::format_duration(elapsed),
                dagrun_core::units::format_duration(self.settings.idle_timeout)
            )
        })
    }

    /// Stops EMR work for the budget: cancels the step, terminates the cluster; the error fails
    /// the task (and, through the recorded reason, every EMR task after it).
    async fn stop_for_budget(&self, why: String, step: Option<(&str, &str)>) -> TaskError {
        warn!("{why}: cancelling the running step and terminating the cluster");
        self.clock.lock().expect("cost clock").stopped.get_or_insert_with(|| why.clone());
        if let Some((cluster, step)) = step {
            self.cancel_step(cluster, step).await;
        }
        if let Err(e) = self.terminate("over budget").await {
            warn!("{e}");
        }
        TaskError::permanent(format!("{why}; the cluster was terminated"))
    }

    /// The cluster's cost once it is let go (none if no cluster was started).
    async fn measure(&self) -> Option<ClusterCost> {
        let (cluster, wall, startup, busy, tasks, stopped) = {
            let clock = self.clock.lock().expect("cost clock");
            if clock.cluster.is_empty() || clock.requested.is_none() {
                return None;
            }
            let startup = match (clock.requested, clock.ready) {
                (Some(r), Some(ready)) => ready.duration_since(r),
                _ => clock.elapsed(),
            };
            let busy = clock.busy + clock.busy_since.map_or(Duration::ZERO, |s| s.elapsed());
            (clock.cluster.clone(), clock.elapsed(), startup, busy, clock.tasks.clone(), clock.stopped.clone())
        };
        let normalized_instance_hours = match self.client.describe_cluster().cluster_id(&cluster).send().await {
            Ok(out) => out.cluster().and_then(|c| c.normalized_instance_hours()).map(i64::from),
            Err(_) => None,
        };
        let per_hour = self.price.usd_per_hour();
        let usd = per_hour * wall.as_secs_f64() / 3600.0;
        let total_step: f64 = tasks.values().sum();
        let shares = tasks
            .iter()
            .map(|(t, secs)| (t.clone(), if total_step > 0.0 { usd * secs / total_step } else { 0.0 }))
            .collect();
        let prices = if self.settings.prices.is_empty() {
            format!("prices of {PRICES_AS_OF}")
        } else {
            format!("prices of {PRICES_AS_OF} and engines.emr.prices")
        };
        Some(ClusterCost {
            cluster,
            normalized_instance_hours,
            wall_seconds: wall.as_secs_f64(),
            startup_seconds: startup.as_secs_f64(),
            steps_seconds: busy.as_secs_f64(),
            idle_seconds: (wall.saturating_sub(startup).saturating_sub(busy)).as_secs_f64(),
            usd_per_hour: per_hour,
            usd,
            tasks: shares,
            prices,
            stopped,
        })
    }

    async fn run_step(&self, task: &PlannedTask, cx: &TaskContext) -> Result<TaskOutput, TaskError> {
        if matches!(task.action(), Action::QualityCheck(_)) {
            return Err(TaskError::permanent(format!("task `{}`: quality checks run on the local engine", task.id())));
        }
        let waited = Instant::now();
        let cluster = self.ready_cluster(cx).await?;
        let cluster_wait = waited.elapsed();
        let run_root = self.run_root(&cx.run_id);
        let tables_root = join_path(&run_root, "tables");

        // The tables this task reads must be where Spark can read them.
        for table in task.tables_read() {
            if self.exchange.location(table).is_none() {
                let location = step::table_location(&tables_root, table);
                self.exporter.export(table, &location, cx).await?;
                self.exchange.set(table, &location);
            }
        }
        let spec = step::spec(&cx.plan, task, &cx.run_id, cx.attempt, cx.fingerprint.clone(), &run_root, &|t| {
            self.exchange.location(t).unwrap_or_else(|| step::table_location(&tables_root, t))
        })
        .map_err(TaskError::permanent)?;
        let spec_uri = join_path(&run_root, &format!("tasks/{}-{}.json", task.id(), cx.attempt));
        let json = serde_json::to_vec_pretty(&spec).expect("a step spec serializes");
        self.s3.write(&spec_uri, json).await.map_err(TaskError::from)?;
        let runner = self.runner_uri(cx).await?;

        // A previous attempt still running is cancelled before this one starts.
        if cx.attempt > 1
            && let Some(old) =
                self.active_step(&cluster, &step_name(&self.pipeline, &cx.run_id, task.id(), cx.attempt - 1)).await?
        {
            self.cancel_step(&cluster, &old).await;
        }
        let name = step_name(&self.pipeline, &cx.run_id, task.id(), cx.attempt);
        let step_id = match self.active_step(&cluster, &name).await? {
            Some(id) => {
                self.note(format!("step {id} ({}): reattached at {}", task.id(), now()));
                id
            }
            None => {
                let request = add_step(&cluster, name.clone(), &runner, &spec_uri, task.timeout());
                let out =
                    request.send_with(&self.client).send().await.map_err(|e| sdk_error("adding the EMR step", e))?;
                let id = out.step_ids().first().cloned().unwrap_or_default();
                self.note(format!("step {id} ({}): added at {}", task.id(), now()));
                id
            }
        };
        cx.progress.set_message(&format!("EMR step {step_id} on {cluster}"));

        // Follow the step to a terminal state.
        let added = Instant::now();
        let mut running: Option<Instant> = None;
        let polls = self.polls();
        let mut poll = 1;
        let mut last = String::new();
        loop {
            let out = self
                .client
                .describe_step()
                .cluster_id(&cluster)
                .step_id(&step_id)
                .send()
                .await
                .map_err(|e| sdk_error("checking the EMR step", e))?;
            let status = out.step().and_then(|s| s.status());
            let state = status.and_then(|s| s.state()).cloned().unwrap_or(StepState::Pending);
            if state != StepState::Pending && running.is_none() {
                running = Some(Instant::now());
                self.clock.lock().expect("cost clock").step_started();
            }
            let terminal = matches!(
                state,
                StepState::Completed | StepState::Failed | StepState::Cancelled | StepState::Interrupted
            );
            if terminal && let Some(ran) = running {
                self.clock.lock().expect("cost clock").step_ended(task.id(), ran.elapsed());
            }
            if state.as_str() != last {
                self.note(format!("step {step_id} ({}): {} at {}", task.id(), state.as_str(), now()));
                last = state.as_str().to_string();
                cx.progress.set_message(&format!("EMR step {step_id}: {last}"));
            }
            match state {
                StepState::Completed => break,
                StepState::Failed | StepState::Cancelled | StepState::Interrupted => {
                    let details = status.and_then(|s| s.failure_details());
                    let mut message = format!("EMR step {step_id} {} on {cluster}", state.as_str());
                    if let Some(d) = details {
                        let reason = [d.reason(), d.message()].into_iter().flatten().collect::<Vec<_>>().join(": ");
                        if !reason.is_empty() {
                            message.push_str(&format!(": {reason}"));
                        }
                        if let Some(log) = d.log_file() {
                            message.push_str(&format!(" (log: {log})"));
                        }
                    } else if let Some(r) = status.and_then(|s| s.state_change_reason()).and_then(|r| r.message()) {
                        message.push_str(&format!(": {r}"));
                    }
                    match self.driver_error(&cluster, &step_id).await {
                        Ok(error) if !error.is_empty() => message.push_str(&format!("\ndriver error:\n{error}")),
                        Ok(_) => {}
                        Err(uri) if state == StepState::Failed => message.push_str(&format!(
                            "\nthe step's stderr has not reached {uri} yet (EMR uploads logs within minutes)"
                        )),
                        Err(_) => {}
                    }
                    // Interrupted or cancelled by someone else (a lost node): another attempt may work.
                    let retryable = state != StepState::Failed;
                    return Err(TaskError { message, retryable, partial: None });
                }
                _ => {
                    if let Some(over) = self.over_budget() {
                        if let Some(ran) = running {
                            self.clock.lock().expect("cost clock").step_ended(task.id(), ran.elapsed());
                        }
                        return Err(self.stop_for_budget(over, Some((&cluster, &step_id))).await);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(polls.backoff(poll + 1)) => {}
                        _ = cx.cancel.cancelled() => {
                            if let Some(ran) = running {
                                self.clock.lock().expect("cost clock").step_ended(task.id(), ran.elapsed());
                            }
                            self.cancel_step(&cluster, &step_id).await;
                            return Err(TaskError::permanent(format!("cancelled; EMR step {step_id} cancelled")));
                        }
                    }
                    poll += 1;
                }
            }
        }
        if let Some(out) = &spec.output {
            self.exchange.set(task.id(), out);
        }
        let mut output = TaskOutput::default();
        if let Ok(bytes) = self.s3.read(spec.result.as_deref().unwrap_or_default()).await
            && let Ok(result) = serde_json::from_slice::<serde_json::Value>(&bytes)
        {
            output.rows_in = result["rows_in"].as_u64();
            output.rows_out = result["rows_out"].as_u64();
            output.quarantined = result["quarantined"].as_u64().unwrap_or(0);
            output.files = result["files"].as_u64();
            output.drift = result.get("drift").and_then(|d| serde_json::from_value(d.clone()).ok());
        }
        if let Some(drift) = output.drift.as_ref().filter(|d| !d.new_fields.is_empty()) {
            // `on_new_fields: fail` failed the step before it published; `warn` says so here.
            tracing::warn!("source drift: {}", drift.describe());
        }
        output.outputs = match &task.action() {
            Action::Load(l) => vec![l.path.clone()],
            _ => spec.output.iter().cloned().collect(),
        };
        output.details.insert("cluster".into(), cluster);
        output.details.insert("step".into(), step_id);
        let ran = running.unwrap_or(added);
        output.details.insert("cluster_wait_seconds".into(), format!("{:.1}", cluster_wait.as_secs_f64()));
        output.details.insert("queue_seconds".into(), format!("{:.1}", ran.duration_since(added).as_secs_f64()));
        output.details.insert("step_seconds".into(), format!("{:.1}", ran.elapsed().as_secs_f64()));
        Ok(output)
    }
}

#[async_trait]
impl Engine for EmrEngine {
    fn name(&self) -> &'static str {
        "emr"
    }

    async fn run(&self, task: &PlannedTask, cx: TaskContext) -> Result<TaskOutput, TaskError> {
        self.run_step(task, &cx).await
    }

    async fn release(&self) -> Result<(), EngineError> {
        self.terminate("no remaining task needs it").await
    }

    async fn shutdown(&self, end: &RunEnd) -> Result<(), EngineError> {
        let terminated = self.terminate("the run ended").await;
        if let Some(cost) = self.measure().await {
            self.note(cost.describe());
            if let Some(why) = &cost.stopped {
                self.note(format!("stopped by the budget: {why}"));
            }
            *self.cost.lock().expect("cost") = Some(cost);
        }
        if self.runner.initialized() {
            let folder = self.run_root(&end.run_id);
            let kept = self.settings.keep_failed_staging;
            if let Some(line) = staging::finish(&self.s3, &folder, end.succeeded, self.keep_staging, kept).await {
                self.note(line);
            }
        }
        terminated
    }

    fn cancel_grace(&self) -> Duration {
        // Enough to send CancelSteps and, at shutdown, TerminateJobFlows.
        Duration::from_secs(20)
    }

    fn describe(&self, task: &PlannedTask) -> Vec<String> {
        let name = step_name(&self.pipeline, "<run-id>", task.id(), 1);
        let root = self.run_root("<run-id>");
        let request = add_step(
            "<cluster-id>",
            name,
            &join_path(&root, "dagrun_step.py"),
            &join_path(&root, &format!("tasks/{}-1.json", task.id())),
            task.timeout(),
        );
        let mut lines = vec!["AddJobFlowSteps:".to_string()];
        lines.extend(serde_json::to_string_pretty(&request).expect("serializes").lines().map(|l| format!("  {l}")));
        lines
    }

    fn describe_run(&self, plan: &Plan) -> Vec<String> {
        let request = run_job_flow(&self.settings, plan.name(), "<run-id>", "<instance>", plan.runs_dir());
        let mut lines = vec!["cluster price:".to_string()];
        lines.extend(self.price.describe().into_iter().map(|l| format!("  {l}")));
        if let Some(max) = self.budget {
            lines.push(format!(
                "  budget: ${max:.2}; the run stops EMR work once the spend so far plus the {} idle timeout (${:.2}) would pass it",
                dagrun_core::units::format_duration(self.settings.idle_timeout),
                self.price.usd_per_hour() * self.settings.idle_timeout.as_secs_f64() / 3600.0
            ));
        }
        lines.push("RunJobFlow (when the first emr task is ready; terminated when none is left):".to_string());
        lines.extend(serde_json::to_string_pretty(&request).expect("serializes").lines().map(|l| format!("  {l}")));
        lines
    }

    fn notes(&self) -> Vec<String> {
        self.history.lock().expect("history").clone()
    }

    fn costs(&self) -> Vec<ClusterCost> {
        self.cost.lock().expect("cost").iter().cloned().collect()
    }

    fn price(&self) -> Option<ClusterPrice> {
        Some(self.price.clone())
    }
}

/// An EMR client with the standard credential chain; the endpoint may be overridden with
/// `AWS_ENDPOINT_URL_EMR` or `AWS_ENDPOINT_URL` (the tests point it at moto).
pub async fn client(region: Option<&str>) -> aws_sdk_emr::Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_string()));
    }
    let sdk = crate::load_sdk_config(loader).await;
    let mut builder = aws_sdk_emr::config::Builder::from(&sdk);
    if sdk.region().is_none() {
        builder = builder.region(aws_config::Region::new("us-east-1"));
    }
    aws_sdk_emr::Client::from_conf(builder.build())
}

/// How long ago a cluster was created, for `dagrun emr gc`.
pub(crate) fn age(created: Option<&aws_sdk_emr::primitives::DateTime>) -> Option<Duration> {
    let created = SystemTime::try_from(*created?).ok()?;
    SystemTime::now().duration_since(created).ok()
}
