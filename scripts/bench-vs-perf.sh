#!/usr/bin/env bash
# Profiling cost: Hearth against `perf record --call-graph dwarf` + `perf script`.
#
# Usage: scripts/bench-vs-perf.sh [seconds] [hz]        (defaults: 30 s, 99 Hz)
#
# Needs root (whole-machine sampling), perf, and the workloads
# (scripts/setup-tests.sh). Environment:
#   BENCH_OUT=DIR        keep every output there (default: a new /tmp dir)
#   PERF_STACK=BYTES     user stack bytes perf copies per sample (default
#                        16384, the same as `hearth record --stack-bytes`)
#   PERF_NO_INLINE_ONLY=1  skip perf's default post-processing (which resolves
#                        inlined frames, like Hearth does, and can take
#                        minutes on big binaries); run only the --no-inline one
#   BENCH_MODE=system    (default) both profilers sample the whole machine
#                        while the workload runs in the background
#   BENCH_MODE=command   each profiler starts the workload itself and records
#                        only it and its children (`hearth record -- CMD`,
#                        `perf record -- CMD`): only the workload's binaries
#                        are involved, whatever else runs on the machine
#   BENCH_WORKLOAD=mixed (default) the workload below;
#   BENCH_WORKLOAD=split_c  split_c alone (one CPU-bound process)
#
# Workload: split_c and split_rust (one CPU-bound thread each, 70/30 split
# between two call chains, no frame pointers, so both profilers must unwind
# with DWARF CFI) plus spawner (150 short-lived processes per second, 4 ms of
# CPU each: process churn, i.e. fork/exec/mmap/exit records to track).
# Together they ask for about 2.6 CPUs, so both CPUs of the machine stay
# busy. (With BENCH_WORKLOAD=split_c, only split_c runs.) In system mode
# the workload is started once and runs for the whole script; in command
# mode it runs for `seconds` under each profiler, and its own CPU time is
# subtracted from the profiler's.
#
# Each profiler records for the same duration and frequency, in the order
# Hearth, perf, perf, Hearth (A B B A) so that a drift in the machine's load
# affects both alike. Measured per run with
# /usr/bin/time (getrusage of each process and its children, so CPU time,
# not wall time, which other users of a shared machine would distort):
#   hearth: `hearth record` (whole machine, or `-- CMD`) to .folded and
#           .pb.gz in one run
#   perf:   `perf record` (`-a`, or `-- CMD`) to perf.data, then `perf script` (this is where
#           perf unwinds the DWARF stacks and symbolizes) piped into a small
#           awk collapse step that writes the same folded format
#           (process;root;...;leaf count). Reported twice from the same
#           perf.data: with perf's defaults (inlined frames resolved, as in
#           Hearth's output) and with --no-inline (cheaper, fewer frames).
# perf CPU = record + script + collapse; perf peak RSS = the largest of them.
set -euo pipefail

seconds="${1:-30}"
hz="${2:-99}"
perf_stack="${PERF_STACK:-16384}"
mode="${BENCH_MODE:-system}"
[[ $mode == system || $mode == command ]] || {
	echo "bench-vs-perf: BENCH_MODE must be system or command" >&2
	exit 2
}
workload_kind="${BENCH_WORKLOAD:-mixed}"
[[ $workload_kind == mixed || $workload_kind == split_c ]] || {
	echo "bench-vs-perf: BENCH_WORKLOAD must be mixed or split_c" >&2
	exit 2
}
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

