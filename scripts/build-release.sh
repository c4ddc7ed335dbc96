#!/bin/sh
# The release build as installed and benchmarked: the workspace, then the
# cachefs (the client every compile starts) and cachefs-cli binaries linked again statically (glibc's static-pie). Every compile
# of a build starts this binary once; without the dynamic loader (libc and
# libgcc_s mapped, ~280 symbols bound) a hit is ~0.5 ms faster on this
# project's VM. The shim stays a dynamic library. `cargo rustc` passes the
# flag to the binary's own link only: as a RUSTFLAGS setting it would also
# reach the proc-macro crates, which cannot be built with crt-static.
#   scripts/build-release.sh [CARGO BUILD ARGS…]
set -eu
cd "$(dirname "$0")/.."
cargo build --release --workspace "$@"
cargo rustc --release -p cachefs --bin cachefs -- -C target-feature=+crt-static
cargo rustc --release -p cachefs --bin cachefs-cli -- -C target-feature=+crt-static
