#!/usr/bin/env bash
# The agent on a busy Kubernetes node over a long run, and its CPU per sample
# under a storm of process starts.
#
# Usage: scripts/bench-node.sh [minutes [starts-seconds]]   (defaults: 30, 120)
#   minutes         length of the node phase (0 skips it)
#   starts-seconds  length of the process-start phase (0 skips it)
#
# Needs root, a cgroup2 mount (/sys/fs/cgroup/unified or /sys/fs/cgroup),
# scripts/setup-tests.sh run once (the workloads in tests/workloads/build;
# `bigbin` is built here, once), and builds hearth and examples/node_apiserver.rs in
# release (CARGO_TARGET_DIR is honoured). Raw data in $HEARTH_BENCH_DIR
# (default /tmp/hearth-bench-node, emptied first; the node phase keeps 200
# copies of bigbin there, about 2.5 GB); markdown on stdout.
#
# 1. Process starts (<starts-seconds>): split_c and split_rust (one CPU-bound
#    thread each: both CPUs busy) and spawner (150 short-lived processes a
#    second), one `hearth agent` with its page on (defaults: 19 Hz, 15 m of
#    history). Its CPU per sample and lost records, from the agent being
#    healthy and from 10 s later to the end.
# 2. The node (<minutes>):
#    - examples/node_apiserver.rs: the fake API server of the tests serving
#      110 pods on node1 (cloned from the fixtures with their own names, uids
#      and container ids), and the cgroup (kubelet, systemd driver, cgroup v2)
#      of each of their running containers;
#    - `many 500`: 500 long-running processes (svc-NNN, each ~0.15 ms of
#      CPU every 100 ms in varied call chains), moved into those containers'
#      cgroups round-robin, so every pod runs some;
#    - 200 copies of `bigbin` (12 MB, 6,500 functions, DWARF), each with its
#      own build id: every 4 s the next copy starts in a container's cgroup
#      and runs 10 to 20 s (about 4 alive at once, ~1 ms of CPU every 20 ms
#      each), cycling through the 200;
#    - spawner: 150 short-lived processes a second (on the host), 4 ms of
#      CPU each;
#    - two agents side by side (19 Hz, --kubeconfig/--node-name node1): one
#      with its page on (--ui-history 15m), one with --ui-listen off.
#    By construction the load asks for about 1.6 CPUs (0.75 + 0.6 + 0.2,
#    plus forks and execs): the machine is busy, but its run queue does not
#    keep growing. With more (another job on the machine), the 500 processes
#    stay runnable and the load average climbs into the hundreds (seen in a
#    trial that shared the machine with another 500-process benchmark). The
#    report's "machine busy" column says what the machine did.
# Every 10 s, per agent: utime+stime (/proc/<pid>/stat), VmRSS, RssAnon,
# RssFile (/proc/<pid>/status), the load average, the machine's CPU time
# (/proc/stat) and available memory, and the whole of /metrics;
# smaps_rollup at the start, after 60 s and at the end, and the whole smaps
# at the end; the page's /api/overview at the end. A phase ends early if
# less than 1 GiB of memory is left. The cgroups are removed on exit.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
log() { printf 'bench-node: %s\n' "$*" >&2; }

minutes="${1:-30}"
starts_s="${2:-120}"
[[ $minutes =~ ^[0-9]+$ && $starts_s =~ ^[0-9]+$ ]] ||
	{ log "usage: scripts/bench-node.sh [minutes [starts-seconds]]"; exit 2; }
node_s=$((minutes * 60))
out="${HEARTH_BENCH_DIR:-/tmp/hearth-bench-node}"
wl=tests/workloads/build
procs=500
copies=200
churn_every=4
# A phase ends early when the machine has less memory available than this
# (kB): two agents that keep growing must not take the machine down.
avail_floor_kb=$((1024 * 1024))
avail_kb_now=0
node=node1

[[ $(id -u) -eq 0 ]] || { log "needs root (whole-machine sampling, cgroups)"; exit 1; }
# The large binary no test needs (rebuilt only when its sources changed).
bash tests/workloads/c/build.sh bigbin >&2
for bin in many spawner shortlived split_c split_rust bigbin; do
	[[ -x $wl/$bin ]] || { log "error: $wl/$bin missing: run scripts/setup-tests.sh"; exit 1; }
done
cgroot="$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)"
[[ -n $cgroot ]] || { log "error: no cgroup2 mount"; exit 1; }

log "building hearth (release) and examples/node_apiserver.rs"
t_build="$(date +%s)"
# Two commands: built together, the example's dev-dependency features
# would be unified into the measured binary.
cargo build --release -q -p hearth --bin hearth
cargo build --release -q -p hearth --example node_apiserver
target_dir="$(cargo metadata --format-version 1 --no-deps |
	python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
