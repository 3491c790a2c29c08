//! `engine: auto` at run time: lists the inputs of the extracts each auto task depends on (before
//! any work), measures this machine, asks [`dagrun_core::auto::choose`] and writes the choice into
//! the run's decisions. A stage that fits nowhere (too big here, EMR unavailable or forbidden) stops the run
//! before it starts.

use std::collections::BTreeMap;

use dagrun_core::auto::{AUTO, AutoChoice, InputSize, Machine, choose};
use dagrun_core::decisions::RunDecisions;
use dagrun_core::emr::DEFAULT_AUTO_MAX_LOCAL;
use dagrun_core::path::{compile_glob, is_s3};
use dagrun_core::plan::{Action, Plan};
use dagrun_core::storage::Storages;

use crate::exit::Exit;

/// The memory this process may use: the cgroup's limit (v2, then v1) or the physical memory.
fn memory() -> u64 {
    let read = |p: &str| std::fs::read_to_string(p).ok().and_then(|t| t.trim().parse::<u64>().ok());
    let physical = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(4 << 30, |kb| kb << 10);
    let limit = read("/sys/fs/cgroup/memory.max").or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"));
    limit.map_or(physical, |l| l.min(physical))
}

/// This machine as the model sees it.
pub(crate) fn machine() -> Machine {
    Machine { memory: memory(), cores: std::thread::available_parallelism().map_or(1, |n| n.get()) }
}

/// Decides the engine of every `engine: auto` task of `plan` in `decisions`; returns the choices.
pub(crate) async fn resolve(
    plan: &Plan,
    decisions: &mut RunDecisions,
    storages: &Storages,
) -> Result<Vec<AutoChoice>, Exit> {
    let auto: Vec<usize> = plan.tasks().iter().filter(|t| t.engine() == AUTO).map(|t| t.index()).collect();
    if auto.is_empty() {
        return Ok(Vec::new());
    }
    // Each extract's listing, once.
    let mut sizes: BTreeMap<usize, InputSize> = BTreeMap::new();
    for task in plan.tasks() {
        let Action::Extract(e) = task.action() else { continue };
        let storage = storages.for_path(&e.path).map_err(|err| Exit::failed(format!("error: {err}")))?;
        let glob = compile_glob(&e.glob).map_err(|err| Exit::failed(format!("error: {err}")))?;
        let listed = storage.list(&e.path, &glob).await.map_err(|err| {
            Exit::failed(format!("error: listing the input of `{}` to choose its engine: {err}", task.id()))
        })?;
        let files = listed.len() as u64;
        sizes.insert(
            task.index(),
            InputSize {
                bytes: listed.iter().map(|m| m.size).sum(),
                files,
                s3_files: if is_s3(&e.path) { files } else { 0 },
            },
        );
    }
    let machine = machine();
    let max_local = plan.emr().map_or(DEFAULT_AUTO_MAX_LOCAL, |e| e.auto_max_local);
    let mut choices = Vec::new();
    for index in auto {
        let task = &plan.tasks()[index];
        // The extracts upstream of the task (itself, if it is one).
        let mut input = InputSize::default();
        let mut stack = vec![index];
        let mut seen = std::collections::BTreeSet::new();
        while let Some(i) = stack.pop() {
            if !seen.insert(i) {
                continue;
            }
            if let Some(size) = sizes.get(&i) {
                input.add(*size);
            }
            stack.extend(plan.tasks()[i].deps().iter().copied());
        }
        let emr = match decisions.emr_unavailable(plan, task.id()) {
            Some(why) => Err(why),
            None if plan.emr().is_none() => Err("the pipeline has no engines.emr section".to_string()),
            None => Ok(()),
        };
        let choice = choose(task.id(), input, machine, max_local, emr);
        if choice.reason.contains("EMR cannot run it") {
            return Err(Exit::config(format!(
                "error: task `{}` (engine: auto) {}\n  = give it engine: local to run it here anyway, or make EMR available",
                task.id(),
                choice.reason
            )));
        }
        choices.push(choice);
    }
    for c in &choices {
        if let Some(task) = plan.task(&c.task) {
            decisions.set_engine(task.index(), &c.engine);
        }
    }
    Ok(choices)
}

/// Lines for the dry run and the summary.
pub(crate) fn describe(choices: &[AutoChoice]) -> String {
    let mut out = String::new();
    for c in choices {
        out.push_str(&format!("engine: auto chose {} for {}: {}\n", c.engine, c.task, c.reason));
    }
    out
}
