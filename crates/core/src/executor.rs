//! The executor: runs a [`Plan`] on tokio. A task starts as soon as all its dependencies
//! succeeded, up to `jobs` at a time; each attempt is bounded by the task's timeout and retried per
//! its [`RetryPolicy`](crate::retry::RetryPolicy) when the error is retryable. A task that fails for
//! good skips its downstream tasks while independent branches finish (`fail_fast` stops
//! everything). Of the ready tasks, the one with the most work still ahead of it starts first
//! (see [`priority`]). Cancelling the token (Ctrl-C, SIGTERM) cancels running attempts, gives engines a
//! grace period to clean up, and marks the run interrupted. Engines are released as soon as no
//! remaining task needs them and shut down on every exit path.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, error_span, info, warn};

use crate::cost::ClusterCost;
use crate::decisions::RunDecisions;
use crate::engine::{CANCEL_GRACE, Engine, Engines, RunEnd, TaskContext, TaskError, TaskOutput, TaskProgress};
use crate::plan::{DEFAULT_ENGINE, Plan, PlannedTask};
use crate::spec::TaskKind;
use crate::storage::Fence;
use crate::units::format_duration;

/// How a run is carried out.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// Tasks running at the same time, at most.
    pub jobs: usize,
    /// Stop everything at the first task that fails for good.
    pub fail_fast: bool,
    /// The run's id (`20261124T105042Z-3f2a`, or `--run-id`).
    pub run_id: String,
    /// Unique to this process (see [`TaskContext::instance`]).
    pub instance: String,
    /// Seed for retry jitter; `None` draws one (tests fix it).
    pub jitter_seed: Option<u64>,
    /// How long a cancelled attempt may take to clean up before it is abandoned.
    pub cancel_grace: Duration,
    /// How long each task took in the last run, for the order in which ready tasks start.
    pub expected: BTreeMap<usize, Duration>,
    /// What every write that publishes to the lake checks first (see [`crate::storage::Fence`]);
    /// `None` where no lease is held (dry runs, tests of the executor alone).
    pub fence: Option<Arc<dyn Fence>>,
}

impl ExecutorOptions {
    /// Options for run `run_id`: as many jobs as cores, no fail-fast, nothing up to date.
    pub fn new(run_id: impl Into<String>) -> Self {
        Self {
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
            fail_fast: false,
            run_id: run_id.into(),
            instance: new_instance(),
            jitter_seed: None,
            cancel_grace: CANCEL_GRACE,
            expected: BTreeMap::new(),
            fence: None,
        }
    }
}

/// A short random token naming this process among others that may share a run id.
/// The process's CPU time (user and system, seconds) and peak resident memory (bytes) so far.
fn process_usage() -> Option<(f64, u64)> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: initialised by the successful call above.
    let usage = unsafe { usage.assume_init() };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    // Linux reports ru_maxrss in KiB.
    Some((seconds(usage.ru_utime) + seconds(usage.ru_stime), (usage.ru_maxrss.max(0) as u64) << 10))
}

pub(crate) fn new_instance() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// Hears about a run as it happens (progress bars, records). Logs go through `tracing`.
pub trait Observer: Send + Sync {
    /// An attempt starts; returns where its progress goes.
    fn attempt_started(&self, task: &PlannedTask, attempt: u32) -> Arc<dyn TaskProgress>;
    /// An attempt failed; `retry_in` is the wait before the next one, if any.
    fn attempt_failed(&self, task: &PlannedTask, attempt: u32, error: &TaskError, retry_in: Option<Duration>);
    /// A task reached its final state.
    fn task_finished(&self, task: &PlannedTask, record: &TaskRecord);
}

/// Final state of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Its last attempt succeeded.
    Succeeded,
    /// Not run: its published outputs are complete for unchanged inputs and config (resume).
    UpToDate,
    /// Its last attempt failed, with no retry left or a permanent error.
    Failed,
    /// Never started: an upstream task failed, `--fail-fast` stopped the run, or it was interrupted.
    Skipped,
    /// Was running when the run was cancelled.
    Cancelled,
}

