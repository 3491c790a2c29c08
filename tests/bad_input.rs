//! Bad input gets a located error or a counted quarantine record: never a panic, never silent loss.

use std::fs;

use crate::support::*;

#[test]
fn unreadable_records_are_quarantined_with_file_line_and_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let input = sample_copy(tmp.path());
    let good = fs::read_to_string(input.join("log_data/2018/11/2018-11-01-events.json")).unwrap();
    let first = good.lines().next().unwrap();
    let bad = format!(
        "{first}\n{{\"ts\": 1541105830796, \"userId\": \"39\",\n{}\n",
        first.replace("\"ts\":1541105830796", "\"ts\":\"soon\"")
    );
    fs::write(input.join("log_data/2018/11/2018-11-01-bad.json"), bad).unwrap();
    let out = tmp.path().join("lake");
    let run = run_sparkify(&input, &out, &["-q"]).expect(0);
    assert_eq!(state(&run.stdout, "staging_events"), "succeeded");
    let quarantine = out.join("_dagrun");
    let found: Vec<String> = files(&quarantine).into_iter().filter(|f| f.contains("/quarantine/")).collect();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].ends_with("/quarantine/staging_events.jsonl"), "{found:?}");
    let records: Vec<serde_json::Value> = fs::read_to_string(quarantine.join(&found[0]))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2);
    assert!(records[0]["file"].as_str().unwrap().ends_with("2018-11-01-bad.json"));
    assert_eq!(records[0]["line"], 2);
    assert!(records[0]["reason"].as_str().unwrap().starts_with("invalid JSON"), "{}", records[0]);
    assert_eq!(records[1]["line"], 3);
    assert_eq!(records[1]["reason"], "column `ts`: expected a whole number, found \"soon\"");
    assert!(run.stdout.contains("2 records quarantined in"), "{}", run.stdout);
    // The good line of that file still counts.
    assert_eq!(read_table(&out.join("songplays")).len(), 6820);
}

const STRICT: &str = r#"name: strict
vars: {input: in, output: out}
tasks:
  - id: events
    kind: extract
    path: ${input}
    format: jsonl
    schema: {ts: int, page: string}
  - id: counted
    kind: transform
    depends_on: [events]
    sql: SELECT page, COUNT(*) AS n FROM events GROUP BY page
  - id: check
    kind: quality_check
    depends_on: [counted]
    table: counted
    checks:
      - row_count: {min: 1}
  - id: load
    kind: load
    depends_on: [check]
    table: counted
    path: ${output}/counted
"#;

#[test]
fn more_bad_records_than_allowed_fail_the_extract() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(tmp.path(), "strict.yaml", STRICT);
    fs::create_dir_all(tmp.path().join("in")).unwrap();
    fs::write(tmp.path().join("in/a.json"), "{\"ts\": 1, \"page\": \"Home\"}\n[1, 2]\n{\"ts\": {}}").unwrap();
    let run = Run::from(dagrun().current_dir(tmp.path()).args([p.to_str().unwrap(), "-q"]).output().unwrap()).expect(1);
    assert!(run.stdout.contains("2 of 3 records quarantined in out/_dagrun/"), "{}", run.stdout);
    assert!(run.stdout.contains("more than max_bad_records (0)"), "{}", run.stdout);
    assert_eq!(state(&run.stdout, "events"), "failed");
    assert_eq!(state(&run.stdout, "load"), "skipped");
}

#[test]
fn empty_files_and_folders_are_normal_and_caught_by_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(tmp.path(), "strict.yaml", STRICT);
    fs::create_dir_all(tmp.path().join("in/empty_dir")).unwrap();
    fs::write(tmp.path().join("in/empty.json"), "").unwrap();
    fs::write(tmp.path().join("in/blank.json"), "\n\n").unwrap();
    let run = Run::from(dagrun().current_dir(tmp.path()).args([p.to_str().unwrap(), "-q"]).output().unwrap()).expect(1);
    assert_eq!(state(&run.stdout, "events"), "succeeded");
    assert!(run.stdout.contains("1 of 1 checks failed on `counted`: row_count(>= 1)"), "{}", run.stdout);
    assert!(run.stderr.contains("row_count(>= 1): 0 rows, expected at least 1"), "{}", run.stderr);
}

