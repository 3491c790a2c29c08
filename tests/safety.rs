//! Never lose data, never mix runs: a run never writes where it reads, never replaces a folder it
//! did not publish, reads every input once (links included), keeps every row, holds the lake alone,
//! and leaves no staging behind. Each test here reproduces a failure an adversarial test found.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::*;

/// Every file under `dir` with its bytes: to prove nothing was touched.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    files(dir).into_iter().map(|f| (f.clone(), fs::read(dir.join(&f)).unwrap())).collect()
}

fn set(key: &str, path: &Path) -> String {
    format!("{key}={}", path.display())
}

#[test]
fn a_load_over_its_own_input_is_refused_and_the_input_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = tmp.path().join("lake");
    let input = lake.join("songs");
    copy_dir(&sample(), &input);
    let before = contents(&input);
    let pipeline = sparkify();
    let args = |cmd: &'static str| {
        let mut v = vec![cmd.to_string(), pipeline.display().to_string()];
        v.extend(["--set".into(), set("input", &input), "--set".into(), set("output", &lake)]);
        v
    };
    for cmd in ["validate", "run"] {
        let run = Run::from(dagrun().args(args(cmd)).output().unwrap()).expect(2);
        let expected = format!(
            "error: load `load_songs` writes {0}/songs, which contains the input of extract `staging_songs` ({0}/songs/song_data)",
            lake.display()
        );
        assert!(run.stderr.contains(&expected), "{cmd}: {}", run.stderr);
        // Both places are shown with their lines.
        assert!(run.stderr.contains("    path: ${output}/songs"), "{}", run.stderr);
        assert!(
            run.stderr.contains(&format!("note: extract `staging_songs` reads {}/songs/song_data", lake.display()))
        );
        assert!(run.stderr.contains("    path: ${input}/song_data"), "{}", run.stderr);
    }
    assert_eq!(contents(&input), before, "the input is untouched");
    assert!(!lake.join("_dagrun").exists(), "nothing was written");
}

#[test]
fn loads_and_runs_folders_inside_or_around_an_input_are_refused_through_links_too() {
    let tmp = tempfile::tempdir().unwrap();
    let input = sample_copy(tmp.path());
    let text = fs::read_to_string(sparkify()).unwrap();
    // A load written straight into an input folder, and into the input root.
    for path in ["${input}/song_data", "${input}"] {
        let p = pipeline(tmp.path(), "p.yaml", &text.replace("path: ${output}/songs", &format!("path: {path}")));
        let run = Run::from(
            dagrun().args(["validate", p.to_str().unwrap(), "--set", &set("input", &input)]).output().unwrap(),
        )
        .expect(2);
        assert!(run.stderr.contains("error: load `load_songs` writes"), "{path}: {}", run.stderr);
    }
    // The runs folder as a table, and inside an input.
    let runs_as_table = text.replace("name: sparkify\n", "name: sparkify\nruns: ${output}/songs\n");
    let p = pipeline(tmp.path(), "runs.yaml", &runs_as_table);
    let run = Run::from(dagrun().args(["validate", p.to_str().unwrap()]).output().unwrap()).expect(2);
    assert!(
        run.stderr.contains("error: load `load_songs` writes output/songs, the same folder as the runs folder"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("note: the runs folder is output/songs\n 5 | runs: ${output}/songs"), "{}", run.stderr);
    let runs_in_input = text.replace("name: sparkify\n", "name: sparkify\nruns: ${input}/log_data/_runs\n");
    let p = pipeline(tmp.path(), "runs2.yaml", &runs_in_input);
    let run = Run::from(dagrun().args(["validate", p.to_str().unwrap()]).output().unwrap()).expect(2);
    assert!(
        run.stderr
            .contains("error: the runs folder is data/log_data/_runs, inside the input of extract `staging_events`"),
        "{}",
        run.stderr
    );
    // The output reached through a link to the input's folder is the input's folder.
    std::os::unix::fs::symlink(&input, tmp.path().join("alias")).unwrap();
    let run = run_sparkify(&input, &tmp.path().join("alias/song_data/..").join("song_data"), &[]);
    let run = run.expect(2);
    assert!(run.stderr.contains("(that is "), "the resolved place is shown: {}", run.stderr);
    assert!(run.stderr.contains("inside the input of extract `staging_songs`"), "{}", run.stderr);
}

#[test]
fn a_folder_dagrun_did_not_publish_is_never_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lake");
    fs::create_dir_all(out.join("songs/mine")).unwrap();
    fs::write(out.join("songs/mine/notes.txt"), "keep me").unwrap();
    let run = run_sparkify(&sample(), &out, &["-q"]).expect(1);
    assert_eq!(state(&run.stdout, "load_songs"), "failed");
    assert!(run.stdout.contains("refusing to replace"), "{}", run.stdout);
    assert!(run.stdout.contains("dagrun only replaces tables it created"), "{}", run.stdout);
    assert_eq!(fs::read_to_string(out.join("songs/mine/notes.txt")).unwrap(), "keep me");
    assert_eq!(files(&out.join("songs")), vec!["mine/notes.txt"]);
    // The other tables are published as usual.
    assert_eq!(read_table(&out.join("songplays")).len(), 6820);
}

