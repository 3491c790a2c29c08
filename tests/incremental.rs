//! Incremental runs and backfills by date (`--partition`, `--since/--until`): the property that
//! defines them correct is that slices of the input run one after another, in any order and with
//! any slice run twice, publish exactly the tables one run over all of the input publishes.
//! Tables are read by the Python `deltalake` package's file list and the `parquet` crate.

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::*;

/// Generated Sparkify data spanning November 2018 to mid-January 2019 (three months, a new year).
fn months(dir: &Path) -> PathBuf {
    let out = dir.join("input");
    run(&[
        "generate",
        "--out",
        out.to_str().unwrap(),
        "--songs",
        "120",
        "--events",
        "3000",
        "--days",
        "75",
        "--seed",
        "11",
    ])
    .expect(0);
    out
}

/// The days with a log file in `input`, by month (`2018-11`).
fn log_days(input: &Path, month: &str) -> usize {
    files(&input.join("log_data")).iter().filter(|f| f.contains(&format!("/{month}-"))).count()
}

fn tables(lake: &Path) -> Vec<Vec<Row>> {
    TABLES.iter().map(|t| sorted_rows(&lake.join(t))).collect()
}

fn assert_same_lake(a: &Path, b: &Path, what: &str) {
    for (table, (x, y)) in TABLES.iter().zip(tables(a).into_iter().zip(tables(b))) {
        assert!(!x.is_empty(), "{table} is empty");
        assert_eq!(x.len(), y.len(), "{what}: {table} has {} rows, the full run {}", y.len(), x.len());
        assert!(x == y, "{what}: {table} differs from the full run");
    }
}

#[test]
fn slices_in_any_order_and_repeated_publish_what_one_full_run_publishes() {
    let tmp = tempfile::tempdir().unwrap();
    let input = months(tmp.path());
    let full = tmp.path().join("full");
    run_sparkify(&input, &full, &["-q"]).expect(0);
    let users = read_table(&full.join("users"));
    assert!(users.iter().any(|u| u["last_played_at"].starts_with("154")), "users carry their latest play's time");

    // Month by month, in order.
    let in_order = tmp.path().join("in_order");
    for month in ["2018-11", "2018-12", "2019-01"] {
        let run = run_sparkify(&input, &in_order, &["-q", "--partition", month]).expect(0);
        assert!(run.stdout.contains(&format!("days: asked {month}-01..")), "{}", run.stdout);
    }
    assert_same_lake(&full, &in_order, "months in order");

    // Out of order, a day before its month, and a month run twice.
    let shuffled = tmp.path().join("shuffled");
    for slice in ["2019-01", "2018-11-05", "2018-12", "2018-11", "2018-12"] {
        run_sparkify(&input, &shuffled, &["-q", "--partition", slice, "--force"]).expect(0);
    }
    assert_same_lake(&full, &shuffled, "slices out of order, one repeated");

    // The songplays commit of a one-day run deletes and appends that day only: the other days'
    // files stay.
    let before: Vec<String> = delta_files(&shuffled.join("songplays"));
    let day = files(&input.join("log_data/2018/12"))[3][..10].to_string();
    let run = run_sparkify(&input, &shuffled, &["-q", "--partition", &day, "--force"]).expect(0);
    assert!(run.stdout.contains(&format!("running 1 ({day})")), "{}", run.stdout);
    let after: Vec<String> = delta_files(&shuffled.join("songplays"));
    let kept = before.iter().filter(|f| after.contains(f)).count();
    assert!(kept >= 2, "files of other months stay: {before:?} -> {after:?}");
    assert_same_lake(&full, &shuffled, "a day rerun");
    let history = crate::support::run(&["history", shuffled.join("songplays").to_str().unwrap(), "--json"]).expect(0);
    assert!(history.stdout.contains("WRITE"), "{}", history.stdout);
}

