#!/usr/bin/env bash
# Builds the C ground-truth workloads into tests/workloads/build/.
# Flags: -O2 and no frame pointers on purpose (the profiler must unwind with
# DWARF CFI); -g keeps symbols and line tables.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$(cd "$here/.." && pwd)/build"
CC="${CC:-gcc}"
CFLAGS=(-O2 -fomit-frame-pointer -g -Wall -Wextra)

mkdir -p "$out"
build() { # build <source> <binary>
	echo "  CC  $1 -> $out/$2"
	"$CC" "${CFLAGS[@]}" -o "$out/$2" "$here/$1"
}
build split.c split_c
build shortlived.c shortlived
build spawner.c spawner
build many.c many
build memfds.c memfds
build execstorm.c execstorm
echo "  CC  threads.c -> $out/threads"
"$CC" "${CFLAGS[@]}" -pthread -o "$out/threads" "$here/threads.c"
# A FUSE file system that stops answering (libfuse3-dev).
echo "  CC  hangfs.c -> $out/hangfs"
# shellcheck disable=SC2046 # pkg-config prints several flags
"$CC" "${CFLAGS[@]}" -o "$out/hangfs" "$here/hangfs.c" $(pkg-config --cflags --libs fuse3)
# The hostile-file workload and the library it cuts short under itself.
echo "  CC  cutlib.c -> $out/libcut.so"
"$CC" "${CFLAGS[@]}" -shared -fPIC -o "$out/libcut.so" "$here/cutlib.c"
echo "  CC  cutter.c -> $out/cutter"
"$CC" "${CFLAGS[@]}" -pthread -o "$out/cutter" "$here/cutter.c" -ldl

# The profiles are checked by exact function name, so fail loudly if gcc ever
# renamed or split a chain function (.isra/.constprop/.part/.cold copies).
check_syms() { # check_syms <binary> <function>...
	local bin="$1" syms f
	shift
	syms="$(nm "$out/$bin")"
	for f in "$@"; do
		if ! grep -qE "^[0-9a-f]+ T $f\$" <<<"$syms"; then
			echo "error: $bin has no global text symbol '$f'" >&2
			exit 1
		fi
		if grep -qE " $f\." <<<"$syms"; then
			echo "error: $bin has a renamed copy of '$f':" >&2
			grep -E " $f\." <<<"$syms" >&2
			exit 1
		fi
	done
}
check_syms split_c main run_rounds alpha_one alpha_two alpha_three leaf_seventy \
	beta_one beta_two beta_three leaf_thirty
check_syms shortlived main short_outer short_middle short_leaf
echo "C workloads built in $out"
