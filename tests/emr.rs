//! The EMR engine through the real aws-sdk-emr client against moto's EMR API (tests/moto/server.py
//! drives step outcomes, slow starts and CancelSteps): the cluster request, step names and
//! arguments, and that no cluster is ever left alive: after success, a failed step, SIGTERM, a
//! timeout, and that a restarted dagrun reattaches instead of submitting twice.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

const PIPELINE: &str = r#"name: emrtest
vars:
  input: ~
  output: ~
  timeout: 10m
engines:
  emr:
    release_label: emr-7.5.0
    instance_groups:
      - {role: master, instance_type: m5.xlarge, count: 1}
      - {role: core, instance_type: m5.xlarge, count: 2, market: spot, bid_price: "0.25"}
    service_role: EMR_DefaultRole
    instance_profile: EMR_EC2_DefaultRole
    log_uri: s3://logs/emr/
    staging: s3://lake/staging
    idle_timeout: 45m
    poll_interval: 50ms
    tags: {team: analytics}
    configurations:
      - classification: spark-defaults
        properties: {spark.sql.shuffle.partitions: "8"}
tasks:
  - id: events
    kind: extract
    path: ${input}/log_data
    format: jsonl
    schema: {ts: int, page: string, user_id: {type: string, from: userId}}
  - id: plays
    kind: transform
    engine: emr
    depends_on: [events]
    timeout: ${timeout}
    retry: {max_attempts: 1, initial_delay: 10ms}
    sql: SELECT ts, user_id FROM events WHERE page = 'NextSong'
  - id: load_plays
    kind: load
    engine: emr
    depends_on: [plays]
    table: plays
    path: ${output}/plays
"#;

/// A moto server with the repo's sample logs under s3://lake/in and a pipeline file.
struct Setup {
    moto: Moto,
    dir: tempfile::TempDir,
    pipeline: std::path::PathBuf,
}

fn setup() -> Setup {
    setup_with(PIPELINE)
}

fn setup_with(text: &str) -> Setup {
    let moto = Moto::start();
    moto.upload(&repo().join("data"), "lake", "in");
    moto.control("bucket", json!({"bucket": "logs"}));
    let dir = tempfile::tempdir().unwrap();
    let pipeline = pipeline(dir.path(), "emr.yaml", text);
    Setup { moto, dir, pipeline }
}

impl Setup {
    fn command(&self, extra: &[&str]) -> std::process::Command {
        let mut cmd = self.moto.dagrun();
        cmd.current_dir(self.dir.path())
            .arg(self.pipeline.to_str().unwrap())
            .args(["--set", "input=s3://lake/in", "--set", "output=s3://lake/out"])
            .args(extra);
        cmd
    }

    fn run(&self, extra: &[&str]) -> Run {
        Run::from(self.command(extra).output().unwrap())
    }

    fn emr(&self) -> Value {
        self.moto.control("emr", json!({}))
    }

    fn mode(&self, mode: Value) {
        self.moto.control("emr/mode", mode);
    }

    fn clusters(&self) -> Vec<Value> {
        self.emr()["clusters"].as_array().unwrap().clone()
    }

    /// The test's invariant: whatever happened, no cluster is left running.
    fn assert_all_terminated(&self) {
        for c in self.clusters() {
            assert_eq!(c["state"], "TERMINATED", "cluster left alive: {c}");
        }
    }

