#!/usr/bin/env bash
# cachefs and sccache 0.16 side by side on one S3 bucket (SeaweedFS on 127.0.0.1): each fills
# the bucket from a first build, then every timed round is a warm build from the bucket alone
# (a fresh local cache directory and a fresh agent / sccache server, the tree cleaned). Also
# times cachefs's cold build with and without the tier, and the same agent again (local hits).
# Prints medians, the cachefs/sccache ratio, and bytes moved per build: cachefs's own count
# (stats: bytes read from the tier) and, for both, the loopback interface's byte count over the
# build (everything on lo, so run it on a quiet machine).
#   scripts/bench/cloud.sh [-n ROUNDS] [WORKLOAD…]   WORKLOAD: lua (default), example, tmux
#   (Debian source tmux, as c-builds.sh: 143 compiles and a link; needs libevent-dev bison),
#   rust (tests/data/rust-graph as rust-build.sh, debug, vendored: RUSTC_WRAPPER=sccache
#   against `cachefs run cargo build`);
#   `latency` alone: only the runtime's cost per lookup (always measured first).
#   CACHEFS_BIN=PATH: time that cachefs binary instead of target/release's.
# Needs: scripts/setup.sh (SeaweedFS), scripts/bench/setup-peers.sh (sccache), a release build.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
ROUNDS=5
while getopts "n:" o; do
    case $o in
        n) ROUNDS=$OPTARG ;;
        *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] && WORKLOADS=("$@") || WORKLOADS=(lua)
[ "${WORKLOADS[*]}" = latency ] && WORKLOADS=()
TOOLS=${CACHEFS_TOOLS:-$HOME/.cache/cachefs-tools}
export CARGO_INCREMENTAL=0
unset RUSTC_WRAPPER
export PATH="$PATH:$TOOLS/peers-venv/bin"
WEED=$TOOLS/object-stores-venv/bin/weed
# CACHEFS_BIN=/other/cachefs (with its cachefs-cli beside it): another build, for
# before/after comparisons.
CACHEFS=${CACHEFS_BIN:-$ROOT/target/release/cachefs}
if [ -z "${CACHEFS_BIN:-}" ] && { [ ! -x "$CACHEFS" ] || readelf -l "$CACHEFS" | grep -q INTERP; }; then
    "$ROOT/scripts/build-release.sh"
fi
[ -x "$WEED" ] || { echo "SeaweedFS is missing: run scripts/setup.sh" >&2; exit 1; }
command -v sccache >/dev/null || { echo "sccache is missing: run scripts/bench/setup-peers.sh" >&2; exit 1; }

W=$ROOT/target/bench/cloud
rm -rf "$W/run"
mkdir -p "$W/run" "$W/dl"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
KEY=bench-key SECRET=bench-secret-0123456789
printf '{"identities":[{"name":"admin","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}' \
    "$KEY" "$SECRET" >"$W/run/s3.json"
S3=$(port)
flags=()
for f in master.port master.port.grpc volume.port volume.port.grpc filer.port filer.port.grpc \
    s3.port.grpc admin.port admin.port.grpc debug.port s3.debug.port; do flags+=("-$f=$(port)"); done
"$WEED" mini -dir="$W/run/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.config="$W/run/s3.json" \
    -bucket=bench -master.telemetry=false -admin.ui=false -webdav=false -s3.port.iceberg=0 \
    -s3.port.lance=0 -s3.autoCreateBucket=false -s3.port="$S3" "${flags[@]}" >"$W/run/weed.log" 2>&1 &
WEED_PID=$!
cleanup() {
    for d in "$W"/run/c-*; do [ -d "$d" ] && CACHEFS_DIR=$d "$CACHEFS" stop >/dev/null 2>&1 || true; done
    sccache --stop-server >/dev/null 2>&1 || true
    kill "$WEED_PID" 2>/dev/null || true
}
trap cleanup EXIT
until curl -sf -o /dev/null --aws-sigv4 aws:amz:us-east-1:s3 --user "$KEY:$SECRET" "http://127.0.0.1:$S3/bench"; do sleep 0.3; done

export AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET
# What the tier's runtime adds to one lookup (crates/store/examples/cloud_latency.rs).
cargo build -q --release -p cachefs-store --example cloud_latency
"$ROOT/target/release/examples/cloud_latency" "http://127.0.0.1:$S3" bench 300
CACHEFS_S3=(CACHEFS_S3_BUCKET=bench "CACHEFS_S3_ENDPOINT=http://127.0.0.1:$S3" CACHEFS_REMOTE_PREFIX=cachefs/)
SCCACHE_S3=(SCCACHE_BUCKET=bench "SCCACHE_ENDPOINT=http://127.0.0.1:$S3" SCCACHE_REGION=us-east-1
    SCCACHE_S3_USE_SSL=false SCCACHE_S3_KEY_PREFIX=sccache/)

lo_bytes() { awk '$1 == "lo:" {print $2}' /proc/net/dev; }
now() { date +%s%N; }

prepare() {  # prepare WORKLOAD: sets TREE, TARGET
    case $1 in
        lua)
            TREE=$W/lua TARGET=linux
            if [ ! -f "$TREE/Makefile" ]; then
                (cd "$W/dl" && ls lua5.4_*.orig.tar.* >/dev/null 2>&1 || apt-get source --download-only -qq lua5.4 >/dev/null 2>&1)
                mkdir -p "$TREE"
                tar xf "$(ls "$W"/dl/lua5.4_*.orig.tar.* | head -1)" -C "$TREE" --strip-components=1
            fi ;;
        example)
            TREE=$W/example TARGET=
            [ -d "$TREE" ] || cp -r "$ROOT/examples/c-project" "$TREE" ;;
        tmux)
            # Configured once with plain gcc; every build passes CC to make.
            TREE=$W/tmux TARGET=tmux
            if [ ! -f "$TREE/Makefile" ]; then
                for p in libevent-dev libncurses-dev bison; do
                    dpkg -s "$p" >/dev/null 2>&1 || { echo "tmux needs $p: apt-get install it" >&2; exit 1; }
                done
                (cd "$W/dl" && ls tmux_*.orig.tar.* >/dev/null 2>&1 || apt-get source --download-only -qq tmux >/dev/null 2>&1)
                mkdir -p "$TREE"
                tar xf "$(ls "$W"/dl/tmux_*.orig.tar.* | head -1)" -C "$TREE" --strip-components=1
                (cd "$TREE" && ./configure CC=gcc >"$W/tmux-configure.log" 2>&1) ||
                    { echo "tmux's configure failed: see $W/tmux-configure.log" >&2; exit 1; }
            fi ;;
        rust)
            # Offline from vendored sources, as rust-build.sh.
            TREE=$W/rust-graph TARGET=
            local vendor=$W/vendor-rust-graph
            if [ ! -f "$vendor/.complete" ]; then
                rm -rf "$TREE" && mkdir -p "$TREE" && cp -r "$ROOT/tests/data/rust-graph/." "$TREE"
                (cd "$TREE" && cargo vendor --locked --quiet "$vendor" >/dev/null)
                touch "$vendor/.complete"
            fi
            mkdir -p "$TREE/.cargo"
            printf '[source.crates-io]\nreplace-with = "vendored"\n\n[source.vendored]\ndirectory = "%s"\n\n[net]\noffline = true\n' \
                "$vendor" >"$TREE/.cargo/config.toml" ;;
        *) echo "unknown workload $1" >&2; exit 2 ;;
    esac
}

# build MODE DIR: one clean build; prints "seconds lo_bytes".
build() {
    local mode=$1 dir=$2 t0 t1 b0 b1 cmd
    if [ "$wl" = rust ]; then
        rm -rf "$TREE/target"
        cmd=(cargo build -q -j2)
    else
        make -s -C "$TREE" clean >/dev/null 2>&1 || true
        cmd=(make -s -j2 $TARGET)
    fi
    case $mode in
        cachefs-s3) env CACHEFS_DIR="$dir" "${CACHEFS_S3[@]}" "$CACHEFS" start >/dev/null ;;
        cachefs-local) env CACHEFS_DIR="$dir" "$CACHEFS" start >/dev/null ;;
        sccache-s3)
            sccache --stop-server >/dev/null 2>&1 || true
            env SCCACHE_DIR="$dir" "${SCCACHE_S3[@]}" sccache --start-server >/dev/null ;;
    esac
    b0=$(lo_bytes)
    t0=$(now)
    case $mode in
        cachefs-*) (cd "$TREE" && CACHEFS_DIR=$dir "$CACHEFS" run "${cmd[@]}" >"$W/last-$mode.log" 2>&1) ;;
        sccache-s3)
            if [ "$wl" = rust ]; then
                (cd "$TREE" && RUSTC_WRAPPER=sccache "${cmd[@]}" >"$W/last-$mode.log" 2>&1)
            else
                (cd "$TREE" && "${cmd[@]}" CC="sccache gcc" >"$W/last-$mode.log" 2>&1)
            fi ;;
    esac || { echo "build failed: $mode (see $W/last-$mode.log)" >&2; exit 1; }
    t1=$(now)
    b1=$(lo_bytes)
    echo "$(echo "scale=3; ($t1 - $t0) / 1000000000" | bc) $((b1 - b0))"
}

