#!/usr/bin/env bash
# Coverage-guided fuzzing of Hearth's parsers of outside input.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]
#
# Builds the targets in fuzz/ with cargo-fuzz (libFuzzer, coverage
# instrumentation) on the stable toolchain, then runs each target for the
# given number of seconds (default 30), starting from its committed seeds
# (fuzz/seeds/<target>) and the growing corpus (fuzz/corpus/<target>,
# not committed). Prints one summary line per target and exits non-zero if
# any target crashed; crash inputs and logs are in fuzz/artifacts/.
#
# Environment:
#   FUZZ_SANITIZER   none (default) or address. AddressSanitizer needs
#                    unstable rustc flags, enabled here on the stable
#                    toolchain with RUSTC_BOOTSTRAP=1.
#   FUZZ_TARGET_DIR  cargo target directory (default fuzz/target).
#   FUZZ_JOBS        parallel fuzzing processes per target (default 1).
#
# Installs cargo-fuzz from crates.io (and g++, which libFuzzer's C++ sources
# need, through apt-get when run as root) if they are missing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

log() { printf 'fuzz: %s\n' "$*" >&2; }

secs="${1:-30}"
if [[ $# -gt 0 ]]; then shift; fi
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [[ "$secs" -lt 1 ]]; then
	echo "usage: scripts/fuzz.sh [seconds-per-target] [target...]" >&2
	exit 2
fi

targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
	for f in fuzz/fuzz_targets/*.rs; do
		targets+=("$(basename "$f" .rs)")
	done
fi

sanitizer="${FUZZ_SANITIZER:-none}"
target_dir="${FUZZ_TARGET_DIR:-$root/fuzz/target}"
jobs="${FUZZ_JOBS:-1}"

if ! command -v c++ >/dev/null 2>&1; then
	if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
		log "installing g++ (libFuzzer is C++)"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends g++ >/dev/null
	else
		log "a C++ compiler (c++) is needed to build libFuzzer"
		exit 1
	fi
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
	log "installing cargo-fuzz from crates.io"
	cargo install cargo-fuzz --locked
fi

fuzz_args=(-s "$sanitizer" --target-dir "$target_dir")
if [[ "$sanitizer" != none ]]; then
	# The sanitizer flags are unstable; the stable toolchain accepts them
	# with RUSTC_BOOTSTRAP and ships the sanitizer runtimes.
	export RUSTC_BOOTSTRAP=1
fi

log "building ${#targets[@]} targets (sanitizer: $sanitizer)"
for t in "${targets[@]}"; do
	if [[ ! -f "fuzz/fuzz_targets/$t.rs" ]]; then
		log "no such target: $t"
		exit 2
	fi
	cargo fuzz build "${fuzz_args[@]}" "$t"
done

mkdir -p fuzz/artifacts
failed=()
summary=()
for t in "${targets[@]}"; do
	corpus="fuzz/corpus/$t"
	seeds="fuzz/seeds/$t"
	mkdir -p "$corpus" "fuzz/artifacts/$t"
	corpora=("$corpus")
	[[ -d "$seeds" ]] && corpora+=("$seeds")
	logfile="fuzz/artifacts/$t.log"
	log "running $t for ${secs}s (log: $logfile)"
	libfuzzer_args=(
		-max_total_time="$secs"
		-print_final_stats=1
		-timeout=10
		-rss_limit_mb=4096
	)
	if [[ "$jobs" -gt 1 ]]; then
		libfuzzer_args+=(-fork="$jobs")
	fi
	rc=0
	cargo fuzz run "${fuzz_args[@]}" "$t" "${corpora[@]}" -- "${libfuzzer_args[@]}" \
		</dev/null >"$logfile" 2>&1 || rc=$?
	runs="$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$logfile" | grep -Eo '[0-9]+$' | tail -1 || true)"
	if [[ -z "$runs" ]]; then
		runs="$(grep -Eo '^#[0-9]+' "$logfile" | tail -1 | tr -d '#' || true)"
	fi
	units="$(find "$corpus" -type f | wc -l)"
	if [[ $rc -eq 0 ]]; then
		summary+=("$(printf '%-20s %12s execs %7s corpus  ok' "$t" "${runs:-?}" "$units")")
	else
		artifact="$(grep -Eo 'Test unit written to [^ ]+' "$logfile" | tail -1 | sed 's/^Test unit written to //' || true)"
		summary+=("$(printf '%-20s %12s execs %7s corpus  CRASHED (exit %d) %s' \
			"$t" "${runs:-?}" "$units" "$rc" "${artifact:-see $logfile}")")
		failed+=("$t")
		grep -E -m1 -A3 "panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer" "$logfile" >&2 || true
	fi
	printf '%s\n' "${summary[-1]}"
done

echo
echo "fuzz summary (${secs}s per target):"
printf '  %s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
	echo "crashed: ${failed[*]} (reproduce: cargo fuzz run -s $sanitizer <target> <crash file>)"
	exit 1
fi