log() { printf 'bench-vs-perf: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

[[ $(id -u) -eq 0 ]] || die "needs root (whole-machine sampling)"
command -v perf >/dev/null || die "perf not found (Debian: linux-perf)"
[[ -x /usr/bin/time ]] || die "/usr/bin/time not found (Debian: time)"
for w in split_c split_rust spawner shortlived; do
	[[ -x tests/workloads/build/$w ]] || die "tests/workloads/build/$w missing: run scripts/setup-tests.sh"
done

log "building hearth (release)"
cargo build --release -q -p hearth
target_dir="$(cargo metadata --format-version 1 --no-deps |
	sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
hearth="$target_dir/release/hearth"
build="$root/tests/workloads/build"
split_rust="$build/split_rust"
# Sets hearth_target and perf_target for a run whose files go to <dir>. In
# command mode the profiler's own rusage includes the workload (its child),
# so the workload is timed too (time.workload) and subtracted.
set_targets() { # set_targets <dir>
	if [[ $mode == system ]]; then
		hearth_target=(-d "$seconds")
		perf_target=(-a -- sleep "$seconds")
	else
		local script="$build/split_c $seconds >/dev/null"
		if [[ $workload_kind == mixed ]]; then
			script="$script & $split_rust $seconds >/dev/null &
				$build/spawner $seconds >/dev/null & wait"
		fi
		local workload=(/usr/bin/time -f "%U %S %M" -o "$1/time.workload" bash -c "$script")
		hearth_target=(-- "${workload[@]}")
		perf_target=(-- "${workload[@]}")
	fi
}

out="${BENCH_OUT:-$(mktemp -d /tmp/hearth-vs-perf.XXXXXX)}"
mkdir -p "$out"
log "outputs in $out"

# Collapses `perf script -F comm,tid,ip,sym` output (a header line
# "comm tid" per sample, then one line per frame, leaf first, then a blank
# line) into folded stacks, root first, prefixed with the thread's name.
# Samples of the idle task (tid 0) are counted but left out, as Hearth does.
collapse_awk='
function flush(   s, i) {
	if (!have) return
	have = 0
	if (tid == 0) { idle++; return }
	s = comm
	for (i = n; i >= 1; i--) s = s ";" f[i]
	count[s]++
	samples++
}
/^[^ \t]/ {
	flush()
	tid = $NF
	comm = $0
	sub(/[ \t]+[0-9]+[ \t]*$/, "", comm)
	gsub(/;/, ":", comm)
	n = 0
	have = 1
	next
}
/^[ \t]/ {
	line = $0
	sub(/^[ \t]+[0-9a-f]+[ \t]+/, "", line)
	gsub(/;/, ":", line)
	f[++n] = line
	next
}
{ flush() }
END {
	flush()
	for (s in count) print s, count[s]
	printf "collapse: samples=%d idle=%d\n", samples, idle > "/dev/stderr"
}'

# CPU seconds (user+sys) in a /usr/bin/time -o file written with
# -f "%U %S %M", minus those in a second such file if given
cpu_of() {
	awk 'FNR == NR {c += $1 + $2; next} {c -= $1 + $2} END {printf "%.2f", c}' "$1" "${2:-/dev/null}"
}
# the workload's time file of a run (command mode), or /dev/null
workload_of() { if [[ -f $1/time.workload ]]; then echo "$1/time.workload"; else echo /dev/null; fi; }
rss_of() { awk '{print $3}' "$1"; }
size_of() { stat -c %s "$1"; }
samples_of() { awk '{s += $NF} END {print s + 0}' "$1"; }
# share of samples whose stack contains leaf_seventy: overall, and among the
# samples of the two split processes (expected about 0.70 there)
share_of() {
	awk '{
		n = $NF; all += n
		split($0, fr, ";")
		p = fr[1]
		is_split = (p == "split_c" || p == "split_rust")
		hot = index($0, "leaf_seventy") > 0
		if (is_split) { sp += n; if (hot) sph += n }
		if (hot) h += n
	} END {
		printf "%.3f %.3f", (all ? h / all : 0), (sp ? sph / sp : 0)
	}' "$1"
}

run_hearth() { # run_hearth <tag>
	local d="$out/$1"
	mkdir -p "$d"
	set_targets "$d"
	log "$1: hearth record -F $hz -o out.folded -o out.pb.gz ${hearth_target[*]}"
	/usr/bin/time -f "%U %S %M" -o "$d/time.hearth" \
		"$hearth" record -F "$hz" -o "$d/out.folded" -o "$d/out.pb.gz" "${hearth_target[@]}" \
		2>"$d/hearth.log"
	grep '^hearth:' "$d/hearth.log" | head -1 >&2
	local cpu rss samples share
	cpu="$(cpu_of "$d/time.hearth" "$(workload_of "$d")")"
	rss="$(rss_of "$d/time.hearth")"
	samples="$(samples_of "$d/out.folded")"
	share="$(share_of "$d/out.folded")"
	printf '%s hearth %s %s %s %s %s %s\n' "$1" "$cpu" "$rss" \
		"$(size_of "$d/out.folded")" "$(size_of "$d/out.pb.gz")" "$samples" "$share" >>"$out/results.txt"
}

