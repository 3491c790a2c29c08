//! Executor behaviour with a scripted test engine, on tokio's paused clock (no real sleeps).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;

use super::*;
use crate::compile::{PlanOptions, compile};
use crate::decisions::RunDecisions;
use crate::diagnostic::SourceFile;
use crate::engine::{EngineError, NoProgress, RunEnd};
use crate::vars::VarInputs;

/// What one attempt of a scripted task does.
#[derive(Clone, Debug)]
enum Step {
    /// Work for this long, then succeed.
    Ok(u64),
    /// Work for this long, then fail (retryable or not).
    Fail(u64, bool),
    /// Never finish on its own; stops when cancelled.
    Hang,
    /// Never finish, even when cancelled.
    HangDeaf,
    Panic,
}

#[derive(Default)]
struct Script {
    steps: BTreeMap<String, Vec<Step>>,
    attempts: Mutex<BTreeMap<String, u32>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
    log: Mutex<Vec<String>>,
}

struct TestEngine(Arc<Script>);

#[async_trait]
impl Engine for TestEngine {
    fn name(&self) -> &'static str {
        "test"
    }

    async fn run(&self, task: &PlannedTask, cx: TaskContext) -> Result<TaskOutput, TaskError> {
        let script = &self.0;
        let step = {
            let mut attempts = script.attempts.lock().unwrap();
            let n = attempts.entry(task.id.clone()).or_default();
            *n += 1;
            let steps = script.steps.get(&task.id).cloned().unwrap_or_else(|| vec![Step::Ok(1)]);
            steps.get(*n as usize - 1).cloned().unwrap_or_else(|| steps.last().cloned().unwrap())
        };
        let now = script.running.fetch_add(1, Ordering::SeqCst) + 1;
        script.max_running.fetch_max(now, Ordering::SeqCst);
        script.log.lock().unwrap().push(format!("start {} #{}", task.id, cx.attempt));
        let result = match step {
            Step::Ok(secs) => {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                Ok(TaskOutput { rows_out: Some(1), ..Default::default() })
            }
            Step::Fail(secs, retryable) => {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                Err(TaskError { message: format!("{} broke", task.id), retryable, partial: None })
            }
            Step::Hang => {
                cx.cancel.cancelled().await;
                script.log.lock().unwrap().push(format!("cleanup {}", task.id));
                Err(TaskError::permanent("stopped"))
            }
            Step::HangDeaf => std::future::pending().await,
            Step::Panic => panic!("boom in {}", task.id),
        };
        script.running.fetch_sub(1, Ordering::SeqCst);
        result
    }

    async fn release(&self) -> Result<(), EngineError> {
        self.0.log.lock().unwrap().push("release".into());
        Ok(())
    }

    async fn shutdown(&self, _end: &RunEnd) -> Result<(), EngineError> {
        self.0.log.lock().unwrap().push("shutdown".into());
        Ok(())
    }

    fn forget(&self, task: &PlannedTask) {
        self.0.log.lock().unwrap().push(format!("forget {}", task.id));
    }
}

struct Quiet;

impl Observer for Quiet {
    fn attempt_started(&self, _: &PlannedTask, _: u32) -> Arc<dyn TaskProgress> {
        Arc::new(NoProgress)
    }
    fn attempt_failed(&self, _: &PlannedTask, _: u32, _: &TaskError, _: Option<Duration>) {}
    fn task_finished(&self, _: &PlannedTask, _: &TaskRecord) {}
}

/// A plan of transforms: `tasks` is `(id, deps)`; every task runs on the test engine.
fn plan(tasks: &[(&str, &[&str])], retry: &str, timeout: &str) -> Arc<Plan> {
    let mut text = format!("name: t\ndefaults:\n  engine: test\n  timeout: {timeout}\n  retry: {retry}\ntasks:\n");
    for (id, deps) in tasks {
        text.push_str(&format!(
            "  - id: {id}\n    kind: transform\n    depends_on: [{}]\n    sql: SELECT 1\n",
            deps.join(", ")
        ));
    }
    let options = PlanOptions { engines: vec!["test".into()], ..PlanOptions::default() };
    let inputs = VarInputs { env: Some(BTreeMap::new()), ..Default::default() };
    Arc::new(compile(SourceFile::new("t.yaml", text), &inputs, &options).unwrap_or_else(|e| panic!("{e}")))
}

