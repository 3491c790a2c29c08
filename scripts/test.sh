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

cargo test --workspace --locked "$@"