perf_post() { # perf_post <dir> <variant> [perf script options...]
	local d="$1" v="$2"
	shift 2
	# Both sides of the pipe are timed separately; they may overlap on the
	# two CPUs, which changes wall time only.
	/usr/bin/time -f "%U %S %M" -o "$d/time.script.$v" \
		perf script "$@" -i "$d/perf.data" -F comm,tid,ip,sym 2>"$d/script.$v.log" |
		/usr/bin/time -f "%U %S %M" -o "$d/time.collapse.$v" \
			awk "$collapse_awk" >"$d/out.$v.folded" 2>"$d/collapse.$v.log"
	local cpu rss rec
	rec="$(cpu_of "$d/time.record" "$(workload_of "$d")")"
	cpu="$(awk -v r="$rec" '{c += $1 + $2} END {printf "%.2f", r + c}' \
		"$d/time.script.$v" "$d/time.collapse.$v")"
	rss="$(awk '$3 > m {m = $3} END {print m}' "$d/time.record" "$d/time.script.$v" "$d/time.collapse.$v")"
	printf '%s perf-%s %s %s %s %s %s %s record=%s script=%s collapse=%s\n' "$(basename "$d")" "$v" \
		"$cpu" "$rss" "$(size_of "$d/perf.data")" "$(size_of "$d/out.$v.folded")" \
		"$(samples_of "$d/out.$v.folded")" "$(share_of "$d/out.$v.folded")" \
		"$rec" "$(cpu_of "$d/time.script.$v")" \
		"$(cpu_of "$d/time.collapse.$v")" >>"$out/results.txt"
}

run_perf() { # run_perf <tag>
	local d="$out/$1"
	mkdir -p "$d"
	set_targets "$d"
	log "$1: perf record --call-graph dwarf,$perf_stack -F $hz -m 1M ${perf_target[*]}"
	/usr/bin/time -f "%U %S %M" -o "$d/time.record" \
		perf record --call-graph "dwarf,$perf_stack" -F "$hz" -m 1M \
		-o "$d/perf.data" "${perf_target[@]}" 2>"$d/record.log"
	grep -i 'lost\|woken' "$d/record.log" >&2 || true
	if [[ ${PERF_NO_INLINE_ONLY:-0} != 1 ]]; then
		log "$1: perf script (defaults: inlined frames resolved) | collapse"
		perf_post "$d" default
	fi
	log "$1: perf script --no-inline | collapse"
	perf_post "$d" noinline --no-inline
}

pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT
if [[ $mode == system ]]; then
	log "starting the workload ($workload_kind)"
	long=$((seconds * 20 + 3600))
	"$build/split_c" "$long" >"$out/split_c.out" &
	pids+=($!)
	if [[ $workload_kind == mixed ]]; then
		"$split_rust" "$long" >"$out/split_rust.out" &
		pids+=($!)
		"$build/spawner" "$long" >"$out/spawner.out" &
		pids+=($!)
	fi
	sleep 2
fi

: >"$out/results.txt"
run_hearth A1
run_perf B1
run_perf B2
run_hearth A2
cleanup
trap - EXIT

{
	echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, kernel $(uname -r)," \
		"$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
	echo "# $seconds s at $hz Hz, mode $mode; workload $workload_kind;" \
		"perf: dwarf,$perf_stack"
	echo "# run profiler cpu_s(user+sys) peak_rss_KiB size1_B size2_B samples leaf70_share_all leaf70_share_in_split [parts]"
	echo "#   hearth: size1 = .folded, size2 = .pb.gz; perf: size1 = perf.data, size2 = .folded"
	cat "$out/results.txt"
	echo
	awk '
		{ cpu[$2] += $3; n[$2]++; if ($4 > rss[$2]) rss[$2] = $4; s[$2] += $7 }
		END {
			printf "%-15s %12s %14s %12s\n", "profiler", "mean_cpu_s", "max_rss_MiB", "mean_samples"
			for (p in cpu)
				printf "%-15s %12.2f %14.1f %12.0f\n", p, cpu[p] / n[p], rss[p] / 1024, s[p] / n[p]
			h = cpu["hearth"] / n["hearth"]
			for (p in cpu) if (p != "hearth")
				printf "ratio hearth/%s CPU: %.3f (target <= 0.333)\n", p, h / (cpu[p] / n[p])
		}' "$out/results.txt"
} | tee "$out/summary.txt"
log "summary: $out/summary.txt"
