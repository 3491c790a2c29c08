use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::compile::compile;
use crate::spec::TableFormat;

const GOOD: &str = r#"name: demo
description: A small pipeline.
vars:
  input: data
  output: out
defaults:
  timeout: 10m
  retry: {max_attempts: 2, initial_delay: 1s}
tasks:
  - id: events
    kind: extract
    path: ${input}/log_data
    glob: "*/*/*.json"
    format: jsonl
    schema:
      ts: int
      user: {type: string, from: userId}
  - id: users
    kind: transform
    depends_on: [events]
    sql: |
      SELECT DISTINCT user FROM events
  - id: check_users
    kind: quality_check
    depends_on: [users]
    table: users
    checks:
      - not_null: user
      - unique: user
  - id: load_users
    kind: load
    depends_on: [check_users]
    table: users
    path: ${output}/users
    retry: {max_attempts: 5}
"#;

fn inputs() -> VarInputs {
    VarInputs { env: Some(BTreeMap::new()), ..Default::default() }
}

fn load(text: &str) -> Result<Plan, PlanError> {
    compile(SourceFile::new("p.yaml", text), &inputs(), &PlanOptions::default())
}

/// `line:col message (hint)` for each diagnostic, in report order.
fn problems(text: &str) -> Vec<String> {
    match load(text) {
        Ok(_) => Vec::new(),
        Err(PlanError::Invalid(d)) => d
            .items
            .iter()
            .map(|d| {
                let hint = d.hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default();
                format!("{}:{} {}{hint}", d.pos.line, d.pos.col, d.message)
            })
            .collect(),
        Err(other) => vec![other.to_string()],
    }
}

#[test]
fn a_valid_pipeline_becomes_a_plan_with_defaults_and_overrides_applied() {
    let plan = load(GOOD).unwrap();
    assert_eq!(plan.tasks.len(), 4);
    let load_users = plan.task("load_users").unwrap();
    assert_eq!(load_users.retry.max_attempts, 5);
    assert_eq!(load_users.retry.initial_delay, Duration::from_secs(1));
    assert_eq!(load_users.timeout, Duration::from_secs(600));
    assert_eq!(load_users.engine, "local");
    let Action::Extract(e) = &plan.task("events").unwrap().action else { panic!("extract") };
    assert_eq!(e.path, "data/log_data");
    assert_eq!(e.schema[1].from, "userId");
    let Action::Transform(t) = &plan.task("users").unwrap().action else { panic!("transform") };
    assert_eq!(t.tables, vec!["events"]);
    assert_eq!(plan.waves(), vec![vec![0], vec![1], vec![2], vec![3]]);
    assert!(plan.warnings.is_empty());
}

#[test]
fn set_overrides_reach_every_path() {
    let inputs = VarInputs { overrides: vec![("output".into(), "/lake".into())], ..inputs() };
    let plan = compile(SourceFile::new("p.yaml", GOOD), &inputs, &PlanOptions::default()).unwrap();
    let Action::Load(l) = &plan.task("load_users").unwrap().action else { panic!("load") };
    assert_eq!(l.path, "/lake/users");
}

#[test]
fn every_problem_is_reported_at_once_with_its_position() {
    let text = GOOD
        .replace("depends_on: [events]", "depends_on: [event]")
        .replace("kind: quality_check", "kind: quality_chek")
        .replace("    retry: {max_attempts: 5}", "    retry: {max_attempts: 0}\n    timeout: 5x")
        .replace("  output: out", "  output: out\n  unused: ${nope}")
        .replace("      ts: int", "      ts: integr");
    assert_eq!(
        problems(&text),
        vec![
            "6:11 unknown variable `nope` (declare it under `vars:`; known: input, output, unused, pipeline_dir)",
            "17:11 unknown column type `integr` (did you mean `int`?)",
            "21:18 unknown dependency `event` of task `users` (did you mean `events`?)",
            "25:11 unknown task kind `quality_chek` (did you mean `quality_check`?)",
            "36:27 max_attempts must be at least 1 (1 means no retries)",
            "37:14 invalid duration `5x`: expected e.g. 250ms, 30s, 5m, 1h30m or 2d",
        ]
    );
}

