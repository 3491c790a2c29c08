//! Secrets are hidden by value: what came from the environment through `${env:…}`, a variable
//! marked `secret: true` set with `--set`, and AWS credentials never appear in anything dagrun
//! prints or writes, at any log level, in any format.

use std::path::Path;

use crate::support::*;

const ENV_SECRET: &str = "env-secret-Zq81xP";
const SET_SECRET: &str = "set-secret-Kw27vN";
const AWS_SECRET: &str = "aws-secret-Jm55tR";
const AWS_TOKEN: &str = "aws-token-Lp09sB";
const SECRETS: [&str; 4] = [ENV_SECRET, SET_SECRET, AWS_SECRET, AWS_TOKEN];

/// Every file under `dir`, read whole (bytes, lossily as text).
fn every_file(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            every_file(&path, out);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            out.push((path.display().to_string(), String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
}

fn assert_hidden(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret} leaked into {what}:\n{text}");
    }
}

#[test]
fn secrets_from_the_environment_and_secret_variables_never_appear_in_output_records_or_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lake");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    // An ordinary variable fed by the environment, a `secret: true` variable set on the command
    // line, both reaching the pipeline's description, a path (so an error names them) and a
    // check's SQL.
    let text = std::fs::read_to_string(sparkify())
        .unwrap()
        .replace(
            "  engine: local\n",
            "  engine: local\n  conn: \"postgres://app:${env:DAGRUN_TEST_DB_PASSWORD}@db\"\n  vault_ref: {value: ~, secret: true}\n",
        )
        .replace(
            "  artists and time (dimensions)",
            "  artists and time (dimensions), audited at ${conn} with ${vault_ref}",
        )
        .replace(
            "tasks:\n",
            "tasks:\n  - id: probe\n    kind: extract\n    description: reads ${vault_ref}\n    path: ${input}/no-such-${vault_ref}-${env:DAGRUN_TEST_DB_PASSWORD}\n    format: json\n    schema: {a: string}\n\n",
        );
    let p = pipeline(tmp.path(), "sparkify.yaml", &text);
    let input = format!("input={}", sample().display());
    let output = format!("output={}", out.display());
    let vault = format!("vault_ref={SET_SECRET}");
    let base = [p.to_str().unwrap(), "--set", &input, "--set", &output, "--set", &vault];
    let with_env = |cmd: &mut std::process::Command| {
        cmd.env("DAGRUN_TEST_DB_PASSWORD", ENV_SECRET)
            .env("AWS_ACCESS_KEY_ID", "aws-key-id-Qt40kD")
            .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
            .env("AWS_SESSION_TOKEN", AWS_TOKEN)
            .env("GITHUB_STEP_SUMMARY", tmp.path().join("work/summary.md"))
            .current_dir(&work);
    };
    let mut printed = Vec::new();

    let mut dry = dagrun();
    with_env(&mut dry);
    let dry = Run::from(dry.args(base).args(["--dry-run", "-vv"]).output().unwrap()).expect(0);
    assert!(dry.stdout.contains("postgres://app:***@db"), "the dry run shows the variable, hidden:\n{}", dry.stdout);
    printed.push(("the dry run".to_string(), format!("{}{}", dry.stdout, dry.stderr)));

    for extra in [&["-vv"][..], &["-vv", "--log-format", "json"][..]] {
        let junit = work.join("junit.xml");
        let report = work.join("report.html");
        let mut run = dagrun();
        with_env(&mut run);
        let run = Run::from(
            run.args(base)
                .args(extra)
                .args(["--junit", junit.to_str().unwrap(), "--report", report.to_str().unwrap()])
                .output()
                .unwrap(),
        )
        .expect(1);
        assert!(run.stderr.contains("no-such-***"), "the probe's error names its path, hidden:\n{}", run.stderr);
        printed.push((format!("a run with {extra:?}"), format!("{}{}", run.stdout, run.stderr)));
    }
    for args in [&["validate"][..], &["graph", "--format", "html"][..], &["graph", "--format", "dot"][..]] {
        let mut cmd = dagrun();
        with_env(&mut cmd);
        let done = Run::from(cmd.args(args).args(base).arg("-vv").output().unwrap()).expect(0);
        printed.push((format!("{args:?}"), format!("{}{}", done.stdout, done.stderr)));
    }
    let mut cmd = dagrun();
    with_env(&mut cmd);
    let latest = std::fs::read_to_string(out.join("_dagrun/LATEST")).unwrap();
    let record = out.join("_dagrun").join(latest.trim()).join("run.json");
    let report =
        Run::from(cmd.args(["report", record.to_str().unwrap(), "-o", "again.html"]).output().unwrap()).expect(0);
    printed.push(("dagrun report".into(), format!("{}{}", report.stdout, report.stderr)));

    for (what, text) in &printed {
        assert_hidden(what, text);
    }
    let mut written = Vec::new();
    every_file(tmp.path(), &mut written);
    let record_text = std::fs::read_to_string(&record).unwrap();
    assert!(record_text.contains("no-such-***"), "run.json keeps the error, hidden:\n{record_text}");
    assert!(written.iter().any(|(path, _)| path.ends_with("summary.md")));
    assert!(written.iter().any(|(path, _)| path.ends_with("again.html")));
    for (path, text) in &written {
        if path.ends_with("sparkify.yaml") {
            continue;
        }
        assert_hidden(path, text);
    }
}