impl TaskState {
    /// The state as summaries and records spell it.
    pub fn as_str(&self) -> &'static str {
        match self {
            TaskState::Succeeded => "succeeded",
            TaskState::UpToDate => "up-to-date",
            TaskState::Failed => "failed",
            TaskState::Skipped => "skipped",
            TaskState::Cancelled => "cancelled",
        }
    }
}

/// One attempt of a task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// 1 for the first attempt.
    pub number: u32,
    #[serde(with = "system_time", rename = "started_at_ms")]
    /// When it started.
    pub started_at: SystemTime,
    #[serde(with = "duration_secs", rename = "duration_s")]
    /// How long it took.
    pub duration: Duration,
    /// `None` when the attempt succeeded.
    pub error: Option<String>,
    /// Whether its error was worth another attempt.
    pub retryable: bool,
    /// Whether it ran into the task's timeout.
    pub timed_out: bool,
}

/// What happened to one task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task's id.
    pub id: String,
    /// The task's kind.
    pub kind: TaskKind,
    /// The engine it ran on.
    pub engine: String,
    /// The tasks it depends on, by id.
    #[serde(default)]
    pub deps: Vec<String>,
    /// How it ended.
    pub state: TaskState,
    /// Its attempts, in order.
    pub attempts: Vec<AttemptRecord>,
    #[serde(with = "duration_secs", rename = "duration_s")]
    /// From its first attempt's start to its end, retry waits included.
    pub duration: Duration,
    /// One line: why it failed, was skipped or cancelled.
    pub reason: Option<String>,
    /// What it reported (or found before failing).
    pub output: Option<TaskOutput>,
}

/// The whole run, in plan order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// The run's id.
    pub run_id: String,
    /// The pipeline's name.
    pub pipeline: String,
    #[serde(with = "system_time", rename = "started_at_ms")]
    /// When the run started.
    pub started_at: SystemTime,
    #[serde(with = "duration_secs", rename = "duration_s")]
    /// How long it took.
    pub duration: Duration,
    /// Every task, in plan order.
    pub tasks: Vec<TaskRecord>,
    /// Ctrl-C or SIGTERM arrived.
    pub interrupted: bool,
    /// Engines that could not clean up (e.g. a cluster that did not terminate).
    pub shutdown_errors: Vec<String>,
    /// What engines report about their own resources (clusters and their states).
    #[serde(default)]
    pub engine_notes: Vec<String>,
    /// What the run's clusters cost (EMR), for the record, the report and the next estimate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub costs: Vec<ClusterCost>,
}

impl RunReport {
    /// Whether every task succeeded or was up to date, and every engine cleaned up.
    pub fn succeeded(&self) -> bool {
        !self.interrupted
            && self.shutdown_errors.is_empty()
            && self.tasks.iter().all(|t| matches!(t.state, TaskState::Succeeded | TaskState::UpToDate))
    }

    /// The documented exit code: 0 all succeeded, 1 a task failed, 130 interrupted.
    pub fn exit_code(&self) -> i32 {
        if self.interrupted {
            130
        } else if self.succeeded() {
            0
        } else {
            1
        }
    }
}

