#!/usr/bin/env bash
# The agent's memory and hit latency as the cache grows: 200 real tiny
# `gcc -O2 -c` compiles are cached (misses), then the store is grown with
# synthetic, realistically shaped entries (examples/fill_cache.rs: ~100 deps
# per dep set, small results and blobs) to each size in turn; at each size a
# fresh agent is started and the 200 compiles run again as hits. Reports the
# agent's start time, VmRSS after start and after the hits, VmHWM (peak), and
# ms per hit.
#
#   scripts/bench/agent-memory.sh [SIZE…]     default: 1000 10000 100000
# Needs: cargo build --release --workspace --examples.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
[ $# -gt 0 ] && SIZES=("$@") || SIZES=(1000 10000 100000)
CACHEFS=$ROOT/target/release/cachefs
FILL=$ROOT/target/release/examples/fill_cache
[ -x "$CACHEFS" ] && [ -x "$FILL" ] || { echo "build first: cargo build --release --workspace --examples" >&2; exit 1; }
W=$ROOT/target/bench/agent-memory
SRC=$W/src
export CACHEFS_DIR=$W/cache
unset RUST_LOG CACHEFS_LOG
"$CACHEFS" stop >/dev/null 2>&1 || true
rm -rf "$W"
mkdir -p "$SRC"
N=200
for i in $(seq 1 $N); do
    printf '#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\nint f%d(const char *s) { return (int)strlen(s) + %d; }\n' "$i" "$i" >"$SRC/f$i.c"
done
compile_all() {  # prints microseconds for N sequential compiles
    local t0 t1
    cd "$SRC"
    rm -f ./*.o
    t0=$(date +%s%N)
    for i in $(seq 1 $N); do "$CACHEFS" gcc -O2 -c "f$i.c" -o "f$i.o"; done
    t1=$(date +%s%N)
    cd "$ROOT"
    echo $(((t1 - t0) / 1000))
}
kb() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$2/status"; }

"$CACHEFS" start >/dev/null
compile_all >/dev/null
"$CACHEFS" stop >/dev/null
echo "| entries | agent start ms | RSS after start MB | RSS after $N hits MB | peak RSS MB | index MB | ms per hit |"
echo "|---|---|---|---|---|---|---|"
have=0
for size in "${SIZES[@]}"; do
    [ "$size" -gt "$have" ] && "$FILL" "$CACHEFS_DIR" "$have" "$size" 2>&2
    have=$size
    sync
    t0=$(date +%s%N)
    "$CACHEFS" start >/dev/null
    t1=$(date +%s%N)
    pid=$(cat "$CACHEFS_DIR/agent.pid")
    rss0=$(kb VmRSS "$pid")
    compile_all >/dev/null  # first pass: the agent's caches warm up
    us=$(compile_all)
    rss1=$(kb VmRSS "$pid")
    hwm=$(kb VmHWM "$pid")
    hits=$("$CACHEFS" stats --json | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["hits"], s["misses"], s["entries"])')
    idx=$(du -m "$CACHEFS_DIR/index.redb" | cut -f1)
    "$CACHEFS" stop >/dev/null
    read -r h m e <<<"$hits"
    [ "$m" = 0 ] || echo "warning: $m misses at $size entries" >&2
    printf '| %s | %d | %.1f | %.1f | %.1f | %s | %.3f |\n' "$e" $(((t1 - t0) / 1000000)) \
        "$(echo "$rss0 / 1024" | bc -l)" "$(echo "$rss1 / 1024" | bc -l)" "$(echo "$hwm / 1024" | bc -l)" \
        "$idx" "$(echo "$us / $N / 1000" | bc -l)"
done
