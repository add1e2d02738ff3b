#!/usr/bin/env bash
# Runs every test: format and lint gates, the Rust unit and integration tests, then the
# black-box acceptance suite, which writes pytest_results.json at the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --check
cargo clippy --all-targets -- -D warnings
# Also builds target/debug/strangler, which the acceptance suite drives.
cargo test --all-targets

python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/acceptance/requirements.txt
STRANGLER_BIN="$PWD/target/debug/strangler" .venv/bin/python -m pytest tests/acceptance \
    -p no:cacheprovider --json-report --json-report-file=pytest_results.json -q
