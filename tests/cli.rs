//! The command line: exit codes, validation reports, graphs, dry runs, flags and logs.

use std::io::Read;
use std::process::Stdio;

use crate::support::*;

const BROKEN: &str = r#"name: broken
vars:
  input: data
tasks:
  - id: events
    kind: extract
    path: ${inptu}/log_data
    format: jsonl
    schema: {ts: int}
  - id: plays
    kind: transfrom
    sql: SELECT * FROM events
  - id: users
    kind: transform
    depends_on: [event, load_users]
    sql: SELECT * FROM events
    retry: {max_attempts: 3, multiplier: 0.5}
  - id: load_users
    kind: load
    depends_on: [users]
    table: users
    path: out/users
    partiton_by: [year]
    timeout: 10 parsecs
"#;

#[test]
fn validate_reports_every_problem_with_its_place_and_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    pipeline(tmp.path(), "broken.yaml", BROKEN);
    let run = Run::from(dagrun().current_dir(tmp.path()).args(["validate", "broken.yaml"]).output().unwrap()).expect(2);
    assert!(run.stdout.is_empty());
    insta::assert_snapshot!(run.stderr);
}

#[test]
fn a_run_of_an_invalid_pipeline_exits_2_and_runs_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    pipeline(tmp.path(), "broken.yaml", BROKEN);
    let run = Run::from(dagrun().current_dir(tmp.path()).args(["broken.yaml"]).output().unwrap()).expect(2);
    assert!(run.stderr.contains("broken.yaml:7:11: error: unknown variable `inptu`"), "{}", run.stderr);
    assert!(!tmp.path().join("out").exists());
}

#[test]
fn validate_accepts_the_sparkify_pipeline() {
    let run = Run::from(dagrun().current_dir(repo()).args(["validate", "pipelines/sparkify.yaml"]).output().unwrap())
        .expect(0);
    assert_eq!(run.stdout, "pipelines/sparkify.yaml is valid: pipeline sparkify, 18 tasks in 5 waves\n");
}

#[test]
fn usage_errors_exit_2() {
    run(&["validate"]).expect(2);
    run(&["run", "--jobs", "0", "x.yaml"]).expect(2);
    run(&["--no-such-flag", "x.yaml"]).expect(2);
    let missing = run(&["validate", "no/such/pipeline.yaml"]).expect(2);
    assert!(missing.stderr.contains("cannot read pipeline no/such/pipeline.yaml"), "{}", missing.stderr);
    let set = run(&["validate", sparkify().to_str().unwrap(), "--set", "ouput=x"]).expect(2);
    assert!(
        set.stderr.contains("--set ouput: the pipeline declares no variable `ouput`; did you mean `output`?"),
        "{}",
        set.stderr
    );
    let engine = run(&["validate", sparkify().to_str().unwrap(), "--set", "engine=spark"]).expect(2);
    assert!(engine.stderr.contains("unknown engine `spark`"), "{}", engine.stderr);
}

#[test]
fn help_documents_the_exit_codes() {
    let help = run(&["--help"]).expect(0);
    for line in
        ["0    every task succeeded", "1    a task failed", "2    usage or configuration error", "130  interrupted"]
    {
        assert!(help.stdout.contains(line), "{line} in\n{}", help.stdout);
    }
}

fn graph(format: &str) -> String {
    Run::from(
        dagrun().current_dir(repo()).args(["graph", "pipelines/sparkify.yaml", "--format", format]).output().unwrap(),
    )
    .expect(0)
    .stdout
}

#[test]
fn graph_draws_the_sparkify_dag_in_100_columns() {
    let ascii = graph("ascii");
    for line in ascii.lines() {
        assert!(line.chars().count() <= 100, "too wide: {line}");
    }
    insta::assert_snapshot!("graph_ascii", ascii);
}

#[test]
fn graph_renders_dot_and_mermaid() {
    let dot = graph("dot");
    assert!(dot.contains("\"songs\" -> \"load_songs\";") || dot.contains("\"songs\" -> \"check_songs\";"));
    insta::assert_snapshot!("graph_dot", dot);
    insta::assert_snapshot!("graph_mermaid", graph("mermaid"));
}

