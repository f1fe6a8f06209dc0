#!/usr/bin/env bash
# The project's test command: prepares a fresh machine (packages, workloads)
# and runs every check. Run as root for the tests that need perf events on
# the whole machine; set HEARTH_REQUIRE_PRIVILEGED=1 to make those tests fail
# instead of skip when privileges are missing (CI does).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash scripts/setup-tests.sh

echo "test: cargo fmt --check"
cargo fmt --all -- --check
echo "test: cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "test: cargo test"
cargo test --workspace --no-fail-fast