#[test]
fn a_backfill_runs_only_missing_days_and_a_second_run_does_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let input = months(tmp.path());
    let full = tmp.path().join("full");
    run_sparkify(&input, &full, &["-q"]).expect(0);

    let lake = tmp.path().join("lake");
    run_sparkify(&input, &lake, &["-q", "--partition", "2018-12"]).expect(0);
    // The backfill runs the days before and after December, not December again.
    let run = run_sparkify(&input, &lake, &["-q", "--since", "2018-11-01", "--until", "2019-01-31"]).expect(0);
    let missing = log_days(&input, "2018-11") + log_days(&input, "2019-01");
    assert!(
        run.stdout.contains(&format!("asked 2018-11-01..2019-01-31 (92 days); running {missing} (")),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("2018-12-0"), "December is published already: {}", run.stdout);
    assert_same_lake(&full, &lake, "a backfill after one month");

    for args in [&["-q", "--since", "2018-11-01", "--until", "2019-01-31"][..], &["-q"][..]] {
        let again = run_sparkify(&input, &lake, args).expect(0);
        assert!(
            again.stdout.contains("nothing to run: every day is published from the same inputs"),
            "{}",
            again.stdout
        );
        assert!(again.stdout.contains("nothing to do"), "{}", again.stdout);
    }

    // A changed day's file: only that day runs again.
    let day = input.join("log_data/2018/12").join(&files(&input.join("log_data/2018/12"))[5]);
    let name = day.file_name().unwrap().to_str().unwrap()[..10].to_string();
    let text = fs::read_to_string(&day).unwrap();
    let first_line_end = text.find('\n').unwrap();
    fs::write(&day, &text[first_line_end + 1..]).unwrap();
    let run = run_sparkify(&input, &lake, &["-q"]).expect(0);
    assert!(run.stdout.contains(&format!("running 1 ({name})")), "{}", run.stdout);
    let full_again = tmp.path().join("full_again");
    run_sparkify(&input, &full_again, &["-q"]).expect(0);
    assert_same_lake(&full_again, &lake, "after one day's input changed");
}

