#!/usr/bin/env bash
# Replay benchmark of Hearth's unwind + aggregate path on one thread.
#
# Usage: scripts/bench-replay.sh [capture-file [iterations]]
#
# Without a capture file, makes one: records split_c (10 s, one CPU-bound
# thread, no frame pointers, so every sample needs DWARF unwinding) at
# 999 Hz with `hearth record --capture`, then replays it with
# crates/hearth/examples/replay.rs (see there for what is timed).
# Environment: HEARTH_CAPTURE (capture path to create or reuse; default
# /tmp/hearth-replay.cap), HEARTH_REPLAY_ITERATIONS (default 5).
# Needs root, or kernel.perf_event_paranoid low enough, to make a capture.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
log() { printf 'bench-replay: %s\n' "$*" >&2; }

capture="${1:-${HEARTH_CAPTURE:-/tmp/hearth-replay.cap}}"
iterations="${2:-${HEARTH_REPLAY_ITERATIONS:-5}}"

log "building hearth and the replay example (release)"
cargo build --release -q -p hearth --bin hearth --example replay
target_dir="$(cargo metadata --format-version 1 --no-deps |
	sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"

if [[ $# -eq 0 || ! -f $capture ]]; then
	[[ -x tests/workloads/build/split_c ]] ||
		{ log "error: tests/workloads/build/split_c missing: run scripts/setup-tests.sh"; exit 1; }
	log "recording $capture: hearth record --capture $capture -F 999 -- tests/workloads/build/split_c 10"
	# The top-functions table goes to the log; only the capture is used.
	if ! "$target_dir/release/hearth" record --capture "$capture" -F 999 \
		-- tests/workloads/build/split_c 10 >"$capture.log" 2>&1; then
		cat "$capture.log" >&2
		log "error: hearth record failed"
		exit 1
	fi
	grep '^hearth:' "$capture.log" >&2 || true
fi

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, kernel $(uname -r)," \
	"$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
"$target_dir/release/examples/replay" "$capture" "$iterations"