#[test]
fn linked_input_folders_are_read_whatever_their_name_and_loops_once() {
    let tmp = tempfile::tempdir().unwrap();
    let input = sample_copy(tmp.path());
    // Half of November's logs live elsewhere, reached through a link named like a folder.
    let elsewhere = tmp.path().join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    let november = input.join("log_data/2018/11");
    for (i, name) in files(&november).into_iter().enumerate() {
        if i % 2 == 0 {
            fs::rename(november.join(&name), elsewhere.join(&name)).unwrap();
        }
    }
    std::os::unix::fs::symlink(&elsewhere, input.join("log_data/2018/late")).unwrap();
    // A loop whose name matches the glob, and one file reached twice.
    std::os::unix::fs::symlink(".", november.join("loop.json")).unwrap();
    let one = files(&elsewhere).into_iter().next().unwrap();
    std::os::unix::fs::symlink(elsewhere.join(&one), november.join("again.json")).unwrap();
    let out = tmp.path().join("lake");
    // Files under a link named `late` fit no day of `slice_path`: this run reads the input whole.
    let text = fs::read_to_string(sparkify()).unwrap();
    let unsliced = text.replacen("    slice_path: \"{year}/{month}/{year}-{month}-{day}-*.json\"\n", "", 1).replacen(
        "    slice_column: start_time\n    format: jsonl",
        "    format: jsonl",
        1,
    );
    assert!(!unsliced.contains("slice_path"), "the extract's slice is removed");
    let p = pipeline(tmp.path(), "sparkify.yaml", &unsliced);
    let input_var = format!("input={}", input.display());
    let output_var = format!("output={}", out.display());
    let run = Run::from(dagrun().arg(&p).args(["--set", &input_var, "--set", &output_var]).output().unwrap()).expect(0);
    assert_eq!(read_table(&out.join("songplays")).len(), 6820);
    assert!(
        run.stderr.contains("2018/11/loop.json leads to a folder already listed (2018/11): read once"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("is the same file as"), "{}", run.stderr);
    assert!(run.stderr.contains("staging_events"), "the warning names its task: {}", run.stderr);
}

/// One song file whose JSON is given in full.
fn add_song_json(input: &Path, name: &str, json: &str) {
    let dir = input.join("song_data/Z/Z/Z");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(format!("{name}.json")), json).unwrap();
}

fn song(song_id: &str, artist_id: &str) -> String {
    format!(
        "{{\"num_songs\": 1, \"artist_id\": {artist_id}, \"artist_latitude\": null, \"artist_longitude\": null, \"artist_location\": \"\", \"artist_name\": \"Test\", \"song_id\": \"{song_id}\", \"title\": \"T\", \"duration\": 100.0, \"year\": 1999}}"
    )
}