#[test]
fn a_closed_stdout_is_not_an_error() {
    let mut child = dagrun()
        .current_dir(repo())
        .args(["graph", "pipelines/sparkify.yaml", "--format", "dot"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "{status:?} {err}");
}

#[test]
fn dry_run_shows_the_plan_and_reads_or_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let run = Run::from(
        dagrun()
            .current_dir(tmp.path())
            .args([
                sparkify().to_str().unwrap(),
                "--dry-run",
                "--jobs",
                "2",
                "--set",
                "input=s3-free/in",
                "--set",
                "output=lake",
            ])
            .output()
            .unwrap(),
    )
    .expect(0);
    assert!(files(tmp.path()).is_empty(), "a dry run wrote {:?}", files(tmp.path()));
    insta::assert_snapshot!(run.stdout);
}

#[test]
fn only_runs_a_task_and_its_upstream() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lake");
    let run = run_sparkify(&sample(), &out, &["-q", "--only", "load_users"]).expect(0);
    assert!(run.stdout.contains("all 5 tasks succeeded"), "{}", run.stdout);
    for task in ["staging_events", "plays", "users", "check_users", "load_users"] {
        assert!(run.stdout.contains(task), "{task} in {}", run.stdout);
    }
    assert!(!run.stdout.contains("staging_songs"));
    let mut tables: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    tables.sort();
    assert_eq!(tables, vec!["_dagrun", "users"]);
    let bad = run_sparkify(&sample(), &out, &["--only", "load_user"]).expect(2);
    assert!(bad.stderr.contains("did you mean `load_users`?"), "{}", bad.stderr);
}

#[test]
fn json_logs_are_one_object_per_event_with_task_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_sparkify(&sample(), &tmp.path().join("lake"), &["--log-format", "json", "--only", "songs"]).expect(0);
    let mut tasks = Vec::new();
    for line in run.stderr.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(event["level"].is_string() && event["fields"]["message"].is_string(), "{line}");
        if let Some(task) = event["span"]["task"].as_str() {
            assert_eq!(event["span"]["engine"], "local");
            assert_eq!(event["span"]["attempt"], 1);
            tasks.push(task.to_string());
        }
    }
    assert!(tasks.contains(&"staging_songs".to_string()) && tasks.contains(&"songs".to_string()), "{tasks:?}");
}

#[test]
fn text_logs_name_the_task_on_each_line_without_control_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_sparkify(&sample(), &tmp.path().join("lake"), &["--only", "songs"]).expect(0);
    assert!(!run.stderr.contains('\x1b'), "no control codes without a terminal");
    assert!(run.stderr.lines().any(|l| l.contains("INFO  staging_songs: succeeded")), "{}", run.stderr);
}

#[test]
fn global_flags_work_before_the_subcommand_too() {
    let pipeline = sparkify();
    let p = pipeline.to_str().unwrap();
    run(&["-vv", "run", p, "--dry-run"]).expect(0);
    let valid = run(&["-q", "validate", p]).expect(0);
    assert!(valid.stdout.contains("is valid"), "{}", valid.stdout);
    run(&["--log-format", "json", "graph", p]).expect(0);
}

#[test]
fn run_is_also_a_subcommand() {
    let run =
        Run::from(dagrun().current_dir(repo()).args(["run", "pipelines/sparkify.yaml", "--dry-run"]).output().unwrap())
            .expect(0);
    assert!(run.stdout.starts_with("dry run of sparkify: 18 tasks in 5 waves"), "{}", run.stdout);
}

