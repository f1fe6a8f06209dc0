#!/usr/bin/env bash
# Prepares a fresh Debian 12 machine for Hearth's tests and benchmarks:
#   - installs the Debian packages the tests use (only the missing ones),
#   - builds the ground-truth workloads (C and Rust).
# Idempotent: a second run installs nothing and only rebuilds what changed.
# Downloads nothing except through apt-get and cargo.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

log() { printf 'setup-tests: %s\n' "$*"; }

# package -> why it is needed
declare -A why=(
	[golang-go]="go tool pprof, to read Hearth's pprof output"
	[linux-perf]="perf, to compare against in benchmarks"
	[gcc]="builds the C workloads"
	# gcc only recommends libc6-dev, and --no-install-recommends skips it.
	[libc6-dev]="C headers and startup files for the C workloads"
	[binutils]="nm/objdump, to check the workloads' symbols"
	[make]="build tooling"
	[python3-venv]="python3 -m venv, for the OTLP test receiver's .venv-tests"
	[chromium]="headless browser for the profile page's end-to-end test"
	[chromium-driver]="chromedriver, the WebDriver server the page test drives Chromium with"
	# Without recommends, Chromium comes with no font: text would not render.
	[fonts-dejavu-core]="a font for the page test's screenshots"
	[libfuse3-dev]="builds the FUSE file system that stops answering, for the hostile-process tests"
	[fuse3]="FUSE mounts for the hostile-process tests"
	[pkg-config]="finds libfuse3's build flags"
)

missing=()
for pkg in golang-go linux-perf gcc libc6-dev binutils make python3-venv chromium chromium-driver fonts-dejavu-core \
	libfuse3-dev fuse3 pkg-config; do
	if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
		log "ok: $pkg already installed"
	else
		log "missing: $pkg (${why[$pkg]})"
		missing+=("$pkg")
	fi
done

if ((${#missing[@]})); then
	if [[ $(id -u) -ne 0 ]]; then
		log "error: need root to install: ${missing[*]}" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	log "apt-get update"
	apt-get update -q
	log "apt-get install ${missing[*]}"
	apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

log "$(go version)"
log "perf: $(perf --version)"
# Fails here rather than in a test if pprof is not usable.
go tool pprof -h >/dev/null 2>&1 || { log "error: 'go tool pprof -h' failed" >&2; exit 1; }
log "ok: go tool pprof runs"

if ! command -v cargo >/dev/null; then
	log "error: cargo not found (Hearth needs a rustup toolchain, rust-version in Cargo.toml)" >&2
	exit 1
fi

log "building C workloads"
bash tests/workloads/c/build.sh

log "building Rust workload (cargo build --release -p hearth-workload-split)"
cargo build --release -p hearth-workload-split

target_dir="$(cargo metadata --format-version 1 --no-deps |
	sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
# The tests find every workload in one place.
install -m 755 "$target_dir/release/split_rust" tests/workloads/build/split_rust
log "workloads:"
for bin in tests/workloads/build/split_c tests/workloads/build/spawner \
	tests/workloads/build/shortlived tests/workloads/build/split_rust tests/workloads/build/many \
	tests/workloads/build/cutter tests/workloads/build/libcut.so tests/workloads/build/memfds \
	tests/workloads/build/hangfs tests/workloads/build/execstorm tests/workloads/build/threads; do
	[[ -x $bin ]] || { log "error: $bin was not built" >&2; exit 1; }
	log "  $bin"
done
log "python venv for the OTLP test receiver: .venv-tests (tests/otlp/requirements.txt)"
if [[ ! -x .venv-tests/bin/python ]]; then
	rm -rf .venv-tests
	python3 -m venv .venv-tests
fi
# pip runs only when the pinned requirements changed since the last install.
want="$(sha256sum tests/otlp/requirements.txt | cut -d' ' -f1)"
if [[ "$(cat .venv-tests/.requirements.sha256 2>/dev/null)" != "$want" ]]; then
	.venv-tests/bin/python -m pip install -q --disable-pip-version-check -r tests/otlp/requirements.txt
	echo "$want" >.venv-tests/.requirements.sha256
fi
.venv-tests/bin/python -c 'import grpc, grpc_status, opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2_grpc' ||
	{ log "error: .venv-tests lacks the receiver's packages" >&2; exit 1; }
log "ok: .venv-tests ($(.venv-tests/bin/python --version))"
log "kernel.perf_event_paranoid=$(cat /proc/sys/kernel/perf_event_paranoid) (whole-machine sampling without root/CAP_PERFMON needs <= 0)"
log "done"
