//! The GitHub workflows: valid for actionlint, and doing what the project promises.

use std::process::Command;

use crate::support::*;

#[test]
fn both_workflows_pass_actionlint() {
    if !runtimes(&[Runtime::Node]) {
        return;
    }
    let output = Command::new("node")
        .current_dir(repo())
        .args(["tests/tools/actionlint.mjs", ".github/workflows/ci.yml", ".github/workflows/nightly.yml"])
        .output()
        .expect("node runs (scripts/test.sh installs the actionlint package)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("0 problem(s) in 2 file(s)"), "{stdout}");
}

#[test]
fn actionlint_catches_a_broken_workflow() {
    if !runtimes(&[Runtime::Node]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bad = pipeline(
        tmp.path(),
        "bad.yml",
        "name: x\non: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n",
    );
    let output = Command::new("node").current_dir(repo()).arg("tests/tools/actionlint.mjs").arg(&bad).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stdout).contains("property \"nope\" is not defined"));
}

#[test]
fn the_nightly_workflow_runs_the_pipeline_and_keeps_its_records() {
    if !runtimes(&[Runtime::Node]) {
        return;
    }
    let nightly = std::fs::read_to_string(repo().join(".github/workflows/nightly.yml")).unwrap();
    for needle in [
        "schedule:",
        "cron:",
        "workflow_dispatch:",
        "cargo build --release --locked",
        "dagrun generate --out nightly/data",
        "target/release/dagrun pipelines/sparkify.yaml",
        "--junit nightly/junit.xml --report nightly/report.html",
        "nightly/run.json",
        "actions/upload-artifact@v4",
        "aws-actions/configure-aws-credentials@v4",
        "id-token: write",
    ] {
        assert!(nightly.contains(needle), "nightly.yml lacks {needle}");
    }
    let ci = std::fs::read_to_string(repo().join(".github/workflows/ci.yml")).unwrap();
    assert!(ci.contains("pull_request:") && ci.contains("run: .ci/run"), "{ci}");
}