/// Runs `plan` to completion (or cancellation) and reports what happened.
pub async fn execute(
    plan: Arc<Plan>,
    decisions: Arc<RunDecisions>,
    engines: &Engines,
    options: &ExecutorOptions,
    observer: Arc<dyn Observer>,
    cancel: CancellationToken,
) -> RunReport {
    let started_at = SystemTime::now();
    let clock = Instant::now();
    let n = plan.tasks.len();
    let jobs = options.jobs.max(1);
    let mut records: Vec<Option<TaskRecord>> = vec![None; n];
    let mut waiting: Vec<usize> = plan.tasks.iter().map(|t| t.deps.len()).collect();
    // Ready tasks, the most work ahead first, then in declaration order.
    let keys = priority::order_keys(&plan, &options.expected);
    let key = |i: usize| keys[i];
    let mut ready: BTreeSet<_> = (0..n).filter(|&i| waiting[i] == 0).map(key).collect();
    let mut running: JoinSet<(usize, TaskRecord)> = JoinSet::new();
    let mut in_flight = 0usize;
    // Stops new work (fail-fast or interruption) and cancels running attempts.
    let stop = cancel.child_token();
    let mut interrupted = false;
    let mut fail_fast_cause: Option<String> = None;
    let mut seed_rng = match options.jitter_seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => rand::make_rng(),
    };

    // Engines still needed by unfinished tasks; released when this drops to zero.
    let mut engine_users: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..n {
        *engine_users.entry(decisions.engine(i).to_string()).or_default() += 1;
    }
    let reads = plan.producers_read();
    let readers_of = plan.readers();
    let mut readers_left: Vec<usize> = readers_of.iter().map(BTreeSet::len).collect();

    loop {
        // Start what can start.
        while in_flight < jobs && !stop.is_cancelled() {
            let Some((_, _, i)) = ready.pop_first() else { break };
            let task = plan.tasks[i].clone();
            let engine_name = decisions.engine(i).to_string();
            if let Some(reason) = decisions.fresh.get(&i) {
                let record = finished(
                    &task,
                    &engine_name,
                    TaskState::UpToDate,
                    Vec::new(),
                    Duration::ZERO,
                    Some(reason.clone()),
                    None,
                );
                running.spawn(async move { (i, record) });
                in_flight += 1;
                continue;
            }
            let Some(engine) = engines.get(&engine_name).cloned() else {
                // Validation checks engines against the same list, so this is a programming error.
                let record = finished(
                    &task,
                    &engine_name,
                    TaskState::Failed,
                    Vec::new(),
                    Duration::ZERO,
                    Some(format!("engine `{engine_name}` is not available in this build")),
                    None,
                );
                running.spawn(async move { (i, record) });
                in_flight += 1;
                continue;
            };
            let grace = options.cancel_grace.min(engine.cancel_grace());
            let runner = AttemptRunner {
                plan: plan.clone(),
                decisions: decisions.clone(),
                engine,
                engine_name,
                observer: observer.clone(),
                cancel: stop.child_token(),
                run_id: options.run_id.clone(),
                instance: options.instance.clone(),
                fingerprint: decisions.fingerprints.get(&i).cloned(),
                fence: options.fence.clone(),
                grace,
                rng: StdRng::seed_from_u64(rand::RngExt::random(&mut seed_rng)),
            };
            running.spawn(async move { (i, runner.run(task).await) });
            in_flight += 1;
        }
        if cancel.is_cancelled() && !interrupted {
            interrupted = true;
            warn!("interrupted: cancelling running tasks");
        }
        if in_flight == 0 {
            break;
        }

        let joined = tokio::select! {
            joined = running.join_next() => joined,
            _ = cancel.cancelled(), if !interrupted => {
                // `stop` is a child token: running attempts are already being cancelled.
                continue;
            }
        };
        let Some(joined) = joined else { break };
        in_flight -= 1;
        let (i, record) = match joined {
            Ok(done) => done,
            Err(join_error) => {
                // Attempts catch their own panics; this is a panic in the executor's own code.
                error!(error = %join_error, "a task runner stopped unexpectedly");
                continue;
            }
        };
        let state = record.state;
        observer.task_finished(&plan.tasks[i], &record);
        records[i] = Some(record);
        let mut done_now = vec![i];

        match state {
            TaskState::Succeeded | TaskState::UpToDate => {
                for &d in plan.dependents(i) {
                    waiting[d] -= 1;
                    if waiting[d] == 0 && records[d].is_none() {
                        ready.insert(key(d));
                    }
                }
            }
            TaskState::Failed => {
                let failed = &plan.tasks[i].id;
                for d in plan.descendants(i) {
                    if records[d].is_none() {
                        let record = finished(
                            &plan.tasks[d],
                            decisions.engine(d),
                            TaskState::Skipped,
                            Vec::new(),
                            Duration::ZERO,
                            Some(format!("upstream task `{failed}` failed")),
                            None,
                        );
                        observer.task_finished(&plan.tasks[d], &record);
                        records[d] = Some(record);
                        ready.remove(&key(d));
                        done_now.push(d);
                    }
                }
                if options.fail_fast && fail_fast_cause.is_none() {
                    warn!(task = %failed, "--fail-fast: stopping the run");
                    fail_fast_cause = Some(failed.clone());
                    stop.cancel();
                }
            }
            TaskState::Skipped | TaskState::Cancelled => {}
        }

        for &d in &done_now {
            release_engine_if_unused(decisions.engine(d), engines, &mut engine_users).await;
            for &producer in &plan.tasks[d].deps.iter().chain(reads[d].iter()).copied().collect::<BTreeSet<_>>() {
                if readers_of[producer].contains(&d) {
                    readers_left[producer] -= 1;
                    if readers_left[producer] == 0
                        && let Some(engine) = engines.get(decisions.engine(producer))
                    {
                        engine.forget(&plan.tasks[producer]);
                    }
                }
            }
        }
    }

    // Whatever never started.
    for (i, slot) in records.iter_mut().enumerate() {
        if slot.is_none() {
            let reason = match (&fail_fast_cause, interrupted) {
                (_, true) => "not started: the run was interrupted".to_string(),
                (Some(cause), _) => format!("not started: --fail-fast after `{cause}` failed"),
                (None, false) => "not started".to_string(),
            };
            let record = finished(
                &plan.tasks[i],
                decisions.engine(i),
                TaskState::Skipped,
                Vec::new(),
                Duration::ZERO,
                Some(reason),
                None,
            );
            observer.task_finished(&plan.tasks[i], &record);
            *slot = Some(record);
        }
    }

    let end = RunEnd {
        run_id: options.run_id.clone(),
        succeeded: !interrupted
            && records.iter().flatten().all(|r| matches!(r.state, TaskState::Succeeded | TaskState::UpToDate)),
    };
    let mut shutdown_errors = Vec::new();
    let used = |engine: &Arc<dyn Engine>| decisions.tasks_on(engine.name()).next().is_some();
    for engine in engines.iter() {
        if !used(engine) {
            continue;
        }
        match tokio::time::timeout(options.cancel_grace.max(Duration::from_secs(1)) * 4, engine.shutdown(&end)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => shutdown_errors.push(format!("engine {}: {e}", engine.name())),
            Err(_) => shutdown_errors.push(format!("engine {}: shutdown timed out", engine.name())),
        }
    }
    for e in &shutdown_errors {
        error!("{e}");
    }
    let costs: Vec<ClusterCost> = engines.iter().filter(|e| used(e)).flat_map(|e| e.costs()).collect();
    let engine_notes: Vec<String> = engines.iter().filter(|e| used(e)).flat_map(|e| e.notes()).collect();

    RunReport {
        run_id: options.run_id.clone(),
        pipeline: plan.name.clone(),
        started_at,
        duration: clock.elapsed(),
        tasks: records
            .into_iter()
            .zip(&plan.tasks)
            .map(|(r, task)| {
                let mut r = r.expect("every task has a record");
                r.deps = task.deps.iter().map(|&d| plan.tasks[d].id.clone()).collect();
                r
            })
            .collect(),
        interrupted,
        shutdown_errors,
        engine_notes,
        costs,
    }
}

