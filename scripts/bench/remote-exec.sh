#!/usr/bin/env bash
# Remote execution's cost on this machine, for lua (Debian source lua5.4) or tmux (Debian
# source tmux 3.3a): the tree is built once through cachefs (every compile observed: the
# inputs remote runs take), then a header every file includes is changed and the changed tree
# is built, each way from the same state, ROUNDS rounds:
#   plain    make without cachefs
#   local    cachefs, every compile a miss observed here
#   remote   cachefs with execute = true against buildbox-casd's local Execution service
#            (buildbox-run in bubblewrap), every compile shipped with its observed inputs
#   remote-clean  the same with an empty cache and a server that never saw the tree (its
#            own buildbox-casd): compiles run on guessed input roots, the first ones here
# Printed: medians and ratios, and per remote compile: blobs named, blobs uploaded, bytes
# uploaded (the toolchain's first upload included in round 1, absent after: FindMissingBlobs).
# The executor is this machine, so "remote" measures shipping and tracing, not a cluster.
#   scripts/bench/remote-exec.sh [lua|tmux] [ROUNDS]   (default lua 3)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
WORK=${1:-lua}
ROUNDS=${2:-3}
CACHEFS=$ROOT/target/release/cachefs
[ -x "$CACHEFS" ] || CACHEFS=$ROOT/target/debug/cachefs
T=$(mktemp -d /tmp/cachefs-rexec-bench.XXXXXX)
pids=()
cleanup() {
    for d in "$T"/c*; do [ -d "$d" ] && CACHEFS_DIR=$d "$CACHEFS" stop >/dev/null 2>&1 || true; done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -n "${KEEP:-}" ] && echo "kept $T" >&2 || rm -rf "$T"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
CASD_BIN=$(scripts/setup-reapi.sh casd)
CASD=$(port)
"$CASD_BIN" --bind "127.0.0.1:$CASD" --buildbox-run="$(dirname "$CASD_BIN")/buildbox-run" "$T/casd" >"$T/casd.log" 2>&1 & pids+=($!)
CASD2=$(port)
"$CASD_BIN" --bind "127.0.0.1:$CASD2" --buildbox-run="$(dirname "$CASD_BIN")/buildbox-run" "$T/casd2" >"$T/casd2.log" 2>&1 & pids+=($!)
sleep 0.5
mkdir -p "$T/dl" "$T/src"
fetch() { (cd "$T/dl" && apt-get source --download-only -qq "$1" >/dev/null 2>&1); tar xf "$(ls "$T/dl/$1"_*.orig.tar.* | head -1)" -C "$T/src" --strip-components=1; }
case $WORK in
lua) fetch lua5.4; TARGET=linux; HEADER=src/lua.h ;;
tmux) fetch tmux; (cd "$T/src" && ./configure CC=gcc >/dev/null 2>&1); TARGET=all; HEADER=tmux.h ;;
*) echo "usage: remote-exec.sh [lua|tmux] [ROUNDS]" >&2; exit 2 ;;
esac
now() { date +%s.%N; }
build() { # [cachefs env…]: a clean build of the tree, prints seconds
    (cd "$T/src" && make -s clean >/dev/null 2>&1)
    local t0; t0=$(now)
    if [ $# -eq 0 ]; then (cd "$T/src" && make -s -j2 $TARGET >/dev/null 2>&1)
    else (cd "$T/src" && env "$@" "$CACHEFS" run make -s -j2 $TARGET >/dev/null 2>&1); fi
    echo "$(now) - $t0" | bc
}
json() { CACHEFS_DIR=$1 "$CACHEFS" stats --json | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"; }
declare -A R
for r in $(seq "$ROUNDS"); do
    L=$T/cl$r X=$T/cx$r
    # Both caches learn the tree as it was (the remote one's dep sets are the input roots).
    build CACHEFS_DIR="$L" >/dev/null
    build CACHEFS_DIR="$X" CACHEFS_REAPI=grpc://127.0.0.1:$CASD CACHEFS_REMOTE_EXECUTE=1 >/dev/null
    echo "#define CACHEFS_BENCH_EDIT $r" >> "$T/src/$HEADER"
    R[plain]+="$(build) "
    R[local]+="$(build CACHEFS_DIR="$L") "
    CACHEFS_DIR=$X "$CACHEFS" stats --zero >/dev/null
    R[remote]+="$(build CACHEFS_DIR="$X" CACHEFS_REAPI=grpc://127.0.0.1:$CASD CACHEFS_REMOTE_EXECUTE=1) "
    n=$(json "$X" remote_executions)
    echo "round $r: $n remote executions; blobs named $(json "$X" remote_execution_blobs), uploaded $(json "$X" remote_execution_blobs_uploaded), bytes uploaded $(json "$X" remote_execution_bytes_uploaded); fallbacks $(json "$X" local_fallbacks) $(json "$X" remote_execution_failures)"
    C=$T/cc$r
    R[remote-clean]+="$(build CACHEFS_DIR="$C" CACHEFS_REAPI=grpc://127.0.0.1:$CASD2 CACHEFS_REMOTE_EXECUTE=1) "
    echo "round $r, clean: $(json "$C" remote_executions) remote executions, fallbacks $(json "$C" local_fallbacks) $(json "$C" remote_execution_failures), not sent $(json "$C" not_run_remotely); bytes uploaded $(json "$C" remote_execution_bytes_uploaded)"
    for d in "$L" "$X" "$C"; do CACHEFS_DIR=$d "$CACHEFS" stop >/dev/null 2>&1 || true; done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "binary: $CACHEFS; $WORK, $ROUNDS rounds; seconds per clean build of the changed tree (median, all)"
P=$(echo "${R[plain]}" | median)
for k in plain local remote remote-clean; do
    m=$(echo "${R[$k]}" | median)
    printf '%-8s %8.2f s  x%.2f of plain   (%s)\n' "$k" "$m" "$(echo "$m / $P" | bc -l)" "${R[$k]}"
done
