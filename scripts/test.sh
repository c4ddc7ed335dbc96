#!/usr/bin/env bash
# Runs the whole test suite: installs what the tests need, then cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace --no-fail-fast -- --test-threads=2
