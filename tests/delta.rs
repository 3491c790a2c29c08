//! Delta Lake tables (`format: delta`): one commit per load, read by readers we did not write
//! (the Python `deltalake` package and Polars' `read_delta`), never a mix of two versions, never
//! a commit to another tool's table, and a schema that only breaks on purpose.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::support::*;

/// What the Python `deltalake` package and Polars see of the Delta table at `dir`.
fn py_delta(dir: &Path) -> Value {
    let script = r#"
import json, sys
import polars as pl
from deltalake import DeltaTable
t = DeltaTable(sys.argv[1])
arrow = t.to_pyarrow_table()
print(json.dumps({
    "version": t.version(),
    "rows": arrow.num_rows,
    "columns": sorted(arrow.column_names),
    "partition_by": t.metadata().partition_columns,
    "history": [h.get("operation") for h in t.history()],
    "polars_rows": pl.read_delta(sys.argv[1]).height,
}), flush=True)
import os
os._exit(0)
"#;
    let out = Command::new("python3").args(["-c", script]).arg(dir).output().unwrap();
    assert!(out.status.success(), "deltalake cannot read {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A one-table lake: events from `in/` (k, v, w), a transform with `sql`, a Delta load by `k`.
fn lake(dir: &Path, sql: &str, load_extra: &str) -> PathBuf {
    let input = dir.join("in");
    fs::create_dir_all(&input).unwrap();
    if !input.join("events.json").exists() {
        write_events(&input, &[("a", 1), ("a", 2), ("b", 3)]);
    }
    pipeline(
        dir,
        "lake.yaml",
        &format!(
            r#"name: lake
vars: {{input: in, output: out}}
tasks:
  - {{id: events, kind: extract, path: "${{input}}", format: jsonl, schema: {{k: string, v: int, w: string}}}}
  - id: t
    kind: transform
    depends_on: [events]
    sql: "{sql}"
  - {{id: load_t, kind: load, depends_on: [t], table: t, path: "${{output}}/t", format: delta, partition_by: [k]{load_extra}}}
"#
        ),
    )
}

fn write_events(input: &Path, rows: &[(&str, i64)]) {
    let text: Vec<String> =
        rows.iter().map(|(k, v)| json!({"k": k, "v": v, "w": format!("w{v}")}).to_string()).collect();
    fs::write(input.join("events.json"), text.join("\n")).unwrap();
}

fn run_lake(dir: &Path, file: &Path, extra: &[&str]) -> Run {
    let mut cmd = dagrun();
    cmd.current_dir(dir).arg(file).args(extra);
    Run::from(cmd.output().unwrap())
}

#[test]
fn sparkify_publishes_delta_tables_equal_to_the_parquet_convention() {
    if !runtimes(&[Runtime::DeltaLake]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let delta = tmp.path().join("delta");
    let parquet = tmp.path().join("parquet");
    run_sparkify(&sample(), &delta, &["-q"]).expect(0);
    run_sparkify(&sample(), &parquet, &["-q", "--set", "format=parquet"]).expect(0);
    for (table, rows, partition_by) in [
        ("songplays", 6820, json!(["year", "month"])),
        ("users", 96, json!([])),
        ("songs", 71, json!(["year", "artist_id"])),
        ("artists", 69, json!([])),
        ("time", 6813, json!(["year", "month"])),
    ] {
        let seen = py_delta(&delta.join(table));
        assert_eq!(seen["version"], 0, "{table}: one commit");
        assert_eq!(seen["rows"], rows, "{table}");
        assert_eq!(seen["polars_rows"], rows, "{table}");
        assert_eq!(seen["partition_by"], partition_by, "{table}");
        assert_eq!(sorted_rows(&delta.join(table)), sorted_rows(&parquet.join(table)), "{table}: same content");
    }
    // The run record names each table's version: the lake as this run left it.
    let record: Value = serde_json::from_slice(&fs::read(delta.join("_dagrun/LATEST")).map_or_else(
        |_| panic!("no LATEST"),
        |id| fs::read(delta.join(format!("_dagrun/{}/run.json", String::from_utf8_lossy(&id).trim()))).unwrap(),
    ))
    .unwrap();
    assert_eq!(record["versions"], json!({"artists": 0, "songplays": 0, "songs": 0, "time": 0, "users": 0}));
}

#[test]
fn a_rerun_is_one_new_version_and_readers_never_see_two() {
    if !runtimes(&[Runtime::DeltaLake]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = lake(tmp.path(), "SELECT k, v FROM events", "");
    run_lake(tmp.path(), &file, &["-q"]).expect(0);
    let again = run_lake(tmp.path(), &file, &[]).expect(0);
    assert!(again.stdout.contains("up to date: nothing to do"), "{}", again.stdout);
    run_lake(tmp.path(), &file, &["-q", "--force"]).expect(0);
    let table = tmp.path().join("out/t");
    let seen = py_delta(&table);
    assert_eq!(seen["version"], 1);
    assert_eq!(seen["rows"], 3, "the new version replaced the old one in one commit");
    assert_eq!(seen["history"], json!(["WRITE", "CREATE TABLE"]));
    // The old version's files stay for the retention (7 days by default), so a reader of version
    // 0 can finish: a plain folder listing would see both, a Delta reader sees one.
    let data: Vec<String> = files(&table).into_iter().filter(|f| f.ends_with(".parquet")).collect();
    assert_eq!(data.len(), 4, "{data:?}");
    assert_eq!(read_table(&table).len(), 3);

    let history = run(&["history", table.to_str().unwrap()]).expect(0);
    let lines: Vec<&str> = history.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", history.stdout);
    assert!(lines[1].trim_start().starts_with('1') && lines[1].contains("WRITE"), "{}", history.stdout);
    assert!(lines[2].contains("CREATE TABLE") && lines[2].trim_end().ends_with('3'), "{}", history.stdout);
    let json = run(&["history", table.to_str().unwrap(), "--json", "-n", "1"]).expect(0);
    let versions: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(versions.as_array().unwrap().len(), 1);
    assert_eq!(versions[0]["version"], 1);
    assert_eq!(versions[0]["rows"], 3);
}

#[test]
fn files_past_their_retention_are_vacuumed_after_a_successful_run() {
    if !runtimes(&[Runtime::DeltaLake]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = lake(tmp.path(), "SELECT k, v FROM events", ", retention: 0s");
    run_lake(tmp.path(), &file, &["-q"]).expect(0);
    run_lake(tmp.path(), &file, &["-q", "--force"]).expect(0);
    let table = tmp.path().join("out/t");
    let data: Vec<String> = files(&table).into_iter().filter(|f| f.ends_with(".parquet")).collect();
    assert_eq!(data.len(), 2, "only the current version's files are left: {data:?}");
    let seen = py_delta(&table);
    assert_eq!(seen["rows"], 3);
    assert_eq!(seen["history"][0], "VACUUM END");
}

#[test]
fn a_failed_load_keeps_the_previous_version_and_removes_its_own_files() {
    if !runtimes(&[Runtime::DeltaLake]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = lake(tmp.path(), "SELECT k, v FROM events", "");
    run_lake(tmp.path(), &file, &["-q"]).expect(0);
    let table = tmp.path().join("out/t");
    let before = files(&table);

    // New data with a partition whose folder cannot be made: a file of the user's is in the way.
    write_events(&tmp.path().join("in"), &[("a", 1), ("c", 5), ("zz", 9)]);
    fs::write(table.join("k=zz"), "a user's file").unwrap();
    let failed = run_lake(tmp.path(), &file, &["-q"]).expect(1);
    assert_eq!(state(&failed.stdout, "load_t"), "failed", "{}", failed.stdout);

    let seen = py_delta(&table);
    assert_eq!((seen["version"].as_u64(), seen["rows"].as_u64()), (Some(0), Some(3)), "the previous version stands");
    let mut after = files(&table);
    after.retain(|f| f != "k=zz");
    assert_eq!(after, before, "every file of the failed load is gone at once");
    assert_eq!(fs::read_to_string(table.join("k=zz")).unwrap(), "a user's file");
}

#[test]
fn a_delta_table_another_tool_wrote_is_never_committed_to() {
    if !runtimes(&[Runtime::DeltaLake]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = lake(tmp.path(), "SELECT k, v FROM events", "");
    let table = tmp.path().join("out/t");
    let script = "import sys, pyarrow as pa; from deltalake import write_deltalake; \
                  write_deltalake(sys.argv[1], pa.table({'k': ['x'], 'v': [7]}))";
    let made = Command::new("python3").args(["-c", script]).arg(&table).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let before = files(&table);

    let run = run_lake(tmp.path(), &file, &["-q"]).expect(1);
    assert!(run.stdout.contains("a Delta table that dagrun did not create"), "{}", run.stdout);
    assert!(run.stdout.contains("Delta table out/t:"), "names the table: {}", run.stdout);
    assert_eq!(files(&table), before, "nothing was added to it, nothing was removed");
    assert_eq!(py_delta(&table)["rows"], 1);
}

#[test]
fn added_columns_evolve_the_schema_and_dropped_ones_need_allow_breaking_schema() {
    if !runtimes(&[Runtime::DeltaLake]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let table = tmp.path().join("out/t");
    let file = lake(tmp.path(), "SELECT k, v FROM events", "");
    run_lake(tmp.path(), &file, &["-q"]).expect(0);

    let file = lake(tmp.path(), "SELECT k, v, w FROM events", "");
    let evolved = run_lake(tmp.path(), &file, &[]).expect(0);
    assert!(evolved.stderr.contains("the table's schema evolved"), "{}", evolved.stderr);
    assert_eq!(py_delta(&table)["columns"], json!(["k", "v", "w"]));

    let file = lake(tmp.path(), "SELECT k, w FROM events", "");
    let refused = run_lake(tmp.path(), &file, &["-q"]).expect(1);
    assert!(refused.stdout.contains("column `v` would be dropped"), "{}", refused.stdout);
    assert!(refused.stdout.contains("--allow-breaking-schema"), "{}", refused.stdout);
    assert_eq!(py_delta(&table)["version"], 1, "nothing was committed");

    run_lake(tmp.path(), &file, &["-q", "--allow-breaking-schema"]).expect(0);
    let seen = py_delta(&table);
    assert_eq!((seen["version"].clone(), seen["columns"].clone()), (json!(2), json!(["k", "w"])));
}

#[test]
fn a_table_in_the_parquet_convention_becomes_a_delta_table() {
    if !runtimes(&[Runtime::DeltaLake]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lake");
    run_sparkify(&sample(), &out, &["-q", "--set", "format=parquet"]).expect(0);
    let parquet = sorted_rows(&out.join("users"));
    run_sparkify(&sample(), &out, &["-q"]).expect(0);
    let left = files(&out.join("users"));
    assert!(!left.iter().any(|f| f == "_manifest.json" || f == "_SUCCESS" || f == "part-00000.parquet"), "{left:?}");
    assert_eq!(sorted_rows(&out.join("users")), parquet);
}

#[test]
fn a_delta_load_never_replaces_a_folder_of_files_dagrun_did_not_write() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lake");
    fs::create_dir_all(out.join("users/notes")).unwrap();
    fs::write(out.join("users/notes/keep.txt"), "keep me").unwrap();
    let run = run_sparkify(&sample(), &out, &["-q"]).expect(1);
    assert_eq!(state(&run.stdout, "load_users"), "failed");
    assert!(run.stdout.contains("refusing to replace"), "{}", run.stdout);
    assert_eq!(files(&out.join("users")), vec!["notes/keep.txt"]);
}

/// Rows of each Sparkify table at its current version, as the Python `deltalake` package reads it.
fn lake_rows(lake: &Path) -> Value {
    let script = r#"
import json, os, sys
from deltalake import DeltaTable
out = {}
for t in ["songplays", "users", "songs", "artists", "time"]:
    p = os.path.join(sys.argv[1], t)
    out[t] = DeltaTable(p).to_pyarrow_table().num_rows if os.path.isdir(os.path.join(p, "_delta_log")) else None
print(json.dumps(out), flush=True)
# deltalake's runtime threads can abort the interpreter's exit ("terminate called without an
# active exception"): leave at once, the answer is out.
os._exit(0)
"#;
    let out = Command::new("python3").args(["-c", script]).arg(lake).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_run_killed_at_any_moment_leaves_every_table_readable_and_the_next_run_converges() {
    if !runtimes(&[Runtime::DeltaLake]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    run(&["generate", "--out", input.to_str().unwrap(), "--songs", "3000", "--events", "30000"]).expect(0);
    let lake = tmp.path().join("lake");
    let args = |force: bool| {
        let mut a = vec![
            sparkify().display().to_string(),
            "--set".into(),
            format!("input={}", input.display()),
            "--set".into(),
            format!("output={}", lake.display()),
            "-q".into(),
        ];
        if force {
            a.push("--force".into());
        }
        a
    };
    Run::from(dagrun().args(args(false)).output().unwrap()).expect(0);
    let expected = lake_rows(&lake);
    let start = std::time::Instant::now();
    Run::from(dagrun().args(args(true)).output().unwrap()).expect(0);
    let length = start.elapsed();

    // kill -9 at moments spread over a whole run: reading, transforming, writing, committing.
    for k in 1..=8 {
        let mut child = dagrun().args(args(true)).stdout(std::process::Stdio::null()).spawn().unwrap();
        std::thread::sleep(length.mul_f64(f64::from(k) / 9.0));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            lake_rows(&lake),
            expected,
            "after kill {k} of 8 ({:?} into {length:?})",
            length.mul_f64(f64::from(k) / 9.0)
        );
        // The lease a killed run leaves is taken over at once: its process is gone.
    }
    // The next run converges: the same tables, and nothing of the killed runs is left on disk
    // (every data file belongs to a version the log still keeps).
    Run::from(dagrun().args(args(false)).output().unwrap()).expect(0);
    assert_eq!(lake_rows(&lake), expected);
    for table in TABLES {
        let dir = lake.join(table);
        let mut runs = std::collections::BTreeSet::new();
        for entry in fs::read_dir(dir.join("_delta_log")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                for line in fs::read_to_string(&path).unwrap().lines() {
                    let action: Value = serde_json::from_str(line).unwrap();
                    if let Some(run) = action["commitInfo"]["dagrun"]["run_id"].as_str() {
                        runs.insert(run.to_string());
                    }
                }
            }
        }
        for file in files(&dir).into_iter().filter(|f| f.ends_with(".parquet")) {
            assert!(runs.iter().any(|r| file.contains(r.as_str())), "{table}/{file} belongs to no commit: {runs:?}");
        }
    }
}

#[test]
fn a_corrupt_delta_log_fails_the_load_naming_the_table_and_is_never_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let file = lake(tmp.path(), "SELECT k, v FROM events", "");
    run_lake(tmp.path(), &file, &["-q"]).expect(0);
    let log = tmp.path().join("out/t/_delta_log/00000000000000000001.json");
    fs::write(&log, "{\"add\": not json").unwrap();
    let before = files(&tmp.path().join("out/t"));

    let run = run_lake(tmp.path(), &file, &["-q", "--force"]).expect(1);
    assert_eq!(state(&run.stdout, "load_t"), "failed", "{}", run.stdout);
    assert!(run.stdout.contains("reading the Delta table out/t: its _delta_log is corrupt"), "{}", run.stdout);
    assert_eq!(fs::read_to_string(&log).unwrap(), "{\"add\": not json", "the log is left as it was");
    assert_eq!(files(&tmp.path().join("out/t")), before, "nothing was written beside it");
}
