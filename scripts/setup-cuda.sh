#!/usr/bin/env bash
# Installs a real CUDA nvcc (no GPU needed to compile) from PyPI into a
# virtualenv kept between runs, and prints the path of nvcc. nvcc must be
# called by that real path: it finds its install from argv[0].
#   CACHEFS_TOOLS  where the virtualenv lives (default ~/.cache/cachefs-tools)
set -euo pipefail
tools=${CACHEFS_TOOLS:-$HOME/.cache/cachefs-tools}
venv=$tools/cuda-venv
nvcc() { ls "$venv"/lib/python3*/site-packages/nvidia/cu*/bin/nvcc 2>/dev/null | head -1; }
if [ -z "$(nvcc)" ]; then
    echo "setup-cuda: installing nvidia-cuda-nvcc and nvidia-cuda-cccl into $venv (about 125 MB)" >&2
    mkdir -p "$tools"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q nvidia-cuda-nvcc nvidia-cuda-cccl >&2
fi
[ -n "$(nvcc)" ] || { echo "setup-cuda: no nvcc in $venv after installing" >&2; exit 1; }
nvcc