#[test]
fn unknown_keys_anywhere_get_did_you_mean() {
    let text = GOOD
        .replace("description: A small pipeline.", "descripton: A small pipeline.")
        .replace("  timeout: 10m", "  timout: 10m")
        .replace("{max_attempts: 2, initial_delay: 1s}", "{max_attempts: 2, inital_delay: 1s}")
        .replace("    depends_on: [users]", "    depend_on: [users]");
    assert_eq!(
        problems(&text),
        vec![
            "2:1 unknown key `descripton` in the pipeline (did you mean `description`?)",
            "7:3 unknown key `timout` in defaults (did you mean `timeout`?)",
            "8:28 unknown key `inital_delay` in retry settings (did you mean `initial_delay`?)",
            "25:5 unknown key `depend_on` in task `check_users` (did you mean `depends_on`?)",
            // Consequences of the typo, reported too: nothing ties the check and the load to `users`.
            "26:12 task `check_users` reads table `users` but does not depend on task `users` (add `users` to its depends_on)",
            "33:12 task `load_users` reads table `users` but does not depend on task `users` (add `users` to its depends_on)",
        ]
    );
}

#[test]
fn cycles_name_the_whole_chain() {
    let text = GOOD.replace("depends_on: [events]", "depends_on: [events, load_users]");
    assert_eq!(
        problems(&text),
        vec![
            "25:18 dependency cycle: users -> check_users -> load_users -> users (a task cannot depend, directly or not, on its own result)"
        ]
    );
}

#[test]
fn duplicate_ids_and_shared_outputs_are_rejected() {
    let text = format!(
        "{GOOD}  - id: load_users\n    kind: load\n    depends_on: [check_users]\n    table: users\n    path: ${{output}}/users/\n"
    );
    assert_eq!(
        problems(&text),
        vec![
            "36:9 duplicate task id `load_users` (first declared on line 30)",
            "40:11 load `load_users` writes out/users, the same folder as the output of load `load_users` (every output needs a folder of its own, apart from every other output)",
        ]
    );
}

#[test]
fn nested_output_folders_are_rejected() {
    let text = format!(
        "{GOOD}  - id: load_all\n    kind: load\n    depends_on: [check_users]\n    table: users\n    path: ${{output}}\n"
    );
    assert_eq!(
        problems(&text),
        vec![
            "40:11 load `load_all` writes out, which contains the output of load `load_users` (out/users) (every output needs a folder of its own, apart from every other output)",
            "40:11 load `load_all` writes out, which contains the runs folder (by default `${output}/_dagrun`) (out/_dagrun) (every output needs a folder of its own, apart from every other output)",
        ]
    );
}

#[test]
fn sql_problems_are_located_inside_the_block() {
    let text = GOOD.replace("SELECT DISTINCT user FROM events", "SELECT DISTINCT user FROM evnts");
    assert_eq!(problems(&text), vec!["22:33 task `users` reads unknown table `evnts` (did you mean `events`?)"]);
    let text = GOOD.replace("SELECT DISTINCT user FROM events", "SELECT DISTINCT user FORM events");
    let found = problems(&text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("22:33 SQL of task `users` does not parse: Expected: end of statement, found: events"),
        "{found:?}"
    );
}

#[test]
fn reading_a_table_without_depending_on_it_is_an_error() {
    let text = GOOD.replace(
        "    depends_on: [check_users]\n    table: users\n    path",
        "    depends_on: [events]\n    table: users\n    path",
    );
    let found = problems(&text);
    assert_eq!(
        found,
        vec![
            "30:9 task `load_users` publishes `users` without waiting for its checks in `check_users` (add `check_users` to its depends_on)",
            "33:12 task `load_users` reads table `users` but does not depend on task `users` (add `users` to its depends_on)",
        ]
    );
}

#[test]
fn publishing_without_waiting_for_checks_is_a_warning() {
    let text = GOOD.replace(
        "    depends_on: [check_users]\n    table: users\n    path",
        "    depends_on: [users]\n    table: users\n    path",
    );
    let plan = load(&text).unwrap();
    assert_eq!(plan.warnings.len(), 1);
    assert_eq!(
        plan.warnings[0].message,
        "task `load_users` publishes `users` without waiting for its checks in `check_users`"
    );
}

#[test]
fn unknown_engine_and_unknown_set_are_reported() {
    let text = GOOD.replace("  timeout: 10m", "  timeout: 10m\n  engine: locl");
    assert_eq!(problems(&text), vec!["8:11 unknown engine `locl` (did you mean `local`?)"]);
    let inputs = VarInputs { overrides: vec![("ouput".into(), "x".into())], ..inputs() };
    let err = compile(SourceFile::new("p.yaml", GOOD), &inputs, &PlanOptions::default()).unwrap_err();
    assert_eq!(err.to_string(), "--set ouput: the pipeline declares no variable `ouput`; did you mean `output`?");
}

