#!/usr/bin/env bash
# Line coverage of the whole test suite (Rust tests and the acceptance suite over the
# binary) with cargo-llvm-cov; needs `rustup component add llvm-tools` and
# `cargo install cargo-llvm-cov`. Prints the per-file summary and the total.
set -euo pipefail
cd "$(dirname "$0")/.."

eval "$(cargo llvm-cov show-env --sh 2>/dev/null)"
cargo llvm-cov clean --workspace
cargo test --all-targets
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/acceptance/requirements.txt
STRANGLER_BIN="$PWD/target/debug/strangler" .venv/bin/python -m pytest tests/acceptance \
    -p no:cacheprovider -q
cargo llvm-cov report --summary-only "$@"
