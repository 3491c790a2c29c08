//! Run records (`run.json`), JUnit XML, the GitHub job summary, and the HTML report rendered by
//! headless Chromium.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

fn record(out: &Path) -> (PathBuf, serde_json::Value) {
    let runs = out.join("_dagrun");
    let latest = std::fs::read_to_string(runs.join("LATEST")).expect("LATEST names the run");
    let path = runs.join(latest.trim()).join("run.json");
    let value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    (path, value)
}

#[test]
fn every_run_writes_a_record_beside_its_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lake");
    let summary = tmp.path().join("summary.md");
    let junit = tmp.path().join("junit.xml");
    let run = Run::from(
        dagrun()
            .env("GITHUB_STEP_SUMMARY", &summary)
            .args([
                sparkify().to_str().unwrap(),
                "--set",
                &format!("input={}", sample().display()),
                "--set",
                &format!("output={}", out.display()),
            ])
            .args(["-q", "--junit", junit.to_str().unwrap()])
            .output()
            .unwrap(),
    )
    .expect(0);
    let (path, rec) = record(&out);
    assert!(run.stdout.contains(&format!("run record: {}", path.display())), "{}", run.stdout);
    assert_eq!(rec["pipeline"], "sparkify");
    assert_eq!(rec["outcome"], "succeeded");
    assert_eq!(rec["exit_code"], 0);
    let sha = std::process::Command::new("sha256sum").arg(sparkify()).output().unwrap();
    let expected = String::from_utf8_lossy(&sha.stdout).split_whitespace().next().unwrap().to_string();
    assert_eq!(rec["pipeline_sha256"].as_str().unwrap(), expected, "the SHA-256 of the pipeline file's bytes");
    assert_eq!(rec["vars"]["input"], sample().display().to_string());
    let tasks = rec["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 18);
    let plays = tasks.iter().find(|t| t["id"] == "songplays").unwrap();
    assert_eq!(plays["state"], "succeeded");
    assert_eq!(plays["output"]["rows_out"], 6820);
    assert_eq!(plays["deps"], serde_json::json!(["plays", "staging_songs", "songs"]));
    assert_eq!(plays["attempts"][0]["number"], 1);
    assert!(plays["attempts"][0]["started_at_ms"].as_u64().unwrap() > 1_700_000_000_000);
    let check = tasks.iter().find(|t| t["id"] == "check_songplays").unwrap();
    assert_eq!(check["output"]["checks"].as_array().unwrap().len(), 9);
    let load = tasks.iter().find(|t| t["id"] == "load_songplays").unwrap();
    assert_eq!(load["output"]["outputs"][0], out.join("songplays").display().to_string());
    assert_eq!(rec["tables"]["songplays"], out.join("songplays").display().to_string());

    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert_eq!(xml.matches("<testcase ").count(), 18 + 25);
    assert!(xml.contains(r#"<testsuite name="sparkify.checks" tests="25" failures="0""#), "{xml}");
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(md.starts_with("### dagrun `sparkify`: succeeded"), "{md}");
    assert!(md.contains("| songplays | transform | succeeded | 1 |"), "{md}");
}

#[test]
fn failures_are_recorded_with_attempts_errors_and_failing_checks_and_secrets_stay_hidden() {
    let tmp = tempfile::tempdir().unwrap();
    let input = sample_copy(tmp.path());
    // A user whose latest play has an unknown level fails `check_users`.
    let line = std::fs::read_to_string(input.join("log_data/2018/11/2018-11-30-events.json")).unwrap();
    let last = line.lines().rev().find(|l| l.contains("\"page\":\"NextSong\"")).unwrap();
    let late =
        last.replace("\"level\":\"free\"", "\"level\":\"gold\"").replace("\"level\":\"paid\"", "\"level\":\"gold\"");
    // A play of the 1st of December, in that day's file.
    let ts = late.split("\"ts\":").nth(1).unwrap().split(',').next().unwrap().to_string();
    let late = late.replace(&format!("\"ts\":{ts}"), "\"ts\":1543626000000");
    std::fs::create_dir_all(input.join("log_data/2018/12")).unwrap();
    std::fs::write(input.join("log_data/2018/12/2018-12-01-late.json"), late).unwrap();
    let text = std::fs::read_to_string(sparkify())
        .unwrap()
        .replace("  engine: local\n", "  engine: local\n  db_password: hunter2-never-shown\n");
    let p = pipeline(tmp.path(), "sparkify.yaml", &text);
    let out = tmp.path().join("lake");
    let junit = tmp.path().join("junit.xml");
    let run = Run::from(
        dagrun()
            .args([
                p.to_str().unwrap(),
                "--set",
                &format!("input={}", input.display()),
                "--set",
                &format!("output={}", out.display()),
            ])
            .args(["-q", "--junit", junit.to_str().unwrap()])
            .output()
            .unwrap(),
    )
    .expect(1);
    assert!(!run.stdout.contains("hunter2") && !run.stderr.contains("hunter2"));
    let (path, rec) = record(&out);
    let raw = std::fs::read_to_string(path).unwrap();
    assert!(!raw.contains("hunter2"), "the secret leaked into run.json");
    assert_eq!(rec["vars"]["db_password"], "***");
    assert_eq!(rec["outcome"], "failed");
    assert_eq!(rec["exit_code"], 1);
    let tasks = rec["tasks"].as_array().unwrap();
    let check = tasks.iter().find(|t| t["id"] == "check_users").unwrap();
    assert_eq!(check["state"], "failed");
    assert!(check["attempts"][0]["error"].as_str().unwrap().starts_with("1 of 5 checks failed on `users`"));
    let failed: Vec<&serde_json::Value> =
        check["output"]["checks"].as_array().unwrap().iter().filter(|c| c["passed"] == false).collect();
    assert_eq!(failed.len(), 1);
    assert!(failed[0]["sample"][0].as_str().unwrap().contains("level=\"gold\""), "{}", failed[0]);
    let skipped = tasks.iter().find(|t| t["id"] == "load_users").unwrap();
    assert_eq!(
        (skipped["state"].as_str(), skipped["reason"].as_str()),
        (Some("skipped"), Some("upstream task `check_users` failed"))
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(r#"name="check_users" time="#) && xml.contains("<failure message=\"1 of 5 checks failed"),
        "{xml}"
    );
    assert!(xml.contains(r#"<testcase classname="sparkify.check_users" name="accepted_values(level)">"#), "{xml}");
    assert!(xml.contains("<skipped message=\"upstream task `check_users` failed\"/>"), "{xml}");
}

/// Headless Chromium from Debian (`scripts/test.sh` installs it).
fn chromium(args: &[&str], page: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.path().display()),
        ])
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs (scripts/test.sh installs Debian's chromium)");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_html_report_renders_offline_in_a_browser() {
    if !runtimes(&[Runtime::Chromium]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lake");
    let page = tmp.path().join("report.html");
    run_sparkify(&sample(), &out, &["-q", "--report", page.to_str().unwrap()]).expect(0);
    let html = std::fs::read_to_string(&page).unwrap();
    for remote in ["http://", "https://"] {
        let outside: Vec<&str> = html
            .match_indices(remote)
            .map(|(i, _)| &html[i..(i + 40).min(html.len())])
            .filter(|s| !s.starts_with("http://www.w3.org/2000/svg"))
            .collect();
        assert!(outside.is_empty(), "the report fetches nothing: {outside:?}");
    }

    // The page as the browser built it, after its script ran.
    let dom = chromium(&["--dump-dom", "--virtual-time-budget=2000"], &page);
    assert_eq!(dom.matches(r#"class="node""#).count(), 18, "every task in the DAG");
    assert_eq!(dom.matches(r#"class="attempt""#).count(), 18, "one timeline bar per attempt");
    assert!(dom.contains(r#"<span id="attempt-count">18</span>"#), "the timeline script ran");
    for text in [
        "Most played songs",
        "Setanta matins (Elena)",
        "Plays by hour of day (UTC)",
        "Top user agents",
        "Free vs paid",
        "relationships(user_id -&gt; users.user_id)",
        "No record was quarantined.",
    ] {
        assert!(dom.contains(text), "{text} is on the page");
    }
    assert!(dom.matches(r#"class="bars""#).count() >= 5, "bar charts");

    // And it paints: a screenshot is a real picture.
    let shot = tmp.path().join("report.png");
    chromium(&["--window-size=1400,2400", &format!("--screenshot={}", shot.display())], &page);
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 50_000, "{} bytes", png.len());

    // `dagrun report` renders the same run again from its record, found through LATEST.
    let again = tmp.path().join("again.html");
    run(&["report", out.join("_dagrun").to_str().unwrap(), "--output", again.to_str().unwrap()]).expect(0);
    let again = std::fs::read_to_string(again).unwrap();
    assert!(again.contains("Setanta matins (Elena)"));

    // Retries show on the timeline as separate bars: give `songs` a failed first attempt.
    let (path, mut rec) = record(&out);
    let songs = rec["tasks"].as_array_mut().unwrap().iter_mut().find(|t| t["id"] == "songs").unwrap();
    let mut failed = songs["attempts"][0].clone();
    failed["number"] = 1.into();
    failed["error"] = "reading s3://lake/x: 503 SlowDown (tried 6 times)".into();
    failed["retryable"] = true.into();
    let mut second = songs["attempts"][0].clone();
    second["number"] = 2.into();
    songs["attempts"] = serde_json::json!([failed, second]);
    std::fs::write(&path, serde_json::to_vec(&rec).unwrap()).unwrap();
    let retried = tmp.path().join("retried.html");
    run(&["report", path.to_str().unwrap(), "--output", retried.to_str().unwrap()]).expect(0);
    let dom = chromium(&["--dump-dom", "--virtual-time-budget=2000"], &retried);
    assert_eq!(dom.matches(r#"class="attempt""#).count(), 19);
    assert!(
        dom.contains(r##"fill="#ef4444" class="attempt" data-task="songs" data-attempt="1""##),
        "a red bar for the failed attempt"
    );
    assert!(dom.contains("503 SlowDown (tried 6 times)"), "the failed attempt's error is on the page");
}

/// The plays counted by the record's "Free vs paid" answer.
fn plays_answered(rec: &serde_json::Value) -> u64 {
    let items = rec["answers"]["items"].as_array().expect("answers kept in run.json");
    let free_paid = items.iter().find(|a| a["title"] == "Free vs paid").unwrap();
    free_paid["rows"].as_array().unwrap().iter().map(|r| r[2].as_str().unwrap().parse::<u64>().unwrap()).sum()
}

#[test]
fn report_answers_are_computed_by_the_run_and_kept_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let input = sample_copy(tmp.path());
    let out = tmp.path().join("lake");
    // dagrun's Parquet convention keeps no versions: only answers kept with the run show it as it was.
    let parquet = ["-q", "--set", "format=parquet"];
    run_sparkify(&input, &out, &parquet).expect(0);
    let (first_path, first) = record(&out);
    assert_eq!(plays_answered(&first), 6820);
    let answers = &first["answers"];
    assert!(answers["computed_at_ms"].as_u64().unwrap() > 0);
    let run_id = first["run_id"].as_str().unwrap();
    assert_eq!(answers["tables"]["songplays"], format!("run {run_id}"), "{answers}");
    assert!(answers.get("carried_from").is_none());

    // A later run over fewer days publishes fewer plays; the first run's report still shows its own.
    for day in ["01", "02", "03", "04", "05"] {
        std::fs::remove_file(input.join(format!("log_data/2018/11/2018-11-{day}-events.json"))).unwrap();
    }
    run_sparkify(&input, &out, &parquet).expect(0);
    let (_, second) = record(&out);
    let later = plays_answered(&second);
    assert!(later < 6820, "{later}");
    let page = tmp.path().join("first.html");
    run(&["report", first_path.to_str().unwrap(), "--output", page.to_str().unwrap()]).expect(0);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("Computed at the end of this run"), "the page says when and from what");
    assert!(html.contains(&format!("songplays run {run_id}")));
    let free_paid = &html[html.find("Free vs paid").unwrap()..];
    assert!(free_paid.contains(&format!("<td>{}</td>", first["answers"]["items"][5]["rows"][0][2].as_str().unwrap())));

    // A run that changes no table carries the answers over without reading anything.
    run_sparkify(&input, &out, &parquet).expect(0);
    let (_, third) = record(&out);
    assert_eq!(third["answers"]["carried_from"], second["run_id"]);
    assert_eq!(third["answers"]["items"], second["answers"]["items"]);
}

#[test]
fn a_report_query_that_fails_fails_its_answer_not_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(sparkify()).unwrap().replace(
        "      SELECT location, COUNT(*) AS plays\n      FROM songplays\n",
        "      SELECT no_such_column, COUNT(*) AS plays\n      FROM songplays\n",
    );
    let p = pipeline(tmp.path(), "sparkify.yaml", &text);
    let out = tmp.path().join("lake");
    let page = tmp.path().join("report.html");
    let ran = Run::from(
        dagrun()
            .args([p.to_str().unwrap(), "--set", &format!("input={}", sample().display())])
            .args(["--set", &format!("output={}", out.display()), "--report", page.to_str().unwrap()])
            .output()
            .unwrap(),
    )
    .expect(0);
    assert!(ran.stderr.contains("1 report query could not be answered"), "{}", ran.stderr);
    let (_, rec) = record(&out);
    let items = rec["answers"]["items"].as_array().unwrap();
    let broken = items.iter().find(|a| a["title"] == "Top locations").unwrap();
    assert!(broken["error"].as_str().unwrap().contains("no_such_column"), "{broken}");
    assert_eq!(plays_answered(&rec), 6820, "the other answers are there");
    let html = std::fs::read_to_string(page).unwrap();
    assert!(html.contains("Could not answer:"));
    assert!(out.join("songplays").exists());
}

#[test]
fn answers_read_tables_from_memory_then_from_one_cached_file_not_from_thousands() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    run(&["generate", "--out", data.to_str().unwrap(), "--songs", "600", "--events", "3000", "--seed", "3"]).expect(0);
    let out = tmp.path().join("lake");
    let verbose = ["-v", "--log-format", "json"];
    // The last day arrives later.
    let days: Vec<String> = files(&data.join("log_data")).into_iter().filter(|f| f.ends_with(".json")).collect();
    let last_day = data.join("log_data").join(days.last().unwrap());
    let held = tmp.path().join("held.json");
    std::fs::rename(&last_day, &held).unwrap();
    // The run published every table whole: the answers read them from memory, and keep a copy of
    // each table of many files (songs: one per artist) in the answers cache.
    let first = run_sparkify(&data, &out, &verbose).expect(0);
    assert!(first.stderr.contains("answers read the table this run published, from memory"), "{}", first.stderr);
    assert!(!first.stderr.contains("answers read the table's files"), "{}", first.stderr);
    let cache = out.join("_dagrun/_cache/answers");
    let cached = std::fs::read_to_string(cache.join("songs.version")).unwrap();
    assert!(cached.starts_with("v0 by run "), "{cached}");
    assert!(cache.join("songs.parquet").exists());

    // A new day only: songs is up to date, and comes from the cache's one file.
    std::fs::rename(&held, &last_day).unwrap();
    let second = run_sparkify(&data, &out, &verbose).expect(0);
    let songs_from_cache = second
        .stderr
        .lines()
        .any(|l| l.contains("answers read the table from the answers cache") && l.contains("\"table\":\"songs\""));
    assert!(songs_from_cache, "{}", second.stderr);

    // Whatever the source, the answers are those of the published tables: computed again from
    // their files by `dagrun report` on the record without its answers, they are the same.
    let (path, rec) = record(&out);
    let mut stripped = rec.clone();
    stripped.as_object_mut().unwrap().remove("answers");
    let bare = tmp.path().join("bare.json");
    std::fs::write(&bare, serde_json::to_vec(&stripped).unwrap()).unwrap();
    let (kept, fresh) = (tmp.path().join("kept.html"), tmp.path().join("fresh.html"));
    run(&["report", path.to_str().unwrap(), "--output", kept.to_str().unwrap()]).expect(0);
    run(&["report", bare.to_str().unwrap(), "--output", fresh.to_str().unwrap()]).expect(0);
    let answers = |page: &std::path::Path| {
        let html = std::fs::read_to_string(page).unwrap();
        let start = html.find(r#"<div class="answer">"#).expect("answers on the page");
        let end = html[start..].find("</section>").unwrap() + start;
        html[start..end].to_string()
    };
    assert_eq!(answers(&kept), answers(&fresh));
}

#[test]
fn a_run_of_some_tasks_answers_from_every_published_table_and_as_of_names_a_version_that_is_not_there() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = tmp.path().join("lake");
    run_sparkify(&sample(), &lake, &["-q"]).expect(0);
    // Only artists: the other tables stay as published, and the answers read them all.
    run_sparkify(&sample(), &lake, &["-q", "--only", "load_artists", "--force=load_artists"]).expect(0);
    let (path, rec) = record(&lake);
    assert_eq!(rec["versions"]["songplays"], 0, "{}", rec["versions"]);
    let items = rec["answers"]["items"].as_array().unwrap();
    assert!(!items.is_empty());
    for item in items {
        assert!(item["error"].is_null(), "{item}");
        assert!(!item["rows"].as_array().unwrap().is_empty(), "{item}");
    }
    let out = tmp.path().join("r.html");
    let bad =
        run(&["report", path.to_str().unwrap(), "--as-of", "songplays=99", "-o", out.to_str().unwrap()]).expect(2);
    assert!(bad.stderr.contains("table `songplays` has versions 0 to 0"), "{}", bad.stderr);
    assert!(bad.stderr.contains("there is no version 99") && !bad.stderr.contains("corrupt"), "{}", bad.stderr);
    run(&["report", path.to_str().unwrap(), "--as-of", "songplays=0", "-o", out.to_str().unwrap()]).expect(0);
}

#[test]
fn answers_are_not_carried_over_to_tables_made_again_from_other_data() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = tmp.path().join("lake");
    run_sparkify(&sample(), &lake, &["-q"]).expect(0);
    let (_, first) = record(&lake);
    // The tables are deleted and made again from other input: version 0 again, other rows.
    for table in TABLES {
        std::fs::remove_dir_all(lake.join(table)).unwrap();
    }
    let other = tmp.path().join("other");
    run(&["generate", "--out", other.to_str().unwrap(), "--songs", "60", "--events", "800", "--seed", "9"]).expect(0);
    let run = run_sparkify(&other, &lake, &["-q"]).expect(0);
    assert!(!run.stderr.contains("carried from run"), "{}", run.stderr);
    let (_, second) = record(&lake);
    assert!(second["answers"]["carried_from"].is_null(), "{}", second["answers"]);
    assert_ne!(first["answers"]["items"], second["answers"]["items"], "the answers are the new data's");
    assert_eq!(second["versions"]["songplays"], 0);
}