#[test]
fn rows_whose_partition_values_share_a_folder_are_all_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let input = sample_copy(tmp.path());
    add_song_json(&input, "null", &song("SONULL", "null"));
    add_song_json(&input, "empty", &song("SOEMPTY", "\"\""));
    add_song_json(&input, "literal", &song("SOLIT", "\"__HIVE_DEFAULT_PARTITION__\""));
    let out = tmp.path().join("lake");
    run_sparkify(&input, &out, &["-q", "--set", "format=parquet"]).expect(0);
    let songs = read_table(&out.join("songs"));
    assert_eq!(songs.len(), 74);
    let mut added: Vec<(&str, &str)> = songs
        .iter()
        .filter(|r| ["SONULL", "SOEMPTY", "SOLIT"].contains(&r["song_id"].as_str()))
        .map(|r| (r["song_id"].as_str(), r["artist_id"].as_str()))
        .collect();
    added.sort();
    assert_eq!(
        added,
        vec![
            ("SOEMPTY", "__HIVE_DEFAULT_PARTITION__"),
            ("SOLIT", "%5F_HIVE_DEFAULT_PARTITION__"),
            ("SONULL", "__HIVE_DEFAULT_PARTITION__")
        ]
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("songs/_manifest.json")).unwrap()).unwrap();
    let paths: Vec<&str> = manifest["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    let mut unique = paths.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), paths.len(), "no file is listed twice");
    let rows: u64 = manifest["files"].as_array().unwrap().iter().map(|f| f["rows"].as_u64().unwrap()).sum();
    assert_eq!((rows, manifest["rows"].as_u64().unwrap()), (74, 74));

    // As a Delta table, the log carries the values: null and empty are null, the literal is text.
    if !runtimes(&[Runtime::DeltaLake]) {
        return;
    }
    let delta = tmp.path().join("delta");
    run_sparkify(&input, &delta, &["-q"]).expect(0);
    let script = "import sys, json; from deltalake import DeltaTable; \
                  t = DeltaTable(sys.argv[1]).to_pyarrow_table().to_pydict(); \
                  print(json.dumps(sorted([[s, a] for s, a in zip(t['song_id'], t['artist_id']) \
                  if s in ('SONULL', 'SOEMPTY', 'SOLIT')], key=lambda r: r[0])), flush=True); \
                  import os; os._exit(0)";
    let out = std::process::Command::new("python3").args(["-c", script]).arg(delta.join("songs")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen, serde_json::json!([["SOEMPTY", null], ["SOLIT", "__HIVE_DEFAULT_PARTITION__"], ["SONULL", null]]));
}

