#!/usr/bin/env bash
# Agent benchmarks: OTLP bytes per sample, and the agent's CPU and memory
# over a long run on a busy machine.
#
# Usage: scripts/bench-agent.sh [agent-seconds [record-seconds [grpc-seconds]]]
#   agent-seconds   length of the CPU/memory run (default 600)
#   record-seconds  length of the `hearth record` comparison (default 20)
#   grpc-seconds    length of each short agent run to the receiver, without
#                   and with gzip (default 30)
#
# Phases, each with the workloads below keeping both CPUs busy
# (tests/workloads/build: split_c and split_rust, one CPU-bound thread each,
# and spawner, 150 short-lived processes per second):
#   1a. hearth record -F 499 -d <record-seconds> -o b.pb.gz -o b.otlp:
#       samples, OTLP request bytes (raw, gzip -6), pprof bytes (gzip, raw).
#   1b. hearth agent --interval 5 exporting over gRPC to tests/otlp/receiver.py,
#       without and with OTEL_EXPORTER_OTLP_COMPRESSION=gzip: the receiver's
#       per-request "bytes" (for gRPC, the size after decompression) and
#       samples, and the TCP payload the agent sent (ss bytes_acked).
#   3.  the same agent (no compression) for <agent-seconds>: every 10 s, the
#       agent's utime+stime and VmRSS/RssAnon/RssFile from /proc, the load
#       average, and /metrics (hearth_samples_total, hearth_report_seconds,
#       ...); smaps_rollup at the start, after 60 s and at the end.
# Output: markdown tables on stdout, raw data in $HEARTH_BENCH_DIR
# (default /tmp/hearth-bench-agent). Needs root (or a low enough
# kernel.perf_event_paranoid), scripts/setup-tests.sh run once, and builds
# hearth in release (CARGO_TARGET_DIR is honoured).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
log() { printf 'bench-agent: %s\n' "$*" >&2; }

agent_s="${1:-600}"
record_s="${2:-20}"
grpc_s="${3:-30}"
out="${HEARTH_BENCH_DIR:-/tmp/hearth-bench-agent}"
wl=tests/workloads/build
py=.venv-tests/bin/python

for bin in "$wl/split_c" "$wl/split_rust" "$wl/spawner" "$wl/shortlived"; do
	[[ -x $bin ]] || { log "error: $bin missing: run scripts/setup-tests.sh"; exit 1; }
done
[[ -x $py ]] || { log "error: $py missing: run scripts/setup-tests.sh"; exit 1; }

log "building hearth (release)"
cargo build --release -q -p hearth --bin hearth
target_dir="$(cargo metadata --format-version 1 --no-deps |
	sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
hearth="$target_dir/release/hearth"

rm -rf "$out"
mkdir -p "$out"

# Everything this script starts, to stop on exit.
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_load SECONDS: both CPUs busy plus 150 process starts per second.
load_pids=()
start_load() {
	local s="$1"
	"$wl/split_c" "$s" >/dev/null &
	load_pids+=($!)
	"$wl/split_rust" "$s" >/dev/null &
	load_pids+=($!)
	"$wl/spawner" "$s" "$root/$wl/shortlived" >/dev/null &
	load_pids+=($!)
	pids+=("${load_pids[@]}")
}
stop_load() {
	local p
	for p in "${load_pids[@]}"; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	load_pids=()
}

# start_receiver NAME: the receiver's stdin is a pipe held on fd 7; closing
# fd 7 (stop_receiver) makes it exit.
start_receiver() {
	local name="$1"
	grpc_port="$(free_port)"
	rm -f "$out/$name.ready"
	exec 7> >(exec "$py" tests/otlp/receiver.py --grpc-port "$grpc_port" \
		--control "$out/$name.control.json" --out "$out/$name.jsonl" \
		--ready "$out/$name.ready" 2>"$out/$name.receiver.log")
	receiver_pid=$!
	pids+=("$receiver_pid")
	for _ in $(seq 100); do
		[[ -f $out/$name.ready ]] && return 0
		sleep 0.1
	done
	log "error: receiver did not start"
	cat "$out/$name.receiver.log" >&2
	exit 1
}
stop_receiver() {
	exec 7>&-
	wait "$receiver_pid" 2>/dev/null || true
}