async fn release_engine_if_unused(name: &str, engines: &Engines, users: &mut BTreeMap<String, usize>) {
    let Some(count) = users.get_mut(name) else {
        return;
    };
    *count = count.saturating_sub(1);
    if *count == 0
        && let Some(engine) = engines.get(name)
        && let Err(e) = engine.release().await
    {
        warn!(engine = %name, error = %e, "engine release failed; it will be retried at shutdown");
    }
}

fn finished(
    task: &PlannedTask,
    engine: &str,
    state: TaskState,
    attempts: Vec<AttemptRecord>,
    duration: Duration,
    reason: Option<String>,
    output: Option<TaskOutput>,
) -> TaskRecord {
    TaskRecord {
        id: task.id.clone(),
        kind: task.kind,
        engine: engine.to_string(),
        deps: Vec::new(),
        state,
        attempts,
        duration,
        reason,
        output,
    }
}

/// Runs one task's attempts: timeout, retries with backoff, cancellation, panics.
struct AttemptRunner {
    plan: Arc<Plan>,
    decisions: Arc<RunDecisions>,
    engine: Arc<dyn Engine>,
    /// The name of the engine the task runs on.
    engine_name: String,
    observer: Arc<dyn Observer>,
    cancel: CancellationToken,
    run_id: String,
    instance: String,
    fingerprint: Option<String>,
    fence: Option<Arc<dyn Fence>>,
    grace: Duration,
    rng: StdRng,
}