hearth="$target_dir/release/hearth"
apiserver="$target_dir/release/examples/node_apiserver"
build_s=$(($(date +%s) - t_build))

rm -rf "$out"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
tck="$(getconf CLK_TCK)"

# Everything this script starts, stopped on exit.
pids=()
# Cgroup directories this script created, in creation order.
created=()
apiserver_open=0
cleanup() {
	set +e
	local p d i
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null
	done
	((apiserver_open)) && exec 8>&-
	# What still runs in our containers' cgroups (bigbin copies, many's
	# children), then the directories, deepest first. Only the leaves are
	# killed: a parent may be shared with someone else's cgroups.
	for d in "${created[@]}"; do
		[[ $d == *.scope ]] && echo 1 >"$d/cgroup.kill" 2>/dev/null
	done
	for ((i = ${#created[@]} - 1; i >= 0; i--)); do
		d="${created[i]}"
		for _ in $(seq 50); do
			rmdir "$d" 2>/dev/null || [[ ! -d $d ]] && break
			sleep 0.1
		done
		[[ -d $d ]] && log "warning: could not remove $d"
	done
	wait 2>/dev/null
}
trap cleanup EXIT

# Five loopback ports free a moment ago (one python start: slow on a loaded
# machine), taken by start_agent and the page's listener in turn.
mapfile -t ports < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
for s in socks:
    print(s.getsockname()[1])')
((${#ports[@]} == 5)) || { log "error: no free ports"; exit 1; }
free_port() { # free_port VAR
	printf -v "$1" '%s' "${ports[0]}"
	ports=("${ports[@]:1}")
}

# start_agent NAME ARGS...: sets agent_pid[NAME], metrics_port[NAME].
declare -A agent_pid metrics_port
start_agent() {
	local name="$1" port
	shift
	free_port port
	"$hearth" agent --metrics-listen "127.0.0.1:$port" "$@" >"$out/$name.agent.log" 2>&1 &
	agent_pid[$name]=$!
	metrics_port[$name]=$port
	pids+=($!)
}
wait_healthy() {
	local name="$1"
	for _ in $(seq 300); do
		curl -sf "http://127.0.0.1:${metrics_port[$name]}/healthz" >/dev/null 2>&1 && return 0
		kill -0 "${agent_pid[$name]}" 2>/dev/null || break
		sleep 0.1
	done
	log "error: agent $name did not become healthy"
	cat "$out/$name.agent.log" >&2
	exit 1
}
stop_agent() {
	local name="$1"
	kill -TERM "${agent_pid[$name]}" 2>/dev/null || true
	wait "${agent_pid[$name]}" 2>/dev/null || true
}

# scrape NAME T: one row of NAME.tsv (the agent's CPU time and memory; the
# machine's load average, CPU time busy and in all, available memory) and
# the agent's whole /metrics, appended to NAME.metrics after a line "@ T".
scrape() {
	local name="$1" t="$2" pid="${agent_pid[$1]}" st rss="" anon="" file="" k v load cpu avail=""
	[[ -r /proc/$pid/stat ]] || { log "warning: agent $name (pid $pid) is gone at t=$t"; return 0; }
	read -r -a st <"/proc/$pid/stat" || return 0
	# One read of status, so that the three figures are of one moment.
	{
		while read -r k v _; do
			case "$k" in VmRSS:) rss=$v ;; RssAnon:) anon=$v ;; RssFile:) file=$v ;; esac
		done <"/proc/$pid/status"
	} 2>/dev/null || return 0
	[[ -n $rss ]] || return 0
	read -r load _ </proc/loadavg
	# user nice system idle iowait irq softirq steal, in ticks.
	read -r _ cpu </proc/stat
	read -r -a cpu <<<"$cpu"
	while read -r k v _; do
		[[ $k == MemAvailable: ]] && { avail=$v; break; }
	done </proc/meminfo
	avail_kb_now="${avail:-0}"
	# Fields 14 and 15: utime, stime (comm, "hearth", has no spaces).
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" $((st[13] + st[14])) "$rss" "$anon" "$file" \
		"$load" $((cpu[0] + cpu[1] + cpu[2] + cpu[5] + cpu[6] + cpu[7])) \
		$((cpu[0] + cpu[1] + cpu[2] + cpu[3] + cpu[4] + cpu[5] + cpu[6] + cpu[7])) "$avail" >>"$out/$name.tsv"
	{
		echo "@ $t"
		curl -sf -m 5 "http://127.0.0.1:${metrics_port[$name]}/metrics" | grep -v '^#' || true
	} >>"$out/$name.metrics"
}
smaps() { # smaps NAME LABEL
	{
		echo "@ $2"
		cat "/proc/${agent_pid[$1]}/smaps_rollup" 2>/dev/null || true
	} >>"$out/$1.smaps"
	# At the end, every mapping too: which files the resident size is in.
	[[ $2 == end ]] && cp "/proc/${agent_pid[$1]}/smaps" "$out/$1.smaps-end" 2>/dev/null
	return 0
}
new_tsv() { printf 't\tticks\trss_kb\tanon_kb\tfile_kb\tload1\tcpu_busy\tcpu_all\tavail_kb\n' >"$out/$1.tsv"; }

# Microseconds since the epoch, and sleeping until such a time, without a
# fork (a loaded machine makes every fork slow).
now_us() { printf -v "$1" '%s' "${EPOCHREALTIME//[!0-9]/}"; }
sleep_until_us() {
	local now d
	now_us now
	d=$(($1 - now))
	((d > 0)) || return 0
	printf -v d '%d.%06d' $((d / 1000000)) $((d % 1000000))
	sleep "$d"
}

# every SECONDS NAME...: scrapes the agents now and every 10 s for SECONDS
# (an absolute schedule), smaps_rollup at 0, 60 s and the end.
every() {
	local secs="$1" start next now t a
	shift
	now_us start
	next=0
	while :; do
		now_us now
		t=$(((now - start) / 100000))
		t="$((t / 10)).$((t % 10))"
		for a in "$@"; do
			scrape "$a" "$t"
			case "$next" in 0) smaps "$a" start ;; 60) smaps "$a" 60s ;; esac
		done
		((next >= secs)) && break
		if ((avail_kb_now > 0 && avail_kb_now < avail_floor_kb)); then
			log "warning: less than $((avail_floor_kb / 1024)) MiB of memory available at t=$t: phase ended early"
			break
		fi
		next=$((next + 10))
		((next > secs)) && next=$secs
		sleep_until_us $((start + next * 1000000))
	done
	for a in "$@"; do smaps "$a" end; done
}

cpu_model="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
echo "# bench-node: $(date -u '+%Y-%m-%d %H:%M UTC'), kernel $(uname -r), $cpu_model, nproc $(nproc)"
echo "# hearth $("$hearth" --version 2>/dev/null | awk '{print $2}'), commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo '+changes'), $hearth"
echo "# build of hearth and node_apiserver: ${build_s} s"
echo

# ---------------------------------------------------------------------------
# 1. Process starts: both CPUs busy, 150 starts a second, the page on.
# ---------------------------------------------------------------------------
if ((starts_s > 0)); then
	log "1: process starts: split_c + split_rust + spawner, agent with its page on, ${starts_s} s"
	"$wl/split_c" $((starts_s + 30)) >/dev/null &
	load=($!)
	"$wl/split_rust" $((starts_s + 30)) >/dev/null &
	load+=($!)
	"$wl/spawner" $((starts_s + 30)) "$root/$wl/shortlived" >/dev/null &
	load+=($!)
	pids+=("${load[@]}")
	sleep 1
	new_tsv starts
	free_port starts_ui
	start_agent starts --ui-listen "127.0.0.1:$starts_ui"
	wait_healthy starts
	every "$starts_s" starts
	stop_agent starts
	for p in "${load[@]}"; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	python3 scripts/bench-node-report.py starts "$out" "$tck" "$starts_s"
fi

# ---------------------------------------------------------------------------
# 2. The node.
# ---------------------------------------------------------------------------
if ((node_s == 0)); then
	log "raw data in $out"
	exit 0
fi
t_setup="$(date +%s)"
log "2: node: $copies copies of bigbin with their own build ids"
mkdir -p "$out/bin"
python3 - "$wl/bigbin" "$out/bin" "$copies" <<'EOF'
import hashlib, os, struct, sys

src, dest, copies = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = bytearray(open(src, "rb").read())
if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
    sys.exit("bigbin: not a 64-bit little-endian ELF file")
shoff, = struct.unpack_from("<Q", data, 0x28)
shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)