    /// Starts dagrun in the background and waits until the cluster has a step of `task`.
    fn spawn_until_step(&self, run_id: &str, task: &str) -> Child {
        let mut child =
            self.command(&["--run-id", run_id]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let start = Instant::now();
        let needle = format!(":{run_id}:{task}:");
        while !self.clusters().iter().any(|c| steps(c).iter().any(|s| s["name"].as_str().unwrap().contains(&needle))) {
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let output = child.wait_with_output().unwrap();
                panic!("no step for {task} after 60s: {}", String::from_utf8_lossy(&output.stderr));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }
}

fn steps(cluster: &Value) -> Vec<Value> {
    cluster["steps"].as_array().unwrap().clone()
}

fn finish(child: Child) -> Run {
    let output = child.wait_with_output().unwrap();
    Run::from(output)
}

#[test]
fn emr_tasks_run_as_steps_on_one_cluster_that_is_terminated_after_success() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let s = setup();
    s.mode(json!({"steps": "complete", "start_polls": 3}));
    let run = s.run(&["--run-id", "run-ok"]).expect(0);

    let emr = s.emr();
    let clusters = s.clusters();
    assert_eq!(clusters.len(), 1, "one cluster per run: {emr}");
    let cluster = &clusters[0];
    assert_eq!(cluster["state"], "TERMINATED");
    assert_eq!(cluster["tags"]["dagrun:pipeline"], "emrtest");
    assert_eq!(cluster["tags"]["dagrun:run"], "run-ok");
    assert_eq!(cluster["tags"]["team"], "analytics");

    // The cluster request as configured, with the idle auto-termination always set.
    let request = &emr["requests"][0];
    assert_eq!(request["ReleaseLabel"], "emr-7.5.0");
    assert_eq!(request["ServiceRole"], "EMR_DefaultRole");
    assert_eq!(request["JobFlowRole"], "EMR_EC2_DefaultRole");
    assert_eq!(request["LogUri"], "s3://logs/emr/");
    assert_eq!(request["AutoTerminationPolicy"]["IdleTimeout"], 2700);
    assert_eq!(request["Applications"][0]["Name"], "Spark");
    let groups = request["Instances"]["InstanceGroups"].as_array().unwrap();
    assert_eq!(groups[0]["InstanceRole"], "MASTER");
    assert_eq!(groups[1]["InstanceRole"], "CORE");
    assert_eq!(groups[1]["Market"], "SPOT");
    assert_eq!(groups[1]["BidPrice"], "0.25");
    assert_eq!(groups[1]["InstanceCount"], 2);
    assert_eq!(request["Instances"]["KeepJobFlowAliveWhenNoSteps"], true);
    assert_eq!(request["Configurations"][0]["Classification"], "spark-defaults");

    // One step per emr task, named deterministically, spark-submit through command-runner.jar.
    let names: Vec<String> = steps(cluster).iter().map(|s| s["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["dagrun:emrtest:run-ok:plays:1", "dagrun:emrtest:run-ok:load_plays:1"]);
    let args: Vec<String> =
        steps(cluster)[0]["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
    assert_eq!(args[0], "spark-submit");
    assert_eq!(args[args.len() - 2], "s3://lake/staging/run-ok/dagrun_step.py");
    assert_eq!(args[args.len() - 1], "s3://lake/staging/run-ok/tasks/plays-1.json");
    assert!(steps(cluster).iter().all(|s| s["state"] == "COMPLETED"));

    // What the steps need is on S3: the program, each task's spec, the local table they read.
    let staged = s.moto.keys("lake", "staging/run-ok");
    for key in [
        "staging/run-ok/dagrun_step.py",
        "staging/run-ok/tasks/plays-1.json",
        "staging/run-ok/tasks/load_plays-1.json",
        "staging/run-ok/tables/events/_manifest.json",
    ] {
        assert!(staged.iter().any(|k| k == key), "{key} missing from {staged:?}");
    }
    let tmp = tempfile::tempdir().unwrap();
    s.moto.control("download", json!({"bucket": "lake", "prefix": "staging/run-ok/tasks", "dir": tmp.path()}));
    let spec: Value = serde_json::from_slice(&std::fs::read(tmp.path().join("plays-1.json")).unwrap()).unwrap();
    assert_eq!(spec["sql"], "SELECT ts, user_id FROM events WHERE page = 'NextSong'");
    assert_eq!(spec["inputs"]["events"], "s3://lake/staging/run-ok/tables/events");
    assert_eq!(spec["output"], "s3://lake/staging/run-ok/tables/plays");
    let load: Value = serde_json::from_slice(&std::fs::read(tmp.path().join("load_plays-1.json")).unwrap()).unwrap();
    assert_eq!(load["inputs"]["plays"], "s3://lake/staging/run-ok/tables/plays");
    assert_eq!(load["load"]["path"], "s3://lake/out/plays");

    // The summary and the run record name the cluster, its states and the steps.
    let id = cluster["id"].as_str().unwrap();
    assert!(run.stdout.contains(&format!("cluster {id}: STARTING")), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("cluster {id}: WAITING")), "{}", run.stdout);
    assert!(run.stdout.contains("termination requested"), "{}", run.stdout);
    let record_dir = tempfile::tempdir().unwrap();
    s.moto.control("download", json!({"bucket": "lake", "prefix": "out/_dagrun/run-ok", "dir": record_dir.path()}));
    let record = std::fs::read_to_string(record_dir.path().join("run.json")).unwrap();
    assert!(record.contains(id), "{record}");
    let step_id = steps(cluster)[0]["id"].as_str().unwrap().to_string();
    assert!(record.contains(&step_id), "{record}");
}

#[test]
fn a_failed_step_reports_its_reason_and_stderr_and_the_cluster_is_terminated() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let s = setup();
    s.mode(json!({
        "steps": "complete",
        "fail": [":plays:"],
        "reason": "Spark job failed: AnalysisException",
        "stderr": "line 1\nTraceback (most recent call last):\npyspark.errors.AnalysisException: [UNRESOLVED_COLUMN] user_idd"
    }));
    let run = s.run(&["--run-id", "run-fail"]).expect(1);
    assert_eq!(state(&run.stdout, "plays"), "failed");
    assert_eq!(state(&run.stdout, "load_plays"), "skipped");
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(all.contains("FAILED"), "{all}");
    assert!(all.contains("Spark job failed: AnalysisException"), "{all}");
    assert!(all.contains("[UNRESOLVED_COLUMN] user_idd"), "the stderr tail from the log URI: {all}");
    s.assert_all_terminated();
}

#[test]
fn sigterm_cancels_the_running_step_and_terminates_the_cluster() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let s = setup();
    s.mode(json!({"steps": "hold"}));
    let child = s.spawn_until_step("run-term", "plays");
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let run = finish(child).expect(130);
    let clusters = s.clusters();
    assert_eq!(steps(&clusters[0])[0]["state"], "CANCELLED", "{}", run.stdout);
    s.assert_all_terminated();
}

#[test]
fn a_timeout_cancels_the_step_before_the_retry_and_the_cluster_is_terminated() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let s = setup_with(&PIPELINE.replace("max_attempts: 1", "max_attempts: 2"));
    s.mode(json!({"steps": "hold"}));
    let run = s.run(&["--run-id", "run-slow", "--set", "timeout=1500ms"]).expect(1);
    assert_eq!(state(&run.stdout, "plays"), "failed");
    let clusters = s.clusters();
    let names: Vec<String> = steps(&clusters[0]).iter().map(|s| s["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["dagrun:emrtest:run-slow:plays:1", "dagrun:emrtest:run-slow:plays:2"]);
    assert!(steps(&clusters[0]).iter().all(|s| s["state"] == "CANCELLED"), "{clusters:?}");
    s.assert_all_terminated();
}

#[test]
fn a_restarted_run_reattaches_to_its_cluster_and_running_step() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let s = setup();
    s.mode(json!({"steps": "hold"}));
    let mut child = s.spawn_until_step("run-again", "plays");
    // dagrun dies without cleaning up (the machine went away): the cluster and step live on.
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(s.clusters()[0]["state"], "RUNNING");

    s.mode(json!({"steps": "complete"}));
    let run = s.run(&["--run-id", "run-again"]).expect(0);
    let clusters = s.clusters();
    assert_eq!(clusters.len(), 1, "the same cluster, found by its run tag");
    let names: Vec<String> = steps(&clusters[0]).iter().map(|s| s["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["dagrun:emrtest:run-again:plays:1", "dagrun:emrtest:run-again:load_plays:1"], "no step twice");
    assert!(run.stdout.contains("reattached"), "{}", run.stdout);
    assert!(run.stdout.contains("found again"), "{}", run.stdout);
    s.assert_all_terminated();
}

#[test]
fn emr_gc_terminates_clusters_whose_run_is_over_or_too_old() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let s = setup();
    // Two clusters left alive by dagrun processes that were killed outright.
    s.mode(json!({"steps": "hold"}));
    let mut ids = Vec::new();
    for run_id in ["orphan", "finished"] {
        let mut child = s.spawn_until_step(run_id, "plays");
        child.kill().unwrap();
        child.wait().unwrap();
        let clusters = s.clusters();
        ids.push(
            clusters.iter().find(|c| c["tags"]["dagrun:run"] == run_id).unwrap()["id"].as_str().unwrap().to_string(),
        );
    }
    let gc = |args: &[&str]| {
        let mut cmd = s.moto.dagrun();
        Run::from(cmd.current_dir(s.dir.path()).args(["emr", "gc"]).args(args).output().unwrap())
    };
    let state = |id: &str| s.clusters().iter().find(|c| c["id"] == id).unwrap()["state"].as_str().unwrap().to_string();

    // Nothing says these runs are over: both are kept.
    let listed = gc(&["--dry-run"]).expect(0);
    assert!(listed.stdout.contains(&ids[0]) && listed.stdout.contains(&ids[1]), "{}", listed.stdout);
    assert!(listed.stdout.contains("run orphan") && listed.stdout.contains("kept"), "{}", listed.stdout);

    // A run record beside the outputs (the tag dagrun:runs says where) means the run is over.
    let record = tempfile::tempdir().unwrap();
    std::fs::write(record.path().join("run.json"), "{}").unwrap();
    s.moto.upload(record.path(), "lake", "out/_dagrun/finished");
    let dry = gc(&["--dry-run"]).expect(0);
    assert!(
        dry.stdout.contains("would terminate: its run is over (s3://lake/out/_dagrun/finished/run.json)"),
        "{}",
        dry.stdout
    );
    assert_eq!(state(&ids[1]), "RUNNING", "a dry run terminates nothing");
    let done = gc(&[]).expect(0);
    assert!(done.stdout.contains("1 cluster(s) terminated, 1 kept"), "{}", done.stdout);
    assert_eq!(state(&ids[1]), "TERMINATED");
    assert_eq!(state(&ids[0]), "RUNNING");

    // --older-than ends the other one whatever its run says.
    let old = gc(&["--older-than", "1ms"]).expect(0);
    assert!(old.stdout.contains("terminating: older than 1ms"), "{}", old.stdout);
    s.assert_all_terminated();
    let none = gc(&[]).expect(0);
    assert!(none.stdout.contains("no live clusters started by dagrun"), "{}", none.stdout);
}

#[test]
fn dry_run_prints_the_exact_emr_requests_and_where_each_task_runs() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let s = setup();
    let run = s.run(&["--dry-run"]).expect(0);
    assert!(run.stdout.contains("on local: events"), "{}", run.stdout);
    assert!(run.stdout.contains("on emr: plays, load_plays"), "{}", run.stdout);
    assert!(run.stdout.contains("RunJobFlow"), "{}", run.stdout);
    assert!(run.stdout.contains("\"IdleTimeout\": 2700"), "{}", run.stdout);
    assert!(run.stdout.contains("AddJobFlowSteps"), "{}", run.stdout);
    assert!(run.stdout.contains("\"dagrun:emrtest:<run-id>:plays:1\""), "{}", run.stdout);
    assert!(run.stdout.contains("command-runner.jar"), "{}", run.stdout);
    assert!(s.clusters().is_empty(), "a dry run starts nothing");
}

#[test]
fn sparkify_on_emr_is_one_setting_and_its_emr_variables_are_reachable_with_set() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let repo = repo();
    let sparkify = repo.join("pipelines/sparkify.yaml");
    let missing = run(&["validate", sparkify.to_str().unwrap(), "--set", "engine=emr"]).expect(2);
    assert!(missing.stderr.contains("variable `emr_log_uri` has no value"), "{}", missing.stderr);
    let ok = run(&[
        "validate",
        sparkify.to_str().unwrap(),
        "--set",
        "engine=emr",
        "--set",
        "input=s3://udacity-dend",
        "--set",
        "output=s3://lake/star",
        "--set",
        "emr_service_role=EMR_DefaultRole",
        "--set",
        "emr_instance_profile=EMR_EC2_DefaultRole",
        "--set",
        "emr_log_uri=s3://lake/emr-logs",
        "--set",
        "emr_staging=s3://lake/staging",
    ])
    .expect(0);
    assert!(ok.stdout.contains("is valid"), "{}", ok.stdout);
    // The local default needs none of them.
    run(&["validate", sparkify.to_str().unwrap()]).expect(0);
}

