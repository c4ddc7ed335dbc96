#!/usr/bin/env bash
# The agent's memory and hit latency as the cache grows: 200 real tiny
# `gcc -O2 -c` compiles are cached (misses), then the store is grown with
# synthetic, realistically shaped entries (examples/fill_cache.rs: ~100 deps
# per dep set, small results and blobs) to each size in turn; at each size a
# fresh agent is started and the 200 compiles run again as hits. Reports the
# agent's start time, VmRSS after start and after the hits, VmHWM (peak), and
# ms per hit.
#
#   scripts/bench/agent-memory.sh [-k] [SIZE…]     default: 1000 10000 100000
#   -k: keep the cache of the last run and only grow it (filling 100k takes
#   minutes); sizes below what it holds are measured at what it holds.
# Needs: scripts/build-release.sh --examples.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
KEEP=0
if [ "${1:-}" = -k ]; then KEEP=1; shift; fi
[ $# -gt 0 ] && SIZES=("$@") || SIZES=(1000 10000 100000)
CACHEFS=$ROOT/target/release/cachefs
FILL=$ROOT/target/release/examples/fill_cache
[ -x "$CACHEFS" ] && [ -x "$FILL" ] || { echo "build first: scripts/build-release.sh --examples" >&2; exit 1; }
W=${AGENT_MEMORY_DIR:-$ROOT/target/bench/agent-memory}
SRC=$W/src
export CACHEFS_DIR=$W/cache
unset RUST_LOG CACHEFS_LOG
"$CACHEFS" stop >/dev/null 2>&1 || true
[ "$KEEP" = 1 ] && [ -f "$W/filled" ] || rm -rf "$W"
mkdir -p "$SRC"
N=200
for i in $(seq 1 $N); do
    printf '#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\nint f%d(const char *s) { return (int)strlen(s) + %d; }\n' "$i" "$i" >"$SRC/f$i.c"
done
compile_all() {  # compile_all [PROGRAM]: microseconds for N sequential compiles
    local t0 t1 cc=${1:-$CACHEFS}
    cd "$SRC"
    rm -f ./*.o
    t0=$(date +%s%N)
    for i in $(seq 1 $N); do "$cc" gcc -O2 -c "f$i.c" -o "f$i.o"; done
    t1=$(date +%s%N)
    cd "$ROOT"
    echo $(((t1 - t0) / 1000))
}
kb() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$2/status"; }

if [ ! -f "$W/filled" ]; then
    "$CACHEFS" start >/dev/null
    compile_all >/dev/null
    "$CACHEFS" stop >/dev/null
    echo 0 >"$W/filled"
fi
echo "| entries | agent start ms | RSS after start MB | RSS after $N hits MB | peak RSS MB | index MB | ms per hit | ms over bare |"
echo "|---|---|---|---|---|---|---|---|"
have=$(cat "$W/filled")
for size in "${SIZES[@]}"; do
    if [ "$size" -gt "$have" ]; then
        "$FILL" "$CACHEFS_DIR" "$have" "$size"
        have=$size
        echo "$have" >"$W/filled"
    fi
    sync
    t0=$(date +%s%N)
    "$CACHEFS" start >/dev/null
    t1=$(date +%s%N)
    pid=$(cat "$CACHEFS_DIR/agent.pid")
    rss0=$(kb VmRSS "$pid")
    compile_all >/dev/null  # first pass: the agent's caches warm up
    "$CACHEFS" stats --zero >/dev/null
    us=$(compile_all)
    bare=$(compile_all /bin/true)
    rss1=$(kb VmRSS "$pid")
    hwm=$(kb VmHWM "$pid")
    hits=$("$CACHEFS" stats --json | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["hits"], s["misses"], s["entries"])')
    idx=$(du -m "$CACHEFS_DIR/index.redb" | cut -f1)
    "$CACHEFS" stop >/dev/null
    read -r h m e <<<"$hits"
    [ "$h $m" = "$N 0" ] || echo "warning: $h hits, $m misses at $size entries" >&2
    printf '| %s | %d | %.1f | %.1f | %.1f | %s | %.3f | %.3f |\n' "$e" $(((t1 - t0) / 1000000)) \
        "$(echo "$rss0 / 1024" | bc -l)" "$(echo "$rss1 / 1024" | bc -l)" "$(echo "$hwm / 1024" | bc -l)" \
        "$idx" "$(echo "$us / $N / 1000" | bc -l)" "$(echo "($us - $bare) / $N / 1000" | bc -l)"
done
