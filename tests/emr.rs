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
    let run = s.run(&["--run-id", "run-ok", "--keep-staging"]).expect(0);

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
    // Bounded on the cluster (EMR has no step timeout), the driver in the step's process.
    assert_eq!(args[..6], ["timeout", "--kill-after=60s", "600s", "spark-submit", "--deploy-mode", "client"]);
    assert_eq!(request["StepConcurrencyLevel"], 2, "one per EMR task: {request}");
    assert_eq!(cluster["tags"]["dagrun:runs"], "s3://lake/out/_dagrun");
    assert!(!cluster["tags"]["dagrun:instance"].as_str().unwrap().is_empty());
    assert_eq!(args[args.len() - 2], "s3://lake/staging/run-ok/dagrun_step.py");
    assert_eq!(args[args.len() - 1], "s3://lake/staging/run-ok/tasks/plays-1.json");
    assert!(steps(cluster).iter().all(|s| s["state"] == "COMPLETED"));

    // What the steps need is on S3: the program, each task's spec, the local table they read
    // (kept here by --keep-staging).
    assert!(run.stdout.contains("staging s3://lake/staging/run-ok: kept (--keep-staging)"), "{}", run.stdout);
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
fn emr_gc_terminates_only_clusters_whose_run_no_longer_holds_a_live_lease() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let s = setup();
    let gc = |args: &[&str]| {
        let mut cmd = s.moto.dagrun();
        Run::from(cmd.current_dir(s.dir.path()).args(["emr", "gc"]).args(args).output().unwrap()).expect(0)
    };
    let cluster_of = |run: &str| {
        let clusters = s.clusters();
        let live = clusters.iter().filter(|c| c["tags"]["dagrun:run"] == run && c["state"] != "TERMINATED");
        live.map(|c| c["id"].as_str().unwrap().to_string()).next_back().unwrap()
    };
    let state = |id: &str| s.clusters().iter().find(|c| c["id"] == id).unwrap()["state"].as_str().unwrap().to_string();
    let line = |out: &str, id: &str| out.lines().find(|l| l.contains(id)).unwrap_or_default().to_string();

    // A run id used before: its earlier run's record exists, and a new run of that id is live.
    s.mode(json!({"steps": "complete"}));
    s.run(&["--run-id", "again"]).expect(0);
    s.mode(json!({"steps": "hold"}));
    let wait_for_step = |run: &str| {
        let start = Instant::now();
        while !s
            .clusters()
            .iter()
            .any(|c| c["tags"]["dagrun:run"] == run && c["state"] != "TERMINATED" && !steps(c).is_empty())
        {
            assert!(start.elapsed() < Duration::from_secs(60), "no step for run {run}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut cmd = s.command(&["--run-id", "again"]);
    let live = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for_step("again");
    let reused = cluster_of("again");
    // --older-than does not take a live run's cluster either.
    let out = gc(&["--older-than", "1ms"]);
    assert!(line(&out.stdout, &reused).contains("kept: its run is live"), "{}", out.stdout);
    assert!(line(&out.stdout, &reused).contains("a live run's cluster is never taken"), "{}", out.stdout);
    assert_eq!(state(&reused), "RUNNING");

    // Two overlapping runs on two lakes: the other one is live too.
    let mut cmd = s.command(&["--run-id", "other", "--set", "output=s3://lake/out2", "--lease-ttl", "6s"]);
    let mut other = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for_step("other");
    let overlapping = cluster_of("other");
    let out = gc(&[]);
    assert!(out.stdout.contains("0 cluster(s) terminated, 2 kept"), "{}", out.stdout);

    // Its runner is killed: the lease is not renewed; gc waits for it to expire (--lease-ttl).
    other.kill().unwrap();
    other.wait().unwrap();
    let out = gc(&["--dry-run"]);
    assert!(line(&out.stdout, &overlapping).contains("kept: its run is live"), "lease not yet expired: {}", out.stdout);
    let ttl = Instant::now();
    loop {
        let out = gc(&[]);
        if line(&out.stdout, &overlapping).contains("terminating: its run stopped renewing its lease") {
            break;
        }
        assert!(ttl.elapsed() < Duration::from_secs(30), "{}", out.stdout);
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(state(&overlapping), "TERMINATED");
    assert_eq!(state(&reused), "RUNNING", "the live run's cluster is untouched");
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(live.id() as i32, libc::SIGTERM) };
    finish(live).expect(130);
    s.assert_all_terminated();
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
    // What RunJobFlow would refuse after staging writes: an old release, names and tags past
    // EMR's rules, a step concurrency out of range.
    check(
        "limits.yaml",
        PIPELINE
            .replace("name: emrtest", &format!("name: {}", "p".repeat(200)))
            .replace("release_label: emr-7.5.0", "release_label: emr-6.15.0")
            .replace("tags: {team: analytics}", "tags: {team: \"analytics & ops\", cost!center: x}")
            .replace(
                "poll_interval: 50ms",
                "poll_interval: 50ms\n    step_concurrency: 300\n    prices: {m5.xlarge: {ec2: -1, emr: 0}}",
            )
            .replace("\ntasks:\n", "\nbudget: {max_usd: -1}\ntasks:\n"),
        &[
            "release_label `emr-6.15.0` is too old: dagrun's step program needs Spark 3.5, in emr-7.0.0 and later",
            "the step names of task `load_plays`",
            "EMR allows 256: shorten the pipeline name or the task id",
            "the default cluster name `dagrun <pipeline> <run id>` can exceed EMR's 256 characters",
            "the value of tag `team`: `&` is not allowed",
            "tag key `cost!center`: `!` is not allowed",
            "step_concurrency must be between 1 and 256, found 300",
            "the price of m5.xlarge must be a number of USD per instance-hour, at least 0",
            "budget.max_usd must be a number of USD, at least 0 (0 forbids EMR)",
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
    // Transforms on Spark report the rows they read (from their inputs' manifests).
    let records = tmp.path().join("records");
    moto.control("download", json!({"bucket": "lake", "prefix": "star/_dagrun/on-emr", "dir": records}));
    let record: Value = serde_json::from_slice(&std::fs::read(records.join("run.json")).unwrap()).unwrap();
    let songplays = record["tasks"].as_array().unwrap().iter().find(|t| t["id"] == "songplays").unwrap();
    assert!(songplays["output"]["rows_in"].as_u64().unwrap() > 0, "{songplays}");
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

/// The JSON object printed under a dry run's line starting with `title` (indented two spaces).
fn printed(stdout: &str, title: &str) -> Value {
    let mut lines = stdout.lines().skip_while(|l| !l.trim_start().starts_with(title));
    let header = lines.next().unwrap_or_else(|| panic!("no {title} in {stdout}"));
    let indent = header.len() - header.trim_start().len() + 2;
    let body: Vec<&str> = lines.take_while(|l| l.len() > indent && l[..indent].trim().is_empty()).collect();
    serde_json::from_str(&body.iter().map(|l| &l[indent..]).collect::<Vec<_>>().join("\n"))
        .unwrap_or_else(|e| panic!("{title}: {e} in {stdout}"))
}

/// Every field of `printed`, with the placeholders filled in, equals the one sent; nothing else is sent.
fn assert_same_fields(path: &str, printed: &Value, sent: &Value, fill: &dyn Fn(&str) -> String) {
    match (printed, sent) {
        (Value::Object(p), Value::Object(s)) => {
            let keys: std::collections::BTreeSet<&String> = p.keys().chain(s.keys()).collect();
            for k in keys {
                let (a, b) = (p.get(k).unwrap_or(&Value::Null), s.get(k).unwrap_or(&Value::Null));
                assert_same_fields(&format!("{path}.{k}"), a, b, fill);
            }
        }
        (Value::Array(p), Value::Array(s)) => {
            assert_eq!(p.len(), s.len(), "{path}: printed {printed}, sent {sent}");
            for (i, (a, b)) in p.iter().zip(s).enumerate() {
                assert_same_fields(&format!("{path}[{i}]"), a, b, fill);
            }
        }
        (Value::String(p), Value::String(s)) => assert_eq!(&fill(p), s, "{path}"),
        _ => assert_eq!(printed, sent, "{path}"),
    }
}

#[test]
fn the_requests_sent_are_the_dry_runs_print_field_by_field() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let s = setup();
    let dry = s.run(&["--dry-run"]).expect(0);
    s.run(&["--run-id", "wire"]).expect(0);
    let emr = s.emr();
    let sent = &emr["requests"][0];
    let instance = s.clusters()[0]["tags"]["dagrun:instance"].as_str().unwrap().to_string();
    let fill = |text: &str| text.replace("<run-id>", "wire").replace("<instance>", &instance);
    assert_same_fields("RunJobFlow", &printed(&dry.stdout, "RunJobFlow"), sent, &fill);
    // No empty `InstanceFleets: []` beside the groups: neither printed nor sent.
    assert!(sent["Instances"].get("InstanceFleets").is_none(), "{sent}");
    let cluster = s.clusters()[0]["id"].as_str().unwrap().to_string();
    let fill = |text: &str| fill(text).replace("<cluster-id>", &cluster);
    assert_same_fields("AddJobFlowSteps", &printed(&dry.stdout, "AddJobFlowSteps"), &emr["step_requests"][0], &fill);
}

#[test]
fn a_runner_killed_mid_step_leaves_a_step_the_cluster_ends_at_the_task_timeout() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let s = setup();
    s.mode(json!({"steps": "hold"}));
    let mut cmd = s.command(&["--run-id", "killed", "--set", "timeout=3s"]);
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    while !s.clusters().iter().any(|c| steps(c).iter().any(|st| st["state"] == "RUNNING")) {
        assert!(start.elapsed() < Duration::from_secs(60), "no step started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let running = Instant::now();
    // kill -9: dagrun can neither cancel the step nor terminate the cluster.
    child.kill().unwrap();
    child.wait().unwrap();
    let step_state = || steps(&s.clusters()[0])[0]["state"].as_str().unwrap().to_string();
    while step_state() == "RUNNING" {
        assert!(running.elapsed() < Duration::from_secs(15), "the step outlived its 3s bound");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(step_state(), "FAILED");
    assert!(running.elapsed() >= Duration::from_millis(2500), "ended at {:?}, before its bound", running.elapsed());
    // Nothing runs now: the idle auto-termination (in the request) ends the cluster.
    assert!(s.emr()["requests"][0]["AutoTerminationPolicy"]["IdleTimeout"].as_u64().unwrap() > 0);
}

#[test]
fn staging_is_deleted_after_success_and_a_failed_runs_is_kept_for_its_window() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let s = setup_with(&PIPELINE.replace("poll_interval: 50ms", "poll_interval: 50ms\n    keep_failed_staging: 2s"));
    // A killed writer's multipart upload under the staging prefix, begun moments ago: an EMR step
    // of a killed run may still be writing there (bounded by its task timeout), so it is kept.
    s.moto.control("begin_upload", json!({"bucket": "lake", "key": "staging/elsewhere/part-0.parquet"}));

    s.mode(json!({"steps": "complete", "fail": [":load_plays:"], "reason": "boom"}));
    let failed = s.run(&["--run-id", "failed"]).expect(1);
    assert!(failed.stdout.contains("staging s3://lake/staging/failed: kept for debugging until"), "{}", failed.stdout);
    assert!(s.moto.keys("lake", "staging/failed").iter().any(|k| k.ends_with("tasks/plays-1.json")));
    let staged = s.moto.keys("lake", "staging/failed");
    assert!(staged.iter().any(|k| k == "staging/failed/dagrun-staging.json"), "marked as dagrun's: {staged:?}");

    // Someone else's folder under the staging prefix, with no marker: never deleted.
    let foreign = tempfile::tempdir().unwrap();
    std::fs::write(foreign.path().join("notes.txt"), "mine").unwrap();
    s.moto.upload(foreign.path(), "lake", "staging/someone");

    std::thread::sleep(Duration::from_millis(2500));
    s.mode(json!({"steps": "complete"}));
    let ok = s.run(&["--run-id", "ok"]).expect(0);
    assert!(ok.stdout.contains("staging s3://lake/staging/ok: deleted"), "{}", ok.stdout);
    assert!(
        ok.stdout.contains("deleted 1 folder of failed runs past keep_failed_staging"),
        "{}{}",
        ok.stdout,
        ok.stderr
    );
    assert!(s.moto.keys("lake", "staging/ok").is_empty(), "a successful run's staging is deleted");
    assert!(s.moto.keys("lake", "staging/failed").is_empty(), "past its window: {:?}", s.moto.keys("lake", "staging"));
    assert_eq!(s.moto.keys("lake", "staging/someone"), ["staging/someone/notes.txt"]);
    let uploads = s.moto.control("uploads", json!({"bucket": "lake"}));
    assert_eq!(uploads["keys"], json!(["staging/elsewhere/part-0.parquet"]), "younger than the EMR bound: kept");
}

#[test]
fn a_failed_spark_step_shows_the_drivers_error_from_the_steps_log() {
    if !runtimes(&[Runtime::Moto, Runtime::Spark]) {
        return;
    }
    // Real PySpark fails on a column that does not exist. On EMR the step's FailureDetails say only
    // "Unknown Error."; the harness lays the logs out as EMR does (client mode: the driver's stderr
    // is the step's stderr.gz), and dagrun finds the Python error among Spark's log lines.
    let s = setup_with(&PIPELINE.replace("SELECT ts, user_id FROM", "SELECT ts, user_idd FROM"));
    s.mode(json!({"steps": "spark"}));
    let run = s.run(&["--run-id", "bad-sql"]).expect(1);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(all.contains("Unknown Error."), "{all}");
    assert!(all.contains("driver error:"), "{all}");
    assert!(all.contains("AnalysisException") && all.contains("user_idd"), "{all}");
    let cluster = s.clusters()[0].clone();
    let step = steps(&cluster)[0]["id"].as_str().unwrap().to_string();
    let logs = s.moto.keys("logs", "emr");
    assert!(logs.contains(&format!("emr/{}/steps/{step}/stderr.gz", cluster["id"].as_str().unwrap())), "{logs:?}");
    assert!(!logs.iter().any(|k| k.contains("/containers/")), "client mode: no container log holds the error");
    s.assert_all_terminated();
}

#[test]
fn the_dry_run_prices_the_cluster_and_estimates_from_the_last_runs_cluster() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let s = setup();
    let dry = s.run(&["--dry-run"]).expect(0);
    // 1 master + 2 core m5.xlarge at $0.192 + $0.048 each (us-east-1).
    assert!(dry.stdout.contains("3 instance-hours per hour, $0.720/h in us-east-1"), "{}", dry.stdout);
    assert!(
        dry.stdout.contains(
            "CORE 2 x m5.xlarge: $0.240/h each (EC2 $0.192 + EMR $0.048; spot, priced at on-demand as an upper bound)"
        ),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("no history"), "{}", dry.stdout);

    s.mode(json!({"steps": "complete"}));
    let run = s.run(&["--run-id", "priced"]).expect(0);
    assert!(run.stdout.contains(" of wall time (start-up "), "{}", run.stdout);
    let records = tempfile::tempdir().unwrap();
    s.moto.control("download", json!({"bucket": "lake", "prefix": "out/_dagrun/priced", "dir": records.path()}));
    let record: Value = serde_json::from_slice(&std::fs::read(records.path().join("run.json")).unwrap()).unwrap();
    let cost = &record["costs"][0];
    assert_eq!(cost["usd_per_hour"], 0.72, "{cost}");
    assert!(cost["wall_seconds"].as_f64().unwrap() > 0.0, "{cost}");
    let shares: f64 = cost["tasks"].as_object().unwrap().values().map(|v| v.as_f64().unwrap()).sum();
    assert!((shares - cost["usd"].as_f64().unwrap()).abs() < 1e-9, "each EMR task's share adds up: {cost}");
    // Local tasks record what they took of this machine.
    let events = record["tasks"].as_array().unwrap().iter().find(|t| t["id"] == "events").unwrap();
    assert!(events["output"]["details"]["cpu_seconds"].as_str().is_some(), "{events}");
    assert!(events["output"]["details"]["peak_rss_mib"].as_str().is_some(), "{events}");

    let again = s.run(&["--dry-run"]).expect(0);
    assert!(again.stdout.contains("for this run: the cluster of run priced lived"), "{}", again.stdout);

    // --refresh-prices asks the Price List API (the harness speaks its GetProducts JSON).
    s.moto.control("prices", json!({"AmazonEC2": {"m5.xlarge": "0.5"}, "ElasticMapReduce": {"m5.xlarge": "0.1"}}));
    let refreshed = s.run(&["--dry-run", "--refresh-prices"]).expect(0);
    assert!(
        refreshed.stdout.contains("MASTER 1 x m5.xlarge: $0.600/h each (EC2 $0.500 + EMR $0.100, AWS Price List API)"),
        "{}",
        refreshed.stdout
    );
    assert!(refreshed.stdout.contains("$1.800/h in us-east-1 (the AWS Price List API)"), "{}", refreshed.stdout);
    assert_eq!(s.moto.stats()["pricing"], 2, "one GetProducts for EC2 and one for EMR, for the one type");
}

#[test]
fn a_budget_stops_the_cluster_and_the_record_shows_the_spend_and_why() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    // $1,200 an instance-hour: 3 instances spend $1 a second, and the 1m idle timeout commits $60.
    let text =
        PIPELINE.replace("idle_timeout: 45m", "idle_timeout: 1m\n    prices: {m5.xlarge: {ec2: 1000, emr: 200}}");
    let s = setup_with(&text);
    s.mode(json!({"steps": "hold"}));
    let started = Instant::now();
    let run = s.run(&["--run-id", "costly", "--max-cost", "63"]).expect(1);
    assert!(started.elapsed() < Duration::from_secs(60), "stopped at the budget, not the timeout");
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(all.contains("EMR budget: $"), "{all}");
    assert!(all.contains("passes the budget of $63.00"), "{all}");
    assert_eq!(state(&run.stdout, "plays"), "failed");
    assert_eq!(state(&run.stdout, "load_plays"), "skipped");
    let cluster = s.clusters()[0].clone();
    assert_eq!(steps(&cluster)[0]["state"], "CANCELLED");
    s.assert_all_terminated();
    let records = tempfile::tempdir().unwrap();
    s.moto.control("download", json!({"bucket": "lake", "prefix": "out/_dagrun/costly", "dir": records.path()}));
    let record: Value = serde_json::from_slice(&std::fs::read(records.path().join("run.json")).unwrap()).unwrap();
    let cost = &record["costs"][0];
    assert!(cost["stopped"].as_str().unwrap().contains("passes the budget"), "{cost}");
    assert!(cost["usd"].as_f64().unwrap() > 1.0, "the spend is recorded: {cost}");
    // The HTML report shows the cluster's cost, the budget's stop and each EMR task's share.
    let page = records.path().join("report.html");
    let report = ["report", "s3://lake/out/_dagrun/costly", "--output", page.to_str().unwrap()];
    Run::from(s.moto.dagrun().current_dir(s.dir.path()).args(report).output().unwrap()).expect(0);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains(r#"<section id="cost"><h2>Cost</h2>"#), "{html}");
    assert!(html.contains(" of wall time (start-up ") && html.contains("at $3600.000/h"), "{html}");
    assert!(html.contains("<b>Stopped by the budget:</b> EMR budget: $"), "{html}");
    assert!(html.contains("<tr><td>plays</td><td>$"), "the task's share: {html}");
    assert!(html.contains("<th>process peak memory</th>") && html.contains("<tr><td>events</td>"), "{html}");

    // A budget the idle timeout alone passes starts nothing; $0 forbids EMR before anything runs.
    let none = s.run(&["--run-id", "too-costly", "--max-cost", "10"]).expect(1);
    assert!(none.stdout.contains("no cluster was started") || none.stderr.contains("no cluster was started"));
    assert_eq!(s.clusters().len(), 1);
    let forbidden = s.run(&["--max-cost", "0"]).expect(2);
    assert!(forbidden.stderr.contains("a budget of $0 forbids EMR"), "{}", forbidden.stderr);
    assert!(forbidden.stderr.contains("plays, load_plays"), "{}", forbidden.stderr);
}

const AUTO_PIPELINE: &str = r#"name: autotest
vars: {input: ~, output: ~}
engines:
  emr:
    release_label: emr-7.5.0
    instance_groups:
      - {role: master, instance_type: m5.xlarge, count: 1}
    service_role: EMR_DefaultRole
    instance_profile: EMR_EC2_DefaultRole
    log_uri: s3://logs/emr/
    staging: s3://lake/staging
    poll_interval: 50ms
    auto_max_local: 200ms
tasks:
  - id: events
    kind: extract
    engine: auto
    path: ${input}
    format: jsonl
    schema: {ts: int, page: string}
  - id: plays
    kind: transform
    engine: auto
    depends_on: [events]
    sql: SELECT ts FROM events WHERE page = 'NextSong'
  - id: load_plays
    kind: load
    engine: auto
    depends_on: [plays]
    table: plays
    path: ${output}/plays
"#;

#[test]
fn engine_auto_runs_a_small_listing_here_and_a_large_one_on_emr_and_says_why() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let s = setup_with(AUTO_PIPELINE);
    // A large listing: 2,000 objects (zero bytes: their count alone takes the model past 200ms).
    let many = tempfile::tempdir().unwrap();
    for i in 0..2000 {
        std::fs::write(many.path().join(format!("part-{i:04}.json")), "").unwrap();
    }
    s.moto.upload(many.path(), "lake", "many");
    s.mode(json!({"steps": "complete"}));
    let run = |input: &str, extra: &[&str]| {
        let mut cmd = s.moto.dagrun();
        cmd.current_dir(s.dir.path())
            .arg(s.pipeline.to_str().unwrap())
            .args(["--set", &format!("input={input}"), "--set", "output=s3://lake/out"])
            .args(extra);
        Run::from(cmd.output().unwrap())
    };

    // The repo's sample logs (30 objects): local, with the numbers.
    let small = run("s3://lake/in/log_data", &["--dry-run"]).expect(0);
    assert!(small.stdout.contains("engine: auto chose local for events: fits locally: "), "{}", small.stdout);
    assert!(small.stdout.contains("in 30 file(s): planned "), "{}", small.stdout);
    let ran = run("s3://lake/in/log_data", &["--run-id", "small"]).expect(0);
    assert!(ran.stdout.contains("engine: auto chose local for plays"), "{}", ran.stdout);
    assert!(s.clusters().is_empty(), "no cluster for a stage that fits");

    let large = run("s3://lake/many", &["--dry-run"]).expect(0);
    assert!(large.stdout.contains("engine: auto chose emr for events: does not fit locally: "), "{}", large.stdout);
    assert!(large.stdout.contains("in 2,000 file(s)"), "{}", large.stdout);
    assert!(large.stdout.contains("EMR cost estimate:"), "the cluster's cost is shown: {}", large.stdout);
    let ran = run("s3://lake/many", &["--run-id", "large"]).expect(0);
    assert!(ran.stdout.contains("engine: auto chose emr for plays"), "{}", ran.stdout);
    let names: Vec<String> = steps(&s.clusters()[0]).iter().map(|s| s["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(
        names,
        ["dagrun:autotest:large:events:1", "dagrun:autotest:large:plays:1", "dagrun:autotest:large:load_plays:1"]
    );
    let records = tempfile::tempdir().unwrap();
    s.moto.control("download", json!({"bucket": "lake", "prefix": "out/_dagrun/large", "dir": records.path()}));
    let record: Value = serde_json::from_slice(&std::fs::read(records.path().join("run.json")).unwrap()).unwrap();
    assert_eq!(record["auto"][0]["engine"], "emr", "{}", record["auto"]);
    assert_eq!(record["auto"][0]["input"]["files"], 2000);

    // EMR forbidden: a stage that does not fit stops the run before it starts, saying why.
    let forbidden = run("s3://lake/many", &["--max-cost", "0"]).expect(2);
    assert!(forbidden.stderr.contains("task `events` (engine: auto) does not fit locally"), "{}", forbidden.stderr);
    assert!(forbidden.stderr.contains("a budget of $0 forbids EMR"), "{}", forbidden.stderr);
    assert_eq!(s.clusters().len(), 1, "no new cluster");
}