#[test]
fn invalid_emr_settings_are_reported_with_their_locations() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, text: String, expected: &[&str]| {
        let p = pipeline(dir.path(), name, &text);
        let run =
            run(&["validate", p.to_str().unwrap(), "--set", "input=s3://a/b", "--set", "output=s3://a/c"]).expect(2);
        for e in expected {
            assert!(run.stderr.contains(e), "missing {e:?} in\n{}", run.stderr);
        }
        assert!(run.stderr.contains(&format!("{name}:")), "located: {}", run.stderr);
    };
    // Values: every problem at once.
    check(
        "values.yaml",
        PIPELINE
            .replace("release_label: emr-7.5.0", "release_label: 7.5.0")
            .replace("instance_type: m5.xlarge, count: 1}", "instance_type: m5.xlarge, count: 2}")
            .replace("idle_timeout: 45m", "idle_timeout: 30s")
            .replace("staging: s3://lake/staging", "staging: /srv/staging"),
        &[
            "release_label `7.5.0` should look like emr-7.5.0",
            "the master group has exactly 1 instance, found 2",
            "idle_timeout must be between 1m and 7d",
            "staging must be an s3://bucket/prefix URI",
        ],
    );
    // Shape: unknown keys with a suggestion, unknown enum values with the accepted ones.
    check(
        "keys.yaml",
        PIPELINE
            .replace("idle_timeout: 45m", "idle_timeout: 45m\n    subnet: subnet-1")
            .replace("market: spot", "market: reserved"),
        &[
            "unknown key `subnet` in EMR settings",
            "did you mean `subnet_id`?",
            "unknown market `reserved`",
            "on_demand, spot",
        ],
    );
}