#[test]
fn a_terminal_gets_progress_bars_and_logs_drawn_through_them() {
    // `script` gives the run a pseudo-terminal, as an interactive user has.
    let tmp = tempfile::tempdir().unwrap();
    let command = format!(
        "{} {} --set input={} --set output={} --only load_songs",
        env!("CARGO_BIN_EXE_dagrun"),
        sparkify().display(),
        sample().display(),
        tmp.path().join("lake").display()
    );
    let output = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_remove("CI")
        .env_remove("NO_COLOR")
        .env("TERM", "xterm-256color")
        .stdin(Stdio::null())
        .output()
        .expect("script(1) from util-linux runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("\x1b["), "control codes on a terminal");
    assert!(text.contains("staging_songs") && text.contains("load_songs"), "{text}");
    assert!(text.contains("/71 files"), "the extract shows its files as a bar: {text}");

    assert!(text.contains("all 4 tasks succeeded"), "{text}");
}

#[test]
fn version_names_the_commit_the_build_date_and_the_features() {
    let out = run(&["--version"]).expect(0);
    assert!(out.stdout.starts_with(&format!("dagrun {} (commit ", env!("CARGO_PKG_VERSION"))), "{}", out.stdout);
    assert!(out.stdout.contains(", built 20"), "{}", out.stdout);
    assert!(out.stdout.contains("features: polars, aws, delta)"), "{}", out.stdout);
}

#[test]
fn quiet_runs_keep_the_task_name_on_warnings_in_text_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("in")).unwrap();
    let p = pipeline(
        tmp.path(),
        "p.yaml",
        "name: p\ntasks:\n  - {id: empty_extract, kind: extract, path: in, format: jsonl, schema: {x: int}}\n",
    );
    let text = Run::from(dagrun().current_dir(tmp.path()).arg(&p).arg("-q").output().unwrap()).expect(0);
    assert!(text.stderr.contains("WARN  empty_extract: no files matched"), "{}", text.stderr);
    // One task: the counts agree with it.
    assert!(text.stdout.contains("the task succeeded"), "{}", text.stdout);
    let json = Run::from(
        dagrun().current_dir(tmp.path()).arg(&p).args(["-q", "--no-cache", "--log-format", "json"]).output().unwrap(),
    )
    .expect(0);
    let warning: serde_json::Value =
        serde_json::from_str(json.stderr.lines().find(|l| l.contains("no files matched")).unwrap()).unwrap();
    assert_eq!(warning["span"]["task"], "empty_extract", "{warning}");
    let valid = Run::from(dagrun().current_dir(tmp.path()).args(["validate"]).arg(&p).output().unwrap()).expect(0);
    assert!(valid.stdout.contains("pipeline p, 1 task in 1 wave"), "{}", valid.stdout);
}

/// The SGR (color and style) sequences in `text`; cursor movements are not counted.
fn color_codes(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("\x1b[") {
        let rest = &text[i + 2..];
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == ';')).unwrap_or(rest.len());
        if rest[end..].starts_with('m') {
            out.push(rest[..end].to_string());
        }
    }
    out
}

