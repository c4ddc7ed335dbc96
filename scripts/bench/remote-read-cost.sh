#!/usr/bin/env bash
# One small remote read through the REAPI tier (buildbox-casd) and through memcached,
# interleaved, release build: medians and p90s. Servers on 127.0.0.1 only.
#   scripts/bench/remote-read-cost.sh [READS]     (default 1000)
set -euo pipefail
cd "$(dirname "$0")/../.."
READS=${1:-1000}
T=$(mktemp -d /tmp/cachefs-read-cost.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$T"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cargo build -q --release -p cachefs-store --example remote_read_cost
CASD=$(port) MC=$(port)
"$(scripts/setup-reapi.sh)" --bind "127.0.0.1:$CASD" "$T/casd" & pids+=($!)
memcached -l 127.0.0.1 -p "$MC" -U 0 -m 64 $([ "$(id -u)" = 0 ] && echo -u root) & pids+=($!)
sleep 1
target/release/examples/remote_read_cost "grpc://127.0.0.1:$CASD" "tcp://127.0.0.1:$MC" "$READS"