#[test]
fn a_task_on_emr_needs_s3_paths_and_an_engines_section() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), "emr.yaml", PIPELINE);
    let local = run(&["validate", p.to_str().unwrap(), "--set", "input=data", "--set", "output=out"]).expect(2);
    assert!(local.stderr.contains("runs on emr and writes"), "{}", local.stderr);
    let start = PIPELINE.find("engines:").unwrap();
    let end = PIPELINE.find("tasks:").unwrap();
    let without = format!("{}{}", &PIPELINE[..start], &PIPELINE[end..]);
    let p = pipeline(dir.path(), "none.yaml", &without);
    let none = run(&["validate", p.to_str().unwrap(), "--set", "input=s3://a/b", "--set", "output=s3://a/c"]).expect(2);
    assert!(none.stderr.contains("the pipeline has no `engines.emr` section"), "{}", none.stderr);
    // A Delta load commits in dagrun's process: it may not ask for EMR.
    let delta = PIPELINE.replace("    path: ${output}/plays\n", "    path: ${output}/plays\n    format: delta\n");
    let p = pipeline(dir.path(), "delta.yaml", &delta);
    let refused =
        run(&["validate", p.to_str().unwrap(), "--set", "input=s3://a/b", "--set", "output=s3://a/c"]).expect(2);
    assert!(
        refused.stderr.contains("a `format: delta` load runs on the local engine, not on emr"),
        "{}",
        refused.stderr
    );
}

