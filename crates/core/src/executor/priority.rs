//! Which ready task starts first: the one with the longest work still ahead of it.
//!
//! With fewer job slots than ready tasks, declaration order can start a short branch while the
//! task that decides when the run ends waits for a slot (Sparkify's `check_songs` waited behind
//! two small transforms, and `load_songs`, 60% of the run, started 0.8 s late). Each task's
//! priority is its own expected duration plus the longest chain of expected durations below it
//! (critical-path scheduling, as `make` and Spark's DAG scheduler lack and Dask does). Expected
//! durations come from the last run's record; a task without one counts as the median of those
//! known. With no record at all, every task ranks the same: a count of tasks says little about
//! their cost (Sparkify's longest chain by count is its cheapest branch).
//!
//! Among equal ranks, checks and loads go before transforms and extracts ("drain before you
//! fill", as Dask orders graphs to keep memory low): they consume tables already in memory, so
//! their inputs can be dropped sooner, a failing check stops its branch before more work is
//! spent on it, and a load publishes sooner. Then declaration order.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::plan::Plan;
use crate::spec::TaskKind;

/// The order of ready tasks: sort keys, the smallest starts first.
pub(crate) fn order_keys(
    plan: &Plan,
    expected: &BTreeMap<usize, Duration>,
) -> Vec<(std::cmp::Reverse<u64>, u8, usize)> {
    let rank = priorities(plan, expected);
    plan.tasks
        .iter()
        .enumerate()
        .map(|(i, task)| {
            let fills = match task.kind() {
                TaskKind::QualityCheck | TaskKind::Load => 0,
                TaskKind::Extract | TaskKind::Transform => 1,
            };
            (std::cmp::Reverse(rank[i]), fills, i)
        })
        .collect()
}

/// Priority of each task (higher starts first), in milliseconds of expected remaining work.
pub(crate) fn priorities(plan: &Plan, expected: &BTreeMap<usize, Duration>) -> Vec<u64> {
    let n = plan.tasks.len();
    if expected.is_empty() {
        return vec![0; n];
    }
    let mut known: Vec<u64> = expected.values().map(|d| d.as_millis() as u64).collect();
    known.sort_unstable();
    let fallback = known.get(known.len() / 2).copied().unwrap_or(1_000).max(1);
    let mut rank = vec![0u64; n];
    // Dependents come after their dependencies in topological order: walk it backwards.
    for &i in plan.topological_order().iter().rev() {
        let own = expected.get(&i).map_or(fallback, |d| d.as_millis() as u64).max(1);
        let below = plan.dependents(i).iter().map(|&d| rank[d]).max().unwrap_or(0);
        rank[i] = own + below;
    }
    rank
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{PlanOptions, compile};
    use crate::diagnostic::SourceFile;
    use crate::vars::VarInputs;

    fn plan(yaml: &str) -> Plan {
        let inputs = VarInputs { env: Some(BTreeMap::new()), ..Default::default() };
        compile(SourceFile::new("p.yaml", yaml), &inputs, &PlanOptions::default()).unwrap_or_else(|e| panic!("{e}"))
    }

    const TWO_BRANCHES: &str = r#"
name: p
tasks:
  - {id: a, kind: transform, sql: "SELECT 1 AS x"}
  - {id: short, kind: transform, depends_on: [a], sql: "SELECT * FROM a"}
  - {id: b, kind: transform, sql: "SELECT 1 AS x"}
  - {id: long1, kind: transform, depends_on: [b], sql: "SELECT * FROM b"}
  - {id: long2, kind: transform, depends_on: [long1], sql: "SELECT * FROM long1"}
"#;

    #[test]
    fn without_a_record_every_task_ranks_the_same_and_declaration_order_decides() {
        let p = plan(TWO_BRANCHES);
        assert_eq!(priorities(&p, &BTreeMap::new()), vec![0; 5]);
    }

    #[test]
    fn among_equals_checks_and_loads_drain_before_transforms_fill() {
        let p = plan(
            r#"
name: p
tasks:
  - {id: a, kind: transform, sql: "SELECT 1 AS x"}
  - {id: b, kind: transform, depends_on: [a], sql: "SELECT * FROM a"}
  - {id: check_a, kind: quality_check, depends_on: [a], table: a, checks: [{row_count: {min: 1}}]}
"#,
        );
        let keys = order_keys(&p, &BTreeMap::new());
        let idx = |id: &str| p.task(id).unwrap().index();
        assert!(keys[idx("check_a")] < keys[idx("b")]);
    }

    #[test]
    fn a_task_missing_from_the_record_counts_as_the_median() {
        let p = plan(TWO_BRANCHES);
        let idx = |id: &str| p.task(id).unwrap().index();
        let expected = BTreeMap::from([(idx("short"), Duration::from_secs(4)), (idx("long2"), Duration::from_secs(2))]);
        let rank = priorities(&p, &expected);
        // The median of 2 s and 4 s is taken at the upper middle: 4 s.
        assert_eq!(rank[idx("a")], 8_000);
        assert_eq!(rank[idx("b")], 4_000 + 4_000 + 2_000);
    }

    #[test]
    fn the_last_runs_durations_decide_the_critical_path() {
        let p = plan(TWO_BRANCHES);
        let idx = |id: &str| p.task(id).unwrap().index();
        let secs = |s: u64| Duration::from_secs(s);
        let expected = BTreeMap::from([
            (idx("a"), secs(1)),
            (idx("short"), secs(30)),
            (idx("b"), secs(1)),
            (idx("long1"), secs(2)),
            (idx("long2"), secs(2)),
        ]);
        let rank = priorities(&p, &expected);
        assert_eq!(rank[idx("a")], 31_000);
        assert_eq!(rank[idx("b")], 5_000);
    }
}
