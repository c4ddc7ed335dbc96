#!/usr/bin/env bash
# Shared-cache timings on the example C project (22 compiles, make -j2): a build by a
# second agent served from memcached (remote hits), the same agent again (local hits), a
# cold build with no remote, a cold build against a blackhole server (accepts, never
# answers), and a second agent served from a REAPI cache (buildbox-casd, from
# scripts/setup-reapi.sh). Servers run on 127.0.0.1 only. ROUNDS rounds, medians printed.
#   scripts/bench/remote.sh [ROUNDS]     (default 5; uses target/release/cachefs if built)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
ROUNDS=${1:-5}
CACHEFS=$ROOT/target/release/cachefs
[ -x "$CACHEFS" ] || CACHEFS=$ROOT/target/debug/cachefs
[ -x "$CACHEFS" ] || { cargo build --workspace; CACHEFS=$ROOT/target/debug/cachefs; }
T=$(mktemp -d /tmp/cachefs-remote-bench.XXXXXX)
pids=()
cleanup() {
    for d in "$T"/c*; do [ -d "$d" ] && CACHEFS_DIR=$d "$CACHEFS" stop >/dev/null 2>&1 || true; done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$T"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MC=$(port)
memcached -l 127.0.0.1 -p "$MC" -U 0 -m 256 $([ "$(id -u)" = 0 ] && echo -u root) & pids+=($!)
CASD=$(port)
"$(scripts/setup-reapi.sh)" --bind "127.0.0.1:$CASD" "$T/casd" & pids+=($!)
HOLE=$(port)
python3 -c "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',$HOLE)); s.listen(1024); time.sleep(1e6)" & pids+=($!)
sleep 0.5
cp -r examples/c-project "$T/p"
now() { date +%s.%N; }
build() { # DIR [VAR=VALUE…]: one clean build through cachefs, prints seconds
    local dir=$1; shift
    (cd "$T/p" && make -s clean >/dev/null)
    local t0; t0=$(now)
    (cd "$T/p" && env CACHEFS_DIR="$dir" "$@" "$CACHEFS" run make -s -j2 >/dev/null 2>&1)
    echo "$(now) - $t0" | bc
}
declare -A R
for r in $(seq "$ROUNDS"); do
    A=$T/ca$r B=$T/cb$r N=$T/cn$r H=$T/ch$r
    for d in "$A" "$B"; do CACHEFS_DIR=$d CACHEFS_MEMCACHED=tcp://127.0.0.1:$MC "$CACHEFS" start >/dev/null; done
    CACHEFS_DIR=$H CACHEFS_MEMCACHED=tcp://127.0.0.1:$HOLE "$CACHEFS" start >/dev/null
    R[cold_no_remote]+="$(build "$N") "
    R[cold_blackhole]+="$(build "$H") "
    build "$A" >/dev/null
    until CACHEFS_DIR=$A "$CACHEFS" stats --json | grep -q '"writes_pending": 0'; do sleep 0.1; done
    R[remote_hits]+="$(build "$B") "
    R[local_hits]+="$(build "$B") "
    C=$T/cc$r D=$T/cd$r
    for d in "$C" "$D"; do CACHEFS_DIR=$d CACHEFS_REAPI=grpc://127.0.0.1:$CASD "$CACHEFS" start >/dev/null; done
    build "$C" >/dev/null
    until CACHEFS_DIR=$C "$CACHEFS" stats --json | grep -q '"writes_pending": 0'; do sleep 0.1; done
    R[reapi_remote_hits]+="$(build "$D") "
    R[reapi_local_hits]+="$(build "$D") "
    for d in "$A" "$B" "$C" "$D" "$N" "$H"; do CACHEFS_DIR=$d "$CACHEFS" stop >/dev/null 2>&1 || true; done
done
echo "binary: $CACHEFS; $ROUNDS rounds; seconds per 22-compile build (median, all)"
for k in cold_no_remote cold_blackhole remote_hits local_hits reapi_remote_hits reapi_local_hits; do
    printf '%-18s %s   [%s]\n' "$k" "$(echo "${R[$k]}" | tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')" "${R[$k]}"
done
