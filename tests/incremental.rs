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

/// The days whose rows the log files of `input` may hold (`2018-11-05`): each file's day and the
/// day on either side (Sparkify's `slice_tolerance` of one day).
fn data_days(input: &Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for file in files(&input.join("log_data")) {
        let name = file.rsplit('/').next().unwrap();
        let day = chrono::NaiveDate::parse_from_str(&name[..10], "%Y-%m-%d").unwrap();
        for d in [day.pred_opt().unwrap(), day, day.succ_opt().unwrap()] {
            out.insert(d.format("%Y-%m-%d").to_string());
        }
    }
    out
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
    // The days of November and January whose rows the files may hold, and October's last, whose
    // rows can only be in the file of November's first, which the backfill reads anyway.
    let missing = data_days(&input)
        .iter()
        .filter(|d| d.as_str() >= "2018-10-31" && !d.starts_with("2018-12") && d.as_str() <= "2019-01-31")
        .count();
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

    // A changed day's file: `users`, a merge that cannot take a row back, is rebuilt from every
    // day, and so is what the same extract feeds.
    let day = input.join("log_data/2018/12").join(&files(&input.join("log_data/2018/12"))[5]);
    let name = day.file_name().unwrap().to_str().unwrap()[..10].to_string();
    let text = fs::read_to_string(&day).unwrap();
    let first_line_end = text.find('\n').unwrap();
    fs::write(&day, &text[first_line_end + 1..]).unwrap();
    let run = run_sparkify(&input, &lake, &["-q"]).expect(0);
    assert!(run.stdout.contains(&format!("every day: the input of {name} changed")), "{}", run.stdout);
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
    copy_dir(&input.join("song_data"), &one_day.join("song_data"));
    let run = run_sparkify(&one_day, &lake, &["-q"]).expect(1);
    let lacking = data_days(&input).len() - data_days(&one_day).len();
    let expected = format!("load `load_songplays`: the input has no files for {lacking} day(s)");
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
  - {id: e, kind: extract, path: in, slice_path: "{year}/{year}-{month}-{day}.json", slice_column: at, format: jsonl, schema: {ts: int, at: {type: timestamp_ms, from: ts}}}
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

/// Generated data whose log files are named by a day three hours behind UTC, as logs rotated at
/// local midnight are: the plays of 00:00 to 03:00 UTC are in the file of the day before.
fn rotated(dir: &Path, days: u32, events: u32) -> PathBuf {
    let out = dir.join("input");
    let (days, events) = (days.to_string(), events.to_string());
    run(&[
        "generate",
        "--out",
        out.to_str().unwrap(),
        "--songs",
        "120",
        "--events",
        &events,
        "--days",
        &days,
        "--files-offset",
        "-3",
    ])
    .expect(0);
    out
}

/// The log file of `day` (`2018-11-05`) under `input`.
fn log_file(input: &Path, day: &str) -> PathBuf {
    input.join("log_data").join(&day[..4]).join(&day[5..7]).join(format!("{day}-events.json"))
}

/// The plays of `rows` that start on `day` (UTC).
fn plays_on(rows: &[Row], day: &str) -> Vec<Row> {
    let start = midnight_ms(day);
    rows.iter()
        .filter(|r| r["start_time"].parse::<i64>().is_ok_and(|t| t >= start && t < start + 86_400_000))
        .cloned()
        .collect()
}

/// Epoch milliseconds of a November 2018 day's midnight (UTC): the days these tests use.
fn midnight_ms(day: &str) -> i64 {
    assert!(day.starts_with("2018-11-"), "{day}");
    1_541_030_400_000 + (day[8..].parse::<i64>().unwrap() - 1) * 86_400_000
}

#[test]
fn a_play_filed_under_the_day_before_is_kept_when_its_own_day_arrives_late() {
    if !runtimes(&[Runtime::DeltaLake]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let input = rotated(tmp.path(), 6, 1500);
    // The plays of early 2018-11-03 (UTC) are in the file of the 2nd.
    let early: usize = fs::read_to_string(log_file(&input, "2018-11-02"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"NextSong\"") && !l.contains("\"userId\":\"\""))
        .filter(|l| {
            let ts: i64 = l.split("\"ts\":").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
            ts >= midnight_ms("2018-11-03")
        })
        .count();
    assert!(early > 0, "the file of the 2nd holds plays of the 3rd");

    // The file of the 3rd arrives late: a full run publishes the 3rd's early plays from the 2nd's.
    let late = tmp.path().join("late.json");
    fs::rename(log_file(&input, "2018-11-03"), &late).unwrap();
    let lake = tmp.path().join("lake");
    run_sparkify(&input, &lake, &["-q"]).expect(0);
    assert_eq!(plays_on(&read_table(&lake.join("songplays")), "2018-11-03").len(), early);
    // It arrives; its day is run: the day keeps the plays of the 2nd's file.
    fs::rename(&late, log_file(&input, "2018-11-03")).unwrap();
    let run = run_sparkify(&input, &lake, &["-q", "--partition", "2018-11-03"]).expect(0);
    assert!(run.stdout.contains("running 1 (2018-11-03)"), "{}", run.stdout);
    let full = tmp.path().join("full");
    run_sparkify(&input, &full, &["-q"]).expect(0);
    let whole = read_table(&full.join("songplays"));
    let mut got = plays_on(&read_table(&lake.join("songplays")), "2018-11-03");
    let mut want = plays_on(&whole, "2018-11-03");
    got.sort();
    want.sort();
    assert_eq!(got, want, "the 3rd equals the full run's 3rd");
    // The next nightly runs the days around the late file, and the lake is the full run.
    let run = run_sparkify(&input, &lake, &["-q"]).expect(0);
    assert!(run.stdout.contains("running 2 (2018-11-02, 2018-11-04)"), "{}", run.stdout);
    assert_same_lake(&full, &lake, "after the late file");

    // On a new lake, the 2nd alone does not publish the 3rd's plays, and the 3rd then has them all.
    let fresh = tmp.path().join("fresh");
    run_sparkify(&input, &fresh, &["-q", "--partition", "2018-11-02"]).expect(0);
    assert!(plays_on(&read_table(&fresh.join("songplays")), "2018-11-03").is_empty());
    run_sparkify(&input, &fresh, &["-q", "--partition", "2018-11-03"]).expect(0);
    let mut got = plays_on(&read_table(&fresh.join("songplays")), "2018-11-03");
    got.sort();
    assert_eq!(got, want);

    // A play far from its file's day is quarantined by every run, full or of one day: no run of
    // its own day would read it.
    let far = format!(
        "\n{}",
        fs::read_to_string(log_file(&input, "2018-11-02"))
            .unwrap()
            .lines()
            .find(|l| l.contains("\"NextSong\"") && !l.contains("\"userId\":\"\""))
            .unwrap()
            .replacen("\"ts\":154", "\"ts\":155", 1)
    );
    let mut text = fs::read_to_string(log_file(&input, "2018-11-04")).unwrap();
    text.push_str(&far);
    fs::write(log_file(&input, "2018-11-04"), text).unwrap();
    for args in [&["-q", "--partition", "2018-11-04"][..], &["-q", "--force"][..]] {
        let run = run_sparkify(&input, &lake, args).expect(0);
        let quarantined = state_row(&run.stdout, "staging_events");
        assert!(quarantined.ends_with(" 1"), "{args:?}: {quarantined}\n{}", run.stdout);
    }
    let record = fs::read_to_string(
        lake.join("_dagrun")
            .join(fs::read_to_string(lake.join("_dagrun/LATEST")).unwrap().trim())
            .join("quarantine/staging_events.jsonl"),
    )
    .unwrap();
    assert!(record.contains("days from its file's day 2018-11-04, farther than slice_tolerance (1d)"), "{record}");
}

/// The summary row of `task`.
fn state_row(summary: &str, task: &str) -> String {
    summary.lines().find(|l| l.split_whitespace().next() == Some(task)).unwrap_or_default().trim_end().to_string()
}

#[test]
fn a_corrected_day_takes_back_what_it_merged_into_users() {
    if !runtimes(&[Runtime::DeltaLake]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let input = rotated(tmp.path(), 8, 2400);
    let lake = tmp.path().join("lake");
    run_sparkify(&input, &lake, &["-q"]).expect(0);
    // Every event of five users on the 5th is withdrawn: some of them played on no other day.
    let file = log_file(&input, "2018-11-05");
    let text = fs::read_to_string(&file).unwrap();
    let user = |l: &str| l.split("\"userId\":\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let mut users: Vec<String> = text.lines().map(user).filter(|u| !u.is_empty()).collect();
    users.sort();
    users.dedup();
    users.truncate(5);
    let kept: Vec<&str> = text.lines().filter(|l| !users.contains(&user(l))).collect();
    fs::write(&file, kept.join("\n")).unwrap();

    let run = run_sparkify(&input, &lake, &["-q", "--partition", "2018-11-05"]).expect(0);
    assert!(
        run.stdout.contains("every day: the input of 2018-11-05 changed since `users` (mode: merge) was made from it"),
        "{}",
        run.stdout
    );
    let full = tmp.path().join("full");
    run_sparkify(&input, &full, &["-q"]).expect(0);
    assert_same_lake(&full, &lake, "after a corrected day");
    // A day that only gains a file merges as before.
    let again = run_sparkify(&input, &lake, &["-q"]).expect(0);
    assert!(again.stdout.contains("nothing to run"), "{}", again.stdout);
}

/// The property, on logs rotated at local midnight, with late files, days that shrink and
/// withdrawn users: whatever slices ran, the lake after the nightly equals one full run over the
/// final input.
#[test]
fn slices_late_files_shrinking_days_and_withdrawn_users_still_equal_one_full_run() {
    if !runtimes(&[Runtime::DeltaLake]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let input = rotated(tmp.path(), 40, 4000);
    let held = tmp.path().join("held");
    fs::create_dir_all(&held).unwrap();
    for day in ["2018-11-10", "2018-12-03"] {
        fs::rename(log_file(&input, day), held.join(day)).unwrap();
    }
    let lake = tmp.path().join("lake");
    for slice in ["2018-12", "2018-11-20", "2018-11"] {
        run_sparkify(&input, &lake, &["-q", "--partition", slice]).expect(0);
    }
    // Late files arrive; one day's file shrinks; a user's plays of a day are withdrawn.
    for day in ["2018-11-10", "2018-12-03"] {
        fs::rename(held.join(day), log_file(&input, day)).unwrap();
    }
    run_sparkify(&input, &lake, &["-q", "--partition", "2018-11-10"]).expect(0);
    let shrink = log_file(&input, "2018-11-15");
    let text = fs::read_to_string(&shrink).unwrap();
    let half: Vec<&str> = text.lines().step_by(2).collect();
    fs::write(&shrink, half.join("\n")).unwrap();
    run_sparkify(&input, &lake, &["-q", "--partition", "2018-11-15"]).expect(0);
    let withdraw = log_file(&input, "2018-12-06");
    let text = fs::read_to_string(&withdraw).unwrap();
    let first_user = text.lines().find_map(|l| {
        let u = l.split("\"userId\":\"").nth(1)?.split('"').next()?;
        (!u.is_empty()).then(|| format!("\"userId\":\"{u}\""))
    });
    let kept: Vec<&str> = text.lines().filter(|l| !l.contains(first_user.as_deref().unwrap())).collect();
    fs::write(&withdraw, kept.join("\n")).unwrap();
    // The nightly: every day that is stale, whatever ran before.
    run_sparkify(&input, &lake, &["-q"]).expect(0);
    let full = tmp.path().join("full");
    run_sparkify(&input, &full, &["-q"]).expect(0);
    assert_same_lake(&full, &lake, "slices, late files, a shrunk day and a withdrawn user");
    let again = run_sparkify(&input, &lake, &["-q"]).expect(0);
    assert!(again.stdout.contains("nothing to run"), "{}", again.stdout);
}