# start_agent NAME [VAR=VALUE...]: the agent exporting to the receiver.
start_agent() {
	local name="$1"
	shift
	metrics_port="$(free_port)"
	# The endpoint comes from the flag unless the variables give one.
	local flag=(--otlp-endpoint "http://127.0.0.1:$grpc_port")
	[[ " $* " == *" OTEL_EXPORTER_OTLP_ENDPOINT="* ]] && flag=()
	env "$@" "$hearth" agent --interval 5 --metrics-listen "127.0.0.1:$metrics_port" \
		"${flag[@]}" >"$out/$name.agent.log" 2>&1 &
	agent_pid=$!
	pids+=("$agent_pid")
	for _ in $(seq 100); do
		curl -sf "http://127.0.0.1:$metrics_port/healthz" >/dev/null 2>&1 && return 0
		kill -0 "$agent_pid" 2>/dev/null || break
		sleep 0.1
	done
	log "error: agent did not become healthy"
	cat "$out/$name.agent.log" >&2
	exit 1
}
stop_agent() {
	kill -TERM "$agent_pid" 2>/dev/null || true
	wait "$agent_pid" 2>/dev/null || true
}

# TCP payload bytes the agent sent to the receiver, over open connections.
tcp_bytes_acked() {
	ss -tinH state established "( dport = :$grpc_port )" |
		grep -o 'bytes_acked:[0-9]*' | cut -d: -f2 | awk '{s+=$1} END {print s+0}'
}

cpu_model="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
echo "# bench-agent: $(date -u '+%Y-%m-%d %H:%M UTC'), kernel $(uname -r), $cpu_model, nproc $(nproc)"
echo "# hearth $("$hearth" --version 2>/dev/null | awk '{print $2}'), $hearth"
echo

# ---------------------------------------------------------------------------
# 1a. hearth record: OTLP request vs pprof, same recording.
# ---------------------------------------------------------------------------
log "1a: hearth record -F 499 -d $record_s under load"
start_load $((record_s + 3))
sleep 1
load1_before="$(cut -d' ' -f1 /proc/loadavg)"
"$hearth" record -F 499 -d "$record_s" -o "$out/b.pb.gz" -o "$out/b.otlp" >"$out/record.log" 2>&1
load1_after="$(cut -d' ' -f1 /proc/loadavg)"
stop_load
otlp_raw="$(stat -c %s "$out/b.otlp")"
otlp_gz="$(gzip -6 -c "$out/b.otlp" | wc -c)"
pprof_gz="$(stat -c %s "$out/b.pb.gz")"
pprof_raw="$(gzip -dc "$out/b.pb.gz" | wc -c)"
"$py" - "$out/b.otlp" "$otlp_raw" "$otlp_gz" "$pprof_gz" "$pprof_raw" "$record_s" \
	"$load1_before" "$load1_after" <<'EOF'
import sys
from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2 as svc

path, otlp_raw, otlp_gz, pprof_gz, pprof_raw, secs, l0, l1 = sys.argv[1:]
req = svc.ExportProfilesServiceRequest.FromString(open(path, "rb").read())
samples = rows = 0
for rp in req.resource_profiles:
    for sp in rp.scope_profiles:
        for p in sp.profiles:
            for s in p.samples:
                rows += 1
                samples += sum(s.values)
d = req.dictionary
print(f"## 1a. `hearth record -F 499 -d {secs}` under load (load1 {l0} -> {l1})")
print()
print(f"{samples} samples in {rows} distinct (stack, thread) rows; "
      f"{len(req.resource_profiles)} resources; dictionary: {len(d.stack_table)} stacks, "
      f"{len(d.location_table)} locations, {len(d.function_table)} functions, "
      f"{len(d.string_table)} strings.")
