//! Publishing: atomic, replaces the previous table, survives failures, cannot escape its folder.

use std::fs;
use std::path::Path;

use crate::support::*;

/// One song file, shaped like the real ones.
fn add_song(input: &Path, name: &str, song_id: &str, artist_id: &str, year: &str) {
    let dir = input.join("song_data/Z/Z/Z");
    fs::create_dir_all(&dir).unwrap();
    let text = format!(
        "{{\"num_songs\": 1, \"artist_id\": {artist_id:?}, \"artist_latitude\": null, \"artist_longitude\": null, \"artist_location\": \"\", \"artist_name\": \"Test\", \"song_id\": \"{song_id}\", \"title\": \"T\", \"duration\": 100.0, \"year\": {year}}}"
    );
    fs::write(dir.join(format!("{name}.json")), text).unwrap();
}

/// A play by user 15 later than every event of the sample, so its values win in `users`.
fn add_late_play(input: &Path, level: &str) {
    let line = format!(
        "{{\"artist\":\"X\",\"auth\":\"Logged In\",\"firstName\":\"Lily\",\"gender\":\"F\",\"itemInSession\":0,\"lastName\":\"Koch\",\"length\":1.0,\"level\":\"{level}\",\"location\":\"Chicago\",\"method\":\"PUT\",\"page\":\"NextSong\",\"registration\":1.0,\"sessionId\":1,\"song\":\"Y\",\"status\":200,\"ts\":1543622400000,\"userAgent\":\"x\",\"userId\":\"15\"}}"
    );
    std::fs::create_dir_all(input.join("log_data/2018/12")).unwrap();
    fs::write(input.join("log_data/2018/12/2018-12-01-late.json"), line).unwrap();
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    files(dir).into_iter().map(|f| (f.clone(), fs::read(dir.join(&f)).unwrap())).collect()
}

#[test]
fn rerunning_replaces_each_table_without_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lake");
    run_sparkify(&sample(), &out, &["-q", "--set", "format=parquet"]).expect(0);
    let first = files(&out.join("songs"));
    run_sparkify(&sample(), &out, &["-q", "--set", "format=parquet"]).expect(0);
    assert_eq!(files(&out.join("songs")), first, "same deterministic file names");
    assert_eq!(read_table(&out.join("songplays")).len(), 6820);
    assert_eq!(read_table(&out.join("songs")).len(), 71);
    // No staging folders are left behind.
    let leftovers: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(out.join("songs/_SUCCESS").exists() && out.join("songs/_manifest.json").exists());
}

#[test]
fn a_failed_check_publishes_nothing_downstream_and_keeps_the_previous_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lake");
    run_sparkify(&sample(), &out, &["-q"]).expect(0);
    let users_before = snapshot(&out.join("users"));
    let plays_before = snapshot(&out.join("songplays"));

    let input = sample_copy(tmp.path());
    add_late_play(&input, "gold");
    let run = run_sparkify(&input, &out, &["-q"]).expect(1);
    assert_eq!(state(&run.stdout, "check_users"), "failed");
    assert_eq!(state(&run.stdout, "load_users"), "skipped");
    assert_eq!(state(&run.stdout, "load_songs"), "succeeded");
    assert!(run.stdout.contains("1 of 5 checks failed on `users`: accepted_values(level)"), "{}", run.stdout);
    // The failing rows are shown in the log.
    assert!(
        run.stderr.contains("user_id=15, first_name=\"Lily\", last_name=\"Koch\", gender=\"F\", level=\"gold\""),
        "{}",
        run.stderr
    );
    assert_eq!(snapshot(&out.join("users")), users_before);
    assert_eq!(snapshot(&out.join("songplays")), plays_before);
}

#[test]
fn a_failed_load_leaves_the_previous_table_intact_and_cleans_its_staging() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lake");
    run_sparkify(&sample(), &out, &["-q"]).expect(0);
    let songs_before = snapshot(&out.join("songs"));

    let input = sample_copy(tmp.path());
    add_song(&input, "TRLONG", "SOLONG", &"A".repeat(300), "2000");
    let run = run_sparkify(&input, &out, &["-q"]).expect(1);
    assert_eq!(state(&run.stdout, "load_songs"), "failed");
    assert!(run.stdout.contains("would be 310 bytes long; file systems allow 255"), "{}", run.stdout);
    assert_eq!(snapshot(&out.join("songs")), songs_before);
    // The other tables were published from the new input.
    assert_eq!(read_table(&out.join("artists")).len(), 70);
    let hidden: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "staging left behind: {hidden:?}");
}

#[test]
fn partition_values_cannot_escape_the_table_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let input = sample_copy(tmp.path());
    add_song(&input, "TRESC1", "SOESC1", "../../escaped", "2000");
    add_song(&input, "TRESC2", "SOESC2", "a/b", "2000");
    add_song(&input, "TRESC3", "SOESC3", "..", "null");
    add_song(&input, "TRESC4", "SOESC4", "", "1999");
    for format in ["parquet", "delta"] {
        let out = tmp.path().join(format!("lake-{format}"));
        run_sparkify(&input, &out, &["-q", "--set", &format!("format={format}")]).expect(0);
        // Nothing outside the output folder, nothing outside the table folder.
        assert!(!tmp.path().join("escaped").exists() && !out.join("escaped").exists());
        let folders: Vec<String> = files(&out.join("songs"))
            .into_iter()
            .filter_map(|f| f.rsplit_once('/').map(|(dir, _)| dir.to_string()))
            .collect();
        for expected in [
            "year=2000/artist_id=..%2F..%2Fescaped",
            "year=2000/artist_id=a%2Fb",
            "year=__HIVE_DEFAULT_PARTITION__/artist_id=..",
            "year=1999/artist_id=__HIVE_DEFAULT_PARTITION__",
        ] {
            assert!(folders.contains(&expected.to_string()), "{format}: {expected} in {folders:#?}");
        }
        // Read back by a reader we did not write (the Delta log's escaped paths included).
        assert_eq!(read_table(&out.join("songs")).len(), 75, "{format}");
    }
}
