#!/usr/bin/env bash
# The profile page under load: 500 processes and a full 15-minute window.
#
# Usage: scripts/bench-ui.sh [minutes] [processes]     (defaults: 15, 500)
#
# Needs root, the workloads (scripts/setup-tests.sh builds `many`) and
# Debian's chromium + chromium-driver (also installed by setup-tests.sh).
# Environment: BENCH_UI_HZ="19 199" (default): one agent per frequency, run
# side by side on the same processes, each with its own page.
#
# What it does:
#   1. starts `many <processes>`: that many processes named svc-NNN, each
#      spending ~0.2 ms of CPU every 100 ms in one of a few call chains of
#      3 to 10 functions (out of 24), so the page has many rows and many
#      distinct stacks;
#   2. starts one `hearth agent` per frequency with `--ui-history <minutes>m`
#      and waits until the history holds the whole window (minutes + 30 s);
#   3. per agent: its memory (VmRSS, VmHWM), the history's own estimate
#      (hearth_ui_history_bytes on /metrics), its CPU time, then
#      `examples/ui_probe.rs`: API answer times and sizes, and in headless
#      Chromium the time to first render, to show a selection, to search
#      and to compare, and the page's JavaScript heap.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
minutes="${1:-15}"
procs="${2:-500}"
hzs="${BENCH_UI_HZ:-19 199}"
log() { printf 'bench-ui: %s\n' "$*" >&2; }

[[ $(id -u) -eq 0 ]] || { log "needs root (whole-machine sampling)"; exit 1; }
[[ -x tests/workloads/build/many ]] || { log "run scripts/setup-tests.sh first"; exit 1; }

cargo build --release -q -p hearth --bin hearth --example ui_probe
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
hearth="$target_dir/release/hearth"
probe="$target_dir/release/examples/ui_probe"

pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

window_s=$((minutes * 60))
tests/workloads/build/many "$procs" $((window_s + 600)) 200 100 &
pids+=($!)
sleep 3

declare -A ui_port metrics_port agent_pid
n=0
for hz in $hzs; do
	ui_port[$hz]=$((17070 + n))
	metrics_port[$hz]=$((19464 + n))
	"$hearth" agent -F "$hz" --ui-history "${minutes}m" \
		--ui-listen "127.0.0.1:${ui_port[$hz]}" \
		--metrics-listen "127.0.0.1:${metrics_port[$hz]}" \
		--log-level warn &
	agent_pid[$hz]=$!
	pids+=($!)
	n=$((n + 1))
done
log "$procs processes; agents at ${hzs// /, } Hz; waiting $((window_s + 30)) s for a full window"
sleep $((window_s + 30))

ticks=$(getconf CLK_TCK)
for hz in $hzs; do
	pid=${agent_pid[$hz]}
	echo "== agent at $hz Hz, ${minutes}-minute window, $procs processes (commit $(git rev-parse --short HEAD), $(date -u +%H:%M) UTC)"
	grep -E '^(VmRSS|VmHWM)' "/proc/$pid/status"
	read -r utime stime < <(awk '{print $14, $15}' "/proc/$pid/stat")
	echo "agent CPU: $(( (utime + stime) * 1000 / ticks )) ms over $((window_s + 30)) s"
	curl -s "http://127.0.0.1:${metrics_port[$hz]}/metrics" | grep -E '^hearth_(ui_|samples_total|windows_total)' || true
	echo "processes listed: $(curl -s "http://127.0.0.1:${ui_port[$hz]}/api/overview" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(1 for r in d["rows"] if r["kind"]=="process"), "rows,", d["total_samples"], "samples,", len(d["timeline"]), "windows")')"
	"$probe" "${ui_port[$hz]}" 5
	grep -E '^(VmRSS|VmHWM)' "/proc/$pid/status" | sed 's/^/after the probe: /'
done