#[test]
fn an_input_that_does_not_cover_the_published_days_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let input = months(tmp.path());
    let lake = tmp.path().join("lake");
    run_sparkify(&input, &lake, &["-q"]).expect(0);
    let versions = |lake: &Path| -> Vec<String> {
        TABLES.iter().map(|t| files(&lake.join(t).join("_delta_log")).join(",")).collect()
    };
    let before = versions(&lake);

    // One day's folder of input, as a user pointing `input` at last night's files would have it.
    let one_day = tmp.path().join("one_day");
    let name = files(&input.join("log_data/2018/12"))[0].clone();
    let day = name[..10].to_string();
    fs::create_dir_all(one_day.join("log_data/2018/12")).unwrap();
    fs::copy(input.join("log_data/2018/12").join(&name), one_day.join("log_data/2018/12").join(&name)).unwrap();
    let all_days = files(&input.join("log_data")).len();
    copy_dir(&input.join("song_data"), &one_day.join("song_data"));
    let run = run_sparkify(&one_day, &lake, &["-q"]).expect(1);
    let expected = format!("load `load_songplays`: the input has no files for {} day(s)", all_days - 1);
    assert!(run.stderr.contains(&expected), "{}", run.stderr);
    assert!(run.stderr.contains("--partition"), "{}", run.stderr);
    assert_eq!(versions(&lake), before, "nothing was committed");

    // Scoped to that day, it is fine.
    run_sparkify(&one_day, &lake, &["-q", "--partition", &day]).expect(0);

    // A file that names no day is refused in a run over all the input: no slice would ever read it.
    fs::write(one_day.join("log_data/2018/12/notes.json"), "{}").unwrap();
    let run = run_sparkify(&one_day, &lake, &["-q", "--force"]).expect(1);
    assert!(
        run.stderr.contains("notes.json of extract `staging_events` does not fit its `slice_path`"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_slice_is_refused_where_a_load_would_replace_its_whole_table() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lake");
    // Sparkify in dagrun's Parquet convention: its loads can only replace whole tables.
    let run = run_sparkify(&sample(), &out, &["-q", "--set", "format=parquet", "--partition", "2018-11-05"]).expect(2);
    assert!(
        run.stderr.contains("load `load_users` (`mode: merge`) publishes in dagrun's Parquet convention"),
        "{}",
        run.stderr
    );
    assert!(!out.exists(), "nothing was written");

    let dir = tmp.path();
    let input = dir.join("in/2018");
    fs::create_dir_all(&input).unwrap();
    fs::write(input.join("2018-11-05.json"), "{\"ts\": 1541376000000}").unwrap();
    let p = pipeline(
        dir,
        "p.yaml",
        r#"name: p
tasks:
  - {id: e, kind: extract, path: in, slice_path: "{year}/{year}-{month}-{day}.json", format: jsonl, schema: {ts: int}}
  - {id: load_e, kind: load, depends_on: [e], table: e, path: out/e, format: delta}
"#,
    );
    let run = Run::from(dagrun().current_dir(dir).arg(&p).args(["--partition", "2018-11"]).output().unwrap()).expect(2);
    assert!(
        run.stderr.contains("load `load_e` replaces its whole table (`mode: overwrite`) from `e`"),
        "{}",
        run.stderr
    );
    // Over every day it is a plain full run.
    Run::from(dagrun().current_dir(dir).arg(&p).arg("-q").output().unwrap()).expect(0);

    let run = Run::from(dagrun().current_dir(dir).arg(&p).args(["--partition", "nov"]).output().unwrap()).expect(2);
    assert!(run.stderr.contains("expected a year (2018), a month (2018-11) or a day (2018-11-05)"), "{}", run.stderr);
}

#[test]
fn a_day_rerun_killed_at_any_moment_leaves_the_lake_as_it_was_and_the_next_run_converges() {
    if !runtimes(&[Runtime::DeltaLake]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let input = months(tmp.path());
    let lake = tmp.path().join("lake");
    run_sparkify(&input, &lake, &["-q"]).expect(0);
    let expected = tables(&lake);
    let day = files(&input.join("log_data/2018/12"))[10][..10].to_string();
    let args = ["-q", "--partition", day.as_str(), "--force"];
    let start = std::time::Instant::now();
    run_sparkify(&input, &lake, &args).expect(0);
    let length = start.elapsed();
    assert_eq!(tables(&lake), expected, "a day rerun changes nothing");

    // kill -9 at moments spread over the run: reading, merging, cutting the day out, committing.
    let input_var = format!("input={}", input.display());
    let output_var = format!("output={}", lake.display());
    for k in 1..=6 {
        let mut child = dagrun()
            .arg(sparkify())
            .args(["--set", &input_var, "--set", &output_var])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(length.mul_f64(f64::from(k) / 7.0));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(tables(&lake) == expected, "after kill {k} of 6 the lake is not as it was");
    }
    // The next run converges, and every data file left belongs to a commit.
    run_sparkify(&input, &lake, &args).expect(0);
    assert!(tables(&lake) == expected);
    for table in TABLES {
        let dir = lake.join(table);
        let log: String = files(&dir.join("_delta_log"))
            .iter()
            .filter(|f| f.ends_with(".json"))
            .map(|f| fs::read_to_string(dir.join("_delta_log").join(f)).unwrap())
            .collect();
        for file in files(&dir).into_iter().filter(|f| f.ends_with(".parquet")) {
            let name = file.rsplit('/').next().unwrap();
            assert!(log.contains(name), "{table}/{file} belongs to no commit");
        }
    }
}

#[test]
fn the_lake_command_names_every_table_at_the_version_a_run_left_it() {
    if !runtimes(&[Runtime::DeltaLake]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lake = tmp.path().join("lake");
    run_sparkify(&sample(), &lake, &["-q", "--partition", "2018-11-05"]).expect(0);
    let latest = fs::read_to_string(lake.join("_dagrun/LATEST")).unwrap();
    let first = lake.join("_dagrun").join(latest.trim()).join("run.json");
    run_sparkify(&sample(), &lake, &["-q"]).expect(0);

    let listed = crate::support::run(&["lake", first.to_str().unwrap(), "--json"]).expect(0);
    let value: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    let songplays = &value["tables"]["songplays"];
    assert_eq!(songplays["version"], 0, "{value}");
    // Read at that version by the deltalake package: the first run's day alone.
    let path = songplays["path"].as_str().unwrap();
    let script = "import sys, os; from deltalake import DeltaTable; \
                  print(DeltaTable(sys.argv[1], version=int(sys.argv[2])).to_pyarrow_table().num_rows, flush=True); os._exit(0)";
    let out = std::process::Command::new("python3").args(["-c", script, path, "0"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let day = (1_541_376_000_000i64, 1_541_462_400_000i64);
    let on_day = read_table(&lake.join("songplays"))
        .iter()
        .filter(|r| r["start_time"].parse::<i64>().is_ok_and(|t| t >= day.0 && t < day.1))
        .count();
    assert!(on_day > 0);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), on_day.to_string());

    let text = crate::support::run(&["lake", lake.join("_dagrun").to_str().unwrap()]).expect(0);
    assert!(text.stdout.contains("pl.read_delta(") && text.stdout.contains("versionAsOf"), "{}", text.stdout);
}
