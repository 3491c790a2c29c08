//! The fenced lake: a run that lost its lease writes nothing, a takeover trusts no host name, and
//! cleanup takes only what dagrun wrote. Each test reproduces a failure an adversarial test found:
//! a run frozen inside its commit, a container with the same host name, a Spark file and a lake
//! inside a table, two runs folders on one lake.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use crate::support::*;

/// Generated Sparkify data over ten days.
fn ten_days(dir: &Path) -> PathBuf {
    let out = dir.join("input");
    run(&[
        "generate",
        "--out",
        out.to_str().unwrap(),
        "--songs",
        "200",
        "--events",
        "3000",
        "--days",
        "10",
        "--seed",
        "5",
    ])
    .expect(0);
    out
}

fn set(key: &str, path: &Path) -> String {
    format!("{key}={}", path.display())
}

/// Starts Sparkify from `input` into `lake` in the background.
fn spawn_sparkify(input: &Path, lake: &Path, extra: &[&str]) -> Child {
    dagrun()
        .arg(sparkify())
        .args(["--set", &set("input", input), "--set", &set("output", lake), "-q"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill with a child's pid and a valid signal.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// Every commit of the Delta table at `dir`: (version, run id of dagrun's commitInfo).
fn commits(dir: &Path) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for name in files(&dir.join("_delta_log")) {
        let Some(version) = name.strip_suffix(".json").and_then(|v| v.parse::<u64>().ok()) else { continue };
        let text = fs::read_to_string(dir.join("_delta_log").join(&name)).unwrap();
        let run = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|a| a["commitInfo"]["dagrun"]["run_id"].as_str().map(String::from))
            .unwrap_or_default();
        out.push((version, run));
    }
    out.sort();
    out
}

/// Watches a folder for new files with inotify, so that a test can act the moment one appears.
struct Watch {
    fd: i32,
}

impl Watch {
    fn new(dir: &Path) -> Watch {
        // SAFETY: plain system calls with a valid NUL-terminated path.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        assert!(fd >= 0);
        let path = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
        // SAFETY: as above.
        assert!(unsafe { libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_CREATE) } >= 0);
        Watch { fd }
    }

    /// Blocks until a file whose name satisfies `wanted` is created; returns its name.
    fn next(&self, wanted: impl Fn(&str) -> bool) -> String {
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reading into a buffer of its length.
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            assert!(n > 0, "inotify read failed");
            let mut at = 0usize;
            while at + 16 <= n as usize {
                let len = u32::from_ne_bytes(buf[at + 12..at + 16].try_into().unwrap()) as usize;
                let raw = &buf[at + 16..at + 16 + len];
                let name =
                    String::from_utf8_lossy(&raw[..raw.iter().position(|&b| b == 0).unwrap_or(len)]).into_owned();
                if wanted(&name) {
                    return name;
                }
                at += 16 + len;
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor this owns.
        unsafe { libc::close(self.fd) };
    }
}

