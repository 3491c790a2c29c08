//! Resume: a re-run skips what is published from unchanged inputs, reruns what changed or was
//! forced, and a run that failed in the middle picks up by running again.

use std::fs;

use crate::support::*;

fn mtimes(dir: &std::path::Path) -> Vec<(String, std::time::SystemTime)> {
    files(dir).into_iter().map(|f| (f.clone(), fs::metadata(dir.join(&f)).unwrap().modified().unwrap())).collect()
}

#[test]
fn an_unchanged_rerun_does_nothing_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let input = sample_copy(tmp.path());
    let out = tmp.path().join("lake");
    run_sparkify(&input, &out, &["-q"]).expect(0);
    let before = mtimes(&out.join("songs"));

    let dry = run_sparkify(&input, &out, &["--dry-run"]).expect(0);
    assert_eq!(dry.stdout.matches("skipped, up to date").count(), 18, "{}", dry.stdout);
    assert!(
        dry.stdout
            .contains("load_songs (load on local)  after check_songs\n      skipped, up to date: published by run "),
        "{}",
        dry.stdout
    );

    let again = run_sparkify(&input, &out, &["-q"]).expect(0);
    assert!(again.stdout.contains("all 18 tasks up to date: nothing to do"), "{}", again.stdout);
    assert_eq!(state(&again.stdout, "staging_events"), "up-to-date");
    assert_eq!(mtimes(&out.join("songs")), before, "nothing was rewritten");

    // Changing a log file reruns what depends on the logs, not the song tables.
    let log = input.join("log_data/2018/11/2018-11-05-events.json");
    let mut text = fs::read_to_string(&log).unwrap();
    text.push('\n');
    fs::write(&log, text).unwrap();
    let artists_before = mtimes(&out.join("artists"));
    let changed = run_sparkify(&input, &out, &["-q"]).expect(0);
    for (task, expected) in [
        ("staging_events", "succeeded"),
        ("load_users", "succeeded"),
        ("load_songplays", "succeeded"),
        ("load_artists", "up-to-date"),
    ] {
        assert_eq!(state(&changed.stdout, task), expected, "{task}\n{}", changed.stdout);
    }
    // load_songplays also needs the songs table, so the song branch is computed again.
    assert_eq!(state(&changed.stdout, "staging_songs"), "succeeded");
    assert_eq!(mtimes(&out.join("artists")), artists_before, "the artists table was not rewritten");

    // --force reruns everything; --force=TASK that task and what depends on it.
    let forced = run_sparkify(&input, &out, &["-q", "--force"]).expect(0);
    assert!(forced.stdout.contains("all 18 tasks succeeded"), "{}", forced.stdout);
    let one = run_sparkify(&input, &out, &["-q", "--force=load_time"]).expect(0);
    assert_eq!(state(&one.stdout, "load_time"), "succeeded");
    assert_eq!(state(&one.stdout, "load_users"), "up-to-date");
    let bad = run_sparkify(&input, &out, &["--force=load_tim"]).expect(2);
    assert!(bad.stderr.contains("did you mean `load_time`?"), "{}", bad.stderr);
}

#[test]
fn a_run_that_failed_in_the_middle_resumes_by_running_again() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lake");
    // Something in the way of the songs table: its load fails, the rest publishes.
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("songs"), "not a folder").unwrap();
    let first = run_sparkify(&sample(), &out, &["-q"]).expect(1);
    assert_eq!(state(&first.stdout, "load_songs"), "failed");
    assert_eq!(state(&first.stdout, "load_users"), "succeeded");
    assert!(first.stdout.contains("exists and is not a folder"), "{}", first.stdout);

    fs::remove_file(out.join("songs")).unwrap();
    let second = run_sparkify(&sample(), &out, &["-q"]).expect(0);
    for (task, expected) in [
        ("staging_songs", "succeeded"),
        ("songs", "succeeded"),
        ("check_songs", "succeeded"),
        ("load_songs", "succeeded"),
        ("staging_events", "up-to-date"),
        ("load_users", "up-to-date"),
        ("load_songplays", "up-to-date"),
    ] {
        assert_eq!(state(&second.stdout, task), expected, "{task}\n{}", second.stdout);
    }
    assert_eq!(read_table(&out.join("songs")).len(), 71);
}