def section(i):
    name, _type, _flags, _addr, off, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
    return name, off, size


_, stroff, _ = section(shstrndx)
desc = None
for i in range(shnum):
    name, off, size = section(i)
    if data[stroff + name:].split(b"\0", 1)[0] == b".note.gnu.build-id":
        namesz, descsz, ntype = struct.unpack_from("<III", data, off)
        if ntype != 3 or data[off + 12:off + 12 + namesz] != b"GNU\0":
            sys.exit("bigbin: unexpected build-id note")
        desc = (off + 12 + (namesz + 3) // 4 * 4, descsz)
if desc is None:
    sys.exit("bigbin: no .note.gnu.build-id section")
at, size = desc
for i in range(copies):
    data[at:at + size] = hashlib.sha256(b"bigbin-copy-%d" % i).digest()[:size]
    path = os.path.join(dest, "bigbin-%03d" % i)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o755)
EOF
readelf -n "$out/bin/bigbin-000" | grep -q 'Build ID' || { log "error: bigbin-000 has no build id"; exit 1; }
[[ "$(readelf -n "$out/bin/bigbin-000" | grep 'Build ID')" != "$(readelf -n "$out/bin/bigbin-001" | grep 'Build ID')" ]] ||
	{ log "error: the copies share a build id"; exit 1; }
