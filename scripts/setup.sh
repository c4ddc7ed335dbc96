#!/usr/bin/env bash
# Installs what cachefs's build, demo and tests need on Debian/Ubuntu.
# Idempotent: packages already present are not reinstalled.
set -euo pipefail

packages=(gcc g++ clang make ninja-build cmake fuse3 memcached ccache dpkg-dev pkg-config)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -e /dev/fuse ]; then
    echo "setup: /dev/fuse is missing: load the fuse module (modprobe fuse); cachefs will compile uncached without it" >&2
fi