#[test]
fn a_missing_input_folder_is_a_clear_task_error() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nowhere");
    let run = run_sparkify(&missing, &tmp.path().join("lake"), &["-q"]).expect(1);
    let expected = format!("listing {}/song_data: no such file or folder", missing.display());
    assert!(run.stdout.contains(&expected), "{}", run.stdout);
    assert!(!tmp.path().join("lake/songs").exists());
}

#[test]
fn invalid_yaml_is_reported_with_its_position() {
    let tmp = tempfile::tempdir().unwrap();
    pipeline(tmp.path(), "bad.yaml", "name: x\ntasks:\n  - id: a\n    kind: [extract\n");
    let run = Run::from(dagrun().current_dir(tmp.path()).args(["validate", "bad.yaml"]).output().unwrap()).expect(2);
    assert!(run.stderr.starts_with("bad.yaml:"), "{}", run.stderr);
    assert!(run.stderr.contains("error: invalid YAML"), "{}", run.stderr);
}

#[test]
fn a_dependency_cycle_names_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let text = STRICT.replace("    depends_on: [events]\n", "    depends_on: [events, check]\n");
    pipeline(tmp.path(), "cycle.yaml", &text);
    let run = Run::from(dagrun().current_dir(tmp.path()).args(["validate", "cycle.yaml"]).output().unwrap()).expect(2);
    assert!(run.stderr.contains("error: dependency cycle: counted -> check -> counted"), "{}", run.stderr);
}