/// The frozen-commit scenario on disk: run A is stopped (SIGSTOP) the moment it writes the log
/// entry of its `songplays` commit, after every check it makes; run B takes the lake over once
/// A's lease expires, and commits; A wakes. A must not commit, nor point `LATEST` at itself, and
/// every table must read as one full run over the input.
#[test]
fn a_run_frozen_inside_its_commit_wakes_fenced_and_leaves_every_table_as_a_full_run() {
    if !runtimes(&[Runtime::DeltaLake]) {
        return;
    }
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let input = ten_days(tmp.path());
    let full = tmp.path().join("full");
    run_sparkify(&input, &full, &["-q"]).expect(0);
    let lake = tmp.path().join("lake");
    run_sparkify(&input, &lake, &["-q"]).expect(0);
    let day =
        files(&input.join("log_data")).iter().map(|f| f.rsplit('/').next().unwrap()[..10].to_string()).nth(4).unwrap();
    let songplays = lake.join("songplays");

    // A's log entry is a hidden temporary file first, synced, then linked into place: it is
    // stopped in between. Should it win that race anyway (its commit then landed while it held
    // the lake, which is no test of fencing), the scenario is played again.
    let mut frozen = None;
    for round in 0..5 {
        let before = commits(&songplays).len() as u64;
        let entry = format!(".{before:020}.json.tmp-");
        let watch = Watch::new(&songplays.join("_delta_log"));
        let a =
            spawn_sparkify(&input, &lake, &["--partition", &day, "--force", "--lease-ttl", "3s", "--run-id", "frozen"]);
        watch.next(|name| name.starts_with(&entry));
        signal(&a, libc::SIGSTOP);
        if commits(&songplays).len() as u64 == before {
            frozen = Some(a);
            break;
        }
        signal(&a, libc::SIGCONT);
        Run::from(a.wait_with_output().unwrap()).expect(0);
        eprintln!("round {round}: the commit landed before the stop; again");
    }
    let a = frozen.expect("run A was never stopped inside its commit");
    let held = commits(&songplays);

    // B waits for A's lease to expire (A is alive, so nothing proves it dead), then takes over.
    let b = run_sparkify(
        &input,
        &lake,
        &["-q", "--partition", &day, "--force", "--wait-for-lock", "60s", "--run-id", "taker"],
    )
    .expect(0);
    assert!(b.stderr.contains("took over the lease of a run that stopped renewing it: run frozen"), "{}", b.stderr);
    let after_b = commits(&songplays);
    assert_eq!(after_b.len(), held.len() + 1, "{after_b:?}");
    assert_eq!(after_b.last().unwrap().1, "taker");

    signal(&a, libc::SIGCONT);
    let a = Run::from(a.wait_with_output().unwrap()).expect(1);
    assert!(
        a.stderr.contains("the run lost its lease on the lake")
            || a.stderr.contains("no longer holds the lake's lease"),
        "{}",
        a.stderr
    );
    // A committed nothing more, anywhere, and `LATEST` names B.
    for table in TABLES {
        let runs: Vec<String> = commits(&lake.join(table)).into_iter().map(|(_, r)| r).collect();
        let last_taker = runs.iter().rposition(|r| r == "taker");
        assert!(
            runs.iter().enumerate().all(|(i, r)| r != "frozen" || last_taker.is_none_or(|t| i < t)),
            "{table}: {runs:?}"
        );
    }
    assert_eq!(fs::read_to_string(lake.join("_dagrun/LATEST")).unwrap().trim(), "taker");
    // Every table reads (deltalake lists no file that is gone) and equals a full run.
    for table in TABLES {
        for file in delta_files(&lake.join(table)) {
            assert!(
                lake.join(table).join(&file).exists(),
                "{table}/{file} is gone: {:?}\n--- A\n{}\n--- B\n{}",
                commits(&lake.join(table)),
                a.stderr,
                b.stderr
            );
        }
    }
    for table in TABLES {
        assert_eq!(sorted_rows(&lake.join(table)), sorted_rows(&full.join(table)), "{table}");
    }
    // No data file is left that no commit names: B removed what A wrote once it had committed.
    let named = delta_files(&songplays);
    let data: Vec<String> = files(&songplays).into_iter().filter(|f| f.ends_with(".parquet")).collect();
    let history: String = files(&songplays.join("_delta_log"))
        .iter()
        .filter(|f| f.ends_with(".json"))
        .map(|f| fs::read_to_string(songplays.join("_delta_log").join(f)).unwrap())
        .collect();
    for file in &data {
        let name = file.rsplit('/').next().unwrap();
        assert!(named.contains(file) || history.contains(name), "{file} belongs to no commit");
    }
    // And the lake knows day D is published.
    let again = run_sparkify(&input, &lake, &["-q", "--partition", &day]).expect(0);
    assert!(again.stdout.contains("nothing to run"), "{}", again.stdout);
}