#[test]
fn env_variables_need_a_value_or_a_default() {
    let text = GOOD.replace("  input: data", "  input: ${env:SPARKIFY_IN}");
    assert_eq!(
        problems(&text),
        vec![
            "4:10 environment variable `SPARKIFY_IN` is not set (set it, or give a default: `${env:SPARKIFY_IN:-value}`)"
        ]
    );
    let text = GOOD.replace("  input: data", "  input: ${env:SPARKIFY_IN:-fallback}");
    let Action::Extract(e) = &load(&text).unwrap().task("events").unwrap().action.clone() else { panic!() };
    assert_eq!(e.path, "fallback/log_data");
}

#[test]
fn invalid_yaml_is_one_located_error() {
    let found = problems("name: x\ntasks:\n  - id: a\n   kind: extract\n");
    assert_eq!(found.len(), 1);
    assert!(found[0].starts_with("4:"), "{found:?}");
    assert!(found[0].contains("invalid YAML"), "{found:?}");
}

#[test]
fn empty_files_and_missing_tasks_are_explained() {
    assert_eq!(problems(""), vec!["1:1 expected a mapping with `name` and `tasks`, found nothing (null)"]);
    assert_eq!(problems("name: x\n"), vec!["1:1 missing required key `tasks` in the pipeline"]);
    assert_eq!(problems("name: x\ntasks: []\n"), vec!["2:8 the pipeline has no tasks"]);
}

#[test]
fn only_keeps_the_task_and_its_upstream() {
    let plan = load(GOOD).unwrap();
    let only = plan.select(&["check_users".into()]).unwrap();
    let ids: Vec<_> = only.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, vec!["events", "users", "check_users"]);
    assert_eq!(only.tasks[2].deps, vec![1]);
    assert_eq!(
        plan.select(&["chek_users".into()]).unwrap_err(),
        "--only chek_users: no task `chek_users` in demo; did you mean `check_users`?"
    );
}

#[test]
fn a_check_on_no_columns_is_an_error_not_a_crash_at_run_time() {
    let text = GOOD.replace("      - unique: user", "      - unique: []\n      - not_null: []");
    assert_eq!(
        problems(&text),
        vec![
            "29:9 unique needs at least one column (a list means the combination is unique)",
            "30:9 not_null needs at least one column"
        ]
    );
}

#[test]
fn delta_loads_take_a_retention_and_only_delta_loads_do() {
    let delta = GOOD.replace("    retry: {max_attempts: 5}\n", "    format: delta\n    retention: 2d\n");
    let plan = load(&delta).unwrap();
    let Action::Load(l) = &plan.task("load_users").unwrap().action else { panic!("a load") };
    assert_eq!((l.format, l.retention), (TableFormat::Delta, Duration::from_secs(2 * 86400)));

    let parquet = GOOD.replace("    retry: {max_attempts: 5}\n", "    retention: 2d\n");
    let found = problems(&parquet);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].ends_with(" `retention` applies to `format: delta` tables only"), "{found:?}");
    assert!(found[0].starts_with("35:16 "), "located at the value: {found:?}");
    let unknown = GOOD.replace("    retry: {max_attempts: 5}\n", "    format: iceberg\n");
    assert!(problems(&unknown)[0].contains("iceberg"), "{:?}", problems(&unknown));
}

#[test]
fn a_task_that_fails_to_decode_still_has_its_dependencies_and_cycles_checked() {
    // `users` has a typo (`sqll`), an unknown dependency and closes a cycle: one round of
    // validation reports all three.
    let text = GOOD.replace("    depends_on: [events]\n", "    depends_on: [events, evnts, load_users]\n").replace(
        "    sql: |\n      SELECT DISTINCT user FROM events\n",
        "    sqll: SELECT DISTINCT user FROM events\n",
    );
    let found = problems(&text);
    let has = |needle: &str| found.iter().any(|p| p.contains(needle));
    assert!(has("unknown key `sqll`"), "{found:#?}");
    assert!(has("unknown dependency `evnts` of task `users` (did you mean `events`?)"), "{found:#?}");
    assert!(
        found
            .iter()
            .any(|p| p.contains("dependency cycle:")
                && ["users", "check_users", "load_users"].iter().all(|t| p.contains(t))),
        "{found:#?}"
    );
}
