#!/usr/bin/env bash
# Our memcached and Redis clients against the `memcache` and `redis` crates
# (crates/store/examples/kv_clients.rs): hit latency for 100 B and 100 KiB, and
# what a dead server costs (refused; accepting and silent). Release build,
# memcached and redis-server on 127.0.0.1 only.
#   scripts/bench/kv-clients.sh [READS]     (default 2000)
set -euo pipefail
cd "$(dirname "$0")/../.."
READS=${1:-2000}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cargo build -q --release -p cachefs-store --example kv_clients
MC=$(port) RD=$(port)
memcached -l 127.0.0.1 -p "$MC" -U 0 -m 64 $([ "$(id -u)" = 0 ] && echo -u root) & pids+=($!)
redis-server --bind 127.0.0.1 --port "$RD" --save '' --appendonly no >/dev/null & pids+=($!)
sleep 1
target/release/examples/kv_clients "tcp://127.0.0.1:$MC" "redis://127.0.0.1:$RD" "$READS"
