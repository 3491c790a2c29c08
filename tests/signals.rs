//! Cancellation: Ctrl-C and SIGTERM cancel running tasks, let engines clean up, and exit 130;
//! `--fail-fast` cancels the rest of the run at the first failure.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::*;

const BLOCKED: &str = r#"name: blocked
vars: {input: in, output: out}
tasks:
  - id: events
    kind: extract
    path: ${input}
    format: jsonl
    schema: {ts: int}
  - id: load
    kind: load
    depends_on: [events]
    table: events
    path: ${output}/events
"#;

/// A FIFO nobody writes to: reading it blocks forever, like a stalled network file system.
fn stuck_file(path: &std::path::Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let fifo = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
}

/// Starts a run whose extract blocks forever reading a FIFO, waits until it reads, signals it.
fn interrupt(signal: i32) -> (Run, Duration) {
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(tmp.path(), "blocked.yaml", BLOCKED);
    stuck_file(&tmp.path().join("in/stuck.json"));
    let mut child = dagrun()
        .current_dir(tmp.path())
        .arg(p.to_str().unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "dagrun ended early: {seen}");
        seen.push_str(&line);
        if line.contains("events: reading") {
            break;
        }
    }
    let start = Instant::now();
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, signal) };
    let output = child.wait_with_output().unwrap();
    let elapsed = start.elapsed();
    let mut run = Run::from(output);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    run.stderr = seen + &rest;
    (run, elapsed)
}

#[test]
fn sigterm_cancels_the_run_and_exits_130() {
    let (run, elapsed) = interrupt(libc::SIGTERM);
    let run = run.expect(130);
    assert!(run.stderr.contains("SIGTERM received: cancelling the run"), "{}", run.stderr);
    assert_eq!(state(&run.stdout, "events"), "cancelled");
    assert_eq!(state(&run.stdout, "load"), "skipped");
    assert!(run.stdout.contains("interrupted: 0 succeeded, 1 cancelled, 1 not started"), "{}", run.stdout);
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
}

#[test]
fn ctrl_c_cancels_the_run_and_exits_130() {
    let (run, _) = interrupt(libc::SIGINT);
    let run = run.expect(130);
    assert!(run.stderr.contains("Ctrl-C received"), "{}", run.stderr);
}

#[test]
fn fail_fast_cancels_running_tasks_at_the_first_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let text = format!(
        "{BLOCKED}  - id: broken\n    kind: extract\n    path: nowhere\n    format: json\n    schema: {{ts: int}}\n    retry: {{max_attempts: 1}}\n"
    );
    let p = pipeline(tmp.path(), "two.yaml", &text);
    stuck_file(&tmp.path().join("in/stuck.json"));
    let start = Instant::now();
    let run =
        Run::from(dagrun().current_dir(tmp.path()).args([p.to_str().unwrap(), "--fail-fast", "-q"]).output().unwrap())
            .expect(1);
    assert!(start.elapsed() < Duration::from_secs(20), "took {:?}", start.elapsed());
    assert_eq!(state(&run.stdout, "broken"), "failed");
    assert_eq!(state(&run.stdout, "events"), "cancelled");
    assert_eq!(state(&run.stdout, "load"), "skipped");
    assert!(run.stdout.contains("not started: --fail-fast after `broken` failed"), "{}", run.stdout);
}
