#!/usr/bin/env bash
# Builds dagrun without its engines and storages (`--no-default-features`) and checks that the
# lean binary validates, graphs and dry-runs the Sparkify pipeline, and that a run, an S3 report and
# `dagrun emr` each say which feature they need. Run by .ci/run; needs nothing beyond cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${LEAN_TARGET_DIR:-target/lean}"
fail() { echo "lean build: $*" >&2; exit 1; }
# Code behind a feature must not leave the lean build with warnings (unused imports, dead code).
built=$(cargo build --no-default-features --locked --message-format=short 2>&1) || fail "does not build: $built"
if grep -q "warning:" <<<"$built"; then fail "builds with warnings: $built"; fi
bin="$CARGO_TARGET_DIR/debug/dagrun"
expect() { # expect CODE PATTERN -- ARGS...
  local code=$1 pattern=$2; shift 3
  local out rc=0
  out=$("$bin" "$@" 2>&1) || rc=$?
  [[ $rc -eq $code ]] || fail "dagrun $* exited $rc, wanted $code: $out"
  grep -qF -- "$pattern" <<<"$out" || fail "dagrun $* did not say '$pattern': $out"
}

expect 0 "is valid: pipeline sparkify, 18 tasks in 5 waves" -- validate pipelines/sparkify.yaml
expect 0 "wave 1" -- graph pipelines/sparkify.yaml
expect 0 "note: the \`local\` engine, which a run of this plan needs, is not in this build" -- pipelines/sparkify.yaml --dry-run
expect 0 "step 10: 1 task starts" -- pipelines/sparkify.yaml --dry-run --jobs 2
expect 2 "runs on \`local\`, which is not in this build of dagrun (features: none); build it with \`cargo build --features polars\`" -- pipelines/sparkify.yaml
expect 2 "\`dagrun emr\` is not in this build" -- emr gc
expect 1 "reading run records on S3 is not in this build" -- report s3://lake/runs
echo "lean build: validates, graphs and dry-runs; runs say which feature they need"