enum Outcome {
    Done(Result<TaskOutput, TaskError>),
    TimedOut,
    Cancelled,
}

impl AttemptRunner {
    async fn run(mut self, task: PlannedTask) -> TaskRecord {
        let clock = Instant::now();
        let mut attempts = Vec::new();
        let policy = task.retry;
        let mut attempt = 1;
        loop {
            // At ERROR level, so that the span (and the task it names) is there whatever the log
            // level: `-q` keeps warnings and errors, and they must still say which task.
            let span = error_span!("task", task = %task.id, kind = %task.kind, engine = %self.engine_name, attempt);
            let progress = self.observer.attempt_started(&task, attempt);
            let attempt_cancel = self.cancel.child_token();
            let cx = TaskContext {
                plan: self.plan.clone(),
                decisions: self.decisions.clone(),
                run_id: self.run_id.clone(),
                instance: self.instance.clone(),
                attempt,
                fingerprint: self.fingerprint.clone(),
                fence: self.fence.clone(),
                cancel: attempt_cancel.clone(),
                progress,
            };
            let started_at = SystemTime::now();
            let started = Instant::now();
            let cpu_before = process_usage();
            async { info!("started") }.instrument(span.clone()).await;
            let outcome = self.attempt(&task, cx, &attempt_cancel).instrument(span.clone()).await;
            let duration = started.elapsed();
            let mut record = AttemptRecord {
                number: attempt,
                started_at,
                duration,
                error: None,
                retryable: false,
                timed_out: false,
            };
            let error = match outcome {
                Outcome::Done(Ok(mut output)) => {
                    // What the attempt cost on this machine: the process's CPU time while it ran
                    // (shared with the tasks running beside it) and the process's peak memory.
                    if self.engine_name == DEFAULT_ENGINE
                        && let (Some(before), Some(after)) = (cpu_before, process_usage())
                    {
                        output.details.insert("cpu_seconds".into(), format!("{:.2}", (after.0 - before.0).max(0.0)));
                        output.details.insert("peak_rss_mib".into(), format!("{}", after.1 >> 20));
                    }
                    attempts.push(record);
                    span.in_scope(|| info!(elapsed = %format_duration(duration), "succeeded"));
                    return finished(
                        &task,
                        &self.engine_name,
                        TaskState::Succeeded,
                        attempts,
                        clock.elapsed(),
                        None,
                        Some(output),
                    );
                }
                Outcome::Cancelled => {
                    record.error = Some("cancelled".into());
                    attempts.push(record);
                    span.in_scope(|| warn!("cancelled"));
                    return finished(
                        &task,
                        &self.engine_name,
                        TaskState::Cancelled,
                        attempts,
                        clock.elapsed(),
                        Some("cancelled while running".into()),
                        None,
                    );
                }
                Outcome::TimedOut => {
                    record.timed_out = true;
                    TaskError::retryable(format!("attempt timed out after {}", format_duration(task.timeout)))
                }
                Outcome::Done(Err(error)) => error,
            };
            record.error = Some(error.message.clone());
            record.retryable = error.retryable;
            attempts.push(record);

            let retry_in =
                (error.retryable && attempt < policy.max_attempts).then(|| policy.delay(attempt + 1, &mut self.rng));
            self.observer.attempt_failed(&task, attempt, &error, retry_in);
            match retry_in {
                Some(delay) => {
                    span.in_scope(|| warn!(error = %error.summary(), retry_in = %format_duration(delay), "attempt failed; retrying"));
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.cancel.cancelled() => {
                            return finished(&task, &self.engine_name, TaskState::Cancelled, attempts, clock.elapsed(),
                                Some(format!("cancelled while waiting to retry after: {}", error.summary())), None);
                        }
                    }
                    attempt += 1;
                }
                None => {
                    let why = if !error.retryable { "" } else { " (no attempts left)" };
                    span.in_scope(|| error!(error = %error.message, "failed{why}"));
                    let reason = if attempts.len() > 1 {
                        format!("{} (after {} attempts)", error.summary(), attempts.len())
                    } else {
                        error.summary().to_string()
                    };
                    let partial = error.partial.map(|p| *p);
                    return finished(
                        &task,
                        &self.engine_name,
                        TaskState::Failed,
                        attempts,
                        clock.elapsed(),
                        Some(reason),
                        partial,
                    );
                }
            }
        }
    }

    /// One attempt, bounded by the timeout and the run's cancellation. On either, the engine is
    /// told through its token and given a grace period to clean up before it is abandoned.
    async fn attempt(&self, task: &PlannedTask, cx: TaskContext, attempt_cancel: &CancellationToken) -> Outcome {
        let work = AssertUnwindSafe(self.engine.run(task, cx)).catch_unwind();
        tokio::pin!(work);
        let first = tokio::select! {
            result = &mut work => {
                let result = flatten_panic(result);
                // An engine that stops with an error because it saw the run being cancelled was cancelled.
                if result.is_err() && self.cancel.is_cancelled() {
                    return Outcome::Cancelled;
                }
                return Outcome::Done(result);
            }
            _ = tokio::time::sleep(task.timeout) => Outcome::TimedOut,
            _ = self.cancel.cancelled() => Outcome::Cancelled,
        };
        attempt_cancel.cancel();
        if tokio::time::timeout(self.grace, &mut work).await.is_err() {
            warn!(grace = %format_duration(self.grace), "task did not stop within the grace period; abandoning it");
        }
        first
    }
}

fn flatten_panic(
    result: Result<Result<TaskOutput, TaskError>, Box<dyn std::any::Any + Send>>,
) -> Result<TaskOutput, TaskError> {
    result.unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(TaskError::permanent(format!("internal error (panic): {message}")))
    })
}

/// A time as epoch milliseconds.
pub mod system_time {
    use std::time::{Duration, SystemTime};

    use serde::Deserialize;

    /// Writes a time as epoch milliseconds.
    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let ms = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        s.serialize_u64(ms)
    }

    /// Reads a time from epoch milliseconds.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        Ok(SystemTime::UNIX_EPOCH + Duration::from_millis(u64::deserialize(d)?))
    }
}

/// A duration as seconds with millisecond precision.
pub mod duration_secs {
    use std::time::Duration;

    use serde::Deserialize;

    /// Writes a duration as seconds, to the millisecond.
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
    }

    /// Reads a duration from seconds.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs_f64(f64::deserialize(d)?.max(0.0)))
    }
}

mod priority;
#[cfg(test)]
mod tests;