const NO_JITTER: &str = "{max_attempts: 3, initial_delay: 2s, multiplier: 3, max_delay: 1m, jitter: none}";

async fn run(
    plan: Arc<Plan>,
    script: Arc<Script>,
    jobs: usize,
    fail_fast: bool,
    cancel: CancellationToken,
) -> RunReport {
    let engines = Engines::new().with(Arc::new(TestEngine(script)));
    let options = ExecutorOptions {
        jobs,
        fail_fast,
        run_id: "r".into(),
        instance: "i".into(),
        jitter_seed: Some(1),
        cancel_grace: Duration::from_secs(5),
        expected: BTreeMap::new(),
        fence: None,
    };
    let decisions = Arc::new(RunDecisions::new(&plan));
    execute(plan, decisions, &engines, &options, Arc::new(Quiet), cancel).await
}

fn script(steps: &[(&str, Vec<Step>)]) -> Arc<Script> {
    Arc::new(Script { steps: steps.iter().map(|(id, s)| (id.to_string(), s.clone())).collect(), ..Default::default() })
}

fn states(report: &RunReport) -> Vec<(&str, TaskState, usize)> {
    report.tasks.iter().map(|t| (t.id.as_str(), t.state, t.attempts.len())).collect()
}

#[tokio::test(start_paused = true)]
async fn retryable_errors_are_retried_with_exponential_backoff() {
    let s = script(&[("a", vec![Step::Fail(1, true), Step::Fail(1, true), Step::Ok(1)])]);
    let start = Instant::now();
    let report = run(plan(&[("a", &[])], NO_JITTER, "1h"), s, 4, false, CancellationToken::new()).await;
    assert_eq!(states(&report), vec![("a", TaskState::Succeeded, 3)]);
    // Three 1s attempts plus waits of 2s and 6s.
    assert_eq!(start.elapsed(), Duration::from_secs(3 + 2 + 6));
    assert_eq!(report.exit_code(), 0);
}

