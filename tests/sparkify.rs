//! The Sparkify pipeline on the real public sample and on generated data: the contract's counts
//! and values, read back with a second Parquet reader.

use std::collections::BTreeSet;

use crate::support::*;

#[test]
fn the_real_sample_gives_the_contract_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lake");
    let run = run_sparkify(&sample(), &out, &["-q"]).expect(0);
    assert!(run.stdout.contains("all 18 tasks succeeded"), "{}", run.stdout);

    let songplays = read_table(&out.join("songplays"));
    let users = read_table(&out.join("users"));
    let songs = read_table(&out.join("songs"));
    let artists = read_table(&out.join("artists"));
    let time = read_table(&out.join("time"));
    let counts = [songplays.len(), users.len(), songs.len(), artists.len(), time.len()];
    assert_eq!(counts, [6820, 96, 71, 69, 6813]);

    // Exactly one play matches a song, with the values of the sample's one match.
    let matched: Vec<&Row> = songplays.iter().filter(|r| r["song_id"] != "null").collect();
    assert_eq!(matched.len(), 1);
    let m = matched[0];
    assert_eq!(m["song_id"], "SOZCTXZ12AB0182364");
    assert_eq!(m["artist_id"], "AR5KOSW1187FB35FF4");
    assert_eq!(m["user_id"], "15");
    assert_eq!(m["start_time"], "1542837407796");
    assert_eq!(m["level"], "paid");
    assert_eq!(m["session_id"], "818");
    assert_eq!((m["year"].as_str(), m["month"].as_str()), ("2018", "11"));
    // User agents keep their literal quotes.
    assert!(m["user_agent"].starts_with("\"Mozilla/5.0 (X11; Linux x86_64)"), "{}", m["user_agent"]);

    // songplay_id: a unique BIGINT.
    let ids: BTreeSet<i64> = songplays.iter().map(|r| r["songplay_id"].parse().unwrap()).collect();
    assert_eq!(ids.len(), 6820);
    assert!(songplays.iter().all(|r| r["user_id"].parse::<i64>().is_ok()));

    // users: the values of each user's latest play.
    let lily = users.iter().find(|r| r["user_id"] == "15").unwrap();
    assert_eq!(
        (lily["first_name"].as_str(), lily["last_name"].as_str(), lily["level"].as_str()),
        ("Lily", "Koch", "paid")
    );

    // time: ISO week and ISO weekday (2018-11-21 is the Wednesday of week 47).
    let t = time.iter().find(|r| r["start_time"] == "1542837407796").unwrap();
    let fields: Vec<&str> =
        ["hour", "day", "week", "weekday", "month", "year"].iter().map(|k| t[*k].as_str()).collect();
    assert_eq!(fields, ["21", "21", "47", "3", "11", "2018"]);

    // artists: values from the artist's record; songs partitioned by year and artist_id.
    let elena = artists.iter().find(|r| r["artist_id"] == "AR5KOSW1187FB35FF4").unwrap();
    assert_eq!(
        (elena["name"].as_str(), elena["location"].as_str(), elena["latitude"].as_str()),
        ("Elena", "Dubai UAE", "49.80388")
    );
    let in_folder = |table: &str, folder: &str| files(&out.join(table)).iter().any(|f| f.starts_with(folder));
    assert!(in_folder("songs", "year=0/artist_id=AR5KOSW1187FB35FF4/part-00000-"));
    assert!(in_folder("songplays", "year=2018/month=11/part-00000-"));
    assert!(artists.iter().any(|r| r["latitude"] == "null"), "null coordinates stay null");
}

#[test]
fn songplay_ids_are_identical_across_reruns() {
    let tmp = tempfile::tempdir().unwrap();
    let key = |out: &std::path::Path| -> BTreeSet<(String, String, String)> {
        read_table(&out.join("songplays"))
            .into_iter()
            .map(|r| (r["songplay_id"].clone(), r["start_time"].clone(), r["user_id"].clone()))
            .collect()
    };
    run_sparkify(&sample(), &tmp.path().join("a"), &["-q", "--jobs", "1"]).expect(0);
    run_sparkify(&sample(), &tmp.path().join("b"), &["-q", "--jobs", "4", "--threads", "1"]).expect(0);
    assert_eq!(key(&tmp.path().join("a")), key(&tmp.path().join("b")));
}