bigbin_mb="$(($(stat -c %s "$wl/bigbin") / 1000000))"

log "2: stand-in API server with the pods of $node"
exec 8> >(exec "$apiserver" "$out/kubeconfig" "$out/containers.tsv" 2>"$out/apiserver.log")
apiserver_open=1
pids+=($!)
for _ in $(seq 300); do
	[[ -f $out/containers.tsv ]] && break
	sleep 0.1
done
[[ -f $out/containers.tsv ]] || { log "error: node_apiserver did not start"; cat "$out/apiserver.log" >&2; exit 1; }
mapfile -t containers < <(cut -f1 "$out/containers.tsv")
pods_served="$(cut -f2 "$out/containers.tsv" | sort -u | wc -l)"

log "2: ${#containers[@]} container cgroups of $pods_served pods under $cgroot"
for c in "${containers[@]}"; do
	d="$cgroot"
	IFS=/ read -r -a parts <<<"$c"
	for part in "${parts[@]}"; do
		d="$d/$part"
		if [[ ! -d $d ]]; then
			mkdir "$d"
			created+=("$d")
		fi
	done
done

log "2: $procs long-running processes (many), moved into the containers round-robin"
"$wl/many" "$procs" $((node_s + 300)) 150 100 &
many_pid=$!
pids+=("$many_pid")
children=()
for _ in $(seq 300); do
	mapfile -t children < <(pgrep -P "$many_pid")
	((${#children[@]} >= procs)) && break
	sleep 0.1
done
((${#children[@]} >= procs)) || { log "error: many started ${#children[@]} of $procs processes"; exit 1; }
i=0
for p in "${children[@]}"; do
	c="${containers[i % ${#containers[@]}]}"
	echo "$p" >"$cgroot/$c/cgroup.procs"
	printf '%s\t%s\n' "$p" "$c" >>"$out/placement.tsv"
	i=$((i + 1))
done

log "2: spawner (150 starts/s) and the churn of big binaries (one every ${churn_every} s)"
"$wl/spawner" $((node_s + 120)) "$root/$wl/shortlived" >/dev/null &
pids+=($!)
# The next copy every $churn_every s (an absolute schedule), in the next
# container (7 apart, so that consecutive ones land in different pods), for
# 10 to 20 s, ~1 ms of CPU in every 20 ms (with ~4 alive, a fifth of a CPU).
churn() {
	local i=0 t0 now copy c life
	now_us t0
	printf 't\tcopy\tlife_s\tcgroup\n' >"$out/churn.tsv"
	while :; do
		printf -v copy 'bigbin-%03d' $((i % copies))
		c="${containers[(i * 7) % ${#containers[@]}]}"
		life=$((10 + (i * 7) % 11))
		(
			echo "$BASHPID" >"$cgroot/$c/cgroup.procs" &&
				exec "$out/bin/$copy" "$life" 1000 20 >/dev/null
		) &
		now_us now
		printf '%s\t%s\t%s\t%s\n' $(((now - t0) / 1000000)) "$copy" "$life" "$c" >>"$out/churn.tsv"
		i=$((i + 1))
		sleep_until_us $((t0 + i * churn_every * 1000000))
	done
}
churn &
pids+=($!)
sleep 5

log "2: two agents: page on (--ui-history 15m) and --ui-listen off"
new_tsv page
new_tsv nopage
k8s=(--kubeconfig "$out/kubeconfig" --node-name "$node")
free_port ui_port
start_agent page "${k8s[@]}" --ui-listen "127.0.0.1:$ui_port" --ui-history 15m
start_agent nopage "${k8s[@]}" --ui-listen off
wait_healthy page
wait_healthy nopage
setup_s=$(($(date +%s) - t_setup))
log "2: set-up took ${setup_s} s; sampling every 10 s for ${node_s} s"
every "$node_s" page nopage
curl -sf -m 60 "http://127.0.0.1:$ui_port/api/overview" >"$out/overview.json" ||
	log "warning: /api/overview failed"
stop_agent page
stop_agent nopage
churn_starts=$(($(wc -l <"$out/churn.tsv") - 1))

python3 scripts/bench-node-report.py node "$out" "$tck" "$node_s" "$procs" "$pods_served" \
	"${#containers[@]}" "$churn_starts" "$copies" "$bigbin_mb" "$setup_s" "$churn_every"
log "raw data in $out"