#[tokio::test(start_paused = true)]
async fn full_jitter_keeps_each_wait_within_the_backoff() {
    let s = script(&[("a", vec![Step::Fail(0, true), Step::Fail(0, true), Step::Fail(0, true), Step::Ok(0)])]);
    let retry = "{max_attempts: 4, initial_delay: 10s, multiplier: 2, max_delay: 15s, jitter: full}";
    let report = run(plan(&[("a", &[])], retry, "1h"), s, 4, false, CancellationToken::new()).await;
    let attempts = &report.tasks[0].attempts;
    assert_eq!(attempts.len(), 4);
    // Waits are at most 10s, 15s (capped), 15s: the whole run is at most 40s of virtual time.
    assert!(report.duration <= Duration::from_secs(40), "{:?}", report.duration);
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_are_not_retried() {
    let s = script(&[("a", vec![Step::Fail(1, false), Step::Ok(1)])]);
    let report = run(plan(&[("a", &[])], NO_JITTER, "1h"), s, 4, false, CancellationToken::new()).await;
    assert_eq!(states(&report), vec![("a", TaskState::Failed, 1)]);
    assert_eq!(report.tasks[0].reason.as_deref(), Some("a broke"));
    assert_eq!(report.exit_code(), 1);
}

#[tokio::test(start_paused = true)]
async fn retries_stop_when_attempts_run_out() {
    let s = script(&[("a", vec![Step::Fail(1, true)])]);
    let report = run(plan(&[("a", &[])], NO_JITTER, "1h"), s, 4, false, CancellationToken::new()).await;
    assert_eq!(states(&report), vec![("a", TaskState::Failed, 3)]);
    assert_eq!(report.tasks[0].reason.as_deref(), Some("a broke (after 3 attempts)"));
}

#[tokio::test(start_paused = true)]
async fn each_attempt_is_bounded_by_the_timeout() {
    let s = script(&[("a", vec![Step::Hang, Step::Ok(1)])]);
    let start = Instant::now();
    let report = run(plan(&[("a", &[])], NO_JITTER, "30s"), s.clone(), 4, false, CancellationToken::new()).await;
    assert_eq!(states(&report), vec![("a", TaskState::Succeeded, 2)]);
    assert!(report.tasks[0].attempts[0].timed_out);
    assert_eq!(report.tasks[0].attempts[0].error.as_deref(), Some("attempt timed out after 30s"));
    // The hung attempt was told to stop and cleaned up.
    assert!(s.log.lock().unwrap().contains(&"cleanup a".to_string()));
    assert_eq!(start.elapsed(), Duration::from_secs(30 + 2 + 1));
}

#[tokio::test(start_paused = true)]
async fn the_concurrency_limit_holds() {
    let tasks: Vec<(&str, &[&str])> = vec![("a", &[]), ("b", &[]), ("c", &[]), ("d", &[]), ("e", &[])];
    let s = script(&[]);
    let start = Instant::now();
    let report = run(plan(&tasks, NO_JITTER, "1h"), s.clone(), 2, false, CancellationToken::new()).await;
    assert!(report.succeeded());
    assert_eq!(s.max_running.load(Ordering::SeqCst), 2);
    assert_eq!(start.elapsed(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn independent_tasks_run_concurrently() {
    let tasks: Vec<(&str, &[&str])> = vec![("a", &[]), ("b", &[]), ("c", &["a", "b"])];
    let s = script(&[("a", vec![Step::Ok(5)]), ("b", vec![Step::Ok(5)])]);
    let start = Instant::now();
    let report = run(plan(&tasks, NO_JITTER, "1h"), s.clone(), 4, false, CancellationToken::new()).await;
    assert!(report.succeeded());
    assert_eq!(start.elapsed(), Duration::from_secs(6));
}

#[tokio::test(start_paused = true)]
async fn a_failure_skips_downstream_and_lets_independent_branches_finish() {
    let tasks: Vec<(&str, &[&str])> = vec![("a", &[]), ("b", &["a"]), ("c", &["b"]), ("x", &[]), ("y", &["x"])];
    let s = script(&[("a", vec![Step::Fail(1, false)]), ("x", vec![Step::Ok(3)])]);
    let report = run(plan(&tasks, NO_JITTER, "1h"), s, 4, false, CancellationToken::new()).await;
    assert_eq!(
        states(&report),
        vec![
            ("a", TaskState::Failed, 1),
            ("b", TaskState::Skipped, 0),
            ("c", TaskState::Skipped, 0),
            ("x", TaskState::Succeeded, 1),
            ("y", TaskState::Succeeded, 1),
        ]
    );
    assert_eq!(report.tasks[2].reason.as_deref(), Some("upstream task `a` failed"));
    assert_eq!(report.exit_code(), 1);
}

#[tokio::test(start_paused = true)]
async fn fail_fast_cancels_running_tasks_and_skips_the_rest() {
    let tasks: Vec<(&str, &[&str])> = vec![("a", &[]), ("slow", &[]), ("later", &["slow"])];
    let s = script(&[("a", vec![Step::Fail(1, false)]), ("slow", vec![Step::Hang])]);
    let report = run(plan(&tasks, NO_JITTER, "1h"), s.clone(), 4, true, CancellationToken::new()).await;
    assert_eq!(
        states(&report),
        vec![("a", TaskState::Failed, 1), ("slow", TaskState::Cancelled, 1), ("later", TaskState::Skipped, 0)]
    );
    assert_eq!(report.tasks[2].reason.as_deref(), Some("not started: --fail-fast after `a` failed"));
    assert!(s.log.lock().unwrap().contains(&"cleanup slow".to_string()));
    assert_eq!(report.exit_code(), 1);
}

#[tokio::test(start_paused = true)]
async fn cancellation_stops_tasks_lets_them_clean_up_and_shuts_engines_down() {
    let tasks: Vec<(&str, &[&str])> = vec![("a", &[]), ("b", &["a"])];
    let s = script(&[("a", vec![Step::Hang])]);
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        trigger.cancel();
    });
    let report = run(plan(&tasks, NO_JITTER, "1h"), s.clone(), 4, false, cancel).await;
    assert!(report.interrupted);
    assert_eq!(report.exit_code(), 130);
    assert_eq!(states(&report), vec![("a", TaskState::Cancelled, 1), ("b", TaskState::Skipped, 0)]);
    let log = s.log.lock().unwrap().clone();
    assert!(log.contains(&"cleanup a".to_string()), "{log:?}");
    assert_eq!(log.last().map(String::as_str), Some("shutdown"));
}

#[tokio::test(start_paused = true)]
async fn a_task_deaf_to_cancellation_is_abandoned_after_the_grace_period() {
    let s = script(&[("a", vec![Step::HangDeaf])]);
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        trigger.cancel();
    });
    let start = Instant::now();
    let report = run(plan(&[("a", &[])], NO_JITTER, "1h"), s, 4, false, cancel).await;
    assert_eq!(states(&report), vec![("a", TaskState::Cancelled, 1)]);
    assert_eq!(start.elapsed(), Duration::from_secs(1 + 5));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_task_fails_without_taking_the_run_down() {
    let tasks: Vec<(&str, &[&str])> = vec![("a", &[]), ("b", &[])];
    let s = script(&[("a", vec![Step::Panic])]);
    let report = run(plan(&tasks, NO_JITTER, "1h"), s, 4, false, CancellationToken::new()).await;
    assert_eq!(states(&report), vec![("a", TaskState::Failed, 1), ("b", TaskState::Succeeded, 1)]);
    assert_eq!(report.tasks[0].reason.as_deref(), Some("internal error (panic): boom in a"));
}

#[tokio::test(start_paused = true)]
async fn engines_are_released_once_unused_and_outputs_forgotten_after_their_readers() {
    let tasks: Vec<(&str, &[&str])> = vec![("a", &[]), ("b", &["a"]), ("c", &["a"])];
    let s = script(&[("b", vec![Step::Ok(1)]), ("c", vec![Step::Ok(3)])]);
    let report = run(plan(&tasks, NO_JITTER, "1h"), s.clone(), 4, false, CancellationToken::new()).await;
    assert!(report.succeeded());
    let log = s.log.lock().unwrap().clone();
    let pos = |needle: &str| log.iter().position(|l| l == needle).unwrap_or_else(|| panic!("{needle} in {log:?}"));
    // `a` is forgotten only after both readers finished; release comes before shutdown.
    assert!(pos("forget a") > pos("start c #1"));
    assert!(pos("release") < pos("shutdown"));
    assert_eq!(log.iter().filter(|l| *l == "release").count(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_task_with_the_most_work_ahead_takes_a_free_slot_first() {
    // a -> short (30 s); b -> long1 -> long2 (2 s each). With no record, declaration order.
    let tasks: &[(&str, &[&str])] =
        &[("a", &[]), ("short", &["a"]), ("b", &[]), ("long1", &["b"]), ("long2", &["long1"])];
    let starts = |log: &[String]| -> Vec<String> {
        log.iter().filter_map(|l| l.strip_prefix("start ").map(|s| s.trim_end_matches(" #1").to_string())).collect()
    };

    let s = script(&[]);
    run(plan(tasks, NO_JITTER, "1h"), s.clone(), 1, false, CancellationToken::new()).await;
    assert_eq!(starts(&s.log.lock().unwrap())[..2], ["a", "short"]);

    let s = script(&[("short", vec![Step::Ok(30)]), ("long1", vec![Step::Ok(2)]), ("long2", vec![Step::Ok(2)])]);
    let p = plan(tasks, NO_JITTER, "1h");
    let idx = |id: &str| p.task(id).unwrap().index();
    let secs = Duration::from_secs;
    let expected = BTreeMap::from([
        (idx("a"), secs(1)),
        (idx("short"), secs(30)),
        (idx("b"), secs(1)),
        (idx("long1"), secs(2)),
        (idx("long2"), secs(2)),
    ]);
    let engines = Engines::new().with(Arc::new(TestEngine(s.clone())));
    let mut options = ExecutorOptions::new("r");
    options.jobs = 2;
    options.jitter_seed = Some(1);
    options.expected = expected;
    // Two slots, three ready-soon tasks: after `a` and `b`, `short` (30 s ahead) starts before
    // `long1`, so the run ends at 1 + 30 s, not later.
    let start = Instant::now();
    let decisions = Arc::new(RunDecisions::new(&p));
    let report = execute(p, decisions, &engines, &options, Arc::new(Quiet), CancellationToken::new()).await;
    assert_eq!(report.exit_code(), 0);
    assert_eq!(starts(&s.log.lock().unwrap())[..3], ["a", "b", "short"]);
    assert_eq!(start.elapsed(), secs(31));
}