print()
print("| encoding | bytes | bytes/sample |")
print("|---|---:|---:|")
for name, b in [
    ("OTLP request (.otlp), raw", otlp_raw),
    ("OTLP request, gzip -6", otlp_gz),
    ("pprof (.pb.gz), gzip as written", pprof_gz),
    ("pprof, uncompressed", pprof_raw),
]:
    b = int(b)
    print(f"| {name} | {b} | {b / samples:.1f} |")
print()
EOF

# ---------------------------------------------------------------------------
# 1b. The agent over gRPC, without and with gzip.
# ---------------------------------------------------------------------------
for comp in none gzip; do
	log "1b: agent --interval 5 -> receiver (gRPC, compression $comp), ${grpc_s}s under load"
	start_receiver "grpc-$comp"
	start_load $((grpc_s + 3))
	if [[ $comp == gzip ]]; then
		# OTEL_EXPORTER_OTLP_COMPRESSION is read only together with an
		# OTEL_EXPORTER_OTLP_ENDPOINT variable: give the endpoint that way.
		start_agent "grpc-$comp" OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$grpc_port" \
			OTEL_EXPORTER_OTLP_COMPRESSION=gzip
		grep -q 'gzip=true' "$out/grpc-$comp.agent.log" ||
			log "warning: the agent did not configure gzip (see $out/grpc-$comp.agent.log)"
	else
		start_agent "grpc-$comp"
	fi
	sleep "$grpc_s"
	# TCP bytes and the requests received so far, at the same moment.
	echo "$(tcp_bytes_acked) $(wc -l <"$out/grpc-$comp.jsonl")" >"$out/grpc-$comp.tcp"
	stop_agent
	stop_load
	stop_receiver
done
python3 - "$out" <<'EOF'
import json, sys

