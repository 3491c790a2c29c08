//! Parity of the two engines: the EMR step program (`deploy/emr/dagrun_step.py`), run by real
//! Spark in local mode on the real Sparkify sample with the step specs `dagrun emr specs` writes
//! from `pipelines/sparkify.yaml`, publishes the same tables as the local Polars engine.

use crate::support::*;

const TABLES: [&str; 5] = ["songplays", "users", "songs", "artists", "time"];

#[test]
fn the_spark_step_program_publishes_the_same_tables_as_the_local_engine() {
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

    let output = std::process::Command::new("python3")
        .arg(specs.join("dagrun_step.py"))
        .arg(specs.join("steps.json"))
        .env("PYSPARK_PYTHON", "python3")
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .output()
        .expect("python3 runs the step program (scripts/test.sh installs pyspark)");
    let spark = Run::from(output).expect(0);
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