#[test]
fn the_readme_command_runs_on_the_committed_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let out = format!("output={}", tmp.path().join("out").display());
    let run =
        Run::from(dagrun().current_dir(repo()).args(["pipelines/sparkify.yaml", "--set", &out]).output().unwrap())
            .expect(0);
    assert!(run.stdout.contains("all 18 tasks succeeded"));
    // The committed data is generated, so plays do match songs.
    let matched = read_table(&tmp.path().join("out/songplays")).iter().filter(|r| r["song_id"] != "null").count();
    assert!(matched > 100, "{matched} plays matched a song");
}

#[test]
fn the_generator_is_deterministic_and_its_data_passes_the_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    let generate = |dir: &str, seed: &str| {
        let out = tmp.path().join(dir);
        run(&["generate", "--out", out.to_str().unwrap(), "--songs", "300", "--events", "4000", "--seed", seed])
            .expect(0);
        out
    };
    let a = generate("a", "7");
    let b = generate("b", "7");
    let c = generate("c", "8");
    let bytes = |dir: &std::path::Path| -> Vec<(String, Vec<u8>)> {
        files(dir).into_iter().map(|f| (f.clone(), std::fs::read(dir.join(&f)).unwrap())).collect()
    };
    assert_eq!(bytes(&a), bytes(&b), "same seed, same bytes");
    assert_ne!(bytes(&a), bytes(&c));
    assert_eq!(files(&a.join("song_data")).len(), 300);
    // Real-data quirks are present.
    let logs: String = files(&a.join("log_data"))
        .iter()
        .map(|f| std::fs::read_to_string(a.join("log_data").join(f)).unwrap())
        .collect();
    assert!(logs.contains("\"userId\":\"\""), "logged-out events");
    assert!(logs.contains("\"userAgent\":\"\\\"Mozilla\\/5.0"), "quoted, slash-escaped user agents");
    assert!(!logs.ends_with('\n'), "no trailing newline");

    let out = tmp.path().join("lake");
    let run = run_sparkify(&a, &out, &["-q"]).expect(0);
    assert!(!run.stdout.contains("quarantined"), "{}", run.stdout);
    let plays = read_table(&out.join("songplays"));
    let matched = plays.iter().filter(|r| r["song_id"] != "null").count();
    assert!(matched * 2 > plays.len(), "most plays match a song: {matched} of {}", plays.len());
    let users = read_table(&out.join("users"));
    assert!(users.iter().any(|u| u["level"] == "paid") && users.iter().any(|u| u["level"] == "free"));
}

#[test]
fn tables_spilled_to_disk_between_tasks_give_the_same_lake_and_leave_no_files() {
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("tmp");
    std::fs::create_dir_all(&scratch).unwrap();
    run_sparkify(&sample(), &tmp.path().join("memory"), &["-q", "--spill-above", "never"]).expect(0);
    let input = format!("input={}", sample().display());
    let output = format!("output={}", tmp.path().join("spilled").display());
    let pipeline = sparkify();
    let run = Run::from(
        dagrun()
            .env("TMPDIR", &scratch)
            .args([pipeline.to_str().unwrap(), "--set", &input, "--set", &output, "--spill-above", "0", "-v"])
            .output()
            .unwrap(),
    )
    .expect(0);
    assert!(run.stderr.contains("staging_events: larger than the spill threshold"), "{}", run.stderr);
    assert!(run.stderr.contains("plays: larger than the spill threshold"), "{}", run.stderr);
    for table in TABLES {
        assert_eq!(
            sorted_rows(&tmp.path().join("spilled").join(table)),
            sorted_rows(&tmp.path().join("memory").join(table)),
            "{table}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(&scratch).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "spill files left behind: {left:?}");
}