#[test]
fn a_run_in_another_pid_namespace_with_the_same_host_name_cannot_take_over_a_live_run() {
    if !runtimes(&[Runtime::PidNamespace]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let first = Stuck::start(tmp.path(), &["--run-id", "first"]);
    let file = tmp.path().join("blocked.yaml");
    fs::create_dir_all(tmp.path().join("in2")).unwrap();
    fs::write(tmp.path().join("in2/a.json"), "{\"ts\": 2}").unwrap();
    // A second container on this machine: its own pid namespace (where the first run's pid
    // names no process, or another one), the same host name.
    let second = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(env!("CARGO_BIN_EXE_dagrun"))
        .args([file.to_str().unwrap(), "--set", "input=in2", "--run-id", "second"])
        .current_dir(tmp.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let second = Run::from(second).expect(1);
    assert!(
        second.stderr.contains("error: another run holds the lake at out/_dagrun/lease.json: run first"),
        "{}",
        second.stderr
    );
    assert!(!second.stderr.contains("took over"), "{}", second.stderr);
    first.release().expect(0);
    let rows = read_table(&tmp.path().join("out/events"));
    assert_eq!(rows.len(), 1, "the first run's one row: {rows:?}");
}

#[test]
fn two_pipelines_writing_one_lake_exclude_each_other_whatever_their_runs_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let first = Stuck::start(tmp.path(), &["--run-id", "first"]);
    let elsewhere = pipeline(tmp.path(), "other.yaml", &BLOCKED.replace("tasks:", "runs: other-runs\ntasks:"));
    let second = Run::from(
        dagrun()
            .current_dir(tmp.path())
            .args([elsewhere.to_str().unwrap(), "--set", "input=in2", "--run-id", "second"])
            .output()
            .unwrap(),
    )
    .expect(1);
    assert!(
        second.stderr.contains("error: another run holds the lake at out/_dagrun/lease.json: run first"),
        "{}",
        second.stderr
    );
    assert!(!tmp.path().join("other-runs/lease.json").exists(), "what it took first is given back");
    assert!(!tmp.path().join("other-runs").join("second").exists(), "nothing was written");
    first.release().expect(0);
}

#[test]
fn cleanup_takes_only_what_dagrun_wrote_and_a_lake_inside_a_table_survives() {
    if !runtimes(&[Runtime::DeltaLake]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let input = sample();
    let lake = tmp.path().join("lake");
    run_sparkify(&input, &lake, &["-q"]).expect(0);
    let songplays = lake.join("songplays");
    let partition = files(&songplays).into_iter().find(|f| f.ends_with(".parquet")).unwrap();
    let folder = partition.rsplit_once('/').unwrap().0.to_string();
    let foreign = [
        "exports/2018/part-00000-2f6b3c1e-7a5d-4b9e-9c3f-0d1e2f3a4b5c-c000.snappy.parquet".to_string(),
        format!("{folder}/part-00000-2f6b3c1e-7a5d-4b9e-9c3f-0d1e2f3a4b5c-c000.snappy.parquet"),
        "notes/part-00000-someone-deadbeef-1.parquet".to_string(),
    ];
    for f in &foreign {
        fs::create_dir_all(songplays.join(f).parent().unwrap()).unwrap();
        fs::write(songplays.join(f), b"not dagrun's").unwrap();
    }
    // What a killed run of dagrun left: a data file no version names, in a partition folder, and
    // the temporary file of a log entry it never linked.
    let orphan = format!("{folder}/part-00000-20200101T000000Z-dead-0badf00d-1.parquet");
    fs::write(songplays.join(&orphan), b"a killed run's").unwrap();
    fs::write(songplays.join("_delta_log/.00000000000000000009.json.tmp-4242-123"), b"{}").unwrap();

    // A second lake, made elsewhere and moved inside the songs table (validate refuses to make
    // one there).
    let inner_made = tmp.path().join("inner");
    run_sparkify(&input, &inner_made, &["-q"]).expect(0);
    let inner = lake.join("songs/inner");
    fs::rename(&inner_made, &inner).unwrap();
    let inner_files = files(&inner);
    let refused =
        run(&["validate", sparkify().to_str().unwrap(), "--set", &set("output", &lake.join("songs"))]).expect(2);
    assert!(
        refused.stderr.contains(&format!(
            "inside the table {} (it holds a Delta log)",
            fs::canonicalize(lake.join("songs")).unwrap().display()
        )),
        "{}",
        refused.stderr
    );

    // The next run commits every table, then removes what dagrun's own killed runs left.
    run_sparkify(&input, &lake, &["-q", "--force"]).expect(0);
    for f in &foreign {
        assert_eq!(fs::read(songplays.join(f)).unwrap(), b"not dagrun's", "{f}");
    }
    assert!(!songplays.join(&orphan).exists(), "a killed run's file goes once the table is committed");
    assert!(!songplays.join("_delta_log/.00000000000000000009.json.tmp-4242-123").exists());
    assert_eq!(files(&inner), inner_files, "the lake inside the songs table is untouched");
    for table in TABLES {
        assert!(!read_table(&inner.join(table)).is_empty(), "{table} of the inner lake still reads");
    }
}

/// Another writer (here the `deltalake` package) commits to a table between the moment a load
/// reads it and its commit: the load's commit is never rebased over that version. It fails as a
/// conflict, and the task's next attempt reads the new version and commits right after it.
#[test]
fn a_version_another_writer_took_first_is_not_rebased_over_and_the_load_retries_from_it() {
    if !runtimes(&[Runtime::DeltaLake]) {
        return;
    }
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let input = sample();
    let lake = tmp.path().join("lake");
    run_sparkify(&input, &lake, &["-q"]).expect(0);
    let users = lake.join("users");
    let expected = sorted_rows(&users);
    // `users` has no partitions: its new data file appears at the top, after the load read v0.
    let watch = Watch::new(&users);
    let a = spawn_sparkify(&input, &lake, &["--force", "--run-id", "again"]);
    watch.next(|name| name.starts_with("part-") && name.contains("-again-"));
    signal(&a, libc::SIGSTOP);
    let script = "import sys, os; from deltalake import DeltaTable, write_deltalake; \
                  t = DeltaTable(sys.argv[1]).to_pyarrow_table().slice(0, 1); \
                  write_deltalake(sys.argv[1], t, mode='append'); os._exit(0)";
    let out = std::process::Command::new("python3").args(["-c", script]).arg(&users).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    signal(&a, libc::SIGCONT);
    let a = Run::from(a.wait_with_output().unwrap()).expect(0);
    assert!(
        a.stdout.contains("version 1 was committed by another writer after this load read version 0")
            || a.stderr.contains("version 1 was committed by another writer after this load read version 0"),
        "{}\n{}",
        a.stdout,
        a.stderr
    );
    let line = a.stdout.lines().find(|l| l.starts_with("load_users ")).unwrap();
    assert_eq!(line.split_whitespace().nth(3), Some("2"), "a second attempt: {line}");
    let runs: Vec<String> = commits(&users).into_iter().map(|(_, r)| r).collect();
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert_eq!((runs[1].as_str(), runs[2].as_str()), ("", "again"), "the other writer's, then the load's after it");
    assert_eq!(sorted_rows(&users), expected, "the load replaced the whole table, the other writer's row too");
}