drain() {  # drain DIR: until the agent's writes to the bucket are all sent
    until CACHEFS_DIR=$1 "$CACHEFS" stats --json | python3 -c 'import json,sys; r=json.load(sys.stdin)["remote"]; sys.exit(0 if r and r["writes_pending"]==0 else 1)'; do sleep 0.2; done
}

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

for wl in "${WORKLOADS[@]}"; do
    prepare "$wl"
    # Fill the bucket once for each.
    read -r cold_s3 _ < <(build cachefs-s3 "$W/run/c-fill-$wl")
    drain "$W/run/c-fill-$wl"
    CACHEFS_DIR=$W/run/c-fill-$wl "$CACHEFS" stop >/dev/null
    read -r cold_local _ < <(build cachefs-local "$W/run/c-nolocal-$wl")
    CACHEFS_DIR=$W/run/c-nolocal-$wl "$CACHEFS" stop >/dev/null
    build sccache-s3 "$W/run/s-fill-$wl" >/dev/null
    sccache --stop-server >/dev/null 2>&1 || true
    declare -A T=() B=()
    cachefs_read=""
    for r in $(seq "$ROUNDS"); do
        d=$W/run/c-$wl-$r
        read -r t b < <(build cachefs-s3 "$d")
        T[cachefs_remote]+="$t " B[cachefs_remote]+="$b "
        cachefs_read+="$(CACHEFS_DIR=$d "$CACHEFS" stats --json | python3 -c 'import json,sys; s=json.load(sys.stdin); r=s["remote"]; print(r["bytes_read"], s["remote_hits"], s["misses"], r["gets_found"], r["tiers"][0]["get_latency_us"])') ; "
        read -r t b < <(build cachefs-s3 "$d")
        T[cachefs_local]+="$t "
        CACHEFS_DIR=$d "$CACHEFS" stop >/dev/null
        read -r t b < <(build sccache-s3 "$W/run/s-$wl-$r")
        T[sccache_remote]+="$t " B[sccache_remote]+="$b "
        echo "  $wl round $r: cachefs ${T[cachefs_remote]##* }… sccache $t s" >&2
    done
    sccache --show-stats >"$W/sccache-stats-$wl.txt" 2>&1 || true
    c=$(echo "${T[cachefs_remote]}" | median) s=$(echo "${T[sccache_remote]}" | median)
    echo "== $wl, $ROUNDS rounds, -j2, SeaweedFS S3 on 127.0.0.1"
    echo "cold build, cachefs, no remote tier:      $cold_local s"
    echo "cold build, cachefs, writing to S3:        $cold_s3 s"
    echo "warm from S3 only, cachefs (median):       $c s   [${T[cachefs_remote]}]"
    echo "warm from S3 only, sccache 0.16 (median):  $s s   [${T[sccache_remote]}]"
    echo "cachefs / sccache:                         $(echo "scale=2; $c / $s" | bc)"
    echo "same agent again (local hits, median):     $(echo "${T[cachefs_local]}" | median) s"
    echo "loopback bytes per warm build, cachefs:    $(echo "${B[cachefs_remote]}" | median)"
    echo "loopback bytes per warm build, sccache:    $(echo "${B[sccache_remote]}" | median)"
    echo "cachefs's own count (bytes read, remote hits, misses, values found, mean lookup µs) per round: $cachefs_read"
done
