//! The dry run walks the real executor instead of describing it: every engine is replaced by one
//! that only takes a moment (one tick of a paused clock) and does nothing, so the order in which
//! tasks start, how many run at once (`--jobs`), what `--fail-fast` stops and which tasks are up
//! to date come from the same code as a real run.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::decisions::RunDecisions;
use crate::engine::{Engine, Engines, NoProgress, TaskContext, TaskError, TaskOutput, TaskProgress};
use crate::executor::{self, ExecutorOptions, Observer, TaskRecord, TaskState};
use crate::plan::{Plan, PlannedTask};

/// How long a described task "takes" on the paused clock.
const TICK: Duration = Duration::from_secs(1);

/// What the walk found: for each step (tick), the tasks that started in it, in start order, and
/// the tasks that would not run (up to date), by index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Walk {
    /// For each step (one tick of the paused clock), the tasks that start in it, in start order.
    pub steps: Vec<Vec<usize>>,
    /// The tasks that would not run, their outputs being up to date.
    pub up_to_date: Vec<usize>,
}

/// Walks `plan` through the executor with engines that only describe, under `options` (jobs,
/// fail-fast) and `decisions` (each task's engine, what is up to date). `engines` names the engines to describe (all the file format
/// knows, so that a build without one still shows the order); a task on any other fails as it
/// would in a run. Runs on its own thread and paused clock, so the walk is the same every time.
pub fn walk(
    plan: Arc<Plan>,
    decisions: Arc<RunDecisions>,
    engines: &[&'static str],
    options: &ExecutorOptions,
) -> Walk {
    let mut describing = Engines::new();
    for &name in engines {
        describing = describing.with(Arc::new(Describing { name }));
    }
    let options = options.clone();
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                // The walk's "started" and "succeeded" are not events of a run: keep them out of the log.
                let _quiet = tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .start_paused(true)
                    .build()
                    .expect("a current-thread runtime starts");
                runtime.block_on(async move {
                    let observer = Arc::new(Starts::default());
                    let started = tokio::time::Instant::now();
                    *observer.origin.lock().expect("origin") = Some(started);
                    let cancel = CancellationToken::new();
                    executor::execute(plan, decisions, &describing, &options, observer.clone(), cancel).await;
                    let starts = observer.starts.lock().expect("starts");
                    let mut steps: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
                    for &(tick, task) in starts.iter() {
                        steps.entry(tick).or_default().push(task);
                    }
                    Walk {
                        steps: steps.into_values().collect(),
                        up_to_date: observer.up_to_date.lock().expect("fresh").clone(),
                    }
                })
            })
            .join()
            .expect("the dry run's walk does not panic")
    })
}

/// An engine that does nothing for one tick.
struct Describing {
    name: &'static str,
}

#[async_trait]
impl Engine for Describing {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn run(&self, _task: &PlannedTask, _cx: TaskContext) -> Result<TaskOutput, TaskError> {
        tokio::time::sleep(TICK).await;
        Ok(TaskOutput::default())
    }
}

/// Notes when each task starts, in ticks of the paused clock.
#[derive(Default)]
struct Starts {
    origin: Mutex<Option<tokio::time::Instant>>,
    starts: Mutex<Vec<(u64, usize)>>,
    up_to_date: Mutex<Vec<usize>>,
}

impl Observer for Starts {
    fn attempt_started(&self, task: &PlannedTask, _attempt: u32) -> Arc<dyn TaskProgress> {
        let origin = self.origin.lock().expect("origin").expect("set before the walk");
        let tick = (tokio::time::Instant::now() - origin).as_secs();
        self.starts.lock().expect("starts").push((tick, task.index()));
        Arc::new(NoProgress)
    }

    fn attempt_failed(&self, _: &PlannedTask, _: u32, _: &TaskError, _: Option<Duration>) {}

    fn task_finished(&self, task: &PlannedTask, record: &TaskRecord) {
        if record.state == TaskState::UpToDate {
            self.up_to_date.lock().expect("fresh").push(task.index());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{PlanOptions, compile};
    use crate::diagnostic::SourceFile;
    use crate::vars::VarInputs;

    fn plan(text: &str) -> Arc<Plan> {
        let options = PlanOptions { engines: vec!["local".into()], ..PlanOptions::default() };
        let inputs = VarInputs { env: Some(BTreeMap::new()), ..Default::default() };
        Arc::new(compile(SourceFile::new("p.yaml", text), &inputs, &options).unwrap())
    }

    const FAN: &str = "name: fan\ntasks:\n  - {id: a, kind: transform, sql: SELECT 1 AS x}\n  - {id: b, kind: transform, sql: SELECT 1 AS x}\n  - {id: c, kind: transform, sql: SELECT 1 AS x}\n  - {id: d, kind: transform, depends_on: [a], sql: SELECT * FROM a}\n";

    #[test]
    fn the_walk_follows_jobs_and_starts_a_task_once_its_own_dependencies_are_done() {
        let engines = ["local"];
        let mut options = ExecutorOptions::new("dry");
        options.jobs = 2;
        let fan = plan(FAN);
        let decisions = Arc::new(RunDecisions::new(&fan));
        let walk = walk(fan.clone(), decisions.clone(), &engines, &options);
        // a and b first; then c (a slot is free) and d (a is done), not a "wave" of a, b, c.
        assert_eq!(walk.steps, vec![vec![0, 1], vec![2, 3]]);
        options.jobs = 4;
        assert_eq!(super::walk(fan, decisions, &engines, &options).steps, vec![vec![0, 1, 2], vec![3]]);
    }

    #[test]
    fn up_to_date_tasks_start_nothing() {
        let engines = ["local"];
        let mut options = ExecutorOptions::new("dry");
        options.jobs = 4;
        let fan = plan(FAN);
        let mut decisions = RunDecisions::new(&fan);
        decisions.fresh.insert(0, "up to date".into());
        let walk = walk(fan, Arc::new(decisions), &engines, &options);
        assert_eq!(walk.up_to_date, vec![0]);
        assert_eq!(walk.steps, vec![vec![1, 2, 3]]);
    }
}
