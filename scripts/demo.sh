#!/usr/bin/env bash
# The main job: build cachefs, then build the bundled C example twice under
# `cachefs run make`, cleaning in between; the second build is all hits.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The release binaries as installed and benchmarked (static); a plain
# `cargo build --release` would relink them dynamically under the benchmarks.
scripts/build-release.sh
cachefs="$PWD/target/release/cachefs"
if [ -z "${CACHEFS_DIR:-}" ]; then
    # The demo's own cache starts empty, so that the first build is really cold
    # (a CACHEFS_DIR given by the caller is used as it is).
    export CACHEFS_DIR="$PWD/target/demo-cache"
    "$cachefs" stop >/dev/null 2>&1 || true
    rm -rf "$CACHEFS_DIR"
fi
work="$PWD/target/demo-project"
rm -rf "$work" && cp -r examples/c-project "$work"
cd "$work"
"$cachefs" stats --zero >/dev/null
echo "== first build (cold cache) =="
"$cachefs" run make -j2 -s
make -s clean
echo "== second build (after make clean) =="
"$cachefs" run make -j2 -s
./calc | head -3
"$cachefs" stats
