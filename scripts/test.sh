#!/usr/bin/env bash
# The project's test command: prepares a fresh machine (packages, workloads)
# and runs every check. Run as root for the tests that need perf events on
# the whole machine; set HEARTH_REQUIRE_PRIVILEGED=1 to make those tests fail
# instead of skip when privileges are missing (CI does).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash scripts/setup-tests.sh

# A clean run builds every test binary once; incremental state would only
# add gigabytes to target/. A linker that runs out of disk dies with a bus
# error that names no cause, so say how much room there is up front.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
mkdir -p target
free_kib="$(df -Pk target | awk 'NR == 2 { print $4 }')"
echo "test: $((free_kib / 1024 / 1024)) GiB free for target/"
# A clean run leaves about 1.6 GB in target/ (measured 2026-11-21).
if [ "$free_kib" -lt $((4 * 1024 * 1024)) ]; then
    echo "test: warning: less than 4 GiB free; a clean run needs about 2 GB in target/ and more while linking" >&2
fi

echo "test: cargo fmt --check"
cargo fmt --all -- --check
echo "test: cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "test: cargo test"
cargo test --workspace --no-fail-fast