out = sys.argv[1]
print("## 1b. Agent (`--interval 5`, 19 Hz) -> tests/otlp/receiver.py over gRPC")
print()
print("Receiver \"bytes\" is the decoded message size (for gzip, after decompression);")
print("TCP bytes are what the agent's connections sent (ss bytes_acked: HTTP/2 and gRPC")
print("framing and headers included; compressed when gzip is on).")
print()
print("| compression | requests | samples/request (median) | receiver bytes/request (median) "
      "| receiver bytes/sample | TCP bytes/request | TCP bytes/sample | encoding seen |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
for comp in ("none", "gzip"):
    tcp_bytes, tcp_reqs = map(int, open(f"{out}/grpc-{comp}.tcp").read().split())
    # Requests received before the TCP snapshot (not the final flush on exit).
    reqs = [json.loads(l) for l in open(f"{out}/grpc-{comp}.jsonl")][:tcp_reqs]
    samples = [sum(r["samples"] for r in q["summary"]["resources"]) for q in reqs]
    sizes = [q["bytes"] for q in reqs]
    med = lambda v: sorted(v)[len(v) // 2] if v else 0
    enc = ",".join(sorted({q["encoding"] for q in reqs}))
    errs = sum(1 for q in reqs if not q["summary"]["ok"])
    tot_s = sum(samples) or 1
    print(f"| {comp} | {len(reqs)} | {med(samples)} | {med(sizes)} | "
          f"{sum(sizes) / tot_s:.1f} | {tcp_bytes / max(tcp_reqs, 1):.0f} | "
          f"{tcp_bytes / tot_s:.1f} | {enc}{'' if not errs else f' ({errs} invalid)'} |")
print()
EOF

# ---------------------------------------------------------------------------
# 3. Long run: agent CPU and memory on a busy machine.
# ---------------------------------------------------------------------------
log "3: agent for ${agent_s}s under load, sampled every 10 s"
start_receiver long
start_load $((agent_s + 15))
sleep 1
start_agent long
tck="$(getconf CLK_TCK)"
metric() { sed -n "s/^$1 \\([0-9.e+-]*\\).*/\\1/p" <<<"$2" | head -1; }
smaps() { grep -E '^(Rss|Anonymous|Pss_Anon|Pss_File|Private_Dirty|Shared_Clean):' "/proc/$agent_pid/smaps_rollup" | tr -s ' ' | tr '\n' ' '; }
printf 't\tticks\trss_kb\tanon_kb\tfile_kb\tload1\tsamples\tlost\twindows\tdropped\tsent\tfailures\treport_s\n' >"$out/long.tsv"
start="$(date +%s.%N)"
next=0
while :; do
	now="$(date +%s.%N)"
	t="$(awk -v a="$now" -v b="$start" 'BEGIN {printf "%.1f", a - b}')"
	read -r -a st <"/proc/$agent_pid/stat"
	# Fields 14 and 15 (utime, stime); comm has no spaces ("hearth").
	ticks=$((st[13] + st[14]))
	# One read of status, so that the three figures are of one moment.
	read -r rss anon file < <(awk '/^VmRSS:/ {r = $2} /^RssAnon:/ {a = $2} /^RssFile:/ {f = $2}
		END {print r, a, f}' "/proc/$agent_pid/status")
	m="$(curl -sf "http://127.0.0.1:$metrics_port/metrics" || true)"
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$ticks" "$rss" "$anon" "$file" \
		"$(cut -d' ' -f1 /proc/loadavg)" "$(metric hearth_samples_total "$m")" \
		"$(metric hearth_lost_samples_total "$m")" \
		"$(metric hearth_windows_total "$m")" "$(metric hearth_windows_dropped_total "$m")" \
		"$(metric hearth_exports_sent_total "$m")" "$(metric hearth_export_failures_total "$m")" \
		"$(metric hearth_report_seconds "$m")" >>"$out/long.tsv"
	case "$next" in
	0) echo "start $(smaps)" >"$out/long.smaps" ;;
	60) echo "60s $(smaps)" >>"$out/long.smaps" ;;
	esac
	((next >= agent_s)) && break
	next=$((next + 10))
	sleep "$(awk -v s="$start" -v n="$next" -v now="$(date +%s.%N)" 'BEGIN {d = s + n - now; print (d > 0 ? d : 0)}')"
done
echo "end $(smaps)" >>"$out/long.smaps"
stop_agent
stop_load
stop_receiver
python3 - "$out" "$tck" "$agent_s" <<'EOF'
import json, math, sys

out, tck, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = []
with open(f"{out}/long.tsv") as f:
    head = f.readline().split()
    for line in f:
        v = line.rstrip("\n").split("\t")
        rows.append({k: (float(x) if x else None) for k, x in zip(head, v)})
print(f"## 3. Agent (`--interval 5`, 19 Hz, gRPC, no compression) for {secs} s under load")
print()
loads = [r["load1"] for r in rows]
print(f"load1 min/avg/max: {min(loads):.2f} / {sum(loads) / len(loads):.2f} / {max(loads):.2f}")
print()
# CPU % of one core per 10 s interval.
iv = []
for a, b in zip(rows, rows[1:]):
    iv.append((b["t"], 100.0 * (b["ticks"] - a["ticks"]) / tck / (b["t"] - a["t"])))
print("| minute | CPU % avg | CPU % max (10 s) | samples/s | VmRSS MiB (end) | RssAnon MiB (end) "
      "| RssFile MiB (end) | report_seconds max | load1 (end) |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
minutes = math.ceil(max(r["t"] for r in rows) / 60)
for m in range(minutes):
    lo, hi = m * 60, (m + 1) * 60
    cpu = [c for t, c in iv if lo < t <= hi + 1]
    sel = [r for r in rows if lo <= r["t"] <= hi + 1]
    if not cpu or len(sel) < 2:
        continue
    a, b = sel[0], sel[-1]
    sps = (b["samples"] - a["samples"]) / (b["t"] - a["t"]) if b["samples"] is not None else 0
    cpu_avg = 100.0 * (b["ticks"] - a["ticks"]) / tck / (b["t"] - a["t"])
    rep = max((r["report_s"] or 0) for r in sel)
    print(f"| {m + 1} | {cpu_avg:.2f} | {max(cpu):.1f} | {sps:.1f} | {b['rss_kb'] / 1024:.1f} | "
          f"{b['anon_kb'] / 1024:.1f} | {b['file_kb'] / 1024:.1f} | {rep * 1000:.1f} ms | {b['load1']:.2f} |")
print()
first, last = rows[0], rows[-1]
at60 = min(rows, key=lambda r: abs(r["t"] - 60))
mx = max(rows, key=lambda r: r["rss_kb"])
total_cpu = 100.0 * (last["ticks"] - first["ticks"]) / tck / (last["t"] - first["t"])
print(f"CPU over the whole run: {total_cpu:.2f} % of one core "
      f"({(last['ticks'] - first['ticks']) / tck:.1f} s CPU in {last['t'] - first['t']:.0f} s).")
print()
print("| RSS | t (s) | VmRSS MiB | RssAnon MiB | RssFile MiB |")
print("|---|---:|---:|---:|---:|")
for name, r in [("start", first), ("after 1 min", at60), ("end", last), ("max", mx)]:
    print(f"| {name} | {r['t']:.0f} | {r['rss_kb'] / 1024:.1f} | {r['anon_kb'] / 1024:.1f} | {r['file_kb'] / 1024:.1f} |")
print()
# RSS trend after warm-up: least-squares slope of RssAnon from t >= 60 s.
warm = [r for r in rows if r["t"] >= 60]
if len(warm) >= 3:
    n = len(warm)
    mt = sum(r["t"] for r in warm) / n
    ma = sum(r["anon_kb"] for r in warm) / n
    slope = sum((r["t"] - mt) * (r["anon_kb"] - ma) for r in warm) / sum((r["t"] - mt) ** 2 for r in warm)
    print(f"RssAnon trend after 60 s: {slope * 60:+.1f} KiB/min (least squares over {n} points); "
          f"min {min(r['anon_kb'] for r in warm) / 1024:.1f} MiB, max {max(r['anon_kb'] for r in warm) / 1024:.1f} MiB.")
    print()
rep = sorted(r["report_s"] for r in rows if r["report_s"])
dur = last["t"] - first["t"]
print("| metric (end of run) | value |")
print("|---|---:|")
for k, name in [("samples", "hearth_samples_total"),
                ("lost", "hearth_lost_samples_total"), ("windows", "hearth_windows_total"),
                ("dropped", "hearth_windows_dropped_total"), ("sent", "hearth_exports_sent_total"),
                ("failures", "hearth_export_failures_total")]:
    v = last[k]
    print(f"| {name} | {'n/a' if v is None else int(v)} |")
if last["samples"] is not None:
    print(f"| samples/s (whole run) | {(last['samples'] - first['samples']) / dur:.1f} |")
if rep:
    print(f"| hearth_report_seconds, median / max of {len(rep)} scrapes | "
          f"{rep[len(rep) // 2] * 1000:.1f} ms / {rep[-1] * 1000:.1f} ms |")
reqs = [json.loads(l) for l in open(f"{out}/long.jsonl")]
if reqs:
    s = sum(sum(x["samples"] for x in q["summary"]["resources"]) for q in reqs)
    b = sum(q["bytes"] for q in reqs)
    bad = sum(1 for q in reqs if not q["summary"]["ok"])
    print(f"| receiver: requests / invalid | {len(reqs)} / {bad} |")
    print(f"| receiver: bytes/request, bytes/sample | {b / len(reqs):.0f}, {b / max(s, 1):.1f} |")
print()
print("smaps_rollup (kB):")
print()
print("```")
print(open(f"{out}/long.smaps").read().rstrip())
print("```")
EOF
log "raw data in $out"