#[test]
fn a_second_run_into_the_same_lake_stops_naming_the_holder_or_waits_for_it() {
    let tmp = tempfile::tempdir().unwrap();
    let first = Stuck::start(tmp.path(), &["--run-id", "first"]);
    let p = tmp.path().join("blocked.yaml");
    // The same run id changes nothing: the lease names a process, not a run id.
    for id in ["second", "first"] {
        let run =
            Run::from(dagrun().current_dir(tmp.path()).args([p.to_str().unwrap(), "--run-id", id]).output().unwrap())
                .expect(1);
        assert!(
            run.stderr.contains(
                "error: another run holds the lake at out/_dagrun/lease.json: run first of pipeline `blocked` on host"
            ),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains(&format!("(pid {})", first.child.id())), "{}", run.stderr);
        assert!(run.stderr.contains("lease expires 20"), "{}", run.stderr);
        assert!(run.stderr.contains("nothing was written"), "{}", run.stderr);
    }
    // A dry run and validate take no lease: they work while the lake is held.
    Run::from(dagrun().current_dir(tmp.path()).args([p.to_str().unwrap(), "--dry-run"]).output().unwrap()).expect(0);
    Run::from(dagrun().current_dir(tmp.path()).args(["validate", p.to_str().unwrap()]).output().unwrap()).expect(0);
    // A run that may wait (reading other input into the same lake) gets it once the first is done.
    fs::create_dir_all(tmp.path().join("in2")).unwrap();
    fs::write(tmp.path().join("in2/a.json"), "{\"ts\": 2}").unwrap();
    let mut waiting = dagrun()
        .current_dir(tmp.path())
        .args([p.to_str().unwrap(), "--run-id", "third", "--wait-for-lock", "60s", "--set", "input=in2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Release the first run only once the third says it waits.
    let mut third_err = BufReader::new(waiting.stderr.take().unwrap());
    let mut said = String::new();
    while !said.contains("waiting for the lake: run first") {
        let mut line = String::new();
        assert!(third_err.read_line(&mut line).unwrap() > 0, "the third run did not wait: {said}");
        said.push_str(&line);
    }
    first.release().expect(0);
    Run::from(waiting.wait_with_output().unwrap()).expect(0);
    std::io::Read::read_to_string(&mut third_err, &mut said).unwrap();
    assert!(said.contains("waiting for the lake: run first"), "{said}");
    assert!(!tmp.path().join("out/_dagrun/lease.json").exists(), "released at the end");
}

#[test]
fn the_lease_of_a_run_that_died_is_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lake");
    fs::create_dir_all(out.join("_dagrun")).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let lease = |host: &str, expires: u64| {
        serde_json::json!({
            "run_id": "dead", "token": "0", "pipeline": "sparkify", "host": host, "pid": 2_000_000_000u32,
            "started_at_ms": now - 60_000, "renewed_at_ms": now - 60_000, "expires_at_ms": expires
        })
        .to_string()
    };
    // Another host's lease that expired a minute ago.
    fs::write(out.join("_dagrun/lease.json"), lease("elsewhere", now - 1)).unwrap();
    let run = run_sparkify(&sample(), &out, &[]).expect(0);
    assert!(run.stderr.contains("took over the lease of a run that stopped renewing it: run dead"), "{}", run.stderr);
    // A lease of this machine, this boot and this pid namespace, whose process is gone, needs no
    // waiting.
    let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap().trim().to_string();
    let pid_ns = fs::read_link("/proc/self/ns/pid").unwrap().display().to_string();
    let mut here = serde_json::from_str::<serde_json::Value>(&lease(&host(), now + 3_600_000)).unwrap();
    here["identity"] = serde_json::json!({"boot_id": boot_id, "pid_ns": pid_ns, "start_ticks": 1});
    fs::write(out.join("_dagrun/lease.json"), here.to_string()).unwrap();
    let run = run_sparkify(&sample(), &out, &["--force"]).expect(0);
    assert!(
        run.stderr.contains("took over the lease of a run that is no longer running on this machine"),
        "{}",
        run.stderr
    );
    // The host name alone proves nothing (another container, a cloned VM): it is waited for.
    fs::write(out.join("_dagrun/lease.json"), lease(&host(), now + 3_600_000)).unwrap();
    let run = run_sparkify(&sample(), &out, &["--force"]).expect(1);
    assert!(run.stderr.contains("error: another run holds the lake"), "{}", run.stderr);
}

fn host() -> String {
    let out = std::process::Command::new("hostname").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn staging_left_by_a_killed_run_is_removed_by_the_next_one() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lake");
    run_sparkify(&sample(), &out, &["-q"]).expect(0);
    // What kill -9 leaves: staging folders beside two tables.
    for leftover in [".songs.staging-20260101T000000Z-dead-abcd1234-1", ".users.staging-x-1.old"] {
        fs::create_dir_all(out.join(leftover).join("year=2018")).unwrap();
        fs::write(out.join(leftover).join("year=2018/part-00000.parquet"), "partial").unwrap();
    }
    fs::create_dir_all(out.join(".mine")).unwrap();
    let run = run_sparkify(&sample(), &out, &["--force"]).expect(0);
    assert!(run.stderr.contains("removed what an unfinished run left"), "{}", run.stderr);
    let hidden: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert_eq!(hidden, vec![".mine"], "only dagrun's own leftovers go");
}

/// Sparkify-shaped data large enough that a run takes a while.
fn generated(dir: &Path) -> PathBuf {
    let data = dir.join("gen");
    run(&["generate", "--out", data.to_str().unwrap(), "--songs", "3000", "--events", "40000", "--seed", "7"])
        .expect(0);
    data
}

/// Whether `pid` has installed a handler for SIGTERM (bit 15 of SigCgt in /proc/PID/status).
fn catches_sigterm(pid: u32) -> bool {
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else { return false };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
}

#[test]
fn sigterm_at_any_moment_exits_130_and_leaves_no_staging() {
    let tmp = tempfile::tempdir().unwrap();
    let input = generated(tmp.path());
    let pipeline = sparkify();
    // Starts a run, waits until it catches SIGTERM, waits `delay` more, then signals it (or not).
    // The `bool` says whether the signal found the run still going (a run can be faster than the
    // one that measured the length).
    let run_signalled = |out: &Path, delay: Option<Duration>| -> (Run, Duration, bool) {
        let mut child = dagrun()
            .args([pipeline.to_str().unwrap(), "--set", &set("input", &input), "--set", &set("output", out), "-q"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !catches_sigterm(child.id()) {
            assert!(start.elapsed() < Duration::from_secs(30), "no SIGTERM handler after 30 s");
            std::thread::yield_now();
        }
        let caught = Instant::now();
        let mut signalled = false;
        if let Some(delay) = delay {
            std::thread::sleep(delay);
            if child.try_wait().unwrap().is_none() {
                // SAFETY: signalling our own child, which has not been reaped.
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                signalled = true;
            }
        }
        let run = Run::from(child.wait_with_output().unwrap());
        (run, caught.elapsed(), signalled)
    };
    // How long a whole run takes here, from the moment it catches the signal: the faster of two
    // (the first reads cold files).
    let (whole, first, _) = run_signalled(&tmp.path().join("whole"), None);
    whole.expect(0);
    let (again, second, _) = run_signalled(&tmp.path().join("whole-again"), None);
    again.expect(0);
    let length = first.min(second);
    let mut signalled_runs = 0;
    // As early as possible (the moment the handler exists), then at moments spread over the whole
    // run: reading, transforming, loading.
    let mut delays = vec![Duration::ZERO; 4];
    delays.extend((1..=20).map(|k| length.mul_f64(f64::from(k) / 25.0)));
    for (i, delay) in delays.into_iter().enumerate() {
        let out = tmp.path().join(format!("out{i}"));
        let (run, _, signalled) = run_signalled(&out, Some(delay));
        if !signalled {
            // Done before its moment came: nothing to check but that it succeeded.
            run.expect(0);
            continue;
        }
        signalled_runs += 1;
        assert_eq!(
            run.code, 130,
            "after {delay:?} of {length:?}: exit {} (-1: killed by the signal)\n{}\n{}",
            run.code, run.stdout, run.stderr
        );
        if out.exists() {
            let hidden: Vec<String> = fs::read_dir(&out)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.'))
                .collect();
            assert!(hidden.is_empty(), "after {delay:?} of {length:?}: staging left behind: {hidden:?}");
            assert!(!out.join("_dagrun/lease.json").exists(), "after {delay:?}: the lease was not released");
        }
    }
    assert!(signalled_runs >= 16, "only {signalled_runs} of 24 runs were still going when signalled");
}

#[test]
fn timestamps_readers_cannot_read_are_quarantined_and_duckdb_reads_the_tables() {
    if !runtimes(&[Runtime::DuckDb]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let input = sample_copy(tmp.path());
    let events = input.join("log_data/2018/11/2018-11-30-events.json");
    let text = fs::read_to_string(&events).unwrap();
    let first = text.lines().next().unwrap();
    let ts = first.split("\"ts\":").nth(1).unwrap().split(',').next().unwrap();
    let far = first.replace(&format!("\"ts\":{ts}"), "\"ts\":1000000000000000000");
    fs::write(&events, format!("{text}\n{far}")).unwrap();
    let out = tmp.path().join("lake");
    let run = run_sparkify(&input, &out, &["-q"]).expect(0);
    assert!(run.stdout.contains("1 record quarantined in"), "{}", run.stdout);
    let q = files(&out.join("_dagrun")).into_iter().find(|f| f.ends_with("quarantine/staging_events.jsonl")).unwrap();
    let record = fs::read_to_string(out.join("_dagrun").join(q)).unwrap();
    assert!(record.contains("outside the years 0001 to 9999"), "{record}");
    let script = format!(
        "import duckdb\nfor t in ('songplays', 'time'):\n    print(t, duckdb.sql(\"SELECT count(*) FROM read_parquet('{}/' || '\" + t + \"' || '/**/*.parquet', hive_partitioning=true)\").fetchall()[0][0])",
        out.display()
    );
    let read = std::process::Command::new("python3").args(["-c", &script]).output().unwrap();
    assert!(read.status.success(), "{}", String::from_utf8_lossy(&read.stderr));
    assert_eq!(String::from_utf8_lossy(&read.stdout), "songplays 6820\ntime 6813\n");
}

#[test]
fn a_byte_order_mark_costs_no_record() {
    let tmp = tempfile::tempdir().unwrap();
    let input = sample_copy(tmp.path());
    let file = input.join("log_data/2018/11/2018-11-30-events.json");
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend(fs::read(&file).unwrap());
    fs::write(&file, bytes).unwrap();
    let out = tmp.path().join("lake");
    let run = run_sparkify(&input, &out, &["-q"]).expect(0);
    assert!(!run.stdout.contains("quarantined in"), "{}", run.stdout);
    assert_eq!(read_table(&out.join("songplays")).len(), 6820);
}

#[test]
fn generate_never_replaces_data_it_did_not_make() {
    let tmp = tempfile::tempdir().unwrap();
    let input = sample_copy(tmp.path());
    let before = contents(&input);
    let refused = run(&["generate", "--out", input.to_str().unwrap(), "--songs", "5", "--events", "10"]).expect(1);
    assert!(refused.stderr.contains("was not made by `dagrun generate`"), "{}", refused.stderr);
    assert_eq!(contents(&input), before);
    // Its own output it replaces.
    let data = tmp.path().join("gen");
    run(&["generate", "--out", data.to_str().unwrap(), "--songs", "5", "--events", "10"]).expect(0);
    run(&["generate", "--out", data.to_str().unwrap(), "--songs", "6", "--events", "10"]).expect(0);
    assert_eq!(files(&data.join("song_data")).len(), 6);
}

#[test]
fn validate_env_proves_an_output_folder_writable_instead_of_trusting_mode_bits() {
    if !runtimes(&[Runtime::MountNamespace]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (lake, mount) = (tmp.path().join("lake"), tmp.path().join("mounted"));
    fs::create_dir_all(&lake).unwrap();
    fs::create_dir_all(&mount).unwrap();
    let pipeline = sparkify();
    // A read-only mount whose folders still say rwx: only a real write finds out. The mount lives
    // in a mount namespace of its own (as root, or as a user mapped to root where that is allowed).
    let script = format!(
        "mount --bind -o ro '{lake}' '{mount}' && exec '{dagrun}' validate --env '{pipeline}' --set input='{input}' --set output='{mount}/out'",
        lake = lake.display(),
        mount = mount.display(),
        dagrun = env!("CARGO_BIN_EXE_dagrun"),
        pipeline = pipeline.display(),
        input = sample().display(),
    );
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let namespace: &[&str] = if root { &["--mount"] } else { &["--mount", "--map-root-user"] };
    let out = std::process::Command::new("unshare").args(namespace).args(["sh", "-c", &script]).output().unwrap();
    let run = Run::from(out).expect(1);
    assert!(run.stdout.contains(&format!("FAIL write {}/out/songs", mount.display())), "{}", run.stdout);
    assert!(run.stdout.contains("is on a read-only file system (a probe file could not be created)"), "{}", run.stdout);
    // The same folder, writable, passes, and the probe leaves nothing behind.
    let ok = run_validate_env(&pipeline, &lake);
    assert!(ok.stdout.contains(&format!("ok   write {}/out/songs", lake.display())), "{}", ok.stdout);
    assert!(files(&lake).is_empty(), "{:?}", files(&lake));
}

fn run_validate_env(pipeline: &Path, lake: &Path) -> Run {
    let output = format!("output={}/out", lake.display());
    let input = format!("input={}", sample().display());
    run(&["validate", "--env", pipeline.to_str().unwrap(), "--set", &input, "--set", &output]).expect(0)
}

#[test]
fn validate_env_probes_an_existing_runs_folder_and_table_folder_themselves() {
    if !runtimes(&[Runtime::MountNamespace]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lake = tmp.path().join("lake");
    for folder in ["out/_dagrun", "out/songs"] {
        fs::create_dir_all(lake.join(folder)).unwrap();
    }
    // The lake is writable; its runs folder and one table folder are read-only mounts.
    let script = format!(
        "mount --bind -o ro '{lake}/out/_dagrun' '{lake}/out/_dagrun' && mount --bind -o ro '{lake}/out/songs' '{lake}/out/songs' \
         && exec '{dagrun}' validate --env '{pipeline}' --set input='{input}' --set output='{lake}/out'",
        lake = lake.display(),
        dagrun = env!("CARGO_BIN_EXE_dagrun"),
        pipeline = sparkify().display(),
        input = sample().display(),
    );
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let namespace: &[&str] = if root { &["--mount"] } else { &["--mount", "--map-root-user"] };
    let out = std::process::Command::new("unshare").args(namespace).args(["sh", "-c", &script]).output().unwrap();
    let run = Run::from(out).expect(1);
    assert!(run.stdout.contains(&format!("FAIL write {}/out/_dagrun", lake.display())), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("FAIL write {}/out/songs", lake.display())), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("ok   write {}/out/users", lake.display())), "{}", run.stdout);
}

#[test]
fn s3_paths_with_dot_segments_an_empty_output_and_dagruns_own_names_as_run_ids_are_refused() {
    // An empty `output` would put the tables and the runs folder at the file system's root.
    let empty = run(&["validate", sparkify().to_str().unwrap(), "--set", "output="]).expect(2);
    assert!(
        empty.stderr.contains("`${output}` is empty, so load `load_songs` writes /songs, at the file system's root"),
        "{}",
        empty.stderr
    );
    assert!(empty.stderr.contains("the runs folder would be /_dagrun"), "{}", empty.stderr);
    for output in ["s3://lake/in/../star", "s3://lake/./star", "s3://lake//star"] {
        let run = run(&["validate", sparkify().to_str().unwrap(), "--set", &format!("output={output}")]).expect(2);
        assert!(
            run.stderr.contains("S3 keys are literal, so it is not a folder step there"),
            "{output}: {}",
            run.stderr
        );
    }
    for id in ["LATEST", "latest", "_cache"] {
        let run = run(&[sparkify().to_str().unwrap(), "--run-id", id, "--dry-run"]).expect(2);
        assert!(run.stderr.contains("those are dagrun's own names in the runs folder"), "{id}: {}", run.stderr);
    }
}
