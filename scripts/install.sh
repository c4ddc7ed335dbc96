#!/bin/sh
# Builds cachefs in release mode and installs it for one user:
#   scripts/install.sh [--prefix DIR]      (default DIR: ~/.local)
#   --from BUILD_DIR installs already built binaries (e.g. target/debug) without building.
# leaves DIR/bin/cachefs, DIR/bin/cachefs-cli, DIR/lib/cachefs/libcachefs_preload.so,
# DIR/share/man/man1/cachefs.1 and bash/zsh/fish completions.
set -eu
prefix="$HOME/.local"
from=""
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="$2"; shift 2 ;;
        --prefix=*) prefix="${1#--prefix=}"; shift ;;
        --from) from="$2"; shift 2 ;;
        *) echo "usage: $0 [--prefix DIR] [--from BUILD_DIR]" >&2; exit 2 ;;
    esac
done
if [ -z "$from" ]; then
    cd "$(dirname "$0")/.."
    # Both binaries linked statically: every compile starts `cachefs`.
    scripts/build-release.sh
    from="${CARGO_TARGET_DIR:-target}/release"
fi
mkdir -p "$prefix/bin" "$prefix/lib/cachefs" "$prefix/share/man/man1" \
    "$prefix/share/bash-completion/completions" "$prefix/share/zsh/site-functions" \
    "$prefix/share/fish/vendor_completions.d"
install -m 755 "$from/cachefs" "$prefix/bin/cachefs"
# The command line: `cachefs` holds only the client and execs it for every other command.
install -m 755 "$from/cachefs-cli" "$prefix/bin/cachefs-cli"
install -m 644 "$from/libcachefs_preload.so" "$prefix/lib/cachefs/libcachefs_preload.so"
bin="$prefix/bin/cachefs"
"$bin" man >"$prefix/share/man/man1/cachefs.1"
"$bin" completions bash >"$prefix/share/bash-completion/completions/cachefs"
"$bin" completions zsh >"$prefix/share/zsh/site-functions/_cachefs"
"$bin" completions fish >"$prefix/share/fish/vendor_completions.d/cachefs.fish"
echo "installed $("$bin" --version) in $prefix; run \`$bin doctor\` to check this machine"