#[test]
fn sparkify_with_engine_emr_publishes_the_same_tables_as_the_local_run() {
    if !runtimes(&[Runtime::Moto, Runtime::Spark]) {
        return;
    }
    // Steps run for real: the harness runs each step's program with PySpark on a local mirror of
    // what it reads from S3 and puts back what it writes, one step at a time like a cluster.
    let moto = Moto::start();
    moto.upload(&sample(), "udacity-dend", "sample");
    moto.control("bucket", json!({"bucket": "lake"}));
    moto.control("emr/mode", json!({"steps": "spark"}));
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("local");
    run_sparkify(&sample(), &local, &["-q"]).expect(0);

    let sparkify = sparkify();
    let run = Run::from(
        moto.dagrun()
            .current_dir(tmp.path())
            .args([sparkify.to_str().unwrap(), "--set", "engine=emr"])
            .args(["--set", "input=s3://udacity-dend/sample", "--set", "output=s3://lake/star"])
            .args(["--set", "emr_service_role=EMR_DefaultRole", "--set", "emr_instance_profile=EMR_EC2_DefaultRole"])
            .args(["--set", "emr_log_uri=s3://lake/emr-logs/", "--set", "emr_staging=s3://lake/staging"])
            .args(["--run-id", "on-emr"])
            .output()
            .unwrap(),
    )
    .expect(0);
    assert!(run.stdout.contains("all 18 tasks succeeded"), "{}", run.stdout);

    for table in TABLES {
        let got = tmp.path().join("s3").join(table);
        moto.download_table("lake", &format!("star/{table}"), &got);
        assert_eq!(sorted_rows(&got), sorted_rows(&local.join(table)), "{table}");
    }
    let emr = moto.control("emr", json!({}));
    let clusters = emr["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 1);
    assert_eq!(clusters[0]["state"], "TERMINATED");
    let mut tasks: Vec<String> = steps(&clusters[0])
        .iter()
        .map(|s| s["name"].as_str().unwrap().split(':').nth(3).unwrap().to_string())
        .collect();
    tasks.sort();
    assert_eq!(
        tasks,
        ["artists", "plays", "songplays", "songs", "staging_events", "staging_songs", "time", "users"],
        "extracts and transforms ran on EMR"
    );
}