#[test]
fn graph_draws_svg_and_an_html_page_without_graphviz() {
    let svg = graph("svg");
    assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"), "{svg}");
    assert_eq!(svg.matches(r#"<g class="node""#).count(), 18);
    // One edge per dependency, as in the DOT picture.
    assert_eq!(svg.matches(r#"<path class="edge""#).count(), graph("dot").matches(" -> ").count());
    assert!(svg.contains(r#"data-task="load_songplays""#) && svg.contains("load · local"), "{svg}");
    // Well-formed XML, as a browser or an image viewer needs it.
    let check = std::process::Command::new("python3")
        .args(["-c", "import sys, xml.etree.ElementTree as E; E.fromstring(sys.stdin.read())"])
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(svg.as_bytes())?;
            child.wait()
        })
        .unwrap();
    assert!(check.success(), "the SVG is not well-formed XML");
    let html = graph("html");
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains("<h1>sparkify</h1>"), "{html}");
    assert!(html.contains(svg.trim_end()), "the page holds the same picture");
}

#[test]
fn completions_for_every_shell_and_a_man_page() {
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let script = run(&["completions", shell]).expect(0).stdout;
        assert!(script.contains("dry-run") && script.contains("validate"), "{shell}: {script}");
    }
    // bash loads the script and completes `dagrun` with it.
    let bash = std::process::Command::new("bash")
        .args(["-c", &format!("source <({} completions bash) && complete -p dagrun", env!("CARGO_BIN_EXE_dagrun"))])
        .output()
        .unwrap();
    let spec = String::from_utf8_lossy(&bash.stdout);
    assert!(spec.contains("-F _dagrun") && spec.trim_end().ends_with(" dagrun"), "{bash:?}");
    let man = run(&["man"]).expect(0).stdout;
    assert!(man.contains(".TH dagrun 1"), "{man}");
    for part in ["SUBCOMMANDS", "completions", "\\-\\-dry\\-run", "Exit codes"] {
        assert!(man.contains(part), "the man page lacks {part}: {man}");
    }
    run(&["completions", "tcsh"]).expect(2);
}

#[test]
fn color_follows_the_flag_and_no_color() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = tmp.path().join("lake");
    let always = run_sparkify(&sample(), &lake, &["--only", "staging_songs", "--color", "always"]).expect(0);
    assert!(!color_codes(&always.stderr).is_empty(), "--color always colors a pipe: {}", always.stderr);
    let auto = run_sparkify(&sample(), &lake, &["--only", "staging_songs"]).expect(0);
    assert!(color_codes(&auto.stderr).is_empty(), "{}", auto.stderr);
    // On a terminal: colors unless NO_COLOR or --color never.
    let on_terminal = |extra: &str, no_color: bool| {
        let command = format!(
            "{} {} --set input={} --set output={} --only staging_songs {extra}",
            env!("CARGO_BIN_EXE_dagrun"),
            sparkify().display(),
            sample().display(),
            lake.display()
        );
        let mut script = std::process::Command::new("script");
        script.args(["-qec", &command, "/dev/null"]).env_remove("CI").env("TERM", "xterm-256color");
        if no_color {
            script.env("NO_COLOR", "1");
        } else {
            script.env_remove("NO_COLOR");
        }
        let output = script.stdin(Stdio::null()).output().expect("script(1) runs");
        assert!(output.status.success());
        color_codes(&String::from_utf8_lossy(&output.stdout))
    };
    assert!(!on_terminal("", false).is_empty(), "a terminal gets colors");
    assert_eq!(on_terminal("", true), Vec::<String>::new(), "NO_COLOR");
    assert_eq!(on_terminal("--color never", false), Vec::<String>::new(), "--color never");
}

const TYPOS: &str = r#"name: typos
vars: {input: in, output: out}
tasks:
  - id: events
    kind: extract
    path: ${input}
    format: jsonl
    schema: {ts: int, page: string, user_id: string}
  - id: pages
    kind: transform
    depends_on: [events]
    sql: |
      SELECT page,
             COUNT(DISTINCT usr_id) AS users
      FROM events GROUP BY page
  - id: per_user
    kind: transform
    depends_on: [events]
    sql: SELECT user_id, COUNT(*) AS plays FROM events GROUP BY user_id
  - id: check
    kind: quality_check
    depends_on: [per_user]
    table: per_user
    checks:
      - not_null: [user_idd]
  - id: load
    kind: load
    depends_on: [check]
    table: per_user
    path: ${output}/per_user
    partition_by: [plyas]
report:
  - title: Top users
    sql: SELECT user_id, plays FROM per_user ORDER BY playz DESC
"#;

#[test]
fn validate_finds_columns_no_table_has_at_their_place_with_did_you_mean() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(tmp.path(), "typos.yaml", TYPOS);
    let run = run(&["validate", p.to_str().unwrap()]).expect(2);
    let err = &run.stderr;
    // The transform's typo, at its line and column in the SQL.
    assert!(err.contains("typos.yaml:14:29: error: the SQL of task `pages` fails on the declared schemas"), "{err}");
    assert!(err.contains("hint: did you mean `user_id`?"), "{err}");
    // Columns of a transform's result, derived from its SQL: a check's and a load's.
    assert!(
        err.contains("typos.yaml:25:20: error: a check of task `check` names column `user_idd`, which table `per_user` does not have"),
        "{err}"
    );
    assert!(
        err.contains("typos.yaml:31:20: error: partition_by of task `load` names column `plyas`, which table `per_user` does not have"),
        "{err}"
    );
    assert!(err.contains("did you mean `plays`?"), "{err}");
    // A report query's: a warning, since at run time it fails only its answer.
    assert!(err.contains("typos.yaml:34:"), "{err}");
    assert!(err.contains("warning: report query `Top users` will fail"), "{err}");
    // Nothing was read: the input folder does not even exist.
    assert!(!tmp.path().join("in").exists());
}

#[test]
fn validate_finds_type_errors_of_sql_over_the_declared_schemas() {
    let tmp = tempfile::tempdir().unwrap();
    let text = "name: types\nvars: {input: in, output: out}\ntasks:\n  - id: events\n    kind: extract\n    \
                path: ${input}\n    format: jsonl\n    schema: {ts: int, page: string, user_id: string}\n  \
                - id: totals\n    kind: transform\n    depends_on: [events]\n    sql: |\n      SELECT page,\n             \
                SUM(user_id) AS total\n      FROM events GROUP BY page\n";
    let p = pipeline(tmp.path(), "types.yaml", text);
    let run = run(&["validate", p.to_str().unwrap()]).expect(2);
    assert!(
        run.stderr.contains("types.yaml:14:14: error: the SQL of task `totals` fails on the declared schemas:")
            && run.stderr.contains("`sum`"),
        "{}",
        run.stderr
    );
}