#[test]
fn a_variable_declared_secret_false_shows_the_environment_value_it_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(sparkify())
        .unwrap()
        .replace(
            "  engine: local\n",
            "  engine: local\n  bucket: {value: \"${env:DAGRUN_TEST_BUCKET}\", secret: false}\n",
        )
        .replace("  artists and time (dimensions)", "  artists and time (dimensions) for ${bucket}");
    let p = pipeline(tmp.path(), "sparkify.yaml", &text);
    let run = Run::from(
        dagrun()
            .env("DAGRUN_TEST_BUCKET", "lake-bucket-public")
            .args([p.to_str().unwrap(), "--dry-run"])
            .output()
            .unwrap(),
    )
    .expect(0);
    assert!(run.stdout.contains("bucket=lake-bucket-public"), "{}", run.stdout);
}

#[test]
fn keys_from_a_shared_credentials_file_never_appear_even_in_the_sdks_trace() {
    if !runtimes(&[Runtime::Moto]) {
        return;
    }
    let moto = Moto::start();
    moto.upload(&sample(), "udacity-dend", "sample");
    moto.control("bucket", serde_json::json!({"bucket": "lake"}));
    let tmp = tempfile::tempdir().unwrap();
    let (key_id, secret) = ("AKIAFILEKEYQ7TESTX9", "file-secret-Vb73qN/never-printed");
    let credentials = tmp.path().join("credentials");
    std::fs::write(
        &credentials,
        format!("[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n"),
    )
    .unwrap();
    let mut cmd = moto.dagrun();
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_SHARED_CREDENTIALS_FILE", &credentials);
    let pipeline = sparkify();
    let run = Run::from(
        cmd.args([
            pipeline.to_str().unwrap(),
            "--set",
            "input=s3://udacity-dend/sample",
            "--set",
            "output=s3://lake/star",
        ])
        .args(["-vv", "--only", "load_artists"])
        .output()
        .unwrap(),
    )
    .expect(0);
    let printed = format!("{}{}", run.stdout, run.stderr);
    // The SDK's trace shows the credentials it loaded from the file (their key id in clear).
    assert!(printed.contains("access_key_id: \"***\""), "the SDK's trace names the file's key: {printed:.3000}");
    assert!(!printed.contains(key_id) && !printed.contains(secret), "a key from the file leaked:\n{printed:.3000}");
}