#[test]
fn a_half_written_table_never_counts_as_published() {
    // dagrun's Parquet convention: a table is its manifest and the files it names. (A Delta
    // table is its log, which names only files that were whole when committed; resume reads only
    // the last load's commit, so that a one-day run does not list a 100,000-file table.)
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lake");
    let parquet = ["-q", "--set", "format=parquet"];
    run_sparkify(&sample(), &out, &parquet).expect(0);
    // A data file of a published table goes missing (a bad manual copy, a partial sync).
    let victim = files(&out.join("users")).into_iter().find(|f| f.ends_with(".parquet")).unwrap();
    fs::remove_file(out.join("users").join(victim)).unwrap();
    let dry = run_sparkify(&sample(), &out, &["--dry-run", "--set", "format=parquet"]).expect(0);
    assert!(dry.stdout.contains("runs: the published table is incomplete"), "{}", dry.stdout);
    let again = run_sparkify(&sample(), &out, &parquet).expect(0);
    assert_eq!(state(&again.stdout, "load_users"), "succeeded");
    assert_eq!(read_table(&out.join("users")).len(), 96);
}

/// The `details` of each extract in the latest run record of `out`.
fn extract_details(out: &std::path::Path) -> std::collections::BTreeMap<String, serde_json::Value> {
    let runs = out.join("_dagrun");
    let latest = fs::read_to_string(runs.join("LATEST")).unwrap();
    let record: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(runs.join(latest.trim()).join("run.json")).unwrap()).unwrap();
    let tasks = record["tasks"].as_array().unwrap();
    tasks
        .iter()
        .filter(|t| t["kind"] == "extract")
        .map(|t| (t["id"].as_str().unwrap().to_string(), t["output"]["details"].clone()))
        .collect()
}

#[test]
fn an_extract_of_unchanged_files_is_read_from_the_cache_of_the_run_that_read_them() {
    let tmp = tempfile::tempdir().unwrap();
    let input = sample_copy(tmp.path());
    let out = tmp.path().join("lake");
    run_sparkify(&input, &out, &["-q"]).expect(0);
    let reference: Vec<Vec<Row>> = TABLES.iter().map(|t| sorted_rows(&out.join(t))).collect();

    // Forced: the song files are the same, so their table comes from the cache; the sliced log
    // extract reads its files.
    run_sparkify(&input, &out, &["-q", "--force"]).expect(0);
    let details = extract_details(&out);
    assert!(details["staging_songs"]["cache"].as_str().unwrap().starts_with("the same files as run "), "{details:?}");
    assert!(details["staging_events"].get("cache").is_none(), "{details:?}");
    let again: Vec<Vec<Row>> = TABLES.iter().map(|t| sorted_rows(&out.join(t))).collect();
    assert!(again == reference, "the cached table gives the same lake");

    // --no-cache reads the files; so does a changed song file.
    run_sparkify(&input, &out, &["-q", "--force", "--no-cache"]).expect(0);
    assert!(extract_details(&out)["staging_songs"].get("cache").is_none());
    let song = input.join("song_data").join(&files(&input.join("song_data"))[0]);
    let text = fs::read_to_string(&song).unwrap();
    fs::write(&song, text.replace("\"year\": 0", "\"year\": 1")).unwrap();
    fs::write(&song, format!("{} ", fs::read_to_string(&song).unwrap())).unwrap();
    run_sparkify(&input, &out, &["-q"]).expect(0);
    assert!(extract_details(&out)["staging_songs"].get("cache").is_none());
    // One table per cached task is kept (the song extract and the transforms made from it; not
    // the sliced log extract nor what it feeds), each named by its `.json`.
    // Beside them, the content hashes of the local inputs.
    let cached: Vec<String> = files(&out.join("_dagrun/_cache"));
    let named: Vec<&str> = cached.iter().filter_map(|f| f.strip_suffix(".json")).collect();
    assert_eq!(named, ["artists", "songs", "staging_songs"], "{cached:?}");
    assert!(cached.iter().any(|f| f == "content-hashes.bin"), "{cached:?}");
    assert_eq!(cached.len(), 7, "{cached:?}");
}