#[test]
fn a_pipeline_that_is_not_utf8_is_located_by_line_column_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("latin1.yaml"), b"name: x\ntasks:\n  - id: caf\xe9\n").unwrap();
    let run = Run::from(dagrun().current_dir(tmp.path()).args(["validate", "latin1.yaml"]).output().unwrap()).expect(2);
    assert!(
        run.stderr.starts_with(
            "latin1.yaml:3:12: error: the file is not UTF-8 text: byte 0xE9 at offset 26 starts no character"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn a_duplicate_key_is_named_without_the_yaml_librarys_options() {
    let tmp = tempfile::tempdir().unwrap();
    pipeline(tmp.path(), "dup.yaml", "name: a\ntasks: []\nname: b\n");
    let run = Run::from(dagrun().current_dir(tmp.path()).args(["validate", "dup.yaml"]).output().unwrap()).expect(2);
    assert!(
        run.stderr.starts_with("dup.yaml:3:1: error: duplicate key `name`: a key may appear only once"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("DuplicateKeyPolicy"), "{}", run.stderr);
}

const DRIFTING: &str = r#"name: drifting
vars: {input: in, output: out, policy: warn}
tasks:
  - id: events
    kind: extract
    path: ${input}
    format: jsonl
    schema:
      ts: int
      page: string
      user: {type: string, from: userId}
    max_bad_records: 5
    on_new_fields: ${policy}
    ignore_fields: [auth]
  - id: load
    kind: load
    depends_on: [events]
    table: events
    path: ${output}/events
"#;

/// A source that gained `device` (on two records, one nested), renamed `userId` to `user_id`,
/// and has one `ts` of the wrong type.
const DRIFTED_LINES: &str = "{\"ts\": 1, \"page\": \"Home\", \"auth\": \"in\", \"user_id\": \"7\"}\n\
    {\"ts\": 2, \"page\": \"Next\", \"device\": \"tv\", \"user_id\": \"7\"}\n\
    {\"ts\": \"late\", \"page\": \"Home\", \"user_id\": \"8\"}\n\
    {\"ts\": 4, \"page\": \"Home\", \"device\": {\"os\": \"x\"}, \"user_id\": \"9\"}";

fn drift_of(out: &std::path::Path, task: &str) -> serde_json::Value {
    let runs = out.join("_dagrun");
    let latest = fs::read_to_string(runs.join("LATEST")).unwrap();
    let record: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(runs.join(latest.trim()).join("run.json")).unwrap()).unwrap();
    let task = record["tasks"].as_array().unwrap().iter().find(|t| t["id"] == task).unwrap().clone();
    task["output"]["drift"].clone()
}

#[test]
fn new_source_fields_are_named_per_field_with_counts_and_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(tmp.path(), "drifting.yaml", DRIFTING);
    fs::create_dir_all(tmp.path().join("in")).unwrap();
    fs::write(tmp.path().join("in/a.json"), DRIFTED_LINES).unwrap();
    let report = tmp.path().join("report.html");
    let run = Run::from(
        dagrun().current_dir(tmp.path()).args([p.to_str().unwrap(), "--report", "report.html"]).output().unwrap(),
    )
    .expect(0);
    assert_eq!(state(&run.stdout, "load"), "succeeded");
    // One warning names each new field, its count and where it first appears, and the
    // declared field no record has.
    assert!(
        run.stderr.contains(
            "2 source fields not in the schema: `user_id` (4 of 4 records, first at in/a.json:1), \
             `device` (2 of 4 records, first at in/a.json:2)"
        ),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("declared but in none of the records (all null): `user`"), "{}", run.stderr);
    assert!(!run.stderr.contains("`auth`"), "ignored fields are not new: {}", run.stderr);
    // The summary's notes, the run record and the report carry it too.
    assert!(run.stdout.contains("source drift: 2 new fields not in the schema"), "{}", run.stdout);
    let drift = drift_of(&tmp.path().join("out"), "events");
    assert_eq!(
        drift["new_fields"],
        serde_json::json!([
            {"field": "user_id", "records": 4, "first": "in/a.json:1"},
            {"field": "device", "records": 2, "first": "in/a.json:2"}
        ])
    );
    assert_eq!(drift["mismatched"], serde_json::json!([{"field": "ts", "records": 1, "first": "in/a.json:3"}]));
    assert_eq!(drift["missing"], serde_json::json!([{"field": "user", "records": 4}]));
    let html = fs::read_to_string(report).unwrap();
    assert!(html.contains(r#"<section id="drift">"#) && html.contains("<code>device</code>"), "no drift section");
}

#[test]
fn on_new_fields_fail_stops_the_extract_before_anything_is_published() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(tmp.path(), "drifting.yaml", DRIFTING);
    fs::create_dir_all(tmp.path().join("in")).unwrap();
    fs::write(tmp.path().join("in/a.json"), DRIFTED_LINES).unwrap();
    let run = Run::from(
        dagrun().current_dir(tmp.path()).args([p.to_str().unwrap(), "-q", "--set", "policy=fail"]).output().unwrap(),
    )
    .expect(1);
    assert_eq!(state(&run.stdout, "events"), "failed");
    assert_eq!(state(&run.stdout, "load"), "skipped");
    assert!(run.stdout.contains("`device` (2 of 4 records, first at in/a.json:2)"), "{}", run.stdout);
    assert!(!tmp.path().join("out/events").exists());
    // With the default, nothing is said and nothing is counted but the type mismatch.
    let quiet = Run::from(
        dagrun().current_dir(tmp.path()).args([p.to_str().unwrap(), "--set", "policy=ignore"]).output().unwrap(),
    )
    .expect(0);
    assert!(!quiet.stderr.contains("not in the schema"), "{}", quiet.stderr);
    let drift = drift_of(&tmp.path().join("out"), "events");
    assert_eq!(drift, serde_json::json!({"mismatched": [{"field": "ts", "records": 1, "first": "in/a.json:3"}]}));
}

#[test]
fn a_field_both_loaded_and_ignored_is_a_validate_error() {
    let tmp = tempfile::tempdir().unwrap();
    let text = DRIFTING.replace("ignore_fields: [auth]", "ignore_fields: [auth, userId]");
    let p = pipeline(tmp.path(), "drifting.yaml", &text);
    let run = run(&["validate", p.to_str().unwrap()]).expect(2);
    assert!(
        run.stderr.contains("field `userId` is both loaded (column `user`) and in `ignore_fields`: keep one"),
        "{}",
        run.stderr
    );
}
