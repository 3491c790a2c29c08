//! Parity of the two engines: the EMR step program (`deploy/emr/dagrun_step.py`), run by real
//! Spark in local mode on the real Sparkify sample with the step specs `dagrun emr specs` writes
//! from `pipelines/sparkify.yaml`, publishes the same tables as the local Polars engine.

use crate::support::*;

const TABLES: [&str; 5] = ["songplays", "users", "songs", "artists", "time"];

/// Runs the step program on the specs `dagrun emr specs` wrote into `specs`, with real PySpark in
/// local mode.
fn spark_submit(specs: &std::path::Path) -> Run {
    let output = std::process::Command::new("python3")
        .arg(specs.join("dagrun_step.py"))
        .arg(specs.join("steps.json"))
        .env("PYSPARK_PYTHON", "python3")
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .output()
        .expect("python3 runs the step program (scripts/test.sh installs pyspark)");
    Run::from(output)
}

#[test]
fn the_spark_step_program_publishes_the_same_tables_as_the_local_engine() {
    if !runtimes(&[Runtime::Spark]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let polars_out = tmp.path().join("polars");
    run_sparkify(&sample(), &polars_out, &["-q"]).expect(0);

    let spark_out = tmp.path().join("spark");
    let specs = tmp.path().join("specs");
    let sparkify = sparkify();
    let written = run(&[
        "emr",
        "specs",
        sparkify.to_str().unwrap(),
        "--set",
        &format!("input={}", sample().display()),
        "--set",
        &format!("output={}", spark_out.display()),
        "--out",
        specs.to_str().unwrap(),
    ])
    .expect(0);
    assert!(written.stdout.contains("wrote 13 step specs"), "{}", written.stdout);

    let spark = spark_submit(&specs).expect(0);
    assert!(spark.stdout.contains("dagrun: load_songplays (load) done"), "{}", spark.stdout);

    for table in TABLES {
        let ours = sorted_rows(&polars_out.join(table));
        let theirs = sorted_rows(&spark_out.join(table));
        assert!(!ours.is_empty(), "{table} is empty");
        assert_eq!(ours.len(), theirs.len(), "{table}: row counts differ");
        for (a, b) in ours.iter().zip(&theirs) {
            assert_eq!(a, b, "{table}: first differing row");
        }
        // Same layout too: the same partition folders, a manifest and _SUCCESS.
        let folders = |dir: &std::path::Path| {
            let mut f: Vec<String> = files(dir)
                .into_iter()
                .filter(|p| p.ends_with(".parquet"))
                .map(|p| p.rsplit_once('/').map_or(String::new(), |(d, _)| d.to_string()))
                .collect();
            f.dedup();
            f
        };
        assert_eq!(folders(&polars_out.join(table)), folders(&spark_out.join(table)), "{table}: partition folders");
        assert!(spark_out.join(table).join("_manifest.json").exists());
        assert!(spark_out.join(table).join("_SUCCESS").exists());
    }
}

#[test]
fn globs_match_the_same_files_on_both_engines() {
    if !runtimes(&[Runtime::Spark]) {
        return;
    }
    let globs = [
        "**",
        "**/*.json",
        "*.json",
        "*/*.json",
        "log_data/**",
        "a/**/b",
        "{2018,2019}/*.json",
        "*/{a,b*}/*.json",
        "[0-9]*.json",
        "[!0-9]*.json",
        "[a-c]/x?.json",
        "file?.json",
        "\\*.json",
        "song_data/*/*/*/*.json",
    ];
    let paths = [
        "c.json",
        "a/c.json",
        "a/b/c.json",
        "log_data",
        "log_data/x/y",
        "a/b",
        "a/x/y/b",
        "2019/x.json",
        "2020/x.json",
        "x/a/y.json",
        "x/bz/y.json",
        "x/c/y.json",
        "1a.json",
        "za.json",
        "b/x1.json",
        "d/x1.json",
        "file1.json",
        "file/.json",
        "*.json",
        "song_data/A/B/C/TRA.json",
        "song_data/A/B/TRA.json",
    ];
    let script = format!(
        "import importlib.util, json, sys\n\
         spec = importlib.util.spec_from_file_location('dagrun_step', {:?})\n\
         step = importlib.util.module_from_spec(spec)\n\
         spec.loader.exec_module(step)\n\
         globs, paths = json.loads(sys.argv[1])\n\
         print(json.dumps([[bool(step.glob_regex(g).match(p)) for p in paths] for g in globs]))",
        repo().join("deploy/emr/dagrun_step.py").display().to_string()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script, &serde_json::json!([globs, paths]).to_string()])
        .output()
        .expect("python3 runs (scripts/test.sh installs pyspark)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let spark: Vec<Vec<bool>> = serde_json::from_slice(&out.stdout).unwrap();
    for (glob, on_spark) in globs.iter().zip(spark) {
        let matcher = dagrun_core::path::compile_glob(glob).unwrap();
        let local: Vec<bool> = paths.iter().map(|p| matcher.is_match(p)).collect();
        let differ: Vec<&str> =
            paths.iter().zip(local.iter().zip(&on_spark)).filter(|(_, (a, b))| a != b).map(|(p, _)| *p).collect();
        assert!(differ.is_empty(), "`{glob}` matches differently on Spark for {differ:?}");
    }
}

#[test]
fn the_spark_step_program_reports_source_drift_as_the_local_engine_does() {
    if !runtimes(&[Runtime::Spark]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(
        input.join("a.json"),
        "{\"ts\": 1, \"page\": \"Home\", \"auth\": \"in\"}\n\
         {\"ts\": 2, \"page\": \"Next\", \"device\": \"tv\"}\n\
         {\"ts\": \"late\", \"page\": \"Home\"}\n\
         {\"ts\": 4, \"page\": \"Home\", \"device\": {\"os\": \"x\"}}",
    )
    .unwrap();
    let extract = |id: &str, policy: &str| {
        format!(
            "  - id: {id}\n    kind: extract\n    path: {}\n    format: jsonl\n    \
             schema: {{ts: int, page: string}}\n    max_bad_records: 5\n    on_new_fields: {policy}\n    \
             ignore_fields: [auth]\n",
            input.display()
        )
    };
    let text = format!(
        // `emr specs` writes the step specs of any pipeline: local folders stand in for S3.
        "name: drift\nruns: {}\ntasks:\n{}{}",
        tmp.path().join("runs").display(),
        extract("a_warn", "warn"),
        extract("b_fail", "fail")
    );
    let p = pipeline(tmp.path(), "drift.yaml", &text);
    let specs = tmp.path().join("specs");
    run(&["emr", "specs", p.to_str().unwrap(), "--out", specs.to_str().unwrap()]).expect(0);
    let spark = spark_submit(&specs);
    assert_ne!(spark.code, 0, "on_new_fields: fail must fail its step: {}", spark.stdout);
    assert!(
        spark.stderr.contains("1 source field(s) not in the schema: `device` (2 records, first in "),
        "{}",
        spark.stderr
    );
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(specs.join("results/a_warn-1.json")).unwrap()).unwrap();
    let drift = &result["drift"];
    assert_eq!(drift["new_fields"][0]["field"], "device");
    assert_eq!(drift["new_fields"][0]["records"], 2);
    assert_eq!(drift["new_fields"].as_array().unwrap().len(), 1, "{drift}");
    assert_eq!(drift["mismatched"][0]["field"], "ts");
    assert_eq!(drift["mismatched"][0]["records"], 1);
    // The failed extract published nothing.
    assert!(!specs.join("tables/b_fail/_manifest.json").exists());
}

#[test]
fn concatenated_and_array_documents_give_the_same_rows_and_quarantine_on_both_engines() {
    if !runtimes(&[Runtime::Spark]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(input.join("x")).unwrap();
    let write = |name: &str, text: &str| std::fs::write(input.join(name), text).unwrap();
    // Two objects in one file (Spark's multiLine reader alone keeps only the first).
    write("x/two.json", "{\"song_id\": \"S1\", \"year\": 2001}{\"song_id\": \"S2\", \"year\": 0}\n");
    // An unparseable tail after a good object: one quarantined record.
    write("x/tail.json", "{\"song_id\": \"S3\", \"year\": 1}\n{\"song_id\": \"S4\", \"ye");
    // An array of objects, one of them with a wrong type.
    write("x/arr.json", "[{\"song_id\": \"S5\", \"year\": 5}, {\"song_id\": \"S6\", \"year\": \"x\"}]");
    write("one.json", "{\"song_id\": \"S7\", \"year\": 1e3}");
    let text = format!(
        "name: docs\nruns: {runs}\nvars: {{output: ~}}\ntasks:\n  - id: songs\n    kind: extract\n    path: {input}\n    \
         glob: \"**/*.json\"\n    format: json\n    max_bad_records: 10\n    schema: {{song_id: string, year: int}}\n  \
         - id: load_songs\n    kind: load\n    depends_on: [songs]\n    table: songs\n    path: ${{output}}/songs\n",
        runs = tmp.path().join("runs").display(),
        input = input.display()
    );
    let p = pipeline(tmp.path(), "docs.yaml", &text);
    let local_out = tmp.path().join("local");
    let local = run(&[p.to_str().unwrap(), "--set", &format!("output={}", local_out.display())]).expect(0);
    assert_eq!(state(&local.stdout, "songs"), "succeeded");
    let spark_out = tmp.path().join("spark");
    let specs = tmp.path().join("specs");
    let out = format!("output={}", spark_out.display());
    run(&["emr", "specs", p.to_str().unwrap(), "--set", &out, "--out", specs.to_str().unwrap()]).expect(0);
    let spark = spark_submit(&specs).expect(0);
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(specs.join("results/songs-1.json")).unwrap()).unwrap();
    assert_eq!(result["rows_in"], 7, "{result}");
    assert_eq!(result["rows_out"], 5, "{result}");
    assert_eq!(result["quarantined"], 2, "{result}");
    assert!(local.stdout.contains("2 records quarantined"), "{}", local.stdout);
    let rows = sorted_rows(&local_out.join("songs"));
    assert_eq!(rows.len(), 5);
    assert_eq!(rows, sorted_rows(&spark_out.join("songs")), "{}", spark.stdout);
}

#[test]
fn rows_far_from_their_files_day_are_quarantined_on_both_engines() {
    if !runtimes(&[Runtime::Spark]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(input.join("2018/11")).unwrap();
    let day = |d: i64| 1_541_030_400_000i64 + (d - 1) * 86_400_000;
    let line = |id: &str, ts: String| format!("{{\"id\": \"{id}\", \"ts\": {ts}}}\n");
    // In the file of the 4th: its own rows, one of the 5th just after midnight (kept: within a
    // day), one of the 9th (five days off: quarantined), and one with no time (quarantined).
    let text = [
        line("a", day(4).to_string()),
        line("b", (day(5) + 1000).to_string()),
        line("c", day(9).to_string()),
        line("d", "\"\"".into()),
    ]
    .concat();
    std::fs::write(input.join("2018/11/2018-11-04-events.json"), text).unwrap();
    std::fs::write(input.join("2018/11/2018-11-05-events.json"), line("e", (day(4) + 5).to_string())).unwrap();
    let text = format!(
        "name: days\nruns: {runs}\nvars: {{output: ~}}\ntasks:\n  - id: events\n    kind: extract\n    path: {input}\n    \
         format: jsonl\n    max_bad_records: 10\n    slice_path: \"{{year}}/{{month}}/{{year}}-{{month}}-{{day}}-*.json\"\n    \
         slice_column: at\n    schema: {{id: string, at: {{type: timestamp_ms, from: ts}}}}\n  \
         - id: load_events\n    kind: load\n    depends_on: [events]\n    table: events\n    path: ${{output}}/events\n    format: parquet\n",
        runs = tmp.path().join("runs").display(),
        input = input.display()
    );
    let p = pipeline(tmp.path(), "days.yaml", &text);
    let local_out = tmp.path().join("local");
    let local = run(&[p.to_str().unwrap(), "--set", &format!("output={}", local_out.display())]).expect(0);
    assert!(local.stdout.contains("2 records quarantined"), "{}", local.stdout);
    let spark_out = tmp.path().join("spark");
    let specs = tmp.path().join("specs");
    let out = format!("output={}", spark_out.display());
    run(&["emr", "specs", p.to_str().unwrap(), "--set", &out, "--out", specs.to_str().unwrap()]).expect(0);
    let spark = spark_submit(&specs).expect(0);
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(specs.join("results/events-1.json")).unwrap()).unwrap();
    assert_eq!((result["rows_out"].as_u64(), result["quarantined"].as_u64()), (Some(3), Some(2)), "{result}");
    let rows = sorted_rows(&local_out.join("events"));
    let mut ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["a", "b", "e"]);
    assert_eq!(rows, sorted_rows(&spark_out.join("events")), "{}", spark.stdout);
    let quarantined: String = std::fs::read_dir(tmp.path().join("runs"))
        .unwrap()
        .flatten()
        .filter_map(|d| std::fs::read_to_string(d.path().join("quarantine/events.jsonl")).ok())
        .collect();
    assert!(quarantined.contains("falls on 2018-11-09, 5 days from its file's day 2018-11-04"), "{quarantined}");
    assert!(quarantined.contains("column `at` is empty"), "{quarantined}");
}
